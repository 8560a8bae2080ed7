#pragma once
// The read side against a real PostgreSQL and librdkafka's mock Kafka cluster (real protocol,
// in this process): a relay, projectors, and the fold of the event store to compare with.

#include <doctest/doctest.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pqxx/pqxx>
#include <rapidjson/document.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ledger/db/pool.hpp"
#include "ledger/engine/engine.hpp"
#include "ledger/domain/envelope.hpp"
#include "ledger/engine/event_store.hpp"
#include "ledger/domain/events.hpp"
#include "ledger/relay/relay.hpp"
#include "ledger/domain/state.hpp"
#include "ledger/projections/projector.hpp"
#include "../engine/engine_fixture.hpp"
#include "test_cluster.hpp"

namespace ledger::test {

constexpr const char* events_topic = "ledger.events";
constexpr const char* events_json_topic = "ledger.events.json";  // the relay's optional JSON view

// A mock Kafka cluster with the events topic; brokers can be taken down and brought back.
class MockKafka {
 public:
  explicit MockKafka(int brokers = 1, int partitions = 4) : brokers_(brokers), partitions_(partitions) {
    char error[256];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "2", error, sizeof error);
    handle_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof error);
    if (handle_ == nullptr) throw std::runtime_error(error);
    cluster_ = rd_kafka_mock_cluster_new(handle_, brokers);
    if (cluster_ == nullptr) throw std::runtime_error("cannot create a mock Kafka cluster");
    rd_kafka_mock_topic_create(cluster_, events_topic, partitions, 1);
    rd_kafka_mock_topic_create(cluster_, events_json_topic, partitions, 1);
  }
  ~MockKafka() {
    rd_kafka_mock_cluster_destroy(cluster_);
    rd_kafka_destroy(handle_);
  }
  MockKafka(const MockKafka&) = delete;
  MockKafka& operator=(const MockKafka&) = delete;

  [[nodiscard]] std::string bootstrap() const { return rd_kafka_mock_cluster_bootstraps(cluster_); }
  [[nodiscard]] int partitions() const { return partitions_; }
  // The next `count` Produce requests (Kafka API key 0) any client sends fail with `error`.
  void fail_produce_requests(rd_kafka_resp_err_t error, std::size_t count) {
    constexpr std::int16_t produce_api_key = 0;
    const std::vector<rd_kafka_resp_err_t> errors(count, error);
    rd_kafka_mock_push_request_errors_array(cluster_, produce_api_key, count, errors.data());
  }
  void set_down(bool down) {
    for (int id = 1; id <= brokers_; ++id) {
      if (down) {
        rd_kafka_mock_broker_set_down(cluster_, id);
      } else {
        rd_kafka_mock_broker_set_up(cluster_, id);
      }
    }
  }

 private:
  int brokers_;
  int partitions_;
  rd_kafka_t* handle_ = nullptr;
  rd_kafka_mock_cluster_t* cluster_ = nullptr;
};

