// loan: the fold of every loan stream (read.loans, one row per installment in
// read.loan_installments), folded with the engine's own apply so it cannot drift from it.
#include <pqxx/pqxx>

#include <unordered_map>

#include "ledger/db/prepared.hpp"
#include "ledger/db/sql_text.hpp"
#include "ledger/domain/events.hpp"
#include "ledger/domain/types.hpp"
#include "ledger/domain/state.hpp"
#include "writers.hpp"

namespace ledger::projections {

namespace {


domain::Date date_from(const pqxx::field& field) {
  const auto date = domain::parse_date(field.c_str());
  if (!date) throw ProjectionError(std::string("read.loans holds a date that does not parse: ") + field.c_str());
  return *date;
}

domain::LoanStatus status_from(std::string_view text) {
  for (const auto status : {domain::LoanStatus::originated, domain::LoanStatus::active, domain::LoanStatus::repaid,
                            domain::LoanStatus::written_off}) {
    if (domain::to_string(status) == text) return status;
  }
  throw ProjectionError("read.loans holds an unknown status " + std::string(text));
}

// The statements of every batch, for the schema's tables (a rebuild writes its shadow's).
std::string select_loans_sql(const std::string& loans) {
  return "SELECT loan_id, borrower, currency, status, principal, rate_bps, installments, "
         "schedule_type, origination_date, first_due_date, origination_fee, late_fee, grace_days, "
         "closed_through, interest_recognised, days_past_due, principal_written_off, "
         "interest_reversed, version FROM " +
         loans + " WHERE loan_id = ANY($1::text[])";
}

std::string select_installments_sql(const std::string& installments) {
  return "SELECT loan_id, number, due_date, principal, interest, principal_paid, interest_paid, "
         "penalty, penalty_paid, overdue, interest_waived FROM " +
         installments + " WHERE loan_id = ANY($1::text[]) ORDER BY loan_id, number";
}

std::string store_loans_sql(const std::string& loans) {
  return "INSERT INTO " + loans +
         " (loan_id, borrower, currency, status, principal, rate_bps, installments, schedule_type, "
         "origination_date, first_due_date, origination_fee, late_fee, grace_days, closed_through, "
         "interest_recognised, days_past_due, principal_written_off, interest_reversed, version, "
         "position) "
         "SELECT a, b, c, d, e, f, g, h, i, j, k, l, m, NULLIF(n, '')::date, o, p, q, r, s, t "
         "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::int[], "
         "$7::int[], $8::text[], $9::date[], $10::date[], $11::bigint[], $12::bigint[], "
         "$13::int[], $14::text[], $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[], "
         "$19::bigint[], $20::bigint[]) "
         "AS x(a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, s, t) "
         "ON CONFLICT (loan_id) DO UPDATE SET status = excluded.status, "
         "closed_through = excluded.closed_through, "
         "interest_recognised = excluded.interest_recognised, "
         "days_past_due = excluded.days_past_due, "
         "principal_written_off = excluded.principal_written_off, "
         "interest_reversed = excluded.interest_reversed, version = excluded.version, "
         "position = excluded.position";
}

std::string store_installments_sql(const std::string& installments) {
  return "INSERT INTO " + installments +
         " (loan_id, number, due_date, principal, interest, principal_paid, interest_paid, "
         "penalty, penalty_paid, overdue, interest_waived) "
         "SELECT * FROM unnest($1::text[], $2::int[], $3::date[], $4::bigint[], $5::bigint[], "
         "$6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::boolean[], "
         "$11::boolean[])";
}

class LoanProjection final : public Projection {
 public:
  explicit LoanProjection(const std::string& schema)
      : loans_(schema + ".loans"),
        installments_(schema + ".loan_installments"),
        load_sql_(select_loans_sql(loans_)),
        installments_sql_(select_installments_sql(installments_)),
        store_sql_(store_loans_sql(loans_)),
        store_installments_sql_(store_installments_sql(installments_)),
        delete_installments_sql_("DELETE FROM " + installments_ +
                                 " WHERE loan_id = ANY($1::text[])") {}

