// The event store and the engine against a real PostgreSQL: dense positions, dense versions,
// idempotency, crash before commit, tamper evidence, the snapshot cache, and version conflicts.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include "engine_fixture.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/engine/event_store.hpp"
#include "ledger/engine/snapshot_store.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using test::command;
using test::eur;

namespace {

void open_and_fund(Engine& engine, const std::string& id, std::int64_t amount) {
  REQUIRE(engine.execute(command(domain::OpenAccount{id, eur()})).accepted());
  if (amount > 0) REQUIRE(engine.execute(command(domain::Deposit{id, Amount(amount)})).accepted());
}

db::PoolSettings pool_settings(const std::string& url) {
  db::PoolSettings settings;
  settings.url = url;
  settings.connections_max = 2;
  return settings;
}

}  // namespace

TEST_CASE("appends get dense positions, dense versions and a verifiable hash chain") {
  test::TestDatabase database;
  Engine engine(test::engine_settings(database));
  open_and_fund(engine, "alice", 10'000);
  open_and_fund(engine, "bob", 0);
  const auto outcome = engine.execute(command(domain::Transfer{"t1", "alice", "bob", Amount(2'500), eur()}));
  REQUIRE(outcome.accepted());
  // Transfer stream, alice, bob: three events, the last one at the command's position.
  CHECK(outcome.versions.size() == 3);
  CHECK(outcome.position.value() ==
        test::scalar(database.app_url(), "SELECT max(position) FROM events"));

  db::ConnectionPool pool(pool_settings(database.app_url()));
  EventStore store(pool);
  const auto all = store.read_all(GlobalPosition(1), 1000);
  REQUIRE(!all.empty());
  for (std::size_t i = 0; i < all.size(); ++i) CHECK(all[i].position.value() == static_cast<std::int64_t>(i + 1));
  const auto alice = store.read_stream("account-alice", StreamVersion(1), 100);
  for (std::size_t i = 0; i < alice.size(); ++i) CHECK(alice[i].version.value() == static_cast<std::int64_t>(i + 1));
  CHECK(alice.front().metadata.actor == "test");
  CHECK(!alice.front().metadata.command_id.empty());
  CHECK(store.head().position == all.back().position);
  CHECK(store.head().hash == all.back().hash);
  const auto verification = store.verify_chain();
  CHECK(verification.ok);
  CHECK(verification.events_checked == static_cast<std::int64_t>(all.size()));

  const auto state = engine.read_account("bob");
  REQUIRE(state.has_value());
  CHECK(state->credits_posted == Amount(2'500));
  CHECK(engine.read_account("alice")->balance() == Amount(7'500));
}

TEST_CASE("commit_wait_max gathers what is submitted at once into one large batch; the chain verifies") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  // Let the writer gather what is submitted at once into one batch.
  settings.commit_wait_max = std::chrono::milliseconds(300);
  Engine engine(settings);
  open_and_fund(engine, "alice", 1'000'000);
  open_and_fund(engine, "bob", 0);
  // 400 transfers at once: one batch of 1,200 events.
  std::vector<std::future<domain::CommandOutcome>> outcomes;
  for (int i = 0; i < 400; ++i) {
    outcomes.push_back(engine.submit(command(domain::Transfer{"", "alice", "bob", Amount(1 + i), eur()})));
  }
  for (auto& outcome : outcomes) REQUIRE(outcome.get().accepted());
  // Then one transfer on its own: a batch of three events.
  REQUIRE(engine.execute(command(domain::Transfer{"", "bob", "alice", Amount(7), eur()})).accepted());

  const auto stats = engine.stats();
  const auto& bounds = stats.batch_commands.upper_bounds();
  const auto at_most_100 = stats.batch_commands.cumulative_counts()[static_cast<std::size_t>(
      std::find(bounds.begin(), bounds.end(), 100.0) - bounds.begin())];
  CHECK(stats.batch_commands.count() - at_most_100 >= 1);  // a batch of more than 100 commands
  CHECK(at_most_100 >= 1);                                 // and small ones

  db::ConnectionPool pool(pool_settings(database.app_url()));
  EventStore store(pool);
  const auto verification = store.verify_chain();
  CHECK(verification.ok);
  CHECK(verification.events_checked == test::scalar(database.app_url(), "SELECT count(*) FROM events"));
  const auto all = store.read_all(GlobalPosition(1), 10'000);
  for (std::size_t i = 0; i < all.size(); ++i) CHECK(all[i].position.value() == static_cast<std::int64_t>(i + 1));
  CHECK(all.back().metadata.actor == "test");
  CHECK(all.back().recorded_at_us > all.front().recorded_at_us);
  CHECK(engine.read_account("bob")->balance() == Amount(400 * 401 / 2 - 7));
}

TEST_CASE("the same idempotency key and request answers the first outcome; another request is refused") {
  test::TestDatabase database;
  Engine engine(test::engine_settings(database));
  open_and_fund(engine, "alice", 1'000);
  const auto events_before = test::scalar(database.app_url(), "SELECT count(*) FROM events");

  const auto first = engine.execute(command(domain::Withdrawal{"alice", Amount(300)}, "key-1", "withdraw 300"));
  REQUIRE(first.accepted());
  CHECK_FALSE(first.replayed);
  const auto events_after_first = test::scalar(database.app_url(), "SELECT count(*) FROM events");
  CHECK(events_after_first == events_before + 3);

  const auto again = engine.execute(command(domain::Withdrawal{"alice", Amount(300)}, "key-1", "withdraw 300"));
  CHECK(again.accepted());
  CHECK(again.replayed);
  CHECK(again.command_id == first.command_id);
  CHECK(again.position == first.position);
  CHECK(again.versions == first.versions);
  CHECK(again.resource_ids == first.resource_ids);

  const auto other = engine.execute(command(domain::Withdrawal{"alice", Amount(500)}, "key-1", "withdraw 500"));
  CHECK(other.code == RejectionCode::idempotency_key_reused);
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events_after_first);
  CHECK(engine.read_account("alice")->balance() == Amount(700));

  // A second engine (another instance, empty cache) answers the same from the store.
  Engine other_instance(test::engine_settings(database));
  const auto from_other =
      other_instance.execute(command(domain::Withdrawal{"alice", Amount(300)}, "key-1", "withdraw 300"));
  CHECK(from_other.replayed);
  CHECK(from_other.position == first.position);

  // A rejection is remembered too: retrying it gives the same answer even after funds arrive.
  const auto refused = engine.execute(command(domain::Withdrawal{"alice", Amount(5'000)}, "key-2", "w 5000"));
  CHECK(refused.code == RejectionCode::insufficient_funds);
  REQUIRE(engine.execute(command(domain::Deposit{"alice", Amount(10'000)})).accepted());
  const auto refused_again = engine.execute(command(domain::Withdrawal{"alice", Amount(5'000)}, "key-2", "w 5000"));
  CHECK(refused_again.code == RejectionCode::insufficient_funds);
  CHECK(refused_again.replayed);

  // The same key twice inside one batch: one set of events.
  auto a = engine.submit(command(domain::Withdrawal{"alice", Amount(1)}, "key-3", "w 1"));
  auto b = engine.submit(command(domain::Withdrawal{"alice", Amount(1)}, "key-3", "w 1"));
  const auto outcome_a = a.get();
  const auto outcome_b = b.get();
  CHECK(outcome_a.accepted());
  CHECK(outcome_b.accepted());
  CHECK(outcome_a.position == outcome_b.position);
  CHECK(test::scalar(database.app_url(),
                     "SELECT count(*) FROM events WHERE metadata->>'command_id' = '" +
                         outcome_a.command_id + "'") == 3);
}

TEST_CASE("a batch whose connection dies before commit leaves nothing behind; the engine goes on") {
  test::TestDatabase database;
  Engine engine(test::engine_settings(database));
  open_and_fund(engine, "alice", 1'000);
  open_and_fund(engine, "bob", 0);
  const auto events_before = test::scalar(database.app_url(), "SELECT count(*) FROM events");

  // Make the next append hang inside its transaction, then kill its connection there.
  {
    pqxx::connection admin(database.admin_url());
    pqxx::work work(admin);
    work.exec(
        "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(30); RETURN NEW; END $$");
    work.exec(
        "CREATE TRIGGER slow_insert BEFORE INSERT ON events FOR EACH ROW "
        "EXECUTE FUNCTION slow_insert()");
    work.commit();
  }
  auto pending = engine.submit(command(domain::Transfer{"t-crash", "alice", "bob", Amount(100), eur()}));
  {
    pqxx::connection admin(database.admin_url());
    int killed = 0;
    for (int attempt = 0; attempt < 200 && killed == 0; ++attempt) {
      pqxx::work work(admin);
      killed = work.exec1(
                       "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND usename = 'ledger_app' "
                       "AND wait_event = 'PgSleep'")[0]
                   .as<int>();
      // In the same transaction: the DROP queues for the table lock before the engine's retry
      // can, so the retry never meets the sleeping trigger (it waits for this commit instead).
      if (killed == 1) work.exec("DROP TRIGGER slow_insert ON events");
      work.commit();
      if (killed == 0) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    REQUIRE(killed == 1);
  }
  // Nothing of the killed transaction is visible; the engine retries on a new connection.
  const auto outcome = pending.get();
  CHECK(outcome.accepted());
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events_before + 3);
  CHECK(test::scalar(database.app_url(), "SELECT max(position) FROM events") == events_before + 3);
  CHECK(engine.execute(command(domain::Transfer{"t-after", "alice", "bob", Amount(100), eur()})).accepted());
  CHECK(engine.read_account("bob")->balance() == Amount(200));
}

TEST_CASE("tampering with a stored event is found by re-verifying the chain") {
  test::TestDatabase database;
  {
    Engine engine(test::engine_settings(database));
    open_and_fund(engine, "alice", 1'000);
    open_and_fund(engine, "bob", 500);
    REQUIRE(engine.execute(command(domain::Transfer{"t1", "alice", "bob", Amount(10), eur()})).accepted());
  }
  db::ConnectionPool pool(pool_settings(database.app_url()));
  EventStore store(pool);
  REQUIRE(store.verify_chain().ok);
  const auto total = store.head().position.value();
  REQUIRE(total > 6);

  SUBCASE("an altered payload") {
    pqxx::connection admin(database.admin_url());
    pqxx::work work(admin);
    work.exec("SET session_replication_role = replica");  // superuser bypass of the trigger
    work.exec("UPDATE events SET payload = payload || '\\x00'::bytea WHERE position = 5");
    work.commit();
    const auto verification = store.verify_chain();
    CHECK_FALSE(verification.ok);
    CHECK(verification.first_bad_position.value() == 5);
  }
  SUBCASE("altered metadata") {
    pqxx::connection admin(database.admin_url());
    pqxx::work work(admin);
    work.exec("SET session_replication_role = replica");
    work.exec("UPDATE events SET metadata = jsonb_set(metadata, '{actor}', '\"mallory\"') WHERE position = 3");
    work.commit();
    const auto verification = store.verify_chain();
    CHECK_FALSE(verification.ok);
    CHECK(verification.first_bad_position.value() == 3);
  }
  SUBCASE("a deleted event") {
    pqxx::connection admin(database.admin_url());
    pqxx::work work(admin);
    work.exec("SET session_replication_role = replica");
    work.exec("DELETE FROM events WHERE position = 4");
    work.commit();
    const auto verification = store.verify_chain();
    CHECK_FALSE(verification.ok);
    CHECK(verification.first_bad_position.value() == 4);
    CHECK(verification.problem == "event missing");
  }
}

namespace {

// Collects what the process logs (spdlog's default logger) while it lives, so a test can see
// what was reported. Install it while no engine runs: spdlog's sink list is not thread-safe.
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<Sink>()) {
    sink_->set_pattern("%l %v");
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~LogCapture() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  // The lines logged since the last call ("level message"), and forgets them.
  [[nodiscard]] std::vector<std::string> take() {
    std::lock_guard lock(sink_->lines_mutex);
    return std::exchange(sink_->lines, {});
  }

 private:
  struct Sink : spdlog::sinks::base_sink<std::mutex> {
    std::mutex lines_mutex;
    std::vector<std::string> lines;

   protected:
    void sink_it_(const spdlog::details::log_msg& message) override {
      spdlog::memory_buf_t formatted;
      formatter_->format(message, formatted);
      std::string line(formatted.data(), formatted.size());
      while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
      std::lock_guard lock(lines_mutex);
      lines.push_back(std::move(line));
    }
    void flush_() override {}
  };
  std::shared_ptr<Sink> sink_;
};

// How many of `lines` contain every one of `parts`.
std::size_t count_lines(const std::vector<std::string>& lines,
                        std::initializer_list<std::string_view> parts) {
  return static_cast<std::size_t>(
      std::count_if(lines.begin(), lines.end(), [&](const std::string& line) {
        return std::all_of(parts.begin(), parts.end(), [&](std::string_view part) {
          return line.find(part) != std::string::npos;
        });
      }));
}

std::string describe(const CommandOutcome& outcome) {
  std::string text(to_string(outcome.code));
  if (!outcome.detail.empty()) text += " (" + outcome.detail + ")";
  if (outcome.failed_member) text += " member " + std::to_string(*outcome.failed_member);
  text += " at " + std::to_string(outcome.position.value());
  for (const auto& [stream_id, version] : outcome.versions) {
    text += " " + stream_id + "@" + std::to_string(version.value());
  }
  for (const auto& id : outcome.resource_ids) text += " id " + id;
  if (outcome.replayed) text += " replayed";
  return text;
}

std::string describe(const std::optional<domain::AccountState>& account) {
  if (!account) return "no such account";
  const auto available = account->available();
  return fmt::format("{} posted -{} +{} pending -{} +{} holds {} available {} version {}",
                     to_string(account->status), account->debits_posted.minor_units(),
                     account->credits_posted.minor_units(), account->debits_pending.minor_units(),
                     account->credits_pending.minor_units(), account->pending_count,
                     available ? std::to_string(available->minor_units()) : "overflow",
                     account->version.value());
}

// The customer accounts of the snapshot test, named after what is done to their snapshot.
const std::vector<std::string> snapshot_accounts = {
    "intact",   // left alone: a current, valid snapshot
    "behind",   // an older, valid snapshot: used, and the tail folded on top
    "stale",    // the right version with a hash the store does not have, and a richer balance
    "ahead",    // a version the event store has never reached
    "missing",  // deleted
    "corrupt",  // bytes that are not a snapshot
    "flipped",  // a valid encoding with one byte flipped (fails its checksum)
    "foreign",  // another stream's valid snapshot stored under this key
};

// Moments of a run between two engines, where the spoiled run changes the snapshot directory.
enum class Pause { history_half_done, history_done, probed_once, probed_twice };

// Every answer a client gets in one run, in order, each labelled with its question.
using Transcript = std::vector<std::string>;

// The same commands and queries each time: account states, and outcomes at the edges of the
// available balance, holds, posts and voids, a freeze, a close and a linked command. A new
// engine per phase, so each one starts with an empty in-memory cache.
Transcript play(EngineSettings settings, const std::function<void(Pause)>& between) {
  Transcript transcript;
  // Generated ids are the same in every run, so outcomes compare as text.
  auto generated = std::make_shared<std::atomic<int>>(0);
  settings.generate_id = [generated] { return "generated-" + std::to_string(++*generated); };
  const auto stage = [&](const std::function<void(Engine&)>& body) {
    Engine engine(settings);
    body(engine);
  };

  stage([&](Engine& engine) {
    REQUIRE(engine.execute(command(domain::OpenAccount{"sink", eur()})).accepted());
    for (const auto& id : snapshot_accounts) {
      REQUIRE(engine.execute(command(domain::OpenAccount{id, eur()})).accepted());
      transcript.push_back("deposit " + id + ": " +
                           describe(engine.execute(command(domain::Deposit{id, Amount(1'000)}))));
      for (int i = 0; i < 3; ++i) {
        transcript.push_back(
            "transfer " + id + ": " +
            describe(engine.execute(command(domain::Transfer{"", id, "sink", Amount(10), eur()}))));
      }
      transcript.push_back("hold " + id + ": " +
                           describe(engine.execute(command(domain::PlaceHold{
                               "history-" + id + "-1", id, "sink", Amount(100), eur()}))));
    }
  });
  between(Pause::history_half_done);
  stage([&](Engine& engine) {
    for (const auto& id : snapshot_accounts) {
      for (int i = 0; i < 3; ++i) {
        transcript.push_back(
            "transfer " + id + ": " +
            describe(engine.execute(command(domain::Transfer{"", id, "sink", Amount(10), eur()}))));
      }
      transcript.push_back("hold " + id + ": " +
                           describe(engine.execute(command(
                               domain::PlaceHold{"history-" + id + "-2", id, "sink", Amount(50), eur()}))));
      transcript.push_back(
          "post " + id + ": " +
          describe(engine.execute(command(domain::PostHold{"history-" + id + "-1", std::nullopt}))));
    }
  });
  between(Pause::history_done);

  const auto probe = [&](const std::string& round) {
    stage([&](Engine& engine) {
      const auto ask = [&](const std::string& question, SingleCommand body) {
        auto outcome = engine.execute(command(std::move(body)));
        transcript.push_back(round + " " + question + ": " + describe(outcome));
        return outcome;
      };
      const auto available = [&](const std::string& id) {
        const auto account = engine.read_account(id);
        REQUIRE(account.has_value());
        return account->available()->minor_units();
      };
      for (const auto& id : snapshot_accounts) {
        INFO(round << " " << id);
        transcript.push_back(round + " state of " + id + ": " + describe(engine.read_account(id)));
        ask("deposit to " + id, domain::Deposit{id, Amount(300)});
        const std::int64_t before_hold = available(id);
        CHECK(ask("withdraw one more than available from " + id,
                  domain::Withdrawal{id, Amount(before_hold + 1)})
                  .code == RejectionCode::insufficient_funds);
        const std::string hold_id = round + "-" + id;
        CHECK(ask("hold half of " + id,
                  domain::PlaceHold{hold_id, id, "sink", Amount(before_hold / 2), eur()})
                  .accepted());
        CHECK(ask("transfer what the hold took from " + id,
                  domain::Transfer{"", id, "sink", Amount(before_hold - before_hold / 2 + 1), eur()})
                  .code == RejectionCode::insufficient_funds);
        CHECK(ask("post half the hold of " + id, domain::PostHold{hold_id, Amount(before_hold / 4)})
                  .accepted());
        ask("post the posted history hold of " + id,
            domain::PostHold{"history-" + id + "-1", std::nullopt});
        ask("void the pending history hold of " + id, domain::VoidHold{"history-" + id + "-2"});
        CHECK(ask("close non-empty " + id, domain::CloseAccount{id}).code ==
              RejectionCode::account_not_empty);
        CHECK(ask("withdraw all available from " + id, domain::Withdrawal{id, Amount(available(id))})
                  .accepted());
        CHECK(ask("withdraw one more from " + id, domain::Withdrawal{id, Amount(1)}).code ==
              RejectionCode::insufficient_funds);
        CHECK(ask("freeze " + id, domain::FreezeAccount{id}).accepted());
        CHECK(ask("deposit to frozen " + id, domain::Deposit{id, Amount(1)}).code ==
              RejectionCode::account_frozen);
        CHECK(ask("unfreeze " + id, domain::UnfreezeAccount{id}).accepted());
        domain::LinkedCommands linked;
        linked.commands.push_back(domain::Deposit{id, Amount(100)});
        linked.commands.push_back(domain::Transfer{"", id, "sink", Amount(1'000'000), eur()});
        domain::Command linked_command{domain::CommandBody{std::move(linked)}, {}};
        linked_command.context.actor = "test";
        auto linked_outcome = engine.execute(std::move(linked_command));
        transcript.push_back(round + " linked deposit and overdraw of " + id + ": " +
                             describe(linked_outcome));
        CHECK_FALSE(linked_outcome.accepted());
        ask("deposit again to " + id, domain::Deposit{id, Amount(400)});
        transcript.push_back(round + " state of " + id +
                             " after: " + describe(engine.read_account(id)));
      }
      transcript.push_back(round + " state of sink: " + describe(engine.read_account("sink")));
    });
  };
  probe("first");
  between(Pause::probed_once);
  probe("second");
  between(Pause::probed_twice);
  probe("third");
  return transcript;
}

// Removes a directory however the scope ends (a failed REQUIRE throws).
struct RemovedAtExit {
  std::filesystem::path directory;
  ~RemovedAtExit() { std::filesystem::remove_all(directory); }
};

// Overwrites every file of a RocksDB directory with the same number of random bytes.
void write_garbage_over(const std::filesystem::path& directory) {
  std::mt19937 random(20240601);
  for (const auto& entry : std::filesystem::directory_iterator(directory)) {
    if (!entry.is_regular_file()) continue;
    const auto size = std::max<std::uintmax_t>(entry.file_size(), 64);
    std::string garbage(size, '\0');
    for (auto& byte : garbage) byte = static_cast<char>(random());
    std::ofstream(entry.path(), std::ios::binary | std::ios::trunc) << garbage;
  }
}

}  // namespace

TEST_CASE("a stale, a missing or a corrupt snapshot changes no answer") {
  // The same commands against two fresh databases: one engine with no snapshot directory, and
  // one whose snapshots are spoiled between phases and whose in-memory cache is off, so every
  // command loads its streams through the snapshots. Every answer must be the same.
  test::TestDatabase reference_database;
  test::TestDatabase spoiled_database;
  const auto directory =
      std::filesystem::temp_directory_path() / ("ledger-snapshots-" + spoiled_database.name());
  std::filesystem::remove_all(directory);
  const RemovedAtExit removed_at_exit{directory};
  LogCapture log;

  const Transcript reference = play(test::engine_settings(reference_database), [](Pause) {});
  (void)log.take();

  auto settings = test::engine_settings(spoiled_database);
  settings.snapshot_directory = directory.string();
  settings.snapshot_every_events = 2;
  settings.state_cache_streams_max = 0;
  std::optional<domain::StreamState> behind;  // the "behind" account's snapshot halfway through history
  const auto spoil = [&](Pause pause) {
    switch (pause) {
      case Pause::history_half_done: {
        SnapshotStore snapshots(directory.string());
        behind = snapshots.get(domain::account_stream("behind"));
        REQUIRE(behind.has_value());
        break;
      }
      case Pause::history_done: {
        SnapshotStore snapshots(directory.string());
        std::map<std::string, domain::StreamState> current;
        for (const auto& id : snapshot_accounts) {
          auto snapshot = snapshots.get(domain::account_stream(id));
          REQUIRE_MESSAGE(snapshot.has_value(), id);
          current.emplace(id, std::move(*snapshot));
        }
        REQUIRE(current.at("behind").version.value() > behind->version.value());
        snapshots.put(domain::account_stream("behind"), *behind);

        auto stale = current.at("stale");
        std::get<domain::AccountState>(stale.aggregate).credits_posted = Amount(1'000'000);
        stale.last_hash = std::string(32, 'x');
        snapshots.put(domain::account_stream("stale"), stale);
        // Its posted history hold, forged back to pending, would let a second post through.
        auto stale_hold = snapshots.get(domain::transfer_stream("history-stale-1"));
        REQUIRE(stale_hold.has_value());
        REQUIRE(std::get<domain::TransferState>(stale_hold->aggregate).status ==
                TransferStatus::pending_posted);
        std::get<domain::TransferState>(stale_hold->aggregate).status = TransferStatus::pending;
        stale_hold->last_hash = std::string(32, 'y');
        snapshots.put(domain::transfer_stream("history-stale-1"), *stale_hold);

        auto ahead = current.at("ahead");
        ahead.version = StreamVersion(ahead.version.value() + 100);
        std::get<domain::AccountState>(ahead.aggregate).credits_posted = Amount(1'000'000);
        snapshots.put(domain::account_stream("ahead"), ahead);

        snapshots.remove(domain::account_stream("missing"));
        snapshots.put_raw(domain::account_stream("corrupt"), "not a snapshot at all");
        std::string flipped =
            SnapshotStore::encode(domain::account_stream("flipped"), current.at("flipped"));
        flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x5a);
        snapshots.put_raw(domain::account_stream("flipped"), flipped);
        snapshots.put_raw(domain::account_stream("foreign"),
                          SnapshotStore::encode(domain::account_stream("intact"), current.at("intact")));
        (void)log.take();
        break;
      }
      case Pause::probed_once: {
        // Each spoiled snapshot was looked at, reported and dropped; the good ones were not.
        const auto lines = log.take();
        INFO(fmt::format("{}", fmt::join(lines, "\n")));
        CHECK(count_lines(lines, {"snapshot of " + domain::account_stream("stale") + " does not match"}) ==
              1);
        CHECK(count_lines(lines, {"snapshot of " + domain::transfer_stream("history-stale-1") +
                                  " does not match"}) == 1);
        CHECK(count_lines(lines, {"snapshot of " + domain::account_stream("ahead") + " is ahead"}) == 1);
        for (const char* id : {"corrupt", "flipped", "foreign"}) {
          CHECK(count_lines(lines, {"snapshot of " + domain::account_stream(id) + " is corrupt"}) == 1);
        }
        for (const char* id : {"intact", "behind", "missing"}) {
          CHECK(count_lines(lines, {"snapshot of " + domain::account_stream(id) + " "}) == 0);
        }
        // Deleting the whole directory.
        std::filesystem::remove_all(directory);
        break;
      }
      case Pause::probed_twice: {
        const auto lines = log.take();
        INFO(fmt::format("{}", fmt::join(lines, "\n")));
        CHECK(count_lines(lines, {"snapshot"}) == 0);
        // Garbage over every file of the directory, data files included.
        bool has_data = false;
        for (const auto& entry : std::filesystem::directory_iterator(directory)) {
          has_data = has_data || entry.path().extension() == ".sst";
        }
        REQUIRE(has_data);
        write_garbage_over(directory);
        break;
      }
    }
  };
  const Transcript spoiled = play(settings, spoil);

  // The corrupt directory was reported and rebuilt, not trusted.
  {
    const auto lines = log.take();
    INFO(fmt::format("{}", fmt::join(lines, "\n")));
    CHECK(count_lines(lines, {"error", "snapshot cache at " + directory.string(),
                              "cannot be opened", "wiping and rebuilding"}) == 1);
  }
  {
    SnapshotStore rebuilt(directory.string());
    CHECK(log.take().empty());  // it opens as a sound RocksDB directory
    pqxx::connection connection(spoiled_database.app_url());
    pqxx::read_transaction work(connection);
    for (const auto& id : snapshot_accounts) {
      INFO(id);
      const auto snapshot = rebuilt.get(domain::account_stream(id));
      REQUIRE(snapshot.has_value());
      const auto stored =
          work.exec_params("SELECT hash FROM events WHERE stream_id = $1 AND version = $2",
                           domain::account_stream(id), snapshot->version.value());
      REQUIRE(stored.size() == 1);
      CHECK(pqxx::binarystring(stored[0][0]).str() == snapshot->last_hash);
    }
    CHECK(rebuilt.stats().corrupt == 0);
  }

  REQUIRE(spoiled.size() == reference.size());
  for (std::size_t i = 0; i < reference.size(); ++i) CHECK(spoiled[i] == reference[i]);
}

namespace {

// Plays another writer that slips a row in behind the engine's back: a trigger inserts, just
// before the engine's own row, an event with the same stream and version into the engine's
// transaction, for the first `collisions` appends to `stream_id`. The engine's insert then
// fails on unique (stream_id, version) exactly as it does when another instance won the race.
// The sequence `appends_tried` counts every append to the stream (it is not rolled back).
void collide_with_appends(const test::TestDatabase& database, const std::string& stream_id,
                          int collisions) {
  pqxx::connection admin(database.admin_url());
  pqxx::work work(admin);
  work.exec("CREATE SEQUENCE IF NOT EXISTS appends_tried");
  work.exec("ALTER SEQUENCE appends_tried RESTART");
  work.exec(fmt::format(R"sql(
CREATE OR REPLACE FUNCTION collide() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  IF pg_trigger_depth() = 1 AND NEW.stream_id = {} THEN
    IF nextval('appends_tried') <= {} THEN
      INSERT INTO events (position, stream_id, version, event_id, type, schema_version, payload,
                          metadata, recorded_at, hash)
      VALUES (NEW.position + 1000000, NEW.stream_id, NEW.version, gen_random_uuid(), NEW.type,
              NEW.schema_version, NEW.payload, NEW.metadata, NEW.recorded_at, NEW.hash);
    END IF;
  END IF;
  RETURN NEW;
END $$)sql",
                        work.quote(stream_id), collisions));
  work.exec("DROP TRIGGER IF EXISTS collide ON events");
  work.exec(
      "CREATE TRIGGER collide BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION collide()");
  work.commit();
}

long long appends_tried(const test::TestDatabase& database) {
  return test::scalar(database.admin_url(),
                      "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM appends_tried");
}

void stop_colliding(const test::TestDatabase& database) {
  pqxx::connection admin(database.admin_url());
  pqxx::work work(admin);
  work.exec("DROP TRIGGER collide ON events");
  work.commit();
}

}  // namespace

TEST_CASE("a conflicting command is re-decided a bounded number of times, then answers conflict") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  settings.conflict_retries_max = 2;
  // With pipelining, a command without an idempotency key is first decided ahead on the cache
  // and appended by the committer; that failed append sends it to the serial path, which
  // counts its conflicts against the bound. One extra try, still bounded.
  SUBCASE("deciding while committing") {
    settings.decide_while_committing = true;
  }
  SUBCASE("one batch at a time") {
    settings.decide_while_committing = false;
  }
  const long long decided_ahead = settings.decide_while_committing ? 1 : 0;
  Engine engine(settings);
  open_and_fund(engine, "victim", 1'000);
  const auto stream = domain::account_stream("victim");
  const auto before = engine.read_account("victim");
  REQUIRE(before.has_value());
  const auto events_before = test::scalar(database.app_url(), "SELECT count(*) FROM events");
  const auto head_before =
      test::scalar(database.app_url(), "SELECT position FROM event_store_head");
  const auto nothing_written = [&] {
    CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events_before);
    CHECK(test::scalar(database.app_url(), "SELECT position FROM event_store_head") == head_before);
    CHECK(engine.read_account("victim") == before);
  };

  SUBCASE("every try conflicts") {
    collide_with_appends(database, stream, 1'000'000);
    const auto conflicts_before = engine.stats().conflicts;

    const auto keyed =
        engine.execute(command(domain::Withdrawal{"victim", Amount(100)}, "w-1", "withdraw 100"));
    CHECK(keyed.code == RejectionCode::version_conflict);
    CHECK(keyed.position.value() == 0);
    CHECK(keyed.versions.empty());
    // The first try and conflict_retries_max re-decisions, each on the stream reloaded.
    CHECK(appends_tried(database) == settings.conflict_retries_max + 1);
    CHECK(engine.stats().conflicts - conflicts_before == settings.conflict_retries_max + 1);
    nothing_written();
    // The conflict is not remembered under the key: the client may retry it.
    CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM idempotency_keys") == 0);

    collide_with_appends(database, stream, 1'000'000);
    const auto unkeyed = engine.execute(command(domain::Withdrawal{"victim", Amount(100)}));
    CHECK(unkeyed.code == RejectionCode::version_conflict);
    CHECK(appends_tried(database) == decided_ahead + settings.conflict_retries_max + 1);
    nothing_written();

    // Once the other writer is gone, the same request under the same key goes through.
    stop_colliding(database);
    const auto retried =
        engine.execute(command(domain::Withdrawal{"victim", Amount(100)}, "w-1", "withdraw 100"));
    CHECK(retried.accepted());
    CHECK_FALSE(retried.replayed);
    CHECK(engine.read_account("victim")->balance() == Amount(900));
  }

  SUBCASE("conflicting as often as the bound allows") {
    // conflict_retries_max conflicts: the last re-decision is accepted.
    collide_with_appends(database, stream, settings.conflict_retries_max);
    const auto outcome =
        engine.execute(command(domain::Withdrawal{"victim", Amount(100)}, "w-2", "withdraw 100"));
    CHECK(outcome.accepted());
    CHECK(appends_tried(database) == settings.conflict_retries_max + 1);
    CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events_before + 3);
    CHECK(test::scalar(database.app_url(),
                       "SELECT count(*) FROM events WHERE metadata->>'command_id' = '" +
                           outcome.command_id + "'") == 3);
    CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM idempotency_keys") == 1);
    const auto after = engine.read_account("victim");
    CHECK(after->balance() == Amount(900));
    CHECK(after->version.value() == before->version.value() + 1);
    CHECK(std::find(outcome.versions.begin(), outcome.versions.end(),
                    std::pair{stream, after->version}) != outcome.versions.end());

    // One conflict more than the bound allows: version_conflict, nothing written.
    collide_with_appends(database, stream, settings.conflict_retries_max + 1);
    const auto events_now = test::scalar(database.app_url(), "SELECT count(*) FROM events");
    const auto refused =
        engine.execute(command(domain::Withdrawal{"victim", Amount(100)}, "w-3", "withdraw 100"));
    CHECK(refused.code == RejectionCode::version_conflict);
    CHECK(appends_tried(database) == settings.conflict_retries_max + 1);
    CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events_now);
    CHECK(engine.read_account("victim") == after);
  }
}

TEST_CASE("a command that lost the race to another instance is re-decided on the winner's state") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  settings.conflict_retries_max = 1;
  SUBCASE("deciding while committing") {
    settings.decide_while_committing = true;
  }
  SUBCASE("one batch at a time") {
    settings.decide_while_committing = false;
  }
  Engine mine(settings);
  Engine theirs(settings);
  open_and_fund(mine, "shared", 1'000);  // mine now caches the account with 1,000 on it
  const auto stream = domain::account_stream("shared");

  REQUIRE(theirs.execute(command(domain::Withdrawal{"shared", Amount(800)})).accepted());
  const auto events_before = test::scalar(database.app_url(), "SELECT count(*) FROM events");
  auto conflicts_before = mine.stats().conflicts;
  // On mine's cached state 500 would pass; on the stream as stored it must not.
  const auto refused = mine.execute(command(domain::Withdrawal{"shared", Amount(500)}));
  CHECK(refused.code == RejectionCode::insufficient_funds);
  CHECK(mine.stats().conflicts == conflicts_before + 1);
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events_before);

  REQUIRE(theirs.execute(command(domain::Withdrawal{"shared", Amount(50)})).accepted());
  const auto winner = theirs.read_account("shared");
  conflicts_before = mine.stats().conflicts;
  const auto accepted = mine.execute(command(domain::Withdrawal{"shared", Amount(100)}));
  CHECK(accepted.accepted());
  CHECK(mine.stats().conflicts == conflicts_before + 1);
  const auto after = mine.read_account("shared");
  CHECK(after->balance() == Amount(50));
  CHECK(after->version.value() == winner->version.value() + 1);
  CHECK(std::find(accepted.versions.begin(), accepted.versions.end(),
                  std::pair{stream, after->version}) != accepted.versions.end());
  CHECK(test::scalar(
            database.app_url(),
            "SELECT max(version) - count(*) FROM events WHERE stream_id = '" + stream + "'") == 0);
}

TEST_CASE("with no retries, losing the race to another instance answers version_conflict") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  settings.conflict_retries_max = 0;
  // The serial path: its first try is the one the bound counts (see above for pipelining).
  settings.decide_while_committing = false;
  Engine mine(settings);
  Engine theirs(settings);
  open_and_fund(mine, "shared", 1'000);
  REQUIRE(theirs.execute(command(domain::Withdrawal{"shared", Amount(800)})).accepted());
  const auto state = theirs.read_account("shared");
  const auto events_before = test::scalar(database.app_url(), "SELECT count(*) FROM events");
  const auto conflicts_before = mine.stats().conflicts;

  const auto outcome = mine.execute(command(domain::Withdrawal{"shared", Amount(100)}));
  CHECK(outcome.code == RejectionCode::version_conflict);
  CHECK(mine.stats().conflicts == conflicts_before + 1);
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events") == events_before);
  CHECK(mine.read_account("shared") == state);

  // The conflict dropped the stale state: the next command is decided on the stored stream.
  CHECK(mine.execute(command(domain::Withdrawal{"shared", Amount(201)})).code ==
        RejectionCode::insufficient_funds);
  CHECK(mine.execute(command(domain::Withdrawal{"shared", Amount(200)})).accepted());
  CHECK(mine.read_account("shared")->balance() == Amount(0));
}

TEST_CASE("the expiry sweeper voids a hold once the engine's clock passes its timeout") {
  test::TestDatabase database;
  auto settings = test::engine_settings(database);
  std::atomic<std::int64_t> now_us{1'800'000'000'000'000};  // an injected clock
  settings.clock_us = [&now_us] { return now_us.load(); };
  settings.expiry_sweep_interval = std::chrono::milliseconds(50);
  Engine engine(settings);
  open_and_fund(engine, "alice", 1'000);
  open_and_fund(engine, "bob", 0);
  domain::PlaceHold hold{"h-expiring", "alice", "bob", Amount(400), eur()};
  hold.timeout_seconds = 60;
  REQUIRE(engine.execute(command(hold)).accepted());
  CHECK(engine.read_account("alice")->available() == Amount(600));
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM pending_expiries") == 1);

  // Before the timeout nothing happens, even with the sweeper running.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(engine.read_transfer("h-expiring")->status == TransferStatus::pending);

  now_us += 61'000'000;
  // Posting after the timeout is refused even before the sweeper gets to it.
  CHECK(engine.execute(command(domain::PostHold{"h-expiring", std::nullopt})).code ==
        RejectionCode::pending_transfer_expired);
  domain::TransferStatus status = TransferStatus::pending;
  for (int attempt = 0; attempt < 100 && status == TransferStatus::pending; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    status = engine.read_transfer("h-expiring")->status;
  }
  CHECK(status == TransferStatus::expired);
  const auto alice = *engine.read_account("alice");
  CHECK(alice.debits_pending == Amount(0));
  CHECK(alice.available() == Amount(1'000));
  CHECK(engine.read_account("bob")->credits_pending == Amount(0));
  for (int attempt = 0; attempt < 100; ++attempt) {
    if (test::scalar(database.app_url(), "SELECT count(*) FROM pending_expiries") == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM pending_expiries") == 0);
  CHECK(test::scalar(database.app_url(),
                     "SELECT count(*) FROM events WHERE type = 'pending_transfer_ended' "
                     "AND metadata->>'actor' = 'engine:expiry'") == 1);
}

TEST_CASE("a keyed refusal replays with its code, whatever the code (none aborts the engine)") {
  test::TestDatabase database;
  Engine engine(test::engine_settings(database));
  open_and_fund(engine, "alice", 100);
  const std::string cash = domain::system_account_id(SystemAccount::cash, "EUR");
  const auto first = engine.execute(command(domain::Transfer{"t1", "alice", cash, Amount(1), eur()}, "k1", "same"));
  REQUIRE(first.code == RejectionCode::system_account);
  const auto again = engine.execute(command(domain::Transfer{"t1", "alice", cash, Amount(1), eur()}, "k1", "same"));
  CHECK(again.code == RejectionCode::system_account);
  CHECK(again.replayed);
  const auto loan = engine.execute(command(domain::RepayLoan{"nope", Amount(1), "r1"}, "k2", "repay"));
  REQUIRE(loan.code == RejectionCode::unknown_loan);
  CHECK(engine.execute(command(domain::RepayLoan{"nope", Amount(1), "r1"}, "k2", "repay")).code ==
        RejectionCode::unknown_loan);
}

TEST_CASE("a stored key's request replays even when another request with that key comes first in a batch") {
  test::TestDatabase database;
  EngineSettings settings = test::engine_settings(database);
  settings.commit_wait_max = std::chrono::milliseconds(100);  // both below share one batch
  Engine engine(settings);
  open_and_fund(engine, "alice", 100);
  const auto stored = engine.execute(command(domain::Deposit{"alice", Amount(5)}, "k", "request X"));
  REQUIRE(stored.accepted());
  auto other = engine.submit(command(domain::Deposit{"alice", Amount(7)}, "k", "request Y"));
  auto same = engine.submit(command(domain::Deposit{"alice", Amount(5)}, "k", "request X"));
  CHECK(other.get().code == RejectionCode::idempotency_key_reused);
  const auto replayed = same.get();
  CHECK_MESSAGE(replayed.accepted(), to_string(replayed.code));
  CHECK(replayed.replayed);
  CHECK(replayed.position == stored.position);
}

TEST_CASE("a refusal is never decided on a state another engine has changed since it was cached") {
  for (const bool pipelined : {true, false}) {
    INFO(std::string(pipelined ? "pipelined" : "serial"));
    test::TestDatabase database;
    EngineSettings settings = test::engine_settings(database);
    settings.decide_while_committing = pipelined;
    Engine a(settings);
    Engine b(settings);
    open_and_fund(a, "alice", 100);
    // b caches bob as missing and alice at her balance of 100.
    CHECK(b.execute(command(domain::Transfer{"t1", "alice", "bob", Amount(10), eur()})).code ==
          RejectionCode::unknown_account);
    CHECK(b.execute(command(domain::Withdrawal{"alice", Amount(150)})).code == RejectionCode::insufficient_funds);
    // a opens bob and funds alice; b must see both, not refuse from its cache.
    REQUIRE(a.execute(command(domain::OpenAccount{"bob", eur()})).accepted());
    REQUIRE(a.execute(command(domain::Deposit{"alice", Amount(100)})).accepted());
    const auto withdrawal = b.execute(command(domain::Withdrawal{"alice", Amount(150)}));
    CHECK_MESSAGE(withdrawal.accepted(), to_string(withdrawal.code));
    const auto transfer = b.execute(command(domain::Transfer{"t2", "alice", "bob", Amount(10), eur()}));
    CHECK_MESSAGE(transfer.accepted(), to_string(transfer.code));
    CHECK(b.read_account("alice")->balance() == Amount(40));
  }
}
