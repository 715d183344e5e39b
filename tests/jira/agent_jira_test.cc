// The agent's side of the connector: configuration → settings, connections shared by jobs (and
// replaced after a reload), the jira.* executors and their error mapping, `oauth authorize`'s
// body with the paste injected, and the connection health checks doctor prints.
#include <gtest/gtest.h>

#include <sstream>

#include "agent/config.h"
#include "agent/executor.h"
#include "agent/jira_connection.h"
#include "agent/jira_executors.h"
#include "base/encoding.h"
#include "jira/errors.h"
#include "jira/health.h"
#include "jira/jobs.h"
#include "jira/pagination.h"
#include "tests/jira/jira_env.h"
#include "tests/support/canary.h"

namespace cakewalk::testing {
namespace {

class NoRecords final : public agent::RecordSink {
 public:
  Status Emit(Json::Value) override { return Internal("no records expected"); }
  Status Flush() override { return Status::Ok(); }
  std::int64_t records_sent() const override { return 0; }
  std::int64_t calls_made() const override { return 0; }
};

Result<agent::Config> ConfigFor(const std::string& state_dir, const std::string& connection) {
  const std::string text = R"({
    "state_dir": ")" + state_dir +
                           R"(",
    "control_plane": {"url": "https://agents.cakewalk.example/agent/v1"},
    "token": {"uri": "pkcs11:token=cakewalk"},
    "connections": [)" + connection +
                           R"(]
  })";
  return agent::ParseConfig(text, "/etc/cakewalk-agent/agent.json", agent::ConfigEnvironment{});
}

TEST(JiraSettingsTest, ConfigurationTranslatesWithItsDefaults) {
  auto config = ConfigFor("/var/lib/cw", R"(
    {"name": "jira-cloud", "type": "jira-cloud", "base_url": "https://example.atlassian.net",
     "provisioning": {"auth": "api-token", "username": "admin@example.com", "org_id": "org-1"},
     "access_sync": {"auth": "oauth2", "client_id": "cid"}},
    {"name": "jira-dc", "type": "jira-datacenter", "base_url": "https://jira.corp.example/jira",
     "ca_file": "/etc/ca.pem",
     "provisioning": {"auth": "password", "username": "svc", "mfa": "totp"},
     "access_sync": {"auth": "pat"}})");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  const jira::ConnectionSettings cloud =
      agent::JiraSettings(*config, *config->FindConnection("jira-cloud"));
  EXPECT_EQ(cloud.flavor, jira::Flavor::kCloud);
  EXPECT_EQ(cloud.provisioning, jira::ProvisioningAuth::kApiToken);
  EXPECT_EQ(cloud.username, "admin@example.com");
  EXPECT_EQ(cloud.org_id, std::string("org-1"));
  EXPECT_EQ(cloud.access_sync, jira::AccessSyncAuth::kOAuth2);
  EXPECT_EQ(cloud.oauth.token_url, "https://auth.atlassian.com/oauth/token");
  EXPECT_EQ(cloud.oauth.authorize_url, "https://auth.atlassian.com/authorize");
  EXPECT_EQ(cloud.api_base_url, "https://api.atlassian.com/ex/jira/{cloudId}");
  EXPECT_EQ(cloud.admin_api_url, "https://api.atlassian.com");
  EXPECT_EQ(cloud.state_dir, "/var/lib/cw");
  EXPECT_TRUE(jira::ValidateSettings(cloud).ok());
  const jira::ConnectionSettings dc =
      agent::JiraSettings(*config, *config->FindConnection("jira-dc"));
  EXPECT_EQ(dc.flavor, jira::Flavor::kDataCenter);
  EXPECT_EQ(dc.provisioning, jira::ProvisioningAuth::kPassword);
  EXPECT_TRUE(dc.mfa_totp);
  EXPECT_EQ(dc.access_sync, jira::AccessSyncAuth::kPat);
  EXPECT_EQ(dc.api_base_url, "https://jira.corp.example/jira");
  ASSERT_TRUE(dc.ca_file.has_value());
  EXPECT_EQ(*dc.ca_file, "/etc/ca.pem");
  EXPECT_TRUE(jira::ValidateSettings(dc).ok());
}

