#include "append_checks.hpp"

#include <map>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <variant>

#include "ledger/domain/events.hpp"

namespace ledger::engine {

std::string check_batch_balanced(const std::vector<domain::RecordedEvent>& rows) {
  namespace events = domain::events;
  using Side = std::tuple<std::string, events::Phase>;  // transfer, phase
  struct Sums {
    std::int64_t debits = 0;
    std::int64_t credits = 0;
  };
  std::map<Side, Sums> sums;
  const std::string_view entry_type = domain::event_type(domain::DomainEvent{events::AccountEntry{}});
  for (const auto& row : rows) {
    if (row.type != entry_type) continue;
    const auto event = domain::decode_event(row.type, row.payload);
    if (!event) return "an " + row.type + " row of stream " + row.stream_id + " does not decode";
    const auto& entry = std::get<events::AccountEntry>(*event);
    auto& sum = sums[{entry.transfer_id, entry.phase}];
    std::int64_t& side = entry.direction == events::Direction::debit ? sum.debits : sum.credits;
    if (__builtin_add_overflow(side, entry.amount, &side)) {
      return "the entries of transfer " + entry.transfer_id + " overflow their sum";
    }
  }
  for (const auto& [side, sum] : sums) {
    if (sum.debits != sum.credits) {
      return "the entries of transfer " + std::get<0>(side) + " (phase " +
             std::string(domain::to_string(std::get<1>(side))) + ") debit " +
             (sum.debits > sum.credits ? "more" : "less") + " than they credit";
    }
  }
  return {};
}

std::string check_streams_continue(const std::vector<domain::RecordedEvent>& rows) {
  std::unordered_map<std::string_view, std::int64_t> last_version;
  last_version.reserve(rows.size());
  for (const auto& row : rows) {
    const auto [previous, first] = last_version.try_emplace(row.stream_id, row.version.value());
    if (first) continue;
    if (row.version.value() != previous->second + 1) {
      return "stream " + row.stream_id + " goes from version " + std::to_string(previous->second) +
             " to " + std::to_string(row.version.value()) + " within the batch";
    }
    previous->second = row.version.value();
  }
  return {};
}

std::string check_positions_dense(const std::vector<domain::RecordedEvent>& rows,
                                  std::int64_t head_before) {
  std::int64_t expected = head_before + 1;
  for (const auto& row : rows) {
    if (row.position.value() != expected) {
      return "row of stream " + row.stream_id + " is at position " +
             std::to_string(row.position.value()) + ", expected " + std::to_string(expected);
    }
    ++expected;
  }
  return {};
}

}  // namespace ledger::engine
