// Test-only program: a D-Bus client (or a small agent) that first drops to another user, so the
// tests can check what the bus policy and the agent's own authorisation let other users do.
//
//   bus_helper [--uid N] [--gid N] [--groups G1,G2] COMMAND ...
//     call METHOD [ARG...]   call security.cakewalk.Agent1.METHOD with string arguments
//     get PROPERTY           read a property
//     introspect             org.freedesktop.DBus.Introspectable.Introspect on the agent
//     own                    try to take the bus name security.cakewalk.Agent1
//     status                 QueryAgentStatus() through the library's client
//     listen SECONDS         print the agent's signals until the test's barrier signal arrives
//     serve                  run a BusService with a fixed fake agent until SIGTERM or bus loss
// Output: one line "OK <text>" or "ERROR <name>\t<message>" (listen/serve: see below).
// Privileges are dropped in the order setgroups, setgid, setuid, and checked.
#include <grp.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "base/log.h"
#include "systemd/agent_control.h"
#include "systemd/bus_api.h"
#include "systemd/bus_service.h"
#include "systemd/event_loop.h"
#include "systemd/notify.h"
#include "systemd/sd_handles.h"
#include "systemd/status_client.h"

namespace {

using namespace cakewalk;

int Fail(const std::string& name, const std::string& message) {
  std::printf("ERROR %s\t%s\n", name.c_str(), message.c_str());
  std::fflush(stdout);
  return 1;
}

int Ok(const std::string& text) {
  std::printf("OK %s\n", text.c_str());
  std::fflush(stdout);
  return 0;
}

int FailBus(const sd_bus_error& e, int r) {
  if (sd_bus_error_is_set(&e)) return Fail(e.name, e.message != nullptr ? e.message : "");
  return Fail("errno", std::strerror(-r));
}

bool DropPrivileges(long uid, long gid, const std::vector<gid_t>& groups) {
  if (uid < 0) return true;
  if (setgroups(groups.size(), groups.data()) != 0) return false;
  if (setgid(static_cast<gid_t>(gid)) != 0) return false;
  if (setuid(static_cast<uid_t>(uid)) != 0) return false;
  return getuid() == static_cast<uid_t>(uid) && geteuid() == static_cast<uid_t>(uid) &&
         setuid(0) != 0;  // and no way back
}

class FixedAgent final : public sd::AgentControl {
 public:
  sd::StatusSnapshot GetStatus() override {
    sd::StatusSnapshot s;
    s.state = "running";
    s.version = "served-by-helper";
    return s;
  }
  Result<std::vector<sd::SecretInfo>> ListSecrets() override {
    return std::vector<sd::SecretInfo>{};
  }
  void RotateSecret(std::string, std::string, sd::Reply<int64_t> done) override {
    std::move(done).Send(int64_t{1});
  }
  Status Reload() override { return Status::Ok(); }
};

int Serve() {
  StderrLogSink log;
  auto loop = sd::EventLoop::Create(sd::Notifier::FromEnvironment(), log);
  if (!loop.ok()) return Fail("loop", loop.status().ToString());
  FixedAgent agent;
  (*loop)->SetReloadHandler([&agent] { return agent.Reload(); });
  auto service = sd::BusService::Start(**loop, agent, {"helper-1", "staff"});
  if (!service.ok())
    return Fail(std::string(CodeName(service.status().code())), service.status().message());
  std::printf("SERVING %s\n", (*service)->unique_name().c_str());
  std::fflush(stdout);
  const sd::LoopExit exit = (*loop)->Run();
  service->reset();
  std::printf("EXIT %s\n", std::string(sd::ReasonName(exit.reason)).c_str());
  std::fflush(stdout);
  switch (exit.reason) {
    case sd::LoopExit::Reason::kSignal:
      return 0;
    case sd::LoopExit::Reason::kBusDisconnected:
      return 42;
    default:
      return 3;
  }
}

int Listen(sd_bus* bus, int seconds) {
  auto on_signal = [](sd_bus_message* m, void*, sd_bus_error*) -> int {
    const char* a = "";
    const char* b = "";
    const char* c = "";
    if (sd_bus_message_is_signal(m, sd::kInterface, "JobFinished") > 0) {
      sd_bus_message_read(m, "sss", &a, &b, &c);
      std::printf("SIGNAL JobFinished %s %s %s\n", a, b, c);
    } else if (sd_bus_message_is_signal(m, "security.cakewalk.Test", "Barrier") > 0) {
      std::printf("BARRIER\n");
      std::fflush(stdout);
      std::exit(0);
    } else {
      std::printf("SIGNAL %s\n", sd_bus_message_get_member(m));
    }
    std::fflush(stdout);
    return 0;
  };
  int r = sd_bus_match_signal(bus, nullptr, nullptr, sd::kObjectPath, nullptr, nullptr, on_signal,
                              nullptr);
  if (r >= 0) {
    r = sd_bus_match_signal(bus, nullptr, nullptr, "/security/cakewalk/Test",
                            "security.cakewalk.Test", "Barrier", on_signal, nullptr);
  }
  if (r < 0) return Fail("match", std::strerror(-r));
  std::printf("LISTENING\n");
  std::fflush(stdout);
  const uint64_t deadline_usec = static_cast<uint64_t>(seconds) * 1000000u;
  uint64_t waited = 0;
  while (waited < deadline_usec) {
    r = sd_bus_process(bus, nullptr);
    if (r < 0) return Fail("process", std::strerror(-r));
    if (r > 0) continue;
    sd_bus_wait(bus, 100000);
    waited += 100000;
  }
  std::printf("TIMEOUT\n");
  std::fflush(stdout);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  long uid = -1;
  long gid = -1;
  std::vector<gid_t> groups;
  int i = 1;
  for (; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--uid") {
      uid = std::strtol(argv[i + 1], nullptr, 10);
    } else if (flag == "--gid") {
      gid = std::strtol(argv[i + 1], nullptr, 10);
    } else if (flag == "--groups") {
      std::istringstream in(argv[i + 1]);
      std::string g;
      while (std::getline(in, g, ',')) {
        if (!g.empty()) groups.push_back(static_cast<gid_t>(std::strtoul(g.c_str(), nullptr, 10)));
      }
    } else {
      break;
    }
  }
  if (i >= argc) return Fail("usage", "no command");
  if (!DropPrivileges(uid, gid, groups)) return Fail("setuid", std::strerror(errno));
  const std::string command = argv[i++];
  std::vector<std::string> args(argv + i, argv + argc);

