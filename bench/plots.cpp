#include "plots.hpp"

#include <stdexcept>

#include "ledger/core/process.hpp"

namespace ledger::bench {

bool plot(const std::string& data, const std::string& png, const std::string& title,
          const std::string& x_label, const std::string& y_label) {
  const std::string script = "set terminal png size 900,500; set output '" + png + "'; set title '" + title +
                             "'; set xlabel '" + x_label + "'; set ylabel '" + y_label +
                             "'; set grid; plot '" + data + "' using 1:2 with lines notitle";
  std::string output;
  try {
    return process::run({"gnuplot", "-e", script}, output).success();
  } catch (const std::exception&) {
    return false;
  }
}

bool plot_percentiles(const std::string& data, const std::string& png, const std::string& title) {
  std::string script = "set terminal png size 900,500; set output '" + png + "'; set title '" + title +
                       "'; set xlabel 'offered load (commands/s)'; set ylabel 'latency (ms)'; set grid; "
                       "set key left top; plot";
  const char* names[] = {"p50", "p90", "p99", "p999"};
  for (int column = 0; column < 4; ++column) {
    script += std::string(column == 0 ? " " : ", ") + "'" + data + "' using 1:" + std::to_string(column + 2) +
              " with linespoints title '" + names[column] + "'";
  }
  std::string output;
  try {
    return process::run({"gnuplot", "-e", script}, output).success();
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace ledger::bench
