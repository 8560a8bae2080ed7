// Splitting a decided batch on the streams another writer moved (engine/src/batch_split.hpp):
// only the commands decided on a moved stream, and those built on them, go back; system
// accounts' streams continue from the stored version.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "batch_split.hpp"
#include "ledger/domain/events.hpp"

namespace {

using namespace ledger;          // NOLINT(google-build-using-namespace)
using namespace ledger::engine;  // NOLINT(google-build-using-namespace)
namespace events = domain::events;

const Currency eur = *Currency::parse("EUR");
const std::string cash = domain::account_stream(domain::system_account_id(domain::SystemAccount::cash, "EUR"));

domain::RecordedEvent row(std::string stream_id, std::int64_t version) {
  domain::RecordedEvent recorded;
  recorded.stream_id = std::move(stream_id);
  recorded.version = StreamVersion(version);
  recorded.type = "AccountEntry";
  return recorded;
}

// A batch under construction: each command adds its rows in order, as deciding does.
struct BatchBuilder {
  std::vector<Pending> batch;
  Decided decided;

  std::size_t add(domain::SingleCommand body, std::vector<domain::RecordedEvent> rows) {
    batch.push_back({domain::Command{domain::CommandBody{std::move(body)}, {}}, {}});
    batch.back().command.context.command_id = "c" + std::to_string(batch.size());
    Slot slot;
    slot.first_event = decided.rows.size();
    for (auto& r : rows) decided.rows.push_back(std::move(r));
    slot.end_event = decided.rows.size();
    decided.slots.push_back(slot);
    return batch.size() - 1;
  }

  std::size_t transfer(const std::string& id, const std::string& from, std::int64_t from_version,
                       const std::string& to, std::int64_t to_version) {
    return add(domain::Transfer{id, from, to, Amount(1), eur, ""},
               {row(domain::transfer_stream(id), 1), row(domain::account_stream(from), from_version),
                row(domain::account_stream(to), to_version)});
  }

  std::size_t deposit(const std::string& id, const std::string& account, std::int64_t version,
                      std::int64_t cash_version) {
    return add(domain::Deposit{account, Amount(1), "", id},
               {row(domain::transfer_stream(id), 1), row(cash, cash_version),
                row(domain::account_stream(account), version)});
  }

  [[nodiscard]] std::vector<std::string> command_ids() const {
    std::vector<std::string> ids;
    for (const auto& pending : batch) ids.push_back(pending.command.context.command_id);
    return ids;
  }
};

// What the store holds before the batch: every stream at the version the batch expects.
StoredVersions as_decided(const Decided& decided) {
  StoredVersions stored;
  for (const auto& r : decided.rows) stored.try_emplace(r.stream_id, r.version.value() - 1);
  return stored;
}

}  // namespace

TEST_CASE("a batch decided on what the store holds loses nothing and keeps its rows") {
  BatchBuilder b;
  b.transfer("t1", "a", 4, "b", 7);
  b.deposit("d1", "c", 2, 10);
  const auto rows_before = b.decided.rows;
  const auto outcome = split_stale(b.batch, b.decided, as_decided(b.decided));
  CHECK(outcome.losers.empty());
  CHECK(outcome.unreliable_streams.empty());
  CHECK(b.command_ids() == std::vector<std::string>{"c1", "c2"});
  REQUIRE(b.decided.rows.size() == rows_before.size());
  for (std::size_t i = 0; i < rows_before.size(); ++i) {
    CHECK(b.decided.rows[i].stream_id == rows_before[i].stream_id);
    CHECK(b.decided.rows[i].version == rows_before[i].version);
  }
}

