#include "ledger/engine/balance_as_of.hpp"

#include <stdexcept>

#include "ledger/domain/events.hpp"
#include "ledger/domain/types.hpp"

namespace ledger::engine {

// The engine applies the domain's rules: its types are used unqualified here.
using namespace domain;  // NOLINT(google-build-using-namespace)

std::optional<BalanceAsOf> balance_as_of(const EventStore& store, const std::string& account_id,
                                         std::optional<std::int64_t> time_us,
                                         std::optional<GlobalPosition> position) {
  if (time_us.has_value() == position.has_value()) {
    throw std::invalid_argument("give exactly one of an instant and a position");
  }
  constexpr std::size_t batch_events = 5'000;
  const std::string stream = domain::account_stream(account_id);
  BalanceAsOf result;
  bool any = false;
  std::int64_t version = 1;
  while (true) {
    const auto batch = store.read_stream(stream, StreamVersion(version), batch_events);
    if (batch.empty()) break;
    any = true;
    for (const auto& event : batch) {
      // The fold stops at the first event after the moment, so the answer is always a state
      // the account really had (recorded times follow positions up to clock skew between
      // engine instances).
      const bool after = time_us ? event.recorded_at_us > *time_us : event.position > *position;
      if (after) return result;
      const auto decoded = domain::decode_event(event.type, event.payload);
      if (!decoded) {
        throw std::runtime_error("position " + std::to_string(event.position.value()) + ": the " + event.type +
                                 " payload does not decode (run `ledger replay verify`)");
      }
      domain::apply(result.state, *decoded);
      result.position = event.position;
      result.recorded_at_us = event.recorded_at_us;
    }
    version = batch.back().version.value() + 1;
  }
  if (!any) return std::nullopt;
  return result;
}

}  // namespace ledger::engine
