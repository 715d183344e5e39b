// `cakewalk-agent run`, the real binary, against the in-process fake control plane and a FakeJira
// over TLS, with a private SoftHSM token: jobs end to end through the Jira connector, SIGTERM
// (a running job finishes within the grace, or is recorded interrupted past it; exit 0), the
// heartbeat's content (the canary password in the token never leaves it), results kept across a
// restart, status over D-Bus on a private bus, one agent per state folder.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <csignal>
#include <cstdio>

#include "base/json.h"
#include "tests/agent/agent_process.h"
#include "tests/support/canary.h"
#include "tests/support/notify_socket.h"
#include "tests/systemd/private_bus.h"

namespace cakewalk::testing {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

class RunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RunningControlPlaneOptions o;
    o.control_plane.lease_duration = 5s;
    auto cp = RunningControlPlane::Start(o);
    ASSERT_TRUE(cp.ok()) << cp.status().ToString();
    cp_ = std::move(cp).value();
    password_ = MakeCanary("jira-password");
    auto jira = ServeJiraWithAdmin(password_);
    ASSERT_TRUE(jira.ok()) << jira.status().ToString();
    jira_ = std::move(jira).value();
    cp_->fake().AddForbiddenValue(password_);
  }

  void MakeHome(AgentHomeOptions options = {}) {
    options.jira = jira_.get();
    auto home = AgentHome::Create(*cp_, options);
    ASSERT_TRUE(home.ok()) << home.status().ToString();
    home_ = std::move(home).value();
  }

  // A seeded Jira user and an add_member job for it.
  std::string EnqueueAddMember(const std::string& username) {
    NewUser u;
    u.username = username;
    u.email = username + "@corp.example";
    u.display_name = username;
    EXPECT_TRUE(jira_->jira().AddUser(u).ok());
    Json::Value params(Json::objectValue);
    params["user"]["username"] = username;
    params["group"] = "jira-software-users";
    return Enqueue("jira.group.add_member", params);
  }

  // Delays Jira's answers to matching requests (the request itself is carried out first).
  void SlowJira(const std::string& method, const std::string& path, std::chrono::milliseconds d) {
    FaultRule rule;
    rule.method = method;
    rule.path_contains = path;
    rule.count = -1;
    rule.transport = Fault{Fault::kDelay, d};
    jira_->jira().QueueFault(rule);
  }

  // Waits until the agent's log says the job started.
  ::testing::AssertionResult WaitForStart(const std::string& id) {
    return cp_->fake().WaitUntil(
        [&] {
          return home_->Log().find("job " + id + " (jira.group.add_member) started") !=
                 std::string::npos;
        },
        "job started", 20s);
  }

  void TearDown() override {
    std::string violations;
    for (const auto& v : cp_->fake().Violations()) violations += v.job_id + ": " + v.what + "\n";
    EXPECT_TRUE(violations.empty()) << violations;
    if (HasFailure() && home_) std::cerr << "--- agent log ---\n" << home_->Log();
  }

  std::string Enqueue(const std::string& type,
                      Json::Value params = Json::Value(Json::objectValue)) {
    JobSpec spec;
    spec.type = type;
    spec.connection = "jira-prod";
    spec.params = std::move(params);
    auto id = cp_->fake().EnqueueJob(spec);
    EXPECT_TRUE(id.ok());
    return id.ok() ? *id : std::string();
  }
  std::string EnqueueVerify() { return Enqueue("jira.connection.verify"); }

  // Nothing of the Jira password left the token: not to the control plane (the fake flags any
  // request carrying it), not into heartbeats, logs or the state folder.
  void ExpectPasswordNowhere() {
    for (const auto& hb : cp_->fake().Heartbeats()) {
      EXPECT_TRUE(FindCanaryIn(password_, hb.body, "heartbeat").empty());
    }
    EXPECT_TRUE(FindCanaryIn(password_, home_->Log(), "agent log").empty());
    EXPECT_TRUE(FindCanaryInTree(password_, home_->state_dir()).empty());
  }

  std::string password_;
  std::unique_ptr<ServedJira> jira_;
  std::unique_ptr<RunningControlPlane> cp_;
  std::unique_ptr<AgentHome> home_;
};

