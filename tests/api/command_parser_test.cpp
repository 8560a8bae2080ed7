#include "command_parser.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <optional>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

using ledger::Amount;
using ledger::api::CommandRoute;
using ledger::api::parse_command;
using ledger::api::Problem;
namespace domain = ledger::domain;
using namespace std::literals;

namespace {

// The problem parse_command answers; fails the test when it accepts the body.
Problem problem_of(CommandRoute route, std::string_view path_id, std::string_view body) {
  auto result = parse_command(route, path_id, body);
  REQUIRE_MESSAGE(std::holds_alternative<Problem>(result), "accepted: " << body);
  return std::get<Problem>(result);
}

Problem problem_of(CommandRoute route, std::string_view body) {
  return problem_of(route, "", body);
}

// Checks status 400, the code and that the detail mentions each of `mentions`.
void check_problem(const Problem& problem, std::string_view code,
                   std::vector<std::string_view> mentions = {}) {
  CHECK(problem.status == 400);
  CHECK(problem.code == code);
  CHECK_FALSE(problem.title.empty());
  CHECK_FALSE(problem.detail.empty());
  for (const auto mention : mentions) {
    CHECK_MESSAGE(problem.detail.find(mention) != std::string::npos,
                  "detail \"" << problem.detail << "\" does not mention \"" << mention << "\"");
  }
}

void expect_problem(CommandRoute route, std::string_view path_id, std::string_view body,
                    std::string_view code, std::vector<std::string_view> mentions = {}) {
  INFO("body: " << body);
  check_problem(problem_of(route, path_id, body), code, std::move(mentions));
}

// For routes without an id in the path.
void expect_body_problem(CommandRoute route, std::string_view body, std::string_view code,
                    std::vector<std::string_view> mentions = {}) {
  expect_problem(route, "", body, code, std::move(mentions));
}

template <typename T>
T single(CommandRoute route, std::string_view path_id, std::string_view body) {
  auto result = parse_command(route, path_id, body);
  if (const auto* problem = std::get_if<Problem>(&result)) {
    FAIL("rejected " << body << ": " << problem->code << ": " << problem->detail);
  }
  auto& command_body = std::get<domain::CommandBody>(result);
  REQUIRE(std::holds_alternative<domain::SingleCommand>(command_body));
  auto& command = std::get<domain::SingleCommand>(command_body);
  REQUIRE(std::holds_alternative<T>(command));
  return std::get<T>(command);
}

template <typename T>
T single(CommandRoute route, std::string_view body) {
  return single<T>(route, "", body);
}

domain::LinkedCommands linked(std::string_view body) {
  auto result = parse_command(CommandRoute::batch, "", body);
  if (const auto* problem = std::get_if<Problem>(&result)) {
    FAIL("rejected " << body << ": " << problem->code << ": " << problem->detail);
  }
  auto& command_body = std::get<domain::CommandBody>(result);
  REQUIRE(std::holds_alternative<domain::LinkedCommands>(command_body));
  return std::get<domain::LinkedCommands>(command_body);
}

const std::string transfer_body =
    R"({"id":"t-1","from":"alice","to":"bob","amount":1250,"currency":"EUR","reference":"rent"})";

}  // namespace

// --- Success, route by route --------------------------------------------------------------

TEST_CASE("open_account: all fields") {
  const auto c = single<domain::OpenAccount>(
      CommandRoute::open_account,
      R"({"id":"acc.1:x-Y_z","currency":"EUR","owner":"Zoë Müller","kind":"system",)"
      R"("overdraft_limit":5000,"ledger_code":4294967295})");
  CHECK(c.id == "acc.1:x-Y_z");
  CHECK(c.currency.code() == "EUR");
  CHECK(c.owner == "Zoë Müller");
  CHECK(c.kind == domain::AccountKind::system);
  CHECK(c.overdraft_limit == Amount{5000});
  CHECK(c.ledger_code == 4294967295u);
  CHECK_FALSE(c.flags.has_value());
}

TEST_CASE("open_account: only currency, defaults for the rest") {
  const auto c = single<domain::OpenAccount>(CommandRoute::open_account,
                                             " \n\t{ \"currency\" : \"USD\" }\r\n ");
  CHECK(c.id.empty());
  CHECK(c.currency.code() == "USD");
  CHECK(c.owner.empty());
  CHECK(c.kind == domain::AccountKind::customer);
  CHECK(c.overdraft_limit == Amount{0});
  CHECK(c.ledger_code == 0u);
  CHECK_FALSE(c.flags.has_value());

  const auto d = single<domain::OpenAccount>(
      CommandRoute::open_account,
      R"({"currency":"JPY","kind":"customer","overdraft_limit":0,"ledger_code":0,"owner":""})");
  CHECK(d.kind == domain::AccountKind::customer);
  CHECK(d.overdraft_limit == Amount{0});
  CHECK(d.owner.empty());

  // -0 is an integer zero, allowed for an overdraft limit.
  CHECK(single<domain::OpenAccount>(CommandRoute::open_account,
                                    R"({"currency":"EUR","overdraft_limit":-0})")
            .overdraft_limit == Amount{0});
  CHECK(single<domain::OpenAccount>(CommandRoute::open_account,
                                    R"({"currency":"EUR","overdraft_limit":9223372036854775807})")
            .overdraft_limit == Amount{INT64_MAX});
}

TEST_CASE("deposit and withdrawal take the account id from the path") {
  const auto d = single<domain::Deposit>(
      CommandRoute::deposit, "alice",
      R"({"amount":1250,"reference":"salary","transfer_id":"tx-1"})");
  CHECK(d.account_id == "alice");
  CHECK(d.amount == Amount{1250});
  CHECK(d.reference == "salary");
  CHECK(d.transfer_id == "tx-1");

  const auto minimal = single<domain::Deposit>(CommandRoute::deposit, "bob", R"({"amount":1})");
  CHECK(minimal.account_id == "bob");
  CHECK(minimal.amount == Amount{1});
  CHECK(minimal.reference.empty());
  CHECK(minimal.transfer_id.empty());

  const auto w = single<domain::Withdrawal>(
      CommandRoute::withdrawal, "carol",
      R"({"transfer_id":"w:9","reference":"atm","amount":9223372036854775807})");
  CHECK(w.account_id == "carol");
  CHECK(w.amount == Amount{INT64_MAX});
  CHECK(w.reference == "atm");
  CHECK(w.transfer_id == "w:9");

  const auto w2 = single<domain::Withdrawal>(CommandRoute::withdrawal, "carol", R"({"amount":7})");
  CHECK(w2.amount == Amount{7});
  CHECK(w2.transfer_id.empty());
}

