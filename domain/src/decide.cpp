#include "ledger/domain/decide.hpp"

#include "ledger/core/assert.hpp"
#include "overloaded.hpp"

namespace ledger::domain {

namespace {

bool is_account_stream(const std::string& stream_id) { return is_stream_of(stream_id, StreamKind::account); }

Decision reject(RejectionCode code, std::string detail) {
  Decision decision;
  decision.code = code;
  decision.detail = std::move(detail);
  return decision;
}

Decision accept(std::string resource_id) {
  Decision decision;
  decision.resource_ids.push_back(std::move(resource_id));
  return decision;
}

// The identical request was decided before: accepted again, with no effect (issue 13).
Decision replay(std::string resource_id) {
  Decision decision = accept(std::move(resource_id));
  decision.replayed = true;
  return decision;
}

// Only the engine's rules move money on system accounts (loans; deposits and withdrawals
// against the cash account); a client command naming one is refused.
std::optional<Decision> check_not_system(const AccountState& account, const std::string& id) {
  if (account.kind != AccountKind::system) return std::nullopt;
  return reject(RejectionCode::system_account,
                "account " + id + " is a system account: only the engine's own rules move money on it");
}

// Checks an account can take part in a movement of money.
std::optional<Decision> check_usable(const AccountState& account, const std::string& id) {
  if (!account.exists) return reject(RejectionCode::unknown_account, "no account " + id);
  if (account.status == AccountStatus::closed) {
    return reject(RejectionCode::account_closed, "account " + id + " is closed");
  }
  if (account.status == AccountStatus::frozen) {
    return reject(RejectionCode::account_frozen, "account " + id + " is frozen");
  }
  return std::nullopt;
}

// Shared checks of freeze, unfreeze and close: an existing customer account, not closed.
std::optional<Decision> check_status_change(const AccountState& account, const std::string& id,
                                            std::string_view becoming) {
  if (!account.exists) return reject(RejectionCode::unknown_account, "no account " + id);
  if (account.kind == AccountKind::system) {
    return reject(RejectionCode::reserved_id,
                  "system accounts cannot be " + std::string(becoming));
  }
  if (account.status == AccountStatus::closed) {
    return reject(RejectionCode::account_closed, "account " + id + " is closed");
  }
  return std::nullopt;
}

std::optional<Amount> sum(Amount a, Amount b) { return a.checked_add(b); }

// Who asks for a movement: a client (a transfer or a hold), the cash rule (a deposit or a
// withdrawal, against the cash account) or a loan rule (a transfer with a derived id).
enum class Origin : std::uint8_t { client, cash_rule, loan_rule };

// The shared core of every movement of money: a posted or a pending transfer.
struct Movement {
  std::string id;
  std::string from;
  std::string to;
  Amount amount;
  Currency currency;
  std::string reference;
  bool pending = false;
  std::int64_t expires_at_us = 0;
  Origin origin = Origin::client;
};

// Whether `existing` is what `m` asks for: then `m` is a retry of it. A hold's timeout is not
// compared (its expiry depends on when it was placed).
bool same_movement(const TransferState& existing, const Movement& m) {
  return existing.debit_account == m.from && existing.credit_account == m.to && existing.amount == m.amount &&
         existing.currency == m.currency && existing.reference == m.reference &&
         (existing.status != TransferStatus::posted) == m.pending;
}

Decision decide_movement(const Movement& m, WorkingSet& set) {
  const bool id_ok = m.origin == Origin::loan_rule ? is_valid_derived_id(m.id) : is_valid_id(m.id);
  if (!id_ok) return reject(RejectionCode::invalid_id, "invalid transfer id");
  if (!is_valid_id(m.from) || !is_valid_id(m.to)) {
    return reject(RejectionCode::invalid_id, "invalid account id");
  }
  if (m.amount.minor_units() <= 0) {
    return reject(RejectionCode::invalid_amount, "amount must be a positive integer of minor units");
  }
  if (m.from == m.to) return reject(RejectionCode::same_account, "from and to are the same account");
  const AccountState& debit = set.account(m.from);
  const AccountState& credit = set.account(m.to);
  // Before the replay check: a client naming a system account learns nothing, not even
  // whether a transfer with those terms exists.
  if (m.origin == Origin::client) {
    if (auto problem = check_not_system(debit, m.from)) return *problem;
    if (auto problem = check_not_system(credit, m.to)) return *problem;
  }
  // A transfer id names one effect: the identical request again is a replay, another is refused.
  if (const TransferState& existing = set.transfer(m.id); existing.exists) {
    if (same_movement(existing, m)) return replay(m.id);
    return reject(RejectionCode::duplicate_id, "transfer " + m.id + " already exists with other terms");
  }
  if (auto problem = check_usable(debit, m.from)) return *problem;
  if (auto problem = check_usable(credit, m.to)) return *problem;
  if (debit.currency != m.currency || credit.currency != m.currency) {
    return reject(RejectionCode::currency_mismatch,
                  "transfer in " + m.currency.str() + " between accounts in " +
                      debit.currency.str() + " and " + credit.currency.str());
  }

  // Every total the transfer grows must stay within int64.
  const auto debit_total = m.pending ? sum(debit.debits_pending, m.amount) : sum(debit.debits_posted, m.amount);
  const auto credit_total = m.pending ? sum(credit.credits_pending, m.amount) : sum(credit.credits_posted, m.amount);
  const auto debit_exposure = sum(debit.debits_posted, debit.debits_pending);
  const auto debit_after = debit_exposure ? sum(*debit_exposure, m.amount) : std::nullopt;
  const auto credit_exposure = sum(credit.credits_posted, credit.credits_pending);
  const auto credit_after = credit_exposure ? sum(*credit_exposure, m.amount) : std::nullopt;
  const auto debit_allowance = sum(debit.credits_posted, debit.overdraft_limit);
  if (!debit_total || !credit_total || !debit_after || !credit_after || !debit_allowance) {
    return reject(RejectionCode::amount_overflow, "the amount would overflow an account total");
  }
  if ((debit.flags & AccountFlags::debits_must_not_exceed_credits) != 0 &&
      *debit_after > *debit_allowance) {
    return reject(RejectionCode::insufficient_funds,
                  "account " + m.from + " has insufficient available funds");
  }
  if ((credit.flags & AccountFlags::credits_must_not_exceed_debits) != 0 &&
      *credit_after > credit.debits_posted) {
    return reject(RejectionCode::credits_exceed_debits,
                  "account " + m.to + " may not have credits exceed its debits");
  }

  const auto phase = m.pending ? events::Phase::pending : events::Phase::posted;
  if (m.pending) {
    set.append(transfer_stream(m.id),
               events::TransferPending{m.id, m.from, m.to, m.amount.minor_units(), m.currency.str(),
                                       m.reference, m.expires_at_us});
  } else {
    set.append(transfer_stream(m.id),
               events::TransferPosted{m.id, m.from, m.to, m.amount.minor_units(), m.currency.str(),
                                      m.reference});
  }
  set.append(account_stream(m.from), events::AccountEntry{m.id, events::Direction::debit, phase,
                                                          m.amount.minor_units(), 0, m.to});
  set.append(account_stream(m.to), events::AccountEntry{m.id, events::Direction::credit, phase,
                                                        m.amount.minor_units(), 0, m.from});
  return accept(m.id);
}

// The currency's cash account, opened on first use.
const std::string& ensure_system_account(WorkingSet& set, SystemAccount which, Currency currency,
                                         std::string& id_out) {
  id_out = system_account_id(which, currency.code());
  if (!set.account(id_out).exists) {
    set.append(account_stream(id_out),
               events::AccountOpened{id_out, currency.str(), 0, "system", AccountKind::system, 0, 0});
  }
  return id_out;
}

Decision decide_cash_movement(const std::string& account_id, Amount amount,
                              const std::string& reference, const std::string& transfer_id,
                              bool deposit, WorkingSet& set) {
  if (!is_valid_id(account_id)) return reject(RejectionCode::invalid_id, "invalid account id");
  const AccountState& account = set.account(account_id);
  if (!account.exists) return reject(RejectionCode::unknown_account, "no account " + account_id);
  if (auto problem = check_not_system(account, account_id)) return *problem;
  const Currency currency = account.currency;
  const auto mark = set.mark();
  std::string cash;
  ensure_system_account(set, SystemAccount::cash, currency, cash);
  Movement movement{transfer_id, deposit ? cash : account_id, deposit ? account_id : cash, amount,
                    currency, reference};
  movement.origin = Origin::cash_rule;
  Decision decision = decide_movement(movement, set);
  if (!decision.accepted()) set.rollback_to(mark);
  return decision;
}

// ---- loans (issue 6): the rules are loan_book.hpp; money moves only by transfers ----------

// The engine's today, the date of its injected clock (UTC).
Date today_of(const DecisionContext& context) {
  const auto now = std::chrono::sys_time<std::chrono::microseconds>(std::chrono::microseconds(context.now_us));
  return Date{std::chrono::floor<std::chrono::days>(now)};
}

std::optional<Decision> check_loan(const LoanState& loan, const std::string& id) {
  if (!loan.exists) return reject(RejectionCode::unknown_loan, "no loan " + id);
  return std::nullopt;
}

// One leg of a loan's money; skipped when there is nothing to move.
std::optional<Decision> move_loan_money(WorkingSet& set, std::string transfer_id, const std::string& from,
                                        const std::string& to, std::int64_t amount, Currency currency,
                                        std::string reference) {
  if (amount == 0) return std::nullopt;
  Movement movement{std::move(transfer_id), from, to, Amount(amount), currency, std::move(reference)};
  movement.origin = Origin::loan_rule;
  Decision moved = decide_movement(movement, set);
  if (!moved.accepted()) return moved;
  return std::nullopt;
}

Decision decide_originate(const OriginateLoan& c, WorkingSet& set, const DecisionContext& context) {
  if (!is_valid_id(c.id)) return reject(RejectionCode::invalid_id, "invalid loan id");
  if (!is_valid_id(c.borrower)) return reject(RejectionCode::invalid_id, "invalid borrower account id");
  if (set.loan(c.id).exists) return reject(RejectionCode::duplicate_id, "loan " + c.id + " already exists");
  const AccountState& borrower = set.account(c.borrower);
  if (auto problem = check_usable(borrower, c.borrower)) return *problem;
  if (auto problem = check_not_system(borrower, c.borrower)) return *problem;
  if (borrower.currency != c.currency) {
    return reject(RejectionCode::currency_mismatch,
                  "loan in " + c.currency.str() + " to an account in " + borrower.currency.str());
  }
  const auto origination = parse_date(c.origination_date);
  const auto first_due = parse_date(c.first_due_date);
  if (!origination || !first_due) {
    return reject(RejectionCode::invalid_date, "origination_date and first_due_date are dates YYYY-MM-DD");
  }
  if (!is_business_date(*origination) || !is_business_date(*first_due)) {
    return reject(RejectionCode::invalid_date,
                  "origination_date and first_due_date must be from " + business_date_range());
  }
  const Date today = today_of(context);
  if (days_between(today, *origination) > origination_days_ahead_max) {
    return reject(RejectionCode::invalid_date, "origination_date " + c.origination_date + " is more than " +
                                                   std::to_string(origination_days_ahead_max) + " days after today (" +
                                                   to_string(today) + ")");
  }
  const LoanTerms terms{c.principal.minor_units(), c.rate_bps, c.installments, c.schedule, *origination, *first_due,
                        c.origination_fee.minor_units(), c.late_fee.minor_units(), c.grace_days};
  if (auto problem = loan_terms_problem(terms)) return reject(RejectionCode::invalid_loan_terms, *problem);
  set.append(loan_stream(c.id),
             events::LoanOriginated{c.id, c.borrower, c.currency.str(), terms,
                                    compute_schedule({terms.principal, terms.rate_bps, terms.installments, terms.type,
                                                      terms.first_due})});
  return accept(c.id);
}

Decision decide_disburse(const DisburseLoan& c, WorkingSet& set) {
  if (!is_valid_id(c.id)) return reject(RejectionCode::invalid_id, "invalid loan id");
  const LoanState loan = set.loan(c.id);
  if (auto problem = check_loan(loan, c.id)) return *problem;
  if (loan.book.status != LoanStatus::originated) {
    return reject(RejectionCode::loan_already_disbursed, "loan " + c.id + " is " + std::string(to_string(loan.book.status)));
  }
  const Disbursement disbursed = disbursement(loan.book);
  std::string receivable, fee_income;
  ensure_system_account(set, SystemAccount::loan_receivable, loan.currency, receivable);
  ensure_system_account(set, SystemAccount::fee_income, loan.currency, fee_income);
  const std::string transfer_id = derived_id(c.id, "disbursement");
  const std::string fee_transfer_id = disbursed.fee > 0 ? derived_id(c.id, "fee") : "";
  if (auto failed = move_loan_money(set, transfer_id, receivable, loan.borrower, disbursed.to_borrower, loan.currency,
                                    "loan " + c.id + " disbursement")) {
    return *failed;
  }
  if (auto failed = move_loan_money(set, fee_transfer_id, receivable, fee_income, disbursed.fee, loan.currency,
                                    "loan " + c.id + " origination fee")) {
    return *failed;
  }
  set.append(loan_stream(c.id), events::LoanDisbursed{transfer_id, fee_transfer_id, disbursed});
  return accept(c.id);
}

Decision decide_repay(const RepayLoan& c, WorkingSet& set) {
  if (!is_valid_id(c.id)) return reject(RejectionCode::invalid_id, "invalid loan id");
  if (!is_valid_id(c.repayment_id)) return reject(RejectionCode::invalid_id, "invalid repayment id");
  const LoanState loan = set.loan(c.id);
  if (auto problem = check_loan(loan, c.id)) return *problem;
  // A repayment id is used once per loan: the identical request again is a replay (a retry
  // must not charge twice), another amount is refused.
  if (const auto recorded = loan.repayments.find(c.repayment_id); recorded != loan.repayments.end()) {
    if (recorded->second == c.amount.minor_units()) return replay(c.repayment_id);
    return reject(RejectionCode::duplicate_id, "repayment " + c.repayment_id + " of loan " + c.id +
                                                   " was made with amount " + std::to_string(recorded->second));
  }
  const auto decided = allocate_repayment(loan.book, c.amount.minor_units());
  if (const auto* problem = std::get_if<RepaymentProblem>(&decided)) {
    switch (problem->refusal) {
      case RepaymentRefusal::not_active: return reject(RejectionCode::loan_not_active, problem->detail);
      case RepaymentRefusal::invalid_amount: return reject(RejectionCode::invalid_amount, problem->detail);
      case RepaymentRefusal::overpayment: return reject(RejectionCode::overpayment, problem->detail);
    }
  }
  const Allocation& allocation = std::get<Allocation>(decided);
  std::string receivable, interest_income, fee_income;
  ensure_system_account(set, SystemAccount::loan_receivable, loan.currency, receivable);
  ensure_system_account(set, SystemAccount::interest_income, loan.currency, interest_income);
  ensure_system_account(set, SystemAccount::fee_income, loan.currency, fee_income);
  const std::string reference = "loan " + c.id + " repayment " + c.repayment_id;
  // Repayment ids belong to their loan, so the loan id is part of its transfers' ids.
  const std::string repayment = derived_id(c.id, c.repayment_id);
  for (const auto& [part, to, amount] :
       {std::tuple{"penalties", fee_income, allocation.penalties},
        std::tuple{"interest", interest_income, allocation.interest},
        std::tuple{"principal", receivable, allocation.principal}}) {
    if (auto failed = move_loan_money(set, derived_id(repayment, part), loan.borrower, to, amount, loan.currency,
                                      reference)) {
      return *failed;
    }
  }
  set.append(loan_stream(c.id), events::LoanRepaid{c.repayment_id, allocation});
  return accept(c.repayment_id);
}

Decision decide_close_day(const CloseLoanBusinessDay& c, WorkingSet& set) {
  if (!is_valid_id(c.id)) return reject(RejectionCode::invalid_id, "invalid loan id");
  const auto date = parse_date(c.date);
  if (!date) return reject(RejectionCode::invalid_date, "date is a date YYYY-MM-DD");
  if (!is_business_date(*date)) return reject(RejectionCode::invalid_date, "date must be from " + business_date_range());
  const LoanState& loan = set.loan(c.id);
  if (auto problem = check_loan(loan, c.id)) return *problem;
  // Closed through that date already, or not active: nothing to do, and nothing written.
  if (const auto closed = close_business_day(loan.book, *date)) {
    const Date business_date = loan.book.business_date();
    if (days_between(business_date, *date) > close_of_business_days_ahead_max) {
      return reject(RejectionCode::invalid_date,
                    "date " + c.date + " is more than " + std::to_string(close_of_business_days_ahead_max) +
                        " days after loan " + c.id + "'s business date " + to_string(business_date) +
                        "; close a longer gap in steps");
    }
    set.append(loan_stream(c.id), events::LoanDayClosed{*closed});
  }
  return accept(c.id);
}

Decision decide_write_off(const WriteOffLoan& c, WorkingSet& set) {
  if (!is_valid_id(c.id)) return reject(RejectionCode::invalid_id, "invalid loan id");
  const LoanState loan = set.loan(c.id);
  if (auto problem = check_loan(loan, c.id)) return *problem;
  const auto written_off = write_off(loan.book);
  if (!written_off) {
    return reject(RejectionCode::loan_not_active, "loan " + c.id + " is " + std::string(to_string(loan.book.status)));
  }
  std::string receivable, expense;
  ensure_system_account(set, SystemAccount::loan_receivable, loan.currency, receivable);
  ensure_system_account(set, SystemAccount::write_off_expense, loan.currency, expense);
  const std::string transfer_id = written_off->principal > 0 ? derived_id(c.id, "write_off") : "";
  if (auto failed = move_loan_money(set, transfer_id, expense, receivable, written_off->principal, loan.currency,
                                    "loan " + c.id + " write-off")) {
    return *failed;
  }
  set.append(loan_stream(c.id), events::LoanWrittenOff{transfer_id, *written_off});
  return accept(c.id);
}

Decision decide_single(const SingleCommand& command, WorkingSet& set,
                       const DecisionContext& context) {
  return std::visit(
      Overloaded{
          [&](const OpenAccount& c) -> Decision {
            if (!is_valid_id(c.id)) return reject(RejectionCode::invalid_id, "invalid account id");
            if (c.id.starts_with(system_id_prefix)) {
              return reject(RejectionCode::reserved_id,
                            "ids beginning with 'system.' are reserved for the engine");
            }
            if (c.overdraft_limit.minor_units() < 0) {
              return reject(RejectionCode::invalid_amount, "overdraft_limit must not be negative");
            }
            const std::uint32_t flags =
                c.flags.value_or(c.kind == AccountKind::customer
                                     ? AccountFlags::debits_must_not_exceed_credits
                                     : 0u);
            constexpr std::uint32_t both = AccountFlags::debits_must_not_exceed_credits |
                                           AccountFlags::credits_must_not_exceed_debits;
            if ((flags & both) == both || (flags & ~both) != 0) {
              return reject(RejectionCode::invalid_command, "contradictory or unknown account flags");
            }
            if (set.account(c.id).exists) {
              return reject(RejectionCode::duplicate_id, "account " + c.id + " already exists");
            }
            set.append(account_stream(c.id),
                       events::AccountOpened{c.id, c.currency.str(), c.ledger_code, c.owner, c.kind,
                                             flags, c.overdraft_limit.minor_units()});
            return accept(c.id);
          },
          [&](const Transfer& c) -> Decision {
            return decide_movement({c.id, c.from, c.to, c.amount, c.currency, c.reference}, set);
          },
          [&](const Deposit& c) -> Decision {
            return decide_cash_movement(c.account_id, c.amount, c.reference, c.transfer_id, true, set);
          },
          [&](const Withdrawal& c) -> Decision {
            return decide_cash_movement(c.account_id, c.amount, c.reference, c.transfer_id, false, set);
          },
          [&](const PlaceHold& c) -> Decision {
            std::int64_t expires_at_us = 0;
            if (c.timeout_seconds) {
              constexpr std::int64_t timeout_seconds_max = 366LL * 24 * 3600;
              if (*c.timeout_seconds <= 0 || *c.timeout_seconds > timeout_seconds_max) {
                return reject(RejectionCode::invalid_command,
                              "timeout_seconds must be 1 to 31622400");
              }
              expires_at_us = context.now_us + *c.timeout_seconds * 1'000'000;
            }
            return decide_movement(
                {c.id, c.from, c.to, c.amount, c.currency, c.reference, true, expires_at_us}, set);
          },
          [&](const PostHold& c) -> Decision {
            if (!is_valid_id(c.id)) return reject(RejectionCode::invalid_id, "invalid transfer id");
            const TransferState& hold = set.transfer(c.id);
            if (!hold.exists) return reject(RejectionCode::unknown_transfer, "no transfer " + c.id);
            // The identical post again (the same amount) is a replay of the first.
            if (hold.status == TransferStatus::pending_posted &&
                hold.posted_amount == c.amount.value_or(hold.amount)) {
              return replay(c.id);
            }
            if (hold.status != TransferStatus::pending) {
              return reject(RejectionCode::transfer_not_pending,
                            "transfer " + c.id + " is " + std::string(to_string(hold.status)));
            }
            if (hold.expires_at_us != 0 && context.now_us >= hold.expires_at_us) {
              return reject(RejectionCode::pending_transfer_expired, "hold " + c.id + " has expired");
            }
            const Amount amount = c.amount.value_or(hold.amount);
            if (amount.minor_units() <= 0) {
              return reject(RejectionCode::invalid_amount, "amount must be positive");
            }
            if (amount > hold.amount) {
              return reject(RejectionCode::amount_exceeds_pending,
                            "amount exceeds the held " + std::to_string(hold.amount.minor_units()));
            }
            const std::string debit = hold.debit_account;
            const std::string credit = hold.credit_account;
            const std::int64_t held = hold.amount.minor_units();
            if (auto problem = check_usable(set.account(debit), debit)) return *problem;
            if (auto problem = check_usable(set.account(credit), credit)) return *problem;
            // A hold placed on a system account before that was refused is never posted.
            if (auto problem = check_not_system(set.account(debit), debit)) return *problem;
            if (auto problem = check_not_system(set.account(credit), credit)) return *problem;
            if (!set.account(debit).debits_posted.checked_add(amount) ||
                !set.account(credit).credits_posted.checked_add(amount)) {
              return reject(RejectionCode::amount_overflow, "the amount would overflow an account total");
            }
            set.append(transfer_stream(c.id), events::PendingTransferPosted{amount.minor_units(), held});
            set.append(account_stream(debit),
                       events::AccountEntry{c.id, events::Direction::debit,
                                            events::Phase::pending_posted, amount.minor_units(),
                                            held, credit});
            set.append(account_stream(credit),
                       events::AccountEntry{c.id, events::Direction::credit,
                                            events::Phase::pending_posted, amount.minor_units(),
                                            held, debit});
            return accept(c.id);
          },
          [&](const auto& c) -> Decision
            requires(std::is_same_v<std::decay_t<decltype(c)>, VoidHold> ||
                     std::is_same_v<std::decay_t<decltype(c)>, ExpireHold>)
          {
            constexpr bool expiring = std::is_same_v<std::decay_t<decltype(c)>, ExpireHold>;
            if (!is_valid_id(c.id)) return reject(RejectionCode::invalid_id, "invalid transfer id");
            const TransferState& hold = set.transfer(c.id);
            if (!hold.exists) return reject(RejectionCode::unknown_transfer, "no transfer " + c.id);
            if (!expiring && hold.status == TransferStatus::voided) return replay(c.id);
            if (hold.status != TransferStatus::pending) {
              return reject(RejectionCode::transfer_not_pending,
                            "transfer " + c.id + " is " + std::string(to_string(hold.status)));
            }
            if (expiring && (hold.expires_at_us == 0 || context.now_us < hold.expires_at_us)) {
              return reject(RejectionCode::invalid_command, "hold " + c.id + " has not expired");
            }
            const auto end = expiring ? events::PendingEnd::expired : events::PendingEnd::voided;
            const std::string debit = hold.debit_account;
            const std::string credit = hold.credit_account;
            const std::int64_t held = hold.amount.minor_units();
            // Releasing a hold is allowed on a frozen account: it only gives money back.
            set.append(transfer_stream(c.id), events::PendingTransferEnded{held, end});
            set.append(account_stream(debit),
                       events::AccountEntry{c.id, events::Direction::debit,
                                            events::Phase::pending_released, held, 0, credit});
            set.append(account_stream(credit),
                       events::AccountEntry{c.id, events::Direction::credit,
                                            events::Phase::pending_released, held, 0, debit});
            return accept(c.id);
          },
          [&](const FreezeAccount& c) -> Decision {
            if (!is_valid_id(c.id)) return reject(RejectionCode::invalid_id, "invalid account id");
            const AccountState& account = set.account(c.id);
            if (auto problem = check_status_change(account, c.id, "frozen")) return *problem;
            if (account.status == AccountStatus::frozen) {
              return reject(RejectionCode::account_frozen, "account " + c.id + " is already frozen");
            }
            set.append(account_stream(c.id), events::AccountFrozen{});
            return accept(c.id);
          },
          [&](const UnfreezeAccount& c) -> Decision {
            if (!is_valid_id(c.id)) return reject(RejectionCode::invalid_id, "invalid account id");
            const AccountState& account = set.account(c.id);
            if (auto problem = check_status_change(account, c.id, "unfrozen")) return *problem;
            if (account.status != AccountStatus::frozen) {
              return reject(RejectionCode::account_not_frozen, "account " + c.id + " is not frozen");
            }
            set.append(account_stream(c.id), events::AccountUnfrozen{});
            return accept(c.id);
          },
          [&](const CloseAccount& c) -> Decision {
            if (!is_valid_id(c.id)) return reject(RejectionCode::invalid_id, "invalid account id");
            const AccountState& account = set.account(c.id);
            if (auto problem = check_status_change(account, c.id, "closed")) return *problem;
            if (account.debits_posted != account.credits_posted || account.pending_count != 0 ||
                account.debits_pending.minor_units() != 0 ||
                account.credits_pending.minor_units() != 0) {
              return reject(RejectionCode::account_not_empty,
                            "account " + c.id + " has a balance or pending transfers");
            }
            set.append(account_stream(c.id), events::AccountClosed{});
            return accept(c.id);
          },
          [&](const OriginateLoan& c) { return decide_originate(c, set, context); },
          [&](const DisburseLoan& c) { return decide_disburse(c, set); },
          [&](const RepayLoan& c) { return decide_repay(c, set); },
          [&](const CloseLoanBusinessDay& c) { return decide_close_day(c, set); },
          [&](const WriteOffLoan& c) { return decide_write_off(c, set); },
      },
      command);
}

}  // namespace

WorkingSet::WorkingSet(Loader loader) : loader_(std::move(loader)) {}

void WorkingSet::put(const std::string& stream_id, StreamState state) {
  streams_[stream_id] = std::move(state);
}

bool WorkingSet::contains(const std::string& stream_id) const {
  return streams_.contains(stream_id);
}

StreamState& WorkingSet::load(const std::string& stream_id) {
  auto found = streams_.find(stream_id);
  if (found != streams_.end()) return found->second;
  StreamState state = loader_(stream_id);
  if (std::holds_alternative<std::monostate>(state.aggregate)) {
    if (is_account_stream(stream_id)) {
      state.aggregate = AccountState{};
    } else if (is_stream_of(stream_id, StreamKind::loan)) {
      state.aggregate = LoanState{};
    } else {
      state.aggregate = TransferState{};
    }
  }
  return streams_.emplace(stream_id, std::move(state)).first->second;
}

const StreamState& WorkingSet::stream(const std::string& stream_id) { return load(stream_id); }

const AccountState& WorkingSet::account(const std::string& account_id) {
  return std::get<AccountState>(load(account_stream(account_id)).aggregate);
}

const TransferState& WorkingSet::transfer(const std::string& transfer_id) {
  return std::get<TransferState>(load(transfer_stream(transfer_id)).aggregate);
}

const LoanState& WorkingSet::loan(const std::string& loan_id) {
  return std::get<LoanState>(load(loan_stream(loan_id)).aggregate);
}

void WorkingSet::append(const std::string& stream_id, DomainEvent event) {
  StreamState& state = load(stream_id);
  undo_.emplace_back(stream_id, state);
  std::visit(
      [&](auto& aggregate) {
        if constexpr (std::is_same_v<std::decay_t<decltype(aggregate)>, std::monostate>) {
          LEDGER_ASSERT(false, "append to a stream of unknown kind");
        } else {
          domain::apply(aggregate, event);
        }
      },
      state.aggregate);
  state.version = StreamVersion(state.version.value() + 1);
  new_events_.push_back({stream_id, state.version, std::move(event)});
}

void WorkingSet::rollback_to(Mark mark) {
  LEDGER_ASSERT(mark.events <= new_events_.size() && mark.undo <= undo_.size(), "bad mark");
  while (undo_.size() > mark.undo) {
    streams_[undo_.back().first] = std::move(undo_.back().second);
    undo_.pop_back();
  }
  new_events_.resize(mark.events);
}

Decision decide(const CommandBody& command, WorkingSet& set, const DecisionContext& context) {
  const auto mark = set.mark();
  Decision decision = std::visit(
      Overloaded{
          [&](const SingleCommand& single) { return decide_single(single, set, context); },
          [&](const LinkedCommands& linked) {
            Decision all;
            if (linked.commands.empty()) {
              return reject(RejectionCode::invalid_command, "a linked list needs at least one command");
            }
            all.replayed = true;  // a replay only when every member is one
            for (std::size_t i = 0; i < linked.commands.size(); ++i) {
              Decision member = decide_single(linked.commands[i], set, context);
              if (!member.accepted()) {
                member.failed_member = i;
                member.detail = "command " + std::to_string(i) + " (" +
                                std::string(command_name(linked.commands[i])) + "): " + member.detail;
                return member;
              }
              all.replayed = all.replayed && member.replayed;
              for (auto& id : member.resource_ids) all.resource_ids.push_back(std::move(id));
            }
            return all;
          },
      },
      command);
  if (!decision.accepted()) set.rollback_to(mark);
  return decision;
}

namespace {
void assign_single(SingleCommand& command, const std::function<std::string()>& generate_id) {
  std::visit(Overloaded{
                 [&](OpenAccount& c) { if (c.id.empty()) c.id = generate_id(); },
                 [&](Transfer& c) { if (c.id.empty()) c.id = generate_id(); },
                 [&](Deposit& c) { if (c.transfer_id.empty()) c.transfer_id = generate_id(); },
                 [&](Withdrawal& c) { if (c.transfer_id.empty()) c.transfer_id = generate_id(); },
                 [&](PlaceHold& c) { if (c.id.empty()) c.id = generate_id(); },
                 [&](OriginateLoan& c) { if (c.id.empty()) c.id = generate_id(); },
                 [&](RepayLoan& c) { if (c.repayment_id.empty()) c.repayment_id = generate_id(); },
                 [&](auto&) {},
             },
             command);
}

void collect_single(const SingleCommand& command, std::vector<std::string>& ids) {
  std::visit(Overloaded{
                 [&](const OpenAccount& c) { ids.push_back(account_stream(c.id)); },
                 [&](const Transfer& c) {
                   ids.push_back(transfer_stream(c.id));
                   ids.push_back(account_stream(c.from));
                   ids.push_back(account_stream(c.to));
                 },
                 [&](const Deposit& c) {
                   ids.push_back(transfer_stream(c.transfer_id));
                   ids.push_back(account_stream(c.account_id));
                 },
                 [&](const Withdrawal& c) {
                   ids.push_back(transfer_stream(c.transfer_id));
                   ids.push_back(account_stream(c.account_id));
                 },
                 [&](const PlaceHold& c) {
                   ids.push_back(transfer_stream(c.id));
                   ids.push_back(account_stream(c.from));
                   ids.push_back(account_stream(c.to));
                 },
                 [&](const PostHold& c) { ids.push_back(transfer_stream(c.id)); },
                 [&](const VoidHold& c) { ids.push_back(transfer_stream(c.id)); },
                 [&](const ExpireHold& c) { ids.push_back(transfer_stream(c.id)); },
                 [&](const FreezeAccount& c) { ids.push_back(account_stream(c.id)); },
                 [&](const UnfreezeAccount& c) { ids.push_back(account_stream(c.id)); },
                 [&](const CloseAccount& c) { ids.push_back(account_stream(c.id)); },
                 [&](const OriginateLoan& c) {
                   ids.push_back(loan_stream(c.id));
                   ids.push_back(account_stream(c.borrower));
                 },
                 [&](const DisburseLoan& c) { ids.push_back(loan_stream(c.id)); },
                 [&](const RepayLoan& c) { ids.push_back(loan_stream(c.id)); },
                 [&](const CloseLoanBusinessDay& c) { ids.push_back(loan_stream(c.id)); },
                 [&](const WriteOffLoan& c) { ids.push_back(loan_stream(c.id)); },
             },
             command);
}
}  // namespace

void assign_ids(CommandBody& command, const std::function<std::string()>& generate_id) {
  std::visit(Overloaded{
                 [&](SingleCommand& single) { assign_single(single, generate_id); },
                 [&](LinkedCommands& linked) {
                   for (auto& member : linked.commands) assign_single(member, generate_id);
                 },
             },
             command);
}

void collect_streams(const CommandBody& command, std::vector<std::string>& stream_ids) {
  std::visit(Overloaded{
                 [&](const SingleCommand& single) { collect_single(single, stream_ids); },
                 [&](const LinkedCommands& linked) {
                   for (const auto& member : linked.commands) collect_single(member, stream_ids);
                 },
             },
             command);
}

}  // namespace ledger::domain
