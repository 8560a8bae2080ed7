// `ledger dev`: the embedded stack. A private PostgreSQL cluster, the development broker and
// the services, supervised from this process until Ctrl-C or SIGTERM stops them all.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "commands.hpp"
#include "ledger/api/auth.hpp"
#include "ledger/core/hex.hpp"
#include "ledger/core/process.hpp"
#include "ledger/db/embedded_postgres.hpp"
#include "ledger/db/migrations.hpp"

namespace ledger::app {
namespace fs = std::filesystem;

namespace {

constexpr auto child_stop_grace = std::chrono::seconds(15);
constexpr auto child_ready_timeout = std::chrono::seconds(30);
// Random bytes of the home's JWT secret (hex-encoded in the file: twice as many characters).
constexpr std::size_t dev_jwt_secret_bytes = 32;

std::string read_first_line(const fs::path& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string command_line_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (char& c : content) {
    if (c == '\0') c = ' ';
  }
  return content;
}

// True when `pid` runs our own binary (so a recycled pid of an unrelated process is spared).
bool is_our_process(pid_t pid) {
  if (!process::is_alive(pid)) return false;
  std::error_code error;
  const auto executable = fs::read_symlink("/proc/" + std::to_string(pid) + "/exe", error);
  if (error) return command_line_of(pid).find("ledger") != std::string::npos;
  return executable.filename() == fs::path(process::self_executable()).filename();
}

std::string shell_quote(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  return out + "'";
}

// The children of one `ledger dev`, each recorded in <home>/run/<name>.pid so that the next
// run can find and stop what a killed run left behind.
class Supervisor {
 public:
  explicit Supervisor(fs::path run_directory) : run_directory_(std::move(run_directory)) {
    fs::create_directories(run_directory_);
  }

  void stop_leftovers() {
    for (const auto& entry : fs::directory_iterator(run_directory_)) {
      if (entry.path().extension() != ".pid") continue;
      const pid_t pid = static_cast<pid_t>(std::atoi(read_first_line(entry.path()).c_str()));
      if (is_our_process(pid)) {
        spdlog::warn("stopping {} (pid {}) left over from an earlier run",
                     entry.path().stem().string(), pid);
        process::stop(pid, SIGTERM, child_stop_grace);
      }
      fs::remove(entry.path());
    }
  }

  void start(const std::string& name, const std::vector<std::string>& argv,
             const process::SpawnOptions& options = {}) {
    const pid_t pid = process::spawn(argv, options);
    std::ofstream(run_directory_ / (name + ".pid")) << pid << "\n";
    children_.push_back({name, pid});
    spdlog::info("started {} (pid {})", name, pid);
  }

  // Name of a child that ended on its own, if any.
  std::optional<std::string> find_exited() {
    for (auto it = children_.begin(); it != children_.end(); ++it) {
      if (auto status = process::wait_for(it->pid, std::chrono::milliseconds(0))) {
        const std::string name = it->name;
        spdlog::error("{} (pid {}) ended unexpectedly ({} {})", name, it->pid,
                      status->exited ? "exit code" : "signal", status->code);
        fs::remove(run_directory_ / (name + ".pid"));
        children_.erase(it);
        return name;
      }
    }
    return std::nullopt;
  }

  // Stops the children in reverse start order.
  void stop_all() {
    for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
      spdlog::info("stopping {} (pid {})", it->name, it->pid);
      const auto status = process::stop(it->pid, SIGTERM, child_stop_grace);
      if (!status.success()) {
        spdlog::warn("{} ended with {} {}", it->name, status.exited ? "exit code" : "signal",
                     status.code);
      }
      fs::remove(run_directory_ / (it->name + ".pid"));
    }
    children_.clear();
  }

 private:
  struct Child {
    std::string name;
    pid_t pid;
  };
  fs::path run_directory_;
  std::vector<Child> children_;
};

// Holds <home>/dev.pid; refuses when another live `ledger dev` holds it.
class DevLock {
 public:
  explicit DevLock(fs::path path) : path_(std::move(path)) {
    if (fs::exists(path_)) {
      const pid_t holder = static_cast<pid_t>(std::atoi(read_first_line(path_).c_str()));
      if (holder != getpid() && is_our_process(holder) &&
          command_line_of(holder).find(" dev") != std::string::npos) {
        throw std::runtime_error("another `ledger dev` (pid " + std::to_string(holder) +
                                 ") is running with this home; stop it first");
      }
      spdlog::warn("removing the stale lock {} of a run that was killed", path_.string());
    }
    std::ofstream(path_) << getpid() << "\n";
  }
  ~DevLock() {
    std::error_code ignored;
    fs::remove(path_, ignored);
  }