TEST_F(RunTest, RunsJobsAndStopsWithExitZeroOnSigterm) {
  ASSERT_NO_FATAL_FAILURE(MakeHome());
  Child agent = home_->Start();
  const std::string id = EnqueueVerify();
  ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 20s));
  // No password in the token: the honest answer, not a pretended success.
  Json::Value result = cp_->fake().Job(id)->result;
  EXPECT_EQ(result["status"].asString(), "failed");
  EXPECT_EQ(result["error"]["code"].asString(), "credentials_missing");
  EXPECT_THAT(result["error"]["message"].asString(), HasSubstr("secret set jira-prod password"));

  const auto t0 = std::chrono::steady_clock::now();
  agent.Signal(SIGTERM);
  EXPECT_EQ(WaitExit(agent, 30s), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_THAT(home_->Log(), HasSubstr("stopped"));
  auto journal = home_->OpenJournal();
  ASSERT_TRUE(journal.ok()) << journal.status().ToString();
  auto entry = (*journal)->Find(id);
  ASSERT_TRUE(entry.ok() && entry->has_value());
  EXPECT_EQ((*entry)->state, agent::JournalState::kReported);
}

// An idle agent spends its time in a claim long poll; a stop cuts it short instead of waiting for
// the control plane's answer (up to 30 s, two thirds of systemd's TimeoutStopSec).
TEST_F(RunTest, SigtermDuringALongPollStopsAtOnce) {
  AgentHomeOptions options;
  options.poll_wait_seconds = 30;
  ASSERT_NO_FATAL_FAILURE(MakeHome(options));
  Child agent = home_->Start();
  ASSERT_TRUE(cp_->fake().WaitForWaitingClaims(1, 20s));
  const auto t0 = std::chrono::steady_clock::now();
  agent.Signal(SIGTERM);
  EXPECT_EQ(WaitExit(agent, 60s), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  const std::string log = home_->Log();
  EXPECT_THAT(log, HasSubstr("stopped"));
  EXPECT_THAT(log, Not(HasSubstr("claiming jobs failed")));
}

TEST_F(RunTest, HeartbeatIsMetadataOnly) {
  ASSERT_NO_FATAL_FAILURE(MakeHome());
  ASSERT_TRUE(home_->PutSecret("jira-prod", "password", password_).ok());
  Child agent = home_->Start();
  ASSERT_TRUE(cp_->fake().WaitForHeartbeats(1, 20s));
  const std::string id = EnqueueVerify();
  ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 20s));
  agent.Signal(SIGTERM);
  EXPECT_EQ(WaitExit(agent, 30s), 0);

  auto beats = cp_->fake().Heartbeats();
  ASSERT_FALSE(beats.empty());
  for (const auto& hb : beats) {
    EXPECT_TRUE(hb.accepted) << hb.problem;
  }
  auto body = ParseJson(beats.front().body, "heartbeat");
  ASSERT_TRUE(body.ok());
  EXPECT_EQ((*body)["agent_version"].asString(), "0.1.0");
  EXPECT_EQ((*body)["token"]["label"].asString(), "cakewalk-agent");
  ASSERT_EQ((*body)["connections"].size(), 1u);
  EXPECT_EQ((*body)["connections"][0]["name"].asString(), "jira-prod");
  EXPECT_EQ((*body)["connections"][0]["type"].asString(), "jira-datacenter");
  EXPECT_EQ((*body)["connections"][0]["status"].asString(), "ok");
  ASSERT_EQ((*body)["secrets"].size(), 1u);
  EXPECT_EQ((*body)["secrets"][0]["connection"].asString(), "jira-prod");
  EXPECT_EQ((*body)["secrets"][0]["name"].asString(), "password");
  EXPECT_EQ((*body)["secrets"][0]["version"].asInt(), 1);
  EXPECT_TRUE((*body)["secrets"][0]["created_at"].isString());
  // The verify job logged in to Jira with the password from the token.
  Json::Value result = cp_->fake().Job(id)->result;
  EXPECT_EQ(result["status"].asString(), "succeeded") << WriteJson(result);
  EXPECT_TRUE(result["output"]["admin"].asBool());
  EXPECT_EQ(result["output"]["account"]["username"].asString(), "svc-cakewalk");
  ExpectPasswordNowhere();
}

