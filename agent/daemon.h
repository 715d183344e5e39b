// `cakewalk-agent run`: the daemon, composed in one place (craft guide: main as composition
// root). The CLI loads the configuration and calls RunDaemon; everything else is built here, in
// this order, and torn down in reverse:
//
//   1. log sink (journald under systemd, else stderr), at config.log_level;
//   2. the sd-event loop, BEFORE any thread: it blocks SIGTERM/SIGINT/SIGHUP so that only the loop
//      consumes them (every later thread inherits the mask);
//   3. the token (TokenContext: module, PIN, login, secret store) — a wrong PIN ends the start
//      with reason pin_incorrect (exit 77, no restart);
//   4. the enrolled identity (Identity::Open, which repairs an interrupted renewal), the control
//      plane link (transport with the token key, rebuilt after a renewal), the renewer;
//   5. the job journal (state_dir/journal.sqlite3), the job-signing keys (from the identity;
//      refreshed keys are stored back), the executors (the Jira job types, and secret.rotate over
//      the rotation engine, agent/rotation.h), the job loop, the heartbeat, the rotation service
//      (D-Bus RotateSecret, maintenance every minute);
//   6. the D-Bus service security.cakewalk.Agent1 (when no system bus is reachable the agent runs
//      without it and says so; another process owning the name is an error);
//   7. rotations a crash interrupted are settled (at most 40 s; the rest in the background), then
//      the job loop, the heartbeat and the rotation service start; READY=1 with the status line;
//      then the loop runs until SIGTERM/SIGINT, a stop request or a lost bus;
//   8. shutdown: STOPPING=1, the heartbeat stops, the job loop shuts down (claiming stops, running
//      jobs get jobs.shutdown_grace, results are flushed for a bounded time), then the bus, the
//      loop, the link (its transports hold token keys), the identity, the journal, the token.
//
// Reload (SIGHUP or D-Bus): the token's objects are re-read (hsm::Token::Refresh: a TPM shows
// what another process stored only then), and the configuration file is read again; jobs.* and
// connections take effect for the next job. Changes to control_plane.*, token.* or state_dir
// need a restart: the reload is refused and says so (the running configuration stays).
//
// The process never forks (PKCS#11 sessions do not survive fork); everything runs on threads.
#pragma once

#include <memory>
#include <mutex>

#include "agent/cli.h"
#include "agent/config.h"
#include "base/status.h"

namespace cakewalk::agent {

// Runs the daemon until it is told to stop. OK after SIGTERM/SIGINT (exit 0); otherwise the
// failure (ExitCodeFor maps it: 77 for token PIN problems, else 1), with a message that says what
// to do. `config` is the loaded configuration; config.file is re-read on reload.
Status RunDaemon(const Config& config, CliIo io);

// The configuration in force, swapped atomically on reload. Thread-safe.
class ConfigHolder {
 public:
  explicit ConfigHolder(Config initial)
      : current_(std::make_shared<const Config>(std::move(initial))) {}
  std::shared_ptr<const Config> Get() const;
  // Reads config.file again. Refuses (and keeps the running configuration) when the file is
  // invalid or when a setting that needs a restart changed.
  Status Reload();
  // Swaps in `next` under the same rules (for tests).
  Status Apply(Config next);

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const Config> current_;
};

}  // namespace cakewalk::agent
