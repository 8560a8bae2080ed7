#include "router.hpp"

#include <boost/asio/post.hpp>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <chrono>
#include <random>

#include "command_parser.hpp"
#include "json_text.hpp"
#include "openapi_document.hpp"
#include "queries.hpp"
#include "health_snapshot.hpp"
#include "read_side_health.hpp"
#include "ledger/api/auth.hpp"
#include "ledger/api/routes.hpp"
#include "ledger/core/assert.hpp"
#include "ledger/core/logging.hpp"
#include "ledger/engine/balance_as_of.hpp"
#include "ledger/engine/close_of_business.hpp"
#include "ledger/engine/engine.hpp"
#include "ledger/engine/event_store.hpp"
#include "ledger/domain/events.hpp"

namespace ledger::api {

namespace http = boost::beast::http;

namespace {

using Clock = std::chrono::steady_clock;

// Every request header whose value the server copies anywhere (event metadata, the
// idempotency record, logs, the answer) must be sent at most once and be 1 to
// copied_header_bytes_max visible ASCII characters (0x21 to 0x7E; no space, no tab): one bad
// byte in event metadata used to fail the whole group-commit batch it landed in, and other
// clients' commands with it. The JWT's `sub` claim, also copied, is held to the same rule
// (auth.cpp).
constexpr std::size_t copied_header_bytes_max = 128;
constexpr std::string_view copied_headers[] = {"X-Request-Id", "X-Correlation-Id", "Idempotency-Key"};
// A 404 names the target it could not route when the target is at most this long.
constexpr std::size_t echoed_target_bytes_max = 1'024;
constexpr std::int64_t stream_page_events_max = 1'000;

std::string_view view(boost::beast::string_view text) { return {text.data(), text.size()}; }

bool is_token_text(std::string_view text, std::size_t length_max) {
  if (text.empty() || text.size() > length_max) return false;
  for (char c : text) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

// A stream id is a prefix ("account-", "transfer-") and an id: the id syntax, a bit longer.
// A stream id is a kind prefix and an id, client-chosen or derived by the engine (`~`
// separates a derived id's parts: `transfer-L1~r1~interest`).
bool is_valid_stream_id(std::string_view stream) {
  constexpr std::size_t stream_id_length_max = 256;
  if (stream.empty() || stream.size() > stream_id_length_max) return false;
  return std::all_of(stream.begin(), stream.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '_' || c == ':' ||
           c == '-' || c == '~';
  });
}

std::string generate_request_id() {
  thread_local std::mt19937_64 random(std::random_device{}());
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(random()));
  return text;
}

// HTTP status of each business rejection.
int status_of(domain::RejectionCode code) {
  using domain::RejectionCode;
  switch (code) {
    case RejectionCode::unknown_account:
    case RejectionCode::unknown_transfer:
    case RejectionCode::unknown_loan: return 404;
    case RejectionCode::duplicate_id:
    case RejectionCode::version_conflict:
    case RejectionCode::idempotency_key_reused: return 409;
    case RejectionCode::invalid_id:
    case RejectionCode::invalid_amount:
    case RejectionCode::invalid_currency: return 400;
    // Every other rule: the request was understood and refused. Listed one by one, with no
    // default, so that a new code does not become 422 without a decision (-Wswitch).
    case RejectionCode::none:
    case RejectionCode::invalid_command:
    case RejectionCode::reserved_id:
    case RejectionCode::currency_mismatch:
    case RejectionCode::insufficient_funds:
    case RejectionCode::credits_exceed_debits:
    case RejectionCode::account_frozen:
    case RejectionCode::account_closed:
    case RejectionCode::account_not_frozen:
    case RejectionCode::account_not_empty:
    case RejectionCode::same_account:
    case RejectionCode::amount_overflow:
    case RejectionCode::transfer_not_pending:
    case RejectionCode::pending_transfer_expired:
    case RejectionCode::amount_exceeds_pending:
    case RejectionCode::linked_command_failed:
    case RejectionCode::invalid_loan_terms:
    case RejectionCode::invalid_date:
    case RejectionCode::loan_not_active:
    case RejectionCode::loan_already_disbursed:
    case RejectionCode::overpayment:
    case RejectionCode::system_account: return 422;
  }
  return 422;  // not a RejectionCode (a value cast from outside the enum)
}

std::string title_of(domain::RejectionCode code) {
  std::string title(domain::to_string(code));
  for (char& c : title) {
    if (c == '_') c = ' ';
  }
  if (!title.empty()) title[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(title[0])));
  return title;
}

std::optional<std::int64_t> parse_integer(std::string_view text) {
  std::int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::string percent_decode(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      int value = 0;
      const auto [end, error] = std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16);
      if (error == std::errc() && end == text.data() + i + 3) {
        out.push_back(static_cast<char>(value));
        i += 2;
        continue;
      }
    }
    out.push_back(text[i]);
  }
  return out;
}

struct Target {
  std::vector<std::string> segments;
  std::vector<std::pair<std::string, std::string>> query;
};

