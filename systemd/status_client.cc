#include "systemd/status_client.h"

#include <systemd/sd-bus.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "base/time.h"
#include "systemd/bus_api.h"
#include "systemd/sd_handles.h"

namespace cakewalk::sd {
namespace {

uint64_t Usec(std::chrono::milliseconds timeout) {
  return timeout.count() > 0 ? static_cast<uint64_t>(timeout.count()) * 1000u : 1000u;
}

std::string AdminHint() {
  return std::string("run as root or as a member of group ") + kAdminGroup;
}

Status FromBusError(const BusError& error, int r) {
  if (!error.is_set()) {
    return Unavailable(std::string("D-Bus call to the agent failed: ") + std::strerror(-r));
  }
  const std::string name = error.name();
  const std::string message = error.message();
  if (name == "org.freedesktop.DBus.Error.ServiceUnknown" ||
      name == "org.freedesktop.DBus.Error.NameHasNoOwner") {
    return Unavailable(std::string("the agent is not running (name ") + kBusName +
                       " has no owner)");
  }
  if (name == kErrorAccessDenied) {
    // Either the agent refused (its message names the user and the group to join) or the
    // bus policy did (dbus-daemon's message is about match rules: replace it).
    if (message.find(std::string("may not use ") + kBusName) != std::string::npos) {
      return PermissionDenied(message);
    }
    return PermissionDenied("access denied by the system bus policy: " + AdminHint());
  }
  if (name == "org.freedesktop.DBus.Error.NoReply" ||
      name == "org.freedesktop.DBus.Error.Timeout" ||
      name == "org.freedesktop.DBus.Error.TimedOut") {
    return DeadlineExceeded("the agent did not answer in time: " + message);
  }
  if (name == "org.freedesktop.DBus.Error.Disconnected") {
    return Unavailable("the connection to the system bus was lost: " + message);
  }
  if (auto code = CodeForErrorName(name)) return Status(*code, message);
  return Internal(name + ": " + message);
}

Status BadReply(std::string_view what) {
  return Internal("unexpected reply from the agent: " + std::string(what));
}

// Reads a{sv} into a snapshot; unknown keys are skipped, known keys must have their type.
Result<StatusSnapshot> ReadStatus(sd_bus_message* m) {
  StatusSnapshot s;
  bool have_state = false;
  int r = sd_bus_message_enter_container(m, 'a', "{sv}");
  if (r < 0) return BadReply("GetStatus did not return a{sv}");
  while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
    const char* key = nullptr;
    if (sd_bus_message_read(m, "s", &key) < 0) return BadReply("bad status key");
    char type = 0;
    const char* contents = nullptr;
    if (sd_bus_message_peek_type(m, &type, &contents) < 0 || type != 'v' || contents == nullptr) {
      return BadReply("bad status value");
    }
    const std::string k = key;
    const std::string sig = contents;
    auto expect = [&](const char* want) -> Status {
      if (sig != want) {
        return BadReply("status key " + k + " has type " + sig + ", expected " + want);
      }
      return Status::Ok();
    };
    const char* str = nullptr;
    if (k == kStatusState || k == kStatusVersion || k == kStatusCertificateExpiresAt ||
        k == kStatusSyncProgress) {
      CW_RETURN_IF_ERROR(expect("s"));
      if (sd_bus_message_read(m, "v", "s", &str) < 0) return BadReply(k);
      if (k == kStatusState) {
        s.state = str;
        have_state = true;
      } else if (k == kStatusVersion) {
        s.version = str;
      } else if (k == kStatusSyncProgress) {
        s.sync_progress = str;
      } else if (str[0] != '\0') {
        CW_ASSIGN_OR_RETURN(s.certificate_expires_at, ParseRfc3339(str));
      }
    } else if (k == kStatusUptimeSeconds) {
      CW_RETURN_IF_ERROR(expect("t"));
      uint64_t v = 0;
      if (sd_bus_message_read(m, "v", "t", &v) < 0) return BadReply(k);
      s.uptime = std::chrono::seconds(static_cast<int64_t>(v));
    } else if (k == kStatusJobsRunning || k == kStatusResultsPending) {
      CW_RETURN_IF_ERROR(expect("u"));
      uint32_t v = 0;
      if (sd_bus_message_read(m, "v", "u", &v) < 0) return BadReply(k);
      (k == kStatusJobsRunning ? s.jobs_running : s.results_pending) = v;
    } else if (k == kStatusConnections) {
      CW_RETURN_IF_ERROR(expect("a(sss)"));
      if (sd_bus_message_enter_container(m, 'v', "a(sss)") < 0 ||
          sd_bus_message_enter_container(m, 'a', "(sss)") < 0) {
        return BadReply(k);
      }
      const char* a = nullptr;
      const char* b = nullptr;
      const char* c = nullptr;
      while ((r = sd_bus_message_read(m, "(sss)", &a, &b, &c)) > 0) {
        s.connections.push_back({a, b, c});
      }
      if (r < 0 || sd_bus_message_exit_container(m) < 0 || sd_bus_message_exit_container(m) < 0) {
        return BadReply(k);
      }
    } else {
      if (sd_bus_message_skip(m, "v") < 0) return BadReply("cannot skip key " + k);
    }
    if (sd_bus_message_exit_container(m) < 0) return BadReply("bad status entry");
  }
  if (r < 0 || sd_bus_message_exit_container(m) < 0) return BadReply("bad status dictionary");
  if (!have_state) return BadReply("the status has no State");
  return s;
}

}  // namespace

