#include "ledger/domain/commands.hpp"
#include "ledger/domain/state.hpp"
#include "ledger/domain/types.hpp"

namespace ledger::domain {

std::string_view to_string(RejectionCode code) {
  switch (code) {
    case RejectionCode::none: return "none";
    case RejectionCode::invalid_id: return "invalid_id";
    case RejectionCode::invalid_amount: return "invalid_amount";
    case RejectionCode::invalid_currency: return "invalid_currency";
    case RejectionCode::invalid_command: return "invalid_command";
    case RejectionCode::reserved_id: return "reserved_id";
    case RejectionCode::unknown_account: return "unknown_account";
    case RejectionCode::unknown_transfer: return "unknown_transfer";
    case RejectionCode::currency_mismatch: return "currency_mismatch";
    case RejectionCode::insufficient_funds: return "insufficient_funds";
    case RejectionCode::credits_exceed_debits: return "credits_exceed_debits";
    case RejectionCode::account_frozen: return "account_frozen";
    case RejectionCode::account_closed: return "account_closed";
    case RejectionCode::account_not_frozen: return "account_not_frozen";
    case RejectionCode::account_not_empty: return "account_not_empty";
    case RejectionCode::same_account: return "same_account";
    case RejectionCode::amount_overflow: return "amount_overflow";
    case RejectionCode::duplicate_id: return "duplicate_id";
    case RejectionCode::transfer_not_pending: return "transfer_not_pending";
    case RejectionCode::pending_transfer_expired: return "pending_transfer_expired";
    case RejectionCode::amount_exceeds_pending: return "amount_exceeds_pending";
    case RejectionCode::version_conflict: return "version_conflict";
    case RejectionCode::idempotency_key_reused: return "idempotency_key_reused";
    case RejectionCode::linked_command_failed: return "linked_command_failed";
    case RejectionCode::unknown_loan: return "unknown_loan";
    case RejectionCode::invalid_loan_terms: return "invalid_loan_terms";
    case RejectionCode::invalid_date: return "invalid_date";
    case RejectionCode::loan_not_active: return "loan_not_active";
    case RejectionCode::loan_already_disbursed: return "loan_already_disbursed";
    case RejectionCode::overpayment: return "overpayment";
    case RejectionCode::system_account: return "system_account";
  }
  return "unknown";
}

std::string_view to_string(AccountKind kind) {
  return kind == AccountKind::system ? "system" : "customer";
}

std::string_view to_string(AccountStatus status) {
  switch (status) {
    case AccountStatus::open: return "open";
    case AccountStatus::frozen: return "frozen";
    case AccountStatus::closed: return "closed";
  }
  return "unknown";
}

std::string_view to_string(TransferStatus status) {
  switch (status) {
    case TransferStatus::posted: return "posted";
    case TransferStatus::pending: return "pending";
    case TransferStatus::pending_posted: return "pending_posted";
    case TransferStatus::voided: return "voided";
    case TransferStatus::expired: return "expired";
  }
  return "unknown";
}

bool is_valid_id(std::string_view id) {
  if (id.empty() || id.size() > id_length_max) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string derived_id(std::string_view base, std::string_view part) {
  std::string id(base);
  id += derived_id_separator;
  id += part;
  return id;
}

bool is_valid_derived_id(std::string_view id) {
  std::size_t parts = 0;
  for (std::size_t start = 0;;) {
    const std::size_t end = id.find(derived_id_separator, start);
    if (!is_valid_id(id.substr(start, end == std::string_view::npos ? end : end - start))) return false;
    ++parts;
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return parts >= 2;
}

std::string system_account_id(SystemAccount account, std::string_view currency) {
  std::string_view name;
  switch (account) {
    case SystemAccount::cash: name = "cash"; break;
    case SystemAccount::loan_receivable: name = "loan_receivable"; break;
    case SystemAccount::interest_income: name = "interest_income"; break;
    case SystemAccount::fee_income: name = "fee_income"; break;
    case SystemAccount::write_off_expense: name = "write_off_expense"; break;
  }
  std::string id(system_id_prefix);
  id += name;
  id += '.';
  id += currency;
  return id;
}

namespace {

constexpr std::string_view stream_prefix(StreamKind kind) {
  switch (kind) {
    case StreamKind::account: return "account-";
    case StreamKind::transfer: return "transfer-";
    case StreamKind::loan: return "loan-";
  }
  return "";
}

std::string stream_of(StreamKind kind, std::string_view id) {
  std::string stream(stream_prefix(kind));
  stream += id;
  return stream;
}

}  // namespace

std::string account_stream(std::string_view account_id) { return stream_of(StreamKind::account, account_id); }
std::string loan_stream(std::string_view loan_id) { return stream_of(StreamKind::loan, loan_id); }
std::string transfer_stream(std::string_view transfer_id) { return stream_of(StreamKind::transfer, transfer_id); }

std::optional<std::string_view> stream_entity_id(std::string_view stream_id, StreamKind kind) {
  const std::string_view prefix = stream_prefix(kind);
  if (!stream_id.starts_with(prefix)) return std::nullopt;
  return stream_id.substr(prefix.size());
}

AccountBalances account_balances(Amount credits_posted, Amount debits_posted, Amount debits_pending,
                                 Amount overdraft_limit) {
  AccountBalances balances;
  balances.balance = credits_posted.checked_sub(debits_posted);
  if (balances.balance) balances.available = balances.balance->checked_sub(debits_pending);
  if (balances.available) balances.available = balances.available->checked_add(overdraft_limit);
  return balances;
}

std::string_view command_name(const SingleCommand& command) {
  static constexpr std::string_view names[] = {
      "open_account", "transfer", "deposit", "withdrawal", "hold", "post_hold", "void_hold",
      "expire_hold", "freeze_account", "unfreeze_account", "close_account", "originate_loan",
      "disburse_loan", "repay_loan", "close_loan_business_day", "write_off_loan"};
  static_assert(std::size(names) == std::variant_size_v<SingleCommand>);
  return names[command.index()];
}

}  // namespace ledger::domain
