#include "ledger/replay/rebuild.hpp"

#include <algorithm>
#include <memory>
#include <utility>

#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "ledger/db/pool.hpp"
#include "ledger/projections/projection.hpp"
#include "log_reader.hpp"

namespace ledger::replay {

namespace {

// Shadow tables live in their own schema under the live tables' names. They are logged
// tables: filling an unlogged one and setting it logged before the swap measured slower
// (the table is written twice), and a crash cannot part the rows from their watermark.
constexpr const char* shadow_schema = "rebuild";

std::string live(const std::string& table) { return "read." + table; }
std::string shadow(const std::string& table) { return std::string(shadow_schema) + "." + table; }

struct LiveIndex {
  std::string name;
  std::string definition;  // CREATE [UNIQUE] INDEX … ON read.<table> …
  std::string constraint;  // PRIMARY KEY (…) / UNIQUE (…) when a constraint owns it
};

// The indexes of `relation` (schema-qualified), live or shadow.
std::vector<LiveIndex> indexes_of(pqxx::work& work, const std::string& relation) {
  std::vector<LiveIndex> indexes;
  const auto rows = work.exec_params(
      "SELECT c.relname, pg_get_indexdef(i.indexrelid), coalesce(pg_get_constraintdef(con.oid), '') "
      "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
      "LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.contype IN ('p', 'u') "
      "WHERE i.indrelid = $1::regclass ORDER BY c.relname",
      relation);
  for (const auto& row : rows) {
    indexes.push_back({row[0].as<std::string>(), row[1].as<std::string>(), row[2].as<std::string>()});
  }
  return indexes;
}

std::vector<LiveIndex> live_indexes(pqxx::work& work, const std::string& table) {
  return indexes_of(work, live(table));
}

// The live table's storage parameters, as `name=value, ...` ('' for none).
std::string live_storage_parameters(pqxx::work& work, const std::string& table) {
  return work
      .exec_params1(
          "SELECT coalesce(array_to_string(reloptions, ', '), '') FROM pg_class WHERE oid = $1::regclass",
          live(table))[0]
      .as<std::string>();
}

// A session advisory lock on a connection of its own, released however the run ends. Released
// by statement, not by closing the connection: the server ends a closed session a moment later,
// and a rebuild started meanwhile (a retry after an error, in the same process) found the lock
// still taken.
class RunLock {
 public:
  RunLock(const db::ConnectionPool& pool, std::string key)
      : connection_(pool.connect_dedicated()), key_(std::move(key)) {
    held_ = pqxx::nontransaction(*connection_)
                .exec_params1("SELECT pg_try_advisory_lock(hashtext($1))", key_)[0]
                .as<bool>();
  }
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;
  ~RunLock() {
    if (!held_) return;
    try {
      pqxx::nontransaction(*connection_)
          .exec_params("SELECT pg_advisory_unlock(hashtext($1))", key_);
    } catch (const std::exception&) {
      // The connection is gone, and the session's lock with it.
    }
  }

  bool held() const { return held_; }

