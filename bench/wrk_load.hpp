#pragma once
// Drives wrk (a Debian package, an efficient C load generator) with bench/wrk/transfers.lua
// (or deposits.lua):
// the HTTP rate that the bench's own Asio generator cannot reach because it costs as much CPU
// as the server on a 2-core machine. Reports the generator's own CPU share.

#include <cstdint>
#include <string>

namespace ledger::bench {

// The scripts under bench/wrk/: random transfers between the funded accounts, or deposits
// into them (each of which also moves the currency's one cash account).
enum class WrkScript { transfers, deposits };

struct WrkSettings {
  int port = 0;
  int connections = 64;
  int threads = 2;
  double seconds = 10;
  int accounts = 1'000;
  std::string token;
  std::string run_id;  // makes the Idempotency-Keys unique across runs (and wrk processes) on one database
  WrkScript script = WrkScript::transfers;
};

struct WrkResult {
  bool ran = false;
  std::string problem;  // why it did not run or its output did not parse
  std::int64_t requests = 0;
  std::int64_t non_2xx = 0;
  std::int64_t socket_errors = 0;
  double seconds = 0;
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, p999_ms = 0;
  // wrk's user+system CPU over the wall time times the cores: its share of the machine.
  double generator_cpu_share = 0;
  // The whole machine's busy share (every process, neither idle nor waiting on I/O) over the
  // run: well below 1, the load is bound by waits (round trips, fsync), not by CPU.
  double machine_busy_share = 0;
  [[nodiscard]] double rate() const { return seconds > 0 ? static_cast<double>(requests - non_2xx) / seconds : 0; }
};

[[nodiscard]] WrkResult run_wrk(const WrkSettings& settings);

}  // namespace ledger::bench
