// The Jira connector under fuzzing: a jira::Connection (Data Center or Cloud, the agent's usual
// auth choices) over a given Transport, with canary credentials in memory, a clock that only
// sleeps move, and the job functions of jira/jobs.h and jira/health.h by name, and the access
// sync (jira/access_sync.h) with one fetch at a time and a scratch folder of its own.
//
// Properties every run checks (CheckJobOutcome / CheckRequests):
//   - a failed job carries one of the jobs.md error codes (jira/errors.h);
//   - a succeeded job's output has exactly the documented fields (docs/protocol.md §12);
//   - no output, error message or health line contains a credential from the token;
//   - every request went to a configured base URL: nothing in an answer or in params selects a
//     host;
//   - access sync (CheckSyncRecords): every record is a JSON object in canonical form with the
//     documented fields of its kind, no user twice; a succeeded sync's counts, records, pages and
//     sha256 are those of the records the sink received; a failure never comes from an exception
//     a fetch task threw (the pool turns one into "internal"), and one escaping the sync aborts.
#pragma once

#include <json/json.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "jira/connection.h"
#include "tests/fuzz/fuzz_support.h"

namespace cakewalk::fuzz {

// A Transport wrapper that records every request URL (and refuses to send anything that is
// not https://, as the real one does).
class UrlRecorder final : public http::Transport {
 public:
  explicit UrlRecorder(std::shared_ptr<http::Transport> inner) : inner_(std::move(inner)) {}
  Result<http::Response> Send(const http::Request& request) override;
  std::optional<std::chrono::seconds> LastClockSkew() const override {
    return inner_->LastClockSkew();
  }
  void ResetConnections() override { inner_->ResetConnections(); }
  std::vector<std::string> urls() const;

 private:
  std::shared_ptr<http::Transport> inner_;
  mutable std::mutex mu_;
  std::vector<std::string> urls_;
};

struct JiraScenario {
  std::string_view name;  // "dc.provision"
  jira::Flavor flavor;
  bool oauth_sync;  // access sync over OAuth 2.0 (else PAT on DC, API token on Cloud)
  // verify, provision, deprovision, add_member, remove_member, health, access_sync
  std::string_view job;
  std::string_view params;  // JSON
};

// Every scenario the response fuzzer knows.
const std::vector<JiraScenario>& JiraScenarios();
// The scenario named `name`, else one chosen by `fallback` (an input hash).
const JiraScenario& FindScenario(std::string_view name, std::size_t fallback);

// The canary credentials planted in the memory token.
const std::vector<std::string>& JiraCanaries();

class JiraHarness {
 public:
  // The fuzzers' connection: Data Center with password + TOTP (access sync: PAT, or OAuth 2.0),
  // Cloud with e-mail + API token and the organization key (access sync: API token, or OAuth 2.0
  // through the gateway).
  static jira::ConnectionSettings DefaultSettings(jira::Flavor flavor, bool oauth_sync);

  // `transport` answers everything the connection sends; `clock` (optional, else the harness's
  // own) is what the connection and its sleeper use. Canary credentials are planted.
  JiraHarness(jira::ConnectionSettings settings, std::shared_ptr<http::Transport> transport,
              FuzzClock* clock = nullptr);
  JiraHarness(jira::Flavor flavor, bool oauth_sync, std::shared_ptr<http::Transport> transport)
      : JiraHarness(DefaultSettings(flavor, oauth_sync), std::move(transport)) {}

  MemoryCredentials& credentials() { return credentials_; }

  Result<jira::Connection*> connection();
  // Runs `job` with `params`; health returns its lines as a JSON array, access_sync its output
  // (the records it wrote are then in sync_records()).
  Result<Json::Value> Run(std::string_view job, const Json::Value& params);
  // The record texts the last access sync handed its sink, in order, and the pages it was told.
  const std::vector<std::string>& sync_records() const { return sync_records_; }
  std::int64_t sync_pages() const { return sync_pages_; }
  // The configured base URLs every request must start with.
  std::vector<std::string> configured_bases() const;
  const UrlRecorder& recorder() const { return *recorder_; }

 private:
  void Reopen();

  jira::ConnectionSettings settings_;
  FuzzClock own_clock_;
  FuzzClock& clock_;
  FuzzSleeper sleeper_{clock_};
  MemoryCredentials credentials_;
  std::shared_ptr<UrlRecorder> recorder_;
  Result<std::unique_ptr<jira::Connection>> connection_;
  std::vector<std::string> sync_records_;
  std::int64_t sync_pages_ = 0;
};

// The property checks above. `job` as for Run; `input` is the fuzz input: a canary the input
// itself holds (libFuzzer learns strings from comparisons, the canary search included) may
// legitimately come back in Jira's words or a quoted parameter, so it is not looked for.
void CheckJobOutcome(std::string_view job, const Result<Json::Value>& outcome,
                     std::string_view input);
void CheckRequests(const JiraHarness& harness);
// The access sync's records against `outcome` (its output when it succeeded).
void CheckSyncRecords(const JiraHarness& harness, const Result<Json::Value>& outcome,
                      std::string_view input);

}  // namespace cakewalk::fuzz
