// OAuth refresh-token rotation survives a crash at any point: a child process refreshing the Cloud
// grant is killed by SIGKILL before the refresh request, while the token endpoint is answering,
// after the answer but before the new refresh token is sealed, and after sealing but before the
// new access token is used. Each time the grant keeps working from the token afterwards (the
// parent refreshes and calls the gateway), and the fake never sees a rotated token replayed
// outside its leeway (no family revocation).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <signal.h>

#include "base/encoding.h"
#include "jira/oauth.h"
#include "jira/pagination.h"
#include "tests/jira/jira_env.h"
#include "tests/systemd/process.h"

#ifndef CAKEWALK_OAUTH_FAULT_HELPER
#error "CAKEWALK_OAUTH_FAULT_HELPER must name the helper program"
#endif

namespace cakewalk::testing {
namespace {

using namespace std::chrono_literals;

constexpr char kClientId[] = "cakewalk-sync";
constexpr char kRedirect[] = "https://localhost/cakewalk-agent/oauth-callback";

class OAuthCrashTest : public JiraFixture {
 protected:
  void SetUp() override {
    JiraFixture::SetUp();
    FakeJiraOptions o;
    o.flavor = JiraFlavor::kCloud;
    StartJira(o);
    SeedCloudAdmin();
    settings_ = CloudSettings();
    settings_.access_sync = jira::AccessSyncAuth::kOAuth2;
    settings_.oauth.client_id = kClientId;
    settings_.oauth.scopes = {"read:jira-user", "manage:jira-configuration", "read:jira-work",
                              "offline_access"};
    settings_.oauth.authorize_url = base_url_ + "/authorize";
    settings_.oauth.token_url = base_url_ + "/oauth/token";
    settings_.oauth.redirect_uri = kRedirect;
    settings_.api_base_url = base_url_ + "/ex/jira/{cloudId}";
    OAuthClientSpec spec;
    spec.client_id = kClientId;
    spec.client_secret = "oauth-client-secret-of-the-test";
    spec.name = "Cakewalk";
    spec.redirect_uris = {kRedirect};
    spec.scopes = settings_.oauth.scopes;
    ASSERT_TRUE(jira_->AddOAuthClient(spec).ok());
    PutSecret("oauth-client-secret", spec.client_secret);
    // The authorization (the operator's browser step through the fake's consent).
    auto conn = Open(settings_);
    auto req = jira::BeginAuthorization(settings_, *credentials_);
    ASSERT_TRUE(req.ok()) << req.status().ToString();
    auto code = jira_->IssueAuthorizationCode(
        kClientId, kCloudAdmin, kRedirect, settings_.oauth.scopes,
        jira::QueryParameter(req->url, "code_challenge").value_or(""));
    ASSERT_TRUE(code.ok()) << code.status().ToString();
    auto done = jira::CompleteAuthorization(settings_, *credentials_, conn->token_endpoint(), *req,
                                            *code, {});
    ASSERT_TRUE(done.ok()) << done.status().ToString();
  }

  std::uint32_t RefreshVersion() {
    auto v = credentials_->CurrentVersion("oauth-refresh-token");
    return v.ok() ? *v : 0;
  }
  int Refreshes() const {
    int n = 0;
    for (const auto& a : jira_->LoginAttempts(kClientId)) n += a.outcome == "ok" ? 1 : 0;
    return n;
  }
  std::vector<std::string> Helper() const {
    return {CAKEWALK_OAUTH_FAULT_HELPER,
            softhsm_->token().uri,
            softhsm_->token().pin_file.string(),
            base_url_,
            ca_file_.string(),
            kClientId,
            kRedirect,
            (dir_ / "child-state").string()};
  }
  // The grant works from what the token holds now: a fresh connection refreshes and calls.
  void ExpectTheGrantStillWorks() {
    auto restarted = Open(settings_);
    auto client = restarted->AccessSync({});
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    auto me = (*client)->Myself({});
    ASSERT_TRUE(me.ok()) << me.status().ToString();
    for (const auto& m : jira_->Mutations()) EXPECT_NE(m.kind, "oauth_family_revoked");
    // And the child helper too, in a process of its own.
    ProcessResult again = RunProcess(Helper(), {}, 60s);
    EXPECT_EQ(again.exit_code, 0) << again.err;
  }

  jira::ConnectionSettings settings_;
};

struct Point {
  const char* name;
  bool answered;  // the token endpoint rotated the grant before the process died
  bool sealed;    // the new refresh token was in the token
};

class OAuthCrashPointTest : public OAuthCrashTest, public ::testing::WithParamInterface<Point> {};

TEST_P(OAuthCrashPointTest, KilledHereThenTheGrantStillWorks) {
  const Point p = GetParam();
  const std::uint32_t before = RefreshVersion();
  const int refreshes = Refreshes();
  ProcessResult child =
      RunProcess(Helper(), {std::string("CAKEWALK_TEST_CRASH_AT=") + p.name}, 60s);
  ASSERT_EQ(child.signal, SIGKILL) << child.exit_code << ": " << child.err;
  EXPECT_THAT(child.err, ::testing::HasSubstr(p.name));
  EXPECT_EQ(Refreshes(), refreshes + (p.answered ? 1 : 0));
  EXPECT_EQ(RefreshVersion(), before + (p.sealed ? 1 : 0));
  // The rotated token's access token was never used.
  EXPECT_TRUE(RequestsTo("/ex/jira/").empty());
  // Within the fake's leeway for a replayed (answered but unsealed) token.
  clock_.Advance(2min);
  ASSERT_NO_FATAL_FAILURE(ExpectTheGrantStillWorks());
}

INSTANTIATE_TEST_SUITE_P(Points, OAuthCrashPointTest,
                         ::testing::Values(Point{"oauth.refresh.before-request", false, false},
                                           Point{"oauth.refresh.answered", true, false},
                                           Point{"oauth.refresh.sealed", true, true}),
                         [](const ::testing::TestParamInfo<Point>& param) {
                           std::string n = std::string(param.param.name).substr(14);
                           for (char& ch : n) {
                             if (ch == '-') ch = '_';
                           }
                           return n;
                         });

TEST_F(OAuthCrashTest, KilledWhileTheTokenEndpointIsAnswering) {
  // The endpoint rotates the grant, then takes 5 s to answer; the child dies in between.
  FaultRule slow;
  slow.method = "POST";
  slow.path_contains = "/oauth/token";
  slow.transport = Fault{Fault::kDelay, 5s};
  jira_->QueueFault(slow);
  const std::uint32_t before = RefreshVersion();
  const int refreshes = Refreshes();
  Child child = Child::Spawn(Helper(), {}, (dir_ / "helper.err").string());
  for (int i = 0; i < 300 && Refreshes() == refreshes; ++i) std::this_thread::sleep_for(50ms);
  ASSERT_EQ(Refreshes(), refreshes + 1);
  child.Signal(SIGKILL);
  ASSERT_TRUE(child.Wait(10s).has_value());
  EXPECT_EQ(RefreshVersion(), before);
  clock_.Advance(2min);
  ASSERT_NO_FATAL_FAILURE(ExpectTheGrantStillWorks());
}

}  // namespace
}  // namespace cakewalk::testing
