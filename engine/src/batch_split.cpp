#include "batch_split.hpp"

#include <algorithm>
#include <iterator>

#include "ledger/domain/types.hpp"

namespace ledger::engine {

namespace {

// "account-system.": the prefix of every system account's stream.
const std::string& system_stream_prefix() {
  static const std::string prefix = domain::account_stream(domain::system_id_prefix);
  return prefix;
}

// The version each stream had before the batch: its first row's, minus one.
std::unordered_map<std::string, std::int64_t> versions_before(const std::vector<RecordedEvent>& rows) {
  std::unordered_map<std::string, std::int64_t> before;
  for (const auto& row : rows) before.try_emplace(row.stream_id, row.version.value() - 1);
  return before;
}

std::int64_t stored_version(const StoredVersions& stored, const std::string& stream_id) {
  const auto found = stored.find(stream_id);
  return found == stored.end() ? 0 : found->second;
}

}  // namespace

bool is_system_account_stream(const std::string& stream_id) {
  return stream_id.starts_with(system_stream_prefix());
}

bool is_floating_stream(const std::string& stream_id, std::int64_t first_version) {
  return first_version > 1 && is_system_account_stream(stream_id);
}

std::vector<std::string> streams_to_check(const Decided& decided) {
  std::vector<std::string> streams;
  for (const auto& row : decided.rows) streams.push_back(row.stream_id);
  for (const auto& read : decided.unwritten_reads) streams.push_back(read.stream_id);
  std::sort(streams.begin(), streams.end());
  streams.erase(std::unique(streams.begin(), streams.end()), streams.end());
  return streams;
}

SplitOutcome split_stale(std::vector<Pending>& batch, Decided& decided, const StoredVersions& stored,
                         const std::unordered_set<std::string>& tainted_before) {
  const auto before = versions_before(decided.rows);
  std::unordered_set<std::string> floating;
  std::unordered_set<std::string> stale;  // as read: the store holds another version
  for (const auto& [stream_id, version] : before) {
    const std::int64_t in_store = stored_version(stored, stream_id);
    if (is_floating_stream(stream_id, version + 1) && in_store > 0) {
      floating.insert(stream_id);
    } else if (in_store != version) {
      stale.insert(stream_id);
    }
  }
  for (const auto& read : decided.unwritten_reads) {
    // A stream the batch writes is checked by its first row (a read merged from a later
    // decision holds the earlier rows' version); a system account's state decides nothing.
    if (before.contains(read.stream_id)) continue;
    if (read.stream_id.starts_with(system_stream_prefix()) && stored_version(stored, read.stream_id) > 0) continue;
    if (stored_version(stored, read.stream_id) != read.version) stale.insert(read.stream_id);
  }

  SplitOutcome outcome;
  outcome.unreliable_streams.assign(stale.begin(), stale.end());
  // Streams a command must not have relied on: stale, or written by a loser (of this batch or,
  // given, of an earlier one). An earlier loser's system account stream only makes this
  // batch's state of it unreliable (it is renumbered, never snapshotted from here).
  std::unordered_set<std::string> tainted;
  for (const auto& id : tainted_before) {
    if (floating.contains(id)) {
      outcome.unreliable_streams.push_back(id);
    } else {
      tainted.insert(id);
    }
  }
  tainted.insert(stale.begin(), stale.end());
  std::vector<bool> lost(batch.size(), false);
  std::vector<std::string> named;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const Slot& slot = decided.slots[i];
    if (slot.kind == Slot::Kind::follows) {
      lost[i] = lost[slot.follows];
      continue;
    }
    if (slot.kind != Slot::Kind::decide || tainted.empty()) continue;
    if (slot.first_event == slot.end_event) {
      // It wrote nothing, so no row says what it read: the streams the rules load on demand
      // (a hold's accounts, a loan's borrower) are not among those it names. It is decided
      // again whenever anything before it may have been read stale.
      lost[i] = true;
      continue;
    }
    named.clear();
    domain::collect_streams(batch[i].command.body, named);
    for (std::size_t e = slot.first_event; e < slot.end_event; ++e) named.push_back(decided.rows[e].stream_id);
    lost[i] = std::any_of(named.begin(), named.end(), [&](const std::string& id) { return tainted.contains(id); });
    if (!lost[i]) continue;
    for (std::size_t e = slot.first_event; e < slot.end_event; ++e) {
      const std::string& id = decided.rows[e].stream_id;
      if (!floating.contains(id)) tainted.insert(id);
      outcome.loser_streams.push_back(id);
      outcome.unreliable_streams.push_back(id);  // the cache holds the loser's effect on it
    }
  }

  // Keep the winners, re-indexed; move the losers out.
  std::vector<Pending> winners;
  std::vector<Slot> slots;
  std::vector<RecordedEvent> rows;
  std::vector<std::size_t> new_index(batch.size(), 0);
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (lost[i]) {
      outcome.losers.push_back(std::move(batch[i]));
      continue;
    }
    Slot slot = std::move(decided.slots[i]);
    const std::size_t first = rows.size();
    for (std::size_t e = slot.first_event; e < slot.end_event; ++e) rows.push_back(std::move(decided.rows[e]));
    slot.first_event = first;
    slot.end_event = rows.size();
    if (slot.kind == Slot::Kind::follows) slot.follows = new_index[slot.follows];
    new_index[i] = winners.size();
    winners.push_back(std::move(batch[i]));
    slots.push_back(std::move(slot));
  }
  std::erase_if(decided.expiries, [&](const ExpiryRecord& expiry) { return lost[expiry.command]; });
  for (auto& expiry : decided.expiries) expiry.command = new_index[expiry.command];

  // Floating streams continue from what the store holds.
  std::unordered_map<std::string, std::int64_t> next;
  for (auto& row : rows) {
    if (!floating.contains(row.stream_id)) continue;
    auto [it, inserted] = next.try_emplace(row.stream_id, stored_version(stored, row.stream_id));
    const std::int64_t version = ++it->second;
    if (row.version.value() != version) {
      outcome.unreliable_streams.push_back(row.stream_id);
      row.version = StreamVersion(version);
    }
  }

  batch = std::move(winners);
  decided.slots = std::move(slots);
  decided.rows = std::move(rows);
  decided.unwritten_reads.clear();
  for (auto* streams : {&outcome.unreliable_streams, &outcome.loser_streams}) {
    std::sort(streams->begin(), streams->end());
    streams->erase(std::unique(streams->begin(), streams->end()), streams->end());
  }
  return outcome;
}

}  // namespace ledger::engine
