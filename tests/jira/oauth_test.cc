// OAuth 2.0 for Access Sync against the fake's token endpoints (Cloud 3LO with the gateway, and
// the Data Center provider): the authorization code flow with PKCE and state, refresh-token
// rotation sealed in SoftHSM before use, and crashes between the token endpoint's answer and the
// Put, in process through the seam (tests/rotation/oauth_crash_test.cc kills a real process at
// every step of the refresh).
#include <gtest/gtest.h>

#include "base/encoding.h"
#include "jira/errors.h"
#include "jira/jobs.h"
#include "jira/oauth.h"
#include "jira/pagination.h"
#include "tests/fakes/jira/oauth_provider.h"
#include "tests/jira/jira_env.h"

namespace cakewalk::testing {
namespace {

constexpr char kClientId[] = "cakewalk-sync";
constexpr char kRedirect[] = "https://localhost/cakewalk-agent/oauth-callback";

std::string Q(const std::string& url, const char* name) {
  return jira::QueryParameter(url, name).value_or("<absent>");
}

class OAuthTest : public JiraFixture {
 protected:
  void StartCloud(const std::function<void(FakeJiraOptions&)>& tweak = {}) {
    FakeJiraOptions o;
    o.flavor = JiraFlavor::kCloud;
    o.access_token_lifetime = std::chrono::seconds(3600);
    if (tweak) tweak(o);
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
    AddClient();
  }
  void StartDc() {
    FakeJiraOptions o;
    o.version = "10.3.4";
    StartJira(o);
    SeedDcAdmin(false);
    settings_ = DcSettings(false);
    settings_.access_sync = jira::AccessSyncAuth::kOAuth2;
    settings_.oauth.client_id = kClientId;
    settings_.oauth.scopes = {"ADMIN"};
    settings_.oauth.authorize_url = base_url_ + "/rest/oauth2/latest/authorize";
    settings_.oauth.token_url = base_url_ + "/rest/oauth2/latest/token";
    settings_.oauth.redirect_uri = kRedirect;
    AddClient();
  }
  void AddClient() {
    client_secret_ =
        "client-secret-canary-" + std::to_string(clock_.Now().time_since_epoch().count());
    OAuthClientSpec spec;
    spec.client_id = kClientId;
    spec.client_secret = client_secret_;
    spec.name = "Cakewalk";
    spec.redirect_uris = {kRedirect};
    spec.scopes = settings_.oauth.scopes;
    ASSERT_TRUE(jira_->AddOAuthClient(spec).ok());
    PutSecret("oauth-client-secret", client_secret_);
  }

  // The browser step: the consenting user's code for the challenge in `url`.
  std::string Consent(const std::string& url, const std::string& user) {
    EXPECT_EQ(Q(url, "code_challenge_method"), "S256");
    auto code = jira_->IssueAuthorizationCode(kClientId, user, kRedirect, settings_.oauth.scopes,
                                              Q(url, "code_challenge"));
    EXPECT_TRUE(code.ok()) << code.status().ToString();
    return code.ok() ? *code : "";
  }

  // Runs the whole authorization; returns the connection that then uses it.
  std::unique_ptr<jira::Connection> Authorize(const std::string& user,
                                              jira::OAuthHooks hooks = {}) {
    auto conn = Open(settings_, std::move(hooks));
    auto req = jira::BeginAuthorization(settings_, *credentials_);
    EXPECT_TRUE(req.ok()) << req.status().ToString();
    if (!req.ok()) return conn;
    const std::string code = Consent(req->url, user);
    auto done = jira::CompleteAuthorization(
        settings_, *credentials_, conn->token_endpoint(), *req,
        std::string(kRedirect) + "?code=" + UrlEncode(code) + "&state=" + Q(req->url, "state"), {});
    EXPECT_TRUE(done.ok()) << done.status().ToString();
    return conn;
  }

