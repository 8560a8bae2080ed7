// The HTTP front in process: raw bytes a client sends on one connection -> the server's request
// parser (Boost.Beast, set up and its errors answered exactly as the server does:
// api/src/http_reading.hpp) -> the real Router, with a fake engine behind it. No sockets. Input
// layout: http_front_input.hpp (limits, bytes per read, the fake engine's answers); several
// requests in one input are pipelined, answered in order, until one is refused or not kept alive.
//
// The fake engine (a CommandSink) records each command and answers in a cycle: accepted,
// replayed, every rejection code, then each failure the real one reports (EngineUnavailable
// or OutcomeUnknown through the completion, EngineOverloaded or EngineUnavailable thrown).
// The router is configured without read models, event store or engine stats: the read routes
// answer 503 `unavailable` (documented: "this server has no read models configured").
//
// Properties, besides no crash, no sanitizer report and an answer for every request:
//   - every status is one the front documents: 200 201 400 401 403 404 405 408 409 413 415 422
//     429 431 503 504;
//   - no 5xx except 503 `unavailable` on a read route or close of business (what this
//     configuration lacks), and 503 `database_unavailable` / `outcome_unknown` / `overloaded` /
//     `shutting_down` exactly when the fake engine answered this request so;
//   - every answer has an X-Request-Id; every error is application/problem+json whose `code`
//     is a snake_case string, `type` is /problems/<code>, `status` the HTTP status and
//     `request_id` the header's; 405 names Allow, 401 WWW-Authenticate;
//   - a command that reached the engine is answered as the engine said (201, or 200 replayed,
//     with command_id, position and versions; a rejection with its own code and status);
//     201/200 on a command route only when the engine accepted;
//   - every command the engine receives respects API.md's bounds (command_bounds.hpp) and
//     carries a context within the copied-header rule (actor, request id, correlation id and
//     Idempotency-Key 1 to 128 visible ASCII, a fingerprint exactly when a key was sent).
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <rapidjson/document.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "command_bounds.hpp"
#include "fuzz_support.hpp"
#include "http_front_input.hpp"
#include "http_reading.hpp"
#include "ledger/api/auth.hpp"
#include "router.hpp"

namespace {

namespace api = ledger::api;
namespace domain = ledger::domain;
namespace engine = ledger::engine;
namespace http = boost::beast::http;
namespace net = boost::asio;
namespace input = ledger::fuzz::http_front;
using ledger::fuzz::require;
using ledger::fuzz::violated;

constexpr int requests_per_input_max = 32;
constexpr auto answer_wait = std::chrono::seconds(10);
constexpr std::size_t copied_header_bytes_max = 128;  // README: the HTTP front's copied headers
constexpr int documented_statuses[] = {200, 201, 400, 401, 403, 404, 405, 408, 409,
                                       413, 415, 422, 429, 431, 503, 504};

// A connection's bytes, handed out at most `step` at a time; eof at the end.
class ByteStream {
 public:
  ByteStream(std::string_view bytes, std::size_t step) : bytes_(bytes), step_(step) {}
  template <class Buffers>
  std::size_t read_some(const Buffers& buffers, boost::system::error_code& error) {
    error = {};
    if (bytes_.empty()) {
      error = net::error::eof;
      return 0;
    }
    const std::size_t n = net::buffer_copy(buffers, net::buffer(bytes_.data(), std::min(step_, bytes_.size())));
    bytes_.remove_prefix(n);
    return n;
  }
  template <class Buffers>
  std::size_t read_some(const Buffers& buffers) {
    boost::system::error_code error;
    const std::size_t n = read_some(buffers, error);
    if (error) throw boost::system::system_error(error);
    return n;
  }

