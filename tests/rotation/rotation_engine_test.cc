// The password rotation engine (agent/rotation.h) in process, against the fake Jira over TLS with
// a private SoftHSM token: the whole rotation with two-step verification, the order of its steps
// (sealed before Jira is touched), password rules, refusals that leave Jira and the token as they
// were, lost answers, serialised concurrent rotations, jobs during a rotation, recovery from every
// record state (one login per version at most, CAPTCHA stops it), the grace period, audit events
// without values, and the canary passwords in nothing but the login and change bodies.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cctype>
#include <thread>

#include "agent/executor.h"
#include "base/fault_point.h"
#include "base/json.h"
#include "jira/errors.h"
#include "jira/jobs.h"
#include "tests/rotation/rotation_env.h"
#include "tests/support/canary.h"

namespace cakewalk::testing {
namespace {

using hsm::SecretState;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Runs a test's function at every fault point reached while it lives (in this process).
std::function<void(std::string_view)>* g_on_point = nullptr;
void OnPoint(std::string_view point) noexcept {
  if (g_on_point != nullptr && *g_on_point) (*g_on_point)(point);
}
class PointHook {
 public:
  explicit PointHook(std::function<void(std::string_view)> fn) : fn_(std::move(fn)) {
    g_on_point = &fn_;
    SetFaultHookForTesting(&OnPoint);
  }
  ~PointHook() {
    SetFaultHookForTesting(nullptr);
    g_on_point = nullptr;
  }

 private:
  std::function<void(std::string_view)> fn_;
};

bool IsPasswordChange(const HttpRequest& r) {
  return r.method == "PUT" && r.path == "/rest/api/2/myself/password";
}
bool IsPasswordLogin(const HttpRequest& r) {
  return r.method == "POST" &&
         (r.path == "/rest/tsv/1.0/authenticate" || r.path == "/rest/auth/1/session");
}

class RotationEngineTest : public RotationFixture {
 protected:
  Result<agent::RotationOutcome> Rotate() { return rotator_->RotatePassword(kRotConn, {}); }

  // A verify job through the connection the jobs share.
  Result<Json::Value> VerifyJob() {
    CW_ASSIGN_OR_RETURN(auto connection, connections_->Get(config_->connections[0]));
    return jira::RunVerify(*connection, Json::Value(Json::objectValue), {});
  }
};

TEST_F(RotationEngineTest, RotatesWithTwoStepVerificationThenDestroysTheOldVersionAfterTheGrace) {
  ASSERT_NO_FATAL_FAILURE(StartJira(true));
  ASSERT_NO_FATAL_FAILURE(Configure(true, false, [](agent::Config& c) {
    c.rotation.old_version_grace = std::chrono::seconds(3600);
  }));
  auto out = Rotate();
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->version, 2u);
  EXPECT_EQ(out->previous, 1u);
  EXPECT_TRUE(out->verified);
  EXPECT_EQ(Versions(), (std::map<std::uint32_t, SecretState>{{1, SecretState::kRetired},
                                                              {2, SecretState::kCurrent}}));
  const std::string fresh = CurrentPassword();
  EXPECT_NE(fresh, password_);
  EXPECT_EQ(fresh.size(), 32u);
  EXPECT_EQ(PasswordChanges(), 1);
  // Logged in with the old password (for the change), then with the new one (the verification),
  // each with its own one-time code.
  EXPECT_THAT(PasswordLogins(), ElementsAre("ok", "ok"));
  int codes = 0;
  for (const auto& a : jira_->LoginAttempts(kRotAdmin)) {
    codes += a.method == "tsv_totp" && a.outcome == "ok" ? 1 : 0;
  }
  EXPECT_EQ(codes, 2);
  // The change carried exactly the sealed values, with the XSRF header of a cookie session.
  std::vector<HttpRequest> changes;
  for (const auto& r : Requests()) {
    if (IsPasswordChange(r)) changes.push_back(r);
  }
  ASSERT_EQ(changes.size(), 1u);
  auto body = ParseJson(changes[0].body, "change");
  ASSERT_TRUE(body.ok());
  EXPECT_EQ((*body)["password"].asString(), fresh);
  EXPECT_EQ((*body)["currentPassword"].asString(), password_);
  EXPECT_EQ(changes[0].Header("x-atlassian-token"), "no-check");
  EXPECT_NE(changes[0].Header("cookie").find("JSESSIONID"), std::string::npos);
  EXPECT_TRUE(changes[0].Header("authorization").empty());
  EXPECT_THAT(RotationSteps(), ElementsAre("staged", "change-sent", "jira-changed", "verified",
                                           "promoted", "finished"));
  EXPECT_FALSE(std::filesystem::exists(RecordPath()));
  // Jobs log in with the new password.
  auto verify = VerifyJob();
  ASSERT_TRUE(verify.ok()) << verify.status().ToString();

