// Replay for audits (issue 7): export round-trips, verify catches tampering and names the
// position, reconcile finds altered rows, publish re-sends. The as-of fold it serves is the
// engine's (tests/engine/balance_as_of_pgtest.cpp).
#include <doctest/doctest.h>

#include <atomic>
#include <functional>
#include <set>
#include <sstream>

#include "../engine/engine_fixture.hpp"
#include "../projections/read_side_fixture.hpp"
#include "ledger/core/hex.hpp"
#include "ledger/core/time_text.hpp"
#include "ledger/domain/events.hpp"
#include "ledger/projections/read_models.hpp"
#include "ledger/replay/rebuild.hpp"
#include "ledger/replay/replay.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using namespace std::chrono_literals;
using test::command;
using test::eur;

namespace {

Currency usd() { return *Currency::parse("USD"); }

// A log with every event type in two currencies; the clock is the test's, so expiry is too.
struct EveryEventType {
  explicit EveryEventType(const test::TestDatabase& database) {
    auto settings = test::engine_settings(database);
    settings.clock_us = [this] { return now_us.load(); };
    engine = std::make_unique<Engine>(settings);
    auto ok = [&](SingleCommand body) {
      const auto outcome = engine->execute(command(std::move(body)));
      REQUIRE_MESSAGE(outcome.accepted(), outcome.detail);
      now_us += 1'000'000;  // one second between commands: distinct recorded times
      return outcome;
    };
    ok(domain::OpenAccount{"alice", eur()});
    ok(domain::OpenAccount{"bob", eur()});
    ok(domain::OpenAccount{"carol", usd()});
    ok(domain::Deposit{"alice", Amount(10'000)});
    ok(domain::Deposit{"carol", Amount(700)});
    ok(domain::Transfer{"t-1", "alice", "bob", Amount(2'500), eur(), "rent, \"May\""});  // CSV quoting
    const auto hold = ok(domain::PlaceHold{"h-1", "alice", "bob", Amount(1'000), eur(), "", std::nullopt});
    ok(domain::PostHold{"h-1", Amount(600)});
    ok(domain::PlaceHold{"h-2", "bob", "alice", Amount(300), eur(), "", std::nullopt});
    ok(domain::VoidHold{"h-2"});
    ok(domain::PlaceHold{"h-3", "alice", "bob", Amount(200), eur(), "", 1});
    now_us += 5'000'000;
    ok(domain::ExpireHold{"h-3"});
    ok(domain::Withdrawal{"carol", Amount(700)});
    ok(domain::FreezeAccount{"bob"});
    ok(domain::UnfreezeAccount{"bob"});
    ok(domain::CloseAccount{"carol"});
    domain::OriginateLoan loan{"loan-1", "alice", eur(), Amount(3'000), 1'200, 3, ScheduleType::annuity, "2027-01-15",
                       "2027-02-15", Amount(100), Amount(50), 0};
    ok(loan);
    ok(domain::DisburseLoan{"loan-1"});
    ok(domain::CloseLoanBusinessDay{"loan-1", "2027-02-20"});  // overdue, with the late fee
    ok(domain::RepayLoan{"loan-1", Amount(1'000), "repay-1"});
    ok(domain::WriteOffLoan{"loan-1"});
  }
  std::atomic<std::int64_t> now_us{1'800'000'000'000'000};
  std::unique_ptr<Engine> engine;
};

std::vector<RecordedEvent> whole_log(db::ConnectionPool& pool) {
  return EventStore(pool).read_all(GlobalPosition(1), 1'000'000);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string export_text(db::ConnectionPool& pool, const replay::ExportFilter& filter,
                        replay::ExportFormat format = replay::ExportFormat::json_lines) {
  std::ostringstream out;
  replay::export_events(pool, filter, format, out);
  return out.str();
}

// Runs SQL as the cluster's superuser with triggers off: what an attacker with full access
// to the database could do, and what verify must catch.
void tamper(const test::TestDatabase& database, const std::string& sql) {
  pqxx::connection connection(test::TestCluster::instance().superuser_url(database.name()));
  pqxx::work work(connection);
  work.exec("SET session_replication_role = replica");
  work.exec(sql);
  work.commit();
}

replay::VerifyResult verify_all(db::ConnectionPool& pool) { return replay::verify(pool, {}); }

// Recomputes the hash chain over `stored` (altered by the caller) and returns the UPDATEs that
// write it back from position `from` on: the column `set` names, and the new hash.
std::string rewrite_chain_from(std::vector<RecordedEvent>& stored, GlobalPosition from,
                               const std::function<std::string(const RecordedEvent&)>& set) {
  std::string previous = domain::genesis_hash();
  std::string sql;
  for (auto& event : stored) {
    event.hash = chain_hash(previous, event);
    previous = event.hash;
    if (event.position < from) continue;
    sql += "UPDATE events SET " + set(event) + ", hash = '\\x" + to_hex(event.hash) +
           "' WHERE position = " + std::to_string(event.position.value()) + ";";
  }
  return sql;
}

}  // namespace

TEST_CASE("export round-trips every event type: each line reads back to the stored event") {
  test::TestDatabase database;
  EveryEventType log(database);
  auto pool = test::make_pool(database.app_url(), 3);
  const auto stored = whole_log(pool);

  const auto lines = lines_of(export_text(pool, {}));
  REQUIRE(lines.size() == stored.size());
  std::set<std::string> types;
  std::string previous_hash = domain::genesis_hash();
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const auto parsed = replay::parse_exported_event(lines[i]);
    REQUIRE_MESSAGE(parsed, lines[i]);
    const RecordedEvent& original = stored[i];
    CHECK(parsed->position == original.position);
    CHECK(parsed->stream_id == original.stream_id);
    CHECK(parsed->version == original.version);
    CHECK(parsed->event_id == original.event_id);
    CHECK(parsed->type == original.type);
    CHECK(parsed->schema_version == original.schema_version);
    CHECK(parsed->payload == original.payload);  // re-encoded from the JSON, byte for byte
    CHECK(parsed->metadata == original.metadata);
    CHECK(parsed->recorded_at_us == original.recorded_at_us);
    CHECK(parsed->hash == original.hash);
    // The export alone is enough to recompute the chain.
    CHECK(chain_hash(previous_hash, *parsed) == parsed->hash);
    previous_hash = parsed->hash;
    types.insert(parsed->type);
  }
  const std::set<std::string> every_type{"account_opened",     "account_frozen",          "account_unfrozen",
                                         "account_closed",     "account_entry",           "transfer_posted",
                                         "transfer_pending",   "pending_transfer_posted", "pending_transfer_ended",
                                         "loan_originated",    "loan_disbursed",          "loan_repaid",
                                         "loan_day_closed",    "loan_written_off"};
  CHECK(types == every_type);
  CHECK_FALSE(replay::parse_exported_event("{\"position\":1}"));
  CHECK_FALSE(replay::parse_exported_event("not json"));
}

namespace {

// Every stored field of two events, for the reader that must return what read_all returns.
void check_same_event(const RecordedEvent& read, const RecordedEvent& stored) {
  INFO("position " << stored.position.value());
  CHECK(read.position == stored.position);
  CHECK(read.stream_id == stored.stream_id);
  CHECK(read.version == stored.version);
  CHECK(read.event_id == stored.event_id);
  CHECK(read.type == stored.type);
  CHECK(read.schema_version == stored.schema_version);
  CHECK(read.payload == stored.payload);
  CHECK(read.metadata == stored.metadata);
  CHECK(read.recorded_at_us == stored.recorded_at_us);
  CHECK(read.hash == stored.hash);
}

std::vector<RecordedEvent> copy_read(db::ConnectionPool& pool, std::int64_t from, std::int64_t to, std::int64_t chunk,
                                     std::size_t limit) {
  engine::LogCopyReader reader(pool, GlobalPosition(from), GlobalPosition(to), chunk);
  std::vector<RecordedEvent> all, batch;
  for (reader.read(batch, limit); !batch.empty(); reader.read(batch, limit)) {
    CHECK(batch.size() <= limit);
    all.insert(all.end(), batch.begin(), batch.end());
  }
  return all;
}

}  // namespace

TEST_CASE("the binary COPY reader returns exactly what read_all returns, across chunks, batches and gaps") {
  test::TestDatabase database;
  EveryEventType log(database);
  {
    // Metadata that jsonb's text must escape (quote, backslash) and text beyond ASCII: the
    // reader's fast path must hand the escapes to the JSON parser.
    auto odd = command(domain::Deposit{"bob", Amount(5)});
    odd.context.actor = "o\"brien\\x";
    odd.context.request_id = "back\\slash";
    odd.context.client_address = "caf\xc3\xa9 \xe2\x82\xac";
    const auto odd_outcome = log.engine->execute(std::move(odd));
    REQUIRE_MESSAGE(odd_outcome.accepted(), odd_outcome.detail);
    auto plain = command(domain::Deposit{"bob", Amount(6)});
    plain.context.client_address = "caf\xc3\xa9";
    const auto plain_outcome = log.engine->execute(std::move(plain));
    REQUIRE_MESSAGE(plain_outcome.accepted(), plain_outcome.detail);
  }
  auto pool = test::make_pool(database.app_url(), 3);
  const auto stored = whole_log(pool);
  const auto head = static_cast<std::int64_t>(stored.size());
  REQUIRE(head == test::store_head(database.app_url()));

  for (const std::int64_t chunk : {1, 3, 7, 1'000}) {
    for (const std::size_t limit : {std::size_t{1}, std::size_t{4}, std::size_t{1'000}}) {
      INFO("chunk " << chunk << ", batch " << limit);
      const auto read = copy_read(pool, 1, head, chunk, limit);
      REQUIRE(read.size() == stored.size());
      for (std::size_t i = 0; i < read.size(); ++i) check_same_event(read[i], stored[i]);
    }
  }
  // A range inside the log, and one past its end.
  const auto middle = copy_read(pool, 5, 12, 3, 2);
  REQUIRE(middle.size() == 8);
  for (std::size_t i = 0; i < middle.size(); ++i) check_same_event(middle[i], stored[i + 4]);
  CHECK(copy_read(pool, head + 1, head + 10, 4, 4).empty());
  {
    // Ranges one after another on one reader (how LogReader's range readers take their share).
    engine::LogCopyReader reader(pool, GlobalPosition(1), GlobalPosition(head));
    std::vector<RecordedEvent> batch;
    for (const auto& [from, to] : {std::pair<std::int64_t, std::int64_t>{9, 13}, {2, 3}, {head, head + 5}, {4, 4}}) {
      INFO("range " << from << " to " << to);
      reader.read_range(GlobalPosition(from), GlobalPosition(to), batch);
      REQUIRE(static_cast<std::int64_t>(batch.size()) == std::min(to, head) - from + 1);
      for (std::size_t i = 0; i < batch.size(); ++i) {
        check_same_event(batch[i], stored[static_cast<std::size_t>(from - 1) + i]);
      }
    }
  }

  // Damage passes through as read_all passes it: a gap stays a gap, metadata that is not an
  // object of strings reads as empty (verify then names the event).
  tamper(database, "DELETE FROM events WHERE position = 8; "
                   "UPDATE events SET metadata = '{\"actor\": 7}' WHERE position = 10; "
                   "UPDATE events SET metadata = '[\"actor\"]' WHERE position = 11; "
                   // Control characters (the engine stores none): escaped in jsonb's text.
                   "UPDATE events SET metadata = '{\"actor\": \"line\\nbreak\", \"request_id\": \"t\\u0001\"}' "
                   "WHERE position = 12");
  const auto damaged = whole_log(pool);
  const auto read = copy_read(pool, 1, head, 3, 5);
  REQUIRE(read.size() == damaged.size());
  REQUIRE(read.size() == stored.size() - 1);
  for (std::size_t i = 0; i < read.size(); ++i) check_same_event(read[i], damaged[i]);
  CHECK(read[7].position.value() == 9);
  CHECK(read[8].metadata == EventMetadata{});
  CHECK(read[9].metadata == EventMetadata{});
  CHECK(read[10].metadata.actor == "line\nbreak");
  CHECK(read[10].metadata.request_id == "t\x01");
}

TEST_CASE("export filters by stream, position range, time range and type; CSV quotes what needs it") {
  test::TestDatabase database;
  EveryEventType log(database);
  auto pool = test::make_pool(database.app_url(), 3);
  const auto stored = whole_log(pool);
  auto count_where = [&](const std::function<bool(const RecordedEvent&)>& keep) {
    return static_cast<std::size_t>(std::count_if(stored.begin(), stored.end(), keep));
  };

  replay::ExportFilter by_stream;
  by_stream.stream_id = "account-alice";
  const auto alice = lines_of(export_text(pool, by_stream));
  CHECK(alice.size() == count_where([](const RecordedEvent& e) { return e.stream_id == "account-alice"; }));
  for (const auto& line : alice) CHECK(replay::parse_exported_event(line)->stream_id == "account-alice");

  replay::ExportFilter by_range;
  by_range.range = {GlobalPosition(5), GlobalPosition(9)};
  const auto range = lines_of(export_text(pool, by_range));
  REQUIRE(range.size() == 5);
  CHECK(replay::parse_exported_event(range.front())->position.value() == 5);
  CHECK(replay::parse_exported_event(range.back())->position.value() == 9);

  replay::ExportFilter by_time;
  by_time.from_time_us = stored[6].recorded_at_us;
  by_time.to_time_us = stored[20].recorded_at_us;
  const auto timed = lines_of(export_text(pool, by_time));
  CHECK(timed.size() == count_where([&](const RecordedEvent& e) {
          return e.recorded_at_us >= *by_time.from_time_us && e.recorded_at_us < *by_time.to_time_us;
        }));
  CHECK(!timed.empty());

  replay::ExportFilter by_type;
  by_type.types = {"transfer_posted", "account_closed"};
  const auto typed = lines_of(export_text(pool, by_type));
  CHECK(typed.size() == count_where([](const RecordedEvent& e) {
          return e.type == "transfer_posted" || e.type == "account_closed";
        }));

  const auto csv = lines_of(export_text(pool, {}, replay::ExportFormat::csv));
  REQUIRE(csv.size() == stored.size() + 1);
  CHECK(csv.front().starts_with("position,stream_id,version,event_id,type,"));
  CHECK(csv[1].starts_with("1,account-alice,1,"));
  // The reference `rent, "May"` sits in quoted JSON inside a quoted CSV field.
  const bool quoted = std::any_of(csv.begin(), csv.end(), [](const std::string& line) {
    return line.find(R"("{""transfer_id"":""t-1"")") != std::string::npos && line.find(R"(rent, \""May\"")") != std::string::npos;
  });
  CHECK(quoted);
}

TEST_CASE("verify passes a clean log and reports the per-currency sums, which are zero") {
  test::TestDatabase database;
  EveryEventType log(database);
  auto pool = test::make_pool(database.app_url(), 3);
  replay::VerifyOptions options;
  options.checkpoint_every = 10;
  const auto result = replay::verify(pool, options);
  CHECK_MESSAGE(result.ok, result.problem);
  CHECK(result.events_checked == test::store_head(database.app_url()));
  CHECK(result.double_entry_checked);
  REQUIRE(result.checkpoints.size() >= 2);
  CHECK(result.checkpoints.back().position.value() == test::store_head(database.app_url()));
  for (const auto& checkpoint : result.checkpoints) {
    for (const auto& [currency, totals] : checkpoint.totals) {
      CHECK_MESSAGE(totals.posted == 0, currency << " at " << checkpoint.position.value());
      CHECK(totals.pending == 0);
    }
  }
  // alice, bob and the EUR system accounts (cash, loan receivable, fee and interest income,
  // write-off expense); carol and the USD cash account.
  CHECK(result.checkpoints.back().totals.at("EUR").accounts == 7);
  CHECK(result.checkpoints.back().totals.at("USD").accounts == 2);

  // A range checks the chain from the event before it.
  options.range = {GlobalPosition(10), GlobalPosition(20)};
  const auto range = replay::verify(pool, options);
  CHECK(range.ok);
  CHECK(range.events_checked == 11);
  CHECK_FALSE(range.double_entry_checked);
}

TEST_CASE("verify catches a tampered payload, a deleted event, a broken chain and names the position") {
  // Each subcase runs from the top: a fresh log of every event type.
  test::TestDatabase database;
  EveryEventType log(database);
  auto pool = test::make_pool(database.app_url(), 3);
  SUBCASE("a payload changed in place") {
    // Position 6 is alice's deposit entry; flip the last byte of its payload.
    tamper(database, "UPDATE events SET payload = overlay(payload placing '\\xff'::bytea from length(payload) for 1) "
                     "WHERE position = 6");
    const auto result = verify_all(pool);
    CHECK_FALSE(result.ok);
    CHECK(result.first_bad_position.value() == 6);
    CHECK(result.problem.find("hash") != std::string::npos);
    CHECK(result.events_checked == 5);
  }
  SUBCASE("an event deleted") {
    tamper(database, "DELETE FROM events WHERE position = 12");
    const auto result = verify_all(pool);
    CHECK_FALSE(result.ok);
    CHECK(result.first_bad_position.value() == 12);
    CHECK(result.problem.find("missing") != std::string::npos);
  }
  SUBCASE("the last event deleted (the head row still counts it)") {
    const auto head = test::store_head(database.app_url());
    tamper(database, "DELETE FROM events WHERE position = " + std::to_string(head));
    const auto result = verify_all(pool);
    CHECK_FALSE(result.ok);
    CHECK(result.first_bad_position.value() == head);
  }
  SUBCASE("a stored hash rewritten: the chain breaks at that event") {
    tamper(database, "UPDATE events SET hash = sha256(hash) WHERE position = 9");
    const auto result = verify_all(pool);
    CHECK_FALSE(result.ok);
    CHECK(result.first_bad_position.value() == 9);
  }
  SUBCASE("an amount changed and every later hash recomputed: double entry still fails") {
    // An attacker who rewrites the chain from the altered event on defeats the hash check
    // (only an anchored head stops that); the books no longer balance, which verify sees.
    auto stored = whole_log(pool);
    const auto credit = std::find_if(stored.begin(), stored.end(), [](const RecordedEvent& e) {
      return e.type == "account_entry" && e.stream_id == "account-bob";
    });
    REQUIRE(credit != stored.end());
    auto entry = std::get<domain::events::AccountEntry>(*domain::decode_event(credit->type, credit->payload));
    entry.amount += 1;
    credit->payload = domain::encode_event(entry);
    tamper(database, rewrite_chain_from(stored, credit->position, [](const RecordedEvent& event) {
             return "payload = '\\x" + to_hex(event.payload) + "'";
           }));
    const auto result = verify_all(pool);
    CHECK_FALSE(result.ok);
    CHECK(result.problem.find("double entry: transfer t-1") != std::string::npos);
    // Named by the transfer's first leg (which leg is wrong, the log cannot say).
    CHECK(result.first_bad_position < credit->position);
    CHECK(result.first_bad_position.value() >= credit->position.value() - 3);
  }
  SUBCASE("a stream version skipped") {
    // Renumbering alone breaks the hash; recompute the chain so only the version is wrong.
    auto stored = whole_log(pool);
    const auto last_alice = std::find_if(stored.rbegin(), stored.rend(), [](const RecordedEvent& e) {
      return e.stream_id == "account-alice";
    });
    last_alice->version = StreamVersion(last_alice->version.value() + 1);
    tamper(database, rewrite_chain_from(stored, last_alice->position, [](const RecordedEvent& event) {
             return "version = " + std::to_string(event.version.value());
           }));
    const auto result = verify_all(pool);
    CHECK_FALSE(result.ok);
    CHECK(result.first_bad_position == last_alice->position);
    CHECK(result.problem.find("version") != std::string::npos);
  }
}

TEST_CASE("verify names a damaged event wherever it falls among the parallel hash check's slices and batches") {
  test::TestDatabase database;
  EveryEventType log(database);
  auto pool = test::make_pool(database.app_url(), 3);
  const auto stored = whole_log(pool);
  const auto head = static_cast<std::int64_t>(stored.size());
  // Batches of 5 positions on 3 range readers, the 4 hashes inside each batch in 3 slices (1, 1
  // and 2 events): every position is a batch's first (checked at the edge between batches) or
  // the first or last of a slice; ranges that start inside the log join at `from - 1`.
  replay::VerifyOptions options;
  options.batch_events = 5;
  options.hash_threads = 3;
  options.read_lanes = 3;
  REQUIRE(replay::verify(pool, options).ok);
  for (std::int64_t position = 1; position <= head; ++position) {
    const std::string where = " WHERE position = " + std::to_string(position);
    const std::string original = to_hex(stored[static_cast<std::size_t>(position - 1)].hash);
    tamper(database, "UPDATE events SET hash = sha256(hash)" + where);
    for (const std::int64_t from : {std::int64_t{1}, std::max<std::int64_t>(1, position - 3), position}) {
      INFO("stored hash of position " << position << " altered, verify from " << from);
      options.range = {GlobalPosition(from), GlobalPosition(0)};
      const auto result = replay::verify(pool, options);
      CHECK_FALSE(result.ok);
      CHECK(result.first_bad_position.value() == position);
      CHECK(result.problem.find("hash does not match") != std::string::npos);
      CHECK(result.events_checked == position - from);
    }
    // The event before a range is its anchor: altered, the range's first event fails.
    if (position < head) {
      options.range = {GlobalPosition(position + 1), GlobalPosition(0)};
      const auto anchored = replay::verify(pool, options);
      CHECK_FALSE(anchored.ok);
      CHECK(anchored.first_bad_position.value() == position + 1);
    }
    tamper(database, "UPDATE events SET hash = '\\x" + original + "'" + where);
  }
  options.range = {};
  REQUIRE(replay::verify(pool, options).ok);

  SUBCASE("a payload that does not decode, the chain recomputed after it, at a batch's first event") {
    auto log_copy = stored;
    log_copy[5].payload = "not flatbuffers";  // position 6: the first event of the second batch
    tamper(database, rewrite_chain_from(log_copy, GlobalPosition(6), [](const RecordedEvent& event) {
             return "payload = '\\x" + to_hex(event.payload) + "'";
           }));
    const auto result = replay::verify(pool, options);
    CHECK_FALSE(result.ok);
    CHECK(result.first_bad_position.value() == 6);
    CHECK(result.problem.find("does not decode") != std::string::npos);
  }
  SUBCASE("a whole batch's positions deleted: the log goes on after them, it does not end") {
    tamper(database, "DELETE FROM events WHERE position BETWEEN 11 AND 16");
    const auto result = replay::verify(pool, options);
    CHECK_FALSE(result.ok);
    CHECK(result.first_bad_position.value() == 11);
    CHECK(result.problem.find("the log goes on at 17") != std::string::npos);
    // And an export skips the hole as the log has it.
    replay::ExportFilter filter;
    CHECK(lines_of(export_text(pool, filter)).size() == stored.size() - 6);
  }
  SUBCASE("an event deleted at a batch's edge: missing, not a hash failure") {
    tamper(database, "DELETE FROM events WHERE position = 11");
    const auto result = replay::verify(pool, options);
    CHECK_FALSE(result.ok);
    CHECK(result.first_bad_position.value() == 11);
    CHECK(result.problem.find("missing") != std::string::npos);
  }
}

TEST_CASE("reconcile passes caught-up read models and reports every row altered by hand") {
  test::TestDatabase database;
  test::ReadSideStack stack(database);
  auto& [kafka, pool, engine, relay, projectors] = stack;
  test::open_accounts(engine);
  test::random_workload(engine, 1'500);
  REQUIRE(engine.execute(command(domain::OriginateLoan{"loan-1", test::account_name(1), eur(), Amount(30'000), 1'200, 6,
                                               domain::ScheduleType::annuity, "2026-01-15", "2026-02-15", Amount(0), Amount(100), 0}))
              .accepted());
  REQUIRE(engine.execute(command(domain::DisburseLoan{"loan-1"})).accepted());
  REQUIRE(engine.execute(command(domain::CloseLoanBusinessDay{"loan-1", "2026-02-20"})).accepted());
  REQUIRE(test::eventually([&] {
    return test::read_models_caught_up(database.app_url()) &&
           test::watermark(database.app_url(), "loan") == test::store_head(database.app_url());
  }));
  projectors.running.clear();  // nothing heals the read models behind the test's back
  relay.stop();

  std::ostringstream clean;
  const auto ok = replay::reconcile(pool, clean);
  CHECK_MESSAGE(ok.differences == 0, clean.str());
  CHECK(ok.rows_checked > 3 * test::account_count);
  CHECK(ok.watermarks.at("balance") == test::store_head(database.app_url()));

  const std::string admin = database.admin_url();
  pqxx::connection connection(admin);
  pqxx::work work(connection);
  work.exec("UPDATE read.balances SET credits_posted = credits_posted + 1 WHERE account_id = 'acct-3'");
  work.exec("UPDATE read.entries SET counterparty = 'mallory' WHERE position = (SELECT min(position) FROM read.entries "
            "WHERE account_id = 'acct-5')");
  work.exec("DELETE FROM read.audit WHERE position = 42");
  work.exec("UPDATE read.audit SET actor = 'mallory' WHERE position = "
            "(SELECT min(position) FROM read.audit WHERE type = 'transfer_posted')");
  work.exec("UPDATE read.loan_installments SET penalty = 0 WHERE loan_id = 'loan-1' AND number = 1");
  work.exec("INSERT INTO read.balances SELECT 'ghost', currency, kind, owner, ledger_code, flags, overdraft_limit, status, "
            "debits_posted, credits_posted, debits_pending, credits_pending, pending_count, version, position "
            "FROM read.balances WHERE account_id = 'acct-1'");
  work.commit();

  std::ostringstream report;
  const auto found = replay::reconcile(pool, report);
  const std::string text = report.str();
  CHECK(found.differences == 6);
  CHECK(text.find("read.loan_installments loan loan-1 installment 1: penalty is '0', the log says '100'") !=
        std::string::npos);
  CHECK(text.find("read.balances account acct-3: credits_posted") != std::string::npos);
  CHECK(text.find("read.entries account acct-5") != std::string::npos);
  CHECK(text.find("counterparty is 'mallory'") != std::string::npos);
  CHECK(text.find("read.audit position 42: missing") != std::string::npos);
  CHECK(text.find(": actor is 'mallory'") != std::string::npos);
  CHECK(text.find("read.balances account ghost") != std::string::npos);
  // The report is bounded; the count is not.
  std::ostringstream short_report;
  CHECK(replay::reconcile(pool, short_report, 2).differences == 6);
  CHECK(lines_of(short_report.str()).size() == 2);
}

TEST_CASE("publish re-sends a range to Kafka exactly as the relay does; projectors change nothing") {
  test::TestDatabase database;
  test::ReadSideStack stack(database);
  auto& [kafka, pool, engine, relay, projectors] = stack;
  test::open_accounts(engine);
  test::random_workload(engine, 500);
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(database.app_url()); }));
  const auto digest = test::read_model_digest(database.app_url());
  const std::int64_t head = test::store_head(database.app_url());

  replay::PublishSettings settings;
  settings.brokers = kafka.bootstrap();
  settings.topic = test::events_topic;
  std::int64_t last_progress = 0;
  const auto result = replay::publish(pool, settings, {GlobalPosition(1), GlobalPosition(0)},
                                      [&](std::int64_t done, std::int64_t) { last_progress = done; });
  CHECK(result.events_published == head);
  CHECK(last_progress == head);
  // The projectors see every event again and skip them all as duplicates.
  CHECK(test::eventually([&] { return projectors.duplicates_skipped() >= head; }, 60s));
  CHECK(test::read_model_digest(database.app_url()) == digest);
  test::check_read_models_equal_fold(database.app_url());

  replay::PublishSettings nowhere = settings;
  nowhere.brokers = "127.0.0.1:1";
  nowhere.kafka_properties["message.timeout.ms"] = "1000";
  CHECK_THROWS((void)replay::publish(pool, nowhere, {GlobalPosition(1), GlobalPosition(3)}));

  // A hole inside a batch is refused, not stepped over (read as text, only a hole at a
  // batch's first position was).
  const std::int64_t missing = head / 2;
  tamper(database, "DELETE FROM events WHERE position = " + std::to_string(missing));
  const std::string refusal =
      "position " + std::to_string(missing) + " is missing from the event store";
  CHECK_THROWS_WITH((void)replay::publish(pool, settings, {GlobalPosition(1), GlobalPosition(0)}),
                    doctest::Contains(refusal.c_str()));
}

TEST_CASE("the slim audit model answers what its jsonb copy of every event answered, to the byte") {
  test::TestDatabase database;
  EveryEventType log(database);
  // Strings jsonb escapes its own way: control characters, quotes, backslashes, UTF-8.
  REQUIRE(log.engine
              ->execute(command(domain::Transfer{"t-odd", "alice", "bob", Amount(1), eur(),
                                                 std::string("tab\there \"q\" back\\slash / \x01\x1f\x7f caf\xc3\xa9 \xe2\x82\xac")}))
              .accepted());
  auto pool = test::make_pool(database.app_url(), 3);
  auto owner_pool = test::make_pool(database.admin_url(), 2);
  (void)replay::rebuild(owner_pool, projections::ProjectionKind::audit, {});
  const auto stored = whole_log(pool);

  // What the audit model stored and answered before migration 0011: the metadata columns and
  // `data`, the event's JSON as jsonb (the projector COPYed event_to_json into it) read back
  // as text.
  std::vector<projections::AuditRow> expected;
  {
    pqxx::connection connection(database.app_url());
    pqxx::read_transaction work(connection);
    for (const auto& event : stored) {
      projections::AuditRow row;
      row.position = event.position.value();
      row.stream_id = event.stream_id;
      row.version = event.version.value();
      row.type = event.type;
      row.event_id = event.event_id;
      row.actor = event.metadata.actor;
      row.command_id = event.metadata.command_id;
      row.correlation_id = event.metadata.correlation_id;
      row.causation_id = event.metadata.causation_id;
      row.request_id = event.metadata.request_id;
      row.client_address = event.metadata.client_address;
      row.recorded_at_us = event.recorded_at_us;
      const auto json = domain::event_to_json(*domain::decode_event(event.type, event.payload));
      row.data_json = work.exec_params1("SELECT $1::jsonb::text", json)[0].as<std::string>();
      expected.push_back(std::move(row));
    }
  }
  auto same = [](const projections::AuditRow& a, const projections::AuditRow& b) {
    return a.position == b.position && a.stream_id == b.stream_id && a.version == b.version && a.type == b.type &&
           a.event_id == b.event_id && a.actor == b.actor && a.command_id == b.command_id &&
           a.correlation_id == b.correlation_id && a.causation_id == b.causation_id && a.request_id == b.request_id &&
           a.client_address == b.client_address && a.recorded_at_us == b.recorded_at_us && a.data_json == b.data_json;
  };
  projections::ReadModels read_models(pool);
  // Every page of a query, followed by its cursor.
  auto answer = [&](projections::AuditFilter filter) {
    filter.limit = 4;
    std::vector<projections::AuditRow> rows;
    for (;;) {
      auto page = read_models.audit(filter).value;
      for (auto& row : page.rows) rows.push_back(std::move(row));
      if (!page.next_cursor) return rows;
      filter.after_position = *page.next_cursor;
    }
  };
  auto check_filter = [&](const projections::AuditFilter& filter,
                          const std::function<bool(const projections::AuditRow&)>& keep) {
    std::vector<projections::AuditRow> wanted;
    std::copy_if(expected.begin(), expected.end(), std::back_inserter(wanted), keep);
    const auto got = answer(filter);
    REQUIRE(got.size() == wanted.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
      CHECK_MESSAGE(same(got[i], wanted[i]), "position ", wanted[i].position, ": ", got[i].data_json, " vs ",
                    wanted[i].data_json);
    }
    return got.size();
  };

  std::set<std::string> types;
  for (const auto& row : expected) types.insert(row.type);
  CHECK(types.size() == 14);  // every event type (the export test names them)
  CHECK(check_filter({}, [](const auto&) { return true; }) == stored.size());
  for (const auto& type : types) {
    projections::AuditFilter by_type;
    by_type.type = type;
    CHECK(check_filter(by_type, [&](const auto& row) { return row.type == type; }) > 0);
  }
  projections::AuditFilter by_stream;
  by_stream.stream_id = "account-alice";
  CHECK(check_filter(by_stream, [](const auto& row) { return row.stream_id == "account-alice"; }) > 3);
  projections::AuditFilter by_actor;
  by_actor.actor = expected.front().actor;
  CHECK(check_filter(by_actor, [&](const auto& row) { return row.actor == expected.front().actor; }) > 0);
  by_actor.actor = "nobody";
  CHECK(check_filter(by_actor, [](const auto&) { return false; }) == 0);
  projections::AuditFilter by_time;
  by_time.from_us = expected[5].recorded_at_us;
  by_time.to_us = expected[12].recorded_at_us;
  CHECK(check_filter(by_time, [&](const auto& row) {
          return row.recorded_at_us >= *by_time.from_us && row.recorded_at_us < *by_time.to_us;
        }) > 0);

  // By stream from every cursor, not only those a page gave: since migration 0015 the query
  // walks the store's (stream_id, version) index from the version the cursor stands at, found
  // by a binary search when the cursor is not one of the stream's positions (a search that
  // ended one version too high loses a row here). With each other filter too.
  std::set<std::string> streams{"account-nobody"};
  for (const auto& row : expected) streams.insert(row.stream_id);
  CHECK(streams.size() > 8);
  std::set<std::int64_t> missing;  // positions deleted from the model below
  auto check_stream_from_every_cursor = [&](const std::string& stream) {
    std::size_t found = 0;
    for (std::int64_t cursor = 0; cursor <= static_cast<std::int64_t>(expected.size()) + 1;
         ++cursor) {
      projections::AuditFilter after;
      after.stream_id = stream;
      after.after_position = cursor;
      found += check_filter(after, [&](const auto& row) {
        return row.stream_id == stream && row.position > cursor && missing.count(row.position) == 0;
      });
    }
    return found;
  };
  for (const auto& stream : streams) {
    CAPTURE(stream);
    const auto rows_of_stream = static_cast<std::size_t>(
        std::count_if(expected.begin(), expected.end(),
                      [&](const auto& row) { return row.stream_id == stream; }));
    // From cursor c the answer holds the stream's rows after c: each row is found once per
    // cursor before it.
    std::size_t wanted = 0;
    for (const auto& row : expected) {
      if (row.stream_id == stream) wanted += static_cast<std::size_t>(row.position);
    }
    CHECK(check_stream_from_every_cursor(stream) == wanted);
    if (rows_of_stream == 0) continue;
    projections::AuditFilter with_type;
    with_type.stream_id = stream;
    with_type.type = std::find_if(expected.begin(), expected.end(), [&](const auto& row) {
                       return row.stream_id == stream;
                     })->type;
    CHECK(check_filter(with_type, [&](const auto& row) {
            return row.stream_id == stream && row.type == *with_type.type;
          }) > 0);
    projections::AuditFilter with_actor;
    with_actor.stream_id = stream;
    with_actor.actor = expected.front().actor;
    CHECK(check_filter(with_actor, [&](const auto& row) {
            return row.stream_id == stream && row.actor == *with_actor.actor;
          }) > 0);
    with_actor.actor = "nobody";
    CHECK(check_filter(with_actor, [](const auto&) { return false; }) == 0);
    projections::AuditFilter with_time = by_time;
    with_time.stream_id = stream;
    (void)check_filter(with_time, [&](const auto& row) {
      return row.stream_id == stream && row.recorded_at_us >= *by_time.from_us &&
             row.recorded_at_us < *by_time.to_us;
    });
  }

  // A model behind the store (a stalled projector): the walk stops at the stream's last event
  // the model holds, and loses nothing before it. Also holes below that row, as partitioned
  // projectors leave (alice's partition behind the others): the bound is the model's highest
  // row, not a watermark.
  const auto held = static_cast<std::int64_t>(expected.size()) / 2;
  for (const auto& row : expected) {
    if (row.position > held || (row.stream_id == "account-alice" && row.position > held / 2)) {
      missing.insert(row.position);
    }
  }
  REQUIRE(std::count_if(missing.begin(), missing.end(), [&](auto at) { return at <= held; }) > 0);
  {
    pqxx::connection owner(database.admin_url());
    pqxx::work work(owner);
    for (const auto position : missing) {
      work.exec_params("DELETE FROM read.audit WHERE position = $1", position);
    }
    work.commit();
  }
  std::size_t found_behind = 0;
  for (const auto& stream : streams) found_behind += check_stream_from_every_cursor(stream);
  CHECK(found_behind > 0);
}
