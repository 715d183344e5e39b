// Enrollment end to end: a private SoftHSM token, the fake control plane over HTTPS, the agent's
// own transport with the token key for mutual TLS.
#include "agent/enroll.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/journal.h"
#include "agent/rotation.h"
#include "agent/version.h"
#include "tests/agent/identity_fixture.h"
#include "tests/support/canary.h"
#include "tests/support/pki.h"

namespace cakewalk::agent {
namespace {

using testing::FindCanaryIn;
using testing::FindCanaryInTree;
using ::testing::HasSubstr;
using testing::MakeCanary;
using ::testing::Not;
using ::testing::StartsWith;

std::string FileText(const std::filesystem::path& p) { return testing::ReadFile(p); }

mode_t ModeOf(const std::filesystem::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

// A pipe holding `content`, its write end closed: the read end.
int PipeWith(std::string_view content) {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  EXPECT_EQ(::write(fds[1], content.data(), content.size()), static_cast<ssize_t>(content.size()));
  ::close(fds[1]);
  return fds[0];
}

class EnrollTest : public IdentityTest {
 protected:
  void OpenRaw() {
    if (raw_ != nullptr) return;
    auto r = testing::RawPkcs11::Load();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    raw_ = std::move(*r);
    auto s = raw_->OpenUserSession(hsm_->token().label, hsm_->token().user_pin);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    session_ = *s;
  }
  // Objects labelled `label` of class `cls`, found through a raw PKCS#11 session.
  std::vector<CK_OBJECT_HANDLE> RawFind(const std::string& label, CK_OBJECT_CLASS cls) {
    OpenRaw();
    if (raw_ == nullptr) return {};
    auto found = raw_->FindByLabel(session_, label, cls);
    EXPECT_TRUE(found.ok()) << found.status().ToString();
    return found.ok() ? *found : std::vector<CK_OBJECT_HANDLE>{};
  }
  // Token objects of every kind.
  std::size_t ObjectCount() {
    OpenRaw();
    if (raw_ == nullptr) return 0;
    auto n = raw_->CountObjects(session_);
    EXPECT_TRUE(n.ok());
    return n.ok() ? *n : 0;
  }

  std::unique_ptr<testing::RawPkcs11> raw_;
  CK_SESSION_HANDLE session_ = CK_INVALID_HANDLE;
};

TEST_F(EnrollTest, EnrollsAndTheTokenKeyAuthenticatesMutualTls) {
  auto outcome = EnrollNow();
  ASSERT_TRUE(outcome.ok()) << outcome.status().ToString();
  EXPECT_THAT(outcome->agent_id, StartsWith("agt_"));
  EXPECT_EQ(outcome->key_label, "cakewalk-tls-1");
  EXPECT_FALSE(outcome->replaced_agent_id.has_value());
  EXPECT_THAT(out_.str(), HasSubstr("Enrolled as " + outcome->agent_id +
                                    " with the EC P-256 key cakewalk-tls-1 in token "
                                    "'cakewalk-agent'; certificate valid until "));

  // What the control plane recorded about the agent.
  auto agent = cp_->fake().Agent(outcome->agent_id);
  ASSERT_TRUE(agent.has_value());
  EXPECT_EQ(agent->hostname, "agent-host");
  EXPECT_EQ(agent->agent_version, kAgentVersion);
  EXPECT_EQ(agent->token["label"].asString(), "cakewalk-agent");
  EXPECT_EQ(agent->token["serial"].asString(), Token().token().info().serial);
  EXPECT_EQ(agent->token["manufacturer"].asString(), "SoftHSM project");

  // The state directory and the identity file.
  EXPECT_EQ(ModeOf(config_.state_dir), 0700u);
  EXPECT_EQ(ModeOf(IdentityFile(config_.state_dir)), 0600u);
  auto identity = OpenIdentity();
  ASSERT_NE(identity, nullptr);
  EXPECT_EQ(identity->agent_id(), outcome->agent_id);
  EXPECT_EQ(identity->poll_wait_seconds(), 25);
  ASSERT_EQ(identity->signing_keys().size(), 1u);
  EXPECT_EQ(identity->signing_keys()[0].kid, cp_->fake().current_kid());
  EXPECT_EQ(identity->certificate_not_after(), outcome->certificate_not_after);
  EXPECT_EQ(identity->key()->label(), "cakewalk-tls-1");
  EXPECT_EQ(SpkiSha256Hex(*identity->key()), agent->key_sha256.at(0));

  // A call authenticated by the token key: the fake names the agent from the client certificate.
  EXPECT_TRUE(CallWorks(*identity, config_));
  const ClientIdentity ci = identity->client_identity();
  auto client = MakeControlPlaneClient(config_, &Token().secrets(), &ci);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  Json::Value hb(Json::objectValue);
  hb["agent_version"] = kAgentVersion;
  hb["uptime_seconds"] = 1;
  hb["certificate_expires_at"] = FormatRfc3339(ci.not_after);
  hb["token"]["manufacturer"] = "SoftHSM project";
  hb["token"]["model"] = "SoftHSM v2";
  hb["token"]["serial"] = "x";
  hb["token"]["label"] = "cakewalk-agent";
  hb["connections"] = Json::Value(Json::arrayValue);
  hb["secrets"] = Json::Value(Json::arrayValue);
  hb["jobs"]["running"] = 0;
  hb["jobs"]["results_pending"] = 0;
  auto beat = (*client)->Heartbeat(hb);
  ASSERT_TRUE(beat.ok()) << beat.status().ToString();
  EXPECT_FALSE(beat->renew_certificate);
  ASSERT_EQ(cp_->fake().Heartbeats().size(), 1u);
  EXPECT_EQ(cp_->fake().Heartbeats()[0].agent_id, outcome->agent_id);
  EXPECT_TRUE(cp_->fake().Violations().empty());
  client->reset();

  // The private key: sensitive, never extractable, its value unreadable.
  auto priv = RawFind("cakewalk-tls-1", CKO_PRIVATE_KEY);
  ASSERT_EQ(priv.size(), 1u);
  ASSERT_EQ(RawFind("cakewalk-tls-1", CKO_PUBLIC_KEY).size(), 1u);
  CK_FUNCTION_LIST* f = raw_->f();
  CK_ATTRIBUTE value{CKA_VALUE, nullptr, 0};
  EXPECT_EQ(f->C_GetAttributeValue(session_, priv[0], &value, 1), CKR_ATTRIBUTE_SENSITIVE);
  CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE, never_extractable = CK_FALSE;
  CK_ATTRIBUTE flags[] = {{CKA_SENSITIVE, &sensitive, 1},
                          {CKA_EXTRACTABLE, &extractable, 1},
                          {CKA_NEVER_EXTRACTABLE, &never_extractable, 1}};
  ASSERT_EQ(f->C_GetAttributeValue(session_, priv[0], flags, 3), CKR_OK);
  EXPECT_EQ(sensitive, CK_TRUE);
  EXPECT_EQ(extractable, CK_FALSE);
  EXPECT_EQ(never_extractable, CK_TRUE);

  // pkcs11-tool shows it under its label.
  const auto& t = hsm_->token();
  testing::ProgramResult r = testing::RunProgram(
      {"pkcs11-tool", "--module", testing::SoftHsm::kModulePath, "--token-label", t.label,
       "--login", "--pin", t.user_pin, "--list-objects", "--type", "privkey"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("label:      cakewalk-tls-1"));
}

TEST_F(EnrollTest, TheIdentityFileHoldsNoSecret) {
  const std::string canary = MakeCanary("enrollment-token");
  cp_->fake().AddEnrollmentToken(canary);
  auto outcome = EnrollWith(config_, canary);
  ASSERT_TRUE(outcome.ok()) << outcome.status().ToString();
  const std::string text = FileText(IdentityFile(config_.state_dir));
  EXPECT_THAT(text, Not(HasSubstr("PRIVATE KEY")));
  EXPECT_THAT(text, HasSubstr("-----BEGIN CERTIFICATE-----"));
  // Exactly the documented members.
  auto json = ParseJson(text, "identity");
  ASSERT_TRUE(json.ok());
  EXPECT_EQ(json->getMemberNames(),
            (std::vector<std::string>{"agent_id", "control_plane_url", "current", "enrolled_at",
                                      "format", "job_signing_keys", "next_key_number",
                                      "poll_wait_seconds", "token"}));
  EXPECT_EQ((*json)["current"].getMemberNames(),
            (std::vector<std::string>{"certificate_chain", "key_label"}));
  // The enrollment token is nowhere: not in the state directory, the token's files, the output
  // or the log.
  std::vector<std::string> hits = FindCanaryInTree(canary, config_.state_dir);
  auto more = FindCanaryInTree(canary, hsm_->token_dir());
  hits.insert(hits.end(), more.begin(), more.end());
  more = FindCanaryIn(canary, out_.str(), "output");
  hits.insert(hits.end(), more.begin(), more.end());
  more = FindCanaryIn(canary, log_.Text(), "log");
  hits.insert(hits.end(), more.begin(), more.end());
  EXPECT_TRUE(hits.empty()) << ::testing::PrintToString(hits);
  // The token was sent, once, as a Bearer credential (the fake consumed it).
  auto again = EnrollWith(config_, canary, /*force=*/true);
  ASSERT_FALSE(again.ok());
  EXPECT_THAT(again.status().message(), HasSubstr("already used"));
  EXPECT_TRUE(FindCanaryIn(canary, again.status().ToString(), "status").empty());
}

TEST_F(EnrollTest, TokenFromAFileTrimmedAndChecked) {
  const std::string canary = MakeCanary("enrollment-token");
  testing::WriteFile(dir_ / "t1", "  " + canary + " \r\n\n");
  auto token = ReadEnrollmentToken((dir_ / "t1").string());
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  EXPECT_EQ(token->RevealString(SecretAccess::Grant()), canary);

  std::vector<std::string> errors;
  testing::WriteFile(dir_ / "readable", canary, 0644);
  auto readable = ReadEnrollmentToken((dir_ / "readable").string());
  ASSERT_FALSE(readable.ok());
  EXPECT_THAT(readable.status().message(), HasSubstr("cannot read the enrollment token"));
  errors.push_back(readable.status().ToString());

  testing::WriteFile(dir_ / "spaced", canary + " and more");
  auto spaced = ReadEnrollmentToken((dir_ / "spaced").string());
  ASSERT_FALSE(spaced.ok());
  EXPECT_THAT(spaced.status().message(), HasSubstr("contains spaces"));
  errors.push_back(spaced.status().ToString());

  testing::WriteFile(dir_ / "empty", " \n");
  auto empty = ReadEnrollmentToken((dir_ / "empty").string());
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.status().message(), HasSubstr("is empty"));

  testing::WriteFile(dir_ / "huge", canary + std::string(5000, 'x'));
  auto huge = ReadEnrollmentToken((dir_ / "huge").string());
  ASSERT_FALSE(huge.ok());
  errors.push_back(huge.status().ToString());

  auto missing = ReadEnrollmentToken((dir_ / "missing").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("does not exist"));
  EXPECT_EQ(ReadEnrollmentToken("").status().code(), Code::kInvalidArgument);
  for (const auto& e : errors) EXPECT_TRUE(FindCanaryIn(canary, e, "error").empty()) << e;
}

TEST_F(EnrollTest, TokenFromStandardInput) {
  const std::string canary = MakeCanary("enrollment-token");
  // Through a descriptor handed in...
  int fd = PipeWith(canary + "\n");
  auto token = ReadEnrollmentToken("-", fd);
  ::close(fd);
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  EXPECT_EQ(token->RevealString(SecretAccess::Grant()), canary);

  // ... and through the process's own standard input (a pipe, so no prompt).
  fd = PipeWith("\t" + canary + "\n");
  ASSERT_EQ(::dup2(fd, STDIN_FILENO), STDIN_FILENO);
  ::close(fd);
  auto from_stdin = ReadEnrollmentToken("-");
  ASSERT_TRUE(from_stdin.ok()) << from_stdin.status().ToString();
  EXPECT_EQ(from_stdin->RevealString(SecretAccess::Grant()), canary);

  fd = PipeWith(canary + "\x01");
  auto control = ReadEnrollmentToken("-", fd);
  ::close(fd);
  ASSERT_FALSE(control.ok());
  EXPECT_THAT(control.status().message(), HasSubstr("from standard input contains"));
  EXPECT_TRUE(FindCanaryIn(canary, control.status().ToString(), "error").empty());
}

TEST_F(EnrollTest, RunEnrollReadsStandardInputAndTheTokenLeaksNowhere) {
  const std::string canary = MakeCanary("enrollment-token");
  cp_->fake().AddEnrollmentToken(canary);
  int fd = PipeWith(canary + "\n");
  ASSERT_EQ(::dup2(fd, STDIN_FILENO), STDIN_FILENO);
  ::close(fd);
  EnrollOptions options;
  options.token_file = "-";
  std::ostringstream out;
  ::testing::internal::CaptureStderr();
  Status s = RunEnroll(config_, options, out, log_);
  const std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_THAT(out.str(), HasSubstr("Enrolled as agt_"));
  ASSERT_TRUE(cp_->fake().WaitForEnrollments(1));

  // The same token again (used up), from a file: refused, and the message has no token in it.
  testing::WriteFile(dir_ / "again", canary);
  options.token_file = (dir_ / "again").string();
  options.force = true;
  Status used = RunEnroll(config_, options, out, log_);
  ASSERT_FALSE(used.ok());
  EXPECT_THAT(used.message(),
              HasSubstr("the enrollment token was refused (unknown or already used): create a "
                        "new one in the Cakewalk UI"));

  std::vector<std::string> hits;
  for (const auto& [where, text] :
       std::vector<std::pair<std::string, std::string>>{{"output", out.str()},
                                                        {"stderr", err},
                                                        {"log", log_.Text()},
                                                        {"status", used.ToString()}}) {
    auto h = FindCanaryIn(canary, text, where);
    hits.insert(hits.end(), h.begin(), h.end());
  }
  auto h = FindCanaryInTree(canary, config_.state_dir);
  hits.insert(hits.end(), h.begin(), h.end());
  h = FindCanaryInTree(canary, hsm_->token_dir());
  hits.insert(hits.end(), h.begin(), h.end());
  EXPECT_TRUE(hits.empty()) << ::testing::PrintToString(hits);
}

TEST_F(EnrollTest, EnrollingTwiceWithoutForceIsRefusedAndChangesNothing) {
  auto first = EnrollNow();
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  const std::string before = FileText(IdentityFile(config_.state_dir));
  const std::size_t objects = ObjectCount();

  auto second = EnrollNow();
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Code::kFailedPrecondition);
  EXPECT_THAT(second.status().message(),
              HasSubstr("the agent is already enrolled (agent " + first->agent_id +
                        ", key cakewalk-tls-1 in token 'cakewalk-agent', certificate valid "
                        "until "));
  EXPECT_THAT(second.status().message(), HasSubstr("cakewalk-agent enroll --force"));
  EXPECT_EQ(FileText(IdentityFile(config_.state_dir)), before);
  EXPECT_EQ(ObjectCount(), objects);
  EXPECT_FALSE(KeyExists("cakewalk-tls-2"));
  EXPECT_EQ(cp_->fake().Agents().size(), 1u);

  // The command refuses before reading the token file (which need not even exist).
  CloseToken();
  EnrollOptions options;
  options.token_file = (dir_ / "no-such-file").string();
  Status s = RunEnroll(config_, options, out_, log_);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("already enrolled"));
  EXPECT_EQ(FileText(IdentityFile(config_.state_dir)), before);
}

// A running agent holds the journal's lock; --force would destroy the key it uses.
TEST_F(EnrollTest, ForceIsRefusedWhileTheAgentRuns) {
  auto first = EnrollNow();
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  const std::string before = FileText(IdentityFile(config_.state_dir));
  CloseToken();
  EnrollOptions options;
  options.force = true;
  options.token_file = (dir_ / "no-such-file").string();
  {
    auto agent = FileLock::TryAcquire(config_.state_dir / JobJournal::kLockFileName);
    ASSERT_TRUE(agent.ok() && agent->has_value());
    Status s = RunEnroll(config_, options, out_, log_);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), Code::kFailedPrecondition);
    EXPECT_THAT(s.message(), HasSubstr("the agent is running"));
    EXPECT_THAT(s.message(), HasSubstr("systemctl stop cakewalk-agent"));
    EXPECT_EQ(FileText(IdentityFile(config_.state_dir)), before);
  }
  // Stopped: the same command goes on (and here fails on the missing token file, not the lock).
  Status s = RunEnroll(config_, options, out_, log_);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("cannot read the enrollment token"));
  EXPECT_EQ(FileText(IdentityFile(config_.state_dir)), before);
}

