#include "router.hpp"

// Routing, authentication, rate limits and dispatch; the handlers live in handlers/, one file
// per concern.
#include <spdlog/spdlog.h>

#include <charconv>
#include <chrono>
#include <random>

#include "handlers/handlers.hpp"
#include "ledger/api/auth.hpp"
#include "ledger/api/routes.hpp"
#include "ledger/core/assert.hpp"
#include "ledger/core/logging.hpp"
#include "ledger/engine/engine.hpp"

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

std::string_view view(boost::beast::string_view text) { return {text.data(), text.size()}; }

bool is_token_text(std::string_view text, std::size_t length_max) {
  if (text.empty() || text.size() > length_max) return false;
  for (char c : text) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

std::string generate_request_id() {
  thread_local std::mt19937_64 random(std::random_device{}());
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(random()));
  return text;
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
  std::string_view pattern;  // into route_table: static
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
    return Route{spec.pattern, spec.method, spec.handler, spec.command, spec.role, std::move(*id),
                 spec.query};
  }
  for (const auto name : other_methods) {
    if (!allowed.empty()) allowed += ", ";
    allowed += std::string(name);
  }
  return std::nullopt;
}
// Routes anyone may call: no token (health for probes, metrics for scrapers, the API's own
// description). Listed one by one, with no default, so a new handler decides (-Wswitch).
bool needs_token(Handler handler) {
  switch (handler) {
    case Handler::health:
    case Handler::health_live:
    case Handler::health_ready:
    case Handler::metrics:
    case Handler::openapi: return false;
    case Handler::command:
    case Handler::stream_events:
    case Handler::balance_as_of:
    case Handler::close_of_business:
    case Handler::query: return true;
  }
  return true;  // not a Handler
}

// Routes that move state spend the command rate limit, the others the query one.
bool moves_state(Handler handler) {
  switch (handler) {
    case Handler::command:
    case Handler::close_of_business: return true;
    case Handler::stream_events:
    case Handler::balance_as_of:
    case Handler::query:
    case Handler::health:
    case Handler::health_live:
    case Handler::health_ready:
    case Handler::metrics:
    case Handler::openapi: return false;
  }
  return false;  // not a Handler
}

std::string_view role_name(Role role) {
  switch (role) {
    case Role::teller: return "teller";
    case Role::auditor: return "auditor";
    case Role::admin: return "admin";
  }
  return "admin";  // not a Role
}

// The first copied header that breaks the rule (see copied_headers), or "".
std::string_view find_bad_copied_header(const Request& request) {
  for (const std::string_view name : copied_headers) {
    const boost::beast::string_view field(name.data(), name.size());
    const auto count = request.count(field);
    if (count > 1 || (count == 1 && !is_token_text(view(request[field]), copied_header_bytes_max))) return name;
  }
  return {};
}

// No route has this path (404), or none has this method on it (405 with Allow).
void answer_unrouted(const Request& request, const std::string& allowed, const handlers::Reply& reply) {
  if (!allowed.empty()) {
    Response response = handlers::problem_response(
        405, "method_not_allowed", "Method not allowed",
        std::string(request.method_string()) + " is not allowed here; use " + allowed, reply.request_id,
        reply.version);
    response.set(http::field::allow, allowed);
    reply.send(std::move(response));
    return;
  }
  // The target is echoed only when it is printable ASCII: the answer is JSON, and UTF-8.
  const std::string_view path = view(request.target());
  reply.problem(404, "not_found", "Not found",
                is_token_text(path, echoed_target_bytes_max) ? "no route for " + std::string(path) : "no such route");
}

// The token's principal when it may call a route that needs `role` (any of the three roles
// when none); otherwise answers 401 or 403 and returns std::nullopt.
std::optional<Principal> authorize(const TokenVerifier& tokens, const Request& request, std::optional<Role> role,
                                   const handlers::Reply& reply) {
  auto authenticated = tokens.authenticate(view(request[http::field::authorization]));
  if (const auto* problem = std::get_if<Problem>(&authenticated)) {
    Response response = handlers::problem_response(problem->status, problem->code, problem->title, problem->detail,
                                                   reply.request_id, reply.version);
    response.set(http::field::www_authenticate, "Bearer");
    reply.send(std::move(response));
    return std::nullopt;
  }
  Principal principal = std::get<Principal>(std::move(authenticated));
  // A signed token is not enough: every route past this point needs one of the three roles.
  if (principal.roles == 0) {
    reply.problem(403, "forbidden", "Forbidden", "this token has none of the roles teller, auditor, admin");
    return std::nullopt;
  }
  if (role && !principal.has(*role)) {
    reply.problem(403, "forbidden", "Forbidden", "this route needs the " + std::string(role_name(*role)) + " role");
    return std::nullopt;
  }
  return principal;
}

