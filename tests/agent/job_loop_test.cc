// The job loop (agent/job_loop.h) against the fake control plane over mutual TLS: claiming only
// for free workers, leases, timeouts, records, results in order and their outcomes, re-delivery
// (stored result, adoption, restart), interrupted jobs, shutdown, and what the journal says; the
// heartbeat loop; configuration reloads; executor helpers.
#include "agent/job_loop.h"

#include <gtest/gtest.h>
#include <openssl/sha.h>

#include "agent/daemon.h"
#include "agent/heartbeat.h"
#include "base/encoding.h"
#include "base/json.h"
#include "tests/agent/journal_vfs.h"
#include "tests/agent/loop_harness.h"
#include "tests/support/canary.h"

namespace cakewalk::agent {
namespace {

using namespace std::chrono_literals;
using testing::ControlPlaneFault;
using testing::Endpoint;
using testing::JobState;
using testing::LoopHarness;
using testing::RunningControlPlane;
using testing::SpyExecutor;

constexpr char kAddMember[] = "jira.group.add_member";

class JobLoopTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(); }

  void Start(testing::RunningControlPlaneOptions options = {}) {
    if (options.control_plane.lease_duration == 60s) options.control_plane.lease_duration = 10s;
    auto cp = RunningControlPlane::Start(std::move(options));
    ASSERT_TRUE(cp.ok()) << cp.status().ToString();
    cp_ = std::move(cp).value();
    h_ = std::make_unique<LoopHarness>(*cp_, dir_.path());
    ASSERT_NO_FATAL_FAILURE(h_->Enroll());
  }

  void TearDown() override {
    if (h_) h_->StopLoop();
    if (cp_) {
      EXPECT_TRUE(cp_->fake().Violations().empty()) << ViolationText();
    }
  }

  std::string ViolationText() {
    std::string s;
    for (const auto& v : cp_->fake().Violations()) s += v.job_id + ": " + v.what + "\n";
    return s;
  }

  std::shared_ptr<SpyExecutor> Register(std::string type, SpyExecutor::Behaviour b,
                                        bool idempotent = true) {
    auto spy = std::make_shared<SpyExecutor>(std::move(b), idempotent);
    EXPECT_TRUE(h_->registry.Register(std::move(type), spy).ok());
    return spy;
  }

  std::string Enqueue(testing::JobSpec spec) {
    auto id = cp_->fake().EnqueueJob(std::move(spec));
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    return id.ok() ? *id : std::string();
  }

  Json::Value AcceptedResult(const std::string& job_id) {
    auto job = cp_->fake().Job(job_id);
    return job ? job->result : Json::Value();
  }

  JournalEntry Entry(const std::string& job_id) {
    auto e = h_->journal->Find(job_id);
    EXPECT_TRUE(e.ok() && e->has_value()) << job_id;
    return e.ok() && e->has_value() ? **e : JournalEntry{};
  }

  // The journal state of a job, when it has a row (no assertion: for waits).
  std::optional<JournalState> StateOf(const std::string& job_id) {
    auto e = h_->journal->Find(job_id);
    if (!e.ok() || !e->has_value()) return std::nullopt;
    return (*e)->state;
  }

  int ResultPosts(const std::string& job_id) {
    int n = 0;
    for (const auto& r : cp_->server().requests()) {
      if (r.path.find("/jobs/" + job_id + "/result") != std::string::npos) ++n;
    }
    return n;
  }

  std::vector<std::string> HistoryStates(const std::string& job_id) {
    std::vector<std::string> out;
    auto history = h_->journal->History(job_id);
    EXPECT_TRUE(history.ok());
    if (!history.ok()) return out;
    for (const auto& h : *history) out.push_back(h.state);
    return out;
  }

  testing::TempDir dir_{"cakewalk-loop"};
  std::unique_ptr<RunningControlPlane> cp_;
  std::unique_ptr<LoopHarness> h_;
};

TEST_F(JobLoopTest, RunsAJobAndReportsItsResult) {
  auto spy = Register(kAddMember, testing::Succeed(testing::AddMemberOutput("alice")));
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  const std::string id = Enqueue(testing::Job(kAddMember));
  ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished));
  Json::Value result = AcceptedResult(id);
  EXPECT_EQ(result["status"].asString(), "succeeded");
  EXPECT_EQ(result["output"]["user"]["id"].asString(), "alice");
  EXPECT_EQ(spy->starts(id), 1);
  ASSERT_TRUE(cp_->fake().WaitUntil([&] { return h_->loop->Snapshot().results_pending == 0; },
                                    "results flushed"));
  JournalEntry e = Entry(id);
  EXPECT_EQ(e.state, JournalState::kReported);
  EXPECT_EQ(e.runs, 1);
  EXPECT_EQ(HistoryStates(id),
            (std::vector<std::string>{"claimed", "verified", "running", "finished", "reported"}));
  EXPECT_EQ(h_->finished_events(), std::vector<std::string>{id + " " + kAddMember + " succeeded"});
  // The claim asked for every free worker and used the configured hold.
  auto claims = testing::RequestBodies(*cp_, "/jobs/claim");
  ASSERT_FALSE(claims.empty());
  EXPECT_EQ(claims.front()["max_jobs"].asInt(), h_->config.jobs.max_concurrent);
  EXPECT_EQ(claims.front()["wait_seconds"].asInt(), 2);
}

