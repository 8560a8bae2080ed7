// audit: one row per event with what the audit query filters and orders by (position, type,
// actor, time). The rest of an answer is read from the event store by position
// (ReadModels::audit): the store already is the audit trail, a copy of it cost a jsonb row. A
// query by stream walks the store's (stream_id, version) index (migration 0015).
#include <pqxx/pqxx>
#include <pqxx/tablewriter>

#include "ledger/db/sql_text.hpp"
#include "ledger/domain/events.hpp"
#include "writers.hpp"

namespace ledger::projections {

namespace {

// Named, so the COPY does not depend on the table's column order.
const std::vector<std::string> audit_columns{"position", "type", "actor", "recorded_at"};

class AuditProjection final : public Projection {
 public:
  explicit AuditProjection(const std::string& schema) : audit_(schema + ".audit") {}

  void apply(pqxx::transaction_base& work, std::span<const domain::RecordedEvent> events) override {
    if (events.empty()) return;
    std::string rows;
    for (const auto& event : events) {
      const auto decoded = domain::decode_event(event.type, event.payload);
      if (!decoded) {
        throw ProjectionError("position " + std::to_string(event.position.value()) +
                              ": undecodable " + event.type + " payload");
      }
      rows += std::to_string(event.position.value()) + '\t';
      db::copy_text(rows, event.type);
      rows += '\t';
      db::copy_text(rows, event.metadata.actor);
      rows += '\t';
      db::copy_timestamp(rows, event.recorded_at_us);
      rows += '\n';
    }
    rows.pop_back();  // the writer adds the last newline
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    // pqxx 6 keeps raw COPY lines only on the deprecated tablewriter.
    pqxx::tablewriter writer(work, audit_, audit_columns.begin(), audit_columns.end());
    writer.write_raw_line(rows);
    writer.complete();
#pragma GCC diagnostic pop
  }

 private:
  std::string audit_;
};

}  // namespace

std::unique_ptr<Projection> make_audit_projection(const std::string& schema) {
  return std::make_unique<AuditProjection>(schema);
}

}  // namespace ledger::projections
