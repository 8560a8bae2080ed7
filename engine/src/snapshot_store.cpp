#include "ledger/engine/snapshot_store.hpp"

#include <openssl/evp.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "ledger/schemas/snapshot_generated.h"

namespace ledger::engine {

// The engine applies the domain's rules: its types are used unqualified here.
using namespace domain;  // NOLINT(google-build-using-namespace)
namespace fb = ledger::schema;

namespace {

constexpr std::size_t checksum_size = 8;

std::string checksum(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<const char*>(digest), checksum_size);
}

std::string str(const flatbuffers::String* value) { return value ? value->str() : std::string(); }

// year * 10000 + month * 100 + day: exact, so a decoded state compares equal to the folded one.
constexpr std::int32_t year_factor = 10'000;
constexpr std::int32_t month_factor = 100;

std::int32_t pack_date(domain::Date date) {
  return static_cast<std::int32_t>(date.year()) * year_factor +
         static_cast<std::int32_t>(static_cast<unsigned>(date.month())) * month_factor +
         static_cast<std::int32_t>(static_cast<unsigned>(date.day()));
}

std::optional<domain::Date> unpack_date(std::int32_t packed) {
  if (packed < 0) return std::nullopt;  // no business date is before year 0
  const std::int32_t year = packed / year_factor;
  const std::int32_t month = packed / month_factor % month_factor;
  const std::int32_t day = packed % month_factor;
  const domain::Date date{std::chrono::year(year), std::chrono::month(static_cast<unsigned>(month)),
                         std::chrono::day(static_cast<unsigned>(day))};
  // Every date of a loan that exists is a calendar date: anything else is not a loan's fold.
  if (!date.ok() || pack_date(date) != packed) return std::nullopt;
  return date;
}

flatbuffers::Offset<fb::LoanSnapshot> encode_loan(flatbuffers::FlatBufferBuilder& builder, const domain::LoanState& loan) {
  const domain::LoanBook& book = loan.book;
  auto id = builder.CreateString(loan.id);
  auto borrower = builder.CreateString(loan.borrower);
  auto currency = builder.CreateString(loan.exists ? loan.currency.str() : "");
  std::vector<fb::InstallmentSnapshot> installments;
  installments.reserve(book.installments.size());
  for (const auto& i : book.installments) {
    installments.emplace_back(i.principal, i.interest, i.principal_paid, i.interest_paid, i.penalty, i.penalty_paid,
                              i.number, pack_date(i.due_date), i.overdue, i.interest_waived);
  }
  auto installments_vector = builder.CreateVectorOfStructs(installments);
  std::vector<flatbuffers::Offset<fb::RepaymentSnapshot>> repayments;
  repayments.reserve(loan.repayments.size());
  for (const auto& [repayment_id, amount] : loan.repayments) {
    repayments.push_back(fb::CreateRepaymentSnapshot(builder, builder.CreateString(repayment_id), amount));
  }
  auto repayments_vector = builder.CreateVector(repayments);
  const domain::LoanTerms& terms = book.terms;
  return fb::CreateLoanSnapshot(
      builder, id, borrower, currency, terms.principal, terms.rate_bps, terms.installments,
      static_cast<std::int8_t>(terms.type), pack_date(terms.origination_date), pack_date(terms.first_due),
      terms.origination_fee, terms.late_fee, terms.grace_days, static_cast<std::int8_t>(book.status),
      installments_vector, book.closed_through.has_value(), book.closed_through ? pack_date(*book.closed_through) : 0,
      book.interest_recognised, book.days_past_due, book.principal_written_off, book.interest_reversed,
      repayments_vector);
}

// Every enum and date checked: the verifier guards the layout, not the values.
std::optional<domain::LoanState> decode_loan(const fb::LoanSnapshot& l) {
  domain::LoanState loan;
  loan.exists = true;
  loan.id = str(l.loan_id());
  loan.borrower = str(l.borrower());
  auto currency = Currency::parse(str(l.currency()));
  if (!currency) return std::nullopt;
  loan.currency = *currency;
  domain::LoanBook& book = loan.book;
  domain::LoanTerms& terms = book.terms;
  terms.principal = l.principal();
  terms.rate_bps = l.rate_bps();
  terms.installments = l.installment_count();
  if (l.schedule_type() < 0 || l.schedule_type() > static_cast<std::int8_t>(ScheduleType::equal_principal)) {
    return std::nullopt;
  }
  terms.type = static_cast<ScheduleType>(l.schedule_type());
  const auto origination = unpack_date(l.origination_date());
  const auto first_due = unpack_date(l.first_due());
  if (!origination || !first_due) return std::nullopt;
  terms.origination_date = *origination;
  terms.first_due = *first_due;
  terms.origination_fee = l.origination_fee();
  terms.late_fee = l.late_fee();
  terms.grace_days = l.grace_days();
  if (l.status() < 0 || l.status() > static_cast<std::int8_t>(LoanStatus::written_off)) return std::nullopt;
  book.status = static_cast<LoanStatus>(l.status());
  if (const auto* installments = l.installments()) {
    book.installments.reserve(installments->size());
    for (const auto* i : *installments) {
      const auto due = unpack_date(i->due_date());
      if (!due) return std::nullopt;
      domain::InstallmentBook installment;
      installment.number = i->number();
      installment.due_date = *due;
      installment.principal = i->principal();
      installment.interest = i->interest();
      installment.principal_paid = i->principal_paid();
      installment.interest_paid = i->interest_paid();
      installment.penalty = i->penalty();
      installment.penalty_paid = i->penalty_paid();
      installment.overdue = i->overdue();
      installment.interest_waived = i->interest_waived();
      book.installments.push_back(installment);
    }
  }
  if (l.has_closed_through()) {
    const auto closed = unpack_date(l.closed_through());
    if (!closed) return std::nullopt;
    book.closed_through = *closed;
  }
  book.interest_recognised = l.interest_recognised();
  book.days_past_due = l.days_past_due();
  book.principal_written_off = l.principal_written_off();
  book.interest_reversed = l.interest_reversed();
  if (const auto* repayments = l.repayments()) {
    for (const auto* r : *repayments) {
      // A fold lists each repayment id once.
      if (r->repayment_id() == nullptr || !loan.repayments.emplace(r->repayment_id()->str(), r->amount()).second) {
        return std::nullopt;
      }
    }
  }
  return loan;
}

}  // namespace