TEST_CASE("transfer") {
  const auto t = single<domain::Transfer>(CommandRoute::transfer, transfer_body);
  CHECK(t.id == "t-1");
  CHECK(t.from == "alice");
  CHECK(t.to == "bob");
  CHECK(t.amount == Amount{1250});
  CHECK(t.currency.code() == "EUR");
  CHECK(t.reference == "rent");

  const auto minimal = single<domain::Transfer>(
      CommandRoute::transfer, R"({"from":"a","to":"b","amount":3,"currency":"GBP"})");
  CHECK(minimal.id.empty());
  CHECK(minimal.from == "a");
  CHECK(minimal.to == "b");
  CHECK(minimal.amount == Amount{3});
  CHECK(minimal.currency.code() == "GBP");
  CHECK(minimal.reference.empty());
}

TEST_CASE("hold") {
  const auto h = single<domain::PlaceHold>(
      CommandRoute::hold,
      R"({"id":"h-1","from":"alice","to":"shop","amount":99,"currency":"EUR",)"
      R"("timeout_seconds":3600,"reference":"pre-auth"})");
  CHECK(h.id == "h-1");
  CHECK(h.from == "alice");
  CHECK(h.to == "shop");
  CHECK(h.amount == Amount{99});
  CHECK(h.currency.code() == "EUR");
  REQUIRE(h.timeout_seconds.has_value());
  CHECK(*h.timeout_seconds == 3600);
  CHECK(h.reference == "pre-auth");

  const auto minimal = single<domain::PlaceHold>(
      CommandRoute::hold, R"({"from":"a","to":"b","amount":1,"currency":"CHF"})");
  CHECK(minimal.id.empty());
  CHECK_FALSE(minimal.timeout_seconds.has_value());
  CHECK(minimal.reference.empty());
}

TEST_CASE("post_hold: amount optional, empty body is {}") {
  const auto p = single<domain::PostHold>(CommandRoute::post_hold, "h-1", R"({"amount":40})");
  CHECK(p.id == "h-1");
  REQUIRE(p.amount.has_value());
  CHECK(*p.amount == Amount{40});

  for (const std::string_view body : {""sv, "{}"sv, " \r\n\t "sv, " { } "sv}) {
    const auto full = single<domain::PostHold>(CommandRoute::post_hold, "h-2", body);
    CHECK(full.id == "h-2");
    CHECK_FALSE(full.amount.has_value());
  }
}

TEST_CASE("void_hold, freeze, unfreeze, close: empty body or {}") {
  for (const std::string_view body : {""sv, "{}"sv, "\n"sv, "  {\n}  "sv}) {
    INFO("body: " << body);
    CHECK(single<domain::VoidHold>(CommandRoute::void_hold, "h-3", body).id == "h-3");
    CHECK(single<domain::FreezeAccount>(CommandRoute::freeze, "acc-1", body).id == "acc-1");
    CHECK(single<domain::UnfreezeAccount>(CommandRoute::unfreeze, "acc-2", body).id == "acc-2");
    CHECK(single<domain::CloseAccount>(CommandRoute::close, "acc-3", body).id == "acc-3");
  }
}

TEST_CASE("batch: every member type") {
  const auto batch = linked(R"({"commands":[
    {"type":"open_account","id":"a1","currency":"EUR","owner":"Ann","kind":"customer",
     "overdraft_limit":10,"ledger_code":7},
    {"type":"deposit","account_id":"a1","amount":500,"reference":"r","transfer_id":"d1"},
    {"type":"withdrawal","account_id":"a1","amount":100},
    {"type":"transfer","id":"t1","from":"a1","to":"a2","amount":50,"currency":"EUR","reference":"x"},
    {"type":"hold","from":"a1","to":"a2","amount":20,"currency":"EUR","timeout_seconds":60},
    {"type":"post_hold","id":"h1","amount":5},
    {"type":"post_hold","id":"h2"},
    {"type":"void_hold","id":"h3"}
  ]})");
  REQUIRE(batch.commands.size() == 8);

  const auto& open = std::get<domain::OpenAccount>(batch.commands[0]);
  CHECK(open.id == "a1");
  CHECK(open.currency.code() == "EUR");
  CHECK(open.owner == "Ann");
  CHECK(open.kind == domain::AccountKind::customer);
  CHECK(open.overdraft_limit == Amount{10});
  CHECK(open.ledger_code == 7u);

  const auto& deposit = std::get<domain::Deposit>(batch.commands[1]);
  CHECK(deposit.account_id == "a1");
  CHECK(deposit.amount == Amount{500});
  CHECK(deposit.reference == "r");
  CHECK(deposit.transfer_id == "d1");

  const auto& withdrawal = std::get<domain::Withdrawal>(batch.commands[2]);
  CHECK(withdrawal.account_id == "a1");
  CHECK(withdrawal.amount == Amount{100});
  CHECK(withdrawal.transfer_id.empty());

  const auto& transfer = std::get<domain::Transfer>(batch.commands[3]);
  CHECK(transfer.id == "t1");
  CHECK(transfer.from == "a1");
  CHECK(transfer.to == "a2");
  CHECK(transfer.amount == Amount{50});
  CHECK(transfer.currency.code() == "EUR");
  CHECK(transfer.reference == "x");

  const auto& hold = std::get<domain::PlaceHold>(batch.commands[4]);
  CHECK(hold.id.empty());
  CHECK(hold.amount == Amount{20});
  CHECK(hold.timeout_seconds == std::optional<std::int64_t>{60});

  const auto& post = std::get<domain::PostHold>(batch.commands[5]);
  CHECK(post.id == "h1");
  CHECK(post.amount == std::optional<Amount>{Amount{5}});
  const auto& post_all = std::get<domain::PostHold>(batch.commands[6]);
  CHECK(post_all.id == "h2");
  CHECK_FALSE(post_all.amount.has_value());

  CHECK(std::get<domain::VoidHold>(batch.commands[7]).id == "h3");
}

