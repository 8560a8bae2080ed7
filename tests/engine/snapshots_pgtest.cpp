// The snapshot cache against a real PostgreSQL: a stale, missing, corrupt or foreign snapshot
// changes no answer a client gets, and what the engine logs about it.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine_fixture.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/engine/close_of_business.hpp"
#include "ledger/engine/event_store.hpp"
#include "ledger/engine/snapshot_store.hpp"
#include "open_and_fund.hpp"
#include "snapshot_writer.hpp"
#include "stream_loader.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;
using test::command;
using test::eur;
using test::open_and_fund;

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

// The loans of the loan snapshot test, named after what is done to their snapshot.
const std::vector<std::string> snapshot_loans = {"intact", "behind", "stale", "ahead",
                                                 "missing", "corrupt", "flipped", "foreign"};

domain::OriginateLoan snapshot_loan(const std::string& id) {
  domain::OriginateLoan loan;
  loan.id = id;
  loan.borrower = "borrower";
  loan.currency = eur();
  loan.principal = Amount(120'000);
  loan.rate_bps = 1'200;
  loan.installments = 12;
  loan.schedule = ScheduleType::annuity;
  loan.origination_date = "2026-01-15";
  loan.first_due_date = "2026-02-15";
  loan.origination_fee = Amount(1'000);
  loan.late_fee = Amount(500);
  loan.grace_days = 5;
  return loan;
}

std::string describe(const std::optional<domain::LoanState>& loan) {
  if (!loan) return "no such loan";
  const auto& book = loan->book;
  std::string text = fmt::format("{} through {} recognised {} dpd {} outstanding {} version {}",
                                 to_string(book.status), book.closed_through ? to_string(*book.closed_through) : "-",
                                 book.interest_recognised, book.days_past_due, book.principal_outstanding(),
                                 loan->version.value());
  for (const auto& i : book.installments) {
    text += fmt::format(" [{} {}/{} {}/{} {}/{}{}]", i.number, i.principal_paid, i.principal, i.interest_paid,
                        i.interest, i.penalty_paid, i.penalty, i.overdue ? " overdue" : "");
  }
  return text;
}

enum class LoanPause { disbursed, closed };

// Loans originated, disbursed and closed through two days by one engine; then, each by a new
// engine (an empty in-memory cache), close of business through a date past the first due date
// and its grace days, a repayment, and another close. Every answer, in order.
Transcript play_loans(EngineSettings settings, const std::function<void(LoanPause)>& between) {
  Transcript transcript;
  auto generated = std::make_shared<std::atomic<int>>(0);
  settings.generate_id = [generated] { return "generated-" + std::to_string(++*generated); };
  const auto stage = [&](const std::function<void(Engine&)>& body) {
    Engine engine(settings);
    body(engine);
  };
  stage([&](Engine& engine) {
    REQUIRE(engine.execute(command(domain::OpenAccount{"borrower", eur()})).accepted());
    REQUIRE(engine.execute(command(domain::Deposit{"borrower", Amount(1'000'000)})).accepted());
    for (const auto& id : snapshot_loans) {
      transcript.push_back("originate " + id + ": " + describe(engine.execute(command(snapshot_loan(id)))));
      transcript.push_back("disburse " + id + ": " + describe(engine.execute(command(domain::DisburseLoan{id}))));
    }
  });
  between(LoanPause::disbursed);
  stage([&](Engine& engine) {
    for (const auto& id : snapshot_loans) {
      for (const char* day : {"2026-02-01", "2026-02-10"}) {
        transcript.push_back(std::string("close ") + day + " " + id + ": " +
                             describe(engine.execute(command(domain::CloseLoanBusinessDay{id, day}))));
      }
    }
  });
  between(LoanPause::closed);
  stage([&](Engine& engine) {
    db::PoolSettings pool_settings;
    pool_settings.url = settings.database_url;
    pool_settings.connections_max = 2;
    db::ConnectionPool pool(pool_settings);
    const EventStore store(pool);
    const auto cob = close_of_business(engine, store, *domain::parse_date("2026-02-21"));
    transcript.push_back(fmt::format("close of business 2026-02-21: {} loans, {} closed, {} failed {}", cob.loans,
                                     cob.closed, cob.failed, cob.first_failure));
    for (const auto& id : snapshot_loans) {
      transcript.push_back("state of " + id + ": " + describe(engine.read_loan(id)));
      transcript.push_back("repay " + id + ": " +
                           describe(engine.execute(command(domain::RepayLoan{id, Amount(5'000), "r-" + id}))));
      transcript.push_back("close 2026-03-20 " + id + ": " +
                           describe(engine.execute(command(domain::CloseLoanBusinessDay{id, "2026-03-20"}))));
      transcript.push_back("state of " + id + " after: " + describe(engine.read_loan(id)));
    }
  });
  return transcript;
}

}  // namespace

TEST_CASE("a stale, a foreign or a corrupt loan snapshot changes no decision: the loan is folded from the store") {
  // As for accounts above: the same commands against a reference engine without snapshots and
  // one with a snapshot of every loan event, spoiled before close of business, and no
  // in-memory cache, so every decision loads its loan through the snapshots.
  test::TestDatabase reference_database;
  test::TestDatabase spoiled_database;
  const auto directory =
      std::filesystem::temp_directory_path() / ("ledger-loan-snapshots-" + spoiled_database.name());
  std::filesystem::remove_all(directory);
  const RemovedAtExit removed_at_exit{directory};
  LogCapture log;

  const Transcript reference = play_loans(test::engine_settings(reference_database), [](LoanPause) {});
  (void)log.take();

  auto settings = test::engine_settings(spoiled_database);
  settings.snapshot_directory = directory.string();
  settings.snapshot_every_events = 1;
  settings.state_cache_streams_max = 0;
  std::optional<domain::StreamState> behind;  // the "behind" loan's snapshot as disbursed
  const auto spoil = [&](LoanPause pause) {
    SnapshotStore snapshots(directory.string());
    if (pause == LoanPause::disbursed) {
      behind = snapshots.get(domain::loan_stream("behind"));
      REQUIRE(behind.has_value());
      CHECK(std::get<domain::LoanState>(behind->aggregate).book.status == LoanStatus::active);
      return;
    }
    std::map<std::string, domain::StreamState> current;
    for (const auto& id : snapshot_loans) {
      auto snapshot = snapshots.get(domain::loan_stream(id));
      REQUIRE_MESSAGE(snapshot.has_value(), id);  // loans are snapshotted like accounts
      current.emplace(id, std::move(*snapshot));
    }
    REQUIRE(current.at("behind").version.value() > behind->version.value());
    snapshots.put(domain::loan_stream("behind"), *behind);
    // Trusted, each forgery would skip the day close that charges the late fee.
    const auto forge = [](domain::StreamState& state) {
      std::get<domain::LoanState>(state.aggregate).book.closed_through = *domain::parse_date("2026-03-31");
    };
    auto stale = current.at("stale");
    forge(stale);
    stale.last_hash = std::string(32, 'x');
    snapshots.put(domain::loan_stream("stale"), stale);
    auto ahead = current.at("ahead");
    forge(ahead);
    ahead.version = StreamVersion(ahead.version.value() + 100);
    snapshots.put(domain::loan_stream("ahead"), ahead);
    snapshots.remove(domain::loan_stream("missing"));
    snapshots.put_raw(domain::loan_stream("corrupt"), "not a snapshot at all");
    std::string flipped = SnapshotStore::encode(domain::loan_stream("flipped"), current.at("flipped"));
    flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x5a);
    snapshots.put_raw(domain::loan_stream("flipped"), flipped);
    auto intact = current.at("intact");
    forge(intact);
    snapshots.put_raw(domain::loan_stream("foreign"), SnapshotStore::encode(domain::loan_stream("intact"), intact));
    (void)log.take();
  };
  const Transcript spoiled = play_loans(settings, spoil);

  const auto lines = log.take();
  INFO(fmt::format("{}", fmt::join(lines, "\n")));
  CHECK(count_lines(lines, {"snapshot of " + domain::loan_stream("stale") + " does not match"}) == 1);
  CHECK(count_lines(lines, {"snapshot of " + domain::loan_stream("ahead") + " is ahead"}) == 1);
  for (const char* id : {"corrupt", "flipped", "foreign"}) {
    CHECK(count_lines(lines, {"snapshot of " + domain::loan_stream(id) + " is corrupt"}) == 1);
  }
  for (const char* id : {"intact", "behind", "missing"}) {
    CHECK(count_lines(lines, {"snapshot of " + domain::loan_stream(id) + " "}) == 0);
  }
  REQUIRE(spoiled.size() == reference.size());
  for (std::size_t i = 0; i < reference.size(); ++i) CHECK(spoiled[i] == reference[i]);
  // The late fee the forgeries would have skipped was charged to every loan.
  for (const auto& line : reference) {
    if (line.rfind("state of ", 0) == 0 && line.find(" after") == std::string::npos) {
      CHECK_MESSAGE(line.find("0/500") != std::string::npos, line);
    }
  }
}

TEST_CASE("an account shorter than snapshot_every_events is snapshotted when loaded cold; the next cold load starts there") {
  // Most accounts of a large population never reach a multiple of snapshot_every_events, so no
  // append of theirs writes a snapshot. Folded from their first event at every cold load
  // (after a restart, or once evicted), each event read costs PostgreSQL a heap page on the
  // writer's critical path: the first cold load snapshots what it folded.
  test::TestDatabase database;
  const auto directory =
      std::filesystem::temp_directory_path() / ("ledger-snapshots-short-" + database.name());
  std::filesystem::remove_all(directory);
  const RemovedAtExit removed_at_exit{directory};
  auto settings = test::engine_settings(database);
  settings.snapshot_directory = directory.string();
  settings.snapshot_every_events = 64;  // the appends below pass no multiple of it
  {
    Engine engine(settings);
    open_and_fund(engine, "short", 0);
    for (int i = 0; i < 10; ++i) {
      REQUIRE(engine.execute(command(Deposit{"short", Amount(1)})).accepted());
    }
  }
  {
    // Version 11: no multiple of 64 passed.
    SnapshotStore snapshots(directory.string());
    REQUIRE_FALSE(snapshots.get(account_stream("short")).has_value());
  }
  {
    Engine engine(settings);  // an empty in-memory cache: the withdrawal folds all 11 events
    REQUIRE(engine.execute(command(Withdrawal{"short", Amount(1)})).accepted());
  }
  {
    SnapshotStore snapshots(directory.string());
    const auto snapshot = snapshots.get(account_stream("short"));
    REQUIRE(snapshot.has_value());
    CHECK(snapshot->version.value() == 11);
  }
  Engine engine(settings);
  const auto hits_before = engine.stats().snapshots.hits;
  // Decided on the snapshot and the withdrawal folded on top: 10 - 1 = 9 left.
  CHECK(engine.execute(command(Withdrawal{"short", Amount(10)})).code == RejectionCode::insufficient_funds);
  CHECK(engine.stats().snapshots.hits > hits_before);
  REQUIRE(engine.execute(command(Withdrawal{"short", Amount(9)})).accepted());
}

TEST_CASE(
    "a cold load's snapshot goes through the snapshot writer's queue, not a RocksDB write on the "
    "loading thread") {
  // The pipeline loads streams on its writer thread, some of them under the head lock (a batch
  // decided again, the serial retry): a RocksDB write stall there would hold every writer.
  test::TestDatabase database;
  const auto directory =
      std::filesystem::temp_directory_path() / ("ledger-snapshots-queued-" + database.name());
  std::filesystem::remove_all(directory);
  const RemovedAtExit removed_at_exit{directory};
  {
    auto settings = test::engine_settings(database);
    Engine engine(settings);  // no snapshot directory: nothing snapshotted while appending
    open_and_fund(engine, "queued", 0);
    for (int i = 0; i < 10; ++i)
      REQUIRE(engine.execute(command(Deposit{"queued", Amount(1)})).accepted());
  }
  const std::string stream = account_stream("queued");
  SnapshotStore snapshots(directory.string());
  pqxx::connection connection(database.app_url());
  auto load = [&](SnapshotWriter* writer) {
    pqxx::read_transaction work(connection);
    return load_streams(work, {stream}, &snapshots, writer).at(stream).version.value();
  };
  {
    // A writer whose queue holds nothing drops what it is given (snapshots are only a cache):
    // a load that wrote to RocksDB itself would leave the snapshot anyway.
    SnapshotWriter dropping(snapshots, 16, 0);
    CHECK(load(&dropping) == 11);
  }
  CHECK_FALSE(snapshots.get(stream).has_value());
  {
    SnapshotWriter writer(snapshots, 16, 16);
    CHECK(load(&writer) == 11);
  }  // stopped: what it queued is written
  const auto queued = snapshots.get(stream);
  REQUIRE(queued.has_value());
  CHECK(queued->version.value() == 11);
  // A caller with no snapshot thread: the load writes it itself.
  snapshots.remove(stream);
  CHECK(load(nullptr) == 11);
  REQUIRE(snapshots.get(stream).has_value());
}

TEST_CASE("a load of many streams spread over several connections folds what one statement folds") {
  // The pipelined decision path reads a cold batch's streams in ranges on the connections the
  // pool has free (a cold store is read one heap page at a time per statement). Every range
  // must fold, snapshot and refold as the single statement does, and a range that fails must
  // fail the load and give up its connection.
  test::TestDatabase database;
  const auto directory =
      std::filesystem::temp_directory_path() / ("ledger-snapshots-spread-" + database.name());
  std::filesystem::remove_all(directory);
  const RemovedAtExit removed_at_exit{directory};
  constexpr int accounts = 100;
  std::vector<std::string> ids;
  {
    Engine engine(test::engine_settings(database));  // no snapshot directory
    for (int i = 0; i < accounts; ++i) {
      const std::string id = fmt::format("spread-{:03}", i);
      open_and_fund(engine, id, i + 1);
      // Every tenth account long enough to be snapshotted when loaded (8 events folded).
      for (int d = 0; i % 10 == 0 && d < 10; ++d) {
        REQUIRE(engine.execute(command(Deposit{id, Amount(1)})).accepted());
      }
      ids.push_back(account_stream(id));
    }
  }
  ids.push_back(account_stream("spread-none"));  // no events: comes back empty
  std::sort(ids.begin(), ids.end());

  // What one statement folds, without snapshots.
  std::map<std::string, std::string> expected;
  {
    pqxx::connection connection(database.app_url());
    pqxx::read_transaction work(connection);
    for (const auto& [id, state] : load_streams(work, ids, nullptr)) {
      expected[id] = SnapshotStore::encode(id, state);
    }
  }
  REQUIRE(expected.size() == ids.size());
  auto encoded = [](const std::unordered_map<std::string, StreamState>& states) {
    std::map<std::string, std::string> bytes;
    for (const auto& [id, state] : states) bytes[id] = SnapshotStore::encode(id, state);
    return bytes;
  };

  SnapshotStore snapshots(directory.string());
  const std::string last_long = account_stream("spread-090");  // in the last range
  snapshots.put_raw(last_long, "not a snapshot");
  db::ConnectionPool pool = test::make_pool(database.app_url(), 5);
  {
    auto first = pool.acquire();
    pqxx::nontransaction work(*first);
    const auto states = load_streams_spread(work, pool, ids, 7, &snapshots, nullptr);
    CHECK(encoded(states) == expected);
    // Three ranges: the pool's five connections less the caller's and two left free.
    CHECK(pool.stats().open == 3);
  }
  // Each range snapshotted its long accounts (the corrupt one dropped and written again).
  for (int i = 0; i < accounts; i += 10) {
    const auto snapshot = snapshots.get(account_stream(fmt::format("spread-{:03}", i)));
    REQUIRE(snapshot.has_value());
    CHECK(snapshot->version.value() == 12);  // opened, funded, ten deposits
  }
  SUBCASE("again, from the snapshots") {
    auto first = pool.acquire();
    pqxx::nontransaction work(*first);
    const auto hits_before = snapshots.stats().hits;
    CHECK(encoded(load_streams_spread(work, pool, ids, 7, &snapshots, nullptr)) == expected);
    CHECK(snapshots.stats().hits == hits_before + accounts / 10);
  }
  SUBCASE("no connection free: one statement") {
    std::vector<db::ConnectionPool::Lease> held;
    for (int i = 0; i < 5; ++i) held.push_back(pool.acquire());
    pqxx::nontransaction work(*held.front());
    CHECK(encoded(load_streams_spread(work, pool, ids, 7, &snapshots, nullptr)) == expected);
    CHECK(pool.stats().in_use == 5);
  }
  SUBCASE("few streams: one statement") {
    db::ConnectionPool small = test::make_pool(database.app_url(), 5);
    auto first = small.acquire();
    pqxx::nontransaction work(*first);
    const std::vector<std::string> few(ids.begin(), ids.begin() + 31);
    CHECK(load_streams_spread(work, small, few, 7, &snapshots, nullptr).size() == few.size());
    CHECK(small.stats().open == 1);
  }
  SUBCASE("a range that fails fails the load; every connection goes back") {
    {
      pqxx::connection admin(database.admin_url());
      pqxx::work work(admin);
      work.exec("SET session_replication_role = replica");  // superuser bypass of the trigger
      work.exec("UPDATE events SET payload = '\\x00'::bytea WHERE stream_id = '" + last_long +
                "' AND version = 2");
      work.commit();
    }
    snapshots.remove(last_long);  // folded from the store, through the altered event
    auto first = pool.acquire();
    pqxx::nontransaction work(*first);
    CHECK_THROWS_WITH_AS(load_streams_spread(work, pool, ids, 7, &snapshots, nullptr),
                         doctest::Contains("cannot be decoded"), std::runtime_error);
    CHECK(pool.stats().in_use == 1);
    CHECK(pool.stats().open == 3);  // a statement that failed leaves its connection usable:
    std::vector<db::ConnectionPool::Lease> back;
    for (int i = 0; i < 2; ++i) back.push_back(pool.acquire());
    for (auto& lease : back) {
      pqxx::nontransaction read(*lease);
      CHECK(load_streams(read, {ids.front()}, nullptr).size() == 1);
    }
    CHECK(pool.stats().open == 3);
  }
  SUBCASE("a server that refuses more clients: the ranges it lets in") {
    // The pool may open more than the server allows (other processes hold the rest): the load
    // reads on what it has (here one idle connection beside the caller's) at once, without the
    // pool's connect retries, and answers; the next loads try no new connection for a while.
    db::ConnectionPool crowded = test::make_pool(database.app_url(), 8);
    auto first = crowded.acquire();
    auto second = crowded.acquire();
    { auto idle = crowded.acquire(); }
    // No new connection of a non-superuser (the ones open stay).
    pqxx::connection admin(database.admin_url());
    const std::string alter = "ALTER DATABASE " + admin.quote_name(database.name());
    pqxx::nontransaction(admin).exec(alter + " CONNECTION LIMIT 0");
    LogCapture log;
    pqxx::nontransaction work(*first);
    const auto started = std::chrono::steady_clock::now();
    const auto states = load_streams_spread(work, crowded, ids, 7, &snapshots, nullptr);
    const auto took = std::chrono::steady_clock::now() - started;
    const auto again = load_streams_spread(work, crowded, ids, 7, &snapshots, nullptr);
    pqxx::nontransaction(admin).exec(alter + " CONNECTION LIMIT -1");
    CHECK(encoded(states) == expected);
    CHECK(encoded(again) == expected);
    CHECK(crowded.stats().open == 3);
    CHECK(crowded.stats().in_use == 2);
    CHECK(took < std::chrono::seconds(2));  // the pool's retries back off for seconds
    const auto lines = log.take();
    CHECK(std::count_if(lines.begin(), lines.end(), [](const std::string& line) {
            return line.find("an optional PostgreSQL connection could not be opened") !=
                   std::string::npos;
          }) == 1);  // tried once, not again by the second load
  }
}
