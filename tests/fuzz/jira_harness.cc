#include "tests/fuzz/jira_harness.h"

#include <algorithm>
#include <set>

#include "base/json.h"
#include "jira/errors.h"
#include "jira/health.h"
#include "jira/jobs.h"

namespace cakewalk::fuzz {
namespace {

constexpr char kSite[] = "https://jira.corp.example";
constexpr char kCloudSite[] = "https://corp.atlassian.net";
constexpr char kGateway[] = "https://api.atlassian.com";
constexpr char kDcTokenUrl[] = "https://jira.corp.example/rest/oauth2/latest/token";
constexpr char kCloudTokenUrl[] = "https://auth.atlassian.com/oauth/token";

std::set<std::string> Keys(const Json::Value& object) {
  const auto names = object.getMemberNames();
  return {names.begin(), names.end()};
}

void CheckUser(const Json::Value& user, bool with_active) {
  FuzzCheck(user.isObject(), "a user is an object");
  std::set<std::string> expected = {"id", "username", "email", "display_name"};
  if (with_active) expected.insert("active");
  FuzzCheck(Keys(user) == expected, "a user object has exactly the documented fields");
  FuzzCheck(user["id"].isString(), "a user id is a string");
}

void CheckNoCanary(std::string_view text, std::string_view input, const char* where) {
  for (const auto& canary : JiraCanaries()) {
    if (input.find(canary) != std::string_view::npos) continue;
    FuzzCheck(text.find(canary) == std::string_view::npos, where);
  }
}

}  // namespace

Result<http::Response> UrlRecorder::Send(const http::Request& request) {
  {
    std::lock_guard lock(mu_);
    urls_.push_back(request.url);
  }
  return inner_->Send(request);
}

std::vector<std::string> UrlRecorder::urls() const {
  std::lock_guard lock(mu_);
  return urls_;
}

const std::vector<JiraScenario>& JiraScenarios() {
  static const std::vector<JiraScenario> kScenarios = {
      {"dc.verify", jira::Flavor::kDataCenter, false, "verify", "{}"},
      {"dc.verify.oauth", jira::Flavor::kDataCenter, true, "verify", "{}"},
      {"dc.provision", jira::Flavor::kDataCenter, false, "provision",
       R"({"email": "carol@corp.example", "display_name": "Carol Jones", "username": "carol",
           "groups": ["developers"], "products": ["jira-software"]})"},
      {"dc.deprovision.remove_access", jira::Flavor::kDataCenter, false, "deprovision",
       R"({"user": {"username": "alice"}, "action": "remove_access"})"},
      {"dc.deprovision.deactivate", jira::Flavor::kDataCenter, false, "deprovision",
       R"({"user": {"email": "alice@corp.example"}, "action": "deactivate"})"},
      {"dc.deprovision.delete", jira::Flavor::kDataCenter, false, "deprovision",
       R"({"user": {"username": "alice"}, "action": "delete"})"},
      {"dc.add_member", jira::Flavor::kDataCenter, false, "add_member",
       R"({"user": {"username": "alice"}, "group": "developers"})"},
      {"dc.remove_member", jira::Flavor::kDataCenter, false, "remove_member",
       R"({"user": {"username": "alice"}, "group": "developers"})"},
      {"dc.health", jira::Flavor::kDataCenter, false, "health", "{}"},
      {"cloud.verify", jira::Flavor::kCloud, false, "verify", "{}"},
      {"cloud.verify.oauth", jira::Flavor::kCloud, true, "verify", "{}"},
      {"cloud.provision", jira::Flavor::kCloud, false, "provision",
       R"({"email": "carol@corp.example", "display_name": "Carol Jones",
           "groups": ["developers"], "products": ["jira-software"]})"},
      {"cloud.deprovision.remove_access", jira::Flavor::kCloud, false, "deprovision",
       R"({"user": {"email": "alice@corp.example"}, "action": "remove_access"})"},
      {"cloud.deprovision.deactivate", jira::Flavor::kCloud, false, "deprovision",
       R"({"user": {"account_id": "5b10ac8d82e05b22cc7d4ef5"}, "action": "deactivate"})"},
      {"cloud.deprovision.delete", jira::Flavor::kCloud, false, "deprovision",
       R"({"user": {"account_id": "5b10ac8d82e05b22cc7d4ef5"}, "action": "delete"})"},
      {"cloud.add_member", jira::Flavor::kCloud, false, "add_member",
       R"({"user": {"email": "alice@corp.example"}, "group": "developers"})"},
      {"cloud.remove_member", jira::Flavor::kCloud, false, "remove_member",
       R"({"user": {"account_id": "5b10ac8d82e05b22cc7d4ef5"}, "group": "developers"})"},
      {"cloud.health", jira::Flavor::kCloud, true, "health", "{}"},
  };
  return kScenarios;
}