TEST_F(EnrollTest, ForceSaysWhatItReplacesAndDestroysTheOldKeyAfterStoring) {
  auto first = EnrollNow();
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  out_.str("");
  auto second = EnrollNow(/*force=*/true);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_NE(second->agent_id, first->agent_id);
  EXPECT_EQ(second->key_label, "cakewalk-tls-2");
  ASSERT_TRUE(second->replaced_agent_id.has_value());
  EXPECT_EQ(*second->replaced_agent_id, first->agent_id);
  const std::string out = out_.str();
  EXPECT_THAT(out, HasSubstr("Replacing the enrolled identity: agent " + first->agent_id +
                             ", key cakewalk-tls-1 in token 'cakewalk-agent', certificate valid "
                             "until " +
                             FormatRfc3339(first->certificate_not_after)));
  EXPECT_THAT(out, HasSubstr("Destroyed the replaced key cakewalk-tls-1"));
  // Said in this order: replace, enroll, destroy.
  EXPECT_LT(out.find("Replacing"), out.find("Enrolled as"));
  EXPECT_LT(out.find("Enrolled as"), out.find("Destroyed"));
  EXPECT_FALSE(KeyExists("cakewalk-tls-1"));
  EXPECT_TRUE(KeyExists("cakewalk-tls-2"));

  auto identity = OpenIdentity();
  ASSERT_NE(identity, nullptr);
  EXPECT_EQ(identity->agent_id(), second->agent_id);
  EXPECT_TRUE(CallWorks(*identity, config_));
  EXPECT_EQ(identity->record().next_key_number, 3u);
}

