// The fault matrix: the fake control plane misbehaves on each endpoint in each way it can
// (5xx, 429/503 with and without Retry-After in both forms, HTML pages, resets, delays, truncated
// bodies, malformed JSON, identity rejections, instant empty answers). The loop must survive
// every one — the job still gets done, exactly once — and the back-off must be visible in the
// fake's request arrival times: gaps follow the full-jitter schedule (with a fixed random draw),
// Retry-After is respected, no two attempts are closer than the minimum, and broken connections
// are dropped.
#include <gtest/gtest.h>
#include <openssl/sha.h>

#include "agent/backoff.h"
#include "agent/job_loop.h"
#include "base/encoding.h"
#include "base/json.h"
#include "base/time.h"
#include "tests/agent/loop_harness.h"

namespace cakewalk::agent {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using testing::ControlPlaneFault;
using testing::Endpoint;
using testing::JobState;
using testing::LoopHarness;
using testing::RunningControlPlane;
using testing::SpyExecutor;
using Kind = testing::ControlPlaneFault::Kind;

constexpr char kAddMember[] = "jira.group.add_member";
// Scheduling slack on a loaded machine.
constexpr milliseconds kSlack{1500};

std::vector<milliseconds> Gaps(const std::vector<std::chrono::steady_clock::time_point>& t) {
  std::vector<milliseconds> out;
  for (std::size_t i = 1; i < t.size(); ++i) {
    out.push_back(std::chrono::duration_cast<milliseconds>(t[i] - t[i - 1]));
  }
  return out;
}

std::string Show(const std::vector<milliseconds>& gaps) {
  std::string s;
  for (auto g : gaps) s += std::to_string(g.count()) + "ms ";
  return s;
}

ControlPlaneFault Fault(Kind kind, int status = 0, milliseconds delay = milliseconds(0)) {
  ControlPlaneFault f;
  f.kind = kind;
  f.status = status;
  f.delay = delay;
  return f;
}

class FaultMatrixTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(); }

  void Start(testing::RunningControlPlaneOptions options = {}) {
    if (options.control_plane.lease_duration == 60s) options.control_plane.lease_duration = 3s;
    auto cp = RunningControlPlane::Start(std::move(options));
    ASSERT_TRUE(cp.ok()) << cp.status().ToString();
    cp_ = std::move(cp).value();
    h_ = std::make_unique<LoopHarness>(*cp_, dir_.path());
    ASSERT_NO_FATAL_FAILURE(h_->Enroll());
    spy_ = std::make_shared<SpyExecutor>(testing::Succeed(testing::AddMemberOutput("f")));
    ASSERT_TRUE(h_->registry.Register(kAddMember, spy_).ok());
  }

  void TearDown() override {
    if (h_) h_->StopLoop();
    std::string violations;
    for (const auto& v : cp_->fake().Violations()) violations += v.job_id + ": " + v.what + "\n";
    EXPECT_TRUE(violations.empty()) << violations;
  }

  // Starts the loop with every random draw = `draw`, so that each wait is draw * bound.
  void StartLoop(double draw) {
    JobLoopOptions o;
    o.random = [draw] { return draw; };
    ASSERT_NO_FATAL_FAILURE(h_->StartLoop(o));
  }

  std::string EnqueueAndFinish(std::chrono::milliseconds timeout = 30s) {
    auto id = cp_->fake().EnqueueJob(testing::Job(kAddMember));
    EXPECT_TRUE(id.ok());
    EXPECT_TRUE(cp_->fake().WaitForJobState(*id, JobState::kFinished, timeout));
    auto job = cp_->fake().Job(*id);
    EXPECT_EQ(job->result["status"].asString(), "succeeded");
    EXPECT_EQ(spy_->starts(*id), 1) << "done exactly once";
    return *id;
  }

  // The first n+1 claim arrivals: n faulted attempts and the retry that worked.
  std::vector<milliseconds> ClaimGaps(std::size_t n) {
    auto arrivals = cp_->fake().Arrivals(Endpoint::kClaim);
    EXPECT_GE(arrivals.size(), n + 1);
    arrivals.resize(std::min(arrivals.size(), n + 1));
    return Gaps(arrivals);
  }

  // Gap i follows the full-jitter schedule with draw 0.5: half of min(60 s, 1 s * 2^i).
  void ExpectExponential(const std::vector<milliseconds>& gaps,
                         milliseconds held = milliseconds(0)) {
    for (std::size_t i = 0; i < gaps.size(); ++i) {
      const milliseconds expected = Backoff::UpperBound(static_cast<int>(i) + 1) / 2;
      EXPECT_GE(gaps[i], expected) << "gap " << i << ": " << Show(gaps);
      EXPECT_LE(gaps[i], expected + held + kSlack) << "gap " << i << ": " << Show(gaps);
    }
  }

  testing::TempDir dir_{"cakewalk-faults"};
  std::unique_ptr<RunningControlPlane> cp_;
  std::unique_ptr<LoopHarness> h_;
  std::shared_ptr<SpyExecutor> spy_;
};

