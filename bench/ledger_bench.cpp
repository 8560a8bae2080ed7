// ledger-bench: measures the performance targets of the issues (never a timed test).
// Scenarios run in one process against one PostgreSQL (fsync on): the raw PostgreSQL
// baselines first, then the engine, so every figure can be read as a ratio to the baselines.
#include <CLI/CLI.hpp>
#include <pqxx/pqxx>
#include <spdlog/spdlog.h>
#include <signal.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <atomic>
#include <chrono>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <iterator>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "http_load.hpp"
#include "serve_metrics.hpp"
#include "two_serves.hpp"
#include "wrk_load.hpp"
#include "plots.hpp"
#include "read_side.hpp"
#include "replay_runs.hpp"
#include "ledger/api/auth.hpp"
#include "ledger/core/logging.hpp"
#include "ledger/core/process.hpp"
#include "ledger/db/embedded_postgres.hpp"
#include "ledger/db/migrations.hpp"
#include "ledger/engine/close_of_business.hpp"
#include "ledger/engine/engine.hpp"
#include "ledger/engine/event_store.hpp"
#include "ledger/db/pool.hpp"

using namespace ledger;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

template <typename T>
T percentile(std::vector<T> samples, double p) {
  if (samples.empty()) return T{};
  std::sort(samples.begin(), samples.end());
  const auto index = static_cast<std::size_t>(p * static_cast<double>(samples.size() - 1));
  return samples[index];
}


struct Result {
  std::string scenario;
  std::string metric;
  double value = 0;
  std::string unit;
  std::string target;
  std::string verdict;  // met, missed, or empty (no target)
};

// Rows shaped like events, in a table indexed like the events table; ids ordered like the
// engine's UUIDv7 ids.
constexpr const char* baseline_table_sql = R"sql(
DROP TABLE IF EXISTS bench_events;
CREATE TABLE bench_events (
  position bigint PRIMARY KEY, stream_id text NOT NULL, version bigint NOT NULL,
  event_id uuid NOT NULL UNIQUE, type text NOT NULL, schema_version smallint NOT NULL,
  payload bytea NOT NULL, metadata jsonb NOT NULL, recorded_at timestamptz NOT NULL,
  hash bytea NOT NULL, UNIQUE (stream_id, version));
CREATE INDEX ON bench_events USING brin (recorded_at);
)sql";

constexpr const char* metadata_json =
    R"({"actor":"bench","command_id":"3f1c2a4e-8a51-4c55-9b0f-0a8e2f7d9c11","correlation_id":"","causation_id":"","request_id":"","client_address":""})";

// Raw single-row INSERT transactions with `connections` connections for `duration`.
double baseline_single_row(const std::string& url, int connections, double duration) {
  std::atomic<std::int64_t> next_position{1};
  std::atomic<std::int64_t> done{0};
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  const std::string payload = "\\x" + std::string(160, 'a');
  for (int c = 0; c < connections; ++c) {
    threads.emplace_back([&, c] {
      pqxx::connection connection(url);
      connection.prepare("insert",
                         "INSERT INTO bench_events VALUES ($1, $2, $3, lpad(to_hex($1::bigint), 32, '0')::uuid, "
                         "'account_entry', 1, $4::bytea, $5::jsonb, now(), $6::bytea)");
      std::int64_t version = 0;
      while (seconds_since(start) < duration) {
        const std::int64_t position = next_position++;
        pqxx::work work(connection);
        work.exec_prepared("insert", position, "single-" + std::to_string(c), ++version, payload,
                           metadata_json, "\\x" + std::string(64, 'b'));
        work.commit();
        ++done;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  return static_cast<double>(done.load()) / seconds_since(start);
}

// Raw batched INSERT (unnest arrays, one transaction per batch) on one connection.
double baseline_batched(const std::string& url, std::size_t batch_rows, double duration,
                        std::int64_t first_position) {
  pqxx::connection connection(url);
  connection.prepare("insert_batch",
                     "INSERT INTO bench_events SELECT p, s, v, lpad(to_hex(p), 32, '0')::uuid, 'account_entry', 1, "
                     "pl, md, now(), h FROM unnest($1::bigint[], $2::text[], $3::bigint[], "
                     "$4::bytea[], $5::jsonb[], $6::bytea[]) AS u(p, s, v, pl, md, h)");
  std::int64_t position = first_position;
  std::int64_t rows = 0;
  std::string quoted_metadata;
  for (char ch : std::string(metadata_json)) {
    if (ch == '"' || ch == '\\') quoted_metadata.push_back('\\');
    quoted_metadata.push_back(ch);
  }
  const auto start = Clock::now();
  while (seconds_since(start) < duration) {
    std::string positions = "{", streams = "{", versions = "{", payloads = "{", metadata = "{",
                hashes = "{";
    for (std::size_t i = 0; i < batch_rows; ++i) {
      const char* sep = i == 0 ? "" : ",";
      positions += sep + std::to_string(position);
      streams += std::string(sep) + "\"batch-" + std::to_string(position) + "\"";
      versions += std::string(sep) + "1";
      payloads += std::string(sep) + "\"\\\\x" + std::string(160, 'a') + "\"";
      metadata += std::string(sep) + "\"" + quoted_metadata + "\"";
      hashes += std::string(sep) + "\"\\\\x" + std::string(64, 'b') + "\"";
      ++position;
    }
    for (auto* text : {&positions, &streams, &versions, &payloads, &metadata, &hashes}) *text += "}";
    pqxx::work work(connection);
    work.exec_prepared("insert_batch", positions, streams, versions, payloads, metadata, hashes);
    work.commit();
    rows += static_cast<std::int64_t>(batch_rows);
  }
  return static_cast<double>(rows) / seconds_since(start);
}

struct EngineRun {
  double transfers_per_second = 0;
  double events_per_second = 0;
  std::uint32_t commit_p50_us = 0;
  double postgres_cpu_us_per_transfer = 0;  // 0: not measured (PostgreSQL not embedded)
  std::uint32_t commit_p99_us = 0;
  double mean_batch_commands = 0;
  std::int64_t transfers = 0;
  std::int64_t rejected = 0;
  // The state cache's lookups of account streams during the run.
  std::uint64_t account_cache_hits = 0;
  std::uint64_t account_cache_misses = 0;
  std::uint64_t conflicts = 0;  // appends that lost (a stale cache is one cause)
};

// `key_prefix` not empty: every command carries an Idempotency-Key (prefix, client, sequence),
// as HTTP clients send them, so the batch also stores one idempotency record per command.
EngineRun engine_append(engine::Engine& engine, int accounts, int clients, std::size_t window,
                        double duration, const std::string& key_prefix = "") {
  const Currency eur = *Currency::parse("EUR");
  const auto before = engine.stats();
  std::atomic<std::int64_t> accepted{0};
  std::atomic<std::int64_t> rejected{0};
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      std::mt19937 random(99 + c);
      std::int64_t sequence = 0;
      std::deque<std::future<domain::CommandOutcome>> in_flight;
      auto settle_one = [&] {
        const auto outcome = in_flight.front().get();
        in_flight.pop_front();
        (outcome.accepted() ? accepted : rejected) += 1;
      };
      while (seconds_since(start) < duration) {
        const int from = static_cast<int>(random() % accounts);
        int to = static_cast<int>(random() % accounts);
        if (to == from) to = (to + 1) % accounts;
        domain::Command command{domain::CommandBody{domain::SingleCommand{domain::Transfer{
                                    "", "a" + std::to_string(from), "a" + std::to_string(to),
                                    Amount(1 + static_cast<std::int64_t>(random() % 100)), eur}}},
                                {}};
        command.context.actor = "bench";
        if (!key_prefix.empty()) {
          command.context.idempotency_key = key_prefix + std::to_string(c) + "-" + std::to_string(sequence++);
          command.context.request_fingerprint = command.context.idempotency_key;
        }
        in_flight.push_back(engine.submit(std::move(command)));
        if (in_flight.size() >= window) settle_one();
      }
      while (!in_flight.empty()) settle_one();
    });
  }
  for (auto& thread : threads) thread.join();
  const double elapsed = seconds_since(start);
  const auto after = engine.stats();
  EngineRun run;
  run.transfers = accepted.load();
  run.rejected = rejected.load();
  run.transfers_per_second = static_cast<double>(accepted.load()) / elapsed;
  run.events_per_second = static_cast<double>(after.events - before.events) / elapsed;
  std::vector<std::uint32_t> latencies(after.recent_commit_latency_us.end() -
                                           std::min(after.recent_commit_latency_us.size(),
                                                    static_cast<std::size_t>(after.batches - before.batches)),
                                       after.recent_commit_latency_us.end());
  run.commit_p50_us = percentile(latencies, 0.50);
  run.commit_p99_us = percentile(latencies, 0.99);
  const auto account = static_cast<std::size_t>(engine::StateCacheKind::account);
  run.account_cache_hits = after.cache_breakdown.lookups.at(account).hits - before.cache_breakdown.lookups.at(account).hits;
  run.account_cache_misses =
      after.cache_breakdown.lookups.at(account).misses - before.cache_breakdown.lookups.at(account).misses;
  run.conflicts = after.conflicts - before.conflicts;
  run.mean_batch_commands = after.batches == before.batches
                                ? 0
                                : static_cast<double>(after.commands - before.commands) /
                                      static_cast<double>(after.batches - before.batches);
  return run;
}

// CPU seconds a process and its children have used: its own and its ended children's (utime,
// stime, cutime, cstime of /proc/PID/stat), plus each live child's. For the postmaster, all of
// PostgreSQL (the backends, the WAL writer, the checkpointer). 0 when /proc cannot tell (e.g.
// PostgreSQL not embedded).
double cpu_seconds_with_children(pid_t root) {
  if (root <= 0) return 0;
  // Fields after the command name (which may hold spaces): state is field 3, ppid 4, utime 14.
  auto read_stat = [](const std::string& path, long& ppid, double& own, double& children) {
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = text.rfind(')');
    if (close == std::string::npos) return false;
    std::istringstream fields(text.substr(close + 2));
    std::vector<std::string> values{std::istream_iterator<std::string>(fields), std::istream_iterator<std::string>()};
    if (values.size() < 15) return false;
    const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
    ppid = std::stol(values[1]);
    own = (std::stod(values[11]) + std::stod(values[12])) / tick;
    children = (std::stod(values[13]) + std::stod(values[14])) / tick;
    return true;
  };
  long ppid = 0;
  double own = 0, children = 0;
  if (!read_stat("/proc/" + std::to_string(root) + "/stat", ppid, own, children)) return 0;
  double total = own + children;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    long child_ppid = 0;
    double child_own = 0, child_children = 0;
    if (read_stat(entry.path().string() + "/stat", child_ppid, child_own, child_children) && child_ppid == root) {
      total += child_own + child_children;
    }
  }
  return total;
}

