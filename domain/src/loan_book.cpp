#include "ledger/domain/loan_book.hpp"

#include <algorithm>

#include "ledger/core/assert.hpp"

namespace ledger::domain {

namespace {

// The day an installment's interest period starts: origination, then the previous due date.
Date period_start(const LoanBook& loan, std::size_t index) {
  return index == 0 ? loan.terms.origination_date : loan.installments[index - 1].due_date;
}

std::int64_t accrued_at(const LoanBook& loan, std::size_t index, Date date) {
  const InstallmentBook& installment = loan.installments[index];
  if (installment.interest == 0) return 0;
  const Date start = period_start(loan, index);
  const std::int64_t days = days_between(start, installment.due_date);
  LEDGER_ASSERT(days > 0, "an interest period of no days");
  return accrued_interest(installment.interest, days_between(start, date), days);
}

bool is_due(const InstallmentBook& installment, Date business_date) { return installment.due_date <= business_date; }

// Days past due at `date`: since the due date of the oldest unpaid installment due before it.
std::int64_t days_past_due_at(const LoanBook& loan, Date date) {
  for (const auto& installment : loan.installments) {
    if (!installment.settled() && installment.due_date < date) return days_between(installment.due_date, date);
  }
  return 0;
}

}  // namespace

std::string_view to_string(LoanStatus status) {
  switch (status) {
    case LoanStatus::originated: return "originated";
    case LoanStatus::active: return "active";
    case LoanStatus::repaid: return "repaid";
    case LoanStatus::written_off: return "written_off";
  }
  return "?";
}

std::optional<std::string> loan_terms_problem(const LoanTerms& terms) {
  if (auto problem = schedule_terms_problem({terms.principal, terms.rate_bps, terms.installments, terms.type, terms.first_due})) {
    return problem;
  }
  if (!terms.origination_date.ok()) return "origination_date is not a date";
  if (!is_business_date(terms.origination_date)) return "origination_date must be from " + business_date_range();
  if (terms.first_due <= terms.origination_date) return "first_due_date must be after the origination date";
  if (terms.origination_fee < 0 || terms.late_fee < 0) return "fees must not be negative";
  if (terms.late_fee > schedule_principal_max) return "late_fee must be at most 10^15 minor units";
  if (terms.origination_fee >= terms.principal) return "the origination fee must be less than the principal";
  if (terms.grace_days < 0 || terms.grace_days > 365) return "grace_days must be 0 to 365";
  return std::nullopt;
}

InstallmentTotals installment_totals(const std::vector<InstallmentBook>& installments) {
  InstallmentTotals totals;
  for (std::size_t i = 0; i < installments.size(); ++i) {
    const InstallmentBook& installment = installments[i];
    totals.principal_outstanding += installment.principal_unpaid();
    totals.interest_paid += installment.interest_paid;
    if (installment.overdue) totals.interest_overdue += installment.interest_unpaid();
    totals.penalties_due += installment.penalty_unpaid();
    totals.penalties_paid += installment.penalty_paid;
    if (!totals.next_unsettled && !installment.settled()) totals.next_unsettled = i;
  }
  if (totals.next_unsettled) {
    const Date next_due = installments[*totals.next_unsettled].due_date;
    for (const InstallmentBook& installment : installments) {
      if (installment.due_date > next_due) break;
      totals.next_due_amount +=
          installment.principal_unpaid() + installment.interest_unpaid() + installment.penalty_unpaid();
    }
  }
  return totals;
}

std::int64_t LoanBook::principal_outstanding() const { return installment_totals(installments).principal_outstanding; }

std::int64_t LoanBook::amount_due() const {
  std::int64_t due = 0;
  for (const auto& installment : installments) {
    if (!is_due(installment, business_date())) continue;
    due += installment.penalty_unpaid() + installment.interest_unpaid() + installment.principal_unpaid();
  }
  return due;
}

std::int64_t LoanBook::payoff_amount() const {
  std::int64_t payoff = 0;
  for (const auto& installment : installments) {
    payoff += installment.principal_unpaid() + installment.penalty_unpaid();
    if (is_due(installment, business_date())) payoff += installment.interest_unpaid();
  }
  return payoff;
}

LoanBook originate(const LoanTerms& terms) {
  LEDGER_ASSERT(!loan_terms_problem(terms), "loan terms were not validated");
  return originated(terms, compute_schedule({terms.principal, terms.rate_bps, terms.installments, terms.type,
                                             terms.first_due}));
}

LoanBook originated(const LoanTerms& terms, const std::vector<ScheduledInstallment>& schedule) {
  LoanBook loan;
  loan.terms = terms;
  for (const auto& scheduled : schedule) {
    InstallmentBook installment;
    installment.number = scheduled.number;
    installment.due_date = scheduled.due_date;
    installment.principal = scheduled.principal;
    installment.interest = scheduled.interest;
    loan.installments.push_back(installment);
  }
  return loan;
}

Disbursement disbursement(const LoanBook& loan) {
  return {loan.terms.principal - loan.terms.origination_fee, loan.terms.origination_fee};
}

void apply(LoanBook& loan, const Disbursement&) { loan.status = LoanStatus::active; }

std::int64_t interest_recognised_through(const LoanBook& loan, Date date) {
  std::int64_t total = 0;
  for (std::size_t i = 0; i < loan.installments.size(); ++i) total += accrued_at(loan, i, date);
  return total;
}

std::optional<DayClose> close_business_day(const LoanBook& loan, Date date) {
  if (loan.status != LoanStatus::active) return std::nullopt;
  if (date <= loan.business_date()) return std::nullopt;
  DayClose closed;
  closed.date = date;
  closed.interest_accrued = interest_recognised_through(loan, date) - loan.interest_recognised;
  LEDGER_ASSERT(closed.interest_accrued >= 0, "recognised interest runs backwards");
  const auto grace = std::chrono::days(loan.terms.grace_days);
  for (const auto& installment : loan.installments) {
    if (installment.settled() || installment.due_date >= date) continue;
    if (!installment.overdue) closed.became_overdue.push_back(installment.number);
    const bool past_grace = std::chrono::sys_days(date) > std::chrono::sys_days(installment.due_date) + grace;
    if (past_grace && loan.terms.late_fee > 0 && installment.penalty == 0) {
      closed.late_fees.push_back({installment.number, loan.terms.late_fee});
    }
  }
  closed.days_past_due = days_past_due_at(loan, date);
  return closed;
}

void apply(LoanBook& loan, const DayClose& closed) {
  loan.closed_through = closed.date;
  loan.interest_recognised += closed.interest_accrued;
  for (const std::int32_t number : closed.became_overdue) loan.installments.at(static_cast<std::size_t>(number - 1)).overdue = true;
  for (const auto& fee : closed.late_fees) loan.installments.at(static_cast<std::size_t>(fee.number - 1)).penalty += fee.amount;
  loan.days_past_due = closed.days_past_due;
}

std::variant<Allocation, RepaymentProblem> allocate_repayment(const LoanBook& loan, std::int64_t amount) {
  if (loan.status != LoanStatus::active) {
    return RepaymentProblem{RepaymentRefusal::not_active,
                            "the loan is " + std::string(to_string(loan.status)) + ", not active"};
  }
  if (amount <= 0) return RepaymentProblem{RepaymentRefusal::invalid_amount, "amount must be positive"};
  const std::int64_t payoff = loan.payoff_amount();
  if (amount > payoff) {
    return RepaymentProblem{RepaymentRefusal::overpayment,
                            "amount " + std::to_string(amount) + " exceeds the payoff amount " + std::to_string(payoff)};
  }
  const Date business_date = loan.business_date();
  std::vector<InstallmentAllocation> parts(loan.installments.size());
  for (std::size_t i = 0; i < parts.size(); ++i) parts[i].number = loan.installments[i].number;
  Allocation allocation;
  std::int64_t left = amount;
  auto take = [&](std::int64_t owed) {
    const std::int64_t paid = std::min(left, owed);
    left -= paid;
    return paid;
  };
  for (std::size_t i = 0; i < parts.size() && left > 0; ++i) {
    parts[i].penalty = take(loan.installments[i].penalty_unpaid());
    allocation.penalties += parts[i].penalty;
  }
  for (std::size_t i = 0; i < parts.size() && left > 0; ++i) {
    if (!is_due(loan.installments[i], business_date)) break;
    parts[i].interest = take(loan.installments[i].interest_unpaid());
    allocation.interest += parts[i].interest;
  }
  for (std::size_t i = 0; i < parts.size() && left > 0; ++i) {
    if (!is_due(loan.installments[i], business_date)) break;
    parts[i].principal = take(loan.installments[i].principal_unpaid());
    allocation.principal += parts[i].principal;
  }
  // Beyond what is due: principal from the last installment backwards.
  for (std::size_t i = parts.size(); i-- > 0 && left > 0;) {
    const InstallmentBook& installment = loan.installments[i];
    if (is_due(installment, business_date)) break;
    parts[i].principal = take(installment.principal_unpaid());
    allocation.principal += parts[i].principal;
    if (parts[i].principal == installment.principal_unpaid() && installment.interest > 0) {
      parts[i].waive_interest = true;
      allocation.interest_reversed += accrued_at(loan, i, business_date);
    }
  }
  LEDGER_ASSERT(left == 0, "a repayment within the payoff amount was not fully allocated");
  for (auto& part : parts) {
    if (part.penalty != 0 || part.interest != 0 || part.principal != 0 || part.waive_interest) {
      allocation.installments.push_back(part);
    }
  }
  return allocation;
}

void apply(LoanBook& loan, const Allocation& allocation) {
  for (const auto& part : allocation.installments) {
    InstallmentBook& installment = loan.installments.at(static_cast<std::size_t>(part.number - 1));
    installment.penalty_paid += part.penalty;
    installment.interest_paid += part.interest;
    installment.principal_paid += part.principal;
    if (part.waive_interest) {
      installment.interest = 0;
      installment.interest_waived = true;
    }
    if (installment.settled()) installment.overdue = false;
  }
  loan.interest_recognised -= allocation.interest_reversed;
  loan.interest_reversed += allocation.interest_reversed;
  loan.days_past_due = days_past_due_at(loan, loan.business_date());
  const bool all_settled = std::all_of(loan.installments.begin(), loan.installments.end(),
                                       [](const InstallmentBook& installment) { return installment.settled(); });
  if (all_settled) loan.status = LoanStatus::repaid;
}

std::optional<WriteOff> write_off(const LoanBook& loan) {
  if (loan.status != LoanStatus::active) return std::nullopt;
  WriteOff written_off;
  written_off.principal = loan.principal_outstanding();
  std::int64_t interest_paid = 0;
  for (const auto& installment : loan.installments) {
    interest_paid += installment.interest_paid;
    written_off.penalties_cancelled += installment.penalty_unpaid();
  }
  written_off.interest_reversed = std::max<std::int64_t>(0, loan.interest_recognised - interest_paid);
  return written_off;
}

void apply(LoanBook& loan, const WriteOff& written_off) {
  loan.principal_written_off = written_off.principal;
  loan.interest_recognised -= written_off.interest_reversed;
  loan.interest_reversed += written_off.interest_reversed;
  loan.status = LoanStatus::written_off;
}

}  // namespace ledger::domain
