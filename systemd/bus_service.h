// The agent's D-Bus service on the system bus: security.cakewalk.Agent1 (API in bus_api.h).
//
// The service only translates: each method reads its arguments, validates them, authorises the
// caller, calls AgentControl and maps the returned Status to a D-Bus error. The interface and
// every method carry SD_BUS_VTABLE_UNPRIVILEGED (otherwise sd-bus itself rejects every caller
// that is neither root nor the agent's user, whatever the bus policy says; sd-bus refuses the
// flag on read-only properties and signals, where it has no meaning), and each handler
// authorises: the caller's UID is 0 or the agent's own UID, or its groups include `admin_group`.
// UID and groups come from the bus daemon (org.freedesktop.DBus.GetConnectionCredentials), not
// from /proc, which ProtectProc=invisible hides (sd-bus would then silently report no
// supplementary groups).
// Property reads through org.freedesktop.DBus.Properties are authorised the same way. The bus
// policy file (security.cakewalk.Agent1.conf) enforces the same rule in dbus-daemon.
//
// When the bus connection drops (dbus-daemon restarted), the event loop ends with
// LoopExit::Reason::kBusDisconnected, and the daemon exits non-zero so that systemd restarts it:
// a service on a dead connection would otherwise keep pinging the watchdog while unreachable.
// When the loop ends for any reason, sd-bus flushes and closes the connection, which releases the
// bus name.
//
// Threading: Start, the destructor and unique_name() on the loop thread. SetProperties and
// EmitJobFinished from any thread: they post to the loop and return at once (work posted after
// Run() returned is dropped). The BusService object itself must outlive the threads that call
// them: join the workers first, then destroy the service. See event_loop.h for the loop.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>

#include "base/status.h"
#include "systemd/agent_control.h"
#include "systemd/bus_api.h"
#include "systemd/event_loop.h"

namespace cakewalk::sd {

class BusService {
 public:
  struct Options {
    std::string version;                    // the Version property and GetStatus' fallback
    std::string admin_group = kAdminGroup;  // members may call; a missing group is logged
  };

  // Connects to the system bus (sd_bus_open_system: DBUS_SYSTEM_BUS_ADDRESS when set, else the
  // standard socket), exports the object, attaches to `loop` and takes the bus name. When this
  // returns OK the name is owned: the daemon may then send READY=1. Errors: kUnavailable (no
  // bus), kAlreadyExists (another process owns the name), kPermissionDenied (the bus policy
  // does not let this user own it: is the policy file installed and dbus reloaded?).
  // `loop` and `control` must outlive the service.
  static Result<std::unique_ptr<BusService>> Start(EventLoop& loop, AgentControl& control,
                                                   Options options);
  ~BusService();
  BusService(const BusService&) = delete;
  BusService& operator=(const BusService&) = delete;

  // Thread-safe. Publishes new property values; PropertiesChanged is emitted for those that
  // differ from the previous values (none when nothing changed).
  void SetProperties(AgentProperties properties);
  // Thread-safe. Emits the JobFinished(job_id, type, status) signal.
  void EmitJobFinished(std::string job_id, std::string type, std::string status);

  // Loop thread. Our unique bus name (":1.42").
  std::string unique_name() const;
  // The group id behind Options::admin_group, if that group exists.
  std::optional<gid_t> admin_gid() const;

  struct Impl;

 private:
  explicit BusService(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace cakewalk::sd
