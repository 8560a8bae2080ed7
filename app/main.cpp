// `ledger`: one binary, one subcommand per process role (see ../shared/DESIGN.md, Processes).
#include <spdlog/spdlog.h>

#include <iostream>
#include <vector>

#include "commands.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/db/migrations.hpp"
#include "settings.hpp"

int main(int argc, char** argv) {
  using namespace ledger::app;
  CLI::App root{"ledger: an event-sourced ledger engine for core banking", "ledger"};
  root.require_subcommand(1);
  // Answers without a subcommand: what an operator (or ops/image.sh in a fresh image) runs first.
  root.set_version_flag("--version", std::string("ledger ") + LEDGER_VERSION);
  root.fallthrough();
  Settings settings;
  add_settings(root, settings);

  std::vector<std::pair<CLI::App*, CommandAction>> commands;
  auto add = [&](CommandAction action) {
    commands.emplace_back(root.get_subcommands({}).back(), std::move(action));
  };
  add(register_migrate_command(root, settings));
  add(register_broker_command(root, settings));
  add(register_dev_command(root, settings));
  add(register_serve_command(root, settings));
  add(register_project_command(root, settings));
  add(register_replay_command(root, settings));
  add(register_rebuild_command(root, settings));
  add(register_loans_command(root, settings));
  add(register_token_command(root, settings));
  add(register_kafka_command(root, settings));

  try {
    root.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return root.exit(help);
  } catch (const CLI::CallForAllHelp& help) {
    return root.exit(help);
  } catch (const CLI::CallForVersion& version) {
    return root.exit(version);
  } catch (const CLI::ParseError& error) {
    // One line naming the setting and the problem; exit code 2 for every invalid setting.
    std::cerr << "ledger: error: " << error.what() << "\n";
    return 2;
  }

  try {
    for (auto& [command, action] : commands) {
      if (command->parsed()) return action();
    }
  } catch (const SettingError& error) {
    std::cerr << "ledger: error: " << error.what() << "\n";
    return 2;
  } catch (const ledger::db::MigrationError& error) {
    spdlog::error("{}", error.what());
    std::cerr << "ledger: error: " << error.what() << "\n";
    return 1;
  } catch (const std::exception& error) {
    spdlog::error("{}", error.what());
    std::cerr << "ledger: error: " << error.what() << "\n";
    return 1;
  }
  return 1;
}
