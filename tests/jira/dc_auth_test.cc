// Data Center logins against the fake over TLS, with the password and the TOTP seed in SoftHSM:
// the 2SV REST login with codes computed in the token, step reuse and step boundaries, clock
// skew, session expiry, the login stop after a CAPTCHA or a refused password (persisted across
// restarts), enrolment demands, and the per-version login paths (9.x session login, Jira 11).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "jira/errors.h"
#include "jira/jobs.h"
#include "tests/fakes/jira/fake_jira_test_util.h"
#include "tests/jira/jira_env.h"

namespace cakewalk::testing {
namespace {

class DcAuthTest : public JiraFixture {
 protected:
  void Start(const std::string& version, bool totp,
             const std::function<void(FakeJiraOptions&)>& tweak = {}) {
    FakeJiraOptions o;
    o.version = version;
    if (tweak) tweak(o);
    StartJira(o);
    SeedDcAdmin(totp);
    AddUser("alice", "alice@corp.example", {"jira-software-users"});
  }

  Result<Json::Value> Verify(jira::Connection& c) {
    return jira::RunVerify(c, Json::Value(Json::objectValue), {});
  }

  // Adds alice to a group (a cookie-authenticated write).
  Result<Json::Value> AddAlice(jira::Connection& c, const std::string& group) {
    Json::Value p;
    p["user"]["username"] = "alice";
    p["group"] = group;
    return jira::RunGroupMembership(c, p, true, {});
  }

  std::vector<TotpEvent> Accepted() const {
    std::vector<TotpEvent> out;
    for (const auto& e : jira_->TotpEvents()) {
      if (e.outcome == "accepted") out.push_back(e);
    }
    return out;
  }

  int Logins(const std::string& method) const {
    int n = 0;
    for (const auto& a : jira_->LoginAttempts(kDcAdmin)) n += a.method == method ? 1 : 0;
    return n;
  }