TEST_F(RunTest, AMutatingJobRunsAgainstJiraAndARepeatChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(MakeHome());
  NewUser alice;
  alice.username = "alice";
  alice.email = "alice@corp.example";
  alice.display_name = "Alice";
  ASSERT_TRUE(jira_->jira().AddUser(alice).ok());
  ASSERT_TRUE(home_->PutSecret("jira-prod", "password", password_).ok());
  Child agent = home_->Start();
  Json::Value params(Json::objectValue);
  params["user"]["username"] = "alice";
  params["group"] = "jira-software-users";
  const std::string first = Enqueue("jira.group.add_member", params);
  ASSERT_TRUE(cp_->fake().WaitForJobState(first, JobState::kFinished, 30s));
  const std::string second = Enqueue("jira.group.add_member", params);
  ASSERT_TRUE(cp_->fake().WaitForJobState(second, JobState::kFinished, 30s));
  agent.Signal(SIGTERM);
  EXPECT_EQ(WaitExit(agent, 30s), 0);
  EXPECT_TRUE(cp_->fake().Job(first)->result["output"]["changed"].asBool());
  EXPECT_FALSE(cp_->fake().Job(second)->result["output"]["changed"].asBool());
  int added = 0;
  for (const auto& m : jira_->jira().Mutations()) {
    if (m.kind == "group_member_added" && m.label == "alice") ++added;
  }
  EXPECT_EQ(added, 1);
  ExpectPasswordNowhere();
}

TEST_F(RunTest, UndeliveredResultsSurviveAStopAndAreSentAfterTheRestart) {
  ASSERT_NO_FATAL_FAILURE(MakeHome());
  cp_->fake().QueueFault(ControlPlaneFault::Status(503), 100000, Endpoint::kResult);
  Child agent = home_->Start();
  const std::string id = EnqueueVerify();
  ASSERT_TRUE(cp_->fake().WaitForRequests(Endpoint::kResult, 1, 20s));
  agent.Signal(SIGTERM);
  // The flush is bounded: the agent stops (exit 0) with the result still owed.
  EXPECT_EQ(WaitExit(agent, 40s), 0);
  EXPECT_THAT(home_->Log(), HasSubstr("could not be delivered before stopping"));
  {
    auto journal = home_->OpenJournal();
    ASSERT_TRUE(journal.ok()) << journal.status().ToString();
    EXPECT_EQ((*journal)->PendingCount().value(), 1);
  }
  cp_->fake().ClearFaults();
  EXPECT_NE(cp_->fake().Job(id)->state, JobState::kFinished);
  Child again = home_->Start();
  ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 20s));
  again.Signal(SIGTERM);
  EXPECT_EQ(WaitExit(again, 30s), 0);
  auto job = cp_->fake().Job(id);
  EXPECT_EQ(job->result["error"]["code"].asString(), "credentials_missing");
}

