// Read-model queries over HTTP: read-your-writes with min_position, pagination, audit search,
// roles, and a clear error for every bad parameter.
#include <doctest/doctest.h>
#include <rapidjson/document.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <sstream>

#include "server_fixture.hpp"
#include "ledger/projections/read_models.hpp"
#include "ledger/replay/replay.hpp"
#include "../projections/read_side_fixture.hpp"

using namespace ledger;
using test::HttpClient;
using test::ServerFixture;
using namespace std::chrono_literals;

namespace {

rapidjson::Document parse(const std::string& body) {
  rapidjson::Document document;
  document.Parse(body.c_str());
  REQUIRE_MESSAGE(!document.HasParseError(), "not JSON: " << body);
  return document;
}

const auto teller = ServerFixture::auth({"teller"});
const auto auditor = ServerFixture::auth({"auditor"});

std::int64_t post(HttpClient& client, const std::string& target, const std::string& body) {
  const auto response = client.request("POST", target, body, teller);
  REQUIRE_MESSAGE(response.status == 201, target << " -> " << response.status << " " << response.body);
  return parse(response.body)["position"].GetInt64();
}

// A read model the projector cannot write until an operator fixes it: a row trigger `name` on
// `table` (`events`: e.g. "BEFORE INSERT") raises a check_violation whose message starts with
// `name` for each row `condition` (on NEW) names. drop_refusal() removes it.
void refuse_rows(const std::string& admin_url, const std::string& name, const std::string& table,
                 const std::string& events, const std::string& condition,
                 const std::string& message) {
  pqxx::connection admin(admin_url);
  pqxx::work work(admin);
  work.exec("CREATE FUNCTION read." + name + "() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF " +
            condition + " THEN RAISE EXCEPTION '" + name + ": " + message +
            "' USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$");
  work.exec("CREATE TRIGGER " + name + " " + events + " ON " + table +
            " FOR EACH ROW EXECUTE FUNCTION read." + name + "()");
  work.commit();
}

void drop_refusal(const std::string& admin_url, const std::string& name, const std::string& table) {
  pqxx::connection admin(admin_url);
  pqxx::work work(admin);
  work.exec("DROP TRIGGER " + name + " ON " + table);
  work.exec("DROP FUNCTION read." + name + "()");
  work.commit();
}

// Three deposits of 5 to alice, one of 777 to dave, three more to alice: dave's position.
std::int64_t deposit_around_dave(HttpClient& client) {
  for (int i = 0; i < 3; ++i) post(client, "/v1/accounts/alice/deposits", R"({"amount":5})");
  const std::int64_t deposit = post(client, "/v1/accounts/dave/deposits", R"({"amount":777})");
  for (int i = 0; i < 3; ++i) post(client, "/v1/accounts/alice/deposits", R"({"amount":5})");
  return deposit;
}

// What `serve` reports of its relay in /health.
api::RelayHealth relay_health_of(const relay::Relay& relay, const std::string& database_url) {
  const auto status = relay.status();
  api::RelayHealth health;
  health.enabled = true;
  health.leader = status.leader;
  health.acknowledged = status.acknowledged.value();
  health.head = test::store_head(database_url);
  health.kafka_reachable = status.kafka_reachable;
  health.kafka_error = status.kafka_error;
  health.oldest_unacknowledged_seconds = status.oldest_unacknowledged_seconds;
  health.missing_position = status.missing_position.value();
  return health;
}

// The whole read side in this process: engine and HTTP front, relay, projectors.
struct Stack {
  explicit Stack(bool with_projectors = true)
      : pool(test::make_pool(database.app_url())),
        read_models(pool),
        relay(test::relay_settings(kafka), pool),
        server(database.app_url(), {}, &read_models, [this] { return relay_health(); }) {
    relay.start();
    if (!with_projectors) return;
    for (const auto kind : projections::all_projections()) {
      projectors.push_back(std::make_unique<projections::Projector>(kind, test::projector_settings(kafka), pool));
      projectors.back()->start();
    }
  }
  api::RelayHealth relay_health() { return relay_health_of(relay, database.app_url()); }
  test::TestDatabase database;
  test::MockKafka kafka;
  db::ConnectionPool pool;
  projections::ReadModels read_models;
  relay::Relay relay;  // before the server, which asks it for /health until it stops
  ServerFixture server;
  std::vector<std::unique_ptr<projections::Projector>> projectors;
};

// Copies what the default logger writes while it lives (attach before starting any thread).
class CapturedLog {
 public:
  CapturedLog() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(text_)) {
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~CapturedLog() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  // Lines holding `needle`.
  int count(const std::string& needle) {
    sink_->flush();
    std::istringstream lines(text_.str());
    int found = 0;
    for (std::string line; std::getline(lines, line);) found += line.find(needle) != std::string::npos ? 1 : 0;
    return found;
  }

 private:
  std::ostringstream text_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

}  // namespace

TEST_CASE("read your writes: 1,000 writes each read back at once with min_position") {
  Stack stack;
  auto client = stack.server.client();
  post(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  post(client, "/v1/accounts", R"({"id":"bob","currency":"EUR"})");
  post(client, "/v1/accounts/alice/deposits", R"({"amount":1000000})");
  // The projectors have joined their consumer groups and are live (steady state).
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(stack.database.app_url()); }));
  int stale = 0;
  for (int i = 1; i <= 1'000; ++i) {
    const std::int64_t position =
        post(client, "/v1/transfers", R"({"from":"alice","to":"bob","amount":3,"currency":"EUR"})");
    // The longest wait the API allows: the default 2 s is a latency budget a loaded machine
    // (ctest -j 4 on two cores) can miss, and a 504 here would say nothing about staleness.
    const std::string target = (i % 2 == 0 ? "/v1/accounts/bob?min_position=" + std::to_string(position)
                                           : "/v1/accounts/bob/entries?limit=1&cursor=" +
                                                 std::to_string(position - 1) +
                                                 "&min_position=" + std::to_string(position)) +
                               "&wait_ms=10000";
    const auto response = client.request("GET", target, "", teller);
    REQUIRE_MESSAGE(response.status == 200, target << " -> " << response.status << " " << response.body);
    const auto document = parse(response.body);
    CHECK(document["watermark"].GetInt64() >= position);
    CHECK(std::stoll(response.header("X-Ledger-Watermark")) == document["watermark"].GetInt64());
    if (i % 2 == 0) {
      if (document["credits_posted"].GetInt64() != 3 * i) ++stale;
    } else {
      const auto& entries = document["entries"];
      if (entries.Size() != 1 || entries[0]["amount"].GetInt64() != 3 ||
          entries[0]["balance_after"].GetInt64() != 3 * i) {
        ++stale;
      }
    }
  }
  CHECK(stale == 0);
}

