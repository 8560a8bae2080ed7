#include "ledger/engine/engine.hpp"

#include <pqxx/pqxx>

#include <chrono>
#include <optional>

#include "hold_expiry_sweeper.hpp"
#include "ledger/db/pool.hpp"
#include "ledger/domain/decide.hpp"
#include "ledger/engine/snapshot_store.hpp"
#include "pipeline.hpp"
#include "snapshot_writer.hpp"
#include "stream_loader.hpp"
#include "uuid_generator.hpp"

namespace ledger::engine {

namespace {

// The engine never idles inside a transaction for more than a decision's time, so a session
// idle that long lost its client (a commit in doubt the check could not end): the server ends
// it and releases the head row, which would otherwise stall every later append.
constexpr std::chrono::milliseconds engine_idle_in_transaction_timeout{10'000};

std::int64_t system_clock_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

// The engine's parts, in the order they start; they stop in reverse: the sweeper (it submits
// commands), the pipeline (drains the queue), the snapshot writer (writes what the pipeline
// queued), the snapshot store (releases the RocksDB directory).
struct Engine::Impl {
  explicit Impl(EngineSettings s)
      : settings(with_defaults(std::move(s), uuids, own_ids)),
        pool(db::PoolSettings{settings.database_url, settings.database_connections,
                              settings.database_connect_timeout,
                              settings.database_statement_timeout, settings.database_connect_timeout,
                              engine_idle_in_transaction_timeout}) {
    if (!settings.snapshot_directory.empty()) {
      snapshots = std::make_unique<SnapshotStore>(settings.snapshot_directory);
      snapshot_writer = std::make_unique<SnapshotWriter>(*snapshots, settings.snapshot_every_events,
                                                         settings.snapshot_queue_max);
    }
    pipeline.emplace(settings, own_ids, pool, uuids, snapshots.get(), snapshot_writer.get());
  }

  // The clock and id seams, filled in when the caller left them empty.
  static EngineSettings with_defaults(EngineSettings settings, UuidGenerator& uuids, bool& own_ids) {
    if (!settings.clock_us) settings.clock_us = system_clock_us;
    if (!settings.generate_id) {
      settings.generate_id = [&uuids] { return uuids.next(); };
      own_ids = true;  // UUIDv7: a generated id names no existing stream
    }
    return settings;
  }

  // Started once the Engine exists: the sweeper submits through it.
  void start_sweeper(Engine& engine) {
    if (settings.expiry_sweep_interval.count() > 0) {
      sweeper.emplace(engine, pool, settings.expiry_sweep_interval, settings.expiry_sweep_lock_key,
                      settings.clock_us);
    }
  }

  void stop() {
    if (sweeper) sweeper->stop();
    pipeline->stop();
    if (snapshot_writer) snapshot_writer->stop();
    snapshot_writer.reset();
    snapshots.reset();  // releases the RocksDB directory
  }

  template <typename State>
  std::optional<State> read_state(const std::string& stream_id) {
    auto lease = pool.acquire();
    pqxx::read_transaction work(*lease);
    auto states = load_streams(work, {stream_id}, nullptr);
    const auto& aggregate = std::get<State>(states.at(stream_id).aggregate);
    if (!aggregate.exists) return std::nullopt;
    return aggregate;
  }

  UuidGenerator uuids;
  bool own_ids = false;
  EngineSettings settings;
  db::ConnectionPool pool;
  std::unique_ptr<SnapshotStore> snapshots;
  std::unique_ptr<SnapshotWriter> snapshot_writer;
  std::optional<Pipeline> pipeline;
  std::optional<HoldExpirySweeper> sweeper;
};

Engine::Engine(EngineSettings settings) : impl_(std::make_unique<Impl>(std::move(settings))) {
  impl_->start_sweeper(*this);
}

Engine::~Engine() { impl_->stop(); }

std::future<domain::CommandOutcome> Engine::submit(domain::Command command) {
  auto promise = std::make_shared<std::promise<domain::CommandOutcome>>();
  auto future = promise->get_future();
  submit(std::move(command), [promise](const std::exception_ptr& error, domain::CommandOutcome outcome) {
    if (error) {
      promise->set_exception(error);
    } else {
      promise->set_value(std::move(outcome));
    }
  });
  return future;
}

void Engine::submit(domain::Command command, Completion completion) {
  impl_->pipeline->submit(std::move(command), std::move(completion));
}

domain::CommandOutcome Engine::execute(domain::Command command) {
  return submit(std::move(command)).get();
}

void Engine::stop() { impl_->stop(); }

std::optional<domain::AccountState> Engine::read_account(const std::string& account_id) {
  return impl_->read_state<domain::AccountState>(domain::account_stream(account_id));
}

std::optional<domain::LoanState> Engine::read_loan(const std::string& loan_id) {
  return impl_->read_state<domain::LoanState>(domain::loan_stream(loan_id));
}

std::optional<domain::TransferState> Engine::read_transfer(const std::string& transfer_id) {
  return impl_->read_state<domain::TransferState>(domain::transfer_stream(transfer_id));
}

const char* to_string(CircuitState state) {
  switch (state) {
    case CircuitState::closed: return "closed";
    case CircuitState::open: return "open";
    case CircuitState::half_open: return "half_open";
  }
  return "closed";
}

EngineStats Engine::stats() const {
  EngineStats stats = impl_->pipeline->stats();
  stats.snapshots_enabled = impl_->snapshots != nullptr;
  if (impl_->snapshots) stats.snapshots = impl_->snapshots->stats();
  if (impl_->sweeper) stats.hold_expiry = impl_->sweeper->stats();
  return stats;
}

}  // namespace ledger::engine