TEST(JobStatusTest, OnlyJobsCodesAndOnlyTransientRetries) {
  using agent::ErrorFromStatus;
  auto rate = agent::JobStatus(
      jira::RateLimited("slow down").WithRetryAfter(std::chrono::milliseconds(5000)));
  EXPECT_EQ(ErrorFromStatus(rate).code, "rate_limited");
  EXPECT_TRUE(ErrorFromStatus(rate).retryable);
  EXPECT_EQ(*rate.retry_after(), std::chrono::milliseconds(5000));
  EXPECT_TRUE(ErrorFromStatus(agent::JobStatus(jira::JiraUnavailable("down"))).retryable);
  auto odd = agent::JobStatus(Status(Code::kUnavailable, "x", "tls_verify_failed"));
  EXPECT_EQ(ErrorFromStatus(odd).code, "internal");
  EXPECT_FALSE(ErrorFromStatus(odd).retryable);
  auto not_admin = agent::JobStatus(Status(Code::kUnavailable, "x", "not_admin"));
  EXPECT_EQ(ErrorFromStatus(not_admin).code, "not_admin");
  EXPECT_FALSE(ErrorFromStatus(not_admin).retryable);
  EXPECT_TRUE(agent::IsStoppedStatus(agent::JobStatus(jira::Stopped())));
  EXPECT_EQ(ErrorFromStatus(agent::JobStatus(jira::CaptchaRequired("c"))).code, "captcha_required");
}

class AgentJiraTest : public JiraFixture {
 protected:
  void SetUp() override {
    JiraFixture::SetUp();
    if (HasFatalFailure()) return;
    FakeJiraOptions o;
    o.version = "10.3.4";
    StartJira(o);
    SeedDcAdmin(true);
    AddUser("alice", "alice@corp.example", {"jira-software-users"});
    auto config = ConfigFor(state_dir_.string(), ConnectionJson());
    ASSERT_TRUE(config.ok()) << config.status().ToString();
    config_ = std::move(*config);
    jira::ConnectionOptions options;
    options.clock = &clock_;
    options.sleeper = &sleeper_;
    options.random = [] { return 0.5; };
    connections_ = std::make_unique<agent::JiraConnections>(*store_, state_dir_, options);
    ASSERT_TRUE(agent::RegisterJiraExecutors(registry_, *connections_).ok());
  }

  std::string ConnectionJson(const std::string& extra = "") const {
    return R"({"name": ")" + std::string(kConn) + R"(", "type": "jira-datacenter", "base_url": ")" +
           base_url_ + R"(", "ca_file": ")" + ca_file_.string() + R"(",
       "provisioning": {"auth": "password", "username": ")" +
           kDcAdmin + R"(", "mfa": "totp"},
       "access_sync": {"auth": "oauth2", "client_id": "cakewalk-sync",
         "token_url": ")" +
           base_url_ + R"(/rest/oauth2/latest/token", "authorize_url": ")" + base_url_ +
           R"(/rest/oauth2/latest/authorize", "scopes": ["ADMIN"]})" + extra + "}";
  }

  Result<Json::Value> RunJob(std::string_view type, const Json::Value& params,
                             std::stop_token stop = {}) {
    agent::Executor* executor = registry_.Find(type);
    if (executor == nullptr) return Internal("no executor for " + std::string(type));
    agent::JobContext job{"job_1", std::string(type), config_.connections.front(), params,
                          stop,    records_,          [](std::string_view) {},     clock_,
                          audit_};
    return executor->Run(job);
  }

  agent::Config config_;
  std::unique_ptr<agent::JiraConnections> connections_;
  agent::ExecutorRegistry registry_;
  NoRecords records_;
};

