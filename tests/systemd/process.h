// Child processes for the systemd tests, started with posix_spawn (never fork: see the team rules
// on PKCS#11 and threads).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace cakewalk::testing {

struct ProcessResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  bool timed_out = false;
  std::string out;
  std::string err;
};

// Runs argv[0] (a path, or a name looked up in PATH) with the current environment plus `env`
// ("NAME=value", replacing variables of the same name), collects its output, and kills it after
// `timeout`.
ProcessResult RunProcess(const std::vector<std::string>& argv,
                         const std::vector<std::string>& env = {},
                         std::chrono::milliseconds timeout = std::chrono::seconds(60),
                         const std::string& stdin_data = "");

// A running child whose standard output is read line by line; standard error goes to a file.
// The destructor kills (SIGKILL) and reaps it if it still runs.
class Child {
 public:
  static Child Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env = {},
                     const std::string& stderr_path = "/dev/null");
  Child(Child&& other) noexcept;
  Child& operator=(Child&&) = delete;
  ~Child();

  pid_t pid() const { return pid_; }
  // The next line of standard output (without the newline); nullopt on EOF or timeout.
  std::optional<std::string> ReadLine(std::chrono::milliseconds timeout);
  void Signal(int sig) const;
  // Waits for the exit; returns the wait status, or nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout);

 private:
  Child(pid_t pid, int out_fd) : pid_(pid), out_fd_(out_fd) {}
  pid_t pid_ = -1;
  int out_fd_ = -1;
  bool reaped_ = false;
  std::string buffer_;
};

// The environment of this process with `extra` applied, as posix_spawn wants it.
std::vector<std::string> MergedEnvironment(const std::vector<std::string>& extra);

}  // namespace cakewalk::testing
