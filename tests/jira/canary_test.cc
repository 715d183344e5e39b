// Canary credentials — password, TOTP seed, PAT, API token, organization key, OAuth client
// secret, refresh and access tokens, session cookies — through every job, failure and refresh:
// they appear in no output, error message, audit line or file outside the token, and they reach
// the fake only where they belong (the password only in a login body, a bearer token only in the
// Authorization header, the client secret and refresh token only in token-endpoint bodies, the
// seed nowhere at all).
#include <gtest/gtest.h>

#include <functional>
#include <set>

#include "base/encoding.h"
#include "base/json.h"
#include "jira/jobs.h"
#include "jira/oauth.h"
#include "jira/pagination.h"
#include "tests/fakes/jira/totp.h"
#include "tests/jira/jira_env.h"
#include "tests/support/canary.h"

namespace cakewalk::testing {
namespace {

constexpr char kClientId[] = "cakewalk-sync";
constexpr char kRedirect[] = "https://localhost/cakewalk-agent/oauth-callback";

// Where in a request a secret was found.
enum class Part { kTarget, kAuthorization, kCookie, kOtherHeader, kBody };

using Allowed = std::function<bool(const HttpRequest&, Part)>;

class CanaryTest : public JiraFixture {
 protected:
  // Runs a job and keeps what it returned (output or error message).
  template <class F>
  void Run(F&& job) {
    Result<Json::Value> r = job();
    seen_ += r.ok() ? WriteJson(*r) : r.status().ToString() + " " + r.status().reason();
    seen_ += "\n";
  }

  void AuthorizeOAuth(jira::ConnectionSettings& settings, const std::string& user) {
    client_secret_ = MakeCanary("clientsecret");
    OAuthClientSpec spec;
    spec.client_id = kClientId;
    spec.client_secret = client_secret_;
    spec.name = "Cakewalk";
    spec.redirect_uris = {kRedirect};
    spec.scopes = settings.oauth.scopes;
    ASSERT_TRUE(jira_->AddOAuthClient(spec).ok());
    PutSecret("oauth-client-secret", client_secret_);
    auto conn = Open(settings);
    auto req = jira::BeginAuthorization(settings, *credentials_);
    ASSERT_TRUE(req.ok());
    auto code = jira_->IssueAuthorizationCode(
        kClientId, user, kRedirect, settings.oauth.scopes,
        jira::QueryParameter(req->url, "code_challenge").value_or(""));
    ASSERT_TRUE(code.ok());
    auto done = jira::CompleteAuthorization(settings, *credentials_, conn->token_endpoint(), *req,
                                            *code, {});
    ASSERT_TRUE(done.ok()) << done.status().ToString();
  }

  // Every refresh token and access token that crossed the wire.
  void CollectIssuedTokens() {
    for (const auto& r : Requests()) {
      const HttpRequest& q = r.request;
      const std::string auth = q.Header("authorization");
      if (auth.rfind("Bearer ", 0) == 0) bearer_.insert(auth.substr(7));
      const std::string cookie = q.Header("cookie");
      for (std::size_t at = cookie.find("JSESSIONID="); at != std::string::npos;
           at = cookie.find("JSESSIONID=", at + 1)) {
        const std::size_t end = cookie.find(';', at);
        sessions_.insert(cookie.substr(at + 11, end == std::string::npos ? end : end - at - 11));
      }
      if (q.path.find("token") != std::string::npos && q.method == "POST") {
        auto form = jira::QueryParameter("?" + q.body, "refresh_token");
        if (form) refresh_.insert(*form);
        auto json = ParseJson(q.body, "body");
        if (json.ok() && (*json)["refresh_token"].isString()) {
          refresh_.insert((*json)["refresh_token"].asString());
        }
      }
    }
    auto current = store_->Unseal(kConn, "oauth-refresh-token", "canary test: read back");
    if (current.ok()) refresh_.insert(std::string(current->RevealString(SecretAccess::Grant())));
  }

