// Certificate renewal against the fake control plane with a private SoftHSM token: triggered by
// the certificate's lifetime and by the heartbeat, the TLS identity switching over, the old key
// kept until the new one worked, failures, and a crash between every two steps (a child process
// that exits at that step) followed by a restart that still has a working identity.
#include "agent/renewal.h"

#include <thread>

#include "tests/agent/identity_fixture.h"
#include "tests/support/fake_clock.h"

namespace cakewalk::agent {
namespace {

using ::testing::HasSubstr;
using Outcome = CertificateRenewer::Outcome;
using namespace std::chrono_literals;

TEST(RenewalDueTest, LessThanAThirdOfTheLifetimeLeft) {
  const SysTime start(std::chrono::seconds(1764850000));
  const SysTime end = start + 90h;
  EXPECT_FALSE(RenewalDue(start, end, start));
  EXPECT_FALSE(RenewalDue(start, end, start + 60h));
  EXPECT_TRUE(RenewalDue(start, end, start + 60h + 1s));
  EXPECT_TRUE(RenewalDue(start, end, end));
  EXPECT_TRUE(RenewalDue(start, end, end + 1h));
  EXPECT_TRUE(RenewalDue(end, start, start)) << "a certificate without lifetime is always due";
  // A certificate valid from before 1678 until 9999 (both clamped by hsm/x509.cc): its lifetime
  // overflowed nanoseconds, came out negative and made it always due.
  EXPECT_FALSE(RenewalDue(SysTime::min(), SysTime::max(), start));
  EXPECT_TRUE(RenewalDue(SysTime::min(), start + 1h, start));
}

class RenewalTest : public IdentityTest {
 protected:
  void SetUp() override {
    IdentityTest::SetUp();
    auto enrolled = EnrollNow();
    ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
    agent_id_ = enrolled->agent_id;
  }
  void TearDown() override {
    renewer_.reset();
    link_.reset();
    identity_.reset();
    IdentityTest::TearDown();
  }

  void Open(const Clock& clock = SystemClock()) {
    renewer_.reset();
    link_.reset();
    identity_.reset();
    auto id = Identity::Open(config_.state_dir, Token().token(), log_, clock);
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    identity_ = std::move(*id);
    link_ = std::make_unique<ControlPlaneLink>(config_, Token().secrets(), *identity_);
    renewer_ = std::make_unique<CertificateRenewer>(*identity_, [this] { return link_->Client(); });
  }

  IdentityRecord Stored() {
    auto r = LoadIdentity(config_.state_dir);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : IdentityRecord{};
  }

  // Successful calls the fake saw with the key of `label`.
  int SuccessfulCallsWith(const std::string& key_sha256) {
    int n = 0;
    for (const auto& r : cp_->fake().Requests()) {
      if (r.client_key_sha256 == key_sha256 && r.status == 200) ++n;
    }
    return n;
  }

  Json::Value HeartbeatBody(SysTime not_after) {
    Json::Value hb(Json::objectValue);
    hb["agent_version"] = "0.1.0";
    hb["uptime_seconds"] = 1;
    hb["certificate_expires_at"] = FormatRfc3339(not_after);
    hb["token"]["manufacturer"] = "m";
    hb["token"]["model"] = "m";
    hb["token"]["serial"] = "s";
    hb["token"]["label"] = "l";
    hb["connections"] = Json::Value(Json::arrayValue);
    hb["secrets"] = Json::Value(Json::arrayValue);
    hb["jobs"]["running"] = 0;
    hb["jobs"]["results_pending"] = 0;
    return hb;
  }