 private:
  fs::path path_;
};

// The JWT secret of this home in <home>/jwt-secret (mode 0600), made of random bytes on the
// first run and kept afterwards, so tokens survive a restart. It is never the public
// development secret, so `serve` has nothing to make an exception for; serve reads it from
// the file, which keeps it out of `ps`. Returns the path of the file.
fs::path ensure_jwt_secret(const fs::path& home) {
  const fs::path path = home / "jwt-secret";
  if (fs::exists(path)) {
    try {
      const std::string kept = read_secret_file(path.string(), path.string());
      if (kept.size() >= api::jwt_secret_length_min && kept != api::development_jwt_secret) {
        return path;
      }
    } catch (const SettingError& error) {
      spdlog::warn("replacing the JWT secret of this home: {}", error.what());
    }
  }
  std::ifstream random("/dev/urandom", std::ios::binary);
  std::string bytes(dev_jwt_secret_bytes, '\0');
  if (!random.read(bytes.data(), static_cast<std::streamsize>(bytes.size()))) {
    throw std::runtime_error("cannot read /dev/urandom for the JWT secret of " + home.string());
  }
  write_private_file(path, to_hex(bytes) + "\n");
  spdlog::info("wrote a new random JWT secret to {}", path.string());
  return path;
}

// The preferred port when it is free, otherwise any free one.
int choose_http_port(int preferred) {
  if (preferred == 0) return db::find_free_port();
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(preferred));
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const bool free = bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  close(fd);
  if (free) return preferred;
  const int port = db::find_free_port();
  spdlog::warn("port {} is taken; the HTTP front uses {}", preferred, port);
  return port;
}

std::string wait_for_file_line(const fs::path& path, std::chrono::seconds timeout,
                               const std::string& what) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(path)) {
      const std::string line = read_first_line(path);
      if (!line.empty()) return line;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error(what + " did not become ready within " +
                           std::to_string(timeout.count()) + " s");
}

}  // namespace

