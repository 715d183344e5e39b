// fake-control-plane: the fake Cakewalk control plane as a program, for the demo and chaos runs.
//
//   fake-control-plane --dir DIR [--port N] [--lease-seconds S] [--certificate-lifetime-seconds S]
//                      [--poll-wait-seconds S]
//
// Serves the agent API at https://localhost:<port>/agent/v1 on 127.0.0.1 and the test-only admin
// API under /_fake/ (docs/protocol.md). Writes into DIR (created 0700 if missing):
//   ca.pem             the CA of the server certificate (the agent's control_plane.ca_file)
//   enrollment-token   a one-time enrollment token (mode 0600)
//   pid                this process's id
//   url                the agent API's base URL — written last: its presence means "ready"
// Prints one line per event on standard output. Runs until SIGTERM or SIGINT.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "tests/fakes/control_plane/running_control_plane.h"

namespace {

using cakewalk::testing::RunningControlPlane;
using cakewalk::testing::RunningControlPlaneOptions;

constexpr std::string_view kUsage =
    "usage: fake-control-plane --dir DIR [--port N] [--lease-seconds S]\n"
    "                          [--certificate-lifetime-seconds S] [--poll-wait-seconds S]\n";

int Fail(const std::string& message) {
  std::fprintf(stderr, "fake-control-plane: %s\n", message.c_str());
  return 1;
}

bool ParseNumber(std::string_view text, long long min, long long max, long long& out) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end && out >= min && out <= max;
}

// Writes `content` to DIR/name with `mode`, atomically (temporary file, then rename).
bool WriteAtomically(const std::filesystem::path& dir, const std::string& name,
                     const std::string& content, mode_t mode, std::string& error) {
  const std::filesystem::path tmp = dir / ("." + name + ".tmp");
  const std::filesystem::path final_path = dir / name;
  std::FILE* f = std::fopen(tmp.c_str(), "wx");
  if (f == nullptr) {
    std::filesystem::remove(tmp);
    f = std::fopen(tmp.c_str(), "wx");
  }
  if (f == nullptr) {
    error = "cannot create " + tmp.string() + ": " + std::strerror(errno);
    return false;
  }
  const bool ok = fchmod(fileno(f), mode) == 0 &&
                  std::fwrite(content.data(), 1, content.size(), f) == content.size();
  if (std::fclose(f) != 0 || !ok) {
    error = "cannot write " + tmp.string();
    return false;
  }
  if (std::rename(tmp.c_str(), final_path.c_str()) != 0) {
    error = "cannot rename " + tmp.string() + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

void PrintEvent(std::string_view line) {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char stamp[16];
  std::strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
  std::fprintf(stdout, "%s fake-control-plane: %.*s\n", stamp, static_cast<int>(line.size()),
               line.data());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::filesystem::path dir;
  RunningControlPlaneOptions options;
  options.control_plane.enable_admin_api = true;
  options.control_plane.event_log = PrintEvent;

  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage.data(), stdout);
      return 0;
    }
    if (i + 1 >= argc)
      return Fail("missing value after " + std::string(arg) + "\n" + kUsage.data());
    const std::string_view value = argv[++i];
    long long n = 0;
    if (arg == "--dir") {
      dir = std::string(value);
    } else if (arg == "--port" && ParseNumber(value, 0, 65535, n)) {
      options.port = static_cast<std::uint16_t>(n);
    } else if (arg == "--lease-seconds" && ParseNumber(value, 1, 3600, n)) {
      options.control_plane.lease_duration = std::chrono::seconds(n);
    } else if (arg == "--certificate-lifetime-seconds" && ParseNumber(value, 60, 315360000, n)) {
      options.control_plane.certificate_lifetime = std::chrono::seconds(n);
    } else if (arg == "--poll-wait-seconds" && ParseNumber(value, 0, 60, n)) {
      options.control_plane.poll_wait_seconds = static_cast<int>(n);
    } else {
      return Fail("bad argument " + std::string(arg) + " " + std::string(value) + "\n" +
                  kUsage.data());
    }
  }
  if (dir.empty()) return Fail(std::string("--dir is required\n") + kUsage.data());

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Fail("cannot create " + dir.string() + ": " + ec.message());
  if (::chmod(dir.c_str(), 0700) != 0) return Fail("cannot chmod " + dir.string());

  // Block the stop signals before any thread starts, so every thread inherits the mask and
  // sigwait() below is the only place they are received.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  if (pthread_sigmask(SIG_BLOCK, &stop, nullptr) != 0) return Fail("pthread_sigmask failed");
  signal(SIGPIPE, SIG_IGN);

  auto cp = RunningControlPlane::Start(std::move(options));
  if (!cp.ok()) return Fail("cannot start: " + cp.status().ToString());
  std::unique_ptr<RunningControlPlane> owned = std::move(cp).value();
  RunningControlPlane& running = *owned;
  const std::string token = running.fake().NewEnrollmentToken();

  std::string error;
  if (!WriteAtomically(dir, "ca.pem", running.server_ca_pem(), 0644, error) ||
      !WriteAtomically(dir, "enrollment-token", token + "\n", 0600, error) ||
      !WriteAtomically(dir, "pid", std::to_string(getpid()) + "\n", 0644, error) ||
      !WriteAtomically(dir, "url", running.base_url() + "\n", 0644, error)) {
    return Fail(error);
  }
  PrintEvent("serving " + running.base_url() + " (admin API: " + running.root_url() +
             "/_fake/; files in " + dir.string() + ")");

  int sig = 0;
  while (sigwait(&stop, &sig) != 0) {
  }
  PrintEvent(std::string("stopping on ") + (sig == SIGINT ? "SIGINT" : "SIGTERM"));
  owned.reset();  // releases held long polls and stops the server
  std::filesystem::remove(dir / "url", ec);
  return 0;
}
