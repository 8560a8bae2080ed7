#include "pipeline.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <pqxx/pqxx>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "appender.hpp"
#include "batch_decider.hpp"
#include "circuit_breaker.hpp"
#include "idempotency_store.hpp"
#include "ledger/core/logging.hpp"
#include "ledger/db/retry.hpp"
#include "state_cache.hpp"
#include "store_sql.hpp"
#include "stream_loader.hpp"
#include "writer_coherence.hpp"

namespace ledger::engine {

namespace {

constexpr std::size_t recent_samples_max = 65'536;
// The system accounts of every currency a batch touches, and more (decide_again).
constexpr std::size_t loser_cache_streams_max = 4'096;
// Connections beside the decider's own that a load of many uncached streams may use at once
// (at most those the pool has free now, less two: load_streams_spread).
constexpr std::size_t spread_load_extra_connections = 7;

// Errors after which the batch, which did not commit, may safely run again: the connection
// was lost or shut down (SQLSTATE classes 08 and 57P), or PostgreSQL asks for a retry.
bool is_retryable(const std::exception& error) {
  return db::is_transient(error) || dynamic_cast<const db::DatabaseUnavailable*>(&error) != nullptr;
}

// Errors the data of one command can cause (SQLSTATE class 22, data exception, and 23,
// integrity constraint violation): worth splitting the batch to find that command. Anything
// else (a statement or lock timeout, a full disk, a missing privilege) fails every command
// alike, and splitting would only multiply the attempts.
bool is_data_error(const std::exception& error) {
  const auto* sql = dynamic_cast<const pqxx::sql_error*>(&error);
  if (sql == nullptr) return false;
  const std::string& state = sql->sqlstate();
  return state.starts_with("22") || state.starts_with("23");
}

template <typename T>
void push_bounded(std::vector<T>& samples, T value) {
  if (samples.size() >= recent_samples_max) samples.erase(samples.begin(), samples.begin() + recent_samples_max / 2);
  samples.push_back(value);
}

}  // namespace

struct Pipeline::Impl {
  Impl(const EngineSettings& s, bool own_ids, db::ConnectionPool& p, UuidGenerator& u,
       SnapshotStore* store, SnapshotWriter* writer)
      : settings(s),
        pool(p),
        uuids(u),
        snapshots(store),
        snapshot_writer(writer),
        cache(settings.state_cache_streams_max),
        decider(settings.generate_id, own_ids, settings.clock_us, uuids, cache, snapshots, writer),
        loser_decider(settings.generate_id, own_ids, settings.clock_us, uuids, loser_cache,
                      snapshots, writer) {
    writer_thread = std::thread([this] { run_writer(); });
    if (settings.decide_while_committing) committer_thread = std::thread([this] { run_committer(); });
  }

  const EngineSettings& settings;
  db::ConnectionPool& pool;
  UuidGenerator& uuids;
  SnapshotStore* snapshots;
  SnapshotWriter* snapshot_writer;
  StateCache cache;  // writer thread only
  BatchDecider decider;  // writer thread only
  // Committer thread only: decides a batch's losers again inside its appending transaction
  // (decide_again), from the store but for the system accounts its cache holds.
  // Bounded above what one batch's losers name (a transfer not yet stored counts as settled, in
  // the cache's smaller share): a stream it dropped would be read again without the batch's rows.
  StateCache loser_cache{StateCache::settled_share_divisor *
                         (loser_cache_streams_max + 8 * settings.append_batch_commands_max)};
  BatchDecider loser_decider;
  using DecidedStates = std::unordered_map<std::string, domain::StreamState>;
  WriterCoherence coherence;

  std::mutex queue_mutex;
  std::condition_variable queue_not_empty;
  std::deque<Pending> queue;
  bool stopping = false;

  mutable std::mutex stats_mutex;
  EngineStats counters;
  // Sessions of commits whose in-doubt check could not reach the store (end_abandoned_sessions).
  struct AbandonedSession {
    int backend_pid = 0;
    std::chrono::steady_clock::time_point since;
  };
  std::mutex abandoned_mutex;
  std::vector<AbandonedSession> abandoned_sessions;
  // A try of an append on the engine's own head that found the head moved waited in its
  // statement for the other writer's commit: the next committed append's wait counts it.
  std::chrono::steady_clock::duration head_wait_carried{};
  CircuitBreaker breaker{settings.circuit_open_initial, settings.circuit_open_max};

  std::thread writer_thread;
  std::thread committer_thread;

  // ---- writer ---------------------------------------------------------------------------

  // The writer (decider) thread. With decide_while_committing it decides batch N+1 while the
  // committer thread appends batch N: the cache then holds N's states before N commits, so a
  // batch the committer cannot commit comes back here (redo) and is run again the serial way,
  // after the cache is cleared, together with every batch decided on top of it.
  void run_writer() {
    std::vector<Pending> batch;
    while (true) {
      if (redo_pending) {
        recover();
        continue;
      }
      {
        std::unique_lock lock(queue_mutex);
        queue_not_empty.wait(lock, [&] { return stopping || !queue.empty() || redo_pending; });
        if (redo_pending) continue;
        if (queue.empty() && stopping) break;
        if (settings.commit_wait_max.count() > 0 &&
            queue.size() < settings.append_batch_commands_max && !stopping) {
          queue_not_empty.wait_for(lock, settings.commit_wait_max, [&] {
            return stopping || queue.size() >= settings.append_batch_commands_max;
          });
        }
        const std::size_t take = std::min(queue.size(), settings.append_batch_commands_max);
        // The batch's storage goes with it to the committer: without this it grew from nothing
        // through about eleven reallocations a batch (8 % of a close of business's CPU).
        batch.reserve(take);
        for (std::size_t i = 0; i < take; ++i) {
          batch.push_back(std::move(queue.front()));
          queue.pop_front();
        }
      }
      if (const auto open_for = breaker.refuse()) {
        // Queued before the breaker opened: fail fast too, rather than retry into a dead database.
        fail_all_circuit_open(batch, *open_for);
      } else if (settings.decide_while_committing) {
        decide_ahead(batch);
      } else {
        process_batch(batch);
      }
      batch.clear();
    }
    // Everything queued is decided; let the committer finish, then redo what it gave back.
    wait_committer_idle();
    if (redo_pending) recover();
  }

