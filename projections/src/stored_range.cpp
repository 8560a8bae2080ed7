#include "stored_range.hpp"

#include <algorithm>

#include "ledger/domain/envelope.hpp"
#include "ledger/projections/projection.hpp"

namespace ledger::projections {

StoredRange stored_range_of(std::int64_t low, std::int64_t high,
                            const std::vector<domain::RecordedEvent>& events,
                            std::int32_t partition_count) {
  const std::int64_t first = std::max<std::int64_t>(low, 1);
  StoredRange range;
  range.low = low;
  const auto size = static_cast<std::size_t>(high - low + 1);
  range.partition.assign(size, -1);
  range.hash.assign(size, std::string());
  if (low == 0) range.hash[0] = domain::genesis_hash();
  std::int64_t expected = first;
  for (const auto& event : events) {
    if (event.position.value() != expected) break;
    const auto index = static_cast<std::size_t>(expected - low);
    range.partition[index] = domain::partition_for_stream(event.stream_id, partition_count);
    range.hash[index] = event.hash;
    ++expected;
  }
  if (expected != high + 1) {
    const char* what = low > 0 && expected == low ? ", a partition watermark," : "";
    throw ProjectionError("position " + std::to_string(expected) + what +
                          " is missing from the event store");
  }
  return range;
}

void check_chain(const StoredRange& range, std::int64_t high,
                 const std::vector<domain::RecordedEvent>& events) {
  const std::int64_t first = std::max<std::int64_t>(range.low, 1);
  for (std::int64_t position = range.low + 1; position <= high; ++position) {
    const auto& event = events[static_cast<std::size_t>(position - first)];
    if (!domain::chains_from(range.hash_of(position - 1), event)) {
      throw ProjectionError("position " + std::to_string(position) +
                            " does not chain (read ahead)");
    }
  }
}

}  // namespace ledger::projections