TEST_F(EnrollTest, EveryFailedEnrollmentKeepsThePreviousIdentityAndLeavesNoNewKey) {
  auto first = EnrollNow();
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  const std::string before = FileText(IdentityFile(config_.state_dir));
  const std::size_t objects = ObjectCount();

  struct Case {
    std::function<void()> arrange;
    std::string token;  // empty: a fresh valid one
    std::string expected;
  };
  using testing::ControlPlaneFault;
  using testing::Endpoint;
  const std::vector<Case> cases = {
      {[] {}, "unknown-token",
       "enrollment failed: the enrollment token was refused (unknown or already used): create a "
       "new one in the Cakewalk UI (enrollment (POST /enroll): the control plane answered HTTP "
       "401 invalid_token"},
      {[&] { cp_->fake().QueueFault(ControlPlaneFault::Status(409), 1, Endpoint::kEnroll); }, "",
       "the control plane says the new key is already enrolled (409)"},
      {[&] { cp_->fake().QueueFault(ControlPlaneFault::Status(422), 1, Endpoint::kEnroll); }, "",
       "the control plane refused the enrollment request"},
      {[&] { cp_->fake().QueueFault(ControlPlaneFault::Status(429, "7"), 1, Endpoint::kEnroll); },
       "", "the control plane is busy; try again in 7 s"},
      {[&] { cp_->fake().QueueFault(ControlPlaneFault::Status(500), 1, Endpoint::kEnroll); }, "",
       "the control plane failed to answer properly; try again later"},
      {[&] {
         ControlPlaneFault f;
         f.kind = ControlPlaneFault::Kind::kMalformedJson;
         cp_->fake().QueueFault(f, 1, Endpoint::kEnroll);
       },
       "", "not the documented JSON"},
      {[&] { cp_->fake().QueueFault(ControlPlaneFault::Reset(), 1, Endpoint::kEnroll); }, "",
       "enrollment failed: the connection to the control plane broke"},
  };
  for (const Case& c : cases) {
    c.arrange();
    const std::string token = c.token.empty() ? cp_->fake().NewEnrollmentToken() : c.token;
    auto r = EnrollWith(config_, token, /*force=*/true);
    ASSERT_FALSE(r.ok()) << c.expected;
    EXPECT_THAT(r.status().message(), HasSubstr(c.expected));
    EXPECT_EQ(FileText(IdentityFile(config_.state_dir)), before) << c.expected;
    EXPECT_EQ(ObjectCount(), objects) << c.expected << ": the new key was left behind";
    EXPECT_TRUE(KeyExists("cakewalk-tls-1"));
  }
  // The previous identity still works.
  auto identity = OpenIdentity();
  ASSERT_NE(identity, nullptr);
  EXPECT_EQ(identity->agent_id(), first->agent_id);
  EXPECT_TRUE(CallWorks(*identity, config_));
}

