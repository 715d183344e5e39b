// Test-only program for the check-no-listen self-test: opens sockets of one kind, prints READY,
// and waits to be killed.
//
//   socket_child tcp | udp | udp6 | unix-abstract NAME | unix-path PATH | raw
//   socket_child outbound PORT     connected TCP + connected UDP + unbound UDP + socketpair
//   socket_child grandchild MODE [ARG]   a child process of this one opens MODE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

int Die(const char* what) {
  std::fprintf(stderr, "socket_child: %s: %s\n", what, std::strerror(errno));
  return 1;
}

int Ready() {
  std::printf("READY\n");
  std::fflush(stdout);
  while (true) pause();
}

int Inet(int family, int type) {
  const int fd = socket(family, type, 0);
  if (fd < 0) return Die("socket");
  if (family == AF_INET) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return Die("bind");
  } else {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return Die("bind");
  }
  if (type == SOCK_STREAM && listen(fd, 4) != 0) return Die("listen");
  return Ready();
}

int Unix(const std::string& name, bool abstract) {
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  socklen_t len = 0;
  if (abstract) {
    a.sun_path[0] = '\0';
    std::memcpy(a.sun_path + 1, name.data(), name.size());
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  } else {
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", name.c_str());
    len = sizeof a;
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), len) != 0) return Die("bind");
  if (listen(fd, 4) != 0) return Die("listen");
  return Ready();
}

int Outbound(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  const int tcp = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(tcp, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return Die("connect tcp");
  const int udp = socket(AF_INET, SOCK_DGRAM, 0);
  if (connect(udp, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return Die("connect udp");
  const int unbound = socket(AF_INET6, SOCK_DGRAM, 0);
  if (unbound < 0) return Die("socket");
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0) return Die("socketpair");
  return Ready();
}

}  // namespace

extern char** environ;

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const std::string mode = argv[1];
  const std::string arg = argc > 2 ? argv[2] : "";
  if (mode == "tcp") return Inet(AF_INET, SOCK_STREAM);
  if (mode == "udp") return Inet(AF_INET, SOCK_DGRAM);
  if (mode == "udp6") return Inet(AF_INET6, SOCK_DGRAM);
  if (mode == "unix-abstract") return Unix(arg, true);
  if (mode == "unix-path") return Unix(arg, false);
  if (mode == "raw") {
    if (socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) < 0) return Die("raw socket");
    return Ready();
  }
  if (mode == "outbound") return Outbound(std::atoi(arg.c_str()));
  if (mode == "grandchild" && argc > 2) {
    pid_t pid = -1;
    if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv + 1, environ) != 0) {
      return Die("posix_spawn");
    }
    // The grandchild prints READY on the shared standard output; this process just waits.
    int status = 0;
    waitpid(pid, &status, 0);
    return 0;
  }
  return 2;
}
