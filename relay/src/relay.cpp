#include "ledger/relay/relay.hpp"

#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>

#include <deque>
#include <map>
#include <optional>
#include <pqxx/pqxx>
#include <set>

#include "ledger/core/assert.hpp"
#include "ledger/core/worker.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/domain/envelope.hpp"
#include "ledger/engine/event_store.hpp"

namespace ledger::relay {

// The engine applies the domain's rules: its types are used unqualified here.
using namespace domain;  // NOLINT(google-build-using-namespace)

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* append_channel = "ledger_events_appended";
constexpr const char* content_type = "application/x-flatbuffers; schema=ledger.schema.Envelope";
constexpr const char* json_content_type = "application/json";

// A producer that failed fatally (an idempotent producer that lost track of its sequence
// numbers refuses every later message) is replaced by a new one after this pause, doubled on
// each failure in a row up to the maximum: a broker that keeps failing producers is not
// hammered, and one transient fault costs a fraction of a second.
constexpr auto producer_recreate_backoff_initial = std::chrono::milliseconds(100);
constexpr auto producer_recreate_backoff_max = std::chrono::milliseconds(30'000);

// Wakes the relay when an append commits (the trigger of migration 0004).
class AppendListener final : public pqxx::notification_receiver {
 public:
  explicit AppendListener(pqxx::connection_base& connection)
      : pqxx::notification_receiver(connection, append_channel) {}
  void operator()(const std::string&, int) override { notified = true; }
  bool notified = false;
};

// The producer settings every publisher of the events topic shares: idempotent, acks=all.
rd_kafka_conf_t* producer_conf(const RelaySettings& settings) {
  char error[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  auto set = [&](const std::string& name, const std::string& value) {
    if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), error, sizeof error) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      throw std::runtime_error("Kafka producer setting " + name + ": " + error);
    }
  };
  set("bootstrap.servers", settings.brokers);
  set("enable.idempotence", "true");
  set("acks", "all");
  set("linger.ms", "2");
  set("message.timeout.ms", std::to_string(settings.delivery_timeout.count()));
  set("queue.buffering.max.messages",
      std::to_string(settings.in_flight_events_max + settings.read_batch_events + 1'000));
  set("log_level", "3");
  for (const auto& [name, value] : settings.kafka_properties) set(name, value);
  return conf;
}

// How long reading the topic's partition count may take when leadership begins.
constexpr int metadata_timeout_ms = 10'000;
// Reading the last position sent to each partition back from the store, this many rows a query.
constexpr std::int64_t partition_scan_rows = 50'000;

// The partition count of the events topic, as the brokers report it.
std::int32_t topic_partition_count(rd_kafka_t* handle, const std::string& topic) {
  rd_kafka_topic_t* topic_handle = rd_kafka_topic_new(handle, topic.c_str(), nullptr);
  const rd_kafka_metadata_t* metadata = nullptr;
  const auto error = rd_kafka_metadata(handle, 0, topic_handle, &metadata, metadata_timeout_ms);
  rd_kafka_topic_destroy(topic_handle);
  if (error != RD_KAFKA_RESP_ERR_NO_ERROR) {
    throw std::runtime_error("reading the partitions of topic " + topic + ": " + rd_kafka_err2str(error));
  }
  std::int32_t count = 0;
  rd_kafka_resp_err_t topic_error = RD_KAFKA_RESP_ERR_NO_ERROR;
  for (int i = 0; i < metadata->topic_cnt; ++i) {
    if (topic == metadata->topics[i].topic) {
      topic_error = metadata->topics[i].err;
      count = metadata->topics[i].partition_cnt;
    }
  }
  rd_kafka_metadata_destroy(metadata);
  if (topic_error != RD_KAFKA_RESP_ERR_NO_ERROR || count < 1) {
    throw std::runtime_error("topic " + topic + " has no partitions the brokers report (" +
                             rd_kafka_err2str(topic_error) + "); create it first");
  }
  return count;
}

// For each partition, the highest position at or below `through` whose stream the partitioner
// sends there (0: none): what the next envelope of that partition names as its previous one.
// Reads (position, stream_id) backwards from `through` until every partition has been met or
// the store's start is reached; a partition no stream maps to costs one scan of the store.
std::vector<std::int64_t> last_positions_per_partition(db::ConnectionPool& pool, std::int64_t through,
                                                       std::int32_t partitions) {
  std::vector<std::int64_t> last(static_cast<std::size_t>(partitions), 0);
  std::int32_t missing = partitions;
  auto lease = pool.acquire();
  pqxx::read_transaction work(*lease);
  for (std::int64_t high = through; high > 0 && missing > 0; high -= partition_scan_rows) {
    for (const auto& row : work.exec_params(
             "SELECT position, stream_id FROM events WHERE position <= $1 AND position > $2 ORDER BY position DESC",
             high, high - partition_scan_rows)) {
      const auto partition = static_cast<std::size_t>(partition_for_stream(row[1].as<std::string>(), partitions));
      if (last[partition] == 0) {
        last[partition] = row[0].as<std::int64_t>();
        if (--missing == 0) break;
      }
    }
  }
  return last;
}

// What the relay knows of one partition: the position of the last event it handed over for it
// (the next envelope's previous_position), the last Kafka acknowledged as part of the
// contiguous acknowledged prefix (where a rewind starts again), and what the last marker said.
struct PartitionProgress {
  std::int64_t last_sent = 0;
  std::int64_t last_acknowledged = 0;
  std::int64_t marked_through = 0;
};

// Hands one message to the producer, waiting while its queue is full. The position travels
// as the message's opaque for the delivery report. `partition` RD_KAFKA_PARTITION_UA leaves
// the choice to librdkafka's partitioner (the JSON view); `previous` > 0 is written as the
// `previous-position` header.
void produce_message(rd_kafka_t* producer, const std::string& topic, const RecordedEvent& event,
                     const std::string& value, const char* value_content_type,
                     std::int32_t partition = RD_KAFKA_PARTITION_UA, std::int64_t previous = 0) {
  const std::string position = std::to_string(event.position.value());
  const std::string previous_text = std::to_string(previous);
  while (true) {
    rd_kafka_headers_t* headers = rd_kafka_headers_new(4);
    rd_kafka_header_add(headers, "event-type", -1, event.type.data(),
                        static_cast<ssize_t>(event.type.size()));
    rd_kafka_header_add(headers, "position", -1, position.data(), static_cast<ssize_t>(position.size()));
    rd_kafka_header_add(headers, "content-type", -1, value_content_type, -1);
    if (partition != RD_KAFKA_PARTITION_UA) {
      rd_kafka_header_add(headers, "previous-position", -1, previous_text.data(),
                          static_cast<ssize_t>(previous_text.size()));
    }
    const rd_kafka_resp_err_t error = rd_kafka_producev(
        producer, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(partition),
        RD_KAFKA_V_KEY(event.stream_id.data(), event.stream_id.size()),
        RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers),
        RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<std::intptr_t>(event.position.value()))),
        RD_KAFKA_V_END);
    if (error == RD_KAFKA_RESP_ERR_NO_ERROR) return;
    rd_kafka_headers_destroy(headers);  // owned by the message only on success
    if (error != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      throw std::runtime_error(std::string("Kafka produce: ") + rd_kafka_err2str(error));
    }
    rd_kafka_poll(producer, 10);
  }
}