  // The old version stays for the grace period, then a sweep destroys it.
  clock_.Advance(std::chrono::minutes(59));
  ASSERT_TRUE(rotator_->SweepRetired().ok());
  EXPECT_EQ(Versions().count(1), 1u);
  clock_.Advance(std::chrono::minutes(2));
  ASSERT_TRUE(rotator_->SweepRetired().ok());
  EXPECT_EQ(Versions(), (std::map<std::uint32_t, SecretState>{{2, SecretState::kCurrent}}));
  EXPECT_EQ(RotationSteps().back(), "old-destroyed");
}

TEST_F(RotationEngineTest, TheNewPasswordIsSealedBeforeJiraIsAskedToChangeIt) {
  ASSERT_NO_FATAL_FAILURE(StartJira(false));
  ASSERT_NO_FATAL_FAILURE(Configure(false));
  std::vector<std::string> seen;
  PointHook hook([&](std::string_view point) {
    seen.emplace_back(point);
    if (point != "rotation.staged" && point != "rotation.change-recorded") return;
    // Staged in the token, and Jira not asked yet.
    EXPECT_EQ(Versions()[2], SecretState::kPending) << point;
    for (const auto& r : Requests()) EXPECT_FALSE(IsPasswordChange(r)) << point;
    if (point == "rotation.staged") {
      // Not even logged in yet.
      for (const auto& r : Requests()) EXPECT_FALSE(IsPasswordLogin(r));
    }
    // The record says how far it got, before the step that follows.
    EXPECT_THAT(ReadFile(RecordPath()),
                HasSubstr(point == "rotation.staged" ? "\"staging\"" : "\"change-sent\""));
  });
  auto out = Rotate();
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_THAT(seen,
              ElementsAre("rotation.staged", "rotation.change-recorded", "rotation.jira-changed",
                          "rotation.verified", "rotation.promoted", "rotation.finished"));
}

TEST_F(RotationEngineTest, ThePasswordFollowsTheConfiguredPolicy) {
  ASSERT_NO_FATAL_FAILURE(StartJira(false));
  ASSERT_NO_FATAL_FAILURE(Configure(false, false, [](agent::Config& c) {
    c.connections[0].password_policy.length = 20;
    c.connections[0].password_policy.symbols = false;
  }));
  ASSERT_TRUE(Rotate().ok());
  const std::string p = CurrentPassword();
  ASSERT_EQ(p.size(), 20u);
  auto all = [&](int (*f)(int)) {
    return std::all_of(p.begin(), p.end(),
                       [f](char ch) { return f(static_cast<unsigned char>(ch)) != 0; });
  };
  auto any = [&](int (*f)(int)) {
    return std::any_of(p.begin(), p.end(),
                       [f](char ch) { return f(static_cast<unsigned char>(ch)) != 0; });
  };
  EXPECT_TRUE(all(&isalnum)) << "no symbols were asked for";
  EXPECT_TRUE(any(&islower));
  EXPECT_TRUE(any(&isupper));
  EXPECT_TRUE(any(&isdigit));
}

TEST_F(RotationEngineTest, JiraRulesThePolicyCannotMeetAreRefusedBeforeAnythingIsStored) {
  ASSERT_NO_FATAL_FAILURE(StartJira(false));
  ASSERT_NO_FATAL_FAILURE(Configure(
      false, false, [](agent::Config& c) { c.connections[0].password_policy.symbols = false; }));
  Json::Value rules(Json::arrayValue);
  rules.append("The password must contain at least 12 characters.");
  rules.append("The password must contain at least 1 special character.");
  rules.append("The new password must be different from the current password.");
  Override([rules](const HttpRequest& r) -> std::optional<HttpResponse> {
    if (r.path == "/rest/api/2/password/policy") return HttpResponse::Json(200, rules);
    return std::nullopt;
  });
  auto out = Rotate();
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().reason(), "policy_denied");
  EXPECT_THAT(out.status().message(), HasSubstr("special character"));
  EXPECT_THAT(out.status().message(), HasSubstr("connections[jira-prod].password_policy.symbols"));
  EXPECT_EQ(Versions(), (std::map<std::uint32_t, SecretState>{{1, SecretState::kCurrent}}));
  EXPECT_TRUE(PasswordLogins().empty());
  EXPECT_EQ(PasswordChanges(), 0);

