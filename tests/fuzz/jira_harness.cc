#include "tests/fuzz/jira_harness.h"

#include <openssl/sha.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "base/encoding.h"
#include "base/json.h"
#include "jira/access_sync.h"
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

bool StringOrNull(const Json::Value& v) { return v.isString() || v.isNull(); }

bool StringArray(const Json::Value& v) {
  if (!v.isArray()) return false;
  return std::all_of(v.begin(), v.end(), [](const Json::Value& e) { return e.isString(); });
}

bool OneOf(const Json::Value& v, std::initializer_list<std::string_view> values) {
  if (!v.isString()) return false;
  const std::string text = v.asString();
  return std::find(values.begin(), values.end(), text) != values.end();
}

// A fresh temp folder for one access sync's scratch file (the caller removes it after the sync;
// per run, so that no exit path of the fuzzer leaves one behind but a crash).
std::filesystem::path NewSyncScratch() {
  std::error_code ec;
  std::filesystem::path tmp = std::filesystem::temp_directory_path(ec);
  if (ec) tmp = "/tmp";
  std::string templ = (tmp / "cakewalk-fuzz-sync-XXXXXX").string();
  FuzzCheck(::mkdtemp(templ.data()) != nullptr, "a temp folder for the access sync's scratch");
  return templ;
}

// Keeps every record text, after checking it is a JSON object in canonical form; Finish counts
// pages of 1000 as the job loop posts them.
class CollectingSink final : public jira::SyncRecordSink {
 public:
  explicit CollectingSink(std::vector<std::string>& records) : records_(records) {}
  Status Write(std::string record_json) override {
    auto record = ParseJson(record_json, "an access sync record");
    FuzzCheck(record.ok() && record->isObject(), "an access sync record is a JSON object");
    FuzzCheck(WriteJson(*record) == record_json, "an access sync record is canonical JSON");
    records_.push_back(std::move(record_json));
    return Status::Ok();
  }
  Result<std::int64_t> Finish() override {
    pages_ = static_cast<std::int64_t>((records_.size() + 999) / 1000);
    return pages_;
  }
  std::int64_t pages() const { return pages_; }

 private:
  std::vector<std::string>& records_;
  std::int64_t pages_ = 0;
};

// The documented fields of each record kind (docs/protocol.md §12).
void CheckSyncRecord(const Json::Value& r) {
  const std::string kind = r["kind"].isString() ? r["kind"].asString() : "";
  if (kind == "user") {
    std::set<std::string> expected = {"kind",        "id",    "username",  "email",  "display_name",
                                      "active",      "human", "nhi_type",  "groups", "products",
                                      "permissions", "level", "last_login"};
    if (r.isMember("nhi_reason")) expected.insert("nhi_reason");
    FuzzCheck(Keys(r) == expected, "a user record has exactly the documented fields");
    FuzzCheck(r["id"].isString() && StringOrNull(r["username"]) && StringOrNull(r["email"]) &&
                  r["display_name"].isString() && r["active"].isBool() && r["human"].isBool(),
              "a user record's fields have their types");
    FuzzCheck(r["human"].asBool()
                  ? r["nhi_type"].isNull()
                  : OneOf(r["nhi_type"], {"app", "service_account", "bot", "system", "customer"}),
              "a user record's nhi_type is null for humans, else a documented type");
    FuzzCheck(!r.isMember("nhi_reason") || r["nhi_reason"].isString(), "nhi_reason is a string");
    FuzzCheck(
        StringArray(r["groups"]) && StringArray(r["products"]) && StringArray(r["permissions"]),
        "a user record's groups, products and permissions are arrays of strings");
    FuzzCheck(OneOf(r["level"], {"system_admin", "admin", "user", "no_access"}),
              "a user record's level is documented");
    FuzzCheck(StringOrNull(r["last_login"]), "a user record's last_login is a string or null");
  } else if (kind == "group") {
    FuzzCheck(Keys(r) == std::set<std::string>{"kind", "id", "name", "member_count"},
              "a group record has exactly the documented fields");
    FuzzCheck(r["id"].isString() && r["name"].isString() && r["member_count"].isIntegral() &&
                  r["member_count"].asInt64() >= 0,
              "a group record's fields have their types");
  } else {
    FuzzCheck(kind == "credential", "a record's kind is user, group or credential");
    FuzzCheck(Keys(r) == std::set<std::string>{"kind", "id", "nhi_type", "name", "owner_id",
                                               "created_at", "expires_at", "last_used_at"},
              "a credential record has exactly the documented fields");
    FuzzCheck(r["id"].isString() && r["name"].isString() && StringOrNull(r["owner_id"]) &&
                  StringOrNull(r["created_at"]) && StringOrNull(r["expires_at"]) &&
                  StringOrNull(r["last_used_at"]),
              "a credential record's fields have their types");
    FuzzCheck(OneOf(r["nhi_type"],
                    {"personal_access_token", "api_token", "oauth_client", "application_link"}),
              "a credential record's nhi_type is documented");
  }
}

bool Count(const Json::Value& v) { return v.isIntegral() && v.asInt64() >= 0; }