const JiraScenario& FindScenario(std::string_view name, std::size_t fallback) {
  const auto& all = JiraScenarios();
  for (const auto& s : all) {
    if (s.name == name) return s;
  }
  return all[fallback % all.size()];
}

const std::vector<std::string>& JiraCanaries() {
  static const std::vector<std::string> kCanaries = {
      "password-canary-0d9e8a7b6c4d5f1c",
      "api-token-canary-7b6c4d5f1c0d9e8a",
      "org-api-key-canary-4d5f1c0d9e8a7b6c",
      "pat-canary-c0d9e8a7b6c4d5f1",
      "oauth-client-secret-canary-8a7b6c4d5f",
      "oauth-refresh-token-canary-1c0d9e8a7b",
      "totp-seed-canary-12345678",
  };
  return kCanaries;
}

jira::ConnectionSettings JiraHarness::DefaultSettings(jira::Flavor flavor, bool oauth_sync) {
  jira::ConnectionSettings s;
  s.name = "jira-fuzz";
  s.flavor = flavor;
  if (flavor == jira::Flavor::kDataCenter) {
    s.base_url = kSite;
    s.api_base_url = kSite;
    s.provisioning = jira::ProvisioningAuth::kPassword;
    s.username = "svc-cakewalk";
    s.mfa_totp = true;
    s.access_sync = oauth_sync ? jira::AccessSyncAuth::kOAuth2 : jira::AccessSyncAuth::kPat;
    s.oauth.token_url = kDcTokenUrl;
    s.oauth.authorize_url = "https://jira.corp.example/rest/oauth2/latest/authorize";
  } else {
    s.base_url = kCloudSite;
    s.provisioning = jira::ProvisioningAuth::kApiToken;
    s.username = "admin@corp.example";
    s.org_id = "7d5e8a3b-1c2d-4e5f-9a8b-0c1d2e3f4a5b";
    s.admin_api_url = kGateway;
    s.access_sync = oauth_sync ? jira::AccessSyncAuth::kOAuth2 : jira::AccessSyncAuth::kApiToken;
    s.api_base_url =
        oauth_sync ? std::string(kGateway) + "/ex/jira/{cloudId}" : std::string(kCloudSite);
    s.oauth.token_url = kCloudTokenUrl;
    s.oauth.authorize_url = "https://auth.atlassian.com/authorize";
  }
  s.oauth.client_id = "fuzz-client";
  s.oauth.scopes = {"read:jira-user", "offline_access"};
  s.oauth.redirect_uri = "https://localhost/cakewalk-agent/oauth-callback";
  return s;
}

JiraHarness::JiraHarness(jira::ConnectionSettings settings,
                         std::shared_ptr<http::Transport> transport, FuzzClock* clock)
    : settings_(std::move(settings)),
      clock_(clock != nullptr ? *clock : own_clock_),
      credentials_("jira-fuzz"),
      recorder_(std::make_shared<UrlRecorder>(std::move(transport))),
      connection_(Status(Code::kInternal, "not opened")) {
  const auto& c = JiraCanaries();
  credentials_.Set(jira::secret::kPassword, c[0]);
  credentials_.Set(jira::secret::kApiToken, c[1]);
  credentials_.Set(jira::secret::kOrgApiKey, c[2]);
  credentials_.Set(jira::secret::kPat, c[3]);
  credentials_.Set(jira::secret::kOAuthClientSecret, c[4]);
  credentials_.Set(jira::secret::kOAuthRefreshToken, c[5]);
  credentials_.Set(jira::secret::kTotp, c[6]);
  Reopen();
}

void JiraHarness::Reopen() {
  jira::ConnectionOptions options;
  options.clock = &clock_;
  options.sleeper = &sleeper_;
  options.random = [] { return 0.5; };
  options.retry.max_attempts = 3;
  options.transport = recorder_;
  connection_ = jira::Connection::Open(settings_, credentials_, std::move(options));
}

Result<jira::Connection*> JiraHarness::connection() {
  if (!connection_.ok()) return connection_.status();
  return connection_->get();
}

