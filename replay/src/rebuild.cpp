#include "ledger/replay/rebuild.hpp"

#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "ledger/db/pool.hpp"
#include "ledger/projections/projection.hpp"
#include "log_reader.hpp"

namespace ledger::replay {

namespace {

// Shadow tables live in their own schema under the live tables' names; they are UNLOGGED
// while they fill (a crash of PostgreSQL empties them and their progress row together, so
// a resumed rebuild never sees rows without their watermark) and logged before the swap.
constexpr const char* shadow_schema = "rebuild";

std::string live(const std::string& table) { return "read." + table; }
std::string shadow(const std::string& table) { return std::string(shadow_schema) + "." + table; }

// Resumes the shadow of `kind` when a previous run left one; else creates it empty.
std::int64_t prepare_shadow(pqxx::work& work, const std::string& name, const std::vector<std::string>& tables,
                            bool restart) {
  work.exec(std::string("CREATE SCHEMA IF NOT EXISTS ") + shadow_schema);
  work.exec(std::string("CREATE UNLOGGED TABLE IF NOT EXISTS ") + shadow_schema +
            ".progress (name text PRIMARY KEY, watermark bigint NOT NULL)");
  const auto progress = work.exec_params(
      std::string("SELECT watermark FROM ") + shadow_schema + ".progress WHERE name = $1", name);
  bool complete = !progress.empty();
  for (const auto& table : tables) {
    complete = complete && work.exec_params1("SELECT to_regclass($1) IS NOT NULL", shadow(table))[0].as<bool>();
  }
  if (!restart && complete) return progress[0][0].as<std::int64_t>();
  for (const auto& table : tables) {
    work.exec("DROP TABLE IF EXISTS " + shadow(table));
    work.exec("CREATE UNLOGGED TABLE " + shadow(table) + " (LIKE " + live(table) + " INCLUDING ALL)");
  }
  work.exec_params(std::string("INSERT INTO ") + shadow_schema +
                       ".progress (name, watermark) VALUES ($1, 0) "
                       "ON CONFLICT (name) DO UPDATE SET watermark = 0",
                   name);
  return 0;
}

// Index name -> the definition without its name, to give the swapped-in indexes the live
// ones' names (migrations refer to them).
std::map<std::string, std::string> index_definitions(pqxx::work& work, const std::string& table) {
  std::map<std::string, std::string> indexes;
  const auto rows = work.exec_params(
      "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
      "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1::regclass",
      table);
  for (const auto& row : rows) {
    const std::string definition = row[1].as<std::string>();
    const bool unique = definition.starts_with("CREATE UNIQUE");
    indexes[row[0].as<std::string>()] = (unique ? "UNIQUE" : "") + definition.substr(definition.find(" ON "));
  }
  return indexes;
}

// Replaces read.<table> by rebuild.<table> with the live table's index names and grants.
void swap_table(pqxx::work& work, const std::string& table) {
  const auto old_indexes = index_definitions(work, live(table));
  const auto grants = work.exec_params(
      "SELECT grantee, string_agg(privilege_type, ', ') FROM information_schema.role_table_grants "
      "WHERE table_schema = 'read' AND table_name = $1 AND grantee <> current_user GROUP BY grantee",
      table);
  work.exec("DROP TABLE " + live(table));
  work.exec("ALTER TABLE " + shadow(table) + " SET SCHEMA read");
  for (const auto& [new_name, definition] : index_definitions(work, live(table))) {
    for (const auto& [old_name, old_definition] : old_indexes) {
      if (old_definition == definition && old_name != new_name) {
        work.exec("ALTER INDEX read." + work.quote_name(new_name) + " RENAME TO " + work.quote_name(old_name));
      }
    }
  }
  for (const auto& row : grants) {
    work.exec("GRANT " + row[1].as<std::string>() + " ON " + live(table) + " TO " +
              work.quote_name(row[0].as<std::string>()));
  }
}

class Rebuilder {
 public:
  Rebuilder(db::ConnectionPool& pool, projections::ProjectionKind kind, const RebuildOptions& options,
            const Progress& progress)
      : pool_(pool),
        store_(pool),
        name_(projections::to_string(kind)),
        tables_(projections::projection_tables(kind)),
        writer_(projections::make_projection(kind, shadow_schema)),
        options_(options),
        progress_(progress) {}