  std::uint32_t RefreshVersion() {
    auto v = credentials_->CurrentVersion("oauth-refresh-token");
    EXPECT_TRUE(v.ok());
    return v.ok() ? *v : 0;
  }

  Result<jira::User> SyncMyself(jira::Connection& c) {
    auto client = c.AccessSync({});
    if (!client.ok()) return client.status();
    return (*client)->Myself({});
  }

  jira::ConnectionSettings settings_;
  std::string client_secret_;
};

TEST_F(OAuthTest, CloudAuthorizationWithPkceThenCallsThroughTheGateway) {
  StartCloud();
  auto conn = Open(settings_);
  auto req = jira::BeginAuthorization(settings_, *credentials_);
  ASSERT_TRUE(req.ok()) << req.status().ToString();
  const std::string& url = req->url;
  EXPECT_EQ(url.rfind(base_url_ + "/authorize?", 0), 0u) << url;
  EXPECT_EQ(Q(url, "audience"), "api.atlassian.com");
  EXPECT_EQ(Q(url, "client_id"), kClientId);
  EXPECT_EQ(Q(url, "response_type"), "code");
  EXPECT_EQ(Q(url, "prompt"), "consent");
  EXPECT_EQ(Q(url, "redirect_uri"), kRedirect);
  EXPECT_EQ(Q(url, "scope"),
            "read:jira-user manage:jira-configuration read:jira-work offline_access");
  EXPECT_EQ(Q(url, "state"), req->state);
  EXPECT_EQ(req->state.size(), 22u);     // 16 random bytes
  EXPECT_EQ(req->verifier.size(), 43u);  // 32 random bytes: RFC 7636's 43..128 characters
  EXPECT_EQ(url.find(std::string(req->verifier.RevealString(SecretAccess::Grant()))),
            std::string::npos);

  const std::string code = Consent(url, kCloudAdmin);
  auto done = jira::CompleteAuthorization(
      settings_, *credentials_, conn->token_endpoint(), *req,
      std::string(kRedirect) + "?code=" + UrlEncode(code) + "&state=" + req->state, {});
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_EQ(RefreshVersion(), 1u);
  EXPECT_NE(std::find(done->scopes.begin(), done->scopes.end(), "offline_access"),
            done->scopes.end());

  auto me = SyncMyself(*conn);
  ASSERT_TRUE(me.ok()) << me.status().ToString();
  EXPECT_EQ(me->email, std::string(kCloudAdmin));
  const std::string gateway = "/ex/jira/" + jira_->options().cloud_id + "/rest/api/3/myself";
  ASSERT_FALSE(RequestsTo(gateway).empty());
  for (const auto& r : RequestsTo(gateway)) {
    EXPECT_EQ(r.request.Header("authorization").rfind("Bearer ", 0), 0u);
  }
  // The code was exchanged once, with the verifier; the site's own REST API never saw a Bearer.
  for (const auto& r : RequestsTo("/rest/api/3/")) {
    if (r.request.path.rfind("/ex/", 0) == 0) continue;
    EXPECT_NE(r.request.Header("authorization").rfind("Bearer ", 0), 0u) << r.request.path;
  }
  auto verify = jira::RunVerify(*conn, Json::Value(Json::objectValue), {});
  ASSERT_TRUE(verify.ok()) << verify.status().ToString();
  EXPECT_EQ(Str(*verify, "access_sync_auth"), "ok");
}

TEST_F(OAuthTest, PastedRedirectMustCarryTheSameState) {
  StartCloud();
  auto conn = Open(settings_);
  auto req = jira::BeginAuthorization(settings_, *credentials_);
  ASSERT_TRUE(req.ok());
  const std::string code = Consent(req->url, kCloudAdmin);
  auto done = jira::CompleteAuthorization(
      settings_, *credentials_, conn->token_endpoint(), *req,
      std::string(kRedirect) + "?code=" + UrlEncode(code) + "&state=forged", {});
  EXPECT_EQ(done.status().reason(), "invalid_params");
  EXPECT_TRUE(RequestsTo("/oauth/token").empty());
  // A bare code (no state to compare) is accepted: the operator typed it.
  auto bare =
      jira::CompleteAuthorization(settings_, *credentials_, conn->token_endpoint(), *req, code, {});
  ASSERT_TRUE(bare.ok()) << bare.status().ToString();
}

TEST_F(OAuthTest, AWrongVerifierIsRefused) {
  StartCloud();
  auto conn = Open(settings_);
  auto req = jira::BeginAuthorization(settings_, *credentials_);
  ASSERT_TRUE(req.ok());
  auto code = jira_->IssueAuthorizationCode(
      kClientId, kCloudAdmin, kRedirect, settings_.oauth.scopes,
      jira_fake::PkceChallenge("another-verifier-entirely-0123456789"));
  ASSERT_TRUE(code.ok());
  auto done = jira::CompleteAuthorization(settings_, *credentials_, conn->token_endpoint(), *req,
                                          *code, {});
  EXPECT_EQ(done.status().reason(), "auth_failed");
  EXPECT_EQ(RefreshVersion(), 0u);
}

TEST_F(OAuthTest, RefreshTokensRotateAndAreSealedBeforeUse) {
  StartCloud([](FakeJiraOptions& o) { o.access_token_lifetime = std::chrono::seconds(600); });
  auto conn = Authorize(kCloudAdmin);
  ASSERT_TRUE(SyncMyself(*conn).ok());
  EXPECT_EQ(RefreshVersion(), 2u);  // the first use refreshed (the code's access token is unused)
  const int refreshes = conn->oauth_tokens()->refreshes();
  // Within the access token's life: no refresh.
  clock_.Advance(std::chrono::minutes(5));
  ASSERT_TRUE(SyncMyself(*conn).ok());
  EXPECT_EQ(conn->oauth_tokens()->refreshes(), refreshes);
  // Close to expiry: one refresh, one new sealed version.
  clock_.Advance(std::chrono::minutes(4));
  ASSERT_TRUE(SyncMyself(*conn).ok());
  EXPECT_EQ(conn->oauth_tokens()->refreshes(), refreshes + 1);
  EXPECT_EQ(RefreshVersion(), 3u);
  // Refused before expiry (revoked server-side): one refresh and the call succeeds.
  jira_->ExpireAccessTokens();
  ASSERT_TRUE(SyncMyself(*conn).ok());
  EXPECT_EQ(RefreshVersion(), 4u);
  // The token keeps the current version and the one before, not every rotation.
  auto versions = credentials_->Versions("oauth-refresh-token");
  ASSERT_TRUE(versions.ok());
  EXPECT_EQ(versions->size(), 2u);
  // Nothing reused a rotated token: the grant is alive and never revoked.
  for (const auto& m : jira_->Mutations()) EXPECT_NE(m.kind, "oauth_family_revoked");
}

TEST_F(OAuthTest, CrashBeforeTheNewRefreshTokenIsSealedLosesNothing) {
  StartCloud();
  // Authorize, then make the first refresh "crash" right after the token endpoint answered.
  auto crashing = Authorize(
      kCloudAdmin, jira::OAuthHooks{[] { return Status(Code::kAborted, "simulated crash"); }});
  const std::uint32_t before = RefreshVersion();
  EXPECT_FALSE(SyncMyself(*crashing).ok());
  EXPECT_EQ(RefreshVersion(), before);            // the answer's refresh token was never stored
  EXPECT_EQ(RequestsTo("/ex/jira/").size(), 0u);  // nor its access token used

  // The restarted agent refreshes with the old token, which the server honours in its leeway.
  clock_.Advance(std::chrono::minutes(2));
  auto restarted = Open(settings_);
  auto me = SyncMyself(*restarted);
  ASSERT_TRUE(me.ok()) << me.status().ToString();
  EXPECT_EQ(RefreshVersion(), before + 1);
  for (const auto& m : jira_->Mutations()) EXPECT_NE(m.kind, "oauth_family_revoked");
}

TEST_F(OAuthTest, TokenTroubleWhenSealingKeepsTheOldTokenUsable) {
  StartCloud();
  auto conn = Authorize(kCloudAdmin);
  const std::uint32_t before = RefreshVersion();
  credentials_->FailNextPut("oauth-refresh-token");
  auto failed = SyncMyself(*conn);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().reason(), "token_unavailable");
  EXPECT_TRUE(failed.status().retryable());
  EXPECT_EQ(RequestsTo("/ex/jira/").size(), 0u);
  auto me = SyncMyself(*conn);
  ASSERT_TRUE(me.ok()) << me.status().ToString();
  EXPECT_EQ(RefreshVersion(), before + 1);
}

TEST_F(OAuthTest, ReusingARotatedTokenAfterTheLeewaySaysAuthorizeAgain) {
  StartCloud();
  auto conn = Authorize(kCloudAdmin,
                        jira::OAuthHooks{[] { return Status(Code::kAborted, "simulated crash"); }});
  EXPECT_FALSE(SyncMyself(*conn).ok());
  clock_.Advance(std::chrono::minutes(11));  // past the fake's 10-minute leeway
  auto restarted = Open(settings_);
  auto me = SyncMyself(*restarted);
  ASSERT_FALSE(me.ok());
  EXPECT_EQ(me.status().reason(), "auth_failed");
  EXPECT_NE(me.status().message().find("oauth authorize"), std::string::npos);
}

TEST_F(OAuthTest, TheGrantMustCoverTheConfiguredSite) {
  StartCloud([](FakeJiraOptions& o) { o.base_url = "https://another-site.atlassian.net"; });
  auto conn = Authorize(kCloudAdmin);
  auto me = SyncMyself(*conn);
  ASSERT_FALSE(me.ok());
  EXPECT_EQ(me.status().reason(), "auth_failed");
  EXPECT_NE(me.status().message().find("another-site"), std::string::npos);
  EXPECT_TRUE(RequestsTo("/ex/jira/").empty());
}

TEST_F(OAuthTest, DataCenterProviderWithFormBodiesAndRedirectOnRefresh) {
  StartDc();
  auto conn = Authorize(kDcAdmin);
  auto me = SyncMyself(*conn);
  ASSERT_TRUE(me.ok()) << me.status().ToString();
  EXPECT_EQ(me->username, std::string(kDcAdmin));
  jira_->ExpireAccessTokens();
  ASSERT_TRUE(SyncMyself(*conn).ok());
  EXPECT_EQ(RefreshVersion(), 3u);
  for (const auto& r : RequestsTo("/rest/oauth2/latest/token")) {
    EXPECT_EQ(r.request.Header("content-type"), "application/x-www-form-urlencoded");
  }
  auto verify = jira::RunVerify(*conn, Json::Value(Json::objectValue), {});
  ASSERT_TRUE(verify.ok()) << verify.status().ToString();
  EXPECT_EQ(Str(*verify, "access_sync_auth"), "ok");
}

TEST_F(OAuthTest, NoRefreshTokenYetNamesTheCommand) {
  StartCloud();
  auto conn = Open(settings_);
  auto me = SyncMyself(*conn);
  EXPECT_EQ(me.status().reason(), "credentials_missing");
  EXPECT_NE(me.status().message().find("oauth authorize"), std::string::npos);
  auto verify = jira::RunVerify(*conn, Json::Value(Json::objectValue), {});
  ASSERT_TRUE(verify.ok()) << verify.status().ToString();
  EXPECT_EQ(Str(*verify, "access_sync_auth"), "credentials_missing");
}

}  // namespace
}  // namespace cakewalk::testing