  void apply(pqxx::transaction_base& work, std::span<const domain::RecordedEvent> events) override {
    std::unordered_map<std::string, domain::LoanState> loans;
    db::ArrayLiteral ids;
    for (const auto& event : events) {
      const auto loan = domain::stream_entity_id(event.stream_id, domain::StreamKind::loan);
      if (!loan) continue;
      auto id = std::string(*loan);
      if (loans.try_emplace(id).second) ids.add_text(id);
    }
    if (loans.empty()) return;
    const std::string id_array = ids.finish();
    load(work, id_array, loans);
    std::unordered_map<std::string, std::int64_t> last_position;
    for (const auto& event : events) {
      const auto loan = domain::stream_entity_id(event.stream_id, domain::StreamKind::loan);
      if (!loan) continue;
      const std::string id(*loan);
      domain::LoanState& state = loans.at(id);
      if (event.version.value() != state.version.value() + 1) {
        throw ProjectionError("stream " + event.stream_id + ": version " + std::to_string(event.version.value()) +
                              " follows " + std::to_string(state.version.value()));
      }
      const auto decoded = domain::decode_event(event.type, event.payload);
      if (!decoded) {
        throw ProjectionError("position " + std::to_string(event.position.value()) + ": undecodable " + event.type +
                              " payload");
      }
      domain::apply(state, *decoded);
      last_position[id] = event.position.value();
    }
    store(work, id_array, loans, last_position);
  }

 private:
  void load(pqxx::transaction_base& work, const std::string& ids,
            std::unordered_map<std::string, domain::LoanState>& loans) {
    for (const auto& row :
         db::exec_statement(work, "ledger_load_loans " + loans_, load_sql_, ids)) {
      domain::LoanState& s = loans.at(row[0].as<std::string>());
      s.exists = true;
      s.id = row[0].as<std::string>();
      s.borrower = row[1].as<std::string>();
      s.currency = Currency::parse(row[2].as<std::string>()).value_or(Currency{});
      domain::LoanBook& b = s.book;
      b.status = status_from(row[3].c_str());
      b.terms.principal = row[4].as<std::int64_t>();
      b.terms.rate_bps = row[5].as<std::int32_t>();
      b.terms.installments = row[6].as<std::int32_t>();
      b.terms.type = domain::schedule_type_from(row[7].c_str()).value_or(domain::ScheduleType::annuity);
      b.terms.origination_date = date_from(row[8]);
      b.terms.first_due = date_from(row[9]);
      b.terms.origination_fee = row[10].as<std::int64_t>();
      b.terms.late_fee = row[11].as<std::int64_t>();
      b.terms.grace_days = row[12].as<std::int32_t>();
      if (!row[13].is_null()) b.closed_through = date_from(row[13]);
      b.interest_recognised = row[14].as<std::int64_t>();
      b.days_past_due = row[15].as<std::int64_t>();
      b.principal_written_off = row[16].as<std::int64_t>();
      b.interest_reversed = row[17].as<std::int64_t>();
      s.version = StreamVersion(row[18].as<std::int64_t>());
    }
    for (const auto& row : db::exec_statement(work, "ledger_load_installments " + installments_,
                                              installments_sql_, ids)) {
      domain::InstallmentBook i;
      i.number = row[1].as<std::int32_t>();
      i.due_date = date_from(row[2]);
      i.principal = row[3].as<std::int64_t>();
      i.interest = row[4].as<std::int64_t>();
      i.principal_paid = row[5].as<std::int64_t>();
      i.interest_paid = row[6].as<std::int64_t>();
      i.penalty = row[7].as<std::int64_t>();
      i.penalty_paid = row[8].as<std::int64_t>();
      i.overdue = row[9].as<bool>();
      i.interest_waived = row[10].as<bool>();
      loans.at(row[0].as<std::string>()).book.installments.push_back(i);
    }
  }

