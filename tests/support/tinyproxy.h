// A real HTTP CONNECT proxy for tests: tinyproxy, started on 127.0.0.1 with a config in a temp
// folder, stopped when the object goes away.
//
// tinyproxy cannot listen on port 0, so a free port is picked by binding and closing, retrying on
// a collision. When the tests run as root, tinyproxy warns that no User is configured and keeps
// running as root; with a `User` line it would drop privileges and lose access to its log in the
// 0700 temp folder, so there is none. Quirk to remember: tinyproxy answers a wrong password with
// 401 (not 407).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/support/temp_dir.h"

namespace cakewalk::testing {

// A port on 127.0.0.1 that was free a moment ago.
std::uint16_t PickFreePort();
// Whether something accepts TCP connections on 127.0.0.1:port.
bool CanConnect(std::uint16_t port);

class TinyProxy {
 public:
  struct Options {
    std::string user;  // empty: no authentication
    std::string password;
    std::vector<std::uint16_t> connect_ports;  // ports CONNECT may reach
  };

  // Starts tinyproxy with its files in `dir`; throws std::runtime_error when it cannot start.
  TinyProxy(const TempDir& dir, const Options& options);
  ~TinyProxy();
  TinyProxy(const TinyProxy&) = delete;
  TinyProxy& operator=(const TinyProxy&) = delete;

  std::uint16_t port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string Log() const;
  // CONNECT requests tinyproxy logged for host:port (with proxy authentication, libcurl's first
  // CONNECT carries no credentials and gets a 407: one tunnel can take two requests).
  int ConnectRequests(const std::string& host_port) const;
  // Tunnels tinyproxy opened to the origin "localhost".
  int TunnelsToLocalhost() const;

 private:
  // Log lines containing `a` followed, later on the same line, by `b`.
  int Count(const std::string& a, const std::string& b) const;
  void Spawn();
  void Kill();

  std::filesystem::path dir_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace cakewalk::testing
