// `ledger replay …` and `ledger rebuild …` as an operator runs them: exit codes, files,
// summaries and one-line errors for bad arguments.
#include <doctest/doctest.h>

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "../engine/engine_fixture.hpp"
#include "ledger/core/process.hpp"
#include "test_cluster.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using test::command;
using test::eur;
using namespace std::chrono_literals;

namespace {

struct Cli {
  test::TestDatabase& database;
  process::ExitStatus status;
  std::string output;

  void run(std::vector<std::string> arguments) {
    arguments.insert(arguments.begin(), {test::ledger_binary(), "--home", "/tmp/ledger-replay-cli-none",
                                         "--database-url", database.app_url(), "--admin-database-url",
                                         database.admin_url(), "--log-level", "warn"});
    output.clear();
    status = process::run(arguments, output);
  }
  bool says(const std::string& text) const { return output.find(text) != std::string::npos; }
};

}  // namespace

TEST_CASE("replay and rebuild from the command line") {
  test::TestDatabase database;
  {
    Engine engine(test::engine_settings(database));
    REQUIRE(engine.execute(command(OpenAccount{"alice", eur()})).accepted());
    REQUIRE(engine.execute(command(OpenAccount{"bob", eur()})).accepted());
    REQUIRE(engine.execute(command(Deposit{"alice", Amount(1'000)})).accepted());
    REQUIRE(engine.execute(command(Transfer{"t-1", "alice", "bob", Amount(250), eur()})).accepted());
  }
  const auto head = test::scalar(database.app_url(), "SELECT position FROM event_store_head");
  Cli cli{database, {}, {}};

  cli.run({"replay", "verify"});
  CHECK_MESSAGE(cli.status.success(), cli.output);
  CHECK(cli.says("ok: " + std::to_string(head) + " events"));
  CHECK(cli.says("double entry holds"));

  cli.run({"replay", "--json", "verify"});
  CHECK(cli.status.success());
  CHECK(cli.says("\"ok\":true"));
  CHECK(cli.says("\"events_checked\":" + std::to_string(head)));

  const std::filesystem::path file = "/tmp/ledger-replay-cli-" + std::to_string(getpid()) + ".jsonl";
  cli.run({"replay", "export", "--output", file.string(), "--type", "transfer_posted"});
  CHECK_MESSAGE(cli.status.success(), cli.output);
  std::ifstream exported(file);
  std::string line;
  int lines = 0;
  while (std::getline(exported, line)) {
    ++lines;
    CHECK(line.find("\"type\":\"transfer_posted\"") != std::string::npos);
  }
  CHECK(lines == 2);  // the deposit and the transfer
  std::filesystem::remove(file);

  cli.run({"replay", "balance", "--account", "alice", "--at-position", std::to_string(head)});
  CHECK(cli.status.success());
  CHECK(cli.says("balance 750"));
  cli.run({"replay", "balance", "--account", "nobody", "--at-position", "1"});
  CHECK(cli.status.code == 1);
  CHECK(cli.says("account nobody does not exist"));

  // The read models are empty (no projector ran): rebuild them, then reconcile agrees.
  cli.run({"rebuild", "all", "--json"});
  CHECK_MESSAGE(cli.status.success(), cli.output);
  CHECK(cli.says("\"read_model\":\"balance\",\"watermark\":" + std::to_string(head)));
  CHECK(cli.says("\"read_model\":\"audit\",\"watermark\":" + std::to_string(head)));
  // A log shorter than the swap_within default: no pass, the swap applies it all.
  CHECK(cli.says("\"passes\":0,\"outrun\":false,\"swap_applied\":" + std::to_string(head)));
  cli.run({"replay", "reconcile"});
  CHECK_MESSAGE(cli.status.success(), cli.output);
  CHECK(cli.says("ok: 0 differences"));

  {
    pqxx::connection connection(database.admin_url());
    pqxx::work work(connection);
    work.exec("UPDATE read.balances SET debits_posted = 1 WHERE account_id = 'bob'");
    work.commit();
  }
  cli.run({"replay", "reconcile"});
  CHECK(cli.status.code == 1);
  CHECK(cli.says("read.balances account bob: debits_posted is '1', the log says '0'"));

  {
    pqxx::connection connection(test::TestCluster::instance().superuser_url(database.name()));
    pqxx::work work(connection);
    work.exec("SET session_replication_role = replica");
    work.exec("UPDATE events SET metadata = '{\"actor\":\"mallory\"}' WHERE position = 3");
    work.commit();
  }
  cli.run({"replay", "verify"});
  CHECK(cli.status.code == 1);
  CHECK(cli.says("FAILED at position 3: the hash does not match the chain"));
  // The same answer whatever the number of hash checking threads.
  cli.run({"replay", "verify", "--hash-threads", "3"});
  CHECK(cli.status.code == 1);
  CHECK(cli.says("FAILED at position 3: the hash does not match the chain"));

  SUBCASE("bad arguments: one line, exit code 2, nothing run") {
    for (const std::vector<std::string>& arguments :
         {std::vector<std::string>{"replay", "balance", "--account", "alice", "--as-of", "yesterday"},
          {"replay", "balance", "--account", "alice", "--as-of", "2026-01-01T00:00:00Z", "--at-position", "3"},
          {"replay", "balance", "--account", "alice"},
          {"replay", "export", "--format", "xml"},
          {"replay", "export", "--from", "0"},
          {"replay", "verify", "--hash-threads", "0"},
          {"replay", "publish"},
          {"rebuild", "ledgers"},
          {"rebuild"}}) {
      cli.run(arguments);
      CHECK_MESSAGE(cli.status.code == 2, arguments[1] << ": " << cli.output);
      CHECK(cli.says("ledger: error: "));
    }
  }
}

TEST_CASE("ledger rebuild killed with SIGKILL half way leaves the live read model as it was and resumes") {
  test::TestDatabase database;
  auto deposits = [&](int count, bool open) {
    Engine engine(test::engine_settings(database));
    std::vector<std::future<CommandOutcome>> outcomes;
    for (int i = 0; i < count; ++i) {
      if (open && i < 20) REQUIRE(engine.execute(command(OpenAccount{"a" + std::to_string(i), eur()})).accepted());
      outcomes.push_back(engine.submit(command(Deposit{"a" + std::to_string(i % 20), Amount(1 + i)})));
    }
    for (auto& outcome : outcomes) REQUIRE(outcome.get().accepted());
  };
  auto scalar = [&](const std::string& sql) { return test::scalar(database.admin_url(), sql); };
  Cli cli{database, {}, {}};
  deposits(2'000, true);
  cli.run({"rebuild", "audit"});
  REQUIRE_MESSAGE(cli.status.success(), cli.output);
  const auto live_watermark = scalar("SELECT watermark FROM read.projections WHERE name = 'audit'");
  const auto live_rows = scalar("SELECT count(*) FROM read.audit");
  CHECK(live_rows == live_watermark);
  deposits(5'000, false);  // 15,000 more events for the next rebuild

  const pid_t pid = process::spawn({test::ledger_binary(), "--log-level", "warn", "--database-url", database.app_url(),
                                    "--admin-database-url", database.admin_url(), "rebuild", "audit", "--restart",
                                    "--batch-events", "100"});
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  auto shadow_watermark = [&] {
    return scalar("SELECT coalesce((SELECT watermark FROM rebuild.progress WHERE name = 'audit@2'), 0)");
  };
  while (shadow_watermark() < 2'000 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  const auto killed = process::stop(pid, SIGKILL, 1s);
  REQUIRE_MESSAGE(!killed.exited, "the rebuild ended before it could be killed");
  const auto stopped_at = shadow_watermark();
  CHECK(stopped_at >= 2'000);
  CHECK(stopped_at < scalar("SELECT position FROM event_store_head"));
  // The live read model is exactly as before.
  CHECK(scalar("SELECT watermark FROM read.projections WHERE name = 'audit'") == live_watermark);
  CHECK(scalar("SELECT count(*) FROM read.audit") == live_rows);

  cli.run({"rebuild", "audit", "--json"});
  REQUIRE_MESSAGE(cli.status.success(), cli.output);
  CHECK(cli.says("\"resumed_from\":" + std::to_string(stopped_at)));
  const auto head = scalar("SELECT position FROM event_store_head");
  CHECK(scalar("SELECT watermark FROM read.projections WHERE name = 'audit'") == head);
  CHECK(scalar("SELECT count(*) FROM read.audit") == head);
  cli.run({"replay", "reconcile"});
  CHECK_MESSAGE(cli.status.success(), cli.output);
}