// Per actor, after authentication: one client's burst spends only its own tokens. False when
// refused (answered 429).
bool admit(RateLimiter& rate_limiter, Metrics& metrics, const Principal& principal, bool command,
           const handlers::Reply& reply) {
  const auto wait = rate_limiter.admit(principal.subject, command ? RequestClass::command : RequestClass::query);
  if (!wait) return true;
  const std::string request_class = command ? "command" : "query";
  metrics.count_rate_limited(request_class);
  Response response = handlers::problem_response(
      429, "rate_limited", "Too many requests",
      "this token's " + request_class + " rate limit is spent; retry after the Retry-After seconds",
      reply.request_id, reply.version);
  response.set(http::field::retry_after, std::to_string((wait->count() + 999) / 1'000));
  reply.send(std::move(response));
  return false;
}

// Hands the request to its route's handler; `principal` is null for the routes that need no token.
void dispatch(const handlers::Context& context, const Route& route, const Target& target, const Request& request,
              const Principal* principal, const std::string& client_address, const handlers::Reply& reply) {
  switch (route.handler) {
    case Handler::openapi: handlers::answer_openapi(reply); return;
    case Handler::health_live: handlers::answer_health_live(reply); return;
    case Handler::health: handlers::answer_health(context, handlers::HealthView::full, reply); return;
    case Handler::health_ready: handlers::answer_health(context, handlers::HealthView::ready, reply); return;
    case Handler::metrics: handlers::answer_metrics(context, reply); return;
    case Handler::query: handlers::answer_query(context, route.query, route.path_id, target.query, reply); return;
    case Handler::stream_events: handlers::answer_stream_events(context, route.path_id, target.query, reply); return;
    case Handler::balance_as_of: handlers::answer_balance_as_of(context, route.path_id, target.query, reply); return;
    case Handler::close_of_business: handlers::answer_close_of_business(context, request, reply); return;
    case Handler::command:
      LEDGER_ASSERT(principal != nullptr, "command routes need a token");
      handlers::answer_command(context, {route.command, route.path_id, request, *principal, client_address}, reply);
      return;
  }
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
    std::string access = needs_token(spec.handler) ? "any" : "none";
    if (spec.role) access = role_name(*spec.role);
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
  return handlers::problem_response(status, code, title, detail, request_id, version);
}

void Router::handle(Request request, const std::string& peer_address, Respond respond) {
  const auto started = Clock::now();
  std::vector<std::string_view> forwarded_for;
  const auto [first_forwarded, end_forwarded] = request.equal_range("X-Forwarded-For");
  for (auto field = first_forwarded; field != end_forwarded; ++field) forwarded_for.push_back(view(field->value()));
  const std::string client_address = api::client_address(settings_.trusted_proxies, peer_address, forwarded_for);
  // The first copied header that breaks the rule, refused below once the answer can be counted.
  const std::string_view bad_header = find_bad_copied_header(request);
  std::string request_id(request["X-Request-Id"]);
  if (bad_header == "X-Request-Id" || request_id.empty()) request_id = generate_request_id();
  logging::RequestIdScope scope(request_id);
  const std::string method(request.method_string());

  const Target target = split_target(view(request.target()));
  std::string allowed;
  const auto route = match(target.segments, request.method(), allowed);
  // A fixed set of labels: the route's template, or `other` for a path no route has (made-up
  // paths must not add metric series); Metrics maps made-up methods to `other` likewise.
  const std::string_view route_name = route ? route->pattern : (allowed.empty() ? "other" : "wrong_method");

  // Every answer passes here: metrics, access log, request id header.
  auto finish = [this, respond = std::move(respond), route_name, method, started, request_id,
                 client_address](Response response) {
    response.set("X-Request-Id", request_id);
    const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
    metrics_.observe_request(route_name, method, response.result_int(), seconds);
    if (response.result_int() >= 500) {
      logging::RequestIdScope scope(request_id);
      spdlog::warn("{} {} from {} -> {}", method, route_name, client_address, response.result_int());
    } else if (spdlog::should_log(spdlog::level::debug)) {
      logging::RequestIdScope scope(request_id);
      spdlog::debug("{} {} from {} -> {} in {:.3f} ms", method, route_name, client_address, response.result_int(),
                    seconds * 1e3);
    }
    respond(std::move(response));
  };
  const handlers::Reply reply{request_id, request.version(), std::move(finish)};

  if (!bad_header.empty()) {
    reply.problem(400, "invalid_header", "Invalid header",
                  std::string(bad_header) + " must be sent at most once, as 1 to " +
                      std::to_string(copied_header_bytes_max) + " visible ASCII characters (0x21 to 0x7E)");
    return;
  }
  if (!route) {
    answer_unrouted(request, allowed, reply);
    return;
  }
  const handlers::Context context{services_, blocking_, commands_, metrics_, health_, settings_.tokens.get()};
  if (!needs_token(route->handler)) {
    dispatch(context, *route, target, request, nullptr, client_address, reply);
    return;
  }
  // Everything else needs a token with the route's role.
  const auto principal = authorize(*settings_.tokens, request, route->role, reply);
  if (!principal) return;
  if (!admit(rate_limiter_, metrics_, *principal, moves_state(route->handler), reply)) return;
  dispatch(context, *route, target, request, &*principal, client_address, reply);
}

}  // namespace ledger::api