 private:
  std::string_view bytes_;
  std::size_t step_;
};

bool is_copied_header_text(std::string_view text) {
  if (text.empty() || text.size() > copied_header_bytes_max) return false;
  for (const char c : text) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

// What the fake engine did with the current request's command.
enum class Answer { none, accepted, replayed, rejected, unavailable, outcome_unknown, overloaded, shutting_down };

// The longest IPv6 text with a zone id Boost prints, with room to spare.
constexpr std::size_t client_address_bytes_max = 128;

class FakeEngine final : public api::CommandSink {
 public:
  static constexpr int cycle = 2 + static_cast<int>(domain::rejection_code_last) + 4;

  void start(std::uint8_t position) { next_ = position % cycle; }
  void begin_request() {
    answer_ = Answer::none;
    code_ = domain::RejectionCode::none;
    calls_ = 0;
  }
  [[nodiscard]] Answer answer() const { return answer_; }
  [[nodiscard]] domain::RejectionCode code() const { return code_; }
  [[nodiscard]] int calls() const { return calls_; }

  void submit(domain::Command command, engine::Engine::Completion completion) override {
    ++calls_;
    require(calls_ == 1, "the router submitted two commands for one request");
    ledger::fuzz::check_body(command.body);
    const auto& context = command.context;
    require(is_copied_header_text(context.actor), "a command's actor outside 1-128 visible ASCII",
            context.actor);
    require(is_copied_header_text(context.request_id), "a command's request id outside 1-128 visible ASCII",
            context.request_id);
    require(context.correlation_id.empty() || is_copied_header_text(context.correlation_id),
            "a command's correlation id outside 1-128 visible ASCII", context.correlation_id);
    require(context.idempotency_key.empty() || is_copied_header_text(context.idempotency_key),
            "a command's Idempotency-Key outside 1-128 visible ASCII", context.idempotency_key);
    require(context.idempotency_key.empty() == context.request_fingerprint.empty(),
            "a request fingerprint without an Idempotency-Key, or a key without one");
    // The peer (127.0.0.1, a trusted proxy of the standard router) or an address its
    // X-Forwarded-For named: never other header text.
    boost::system::error_code not_an_address;
    (void)boost::asio::ip::make_address(context.client_address, not_an_address);
    require(!not_an_address && context.client_address.size() <= client_address_bytes_max,
            "a command's client address that is not an IP address", context.client_address);

    const int k = next_;
    next_ = (next_ + 1) % cycle;
    domain::CommandOutcome outcome;
    if (k < 2) {
      answer_ = k == 0 ? Answer::accepted : Answer::replayed;
      outcome.command_id = "fake-command";
      outcome.position = ledger::GlobalPosition(42);
      outcome.versions = {{"account-fake", ledger::StreamVersion(3)}};
      outcome.resource_ids = {"fake"};
      outcome.replayed = k == 1;
      completion(nullptr, std::move(outcome));
      return;
    }
    if (k < 2 + static_cast<int>(domain::rejection_code_last)) {
      answer_ = Answer::rejected;
      code_ = static_cast<domain::RejectionCode>(k - 1);
      outcome.code = code_;
      outcome.detail = "the fake engine refuses this";
      completion(nullptr, std::move(outcome));
      return;
    }
    switch (k - 2 - static_cast<int>(domain::rejection_code_last)) {
      case 0:
        answer_ = Answer::unavailable;
        completion(std::make_exception_ptr(engine::EngineUnavailable("fake: database down")), {});
        return;
      case 1:
        answer_ = Answer::outcome_unknown;
        completion(std::make_exception_ptr(engine::OutcomeUnknown("fake: commit lost")), {});
        return;
      case 2:
        answer_ = Answer::overloaded;
        throw engine::EngineOverloaded("fake: queue full");
      default:
        answer_ = Answer::shutting_down;
        throw engine::EngineUnavailable("fake: stopping");
    }
  }

 private:
  int next_ = 0;
  int calls_ = 0;
  Answer answer_ = Answer::none;
  domain::RejectionCode code_ = domain::RejectionCode::none;
};

// The HTTP status API.md and the README give each rejection (restated, not the router's table).
int documented_status(domain::RejectionCode code) {
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
    default: return 422;
  }
}

struct Fixture {
  api::ServerSettings small;
  api::ServerSettings standard;
  net::thread_pool blocking{1};
  FakeEngine engine;
  std::unique_ptr<api::Router> small_router;
  std::unique_ptr<api::Router> standard_router;

