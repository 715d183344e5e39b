// High availability: two agents (separate identities, journals and loops) against one fake
// control plane share the work; when one stops or loses the network mid-job, its lease runs out
// and the other completes the job; a job never runs on both at once — checked both in the fake's
// lease history and in the executors' own start/stop times.
#include <gtest/gtest.h>

#include <mutex>

#include "agent/job_loop.h"
#include "tests/agent/loop_harness.h"

namespace cakewalk::agent {
namespace {

using namespace std::chrono_literals;
using testing::JobState;
using testing::LoopHarness;
using testing::RunningControlPlane;
using testing::SpyExecutor;
using Clock = std::chrono::steady_clock;

constexpr char kAddMember[] = "jira.group.add_member";

// When each agent ran each job.
class RunLog {
 public:
  struct Run {
    std::string agent;
    std::string job;
    Clock::time_point start;
    Clock::time_point end;
  };
  // A run that has not ended yet lasts forever (so an overlap with it is seen at once).
  std::size_t Begin(std::string agent, std::string job) {
    std::lock_guard lock(mu_);
    runs_.push_back({std::move(agent), std::move(job), Clock::now(), Clock::time_point::max()});
    return runs_.size() - 1;
  }
  void End(std::size_t index) {
    std::lock_guard lock(mu_);
    runs_[index].end = Clock::now();
  }
  std::vector<Run> runs() const {
    std::lock_guard lock(mu_);
    return runs_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<Run> runs_;
};

// Runs for `duration` (or until stopped, or forever while `*hold`), logging the interval.
SpyExecutor::Behaviour Timed(RunLog& log, std::string agent, std::chrono::milliseconds duration,
                             std::shared_ptr<std::atomic<bool>> hold = nullptr) {
  return [&log, agent, duration, hold](JobContext& job) -> Result<Json::Value> {
    const std::size_t run = log.Begin(agent, job.job_id);
    const auto start = Clock::now();
    bool stopped = false;
    while ((hold != nullptr && hold->load()) || Clock::now() - start < duration) {
      if (job.stop.stop_requested()) {
        stopped = true;
        break;
      }
      std::this_thread::sleep_for(2ms);
    }
    log.End(run);
    if (stopped) return StoppedStatus();
    return testing::AddMemberOutput(agent);
  };
}

class HaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::RunningControlPlaneOptions o;
    o.control_plane.lease_duration = 2s;
    auto cp = RunningControlPlane::Start(o);
    ASSERT_TRUE(cp.ok()) << cp.status().ToString();
    cp_ = std::move(cp).value();
    a_ = std::make_unique<LoopHarness>(*cp_, dir_a_.path());
    b_ = std::make_unique<LoopHarness>(*cp_, dir_b_.path());
    ASSERT_NO_FATAL_FAILURE(a_->Enroll());
    ASSERT_NO_FATAL_FAILURE(b_->Enroll());
    ASSERT_NE(a_->agent.agent_id, b_->agent.agent_id);
  }

  void TearDown() override {
    a_->StopLoop();
    b_->StopLoop();
    std::string violations;
    for (const auto& v : cp_->fake().Violations()) violations += v.job_id + ": " + v.what + "\n";
    EXPECT_TRUE(violations.empty()) << violations;
  }

  // No job ran on both agents at overlapping times, and no lease overlapped another.
  void ExpectNeverConcurrent(const std::vector<std::string>& ids) {
    const auto runs = log_.runs();
    for (std::size_t i = 0; i < runs.size(); ++i) {
      for (std::size_t j = i + 1; j < runs.size(); ++j) {
        if (runs[i].job != runs[j].job) continue;
        const bool overlap = runs[i].start < runs[j].end && runs[j].start < runs[i].end;
        EXPECT_FALSE(overlap) << runs[i].job << " ran on " << runs[i].agent << " and "
                              << runs[j].agent << " at the same time";
      }
    }
    for (const auto& id : ids) {
      auto job = cp_->fake().Job(id);
      ASSERT_TRUE(job.has_value());
      for (std::size_t i = 1; i < job->leases.size(); ++i) {
        const auto& before = job->leases[i - 1];
        EXPECT_NE(before.end, testing::LeaseInfo::End::kActive);
        EXPECT_LE(before.expires_at, job->leases[i].granted_at)
            << id << ": lease " << job->leases[i].lease_id << " granted before " << before.lease_id
            << " ended";
      }
    }
  }

