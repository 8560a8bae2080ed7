#pragma once
// An Asio HTTP/1.1 load generator: N keep-alive connections sending transfer commands (or
// read-model queries), either as fast as answers come back or at a fixed total rate. At a fixed
// rate each request's latency is measured from the moment it was scheduled, not sent, which
// corrects for coordinated omission (a stalled server cannot hide the requests it delayed).

#include <cstdint>
#include <string>
#include <vector>

namespace ledger::bench {

// What each request is: a transfer between two random accounts (201 counts as answered), or
// a query of one random account's read model (200 counts).
enum class LoadRequest {
  transfer,
  account,  // GET /v1/accounts/{id}: the balance read model
  entries,  // GET /v1/accounts/{id}/entries?limit=20: its statement, newest page
};

struct LoadSettings {
  int port = 0;
  int connections = 64;
  double seconds = 10;
  double rate_per_second = 0;  // 0: maximum rate
  int accounts = 1'000;
  std::string token;
  // Instead of random pairs: one transfer from a<2k> to a<2k+1> for each k, then the run ends
  // (`seconds` bounds it still). Touches every account once: a serve's state cache warmed.
  bool each_account_once = false;
  LoadRequest request = LoadRequest::transfer;
  // Mixed into each connection's random seed: generators running at once draw different
  // accounts (with one seed, query k went to the account transfer k had just touched).
  unsigned seed = 0;
  // How long after `seconds` a request sent may still be answered: then the run ends and
  // what is unanswered counts as errors (a server that stops answering must not hang the
  // bench).
  double answer_wait_seconds = 10;
};

struct LoadResult {
  std::int64_t ok = 0;
  std::int64_t errors = 0;      // answered otherwise, failed, or unanswered
  std::int64_t unanswered = 0;  // sent and still unanswered answer_wait_seconds after the run
  double seconds = 0;
  std::vector<std::uint32_t> latencies_us;  // one per answered request
  std::vector<std::int64_t> completions_per_second;
};

LoadResult run_http_load(const LoadSettings& settings);

}  // namespace ledger::bench
