#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "ledger/core/histogram.hpp"
#include "ledger/domain/commands.hpp"
#include "ledger/domain/state.hpp"
#include "ledger/engine/snapshot_stats.hpp"

namespace ledger::engine {

struct EngineSettings {
  std::string database_url;
  std::size_t database_connections = 4;
  std::chrono::milliseconds database_connect_timeout{5'000};
  std::chrono::milliseconds database_statement_timeout{30'000};

  // Group commit: a batch holds at most this many commands; the writer waits at most
  // commit_wait_max for more once one has arrived (0: take what is queued, no waiting).
  std::size_t append_batch_commands_max = 2'000;
  std::chrono::microseconds commit_wait_max{0};
  // Pipelining: decide the next commands while the previous batch is appended and committed (on
  // a second thread and connection); what is decided meanwhile is appended as one batch. Off:
  // one thread decides and appends each batch in turn.
  bool decide_while_committing = true;
  // Submissions beyond this many queued commands are refused (EngineOverloaded).
  std::size_t command_queue_commands_max = 100'000;
  // A batch that loses an optimistic-concurrency race is reloaded and re-decided this often (a
  // pipelined batch first gets its one decided-ahead try), then answered version_conflict.
  int conflict_retries_max = 5;
  // A batch whose connection fails is retried this often (with backoff) before failing.
  int connection_retries_max = 5;
  // Circuit breaker: a batch that failed after its retries opens it for circuit_open_initial
  // (doubled after each failed probe, up to circuit_open_max); meanwhile commands fail fast
  // with DatabaseCircuitOpen.
  std::chrono::milliseconds circuit_open_initial{1'000};
  std::chrono::milliseconds circuit_open_max{30'000};

  // In-memory state cache, in streams: an LRU of what is read again (accounts, loans, pending
  // holds), and settled transfers (posted, voided, expired) in at most an eighth of it.
  std::size_t state_cache_streams_max = 500'000;
  // RocksDB snapshot directory; empty disables snapshots.
  std::string snapshot_directory;
  // A snapshot is written each time a stream's version passes a multiple of this: a cold load
  // (after a restart or an eviction) of a stream only this engine appends to usually folds at
  // most this many events past it (a snapshot is only a cache: one dropped from a full queue or
  // lost in a crash costs a longer fold).
  std::int64_t snapshot_every_events = 16;
  std::size_t snapshot_queue_max = 10'000;

  // How often expired holds are looked for; 0 disables the sweeper.
  std::chrono::milliseconds expiry_sweep_interval{1'000};
  // Only the engine holding this PostgreSQL advisory lock (a session lock, on a connection of
  // the sweeper's own) sweeps; the others try to take it every expiry_sweep_interval. Distinct
  // from the relay's lock: the two duties are elected independently.
  std::int64_t expiry_sweep_lock_key = 0x6c65646765720002;

  // Seams for determinism: the clock (microseconds since the Unix epoch) and id generation.
  std::function<std::int64_t()> clock_us;
  std::function<std::string()> generate_id;
};

// The database stayed unreachable, or the engine is stopping: nothing was written.
class EngineUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The database circuit breaker is open: the last batch failed after all its connection retries,
// so commands fail fast for a while rather than wait for retries that would fail too. Nothing
// was written (HTTP 503 database_unavailable with Retry-After).
class DatabaseCircuitOpen : public EngineUnavailable {
 public:
  DatabaseCircuitOpen(const std::string& what, std::chrono::milliseconds retry_after)
      : EngineUnavailable(what), retry_after(retry_after) {}
  std::chrono::milliseconds retry_after;
};

// closed: commands go to the database; open: they fail fast; half_open: the next batch probes.
enum class CircuitState { closed, open, half_open };
[[nodiscard]] const char* to_string(CircuitState state);

// The commit's outcome could not be established: the command may or may not have been
// written. Retrying with the same Idempotency-Key resolves it (HTTP 503 outcome_unknown).
class OutcomeUnknown : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The command queue is full: nothing was written; retry later (HTTP 503).
class EngineOverloaded : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The hold-expiry sweeper of one engine. Several engines may share a database; one at a time
// (the leader) sweeps, the others stand by.
struct HoldExpiryStats {
  bool enabled = false;  // expiry_sweep_interval > 0
  bool leader = false;   // this engine holds the sweeper's lock and sweeps
  std::uint64_t leadership_acquired = 0;  // times this engine took the lock
  std::uint64_t leadership_lost = 0;      // times it lost the lock's connection while leading
  std::uint64_t sweeps = 0;               // sweeps this engine ran as leader
  std::uint64_t holds_expired = 0;        // ExpireHold commands of this engine that were accepted
};

// The kinds of stream the state cache counts its lookups by (stream id prefixes; "other" for
// anything else).
enum class StateCacheKind : std::uint8_t { account, transfer, loan, other };
inline constexpr std::size_t state_cache_kinds = 4;
[[nodiscard]] constexpr std::string_view to_string(StateCacheKind kind) {
  switch (kind) {
    case StateCacheKind::account: return "account";
    case StateCacheKind::transfer: return "transfer";
    case StateCacheKind::loan: return "loan";
    case StateCacheKind::other: return "other";
  }
  return "other";
}

struct StateCacheLookups {
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
};

// The state cache's counters beyond the totals.
struct StateCacheBreakdown {
  std::array<StateCacheLookups, state_cache_kinds> lookups{};  // indexed by StateCacheKind
  std::uint64_t settled_transfer_streams = 0;  // of cache_streams: posted, voided or expired
};

// Seconds the committed appends spent in the steps of their hold of the head row.
struct AppendStepSeconds {
  double rows = 0;
  double write = 0;
  double commit = 0;
};

struct EngineStats {
  std::uint64_t commands = 0;
  std::uint64_t commands_accepted = 0;
  std::uint64_t commands_rejected = 0;
  std::uint64_t batches = 0;
  std::uint64_t events = 0;
  std::uint64_t conflicts = 0;  // appends that found streams another writer had moved
  // Commands sent back to be decided again on fresh state by those conflicts (only the ones
  // whose streams moved; the rest of their batch was appended).
  std::uint64_t commands_redecided = 0;
  // Times the pipelined writer stopped deciding ahead, waiting for the batches in flight to
  // commit or running a batch the serial way: a failed batch or losers that cannot be stored to
  // run again, a key already in flight, the whole cache to drop, a batch naming streams the
  // batches in flight keep from being refreshed.
  std::uint64_t pipeline_stalls = 0;
  // Batches the committer gave back to the writer to run again the serial way (a failed or
  // voided batch; losers it could not decide again in their commit).
  std::uint64_t batches_run_again = 0;
  // Commits appended in one autocommit statement on the head this engine's last commit left (no
  // BEGIN, no lock of the head, no COMMIT of their own), and tries of one that found another
  // writer's commits first and wrote nothing (the batch then went in a transaction).
  std::uint64_t appends_on_own_head = 0;
  std::uint64_t appends_on_own_head_missed = 0;
  std::uint64_t queued = 0;
  CircuitState circuit = CircuitState::closed;
  std::uint64_t circuit_opened = 0;  // times the breaker opened
  // Every committed batch's commit latency and size.
  Histogram commit_latency_seconds{{0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5}};
  Histogram batch_commands{{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000}};
  // Every append serializes on the event store's head row: how long each committed append
  // waited for it (another writer's commit holds it) and then held it, through its COMMIT. An
  // append on the engine's own head waits and holds inside its one statement: all of that counts
  // as held, and a try that found the head moved counts as the next commit's wait.
  // Several serves on one store contend here; their sum of held times bounds their rate.
  Histogram head_lock_wait_seconds{{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1}};
  Histogram head_lock_held_seconds{{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1}};
  // Where the committed appends' hold of the head row went, summed over the holds
  // head_lock_held_seconds counts: hashing and encoding the rows (events, idempotency records,
  // expiries), the one statement that writes them and moves the head (the store's density
  // check included), and the COMMIT (its WAL flush; in an append on the engine's own head the
  // statement commits by itself, and `write` holds its commit too). The rest of the hold: the reads
  // and decisions under the lock when another writer moved the head (reconcile, losers decided
  // again), and, after a COMMIT in doubt that landed, the check that found it.
  AppendStepSeconds append_step_seconds;
  // The in-memory state cache (LRU, in streams) and the RocksDB snapshot cache behind it.
  std::uint64_t cache_streams = 0;
  std::uint64_t cache_streams_max = 0;
  std::uint64_t cache_hits = 0;
  std::uint64_t cache_misses = 0;
  StateCacheBreakdown cache_breakdown;  // lookups per stream kind (their sums are the totals)
  bool snapshots_enabled = false;
  SnapshotStats snapshots;
  // Commit latency of recent batches (microseconds), newest last; bounded.
  std::vector<std::uint32_t> recent_commit_latency_us;
  std::vector<std::uint32_t> recent_batch_commands;
  HoldExpiryStats hold_expiry;
};

// The write side. Commands are queued and a single writer thread decides and appends them in
// batches (group commit): one PostgreSQL transaction per batch. A future is fulfilled only
// after its batch committed (synchronous_commit on) or was refused. Several engines (threads or
// processes) may share one database: optimistic concurrency per stream keeps them correct.
// Thread-safe: submit from any thread.
class Engine {
 public:
  explicit Engine(EngineSettings settings);
  // Stops: drains the queue, flushes the last batch, joins its threads.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Called once per command on an engine thread: with the outcome, or with an error (then the
  // outcome is empty): EngineUnavailable (nothing was written) or OutcomeUnknown (it may have
  // been). Keep it short: post elsewhere.
  using Completion = std::function<void(std::exception_ptr error, domain::CommandOutcome outcome)>;

  // Throws EngineOverloaded when the queue is full, EngineUnavailable when stopping and
  // DatabaseCircuitOpen (an EngineUnavailable) while the breaker is open: nothing queued. The future
  // throws EngineUnavailable when the database could not be reached, OutcomeUnknown when the
  // commit's outcome could not be established.
  [[nodiscard]] std::future<domain::CommandOutcome> submit(domain::Command command);
  void submit(domain::Command command, Completion completion);
  [[nodiscard]] domain::CommandOutcome execute(domain::Command command);

  // Stops accepting, finishes everything queued. Idempotent.
  void stop();

  // The state of a stream folded from the event store (no cache): for tests and tools.
  [[nodiscard]] std::optional<domain::AccountState> read_account(const std::string& account_id);
  [[nodiscard]] std::optional<domain::TransferState> read_transfer(const std::string& transfer_id);
  [[nodiscard]] std::optional<domain::LoanState> read_loan(const std::string& loan_id);

  [[nodiscard]] EngineStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ledger::engine
