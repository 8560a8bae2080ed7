#pragma once
// Splits a decided batch on the streams another writer moved (private to the engine): the
// commands decided on a stale stream, and every later command of the batch that built on one
// of them, go back to be decided again; the rest are appended. Pure: the appender feeds it the
// versions it read under the head lock, and the unit tests feed it by hand.

#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "batch_decider.hpp"

namespace ledger::engine {

// The stored version of each stream a batch writes or read unwritten (0: no such stream),
// read while the head row is held, so nothing can change it before the commit.
using StoredVersions = std::unordered_map<std::string, std::int64_t>;

// A system account's stream that existed when the batch was decided. Its decisions never read
// its balance (no guard applies to system accounts), so its rows need no expected version:
// they take the next versions inside the appending transaction and never conflict.
[[nodiscard]] bool is_floating_stream(const std::string& stream_id, std::int64_t first_version);
// Whether `stream_id` is a system account's (account-system.*).
[[nodiscard]] bool is_system_account_stream(const std::string& stream_id);

// Every stream of the batch the store must be asked about: written and read-but-unwritten.
[[nodiscard]] std::vector<std::string> streams_to_check(const Decided& decided);

struct SplitOutcome {
  // The commands to decide again, in batch order, moved out of the batch.
  std::vector<Pending> losers;
  // Streams whose state the engine holds as decided is not what the store will hold: written
  // by a loser, found stale, or renumbered. The state cache must drop them.
  std::vector<std::string> unreliable_streams;
  // The losers' streams: a batch decided meanwhile on the cache may have built on what a loser
  // decided there, which no version check can tell (on a system account's stream, only its
  // state is wrong: it is dropped, not the commands).
  std::vector<std::string> loser_streams;
};

// Removes the losers from `batch` and `decided` (slots, rows, expiries re-indexed) and
// renumbers the remaining rows of floating streams from `stored`. A floating stream the store
// does not hold is stale like any other; a command naming one of `tainted` (an earlier batch's
// loser streams) loses too. The unwritten reads are checked here: `decided` ends without any.
[[nodiscard]] SplitOutcome split_stale(std::vector<Pending>& batch, Decided& decided,
                                       const StoredVersions& stored,
                                       const std::unordered_set<std::string>& tainted = {});

}  // namespace ledger::engine
