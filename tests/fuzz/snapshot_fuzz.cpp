// The RocksDB snapshot value decoder (SnapshotStore::decode). Input: byte 0 picks the stream
// id (bit 0 account or transfer, bit 2 a loan instead) and whether the target appends the value's checksum itself (so the fuzzer reaches the
// FlatBuffers verifier and the field decoding behind the SHA-256 check), the rest is the value.
// Properties: a decoded snapshot is an account, a transfer or a loan at a positive version; it
// re-encodes to a value that decodes to the same state and re-encodes byte for byte; a value
// decoded under one stream id is refused under another.
#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "fuzz_support.hpp"
#include "ledger/engine/snapshot_store.hpp"

namespace domain = ledger::domain;
namespace engine = ledger::engine;
using ledger::fuzz::require;

namespace {

constexpr std::string_view stream_ids[] = {"account-alice", "transfer-t-1", "loan-l-1"};

std::string with_checksum(std::string body) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(body.data(), body.size(), digest, &length, EVP_sha256(), nullptr);
  body.append(reinterpret_cast<const char*>(digest), 8);  // snapshot_store.cpp checksum_size
  return body;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t picked = (data[0] & 4) != 0 ? 2 : (data[0] & 1);
  const std::string stream_id(stream_ids[picked]);
  std::string value(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((data[0] & 2) == 0) value = with_checksum(std::move(value));

  const auto decoded = engine::SnapshotStore::decode(stream_id, value);
  if (!decoded) return 0;
  require(decoded->version.value() > 0, "decoded a snapshot at version <= 0");
  require(std::holds_alternative<domain::AccountState>(decoded->aggregate) ||
              std::holds_alternative<domain::TransferState>(decoded->aggregate) ||
              std::holds_alternative<domain::LoanState>(decoded->aggregate),
          "decoded a snapshot that is neither an account, a transfer nor a loan");
  const std::string other(stream_ids[(picked + 1) % 3]);
  require(!engine::SnapshotStore::decode(other, value).has_value(),
          "a snapshot decodes under another stream id");

  const std::string bytes = engine::SnapshotStore::encode(stream_id, *decoded);
  const auto again = engine::SnapshotStore::decode(stream_id, bytes);
  require(again.has_value(), "a decoded snapshot re-encodes to a value that does not decode");
  require(again->version == decoded->version && again->last_hash == decoded->last_hash,
          "version or hash changed in the round trip");
  require(engine::SnapshotStore::encode(stream_id, *again) == bytes,
          "encode/decode/encode is not byte for byte");
  return 0;
}
