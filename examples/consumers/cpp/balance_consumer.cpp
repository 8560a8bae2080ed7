// A downstream consumer of the ledger: per-account balances from the Kafka topic, exactly once,
// kept in the team's own PostgreSQL database.
//
// It reads <prefix>.events, verifies and decodes each FlatBuffers envelope, and folds the
// account_entry events into `example_balances`. Exactly once, as docs/consumers.md explains:
// one database transaction applies a batch, records each stream's last applied version and each
// partition's next offset; on partition assignment the consumer seeks to the stored offsets.
// A redelivered event (its version already applied) is skipped; a missing version stops the
// consumer instead of skipping money. Several instances may share the database and the group.
//
//   balance_consumer --brokers localhost:9092 --database postgresql://... [--topic ledger.events]
//                    [--group G] [--kafka-property NAME=VALUE]...
//
// Built from the generated headers of schemas/*.fbs, librdkafka's C++ API and libpqxx only: it
// uses nothing of the ledger's own code, so it can be copied out as a starting point.
#include <signal.h>

#include <librdkafka/rdkafkacpp.h>
#include <pqxx/pqxx>

#include <atomic>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "ledger/schemas/envelope_generated.h"

namespace {

namespace schema = ledger::schema;

std::atomic<bool> stopping{false};

constexpr const char* create_tables = R"sql(
CREATE TABLE IF NOT EXISTS example_balances (
    account_id      text   PRIMARY KEY,
    debits_posted   bigint NOT NULL DEFAULT 0,
    credits_posted  bigint NOT NULL DEFAULT 0,
    debits_pending  bigint NOT NULL DEFAULT 0,
    credits_pending bigint NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS example_stream_versions (stream_id text PRIMARY KEY, version bigint NOT NULL);
CREATE TABLE IF NOT EXISTS example_kafka_offsets (
    topic text NOT NULL, partition int NOT NULL, next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition));
)sql";

struct MissingVersion : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// What one account_entry changes: PostgreSQL's bigint arithmetic raises on overflow, so the sums
// below are checked where they are stored.
struct BalanceChange {
  std::int64_t debits_posted = 0, credits_posted = 0, debits_pending = 0, credits_pending = 0;
};

BalanceChange change_of(const schema::AccountEntry& entry) {
  std::int64_t posted = 0, pending = 0;
  switch (entry.phase()) {
    case schema::EntryPhase::Posted: posted = entry.amount(); break;
    case schema::EntryPhase::Pending: pending = entry.amount(); break;
    case schema::EntryPhase::PendingPosted:  // `released` leaves pending, `amount` is posted
      pending = -entry.released();
      posted = entry.amount();
      break;
    case schema::EntryPhase::PendingReleased: pending = -entry.amount(); break;
  }
  BalanceChange change;
  if (entry.direction() == schema::EntryDirection::Debit) {
    change.debits_posted = posted;
    change.debits_pending = pending;
  } else {
    change.credits_posted = posted;
    change.credits_pending = pending;
  }
  return change;
}

// The envelope and the event inside it, verified: bytes from the network are never trusted.
const schema::Envelope* verified_envelope(const RdKafka::Message& message) {
  const auto* bytes = static_cast<const std::uint8_t*>(message.payload());
  flatbuffers::Verifier envelope_verifier(bytes, message.len());
  if (bytes == nullptr || !schema::VerifyEnvelopeBuffer(envelope_verifier)) return nullptr;
  const auto* envelope = schema::GetEnvelope(bytes);
  if (envelope->stream_id() == nullptr || envelope->payload() == nullptr) return nullptr;
  flatbuffers::Verifier event_verifier(envelope->payload()->data(), envelope->payload()->size());
  if (!schema::VerifyEventBuffer(event_verifier)) return nullptr;
  return envelope;
}

// The relay's per-partition progress markers carry this header and no event: skip them.
bool is_progress_marker(RdKafka::Message& message) {
  RdKafka::Headers* headers = message.headers();
  return headers != nullptr && headers->get_last("ledger-progress").err() == RdKafka::ERR_NO_ERROR;
}

