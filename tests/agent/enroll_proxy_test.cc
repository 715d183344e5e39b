// Enrollment, mutual TLS and doctor through a real HTTP CONNECT proxy (tinyproxy on 127.0.0.1),
// with the proxy password taken from the token.
#include <stdlib.h>

#include "agent/checks.h"
#include "tests/agent/identity_fixture.h"
#include "tests/support/canary.h"
#include "tests/support/tinyproxy.h"

namespace cakewalk::agent {
namespace {

using testing::FindCanaryIn;
using testing::FindCanaryInTree;
using ::testing::HasSubstr;
using testing::MakeCanary;

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() { ::unsetenv(name_); }

 private:
  const char* name_;
};

class ProxyEnrollTest : public IdentityTest {
 protected:
  void StartProxy(const std::string& user, const std::string& password,
                  std::vector<std::uint16_t> ports = {}) {
    if (ports.empty()) ports = {cp_->port()};
    proxy_ = std::make_unique<testing::TinyProxy>(
        proxy_dir_, testing::TinyProxy::Options{user, password, ports});
  }
  Config ProxiedConfig(bool with_user = true) {
    return MakeConfig([&](Json::Value& c) {
      c["control_plane"]["proxy"] = proxy_->url();
      if (with_user) c["control_plane"]["proxy_username"] = "agent";
    });
  }
  void StorePassword(const std::string& password) {
    auto stored = Token().secrets().Put(kControlPlaneConnection, kProxyPasswordSecret,
                                        SecretBytes::CopyOf(password));
    ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  }
  std::string HostPort() const { return "localhost:" + std::to_string(cp_->port()); }
  std::size_t IdentityKeys() {
    std::size_t n = 0;
    for (std::uint32_t i = 1; i <= 3; ++i) n += KeyExists(IdentityKeyLabel(i)) ? 1u : 0u;
    return n;
  }