TEST_F(JobLoopTest, TheLongPollHoldIsClampedToTheServerAndToThirtySeconds) {
  h_->config.jobs.poll_wait_seconds = 55;
  JobLoopOptions options;
  options.server_poll_wait_seconds = 40;
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop(options));
  ASSERT_TRUE(cp_->fake().WaitForWaitingClaims(1));
  auto claims = testing::RequestBodies(*cp_, "/jobs/claim");
  ASSERT_FALSE(claims.empty());
  EXPECT_EQ(claims.front()["wait_seconds"].asInt(), kMaxPollWaitSeconds);
  cp_->fake().Shutdown();  // release the held poll so that the loop stops at once
}

TEST_F(JobLoopTest, ClaimsOnlyForFreeWorkers) {
  h_->config.jobs.max_concurrent = 2;
  auto release = std::make_shared<std::atomic<bool>>(false);
  auto spy = Register(kAddMember, testing::BlockUntil(release, testing::AddMemberOutput("u")));
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(Enqueue(testing::Job(kAddMember)));
  ASSERT_TRUE(spy->WaitForStarts(2));
  // Both workers busy: no claim may be held open and none may be sent.
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(cp_->fake().waiting_claims(), 0);
  const auto claims_while_busy = testing::RequestBodies(*cp_, "/jobs/claim").size();
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(testing::RequestBodies(*cp_, "/jobs/claim").size(), claims_while_busy);
  EXPECT_EQ(spy->total_starts(), 2);
  release->store(true);
  for (const auto& id : ids) ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished));
  EXPECT_LE(spy->max_running(), 2);
  for (const Json::Value& claim : testing::RequestBodies(*cp_, "/jobs/claim")) {
    EXPECT_GE(claim["max_jobs"].asInt(), 1);
    EXPECT_LE(claim["max_jobs"].asInt(), 2);
  }
  // No delivery was ever left unstarted: each job had exactly one lease.
  for (const auto& id : ids) EXPECT_EQ(cp_->fake().Job(id)->leases.size(), 1u) << id;
}

TEST_F(JobLoopTest, ExtendsLeasesWhileAJobRuns) {
  TearDown();
  testing::RunningControlPlaneOptions o;
  o.control_plane.lease_duration = 2s;
  ASSERT_NO_FATAL_FAILURE(Start(o));
  auto spy = Register(kAddMember, [](JobContext& job) -> Result<Json::Value> {
    for (int i = 0; i < 50 && !job.stop.stop_requested(); ++i) std::this_thread::sleep_for(100ms);
    if (job.stop.stop_requested()) return StoppedStatus();
    return testing::AddMemberOutput("slow");
  });
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  const std::string id = Enqueue(testing::Job(kAddMember));
  ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 20s));
  auto job = cp_->fake().Job(id);
  ASSERT_EQ(job->leases.size(), 1u) << "the lease never ran out";
  EXPECT_GE(job->leases[0].extensions, 3);
  EXPECT_EQ(job->result["status"].asString(), "succeeded");
}

TEST_F(JobLoopTest, LostLeaseStopsTheJobAndReportsNothing) {
  h_->config.jobs.max_concurrent = 1;  // the re-delivery waits for the worker
  std::atomic<int> runs{0};
  auto spy = Register(kAddMember, [&](JobContext& job) -> Result<Json::Value> {
    if (++runs == 1) {
      while (!job.stop.stop_requested()) std::this_thread::sleep_for(5ms);
      return StoppedStatus();
    }
    return testing::AddMemberOutput("second");
  });
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  const std::string id = Enqueue(testing::Job(kAddMember));
  ASSERT_TRUE(spy->WaitForStarts(1));
  ASSERT_TRUE(cp_->fake().ExpireLease(id).ok());
  ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 20s));
  auto job = cp_->fake().Job(id);
  ASSERT_EQ(job->leases.size(), 2u);
  // Nothing was ever posted under the lost lease.
  for (const auto& d : job->result_deliveries) EXPECT_EQ(d.lease_id, job->leases[1].lease_id);
  EXPECT_EQ(job->result["output"]["user"]["id"].asString(), "second");
  EXPECT_EQ(spy->starts(id), 2);
  EXPECT_EQ(Entry(id).runs, 2);
  auto states = HistoryStates(id);
  EXPECT_NE(std::find(states.begin(), states.end(), "dropped"), states.end());
  EXPECT_FALSE(h_->log.WithId(event::kLeaseLost).empty());
}

