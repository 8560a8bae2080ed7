// Writes the seed corpora of the decoder targets from the project's own examples (the committed
// event fixtures, tests/domain/event_fixtures, the bytes v1 wrote), and those of http_front
// (every route, each role's token, chunked, pipelined, the limits, every fake engine answer) and
// round_trip (a valid body of each command type with a few made-up states). Run by
// tests/fuzz/make_corpus.py; usage: fuzz_seeds <event_fixtures dir> <corpus dir>.
#include <openssl/evp.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>
#include <chrono>

#include "event_types.hpp"
#include "http_front_input.hpp"
#include "ledger/api/auth.hpp"
#include "round_trip_input.hpp"
#include "ledger/domain/envelope.hpp"
#include "ledger/domain/events.hpp"
#include "ledger/engine/snapshot_store.hpp"

namespace domain = ledger::domain;
namespace engine = ledger::engine;
namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Named by the input's SHA-1, as libFuzzer names what it adds to a corpus.
void write_seed(const fs::path& directory, const std::string& bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha1(), nullptr);
  std::string name;
  for (unsigned i = 0; i < length; ++i) {
    char hex[3];
    std::snprintf(hex, sizeof hex, "%02x", digest[i]);
    name += hex;
  }
  fs::create_directories(directory);
  std::ofstream(directory / name, std::ios::binary) << bytes;
}

// A command route's path and a valid body (API.md), for both targets below.
struct CommandSeed {
  ledger::api::CommandRoute route;
  std::size_t path_id;  // index into round_trip::path_ids ("alice", "h-1", "L1", "bob", ...)
  std::string path;
  std::string body;
};

std::vector<CommandSeed> command_seeds() {
  using ledger::api::CommandRoute;
  const std::string loan =
      R"({"id":"L1","account_id":"alice","currency":"EUR","principal":100000,"rate_bps":500,)"
      R"("installments":12,"schedule":"annuity","first_due_date":"2027-01-15","origination_fee":100,)"
      R"("late_fee":50,"grace_days":5})";
  return {
      {CommandRoute::open_account, 0, "/v1/accounts", R"({"id":"alice","currency":"EUR","owner":"Alice"})"},
      {CommandRoute::open_account, 0, "/v1/accounts",
       R"({"id":"bob","currency":"EUR","kind":"customer","overdraft_limit":500,"ledger_code":7})"},
      {CommandRoute::deposit, 0, "/v1/accounts/alice/deposits", R"({"amount":1000,"reference":"cash","transfer_id":"d1"})"},
      {CommandRoute::withdrawal, 0, "/v1/accounts/alice/withdrawals", R"({"amount":100})"},
      {CommandRoute::transfer, 0, "/v1/transfers",
       R"({"id":"t1","from":"alice","to":"bob","amount":250,"currency":"EUR","reference":"rent"})"},
      {CommandRoute::hold, 1, "/v1/holds",
       R"({"id":"h-1","from":"alice","to":"bob","amount":300,"currency":"EUR","timeout_seconds":60})"},
      {CommandRoute::post_hold, 1, "/v1/holds/h-1/post", R"({"amount":200})"},
      {CommandRoute::post_hold, 1, "/v1/holds/h-1/post", ""},
      {CommandRoute::void_hold, 1, "/v1/holds/h-1/void", ""},
      {CommandRoute::freeze, 0, "/v1/accounts/alice/freeze", ""},
      {CommandRoute::unfreeze, 0, "/v1/accounts/alice/unfreeze", ""},
      {CommandRoute::close, 0, "/v1/accounts/alice/close", ""},
      {CommandRoute::batch, 0, "/v1/batch",
       R"({"commands":[{"type":"open_account","id":"a1","currency":"EUR","owner":"Ann"},)"
       R"({"type":"deposit","account_id":"a1","amount":500,"transfer_id":"d1"},)"
       R"({"type":"withdrawal","account_id":"a1","amount":100},)"
       R"({"type":"transfer","id":"t1","from":"a1","to":"bob","amount":50,"currency":"EUR"},)"
       R"({"type":"hold","id":"h1","from":"a1","to":"bob","amount":20,"currency":"EUR","timeout_seconds":60},)"
       R"({"type":"post_hold","id":"h1","amount":5},{"type":"void_hold","id":"h1"}]})"},
      {CommandRoute::originate_loan, 2, "/v1/loans", loan},
      {CommandRoute::disburse_loan, 2, "/v1/loans/L1/disburse", ""},
      {CommandRoute::repay_loan, 2, "/v1/loans/L1/repayments", R"({"amount":5000,"repayment_id":"r1"})"},
      {CommandRoute::write_off_loan, 2, "/v1/loans/L1/write-off", ""},
  };
}