  testing::TempDir proxy_dir_{"cakewalk-proxy"};
  std::unique_ptr<testing::TinyProxy> proxy_;
};

TEST_F(ProxyEnrollTest, EnrollmentAndMutualTlsThroughAnAuthenticatingProxy) {
  const std::string password = MakeCanary("proxy-password");
  cp_->fake().AddForbiddenValue(password);
  StartProxy("agent", password);
  StorePassword(password);
  config_ = ProxiedConfig();

  ::testing::internal::CaptureStderr();
  auto enrolled = EnrollNow();
  ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
  auto identity = OpenIdentity();
  ASSERT_NE(identity, nullptr);
  EXPECT_TRUE(CallWorks(*identity, config_));
  auto checks = ControlPlaneChecks(config_, &Token());
  const std::string err = ::testing::internal::GetCapturedStderr();

  // Both went through the tunnel.
  EXPECT_GE(proxy_->TunnelsToLocalhost(), 2) << proxy_->Log();
  EXPECT_GE(proxy_->ConnectRequests(HostPort()), 2);
  ASSERT_EQ(checks.size(), 5u);
  for (std::size_t i : {0u, 2u, 3u, 4u}) {
    EXPECT_EQ(checks[i].outcome, CheckResult::kOk) << FormatCheck(checks[i]);
  }
  // (The fake's 24-hour certificates are always "about to expire" for doctor.)
  EXPECT_NE(checks[1].outcome, CheckResult::kFail) << FormatCheck(checks[1]);
  EXPECT_THAT(checks[2].detail, HasSubstr("through proxy " + proxy_->url()));
  // The password was used through the token (audit-logged with its purpose)...
  bool audited = false;
  for (const auto& e : log_.WithId(event::kSecretUsed)) {
    audited |= e.Field("PURPOSE") == "proxy authentication to the control plane";
  }
  EXPECT_TRUE(audited) << log_.Text();
  // ... and appears nowhere: not in the control plane's requests, output, log, files.
  EXPECT_TRUE(cp_->fake().Violations().empty());
  std::vector<std::string> hits;
  for (const auto& [where, text] : std::vector<std::pair<std::string, std::string>>{
           {"output", out_.str()}, {"stderr", err}, {"log", log_.Text()}}) {
    auto h = FindCanaryIn(password, text, where);
    hits.insert(hits.end(), h.begin(), h.end());
  }
  for (const auto& c : checks) {
    auto h = FindCanaryIn(password, FormatCheck(c), "check");
    hits.insert(hits.end(), h.begin(), h.end());
  }
  for (const auto& dir : {config_.state_dir, hsm_->token_dir()}) {
    auto h = FindCanaryInTree(password, dir);
    hits.insert(hits.end(), h.begin(), h.end());
  }
  EXPECT_TRUE(hits.empty()) << ::testing::PrintToString(hits);
}

TEST_F(ProxyEnrollTest, AMissingPasswordSaysHowToStoreIt) {
  StartProxy("agent", "secret");
  config_ = ProxiedConfig();
  auto enrolled = EnrollNow();
  ASSERT_FALSE(enrolled.ok());
  EXPECT_EQ(enrolled.status().code(), Code::kFailedPrecondition);
  EXPECT_THAT(enrolled.status().message(),
              HasSubstr("control_plane.proxy_username is set but the token holds no "
                        "'proxy-password' secret for connection 'control-plane'"));
  EXPECT_THAT(enrolled.status().message(),
              HasSubstr("cakewalk-agent secret set control-plane proxy-password"));
  EXPECT_EQ(IdentityKeys(), 0u);
  EXPECT_EQ(proxy_->ConnectRequests(HostPort()), 0);

  auto checks = ControlPlaneChecks(config_, &Token());
  EXPECT_EQ(checks[2].outcome, CheckResult::kFail);
  EXPECT_THAT(checks[2].detail,
              HasSubstr("cakewalk-agent secret set control-plane proxy-password"));
}

TEST_F(ProxyEnrollTest, NoProxyUserGets407) {
  StartProxy("agent", "secret");
  config_ = ProxiedConfig(/*with_user=*/false);
  auto enrolled = EnrollNow();
  ASSERT_FALSE(enrolled.ok());
  EXPECT_EQ(enrolled.status().reason(), http::reason::kProxyAuthFailed);
  EXPECT_THAT(enrolled.status().message(),
              HasSubstr("enrollment failed: the proxy refused the agent's credentials"));
  EXPECT_THAT(enrolled.status().message(), HasSubstr("answered 407"));
  EXPECT_EQ(IdentityKeys(), 0u);
  EXPECT_TRUE(cp_->fake().Requests().empty());

  auto checks = ControlPlaneChecks(config_, &Token());
  EXPECT_EQ(checks[2].outcome, CheckResult::kFail);
  EXPECT_THAT(checks[2].detail, HasSubstr("the proxy refused the agent's credentials"));
  EXPECT_THAT(checks[2].detail, HasSubstr("407"));
  EXPECT_EQ(checks[3].outcome, CheckResult::kWarn);
}

TEST_F(ProxyEnrollTest, AWrongPasswordGetsTinyproxys401) {
  const std::string wrong = MakeCanary("wrong-proxy-password");
  StartProxy("agent", "the-right-one");
  StorePassword(wrong);
  config_ = ProxiedConfig();
  auto enrolled = EnrollNow();
  ASSERT_FALSE(enrolled.ok());
  EXPECT_EQ(enrolled.status().reason(), http::reason::kProxyAuthFailed);
  EXPECT_THAT(enrolled.status().message(), HasSubstr("answered 401"));
  EXPECT_THAT(enrolled.status().message(), HasSubstr("refused the credentials for user 'agent'"));
  EXPECT_TRUE(FindCanaryIn(wrong, enrolled.status().ToString(), "status").empty());
  EXPECT_EQ(IdentityKeys(), 0u);
}

TEST_F(ProxyEnrollTest, AProxyThatCannotReachTheControlPlaneIsAProxyError) {
  StartProxy("", "", {cp_->port(), 1});
  auto enrolled = EnrollNow();  // direct, to have an identity
  ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
  // The proxy may not tunnel to this port at all.
  testing::TinyProxy strict(proxy_dir_, {"", "", {1}});
  Config config = MakeConfig([&](Json::Value& c) { c["control_plane"]["proxy"] = strict.url(); });
  auto checks = ControlPlaneChecks(config, &Token());
  EXPECT_EQ(checks[2].outcome, CheckResult::kFail);
  EXPECT_THAT(checks[2].detail,
              HasSubstr("the proxy could not open a tunnel to the control plane"));
  EXPECT_THAT(checks[2].detail, HasSubstr("CONNECT answered 403"));
}

TEST_F(ProxyEnrollTest, NoProxyFromTheEnvironmentBypassesTheProxy) {
  StartProxy("", "");
  ConfigEnvironment env;
  env.vars["https_proxy"] = proxy_->url();
  env.vars["no_proxy"] = "localhost";
  config_ = MakeConfig(nullptr, env);
  ASSERT_TRUE(config_.control_plane.proxy.has_value());
  EXPECT_EQ(config_.control_plane.no_proxy, "localhost");
  auto enrolled = EnrollNow();
  ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
  auto identity = OpenIdentity();
  ASSERT_NE(identity, nullptr);
  EXPECT_TRUE(CallWorks(*identity, config_));
  EXPECT_EQ(proxy_->ConnectRequests(HostPort()), 0) << proxy_->Log();
  EXPECT_EQ(proxy_->TunnelsToLocalhost(), 0);

  // Without the exception the same environment tunnels.
  env.vars.erase("no_proxy");
  Config tunnelled = MakeConfig(nullptr, env);
  EXPECT_TRUE(CallWorks(*identity, tunnelled));
  EXPECT_EQ(proxy_->TunnelsToLocalhost(), 1) << proxy_->Log();
}

TEST_F(ProxyEnrollTest, ProcessProxyVariablesNeverOverrideTheConfiguration) {
  // NO_PROXY would make libcurl skip a configured proxy if it read the environment itself.
  const std::string password = MakeCanary("proxy-password");
  StartProxy("agent", password);
  StorePassword(password);
  ScopedEnv a("NO_PROXY", "localhost,127.0.0.1");
  ScopedEnv b("no_proxy", "*");
  config_ = ProxiedConfig();
  auto enrolled = EnrollNow();
  ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
  EXPECT_EQ(proxy_->TunnelsToLocalhost(), 1) << proxy_->Log();
}

}  // namespace
}  // namespace cakewalk::agent
