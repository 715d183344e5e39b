// The D-Bus service against a private system-like dbus-daemon that includes the project's policy
// file: every method, property and signal, the error mapping, the bus policy and the agent's own
// authorisation (root, the agent's user, the operators' group; others refused), bus loss.
//
// Tests run as root. Other users are real accounts of the machine, used by bus_helper after it
// drops privileges: "nobody" (refused), "daemon" without groups (refused), "daemon" with the
// supplementary group "staff" standing in for cakewalk-admin (allowed).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "systemd/bus_api.h"
#include "systemd/bus_service.h"
#include "systemd/event_loop.h"
#include "systemd/status_client.h"
#include "tests/support/capture_log.h"
#include "tests/systemd/fake_agent.h"
#include "tests/systemd/private_bus.h"
#include "tests/systemd/process.h"

namespace cakewalk::testing {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::Pair;
using ::testing::StartsWith;
using namespace std::chrono_literals;

constexpr char kAdminGroupForTests[] = "staff";

struct Identity {
  long uid = -1;
  long gid = -1;
  std::vector<gid_t> groups;
};

Identity Root() { return {}; }
Identity Nobody() { return {UidOf("nobody"), PrimaryGidOf("nobody"), {}}; }
Identity DaemonUser() { return {UidOf("daemon"), PrimaryGidOf("daemon"), {}}; }
Identity Operator() {
  return {UidOf("daemon"), PrimaryGidOf("daemon"), {GidOf(kAdminGroupForTests)}};
}

std::vector<std::string> HelperArgs(const Identity& who, const std::vector<std::string>& command) {
  std::vector<std::string> argv = {CAKEWALK_BUS_HELPER};
  if (who.uid >= 0) {
    std::string groups;
    for (gid_t g : who.groups) groups += (groups.empty() ? "" : ",") + std::to_string(g);
    argv.insert(argv.end(), {"--uid", std::to_string(who.uid), "--gid", std::to_string(who.gid),
                             "--groups", groups.empty() ? "," : groups});
  }
  argv.insert(argv.end(), command.begin(), command.end());
  return argv;
}

// One line of bus_helper output ("OK ..." / "ERROR name\tmessage").
std::string Helper(const Identity& who, const std::vector<std::string>& command) {
  ProcessResult r = RunProcess(HelperArgs(who, command), {}, 30s);
  std::string out = r.out;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  if (r.timed_out) return "TIMEOUT " + out;
  return out;
}

sd::StatusSnapshot SampleStatus() {
  sd::StatusSnapshot s;
  s.state = "running";
  s.version = "1.2.3-test";
  s.uptime = 3725s;
  s.jobs_running = 2;
  s.results_pending = 5;
  s.certificate_expires_at = SysTime(std::chrono::seconds(1800000000));
  s.connections = {{"control-plane", "ok", ""}, {"jira-prod", "unreachable", "connect timeout"}};
  s.sync_progress = "jira-prod: 1200 of 5000 users";
  return s;
}

// Watches the agent's signals on a connection of its own (used from the client thread).
class SignalWatcher {
 public:
  struct Received {
    std::string member;
    std::map<std::string, std::string> changed;  // PropertiesChanged: name -> value as text
    std::vector<std::string> args;               // JobFinished
  };

  SignalWatcher() {
    if (sd_bus_open_system(&bus_) < 0) throw std::runtime_error("cannot connect");
    if (sd_bus_match_signal(bus_, nullptr, sd::kBusName, sd::kObjectPath, nullptr, nullptr,
                            &SignalWatcher::OnSignal, this) < 0) {
      throw std::runtime_error("cannot add match");
    }
  }
  ~SignalWatcher() { sd_bus_flush_close_unref(bus_); }

  // The next signal, waiting up to `timeout`.
  std::optional<Received> Next(std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (queue_.empty() && std::chrono::steady_clock::now() < deadline) {
      if (sd_bus_process(bus_, nullptr) > 0) continue;
      sd_bus_wait(bus_, 100000);
    }
    if (queue_.empty()) return std::nullopt;
    Received r = queue_.front();
    queue_.erase(queue_.begin());
    return r;
  }

  sd_bus* bus() { return bus_; }

