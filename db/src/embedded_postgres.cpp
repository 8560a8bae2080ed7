#include "ledger/db/embedded_postgres.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <thread>

#include "ledger/core/process.hpp"

namespace ledger::db {
namespace fs = std::filesystem;

namespace {

std::string find_binary_directory() {
  const fs::path root = "/usr/lib/postgresql";
  std::vector<int> versions;
  if (fs::is_directory(root)) {
    for (const auto& entry : fs::directory_iterator(root)) {
      const std::string name = entry.path().filename().string();
      if (!name.empty() && std::all_of(name.begin(), name.end(), ::isdigit) &&
          fs::exists(entry.path() / "bin" / "initdb")) {
        versions.push_back(std::stoi(name));
      }
    }
  }
  if (versions.empty()) {
    throw EmbeddedPostgresError(
        "no PostgreSQL server binaries under /usr/lib/postgresql (run ops/setup.sh)");
  }
  return (root / std::to_string(*std::max_element(versions.begin(), versions.end())) / "bin")
      .string();
}

// PostgreSQL refuses to run as root: pick an unprivileged owner, creating one if needed.
std::string choose_owner() {
  if (geteuid() != 0) return "";
  if (getpwnam("postgres") != nullptr) return "postgres";
  if (getpwnam("ledger-postgres") == nullptr) {
    std::string output;
    const auto status = process::run({"useradd", "--system", "--no-create-home", "--shell",
                                      "/usr/sbin/nologin", "ledger-postgres"},
                                     output);
    if (!status.success()) {
      throw EmbeddedPostgresError("cannot create the user ledger-postgres: " + output);
    }
  }
  return "ledger-postgres";
}

void change_owner_recursively(const fs::path& path, const std::string& user) {
  const passwd* owner = getpwnam(user.c_str());
  if (owner == nullptr) throw EmbeddedPostgresError("no such user: " + user);
  auto change = [&](const fs::path& p) {
    if (lchown(p.c_str(), owner->pw_uid, owner->pw_gid) != 0) {
      throw EmbeddedPostgresError("cannot chown " + p.string() + " to " + user);
    }
  };
  change(path);
  for (const auto& entry : fs::recursive_directory_iterator(path)) change(entry.path());
}

std::string quote_conninfo(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '%' || c == ' ' || c == '/' || c == '?' || c == '&' || c == '=' || c == '@' ||
        c == ':') {
      char buffer[4];
      std::snprintf(buffer, sizeof buffer, "%%%02X", static_cast<unsigned char>(c));
      out += buffer;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

int find_free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw EmbeddedPostgresError("socket() failed");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    close(fd);
    throw EmbeddedPostgresError("cannot find a free port on 127.0.0.1");
  }
  const int port = ntohs(address.sin_port);
  close(fd);
  return port;
}

EmbeddedPostgres::EmbeddedPostgres(EmbeddedPostgresOptions options)
    : options_(std::move(options)), data_directory_(options_.directory / "data") {
  options_.directory = fs::absolute(options_.directory);
  data_directory_ = options_.directory / "data";
  // The socket path must fit in sun_path (107 bytes) with "/.s.PGSQL.NNNNN".
  if (options_.directory.string().size() > 90) {
    throw EmbeddedPostgresError("the PostgreSQL directory path is too long for a unix socket: " +
                                options_.directory.string());
  }
  binary_directory_ =
      options_.binary_directory.empty() ? find_binary_directory() : options_.binary_directory;
  run_as_user_ = choose_owner();
}

EmbeddedPostgres::~EmbeddedPostgres() {
  if (started_) {
    try {
      stop();
    } catch (const std::exception& error) {
      spdlog::error("stopping PostgreSQL failed: {}", error.what());
    }
  }
}

void EmbeddedPostgres::run_as_owner(const std::vector<std::string>& argv, const std::string& what) {
  process::SpawnOptions options;
  options.run_as_user = run_as_user_;
  std::string output;
  const auto status = process::run(argv, output, options);
  if (!status.success()) {
    throw EmbeddedPostgresError(what + " failed (exit " + std::to_string(status.code) +
                                "): " + output);
  }
}

void EmbeddedPostgres::initialize() {
  fs::create_directories(options_.directory);
  if (fs::exists(data_directory_ / "PG_VERSION")) return;
  spdlog::info("initializing a PostgreSQL cluster in {}", data_directory_.string());
  fs::create_directories(data_directory_);
  fs::permissions(data_directory_, fs::perms::owner_all, fs::perm_options::replace);
  if (!run_as_user_.empty()) change_owner_recursively(options_.directory, run_as_user_);
  std::vector<std::string> argv = {binary_directory_ + "/initdb", "-D", data_directory_.string(),
                                   "-U", "postgres", "--auth=trust", "-E", "UTF8",
                                   "--locale=C"};
  if (!options_.fsync) argv.push_back("--no-sync");
  run_as_owner(argv, "initdb");
}

void EmbeddedPostgres::stop_stale_instance() {
  const fs::path pid_file = data_directory_ / "postmaster.pid";
  if (!fs::exists(pid_file)) return;
  std::ifstream in(pid_file);
  pid_t pid = 0;
  in >> pid;
  if (pid > 0 && process::is_alive(pid)) {
    spdlog::warn("PostgreSQL (pid {}) from an earlier run still holds {}; stopping it", pid,
                 data_directory_.string());
    std::vector<std::string> argv = {binary_directory_ + "/pg_ctl", "stop", "-D",
                                     data_directory_.string(), "-m", "fast", "-w", "-t", "30"};
    try {
      run_as_owner(argv, "pg_ctl stop (stale instance)");
    } catch (const EmbeddedPostgresError&) {
      process::stop(pid, SIGQUIT, std::chrono::seconds(5));
    }
  }
  // A postmaster.pid whose process is gone is handled by PostgreSQL itself on start.
}

void EmbeddedPostgres::start() {
  initialize();
  stop_stale_instance();
  port_ = options_.port != 0 ? options_.port : find_free_port();
  if (!run_as_user_.empty()) change_owner_recursively(options_.directory, run_as_user_);
  const std::string server_options =
      "-p " + std::to_string(port_) + " -k " + options_.directory.string() +
      " -c listen_addresses=" + (options_.listen_on_loopback ? "127.0.0.1" : "''") +
      " -c max_connections=" + std::to_string(options_.max_connections) +
      " -c fsync=" + (options_.fsync ? "on" : "off") +
      " -c synchronous_commit=on -c full_page_writes=" + (options_.fsync ? "on" : "off") +
      " -c shared_buffers=256MB -c max_wal_size=2GB -c log_min_messages=warning";
  std::vector<std::string> argv = {binary_directory_ + "/pg_ctl",
                                   "start",
                                   "-D",
                                   data_directory_.string(),
                                   "-l",
                                   (options_.directory / "postgres.log").string(),
                                   "-w",
                                   "-t",
                                   "60",
                                   "-o",
                                   server_options};
  run_as_owner(argv, "pg_ctl start (log: " + (options_.directory / "postgres.log").string() + ")");
  started_ = true;
  // pg_ctl -w already waited; confirm the socket answers before handing it out.
  const std::string conninfo = superuser_url("postgres");
  for (int attempt = 0; attempt < 100; ++attempt) {
    if (PQping(conninfo.c_str()) == PQPING_OK) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw EmbeddedPostgresError("PostgreSQL started but does not accept connections on " +
                              options_.directory.string());
}

void EmbeddedPostgres::stop() {
  if (!fs::exists(data_directory_ / "postmaster.pid")) {
    started_ = false;
    return;
  }
  run_as_owner({binary_directory_ + "/pg_ctl", "stop", "-D", data_directory_.string(), "-m",
                "fast", "-w", "-t", "60"},
               "pg_ctl stop");
  started_ = false;
}

bool EmbeddedPostgres::running() const {
  return started_ && PQping(superuser_url("postgres").c_str()) == PQPING_OK;
}

std::string EmbeddedPostgres::url(const std::string& role, const std::string& database) const {
  return "postgresql://" + quote_conninfo(role) + "@/" + quote_conninfo(database) +
         "?host=" + quote_conninfo(options_.directory.string()) + "&port=" + std::to_string(port_);
}

std::string EmbeddedPostgres::superuser_url(const std::string& database) const {
  return url("postgres", database);
}

void EmbeddedPostgres::ensure_database(const std::string& database,
                                       const std::string& template_database) {
  pqxx::connection connection(superuser_url("postgres"));
  pqxx::nontransaction work(connection);
  const auto exists =
      work.exec_params("SELECT 1 FROM pg_database WHERE datname = $1", database);
  if (!exists.empty()) return;
  std::string sql = "CREATE DATABASE " + work.quote_name(database);
  if (!template_database.empty()) sql += " TEMPLATE " + work.quote_name(template_database);
  work.exec(sql);
}

}  // namespace ledger::db