  // Fails a login `n` times with a wrong password, straight at the fake (a person mistyping).
  void FailLogins(int n) {
    Json::Value body;
    body["username"] = kDcAdmin;
    body["password"] = "not-the-password";
    for (int i = 0; i < n; ++i) {
      jira_->Handle(Req("POST", "/rest/auth/1/session").Json(body).request());
    }
  }
};

TEST_F(DcAuthTest, TwoStepLoginWithCodeComputedInToken) {
  Start("10.3.4", true);
  auto c = Open(DcSettings(true));
  auto out = Verify(*c);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(Str(*out, "mfa"), "totp");
  EXPECT_EQ(Str(*out, "flavor"), "datacenter");
  EXPECT_EQ(Str(*out, "server_version"), "10.3.4");
  EXPECT_TRUE((*out)["admin"].asBool());
  EXPECT_TRUE((*out)["system_admin"].asBool());
  EXPECT_EQ(Str((*out)["account"], "username"), kDcAdmin);
  EXPECT_EQ((*out)["clock_skew_seconds"].asInt64(), 0);
  ASSERT_EQ(Accepted().size(), 1u);
  EXPECT_EQ(Logins("tsv_password"), 1);
  EXPECT_EQ(Logins("tsv_totp"), 1);
  EXPECT_EQ(credentials_->totps(), 1);
  // The session is reused: a second job makes no new login.
  ASSERT_TRUE(AddAlice(*c, "jira-core-users").ok());
  EXPECT_EQ(c->session_auth()->logins(), 1);
  EXPECT_EQ(credentials_->gets("password"), 1);
}

TEST_F(DcAuthTest, SecondLoginInTheSameStepWaitsForTheNextStep) {
  Start("10.3.4", true);
  auto c = Open(DcSettings(true));
  ASSERT_TRUE(Verify(*c).ok());
  jira_->ExpireSessions();  // the next call needs a new login, within the same 30 s step
  const SysTime before = clock_.Now();
  auto added = AddAlice(*c, "jira-core-users");
  ASSERT_TRUE(added.ok()) << added.status().ToString();
  EXPECT_EQ(c->session_auth()->logins(), 2);
  const auto accepted = Accepted();
  ASSERT_EQ(accepted.size(), 2u);
  ASSERT_TRUE(accepted[0].step && accepted[1].step);
  EXPECT_EQ(*accepted[1].step, *accepted[0].step + 1);
  for (const auto& e : jira_->TotpEvents()) EXPECT_NE(e.outcome, "reused");
  EXPECT_GT(clock_.Now() - before, std::chrono::seconds(0));
  EXPECT_LE(clock_.Now() - before, std::chrono::seconds(31));

  // A restarted agent (a new Connection over the same state folder) remembers the step too.
  auto restarted = Open(DcSettings(true));
  jira_->ExpireSessions();
  ASSERT_TRUE(Verify(*restarted).ok());
  const auto again = Accepted();
  ASSERT_EQ(again.size(), 3u);
  EXPECT_GT(*again[2].step, *again[1].step);
  for (const auto& e : jira_->TotpEvents()) EXPECT_NE(e.outcome, "reused");
}

TEST_F(DcAuthTest, NoCodeIsSentWithLessThanThreeSecondsLeft) {
  Start("10.3.4", true, [](FakeJiraOptions& o) { o.totp_step_tolerance = 0; });
  const long long step = 1764850020 / 30 + 1;
  clock_.SetUnix(step * 30 - 2);  // 2 s before the step ends
  auto c = Open(DcSettings(true));
  ASSERT_TRUE(Verify(*c).ok());
  const auto accepted = Accepted();
  ASSERT_EQ(accepted.size(), 1u);
  EXPECT_EQ(*accepted[0].step, static_cast<std::uint64_t>(step));  // the next step's code
  ASSERT_FALSE(sleeper_.sleeps().empty());
  EXPECT_LE(sleeper_.total(), std::chrono::seconds(3));
}

TEST_F(DcAuthTest, CodeFollowsJirasClockWhenTheyDiffer) {
  // Jira is 20 s ahead and accepts only its current step: an uncorrected code would miss it
  // whenever the two clocks sit in different steps, which 20 s in every 30 guarantees here.
  Start("10.3.4", true, [](FakeJiraOptions& o) { o.totp_step_tolerance = 0; });
  jira_clock_.set_offset(std::chrono::seconds(20));
  clock_.SetUnix(1764850020 / 30 * 30 + 15);  // ours mid-step, Jira's 5 s into the next one
  auto c = Open(DcSettings(true));
  auto out = Verify(*c);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ((*out)["clock_skew_seconds"].asInt64(), 20);
  ASSERT_EQ(Accepted().size(), 1u);
}

TEST_F(DcAuthTest, SkewBeyondOneStepIsRefusedBeforeAnyLogin) {
  Start("10.3.4", true);
  jira_clock_.set_offset(std::chrono::seconds(-95));
  auto c = Open(DcSettings(true));
  auto out = Verify(*c);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().reason(), "mfa_failed");
  EXPECT_NE(out.status().message().find("clock"), std::string::npos);
  EXPECT_NE(out.status().message().find("-95"), std::string::npos);
  EXPECT_TRUE(jira_->LoginAttempts(kDcAdmin).empty());
  EXPECT_TRUE(RequestsTo("/rest/tsv/").empty());
  EXPECT_EQ(credentials_->gets("password"), 0);
  // Not a credential problem: no login stop.
  EXPECT_FALSE(c->state().login_stop().has_value());
}

TEST_F(DcAuthTest, ExpiredSessionLeadsToOneNewLogin) {
  Start("10.3.4", false);
  auto c = Open(DcSettings(false));
  auto out = Verify(*c);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(Str(*out, "mfa"), "none");
  clock_.Advance(std::chrono::minutes(31));  // past the fake's idle timeout
  ASSERT_TRUE(AddAlice(*c, "jira-core-users").ok());
  EXPECT_EQ(c->session_auth()->logins(), 2);
  // An anonymous-friendly endpoint (user search answers an empty 200 to anonymous callers) must
  // not be mistaken for "no such user" when the session is gone.
  jira_->ExpireSessions();
  Json::Value p;
  p["user"]["email"] = "alice@corp.example";
  p["group"] = "jira-core-users";
  auto removed = jira::RunGroupMembership(*c, p, false, {});
  ASSERT_TRUE(removed.ok()) << removed.status().ToString();
  EXPECT_TRUE((*removed)["changed"].asBool());
  EXPECT_EQ(c->session_auth()->logins(), 3);
}

TEST_F(DcAuthTest, CookieWritesCarryTheXsrfHeader) {
  Start("10.3.4", true);
  auto c = Open(DcSettings(true));
  Json::Value p;
  p["email"] = "bob@corp.example";
  p["display_name"] = "Bob";
  p["username"] = "bob";
  p["groups"].append("jira-core-users");
  p["products"].append("jira-software");
  auto out = jira::RunProvision(*c, p, {});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  int writes = 0;
  for (const auto& r : Requests()) {
    const HttpRequest& q = r.request;
    if (q.method == "GET" || q.Header("cookie").empty()) continue;
    ++writes;
    EXPECT_EQ(q.Header("x-atlassian-token"), "no-check") << q.method << " " << q.target;
  }
  EXPECT_GE(writes, 2);  // user creation and the group
}

TEST_F(DcAuthTest, CaptchaStopsEveryFurtherLoginUntilAnOperatorActs) {
  Start("10.3.4", true);
  FailLogins(3);  // the fake's threshold: Jira now wants a CAPTCHA
  auto c = Open(DcSettings(true));
  auto out = Verify(*c);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().reason(), "captcha_required");
  EXPECT_FALSE(out.status().retryable());
  EXPECT_NE(out.status().message().find("operator"), std::string::npos);
  const std::size_t attempts = jira_->LoginAttempts(kDcAdmin).size();
  const int failed = jira_->FailedLoginCount(kDcAdmin);