  std::string agent_id_;
  std::unique_ptr<Identity> identity_;
  std::unique_ptr<ControlPlaneLink> link_;
  std::unique_ptr<CertificateRenewer> renewer_;
};

TEST_F(RenewalTest, NothingHappensWhileTheCertificateIsYoung) {
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_FALSE(renewer_->Due());
  auto outcome = renewer_->MaybeRenew(false);
  ASSERT_TRUE(outcome.ok()) << outcome.status().ToString();
  EXPECT_EQ(*outcome, Outcome::kNothingToDo);
  EXPECT_EQ(cp_->fake().Agent(agent_id_)->renewals, 0);
  EXPECT_TRUE(cp_->fake().Arrivals(testing::Endpoint::kCertificate).empty());
  EXPECT_TRUE(KeyExists("cakewalk-tls-1"));
  EXPECT_FALSE(KeyExists("cakewalk-tls-2"));
}

TEST_F(RenewalTest, RenewsWhenLessThanAThirdOfTheLifetimeIsLeft) {
  const IdentityRecord enrolled = Stored();
  const auto lifetime = enrolled.current.not_after - enrolled.current.not_before;
  // Just before the threshold: not due. Just after: due.
  testing::FakeClock clock(enrolled.current.not_after - lifetime / 3 - 1min);
  ASSERT_NO_FATAL_FAILURE(Open(clock));
  EXPECT_FALSE(renewer_->Due());
  ASSERT_EQ(*renewer_->MaybeRenew(false), Outcome::kNothingToDo);
  clock.Advance(2min);
  EXPECT_TRUE(renewer_->Due());

  auto before = link_->Current();
  ASSERT_TRUE(before.ok());
  const std::string old_hash = SpkiSha256Hex(*identity_->key());
  auto outcome = renewer_->MaybeRenew(false);
  ASSERT_TRUE(outcome.ok()) << outcome.status().ToString();
  EXPECT_EQ(*outcome, Outcome::kRenewed);

  // The new key and certificate are in use; the old key is gone after the new one worked.
  EXPECT_EQ(identity_->key()->label(), "cakewalk-tls-2");
  EXPECT_EQ(identity_->generation(), before->generation + 1);
  EXPECT_FALSE(KeyExists("cakewalk-tls-1"));
  EXPECT_TRUE(KeyExists("cakewalk-tls-2"));
  const std::string new_hash = SpkiSha256Hex(*identity_->key());
  EXPECT_GE(SuccessfulCallsWith(new_hash), 1);
  const IdentityRecord stored = Stored();
  EXPECT_EQ(stored.current.key_label, "cakewalk-tls-2");
  EXPECT_FALSE(stored.previous.has_value());
  EXPECT_FALSE(stored.pending.has_value());
  EXPECT_EQ(stored.next_key_number, 3u);
  // Issued now for the same lifetime (the fake's clock is the real one).
  EXPECT_GE(stored.current.not_after, enrolled.current.not_after);
  auto agent = cp_->fake().Agent(agent_id_);
  EXPECT_EQ(agent->renewals, 1);
  ASSERT_EQ(agent->key_sha256.size(), 2u);
  EXPECT_EQ(agent->key_sha256[1], new_hash);
  EXPECT_EQ(agent->key_sha256[0], old_hash);

  // The link hands out a client with the new identity: the heartbeat presents the new
  // certificate and says so.
  auto after = link_->Current();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->generation, identity_->generation());
  EXPECT_EQ(after->certificate_not_after, stored.current.not_after);
  auto hb = after->client->Heartbeat(HeartbeatBody(after->certificate_not_after));
  ASSERT_TRUE(hb.ok()) << hb.status().ToString();
  EXPECT_EQ(cp_->fake().Requests().back().client_key_sha256, new_hash);
  EXPECT_TRUE(cp_->fake().Violations().empty());
  clock.Set(std::chrono::system_clock::now());
  EXPECT_FALSE(renewer_->Due());
}

TEST_F(RenewalTest, AShortLivedCertificateIsDueAtOnce) {
  // The fake issues certificates valid from one minute ago for 20 s: a third of 80 s is left.
  testing::RunningControlPlaneOptions options;
  options.control_plane.certificate_lifetime = 20s;
  ASSERT_NO_FATAL_FAILURE(StartControlPlane(options));
  config_ = MakeConfig();
  auto enrolled = EnrollNow(/*force=*/true);
  ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_TRUE(renewer_->Due());
  auto outcome = renewer_->MaybeRenew(false);
  ASSERT_TRUE(outcome.ok()) << outcome.status().ToString();
  EXPECT_EQ(*outcome, Outcome::kRenewed);
  EXPECT_EQ(cp_->fake().Agent(enrolled->agent_id)->renewals, 1);
  EXPECT_TRUE(CallWorks(*identity_, config_));
}

TEST_F(RenewalTest, RenewsWhenTheHeartbeatAsks) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_TRUE(cp_->fake().RequestCertificateRenewal(agent_id_).ok());
  auto conn = link_->Current();
  ASSERT_TRUE(conn.ok());
  auto hb = conn->client->Heartbeat(HeartbeatBody(conn->certificate_not_after));
  ASSERT_TRUE(hb.ok()) << hb.status().ToString();
  ASSERT_TRUE(hb->renew_certificate);
  EXPECT_FALSE(renewer_->Due());