  // Too short for Jira: the same, naming the length.
  rules[0] = "The password must contain at least 40 characters.";
  rules[1] = "The password must contain at least 1 digit.";
  Override([rules](const HttpRequest& r) -> std::optional<HttpResponse> {
    if (r.path == "/rest/api/2/password/policy") return HttpResponse::Json(200, rules);
    return std::nullopt;
  });
  out = Rotate();
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("at least 40 characters"));
  EXPECT_THAT(out.status().message(), HasSubstr(".length is 32: raise it"));
  EXPECT_EQ(Versions().size(), 1u);
}

TEST_F(RotationEngineTest, JiraRefusingTheNewPasswordLeavesEverythingAsItWas) {
  ASSERT_NO_FATAL_FAILURE(StartJira(false));
  ASSERT_NO_FATAL_FAILURE(Configure(false));
  Override([](const HttpRequest& r) -> std::optional<HttpResponse> {
    if (!IsPasswordChange(r)) return std::nullopt;
    Json::Value e;
    e["errorMessages"] = Json::Value(Json::arrayValue);
    e["errors"]["password"] = "The password must not contain a dictionary word.";
    return HttpResponse::Json(400, e);
  });
  auto out = Rotate();
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("dictionary word"));
  EXPECT_THAT(out.status().message(), HasSubstr("password_policy"));
  EXPECT_THAT(out.status().message(), HasSubstr("version 1 stays current"));
  // The staged version was discarded; its number is never handed out again.
  EXPECT_EQ(Versions(), (std::map<std::uint32_t, SecretState>{{1, SecretState::kCurrent}}));
  EXPECT_FALSE(std::filesystem::exists(RecordPath()));
  EXPECT_EQ(CurrentPassword(), password_);
  Override(nullptr);
  auto next = Rotate();
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(next->version, 3u);
}

TEST_F(RotationEngineTest, AReadOnlyDirectoryRefusalSaysWhereToChangeThePassword) {
  ASSERT_NO_FATAL_FAILURE(StartJira(false, {}, "Corporate LDAP"));
  ASSERT_NO_FATAL_FAILURE(Configure(false));
  auto out = Rotate();
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().reason(), "unsupported_by_jira_version");
  EXPECT_THAT(out.status().message(), HasSubstr("read-only"));
  EXPECT_EQ(PasswordChanges(), 0);
  EXPECT_EQ(Versions(), (std::map<std::uint32_t, SecretState>{{1, SecretState::kCurrent}}));
  auto verify = VerifyJob();
  EXPECT_TRUE(verify.ok()) << verify.status().ToString();
}

TEST_F(RotationEngineTest, CloudIsRefusedWithWhatToRotateInstead) {
  ASSERT_NO_FATAL_FAILURE(StartJira(false));
  ASSERT_NO_FATAL_FAILURE(Configure(false, true));
  auto out = Rotate();
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::kFailedPrecondition);
  EXPECT_THAT(out.status().message(), HasSubstr("Jira Cloud"));
  EXPECT_THAT(out.status().message(), HasSubstr("cakewalk-agent secret set jira-prod api-token"));
  EXPECT_THAT(out.status().message(), HasSubstr("id.atlassian.com"));
  EXPECT_TRUE(Requests().empty());
  EXPECT_EQ(Versions().size(), 1u);
}