 private:
  std::unique_ptr<pqxx::connection> connection_;
  std::string key_;
  bool held_ = false;
};

bool sets_autovacuum_enabled(const std::string& storage_parameters) {
  return storage_parameters.find("autovacuum_enabled=") != std::string::npos;
}

void add_constraint(pqxx::work& work, const std::string& table, const LiveIndex& index) {
  work.exec("ALTER TABLE " + shadow(table) + " ADD CONSTRAINT " + work.quote_name(index.name) +
            " " + index.constraint);
}

bool shadow_has_constraint(pqxx::work& work, const std::string& table, const std::string& name) {
  constexpr const char* named =
      "SELECT count(*) FROM pg_constraint WHERE conrelid = $1::regclass AND conname = $2";
  return work.exec_params1(named, shadow(table), name)[0].as<int>() > 0;
}

// Resumes the shadow of `kind` when a previous run left one; else creates it empty, with the
// live tables' columns and checks, and the key constraints (under the live names: the schema
// differs) of the tables in `keyed`, which the projection's writer finds rows by. Every other
// index, the other tables' keys included, is built once at the end: much faster than
// maintaining it row by row (an append-only table's primary key maintained through the fill
// took 8.1 s for 1,528,708 statement rows, against 1.9 s without it and 1.5 s to build it
// after; 4.4 s against 1.6 + 1.2 s for 2,232,659 audit rows).
//
// The progress row is named `progress_name` and records the shadow tables' oids: a run resumes
// only the shadow it (or a binary of the same layout) created. A binary of the layout before
// (keys made with the tables) knows the row by the model's bare name, so it never resumes a
// shadow of this layout, which it would swap in without the keys; and when it made shadows of
// its own under the same table names, their oids differ here, so they are started over.
std::int64_t prepare_shadow(pqxx::work& work, const std::string& progress_name,
                            const std::vector<std::string>& tables,
                            const std::vector<std::string>& keyed, bool restart) {
  work.exec(std::string("CREATE SCHEMA IF NOT EXISTS ") + shadow_schema);
  work.exec(std::string("CREATE TABLE IF NOT EXISTS ") + shadow_schema +
            ".progress (name text PRIMARY KEY, watermark bigint NOT NULL)");
  work.exec(std::string("ALTER TABLE ") + shadow_schema +
            ".progress ADD COLUMN IF NOT EXISTS shadow_tables text");
  work.exec(std::string("ALTER TABLE ") + shadow_schema +
            ".progress ADD COLUMN IF NOT EXISTS owner text");
  auto shadow_oids = [&] {
    std::string oids;
    for (const auto& table : tables) {
      oids +=
          work.exec_params1("SELECT coalesce(to_regclass($1)::oid::text, '-')", shadow(table))[0]
              .as<std::string>() +
          " ";
    }
    return oids;
  };
  const auto progress =
      work.exec_params(std::string("SELECT watermark, coalesce(shadow_tables, '') FROM ") +
                           shadow_schema + ".progress WHERE name = $1",
                       progress_name);
  if (!restart && !progress.empty() && progress[0][1].as<std::string>() == shadow_oids()) {
    return progress[0][0].as<std::int64_t>();
  }
  for (const auto& table : tables) {
    work.exec("DROP TABLE IF EXISTS " + shadow(table));
    work.exec("CREATE TABLE " + shadow(table) + " (LIKE " + live(table) +
              " INCLUDING ALL EXCLUDING INDEXES)");
    // LIKE copies no storage parameters: the live table's (read.balances' fillfactor, which
    // keeps the projector's updates HOT) apply from the shadow's first page. Autovacuum stays
    // off while the shadow is filled (a bulk load: one VACUUM before the swap does its work
    // once), unless the live table sets it itself.
    std::string options = live_storage_parameters(work, table);
    if (!sets_autovacuum_enabled(options)) {
      options += std::string(options.empty() ? "" : ", ") + "autovacuum_enabled = false";
    }
    work.exec("ALTER TABLE " + shadow(table) + " SET (" + options + ")");
    if (std::find(keyed.begin(), keyed.end(), table) == keyed.end()) continue;
    for (const auto& index : live_indexes(work, table)) {
      if (!index.constraint.empty()) add_constraint(work, table, index);
    }
  }
  // A binary of the layout before must not resume these tables as its own shadow either.
  work.exec_params(std::string("DELETE FROM ") + shadow_schema + ".progress WHERE name = $1",
                   progress_name.substr(0, progress_name.find('@')));
  work.exec_params(
      std::string("INSERT INTO ") + shadow_schema +
          ".progress (name, watermark, shadow_tables) VALUES ($1, 0, $2) "
          "ON CONFLICT (name) DO UPDATE SET watermark = 0, shadow_tables = excluded.shadow_tables",
      progress_name, shadow_oids());
  return 0;
}

// Every key constraint of the live table on its shadow: checked before the swap, whoever made
// the shadow, since a live table swapped in without its keys would keep that for good (later
// rebuilds copy the live table's).
void check_shadow_keys(pqxx::work& work, const std::string& table) {
  for (const auto& index : live_indexes(work, table)) {
    if (!index.constraint.empty() && !shadow_has_constraint(work, table, index.name)) {
      throw std::runtime_error("rebuild: the shadow of read." + table + " lacks the key " +
                               index.name +
                               "; nothing was swapped in (run the rebuild again with --restart)");
    }
  }
}

// A live index's definition, made on the shadow table (as pg_get_indexdef prints the shadow's).
std::string on_shadow(const std::string& table, const LiveIndex& index) {
  const std::string on_live = " ON " + live(table) + " ";
  std::string definition = index.definition;
  const auto on = definition.find(on_live);
  if (on == std::string::npos || !definition.starts_with("CREATE ")) {
    throw std::runtime_error("rebuild: cannot read the definition of index " + index.name);
  }
  definition.replace(on, on_live.size(), " ON " + shadow(table) + " ");
  return definition;
}

// The live table's other indexes and the key constraints the fill went without, under their
// names, on the filled shadow. A run resumed after this committed finds them there. A key the
// rows break (a row twice) fails here, before the swap, leaving the live table as it was.
void build_indexes(pqxx::work& work, const std::string& table) {
  for (const auto& index : live_indexes(work, table)) {
    if (!index.constraint.empty()) {
      if (!shadow_has_constraint(work, table, index.name)) add_constraint(work, table, index);
      continue;
    }
    std::string definition = on_shadow(table, index);
    definition.insert(definition.find(" INDEX ") + 7, "IF NOT EXISTS ");
    work.exec(definition);
  }
}

// The live tables' index sets on the shadows, in the swap's transaction: a migration that
// added, dropped or redefined a live index or key after build_indexes ran (a rollback while a
// rebuild finishes) is followed here, or the swapped-in table would keep the set of the
// build's time for good (later rebuilds copy the live table's). The tables are locked first
// against DDL (not against readers; the live projectors already wait for the swap's row
// locks), shadows before live tables as the swap takes them, so the set read stays the live
// one until the swap commits. Usually nothing to do.
void follow_live_indexes(pqxx::work& work, const std::vector<std::string>& tables) {
  for (const auto& table : tables) work.exec("LOCK TABLE " + shadow(table) + " IN SHARE ROW EXCLUSIVE MODE");
  for (const auto& table : tables) work.exec("LOCK TABLE " + live(table) + " IN SHARE ROW EXCLUSIVE MODE");
  // Every table's stale indexes go before any is built: a name moved from one table to
  // another of the model is free again when its new table's turn comes.
  for (const auto& table : tables) {
    const auto live_set = live_indexes(work, table);
    for (const auto& index : indexes_of(work, shadow(table))) {
      const auto same = std::find_if(live_set.begin(), live_set.end(),
                                     [&](const LiveIndex& l) { return l.name == index.name; });
      const bool kept = same != live_set.end() && same->constraint == index.constraint &&
                        on_shadow(table, *same) == index.definition;
      if (kept) continue;
      if (index.constraint.empty()) {
        work.exec(std::string("DROP INDEX ") + shadow_schema + "." + work.quote_name(index.name));
      } else {
        work.exec("ALTER TABLE " + shadow(table) + " DROP CONSTRAINT " + work.quote_name(index.name));
      }
    }
  }
  for (const auto& table : tables) build_indexes(work, table);
}

// The read models' statements are prepared once per session (db::exec_statement). A shadow
// grows from empty with autovacuum off (no ANALYZE, so nothing makes PostgreSQL plan again): a
// generic plan it settled on while the shadow held a few pages (a sequential scan for
// `account_id = ANY($1)`) would serve every later batch. Planned for each batch instead.
void plan_for_a_growing_shadow(pqxx::work& work) {
  work.exec("SET LOCAL plan_cache_mode = force_custom_plan");
}

// Replaces read.<table> by rebuild.<table>, keeping the live table's grants. The index and
// constraint names are the live ones already (they are per schema).
void swap_table(pqxx::work& work, const std::string& table) {
  // The live table's autovacuum setting back (prepare_shadow turned it off for the fill).
  if (!sets_autovacuum_enabled(live_storage_parameters(work, table))) {
    work.exec("ALTER TABLE " + shadow(table) + " RESET (autovacuum_enabled)");
  }
  const auto grants = work.exec_params(
      "SELECT grantee, string_agg(privilege_type, ', ') FROM information_schema.role_table_grants "
      "WHERE table_schema = 'read' AND table_name = $1 AND grantee <> current_user GROUP BY grantee",
      table);
  work.exec("DROP TABLE " + live(table));
  work.exec("ALTER TABLE " + shadow(table) + " SET SCHEMA read");
  for (const auto& row : grants) {
    work.exec("GRANT " + row[1].as<std::string>() + " ON " + live(table) + " TO " +
              work.quote_name(row[0].as<std::string>()));
  }
}

class Rebuilder {
 public:
  Rebuilder(db::ConnectionPool& pool, projections::ProjectionKind kind,
            const RebuildOptions& options, const Progress& progress)
      : pool_(pool),
        store_(pool),
        name_(projections::to_string(kind)),
        progress_name_(name_ + "@2"),
        tables_(projections::projection_tables(kind)),
        keyed_tables_(projections::tables_written_by_key(kind)),
        // The shadow's only writer (the advisory lock below), so it may keep rows in memory.
        writer_(projections::make_projection(
            kind, shadow_schema, {.states_kept = std::max<std::size_t>(options.states_kept, 1)})),
        options_(options),
        progress_(progress) {}

