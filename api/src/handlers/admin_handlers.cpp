// Admin routes: close of business over every loan.
#include <boost/asio/post.hpp>
#include <rapidjson/document.h>
#include <spdlog/spdlog.h>

#include "handlers.hpp"
#include "ledger/api/json_views.hpp"
#include "ledger/core/logging.hpp"
#include "ledger/domain/loan_schedule.hpp"
#include "ledger/engine/close_of_business.hpp"

namespace ledger::api::handlers {

namespace http = boost::beast::http;

namespace {

// The body must be exactly {"date": "YYYY-MM-DD"} with a business date.
std::optional<domain::Date> parse_close_of_business(const std::string& body) {
  rapidjson::Document document;
  document.Parse(body.c_str());
  if (document.HasParseError() || !document.IsObject() || document.MemberCount() != 1 ||
      !document.HasMember("date") || !document["date"].IsString()) {
    return std::nullopt;
  }
  return domain::parse_business_date(document["date"].GetString());
}

}  // namespace

void answer_close_of_business(const Context& context, const Request& request, const Reply& reply) {
  const auto date = parse_close_of_business(request.body());
  if (!date) {
    reply.problem(400, "invalid_date", "Invalid date",
                  "the body must be {\"date\": \"YYYY-MM-DD\"}, a date from 1970-01-01 to 2199-12-31");
    return;
  }
  if (context.services.engine == nullptr || context.services.event_store == nullptr) {
    reply.problem(503, "unavailable", "Service unavailable", "this server has no engine configured");
    return;
  }
  // Runs to the end on the blocking pool; a client that gives up can run it again (idempotent).
  boost::asio::post(context.blocking, [context, date = *date, reply] {
    engine::CloseOfBusinessResult result;
    try {
      result = engine::close_of_business(*context.services.engine, *context.services.event_store, date);
    } catch (const std::exception& error) {
      logging::RequestIdScope scope(reply.request_id);
      spdlog::error("close of business failed: {}", error.what());
      reply.problem(503, "database_unavailable", "Service unavailable",
                    "close of business stopped; run it again to finish (it is idempotent)");
      return;
    }
    reply.json(http::status::ok, close_of_business_json(date, result));
  });
}

}  // namespace ledger::api::handlers
