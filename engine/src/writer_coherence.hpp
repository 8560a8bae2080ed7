#pragma once
// Keeps one engine's state cache and appends coherent with the other writers of its store
// (several `serve` processes on one database; private to the engine).
//
// An append finds the head row where this engine's last append left it unless another writer
// committed in between. Then the events of those commits are read and folded into the cached
// states they continue (dropping the others, so later decisions read them fresh), and the
// batch is checked against the stored versions of the streams that may have moved since its
// decision started (what those events or an eviction named, or a loser tainted) while the head
// row is held: only the commands decided on a moved stream are decided again; system accounts' streams take the
// next stored versions. Alone on its store an engine pays for none of this.

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <unordered_set>
#include <vector>

#include "appender.hpp"
#include "batch_split.hpp"
#include "state_cache.hpp"

namespace ledger::engine {

// Where a decision starts: the eviction epoch it saw, and the streams whose eviction it could
// not apply because a decided batch still in flight wrote them (the cache holds that batch's
// states, which the next decision must build on, not the store's).
struct DecisionStart {
  std::uint64_t epoch = 0;
  std::vector<std::string> deferred;
};

class WriterCoherence {
 public:
  // The streams decided batches in flight (waiting for or in their commit) wrote.
  using HeldStreams = std::function<bool(const std::string& stream_id)>;

  // Writer thread, before deciding: drops what was found stale from `cache`, except the streams
  // `held` names (none when null: nothing is in flight). Those stay pending, and a command of
  // this decision that names one loses at the append (it may have built on a state another
  // writer made stale; the batch in flight holding it then loses on it too, and its loss
  // drains the pipeline). An eviction of everything is applied only with nothing in flight
  // (must_drain()); meanwhile the epoch returned is the last one applied, so the batch is
  // checked against the store.
  DecisionStart sync(StateCache& cache, const HeldStreams& held = {});
  // Whether an eviction of everything is pending: the writer lets the batches in flight commit
  // first.
  [[nodiscard]] bool must_drain();

  // Any thread: `cache` must drop these streams (`all`: everything) before the next decision;
  // batches decided before then are checked against the store.
  void evict(std::vector<std::string> streams, bool all = false);

  // Any thread: another writer appended `events` (in position order). Before the next decision
  // each is folded into the cached state it continues (one on a stream a batch in flight wrote
  // waits until it is released); a stream whose cached state it does not continue is dropped.
  // Batches decided before then are checked against the store.
  void fold_foreign(std::vector<StoredEvent> events);

  // After a commit that had losers: drops what the batch left unreliable, puts `committed`
  // (states as the commit left them, of streams the losers decided again touched) in place of
  // what the cache holds, and until the cache has done so, a command decided on one of
  // `loser_streams` loses too (it may have built on what a loser decided, which never reached
  // the store). A committed state of a stream a batch in flight holds waits until it is
  // released, and never replaces a later state of its stream.
  void evict_after_losers(std::vector<std::string> unreliable_streams, std::vector<std::string> loser_streams,
                          std::vector<std::pair<std::string, StreamState>> committed = {});

  // Under the head lock of `work`: splits off the commands of `batch` decided on states another
  // writer has moved since (see split_stale), when one may have. `start` is what sync() returned
  // when the batch's decision started.
  SplitOutcome reconcile(pqxx::work& work, const LockedHead& head, std::vector<Pending>& batch,
                         Decided& decided, const DecisionStart& start);

  // Without reading the store: the head this engine's last commit left, when reconcile() would
  // find nothing to do for `decided` were the store's head still there (nothing evicted or
  // tainted since the decision started, no refusal's read to check). The committer may then
  // append on it (append_on_head), which writes nothing if the head has moved.
  std::optional<LockedHead> own_head_if_unmoved(const Decided& decided, const DecisionStart& start);
  // Whether `head`, as locked, is where this engine's last commit left it.
  bool is_own_head(const LockedHead& head) const { return own_head_.load() == head.position; }

  // The batch committed: the head is where it left it.
  void committed(LockedHead head_after);
  // Whether and where the last append left the head is unknown (an error during it).
  void forget_head() { own_head_.store(unknown_head); }

 private:
  static constexpr std::int64_t unknown_head = -1;

  void post(std::vector<std::string> streams, bool all);  // with mutex_ held
  // The stored versions split_stale needs for `decided`, read from the store only for streams
  // that may have moved since the decision started (epoch `decided_at`).
  StoredVersions stored_versions_of(pqxx::work& work, const Decided& decided, std::uint64_t decided_at,
                                    const std::unordered_set<std::string>& tainted);
  // Beyond this many foreign positions, dropping the whole cache is cheaper than reading them.
  static constexpr std::int64_t moved_window_positions_max = 20'000;

  std::atomic<std::int64_t> own_head_{unknown_head};
  std::string own_head_hash_;  // with mutex_ held: the hash at own_head_
  std::mutex mutex_;
  std::vector<std::string> evictions_;
  std::vector<StoredEvent> foreign_;  // fold_foreign()'s, not yet applied
  std::vector<std::pair<std::string, StreamState>> committed_;  // evict_after_losers()'s
  bool evict_all_ = false;
  std::uint64_t epoch_ = 0;  // bumped by every evict() and fold_foreign()
  std::uint64_t applied_epoch_ = 0;  // the last epoch sync() applied
  // Loser streams by the epoch their eviction was posted at, newest last; bounded (a batch
  // decided before the oldest one kept loses whole).
  static constexpr std::size_t taints_max = 256;
  std::deque<std::pair<std::uint64_t, std::vector<std::string>>> taints_;
  std::uint64_t taints_dropped_through_ = 0;  // epochs up to this one were dropped
  // The streams each fold_foreign() and evict() named (`all`: every stream), by the epoch they
  // were posted at, newest last; bounded (a batch decided before the oldest one kept is checked
  // whole). A batch's stream none of them named since its decision started is as it decided:
  // only the others are read from the store at its append.
  struct Moved {
    std::uint64_t epoch = 0;
    std::vector<std::string> streams;
    bool all = false;
  };
  static constexpr std::size_t moved_max = 256;
  std::deque<Moved> moved_;
  std::uint64_t moved_dropped_through_ = 0;
  void remember_moved(std::vector<std::string> streams, bool all);  // with mutex_ held, after ++epoch_
};

}  // namespace ledger::engine