  // Decides `batch` on the cached states and hands it to the committer.
  void decide_ahead(std::vector<Pending>& batch) {
    decider.assign_ids(batch);
    std::vector<std::string> keys = keys_of(batch);
    if (!keys.empty() && keys_in_flight(keys)) {
      // Keys are checked against the store: it must hold the batch in flight with the same key
      // first (a client retrying before its first try was answered).
      count_stall();
      wait_committer_idle();
      if (redo_pending) recover();
      process_batch(batch);
      return;
    }
    // Dropping the whole cache waits for the batches in flight (WriterCoherence::sync).
    if (coherence.must_drain()) {
      count_stall();
      wait_committer_idle();
      if (redo_pending) recover();
    }
    // The cache must hold no state of a failed batch: recover first if one is pending. After
    // that nothing is in flight, so the generation read here is the one the cache matches.
    std::uint64_t decided_generation = 0;
    {
      std::unique_lock lock(handoff_mutex);
      if (redo_pending) {
        lock.unlock();
        recover();
        lock.lock();
      }
      decided_generation = generation;
    }
    Prepared prepared;
    prepared.start = sync_with_batches_in_flight();
    if (names_deferred(batch, prepared.start.deferred) || names_held_uncached(batch)) {
      // Its commands would be decided on states another commit made stale, and lose; and the
      // batches in flight, which keep those streams from being refreshed, may be followed by
      // more like them. Let them commit, then refresh. (Or a stream a batch in flight wrote has
      // left the cache: the store does not hold that batch's state of it yet.)
      count_stall();
      wait_committer_idle();
      std::unique_lock lock(handoff_mutex);
      if (redo_pending) {
        lock.unlock();
        recover();
        lock.lock();
      }
      decided_generation = generation;
      lock.unlock();
      prepared.start = sync_with_batches_in_flight();  // nothing in flight: nothing deferred
    }
    std::optional<db::ConnectionPool::Lease> lease;
    // Reads outside a transaction: each statement sees what is committed when it runs, as in a
    // read-committed transaction, without its BEGIN and COMMIT round trips.
    std::optional<pqxx::nontransaction> read;
    const StoreReader store = [&]() -> pqxx::transaction_base& {
      if (!read) {
        lease.emplace(pool.acquire());
        read.emplace(**lease);
      }
      return *read;
    };
    try {
      domain::WorkingSet working([&](const std::string& stream_id) {
        if (const StreamState* cached = cache.find(stream_id)) return *cached;
        if (held_by_batch_in_flight(stream_id)) {
          // Read lazily, beyond what names_held_uncached() saw: the store is behind here.
          throw std::runtime_error("stream " + stream_id + ", written by a batch in flight, is not cached");
        }
        return load_streams(store(), {stream_id}, snapshots, snapshot_writer).at(stream_id);
      });
      // Reads here need no common snapshot (each statement already sees what is committed when
      // it runs, and the append learns what other writers committed since): the streams a batch
      // misses in the cache, when many (a cold start), are read on several connections.
      const MissingStreamsLoader load_spread = [&](const std::vector<std::string>& ids) {
        return load_streams_spread(store(), pool, ids, spread_load_extra_connections, snapshots,
                                   snapshot_writer);
      };
      prepared.decided = decider.decide(store, batch, false, working, load_spread);
      if (read) {
        read->commit();
        read.reset();
        lease.reset();
      }
      std::vector<std::string> written;
      for (const auto& row : prepared.decided.rows) {
        if (prepared.changed.try_emplace(row.stream_id, working.streams().at(row.stream_id)).second) {
          written.push_back(row.stream_id);
        }
      }
      prepared.sequence = ++decided_sequence;
      in_flight.push_back({prepared.sequence, std::move(written), std::move(keys)});
      for (auto& [stream_id, state] : working.streams()) cache.put(stream_id, std::move(state));
    } catch (const std::exception& error) {
      read.reset();
      if (lease) lease->discard();
      lease.reset();
      // Deciding failed on the database: run the batch the serial way, which retries and
      // answers every command whatever happens.
      spdlog::warn("deciding a batch failed ({}); running it on its own", error.what());
      count_stall();
      wait_committer_idle();
      if (redo_pending) recover();
      cache.clear();
      process_batch(batch);
      return;
    }
    prepared.batch = std::move(batch);
    prepared.generation = decided_generation;
    {
      // While the committer is busy, a batch decided later joins the one waiting for it, up to
      // the batch bound: a command then waits for one commit ahead of it, not two.
      std::unique_lock lock(handoff_mutex);
      handoff_changed.wait(lock, [&] {
        return !handoff.has_value() ||
               (handoff->generation == prepared.generation &&
                handoff->batch.size() + prepared.batch.size() <= settings.append_batch_commands_max);
      });
      if (handoff) {
        handoff->merge(std::move(prepared));
      } else {
        handoff = std::move(prepared);
      }
    }
    handoff_changed.notify_all();
  }

  // The committer thread: appends decided batches in order. A batch decided before a failure
  // (an older generation) is not appended but given back to the writer.
  void run_committer() {
    while (true) {
      Prepared prepared;
      bool current = false;
      {
        std::unique_lock lock(handoff_mutex);
        handoff_changed.wait(lock, [&] { return handoff.has_value() || committer_stopping; });
        if (!handoff) return;
        prepared = std::move(*handoff);
        handoff.reset();
        committer_busy = true;
        current = prepared.generation == generation;
      }
      handoff_changed.notify_all();
      Appended appended;
      bool answered = false;
      bool outcome_unknown = false;
      if (current) {
        const auto started = std::chrono::steady_clock::now();
        try {
          auto lease = pool.acquire();
          try {
            prepare_append(*lease);
            end_abandoned_sessions(*lease);
            if (std::optional<Appended> on_own_head = append_on_own_head(*lease, prepared)) {
              appended = std::move(*on_own_head);
            } else {
              pqxx::work work(*lease);
              appended = append_decided(work, prepared.batch, prepared.decided, prepared.start,
                                        &prepared.changed, [&] { join_waiting_batch(prepared); });
              if (appended.committed) head_likely_own = appended.on_own_head;
            }
          } catch (...) {
            lease.discard();
            throw;
          }
        } catch (const OutcomeUnknown& error) {
          // Never run these commands again: they may have committed. Whether they did or not,
          // the cache and every batch decided on top of this one are void (below).
          answer_outcome_unknown(prepared.batch, error.what());
          answered = true;
          outcome_unknown = true;
        } catch (const std::exception& error) {
          spdlog::warn("appending a decided batch failed ({}); it runs again on its own",
                       error.what());
        }
        if (appended.committed) {
          // The cache holds what the losers decided: it drops those streams before the next
          // decision, and a command decided on them meanwhile loses too (WriterCoherence).
          for (const auto& stream_id : appended.unreliable_streams) prepared.changed.erase(stream_id);
          for (const auto& [stream_id, state] : appended.committed_states) prepared.changed.erase(stream_id);
          if (!appended.unreliable_streams.empty() || !appended.committed_states.empty()) {
            coherence.evict_after_losers(std::move(appended.unreliable_streams),
                                         std::move(appended.loser_streams),
                                         std::move(appended.committed_states));
          }
          SnapshotWriter::remember_appended(snapshot_writer, prepared.changed, prepared.decided.rows);
          answer(prepared.batch, prepared.decided.slots, prepared.decided.rows.size(), started);
          if (!appended.decided_again.empty()) {
            count_conflict(appended.decided_again.size());
            answer(appended.decided_again, appended.decided_again_rows.slots,
                   appended.decided_again_rows.rows.size(), started,
                   /*commit=*/prepared.decided.rows.empty());
          }
          answered = true;
        }
      }
      const bool sent_back = !appended.losers.empty();
      if (!answered) {
        // The cache holds this batch's states, which the store does not: a voided batch's
        // streams are dropped; after a failure, everything (its cause may lie elsewhere).
        coherence.evict(current ? std::vector<std::string>{} : changed_streams(prepared.changed), current);
      } else if (outcome_unknown) {
        coherence.evict({}, true);
      }
      {
        std::lock_guard lock(handoff_mutex);
        finished_sequence.store(prepared.sequence);
        if (!answered) {
          if (current) count_conflict(prepared.batch.size());
          ++generation;
          redo.push_back(std::move(prepared.batch));
          redo_pending = true;
        } else if (sent_back) {
          count_conflict(appended.losers.size());
          redo.push_back(std::move(appended.losers));
          redo_pending = true;
        } else if (outcome_unknown) {
          // The cache holds this batch's states, which the store may not: later decisions
          // (an older generation now) go back to the writer, which clears the cache first.
          ++generation;
          redo_pending = true;
        }
        committer_busy = false;
      }
      handoff_changed.notify_all();
      if (!answered || outcome_unknown || sent_back) {
        { std::lock_guard wake(queue_mutex); }
        queue_not_empty.notify_all();
      }
    }
  }

