#pragma once
// JSON form of a CommandOutcome, as stored with its idempotency key.

#include <optional>
#include <string>

#include "ledger/domain/commands.hpp"

namespace ledger::engine {

// The engine applies the domain's rules: its types are used unqualified here.
using namespace domain;  // NOLINT(google-build-using-namespace)

[[nodiscard]] std::string outcome_to_json(const CommandOutcome& outcome);
[[nodiscard]] std::optional<domain::CommandOutcome> outcome_from_json(const std::string& json);
[[nodiscard]] std::optional<domain::RejectionCode> rejection_code_from_string(std::string_view name);

}  // namespace ledger::engine
