#include "systemd/bus_service.h"

#include <grp.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <vector>

#include "systemd/sd_handles.h"

namespace cakewalk::sd {

struct BusService::Impl : std::enable_shared_from_this<BusService::Impl> {
  Impl(EventLoop& l, AgentControl& c, Options o)
      : loop(l), control(c), options(std::move(o)), handle(l.handle()) {}

  EventLoop& loop;
  AgentControl& control;
  const Options options;
  const LoopHandle handle;
  BusPtr bus;
  SlotPtr vtable_slot;
  SlotPtr filter_slot;
  uid_t own_uid = 0;
  std::optional<gid_t> admin_gid;
  AgentProperties properties;
  uint64_t next_request = 1;
  std::map<uint64_t, MessagePtr> pending_rotations;
  // The last authorised Properties call (GetAll runs every getter for one message).
  uint64_t authorised_cookie = 0;
  std::string authorised_sender;

  struct Caller {
    uint32_t uid = 0;
    std::vector<uint32_t> gids;
  };

  Result<Caller> Credentials(const char* sender);
  Status Authorize(sd_bus_message* m, std::string_view what);
  void FinishRotation(uint64_t id, Result<int64_t> result);
  void ApplyProperties(AgentProperties p);
  void EmitJobFinished(const std::string& job_id, const std::string& type,
                       const std::string& status);
};

namespace {

using Impl = BusService::Impl;

// Sets `error` from a non-OK status; the handler returns the (negative) result so that sd-bus
// sends it as the reply.
int ReplyError(sd_bus_error* error, const Status& st) {
  const std::string name = st.code() == Code::kPermissionDenied && st.reason() == "access_denied"
                               ? std::string(kErrorAccessDenied)
                               : ErrorNameFor(st.code());
  return sd_bus_error_set(error, name.c_str(), st.message().c_str());
}

int ReplyErrno(sd_bus_error* error, int r, std::string_view what) {
  return sd_bus_error_setf(error, ErrorNameFor(Code::kInternal).c_str(), "%.*s: %s",
                           static_cast<int>(what.size()), what.data(), std::strerror(-r));
}

std::string Timestamp(const std::optional<SysTime>& t) { return t ? FormatRfc3339(*t) : ""; }

// a{sv} entry helpers: each returns < 0 on failure.
int OpenEntry(sd_bus_message* m, const char* key, const char* signature) {
  int r = sd_bus_message_open_container(m, 'e', "sv");
  if (r < 0) return r;
  r = sd_bus_message_append(m, "s", key);
  if (r < 0) return r;
  return sd_bus_message_open_container(m, 'v', signature);
}

int CloseEntry(sd_bus_message* m) {
  int r = sd_bus_message_close_container(m);
  if (r < 0) return r;
  return sd_bus_message_close_container(m);
}

template <class T>
int AppendEntry(sd_bus_message* m, const char* key, const char* signature, T value) {
  int r = OpenEntry(m, key, signature);
  if (r < 0) return r;
  r = sd_bus_message_append_basic(m, signature[0], &value);
  if (r < 0) return r;
  return CloseEntry(m);
}

int AppendStringEntry(sd_bus_message* m, const char* key, const std::string& value) {
  int r = OpenEntry(m, key, "s");
  if (r < 0) return r;
  r = sd_bus_message_append(m, "s", value.c_str());
  if (r < 0) return r;
  return CloseEntry(m);
}

int AppendStatus(sd_bus_message* m, const StatusSnapshot& s) {
  int r = sd_bus_message_open_container(m, 'a', "{sv}");
  if (r < 0) return r;
  if ((r = AppendStringEntry(m, kStatusState, s.state)) < 0) return r;
  if ((r = AppendStringEntry(m, kStatusVersion, s.version)) < 0) return r;
  const uint64_t uptime = s.uptime.count() > 0 ? static_cast<uint64_t>(s.uptime.count()) : 0u;
  if ((r = AppendEntry<uint64_t>(m, kStatusUptimeSeconds, "t", uptime)) < 0) return r;
  if ((r = AppendEntry<uint32_t>(m, kStatusJobsRunning, "u", s.jobs_running)) < 0) return r;
  if ((r = AppendEntry<uint32_t>(m, kStatusResultsPending, "u", s.results_pending)) < 0) return r;
  if ((r = AppendStringEntry(m, kStatusCertificateExpiresAt, Timestamp(s.certificate_expires_at))) <
      0) {
    return r;
  }
  if ((r = OpenEntry(m, kStatusConnections, "a(sss)")) < 0) return r;
  if ((r = sd_bus_message_open_container(m, 'a', "(sss)")) < 0) return r;
  for (const ConnectionStatus& c : s.connections) {
    r = sd_bus_message_append(m, "(sss)", c.name.c_str(), c.state.c_str(), c.detail.c_str());
    if (r < 0) return r;
  }
  if ((r = sd_bus_message_close_container(m)) < 0) return r;
  if ((r = CloseEntry(m)) < 0) return r;
  if ((r = AppendStringEntry(m, kStatusSyncProgress, s.sync_progress)) < 0) return r;
  return sd_bus_message_close_container(m);
}

// Every handler is a C callback: nothing may throw out of it.
template <class F>
int Guarded(sd_bus_error* error, F&& body) noexcept {
  try {
    return body();
  } catch (const std::exception& e) {
    return sd_bus_error_setf(error, ErrorNameFor(Code::kInternal).c_str(), "internal error: %s",
                             e.what());
  } catch (...) {
    return sd_bus_error_set(error, ErrorNameFor(Code::kInternal).c_str(), "internal error");
  }
}

int MethodGetStatus(sd_bus_message* m, void* userdata, sd_bus_error* error) noexcept {
  auto* impl = static_cast<Impl*>(userdata);
  return Guarded(error, [&]() -> int {
    if (Status st = impl->Authorize(m, "GetStatus"); !st.ok()) return ReplyError(error, st);
    StatusSnapshot snapshot = impl->control.GetStatus();
    if (snapshot.version.empty()) snapshot.version = impl->options.version;
    sd_bus_message* raw = nullptr;
    int r = sd_bus_message_new_method_return(m, &raw);
    if (r < 0) return ReplyErrno(error, r, "cannot build the reply");
    MessagePtr reply(raw);
    if ((r = AppendStatus(reply.get(), snapshot)) < 0) {
      return ReplyErrno(error, r, "cannot build the reply");
    }
    return sd_bus_send(nullptr, reply.get(), nullptr);
  });
}

int MethodListSecrets(sd_bus_message* m, void* userdata, sd_bus_error* error) noexcept {
  auto* impl = static_cast<Impl*>(userdata);
  return Guarded(error, [&]() -> int {
    if (Status st = impl->Authorize(m, "ListSecrets"); !st.ok()) return ReplyError(error, st);
    Result<std::vector<SecretInfo>> secrets = impl->control.ListSecrets();
    if (!secrets.ok()) return ReplyError(error, secrets.status());
    sd_bus_message* raw = nullptr;
    int r = sd_bus_message_new_method_return(m, &raw);
    if (r < 0) return ReplyErrno(error, r, "cannot build the reply");
    MessagePtr reply(raw);
    r = sd_bus_message_open_container(reply.get(), 'a', "(ssxss)");
    for (const SecretInfo& s : *secrets) {
      if (r < 0) break;
      const std::string created = FormatRfc3339(s.created_at);
      r = sd_bus_message_append(reply.get(), "(ssxss)", s.connection.c_str(), s.name.c_str(),
                                static_cast<int64_t>(s.version), created.c_str(), s.state.c_str());
    }
    if (r >= 0) r = sd_bus_message_close_container(reply.get());
    if (r < 0) return ReplyErrno(error, r, "cannot build the reply");
    return sd_bus_send(nullptr, reply.get(), nullptr);
  });
}

int MethodRotateSecret(sd_bus_message* m, void* userdata, sd_bus_error* error) noexcept {
  auto* impl = static_cast<Impl*>(userdata);
  return Guarded(error, [&]() -> int {
    const char* connection = nullptr;
    const char* name = nullptr;
    int r = sd_bus_message_read(m, "ss", &connection, &name);
    if (r < 0) return sd_bus_error_set(error, kErrorInvalidArgs, "expected (ss): connection, name");
    if (Status st = ValidateName("connection", connection); !st.ok()) {
      return ReplyError(error, st);
    }
    if (Status st = ValidateName("secret name", name); !st.ok()) return ReplyError(error, st);
    if (Status st = impl->Authorize(m, "RotateSecret"); !st.ok()) return ReplyError(error, st);

    const uint64_t id = impl->next_request++;
    impl->pending_rotations.emplace(id, MessagePtr(sd_bus_message_ref(m)));
    std::weak_ptr<Impl> weak = impl->weak_from_this();
    LoopHandle handle = impl->handle;
    Reply<int64_t> reply([weak, handle, id](Result<int64_t> result) {
      handle.Post([weak, id, result]() {
        if (auto self = weak.lock()) self->FinishRotation(id, result);
      });
    });
    impl->loop.log().Log(Severity::kInfo, event::kSecretRotation,
                         "secret rotation requested over D-Bus",
                         {{"CONNECTION", connection}, {"SECRET_NAME", name}});
    impl->control.RotateSecret(connection, name, std::move(reply));
    return 1;  // the reply comes later, from FinishRotation
  });
}

int MethodReload(sd_bus_message* m, void* userdata, sd_bus_error* error) noexcept {
  auto* impl = static_cast<Impl*>(userdata);
  return Guarded(error, [&]() -> int {
    if (Status st = impl->Authorize(m, "Reload"); !st.ok()) return ReplyError(error, st);
    if (Status st = impl->loop.Reload(); !st.ok()) return ReplyError(error, st);
    return sd_bus_reply_method_return(m, nullptr);
  });
}

// Property getters. Reads through org.freedesktop.DBus.Properties are authorised like methods;
// when sd-bus calls a getter to build PropertiesChanged there is no such call to authorise.
int AuthorizePropertyRead(sd_bus* bus, Impl* impl, sd_bus_error* error) {
  sd_bus_message* current = sd_bus_get_current_message(bus);
  if (current == nullptr ||
      sd_bus_message_is_method_call(current, "org.freedesktop.DBus.Properties", nullptr) <= 0) {
    return 0;
  }
  if (Status st = impl->Authorize(current, "property read"); !st.ok()) {
    return ReplyError(error, st);
  }
  return 0;
}

int GetVersion(sd_bus* bus, const char*, const char*, const char*, sd_bus_message* reply,
               void* userdata, sd_bus_error* error) noexcept {
  auto* impl = static_cast<Impl*>(userdata);
  return Guarded(error, [&]() -> int {
    if (int r = AuthorizePropertyRead(bus, impl, error); r < 0) return r;
    return sd_bus_message_append(reply, "s", impl->options.version.c_str());
  });
}

int GetState(sd_bus* bus, const char*, const char*, const char*, sd_bus_message* reply,
             void* userdata, sd_bus_error* error) noexcept {
  auto* impl = static_cast<Impl*>(userdata);
  return Guarded(error, [&]() -> int {
    if (int r = AuthorizePropertyRead(bus, impl, error); r < 0) return r;
    return sd_bus_message_append(reply, "s", impl->properties.state.c_str());
  });
}

int GetCertificateExpiresAt(sd_bus* bus, const char*, const char*, const char*,
                            sd_bus_message* reply, void* userdata, sd_bus_error* error) noexcept {
  auto* impl = static_cast<Impl*>(userdata);
  return Guarded(error, [&]() -> int {
    if (int r = AuthorizePropertyRead(bus, impl, error); r < 0) return r;
    const std::string value = Timestamp(impl->properties.certificate_expires_at);
    return sd_bus_message_append(reply, "s", value.c_str());
  });
}

int GetJobsRunning(sd_bus* bus, const char*, const char*, const char*, sd_bus_message* reply,
                   void* userdata, sd_bus_error* error) noexcept {
  auto* impl = static_cast<Impl*>(userdata);
  return Guarded(error, [&]() -> int {
    if (int r = AuthorizePropertyRead(bus, impl, error); r < 0) return r;
    return sd_bus_message_append(reply, "u", impl->properties.jobs_running);
  });
}

int GetResultsPending(sd_bus* bus, const char*, const char*, const char*, sd_bus_message* reply,
                      void* userdata, sd_bus_error* error) noexcept {
  auto* impl = static_cast<Impl*>(userdata);
  return Guarded(error, [&]() -> int {
    if (int r = AuthorizePropertyRead(bus, impl, error); r < 0) return r;
    return sd_bus_message_append(reply, "u", impl->properties.results_pending);
  });
}

// SD_BUS_VTABLE_UNPRIVILEGED on the interface and on every method: without it sd-bus itself
// refuses callers that are neither root nor our UID, before our own check runs. sd-bus refuses
// the flag (EINVAL) on read-only properties and signals: property reads are never subject to that
// check, and signals are not calls.
constexpr uint64_t kUnprivileged = SD_BUS_VTABLE_UNPRIVILEGED;
constexpr uint64_t kEmitsChange = SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE;

const sd_bus_vtable kVtable[] = {
    SD_BUS_VTABLE_START(kUnprivileged),
    SD_BUS_METHOD_WITH_ARGS("GetStatus", SD_BUS_NO_ARGS, SD_BUS_RESULT("a{sv}", status),
                            MethodGetStatus, kUnprivileged),
    SD_BUS_METHOD_WITH_ARGS("ListSecrets", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(ssxss)", secrets),
                            MethodListSecrets, kUnprivileged),
    SD_BUS_METHOD_WITH_ARGS("RotateSecret", SD_BUS_ARGS("s", connection, "s", name),
                            SD_BUS_RESULT("x", version), MethodRotateSecret, kUnprivileged),
    SD_BUS_METHOD_WITH_ARGS("Reload", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, MethodReload,
                            kUnprivileged),
    SD_BUS_PROPERTY("Version", "s", GetVersion, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("State", "s", GetState, 0, kEmitsChange),
    SD_BUS_PROPERTY("CertificateExpiresAt", "s", GetCertificateExpiresAt, 0, kEmitsChange),
    SD_BUS_PROPERTY("JobsRunning", "u", GetJobsRunning, 0, kEmitsChange),
    SD_BUS_PROPERTY("ResultsPending", "u", GetResultsPending, 0, kEmitsChange),
    SD_BUS_SIGNAL_WITH_ARGS("JobFinished", SD_BUS_ARGS("s", job_id, "s", type, "s", status), 0),
    SD_BUS_VTABLE_END,
};

// Local signal synthesised by sd-bus when the connection drops; runs before
// exit-on-disconnect ends the loop, and records why it ended.
int OnBusMessage(sd_bus_message* m, void* userdata, sd_bus_error*) noexcept {
  if (sd_bus_message_is_signal(m, "org.freedesktop.DBus.Local", "Disconnected") > 0) {
    auto* impl = static_cast<Impl*>(userdata);
    try {
      impl->loop.log().Log(Severity::kError, event::kAgentLifecycle,
                           "lost the connection to the system bus; exiting so that systemd "
                           "restarts the agent");
      impl->loop.Exit({LoopExit::Reason::kBusDisconnected, 0,
                       Unavailable("the connection to the system bus was lost")});
    } catch (...) {
    }
  }
  return 0;
}

std::optional<gid_t> LookUpGroup(const std::string& name) {
  if (name.empty()) return std::nullopt;
  std::vector<char> buf(16384);
  group gr{};
  group* result = nullptr;
  while (true) {
    const int r = getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &result);
    if (r == ERANGE && buf.size() < (1u << 22)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    if (r != 0 || result == nullptr) return std::nullopt;
    return result->gr_gid;
  }
}

}  // namespace

Result<Impl::Caller> Impl::Credentials(const char* sender) {
  BusError error;
  sd_bus_message* raw = nullptr;
  int r = sd_bus_call_method(bus.get(), "org.freedesktop.DBus", "/org/freedesktop/DBus",
                             "org.freedesktop.DBus", "GetConnectionCredentials", error.get(), &raw,
                             "s", sender);
  MessagePtr reply(raw);
  if (r < 0) {
    return Unavailable("cannot get the caller's credentials from the bus: " +
                       (error.is_set() ? error.message() : std::string(std::strerror(-r))));
  }
  Caller caller;
  bool have_uid = false;
  if ((r = sd_bus_message_enter_container(raw, 'a', "{sv}")) < 0) {
    return Internal("malformed GetConnectionCredentials reply");
  }
  while ((r = sd_bus_message_enter_container(raw, 'e', "sv")) > 0) {
    const char* key = nullptr;
    if ((r = sd_bus_message_read(raw, "s", &key)) < 0) break;
    if (std::strcmp(key, "UnixUserID") == 0) {
      if ((r = sd_bus_message_read(raw, "v", "u", &caller.uid)) < 0) break;
      have_uid = true;
    } else if (std::strcmp(key, "UnixGroupIDs") == 0) {
      if ((r = sd_bus_message_enter_container(raw, 'v', "au")) < 0) break;
      const void* data = nullptr;
      size_t size = 0;
      if ((r = sd_bus_message_read_array(raw, 'u', &data, &size)) < 0) break;
      const auto* gids = static_cast<const uint32_t*>(data);
      caller.gids.assign(gids, gids + size / sizeof(uint32_t));
      if ((r = sd_bus_message_exit_container(raw)) < 0) break;
    } else {
      if ((r = sd_bus_message_skip(raw, "v")) < 0) break;
    }
    if ((r = sd_bus_message_exit_container(raw)) < 0) break;
  }
  if (r < 0) return Internal("malformed GetConnectionCredentials reply");
  if (!have_uid) return Unavailable("the bus did not report the caller's user id");
  return caller;
}

Status Impl::Authorize(sd_bus_message* m, std::string_view what) {
  const char* sender = sd_bus_message_get_sender(m);
  if (sender == nullptr) {
    return Status(Code::kPermissionDenied, "access denied: the caller has no bus name",
                  "access_denied");
  }
  const uint64_t cookie = [&] {
    uint64_t c = 0;
    return sd_bus_message_get_cookie(m, &c) >= 0 ? c : 0;
  }();
  if (cookie != 0 && cookie == authorised_cookie && authorised_sender == sender) {
    return Status::Ok();
  }
  Result<Caller> caller = Credentials(sender);
  if (!caller.ok()) {
    return Status(Code::kPermissionDenied, "access denied: " + caller.status().message(),
                  "access_denied");
  }
  const bool in_group = admin_gid && std::find(caller->gids.begin(), caller->gids.end(),
                                               *admin_gid) != caller->gids.end();
  if (caller->uid == 0 || caller->uid == own_uid || in_group) {
    authorised_cookie = cookie;
    authorised_sender = sender;
    return Status::Ok();
  }
  loop.log().Log(Severity::kWarning, event::kAgentLifecycle,
                 "refused a D-Bus call from an unauthorised user",
                 {{"CALLER_UID", std::to_string(caller->uid)}, {"DBUS_MEMBER", std::string(what)}});
  return Status(Code::kPermissionDenied,
                "access denied: uid " + std::to_string(caller->uid) + " may not use " + kBusName +
                    "; run as root or as a member of group " + options.admin_group,
                "access_denied");
}

void Impl::FinishRotation(uint64_t id, Result<int64_t> result) {
  auto it = pending_rotations.find(id);
  if (it == pending_rotations.end()) return;
  MessagePtr call = std::move(it->second);
  pending_rotations.erase(it);
  if (result.ok()) {
    (void)sd_bus_reply_method_return(call.get(), "x", static_cast<int64_t>(*result));
    return;
  }
  const Status& st = result.status();
  BusError error;
  ReplyError(error.get(), st);
  (void)sd_bus_reply_method_error(call.get(), error.get());
}

void Impl::ApplyProperties(AgentProperties p) {
  std::vector<const char*> changed;
  if (p.state != properties.state) changed.push_back("State");
  if (p.certificate_expires_at != properties.certificate_expires_at) {
    changed.push_back("CertificateExpiresAt");
  }
  if (p.jobs_running != properties.jobs_running) changed.push_back("JobsRunning");
  if (p.results_pending != properties.results_pending) changed.push_back("ResultsPending");
  properties = std::move(p);
  if (changed.empty()) return;
  changed.push_back(nullptr);
  (void)sd_bus_emit_properties_changed_strv(bus.get(), kObjectPath, kInterface,
                                            const_cast<char**>(changed.data()));
}

void Impl::EmitJobFinished(const std::string& job_id, const std::string& type,
                           const std::string& status) {
  (void)sd_bus_emit_signal(bus.get(), kObjectPath, kInterface, "JobFinished", "sss", job_id.c_str(),
                           type.c_str(), status.c_str());
}

BusService::BusService(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

BusService::~BusService() {
  if (!impl_) return;
  // Unanswered rotations get an answer rather than a timeout.
  for (auto& [id, call] : impl_->pending_rotations) {
    (void)sd_bus_reply_method_errorf(call.get(), ErrorNameFor(Code::kUnavailable).c_str(),
                                     "the agent is shutting down");
  }
  impl_->pending_rotations.clear();
  impl_->vtable_slot.reset();
  impl_->filter_slot.reset();
  if (impl_->bus) {
    (void)sd_bus_detach_event(impl_->bus.get());
    impl_->bus.reset();  // flushes and closes
  }
}

Result<std::unique_ptr<BusService>> BusService::Start(EventLoop& loop, AgentControl& control,
                                                      Options options) {
  if (!loop.InLoopThread()) {
    return FailedPrecondition("BusService::Start must run on the event loop's thread");
  }
  auto impl = std::make_shared<Impl>(loop, control, std::move(options));
  impl->own_uid = geteuid();
  impl->admin_gid = LookUpGroup(impl->options.admin_group);
  if (!impl->admin_gid) {
    loop.log().Log(Severity::kWarning, event::kAgentLifecycle,
                   "group " + impl->options.admin_group +
                       " does not exist; only root and the agent's user may use the D-Bus API");
  }

  sd_bus* raw = nullptr;
  int r = sd_bus_open_system(&raw);
  if (r < 0) {
    const char* address = std::getenv("DBUS_SYSTEM_BUS_ADDRESS");
    return Unavailable("cannot connect to the system bus" +
                       (address != nullptr ? " at " + std::string(address) : std::string()) + ": " +
                       std::strerror(-r) + " (is dbus running?)");
  }
  impl->bus.reset(raw);
  sd_bus* bus = impl->bus.get();

  sd_bus_slot* slot = nullptr;
  r = sd_bus_add_object_vtable(bus, &slot, kObjectPath, kInterface, kVtable, impl.get());
  if (r < 0) return Internal(std::string("cannot export the D-Bus object: ") + std::strerror(-r));
  impl->vtable_slot.reset(slot);
  r = sd_bus_add_filter(bus, &slot, OnBusMessage, impl.get());
  if (r < 0) return Internal(std::string("cannot add a bus filter: ") + std::strerror(-r));
  impl->filter_slot.reset(slot);
  r = sd_bus_set_exit_on_disconnect(bus, 1);
  if (r < 0) return Internal(std::string("sd_bus_set_exit_on_disconnect: ") + std::strerror(-r));
  r = sd_bus_attach_event(bus, loop.event(), SD_EVENT_PRIORITY_NORMAL);
  if (r < 0)
    return Internal(std::string("cannot attach the bus to the loop: ") + std::strerror(-r));

  BusError error;
  r = sd_bus_request_name(bus, kBusName, 0);
  if (r == -EEXIST) {
    return AlreadyExists(std::string("another process owns the bus name ") + kBusName +
                         " (is the agent already running?)");
  }
  if (r == -EACCES || r == -EPERM) {
    return PermissionDenied("the bus policy does not let uid " + std::to_string(impl->own_uid) +
                            " own " + kBusName + " (install " + kBusName +
                            ".conf into /usr/share/dbus-1/system.d and reload dbus)");
  }
  if (r < 0) {
    return Unavailable(std::string("cannot take the bus name ") + kBusName + ": " +
                       std::strerror(-r));
  }
  loop.log().Log(Severity::kInfo, event::kAgentLifecycle,
                 std::string("D-Bus service ready: ") + kBusName);
  return std::unique_ptr<BusService>(new BusService(std::move(impl)));
}

void BusService::SetProperties(AgentProperties properties) {
  std::weak_ptr<Impl> weak = impl_;
  impl_->handle.Post([weak, p = std::move(properties)]() {
    if (auto self = weak.lock()) self->ApplyProperties(p);
  });
}

void BusService::EmitJobFinished(std::string job_id, std::string type, std::string status) {
  std::weak_ptr<Impl> weak = impl_;
  impl_->handle.Post(
      [weak, job_id = std::move(job_id), type = std::move(type), status = std::move(status)]() {
        if (auto self = weak.lock()) self->EmitJobFinished(job_id, type, status);
      });
}

std::string BusService::unique_name() const {
  const char* name = nullptr;
  if (sd_bus_get_unique_name(impl_->bus.get(), &name) < 0 || name == nullptr) return "";
  return name;
}

std::optional<gid_t> BusService::admin_gid() const { return impl_->admin_gid; }

}  // namespace cakewalk::sd