// The loop over a journal on a disk that can fill up. The VFS is registered before the loop opens
// the journal and outlives it: TearDown closes the journal, with writes working again.
class JobLoopFullDiskTest : public JobLoopTest {
 protected:
  void TearDown() override {
    vfs_.FailWrites(false);
    JobLoopTest::TearDown();
  }
  // Whether the loop logged an event of this kind and severity about the job.
  bool Logged(std::string_view message_id, Severity severity, const std::string& job_id) const {
    for (const auto& e : h_->log.WithId(message_id)) {
      if (e.severity == severity && e.Field("JOB_ID") == job_id) return true;
    }
    return false;
  }
  testing::JournalVfs vfs_;
};

TEST_F(JobLoopFullDiskTest, AJobWhoseStartCannotBeJournaledIsNotRunUntilItIsDeliveredAgain) {
  auto spy = Register(kAddMember, testing::Succeed(testing::AddMemberOutput("alice")));
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  vfs_.FailWrites(true);  // the disk under the state directory is full
  const std::string id = Enqueue(testing::Job(kAddMember));
  ASSERT_TRUE(
      cp_->fake().WaitUntil([&] { return Logged(event::kJobReceived, Severity::kError, id); },
                            "the journal's refusal logged"));
  ASSERT_TRUE(cp_->fake().WaitUntil([&] { return h_->loop->Snapshot().jobs_running == 0; },
                                    "the job's slot freed"));
  EXPECT_EQ(spy->starts(id), 0) << "a job that is not journaled must not act";
  EXPECT_FALSE(StateOf(id).has_value());
  EXPECT_EQ(ResultPosts(id), 0);
  EXPECT_GT(vfs_.failed_writes(), 0);

  // Space again: once its lease runs out the job comes back and runs, once.
  vfs_.FailWrites(false);
  ASSERT_TRUE(cp_->fake().ExpireLease(id).ok());
  ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 20s));
  EXPECT_EQ(spy->starts(id), 1);
  auto job = cp_->fake().Job(id);
  ASSERT_EQ(job->leases.size(), 2u);
  EXPECT_EQ(job->result["status"].asString(), "succeeded");
  for (const auto& d : job->result_deliveries) EXPECT_EQ(d.lease_id, job->leases[1].lease_id);
  EXPECT_EQ(Entry(id).runs, 1);
}

TEST_F(JobLoopFullDiskTest, AResultThatCannotBeJournaledIsNotSentAndTheLoopStillStops) {
  auto release = std::make_shared<std::atomic<bool>>(false);
  std::atomic<int> runs{0};
  auto spy = Register(kAddMember, [&](JobContext& job) -> Result<Json::Value> {
    if (++runs == 1) return testing::BlockUntil(release, testing::AddMemberOutput("first"))(job);
    return testing::AddMemberOutput("second");
  });
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  const std::string id = Enqueue(testing::Job(kAddMember));
  ASSERT_TRUE(spy->WaitForStarts(1));
  vfs_.FailWrites(true);  // the disk fills while the job runs
  *release = true;
  ASSERT_TRUE(
      cp_->fake().WaitUntil([&] { return Logged(event::kJobFinished, Severity::kCritical, id); },
                            "the lost result logged"));
  ASSERT_TRUE(cp_->fake().WaitUntil([&] { return h_->loop->Snapshot().jobs_running == 0; },
                                    "the job's slot freed"));
  EXPECT_EQ(ResultPosts(id), 0) << "a result the journal does not hold is never sent";

  // Nothing waits on the lost result: the loop stops at once.
  vfs_.FailWrites(false);
  const auto stopping = std::chrono::steady_clock::now();
  h_->StopLoop();
  EXPECT_LT(std::chrono::steady_clock::now() - stopping, 5s);

  // Started again, with space: the job comes back when its lease runs out, runs again (it is
  // idempotent) and its second result lands. (The stopped loop's long poll first ends on the
  // server, or it would take the job into a connection nobody reads.)
  ASSERT_TRUE(cp_->fake().WaitUntil([&] { return cp_->fake().waiting_claims() == 0; },
                                    "the cancelled long poll ended"));
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  ASSERT_TRUE(cp_->fake().ExpireLease(id).ok());
  ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 20s));
  EXPECT_EQ(spy->starts(id), 2);
  EXPECT_EQ(AcceptedResult(id)["output"]["user"]["id"].asString(), "second");
}

TEST_F(JobLoopTest, TimeoutStopsTheJobAndReportsARetryableFailure) {
  h_->config.jobs.timeout = 1s;
  Register(kAddMember, testing::BlockUntil(std::make_shared<std::atomic<bool>>(false),
                                           testing::AddMemberOutput("never")));
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  const std::string id = Enqueue(testing::Job(kAddMember));
  ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 15s));
  Json::Value r = AcceptedResult(id);
  EXPECT_EQ(r["status"].asString(), "failed");
  EXPECT_EQ(r["error"]["code"].asString(), "jira_unavailable");
  EXPECT_TRUE(r["error"]["retryable"].asBool());
  EXPECT_NE(r["error"]["message"].asString().find("jobs.timeout"), std::string::npos);
}

