#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace ledger::db {

// Returns a description of the problem, or std::nullopt when libpq accepts the URL
// (postgresql:// URI or key=value conninfo).
[[nodiscard]] std::optional<std::string> validate_database_url(const std::string& url);

// The connection string libpq gets: the URL's own settings (sslmode and friends pass
// through) plus a connect timeout, a server-side statement timeout, TCP keepalives on both
// ends (a half-open connection is noticed in about 25 s, not the kernel's 2 hours) and, when
// not zero, an idle-in-transaction timeout (a session whose client vanished mid-transaction
// releases its locks).
[[nodiscard]] std::string connection_string(
    const std::string& url, std::chrono::milliseconds connect_timeout,
    std::chrono::milliseconds statement_timeout,
    std::chrono::milliseconds idle_in_transaction_timeout = std::chrono::milliseconds(0));

// The URL without its password, for logs and error messages: rebuilt from libpq's parse of it
// (a URI stays a URI, key=value text stays key=value), with every password, however it was
// given, as ***. Text libpq cannot parse is not echoed at all. Never put the raw URL in an
// error or a log line; parse errors from validate_database_url and connection_string quote
// none of the text either.
[[nodiscard]] std::string redact_database_url(const std::string& url);

}  // namespace ledger::db
