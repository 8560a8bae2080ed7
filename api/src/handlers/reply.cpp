// What every handler answers with: problem+json and JSON responses.
#include <rapidjson/stringbuffer.h>

#include "../json_text.hpp"
#include "handlers.hpp"

namespace ledger::api::handlers {

namespace http = boost::beast::http;

Response problem_response(int status, const std::string& code, const std::string& title, const std::string& detail,
                          const std::string& request_id, unsigned version) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  write_member(w, "type", "/problems/" + code);
  write_member(w, "title", title);
  write_member(w, "status", status);
  write_member(w, "detail", detail);
  write_member(w, "code", code);
  write_member(w, "request_id", request_id);
  w.EndObject();
  Response response{static_cast<http::status>(status), version};
  response.set(http::field::content_type, "application/problem+json");
  response.set("X-Request-Id", request_id);
  response.body() = std::string(buffer.GetString(), buffer.GetSize());
  response.prepare_payload();
  return response;
}

void Reply::json(http::status status, std::string body) const {
  Response response{status, version};
  response.set(http::field::content_type, "application/json");
  response.body() = std::move(body);
  response.prepare_payload();
  finish(std::move(response));
}

}  // namespace ledger::api::handlers