struct SnapshotStore::Impl {
  std::unique_ptr<rocksdb::DB> db;
  std::atomic<std::uint64_t> hits{0}, misses{0}, corrupt{0}, written{0};
  bool directory_rebuilt = false;
};

SnapshotStore::SnapshotStore(const std::string& directory) : impl_(std::make_unique<Impl>()) {
  std::filesystem::create_directories(directory);
  rocksdb::Options options;
  options.create_if_missing = true;
  options.paranoid_checks = true;
  options.max_open_files = 256;
  rocksdb::DB* db = nullptr;
  rocksdb::Status status = rocksdb::DB::Open(options, directory, &db);
  if (!status.ok() && status.ToString().find("lock") != std::string::npos) {
    // Another engine uses this directory: never wipe what a live process holds.
    throw std::runtime_error("the snapshot cache at " + directory +
                             " is in use by another process: give each engine its own directory (" +
                             status.ToString() + ")");
  }
  if (!status.ok()) {
    spdlog::error("snapshot cache at {} cannot be opened ({}); wiping and rebuilding it",
                  directory, status.ToString());
    rocksdb::DestroyDB(directory, options).PermitUncheckedError();
    std::filesystem::remove_all(directory);
    std::filesystem::create_directories(directory);
    impl_->directory_rebuilt = true;
    status = rocksdb::DB::Open(options, directory, &db);
    if (!status.ok()) {
      throw std::runtime_error("cannot create the snapshot cache at " + directory + ": " +
                               status.ToString());
    }
  }
  impl_->db.reset(db);
}

SnapshotStore::~SnapshotStore() = default;

std::string SnapshotStore::encode(const std::string& stream_id, const StreamState& state) {
  flatbuffers::FlatBufferBuilder builder(256);
  auto stream = builder.CreateString(stream_id);
  auto hash = builder.CreateVector(reinterpret_cast<const std::uint8_t*>(state.last_hash.data()),
                                   state.last_hash.size());
  flatbuffers::Offset<fb::AccountSnapshot> account = 0;
  flatbuffers::Offset<fb::TransferSnapshot> transfer = 0;
  flatbuffers::Offset<fb::LoanSnapshot> loan = 0;
  if (const auto* a = std::get_if<domain::AccountState>(&state.aggregate)) {
    auto id = builder.CreateString(a->id);
    auto currency = builder.CreateString(a->exists ? a->currency.str() : "");
    auto owner = builder.CreateString(a->owner);
    account = fb::CreateAccountSnapshot(
        builder, id, currency, a->ledger_code, owner, static_cast<std::int8_t>(a->kind), a->flags,
        a->overdraft_limit.minor_units(), static_cast<std::int8_t>(a->status),
        a->debits_posted.minor_units(), a->credits_posted.minor_units(),
        a->debits_pending.minor_units(), a->credits_pending.minor_units(), a->pending_count);
  } else if (const auto* t = std::get_if<domain::TransferState>(&state.aggregate)) {
    auto id = builder.CreateString(t->id);
    auto debit = builder.CreateString(t->debit_account);
    auto credit = builder.CreateString(t->credit_account);
    auto currency = builder.CreateString(t->exists ? t->currency.str() : "");
    auto reference = builder.CreateString(t->reference);
    transfer = fb::CreateTransferSnapshot(builder, id, debit, credit, t->amount.minor_units(),
                                          currency, reference, static_cast<std::int8_t>(t->status),
                                          t->expires_at_us, t->posted_amount.minor_units());
  } else if (const auto* l = std::get_if<domain::LoanState>(&state.aggregate)) {
    loan = encode_loan(builder, *l);
  }
  auto root = fb::CreateSnapshot(builder, 1, stream, state.version.value(), hash, account, transfer, loan);
  builder.Finish(root);
  return with_checksum(std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()), builder.GetSize()));
}

