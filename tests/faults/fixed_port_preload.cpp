// LD_PRELOAD'ed into `ledger broker` by the fault suite only: librdkafka's mock cluster always
// listens on a port the kernel picks, so a broker restarted after SIGKILL would come back on
// another address. With LEDGER_TEST_BIND_PORT set, a bind() to an IPv4 address with port 0 takes
// that port instead (SO_REUSEADDR, retried while the killed broker's port is still held), so the
// restarted broker is the same address with an empty log: a broker that lost its data, which
// serve and the projectors, configured once, must live through.
#include <dlfcn.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace {

constexpr int bind_attempts_max = 200;
constexpr useconds_t bind_retry_us = 50'000;

using BindFunction = int (*)(int, const sockaddr*, socklen_t);

}  // namespace

extern "C" int bind(int fd, const sockaddr* address, socklen_t length) {
  static const auto real_bind = reinterpret_cast<BindFunction>(dlsym(RTLD_NEXT, "bind"));
  const char* port = std::getenv("LEDGER_TEST_BIND_PORT");
  if (port == nullptr || address == nullptr || address->sa_family != AF_INET ||
      length < static_cast<socklen_t>(sizeof(sockaddr_in))) {
    return real_bind(fd, address, length);
  }
  sockaddr_in fixed{};
  std::memcpy(&fixed, address, sizeof fixed);
  if (fixed.sin_port != 0) return real_bind(fd, address, length);
  fixed.sin_port = htons(static_cast<std::uint16_t>(std::atoi(port)));
  const int yes = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  for (int attempt = 0; attempt < bind_attempts_max; ++attempt) {
    if (real_bind(fd, reinterpret_cast<const sockaddr*>(&fixed), sizeof fixed) == 0) return 0;
    if (errno != EADDRINUSE) return -1;
    ::usleep(bind_retry_us);
  }
  return -1;
}
