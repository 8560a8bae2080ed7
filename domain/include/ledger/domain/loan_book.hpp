#pragma once
// The money state of one loan and the rules that move it (issue 6), as pure functions of the
// state and their inputs. The loan aggregate will record what these decide in its events and
// fold them back with the apply functions; nothing here reads a clock or a database.
//
// The rules, where the issue leaves a choice:
// - The business date of a loan is the last day closed by close of business (the origination
//   date before the first close). An installment is due when its due date is on or before it,
//   and overdue from the day after its due date while unpaid.
// - A repayment pays, in this order: penalties of due installments, their interest, their
//   principal (each oldest installment first); then principal of installments not yet due,
//   from the last one backwards (the term shortens). An installment whose principal is paid
//   ahead of its due date in full does not run: its scheduled interest is waived and what had
//   accrued of it is reversed. More than the payoff amount (all penalties and interest due,
//   and all principal) is refused.
// - Interest is recognised (accrued) by close of business, each installment's interest evenly
//   over the days of its period (the first period starts at origination), rounding the
//   cumulative amount (loan_schedule.hpp): on the due date it equals the scheduled interest.
// - The late fee is charged once per installment, on the first close of business after its
//   due date plus the grace days while it is unpaid.

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "ledger/domain/loan_schedule.hpp"

namespace ledger::domain {

// A loan is originated at most this many days after the engine's today: a date further
// ahead is a mistake, not a plan.
constexpr std::int64_t origination_days_ahead_max = 366;
// Close of business moves an active loan's business date at most this many days at once: a
// mistyped year would otherwise accrue years of interest and late fees that no event can take
// back. A longer gap is closed in steps.
constexpr std::int64_t close_of_business_days_ahead_max = 366;

struct LoanTerms {
  std::int64_t principal = 0;  // minor units
  std::int32_t rate_bps = 0;
  std::int32_t installments = 0;
  ScheduleType type = ScheduleType::annuity;
  Date origination_date{};
  Date first_due{};
  std::int64_t origination_fee = 0;  // kept back from the disbursement, to fee income
  std::int64_t late_fee = 0;         // per installment paid late
  std::int32_t grace_days = 0;
  friend bool operator==(const LoanTerms&, const LoanTerms&) = default;
};

// The first rule the terms break (schedule limits and every due date within the business date
// range, origination within it and before the first due date, fees not negative and the
// origination fee below the principal, grace 0 to 365 days), or nullopt.
[[nodiscard]] std::optional<std::string> loan_terms_problem(const LoanTerms& terms);

struct InstallmentBook {
  std::int32_t number = 0;
  Date due_date{};
  std::int64_t principal = 0;  // scheduled
  std::int64_t interest = 0;   // scheduled; 0 once waived by prepayment
  std::int64_t principal_paid = 0;
  std::int64_t interest_paid = 0;
  std::int64_t penalty = 0;  // the late fee, once charged
  std::int64_t penalty_paid = 0;
  bool overdue = false;
  bool interest_waived = false;

  [[nodiscard]] std::int64_t principal_unpaid() const { return principal - principal_paid; }
  [[nodiscard]] std::int64_t interest_unpaid() const { return interest - interest_paid; }
  [[nodiscard]] std::int64_t penalty_unpaid() const { return penalty - penalty_paid; }
  [[nodiscard]] bool settled() const {
    return principal_unpaid() == 0 && interest_unpaid() == 0 && penalty_unpaid() == 0;
  }
  friend bool operator==(const InstallmentBook&, const InstallmentBook&) = default;
};

// What a loan's installments owe and have paid, summed: the loan's book and the loan read
// model's answers (GET /v1/loans/{id}) use this one definition.
struct InstallmentTotals {
  std::int64_t principal_outstanding = 0;
  std::int64_t interest_paid = 0;
  std::int64_t interest_overdue = 0;  // unpaid interest of overdue installments
  std::int64_t penalties_due = 0;     // late fees charged and unpaid
  std::int64_t penalties_paid = 0;
  std::optional<std::size_t> next_unsettled;  // index of the first installment not settled
  // What settles the next installment: its unpaid amounts and those of every installment due
  // on or before it (0 when all are settled).
  std::int64_t next_due_amount = 0;
  friend bool operator==(const InstallmentTotals&, const InstallmentTotals&) = default;
};
// `installments` in due-date order, as a schedule lists them.
[[nodiscard]] InstallmentTotals installment_totals(const std::vector<InstallmentBook>& installments);

enum class LoanStatus : std::uint8_t { originated = 0, active = 1, repaid = 2, written_off = 3 };
[[nodiscard]] std::string_view to_string(LoanStatus status);

struct LoanBook {
  LoanTerms terms;
  LoanStatus status = LoanStatus::originated;
  std::vector<InstallmentBook> installments;
  std::optional<Date> closed_through;  // the last business day closed
  std::int64_t interest_recognised = 0;  // accrued through closed_through, net of reversals
  std::int64_t days_past_due = 0;
  std::int64_t principal_written_off = 0;
  std::int64_t interest_reversed = 0;  // by waivers and write-off

