// The identity file and state directory (permissions, atomic writes, strict loading), and what
// Identity::Open repairs after an interrupted renewal.
#include "agent/identity.h"

#include <sys/stat.h>
#include <unistd.h>

#include "hsm/csr.h"
#include "tests/agent/identity_fixture.h"
#include "tests/support/fake_clock.h"
#include "tests/support/pki.h"

namespace cakewalk::agent {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

mode_t ModeOf(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

std::vector<std::string> Listing(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// --- State directory and files -----------------------------------------------------------------

TEST(StateDirTest, CreatedWithMode0700) {
  testing::TempDir dir("cakewalk-state");
  const fs::path state = dir / "state";
  ASSERT_TRUE(EnsureStateDir(state).ok());
  EXPECT_EQ(ModeOf(state), 0700u);
  EXPECT_TRUE(EnsureStateDir(state).ok()) << "idempotent";
}

TEST(StateDirTest, RefusesOneOthersCanUseAndSaysWhichChmod) {
  testing::TempDir dir("cakewalk-state");
  for (mode_t mode : {0755u, 0770u, 0701u, 0707u}) {
    const fs::path state = dir / ("state-" + std::to_string(mode));
    ASSERT_EQ(::mkdir(state.c_str(), 0700), 0);
    ASSERT_EQ(::chmod(state.c_str(), mode), 0);
    Status s = EnsureStateDir(state);
    ASSERT_FALSE(s.ok()) << mode;
    EXPECT_EQ(s.code(), Code::kPermissionDenied);
    EXPECT_THAT(s.message(), HasSubstr("can be used by other users"));
    EXPECT_THAT(s.message(), HasSubstr("run: chmod 0700 " + state.string()));
  }
}

TEST(StateDirTest, RefusesFilesMissingParentsAndOtherOwners) {
  testing::TempDir dir("cakewalk-state");
  testing::WriteFile(dir / "file", "x");
  Status file = EnsureStateDir(dir / "file");
  EXPECT_THAT(file.message(), HasSubstr("is not a directory"));

  Status parent = EnsureStateDir(dir / "missing" / "state");
  EXPECT_THAT(parent.message(), HasSubstr("mkdir -m 0700 " + (dir / "missing" / "state").string()));

  fs::path foreign = dir / "foreign";
  if (::geteuid() == 0) {
    ASSERT_EQ(::mkdir(foreign.c_str(), 0700), 0);
    ASSERT_EQ(::chown(foreign.c_str(), 65534, 65534), 0);
  } else {
    foreign = "/";  // root's
  }
  Status other = EnsureStateDir(foreign);
  ASSERT_FALSE(other.ok());
  EXPECT_THAT(other.message(), HasSubstr("belongs to"));
  EXPECT_THAT(other.message(), HasSubstr("run the command as"));
}

TEST(StateDirTest, AtomicWriteReplacesTheFileAndLeavesNoTemporaryFile) {
  testing::TempDir dir("cakewalk-state");
  const fs::path file = dir / "identity.json";
  ASSERT_TRUE(WriteFileAtomically(file, "first", 0600).ok());
  EXPECT_EQ(testing::ReadFile(file), "first");
  EXPECT_EQ(ModeOf(file), 0600u);
  ASSERT_TRUE(WriteFileAtomically(file, "second, longer", 0600).ok());
  EXPECT_EQ(testing::ReadFile(file), "second, longer");
  EXPECT_EQ(Listing(dir.path()), std::vector<std::string>{"identity.json"});
  Status s = WriteFileAtomically(dir / "nowhere" / "identity.json", "x", 0600);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("cannot create a temporary file"));
  EXPECT_EQ(Listing(dir.path()), std::vector<std::string>{"identity.json"});
}

// --- The record --------------------------------------------------------------------------------

class RecordTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_ = testing::TestCa::Create("agent CA");
    auto a = ca_->Issue(Client("agt_000001"));
    auto b = ca_->Issue(Client("agt_000001"));
    ASSERT_TRUE(a.ok() && b.ok());
    auto ca = MakeIdentityCertificate("cakewalk-tls-1", a->chain_pem);
    auto cb = MakeIdentityCertificate("cakewalk-tls-2", b->chain_pem);
    ASSERT_TRUE(ca.ok() && cb.ok()) << ca.status().ToString();
    record_.agent_id = "agt_000001";
    record_.control_plane_url = "https://cp.example/agent/v1";
    record_.enrolled_at = SysTime(std::chrono::seconds(1764850000));
    record_.poll_wait_seconds = 30;
    record_.token = {"SoftHSM project", "SoftHSM v2", "0123abcd", "cakewalk"};
    record_.signing_keys.push_back({"jsk_1", std::vector<std::uint8_t>(32, 7)});
    record_.next_key_number = 4;
    record_.current = *cb;
    record_.previous = *ca;
    record_.pending = PendingKey{"cakewalk-tls-3", SysTime(std::chrono::seconds(1764850100))};
  }
  static testing::TestCa::LeafOptions Client(const std::string& cn) {
    testing::TestCa::LeafOptions o;
    o.common_name = cn;
    o.dns_names = {};
    o.ip_addresses = {};
    o.server = false;
    return o;
  }
  std::string With(const std::function<void(Json::Value&)>& edit) {
    auto v = ParseJson(SerializeIdentity(record_), "identity");
    EXPECT_TRUE(v.ok());
    edit(*v);
    return WriteJson(*v);
  }

