#include "metrics_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace ledger::app {

std::string metrics_gauge(const std::string& name, const std::string& help, std::int64_t value) {
  return fmt::format("# HELP {0} {1}\n# TYPE {0} gauge\n{0} {2}\n", name, help, value);
}

void write_metrics_file(const std::string& path, const std::string& text) {
  const std::string temporary = path + ".tmp";
  ::unlink(temporary.c_str());  // a killed writer's
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                        S_IRUSR | S_IWUSR | S_IRGRP | S_IROTH);
  if (fd < 0) throw std::runtime_error("--metrics-file: cannot create " + temporary + ": " + std::strerror(errno));
  std::size_t written = 0;
  while (written < text.size()) {
    const ssize_t result = ::write(fd, text.data() + written, text.size() - written);
    if (result < 0 && errno == EINTR) continue;
    if (result < 0) {
      const int error = errno;
      ::close(fd);
      throw std::runtime_error("--metrics-file: cannot write " + temporary + ": " + std::strerror(error));
    }
    written += static_cast<std::size_t>(result);
  }
  ::fchmod(fd, S_IRUSR | S_IWUSR | S_IRGRP | S_IROTH);  // whatever the umask took away
  ::close(fd);
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    throw std::runtime_error("--metrics-file: cannot rename " + temporary + " to " + path + ": " +
                             std::strerror(errno));
  }
}

}  // namespace ledger::app
