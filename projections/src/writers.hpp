#pragma once
// The read-model writers (private to projections/; make_projection picks one).

#include "ledger/projections/projection.hpp"

namespace ledger::projections {

[[nodiscard]] std::unique_ptr<Projection> make_balance_projection(const std::string& schema,
                                                                  const WriterOptions& options);
[[nodiscard]] std::unique_ptr<Projection> make_audit_projection(const std::string& schema);
[[nodiscard]] std::unique_ptr<Projection> make_loan_projection(const std::string& schema);

}  // namespace ledger::projections