Target split_target(std::string_view target) {
  Target result;
  const auto question = target.find('?');
  const std::string_view path = target.substr(0, question);
  std::size_t start = 1;
  while (start <= path.size()) {
    const auto slash = path.find('/', start);
    const auto end = slash == std::string_view::npos ? path.size() : slash;
    if (end > start) result.segments.push_back(percent_decode(path.substr(start, end - start)));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  if (question != std::string_view::npos) {
    std::string_view query = target.substr(question + 1);
    while (!query.empty()) {
      const auto amp = query.find('&');
      const auto pair = query.substr(0, amp);
      const auto equals = pair.find('=');
      result.query.emplace_back(percent_decode(pair.substr(0, equals)),
                                equals == std::string_view::npos ? "" : percent_decode(pair.substr(equals + 1)));
      if (amp == std::string_view::npos) break;
      query = query.substr(amp + 1);
    }
  }
  return result;
}

// What a route is: its template (for metrics), method, role, and handler kind.
enum class Handler {
  command, stream_events, balance_as_of, close_of_business, query, health, health_live, health_ready, metrics, openapi
};

struct Route {
  std::string pattern;
  http::verb method = http::verb::post;
  Handler handler = Handler::command;
  CommandRoute command = CommandRoute::open_account;
  std::optional<Role> role;
  std::string path_id;
  QueryKind query = QueryKind::account;
};

// Every route the front answers, in matching order: method, template ({id} matches one path
// segment), handler and the role it needs (none: no token needed, or any of the three roles for
// reads). api/openapi.json describes the same routes (api_openapi_pgtest keeps them equal).
struct RouteSpec {
  http::verb method;
  std::string_view pattern;
  Handler handler;
  CommandRoute command = CommandRoute::open_account;
  std::optional<Role> role;
  QueryKind query = QueryKind::account;
};

const RouteSpec route_table[] = {
    {http::verb::get, "/health", Handler::health},
    {http::verb::get, "/health/live", Handler::health_live},
    {http::verb::get, "/health/ready", Handler::health_ready},
    {http::verb::get, "/metrics", Handler::metrics},
    {http::verb::get, "/openapi.json", Handler::openapi},
    {http::verb::post, "/v1/accounts", Handler::command, CommandRoute::open_account, Role::teller},
    {http::verb::post, "/v1/accounts/{id}/deposits", Handler::command, CommandRoute::deposit, Role::teller},
    {http::verb::post, "/v1/accounts/{id}/withdrawals", Handler::command, CommandRoute::withdrawal, Role::teller},
    {http::verb::post, "/v1/accounts/{id}/freeze", Handler::command, CommandRoute::freeze, Role::teller},
    {http::verb::post, "/v1/accounts/{id}/unfreeze", Handler::command, CommandRoute::unfreeze, Role::teller},
    {http::verb::post, "/v1/accounts/{id}/close", Handler::command, CommandRoute::close, Role::teller},
    {http::verb::post, "/v1/transfers", Handler::command, CommandRoute::transfer, Role::teller},
    {http::verb::post, "/v1/holds", Handler::command, CommandRoute::hold, Role::teller},
    {http::verb::post, "/v1/holds/{id}/post", Handler::command, CommandRoute::post_hold, Role::teller},
    {http::verb::post, "/v1/holds/{id}/void", Handler::command, CommandRoute::void_hold, Role::teller},
    {http::verb::post, "/v1/batch", Handler::command, CommandRoute::batch, Role::teller},
    {http::verb::post, "/v1/loans", Handler::command, CommandRoute::originate_loan, Role::teller},
    {http::verb::post, "/v1/loans/close-of-business", Handler::close_of_business, CommandRoute::originate_loan,
     Role::admin},
    {http::verb::post, "/v1/loans/{id}/disburse", Handler::command, CommandRoute::disburse_loan, Role::teller},
    {http::verb::post, "/v1/loans/{id}/repayments", Handler::command, CommandRoute::repay_loan, Role::teller},
    {http::verb::post, "/v1/loans/{id}/write-off", Handler::command, CommandRoute::write_off_loan, Role::teller},
    {http::verb::get, "/v1/accounts/{id}", Handler::query, CommandRoute::open_account, std::nullopt,
     QueryKind::account},
    {http::verb::get, "/v1/accounts/{id}/entries", Handler::query, CommandRoute::open_account, std::nullopt,
     QueryKind::entries},
    {http::verb::get, "/v1/audit", Handler::query, CommandRoute::open_account, Role::auditor, QueryKind::audit},
    {http::verb::get, "/v1/loans/{id}", Handler::query, CommandRoute::open_account, std::nullopt, QueryKind::loan},
    {http::verb::get, "/v1/loans/{id}/schedule", Handler::query, CommandRoute::open_account, std::nullopt,
     QueryKind::loan_schedule},
    {http::verb::get, "/v1/accounts/{id}/loans", Handler::query, CommandRoute::open_account, std::nullopt,
     QueryKind::account_loans},
    {http::verb::get, "/v1/accounts/{id}/balance", Handler::balance_as_of, CommandRoute::open_account, Role::auditor},
    {http::verb::get, "/v1/streams/{id}/events", Handler::stream_events, CommandRoute::open_account, Role::auditor},
};

// The path's {id} when `segments` fit the template, else std::nullopt ("" for templates without one).
std::optional<std::string> fit(std::string_view pattern, const std::vector<std::string>& segments) {
  std::string id;
  std::size_t index = 0;
  std::size_t start = 1;
  while (start <= pattern.size()) {
    const auto slash = pattern.find('/', start);
    const auto end = slash == std::string_view::npos ? pattern.size() : slash;
    const std::string_view part = pattern.substr(start, end - start);
    if (index >= segments.size()) return std::nullopt;
    if (part == "{id}") {
      id = segments[index];
    } else if (part != segments[index]) {
      return std::nullopt;
    }
    ++index;
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  if (index != segments.size()) return std::nullopt;
  return id;
}

// Matches the path; `allowed` lists the methods of a matching path when the method differs.
std::optional<Route> match(const std::vector<std::string>& segments, http::verb method, std::string& allowed) {
  std::vector<std::string_view> other_methods;
  for (const RouteSpec& spec : route_table) {
    auto id = fit(spec.pattern, segments);
    if (!id) continue;
    if (spec.method != method) {
      const auto name = http::to_string(spec.method);
      other_methods.emplace_back(name.data(), name.size());
      continue;
    }
    return Route{std::string(spec.pattern), spec.method, spec.handler, spec.command, spec.role, std::move(*id),
                 spec.query};
  }
  for (const auto name : other_methods) {
    if (!allowed.empty()) allowed += ", ";
    allowed += std::string(name);
  }
  return std::nullopt;
}

std::string command_type_name(const domain::CommandBody& body) {
  if (const auto* single = std::get_if<domain::SingleCommand>(&body)) {
    return std::string(domain::command_name(*single));
  }
  return "batch";
}

std::string resource_kind(CommandRoute route) {
  switch (route) {
    case CommandRoute::open_account:
    case CommandRoute::freeze:
    case CommandRoute::unfreeze:
    case CommandRoute::close: return "account";
    case CommandRoute::batch: return "batch";
    case CommandRoute::originate_loan:
    case CommandRoute::disburse_loan:
    case CommandRoute::write_off_loan: return "loan";
    case CommandRoute::repay_loan: return "repayment";
    case CommandRoute::deposit:
    case CommandRoute::withdrawal:
    case CommandRoute::transfer:
    case CommandRoute::hold:
    case CommandRoute::post_hold:
    case CommandRoute::void_hold: return "transfer";
  }
  return "transfer";  // not a CommandRoute
}

// Both caches are only caches (DESIGN.md invariant 7): they never make the service unhealthy.
void write_snapshot_cache_health(JsonWriter& w, const engine::EngineStats& stats) {
  w.Key("snapshot_cache");
  w.StartObject();
  w.Key("status");
  write_string(w, stats.snapshots_enabled ? "up" : "disabled");
  w.Key("state_cache");
  w.StartObject();
  w.Key("streams");
  w.Uint64(stats.cache_streams);
  w.Key("streams_max");
  w.Uint64(stats.cache_streams_max);
  w.Key("hits");
  w.Uint64(stats.cache_hits);
  w.Key("misses");
  w.Uint64(stats.cache_misses);
  w.EndObject();
  if (stats.snapshots_enabled) {
    w.Key("snapshots");
    w.StartObject();
    w.Key("hits");
    w.Uint64(stats.snapshots.hits);
    w.Key("misses");
    w.Uint64(stats.snapshots.misses);
    w.Key("corrupt");
    w.Uint64(stats.snapshots.corrupt);
    w.Key("written");
    w.Uint64(stats.snapshots.written);
    w.Key("directory_rebuilt");
    w.Bool(stats.snapshots.directory_rebuilt);
    w.EndObject();
  }
  w.EndObject();
}

class EngineSink final : public CommandSink {
 public:
  explicit EngineSink(engine::Engine& engine) : engine_(engine) {}
  void submit(domain::Command command, engine::Engine::Completion completion) override {
    engine_.submit(std::move(command), std::move(completion));
  }

 private:
  engine::Engine& engine_;
};

}  // namespace

std::vector<RouteDescription> routes() {
  std::vector<RouteDescription> described;
  for (const RouteSpec& spec : route_table) {
    const bool open = spec.handler == Handler::health || spec.handler == Handler::health_live ||
                      spec.handler == Handler::health_ready || spec.handler == Handler::metrics ||
                      spec.handler == Handler::openapi;
    std::string access = open ? "none" : "any";
    if (spec.role) access = *spec.role == Role::teller ? "teller" : *spec.role == Role::auditor ? "auditor" : "admin";
    described.push_back({std::string(http::to_string(spec.method)), std::string(spec.pattern), access});
  }
  return described;
}

Router::Router(const ServerSettings& settings, Services services,
               boost::asio::thread_pool& blocking, CommandSink* commands)
    : settings_(settings),
      services_(std::move(services)),
      blocking_(blocking),
      engine_sink_(commands == nullptr && services_.engine != nullptr
                       ? std::make_unique<EngineSink>(*services_.engine)
                       : nullptr),
      commands_(commands != nullptr ? commands : engine_sink_.get()),
      rate_limiter_(settings.command_rate, settings.query_rate),
      health_(services_, blocking_, settings.health_refresh_interval,
              settings.health_check_timeout) {
  LEDGER_ASSERT(settings_.tokens != nullptr, "the server needs a token verifier");
}

Response Router::problem_response(int status, const std::string& code, const std::string& title,
                                  const std::string& detail, const std::string& request_id,
                                  unsigned version) const {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("type");
  write_string(w, "/problems/" + code);
  w.Key("title");
  write_string(w, title);
  w.Key("status");
  w.Int(status);
  w.Key("detail");
  write_string(w, detail);
  w.Key("code");
  write_string(w, code);
  w.Key("request_id");
  write_string(w, request_id);
  w.EndObject();
  Response response{static_cast<http::status>(status), version};
  response.set(http::field::content_type, "application/problem+json");
  response.set("X-Request-Id", request_id);
  response.body() = std::string(buffer.GetString(), buffer.GetSize());
  response.prepare_payload();
  return response;
}

void Router::handle(Request request, const std::string& client_address, Respond respond) {
  const auto started = Clock::now();
  // The first copied header that breaks the rule, refused below once the answer can be counted.
  std::string_view bad_header;
  for (const std::string_view name : copied_headers) {
    const auto count = request.count(boost::beast::string_view(name.data(), name.size()));
    if (count > 1 ||
        (count == 1 && !is_token_text(view(request[boost::beast::string_view(name.data(), name.size())]),
                                      copied_header_bytes_max))) {
      bad_header = name;
      break;
    }
  }
  std::string request_id(request["X-Request-Id"]);
  if (bad_header == "X-Request-Id" || request_id.empty()) request_id = generate_request_id();
  logging::RequestIdScope scope(request_id);
  const unsigned version = request.version();
  const std::string method(request.method_string());

  const Target target = split_target(view(request.target()));
  std::string allowed;
  auto route = match(target.segments, request.method(), allowed);
  // A fixed set of labels: the route's template, or `other` for a path no route has (made-up
  // paths must not add metric series); Metrics maps made-up methods to `other` likewise.
  const std::string route_name = route ? route->pattern : (allowed.empty() ? "other" : "wrong_method");

  // Every answer passes here: metrics, access log, request id header.
  auto finish = [this, respond, route_name, method, started, request_id](Response response) {
    response.set("X-Request-Id", request_id);
    const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
    metrics_.observe_request(route_name, method, response.result_int(), seconds);
    if (response.result_int() >= 500) {
      logging::RequestIdScope scope(request_id);
      spdlog::warn("{} {} -> {}", method, route_name, response.result_int());
    } else if (spdlog::should_log(spdlog::level::debug)) {
      logging::RequestIdScope scope(request_id);
      spdlog::debug("{} {} -> {} in {:.3f} ms", method, route_name, response.result_int(), seconds * 1e3);
    }
    respond(std::move(response));
  };
  auto fail = [&](int status, const std::string& code, const std::string& title,
                  const std::string& detail) {
    finish(problem_response(status, code, title, detail, request_id, version));
  };
  auto json = [&, version](http::status status, std::string body) {
    Response response{status, version};
    response.set(http::field::content_type, "application/json");
    response.body() = std::move(body);
    response.prepare_payload();
    return response;
  };

  if (!bad_header.empty()) {
    fail(400, "invalid_header", "Invalid header",
         std::string(bad_header) + " must be sent at most once, as 1 to " + std::to_string(copied_header_bytes_max) +
             " visible ASCII characters (0x21 to 0x7E)");
    return;
  }

  if (!route) {
    if (!allowed.empty()) {
      Response response = problem_response(405, "method_not_allowed", "Method not allowed",
                                            method + " is not allowed here; use " + allowed,
                                            request_id, version);
      response.set(http::field::allow, allowed);
      finish(std::move(response));
      return;
    }
    // The target is echoed only when it is printable ASCII: the answer is JSON, and UTF-8.
    const std::string_view path = view(request.target());
    fail(404, "not_found", "Not found",
         is_token_text(path, echoed_target_bytes_max) ? "no route for " + std::string(path) : "no such route");
    return;
  }

  // Health, metrics and the OpenAPI document need no token.
  if (route->handler == Handler::openapi) {
    finish(json(http::status::ok, std::string(openapi_document())));
    return;
  }
  if (route->handler == Handler::health_live) {
    finish(json(http::status::ok, R"({"status":"alive"})"));
    return;
  }
  if (route->handler == Handler::health || route->handler == Handler::health_ready ||
      route->handler == Handler::metrics) {
    const Handler kind = route->handler;
    // From a snapshot at most health_refresh_interval old: see HealthSnapshots.
    health_.get([this, kind, finish, json, version](std::shared_ptr<const HealthSnapshot> snapshot) {
      const DatabaseHealth& database = snapshot->database;
      const ReadSideHealth& read_side = snapshot->read_side;
      const bool ready = database.reachable && database.pending_migrations.empty();
      if (kind == Handler::metrics) {
        std::string extra;
        extra += "# TYPE ledger_health_refreshes_total counter\n";
        extra += fmt::format("ledger_health_refreshes_total {}\n", health_.refreshes());
        extra += "# TYPE ledger_database_pool_connections gauge\n";
        extra += fmt::format("ledger_database_pool_connections{{state=\"open\"}} {}\n", database.pool_open);
        extra += fmt::format("ledger_database_pool_connections{{state=\"in_use\"}} {}\n", database.pool_in_use);
        extra += fmt::format("ledger_database_pool_connections{{state=\"max\"}} {}\n", database.pool_max);
        extra += fmt::format("ledger_database_up {}\n", database.reachable ? 1 : 0);
        if (services_.engine != nullptr) {
          const auto stats = services_.engine->stats();
          extra += "# TYPE ledger_engine_batches_total counter\n";
          extra += fmt::format("ledger_engine_batches_total {}\n", stats.batches);
          extra += fmt::format("ledger_engine_events_total {}\n", stats.events);
          extra += fmt::format("ledger_engine_commands_total{{outcome=\"accepted\"}} {}\n", stats.commands_accepted);
          extra += fmt::format("ledger_engine_commands_total{{outcome=\"rejected\"}} {}\n", stats.commands_rejected);
          extra += fmt::format("ledger_engine_conflicts_total {}\n", stats.conflicts);
          extra += fmt::format("ledger_engine_queued_commands {}\n", stats.queued);
          extra += "# HELP ledger_engine_circuit_open 1 while the database circuit breaker is open or half open.\n";
          extra += "# TYPE ledger_engine_circuit_open gauge\n";
          extra += fmt::format("ledger_engine_circuit_open {}\n", stats.circuit == engine::CircuitState::closed ? 0 : 1);
          extra += "# TYPE ledger_engine_circuit_opened_total counter\n";
          extra += fmt::format("ledger_engine_circuit_opened_total {}\n", stats.circuit_opened);
          append_prometheus_histogram(extra, "ledger_engine_commit_latency_seconds",
                                      "Time to append and commit a batch.", stats.commit_latency_seconds);
          append_prometheus_histogram(extra, "ledger_engine_batch_commands", "Commands per committed batch.",
                                      stats.batch_commands);
          extra += "# TYPE ledger_state_cache_streams gauge\n";
          extra += fmt::format("ledger_state_cache_streams {}\n", stats.cache_streams);
          extra += fmt::format("ledger_state_cache_streams_max {}\n", stats.cache_streams_max);
          extra += "# TYPE ledger_state_cache_lookups_total counter\n";
          extra += fmt::format("ledger_state_cache_lookups_total{{result=\"hit\"}} {}\n", stats.cache_hits);
          extra += fmt::format("ledger_state_cache_lookups_total{{result=\"miss\"}} {}\n", stats.cache_misses);
          if (stats.snapshots_enabled) {
            extra += "# TYPE ledger_snapshot_reads_total counter\n";
            extra += fmt::format("ledger_snapshot_reads_total{{result=\"hit\"}} {}\n", stats.snapshots.hits);
            extra += fmt::format("ledger_snapshot_reads_total{{result=\"miss\"}} {}\n", stats.snapshots.misses);
            extra += fmt::format("ledger_snapshot_reads_total{{result=\"corrupt\"}} {}\n", stats.snapshots.corrupt);
            extra += "# TYPE ledger_snapshot_writes_total counter\n";
            extra += fmt::format("ledger_snapshot_writes_total {}\n", stats.snapshots.written);
          }
        }
        Response response{http::status::ok, version};
        response.set(http::field::content_type, "text/plain; version=0.0.4");
        extra += read_side_metrics(read_side);
        response.body() = metrics_.render(extra);
        response.prepare_payload();
        finish(std::move(response));
        return;
      }
      rapidjson::StringBuffer buffer;
      JsonWriter w(buffer);
      w.StartObject();
      if (kind == Handler::health_ready) {
        w.Key("status");
        write_string(w, ready ? "ready" : "not_ready");
        if (!database.reachable) {
          w.Key("reason");
          write_string(w, "database unreachable");  // the cause is in the server log, not here
        } else if (!database.pending_migrations.empty()) {
          w.Key("reason");
          write_string(w, "migrations pending");
        }
        w.EndObject();
        finish(json(ready ? http::status::ok : http::status::service_unavailable,
                    std::string(buffer.GetString(), buffer.GetSize())));
        return;
      }
      w.Key("status");
      write_string(w, !database.reachable                      ? "unhealthy"
                      : (ready && !read_side_degraded(read_side)) ? "healthy"
                                                                  : "degraded");
      w.Key("components");
      w.StartObject();
      w.Key("database");
      w.StartObject();
      w.Key("status");
      write_string(w, database.reachable ? "up" : "down");
      w.Key("latency_ms");
      w.Double(database.latency_ms);
      w.Key("pool");
      w.StartObject();
      w.Key("open");
      w.Uint64(database.pool_open);
      w.Key("in_use");
      w.Uint64(database.pool_in_use);
      w.Key("max");
      w.Uint64(database.pool_max);
      w.EndObject();
      // No error text: it names hosts, ports and users, and these routes need no token. The
      // server log has the cause (redacted), once per change.
      w.EndObject();
      w.Key("migrations");
      w.StartObject();
      w.Key("status");
      write_string(w, database.pending_migrations.empty() ? "up" : "pending");
      w.Key("pending");
      w.StartArray();
      for (const auto& pending : database.pending_migrations) write_string(w, pending);
      w.EndArray();
      w.EndObject();
      if (services_.engine != nullptr) {
        const auto stats = services_.engine->stats();
        w.Key("engine");
        w.StartObject();
        w.Key("status");
        write_string(w, stats.circuit == engine::CircuitState::closed ? "up" : "failing_fast");
        w.Key("circuit");
        write_string(w, engine::to_string(stats.circuit));
        w.Key("queued_commands");
        w.Uint64(stats.queued);
        w.Key("batches");
        w.Uint64(stats.batches);
        w.EndObject();
        write_snapshot_cache_health(w, stats);
      }
      write_read_side_health(w, read_side);
      w.EndObject();
      w.EndObject();
      finish(json(database.reachable ? http::status::ok : http::status::service_unavailable,
                  std::string(buffer.GetString(), buffer.GetSize())));
    });
    return;
  }

  // Everything else needs a token with the route's role.
  auto authenticated = settings_.tokens->authenticate(view(request[http::field::authorization]));
  if (const auto* problem = std::get_if<Problem>(&authenticated)) {
    Response response = problem_response(problem->status, problem->code, problem->title,
                                          problem->detail, request_id, version);
    response.set(http::field::www_authenticate, "Bearer");
    finish(std::move(response));
    return;
  }
  const Principal principal = std::get<Principal>(authenticated);
  // A signed token is not enough: every route past this point needs one of the three roles.
  if (principal.roles == 0) {
    fail(403, "forbidden", "Forbidden", "this token has none of the roles teller, auditor, admin");
    return;
  }
  if (route->role && !principal.has(*route->role)) {
    fail(403, "forbidden", "Forbidden",
         std::string("this route needs the ") +
             (*route->role == Role::auditor ? "auditor" : *route->role == Role::admin ? "admin" : "teller") + " role");
    return;
  }
  // Per actor, after authentication: one client's burst spends only its own tokens.
  {
    const bool moves_state = route->handler == Handler::command || route->handler == Handler::close_of_business;
    const RequestClass request_class = moves_state ? RequestClass::command : RequestClass::query;
    if (const auto wait = rate_limiter_.admit(principal.subject, request_class)) {
      metrics_.count_rate_limited(moves_state ? "command" : "query");
      Response response = problem_response(429, "rate_limited", "Too many requests",
                                           std::string("this token's ") + (moves_state ? "command" : "query") +
                                               " rate limit is spent; retry after the Retry-After seconds",
                                           request_id, version);
      response.set(http::field::retry_after, std::to_string((wait->count() + 999) / 1'000));
      finish(std::move(response));
      return;
    }
  }

  if (route->handler == Handler::query) {
    if (services_.read_models == nullptr) {
      fail(503, "unavailable", "Service unavailable", "this server has no read models configured");
      return;
    }
    run_query(*services_.read_models, blocking_, route->query, route->path_id, target.query,
              [this, finish, request_id, version](QueryAnswer answer) {
                Response response;
                if (answer.status == 200) {
                  response = Response{http::status::ok, version};
                  response.set(http::field::content_type, "application/json");
                  response.body() = std::move(answer.body);
                  response.prepare_payload();
                } else {
                  response = problem_response(answer.status, answer.code, answer.title, answer.detail,
                                              request_id, version);
                }
                if (answer.watermark) response.set("X-Ledger-Watermark", std::to_string(*answer.watermark));
                finish(std::move(response));
              });
    return;
  }

  if (route->handler == Handler::stream_events) {
    std::int64_t from_version = 1;
    std::int64_t limit = 100;
    for (const auto& [name, value] : target.query) {
      const auto number = parse_integer(value);
      if (name == "from_version" && number && *number >= 1) {
        from_version = *number;
      } else if (name == "limit" && number && *number >= 1 && *number <= stream_page_events_max) {
        limit = *number;
      } else {
        fail(400, "invalid_query", "Invalid query parameter",
             "invalid " + name + " (from_version >= 1, limit 1 to 1000)");
        return;
      }
    }
    if (!is_valid_stream_id(route->path_id)) {
      fail(400, "invalid_id", "Invalid id", "invalid stream id");
      return;
    }
    if (services_.event_store == nullptr) {
      fail(503, "unavailable", "Service unavailable", "the event store is not configured");
      return;
    }
    const std::string stream_id = route->path_id;
    boost::asio::post(blocking_, [this, stream_id, from_version, limit, finish, json, request_id,
                                  version] {
      std::vector<domain::RecordedEvent> events;
      try {
        events = services_.event_store->read_stream(stream_id, StreamVersion(from_version),
                                                    static_cast<std::size_t>(limit));
      } catch (const std::exception& error) {
        logging::RequestIdScope scope(request_id);
        spdlog::warn("reading stream {} failed: {}", stream_id, error.what());
        finish(problem_response(503, "database_unavailable", "Service unavailable",
                                "the event store cannot be read now", request_id, version));
        return;
      }
      if (events.empty() && from_version == 1) {
        finish(problem_response(404, "unknown_stream", "Not found", "no stream " + stream_id,
                                request_id, version));
        return;
      }
      rapidjson::StringBuffer buffer;
      JsonWriter w(buffer);
      w.StartObject();
      w.Key("events");
      w.StartArray();
      for (const auto& event : events) {
        w.StartObject();
        w.Key("position");
        w.Int64(event.position.value());
        w.Key("stream_id");
        write_string(w, event.stream_id);
        w.Key("version");
        w.Int64(event.version.value());
        w.Key("type");
        write_string(w, event.type);
        w.Key("event_id");
        write_string(w, event.event_id);
        w.Key("recorded_at");
        write_string(w, rfc3339(event.recorded_at_us));
        w.Key("data");
        const auto decoded = domain::decode_event(event.type, event.payload);
        const std::string data = decoded ? domain::event_to_json(*decoded) : "null";
        w.RawValue(data.data(), data.size(), rapidjson::kObjectType);
        w.Key("metadata");
        const std::string metadata = domain::metadata_to_json(event.metadata);
        w.RawValue(metadata.data(), metadata.size(), rapidjson::kObjectType);
        w.EndObject();
      }
      w.EndArray();
      w.Key("next_from_version");
      if (static_cast<std::int64_t>(events.size()) == limit) {
        w.Int64(events.back().version.value() + 1);
      } else {
        w.Null();
      }
      w.EndObject();
      finish(json(http::status::ok, std::string(buffer.GetString(), buffer.GetSize())));
    });
    return;
  }

  if (route->handler == Handler::close_of_business) {
    rapidjson::Document body;
    body.Parse(request.body().c_str());
    std::optional<domain::Date> date;
    if (!body.HasParseError() && body.IsObject() && body.MemberCount() == 1 && body.HasMember("date") &&
        body["date"].IsString()) {
      date = domain::parse_business_date(body["date"].GetString());
    }
    if (!date) {
      fail(400, "invalid_date", "Invalid date",
           "the body must be {\"date\": \"YYYY-MM-DD\"}, a date from 1970-01-01 to 2199-12-31");
      return;
    }
    if (services_.engine == nullptr || services_.event_store == nullptr) {
      fail(503, "unavailable", "Service unavailable", "this server has no engine configured");
      return;
    }
    // Runs to the end on the blocking pool; a client that gives up can run it again (idempotent).
    boost::asio::post(blocking_, [this, date = *date, finish, json, request_id, version] {
      engine::CloseOfBusinessResult result;
      try {
        result = engine::close_of_business(*services_.engine, *services_.event_store, date);
      } catch (const std::exception& error) {
        logging::RequestIdScope scope(request_id);
        spdlog::error("close of business failed: {}", error.what());
        finish(problem_response(503, "database_unavailable", "Service unavailable",
                                "close of business stopped; run it again to finish (it is idempotent)", request_id,
                                version));
        return;
      }
      rapidjson::StringBuffer buffer;
      JsonWriter w(buffer);
      w.StartObject();
      w.Key("date");
      write_string(w, domain::to_string(date));
      w.Key("loans");
      w.Int64(result.loans);
      w.Key("closed");
      w.Int64(result.closed);
      w.Key("failed");
      w.Int64(result.failed);
      if (!result.first_failure.empty()) {
        w.Key("first_failure");
        write_string(w, result.first_failure);
      }
      w.EndObject();
      finish(json(http::status::ok, std::string(buffer.GetString(), buffer.GetSize())));
    });
    return;
  }

  if (route->handler == Handler::balance_as_of) {
    std::optional<std::int64_t> as_of_us;
    std::optional<std::int64_t> at_position;
    for (const auto& [name, value] : target.query) {
      if (name == "as_of" && (as_of_us = parse_rfc3339(value))) continue;
      if (name == "at_position" && (at_position = parse_integer(value)) && *at_position >= 1) continue;
      fail(400, "invalid_query", "Invalid query parameter",
           "invalid " + name + " (as_of: an RFC 3339 time; at_position: a position >= 1)");
      return;
    }
    if (as_of_us.has_value() == at_position.has_value()) {
      fail(400, "invalid_query", "Invalid query parameter", "give exactly one of as_of and at_position");
      return;
    }
    if (!is_valid_stream_id(route->path_id)) {
      fail(400, "invalid_id", "Invalid id", "invalid account id");
      return;
    }
    if (services_.event_store == nullptr) {
      fail(503, "unavailable", "Service unavailable", "the event store is not configured");
      return;
    }
    const std::string account_id = route->path_id;
    boost::asio::post(blocking_, [this, account_id, as_of_us, at_position, finish, json, request_id, version] {
      std::optional<engine::BalanceAsOf> found;
      try {
        found = engine::balance_as_of(*services_.event_store, account_id, as_of_us,
                                      at_position ? std::optional<GlobalPosition>(*at_position) : std::nullopt);
      } catch (const std::exception& error) {
        logging::RequestIdScope scope(request_id);
        spdlog::warn("folding account {} failed: {}", account_id, error.what());
        finish(problem_response(503, "database_unavailable", "Service unavailable",
                                "the event store cannot be read now", request_id, version));
        return;
      }
      const std::string moment = as_of_us ? rfc3339(*as_of_us) : "position " + std::to_string(*at_position);
      if (!found || !found->state.exists) {
        finish(problem_response(404, "unknown_account", "Not found",
                                "account " + account_id + (found ? " did not exist yet at " + moment : " does not exist"),
                                request_id, version));
        return;
      }
      const domain::AccountState& a = found->state;
      rapidjson::StringBuffer buffer;
      JsonWriter w(buffer);
      w.StartObject();
      w.Key("id");
      write_string(w, account_id);
      if (as_of_us) {
        w.Key("as_of");
        write_string(w, rfc3339(*as_of_us));
      } else {
        w.Key("at_position");
        w.Int64(*at_position);
      }
      w.Key("position");
      w.Int64(found->position.value());
      w.Key("recorded_at");
      write_string(w, rfc3339(found->recorded_at_us));
      w.Key("currency");
      write_string(w, a.currency.code());
      w.Key("status");
      write_string(w, domain::to_string(a.status));
      for (const auto& [key, amount] : {std::pair{"debits_posted", a.debits_posted}, {"credits_posted", a.credits_posted},
                                        {"debits_pending", a.debits_pending}, {"credits_pending", a.credits_pending},
                                        {"overdraft_limit", a.overdraft_limit}}) {
        w.Key(key);
        w.Int64(amount.minor_units());
      }
      const auto balance = a.balance();
      const auto available = a.available();
      w.Key("balance");
      balance ? w.Int64(balance->minor_units()) : w.Null();
      w.Key("available");
      available ? w.Int64(available->minor_units()) : w.Null();
      w.Key("version");
      w.Int64(a.version.value());
      w.EndObject();
      finish(json(http::status::ok, std::string(buffer.GetString(), buffer.GetSize())));
    });
    return;
  }

  // Commands.
  if (commands_ == nullptr) {
    fail(503, "unavailable", "Service unavailable", "this server has no engine configured");
    return;
  }
  if (!request.body().empty()) {
    const std::string content_type(request[http::field::content_type]);
    if (content_type.rfind("application/json", 0) != 0) {
      fail(415, "unsupported_media_type", "Unsupported media type",
           "send the body as application/json");
      return;
    }
  }
  const std::string idempotency_key(request["Idempotency-Key"]);  // checked with the other copied headers
  auto parsed = parse_command(route->command, route->path_id, request.body(),
                              domain::to_string(domain::Date{std::chrono::floor<std::chrono::days>(
                                  std::chrono::system_clock::now())}));
  if (const auto* problem = std::get_if<Problem>(&parsed)) {
    fail(problem->status, problem->code, problem->title, problem->detail);
    return;
  }
  domain::Command command{std::move(std::get<domain::CommandBody>(parsed)), {}};
  command.context.actor = principal.subject;
  command.context.request_id = request_id;
  command.context.correlation_id = std::string(request["X-Correlation-Id"]);
  command.context.client_address = client_address;
  command.context.idempotency_key = idempotency_key;
  if (!idempotency_key.empty()) {
    command.context.request_fingerprint = method + " " + std::string(request.target()) + "\n" + request.body();
  }
  const std::string type = command_type_name(command.body);
  const std::string kind = resource_kind(route->command);
  try {
    commands_->submit(
        std::move(command), [this, finish, json, type, kind, request_id, version](
                                std::exception_ptr error, domain::CommandOutcome outcome) {
          if (error) {
            bool outcome_unknown = false;
            try {
              std::rethrow_exception(error);
            } catch (const engine::OutcomeUnknown& exception) {
              outcome_unknown = true;
              logging::RequestIdScope scope(request_id);
              spdlog::error("command outcome unknown: {}", exception.what());
            } catch (const std::exception& exception) {
              logging::RequestIdScope scope(request_id);
              spdlog::error("command failed: {}", exception.what());
            }
            metrics_.count_command(type, outcome_unknown ? "outcome_unknown" : "unavailable");
            // An unknown outcome is never reported as "nothing was written": a client that
            // retried without its Idempotency-Key could then apply the command twice.
            Response response =
                outcome_unknown
                    ? problem_response(503, "outcome_unknown", "Outcome unknown",
                                       "the connection to the event store was lost while the "
                                       "command committed, and whether it committed could not "
                                       "be established; retry with the same Idempotency-Key "
                                       "to learn the outcome",
                                       request_id, version)
                    : problem_response(503, "database_unavailable", "Service unavailable",
                                       "the event store is unavailable; nothing was written",
                                       request_id, version);
            response.set(http::field::retry_after, "1");
            finish(std::move(response));
            return;
          }
          metrics_.count_command(type, std::string(outcome.accepted() ? "accepted" : domain::to_string(outcome.code)));
          if (!outcome.accepted()) {
            Response response = problem_response(status_of(outcome.code),
                                                 std::string(domain::to_string(outcome.code)),
                                                 title_of(outcome.code), outcome.detail, request_id,
                                                 version);
            finish(std::move(response));
            return;
          }
          rapidjson::StringBuffer buffer;
          JsonWriter w(buffer);
          w.StartObject();
          w.Key("command_id");
          write_string(w, outcome.command_id);
          w.Key("position");
          w.Int64(outcome.position.value());
          w.Key("versions");
          w.StartObject();
          for (const auto& [stream, stream_version] : outcome.versions) {
            write_string(w, stream);
            w.Int64(stream_version.value());
          }
          w.EndObject();
          if (kind == "batch") {
            w.Key("ids");
            w.StartArray();
            for (const auto& id : outcome.resource_ids) write_string(w, id);
            w.EndArray();
          } else {
            w.Key(kind.c_str());
            w.StartObject();
            w.Key("id");
            write_string(w, outcome.resource_ids.empty() ? "" : outcome.resource_ids.front());
            w.EndObject();
          }
          w.Key("replayed");
          w.Bool(outcome.replayed);
          w.EndObject();
          finish(json(outcome.replayed ? http::status::ok : http::status::created,
                      std::string(buffer.GetString(), buffer.GetSize())));
        });
  } catch (const engine::EngineOverloaded& error) {
    Response response = problem_response(503, "overloaded", "Service unavailable", error.what(),
                                         request_id, version);
    response.set(http::field::retry_after, "1");
    finish(std::move(response));
  } catch (const engine::DatabaseCircuitOpen& error) {
    metrics_.count_command(type, "unavailable");
    Response response = problem_response(503, "database_unavailable", "Service unavailable", error.what(),
                                         request_id, version);
    response.set(http::field::retry_after, std::to_string(std::max<std::int64_t>(1, (error.retry_after.count() + 999) / 1'000)));
    finish(std::move(response));
  } catch (const engine::EngineUnavailable& error) {
    fail(503, "shutting_down", "Service unavailable", error.what());
  }
}

}  // namespace ledger::api
