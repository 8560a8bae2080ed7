// One command cannot hurt another (DESIGN.md invariant 10): whatever one command carries, it
// fails alone and every other command of its group-commit batch commits.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <future>
#include <string>
#include <vector>

#include "engine_fixture.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using namespace std::chrono_literals;
using test::command;
using test::eur;

namespace {

constexpr int batch_commands = 40;

EngineSettings gathering_settings(const test::TestDatabase& database, bool pipelined) {
  EngineSettings settings = test::engine_settings(database);
  settings.commit_wait_max = 100ms;  // what is submitted at once shares one batch
  settings.decide_while_committing = pipelined;
  return settings;
}

// Submits `batch_commands` deposits at once, the `poison`-th built by `poisoned`; returns the
// futures in order.
std::vector<std::future<domain::CommandOutcome>> submit_batch(Engine& engine, const std::string& prefix,
                                                      int poison,
                                                      const std::function<domain::Command()>& poisoned) {
  std::vector<std::future<domain::CommandOutcome>> futures;
  for (int i = 0; i < batch_commands; ++i) {
    if (i == poison) {
      futures.push_back(engine.submit(poisoned()));
    } else {
      futures.push_back(engine.submit(command(domain::Deposit{"alice", Amount(10), "", fmt::format("{}{}", prefix, i)})));
    }
  }
  return futures;
}

void check_only_poison_failed(std::vector<std::future<domain::CommandOutcome>>& futures, int poison,
                              RejectionCode expected) {
  for (int i = 0; i < batch_commands; ++i) {
    if (i == poison) {
      const auto outcome = futures[static_cast<std::size_t>(i)].get();
      CHECK(outcome.code == expected);
      CHECK(!outcome.detail.empty());
      continue;
    }
    const auto outcome = futures[static_cast<std::size_t>(i)].get();
    CHECK_MESSAGE(outcome.accepted(), "innocent command " << i << ": " << outcome.detail);
  }
}

}  // namespace

TEST_CASE("metadata PostgreSQL cannot store fails only its own command") {
  for (const bool pipelined : {true, false}) {
    INFO(std::string(pipelined ? "pipelined" : "serial"));
    test::TestDatabase database;
    Engine engine(gathering_settings(database, pipelined));
    REQUIRE(engine.execute(command(domain::OpenAccount{"alice", eur()})).accepted());
    const std::vector<std::string> unstorable = {std::string("\xff\xfe"), std::string("a\0b", 3),
                                                 std::string(300, 'x'), std::string("tab\there")};
    int round = 0;
    for (const auto& bad : unstorable) {
      auto futures = submit_batch(engine, fmt::format("c{}-", round), 7, [&] {
        auto poisoned = command(domain::Deposit{"alice", Amount(10)});
        poisoned.context.correlation_id = bad;
        return poisoned;
      });
      check_only_poison_failed(futures, 7, RejectionCode::invalid_command);
      // Keys too: a batch's keys are looked up in the store together.
      futures = submit_batch(engine, fmt::format("k{}-", round), 3, [&] {
        return command(domain::Deposit{"alice", Amount(10)}, bad, "fingerprint");
      });
      check_only_poison_failed(futures, 3, RejectionCode::invalid_command);
      ++round;
    }
    CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events WHERE type = 'transfer_posted'") ==
          static_cast<long long>(unstorable.size()) * 2 * (batch_commands - 1));
  }
}