TEST_F(EnrollTest, ACertificateForAnotherKeyIsRefused) {
  // The fake answers with the enrollment of another agent's key: a chain that is not ours.
  auto first = EnrollNow();
  ASSERT_TRUE(first.ok());
  const std::string other_chain = cp_->fake().Agent(first->agent_id)->certificates.at(0);
  testing::ServerOptions o;
  auto server_cert = [&] {
    auto ca = testing::TestCa::Create("liar CA");
    auto issued = ca->Issue({});
    EXPECT_TRUE(issued.ok());
    testing::WriteFile(dir_ / "liar-ca.pem", ca->cert_pem());
    return *issued;
  }();
  o.certificate_chain_pem = server_cert.chain_pem;
  o.private_key_pem = server_cert.key_pem;
  auto liar = testing::FakeHttpsServer::Start(o, [&](const testing::HttpRequest&) {
    Json::Value body(Json::objectValue);
    body["agent_id"] = first->agent_id;
    body["certificate_chain"] = other_chain;
    body["job_signing_keys"] = Json::Value(Json::arrayValue);
    body["poll_wait_seconds"] = 25;
    return testing::HttpResponse::Json(201, body);
  });
  Config lied_to = MakeConfig([&](Json::Value& c) {
    c["control_plane"]["url"] = liar->base_url() + "/agent/v1";
    c["control_plane"]["ca_file"] = (dir_ / "liar-ca.pem").string();
  });
  const std::size_t objects = ObjectCount();
  auto r = EnrollWith(lied_to, "whatever", /*force=*/true);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(),
              HasSubstr("does not start with a certificate for the agent's key cakewalk-tls-2"));
  EXPECT_EQ(ObjectCount(), objects);
}

