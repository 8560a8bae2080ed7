#include "ledger/engine/engine.hpp"

#include <openssl/evp.h>
#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "appender.hpp"
#include "circuit_breaker.hpp"
#include "ledger/core/assert.hpp"
#include "ledger/core/logging.hpp"
#include "ledger/core/utf8.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/db/retry.hpp"
#include "ledger/domain/decide.hpp"
#include "ledger/engine/snapshot_store.hpp"
#include "outcome_codec.hpp"
#include "state_cache.hpp"
#include "stream_loader.hpp"

namespace ledger::engine {

// The engine applies the domain's rules: its types are used unqualified here.
using namespace domain;  // NOLINT(google-build-using-namespace)

namespace {

constexpr std::size_t recent_samples_max = 65'536;
constexpr std::size_t expiry_sweep_batch_max = 500;
constexpr const char* expiry_actor = "engine:expiry";
// How long the in-doubt check waits for the session that sent the COMMIT to end.
constexpr std::chrono::seconds in_doubt_session_wait_max{5};
// The engine never idles inside a transaction for more than a decision's time, so a session
// idle that long lost its client (a commit in doubt the check could not end): the server ends
// it and releases the head row, which would otherwise stall every later append.
constexpr std::chrono::milliseconds engine_idle_in_transaction_timeout{10'000};

std::int64_t system_clock_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string sha256(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<const char*>(digest), length);
}

// Time-ordered UUIDv7 text (RFC 9562): 48 bits of Unix milliseconds, then randomness. Ordered
// ids keep the events' unique index growing at its right edge instead of at random pages.
class UuidGenerator {
 public:
  UuidGenerator() : random_(std::random_device{}()) {}
  std::string next() {
    std::lock_guard lock(mutex_);
    const auto millis = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::system_clock::now().time_since_epoch())
            .count());
    std::uint64_t high = (millis << 16) | (random_() & 0x0fffULL) | 0x7000ULL;  // version 7
    std::uint64_t low = (random_() & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant
    char text[37];
    std::snprintf(text, sizeof text, "%08x-%04x-%04x-%04x-%012llx",
                  static_cast<unsigned>(high >> 32), static_cast<unsigned>((high >> 16) & 0xffff),
                  static_cast<unsigned>(high & 0xffff), static_cast<unsigned>(low >> 48),
                  static_cast<unsigned long long>(low & 0xffffffffffffULL));
    return text;
  }

 private:
  std::mutex mutex_;
  std::mt19937_64 random_;
};

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

// A command whose events cannot be stored faithfully: an encoded event did not decode back to
// the same bytes. It is refused alone (its batch is split until it is), never appended.
class UnstorableCommand : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Metadata copied from a request into every event of its command must be text PostgreSQL
// stores (jsonb): valid UTF-8 without control characters, and short. The HTTP front checks its
// headers first; this check keeps one bad command from failing the batch it is in whatever
// the caller.
constexpr std::size_t metadata_field_bytes_max = 256;

bool is_storable_text(std::string_view text) {
  if (text.size() > metadata_field_bytes_max) return false;
  if (invalid_utf8_offset(text) != std::string_view::npos) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x20 || byte == 0x7f) return false;  // C0 controls and DEL
    // C1 controls, U+0080 to U+009F: 0xC2 followed by 0x80 to 0x9F.
    if (byte == 0xc2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) <= 0x9f) {
      return false;
    }
  }
  return true;
}

// The first context field that cannot be stored, by name; empty when all can.
std::string unstorable_context_field(const CommandContext& context) {
  const std::pair<const char*, const std::string*> fields[] = {
      {"actor", &context.actor},
      {"command_id", &context.command_id},
      {"correlation_id", &context.correlation_id},
      {"causation_id", &context.causation_id},
      {"request_id", &context.request_id},
      {"client_address", &context.client_address},
      {"idempotency_key", &context.idempotency_key}};
  for (const auto& [name, value] : fields) {
    if (!is_storable_text(*value)) return name;
  }
  return {};
}

template <typename T>
void push_bounded(std::vector<T>& samples, T value) {
  if (samples.size() >= recent_samples_max) samples.erase(samples.begin(), samples.begin() + recent_samples_max / 2);
  samples.push_back(value);
}

}  // namespace

struct Engine::Impl {
  struct Pending {
    Command command;
    Completion completion;
  };

  // The transaction a batch is decided in, opened by the first call: deciding on cached states
  // alone needs no round trip to the store.
  using StoreReader = std::function<pqxx::transaction_base&()>;