  std::unique_ptr<testing::TestCa> ca_;
  IdentityRecord record_;
};

TEST_F(RecordTest, RoundTrip) {
  auto back = ParseIdentity(SerializeIdentity(record_), "identity");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->agent_id, record_.agent_id);
  EXPECT_EQ(back->control_plane_url, record_.control_plane_url);
  EXPECT_EQ(back->enrolled_at, record_.enrolled_at);
  EXPECT_EQ(back->poll_wait_seconds, 30);
  EXPECT_EQ(back->token.serial, "0123abcd");
  ASSERT_EQ(back->signing_keys.size(), 1u);
  EXPECT_EQ(back->signing_keys[0].public_key, record_.signing_keys[0].public_key);
  EXPECT_EQ(back->next_key_number, 4u);
  EXPECT_EQ(back->current.key_label, "cakewalk-tls-2");
  EXPECT_EQ(back->current.chain_pem, record_.current.chain_pem);
  EXPECT_EQ(back->current.not_after, record_.current.not_after);
  ASSERT_TRUE(back->previous.has_value());
  EXPECT_EQ(back->previous->key_label, "cakewalk-tls-1");
  ASSERT_TRUE(back->pending.has_value());
  EXPECT_EQ(back->pending->key_label, "cakewalk-tls-3");
  EXPECT_EQ(back->pending->created_at, record_.pending->created_at);
  EXPECT_EQ(SerializeIdentity(*back), SerializeIdentity(record_));
}

TEST_F(RecordTest, StrictLoading) {
  struct Case {
    std::function<void(Json::Value&)> edit;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {[](Json::Value& v) { v["extra"] = 1; }, "extra"},
      {[](Json::Value& v) { v.removeMember("agent_id"); }, "$.agent_id"},
      {[](Json::Value& v) { v["format"] = 2; }, "$.format"},
      {[](Json::Value& v) { v["poll_wait_seconds"] = "25"; }, "$.poll_wait_seconds"},
      {[](Json::Value& v) { v["current"]["key_label"] = "cakewalk:secret:x"; },
       "$.current.key_label"},
      {[](Json::Value& v) { v["current"]["certificate_chain"] = "not PEM"; },
       "$.current.certificate_chain"},
      {[](Json::Value& v) { v["current"]["extra"] = true; }, "$.current"},
      {[](Json::Value& v) { v["token"].removeMember("serial"); }, "$.token.serial"},
      {[](Json::Value& v) { v["job_signing_keys"][0]["crv"] = "P-256"; },
       "$.job_signing_keys[0].crv"},
      {[](Json::Value& v) { v["pending"]["created_at"] = "soon"; }, "$.pending.created_at"},
      {[](Json::Value& v) { v["enrolled_at"] = 5; }, "$.enrolled_at"},
  };
  for (const Case& c : cases) {
    auto r = ParseIdentity(With(c.edit), "identity file X");
    ASSERT_FALSE(r.ok()) << c.expected;
    EXPECT_THAT(r.status().message(), HasSubstr(c.expected));
    EXPECT_THAT(r.status().message(), HasSubstr("identity file X"));
  }
  EXPECT_FALSE(ParseIdentity("{", "identity").ok());
  EXPECT_FALSE(ParseIdentity("[]", "identity").ok());
}