TEST_CASE("batch: exactly 100 members is allowed") {
  std::string body = R"({"commands":[)";
  for (int i = 0; i < 100; ++i) {
    if (i > 0) body += ',';
    body += R"({"type":"void_hold","id":"h)" + std::to_string(i) + R"("})";
  }
  body += "]}";
  const auto batch = linked(body);
  REQUIRE(batch.commands.size() == 100);
  CHECK(std::get<domain::VoidHold>(batch.commands[99]).id == "h99");
}

TEST_CASE("strings: escapes and non-ASCII text are decoded") {
  const auto t = single<domain::Transfer>(
      CommandRoute::transfer,
      R"({"from":"a","to":"b","amount":1,"currency":"EUR","reference":"caf\u00e9 \ud83d\ude00 \"q\" \/ \\"})");
  CHECK(t.reference == "caf\xC3\xA9 \xF0\x9F\x98\x80 \"q\" / \\");
  // Escaped field names are the same names.
  const auto d = single<domain::Deposit>(CommandRoute::deposit, "a", R"({"\u0061mount":5})");
  CHECK(d.amount == Amount{5});
}

// --- Malformed JSON -----------------------------------------------------------------------

TEST_CASE("malformed JSON: syntax errors carry RapidJSON's message and offset") {
  const auto p = problem_of(CommandRoute::deposit, "a", R"({"amount": })");
  check_problem(p, "malformed_json", {"offset 11", "Invalid value"});
  CHECK(p.title == "Malformed JSON");

  for (const std::string_view body : {
           R"({"amount":1,})"sv,            // trailing comma
           R"({"amount":1 "reference":"x"})"sv,  // missing comma
           R"({'amount':1})"sv,             // single quotes
           R"({amount:1})"sv,               // bare key
           R"({"amount":1} {})"sv,          // two documents
           R"({"amount":1}x)"sv,            // trailing garbage
           R"({"amount":1} // comment)"sv,  // comments
           R"(/* c */ {"amount":1})"sv,
           R"({"amount":NaN})"sv,
           R"({"amount":Infinity})"sv,
           R"({"amount":01})"sv,            // leading zero
           R"({"amount":+1})"sv,
           R"({"amount":0x10})"sv,
           R"({"amount":1.})"sv,
           R"({"amount":1e400})"sv,         // beyond double
           R"({"reference":"\x41","amount":1})"sv,  // invalid escape
           "{\"reference\":\"tab\there\",\"amount\":1}"sv,  // raw control character in a string
           "\xEF\xBB\xBF{\"amount\":1}"sv,  // byte order mark
           "{\"amount\":1}\0"sv,            // NUL after the document
           "{\"amount\":1\0}"sv,
           "\0"sv,
       }) {
    expect_problem(CommandRoute::deposit, "a", body, "malformed_json", {"offset"});
  }
}

TEST_CASE("malformed JSON: truncated bodies") {
  const std::string full = R"({"id":"t-1","from":"alice","to":"bob","amount":1250,"currency":"EUR"})";
  // Every proper prefix that is not only whitespace is malformed.
  for (std::size_t length = 1; length < full.size(); ++length) {
    expect_body_problem(CommandRoute::transfer, full.substr(0, length), "malformed_json", {"offset"});
  }
  expect_problem(CommandRoute::post_hold, "h", "{", "malformed_json");
  expect_problem(CommandRoute::post_hold, "h", R"({"amount":)", "malformed_json");
  expect_body_problem(CommandRoute::batch, R"({"commands":[{"type":"void_hold","id":"h")",
                 "malformed_json");
}

TEST_CASE("malformed JSON: top-level value that is not an object") {
  for (const std::string_view body :
       {"[]"sv, R"([{"amount":1}])"sv, "1"sv, R"("amount")"sv, "null"sv, "true"sv, "false"sv,
        "-5"sv, "1.5"sv}) {
    expect_problem(CommandRoute::deposit, "a", body, "malformed_json", {"object"});
    expect_problem(CommandRoute::void_hold, "h", body, "malformed_json", {"object"});
    expect_body_problem(CommandRoute::batch, body, "malformed_json", {"object"});
  }
  // Top-level type is checked before duplicate keys inside it.
  expect_problem(CommandRoute::deposit, "a", R"([{"a":1,"a":2}])", "malformed_json");
}

TEST_CASE("deep nesting neither crashes nor passes") {
  constexpr std::size_t depth = 200000;
  const std::string arrays = std::string(depth, '[') + std::string(depth, ']');
  expect_problem(CommandRoute::deposit, "a", arrays, "malformed_json", {"object"});
  // Truncated deep nesting.
  expect_problem(CommandRoute::deposit, "a", std::string(depth, '['), "malformed_json",
                 {"offset"});
  expect_problem(CommandRoute::deposit, "a", std::string(depth, '{'), "malformed_json",
                 {"offset"});
  // Deep nesting inside a field of the wrong type.
  expect_problem(CommandRoute::deposit, "a", R"({"amount":1,"reference":)" + arrays + "}",
                 "invalid_field", {"\"reference\"", "string", "array"});
  expect_problem(CommandRoute::deposit, "a", R"({"amount":)" + arrays + "}", "invalid_amount",
                 {"\"amount\""});
  // Deeply nested objects under an unknown key.
  std::string objects;
  for (std::size_t i = 0; i < depth; ++i) objects += R"({"x":)";
  objects += "1";
  objects += std::string(depth, '}');
  expect_problem(CommandRoute::deposit, "a", objects, "unknown_field", {"\"x\""});
}

TEST_CASE("empty body where the command has required fields") {
  for (const auto route : {CommandRoute::open_account, CommandRoute::deposit,
                           CommandRoute::withdrawal, CommandRoute::transfer, CommandRoute::hold,
                           CommandRoute::batch}) {
    const std::string_view path =
        route == CommandRoute::deposit || route == CommandRoute::withdrawal ? "acc" : "";
    expect_problem(route, path, "", "malformed_json", {"empty"});
    expect_problem(route, path, "  \r\n\t", "malformed_json", {"empty"});
  }
  // {} is well formed but misses the required fields.
  expect_body_problem(CommandRoute::open_account, "{}", "missing_field", {"\"currency\""});
  expect_problem(CommandRoute::deposit, "acc", "{}", "missing_field", {"\"amount\""});
  expect_body_problem(CommandRoute::batch, "{}", "missing_field", {"\"commands\""});
}

