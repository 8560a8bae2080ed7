#include "pg_fault_proxy.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string_view>
#include <utility>

namespace ledger::test {

namespace {

constexpr std::int32_t ssl_request_code = 80877103;
constexpr std::int32_t gss_request_code = 80877104;
constexpr std::int32_t protocol_version_3 = 196608;
constexpr std::size_t relay_chunk_bytes = 64 * 1024;
constexpr std::chrono::milliseconds commit_settle_time{200};
// How often a waiting relay thread or the acceptor looks at the blackhole and at stopping.
constexpr int poll_interval_ms = 20;

std::int32_t read_int32(const std::string& buffer, std::size_t offset) {
  std::uint32_t value = 0;
  std::memcpy(&value, buffer.data() + offset, 4);
  return static_cast<std::int32_t>(ntohl(value));
}

bool write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t written = ::send(fd, data, size, MSG_NOSIGNAL);
    if (written <= 0) return false;
    data += written;
    size -= static_cast<std::size_t>(written);
  }
  return true;
}

// The engine's append on its own head (engine/src/appender.cpp) runs as a prepared statement
// with no transaction around it: it commits at the Sync that follows its Bind.
constexpr std::string_view autocommit_append_statement = "ledger_append_on_head";

// Whether the Bind message at `offset` (type byte first) binds `statement`: its body starts
// with the portal's name and then the statement's, each NUL-terminated.
bool binds(const std::string& buffer, std::size_t offset, std::size_t length,
           std::string_view statement) {
  const std::string_view body(buffer.data() + offset + 5, length - 5);
  const std::size_t portal_end = body.find('\0');
  if (portal_end == std::string_view::npos) return false;
  const std::string_view rest = body.substr(portal_end + 1);
  return rest.size() > statement.size() && rest.substr(0, statement.size()) == statement &&
         rest[statement.size()] == '\0';
}

}  // namespace

struct PgFaultProxy::Link {
  int client_fd = -1;
  int server_fd = -1;
  std::thread client_to_server;
  std::thread server_to_client;
  std::atomic<int> finished{0};
  std::atomic<bool> drop_replies{false};
  std::thread delayed_commit;  // delay_commit: delivers the held COMMIT later
  std::atomic<bool> delayed_commit_done{false};
  std::atomic<bool> stranded{false};  // strand_session: outages do not cut it

  [[nodiscard]] bool done() const {
    return finished.load() == 2 && (!delayed_commit.joinable() || delayed_commit_done.load());
  }

  void cut() const {
    ::shutdown(client_fd, SHUT_RDWR);
    ::shutdown(server_fd, SHUT_RDWR);
  }
  ~Link() {
    cut();
    if (client_to_server.joinable()) client_to_server.join();
    if (server_to_client.joinable()) server_to_client.join();
    if (delayed_commit.joinable()) delayed_commit.join();
    ::close(client_fd);
    ::close(server_fd);
  }
};

