#include "stream_cursor.hpp"

#include <pqxx/pqxx>

#include <algorithm>

namespace ledger::projections {

std::int64_t stream_version_at(pqxx::transaction_base& work, const std::string& stream_id,
                               std::int64_t position) {
  if (position <= 0) return 0;
  // A cursor from the page before is one of the stream's events: one primary-key probe.
  const auto at = work.exec_params(
      "SELECT version FROM events WHERE position = $1 AND stream_id = $2", position, stream_id);
  if (!at.empty()) return at[0][0].as<std::int64_t>();
  // A position at or after the stream's last event (the audit model's highest row, when the
  // stream's last event was applied): one more probe.
  const auto last = work.exec_params(
      "SELECT version, position FROM events WHERE stream_id = $1 ORDER BY version DESC LIMIT 1",
      stream_id);
  if (last.empty()) return 0;
  if (last[0][1].as<std::int64_t>() < position) return last[0][0].as<std::int64_t>();
  // Else a search over the stream's versions, one index probe a step. Invariant: `low` is 0 or
  // a version recorded at or before `position`; every version above `high` was recorded after
  // it. Each step reads the first version at or after the probed one, so a version gap (a store
  // written before migration 0006) does not end the search low. The answer must be exact both
  // ways: the audit query starts its walk above it for a cursor (too high loses rows) and stops
  // there for the model's highest row (too low loses rows); tests/projections pins it.
  std::int64_t low = 0;
  std::int64_t high = last[0][0].as<std::int64_t>() - 1;
  // Is some version in [from, high] recorded at or before `position`? Narrows the range either way.
  auto narrow = [&](std::int64_t from) {
    const auto next = work.exec_params(
        "SELECT version, position FROM events WHERE stream_id = $1 AND version >= $2 ORDER BY "
        "version LIMIT 1",
        stream_id, from);
    if (!next.empty() && next[0][0].as<std::int64_t>() <= high &&
        next[0][1].as<std::int64_t>() <= position) {
      low = next[0][0].as<std::int64_t>();
      return true;
    }
    high = from - 1;  // no version in [from, high], or the first of them is after position
    return false;
  };
  // First down from the end in doubling steps: a position a few events before the stream's end
  // (the model's highest row while the projectors trail a hot stream) costs a few probes, not
  // one per halving of the whole stream (about 20 for a million versions).
  for (std::int64_t step = 1; low < high; step = step <= high / 2 ? step * 2 : step) {
    if (narrow(std::max(low + 1, high - step + 1))) break;
  }
  // Then halving what is left.
  while (low < high) {
    const std::int64_t span = high - low;  // >= 1; the middle rounds up, so `low` moves
    narrow(low + span / 2 + span % 2);
  }
  return low;
}

}  // namespace ledger::projections