TEST_F(RotationEngineTest, ALostAnswerAfterJiraChangedIsSettledByOneLoginWithTheNewPassword) {
  ASSERT_NO_FATAL_FAILURE(StartJira(false));
  ASSERT_NO_FATAL_FAILURE(Configure(false));
  FaultRule rule;
  rule.method = "PUT";
  rule.path_contains = "/myself/password";
  rule.transport = Fault{Fault::kResetBeforeHeaders, {}};
  rule.after_handling = true;  // Jira changed it, the agent never saw the 204
  jira_->QueueFault(rule);
  auto out = Rotate();
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->version, 2u);
  EXPECT_EQ(PasswordChanges(), 1);
  // The change's session, then the probe of the new password: nothing refused.
  EXPECT_THAT(PasswordLogins(), ElementsAre("ok", "ok"));
  EXPECT_EQ(Versions()[2], SecretState::kCurrent);
  EXPECT_THAT(RotationSteps(), ::testing::Contains("change-unknown"));
}

TEST_F(RotationEngineTest, ALostRequestBeforeJiraChangedKeepsTheOldPassword) {
  ASSERT_NO_FATAL_FAILURE(StartJira(false));
  ASSERT_NO_FATAL_FAILURE(Configure(false));
  FaultRule rule;
  rule.method = "PUT";
  rule.path_contains = "/myself/password";
  rule.transport = Fault{Fault::kResetBeforeHeaders, {}};  // not processed
  jira_->QueueFault(rule);
  auto out = Rotate();
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("Jira kept the old password"));
  EXPECT_EQ(PasswordChanges(), 0);
  // One refused probe of the staged password, then the old one: each tried once.
  EXPECT_THAT(PasswordLogins(), ElementsAre("ok", "bad_credentials", "ok"));
  EXPECT_EQ(jira_->FailedLoginCount(kRotAdmin), 0);  // the success reset the count
  EXPECT_EQ(Versions(), (std::map<std::uint32_t, SecretState>{{1, SecretState::kCurrent}}));
  EXPECT_FALSE(std::filesystem::exists(RecordPath()));
}

TEST_F(RotationEngineTest, ConcurrentRotationsRunOneAfterTheOther) {
  ASSERT_NO_FATAL_FAILURE(StartJira(true));
  ASSERT_NO_FATAL_FAILURE(Configure(true));
  Result<agent::RotationOutcome> a = Status(Code::kInternal, "not run");
  Result<agent::RotationOutcome> b = Status(Code::kInternal, "not run");
  std::atomic<int> waited{0};
  std::thread t1([&] { a = rotator_->RotatePassword(kRotConn, {}, [&] { ++waited; }); });
  std::thread t2([&] { b = rotator_->RotatePassword(kRotConn, {}, [&] { ++waited; }); });
  t1.join();
  t2.join();
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(std::min(a->version, b->version), 2u);
  EXPECT_EQ(std::max(a->version, b->version), 3u);
  EXPECT_EQ(waited.load(), 1);
  EXPECT_EQ(PasswordChanges(), 2);
  // Never interleaved: each rotation's steps run from staged to finished before the next starts.
  EXPECT_THAT(RotationSteps(), ElementsAre("staged", "change-sent", "jira-changed", "verified",
                                           "promoted", "finished", "staged", "change-sent",
                                           "jira-changed", "verified", "promoted", "finished"));
  EXPECT_EQ(Versions()[3], SecretState::kCurrent);
  ASSERT_TRUE(VerifyJob().ok());
}