  // Writer thread: applies the evictions other writers and the committer posted, except those
  // of streams a decided batch still in flight wrote (see WriterCoherence::sync).
  DecisionStart sync_with_batches_in_flight() {
    forget_finished();
    if (in_flight.empty()) return coherence.sync(cache);
    // Built when first asked: a post can arrive between any check of ours and the sync, so the
    // sync always knows what is held.
    std::optional<std::unordered_set<std::string_view>> held;
    return coherence.sync(cache, [&](const std::string& stream_id) {
      if (!held) {
        held.emplace();
        for (const auto& decided : in_flight) held->insert(decided.streams.begin(), decided.streams.end());
      }
      return held->contains(stream_id);
    });
  }

  // Whether a command of `batch` names one of `deferred` (not a system account's: those are
  // renumbered at the append, never lost on).
  static bool names_deferred(const std::vector<Pending>& batch, const std::vector<std::string>& deferred) {
    std::unordered_set<std::string_view> lost;
    for (const auto& stream_id : deferred) {
      if (!is_system_account_stream(stream_id)) lost.insert(stream_id);
    }
    if (lost.empty()) return false;
    std::vector<std::string> named;
    for (const auto& pending : batch) {
      named.clear();
      domain::collect_streams(pending.command.body, named);
      for (const auto& stream_id : named) {
        if (lost.contains(stream_id)) return true;
      }
    }
    return false;
  }

  // Writer thread: whether a command of `batch` names a stream a batch in flight wrote that the
  // cache no longer holds (a cache smaller than what is in flight): the store does not have
  // that batch's state of it yet, and a decision on the store's would build on a stale state.
  bool names_held_uncached(const std::vector<Pending>& batch) {
    forget_finished();
    if (in_flight.empty()) return false;
    std::vector<std::string> named;
    for (const auto& pending : batch) domain::collect_streams(pending.command.body, named);
    std::erase_if(named, [&](const std::string& id) { return cache.peek(id) != nullptr; });
    if (named.empty()) return false;
    std::unordered_set<std::string_view> held;
    for (const auto& decided : in_flight) held.insert(decided.streams.begin(), decided.streams.end());
    return std::any_of(named.begin(), named.end(), [&](const std::string& id) { return held.contains(id); });
  }

  // Writer thread: whether a decided batch not yet finished with wrote `stream_id` (a scan: for
  // the rare stream a decision reads beyond what its commands name).
  bool held_by_batch_in_flight(const std::string& stream_id) {
    forget_finished();
    return std::any_of(in_flight.begin(), in_flight.end(), [&](const InFlight& decided) {
      return std::find(decided.streams.begin(), decided.streams.end(), stream_id) != decided.streams.end();
    });
  }

  // Writer thread: whether one of `keys` (keys_of() a batch) is the key of a command in flight.
  bool keys_in_flight(const std::vector<std::string>& keys) {
    forget_finished();
    if (in_flight.empty()) return false;
    const std::unordered_set<std::string_view> wanted(keys.begin(), keys.end());
    return std::any_of(in_flight.begin(), in_flight.end(), [&](const InFlight& decided) {
      return std::any_of(decided.keys.begin(), decided.keys.end(),
                         [&](const std::string& key) { return wanted.contains(key); });
    });
  }

  // Actor and key of each keyed command, as one string each.
  static std::vector<std::string> keys_of(const std::vector<Pending>& batch) {
    std::vector<std::string> keys;
    for (const auto& pending : batch) {
      const auto& context = pending.command.context;
      if (context.idempotency_key.empty()) continue;
      keys.push_back(context.actor);
      keys.back().push_back('\0');
      keys.back() += context.idempotency_key;
    }
    return keys;
  }

  void forget_finished() {
    const std::uint64_t finished = finished_sequence.load();
    while (!in_flight.empty() && in_flight.front().sequence <= finished) in_flight.pop_front();
  }

  void wait_committer_idle() {
    std::unique_lock lock(handoff_mutex);
    handoff_changed.wait(lock, [&] { return !handoff.has_value() && !committer_busy; });
  }

  // The pipelined writer stops deciding ahead: it waits for the batches in flight, or runs a
  // batch the serial way.
  void count_stall() {
    std::lock_guard lock(stats_mutex);
    ++counters.pipeline_stalls;
  }

  // Runs the batches the committer gave back, in order, once the cache has dropped what they
  // (and the batches before them) left in it.
  void recover() {
    count_stall();
    wait_committer_idle();
    std::vector<std::vector<Pending>> batches;
    {
      std::lock_guard lock(handoff_mutex);
      batches.swap(redo);
      redo_pending = false;
    }
    {
      std::lock_guard lock(stats_mutex);
      counters.batches_run_again += batches.size();
    }
    for (auto& batch : batches) process_batch(batch);
  }

