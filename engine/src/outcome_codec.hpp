#pragma once
// JSON form of a CommandOutcome, as stored with its idempotency key.

#include <optional>
#include <string>

#include "ledger/engine/commands.hpp"

namespace ledger::engine {

[[nodiscard]] std::string outcome_to_json(const CommandOutcome& outcome);
[[nodiscard]] std::optional<CommandOutcome> outcome_from_json(const std::string& json);
[[nodiscard]] std::optional<RejectionCode> rejection_code_from_string(std::string_view name);

}  // namespace ledger::engine
