// Domain rules as pure unit tests: no database, a WorkingSet over empty streams.
#include <doctest/doctest.h>

#include <limits>
#include <map>

#include "ledger/engine/domain.hpp"

using namespace ledger;
using namespace ledger::engine;

namespace {

constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();
const Currency eur = *Currency::parse("EUR");
const Currency usd = *Currency::parse("USD");

struct Ledger {
  WorkingSet set{[](const std::string&) { return StreamState{}; }};
  DecisionContext context{1'000'000'000'000'000};
  int next_id = 0;

  Decision run(SingleCommand command) {
    CommandBody body{std::move(command)};
    assign_ids(body, [this] { return "gen-" + std::to_string(next_id++); });
    return decide(body, set, context);
  }
  Decision run_linked(std::vector<SingleCommand> commands) {
    CommandBody body{LinkedCommands{std::move(commands)}};
    assign_ids(body, [this] { return "gen-" + std::to_string(next_id++); });
    return decide(body, set, context);
  }
  void open(const std::string& id, Currency currency = eur, std::int64_t overdraft = 0,
            std::optional<std::uint32_t> flags = std::nullopt) {
    OpenAccount open{id, currency};
    open.overdraft_limit = Amount(overdraft);
    open.flags = flags;
    REQUIRE(run(open).accepted());
  }
  void fund(const std::string& id, std::int64_t amount) {
    REQUIRE(run(Deposit{id, Amount(amount)}).accepted());
  }
  const AccountState& account(const std::string& id) { return set.account(id); }
  // Sum over every account of credits_posted - debits_posted, per currency.
  std::map<std::string, std::int64_t> sums() {
    std::map<std::string, std::int64_t> result;
    for (auto& [stream, state] : set.streams()) {
      if (const auto* a = std::get_if<AccountState>(&state.aggregate); a && a->exists) {
        result[a->currency.str()] += a->credits_posted.minor_units() - a->debits_posted.minor_units();
      }
    }
    return result;
  }
};

// Runs `command`, expects `code`, and checks nothing changed.
void expect_rejected(Ledger& ledger, SingleCommand command, RejectionCode code) {
  const std::size_t events_before = ledger.set.new_events().size();
  std::map<std::string, StreamState> before;
  for (const auto& [id, state] : ledger.set.streams()) before[id] = state;
  const Decision decision = ledger.run(std::move(command));
  CHECK_MESSAGE(decision.code == code, "got " << to_string(decision.code) << ": " << decision.detail);
  CHECK(!decision.detail.empty());
  CHECK(ledger.set.new_events().size() == events_before);
  for (const auto& [id, state] : before) {
    const auto& now = ledger.set.stream(id);
    CHECK(now.version == state.version);
    if (const auto* a = std::get_if<AccountState>(&state.aggregate)) {
      CHECK(std::get<AccountState>(now.aggregate) == *a);
    }
  }
}

}  // namespace

TEST_CASE("opening accounts: ids, reserved prefix, flags, duplicates") {
  Ledger l;
  l.open("alice");
  CHECK(l.account("alice").exists);
  CHECK(l.account("alice").flags == AccountFlags::debits_must_not_exceed_credits);
  CHECK(l.account("alice").version == StreamVersion(1));
  expect_rejected(l, OpenAccount{"alice", eur}, RejectionCode::duplicate_id);
  expect_rejected(l, OpenAccount{std::string(65, 'a'), eur}, RejectionCode::invalid_id);
  expect_rejected(l, OpenAccount{"bad id", eur}, RejectionCode::invalid_id);
  expect_rejected(l, OpenAccount{"ctl\x01", eur}, RejectionCode::invalid_id);
  expect_rejected(l, OpenAccount{"system.cash.EUR", eur}, RejectionCode::reserved_id);
  OpenAccount negative{"neg", eur};
  negative.overdraft_limit = Amount(-1);
  expect_rejected(l, negative, RejectionCode::invalid_amount);
  OpenAccount both{"both", eur};
  both.flags = AccountFlags::debits_must_not_exceed_credits | AccountFlags::credits_must_not_exceed_debits;
  expect_rejected(l, both, RejectionCode::invalid_command);
  CHECK(is_valid_id(std::string(64, 'a')));
  CHECK(l.run(OpenAccount{"", eur}).accepted());  // generated id
}

TEST_CASE("deposits and withdrawals move money against the currency's cash account") {
  Ledger l;
  l.open("alice");
  l.open("bob", usd);
  l.fund("alice", 1'000);
  const std::string cash = system_account_id(SystemAccount::cash, "EUR");
  CHECK(l.account(cash).exists);
  CHECK(l.account(cash).kind == AccountKind::system);
  CHECK(l.account(cash).balance() == Amount(-1'000));
  CHECK(l.account("alice").balance() == Amount(1'000));
  CHECK(l.run(Withdrawal{"alice", Amount(400)}).accepted());
  CHECK(l.account("alice").balance() == Amount(600));
  l.fund("bob", 5);
  CHECK(l.account(system_account_id(SystemAccount::cash, "USD")).exists);
  for (const auto& [currency, sum] : l.sums()) {
    INFO(currency);
    CHECK(sum == 0);
  }
  expect_rejected(l, Withdrawal{"alice", Amount(601)}, RejectionCode::insufficient_funds);
  expect_rejected(l, Deposit{"nobody", Amount(1)}, RejectionCode::unknown_account);
  expect_rejected(l, Deposit{"alice", Amount(0)}, RejectionCode::invalid_amount);
  expect_rejected(l, Deposit{"alice", Amount(-5)}, RejectionCode::invalid_amount);
  expect_rejected(l, Deposit{cash, Amount(5)}, RejectionCode::reserved_id);
}

TEST_CASE("transfers: every rejection, and a transfer is three events") {
  Ledger l;
  l.open("alice");
  l.open("bob");
  l.open("dollars", usd);
  l.fund("alice", 1'000);
  const auto events_before = l.set.new_events().size();
  const auto alice_version = l.account("alice").version;
  REQUIRE(l.run(Transfer{"t1", "alice", "bob", Amount(250), eur}).accepted());
  CHECK(l.set.new_events().size() == events_before + 3);
  CHECK(l.account("alice").version.value() == alice_version.value() + 1);
  CHECK(l.set.transfer("t1").exists);
  CHECK(l.account("bob").balance() == Amount(250));

  expect_rejected(l, Transfer{"t1", "alice", "bob", Amount(1), eur}, RejectionCode::duplicate_id);
  expect_rejected(l, Transfer{"t2", "alice", "alice", Amount(1), eur}, RejectionCode::same_account);
  expect_rejected(l, Transfer{"t2", "alice", "ghost", Amount(1), eur}, RejectionCode::unknown_account);
  expect_rejected(l, Transfer{"t2", "alice", "dollars", Amount(1), eur}, RejectionCode::currency_mismatch);
  expect_rejected(l, Transfer{"t2", "alice", "bob", Amount(1), usd}, RejectionCode::currency_mismatch);
  expect_rejected(l, Transfer{"t2", "alice", "bob", Amount(0), eur}, RejectionCode::invalid_amount);
  expect_rejected(l, Transfer{"t2", "alice", "bob", Amount(751), eur}, RejectionCode::insufficient_funds);
  expect_rejected(l, Transfer{"bad id", "alice", "bob", Amount(1), eur}, RejectionCode::invalid_id);
  CHECK(l.run(Transfer{"t3", "alice", "bob", Amount(750), eur}).accepted());
  CHECK(l.account("alice").balance() == Amount(0));
}

TEST_CASE("overdraft limits allow a negative balance down to the limit exactly") {
  Ledger l;
  l.open("alice", eur, 500);
  l.open("bob");
  CHECK(l.account("alice").available() == Amount(500));
  expect_rejected(l, Transfer{"t1", "alice", "bob", Amount(501), eur}, RejectionCode::insufficient_funds);
  CHECK(l.run(Transfer{"t2", "alice", "bob", Amount(500), eur}).accepted());
  CHECK(l.account("alice").balance() == Amount(-500));
  expect_rejected(l, Transfer{"t3", "alice", "bob", Amount(1), eur}, RejectionCode::insufficient_funds);
}

TEST_CASE("credits must not exceed debits") {
  Ledger l;
  l.open("limited", eur, 0, AccountFlags::credits_must_not_exceed_debits);
  l.open("alice");
  l.fund("alice", 100);
  expect_rejected(l, Transfer{"t1", "alice", "limited", Amount(1), eur}, RejectionCode::credits_exceed_debits);
}

TEST_CASE("checked arithmetic at the int64 limits") {
  Ledger l;
  l.open("rich");
  l.open("other");
  l.fund("rich", int64_max);
  CHECK(l.account("rich").balance() == Amount(int64_max));
  // The cash account's debits would pass int64: refused, nothing changes.
  expect_rejected(l, Deposit{"rich", Amount(1)}, RejectionCode::amount_overflow);
  expect_rejected(l, Deposit{"other", Amount(1)}, RejectionCode::amount_overflow);
  CHECK(l.run(Transfer{"t1", "rich", "other", Amount(int64_max), eur}).accepted());
  CHECK(l.account("other").balance() == Amount(int64_max));
  // `other` holds int64 max: one more unit would overflow its credits, whatever rich holds.
  expect_rejected(l, Transfer{"t2", "rich", "other", Amount(1), eur}, RejectionCode::amount_overflow);
  // rich's cumulative credits are at int64 max too: nothing more may be credited to it.
  expect_rejected(l, Transfer{"t3", "other", "rich", Amount(1), eur}, RejectionCode::amount_overflow);
  CHECK(l.account("rich").balance() == Amount(0));
}

TEST_CASE("freeze, unfreeze and close") {
  Ledger l;
  l.open("alice");
  l.open("bob");
  l.fund("alice", 100);
  CHECK(l.run(FreezeAccount{"alice"}).accepted());
  CHECK(l.account("alice").status == AccountStatus::frozen);
  expect_rejected(l, FreezeAccount{"alice"}, RejectionCode::account_frozen);
  expect_rejected(l, Transfer{"t1", "alice", "bob", Amount(1), eur}, RejectionCode::account_frozen);
  expect_rejected(l, Transfer{"t1", "bob", "alice", Amount(1), eur}, RejectionCode::account_frozen);
  expect_rejected(l, Deposit{"alice", Amount(1)}, RejectionCode::account_frozen);
  CHECK(l.run(UnfreezeAccount{"alice"}).accepted());
  expect_rejected(l, UnfreezeAccount{"alice"}, RejectionCode::account_not_frozen);
  expect_rejected(l, CloseAccount{"alice"}, RejectionCode::account_not_empty);
  CHECK(l.run(Withdrawal{"alice", Amount(100)}).accepted());
  CHECK(l.run(CloseAccount{"alice"}).accepted());
  CHECK(l.account("alice").status == AccountStatus::closed);
  expect_rejected(l, CloseAccount{"alice"}, RejectionCode::account_closed);
  expect_rejected(l, FreezeAccount{"alice"}, RejectionCode::account_closed);
  expect_rejected(l, UnfreezeAccount{"alice"}, RejectionCode::account_closed);
  expect_rejected(l, Deposit{"alice", Amount(1)}, RejectionCode::account_closed);
  expect_rejected(l, FreezeAccount{"ghost"}, RejectionCode::unknown_account);
  const std::string cash = system_account_id(SystemAccount::cash, "EUR");
  expect_rejected(l, FreezeAccount{cash}, RejectionCode::reserved_id);
  expect_rejected(l, CloseAccount{cash}, RejectionCode::reserved_id);
}

TEST_CASE("holds: place, post in full or in part, void, and they count against available") {
  Ledger l;
  l.open("alice");
  l.open("shop");
  l.fund("alice", 1'000);
  REQUIRE(l.run(PlaceHold{"h1", "alice", "shop", Amount(600), eur}).accepted());
  CHECK(l.account("alice").balance() == Amount(1'000));
  CHECK(l.account("alice").available() == Amount(400));
  CHECK(l.account("shop").credits_pending == Amount(600));
  expect_rejected(l, PlaceHold{"h2", "alice", "shop", Amount(401), eur}, RejectionCode::insufficient_funds);
  expect_rejected(l, Transfer{"t1", "alice", "shop", Amount(401), eur}, RejectionCode::insufficient_funds);
  expect_rejected(l, CloseAccount{"shop"}, RejectionCode::account_not_empty);

  // Post less than held: the rest is released.
  expect_rejected(l, PostHold{"h1", Amount(601)}, RejectionCode::amount_exceeds_pending);
  expect_rejected(l, PostHold{"h1", Amount(0)}, RejectionCode::invalid_amount);
  REQUIRE(l.run(PostHold{"h1", Amount(450)}).accepted());
  CHECK(l.account("alice").balance() == Amount(550));
  CHECK(l.account("alice").debits_pending == Amount(0));
  CHECK(l.account("alice").available() == Amount(550));
  CHECK(l.account("shop").balance() == Amount(450));
  CHECK(l.account("shop").credits_pending == Amount(0));
  CHECK(l.set.transfer("h1").status == TransferStatus::pending_posted);
  expect_rejected(l, PostHold{"h1", std::nullopt}, RejectionCode::transfer_not_pending);
  expect_rejected(l, VoidHold{"h1"}, RejectionCode::transfer_not_pending);

  // Post in full, and void.
  REQUIRE(l.run(PlaceHold{"h3", "alice", "shop", Amount(50), eur}).accepted());
  REQUIRE(l.run(PostHold{"h3", std::nullopt}).accepted());
  CHECK(l.account("alice").balance() == Amount(500));
  REQUIRE(l.run(PlaceHold{"h4", "alice", "shop", Amount(500), eur}).accepted());
  CHECK(l.account("alice").available() == Amount(0));
  REQUIRE(l.run(VoidHold{"h4"}).accepted());
  CHECK(l.set.transfer("h4").status == TransferStatus::voided);
  CHECK(l.account("alice").available() == Amount(500));
  CHECK(l.account("alice").pending_count == 0);
  expect_rejected(l, PostHold{"ghost", std::nullopt}, RejectionCode::unknown_transfer);
  expect_rejected(l, VoidHold{"ghost"}, RejectionCode::unknown_transfer);
  for (const auto& [currency, sum] : l.sums()) CHECK(sum == 0);
}

TEST_CASE("hold expiry follows the injected clock") {
  Ledger l;
  l.open("alice");
  l.open("shop");
  l.fund("alice", 100);
  PlaceHold hold{"h1", "alice", "shop", Amount(70), eur};
  hold.timeout_seconds = 30;
  REQUIRE(l.run(hold).accepted());
  CHECK(l.set.transfer("h1").expires_at_us == l.context.now_us + 30'000'000);
  expect_rejected(l, ExpireHold{"h1"}, RejectionCode::invalid_command);  // not yet
  PlaceHold no_timeout{"h2", "alice", "shop", Amount(10), eur};
  REQUIRE(l.run(no_timeout).accepted());
  l.context.now_us += 30'000'000;
  expect_rejected(l, PostHold{"h1", std::nullopt}, RejectionCode::pending_transfer_expired);
  expect_rejected(l, ExpireHold{"h2"}, RejectionCode::invalid_command);  // never expires
  REQUIRE(l.run(ExpireHold{"h1"}).accepted());
  CHECK(l.set.transfer("h1").status == TransferStatus::expired);
  CHECK(l.account("alice").debits_pending == Amount(10));
  expect_rejected(l, ExpireHold{"h1"}, RejectionCode::transfer_not_pending);
  PlaceHold zero{"h3", "alice", "shop", Amount(1), eur};
  zero.timeout_seconds = 0;
  expect_rejected(l, zero, RejectionCode::invalid_command);
}

TEST_CASE("linked commands apply all or nothing and name the failing member") {
  Ledger l;
  l.open("alice");
  l.open("bob");
  l.fund("alice", 100);
  const auto all = l.run_linked({OpenAccount{"carol", eur}, Transfer{"t1", "alice", "carol", Amount(60), eur},
                                 Transfer{"t2", "carol", "bob", Amount(10), eur}});
  REQUIRE(all.accepted());
  CHECK(all.resource_ids == std::vector<std::string>{"carol", "t1", "t2"});
  CHECK(l.account("bob").balance() == Amount(10));

  const auto events_before = l.set.new_events().size();
  const AccountState alice_before = l.account("alice");
  const auto failed = l.run_linked({OpenAccount{"dave", eur}, Transfer{"t3", "alice", "dave", Amount(30), eur},
                                    Transfer{"t4", "dave", "bob", Amount(31), eur}});
  CHECK(failed.code == RejectionCode::insufficient_funds);
  REQUIRE(failed.failed_member.has_value());
  CHECK(*failed.failed_member == 2);
  CHECK(failed.detail.find("command 2") != std::string::npos);
  CHECK(l.set.new_events().size() == events_before);
  CHECK_FALSE(l.account("dave").exists);
  CHECK_FALSE(l.set.transfer("t3").exists);
  CHECK(l.account("alice") == alice_before);
  CHECK(l.run_linked({}).code == RejectionCode::invalid_command);
}

TEST_CASE("assign_ids fills only empty ids; collect_streams names what a command reads") {
  CommandBody body{SingleCommand{Transfer{"", "a", "b", Amount(1), eur}}};
  assign_ids(body, [] { return std::string("generated"); });
  CHECK(std::get<Transfer>(std::get<SingleCommand>(body)).id == "generated");
  CommandBody given{SingleCommand{Transfer{"mine", "a", "b", Amount(1), eur}}};
  assign_ids(given, [] { return std::string("generated"); });
  CHECK(std::get<Transfer>(std::get<SingleCommand>(given)).id == "mine");
  std::vector<std::string> streams;
  collect_streams(given, streams);
  CHECK(streams == std::vector<std::string>{"transfer-mine", "account-a", "account-b"});
}
