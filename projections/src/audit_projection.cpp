// audit: one row per event with who did it and how to trace it, and the event as JSON.
#include <pqxx/pqxx>
#include <pqxx/tablewriter>

#include "ledger/db/sql_text.hpp"
#include "ledger/domain/events.hpp"
#include "writers.hpp"

namespace ledger::projections {

namespace {

class AuditProjection final : public Projection {
 public:
  explicit AuditProjection(const std::string& schema) : audit_(schema + ".audit") {}

  void apply(pqxx::transaction_base& work, const std::vector<domain::RecordedEvent>& events) override {
    if (events.empty()) return;
    std::string rows;
    for (const auto& event : events) {
      const auto decoded = domain::decode_event(event.type, event.payload);
      if (!decoded) {
        throw ProjectionError("position " + std::to_string(event.position.value()) +
                              ": undecodable " + event.type + " payload");
      }
      const auto& m = event.metadata;
      rows += std::to_string(event.position.value()) + '\t';
      db::copy_text(rows, event.stream_id);
      rows += '\t' + std::to_string(event.version.value()) + '\t';
      for (const std::string* field : {&event.type, &event.event_id, &m.actor, &m.command_id,
                                       &m.correlation_id, &m.causation_id, &m.request_id,
                                       &m.client_address}) {
        db::copy_text(rows, *field);
        rows += '\t';
      }
      db::copy_timestamp(rows, event.recorded_at_us);
      rows += '\t';
      db::copy_text(rows, domain::event_to_json(*decoded));
      rows += '\n';
    }
    rows.pop_back();  // the writer adds the last newline
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    // pqxx 6 keeps raw COPY lines only on the deprecated tablewriter.
    pqxx::tablewriter writer(work, audit_);
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