  RebuildResult run() {
    RebuildResult result;
    // One rebuild of a read model at a time: two would write the same shadow tables.
    const RunLock lock(pool_, "ledger rebuild " + name_);
    if (!lock.held()) throw std::runtime_error("another `ledger rebuild " + name_ + "` is running");
    {
      auto lease = pool_.acquire();
      pqxx::work work(*lease);
      watermark_ = prepare_shadow(work, progress_name_, tables_, keyed_tables_, options_.restart);
      owner_ = work.exec_params1(std::string("UPDATE ") + shadow_schema +
                                     ".progress SET owner = gen_random_uuid()::text WHERE name = "
                                     "$1 RETURNING owner",
                                 progress_name_)[0]
                   .as<std::string>();
      work.commit();
    }
    result.resumed_from = GlobalPosition(watermark_);
    if (watermark_ > 0) spdlog::info("rebuild {}: resuming after position {}", name_, watermark_);
    const std::int64_t started_at = watermark_;

    fill_near_head(started_at);
    {
      // Outside the swap's transaction, so queries and the projector do not wait for it.
      auto lease = pool_.acquire();
      pqxx::work work(*lease);
      work.exec("SET LOCAL statement_timeout = 0");
      work.exec("SET LOCAL maintenance_work_mem = '256MB'");
      try {
        for (const auto& table : tables_) build_indexes(work, table);
      } catch (const pqxx::unique_violation& error) {
        // Resuming would build the same key on the same rows: say how to get out.
        throw std::runtime_error("rebuild " + name_ + ": the shadow's rows break a key (" +
                                 error.what() +
                                 "); the live read model is unchanged: run `ledger rebuild " +
                                 name_ + " --restart` to fill the shadow again from the start");
      }
      work.commit();
      // The shadow's pages all-visible and frozen before it goes live (its autovacuum was off
      // while it filled): else the first autovacuum after the swap vacuums the whole table at
      // once, beside the live load (migration 0013's threshold is long passed). On a
      // connection of its own: VACUUM cannot run in a transaction, so no SET LOCAL lifts the
      // statement timeout for it, and a session SET must not reach the pool's other users.
      const auto maintenance = pool_.connect_dedicated();
      pqxx::nontransaction vacuum(*maintenance);
      vacuum.exec("SET statement_timeout = 0");
      for (const auto& table : tables_) vacuum.exec("VACUUM (FREEZE, ANALYZE) " + shadow(table));
    }
    // What arrived while the indexes were built, so the swap's own stretch stays short.
    fill_near_head(started_at);

    auto lease = pool_.acquire();
    pqxx::work work(*lease);
    work.exec("SET LOCAL statement_timeout = 0");
    work.exec("SET LOCAL lock_timeout = '60s'");
    work.exec("SET LOCAL maintenance_work_mem = '256MB'");  // an index follow_live_indexes builds
    plan_for_a_growing_shadow(work);  // a short log goes in whole with the swap
    // The row locks the live projectors take first in each batch, in their order (partition
    // rows, then the projection's row): they wait here until the swap commits and then find
    // the partition watermarks gone, and split the new watermark again.
    work.exec_params(
        "SELECT partition FROM read.partition_watermarks WHERE projection = $1 ORDER BY partition FOR UPDATE",
        name_);
    const std::int64_t live_watermark = work.exec_params1(
        "SELECT greatest(watermark, coalesce((SELECT max(position) FROM read.partition_watermarks "
        "WHERE projection = $1), 0)) FROM read.projections WHERE name = $1 FOR UPDATE",
        name_)[0].as<std::int64_t>();
    // The last stretch up to the head (at least up to the live watermark) goes in with the swap.
    const std::int64_t target = std::max(live_watermark, store_.head().position.value());
    const std::int64_t swap_from = watermark_;
    while (watermark_ < target) {
      auto batch =
          store_.read_all(GlobalPosition(watermark_ + 1),
                          static_cast<std::size_t>(std::min<std::int64_t>(
                              target - watermark_, static_cast<std::int64_t>(read_events()))));
      apply(work, batch);
    }
    writer_->flush(work);
    follow_live_indexes(work, tables_);
    for (const auto& table : tables_) check_shadow_keys(work, table);
    for (const auto& table : tables_) swap_table(work, table);
    // Every event up to the rebuilt watermark is applied, in every partition: the watermarks
    // start over from it, split by the topic's partition count when a projector next runs.
    work.exec_params("DELETE FROM read.partition_watermarks WHERE projection = $1", name_);
    work.exec_params("UPDATE read.projections SET watermark = $2, partitions = NULL, updated_at = now() "
                     "WHERE name = $1",
                     name_, watermark_);
    still_the_owner(work.exec_params(
        std::string("DELETE FROM ") + shadow_schema + ".progress WHERE name = $1 AND owner = $2",
        progress_name_, owner_));
    work.commit();
    if (progress_) progress_(watermark_ - started_at, watermark_ - started_at);
    result.watermark = GlobalPosition(watermark_);
    result.events_applied = watermark_ - started_at;
    result.passes = passes_;
    result.outrun = outrun_;
    result.swap_applied = watermark_ - swap_from;
    return result;
  }

