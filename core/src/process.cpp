#include "ledger/core/process.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

namespace ledger::process {
namespace {

ExitStatus decode(int status) {
  if (WIFEXITED(status)) return {true, WEXITSTATUS(status)};
  return {false, WTERMSIG(status)};
}

}  // namespace

pid_t spawn(const std::vector<std::string>& argv, const SpawnOptions& options) {
  if (argv.empty()) throw std::invalid_argument("spawn: empty argv");

  // Everything the child needs is prepared before fork: after fork only async-signal-safe
  // calls are allowed in a multi-threaded parent.
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);

  std::vector<std::string> environment_storage;
  for (char** entry = environ; *entry != nullptr; ++entry) environment_storage.emplace_back(*entry);
  for (const auto& extra : options.extra_environment) environment_storage.push_back(extra);
  std::vector<char*> environment;
  for (auto& entry : environment_storage) environment.push_back(entry.data());
  environment.push_back(nullptr);

  uid_t uid = 0;
  gid_t gid = 0;
  bool switch_user = !options.run_as_user.empty();
  if (switch_user) {
    const passwd* user = getpwnam(options.run_as_user.c_str());
    if (user == nullptr) {
      throw std::runtime_error("spawn: no such user: " + options.run_as_user);
    }
    uid = user->pw_uid;
    gid = user->pw_gid;
  }

  const pid_t pid = fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
  if (pid == 0) {
    if (options.own_process_group) setpgid(0, 0);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    if (!options.output_file.empty()) {
      const int fd = open(options.output_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
      }
    }
    const int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) {
      dup2(null_fd, STDIN_FILENO);
      close(null_fd);
    }
    if (switch_user) {
      if (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(uid) != 0) _exit(126);
    }
    execvpe(args[0], args.data(), environment.data());
    _exit(127);
  }
  return pid;
}

std::optional<ExitStatus> wait_for(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    const pid_t result = waitpid(pid, &status, WNOHANG);
    if (result == pid) return decode(status);
    if (result < 0) {
      if (errno == EINTR) continue;
      // Not our child (or already reaped): report it as gone once it no longer exists.
      if (!is_alive(pid)) return ExitStatus{true, 0};
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

ExitStatus run(const std::vector<std::string>& argv, std::string& output,
               const SpawnOptions& options) {
  char path_template[] = "/tmp/ledger-run-XXXXXX";
  const int fd = mkstemp(path_template);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "mkstemp");
  close(fd);
  const std::string path = path_template;
  if (!options.run_as_user.empty()) {
    if (const passwd* user = getpwnam(options.run_as_user.c_str())) {
      [[maybe_unused]] const int ignored = chown(path.c_str(), user->pw_uid, user->pw_gid);
    }
  }
  SpawnOptions with_output = options;
  with_output.output_file = path;
  with_output.own_process_group = false;
  const pid_t pid = spawn(argv, with_output);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  output = buffer.str();
  unlink(path.c_str());
  return decode(status);
}

ExitStatus stop(pid_t pid, int signal, std::chrono::milliseconds grace) {
  kill(pid, signal);
  if (auto status = wait_for(pid, grace)) return *status;
  kill(pid, SIGKILL);
  if (auto status = wait_for(pid, std::chrono::seconds(5))) return *status;
  return {false, SIGKILL};
}

bool is_alive(pid_t pid) {
  if (pid <= 0) return false;
  if (kill(pid, 0) == 0) {
    // A zombie still answers kill(0); look at its state.
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string content;
    std::getline(stat, content);
    const auto paren = content.rfind(')');
    if (paren != std::string::npos && paren + 2 < content.size() && content[paren + 2] == 'Z') {
      return false;
    }
    return true;
  }
  return errno == EPERM;
}

std::string self_executable() {
  char buffer[PATH_MAX];
  const ssize_t length = readlink("/proc/self/exe", buffer, sizeof(buffer) - 1);
  if (length < 0) throw std::system_error(errno, std::generic_category(), "readlink /proc/self/exe");
  return std::string(buffer, static_cast<std::size_t>(length));
}

}  // namespace ledger::process
