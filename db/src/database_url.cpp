#include "ledger/db/database_url.hpp"

#include <libpq-fe.h>

#include <memory>
#include <stdexcept>

namespace ledger::db {
namespace {

using Options = std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)>;

Options parse(const std::string& url, std::string& error) {
  char* message = nullptr;
  Options options(PQconninfoParse(url.c_str(), &message), &PQconninfoFree);
  if (message != nullptr) {
    error = message;
    while (!error.empty() && (error.back() == '\n' || error.back() == ' ')) error.pop_back();
    PQfreemem(message);
  }
  return options;
}

void append_value(std::string& out, const std::string& keyword, const std::string& value) {
  out += keyword;
  out += "='";
  for (char c : value) {
    if (c == '\'' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out += "' ";
}

}  // namespace

std::optional<std::string> validate_database_url(const std::string& url) {
  if (url.empty()) return "is empty";
  std::string error;
  Options options = parse(url, error);
  if (!options) return error.empty() ? std::string("cannot be parsed") : error;
  return std::nullopt;
}

std::string connection_string(const std::string& url, std::chrono::milliseconds connect_timeout,
                              std::chrono::milliseconds statement_timeout) {
  std::string error;
  Options options = parse(url, error);
  if (!options) throw std::invalid_argument("invalid database URL: " + error);
  std::string result;
  bool has_connect_timeout = false;
  std::string extra_options;
  for (PQconninfoOption* option = options.get(); option->keyword != nullptr; ++option) {
    if (option->val == nullptr) continue;
    const std::string keyword = option->keyword;
    if (keyword == "connect_timeout") has_connect_timeout = true;
    if (keyword == "options") {
      extra_options = option->val;
      continue;
    }
    append_value(result, keyword, option->val);
  }
  if (!has_connect_timeout) {
    const auto seconds = std::max<long>(1, static_cast<long>((connect_timeout.count() + 999) / 1000));
    append_value(result, "connect_timeout", std::to_string(seconds));
  }
  // synchronous_commit is forced on: a 2xx means the commit is on disk (DESIGN.md invariant 9).
  // JIT is off: compiling a short OLTP query costs far more (100+ ms) than running it.
  std::string server_options = "-c statement_timeout=" + std::to_string(statement_timeout.count()) +
                               " -c synchronous_commit=on -c jit=off";
  if (!extra_options.empty()) server_options += " " + extra_options;
  append_value(result, "options", server_options);
  return result;
}

std::string redact_database_url(const std::string& url) {
  const auto scheme = url.find("://");
  if (scheme == std::string::npos) return url;
  const auto at = url.find('@', scheme + 3);
  if (at == std::string::npos) return url;
  const auto colon = url.find(':', scheme + 3);
  if (colon == std::string::npos || colon > at) return url;
  return url.substr(0, colon + 1) + "***" + url.substr(at);
}

}  // namespace ledger::db