TEST_F(JobLoopTest, TimeoutIsReportedEvenWhenTheExecutorIgnoresStop) {
  h_->config.jobs.timeout = 1s;
  h_->config.jobs.max_concurrent = 1;
  auto release = std::make_shared<std::atomic<bool>>(false);
  Register(kAddMember, [release](JobContext&) -> Result<Json::Value> {
    while (!release->load()) std::this_thread::sleep_for(5ms);
    return testing::AddMemberOutput("late");
  });
  JobLoopOptions options;
  options.timeout_stop_grace = 500ms;
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop(options));
  const std::string id = Enqueue(testing::Job(kAddMember));
  ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 15s));
  EXPECT_EQ(AcceptedResult(id)["error"]["code"].asString(), "jira_unavailable");
  // The worker stays busy until the executor returns: no claim meanwhile.
  EXPECT_EQ(h_->loop->Snapshot().jobs_running, 1);
  release->store(true);
  ASSERT_TRUE(cp_->fake().WaitUntil([&] { return h_->loop->Snapshot().jobs_running == 0; },
                                    "worker freed"));
  // The late success does not replace the reported failure (the fake would flag a second,
  // different result as a violation in TearDown).
  EXPECT_EQ(AcceptedResult(id)["status"].asString(), "failed");
}

TEST_F(JobLoopTest, ExecutorFailuresCarryTheirCodes) {
  Register(kAddMember, [](JobContext& job) -> Result<Json::Value> {
    CW_RETURN_IF_ERROR(CheckParams(job.params, {"user", "group"}));
    const std::string g = job.params["group"].asString();
    if (g == "missing") return Status(Code::kNotFound, "no group 'missing'", "group_not_found");
    if (g == "down") return Status(Code::kUnavailable, "Jira answered 503", "jira_unavailable");
    if (g == "weird") return Status(Code::kUnavailable, "socket trouble");  // no code
    throw std::runtime_error("boom");
  });
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  auto params = [](const char* group) {
    Json::Value p(Json::objectValue);
    p["user"]["username"] = "bob";
    p["group"] = group;
    return p;
  };
  Json::Value extra = params("missing");
  extra["surprise"] = 1;
  const std::string a = Enqueue(testing::Job(kAddMember, params("missing")));
  const std::string b = Enqueue(testing::Job(kAddMember, params("down")));
  const std::string c = Enqueue(testing::Job(kAddMember, params("weird")));
  const std::string d = Enqueue(testing::Job(kAddMember, params("throw")));
  const std::string e = Enqueue(testing::Job(kAddMember, extra));
  for (const auto& id : {a, b, c, d, e}) {
    ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished));
  }
  auto error = [&](const std::string& id) { return AcceptedResult(id)["error"]; };
  EXPECT_EQ(error(a)["code"].asString(), "group_not_found");
  EXPECT_FALSE(error(a)["retryable"].asBool());
  EXPECT_EQ(error(b)["code"].asString(), "jira_unavailable");
  EXPECT_TRUE(error(b)["retryable"].asBool());
  EXPECT_EQ(error(c)["code"].asString(), "internal");
  EXPECT_FALSE(error(c)["retryable"].asBool());
  EXPECT_EQ(error(d)["code"].asString(), "internal");
  EXPECT_NE(error(d)["message"].asString().find("boom"), std::string::npos);
  EXPECT_EQ(error(e)["code"].asString(), "invalid_params");
  EXPECT_NE(error(e)["message"].asString().find("surprise"), std::string::npos);
  // The connection's health follows what the jobs said about it.
  auto health = h_->health.Get("jira-prod");
  ASSERT_TRUE(health.has_value());
}

TEST_F(JobLoopTest, ResultsAreResentInOrderAfterAnOutage) {
  Register(kAddMember, testing::Succeed(testing::AddMemberOutput("x")));
  cp_->fake().QueueFault(ControlPlaneFault::Status(503), 6, Endpoint::kResult);
  JobLoopOptions options;
  options.random = [] { return 0.1; };  // 0.1 + 0.2 + ... + 3.2 s of back-off
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop(options));
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(Enqueue(testing::Job(kAddMember)));
    ASSERT_TRUE(cp_->fake().WaitUntil(
        [&] {
          auto st = StateOf(ids.back());
          return st == JournalState::kFinished || st == JournalState::kReported;
        },
        "job finished locally", 10s));
  }
  for (const auto& id : ids) {
    ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 30s));
  }
  // Accepted in the order they finished.
  std::vector<SysTime> accepted;
  for (const auto& id : ids) {
    const auto job = cp_->fake().Job(id);
    for (const auto& d : job->result_deliveries) {
      if (d.outcome == "accepted") accepted.push_back(d.received_at);
    }
  }
  ASSERT_EQ(accepted.size(), 3u);
  EXPECT_TRUE(std::is_sorted(accepted.begin(), accepted.end()));
}