TEST_F(RotationEngineTest, AJobThatLogsInBetweenJiraChangeAndPromotionSucceeds) {
  ASSERT_NO_FATAL_FAILURE(StartJira(true));
  ASSERT_NO_FATAL_FAILURE(Configure(true));
  // A session the jobs share, opened before the rotation.
  ASSERT_TRUE(VerifyJob().ok());
  Result<Json::Value> in_between = Status(Code::kInternal, "not run");
  Result<Json::Value> old_session = Status(Code::kInternal, "not run");
  PointHook hook([&](std::string_view point) {
    if (point != "rotation.jira-changed") return;
    // A job holding the old session keeps working...
    old_session = VerifyJob();
    // ...and once sessions end, a job that must log in now, with the token still saying the
    // old password is current, gets in with the staged one.
    jira_->ExpireSessions();
    in_between = VerifyJob();
  });
  auto out = Rotate();
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  ASSERT_TRUE(old_session.ok()) << old_session.status().ToString();
  ASSERT_TRUE(in_between.ok()) << in_between.status().ToString();
  EXPECT_EQ(Versions()[2], SecretState::kCurrent);
  EXPECT_EQ(PasswordChanges(), 1);
  // The job's login: the old password refused once, the staged one accepted (and promoted).
  EXPECT_THAT(PasswordLogins(), ElementsAre("ok", "ok", "bad_credentials", "ok", "ok"));
  auto c = connections_->Get(config_->connections[0]);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE((*c)->state().login_stop().has_value());
}

TEST_F(RotationEngineTest, JobsRunningThroughARotationAllSucceed) {
  ASSERT_NO_FATAL_FAILURE(StartJira(true));
  ASSERT_NO_FATAL_FAILURE(Configure(true));
  NewUser alice;
  alice.username = "alice";
  alice.email = "alice@corp.example";
  alice.display_name = "Alice";
  ASSERT_TRUE(jira_->AddUser(alice).ok());
  std::atomic<bool> done{false};
  std::atomic<int> ran{0};
  std::vector<std::string> failures;
  std::thread jobs([&] {
    bool add = true;
    while (!done) {
      auto connection = connections_->Get(config_->connections[0]);
      if (!connection.ok()) {
        failures.push_back(connection.status().ToString());
        continue;
      }
      Json::Value params(Json::objectValue);
      params["user"]["username"] = "alice";
      params["group"] = "jira-software-users";
      auto r = jira::RunGroupMembership(**connection, params, add, {});
      if (!r.ok()) failures.push_back(r.status().ToString());
      add = !add;
      ++ran;
    }
  });
  PointHook hook([&](std::string_view point) {
    // Sessions end in the middle of the rotation: the jobs log in again meanwhile.
    if (point == "rotation.change-recorded" || point == "rotation.jira-changed") {
      jira_->ExpireSessions();
      const int before = ran;
      while (ran < before + 2) std::this_thread::yield();
    }
  });
  auto out = Rotate();
  const int before = ran;
  while (ran < before + 2) std::this_thread::yield();
  done = true;
  jobs.join();
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_TRUE(failures.empty()) << failures.front();
  EXPECT_GE(ran.load(), 6);
  EXPECT_EQ(PasswordChanges(), 1);
}

// ---- Recovery -----------------------------------------------------------------------------------

class RecoveryTest : public RotationEngineTest {
 protected:
  // A staged version 2 with `value`, as an interrupted rotation leaves it.
  void Stage(const std::string& value) {
    auto staged = store_->PutPending(kRotConn, "password", SecretBytes::CopyOf(value));
    ASSERT_TRUE(staged.ok());
    ASSERT_EQ(staged->version, 2u);
  }
  std::string new_password_ = MakeCanary("new-password");
};

class NeverSentTest : public RecoveryTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(NeverSentTest, StagedButNeverSentIsDiscardedWithoutAnyLogin) {
  ASSERT_NO_FATAL_FAILURE(StartJira(true));
  ASSERT_NO_FATAL_FAILURE(Configure(true));
  ASSERT_NO_FATAL_FAILURE(Stage(new_password_));
  const std::string step = GetParam();
  WriteRecord(step, 1, step == "staging" ? 0 : 2);
  ASSERT_TRUE(rotator_->Recover(kRotConn, {}).ok());
  EXPECT_EQ(Versions(), (std::map<std::uint32_t, SecretState>{{1, SecretState::kCurrent}}));
  EXPECT_FALSE(std::filesystem::exists(RecordPath()));
  EXPECT_TRUE(Requests().empty());
}
INSTANTIATE_TEST_SUITE_P(Steps, NeverSentTest, ::testing::Values("staging", "staged"));

