#include "ledger/db/database_url.hpp"

#include <libpq-fe.h>

#include <cctype>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>
#include <stdexcept>

namespace ledger::db {
namespace {

using Options = std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)>;

// libpq's complaints quote the text they stumbled on (`missing "=" after "secret" in connection
// info string`), which may be a piece of a password: every quoted fragment but the "=" it asks
// for is replaced, the wording kept.
std::string without_quoted_text(const std::string& message) {
  std::string out;
  std::size_t at = 0;
  while (at < message.size()) {
    const auto open = message.find('"', at);
    const auto close = open == std::string::npos ? std::string::npos : message.find('"', open + 1);
    if (close == std::string::npos) {
      out.append(message, at, std::string::npos);
      break;
    }
    out.append(message, at, open - at);
    const std::string_view quoted(message.data() + open + 1, close - open - 1);
    out += quoted == "=" ? "\"=\"" : "\"***\"";
    at = close + 1;
  }
  return out;
}

Options parse(const std::string& url, std::string& error) {
  char* message = nullptr;
  Options options(PQconninfoParse(url.c_str(), &message), &PQconninfoFree);
  if (message != nullptr) {
    error = without_quoted_text(message);
    while (!error.empty() && (error.back() == '\n' || error.back() == ' ')) error.pop_back();
    PQfreemem(message);
  }
  return options;
}

bool is_uri(const std::string& url) {
  return url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0;
}

// Percent-encodes all but RFC 3986's unreserved characters.
std::string percent_encode(std::string_view text) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (std::isalnum(byte) != 0 || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(hex[byte >> 4]);
      out.push_back(hex[byte & 15]);
    }
  }
  return out;
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

// TCP keepalives: idle seconds before the first probe, seconds between probes, probes lost
// before the connection counts as dead.
constexpr int keepalive_idle_seconds = 10;
constexpr int keepalive_interval_seconds = 5;
constexpr int keepalive_probes = 3;

std::string connection_string(const std::string& url, std::chrono::milliseconds connect_timeout,
                              std::chrono::milliseconds statement_timeout,
                              std::chrono::milliseconds idle_in_transaction_timeout) {
  std::string error;
  Options options = parse(url, error);
  if (!options) throw std::invalid_argument("invalid database URL: " + error);
  std::string result;
  bool has_connect_timeout = false;
  bool has_keepalives = false;
  std::string extra_options;
  for (PQconninfoOption* option = options.get(); option->keyword != nullptr; ++option) {
    if (option->val == nullptr) continue;
    const std::string keyword = option->keyword;
    if (keyword == "connect_timeout") has_connect_timeout = true;
    if (keyword.starts_with("keepalives")) has_keepalives = true;
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
  if (!has_keepalives) {
    append_value(result, "keepalives", "1");
    append_value(result, "keepalives_idle", std::to_string(keepalive_idle_seconds));
    append_value(result, "keepalives_interval", std::to_string(keepalive_interval_seconds));
    append_value(result, "keepalives_count", std::to_string(keepalive_probes));
  }
  // synchronous_commit is forced on: a 2xx means the commit is on disk (DESIGN.md invariant 9).
  // JIT is off: compiling a short OLTP query costs far more (100+ ms) than running it.
  std::string server_options = "-c statement_timeout=" + std::to_string(statement_timeout.count()) +
                               " -c synchronous_commit=on -c jit=off" +
                               " -c tcp_keepalives_idle=" + std::to_string(keepalive_idle_seconds) +
                               " -c tcp_keepalives_interval=" + std::to_string(keepalive_interval_seconds) +
                               " -c tcp_keepalives_count=" + std::to_string(keepalive_probes);
  if (idle_in_transaction_timeout.count() > 0) {
    server_options += " -c idle_in_transaction_session_timeout=" +
                      std::to_string(idle_in_transaction_timeout.count());
  }
  if (!extra_options.empty()) server_options += " " + extra_options;
  append_value(result, "options", server_options);
  return result;
}

std::string redact_database_url(const std::string& url) {
  // Rebuilt from libpq's own parse, so a password is found wherever libpq would find it
  // (user:password@, ?password=, password=, quoted or not); text it cannot parse is not shown.
  std::string error;
  Options options = parse(url, error);
  if (!options) return "(a database URL libpq cannot parse)";
  std::vector<std::pair<std::string, std::string>> set;
  for (PQconninfoOption* option = options.get(); option->keyword != nullptr; ++option) {
    if (option->val == nullptr) continue;
    const std::string keyword = option->keyword;
    set.emplace_back(keyword, keyword == "password" ? "***" : option->val);
  }
  if (!is_uri(url)) {
    std::string out;
    for (const auto& [keyword, value] : set) append_value(out, keyword, value);
    if (!out.empty()) out.pop_back();
    return out;
  }
  std::string user, host, port, dbname;
  bool has_password = false;
  std::vector<std::pair<std::string, std::string>> query;
  for (const auto& [keyword, value] : set) {
    if (keyword == "user") {
      user = value;
    } else if (keyword == "password") {
      has_password = true;
    } else if (keyword == "dbname") {
      dbname = value;
    } else if (keyword == "host" && value.find(',') == std::string::npos && !value.starts_with('/')) {
      host = value.find(':') == std::string::npos ? value : "[" + value + "]";  // IPv6
    } else if (keyword == "port" && value.find(',') == std::string::npos) {
      port = value;
    } else {
      query.emplace_back(keyword, value);  // several hosts, a socket directory, sslmode, ...
    }
  }
  if (host.empty() && !port.empty()) {
    query.emplace_back("port", port);
    port.clear();
  }
  std::string out = "postgresql://";
  if (!user.empty()) out += percent_encode(user);
  if (has_password) out += ":***";
  if (!user.empty() || has_password) out += "@";
  out += host;
  if (!port.empty()) out += ":" + port;
  if (!dbname.empty()) out += "/" + percent_encode(dbname);
  for (std::size_t i = 0; i < query.size(); ++i) {
    out += i == 0 ? (dbname.empty() ? "/?" : "?") : "&";
    out += query[i].first + "=" + percent_encode(query[i].second);
  }
  return out;
}

}  // namespace ledger::db
