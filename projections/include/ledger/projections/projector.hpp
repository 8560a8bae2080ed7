#pragma once
// The projector runtime: one Kafka consumer group per projection; each process applies only
// the partitions Kafka assigns it, each batch in one PostgreSQL transaction with those
// partitions' watermarks and Kafka offsets (DESIGN.md inv. 8, projections/README.md).

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ledger/core/strong_type.hpp"

namespace ledger::db {
class ConnectionPool;
}

namespace ledger::projections {

// balance also keeps the statement (read.entries): both come from account streams.
enum class ProjectionKind { balance, audit, loan };

[[nodiscard]] std::string_view to_string(ProjectionKind kind);
[[nodiscard]] std::optional<ProjectionKind> projection_from_string(std::string_view name);
[[nodiscard]] const std::vector<ProjectionKind>& all_projections();

struct ProjectorSettings {
  std::string brokers;
  std::string topic = "ledger.events";
  std::string group_prefix = "ledger-projection-";  // consumer group: prefix + projection name
  std::size_t batch_events_max = 5'000;
  // Near the head, a round collects for at most batch_wait after its first message; it ends
  // sooner when a poll finds nothing more, unless batch_linger after the first message has not
  // passed yet (0: at the first empty poll).
  std::chrono::milliseconds batch_wait{5};
  std::chrono::milliseconds batch_linger{0};
  std::chrono::milliseconds fetch_wait_max{5};  // librdkafka fetch.wait.max.ms
  // Further behind the store's head than this, read the store in order instead of Kafka
  // (catching up); the head is read at most every head_check_interval.
  std::int64_t catch_up_events_min = 20'000;
  // While catching up, each round applies up to this many positions from the store (one
  // transaction): fewer rounds, and an account touched again within a round is written once.
  // 100,000 against 20,000, four alternated pairs: 56,900 to 69,200 events/s against 44,700
  // to 56,600 for one `project all`, peak RSS about 690 MiB against 310 (projections/README.md).
  std::size_t catch_up_batch_events_max = 100'000;
  std::chrono::milliseconds head_check_interval{200};
  // A position the store has but Kafka has not delivered for this long is read from the
  // event store (a dropped or lost message, a relay that is down).
  std::chrono::milliseconds gap_wait{1'000};
  // A process that dies without leaving the group keeps its partitions this long (Kafka's
  // session timeout); heartbeats go at a fifth of it.
  std::chrono::milliseconds session_timeout{10'000};
  // Account balances the balance projector keeps folded between rounds, so that a round reads
  // from the table only the accounts it lacks (about 250 bytes each; beyond this many it drops
  // them all and reads them again). 0: every round reads every account it touches.
  std::size_t states_kept = 200'000;
  std::map<std::string, std::string> kafka_properties;
};

struct ProjectorStatus {
  bool running = false;
  GlobalPosition watermark{0};
  std::int64_t events_applied = 0;     // since start
  std::int64_t events_from_store = 0;  // gaps filled by reading the event store
  std::int64_t store_rows_read = 0;    // rows of the event store read (position lists and events)
  std::int64_t ranges_read_ahead = 0;  // catch-up rounds whose range the round before read
  std::int64_t read_ahead_stale = 0;   // read ahead, then again: the store had changed
  std::int64_t ranges_shared = 0;      // catch-up rounds whose range another projector read
  std::int64_t ranges_applied_whole = 0;  // shared catch-up ranges applied as read, not copied
  std::int64_t duplicates_skipped = 0; // redelivered events at or below their partition's watermark
  std::int64_t batches = 0;
  std::string last_error;
  // Kafka messages whose event does not chain from the previous position's hash (forged or
  // corrupted): that position was read from the event store instead.
  std::int64_t messages_rejected = 0;
  // Kafka messages published under another incarnation of the event store than its current
  // one (the lost timeline of a point-in-time restore): skipped, never applied.
  std::int64_t messages_other_incarnation = 0;
  std::string incarnation;  // the store's incarnation this projector applies messages of
  // A position this projector cannot apply (0: none): it retries with backoff and reports the
  // projection as stalled, in read.projections, until it moves past it.
  GlobalPosition stalled_position{0};
  std::string stalled_reason;
  std::int64_t stalled_retries = 0;  // failed attempts since it stalled
  std::int32_t partitions = 0;            // of the events topic
  std::vector<std::int32_t> assigned;     // the partitions this process applies now
  std::int64_t gaps_detected = 0;         // envelopes whose previous_position was above the watermark
  std::int64_t markers_seen = 0;          // progress markers taken into account
};

// Catch-up reads of the event store shared by the projectors of one process: each range of a
// catch-up is read, and its hash chain checked, once for all of them (catch_up_reads.hpp).
class CatchUpReads;
[[nodiscard]] std::shared_ptr<CatchUpReads> make_catch_up_reads(const db::ConnectionPool& pool);

// Consumes the events topic on its own thread from start() to stop(). Survives database and
// Kafka outages by retrying; never skips a position. Applies a Kafka message only if it carries
// the stored event of its position, chaining from the stored hash before it
// (domain::chain_hash), and reads the store instead when it does not. Several processes of one
// projection share the partitions (one consumer group); `watermark` in the status is the
// minimum over all partitions, as read.projections holds it.
class Projector {
 public:
  // `shared_reads`: the same object for every projector of the process, or none.
  Projector(ProjectionKind kind, ProjectorSettings settings, db::ConnectionPool& pool,
            std::shared_ptr<CatchUpReads> shared_reads = nullptr);
  ~Projector();
  Projector(const Projector&) = delete;
  Projector& operator=(const Projector&) = delete;

  void start();
  void stop();
  [[nodiscard]] ProjectorStatus status() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ledger::projections
