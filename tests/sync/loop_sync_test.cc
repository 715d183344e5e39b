// jira.access_sync through the real job loop and executor, against the fake control plane (which
// checks every records call, and the output's counts and sha256 against the records it got) and
// the fake Jira: progress in the loop's status, a lost lease, the per-job timeout.
#include <atomic>
#include <filesystem>
#include <thread>

#include "agent/jira_connection.h"
#include "agent/jira_executors.h"
#include "base/json.h"
#include "tests/agent/loop_harness.h"
#include "tests/sync/sync_env.h"

namespace cakewalk::testing {
namespace {

using namespace std::chrono_literals;

class LoopSyncTest : public SyncFixture {
 protected:
  void SetUp() override {
    SyncFixture::SetUp();
    auto cp = RunningControlPlane::Start();
    ASSERT_TRUE(cp.ok()) << cp.status().ToString();
    cp_ = std::move(*cp);
  }
  void TearDown() override {
    if (harness_) harness_->StopLoop();
    harness_.reset();
    connections_.reset();
    SyncFixture::TearDown();
  }

  // A Data Center of 10.3 with `site`; every group/member page answered after `delay`.
  void StartJiraAndAgent(const SiteSpec& site, std::chrono::milliseconds delay,
                         std::chrono::seconds timeout = 30min) {
    ASSERT_NO_FATAL_FAILURE(StartDc("10.3.4", site));
    if (delay > 0ms) {
      FaultRule slow;
      slow.path_contains = "/group/member";
      slow.count = -1;
      slow.transport.kind = Fault::kDelay;
      slow.transport.delay = delay;
      jira_->QueueFault(slow);
    }
    ASSERT_TRUE(store_->Put("jira-prod", "pat", SecretBytes::CopyOf(pat_)).ok());
    std::filesystem::create_directories(dir_ / "agent");
    harness_ = std::make_unique<LoopHarness>(*cp_, dir_ / "agent");
    agent::ConnectionConfig& conn = harness_->config.connections.at(0);
    conn.base_url = base_url_;
    conn.ca_file = ca_file_;
    agent::AccessSyncConfig sync;
    sync.auth = agent::AccessSyncConfig::Auth::kPat;
    sync.max_concurrency = 6;
    conn.access_sync = sync;
    conn.nhi_patterns = patterns_;
    harness_->config.jobs.timeout = timeout;
    connections_ = std::make_unique<agent::JiraConnections>(*store_, harness_->config.state_dir);
    ASSERT_TRUE(agent::RegisterJiraExecutors(harness_->registry, *connections_).ok());
    ASSERT_NO_FATAL_FAILURE(harness_->Enroll());
    ASSERT_NO_FATAL_FAILURE(harness_->StartLoop());
  }

