// GET /metrics: the front's own metrics (Metrics), then the database, engine, cache and
// read-side gauges from the health snapshot (at most health_refresh_interval old).
#include <fmt/format.h>

#include "../read_side_health.hpp"
#include "handlers.hpp"
#include "ledger/core/histogram.hpp"
#include "ledger/engine/engine.hpp"

namespace ledger::api::handlers {

namespace http = boost::beast::http;

namespace {

void append_database_metrics(std::string& out, const DatabaseHealth& database, std::uint64_t refreshes) {
  out += "# TYPE ledger_health_refreshes_total counter\n";
  out += fmt::format("ledger_health_refreshes_total {}\n", refreshes);
  out += "# TYPE ledger_database_pool_connections gauge\n";
  out += fmt::format("ledger_database_pool_connections{{state=\"open\"}} {}\n", database.pool_open);
  out += fmt::format("ledger_database_pool_connections{{state=\"in_use\"}} {}\n", database.pool_in_use);
  out += fmt::format("ledger_database_pool_connections{{state=\"max\"}} {}\n", database.pool_max);
  out += fmt::format("ledger_database_up {}\n", database.reachable ? 1 : 0);
}

void append_cache_metrics(std::string& out, const engine::EngineStats& stats) {
  out += "# TYPE ledger_state_cache_streams gauge\n";
  out += fmt::format("ledger_state_cache_streams {}\n", stats.cache_streams);
  out += fmt::format("ledger_state_cache_streams_max {}\n", stats.cache_streams_max);
  out += "# TYPE ledger_state_cache_lookups_total counter\n";
  out += fmt::format("ledger_state_cache_lookups_total{{result=\"hit\"}} {}\n", stats.cache_hits);
  out += fmt::format("ledger_state_cache_lookups_total{{result=\"miss\"}} {}\n", stats.cache_misses);
  // The same lookups by stream kind (their sums are the totals above): the account streams'
  // hit rate is what a large account population needs.
  out += "# TYPE ledger_state_cache_kind_lookups_total counter\n";
  for (std::size_t kind = 0; kind < engine::state_cache_kinds; ++kind) {
    const auto name = engine::to_string(static_cast<engine::StateCacheKind>(kind));
    const auto& lookups = stats.cache_breakdown.lookups.at(kind);
    out += fmt::format("ledger_state_cache_kind_lookups_total{{kind=\"{}\",result=\"hit\"}} {}\n", name, lookups.hits);
    out += fmt::format("ledger_state_cache_kind_lookups_total{{kind=\"{}\",result=\"miss\"}} {}\n", name,
                       lookups.misses);
  }
  out += "# HELP ledger_state_cache_settled_transfer_streams Settled transfers cached (an eighth at most).\n";
  out += "# TYPE ledger_state_cache_settled_transfer_streams gauge\n";
  out += fmt::format("ledger_state_cache_settled_transfer_streams {}\n",
                     stats.cache_breakdown.settled_transfer_streams);
  if (stats.snapshots_enabled) {
    out += "# TYPE ledger_snapshot_reads_total counter\n";
    out += fmt::format("ledger_snapshot_reads_total{{result=\"hit\"}} {}\n", stats.snapshots.hits);
    out += fmt::format("ledger_snapshot_reads_total{{result=\"miss\"}} {}\n", stats.snapshots.misses);
    out += fmt::format("ledger_snapshot_reads_total{{result=\"corrupt\"}} {}\n", stats.snapshots.corrupt);
    out += "# TYPE ledger_snapshot_writes_total counter\n";
    out += fmt::format("ledger_snapshot_writes_total {}\n", stats.snapshots.written);
  }
}

// Per instance: summed over the instances, holds_expired counts each expired hold once.
void append_hold_expiry_metrics(std::string& out, const engine::HoldExpiryStats& expiry) {
  if (!expiry.enabled) return;
  out += "# HELP ledger_hold_expiry_leader 1 while this instance holds the sweeper's lock and sweeps.\n";
  out += "# TYPE ledger_hold_expiry_leader gauge\n";
  out += fmt::format("ledger_hold_expiry_leader {}\n", expiry.leader ? 1 : 0);
  out += "# TYPE ledger_hold_expiry_sweeps_total counter\n";
  out += fmt::format("ledger_hold_expiry_sweeps_total {}\n", expiry.sweeps);
  out += "# TYPE ledger_holds_expired_total counter\n";
  out += fmt::format("ledger_holds_expired_total {}\n", expiry.holds_expired);
  out += "# TYPE ledger_hold_expiry_leadership_acquired_total counter\n";
  out += fmt::format("ledger_hold_expiry_leadership_acquired_total {}\n", expiry.leadership_acquired);
  out += "# TYPE ledger_hold_expiry_leadership_lost_total counter\n";
  out += fmt::format("ledger_hold_expiry_leadership_lost_total {}\n", expiry.leadership_lost);
}

void append_engine_metrics(std::string& out, const engine::EngineStats& stats) {
  out += "# TYPE ledger_engine_batches_total counter\n";
  out += fmt::format("ledger_engine_batches_total {}\n", stats.batches);
  out += fmt::format("ledger_engine_events_total {}\n", stats.events);
  out += fmt::format("ledger_engine_commands_total{{outcome=\"accepted\"}} {}\n", stats.commands_accepted);
  out += fmt::format("ledger_engine_commands_total{{outcome=\"rejected\"}} {}\n", stats.commands_rejected);
  out += fmt::format("ledger_engine_conflicts_total {}\n", stats.conflicts);
  out += fmt::format("ledger_engine_commands_redecided_total {}\n", stats.commands_redecided);
  out += "# HELP ledger_engine_pipeline_stalls_total Times the writer stopped deciding ahead of the batches in flight.\n";
  out += "# TYPE ledger_engine_pipeline_stalls_total counter\n";
  out += fmt::format("ledger_engine_pipeline_stalls_total {}\n", stats.pipeline_stalls);
  out += "# HELP ledger_engine_batches_run_again_total Batches given back to the writer to run again the serial way.\n";
  out += "# TYPE ledger_engine_batches_run_again_total counter\n";
  out += fmt::format("ledger_engine_batches_run_again_total {}\n", stats.batches_run_again);
  out +=
      "# HELP ledger_engine_appends_on_own_head_total Appends in one autocommit statement on the "
      "head the serve's last commit left; head_moved: tries that found another writer's commits "
      "first.\n";
  out += "# TYPE ledger_engine_appends_on_own_head_total counter\n";
  out += fmt::format("ledger_engine_appends_on_own_head_total{{outcome=\"committed\"}} {}\n",
                     stats.appends_on_own_head);
  out += fmt::format("ledger_engine_appends_on_own_head_total{{outcome=\"head_moved\"}} {}\n",
                     stats.appends_on_own_head_missed);
  out += fmt::format("ledger_engine_queued_commands {}\n", stats.queued);
  out += "# HELP ledger_engine_circuit_open 1 while the database circuit breaker is open or half open.\n";
  out += "# TYPE ledger_engine_circuit_open gauge\n";
  out += fmt::format("ledger_engine_circuit_open {}\n", stats.circuit == engine::CircuitState::closed ? 0 : 1);
  out += "# TYPE ledger_engine_circuit_opened_total counter\n";
  out += fmt::format("ledger_engine_circuit_opened_total {}\n", stats.circuit_opened);
  append_prometheus_histogram(out, "ledger_engine_commit_latency_seconds", "Time to append and commit a batch.",
                              stats.commit_latency_seconds);
  append_prometheus_histogram(out, "ledger_engine_batch_commands", "Commands per committed batch.",
                              stats.batch_commands);
  append_prometheus_histogram(out, "ledger_engine_head_lock_wait_seconds",
                              "Time a committed append waited for the event store's head row.",
                              stats.head_lock_wait_seconds);
  append_prometheus_histogram(out, "ledger_engine_head_lock_held_seconds",
                              "Time a committed append held the event store's head row, through its COMMIT.",
                              stats.head_lock_held_seconds);
  out +=
      "# HELP ledger_engine_append_step_seconds_total Time committed appends spent in each step of "
      "their hold of the head row: hashing and encoding the rows, the statement that writes them "
      "and moves the head, and the COMMIT (per hold: "
      "ledger_engine_head_lock_held_seconds_count).\n";
  out += "# TYPE ledger_engine_append_step_seconds_total counter\n";
  const std::pair<const char*, double> steps[] = {
      {"rows", stats.append_step_seconds.rows},
      {"write", stats.append_step_seconds.write},
      {"commit", stats.append_step_seconds.commit}};
  for (const auto& [step, seconds] : steps) {
    out +=
        fmt::format("ledger_engine_append_step_seconds_total{{step=\"{}\"}} {}\n", step, seconds);
  }
  append_cache_metrics(out, stats);
  append_hold_expiry_metrics(out, stats.hold_expiry);
}

void append_token_cache_metrics(std::string& out, const TokenCacheStats& stats) {
  out += "# HELP ledger_jwt_cache_lookups_total Bearer tokens found in the verified-token cache (hit) or verified (miss).\n";
  out += "# TYPE ledger_jwt_cache_lookups_total counter\n";
  out += fmt::format("ledger_jwt_cache_lookups_total{{result=\"hit\"}} {}\n", stats.hits);
  out += fmt::format("ledger_jwt_cache_lookups_total{{result=\"miss\"}} {}\n", stats.misses);
  out += "# TYPE ledger_jwt_cache_tokens gauge\n";
  out += fmt::format("ledger_jwt_cache_tokens {}\n", stats.entries);
}

void append_read_replica_metrics(std::string& out, const ReadReplicaHealth& replica) {
  out += "# TYPE ledger_read_replica_up gauge\n";
  out += fmt::format("ledger_read_replica_up {}\n", replica.reachable && replica.in_recovery ? 1 : 0);
  out += "# TYPE ledger_read_replica_lag_events gauge\n";
  out += fmt::format("ledger_read_replica_lag_events {}\n", replica.lag_events);
  out += "# TYPE ledger_read_replica_replay_lag_seconds gauge\n";
  out += fmt::format("ledger_read_replica_replay_lag_seconds {}\n", replica.replay_lag_seconds);
}

}  // namespace

void answer_metrics(const Context& context, const Reply& reply) {
  context.health.get([context, reply](std::shared_ptr<const HealthSnapshot> snapshot) {
    std::string extra;
    append_database_metrics(extra, snapshot->database, context.health.refreshes());
    if (context.services.engine != nullptr) append_engine_metrics(extra, context.services.engine->stats());
    if (context.tokens != nullptr) append_token_cache_metrics(extra, context.tokens->cache_stats());
    extra += read_side_metrics(snapshot->read_side);
    if (snapshot->read_replica) append_read_replica_metrics(extra, *snapshot->read_replica);
    Response response{http::status::ok, reply.version};
    response.set(http::field::content_type, "text/plain; version=0.0.4");
    response.body() = context.metrics.render(extra);
    response.prepare_payload();
    reply.send(std::move(response));
  });
}

}  // namespace ledger::api::handlers