 private:
  // Fills the shadow until it is within swap_within of the head (which moves under load), one
  // committed transaction per batch with the shadow's watermark, one pass up to the head of the
  // moment at a time. A log that grows at least as fast as the rebuild reads it would keep it
  // chasing for ever: after lagging_passes_max passes in a row that leave it no closer (and
  // beyond swap_within), it stops, and the swap applies the rest if that is at most
  // swap_stretch_max events; else it throws RebuildOutrun, its progress kept. The call after the
  // index build always makes a pass (what arrived meanwhile); if that pass comes no closer
  // either, it counts on from the passes before.
  void fill_near_head(std::int64_t started_at) {
    std::int64_t head = store_.head().position.value();
    while (head - watermark_ > options_.swap_within) {
      const std::int64_t behind_at_start = head - watermark_;
      fill_to(head, started_at);
      ++passes_;
      head = store_.head().position.value();
      const std::int64_t behind = head - watermark_;
      spdlog::info("rebuild {}: pass {} applied up to position {}; {} events behind the head",
                   name_, passes_, watermark_, behind);
      const bool lagging = behind > options_.swap_within && behind >= behind_at_start;
      lagging_passes_ = lagging ? lagging_passes_ + 1 : 0;
      if (lagging_passes_ < options_.lagging_passes_max) continue;
      if (behind > options_.swap_stretch_max) {
        throw RebuildOutrun(
            "rebuild " + name_ +
            ": the event store grows at least as fast as the rebuild reads it (" +
            std::to_string(behind) + " events behind the head after " +
            std::to_string(lagging_passes_) +
            " passes that came no closer), more than the swap may apply while the live projector "
            "waits (" +
            std::to_string(options_.swap_stretch_max) + "); its progress is kept up to position " +
            std::to_string(watermark_) +
            ": run it again when the write rate is lower, and it resumes there");
      }
      spdlog::warn(
          "rebuild {}: the event store grew at least as fast as the rebuild read it for {} "
          "passes in a row; it stops chasing the head, and the swap applies the last {} events "
          "or more while the live {} projector waits for it",
          name_, lagging_passes_, behind, name_);
      outrun_ = true;
      return;
    }
  }

