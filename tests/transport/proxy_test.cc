// CurlTransport through a real HTTP CONNECT proxy: tinyproxy, started by the test on 127.0.0.1
// with a config in a temp folder (tests/support/tinyproxy.h).
#include <gtest/gtest.h>
#include <stdlib.h>

#include "jira/curl_transport.h"
#include "tests/support/canary.h"
#include "tests/support/tinyproxy.h"
#include "tests/transport/tls_env.h"

namespace cakewalk::testing {
namespace {

namespace reason = http::reason;
using namespace std::chrono_literals;

HttpResponse Ok(std::string body) {
  HttpResponse r;
  r.body = std::move(body);
  return r;
}

class ProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = FakeHttpsServer::Start(env_.ServerOpts(),
                                     [](const HttpRequest& req) { return Ok("hi " + req.path); });
    host_port_ = "localhost:" + std::to_string(server_->port());
  }
  void StartProxy(const std::string& user, const std::string& password,
                  std::vector<std::uint16_t> ports = {}) {
    if (ports.empty()) ports = {server_->port()};
    proxy_ = std::make_unique<TinyProxy>(env_.dir, TinyProxy::Options{user, password, ports});
  }
  http::TransportOptions ProxyOpts() const {
    auto o = env_.TransportOpts();
    o.proxy_url = proxy_->url();
    return o;
  }

  TlsEnv env_;
  std::unique_ptr<FakeHttpsServer> server_;
  std::unique_ptr<TinyProxy> proxy_;
  std::string host_port_;
};

TEST_F(ProxyTest, BasicAuthThroughTheTunnelAndThePasswordLeaksNowhere) {
  const std::string password = MakeCanary("proxy");
  StartProxy("agent", password);
  auto opts = ProxyOpts();
  opts.proxy_username = "agent";
  opts.proxy_password = SecretBytes::CopyOf(password);
  ::testing::internal::CaptureStderr();
  ::testing::internal::CaptureStdout();
  auto t = MustCreate(std::move(opts));
  auto resp = t->Send(Get(server_->base_url() + "/through"));
  auto again = t->Send(Get(server_->base_url() + "/again"));
  const std::string out = ::testing::internal::GetCapturedStdout();
  const std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(resp->body, "hi /through");
  EXPECT_EQ(proxy_->TunnelsToLocalhost(), 1) << "one tunnel, kept alive\n" << proxy_->Log();
  EXPECT_GE(proxy_->ConnectRequests(host_port_), 1);
  EXPECT_EQ(server_->connections_accepted(), 1u);
  // The tunnel is opaque: the origin never sees proxy credentials.
  EXPECT_EQ(server_->requests()[0].Header("proxy-authorization"), "");

  std::vector<std::string> hits;
  for (const auto& [what, text] :
       std::vector<std::pair<std::string, std::string>>{{"stdout", out}, {"stderr", err}}) {
    auto h = FindCanaryIn(password, text, what);
    hits.insert(hits.end(), h.begin(), h.end());
  }
  for (const auto& r : {&resp, &again}) {
    auto h = FindCanaryIn(password, (*r)->body, "body");
    hits.insert(hits.end(), h.begin(), h.end());
    for (const auto& hd : (*r)->headers) {
      auto hh = FindCanaryIn(password, hd.value, "header " + hd.name);
      hits.insert(hits.end(), hh.begin(), hh.end());
    }
  }
  EXPECT_TRUE(hits.empty()) << ::testing::PrintToString(hits);
}

TEST_F(ProxyTest, MissingCredentialsGet407) {
  StartProxy("agent", "secret");
  auto t = MustCreate(ProxyOpts());
  auto resp = t->Send(Get(server_->base_url() + "/"));
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().reason(), reason::kProxyAuthFailed) << resp.status().ToString();
  EXPECT_NE(resp.status().message().find("407"), std::string::npos);
  EXPECT_NE(resp.status().message().find("no proxy user is configured"), std::string::npos);
  EXPECT_TRUE(server_->requests().empty());
}

TEST_F(ProxyTest, WrongPasswordGetsTinyproxys401AndIsProxyAuthFailed) {
  const std::string wrong = MakeCanary("wrong-proxy-password");
  StartProxy("agent", "the-right-one");
  auto opts = ProxyOpts();
  opts.proxy_username = "agent";
  opts.proxy_password = SecretBytes::CopyOf(wrong);
  auto t = MustCreate(std::move(opts));
  auto resp = t->Send(Get(server_->base_url() + "/"));
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().reason(), reason::kProxyAuthFailed) << resp.status().ToString();
  EXPECT_NE(resp.status().message().find("401"), std::string::npos);
  EXPECT_NE(resp.status().message().find("refused the credentials for user 'agent'"),
            std::string::npos);
  EXPECT_TRUE(FindCanaryIn(wrong, resp.status().ToString(), "status").empty());
  EXPECT_TRUE(server_->requests().empty());
}

