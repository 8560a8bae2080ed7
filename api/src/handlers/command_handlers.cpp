// The command routes: parse the body, submit to the engine, answer from its outcome.
#include <rapidjson/stringbuffer.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "../json_text.hpp"
#include "../router.hpp"
#include "handlers.hpp"
#include "ledger/core/logging.hpp"
#include "ledger/domain/loan_schedule.hpp"
#include "ledger/engine/engine.hpp"

namespace ledger::api::handlers {

namespace http = boost::beast::http;

namespace {

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

std::string command_type_name(const domain::CommandBody& body) {
  if (const auto* single = std::get_if<domain::SingleCommand>(&body)) {
    return std::string(domain::command_name(*single));
  }
  return "batch";
}

// The member of the answer that names what the command created or changed.
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

// The engine could not say what became of the command (its exception, rethrown here).
void answer_failure(const Context& context, const std::string& type, std::exception_ptr error, const Reply& reply) {
  bool outcome_unknown = false;
  try {
    std::rethrow_exception(error);
  } catch (const engine::OutcomeUnknown& exception) {
    outcome_unknown = true;
    logging::RequestIdScope scope(reply.request_id);
    spdlog::error("command outcome unknown: {}", exception.what());
  } catch (const std::exception& exception) {
    logging::RequestIdScope scope(reply.request_id);
    spdlog::error("command failed: {}", exception.what());
  }
  context.metrics.count_command(type, outcome_unknown ? "outcome_unknown" : "unavailable");
  // An unknown outcome is never reported as "nothing was written": a client that retried
  // without its Idempotency-Key could then apply the command twice.
  Response response =
      outcome_unknown
          ? problem_response(503, "outcome_unknown", "Outcome unknown",
                             "the connection to the event store was lost while the command committed, and "
                             "whether it committed could not be established; retry with the same "
                             "Idempotency-Key to learn the outcome",
                             reply.request_id, reply.version)
          : problem_response(503, "database_unavailable", "Service unavailable",
                             "the event store is unavailable; nothing was written", reply.request_id, reply.version);
  response.set(http::field::retry_after, "1");
  reply.send(std::move(response));
}

// API.md: command_id, position, versions, the resource (or a batch's ids), replayed.
std::string accepted_json(const domain::CommandOutcome& outcome, const std::string& kind) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  write_member(w, "command_id", outcome.command_id);
  write_member(w, "position", outcome.position.value());
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
    write_member(w, "id", outcome.resource_ids.empty() ? "" : outcome.resource_ids.front());
    w.EndObject();
  }
  w.Key("replayed");
  w.Bool(outcome.replayed);
  w.EndObject();
  return {buffer.GetString(), buffer.GetSize()};
}

void answer_outcome(const Context& context, const std::string& type, const std::string& kind,
                    const domain::CommandOutcome& outcome, const Reply& reply) {
  context.metrics.count_command(type, outcome.accepted() ? "accepted" : domain::to_string(outcome.code));
  if (!outcome.accepted()) {
    reply.problem(status_of(outcome.code), std::string(domain::to_string(outcome.code)), title_of(outcome.code),
                  outcome.detail);
    return;
  }
  reply.json(outcome.replayed ? http::status::ok : http::status::created, accepted_json(outcome, kind));
}

// The engine command the request describes, with its context, or the problem that refuses it.
std::variant<domain::Command, Problem> build_command(const CommandRequest& command, const Reply& reply) {
  const Request& request = command.request;
  const std::string idempotency_key(request["Idempotency-Key"]);  // checked with the other copied headers
  auto parsed = parse_command(command.route, command.path_id, request.body(),
                              domain::to_string(domain::Date{std::chrono::floor<std::chrono::days>(
                                  std::chrono::system_clock::now())}));
  if (auto* problem = std::get_if<Problem>(&parsed)) return std::move(*problem);
  domain::Command built{std::move(std::get<domain::CommandBody>(parsed)), {}};
  built.context.actor = command.principal.subject;
  built.context.request_id = reply.request_id;
  built.context.correlation_id = std::string(request["X-Correlation-Id"]);
  built.context.client_address = command.client_address;
  built.context.idempotency_key = idempotency_key;
  if (!idempotency_key.empty()) {
    built.context.request_fingerprint =
        std::string(request.method_string()) + " " + std::string(request.target()) + "\n" + request.body();
  }
  return built;
}

}  // namespace

void answer_command(const Context& context, const CommandRequest& command, const Reply& reply) {
  if (context.commands == nullptr) {
    reply.problem(503, "unavailable", "Service unavailable", "this server has no engine configured");
    return;
  }
  if (!command.request.body().empty()) {
    const std::string content_type(command.request[http::field::content_type]);
    if (content_type.rfind("application/json", 0) != 0) {
      reply.problem(415, "unsupported_media_type", "Unsupported media type", "send the body as application/json");
      return;
    }
  }
  auto built = build_command(command, reply);
  if (const auto* problem = std::get_if<Problem>(&built)) {
    reply.problem(problem->status, problem->code, problem->title, problem->detail);
    return;
  }
  auto& engine_command = std::get<domain::Command>(built);
  const std::string type = command_type_name(engine_command.body);
  const std::string kind = resource_kind(command.route);
  try {
    context.commands->submit(std::move(engine_command), [context, type, kind, reply](std::exception_ptr error,
                                                                                      domain::CommandOutcome outcome) {
      if (error) {
        answer_failure(context, type, error, reply);
      } else {
        answer_outcome(context, type, kind, outcome, reply);
      }
    });
  } catch (const engine::EngineOverloaded& error) {
    Response response = problem_response(503, "overloaded", "Service unavailable", error.what(), reply.request_id,
                                         reply.version);
    response.set(http::field::retry_after, "1");
    reply.send(std::move(response));
  } catch (const engine::DatabaseCircuitOpen& error) {
    context.metrics.count_command(type, "unavailable");
    Response response = problem_response(503, "database_unavailable", "Service unavailable", error.what(),
                                         reply.request_id, reply.version);
    response.set(http::field::retry_after,
                 std::to_string(std::max<std::int64_t>(1, (error.retry_after.count() + 999) / 1'000)));
    reply.send(std::move(response));
  } catch (const engine::EngineUnavailable& error) {
    reply.problem(503, "shutting_down", "Service unavailable", error.what());
  }
}

}  // namespace ledger::api::handlers
