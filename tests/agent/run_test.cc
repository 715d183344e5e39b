// `cakewalk-agent run`, the real binary, against the in-process fake control plane with a private
// SoftHSM token: jobs end to end, SIGTERM and the exit status, the heartbeat's content (canary
// secrets in the token never leave it), results kept across a restart, one agent per state
// folder.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <csignal>

#include "base/json.h"
#include "tests/agent/agent_process.h"
#include "tests/support/canary.h"

namespace cakewalk::testing {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

class RunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RunningControlPlaneOptions o;
    o.control_plane.lease_duration = 5s;
    auto cp = RunningControlPlane::Start(o);
    ASSERT_TRUE(cp.ok()) << cp.status().ToString();
    cp_ = std::move(cp).value();
    password_ = MakeCanary("jira-password");
    auto jira = ServedJira::Start(password_);
    ASSERT_TRUE(jira.ok()) << jira.status().ToString();
    jira_ = std::move(jira).value();
    AgentHomeOptions options;
    options.jira = jira_.get();
    auto home = AgentHome::Create(*cp_, options);
    ASSERT_TRUE(home.ok()) << home.status().ToString();
    home_ = std::move(home).value();
    cp_->fake().AddForbiddenValue(password_);
  }

  void TearDown() override {
    std::string violations;
    for (const auto& v : cp_->fake().Violations()) violations += v.job_id + ": " + v.what + "\n";
    EXPECT_TRUE(violations.empty()) << violations;
    if (HasFailure()) std::cerr << "--- agent log ---\n" << home_->Log();
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

TEST_F(RunTest, HeartbeatIsMetadataOnly) {
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

TEST_F(RunTest, OneAgentPerStateFolder) {
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