TEST_F(RunTest, SigtermLetsARunningJobFinishWithinTheGrace) {
  ASSERT_NO_FATAL_FAILURE(MakeHome());
  ASSERT_TRUE(home_->PutSecret("jira-prod", "password", password_).ok());
  SlowJira("POST", "/group/user", 2s);
  Child agent = home_->Start();
  const std::string id = EnqueueAddMember("bob");
  ASSERT_TRUE(WaitForStart(id));
  const auto t0 = std::chrono::steady_clock::now();
  agent.Signal(SIGTERM);
  EXPECT_EQ(WaitExit(agent, 30s), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  // It finished within the 5 s grace and its result was flushed before the exit.
  auto job = cp_->fake().Job(id);
  EXPECT_EQ(job->state, JobState::kFinished);
  EXPECT_EQ(job->result["status"].asString(), "succeeded");
  auto journal = home_->OpenJournal();
  ASSERT_TRUE(journal.ok());
  EXPECT_EQ((*journal)->Find(id).value()->state, agent::JournalState::kReported);
}

TEST_F(RunTest, SigtermPastTheGraceRecordsTheJobInterruptedAndReportsNothing) {
  AgentHomeOptions options;
  options.shutdown_grace_seconds = 1;
  ASSERT_NO_FATAL_FAILURE(MakeHome(options));
  ASSERT_TRUE(home_->PutSecret("jira-prod", "password", password_).ok());
  // The user look-up takes 4 s: the job is still in it when the grace ends, and stops at the next
  // safe point (before changing anything).
  SlowJira("GET", "/rest/api/2/user", 4s);
  Child agent = home_->Start();
  const std::string id = EnqueueAddMember("carol");
  ASSERT_TRUE(WaitForStart(id));
  agent.Signal(SIGTERM);
  EXPECT_EQ(WaitExit(agent, 30s), 0);
  auto job = cp_->fake().Job(id);
  EXPECT_TRUE(job->result_deliveries.empty()) << "an interrupted job reports nothing";
  auto journal = home_->OpenJournal();
  ASSERT_TRUE(journal.ok());
  EXPECT_EQ((*journal)->Find(id).value()->state, agent::JournalState::kInterrupted);
  for (const auto& m : jira_->jira().Mutations()) {
    EXPECT_NE(m.label, "carol") << "nothing was changed after the stop: " << m.Describe();
  }
}

TEST_F(RunTest, StatusOverDBus) {
  ASSERT_NO_FATAL_FAILURE(MakeHome());
  ASSERT_TRUE(home_->PutSecret("jira-prod", "password", password_).ok());
  PrivateBus bus;
  const std::vector<std::string> env = {"DBUS_SYSTEM_BUS_ADDRESS=" + bus.address()};
  SlowJira("POST", "/group/user", 3s);
  Child agent = home_->Start(env);
  auto status = [&]() -> Json::Value {
    ProcessResult r = RunProcess(
        {CAKEWALK_AGENT_BINARY, "--config", home_->config_path().string(), "status", "--json"}, env,
        20s);
    if (r.exit_code != 0) return Json::Value();
    auto v = ParseJson(r.out, "status");
    return v.ok() ? *v : Json::Value();
  };
  ASSERT_TRUE(cp_->fake().WaitUntil([&] { return status()["state"].asString() == "running"; },
                                    "the agent answers on the bus", 20s));
  const std::string id = EnqueueAddMember("dave");
  ASSERT_TRUE(cp_->fake().WaitUntil([&] { return status()["jobs_running"].asInt() == 1; },
                                    "one job running", 20s));
  Json::Value s = status();
  EXPECT_EQ(s["version"].asString(), "0.1.0");
  EXPECT_TRUE(s["certificate_expires_at"].isString());
  ASSERT_GE(s["connections"].size(), 2u);
  EXPECT_EQ(s["connections"][0]["name"].asString(), "control-plane");
  EXPECT_EQ(s["connections"][0]["state"].asString(), "ok");
  EXPECT_EQ(s["connections"][1]["name"].asString(), "jira-prod");
  ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 20s));
  ASSERT_TRUE(cp_->fake().WaitUntil(
      [&] {
        Json::Value v = status();
        return v["jobs_running"].asInt() == 0 && v["results_pending"].asInt() == 0;
      },
      "idle again", 20s));
  EXPECT_EQ(status()["connections"][1]["state"].asString(), "ok");
  agent.Signal(SIGTERM);
  EXPECT_EQ(WaitExit(agent, 30s), 0);
}

TEST_F(RunTest, RenewsTheCertificateWhenTheHeartbeatAsks) {
  ASSERT_NO_FATAL_FAILURE(MakeHome());
  ASSERT_TRUE(cp_->fake().RequestCertificateRenewal(home_->agent_id()).ok());
  Child agent = home_->Start();
  ASSERT_TRUE(cp_->fake().WaitUntil(
      [&] { return cp_->fake().Agent(home_->agent_id())->renewals == 1; }, "renewed", 30s));
  // Work goes on with the new identity (jobs and heartbeats present the new certificate: the
  // fake checks every heartbeat's certificate_expires_at against the certificate presented).
  const std::string id = EnqueueVerify();
  ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 30s));
  agent.Signal(SIGTERM);
  EXPECT_EQ(WaitExit(agent, 30s), 0);
  auto info = cp_->fake().Agent(home_->agent_id());
  EXPECT_EQ(info->key_sha256.size(), 2u);
  bool new_key_used = false;
  for (const auto& r : cp_->fake().Requests()) {
    if (r.endpoint == Endpoint::kResult && r.client_key_sha256 == info->key_sha256.back()) {
      new_key_used = true;
    }
  }
  EXPECT_TRUE(new_key_used) << "the result went out with the renewed key";
}