 private:
  static int OnSignal(sd_bus_message* m, void* userdata, sd_bus_error*) {
    auto* self = static_cast<SignalWatcher*>(userdata);
    Received r;
    r.member = sd_bus_message_get_member(m);
    if (r.member == "PropertiesChanged") {
      const char* iface = nullptr;
      sd_bus_message_read(m, "s", &iface);
      sd_bus_message_enter_container(m, 'a', "{sv}");
      while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
        const char* name = nullptr;
        sd_bus_message_read(m, "s", &name);
        char type = 0;
        const char* contents = nullptr;
        sd_bus_message_peek_type(m, &type, &contents);
        std::string value;
        if (std::string(contents) == "s") {
          const char* s = nullptr;
          sd_bus_message_read(m, "v", "s", &s);
          value = s;
        } else if (std::string(contents) == "u") {
          uint32_t u = 0;
          sd_bus_message_read(m, "v", "u", &u);
          value = std::to_string(u);
        } else {
          sd_bus_message_skip(m, "v");
          value = "?";
        }
        r.changed[name] = value;
        sd_bus_message_exit_container(m);
      }
    } else if (r.member == "JobFinished") {
      const char* a = nullptr;
      const char* b = nullptr;
      const char* c = nullptr;
      sd_bus_message_read(m, "sss", &a, &b, &c);
      r.args = {a, b, c};
    }
    self->queue_.push_back(std::move(r));
    return 0;
  }

  sd_bus* bus_ = nullptr;
  std::vector<Received> queue_;
};

class BusServiceTest : public ::testing::Test {
 protected:
  void StartBus(PrivateBusOptions options = {}) {
    options.admin_group = kAdminGroupForTests;
    bus_ = std::make_unique<PrivateBus>(options);
    setenv("DBUS_SYSTEM_BUS_ADDRESS", bus_->address().c_str(), 1);
  }

  void StartService(PrivateBusOptions options = {}) {
    StartBus(options);
    auto loop = sd::EventLoop::Create(sd::Notifier::FromEnvironment(), log_,
                                      sd::EventLoop::Options{.handle_signals = false});
    ASSERT_TRUE(loop.ok()) << loop.status().ToString();
    loop_ = std::move(*loop);
    loop_->SetReloadHandler([this] { return agent_.Reload(); });
    agent_.status = SampleStatus();
    auto service = sd::BusService::Start(*loop_, agent_, {"1.2.3-test", kAdminGroupForTests});
    ASSERT_TRUE(service.ok()) << service.status().ToString();
    service_ = std::move(*service);
  }

  // Runs `client` on another thread while the loop runs on this one; stops the loop after it.
  sd::LoopExit RunWhile(const std::function<void()>& client) {
    sd::LoopHandle handle = loop_->handle();
    std::thread t([&client, handle] {
      try {
        client();
      } catch (const std::exception& e) {
        ADD_FAILURE() << "client threw: " << e.what();
      }
      handle.RequestStop(Status::Ok());
    });
    sd::LoopExit exit = loop_->Run();
    t.join();
    return exit;
  }

  void TearDown() override {
    service_.reset();
    loop_.reset();
    if (bus_) {
      // dbus-daemon reports a broken policy file (bad XML, unknown user or group) only here.
      EXPECT_THAT(bus_->Warnings(), IsEmpty());
    }
  }

  CapturingLogSink log_;
  FakeAgent agent_;
  std::unique_ptr<PrivateBus> bus_;
  std::unique_ptr<sd::EventLoop> loop_;
  std::unique_ptr<sd::BusService> service_;
};

TEST_F(BusServiceTest, GetStatusReturnsTheDaemonsSnapshot) {
  StartService();
  Result<sd::StatusSnapshot> got = Status(Code::kInternal, "not called");
  RunWhile([&] { got = sd::QueryAgentStatus(); });
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  const sd::StatusSnapshot want = SampleStatus();
  EXPECT_EQ(got->state, "running");
  EXPECT_EQ(got->version, "1.2.3-test");
  EXPECT_EQ(got->uptime, 3725s);
  EXPECT_EQ(got->jobs_running, 2u);
  EXPECT_EQ(got->results_pending, 5u);
  EXPECT_EQ(got->certificate_expires_at, want.certificate_expires_at);
  ASSERT_EQ(got->connections.size(), 2u);
  EXPECT_EQ(got->connections[1].name, "jira-prod");
  EXPECT_EQ(got->connections[1].state, "unreachable");
  EXPECT_EQ(got->connections[1].detail, "connect timeout");
  EXPECT_EQ(got->sync_progress, want.sync_progress);
  EXPECT_EQ(agent_.get_status_calls.load(), 1);
}