  Fixture() {
    for (api::ServerSettings* settings : {&small, &standard}) {
      settings->tokens = std::make_shared<const api::TokenVerifier>(
          api::TokenSettings{.hs256_secret = std::string(input::jwt_secret)});
      // Health answers from a snapshot: one refresh (on `blocking`) per run, then at once.
      settings->health_refresh_interval = std::chrono::hours(24);
    }
    // X-Forwarded-For is believed from the loopback peer by the standard router only, so the
    // fuzzed headers reach the chain walk there and are ignored by the small one.
    standard.trusted_proxies = api::TrustedProxies({"127.0.0.0/8"});
    small.header_bytes_max = input::small_header_bytes_max;
    small.body_bytes_max = input::small_body_bytes_max;
    api::Services services;
    services.check_database = [] {
      api::DatabaseHealth health;
      health.reachable = true;
      health.pool_max = 4;
      return health;
    };
    small_router = std::make_unique<api::Router>(small, services, blocking, &engine);
    standard_router = std::make_unique<api::Router>(standard, services, blocking, &engine);
  }
};

Fixture& fixture() {
  static Fixture* instance = new Fixture();  // never destroyed: the pool thread outlives runs
  return *instance;
}

// Calls the router and waits for its one answer (commands and refusals answer on this thread,
// a health refresh on the blocking pool).
api::Response route(api::Router& router, api::Request request) {
  struct Slot {
    std::mutex mutex;
    std::condition_variable ready;
    std::optional<api::Response> response;
    int answers = 0;
  };
  auto slot = std::make_shared<Slot>();
  router.handle(std::move(request), "127.0.0.1", [slot](api::Response response) {
    std::lock_guard lock(slot->mutex);
    ++slot->answers;
    require(slot->answers == 1, "the router answered one request twice");
    slot->response = std::move(response);
    slot->ready.notify_all();
  });
  std::unique_lock lock(slot->mutex);
  if (!slot->ready.wait_for(lock, answer_wait, [&] { return slot->response.has_value(); })) {
    violated("the router never answered", "no answer within 10 s");
  }
  return std::move(*slot->response);
}

bool is_snake_case(std::string_view code) {
  if (code.empty()) return false;
  for (const char c : code) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

std::string describe(const api::Response& response) {
  return std::to_string(response.result_int()) + " " + response.body().substr(0, 300);
}

// The properties every answer has, request or no request (refusals before routing).
std::string check_common(const api::Response& response) {
  const int status = response.result_int();
  bool documented = false;
  for (const int s : documented_statuses) documented = documented || s == status;
  require(documented, "a status the front does not document", describe(response));
  const std::string request_id(response["X-Request-Id"]);
  require(!request_id.empty(), "an answer without X-Request-Id", describe(response));
  if (status < 400) return {};
  require(response[http::field::content_type] == "application/problem+json",
          "an error that is not application/problem+json", describe(response));
  rapidjson::Document body;
  body.Parse(response.body().c_str(), response.body().size());
  require(!body.HasParseError() && body.IsObject(), "a problem body that is not a JSON object", describe(response));
  require(body.HasMember("code") && body["code"].IsString(), "a problem without a code", describe(response));
  const std::string code(body["code"].GetString(), body["code"].GetStringLength());
  require(is_snake_case(code), "a problem code that is not snake_case", describe(response));
  require(body.HasMember("type") && body["type"].IsString() && body["type"].GetString() == "/problems/" + code,
          "a problem whose type is not /problems/<code>", describe(response));
  require(body.HasMember("status") && body["status"].IsInt() && body["status"].GetInt() == status,
          "a problem whose status is not the HTTP status", describe(response));
  require(body.HasMember("title") && body["title"].IsString() && body.HasMember("detail") && body["detail"].IsString(),
          "a problem without title or detail", describe(response));
  require(body.HasMember("request_id") && body["request_id"].IsString() && body["request_id"].GetString() == request_id,
          "a problem whose request_id is not the X-Request-Id", describe(response));
  if (status == 405) require(!response[http::field::allow].empty(), "405 without Allow", describe(response));
  if (status == 401) {
    require(!response[http::field::www_authenticate].empty(), "401 without WWW-Authenticate", describe(response));
  }
  return code;
}

// HTTP_FRONT_FUZZ_TRACE=1: one line per request on stderr (what a seed reaches).
const bool trace = std::getenv("HTTP_FRONT_FUZZ_TRACE") != nullptr;

bool is_read_route(const api::Request& request) {
  const std::string_view target(request.target().data(), request.target().size());
  return request.method() == http::verb::get || target.find("close-of-business") != std::string_view::npos;
}

void check_routed(const api::Request& request, const api::Response& response, const FakeEngine& fake) {
  const std::string code = check_common(response);
  const int status = response.result_int();
  switch (fake.answer()) {
    case Answer::none:
      require(status != 201, "201 without an accepted command", describe(response));
      if (status >= 500) {
        require(status == 503 && code == "unavailable" && is_read_route(request),
                "a 5xx the fake engine did not cause", describe(response));
      }
      return;
    case Answer::accepted:
    case Answer::replayed: {
      require(status == (fake.answer() == Answer::replayed ? 200 : 201),
              "an accepted command not answered 201 (200 replayed)", describe(response));
      rapidjson::Document body;
      body.Parse(response.body().c_str(), response.body().size());
      require(!body.HasParseError() && body.IsObject() && body.HasMember("command_id") &&
                  body.HasMember("position") && body.HasMember("versions"),
              "an accepted command's answer without command_id, position and versions", describe(response));
      return;
    }
    case Answer::rejected:
      require(status == documented_status(fake.code()) && code == domain::to_string(fake.code()),
              "a rejection not answered with its code and status", describe(response));
      return;
    case Answer::unavailable:
      require(status == 503 && code == "database_unavailable", "EngineUnavailable not answered 503 database_unavailable",
              describe(response));
      return;
    case Answer::outcome_unknown:
      require(status == 503 && code == "outcome_unknown", "OutcomeUnknown not answered 503 outcome_unknown",
              describe(response));
      return;
    case Answer::overloaded:
      require(status == 503 && code == "overloaded", "EngineOverloaded not answered 503 overloaded", describe(response));
      return;
    case Answer::shutting_down:
      require(status == 503 && code == "shutting_down", "a stopping engine not answered 503 shutting_down",
              describe(response));
      return;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);  // the router logs every 5xx; the checks say what matters
  fixture();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  Fixture& f = fixture();
  const std::uint8_t flags = data[0];
  const bool small = (flags & input::small_limits) != 0;
  const api::ServerSettings& settings = small ? f.small : f.standard;
  api::Router& router = small ? *f.small_router : *f.standard_router;
  f.engine.start(input::engine_start(flags));
  ByteStream stream(std::string_view(reinterpret_cast<const char*>(data + 1), size - 1),
                    input::read_step(flags, size - 1));

  // As a session: one read buffer for the connection, a fresh parser per request.
  boost::beast::flat_buffer buffer(settings.header_bytes_max + api::read_buffer_slack_bytes);
  api::ChunkExtensionLimit chunk_extensions;
  for (int n = 0; n < requests_per_input_max; ++n) {
    api::RequestParser parser;
    api::prepare_parser(parser, settings, chunk_extensions);
    boost::system::error_code error;
    http::read_header(stream, buffer, parser, error);
    auto verdict = api::classify_read_error(error, api::ReadPhase::header, settings, buffer.max_size(),
                                            parser.got_some() || buffer.size() > 0);
    if (!verdict.ok()) {
      if (verdict.refusal) {
        const auto& r = *verdict.refusal;
        check_common(router.problem_response(r.status, r.code, r.title, r.detail, "fuzz-refusal", 11));
      }
      break;
    }
    http::read(stream, buffer, parser, error);
    verdict = api::classify_read_error(error, api::ReadPhase::body, settings, buffer.max_size(), true);
    if (!verdict.ok()) {
      if (verdict.refusal) {
        const auto& r = *verdict.refusal;
        check_common(router.problem_response(r.status, r.code, r.title, r.detail, "fuzz-refusal", 11));
      }
      break;
    }
    api::Request request = parser.release();
    const bool keep_alive = request.keep_alive();
    const api::Request copy = request;  // the router takes its own
    f.engine.begin_request();
    const api::Response response = route(router, std::move(request));
    if (trace) {
      std::fprintf(stderr, "%s %s -> %d, engine called %d time(s), answer %d\n",
                   std::string(copy.method_string()).c_str(), std::string(copy.target()).c_str(),
                   response.result_int(), f.engine.calls(), static_cast<int>(f.engine.answer()));
    }
    check_routed(copy, response, f.engine);
    if (!keep_alive) break;
  }
  return 0;
}
