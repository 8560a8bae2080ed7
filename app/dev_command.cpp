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
#include <functional>
#include <memory>
#include <optional>
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
// A child (or PostgreSQL) that ends on its own is started again after a pause that doubles
// from restart_backoff_initial up to restart_backoff_max while it keeps failing, and starts
// over from the initial pause once a run lasted restart_stable_after.
constexpr auto restart_backoff_initial = std::chrono::seconds(1);
constexpr auto restart_backoff_max = std::chrono::seconds(30);
constexpr auto restart_stable_after = std::chrono::seconds(60);

using Clock = std::chrono::steady_clock;

// The pause before the next start of something that ended after running since `started`.
std::chrono::seconds next_backoff(std::chrono::seconds previous, Clock::time_point started) {
  if (previous.count() == 0 || Clock::now() - started >= restart_stable_after) {
    return restart_backoff_initial;
  }
  return std::min(previous * 2, std::chrono::duration_cast<std::chrono::seconds>(restart_backoff_max));
}
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
// run can find and stop what a killed run left behind. A child that ends on its own is
// started again with the same command after a backoff (main thread only).
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

  // `before_start` runs before each start, the first and every restart.
  void start(const std::string& name, const std::vector<std::string>& argv,
             const process::SpawnOptions& options = {},
             std::function<void()> before_start = {}) {
    children_.push_back({name, argv, options, std::move(before_start)});
    spawn(children_.back());
  }

  // Notices children that ended on its own and schedules their restart.
  void reap() {
    for (auto& child : children_) {
      if (child.pid == 0) continue;
      const auto status = process::wait_for(child.pid, std::chrono::milliseconds(0));
      if (!status) continue;
      child.backoff = next_backoff(child.backoff, child.started);
      child.restart_at = Clock::now() + child.backoff;
      spdlog::error("{} (pid {}) ended unexpectedly ({} {}); restarting it in {} s", child.name,
                    child.pid, status->exited ? "exit code" : "signal", status->code,
                    child.backoff.count());
      fs::remove(run_directory_ / (child.name + ".pid"));
      child.pid = 0;
    }
  }

  // Starts again the children whose backoff has passed; returns their names.
  std::vector<std::string> restart_due() {
    std::vector<std::string> restarted;
    for (auto& child : children_) {
      if (child.pid != 0 || Clock::now() < child.restart_at) continue;
      ++child.restarts;
      spdlog::warn("restarting {} (restart {})", child.name, child.restarts);
      spawn(child);
      restarted.push_back(child.name);
    }
    return restarted;
  }

  // Runs `name` with another command from now on (stopping the running one first).
  void replace(const std::string& name, const std::vector<std::string>& argv,
               const process::SpawnOptions& options) {
    for (auto& child : children_) {
      if (child.name != name) continue;
      child.argv = argv;
      child.options = options;
      if (child.pid != 0) {
        spdlog::info("restarting {} (pid {}) with new settings", child.name, child.pid);
        (void)process::stop(child.pid, SIGTERM, child_stop_grace);
        fs::remove(run_directory_ / (child.name + ".pid"));
        spawn(child);
      }
    }
  }

  // Stops the children in reverse start order.
  void stop_all() {
    for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
      if (it->pid == 0) continue;
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
    std::vector<std::string> argv;
    process::SpawnOptions options;
    std::function<void()> before_start;
    pid_t pid = 0;  // 0 while it waits for its restart
    Clock::time_point started{};
    std::chrono::seconds backoff{0};
    Clock::time_point restart_at{};
    int restarts = 0;
  };

  void spawn(Child& child) {
    if (child.before_start) child.before_start();
    child.pid = process::spawn(child.argv, child.options);
    child.started = Clock::now();
    std::ofstream(run_directory_ / (child.name + ".pid")) << child.pid << "\n";
    spdlog::info("started {} (pid {})", child.name, child.pid);
  }

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
    auto postgres = std::make_unique<db::EmbeddedPostgres>(postgres_options);
    postgres->start();
    postgres->ensure_database("ledger");
    // A restarted cluster keeps its port, so the services' URLs stay valid.
    postgres_options.port = postgres->port();
    const std::string admin_url = postgres->superuser_url("ledger");
    const std::string app_url = postgres->url("ledger_app", "ledger");
    db::MigrationRunner(admin_url).up();

    const std::string self = process::self_executable();
    const fs::path broker_address = home / "run" / "broker.address";
    const std::vector<std::string> common = {self, "--home", home.string(), "--log-format",
                                             settings.log_format, "--log-level",
                                             settings.log_level, "--topic-prefix",
                                             settings.topic_prefix, "--topic-partitions",
                                             std::to_string(settings.topic_partitions)};
    const auto with = [&](std::vector<std::string> tail) {
      std::vector<std::string> argv = common;
      argv.insert(argv.end(), tail.begin(), tail.end());
      return argv;
    };
    const int port = choose_http_port(*http_port);
    const fs::path port_file = home / "run" / "serve.port";
    const std::vector<std::string> serve_argv =
        with({"serve", "--http-port", std::to_string(port), "--port-file", port_file.string(),
              "--jwt-secret-file", secret_file.string()});
    const std::vector<std::string> project_argv = with({"project", "all"});
    const auto serve_options = [&](const std::string& kafka_brokers) {
      process::SpawnOptions options;
      // An empty LEDGER_JWT_SECRET counts as unset: one the caller's shell holds (a sourced
      // dev.env) must not meet --jwt-secret-file.
      options.extra_environment = {"LEDGER_DATABASE_URL=" + app_url,
                                   "LEDGER_ADMIN_DATABASE_URL=" + admin_url,
                                   "LEDGER_KAFKA_BROKERS=" + kafka_brokers, "LEDGER_JWT_SECRET="};
      return options;
    };
    const auto project_options = [&](const std::string& kafka_brokers) {
      process::SpawnOptions options;
      options.extra_environment = {"LEDGER_DATABASE_URL=" + app_url,
                                   "LEDGER_KAFKA_BROKERS=" + kafka_brokers};
      return options;
    };

    // A broker writes its address when it is ready: a stale file must not pass for that.
    supervisor.start("broker", with({"broker", "--address-file", broker_address.string()}), {},
                     [&] { fs::remove(broker_address); });
    std::string kafka_brokers;
    fs::remove(port_file);
    try {
      kafka_brokers = wait_for_file_line(broker_address, child_ready_timeout, "the broker");
      supervisor.start("serve", serve_argv, serve_options(kafka_brokers));
      (void)wait_for_file_line(port_file, child_ready_timeout, "the HTTP front");
      supervisor.start("project", project_argv, project_options(kafka_brokers));
    } catch (...) {
      supervisor.stop_all();
      throw;
    }
    const std::string url = "http://127.0.0.1:" + std::to_string(port);
    const std::string token = api::issue_token(secret, "dev-admin", {"admin"}, std::chrono::hours(24 * 30));

    const auto write_env = [&] {
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
    };
    write_env();

    std::cout << "\nledger dev is up (home " << home.string() << ")\n"
              << "  HTTP        " << url << "  (ready: " << url << "/health/ready)\n"
              << "  token       " << token << "  (admin, 30 days)\n"
              << "  PostgreSQL  " << app_url << "\n"
              << "              port " << postgres->port() << " on 127.0.0.1, socket in "
              << postgres->socket_directory().string() << "\n"
              << "  Kafka       " << kafka_brokers << " (topic " << settings.topic_prefix
              << ".events)\n"
              << "  settings    source " << env_file.string() << "\n"
              << "  stop        Ctrl-C, or kill -TERM " << getpid() << "\n"
              << std::endl;

    // Supervise until stopped: a child or PostgreSQL that ends is started again (with
    // backoff), never the whole stack torn down. A new broker listens on a new address, so
    // serve and the projectors are restarted with it and dev.env is rewritten.
    std::chrono::seconds postgres_backoff{0};
    std::optional<Clock::time_point> postgres_restart_at;
    Clock::time_point postgres_started = Clock::now();
    while (true) {
      timespec timeout{0, 500'000'000};
      const int received = sigtimedwait(&stop_signals, nullptr, &timeout);
      if (received == SIGINT || received == SIGTERM) {
        spdlog::info("stopping the embedded stack (signal {})", received);
        break;
      }
      supervisor.reap();
      const auto restarted = supervisor.restart_due();
      if (std::find(restarted.begin(), restarted.end(), "broker") != restarted.end()) {
        try {
          kafka_brokers = wait_for_file_line(broker_address, child_ready_timeout, "the broker");
          spdlog::warn("the broker is back on {}; restarting serve and the projectors with it",
                       kafka_brokers);
          supervisor.replace("serve", serve_argv, serve_options(kafka_brokers));
          supervisor.replace("project", project_argv, project_options(kafka_brokers));
          write_env();
        } catch (const std::exception& error) {
          spdlog::error("the restarted broker is not ready: {}", error.what());
        }
      }
      if (!postgres_restart_at && !postgres->running()) {
        postgres_backoff = next_backoff(postgres_backoff, postgres_started);
        postgres_restart_at = Clock::now() + postgres_backoff;
        spdlog::error("PostgreSQL stopped; restarting it in {} s", postgres_backoff.count());
      }
      if (postgres_restart_at && Clock::now() >= *postgres_restart_at) {
        try {
          postgres->detach();  // it is gone; its stale postmaster.pid is cleaned up by start()
          postgres = std::make_unique<db::EmbeddedPostgres>(postgres_options);
          postgres_started = Clock::now();
          postgres->start();
          postgres_restart_at.reset();
          spdlog::warn("PostgreSQL restarted on port {}", postgres->port());
        } catch (const std::exception& error) {
          postgres_backoff = next_backoff(postgres_backoff, postgres_started);
          postgres_restart_at = Clock::now() + postgres_backoff;
          spdlog::error("restarting PostgreSQL failed ({}); trying again in {} s", error.what(),
                        postgres_backoff.count());
        }
      }
    }
    supervisor.stop_all();
    fs::remove(env_file);
    postgres->stop();
    spdlog::info("embedded stack stopped");
    return 0;
  };
}

}  // namespace ledger::app