struct ClaimFault {
  const char* name;
  Kind kind;
  int status;
  bool resets_connections;
  // The fake carries the claim out before truncating its answer: it is held for the whole long
  // poll (2 s) when no job is waiting.
  milliseconds held = milliseconds(0);
};

class ClaimFaultTest : public FaultMatrixTest, public ::testing::WithParamInterface<ClaimFault> {};

TEST_P(ClaimFaultTest, ClaimsBackOffExponentiallyAndRecover) {
  cp_->fake().QueueFault(Fault(GetParam().kind, GetParam().status), 3, Endpoint::kClaim);
  ASSERT_NO_FATAL_FAILURE(StartLoop(0.5));
  EnqueueAndFinish();
  ExpectExponential(ClaimGaps(3), GetParam().held);
  if (GetParam().resets_connections) {
    EXPECT_GE(h_->resets.load(), 3) << "a broken connection is never reused";
  }
  // The back-off started over after the success: the next faults wait 0.5 s again.
  EXPECT_EQ(h_->loop->Snapshot().state, LoopState::kPolling);
}

void PrintTo(const ClaimFault& f, std::ostream* os) { *os << f.name; }

INSTANTIATE_TEST_SUITE_P(
    Faults, ClaimFaultTest,
    ::testing::Values(ClaimFault{"status500", Kind::kStatus, 500, true},
                      ClaimFault{"status502html", Kind::kHtmlPage, 502, true},
                      ClaimFault{"status503", Kind::kStatus, 503, false},
                      ClaimFault{"status429", Kind::kStatus, 429, false},
                      ClaimFault{"reset", Kind::kResetBeforeHeaders, 0, true},
                      ClaimFault{"truncated", Kind::kTruncateBody, 0, true, 2000ms},
                      ClaimFault{"malformedjson", Kind::kMalformedJson, 0, true}),
    [](const ::testing::TestParamInfo<ClaimFault>& p) { return std::string(p.param.name); });

TEST_F(FaultMatrixTest, RetryAfterSecondsIsHonoured) {
  cp_->fake().QueueFault(ControlPlaneFault::Status(503, "2"), 2, Endpoint::kClaim);
  ASSERT_NO_FATAL_FAILURE(StartLoop(0.0));
  EnqueueAndFinish();
  for (milliseconds gap : ClaimGaps(2)) {
    EXPECT_GE(gap, 2000ms);
    EXPECT_LE(gap, 2000ms + kSlack);
  }
}

TEST_F(FaultMatrixTest, RetryAfterHttpDateIsHonoured) {
  cp_->fake().QueueFault(ControlPlaneFault::Status(429, FormatHttpDate(SystemClock().Now() + 4s)),
                         1, Endpoint::kClaim);
  ASSERT_NO_FATAL_FAILURE(StartLoop(0.0));
  EnqueueAndFinish();
  const auto gaps = ClaimGaps(1);
  ASSERT_EQ(gaps.size(), 1u);
  EXPECT_GE(gaps[0], 2000ms) << "an HTTP date about 3-4 s ahead";
  EXPECT_LE(gaps[0], 4000ms + kSlack);
}

TEST_F(FaultMatrixTest, RetryAfterZeroIsNotALoop) {
  cp_->fake().QueueFault(ControlPlaneFault::Status(429, "0"), 2, Endpoint::kClaim);
  ASSERT_NO_FATAL_FAILURE(StartLoop(0.0));
  EnqueueAndFinish();
  for (milliseconds gap : ClaimGaps(2)) EXPECT_GE(gap, kMinRetryAfter);
}

TEST_F(FaultMatrixTest, GarbageForeverNeverBusyLoops) {
  // A server that answers 200 with garbage to everything, for three seconds, with the smallest
  // possible random draw: only the floor separates attempts.
  cp_->fake().QueueFault(Fault(Kind::kMalformedJson), 100000, Endpoint::kClaim);
  ASSERT_NO_FATAL_FAILURE(StartLoop(0.0));
  std::this_thread::sleep_for(3s);
  auto arrivals = cp_->fake().Arrivals(Endpoint::kClaim);
  const auto gaps = Gaps(arrivals);
  for (milliseconds gap : gaps) EXPECT_GE(gap, kMinRetryDelay) << Show(gaps);
  EXPECT_LE(arrivals.size(), 31u);
  EXPECT_EQ(h_->loop->Snapshot().state, LoopState::kBackingOff);
  EXPECT_FALSE(h_->loop->Snapshot().last_error.empty());
  cp_->fake().ClearFaults();
}