TEST_F(RecoveryTest, VerifiedIsPromotedWithoutAnyLogin) {
  ASSERT_NO_FATAL_FAILURE(StartJira(true));
  ASSERT_NO_FATAL_FAILURE(Configure(true));
  ASSERT_NO_FATAL_FAILURE(Stage(new_password_));
  ASSERT_TRUE(jira_->SetPassword(kRotAdmin, new_password_).ok());
  WriteRecord("verified", 1, 2);
  ASSERT_TRUE(rotator_->Recover(kRotConn, {}).ok());
  EXPECT_EQ(Versions(), (std::map<std::uint32_t, SecretState>{{1, SecretState::kRetired},
                                                              {2, SecretState::kCurrent}}));
  EXPECT_TRUE(Requests().empty());
  EXPECT_TRUE(VerifyJob().ok());
}

class ChangedInJiraTest : public RecoveryTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(ChangedInJiraTest, PromotedAfterOneLoginWithTheStagedPassword) {
  ASSERT_NO_FATAL_FAILURE(StartJira(true));
  ASSERT_NO_FATAL_FAILURE(Configure(true));
  ASSERT_NO_FATAL_FAILURE(Stage(new_password_));
  ASSERT_TRUE(jira_->SetPassword(kRotAdmin, new_password_).ok());
  const std::string step = GetParam();
  if (step != "none") WriteRecord(step, 1, 2);
  ASSERT_TRUE(rotator_->Recover(kRotConn, {}).ok());
  EXPECT_EQ(Versions()[2], SecretState::kCurrent);
  EXPECT_THAT(PasswordLogins(), ElementsAre("ok"));
  EXPECT_FALSE(std::filesystem::exists(RecordPath()));
  EXPECT_TRUE(VerifyJob().ok());
}
INSTANTIATE_TEST_SUITE_P(Records, ChangedInJiraTest,
                         ::testing::Values("change-sent", "changed", "none"));

TEST_F(RecoveryTest, UnchangedInJiraTriesEachVersionOnceAndKeepsTheOld) {
  ASSERT_NO_FATAL_FAILURE(StartJira(true));
  ASSERT_NO_FATAL_FAILURE(Configure(true));
  ASSERT_NO_FATAL_FAILURE(Stage(new_password_));
  WriteRecord("change-sent", 1, 2);
  ASSERT_TRUE(rotator_->Recover(kRotConn, {}).ok());
  EXPECT_EQ(Versions(), (std::map<std::uint32_t, SecretState>{{1, SecretState::kCurrent}}));
  EXPECT_THAT(PasswordLogins(), ElementsAre("bad_credentials", "ok"));
  EXPECT_EQ(jira_->FailedLoginCount(kRotAdmin), 0);
  const auto steps = RotationSteps();
  EXPECT_THAT(steps, ::testing::Contains("discarded"));
  EXPECT_EQ(steps.back(), "recovered");
}

TEST_F(RecoveryTest, ARefusedStagedVersionIsNeverTriedAgain) {
  ASSERT_NO_FATAL_FAILURE(StartJira(true));
  ASSERT_NO_FATAL_FAILURE(Configure(true));
  ASSERT_NO_FATAL_FAILURE(Stage(new_password_));
  WriteRecord("pending-refused", 1, 2);
  ASSERT_TRUE(rotator_->Recover(kRotConn, {}).ok());
  EXPECT_THAT(PasswordLogins(), ElementsAre("ok"));
  EXPECT_EQ(Versions(), (std::map<std::uint32_t, SecretState>{{1, SecretState::kCurrent}}));
}

