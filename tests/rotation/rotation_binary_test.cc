// Rotation with the real binary: `cakewalk-agent secret rotate` killed by SIGKILL between every
// pair of steps (tests/rotation/fault_agent.cc arms one fault point), then the real daemon started
// on the same state: it settles the rotation before its job loop runs, and a verify job logs in.
// Jira's mutation log shows exactly one password change per rotation that reached it. Also: a
// kill while Jira is processing the change, two command-line rotations at once, MFA key rotation
// end to end and killed between Jira's acceptance and the promotion, the remote secret.rotate job
// (refused by default, working when allowed), RotateSecret over D-Bus (password and certificate,
// and the command line routed through the running daemon), certificate renewal from the command
// line, and the passwords in no log, output or file.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <openssl/rand.h>
#include <signal.h>

#include <mutex>
#include <thread>

#include "agent/config.h"
#include "agent/identity.h"
#include "agent/token_context.h"
#include "base/json.h"
#include "systemd/status_client.h"
#include "tests/agent/agent_process.h"
#include "tests/fakes/jira/totp.h"
#include "tests/support/canary.h"
#include "tests/systemd/private_bus.h"
#include "tests/systemd/process.h"

#ifndef CAKEWALK_FAULT_AGENT
#error "CAKEWALK_FAULT_AGENT must name the fault-armed agent"
#endif

namespace cakewalk::testing {
namespace {

using namespace std::chrono_literals;
using hsm::SecretState;
using ::testing::HasSubstr;

class RotationBinaryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RunningControlPlaneOptions o;
    o.control_plane.lease_duration = 5s;
    auto cp = RunningControlPlane::Start(o);
    ASSERT_TRUE(cp.ok()) << cp.status().ToString();
    cp_ = std::move(cp).value();
    password_ = MakeCanary("jira-password");
    cp_->fake().AddForbiddenValue(password_);
    seed_.resize(20);
    ASSERT_EQ(RAND_bytes(seed_.data(), 20), 1);
  }

  void TearDown() override {
    std::string violations;
    for (const auto& v : cp_->fake().Violations()) violations += v.job_id + ": " + v.what + "\n";
    EXPECT_TRUE(violations.empty()) << violations;
    if (HasFailure() && home_) std::cerr << "--- agent log ---\n" << home_->Log();
  }

  // A fake Jira (DC 10.3), an agent home with the password (and with `totp`, the MFA key) in
  // its token, and `edit` applied to the configuration file.
  void Make(bool totp, const std::function<void(Json::Value&)>& edit = {}) {
    auto jira = ServeJiraWithAdmin(password_);
    ASSERT_TRUE(jira.ok()) << jira.status().ToString();
    jira_ = std::move(jira).value();
    AgentHomeOptions options;
    options.jira = jira_.get();
    options.connection_extra =
        std::string(R"("provisioning": {"auth": "password", "username": "svc-cakewalk")") +
        (totp ? R"(, "mfa": "totp"})" : "}");
    auto home = AgentHome::Create(*cp_, options);
    ASSERT_TRUE(home.ok()) << home.status().ToString();
    home_ = std::move(home).value();
    ASSERT_TRUE(home_->PutSecret("jira-prod", "password", password_).ok());
    if (totp) {
      ASSERT_TRUE(jira_->jira().EnrolTotp("svc-cakewalk", seed_).ok());
      auto token = OpenToken();
      ASSERT_TRUE(token.ok()) << token.status().ToString();
      hsm::TotpSeed seed;
      seed.key = SecretBytes::CopyOf(std::span<const std::uint8_t>(seed_));
      ASSERT_TRUE(
          (*token)->secrets().EnrollTotp("jira-prod", seed, hsm::Activation::kCurrent).ok());
    }
    if (edit) {
      auto config = ParseJson(ReadFile(home_->config_path()), "config");
      ASSERT_TRUE(config.ok());
      edit(*config);
      WriteFile(home_->config_path(), WritePrettyJson(*config), 0600);
    }
  }

