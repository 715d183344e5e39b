#include "tests/sync/sync_env.h"

#include <openssl/sha.h>

#include <algorithm>
#include <cstring>

#include "base/encoding.h"
#include "base/json.h"
#include "base/time.h"
#include "jira/sync_classify.h"

namespace cakewalk::testing {
namespace {

Json::Value OrNull(const std::optional<std::string>& v) {
  return v ? Json::Value(*v) : Json::Value(Json::nullValue);
}

Json::Value TimeOrNull(const std::optional<SysTime>& t) {
  return t ? Json::Value(FormatRfc3339(*t)) : Json::Value(Json::nullValue);
}

Json::Value Array(const std::vector<std::string>& v) {
  Json::Value a(Json::arrayValue);
  for (const auto& s : v) a.append(s);
  return a;
}

bool Has(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// The rules of docs/access-sync.md, restated for the test from the truth's own fields.
bool Glob(std::string_view p, std::string_view t) {
  if (p.empty()) return t.empty();
  if (p[0] == '*') {
    for (std::size_t i = 0; i <= t.size(); ++i) {
      if (Glob(p.substr(1), t.substr(i))) return true;
    }
    return false;
  }
  auto fold = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
  return !t.empty() && fold(p[0]) == fold(t[0]) && Glob(p.substr(1), t.substr(1));
}

}  // namespace

Status CollectingSink::Write(std::string record_json) {
  // The text as received: the report's sha256 must be over exactly these bytes, and they must be
  // the record's canonical form.
  auto record = ParseJson(record_json, "record");
  if (!record.ok()) return record.status();
  EXPECT_EQ(WriteJson(*record), record_json);
  if (before_write) CW_RETURN_IF_ERROR(before_write(records_.size(), *record));
  concatenated_ += record_json;
  records_.push_back(std::move(*record));
  return Status::Ok();
}

Result<std::int64_t> CollectingSink::Finish() {
  finished_ = true;
  return static_cast<std::int64_t>((records_.size() + 999) / 1000);
}

std::string CollectingSink::sha256() const {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(concatenated_.data()), concatenated_.size(), d);
  return HexEncode(std::span<const std::uint8_t>(d, sizeof d));
}

std::vector<Json::Value> CollectingSink::OfKind(std::string_view kind) const {
  std::vector<Json::Value> out;
  for (const auto& r : records_) {
    if (r["kind"].asString() == kind) out.push_back(r);
  }
  return out;
}

Json::Value ExpectedUserRecord(const UserTruth& t, const Expectation& e) {
  const bool dc = e.flavor == jira::Flavor::kDataCenter;
  Json::Value r(Json::objectValue);
  r["kind"] = "user";
  r["id"] = t.id;
  r["username"] = dc ? Json::Value(t.username) : Json::Value(Json::nullValue);
  r["email"] = OrNull(t.email);
  r["display_name"] = t.display_name;
  r["active"] = t.active;
  r["groups"] = Array(t.groups);
  r["products"] = Array(t.products);
  const bool sys = !dc && Has(t.permissions, "SYSTEM_ADMIN");
  const bool admin = Has(t.permissions, "ADMINISTER") || Has(t.permissions, "SYSTEM_ADMIN");
  std::vector<std::string> perms;
  if (admin) perms.push_back("ADMINISTER");
  if (sys) perms.push_back("SYSTEM_ADMIN");
  r["permissions"] = Array(perms);
  r["level"] = sys ? "system_admin" : admin ? "admin" : !t.products.empty() ? "user" : "no_access";
  r["last_login"] =
      dc && e.last_login_visible ? TimeOrNull(t.last_login) : Json::Value(Json::nullValue);
  std::string type, reason;
  if (!dc) {
    if (t.account_type == "app") {
      const std::string domain = "@serviceaccount.atlassian.com";
      const bool svc =
          t.email && t.email->size() > domain.size() &&
          t.email->compare(t.email->size() - domain.size(), domain.size(), domain) == 0;
      type = svc ? "service_account" : "app";
      reason = svc ? "cloud_service_account" : "cloud_account_type:app";
    } else if (t.account_type == "customer") {
      type = "customer";
      reason = "cloud_account_type:customer";
    }
  } else {
    std::string local = t.email ? t.email->substr(0, t.email->find('@')) : "";
    for (const auto& entry : e.nhi_patterns) {
      std::string p = entry,
                  kind = entry.find("bot") != std::string::npos ? "bot" : "service_account";
      for (const char* prefix : {"system:", "bot:", "service_account:", "app:"}) {
        if (entry.rfind(prefix, 0) == 0) {
          kind = std::string(prefix, std::strlen(prefix) - 1);
          p = entry.substr(std::strlen(prefix));
        }
      }
      if (Glob(p, t.username) || (!local.empty() && Glob(p, local))) {
        type = kind;
        reason = "name_pattern:" + p;
        break;
      }
    }
    if (type.empty() && t.owns_token && t.products.empty()) {
      type = "system";
      reason = "token_without_application_access";
    }
    if (type.empty() && t.owns_token && e.last_login_visible && !t.last_login) {
      type = "service_account";
      reason = "token_without_login";
    }
  }
  r["human"] = type.empty();
  r["nhi_type"] = type.empty() ? Json::Value(Json::nullValue) : Json::Value(type);
  if (!type.empty()) r["nhi_reason"] = reason;
  return r;
}

Json::Value ExpectedCredentialRecord(const CredentialTruth& c) {
  Json::Value r(Json::objectValue);
  r["kind"] = "credential";
  r["id"] = c.id;
  r["nhi_type"] = c.type;
  r["name"] = c.name;
  r["owner_id"] = OrNull(c.owner_id);
  r["created_at"] = TimeOrNull(c.created_at);
  r["expires_at"] = TimeOrNull(c.expires_at);
  r["last_used_at"] = TimeOrNull(c.last_used_at);
  return r;
}

void SyncFixture::StartDc(const std::string& version, std::optional<SiteSpec> site,
                          FakeJiraOptions options) {
  version_ = version;
  flavor_ = jira::Flavor::kDataCenter;
  options.flavor = JiraFlavor::kDataCenter;
  options.version = version;
  ASSERT_NO_FATAL_FAILURE(StartJira(std::move(options)));
  if (site) {
    ASSERT_TRUE(jira_->GenerateSite(*site).ok());
  }
  ASSERT_NO_FATAL_FAILURE(SeedDcAdmin(false));
  auto pat = jira_->AddPersonalAccessToken(kDcAdmin, "cakewalk-access-sync", std::nullopt);
  ASSERT_TRUE(pat.ok()) << pat.status().ToString();
  pat_ = *pat;
  PutSecret("pat", pat_);
}

void SyncFixture::StartCloud(std::optional<SiteSpec> site, FakeJiraOptions options) {
  version_ = "cloud";
  flavor_ = jira::Flavor::kCloud;
  options.flavor = JiraFlavor::kCloud;
  ASSERT_NO_FATAL_FAILURE(StartJira(std::move(options)));
  if (site) {
    ASSERT_TRUE(jira_->GenerateSite(*site).ok());
  }
  ASSERT_NO_FATAL_FAILURE(SeedCloudAdmin());
}

std::unique_ptr<jira::Connection> SyncFixture::OpenSync(bool real_time) {
  jira::ConnectionSettings s =
      flavor_ == jira::Flavor::kCloud ? CloudSettings() : DcSettings(false);
  s.access_sync = flavor_ == jira::Flavor::kCloud ? jira::AccessSyncAuth::kApiToken
                                                  : jira::AccessSyncAuth::kPat;
  if (!real_time) return Open(std::move(s));
  jira::ConnectionOptions o;
  o.clock = &SystemClock();
  o.sleeper = &jira::RealSleeper();
  auto c = jira::Connection::Open(std::move(s), *credentials_, std::move(o));
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(*c) : nullptr;
}

jira::AccessSyncOptions SyncFixture::SyncOptions() const {
  jira::AccessSyncOptions o;
  o.max_concurrency = 6;
  o.nhi_patterns = patterns_;
  o.scratch_dir = dir_ / "scratch";
  return o;
}

Result<jira::SyncReport> SyncFixture::Sync(CollectingSink& sink, Json::Value params,
                                           std::optional<jira::AccessSyncOptions> options,
                                           std::stop_token stop, bool real_time) {
  auto connection = OpenSync(real_time);
  if (connection == nullptr) return Internal("the connection did not open");
  return jira::RunAccessSync(*connection, params, options.value_or(SyncOptions()), sink,
                             std::move(stop));
}

Expectation SyncFixture::Expect() const {
  Expectation e;
  e.flavor = flavor_;
  e.nhi_patterns = patterns_;
  if (flavor_ == jira::Flavor::kCloud) {
    e.last_login_visible = false;
  } else {
    const bool groups_mode = version_.rfind("10.0", 0) == 0 || version_.rfind("10.1", 0) == 0 ||
                             version_.rfind("10.2", 0) == 0;
    e.users_from_groups = groups_mode;
    e.last_login_visible = !groups_mode;
  }
  return e;
}

void SyncFixture::VerifyComplete(const CollectingSink& sink, const jira::SyncReport& report,
                                 bool groups, bool credentials) {
  ASSERT_NO_FATAL_FAILURE(VerifyRecords(sink.records(), report.output, groups, credentials));
  const Json::Value& out = report.output;
  EXPECT_EQ(out["pages"].asInt64(),
            static_cast<std::int64_t>((sink.records().size() + 999) / 1000));
  EXPECT_EQ(out["sha256"].asString(), sink.sha256());
  EXPECT_TRUE(sink.finished());
}

void VerifySyncRecords(const FakeJira& jira, const Expectation& e,
                       const std::vector<Json::Value>& records, const Json::Value& out, bool groups,
                       bool credentials) {
  auto of_kind = [&](std::string_view kind) {
    std::vector<Json::Value> v;
    for (const auto& r : records) {
      if (r["kind"].asString() == kind) v.push_back(r);
    }
    return v;
  };
  // Users: each expected one exactly once, every field equal.
  std::map<std::string, const Json::Value*> users;
  std::int64_t non_human = 0;
  for (const Json::Value& r : records) {
    if (r["kind"].asString() != "user") continue;
    ASSERT_TRUE(users.emplace(r["id"].asString(), &r).second)
        << "user " << r["id"].asString() << " appears twice";
    if (!r["human"].asBool()) ++non_human;
  }
  std::size_t expected_users = 0;
  std::size_t mismatches = 0;
  jira.ForEachExpectedSyncUser([&](const UserTruth& t) {
    if (e.users_from_groups && t.groups.empty()) return;
    ++expected_users;
    auto it = users.find(t.id);
    if (it == users.end()) {
      if (++mismatches <= 5) ADD_FAILURE() << "user " << t.id << " (" << t.username << ") missing";
      return;
    }
    const Json::Value want = ExpectedUserRecord(t, e);
    if (WriteJson(*it->second) != WriteJson(want) && ++mismatches <= 5) {
      ADD_FAILURE() << "user " << t.id << "\n got:  " << WriteJson(*it->second)
                    << "\n want: " << WriteJson(want);
    }
  });
  EXPECT_EQ(mismatches, 0u);
  EXPECT_EQ(users.size(), expected_users) << "users reported that Jira does not list";

  // Groups.
  const auto group_records = of_kind("group");
  if (groups) {
    std::map<std::string, std::string> got;
    for (const auto& r : group_records) {
      ASSERT_TRUE(got.emplace(r["id"].asString(), WriteJson(r)).second)
          << "group " << r["id"].asString() << " twice";
    }
    std::size_t n = 0;
    for (const GroupTruth& g : jira.Groups()) {
      ++n;
      Json::Value want(Json::objectValue);
      want["kind"] = "group";
      want["id"] = g.id;
      want["name"] = g.name;
      want["member_count"] = static_cast<Json::UInt64>(g.member_count);
      EXPECT_EQ(got[g.id], WriteJson(want));
    }
    EXPECT_EQ(group_records.size(), n);
  } else {
    EXPECT_TRUE(group_records.empty());
  }

  // Credentials (Data Center lists them; Cloud says it cannot).
  const auto credential_records = of_kind("credential");
  if (credentials && e.flavor == jira::Flavor::kDataCenter) {
    // The sync's own token is used while it runs: its last use moves on.
    auto comparable = [](Json::Value r) {
      if (r["name"].asString() == "cakewalk-access-sync") r.removeMember("last_used_at");
      return WriteJson(r);
    };
    std::multiset<std::string> got, want;
    for (const auto& r : credential_records) got.insert(comparable(r));
    for (const auto& c : jira.Credentials()) want.insert(comparable(ExpectedCredentialRecord(c)));
    EXPECT_EQ(got, want);
  } else {
    EXPECT_TRUE(credential_records.empty());
  }

  // The output agrees with what was received.
  EXPECT_EQ(out["counts"]["users"].asInt64(), static_cast<std::int64_t>(users.size()));
  EXPECT_EQ(out["counts"]["groups"].asInt64(), static_cast<std::int64_t>(group_records.size()));
  EXPECT_EQ(out["counts"]["credentials"].asInt64(),
            static_cast<std::int64_t>(credential_records.size()));
  EXPECT_EQ(out["counts"]["non_human"].asInt64(), non_human);
  EXPECT_EQ(out["records"].asInt64(), static_cast<std::int64_t>(records.size()));
  EXPECT_TRUE(out["duration_ms"].isIntegral());
}

void SyncFixture::VerifyRecords(const std::vector<Json::Value>& records, const Json::Value& out,
                                bool groups, bool credentials) {
  VerifySyncRecords(*jira_, Expect(), records, out, groups, credentials);
}

std::set<std::string> WarningCodes(const Json::Value& output) {
  std::set<std::string> out;
  for (const auto& w : output["warnings"]) out.insert(w["code"].asString());
  return out;
}

}  // namespace cakewalk::testing