TEST_F(RecordTest, NotEnrolledAndUnreadableFilesSayWhatToDo) {
  testing::TempDir dir("cakewalk-state");
  const fs::path state = dir / "state";
  auto none = ReadIdentity(state);
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_FALSE(none->has_value());
  auto missing = LoadIdentity(state);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().reason(), kNotEnrolledReason);
  EXPECT_THAT(missing.status().message(), HasSubstr("the agent is not enrolled"));
  EXPECT_THAT(missing.status().message(), HasSubstr("run cakewalk-agent enroll --token-file"));

  ASSERT_TRUE(WriteIdentity(state, record_).ok());
  EXPECT_EQ(ModeOf(IdentityFile(state)), 0600u);
  auto loaded = LoadIdentity(state);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->agent_id, "agt_000001");

  testing::WriteFile(IdentityFile(state), "{\"format\": 1}");
  auto broken = LoadIdentity(state);
  ASSERT_FALSE(broken.ok());
  EXPECT_THAT(broken.status().message(), HasSubstr(IdentityFile(state).string()));
  EXPECT_THAT(broken.status().message(), HasSubstr("cakewalk-agent enroll --force"));

  ASSERT_TRUE(WriteIdentity(state, record_).ok());
  ASSERT_EQ(::chmod(IdentityFile(state).c_str(), 0622), 0);
  auto writable = LoadIdentity(state);
  ASSERT_FALSE(writable.ok());
  EXPECT_THAT(writable.status().message(), HasSubstr("may be changed by other users"));
  EXPECT_THAT(writable.status().message(), HasSubstr("chmod 0600"));

  ASSERT_EQ(::chmod(state.c_str(), 0750), 0);
  auto open_dir = LoadIdentity(state);
  ASSERT_FALSE(open_dir.ok());
  EXPECT_THAT(open_dir.status().message(), HasSubstr("chmod 0700"));
}

// --- Identity::Open with a token ----------------------------------------------------------------

class IdentityOpenTest : public IdentityTest {
 protected:
  void SetUp() override {
    IdentityTest::SetUp();
    auto enrolled = EnrollNow();
    ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
    agent_id_ = enrolled->agent_id;
    ca_ = testing::TestCa::Create("local agent CA");
  }
  // A new key pair in the token and a certificate for it (notBefore/notAfter relative to now).
  IdentityCertificate NewKeyWithCertificate(
      const std::string& label, std::chrono::seconds not_after,
      std::chrono::seconds not_before = -std::chrono::minutes(1)) {
    auto key = hsm::KeyPair::Generate(Token().token(), hsm::KeyType::kEcP256, label);
    EXPECT_TRUE(key.ok()) << key.status().ToString();
    auto csr = hsm::MakeCsrPem(std::shared_ptr<hsm::TokenKey>(std::move(*key)), "x");
    EXPECT_TRUE(csr.ok());
    auto pem = ca_->IssueFromCsr(*csr, agent_id_, not_after, not_before);
    EXPECT_TRUE(pem.ok()) << pem.status().ToString();
    auto cert = MakeIdentityCertificate(label, *pem);
    EXPECT_TRUE(cert.ok());
    return *cert;
  }
  IdentityRecord Stored() {
    auto r = LoadIdentity(config_.state_dir);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : IdentityRecord{};
  }
  void Store(const IdentityRecord& r) { ASSERT_TRUE(WriteIdentity(config_.state_dir, r).ok()); }

  std::string agent_id_;
  std::unique_ptr<testing::TestCa> ca_;
};

