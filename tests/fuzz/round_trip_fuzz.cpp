// Round trip: any command the parser accepts, decided against a generated state, yields events
// that encode, decode and re-encode byte for byte. Input layout (round_trip_input.hpp):
//   byte 0 the route, byte 1 the path id (as command_parser_fuzz), bytes 2-3 the body's length
//   (little endian), the body, then the state bytes: a FuzzedDataProvider that makes up every
//   stream the decision loads (accounts: existence, currency, kind, flags, status, totals,
//   overdraft, version; transfers: existence, accounts, amount, status, expiry; system accounts
//   may be missing and are then opened by the rules), an optional loan prelude (originate,
//   disburse, close of business through a date) and optional engine-only commands after the
//   client's (a hold's expiry, a loan's close of business). Exhausted state bytes read as 0:
//   accounts that exist, open, in EUR, empty; no transfer, no loan.
// Properties, besides no crash and no sanitizer report: a refused command adds no event; each
// event decided encodes to bytes that decode to an event of its type that re-encodes byte for
// byte; its export line (event_to_json) reads back (event_from_json) to the same bytes; an
// event's version is its stream's previous version + 1.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <variant>

#include "command_parser.hpp"
#include "fuzz_support.hpp"
#include "ledger/domain/decide.hpp"
#include "ledger/domain/events.hpp"
#include "round_trip_input.hpp"

