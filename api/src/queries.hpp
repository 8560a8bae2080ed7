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

// Checks `parameters`, waits for min_position when asked (at most wait_ms, default 2 s,
// at most 10 s), reads on `blocking` and calls `done` exactly once, from any thread.
void run_query(projections::ReadModels& read_models, boost::asio::thread_pool& blocking,
               QueryKind kind, std::string id, const QueryParameters& parameters,
               std::function<void(QueryAnswer)> done);

}  // namespace ledger::api