TEST_F(BusServiceTest, GetStatusWireShapeAsBusctlSeesIt) {
  StartService();
  ProcessResult r;
  RunWhile([&] {
    r = RunProcess({"busctl", "--address=" + bus_->address(), "--json=short", "call", sd::kBusName,
                    sd::kObjectPath, sd::kInterface, "GetStatus"});
  });
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("{\"type\":\"a{sv}\""));
  EXPECT_THAT(r.out, HasSubstr("\"State\":{\"type\":\"s\",\"data\":\"running\"}"));
  EXPECT_THAT(r.out, HasSubstr("\"UptimeSeconds\":{\"type\":\"t\",\"data\":3725}"));
  EXPECT_THAT(r.out, HasSubstr("\"JobsRunning\":{\"type\":\"u\",\"data\":2}"));
  EXPECT_THAT(r.out, HasSubstr("\"ResultsPending\":{\"type\":\"u\",\"data\":5}"));
  EXPECT_THAT(
      r.out,
      HasSubstr("\"CertificateExpiresAt\":{\"type\":\"s\",\"data\":\"2027-01-15T08:00:00Z\"}"));
  EXPECT_THAT(r.out, HasSubstr("\"Connections\":{\"type\":\"a(sss)\""));
  EXPECT_THAT(r.out, HasSubstr("\"SyncProgress\":{\"type\":\"s\""));
}

TEST_F(BusServiceTest, IntrospectionDescribesTheInterface) {
  StartService();
  ProcessResult r;
  RunWhile([&] {
    r = RunProcess({"busctl", "--address=" + bus_->address(), "introspect", sd::kBusName,
                    sd::kObjectPath, sd::kInterface});
  });
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto row = [](const std::string& a, const std::string& b, const std::string& c,
                const std::string& d) {
    return ::testing::ContainsRegex(a + " +" + b + " +" + c + " +" + d);
  };
  EXPECT_THAT(r.out, row("\\.GetStatus", "method", "-", "a\\{sv\\}"));
  EXPECT_THAT(r.out, row("\\.ListSecrets", "method", "-", "a\\(ssxss\\)"));
  EXPECT_THAT(r.out, row("\\.RotateSecret", "method", "ss", "x"));
  EXPECT_THAT(r.out, row("\\.Reload", "method", "-", "-"));
  EXPECT_THAT(r.out, row("\\.Version", "property", "s", "\"1\\.2\\.3-test\" +const"));
  EXPECT_THAT(r.out, row("\\.State", "property", "s", "\"starting\" +emits-change"));
  EXPECT_THAT(r.out, row("\\.CertificateExpiresAt", "property", "s", "\"\" +emits-change"));
  EXPECT_THAT(r.out, row("\\.JobsRunning", "property", "u", "0 +emits-change"));
  EXPECT_THAT(r.out, row("\\.ResultsPending", "property", "u", "0 +emits-change"));
  EXPECT_THAT(r.out, row("\\.JobFinished", "signal", "sss", "-"));
}

TEST_F(BusServiceTest, ListSecretsReturnsMetadataOnly) {
  StartService();
  agent_.secrets = std::vector<sd::SecretInfo>{
      {"jira-prod", "password", 3, SysTime(std::chrono::seconds(1767225600)), "current"},
      {"control-plane", "proxy-password", 1, SysTime(std::chrono::seconds(1767229200)),
       "previous"}};
  Result<std::vector<sd::SecretInfo>> got = Status(Code::kInternal, "not called");
  RunWhile([&] {
    auto client = sd::AgentClient::ConnectSystem();
    ASSERT_TRUE(client.ok());
    got = client->ListSecrets();
  });
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ((*got)[0].connection, "jira-prod");
  EXPECT_EQ((*got)[0].name, "password");
  EXPECT_EQ((*got)[0].version, 3);
  EXPECT_EQ((*got)[0].created_at, SysTime(std::chrono::seconds(1767225600)));
  EXPECT_EQ((*got)[0].state, "current");
  EXPECT_EQ((*got)[1].name, "proxy-password");
  EXPECT_EQ((*got)[1].state, "previous");
}

TEST_F(BusServiceTest, DaemonErrorsBecomePreciseBusErrors) {
  StartService();
  agent_.secrets = Unavailable("the token is not present");
  std::string raw;
  Result<std::vector<sd::SecretInfo>> mapped = std::vector<sd::SecretInfo>{};
  RunWhile([&] {
    raw = Helper(Root(), {"call", "ListSecrets"});
    auto client = sd::AgentClient::ConnectSystem();
    ASSERT_TRUE(client.ok());
    mapped = client->ListSecrets();
  });
  EXPECT_EQ(raw, "ERROR security.cakewalk.Agent1.Error.Unavailable\tthe token is not present");
  ASSERT_FALSE(mapped.ok());
  EXPECT_EQ(mapped.status().code(), Code::kUnavailable);
  EXPECT_EQ(mapped.status().message(), "the token is not present");
}