// Publishes one envelope as the relay would (key = stream id, the `position` header), from a
// producer of the test's own: what a forger with access to the topic can do.
inline void produce_envelope(const MockKafka& kafka, const domain::RecordedEvent& event,
                             const std::string& envelope) {
  char error[256];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", kafka.bootstrap().c_str(), error, sizeof error);
  rd_kafka_conf_set(conf, "log_level", "2", error, sizeof error);
  std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)> producer(
      rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof error), &rd_kafka_destroy);
  REQUIRE(producer);
  const std::string position = std::to_string(event.position.value());
  rd_kafka_headers_t* headers = rd_kafka_headers_new(2);
  rd_kafka_header_add(headers, "event-type", -1, event.type.data(), static_cast<ssize_t>(event.type.size()));
  rd_kafka_header_add(headers, "position", -1, position.data(), static_cast<ssize_t>(position.size()));
  REQUIRE(rd_kafka_producev(producer.get(), RD_KAFKA_V_TOPIC(events_topic),
                            RD_KAFKA_V_KEY(event.stream_id.data(), event.stream_id.size()),
                            RD_KAFKA_V_VALUE(const_cast<char*>(envelope.data()), envelope.size()),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers),
                            RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR_NO_ERROR);
  REQUIRE(rd_kafka_flush(producer.get(), 10'000) == RD_KAFKA_RESP_ERR_NO_ERROR);
}

// Reads the events topic from the start of each partition to its end, as a new consumer
// would, and hands every message's partition and payload to `visit` in the order they arrive.
inline void for_each_topic_message(const MockKafka& kafka,
                                   const std::function<void(std::int32_t, std::string_view)>& visit) {
  char error[256];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", kafka.bootstrap().c_str(), error, sizeof error);
  rd_kafka_conf_set(conf, "group.id", "test-topic-reader", error, sizeof error);
  rd_kafka_conf_set(conf, "enable.partition.eof", "true", error, sizeof error);
  rd_kafka_conf_set(conf, "log_level", "2", error, sizeof error);
  std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)> consumer(
      rd_kafka_new(RD_KAFKA_CONSUMER, conf, error, sizeof error), &rd_kafka_destroy);
  REQUIRE(consumer);
  rd_kafka_topic_partition_list_t* partitions = rd_kafka_topic_partition_list_new(kafka.partitions());
  for (int p = 0; p < kafka.partitions(); ++p) {
    rd_kafka_topic_partition_list_add(partitions, events_topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
  }
  rd_kafka_assign(consumer.get(), partitions);
  rd_kafka_topic_partition_list_destroy(partitions);
  std::set<std::int32_t> ended;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (static_cast<int>(ended.size()) < kafka.partitions() && std::chrono::steady_clock::now() < deadline) {
    rd_kafka_message_t* message = rd_kafka_consumer_poll(consumer.get(), 100);
    if (message == nullptr) continue;
    if (message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      ended.insert(message->partition);
    } else if (message->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      visit(message->partition, {static_cast<const char*>(message->payload), message->len});
    }
    rd_kafka_message_destroy(message);
  }
  REQUIRE(static_cast<int>(ended.size()) == kafka.partitions());
  rd_kafka_consumer_close(consumer.get());
}

// Every message on the events topic, decoded, per partition in offset order.
inline std::map<std::int32_t, std::vector<domain::RecordedEvent>> read_topic(const MockKafka& kafka) {
  std::map<std::int32_t, std::vector<domain::RecordedEvent>> messages;
  for_each_topic_message(kafka, [&](std::int32_t partition, std::string_view payload) {
    if (auto event = domain::decode_envelope(payload)) messages[partition].push_back(std::move(*event));
  });
  return messages;
}

inline relay::RelaySettings relay_settings(const MockKafka& kafka) {
  relay::RelaySettings settings;
  settings.brokers = kafka.bootstrap();
  settings.topic = events_topic;
  settings.poll_interval = std::chrono::milliseconds(100);
  return settings;
}

inline projections::ProjectorSettings projector_settings(const MockKafka& kafka) {
  projections::ProjectorSettings settings;
  settings.brokers = kafka.bootstrap();
  settings.topic = events_topic;
  settings.gap_wait = std::chrono::milliseconds(2'000);
  return settings;
}

// Polls `done` every 20 ms for at most `limit`; true when it held.
inline bool eventually(const std::function<bool()>& done,
                       std::chrono::milliseconds limit = std::chrono::seconds(120)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

inline std::int64_t store_head(const std::string& url) {
  return scalar(url, "SELECT position FROM event_store_head");
}

inline std::int64_t watermark(const std::string& url, const std::string& projection) {
  return scalar(url, "SELECT watermark FROM read.projections WHERE name = '" + projection + "'");
}

// The watermark of the projection's most advanced partition (projections/README.md, "Partitions").
inline std::int64_t highest_partition_watermark(const std::string& url, const std::string& projection) {
  return scalar(url, "SELECT coalesce(max(position), 0) FROM read.partition_watermarks WHERE projection = '" +
                         projection + "'");
}

inline bool read_models_caught_up(const std::string& url) {
  const auto head = store_head(url);
  return watermark(url, "balance") == head && watermark(url, "audit") == head;
}

// A digest of every read-model row, to show that something changed nothing.
inline std::string read_model_digest(const std::string& url) {
  pqxx::connection connection(url);
  pqxx::read_transaction work(connection);
  return work.exec1(
      "SELECT md5(coalesce((SELECT string_agg(b::text, '|' ORDER BY account_id) FROM read.balances b), '')) || "
      "md5(coalesce((SELECT string_agg(e::text, '|' ORDER BY account_id, position) FROM read.entries e), '')) || "
      "md5(coalesce((SELECT string_agg(a::text, '|' ORDER BY position) FROM read.audit a), ''))")[0]
      .as<std::string>();
}

// Appends one event straight into the store as the schema owner, chained to the head and with
// the stream's next version, bypassing the engine (which refuses to write an event it cannot
// decode): what an older version's bug could have left in the log. Returns its position.
inline std::int64_t append_raw_event(const std::string& admin_url, const std::string& stream_id,
                                     const std::string& type, const std::string& payload) {
  pqxx::connection connection(admin_url);
  pqxx::work work(connection);
  const auto head = work.exec1("SELECT position, hash FROM event_store_head FOR UPDATE");
  domain::RecordedEvent event;
  event.position = GlobalPosition(head[0].as<std::int64_t>() + 1);
  event.stream_id = stream_id;
  event.version = StreamVersion(
      work.exec_params1("SELECT coalesce(max(version), 0) + 1 FROM events WHERE stream_id = $1", stream_id)[0]
          .as<std::int64_t>());
  event.event_id = work.exec1("SELECT gen_random_uuid()::text")[0].as<std::string>();
  event.type = type;
  event.payload = payload;
  event.metadata.actor = "test-owner";
  event.recorded_at_us =
      work.exec1("SELECT (extract(epoch FROM date_trunc('milliseconds', now())) * 1000000)::bigint")[0]
          .as<std::int64_t>();
  event.hash = domain::chain_hash(pqxx::binarystring(head[1]).str(), event);
  work.exec_params(
      "INSERT INTO events (position, stream_id, version, event_id, type, schema_version, payload, metadata, "
      "recorded_at, hash) VALUES ($1, $2, $3, $4::uuid, $5, $6, $7, $8::jsonb, "
      "'epoch'::timestamptz + $9 * interval '1 microsecond', $10)",
      event.position.value(), event.stream_id, event.version.value(), event.event_id, event.type,
      static_cast<int>(event.schema_version), pqxx::binarystring(event.payload),
      domain::metadata_to_json(event.metadata), event.recorded_at_us, pqxx::binarystring(event.hash));
  work.exec_params("UPDATE event_store_head SET position = $1, hash = $2", event.position.value(),
                   pqxx::binarystring(event.hash));
  work.commit();
  return event.position.value();
}

// Folds the whole event store and checks every row of every read model against it.
inline void check_read_models_equal_fold(const std::string& url) {
  auto pool = make_pool(url, 2);
  engine::EventStore store(pool);
  std::map<std::string, domain::AccountState> accounts;
  std::vector<std::string> expected_entries;
  std::vector<domain::RecordedEvent> all;
  for (std::int64_t next = 1;;) {
    auto batch = store.read_all(GlobalPosition(next), 10'000);
    if (batch.empty()) break;
    next = batch.back().position.value() + 1;
    for (auto& event : batch) all.push_back(std::move(event));
  }
  REQUIRE(static_cast<std::int64_t>(all.size()) == store_head(url));
  for (const auto& event : all) {
    if (!event.stream_id.starts_with("account-")) continue;
    const std::string id = event.stream_id.substr(8);
    auto decoded = domain::decode_event(event.type, event.payload);
    REQUIRE(decoded);
    auto& state = accounts[id];
    domain::apply(state, *decoded);
    if (const auto* entry = std::get_if<domain::events::AccountEntry>(&*decoded)) {
      expected_entries.push_back(id + "|" + std::to_string(event.position.value()) + "|" +
                                 entry->transfer_id + "|" +
                                 (entry->direction == domain::events::Direction::debit ? "debit" : "credit") +
                                 "|" + std::to_string(entry->amount) + "|" + entry->counterparty + "|" +
                                 std::to_string(state.balance()->minor_units()));
    }
  }
  std::sort(expected_entries.begin(), expected_entries.end());

  pqxx::connection connection(url);
  pqxx::read_transaction work(connection);
  const auto balances = work.exec(
      "SELECT account_id, currency, status, debits_posted, credits_posted, debits_pending, "
      "credits_pending, pending_count, version, overdraft_limit, kind FROM read.balances");
  CHECK(balances.size() == accounts.size());
  int mismatched = 0;
  for (const auto& row : balances) {
    const auto found = accounts.find(row[0].as<std::string>());
    REQUIRE(found != accounts.end());
    const auto& s = found->second;
    const bool same = row[1].as<std::string>() == s.currency.str() &&
                      row[2].as<std::string>() == domain::to_string(s.status) &&
                      row[3].as<std::int64_t>() == s.debits_posted.minor_units() &&
                      row[4].as<std::int64_t>() == s.credits_posted.minor_units() &&
                      row[5].as<std::int64_t>() == s.debits_pending.minor_units() &&
                      row[6].as<std::int64_t>() == s.credits_pending.minor_units() &&
                      row[7].as<std::int64_t>() == s.pending_count &&
                      row[8].as<std::int64_t>() == s.version.value() &&
                      row[9].as<std::int64_t>() == s.overdraft_limit.minor_units() &&
                      row[10].as<std::string>() == domain::to_string(s.kind);
    if (!same) ++mismatched;
  }
  CHECK(mismatched == 0);

  std::vector<std::string> entries;
  for (const auto& row : work.exec(
           "SELECT account_id || '|' || position || '|' || transfer_id || '|' || direction || '|' || "
           "amount || '|' || counterparty || '|' || balance_after FROM read.entries")) {
    entries.push_back(row[0].as<std::string>());
  }
  std::sort(entries.begin(), entries.end());
  CHECK(entries.size() == expected_entries.size());
  CHECK(entries == expected_entries);

  // The audit row holds what its query filters by but the stream (the store's index serves
  // that); the rest of an answer is read from the store (tests/replay: the slim audit answers
  // what its jsonb copy did).
  const auto audit = work.exec(
      "SELECT position, type, actor, (extract(epoch FROM recorded_at) * 1000000)::bigint "
      "FROM read.audit ORDER BY position");
  REQUIRE(audit.size() == all.size());
  int audit_mismatched = 0;
  for (std::size_t i = 0; i < all.size(); ++i) {
    const auto& e = all[i];
    const auto& row = audit[static_cast<int>(i)];
    if (row[0].as<std::int64_t>() != e.position.value() || row[1].as<std::string>() != e.type ||
        row[2].as<std::string>() != e.metadata.actor ||
        row[3].as<std::int64_t>() != e.recorded_at_us) {
      ++audit_mismatched;
    }
  }
  CHECK(audit_mismatched == 0);
}

// --- a workload and the projectors, for tests that need a busy read side -------------------

inline constexpr int account_count = 200;

inline std::string account_name(int i) { return "acct-" + std::to_string(i); }

inline void open_accounts(ledger::engine::Engine& engine) {
  for (int i = 0; i < account_count; ++i) {
    ledger::domain::OpenAccount open{account_name(i), eur()};
    open.overdraft_limit = Amount(i % 10 == 0 ? 5'000 : 0);
    REQUIRE(engine.execute(command(open)).accepted());
    REQUIRE(engine.execute(command(ledger::domain::Deposit{account_name(i), Amount(50'000 + i)})).accepted());
  }
}

// `count` random transfers, holds, posts, voids, deposits and withdrawals from `threads`
// client threads (several in flight each, so batches form). Returns how many were accepted.
inline int random_workload(ledger::engine::Engine& engine, int count, int threads = 4, unsigned seed = 7) {
  std::atomic<int> accepted{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < threads; ++t) {
    clients.emplace_back([&, t] {
      std::mt19937 random(seed + static_cast<unsigned>(t));
      std::vector<std::string> holds;
      std::vector<std::pair<std::future<ledger::domain::CommandOutcome>, bool>> in_flight;
      auto settle = [&](std::size_t keep) {
        while (in_flight.size() > keep) {
          auto [future, is_hold] = std::move(in_flight.front());
          in_flight.erase(in_flight.begin());
          const auto outcome = future.get();
          if (!outcome.accepted()) continue;
          ++accepted;
          if (is_hold) holds.push_back(outcome.resource_ids.front());
        }
      };
      for (int n = 0; n < count / threads; ++n) {
        const int from = static_cast<int>(random() % account_count);
        const int to = (from + 1 + static_cast<int>(random() % (account_count - 1))) % account_count;
        const Amount amount(1 + static_cast<std::int64_t>(random() % 4'000));
        const int kind = static_cast<int>(random() % 20);
        bool is_hold = false;
        std::future<ledger::domain::CommandOutcome> outcome;
        if (kind < 10 || (kind >= 14 && kind < 18 && holds.empty())) {
          outcome = engine.submit(command(ledger::domain::Transfer{"", account_name(from), account_name(to), amount, eur()}));
        } else if (kind < 14) {
          is_hold = true;
          outcome = engine.submit(command(ledger::domain::PlaceHold{"", account_name(from), account_name(to), amount, eur()}));
        } else if (kind < 18) {
          const std::string hold = holds.back();
          holds.pop_back();
          outcome = kind % 2 == 0 ? engine.submit(command(ledger::domain::PostHold{hold, Amount(amount.minor_units() % 100 + 1)}))
                                  : engine.submit(command(ledger::domain::VoidHold{hold}));
        } else if (kind == 18) {
          outcome = engine.submit(command(ledger::domain::Deposit{account_name(from), amount}));
        } else {
          outcome = engine.submit(command(ledger::domain::Withdrawal{account_name(from), amount}));
        }
        in_flight.emplace_back(std::move(outcome), is_hold);
        settle(16);
      }
      settle(0);
    });
  }
  for (auto& client : clients) client.join();
  return accepted;
}

struct Projectors {
  // `share_reads`: as `ledger project all` runs them, catch-up reads shared.
  Projectors(db::ConnectionPool& pool, const projections::ProjectorSettings& settings,
             bool share_reads = false) {
    const auto shared = share_reads ? projections::make_catch_up_reads(pool) : nullptr;
    for (const auto kind : projections::all_projections()) {
      running.push_back(std::make_unique<projections::Projector>(kind, settings, pool, shared));
      running.back()->start();
    }
  }
  // Whether every projector's status has counted its rounds up to `position`: a projector
  // updates its status after its round commits, so the database can show a round first.
  [[nodiscard]] bool counted_through(std::int64_t position) const {
    for (const auto& projector : running) {
      if (projector->status().watermark.value() < position) return false;
    }
    return true;
  }
  std::int64_t duplicates_skipped() const {
    std::int64_t total = 0;
    for (const auto& projector : running) total += projector->status().duplicates_skipped;
    return total;
  }
  std::int64_t events_from_store() const {
    std::int64_t total = 0;
    for (const auto& projector : running) total += projector->status().events_from_store;
    return total;
  }
  std::vector<std::unique_ptr<projections::Projector>> running;
};

// One test database's write and read side, started in the order a deployment starts them: the
// engine, the relay to a mock Kafka cluster, then every projector. Destroyed in reverse.
// Tests take the parts by structured binding: auto& [kafka, pool, engine, relay, projectors].
struct ReadSideStack {
  explicit ReadSideStack(const TestDatabase& database, std::size_t pool_connections = 6,
                         const std::function<void(projections::ProjectorSettings&)>& adjust = {})
      : pool(make_pool(database.app_url(), pool_connections)),
        engine(engine_settings(database)),
        relay(relay_settings(kafka), pool),
        projectors(started(relay, pool), adjusted(projector_settings(kafka), adjust)) {}

  MockKafka kafka;
  db::ConnectionPool pool;
  engine::Engine engine;
  relay::Relay relay;
  Projectors projectors;

 private:
  // Starts the relay before the projectors are constructed (member initialisation order).
  static db::ConnectionPool& started(relay::Relay& relay, db::ConnectionPool& pool) {
    relay.start();
    return pool;
  }
  static projections::ProjectorSettings adjusted(
      projections::ProjectorSettings settings,
      const std::function<void(projections::ProjectorSettings&)>& adjust) {
    if (adjust) adjust(settings);
    return settings;
  }
};

// Opens `accounts` funded accounts and submits `transfers` random transfers between them, all
// at once, for the process tests that need a backlog to publish or project.
inline void make_backlog(engine::Engine& engine, int accounts, int transfers) {
  for (int i = 0; i < accounts; ++i) {
    REQUIRE(engine.execute(command(domain::OpenAccount{"k" + std::to_string(i), eur()})).accepted());
    REQUIRE(engine.execute(command(domain::Deposit{"k" + std::to_string(i), Amount(1'000'000)})).accepted());
  }
  std::mt19937 random(99);
  std::vector<std::future<domain::CommandOutcome>> outcomes;
  for (int n = 0; n < transfers; ++n) {
    const int from = static_cast<int>(random() % accounts);
    const int to = (from + 1 + static_cast<int>(random() % (accounts - 1))) % accounts;
    outcomes.push_back(engine.submit(command(
        domain::Transfer{"", "k" + std::to_string(from), "k" + std::to_string(to), Amount(1 + random() % 500), eur()})));
  }
  for (auto& outcome : outcomes) REQUIRE(outcome.get().accepted());
}

// An empty directory of its own under the temporary directory, for a process's home.
inline std::filesystem::path scratch_directory(const std::string& name) {
  auto directory = std::filesystem::temp_directory_path() / ("ledger-" + name + "-" + std::to_string(getpid()));
  std::filesystem::remove_all(directory);
  std::filesystem::create_directories(directory);
  return directory;
}

}  // namespace ledger::test