  // The token, opened the way the agent opens it (only while no agent process runs).
  Result<std::unique_ptr<agent::TokenContext>> OpenToken() {
    CW_ASSIGN_OR_RETURN(agent::Config config,
                        agent::LoadConfig(home_->config_path(), agent::ConfigEnvironment{}));
    return agent::TokenContext::Open(config, null_log_);
  }
  std::map<std::uint32_t, SecretState> Versions(const std::string& name = "password") {
    std::map<std::uint32_t, SecretState> out;
    auto token = OpenToken();
    EXPECT_TRUE(token.ok()) << token.status().ToString();
    if (!token.ok()) return out;
    auto list = (*token)->secrets().List();
    EXPECT_TRUE(list.ok());
    if (!list.ok()) return out;
    for (const auto& i : *list) {
      if (i.connection == "jira-prod" && i.name == name) out[i.version] = i.state;
    }
    return out;
  }
  std::string CurrentPassword() {
    auto token = OpenToken();
    if (!token.ok()) return "<no token>";
    auto v = (*token)->secrets().Unseal("jira-prod", "password", "test: read the password");
    return v.ok() ? std::string(v->RevealString(SecretAccess::Grant())) : "<none>";
  }

  ProcessResult Cli(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
                    const std::string& input = "") {
    std::vector<std::string> argv = {CAKEWALK_AGENT_BINARY, "--config",
                                     home_->config_path().string()};
    argv.insert(argv.end(), args.begin(), args.end());
    ProcessResult r = RunProcess(argv, env, 180s, input);
    std::lock_guard lock(outputs_mu_);  // two threads run CLI commands at once
    outputs_ += r.out + r.err;
    return r;
  }
  ProcessResult FaultCli(const std::string& point, const std::vector<std::string>& args) {
    std::vector<std::string> argv = {CAKEWALK_FAULT_AGENT, "--config",
                                     home_->config_path().string()};
    argv.insert(argv.end(), args.begin(), args.end());
    ProcessResult r = RunProcess(argv, {"CAKEWALK_TEST_CRASH_AT=" + point}, 180s);
    std::lock_guard lock(outputs_mu_);
    outputs_ += r.out + r.err;
    return r;
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
  // The job's accepted result once it finished (null on timeout).
  Json::Value Finished(const std::string& id, std::chrono::seconds timeout = 120s) {
    if (!cp_->fake().WaitForJobState(id, JobState::kFinished, timeout)) return Json::Value();
    return cp_->fake().Job(id)->result;
  }
  // Starts the real daemon, runs a verify job, stops the daemon; the job's result.
  Json::Value VerifyWithDaemon(const std::vector<std::string>& env = {}) {
    Child agent = home_->Start(env);
    Json::Value result = Finished(Enqueue("jira.connection.verify"));
    agent.Signal(SIGTERM);
    EXPECT_EQ(WaitExit(agent, 60s), 0);
    return result;
  }

  int PasswordChanges() const {
    int n = 0;
    for (const Mutation& m : jira_->jira().Mutations()) n += m.kind == "password_changed" ? 1 : 0;
    return n;
  }

  // Neither secret in any output, log, heartbeat or file of the agent.
  void ExpectNowhere(const std::string& secret) {
    EXPECT_TRUE(FindCanaryIn(secret, outputs_, "command outputs").empty());
    EXPECT_TRUE(FindCanaryIn(secret, home_->Log(), "agent log").empty());
    EXPECT_TRUE(FindCanaryInTree(secret, home_->state_dir()).empty());
    for (const auto& hb : cp_->fake().Heartbeats()) {
      EXPECT_TRUE(FindCanaryIn(secret, hb.body, "heartbeat").empty());
    }
  }

  NullLogSink null_log_;
  std::string password_;
  std::vector<std::uint8_t> seed_;
  std::mutex outputs_mu_;
  std::string outputs_;
  std::unique_ptr<RunningControlPlane> cp_;
  std::unique_ptr<ServedJira> jira_;
  std::unique_ptr<AgentHome> home_;
};

// ---- Kill -9 between every pair of steps -------------------------------------------------------

struct CrashCase {
  const char* point;
  bool reached_jira;  // Jira had the new password when the process died
};

class CrashMatrixTest : public RotationBinaryTest,
                        public ::testing::WithParamInterface<CrashCase> {};

TEST_P(CrashMatrixTest, KilledAtThisStepThenTheRestartedAgentWorks) {
  const CrashCase c = GetParam();
  ASSERT_NO_FATAL_FAILURE(Make(false));
  ProcessResult killed = FaultCli(c.point, {"secret", "rotate", "jira-prod", "password"});
  ASSERT_EQ(killed.signal, SIGKILL) << "exit " << killed.exit_code << ": " << killed.err;
  EXPECT_THAT(killed.err, HasSubstr(std::string("SIGKILL at ") + c.point));
  EXPECT_EQ(PasswordChanges(), c.reached_jira ? 1 : 0);

  // The restarted daemon settles the rotation before its first job; the job logs in.
  Json::Value result = VerifyWithDaemon();
  EXPECT_EQ(result["status"].asString(), "succeeded") << WriteJson(result);
  EXPECT_EQ(result["output"]["account"]["username"].asString(), "svc-cakewalk");

  // Exactly one change per rotation that reached Jira: recovery never changes it again.
  EXPECT_EQ(PasswordChanges(), c.reached_jira ? 1 : 0);
  const auto versions = Versions();
  for (const auto& [v, state] : versions) EXPECT_NE(state, SecretState::kPending) << v;
  std::uint32_t current = 0;
  for (const auto& [v, state] : versions) {
    if (state == SecretState::kCurrent) current = v;
  }
  EXPECT_EQ(current, c.reached_jira ? 2u : 1u);
  EXPECT_FALSE(
      std::filesystem::exists(home_->state_dir() / "rotation" / "jira-prod.password.json"));
  const std::string now = CurrentPassword();
  EXPECT_EQ(now == password_, !c.reached_jira);

  // And the next rotation works from there.
  ProcessResult again = Cli({"secret", "rotate", "jira-prod", "password"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(PasswordChanges(), c.reached_jira ? 2 : 1);
  ExpectNowhere(password_);
  ExpectNowhere(now);
  ExpectNowhere(CurrentPassword());
}

INSTANTIATE_TEST_SUITE_P(Steps, CrashMatrixTest,
                         ::testing::Values(CrashCase{"rotation.staged", false},
                                           CrashCase{"rotation.change-recorded", false},
                                           CrashCase{"rotation.jira-changed", true},
                                           CrashCase{"rotation.verified", true},
                                           CrashCase{"rotation.promoted", true},
                                           CrashCase{"rotation.finished", true}),
                         [](const ::testing::TestParamInfo<CrashCase>& param) {
                           std::string name = std::string(param.param.point).substr(9);
                           for (char& ch : name) {
                             if (ch == '-') ch = '_';
                           }
                           return name;
                         });

TEST_F(RotationBinaryTest, KilledWhileJiraProcessesTheChange) {
  ASSERT_NO_FATAL_FAILURE(Make(false));
  // Jira carries the change out, then takes 5 s to answer: the agent dies in between.
  FaultRule slow;
  slow.method = "PUT";
  slow.path_contains = "/myself/password";
  slow.transport = Fault{Fault::kDelay, 5s};
  jira_->jira().QueueFault(slow);
  Child rotation = Child::Spawn({CAKEWALK_AGENT_BINARY, "--config", home_->config_path().string(),
                                 "secret", "rotate", "jira-prod", "password"},
                                {}, (home_->dir() / "rotate.err").string());
  ASSERT_TRUE(
      cp_->fake().WaitUntil([&] { return PasswordChanges() == 1; }, "Jira changed it", 60s));
  rotation.Signal(SIGKILL);
  EXPECT_EQ(WaitExit(rotation, 10s), -1);
  EXPECT_EQ(Versions()[2], SecretState::kPending);
  Json::Value result = VerifyWithDaemon();
  EXPECT_EQ(result["status"].asString(), "succeeded") << WriteJson(result);
  EXPECT_EQ(PasswordChanges(), 1);
  EXPECT_EQ(Versions()[2], SecretState::kCurrent);
  // The daemon's recovery: one login with the staged password, nothing refused.
  EXPECT_THAT(home_->Log(), HasSubstr("Jira has the new password; version 2 promoted"));
  EXPECT_EQ(jira_->jira().FailedLoginCount("svc-cakewalk"), 0);
}

TEST_F(RotationBinaryTest, KilledAfterJiraChangedWithTwoStepVerification) {
  ASSERT_NO_FATAL_FAILURE(Make(true));
  ProcessResult killed =
      FaultCli("rotation.jira-changed", {"secret", "rotate", "jira-prod", "password"});
  ASSERT_EQ(killed.signal, SIGKILL) << killed.err;
  EXPECT_EQ(PasswordChanges(), 1);
  Json::Value result = VerifyWithDaemon();
  EXPECT_EQ(result["status"].asString(), "succeeded") << WriteJson(result);
  EXPECT_EQ(result["output"]["mfa"].asString(), "totp") << WriteJson(result);
  EXPECT_EQ(Versions()[2], SecretState::kCurrent);
  EXPECT_EQ(PasswordChanges(), 1);
  EXPECT_EQ(jira_->jira().FailedLoginCount("svc-cakewalk"), 0);
}

TEST_F(RotationBinaryTest, TwoCommandLineRotationsAtOnceRunOneAfterTheOther) {
  ASSERT_NO_FATAL_FAILURE(Make(false));
  ProcessResult a, b;
  std::thread ta([&] { a = Cli({"secret", "rotate", "jira-prod", "password"}); });
  std::thread tb([&] { b = Cli({"secret", "rotate", "jira-prod", "password"}); });
  ta.join();
  tb.join();
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(PasswordChanges(), 2);
  const std::string both = a.out + b.out;
  EXPECT_THAT(both, HasSubstr("version 2 is in use"));
  EXPECT_THAT(both, HasSubstr("version 3 is in use"));
  EXPECT_EQ(Versions()[3], SecretState::kCurrent);
  Json::Value result = VerifyWithDaemon();
  EXPECT_EQ(result["status"].asString(), "succeeded") << WriteJson(result);
}

TEST_F(RotationBinaryTest, CloudConnectionsAreRefusedWithWhatToDoInstead) {
  ASSERT_NO_FATAL_FAILURE(Make(false, [](Json::Value& c) {
    Json::Value& conn = c["connections"][0];
    conn["type"] = "jira-cloud";
    conn["provisioning"] = Json::Value(Json::objectValue);
    conn["provisioning"]["auth"] = "api-token";
    conn["provisioning"]["username"] = "admin@corp.example";
  }));
  ProcessResult r = Cli({"secret", "rotate", "jira-prod", "password"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("Jira Cloud"));
  EXPECT_THAT(r.err, HasSubstr("cakewalk-agent secret set jira-prod api-token"));
  EXPECT_EQ(PasswordChanges(), 0);
}

// ---- MFA keys ----------------------------------------------------------------------------------

class MfaRotationTest : public RotationBinaryTest {
 protected:
  // What an operator does: enrol a new authenticator for the account in Jira (the fake now wants
  // codes of the new key), and give the agent the same key with `mfa enroll`.
  void EnrolNewKey() {
    new_seed_.resize(20);
    ASSERT_EQ(RAND_bytes(new_seed_.data(), 20), 1);
    ASSERT_TRUE(jira_->jira().EnrolTotp("svc-cakewalk", new_seed_).ok());
    ProcessResult r = Cli({"mfa", "enroll", "jira-prod"}, {}, Base32Encode(new_seed_) + "\n");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.err, HasSubstr("staged next to the current one"));
    EXPECT_EQ(Versions("totp"), (std::map<std::uint32_t, SecretState>{{1, SecretState::kCurrent},
                                                                      {2, SecretState::kPending}}));
  }
  std::vector<std::uint8_t> new_seed_;
};

TEST_F(MfaRotationTest, TheStagedKeyBecomesCurrentAfterItsFirstSuccessfulLogin) {
  ASSERT_NO_FATAL_FAILURE(
      Make(true, [](Json::Value& c) { c["rotation"]["old_version_grace_seconds"] = 0; }));
  ASSERT_NO_FATAL_FAILURE(EnrolNewKey());
  Json::Value result = VerifyWithDaemon();
  EXPECT_EQ(result["status"].asString(), "succeeded") << WriteJson(result);
  EXPECT_EQ(result["output"]["mfa"].asString(), "totp");
  auto versions = Versions("totp");
  EXPECT_EQ(versions[2], SecretState::kCurrent);
  // The old key is retired (kept for the grace period: 0 here, so the next start destroys it).
  EXPECT_NE(versions.count(1), 0u);
  Json::Value again = VerifyWithDaemon();
  EXPECT_EQ(again["status"].asString(), "succeeded") << WriteJson(again);
  EXPECT_EQ(Versions("totp"), (std::map<std::uint32_t, SecretState>{{2, SecretState::kCurrent}}));
  EXPECT_THAT(home_->Log(), HasSubstr("retired version 1 destroyed after the grace period"));
}

TEST_F(MfaRotationTest, KilledBetweenJiraAcceptingTheStagedKeyAndItsPromotion) {
  ASSERT_NO_FATAL_FAILURE(Make(true));
  ASSERT_NO_FATAL_FAILURE(EnrolNewKey());
  {
    Child dying =
        Child::Spawn({CAKEWALK_FAULT_AGENT, "--config", home_->config_path().string(), "run"},
                     {"CAKEWALK_TEST_CRASH_AT=jira.login.staged-totp-accepted"},
                     (home_->dir() / "dying.log").string());
    Enqueue("jira.connection.verify");
    EXPECT_EQ(WaitExit(dying, 120s), -1);
  }
  EXPECT_THAT(ReadFile(home_->dir() / "dying.log"),
              HasSubstr("SIGKILL at jira.login.staged-totp-accepted"));
  // Jira accepted the new key's code, the token still says it is staged.
  EXPECT_EQ(Versions("totp")[2], SecretState::kPending);
  Json::Value result = VerifyWithDaemon();
  EXPECT_EQ(result["status"].asString(), "succeeded") << WriteJson(result);
  EXPECT_EQ(Versions("totp")[2], SecretState::kCurrent);
}

TEST_F(MfaRotationTest, MfaActivatePromotesTheStagedKey) {
  ASSERT_NO_FATAL_FAILURE(Make(true));
  ASSERT_NO_FATAL_FAILURE(EnrolNewKey());
  ProcessResult r = Cli({"mfa", "activate", "jira-prod"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Versions("totp")[2], SecretState::kCurrent);
  Json::Value result = VerifyWithDaemon();
  EXPECT_EQ(result["status"].asString(), "succeeded") << WriteJson(result);
}

// ---- The daemon: jobs and D-Bus ----------------------------------------------------------------

TEST_F(RotationBinaryTest, RemoteRotationIsRefusedByDefault) {
  ASSERT_NO_FATAL_FAILURE(Make(false, [](Json::Value& c) {
    c["jobs"]["allowed_types"] = Json::Value(Json::arrayValue);
    c["jobs"]["allowed_types"].append("jira.*");
    c["jobs"]["allowed_types"].append("secret.rotate");
  }));
  Child agent = home_->Start();
  Json::Value params(Json::objectValue);
  params["secret"] = "password";
  Json::Value result = Finished(Enqueue("secret.rotate", params), 30s);
  agent.Signal(SIGTERM);
  EXPECT_EQ(WaitExit(agent, 60s), 0);
  EXPECT_EQ(result["status"].asString(), "rejected") << WriteJson(result);
  EXPECT_EQ(result["error"]["code"].asString(), "policy_denied");
  EXPECT_EQ(PasswordChanges(), 0);
  EXPECT_EQ(Versions().size(), 1u);
}

TEST_F(RotationBinaryTest, RemoteRotationWorksWhenAllowed) {
  ASSERT_NO_FATAL_FAILURE(Make(true, [](Json::Value& c) {
    c["jobs"]["allowed_types"] = Json::Value(Json::arrayValue);
    c["jobs"]["allowed_types"].append("jira.*");
    c["jobs"]["allowed_types"].append("secret.rotate");
    c["jobs"]["allow_remote_secret_rotation"] = true;
  }));
  Child agent = home_->Start();
  Json::Value params(Json::objectValue);
  params["secret"] = "password";
  Json::Value result = Finished(Enqueue("secret.rotate", params));
  Json::Value verify = Finished(Enqueue("jira.connection.verify"));
  agent.Signal(SIGTERM);
  EXPECT_EQ(WaitExit(agent, 60s), 0);
  EXPECT_EQ(result["status"].asString(), "succeeded") << WriteJson(result);
  EXPECT_EQ(result["output"]["secret"].asString(), "password");
  EXPECT_EQ(result["output"]["version"].asInt(), 2);
  EXPECT_TRUE(result["output"]["verified"].asBool());
  EXPECT_EQ(verify["status"].asString(), "succeeded") << WriteJson(verify);
  EXPECT_EQ(PasswordChanges(), 1);
  EXPECT_EQ(Versions()[2], SecretState::kCurrent);
  ExpectNowhere(password_);
  ExpectNowhere(CurrentPassword());
}

TEST_F(RotationBinaryTest, RotateSecretOverDBusAndTheCommandLineThroughTheDaemon) {
  ASSERT_NO_FATAL_FAILURE(Make(false));
  PrivateBus bus;
  const std::vector<std::string> env = {"DBUS_SYSTEM_BUS_ADDRESS=" + bus.address()};
  Child agent = home_->Start(env);
  ASSERT_TRUE(cp_->fake().WaitUntil(
      [&] {
        return Cli({"status", "--json"}, env).exit_code == 0;
      },
      "the agent on the bus", 30s));
  // The command line sees the running daemon and has it rotate.
  ProcessResult cli = Cli({"secret", "rotate", "jira-prod", "password"}, env);
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_THAT(cli.err, HasSubstr("The agent is running: it rotates jira-prod/password"));
  EXPECT_THAT(cli.out, HasSubstr("version 2 is in use"));
  EXPECT_THAT(home_->Log(), HasSubstr("rotation of jira-prod/password: rotated"));

  const char* before = std::getenv("DBUS_SYSTEM_BUS_ADDRESS");
  const std::string saved = before != nullptr ? before : "";
  ::setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address().c_str(), 1);
  auto client = sd::AgentClient::ConnectSystem();
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto v3 = client->RotateSecret("jira-prod", "password");
  ASSERT_TRUE(v3.ok()) << v3.status().ToString();
  EXPECT_EQ(*v3, 3);
  auto cert = client->RotateSecret("control-plane", "certificate");
  ASSERT_TRUE(cert.ok()) << cert.status().ToString();
  EXPECT_EQ(*cert, 2);  // the second identity key
  EXPECT_EQ(cp_->fake().Agent(home_->agent_id())->renewals, 1);
  auto totp = client->RotateSecret("jira-prod", "totp");
  ASSERT_FALSE(totp.ok());
  EXPECT_EQ(totp.status().code(), Code::kFailedPrecondition);
  EXPECT_THAT(totp.status().message(), HasSubstr("mfa enroll jira-prod"));
  auto unknown = client->RotateSecret("jira-test", "password");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), Code::kNotFound);
  // A job after all that still logs in.
  Json::Value verify = Finished(Enqueue("jira.connection.verify"));
  EXPECT_EQ(verify["status"].asString(), "succeeded") << WriteJson(verify);
  agent.Signal(SIGTERM);
  EXPECT_EQ(WaitExit(agent, 60s), 0);
  ::setenv("DBUS_SYSTEM_BUS_ADDRESS", saved.c_str(), 1);
  EXPECT_EQ(PasswordChanges(), 2);
  auto identity = agent::ReadIdentity(home_->state_dir());
  ASSERT_TRUE(identity.ok() && identity->has_value());
  EXPECT_EQ((*identity)->current.key_label, "cakewalk-tls-2");
  ExpectNowhere(password_);
}

TEST_F(RotationBinaryTest, CertificateFromTheCommandLineOnlyWhenNoAgentHoldsTheIdentity) {
  ASSERT_NO_FATAL_FAILURE(Make(false));
  ProcessResult r = Cli({"secret", "rotate", "control-plane", "certificate"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("key cakewalk-tls-2 is in use"));
  EXPECT_EQ(cp_->fake().Agent(home_->agent_id())->renewals, 1);
  // A daemon without a bus connection still owns the identity: the command line refuses.
  Child agent = home_->Start();
  ASSERT_TRUE(cp_->fake().WaitForHeartbeats(1, 30s));
  ProcessResult refused = Cli({"secret", "rotate", "control-plane", "certificate"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, HasSubstr("the agent is running"));
  EXPECT_EQ(cp_->fake().Agent(home_->agent_id())->renewals, 1);
  agent.Signal(SIGTERM);
  EXPECT_EQ(WaitExit(agent, 60s), 0);
}

}  // namespace
}  // namespace cakewalk::testing