  testing::TempDir dir_a_{"cakewalk-ha-a"};
  testing::TempDir dir_b_{"cakewalk-ha-b"};
  std::unique_ptr<RunningControlPlane> cp_;
  std::unique_ptr<LoopHarness> a_;
  std::unique_ptr<LoopHarness> b_;
  RunLog log_;
};

TEST_F(HaTest, TwoAgentsShareTheWork) {
  ASSERT_TRUE(
      a_->registry.Register(kAddMember, std::make_shared<SpyExecutor>(Timed(log_, "a", 150ms)))
          .ok());
  ASSERT_TRUE(
      b_->registry.Register(kAddMember, std::make_shared<SpyExecutor>(Timed(log_, "b", 150ms)))
          .ok());
  a_->config.jobs.max_concurrent = 2;
  b_->config.jobs.max_concurrent = 2;
  ASSERT_NO_FATAL_FAILURE(a_->StartLoop());
  ASSERT_NO_FATAL_FAILURE(b_->StartLoop());
  std::vector<std::string> ids;
  for (int i = 0; i < 24; ++i) {
    auto id = cp_->fake().EnqueueJob(testing::Job(kAddMember));
    ASSERT_TRUE(id.ok());
    ids.push_back(*id);
  }
  std::map<std::string, int> by_agent;
  for (const auto& id : ids) {
    ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 30s));
    auto job = cp_->fake().Job(id);
    ++by_agent[job->finished_by];
    EXPECT_EQ(job->leases.size(), 1u);
    EXPECT_EQ(job->result_posts(), 1);
  }
  EXPECT_EQ(by_agent.size(), 2u) << "both agents did part of the work";
  EXPECT_EQ(log_.runs().size(), ids.size()) << "every job ran exactly once";
  ExpectNeverConcurrent(ids);
}

TEST_F(HaTest, WhenOneAgentStopsMidJobTheOtherCompletesIt) {
  auto hold = std::make_shared<std::atomic<bool>>(true);
  ASSERT_TRUE(
      a_->registry.Register(kAddMember, std::make_shared<SpyExecutor>(Timed(log_, "a", 0ms, hold)))
          .ok());
  auto b_spy = std::make_shared<SpyExecutor>(Timed(log_, "b", 100ms));
  ASSERT_TRUE(b_->registry.Register(kAddMember, b_spy).ok());
  ASSERT_NO_FATAL_FAILURE(a_->StartLoop());
  auto id = cp_->fake().EnqueueJob(testing::Job(kAddMember));
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(cp_->fake().WaitUntil(
      [&] {
        auto j = cp_->fake().Job(*id);
        return j && !j->leases.empty() && j->leases[0].extensions >= 1;
      },
      "agent a runs the job and keeps its lease"));
  ASSERT_NO_FATAL_FAILURE(b_->StartLoop());
  // Agent a goes away mid-job (its shutdown interrupts the job and reports nothing).
  a_->StopLoop();
  ASSERT_TRUE(cp_->fake().WaitForJobState(*id, JobState::kFinished, 20s));
  auto job = cp_->fake().Job(*id);
  ASSERT_EQ(job->leases.size(), 2u);
  EXPECT_EQ(job->leases[0].agent_id, a_->agent.agent_id);
  EXPECT_EQ(job->leases[0].end, testing::LeaseInfo::End::kExpired);
  EXPECT_EQ(job->leases[1].agent_id, b_->agent.agent_id);
  EXPECT_EQ(job->finished_by, b_->agent.agent_id);
  EXPECT_EQ(b_spy->starts(*id), 1);
  ExpectNeverConcurrent({*id});
}

TEST_F(HaTest, APartitionedAgentStopsItsJobBeforeTheOtherTakesIt) {
  auto hold = std::make_shared<std::atomic<bool>>(true);
  ASSERT_TRUE(
      a_->registry.Register(kAddMember, std::make_shared<SpyExecutor>(Timed(log_, "a", 0ms, hold)))
          .ok());
  auto b_spy = std::make_shared<SpyExecutor>(Timed(log_, "b", 100ms));
  ASSERT_TRUE(b_->registry.Register(kAddMember, b_spy).ok());
  ASSERT_NO_FATAL_FAILURE(a_->StartLoop());
  auto id = cp_->fake().EnqueueJob(testing::Job(kAddMember));
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(cp_->fake().WaitUntil(
      [&] {
        auto j = cp_->fake().Job(*id);
        return j && !j->leases.empty() && j->leases[0].extensions >= 1;
      },
      "agent a runs the job and keeps its lease"));
  // Agent a keeps running but can no longer reach the control plane.
  a_->partitioned = true;
  ASSERT_NO_FATAL_FAILURE(b_->StartLoop());
  ASSERT_TRUE(cp_->fake().WaitForJobState(*id, JobState::kFinished, 20s));
  EXPECT_EQ(cp_->fake().Job(*id)->finished_by, b_->agent.agent_id);
  ExpectNeverConcurrent({*id});
  // Agent a recorded the job as dropped (lease lost): it will report nothing for it.
  auto entry = a_->journal->Find(*id);
  ASSERT_TRUE(entry.ok() && entry->has_value());
  EXPECT_EQ((*entry)->state, JournalState::kDropped);
  a_->partitioned = false;
}

}  // namespace
}  // namespace cakewalk::agent
