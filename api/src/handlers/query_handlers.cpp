// The read-model query routes: queries.cpp checks, waits and reads; this answers over HTTP.
#include "handlers.hpp"

namespace ledger::api::handlers {

namespace http = boost::beast::http;

void answer_query(const Context& context, QueryKind kind, std::string id, const QueryParameters& parameters,
                  const Reply& reply) {
  if (context.services.read_models == nullptr) {
    reply.problem(503, "unavailable", "Service unavailable", "this server has no read models configured");
    return;
  }
  // A streaming replica, when configured, answers every read-model query (Services::read_replica).
  const ReadReplica& replica = context.services.read_replica;
  const QuerySource source = replica.read_models != nullptr ? QuerySource{*replica.read_models, true}
                                                            : QuerySource{*context.services.read_models, false};
  run_query(source, context.blocking, kind, std::move(id), parameters,
            [reply](QueryAnswer answer) {
              Response response;
              if (answer.status == 200) {
                response = Response{http::status::ok, reply.version};
                response.set(http::field::content_type, "application/json");
                response.body() = std::move(answer.body);
                response.prepare_payload();
              } else {
                response = problem_response(answer.status, answer.code, answer.title, answer.detail,
                                            reply.request_id, reply.version);
              }
              if (answer.watermark) response.set("X-Ledger-Watermark", std::to_string(*answer.watermark));
              reply.send(std::move(response));
            });
}

}  // namespace ledger::api::handlers