TEST_CASE("only the commands on a moved stream, and those built on them, are split off") {
  BatchBuilder b;
  b.transfer("t1", "a", 4, "b", 7);  // a moved under us: loses
  b.transfer("t2", "c", 1, "d", 1);  // untouched: stays
  b.transfer("t3", "b", 8, "e", 3);  // built on t1's state of b: loses
  b.transfer("t4", "e", 4, "f", 2);  // built on t3's state of e: loses
  b.transfer("t5", "g", 5, "h", 5);  // stays
  b.decided.expiries = {{"t2", 100, 1}, {"t3", 200, 2}, {"t5", 300, 4}};
  auto stored = as_decided(b.decided);
  stored[domain::account_stream("a")] = 4;  // another writer appended version 4

  const auto outcome = split_stale(b.batch, b.decided, stored);
  REQUIRE(outcome.losers.size() == 3);
  CHECK(outcome.losers[0].command.context.command_id == "c1");
  CHECK(outcome.losers[1].command.context.command_id == "c3");
  CHECK(outcome.losers[2].command.context.command_id == "c4");
  CHECK(b.command_ids() == std::vector<std::string>{"c2", "c5"});
  // The winners' rows, re-indexed, versions untouched.
  REQUIRE(b.decided.rows.size() == 6);
  CHECK(b.decided.slots[0].first_event == 0);
  CHECK(b.decided.slots[0].end_event == 3);
  CHECK(b.decided.slots[1].first_event == 3);
  CHECK(b.decided.slots[1].end_event == 6);
  CHECK(b.decided.rows[4].stream_id == domain::account_stream("g"));
  CHECK(b.decided.rows[4].version.value() == 5);
  // The losers' holds are not appended; the winners' point at their new index.
  REQUIRE(b.decided.expiries.size() == 2);
  CHECK(b.decided.expiries[0].transfer_id == "t2");
  CHECK(b.decided.expiries[0].command == 0);
  CHECK(b.decided.expiries[1].transfer_id == "t5");
  CHECK(b.decided.expiries[1].command == 1);
  // The cache must drop every stream a loser wrote.
  for (const char* account : {"a", "b", "e", "f"}) {
    CHECK(std::count(outcome.unreliable_streams.begin(), outcome.unreliable_streams.end(),
                     domain::account_stream(account)) == 1);
  }
  CHECK(std::count(outcome.unreliable_streams.begin(), outcome.unreliable_streams.end(),
                   domain::account_stream("c")) == 0);
}

TEST_CASE("a command following a loser's idempotency key loses with it; its index follows") {
  BatchBuilder b;
  b.transfer("t0", "x", 1, "y", 1);
  b.transfer("t1", "a", 4, "b", 7);
  const auto follower = b.add(domain::Transfer{"t1", "a", "b", Amount(1), eur, ""}, {});
  b.decided.slots[follower].kind = Slot::Kind::follows;
  b.decided.slots[follower].follows = 1;
  const auto follower_of_winner = b.add(domain::Transfer{"t0", "x", "y", Amount(1), eur, ""}, {});
  b.decided.slots[follower_of_winner].kind = Slot::Kind::follows;
  b.decided.slots[follower_of_winner].follows = 0;
  auto stored = as_decided(b.decided);
  stored[domain::account_stream("b")] = 9;

  const auto outcome = split_stale(b.batch, b.decided, stored);
  REQUIRE(outcome.losers.size() == 2);
  CHECK(outcome.losers[1].command.context.command_id == "c3");
  CHECK(b.command_ids() == std::vector<std::string>{"c1", "c4"});
  CHECK(b.decided.slots[1].kind == Slot::Kind::follows);
  CHECK(b.decided.slots[1].follows == 0);
}

TEST_CASE("a system account's stream takes the next stored versions instead of conflicting") {
  BatchBuilder b;
  b.deposit("d1", "a", 3, 41);
  b.deposit("d2", "b", 6, 42);
  auto stored = as_decided(b.decided);
  stored[cash] = 57;  // another engine deposited 17 times meanwhile

  const auto outcome = split_stale(b.batch, b.decided, stored);
  CHECK(outcome.losers.empty());
  CHECK(b.command_ids() == std::vector<std::string>{"c1", "c2"});
  CHECK(b.decided.rows[1].stream_id == cash);
  CHECK(b.decided.rows[1].version.value() == 58);
  CHECK(b.decided.rows[4].version.value() == 59);
  // The engine's state of the cash account is not the store's any more.
  CHECK(outcome.unreliable_streams == std::vector<std::string>{cash});
  CHECK(is_floating_stream(cash, 2));
  CHECK_FALSE(is_floating_stream(cash, 1));  // opened by this batch: an ordinary stream
  CHECK_FALSE(is_floating_stream(domain::account_stream("a"), 2));
}

TEST_CASE("renumbering leaves no gap where a loser's row on a system account was") {
  BatchBuilder b;
  b.deposit("d1", "a", 3, 41);  // a moved: loses, with its cash row 41
  b.deposit("d2", "b", 6, 42);
  auto stored = as_decided(b.decided);
  stored[domain::account_stream("a")] = 3;
  const auto outcome = split_stale(b.batch, b.decided, stored);
  REQUIRE(outcome.losers.size() == 1);
  REQUIRE(b.decided.rows.size() == 3);
  CHECK(b.decided.rows[1].stream_id == cash);
  CHECK(b.decided.rows[1].version.value() == 41);
}