// Hands one progress marker for `partition` to the producer (no key, the envelope flagged as a
// marker, headers ledger-progress and content-type). Its opaque is 0: no position waits on it.
void produce_marker(rd_kafka_t* producer, const std::string& topic, std::int32_t partition,
                    const ProgressMarker& marker) {
  const std::string value = encode_progress_marker(marker);
  const std::string through = std::to_string(marker.through.value());
  while (true) {
    rd_kafka_headers_t* headers = rd_kafka_headers_new(2);
    rd_kafka_header_add(headers, progress_marker_header, -1, through.data(), static_cast<ssize_t>(through.size()));
    rd_kafka_header_add(headers, "content-type", -1, content_type, -1);
    const rd_kafka_resp_err_t error = rd_kafka_producev(
        producer, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(partition),
        RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_OPAQUE(nullptr), RD_KAFKA_V_END);
    if (error == RD_KAFKA_RESP_ERR_NO_ERROR) return;
    rd_kafka_headers_destroy(headers);
    if (error != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      throw std::runtime_error(std::string("Kafka produce: ") + rd_kafka_err2str(error));
    }
    rd_kafka_poll(producer, 10);
  }
}

// Publishes one event per the contract in DESIGN.md (key = stream id, partition chosen by
// domain::partition_for_stream, the envelope with the partition's previous position, headers
// event-type, position, previous-position and content-type) and, when configured, its JSON
// view. Returns the number of messages handed over (1 or 2).
int produce_event(rd_kafka_t* producer, const RelaySettings& settings, const RecordedEvent& event,
                  const Incarnation& incarnation, std::int32_t partition, std::int64_t previous) {
  produce_message(producer, settings.topic, event, domain::encode_envelope(event, incarnation, previous),
                  content_type, partition, previous);
  if (settings.json_topic.empty()) return 1;
  produce_message(producer, settings.json_topic, event, domain::envelope_json(event, incarnation),
                  json_content_type);
  return 2;
}

}  // namespace