TEST_F(BusServiceTest, RotateSecretAnswersWhenTheDaemonFinishes) {
  StartService();
  std::vector<std::thread> workers;
  agent_.on_rotate = [&workers](std::string, std::string, sd::Reply<int64_t> done) {
    // The rotation completes later, on a worker thread, as the daemon's would.
    workers.emplace_back([d = std::move(done)]() mutable {
      std::this_thread::sleep_for(200ms);
      std::move(d).Send(int64_t{12});
    });
  };
  Result<int64_t> got = Status(Code::kInternal, "not called");
  RunWhile([&] {
    auto client = sd::AgentClient::ConnectSystem();
    ASSERT_TRUE(client.ok());
    got = client->RotateSecret("jira-prod", "password");
  });
  for (auto& t : workers) t.join();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, 12);
  EXPECT_THAT(agent_.rotations(), ElementsAre(Pair("jira-prod", "password")));
  EXPECT_EQ(log_.WithId(event::kSecretRotation).size(), 1u);
}

TEST_F(BusServiceTest, RotateSecretMapsNotFound) {
  StartService();
  agent_.on_rotate = [](std::string c, std::string, sd::Reply<int64_t> done) {
    std::move(done).Send(NotFound("no connection named " + c));
  };
  std::string raw;
  RunWhile([&] { raw = Helper(Root(), {"call", "RotateSecret", "jira-nope", "password"}); });
  EXPECT_EQ(raw, "ERROR security.cakewalk.Agent1.Error.NotFound\tno connection named jira-nope");
}

TEST_F(BusServiceTest, RotateSecretRefusesMalformedNamesBeforeTheDaemonSeesThem) {
  StartService();
  std::string raw;
  RunWhile([&] { raw = Helper(Root(), {"call", "RotateSecret", "../../etc", "password"}); });
  EXPECT_THAT(raw, StartsWith("ERROR security.cakewalk.Agent1.Error.InvalidArgument\t"));
  EXPECT_THAT(agent_.rotations(), IsEmpty());
}

TEST_F(BusServiceTest, ADroppedReplyAnswersAborted) {
  StartService();
  agent_.on_rotate = [](std::string, std::string, sd::Reply<int64_t>) {};  // forgets to answer
  std::string raw;
  RunWhile([&] { raw = Helper(Root(), {"call", "RotateSecret", "jira-prod", "password"}); });
  EXPECT_EQ(raw, "ERROR security.cakewalk.Agent1.Error.Aborted\tthe agent dropped the request");
}

TEST_F(BusServiceTest, ReloadRunsTheReloadHandlerAndMapsItsFailure) {
  StartService();
  std::string first;
  std::string second;
  RunWhile([&] {
    first = Helper(Root(), {"call", "Reload"});
    agent_.reload_result = FailedPrecondition("jira-prod: base_url must be https");
    second = Helper(Root(), {"call", "Reload"});
  });
  EXPECT_EQ(first, "OK ");
  EXPECT_EQ(second,
            "ERROR security.cakewalk.Agent1.Error.FailedPrecondition\tjira-prod: base_url must "
            "be https");
  EXPECT_EQ(agent_.reload_calls.load(), 2);
}

TEST_F(BusServiceTest, PropertiesFollowPublishedValuesAndEmitOnlyChanges) {
  StartService();
  std::vector<SignalWatcher::Received> seen;
  uint32_t jobs_read = 0;
  std::string state_read;
  RunWhile([&] {
    SignalWatcher watcher;
    sd::AgentProperties p;
    p.state = "running";
    p.jobs_running = 3;
    p.results_pending = 1;
    p.certificate_expires_at = SysTime(std::chrono::seconds(1800000000));
    service_->SetProperties(p);  // from this (non-loop) thread
    if (auto s = watcher.Next()) seen.push_back(*s);
    service_->SetProperties(p);  // identical: no signal
    p.jobs_running = 4;
    service_->SetProperties(p);  // only JobsRunning changed
    if (auto s = watcher.Next()) seen.push_back(*s);

    sd_bus_error error{};  // SD_BUS_ERROR_NULL without the C compound literal (clang)
    sd_bus_get_property_trivial(watcher.bus(), sd::kBusName, sd::kObjectPath, sd::kInterface,
                                "JobsRunning", &error, 'u', &jobs_read);
    char* state = nullptr;
    sd_bus_get_property_string(watcher.bus(), sd::kBusName, sd::kObjectPath, sd::kInterface,
                               "State", &error, &state);
    if (state != nullptr) state_read = state;
    free(state);
    sd_bus_error_free(&error);
  });
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].member, "PropertiesChanged");
  EXPECT_THAT(seen[0].changed, ElementsAre(Pair("CertificateExpiresAt", "2027-01-15T08:00:00Z"),
                                           Pair("JobsRunning", "3"), Pair("ResultsPending", "1"),
                                           Pair("State", "running")));
  EXPECT_THAT(seen[1].changed, ElementsAre(Pair("JobsRunning", "4")));
  EXPECT_EQ(jobs_read, 4u);
  EXPECT_EQ(state_read, "running");
}