// --- Invalid UTF-8 ------------------------------------------------------------------------

TEST_CASE("invalid UTF-8") {
  for (const std::string_view bad : {
           "\xFF"sv,              // never valid
           "\xFE"sv,
           "\x80"sv,              // lone continuation byte
           "\xC3"sv,              // truncated two-byte sequence
           "\xE2\x82"sv,          // truncated three-byte sequence
           "\xC0\xAF"sv,          // overlong '/'
           "\xC1\xBF"sv,          // overlong
           "\xE0\x80\xAF"sv,      // overlong three-byte '/'
           "\xF0\x80\x80\xAF"sv,  // overlong four-byte '/'
           "\xED\xA0\x80"sv,      // UTF-16 surrogate D800
           "\xED\xBF\xBF"sv,      // UTF-16 surrogate DFFF
           "\xF4\x90\x80\x80"sv,  // above U+10FFFF
           "\xF5\x80\x80\x80"sv,
       }) {
    const std::string in_value = R"({"amount":1,"reference":"a)" + std::string(bad) + R"(b"})";
    const auto p = problem_of(CommandRoute::deposit, "acc", in_value);
    check_problem(p, "invalid_utf8", {"UTF-8", "offset"});
    CHECK(p.title == "Invalid UTF-8");
    const std::string in_key = R"({"amount":1,"ref)" + std::string(bad) + R"(":"x"})";
    expect_problem(CommandRoute::deposit, "acc", in_key, "invalid_utf8");
    const std::string outside = R"({"amount":1})" + std::string(bad);
    expect_problem(CommandRoute::deposit, "acc", outside, "invalid_utf8");
    const std::string at_end = R"({"amount":1,"reference":")" + std::string(bad);
    expect_problem(CommandRoute::deposit, "acc", at_end, "invalid_utf8");
  }
  // The offset is that of the first bad byte.
  expect_problem(CommandRoute::post_hold, "h", "{\"x\":\"\xFF\"}", "invalid_utf8",
                 {"offset 6"});
}

TEST_CASE("escapes that do not denote Unicode scalar values") {
  for (const std::string_view reference : {
           R"(\ud800)"sv,         // lone high surrogate
           R"(\ud800x)"sv,
           R"(\ud800\u0041)"sv,   // high surrogate, then not a low one
           R"(\udc00)"sv,         // lone low surrogate
           R"(a\udfffb)"sv,
       }) {
    const std::string body =
        R"({"amount":1,"reference":")" + std::string(reference) + R"("})";
    expect_problem(CommandRoute::deposit, "acc", body, "invalid_utf8");
  }
  expect_body_problem(CommandRoute::batch,
                 R"({"commands":[{"type":"void_hold","id":"h"},{"type":"void_hold","id":"h","\udc00":1}]})",
                 "invalid_utf8", {"commands[1]: "});
}

// --- Duplicate keys -----------------------------------------------------------------------

TEST_CASE("duplicate keys") {
  const auto p = problem_of(CommandRoute::deposit, "acc", R"({"amount":1,"amount":2})");
  check_problem(p, "duplicate_key", {"\"amount\""});
  CHECK(p.title == "Duplicate key");
  // Even when the values agree, and for optional and unknown fields.
  expect_problem(CommandRoute::deposit, "acc", R"({"amount":1,"reference":"a","amount":1})",
                 "duplicate_key", {"\"amount\""});
  expect_problem(CommandRoute::deposit, "acc", R"({"amount":1,"zzz":1,"zzz":2})",
                 "duplicate_key", {"\"zzz\""});
  expect_problem(CommandRoute::void_hold, "h", R"({"a":1,"a":1})", "duplicate_key", {"\"a\""});
  // An escaped spelling of the same key is the same key.
  expect_problem(CommandRoute::deposit, "acc", R"({"amount":1,"\u0061mount":2})",
                 "duplicate_key", {"\"amount\""});
  // Keys differing in case are distinct: the second is simply unknown.
  expect_problem(CommandRoute::deposit, "acc", R"({"amount":1,"Amount":2})", "unknown_field",
                 {"\"Amount\""});
  // At any depth, even in values that are otherwise wrong.
  expect_problem(CommandRoute::deposit, "acc", R"({"amount":1,"reference":{"k":1,"k":2}})",
                 "duplicate_key", {"\"k\"", "\"reference\""});
  expect_problem(CommandRoute::deposit, "acc", R"({"amount":1,"x":[[{"k":1,"k":2}]]})",
                 "duplicate_key", {"\"k\"", "\"x\"[0][0]"});
  expect_body_problem(CommandRoute::batch,
                 R"({"commands":[{"type":"void_hold","id":"h"}],"commands":[]})",
                 "duplicate_key", {"\"commands\""});
}

TEST_CASE("duplicate keys inside a batch member") {
  const auto p = problem_of(
      CommandRoute::batch,
      R"({"commands":[{"type":"void_hold","id":"h1"},)"
      R"({"type":"deposit","account_id":"a","amount":1,"amount":2}]})");
  check_problem(p, "duplicate_key", {"\"amount\""});
  CHECK(p.detail.rfind("commands[1]: ", 0) == 0);
  expect_body_problem(CommandRoute::batch,
                 R"({"commands":[{"type":"void_hold","type":"void_hold","id":"h1"}]})",
                 "duplicate_key", {"commands[0]: ", "\"type\""});
  expect_body_problem(CommandRoute::batch,
                 R"({"commands":[{"type":"void_hold","id":"h1","x":{"y":1,"y":1}}]})",
                 "duplicate_key", {"commands[0]: ", "\"y\"", "\"x\""});
}

// --- Unknown fields -----------------------------------------------------------------------

