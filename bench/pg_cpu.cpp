// ledger-bench-pg-cpu: the server's CPU for what a batch sends, measured alone (issue 18).
//   keys URL BATCHES     1,000 idempotency records a transaction: array literals through a
//                        prepared unnest INSERT against COPY (table pgcpu_keys, dropped first)
//   statements URL ROUNDS the batch's read statements as parameterized queries against
//                        prepared (tables pgcpu_events and pgcpu_head, dropped first: a scratch
//                        database only)
// The backend's own CPU time comes from /proc (same machine), read around blocks of executions
// (its ticks are 10 ms); the two ways alternate block by block.
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <pqxx/pqxx>
#include <pqxx/tablewriter>
#include <sstream>
#include <string>
#include <vector>

#include "ledger/db/sql_text.hpp"

namespace {

double backend_cpu(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream f(text.substr(text.rfind(')') + 2));
  std::vector<std::string> v{std::istream_iterator<std::string>(f),
                             std::istream_iterator<std::string>()};
  return (std::stod(v[11]) + std::stod(v[12])) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

void keys(const std::string& url, int batches) {
  pqxx::connection c(url);
  const int per_batch = 1000;
  {
    pqxx::work w(c);
    w.exec(
        "DROP TABLE IF EXISTS pgcpu_keys; CREATE TABLE pgcpu_keys (actor text NOT NULL, key text "
        "NOT NULL, "
        "request_hash bytea NOT NULL, outcome bytea NOT NULL, position bigint NOT NULL, created_at "
        "timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (actor, key))");
    w.commit();
  }
  c.prepare("ins",
            "INSERT INTO pgcpu_keys (actor, key, request_hash, outcome, position) SELECT * FROM "
            "unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::bigint[])");
  const std::string hash(32, '\x5a');
  const std::string outcome =
      R"({"command_id":"75bee389-b0d8-4ef3-86e7-5ceac2195421","position":123456,"versions":[["account-a1",12],["account-a2",40],["transfer-75bee389-b0d8-4ef3-86e7-5ceac2195421",1]],"resource_ids":["75bee389-b0d8-4ef3-86e7-5ceac2195421"]})";
  const std::vector<std::string> columns = {"actor", "key", "request_hash", "outcome", "position"};
  long serial = 0;
  double cpu[2] = {0, 0};
  constexpr int block = 25;  // batches a method runs between two CPU readings (ticks are 10 ms)
  for (int b = 0; b < batches; b += block) {
    for (int method = 0; method < 2; ++method) {
      const double before = backend_cpu(c.backendpid());
      for (int n = 0; n < block; ++n) {
        pqxx::work w(c);
        if (method == 0) {
          ledger::db::ArrayLiteral a, k, h, o, p;
          for (int i = 0; i < per_batch; ++i, ++serial) {
            a.add_text("bench");
            k.add_text("bench-key-" + std::to_string(serial));
            h.add_bytes(hash);
            o.add_bytes(outcome);
            p.add_number(serial);
          }
          w.exec_prepared("ins", a.finish(), k.finish(), h.finish(), o.finish(), p.finish());
        } else {
          std::string lines;
          for (int i = 0; i < per_batch; ++i, ++serial) {
            if (!lines.empty()) lines.push_back('\n');
            ledger::db::copy_text(lines, "bench");
            lines.push_back('\t');
            ledger::db::copy_text(lines, "bench-key-" + std::to_string(serial));
            lines.push_back('\t');
            ledger::db::copy_bytes(lines, hash);
            lines.push_back('\t');
            ledger::db::copy_bytes(lines, outcome);
            lines.push_back('\t');
            lines += std::to_string(serial);
          }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
          pqxx::tablewriter t(w, "pgcpu_keys", columns.begin(), columns.end());
          t.write_raw_line(lines);
          t.complete();
#pragma GCC diagnostic pop
        }
        w.commit();
      }
      cpu[method] += backend_cpu(c.backendpid()) - before;
    }
  }
  std::cout << "server CPU per key: array literals " << cpu[0] * 1e6 / (batches * per_batch)
            << " us, COPY " << cpu[1] * 1e6 / (batches * per_batch) << " us (" << batches
            << " batches of " << per_batch << " each)\n";
}

void statements(const std::string& url, int rounds) {
  pqxx::connection c(url);
  {
    pqxx::work w(c);
    w.exec("DROP TABLE IF EXISTS pgcpu_events, pgcpu_head");
    w.exec(
        "CREATE TABLE pgcpu_events (position bigint PRIMARY KEY, stream_id text NOT NULL, version "
        "bigint "
        "NOT NULL, "
        "type text NOT NULL, payload bytea NOT NULL, hash bytea NOT NULL, UNIQUE (stream_id, "
        "version))");
    w.exec(
        "INSERT INTO pgcpu_events SELECT g, 'account-a' || (g % 10000), g / 10000 + 1, "
        "'account_entry', "
        "'\\x00', '\\x00' "
        "FROM generate_series(1, 200000) g");
    w.exec(
        "CREATE TABLE pgcpu_head (singleton boolean PRIMARY KEY, position bigint, hash "
        "bytea)");
    w.exec("INSERT INTO pgcpu_head VALUES (true, 200000, '\\x00')");
    w.exec("ANALYZE pgcpu_events");
    w.commit();
  }
  struct S {
    const char* name;
    const char* sql;
    int params;
  };
  const S statements[] = {
      {"lock_head", "SELECT position, hash FROM pgcpu_head FOR UPDATE", 0},
      {"stored_versions",
       "SELECT s.id, coalesce((SELECT max(e.version) FROM pgcpu_events e WHERE e.stream_id = "
       "s.id), 0) "
       "FROM unnest($1::text[]) AS s(id)",
       1},
      {"stream_tails",
       "SELECT e.stream_id, e.version, e.type, e.payload, e.hash "
       "FROM unnest($1::text[], $2::bigint[]) AS s(id, from_version) "
       "CROSS JOIN LATERAL (SELECT stream_id, version, type, payload, hash FROM pgcpu_events "
       "  WHERE stream_id = s.id AND version >= s.from_version ORDER BY version) e "
       "ORDER BY e.stream_id, e.version",
       2},
      {"events_between",
       "SELECT stream_id, version, type, payload, hash FROM pgcpu_events WHERE position > $1 AND position <= $2 "
       "ORDER BY position",
       3}};
  constexpr int block = 200;
  for (const auto& s : statements) {
    c.prepare(s.name, s.sql);
    double cpu[2] = {0, 0};
    for (int r = 0; r < rounds; ++r) {
      for (int method = 0; method < 2; ++method) {
        const double before = backend_cpu(c.backendpid());
        pqxx::work w(c);
        for (int n = 0; n < block; ++n) {
          ledger::db::ArrayLiteral ids, versions;
          ids.add_text("account-a" + std::to_string(n % 10000));
          versions.add_number(20);
          ids.add_text("account-a" + std::to_string(n % 10000 + 1));
          versions.add_number(20);
          const std::string i = ids.finish(), v = versions.finish();
          if (method == 0) {
            if (s.params == 0)
              w.exec_params(s.sql);
            else if (s.params == 1)
              w.exec_params(s.sql, i);
            else if (s.params == 2)
              w.exec_params(s.sql, i, v);
            else
              w.exec_params(s.sql, 199990, 200000);
          } else {
            if (s.params == 0)
              w.exec_prepared(s.name);
            else if (s.params == 1)
              w.exec_prepared(s.name, i);
            else if (s.params == 2)
              w.exec_prepared(s.name, i, v);
            else
              w.exec_prepared(s.name, 199990, 200000);
          }
        }
        w.commit();
        cpu[method] += backend_cpu(c.backendpid()) - before;
      }
    }
    std::cout << s.name << ": server CPU per execution: parameterized query "
              << cpu[0] * 1e6 / (rounds * block) << " us, prepared "
              << cpu[1] * 1e6 / (rounds * block) << " us\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: ledger-bench-pg-cpu keys|statements DATABASE_URL COUNT\n";
    return 2;
  }
  const std::string what = argv[1];
  if (what == "keys") {
    keys(argv[2], std::stoi(argv[3]));
  } else if (what == "statements") {
    statements(argv[2], std::stoi(argv[3]));
  } else {
    std::cerr << "ledger-bench-pg-cpu: unknown measurement '" << what << "' (keys or statements)\n";
    return 2;
  }
  return 0;
}