TEST_F(JobLoopTest, ConflictDropsTheResultAndUnprocessableSetsItAside) {
  Register(kAddMember, testing::Succeed(testing::AddMemberOutput("x")));
  cp_->fake().QueueFault(ControlPlaneFault::Status(409), 1, Endpoint::kResult);
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  const std::string a = Enqueue(testing::Job(kAddMember));
  ASSERT_TRUE(cp_->fake().WaitUntil([&] { return StateOf(a) == JournalState::kDropped; },
                                    "result dropped after 409"));
  cp_->fake().QueueFault(ControlPlaneFault::Status(422), 1, Endpoint::kResult);
  const std::string b = Enqueue(testing::Job(kAddMember));
  ASSERT_TRUE(cp_->fake().WaitUntil(
      [&] {
        auto o = h_->journal->OutboxOf(b);
        return o.ok() && !o->empty() && o->back().second == OutboxState::kSetAside;
      },
      "result set aside after 422"));
  // Neither is sent again.
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(ResultPosts(a), 1);
  EXPECT_EQ(ResultPosts(b), 1);
  EXPECT_EQ(h_->loop->Snapshot().results_pending, 0);
}

TEST_F(JobLoopTest, ReDeliveredFinishedJobGetsItsStoredResult) {
  h_->config.jobs.max_concurrent = 1;
  auto spy = Register(kAddMember, testing::Succeed(testing::AddMemberOutput("once")));
  // The first result post "succeeds" at the server but the answer is lost; the next ones fail
  // until the lease has been expired by the test.
  cp_->fake().QueueFault(ControlPlaneFault::Status(503), 1000, Endpoint::kResult);
  JobLoopOptions options;
  options.random = [] { return 0.05; };  // short back-off: the test waits for the re-send
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop(options));
  const std::string id = Enqueue(testing::Job(kAddMember));
  ASSERT_TRUE(cp_->fake().WaitUntil([&] { return StateOf(id) == JournalState::kFinished; },
                                    "finished locally"));
  ASSERT_TRUE(cp_->fake().ExpireLease(id).ok());
  ASSERT_TRUE(cp_->fake().WaitUntil([&] { return cp_->fake().Job(id)->leases.size() == 2; },
                                    "delivered again"));
  cp_->fake().ClearFaults();
  ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 30s));
  auto job = cp_->fake().Job(id);
  EXPECT_EQ(job->finishing_lease, job->leases[1].lease_id);
  EXPECT_EQ(job->result["output"]["user"]["id"].asString(), "once");
  EXPECT_EQ(spy->starts(id), 1) << "a finished job is never run again";
  ASSERT_TRUE(cp_->fake().WaitUntil([&] { return h_->loop->Snapshot().results_pending == 0; },
                                    "acknowledgement journaled"));
  auto outbox_or = h_->journal->OutboxOf(id);
  ASSERT_TRUE(outbox_or.ok());
  auto outbox = *outbox_or;
  ASSERT_EQ(outbox.size(), 2u);
  // The copy owed under the first lease was either superseded by the re-delivery or, when a
  // retry reached the server after the re-delivery, refused with 409 and dropped.
  EXPECT_TRUE(outbox[0].second == OutboxState::kSuperseded ||
              outbox[0].second == OutboxState::kDropped);
  EXPECT_EQ(outbox[1].second, OutboxState::kAcknowledged);
}

TEST_F(JobLoopTest, InterruptedJobsAreRunAgainOnlyWhenIdempotent) {
  // A previous agent process recorded both jobs as running, then died.
  {
    auto j = JobJournal::Open(h_->config.state_dir);
    ASSERT_TRUE(j.ok());
    for (const char* id : {"job_idem", "job_once"}) {
      DeliveryInfo d{id, "lease_old", SystemClock().Now(), SystemClock().Now()};
      ASSERT_TRUE((*j)->RecordStart(d, "t", "jira-prod").ok());
    }
  }
  auto idempotent = Register(kAddMember, testing::Succeed(testing::AddMemberOutput("again")));
  auto once = Register("jira.user.deprovision", testing::Succeed(Json::Value()), false);
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  EXPECT_EQ(Entry("job_idem").state, JournalState::kInterrupted);
  Enqueue(testing::Job(kAddMember, Json::Value(Json::objectValue), "job_idem"));
  Enqueue(testing::Job("jira.user.deprovision", Json::Value(Json::objectValue), "job_once"));
  ASSERT_TRUE(cp_->fake().WaitForJobState("job_idem", JobState::kFinished));
  ASSERT_TRUE(cp_->fake().WaitForJobState("job_once", JobState::kFinished));
  EXPECT_EQ(AcceptedResult("job_idem")["status"].asString(), "succeeded");
  EXPECT_EQ(idempotent->starts("job_idem"), 1);
  EXPECT_EQ(Entry("job_idem").runs, 2);
  Json::Value r = AcceptedResult("job_once");
  EXPECT_EQ(r["status"].asString(), "failed");
  EXPECT_EQ(r["error"]["code"].asString(), "internal");
  EXPECT_NE(r["error"]["message"].asString().find("not re-run"), std::string::npos);
  EXPECT_EQ(once->total_starts(), 0);
}