  auto outcome = renewer_->MaybeRenew(hb->renew_certificate);
  ASSERT_TRUE(outcome.ok()) << outcome.status().ToString();
  EXPECT_EQ(*outcome, Outcome::kRenewed);
  EXPECT_EQ(identity_->key()->label(), "cakewalk-tls-2");

  conn = link_->Current();
  ASSERT_TRUE(conn.ok());
  hb = conn->client->Heartbeat(HeartbeatBody(conn->certificate_not_after));
  ASSERT_TRUE(hb.ok()) << hb.status().ToString();
  EXPECT_FALSE(hb->renew_certificate);
  EXPECT_TRUE(cp_->fake().Violations().empty());
  EXPECT_THAT(log_.Text(), HasSubstr("the control plane asked for it"));
}

TEST_F(RenewalTest, TheOldKeyStaysUntilTheNewOneHasWorked) {
  ASSERT_NO_FATAL_FAILURE(Open());
  // The confirmation call after the switch fails: the old key must survive it.
  cp_->fake().QueueFault(testing::ControlPlaneFault::Status(503), 1,
                         testing::Endpoint::kSigningKeys);
  auto outcome = renewer_->MaybeRenew(true);
  ASSERT_TRUE(outcome.ok()) << outcome.status().ToString();
  EXPECT_EQ(*outcome, Outcome::kRenewed);
  EXPECT_EQ(identity_->key()->label(), "cakewalk-tls-2");
  EXPECT_TRUE(KeyExists("cakewalk-tls-1"));
  IdentityRecord stored = Stored();
  ASSERT_TRUE(stored.previous.has_value());
  EXPECT_EQ(stored.previous->key_label, "cakewalk-tls-1");
  EXPECT_EQ(SuccessfulCallsWith(SpkiSha256Hex(*identity_->key())), 0);
  EXPECT_THAT(log_.Text(), HasSubstr("so the old key cakewalk-tls-1 is kept"));

  // No new renewal starts while the switch is unconfirmed: the next call confirms it.
  outcome = renewer_->MaybeRenew(true);
  ASSERT_TRUE(outcome.ok()) << outcome.status().ToString();
  EXPECT_EQ(*outcome, Outcome::kConfirmed);
  EXPECT_FALSE(KeyExists("cakewalk-tls-1"));
  EXPECT_FALSE(KeyExists("cakewalk-tls-3"));
  EXPECT_FALSE(Stored().previous.has_value());
  EXPECT_EQ(SuccessfulCallsWith(SpkiSha256Hex(*identity_->key())), 1);
  EXPECT_EQ(cp_->fake().Agent(agent_id_)->renewals, 1);
}

