// `ledger project <balance|audit|loan|all>`: projector processes, one Kafka consumer group each.
#include <signal.h>

#include <spdlog/spdlog.h>

#include "commands.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/projections/projector.hpp"

namespace ledger::app {

CommandAction register_project_command(CLI::App& root, Settings& settings) {
  auto* project = root.add_subcommand("project", "Run projectors that build the read models from Kafka");
  auto which = std::make_shared<std::string>("all");
  auto batch_events = std::make_shared<std::size_t>(5'000);
  auto catch_up_batch_events = std::make_shared<std::size_t>(projections::ProjectorSettings{}.catch_up_batch_events_max);
  auto gap_wait_ms = std::make_shared<int>(1'000);
  auto batch_linger_ms = std::make_shared<int>(0);
  auto states_kept = std::make_shared<std::size_t>(projections::ProjectorSettings{}.states_kept);
  std::vector<std::string> names{"all"};
  for (const auto kind : projections::all_projections()) names.emplace_back(projections::to_string(kind));
  project->add_option("projection", *which, "Which read model: all, balance (with statements), audit, loan")
      ->check(CLI::IsMember(names))
      ->capture_default_str();
  project->add_option("--batch-events-max", *batch_events, "Events applied per transaction")
      ->envname("LEDGER_PROJECT_BATCH_EVENTS_MAX")->check(CLI::Range(1, 1'000'000))->capture_default_str();
  project->add_option("--catch-up-batch-events-max", *catch_up_batch_events,
                      "Events applied per transaction while catching up from the event store (at least "
                      "--batch-events-max)")
      ->envname("LEDGER_PROJECT_CATCH_UP_BATCH_EVENTS_MAX")->check(CLI::Range(1, 1'000'000))->capture_default_str();
  project
      ->add_option(
          "--batch-linger-ms", *batch_linger_ms,
          "After a round's first event, how long it waits for more before applying them (0: "
          "applies once nothing more is fetched; a round costs about a dozen statements "
          "whatever it holds)")
      ->envname("LEDGER_PROJECT_BATCH_LINGER_MS")
      ->check(CLI::Range(0, 1'000))
      ->capture_default_str();
  project
      ->add_option(
          "--balance-states-kept", *states_kept,
          "Accounts the balance projector keeps folded in memory between rounds, about 250 "
          "bytes each (0: every round reads the accounts it touches from the table)")
      ->envname("LEDGER_PROJECT_BALANCE_STATES_KEPT")
      ->check(CLI::Range(std::size_t{0}, std::size_t{100'000'000}))
      ->capture_default_str();
  project->add_option("--gap-wait-ms", *gap_wait_ms,
                      "Read a position from the event store when Kafka has not delivered it for this long")
      ->envname("LEDGER_PROJECT_GAP_WAIT_MS")->check(CLI::Range(10, 600'000))->capture_default_str();

  return [=, &settings]() -> int {
    const sigset_t stop_signals = block_stop_signals();
    configure_logging(settings, "project");

    db::PoolSettings pool_settings;
    pool_settings.url = resolve_database_url(settings);
    pool_settings.connections_max = 8;
    pool_settings.connect_timeout = std::chrono::milliseconds(settings.database_connect_timeout_ms);
    pool_settings.statement_timeout = std::chrono::milliseconds(settings.database_statement_timeout_ms);
    db::ConnectionPool pool(pool_settings);

    projections::ProjectorSettings projector_settings;
    projector_settings.brokers = resolve_kafka_brokers(settings);
    projector_settings.topic = settings.topic_prefix + ".events";
    projector_settings.kafka_properties = kafka_property_map(settings);
    projector_settings.group_prefix = settings.consumer_group_prefix;
    projector_settings.batch_events_max = *batch_events;
    projector_settings.catch_up_batch_events_max = *catch_up_batch_events;
    projector_settings.gap_wait = std::chrono::milliseconds(*gap_wait_ms);
    projector_settings.batch_linger = std::chrono::milliseconds(*batch_linger_ms);
    projector_settings.states_kept = *states_kept;

    // Several projections in one process read each range of a catch-up once between them.
    const auto shared_reads = *which == "all" ? projections::make_catch_up_reads(pool) : nullptr;
    std::vector<std::unique_ptr<projections::Projector>> projectors;
    for (const auto kind : projections::all_projections()) {
      if (*which != "all" && *which != projections::to_string(kind)) continue;
      projectors.push_back(
          std::make_unique<projections::Projector>(kind, projector_settings, pool, shared_reads));
      projectors.back()->start();
      spdlog::info("projecting {} from {} (topic {})", projections::to_string(kind),
                   projector_settings.brokers, projector_settings.topic);
    }
    int received = 0;
    sigwait(&stop_signals, &received);
    spdlog::info("stopping the projectors (signal {})", received);
    for (auto& projector : projectors) projector->stop();
    return 0;
  };
}

}  // namespace ledger::app