// Microseconds of `cpu_seconds` per transfer a wrk run made (0: nothing to divide or by).
double cpu_us_per_transfer(double cpu_seconds, const bench::WrkResult& run) {
  const double transfers = run.rate() * run.seconds;
  return transfers > 0 && cpu_seconds > 0 ? cpu_seconds * 1e6 / transfers : 0;
}

void setup_accounts(engine::Engine& engine, int accounts) {
  const Currency eur = *Currency::parse("EUR");
  std::vector<std::future<domain::CommandOutcome>> pending;
  auto drain = [&] {
    for (auto& f : pending) {
      const auto outcome = f.get();
      if (!outcome.accepted()) throw std::runtime_error("setup failed: " + outcome.detail);
    }
    pending.clear();
  };
  for (int i = 0; i < accounts; ++i) {
    domain::LinkedCommands linked;
    linked.commands.push_back(domain::OpenAccount{"a" + std::to_string(i), eur});
    linked.commands.push_back(domain::Deposit{"a" + std::to_string(i), Amount(1'000'000'000)});
    domain::Command command{domain::CommandBody{std::move(linked)}, {}};
    command.context.actor = "bench-setup";
    pending.push_back(engine.submit(std::move(command)));
    if (pending.size() >= 5'000) drain();
  }
  drain();
}

// `count` active loans over the first accounts, each originated and disbursed as one linked
// command: 1,200.00 at 12 % over 12 months, first due 2026-02-15.
void setup_loans(engine::Engine& engine, int count, int accounts) {
  const Currency eur = *Currency::parse("EUR");
  std::vector<std::future<domain::CommandOutcome>> pending;
  auto drain = [&] {
    for (auto& f : pending) {
      const auto outcome = f.get();
      if (!outcome.accepted()) throw std::runtime_error("loan setup failed: " + outcome.detail);
    }
    pending.clear();
  };
  for (int i = 0; i < count; ++i) {
    const std::string id = "bench-loan-" + std::to_string(i);
    domain::LinkedCommands linked;
    linked.commands.push_back(domain::OriginateLoan{id, "a" + std::to_string(i % accounts), eur, Amount(120'000), 1'200, 12,
                                                    domain::ScheduleType::annuity, "2026-01-15", "2026-02-15",
                                                    Amount(0), Amount(500), 5});
    linked.commands.push_back(domain::DisburseLoan{id});
    domain::Command command{domain::CommandBody{std::move(linked)}, {}};
    command.context.actor = "bench-setup";
    pending.push_back(engine.submit(std::move(command)));
    if (pending.size() >= 5'000) drain();
  }
  drain();
}

std::string git_commit() {
  std::string commit;
  if (FILE* pipe = popen("git rev-parse --short HEAD 2>/dev/null", "r")) {
    char buffer[64];
    if (fgets(buffer, sizeof buffer, pipe)) commit = buffer;
    pclose(pipe);
  }
  while (!commit.empty() && commit.back() == '\n') commit.pop_back();
  return commit;
}

std::string machine_summary() {
  std::ostringstream out;
  std::ifstream meminfo("/proc/meminfo");
  std::string label;
  long kib = 0;
  meminfo >> label >> kib;
  out << std::thread::hardware_concurrency() << " cores, " << (kib / 1024 / 1024) << " GiB";
  return out.str();
}

// results.{md,json} (or `name`.{md,json}) in `work_directory`, and the table on stdout.
void write_reports(const std::vector<Result>& results, const std::string& work_directory, const std::string& name,
                   const std::string& postgres_settings, double seconds, int accounts) {
  std::ostringstream markdown;
  markdown << "| scenario | metric | value | unit | target | verdict |\n|---|---|---:|---|---|---|\n";
  for (const auto& r : results) {
    char value[64];
    std::snprintf(value, sizeof value, "%.1f", r.value);
    markdown << "| " << r.scenario << " | " << r.metric << " | " << value << " | " << r.unit
             << " | " << r.target << " | " << r.verdict << " |\n";
  }
  std::ostringstream json;
  utsname names{};
  uname(&names);
  json << "{\n  \"machine\": \"" << machine_summary() << "\",\n  \"kernel\": \"" << names.release
       << "\",\n  \"postgresql\": {" << postgres_settings << "}"
       << ",\n  \"git_commit\": \"" << git_commit() << "\",\n  \"seconds_per_phase\": " << seconds
       << ",\n  \"accounts\": " << accounts << ",\n  \"results\": [\n";
  for (std::size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    json << "    {\"scenario\": \"" << r.scenario << "\", \"metric\": \"" << r.metric
         << "\", \"value\": " << r.value << ", \"unit\": \"" << r.unit << "\", \"target\": \""
         << r.target << "\", \"verdict\": \"" << r.verdict << "\"}" << (i + 1 < results.size() ? "," : "")
         << "\n";
  }
  json << "  ]\n}\n";
  std::ofstream(work_directory + "/" + name + ".md") << markdown.str();
  std::ofstream(work_directory + "/" + name + ".json") << json.str();
  std::cout << "\n" << machine_summary() << ", commit " << git_commit() << "\n" << markdown.str();
}

// Issue 17's target for several serves on one database: two give at least this share of one's
// throughput (on this 2-core machine; on more cores, more).
constexpr double two_serves_ratio_min = 0.90;
// As the issue measured: 1,000 funded accounts, 32 wrk connections on each serve.
constexpr int two_serves_accounts = 1'000;
// Streams beyond the loans and accounts that the loan run's state cache keeps: the system
// accounts and the transfers of the setup still in flight.
constexpr std::size_t loan_cache_headroom_streams = 100'000;
constexpr int two_serves_connections = 32;
// The small population the HTTP rate is also measured with (issue 18, item 1).
constexpr int hot_accounts = 1'000;

// 100000 as "100,000", for row names.
std::string with_thousands(int value) {
  std::string digits = std::to_string(value);
  for (auto at = static_cast<int>(digits.size()) - 3; at > 0; at -= 3)
    digits.insert(static_cast<std::size_t>(at), ",");
  return digits;
}

// The two-serves section's rows: per workload, one serve alone (before and after), two at once
// (wrk on each), the ratio to one, and the two behind HAProxy.
void add_two_serves_rows(std::vector<Result>& results, const bench::TwoServesRun& run, int connections) {
  const std::string scenario = "two serves";
  auto per_thousand = [](std::int64_t conflicts, std::int64_t commands) {
    return commands > 0 ? 1000.0 * static_cast<double>(conflicts) / static_cast<double>(commands) : 0.0;
  };
  auto errors = [](const bench::WrkResult& wrk) { return static_cast<double>(wrk.non_2xx + wrk.socket_errors); };
  // Where an engine's commits spend their time: all serialize on the store's head row.
  auto add_head_lock_rows = [&](const std::string& prefix, const bench::ServeLoad& load) {
    if (load.batches <= 0) return;
    const auto batches = static_cast<double>(load.batches);
    results.push_back({scenario, prefix + " commands per committed batch",
                       static_cast<double>(load.commands) / batches, "commands", "", ""});
    results.push_back({scenario, prefix + " head row waited for, per batch (mean)",
                       1e3 * load.head_lock_wait_seconds / batches, "ms", "", ""});
    results.push_back({scenario, prefix + " head row held, per batch (mean)",
                       1e3 * load.head_lock_held_seconds / batches, "ms", "", ""});
    results.push_back({scenario, prefix + " head row held, share of the run",
                       100.0 * load.head_lock_held_seconds / load.wrk.seconds, "%", "", ""});
    results.push_back({scenario, prefix + " batches appended on its own head in one statement",
                       100.0 * static_cast<double>(load.on_own_head) / batches, "%", "", ""});
    results.push_back({scenario,
                       prefix + " appends on its own head that found it moved, per 1,000 batches",
                       per_thousand(load.on_own_head_missed, load.batches), "tries", "", ""});
  };
  for (const auto& s : run.scenarios) {
    const std::string what = s.workload == bench::WrkScript::deposits ? "deposits" : "transfers";
    const std::string one = what + ", one serve (" + std::to_string(connections) + " connections)";
    // The runs of one serve alone that bracket the runs with two: their mean is the reference.
    double one_rate = 0, one_p50 = 0, one_p99 = 0, one_errors = 0;
    std::int64_t one_conflicts = 0, one_commands = 0;
    std::string one_problem = s.one.empty() ? "did not run" : "";
    for (std::size_t i = 0; i < s.one.size(); ++i) {
      const auto& load = s.one[i];
      if (!load.wrk.ran) {
        one_problem = load.wrk.problem;
        break;
      }
      results.push_back({scenario, one + (i == 0 ? ", just before the run with two" : ", just after it") + ": commands/s",
                         load.wrk.rate(), "commands/s", "", ""});
      add_head_lock_rows(one + (i == 0 ? ", just before the run with two:" : ", just after it:"), load);
      one_rate += load.wrk.rate() / static_cast<double>(s.one.size());
      one_p50 = std::max(one_p50, load.wrk.p50_ms);
      one_p99 = std::max(one_p99, load.wrk.p99_ms);
      one_errors += errors(load.wrk);
      one_conflicts += load.conflicts;
      one_commands += load.commands;
    }
    if (!one_problem.empty()) {
      results.push_back({scenario, one, 0, "commands/s", "", one_problem});
      continue;
    }
    results.push_back({scenario, one + ": commands/s (mean)", one_rate, "commands/s", "", ""});
    results.push_back({scenario, one + ": latency p50 (the slower run)", one_p50, "ms", "", ""});
    results.push_back({scenario, one + ": latency p99 (the slower run)", one_p99, "ms", "", ""});
    results.push_back({scenario, one + ": errors (non-2xx + socket)", one_errors, "requests", "", ""});
    results.push_back({scenario, one + ": version conflicts per 1,000 commands",
                       per_thousand(one_conflicts, one_commands), "conflicts", "", ""});
    const std::string two = what + ", two serves at once (" + std::to_string(connections) + " connections on each)";
    double together = 0, p50 = 0, p99 = 0, two_errors = 0;
    std::int64_t conflicts = 0, commands = 0;
    bool ran = s.two.size() == 2;
    for (std::size_t i = 0; i < s.two.size(); ++i) {
      const auto& load = s.two[i];
      if (!load.wrk.ran) {
        results.push_back({scenario, two + ": serve " + std::string(1, static_cast<char>('a' + i)), 0, "commands/s",
                           "", load.wrk.problem});
        ran = false;
        continue;
      }
      const std::string serve = two + ": serve " + std::string(1, static_cast<char>('a' + i));
      results.push_back({scenario, serve + " commands/s", load.wrk.rate(), "commands/s", "", ""});
      results.push_back({scenario, serve + " commands decided again per 1,000",
                         per_thousand(load.redecided, load.commands), "commands", "", ""});
      results.push_back({scenario, serve + " pipeline stalls per second",
                         static_cast<double>(load.stalls) / load.wrk.seconds, "stalls/s", "", ""});
      add_head_lock_rows(serve, load);
      together += load.wrk.rate();
      p50 = std::max(p50, load.wrk.p50_ms);
      p99 = std::max(p99, load.wrk.p99_ms);
      two_errors += errors(load.wrk);
      conflicts += load.conflicts;
      commands += load.commands;
    }
    if (ran) {
      const double ratio = together / one_rate;
      results.push_back({scenario, two + ": commands/s together", together, "commands/s", "", ""});
      results.push_back({scenario, two + ": latency p50 (the slower serve)", p50, "ms", "", ""});
      results.push_back({scenario, two + ": latency p99 (the slower serve)", p99, "ms", "", ""});
      results.push_back({scenario, two + ": errors (non-2xx + socket)", two_errors, "requests", "", ""});
      results.push_back({scenario, two + ": version conflicts per 1,000 commands", per_thousand(conflicts, commands),
                         "conflicts", "", ""});
      results.push_back({scenario, what + ": two serves / one serve", 100.0 * ratio, "%", ">= 90%",
                         ratio >= two_serves_ratio_min ? "met" : "missed"});
    }
    const std::string balanced = what + ", two serves behind HAProxy (" + std::to_string(2 * connections) +
                                 " connections)";
    if (!s.balancer_problem.empty() || !s.balanced.wrk.ran) {
      results.push_back({scenario, balanced, 0, "commands/s", "",
                         s.balancer_problem.empty() ? s.balanced.wrk.problem : s.balancer_problem});
      continue;
    }
    const double ratio = s.balanced.wrk.rate() / one_rate;
    results.push_back({scenario, balanced + ": commands/s", s.balanced.wrk.rate(), "commands/s", "", ""});
    results.push_back({scenario, balanced + ": latency p99", s.balanced.wrk.p99_ms, "ms", "", ""});
    results.push_back({scenario, balanced + ": errors (non-2xx + socket)", errors(s.balanced.wrk), "requests", "", ""});
    results.push_back({scenario, balanced + ": version conflicts per 1,000 commands",
                       per_thousand(s.balanced.conflicts, s.balanced.commands), "conflicts", "", ""});
    results.push_back({scenario, what + ": behind HAProxy / one serve", 100.0 * ratio, "%", ">= 90%",
                       ratio >= two_serves_ratio_min ? "met" : "missed"});
  }
}

// Starts `ledger broker` (librdkafka's mock cluster in its own process; `name`.log and
// `name`.address in `work_directory`) and returns its pid and bootstrap address.
std::pair<pid_t, std::string> start_broker(const std::string& ledger_binary, const std::string& work_directory,
                                           const std::string& name) {
  const std::string broker_address = work_directory + "/" + name + ".address";
  std::filesystem::remove(broker_address);
  process::SpawnOptions broker_options;
  broker_options.output_file = work_directory + "/" + name + ".log";
  const pid_t broker = process::spawn({ledger_binary, "--log-level", "warn", "broker", "--address-file", broker_address},
                                      broker_options);
  std::string kafka_brokers;
  for (int attempt = 0; attempt < 600 && kafka_brokers.empty(); ++attempt) {
    std::ifstream in(broker_address);
    if (!(in >> kafka_brokers)) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (kafka_brokers.empty()) throw std::runtime_error("ledger broker did not start");
  return {broker, kafka_brokers};
}

// Catch-up with 1, 2 and 4 `ledger project all` processes per read model (one consumer group
// each, the topic's 4 partitions shared among them; projections/README.md, "Partitions"): the
// backlog is published once by `ledger replay publish`, then for each count the read models
// are emptied and the processes started together; the figure is the backlog over the time
// from their start until every read model's lowest partition watermark reaches the head.
std::vector<Result> catch_up_scale(const std::string& ledger_binary, const std::string& admin_url,
                                   const std::string& app_url, const std::string& work_directory,
                                   std::int64_t backlog) {
  std::vector<Result> results;
  const auto [broker, kafka_brokers] = start_broker(ledger_binary, work_directory, "scale-broker");
  std::string output;
  std::cout << "projections (scale): publishing " << backlog << " events ...\n";
  if (!process::run({ledger_binary, "--log-level", "warn", "--database-url", app_url, "--kafka-brokers", kafka_brokers,
                     "replay", "publish", "--from", "1", "--to", std::to_string(backlog)},
                    output)
           .success()) {
    throw std::runtime_error("ledger replay publish failed: " + output);
  }
  for (const int processes : {1, 2, 4}) {
    {
      // Empty read models: every table of schema read but the bookkeeping, and the watermarks.
      pqxx::connection connection(admin_url);
      pqxx::work work(connection);
      for (const auto& row : work.exec(
               "SELECT tablename FROM pg_tables WHERE schemaname = 'read' AND tablename NOT IN "
               "('projections', 'partition_watermarks', 'kafka_offsets')")) {
        work.exec(std::string("TRUNCATE read.") + work.quote_name(row[0].c_str()));
      }
      work.exec("DELETE FROM read.partition_watermarks");
      work.exec("DELETE FROM read.kafka_offsets");
      work.exec("UPDATE read.projections SET watermark = 0, partitions = NULL, applied = 0, stalled_position = NULL, "
                "stalled_reason = NULL, stalled_since = NULL");
      work.commit();
    }
    std::cout << "projections (scale): catch-up of " << backlog << " events with " << processes
              << " process(es) ...\n";
    std::vector<pid_t> running;
    const auto started = Clock::now();
    for (int i = 0; i < processes; ++i) {
      process::SpawnOptions options;
      options.output_file = work_directory + "/scale-project-" + std::to_string(processes) + "-" +
                            std::to_string(i) + ".log";
      running.push_back(process::spawn({ledger_binary, "--log-level", "warn", "--database-url", app_url,
                                        "--kafka-brokers", kafka_brokers, "project", "all"},
                                       options));
    }
    const double caught_up = bench::seconds_until(app_url, "SELECT min(watermark) FROM read.projections", backlog,
                                                  std::chrono::seconds(900));
    const double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
    for (const pid_t pid : running) (void)process::stop(pid, SIGTERM, std::chrono::seconds(15));
    results.push_back({"projections (scale)",
                       "catch-up from " + std::to_string(backlog) + " events, " + std::to_string(processes) +
                           " process(es) per read model, 4 partitions",
                       caught_up > 0 ? static_cast<double>(backlog) / elapsed : 0.0, "events/s", "",
                       caught_up > 0 ? "" : "timed out"});
  }
  (void)process::stop(broker, SIGTERM, std::chrono::seconds(10));
  return results;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ledger-bench: the standard performance suite"};
  std::string database_url;
  std::string work_directory = "bench/results";
  double seconds = 20;
  int accounts = 100'000;
  int clients = 8;
  std::size_t window = 512;
  bool quick = false;
  app.add_option("--database-url", database_url, "Benchmark against this PostgreSQL (superuser)")
      ->envname("LEDGER_BENCH_DATABASE_URL");
  app.add_option("--out", work_directory, "Results directory")->capture_default_str();
  app.add_option("--seconds", seconds, "Duration of each measured phase")->capture_default_str();
  app.add_option("--accounts", accounts, "Account population")->capture_default_str();
  std::size_t state_cache_streams = engine::EngineSettings{}.state_cache_streams_max;
  app.add_option("--state-cache-streams", state_cache_streams,
                 "The engine phase's state cache, in streams (smaller than the accounts: a cold cache)")
      ->capture_default_str();
  app.add_option("--clients", clients, "Engine client threads")->capture_default_str();
  app.add_option("--window", window, "Commands in flight per client")->capture_default_str();
  bool skip_http = false;
  bool scale_only = false;
  app.add_flag("--catch-up-scale", scale_only,
               "Only the engine backlog and the projector catch-up with 1, 2 and 4 processes per read model");
  app.add_flag("--no-http", skip_http, "Skip the HTTP scenario (e.g. for a 1,000,000-account memory run)");
  app.add_flag("--quick", quick, "Short run (5 s phases, 10,000 accounts) for a smoke test");
  int loan_count = 0;
  app.add_option("--loans", loan_count, "Active loans for close of business (default 100,000; --big 1,000,000)");
  std::size_t loan_state_cache_streams = 0;
  app.add_option("--loan-state-cache-streams", loan_state_cache_streams,
                 "State cache of the loan run's engine, in streams (default 0: sized for every loan and account)");
  bool big = false;
  app.add_flag("--big", big,
               "Grow the log to 10,000,000 events before the replay and rebuild scenario "
               "(about 4 more minutes of appends; with --no-http it skips the relay catch-up too)");
  int load_port = 0;
  std::string load_token;
  double load_rate = 0;
  app.add_option("--load-port", load_port,
                 "Only drive transfers at a running server on 127.0.0.1:PORT (accounts a0..a<N-1>)");
  app.add_option("--load-token", load_token, "Bearer token for --load-port")->envname("LEDGER_TOKEN");
  app.add_option("--load-rate", load_rate, "Fixed rate for --load-port (0: maximum)");
  std::string only;
  app.add_option("--only", only,
                 "Run one section alone: two-serves (one serve, then two on the same database, then both behind "
                 "HAProxy; results in results-two-serves.{md,json}), or engine (the baselines and the engine "
                 "phase, unkeyed then with an Idempotency-Key on every command; results in results-engine.{md,json}), "
                 "or loans (close of business over --loans active loans alone; results in results-loans.{md,json})")
      ->check(CLI::IsMember({"two-serves", "engine", "loans"}));
  std::string pg_directory;
  app.add_option("--pg-directory", pg_directory,
                 "Data directory of the embedded PostgreSQL (emptied first; default /tmp/ledger-bench-pg-UID)");
  CLI11_PARSE(app, argc, argv);
  if (load_port != 0) {
    bench::LoadSettings load{load_port, 64, seconds, load_rate, accounts, load_token};
    const auto run = bench::run_http_load(load);
    std::printf("ok %lld errors %lld in %.1f s: %.0f/s, p50 %.2f ms, p99 %.2f ms, p999 %.2f ms\n",
                static_cast<long long>(run.ok), static_cast<long long>(run.errors), run.seconds,
                static_cast<double>(run.ok) / run.seconds, percentile(run.latencies_us, 0.5) / 1e3,
                percentile(run.latencies_us, 0.99) / 1e3, percentile(run.latencies_us, 0.999) / 1e3);
    return 0;
  }
  if (quick) {
    seconds = 5;
    accounts = 10'000;
  }
  logging::configure(logging::Format::text, spdlog::level::warn, "bench");
  std::filesystem::create_directories(work_directory);

  std::unique_ptr<db::EmbeddedPostgres> postgres;
  pid_t postmaster = 0;  // embedded only: PostgreSQL's CPU per transfer is measured
  std::string admin_url = database_url;
  std::string app_url = database_url;
  if (database_url.empty()) {
    db::EmbeddedPostgresOptions options;
    options.directory = pg_directory.empty() ? "/tmp/ledger-bench-pg-" + std::to_string(getuid()) : pg_directory;
    std::filesystem::remove_all(options.directory);
    options.fsync = true;
    postgres = std::make_unique<db::EmbeddedPostgres>(options);
    postgres->start();
    std::ifstream(options.directory / "data" / "postmaster.pid") >> postmaster;
    postgres->ensure_database("bench");
    admin_url = postgres->superuser_url("bench");
    app_url = postgres->url("ledger_app", "bench");
  }
  db::MigrationRunner(admin_url).up();
  std::string postgres_settings;  // JSON members for the report
  {
    pqxx::connection connection(admin_url);
    pqxx::work work(connection);
    work.exec(baseline_table_sql);
    const auto settings = work.exec(
        "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', "
        "'shared_buffers', 'wal_level', 'full_page_writes')");
    std::cout << "PostgreSQL:";
    for (const auto& row : settings) {
      std::cout << " " << row[0].c_str() << "=" << row[1].c_str();
      postgres_settings += std::string(postgres_settings.empty() ? "" : ", ") + "\"" + row[0].c_str() +
                           "\": \"" + row[1].c_str() + "\"";
    }
    std::cout << "\n";
    work.commit();
  }

  std::vector<Result> results;
  // LEDGER_BENCH_LEDGER_BINARY: another build's `ledger` (comparing two builds in turn).
  const char* binary_override = std::getenv("LEDGER_BENCH_LEDGER_BINARY");
  const std::string ledger_binary =
      binary_override != nullptr && *binary_override != '\0'
          ? std::string(binary_override)
          : (std::filesystem::path(process::self_executable()).parent_path().parent_path() / "app" / "ledger").string();
  const std::string bench_secret = "bench-secret-of-at-least-thirty-two-bytes";
  auto two_serves = [&] {
    bench::TwoServesSettings two;
    two.ledger_binary = ledger_binary;
    two.database_url = app_url;
    two.work_directory = work_directory;
    two.jwt_secret = bench_secret;
    two.seconds = seconds;
    two.accounts = std::min(accounts, two_serves_accounts);
    two.connections_per_serve = two_serves_connections;
    add_two_serves_rows(results, bench::run_two_serves(two), two.connections_per_serve);
  };
  // Loans: close of business over every active loan (target: 1,000,000 in under 45 s). The
  // standard suite uses 100,000 loans; --big the full 1,000,000.
  auto run_loans = [&](const engine::EngineSettings& settings) {
    const int loans = loan_count > 0 ? loan_count : big ? 1'000'000 : quick ? 10'000 : 100'000;
    engine::EngineSettings loan_settings = settings;
    // A state cache sized for the run (issue 18, item 6): every loan and every account stays in
    // memory, so close of business decides on cached states and reads nothing back from the
    // store. With the default 500,000 streams the day's scan evicts each loan before it is
    // visited (an LRU in the order the loans were disbursed) and every one is folded again.
    // The settled transfers of the setup (each disbursement's) fill their FIFO's share of the
    // cache too (state_cache.hpp: an eighth), so the LRU gets seven eighths of it.
    const std::size_t loan_run_streams =
        static_cast<std::size_t>(loans) + static_cast<std::size_t>(accounts) + loan_cache_headroom_streams;
    loan_settings.state_cache_streams_max =
        loan_state_cache_streams > 0
            ? loan_state_cache_streams
            : std::max(engine::EngineSettings{}.state_cache_streams_max, loan_run_streams + loan_run_streams / 7 + 1);
    loan_settings.snapshot_directory = work_directory + "/loan-snapshots";
    std::filesystem::remove_all(loan_settings.snapshot_directory);
    auto loan_engine = std::make_unique<engine::Engine>(loan_settings);
    std::cout << "loans: originating and disbursing " << loans << " loans ...\n";
    const auto setup_started = Clock::now();
    setup_loans(*loan_engine, loans, accounts);
    std::cout << "  done in " << seconds_since(setup_started) << " s\n";
    db::PoolSettings pool_settings;
    pool_settings.url = app_url;
    pool_settings.connections_max = 2;
    db::ConnectionPool pool(pool_settings);
    const engine::EventStore store(pool);
    const long rss_before = bench::peak_rss_kib();
    std::cout << "loans: close of business 2026-02-21 ...\n";
    const auto cob_started = Clock::now();
    const auto cob = engine::close_of_business(*loan_engine, store, *domain::parse_date("2026-02-21"));
    const double cob_seconds = seconds_since(cob_started);
    const auto loan_stats = loan_engine->stats();
    loan_engine->stop();
    if (cob.failed > 0 || cob.closed != loans) {
      throw std::runtime_error("close of business closed " + std::to_string(cob.closed) + " of " +
                               std::to_string(loans) + " loans: " + cob.first_failure);
    }
    const double rate = static_cast<double>(loans) / cob_seconds;
    results.push_back({"loans", "close of business, " + std::to_string(loans) + " active loans" +
                                    (loans >= 1'000'000 ? "" : " (standard suite; --big for 1,000,000)"),
                       rate, "loans/s", ">= 22,222 (1,000,000 in 45 s)", rate >= 1'000'000.0 / 45 ? "met" : "missed"});
    results.push_back({"loans", "close of business wall time", cob_seconds, "s", "", ""});
    // Setup and close together: the close's own share is what its misses add.
    const auto& loan_lookups = loan_stats.cache_breakdown.lookups[static_cast<std::size_t>(engine::StateCacheKind::loan)];
    results.push_back({"loans", "state cache misses of loan streams (setup and close of business)",
                       static_cast<double>(loan_lookups.misses), "lookups", "", ""});
    results.push_back({"loans", "state cache hits of loan streams (setup and close of business)",
                       static_cast<double>(loan_lookups.hits), "lookups", "", ""});
    results.push_back({"loans", "state cache streams max", static_cast<double>(loan_stats.cache_streams_max),
                       "streams", "", ""});
    results.push_back({"loans", "peak RSS (bench process, engine in-process)",
                       static_cast<double>(std::max(rss_before, bench::peak_rss_kib())) / 1024.0, "MiB", "", ""});
  };
  if (only == "two-serves") {
    {
      pqxx::connection connection(admin_url);
      pqxx::work work(connection);
      work.exec("DROP TABLE bench_events");
      work.commit();
    }
    accounts = two_serves_accounts;
    // A database of an earlier run (--database-url) already holds the funded accounts.
    if (bench::query_scalar(app_url, "SELECT count(*) FROM events WHERE stream_id = 'account-a0'") == 0) {
      engine::EngineSettings setup_settings;
      setup_settings.database_url = app_url;
      setup_settings.expiry_sweep_interval = std::chrono::milliseconds(0);
      engine::Engine setup_engine(setup_settings);
      std::cout << "engine: opening and funding " << accounts << " accounts ...\n";
      setup_accounts(setup_engine, accounts);
      setup_engine.stop();
    }
    two_serves();
    write_reports(results, work_directory, "results-two-serves", postgres_settings, seconds, accounts);
    if (postgres) postgres->stop();
    return 0;
  }
  if (only == "loans") {
    {
      pqxx::connection connection(admin_url);
      pqxx::work work(connection);
      work.exec("DROP TABLE bench_events");
      work.commit();
    }
    engine::EngineSettings settings;
    settings.database_url = app_url;
    settings.expiry_sweep_interval = std::chrono::milliseconds(0);
    {
      engine::Engine setup_engine(settings);  // the borrowers' accounts
      std::cout << "engine: opening and funding " << accounts << " accounts ...\n";
      setup_accounts(setup_engine, accounts);
      setup_engine.stop();
    }
    run_loans(settings);
    write_reports(results, work_directory, "results-loans", postgres_settings, seconds, accounts);
    if (postgres) postgres->stop();
    return 0;
  }
  double batched = 1;
  double single = 1;
  if (!scale_only) {
    std::cout << "baseline: single-row INSERT transactions, 8 connections, " << seconds << " s ...\n";
    single = baseline_single_row(admin_url, 8, seconds);
    results.push_back({"baseline", "single-row INSERT transactions (8 connections)", single, "tx/s", "", ""});
    std::cout << "baseline: batched INSERT, " << seconds << " s ...\n";
    batched = baseline_batched(admin_url, 3'000, seconds, 1'000'000'000);
    results.push_back({"baseline", "batched INSERT rows (3,000 a transaction)", batched, "rows/s", "", ""});
  }
  {
    pqxx::connection connection(admin_url);
    pqxx::work work(connection);
    work.exec("DROP TABLE bench_events");
    work.commit();
  }

  engine::EngineSettings settings;
  settings.database_url = app_url;
  settings.expiry_sweep_interval = std::chrono::milliseconds(0);
  settings.snapshot_directory = work_directory + "/snapshots";
  settings.state_cache_streams_max = state_cache_streams;
  std::filesystem::remove_all(settings.snapshot_directory);
  auto engine = std::make_unique<engine::Engine>(settings);
  std::cout << "engine: opening and funding " << accounts << " accounts ...\n";
  auto setup_start = Clock::now();
  setup_accounts(*engine, accounts);
  std::cout << "  done in " << seconds_since(setup_start) << " s\n";
  std::cout << "engine: random transfers, " << clients << " clients x " << window
            << " in flight, " << seconds << " s ...\n";
  // PostgreSQL's CPU per accepted transfer (issue 18: what each command costs the server).
  auto postgres_cpu_per_transfer = [&](auto&& append) {
    const double before = cpu_seconds_with_children(postmaster);
    EngineRun measured = append();
    if (before > 0 && measured.transfers > 0) {
      measured.postgres_cpu_us_per_transfer =
          (cpu_seconds_with_children(postmaster) - before) * 1e6 / static_cast<double>(measured.transfers);
    }
    return measured;
  };
  const EngineRun run =
      postgres_cpu_per_transfer([&] { return engine_append(*engine, accounts, clients, window, seconds); });
  std::optional<EngineRun> keyed_run;
  if (only == "engine") {
    std::cout << "engine: the same with an Idempotency-Key on every command, " << seconds << " s ...\n";
    keyed_run = postgres_cpu_per_transfer(
        [&] { return engine_append(*engine, accounts, clients, window, seconds, "bench-key-"); });
  }
  if (big) {
    constexpr std::int64_t big_events = 10'000'000;
    for (std::int64_t head = 0; (head = bench::query_scalar(app_url, "SELECT position FROM event_store_head")) < big_events;) {
      std::cout << "engine: --big: " << head << " of " << big_events << " events ...\n";
      (void)engine_append(*engine, accounts, clients, window, 60);
    }
  }
  engine->stop();
  const long rss_kib = bench::peak_rss_kib();

  const double ratio = run.events_per_second / batched;
  results.push_back({"engine", "transfers", run.transfers_per_second, "transfers/s", "", ""});
  results.push_back({"engine", "events", run.events_per_second, "events/s", ">= 100,000",
                     run.events_per_second >= 100'000 ? "met" : "missed"});
  if (!scale_only) {  // no baseline ran
    results.push_back({"engine", "events / batched INSERT baseline", ratio * 100, "%", ">= 60%",
                       ratio >= 0.6 ? "met" : "missed"});
  }
  results.push_back({"engine", "batch commit latency p50", run.commit_p50_us / 1000.0, "ms", "", ""});
  results.push_back({"engine", "batch commit latency p99", run.commit_p99_us / 1000.0, "ms", "", ""});
  results.push_back({"engine", "mean batch size", run.mean_batch_commands, "commands", "", ""});
  if (run.postgres_cpu_us_per_transfer > 0) {
    results.push_back({"engine", "PostgreSQL CPU per transfer", run.postgres_cpu_us_per_transfer, "µs", "", ""});
  }
  results.push_back({"engine", "version conflicts (appends sent back)", static_cast<double>(run.conflicts), "", "", ""});
  if (const auto lookups = run.account_cache_hits + run.account_cache_misses; lookups > 0) {
    results.push_back({"engine", "account state cache hit rate",
                       100.0 * static_cast<double>(run.account_cache_hits) / static_cast<double>(lookups), "%", "",
                       ""});
  }
  results.push_back({"engine", "peak RSS (bench process, engine in-process)",
                     static_cast<double>(rss_kib) / 1024.0, "MiB", "", ""});
  if (keyed_run) {
    results.push_back({"engine", "keyed transfers (an Idempotency-Key on each)", keyed_run->transfers_per_second,
                       "transfers/s", "", ""});
    results.push_back({"engine", "keyed batch commit latency p50", keyed_run->commit_p50_us / 1000.0, "ms", "", ""});
    results.push_back({"engine", "keyed batch commit latency p99", keyed_run->commit_p99_us / 1000.0, "ms", "", ""});
    results.push_back({"engine", "keyed mean batch size", keyed_run->mean_batch_commands, "commands", "", ""});
    if (keyed_run->postgres_cpu_us_per_transfer > 0) {
      results.push_back({"engine", "keyed PostgreSQL CPU per transfer", keyed_run->postgres_cpu_us_per_transfer,
                         "µs", "", ""});
    }
    for (const auto& result : results) {
      std::printf("  %s: %s: %.1f %s\n", result.scenario.c_str(), result.metric.c_str(), result.value,
                  result.unit.c_str());
    }
    write_reports(results, work_directory, "results-engine", postgres_settings, seconds, accounts);
    if (postgres) postgres->stop();
    return 0;
  }

  if (scale_only) {
    skip_http = true;
    const auto scale = catch_up_scale(ledger_binary, admin_url, app_url, work_directory,
                                      bench::query_scalar(app_url, "SELECT position FROM event_store_head"));
    results.insert(results.end(), scale.begin(), scale.end());
  }
  // HTTP end to end: `ledger serve` as its own process, the Asio load generator here.
  if (!skip_http) {
    const std::string& secret = bench_secret;
    const std::string port_file = work_directory + "/serve.port";
    // Snapshots of an earlier run describe another database: start the cache empty.
    std::filesystem::remove_all(work_directory + "/serve-snapshots");
    std::filesystem::remove(port_file);
    process::SpawnOptions serve_options;
    serve_options.output_file = work_directory + "/serve.log";
    serve_options.extra_environment = {"LEDGER_JWT_SECRET=" + secret, "LEDGER_LOG_LEVEL=warn"};
    // The development broker (librdkafka's mock cluster in its own process), so the relay and
    // the projectors speak the real Kafka protocol.
    const auto [broker, kafka_brokers] = start_broker(ledger_binary, work_directory, "broker");
    const std::int64_t backlog = bench::query_scalar(app_url, "SELECT position FROM event_store_head");
    const auto serve_started = Clock::now();
    // `relay` false: the write path alone, nothing published.
    auto start_serve = [&](bool relay, int& port) {
      std::filesystem::remove(port_file);
      const pid_t pid = process::spawn(
          {ledger_binary, "--home", work_directory, "--database-url", app_url, "--kafka-brokers", kafka_brokers,
           "serve", "--http-port", "0", "--port-file", port_file, "--snapshot-directory",
           work_directory + "/serve-snapshots", "--relay", relay ? "true" : "false"},
          serve_options);
      port = 0;
      for (int attempt = 0; attempt < 600 && port == 0; ++attempt) {
        std::ifstream in(port_file);
        if (!(in >> port)) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      if (port == 0) throw std::runtime_error("ledger serve did not start; see " + serve_options.output_file);
      return pid;
    };
    int port = 0;
    const pid_t serve = start_serve(true, port);
    // Relay: the engine phase left a backlog; the relay publishes it as serve starts.
    std::cout << "relay: publishing a backlog of " << backlog << " events ...\n";
    const double relay_seconds = bench::seconds_until(
        app_url, "SELECT position FROM checkpoints WHERE name = 'relay'", backlog, std::chrono::seconds(600));
    const double relay_rate = relay_seconds > 0 ? static_cast<double>(backlog) /
                                                      std::chrono::duration<double>(Clock::now() - serve_started).count()
                                                : 0.0;
    results.push_back({"relay", "publish backlog of " + std::to_string(backlog) + " events (from serve start)",
                       relay_rate, "events/s", "", relay_seconds > 0 ? "" : "timed out"});
    // The JSON view's cost (docs/consumers.md): the same range sent again by `replay publish`,
    // envelopes only, then envelopes and JSON lines, to topics of their own (the broker creates
    // them on first use) so the projectors below do not meet the copies.
    const std::int64_t json_range = std::min<std::int64_t>(backlog, 200'000);
    for (const bool json : {false, true}) {
      std::vector<std::string> publish = {ledger_binary, "--log-level", "warn", "--database-url", app_url,
                                          "--kafka-brokers", kafka_brokers, "--topic-prefix",
                                          json ? "bench-json" : "bench-envelopes", "replay", "publish", "--from", "1",
                                          "--to", std::to_string(json_range)};
      if (json) publish.insert(publish.begin() + 9, "--publish-json");
      std::string output;
      const auto started = Clock::now();
      const bool published = json_range > 0 && process::run(publish, output).success();
      const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
      results.push_back({"relay", std::string(json ? "replay publish with the JSON view, " : "replay publish, ") +
                                      std::to_string(json_range) + " events",
                         published ? static_cast<double>(json_range) / seconds : 0.0, "events/s", "",
                         published ? "" : "failed: " + output});
    }
    // Projectors: catch up from that backlog, both read models in one process.
    process::SpawnOptions project_options;
    project_options.output_file = work_directory + "/project.log";
    const auto project_started = Clock::now();
    const pid_t project = process::spawn({ledger_binary, "--log-level", "warn", "--database-url", app_url,
                                          "--kafka-brokers", kafka_brokers, "project", "all"},
                                         project_options);
    std::cout << "projections: catching up from a backlog of " << backlog << " events ...\n";
    const double catch_up_seconds = bench::seconds_until(
        app_url, "SELECT min(watermark) FROM read.projections", backlog, std::chrono::seconds(900));
    const double catch_up_rate =
        catch_up_seconds > 0
            ? static_cast<double>(backlog) / std::chrono::duration<double>(Clock::now() - project_started).count()
            : 0.0;
    results.push_back({"projections", "catch-up from " + std::to_string(backlog) +
                                          " events (balance+statement and audit, one process)",
                       catch_up_rate, "events/s", ">= 100,000", catch_up_rate >= 100'000 ? "met" : "missed"});

    bench::LoadSettings load;
    load.port = port;
    load.connections = 64;
    load.accounts = accounts;
    load.token = api::issue_token(secret, "bench", {"teller"}, std::chrono::hours(1));
    load.seconds = 3;
    (void)bench::run_http_load(load);  // warm the state cache
    // Near the head by now: what the catch-up's ranges held should be given back.
    const long project_rss_after_catch_up = bench::rss_kib(project);
    load.seconds = seconds;
    // wrk first: an efficient generator, so the figure is the server's, not the generator's.
    bench::WrkSettings wrk;
    wrk.port = port;
    wrk.accounts = accounts;
    wrk.token = load.token;
    wrk.seconds = seconds;
    wrk.run_id = std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
    std::cout << "http (wrk): 64 connections, maximum rate, " << seconds << " s ...\n";
    // Where the whole stack's CPU goes, per transfer and per process (0: not measured).
    const std::vector<std::pair<std::string, pid_t>> stack_processes = {
        {"serve (with its relay)", serve},
        {"PostgreSQL (every process)", postmaster},
        {"project all", project},
        {"the broker", broker}};
    std::vector<double> stack_cpu_before;
    for (const auto& [what, pid] : stack_processes)
      stack_cpu_before.push_back(cpu_seconds_with_children(pid));
    // Every client's transactions (serve's commits, the relay's checkpoints, each projector's
    // rounds): a projector's round costs about a dozen statements and a commit whatever it holds.
    const char* commits_sql =
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()";
    // A projector's round updates its row of read.projections once, and a commit of serve's
    // moves the head row once (both tables' updated-row counts).
    const char* rounds_sql =
        "SELECT n_tup_upd FROM pg_stat_user_tables WHERE schemaname = 'read' AND relname = "
        "'projections'";
    const char* appends_sql =
        "SELECT n_tup_upd FROM pg_stat_user_tables WHERE schemaname = 'public' AND relname = "
        "'event_store_head'";
    const std::int64_t commits_before = bench::query_scalar(app_url, commits_sql);
    const std::int64_t rounds_before = bench::query_scalar(app_url, rounds_sql);
    const std::int64_t appends_before = bench::query_scalar(app_url, appends_sql);
    const auto wrk_run = bench::run_wrk(wrk);
    std::vector<double> stack_cpu_us;
    for (std::size_t i = 0; i < stack_processes.size(); ++i) {
      stack_cpu_us.push_back(cpu_us_per_transfer(
          cpu_seconds_with_children(stack_processes[i].second) - stack_cpu_before[i], wrk_run));
    }
    // A busy backend reports its transactions to pg_stat_database at most once a second, before
    // the run as after it: the difference is the run's, give or take a second's worth.
    const std::int64_t stack_commits = bench::query_scalar(app_url, commits_sql) - commits_before;
    const std::int64_t stack_rounds = bench::query_scalar(app_url, rounds_sql) - rounds_before;
    const std::int64_t stack_appends = bench::query_scalar(app_url, appends_sql) - appends_before;
    std::cout << "http: 64 connections, maximum rate, " << seconds << " s ...\n";
    // A rate the HTTP front reaches while the projectors fall behind is not one the whole stack
    // sustains: 80 % of it only measures a queue. So the share of the run's events the read
    // models applied within it scales the rate the fixed-rate runs take their share of.
    auto read_side_position = [&](const char* sql) { return bench::query_scalar(app_url, sql); };
    const char* head_sql = "SELECT position FROM event_store_head";
    const char* projected_sql = "SELECT min(watermark) FROM read.projections";
    const std::int64_t head_before_max = read_side_position(head_sql);
    const std::int64_t projected_before_max = read_side_position(projected_sql);
    const auto max_run = bench::run_http_load(load);
    const double max_rate = static_cast<double>(max_run.ok) / max_run.seconds;
    const auto appended_in_max =
        static_cast<double>(read_side_position(head_sql) - head_before_max);
    const auto projected_in_max =
        static_cast<double>(read_side_position(projected_sql) - projected_before_max);
    const double kept_up =
        appended_in_max > 0 ? std::clamp(projected_in_max / appended_in_max, 0.0, 1.0) : 1.0;
    const double sustained_rate = max_rate * kept_up;
    // Latency by load: shorter fixed-rate runs at a quarter and half of the maximum.
    std::ofstream by_load(work_directory + "/latency_by_load.dat");
    for (const double share : {0.25, 0.5}) {
      load.rate_per_second = std::max(50.0, share * sustained_rate);
      load.seconds = std::max(5.0, seconds / 2);
      std::cout << "http: 64 connections, fixed " << load.rate_per_second << "/s, " << load.seconds << " s ...\n";
      const auto run = bench::run_http_load(load);
      by_load << load.rate_per_second << " " << percentile(run.latencies_us, 0.50) / 1e3 << " "
              << percentile(run.latencies_us, 0.90) / 1e3 << " " << percentile(run.latencies_us, 0.99) / 1e3
              << " " << percentile(run.latencies_us, 0.999) / 1e3 << "\n";
    }
    load.seconds = seconds;
    load.rate_per_second = std::max(100.0, std::min(30'000.0, 0.8 * sustained_rate));
    std::cout << "http: 64 connections, fixed " << load.rate_per_second << "/s, " << seconds << " s ...\n";
    // The owner role: it sees the autovacuum workers in pg_stat_activity.
    bench::LagSampler lag(admin_url);
    const auto maintenance_before = bench::maintenance_counts(admin_url);
    lag.start();
    const auto fixed_run = bench::run_http_load(load);
    lag.stop();
    const auto maintenance_after = bench::maintenance_counts(admin_url);
    by_load << load.rate_per_second << " " << percentile(fixed_run.latencies_us, 0.50) / 1e3 << " "
            << percentile(fixed_run.latencies_us, 0.90) / 1e3 << " " << percentile(fixed_run.latencies_us, 0.99) / 1e3
            << " " << percentile(fixed_run.latencies_us, 0.999) / 1e3 << "\n";
    by_load.close();
    bench::plot_percentiles(work_directory + "/latency_by_load.dat", work_directory + "/latency_by_load.png",
                            "HTTP latency percentiles by offered load (CO-corrected)");
    // Peak RSS of the runs above (the window below is not part of them).
    const long serve_rss = bench::peak_rss_kib(serve);
    const long project_rss = bench::peak_rss_kib(project);
    // Read-model queries under write load (issue 18's read side), in a window of their own so
    // that the 80 % rows stay comparable with earlier runs (beside it, 2026-12-02, that run
    // achieved 1,065 of 1,213/s). Transfers at half the maximum rate, and beside them two
    // connections each for an account and its statement at 100/s. First a few seconds for the
    // queue the 80 % run may have left to drain.
    std::this_thread::sleep_for(std::chrono::seconds(3));
    auto half_load = load;
    half_load.rate_per_second = std::max(50.0, 0.5 * sustained_rate);
    half_load.seconds = std::max(5.0, seconds / 2);
    auto account_queries = half_load;
    account_queries.connections = 2;
    account_queries.rate_per_second = 100;
    account_queries.request = bench::LoadRequest::account;
    account_queries.seed = 1;
    auto entries_queries = account_queries;
    entries_queries.request = bench::LoadRequest::entries;
    entries_queries.seed = 2;
    std::cout << "http: queries at 2 x 100/s beside transfers at " << half_load.rate_per_second
              << "/s, " << half_load.seconds << " s ...\n";
    auto account_run =
        std::async(std::launch::async, [&] { return bench::run_http_load(account_queries); });
    auto entries_run =
        std::async(std::launch::async, [&] { return bench::run_http_load(entries_queries); });
    const auto beside_queries_run = bench::run_http_load(half_load);
    const auto account_query_run = account_run.get();
    const auto entries_query_run = entries_run.get();
    // The rate by account population and cache warmth (issue 18, item 1), the whole stack still
    // running: a restarted serve's in-memory cache is empty (its RocksDB snapshots stay), then
    // every account is touched once, then the 1,000 accounts of a small population.
    struct PopulationRun {
      std::string what;
      bench::WrkResult wrk;
      double account_hit_rate = 0;
    };
    std::vector<PopulationRun> population_runs;
    (void)process::stop(serve, SIGTERM, std::chrono::seconds(30));
    int population_port = 0;
    const pid_t population_serve = start_serve(true, population_port);
    auto population_run = [&](const std::string& what, int run_accounts) {
      bench::WrkSettings run = wrk;
      run.port = population_port;
      run.accounts = run_accounts;
      run.run_id = wrk.run_id + "-population-" + std::to_string(population_runs.size());
      std::cout << "http (wrk): " << what << ", " << seconds << " s ...\n";
      const auto before = bench::account_cache_lookups(population_port);
      auto result = bench::run_wrk(run);
      population_runs.push_back(
          {what, std::move(result),
           bench::hit_rate_percent(before, bench::account_cache_lookups(population_port))});
    };
    if (accounts > hot_accounts) {
      population_run(with_thousands(accounts) + " accounts, cold (serve restarted)", accounts);
      bench::LoadSettings warm = load;
      warm.port = population_port;
      warm.rate_per_second = 0;
      warm.seconds = 600;
      warm.each_account_once = true;
      std::cout << "http: one transfer per pair of the " << accounts
                << " accounts (warming the cache) ...\n";
      const auto warmed = bench::run_http_load(warm);
      std::cout << "  " << warmed.ok << " transfers accepted, " << warmed.errors << " failed, in " << warmed.seconds
                << " s\n";
      population_run(with_thousands(accounts) + " accounts, warm (each touched once first)",
                     accounts);
      population_run(with_thousands(hot_accounts) + " accounts", hot_accounts);
    } else {
      std::cout << "http (wrk) by accounts: skipped (--accounts " << accounts << " is not above " << hot_accounts
                << ")\n";
    }
    (void)process::stop(project, SIGTERM, std::chrono::seconds(30));
    (void)process::stop(population_serve, SIGTERM, std::chrono::seconds(30));
    // The write path alone: serve without its relay, no projectors, the same wrk run.
    int write_path_port = 0;
    const pid_t write_path_serve = start_serve(false, write_path_port);
    wrk.port = write_path_port;
    wrk.run_id += "-write-path";
    std::cout << "http (wrk): write path alone (no relay, no projectors), " << seconds << " s ...\n";
    const auto steps_before = bench::commit_steps(write_path_port);
    const double postgres_cpu_before = cpu_seconds_with_children(postmaster);
    const double serve_cpu_before = cpu_seconds_with_children(write_path_serve);
    const auto write_path_run = bench::run_wrk(wrk);
    // CPU per transfer of the two processes a command passes through (0: not measured).
    const double write_path_postgres_us =
        postmaster > 0
            ? cpu_us_per_transfer(cpu_seconds_with_children(postmaster) - postgres_cpu_before,
                                  write_path_run)
            : 0;
    const double write_path_serve_us = cpu_us_per_transfer(
        cpu_seconds_with_children(write_path_serve) - serve_cpu_before, write_path_run);
    const auto steps_after = bench::commit_steps(write_path_port);
    (void)process::stop(write_path_serve, SIGTERM, std::chrono::seconds(30));
    (void)process::stop(broker, SIGTERM, std::chrono::seconds(10));

    auto ms = [](std::uint32_t us) { return us / 1000.0; };
    results.push_back({"http", "transfers at maximum rate (64 connections)", max_rate, "commands/s",
                       ">= 30,000", max_rate >= 30'000 ? "met" : "missed"});
    results.push_back({"http", "max rate: latency p50", ms(percentile(max_run.latencies_us, 0.50)), "ms", "", ""});
    results.push_back({"http", "max rate: latency p99", ms(percentile(max_run.latencies_us, 0.99)), "ms", "", ""});
    results.push_back({"http", "max rate: errors", static_cast<double>(max_run.errors), "requests", "0",
                       max_run.errors == 0 ? "met" : "missed"});
    results.push_back({"http",
                       "max rate: events the read models applied in the run / events appended",
                       100.0 * kept_up, "%", "", ""});
    results.push_back({"http", "maximum rate the read models kept up with (the fixed rates' 100 %)",
                       sustained_rate, "commands/s", "", ""});
    const double fixed_p99 = ms(percentile(fixed_run.latencies_us, 0.99));
    results.push_back({"http", "fixed rate offered", load.rate_per_second, "commands/s", "", ""});
    results.push_back({"http", "fixed rate achieved", static_cast<double>(fixed_run.ok) / fixed_run.seconds,
                       "commands/s", "", ""});
    results.push_back({"http", "fixed rate: latency p50 (CO-corrected)", ms(percentile(fixed_run.latencies_us, 0.50)), "ms", "", ""});
    results.push_back({"http", "fixed rate: latency p90", ms(percentile(fixed_run.latencies_us, 0.90)), "ms", "", ""});
    results.push_back({"http", "fixed rate: latency p99", fixed_p99, "ms", "<= 10",
                       fixed_p99 <= 10 ? "met" : "missed"});
    results.push_back({"http", "fixed rate: latency p999", ms(percentile(fixed_run.latencies_us, 0.999)), "ms", "", ""});
    results.push_back({"http", "fixed rate: errors", static_cast<double>(fixed_run.errors), "requests", "0",
                       fixed_run.errors == 0 ? "met" : "missed"});
    auto query_rows = [&](const std::string& what, const bench::LoadResult& run) {
      const double p50 = ms(percentile(run.latencies_us, 0.50));
      const double p99 = ms(percentile(run.latencies_us, 0.99));
      results.push_back({"http", what + ": latency p50", p50, "ms", "", ""});
      results.push_back({"http", what + ": latency p99", p99, "ms", "", ""});
      results.push_back(
          {"http", what + ": answered", static_cast<double>(run.ok), "requests", "", ""});
      results.push_back({"http", what + ": errors", static_cast<double>(run.errors), "requests",
                         "0", run.errors == 0 ? "met" : "missed"});
    };
    query_rows("transfers at 50 % beside the queries", beside_queries_run);
    query_rows("GET /v1/accounts/{id} (100/s) beside transfers at 50 %", account_query_run);
    query_rows("GET /v1/accounts/{id}/entries?limit=20 (100/s) beside transfers at 50 %",
               entries_query_run);
    results.push_back({"http", "peak RSS of ledger serve", serve_rss / 1024.0, "MiB", "", ""});
    results.push_back({"http", "max rate / single-row INSERT baseline", 100.0 * max_rate / single, "%", "", ""});
    // wrk rows: issue 18's ratios to the single-row INSERT baseline of this same run.
    auto wrk_rows = [&](const std::string& what, const bench::WrkResult& run, double target_ratio,
                        const std::string& target) {
      if (!run.ran) {
        results.push_back({"http (wrk)", what, 0, "commands/s", "", run.problem});
        return;
      }
      const double ratio = run.rate() / single;
      results.push_back({"http (wrk)", what + ": transfers/s (64 connections)", run.rate(), "commands/s", "", ""});
      results.push_back({"http (wrk)", what + ": / single-row INSERT tx/s", 100.0 * ratio, "%",
                         target, ratio >= target_ratio ? "met" : "missed"});
      results.push_back({"http (wrk)", what + ": latency p50", run.p50_ms, "ms", "", ""});
      results.push_back({"http (wrk)", what + ": latency p99", run.p99_ms, "ms", "", ""});
      results.push_back({"http (wrk)", what + ": errors (non-2xx + socket)",
                         static_cast<double>(run.non_2xx + run.socket_errors), "requests", "0",
                         run.non_2xx + run.socket_errors == 0 ? "met" : "missed"});
      results.push_back({"http (wrk)", what + ": wrk's own CPU share of the machine", 100.0 * run.generator_cpu_share,
                         "%", "", ""});
      results.push_back({"http (wrk)", what + ": the machine's CPU busy (every process)",
                         100.0 * run.machine_busy_share, "%", "", ""});
    };
    wrk_rows("whole stack", wrk_run, 1.0, ">= 100%");
    wrk_rows("write path alone", write_path_run, 1.5, ">= 150%");
    // Where the write path's time goes: one committer appends one batch at a time, holding the
    // head row for each; its steps per commit, and what is left of the hold (reads and
    // decisions under the lock when another writer moved the head).
    if (const auto holds = steps_after.holds - steps_before.holds;
        write_path_run.ran && steps_before.read && steps_after.read && holds > 0) {
      const std::string what = "write path alone: ";
      const double per_hold = 1e3 / static_cast<double>(holds);
      const double held = per_hold * (steps_after.held_seconds - steps_before.held_seconds);
      const double rows = per_hold * (steps_after.rows_seconds - steps_before.rows_seconds);
      const double write = per_hold * (steps_after.write_seconds - steps_before.write_seconds);
      const double commit = per_hold * (steps_after.commit_seconds - steps_before.commit_seconds);
      results.push_back({"http (wrk)", what + "commands per commit",
                         static_cast<double>(steps_after.commands - steps_before.commands) /
                             static_cast<double>(holds),
                         "commands", "", ""});
      results.push_back(
          {"http (wrk)", what + "head row held, per commit (mean)", held, "ms", "", ""});
      results.push_back({"http (wrk)", what + "of it, hashing and encoding the rows", rows, "ms",
                         "", ""});
      results.push_back({"http (wrk)",
                         what + "of it, the statement writing them (density check included)",
                         write, "ms", "", ""});
      results.push_back({"http (wrk)", what + "of it, the COMMIT", commit, "ms", "", ""});
      results.push_back({"http (wrk)", what + "of it, the rest (reads under the lock)",
                         held - rows - write - commit, "ms", "", ""});
    }
    if (wrk_run.ran && wrk_run.seconds > 0) {
      results.push_back({"http (wrk)",
                         "whole stack: PostgreSQL transactions committed per second (every client)",
                         static_cast<double>(stack_commits) / wrk_run.seconds, "tx/s", "", ""});
      results.push_back({"http (wrk)", "whole stack: of them, serve's appends",
                         static_cast<double>(stack_appends) / wrk_run.seconds, "tx/s", "", ""});
      results.push_back({"http (wrk)",
                         "whole stack: of them, the projectors' rounds (three read models)",
                         static_cast<double>(stack_rounds) / wrk_run.seconds, "tx/s", "", ""});
    }
    for (std::size_t i = 0; wrk_run.ran && i < stack_processes.size(); ++i) {
      if (stack_cpu_us[i] <= 0) continue;
      results.push_back({"http (wrk)",
                         "whole stack: " + stack_processes[i].first + "'s CPU per transfer",
                         stack_cpu_us[i], "µs", "", ""});
    }
    if (write_path_run.ran && write_path_serve_us > 0) {
      results.push_back({"http (wrk)", "write path alone: serve's CPU per transfer", write_path_serve_us, "µs",
                         "", ""});
    }
    if (write_path_run.ran && write_path_postgres_us > 0) {
      results.push_back({"http (wrk)", "write path alone: PostgreSQL's CPU per transfer", write_path_postgres_us,
                         "µs", "", ""});
    }
    for (const auto& [what, run, account_hit_rate] : population_runs) {
      if (!run.ran) {
        results.push_back({"http (wrk) by accounts", what, 0, "commands/s", "", run.problem});
        continue;
      }
      results.push_back(
          {"http (wrk) by accounts", what + ": transfers/s", run.rate(), "commands/s", "", ""});
      results.push_back({"http (wrk) by accounts", what + ": / single-row INSERT tx/s",
                         100.0 * run.rate() / single, "%", "", ""});
      results.push_back(
          {"http (wrk) by accounts", what + ": latency p99", run.p99_ms, "ms", "", ""});
      results.push_back({"http (wrk) by accounts", what + ": account state cache hit rate",
                         account_hit_rate, "%", "", ""});
      results.push_back({"http (wrk) by accounts", what + ": errors (non-2xx + socket)",
                         static_cast<double>(run.non_2xx + run.socket_errors), "requests", "0",
                         run.non_2xx + run.socket_errors == 0 ? "met" : "missed"});
    }
    {
      std::ofstream throughput(work_directory + "/http_throughput.dat");
      for (std::size_t second = 0; second < max_run.completions_per_second.size(); ++second) {
        throughput << second << " " << max_run.completions_per_second[second] << "\n";
      }
      std::ofstream lag_data(work_directory + "/projection_lag.dat");
      for (const auto& [at, lag_ms] : lag.timeline()) lag_data << at << " " << lag_ms << "\n";
    }
    const double lag_p99 = percentile(lag.lags_ms(), 0.99);
    results.push_back({"projections", "command-to-read-model lag p50 (fixed rate)",
                       percentile(lag.lags_ms(), 0.50), "ms", "", ""});
    results.push_back({"projections", "command-to-read-model lag p99 (fixed rate)", lag_p99, "ms", "<= 50",
                       lag_p99 <= 50 ? "met" : "missed"});
    // What PostgreSQL's maintenance did in that window, and the lag with and without it.
    for (const auto& [what, count] : maintenance_after) {
      const auto before = maintenance_before.find(what);
      const std::int64_t runs = count - (before == maintenance_before.end() ? 0 : before->second);
      if (runs > 0) {
        results.push_back({"projections", what + " runs during the fixed rate",
                           static_cast<double>(runs), "", "", ""});
      }
    }
    if (!lag.sees_autovacuum()) {
      results.push_back({"projections", "autovacuum during the fixed rate", 0, "", "",
                         "not measured: the database role lacks pg_read_all_stats"});
    } else {
      results.push_back({"projections", "share of the fixed rate with an autovacuum worker running",
                         100.0 * lag.autovacuum_share(), "%", "", ""});
      if (!lag.lags_during_autovacuum_ms().empty()) {
        results.push_back({"projections", "lag p99 of positions that waited while an autovacuum ran",
                           percentile(lag.lags_during_autovacuum_ms(), 0.99), "ms", "", ""});
      }
      if (!lag.lags_without_autovacuum_ms().empty()) {
        results.push_back({"projections", "lag p99 of the other positions",
                           percentile(lag.lags_without_autovacuum_ms(), 0.99), "ms", "", ""});
      }
    }
    for (const auto& [name, lags] : lag.lags_by_projection_ms()) {
      if (lags.empty()) continue;
      results.push_back(
          {"projections", "lag p50 of " + name + " alone", percentile(lags, 0.50), "ms", "", ""});
      results.push_back(
          {"projections", "lag p99 of " + name + " alone", percentile(lags, 0.99), "ms", "", ""});
    }
    results.push_back({"projections", "peak RSS of ledger project", project_rss / 1024.0, "MiB", "", ""});
    results.push_back({"projections",
                       "RSS of ledger project after the catch-up (3 s into the HTTP warm-up)",
                       project_rss_after_catch_up / 1024.0, "MiB", "", ""});
    bench::plot(work_directory + "/http_throughput.dat", work_directory + "/http_throughput.png",
                "HTTP transfers completed per second (maximum rate, 64 connections)", "second", "commands/s");
    bench::plot(work_directory + "/projection_lag.dat", work_directory + "/projection_lag.png",
                "Command-to-read-model lag at the fixed rate", "second", "lag (ms)");
  }

  // Replay and rebuild: the CLI an auditor or operator runs, over the whole log, with the
  // projectors stopped (the rebuild under live load is a test; this is its speed).
  if (!scale_only) {
    const std::int64_t events = bench::query_scalar(app_url, "SELECT position FROM event_store_head");
    const std::string scale = std::to_string(events) + " events" +
                              (events < 10'000'000 ? " (standard suite; --big for 10,000,000)" : "");
    std::cout << "replay: verify, export, reconcile and rebuild over " << events << " events ...\n";
    // Each run with the autovacuum workers beside it: an append-only table's vacuum (migration
    // 0013) that the earlier phases left due competes with the run for the two cores.
    auto cli = [&](const std::string& name, std::vector<std::string> arguments) {
      arguments.insert(arguments.begin(), {"--log-level", "warn", "--database-url", app_url,
                                           "--admin-database-url", admin_url});
      bench::AutovacuumWatch vacuums(admin_url);
      vacuums.start();
      auto cli_run = bench::run_cli(ledger_binary, arguments, work_directory + "/" + name + ".log");
      vacuums.stop();
      if (!cli_run.ok) throw std::runtime_error("ledger " + name + " failed: " + cli_run.output);
      std::cout << "  " << name << ": " << cli_run.seconds << " s\n";
      if (!vacuums.problem().empty() || vacuums.samples() == 0) {
        results.push_back(
            {"replay", "autovacuum beside " + name, 0, "", "",
             "not measured: " + (vacuums.problem().empty() ? "no sample" : vacuums.problem())});
      } else if (vacuums.sees_autovacuum()) {
        const std::string tables = vacuums.tables();
        results.push_back({"replay", "autovacuum beside " + name + (tables.empty() ? "" : " (" + tables + ")"),
                           100 * vacuums.share(), "% of the run", "", ""});
      } else {
        results.push_back({"replay", "autovacuum beside " + name, 0, "", "",
                           "not measured: the database role lacks pg_read_all_stats"});
      }
      return cli_run;
    };
    auto rate = [&](const bench::CliRun& cli_run) { return static_cast<double>(events) / cli_run.seconds; };
    auto add = [&](const std::string& metric, const bench::CliRun& cli_run, double target) {
      const double value = rate(cli_run);
      results.push_back({"replay", metric + " " + scale, value, "events/s",
                         target > 0 ? ">= " + std::to_string(static_cast<long>(target)) : "",
                         target > 0 ? (value >= target ? "met" : "missed") : ""});
    };
    const auto verify = cli("replay-verify", {"replay", "--json", "verify"});
    if (bench::json_number(verify.output, "events_checked") != static_cast<double>(events)) {
      throw std::runtime_error("ledger replay verify did not check every event: " + verify.output);
    }
    add("verify", verify, 500'000);
    const auto exported = cli("replay-export", {"replay", "--json", "export", "--output", "/dev/null"});
    add("export (JSON lines)", exported, 500'000);
    // Reconcile compares up to the read models' watermarks (zero after --no-http: skipped).
    const std::int64_t projected = bench::query_scalar(app_url, "SELECT max(watermark) FROM read.projections");
    bench::CliRun reconciled;
    if (projected > 0) {
      reconciled = cli("replay-reconcile", {"replay", "--json", "reconcile"});
      results.push_back({"replay", "reconcile every read-model row, up to position " + std::to_string(projected),
                         static_cast<double>(projected) / reconciled.seconds, "events/s", "", ""});
    }
    const auto balance = cli("rebuild-balance", {"rebuild", "balance", "--json"});
    add("rebuild balance+statement", balance, 150'000);
    const auto audit = cli("rebuild-audit", {"rebuild", "audit", "--json"});
    add("rebuild audit", audit, 150'000);
    const long replay_rss = std::max({verify.peak_rss_kib, exported.peak_rss_kib, reconciled.peak_rss_kib,
                                      balance.peak_rss_kib, audit.peak_rss_kib});
    results.push_back({"replay", "peak RSS of ledger replay/rebuild", replay_rss / 1024.0, "MiB", "", ""});
  }

  if (!scale_only) run_loans(settings);

  // Several serves on one database (issue 17): last, so the events it appends change no
  // figure above.
  if (!skip_http) two_serves();

  write_reports(results, work_directory, "results", postgres_settings, seconds, accounts);
  engine.reset();
  if (postgres) postgres->stop();
  return 0;
}
