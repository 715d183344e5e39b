// Crash safety with the real binary: `cakewalk-agent run` is SIGKILLed at chosen and at random
// points while jobs run and results are owed, then restarted. The fake control plane's ground
// truth must show every job with exactly one accepted result (repeats of the same result are
// allowed: results are idempotent; a different second result is a violation), nothing lost, and
// the agent's journal must account for every executor start (runs) — a job runs again only after
// its earlier run was interrupted by a kill.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <csignal>
#include <map>
#include <random>
#include <set>

#include "base/json.h"
#include "tests/agent/agent_process.h"

namespace cakewalk::testing {
namespace {

using namespace std::chrono_literals;

class CrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RunningControlPlaneOptions o;
    o.control_plane.lease_duration = 2s;
    auto cp = RunningControlPlane::Start(o);
    ASSERT_TRUE(cp.ok()) << cp.status().ToString();
    cp_ = std::move(cp).value();
    const std::string password = "correct horse battery staple";
    auto jira = ServeJiraWithAdmin(password);
    ASSERT_TRUE(jira.ok()) << jira.status().ToString();
    jira_ = std::move(jira).value();
    for (int i = 0; i < 60; ++i) {
      NewUser u;
      u.username = User(i);
      u.email = User(i) + "@corp.example";
      u.display_name = "User " + std::to_string(i);
      ASSERT_TRUE(jira_->jira().AddUser(u).ok());
    }
    AgentHomeOptions options;
    options.max_concurrent = 2;
    options.jira = jira_.get();
    auto home = AgentHome::Create(*cp_, options);
    ASSERT_TRUE(home.ok()) << home.status().ToString();
    home_ = std::move(home).value();
    ASSERT_TRUE(home_->PutSecret("jira-prod", "password", password).ok());
  }

  static std::string User(int i) { return "user" + std::to_string(100 + i); }

  void TearDown() override {
    if (HasFailure()) std::cerr << "--- agent log ---\n" << home_->Log();
  }

  // Adds the next seeded user to jira-software-users (a mutating, idempotent job).
  std::string EnqueueAddMember() {
    JobSpec spec;
    spec.type = "jira.group.add_member";
    spec.connection = "jira-prod";
    spec.params["user"]["username"] = User(next_user_++);
    spec.params["group"] = "jira-software-users";
    auto id = cp_->fake().EnqueueJob(spec);
    EXPECT_TRUE(id.ok());
    return id.ok() ? *id : std::string();
  }

  // Jira changed exactly what the jobs asked for, once each: every user is a member, added by
  // exactly one mutation, however often a job ran.
  void CheckJira() {
    std::map<std::string, int> added;
    for (const auto& m : jira_->jira().Mutations()) {
      if (m.kind == "group_member_added") ++added[m.label];
    }
    const auto members = jira_->jira().GroupMemberIds("jira-software-users");
    for (int i = 0; i < next_user_; ++i) {
      EXPECT_EQ(added[User(i)], 1) << User(i);
      const auto truth = jira_->jira().FindUser(User(i));
      ASSERT_TRUE(truth.has_value());
      EXPECT_NE(std::find(members.begin(), members.end(), truth->id), members.end()) << User(i);
    }
  }

  void Kill(Child& agent) {
    agent.Signal(SIGKILL);
    EXPECT_EQ(WaitExit(agent, 10s), -1);
  }

