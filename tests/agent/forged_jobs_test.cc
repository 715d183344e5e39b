// Forged jobs end to end: the fake control plane delivers each forgery of docs/protocol.md §13
// (and local-policy violations) to a running job loop over mutual TLS. Every one must come back
// as a `rejected` result with the right reason — accepted by the strict fake — and no executor
// may ever start (a spy registered for every job type counts starts).
#include <gtest/gtest.h>

#include "agent/job_loop.h"
#include "agent/jws.h"
#include "base/json.h"
#include "tests/agent/loop_harness.h"

namespace cakewalk::agent {
namespace {

using namespace std::chrono_literals;
using testing::Forgery;
using testing::JobState;
using testing::LoopHarness;
using testing::RunningControlPlane;
using testing::SpyExecutor;

class ForgedJobsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cp = RunningControlPlane::Start();
    ASSERT_TRUE(cp.ok()) << cp.status().ToString();
    cp_ = std::move(cp).value();
    h_ = std::make_unique<LoopHarness>(*cp_, dir_.path());
    ASSERT_NO_FATAL_FAILURE(h_->Enroll());
    spy_ = std::make_shared<SpyExecutor>(testing::Succeed(testing::AddMemberOutput("spy")));
    for (std::string_view type :
         {kJobTypeVerify, kJobTypeProvision, kJobTypeDeprovision, kJobTypeAddMember,
          kJobTypeRemoveMember, kJobTypeAccessSync, kJobTypeSecretRotate}) {
      ASSERT_TRUE(h_->registry.Register(std::string(type), spy_).ok());
    }
  }

  void TearDown() override {
    if (h_) h_->StopLoop();
    std::string violations;
    for (const auto& v : cp_->fake().Violations()) violations += v.job_id + ": " + v.what + "\n";
    EXPECT_TRUE(violations.empty()) << violations;
  }

  // Enqueues `spec`, waits for its result and returns the accepted body.
  Json::Value ResultOf(testing::JobSpec spec) {
    auto id = cp_->fake().EnqueueJob(std::move(spec));
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    if (!id.ok()) return Json::Value();
    EXPECT_TRUE(cp_->fake().WaitForJobState(*id, JobState::kFinished, 15s));
    auto job = cp_->fake().Job(*id);
    return job ? job->result : Json::Value();
  }

  void ExpectRejected(const Json::Value& result, const std::string& reason) {
    EXPECT_EQ(result["status"].asString(), "rejected") << WriteJson(result);
    EXPECT_EQ(result["error"]["code"].asString(), reason) << WriteJson(result);
    EXPECT_FALSE(result["error"]["retryable"].asBool());
    EXPECT_FALSE(result.isMember("output"));
    EXPECT_EQ(spy_->total_starts(), 0) << "a forged or refused job must never run";
  }

  testing::TempDir dir_{"cakewalk-forged"};
  std::unique_ptr<RunningControlPlane> cp_;
  std::unique_ptr<LoopHarness> h_;
  std::shared_ptr<SpyExecutor> spy_;
};

struct Case {
  Forgery forgery;
  const char* reason;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << testing::ForgeryName(c.forgery) << " -> " << c.reason;
}

class ForgeryTest : public ForgedJobsTest, public ::testing::WithParamInterface<Case> {};

TEST_P(ForgeryTest, IsRejectedWithItsReasonAndNeverRuns) {
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  testing::JobSpec spec = testing::Job(std::string(kJobTypeAddMember));
  spec.forgery = GetParam().forgery;
  if (spec.forgery == Forgery::kUnknownType) spec.type.clear();  // the fake picks one
  if (spec.forgery == Forgery::kConnectionNotConfigured) spec.connection.clear();
  ExpectRejected(ResultOf(spec), GetParam().reason);
  // The rejection is journaled under the delivery's lease and logged.
  EXPECT_FALSE(h_->log.WithId(event::kJobRejected).empty());
}

INSTANTIATE_TEST_SUITE_P(
    AllForgeries, ForgeryTest,
    ::testing::Values(Case{Forgery::kBadSignature, jws_reason::kBadSignature},
                      Case{Forgery::kAlgNone, jws_reason::kUnsupportedAlg},
                      Case{Forgery::kHs256WithPublicKey, jws_reason::kUnsupportedAlg},
                      Case{Forgery::kUnknownKid, jws_reason::kUnknownKid},
                      Case{Forgery::kMissingKid, jws_reason::kUnknownKid},
                      Case{Forgery::kTamperedPayload, jws_reason::kBadSignature},
                      Case{Forgery::kWrongAudience, jws_reason::kWrongAudience},
                      Case{Forgery::kExpired, jws_reason::kExpired},
                      Case{Forgery::kIssuedInFuture, jws_reason::kNotYetValid},
                      Case{Forgery::kUnknownType, jws_reason::kUnknownType},
                      Case{Forgery::kConnectionNotConfigured, jws_reason::kConnectionNotConfigured},
                      Case{Forgery::kMissingClaims, jws_reason::kMalformedJob}),
    [](const ::testing::TestParamInfo<Case>& param) {
      std::string name(testing::ForgeryName(param.param.forgery));
      name.erase(std::remove(name.begin(), name.end(), '_'), name.end());
      return name;
    });

