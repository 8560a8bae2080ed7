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

void Reply::json(http::status status, std::string body) const {
  Response response{status, version};
  response.set(http::field::content_type, "application/json");
  response.body() = std::move(body);
  response.prepare_payload();
  finish(std::move(response));
}

}  // namespace ledger::api::handlers