TEST_F(FaultMatrixTest, ErrorsForeverGrowToTheCap) {
  cp_->fake().QueueFault(ControlPlaneFault::Status(500), 100000, Endpoint::kClaim);
  ASSERT_NO_FATAL_FAILURE(StartLoop(0.5));
  std::this_thread::sleep_for(8s);
  // 0.5 + 1 + 2 + 4 s: at most five attempts in eight seconds.
  const auto arrivals = cp_->fake().Arrivals(Endpoint::kClaim);
  EXPECT_LE(arrivals.size(), 5u);
  EXPECT_GE(arrivals.size(), 4u);
  ExpectExponential(Gaps(arrivals));
  cp_->fake().ClearFaults();
}

TEST_F(FaultMatrixTest, InstantEmptyAnswersArePaced) {
  TearDown();
  testing::RunningControlPlaneOptions o;
  o.control_plane.long_poll_time_scale = 1e-4;  // every claim answers at once, empty
  ASSERT_NO_FATAL_FAILURE(Start(o));
  ASSERT_NO_FATAL_FAILURE(StartLoop(0.5));
  std::this_thread::sleep_for(4s);
  const auto arrivals = cp_->fake().Arrivals(Endpoint::kClaim);
  EXPECT_LE(arrivals.size(), 5u) << Show(Gaps(arrivals));
  for (milliseconds gap : Gaps(arrivals)) EXPECT_GE(gap, 500ms);
  // Work is still picked up (after the current pacing wait).
  EnqueueAndFinish(70s);
}

TEST_F(FaultMatrixTest, SlowAnswersAreNotErrors) {
  cp_->fake().QueueFault(Fault(Kind::kDelay, 0, 1500ms), 2, Endpoint::kClaim);
  ASSERT_NO_FATAL_FAILURE(StartLoop(0.5));
  EnqueueAndFinish();
  EXPECT_EQ(h_->resets.load(), 0);
}

TEST_F(FaultMatrixTest, TruncatedClaimAnswerLosesNoJob) {
  // The server leased the job but the agent never saw the answer: the lease runs out and the job
  // is delivered again.
  cp_->fake().QueueFault(Fault(Kind::kTruncateBody), 1, Endpoint::kClaim);
  ASSERT_NO_FATAL_FAILURE(StartLoop(0.5));
  auto id = cp_->fake().EnqueueJob(testing::Job(kAddMember));
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(cp_->fake().WaitForJobState(*id, JobState::kFinished, 30s));
  EXPECT_EQ(spy_->starts(*id), 1);
}

TEST_F(FaultMatrixTest, ResultFaultsBackOffAndTheResultLandsOnce) {
  cp_->fake().QueueFault(ControlPlaneFault::Status(500), 2, Endpoint::kResult);
  cp_->fake().QueueFault(Fault(Kind::kMalformedJson), 1, Endpoint::kResult);
  // The last failure happens after the server stored the result: the re-send is a duplicate.
  cp_->fake().QueueFault(ControlPlaneFault::Reset(/*process_request=*/true), 1, Endpoint::kResult);
  ASSERT_NO_FATAL_FAILURE(StartLoop(0.5));
  const std::string id = EnqueueAndFinish();
  ASSERT_TRUE(cp_->fake().WaitUntil([&] { return h_->loop->Snapshot().results_pending == 0; },
                                    "acknowledged"));
  const auto gaps = Gaps(cp_->fake().Arrivals(Endpoint::kResult));
  ASSERT_EQ(gaps.size(), 4u) << Show(gaps);
  ExpectExponential(gaps);
  auto job = cp_->fake().Job(id);
  ASSERT_EQ(job->result_deliveries.size(), 2u);
  EXPECT_EQ(job->result_deliveries[0].outcome, "accepted");
  EXPECT_EQ(job->result_deliveries[1].outcome, "duplicate");
}

