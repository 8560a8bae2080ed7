#pragma once
// A TCP proxy of the tests' own between a client (the engine) and the test cluster's unix
// socket, which can lose a COMMIT and then cut the database off, blackhole every connection or
// slow every message, as a broken network does.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace ledger::test {

// Listens on 127.0.0.1 (a free port) and relays every connection to the PostgreSQL unix
// socket `<socket_directory>/.s.PGSQL.<port>`. It reads the client's side of the protocol
// message by message, so it can recognise a commit: a simple-query COMMIT, or the Sync that
// ends the engine's append on its own head (a statement that commits by itself). Owned by one test;
// its threads (one acceptor, two per connection) stop in the destructor.
class PgFaultProxy {
 public:
  PgFaultProxy(std::filesystem::path socket_directory, int port);
  ~PgFaultProxy();
  PgFaultProxy(const PgFaultProxy&) = delete;
  PgFaultProxy& operator=(const PgFaultProxy&) = delete;

  [[nodiscard]] int port() const { return listen_port_; }
  // A libpq URL through the proxy for `role` on `database`.
  [[nodiscard]] std::string url(const std::string& role, const std::string& database) const;

  // What happens to the next COMMIT any client sends (or the Sync that commits an append on
  // the head: everything below holds for it, the statement having run up to its commit):
  // - lose_commit: lost on its way (the server never sees it, so nothing commits), then every
  //   connection is cut and new ones are refused for `outage`;
  // - lose_reply: delivered with its reply lost (the transaction commits, the client never
  //   hears), then the same cut and refusal;
  // - delay_commit: held back while the client's side of the connection is cut (the client
  //   sees the commit fail in doubt) and delivered to the still-open session after `outage`,
  //   as a slow network does; new connections are accepted meanwhile;
  // - strand_session: held back for good while the client's side is cut, the session left open
  //   (idle in its transaction, holding its locks) as a half-open connection leaves it; new
  //   connections are refused for `outage`, others cut. For an append on the head the session
  //   is left between its statement and the Sync, where no server timeout ends it (only TCP
  //   keepalive, which this proxy keeps from firing).
  // - blackhole_commit: a partition (see blackhole) for `outage` begins as the COMMIT arrives,
  //   which is held until it heals and then delivered: the session waits idle in its
  //   transaction, holding its locks, for the whole partition, as the server sees it.
  enum class CommitFault { lose_commit, lose_reply, delay_commit, strand_session, blackhole_commit };
  void fault_next_commit(CommitFault fault, std::chrono::milliseconds outage);
  // Cuts every connection and refuses new ones for `outage`, from now.
  void cut(std::chrono::milliseconds outage);
  // A network partition for `outage`, from now: connections stay open and new ones are
  // accepted, but no byte is forwarded either way (nor the end of a connection) until it heals;
  // then everything held is delivered, as TCP does after a partition shorter than its
  // retransmission limit. Nothing times out at the proxy: every timeout is the client's.
  void blackhole(std::chrono::milliseconds outage);
  // Holds every chunk read from either side this long before forwarding it (0: none).
  void set_delay(std::chrono::milliseconds delay) { delay_ms_ = delay.count(); }

  [[nodiscard]] bool armed() const { return armed_.load(); }
  [[nodiscard]] std::uint64_t commits_faulted() const { return commits_faulted_.load(); }
  // Of them, the Syncs of appends on the head.
  [[nodiscard]] std::uint64_t autocommit_appends_faulted() const {
    return autocommit_appends_faulted_.load();
  }
  [[nodiscard]] std::uint64_t connections_cut() const { return connections_cut_.load(); }
  // True while new connections are refused.
  [[nodiscard]] bool down() const;
  // True while the proxy forwards nothing.
  [[nodiscard]] bool blackholed() const;

 private:
  struct Link;
  void accept_loop();
  void relay_client(Link* link);
  void relay_server(Link* link);
  void begin_outage(std::chrono::milliseconds outage);
  void open_link(int client);
  // Waits until `fd` is readable and the proxy not blackholed; false when stopping.
  bool wait_readable(int fd) const;

  std::filesystem::path socket_path_;
  int listen_fd_ = -1;
  int listen_port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> armed_{false};
  std::atomic<std::uint64_t> commits_faulted_{0};
  std::atomic<std::uint64_t> autocommit_appends_faulted_{0};
  std::atomic<std::uint64_t> connections_cut_{0};
  std::chrono::milliseconds armed_outage_{0};
  CommitFault armed_fault_ = CommitFault::lose_commit;

  mutable std::mutex mutex_;
  std::chrono::steady_clock::time_point down_until_{};
  std::chrono::steady_clock::time_point blackholed_until_{};
  std::atomic<std::int64_t> delay_ms_{0};
  std::vector<int> held_clients_;  // accepted during a blackhole, connected when it heals
  std::vector<Link*> links_;
  std::thread acceptor_;
};

}  // namespace ledger::test