  // Neither this connection nor a restarted agent tries again.
  EXPECT_EQ(AddAlice(*c, "jira-core-users").status().reason(), "captcha_required");
  auto restarted = Open(DcSettings(true));
  EXPECT_EQ(Verify(*restarted).status().reason(), "captcha_required");
  EXPECT_EQ(jira_->LoginAttempts(kDcAdmin).size(), attempts);
  EXPECT_EQ(jira_->FailedLoginCount(kDcAdmin), failed);
  ASSERT_TRUE(restarted->state().login_stop().has_value());
  EXPECT_EQ(restarted->state().login_stop()->reason, "captcha_required");

  // The operator clears the CAPTCHA in Jira and stores the password again: logins resume.
  jira_->ResetFailedLoginCount();
  PutSecret("password", password_);
  auto resumed = Verify(*restarted);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  EXPECT_FALSE(restarted->state().login_stop().has_value());
}

TEST_F(DcAuthTest, PersistedStateIsPrivate) {
  Start("10.3.4", true);
  auto first = Open(DcSettings(true));
  ASSERT_TRUE(Verify(*first).ok());
  PutSecret("password", "a-wrong-password");
  auto c = Open(DcSettings(true));
  EXPECT_EQ(Verify(*c).status().reason(), "auth_failed");
  struct stat st {};
  ASSERT_EQ(::stat(state_dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((state_dir_ / "jira").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  const auto file = state_dir_ / "jira" / (std::string(kConn) + ".json");
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string text = ReadFile(file);
  EXPECT_NE(text.find("\"auth_failed\""), std::string::npos) << text;
  EXPECT_NE(text.find("last_totp_step"), std::string::npos) << text;
}

TEST_F(DcAuthTest, RefusedPasswordIsTriedOnlyOnce) {
  Start("10.3.4", false);
  PutSecret("password", "a-wrong-password");
  auto c = Open(DcSettings(false));
  auto out = Verify(*c);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().reason(), "auth_failed");
  EXPECT_EQ(jira_->FailedLoginCount(kDcAdmin), 1);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Verify(*c).status().reason(), "auth_failed");
  EXPECT_EQ(jira_->FailedLoginCount(kDcAdmin), 1);
  EXPECT_EQ(Logins("tsv_password"), 1);
  // An explicit reset lifts the stop (the password is still wrong: one more failure, one more
  // stop).
  ASSERT_TRUE(c->ClearLoginStop().ok());
  EXPECT_EQ(Verify(*c).status().reason(), "auth_failed");
  EXPECT_EQ(jira_->FailedLoginCount(kDcAdmin), 2);
}

TEST_F(DcAuthTest, WrongTotpSeedStopsLogins) {
  Start("10.3.4", true);
  // The token holds another seed than Jira: staged as a new current version.
  hsm::TotpSeed other;
  std::vector<std::uint8_t> bytes(20, 0x42);
  other.key = SecretBytes::CopyOf(std::span<const std::uint8_t>(bytes));
  ASSERT_TRUE(store_->EnrollTotp(kConn, other, hsm::Activation::kCurrent).ok());
  auto c = Open(DcSettings(true));
  auto out = Verify(*c);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().reason(), "mfa_failed");
  const std::size_t attempts = jira_->LoginAttempts(kDcAdmin).size();
  EXPECT_EQ(Verify(*c).status().reason(), "mfa_failed");
  EXPECT_EQ(jira_->LoginAttempts(kDcAdmin).size(), attempts);
  // Enrolling the right seed again lifts the stop.
  hsm::TotpSeed right;
  right.key = SecretBytes::CopyOf(std::span<const std::uint8_t>(totp_seed_));
  ASSERT_TRUE(store_->EnrollTotp(kConn, right, hsm::Activation::kCurrent).ok());
  auto resumed = Verify(*c);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
}