  std::unique_ptr<RunningControlPlane> cp_;
  std::unique_ptr<LoopHarness> harness_;
  std::unique_ptr<agent::JiraConnections> connections_;
};

SiteSpec Site(std::uint32_t users = 3000) {
  SiteSpec s;
  s.seed = 41;
  s.users = users;
  s.groups = 30;
  s.memberships = users * 2;
  return s;
}

// The whole path: records calls of at most 1000 with seq 0, 1, ...; a succeeded result whose
// counts and sha256 the control plane confirms against what it received; the records equal the
// fake Jira's truth; and while it ran, the loop's status (systemd STATUS=, D-Bus sync_progress)
// and the log said how far it was.
TEST_F(LoopSyncTest, SyncsThroughTheJobLoopWithProgress) {
  ASSERT_NO_FATAL_FAILURE(StartJiraAndAgent(Site(), 25ms));
  auto id = cp_->fake().EnqueueJob(Job("jira.access_sync"));
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  std::string seen_progress, seen_status;
  while (!cp_->fake().Job(*id) || cp_->fake().Job(*id)->state != JobState::kFinished) {
    const agent::LoopSnapshot s = harness_->loop->Snapshot();
    if (s.progress.find("access sync:") != std::string::npos && seen_progress.empty()) {
      seen_progress = s.progress;
      seen_status = agent::StatusLine(s);
    }
    std::this_thread::sleep_for(5ms);
  }
  auto job = cp_->fake().Job(*id);
  ASSERT_EQ(job->result["status"].asString(), "succeeded") << WriteJson(job->result);
  const Json::Value& output = job->result["output"];
  EXPECT_TRUE(cp_->fake().Violations().empty());
  ASSERT_EQ(job->records_by_lease.size(), 1u);
  const auto& batches = job->records_by_lease.begin()->second;
  for (std::size_t i = 0; i < batches.size(); ++i) {
    EXPECT_EQ(batches[i].seq, static_cast<std::int64_t>(i));
    EXPECT_LE(batches[i].records.size(), 1000u);
  }
  EXPECT_EQ(output["pages"].asInt64(), static_cast<std::int64_t>(batches.size()));
  ASSERT_NO_FATAL_FAILURE(VerifyRecords(job->Records(), output));

  EXPECT_NE(seen_progress.find("access sync:"), std::string::npos);
  EXPECT_NE(seen_status.find(seen_progress), std::string::npos) << seen_status;
  bool logged = false;
  for (const auto& e : harness_->log.WithId(event::kSyncProgress)) {
    logged |= e.Field("JOB_ID") == *id && e.message.find("access sync:") != std::string::npos;
  }
  EXPECT_TRUE(logged);
  EXPECT_TRUE(harness_->loop->Snapshot().progress.empty());  // cleared when the job ended
}

// The lease is lost mid-stream: nothing is reported for it (no result, the stream stops); the job
// comes back, is synced again from seq 0 under the new lease, and only that complete stream gets
// a result — which the control plane confirms against that lease's records.
TEST_F(LoopSyncTest, LostLeaseNeverLeavesAPartialResult) {
  ASSERT_NO_FATAL_FAILURE(StartJiraAndAgent(Site(6000), 10ms));
  auto id = cp_->fake().EnqueueJob(Job("jira.access_sync"));
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(cp_->fake().WaitUntil(
      [&] {
        auto j = cp_->fake().Job(*id);
        if (!j) return false;
        for (const auto& [lease, batches] : j->records_by_lease) {
          if (!batches.empty()) return true;
        }
        return false;
      },
      "first records", 60s));
  const std::string first_lease = cp_->fake().Job(*id)->leases.back().lease_id;
  ASSERT_TRUE(cp_->fake().ExpireLease(*id).ok());
  ASSERT_TRUE(cp_->fake().WaitForJobState(*id, JobState::kFinished, 120s));
  auto job = cp_->fake().Job(*id);
  ASSERT_EQ(job->result["status"].asString(), "succeeded") << WriteJson(job->result);
  EXPECT_NE(job->finishing_lease, first_lease);
  for (const auto& d : job->result_deliveries) EXPECT_NE(d.lease_id, first_lease);
  // The first stream stopped short of a complete sync; the second is complete.
  const auto& first = job->records_by_lease[first_lease];
  std::size_t first_records = 0;
  for (const auto& b : first) first_records += b.records.size();
  EXPECT_LT(static_cast<std::int64_t>(first_records), job->result["output"]["records"].asInt64());
  EXPECT_TRUE(cp_->fake().Violations().empty());
  ASSERT_NO_FATAL_FAILURE(VerifyRecords(job->Records(), job->result["output"]));
}

// The per-job timeout stops a sync that takes too long: it fails (retryable), never succeeds with
// what it had sent.
TEST_F(LoopSyncTest, TimeoutFailsInsteadOfReportingAPartialStream) {
  ASSERT_NO_FATAL_FAILURE(StartJiraAndAgent(Site(6000), 40ms, 2s));
  auto id = cp_->fake().EnqueueJob(Job("jira.access_sync"));
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(cp_->fake().WaitForJobState(*id, JobState::kFinished, 60s));
  auto job = cp_->fake().Job(*id);
  EXPECT_EQ(job->result["status"].asString(), "failed") << WriteJson(job->result);
  EXPECT_EQ(job->result["error"]["code"].asString(), "jira_unavailable");
  EXPECT_TRUE(job->result["error"]["retryable"].asBool());
  EXPECT_NE(job->result["error"]["message"].asString().find("jobs.timeout"), std::string::npos);
  EXPECT_FALSE(job->result.isMember("output"));
  EXPECT_TRUE(cp_->fake().Violations().empty());
}

}  // namespace
}  // namespace cakewalk::testing
