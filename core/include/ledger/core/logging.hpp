#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

namespace ledger::logging {

enum class Format { text, json };

// Parses "trace|debug|info|warn|error|critical|off"; std::nullopt for anything else.
[[nodiscard]] std::optional<spdlog::level::level_enum> parse_level(std::string_view name);
// Parses "text|json"; std::nullopt for anything else.
[[nodiscard]] std::optional<Format> parse_format(std::string_view name);

// Installs the default logger on stderr: human text, or one JSON object per line with the
// fields time, level, logger, request_id (when set) and message. Call once at start-up.
void configure(Format format, spdlog::level::level_enum level, std::string_view process_name);

// The request id of the work the current thread is doing; every log line carries it.
[[nodiscard]] const std::string& current_request_id();

// Sets the current thread's request id for its lifetime and restores the previous one after.
class RequestIdScope {
 public:
  explicit RequestIdScope(std::string request_id);
  ~RequestIdScope();
  RequestIdScope(const RequestIdScope&) = delete;
  RequestIdScope& operator=(const RequestIdScope&) = delete;

 private:
  std::string previous_;
};

}  // namespace ledger::logging
