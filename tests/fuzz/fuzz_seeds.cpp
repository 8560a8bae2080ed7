// Writes the seed corpora of the decoder targets from the project's own examples: the committed
// event fixtures (tests/engine/event_fixtures, the bytes v1 wrote). Run by
// tests/fuzz/make_corpus.py; usage: fuzz_seeds <event_fixtures dir> <corpus dir>.
#include <openssl/evp.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

#include "event_types.hpp"
#include "ledger/engine/envelope.hpp"
#include "ledger/engine/events.hpp"
#include "ledger/engine/snapshot_store.hpp"

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
    const auto event = engine::decode_event(type, payload);
    if (!event) {
      std::fprintf(stderr, "fuzz_seeds: fixture %s does not decode\n", type.c_str());
      return 1;
    }
    const std::string selector(1, static_cast<char>(index));
    write_seed(corpus / "event_decode", selector + payload);
    write_seed(corpus / "event_json", selector + engine::event_to_json(*event));

    engine::RecordedEvent recorded;
    recorded.position = ledger::GlobalPosition(static_cast<std::int64_t>(index) + 1);
    recorded.stream_id = "account-alice";
    recorded.version = ledger::StreamVersion(3);
    recorded.event_id = "00000000-0000-4000-8000-000000000001";
    recorded.type = type;
    recorded.payload = payload;
    recorded.metadata = {"teller-1", "cmd-1", "corr-1", "cause-1", "req-1", "127.0.0.1"};
    recorded.recorded_at_us = 1'800'000'000'000'000;
    recorded.hash = std::string(engine::event_hash_size, '\x5a');
    write_seed(corpus / "envelope", engine::encode_envelope(recorded));
    count += 3;
  }

  // Snapshots: byte 0 selects the stream id (0 account-alice, 1 transfer-t-1); bit 2 clear
  // means the target appends the checksum, so the seed is the value without its 8 bytes.
  engine::AccountState account;
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
  engine::TransferState transfer;
  transfer.exists = true;
  transfer.id = "t-1";
  transfer.debit_account = "alice";
  transfer.credit_account = "shop";
  transfer.amount = ledger::Amount(300);
  transfer.currency = *ledger::Currency::parse("EUR");
  transfer.reference = "card";
  transfer.status = engine::TransferStatus::pending;
  transfer.expires_at_us = 1'800'000'000'000'000;
  const std::pair<std::string, engine::StreamState> states[] = {
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
  std::printf("fuzz_seeds: wrote %d seeds under %s\n", count, corpus.c_str());
  return 0;
}