TEST_F(BusServiceTest, JobFinishedReachesAuthorisedListenersOnly) {
  StartService();
  std::vector<std::string> root_lines;
  std::vector<std::string> nobody_lines;
  RunWhile([&] {
    const std::string stderr_path = "/dev/null";
    Child root = Child::Spawn(HelperArgs(Root(), {"listen", "20"}));
    Child nobody = Child::Spawn(HelperArgs(Nobody(), {"listen", "20"}));
    ASSERT_EQ(root.ReadLine(10s), "LISTENING");
    ASSERT_EQ(nobody.ReadLine(10s), "LISTENING");
    service_->EmitJobFinished("job-42", "jira.user.create", "succeeded");
    // Once root has it, the bus has routed it to every recipient; then the barrier (from
    // another connection, which nobody may receive) tells nobody's listener to stop.
    auto line = root.ReadLine(10s);
    ASSERT_TRUE(line.has_value());
    root_lines.push_back(*line);
    sd_bus* bus = nullptr;
    ASSERT_GE(sd_bus_open_system(&bus), 0);
    ASSERT_GE(
        sd_bus_emit_signal(bus, "/security/cakewalk/Test", "security.cakewalk.Test", "Barrier", ""),
        0);
    sd_bus_flush_close_unref(bus);
    while (auto l = nobody.ReadLine(10s)) {
      nobody_lines.push_back(*l);
      if (*l == "BARRIER") break;
    }
  });
  EXPECT_THAT(root_lines, ElementsAre("SIGNAL JobFinished job-42 jira.user.create succeeded"));
  EXPECT_THAT(nobody_lines, ElementsAre("BARRIER"));
}

TEST_F(BusServiceTest, BusPolicyAllowsRootAndOperatorsAndRefusesOthers) {
  StartService();
  std::map<std::string, std::string> r;
  RunWhile([&] {
    r["root"] = Helper(Root(), {"call", "GetStatus"});
    r["operator"] = Helper(Operator(), {"call", "GetStatus"});
    r["operator-property"] = Helper(Operator(), {"get", "JobsRunning"});
    r["daemon"] = Helper(DaemonUser(), {"call", "GetStatus"});
    r["nobody"] = Helper(Nobody(), {"call", "GetStatus"});
    r["nobody-property"] = Helper(Nobody(), {"get", "State"});
    r["nobody-introspect"] = Helper(Nobody(), {"introspect"});
    r["nobody-client"] = Helper(Nobody(), {"status"});
    r["operator-client"] = Helper(Operator(), {"status"});
  });
  EXPECT_EQ(r["root"], "OK a{sv}");
  EXPECT_EQ(r["operator"], "OK a{sv}");
  EXPECT_EQ(r["operator-property"], "OK");
  EXPECT_THAT(r["daemon"], StartsWith("ERROR org.freedesktop.DBus.Error.AccessDenied\t"));
  EXPECT_THAT(r["nobody"], StartsWith("ERROR org.freedesktop.DBus.Error.AccessDenied\t"));
  EXPECT_THAT(r["nobody-property"], StartsWith("ERROR org.freedesktop.DBus.Error.AccessDenied\t"));
  EXPECT_THAT(r["nobody-introspect"], StartsWith("OK "));
  EXPECT_EQ(r["nobody-client"],
            "ERROR PERMISSION_DENIED\taccess denied by the system bus policy: run as root or as "
            "a member of group cakewalk-admin");
  EXPECT_EQ(r["operator-client"], "OK running 1.2.3-test");
  // The refusals came from dbus-daemon's policy, not from the agent: four calls were rejected
  // on the bus and the agent's own check never ran for them.
  const auto rejected = bus_->Rejections();
  ASSERT_EQ(rejected.size(), 4u);
  EXPECT_THAT(rejected[0], HasSubstr("uid=" + std::to_string(UidOf("daemon")) + " "));
  for (size_t i = 1; i < 4; ++i) {
    EXPECT_THAT(rejected[i], HasSubstr("uid=" + std::to_string(UidOf("nobody")) + " "));
  }
  EXPECT_THAT(log_.WithId(event::kAgentLifecycle),
              ::testing::Not(::testing::Contains(::testing::Field(
                  &LogEntry::message, "refused a D-Bus call from an unauthorised user"))));
}

