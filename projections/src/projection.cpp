#include "ledger/projections/projection.hpp"

#include "writers.hpp"

namespace ledger::projections {

std::unique_ptr<Projection> make_projection(ProjectionKind kind, const std::string& schema,
                                            const WriterOptions& options) {
  // Only balances keep states (a rebuild's hottest upsert); the others write every batch.
  switch (kind) {
    case ProjectionKind::balance: return make_balance_projection(schema, options);
    case ProjectionKind::audit: return make_audit_projection(schema);
    case ProjectionKind::loan: return make_loan_projection(schema);
  }
  throw std::logic_error("unknown projection");
}

const std::vector<std::string>& projection_tables(ProjectionKind kind) {
  static const std::vector<std::string> balance{"balances", "entries"};
  static const std::vector<std::string> audit{"audit"};
  static const std::vector<std::string> loan{"loans", "loan_installments"};
  switch (kind) {
    case ProjectionKind::balance: return balance;
    case ProjectionKind::audit: return audit;
    case ProjectionKind::loan: return loan;
  }
  throw std::logic_error("unknown projection");
}

const std::vector<std::string>& tables_written_by_key(ProjectionKind kind) {
  // balances: ON CONFLICT (account_id); loans: ON CONFLICT (loan_id); loan_installments: a
  // loan's rows deleted and written again. entries and audit are COPYed to, nothing else.
  static const std::vector<std::string> balance{"balances"};
  static const std::vector<std::string> audit{};
  static const std::vector<std::string> loan{"loans", "loan_installments"};
  switch (kind) {
    case ProjectionKind::balance: return balance;
    case ProjectionKind::audit: return audit;
    case ProjectionKind::loan: return loan;
  }
  throw std::logic_error("unknown projection");
}

}  // namespace ledger::projections