TEST_CASE("a system account the store does not hold is stale, not renumbered from nothing") {
  BatchBuilder b;
  b.deposit("d1", "a", 3, 41);
  auto stored = as_decided(b.decided);
  stored.erase(cash);
  const auto outcome = split_stale(b.batch, b.decided, stored);
  CHECK(outcome.losers.size() == 1);
  CHECK(b.decided.rows.empty());
}

TEST_CASE("a refusal read on a stream that moved since goes back; its read is checked") {
  BatchBuilder b;
  b.transfer("t1", "a", 4, "b", 7);
  b.add(domain::Withdrawal{"c", Amount(500), "", "w1"}, {});  // refused on c's cached state
  b.decided.unwritten_reads = {{domain::account_stream("c"), 12}};
  auto stored = as_decided(b.decided);

  SUBCASE("c unchanged: nothing lost") {
    stored[domain::account_stream("c")] = 12;
    CHECK(split_stale(b.batch, b.decided, stored).losers.empty());
    CHECK(b.batch.size() == 2);
  }
  SUBCASE("c moved: the refusal is decided again") {
    stored[domain::account_stream("c")] = 13;
    const auto outcome = split_stale(b.batch, b.decided, stored);
    REQUIRE(outcome.losers.size() == 1);
    CHECK(outcome.losers[0].command.context.command_id == "c2");
    CHECK(b.command_ids() == std::vector<std::string>{"c1"});
  }
  CHECK(b.decided.unwritten_reads.empty());
  CHECK(streams_to_check(b.decided).size() == 3);
}

TEST_CASE("a command that wrote nothing goes back when anything before it was stale") {
  // A refused post of a hold names only the transfer's stream; the rules loaded its accounts
  // on demand, and one of them may be the stale one.
  BatchBuilder b;
  b.transfer("t1", "a", 4, "b", 7);
  b.add(domain::PostHold{"h1", Amount(5)}, {});
  b.transfer("t2", "c", 1, "d", 1);
  auto stored = as_decided(b.decided);
  stored[domain::account_stream("a")] = 4;
  const auto outcome = split_stale(b.batch, b.decided, stored);
  REQUIRE(outcome.losers.size() == 2);
  CHECK(outcome.losers[1].command.context.command_id == "c2");
  CHECK(b.command_ids() == std::vector<std::string>{"c3"});

  BatchBuilder alone;
  alone.add(domain::PostHold{"h1", Amount(5)}, {});
  CHECK(split_stale(alone.batch, alone.decided, {}).losers.empty());
}

TEST_CASE("a read of a stream the batch writes, merged from a later decision, is not stale") {
  BatchBuilder b;
  b.transfer("t1", "a", 4, "b", 7);  // a: stored 3, written 4
  b.add(domain::Withdrawal{"a", Amount(500), "", "w1"}, {});  // refused on a at 4
  b.decided.unwritten_reads = {{domain::account_stream("a"), 4}};
  const auto outcome = split_stale(b.batch, b.decided, as_decided(b.decided));
  CHECK(outcome.losers.empty());
  CHECK(b.batch.size() == 2);
}

TEST_CASE("a system account read by a refusal never makes it stale; an earlier loser's only drops its state") {
  BatchBuilder b;
  b.deposit("d1", "a", 3, 41);
  b.add(domain::Withdrawal{"a", Amount(500), "", "w1"}, {});
  b.decided.unwritten_reads = {{cash, 40}};
  auto stored = as_decided(b.decided);
  stored[cash] = 52;  // moved by another engine: renumbered, not stale
  const auto outcome = split_stale(b.batch, b.decided, stored, {cash});
  CHECK(outcome.losers.empty());
  CHECK(b.decided.rows[1].version.value() == 53);
  CHECK(std::count(outcome.unreliable_streams.begin(), outcome.unreliable_streams.end(), cash) == 1);

  // Renumbered to the very version it was decided at, its state still holds the loser's effect.
  BatchBuilder same;
  same.deposit("d2", "b", 6, 42);
  const auto unchanged = split_stale(same.batch, same.decided, as_decided(same.decided), {cash});
  CHECK(unchanged.losers.empty());
  CHECK(unchanged.unreliable_streams == std::vector<std::string>{cash});
}