Result<Json::Value> JiraHarness::Run(std::string_view job, const Json::Value& params) {
  CW_ASSIGN_OR_RETURN(jira::Connection * c, connection());
  const std::stop_token stop;
  if (job == "verify") return jira::RunVerify(*c, params, stop);
  if (job == "provision") return jira::RunProvision(*c, params, stop);
  if (job == "deprovision") return jira::RunDeprovision(*c, params, stop);
  if (job == "add_member") return jira::RunGroupMembership(*c, params, true, stop);
  if (job == "remove_member") return jira::RunGroupMembership(*c, params, false, stop);
  const jira::ConnectionHealth health = jira::CheckConnection(*c, stop);
  Json::Value lines(Json::arrayValue);
  for (const auto& check : health.checks) {
    Json::Value line(Json::objectValue);
    line["name"] = check.name;
    line["detail"] = check.detail;
    line["reason"] = check.reason;
    lines.append(line);
  }
  return lines;
}

std::vector<std::string> JiraHarness::configured_bases() const {
  std::vector<std::string> bases = {settings_.base_url + "/", settings_.oauth.token_url};
  if (!settings_.admin_api_url.empty()) bases.push_back(settings_.admin_api_url + "/");
  if (!settings_.api_base_url.empty()) {
    std::string api = settings_.api_base_url;
    const std::size_t placeholder = api.find("{cloudId}");
    // The cloudId comes from an answer, URL-encoded into one path segment of the gateway.
    bases.push_back(placeholder == std::string::npos ? api + "/" : api.substr(0, placeholder));
  }
  return bases;
}

void CheckJobOutcome(std::string_view job, const Result<Json::Value>& outcome,
                     std::string_view input) {
  if (!outcome.ok()) {
    static const std::set<std::string_view> kCodes = {
        jira::reason::kInvalidParams,      jira::reason::kUserNotFound,
        jira::reason::kAmbiguousUser,      jira::reason::kGroupNotFound,
        jira::reason::kNotAdmin,           jira::reason::kAuthFailed,
        jira::reason::kMfaFailed,          jira::reason::kCaptchaRequired,
        jira::reason::kCredentialsMissing, jira::reason::kRateLimited,
        jira::reason::kJiraUnavailable,    jira::reason::kLicenseExceeded,
        jira::reason::kUnsupported,        jira::reason::kTokenUnavailable,
        jira::reason::kPolicyDenied,       jira::reason::kInternal,
    };
    if (kCodes.count(outcome.status().reason()) != 1) {
      std::fprintf(stderr, "job %.*s failed with reason '%s': %s\n", static_cast<int>(job.size()),
                   job.data(), outcome.status().reason().c_str(),
                   outcome.status().message().c_str());
    }
    FuzzCheck(kCodes.count(outcome.status().reason()) == 1, "a failed job has a jobs.md code");
    CheckNoCanary(outcome.status().message(), input, "an error message contains a credential");
    return;
  }
  const Json::Value& out = *outcome;
  CheckNoCanary(WriteJson(out), input, "an output contains a credential");
  if (job == "health") return;
  FuzzCheck(out.isObject(), "an output is an object");
  if (job == "verify") {
    FuzzCheck(Keys(out) == std::set<std::string>{"flavor", "server_version", "account", "admin",
                                                 "system_admin", "mfa", "access_sync_auth",
                                                 "clock_skew_seconds"},
              "verify output fields");
    CheckUser(out["account"], false);
  } else if (job == "provision") {
    FuzzCheck(
        Keys(out) == std::set<std::string>{"user", "created", "groups_added", "groups_already",
                                           "products_granted", "products_already"},
        "provision output fields");
    CheckUser(out["user"], true);
  } else if (job == "deprovision") {
    FuzzCheck(Keys(out) == std::set<std::string>{"user", "groups_removed", "products_revoked",
                                                 "deactivated", "deleted", "already"},
              "deprovision output fields");
    CheckUser(out["user"], false);
  } else {
    FuzzCheck(Keys(out) == std::set<std::string>{"user", "group", "changed"},
              "group membership output fields");
    CheckUser(out["user"], false);
  }
}

void CheckRequests(const JiraHarness& harness) {
  const auto bases = harness.configured_bases();
  for (const auto& url : harness.recorder().urls()) {
    const bool configured = std::any_of(bases.begin(), bases.end(), [&](const std::string& b) {
      return url.compare(0, b.size(), b) == 0 &&
             (url.size() == b.size() || b.back() == '/' || url[b.size()] == '/' ||
              url[b.size()] == '?' || b.find("/ex/jira/") != std::string::npos);
    });
    if (!configured) std::fprintf(stderr, "request to an unconfigured place: %s\n", url.c_str());
    FuzzCheck(configured, "every request goes to a configured base URL");
  }
}

}  // namespace cakewalk::fuzz
