#pragma once
// One read model's writer (private to projections/): applies events, strictly in global
// position order, inside the projector's transaction.

#include <pqxx/pqxx>

#include <memory>
#include <vector>

#include "ledger/engine/event_store.hpp"
#include "ledger/projections/projector.hpp"

namespace ledger::projections {

class Projection {
 public:
  virtual ~Projection() = default;
  // `events` are contiguous in position and follow the projection's watermark.
  virtual void apply(pqxx::work& work, const std::vector<engine::RecordedEvent>& events) = 0;
};

[[nodiscard]] std::unique_ptr<Projection> make_balance_projection();
[[nodiscard]] std::unique_ptr<Projection> make_audit_projection();
[[nodiscard]] std::unique_ptr<Projection> make_projection(ProjectionKind kind);

// A corrupt or inconsistent input the projector must not paper over (it stops and retries).
class ProjectionError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace ledger::projections