  // Per command of a batch: how it is answered.
  struct Slot {
    enum class Kind { decide, answered, follows } kind = Kind::decide;
    CommandOutcome outcome;    // answered (replay, reused key) or decided
    std::size_t follows = 0;   // same idempotency key as an earlier command of the batch
    std::string request_hash;  // SHA-256 of the fingerprint, when keyed
    std::size_t first_event = 0;
    std::size_t end_event = 0;
  };

  // What deciding a batch produced: the answers so far and the rows to append.
  struct Decided {
    std::vector<Slot> slots;
    std::vector<RecordedEvent> rows;
    std::vector<ExpiryRecord> expiries;
    bool keyed = false;  // holds idempotency records to store
    // When a command was refused or wrote nothing: the streams the batch read and does not
    // write, as read.
    std::vector<StreamRead> unwritten_reads;
  };

  explicit Impl(EngineSettings s)
      : settings(std::move(s)),
        pool(db::PoolSettings{settings.database_url, settings.database_connections,
                              settings.database_connect_timeout,
                              settings.database_statement_timeout, settings.database_connect_timeout,
                              engine_idle_in_transaction_timeout}),
        cache(settings.state_cache_streams_max) {
    if (!settings.clock_us) settings.clock_us = system_clock_us;
    if (!settings.generate_id) {
      settings.generate_id = [this] { return uuids.next(); };
      own_id_generator = true;  // UUIDv7: a generated id names no existing stream
    }
    if (!settings.snapshot_directory.empty()) {
      snapshots = std::make_unique<SnapshotStore>(settings.snapshot_directory);
      snapshot_thread = std::thread([this] { run_snapshot_writer(); });
    }
    writer_thread = std::thread([this] { run_writer(); });
    if (settings.decide_while_committing) committer_thread = std::thread([this] { run_committer(); });
    if (settings.expiry_sweep_interval.count() > 0) {
      expiry_thread = std::thread([this] { run_expiry_sweeper(); });
    }
  }

  EngineSettings settings;
  db::ConnectionPool pool;
  UuidGenerator uuids;
  std::unique_ptr<SnapshotStore> snapshots;
  StateCache cache;  // writer thread only

  std::mutex queue_mutex;
  std::condition_variable queue_not_empty;
  std::deque<Pending> queue;
  bool stopping = false;

  std::mutex snapshot_mutex;
  std::condition_variable snapshot_ready;
  std::deque<std::pair<std::string, domain::StreamState>> snapshot_queue;
  bool snapshot_stopping = false;

  std::mutex expiry_mutex;
  std::condition_variable expiry_wake;
  bool expiry_stopping = false;

  mutable std::mutex stats_mutex;
  EngineStats counters;
  CircuitBreaker breaker{settings.circuit_open_initial, settings.circuit_open_max};