  // The secret appears nowhere it must not: outputs, messages, audit, files, and requests other
  // than where `allowed` says. `expect_sent`: it must have reached the fake at least once.
  void ExpectContained(const std::string& what, const std::string& secret, const Allowed& allowed,
                       bool expect_sent) {
    ASSERT_GE(secret.size(), 8u) << what;
    std::vector<std::string> leaks = FindCanaryIn(secret, seen_, "job outputs and errors");
    auto add = [&](std::vector<std::string> more) {
      leaks.insert(leaks.end(), more.begin(), more.end());
    };
    add(FindCanaryIn(secret, audit_.Text(), "audit log"));
    add(FindCanaryInTree(secret, dir_.path()));
    bool sent = false;
    for (const auto& r : Requests()) {
      const HttpRequest& q = r.request;
      auto check = [&](std::string_view text, Part part, const char* where) {
        if (FindCanaryIn(secret, text, where).empty()) return;
        sent = true;
        if (!allowed(q, part))
          leaks.push_back(std::string(where) + " of " + q.method + " " + q.path);
      };
      check(q.target, Part::kTarget, "target");
      for (const auto& [name, value] : q.headers) {
        check(value,
              name == "authorization" ? Part::kAuthorization
              : name == "cookie"      ? Part::kCookie
                                      : Part::kOtherHeader,
              "header");
      }
      check(q.body, Part::kBody, "body");
    }
    EXPECT_TRUE(leaks.empty()) << what << ":\n"
                               << [&] {
                                    std::string s;
                                    for (const auto& l : leaks) s += "  " + l + "\n";
                                    return s;
                                  }();
    if (expect_sent) {
      EXPECT_TRUE(sent) << what << " never reached Jira: the test proves nothing";
    }
  }

  static bool LoginBody(const HttpRequest& q, Part p) {
    return p == Part::kBody && q.method == "POST" &&
           (q.path == "/rest/tsv/1.0/authenticate" || q.path == "/rest/auth/1/session");
  }
  static bool AuthorizationOnly(const HttpRequest&, Part p) { return p == Part::kAuthorization; }
  static bool TokenEndpointBody(const HttpRequest& q, Part p) {
    return p == Part::kBody && q.method == "POST" &&
           (q.path == "/oauth/token" || q.path == "/rest/oauth2/latest/token");
  }
  static bool CookieOnly(const HttpRequest&, Part p) { return p == Part::kCookie; }
  static bool Nowhere(const HttpRequest&, Part) { return false; }