// Access sync: records in calls of at most 1000 with seq 0, 1, 2 ..., then an output that
// matches what was sent.
Result<Json::Value> SyncRecords(JobContext& job, int users, std::atomic<bool>* hold = nullptr) {
  std::string concatenated;
  for (int i = 0; i < users; ++i) {
    Json::Value r(Json::objectValue);
    r["kind"] = "user";
    r["id"] = "u" + std::to_string(i);
    r["username"] = "user" + std::to_string(i);
    r["email"] = "user" + std::to_string(i) + "@example.com";
    r["display_name"] = "User " + std::to_string(i);
    r["active"] = true;
    r["human"] = true;
    r["nhi_type"] = Json::Value();
    r["groups"] = Json::Value(Json::arrayValue);
    r["products"] = Json::Value(Json::arrayValue);
    r["permissions"] = Json::Value(Json::arrayValue);
    r["level"] = "user";
    r["last_login"] = Json::Value();
    concatenated += WriteJson(r);
    CW_RETURN_IF_ERROR(job.records.Emit(std::move(r)));
    if (hold != nullptr && i == 1000) {
      while (!hold->load() && !job.stop.stop_requested()) std::this_thread::sleep_for(5ms);
      if (job.stop.stop_requested()) return StoppedStatus();
    }
  }
  CW_RETURN_IF_ERROR(job.records.Flush());
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(concatenated.data()), concatenated.size(), digest);
  Json::Value out(Json::objectValue);
  out["counts"]["users"] = users;
  out["counts"]["groups"] = 0;
  out["counts"]["non_human"] = 0;
  out["counts"]["credentials"] = 0;
  out["records"] = static_cast<Json::Int64>(job.records.records_sent());
  out["pages"] = static_cast<Json::Int64>(job.records.calls_made());
  out["sha256"] = HexEncode(std::span<const std::uint8_t>(digest, sizeof digest));
  out["duration_ms"] = 1;
  return out;
}

TEST_F(JobLoopTest, AccessSyncStreamsRecordsInNumberedCalls) {
  Register(std::string(kJobTypeAccessSync), [](JobContext& job) { return SyncRecords(job, 2500); });
  // One records call fails after the server stored it: the retry repeats the same seq.
  cp_->fake().QueueFault(ControlPlaneFault::Reset(/*process_request=*/true), 1, Endpoint::kRecords);
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  const std::string id = Enqueue(testing::Job(std::string(kJobTypeAccessSync)));
  ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 20s));
  auto job = cp_->fake().Job(id);
  EXPECT_EQ(job->result["status"].asString(), "succeeded") << WriteJson(job->result);
  const auto& batches = job->records_by_lease.at(job->finishing_lease);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0].records.size(), 1000u);
  EXPECT_EQ(batches[2].records.size(), 500u);
  EXPECT_EQ(batches[0].deliveries, 2) << "the lost answer made the agent repeat seq 0";
  EXPECT_EQ(job->result["output"]["pages"].asInt(), 3);
}

TEST_F(JobLoopTest, ReDeliveryAfterRecordsStartsTheSyncOverUnderTheNewLease) {
  h_->config.jobs.max_concurrent = 2;  // a worker is free to claim the re-delivery
  auto hold = std::make_shared<std::atomic<bool>>(false);
  auto spy = Register(std::string(kJobTypeAccessSync),
                      [hold](JobContext& job) { return SyncRecords(job, 1500, hold.get()); });
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  const std::string id = Enqueue(testing::Job(std::string(kJobTypeAccessSync)));
  ASSERT_TRUE(cp_->fake().WaitUntil(
      [&] {
        auto j = cp_->fake().Job(id);
        return j && !j->records_by_lease.empty();
      },
      "first records call"));
  ASSERT_TRUE(cp_->fake().ExpireLease(id).ok());
  ASSERT_TRUE(spy->WaitForStarts(2, 20s)) << "the sync starts over under the new lease";
  hold->store(true);
  ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 20s));
  auto job = cp_->fake().Job(id);
  EXPECT_EQ(job->result["status"].asString(), "succeeded");
  EXPECT_EQ(job->finishing_lease, job->leases.back().lease_id);
  EXPECT_EQ(job->Records().size(), 1500u);
  EXPECT_EQ(spy->starts(id), 2);
  EXPECT_EQ(Entry(id).runs, 2);
}

TEST_F(JobLoopTest, ShutdownLetsJobsFinishWithinTheGrace) {
  auto release = std::make_shared<std::atomic<bool>>(false);
  auto spy = Register(kAddMember, testing::BlockUntil(release, testing::AddMemberOutput("g")));
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  const std::string id = Enqueue(testing::Job(kAddMember));
  ASSERT_TRUE(spy->WaitForStarts(1));
  std::thread releaser([&] {
    std::this_thread::sleep_for(500ms);
    release->store(true);
  });
  const auto t0 = std::chrono::steady_clock::now();
  h_->loop->Shutdown(10s);
  releaser.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 9s);
  EXPECT_EQ(h_->loop->Snapshot().state, LoopState::kStopped);
  EXPECT_EQ(cp_->fake().Job(id)->state, JobState::kFinished) << "finished and flushed";
  EXPECT_EQ(Entry(id).state, JournalState::kReported);
}