void CheckSyncOutput(const Json::Value& out) {
  std::set<std::string> expected = {"counts", "records", "pages", "sha256", "duration_ms"};
  if (out.isMember("warnings")) expected.insert("warnings");
  FuzzCheck(Keys(out) == expected, "access sync output fields");
  const Json::Value& counts = out["counts"];
  FuzzCheck(counts.isObject() && Keys(counts) == std::set<std::string>{"users", "groups",
                                                                       "non_human", "credentials"},
            "access sync counts fields");
  FuzzCheck(Count(counts["users"]) && Count(counts["groups"]) && Count(counts["non_human"]) &&
                Count(counts["credentials"]) && Count(out["records"]) && Count(out["pages"]) &&
                Count(out["duration_ms"]),
            "access sync counts are whole numbers");
  const Json::Value& sha = out["sha256"];
  FuzzCheck(sha.isString() && sha.asString().size() == 64 &&
                sha.asString().find_first_not_of("0123456789abcdef") == std::string::npos,
            "access sync sha256 is lower-case hex");
  if (!out.isMember("warnings")) return;
  FuzzCheck(out["warnings"].isArray(), "access sync warnings are an array");
  for (const Json::Value& w : out["warnings"]) {
    FuzzCheck(w.isObject() && Keys(w) == std::set<std::string>{"code", "message"} &&
                  w["code"].isString() && w["message"].isString(),
              "an access sync warning is {code, message}");
    const std::string code = w["code"].asString();
    FuzzCheck(!code.empty() && code.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") ==
                                   std::string::npos,
              "an access sync warning code is snake_case");
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
      {"dc.access_sync", jira::Flavor::kDataCenter, false, "access_sync", "{}"},
      {"dc.access_sync.oauth", jira::Flavor::kDataCenter, true, "access_sync", "{}"},
      {"dc.access_sync.groups", jira::Flavor::kDataCenter, false, "access_sync",
       R"({"include": ["groups", "non_human"]})"},
      {"cloud.access_sync", jira::Flavor::kCloud, false, "access_sync", "{}"},
      {"cloud.access_sync.oauth", jira::Flavor::kCloud, true, "access_sync", "{}"},
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
  if (job == "access_sync") {
    // One fetch at a time: the script's answers then meet the requests in a repeatable order
    // (routed answers cover what still runs concurrently with the emitting thread).
    jira::AccessSyncOptions options;
    options.max_concurrency = 1;
    options.initial_concurrency = 1;
    options.scratch_dir = NewSyncScratch();
    options.scratch_cache_kib = 256;
    options.retry.max_attempts = 3;
    options.nhi_patterns = {"svc-*", "*-bot"};
    sync_records_.clear();
    CollectingSink sink(sync_records_);
    auto report = jira::RunAccessSync(*c, params, options, sink, stop);
    sync_pages_ = sink.pages();
    std::error_code ignored;
    std::filesystem::remove_all(options.scratch_dir, ignored);
    if (!report.ok()) return report.status();
    return std::move(report->output);
  }
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
  } else if (job == "access_sync") {
    CheckSyncOutput(out);
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

namespace cakewalk::fuzz {

void CheckSyncRecords(const JiraHarness& harness, const Result<Json::Value>& outcome,
                      std::string_view input) {
  const auto& texts = harness.sync_records();
  std::int64_t users = 0, groups = 0, credentials = 0, non_human = 0;
  std::set<std::string> user_ids;
  std::string all;
  for (const std::string& text : texts) {
    CheckNoCanary(text, input, "an access sync record contains a credential");
    auto record = ParseJson(text, "an access sync record");
    FuzzCheck(record.ok(), "an access sync record parses");
    CheckSyncRecord(*record);
    const std::string kind = (*record)["kind"].asString();
    if (kind == "user") {
      ++users;
      if (!(*record)["human"].asBool()) ++non_human;
      FuzzCheck(user_ids.insert((*record)["id"].asString()).second,
                "every user appears exactly once");
    } else if (kind == "group") {
      ++groups;
    } else {
      ++credentials;
    }
    all += text;
  }
  if (!outcome.ok()) {
    // The pool turns an exception of a fetch task into an internal failure: a parser that threw.
    if (outcome.status().message().find("task threw") != std::string::npos) {
      std::fprintf(stderr, "access sync: %s\n", outcome.status().message().c_str());
    }
    FuzzCheck(outcome.status().message().find("task threw") == std::string::npos,
              "no access sync task throws");
    return;
  }
  const Json::Value& out = *outcome;
  FuzzCheck(out["counts"]["users"].asInt64() == users &&
                out["counts"]["groups"].asInt64() == groups &&
                out["counts"]["credentials"].asInt64() == credentials &&
                out["counts"]["non_human"].asInt64() == non_human,
            "access sync counts are those of the records sent");
  FuzzCheck(out["records"].asInt64() == static_cast<std::int64_t>(texts.size()),
            "access sync records is the number of records sent");
  FuzzCheck(out["pages"].asInt64() == harness.sync_pages(),
            "access sync pages is what the sink said");
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(all.data()), all.size(), digest);
  FuzzCheck(
      out["sha256"].asString() == HexEncode(std::span<const std::uint8_t>(digest, sizeof digest)),
      "access sync sha256 is over the records sent, in order");
}

}  // namespace cakewalk::fuzz