  static std::vector<std::string> changed_streams(
      const std::unordered_map<std::string, domain::StreamState>& changed) {
    std::vector<std::string> streams;
    streams.reserve(changed.size());
    for (const auto& [stream_id, state] : changed) streams.push_back(stream_id);
    return streams;
  }

  // An append found streams another writer had moved: `commands` go back to be decided again.
  void count_conflict(std::size_t commands) {
    std::lock_guard lock(stats_mutex);
    ++counters.conflicts;
    counters.commands_redecided += commands;
  }

  // The serial path: decides and appends `batch` in one transaction, retrying conflicts and
  // transient errors, and answers every command.
  void process_batch(std::vector<Pending>& batch) {
    decider.assign_ids(batch);
    int conflicts = 0;
    int connection_failures = 0;
    bool fresh = false;  // after a conflict, read streams from the store, not the cache
    while (true) {
      try {
        auto lease = pool.acquire();
        try {
          std::vector<Pending> losers;
          const bool appended = attempt_batch(*lease, batch, fresh, losers);
          if (appended && losers.empty()) return;
          // Lost an optimistic-concurrency race: the losers (or the whole batch, when nothing
          // was appended) are decided again on the stored states.
          if (appended) batch = std::move(losers);
          count_conflict(batch.size());
          if (++conflicts > settings.conflict_retries_max) {
            answer_all_conflict(batch);
            return;
          }
          fresh = true;
        } catch (...) {
          lease.discard();  // its state is unknown after an error
          throw;
        }
      } catch (const OutcomeUnknown& error) {
        cache.clear();  // the batch may have committed: nothing cached is trusted any more
        answer_outcome_unknown(batch, error.what());
        return;
      } catch (const pqxx::in_doubt_error& error) {
        // attempt_batch found the in-doubt commit did not happen: run the batch again.
        fresh = true;
        if (++connection_failures > settings.connection_retries_max) {
          breaker.record_failure();
          fail_all(batch, error.what());
          return;
        }
      } catch (const UnstorableCommand& error) {
        if (batch.size() > 1) {
          process_halves(batch);
          return;
        }
        spdlog::error("command refused: {}", error.what());
        reject_all(batch, RejectionCode::invalid_command, error.what());
        return;
      } catch (const std::exception& error) {
        if (is_data_error(error) && batch.size() > 1) {
          // One command may have caused it: split the batch until that one fails alone and
          // the rest commit.
          spdlog::warn("batch of {} commands failed ({}); retrying it in halves", batch.size(),
                       error.what());
          process_halves(batch);
          return;
        }
        if (!is_retryable(error) || ++connection_failures > settings.connection_retries_max) {
          spdlog::error("batch of {} commands failed: {}", batch.size(), error.what());
          if (is_retryable(error)) {
            breaker.record_failure();
            spdlog::warn("database circuit breaker open: commands fail fast until a probe commits");
          }
          fail_all(batch, error.what());
          return;
        }
        spdlog::warn("batch failed on a database error (attempt {}), retrying: {}",
                     connection_failures, error.what());
        std::this_thread::sleep_for(std::chrono::milliseconds(50) * (1 << std::min(connection_failures, 6)));
        fresh = true;
      }
    }
  }

  // Runs the first half of `batch`, then the second: a command that fails every batch it is in
  // ends up alone. Order is kept, so a command still sees the effects of those before it.
  void process_halves(std::vector<Pending>& batch) {
    const auto middle = batch.begin() + static_cast<std::ptrdiff_t>(batch.size() / 2);
    std::vector<Pending> first(std::make_move_iterator(batch.begin()), std::make_move_iterator(middle));
    std::vector<Pending> second(std::make_move_iterator(middle), std::make_move_iterator(batch.end()));
    process_batch(first);
    process_batch(second);
  }

  // A decided batch on its way from the writer to the committer.
  struct Prepared {
    std::vector<Pending> batch;
    Decided decided;
    std::unordered_map<std::string, domain::StreamState> changed;  // copies, for snapshots
    std::uint64_t generation = 0;
    DecisionStart start;  // where the decision started (the earliest, once merged)
    std::uint64_t sequence = 0;  // the writer's number of the last decision merged into it

    // Appends a batch decided after this one (on the states this one left in the cache).
    void merge(Prepared&& later) {
      const std::size_t command_offset = batch.size();
      const std::size_t event_offset = decided.rows.size();
      for (auto& slot : later.decided.slots) {
        slot.first_event += event_offset;
        slot.end_event += event_offset;
        if (slot.kind == Slot::Kind::follows) slot.follows += command_offset;
      }
      std::move(later.batch.begin(), later.batch.end(), std::back_inserter(batch));
      std::move(later.decided.slots.begin(), later.decided.slots.end(), std::back_inserter(decided.slots));
      std::move(later.decided.rows.begin(), later.decided.rows.end(), std::back_inserter(decided.rows));
      for (auto& expiry : later.decided.expiries) {
        expiry.command += command_offset;
        decided.expiries.push_back(std::move(expiry));
      }
      start.epoch = std::min(start.epoch, later.start.epoch);
      std::move(later.start.deferred.begin(), later.start.deferred.end(), std::back_inserter(start.deferred));
      sequence = later.sequence;
      decided.keyed = decided.keyed || later.decided.keyed;
      std::move(later.decided.unwritten_reads.begin(), later.decided.unwritten_reads.end(),
                std::back_inserter(decided.unwritten_reads));
      for (auto& [stream_id, state] : later.changed) changed.insert_or_assign(stream_id, std::move(state));
    }
  };

  // Committer thread, holding the head row for `prepared`: the batch decided meanwhile, if it
  // waits for the committer and fits, joins this commit. While another writer's commit held
  // the head row, the commands decided behind this batch would otherwise wait for a commit of
  // their own: under contention every commit then carries what queued during the wait, so the
  // writers share the head row in fewer, larger commits (group commit across writers).
  void join_waiting_batch(Prepared& prepared) {
    {
      std::lock_guard lock(handoff_mutex);
      if (!handoff || handoff->generation != prepared.generation ||
          prepared.batch.size() + handoff->batch.size() > settings.append_batch_commands_max) {
        return;
      }
      prepared.merge(std::move(*handoff));
      handoff.reset();
    }
    handoff_changed.notify_all();
  }

  std::mutex handoff_mutex;
  std::condition_variable handoff_changed;
  std::optional<Prepared> handoff;  // at most one batch waits for the committer
  // Committer thread: whether the last append in a transaction found the head where this
  // engine's commit before it had left it (append_on_own_head tries only then).
  bool head_likely_own = false;
  bool committer_busy = false;
  bool committer_stopping = false;
  std::uint64_t generation = 0;  // bumped when a batch fails: later decisions are void
  std::vector<std::vector<Pending>> redo;
  std::atomic<bool> redo_pending{false};
  // Writer thread: what each decided batch wrote and the idempotency keys it stores, by
  // decision number, until the committer has finished with it (finished_sequence: committed,
  // refused or given back).
  struct InFlight {
    std::uint64_t sequence = 0;
    std::vector<std::string> streams;
    std::vector<std::string> keys;  // keys_of()
  };
  std::deque<InFlight> in_flight;
  std::uint64_t decided_sequence = 0;
  std::atomic<std::uint64_t> finished_sequence{0};