  // One pass: the log from the shadow's watermark up to `head`, read in pieces of
  // read_events(), committed (with the watermark) once a transaction holds batch_events or
  // more (whole pieces).
  void fill_to(std::int64_t head, std::int64_t started_at) {
    const std::size_t per_transaction = std::max<std::size_t>(options_.batch_events, 1);
    LogReader reader(pool_, watermark_ + 1, head, read_events());
    for (const auto* batch = &reader.next(); !batch->empty();) {
      auto lease = pool_.acquire();
      pqxx::work work(*lease);
      work.exec("SET LOCAL synchronous_commit = off");
      work.exec("SET LOCAL statement_timeout = 0");
      plan_for_a_growing_shadow(work);
      std::size_t applied = 0;
      do {
        apply(work, *batch);
        applied += batch->size();
        // The next piece is awaited only while this transaction wants it, not before the commit.
        batch = applied < per_transaction ? &reader.next() : nullptr;
      } while (batch != nullptr && !batch->empty());
      writer_->flush(work);
      still_the_owner(work.exec_params(std::string("UPDATE ") + shadow_schema +
                                           ".progress SET watermark = $2 WHERE name = $1 AND "
                                           "owner = $3",
                                       progress_name_, watermark_, owner_));
      work.commit();
      if (progress_) progress_(watermark_ - started_at, head - started_at);
      if (batch == nullptr) batch = &reader.next();
    }
  }