// The control plane refuses the new certificate as an identity (401 to the confirmation call):
// the agent goes back to the old one, still valid, removes the refused key, and renews again later.
TEST_F(RenewalTest, ARefusedNewCertificateFallsBackToTheOldOne) {
  ASSERT_NO_FATAL_FAILURE(Open());
  const std::string old_key = SpkiSha256Hex(*identity_->key());
  cp_->fake().QueueFault(testing::ControlPlaneFault::Status(401), 1,
                         testing::Endpoint::kSigningKeys);
  auto outcome = renewer_->MaybeRenew(true);
  ASSERT_TRUE(outcome.ok()) << outcome.status().ToString();
  EXPECT_EQ(*outcome, Outcome::kFellBack);
  EXPECT_EQ(identity_->key()->label(), "cakewalk-tls-1");
  EXPECT_TRUE(KeyExists("cakewalk-tls-1"));
  EXPECT_FALSE(KeyExists("cakewalk-tls-2"));
  IdentityRecord stored = Stored();
  EXPECT_EQ(stored.current.key_label, "cakewalk-tls-1");
  EXPECT_FALSE(stored.previous.has_value());
  EXPECT_FALSE(stored.pending.has_value());
  EXPECT_THAT(log_.Text(),
              HasSubstr("the control plane refused the renewed certificate (key cakewalk-tls-2)"));
  EXPECT_THAT(log_.Text(), HasSubstr("back to key cakewalk-tls-1"));

  // The old identity is the one in use again.
  auto client = link_->Client();
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  const int before = SuccessfulCallsWith(old_key);
  ASSERT_TRUE((*client)->SigningKeys().ok());
  EXPECT_EQ(SuccessfulCallsWith(old_key), before + 1);

  // The next renewal takes a new key number and completes.
  outcome = renewer_->MaybeRenew(true);
  ASSERT_TRUE(outcome.ok()) << outcome.status().ToString();
  EXPECT_EQ(*outcome, Outcome::kRenewed);
  EXPECT_EQ(identity_->key()->label(), "cakewalk-tls-3");
  EXPECT_FALSE(KeyExists("cakewalk-tls-1"));
  EXPECT_FALSE(Stored().previous.has_value());
}

TEST_F(RenewalTest, AFailedRenewalRemovesTheNewKeyAndKeepsTheOldIdentity) {
  ASSERT_NO_FATAL_FAILURE(Open());
  const std::string before = SpkiSha256Hex(*identity_->key());
  for (int status : {500, 422, 401}) {
    cp_->fake().QueueFault(testing::ControlPlaneFault::Status(status), 1,
                           testing::Endpoint::kCertificate);
    auto outcome = renewer_->MaybeRenew(true);
    ASSERT_FALSE(outcome.ok()) << status;
    EXPECT_THAT(outcome.status().message(), HasSubstr("certificate renewal failed"));
    EXPECT_THAT(outcome.status().message(), HasSubstr("HTTP " + std::to_string(status)));
  }
  EXPECT_EQ(identity_->key()->label(), "cakewalk-tls-1");
  EXPECT_EQ(SpkiSha256Hex(*identity_->key()), before);
  EXPECT_TRUE(KeyExists("cakewalk-tls-1"));
  for (const char* label : {"cakewalk-tls-2", "cakewalk-tls-3", "cakewalk-tls-4"}) {
    EXPECT_FALSE(KeyExists(label)) << label;
  }
  const IdentityRecord stored = Stored();
  EXPECT_FALSE(stored.pending.has_value());
  EXPECT_FALSE(stored.previous.has_value());
  EXPECT_EQ(stored.next_key_number, 5u) << "labels of abandoned keys are not reused";
  EXPECT_TRUE(CallWorks(*identity_, config_));
  // And then it works.
  auto outcome = renewer_->MaybeRenew(true);
  ASSERT_TRUE(outcome.ok()) << outcome.status().ToString();
  EXPECT_EQ(identity_->key()->label(), "cakewalk-tls-5");
}

TEST_F(RenewalTest, ConcurrentCallsRunOneAfterTheOther) {
  ASSERT_NO_FATAL_FAILURE(Open());
  std::vector<std::thread> threads;
  std::vector<Status> results(4);
  for (std::size_t i = 0; i < 4; ++i) {
    threads.emplace_back([this, i, &results] { results[i] = renewer_->MaybeRenew(true).status(); });
  }
  for (auto& t : threads) t.join();
  for (const Status& s : results) EXPECT_TRUE(s.ok()) << s.ToString();
  const IdentityRecord stored = Stored();
  EXPECT_FALSE(stored.previous.has_value());
  EXPECT_FALSE(stored.pending.has_value());
  EXPECT_EQ(identity_->key()->label(), stored.current.key_label);
  // Exactly one identity key is left: the one in use.
  int keys = 0;
  for (std::uint32_t n = 1; n < stored.next_key_number; ++n) {
    if (KeyExists(IdentityKeyLabel(n))) {
      ++keys;
      EXPECT_EQ(IdentityKeyLabel(n), stored.current.key_label);
    }
  }
  EXPECT_EQ(keys, 1);
  EXPECT_TRUE(CallWorks(*identity_, config_));
}