TEST_CASE("unknown fields") {
  const auto p = problem_of(CommandRoute::open_account, R"({"currency":"EUR","flags":1})");
  check_problem(p, "unknown_field", {"\"flags\""});
  CHECK(p.title == "Unknown field");

  expect_problem(CommandRoute::deposit, "acc", R"({"amount":1,"account_id":"acc"})",
                 "unknown_field", {"\"account_id\""});
  expect_problem(CommandRoute::withdrawal, "acc", R"({"amount":1,"currency":"EUR"})",
                 "unknown_field", {"\"currency\""});
  expect_body_problem(CommandRoute::transfer,
                 R"({"from":"a","to":"b","amount":1,"currency":"EUR","type":"transfer"})",
                 "unknown_field", {"\"type\""});
  expect_body_problem(CommandRoute::hold,
                 R"({"from":"a","to":"b","amount":1,"currency":"EUR","timeout":5})",
                 "unknown_field", {"\"timeout\""});
  expect_problem(CommandRoute::post_hold, "h", R"({"id":"h"})", "unknown_field", {"\"id\""});
  expect_problem(CommandRoute::void_hold, "h", R"({"amount":1})", "unknown_field",
                 {"\"amount\""});
  expect_problem(CommandRoute::freeze, "acc", R"({"reason":"fraud"})", "unknown_field",
                 {"\"reason\""});
  expect_problem(CommandRoute::unfreeze, "acc", R"({"x":null})", "unknown_field", {"\"x\""});
  expect_problem(CommandRoute::close, "acc", R"({"":1})", "unknown_field", {"\"\""});
  expect_body_problem(CommandRoute::batch, R"({"commands":[{"type":"void_hold","id":"h"}],"atomic":true})",
                 "unknown_field", {"\"atomic\""});
  // Reported before a missing field, so a misspelling is named.
  expect_problem(CommandRoute::deposit, "acc", R"({"amout":1})", "unknown_field",
                 {"\"amout\""});
  // Odd key bytes are shown escaped.
  const auto odd = problem_of(CommandRoute::freeze, "acc", R"({"a\nb\u0000c\"":1})");
  check_problem(odd, "unknown_field", {R"("a\x0Ab\x00c\"")"});
  const auto long_key = problem_of(CommandRoute::freeze, "acc",
                                   "{\"" + std::string(1000, 'k') + "\":1}");
  check_problem(long_key, "unknown_field", {"kkk\"..."});
  CHECK(long_key.detail.size() < 200);
}

// --- Missing fields -----------------------------------------------------------------------

TEST_CASE("missing required fields") {
  const auto p = problem_of(CommandRoute::open_account, R"({"owner":"x"})");
  check_problem(p, "missing_field", {"\"currency\""});
  CHECK(p.title == "Missing field");

  expect_problem(CommandRoute::deposit, "acc", R"({"reference":"x"})", "missing_field",
                 {"\"amount\""});
  expect_problem(CommandRoute::withdrawal, "acc", R"({"transfer_id":"t"})", "missing_field",
                 {"\"amount\""});
  const std::vector<std::string> transfer_fields = {"from", "to", "amount", "currency"};
  for (const auto& missing : transfer_fields) {
    std::string body = "{";
    for (const auto& field : transfer_fields) {
      if (field == missing) continue;
      if (body.size() > 1) body += ',';
      body += '"' + field + "\":" + (field == "amount" ? "1" : field == "currency" ? "\"EUR\"" : "\"x\"");
    }
    body += '}';
    const std::string quoted = '"' + missing + '"';
    expect_body_problem(CommandRoute::transfer, body, "missing_field", {quoted});
    expect_body_problem(CommandRoute::hold, body, "missing_field", {quoted});
  }
  expect_body_problem(CommandRoute::batch, R"({})", "missing_field", {"\"commands\""});
}

// --- Wrong types --------------------------------------------------------------------------

TEST_CASE("fields of the wrong JSON type") {
  const auto p = problem_of(CommandRoute::open_account, R"({"currency":"EUR","owner":42})");
  check_problem(p, "invalid_field", {"\"owner\"", "string", "integer"});
  CHECK(p.title == "Invalid field");

  expect_body_problem(CommandRoute::open_account, R"({"currency":"EUR","owner":null})",
                 "invalid_field", {"\"owner\"", "string", "null"});
  expect_problem(CommandRoute::deposit, "acc", R"({"amount":1,"reference":["a"]})",
                 "invalid_field", {"\"reference\"", "string", "array"});
  expect_body_problem(CommandRoute::transfer,
                 R"({"from":"a","to":"b","amount":1,"currency":"EUR","reference":{}})",
                 "invalid_field", {"\"reference\"", "object"});
  expect_body_problem(CommandRoute::hold,
                 R"({"from":"a","to":"b","amount":1,"currency":"EUR","reference":true})",
                 "invalid_field", {"\"reference\"", "boolean"});

  // kind
  for (const std::string_view kind : {R"("Customer")"sv, R"("bank")"sv, R"("")"sv, "1"sv,
                                      "null"sv, R"(["system"])"sv}) {
    expect_body_problem(CommandRoute::open_account,
                   R"({"currency":"EUR","kind":)" + std::string(kind) + "}", "invalid_field",
                   {"\"kind\"", "customer", "system"});
  }
  // ledger_code: an integer 0..4294967295
  for (const std::string_view code : {"-1"sv, "4294967296"sv, "1.0"sv, "1e2"sv, R"("7")"sv,
                                      "null"sv, "true"sv}) {
    expect_body_problem(CommandRoute::open_account,
                   R"({"currency":"EUR","ledger_code":)" + std::string(code) + "}",
                   "invalid_field", {"\"ledger_code\"", "integer"});
  }
  // timeout_seconds: a positive int64
  for (const std::string_view timeout : {"0"sv, "-1"sv, "1.5"sv, "60.0"sv, R"("60")"sv,
                                         "9223372036854775808"sv, "null"sv}) {
    expect_body_problem(CommandRoute::hold,
                   R"({"from":"a","to":"b","amount":1,"currency":"EUR","timeout_seconds":)" +
                       std::string(timeout) + "}",
                   "invalid_field", {"\"timeout_seconds\"", "positive integer"});
  }
  CHECK(single<domain::PlaceHold>(
            CommandRoute::hold,
            R"({"from":"a","to":"b","amount":1,"currency":"EUR","timeout_seconds":9223372036854775807})")
            .timeout_seconds == std::optional<std::int64_t>{INT64_MAX});

  // Ids, amounts and currencies of the wrong type get their own codes.
  expect_body_problem(CommandRoute::transfer, R"({"from":1,"to":"b","amount":1,"currency":"EUR"})",
                 "invalid_id", {"\"from\"", "string"});
  expect_body_problem(CommandRoute::transfer, R"({"from":"a","to":"b","amount":1,"currency":978})",
                 "invalid_currency", {"\"currency\"", "string"});
  expect_problem(CommandRoute::deposit, "acc", R"({"amount":null})", "invalid_amount",
                 {"\"amount\""});
  expect_problem(CommandRoute::deposit, "acc", R"({"amount":1,"transfer_id":null})",
                 "invalid_id", {"\"transfer_id\""});
  expect_body_problem(CommandRoute::open_account, R"({"id":null,"currency":"EUR"})", "invalid_id",
                 {"\"id\""});
}