TEST_F(RecoveryTest, ACaptchaStopsRecoveryAndNoFurtherLoginIsAttempted) {
  FakeJiraOptions o;
  o.captcha_threshold = 1;  // one refused password, and Jira wants a CAPTCHA
  ASSERT_NO_FATAL_FAILURE(StartJira(false, o));
  ASSERT_NO_FATAL_FAILURE(Configure(false));
  ASSERT_NO_FATAL_FAILURE(Stage(new_password_));
  WriteRecord("change-sent", 1, 2);
  auto first = rotator_->Recover(kRotConn, {});
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.reason(), "captcha_required");
  // The staged password was refused, and Jira's answer already demands a CAPTCHA: the old
  // password is not tried (it would only count against the account).
  const auto logins = PasswordLogins();
  EXPECT_THAT(logins, ElementsAre("bad_credentials"));
  // Everything is kept for an operator; a second recovery sends nothing.
  EXPECT_EQ(Versions()[2], SecretState::kPending);
  auto second = rotator_->Recover(kRotConn, {});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(PasswordLogins(), logins);
  EXPECT_THAT(second.message(), HasSubstr("no login may be attempted"));
  // A rotation refuses to start over it.
  auto rotation = Rotate();
  ASSERT_FALSE(rotation.ok());
  EXPECT_EQ(PasswordLogins(), logins);
}

TEST_F(RecoveryTest, StaleAndSupersededStagedVersionsAreDiscarded) {
  ASSERT_NO_FATAL_FAILURE(StartJira(false));
  ASSERT_NO_FATAL_FAILURE(Configure(false));
  ASSERT_NO_FATAL_FAILURE(Stage("stale-one"));                                           // v2
  ASSERT_TRUE(store_->Put(kRotConn, "password", SecretBytes::CopyOf(password_)).ok());   // v3
  ASSERT_TRUE(store_->PutPending(kRotConn, "password", SecretBytes::CopyOf("x")).ok());  // v4
  ASSERT_TRUE(store_->PutPending(kRotConn, "password", SecretBytes::CopyOf("y")).ok());  // v5
  WriteRecord("staged", 3, 5);
  ASSERT_TRUE(rotator_->Recover(kRotConn, {}).ok());
  auto v = Versions();
  EXPECT_EQ(v.count(2), 0u);
  EXPECT_EQ(v.count(4), 0u);
  EXPECT_EQ(v.count(5), 0u);
  EXPECT_EQ(v[3], SecretState::kCurrent);
  EXPECT_TRUE(Requests().empty());
}

// ---- Sweep, audit, canaries, the executor -------------------------------------------------------

TEST_F(RotationEngineTest, RetiredVersionsOfEverySecretGoAfterTheGrace) {
  ASSERT_NO_FATAL_FAILURE(StartJira(false));
  ASSERT_NO_FATAL_FAILURE(Configure(false, false, [](agent::Config& c) {
    c.rotation.old_version_grace = std::chrono::seconds(600);
  }));
  ASSERT_TRUE(store_->Put(kRotConn, "pat", SecretBytes::CopyOf("pat-one")).ok());
  ASSERT_TRUE(store_->Put(kRotConn, "pat", SecretBytes::CopyOf("pat-two")).ok());
  ASSERT_TRUE(rotator_->SweepRetired().ok());  // first seen retired now
  clock_.Advance(std::chrono::seconds(599));
  ASSERT_TRUE(rotator_->SweepRetired().ok());
  EXPECT_EQ(Versions("pat").size(), 2u);
  clock_.Advance(std::chrono::seconds(1));
  ASSERT_TRUE(rotator_->SweepRetired().ok());
  EXPECT_EQ(Versions("pat"), (std::map<std::uint32_t, SecretState>{{2, SecretState::kCurrent}}));
  // Pending versions (a staged MFA key awaiting its first login) are never swept.
  ASSERT_TRUE(store_->PutPending(kRotConn, "password", SecretBytes::CopyOf("staged")).ok());
  clock_.Advance(std::chrono::hours(24 * 30));
  ASSERT_TRUE(rotator_->SweepRetired().ok());
  EXPECT_EQ(Versions()[2], SecretState::kPending);
}