// --- TLS negative matrix ---------------------------------------------------------------------

class EnrollTlsTest : public EnrollTest {
 protected:
  // A server speaking the fake control plane's API with `identity` as its certificate.
  std::string ServeWith(const testing::KeyAndCert& identity,
                        testing::ServerOptions::ClientCerts client_certs =
                            testing::ServerOptions::ClientCerts::kVerifyIfPresented,
                        const std::string& client_ca = {}) {
    testing::ServerOptions o;
    o.certificate_chain_pem = identity.chain_pem;
    o.private_key_pem = identity.key_pem;
    o.client_certs = client_certs;
    o.client_ca_pem = client_ca.empty() ? cp_->fake().agent_ca_pem() : client_ca;
    server_ = testing::FakeHttpsServer::Start(o, cp_->fake().AsHandler());
    return server_->base_url() + "/agent/v1";
  }
  // The server CA's certificate for `opts`, issued by a CA that the agent trusts.
  testing::KeyAndCert TrustedLeaf(const testing::TestCa::LeafOptions& opts) {
    if (trusted_ca_ == nullptr) {
      trusted_ca_ = testing::TestCa::Create("trusted CA");
      testing::WriteFile(dir_ / "trusted-ca.pem", trusted_ca_->cert_pem());
    }
    auto leaf = trusted_ca_->Issue(opts);
    EXPECT_TRUE(leaf.ok()) << leaf.status().ToString();
    return *leaf;
  }
  Config ConfigFor(const std::string& url, const std::string& ca_file,
                   std::vector<std::string> pins = {}) {
    return MakeConfig([&](Json::Value& c) {
      c["control_plane"]["url"] = url;
      c["control_plane"]["ca_file"] = ca_file;
      for (const auto& p : pins) c["control_plane"]["pinned_spki_sha256"].append(p);
    });
  }
  // Enrollment fails with `reason` and `message`, and leaves no key.
  void ExpectRefused(const Config& config, const std::string& reason,
                     const std::vector<std::string>& fragments) {
    const std::size_t objects = ObjectCount();
    auto r = EnrollWith(config, cp_->fake().NewEnrollmentToken());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().reason(), reason) << r.status().ToString();
    for (const auto& f : fragments) EXPECT_THAT(r.status().message(), HasSubstr(f));
    EXPECT_EQ(ObjectCount(), objects);
    EXPECT_FALSE(std::filesystem::exists(IdentityFile(config.state_dir)));
    EXPECT_TRUE(cp_->fake().Agents().empty());
  }

  std::unique_ptr<testing::TestCa> trusted_ca_;
  std::unique_ptr<testing::FakeHttpsServer> server_;
};