TEST_F(FaultMatrixTest, SlowResultAnswersDoNotHoldBackOtherJobsResults) {
  // Every result is answered 2 s late. Nothing is owed, so each job's worker sends its result as
  // soon as the job ends: the four results arrive together, not one per slow answer.
  cp_->fake().QueueFault(Fault(Kind::kDelay, 0, 2000ms), 4, Endpoint::kResult);
  h_->config.jobs.max_concurrent = 4;
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    auto id = cp_->fake().EnqueueJob(testing::Job(kAddMember));
    ASSERT_TRUE(id.ok());
    ids.push_back(*id);
  }
  ASSERT_NO_FATAL_FAILURE(StartLoop(0.5));
  for (const auto& id : ids) ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 30s));
  const auto arrivals = cp_->fake().Arrivals(Endpoint::kResult);
  ASSERT_EQ(arrivals.size(), 4u) << "one attempt per result";
  EXPECT_LT(arrivals.back() - arrivals.front(), 1500ms)
      << "the results waited for each other's answers: " << Show(Gaps(arrivals));
}

TEST_F(FaultMatrixTest, WhileAResultIsOwedLaterResultsQueueBehindItInOrder) {
  // The first job's result fails twice. The jobs that end meanwhile do not try on their own: their
  // results go out after the owed one, in the order the jobs ended, each in one attempt.
  cp_->fake().QueueFault(ControlPlaneFault::Status(503), 2, Endpoint::kResult);
  h_->config.jobs.max_concurrent = 1;
  ASSERT_NO_FATAL_FAILURE(StartLoop(0.5));
  std::vector<std::string> ids;
  auto first = cp_->fake().EnqueueJob(testing::Job(kAddMember));
  ASSERT_TRUE(first.ok());
  ids.push_back(*first);
  ASSERT_TRUE(cp_->fake().WaitUntil([&] { return !h_->loop->Snapshot().last_error.empty(); },
                                    "the first attempt failed"));
  for (int i = 0; i < 2; ++i) {
    auto id = cp_->fake().EnqueueJob(testing::Job(kAddMember));
    ASSERT_TRUE(id.ok());
    ASSERT_TRUE(cp_->fake().WaitUntil([&] { return spy_->starts(*id) == 1; }, "ran", 30s));
    ids.push_back(*id);
  }
  for (const auto& id : ids) ASSERT_TRUE(cp_->fake().WaitForJobState(id, JobState::kFinished, 30s));
  EXPECT_EQ(cp_->fake().Arrivals(Endpoint::kResult).size(), 5u)
      << "two failed attempts for the first result, one for each of the three";
  std::vector<SysTime> accepted;
  for (const auto& id : ids) {
    const auto job = cp_->fake().Job(id);
    ASSERT_EQ(job->result_deliveries.size(), 1u) << id;
    accepted.push_back(job->result_deliveries[0].received_at);
  }
  EXPECT_LE(accepted[0], accepted[1]);
  EXPECT_LE(accepted[1], accepted[2]);
}

TEST_F(FaultMatrixTest, LeaseExtensionFaultsDoNotStopTheJob) {
  auto slow = std::make_shared<SpyExecutor>([](JobContext& job) -> Result<Json::Value> {
    for (int i = 0; i < 50 && !job.stop.stop_requested(); ++i) std::this_thread::sleep_for(100ms);
    if (job.stop.stop_requested()) return StoppedStatus();
    return testing::AddMemberOutput("slow");
  });
  ASSERT_TRUE(h_->registry.Register("jira.group.remove_member", slow).ok());
  cp_->fake().QueueFault(ControlPlaneFault::Status(503), 2, Endpoint::kLease);
  ASSERT_NO_FATAL_FAILURE(StartLoop(0.1));
  auto id = cp_->fake().EnqueueJob(testing::Job("jira.group.remove_member"));
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(cp_->fake().WaitForJobState(*id, JobState::kFinished, 30s));
  auto job = cp_->fake().Job(*id);
  EXPECT_EQ(job->leases.size(), 1u) << "extensions retried in time; the lease never ran out";
  EXPECT_EQ(job->result["status"].asString(), "succeeded");
  EXPECT_GE(cp_->fake().Arrivals(Endpoint::kLease).size(), 4u);
}