TEST_F(RotationEngineTest, GraceZeroDestroysTheOldVersionAsTheRotationEnds) {
  ASSERT_NO_FATAL_FAILURE(StartJira(false));
  ASSERT_NO_FATAL_FAILURE(Configure(false, false, [](agent::Config& c) {
    c.rotation.old_version_grace = std::chrono::seconds(0);
  }));
  ASSERT_TRUE(Rotate().ok());
  EXPECT_EQ(Versions(), (std::map<std::uint32_t, SecretState>{{2, SecretState::kCurrent}}));
}

TEST_F(RotationEngineTest, PasswordsAppearOnlyInLoginAndChangeBodies) {
  ASSERT_NO_FATAL_FAILURE(StartJira(true));
  ASSERT_NO_FATAL_FAILURE(Configure(true));
  ASSERT_TRUE(Rotate().ok());
  const std::string fresh = CurrentPassword();
  ASSERT_TRUE(Rotate().ok());  // and once more, so that `fresh` is an old password too
  const std::string third = CurrentPassword();
  for (const std::string& secret : {password_, fresh, third}) {
    EXPECT_TRUE(FindCanaryIn(secret, audit_.Text(), "audit").empty());
    EXPECT_TRUE(FindCanaryInTree(secret, state_dir_).empty());
    for (const HttpRequest& r : Requests()) {
      const bool allowed = IsPasswordLogin(r) || IsPasswordChange(r);
      std::string all = r.method + " " + r.target + "\n";
      for (const auto& [k, v] : r.headers) all += k + ": " + v + "\n";
      if (!allowed) all += r.body;
      EXPECT_TRUE(FindCanaryIn(secret, all, r.method + " " + r.path).empty());
    }
  }
  // Audit events name versions, never values.
  for (const LogEntry& e : audit_.WithId(event::kSecretRotation)) {
    EXPECT_FALSE(e.Field("SECRET_VERSION").empty()) << e.message;
  }
}

class NullRecords final : public agent::RecordSink {
 public:
  Status Emit(Json::Value) override { return Internal("no records"); }
  Status Flush() override { return Status::Ok(); }
  std::int64_t records_sent() const override { return 0; }
  std::int64_t calls_made() const override { return 0; }
};

TEST_F(RotationEngineTest, TheSecretRotateExecutorFollowsTheLocalPolicy) {
  ASSERT_NO_FATAL_FAILURE(StartJira(false));
  ASSERT_NO_FATAL_FAILURE(Configure(false));
  agent::ExecutorRegistry registry;
  ASSERT_TRUE(
      agent::RegisterRotationExecutor(registry, *rotator_, [this] { return config_; }).ok());
  agent::Executor* executor = registry.Find("secret.rotate");
  ASSERT_NE(executor, nullptr);
  EXPECT_FALSE(executor->idempotent());
  NullRecords records;
  auto run = [&](const Json::Value& params) {
    agent::JobContext job{"job-1", "secret.rotate", config_->connections[0], params,
                          {},      records,         [](std::string_view) {}, clock_,
                          audit_};
    return executor->Run(job);
  };
  Json::Value params(Json::objectValue);
  params["secret"] = "password";
  // Off by default: policy_denied, nothing done.
  auto denied = run(params);
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.status().reason(), "policy_denied");
  EXPECT_TRUE(Requests().empty());

  auto enabled = std::make_shared<agent::Config>(*config_);
  enabled->jobs.allow_remote_secret_rotation = true;
  config_ = enabled;
  Json::Value wrong(Json::objectValue);
  wrong["secret"] = "totp";
  EXPECT_EQ(run(wrong).status().reason(), "invalid_params");
  Json::Value extra = params;
  extra["length"] = 40;
  EXPECT_EQ(run(extra).status().reason(), "invalid_params");
  auto out = run(params);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->getMemberNames(), (std::vector<std::string>{"secret", "verified", "version"}));
  EXPECT_EQ((*out)["secret"].asString(), "password");
  EXPECT_EQ((*out)["version"].asUInt(), 2u);
  EXPECT_TRUE((*out)["verified"].asBool());
}

}  // namespace
}  // namespace cakewalk::testing