  // When an append asked for the store's head row and got it.
  struct HeadLockTimes {
    std::chrono::steady_clock::time_point asked;
    std::chrono::steady_clock::time_point taken;
  };

  // What appending a decided batch did.
  struct Appended {
    bool committed = false;          // false: a version or key conflict, nothing written
    bool on_own_head = false;        // the store's head was where this engine's last commit left it
    std::vector<Pending> losers;     // decided on streams another writer moved: not appended
    std::vector<std::string> unreliable_streams;  // their decided states differ from the store's
    std::vector<std::string> loser_streams;       // what the losers wrote
    // The losers decided again and appended in the same transaction (decide_again), and the
    // states of the streams they touched as committed: the writer's cache takes them instead
    // of reading those streams again.
    std::vector<Pending> decided_again;
    Decided decided_again_rows;
    std::vector<std::pair<std::string, StreamState>> committed_states;
  };

  // Phase two: appends and commits the decided rows in `work`, minus the commands another
  // writer's commits made stale (moved out of `batch` and `decided` into the result). When the
  // connection dies during COMMIT the store is asked whether the batch landed: committed if it
  // did, the error again if it did not, and OutcomeUnknown when the store cannot tell
  // (retrying could then append twice).
  //
  // Given `decided_states` (the states the batch was decided to leave), the losers are decided
  // again in `work` after the batch's rows are written, while the head row is held (nothing
  // can move their streams before the commit), and appended in the same commit
  // (decided_again): they cost no second transaction, and the writer keeps deciding ahead. A
  // loser the domain cannot store (UnstorableCommand) goes back instead.
  //
  // `after_lock`, when given, runs once the head row is held and before anything is checked or
  // written: it may append later decisions to `batch`, `decided`, `start` and `decided_states`
  // (join_waiting_batch).
  //
  // `locked_at`, when given, says when the caller asked for and got the head row it already holds
  // in `work` (the serial path after a conflict): the head-row metrics count from there.
  Appended append_decided(pqxx::work& work, std::vector<Pending>& batch, Decided& decided,
                          const DecisionStart& start, const DecidedStates* decided_states = nullptr,
                          const std::function<void()>& after_lock = {},
                          const HeadLockTimes* locked_at = nullptr) {
    Appended result;
    if (decided.rows.empty() && !decided.keyed && decided.unwritten_reads.empty()) {
      result.committed = true;
      return result;
    }
    auto records_for = [&](GlobalPosition first) {
      BatchDecider::fill_positions(decided.slots, decided.rows, first);
      return BatchDecider::records(batch, decided.slots);
    };
    const int backend_pid = work.conn().backendpid();
    std::string first_event_id;  // of the commit: how the in-doubt check finds whether it landed
    auto lock_asked = std::chrono::steady_clock::now();
    std::chrono::steady_clock::time_point lock_taken;
    AppendStepTimes steps;
    try {
      const LockedHead head = lock_head(work);
      lock_taken = std::chrono::steady_clock::now();
      result.on_own_head = coherence.is_own_head(head);
      if (locked_at != nullptr) {
        lock_asked = locked_at->asked;
        lock_taken = locked_at->taken;
      }
      if (after_lock) after_lock();
      SplitOutcome split = coherence.reconcile(work, head, batch, decided, start);
      result.losers = std::move(split.losers);
      result.unreliable_streams = std::move(split.unreliable_streams);
      result.loser_streams = std::move(split.loser_streams);
      if (!decided.rows.empty()) first_event_id = decided.rows.front().event_id;
      if (decided_states == nullptr || result.losers.empty()) {
        coherence.committed(
            append_batch(work, head, decided.rows, records_for, decided.expiries, &steps)
                .head_after);
      } else {
        // The winners' rows are sealed, not written: the losers are decided on them, and both
        // go in with the one append statement. Sealing and building records count as the
        // `rows` step, as in append_batch; deciding again is the rest of the hold.
        auto rows_started = std::chrono::steady_clock::now();
        LockedHead after = seal_rows(head, decided.rows);
        std::vector<IdempotencyRecord> records = records_for(GlobalPosition(head.position + 1));
        std::vector<ExpiryRecord> expiries = decided.expiries;
        steps.rows += std::chrono::steady_clock::now() - rows_started;
        if (decide_again(work, *decided_states, decided.rows, result)) {
          Decided& again = result.decided_again_rows;
          if (first_event_id.empty() && !again.rows.empty()) first_event_id = again.rows.front().event_id;
          rows_started = std::chrono::steady_clock::now();
          const GlobalPosition again_first(after.position + 1);
          after = seal_rows(after, again.rows);
          BatchDecider::fill_positions(again.slots, again.rows, again_first);
          for (auto& record : BatchDecider::records(result.decided_again, again.slots)) {
            records.push_back(std::move(record));
          }
          for (const auto& expiry : again.expiries) expiries.push_back(expiry);
          steps.rows += std::chrono::steady_clock::now() - rows_started;
        }
        write_and_commit(work, head, after, {&decided.rows, &result.decided_again_rows.rows}, records,
                         expiries, &steps);
        coherence.committed(after);
      }
    } catch (const AppendConflict& conflict) {
      coherence.forget_head();
      spdlog::debug("append conflict, reloading: {}", conflict.what());
      give_back(batch, result.decided_again);
      give_back(batch, result.losers);
      return result;
    } catch (const pqxx::in_doubt_error& error) {
      coherence.forget_head();
      // The losers not decided again were not in the commit: unless it landed, they run again
      // with the batch. Those decided again were: they share the batch's outcome.
      bool landed = false;
      try {
        landed = landed_in_doubt(error, first_event_id, backend_pid, decided.rows.size());
      } catch (...) {
        give_back(batch, result.decided_again);
        give_back(batch, result.losers);
        throw;
      }
      if (!landed) {
        give_back(batch, result.decided_again);
        give_back(batch, result.losers);
        throw;
      }
    } catch (...) {
      coherence.forget_head();
      give_back(batch, result.decided_again);
      give_back(batch, result.losers);
      throw;
    }
    result.committed = true;
    count_head_lock(lock_taken - lock_asked, std::chrono::steady_clock::now() - lock_taken, steps);
    return result;
  }

