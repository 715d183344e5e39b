// The client side of the agent's D-Bus API, for the command line (`cakewalk-agent status`, and
// whatever else wants to ask the running daemon). Uses the system bus (DBUS_SYSTEM_BUS_ADDRESS
// when set). Errors are precise and say what to do:
//   the agent is not running          kUnavailable      "the agent is not running (name
//                                                        security.cakewalk.Agent1 has no owner)"
//   no system bus                     kUnavailable      "cannot connect to the system bus ..."
//   refused by the bus or the agent   kPermissionDenied "... run as root or as a member of
//                                                        group cakewalk-admin"
//   no answer in time                 kDeadlineExceeded
//   the agent's own errors            the Status code behind security.cakewalk.Agent1.Error.*
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "systemd/agent_control.h"

struct sd_bus;

namespace cakewalk::sd {

class AgentClient {
 public:
  // Connects to the system bus. Does not check that the agent runs (the first call does).
  static Result<AgentClient> ConnectSystem();

  AgentClient(AgentClient&&) noexcept = default;
  AgentClient& operator=(AgentClient&&) noexcept = default;
  ~AgentClient();

  Result<StatusSnapshot> GetStatus(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  Result<std::vector<SecretInfo>> ListSecrets(
      std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // A rotation talks to Jira and verifies the new password: allow minutes.
  Result<int64_t> RotateSecret(std::string_view connection, std::string_view name,
                               std::chrono::milliseconds timeout = std::chrono::minutes(5));
  Status Reload(std::chrono::milliseconds timeout = std::chrono::seconds(60));

 private:
  struct BusCloser {
    void operator()(sd_bus* bus) const noexcept;
  };
  explicit AgentClient(sd_bus* bus) : bus_(bus) {}
  std::unique_ptr<sd_bus, BusCloser> bus_;
};

// What `cakewalk-agent status` calls: connect, GetStatus, disconnect.
Result<StatusSnapshot> QueryAgentStatus();

// A snapshot as the lines `cakewalk-agent status` prints ("State: running", ...), each ending in
// a newline. `now` is used for "expires in N days".
std::string FormatStatus(const StatusSnapshot& status, SysTime now);

}  // namespace cakewalk::sd