  // Runs the agent until every job is finished at the fake and nothing is owed, then stops it.
  void RunToCompletion(const std::vector<std::string>& ids) {
    cp_->fake().ClearFaults();
    Child agent = home_->Start();
    for (const auto& id : ids) {
      ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 60s)) << id;
    }
    // Let the agent record the acknowledgements, then stop it cleanly.
    std::this_thread::sleep_for(1s);
    agent.Signal(SIGTERM);
    ASSERT_EQ(WaitExit(agent, 40s), 0);
  }

  // The ground truth and the journal agree with "exactly once".
  void CheckInvariants(const std::vector<std::string>& ids) {
    std::string violations;
    for (const auto& v : cp_->fake().Violations()) violations += v.job_id + ": " + v.what + "\n";
    EXPECT_TRUE(violations.empty()) << violations;
    auto journal = home_->OpenJournal();
    ASSERT_TRUE(journal.ok()) << journal.status().ToString();
    EXPECT_EQ((*journal)->PendingCount().value(), 0);
    for (const auto& id : ids) {
      SCOPED_TRACE(id);
      auto job = cp_->fake().Job(id);
      ASSERT_TRUE(job.has_value());
      EXPECT_EQ(job->state, JobState::kFinished);
      EXPECT_FALSE(job->differing_results);
      int accepted = 0;
      std::set<std::string> contents;
      for (const auto& d : job->result_deliveries) {
        if (d.outcome == "accepted") ++accepted;
        if (d.outcome == "accepted" || d.outcome == "duplicate") {
          Json::Value body = d.body;
          body.removeMember("lease_id");
          contents.insert(WriteJson(body));
        }
      }
      EXPECT_EQ(accepted, 1) << "exactly one accepted result";
      EXPECT_EQ(contents.size(), 1u) << "every delivery carried the same result";
      // One lease at a time, each ended before the next began.
      for (std::size_t i = 1; i < job->leases.size(); ++i) {
        EXPECT_NE(job->leases[i - 1].end, LeaseInfo::End::kActive);
        EXPECT_GE(job->leases[i].granted_at, job->leases[i - 1].granted_at);
      }
      auto entry = (*journal)->Find(id);
      ASSERT_TRUE(entry.ok() && entry->has_value()) << "the journal knows every job";
      EXPECT_EQ((*entry)->state, agent::JournalState::kReported);
      ASSERT_TRUE((*entry)->result.has_value());
      // Runs beyond the first are explained by interruptions (the job is idempotent).
      auto history = (*journal)->History(id);
      ASSERT_TRUE(history.ok());
      int interrupted = 0;
      for (const auto& h : *history) {
        if (h.state == "interrupted") ++interrupted;
      }
      EXPECT_GE((*entry)->runs, 1);
      EXPECT_LE((*entry)->runs, interrupted + 1) << "a job never runs again without a reason";
      // The job ran at most once per delivery the fake made.
      EXPECT_LE((*entry)->runs, static_cast<int>(job->leases.size()));
    }
  }

  std::unique_ptr<RunningControlPlane> cp_;
  std::unique_ptr<ServedJira> jira_;
  std::unique_ptr<AgentHome> home_;
  int next_user_ = 0;
};

TEST_F(CrashTest, KilledAfterTheResultWasAcceptedButBeforeTheJournalKnew) {
  // The fake stores the result, then holds its answer: the agent is killed in between.
  ControlPlaneFault delay;
  delay.kind = ControlPlaneFault::Kind::kDelay;
  delay.delay = 5s;
  cp_->fake().QueueFault(delay, 1, Endpoint::kResult);
  Child agent = home_->Start();
  const std::string id = EnqueueAddMember();
  ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 20s));
  Kill(agent);
  RunToCompletion({id});
  auto job = cp_->fake().Job(id);
  ASSERT_EQ(job->result_deliveries.size(), 2u);
  EXPECT_EQ(job->result_deliveries[0].outcome, "accepted");
  EXPECT_EQ(job->result_deliveries[1].outcome, "duplicate") << "the same result, sent again";
  CheckInvariants({id});
  CheckJira();
  auto journal = home_->OpenJournal();
  ASSERT_TRUE(journal.ok());
  EXPECT_EQ((*journal)->Find(id).value()->runs, 1) << "never run twice";
}