TEST_CASE("a batch the database refuses because of one command is split until that one fails alone") {
  for (const bool pipelined : {true, false}) {
    INFO(std::string(pipelined ? "pipelined" : "serial"));
    test::TestDatabase database;
    {
      // The database refuses any event of one stream: whatever a command carries that the
      // engine did not foresee, PostgreSQL rejecting its rows must not fail its neighbours.
      pqxx::connection owner(database.admin_url());
      pqxx::work work(owner);
      work.exec(
          "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
          "IF NEW.stream_id = 'account-poison' AND NEW.version > 1 THEN "
          "RAISE EXCEPTION 'poisoned row' USING ERRCODE = 'data_exception'; END IF; "
          "RETURN NEW; END $$");
      work.exec("CREATE TRIGGER refuse_poison BEFORE INSERT ON events FOR EACH ROW "
                "EXECUTE FUNCTION refuse_poison()");
      work.commit();
    }
    Engine engine(gathering_settings(database, pipelined));
    REQUIRE(engine.execute(command(domain::OpenAccount{"alice", eur()})).accepted());
    REQUIRE(engine.execute(command(domain::OpenAccount{"poison", eur()})).accepted());
    auto futures = submit_batch(engine, "d", 11, [] { return command(domain::Deposit{"poison", Amount(10)}); });
    for (int i = 0; i < batch_commands; ++i) {
      if (i == 11) {
        CHECK_THROWS_AS(futures[11].get(), EngineUnavailable);
        continue;
      }
      const auto outcome = futures[static_cast<std::size_t>(i)].get();
      CHECK_MESSAGE(outcome.accepted(), "innocent command " << i << ": " << outcome.detail);
    }
    CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events WHERE stream_id LIKE 'transfer-d%'") ==
          batch_commands - 1);
    CHECK(engine.read_account("alice")->balance() == Amount(10 * (batch_commands - 1)));
  }
}

TEST_CASE("a command whose event would not read back is refused alone and nothing of it is stored") {
  // A loan whose schedule runs past year 9999: its last due date cannot be written as
  // YYYY-MM-DD, so the event would not decode. Whichever check refuses it (the loan rules'
  // date bounds, or the engine decoding every event before appending it), it fails alone.
  test::TestDatabase database;
  Engine engine(gathering_settings(database, true));
  REQUIRE(engine.execute(command(domain::OpenAccount{"alice", eur()})).accepted());
  auto futures = submit_batch(engine, "d", 5, [] {
    domain::OriginateLoan loan;
    loan.id = "far";
    loan.borrower = "alice";
    loan.currency = eur();
    loan.principal = Amount(120'000);
    loan.rate_bps = 1'200;
    loan.installments = 12;
    loan.origination_date = "9999-05-15";
    loan.first_due_date = "9999-06-15";
    return command(loan);
  });
  for (int i = 0; i < batch_commands; ++i) {
    const auto outcome = futures[static_cast<std::size_t>(i)].get();
    if (i == 5) {
      CHECK(!outcome.accepted());
      CHECK(outcome.code != RejectionCode::version_conflict);
      MESSAGE("refused with " << to_string(outcome.code) << ": " << outcome.detail);
      continue;
    }
    CHECK_MESSAGE(outcome.accepted(), "innocent command " << i << ": " << outcome.detail);
  }
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events WHERE stream_id = 'loan-far'") == 0);
  CHECK(test::scalar(database.app_url(), "SELECT count(*) FROM events WHERE type = 'transfer_posted'") ==
        batch_commands - 1);
}

TEST_CASE("an error no command's data causes (a statement timeout) fails the batch at once, unsplit") {
  test::TestDatabase database;
  EngineSettings settings = gathering_settings(database, true);
  settings.database_statement_timeout = 300ms;
  settings.connection_retries_max = 1;
  Engine engine(settings);
  REQUIRE(engine.execute(command(domain::OpenAccount{"alice", eur()})).accepted());
  REQUIRE(engine.execute(command(domain::Deposit{"alice", Amount(1)})).accepted());  // cash account cached

  // Another session holds the head row: every append waits out its statement timeout.
  pqxx::connection owner(database.admin_url());
  pqxx::work holder(owner);
  holder.exec("SELECT 1 FROM event_store_head FOR UPDATE");
  const auto started = std::chrono::steady_clock::now();
  std::vector<std::future<domain::CommandOutcome>> futures;
  for (int i = 0; i < batch_commands; ++i) {
    futures.push_back(engine.submit(command(domain::Deposit{"alice", Amount(10)})));
  }
  for (auto& future : futures) CHECK_THROWS_AS(future.get(), EngineUnavailable);
  const auto elapsed = std::chrono::steady_clock::now() - started;
  // Split in halves, the batch would take 2n-1 = 79 attempts of 300 ms each.
  CHECK_MESSAGE(elapsed < 8s, "answered after "
                                  << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()
                                  << " ms");
  holder.abort();
  CHECK(engine.execute(command(domain::Deposit{"alice", Amount(10)})).accepted());
}