TEST_F(RunTest, TellsSystemdWhenReadyWhatItDoesAndWhenItStops) {
  ASSERT_NO_FATAL_FAILURE(MakeHome());
  ASSERT_TRUE(home_->PutSecret("jira-prod", "password", password_).ok());
  NotifySocket notify;
  ASSERT_TRUE(notify.bound());
  SlowJira("POST", "/group/user", 2s);
  Child agent = home_->Start({"NOTIFY_SOCKET=" + notify.path()});
  ASSERT_TRUE(notify.WaitFor("READY=1", 20s));
  EXPECT_THAT(notify.seen().back(), HasSubstr("STATUS=waiting for jobs; 0 jobs running"));
  const std::string id = EnqueueAddMember("erin");
  ASSERT_TRUE(notify.WaitFor("1 job running", 20s));
  ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 20s));
  ASSERT_TRUE(notify.WaitFor("0 jobs running, 0 results pending", 20s));
  agent.Signal(SIGTERM);
  EXPECT_TRUE(notify.WaitFor("STOPPING=1", 20s));
  EXPECT_EQ(WaitExit(agent, 30s), 0);
}

// Nobody reads the notification socket after READY=1 (PID 1 stalled): its queue fills and the next
// sd_notify blocks. Only the event loop's thread may wait for it; jobs keep running and their
// results keep going out, and the status catches up once the socket is read again.
TEST_F(RunTest, JobsGoOnWhileSystemdDoesNotReadItsNotificationSocket) {
  ASSERT_NO_FATAL_FAILURE(MakeHome());
  ASSERT_TRUE(home_->PutSecret("jira-prod", "password", password_).ok());
  NotifySocket notify;
  ASSERT_TRUE(notify.bound());
  Child agent = home_->Start({"NOTIFY_SOCKET=" + notify.path()});
  ASSERT_TRUE(notify.WaitFor("READY=1", 20s));
  // Each job changes the status line several times (running, finished, result pending, sent):
  // far more datagrams than the socket queues.
  std::vector<std::string> ids;
  for (int i = 0; i < 24; ++i) ids.push_back(EnqueueAddMember("user" + std::to_string(i)));
  for (const auto& id : ids) {
    ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 30s)) << id;
    EXPECT_EQ(cp_->fake().Job(id)->result["status"].asString(), "succeeded") << id;
  }
  EXPECT_TRUE(notify.WaitFor("0 jobs running, 0 results pending", 20s));
  agent.Signal(SIGTERM);
  EXPECT_TRUE(notify.WaitFor("STOPPING=1", 20s));
  EXPECT_EQ(WaitExit(agent, 30s), 0);
}

// SIGHUP: the running agent re-reads its token (a password stored by `secret set` from another
// process is used by the next job) and its configuration (a connection added to the file takes
// jobs); a broken file is refused and the running configuration keeps working.
TEST_F(RunTest, SighupReReadsTheTokenAndTheConfiguration) {
  ASSERT_NO_FATAL_FAILURE(MakeHome());
  Child agent = home_->Start();
  auto run = [&](const std::string& connection) {
    JobSpec spec;
    spec.type = "jira.connection.verify";
    spec.connection = connection;
    spec.params = Json::Value(Json::objectValue);
    auto id = cp_->fake().EnqueueJob(spec);
    EXPECT_TRUE(id.ok());
    if (!id.ok()) return Json::Value();
    EXPECT_TRUE(cp_->fake().WaitForJobState(*id, JobState::kFinished, 30s));
    return cp_->fake().Job(*id)->result;
  };
  auto reloads = [&](const std::string& line) {
    std::size_t n = 0;
    const std::string log = home_->Log();
    for (auto at = log.find(line); at != std::string::npos; at = log.find(line, at + 1)) ++n;
    return n;
  };
  auto hup = [&](const std::string& expect, std::size_t before) {
    agent.Signal(SIGHUP);
    return cp_->fake().WaitUntil([&] { return reloads(expect) > before; }, expect, 20s);
  };
  EXPECT_EQ(run("jira-prod")["error"]["code"].asString(), "credentials_missing");
  EXPECT_EQ(run("jira-two")["error"]["code"].asString(), "connection_not_configured");

  // The operator stores the password with the CLI while the agent runs, and adds a connection.
  auto set_password = [&](const std::string& connection) {
    ProgramResult r = RunProgram({CAKEWALK_AGENT_BINARY, "--config", home_->config_path().string(),
                                  "secret", "set", connection, "password"},
                                 password_ + "\n");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r;
  };
  ASSERT_EQ(set_password("jira-prod").exit_code, 0);
  auto config = ParseJson(ReadFile(home_->config_path()), "agent.json");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  Json::Value two = (*config)["connections"][0];
  two["name"] = "jira-two";
  (*config)["connections"].append(two);
  WriteFile(home_->config_path(), "{ \"state_dir\": ", 0600);  // a half-written file first
  ASSERT_TRUE(hup("reload failed", reloads("reload failed")));
  EXPECT_EQ(run("jira-two")["error"]["code"].asString(), "connection_not_configured");
  EXPECT_EQ(run("jira-prod")["status"].asString(), "succeeded");  // the token was re-read
  WriteFile(home_->config_path(), WriteJson(*config), 0600);
  ASSERT_EQ(set_password("jira-two").exit_code, 0);
  ASSERT_TRUE(hup("configuration reloaded", reloads("configuration reloaded")));
  EXPECT_THAT(home_->Log(), HasSubstr("token objects re-read"));
  Json::Value result = run("jira-two");
  EXPECT_EQ(result["status"].asString(), "succeeded") << WriteJson(result);

  agent.Signal(SIGTERM);
  EXPECT_EQ(WaitExit(agent, 30s), 0);
  ExpectPasswordNowhere();
}