TEST_F(EnrollTlsTest, CaFileOfAnotherCa) {
  auto other = testing::TestCa::Create("some other CA");
  testing::WriteFile(dir_ / "other-ca.pem", other->cert_pem());
  ExpectRefused(ConfigFor(cp_->base_url(), (dir_ / "other-ca.pem").string()),
                http::reason::kTlsVerifyFailed,
                {"enrollment failed: the control plane's TLS certificate was not accepted",
                 "not issued by a trusted CA", "control_plane.ca_file"});
}

TEST_F(EnrollTlsTest, WrongHostName) {
  testing::TestCa::LeafOptions opts;
  opts.common_name = "agents.elsewhere.example";
  opts.dns_names = {"agents.elsewhere.example"};
  opts.ip_addresses = {};
  const std::string url = ServeWith(TrustedLeaf(opts));
  ExpectRefused(ConfigFor(url, (dir_ / "trusted-ca.pem").string()), http::reason::kTlsVerifyFailed,
                {"not valid for the host name localhost", "control_plane.url"});
}

TEST_F(EnrollTlsTest, ExpiredServerCertificate) {
  testing::TestCa::LeafOptions opts;
  opts.not_before_offset = -std::chrono::hours(48);
  opts.not_after_offset = -std::chrono::hours(1);
  const std::string url = ServeWith(TrustedLeaf(opts));
  ExpectRefused(ConfigFor(url, (dir_ / "trusted-ca.pem").string()), http::reason::kTlsVerifyFailed,
                {"its certificate has expired"});
}