TEST_F(AgentJiraTest, ExecutorsRunTheJobsOnASharedConnection) {
  EXPECT_EQ(registry_.Types(),
            (std::vector<std::string>{"jira.access_sync", "jira.connection.verify",
                                      "jira.group.add_member", "jira.group.remove_member",
                                      "jira.user.deprovision", "jira.user.provision"}));
  EXPECT_NE(registry_.Find("jira.access_sync"), nullptr);
  auto verify = RunJob("jira.connection.verify", Json::Value(Json::objectValue));
  ASSERT_TRUE(verify.ok()) << verify.status().ToString();
  EXPECT_EQ(Str(*verify, "mfa"), "totp");
  // No refresh token yet: access sync cannot authenticate, and verify says so.
  EXPECT_EQ(Str(*verify, "access_sync_auth"), "credentials_missing");

  Json::Value p;
  p["email"] = "bob@corp.example";
  p["display_name"] = "Bob";
  p["username"] = "bob";
  p["groups"].append("jira-core-users");
  auto prov = RunJob("jira.user.provision", p);
  ASSERT_TRUE(prov.ok()) << prov.status().ToString();
  Json::Value m;
  m["user"]["username"] = "bob";
  m["group"] = "jira-core-users";
  auto rm = RunJob("jira.group.remove_member", m);
  ASSERT_TRUE(rm.ok()) << rm.status().ToString();
  EXPECT_TRUE((*rm)["changed"].asBool());
  auto add = RunJob("jira.group.add_member", m);
  ASSERT_TRUE(add.ok());
  Json::Value d;
  d["user"]["username"] = "bob";
  d["action"] = "delete";
  auto del = RunJob("jira.user.deprovision", d);
  ASSERT_TRUE(del.ok()) << del.status().ToString();
  // One login served every job.
  int logins = 0;
  for (const auto& a : jira_->LoginAttempts(kDcAdmin)) logins += a.method == "tsv_totp" ? 1 : 0;
  EXPECT_EQ(logins, 1);

  Json::Value bad = p;
  bad["unknown"] = 1;
  auto refused = RunJob("jira.user.provision", bad);
  EXPECT_EQ(agent::ErrorFromStatus(refused.status()).code, "invalid_params");
  std::stop_source stopped;
  stopped.request_stop();
  EXPECT_TRUE(agent::IsStoppedStatus(
      RunJob("jira.connection.verify", Json::Value(Json::objectValue), stopped.get_token())
          .status()));
}

TEST_F(AgentJiraTest, AReloadedConnectionIsOpenedAfresh) {
  auto first = connections_->Get(config_.connections.front());
  ASSERT_TRUE(first.ok());
  auto same = connections_->Get(config_.connections.front());
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(first->get(), same->get());
  auto changed =
      ConfigFor(state_dir_.string(), ConnectionJson(R"(, "request_timeout_seconds": 30)"));
  ASSERT_TRUE(changed.ok()) << changed.status().ToString();
  auto other = connections_->Get(changed->connections.front());
  ASSERT_TRUE(other.ok());
  EXPECT_NE(first->get(), other->get());
  // The old one still works for a job that holds it.
  auto verify = jira::RunVerify(**first, Json::Value(Json::objectValue), {});
  EXPECT_TRUE(verify.ok()) << verify.status().ToString();
}