TEST_F(BusServiceTest, OnlyTheAgentsUserMayOwnTheName) {
  StartService();  // the policy's owner is root here; the name is taken
  std::map<std::string, std::string> r;
  RunWhile([&] {
    r["nobody"] = Helper(Nobody(), {"own"});
    r["operator"] = Helper(Operator(), {"own"});
    r["root-second"] = Helper(Root(), {"own"});
  });
  EXPECT_EQ(r["nobody"], "ERROR errno\tPermission denied");
  EXPECT_EQ(r["operator"], "ERROR errno\tPermission denied");
  EXPECT_EQ(r["root-second"], "ERROR errno\tFile exists");
}

TEST_F(BusServiceTest, ASecondAgentIsRefusedClearly) {
  StartService();
  Status second = Status::Ok();
  RunWhile([&] {
    // While the first agent runs (its connection closes when its loop ends).
    CapturingLogSink log;
    auto loop = sd::EventLoop::Create(sd::Notifier::FromEnvironment(), log,
                                      sd::EventLoop::Options{.handle_signals = false});
    ASSERT_TRUE(loop.ok());
    FakeAgent other;
    auto service = sd::BusService::Start(**loop, other, {"x", kAdminGroupForTests});
    second = service.status();
  });
  EXPECT_EQ(second.code(), Code::kAlreadyExists);
  EXPECT_THAT(second.message(), HasSubstr("is the agent already running?"));
}

TEST_F(BusServiceTest, AnAgentUnderItsOwnUserServesItselfRootAndOperatorsOnly) {
  // The policy names "daemon" as the agent's user; the agent runs as daemon in bus_helper.
  StartBus({.owner_user = "daemon"});
  Child agent = Child::Spawn(HelperArgs(DaemonUser(), {"serve"}));
  auto line = agent.ReadLine(20s);
  ASSERT_TRUE(line.has_value());
  ASSERT_THAT(*line, StartsWith("SERVING :"));

  EXPECT_EQ(Helper(Root(), {"status"}), "OK running served-by-helper");
  EXPECT_EQ(Helper(DaemonUser(), {"status"}), "OK running served-by-helper");  // its own UID
  EXPECT_EQ(Helper(Operator(), {"status"}), "OK running served-by-helper");
  EXPECT_THAT(Helper(Nobody(), {"status"}), StartsWith("ERROR PERMISSION_DENIED\t"));
  EXPECT_EQ(bus_->Rejections().size(), 1u);  // nobody, by the bus policy

  // Root is not the agent's user under this policy, so root cannot own the name.
  CapturingLogSink log;
  auto loop = sd::EventLoop::Create(sd::Notifier::FromEnvironment(), log,
                                    sd::EventLoop::Options{.handle_signals = false});
  ASSERT_TRUE(loop.ok());
  FakeAgent other;
  agent.Signal(SIGTERM);
  EXPECT_EQ(agent.ReadLine(10s), "EXIT signal");
  auto status = agent.Wait(10s);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
  auto as_root = sd::BusService::Start(**loop, other, {"x", kAdminGroupForTests});
  ASSERT_FALSE(as_root.ok());
  EXPECT_EQ(as_root.status().code(), Code::kPermissionDenied);
  EXPECT_THAT(as_root.status().message(), HasSubstr("bus policy does not let uid 0 own"));
}

TEST_F(BusServiceTest, TheAgentAuthorisesCallsEvenWhenTheBusPolicyWouldNot) {
  // A bus that lets everybody call everything: only the agent's own check stands.
  StartService({.permissive = true});
  std::map<std::string, std::string> r;
  RunWhile([&] {
    r["nobody"] = Helper(Nobody(), {"call", "GetStatus"});
    r["nobody-rotate"] = Helper(Nobody(), {"call", "RotateSecret", "jira-prod", "password"});
    r["nobody-reload"] = Helper(Nobody(), {"call", "Reload"});
    r["nobody-property"] = Helper(Nobody(), {"get", "State"});
    r["daemon"] = Helper(DaemonUser(), {"call", "ListSecrets"});
    r["operator"] = Helper(Operator(), {"call", "ListSecrets"});
    r["root"] = Helper(Root(), {"call", "ListSecrets"});
  });
  const std::string nobody_uid = std::to_string(UidOf("nobody"));
  EXPECT_EQ(r["nobody"], "ERROR org.freedesktop.DBus.Error.AccessDenied\taccess denied: uid " +
                             nobody_uid +
                             " may not use security.cakewalk.Agent1; run as root or as a member "
                             "of group staff");
  EXPECT_THAT(r["nobody-rotate"], StartsWith("ERROR org.freedesktop.DBus.Error.AccessDenied\t"));
  EXPECT_THAT(r["nobody-reload"], StartsWith("ERROR org.freedesktop.DBus.Error.AccessDenied\t"));
  EXPECT_THAT(r["nobody-property"], StartsWith("ERROR org.freedesktop.DBus.Error.AccessDenied\t"));
  EXPECT_THAT(r["daemon"], StartsWith("ERROR org.freedesktop.DBus.Error.AccessDenied\t"));
  EXPECT_EQ(r["operator"], "OK a(ssxss)");
  EXPECT_EQ(r["root"], "OK a(ssxss)");
  EXPECT_THAT(agent_.rotations(), IsEmpty());
  EXPECT_EQ(agent_.reload_calls.load(), 0);
  EXPECT_EQ(agent_.get_status_calls.load(), 0);
  // Each refusal is logged with the caller's UID.
  const auto refusals = log_.WithId(event::kAgentLifecycle);
  int logged = 0;
  for (const auto& e : refusals) {
    if (e.Field("CALLER_UID") == nobody_uid) ++logged;
  }
  EXPECT_EQ(logged, 4);
}

