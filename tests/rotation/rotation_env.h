// The bench for the rotation engine, in process: a private SoftHSM token, a FakeJira (Data
// Center 10.3 by default) served over TLS by a run-time test CA, one FakeClock shared by the fake
// and the connector (with a Sleeper that advances it, so TOTP steps take no real time), the
// agent's configuration for one connection, the shared Jira connections and a SecretRotator.
// Every request the fake receives is logged, and a test may answer some of them itself.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "agent/config.h"
#include "agent/jira_connection.h"
#include "agent/rotation.h"
#include "hsm/module.h"
#include "hsm/secret_store.h"
#include "hsm/token.h"
#include "tests/fakes/https_server.h"
#include "tests/fakes/jira/fake_jira.h"
#include "tests/fakes/jira/served_jira.h"
#include "tests/jira/jira_env.h"
#include "tests/support/capture_log.h"
#include "tests/support/fake_clock.h"
#include "tests/support/pki.h"
#include "tests/support/softhsm.h"
#include "tests/support/temp_dir.h"

namespace cakewalk::testing {

inline constexpr char kRotConn[] = "jira-prod";
inline constexpr char kRotAdmin[] = "svc-cakewalk";

class RotationFixture : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // The fake (its clock is the fixture's) behind TLS, with the admin `svc-cakewalk` whose
  // password (a canary) is stored in the token; `totp`: enrolled in two-step verification with a
  // seed stored in the token too.
  void StartJira(bool totp, FakeJiraOptions options = {},
                 std::string directory = "Jira Internal Directory");
  // The agent configuration (one connection to the fake; `cloud` makes it a Cloud connection),
  // the shared Jira connections and the rotator.
  void Configure(bool totp, bool cloud = false,
                 std::function<void(agent::Config&)> tweak = nullptr);

  // The current value of the password in the token.
  std::string CurrentPassword();
  std::string PasswordVersionValue(std::uint32_t version);
  // version -> state of a secret of the connection.
  std::map<std::uint32_t, hsm::SecretState> Versions(const std::string& name = "password");
  // Jira's password changes so far (mutation log).
  int PasswordChanges() const;
  // The admin's password logins, in order ("ok", "bad_credentials", "captcha", ...).
  std::vector<std::string> PasswordLogins() const;
  // Requests the fake received, in order.
  std::vector<HttpRequest> Requests() const;
  // Answers requests for which `fn` returns a response, instead of the fake.
  void Override(std::function<std::optional<HttpResponse>(const HttpRequest&)> fn);
  // The rotation record's path and a hand-written record (the format of agent/rotation.cc).
  std::filesystem::path RecordPath() const;
  void WriteRecord(const std::string& step, std::uint32_t from, std::uint32_t to);
  // ROTATION_STEP of every kSecretRotation audit event, in order.
  std::vector<std::string> RotationSteps() const;

  TempDir dir_{"cakewalk-rotation-test"};
  FakeClock clock_;
  FakeSleeper sleeper_{clock_};
  CapturingLogSink audit_;
  std::unique_ptr<SoftHsm> softhsm_;
  std::unique_ptr<hsm::Module> module_;
  std::unique_ptr<hsm::Token> token_;
  std::unique_ptr<hsm::SecretStore> store_;
  std::filesystem::path ca_file_;  // the served fake's CA (written by StartJira)
  std::filesystem::path state_dir_;
  std::unique_ptr<ServedJira> served_;
  FakeJira* jira_ = nullptr;  // served_'s fake, once StartJira ran
  std::string base_url_;
  std::string password_;  // canary: the password Jira and the token start with
  std::vector<std::uint8_t> totp_seed_;

  std::shared_ptr<const agent::Config> config_;
  std::unique_ptr<agent::JiraConnections> connections_;
  std::unique_ptr<agent::SecretRotator> rotator_;

 private:
  mutable std::mutex mu_;
  std::function<std::optional<HttpResponse>(const HttpRequest&)> override_;
};

}  // namespace cakewalk::testing