TEST_F(CrashTest, OwedResultsSurviveAKillAndGoOutInOrder) {
  cp_->fake().QueueFault(ControlPlaneFault::Status(503), 100000, Endpoint::kResult);
  Child agent = home_->Start();
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(EnqueueAddMember());
  // Every job finished and its result was journaled before the kill (the agent logs a finished
  // job after journaling it). Results go out strictly in order, so only the first is being
  // retried.
  ASSERT_TRUE(cp_->fake().WaitUntil(
      [&] {
        const std::string log = home_->Log();
        for (const auto& id : ids) {
          if (log.find("job " + id + " (jira.group.add_member) succeeded") == std::string::npos) {
            return false;
          }
        }
        return true;
      },
      "every job finished locally", 30s));
  Kill(agent);
  for (const auto& id : ids) EXPECT_NE(cp_->fake().Job(id)->state, JobState::kFinished);
  RunToCompletion(ids);
  CheckInvariants(ids);
  CheckJira();
  // Delivered in the order they were queued (a re-delivery re-queues a stored result at the end).
  auto journal = home_->OpenJournal();
  ASSERT_TRUE(journal.ok());
  std::vector<std::pair<std::int64_t, SysTime>> order;
  for (const auto& id : ids) {
    auto outbox = (*journal)->OutboxOf(id);
    ASSERT_TRUE(outbox.ok() && !outbox->empty());
    SysTime accepted_at{};
    const auto job = cp_->fake().Job(id);
    for (const auto& d : job->result_deliveries) {
      if (d.outcome == "accepted") accepted_at = d.received_at;
    }
    std::int64_t acknowledged = -1;
    for (const auto& [seq, state] : *outbox) {
      if (state == agent::OutboxState::kAcknowledged) acknowledged = seq;
    }
    EXPECT_GE(acknowledged, 0);
    order.emplace_back(acknowledged, accepted_at);
  }
  std::sort(order.begin(), order.end());
  for (std::size_t i = 1; i < order.size(); ++i) {
    EXPECT_LE(order[i - 1].second, order[i].second) << "outbox " << order[i].first;
  }
}

TEST_F(CrashTest, RandomKillsLoseNothingAndRunNothingTwiceWithoutReason) {
  std::mt19937 rng(20261204);
  std::vector<std::string> ids;
  // Each membership change takes a while and is done before Jira answers: kills land while jobs
  // run, and after Jira changed but before the agent heard.
  FaultRule slow_jira;
  slow_jira.method = "POST";
  slow_jira.path_contains = "/group/user";
  slow_jira.count = -1;
  slow_jira.transport = Fault{Fault::kDelay, 500ms};
  jira_->jira().QueueFault(slow_jira);
  for (int round = 0; round < 14; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    // New work every round, and misbehaviour that widens the windows: answers lost after the
    // work was done, slow answers, results refused for a while.
    for (int i = 0; i < 3; ++i) ids.push_back(EnqueueAddMember());
    cp_->fake().ClearFaults();
    switch (round % 4) {
      case 0:
        cp_->fake().QueueFault(ControlPlaneFault::Reset(/*process_request=*/true), 3,
                               Endpoint::kResult);
        break;
      case 1: {
        ControlPlaneFault slow;
        slow.kind = ControlPlaneFault::Kind::kDelay;
        slow.delay = 700ms;
        cp_->fake().QueueFault(slow, 4, Endpoint::kResult);
        break;
      }
      case 2: {
        ControlPlaneFault slow;
        slow.kind = ControlPlaneFault::Kind::kDelay;
        slow.delay = 400ms;
        cp_->fake().QueueFault(slow, 2, Endpoint::kClaim);
        cp_->fake().QueueFault(ControlPlaneFault::Status(503), 3, Endpoint::kResult);
        break;
      }
      default:
        break;
    }
    Child agent = home_->Start();
    std::uniform_int_distribution<int> ms(150, 1200);
    std::this_thread::sleep_for(std::chrono::milliseconds(ms(rng)));
    Kill(agent);
  }
  jira_->jira().ClearFaults();
  RunToCompletion(ids);
  CheckInvariants(ids);
  CheckJira();
  // The kills landed in the interesting places: jobs interrupted while running (and run again),
  // results sent again, jobs delivered again.
  int resent = 0;
  int redelivered = 0;
  int rerun = 0;
  auto journal = home_->OpenJournal();
  ASSERT_TRUE(journal.ok());
  for (const auto& id : ids) {
    auto job = cp_->fake().Job(id);
    if (job->result_deliveries.size() > 1) ++resent;
    if (job->leases.size() > 1) ++redelivered;
    if ((*journal)->Find(id).value()->runs > 1) ++rerun;
  }
  std::cerr << ids.size() << " jobs: " << rerun << " interrupted and run again, " << resent
            << " had their result sent again, " << redelivered << " were delivered again\n";
  EXPECT_GE(rerun, 1) << "no kill hit a running job; the test proved little";
}

}  // namespace
}  // namespace cakewalk::testing