  // The connection was lost while a commit whose first event is `first_event_id` (none: a
  // commit of idempotency records alone) was under way on the session `backend_pid`: true when
  // it landed, false when it did not, OutcomeUnknown when the store cannot tell (retrying could
  // then append twice).
  bool landed_in_doubt(const pqxx::in_doubt_error& error, const std::string& first_event_id,
                       int backend_pid, std::size_t events) {
    spdlog::warn("commit outcome unknown ({}); checking the event store", error.what());
    if (first_event_id.empty()) {
      throw OutcomeUnknown("the connection was lost during the commit of idempotency records");
    }
    const auto committed =
        committed_in_doubt(pool, first_event_id, backend_pid, settings.connection_retries_max);
    if (!committed) {
      spdlog::error(
          "the outcome of a commit of {} events is unknown: the event store could "
          "not be reached to check it",
          events);
      if (backend_pid != 0) {
        std::lock_guard lock(abandoned_mutex);
        abandoned_sessions.push_back({backend_pid, std::chrono::steady_clock::now()});
      }
      throw OutcomeUnknown(
          "the connection was lost during the commit and the event store "
          "could not be reached to check whether it landed");
    }
    if (*committed) spdlog::info("the in-doubt batch did commit");
    return *committed;
  }

  // Before an append on `connection` (writer or committer thread): ends the sessions of
  // commits whose in-doubt check could not reach the store (end_abandoned_session). Each may
  // still hold the head row, and the server ends one left between its statement and the Sync
  // that would commit it only by TCP keepalive; one still running would make every append
  // after it wait out its statement timeout. A session it cannot end yet is tried again before
  // the next append.
  void end_abandoned_sessions(pqxx::connection& connection) {
    std::lock_guard lock(abandoned_mutex);
    std::erase_if(abandoned_sessions, [&](const AbandonedSession& abandoned) {
      const auto abandoned_for = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - abandoned.since);
      try {
        if (!end_abandoned_session(connection, abandoned.backend_pid, abandoned_for)) return false;
        spdlog::warn("ended session {} of a commit whose outcome was unknown",
                     abandoned.backend_pid);
        return true;
      } catch (const std::exception& error) {
        spdlog::warn("ending session {} of a commit whose outcome was unknown failed: {}",
                     abandoned.backend_pid, error.what());
        return false;
      }
    });
  }

  // Committer thread: appends `prepared` on the head this engine's last commit left, in one
  // autocommit statement (append_on_head): no BEGIN, no lock of the head and no COMMIT of their
  // own, so a commit costs one round trip instead of four. Nothing (nothing written) when the
  // batch needs the store read first (WriterCoherence::own_head_if_unmoved), when the last
  // append in a transaction found another writer's commits before it (with two writers the
  // head moves between most commits: each try would be a statement wasted) or when the head has
  // moved; the caller then appends it in a transaction. The batch decided meanwhile joins it
  // first, as it would join a commit that waited for the head row.
  std::optional<Appended> append_on_own_head(pqxx::connection& connection, Prepared& prepared) {
    if (!head_likely_own) return std::nullopt;
    join_waiting_batch(prepared);
    Decided& decided = prepared.decided;
    if (decided.rows.empty()) return std::nullopt;
    const std::optional<LockedHead> head = coherence.own_head_if_unmoved(decided, prepared.start);
    if (!head) return std::nullopt;
    const int backend_pid = connection.backendpid();
    const std::string first_event_id = decided.rows.front().event_id;
    const auto records_for = [&](GlobalPosition first) {
      BatchDecider::fill_positions(decided.slots, decided.rows, first);
      return BatchDecider::records(prepared.batch, decided.slots);
    };
    const auto started = std::chrono::steady_clock::now();
    AppendStepTimes steps;
    Appended result;
    try {
      const std::optional<LockedHead> after =
          append_on_head(connection, *head, decided.rows, records_for, decided.expiries, &steps);
      if (!after) {
        spdlog::debug("another writer moved the head past {}: appending after it", head->position);
        head_likely_own = false;
        std::lock_guard lock(stats_mutex);
        ++counters.appends_on_own_head_missed;
        head_wait_carried += std::chrono::steady_clock::now() - started;
        return std::nullopt;
      }
      coherence.committed(*after);
    } catch (const AppendConflict& conflict) {
      coherence.forget_head();
      spdlog::debug("append conflict, reloading: {}", conflict.what());
      return result;
    } catch (const pqxx::in_doubt_error& error) {
      coherence.forget_head();
      if (!landed_in_doubt(error, first_event_id, backend_pid, decided.rows.size())) throw;
    } catch (...) {
      coherence.forget_head();
      throw;
    }
    result.committed = true;
    result.on_own_head = true;
    count_head_lock({}, std::chrono::steady_clock::now() - started, steps, /*on_own_head=*/true);
    return result;
  }

  // A committed append's wait for the head row and its hold of it, through the COMMIT.
  void count_head_lock(std::chrono::steady_clock::duration waited,
                       std::chrono::steady_clock::duration held, const AppendStepTimes& steps,
                       bool on_own_head = false) {
    using Seconds = std::chrono::duration<double>;
    std::lock_guard lock(stats_mutex);
    if (on_own_head) ++counters.appends_on_own_head;
    waited += std::exchange(head_wait_carried, {});
    counters.head_lock_wait_seconds.observe(Seconds(waited).count());
    counters.head_lock_held_seconds.observe(Seconds(held).count());
    counters.append_step_seconds.rows += Seconds(steps.rows).count();
    counters.append_step_seconds.write += Seconds(steps.write).count();
    counters.append_step_seconds.commit += Seconds(steps.commit).count();
  }

