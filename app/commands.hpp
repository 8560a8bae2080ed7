#pragma once

#include <signal.h>

#include <functional>

#include <CLI/CLI.hpp>

#include "settings.hpp"

namespace ledger::app {

// Blocks SIGINT and SIGTERM in this thread and every thread it starts afterwards (call it
// before starting threads), so the command's main thread can sigwait for them.
sigset_t block_stop_signals();

// A subcommand registers its flags and returns what to run once parsing succeeded.
using CommandAction = std::function<int()>;

CommandAction register_migrate_command(CLI::App& root, Settings& settings);
CommandAction register_broker_command(CLI::App& root, Settings& settings);
CommandAction register_dev_command(CLI::App& root, Settings& settings);
CommandAction register_serve_command(CLI::App& root, Settings& settings);
CommandAction register_project_command(CLI::App& root, Settings& settings);
CommandAction register_replay_command(CLI::App& root, Settings& settings);
CommandAction register_rebuild_command(CLI::App& root, Settings& settings);
CommandAction register_loans_command(CLI::App& root, Settings& settings);
CommandAction register_token_command(CLI::App& root, Settings& settings);
CommandAction register_kafka_command(CLI::App& root, Settings& settings);

}  // namespace ledger::app