Incarnation read_store_incarnation(pqxx::transaction_base& work) {
  const auto row = work.exec1(
      "SELECT id::text, since_position, (extract(epoch FROM created_at) * 1000000)::bigint FROM store_incarnation");
  return Incarnation{row[0].as<std::string>(), row[1].as<std::int64_t>(), row[2].as<std::int64_t>()};
}

Incarnation begin_store_incarnation(pqxx::connection_base& connection) {
  pqxx::work work(connection);
  // The head is locked: no append commits between reading it and the new incarnation.
  const auto head = work.exec1("SELECT position FROM event_store_head FOR UPDATE")[0].as<std::int64_t>();
  work.exec("DELETE FROM store_incarnation");
  work.exec_params("INSERT INTO store_incarnation (id, since_position) VALUES (gen_random_uuid(), $1)", head);
  auto incarnation = read_store_incarnation(work);
  work.commit();
  return incarnation;
}

namespace {

}  // namespace

struct Relay::Impl {
  Impl(RelaySettings s, db::ConnectionPool& p) : settings(std::move(s)), pool(p), store(p) {}

  RelaySettings settings;
  db::ConnectionPool& pool;
  engine::EventStore store;  // the next stored position after a read that found nothing
  // The log's new events, read in binary on a connection of its own (issue 18: read as text,
  // PostgreSQL hex-encoded every payload and hash and the relay decoded them again); opened on
  // the first read, dropped when a read fails or leadership ends.
  std::unique_ptr<engine::LogCopyReader> log_reader;
  std::vector<RecordedEvent> read_events;
  // The position the store lacks where publishing stopped (0: none), and when it was logged.
  std::int64_t missing_position = 0;
  Clock::time_point missing_logged{};
  Clock::time_point read_failure_logged{};  // the last failed read of the log that was logged

  SharedStatus<RelayStatus> state;

  // Delivery tracking, touched only on the relay thread (delivery reports are served by
  // rd_kafka_poll there). window[i] is position acknowledged + 1 + i: the number of its
  // messages (the envelope, and the JSON view when enabled) Kafka has not acknowledged yet,
  // and the partition it went to.
  struct Slot {
    std::uint8_t outstanding = 0;
    std::int32_t partition = 0;
  };
  rd_kafka_t* producer = nullptr;
  std::int64_t acknowledged = 0;
  std::int64_t next = 1;
  std::deque<Slot> window;
  // The events topic's partition count, read when leadership begins, and per partition what
  // was sent and acknowledged there (the envelopes' previous_position, the markers).
  std::int32_t partitions = 0;
  std::vector<PartitionProgress> partition_progress;
  Clock::time_point last_markers{};
  std::int64_t markers_sent = 0;
  std::int64_t acknowledged_since_start = 0;
  bool delivery_failed = false;
  Clock::time_point last_progress = Clock::now();
  // Highest acknowledged offset per partition, and the partitions changed since last saved.
  std::map<std::int32_t, std::int64_t> partition_offsets;
  std::set<std::int32_t> partitions_changed;
  // The pause before the next producer is created, and the acknowledged position when the
  // current one was: once it acknowledges something, the pause starts over.
  std::chrono::milliseconds recreate_backoff = producer_recreate_backoff_initial;
  std::int64_t acknowledged_at_recreation = -1;
  // The store's incarnation, read at leadership start: every envelope carries it.
  Incarnation incarnation;

  StoppableThread worker;  // last: it stops before the members it uses go

  ~Impl() {
    if (producer != nullptr) rd_kafka_destroy(producer);
  }

  template <typename F>
  void update_status(F&& change) {
    state.update(std::forward<F>(change));
  }

  void pause(std::chrono::milliseconds duration) { worker.pause(duration); }

  static void on_delivery(rd_kafka_t* handle, const rd_kafka_message_t* message, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    // A failed producer being torn down reports its messages as failed: they are published
    // again by its successor from the acknowledged position, whatever it says.
    if (handle != self->producer) return;
    const auto position = static_cast<std::int64_t>(reinterpret_cast<std::intptr_t>(message->_private));
    if (message->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      self->delivery_failed = true;
      self->update_status([&](RelayStatus& s) {
        ++s.delivery_failures;
        s.kafka_error = rd_kafka_err2str(message->err);
      });
      return;
    }
    // The broker's data-loss check watches the events topic (the JSON view is derived from it).
    if (rd_kafka_topic_name(message->rkt) == self->settings.topic) {
      auto& offset = self->partition_offsets[message->partition];
      if (message->offset > offset) {
        offset = message->offset;
        self->partitions_changed.insert(message->partition);
      }
    }
    const std::int64_t index = position - self->acknowledged - 1;
    if (index >= 0 && index < static_cast<std::int64_t>(self->window.size())) {
      auto& outstanding = self->window[static_cast<std::size_t>(index)].outstanding;
      if (outstanding > 0) --outstanding;
    }
    self->last_progress = Clock::now();
  }

