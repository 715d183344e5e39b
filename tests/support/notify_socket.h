// A datagram socket in a temp folder standing in for systemd's notification socket: start the
// agent with NOTIFY_SOCKET=path() and read what it tells the service manager. Nothing reads it
// unless a method is called, so a test can also leave it full (the kernel queues
// net.unix.max_dgram_qlen datagrams, often 10; then senders block).
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/temp_dir.h"

namespace cakewalk::testing {

class NotifySocket {
 public:
  using Steady = std::chrono::steady_clock;

  NotifySocket() : path_((dir_ / "notify").string()) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    bound_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~NotifySocket() {
    if (fd_ >= 0) ::close(fd_);
  }
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;

  bool bound() const { return bound_; }
  const std::string& path() const { return path_; }

  // Reads messages until one contains `needle`: the time it arrived, or nullopt after `timeout`.
  // Every message read is kept in seen().
  std::optional<Steady::time_point> WaitFor(const std::string& needle,
                                            std::chrono::milliseconds timeout) {
    const auto deadline = Steady::now() + timeout;
    while (Steady::now() < deadline) {
      if (!ReadOne(20)) continue;
      if (seen_.back().find(needle) != std::string::npos) return Steady::now();
    }
    return std::nullopt;
  }
  // Reads whatever is queued now; returns every message read so far.
  const std::vector<std::string>& Drain() {
    while (ReadOne(0)) {
    }
    return seen_;
  }
  const std::vector<std::string>& seen() const { return seen_; }

 private:
  bool ReadOne(int wait_ms) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, wait_ms) <= 0) return false;
    char buf[4096];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    seen_.emplace_back(buf, static_cast<std::size_t>(n));
    return true;
  }

  TempDir dir_{"cakewalk-notify"};
  std::string path_;
  int fd_ = -1;
  bool bound_ = false;
  std::vector<std::string> seen_;
};

}  // namespace cakewalk::testing