TEST_F(DcAuthTest, StagedSeedIsTriedFirstAndPromotedOnSuccess) {
  Start("10.3.4", true);
  // Jira re-enrolled with a new seed; the operator staged it with `mfa enroll` (pending).
  std::vector<std::uint8_t> fresh(20, 0x17);
  ASSERT_TRUE(jira_->EnrolTotp(kDcAdmin, fresh).ok());
  hsm::TotpSeed staged;
  staged.key = SecretBytes::CopyOf(std::span<const std::uint8_t>(fresh));
  auto info = store_->EnrollTotp(kConn, staged, hsm::Activation::kPending);
  ASSERT_TRUE(info.ok());
  auto c = Open(DcSettings(true));
  ASSERT_TRUE(Verify(*c).ok());
  auto current = credentials_->CurrentVersion("totp");
  ASSERT_TRUE(current.ok());
  EXPECT_EQ(*current, info->version);
}

TEST_F(DcAuthTest, EnrolmentDemandIsMfaFailedAndNeverAutomatic) {
  Start("10.3.4", false);
  ASSERT_TRUE(jira_->EnforceTwoStep(kDcAdmin, true).ok());
  auto c = Open(DcSettings(false));
  auto out = Verify(*c);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().reason(), "mfa_failed");
  EXPECT_NE(out.status().message().find("enrol"), std::string::npos);
  EXPECT_FALSE(jira_->FindUser(kDcAdmin)->totp_enrolled);
  EXPECT_TRUE(RequestsTo("enrollment").empty());
  const std::size_t attempts = jira_->LoginAttempts(kDcAdmin).size();
  EXPECT_EQ(Verify(*c).status().reason(), "mfa_failed");
  EXPECT_EQ(jira_->LoginAttempts(kDcAdmin).size(), attempts);  // stopped
  // The operator enrols in a browser and gives the agent the key: logins resume.
  ASSERT_TRUE(jira_->EnrolTotp(kDcAdmin, totp_seed_).ok());
  hsm::TotpSeed seed;
  seed.key = SecretBytes::CopyOf(std::span<const std::uint8_t>(totp_seed_));
  ASSERT_TRUE(store_->EnrollTotp(kConn, seed, hsm::Activation::kCurrent).ok());
  auto resumed = Verify(*c);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  EXPECT_EQ(Str(*resumed, "mfa"), "totp");
}