// Applies one message inside the batch's transaction; false if it was delivered before.
bool apply_message(pqxx::work& work, RdKafka::Message& message) {
  if (is_progress_marker(message)) return false;
  const schema::Envelope* envelope = verified_envelope(message);
  if (envelope == nullptr) {
    throw std::runtime_error("offset " + std::to_string(message.offset()) + " of partition " +
                             std::to_string(message.partition()) + " is not a valid envelope");
  }
  const std::string stream_id = envelope->stream_id()->str();
  const auto stored = work.exec_params("SELECT version FROM example_stream_versions WHERE stream_id = $1", stream_id);
  const std::int64_t applied = stored.empty() ? 0 : stored[0][0].as<std::int64_t>();
  if (envelope->version() <= applied) return false;
  if (envelope->version() != applied + 1) {
    throw MissingVersion(stream_id + ": version " + std::to_string(envelope->version()) + " arrived after " +
                         std::to_string(applied) + "; fill the gap from `ledger replay export --stream`");
  }
  const auto* event = schema::GetEvent(envelope->payload()->data());
  // Every other type, and any type added after this code was written, only moves the version.
  if (const auto* entry = event->data_as_AccountEntry(); entry != nullptr && stream_id.rfind("account-", 0) == 0) {
    const BalanceChange c = change_of(*entry);
    work.exec_params(
        "INSERT INTO example_balances AS b VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id) DO UPDATE SET "
        "debits_posted = b.debits_posted + $2, credits_posted = b.credits_posted + $3, "
        "debits_pending = b.debits_pending + $4, credits_pending = b.credits_pending + $5",
        stream_id.substr(8), c.debits_posted, c.credits_posted, c.debits_pending, c.credits_pending);
  }
  work.exec_params(
      "INSERT INTO example_stream_versions VALUES ($1, $2) ON CONFLICT (stream_id) DO UPDATE SET version = $2",
      stream_id, envelope->version());
  return true;
}

void apply_batch(pqxx::connection& database, const std::vector<std::unique_ptr<RdKafka::Message>>& batch) {
  pqxx::work work(database);
  // Serialises the group's instances: during a rebalance two of them may hold the same stream.
  work.exec("LOCK TABLE example_stream_versions IN EXCLUSIVE MODE");
  std::map<std::pair<std::string, std::int32_t>, std::int64_t> next_offsets;
  for (const auto& message : batch) {
    apply_message(work, *message);
    next_offsets[{message->topic_name(), message->partition()}] = message->offset() + 1;
  }
  for (const auto& [partition, offset] : next_offsets) {
    // greatest(): the previous owner's last batch may commit after ours.
    work.exec_params(
        "INSERT INTO example_kafka_offsets VALUES ($1, $2, $3) ON CONFLICT (topic, partition) "
        "DO UPDATE SET next_offset = greatest(example_kafka_offsets.next_offset, excluded.next_offset)",
        partition.first, partition.second, offset);
  }
  work.commit();
}

// On assignment, starts each partition at the offset stored with our writes.
class SeekToStoredOffsets final : public RdKafka::RebalanceCb {
 public:
  explicit SeekToStoredOffsets(pqxx::connection& database) : database_(database) {}
  void rebalance_cb(RdKafka::KafkaConsumer* consumer, RdKafka::ErrorCode error,
                    std::vector<RdKafka::TopicPartition*>& partitions) override {
    if (error != RdKafka::ERR__ASSIGN_PARTITIONS) {
      consumer->unassign();
      return;
    }
    pqxx::read_transaction work(database_);
    for (auto* partition : partitions) {
      const auto stored = work.exec_params(
          "SELECT next_offset FROM example_kafka_offsets WHERE topic = $1 AND partition = $2", partition->topic(),
          partition->partition());
      partition->set_offset(stored.empty() ? RdKafka::Topic::OFFSET_BEGINNING : stored[0][0].as<std::int64_t>());
    }
    std::cerr << "balance_consumer: assigned " << partitions.size() << " partition(s)\n";
    consumer->assign(partitions);
  }

