// Shared set-up for the identity tests: a private SoftHSM token, the fake control plane over
// HTTPS, a configuration pointing at both (state directory in a temp folder), and helpers to
// enroll, open the identity and probe the token.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <functional>
#include <memory>
#include <sstream>
#include <string>

#include "agent/config.h"
#include "agent/cp_transport.h"
#include "agent/enroll.h"
#include "agent/identity.h"
#include "agent/token_context.h"
#include "base/encoding.h"
#include "base/json.h"
#include "hsm/key_pair.h"
#include "tests/fakes/control_plane/running_control_plane.h"
#include "tests/support/capture_log.h"
#include "tests/support/softhsm.h"
#include "tests/support/temp_dir.h"

namespace cakewalk::agent {

class IdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto h = testing::SoftHsm::Create("cakewalk-agent");
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    hsm_ = std::move(*h);
    ASSERT_NO_FATAL_FAILURE(StartControlPlane({}));
    config_ = MakeConfig();
  }

  void TearDown() override {
    token_.reset();
    cp_.reset();
  }

  void StartControlPlane(testing::RunningControlPlaneOptions options) {
    cp_.reset();
    auto cp = testing::RunningControlPlane::Start(std::move(options));
    ASSERT_TRUE(cp.ok()) << cp.status().ToString();
    cp_ = std::move(*cp);
    testing::WriteFile(dir_ / "cp-ca.pem", cp_->server_ca_pem());
  }

  // The configuration as JSON, for tests to edit before parsing.
  Json::Value ConfigJson() const {
    Json::Value c(Json::objectValue);
    c["state_dir"] = (dir_ / "state").string();
    c["control_plane"]["url"] = cp_->base_url();
    c["control_plane"]["ca_file"] = (dir_ / "cp-ca.pem").string();
    c["control_plane"]["connect_timeout_seconds"] = 5;
    c["control_plane"]["request_timeout_seconds"] = 20;
    c["token"]["module"] = testing::SoftHsm::kModulePath;
    c["token"]["uri"] = hsm_->token().uri;
    c["token"]["pin_file"] = hsm_->token().pin_file.string();
    Json::Value conn(Json::objectValue);
    conn["name"] = "jira-prod";
    conn["type"] = "jira-datacenter";
    conn["base_url"] = "https://jira.corp.example";
    conn["provisioning"]["auth"] = "password";
    conn["provisioning"]["username"] = "svc-cakewalk";
    c["connections"].append(conn);
    return c;
  }

  Result<Config> ParseConfigJson(const Json::Value& json, const ConfigEnvironment& env = {}) {
    return ParseConfig(WriteJson(json), dir_ / "agent.json", env);
  }

  Config MakeConfig(const std::function<void(Json::Value&)>& edit = nullptr,
                    const ConfigEnvironment& env = {}) {
    Json::Value json = ConfigJson();
    if (edit) edit(json);
    auto c = ParseConfigJson(json, env);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(c).value() : Config{};
  }

  TokenContext& Token() {
    if (token_ == nullptr) {
      auto t = TokenContext::Open(config_, log_);
      EXPECT_TRUE(t.ok()) << t.status().ToString();
      if (t.ok()) token_ = std::move(t).value();
    }
    return *token_;
  }
  void CloseToken() { token_.reset(); }

  // A one-time token registered with the fake, written to a 0600 file.
  std::string NewTokenFile(const std::string& name = "enroll-token") {
    const std::string token = cp_->fake().NewEnrollmentToken();
    testing::WriteFile(dir_ / name, token + "\n");
    return (dir_ / name).string();
  }

  Result<EnrollOutcome> EnrollWith(const Config& config, const std::string& enrollment_token,
                                   bool force = false) {
    EnrollOptions options;
    options.token_file = "unused";
    options.force = force;
    options.hostname = "agent-host";
    return Enroll(config, Token(), SecretBytes::CopyOf(enrollment_token), options, out_, log_);
  }
  Result<EnrollOutcome> EnrollNow(bool force = false) {
    return EnrollWith(config_, cp_->fake().NewEnrollmentToken(), force);
  }

  std::unique_ptr<Identity> OpenIdentity(Identity::Mode mode = Identity::Mode::kRecover) {
    auto id = Identity::Open(config_.state_dir, Token().token(), log_, SystemClock(), mode);
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    return id.ok() ? std::move(id).value() : nullptr;
  }

  // An authenticated call with the identity in use; returns the fake's record of it.
  ::testing::AssertionResult CallWorks(const Identity& identity, const Config& config) {
    const ClientIdentity ci = identity.client_identity();
    auto client = MakeControlPlaneClient(config, &Token().secrets(), &ci);
    if (!client.ok()) return ::testing::AssertionFailure() << client.status().ToString();
    auto keys = (*client)->SigningKeys();
    if (!keys.ok()) return ::testing::AssertionFailure() << keys.status().ToString();
    auto requests = cp_->fake().Requests();
    if (requests.empty() || requests.back().agent_id != identity.agent_id()) {
      return ::testing::AssertionFailure() << "the fake did not see the agent's certificate";
    }
    if (requests.back().client_key_sha256 != SpkiSha256Hex(*identity.key())) {
      return ::testing::AssertionFailure() << "the call did not use the identity's key";
    }
    return ::testing::AssertionSuccess();
  }

  static std::string SpkiSha256Hex(const hsm::TokenKey& key) {
    std::uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256(key.public_key_der().data(), key.public_key_der().size(), digest);
    return HexEncode(digest);
  }

  bool KeyExists(const std::string& label) {
    auto k = hsm::KeyPair::Find(Token().token(), label);
    return k.ok();
  }

  testing::TempDir dir_{"cakewalk-identity"};
  std::unique_ptr<testing::SoftHsm> hsm_;
  std::unique_ptr<testing::RunningControlPlane> cp_;
  Config config_;
  testing::CapturingLogSink log_;
  std::ostringstream out_;
  std::unique_ptr<TokenContext> token_;
};

}  // namespace cakewalk::agent