  std::thread writer_thread;
  std::thread committer_thread;
  std::thread snapshot_thread;
  std::thread expiry_thread;

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
    assign_batch_ids(batch);
    const bool keyed = std::any_of(batch.begin(), batch.end(), [](const Pending& p) {
      return !p.command.context.idempotency_key.empty();
    });
    if (keyed) {
      // Keys are checked against the store: it must hold every earlier batch first.
      wait_committer_idle();
      if (redo_pending) recover();
      process_batch(batch);
      return;
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
    std::optional<db::ConnectionPool::Lease> lease;
    std::optional<pqxx::read_transaction> read;
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
        return load_streams(store(), {stream_id}, snapshots.get()).at(stream_id);
      });
      prepared.decided = decide_batch(store, batch, false, working);
      if (read) {
        read->commit();
        read.reset();
        lease.reset();
      }
      for (const auto& row : prepared.decided.rows) {
        prepared.changed.try_emplace(row.stream_id, working.streams().at(row.stream_id));
      }
      for (auto& [stream_id, state] : working.streams()) cache.put(stream_id, std::move(state));
    } catch (const std::exception& error) {
      read.reset();
      if (lease) lease->discard();
      lease.reset();
      // Deciding failed on the database: run the batch the serial way, which retries and
      // answers every command whatever happens.
      spdlog::warn("deciding a batch failed ({}); running it on its own", error.what());
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
      bool committed = false;
      bool answered = false;
      bool outcome_unknown = false;
      if (current) {
        const auto started = std::chrono::steady_clock::now();
        try {
          auto lease = pool.acquire();
          try {
            prepare_append(*lease);
            pqxx::work work(*lease);
            committed = append_decided(work, prepared.batch, prepared.decided);
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
        if (committed) {
          snapshot_changed(prepared.changed, prepared.decided.rows);
          answer(prepared.batch, prepared.decided.slots, prepared.decided.rows.size(), started);
          answered = true;
        }
      }
      {
        std::lock_guard lock(handoff_mutex);
        if (!answered) {
          if (current) {
            std::lock_guard stats(stats_mutex);
            ++counters.conflicts;
          }
          ++generation;
          redo.push_back(std::move(prepared.batch));
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
      if (!answered || outcome_unknown) {
        { std::lock_guard wake(queue_mutex); }
        queue_not_empty.notify_all();
      }
    }
  }

  void wait_committer_idle() {
    std::unique_lock lock(handoff_mutex);
    handoff_changed.wait(lock, [&] { return !handoff.has_value() && !committer_busy; });
  }

  // Runs the batches the committer gave back, in order, on a clean cache.
  void recover() {
    wait_committer_idle();
    std::vector<std::vector<Pending>> batches;
    {
      std::lock_guard lock(handoff_mutex);
      batches.swap(redo);
      redo_pending = false;
    }
    cache.clear();
    for (auto& batch : batches) process_batch(batch);
  }

  // Fills empty ids. Streams named by ids the engine generated cannot exist yet: they are
  // remembered so that nobody looks them up.
  void assign_batch_ids(std::vector<Pending>& batch) {
    generated_streams.clear();
    const auto generate = [this] {
      std::string id = settings.generate_id();
      if (own_id_generator) {
        generated_streams.insert(domain::account_stream(id));
        generated_streams.insert(domain::transfer_stream(id));
      }
      return id;
    };
    for (auto& pending : batch) {
      domain::assign_ids(pending.command.body, generate);
      if (pending.command.context.command_id.empty()) {
        pending.command.context.command_id = uuids.next();
      }
    }
  }

  // The serial path: decides and appends `batch` in one transaction, retrying conflicts and
  // transient errors, and answers every command.
  void process_batch(std::vector<Pending>& batch) {
    assign_batch_ids(batch);
    int conflicts = 0;
    int connection_failures = 0;
    bool fresh = false;  // after a conflict, read streams from the store, not the cache
    while (true) {
      try {
        auto lease = pool.acquire();
        try {
          if (attempt_batch(*lease, batch, fresh)) return;
          // Lost an optimistic-concurrency race: reload and decide again.
          ++conflicts;
          {
            std::lock_guard lock(stats_mutex);
            ++counters.conflicts;
          }
          if (conflicts > settings.conflict_retries_max) {
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

  bool own_id_generator = false;

  // A decided batch on its way from the writer to the committer.
  struct Prepared {
    std::vector<Pending> batch;
    Decided decided;
    std::unordered_map<std::string, domain::StreamState> changed;  // copies, for snapshots
    std::uint64_t generation = 0;

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
      std::move(later.decided.expiries.begin(), later.decided.expiries.end(),
                std::back_inserter(decided.expiries));
      decided.keyed = decided.keyed || later.decided.keyed;
      std::move(later.decided.unwritten_reads.begin(), later.decided.unwritten_reads.end(),
                std::back_inserter(decided.unwritten_reads));
      for (auto& [stream_id, state] : later.changed) changed.insert_or_assign(stream_id, std::move(state));
    }
  };
  std::mutex handoff_mutex;
  std::condition_variable handoff_changed;
  std::optional<Prepared> handoff;  // at most one batch waits for the committer
  bool committer_busy = false;
  bool committer_stopping = false;
  std::uint64_t generation = 0;  // bumped when a batch fails: later decisions are void
  std::vector<std::vector<Pending>> redo;
  std::atomic<bool> redo_pending{false};
  std::unordered_set<std::string> generated_streams;  // writer thread only

  // Whether a batch whose commit outcome is unknown did commit: its first event is stored.
  // The session that sent the COMMIT (`backend_pid`) may still be running it, so it is
  // terminated and waited for first: asking before it is gone could answer "not committed"
  // for a commit that lands a moment later. std::nullopt when the store cannot be asked.
  std::optional<bool> committed_in_doubt(const std::string& first_event_id, int backend_pid) {
    for (int attempt = 0; attempt < settings.connection_retries_max; ++attempt) {
      try {
        auto lease = pool.acquire();
        if (backend_pid != 0 && backend_pid != lease->backendpid()) {
          pqxx::nontransaction session(*lease);
          session.exec_params(
              "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1", backend_pid);
          const auto deadline = std::chrono::steady_clock::now() + in_doubt_session_wait_max;
          while (!session.exec_params("SELECT 1 FROM pg_stat_activity WHERE pid = $1", backend_pid)
                      .empty()) {
            if (std::chrono::steady_clock::now() > deadline) {
              throw std::runtime_error("the session of the in-doubt commit (pid " +
                                       std::to_string(backend_pid) + ") is still running");
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
          }
        }
        pqxx::read_transaction work(*lease);
        return !work.exec_params("SELECT 1 FROM events WHERE event_id = $1::uuid", first_event_id)
                    .empty();
      } catch (const std::exception& error) {
        spdlog::warn("checking an in-doubt commit failed: {}", error.what());
        std::this_thread::sleep_for(std::chrono::milliseconds(200) * (attempt + 1));
      }
    }
    return std::nullopt;
  }


  // Phase one: idempotency, stream loads (cache, snapshots, store) and decisions, reading
  // through `store` when the cache does not have it; `working` ends holding every stream the
  // batch touched.
  Decided decide_batch(const StoreReader& store, std::vector<Pending>& batch, bool fresh,
                       WorkingSet& working) {
    Decided decided;
    decided.slots.resize(batch.size());
    auto& slots = decided.slots;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const std::string field = unstorable_context_field(batch[i].command.context);
      if (field.empty()) continue;
      slots[i].kind = Slot::Kind::answered;
      slots[i].outcome.code = RejectionCode::invalid_command;
      slots[i].outcome.detail = "the request's " + field +
                                " is not storable text (UTF-8 without control characters, at most " +
                                std::to_string(metadata_field_bytes_max) + " bytes)";
      slots[i].outcome.command_id = batch[i].command.context.command_id;
    }
    resolve_idempotency(store, batch, slots);

    // Load every stream the batch names (one query), then decide in order.
    std::vector<std::string> wanted;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (slots[i].kind == Slot::Kind::decide) domain::collect_streams(batch[i].command.body, wanted);
    }
    std::sort(wanted.begin(), wanted.end());
    wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
    std::vector<std::string> missing;
    for (const auto& id : wanted) {
      if (generated_streams.contains(id)) {
        working.put(id, empty_stream_state(id));
        continue;
      }
      const StreamState* cached = fresh ? nullptr : cache.find(id);
      if (cached != nullptr) {
        working.put(id, *cached);
      } else {
        missing.push_back(id);
      }
    }
    if (!missing.empty()) {
      for (auto& [id, state] : load_streams(store(), missing, snapshots.get())) {
        working.put(id, std::move(state));
      }
    }

    const std::int64_t now_us = settings.clock_us();
    const DecisionContext context{now_us};
    for (std::size_t i = 0; i < batch.size(); ++i) {
      Slot& slot = slots[i];
      if (slot.kind != Slot::Kind::decide) continue;
      slot.first_event = working.new_events().size();
      domain::Decision decision = domain::decide(batch[i].command.body, working, context);
      slot.end_event = working.new_events().size();
      slot.outcome.code = decision.code;
      slot.outcome.detail = std::move(decision.detail);
      slot.outcome.failed_member = decision.failed_member;
      slot.outcome.resource_ids = std::move(decision.resource_ids);
      slot.outcome.replayed = decision.replayed;  // a domain id that already had its effect
      slot.outcome.command_id = batch[i].command.context.command_id;
    }

    // A refusal, or an acceptance with nothing to do (a day close of a loan the cache holds as
    // not yet disbursed), writes nothing, so no version check would notice a stale state behind
    // it (another engine's write since this engine cached the stream): remember what was read.
    const bool wrote_nothing = std::any_of(slots.begin(), slots.end(), [](const Slot& slot) {
      return slot.kind == Slot::Kind::decide && (!slot.outcome.accepted() || slot.first_event == slot.end_event);
    });
    if (wrote_nothing) {
      std::unordered_set<std::string_view> written;
      for (const auto& event : working.new_events()) written.insert(event.stream_id);
      for (const auto& [stream_id, state] : working.streams()) {
        if (!written.contains(stream_id)) decided.unwritten_reads.push_back({stream_id, state.version.value()});
      }
    }

    // Turn the decided events into rows.
    const auto& new_events = working.new_events();
    decided.rows.resize(new_events.size());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const Slot& slot = slots[i];
      if (slot.kind != Slot::Kind::decide) continue;
      const CommandContext& ctx = batch[i].command.context;
      const EventMetadata metadata{ctx.actor,      ctx.command_id, ctx.correlation_id,
                                   ctx.causation_id, ctx.request_id, ctx.client_address};
      if (!ctx.idempotency_key.empty()) decided.keyed = true;
      for (std::size_t e = slot.first_event; e < slot.end_event; ++e) {
        RecordedEvent& row = decided.rows[e];
        row.stream_id = new_events[e].stream_id;
        row.version = new_events[e].version;
        row.event_id = uuids.next();
        row.type = std::string(domain::event_type(new_events[e].event));
        row.schema_version = domain::event_schema_version;
        row.payload = domain::encode_event(new_events[e].event);
        ensure_decodes_back(row);
        row.metadata = metadata;
        row.recorded_at_us = now_us;
        if (const auto* pending = std::get_if<domain::events::TransferPending>(&new_events[e].event)) {
          if (pending->expires_at_us != 0) {
            decided.expiries.push_back({pending->transfer_id, pending->expires_at_us});
          }
        }
      }
    }
    return decided;
  }

  // Invariant 11: an event is appended only if it decodes back to the very bytes encoded, so
  // every reader (folds, projectors, replay) can read it. Cheap next to the COPY.
  static void ensure_decodes_back(const RecordedEvent& row) {
    const auto decoded = domain::decode_event(row.type, row.payload);
    if (!decoded || domain::encode_event(*decoded) != row.payload) {
      throw UnstorableCommand("a " + row.type + " event of stream " + row.stream_id +
                              " does not decode back to what was encoded; the command is refused");
    }
  }

  // Phase two: appends and commits the decided rows in `work`. False on a version or key
  // conflict (nothing written). When the connection dies during COMMIT the store is asked
  // whether the batch landed: true if it did, the error again if it did not, and
  // EngineUnavailable when the store cannot tell (retrying could then append twice).
  bool append_decided(pqxx::work& work, std::vector<Pending>& batch, Decided& decided) {
    if (decided.rows.empty() && !decided.keyed && decided.unwritten_reads.empty()) return true;
    auto records_for = [&](GlobalPosition first) {
      fill_positions(decided.slots, decided.rows, first);
      std::vector<IdempotencyRecord> records;
      for (std::size_t i = 0; i < batch.size(); ++i) {
        const auto& ctx = batch[i].command.context;
        const Slot& slot = decided.slots[i];
        if (slot.kind != Slot::Kind::decide || ctx.idempotency_key.empty()) continue;
        records.push_back({ctx.actor, ctx.idempotency_key, slot.request_hash,
                           outcome_to_json(slot.outcome), slot.outcome.position.value()});
      }
      return records;
    };
    const int backend_pid = work.conn().backendpid();
    try {
      (void)append_batch(work, decided.rows, records_for, decided.expiries, decided.unwritten_reads);
    } catch (const AppendConflict& conflict) {
      spdlog::debug("append conflict, reloading: {}", conflict.what());
      return false;
    } catch (const pqxx::in_doubt_error& error) {
      spdlog::warn("commit outcome unknown ({}); checking the event store", error.what());
      if (decided.rows.empty()) {
        throw OutcomeUnknown("the connection was lost during the commit of idempotency records");
      }
      const auto committed = committed_in_doubt(decided.rows.front().event_id, backend_pid);
      if (!committed) {
        spdlog::error("the outcome of a commit of {} events is unknown: the event store could "
                      "not be reached to check it", decided.rows.size());
        throw OutcomeUnknown("the connection was lost during the commit and the event store "
                             "could not be reached to check whether it landed");
      }
      if (!*committed) throw;
      spdlog::info("the in-doubt batch did commit");
    }
    return true;
  }

  // One try at deciding and appending the batch, in one transaction (the serial path). False
  // on a version or key conflict. After a conflict (`fresh`), the head row is locked first: no
  // other appender can commit until this transaction ends, so what it reads stays current and
  // the retry cannot conflict again.
  bool attempt_batch(pqxx::connection& connection, std::vector<Pending>& batch, bool fresh) {
    prepare_append(connection);
    pqxx::work work(connection);
    if (fresh) work.exec("SELECT 1 FROM event_store_head FOR UPDATE");
    domain::WorkingSet working([&](const std::string& stream_id) {
      if (!fresh) {
        if (const StreamState* cached = cache.find(stream_id)) return *cached;
      }
      return load_streams(work, {stream_id}, snapshots.get()).at(stream_id);
    });
    const StoreReader store = [&work]() -> pqxx::transaction_base& { return work; };
    Decided decided = decide_batch(store, batch, fresh, working);
    const auto commit_started = std::chrono::steady_clock::now();
    bool appended = false;
    try {
      appended = append_decided(work, batch, decided);
    } catch (const pqxx::in_doubt_error&) {
      for (const auto& [id, state] : working.streams()) cache.erase(id);
      throw;
    }
    if (!appended) {
      for (const auto& [id, state] : working.streams()) cache.erase(id);
      return false;
    }
    // Committed: whatever happens next, the batch must not run again.
    try {
      remember_streams(working, decided.rows);
      answer(batch, decided.slots, decided.rows.size(), commit_started);
    } catch (const std::exception& error) {
      cache.clear();
      spdlog::error("after a batch committed: {}", error.what());
    }
    return true;
  }

  // Positions and versions of each decided command's outcome, from the batch's first position.
  static void fill_positions(std::vector<Slot>& slots, const std::vector<RecordedEvent>& rows,
                             GlobalPosition first) {
    for (Slot& slot : slots) {
      if (slot.kind != Slot::Kind::decide || slot.first_event == slot.end_event) continue;
      slot.outcome.position = GlobalPosition(first.value() + static_cast<std::int64_t>(slot.end_event) - 1);
      slot.outcome.versions.clear();
      for (std::size_t e = slot.first_event; e < slot.end_event; ++e) {
        auto existing = std::find_if(slot.outcome.versions.begin(), slot.outcome.versions.end(),
                                     [&](const auto& pair) { return pair.first == rows[e].stream_id; });
        if (existing != slot.outcome.versions.end()) {
          existing->second = rows[e].version;
        } else {
          slot.outcome.versions.emplace_back(rows[e].stream_id, rows[e].version);
        }
      }
    }
  }

  // After a commit: each changed stream gets its last hash; every stream goes to the cache;
  // streams that passed a multiple of snapshot_every_events get a snapshot.
  void remember_streams(WorkingSet& working, const std::vector<RecordedEvent>& rows) {
    snapshot_changed(working.streams(), rows);
    for (auto& [stream_id, state] : working.streams()) cache.put(stream_id, std::move(state));
  }

  template <typename Streams>
  void snapshot_changed(Streams& streams, const std::vector<RecordedEvent>& rows) {
    struct Appended {
      const RecordedEvent* last = nullptr;
      std::int64_t count = 0;
    };
    std::unordered_map<std::string_view, Appended> appended;
    appended.reserve(rows.size());
    for (const auto& row : rows) {
      auto& entry = appended[row.stream_id];
      entry.last = &row;
      ++entry.count;
    }
    for (auto& [stream_id, state] : streams) {
      auto changed = appended.find(stream_id);
      if (changed == appended.end()) continue;
      LEDGER_ASSERT(changed->second.last->version == state.version,
                    "decided states and appended rows disagree");
      state.last_hash = changed->second.last->hash;
      const std::int64_t every = settings.snapshot_every_events;
      const std::int64_t before = state.version.value() - changed->second.count;
      if (snapshots && every > 0 && state.version.value() / every != before / every) {
        enqueue_snapshot(stream_id, state);
      }
    }
  }

  // Completes every command of a committed (or refused) batch and counts it.
  void answer(std::vector<Pending>& batch, std::vector<Slot>& slots, std::size_t events,
              std::chrono::steady_clock::time_point commit_started) {
    if (breaker.record_success()) spdlog::info("database circuit breaker closed: a batch committed");
    const auto latency_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                std::chrono::steady_clock::now() - commit_started)
                                .count();
    std::uint64_t accepted = 0;
    std::uint64_t rejected = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      Slot& slot = slots[i];
      if (slot.kind == Slot::Kind::follows) {
        slot.outcome = slots[slot.follows].outcome;
        slot.outcome.replayed = true;
      }
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
    if (events > 0) {
      ++counters.batches;
      counters.commit_latency_seconds.observe(static_cast<double>(latency_us) / 1e6);
      counters.batch_commands.observe(static_cast<double>(batch.size()));
      push_bounded(counters.recent_commit_latency_us, static_cast<std::uint32_t>(latency_us));
      push_bounded(counters.recent_batch_commands, static_cast<std::uint32_t>(batch.size()));
    }
  }

  // Answers commands whose idempotency key was seen before (in the store or earlier in the batch).
  void resolve_idempotency(const StoreReader& store, std::vector<Pending>& batch,
                           std::vector<Slot>& slots) {
    // The keys of the batch, each once, looked up in the store together. A stored record
    // decides every command with its key; without one, the first command with the key does,
    // and the later ones follow it (same request) or are refused (another request).
    using Key = std::pair<std::string, std::string>;  // actor, key
    std::map<Key, std::vector<std::size_t>> with_key;  // in batch order
    std::string actors = "{";
    std::string keys = "{";
    auto append_text = [](std::string& array, const std::string& value) {
      if (array.size() > 1) array.push_back(',');
      array.push_back('"');
      for (char c : value) {
        if (c == '"' || c == '\\') array.push_back('\\');
        array.push_back(c);
      }
      array.push_back('"');
    };
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const auto& ctx = batch[i].command.context;
      if (ctx.idempotency_key.empty() || slots[i].kind != Slot::Kind::decide) continue;
      slots[i].request_hash = sha256(ctx.request_fingerprint);
      auto& commands = with_key[{ctx.actor, ctx.idempotency_key}];
      if (commands.empty()) {
        append_text(actors, ctx.actor);
        append_text(keys, ctx.idempotency_key);
      }
      commands.push_back(i);
    }
    if (with_key.empty()) return;
    actors.push_back('}');
    keys.push_back('}');
    const auto rows = store().exec_params(
        "SELECT k.actor, k.key, k.request_hash, k.outcome "
        "FROM unnest($1::text[], $2::text[]) AS w(actor, key) "
        "CROSS JOIN LATERAL (SELECT * FROM idempotency_keys "
        "  WHERE actor = w.actor AND key = w.key) k",
        actors, keys);
    for (const auto& row : rows) {
      auto found = with_key.find({row[0].as<std::string>(), row[1].as<std::string>()});
      if (found == with_key.end()) continue;
      const std::string stored_hash = pqxx::binarystring(row[2]).str();
      auto stored = outcome_from_json(pqxx::binarystring(row[3]).str());
      LEDGER_ASSERT(stored.has_value(), "stored idempotency outcome is not valid JSON");
      for (const std::size_t i : found->second) {
        if (stored_hash != slots[i].request_hash) {
          answer_key_reused(slots[i], batch[i]);
          continue;
        }
        slots[i].kind = Slot::Kind::answered;
        slots[i].outcome = *stored;
        slots[i].outcome.replayed = true;
      }
      with_key.erase(found);
    }
    for (const auto& [key, commands] : with_key) {
      const std::size_t first = commands.front();
      for (std::size_t k = 1; k < commands.size(); ++k) {
        const std::size_t i = commands[k];
        if (slots[i].request_hash == slots[first].request_hash) {
          slots[i].kind = Slot::Kind::follows;
          slots[i].follows = first;
        } else {
          answer_key_reused(slots[i], batch[i]);
        }
      }
    }
  }

  static void answer_key_reused(Slot& slot, const Pending& pending) {
    slot.kind = Slot::Kind::answered;
    slot.outcome = domain::CommandOutcome{};
    slot.outcome.code = RejectionCode::idempotency_key_reused;
    slot.outcome.detail = "idempotency key '" + pending.command.context.idempotency_key +
                          "' was used for a different request";
    slot.outcome.command_id = pending.command.context.command_id;
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

  // ---- snapshots ------------------------------------------------------------------------

  void enqueue_snapshot(const std::string& stream_id, const StreamState& state) {
    std::lock_guard lock(snapshot_mutex);
    if (snapshot_queue.size() >= settings.snapshot_queue_max) return;  // only a cache
    snapshot_queue.emplace_back(stream_id, state);
    snapshot_ready.notify_one();
  }

  void run_snapshot_writer() {
    while (true) {
      std::pair<std::string, domain::StreamState> item;
      {
        std::unique_lock lock(snapshot_mutex);
        snapshot_ready.wait(lock, [&] { return snapshot_stopping || !snapshot_queue.empty(); });
        if (snapshot_queue.empty()) return;
        item = std::move(snapshot_queue.front());
        snapshot_queue.pop_front();
      }
      snapshots->put(item.first, item.second);
    }
  }

  // ---- hold expiry ----------------------------------------------------------------------

  void run_expiry_sweeper() {
    while (true) {
      {
        std::unique_lock lock(expiry_mutex);
        if (expiry_wake.wait_for(lock, settings.expiry_sweep_interval, [&] { return expiry_stopping; })) {
          return;
        }
      }
      try {
        sweep_expired_holds();
      } catch (const std::exception& error) {
        spdlog::warn("expiry sweep failed (will retry): {}", error.what());
      }
    }
  }

  void sweep_expired_holds() {
    std::vector<std::string> due;
    {
      auto lease = pool.acquire();
      pqxx::read_transaction work(*lease);
      const auto rows = work.exec_params(
          "SELECT transfer_id FROM pending_expiries "
          "WHERE expires_at <= 'epoch'::timestamptz + $1 * interval '1 microsecond' "
          "ORDER BY expires_at LIMIT $2",
          settings.clock_us(), static_cast<long long>(expiry_sweep_batch_max));
      for (const auto& row : rows) due.push_back(row[0].as<std::string>());
    }
    if (due.empty()) return;
    std::vector<std::future<domain::CommandOutcome>> outcomes;
    for (const auto& id : due) {
      domain::Command command{domain::SingleCommand{domain::ExpireHold{id}}, domain::CommandContext{}};
      command.context.actor = expiry_actor;
      outcomes.push_back(enqueue(std::move(command)));
    }
    std::string done = "{";
    for (std::size_t i = 0; i < due.size(); ++i) {
      const CommandOutcome outcome = outcomes[i].get();
      if (outcome.accepted() || outcome.code == RejectionCode::transfer_not_pending ||
          outcome.code == RejectionCode::unknown_transfer) {
        if (done.size() > 1) done.push_back(',');
        done += "\"" + due[i] + "\"";
      }
    }
    done.push_back('}');
    auto lease = pool.acquire();
    pqxx::work work(*lease);
    work.exec_params("DELETE FROM pending_expiries WHERE transfer_id = ANY($1::text[])", done);
    work.commit();
  }

  // ---- submission -----------------------------------------------------------------------

  std::future<domain::CommandOutcome> enqueue(Command command) {
    auto promise = std::make_shared<std::promise<domain::CommandOutcome>>();
    auto future = promise->get_future();
    enqueue(std::move(command), [promise](const std::exception_ptr& error, CommandOutcome outcome) {
      if (error) {
        promise->set_exception(error);
      } else {
        promise->set_value(std::move(outcome));
      }
    });
    return future;
  }

  void enqueue(Command command, Completion completion) {
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
      std::lock_guard lock(expiry_mutex);
      expiry_stopping = true;
    }
    expiry_wake.notify_all();
    if (expiry_thread.joinable()) expiry_thread.join();
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
    {
      std::lock_guard lock(snapshot_mutex);
      snapshot_stopping = true;
    }
    snapshot_ready.notify_all();
    if (snapshot_thread.joinable()) snapshot_thread.join();
    snapshots.reset();  // releases the RocksDB directory
  }

  template <typename State>
  std::optional<State> read_state(const std::string& stream_id) {
    auto lease = pool.acquire();
    pqxx::read_transaction work(*lease);
    auto states = load_streams(work, {stream_id}, nullptr);
    auto& state = states.at(stream_id);
    const auto& aggregate = std::get<State>(state.aggregate);
    if (!aggregate.exists) return std::nullopt;
    return aggregate;
  }
};

Engine::Engine(EngineSettings settings) : impl_(std::make_unique<Impl>(std::move(settings))) {}

Engine::~Engine() { impl_->stop(); }

std::future<domain::CommandOutcome> Engine::submit(domain::Command command) {
  return impl_->enqueue(std::move(command));
}

void Engine::submit(domain::Command command, Completion completion) {
  impl_->enqueue(std::move(command), std::move(completion));
}

CommandOutcome Engine::execute(Command command) { return submit(std::move(command)).get(); }

void Engine::stop() { impl_->stop(); }

std::optional<domain::AccountState> Engine::read_account(const std::string& account_id) {
  return impl_->read_state<domain::AccountState>(domain::account_stream(account_id));
}

std::optional<domain::LoanState> Engine::read_loan(const std::string& loan_id) {
  return impl_->read_state<domain::LoanState>(domain::loan_stream(loan_id));
}

std::optional<domain::TransferState> Engine::read_transfer(const std::string& transfer_id) {
  return impl_->read_state<domain::TransferState>(domain::transfer_stream(transfer_id));
}

const char* to_string(CircuitState state) {
  switch (state) {
    case CircuitState::closed: return "closed";
    case CircuitState::open: return "open";
    case CircuitState::half_open: return "half_open";
  }
  return "closed";
}

EngineStats Engine::stats() const {
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
  stats.snapshots_enabled = impl_->snapshots != nullptr;
  if (impl_->snapshots) stats.snapshots = impl_->snapshots->stats();
  return stats;
}

}  // namespace ledger::engine