TEST_F(EnrollTlsTest, SelfSignedServerCertificate) {
  auto self = testing::MakeSelfSigned("localhost");
  ASSERT_TRUE(self.ok());
  TrustedLeaf({});  // writes trusted-ca.pem
  const std::string url = ServeWith(*self);
  ExpectRefused(ConfigFor(url, (dir_ / "trusted-ca.pem").string()), http::reason::kTlsVerifyFailed,
                {"self-signed"});
}

TEST_F(EnrollTlsTest, PinMismatchAndMatch) {
  auto other = testing::MakeSelfSigned("elsewhere");
  ASSERT_TRUE(other.ok());
  auto wrong_pin = testing::SpkiSha256Base64(other->cert_pem);
  ASSERT_TRUE(wrong_pin.ok());
  ExpectRefused(ConfigFor(cp_->base_url(), (dir_ / "cp-ca.pem").string(), {*wrong_pin}),
                http::reason::kTlsPinMismatch,
                {"the control plane's key matches no control_plane.pinned_spki_sha256 entry",
                 "matches none of the 1 configured pins"});

  auto right_pin = testing::SpkiSha256Base64(cp_->server_cert_pem());
  ASSERT_TRUE(right_pin.ok());
  auto ok = EnrollWith(
      ConfigFor(cp_->base_url(), (dir_ / "cp-ca.pem").string(), {*wrong_pin, *right_pin}),
      cp_->fake().NewEnrollmentToken());
  EXPECT_TRUE(ok.ok()) << ok.status().ToString();
}