TEST_F(FaultMatrixTest, ALeaseThatCannotBeExtendedStopsTheJobWhenItRunsOut) {
  // Lease extensions fail for good (the control plane is unreachable for them): when the lease
  // runs out by the agent's clock the job is stopped and nothing is reported, so that it never
  // runs here while the control plane hands it to another agent.
  std::atomic<int> runs{0};
  std::atomic<bool> stopped{false};
  std::chrono::steady_clock::time_point started, stopped_at;
  auto slow = std::make_shared<SpyExecutor>([&](JobContext& job) -> Result<Json::Value> {
    if (++runs == 1) {
      started = std::chrono::steady_clock::now();
      while (!job.stop.stop_requested()) std::this_thread::sleep_for(5ms);
      stopped_at = std::chrono::steady_clock::now();
      stopped = true;
      return StoppedStatus();
    }
    return testing::AddMemberOutput("second");
  });
  ASSERT_TRUE(h_->registry.Register("jira.group.remove_member", slow).ok());
  h_->config.jobs.max_concurrent = 1;
  cp_->fake().QueueFault(ControlPlaneFault::Status(503), 100000, Endpoint::kLease);
  ASSERT_NO_FATAL_FAILURE(StartLoop(0.5));
  auto id = cp_->fake().EnqueueJob(testing::Job("jira.group.remove_member"));
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(cp_->fake().WaitUntil([&] { return stopped.load(); }, "stopped", 10s));
  const auto stopped_after = stopped_at - started;
  EXPECT_GE(stopped_after, 1500ms) << "not before the 3 s lease ran out (whole seconds)";
  EXPECT_LE(stopped_after, 3000ms + kSlack);
  cp_->fake().ClearFaults();
  ASSERT_TRUE(cp_->fake().WaitForJobState(*id, JobState::kFinished, 20s));
  auto job = cp_->fake().Job(*id);
  ASSERT_EQ(job->leases.size(), 2u);
  for (const auto& d : job->result_deliveries) EXPECT_EQ(d.lease_id, job->leases[1].lease_id);
  EXPECT_EQ(job->result["output"]["user"]["id"].asString(), "second");
}

TEST_F(FaultMatrixTest, RecordsFaultsRepeatTheSameSeq) {
  auto sync = std::make_shared<SpyExecutor>([](JobContext& job) -> Result<Json::Value> {
    Json::Value r(Json::objectValue);
    r["kind"] = "group";
    r["id"] = "g1";
    r["name"] = "jira-users";
    r["member_count"] = 3;
    CW_RETURN_IF_ERROR(job.records.Emit(r));
    CW_RETURN_IF_ERROR(job.records.Flush());
    Json::Value out(Json::objectValue);
    out["counts"]["users"] = 0;
    out["counts"]["groups"] = 1;
    out["counts"]["non_human"] = 0;
    out["counts"]["credentials"] = 0;
    out["records"] = 1;
    out["pages"] = 1;
    const std::string canonical = WriteJson(r);
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>(canonical.data()), canonical.size(), digest);
    out["sha256"] = HexEncode(std::span<const std::uint8_t>(digest, sizeof digest));
    out["duration_ms"] = 1;
    return out;
  });
  ASSERT_TRUE(h_->registry.Register("jira.access_sync", sync).ok());
  cp_->fake().QueueFault(ControlPlaneFault::Status(500), 1, Endpoint::kRecords);
  cp_->fake().QueueFault(Fault(Kind::kTruncateBody), 1, Endpoint::kRecords);
  ASSERT_NO_FATAL_FAILURE(StartLoop(0.2));
  auto id = cp_->fake().EnqueueJob(testing::Job("jira.access_sync"));
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(cp_->fake().WaitForJobState(*id, JobState::kFinished, 20s));
  const auto bodies = testing::RequestBodies(*cp_, "/records");
  ASSERT_EQ(bodies.size(), 3u);
  for (const auto& b : bodies) EXPECT_EQ(b["seq"].asInt(), 0);
  auto job = cp_->fake().Job(*id);
  const auto& batches = job->records_by_lease.begin()->second;
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].deliveries, 2) << "the truncated answer was processed; its retry repeats";
  EXPECT_EQ(job->result["status"].asString(), "succeeded");
}

TEST_F(FaultMatrixTest, IdentityRejectionWaitsFiveMinutesAndSaysSo) {
  ASSERT_TRUE(cp_->fake().RevokeAgent(h_->agent.agent_id).ok());
  ASSERT_NO_FATAL_FAILURE(StartLoop(0.5));
  ASSERT_TRUE(cp_->fake().WaitForRequests(Endpoint::kClaim, 1));
  ASSERT_TRUE(cp_->fake().WaitUntil(
      [&] { return h_->loop->Snapshot().state == LoopState::kIdentityRejected; },
      "identity rejected state"));
  std::this_thread::sleep_for(3s);
  EXPECT_EQ(cp_->fake().Arrivals(Endpoint::kClaim).size(), 1u) << "retried only every 5 minutes";
  const LoopSnapshot s = h_->loop->Snapshot();
  EXPECT_NE(StatusLine(s).find("identity rejected"), std::string::npos) << StatusLine(s);
  bool logged_error = false;
  for (const auto& e : h_->log.WithId(event::kControlPlane)) {
    if (e.severity == Severity::kError) logged_error = true;
  }
  EXPECT_TRUE(logged_error) << "loudly";
}

}  // namespace
}  // namespace cakewalk::agent