  if (command == "serve") return Serve();
  if (command == "status") {
    auto s = sd::QueryAgentStatus();
    if (!s.ok()) return Fail(std::string(CodeName(s.status().code())), s.status().message());
    return Ok(s->state + " " + s->version);
  }

  sd_bus* raw_bus = nullptr;
  int r = sd_bus_open_system(&raw_bus);
  if (r < 0) return Fail("connect", std::strerror(-r));
  sd::BusPtr bus_owner(raw_bus);
  sd_bus* bus = raw_bus;
  sd::BusError error_owner;
  sd_bus_error& error = *error_owner.get();
  sd_bus_message* raw_reply = nullptr;
  sd_bus_message** reply = &raw_reply;
  struct ReplyFree {
    sd_bus_message** m;
    ~ReplyFree() { sd_bus_message_unref(*m); }
  } reply_free{reply};

  if (command == "listen") return Listen(bus, args.empty() ? 10 : std::atoi(args[0].c_str()));
  if (command == "own") {
    r = sd_bus_request_name(bus, sd::kBusName, 0);
    if (r < 0) return Fail("errno", std::strerror(-r));
    return Ok("owned");
  }
  if (command == "introspect") {
    r = sd_bus_call_method(bus, sd::kBusName, sd::kObjectPath,
                           "org.freedesktop.DBus.Introspectable", "Introspect", &error, reply, "");
    if (r < 0) return FailBus(error, r);
    const char* xml = nullptr;
    sd_bus_message_read(*reply, "s", &xml);
    return Ok(std::to_string(std::strlen(xml)));
  }
  if (command == "get" && args.size() == 1) {
    r = sd_bus_call_method(bus, sd::kBusName, sd::kObjectPath, "org.freedesktop.DBus.Properties",
                           "Get", &error, reply, "ss", sd::kInterface, args[0].c_str());
    if (r < 0) return FailBus(error, r);
    std::printf("OK\n");
    std::fflush(stdout);
    return 0;
  }
  if (command == "call" && !args.empty()) {
    sd_bus_message* raw_call = nullptr;
    r = sd_bus_message_new_method_call(bus, &raw_call, sd::kBusName, sd::kObjectPath,
                                       sd::kInterface, args[0].c_str());
    sd::MessagePtr call(raw_call);
    for (size_t k = 1; r >= 0 && k < args.size(); ++k) {
      r = sd_bus_message_append(raw_call, "s", args[k].c_str());
    }
    if (r < 0) return Fail("build", std::strerror(-r));
    r = sd_bus_call(bus, raw_call, 10 * 1000000u, &error, reply);
    if (r < 0) return FailBus(error, r);
    const char* signature = sd_bus_message_get_signature(*reply, 1);
    if (signature != nullptr && std::strcmp(signature, "x") == 0) {
      int64_t v = 0;
      sd_bus_message_read(*reply, "x", &v);
      return Ok(std::to_string(v));
    }
    return Ok(signature != nullptr ? signature : "");
  }
  return Fail("usage", "unknown command " + command);
}
