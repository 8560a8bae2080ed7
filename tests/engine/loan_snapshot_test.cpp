// The loan snapshot encoding (schemas/snapshot.fbs) without a database: every loan status and
// a 600-installment schedule decode to the state they were taken of, and a value that is not a
// sound loan snapshot decodes to nothing (DESIGN.md invariant 7: the store refolds the loan).
#include <doctest/doctest.h>

#include <flatbuffers/flatbuffers.h>

#include "ledger/engine/snapshot_store.hpp"
#include "ledger/schemas/snapshot_generated.h"

using namespace ledger;
using namespace ledger::domain;
using namespace ledger::engine;

namespace {

Date date(int y, unsigned m, unsigned d) { return Date{std::chrono::year(y), std::chrono::month(m), std::chrono::day(d)}; }

const std::string stream = loan_stream("L1");

// A loan as the rules leave it after origination, disbursement and the given day closes.
StreamState loan_state(std::int32_t installments, LoanStatus status) {
  LoanState loan;
  loan.exists = true;
  loan.id = "L1";
  loan.borrower = "alice";
  loan.currency = *Currency::parse("EUR");
  loan.book = originate({1'200'000, 1'200, installments, ScheduleType::equal_principal, date(2026, 1, 15),
                         date(2026, 2, 15), 1'000, 500, 5});
  apply(loan.book, disbursement(loan.book));
  apply(loan.book, *close_business_day(loan.book, date(2026, 3, 1)));  // overdue, a late fee
  loan.repayments.emplace("repayment-1", 700);
  loan.repayments.emplace("repayment-2", 123'456);
  loan.book.status = status;
  loan.version = StreamVersion(9);
  StreamState state;
  state.aggregate = loan;
  state.version = StreamVersion(9);
  state.last_hash = std::string(32, '\x07');
  return state;
}

}  // namespace

TEST_CASE("a loan snapshot decodes to the state it was taken of, for every status and a long schedule") {
  for (const auto status : {LoanStatus::originated, LoanStatus::active, LoanStatus::repaid, LoanStatus::written_off}) {
    for (const std::int32_t installments : {1, 12, 600}) {
      INFO(to_string(status) << " with " << installments << " installments");
      const StreamState state = loan_state(installments, status);
      const auto& loan = std::get<LoanState>(state.aggregate);
      REQUIRE(loan.book.installments.size() == static_cast<std::size_t>(installments));
      REQUIRE(loan.book.closed_through.has_value());
      REQUIRE(loan.book.installments.front().overdue);
      REQUIRE(loan.book.installments.front().penalty == 500);
      const auto decoded = SnapshotStore::decode(stream, SnapshotStore::encode(stream, state));
      REQUIRE(decoded.has_value());
      CHECK(decoded->version == state.version);
      CHECK(decoded->last_hash == state.last_hash);
      REQUIRE(std::holds_alternative<LoanState>(decoded->aggregate));
      CHECK(std::get<LoanState>(decoded->aggregate) == loan);
    }
  }
  // A loan just originated: not closed yet, no repayment, waived interest on an installment.
  StreamState fresh = loan_state(3, LoanStatus::originated);
  auto& loan = std::get<LoanState>(fresh.aggregate);
  loan.book.closed_through.reset();
  loan.repayments.clear();
  loan.book.installments.back().interest_waived = true;
  loan.book.installments.back().interest = 0;
  const auto decoded = SnapshotStore::decode(stream, SnapshotStore::encode(stream, fresh));
  REQUIRE(decoded.has_value());
  CHECK(std::get<LoanState>(decoded->aggregate) == loan);
}

TEST_CASE("a loan snapshot that is corrupt, foreign or out of range decodes to nothing") {
  const StreamState state = loan_state(12, LoanStatus::active);
  const std::string bytes = SnapshotStore::encode(stream, state);
  // One byte flipped anywhere fails the checksum.
  for (std::size_t at = 0; at < bytes.size(); at += 7) {
    std::string flipped = bytes;
    flipped[at] = static_cast<char>(flipped[at] ^ 0x20);
    CHECK_FALSE(SnapshotStore::decode(stream, flipped).has_value());
  }
  CHECK_FALSE(SnapshotStore::decode(stream, bytes.substr(0, bytes.size() / 2)).has_value());
  // Another loan's snapshot under this key.
  CHECK_FALSE(SnapshotStore::decode(loan_stream("L2"), bytes).has_value());

  // Sound FlatBuffers with the checksum right, but not a loan snapshot this engine can trust:
  // a format version from the future, an unknown status, a month 13, a February 31, no date,
  // no aggregate at all.
  const auto build = [&](std::uint16_t format_version, std::int8_t status, std::int32_t origination, bool with_loan) {
    flatbuffers::FlatBufferBuilder builder;
    const auto& loan = std::get<LoanState>(state.aggregate);
    auto id = builder.CreateString(stream);
    auto hash = builder.CreateVector(reinterpret_cast<const std::uint8_t*>(state.last_hash.data()), state.last_hash.size());
    flatbuffers::Offset<schema::LoanSnapshot> loan_offset = 0;
    if (with_loan) {
      auto loan_id = builder.CreateString(loan.id);
      auto currency = builder.CreateString("EUR");
      schema::LoanSnapshotBuilder l(builder);
      l.add_loan_id(loan_id);
      l.add_currency(currency);
      l.add_status(status);
      l.add_origination_date(origination);
      l.add_first_due(20260215);
      loan_offset = l.Finish();
    }
    builder.Finish(schema::CreateSnapshot(builder, format_version, id, 9, hash, 0, 0, loan_offset));
    return SnapshotStore::with_checksum(
        std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()), builder.GetSize()));
  };
  // A sound minimal loan snapshot decodes: each refusal below has its one reason only.
  REQUIRE(SnapshotStore::decode(stream, build(1, 1, 20260115, true)).has_value());
  CHECK_FALSE(SnapshotStore::decode(stream, build(2, 1, 20260115, true)).has_value());
  CHECK_FALSE(SnapshotStore::decode(stream, build(1, 9, 20260115, true)).has_value());
  CHECK_FALSE(SnapshotStore::decode(stream, build(1, 1, 20261315, true)).has_value());
  CHECK_FALSE(SnapshotStore::decode(stream, build(1, 1, 20260231, true)).has_value());
  CHECK_FALSE(SnapshotStore::decode(stream, build(1, 1, 0, true)).has_value());
  CHECK_FALSE(SnapshotStore::decode(stream, build(1, 1, 20260115, false)).has_value());
}