// `doctor` checks each Jira connection with the token's secrets, as a job would: reachable, TLS,
// login, Admin permission; a refused password is one failed login at Jira and a failed check
// that says what to do, and the password appears in no output.
TEST_F(RunTest, DoctorChecksEachJiraConnection) {
  ASSERT_NO_FATAL_FAILURE(MakeHome());
  auto doctor = [&] {
    return RunProgram({CAKEWALK_AGENT_BINARY, "--config", home_->config_path().string(), "doctor"});
  };
  ProgramResult missing = doctor();
  EXPECT_EQ(missing.exit_code, 1) << missing.out << missing.err;
  EXPECT_THAT(missing.out, HasSubstr("[ok  ] jira-prod: reachable"));
  EXPECT_THAT(missing.out, HasSubstr("[ok  ] jira-prod: TLS"));
  // Reported once, where the token's secrets are listed, with the command that stores it.
  EXPECT_THAT(missing.out, HasSubstr("[FAIL] secret jira-prod/password: missing"));
  EXPECT_THAT(missing.out, Not(HasSubstr("jira-prod: secrets in the token")));
  EXPECT_THAT(missing.err, HasSubstr("1 check(s) failed"));

  ASSERT_TRUE(home_->PutSecret("jira-prod", "password", password_).ok());
  ProgramResult good = doctor();
  EXPECT_EQ(good.exit_code, 0) << good.out << good.err;
  EXPECT_THAT(good.out, HasSubstr("[ok  ] jira-prod: login"));
  EXPECT_THAT(good.out, HasSubstr("[ok  ] jira-prod: admin permission"));
  EXPECT_EQ(jira_->jira().FailedLoginCount("svc-cakewalk"), 0);

  const std::string wrong = MakeCanary("wrong-password");
  ASSERT_TRUE(home_->PutSecret("jira-prod", "password", wrong).ok());
  ProgramResult refused = doctor();
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.out, HasSubstr("[FAIL] jira-prod: login"));
  EXPECT_THAT(refused.out, HasSubstr("secret set jira-prod password"));
  EXPECT_EQ(jira_->jira().FailedLoginCount("svc-cakewalk"), 1);
  for (const std::string& secret : {password_, wrong}) {
    EXPECT_TRUE(
        FindCanaryIn(secret,
                     missing.out + missing.err + good.out + good.err + refused.out + refused.err,
                     "doctor output")
            .empty());
  }
}

TEST_F(RunTest, OneAgentPerStateFolder) {
  ASSERT_NO_FATAL_FAILURE(MakeHome());
  Child first = home_->Start();
  ASSERT_TRUE(cp_->fake().WaitForHeartbeats(1, 20s));
  Child second = home_->Start();
  EXPECT_EQ(WaitExit(second, 20s), 1);
  EXPECT_THAT(home_->Log(), HasSubstr("another cakewalk-agent process is using the job journal"));
  first.Signal(SIGTERM);
  EXPECT_EQ(WaitExit(first, 30s), 0);
}

}  // namespace
}  // namespace cakewalk::testing