  friend bool operator==(const LoanBook&, const LoanBook&) = default;
  [[nodiscard]] Date business_date() const { return closed_through.value_or(terms.origination_date); }
  [[nodiscard]] std::int64_t principal_outstanding() const;
  // Penalties, interest and principal of the installments due at the business date.
  [[nodiscard]] std::int64_t amount_due() const;
  // The most a repayment may be: everything due plus all principal not yet due.
  [[nodiscard]] std::int64_t payoff_amount() const;
};

// A new loan with its schedule (terms must pass loan_terms_problem).
[[nodiscard]] LoanBook originate(const LoanTerms& terms);
// The loan a recorded origination describes, with the schedule it stored.
[[nodiscard]] LoanBook originated(const LoanTerms& terms, const std::vector<ScheduledInstallment>& schedule);

struct Disbursement {
  std::int64_t to_borrower = 0;  // principal minus the origination fee
  std::int64_t fee = 0;
  friend bool operator==(const Disbursement&, const Disbursement&) = default;
};
[[nodiscard]] Disbursement disbursement(const LoanBook& loan);
void apply(LoanBook& loan, const Disbursement& disbursed);

// Interest recognised through `date`: the sum of each installment's accrual at that date.
[[nodiscard]] std::int64_t interest_recognised_through(const LoanBook& loan, Date date);

struct LateFee {
  std::int32_t number = 0;
  std::int64_t amount = 0;
  friend bool operator==(const LateFee&, const LateFee&) = default;
};

// What closing the business days after closed_through up to `date` does to an active loan.
struct DayClose {
  Date date{};
  std::int64_t interest_accrued = 0;  // newly recognised
  std::vector<std::int32_t> became_overdue;
  std::vector<LateFee> late_fees;
  std::int64_t days_past_due = 0;
  friend bool operator==(const DayClose&, const DayClose&) = default;
};

// std::nullopt when there is nothing to do: the loan is not active or is closed through
// `date` already (so close of business is idempotent per loan and date).
[[nodiscard]] std::optional<DayClose> close_business_day(const LoanBook& loan, Date date);
void apply(LoanBook& loan, const DayClose& closed);

struct InstallmentAllocation {
  std::int32_t number = 0;
  std::int64_t penalty = 0;
  std::int64_t interest = 0;
  std::int64_t principal = 0;
  bool waive_interest = false;  // its principal is paid ahead in full: the period will not run
  friend bool operator==(const InstallmentAllocation&, const InstallmentAllocation&) = default;
};

struct Allocation {
  std::int64_t penalties = 0;
  std::int64_t interest = 0;
  std::int64_t principal = 0;
  std::int64_t interest_reversed = 0;  // accrued interest of waived installments
  std::vector<InstallmentAllocation> installments;
  [[nodiscard]] std::int64_t total() const { return penalties + interest + principal; }
  friend bool operator==(const Allocation&, const Allocation&) = default;
};

enum class RepaymentRefusal { not_active, invalid_amount, overpayment };
struct RepaymentProblem {
  RepaymentRefusal refusal;
  std::string detail;
};

[[nodiscard]] std::variant<Allocation, RepaymentProblem> allocate_repayment(const LoanBook& loan, std::int64_t amount);
// Also closes the loan as repaid when nothing is left.
void apply(LoanBook& loan, const Allocation& allocation);

struct WriteOff {
  std::int64_t principal = 0;          // to write-off expense
  std::int64_t interest_reversed = 0;  // recognised but unpaid
  std::int64_t penalties_cancelled = 0;
  friend bool operator==(const WriteOff&, const WriteOff&) = default;
};
// std::nullopt when the loan is not active.
[[nodiscard]] std::optional<WriteOff> write_off(const LoanBook& loan);
void apply(LoanBook& loan, const WriteOff& written_off);

}  // namespace ledger::domain