TEST_F(JobLoopTest, ShutdownInterruptsJobsPastTheGraceAndReportsNothing) {
  auto spy = Register(kAddMember, testing::BlockUntil(std::make_shared<std::atomic<bool>>(false),
                                                      testing::AddMemberOutput("never")));
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  const std::string id = Enqueue(testing::Job(kAddMember));
  ASSERT_TRUE(spy->WaitForStarts(1));
  h_->loop->Shutdown(300ms);
  EXPECT_EQ(Entry(id).state, JournalState::kInterrupted);
  EXPECT_TRUE(cp_->fake().Job(id)->result_deliveries.empty());
  EXPECT_EQ(h_->finished_events(),
            std::vector<std::string>{id + " " + kAddMember + " interrupted"});
}

TEST_F(JobLoopTest, NothingFromParamsOrSecretsReachesTheJournal) {
  const std::string canary = testing::MakeCanary("param");
  Register(kAddMember, testing::Succeed(testing::AddMemberOutput("c")));
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  Json::Value params(Json::objectValue);
  params["user"]["username"] = canary;
  params["group"] = "g";
  const std::string id = Enqueue(testing::Job(kAddMember, params));
  ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished));
  h_->StopLoop();
  EXPECT_TRUE(testing::FindCanaryInTree(canary, h_->config.state_dir).empty());
  EXPECT_TRUE(testing::FindCanaryIn(canary, h_->log.Text(), "logs").empty());
}

TEST(HeartbeatTest, MetadataAtStartAndEveryIntervalRenewalOnRequestIdentityRejection) {
  auto cp = RunningControlPlane::Start();
  ASSERT_TRUE(cp.ok()) << cp.status().ToString();
  testing::TempDir dir("cakewalk-heartbeat");
  testing::WriteFile(dir / "ca.pem", (*cp)->server_ca_pem());
  auto agent = testing::EnrollSoftwareAgent(**cp, dir / "ca.pem");
  ASSERT_TRUE(agent.ok()) << agent.status().ToString();
  auto config = std::make_shared<Config>();
  ConnectionConfig conn;
  conn.name = "jira-prod";
  conn.base_url = "https://jira.example.test";
  conn.provisioning = ProvisioningConfig{};
  config->connections.push_back(conn);
  testing::CapturingLogSink log;
  std::atomic<int> renewals{0};
  std::vector<Status> results;
  std::mutex mu;

  HeartbeatLoop::Deps deps;
  deps.control_plane = [&]() -> Result<ControlPlaneHandle> {
    return ControlPlaneHandle{agent->client, agent->not_after};
  };
  deps.agent_version = "0.1.0";
  deps.token = {"SoftHSM project", "SoftHSM v2", "0123abcd", "cakewalk"};
  deps.config = [config] { return std::shared_ptr<const Config>(config); };
  deps.snapshot = [] {
    LoopSnapshot s;
    s.jobs_running = 2;
    s.results_pending = 5;
    return s;
  };
  deps.renew_certificate = [&] { ++renewals; };
  deps.on_result = [&](const Status& s) {
    std::lock_guard lock(mu);
    results.push_back(s);
  };
  deps.log = &log;
  deps.clock = &SystemClock();
  deps.interval = 300ms;
  HeartbeatLoop heartbeat(std::move(deps));
  heartbeat.Start();
  ASSERT_TRUE((*cp)->fake().WaitForHeartbeats(3));
  ASSERT_TRUE((*cp)->fake().RequestCertificateRenewal(agent->agent_id).ok());
  ASSERT_TRUE((*cp)->fake().WaitUntil([&] { return renewals.load() >= 1; }, "renewal asked"));

  auto beats = (*cp)->fake().Heartbeats();
  for (const auto& hb : beats) EXPECT_TRUE(hb.accepted) << hb.problem;
  auto body = ParseJson(beats.front().body, "heartbeat");
  ASSERT_TRUE(body.ok());
  EXPECT_EQ((*body)["jobs"]["running"].asInt(), 2);
  EXPECT_EQ((*body)["jobs"]["results_pending"].asInt(), 5);
  EXPECT_EQ((*body)["token"]["serial"].asString(), "0123abcd");
  EXPECT_EQ((*body)["connections"][0]["status"].asString(), "error");
  EXPECT_NE((*body)["connections"][0]["detail"].asString().find("password"), std::string::npos);
  EXPECT_TRUE((*body)["secrets"].empty());

  // A revoked agent: the failure is reported, and the next attempt waits five minutes.
  ASSERT_TRUE((*cp)->fake().RevokeAgent(agent->agent_id).ok());
  ASSERT_TRUE((*cp)->fake().WaitUntil(
      [&] {
        std::lock_guard lock(mu);
        return !results.empty() && ClassifyFailure(results.back()) == Failure::kIdentityRejected;
      },
      "identity rejected"));
  const auto count = (*cp)->fake().Heartbeats().size();
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ((*cp)->fake().Heartbeats().size(), count);
  heartbeat.Stop();
}