namespace {

namespace domain = ledger::domain;
namespace input = ledger::fuzz::round_trip;
using ledger::Amount;
using ledger::Currency;
using ledger::StreamVersion;
using ledger::fuzz::require;

constexpr std::string_view currencies[] = {"EUR", "USD", "JPY", "BHD"};
constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();
// 2026-11-30T00:00:00Z, the day the parser is told it is (dates of loans are near it).
constexpr std::int64_t today_us = 1'796'083'200'000'000;
constexpr std::int64_t day_us = 86'400'000'000;

Amount amount_from(FuzzedDataProvider& state) {
  switch (state.ConsumeIntegralInRange<int>(0, 5)) {
    case 0: return Amount(0);
    case 1: return Amount(state.ConsumeIntegralInRange<std::int64_t>(1, 100'000));
    case 2: return Amount(state.ConsumeIntegralInRange<std::int64_t>(1, 1'000'000'000'000));
    case 3: return Amount(int64_max - state.ConsumeIntegralInRange<std::int64_t>(0, 1'000));
    case 4: return Amount(state.ConsumeIntegralInRange<std::int64_t>(0, int64_max));
    default: return Amount(1);
  }
}

Currency currency_from(FuzzedDataProvider& state) {
  return *Currency::parse(currencies[state.ConsumeIntegralInRange<std::size_t>(0, std::size(currencies) - 1)]);
}

domain::StreamState account_from(FuzzedDataProvider& state, std::string_view id) {
  domain::StreamState stream;
  const bool system = id.starts_with("system.");
  // System accounts may be missing (the rules open them); a client's exists unless told.
  const int existence = state.ConsumeIntegralInRange<int>(0, 7);
  if (system ? existence == 1 : existence == 7) return stream;
  domain::AccountState a;
  a.exists = true;
  a.id = std::string(id);
  a.currency = currency_from(state);
  if (system && id.size() >= 3) {
    if (const auto code = Currency::parse(id.substr(id.size() - 3))) a.currency = *code;
  }
  a.owner = system ? "" : "owner";
  a.kind = system || state.ConsumeIntegralInRange<int>(0, 15) == 15 ? domain::AccountKind::system
                                                                    : domain::AccountKind::customer;
  a.flags = state.ConsumeIntegralInRange<std::uint32_t>(0, 3);
  if (a.kind == domain::AccountKind::customer && state.ConsumeIntegralInRange<int>(0, 3) != 3) {
    a.flags = domain::AccountFlags::debits_must_not_exceed_credits;
  }
  const int status = state.ConsumeIntegralInRange<int>(0, 5);
  a.status = status == 4 ? domain::AccountStatus::frozen : status == 5 ? domain::AccountStatus::closed
                                                                        : domain::AccountStatus::open;
  a.overdraft_limit = state.ConsumeBool() ? amount_from(state) : Amount(0);
  a.credits_posted = amount_from(state);
  a.debits_posted = amount_from(state);
  a.credits_pending = state.ConsumeBool() ? amount_from(state) : Amount(0);
  a.debits_pending = state.ConsumeBool() ? amount_from(state) : Amount(0);
  a.pending_count = state.ConsumeIntegralInRange<std::int64_t>(0, 3);
  a.version = StreamVersion(1 + state.ConsumeIntegralInRange<std::int64_t>(0, 1'000'000));
  stream.version = a.version;
  stream.aggregate = a;
  return stream;
}

domain::StreamState transfer_from(FuzzedDataProvider& state, std::string_view id) {
  domain::StreamState stream;
  if (!state.ConsumeBool()) return stream;  // no such transfer
  domain::TransferState t;
  t.exists = true;
  t.id = std::string(id);
  constexpr std::string_view accounts[] = {"alice", "bob", "shop", "system.cash.EUR"};
  t.debit_account = accounts[state.ConsumeIntegralInRange<std::size_t>(0, 3)];
  t.credit_account = accounts[state.ConsumeIntegralInRange<std::size_t>(0, 3)];
  t.amount = amount_from(state);
  t.currency = currency_from(state);
  t.reference = state.ConsumeBool() ? "ref" : "";
  t.status = static_cast<domain::TransferStatus>(state.ConsumeIntegralInRange<int>(0, 4));
  switch (state.ConsumeIntegralInRange<int>(0, 2)) {
    case 0: t.expires_at_us = 0; break;
    case 1: t.expires_at_us = today_us - day_us; break;
    default: t.expires_at_us = today_us + day_us; break;
  }
  if (t.status == domain::TransferStatus::pending_posted) {
    t.posted_amount = Amount(state.ConsumeIntegralInRange<std::int64_t>(0, t.amount.minor_units()));
  }
  t.version = StreamVersion(1 + state.ConsumeIntegralInRange<std::int64_t>(0, 3));
  stream.version = t.version;
  stream.aggregate = t;
  return stream;
}

std::string business_date(std::int64_t days_after_2026_01_01) {
  const auto day = std::chrono::sys_days(std::chrono::year(2026) / 1 / 1) + std::chrono::days(days_after_2026_01_01);
  return domain::to_string(domain::Date{day});
}

void check_events(const domain::WorkingSet& set, std::size_t from, std::map<std::string, std::int64_t>& versions) {
  const auto& events = set.new_events();
  for (std::size_t i = from; i < events.size(); ++i) {
    const auto& [stream_id, version, event] = events[i];
    const std::string_view type = domain::event_type(event);
    auto [previous, fresh] = versions.try_emplace(stream_id, version.value() - 1);
    require(version.value() == previous->second + 1, "an event's version is not its stream's previous + 1",
            stream_id);
    previous->second = version.value();
    (void)fresh;

    const std::string bytes = domain::encode_event(event);
    const auto decoded = domain::decode_event(type, bytes);
    require(decoded.has_value(), "a decided event encodes to bytes that do not decode", type);
    require(domain::event_type(*decoded) == type, "a decided event decodes to another type", type);
    require(domain::encode_event(*decoded) == bytes, "a decided event does not re-encode byte for byte", type);
    const std::string line = domain::event_to_json(event);
    require(domain::event_to_json(*decoded) == line, "the decoded event has another export line", line);
    const auto reread = domain::event_from_json(type, line);
    require(reread.has_value(), "a decided event's export line does not read back", line);
    require(domain::encode_event(*reread) == bytes, "a decided event's export line reads back to other bytes", line);
  }
}

// Decides one command; a refusal must leave no event behind.
domain::Decision decide(const domain::CommandBody& command, domain::WorkingSet& set, std::int64_t now_us,
                        std::map<std::string, std::int64_t>& versions) {
  const std::size_t before = set.new_events().size();
  const domain::Decision decision = domain::decide(command, set, domain::DecisionContext{now_us});
  if (!decision.accepted()) {
    require(set.new_events().size() == before, "a refused command left events behind",
            domain::to_string(decision.code));
  }
  check_events(set, before, versions);
  return decision;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < input::header_bytes) return 0;
  const auto route = static_cast<ledger::api::CommandRoute>(data[0] % input::route_count);
  const std::string_view path_id = input::path_ids[data[1] % std::size(input::path_ids)];
  const std::size_t body_length = std::min<std::size_t>(data[2] | (std::size_t{data[3]} << 8), size - input::header_bytes);
  const std::string_view body(reinterpret_cast<const char*>(data + input::header_bytes), body_length);
  FuzzedDataProvider state(data + input::header_bytes + body_length, size - input::header_bytes - body_length);

  auto parsed = ledger::api::parse_command(route, path_id, body, "2026-11-30");
  if (std::holds_alternative<ledger::api::Problem>(parsed)) return 0;
  domain::CommandBody command = std::move(std::get<domain::CommandBody>(parsed));
  int generated = 0;
  domain::assign_ids(command, [&] { return "gen-" + std::to_string(++generated); });

  domain::WorkingSet set([&](const std::string& stream_id) {
    if (stream_id.starts_with("account-")) return account_from(state, std::string_view(stream_id).substr(8));
    if (stream_id.starts_with("transfer-")) return transfer_from(state, std::string_view(stream_id).substr(9));
    return domain::StreamState{};  // loans exist only through the prelude
  });
  std::map<std::string, std::int64_t> versions;
  const std::int64_t now_us = today_us + state.ConsumeIntegralInRange<std::int64_t>(-2 * day_us, 2 * day_us);

  // A loan made by the rules themselves, so its book is one the engine could hold.
  const std::string loan_id = input::is_loan_route(route) ? std::string(path_id) : "L1";
  if (state.ConsumeBool()) {
    domain::OriginateLoan loan;
    loan.id = loan_id;
    loan.borrower = "alice";
    loan.currency = *Currency::parse("EUR");
    loan.principal = Amount(state.ConsumeIntegralInRange<std::int64_t>(1, 10'000'000'000));
    loan.rate_bps = state.ConsumeIntegralInRange<std::int32_t>(0, 5'000);
    loan.installments = state.ConsumeIntegralInRange<std::int32_t>(1, 36);
    loan.schedule = state.ConsumeBool() ? domain::ScheduleType::annuity : domain::ScheduleType::equal_principal;
    loan.origination_date = business_date(state.ConsumeIntegralInRange<int>(0, 330));
    loan.first_due_date = business_date(state.ConsumeIntegralInRange<int>(331, 400));
    loan.origination_fee = Amount(state.ConsumeIntegralInRange<std::int64_t>(0, 10'000));
    loan.late_fee = Amount(state.ConsumeIntegralInRange<std::int64_t>(0, 10'000));
    loan.grace_days = state.ConsumeIntegralInRange<std::int32_t>(0, 30);
    (void)decide(domain::SingleCommand{loan}, set, now_us, versions);
    if (state.ConsumeBool()) (void)decide(domain::SingleCommand{domain::DisburseLoan{loan_id}}, set, now_us, versions);
    if (state.ConsumeBool()) {
      const domain::CloseLoanBusinessDay close{loan_id, business_date(state.ConsumeIntegralInRange<int>(0, 800))};
      (void)decide(domain::SingleCommand{close}, set, now_us, versions);
    }
  }

  (void)decide(command, set, now_us, versions);

  // What the engine itself issues afterwards: a hold's expiry, a loan's close of business.
  if (state.ConsumeBool()) {
    (void)decide(domain::SingleCommand{domain::ExpireHold{std::string(path_id)}}, set,
                 now_us + state.ConsumeIntegralInRange<std::int64_t>(0, 30 * day_us), versions);
  }
  if (state.ConsumeBool()) {
    const domain::CloseLoanBusinessDay close{loan_id, business_date(state.ConsumeIntegralInRange<int>(0, 1'500))};
    (void)decide(domain::SingleCommand{close}, set, now_us, versions);
  }
  return 0;
}