TEST_F(EnrollTlsTest, HttpUrlIsAConfigurationError) {
  Json::Value json = ConfigJson();
  json["control_plane"]["url"] = "http://localhost:" + std::to_string(cp_->port()) + "/agent/v1";
  auto c = ParseConfigJson(json);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("$.control_plane.url"));
  EXPECT_THAT(c.status().message(), HasSubstr("https://"));
}

TEST_F(EnrollTlsTest, AServerThatRejectsTheClientCertificate) {
  auto enrolled = EnrollNow();
  ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
  // Same name and trust, but client certificates must come from a CA the agent's is not from.
  auto foreign_ca = testing::TestCa::Create("foreign agent CA");
  const std::string url = ServeWith(TrustedLeaf({}), testing::ServerOptions::ClientCerts::kRequire,
                                    foreign_ca->cert_pem());
  Config config = ConfigFor(url, (dir_ / "trusted-ca.pem").string());
  auto identity = OpenIdentity();
  ASSERT_NE(identity, nullptr);
  const ClientIdentity ci = identity->client_identity();
  auto client = MakeControlPlaneClient(config, &Token().secrets(), &ci);
  ASSERT_TRUE(client.ok());
  auto keys = (*client)->SigningKeys();
  ASSERT_FALSE(keys.ok());
  EXPECT_EQ(keys.status().reason(), http::reason::kClientCertRejected) << keys.status().ToString();
  EXPECT_EQ(FailureKind(keys.status()),
            "the control plane rejected the agent's client certificate during the TLS handshake");
  EXPECT_THAT(keys.status().message(), HasSubstr("rejected the agent's client certificate"));
}

TEST_F(EnrollTlsTest, AServerThatIgnoresTheClientCertificate) {
  auto enrolled = EnrollNow();
  ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
  const std::string url = ServeWith(TrustedLeaf({}), testing::ServerOptions::ClientCerts::kNone);
  Config config = ConfigFor(url, (dir_ / "trusted-ca.pem").string());
  auto identity = OpenIdentity();
  ASSERT_NE(identity, nullptr);
  const ClientIdentity ci = identity->client_identity();
  auto client = MakeControlPlaneClient(config, &Token().secrets(), &ci);
  ASSERT_TRUE(client.ok());
  auto keys = (*client)->SigningKeys();
  ASSERT_FALSE(keys.ok());
  EXPECT_EQ(keys.status().reason(), cp_reason::kIdentityRejected) << keys.status().ToString();
  EXPECT_EQ(FailureKind(keys.status()), "the control plane refused the agent's identity");
  EXPECT_THAT(keys.status().message(), HasSubstr("401 certificate_required"));
}

TEST_F(EnrollTlsTest, UnreachableControlPlane) {
  Config config = MakeConfig(
      [&](Json::Value& c) { c["control_plane"]["url"] = "https://localhost:1/agent/v1"; });
  ExpectRefused(config, http::reason::kConnectFailed,
                {"enrollment failed: cannot connect to the control plane (DNS or TCP)",
                 "cannot connect to localhost:1"});
}

}  // namespace
}  // namespace cakewalk::agent
