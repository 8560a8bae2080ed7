#include "ledger/engine/event_store.hpp"

#include <openssl/evp.h>
#include <pqxx/pqxx>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "ledger/core/assert.hpp"
#include "ledger/core/hex.hpp"
#include "ledger/core/time_text.hpp"
#include "ledger/domain/events.hpp"
#include "ledger/db/pool.hpp"
#include "store_sql.hpp"

namespace ledger::engine {

// The engine applies the domain's rules: its types are used unqualified here.
using namespace domain;  // NOLINT(google-build-using-namespace)

EventStore::EventStore(db::ConnectionPool& pool) : pool_(pool) {}

std::vector<RecordedEvent> EventStore::read_stream(const std::string& stream_id,
                                                   StreamVersion from_version,
                                                   std::size_t limit) const {
  auto lease = pool_.acquire();
  pqxx::read_transaction work(*lease);
  const auto rows = work.exec_params(std::string(sql::select_event_columns) +
                                         " WHERE stream_id = $1 AND version >= $2 ORDER BY version "
                                         "LIMIT $3",
                                     stream_id, from_version.value(), static_cast<long long>(limit));
  std::vector<RecordedEvent> events;
  events.reserve(rows.size());
  for (const auto& row : rows) events.push_back(sql::read_event_row(row));
  return events;
}

std::vector<RecordedEvent> EventStore::read_all(GlobalPosition from, std::size_t limit) const {
  auto lease = pool_.acquire();
  pqxx::read_transaction work(*lease);
  const auto rows = work.exec_params(std::string(sql::select_event_columns) +
                                         " WHERE position >= $1 ORDER BY position LIMIT $2",
                                     from.value(), static_cast<long long>(limit));
  std::vector<RecordedEvent> events;
  events.reserve(rows.size());
  for (const auto& row : rows) events.push_back(sql::read_event_row(row));
  return events;
}

std::vector<std::pair<GlobalPosition, std::string>> EventStore::streams_with_event(std::string_view type,
                                                                                GlobalPosition after,
                                                                                std::size_t limit) const {
  auto lease = pool_.acquire();
  pqxx::read_transaction work(*lease);
  const auto rows = work.exec_params(
      sql::select_streams_with_event,
      std::string(type), after.value(), static_cast<long long>(limit));
  std::vector<std::pair<GlobalPosition, std::string>> streams;
  streams.reserve(rows.size());
  for (const auto& row : rows) streams.emplace_back(GlobalPosition(row[0].as<std::int64_t>()), row[1].as<std::string>());
  return streams;
}

StoreHead EventStore::head() const {
  auto lease = pool_.acquire();
  pqxx::read_transaction work(*lease);
  const auto row = work.exec1("SELECT position, hash FROM event_store_head");
  return {GlobalPosition(row[0].as<std::int64_t>()), pqxx::binarystring(row[1]).str()};
}

ChainVerification EventStore::verify_chain(GlobalPosition from, GlobalPosition to) const {
  constexpr std::size_t verify_batch_events = 10'000;
  ChainVerification result;
  if (to.value() == 0) to = head().position;
  std::string previous = domain::genesis_hash();
  if (from.value() > 1) {
    auto before = read_all(GlobalPosition(from.value() - 1), 1);
    if (before.empty() || before.front().position.value() != from.value() - 1) {
      return {false, 0, GlobalPosition(from.value() - 1), "event missing"};
    }
    previous = before.front().hash;
  }
  std::int64_t expected = from.value();
  while (expected <= to.value()) {
    const auto batch = read_all(GlobalPosition(expected), verify_batch_events);
    if (batch.empty()) return {false, result.events_checked, GlobalPosition(expected), "event missing"};
    for (const auto& event : batch) {
      if (event.position.value() > to.value()) return result;
      if (event.position.value() != expected) {
        return {false, result.events_checked, GlobalPosition(expected), "event missing"};
      }
      if (chain_hash(previous, event) != event.hash) {
        return {false, result.events_checked, event.position,
                "hash does not match the chain (event or its predecessor was altered)"};
      }
      previous = event.hash;
      ++expected;
      ++result.events_checked;
    }
  }
  return result;
}

}  // namespace ledger::engine
