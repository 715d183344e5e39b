// Test bench for access sync: the Jira connector's fixture (tests/jira/jira_env.h: FakeJira over
// TLS, a SoftHSM token, a fake clock whose sleeper advances it) with access-sync credentials, a
// record sink that keeps what it is given, and the records a complete sync must produce, derived
// from the fake's ground truth (ForEachExpectedSyncUser, Groups, Credentials) independently of the
// code under test.
#pragma once

#include <gtest/gtest.h>
#include <json/json.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "jira/access_sync.h"
#include "tests/jira/jira_env.h"

namespace cakewalk::testing {

// Keeps every record (canonical JSON) and its own SHA-256 over them, in order; "pages" of 1000.
class CollectingSink final : public jira::SyncRecordSink {
 public:
  Status Write(std::string record_json) override;
  Result<std::int64_t> Finish() override;

  // Called before each record is taken (index, record); a failure refuses it.
  std::function<Status(std::size_t, const Json::Value&)> before_write;

  const std::vector<Json::Value>& records() const { return records_; }
  std::string sha256() const;
  bool finished() const { return finished_; }
  std::vector<Json::Value> OfKind(std::string_view kind) const;

 private:
  std::vector<Json::Value> records_;
  std::string concatenated_;
  bool finished_ = false;
};

// What a record of each kind must be, from the fake's truth.
struct Expectation {
  jira::Flavor flavor = jira::Flavor::kDataCenter;
  bool last_login_visible = true;  // DC user/list and user/search
  bool users_from_groups = false;  // DC 10.0-10.2
  std::vector<std::string> nhi_patterns;
};
Json::Value ExpectedUserRecord(const UserTruth& truth, const Expectation& e);
Json::Value ExpectedCredentialRecord(const CredentialTruth& c);
// Checks records against `jira`'s truth: each expected user exactly once with every field equal,
// every group with its member count, every credential (Data Center; the sync's own token's last
// use aside); no other record; the output's counts and record count agree with the records.
void VerifySyncRecords(const FakeJira& jira, const Expectation& e,
                       const std::vector<Json::Value>& records, const Json::Value& output,
                       bool groups = true, bool credentials = true);

class SyncFixture : public JiraFixture {
 protected:
  // A Data Center of `version` (optionally a generated site), the provisioning admin, and a PAT of
  // that admin for access sync. `options` may set paging quirks, limits...
  void StartDc(const std::string& version, std::optional<SiteSpec> site = std::nullopt,
               FakeJiraOptions options = {});
  // A Cloud site (optionally generated) with its admin; access sync uses the admin's API token.
  void StartCloud(std::optional<SiteSpec> site = std::nullopt, FakeJiraOptions options = {});
  // A connection whose access sync credentials are the ones set up above; on the fixture's fake
  // clock, or (`real_time`) on the system clock with real waits.
  std::unique_ptr<jira::Connection> OpenSync(bool real_time = false);

  jira::AccessSyncOptions SyncOptions() const;
  Result<jira::SyncReport> Sync(CollectingSink& sink,
                                Json::Value params = Json::Value(Json::objectValue),
                                std::optional<jira::AccessSyncOptions> options = std::nullopt,
                                std::stop_token stop = {}, bool real_time = false);

  Expectation Expect() const;
  // Checks every record of `sink` against the truth: each expected user exactly once with every
  // field equal, every group with its member count, every credential; no other record; the
  // output's counts, records, pages and sha256 agree with what the sink received.
  void VerifyComplete(const CollectingSink& sink, const jira::SyncReport& report,
                      bool groups = true, bool credentials = true);
  // The same for records received elsewhere (the control plane's), without pages and sha256.
  void VerifyRecords(const std::vector<Json::Value>& records, const Json::Value& output,
                     bool groups = true, bool credentials = true);

  std::string version_;
  jira::Flavor flavor_ = jira::Flavor::kDataCenter;
  std::vector<std::string> patterns_ = {"svc-*", "*-bot-*", "system:sys-*"};
  std::string pat_;
};

// The warning codes of an output.
std::set<std::string> WarningCodes(const Json::Value& output);

}  // namespace cakewalk::testing