CommandAction register_dev_command(CLI::App& root, Settings& settings) {
  auto* dev = root.add_subcommand(
      "dev", "Start the embedded stack: private PostgreSQL, development broker and services");
  auto postgres_port = std::make_shared<int>(0);
  auto http_port = std::make_shared<int>(8080);
  dev->add_option("--http-port", *http_port, "Port of the HTTP front (taken: any free one)")
      ->envname("LEDGER_HTTP_PORT")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  dev->add_option("--postgres-port", *postgres_port, "Port of the private cluster (0: any free)")
      ->envname("LEDGER_POSTGRES_PORT")
      ->check(CLI::Range(0, 65535));

  return [=, &settings]() -> int {
    // Block the stop signals before any thread starts; the main loop waits for them.
    const sigset_t stop_signals = block_stop_signals();

    configure_logging(settings, "dev");
    const fs::path home = fs::absolute(settings.home);
    fs::create_directories(home);
    // The home may be reached by the unprivileged PostgreSQL user: keep it traversable.
    fs::permissions(home, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec,
                    fs::perm_options::replace);
    DevLock lock(home / "dev.pid");
    const fs::path env_file = home / "dev.env";
    fs::remove(env_file);  // a killed run's settings no longer hold
    Supervisor supervisor(home / "run");
    supervisor.stop_leftovers();
    const fs::path secret_file = ensure_jwt_secret(home);
    const std::string secret = read_secret_file(secret_file.string(), secret_file.string());

    db::EmbeddedPostgresOptions postgres_options;
    postgres_options.directory = home / "postgres";
    postgres_options.port = *postgres_port;
    db::EmbeddedPostgres postgres(postgres_options);
    postgres.start();
    postgres.ensure_database("ledger");
    const std::string admin_url = postgres.superuser_url("ledger");
    const std::string app_url = postgres.url("ledger_app", "ledger");
    db::MigrationRunner(admin_url).up();

    const std::string self = process::self_executable();
    const fs::path broker_address = home / "run" / "broker.address";
    fs::remove(broker_address);
    supervisor.start("broker", {self, "--log-format", settings.log_format, "--log-level",
                                settings.log_level, "--topic-prefix", settings.topic_prefix,
                                "broker", "--address-file", broker_address.string()});
    std::string kafka_brokers;
    const int port = choose_http_port(*http_port);
    const fs::path port_file = home / "run" / "serve.port";
    fs::remove(port_file);
    try {
      kafka_brokers = wait_for_file_line(broker_address, child_ready_timeout, "the broker");
      process::SpawnOptions serve_options;
      // An empty LEDGER_JWT_SECRET counts as unset: one the caller's shell holds (a sourced
      // dev.env of an older version) must not meet --jwt-secret-file.
      serve_options.extra_environment = {
          "LEDGER_DATABASE_URL=" + app_url, "LEDGER_ADMIN_DATABASE_URL=" + admin_url,
          "LEDGER_KAFKA_BROKERS=" + kafka_brokers, "LEDGER_JWT_SECRET="};
      supervisor.start("serve",
                       {self, "--home", home.string(), "--log-format", settings.log_format,
                        "--log-level", settings.log_level, "--topic-prefix", settings.topic_prefix,
                        "serve", "--http-port", std::to_string(port), "--port-file",
                        port_file.string(), "--jwt-secret-file", secret_file.string()},
                       serve_options);
      (void)wait_for_file_line(port_file, child_ready_timeout, "the HTTP front");
      process::SpawnOptions project_options;
      project_options.extra_environment = {"LEDGER_DATABASE_URL=" + app_url,
                                           "LEDGER_KAFKA_BROKERS=" + kafka_brokers};
      supervisor.start("project",
                       {self, "--home", home.string(), "--log-format", settings.log_format,
                        "--log-level", settings.log_level, "--topic-prefix", settings.topic_prefix,
                        "project", "all"},
                       project_options);
    } catch (...) {
      supervisor.stop_all();
      throw;
    }
    const std::string url = "http://127.0.0.1:" + std::to_string(port);
    const std::string token = api::issue_token(secret, "dev-admin", {"admin"}, std::chrono::hours(24 * 30));

    {
      // It holds an admin token and the superuser's URL: readable by this user only.
      std::ostringstream out;
      out << "# Written by `ledger dev` (pid " << getpid() << "); valid while it runs.\n";
      out << "LEDGER_URL=" << shell_quote(url) << "\n";
      out << "LEDGER_TOKEN=" << shell_quote(token) << "\n";
      // API.md's contract: the secret itself too (this file is 0600), and the file serve reads.
      out << "LEDGER_JWT_SECRET=" << shell_quote(secret) << "\n";
      out << "LEDGER_JWT_SECRET_FILE=" << shell_quote(secret_file.string()) << "\n";
      out << "LEDGER_DATABASE_URL=" << shell_quote(app_url) << "\n";
      out << "LEDGER_ADMIN_DATABASE_URL=" << shell_quote(admin_url) << "\n";
      out << "LEDGER_KAFKA_BROKERS=" << shell_quote(kafka_brokers) << "\n";
      write_private_file(env_file, out.str());
    }

    std::cout << "\nledger dev is up (home " << home.string() << ")\n"
              << "  HTTP        " << url << "  (ready: " << url << "/health/ready)\n"
              << "  token       " << token << "  (admin, 30 days)\n"
              << "  PostgreSQL  " << app_url << "\n"
              << "              port " << postgres.port() << " on 127.0.0.1, socket in "
              << postgres.socket_directory().string() << "\n"
              << "  Kafka       " << kafka_brokers << " (topic " << settings.topic_prefix
              << ".events)\n"
              << "  settings    source " << env_file.string() << "\n"
              << "  stop        Ctrl-C, or kill -TERM " << getpid() << "\n"
              << std::endl;

    int exit_code = 0;
    while (true) {
      timespec timeout{0, 500'000'000};
      const int received = sigtimedwait(&stop_signals, nullptr, &timeout);
      if (received == SIGINT || received == SIGTERM) {
        spdlog::info("stopping the embedded stack (signal {})", received);
        break;
      }
      if (auto exited = supervisor.find_exited()) {
        spdlog::error("stopping the embedded stack because {} ended", *exited);
        exit_code = 1;
        break;
      }
      if (!postgres.running()) {
        spdlog::error("stopping the embedded stack because PostgreSQL stopped");
        exit_code = 1;
        break;
      }
    }
    supervisor.stop_all();
    fs::remove(env_file);
    postgres.stop();
    spdlog::info("embedded stack stopped");
    return exit_code;
  };
}

}  // namespace ledger::app