TEST_F(AgentJiraTest, OauthAuthorizePrintsTheUrlReadsThePasteAndSealsTheGrant) {
  const std::string client_secret = MakeCanary("clientsecret");
  OAuthClientSpec spec;
  spec.client_id = "cakewalk-sync";
  spec.client_secret = client_secret;
  spec.redirect_uris = {"https://localhost/cakewalk-agent/oauth-callback"};
  spec.scopes = {"ADMIN"};
  ASSERT_TRUE(jira_->AddOAuthClient(spec).ok());
  std::ostringstream out, err;
  agent::CliIo io{out, err};
  // Without the client secret the command says what to store first.
  auto early = agent::AuthorizeOAuth(config_, kConn, *store_, io,
                                     [] { return Result<SecretBytes>(SecretBytes()); });
  EXPECT_NE(early.message().find("secret set " + std::string(kConn) + " oauth-client-secret"),
            std::string::npos);
  PutSecret("oauth-client-secret", client_secret);

  jira::ConnectionOptions options;
  options.clock = &clock_;
  options.sleeper = &sleeper_;
  std::string code_seen;
  auto done = agent::AuthorizeOAuth(
      config_, kConn, *store_, io,
      [&]() -> Result<SecretBytes> {
        // The browser: the URL is on the output already; consent, then paste the redirect.
        const std::string text = out.str();
        const std::size_t at = text.find("https://");
        const std::string url = text.substr(at, text.find('\n', at) - at);
        auto code = jira_->IssueAuthorizationCode(
            "cakewalk-sync", kDcAdmin, "https://localhost/cakewalk-agent/oauth-callback", {"ADMIN"},
            jira::QueryParameter(url, "code_challenge").value_or(""));
        if (!code.ok()) return code.status();
        code_seen = *code;
        return SecretBytes::CopyOf(
            "https://localhost/cakewalk-agent/oauth-callback?code=" + UrlEncode(*code) +
            "&state=" + jira::QueryParameter(url, "state").value_or(""));
      },
      options);
  ASSERT_TRUE(done.ok()) << done.ToString();
  const std::string printed = out.str();
  EXPECT_NE(printed.find("/rest/oauth2/latest/authorize?"), std::string::npos);
  EXPECT_NE(printed.find("Authorized"), std::string::npos);
  EXPECT_NE(printed.find(kDcAdmin), std::string::npos);
  auto version = credentials_->CurrentVersion("oauth-refresh-token");
  ASSERT_TRUE(version.ok());
  EXPECT_EQ(*version, 1u);  // the exchange's access token was used: no extra refresh
  auto refresh = store_->Unseal(kConn, "oauth-refresh-token", "test: read back");
  ASSERT_TRUE(refresh.ok());
  for (const std::string& secret :
       {client_secret, code_seen, std::string(refresh->RevealString(SecretAccess::Grant()))}) {
    EXPECT_TRUE(FindCanaryIn(secret, printed + err.str(), "command output").empty());
  }
  // Verify now sees a working access sync grant.
  auto verify = RunJob("jira.connection.verify", Json::Value(Json::objectValue));
  ASSERT_TRUE(verify.ok()) << verify.status().ToString();
  EXPECT_EQ(Str(*verify, "access_sync_auth"), "ok");
}

TEST_F(AgentJiraTest, HealthChecksNameWhatAnOperatorMustDo) {
  auto conn = Open(DcSettings(true));
  auto health = jira::CheckConnection(*conn);
  std::string lines;
  for (const auto& h : health.checks) {
    lines += h.name + " [" + std::to_string(h.outcome) + "] " + h.detail + "\n";
  }
  EXPECT_TRUE(health.ok()) << lines;
  EXPECT_NE(lines.find("logged in as svc-cakewalk (two-step verification)"), std::string::npos)
      << lines;
  EXPECT_NE(lines.find("Administer"), std::string::npos) << lines;

  // A refused password: the login stop shows as a failure that names the way out.
  PutSecret("password", "wrong-password");
  auto broken = Open(DcSettings(true));
  auto health2 = jira::CheckConnection(*broken);
  EXPECT_FALSE(health2.ok());
  EXPECT_EQ(health2.first_failure_reason(), "auth_failed");
  auto health3 = jira::CheckConnection(*broken);  // the stop: no new attempt, an operator must act
  std::string text;
  for (const auto& h : health3.checks) text += h.detail + "\n";
  EXPECT_NE(text.find("automatic logins are stopped"), std::string::npos) << text;
  EXPECT_NE(text.find("secret set jira-test password"), std::string::npos) << text;
  EXPECT_EQ(jira_->FailedLoginCount(kDcAdmin), 1);

  // A wrong CA: TLS fails, the rest is not attempted.
  auto other = TestCa::Create("another-ca");
  WriteFile(dir_ / "other.pem", other->cert_pem(), 0644);
  auto settings = DcSettings(true);
  settings.ca_file = dir_ / "other.pem";
  auto untrusted = Open(settings);
  auto health4 = jira::CheckConnection(*untrusted);
  bool tls_failed = false;
  for (const auto& h : health4.checks) {
    if (h.name == "jira-test: TLS") tls_failed = h.outcome == jira::HealthCheck::kFail;
  }
  EXPECT_TRUE(tls_failed);
}

}  // namespace
}  // namespace cakewalk::testing