  // Committer thread, under the head lock of `work`, once the batch's rows are sealed (not yet
  // written): decides `result.losers` again on the store's states with the batch's `written`
  // rows folded on top, and moves them to `result.decided_again`. The streams they write join
  // the loser streams (a batch decided ahead on one loses too); the states of every stream they
  // touched, as this commit leaves them, replace what the writer's cache holds
  // (committed_states), but for system accounts', which are dropped (unreliable). False, with
  // the losers left to go back to the writer, when one cannot be stored or their streams do not
  // fit the loser cache.
  //
  // A system account's stream is not read from the store (a busy currency's cash account moves
  // at every deposit of every writer: folding its events since the last snapshot would hold the
  // head lock long): its decisions never read its balance, so the state the batch decided, at
  // the version its stored and written rows reach, serves (as batch_split renumbers its rows).
  //
  // Throws AppendConflict when `written` does not continue a stream as stored (the batch was
  // decided on a stale state: the store would refuse it).
  bool decide_again(pqxx::work& work, const DecidedStates& decided_states,
                    const std::vector<RecordedEvent>& written, Appended& result) {
    loser_cache.clear();
    std::unordered_map<std::string_view, std::vector<const RecordedEvent*>> written_rows;
    for (const auto& row : written) written_rows[row.stream_id].push_back(&row);
    // Rows that do not follow the stored version were decided on a stale state: the store would
    // refuse them, so the commit is refused as a conflict here (before anything is written).
    auto check_follows = [&](const std::string& stream_id, std::int64_t stored_version) {
      const auto rows = written_rows.find(stream_id);
      if (rows != written_rows.end() && rows->second.front()->version.value() != stored_version + 1) {
        throw AppendConflict("the batch's rows of " + stream_id + " do not follow its stored version " +
                             std::to_string(stored_version));
      }
    };
    // The store's state of a stream, then the batch's rows on it.
    auto fold_written = [&](const std::string& stream_id, StreamState& state) {
      check_follows(stream_id, state.version.value());
      const auto rows = written_rows.find(stream_id);
      if (rows == written_rows.end()) return;
      for (const RecordedEvent* row : rows->second) {
        fold_event(stream_id, state, row->version.value(), row->type, row->payload, row->hash);
      }
    };
    std::vector<std::string> system_streams;
    for (const auto& [stream_id, state] : decided_states) {
      if (is_floating_stream(stream_id, state.version.value())) system_streams.push_back(stream_id);
    }
    for (const auto& [stream_id, stored] : read_stored_versions(work, system_streams)) {
      check_follows(stream_id, stored);
      std::int64_t version = stored;
      if (const auto rows = written_rows.find(stream_id); rows != written_rows.end()) {
        version = rows->second.back()->version.value();
      }
      if (version == 0) continue;
      StreamState state = decided_states.at(stream_id);
      state.version = StreamVersion(version);
      loser_cache.put(stream_id, std::move(state));
    }
    // Every stream the losers name, read in one query, with the batch's rows on top.
    std::vector<std::string> named;
    for (const auto& loser : result.losers) domain::collect_streams(loser.command.body, named);
    std::sort(named.begin(), named.end());
    named.erase(std::unique(named.begin(), named.end()), named.end());
    std::erase_if(named, [&](const std::string& id) { return loser_cache.find(id) != nullptr; });
    for (auto& [stream_id, state] : load_streams(work, named, snapshots, snapshot_writer)) {
      fold_written(stream_id, state);
      loser_cache.put(stream_id, std::move(state));
    }
    // The decider reads what the cache misses from the store, without the batch's rows: a
    // refusal decided on such a state would write nothing for the store to refuse.
    const bool all_kept = std::all_of(named.begin(), named.end(), [&](const std::string& id) {
      return loser_cache.peek(id) != nullptr;
    });
    if (!all_kept) {
      spdlog::warn("the {} streams of a batch's losers do not fit the loser cache; they run on their own",
                   named.size());
      return false;
    }
    domain::WorkingSet working([&](const std::string& stream_id) {
      if (const StreamState* cached = loser_cache.find(stream_id)) return *cached;
      StreamState state = load_streams(work, {stream_id}, snapshots, snapshot_writer).at(stream_id);
      fold_written(stream_id, state);
      return state;
    });
    const StoreReader store = [&work]() -> pqxx::transaction_base& { return work; };
    Decided again;
    try {
      // Not `fresh`: the loser cache holds the system accounts only.
      again = loser_decider.decide(store, result.losers, /*fresh=*/false, working);
    } catch (const UnstorableCommand& error) {
      spdlog::warn("a command sent back by a conflict cannot be stored ({}); it runs on its own", error.what());
      return false;
    }
    std::unordered_set<std::string> system(system_streams.begin(), system_streams.end());
    for (const auto& row : again.rows) {
      result.loser_streams.push_back(row.stream_id);
      if (system.contains(row.stream_id)) result.unreliable_streams.push_back(row.stream_id);
    }
    for (auto& [stream_id, state] : working.streams()) {
      if (!system.contains(stream_id)) result.committed_states.emplace_back(stream_id, std::move(state));
    }
    // A replaced stream is not dropped as well.
    std::unordered_set<std::string_view> replaced;
    for (const auto& [stream_id, state] : result.committed_states) replaced.insert(stream_id);
    std::erase_if(result.unreliable_streams, [&](const std::string& id) { return replaced.contains(id); });
    // Decided under the head lock: what it read stays current until the commit.
    again.unwritten_reads.clear();
    result.decided_again = std::move(result.losers);
    result.losers.clear();
    result.decided_again_rows = std::move(again);
    return true;
  }

  // Losers of a batch that did not commit: they run again with it.
  static void give_back(std::vector<Pending>& batch, std::vector<Pending>& losers) {
    std::move(losers.begin(), losers.end(), std::back_inserter(batch));
    losers.clear();
  }

  // One try at deciding and appending the batch, in one transaction (the serial path). False
  // on a key conflict (nothing written); true with `losers` when only those were decided on
  // streams another writer moved. After a conflict (`fresh`), the head row is locked first: no
  // other appender can commit until this transaction ends, so what it reads stays current and
  // the retry cannot conflict again.
  bool attempt_batch(pqxx::connection& connection, std::vector<Pending>& batch, bool fresh,
                     std::vector<Pending>& losers) {
    const DecisionStart start = coherence.sync(cache);
    prepare_append(connection);
    end_abandoned_sessions(connection);
    pqxx::work work(connection);
    HeadLockTimes locked_at;
    if (fresh) {
      locked_at.asked = std::chrono::steady_clock::now();
      (void)lock_head(work);
      locked_at.taken = std::chrono::steady_clock::now();
    }
    domain::WorkingSet working([&](const std::string& stream_id) {
      if (!fresh) {
        if (const StreamState* cached = cache.find(stream_id)) return *cached;
      }
      return load_streams(work, {stream_id}, snapshots, snapshot_writer).at(stream_id);
    });
    const StoreReader store = [&work]() -> pqxx::transaction_base& { return work; };
    Decided decided = decider.decide(store, batch, fresh, working);
    const auto commit_started = std::chrono::steady_clock::now();
    Appended appended;
    try {
      appended = append_decided(work, batch, decided, start, nullptr, {}, fresh ? &locked_at : nullptr);
    } catch (const pqxx::in_doubt_error&) {
      for (const auto& [id, state] : working.streams()) cache.erase(id);
      throw;
    }
    if (!appended.committed) {
      for (const auto& [id, state] : working.streams()) cache.erase(id);
      return false;
    }
    // Committed: whatever happens next, the batch must not run again.
    try {
      for (const auto& stream_id : appended.unreliable_streams) {
        working.streams().erase(stream_id);
        cache.erase(stream_id);
      }
      remember_streams(working, decided.rows);
      answer(batch, decided.slots, decided.rows.size(), commit_started);
    } catch (const std::exception& error) {
      cache.clear();
      spdlog::error("after a batch committed: {}", error.what());
    }
    losers = std::move(appended.losers);
    return true;
  }

