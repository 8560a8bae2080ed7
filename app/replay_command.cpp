// `ledger replay <export|verify|balance|reconcile|publish>` and `ledger rebuild <read model>`:
// the auditor's and the operator's tools over the event store (replay/).
#include <ctime>
#include <fstream>
#include <iostream>

#include "commands.hpp"
#include "json_summary.hpp"
#include "ledger/core/time_text.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/engine/event_store.hpp"
#include "ledger/replay/rebuild.hpp"
#include "ledger/engine/balance_as_of.hpp"
#include "ledger/api/json_views.hpp"
#include "ledger/replay/replay.hpp"
#include "metrics_file.hpp"
#include "progress.hpp"

namespace ledger::app {

namespace {

db::ConnectionPool make_pool(const Settings& settings, const std::string& url) {
  db::PoolSettings pool_settings;
  pool_settings.url = url;
  pool_settings.connections_max = 4;  // one reading ahead, one writing, one for the snapshot
  pool_settings.connect_timeout = std::chrono::milliseconds(settings.database_connect_timeout_ms);
  pool_settings.statement_timeout = std::chrono::milliseconds(settings.database_statement_timeout_ms);
  return db::ConnectionPool(pool_settings);
}

// CLI11 check: an RFC 3339 time.
const auto rfc3339_time = CLI::Validator(
    [](const std::string& value) {
      return parse_rfc3339(value) ? std::string() : "not an RFC 3339 time such as 2026-01-31T12:00:00Z";
    },
    "TIME");

void write_totals(JsonWriter& w, const std::map<std::string, replay::CurrencyTotals>& totals) {
  w.StartObject();
  for (const auto& [currency, sums] : totals) {
    w.Key(currency.c_str());
    w.StartObject();
    w.Key("posted");
    w.Int64(sums.posted);
    w.Key("pending");
    w.Int64(sums.pending);
    w.Key("accounts");
    w.Int64(sums.accounts);
    w.EndObject();
  }
  w.EndObject();
}

api::BalanceMoment balance_moment(const std::string& as_of, std::int64_t at_position) {
  api::BalanceMoment moment;
  if (!as_of.empty()) moment.as_of_us = parse_rfc3339(as_of);
  if (at_position > 0) moment.at_position = at_position;
  return moment;
}

void print_balance_text(const std::string& account, const engine::BalanceAsOf& found) {
  const auto& a = found.state;
  const std::int64_t balance = a.balance().value_or(Amount(0)).minor_units();
  std::cout << "account " << account << " (" << a.currency.code() << ", " << domain::to_string(a.status)
            << ") after position " << found.position.value() << ", recorded " << rfc3339(found.recorded_at_us)
            << ":\n  balance " << balance << "  debits_posted " << a.debits_posted.minor_units()
            << "  credits_posted " << a.credits_posted.minor_units() << "  debits_pending "
            << a.debits_pending.minor_units() << "  credits_pending " << a.credits_pending.minor_units()
            << "  version " << a.version.value() << "\n";
}

}  // namespace

CommandAction register_replay_command(CLI::App& root, Settings& settings) {
  auto* replay_app = root.add_subcommand("replay", "Audit the event store: export, verify, as-of balances, reconcile, publish");
  replay_app->require_subcommand(1);
  replay_app->fallthrough();  // --json after the subcommand too
  auto json = std::make_shared<bool>(false);
  replay_app->add_flag("--json", *json, "Print a machine-readable summary instead of text");

  auto* export_app = replay_app->add_subcommand("export", "Write events as JSON lines or CSV, payloads decoded");
  auto filter = std::make_shared<replay::ExportFilter>();
  auto stream = std::make_shared<std::string>();
  auto since = std::make_shared<std::string>(), until = std::make_shared<std::string>();
  auto format = std::make_shared<std::string>("jsonl");
  auto output = std::make_shared<std::string>("-");
  auto from = std::make_shared<std::int64_t>(1), to = std::make_shared<std::int64_t>(0);
  export_app->add_option("--stream", *stream, "Only this stream (e.g. account-alice)");
  export_app->add_option("--from", *from, "First position")->check(CLI::Range(std::int64_t{1}, INT64_MAX));
  export_app->add_option("--to", *to, "Last position (default: the head)")->check(CLI::Range(std::int64_t{1}, INT64_MAX));
  export_app->add_option("--since", *since, "Recorded at or after this time")->check(rfc3339_time);
  export_app->add_option("--until", *until, "Recorded before this time")->check(rfc3339_time);
  export_app->add_option("--type", filter->types, "Only these event types (repeatable)");
  export_app->add_option("--format", *format, "jsonl or csv")->check(CLI::IsMember({"jsonl", "csv"}))->capture_default_str();
  export_app->add_option("--output,-o", *output, "File to write ('-': stdout)")->capture_default_str();

  auto* verify_app = replay_app->add_subcommand("verify", "Check positions, versions, the hash chain and double entry");
  auto verify_from = std::make_shared<std::int64_t>(1), verify_to = std::make_shared<std::int64_t>(0);
  auto checkpoint_every = std::make_shared<std::int64_t>(1'000'000);
  verify_app->add_option("--from", *verify_from, "First position")->check(CLI::Range(std::int64_t{1}, INT64_MAX));
  verify_app->add_option("--to", *verify_to, "Last position (default: the head)")->check(CLI::Range(std::int64_t{1}, INT64_MAX));
  verify_app->add_option("--checkpoint-every", *checkpoint_every, "Report the per-currency sums this often (events)")
      ->check(CLI::Range(std::int64_t{1}, INT64_MAX))->capture_default_str();
  auto hash_threads = std::make_shared<std::size_t>(0);
  verify_app->add_option("--hash-threads", *hash_threads,
                         "Threads that check the hash chain, each a slice of every batch (default: one per core)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{256}));

  auto verify_metrics_file = std::make_shared<std::string>();
  verify_app->add_option("--metrics-file", *verify_metrics_file,
                         "Also write the result for Prometheus here (textfile collector)");

  auto* balance_app = replay_app->add_subcommand("balance", "An account's balances at a past moment, from its stream");
  auto account = std::make_shared<std::string>();
  auto as_of = std::make_shared<std::string>();
  auto at_position = std::make_shared<std::int64_t>(0);
  balance_app->add_option("--account", *account, "Account id")->required();
  auto* as_of_option = balance_app->add_option("--as-of", *as_of, "The moment (RFC 3339)")->check(rfc3339_time);
  auto* position_option = balance_app->add_option("--at-position", *at_position, "The global position")
                              ->check(CLI::Range(std::int64_t{1}, INT64_MAX));
  as_of_option->excludes(position_option);
  balance_app->require_option(2);

  auto* reconcile_app = replay_app->add_subcommand("reconcile", "Compare every read-model row with the fold of the log");
  auto report_max = std::make_shared<std::int64_t>(1'000);
  reconcile_app->add_option("--report-max", *report_max, "Print at most this many differences (all are counted)")
      ->check(CLI::Range(std::int64_t{0}, INT64_MAX))->capture_default_str();

  auto* publish_app = replay_app->add_subcommand("publish", "Send events again to Kafka for consumers that must reprocess");
  auto publish_from = std::make_shared<std::int64_t>(0), publish_to = std::make_shared<std::int64_t>(0);
  publish_app->add_option("--from", *publish_from, "First position")->required()->check(CLI::Range(std::int64_t{1}, INT64_MAX));
  publish_app->add_option("--to", *publish_to, "Last position (default: the head)")->check(CLI::Range(std::int64_t{1}, INT64_MAX));

  return [=, &settings]() -> int {
    configure_logging(settings, "replay");
    auto pool = make_pool(settings, resolve_database_url(settings));

    if (export_app->parsed()) {
      filter->range = {GlobalPosition(*from), GlobalPosition(*to)};
      if (!stream->empty()) filter->stream_id = *stream;
      if (!since->empty()) filter->from_time_us = parse_rfc3339(*since);
      if (!until->empty()) filter->to_time_us = parse_rfc3339(*until);
      std::ofstream file;
      if (*output != "-") {
        file.open(*output, std::ios::binary | std::ios::trunc);
        if (!file) throw SettingError("--output", "cannot write " + *output);
      }
      std::ostream& out = *output == "-" ? std::cout : file;
      TerminalProgress progress("export");
      const auto summary = replay::export_events(pool, *filter,
                                                 *format == "csv" ? replay::ExportFormat::csv : replay::ExportFormat::json_lines,
                                                 out, std::ref(progress));
      const double seconds = progress.seconds();
      // The summary goes to stderr when the events go to stdout.
      std::ostream& report = *output == "-" ? std::cerr : std::cout;
      if (*json) {
        print_json([&](JsonWriter& w) {
          w.Key("events_written");
          w.Int64(summary.events_written);
          w.Key("events_scanned");
          w.Int64(summary.events_scanned);
          w.Key("last_position");
          w.Int64(summary.last_position.value());
          w.Key("seconds");
          w.Double(seconds);
        }, report);
      } else {
        report << "exported " << summary.events_written << " of " << summary.events_scanned << " events scanned in "
               << seconds << " s\n";
      }
      return 0;
    }

    if (verify_app->parsed()) {
      replay::VerifyOptions options;
      options.range = {GlobalPosition(*verify_from), GlobalPosition(*verify_to)};
      options.checkpoint_every = *checkpoint_every;
      options.hash_threads = *hash_threads;
      TerminalProgress progress("verify");
      const auto result = replay::verify(pool, options, std::ref(progress));
      const double seconds = progress.seconds();
      if (!verify_metrics_file->empty()) {
        write_metrics_file(
            *verify_metrics_file,
            metrics_gauge("ledger_verify_ok",
                          "1 when the last `ledger replay verify` found the log intact, 0 when not.",
                          result.ok ? 1 : 0) +
                metrics_gauge("ledger_verify_events_checked", "Events the last verify checked.",
                              result.events_checked) +
                metrics_gauge("ledger_verify_first_bad_position",
                              "Position the last verify failed at (0: it did not fail).",
                              result.ok ? 0 : result.first_bad_position.value()) +
                metrics_gauge("ledger_verify_last_run_timestamp_seconds",
                              "When the last verify ended (Unix time).",
                              static_cast<std::int64_t>(std::time(nullptr))));
      }
      if (*json) {
        print_json([&](JsonWriter& w) {
          w.Key("ok");
          w.Bool(result.ok);
          w.Key("events_checked");
          w.Int64(result.events_checked);
          w.Key("streams");
          w.Int64(result.streams);
          w.Key("seconds");
          w.Double(seconds);
          if (!result.ok) {
            w.Key("first_bad_position");
            w.Int64(result.first_bad_position.value());
            w.Key("problem");
            w.String(result.problem.c_str());
          }
          w.Key("double_entry_checked");
          w.Bool(result.double_entry_checked);
          w.Key("checkpoints");
          w.StartArray();
          for (const auto& checkpoint : result.checkpoints) {
            w.StartObject();
            w.Key("position");
            w.Int64(checkpoint.position.value());
            w.Key("totals");
            write_totals(w, checkpoint.totals);
            w.EndObject();
          }
          w.EndArray();
        });
      } else if (result.ok) {
        std::cout << "ok: " << result.events_checked << " events in " << result.streams
                  << " streams: positions and versions dense, hash chain intact, payloads decode";
        std::cout << (result.double_entry_checked ? ", double entry holds" : " (double entry needs --from 1)") << "\n";
        for (const auto& checkpoint : result.checkpoints) {
          std::cout << "  at position " << checkpoint.position.value() << ":";
          for (const auto& [currency, sums] : checkpoint.totals) {
            std::cout << " " << currency << " posted " << sums.posted << " pending " << sums.pending << " ("
                      << sums.accounts << " accounts)";
          }
          std::cout << "\n";
        }
      } else {
        std::cout << "FAILED at position " << result.first_bad_position.value() << ": " << result.problem << " ("
                  << result.events_checked << " events checked before it)\n";
      }
      return result.ok ? 0 : 1;
    }

    if (balance_app->parsed()) {
      const engine::EventStore store(pool);
      const auto found = engine::balance_as_of(
          store, *account, as_of->empty() ? std::nullopt : parse_rfc3339(*as_of),
          *at_position > 0 ? std::optional<GlobalPosition>(*at_position) : std::nullopt);
      if (!found || !found->state.exists) {
        std::cerr << "ledger: error: account " << *account
                  << (found ? " did not exist yet at that moment" : " does not exist") << "\n";
        return 1;
      }
      if (*json) {
        // The same JSON as GET /v1/accounts/{id}/balance (ledger/api/json_views.hpp).
        std::cout << api::balance_as_of_json(*account, *found, balance_moment(*as_of, *at_position)) << "\n";
      } else {
        print_balance_text(*account, *found);
      }
      return 0;
    }

    if (reconcile_app->parsed()) {
      TerminalProgress progress("reconcile");
      const auto result = replay::reconcile(pool, *json ? std::cerr : std::cout, *report_max, std::ref(progress));
      if (*json) {
        print_json([&](JsonWriter& w) {
          w.Key("rows_checked");
          w.Int64(result.rows_checked);
          w.Key("differences");
          w.Int64(result.differences);
          w.Key("watermarks");
          w.StartObject();
          for (const auto& [name, watermark] : result.watermarks) {
            w.Key(name.c_str());
            w.Int64(watermark);
          }
          w.EndObject();
        });
      } else {
        std::cout << (result.differences == 0 ? "ok: " : "DIFFERENCES: ") << result.differences << " differences in "
                  << result.rows_checked << " rows checked (";
        for (const auto& [name, watermark] : result.watermarks) std::cout << " " << name << " at " << watermark;
        std::cout << " )\n";
      }
      return result.differences == 0 ? 0 : 1;
    }

    if (publish_app->parsed()) {
      replay::PublishSettings publish_settings;
      publish_settings.brokers = resolve_kafka_brokers(settings);
      publish_settings.topic = settings.topic_prefix + ".events";
      publish_settings.kafka_properties = kafka_property_map(settings);
      if (settings.publish_json) publish_settings.json_topic = settings.topic_prefix + ".events.json";
      TerminalProgress progress("publish");
      const auto result = replay::publish(pool, publish_settings, {GlobalPosition(*publish_from), GlobalPosition(*publish_to)},
                                          std::ref(progress));
      if (*json) {
        print_json([&](JsonWriter& w) {
          w.Key("events_published");
          w.Int64(result.events_published);
          w.Key("last_position");
          w.Int64(result.last_position.value());
        });
      } else {
        std::cout << "published " << result.events_published << " events to " << publish_settings.topic
                  << " (acknowledged by Kafka)\n";
      }
      return 0;
    }
    return 1;
  };
}

CommandAction register_rebuild_command(CLI::App& root, Settings& settings) {
  auto* rebuild_app = root.add_subcommand("rebuild", "Rebuild a read model from the event store and swap it in");
  auto which = std::make_shared<std::string>();
  auto options = std::make_shared<replay::RebuildOptions>();
  auto json = std::make_shared<bool>(false);
  std::vector<std::string> names{"all", "statement"};
  for (const auto kind : projections::all_projections()) names.emplace_back(projections::to_string(kind));
  rebuild_app->add_option("read_model", *which, "all, balance, statement (rebuilt with balance: one watermark), audit, loan")
      ->required()
      ->check(CLI::IsMember(names));
  rebuild_app->add_flag("--restart", options->restart, "Drop a half-done rebuild instead of resuming it");
  rebuild_app
      ->add_option("--batch-events", options->batch_events,
                   "Events per shadow transaction (a kill loses at most one)")
      ->check(CLI::Range(std::size_t{100}, std::size_t{1'000'000}))
      ->capture_default_str();
  rebuild_app->add_flag("--json", *json, "Print a machine-readable summary");

  return [=, &settings]() -> int {
    configure_logging(settings, "rebuild");
    // Creates, drops and renames tables: the owner role, as for migrations.
    auto pool = make_pool(settings, resolve_admin_database_url(settings));
    for (const auto kind : projections::all_projections()) {
      const std::string name(projections::to_string(kind));
      const bool wanted = *which == "all" || *which == name || (*which == "statement" && kind == projections::ProjectionKind::balance);
      if (!wanted) continue;
      TerminalProgress progress("rebuild " + name);
      const auto result = replay::rebuild(pool, kind, *options, std::ref(progress));
      const double seconds = progress.seconds();
      if (*json) {
        print_json([&](JsonWriter& w) {
          w.Key("read_model");
          w.String(name.c_str());
          w.Key("watermark");
          w.Int64(result.watermark.value());
          w.Key("resumed_from");
          w.Int64(result.resumed_from.value());
          w.Key("events_applied");
          w.Int64(result.events_applied);
          w.Key("passes");
          w.Int(result.passes);
          w.Key("outrun");
          w.Bool(result.outrun);
          w.Key("swap_applied");
          w.Int64(result.swap_applied);
          w.Key("seconds");
          w.Double(seconds);
        });
      } else {
        std::cout << "rebuilt " << name << " at position " << result.watermark.value() << ": "
                  << result.events_applied << " events in " << seconds << " s"
                  << (result.resumed_from.value() > 0 ? " (resumed after position " + std::to_string(result.resumed_from.value()) + ")" : "")
                  << (result.outrun ? "; the log grew as fast as the rebuild read it: the swap "
                                      "applied the last " +
                                          std::to_string(result.swap_applied) + " events"
                                    : "")
                  << "\n";
      }
    }
    return 0;
  };
}

}  // namespace ledger::app
