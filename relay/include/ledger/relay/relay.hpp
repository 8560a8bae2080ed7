#pragma once
// The relay (transactional outbox): tails the event store by position and publishes every
// event to Kafka per the contract in DESIGN.md, at least once and in order per stream.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "ledger/core/strong_type.hpp"
#include "ledger/domain/envelope.hpp"

namespace ledger::db {
class ConnectionPool;
}

namespace pqxx {
class connection_base;
class transaction_base;
}  // namespace pqxx

namespace ledger::relay {

struct RelaySettings {
  std::string brokers;                // Kafka bootstrap servers
  std::string topic = "ledger.events";
  // When set, each event is also published here as JSON (the export line format; same key,
  // headers with content-type application/json) for consumers without FlatBuffers. An event
  // counts as acknowledged once both topics acknowledged it.
  std::string json_topic;
  std::string checkpoint_name = "relay";  // row of `checkpoints` holding the acknowledged position
  // Only the instance holding this PostgreSQL advisory lock publishes; the others wait.
  std::int64_t leader_lock_key = 0x6c65646765720001;
  std::size_t read_batch_events = 5'000;
  // Reading pauses while this many events await Kafka's acknowledgement.
  std::size_t in_flight_events_max = 200'000;
  // Fallback poll when no append notification arrives; also the standby's retry interval.
  std::chrono::milliseconds poll_interval{500};
  std::chrono::milliseconds checkpoint_interval{100};
  // A progress marker per partition (the `ledger-progress` header; docs/consumers.md) at most
  // this often, once the relay has sent everything it read: it tells the consumers of a
  // partition no event has been sent that everything up to the position sent is there.
  std::chrono::milliseconds marker_interval{20};
  // How often to check that the broker still holds what it acknowledged.
  std::chrono::milliseconds broker_check_interval{30'000};
  // A message Kafka has not acknowledged within this is republished (0: wait forever).
  std::chrono::milliseconds delivery_timeout{60'000};
  // The lowest position a consumer still needs (the read models' lowest watermark): when the
  // broker lost acknowledged data, publishing starts again after it. Unset: from the start.
  // The composer passes it, so the relay knows nothing of the read side.
  std::function<GlobalPosition()> lowest_position_needed;
  // Extra librdkafka producer properties (e.g. security settings).
  std::map<std::string, std::string> kafka_properties;
};

struct RelayStatus {
  bool running = false;
  bool leader = false;               // this instance holds the lock and publishes
  GlobalPosition acknowledged{0};    // every event up to here is acknowledged by Kafka
  GlobalPosition published{0};       // highest position handed to the producer
  std::int64_t events_acknowledged = 0;  // since start
  std::int64_t delivery_failures = 0;    // since start
  std::int64_t republishes = 0;          // rewinds after failures or a broker that lost data
  std::int64_t producer_recreations = 0;  // producers replaced after a fatal error
  bool kafka_reachable = false;
  std::string kafka_error;               // last error reported by librdkafka, if any
  double oldest_unacknowledged_seconds = 0;
  std::string incarnation;               // the store's incarnation it publishes under
  std::int32_t partitions = 0;           // of the events topic, read when leadership began
  std::int64_t markers_sent = 0;         // progress markers handed to the producer since start
  // A position the event store lacks, where publishing stopped until it is back (0: none).
  GlobalPosition missing_position{0};
};

using domain::Incarnation;

// The store's current incarnation (table store_incarnation).
[[nodiscard]] Incarnation read_store_incarnation(pqxx::transaction_base& work);
// Gives the store a new incarnation beginning at its current head (after a point-in-time
// restore, before anything appends: `ledger migrate new-incarnation`). Needs the schema owner.
Incarnation begin_store_incarnation(pqxx::connection_base& connection);

// Runs on its own thread from start() to stop(). Reads with `pool`; takes one dedicated
// connection for the leader lock and the append notifications and, while it leads, one more
// from the pool's URL for reading the log (a binary COPY, which libpqxx 6 cannot run).
class Relay {
 public:
  Relay(RelaySettings settings, db::ConnectionPool& pool);
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  void start();
  // Waits for in-flight messages (bounded) and records the last checkpoint.
  void stop();
  [[nodiscard]] RelayStatus status() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Publishes positions [from, to] once more, exactly as the relay does, and waits until Kafka
// acknowledged every one (`ledger replay publish`: downstream consumers that must reprocess).
// `progress` gets the count handed to Kafka so far. Throws on a delivery failure.
std::int64_t publish_range(const RelaySettings& settings, db::ConnectionPool& pool, GlobalPosition from,
                           GlobalPosition to, const std::function<void(std::int64_t)>& progress = {});

}  // namespace ledger::relay