TEST_F(BusServiceTest, LosingTheBusEndsTheLoopWithItsOwnReason) {
  StartService();
  PrivateBus* bus = bus_.get();
  sd::LoopHandle handle = loop_->handle();
  std::thread killer([bus] { bus->Kill(); });
  // Safety net only: if the disconnect were never noticed, stop after a minute and fail below.
  std::thread guard([handle] {
    for (int i = 0; i < 600 && handle.Post([] {}); ++i) std::this_thread::sleep_for(100ms);
    handle.RequestStop(DeadlineExceeded("no disconnect seen"));
  });
  const sd::LoopExit exit = loop_->Run();
  killer.join();
  service_.reset();
  loop_.reset();  // makes the guard's Post fail, so it ends
  guard.join();
  EXPECT_EQ(exit.reason, sd::LoopExit::Reason::kBusDisconnected) << exit.status.ToString();
  EXPECT_EQ(exit.status.code(), Code::kUnavailable);
  bus_.reset();  // killed: no stderr to check
}

TEST_F(BusServiceTest, AServedAgentExitsNonZeroWhenTheBusGoesAway) {
  StartBus();
  Child agent = Child::Spawn(HelperArgs(Root(), {"serve"}));
  auto line = agent.ReadLine(20s);
  ASSERT_TRUE(line.has_value());
  ASSERT_THAT(*line, StartsWith("SERVING :"));
  bus_->Kill();
  EXPECT_EQ(agent.ReadLine(20s), "EXIT bus-disconnected");
  auto status = agent.Wait(20s);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 42);  // bus_helper's code for kBusDisconnected
  bus_.reset();
}

TEST_F(BusServiceTest, StatusClientSaysWhenTheAgentIsNotRunning) {
  StartBus();
  auto got = sd::QueryAgentStatus();
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), Code::kUnavailable);
  EXPECT_EQ(got.status().message(),
            "the agent is not running (name security.cakewalk.Agent1 has no owner)");
}

TEST_F(BusServiceTest, NoBusIsReportedClearly) {
  setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/cakewalk-no-bus", 1);
  auto got = sd::QueryAgentStatus();
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), Code::kUnavailable);
  EXPECT_THAT(got.status().message(), AllOf(HasSubstr("cannot connect to the system bus at "
                                                      "unix:path=/nonexistent/cakewalk-no-bus"),
                                            HasSubstr("is dbus running?")));

  CapturingLogSink log;
  auto loop = sd::EventLoop::Create(sd::Notifier::FromEnvironment(), log,
                                    sd::EventLoop::Options{.handle_signals = false});
  ASSERT_TRUE(loop.ok());
  FakeAgent agent;
  auto service = sd::BusService::Start(**loop, agent, {"x", kAdminGroupForTests});
  ASSERT_FALSE(service.ok());
  EXPECT_EQ(service.status().code(), Code::kUnavailable);
}

// A stand-in agent with a hand-made GetStatus reply, served from its own thread: the client must
// ignore keys it does not know and refuse known keys of the wrong type.
class CannedStatusServer {
 public:
  explicit CannedStatusServer(std::function<int(sd_bus_message*)> fill) : fill_(std::move(fill)) {
    if (sd_bus_open_system(&bus_) < 0) throw std::runtime_error("cannot connect");
    if (sd_bus_add_object_vtable(bus_, nullptr, sd::kObjectPath, sd::kInterface, kVtable, this) <
            0 ||
        sd_bus_request_name(bus_, sd::kBusName, 0) < 0) {
      throw std::runtime_error("cannot serve");
    }
    thread_ = std::thread([this] {
      while (!stop_) {
        if (sd_bus_process(bus_, nullptr) > 0) continue;
        sd_bus_wait(bus_, 50000);
      }
    });
  }
  ~CannedStatusServer() {
    stop_ = true;
    thread_.join();
    sd_bus_flush_close_unref(bus_);
  }

