#pragma once
// The read-model query routes (private to the API): parameter checks, the bounded wait for
// `min_position`, and the JSON answers of ../shared/API.md.

#include <boost/asio/thread_pool.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ledger::projections {
class ReadModels;
}

namespace ledger::api {

enum class QueryKind { account, entries, audit, loan, loan_schedule, account_loans };

struct QueryAnswer {
  int status = 200;
  std::string body;                       // the JSON answer when status is 200
  std::string code, title, detail;        // the problem otherwise
  std::optional<std::int64_t> watermark;  // sent as X-Ledger-Watermark
};

using QueryParameters = std::vector<std::pair<std::string, std::string>>;

// Where a query reads: the primary's read models, or a streaming replica's (serve
// --read-database-url), which only changes the problem a failed read is answered with.
struct QuerySource {
  projections::ReadModels& read_models;
  bool replica = false;
};

// The problem of a read that failed (503): `database_unavailable` on the primary,
// `read_replica_unavailable` on a replica (commands are still accepted then).
[[nodiscard]] QueryAnswer unavailable_answer(bool replica);

// Checks `parameters`, waits for min_position when asked (at most wait_ms, default 2 s,
// at most 10 s), reads on `blocking` and calls `done` exactly once, from any thread. A wait
// that runs out reads once more before answering 504 `read_model_behind`: a source that cannot
// be read is answered 503 (unavailable_answer), not "behind".
void run_query(QuerySource source, boost::asio::thread_pool& blocking, QueryKind kind, std::string id,
               const QueryParameters& parameters, std::function<void(QueryAnswer)> done);

}  // namespace ledger::api