  // After a commit: each changed stream gets its last hash; every stream goes to the cache;
  // streams that passed a multiple of snapshot_every_events get a snapshot.
  void remember_streams(WorkingSet& working, const std::vector<RecordedEvent>& rows) {
    SnapshotWriter::remember_appended(snapshot_writer, working.streams(), rows);
    for (auto& [stream_id, state] : working.streams()) cache.put(stream_id, std::move(state));
  }

  // Completes every command of a committed (or refused) batch and counts it.
  // `commit` false: more commands of a commit whose batch was counted (decided again in it),
  // not counted as a batch of their own.
  void answer(std::vector<Pending>& batch, std::vector<Slot>& slots, std::size_t events,
              std::chrono::steady_clock::time_point commit_started, bool commit = true) {
    if (breaker.record_success()) spdlog::info("database circuit breaker closed: a batch committed");
    const auto latency_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                std::chrono::steady_clock::now() - commit_started)
                                .count();
    std::uint64_t accepted = 0;
    std::uint64_t rejected = 0;
    // Followers copy their leader's outcome before any outcome is moved into its answer.
    for (Slot& slot : slots) {
      if (slot.kind != Slot::Kind::follows) continue;
      slot.outcome = slots[slot.follows].outcome;
      slot.outcome.replayed = true;
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      Slot& slot = slots[i];
      (slot.outcome.accepted() ? accepted : rejected) += 1;
      if (!slot.outcome.accepted()) {
        logging::RequestIdScope scope(batch[i].command.context.request_id);
        spdlog::debug("command {} rejected: {} ({})", slot.outcome.command_id,
                      to_string(slot.outcome.code), slot.outcome.detail);
      }
      batch[i].completion(nullptr, std::move(slot.outcome));
    }
    std::lock_guard lock(stats_mutex);
    counters.commands += batch.size();
    counters.commands_accepted += accepted;
    counters.commands_rejected += rejected;
    counters.events += events;
    if (events > 0 && commit) {
      ++counters.batches;
      counters.commit_latency_seconds.observe(static_cast<double>(latency_us) / 1e6);
      counters.batch_commands.observe(static_cast<double>(batch.size()));
      push_bounded(counters.recent_commit_latency_us, static_cast<std::uint32_t>(latency_us));
      push_bounded(counters.recent_batch_commands, static_cast<std::uint32_t>(batch.size()));
    }
  }

  void answer_all_conflict(std::vector<Pending>& batch) {
    for (auto& pending : batch) {
      domain::CommandOutcome outcome;
      outcome.code = RejectionCode::version_conflict;
      outcome.detail = "the streams kept changing under concurrent writers; retry";
      outcome.command_id = pending.command.context.command_id;
      pending.completion(nullptr, std::move(outcome));
    }
  }

  static void reject_all(std::vector<Pending>& batch, RejectionCode code, const std::string& detail) {
    for (auto& pending : batch) {
      domain::CommandOutcome outcome;
      outcome.code = code;
      outcome.detail = detail;
      outcome.command_id = pending.command.context.command_id;
      pending.completion(nullptr, std::move(outcome));
    }
  }

  static void answer_outcome_unknown(std::vector<Pending>& batch, const std::string& reason) {
    for (auto& pending : batch) {
      pending.completion(std::make_exception_ptr(OutcomeUnknown(
                             "the outcome of the commit is unknown (" + reason +
                             "); retry with the same Idempotency-Key to learn it")),
                         domain::CommandOutcome{});
    }
  }

  static void fail_all_circuit_open(std::vector<Pending>& batch, std::chrono::milliseconds open_for) {
    for (auto& pending : batch) {
      pending.completion(std::make_exception_ptr(DatabaseCircuitOpen(
                             "the event store is failing (circuit breaker open); nothing was written", open_for)),
                         domain::CommandOutcome{});
    }
  }

  static void fail_all(std::vector<Pending>& batch, const std::string& reason) {
    for (auto& pending : batch) {
      pending.completion(
          std::make_exception_ptr(EngineUnavailable("the event store is unavailable: " + reason)),
          domain::CommandOutcome{});
    }
  }

  // ---- submission -----------------------------------------------------------------------

  void enqueue(Command command, Engine::Completion completion) {
    if (const auto open_for = breaker.refuse()) {
      throw DatabaseCircuitOpen("the event store is failing (circuit breaker open); nothing was written", *open_for);
    }
    Pending pending{std::move(command), std::move(completion)};
    {
      std::lock_guard lock(queue_mutex);
      if (stopping) throw EngineUnavailable("the engine is stopping");
      if (queue.size() >= settings.command_queue_commands_max) {
        throw EngineOverloaded("the command queue is full (" +
                               std::to_string(settings.command_queue_commands_max) + ")");
      }
      queue.push_back(std::move(pending));
    }
    queue_not_empty.notify_one();
  }

  void stop() {
    {
      std::lock_guard lock(queue_mutex);
      stopping = true;
    }
    queue_not_empty.notify_all();
    if (writer_thread.joinable()) writer_thread.join();
    {
      std::lock_guard lock(handoff_mutex);
      committer_stopping = true;
    }
    handoff_changed.notify_all();
    if (committer_thread.joinable()) committer_thread.join();
  }
};

Pipeline::Pipeline(const EngineSettings& settings, bool own_ids, db::ConnectionPool& pool,
                   UuidGenerator& uuids, SnapshotStore* snapshots, SnapshotWriter* snapshot_writer)
    : impl_(std::make_unique<Impl>(settings, own_ids, pool, uuids, snapshots, snapshot_writer)) {}

Pipeline::~Pipeline() { impl_->stop(); }

void Pipeline::submit(domain::Command command, Engine::Completion completion) {
  impl_->enqueue(std::move(command), std::move(completion));
}

void Pipeline::stop() { impl_->stop(); }

EngineStats Pipeline::stats() const {
  EngineStats stats;
  {
    std::lock_guard lock(impl_->stats_mutex);
    stats = impl_->counters;
  }
  {
    std::lock_guard lock(impl_->queue_mutex);
    stats.queued = impl_->queue.size();
  }
  stats.circuit = impl_->breaker.state();
  stats.circuit_opened = impl_->breaker.times_opened();
  const auto cache = impl_->cache.counts();
  stats.cache_streams = cache.streams;
  stats.cache_streams_max = cache.streams_max;
  stats.cache_hits = cache.hits;
  stats.cache_misses = cache.misses;
  stats.cache_breakdown = cache.breakdown;
  return stats;
}

}  // namespace ledger::engine
