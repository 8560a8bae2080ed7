#include "read_side_health.hpp"

#include <fmt/format.h>

namespace ledger::api {

namespace {

// Beyond these the read side counts as degraded (delayed, never lossy: invariant 9).
constexpr double kafka_stuck_seconds = 5.0;
constexpr double projection_behind_seconds = 10.0;

bool kafka_down(const RelayHealth& relay) {
  return relay.enabled && relay.leader &&
         (!relay.kafka_reachable || relay.oldest_unacknowledged_seconds > kafka_stuck_seconds);
}

// The leading relay waits at a position the event store lacks: nothing after it reaches Kafka.
bool relay_stopped_at_hole(const RelayHealth& relay) {
  return relay.enabled && relay.leader && relay.missing_position > 0;
}

}  // namespace

ReadSideHealth check_read_side(const Services& services) {
  ReadSideHealth health;
  if (services.check_relay) health.relay = services.check_relay();
  if (services.read_models != nullptr) {
    try {
      health.projections = services.read_models->progress();
      health.projections_known = true;
    } catch (const std::exception& error) {
      health.projections_error = error.what();
    }
  }
  return health;
}

bool read_side_degraded(const ReadSideHealth& health) {
  if (kafka_down(health.relay) || relay_stopped_at_hole(health.relay)) return true;
  for (const auto& projection : health.projections) {
    if (projection.stalled_position > 0 || projection.lag_seconds > projection_behind_seconds) return true;
  }
  return false;
}

void write_read_side_health(JsonWriter& w, const ReadSideHealth& health) {
  const RelayHealth& relay = health.relay;
  w.Key("kafka");
  w.StartObject();
  write_member(w, "status", !relay.enabled ? "not_running" : !relay.leader ? "unknown" : kafka_down(relay) ? "down" : "up");
  // No librdkafka error text: it names brokers, and /health needs no token (the relay logs it).
  w.EndObject();

  w.Key("relay");
  w.StartObject();
  write_member(w, "status",
               !relay.enabled                 ? "not_running"
               : !relay.leader                ? "standby"
               : relay_stopped_at_hole(relay) ? "stalled"
               : kafka_down(relay)            ? "delayed"
                                              : "up");
  if (relay_stopped_at_hole(relay)) write_member(w, "missing_position", relay.missing_position);
  if (relay.enabled) {
    write_member(w, "acknowledged_position", relay.acknowledged);
    write_member(w, "head_position", relay.head);
    write_member(w, "lag_events", relay.head - relay.acknowledged);
    w.Key("oldest_unacknowledged_seconds");
    w.Double(relay.oldest_unacknowledged_seconds);
  }
  w.EndObject();

  w.Key("projections");
  w.StartObject();
  w.Key("status");
  bool behind = false;
  bool stalled = false;
  for (const auto& projection : health.projections) {
    behind |= projection.lag_seconds > projection_behind_seconds;
    stalled |= projection.stalled_position > 0;
  }
  write_string(w, !health.projections_known ? "unknown" : stalled ? "stalled" : behind ? "behind" : "up");
  if (!health.projections_error.empty()) {
    w.Key("error");
    write_string(w, "the watermarks cannot be read now");  // the cause may name the database
  }
  for (const auto& projection : health.projections) {
    w.Key(projection.name.c_str());
    w.StartObject();
    w.Key("status");
    write_string(w, projection.stalled_position > 0                        ? "stalled"
                    : projection.lag_seconds > projection_behind_seconds ? "behind"
                                                                         : "up");
    if (projection.stalled_position > 0) {
      // The projector cannot apply this position and retries it with backoff (projections/README.md).
      write_member(w, "stalled_position", projection.stalled_position);
      write_member(w, "stalled_reason", projection.stalled_reason);
      w.Key("stalled_seconds");
      w.Double(projection.stalled_seconds);
    }
    write_member(w, "watermark", projection.watermark);
    write_member(w, "lag_events", projection.lag_events);
    w.Key("lag_ms");
    w.Double(projection.lag_seconds * 1e3);
    w.Key("events_per_second");
    w.Double(projection.events_per_second);
    w.EndObject();
  }
  w.EndObject();
}

std::string read_side_metrics(const ReadSideHealth& health) {
  std::string out;
  const RelayHealth& relay = health.relay;
  if (relay.enabled) {
    out += "# TYPE ledger_relay_leader gauge\n";
    out += fmt::format("ledger_relay_leader {}\n", relay.leader ? 1 : 0);
    out += "# TYPE ledger_relay_lag_events gauge\n";
    out += fmt::format("ledger_relay_lag_events {}\n", relay.head - relay.acknowledged);
    out += fmt::format("ledger_relay_acknowledged_position {}\n", relay.acknowledged);
    out += fmt::format("ledger_kafka_up {}\n", kafka_down(relay) ? 0 : 1);
    out += "# TYPE ledger_relay_missing_position gauge\n";
    out += fmt::format("ledger_relay_missing_position {}\n",
                       relay_stopped_at_hole(relay) ? relay.missing_position : 0);
  }
  if (!health.projections.empty()) {
    out += "# TYPE ledger_projection_watermark gauge\n";
    for (const auto& p : health.projections) {
      out += fmt::format("ledger_projection_watermark{{projection=\"{}\"}} {}\n", p.name, p.watermark);
    }
    out += "# TYPE ledger_projection_lag_events gauge\n";
    for (const auto& p : health.projections) {
      out += fmt::format("ledger_projection_lag_events{{projection=\"{}\"}} {}\n", p.name, p.lag_events);
    }
    out += "# TYPE ledger_projection_events_applied_total counter\n";
    for (const auto& p : health.projections) {
      out += fmt::format("ledger_projection_events_applied_total{{projection=\"{}\"}} {}\n", p.name,
                         p.events_applied);
    }
    out += "# TYPE ledger_projection_stalled gauge\n";
    for (const auto& p : health.projections) {
      out += fmt::format("ledger_projection_stalled{{projection=\"{}\"}} {}\n", p.name, p.stalled_position > 0 ? 1 : 0);
    }
    out += "# TYPE ledger_projection_stalled_position gauge\n";
    for (const auto& p : health.projections) {
      out += fmt::format("ledger_projection_stalled_position{{projection=\"{}\"}} {}\n", p.name, p.stalled_position);
    }
    out += "# TYPE ledger_projection_lag_seconds gauge\n";
    for (const auto& p : health.projections) {
      out += fmt::format("ledger_projection_lag_seconds{{projection=\"{}\"}} {}\n", p.name, p.lag_seconds);
    }
  }
  return out;
}

}  // namespace ledger::api