  void store(pqxx::transaction_base& work, const std::string& ids,
             const std::unordered_map<std::string, domain::LoanState>& loans,
             const std::unordered_map<std::string, std::int64_t>& last_position) {
    db::ArrayLiteral id, borrower, currency, status, principal, rate, count, type, originated, first_due, fee,
        late_fee, grace, closed_through, recognised, dpd, written_off, reversed, version, position;
    db::ArrayLiteral i_loan, i_number, i_due, i_principal, i_interest, i_principal_paid, i_interest_paid, i_penalty,
        i_penalty_paid, i_overdue, i_waived;
    for (const auto& [loan_id, s] : loans) {
      const domain::LoanBook& b = s.book;
      id.add_text(loan_id);
      borrower.add_text(s.borrower);
      currency.add_text(s.currency.code());
      status.add_text(domain::to_string(b.status));
      principal.add_number(b.terms.principal);
      rate.add_number(b.terms.rate_bps);
      count.add_number(b.terms.installments);
      type.add_text(domain::to_string(b.terms.type));
      originated.add_text(domain::to_string(b.terms.origination_date));
      first_due.add_text(domain::to_string(b.terms.first_due));
      fee.add_number(b.terms.origination_fee);
      late_fee.add_number(b.terms.late_fee);
      grace.add_number(b.terms.grace_days);
      closed_through.add_text(b.closed_through ? domain::to_string(*b.closed_through) : "");
      recognised.add_number(b.interest_recognised);
      dpd.add_number(b.days_past_due);
      written_off.add_number(b.principal_written_off);
      reversed.add_number(b.interest_reversed);
      version.add_number(s.version.value());
      position.add_number(last_position.at(loan_id));
      for (const auto& i : b.installments) {
        i_loan.add_text(loan_id);
        i_number.add_number(i.number);
        i_due.add_text(domain::to_string(i.due_date));
        i_principal.add_number(i.principal);
        i_interest.add_number(i.interest);
        i_principal_paid.add_number(i.principal_paid);
        i_interest_paid.add_number(i.interest_paid);
        i_penalty.add_number(i.penalty);
        i_penalty_paid.add_number(i.penalty_paid);
        i_overdue.add_text(i.overdue ? "t" : "f");
        i_waived.add_text(i.interest_waived ? "t" : "f");
      }
    }
    db::exec_statement(
        work, "ledger_store_loans " + loans_, store_sql_, id.finish(), borrower.finish(),
        currency.finish(), status.finish(), principal.finish(), rate.finish(), count.finish(),
        type.finish(), originated.finish(), first_due.finish(), fee.finish(), late_fee.finish(),
        grace.finish(), closed_through.finish(), recognised.finish(), dpd.finish(),
        written_off.finish(), reversed.finish(), version.finish(), position.finish());
    // Installments change together with their loan: replaced as a whole.
    db::exec_statement(work, "ledger_delete_installments " + installments_,
                       delete_installments_sql_, ids);
    if (i_loan.empty()) return;
    db::exec_statement(work, "ledger_store_installments " + installments_, store_installments_sql_,
                       i_loan.finish(), i_number.finish(), i_due.finish(), i_principal.finish(),
                       i_interest.finish(), i_principal_paid.finish(), i_interest_paid.finish(),
                       i_penalty.finish(), i_penalty_paid.finish(), i_overdue.finish(),
                       i_waived.finish());
  }

  std::string loans_;
  std::string installments_;
  // Prepared once per session under a name that holds the table.
  std::string load_sql_;
  std::string installments_sql_;
  std::string store_sql_;
  std::string store_installments_sql_;
  std::string delete_installments_sql_;
};

}  // namespace

std::unique_ptr<Projection> make_loan_projection(const std::string& schema) {
  return std::make_unique<LoanProjection>(schema);
}

}  // namespace ledger::projections
