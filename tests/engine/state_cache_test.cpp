// The writer's state cache keeps what is read again: accounts, loans and pending holds stay
// in the LRU however many transfers settle, while settled (posted, voided, expired) transfer
// streams take a small bounded share, oldest out first; lookups are counted per stream kind.
#include <doctest/doctest.h>

#include <string>

#include "ledger/engine/engine.hpp"
#include "state_cache.hpp"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;

namespace {

StreamState account(const std::string& id) {
  AccountState state;
  state.exists = true;
  state.id = id;
  state.version = StreamVersion(1);
  return {state, StreamVersion(1), std::string(32, 'a')};
}

StreamState transfer(const std::string& id, TransferStatus status) {
  TransferState state;
  state.exists = true;
  state.id = id;
  state.status = status;
  state.version = StreamVersion(1);
  return {state, StreamVersion(1), std::string(32, 't')};
}

StateCacheLookups lookups(const StateCache& cache, StateCacheKind kind) {
  return cache.counts().breakdown.lookups.at(static_cast<std::size_t>(kind));
}

}  // namespace

TEST_CASE("settled transfers do not push the accounts out of the cache") {
  StateCache cache(64);
  for (int a = 0; a < 40; ++a) cache.put("account-a" + std::to_string(a), account("a" + std::to_string(a)));
  for (int t = 0; t < 10'000; ++t) {
    cache.put("transfer-t" + std::to_string(t), transfer("t" + std::to_string(t), TransferStatus::posted));
  }
  for (int a = 0; a < 40; ++a) CHECK(cache.find("account-a" + std::to_string(a)) != nullptr);
  CHECK(lookups(cache, StateCacheKind::account).hits == 40);
  CHECK(lookups(cache, StateCacheKind::account).misses == 0);
  // Settled transfers hold at most their share (an eighth), the newest ones.
  CHECK(cache.counts().breakdown.settled_transfer_streams == 64 / 8);
  CHECK(cache.size() == 40 + 64 / 8);
  CHECK(cache.find("transfer-t9999") != nullptr);
  CHECK(cache.find("transfer-t0") == nullptr);
  CHECK(lookups(cache, StateCacheKind::transfer).hits == 1);
  CHECK(lookups(cache, StateCacheKind::transfer).misses == 1);
  CHECK(cache.size() <= 64);
}

TEST_CASE("a pending hold stays in the LRU; once it settles its cached state is the settled one") {
  StateCache cache(16);
  cache.put("transfer-h1", transfer("h1", TransferStatus::pending));
  for (int t = 0; t < 1'000; ++t) {
    cache.put("transfer-t" + std::to_string(t), transfer("t" + std::to_string(t), TransferStatus::voided));
  }
  const StreamState* hold = cache.find("transfer-h1");
  REQUIRE(hold != nullptr);
  CHECK(std::get<TransferState>(hold->aggregate).status == TransferStatus::pending);
  CHECK(cache.counts().breakdown.settled_transfer_streams == 2);

  // Posted: it moves to the settled share, and no stale pending state is left behind.
  cache.put("transfer-h1", transfer("h1", TransferStatus::pending_posted));
  CHECK(cache.size() == 2);
  hold = cache.find("transfer-h1");
  REQUIRE(hold != nullptr);
  CHECK(std::get<TransferState>(hold->aggregate).status == TransferStatus::pending_posted);
  for (int t = 1'000; t < 1'010; ++t) {
    cache.put("transfer-t" + std::to_string(t), transfer("t" + std::to_string(t), TransferStatus::expired));
  }
  CHECK(cache.find("transfer-h1") == nullptr);
  CHECK(cache.size() == 2);
}

TEST_CASE("erase and clear drop settled transfers as well as the rest") {
  StateCache cache(16);
  cache.put("account-a", account("a"));
  cache.put("transfer-t1", transfer("t1", TransferStatus::posted));
  cache.put("transfer-t2", transfer("t2", TransferStatus::posted));
  cache.erase("transfer-t1");
  CHECK(cache.find("transfer-t1") == nullptr);
  CHECK(cache.find("transfer-t2") != nullptr);
  CHECK(cache.size() == 2);
  CHECK(cache.counts().streams == 2);
  cache.clear();
  CHECK(cache.size() == 0);
  CHECK(cache.find("account-a") == nullptr);
  CHECK(cache.find("transfer-t2") == nullptr);
  CHECK(cache.counts().breakdown.settled_transfer_streams == 0);
}

TEST_CASE("the accounts' LRU still evicts the least recently used beyond the bound") {
  StateCache cache(8);
  for (int a = 0; a < 8; ++a) cache.put("account-a" + std::to_string(a), account("a" + std::to_string(a)));
  CHECK(cache.find("account-a0") != nullptr);  // a0 is now the most recent
  cache.put("account-a8", account("a8"));
  CHECK(cache.size() == 8);
  CHECK(cache.find("account-a1") == nullptr);
  CHECK(cache.find("account-a0") != nullptr);
  // A settled transfer takes its share (8 / 8 = 1) from the accounts' room: the total stays bounded.
  cache.put("transfer-t1", transfer("t1", TransferStatus::posted));
  CHECK(cache.size() == 8);
  CHECK(cache.find("transfer-t1") != nullptr);
}

TEST_CASE("lookups are counted per stream kind; the totals are their sums") {
  StateCache cache(16);
  cache.put("loan-l1", StreamState{});
  CHECK(cache.find("loan-l1") != nullptr);
  CHECK(cache.find("loan-l2") == nullptr);
  CHECK(cache.find("account-x") == nullptr);
  CHECK(cache.find("odd-stream") == nullptr);
  const auto counts = cache.counts();
  CHECK(lookups(cache, StateCacheKind::loan).hits == 1);
  CHECK(lookups(cache, StateCacheKind::loan).misses == 1);
  CHECK(lookups(cache, StateCacheKind::account).misses == 1);
  CHECK(lookups(cache, StateCacheKind::other).misses == 1);
  CHECK(counts.hits == 1);
  CHECK(counts.misses == 3);
  CHECK(to_string(StateCacheKind::account) == "account");
  CHECK(to_string(StateCacheKind::other) == "other");
}

TEST_CASE("a cache of size 0 keeps nothing") {
  StateCache cache(0);
  cache.put("account-a", account("a"));
  cache.put("transfer-t1", transfer("t1", TransferStatus::posted));
  CHECK(cache.size() == 0);
  CHECK(cache.find("account-a") == nullptr);
}