TEST(ConfigHolderTest, ReloadAppliesJobsAndRefusesRestartOnlyChanges) {
  testing::TempDir dir("cakewalk-reload");
  auto write = [&](int max_concurrent, const std::string& url) {
    testing::WriteFile(
        dir / "agent.json",
        R"({"state_dir": "state", "control_plane": {"url": ")" + url +
            R"("}, "token": {"uri": "pkcs11:token=x"}, "jobs": {"max_concurrent": )" +
            std::to_string(max_concurrent) +
            R"(}, "connections": [{"name": "jira-prod", "type": "jira-datacenter",
                           "base_url": "https://jira.example.test", "provisioning":
                           {"auth": "password", "username": "svc"}}]})",
        0600);
  };
  write(4, "https://cp.example/agent/v1");
  auto loaded = LoadConfig(dir / "agent.json", ConfigEnvironment{});
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ConfigHolder holder(*loaded);
  write(7, "https://cp.example/agent/v1");
  ASSERT_TRUE(holder.Reload().ok());
  EXPECT_EQ(holder.Get()->jobs.max_concurrent, 7);
  write(9, "https://elsewhere.example/agent/v1");
  Status refused = holder.Reload();
  EXPECT_FALSE(refused.ok());
  EXPECT_NE(refused.message().find("control_plane"), std::string::npos);
  EXPECT_NE(refused.message().find("restart"), std::string::npos);
  EXPECT_EQ(holder.Get()->jobs.max_concurrent, 7) << "the running configuration stays";
  testing::WriteFile(dir / "agent.json", "{not json", 0600);
  EXPECT_FALSE(holder.Reload().ok());
  EXPECT_EQ(holder.Get()->jobs.max_concurrent, 7);
}

TEST(ExecutorTest, RegistryAndHelpers) {
  ExecutorRegistry r;
  auto spy = std::make_shared<SpyExecutor>(testing::Succeed(Json::Value()));
  EXPECT_TRUE(r.Register("jira.user.provision", spy).ok());
  EXPECT_EQ(r.Register("jira.user.provision", spy).code(), Code::kAlreadyExists);
  EXPECT_EQ(r.Register("shell.exec", spy).code(), Code::kInvalidArgument);
  EXPECT_EQ(r.Find("jira.user.provision"), spy.get());
  EXPECT_EQ(r.Find("jira.access_sync"), nullptr);

  Json::Value p(Json::objectValue);
  p["email"] = "a@b";
  EXPECT_TRUE(CheckParams(p, {"email", "display_name"}).ok());
  p["host"] = "evil.example";
  EXPECT_EQ(CheckParams(p, {"email"}).reason(), "invalid_params");
  EXPECT_EQ(CheckParams(Json::Value(Json::arrayValue), {}).reason(), "invalid_params");

  EXPECT_EQ(ErrorFromStatus(Status(Code::kUnavailable, "x", "rate_limited")).retryable, true);
  EXPECT_EQ(ErrorFromStatus(Status(Code::kFailedPrecondition, "x", "rate_limited")).retryable,
            false);
  EXPECT_EQ(ErrorFromStatus(Status(Code::kUnavailable, "x", "user_not_found")).retryable, false);
  EXPECT_EQ(ErrorFromStatus(Status(Code::kUnavailable, "x", "made_up")).code, "internal");
  EXPECT_TRUE(IsStoppedStatus(StoppedStatus()));

  ConnectionConfig dc;
  dc.provisioning = ProvisioningConfig{};
  dc.provisioning->mfa_totp = true;
  EXPECT_EQ(RequiredSecrets(dc), (std::vector<std::string>{"password", "totp"}));
  ConnectionConfig cloud;
  cloud.provisioning = ProvisioningConfig{};
  cloud.provisioning->auth = ProvisioningConfig::Auth::kApiToken;
  EXPECT_EQ(RequiredSecrets(cloud), std::vector<std::string>{"api-token"});
  ConnectionConfig sync_only;
  sync_only.access_sync = AccessSyncConfig{};
  sync_only.access_sync->auth = AccessSyncConfig::Auth::kPat;
  EXPECT_EQ(RequiredSecrets(sync_only), std::vector<std::string>{"pat"});
}

TEST(StatusLineTest, SaysWhatIsGoingOn) {
  LoopSnapshot s;
  s.state = LoopState::kPolling;
  s.jobs_running = 2;
  s.results_pending = 1;
  EXPECT_EQ(StatusLine(s), "waiting for jobs; 2 jobs running, 1 result pending");
  s.state = LoopState::kIdentityRejected;
  s.last_error = "claiming jobs: certificate_revoked";
  EXPECT_NE(StatusLine(s).find("identity rejected"), std::string::npos);
  EXPECT_NE(StatusLine(s).find("5 minutes"), std::string::npos);
}

}  // namespace
}  // namespace cakewalk::agent