TEST_CASE("statements page by cursor and the audit log searches by actor, stream, type and time") {
  Stack stack;
  auto client = stack.server.client();
  post(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  post(client, "/v1/accounts", R"({"id":"bob","currency":"EUR"})");
  std::int64_t last = 0;
  for (int i = 1; i <= 7; ++i) last = post(client, "/v1/accounts/alice/deposits", "{\"amount\":" + std::to_string(i * 100) + "}");
  last = post(client, "/v1/transfers", R"({"from":"alice","to":"bob","amount":250,"currency":"EUR"})");

  // Walk alice's statement two entries at a time.
  std::vector<std::int64_t> balances;
  std::string cursor;
  for (int page = 0; page < 10; ++page) {
    const auto response = client.request(
        "GET", "/v1/accounts/alice/entries?limit=2&wait_ms=10000&min_position=" + std::to_string(last) + cursor, "",
        teller);
    REQUIRE(response.status == 200);
    const auto document = parse(response.body);
    for (const auto& entry : document["entries"].GetArray()) balances.push_back(entry["balance_after"].GetInt64());
    if (document["next_cursor"].IsNull()) break;
    cursor = std::string("&cursor=") + document["next_cursor"].GetString();
  }
  CHECK(balances == std::vector<std::int64_t>{100, 300, 600, 1000, 1500, 2100, 2800, 2550});

  const auto account = parse(client.request("GET", "/v1/accounts/alice", "", teller).body);
  CHECK(account["balance"].GetInt64() == 2550);
  CHECK(account["available"].GetInt64() == 2550);
  CHECK(account["status"].GetString() == std::string("open"));

  // Just started projectors may need seconds to join their consumer groups on a busy machine.
  const std::string wait = "&wait_ms=10000&min_position=" + std::to_string(last);
  auto audit = [&](const std::string& query) {
    const auto response = client.request("GET", "/v1/audit?limit=1000" + wait + query, "", auditor);
    REQUIRE_MESSAGE(response.status == 200, query << " -> " << response.body);
    return parse(response.body);
  };
  CHECK(audit("")["events"].Size() == static_cast<unsigned>(last));
  CHECK(audit("&actor=tester")["events"].Size() == static_cast<unsigned>(last));
  CHECK(audit("&actor=nobody")["events"].Size() == 0);
  CHECK(audit("&stream=account-bob")["events"].Size() == 2);  // opened, one entry
  CHECK(audit("&type=account_opened")["events"].Size() == 3);  // alice, bob, the cash account
  CHECK(audit("&from=2000-01-01T00:00:00Z&to=2999-01-01T00:00:00%2B02:00")["events"].Size() ==
        static_cast<unsigned>(last));
  CHECK(audit("&to=2000-01-01T00:00:00Z")["events"].Size() == 0);
  const auto first_page = audit("&stream=account-alice");
  CHECK(first_page["events"][0]["type"].GetString() == std::string("account_opened"));
  CHECK(first_page["events"][1]["data"]["amount"].GetInt64() == 100);
}

TEST_CASE("a read model that does not reach min_position in time answers 504 with its watermark") {
  Stack stack(/*with_projectors=*/false);
  auto client = stack.server.client();
  const std::int64_t position = post(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  const auto started = std::chrono::steady_clock::now();
  const auto response = client.request(
      "GET", "/v1/accounts/alice?wait_ms=200&min_position=" + std::to_string(position), "", teller);
  const auto waited = std::chrono::steady_clock::now() - started;
  CHECK(response.status == 504);
  CHECK(parse(response.body)["code"].GetString() == std::string("read_model_behind"));
  CHECK(response.header("X-Ledger-Watermark") == "0");
  CHECK(waited >= std::chrono::milliseconds(200));
  CHECK(waited < std::chrono::seconds(3));
  // Without min_position the query answers at once from what the read model holds.
  CHECK(client.request("GET", "/v1/accounts/alice", "", teller).status == 404);
}

TEST_CASE("bad query parameters, ids and roles get a clear error") {
  Stack stack;
  auto client = stack.server.client();
  post(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  struct Case {
    std::string target;
    int status;
    std::string code;
  };
  const std::vector<Case> cases = {
      {"/v1/accounts/alice?min_position=-1", 400, "invalid_query"},
      {"/v1/accounts/alice?min_position=ten", 400, "invalid_query"},
      {"/v1/accounts/alice?min_position=99999999999999999999", 400, "invalid_query"},
      {"/v1/accounts/alice?wait_ms=10001", 400, "invalid_query"},
      {"/v1/accounts/alice?limit=5", 400, "invalid_query"},  // accounts do not page
      {"/v1/accounts/alice?colour=blue", 400, "invalid_query"},
      {"/v1/accounts/alice/entries?limit=0", 400, "invalid_query"},
      {"/v1/accounts/alice/entries?limit=1001", 400, "invalid_query"},
      {"/v1/accounts/alice/entries?cursor=abc", 400, "invalid_query"},
      {"/v1/accounts/al%01ice", 400, "invalid_id"},
      {"/v1/accounts/" + std::string(65, 'a'), 400, "invalid_id"},
      {"/v1/accounts/nobody", 404, "unknown_account"},
      {"/v1/accounts/nobody/entries", 404, "unknown_account"},
      {"/v1/audit?from=yesterday", 400, "invalid_query"},
      {"/v1/audit?to=2026-13-01T00:00:00Z", 400, "invalid_query"},
      {"/v1/audit?actor=", 400, "invalid_query"},
  };
  const auto admin = ServerFixture::auth({"admin"});
  // Let the projectors catch up so 404s are about the account, not lag.
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(stack.database.app_url()); }));
  for (const auto& c : cases) {
    const auto response = client.request("GET", c.target, "", admin);
    CHECK_MESSAGE(response.status == c.status, c.target << " -> " << response.body);
    CHECK_MESSAGE(parse(response.body)["code"].GetString() == c.code, c.target);
    CHECK(response.header("Content-Type") == "application/problem+json");
  }
  CHECK(client.request("GET", "/v1/audit", "", teller).status == 403);
  CHECK(client.request("GET", "/v1/audit", "", auditor).status == 200);
  CHECK(client.request("GET", "/v1/accounts/alice", "", {}).status == 401);
  CHECK(client.request("GET", "/v1/accounts/alice", "", auditor).status == 200);
  CHECK(client.request("POST", "/v1/accounts/alice/entries", "{}", teller).status == 405);
  CHECK(test::store_head(stack.database.app_url()) == 1);  // queries wrote nothing
}

