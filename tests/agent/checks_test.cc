// doctor's control-plane checks against the fake control plane and a private SoftHSM token:
// the OK path, not enrolled, unreachable, timeouts, TLS failures, certificate expiry and a refused
// identity — one line each.
#include "agent/checks.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/agent/identity_fixture.h"
#include "tests/support/fake_clock.h"
#include "tests/support/pki.h"
#include "tests/support/tinyproxy.h"

namespace cakewalk::agent {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using namespace std::chrono_literals;

const std::vector<std::string> kNames = {"enrollment", "agent certificate",
                                         "control plane reachable", "control plane TLS",
                                         "agent identity accepted"};

std::string Dump(const std::vector<CheckResult>& checks) {
  std::string s;
  for (const auto& c : checks) s += FormatCheck(c) + "\n";
  return s;
}

class ChecksTest : public IdentityTest {
 protected:
  void SetUp() override {
    IdentityTest::SetUp();
    // Certificates valid for 90 days, so that a fresh one is not "about to expire".
    testing::RunningControlPlaneOptions options;
    options.control_plane.certificate_lifetime = std::chrono::hours(24 * 90);
    ASSERT_NO_FATAL_FAILURE(StartControlPlane(options));
    config_ = MakeConfig();
  }
  void Enroll() {
    auto e = EnrollNow();
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    agent_id_ = e->agent_id;
  }
  std::vector<CheckResult> Run(const Config& config, const Clock& clock = SystemClock()) {
    auto checks = ControlPlaneChecks(config, &Token(), clock);
    EXPECT_EQ(checks.size(), kNames.size());
    for (std::size_t i = 0; i < checks.size() && i < kNames.size(); ++i) {
      EXPECT_EQ(checks[i].name, kNames[i]);
      EXPECT_EQ(checks[i].detail.find('\n'), std::string::npos);
    }
    return checks;
  }
  void Expect(const std::vector<CheckResult>& checks, std::size_t i, CheckResult::Outcome outcome,
              const std::string& fragment) {
    ASSERT_LT(i, checks.size());
    EXPECT_EQ(checks[i].outcome, outcome) << Dump(checks);
    EXPECT_THAT(checks[i].detail, HasSubstr(fragment)) << Dump(checks);
  }

  std::string agent_id_;
};

TEST_F(ChecksTest, EverythingOk) {
  ASSERT_NO_FATAL_FAILURE(Enroll());
  auto c = Run(config_);
  Expect(c, 0, CheckResult::kOk, "enrolled as " + agent_id_);
  Expect(c, 0, CheckResult::kOk, "key cakewalk-tls-1 in token 'cakewalk-agent'");
  Expect(c, 1, CheckResult::kOk, "key cakewalk-tls-1, valid until ");
  Expect(c, 1, CheckResult::kOk, "89 days left");
  Expect(c, 2, CheckResult::kOk, "connected to " + cp_->base_url());
  Expect(c, 3, CheckResult::kOk,
         "server certificate verified against " + (dir_ / "cp-ca.pem").string());
  Expect(c, 4, CheckResult::kOk,
         "the control plane accepts " + agent_id_ + " (key cakewalk-tls-1)");
  EXPECT_THAT(FormatCheck(c[0]), StartsWith("[ok  ] enrollment: enrolled as " + agent_id_));
  // The authenticated call was made with the token key.
  EXPECT_EQ(cp_->fake().Requests().back().agent_id, agent_id_);
  EXPECT_EQ(cp_->fake().Requests().back().status, 200);
  // Doctor changes nothing.
  EXPECT_EQ(cp_->fake().Agent(agent_id_)->renewals, 0);
}

TEST_F(ChecksTest, NotEnrolled) {
  auto c = Run(config_);
  Expect(c, 0, CheckResult::kFail, "not enrolled: run cakewalk-agent enroll --token-file");
  Expect(c, 1, CheckResult::kWarn, "not checked: not enrolled");
  Expect(c, 2, CheckResult::kOk, "connected to");
  Expect(c, 3, CheckResult::kOk, "verified");
  Expect(c, 4, CheckResult::kWarn, "not checked: not enrolled");
  EXPECT_THAT(FormatCheck(c[0]), StartsWith("[FAIL] enrollment: "));
  EXPECT_THAT(FormatCheck(c[1]), StartsWith("[warn] agent certificate: "));
}

TEST_F(ChecksTest, UnreachableControlPlane) {
  ASSERT_NO_FATAL_FAILURE(Enroll());
  const std::uint16_t port = testing::PickFreePort();
  Config config = MakeConfig([&](Json::Value& j) {
    j["control_plane"]["url"] = "https://localhost:" + std::to_string(port) + "/agent/v1";
  });
  auto c = Run(config);
  Expect(c, 1, CheckResult::kOk, "valid until");
  Expect(c, 2, CheckResult::kFail, "cannot connect to the control plane (DNS or TCP)");
  Expect(c, 2, CheckResult::kFail, "localhost:" + std::to_string(port));
  Expect(c, 3, CheckResult::kWarn, "not checked: the control plane is not reachable");
  Expect(c, 4, CheckResult::kWarn, "not checked");
}

TEST_F(ChecksTest, AServerThatNeverSpeaksTimesOut) {
  // A listening socket that nobody accepts from: TCP connects (the kernel's backlog), TLS never
  // starts.
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 8), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  Config config = MakeConfig([&](Json::Value& j) {
    j["control_plane"]["url"] = "https://localhost:" + std::to_string(ntohs(addr.sin_port));
    j["control_plane"]["connect_timeout_seconds"] = 1;
  });
  auto c = Run(config);
  ::close(fd);
  Expect(c, 2, CheckResult::kFail, "the control plane did not answer in time");
  Expect(c, 2, CheckResult::kFail, "timed out connecting");
  Expect(c, 3, CheckResult::kWarn, "not checked");
}