  RebuildResult run() {
    RebuildResult result;
    {
      auto lease = pool_.acquire();
      pqxx::work work(*lease);
      watermark_ = prepare_shadow(work, name_, tables_, options_.restart);
      work.commit();
    }
    result.resumed_from = GlobalPosition(watermark_);
    if (watermark_ > 0) spdlog::info("rebuild {}: resuming after position {}", name_, watermark_);
    const std::int64_t started_at = watermark_;

    // Fill the shadow until it is close to the head (the head moves under live load).
    for (std::int64_t head = store_.head().position.value(); head - watermark_ > options_.swap_within;
         head = store_.head().position.value()) {
      LogReader reader(store_, watermark_ + 1, head, options_.batch_events);
      for (auto batch = reader.next(); !batch.empty(); batch = reader.next()) {
        auto lease = pool_.acquire();
        pqxx::work work(*lease);
        work.exec("SET LOCAL synchronous_commit = off");
        work.exec("SET LOCAL statement_timeout = 0");
        apply(work, batch);
        work.exec_params(std::string("UPDATE ") + shadow_schema + ".progress SET watermark = $2 WHERE name = $1",
                         name_, watermark_);
        work.commit();
        if (progress_) progress_(watermark_ - started_at, head - started_at);
      }
    }

    {
      // Made durable before the swap so the live read model never becomes an unlogged table;
      // outside the swap's transaction so queries and the projector do not wait for it.
      auto lease = pool_.acquire();
      pqxx::work work(*lease);
      work.exec("SET LOCAL statement_timeout = 0");
      for (const auto& table : tables_) work.exec("ALTER TABLE " + shadow(table) + " SET LOGGED");
      work.commit();
      for (const auto& table : tables_) pqxx::nontransaction(*lease).exec("ANALYZE " + shadow(table));
    }

    auto lease = pool_.acquire();
    pqxx::work work(*lease);
    work.exec("SET LOCAL statement_timeout = 0");
    work.exec("SET LOCAL lock_timeout = '60s'");
    // The row lock the live projector takes first in each batch: it waits here until the
    // swap commits and then reads the new watermark.
    const std::int64_t live_watermark = work.exec_params1(
        "SELECT watermark FROM read.projections WHERE name = $1 FOR UPDATE", name_)[0].as<std::int64_t>();
    // The last stretch up to the head (at least up to the live watermark) goes in with the swap.
    const std::int64_t target = std::max(live_watermark, store_.head().position.value());
    while (watermark_ < target) {
      auto batch = store_.read_all(GlobalPosition(watermark_ + 1),
                                   static_cast<std::size_t>(std::min<std::int64_t>(
                                       target - watermark_, static_cast<std::int64_t>(options_.batch_events))));
      apply(work, batch);
    }
    for (const auto& table : tables_) swap_table(work, table);
    work.exec_params("UPDATE read.projections SET watermark = $2, updated_at = now() WHERE name = $1", name_,
                     watermark_);
    work.exec_params(std::string("DELETE FROM ") + shadow_schema + ".progress WHERE name = $1", name_);
    work.commit();
    if (progress_) progress_(watermark_ - started_at, watermark_ - started_at);
    result.watermark = GlobalPosition(watermark_);
    result.events_applied = watermark_ - started_at;
    return result;
  }

 private:
  // Applies a batch that must follow the shadow's watermark without a gap.
  void apply(pqxx::work& work, const std::vector<engine::RecordedEvent>& batch) {
    if (batch.empty() || batch.front().position.value() != watermark_ + 1 ||
        batch.back().position.value() - batch.front().position.value() + 1 != static_cast<std::int64_t>(batch.size())) {
      throw std::runtime_error("rebuild " + name_ + ": the event store has a gap after position " +
                               std::to_string(watermark_) + " (run `ledger replay verify`)");
    }
    writer_->apply(work, batch);
    watermark_ = batch.back().position.value();
  }

  db::ConnectionPool& pool_;
  engine::EventStore store_;
  std::string name_;
  const std::vector<std::string>& tables_;
  std::unique_ptr<projections::Projection> writer_;
  const RebuildOptions& options_;
  const Progress& progress_;
  std::int64_t watermark_ = 0;
};

}  // namespace

RebuildResult rebuild(db::ConnectionPool& owner_pool, projections::ProjectionKind kind, const RebuildOptions& options,
                      const Progress& progress) {
  return Rebuilder(owner_pool, kind, options, progress).run();
}

}  // namespace ledger::replay
