// Event payloads round-trip through FlatBuffers, and every released event version still
// decodes: the committed fixtures under event_fixtures/ are the bytes v1 wrote. Regenerate a
// missing fixture only for a new event type: LEDGER_WRITE_FIXTURES=1 domain_event_codec_test.
#include <doctest/doctest.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "ledger/domain/events.hpp"

namespace domain = ledger::domain;
using namespace ledger::domain;

namespace {

events::LoanOriginated loan_originated_example() {
  LoanTerms terms{120'000, 1'200, 3, ScheduleType::equal_principal,
                  Date{std::chrono::year(2026), std::chrono::month(1), std::chrono::day(31)},
                  Date{std::chrono::year(2026), std::chrono::month(2), std::chrono::day(28)}, 1'000, 500, 5};
  return {"loan-1", "alice", "EUR", terms,
          compute_schedule({terms.principal, terms.rate_bps, terms.installments, terms.type, terms.first_due})};
}

// One example of every event type, with every field set.
std::vector<domain::DomainEvent> examples() {
  return {
      events::AccountOpened{"alice", "EUR", 42, "Alice Example", AccountKind::customer,
                            AccountFlags::debits_must_not_exceed_credits, 5'000},
      events::AccountFrozen{},
      events::AccountUnfrozen{},
      events::AccountClosed{},
      events::AccountEntry{"t-1", events::Direction::credit, events::Phase::pending_posted, 1'250,
                           1'500, "bob"},
      events::TransferPosted{"t-2", "alice", "bob", 9'223'372'036'854'775'807, "EUR", "invoice 7"},
      events::TransferPending{"h-1", "alice", "shop", 300, "EUR", "card", 1'800'000'000'000'000},
      events::PendingTransferPosted{200, 300},
      events::PendingTransferEnded{300, events::PendingEnd::expired},
      loan_originated_example(),
      events::LoanDisbursed{"loan-1.d", "loan-1.f", {119'000, 1'000}},
      events::LoanRepaid{"r-1", {500, 1'200, 7'000, 33, {{1, 500, 1'200, 6'000, false}, {12, 0, 0, 1'000, true}}}},
      events::LoanDayClosed{{Date{std::chrono::year(2026), std::chrono::month(3), std::chrono::day(22)}, 417, {1, 2},
                             {{1, 500}, {2, 500}}, 35}},
      events::LoanWrittenOff{"loan-1.w", {90'000, 2'400, 1'000}},
  };
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace

TEST_CASE("event type names are the stable snake_case strings") {
  const std::vector<std::string> expected = {
      "account_opened", "account_frozen",   "account_unfrozen",        "account_closed",
      "account_entry",  "transfer_posted",  "transfer_pending",        "pending_transfer_posted",
      "pending_transfer_ended", "loan_originated", "loan_disbursed", "loan_repaid", "loan_day_closed",
      "loan_written_off"};
  const auto all = examples();
  REQUIRE(all.size() == std::variant_size_v<domain::DomainEvent>);
  for (std::size_t i = 0; i < all.size(); ++i) CHECK(domain::event_type(all[i]) == expected[i]);
}

TEST_CASE("every event type round-trips through FlatBuffers and renders as JSON") {
  for (const auto& event : examples()) {
    INFO(domain::event_type(event));
    const std::string bytes = domain::encode_event(event);
    const auto decoded = domain::decode_event(domain::event_type(event), bytes);
    REQUIRE(decoded.has_value());
    CHECK(decoded->index() == event.index());
    CHECK(domain::event_to_json(*decoded) == domain::event_to_json(event));
    rapidjson::Document json;
    json.Parse(domain::event_to_json(event).c_str());
    CHECK_FALSE(json.HasParseError());
    CHECK(json.IsObject());
  }
}

TEST_CASE("decoding refuses a wrong type name and bytes that are not an event") {
  const std::string bytes = domain::encode_event(events::AccountFrozen{});
  CHECK_FALSE(domain::decode_event("account_closed", bytes).has_value());
  CHECK_FALSE(domain::decode_event("account_frozen", "garbage bytes").has_value());
  CHECK_FALSE(domain::decode_event("account_frozen", "").has_value());
  std::string truncated = domain::encode_event(events::TransferPosted{"t", "a", "b", 1, "EUR", "r"});
  truncated.resize(truncated.size() / 2);
  CHECK_FALSE(domain::decode_event("transfer_posted", truncated).has_value());
}

TEST_CASE("the bytes of every released event version still decode to the same event") {
  const std::filesystem::path directory = LEDGER_EVENT_FIXTURES_DIR;
  const bool write_missing = std::getenv("LEDGER_WRITE_FIXTURES") != nullptr;
  for (const auto& event : examples()) {
    const auto path = directory / (std::string(domain::event_type(event)) + ".v1.bin");
    INFO(path.string());
    if (!std::filesystem::exists(path) && write_missing) {
      std::ofstream(path, std::ios::binary) << domain::encode_event(event);
    }
    REQUIRE_MESSAGE(std::filesystem::exists(path), "missing fixture (see the comment at the top)");
    const auto decoded = domain::decode_event(domain::event_type(event), read_file(path));
    REQUIRE(decoded.has_value());
    CHECK(domain::event_to_json(*decoded) == domain::event_to_json(event));
  }
}

TEST_CASE("every event type reads back from its JSON and re-encodes to the same bytes") {
  for (const auto& event : examples()) {
    INFO(domain::event_type(event));
    const auto parsed = domain::event_from_json(domain::event_type(event), domain::event_to_json(event));
    REQUIRE(parsed.has_value());
    CHECK(parsed->index() == event.index());
    CHECK(domain::encode_event(*parsed) == domain::encode_event(event));
  }
}

TEST_CASE("loan events refuse JSON with a bad date, a bad schedule type or an amount that is not the sum") {
  const std::string originated = domain::event_to_json(loan_originated_example());
  REQUIRE(domain::event_from_json("loan_originated", originated).has_value());
  auto replaced = [](std::string json, const std::string& from, const std::string& to) {
    const auto at = json.find(from);
    REQUIRE(at != std::string::npos);
    return json.replace(at, from.size(), to);
  };
  CHECK_FALSE(domain::event_from_json("loan_originated", replaced(originated, "2026-02-28", "2026-02-30")));
  CHECK_FALSE(domain::event_from_json("loan_originated", replaced(originated, "\"equal_principal\"", "\"balloon\"")));
  CHECK_FALSE(domain::event_from_json("loan_originated", replaced(originated, "\"number\":1,", "\"number\":1,\"extra\":1,")));
  const std::string repaid = domain::event_to_json(events::LoanRepaid{"r-1", {0, 10, 20, 0, {{1, 0, 10, 20, false}}}});
  REQUIRE(domain::event_from_json("loan_repaid", repaid).has_value());
  CHECK_FALSE(domain::event_from_json("loan_repaid", replaced(repaid, "\"amount\":30", "\"amount\":31")));
  CHECK_FALSE(domain::event_from_json("loan_repaid", replaced(repaid, "\"waive_interest\":false", "\"waive_interest\":0")));
  const std::string closed = domain::event_to_json(events::LoanDayClosed{{Date{std::chrono::year(2026), std::chrono::month(3),
                                                                      std::chrono::day(1)}, 1, {1}, {}, 2}});
  REQUIRE(domain::event_from_json("loan_day_closed", closed).has_value());
  CHECK_FALSE(domain::event_from_json("loan_day_closed", replaced(closed, "[1]", "[\"1\"]")));
}

TEST_CASE("reading JSON refuses anything event_to_json would not have written") {
  const std::string entry = domain::event_to_json(
      events::AccountEntry{"t-1", events::Direction::credit, events::Phase::posted, 100, 0, "bob"});
  REQUIRE(domain::event_from_json("account_entry", entry).has_value());
  auto entry_with = [&](const std::string& field, const std::string& value) {
    rapidjson::Document json;
    json.Parse(entry.c_str());
    rapidjson::Document replacement(&json.GetAllocator());
    replacement.Parse(value.c_str());
    REQUIRE_FALSE(replacement.HasParseError());
    json.RemoveMember(field.c_str());
    json.AddMember(rapidjson::Value(field.c_str(), json.GetAllocator()), replacement,
                   json.GetAllocator());
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
    json.Accept(writer);
    return std::string(buffer.GetString(), buffer.GetSize());
  };
  REQUIRE(domain::event_from_json("account_entry", entry_with("amount", "7")).has_value());

  CHECK_FALSE(domain::event_from_json("account_entry", "not json").has_value());
  CHECK_FALSE(domain::event_from_json("account_entry", entry + " trailing").has_value());
  CHECK_FALSE(domain::event_from_json("account_entry", "[1, 2]").has_value());
  CHECK_FALSE(domain::event_from_json("account_frozen", "null").has_value());
  CHECK_FALSE(domain::event_from_json("account_frozen", "{\"extra\":1}").has_value());
  CHECK_FALSE(domain::event_from_json("pending_transfer_posted", "{\"amount\":1}").has_value());
  CHECK_FALSE(domain::event_from_json("account_entry", entry_with("note", "\"hi\"")).has_value());
  CHECK_FALSE(domain::event_from_json("account_entry", entry_with("amount", "\"100\"")).has_value());
  CHECK_FALSE(domain::event_from_json("account_entry", entry_with("amount", "1.5")).has_value());
  CHECK_FALSE(domain::event_from_json("account_entry", entry_with("amount", "1e2")).has_value());
  CHECK_FALSE(
      domain::event_from_json("account_entry", entry_with("amount", "9223372036854775808")).has_value());
  CHECK_FALSE(
      domain::event_from_json("account_entry", entry_with("direction", "\"sideways\"")).has_value());
  CHECK_FALSE(domain::event_from_json("account_entry", entry_with("phase", "1")).has_value());
  CHECK_FALSE(domain::event_from_json("account_entry", entry_with("counterparty", "null")).has_value());
  CHECK_FALSE(domain::event_from_json("account_entry_v2", entry).has_value());
  CHECK_FALSE(domain::event_from_json("transfer_posted", entry).has_value());

  const std::string opened = domain::event_to_json(
      events::AccountOpened{"alice", "EUR", 42, "Alice", AccountKind::customer, 0, 0});
  REQUIRE(domain::event_from_json("account_opened", opened).has_value());
  auto opened_with = [&](std::string_view from, std::string_view to) {
    std::string json = opened;
    const auto at = json.find(from);
    REQUIRE(at != std::string::npos);
    return json.replace(at, from.size(), to);
  };
  CHECK(domain::event_from_json("account_opened",
                        opened_with("\"ledger_code\":42", "\"ledger_code\":4294967295"))
            .has_value());
  CHECK_FALSE(domain::event_from_json("account_opened",
                              opened_with("\"ledger_code\":42", "\"ledger_code\":4294967296"))
                  .has_value());
  CHECK_FALSE(
      domain::event_from_json("account_opened", opened_with("\"ledger_code\":42", "\"ledger_code\":-1"))
          .has_value());
  CHECK_FALSE(domain::event_from_json("account_opened", opened_with("\"flags\":0", "\"flags\":4294967296"))
                  .has_value());
  CHECK_FALSE(
      domain::event_from_json("account_opened", opened_with("\"customer\"", "\"Customer\"")).has_value());
}