TEST_F(DcAuthTest, TwoStepDemandWithoutSeedNamesTheCommand) {
  Start("10.3.4", true);
  auto c = Open(DcSettings(false));  // the configuration forgot "mfa": "totp"
  ASSERT_TRUE(store_->Destroy(kConn, "totp", 1, hsm::DestroyPolicy::kAllowCurrent).ok());
  auto out = Verify(*c);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().reason(), "credentials_missing");
  EXPECT_NE(out.status().message().find("mfa enroll"), std::string::npos);
}

TEST_F(DcAuthTest, Jira9WithoutTwoStepLoginUsesTheSessionLogin) {
  Start("9.12.0", false);
  auto c = Open(DcSettings(false));
  auto out = Verify(*c);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(Logins("rest_session"), 1);
  EXPECT_EQ(Logins("basic"), 0);
}

TEST_F(DcAuthTest, Jira11LogsInThroughTheTwoStepLogin) {
  Start("11.0.1", true);
  auto c = Open(DcSettings(true));
  auto out = Verify(*c);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(Str(*out, "server_version"), "11.0.1");
  EXPECT_EQ(Logins("rest_session"), 0);
  EXPECT_EQ(Logins("basic"), 0);
}

TEST_F(DcAuthTest, Jira11WithoutTwoStepLoginSaysSoClearly) {
  Start("11.0.1", false, [](FakeJiraOptions& o) { o.two_step_login = false; });
  auto c = Open(DcSettings(false));
  auto out = Verify(*c);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().reason(), "auth_failed");
  EXPECT_NE(out.status().message().find("personal access token"), std::string::npos);
  // Not the password's fault: no stop, nothing counted against the account.
  EXPECT_FALSE(c->state().login_stop().has_value());
  EXPECT_EQ(jira_->FailedLoginCount(kDcAdmin), 0);
}

TEST_F(DcAuthTest, AccessSyncWithPatOnJira11) {
  Start("11.0.1", true);
  auto pat = jira_->AddPersonalAccessToken(kDcAdmin, "sync", std::nullopt);
  ASSERT_TRUE(pat.ok());
  PutSecret("pat", *pat);
  auto settings = DcSettings(true);
  settings.access_sync = jira::AccessSyncAuth::kPat;
  auto c = Open(settings);
  auto out = Verify(*c);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(Str(*out, "access_sync_auth"), "ok");

  // A wrong PAT is reported as such (and never confused with an anonymous success).
  PutSecret("pat", "not-a-valid-token");
  auto c2 = Open(settings);
  auto out2 = Verify(*c2);
  ASSERT_TRUE(out2.ok()) << out2.status().ToString();
  EXPECT_EQ(Str(*out2, "access_sync_auth"), "auth_failed");
}

TEST_F(DcAuthTest, StopTokenInterruptsTheWaitForTheNextStep) {
  Start("10.3.4", true);
  clock_.SetUnix(1764850020 / 30 * 30 + 29);  // the code would expire: a wait is needed
  auto c = Open(DcSettings(true));
  std::stop_source source;
  sleeper_.StopOnNextSleep(&source);
  auto out = jira::RunVerify(*c, Json::Value(Json::objectValue), source.get_token());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().reason(), "stopped");
  EXPECT_TRUE(Accepted().empty());
}

}  // namespace
}  // namespace cakewalk::testing