// --- Amounts ------------------------------------------------------------------------------

TEST_CASE("amounts must be positive JSON integers within int64") {
  const auto p = problem_of(CommandRoute::deposit, "acc", R"({"amount":0})");
  check_problem(p, "invalid_amount", {"\"amount\"", "greater than 0"});
  CHECK(p.title == "Invalid amount");

  for (const std::string_view amount : {
           "0"sv, "-0"sv, "-1"sv, "-9223372036854775808"sv,       // not positive
           "1.0"sv, "12.5"sv, "0.5"sv, "-1.5"sv,                   // fractional
           "1e3"sv, "1E3"sv, "1e0"sv, "10e-1"sv,                   // exponent
           "\"100\""sv, "\"\""sv, "true"sv, "null"sv, "[1]"sv, "{}"sv,  // not numbers
           "9223372036854775808"sv, "18446744073709551615"sv,      // beyond int64
           "18446744073709551616"sv, "-9223372036854775809"sv,
           "100000000000000000000000000000"sv,
       }) {
    const std::string tail = std::string(amount) + "}";
    expect_problem(CommandRoute::deposit, "acc", R"({"amount":)" + tail, "invalid_amount",
                   {"\"amount\""});
    expect_problem(CommandRoute::withdrawal, "acc", R"({"amount":)" + tail, "invalid_amount",
                   {"\"amount\""});
    expect_body_problem(CommandRoute::transfer,
                   R"({"from":"a","to":"b","currency":"EUR","amount":)" + tail,
                   "invalid_amount", {"\"amount\""});
    expect_body_problem(CommandRoute::hold, R"({"from":"a","to":"b","currency":"EUR","amount":)" + tail,
                   "invalid_amount", {"\"amount\""});
    expect_problem(CommandRoute::post_hold, "h", R"({"amount":)" + tail, "invalid_amount",
                   {"\"amount\""});
  }
  expect_problem(CommandRoute::deposit, "acc", R"({"amount":12.5})", "invalid_amount",
                 {"integer"});
  expect_problem(CommandRoute::deposit, "acc", R"({"amount":"100"})", "invalid_amount",
                 {"string"});
  expect_problem(CommandRoute::deposit, "acc", R"({"amount":-5})", "invalid_amount", {"-5"});
}

TEST_CASE("overdraft_limit must be a non-negative JSON integer within int64") {
  for (const std::string_view limit : {"-1"sv, "-9223372036854775808"sv, "1.0"sv, "0.0"sv,
                                       "1e3"sv, "\"100\""sv, "null"sv,
                                       "9223372036854775808"sv}) {
    expect_body_problem(CommandRoute::open_account,
                   R"({"currency":"EUR","overdraft_limit":)" + std::string(limit) + "}",
                   "invalid_amount", {"\"overdraft_limit\""});
  }
  expect_body_problem(CommandRoute::open_account, R"({"currency":"EUR","overdraft_limit":-1})",
                 "invalid_amount", {"negative"});
}

// --- Currencies ---------------------------------------------------------------------------

TEST_CASE("currency must be three capital letters") {
  const auto p = problem_of(CommandRoute::open_account, R"({"currency":"eur"})");
  check_problem(p, "invalid_currency", {"\"currency\"", "\"eur\""});
  CHECK(p.title == "Invalid currency");
  for (const std::string_view currency : {
           R"("eur")"sv, R"("Eur")"sv, R"("EU")"sv, R"("EURO")"sv, R"("E1R")"sv, R"("123")"sv,
           R"("")"sv, R"(" EUR")"sv, R"("EUR ")"sv, R"("E-R")"sv, R"("\u00c9UR")"sv,
           R"("EU\u0000")"sv, "978"sv, "null"sv, R"(["EUR"])"sv,
       }) {
    const std::string value(currency);
    expect_body_problem(CommandRoute::open_account, R"({"currency":)" + value + "}",
                   "invalid_currency", {"\"currency\""});
    expect_body_problem(CommandRoute::transfer,
                   R"({"from":"a","to":"b","amount":1,"currency":)" + value + "}",
                   "invalid_currency", {"\"currency\""});
    expect_body_problem(CommandRoute::hold, R"({"from":"a","to":"b","amount":1,"currency":)" + value + "}",
                   "invalid_currency", {"\"currency\""});
  }
}

// --- Ids ----------------------------------------------------------------------------------

TEST_CASE("ids: 1 to 64 of A-Za-z0-9._:-") {
  const std::string longest(64, 'a');
  const std::string too_long(65, 'a');
  CHECK(single<domain::OpenAccount>(CommandRoute::open_account,
                                    R"({"id":")" + longest + R"(","currency":"EUR"})")
            .id == longest);
  CHECK(single<domain::Deposit>(CommandRoute::deposit, longest, R"({"amount":1})").account_id ==
        longest);

  const auto p = problem_of(CommandRoute::open_account,
                            R"({"id":")" + too_long + R"(","currency":"EUR"})");
  check_problem(p, "invalid_id", {"\"id\"", "65"});
  CHECK(p.title == "Invalid id");

  for (const std::string_view id : {
           std::string_view(too_long), ""sv, "a b"sv, " a"sv, "a/b"sv, "a\\u0001b"sv,
           "a\\tb"sv, "a\\u0000"sv, "a\\nb"sv, "caf\\u00e9"sv, "a@b"sv, "a#b"sv, "\\\"x\\\""sv,
       }) {
    const std::string value = '"' + std::string(id) + '"';
    INFO("id: " << value);
    expect_body_problem(CommandRoute::open_account, R"({"currency":"EUR","id":)" + value + "}",
                   "invalid_id", {"\"id\""});
    expect_body_problem(CommandRoute::transfer,
                   R"({"from":)" + value + R"(,"to":"b","amount":1,"currency":"EUR"})",
                   "invalid_id", {"\"from\""});
    expect_body_problem(CommandRoute::transfer,
                   R"({"from":"a","to":)" + value + R"(,"amount":1,"currency":"EUR"})",
                   "invalid_id", {"\"to\""});
    expect_body_problem(CommandRoute::transfer,
                   R"({"id":)" + value + R"(,"from":"a","to":"b","amount":1,"currency":"EUR"})",
                   "invalid_id", {"\"id\""});
    expect_body_problem(CommandRoute::hold,
                   R"({"id":)" + value + R"(,"from":"a","to":"b","amount":1,"currency":"EUR"})",
                   "invalid_id", {"\"id\""});
    expect_problem(CommandRoute::deposit, "acc", R"({"amount":1,"transfer_id":)" + value + "}",
                   "invalid_id", {"\"transfer_id\""});
    expect_problem(CommandRoute::withdrawal, "acc",
                   R"({"amount":1,"transfer_id":)" + value + "}", "invalid_id",
                   {"\"transfer_id\""});
  }
}

