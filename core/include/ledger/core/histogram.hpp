#pragma once
// A fixed-bucket histogram with cumulative counts, the shape Prometheus exposes. Not
// thread-safe: the owner guards it.

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ledger {

class Histogram {
 public:
  // `upper_bounds` ascending; the +Inf bucket is count().
  explicit Histogram(std::vector<double> upper_bounds)
      : upper_bounds_(std::move(upper_bounds)), cumulative_(upper_bounds_.size(), 0) {}

  void observe(double value) {
    const auto first = std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value);
    for (auto i = static_cast<std::size_t>(first - upper_bounds_.begin()); i < cumulative_.size(); ++i) {
      ++cumulative_[i];
    }
    ++count_;
    sum_ += value;
  }

  [[nodiscard]] const std::vector<double>& upper_bounds() const { return upper_bounds_; }
  // cumulative_counts()[i]: observations <= upper_bounds()[i].
  [[nodiscard]] const std::vector<std::uint64_t>& cumulative_counts() const { return cumulative_; }
  [[nodiscard]] std::uint64_t count() const { return count_; }
  [[nodiscard]] double sum() const { return sum_; }

 private:
  std::vector<double> upper_bounds_;
  std::vector<std::uint64_t> cumulative_;
  std::uint64_t count_ = 0;
  double sum_ = 0;
};

// Appends `histogram` in the Prometheus text format, with a HELP and a TYPE line.
void append_prometheus_histogram(std::string& out, const std::string& name, const std::string& help,
                                 const Histogram& histogram);

}  // namespace ledger