std::string SnapshotStore::with_checksum(std::string body) {
  body += checksum(body);
  return body;
}

std::optional<domain::StreamState> SnapshotStore::decode(const std::string& stream_id,
                                                 const std::string& bytes) {
  if (bytes.size() <= checksum_size) return std::nullopt;
  const std::string_view body(bytes.data(), bytes.size() - checksum_size);
  if (checksum(body) != bytes.substr(bytes.size() - checksum_size)) return std::nullopt;
  flatbuffers::Verifier verifier(reinterpret_cast<const std::uint8_t*>(body.data()), body.size());
  if (!fb::VerifySnapshotBuffer(verifier)) return std::nullopt;
  const fb::Snapshot* snapshot = fb::GetSnapshot(body.data());
  if (snapshot->format_version() != 1 || str(snapshot->stream_id()) != stream_id ||
      snapshot->event_hash() == nullptr || snapshot->version() <= 0) {
    return std::nullopt;
  }
  domain::StreamState state;
  state.version = StreamVersion(snapshot->version());
  state.last_hash.assign(reinterpret_cast<const char*>(snapshot->event_hash()->data()),
                         snapshot->event_hash()->size());
  if (const auto* a = snapshot->account()) {
    domain::AccountState account;
    account.exists = true;
    account.id = str(a->account_id());
    auto currency = Currency::parse(str(a->currency()));
    if (!currency) return std::nullopt;
    account.currency = *currency;
    account.owner = str(a->owner());
    account.kind = static_cast<AccountKind>(a->kind());
    account.ledger_code = a->ledger_code();
    account.flags = a->flags();
    account.overdraft_limit = Amount(a->overdraft_limit());
    account.status = static_cast<AccountStatus>(a->status());
    account.debits_posted = Amount(a->debits_posted());
    account.credits_posted = Amount(a->credits_posted());
    account.debits_pending = Amount(a->debits_pending());
    account.credits_pending = Amount(a->credits_pending());
    account.pending_count = a->pending_count();
    account.version = state.version;
    state.aggregate = std::move(account);
  } else if (const auto* t = snapshot->transfer()) {
    domain::TransferState transfer;
    transfer.exists = true;
    transfer.id = str(t->transfer_id());
    transfer.debit_account = str(t->debit_account());
    transfer.credit_account = str(t->credit_account());
    transfer.amount = Amount(t->amount());
    auto currency = Currency::parse(str(t->currency()));
    if (!currency) return std::nullopt;
    transfer.currency = *currency;
    transfer.reference = str(t->reference());
    transfer.status = static_cast<TransferStatus>(t->status());
    transfer.expires_at_us = t->expires_at_us();
    transfer.posted_amount = Amount(t->posted_amount());
    transfer.version = state.version;
    state.aggregate = std::move(transfer);
  } else if (const auto* l = snapshot->loan()) {
    auto loan = decode_loan(*l);
    if (!loan) return std::nullopt;
    loan->version = state.version;
    state.aggregate = std::move(*loan);
  } else {
    return std::nullopt;
  }
  return state;
}

std::optional<domain::StreamState> SnapshotStore::get(const std::string& stream_id) {
  std::string bytes;
  const auto status = impl_->db->Get(rocksdb::ReadOptions(), stream_id, &bytes);
  if (status.IsNotFound()) {
    ++impl_->misses;
    return std::nullopt;
  }
  if (!status.ok()) {
    spdlog::warn("snapshot of {} unreadable ({}); dropping it", stream_id, status.ToString());
    ++impl_->corrupt;
    remove(stream_id);
    return std::nullopt;
  }
  auto state = decode(stream_id, bytes);
  if (!state) {
    spdlog::warn("snapshot of {} is corrupt; dropping it", stream_id);
    ++impl_->corrupt;
    remove(stream_id);
    return std::nullopt;
  }
  ++impl_->hits;
  return state;
}

void SnapshotStore::put(const std::string& stream_id, const StreamState& state) {
  put_raw(stream_id, encode(stream_id, state));
  ++impl_->written;
}

void SnapshotStore::put_raw(const std::string& stream_id, const std::string& bytes) {
  rocksdb::WriteOptions options;
  options.disableWAL = true;  // a lost snapshot costs a refold, nothing more
  const auto status = impl_->db->Put(options, stream_id, bytes);
  if (!status.ok()) spdlog::warn("writing the snapshot of {} failed: {}", stream_id, status.ToString());
}

void SnapshotStore::remove(const std::string& stream_id) {
  impl_->db->Delete(rocksdb::WriteOptions(), stream_id).PermitUncheckedError();
}

SnapshotStore::Stats SnapshotStore::stats() const {
  return {impl_->hits.load(), impl_->misses.load(), impl_->corrupt.load(), impl_->written.load(),
          impl_->directory_rebuilt};
}

}  // namespace ledger::engine
