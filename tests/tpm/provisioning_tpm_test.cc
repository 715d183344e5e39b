// A provisioning job end to end with the Jira admin's password and TOTP seed in the TPM: the fake
// control plane hands out a signed jira.user.provision job, the agent's job loop verifies and runs
// it with the real Jira executors, the connector logs in to the fake Jira Data Center 10.3 with
// two-step verification (password unsealed and TOTP computed in the TPM), creates the user, and
// the result reaches the control plane.
#include <gtest/gtest.h>

#include <openssl/rand.h>

#include "agent/jira_connection.h"
#include "agent/jira_executors.h"
#include "base/json.h"
#include "tests/agent/loop_harness.h"
#include "tests/fakes/https_server.h"
#include "tests/fakes/jira/fake_jira.h"
#include "tests/fakes/jira/served_jira.h"
#include "tests/support/canary.h"
#include "tests/tpm/fixture.h"

namespace cakewalk::testing {
namespace {

using namespace std::chrono_literals;

class ProvisioningTpmTest : public TpmFixture {};

TEST_F(ProvisioningTpmTest, AProvisioningJobLogsInWithPasswordAndTotpFromTheTpm) {
  TempDir dir("cakewalk-tpm-provisioning");

  // The fake Jira Data Center (10.3: two-step verification over REST), behind TLS.
  FakeJiraOptions jira_options;
  jira_options.version = "10.3.4";
  auto served = ServedJira::Start(jira_options);
  ASSERT_TRUE(served.ok()) << served.status().ToString();
  FakeJira& jira = (*served)->jira();
  WriteFile(dir / "jira-ca.pem", (*served)->ca_pem(), 0644);

  // The admin: a canary password and a random 10-byte seed (what Jira hands out), known to the
  // fake and stored in the TPM token only.
  const std::string password = MakeCanary("jira-password");
  std::vector<std::uint8_t> seed(10);
  ASSERT_EQ(RAND_bytes(seed.data(), 10), 1);
  NewUser admin;
  admin.username = "svc-cakewalk";
  admin.email = "svc-cakewalk@corp.example";
  admin.display_name = "Cakewalk Agent";
  admin.password = password;
  admin.groups = {"jira-administrators", "jira-system-administrators", "jira-software-users"};
  ASSERT_TRUE(jira.AddUser(admin).ok());
  ASSERT_TRUE(jira.EnrolTotp("svc-cakewalk", seed).ok());
  ASSERT_TRUE(jira.AddGroup("Team A").ok());
  ASSERT_TRUE(store_->Put("jira-prod", "password", SecretBytes::CopyOf(password)).ok());
  hsm::TotpSeed totp;
  totp.key = SecretBytes::CopyOf(std::span<const std::uint8_t>(seed));
  ASSERT_TRUE(store_->EnrollTotp("jira-prod", totp, hsm::Activation::kCurrent).ok());

  // The control plane, the job loop and the real Jira executors over the TPM's secret store.
  auto cp = RunningControlPlane::Start();
  ASSERT_TRUE(cp.ok()) << cp.status().ToString();
  LoopHarness h(**cp, dir.path());
  agent::ConnectionConfig& conn = h.config.connections.at(0);
  ASSERT_EQ(conn.name, "jira-prod");
  conn.flavor = agent::JiraFlavor::kDataCenter;
  conn.base_url = (*served)->base_url();
  conn.ca_file = dir / "jira-ca.pem";
  conn.provisioning = agent::ProvisioningConfig{agent::ProvisioningConfig::Auth::kPassword,
                                                "svc-cakewalk", /*mfa_totp=*/true, std::nullopt};
  agent::JiraConnections connections(*store_, h.config.state_dir);
  ASSERT_TRUE(agent::RegisterJiraExecutors(h.registry, connections).ok());
  ASSERT_NO_FATAL_FAILURE(h.Enroll());
  ASSERT_NO_FATAL_FAILURE(h.StartLoop());

  Json::Value params(Json::objectValue);
  params["username"] = "bob";
  params["email"] = "bob@corp.example";
  params["display_name"] = "Bob";
  params["groups"].append("Team A");
  params["products"].append("jira-software");
  auto id = (*cp)->fake().EnqueueJob(Job("jira.user.provision", params));
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  ASSERT_TRUE((*cp)->fake().WaitForJobState(*id, JobState::kFinished));
  auto job = (*cp)->fake().Job(*id);
  ASSERT_TRUE(job.has_value());
  const Json::Value& result = job->result;
  ASSERT_EQ(result["status"].asString(), "succeeded") << WriteJson(result);
  EXPECT_TRUE(result["output"]["created"].asBool()) << WriteJson(result);
  h.StopLoop();

  // Jira has the user, created by the admin who logged in with both factors.
  auto bob = jira.FindUser("bob");
  ASSERT_TRUE(bob.has_value());
  EXPECT_NE(std::find(bob->groups.begin(), bob->groups.end(), "Team A"), bob->groups.end());
  int password_steps = 0, totp_steps = 0;
  for (const HttpRequest& r : (*served)->requests()) {
    if (r.path.find("/rest/tsv/") != std::string::npos &&
        r.path.find("authenticate") != std::string::npos) {
      (r.path.find("totp-code") != std::string::npos ? totp_steps : password_steps)++;
    }
  }
  EXPECT_GE(password_steps, 1);
  EXPECT_GE(totp_steps, 1);
  // Both secrets were used from the token (audit events), and neither left it anywhere else.
  int password_uses = 0, totp_uses = 0;
  for (const auto& e : audit_.WithId(event::kSecretUsed)) {
    if (e.Field("CONNECTION") != "jira-prod") continue;
    if (e.Field("SECRET_NAME") == "password") ++password_uses;
    if (e.Field("SECRET_NAME") == "totp") ++totp_uses;
  }
  EXPECT_GE(password_uses, 1);
  EXPECT_GE(totp_uses, 1);
  EXPECT_TRUE(FindCanaryIn(password, WriteJson(result), "job result").empty());
  EXPECT_TRUE(FindCanaryIn(password, h.log.Text(), "agent log").empty());
  EXPECT_TRUE(FindCanaryInTree(password, dir.path()).empty());
  EXPECT_TRUE(FindCanaryInTree(password, tpm_->dir()).empty());
  EXPECT_TRUE((*cp)->fake().Violations().empty());
}

}  // namespace
}  // namespace cakewalk::testing
