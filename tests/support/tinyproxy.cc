#include "tests/support/tinyproxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string_view>
#include <thread>

extern char** environ;

namespace cakewalk::testing {

using namespace std::chrono_literals;

std::uint16_t PickFreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) close(fd);
    throw std::runtime_error("cannot pick a free port");
  }
  close(fd);
  return ntohs(addr.sin_port);
}

bool CanConnect(std::uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

TinyProxy::TinyProxy(const TempDir& dir, const Options& options) : dir_(dir.path()) {
  std::string last_output;
  for (int attempt = 0; attempt < 10; ++attempt) {
    port_ = PickFreePort();
    std::string conf = "Port " + std::to_string(port_) +
                       "\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 30\nMaxClients 50\n"
                       "LogLevel Info\nLogFile \"" +
                       (dir_ / "tinyproxy.log").string() + "\"\nPidFile \"" +
                       (dir_ / "tinyproxy.pid").string() + "\"\n";
    if (!options.user.empty()) conf += "BasicAuth " + options.user + " " + options.password + "\n";
    for (auto p : options.connect_ports) conf += "ConnectPort " + std::to_string(p) + "\n";
    WriteFile(dir_ / "tinyproxy.conf", conf);
    Spawn();
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (CanConnect(port_)) return;
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        break;  // exited: most likely the port was taken in between; try another one
      }
      std::this_thread::sleep_for(20ms);
    }
    try {
      last_output = ReadFile(dir_ / "tinyproxy.out") + Log();
    } catch (...) {
      last_output = Log();
    }
    Kill();
  }
  throw std::runtime_error("tinyproxy did not start: " + last_output);
}

TinyProxy::~TinyProxy() { Kill(); }

std::string TinyProxy::Log() const {
  try {
    return ReadFile(dir_ / "tinyproxy.log");
  } catch (...) {
    return {};
  }
}

int TinyProxy::ConnectRequests(const std::string& host_port) const {
  return Count("Request (file descriptor ", "): CONNECT " + host_port + " HTTP/1.1");
}

int TinyProxy::TunnelsToLocalhost() const {
  return Count("Established connection to host \"localhost\"", "");
}

int TinyProxy::Count(const std::string& a, const std::string& b) const {
  const std::string log = Log();
  int n = 0;
  std::size_t start = 0;
  while (start < log.size()) {
    std::size_t end = log.find('\n', start);
    if (end == std::string::npos) end = log.size();
    const std::string_view line(log.data() + start, end - start);
    const std::size_t pa = line.find(a);
    if (pa != std::string_view::npos && (b.empty() || line.find(b, pa) != std::string_view::npos))
      ++n;
    start = end + 1;
  }
  return n;
}

void TinyProxy::Spawn() {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  const std::string out = (dir_ / "tinyproxy.out").string();
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  const std::string conf = (dir_ / "tinyproxy.conf").string();
  std::vector<char*> argv = {const_cast<char*>("tinyproxy"), const_cast<char*>("-d"),
                             const_cast<char*>("-c"), const_cast<char*>(conf.c_str()), nullptr};
  const int rc = posix_spawnp(&pid_, "tinyproxy", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    pid_ = -1;
    throw std::runtime_error(
        "cannot start tinyproxy (is the package installed? scripts/bootstrap installs it): " +
        std::string(std::strerror(rc)));
  }
}

void TinyProxy::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

}  // namespace cakewalk::testing