  static void on_error(rd_kafka_t*, int error, const char* reason, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    const auto code = static_cast<rd_kafka_resp_err_t>(error);
    spdlog::warn("relay: Kafka: {}", reason);
    self->update_status([&](RelayStatus& s) {
      s.kafka_error = reason;
      if (code == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || code == RD_KAFKA_RESP_ERR__TRANSPORT) {
        s.kafka_reachable = false;
      }
    });
  }

  void create_producer() {
    char error[512];
    rd_kafka_conf_t* conf = producer_conf(settings);
    rd_kafka_conf_set_dr_msg_cb(conf, &Impl::on_delivery);
    rd_kafka_conf_set_error_cb(conf, &Impl::on_error);
    rd_kafka_conf_set_opaque(conf, this);
    producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof error);
    if (producer == nullptr) {
      rd_kafka_conf_destroy(conf);  // rd_kafka_new takes it only on success
      throw std::runtime_error(std::string("Kafka producer: ") + error);
    }
  }

  [[nodiscard]] bool producer_failed() const {
    return producer != nullptr && rd_kafka_fatal_error(producer, nullptr, 0) != RD_KAFKA_RESP_ERR_NO_ERROR;
  }

  // librdkafka never recovers a producer from a fatal error: every later produce fails. Keep
  // what it acknowledged, drop it, and publish again from the first position not acknowledged
  // with a new one (consumers skip the repeats), after a bounded, growing pause.
  void recreate_producer() {
    char reason[512] = "";
    rd_kafka_fatal_error(producer, reason, sizeof reason);
    rd_kafka_poll(producer, 0);  // the acknowledgements it received before failing still count
    advance();
    rd_kafka_t* failed = producer;
    producer = nullptr;  // its last delivery reports are ignored (on_delivery)
    rd_kafka_purge(failed, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_destroy(failed);
    rewind_to_acknowledged();
    delivery_failed = false;
    if (acknowledged != acknowledged_at_recreation) recreate_backoff = producer_recreate_backoff_initial;
    spdlog::warn("relay: the Kafka producer failed fatally ({}); a new one publishes again from position {} "
                 "in {} ms",
                 reason, next, recreate_backoff.count());
    update_status([&](RelayStatus& s) {
      ++s.producer_recreations;
      ++s.republishes;
      s.kafka_error = reason;
    });
    pause(recreate_backoff);
    recreate_backoff = std::min(recreate_backoff * 2, producer_recreate_backoff_max);
    acknowledged_at_recreation = acknowledged;
    create_producer();
  }

  void produce(const RecordedEvent& event) {
    // Slot i of the window is position acknowledged + 1 + i: positions reach the producer in
    // order and without holes, or advance() would acknowledge an event Kafka never took.
    LEDGER_ASSERT(event.position.value() == acknowledged + 1 + static_cast<std::int64_t>(window.size()),
                  "relay: positions go to the producer in order, each once after the acknowledged one");
    const std::int32_t partition = partition_for_stream(event.stream_id, partitions);
    auto& progress = partition_progress[static_cast<std::size_t>(partition)];
    const int messages = produce_event(producer, settings, event, incarnation, partition, progress.last_sent);
    progress.last_sent = event.position.value();
    progress.marked_through = event.position.value();
    if (window.empty()) last_progress = Clock::now();
    window.push_back(Slot{static_cast<std::uint8_t>(messages), partition});
    next = event.position.value() + 1;
  }

  // Positions are dense: a hole is a damaged store (a restore gone wrong, a hand edit). What
  // precedes it is published, nothing after it (its envelope would name a previous position
  // Kafka never got), and nothing is rewound: the relay keeps leading, serves its in-flight
  // messages, and reads again at the poll interval. Logged when first met, then every minute.
  void report_missing(std::int64_t next_stored) {
    const auto now = Clock::now();
    if (missing_position == next && now - missing_logged < std::chrono::minutes(1)) return;
    spdlog::error(
        "relay: position {} is missing from the event store (the next stored one is {}); nothing "
        "after it is published until it is back (`ledger replay verify` checks the log)",
        next, next_stored);
    missing_position = next;
    missing_logged = now;
    update_status([&](RelayStatus& s) { s.missing_position = GlobalPosition(next); });
  }

  // Once the missing event has been handed over (not merely any read without a hole: after a
  // rewind the relay reads positions below it again).
  void clear_missing() {
    if (missing_position == 0) return;
    spdlog::info("relay: position {} is in the event store again; publishing on", missing_position);
    forget_missing();
  }

  // Quietly: when leadership begins or ends (a standby shows none).
  void forget_missing() {
    missing_position = 0;
    missing_logged = Clock::time_point{};
    update_status([](RelayStatus& s) { s.missing_position = GlobalPosition(0); });
  }

  // The next batch of the log, or null after logging (the first time, then at most every
  // minute) why it could not be read: a read that fails (a cut connection, no connection free
  // for the reader) is tried again at the poll interval by this leader, which keeps its lock.
  const std::vector<RecordedEvent>* read_or_report() {
    try {
      return &read_from_store();
    } catch (const std::exception& error) {
      const auto now = Clock::now();
      if (now - read_failure_logged >= std::chrono::minutes(1)) {
        spdlog::warn(
            "relay: reading the event store from position {} failed: {}; reading again every {} ms",
            next, error.what(), settings.poll_interval.count());
        read_failure_logged = now;
      }
      return nullptr;
    }
  }

  // The lowest stored position at or after `from` (none: `from` is past the last event).
  std::optional<std::int64_t> first_stored_from(std::int64_t from) {
    try {
      const auto first = store.read_all(GlobalPosition(from), 1);
      if (first.empty()) return std::nullopt;
      return first.front().position.value();
    } catch (const std::exception& error) {
      spdlog::warn("relay: reading the event store from position {} failed: {}", from, error.what());
      return std::nullopt;
    }
  }

  // The stored events from `next` on, at most read_batch_events: one binary COPY of
  // [next, next + read_batch_events - 1]. A reader whose read failed is not used again (its
  // connection may be broken, its COPY left open).
  const std::vector<RecordedEvent>& read_from_store() {
    const auto last = next + static_cast<std::int64_t>(settings.read_batch_events) - 1;
    try {
      if (!log_reader)
        log_reader = std::make_unique<engine::LogCopyReader>(pool, GlobalPosition(next),
                                                             GlobalPosition(last));
      log_reader->read_range(GlobalPosition(next), GlobalPosition(last), read_events);
    } catch (...) {
      log_reader.reset();
      throw;
    }
    return read_events;
  }

  // Moves the acknowledged position over the contiguous acknowledged prefix.
  void advance() {
    while (!window.empty() && window.front().outstanding == 0) {
      const auto partition = static_cast<std::size_t>(window.front().partition);
      window.pop_front();
      ++acknowledged;
      ++acknowledged_since_start;
      partition_progress[partition].last_acknowledged = acknowledged;
    }
  }

  // Drops what is in flight and publishes again from the first position not acknowledged:
  // each partition's next envelope names the last acknowledged event of that partition as its
  // previous one (a consumer that saw the dropped ones skips the repeats by position).
  void rewind_to_acknowledged() {
    window.clear();
    next = acknowledged + 1;
    for (auto& progress : partition_progress) {
      progress.last_sent = progress.last_acknowledged;
      progress.marked_through = std::min(progress.marked_through, acknowledged);
    }
  }

  // After the acknowledged position moved back (leadership began, a broker that lost data):
  // what each partition was last sent is read back from the store.
  void recompute_partitions() {
    const auto last = last_positions_per_partition(pool, acknowledged, partitions);
    partition_progress.assign(static_cast<std::size_t>(partitions), PartitionProgress{});
    for (std::size_t partition = 0; partition < last.size(); ++partition) {
      partition_progress[partition] = PartitionProgress{last[partition], last[partition], acknowledged};
    }
    window.clear();
    next = acknowledged + 1;
  }

  // Once everything read has been handed over: a marker to each partition that has not been
  // told about the positions sent since (at most every marker_interval), so its consumers
  // advance their watermark for that partition without waiting for one of its events.
  void send_markers() {
    const std::int64_t through = next - 1;
    const auto now = Clock::now();
    if (through < 1 || now - last_markers < settings.marker_interval) return;
    last_markers = now;
    for (std::int32_t partition = 0; partition < partitions; ++partition) {
      auto& progress = partition_progress[static_cast<std::size_t>(partition)];
      if (progress.marked_through >= through) continue;
      produce_marker(producer, settings.topic, partition,
                     ProgressMarker{GlobalPosition(through), GlobalPosition(progress.last_sent), incarnation});
      progress.marked_through = through;
      ++markers_sent;
    }
  }

  // After a failed delivery: let the rest settle, then publish again from the first position
  // not acknowledged. Consumers dedupe by position, so the repeats change nothing.
  void republish_unacknowledged() {
    rd_kafka_flush(producer, 5'000);
    rd_kafka_poll(producer, 0);
    advance();
    spdlog::warn("relay: a delivery failed; publishing again from position {}", acknowledged + 1);
    rewind_to_acknowledged();
    delivery_failed = false;
    update_status([](RelayStatus& s) { ++s.republishes; });
  }

  void save_checkpoint(pqxx::connection& connection) {
    pqxx::work work(connection);
    work.exec_params(
        "UPDATE checkpoints SET position = $1, incarnation = $3::uuid, updated_at = now() WHERE name = $2",
        acknowledged, settings.checkpoint_name, incarnation.id);
    for (const auto partition : partitions_changed) {
      work.exec_params(
          "INSERT INTO relay_partitions (topic, partition, acknowledged_offset) VALUES ($1, $2, $3) "
          "ON CONFLICT (topic, partition) DO UPDATE SET acknowledged_offset = "
          "greatest(relay_partitions.acknowledged_offset, excluded.acknowledged_offset)",
          settings.topic, partition, partition_offsets.at(partition));
    }
    work.commit();
    partitions_changed.clear();
  }

  // A partition that ends below an offset Kafka once acknowledged lost its data (a restarted
  // development broker, a recreated topic): publish again from the lowest position a read
  // model still needs, so consumers that start over on the new broker find everything.
  void republish_if_broker_lost_data(pqxx::connection& connection) {
    std::map<std::int32_t, std::int64_t> stored;
    {
      pqxx::read_transaction work(connection);
      for (const auto& row : work.exec_params(
               "SELECT partition, acknowledged_offset FROM relay_partitions WHERE topic = $1", settings.topic)) {
        stored[row[0].as<std::int32_t>()] = row[1].as<std::int64_t>();
      }
    }
    bool lost = false;
    for (const auto& [partition, offset] : stored) {
      std::int64_t low = 0;
      std::int64_t high = 0;
      const auto error = rd_kafka_query_watermark_offsets(producer, settings.topic.c_str(), partition, &low,
                                                          &high, 5'000);
      if (error == RD_KAFKA_RESP_ERR_NO_ERROR && high <= offset) {
        spdlog::warn("relay: partition {} of {} ends at offset {} but offset {} was acknowledged: "
                     "the broker lost data",
                     partition, settings.topic, high, offset);
        lost = true;
      }
    }
    if (!lost) return;
    const std::int64_t needed =
        settings.lowest_position_needed ? settings.lowest_position_needed().value() : 0;
    pqxx::work work(connection);
    work.exec_params("DELETE FROM relay_partitions WHERE topic = $1", settings.topic);
    work.commit();
    partition_offsets.clear();
    partitions_changed.clear();
    rd_kafka_flush(producer, 5'000);
    acknowledged = std::min(acknowledged, needed);
    recompute_partitions();
    save_checkpoint(connection);
    spdlog::warn("relay: publishing again from position {}", next);
    update_status([](RelayStatus& s) { ++s.republishes; });
  }

  // Competes for the leader lock, then publishes until stopped or the connection fails.
  void lead() {
    auto connection = pool.connect_dedicated();
    while (!worker.stopping()) {
      pqxx::nontransaction query(*connection);
      if (query.exec_params1("SELECT pg_try_advisory_lock($1)", settings.leader_lock_key)[0].as<bool>()) break;
      query.commit();
      pause(settings.poll_interval);
    }
    if (worker.stopping()) return;
    forget_missing();  // found again by this leader's reads, if it still is
    AppendListener listener(*connection);
    {
      pqxx::work work(*connection);
      work.exec_params("INSERT INTO checkpoints (name, position) VALUES ($1, 0) ON CONFLICT DO NOTHING",
                       settings.checkpoint_name);
      const auto checkpoint = work.exec_params1(
          "SELECT position, incarnation::text FROM checkpoints WHERE name = $1", settings.checkpoint_name);
      acknowledged = checkpoint[0].as<std::int64_t>();
      incarnation = read_store_incarnation(work);
      if (!checkpoint[1].is_null() && checkpoint[1].as<std::string>() != incarnation.id) {
        // A point-in-time restore: the checkpoint came back with the store, so it lies at or
        // below the restore point (a checkpoint above it would name events of the lost
        // timeline: publish again from the restore point). Everything after the checkpoint is
        // published again under the new incarnation, which consumers tell from the old one.
        const auto restored = acknowledged;
        acknowledged = std::min(acknowledged, incarnation.since_position);
        spdlog::warn("relay: the event store's incarnation changed from {} to {} (restored to position {}); "
                     "the checkpoint {} of the old incarnation is {} the restore point: publishing again from "
                     "position {} under the new incarnation",
                     checkpoint[1].as<std::string>(), incarnation.id, incarnation.since_position, restored,
                     restored <= incarnation.since_position ? "at or below" : "above", acknowledged + 1);
        update_status([](RelayStatus& s) { ++s.republishes; });
      }
      work.exec_params("UPDATE checkpoints SET position = $1, incarnation = $3::uuid WHERE name = $2",
                       acknowledged, settings.checkpoint_name, incarnation.id);
      work.commit();
    }
    if (producer == nullptr) create_producer();
    // This instance leads (it holds the lock) even while Kafka cannot say how many partitions
    // the topic has: /health must show Kafka down and the lag growing, not a standby.
    while (true) {
      try {
        partitions = topic_partition_count(producer, settings.topic);
        break;
      } catch (const std::exception& error) {
        spdlog::warn("relay: {}; retrying", error.what());
        update_status([&](RelayStatus& s) {
          s.leader = true;
          s.kafka_reachable = false;
          s.kafka_error = error.what();
        });
        pause(settings.poll_interval * 2);
        if (worker.stopping()) return;
      }
    }
    recompute_partitions();
    delivery_failed = false;
    // Failed while this instance last led (after the window was reset: nothing in flight counts).
    if (producer_failed()) recreate_producer();
    republish_if_broker_lost_data(*connection);
    spdlog::info("relay: leading; publishing to {} ({} partitions) from position {} under incarnation {}",
                 settings.topic, partitions, next, incarnation.id);
    update_status([&](RelayStatus& s) {
      s.leader = true;
      s.partitions = partitions;
      s.incarnation = incarnation.id;
      s.acknowledged = GlobalPosition(acknowledged);
    });

    std::int64_t saved = acknowledged;
    auto last_checkpoint = Clock::now();
    auto last_broker_check = Clock::now();
    auto last_read = Clock::time_point{};
    bool maybe_more = true;
    while (!worker.stopping()) {
      rd_kafka_poll(producer, 0);
      advance();
      if (producer_failed()) {
        recreate_producer();
        maybe_more = true;
        continue;
      }
      if (delivery_failed) {
        republish_unacknowledged();
        maybe_more = true;
      }
      const auto now = Clock::now();
      if (acknowledged != saved && now - last_checkpoint >= settings.checkpoint_interval) {
        save_checkpoint(*connection);
        saved = acknowledged;
        last_checkpoint = now;
      }
      // Checked while idle: with messages in flight the broker may simply be down.
      if (window.empty() && now - last_broker_check >= settings.broker_check_interval) {
        republish_if_broker_lost_data(*connection);
        saved = acknowledged;
        last_broker_check = now;
      }
      publish_status();

      if (now - last_read >= settings.poll_interval) maybe_more = true;
      if (maybe_more && window.size() < settings.in_flight_events_max) {
        last_read = now;
        maybe_more = false;
        if (const auto* events = read_or_report()) {
          bool hole = false;
          for (const auto& event : *events) {
            if (event.position.value() != next) {
              hole = true;
              report_missing(event.position.value());
              break;
            }
            try {
              produce(event);
            } catch (const std::exception&) {
              if (!producer_failed()) throw;
              break;  // replaced at the top of the loop
            }
            if (event.position.value() == missing_position) clear_missing();
          }
          // Nothing at [next, next + batch): the head, or a hole at least a batch wide.
          if (events->empty()) {
            if (const auto stored = first_stored_from(next)) {
              if (*stored > next) {
                hole = true;
                report_missing(*stored);
              } else {
                maybe_more = true;  // appended since the read
              }
            }
          }
          // At a hole: read again at the poll interval, meanwhile serve what is in flight.
          maybe_more = maybe_more || (!hole && events->size() == settings.read_batch_events);
          if (maybe_more) continue;
        }
      }
      // Everything in the store up to `next - 1` has been handed over.
      if (!producer_failed()) send_markers();
      // Nothing more to read now: wait for an append, serving delivery reports meanwhile.
      listener.notified = false;
      if (window.empty()) {
        const auto wait = settings.poll_interval.count();
        connection->await_notification(wait / 1'000, (wait % 1'000) * 1'000);
      } else {
        rd_kafka_poll(producer, 5);
        connection->get_notifs();
      }
      // At a hole, appends do not wake a read (each would read the events past the hole
      // again): the poll interval does.
      if (listener.notified && missing_position == 0) maybe_more = true;
    }
    // Stopping: give in-flight messages a moment, record how far Kafka acknowledged.
    rd_kafka_flush(producer, 5'000);
    rd_kafka_poll(producer, 0);
    advance();
    save_checkpoint(*connection);
    publish_status();
  }

  void publish_status() {
    const double oldest =
        window.empty() ? 0.0 : std::chrono::duration<double>(Clock::now() - last_progress).count();
    update_status([&](RelayStatus& s) {
      s.acknowledged = GlobalPosition(acknowledged);
      s.published = GlobalPosition(next - 1);
      s.events_acknowledged = acknowledged_since_start;
      s.markers_sent = markers_sent;
      s.oldest_unacknowledged_seconds = oldest;
      if (window.empty() || oldest < 1.0) s.kafka_reachable = true;
    });
  }

  void run() {
    update_status([](RelayStatus& s) { s.running = true; });
    while (!worker.stopping()) {
      try {
        lead();
      } catch (const std::exception& error) {
        spdlog::warn("relay: {}; retrying", error.what());
        log_reader.reset();  // a standby holds no connection to read the log
        forget_missing();
        update_status([](RelayStatus& s) { s.leader = false; });
        pause(settings.poll_interval * 2);
      }
    }
    update_status([](RelayStatus& s) {
      s.leader = false;
      s.running = false;
    });
  }
};

Relay::Relay(RelaySettings settings, db::ConnectionPool& pool)
    : impl_(std::make_unique<Impl>(std::move(settings), pool)) {}

Relay::~Relay() { stop(); }

void Relay::start() {
  impl_->worker.start([this] { impl_->run(); });
}

void Relay::stop() { impl_->worker.stop(); }

RelayStatus Relay::status() const { return impl_->state.get(); }

namespace {

struct PublishDeliveries {
  std::int64_t acknowledged = 0;
  std::string first_error;
};

void on_publish_delivery(rd_kafka_t*, const rd_kafka_message_t* message, void* opaque) {
  auto* deliveries = static_cast<PublishDeliveries*>(opaque);
  if (message->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    ++deliveries->acknowledged;
  } else if (deliveries->first_error.empty()) {
    deliveries->first_error = rd_kafka_err2str(message->err);
  }
}

}  // namespace

std::int64_t publish_range(const RelaySettings& settings, db::ConnectionPool& pool,
                           GlobalPosition from, GlobalPosition to,
                           const std::function<void(std::int64_t)>& progress) {
  const Incarnation incarnation = [&] {
    auto lease = pool.acquire();
    pqxx::read_transaction work(*lease);
    return read_store_incarnation(work);
  }();
  PublishDeliveries deliveries;
  char error[512];
  rd_kafka_conf_t* conf = producer_conf(settings);
  rd_kafka_conf_set_dr_msg_cb(conf, &on_publish_delivery);
  rd_kafka_conf_set_opaque(conf, &deliveries);
  std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)> producer(
      rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof error), &rd_kafka_destroy);
  if (!producer) {
    rd_kafka_conf_destroy(conf);  // rd_kafka_new takes it only on success
    throw std::runtime_error(std::string("Kafka producer: ") + error);
  }

  // Partitioned as the relay does; each envelope names the position sent to its partition
  // before it in this run (the first of each, the last one before `from` in the store).
  const std::int32_t partitions = topic_partition_count(producer.get(), settings.topic);
  auto last_sent = last_positions_per_partition(pool, from.value() - 1, partitions);
  std::int64_t produced = 0;  // events
  std::int64_t messages = 0;  // messages: one per event, two with the JSON view
  std::int64_t next = from.value();
  // The range in binary, read_batch_events a COPY (as the relay reads).
  const auto chunk =
      static_cast<std::int64_t>(std::max<std::size_t>(settings.read_batch_events, 1));
  engine::LogCopyReader reader(pool, from, to, chunk);
  std::vector<RecordedEvent> batch;
  while (next <= to.value()) {
    reader.read(batch, static_cast<std::size_t>(chunk));
    if (batch.empty()) {
      throw std::runtime_error("position " + std::to_string(next) + " is missing from the event store");
    }
    for (const auto& event : batch) {
      // A hole anywhere in the range, not only at a batch's start.
      if (event.position.value() != next) {
        throw std::runtime_error("position " + std::to_string(next) +
                                 " is missing from the event store");
      }
      const auto partition = partition_for_stream(event.stream_id, partitions);
      auto& previous = last_sent[static_cast<std::size_t>(partition)];
      messages += produce_event(producer.get(), settings, event, incarnation, partition, previous);
      previous = event.position.value();
      ++produced;
      next = event.position.value() + 1;
    }
    rd_kafka_poll(producer.get(), 0);
    if (!deliveries.first_error.empty()) throw std::runtime_error("Kafka: " + deliveries.first_error);
    if (progress) progress(produced);
  }
  // Every message either arrives or fails within message.timeout.ms; flush waits for that.
  while (rd_kafka_outq_len(producer.get()) > 0) {
    rd_kafka_flush(producer.get(), 1'000);
    if (!deliveries.first_error.empty()) break;
  }
  if (!deliveries.first_error.empty()) throw std::runtime_error("Kafka: " + deliveries.first_error);
  if (deliveries.acknowledged != messages) {
    throw std::runtime_error("Kafka acknowledged " + std::to_string(deliveries.acknowledged) + " of " +
                             std::to_string(messages) + " messages");
  }
  return produced;
}

}  // namespace ledger::relay
