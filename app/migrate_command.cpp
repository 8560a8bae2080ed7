#include <pqxx/pqxx>

#include <ctime>
#include <iostream>

#include "commands.hpp"
#include "ledger/db/migrations.hpp"
#include "ledger/relay/relay.hpp"
#include "metrics_file.hpp"

namespace ledger::app {

CommandAction register_migrate_command(CLI::App& root, Settings& settings) {
  auto* migrate = root.add_subcommand("migrate", "Apply, revert and inspect schema migrations");
  migrate->require_subcommand(1);
  auto* up = migrate->add_subcommand("up", "Apply pending migrations");
  auto* down = migrate->add_subcommand("down", "Revert the most recent migrations");
  auto* status = migrate->add_subcommand("status", "List applied and pending migrations");
  auto* validate = migrate->add_subcommand("validate", "Check applied migrations are unchanged");
  auto* create = migrate->add_subcommand("create", "Write a new pair of migration files");
  auto* new_incarnation = migrate->add_subcommand(
      "new-incarnation",
      "After a point-in-time restore, before anything appends: give the event store a new incarnation "
      "beginning at its head (docs/operations.md, Backup and restore)");

  auto target = std::make_shared<int>(0);
  up->add_option("--to", *target, "Apply up to and including this version");
  auto count = std::make_shared<int>(1);
  down->add_option("count", *count, "How many to revert")->check(CLI::Range(1, 10'000));
  auto force = std::make_shared<bool>(false);
  down->add_flag("--force", *force,
                 "Also drop tables that hold rows (refused otherwise, naming them and their rows)");
  auto metrics_file = std::make_shared<std::string>();
  status->add_option("--metrics-file", *metrics_file,
                     "Also write the pending count for Prometheus here (textfile collector)");
  auto name = std::make_shared<std::string>();
  auto directory = std::make_shared<std::string>("migrations");
  create->add_option("name", *name, "Name: a-z, 0-9 and _")->required();
  create->add_option("--dir", *directory, "Migrations directory of the source tree")
      ->capture_default_str();

  return [=, &settings]() -> int {
    configure_logging(settings, "migrate");
    if (create->parsed()) {
      std::cout << db::create_migration_files(*directory, *name) << "\n";
      return 0;
    }
    if (new_incarnation->parsed()) {
      pqxx::connection connection(resolve_admin_database_url(settings));
      const auto incarnation = relay::begin_store_incarnation(connection);
      std::cout << "new incarnation " << incarnation.id << " since position " << incarnation.since_position
                << "\n";
      return 0;
    }
    db::MigrationRunner runner(resolve_admin_database_url(settings));
    if (up->parsed()) {
      const auto applied =
          runner.up(*target > 0 ? std::optional<int>(*target) : std::optional<int>());
      std::cout << (applied.empty() ? "no pending migrations" : "applied " + std::to_string(applied.size()) + " migration(s)") << "\n";
      return 0;
    }
    if (down->parsed()) {
      const auto reverted =
          runner.down(*count, *force ? db::DroppingRows::allow : db::DroppingRows::refuse);
      std::cout << "reverted " << reverted.size() << " migration(s)\n";
      return 0;
    }
    const auto current = runner.status();
    if (status->parsed()) {
      for (const auto& applied : current.applied) {
        std::printf("applied  %04d_%s  %s  %lld ms  %s%s\n", applied.version, applied.name.c_str(),
                    applied.applied_at.c_str(), applied.duration_ms,
                    applied.checksum.substr(0, 12).c_str(),
                    applied.checksum_is_up_only
                        ? "  (up script only: `ledger migrate up` records the new checksum)"
                        : "");
      }
      for (const auto& pending : current.pending) {
        std::printf("pending  %04d_%s\n", pending.version, pending.name.c_str());
      }
      for (const auto& problem : current.problems) std::printf("PROBLEM  %s\n", problem.c_str());
      if (!metrics_file->empty()) {
        write_metrics_file(
            *metrics_file,
            metrics_gauge("ledger_migrations_pending",
                          "Migrations this binary holds that the database has not applied.",
                          static_cast<std::int64_t>(current.pending.size())) +
                metrics_gauge("ledger_migrations_problems",
                              "Applied migrations that differ from this binary's (see migrate status).",
                              static_cast<std::int64_t>(current.problems.size())) +
                metrics_gauge("ledger_migrations_status_timestamp_seconds",
                              "When `ledger migrate status` last wrote this file (Unix time).",
                              static_cast<std::int64_t>(std::time(nullptr))));
      }
      return current.problems.empty() ? 0 : 1;
    }
    if (validate->parsed()) {
      runner.validate();
      std::cout << "ok: " << current.applied.size() << " applied, " << current.pending.size()
                << " pending\n";
      return 0;
    }
    return 1;
  };
}

}  // namespace ledger::app
