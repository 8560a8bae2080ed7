#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ledger/api/trusted_proxies.hpp"
#include "ledger/db/health.hpp"

namespace ledger::engine {
class Engine;
class EventStore;
}  // namespace ledger::engine

namespace ledger::projections {
class ReadModels;
}

namespace ledger::api {

class TokenVerifier;  // auth.hpp

// A token bucket: `per_second` tokens a second, at most `burst` saved up. 0 per second: no limit.
struct RateLimit {
  double per_second = 0;
  int burst = 0;
};

struct ServerSettings {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0 picks a free port (see Server::port)
  int threads = 2;
  std::size_t body_bytes_max = 1 << 20;
  std::size_t header_bytes_max = 16 * 1024;
  // A client must send its headers, and then its body, within these; idle keep-alive
  // connections are closed after idle_timeout.
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds body_timeout{30'000};
  std::chrono::milliseconds idle_timeout{60'000};
  std::size_t connections_max = 1'024;
  // Verifies every bearer token (auth.hpp); required. Shared: its JWKS key set is reloaded
  // in place, and the process may keep using it.
  std::shared_ptr<const TokenVerifier> tokens;
  // /health, /health/ready and /metrics answer from a snapshot of the database and read-side
  // checks at most this old, so probes (which need no token) run at most one check per
  // interval whatever their rate.
  std::chrono::milliseconds health_refresh_interval{1'000};
  // A check that has not finished within this (a stopped or partitioned PostgreSQL keeps the
  // connection open and never answers; libpq has no read timeout) is answered as "database
  // unreachable" meanwhile, so a probe never waits longer than this.
  std::chrono::milliseconds health_check_timeout{2'000};
  // Per actor (the token's sub): beyond these, 429 rate_limited with Retry-After. Off by default.
  RateLimit command_rate;
  RateLimit query_rate;
  // Peers whose X-Forwarded-For names the client (trusted_proxies.hpp: client_address); the
  // client address goes into every command's metadata (the audit) and the access log. Empty
  // (the default): the header is never believed, the TCP peer is the client.
  TrustedProxies trusted_proxies;
};

using DatabaseHealth = db::DatabaseHealth;

struct RelayHealth {
  bool enabled = false;  // false: this process runs no relay
  bool leader = false;   // false: another instance holds the relay lock (standby)
  std::int64_t acknowledged = 0;  // every event up to here is acknowledged by Kafka
  std::int64_t head = 0;          // last position in the event store
  bool kafka_reachable = false;
  std::string kafka_error;
  double oldest_unacknowledged_seconds = 0;
  // A position the event store lacks (a damaged database): the leading relay publishes nothing
  // past it until it is back. 0: none.
  std::int64_t missing_position = 0;
};

// What /health says of the streaming replica the queries read from.
struct ReadReplicaHealth {
  bool reachable = false;
  bool in_recovery = false;          // false: the URL names a primary, not a standby
  bool replay_paused = false;        // pg_wal_replay_pause() was called on it
  std::int64_t head = 0;             // the last event position it has replayed
  std::int64_t lag_events = 0;       // the primary's head minus `head` (0 when unknown)
  double replay_lag_seconds = 0;     // age of the last transaction replayed while WAL waits; 0 caught up
};

// The streaming replica the read-only query routes read from (`serve --read-database-url`): its
// read models, whose watermarks replicate with their rows in the same transactions, so
// `min_position` keeps its meaning, and its event store (history and as-of balances, held until
// the replica has replayed the primary's head). Commands, idempotency, close of business and
// the write side's health stay on the primary. read_models null: no replica; queries read the
// primary.
struct ReadReplica {
  projections::ReadModels* read_models = nullptr;
  engine::EventStore* event_store = nullptr;
  std::function<ReadReplicaHealth()> check;  // blocking, never throws
};

// What the server needs from the rest of the process (wired by the composition root).
struct Services {
  engine::Engine* engine = nullptr;
  engine::EventStore* event_store = nullptr;
  projections::ReadModels* read_models = nullptr;  // null: no query routes
  // Blocking, like check_database.
  std::function<RelayHealth()> check_relay;
  // Blocking: checks the database (run on the server's blocking pool, never on I/O threads);
  // usually db::check_database on a pool of its own.
  std::function<DatabaseHealth()> check_database;
  ReadReplica read_replica;
};

// The HTTP/1.1 front (Boost.Beast): keep-alive, pipelining (answered in order), limits on
// header and body size, chunk extensions and every connection's read buffer,
// header/body/idle timeouts and a connection limit. Owns its I/O
// threads and a small pool for blocking work. Thread-safe start/shutdown from one owner.
class Server {
 public:
  Server(ServerSettings settings, Services services);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds (throws std::runtime_error naming the address when it cannot) and starts serving.
  void start();
  [[nodiscard]] int port() const;
  // Stops accepting, lets in-flight requests finish (at most `grace`), closes idle
  // connections and joins the threads.
  void shutdown(std::chrono::milliseconds grace);
  [[nodiscard]] std::size_t active_connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ledger::api
