#pragma once
// An account's balances at a past moment, folded from its stream in the store (`ledger replay
// balance`, `GET /v1/accounts/{id}/balance?as_of=`).

#include <cstdint>
#include <optional>
#include <string>

#include "ledger/core/strong_type.hpp"
#include "ledger/domain/state.hpp"
#include "ledger/engine/event_store.hpp"

namespace ledger::engine {

struct BalanceAsOf {
  domain::AccountState state;   // state.exists false: the account did not exist yet
  GlobalPosition position{0};   // the last event folded
  std::int64_t recorded_at_us = 0;
};

// The account's fold over the events recorded at or before `time_us` / at or below `position`
// (exactly one of them; std::invalid_argument otherwise). std::nullopt when the account has
// never existed.
[[nodiscard]] std::optional<BalanceAsOf> balance_as_of(const EventStore& store, const std::string& account_id,
                                                       std::optional<std::int64_t> time_us,
                                                       std::optional<GlobalPosition> position);

}  // namespace ledger::engine