TEST_CASE("ids in the path") {
  for (const std::string_view bad : {""sv, "a b"sv, "a\x01"sv, "a/b"sv, "caf\xC3\xA9"sv,
                                     "\xFF"sv}) {
    for (const auto route : {CommandRoute::deposit, CommandRoute::withdrawal,
                             CommandRoute::post_hold, CommandRoute::void_hold,
                             CommandRoute::freeze, CommandRoute::unfreeze, CommandRoute::close}) {
      expect_problem(route, bad, R"({"amount":1})", "invalid_id", {"path"});
      expect_problem(route, bad, "", "invalid_id", {"path"});
    }
  }
  const std::string too_long(65, 'x');
  expect_problem(CommandRoute::freeze, too_long, "", "invalid_id", {"path", "xxx\"..."});
  // The path is checked before the body.
  expect_problem(CommandRoute::deposit, "a b", "{", "invalid_id");
}

// --- Free text ----------------------------------------------------------------------------

TEST_CASE("owner and reference: at most 256 bytes, no control characters") {
  const std::string longest(256, 'r');
  CHECK(single<domain::Deposit>(CommandRoute::deposit, "acc",
                                R"({"amount":1,"reference":")" + longest + R"("})")
            .reference == longest);
  std::string multibyte;  // 128 two-byte characters: 256 bytes
  for (int i = 0; i < 128; ++i) multibyte += "\xC3\xA9";
  CHECK(single<domain::OpenAccount>(CommandRoute::open_account,
                                    R"({"currency":"EUR","owner":")" + multibyte + R"("})")
            .owner == multibyte);

  expect_problem(CommandRoute::deposit, "acc",
                 R"({"amount":1,"reference":")" + longest + R"(r"})", "invalid_field",
                 {"\"reference\"", "256", "257"});
  expect_body_problem(CommandRoute::open_account,
                 R"({"currency":"EUR","owner":")" + multibyte + R"(x"})", "invalid_field",
                 {"\"owner\"", "256"});

  for (const std::string_view text : {R"(a\nb)"sv, R"(\t)"sv, R"(\u0000)"sv, R"(x\u001f)"sv,
                                      R"(\u007f)"sv, R"(\u0085)"sv, R"(\u009f)"sv, R"(\r)"sv}) {
    const std::string value = '"' + std::string(text) + '"';
    INFO("text: " << value);
    expect_body_problem(CommandRoute::open_account, R"({"currency":"EUR","owner":)" + value + "}",
                   "invalid_field", {"\"owner\"", "control"});
    expect_body_problem(CommandRoute::transfer,
                   R"({"from":"a","to":"b","amount":1,"currency":"EUR","reference":)" + value +
                       "}",
                   "invalid_field", {"\"reference\"", "control"});
    expect_body_problem(CommandRoute::hold,
                   R"({"from":"a","to":"b","amount":1,"currency":"EUR","reference":)" + value +
                       "}",
                   "invalid_field", {"\"reference\"", "control"});
  }
  // U+00A0 and U+2028 are not control characters.
  CHECK(single<domain::Withdrawal>(CommandRoute::withdrawal, "acc",
                                   R"({"amount":1,"reference":"a\u00a0b\u2028c"})")
            .reference == "a\xC2\xA0" "b\xE2\x80\xA8" "c");
}

// --- Batch --------------------------------------------------------------------------------

TEST_CASE("batch: the commands array") {
  expect_body_problem(CommandRoute::batch, R"({"commands":[]})", "invalid_field",
                 {"\"commands\"", "empty"});
  for (const std::string_view value : {"{}"sv, "null"sv, R"("void_hold")"sv, "1"sv}) {
    expect_body_problem(CommandRoute::batch, R"({"commands":)" + std::string(value) + "}",
                   "invalid_field", {"\"commands\"", "array"});
  }
  std::string body = R"({"commands":[)";
  for (int i = 0; i < 101; ++i) {
    if (i > 0) body += ',';
    body += R"({"type":"void_hold","id":"h"})";
  }
  body += "]}";
  expect_body_problem(CommandRoute::batch, body, "invalid_field", {"\"commands\"", "100", "101"});

  // Members must be objects.
  for (const std::string_view member : {"1"sv, "null"sv, R"("void_hold")"sv, "[]"sv}) {
    const auto p = problem_of(CommandRoute::batch, R"({"commands":[{"type":"void_hold","id":"h"},)" +
                                                       std::string(member) + "]}");
    check_problem(p, "invalid_field", {"object"});
    CHECK(p.detail.rfind("commands[1]: ", 0) == 0);
  }
}

TEST_CASE("batch: member type") {
  const auto missing = problem_of(CommandRoute::batch, R"({"commands":[{"id":"h"}]})");
  check_problem(missing, "missing_field", {"commands[0]: ", "\"type\""});
  CHECK(missing.detail.rfind("commands[0]: ", 0) == 0);
  for (const std::string_view type : {R"("freeze")"sv, R"("batch")"sv, R"("close")"sv,
                                      R"("VOID_HOLD")"sv, R"("")"sv, R"("expire_hold")"sv}) {
    expect_body_problem(CommandRoute::batch,
                   R"({"commands":[{"type":)" + std::string(type) + R"(,"id":"h"}]})",
                   "invalid_field", {"commands[0]: ", "\"type\"", "void_hold"});
  }
  for (const std::string_view type : {"1"sv, "null"sv, R"(["void_hold"])"sv}) {
    expect_body_problem(CommandRoute::batch,
                   R"({"commands":[{"type":)" + std::string(type) + R"(,"id":"h"}]})",
                   "invalid_field", {"commands[0]: ", "\"type\"", "string"});
  }
}

