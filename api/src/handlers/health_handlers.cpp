// The routes that need no token, /metrics apart: /health, /health/ready, /health/live and
// /openapi.json. Health answers from a snapshot at most health_refresh_interval old
// (HealthSnapshots). No error text: it names hosts, ports and users, and these routes need no
// token; the server log has the cause (redacted), once per change.
#include <rapidjson/stringbuffer.h>

#include "../json_text.hpp"
#include "../openapi_document.hpp"
#include "../read_side_health.hpp"
#include "handlers.hpp"
#include "ledger/engine/engine.hpp"

namespace ledger::api::handlers {

namespace http = boost::beast::http;

namespace {

// Both caches are only caches (DESIGN.md invariant 7): they never make the service unhealthy.
void write_snapshot_cache_health(JsonWriter& w, const engine::EngineStats& stats) {
  w.Key("snapshot_cache");
  w.StartObject();
  write_member(w, "status", stats.snapshots_enabled ? "up" : "disabled");
  w.Key("state_cache");
  w.StartObject();
  w.Key("streams");
  w.Uint64(stats.cache_streams);
  w.Key("streams_max");
  w.Uint64(stats.cache_streams_max);
  w.Key("hits");
  w.Uint64(stats.cache_hits);
  w.Key("misses");
  w.Uint64(stats.cache_misses);
  w.EndObject();
  if (stats.snapshots_enabled) {
    w.Key("snapshots");
    w.StartObject();
    w.Key("hits");
    w.Uint64(stats.snapshots.hits);
    w.Key("misses");
    w.Uint64(stats.snapshots.misses);
    w.Key("corrupt");
    w.Uint64(stats.snapshots.corrupt);
    w.Key("written");
    w.Uint64(stats.snapshots.written);
    w.Key("directory_rebuilt");
    w.Bool(stats.snapshots.directory_rebuilt);
    w.EndObject();
  }
  w.EndObject();
}

void write_database_health(JsonWriter& w, const DatabaseHealth& database) {
  w.Key("database");
  w.StartObject();
  write_member(w, "status", database.reachable ? "up" : "down");
  w.Key("latency_ms");
  w.Double(database.latency_ms);
  w.Key("pool");
  w.StartObject();
  w.Key("open");
  w.Uint64(database.pool_open);
  w.Key("in_use");
  w.Uint64(database.pool_in_use);
  w.Key("max");
  w.Uint64(database.pool_max);
  w.EndObject();
  w.EndObject();
  w.Key("migrations");
  w.StartObject();
  write_member(w, "status", database.pending_migrations.empty() ? "up" : "pending");
  w.Key("pending");
  w.StartArray();
  for (const auto& pending : database.pending_migrations) write_string(w, pending);
  w.EndArray();
  w.EndObject();
}

// One instance sweeps at a time (the leader); a standby is healthy, it takes over when needed.
void write_hold_expiry_health(JsonWriter& w, const engine::HoldExpiryStats& expiry) {
  w.Key("hold_expiry");
  w.StartObject();
  write_member(w, "status", !expiry.enabled ? "disabled" : expiry.leader ? "leader" : "standby");
  if (expiry.enabled) {
    write_member(w, "sweeps", expiry.sweeps);
    write_member(w, "holds_expired", expiry.holds_expired);
  }
  w.EndObject();
}

void write_engine_health(JsonWriter& w, const engine::EngineStats& stats) {
  w.Key("engine");
  w.StartObject();
  write_member(w, "status", stats.circuit == engine::CircuitState::closed ? "up" : "failing_fast");
  write_member(w, "circuit", engine::to_string(stats.circuit));
  w.Key("queued_commands");
  w.Uint64(stats.queued);
  w.Key("batches");
  w.Uint64(stats.batches);
  w.EndObject();
  write_snapshot_cache_health(w, stats);
  write_hold_expiry_health(w, stats.hold_expiry);
}

// A replica only serves queries: down or lagging it degrades the service, never makes it
// unready (commands still work on the primary).
bool replica_degraded(const std::optional<ReadReplicaHealth>& replica) {
  return replica && (!replica->reachable || !replica->in_recovery || replica->replay_paused);
}

void write_read_replica_health(JsonWriter& w, const ReadReplicaHealth& replica) {
  w.Key("read_replica");
  w.StartObject();
  write_member(w, "status", !replica.reachable    ? "down"
                            : !replica.in_recovery ? "not_a_replica"
                            : replica.replay_paused ? "replay_paused"
                                                    : "up");
  if (replica.reachable) {
    write_member(w, "head_position", replica.head);
    write_member(w, "lag_events", replica.lag_events);
    w.Key("replay_lag_seconds");
    w.Double(replica.replay_lag_seconds);
  }
  w.EndObject();
}

bool is_ready(const DatabaseHealth& database) { return database.reachable && database.pending_migrations.empty(); }

std::string ready_json(const DatabaseHealth& database) {
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  write_member(w, "status", is_ready(database) ? "ready" : "not_ready");
  if (!database.reachable) {
    w.Key("reason");
    write_string(w, "database unreachable");  // the cause is in the server log, not here
  } else if (!database.pending_migrations.empty()) {
    write_member(w, "reason", "migrations pending");
  }
  w.EndObject();
  return {buffer.GetString(), buffer.GetSize()};
}

std::string health_json(const Context& context, const HealthSnapshot& snapshot) {
  const DatabaseHealth& database = snapshot.database;
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("status");
  write_string(w, !database.reachable                                          ? "unhealthy"
                  : (is_ready(database) && !read_side_degraded(snapshot.read_side) &&
                     !replica_degraded(snapshot.read_replica))
                      ? "healthy"
                      : "degraded");
  w.Key("components");
  w.StartObject();
  write_database_health(w, database);
  if (context.services.engine != nullptr) write_engine_health(w, context.services.engine->stats());
  write_read_side_health(w, snapshot.read_side);
  if (snapshot.read_replica) write_read_replica_health(w, *snapshot.read_replica);
  w.EndObject();
  w.EndObject();
  return {buffer.GetString(), buffer.GetSize()};
}

}  // namespace

void answer_health(const Context& context, HealthView view, const Reply& reply) {
  context.health.get([context, view, reply](std::shared_ptr<const HealthSnapshot> snapshot) {
    const DatabaseHealth& database = snapshot->database;
    switch (view) {
      case HealthView::ready:
        reply.json(is_ready(database) ? http::status::ok : http::status::service_unavailable, ready_json(database));
        return;
      case HealthView::full:
        reply.json(database.reachable ? http::status::ok : http::status::service_unavailable,
                   health_json(context, *snapshot));
        return;
    }
  });
}

void answer_health_live(const Reply& reply) { reply.json(http::status::ok, R"({"status":"alive"})"); }

void answer_openapi(const Reply& reply) { reply.json(http::status::ok, std::string(openapi_document())); }

}  // namespace ledger::api::handlers
