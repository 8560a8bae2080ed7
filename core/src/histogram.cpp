#include "ledger/core/histogram.hpp"

#include <fmt/format.h>

namespace ledger {

void append_prometheus_histogram(std::string& out, const std::string& name, const std::string& help,
                                 const Histogram& histogram) {
  out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  for (std::size_t i = 0; i < histogram.upper_bounds().size(); ++i) {
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, histogram.upper_bounds()[i],
                       histogram.cumulative_counts()[i]);
  }
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, histogram.count());
  out += fmt::format("{}_sum {}\n", name, histogram.sum());
  out += fmt::format("{}_count {}\n", name, histogram.count());
}

}  // namespace ledger