TEST_F(ChecksTest, TlsVerificationFailure) {
  ASSERT_NO_FATAL_FAILURE(Enroll());
  auto other = testing::TestCa::Create("another CA");
  testing::WriteFile(dir_ / "other.pem", other->cert_pem());
  Config config = MakeConfig(
      [&](Json::Value& j) { j["control_plane"]["ca_file"] = (dir_ / "other.pem").string(); });
  auto c = Run(config);
  Expect(c, 2, CheckResult::kOk, "connected to");
  Expect(c, 3, CheckResult::kFail, "the control plane's TLS certificate was not accepted");
  Expect(c, 3, CheckResult::kFail, "not issued by a trusted CA");
  Expect(c, 4, CheckResult::kWarn, "not checked");
}

TEST_F(ChecksTest, PinMismatch) {
  auto other = testing::MakeSelfSigned("elsewhere");
  ASSERT_TRUE(other.ok());
  auto pin = testing::SpkiSha256Base64(other->cert_pem);
  ASSERT_TRUE(pin.ok());
  Config config =
      MakeConfig([&](Json::Value& j) { j["control_plane"]["pinned_spki_sha256"].append(*pin); });
  auto c = Run(config);
  Expect(c, 3, CheckResult::kFail, "matches no control_plane.pinned_spki_sha256 entry");

  auto right = testing::SpkiSha256Base64(cp_->server_cert_pem());
  ASSERT_TRUE(right.ok());
  Config pinned =
      MakeConfig([&](Json::Value& j) { j["control_plane"]["pinned_spki_sha256"].append(*right); });
  c = Run(pinned);
  Expect(c, 3, CheckResult::kOk, "key matches one of 1 pins");
}

TEST_F(ChecksTest, CertificateExpiry) {
  ASSERT_NO_FATAL_FAILURE(Enroll());
  const IdentityRecord r = *LoadIdentity(config_.state_dir);

  testing::FakeClock near(r.current.not_after - std::chrono::hours(24 * 10));
  auto c = Run(config_, near);
  Expect(c, 1, CheckResult::kWarn, "10 days left");
  Expect(c, 1, CheckResult::kWarn, "renewal is due");

  testing::FakeClock third(r.current.not_after - std::chrono::hours(24 * 25));
  c = Run(config_, third);
  Expect(c, 1, CheckResult::kWarn, "(25 days left); renewal is due");

  testing::FakeClock fine(r.current.not_after - std::chrono::hours(24 * 40));
  c = Run(config_, fine);
  Expect(c, 1, CheckResult::kOk, "40 days left");

  testing::FakeClock expired(r.current.not_after + 1h);
  c = Run(config_, expired);
  Expect(c, 1, CheckResult::kFail, "expired at " + FormatRfc3339(r.current.not_after));
  Expect(c, 1, CheckResult::kFail, "enroll again with cakewalk-agent enroll --force");

  testing::FakeClock early(r.current.not_before - 1h);
  c = Run(config_, early);
  Expect(c, 1, CheckResult::kFail, "check the local clock");
}

TEST_F(ChecksTest, ARevokedIdentityIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Enroll());
  ASSERT_TRUE(cp_->fake().RevokeAgent(agent_id_).ok());
  auto c = Run(config_);
  Expect(c, 2, CheckResult::kOk, "connected");
  Expect(c, 4, CheckResult::kFail, "the control plane refused the agent's identity");
  Expect(c, 4, CheckResult::kFail, "certificate_revoked");
  Expect(c, 4, CheckResult::kFail, "cakewalk-agent enroll --force");
}

TEST_F(ChecksTest, WithoutTheToken) {
  ASSERT_NO_FATAL_FAILURE(Enroll());
  auto c = ControlPlaneChecks(config_, nullptr);
  ASSERT_EQ(c.size(), 5u);
  Expect(c, 0, CheckResult::kWarn, "the key was not checked: the token is not available");
  Expect(c, 1, CheckResult::kOk, "valid until");
  Expect(c, 2, CheckResult::kOk, "connected");
  Expect(c, 4, CheckResult::kWarn, "not checked: the identity key cannot be used");
}

TEST_F(ChecksTest, AnotherControlPlaneUrlIsAWarning) {
  ASSERT_NO_FATAL_FAILURE(Enroll());
  Config config = MakeConfig([&](Json::Value& j) {
    j["control_plane"]["url"] = "https://127.0.0.1:" + std::to_string(cp_->port()) + "/agent/v1";
  });
  auto c = Run(config);
  Expect(c, 0, CheckResult::kWarn, "enrolled with " + cp_->base_url());
  Expect(c, 0, CheckResult::kWarn, "but control_plane.url is now https://127.0.0.1:");
  Expect(c, 4, CheckResult::kOk, "the control plane accepts");
}

TEST_F(ChecksTest, AMissingKeyIsAnEnrollmentFailure) {
  ASSERT_NO_FATAL_FAILURE(Enroll());
  ASSERT_TRUE(hsm::KeyPair::Destroy(Token().token(), "cakewalk-tls-1").ok());
  auto c = Run(config_);
  Expect(c, 0, CheckResult::kFail, "the agent's identity key cakewalk-tls-1 is not in token");
  Expect(c, 4, CheckResult::kWarn, "not checked: the identity key cannot be used");
}

}  // namespace
}  // namespace cakewalk::agent