TEST_F(IdentityOpenTest, APendingKeyWithoutCertificateIsDestroyed) {
  IdentityRecord r = Stored();
  auto orphan = hsm::KeyPair::Generate(Token().token(), hsm::KeyType::kEcP256, "cakewalk-tls-2");
  ASSERT_TRUE(orphan.ok());
  r.pending = PendingKey{"cakewalk-tls-2", SysTime(std::chrono::seconds(1764850000))};
  r.next_key_number = 3;
  Store(r);
  const std::string before = testing::ReadFile(IdentityFile(config_.state_dir));

  // Read-only (doctor): nothing changes.
  auto ro = OpenIdentity(Identity::Mode::kReadOnly);
  ASSERT_NE(ro, nullptr);
  EXPECT_FALSE(ro->record().pending.has_value());
  EXPECT_TRUE(KeyExists("cakewalk-tls-2"));
  EXPECT_EQ(testing::ReadFile(IdentityFile(config_.state_dir)), before);

  auto id = OpenIdentity();
  ASSERT_NE(id, nullptr);
  EXPECT_FALSE(KeyExists("cakewalk-tls-2"));
  EXPECT_TRUE(KeyExists("cakewalk-tls-1"));
  EXPECT_FALSE(Stored().pending.has_value());
  EXPECT_EQ(Stored().next_key_number, 3u) << "labels are never reused";
  EXPECT_EQ(id->key()->label(), "cakewalk-tls-1");
  EXPECT_TRUE(CallWorks(*id, config_));

  // A pending entry whose key was never generated is dropped too.
  r = Stored();
  r.pending = PendingKey{"cakewalk-tls-3", SysTime(std::chrono::seconds(1764850000))};
  Store(r);
  ASSERT_NE(OpenIdentity(), nullptr);
  EXPECT_FALSE(Stored().pending.has_value());
}

TEST_F(IdentityOpenTest, APreviousEntryWhoseKeyIsGoneIsDropped) {
  IdentityRecord r = Stored();
  r.previous = r.current;
  r.current = NewKeyWithCertificate("cakewalk-tls-2", std::chrono::hours(24));
  Store(r);
  ASSERT_TRUE(hsm::KeyPair::Destroy(Token().token(), "cakewalk-tls-1").ok());
  auto id = OpenIdentity();
  ASSERT_NE(id, nullptr);
  EXPECT_EQ(id->key()->label(), "cakewalk-tls-2");
  EXPECT_FALSE(Stored().previous.has_value());
}

TEST_F(IdentityOpenTest, TheNewestValidCertificateWhoseKeyExistsIsUsed) {
  // current: a newer key whose certificate is not valid yet (say, the clock went back); previous:
  // the enrolled one. The enrolled one is used, the other kept as previous.
  IdentityRecord r = Stored();
  const IdentityCertificate enrolled = r.current;
  r.previous = enrolled;
  r.current =
      NewKeyWithCertificate("cakewalk-tls-2", std::chrono::hours(48), std::chrono::hours(2));
  Store(r);
  auto id = OpenIdentity();
  ASSERT_NE(id, nullptr);
  EXPECT_EQ(id->key()->label(), "cakewalk-tls-1");
  EXPECT_TRUE(CallWorks(*id, config_));
  IdentityRecord after = Stored();
  EXPECT_EQ(after.current.key_label, "cakewalk-tls-1");
  ASSERT_TRUE(after.previous.has_value());
  EXPECT_EQ(after.previous->key_label, "cakewalk-tls-2");

  // Both valid: the current (newer) one stays.
  r = Stored();
  r.previous = r.current;
  r.current = NewKeyWithCertificate("cakewalk-tls-3", std::chrono::hours(24));
  Store(r);
  id = OpenIdentity();
  ASSERT_NE(id, nullptr);
  EXPECT_EQ(id->key()->label(), "cakewalk-tls-3");

  // An expired current one with no usable alternative is still opened (doctor reports it).
  r = Stored();
  r.previous.reset();
  r.current =
      NewKeyWithCertificate("cakewalk-tls-4", -std::chrono::seconds(60), -std::chrono::hours(2));
  Store(r);
  id = OpenIdentity();
  ASSERT_NE(id, nullptr);
  EXPECT_EQ(id->key()->label(), "cakewalk-tls-4");
  EXPECT_LT(id->certificate_not_after(), std::chrono::system_clock::now());
}

