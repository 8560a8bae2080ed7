#include "ledger/projections/projector.hpp"

#include <librdkafka/rdkafka.h>
#include <malloc.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <future>
#include <limits>
#include <map>
#include <pqxx/pqxx>
#include <set>
#include <span>
#include <unordered_map>

#include "catch_up_reads.hpp"
#include "ledger/core/assert.hpp"
#include "ledger/core/worker.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/db/prepared.hpp"
#include "ledger/db/retry.hpp"
#include "ledger/db/sql_text.hpp"
#include "ledger/domain/envelope.hpp"
#include "ledger/engine/event_store.hpp"
#include "ledger/projections/projection.hpp"
#include "stored_range.hpp"

namespace ledger::projections {

namespace {

using Clock = std::chrono::steady_clock;
using domain::RecordedEvent;

// Where the batch's messages came from: the next offset to consume, per partition.
using PartitionOffsets = std::map<std::int32_t, std::int64_t>;

// One message of an assigned partition, decoded: an event, or a progress marker (no event;
// `position` is what it covers).
struct Message {
  std::int64_t position = 0;
  std::int64_t previous = 0;  // previous_position: the event sent to the partition before
  std::optional<RecordedEvent> event;
};
using PartitionMessages = std::map<std::int32_t, std::vector<Message>>;

// How long reading the topic's partition count may take.
constexpr int metadata_timeout_ms = 10'000;
// The longest batch_linger accepted (`ledger project --batch-linger-ms` allows up to 1 s), and
// the longest single poll while a round lingers.
constexpr auto batch_linger_max = std::chrono::milliseconds(60'000);
constexpr auto linger_poll_max = std::chrono::milliseconds(100);
// The store's positions, partitions and hashes are read this many rows a query.
constexpr std::int64_t stored_range_rows = 20'000;
// Events read from the store for a gap or a catch-up, at most this many a query.
constexpr std::int64_t store_read_events_max = 10'000;
// A read model whose watermarks were split over another partition count waits for a rebuild;
// it checks again after this pause.
constexpr auto partition_mismatch_retry_pause = std::chrono::milliseconds(5'000);

// The topic's partition count differs from the one the read model's watermarks are split by.
class PartitionCountChanged : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A position the projector cannot apply is retried after this pause, doubled on each failure
// up to the maximum: a fixed version deployed later applies it, and a stall costs little.
constexpr auto stalled_retry_backoff_initial = std::chrono::milliseconds(500);
constexpr auto stalled_retry_backoff_max = std::chrono::milliseconds(30'000);
// The pause after a failure the database or Kafka caused (the next attempt may succeed).
constexpr auto transient_retry_pause = std::chrono::milliseconds(500);
// A stall's reason as shown by /health (unauthenticated): the first line of the error, cut.
constexpr std::size_t stalled_reason_bytes_max = 300;

// Errors after which the same batch may succeed as it is: the database went away, a conflict,
// or a commit whose outcome is unknown (the watermark is read again). Anything else, retried
// as it is, fails again: the projector looks for the position that causes it.
bool transient(const std::exception& error) {
  return db::is_transient(error) || dynamic_cast<const pqxx::in_doubt_error*>(&error) != nullptr ||
         dynamic_cast<const db::DatabaseUnavailable*>(&error) != nullptr;
}

std::string stalled_reason(const std::exception& error) {
  std::string reason = error.what();
  if (const auto line_end = reason.find('\n'); line_end != std::string::npos) reason.resize(line_end);
  if (reason.size() > stalled_reason_bytes_max) {
    std::size_t cut = stalled_reason_bytes_max;
    while (cut > 0 && (static_cast<unsigned char>(reason[cut]) & 0xC0) == 0x80) --cut;  // UTF-8 boundary
    reason.resize(cut);
  }
  return reason;
}

// The statements of every round (apply), prepared once per session: sent with parameters
// instead, PostgreSQL parsed and planned each one on every round (issue 18).
namespace statements {

// The partitions' rows, locked in partition order: two processes never wait on each other.
// With each row's xmin: the transaction that wrote it (kept_at).
constexpr db::Statement lock_partition_watermarks{
    "ledger_projector_lock_partition_watermarks",
    "SELECT partition, position, xmin::text::bigint FROM read.partition_watermarks "
    "WHERE projection = $1 AND partition = ANY($2::int[]) ORDER BY partition FOR UPDATE"};

constexpr db::Statement store_head{"ledger_projector_store_head",
                                   "SELECT position FROM event_store_head"};

constexpr db::Statement stored_hash{"ledger_projector_stored_hash",
                                    "SELECT hash FROM events WHERE position = $1"};

constexpr db::Statement stored_range{
    "ledger_projector_stored_range",
    "SELECT position, stream_id, hash FROM events WHERE position > $1 AND position <= $2 "
    "ORDER BY position"};

// Every partition's next offset in one statement (unnest of partitions and offsets).
constexpr db::Statement store_offsets{
    "ledger_projector_store_offsets",
    "INSERT INTO read.kafka_offsets (projection, topic, partition, next_offset) "
    "SELECT $1, $2, o.partition, o.next_offset "
    "FROM unnest($3::int[], $4::bigint[]) AS o(partition, next_offset) "
    "ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = excluded.next_offset"};

// Every moved partition's watermark in one statement (their rows are locked already).
constexpr db::Statement move_partition_watermarks{
    "ledger_projector_move_partition_watermarks",
    "UPDATE read.partition_watermarks w SET position = m.position, updated_at = now() "
    "FROM unnest($2::int[], $3::bigint[]) AS m(partition, position) "
    "WHERE w.projection = $1 AND w.partition = m.partition "
    "RETURNING w.partition, w.xmin::text::bigint"};

constexpr db::Statement lock_projection{
    "ledger_projector_lock_projection",
    "SELECT 1 FROM read.projections WHERE name = $1 FOR UPDATE"};

// The read model's watermark: the lowest of its partitions'; a stall it passed is cleared.
constexpr db::Statement raise_watermark{
    "ledger_projector_raise_watermark",
    "WITH lowest AS (SELECT min(position) AS position FROM read.partition_watermarks "
    "WHERE projection = $1) "
    "UPDATE read.projections SET watermark = greatest(watermark, lowest.position), "
    "applied = applied + $2, updated_at = now(), "
    "incarnation = coalesce(nullif($3, '')::uuid, incarnation), "
    "stalled_reason = CASE WHEN stalled_position <= lowest.position OR stalled_position = $4 "
    "THEN NULL ELSE stalled_reason END, "
    "stalled_since = CASE WHEN stalled_position <= lowest.position OR stalled_position = $4 "
    "THEN NULL ELSE stalled_since END, "
    "stalled_position = CASE WHEN stalled_position <= lowest.position OR stalled_position = $4 "
    "THEN NULL ELSE stalled_position END "
    "FROM lowest WHERE name = $1 RETURNING watermark"};

}  // namespace statements

}  // namespace

std::string_view to_string(ProjectionKind kind) {
  switch (kind) {
    case ProjectionKind::balance: return "balance";
    case ProjectionKind::audit: return "audit";
    case ProjectionKind::loan: return "loan";
  }
  return "unknown";
}

std::optional<ProjectionKind> projection_from_string(std::string_view name) {
  for (const auto kind : all_projections()) {
    if (to_string(kind) == name) return kind;
  }
  return std::nullopt;
}

const std::vector<ProjectionKind>& all_projections() {
  static const std::vector<ProjectionKind> kinds = {ProjectionKind::balance, ProjectionKind::audit,
                                                    ProjectionKind::loan};
  return kinds;
}

struct Projector::Impl {
  Impl(ProjectionKind k, ProjectorSettings s, db::ConnectionPool& p,
       std::shared_ptr<CatchUpReads> shared)
      : kind(k),
        name(to_string(k)),
        settings(std::move(s)),
        pool(p),
        store(p),
        projection(make_projection(k, "read", {.states_kept = settings.states_kept})),
        shared_reads(std::move(shared)) {
    if (settings.batch_linger < std::chrono::milliseconds(0) ||
        settings.batch_linger > batch_linger_max) {
      throw std::invalid_argument("projector " + name + ": batch_linger must be 0 to " +
                                  std::to_string(batch_linger_max.count()) + " ms");
    }
  }

  ProjectionKind kind;
  std::string name;
  ProjectorSettings settings;
  db::ConnectionPool& pool;
  engine::EventStore store;
  std::unique_ptr<Projection> projection;
  rd_kafka_t* consumer = nullptr;

  // The events topic's partition count (read when the consumer is created), whether the
  // read model's watermarks are split by it (read.partition_watermarks), the partitions Kafka
  // assigned to this process (kept by on_rebalance, on this thread), and the last watermark
  // known per partition: committed here, or read after an assignment or a failure. The row
  // lock in apply() reads the true one; these only choose what to read.
  std::int32_t partitions = 0;
  bool partitions_ready = false;
  std::set<std::int32_t> assigned;
  bool refresh_watermarks = true;
  std::map<std::int32_t, std::int64_t> watermarks;
  // Each partition's row in read.partition_watermarks as this process's last commit left it:
  // what the projection kept (WriterOptions::states_kept) is the table's rows there. A round
  // that finds a partition's row otherwise (another position: another process moved it, or a
  // crash lost the commit; another xmin, the transaction that wrote the row: a rebuild split
  // the partitions again, maybe at the same position, or another process moved it and a
  // restore took it back) has the projection forget what it kept first. Partitions missing
  // here have nothing kept.
  struct PartitionRow {
    std::int64_t position = 0;
    std::int64_t written_by = 0;  // xmin
  };
  std::map<std::int32_t, PartitionRow> kept_at;

  // The positions the last apply() tried, when it failed.
  struct Attempt {
    std::int64_t from = 0;
    std::int64_t through = 0;
  };
  std::optional<Attempt> failed_attempt;
  // After a batch of several positions failed (not transiently), apply one position at a time
  // up to here, to find the position that fails.
  std::int64_t single_step_through = 0;
  struct Stall {
    std::int64_t position = 0;
    std::string reason;
    bool recorded = false;  // written to read.projections
  };
  std::optional<Stall> stall;
  std::chrono::milliseconds stall_backoff = stalled_retry_backoff_initial;
  // The store's incarnation, read at start and again when a message names another one (a
  // bump while running); messages of any other are skipped. Empty until read.
  std::string incarnation;
  // Skipped messages in a row, logged once when the run starts and once when it ends, and
  // the incarnation last skipped (another one is checked against the store again).
  std::int64_t other_incarnation_run = 0;
  std::string skipped_incarnation;

  SharedStatus<ProjectorStatus> state;
  StoppableThread worker;  // last: it stops before the members it uses go

  ~Impl() {
    if (consumer != nullptr) {
      rd_kafka_consumer_close(consumer);
      rd_kafka_destroy(consumer);
    }
  }

  template <typename F>
  void update_status(F&& change) {
    state.update(std::forward<F>(change));
  }

  void pause(std::chrono::milliseconds duration) { worker.pause(duration); }

  // On assignment the consumer starts from the offsets stored with the read model, so what
  // Kafka's own group offsets say never matters. Runs on the projector's thread (inside
  // rd_kafka_consumer_poll): the assigned set changes between rounds, never during apply().
  static void on_rebalance(rd_kafka_t* handle, rd_kafka_resp_err_t error,
                           rd_kafka_topic_partition_list_t* partitions, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    self->refresh_watermarks = true;
    if (error != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      self->assigned.clear();
      self->publish_assignment();
      rd_kafka_assign(handle, nullptr);
      return;
    }
    try {
      auto lease = self->pool.acquire();
      pqxx::read_transaction work(*lease);
      const auto rows = work.exec_params(
          "SELECT partition, next_offset FROM read.kafka_offsets WHERE projection = $1 AND topic = $2",
          self->name, self->settings.topic);
      std::map<std::int32_t, std::int64_t> stored;
      for (const auto& row : rows) stored[row[0].as<std::int32_t>()] = row[1].as<std::int64_t>();
      for (int i = 0; i < partitions->cnt; ++i) {
        auto& partition = partitions->elems[i];
        const auto found = stored.find(partition.partition);
        partition.offset = found == stored.end() ? RD_KAFKA_OFFSET_BEGINNING : found->second;
      }
    } catch (const std::exception& failure) {
      // Without the stored offsets, start from the beginning: the watermarks skip repeats.
      spdlog::warn("projector {}: reading stored offsets failed ({}); reading from the start",
                   self->name, failure.what());
      for (int i = 0; i < partitions->cnt; ++i) partitions->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    self->assigned.clear();
    for (int i = 0; i < partitions->cnt; ++i) self->assigned.insert(partitions->elems[i].partition);
    self->publish_assignment();
    rd_kafka_assign(handle, partitions);
  }

  void publish_assignment() {
    update_status([&](ProjectorStatus& s) { s.assigned.assign(assigned.begin(), assigned.end()); });
  }

  // The events topic's partition count as the brokers report it.
  std::int32_t read_partition_count() {
    rd_kafka_topic_t* topic = rd_kafka_topic_new(consumer, settings.topic.c_str(), nullptr);
    const rd_kafka_metadata_t* metadata = nullptr;
    const auto error = rd_kafka_metadata(consumer, 0, topic, &metadata, metadata_timeout_ms);
    rd_kafka_topic_destroy(topic);
    if (error != RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw std::runtime_error("reading the partitions of topic " + settings.topic + ": " + rd_kafka_err2str(error));
    }
    std::int32_t count = 0;
    for (int i = 0; i < metadata->topic_cnt; ++i) {
      if (settings.topic == metadata->topics[i].topic && metadata->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        count = metadata->topics[i].partition_cnt;
      }
    }
    rd_kafka_metadata_destroy(metadata);
    if (count < 1) throw std::runtime_error("topic " + settings.topic + " does not exist (yet)");
    return count;
  }

  void create_consumer() {
    char error[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    auto set = [&](const std::string& key, const std::string& value) {
      if (rd_kafka_conf_set(conf, key.c_str(), value.c_str(), error, sizeof error) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        throw std::runtime_error("Kafka consumer setting " + key + ": " + error);
      }
    };
    set("bootstrap.servers", settings.brokers);
    set("group.id", settings.group_prefix + name);
    set("enable.auto.commit", "false");
    set("enable.auto.offset.store", "false");
    set("auto.offset.reset", "earliest");
    set("log_level", "3");
    // Read models should trail the log by milliseconds: do not let a fetch idle long on the
    // broker (the development broker answers a fetch only when this runs out).
    set("fetch.wait.max.ms", std::to_string(settings.fetch_wait_max.count()));
    // Prefetch per partition (librdkafka's defaults hold 100,000 messages each): bounds memory.
    set("queued.max.messages.kbytes", "16384");
    set("queued.min.messages", "20000");
    // A projector killed without leaving its group holds its partitions until the session
    // times out; a restarted one waits that long for them. Kafka's default is 45 s.
    set("session.timeout.ms", std::to_string(settings.session_timeout.count()));
    set("heartbeat.interval.ms", std::to_string(std::max<std::int64_t>(settings.session_timeout.count() / 5, 100)));
    for (const auto& [key, value] : settings.kafka_properties) set(key, value);
    rd_kafka_conf_set_rebalance_cb(conf, &Impl::on_rebalance);
    rd_kafka_conf_set_opaque(conf, this);
    consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, error, sizeof error);
    if (consumer == nullptr) throw std::runtime_error(std::string("Kafka consumer: ") + error);
    rd_kafka_poll_set_consumer(consumer);
    partitions = read_partition_count();
    update_status([&](ProjectorStatus& s) { s.partitions = partitions; });
    rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, settings.topic.c_str(), RD_KAFKA_PARTITION_UA);
    const auto subscribed = rd_kafka_subscribe(consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (subscribed != RD_KAFKA_RESP_ERR_NO_ERROR) {
      throw std::runtime_error(std::string("Kafka subscribe: ") + rd_kafka_err2str(subscribed));
    }
  }

  // Splits the read model's watermark into one per partition the first time (each starts at
  // the single watermark: every event at or below it is applied, none above), and checks that
  // a split made earlier used the topic's partition count.
  void ensure_partitions() {
    auto lease = pool.acquire();
    pqxx::work work(*lease);
    const auto row = work.exec_params1(
        "SELECT watermark, partitions FROM read.projections WHERE name = $1 FOR UPDATE", name);
    const auto watermark = row[0].as<std::int64_t>();
    if (row[1].is_null()) {
      work.exec_params("UPDATE read.projections SET partitions = $2 WHERE name = $1", name, partitions);
      work.exec_params(
          "INSERT INTO read.partition_watermarks (projection, partition, position) "
          "SELECT $1, p, $2 FROM generate_series(0, $3 - 1) AS p ON CONFLICT DO NOTHING",
          name, watermark, partitions);
      spdlog::info("projector {}: watermark {} split over the {} partitions of {}", name, watermark, partitions,
                   settings.topic);
    } else if (row[1].as<std::int32_t>() != partitions) {
      throw PartitionCountChanged(
          "topic " + settings.topic + " has " + std::to_string(partitions) + " partitions, but the " + name +
          " read model's watermarks are split over " + row[1].as<std::string>() +
          ": streams moved between partitions; run `ledger rebuild " + name + "` (it splits them again)");
    }
    work.commit();
    partitions_ready = true;
  }

  // The watermark of every partition, and a stall recorded earlier (by this process or one
  // before it), so moving past it is logged.
  void read_watermarks() {
    auto lease = pool.acquire();
    pqxx::read_transaction work(*lease);
    watermarks.clear();
    for (const auto& row : work.exec_params(
             "SELECT partition, position FROM read.partition_watermarks WHERE projection = $1", name)) {
      watermarks[row[0].as<std::int32_t>()] = row[1].as<std::int64_t>();
    }
    const auto row = work.exec_params1(
        "SELECT watermark, stalled_position, coalesce(stalled_reason, '') FROM read.projections WHERE name = $1",
        name);
    const auto watermark = row[0].as<std::int64_t>();
    if (!stall && !row[1].is_null() && row[1].as<std::int64_t>() > watermark) {
      stall = Stall{row[1].as<std::int64_t>(), row[2].as<std::string>(), true};
      update_status([&](ProjectorStatus& s) {
        s.stalled_position = GlobalPosition(stall->position);
        s.stalled_reason = stall->reason;
      });
    }
    update_status([&](ProjectorStatus& s) { s.watermark = GlobalPosition(watermark); });
    refresh_watermarks = false;
  }

  // The lowest watermark of the partitions assigned here (none assigned: nothing to do).
  [[nodiscard]] std::optional<std::int64_t> lowest_assigned() const {
    std::optional<std::int64_t> lowest;
    for (const auto partition : assigned) {
      const auto found = watermarks.find(partition);
      const std::int64_t watermark = found == watermarks.end() ? 0 : found->second;
      if (!lowest || watermark < *lowest) lowest = watermark;
    }
    return lowest;
  }

  [[nodiscard]] std::int64_t watermark_of(std::int32_t partition) const {
    const auto found = watermarks.find(partition);
    return found == watermarks.end() ? 0 : found->second;
  }

  // The store's current incarnation, read again (at start, and when a message names another).
  void read_incarnation() {
    auto lease = pool.acquire();
    pqxx::read_transaction work(*lease);
    const auto current = work.exec("SELECT id::text FROM store_incarnation")[0][0].as<std::string>();
    if (current != incarnation) {
      if (!incarnation.empty()) {
        spdlog::warn("projector {}: the event store's incarnation changed from {} to {}; messages of {} are "
                     "skipped from now on",
                     name, incarnation, current, incarnation);
        forget_kept();  // folded on the timeline left behind
      }
      incarnation = current;
      update_status([&](ProjectorStatus& s) { s.incarnation = current; });
    }
  }

  // Whether a message published under an incarnation belongs to the store's current one. A
  // message of another one comes from a timeline a point-in-time restore left behind (or the
  // store was given a new incarnation meanwhile: read once more when one appears).
  bool of_current_incarnation(const std::string& id) {
    if (id == incarnation) return true;
    if (id != skipped_incarnation) {
      read_incarnation();
      if (id == incarnation) return true;
      skipped_incarnation = id;
    }
    if (other_incarnation_run == 0) {
      spdlog::warn("projector {}: skipping messages of incarnation {} (the event store's is {}): published "
                   "before a restore, their positions may name other events now; the event store fills what "
                   "they leave out",
                   name, id, incarnation);
    }
    ++other_incarnation_run;
    return false;
  }

  void end_other_incarnation_run() {
    if (other_incarnation_run == 0) return;
    spdlog::info("projector {}: skipped {} message(s) of another incarnation", name, other_incarnation_run);
    other_incarnation_run = 0;
  }

  struct Collected {
    std::size_t messages = 0;            // seen, decoded or not
    std::int64_t other_incarnation = 0;  // skipped: published under another incarnation
    std::int64_t rejected = 0;           // undecodable events or garbled markers
  };

  // Collects up to batch_events_max messages into `incoming` per partition: the first within
  // first_wait_ms, then what follows within batch_wait of it (first_wait_ms 0: only what is
  // already fetched). Near the head the round ends as soon as a poll finds nothing more, or,
  // with a batch_linger, once nothing more came within that long of the first message: a
  // round costs about a dozen statements and a commit whatever it holds, and lingering trades
  // lag for fewer rounds (projections/README.md, "Rounds under load"). With `skip_events`
  // (catching up from the store) nothing is decoded: Kafka's copies are dropped, their
  // offsets kept.
  Collected collect(PartitionMessages& incoming, PartitionOffsets& offsets, int first_wait_ms, bool skip_events) {
    Collected collected;
    const auto started = Clock::now();
    Clock::time_point window_end;  // batch_wait after the first message: the round ends
    Clock::time_point linger_end;  // batch_linger after it: an empty poll ends the round
    int wait_ms = first_wait_ms;
    while (collected.messages < settings.batch_events_max && !worker.stopping()) {
      rd_kafka_message_t* message = rd_kafka_consumer_poll(consumer, wait_ms);
      const auto now = Clock::now();
      if (message == nullptr) {
        if (first_wait_ms == 0) break;
        if (collected.messages > 0 ? now >= linger_end : now - started >= settings.batch_wait)
          break;
      } else {
        if (message->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
          if (collected.messages == 0) {
            window_end = now + std::max(settings.batch_wait, settings.batch_linger);
            linger_end = now + settings.batch_linger;
          }
          ++collected.messages;
          offsets[message->partition] = message->offset + 1;
          if (!skip_events) decode(message, incoming, collected);
        } else if (message->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
          update_status(
              [&](ProjectorStatus& s) { s.last_error = rd_kafka_message_errstr(message); });
        }
        rd_kafka_message_destroy(message);
        if (collected.messages > 0 && now >= window_end) break;
      }
      if (collected.messages == 0) {
        wait_ms = first_wait_ms;
      } else if (first_wait_ms == 0) {
        wait_ms = 1;
      } else {
        // What is left of the linger, rounded up: at least 1 ms (a poll of 0 would spin), at most
        // linger_poll_max (a stop is seen between polls).
        const auto rest = std::chrono::ceil<std::chrono::milliseconds>(linger_end - now).count();
        wait_ms = static_cast<int>(std::clamp<std::int64_t>(rest, 1, linger_poll_max.count()));
      }
    }
    return collected;
  }

  // One message into `incoming`: an event, or a progress marker (the `ledger-progress`
  // header). Anything that decodes as neither is logged and left out: the store fills its
  // position, and a marker that cannot be read only delays an idle partition.
  void decode(const rd_kafka_message_t* message, PartitionMessages& incoming, Collected& collected) {
    const std::string_view payload{static_cast<const char*>(message->payload), message->len};
    if (has_header(message, domain::progress_marker_header)) {
      const auto marker = domain::decode_progress_marker(payload);
      if (!marker) {
        spdlog::warn("projector {}: a progress marker at partition {} offset {} does not decode; ignored", name,
                     message->partition, message->offset);
        ++collected.rejected;
        return;
      }
      if (marker->incarnation && !of_current_incarnation(marker->incarnation->id)) {
        ++collected.other_incarnation;
        return;
      }
      incoming[message->partition].push_back(
          Message{marker->through.value(), marker->previous_position.value(), std::nullopt});
      return;
    }
    auto decoded = domain::decode_envelope_with_incarnation(payload);
    if (!decoded) {
      spdlog::warn("projector {}: undecodable message at partition {} offset {}", name, message->partition,
                   message->offset);
      ++collected.rejected;
      return;
    }
    if (decoded->incarnation && !of_current_incarnation(decoded->incarnation->id)) {
      ++collected.other_incarnation;
      return;
    }
    end_other_incarnation_run();
    const auto position = decoded->event.position.value();
    incoming[message->partition].push_back(Message{position, decoded->previous_position, std::move(decoded->event)});
  }

  static bool has_header(const rd_kafka_message_t* message, const char* header) {
    rd_kafka_headers_t* headers = nullptr;
    if (rd_kafka_message_headers(message, &headers) != RD_KAFKA_RESP_ERR_NO_ERROR) return false;
    const void* value = nullptr;
    std::size_t size = 0;
    return rd_kafka_header_get_last(headers, header, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
  }

  // Rows of the event store read by the current round (status: store_rows_read).
  std::int64_t rows_read = 0;
  // Ranges read ahead that the current round read again (status: read_ahead_stale).
  std::int64_t read_ahead_stale = 0;
  // Whether the current round's range came from another projector's read (status: ranges_shared).
  bool range_shared = false;
  // The store's head as the last round's transaction read it.
  std::int64_t last_store_head = 0;

  // Catching up, a round's positions all come from the store: one binary COPY of the range, on
  // a connection of its own (engine::LogCopyReader), gives both the position list and the
  // events. Created on first use, dropped after a failure; `range_events` keeps its storage
  // until the catch-up ends (release_catch_up_readers).
  std::unique_ptr<engine::LogCopyReader> range_reader;
  std::vector<RecordedEvent> range_events;

  // Catching up, each round is otherwise a serial chain: read the store, write the read model,
  // commit; the read is a third of it (issue 18). So the next round's range is read ahead, on
  // a connection of its own, while this round writes and commits: one range only, and only
  // when the store held all of it at this round's head, so that the next round (which starts
  // at this one's target) asks for exactly it. Dropped when the next round asks for another
  // range or after any failure. Declared after what its thread uses: destroyed first, it waits.
  std::unique_ptr<engine::LogCopyReader> ahead_reader;
  std::vector<RecordedEvent> ahead_events;
  // A round read a range of the store while catching up (release_catch_up_readers frees it).
  bool catch_up_buffers_held = false;
  struct ReadAhead {  // no default member initializers: clang 14 then cannot emplace() it here
    std::int64_t low;
    std::int64_t high;
    std::int32_t partitions;
    std::future<StoredRange> range;  // its events in ahead_events
  };
  std::optional<ReadAhead> ahead;

  // With the other projectors of the process (`project all`): their catch-up reads, shared.
  // Replaces range_reader and the read ahead while catching up; the current round's range is
  // `shared_range`, whose events are copied, not moved, as the others use them too.
  std::shared_ptr<CatchUpReads> shared_reads;
  std::shared_ptr<const SharedRange> shared_range;

  // What the store holds for positions [low, high] (low > 0) or [1, high], read into
  // range_events in one COPY (or taken from the read ahead), and the StoredRange of (low, high]
  // made from it.
  StoredRange read_stored_events(std::int64_t low, std::int64_t high) {
    if (shared_reads) {
      try {
        auto taken = shared_reads->take(this, low, high, partitions);
        shared_range = std::move(taken.range);
        rows_read += taken.rows_read;
        range_shared = taken.read_for_another;
        return shared_range->stored;
      } catch (const ProjectionError& failure) {
        // A position missing or not chaining: read alone, each event checked as it is taken,
        // so that the round fails on the position itself and a stall names it.
        spdlog::debug("projector {}: the shared read of positions {} to {} failed: {}", name, low,
                      high, failure.what());
      }
    }
    return read_stored_events_alone(low, high);
  }

  // read_stored_events on this projector's own reader (or its read ahead).
  StoredRange read_stored_events_alone(std::int64_t low, std::int64_t high) {
    shared_range.reset();
    range_shared = false;
    if (auto range = take_read_ahead(low, high)) return std::move(*range);
    if (!range_reader) {
      range_reader =
          std::make_unique<engine::LogCopyReader>(pool, GlobalPosition(1), GlobalPosition(1));
    }
    range_reader->read_range(GlobalPosition(std::max<std::int64_t>(low, 1)), GlobalPosition(high),
                             range_events);
    rows_read += static_cast<std::int64_t>(range_events.size());
    return stored_range_of(low, high, range_events, partitions);
  }

  // Starts reading [high, high + catch-up span] ahead when the store held it all at `store_head`
  // and the round after this one will still be catching up.
  void start_read_ahead(std::int64_t high, std::int64_t store_head) {
    const std::int64_t span = catch_up_span();
    if (ahead || store_head - high < span || store_head - high <= settings.catch_up_events_min)
      return;
    if (shared_reads) {
      shared_reads->prefetch(this, high, high + span, partitions);
      return;
    }
    ahead.emplace();
    ahead->low = high;
    ahead->high = high + span;
    ahead->partitions = partitions;
    ahead->range =
        std::async(std::launch::async, [this, low = high, to = high + span, count = partitions] {
          if (!ahead_reader) {
            ahead_reader =
                std::make_unique<engine::LogCopyReader>(pool, GlobalPosition(1), GlobalPosition(1));
          }
          ahead_reader->read_range(GlobalPosition(std::max<std::int64_t>(low, 1)),
                                   GlobalPosition(to), ahead_events);
          StoredRange range = stored_range_of(low, to, ahead_events, count);
          check_chain(range, to, ahead_events);
          range.read_ahead = true;
          return range;
        });
  }

  // The range read ahead when it is [low, high] (its events moved into range_events); nothing
  // when there is none, it is another range, or reading it failed (read again by the caller,
  // which reports what is wrong, if anything still is).
  std::optional<StoredRange> take_read_ahead(std::int64_t low, std::int64_t high) {
    if (!ahead) return std::nullopt;
    ReadAhead taken = std::move(*ahead);
    ahead.reset();
    try {
      StoredRange range = taken.range.get();
      rows_read += static_cast<std::int64_t>(ahead_events.size());
      if (taken.low != low || taken.high != high || taken.partitions != partitions)
        return std::nullopt;
      std::swap(range_events, ahead_events);
      return range;
    } catch (const std::exception& failure) {
      ahead_reader.reset();  // its connection may be inside a COPY, or gone
      spdlog::debug("projector {}: reading positions {} to {} ahead failed: {}", name, taken.low,
                    taken.high, failure.what());
      return std::nullopt;
    }
  }

  // Waits for a read ahead in flight and forgets it (after a failure: what it read may be of a
  // store that has changed since, e.g. restored).
  void drop_read_ahead() {
    if (!ahead) return;
    (void)take_read_ahead(-1, -1);
    ahead_reader.reset();
  }

  // Near the head: the catch-up's two readers close their connections (they reconnect when a
  // catch-up starts again), and a range read ahead that no round took is dropped once read.
  void release_catch_up_readers() {
    shared_range.reset();
    if (shared_reads) shared_reads->leave(this);
    if (ahead) {
      if (ahead->range.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return;
      const std::int64_t round_rows = rows_read;
      drop_read_ahead();
      const std::int64_t dropped_rows = rows_read - round_rows;
      rows_read = round_rows;
      update_status([&](ProjectorStatus& s) { s.store_rows_read += dropped_rows; });
    }
    range_reader.reset();
    ahead_reader.reset();
    if (catch_up_buffers_held) {
      // The catch-up's ranges of catch_up_batch_events_max events (this projector's own two,
      // or the shared ones leave() just let go of): give their memory back to the system.
      // glibc keeps freed heap otherwise: a `project all` that caught up with ranges of
      // 100,000 events stayed at 428 and 440 MiB of RSS near the head, 156 to 202 with this.
      range_events = {};
      ahead_events = {};
      catch_up_buffers_held = false;
      malloc_trim(0);
    }
  }

  [[nodiscard]] std::int64_t catch_up_span() const {
    return static_cast<std::int64_t>(
        std::max(settings.batch_events_max, settings.catch_up_batch_events_max));
  }

  StoredRange read_stored_range(pqxx::transaction_base& work, std::int64_t low, std::int64_t high) {
    StoredRange range;
    range.low = low;
    const auto size = static_cast<std::size_t>(high - low + 1);
    range.partition.assign(size, -1);
    range.hash.assign(size, std::string());
    if (low == 0) {
      range.hash[0] = domain::genesis_hash();
    } else {
      const auto rows = db::exec_statement(work, statements::stored_hash, low);
      if (rows.empty()) {
        throw ProjectionError("position " + std::to_string(low) + ", a partition watermark, is missing from the event store");
      }
      range.hash[0] = pqxx::binarystring(rows[0][0]).str();
    }
    std::int64_t expected = low + 1;
    for (std::int64_t from = low; from < high; from += stored_range_rows) {
      const std::int64_t to = std::min(high, from + stored_range_rows);
      for (const auto& row : db::exec_statement(work, statements::stored_range, from, to)) {
        const auto position = row[0].as<std::int64_t>();
        if (position != expected) break;
        const auto index = static_cast<std::size_t>(position - low);
        range.partition[index] = domain::partition_for_stream(row[1].as<std::string>(), partitions);
        range.hash[index] = pqxx::binarystring(row[2]).str();
        ++expected;
      }
      rows_read += expected - from - 1;
      if (expected != to + 1) {
        throw ProjectionError("position " + std::to_string(expected) + " is missing from the event store");
      }
    }
    return range;
  }

  // Moves each partition in `targets` (all assigned here) up to its target in one transaction:
  // locks the partitions' rows in read.partition_watermarks, lists from the store which
  // positions in (watermark, target] belong to each partition, applies for each one the Kafka
  // message that carries exactly the stored event (its stored hash, chaining from the stored
  // hash before it) or else the store's event, stores the batch's Kafka offsets, the new
  // partition watermarks and their minimum in read.projections. `single_step` applies only the
  // first such position. Returns whether any partition moved. A batch that fails is not
  // retried from memory: its positions come back from Kafka or the store. `catching_up`: no
  // message was kept, every position comes from the store (read_stored_events).
  bool apply(std::map<std::int32_t, std::int64_t> targets, PartitionMessages& incoming,
             const PartitionOffsets& offsets, bool single_step, bool catching_up) {
    auto lease = pool.acquire();
    try {
      pqxx::work work(*lease);
      // A read model is derived data: losing the last commits in a crash loses rows and
      // watermarks together (one transaction), and they are applied again. No fsync wait.
      work.exec("SET LOCAL synchronous_commit = off");
      rows_read = 0;
      read_ahead_stale = 0;
      db::ArrayLiteral list;
      for (const auto& [partition, target] : targets) list.add_number(partition);
      // The row lock keeps two processes (a rebalance in flight, a rebuild) from applying one
      // partition at once; rows are locked in partition order, so two never wait on each other.
      std::map<std::int32_t, std::int64_t> start;
      std::map<std::int32_t, PartitionRow> rows_after;  // as this round leaves them
      for (const auto& row :
           db::exec_statement(work, statements::lock_partition_watermarks, name, list.finish())) {
        start[row[0].as<std::int32_t>()] = row[1].as<std::int64_t>();
        rows_after[row[0].as<std::int32_t>()] = {row[1].as<std::int64_t>(),
                                                 row[2].as<std::int64_t>()};
      }
      if (start.size() != targets.size()) {
        partitions_ready = false;
        throw std::runtime_error("the partition watermarks of " + name + " are missing (a rebuild splits them again)");
      }
      for (const auto& [partition, row] : rows_after) {
        const auto kept = kept_at.find(partition);
        if (kept != kept_at.end() &&
            (kept->second.position != row.position || kept->second.written_by != row.written_by)) {
          forget_kept();
          break;
        }
      }
      // The relay publishes committed events only: a message beyond the head is not one of them.
      const std::int64_t store_head =
          db::exec_statement(work, statements::store_head).at(0)[0].as<std::int64_t>();
      // The store's range covers the partitions that move, (their lowest watermark, their
      // highest target]: a partition that stays (its watermark already at or beyond the
      // round's target, e.g. one that ran ahead on Kafka's messages) must not stretch it, or
      // every round of a catch-up reads, and holds, the store from the lowest watermark up to
      // that partition's (issue 18: rounds of 20,000 positions read 125,000).
      std::int64_t low = std::numeric_limits<std::int64_t>::max();
      std::int64_t high = 0;
      for (auto& [partition, target] : targets) {
        target = std::max(std::min(target, store_head), start[partition]);
        if (target == start[partition]) continue;
        low = std::min(low, start[partition]);
        high = std::max(high, target);
      }
      if (high == 0) {
        // Nothing moves (offsets only): an empty range at the lowest watermark.
        for (const auto& [partition, position] : start) low = std::min(low, position);
        high = low;
      }
      range_events.clear();
      shared_range.reset();
      range_shared = false;
      const bool one_read = catching_up && high > low;
      if (one_read) catch_up_buffers_held = true;
      StoredRange stored = one_read ? read_stored_events(low, high)
                                    : read_stored_range(work, low, std::max(low, high));
      if (stored.read_ahead) {
        // Read in another snapshot, maybe before a restore: this transaction's store must end
        // the range with the same hash (the range chains up to it), or it is read again now.
        const auto rows = db::exec_statement(work, statements::stored_hash, high);
        if (rows.empty() || pqxx::binarystring(rows[0][0]).str() != stored.hash_of(high)) {
          spdlog::warn(
              "projector {}: the store no longer ends positions {} to {} as read ahead; reading "
              "them again",
              name, low, high);
          range_events.clear();
          if (shared_reads) shared_reads->forget(low, high, partitions);
          stored = read_stored_events_alone(low, high);
          ++read_ahead_stale;
        }
      }
      const bool used_read_ahead = stored.read_ahead;
      if (one_read) start_read_ahead(high, store_head);
      last_store_head = store_head;

      // Per partition, the positions of its streams in (watermark, target], in order.
      std::map<std::int32_t, std::vector<std::int64_t>> expected;
      std::int64_t first_expected = std::numeric_limits<std::int64_t>::max();
      for (const auto& [partition, target] : targets) {
        auto& positions = expected[partition];
        for (std::int64_t position = start[partition] + 1; position <= target; ++position) {
          if (stored.partition_of(position) == partition) positions.push_back(position);
        }
        if (!positions.empty()) first_expected = std::min(first_expected, positions.front());
      }
      bool below_first = false;
      if (single_step && first_expected != std::numeric_limits<std::int64_t>::max()) {
        for (const auto& [partition, target] : targets) below_first |= start[partition] < first_expected - 1;
      }
      if (below_first) {
        // Looking for the position that fails, one position at a time: first every partition
        // moves up to just below it (none has a position of its own there), so that while the
        // position stalls the watermark says that everything before it is applied.
        for (auto& [partition, target] : targets) {
          expected[partition].clear();
          target = std::max(start[partition], std::min(target, first_expected - 1));
        }
        first_expected = std::numeric_limits<std::int64_t>::max();
      } else if (single_step && first_expected != std::numeric_limits<std::int64_t>::max()) {
        // Then only that one position, wherever it is. Every other partition has none of its
        // own below it, so each may move up to just below it.
        for (auto& [partition, target] : targets) {
          auto& positions = expected[partition];
          if (!positions.empty() && positions.front() == first_expected) {
            positions.resize(1);
            target = first_expected;
          } else {
            positions.clear();
            target = std::max(start[partition], std::min(target, first_expected - 1));
          }
        }
      }
      std::int64_t last_expected = 0;
      for (const auto& [partition, positions] : expected) {
        if (!positions.empty()) last_expected = std::max(last_expected, positions.back());
      }
      if (last_expected > 0) failed_attempt = Attempt{first_expected, last_expected};

      std::vector<RecordedEvent> to_apply;
      std::vector<std::int64_t> from_store;
      std::int64_t duplicates = 0;
      std::int64_t rejected = 0;
      std::int64_t gaps = 0;
      std::int64_t markers = 0;
      for (const auto& [partition, target] : targets) {
        const std::int64_t watermark = start[partition];
        std::unordered_map<std::int64_t, RecordedEvent*> offered;
        bool gap_reported = false;
        for (auto& message : incoming[partition]) {
          if (!message.event) {
            ++markers;
            if (message.position > store_head) {
              spdlog::warn("projector {}: a progress marker on partition {} names position {}, beyond the event "
                           "store's head {}; ignored", name, partition, message.position, store_head);
              ++rejected;
            }
            continue;
          }
          if (message.position <= watermark) {
            ++duplicates;  // another process, or a retry after a commit whose answer was lost
          } else if (message.position > store_head) {
            spdlog::warn("projector {}: a message names position {}, beyond the event store's head {}; ignored",
                         name, message.position, store_head);
            ++rejected;
          } else if (message.position <= target) {
            if (!gap_reported && message.previous > watermark) {
              ++gaps;  // the relay sent events of this partition that did not arrive: read below
              gap_reported = true;
            }
            if (!offered.emplace(message.position, &*message.event).second) ++duplicates;
          }
        }
        for (const auto position : expected[partition]) {
          const auto found = offered.find(position);
          if (found != offered.end()) {
            RecordedEvent& event = *found->second;
            offered.erase(found);
            // Only the stored event is applied: anything else on the topic (forged, corrupted,
            // from another log) is logged and replaced by the store's. A forger who recomputes
            // the hash to chain still does not have the stored one.
            if (event.hash == stored.hash_of(position) &&
                domain::chains_from(stored.hash_of(position - 1), event)) {
              to_apply.push_back(std::move(event));
              continue;
            }
            spdlog::warn("projector {}: the message for position {} (stream {}) is not the stored event (its hash "
                         "differs or does not chain); reading that position from the event store",
                         name, position, event.stream_id);
            ++rejected;
          }
          from_store.push_back(position);
        }
        // What is left names a position whose stream the store puts in another partition (or
        // beyond this round's target, after a single step): never applied from here.
        for (const auto& [position, event] : offered) {
          if (position <= target && stored.partition_of(position) != partition) {
            spdlog::warn("projector {}: the message for position {} arrived on partition {}, but its stream "
                         "belongs to partition {}; ignored", name, position, partition,
                         stored.partition_of(position));
            ++rejected;
          }
        }
      }
      // A catch-up round over a range shared with the process's other projectors that applies
      // every event of it (the process holds every partition) applies the range itself: a
      // copy of each event for each projector, then sorting the copies, was most of this
      // process's own CPU in a catch-up (issue 18).
      std::span<const RecordedEvent> shared_after_low;
      if (one_read && shared_range != nullptr) {
        const auto& events = shared_range->events;
        // The range holds the row at `low` too, for its hash: never applied.
        const std::size_t at_low =
            !events.empty() && events.front().position.value() <= low ? 1 : 0;
        shared_after_low = std::span<const RecordedEvent>(events).subspan(at_low);
      }
      const bool whole_shared_range = one_read && shared_range != nullptr && to_apply.empty() &&
                                      from_store.size() == shared_after_low.size();
      if (whole_shared_range) {
        check_inside(shared_after_low, from_store);
      } else if (one_read) {
        take_from_range(from_store, stored, to_apply);
      } else {
        read_from_store(from_store, stored, to_apply);
      }
      if (!whole_shared_range) {
        std::sort(
            to_apply.begin(), to_apply.end(),
            [](const RecordedEvent& a, const RecordedEvent& b) { return a.position < b.position; });
      }
      const std::span<const RecordedEvent> applied =
          whole_shared_range ? shared_after_low : std::span<const RecordedEvent>(to_apply);
      // Applied positions are exactly each partition's stored positions after its watermark,
      // in order: a hole would be a read model that never converges, a repeat an amount
      // counted twice.
      {
        std::size_t total = 0;
        for (const auto& [partition, positions] : expected) total += positions.size();
        LEDGER_ASSERT(applied.size() == total,
                      "projector: every position of a partition applied once");
        std::map<std::int32_t, std::int64_t> last = start;
        for (const auto& event : applied) {
          auto& previous = last[stored.partition_of(event.position.value())];
          LEDGER_ASSERT(event.position.value() > previous, "projector: positions applied in order after the watermark");
          previous = event.position.value();
        }
      }
      projection->apply(work, applied);
      projection->flush(work);
      if (!offsets.empty()) {
        db::ArrayLiteral offset_partitions;
        db::ArrayLiteral next_offsets;
        for (const auto& [partition, next_offset] : offsets) {
          offset_partitions.add_number(partition);
          next_offsets.add_number(next_offset);
        }
        db::exec_statement(work, statements::store_offsets, name, settings.topic,
                           offset_partitions.finish(), next_offsets.finish());
      }
      db::ArrayLiteral moved_partitions;
      db::ArrayLiteral moved_to;
      bool moved = false;
      // A stall (of this process or another) ends when the partition holding it moves past it.
      std::int64_t passed_stall = 0;
      for (const auto& [partition, target] : targets) {
        if (target == start[partition]) continue;
        moved = true;
        moved_partitions.add_number(partition);
        moved_to.add_number(target);
        if (stall && stall->position > start[partition] && stall->position <= target &&
            stall->position <= high && stall->position > low && stored.partition_of(stall->position) == partition) {
          passed_stall = stall->position;
        }
      }
      std::int64_t watermark = -1;
      if (moved) {
        for (const auto& row : db::exec_statement(work, statements::move_partition_watermarks, name,
                                                  moved_partitions.finish(), moved_to.finish())) {
          rows_after[row[0].as<std::int32_t>()].written_by = row[1].as<std::int64_t>();
        }
        // Last in the transaction: every process of this projection updates this one row, so it
        // is held only for the commit. The lock is taken before the minimum is read, in a
        // statement of its own: every transaction that moved a partition before holds it until
        // its commit, so the next statement's snapshot sees all of them. (Read in the UPDATE's
        // own snapshot, two processes committing at once could each miss the other's partition
        // and leave the minimum behind until the next batch, forever when idle.)
        db::exec_statement(work, statements::lock_projection, name);
        watermark =
            db::exec_statement(work, statements::raise_watermark, name,
                               static_cast<std::int64_t>(applied.size()), incarnation, passed_stall)
                .at(0)[0]
                .as<std::int64_t>();
      }
      work.commit();
      failed_attempt.reset();
      for (const auto& [partition, target] : targets) {
        watermarks[partition] = target;
        kept_at[partition] = {target, rows_after[partition].written_by};
      }
      update_status([&](ProjectorStatus& s) {
        if (watermark >= 0) s.watermark = GlobalPosition(watermark);
        s.events_applied += static_cast<std::int64_t>(applied.size());
        s.events_from_store += static_cast<std::int64_t>(from_store.size());
        s.store_rows_read += rows_read;
        if (used_read_ahead && !shared_range) ++s.ranges_read_ahead;
        if (range_shared) ++s.ranges_shared;
        if (whole_shared_range) ++s.ranges_applied_whole;
        s.read_ahead_stale += read_ahead_stale;
        s.duplicates_skipped += duplicates;
        s.messages_rejected += rejected;
        s.gaps_detected += gaps;
        s.markers_seen += markers;
        ++s.batches;
      });
      if (stall && (passed_stall == stall->position || (watermark >= 0 && watermark >= stall->position))) {
        spdlog::info("projector {}: moved past position {}; no longer stalled", name, stall->position);
        stall.reset();
        stall_backoff = stalled_retry_backoff_initial;
        update_status([](ProjectorStatus& s) {
          s.stalled_position = GlobalPosition(0);
          s.stalled_reason.clear();
          s.stalled_retries = 0;
        });
      }
      return moved;
    } catch (...) {
      forget_kept();  // maybe written in a transaction that did not commit
      lease.discard();
      range_reader.reset();  // its connection may be inside a COPY, or gone
      drop_read_ahead();
      shared_range.reset();
      throw;
    }
  }

  void forget_kept() {
    projection->forget_kept();
    kept_at.clear();
  }

  // The store's events at `positions` (ascending), appended to `out`, each checked against the
  // range read in the same transaction: one that does not chain means an altered store.
  void read_from_store(const std::vector<std::int64_t>& positions, const StoredRange& stored,
                       std::vector<RecordedEvent>& out) {
    std::vector<std::int64_t> wanted = positions;
    std::sort(wanted.begin(), wanted.end());
    std::size_t next = 0;
    while (next < wanted.size()) {
      const std::int64_t from = wanted[next];
      const std::int64_t span = std::min<std::int64_t>(wanted.back() - from + 1, store_read_events_max);
      auto events = store.read_all(GlobalPosition(from), static_cast<std::size_t>(span));
      rows_read += static_cast<std::int64_t>(events.size());
      if (events.empty() || events.front().position.value() != from) {
        throw ProjectionError("position " + std::to_string(from) + " is missing from the event store");
      }
      for (auto& event : events) {
        if (next >= wanted.size()) break;
        const std::int64_t position = event.position.value();
        if (position != wanted[next]) continue;
        if (event.hash != stored.hash_of(position) ||
            !domain::chains_from(stored.hash_of(position - 1), event)) {
          throw ProjectionError("position " + std::to_string(position) +
                                " of the event store does not chain from the position before it (an altered "
                                "store: run ledger replay verify, then rebuild the projection)");
        }
        out.push_back(std::move(event));
        ++next;
      }
      if (next < wanted.size() && wanted[next] <= from + span - 1) {
        throw ProjectionError("position " + std::to_string(wanted[next]) + " is missing from the event store");
      }
    }
  }

  // Every one of `positions` (distinct, as each partition's are) is the position of one of
  // `events` (contiguous): as many of them as there are events are then all of them.
  static void check_inside(std::span<const RecordedEvent> events,
                           const std::vector<std::int64_t>& positions) {
    const std::int64_t first = events.empty() ? 0 : events.front().position.value();
    for (const auto position : positions) {
      LEDGER_ASSERT(
          position >= first && position - first < static_cast<std::int64_t>(events.size()),
          "projector: a position taken from the range read is inside it");
    }
  }

  // The events at `positions` (ascending, all inside the range read_stored_events read) moved
  // from range_events (copied from a shared range) to `out`, each checked to chain from the
  // stored hash before it (a range read ahead or shared was checked whole when it was read).
  void take_from_range(const std::vector<std::int64_t>& positions, const StoredRange& stored,
                       std::vector<RecordedEvent>& out) {
    const bool shared = shared_range != nullptr;
    const auto& events = shared ? shared_range->events : range_events;
    const std::int64_t first = events.empty() ? 0 : events.front().position.value();
    out.reserve(out.size() + positions.size());
    for (const auto position : positions) {
      LEDGER_ASSERT(position >= first && position - first < static_cast<std::int64_t>(events.size()),
                    "projector: a position taken from the range read is inside it");
      const auto index = static_cast<std::size_t>(position - first);
      const RecordedEvent& event = events[index];
      if (!stored.read_ahead && !domain::chains_from(stored.hash_of(position - 1), event)) {
        throw ProjectionError("position " + std::to_string(position) +
                              " of the event store does not chain from the position before it (an altered "
                              "store: run ledger replay verify, then rebuild the projection)");
      }
      if (shared) {
        out.push_back(event);
      } else {
        out.push_back(std::move(range_events[index]));
      }
    }
  }

  // Reports that `position` cannot be applied: one log line when the stall starts or moves,
  // the state in read.projections for /health of every process (written until it succeeds).
  void stalled_at(std::int64_t position, const std::string& reason) {
    if (!stall || stall->position != position) {
      spdlog::error("projector {}: stalled at position {}: {}; retrying with backoff (up to {} s) until it applies",
                    name, position, reason,
                    std::chrono::duration_cast<std::chrono::seconds>(stalled_retry_backoff_max).count());
      stall = Stall{position, reason, false};
      stall_backoff = stalled_retry_backoff_initial;
      update_status([&](ProjectorStatus& s) {
        s.stalled_position = GlobalPosition(position);
        s.stalled_retries = 0;
      });
    } else {
      if (stall->reason != reason) stall->recorded = false;
      stall->reason = reason;
      spdlog::debug("projector {}: still stalled at position {}: {}", name, position, reason);
      update_status([](ProjectorStatus& s) { ++s.stalled_retries; });
    }
    update_status([&](ProjectorStatus& s) { s.stalled_reason = reason; });
    if (stall->recorded) return;
    try {
      auto lease = pool.acquire();
      pqxx::work work(*lease);
      work.exec_params(
          "UPDATE read.projections SET stalled_since = CASE WHEN stalled_position IS DISTINCT FROM $2 "
          "THEN now() ELSE stalled_since END, stalled_position = $2, stalled_reason = $3 "
          "WHERE name = $1 AND watermark < $2",
          name, position, reason);
      work.commit();
      stall->recorded = true;
    } catch (const std::exception& failure) {
      spdlog::debug("projector {}: recording the stall failed: {}", name, failure.what());
    }
  }

  // After apply() failed: a failure the database or Kafka caused is retried as it is; any
  // other failure of several positions is narrowed down by applying them one at a time, and
  // the one position that fails alone stalls the projection.
  void handle_failure(const std::exception& error) {
    const auto attempt = failed_attempt;
    failed_attempt.reset();
    update_status([&](ProjectorStatus& s) { s.last_error = error.what(); });
    if (!attempt || transient(error)) {
      spdlog::warn("projector {}: {}; retrying", name, error.what());
      pause(transient_retry_pause);
      return;
    }
    if (attempt->through > attempt->from) {
      spdlog::info("projector {}: applying positions {} to {} failed ({}); applying them one at a time",
                   name, attempt->from, attempt->through, stalled_reason(error));
      single_step_through = std::max(single_step_through, attempt->through);
      return;
    }
    stalled_at(attempt->from, stalled_reason(error));
    pause(stall_backoff);
    stall_backoff = std::min(stall_backoff * 2, stalled_retry_backoff_max);
  }

  // Two ways in. Far behind the store's head (a backlog, a new or rebuilt projection, a
  // relay that was down) the projector reads the event store for its partitions in large
  // batches and drops what Kafka delivers meanwhile. Near the head it applies what Kafka
  // delivers, each assigned partition on its own: a partition's messages arrive in order,
  // so there is nothing to wait for; a gap within one (an envelope whose previous_position is
  // above the partition's watermark, or simply a position the store lists for the partition
  // and no message carried) is read from the store at once. Progress markers move an idle
  // partition's watermark; without them (a relay that is down) `gap_wait` of quiet reads the
  // store up to its head.
  void run() {
    update_status([](ProjectorStatus& s) { s.running = true; });
    PartitionMessages incoming;
    PartitionOffsets offsets;
    std::int64_t head = 0;
    auto head_read = Clock::time_point{};
    auto last_progress = Clock::now();
    // Without any partition assigned: each partition's watermark at the last look, and when.
    std::map<std::int32_t, std::int64_t> unassigned_seen;
    auto unassigned_looked = Clock::now();
    const auto span_max = static_cast<std::int64_t>(settings.batch_events_max);
    // Far behind, larger rounds (never below the near-head size).
    const auto catch_up_span_max = catch_up_span();
    while (!worker.stopping()) {
      try {
        if (consumer == nullptr) create_consumer();
        if (!partitions_ready) ensure_partitions();
        if (incarnation.empty()) read_incarnation();
        if (refresh_watermarks) read_watermarks();
        auto now = Clock::now();
        if (now - head_read >= settings.head_check_interval) {
          head = store.head().position.value();
          head_read = now;
        }
        auto lowest = lowest_assigned();
        // Looking for (or stuck at) a position that fails: one position at a time, from the store.
        const bool single_step = lowest && (stall.has_value() || *lowest < single_step_through);
        bool far_behind = lowest && (single_step || head - *lowest > settings.catch_up_events_min);
        const auto collected = collect(incoming, offsets, far_behind ? 0 : 100, far_behind);
        if (worker.stopping()) break;
        if (collected.other_incarnation > 0 || collected.rejected > 0) {
          update_status([&](ProjectorStatus& s) {
            s.messages_other_incarnation += collected.other_incarnation;
            s.messages_rejected += collected.rejected;
          });
        }
        // A rebalance inside collect() may have taken partitions away: their messages and
        // offsets belong to whichever process has them now.
        for (auto it = incoming.begin(); it != incoming.end();) {
          it = assigned.count(it->first) == 0 ? incoming.erase(it) : std::next(it);
        }
        for (auto it = offsets.begin(); it != offsets.end();) {
          it = assigned.count(it->first) == 0 ? offsets.erase(it) : std::next(it);
        }
        if (refresh_watermarks) read_watermarks();
        if (!far_behind) {
          // Partitions assigned inside collect() (the first join, a rebalance) may be far
          // behind: they catch up from the store together. Applied from what Kafka delivered
          // first, a few of them would run far ahead of the others, and every later round of
          // the catch-up would read the store's rows of those partitions again for nothing.
          lowest = lowest_assigned();
          far_behind = lowest && head - *lowest > settings.catch_up_events_min;
        }
        if (!far_behind) release_catch_up_readers();

        std::map<std::int32_t, std::int64_t> targets;
        now = Clock::now();
        if (far_behind) {
          incoming.clear();  // all of it is in the store, read below
          std::int64_t target = *lowest + (single_step ? span_max : catch_up_span_max);
          // Sharing reads, the rounds end at multiples of the span: projectors that started
          // from different watermarks then ask for the same ranges from their second round on.
          if (shared_reads && !single_step) {
            target -= target % catch_up_span_max;
            // Any wait for room in the shared reads happens here, outside the round's
            // transaction (the round takes what this starts).
            shared_reads->request(this, *lowest, std::min(head, target), partitions);
          }
          for (const auto partition : assigned) {
            if (watermark_of(partition) < head) targets[partition] = std::min(head, target);
          }
        } else {
          for (const auto& [partition, messages] : incoming) {
            std::int64_t target = watermark_of(partition);
            for (const auto& message : messages) target = std::max(target, message.position);
            targets[partition] = target;
          }
          if (assigned.empty() && now - unassigned_looked >= settings.gap_wait) {
            // Kafka assigned this process nothing (a group that cannot form: a broker stopped
            // while it joined, a coordinator gone). The store holds every event: a partition
            // behind the head that nobody moved since the last look is applied from it. The
            // row locks keep that exactly once should its owner move it meanwhile.
            read_watermarks();
            head = store.head().position.value();
            head_read = now;
            for (std::int32_t partition = 0; partition < partitions; ++partition) {
              const auto watermark = watermark_of(partition);
              const auto seen = unassigned_seen.find(partition);
              if (watermark < head && seen != unassigned_seen.end() && seen->second == watermark) {
                targets[partition] = std::min(head, watermark + span_max);
              }
              unassigned_seen[partition] = watermark;
            }
            unassigned_looked = now;
          } else if (!assigned.empty()) {
            unassigned_seen.clear();
          }
          if (incoming.empty() && lowest && now - last_progress >= settings.gap_wait) {
            // Kafka has been quiet: if the store is ahead, the missing events were lost on
            // the way (or the relay is down); read them from the store.
            head = store.head().position.value();
            head_read = now;
            for (const auto partition : assigned) {
              const auto watermark = watermark_of(partition);
              if (watermark < head) targets[partition] = std::min(head, watermark + span_max);
            }
            last_progress = now;
          }
        }
        // Offsets of messages that changed nothing are stored too (the next start skips them).
        for (const auto& [partition, next_offset] : offsets) targets.try_emplace(partition, watermark_of(partition));
        if (targets.empty()) continue;
        if (apply(std::move(targets), incoming, offsets, single_step, far_behind && !single_step)) {
          last_progress = Clock::now();
        }
        head = last_store_head;  // read by that round, after the one above
        incoming.clear();
        offsets.clear();
      } catch (const std::exception& error) {
        // The failed batch was handed over: what it held comes back from Kafka or the store.
        // Read the watermarks again: the commit may have happened.
        incoming.clear();
        offsets.clear();
        refresh_watermarks = true;
        if (dynamic_cast<const PartitionCountChanged*>(&error) != nullptr) {
          partitions_ready = false;
          update_status([&](ProjectorStatus& s) { s.last_error = error.what(); });
          spdlog::error("projector {}: {}", name, error.what());
          pause(partition_mismatch_retry_pause);
          continue;
        }
        handle_failure(error);
      }
    }
    // Leave the group now, not when the object goes: librdkafka keeps heartbeating for a
    // consumer that is not polled, and its partitions would wait max.poll.interval.ms.
    if (consumer != nullptr) {
      rd_kafka_consumer_close(consumer);
      rd_kafka_destroy(consumer);
      consumer = nullptr;
    }
    assigned.clear();
    publish_assignment();
    update_status([](ProjectorStatus& s) { s.running = false; });
  }
};

std::shared_ptr<CatchUpReads> make_catch_up_reads(const db::ConnectionPool& pool) {
  return std::make_shared<CatchUpReads>(pool, CatchUpReads::Limits{});
}

Projector::Projector(ProjectionKind kind, ProjectorSettings settings, db::ConnectionPool& pool,
                     std::shared_ptr<CatchUpReads> shared_reads)
    : impl_(std::make_unique<Impl>(kind, std::move(settings), pool, std::move(shared_reads))) {}

Projector::~Projector() {
  stop();
  if (impl_->shared_reads) impl_->shared_reads->leave(impl_.get());
}

void Projector::start() {
  impl_->worker.start([this] { impl_->run(); });
}

void Projector::stop() { impl_->worker.stop(); }

ProjectorStatus Projector::status() const { return impl_->state.get(); }

}  // namespace ledger::projections
