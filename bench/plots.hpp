#pragma once
// PNG plots of the benchmark's data files, drawn by gnuplot (installed by ops/setup.sh).

#include <string>

namespace ledger::bench {

// Renders `data` (two columns) to `png` with gnuplot; false when gnuplot is missing or fails.
bool plot(const std::string& data, const std::string& png, const std::string& title,
          const std::string& x_label, const std::string& y_label);

// Renders columns 2.. of `data` (p50, p90, p99, p999 in ms) against column 1 (offered load).
bool plot_percentiles(const std::string& data, const std::string& png, const std::string& title);

}  // namespace ledger::bench
