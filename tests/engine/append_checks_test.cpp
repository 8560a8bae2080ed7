// The checks the appender asserts before every append (engine/src/append_checks.hpp): each
// passes a batch as deciding builds it and names the problem of a bad one.
#include <doctest/doctest.h>

#include "append_checks.hpp"
#include "ledger/domain/events.hpp"

namespace {

using namespace ledger;  // NOLINT(google-build-using-namespace)
namespace events = domain::events;

domain::RecordedEvent row(std::string stream_id, std::int64_t version, const domain::DomainEvent& event,
                          std::int64_t position = 0) {
  domain::RecordedEvent recorded;
  recorded.stream_id = std::move(stream_id);
  recorded.version = StreamVersion(version);
  recorded.type = std::string(domain::event_type(event));
  recorded.payload = domain::encode_event(event);
  recorded.position = GlobalPosition(position);
  return recorded;
}

domain::RecordedEvent entry(std::string account, std::int64_t version, const std::string& transfer,
                            events::Direction direction, std::int64_t amount,
                            events::Phase phase = events::Phase::posted) {
  return row("account-" + account, version,
             events::AccountEntry{transfer, direction, phase, amount, 0, "other"});
}

// A posted transfer of 500 from a to b, as deciding writes it.
std::vector<domain::RecordedEvent> transfer_batch() {
  return {row("transfer-t1", 1, events::TransferPosted{"t1", "a", "b", 500, "EUR", ""}),
          entry("a", 4, "t1", events::Direction::debit, 500),
          entry("b", 7, "t1", events::Direction::credit, 500)};
}

}  // namespace

TEST_CASE("a batch whose transfers debit as much as they credit is balanced") {
  auto rows = transfer_batch();
  rows.push_back(row("transfer-t2", 1, events::TransferPending{"t2", "b", "a", 20, "EUR", "", 0}));
  rows.push_back(entry("b", 8, "t2", events::Direction::debit, 20, events::Phase::pending));
  rows.push_back(entry("a", 5, "t2", events::Direction::credit, 20, events::Phase::pending));
  CHECK(engine::check_batch_balanced(rows).empty());
  CHECK(engine::check_batch_balanced({}).empty());
}

TEST_CASE("a credit that differs from its debit unbalances the batch") {
  auto rows = transfer_batch();
  rows[2] = entry("b", 7, "t1", events::Direction::credit, 499);
  const std::string problem = engine::check_batch_balanced(rows);
  CHECK(problem == "the entries of transfer t1 (phase posted) debit more than they credit");
}

TEST_CASE("an entry without its other side unbalances the batch") {
  auto rows = transfer_batch();
  rows.pop_back();
  CHECK_FALSE(engine::check_batch_balanced(rows).empty());
  // Two transfers cannot hide each other's imbalance.
  rows.push_back(entry("b", 7, "t9", events::Direction::credit, 500));
  CHECK_FALSE(engine::check_batch_balanced(rows).empty());
}

TEST_CASE("versions of a stream follow one another within the batch") {
  auto rows = transfer_batch();
  rows.push_back(entry("a", 5, "t2", events::Direction::debit, 1));
  CHECK(engine::check_streams_continue(rows).empty());
  rows.push_back(entry("a", 7, "t3", events::Direction::debit, 1));
  CHECK(engine::check_streams_continue(rows) ==
        "stream account-a goes from version 5 to 7 within the batch");
  rows.back().version = StreamVersion(5);  // a repeat is no successor either
  CHECK_FALSE(engine::check_streams_continue(rows).empty());
}

TEST_CASE("positions are dense and consecutive from the head") {
  auto rows = transfer_batch();
  for (std::size_t i = 0; i < rows.size(); ++i) rows[i].position = GlobalPosition(41 + static_cast<std::int64_t>(i));
  CHECK(engine::check_positions_dense(rows, 40).empty());
  CHECK(engine::check_positions_dense(rows, 39) ==
        "row of stream transfer-t1 is at position 41, expected 40");
  rows[2].position = GlobalPosition(44);
  CHECK(engine::check_positions_dense(rows, 40) ==
        "row of stream account-b is at position 44, expected 43");
  CHECK(engine::check_positions_dense({}, 40).empty());
}