 private:
  static int GetStatus(sd_bus_message* m, void* userdata, sd_bus_error*) {
    auto* self = static_cast<CannedStatusServer*>(userdata);
    sd_bus_message* reply = nullptr;
    sd_bus_message_new_method_return(m, &reply);
    sd_bus_message_open_container(reply, 'a', "{sv}");
    self->fill_(reply);
    sd_bus_message_close_container(reply);
    const int r = sd_bus_send(nullptr, reply, nullptr);
    sd_bus_message_unref(reply);
    return r;
  }
  static constexpr sd_bus_vtable kVtable[] = {
      SD_BUS_VTABLE_START(0),
      SD_BUS_METHOD("GetStatus", "", "a{sv}", &CannedStatusServer::GetStatus, 0),
      SD_BUS_VTABLE_END,
  };

  std::function<int(sd_bus_message*)> fill_;
  sd_bus* bus_ = nullptr;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST_F(BusServiceTest, StatusClientIgnoresUnknownKeysAndRefusesWrongTypes) {
  StartBus();
  {
    CannedStatusServer server([](sd_bus_message* m) {
      sd_bus_message_append(m, "{sv}", "State", "s", "running");
      sd_bus_message_append(m, "{sv}", "FutureKey", "a{ss}", 1, "a", "b");
      sd_bus_message_append(m, "{sv}", "JobsRunning", "u", 3u);
      return 0;
    });
    auto got = sd::QueryAgentStatus();
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(got->state, "running");
    EXPECT_EQ(got->jobs_running, 3u);
    EXPECT_EQ(got->version, "");  // absent keys keep their defaults
  }
  {
    CannedStatusServer server([](sd_bus_message* m) {
      sd_bus_message_append(m, "{sv}", "State", "s", "running");
      sd_bus_message_append(m, "{sv}", "JobsRunning", "s", "three");
      return 0;
    });
    auto got = sd::QueryAgentStatus();
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.status().code(), Code::kInternal);
    EXPECT_THAT(got.status().message(), HasSubstr("JobsRunning has type s, expected u"));
  }
  {
    CannedStatusServer server([](sd_bus_message* m) {
      sd_bus_message_append(m, "{sv}", "Version", "s", "1.0");
      return 0;
    });
    auto got = sd::QueryAgentStatus();
    ASSERT_FALSE(got.ok());
    EXPECT_THAT(got.status().message(), HasSubstr("the status has no State"));
  }
}

TEST(FormatStatusTest, PrintsOneLinePerFact) {
  sd::StatusSnapshot s = SampleStatus();
  const SysTime now = SysTime(std::chrono::seconds(1800000000)) - std::chrono::hours(24 * 10);
  EXPECT_EQ(sd::FormatStatus(s, now),
            "State: running\n"
            "Version: 1.2.3-test\n"
            "Uptime: 0d 1h 2m 5s\n"
            "Jobs running: 2\n"
            "Results pending: 5\n"
            "Certificate expires: 2027-01-15T08:00:00Z (in 10 days)\n"
            "Connection control-plane: ok\n"
            "Connection jira-prod: unreachable (connect timeout)\n"
            "Sync: jira-prod: 1200 of 5000 users\n");
  s.sync_progress.clear();
  s.connections.clear();
  const SysTime expiry = *s.certificate_expires_at;
  EXPECT_THAT(sd::FormatStatus(s, expiry - std::chrono::hours(23)), HasSubstr("(in 23 hours)\n"));
  EXPECT_THAT(sd::FormatStatus(s, expiry + std::chrono::seconds(1)), HasSubstr("(EXPIRED)\n"));
  s.certificate_expires_at = SysTime::max();  // notAfter 9999, clamped
  EXPECT_THAT(sd::FormatStatus(s, now), HasSubstr("2262-04-11T23:47:16Z (in 85928 days)"));
  s.certificate_expires_at = SysTime::min();  // before 1678, clamped
  EXPECT_THAT(sd::FormatStatus(s, now), HasSubstr("(EXPIRED)\n"));
  s.certificate_expires_at.reset();
  EXPECT_THAT(sd::FormatStatus(s, now),
              HasSubstr("Certificate expires: unknown (not enrolled?)\n"));
  EXPECT_THAT(sd::FormatStatus(s, now), Not(HasSubstr("Sync:")));
}

}  // namespace
}  // namespace cakewalk::testing