TEST_F(ProxyTest, ConnectToAPortThatIsNotAllowedIsAProxyError) {
  StartProxy("", "", {1});  // only port 1 may be tunnelled to
  auto t = MustCreate(ProxyOpts());
  auto resp = t->Send(Get(server_->base_url() + "/"));
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().reason(), reason::kProxyError) << resp.status().ToString();
  EXPECT_NE(resp.status().message().find("403"), std::string::npos);
  EXPECT_NE(proxy_->Log().find("Refused CONNECT method on port " + std::to_string(server_->port())),
            std::string::npos);
  EXPECT_EQ(server_->connections_accepted(), 0u);
}

TEST_F(ProxyTest, UnreachableProxyIsAProxyError) {
  auto opts = env_.TransportOpts();
  opts.proxy_url = "http://127.0.0.1:" + std::to_string(PickFreePort());
  auto t = MustCreate(std::move(opts));
  auto resp = t->Send(Get(server_->base_url() + "/"));
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().reason(), reason::kProxyError) << resp.status().ToString();
  EXPECT_NE(resp.status().message().find("cannot connect to the proxy"), std::string::npos);
  EXPECT_NE(resp.status().message().find("control_plane.proxy"), std::string::npos);
}

TEST_F(ProxyTest, NoProxyBypassesTheProxy) {
  StartProxy("", "");
  auto opts = ProxyOpts();
  opts.no_proxy = "localhost";
  auto t = MustCreate(std::move(opts));
  auto resp = t->Send(Get(server_->base_url() + "/direct"));
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(proxy_->ConnectRequests(host_port_), 0) << proxy_->Log();
  EXPECT_EQ(proxy_->TunnelsToLocalhost(), 0);
  EXPECT_EQ(server_->connections_accepted(), 1u);

  // Same proxy without the exception: the request is tunnelled.
  auto tunnelled = MustCreate(ProxyOpts());
  ASSERT_TRUE(tunnelled->Send(Get(server_->base_url() + "/via")).ok());
  EXPECT_EQ(proxy_->ConnectRequests(host_port_), 1) << proxy_->Log();
  EXPECT_EQ(proxy_->TunnelsToLocalhost(), 1);
}

// The environment must not override an explicitly configured transport, in either direction.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() { unsetenv(name_); }

 private:
  const char* name_;
};

TEST_F(ProxyTest, ProxyEnvironmentVariablesAreIgnored) {
  StartProxy("", "");
  // NO_PROXY would make libcurl skip an explicitly set CURLOPT_PROXY if it read it.
  ScopedEnv a("NO_PROXY", "localhost,127.0.0.1");
  ScopedEnv b("no_proxy", "*");
  auto t = MustCreate(ProxyOpts());
  auto resp = t->Send(Get(server_->base_url() + "/must-tunnel"));
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(proxy_->TunnelsToLocalhost(), 1) << proxy_->Log();

  // And https_proxy must not add a proxy to a transport configured without one.
  ScopedEnv c("https_proxy", "http://127.0.0.1:" + std::to_string(PickFreePort()));
  ScopedEnv d("HTTPS_PROXY", "http://127.0.0.1:" + std::to_string(PickFreePort()));
  ScopedEnv e("ALL_PROXY", "http://127.0.0.1:" + std::to_string(PickFreePort()));
  auto direct = MustCreate(env_.TransportOpts());
  auto direct_resp = direct->Send(Get(server_->base_url() + "/direct"));
  ASSERT_TRUE(direct_resp.ok()) << direct_resp.status().ToString();
  EXPECT_EQ(proxy_->TunnelsToLocalhost(), 1);
  EXPECT_EQ(server_->connections_accepted(), 2u);
}

TEST_F(ProxyTest, MutualTlsThroughTheProxy) {
  server_.reset();
  ServerOptions o = env_.ServerOpts();
  o.client_certs = ServerOptions::ClientCerts::kRequire;
  o.client_ca_pem = env_.ca->cert_pem();
  server_ = FakeHttpsServer::Start(
      o, [](const HttpRequest& req) { return Ok(req.client_cert_subject.value_or("none")); });
  host_port_ = "localhost:" + std::to_string(server_->port());
  StartProxy("agent", "pw");
  auto opts = ProxyOpts();
  opts.proxy_username = "agent";
  opts.proxy_password = SecretBytes::CopyOf(std::string_view("pw"));
  opts.client_identity = SoftwareIdentity(env_.ClientIdentity("agt_proxy"));
  auto resp = MustCreate(std::move(opts))->Send(Get(server_->base_url() + "/jobs"));
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->body, "CN=agt_proxy");
  EXPECT_EQ(proxy_->TunnelsToLocalhost(), 1);
}

}  // namespace
}  // namespace cakewalk::testing