  // The advisory lock makes this run the shadow's only writer, which the balances its writer
  // keeps in memory rely on. Should the lock's session have ended and another run have taken
  // the shadow over (its start sets the progress row's owner), this run stops at its next
  // commit instead of writing what it kept over that run's rows. `changed`: the progress
  // row's update or delete, which finds no row once the owner changed.
  void still_the_owner(const pqxx::result& changed) const {
    if (changed.affected_rows() == 1) return;
    throw std::runtime_error("rebuild " + name_ +
                             ": another run took over the shadow tables (this run's lock was "
                             "lost); this run stops, the live read model is unchanged");
  }

  [[nodiscard]] std::size_t read_events() const {
    return std::max<std::size_t>(std::min(options_.read_events, options_.batch_events), 1);
  }

  // Applies a batch that must follow the shadow's watermark without a gap.
  void apply(pqxx::work& work, const std::vector<domain::RecordedEvent>& batch) {
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
  // The shadow's layout after the model's name: 2 since the append-only tables fill without
  // their keys (prepare_shadow).
  std::string progress_name_;
  const std::vector<std::string>& tables_;
  const std::vector<std::string>& keyed_tables_;
  std::unique_ptr<projections::Projection> writer_;
  const RebuildOptions& options_;
  const Progress& progress_;
  std::string owner_;  // this run's mark on the progress row
  std::int64_t watermark_ = 0;
  int passes_ = 0;
  int lagging_passes_ = 0;  // in a row, across the fills before and after the index build
  bool outrun_ = false;
};

}  // namespace

RebuildResult rebuild(db::ConnectionPool& owner_pool, projections::ProjectionKind kind, const RebuildOptions& options,
                      const Progress& progress) {
  return Rebuilder(owner_pool, kind, options, progress).run();
}

}  // namespace ledger::replay
