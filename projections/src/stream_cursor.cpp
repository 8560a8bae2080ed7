#include "stream_cursor.hpp"

#include <pqxx/pqxx>

namespace ledger::projections {

std::int64_t stream_version_at(pqxx::transaction_base& work, const std::string& stream_id,
                               std::int64_t position) {
  if (position <= 0) return 0;
  // A cursor from the page before is one of the stream's events: one primary-key probe.
  const auto at = work.exec_params(
      "SELECT version FROM events WHERE position = $1 AND stream_id = $2", position, stream_id);
  if (!at.empty()) return at[0][0].as<std::int64_t>();
  // Any other position: a binary search over the stream's versions, one index probe a step
  // (about 20 for a million versions). Invariant: `low` is 0 or a version recorded at or
  // before `position`; every version above `high` was recorded after it. Each step reads the
  // first version at or after the middle, so a version gap (a store written before migration
  // 0006) does not end the search low. A result too low costs time (the audit query also
  // filters by position), too high loses rows: tests/projections pins the exact answer.
  const auto last = work.exec_params(
      "SELECT version, position FROM events WHERE stream_id = $1 ORDER BY version DESC LIMIT 1",
      stream_id);
  if (last.empty()) return 0;
  // A position at or after the stream's last event (the audit model's highest row, when the
  // stream's last event was applied): one probe.
  if (last[0][1].as<std::int64_t>() <= position) return last[0][0].as<std::int64_t>();
  std::int64_t low = 0;
  std::int64_t high = last[0][0].as<std::int64_t>() - 1;
  while (low < high) {
    const std::int64_t span = high - low;  // >= 1; the middle rounds up, so `low` moves
    const std::int64_t middle = low + span / 2 + span % 2;
    const auto next = work.exec_params(
        "SELECT version, position FROM events WHERE stream_id = $1 AND version >= $2 ORDER BY "
        "version LIMIT 1",
        stream_id, middle);
    if (!next.empty() && next[0][0].as<std::int64_t>() <= high &&
        next[0][1].as<std::int64_t>() <= position) {
      low = next[0][0].as<std::int64_t>();
    } else {
      high = middle - 1;  // no version in [middle, high], or the first of them is after position
    }
  }
  return low;
}

}  // namespace ledger::projections
