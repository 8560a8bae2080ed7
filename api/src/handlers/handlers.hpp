#pragma once
// The route handlers (private to the API), one file per concern: commands, queries, history
// and as-of balances, admin (close of business), health and the OpenAPI document, metrics. The
// router (router.cpp) routes, authenticates, applies rate limits and dispatches to them; a
// handler only answers the request it is given.

#include <boost/asio/thread_pool.hpp>
#include <boost/beast/http.hpp>

#include <charconv>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "../health_snapshot.hpp"
#include "../command_parser.hpp"
#include "../metrics.hpp"
#include "../queries.hpp"
#include "ledger/api/auth.hpp"
#include "ledger/api/server.hpp"

namespace ledger::api {

class CommandSink;

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;
using Respond = std::function<void(Response)>;

namespace handlers {

// A problem+json answer (API.md: type, title, status, detail, code, request_id).
[[nodiscard]] Response problem_response(int status, const std::string& code, const std::string& title,
                                        const std::string& detail, const std::string& request_id,
                                        unsigned version);

// How a handler answers one request: every answer goes through `finish` (the router's: metrics,
// access log, X-Request-Id), exactly once, from any thread. Copied into the completions that
// answer later.
struct Reply {
  std::string request_id;
  unsigned version = 11;
  Respond finish;

  void send(Response response) const { finish(std::move(response)); }
  void problem(int status, const std::string& code, const std::string& title, const std::string& detail) const {
    finish(problem_response(status, code, title, detail, request_id, version));
  }
  void json(boost::beast::http::status status, std::string body) const;
};

// What the handlers use of the server; the references point into the Router, which outlives
// every request it answers.
struct Context {
  Services& services;
  boost::asio::thread_pool& blocking;  // blocking reads and close of business
  CommandSink* commands;               // null: command routes answer 503 `unavailable`
  Metrics& metrics;
  HealthSnapshots& health;
  const TokenVerifier* tokens = nullptr;  // its cache's counters in /metrics
};

// A whole decimal int64, nothing else (query parameters).
[[nodiscard]] inline std::optional<std::int64_t> parse_integer(std::string_view text) {
  std::int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// command_handlers.cpp: POST commands, submitted to the engine, answered from its outcome.
struct CommandRequest {
  CommandRoute route;
  std::string path_id;
  const Request& request;
  const Principal& principal;
  const std::string& client_address;
};
void answer_command(const Context& context, const CommandRequest& command, const Reply& reply);

// query_handlers.cpp: the read-model queries (queries.hpp).
void answer_query(const Context& context, QueryKind kind, std::string id, const QueryParameters& parameters,
                  const Reply& reply);

// history_handlers.cpp: a stream's events and an account's balance as of a moment, from the
// event store.
void answer_stream_events(const Context& context, const std::string& stream_id, const QueryParameters& parameters,
                          const Reply& reply);
void answer_balance_as_of(const Context& context, const std::string& account_id, const QueryParameters& parameters,
                          const Reply& reply);

// admin_handlers.cpp: close of business over every loan.
void answer_close_of_business(const Context& context, const Request& request, const Reply& reply);

// health_handlers.cpp: the routes that need no token, /metrics apart.
enum class HealthView { full, ready };
void answer_health(const Context& context, HealthView view, const Reply& reply);
void answer_health_live(const Reply& reply);
void answer_openapi(const Reply& reply);

// metrics_handlers.cpp: Prometheus text.
void answer_metrics(const Context& context, const Reply& reply);

}  // namespace handlers
}  // namespace ledger::api