TEST_CASE("health says degraded with the relay lag while Kafka is down, and healthy once it is back") {
  Stack stack;
  auto client = stack.server.client();
  post(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  auto health = [&] { return parse(client.request("GET", "/health", "", {}).body); };
  REQUIRE(test::eventually([&] { return health()["status"].GetString() == std::string("healthy"); }, 30s));

  stack.kafka.set_down(true);
  for (int i = 0; i < 20; ++i) post(client, "/v1/accounts/alice/deposits", R"({"amount":5})");  // still accepted
  REQUIRE(test::eventually([&] { return health()["status"].GetString() == std::string("degraded"); }, 30s));
  const auto down = health();
  CHECK(down["components"]["kafka"]["status"].GetString() == std::string("down"));
  CHECK(down["components"]["relay"]["lag_events"].GetInt64() > 0);
  CHECK(client.request("GET", "/health/ready", "", {}).status == 200);  // commands are still taken

  stack.kafka.set_down(false);
  // Kafka counts as up as soon as it answers; the relay's backlog drains right after.
  REQUIRE(test::eventually([&] {
    const auto h = health();
    return h["status"].GetString() == std::string("healthy") && h["components"]["relay"]["lag_events"].GetInt64() == 0;
  }, 60s));
}

TEST_CASE(
    "a position missing from the event store shows in /health and /metrics while the relay waits "
    "at it") {
  test::TestDatabase database;
  test::MockKafka kafka;
  auto pool = test::make_pool(database.app_url());
  // The relay starts once the store has its hole; the server asks for it from the start.
  std::unique_ptr<relay::Relay> relay;
  std::atomic<relay::Relay*> started{nullptr};
  ServerFixture server(database.app_url(), {}, nullptr, [&] {
    const relay::Relay* running = started.load();
    return running == nullptr ? api::RelayHealth{} : relay_health_of(*running, database.app_url());
  });
  auto client = server.client();
  post(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  for (int i = 0; i < 6; ++i) post(client, "/v1/accounts/alice/deposits", R"({"amount":5})");
  const std::int64_t head = test::store_head(database.app_url());
  const std::int64_t missing = head / 2;
  REQUIRE(missing > 1);
  // A damaged store: one event taken out (past the store's own triggers), kept aside.
  const auto as_superuser = [&](const std::string& sql) {
    pqxx::connection connection(test::TestCluster::instance().superuser_url(database.name()));
    pqxx::work work(connection);
    work.exec("SET session_replication_role = replica");
    work.exec(sql);
    work.commit();
  };
  as_superuser(
      "CREATE TABLE taken_out AS SELECT * FROM events WHERE position = " + std::to_string(missing) +
      "; DELETE FROM events WHERE position = " + std::to_string(missing));
  relay = std::make_unique<relay::Relay>(test::relay_settings(kafka), pool);
  relay->start();
  started = relay.get();

  const auto health = [&] { return parse(client.request("GET", "/health", "", {}).body); };
  const auto metrics = [&] { return client.request("GET", "/metrics", "", {}).body; };
  const std::string missing_metric =
      "ledger_relay_missing_position " + std::to_string(missing) + "\n";
  // Everything before the hole acknowledged (the relay finds the hole as it hands over what
  // precedes it; Kafka acknowledges that a little later).
  REQUIRE(test::eventually(
      [&] {
        const auto h = health();
        return h["components"]["relay"]["status"].GetString() == std::string("stalled") &&
               h["components"]["relay"]["acknowledged_position"].GetInt64() == missing - 1;
      },
      30s));
  const auto stalled = health();
  CHECK(stalled["status"].GetString() == std::string("degraded"));
  CHECK(stalled["components"]["relay"]["missing_position"].GetInt64() == missing);
  CHECK(stalled["components"]["relay"]["acknowledged_position"].GetInt64() == missing - 1);
  CHECK(stalled["components"]["kafka"]["status"].GetString() ==
        std::string("up"));  // not Kafka's doing
  CHECK(metrics().find(missing_metric) != std::string::npos);
  CHECK(client.request("GET", "/health/ready", "", {}).status == 200);  // commands are still taken
  post(client, "/v1/accounts/alice/deposits", R"({"amount":5})");

  as_superuser("INSERT INTO events SELECT * FROM taken_out; DROP TABLE taken_out");
  REQUIRE(test::eventually(
      [&] {
        const auto h = health();
        return h["status"].GetString() == std::string("healthy") &&
               h["components"]["relay"]["status"].GetString() == std::string("up") &&
               h["components"]["relay"]["lag_events"].GetInt64() == 0;
      },
      30s));
  CHECK(!health()["components"]["relay"].HasMember("missing_position"));
  CHECK(metrics().find("ledger_relay_missing_position 0\n") != std::string::npos);
}

TEST_CASE("the loan read model over HTTP follows each step and equals the fold of the loan's events") {
  Stack stack;
  auto client = stack.server.client();
  const auto admin = ServerFixture::auth({"admin"});
  auto fold_pool = test::make_pool(stack.database.app_url(), 2);
  const engine::EventStore store(fold_pool);
  // The read model equals the fold of the loan's events, field by field, and the books of
  // every currency sum to zero (double entry, checked by replay verify).
  auto same_as_fold = [&](const std::string& loan_id) {
    const auto head = test::store_head(stack.database.app_url());
    REQUIRE(test::eventually([&] { return test::watermark(stack.database.app_url(), "loan") == head; }));
    domain::LoanState folded;
    for (const auto& event : store.read_stream("loan-" + loan_id, StreamVersion(1), 1'000)) {
      domain::apply(folded, *domain::decode_event(event.type, event.payload));
    }
    const auto view = stack.read_models.loan(loan_id).value;
    REQUIRE(view);
    CHECK(view->status == domain::to_string(folded.book.status));
    CHECK(view->interest_recognised == folded.book.interest_recognised);
    CHECK(view->days_past_due == folded.book.days_past_due);
    CHECK(view->principal_written_off == folded.book.principal_written_off);
    CHECK(view->interest_reversed == folded.book.interest_reversed);
    CHECK(view->version == folded.version.value());
    REQUIRE(view->installments.size() == folded.book.installments.size());
    for (std::size_t k = 0; k < folded.book.installments.size(); ++k) {
      const auto& expected = folded.book.installments[k];
      const auto& actual = view->installments[k];
      CHECK(actual.due_date == domain::to_string(expected.due_date));
      CHECK(actual.principal == expected.principal);
      CHECK(actual.interest == expected.interest);
      CHECK(actual.principal_paid == expected.principal_paid);
      CHECK(actual.interest_paid == expected.interest_paid);
      CHECK(actual.penalty == expected.penalty);
      CHECK(actual.penalty_paid == expected.penalty_paid);
      CHECK(actual.overdue == expected.overdue);
      CHECK(actual.interest_waived == expected.interest_waived);
    }
    const auto verified = replay::verify(fold_pool, {});
    REQUIRE_MESSAGE(verified.ok, verified.problem);
    for (const auto& [currency, totals] : verified.checkpoints.back().totals) CHECK(totals.posted == 0);
  };
  post(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  post(client, "/v1/accounts/alice/deposits", R"({"amount":50000})");
  post(client, "/v1/loans",
       R"({"id":"L1","account_id":"alice","currency":"EUR","principal":120000,"rate_bps":1200,"installments":12,)"
       R"("schedule":"annuity","origination_date":"2026-01-15","first_due_date":"2026-02-15","late_fee":500,"grace_days":5})");
  same_as_fold("L1");
  std::int64_t last = post(client, "/v1/loans/L1/disburse", "");
  same_as_fold("L1");
  auto get = [&](const std::string& target) {
    const auto response = client.request("GET", target + "?wait_ms=10000&min_position=" + std::to_string(last), "", teller);
    REQUIRE_MESSAGE(response.status == 200, target << " -> " << response.body);
    return parse(response.body);
  };
  auto loan = get("/v1/loans/L1");
  CHECK(loan["status"].GetString() == std::string("active"));
  CHECK(loan["outstanding_principal"].GetInt64() == 120000);
  CHECK(loan["next_due_date"].GetString() == std::string("2026-02-15"));
  const std::int64_t first_installment = loan["next_due_amount"].GetInt64();
  CHECK(first_installment == 10662);  // round(120,000 · 0.01 / (1 − 1.01^−12))

  const auto cob = client.request("POST", "/v1/loans/close-of-business", R"({"date":"2026-02-22"})", admin);
  REQUIRE_MESSAGE(cob.status == 200, cob.body);
  last = test::store_head(stack.database.app_url());
  same_as_fold("L1");
  loan = get("/v1/loans/L1");
  CHECK(loan["days_past_due"].GetInt64() == 7);
  CHECK(loan["penalties_due"].GetInt64() == 500);
  CHECK(loan["interest_accrued"].GetInt64() > 1200);
  CHECK(loan["interest_overdue"].GetInt64() == 1200);
  CHECK(loan["next_due_amount"].GetInt64() == first_installment + 500);
  auto schedule = get("/v1/loans/L1/schedule");
  REQUIRE(schedule["installments"].Size() == 12);
  CHECK(schedule["installments"][0]["status"].GetString() == std::string("overdue"));
  CHECK(schedule["installments"][1]["status"].GetString() == std::string("pending"));

  last = post(client, "/v1/loans/L1/repayments", "{\"amount\":" + std::to_string(first_installment + 500) + "}");
  same_as_fold("L1");
  loan = get("/v1/loans/L1");
  CHECK(loan["days_past_due"].GetInt64() == 0);
  CHECK(loan["penalties_paid"].GetInt64() == 500);
  CHECK(loan["interest_paid"].GetInt64() == 1200);
  schedule = get("/v1/loans/L1/schedule");
  CHECK(schedule["installments"][0]["status"].GetString() == std::string("paid"));
  const auto loans = get("/v1/accounts/alice/loans");
  REQUIRE(loans["loans"].Size() == 1);
  CHECK(loans["loans"][0]["id"].GetString() == std::string("L1"));
  CHECK(client.request("GET", "/v1/loans/nope", "", teller).status == 404);
  CHECK(client.request("GET", "/v1/accounts/nobody/loans", "", teller).status == 404);

  // Prepayment beyond what is due shortens the term; then the rest is written off.
  last = post(client, "/v1/loans/L1/repayments", R"({"amount":20000})");
  same_as_fold("L1");
  schedule = get("/v1/loans/L1/schedule");
  CHECK(schedule["installments"][11]["interest_waived"].GetBool());
  last = post(client, "/v1/loans/L1/write-off", "");
  same_as_fold("L1");
  loan = get("/v1/loans/L1");
  CHECK(loan["status"].GetString() == std::string("written_off"));
  CHECK(loan["outstanding_principal"].GetInt64() == 0);
  CHECK(loan["principal_written_off"].GetInt64() > 0);

  // Repaid on time, to the end: a second loan of three installments.
  post(client, "/v1/loans",
       R"({"id":"L2","account_id":"alice","currency":"EUR","principal":3000,"rate_bps":0,"installments":3,)"
       R"("schedule":"equal_principal","origination_date":"2026-01-15","first_due_date":"2026-02-15"})");
  post(client, "/v1/loans/L2/disburse", "");
  for (const char* due : {"2026-02-15", "2026-03-15", "2026-04-15"}) {
    const auto closed = client.request("POST", "/v1/loans/close-of-business", std::string(R"({"date":")") + due + "\"}", admin);
    REQUIRE(closed.status == 200);
    last = post(client, "/v1/loans/L2/repayments", R"({"amount":1000})");
    same_as_fold("L2");
  }
  CHECK(get("/v1/loans/L2")["status"].GetString() == std::string("repaid"));
}

TEST_CASE("an event the projectors cannot decode stalls them visibly: health, metrics and one log line") {
  CapturedLog log;
  Stack stack;
  auto client = stack.server.client();
  post(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  auto health = [&] { return parse(client.request("GET", "/health", "", {}).body); };
  REQUIRE(test::eventually([&] { return health()["status"].GetString() == std::string("healthy"); }, 30s));

  // An account event whose payload is not a FlatBuffers Event: balance and audit decode it.
  const std::int64_t bad = test::append_raw_event(stack.database.admin_url(), "account-mallory",
                                                  "account_opened", "not a flatbuffer");
  post(client, "/v1/accounts/alice/deposits", R"({"amount":5})");  // behind it, not applied
  REQUIRE(test::eventually([&] {
    const auto h = health();
    return h["status"].GetString() == std::string("degraded") &&
           h["components"]["projections"]["audit"].HasMember("stalled_position") &&
           h["components"]["projections"]["balance"].HasMember("stalled_position");
  }, 30s));
  const auto stalled = health();
  const auto& projections = stalled["components"]["projections"];
  CHECK(projections["status"].GetString() == std::string("stalled"));
  for (const char* name : {"audit", "balance"}) {
    CAPTURE(name);
    CHECK(projections[name]["status"].GetString() == std::string("stalled"));
    CHECK(projections[name]["stalled_position"].GetInt64() == bad);
    CHECK(projections[name]["watermark"].GetInt64() == bad - 1);
    CHECK(std::string(projections[name]["stalled_reason"].GetString()).find("undecodable") != std::string::npos);
  }
  CHECK(projections["loan"]["status"].GetString() == std::string("up"));  // no loan stream: it moves on

  const auto metrics = client.request("GET", "/metrics", "", {}).body;
  CHECK(metrics.find("ledger_projection_stalled{projection=\"audit\"} 1") != std::string::npos);
  CHECK(metrics.find("ledger_projection_stalled{projection=\"balance\"} 1") != std::string::npos);
  CHECK(metrics.find("ledger_projection_stalled{projection=\"loan\"} 0") != std::string::npos);
  CHECK(metrics.find("ledger_projection_stalled_position{projection=\"audit\"} " + std::to_string(bad)) !=
        std::string::npos);

  // It keeps retrying (a fixed version may apply it), but logs the stall once.
  for (const auto& projector : stack.projectors) {
    if (projector->status().stalled_position.value() == 0) continue;
    const auto retried = projector->status().stalled_retries;
    REQUIRE(test::eventually([&] { return projector->status().stalled_retries >= retried + 2; }, 30s));
  }
  CHECK(log.count("projector audit: stalled at position " + std::to_string(bad)) == 1);
  CHECK(log.count("projector balance: stalled at position " + std::to_string(bad)) == 1);
}

TEST_CASE(
    "a balance round whose upsert is refused after its fold stalls at the position itself, and "
    "the balances it folded are neither kept nor counted twice") {
  // The balance projector keeps the accounts it folded between rounds (projections/README.md,
  // "Kept balances"). Here a round folds alice's and dave's deposits in memory, then the
  // database refuses the balances' upsert: what it folded must be forgotten, or the round run
  // again position by position would add alice's deposits a second time (or fail on her
  // versions instead of stalling at dave's deposit).
  CapturedLog log;
  Stack stack;
  auto client = stack.server.client();
  const auto& url = stack.database.app_url();
  post(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  const std::int64_t dave_opened = post(client, "/v1/accounts", R"({"id":"dave","currency":"EUR"})");
  REQUIRE(test::eventually([&] { return test::watermark(url, "balance") >= dave_opened; }, 30s));
  refuse_rows(stack.database.admin_url(), "refuse_dave_credit", "read.balances",
              "BEFORE INSERT OR UPDATE", "NEW.account_id = 'dave' AND NEW.credits_posted > 0",
              "a credit of dave");
  const std::int64_t deposit = deposit_around_dave(client);
  auto health = [&] { return parse(client.request("GET", "/health", "", {}).body); };
  REQUIRE(test::eventually(
      [&] { return health()["components"]["projections"]["balance"].HasMember("stalled_position"); },
      30s));
  const auto stalled_health = health();
  const auto& balance = stalled_health["components"]["projections"]["balance"];
  const std::int64_t stalled = balance["stalled_position"].GetInt64();
  CHECK(stalled <= deposit);
  CHECK(stalled > dave_opened);
  CHECK(std::string(balance["stalled_reason"].GetString()).find("refuse_dave_credit") !=
        std::string::npos);
  CHECK(test::watermark(url, "balance") == stalled - 1);  // everything before it applied
  // alice's three deposits before dave's, each counted once.
  CHECK(test::scalar(url, "SELECT credits_posted FROM read.balances WHERE account_id = 'alice'") ==
        15);
  CHECK(test::scalar(url, "SELECT credits_posted FROM read.balances WHERE account_id = 'dave'") ==
        0);
  drop_refusal(stack.database.admin_url(), "refuse_dave_credit", "read.balances");
  REQUIRE(test::eventually(
      [&] { return !health()["components"]["projections"]["balance"].HasMember("stalled_position"); },
      60s));
  REQUIRE(test::eventually([&] { return test::read_models_caught_up(url); }, 30s));
  CHECK(test::scalar(url, "SELECT credits_posted FROM read.balances WHERE account_id = 'alice'") ==
        30);
  CHECK(test::scalar(url, "SELECT credits_posted FROM read.balances WHERE account_id = 'dave'") ==
        777);
  test::check_read_models_equal_fold(url);
  CHECK(log.count("projector balance: stalled at position " + std::to_string(stalled)) == 1);
}

TEST_CASE("a stalled projection that can apply its position again moves on and clears the stall") {
  CapturedLog log;
  Stack stack;
  auto client = stack.server.client();
  post(client, "/v1/accounts", R"({"id":"alice","currency":"EUR"})");
  auto health = [&] { return parse(client.request("GET", "/health", "", {}).body); };
  REQUIRE(test::eventually([&] { return health()["status"].GetString() == std::string("healthy"); }, 30s));

  const std::int64_t dave_opened = post(client, "/v1/accounts", R"({"id":"dave","currency":"EUR"})");
  // The refusal below names dave's stream: his opening must be applied first, or it is the
  // opening that stalls, before the balance model got anywhere.
  REQUIRE(test::eventually([&] {
    return test::watermark(stack.database.app_url(), "audit") >= dave_opened &&
           test::watermark(stack.database.app_url(), "balance") >= dave_opened;
  }, 30s));
  // The audit table refuses the entry of one deposit (a read model the code cannot write, until
  // an operator fixes it): the projector finds which position within its batch. (The audit
  // row holds neither the amount nor, since migration 0015, the stream: a trigger looks the
  // row's stream up in the store and refuses dave's.)
  refuse_rows(stack.database.admin_url(), "refuse_777", "read.audit", "BEFORE INSERT",
              "(SELECT stream_id FROM events WHERE position = NEW.position) = 'account-dave'",
              "an entry of account-dave");
  const std::int64_t deposit = deposit_around_dave(client);
  REQUIRE(test::eventually([&] {
    return health()["components"]["projections"]["audit"].HasMember("stalled_position");
  }, 30s));
  const auto stalled = health()["components"]["projections"]["audit"]["stalled_position"].GetInt64();
  CHECK(stalled <= deposit);
  CHECK(test::watermark(stack.database.app_url(), "audit") == stalled - 1);  // everything before it applied
  // The balance model is not held back by the audit model's stall.
  CHECK(test::eventually([&] {
    return test::watermark(stack.database.app_url(), "balance") == test::store_head(stack.database.app_url());
  }, 30s));

  drop_refusal(stack.database.admin_url(), "refuse_777", "read.audit");
  REQUIRE(test::eventually([&] {
    const auto h = health();
    return h["status"].GetString() == std::string("healthy") &&
           !h["components"]["projections"]["audit"].HasMember("stalled_position");
  }, 60s));
  CHECK(test::eventually([&] { return test::read_models_caught_up(stack.database.app_url()); }, 30s));
  CHECK(client.request("GET", "/metrics", "", {}).body.find("ledger_projection_stalled{projection=\"audit\"} 0") !=
        std::string::npos);
  CHECK(log.count("projector audit: stalled at position " + std::to_string(stalled)) == 1);
  CHECK(log.count("projector audit: moved past position " + std::to_string(stalled)) == 1);
}