PgFaultProxy::PgFaultProxy(std::filesystem::path socket_directory, int port)
    : socket_path_(socket_directory / (".s.PGSQL." + std::to_string(port))) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (listen_fd_ < 0) throw std::runtime_error("proxy: socket() failed");
  const int yes = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(listen_fd_, 128) != 0) {
    ::close(listen_fd_);
    throw std::runtime_error("proxy: cannot listen on 127.0.0.1");
  }
  socklen_t length = sizeof address;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length);
  listen_port_ = ntohs(address.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

PgFaultProxy::~PgFaultProxy() {
  stopping_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  acceptor_.join();
  ::close(listen_fd_);
  std::vector<Link*> links;
  {
    std::lock_guard lock(mutex_);
    links.swap(links_);
  }
  for (Link* link : links) delete link;
}

std::string PgFaultProxy::url(const std::string& role, const std::string& database) const {
  return "postgresql://" + role + "@127.0.0.1:" + std::to_string(listen_port_) + "/" + database +
         "?sslmode=disable";
}

void PgFaultProxy::fault_next_commit(CommitFault fault, std::chrono::milliseconds outage) {
  std::lock_guard lock(mutex_);
  armed_outage_ = outage;
  armed_fault_ = fault;
  armed_ = true;
}

void PgFaultProxy::cut(std::chrono::milliseconds outage) { begin_outage(outage); }

void PgFaultProxy::blackhole(std::chrono::milliseconds outage) {
  std::lock_guard lock(mutex_);
  blackholed_until_ = std::chrono::steady_clock::now() + outage;
}

bool PgFaultProxy::blackholed() const {
  std::lock_guard lock(mutex_);
  return std::chrono::steady_clock::now() < blackholed_until_;
}

bool PgFaultProxy::wait_readable(int fd) const {
  while (!stopping_) {
    pollfd entry{fd, POLLIN, 0};
    const int ready = ::poll(&entry, 1, poll_interval_ms);
    if (ready < 0 && errno != EINTR) return true;  // recv reports the error
    if (ready > 0 && !blackholed()) return true;
    if (ready > 0) std::this_thread::sleep_for(std::chrono::milliseconds(poll_interval_ms));
  }
  return false;
}

bool PgFaultProxy::down() const {
  std::lock_guard lock(mutex_);
  return std::chrono::steady_clock::now() < down_until_;
}

void PgFaultProxy::begin_outage(std::chrono::milliseconds outage) {
  std::lock_guard lock(mutex_);
  down_until_ = std::chrono::steady_clock::now() + outage;
  for (Link* link : links_) {
    if (link->stranded) continue;
    link->cut();
    ++connections_cut_;
  }
}

void PgFaultProxy::accept_loop() {
  while (!stopping_) {
    {
      // A partition that healed: connect what was accepted meanwhile (its startup included).
      std::vector<int> held;
      if (!blackholed()) {
        std::lock_guard lock(mutex_);
        held.swap(held_clients_);
      }
      for (const int client : held) open_link(client);
    }
    pollfd entry{listen_fd_, POLLIN, 0};
    if (::poll(&entry, 1, poll_interval_ms) <= 0) continue;
    const int client = ::accept(listen_fd_, nullptr, nullptr);
    if (client < 0) {
      if (stopping_) return;
      continue;
    }
    if (down()) {
      ::close(client);  // refused: the database is "unreachable"
      continue;
    }
    if (blackholed()) {
      std::lock_guard lock(mutex_);
      held_clients_.push_back(client);
      continue;
    }
    open_link(client);
  }
  std::lock_guard lock(mutex_);
  for (const int client : held_clients_) ::close(client);
  held_clients_.clear();
}

void PgFaultProxy::open_link(int client) {
  const int server = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, socket_path_.c_str(), sizeof address.sun_path - 1);
  if (server < 0 || ::connect(server, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    if (server >= 0) ::close(server);
    ::close(client);
    return;
  }
  auto* link = new Link;
  link->client_fd = client;
  link->server_fd = server;
  std::lock_guard lock(mutex_);
  // Reap links whose both directions ended.
  for (auto it = links_.begin(); it != links_.end();) {
    if ((*it)->done()) {
      delete *it;
      it = links_.erase(it);
    } else {
      ++it;
    }
  }
  links_.push_back(link);
  link->client_to_server = std::thread([this, link] { relay_client(link); });
  link->server_to_client = std::thread([this, link] { relay_server(link); });
}

// Relays client messages whole, so that a COMMIT can be recognised and lost. Before the
// startup message, messages have no type byte (SSL and GSS requests, then the startup).
void PgFaultProxy::relay_client(Link* link) {
  std::string buffer;
  bool started = false;
  bool autocommit_append_bound = false;
  char chunk[relay_chunk_bytes];
  while (true) {
    if (!wait_readable(link->client_fd)) break;
    const ssize_t got = ::recv(link->client_fd, chunk, sizeof chunk, 0);
    if (got <= 0) break;
    if (const auto delay = delay_ms_.load(); delay > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    }
    buffer.append(chunk, static_cast<std::size_t>(got));
    std::size_t offset = 0;
    bool ok = true;
    while (ok) {
      if (!started) {
        if (buffer.size() - offset < 8) break;
        const auto length = static_cast<std::size_t>(read_int32(buffer, offset));
        if (buffer.size() - offset < length) break;
        const std::int32_t code = read_int32(buffer, offset + 4);
        if (code == protocol_version_3) started = true;
        if (code != ssl_request_code && code != gss_request_code && code != protocol_version_3) {
          started = true;  // a cancel request or an unknown start: relay as it is
        }
        ok = write_all(link->server_fd, buffer.data() + offset, length);
        offset += length;
        continue;
      }
      if (buffer.size() - offset < 5) break;
      const auto length = static_cast<std::size_t>(read_int32(buffer, offset + 1)) + 1;
      if (buffer.size() - offset < length) break;
      // A commit: a simple-query COMMIT, or the Sync after the autocommit append's Bind (the
      // statement runs at its Execute; it commits only once the server reads the Sync).
      const char type = buffer[offset];
      if (type == 'B')
        autocommit_append_bound = binds(buffer, offset, length, autocommit_append_statement);
      const bool autocommit = type == 'S' && std::exchange(autocommit_append_bound, false);
      const bool commit = autocommit || (type == 'Q' && length == 1 + 4 + 7 &&
                                         std::memcmp(buffer.data() + offset + 5, "COMMIT", 7) == 0);
      if (commit && armed_.exchange(false)) {
        ++commits_faulted_;
        if (autocommit) ++autocommit_appends_faulted_;
        std::chrono::milliseconds outage;
        CommitFault fault;
        {
          std::lock_guard lock(mutex_);
          outage = armed_outage_;
          fault = armed_fault_;
        }
        if (fault == CommitFault::blackhole_commit) {
          blackhole(outage);
          while (!stopping_ && blackholed()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(poll_interval_ms));
          }
          ok = write_all(link->server_fd, buffer.data() + offset, length);
          offset += length;
          continue;
        }
        if (fault == CommitFault::strand_session) {
          link->stranded = true;
          link->drop_replies = true;
          // Every other connection is cut before the client learns of this one, so it cannot
          // reach the session through a pooled connection that was still up.
          begin_outage(outage);
          ::shutdown(link->client_fd, SHUT_RDWR);
          link->delayed_commit = std::thread([this, link] {
            while (!stopping_) std::this_thread::sleep_for(std::chrono::milliseconds(10));
            link->cut();
            link->delayed_commit_done = true;
          });
          ++link->finished;
          return;
        }
        if (fault == CommitFault::delay_commit) {
          link->drop_replies = true;
          ::shutdown(link->client_fd, SHUT_RDWR);
          std::string commit = buffer.substr(offset, length);
          link->delayed_commit = std::thread([this, link, commit, outage] {
            const auto until = std::chrono::steady_clock::now() + outage;
            while (!stopping_ && std::chrono::steady_clock::now() < until) {
              std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
            (void)write_all(link->server_fd, commit.data(), commit.size());
            std::this_thread::sleep_for(commit_settle_time);
            link->cut();
            link->delayed_commit_done = true;
          });
          ++link->finished;  // this direction is done; the delayed writer ends the link
          return;
        }
        if (fault == CommitFault::lose_reply) {
          link->drop_replies = true;
          (void)write_all(link->server_fd, buffer.data() + offset, length);
          // Long enough for the server to commit; its reply is dropped meanwhile.
          std::this_thread::sleep_for(commit_settle_time);
        }
        begin_outage(outage);
        ok = false;
        break;
      }
      ok = write_all(link->server_fd, buffer.data() + offset, length);
      offset += length;
    }
    buffer.erase(0, offset);
    if (!ok) break;
  }
  link->cut();
  ++link->finished;
}

void PgFaultProxy::relay_server(Link* link) {
  char chunk[relay_chunk_bytes];
  while (true) {
    if (!wait_readable(link->server_fd)) break;
    const ssize_t got = ::recv(link->server_fd, chunk, sizeof chunk, 0);
    if (got <= 0) break;
    if (const auto delay = delay_ms_.load(); delay > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    }
    if (link->drop_replies) continue;  // (a delayed COMMIT's session stays open meanwhile)
    if (!write_all(link->client_fd, chunk, static_cast<std::size_t>(got))) break;
  }
  link->cut();
  ++link->finished;
}

}  // namespace ledger::test