TEST_F(ForgedJobsTest, UnknownKidRefreshesTheKeysOnceAMinute) {
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  for (int i = 0; i < 3; ++i) {
    testing::JobSpec spec = testing::Job(std::string(kJobTypeAddMember));
    spec.forgery = Forgery::kUnknownKid;
    ExpectRejected(ResultOf(spec), jws_reason::kUnknownKid);
  }
  EXPECT_EQ(h_->key_fetches.load(), 1) << "one refresh, not one per job";
  EXPECT_EQ(cp_->fake().Arrivals(testing::Endpoint::kSigningKeys).size(), 1u);
}

TEST_F(ForgedJobsTest, RotatedSigningKeyIsLearnedByOneRefresh) {
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  ASSERT_TRUE(cp_->fake().RotateSigningKey().ok());
  Json::Value r = ResultOf(testing::Job(std::string(kJobTypeAddMember)));
  EXPECT_EQ(r["status"].asString(), "succeeded") << WriteJson(r);
  EXPECT_EQ(h_->key_fetches.load(), 1);
  EXPECT_EQ(spy_->total_starts(), 1);
}

TEST_F(ForgedJobsTest, ReplayedJtiGetsTheStoredResultAndDoesNotRunAgain) {
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  Json::Value first = ResultOf(testing::Job(std::string(kJobTypeAddMember)));
  ASSERT_EQ(first["status"].asString(), "succeeded");
  ASSERT_EQ(spy_->total_starts(), 1);
  testing::JobSpec replay = testing::Job(std::string(kJobTypeAddMember));
  replay.forgery = Forgery::kReplayedJti;
  auto id = cp_->fake().EnqueueJob(replay);
  ASSERT_TRUE(id.ok());
  // The replay is a separate entry at the fake with the original's id; wait for its result.
  ASSERT_TRUE(cp_->fake().WaitUntil(
      [&] {
        for (const auto& j : cp_->fake().Jobs()) {
          if (j.spec.forgery == Forgery::kReplayedJti && j.state == JobState::kFinished) {
            return true;
          }
        }
        return false;
      },
      "replay answered", 15s));
  for (const auto& j : cp_->fake().Jobs()) {
    if (j.spec.forgery != Forgery::kReplayedJti) continue;
    Json::Value a = j.result;
    Json::Value b = first;
    a.removeMember("lease_id");
    b.removeMember("lease_id");
    EXPECT_EQ(WriteJson(a), WriteJson(b)) << "the stored result, unchanged";
  }
  EXPECT_EQ(spy_->total_starts(), 1) << "a finished job id never runs again";
}

TEST_F(ForgedJobsTest, TypeOutsideAllowedTypesIsPolicyDenied) {
  h_->config.jobs.allowed_types = {"jira.group.*", "jira.connection.verify"};
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  ExpectRejected(ResultOf(testing::Job(std::string(kJobTypeProvision))), jws_reason::kPolicyDenied);
}

TEST_F(ForgedJobsTest, SecretRotationNeedsThePolicyFlag) {
  h_->config.jobs.allowed_types = {"jira.*", "secret.rotate"};
  h_->config.jobs.allow_remote_secret_rotation = false;
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  Json::Value params(Json::objectValue);
  params["secret"] = "password";
  ExpectRejected(ResultOf(testing::Job(std::string(kJobTypeSecretRotate), params)),
                 jws_reason::kPolicyDenied);
}

TEST_F(ForgedJobsTest, AJobForAnotherAgentIsRefusedEvenIfSignedForIt) {
  ASSERT_NO_FATAL_FAILURE(h_->StartLoop());
  testing::JobSpec spec = testing::Job(std::string(kJobTypeAddMember));
  spec.forgery = Forgery::kWrongAudience;
  ExpectRejected(ResultOf(spec), jws_reason::kWrongAudience);
  // And nothing about the refused job was run or stored as a success.
  auto entries = h_->journal->Entries();
  ASSERT_TRUE(entries.ok());
  for (const auto& e : *entries) {
    EXPECT_EQ(e.runs, 0);
    EXPECT_EQ(e.result->outcome, JobResult::Outcome::kRejected);
  }
}

}  // namespace
}  // namespace cakewalk::agent