TEST_F(IdentityOpenTest, NoKeyAtAllOrAnotherTokenSaysToEnrollAgain) {
  ASSERT_TRUE(hsm::KeyPair::Destroy(Token().token(), "cakewalk-tls-1").ok());
  auto gone = Identity::Open(config_.state_dir, Token().token(), log_);
  ASSERT_FALSE(gone.ok());
  EXPECT_THAT(gone.status().message(),
              HasSubstr("the agent's identity key cakewalk-tls-1 is not in token "
                        "'cakewalk-agent'"));
  EXPECT_THAT(gone.status().message(), HasSubstr("cakewalk-agent enroll --force"));

  IdentityRecord r = Stored();
  r.token.serial = "somewhere-else";
  Store(r);
  auto other = Identity::Open(config_.state_dir, Token().token(), log_);
  ASSERT_FALSE(other.ok());
  EXPECT_THAT(other.status().message(), HasSubstr("(serial somewhere-else)"));
  EXPECT_THAT(other.status().message(), HasSubstr("token.uri"));
}

TEST_F(IdentityOpenTest, SigningKeysAreUpdatedAndStored) {
  auto id = OpenIdentity();
  ASSERT_NE(id, nullptr);
  std::vector<SigningKey> keys = {{"jsk_a", std::vector<std::uint8_t>(32, 1)},
                                  {"jsk_b", std::vector<std::uint8_t>(32, 2)}};
  ASSERT_TRUE(id->UpdateSigningKeys(keys).ok());
  ASSERT_EQ(id->signing_keys().size(), 2u);
  IdentityRecord stored = Stored();
  ASSERT_EQ(stored.signing_keys.size(), 2u);
  EXPECT_EQ(stored.signing_keys[1].kid, "jsk_b");
  EXPECT_EQ(stored.signing_keys[1].public_key, keys[1].public_key);
}

TEST_F(IdentityOpenTest, CommitSwitchesTheKeyOnlyWithTheKeyAndBumpsTheGeneration) {
  auto id = OpenIdentity();
  ASSERT_NE(id, nullptr);
  const std::uint64_t g = id->generation();
  IdentityRecord next = id->record();
  next.previous = next.current;
  next.current = NewKeyWithCertificate("cakewalk-tls-2", std::chrono::hours(24));
  Status without = id->Commit(next);
  EXPECT_FALSE(without.ok());
  EXPECT_EQ(id->generation(), g);
  EXPECT_EQ(Stored().current.key_label, "cakewalk-tls-1") << "nothing stored";

  auto key = hsm::KeyPair::Find(Token().token(), "cakewalk-tls-2");
  ASSERT_TRUE(key.ok());
  ASSERT_TRUE(id->Commit(next, std::shared_ptr<hsm::TokenKey>(std::move(*key))).ok());
  EXPECT_EQ(id->generation(), g + 1);
  EXPECT_EQ(id->key()->label(), "cakewalk-tls-2");
  EXPECT_EQ(id->client_identity().generation, g + 1);
  EXPECT_EQ(Stored().current.key_label, "cakewalk-tls-2");
  // Committing without a switch keeps the generation.
  ASSERT_TRUE(id->Commit(id->record()).ok());
  EXPECT_EQ(id->generation(), g + 1);
}

TEST_F(IdentityOpenTest, NothingSecretIsStored) {
  const std::string text = testing::ReadFile(IdentityFile(config_.state_dir));
  EXPECT_THAT(text, Not(HasSubstr("PRIVATE")));
  EXPECT_THAT(text, Not(HasSubstr(hsm_->token().user_pin)));
  EXPECT_EQ(Listing(config_.state_dir), std::vector<std::string>{"identity.json"});
}

}  // namespace
}  // namespace cakewalk::agent