TEST_CASE("batch: a member's problems name the member") {
  const std::string head = R"({"commands":[{"type":"void_hold","id":"ok"},{"type":"void_hold","id":"ok2"},)";
  const auto check_member = [&](std::string_view member, std::string_view code,
                                std::string_view field) {
    const auto p = problem_of(CommandRoute::batch, head + std::string(member) + "]}");
    INFO("member: " << member);
    check_problem(p, code, {field});
    CHECK(p.detail.rfind("commands[2]: ", 0) == 0);
  };
  check_member(R"({"type":"deposit","amount":1})", "missing_field", "\"account_id\"");
  check_member(R"({"type":"withdrawal","account_id":"a"})", "missing_field", "\"amount\"");
  check_member(R"({"type":"post_hold","amount":1})", "missing_field", "\"id\"");
  check_member(R"({"type":"void_hold"})", "missing_field", "\"id\"");
  check_member(R"({"type":"open_account"})", "missing_field", "\"currency\"");
  check_member(R"({"type":"transfer","from":"a","to":"b","amount":1})", "missing_field",
               "\"currency\"");
  check_member(R"({"type":"hold","from":"a","amount":1,"currency":"EUR"})", "missing_field",
               "\"to\"");
  check_member(R"({"type":"deposit","account_id":"a b","amount":1})", "invalid_id",
               "\"account_id\"");
  check_member(R"({"type":"void_hold","id":""})", "invalid_id", "\"id\"");
  check_member(R"({"type":"deposit","account_id":"a","amount":1.5})", "invalid_amount",
               "\"amount\"");
  check_member(R"({"type":"post_hold","id":"h","amount":0})", "invalid_amount", "\"amount\"");
  check_member(R"({"type":"open_account","currency":"eur"})", "invalid_currency",
               "\"currency\"");
  check_member(R"({"type":"open_account","currency":"EUR","kind":"bank"})", "invalid_field",
               "\"kind\"");
  check_member(R"({"type":"hold","from":"a","to":"b","amount":1,"currency":"EUR","timeout_seconds":0})",
               "invalid_field", "\"timeout_seconds\"");
  check_member(R"({"type":"deposit","amount":1,"account_id":"a","currency":"EUR"})",
               "unknown_field", "\"currency\"");
  check_member(R"({"type":"void_hold","id":"h","amount":1})", "unknown_field", "\"amount\"");
  check_member(R"({"type":"transfer","from":"a","to":"b","amount":1,"currency":"EUR","account_id":"x"})",
               "unknown_field", "\"account_id\"");
  check_member(R"({"type":"post_hold","id":"h","commands":[]})", "unknown_field",
               "\"commands\"");
}

TEST_CASE("parse_command never throws on arbitrary prefixes and mutations") {
  const std::string body = R"({"commands":[{"type":"transfer","from":"a","to":"b","amount":1,)"
                           R"("currency":"EUR","reference":"caf\u00e9"},{"type":"void_hold","id":"h"}]})";
  for (std::size_t i = 0; i <= body.size(); ++i) {
    CHECK_NOTHROW((void)parse_command(CommandRoute::batch, "", body.substr(0, i)));
    for (const char replacement : {'\0', '"', '{', ']', '\xFF', '1', ' '}) {
      std::string mutated = body;
      if (i < mutated.size()) mutated[i] = replacement;
      CHECK_NOTHROW((void)parse_command(CommandRoute::batch, "", mutated));
    }
  }
}

// --- Issue 13 -----------------------------------------------------------------------------

TEST_CASE("loan dates: 1970-01-01 to 2199-12-31") {
  const auto loan = [](std::string_view dates) {
    return R"({"account_id":"alice","currency":"EUR","principal":1000,"rate_bps":0,"installments":12,)"
           R"("schedule":"annuity",)" + std::string(dates) + "}";
  };
  // The issue's request: refused before it reaches the engine.
  expect_body_problem(CommandRoute::originate_loan, loan(R"("first_due_date":"9999-06-15")"), "invalid_date",
                      {"\"first_due_date\"", "1970-01-01 to 2199-12-31"});
  expect_body_problem(CommandRoute::originate_loan, loan(R"("first_due_date":"2200-01-01")"), "invalid_date",
                      {"\"first_due_date\""});
  expect_body_problem(CommandRoute::originate_loan,
                      loan(R"("origination_date":"1969-12-31","first_due_date":"2026-02-15")"), "invalid_date",
                      {"\"origination_date\""});
  expect_body_problem(CommandRoute::originate_loan,
                      loan(R"("origination_date":"0000-01-01","first_due_date":"2026-02-15")"), "invalid_date",
                      {"\"origination_date\""});
  const auto earliest = single<domain::OriginateLoan>(
      CommandRoute::originate_loan, loan(R"("origination_date":"1970-01-01","first_due_date":"2199-12-31")"));
  CHECK(earliest.origination_date == "1970-01-01");
  CHECK(earliest.first_due_date == "2199-12-31");
}

TEST_CASE("derived ids cannot be sent: the id grammar refuses their separator") {
  const std::string derived = domain::derived_id("L1", "disbursement");
  CHECK_FALSE(domain::is_valid_id(derived));
  expect_body_problem(CommandRoute::transfer,
                      R"({"id":")" + derived + R"(","from":"a","to":"b","amount":1,"currency":"EUR"})",
                      "invalid_id", {"\"id\""});
  expect_problem(CommandRoute::deposit, "acc", R"({"amount":1,"transfer_id":")" + derived + R"("})", "invalid_id",
                 {"\"transfer_id\""});
  expect_problem(CommandRoute::repay_loan, "L1", R"({"amount":1,"repayment_id":"r~1"})", "invalid_id",
                 {"\"repayment_id\""});
  expect_problem(CommandRoute::post_hold, derived, "", "invalid_id");
}