 private:
  pqxx::connection& database_;
};

std::unique_ptr<RdKafka::KafkaConsumer> make_consumer(const std::map<std::string, std::string>& settings,
                                                      RdKafka::RebalanceCb& rebalance) {
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  std::string error;
  for (const auto& [name, value] : settings) {
    if (conf->set(name, value, error) != RdKafka::Conf::CONF_OK) throw std::runtime_error(name + ": " + error);
  }
  if (conf->set("rebalance_cb", &rebalance, error) != RdKafka::Conf::CONF_OK) throw std::runtime_error(error);
  std::unique_ptr<RdKafka::KafkaConsumer> consumer(RdKafka::KafkaConsumer::create(conf.get(), error));
  if (!consumer) throw std::runtime_error("cannot create the consumer: " + error);
  return consumer;
}

std::optional<std::string> option(int argc, char** argv, const std::string& name) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == name) return std::string(argv[i + 1]);
  }
  return std::nullopt;
}

// Every `--kafka-property NAME=VALUE` (SASL, TLS, timeouts: any librdkafka consumer property).
void add_kafka_properties(int argc, char** argv, std::map<std::string, std::string>& settings) {
  for (int i = 1; i + 1 < argc; ++i) {
    const std::string setting = argv[i + 1];
    if (std::string(argv[i]) != "--kafka-property") continue;
    const auto equals = setting.find('=');
    if (equals == std::string::npos) throw std::runtime_error("--kafka-property needs NAME=VALUE: " + setting);
    settings[setting.substr(0, equals)] = setting.substr(equals + 1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const auto brokers = option(argc, argv, "--brokers");
  const auto database_url = option(argc, argv, "--database");
  if (!brokers || !database_url) {
    std::cerr << "usage: balance_consumer --brokers HOST:PORT --database URL [--topic T] [--group G] "
                 "[--kafka-property NAME=VALUE]...\n";
    return 64;
  }
  const std::string topic = option(argc, argv, "--topic").value_or("ledger.events");
  signal(SIGTERM, [](int) { stopping = true; });
  signal(SIGINT, [](int) { stopping = true; });
  try {
    pqxx::connection database(*database_url);
    {
      pqxx::work setup(database);
      setup.exec(create_tables);
      setup.commit();
    }
    SeekToStoredOffsets rebalance(database);
    std::map<std::string, std::string> settings{
        {"bootstrap.servers", *brokers},
        {"group.id", option(argc, argv, "--group").value_or("example-balances-cpp")},
        {"enable.auto.commit", "false"},  // the offsets live in our database, with our writes
        {"auto.offset.reset", "earliest"}};
    add_kafka_properties(argc, argv, settings);
    auto consumer = make_consumer(settings, rebalance);
    if (consumer->subscribe({topic}) != RdKafka::ERR_NO_ERROR) throw std::runtime_error("cannot subscribe");
    std::vector<std::unique_ptr<RdKafka::Message>> batch;
    while (!stopping) {
      // A batch: whatever arrives within 200 ms, at most 500 messages, in one transaction.
      std::unique_ptr<RdKafka::Message> message(consumer->consume(200));
      if (message->err() == RdKafka::ERR_NO_ERROR) {
        batch.push_back(std::move(message));
        if (batch.size() < 500) continue;
      } else if (message->err() != RdKafka::ERR__TIMED_OUT && message->err() != RdKafka::ERR__PARTITION_EOF) {
        std::cerr << "balance_consumer: " << message->errstr() << "\n";
      }
      if (!batch.empty()) apply_batch(database, batch);
      batch.clear();
    }
    consumer->close();  // leaves the group at once, so a partner takes the partitions over
  } catch (const MissingVersion& problem) {
    std::cerr << "balance_consumer: " << problem.what() << "\n";
    return 2;
  } catch (const std::exception& problem) {
    std::cerr << "balance_consumer: " << problem.what() << "\n";
    return 1;
  }
  return 0;
}