std::string http_request(const std::string& method, const std::string& target, const std::string& token,
                         const std::string& body, const std::string& extra_headers = {}) {
  std::string request = method + " " + target + " HTTP/1.1\r\nHost: ledger\r\n";
  if (!token.empty()) request += "Authorization: Bearer " + token + "\r\n";
  request += extra_headers;
  if (!body.empty() || method == "POST") {
    request += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  return request + "\r\n" + body;
}

// The same request with its body sent in chunks (one extension on the first).
std::string chunked_request(const std::string& target, const std::string& token, const std::string& body) {
  std::string request = "POST " + target + " HTTP/1.1\r\nHost: ledger\r\nAuthorization: Bearer " + token +
                        "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::size_t half = body.size() / 2;
  char size[32];
  std::snprintf(size, sizeof size, "%zx;ext=1\r\n", half);
  request += size + body.substr(0, half) + "\r\n";
  std::snprintf(size, sizeof size, "%zx\r\n", body.size() - half);
  request += size + body.substr(half) + "\r\n0\r\n\r\n";
  return request;
}

int http_front_seeds(const fs::path& corpus) {
  namespace input = ledger::fuzz::http_front;
  const std::string secret(input::jwt_secret);
  const auto lifetime = std::chrono::hours(24 * 365 * 100);  // valid for every future run
  const std::string teller = ledger::api::issue_token(secret, "teller-1", {"teller"}, lifetime);
  const std::string auditor = ledger::api::issue_token(secret, "auditor-1", {"auditor"}, lifetime);
  const std::string admin = ledger::api::issue_token(secret, "admin-1", {"admin"}, lifetime);
  const std::string no_role = ledger::api::issue_token(secret, "nobody", {}, lifetime);
  const std::string expired = ledger::api::issue_token(secret, "late", {"teller"}, std::chrono::seconds(-60));
  const std::string foreign = ledger::api::issue_token(std::string(64, 'x'), "teller-1", {"teller"}, lifetime);
  int count = 0;
  // Byte 0: 0 the server's limits, whole reads, the fake engine's cycle at "accepted"; other
  // values vary the engine's answer (bits 3-7), the read size (bits 1-2) and the limits (bit 0).
  auto seed = [&](std::uint8_t flags, const std::string& bytes) {
    write_seed(corpus / "http_front", std::string(1, static_cast<char>(flags)) + bytes);
    ++count;
  };
  std::uint8_t answer = 0;
  for (const auto& command : command_seeds()) {
    const std::string request = http_request("POST", command.path, teller, command.body,
                                             "Idempotency-Key: key-" + std::to_string(count) + "\r\n");
    seed(0, request);
    seed(static_cast<std::uint8_t>(++answer << 3), request);  // another answer from the engine
    seed(static_cast<std::uint8_t>(2 << 1), request);        // one byte per read
    seed(0, http_request("POST", command.path, admin, command.body, "X-Request-Id: req-1\r\nX-Correlation-Id: c-1\r\n"));
    if (!command.body.empty()) seed(static_cast<std::uint8_t>(3 << 1), chunked_request(command.path, teller, command.body));
  }
  // Every rejection and failure the fake engine gives, on one deposit.
  const std::string deposit = http_request("POST", "/v1/accounts/alice/deposits", teller, R"({"amount":1})");
  for (int k = 0; k < 36; ++k) seed(static_cast<std::uint8_t>(k << 3), deposit);
  // Reads, health, metrics, and the roles: each token on each route.
  const std::string reads[] = {
      "/v1/accounts/alice", "/v1/accounts/alice/entries?limit=10&cursor=5", "/v1/audit?actor=teller-1&limit=5",
      "/v1/loans/L1", "/v1/loans/L1/schedule", "/v1/accounts/alice/loans",
      "/v1/accounts/alice/balance?as_of=2026-11-30T12:00:00Z", "/v1/accounts/alice/balance?at_position=3",
      "/v1/streams/account-alice/events?from_version=1&limit=10", "/health", "/health/live", "/health/ready",
      "/metrics", "/openapi.json", "/nowhere"};
  for (const auto& target : reads) {
    for (const auto* token : {&teller, &auditor, &admin, &no_role}) seed(0, http_request("GET", target, *token, ""));
  }
  seed(0, http_request("POST", "/v1/loans/close-of-business", admin, R"({"date":"2026-11-30"})"));
  seed(0, http_request("POST", "/v1/loans/close-of-business", teller, R"({"date":"2026-11-30"})"));
  // Authentication failures, wrong methods, bad headers, media types.
  seed(0, http_request("POST", "/v1/accounts", expired, R"({"currency":"EUR"})"));
  seed(0, http_request("POST", "/v1/accounts", foreign, R"({"currency":"EUR"})"));
  seed(0, http_request("POST", "/v1/accounts", no_role, R"({"currency":"EUR"})"));
  seed(0, http_request("POST", "/v1/accounts", "", R"({"currency":"EUR"})"));
  seed(0, http_request("DELETE", "/v1/accounts", teller, ""));
  seed(0, http_request("GET", "/v1/transfers", teller, ""));
  seed(0, http_request("POST", "/v1/accounts", teller, R"({"currency":"EUR"})",
                       "Idempotency-Key: a\r\nIdempotency-Key: b\r\n"));
  seed(0, http_request("POST", "/v1/accounts", teller, R"({"currency":"EUR"})", "X-Request-Id: has space\r\n"));
  // X-Forwarded-For chains (the standard router trusts the loopback peer): spoofed, IPv6 with
  // ports, two lines, malformed.
  seed(0, http_request("POST", "/v1/accounts", teller, R"({"currency":"EUR"})",
                       "X-Forwarded-For: 198.51.100.66, 203.0.113.9, 127.0.0.2\r\n"));
  seed(0, http_request("POST", "/v1/accounts", teller, R"({"currency":"EUR"})",
                       "X-Forwarded-For: [2001:db8::7]:4711\r\nX-Forwarded-For: ::ffff:127.0.0.9, 127.0.0.1:80\r\n"));
  seed(0, http_request("POST", "/v1/accounts", teller, R"({"currency":"EUR"})",
                       "X-Forwarded-For: 203.0.113.9,,unknown, [fe80::1%eth0]\r\n"));
  seed(0, "POST /v1/accounts HTTP/1.1\r\nAuthorization: Bearer " + teller +
              "\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi");
  // Pipelining: three requests in one input, the last closing the connection.
  seed(0, http_request("POST", "/v1/accounts", teller, R"({"id":"alice","currency":"EUR"})") +
              http_request("POST", "/v1/accounts/alice/deposits", teller, R"({"amount":10})") +
              http_request("GET", "/health/live", "", "", "Connection: close\r\n"));
  seed(static_cast<std::uint8_t>(5 << 3), chunked_request("/v1/transfers", teller, command_seeds()[4].body) +
                                              http_request("GET", "/metrics", "", ""));
  seed(0, "GET /health/live HTTP/1.0\r\n\r\nGET /health/live HTTP/1.1\r\n\r\n");
  // The limits: headers over 512 bytes, a body over 1024, long chunk extensions, bad chunks.
  seed(input::small_limits, http_request("GET", "/health/live", "", "", "X-Pad: " + std::string(600, 'p') + "\r\n"));
  seed(input::small_limits, http_request("POST", "/v1/accounts", teller, std::string(1100, ' ')));
  seed(input::small_limits, chunked_request("/v1/accounts", teller, "{\"currency\":\"EUR\"," + std::string(1100, ' ') + "}"));
  seed(0, "POST /v1/accounts HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
          "2;" + std::string(1100, 'e') + "\r\n{}\r\n0\r\n\r\n");
  seed(0, "POST /v1/accounts HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
  seed(0, "GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello");
  return count;
}

int round_trip_seeds(const fs::path& corpus) {
  int count = 0;
  for (const auto& command : command_seeds()) {
    std::string header(ledger::fuzz::round_trip::header_bytes, '\0');
    header[0] = static_cast<char>(command.route);
    header[1] = static_cast<char>(command.path_id);
    header[2] = static_cast<char>(command.body.size() & 0xff);
    header[3] = static_cast<char>(command.body.size() >> 8);
    // No state bytes: accounts exist, open, EUR, empty. Then a few made-up states: a loan
    // prelude (the last bytes set), a pending hold, funded accounts.
    write_seed(corpus / "round_trip", header + command.body);
    write_seed(corpus / "round_trip", header + command.body + std::string(48, '\x01'));
    write_seed(corpus / "round_trip", header + command.body + std::string(96, '\x55'));
    write_seed(corpus / "round_trip", header + command.body + std::string(64, '\xff'));
    count += 4;
  }
  return count;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: fuzz_seeds <event_fixtures dir> <corpus dir>\n");
    return 2;
  }
  const fs::path fixtures = argv[1];
  const fs::path corpus = argv[2];
  int count = 0;
  for (std::size_t index = 0; index + 1 < std::size(ledger::fuzz::event_types); ++index) {
    const std::string type(ledger::fuzz::event_types[index]);
    const std::string payload = read_file(fixtures / (type + ".v1.bin"));
    const auto event = domain::decode_event(type, payload);
    if (!event) {
      std::fprintf(stderr, "fuzz_seeds: fixture %s does not decode\n", type.c_str());
      return 1;
    }
    const std::string selector(1, static_cast<char>(index));
    write_seed(corpus / "event_decode", selector + payload);
    write_seed(corpus / "event_json", selector + domain::event_to_json(*event));

    domain::RecordedEvent recorded;
    recorded.position = ledger::GlobalPosition(static_cast<std::int64_t>(index) + 1);
    recorded.stream_id = "account-alice";
    recorded.version = ledger::StreamVersion(3);
    recorded.event_id = "00000000-0000-4000-8000-000000000001";
    recorded.type = type;
    recorded.payload = payload;
    recorded.metadata = {"teller-1", "cmd-1", "corr-1", "cause-1", "req-1", "127.0.0.1"};
    recorded.recorded_at_us = 1'800'000'000'000'000;
    recorded.hash = std::string(domain::event_hash_size, '\x5a');
    write_seed(corpus / "envelope", domain::encode_envelope(recorded));
    count += 3;
  }

  // Snapshots: byte 0 selects the stream id (0 account-alice, 1 transfer-t-1); bit 2 clear
  // means the target appends the checksum, so the seed is the value without its 8 bytes.
  domain::AccountState account;
  account.exists = true;
  account.id = "alice";
  account.currency = *ledger::Currency::parse("EUR");
  account.owner = "Alice Example";
  account.flags = 1;
  account.overdraft_limit = ledger::Amount(5'000);
  account.credits_posted = ledger::Amount(10'000);
  account.debits_posted = ledger::Amount(2'500);
  account.debits_pending = ledger::Amount(300);
  account.pending_count = 1;
  domain::TransferState transfer;
  transfer.exists = true;
  transfer.id = "t-1";
  transfer.debit_account = "alice";
  transfer.credit_account = "shop";
  transfer.amount = ledger::Amount(300);
  transfer.currency = *ledger::Currency::parse("EUR");
  transfer.reference = "card";
  transfer.status = domain::TransferStatus::pending;
  transfer.expires_at_us = 1'800'000'000'000'000;
  const std::pair<std::string, domain::StreamState> states[] = {
      {"account-alice", {account, ledger::StreamVersion(4), std::string(32, '\x11')}},
      {"transfer-t-1", {transfer, ledger::StreamVersion(1), std::string(32, '\x22')}}};
  char selector = 0;
  for (const auto& [stream_id, state] : states) {
    const std::string value = engine::SnapshotStore::encode(stream_id, state);
    write_seed(corpus / "snapshot", std::string(1, selector) + value.substr(0, value.size() - 8));
    write_seed(corpus / "snapshot", std::string(1, static_cast<char>(selector | 2)) + value);
    ++selector;
    count += 2;
  }
  count += http_front_seeds(corpus);
  count += round_trip_seeds(corpus);
  std::printf("fuzz_seeds: wrote %d seeds under %s\n", count, corpus.c_str());
  return 0;
}
