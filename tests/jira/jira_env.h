// The test bench for the Jira connector: a FakeJira served over real TLS (FakeHttpsServer with a
// run-time test CA that the connector trusts through ca_file), a private SoftHSM token holding
// the connection's secrets (canary values), and one FakeClock shared by the fake and the
// connector, with a Sleeper that advances it, so that TOTP steps, Retry-After waits and session
// expiry take no real time.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "hsm/module.h"
#include "hsm/secret_store.h"
#include "hsm/token.h"
#include "jira/connection.h"
#include "jira/credentials.h"
#include "tests/fakes/https_server.h"
#include "tests/fakes/jira/fake_jira.h"
#include "tests/fakes/jira/served_jira.h"
#include "tests/support/capture_log.h"
#include "tests/support/fake_clock.h"
#include "tests/support/pki.h"
#include "tests/support/softhsm.h"
#include "tests/support/temp_dir.h"

namespace cakewalk::testing {

inline constexpr char kConn[] = "jira-test";
inline constexpr char kDcAdmin[] = "svc-cakewalk";
inline constexpr char kCloudAdmin[] = "admin@corp.example";

// Advances the shared FakeClock instead of waiting; records every wait.
class FakeSleeper final : public jira::Sleeper {
 public:
  explicit FakeSleeper(FakeClock& clock) : clock_(clock) {}
  Status Sleep(std::chrono::milliseconds duration, std::stop_token stop) override;
  std::vector<std::chrono::milliseconds> sleeps() const;
  std::chrono::milliseconds total() const;
  // Requests `stop_source` stop on the next Sleep (to test interruption).
  void StopOnNextSleep(std::stop_source* source) { stop_next_ = source; }

 private:
  FakeClock& clock_;
  mutable std::mutex mu_;
  std::vector<std::chrono::milliseconds> sleeps_;
  std::stop_source* stop_next_ = nullptr;
};

// Counts uses per secret name (and TOTP computations), forwarding to real token credentials.
class CountingCredentials final : public jira::Credentials {
 public:
  explicit CountingCredentials(std::unique_ptr<jira::Credentials> inner)
      : inner_(std::move(inner)) {}
  const std::string& connection() const override { return inner_->connection(); }
  Result<SecretBytes> Get(std::string_view name, std::string_view purpose) override;
  Result<hsm::TotpCode> Totp(std::uint32_t version, hsm::TotpTime at,
                             std::string_view purpose) override;
  Result<std::vector<jira::SecretVersion>> Versions(std::string_view name) override {
    return inner_->Versions(name);
  }
  Status Put(std::string_view name, const SecretBytes& value) override;
  Status Promote(std::string_view name, std::uint32_t version) override {
    return inner_->Promote(name, version);
  }
  Result<SecretBytes> Random(std::size_t size) override { return inner_->Random(size); }

  int gets(std::string_view name) const;
  int puts(std::string_view name) const;
  int totps() const;
  // Every purpose string given (the audit trail).
  std::vector<std::string> purposes() const;
  // Makes the next Put of `name` fail (token trouble at the worst moment).
  void FailNextPut(std::string name) { fail_put_ = std::move(name); }

 private:
  std::unique_ptr<jira::Credentials> inner_;
  mutable std::mutex mu_;
  std::map<std::string, int, std::less<>> gets_, puts_;
  int totps_ = 0;
  std::vector<std::string> purposes_;
  std::string fail_put_;
};

struct LoggedRequest {
  SysTime at;  // the shared fake clock when the request arrived
  HttpRequest request;
};

// The fake's clock: the fixture's clock shifted by an offset (clock-skew scenarios).
class ShiftedClock final : public Clock {
 public:
  explicit ShiftedClock(const Clock& base) : base_(base) {}
  std::chrono::system_clock::time_point Now() const override {
    return base_.Now() + std::chrono::seconds(offset_.load());
  }
  std::chrono::steady_clock::time_point Steady() const override {
    return base_.Steady() + std::chrono::seconds(offset_.load());
  }
  void set_offset(std::chrono::seconds offset) { offset_ = offset.count(); }

 private:
  const Clock& base_;
  std::atomic<long long> offset_{0};
};

class JiraFixture : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Starts the fake (its clock is jira_clock_, the fixture's unless shifted) behind TLS.
  void StartJira(FakeJiraOptions options);
  // The provisioning admin with a password (and a TOTP seed when `totp`), secrets in the token.
  void SeedDcAdmin(bool totp);
  // The Cloud admin with an API token and an organization key in the token.
  void SeedCloudAdmin();
  // Another user; returns its id (DC key / Cloud accountId).
  std::string AddUser(const std::string& username, const std::string& email,
                      std::vector<std::string> groups = {}, bool active = true);

  // Settings for the running fake (provisioning configured per flavor; no access sync).
  jira::ConnectionSettings DcSettings(bool totp) const;
  jira::ConnectionSettings CloudSettings() const;
  // Opens a connection with the fixture's clock, sleeper and credentials.
  std::unique_ptr<jira::Connection> Open(jira::ConnectionSettings settings,
                                         jira::OAuthHooks hooks = {});

  // Requests the fake received, with the fake clock's time of arrival.
  std::vector<LoggedRequest> Requests() const;
  std::vector<LoggedRequest> RequestsTo(std::string_view path_part) const;
  void ClearRequests();
  // Every mutation kind + subject + object, for idempotency checks.
  std::vector<std::string> MutationLines() const;

  // Stores a secret for the connection in the token.
  void PutSecret(std::string_view name, std::string_view value);

  TempDir dir_{"cakewalk-jira-test"};
  FakeClock clock_;
  ShiftedClock jira_clock_{clock_};  // the fake's
  FakeSleeper sleeper_{clock_};
  CapturingLogSink audit_;
  std::filesystem::path ca_file_;  // the served fake's CA (written by StartJira)
  std::filesystem::path state_dir_;
  std::unique_ptr<SoftHsm> softhsm_;
  std::unique_ptr<hsm::Module> module_;
  std::unique_ptr<hsm::Token> token_;
  std::unique_ptr<hsm::SecretStore> store_;
  std::unique_ptr<CountingCredentials> credentials_;

  std::unique_ptr<ServedJira> served_;
  FakeJira* jira_ = nullptr;  // served_'s fake and server, once StartJira ran
  FakeHttpsServer* server_ = nullptr;
  std::string base_url_;

  // Canary secrets (tests/support/canary.h), planted in the token and the fake.
  std::string password_;
  std::vector<std::uint8_t> totp_seed_;
  std::string api_token_;
  std::string org_key_;

 private:
  mutable std::mutex log_mu_;
  std::vector<LoggedRequest> log_;
};

// The job output's field as a string (for short assertions).
std::string Str(const Json::Value& v, const char* key);
std::vector<std::string> Strings(const Json::Value& array);

}  // namespace cakewalk::testing