// --- Crashes -----------------------------------------------------------------------------------

class RenewalCrashTest : public RenewalTest, public ::testing::WithParamInterface<RenewalPoint> {};

TEST_P(RenewalCrashTest, ARestartAfterACrashHasAWorkingIdentityAndConverges) {
  const RenewalPoint point = GetParam();
  const std::string old_hash = [&] {
    auto id = OpenIdentity();
    return id == nullptr ? std::string() : SpkiSha256Hex(*id->key());
  }();
  // The child renews with its own token session: close ours first (PKCS#11 state is per
  // process, and SoftHSM's object store is shared through its files).
  CloseToken();
  const std::filesystem::path config_file = dir_ / "agent.json";
  testing::WriteFile(config_file, WriteJson(ConfigJson()));
  testing::ProgramResult child = testing::RunProgram(
      {CAKEWALK_RENEWAL_CRASH_HELPER, config_file.string(), std::string(RenewalPointName(point))});
  ASSERT_EQ(child.exit_code, 42) << "the helper did not stop at " << RenewalPointName(point) << ": "
                                 << child.err;

  // Restart.
  ASSERT_NO_FATAL_FAILURE(Open());
  // The old key may be gone only if the new one already made a successful call.
  if (!KeyExists("cakewalk-tls-1")) {
    EXPECT_GE(SuccessfulCallsWith(SpkiSha256Hex(*identity_->key())), 1);
    EXPECT_NE(SpkiSha256Hex(*identity_->key()), old_hash);
  }
  EXPECT_TRUE(CallWorks(*identity_, config_))
      << "no working identity after a crash at " << RenewalPointName(point);
  const IdentityRecord restarted = Stored();
  EXPECT_FALSE(restarted.pending.has_value());
  const bool switched = point >= RenewalPoint::kSwitched;
  EXPECT_EQ(identity_->key()->label(), switched ? "cakewalk-tls-2" : "cakewalk-tls-1");
  if (!switched) {
    EXPECT_FALSE(KeyExists("cakewalk-tls-2")) << "an orphan key survived the restart";
  }
  if (point == RenewalPoint::kSwitched || point == RenewalPoint::kNewIdentityWorked) {
    EXPECT_TRUE(KeyExists("cakewalk-tls-1")) << "the old key must wait for the new one to work";
    ASSERT_TRUE(restarted.previous.has_value());
  } else {
    EXPECT_FALSE(restarted.previous.has_value());
  }

  // Converge: the running agent's next MaybeRenew finishes what was left.
  auto outcome = renewer_->MaybeRenew(false);
  ASSERT_TRUE(outcome.ok()) << outcome.status().ToString();
  const IdentityRecord converged = Stored();
  EXPECT_FALSE(converged.previous.has_value());
  EXPECT_FALSE(converged.pending.has_value());
  int keys = 0;
  for (std::uint32_t n = 1; n <= 3; ++n) keys += KeyExists(IdentityKeyLabel(n)) ? 1 : 0;
  EXPECT_EQ(keys, 1);
  EXPECT_TRUE(KeyExists(converged.current.key_label));
  EXPECT_TRUE(CallWorks(*identity_, config_));
  EXPECT_TRUE(cp_->fake().Violations().empty());
}

INSTANTIATE_TEST_SUITE_P(
    EveryStep, RenewalCrashTest,
    ::testing::Values(RenewalPoint::kPendingRecorded, RenewalPoint::kKeyGenerated,
                      RenewalPoint::kCertificateIssued, RenewalPoint::kSwitched,
                      RenewalPoint::kNewIdentityWorked, RenewalPoint::kOldKeyDestroyed,
                      RenewalPoint::kFinished),
    [](const ::testing::TestParamInfo<RenewalPoint>& param) {
      std::string name(RenewalPointName(param.param));
      std::string out;
      bool upper = true;
      for (char c : name) {
        if (c == '-') {
          upper = true;
          continue;
        }
        out += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
        upper = false;
      }
      return out;
    });

}  // namespace
}  // namespace cakewalk::agent
