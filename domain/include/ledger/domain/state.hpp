#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "ledger/core/money.hpp"
#include "ledger/core/strong_type.hpp"
#include "ledger/domain/loan_book.hpp"
#include "ledger/domain/types.hpp"

namespace ledger::domain {

// What an account's totals give (API.md): balance = credits_posted - debits_posted (a
// customer's money; negative for the cash account), available = balance - debits_pending +
// overdraft_limit. Each is std::nullopt when it would overflow int64. The one definition: the
// account's fold and the balance read model's answers both use it.
struct AccountBalances {
  std::optional<Amount> balance;
  std::optional<Amount> available;
};
[[nodiscard]] AccountBalances account_balances(Amount credits_posted, Amount debits_posted, Amount debits_pending,
                                               Amount overdraft_limit);

// The fold of an account stream.
struct AccountState {
  bool exists = false;
  std::string id;
  Currency currency;
  std::string owner;
  AccountKind kind = AccountKind::customer;
  std::uint32_t ledger_code = 0;
  std::uint32_t flags = 0;
  Amount overdraft_limit{0};
  AccountStatus status = AccountStatus::open;
  Amount debits_posted{0};
  Amount credits_posted{0};
  Amount debits_pending{0};
  Amount credits_pending{0};
  std::int64_t pending_count = 0;  // holds not yet posted or ended
  StreamVersion version{0};

  // account_balances of this account's totals.
  [[nodiscard]] std::optional<Amount> balance() const {
    return account_balances(credits_posted, debits_posted, debits_pending, overdraft_limit).balance;
  }
  [[nodiscard]] std::optional<Amount> available() const {
    return account_balances(credits_posted, debits_posted, debits_pending, overdraft_limit).available;
  }

  friend bool operator==(const AccountState&, const AccountState&) = default;
};

enum class TransferStatus : std::uint8_t { posted = 0, pending = 1, pending_posted = 2, voided = 3, expired = 4 };
[[nodiscard]] std::string_view to_string(TransferStatus status);

// The fold of a transfer stream.
struct TransferState {
  bool exists = false;
  std::string id;
  std::string debit_account;
  std::string credit_account;
  Amount amount{0};
  Currency currency;
  std::string reference;
  TransferStatus status = TransferStatus::posted;
  std::int64_t expires_at_us = 0;  // 0: no timeout
  Amount posted_amount{0};
  StreamVersion version{0};

  friend bool operator==(const TransferState&, const TransferState&) = default;
};

// The fold of a loan stream: who borrowed, and the loan's book (loan_book.hpp).
struct LoanState {
  bool exists = false;
  std::string id;
  std::string borrower;
  Currency currency;
  LoanBook book;
  // Every repayment id the loan has taken, with its amount: a repayment id is used once, and
  // the identical request again is answered as a replay (issue 13).
  std::map<std::string, std::int64_t, std::less<>> repayments;
  StreamVersion version{0};

  friend bool operator==(const LoanState&, const LoanState&) = default;
};

}  // namespace ledger::domain
