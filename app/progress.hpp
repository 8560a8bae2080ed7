#pragma once
// Progress of a long replay or rebuild on a terminal: events done, rate and ETA, redrawn on
// one stderr line at most five times a second; silent when stderr is not a terminal.

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace ledger::app {

class TerminalProgress {
 public:
  explicit TerminalProgress(std::string what, std::string unit = "events")
      : what_(std::move(what)), unit_(std::move(unit)), enabled_(isatty(STDERR_FILENO) == 1) {}
  ~TerminalProgress() {
    if (drawn_) std::fputc('\n', stderr);
  }
  TerminalProgress(const TerminalProgress&) = delete;
  TerminalProgress& operator=(const TerminalProgress&) = delete;

  void operator()(std::int64_t done, std::int64_t total) {
    if (!enabled_) return;
    const auto now = Clock::now();
    if (drawn_ && now - last_draw_ < std::chrono::milliseconds(200) && done < total) return;
    last_draw_ = now;
    drawn_ = true;
    const double seconds = std::chrono::duration<double>(now - started_).count();
    const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
    std::string eta = "?";
    if (total > 0 && rate > 0) eta = std::to_string(static_cast<long long>(static_cast<double>(total - done) / rate)) + " s";
    if (total > 0) {
      std::fprintf(stderr, "\r%s: %lld / %lld %s, %.0f %s/s, ETA %s   ", what_.c_str(), static_cast<long long>(done),
                   static_cast<long long>(total), unit_.c_str(), rate, unit_.c_str(), eta.c_str());
    } else {
      std::fprintf(stderr, "\r%s: %lld %s, %.0f %s/s   ", what_.c_str(), static_cast<long long>(done), unit_.c_str(),
                   rate, unit_.c_str());
    }
    std::fflush(stderr);
  }

  [[nodiscard]] double seconds() const {
    return std::chrono::duration<double>(Clock::now() - started_).count();
  }

 private:
  using Clock = std::chrono::steady_clock;
  std::string what_;
  std::string unit_;
  bool enabled_;
  bool drawn_ = false;
  Clock::time_point started_ = Clock::now();
  Clock::time_point last_draw_;
};

}  // namespace ledger::app
