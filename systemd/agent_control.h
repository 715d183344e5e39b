// The plain C++ interface between the systemd layer and the daemon.
//
// The D-Bus service (systemd/bus_service.h) translates bus calls into calls on AgentControl and
// maps the returned Status to D-Bus errors; the daemon implements AgentControl and never sees an
// sd-bus type. Tests implement it with a fake.
//
// Threading: every AgentControl method is called on the event-loop thread and must return quickly
// (well under half of WatchdogSec): it blocks the loop, and with it the watchdog pings and every
// other bus call. Long work (RotateSecret) runs elsewhere and answers through a Reply.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"
#include "base/time.h"

namespace cakewalk::sd {

// One configured Jira connection (or the control plane) as the daemon sees it.
struct ConnectionStatus {
  std::string name;    // the connection's name from the configuration, or "control-plane"
  std::string state;   // short word: "ok", "degraded", "unreachable", "unauthenticated", ...
  std::string detail;  // one human line, empty when there is nothing to add
};

// What `cakewalk-agent status` shows. Sent over D-Bus as a{sv}; see docs/operations.md for keys.
struct StatusSnapshot {
  std::string state;    // "starting", "running", "degraded", "reloading", "stopping"
  std::string version;  // the agent's version
  std::chrono::seconds uptime{0};
  uint32_t jobs_running = 0;
  uint32_t results_pending = 0;  // finished job results not yet acknowledged by the control plane
  std::optional<SysTime> certificate_expires_at;  // the agent's mTLS certificate
  std::vector<ConnectionStatus> connections;      // control plane first, then each connection
  std::string sync_progress;                      // human text; empty when no sync runs
};

// Metadata of one secret in the token. Never a value.
struct SecretInfo {
  std::string connection;  // connection name, or "control-plane"
  std::string name;        // "password", "api-token", "pat", ...
  int64_t version = 0;
  SysTime created_at{};
  std::string state;  // "current", "pending" (rotation in progress), "previous"
};

// Published values behind the D-Bus properties (BusService::SetProperties).
struct AgentProperties {
  std::string state = "starting";
  std::optional<SysTime> certificate_expires_at;
  uint32_t jobs_running = 0;
  uint32_t results_pending = 0;

  bool operator==(const AgentProperties&) const = default;
};

// The answer to an asynchronous request. Move-only; call Send exactly once, from any thread.
// Dropping a Reply without sending answers the caller with an Aborted error, so a forgotten
// reply can never leave a D-Bus client waiting for its timeout.
template <class T>
class Reply {
 public:
  using Sink = std::function<void(Result<T>)>;

  explicit Reply(Sink sink) : sink_(std::move(sink)) {}
  Reply(Reply&& other) noexcept : sink_(std::exchange(other.sink_, nullptr)) {}
  Reply& operator=(Reply&& other) noexcept {
    if (this != &other) {
      Drop();
      sink_ = std::exchange(other.sink_, nullptr);
    }
    return *this;
  }
  Reply(const Reply&) = delete;
  Reply& operator=(const Reply&) = delete;
  ~Reply() { Drop(); }

  void Send(Result<T> result) && {
    if (!sink_) return;
    Sink sink = std::exchange(sink_, nullptr);
    try {
      sink(std::move(result));
    } catch (...) {
      // The sink only queues the answer for the loop; there is nothing useful to do here.
    }
  }

 private:
  void Drop() noexcept {
    if (sink_) std::move(*this).Send(Status(Code::kAborted, "the agent dropped the request"));
  }

  Sink sink_;
};

class AgentControl {
 public:
  virtual ~AgentControl() = default;

  // The current state; cheap (the daemon keeps it up to date).
  virtual StatusSnapshot GetStatus() = 0;
  // Metadata of every secret in the token.
  virtual Result<std::vector<SecretInfo>> ListSecrets() = 0;
  // Starts a rotation of `name` for `connection` and answers with the new version when it is
  // promoted. The arguments are syntactically valid (bus_service.h: ValidateName); whether the
  // pair exists or may be rotated is the daemon's decision (kNotFound, kInvalidArgument,
  // kFailedPrecondition, ...). The daemon may call `done` before returning.
  virtual void RotateSecret(std::string connection, std::string name, Reply<int64_t> done) = 0;
  // Re-reads the configuration. Called from EventLoop::Reload (SIGHUP and the D-Bus Reload
  // method); a failed reload keeps the previous configuration running.
  virtual Status Reload() = 0;
};

}  // namespace cakewalk::sd