  std::string seen_;
  std::string client_secret_;
  std::set<std::string> bearer_, refresh_, sessions_;
};

TEST_F(CanaryTest, DataCenterPasswordSeedPatAndOAuthStayWhereTheyBelong) {
  FakeJiraOptions o;
  o.version = "10.3.4";
  StartJira(o);
  SeedDcAdmin(true);
  AddUser("alice", "alice@corp.example", {"jira-software-users"});
  auto pat = jira_->AddPersonalAccessToken(kDcAdmin, "sync", std::nullopt);
  ASSERT_TRUE(pat.ok());
  PutSecret("pat", *pat);

  auto settings = DcSettings(true);
  settings.access_sync = jira::AccessSyncAuth::kOAuth2;
  settings.oauth.client_id = kClientId;
  settings.oauth.scopes = {"ADMIN"};
  settings.oauth.authorize_url = base_url_ + "/rest/oauth2/latest/authorize";
  settings.oauth.token_url = base_url_ + "/rest/oauth2/latest/token";
  settings.oauth.redirect_uri = kRedirect;
  AuthorizeOAuth(settings, kDcAdmin);
  auto c = Open(settings);
  const Json::Value empty(Json::objectValue);
  Run([&] { return jira::RunVerify(*c, empty, {}); });
  Json::Value prov;
  prov["email"] = "bob@corp.example";
  prov["display_name"] = "Bob";
  prov["username"] = "bob";
  prov["groups"].append("jira-core-users");
  prov["products"].append("jira-software");
  Run([&] { return jira::RunProvision(*c, prov, {}); });
  Run([&] { return jira::RunProvision(*c, prov, {}); });
  for (const char* action : {"remove_access", "deactivate", "delete"}) {
    Json::Value dep;
    dep["user"]["username"] = "bob";
    dep["action"] = action;
    Run([&] { return jira::RunDeprovision(*c, dep, {}); });
  }
  jira_->ExpireSessions();
  jira_->ExpireAccessTokens();
  Run([&] { return jira::RunVerify(*c, empty, {}); });  // new login, refresh
  // PAT-based access sync on a second connection, and failures with their messages.
  auto pat_settings = DcSettings(true);
  pat_settings.access_sync = jira::AccessSyncAuth::kPat;
  auto c2 = Open(pat_settings);
  Run([&] { return jira::RunVerify(*c2, empty, {}); });
  Json::Value missing;
  missing["user"]["email"] = "nobody@corp.example";
  missing["group"] = "jira-core-users";
  Run([&] { return jira::RunGroupMembership(*c, missing, true, {}); });
  PutSecret("password", "a-wrong-password-canary-xyz");
  auto c3 = Open(DcSettings(true));
  Run([&] { return jira::RunVerify(*c3, empty, {}); });
  Run([&] { return jira::RunVerify(*c3, empty, {}); });
  ASSERT_TRUE(c3->state().login_stop().has_value());

  CollectIssuedTokens();
  ASSERT_FALSE(bearer_.empty());
  ASSERT_FALSE(refresh_.empty());
  ASSERT_FALSE(sessions_.empty());
  ExpectContained("password", password_, LoginBody, true);
  ExpectContained("wrong password", "a-wrong-password-canary-xyz", LoginBody, true);
  const std::string seed(totp_seed_.begin(), totp_seed_.end());
  ExpectContained("TOTP seed", seed, Nowhere, false);
  ExpectContained("TOTP seed (base32)", Base32Encode(totp_seed_), Nowhere, false);
  ExpectContained("PAT", *pat, AuthorizationOnly, true);
  ExpectContained("OAuth client secret", client_secret_, TokenEndpointBody, true);
  for (const auto& t : refresh_) ExpectContained("refresh token", t, TokenEndpointBody, false);
  for (const auto& t : bearer_) {
    if (t == *pat) continue;
    ExpectContained("access token", t, AuthorizationOnly, true);
  }
  for (const auto& s : sessions_) ExpectContained("session cookie", s, CookieOnly, true);
}

TEST_F(CanaryTest, CloudApiTokenOrgKeyAndOAuthStayWhereTheyBelong) {
  FakeJiraOptions o;
  o.flavor = JiraFlavor::kCloud;
  StartJira(o);
  SeedCloudAdmin();
  NewUser user;
  user.email = "carl@corp.example";
  user.display_name = "Carl";
  user.groups = {"jira-software-users"};
  auto carl = jira_->AddUser(user);
  ASSERT_TRUE(carl.ok());

  auto settings = CloudSettings();
  settings.access_sync = jira::AccessSyncAuth::kOAuth2;
  settings.oauth.client_id = kClientId;
  settings.oauth.scopes = {"read:jira-user", "manage:jira-configuration", "read:jira-work",
                           "offline_access"};
  settings.oauth.authorize_url = base_url_ + "/authorize";
  settings.oauth.token_url = base_url_ + "/oauth/token";
  settings.oauth.redirect_uri = kRedirect;
  settings.api_base_url = base_url_ + "/ex/jira/{cloudId}";
  AuthorizeOAuth(settings, kCloudAdmin);
  auto c = Open(settings);
  const Json::Value empty(Json::objectValue);
  Run([&] { return jira::RunVerify(*c, empty, {}); });
  Json::Value prov;
  prov["email"] = "dora@corp.example";
  prov["display_name"] = "Dora";
  prov["products"].append("jira-software");
  Run([&] { return jira::RunProvision(*c, prov, {}); });
  for (const char* action : {"remove_access", "deactivate", "delete"}) {
    Json::Value dep;
    dep["user"]["account_id"] = *carl;
    dep["action"] = action;
    Run([&] { return jira::RunDeprovision(*c, dep, {}); });
  }
  jira_->ExpireAccessTokens();
  Run([&] { return jira::RunVerify(*c, empty, {}); });
  PutSecret("api-token", "ATATT-wrong-token-canary-0123");
  auto c2 = Open(CloudSettings());
  Run([&] { return jira::RunVerify(*c2, empty, {}); });

  CollectIssuedTokens();
  ExpectContained("API token", api_token_, AuthorizationOnly, true);
  ExpectContained("wrong API token", "ATATT-wrong-token-canary-0123", AuthorizationOnly, true);
  ExpectContained(
      "organization key", org_key_,
      [](const HttpRequest& q, Part p) {
        return p == Part::kAuthorization && q.path.rfind("/admin-api/", 0) == 0;
      },
      true);
  ExpectContained("OAuth client secret", client_secret_, TokenEndpointBody, true);
  for (const auto& t : refresh_) ExpectContained("refresh token", t, TokenEndpointBody, false);
  for (const auto& t : bearer_) {
    if (t == org_key_) continue;
    ExpectContained(
        "access token", t,
        [](const HttpRequest& q, Part p) {
          return p == Part::kAuthorization && q.path.rfind("/admin-api/", 0) != 0;
        },
        true);
  }
}

}  // namespace
}  // namespace cakewalk::testing
