// `ledger loans close-of-business --date D`: close of business for every loan (issue 6).
#include <iostream>

#include "commands.hpp"
#include "ledger/api/json_views.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/engine/close_of_business.hpp"
#include "ledger/engine/engine.hpp"
#include "ledger/engine/event_store.hpp"
#include "progress.hpp"

namespace ledger::app {

CommandAction register_loans_command(CLI::App& root, Settings& settings) {
  auto* loans = root.add_subcommand("loans", "Loan operations");
  loans->require_subcommand(1);
  auto* close = loans->add_subcommand("close-of-business",
                                      "Accrue interest, mark arrears and charge late fees through a business date");
  auto date = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  close->add_option("--date", *date, "The business date, YYYY-MM-DD")
      ->required()
      ->check(CLI::Validator(
          [](const std::string& value) {
            if (!domain::parse_date(value)) return std::string("not a date YYYY-MM-DD");
            if (!domain::parse_business_date(value)) return "not a date from " + domain::business_date_range();
            return std::string();
          },
          "DATE"));
  close->add_flag("--json", *json, "Print a machine-readable summary");
  auto snapshot_directory = std::make_shared<std::string>();
  close->add_option("--snapshot-directory", *snapshot_directory,
                    "RocksDB snapshot cache to read loans from and write them to (not one a running serve uses); "
                    "default none: every loan is folded from the event store");

  return [=, &settings]() -> int {
    configure_logging(settings, "loans");
    const std::string url = resolve_database_url(settings);
    engine::EngineSettings engine_settings;
    engine_settings.database_url = url;
    engine_settings.database_connect_timeout = std::chrono::milliseconds(settings.database_connect_timeout_ms);
    engine_settings.database_statement_timeout = std::chrono::milliseconds(settings.database_statement_timeout_ms);
    engine_settings.expiry_sweep_interval = std::chrono::milliseconds(0);  // serve sweeps holds
    // A loan closed every day gains an event a day: with a snapshot (taken every
    // snapshot_every_events) it is read as the snapshot and the events after it, not its whole life.
    engine_settings.snapshot_directory = *snapshot_directory;
    engine::Engine engine(engine_settings);
    db::PoolSettings pool_settings;
    pool_settings.url = url;
    pool_settings.connections_max = 2;
    db::ConnectionPool pool(pool_settings);
    const engine::EventStore store(pool);

    TerminalProgress progress("close of business " + *date, "loans");
    const auto result = engine::close_of_business(engine, store, *domain::parse_date(*date), {},
                                                  [&](std::int64_t loans) { progress(loans, 0); });
    const double seconds = progress.seconds();
    engine.stop();
    if (*json) {
      // The same JSON as POST /v1/loans/close-of-business (ledger/api/json_views.hpp), and the seconds it took.
      std::cout << api::close_of_business_json(*domain::parse_date(*date), result, seconds) << "\n";
    } else {
      std::cout << "closed " << *date << " for " << result.loans << " loans (" << result.closed
                << " changed) in " << seconds << " s\n";
      if (result.failed > 0) std::cout << result.failed << " failed; the first: " << result.first_failure << "\n";
    }
    return result.failed == 0 ? 0 : 1;
  };
}

}  // namespace ledger::app