void AgentClient::BusCloser::operator()(sd_bus* bus) const noexcept {
  sd_bus_flush_close_unref(bus);
}

AgentClient::~AgentClient() = default;

Result<AgentClient> AgentClient::ConnectSystem() {
  sd_bus* bus = nullptr;
  const int r = sd_bus_open_system(&bus);
  if (r < 0) {
    const char* address = std::getenv("DBUS_SYSTEM_BUS_ADDRESS");
    return Unavailable("cannot connect to the system bus" +
                       (address != nullptr ? " at " + std::string(address) : std::string()) + ": " +
                       std::strerror(-r) + " (is dbus running?)");
  }
  return AgentClient(bus);
}

Result<StatusSnapshot> AgentClient::GetStatus(std::chrono::milliseconds timeout) {
  BusError error;
  sd_bus_message* call = nullptr;
  int r = sd_bus_message_new_method_call(bus_.get(), &call, kBusName, kObjectPath, kInterface,
                                         "GetStatus");
  MessagePtr request(call);
  if (r < 0) return Internal(std::string("cannot build the call: ") + std::strerror(-r));
  sd_bus_message* raw = nullptr;
  r = sd_bus_call(bus_.get(), call, Usec(timeout), error.get(), &raw);
  MessagePtr reply(raw);
  if (r < 0) return FromBusError(error, r);
  return ReadStatus(raw);
}

Result<std::vector<SecretInfo>> AgentClient::ListSecrets(std::chrono::milliseconds timeout) {
  BusError error;
  sd_bus_message* call = nullptr;
  int r = sd_bus_message_new_method_call(bus_.get(), &call, kBusName, kObjectPath, kInterface,
                                         "ListSecrets");
  MessagePtr request(call);
  if (r < 0) return Internal(std::string("cannot build the call: ") + std::strerror(-r));
  sd_bus_message* raw = nullptr;
  r = sd_bus_call(bus_.get(), call, Usec(timeout), error.get(), &raw);
  MessagePtr reply(raw);
  if (r < 0) return FromBusError(error, r);
  if (sd_bus_message_enter_container(raw, 'a', "(ssxss)") < 0) {
    return BadReply("ListSecrets did not return a(ssxss)");
  }
  std::vector<SecretInfo> out;
  const char* connection = nullptr;
  const char* name = nullptr;
  int64_t version = 0;
  const char* created = nullptr;
  const char* state = nullptr;
  while ((r = sd_bus_message_read(raw, "(ssxss)", &connection, &name, &version, &created, &state)) >
         0) {
    SecretInfo info;
    info.connection = connection;
    info.name = name;
    info.version = version;
    CW_ASSIGN_OR_RETURN(info.created_at, ParseRfc3339(created));
    info.state = state;
    out.push_back(std::move(info));
  }
  if (r < 0 || sd_bus_message_exit_container(raw) < 0) return BadReply("bad secret list");
  return out;
}

