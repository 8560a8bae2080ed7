#pragma once
// Health and metrics of the read side: Kafka, the relay and each projection's lag.

#include <string>
#include <vector>

#include "json_text.hpp"
#include "ledger/api/server.hpp"
#include "ledger/projections/read_models.hpp"

namespace ledger::api {

struct ReadSideHealth {
  RelayHealth relay;
  bool projections_known = false;
  std::vector<projections::ProjectionProgress> projections;
  std::string projections_error;
};

// Blocking: asks the relay and reads the projections' watermarks.
[[nodiscard]] ReadSideHealth check_read_side(const Services& services);
// Kafka unreachable, the relay stuck, a projection far behind or stalled: the read side is delayed.
[[nodiscard]] bool read_side_degraded(const ReadSideHealth& health);
// Writes the "kafka", "relay" and "projections" members of /health's components.
void write_read_side_health(JsonWriter& w, const ReadSideHealth& health);
[[nodiscard]] std::string read_side_metrics(const ReadSideHealth& health);

}  // namespace ledger::api