Result<int64_t> AgentClient::RotateSecret(std::string_view connection, std::string_view name,
                                          std::chrono::milliseconds timeout) {
  CW_RETURN_IF_ERROR(ValidateName("connection", connection));
  CW_RETURN_IF_ERROR(ValidateName("secret name", name));
  const std::string c(connection);
  const std::string n(name);
  BusError error;
  sd_bus_message* call = nullptr;
  int r = sd_bus_message_new_method_call(bus_.get(), &call, kBusName, kObjectPath, kInterface,
                                         "RotateSecret");
  MessagePtr request(call);
  if (r < 0 || (r = sd_bus_message_append(call, "ss", c.c_str(), n.c_str())) < 0) {
    return Internal(std::string("cannot build the call: ") + std::strerror(-r));
  }
  sd_bus_message* raw = nullptr;
  r = sd_bus_call(bus_.get(), call, Usec(timeout), error.get(), &raw);
  MessagePtr reply(raw);
  if (r < 0) return FromBusError(error, r);
  int64_t version = 0;
  if (sd_bus_message_read(raw, "x", &version) < 0) return BadReply("RotateSecret: expected x");
  return version;
}

Status AgentClient::Reload(std::chrono::milliseconds timeout) {
  BusError error;
  sd_bus_message* call = nullptr;
  int r = sd_bus_message_new_method_call(bus_.get(), &call, kBusName, kObjectPath, kInterface,
                                         "Reload");
  MessagePtr request(call);
  if (r < 0) return Internal(std::string("cannot build the call: ") + std::strerror(-r));
  sd_bus_message* raw = nullptr;
  r = sd_bus_call(bus_.get(), call, Usec(timeout), error.get(), &raw);
  MessagePtr reply(raw);
  if (r < 0) return FromBusError(error, r);
  return Status::Ok();
}

Result<StatusSnapshot> QueryAgentStatus() {
  CW_ASSIGN_OR_RETURN(AgentClient client, AgentClient::ConnectSystem());
  return client.GetStatus();
}

std::string FormatStatus(const StatusSnapshot& s, SysTime now) {
  std::string out;
  auto line = [&out](std::string_view key, std::string_view value) {
    out += key;
    out += ": ";
    out += value;
    out += '\n';
  };
  line("State", s.state);
  line("Version", s.version);
  const int64_t up = s.uptime.count();
  line("Uptime", std::to_string(up / 86400) + "d " + std::to_string((up / 3600) % 24) + "h " +
                     std::to_string((up / 60) % 60) + "m " + std::to_string(up % 60) + "s");
  line("Jobs running", std::to_string(s.jobs_running));
  line("Results pending", std::to_string(s.results_pending));
  if (s.certificate_expires_at) {
    const auto hours = std::chrono::duration_cast<std::chrono::hours>(
                           SecondsBetween(now, *s.certificate_expires_at))
                           .count();
    std::string left = " (EXPIRED)";
    if (hours >= 48) {
      left = " (in " + std::to_string(hours / 24) + " days)";
    } else if (*s.certificate_expires_at > now) {
      left = " (in " + std::to_string(hours) + " hours)";
    }
    line("Certificate expires", FormatRfc3339(*s.certificate_expires_at) + left);
  } else {
    line("Certificate expires", "unknown (not enrolled?)");
  }
  for (const ConnectionStatus& c : s.connections) {
    line("Connection " + c.name, c.detail.empty() ? c.state : c.state + " (" + c.detail + ")");
  }
  if (!s.sync_progress.empty()) line("Sync", s.sync_progress);
  return out;
}

}  // namespace cakewalk::sd
