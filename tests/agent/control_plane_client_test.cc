// ControlPlaneClient against the fake control plane over HTTPS (a software client key, so that
// these tests need no token), and against a scripted Transport for what the fake cannot show
// (request timeouts, URL encoding, malformed answers).
#include "agent/control_plane.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <deque>
#include <mutex>

#include "base/encoding.h"
#include "base/json.h"
#include "hsm/x509.h"
#include "jira/curl_transport.h"
#include "tests/fakes/control_plane/running_control_plane.h"
#include "tests/fakes/control_plane/test_util.h"
#include "tests/transport/tls_env.h"

namespace cakewalk::agent {
namespace {

using testing::ControlPlaneFault;
using testing::Endpoint;
using ::testing::HasSubstr;
using testing::RunningControlPlane;
using ::testing::StartsWith;
using namespace std::chrono_literals;

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cp = RunningControlPlane::Start();
    ASSERT_TRUE(cp.ok()) << cp.status().ToString();
    cp_ = std::move(*cp);
    ca_file_ = dir_ / "cp-ca.pem";
    testing::WriteFile(ca_file_, cp_->server_ca_pem());
    anonymous_ = MakeTransport(nullptr);
    client_ = std::make_unique<ControlPlaneClient>(*anonymous_, cp_->base_url());
  }

  std::unique_ptr<http::Transport> MakeTransport(const testing::KeyAndCert* identity,
                                                 std::chrono::milliseconds timeout = 20s) {
    http::TransportOptions o;
    o.config_name = "control_plane";
    o.ca_file = ca_file_.string();
    o.connect_timeout = 5s;
    o.timeout = timeout;
    if (identity != nullptr) o.client_identity = testing::SoftwareIdentity(*identity);
    auto t = http::CurlTransport::Create(std::move(o));
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return t.ok() ? std::move(t).value() : nullptr;
  }

  EnrollRequest Request(const std::string& csr) {
    EnrollRequest r;
    r.csr_pem = csr;
    r.hostname = "host-1";
    r.agent_version = "0.1.0";
    r.token = {"SoftHSM project", "SoftHSM v2", "0123", "cakewalk"};
    return r;
  }

  // Enrolls a fresh software key and returns a client presenting its certificate.
  void EnrollAgent() {
    key_ = testing::NewEcP256Key();
    const SecretBytes token = SecretBytes::CopyOf(cp_->fake().NewEnrollmentToken());
    auto enrolled = client_->Enroll(token, Request(testing::MakeCsrPem(key_.get())));
    ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
    agent_id_ = enrolled->agent_id;
    chain_ = enrolled->certificate_chain_pem;
    identity_.key_pem = testing::PrivateKeyPem(key_.get());
    identity_.chain_pem = chain_;
    identity_.cert_pem = chain_;
    mtls_ = MakeTransport(&identity_);
    agent_ = std::make_unique<ControlPlaneClient>(*mtls_, cp_->base_url());
  }

  void QueueFault(ControlPlaneFault fault, Endpoint endpoint) {
    cp_->fake().QueueFault(std::move(fault), 1, endpoint);
  }

  testing::TempDir dir_{"cakewalk-cp-client"};
  std::unique_ptr<RunningControlPlane> cp_;
  std::filesystem::path ca_file_;
  std::unique_ptr<http::Transport> anonymous_;
  std::unique_ptr<ControlPlaneClient> client_;
  testing::EvpPkeyPtr key_;
  std::string agent_id_;
  std::string chain_;
  testing::KeyAndCert identity_;
  std::unique_ptr<http::Transport> mtls_;
  std::unique_ptr<ControlPlaneClient> agent_;
};

TEST_F(ClientTest, EnrollReturnsTheAgentIdChainKeysAndPollWait) {
  ASSERT_NO_FATAL_FAILURE(EnrollAgent());
  EXPECT_THAT(agent_id_, StartsWith("agt_"));
  auto chain = hsm::ParsePemChain(chain_);
  ASSERT_TRUE(chain.ok()) << chain.status().ToString();
  EXPECT_EQ(chain->size(), 2u);  // leaf, agent CA
  EXPECT_EQ(testing::CommonName(chain_), agent_id_);
  auto agent = cp_->fake().Agent(agent_id_);
  ASSERT_TRUE(agent.has_value());
  EXPECT_EQ(agent->hostname, "host-1");
  EXPECT_EQ(agent->agent_version, "0.1.0");
  EXPECT_EQ(agent->token["serial"].asString(), "0123");
  EXPECT_EQ(agent->token["label"].asString(), "cakewalk");

  // The enrollment token travelled as a Bearer credential.
  auto requests = cp_->server().requests();
  ASSERT_FALSE(requests.empty());
  EXPECT_THAT(requests.back().Header("authorization"), StartsWith("Bearer "));
  EXPECT_THAT(requests.back().Header("content-type"), StartsWith("application/json"));
}

TEST_F(ClientTest, EnrollResponseCarriesSigningKeysAndPollWait) {
  auto token = SecretBytes::CopyOf(cp_->fake().NewEnrollmentToken());
  auto key = testing::NewEcP256Key();
  auto enrolled = client_->Enroll(token, Request(testing::MakeCsrPem(key.get())));
  ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
  EXPECT_EQ(enrolled->poll_wait_seconds, 25);
  ASSERT_EQ(enrolled->signing_keys.size(), 1u);
  EXPECT_EQ(enrolled->signing_keys[0].kid, cp_->fake().current_kid());
  EXPECT_EQ(enrolled->signing_keys[0].public_key.size(), 32u);
}

TEST_F(ClientTest, UnknownOrUsedEnrollmentTokenIsIdentityRejected) {
  auto key = testing::NewEcP256Key();
  auto unknown = client_->Enroll(SecretBytes::CopyOf(std::string_view("nope")),
                                 Request(testing::MakeCsrPem(key.get())));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().reason(), cp_reason::kIdentityRejected);
  EXPECT_EQ(unknown.status().code(), Code::kUnauthenticated);
  EXPECT_THAT(unknown.status().message(), HasSubstr("HTTP 401 invalid_token"));
  EXPECT_THAT(unknown.status().message(), HasSubstr("POST /enroll"));

  const SecretBytes token = SecretBytes::CopyOf(cp_->fake().NewEnrollmentToken());
  ASSERT_TRUE(client_->Enroll(token, Request(testing::MakeCsrPem(key.get()))).ok());
  auto key2 = testing::NewEcP256Key();
  auto used = client_->Enroll(token, Request(testing::MakeCsrPem(key2.get())));
  ASSERT_FALSE(used.ok());
  EXPECT_EQ(used.status().reason(), cp_reason::kIdentityRejected);
  EXPECT_THAT(used.status().message(), HasSubstr("token_used"));
}

TEST_F(ClientTest, EnrollingAKeyTwiceIsAConflict) {
  auto key = testing::NewEcP256Key();
  const std::string csr = testing::MakeCsrPem(key.get());
  ASSERT_TRUE(
      client_->Enroll(SecretBytes::CopyOf(cp_->fake().NewEnrollmentToken()), Request(csr)).ok());
  auto again = client_->Enroll(SecretBytes::CopyOf(cp_->fake().NewEnrollmentToken()), Request(csr));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().reason(), cp_reason::kConflict);
  EXPECT_EQ(again.status().code(), Code::kAborted);
  EXPECT_THAT(again.status().message(), HasSubstr("409 already_enrolled"));
}

TEST_F(ClientTest, BadRequestsAreRequestRejected) {
  auto token = SecretBytes::CopyOf(cp_->fake().NewEnrollmentToken());
  auto key = testing::NewEcP256Key();
  auto bad_sig = client_->Enroll(token, Request(testing::MakeCsrWithBadSignature(key.get())));
  ASSERT_FALSE(bad_sig.ok());
  EXPECT_EQ(bad_sig.status().reason(), cp_reason::kRequestRejected);
  EXPECT_THAT(bad_sig.status().message(), HasSubstr("422 invalid_csr"));

  auto rsa = testing::NewRsaKey(2048);
  auto weak = client_->Enroll(token, Request(testing::MakeCsrPem(rsa.get())));
  ASSERT_FALSE(weak.ok());
  EXPECT_EQ(weak.status().reason(), cp_reason::kRequestRejected);
  EXPECT_THAT(weak.status().message(), HasSubstr("422 unsupported_key"));

  EnrollRequest empty_host = Request(testing::MakeCsrPem(key.get()));
  empty_host.hostname.clear();
  auto malformed = client_->Enroll(token, empty_host);
  ASSERT_FALSE(malformed.ok());
  EXPECT_EQ(malformed.status().reason(), cp_reason::kRequestRejected);
  EXPECT_EQ(malformed.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(malformed.status().message(), HasSubstr("400 invalid_request"));
  // None of these used the token up.
  EXPECT_TRUE(client_->Enroll(token, Request(testing::MakeCsrPem(key.get()))).ok());
}

TEST_F(ClientTest, AnEnrollmentTokenThatCannotBeAHeaderIsNeverSent) {
  auto key = testing::NewEcP256Key();
  for (std::string_view bad : {"two words", "line\r\nX-Injected: 1", "", "caf\xc3\xa9"}) {
    auto r = client_->Enroll(SecretBytes::CopyOf(bad), Request(testing::MakeCsrPem(key.get())));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("cannot be sent"));
  }
  EXPECT_TRUE(cp_->fake().Requests().empty());
}

TEST_F(ClientTest, AuthenticatedCallsPresentTheAgentCertificate) {
  ASSERT_NO_FATAL_FAILURE(EnrollAgent());
  auto keys = agent_->SigningKeys();
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  ASSERT_EQ(keys->size(), 1u);
  auto hb = agent_->Heartbeat(testing::HeartbeatBody(chain_));
  ASSERT_TRUE(hb.ok()) << hb.status().ToString();
  EXPECT_FALSE(hb->renew_certificate);
  ASSERT_TRUE(cp_->fake().RequestCertificateRenewal(agent_id_).ok());
  hb = agent_->Heartbeat(testing::HeartbeatBody(chain_));
  ASSERT_TRUE(hb.ok()) << hb.status().ToString();
  EXPECT_TRUE(hb->renew_certificate);

  for (const auto& r : cp_->fake().Requests()) {
    if (r.endpoint == Endpoint::kSigningKeys || r.endpoint == Endpoint::kHeartbeat) {
      EXPECT_EQ(r.agent_id, agent_id_);
      EXPECT_EQ(r.status, 200);
    }
  }
  EXPECT_TRUE(cp_->fake().Violations().empty());

  // Without the certificate the same call is refused as an identity problem.
  auto anonymous = client_->SigningKeys();
  ASSERT_FALSE(anonymous.ok());
  EXPECT_EQ(anonymous.status().reason(), cp_reason::kIdentityRejected);
  EXPECT_THAT(anonymous.status().message(), HasSubstr("certificate_required"));
}

TEST_F(ClientTest, RenewalReturnsAChainForTheNewKey) {
  ASSERT_NO_FATAL_FAILURE(EnrollAgent());
  auto new_key = testing::NewEcP256Key();
  auto chain = agent_->RenewCertificate(testing::MakeCsrPem(new_key.get()));
  ASSERT_TRUE(chain.ok()) << chain.status().ToString();
  EXPECT_EQ(testing::CommonName(*chain), agent_id_);
  EXPECT_EQ(cp_->fake().Agent(agent_id_)->renewals, 1);
  // Reusing the enrolled key is a conflict.
  auto reuse = agent_->RenewCertificate(testing::MakeCsrPem(key_.get()));
  ASSERT_FALSE(reuse.ok());
  EXPECT_EQ(reuse.status().reason(), cp_reason::kConflict);
}

TEST_F(ClientTest, ClaimLeaseResultRoundTrip) {
  ASSERT_NO_FATAL_FAILURE(EnrollAgent());
  testing::JobSpec spec;
  spec.type = "jira.connection.verify";
  spec.connection = "jira-prod";
  auto job_id = cp_->fake().EnqueueJob(spec);
  ASSERT_TRUE(job_id.ok()) << job_id.status().ToString();

  auto jobs = agent_->Claim(2, 0);
  ASSERT_TRUE(jobs.ok()) << jobs.status().ToString();
  ASSERT_EQ(jobs->size(), 1u);
  const ClaimedJob& job = (*jobs)[0];
  EXPECT_EQ(testing::JwsPayload(job.jws)["jti"].asString(), *job_id);
  EXPECT_GT(job.lease_expires_at, std::chrono::system_clock::now());

  auto extended = agent_->ExtendLease(*job_id, job.lease_id);
  ASSERT_TRUE(extended.ok()) << extended.status().ToString();
  EXPECT_GE(*extended, job.lease_expires_at);

  // Records are not expected for this job type: a request-level refusal.
  Status rec =
      agent_->PostRecordTexts(*job_id, job.lease_id, 0, {WriteJson(testing::UserRecord("u1"))});
  EXPECT_EQ(rec.reason(), cp_reason::kRequestRejected) << rec.ToString();
  EXPECT_THAT(rec.message(), HasSubstr("422 records_not_expected"));

  JobResult result;
  result.lease_id = job.lease_id;
  result.outcome = JobResult::Outcome::kFailed;
  result.started_at = std::chrono::system_clock::now() - 2s;
  result.finished_at = std::chrono::system_clock::now();
  result.error = {"auth_failed", "Jira refused the credentials", false};
  ASSERT_TRUE(agent_->PostResult(*job_id, result).ok());
  ASSERT_TRUE(agent_->PostResult(*job_id, result).ok()) << "idempotent";
  auto info = cp_->fake().Job(*job_id);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->result["status"].asString(), "failed");
  EXPECT_EQ(info->result["error"]["code"].asString(), "auth_failed");

  // A different result for a finished job, and a lease on it: conflicts.
  result.error.code = "mfa_failed";
  Status other = agent_->PostResult(*job_id, result);
  EXPECT_EQ(other.reason(), cp_reason::kConflict) << other.ToString();
  auto lease = agent_->ExtendLease(*job_id, job.lease_id);
  ASSERT_FALSE(lease.ok());
  EXPECT_EQ(lease.status().reason(), cp_reason::kConflict) << lease.status().ToString();

  auto unknown = agent_->ExtendLease("job_none", "lease_none");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().reason(), cp_reason::kRequestRejected);
  EXPECT_EQ(unknown.status().code(), Code::kNotFound);
  EXPECT_THAT(unknown.status().message(), HasSubstr("404 job_not_found"));
}

TEST_F(ClientTest, SucceededResultCarriesOutput) {
  ASSERT_NO_FATAL_FAILURE(EnrollAgent());
  testing::JobSpec spec;
  spec.type = "jira.group.add_member";
  spec.connection = "jira-prod";
  spec.params["user"]["username"] = "alice";
  spec.params["group"] = "jira-users";
  auto job_id = cp_->fake().EnqueueJob(spec);
  ASSERT_TRUE(job_id.ok());
  auto jobs = agent_->Claim(1, 0);
  ASSERT_TRUE(jobs.ok() && jobs->size() == 1u);
  JobResult result;
  result.lease_id = (*jobs)[0].lease_id;
  result.started_at = std::chrono::system_clock::now();
  result.finished_at = result.started_at;
  Json::Value user(Json::objectValue);
  user["id"] = "alice";
  user["username"] = "alice";
  user["email"] = "alice@example.com";
  user["display_name"] = "Alice";
  result.output["user"] = user;
  result.output["group"] = "jira-users";
  result.output["changed"] = true;
  Status s = agent_->PostResult(*job_id, result);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(cp_->fake().Job(*job_id)->result["output"]["changed"].asBool(), true);
}

TEST_F(ClientTest, RevokedAndDeletedAgentsAreIdentityRejected) {
  ASSERT_NO_FATAL_FAILURE(EnrollAgent());
  ASSERT_TRUE(cp_->fake().RevokeAgent(agent_id_).ok());
  auto revoked = agent_->SigningKeys();
  ASSERT_FALSE(revoked.ok());
  EXPECT_EQ(revoked.status().reason(), cp_reason::kIdentityRejected);
  EXPECT_EQ(revoked.status().code(), Code::kUnauthenticated);
  EXPECT_THAT(revoked.status().message(), HasSubstr("401 certificate_revoked"));

  ASSERT_TRUE(cp_->fake().DeleteAgent(agent_id_).ok());
  auto deleted = agent_->Claim(1, 0);
  ASSERT_FALSE(deleted.ok());
  EXPECT_EQ(deleted.status().reason(), cp_reason::kIdentityRejected);
  EXPECT_EQ(deleted.status().code(), Code::kPermissionDenied);
  EXPECT_THAT(deleted.status().message(), HasSubstr("403 agent_deleted"));
}

TEST_F(ClientTest, RateLimitsCarryRetryAfter) {
  ASSERT_NO_FATAL_FAILURE(EnrollAgent());
  QueueFault(ControlPlaneFault::Status(429, "7"), Endpoint::kClaim);
  auto limited = agent_->Claim(1, 0);
  ASSERT_FALSE(limited.ok());
  EXPECT_EQ(limited.status().reason(), cp_reason::kRateLimited);
  ASSERT_TRUE(limited.status().retry_after().has_value());
  EXPECT_EQ(*limited.status().retry_after(), 7s);
  EXPECT_THAT(limited.status().message(), HasSubstr("HTTP 429 rate_limited"));

  QueueFault(
      ControlPlaneFault::Status(503, FormatHttpDate(std::chrono::system_clock::now() + 120s)),
      Endpoint::kHeartbeat);
  auto unavailable = agent_->Heartbeat(testing::HeartbeatBody(chain_));
  ASSERT_FALSE(unavailable.ok());
  EXPECT_EQ(unavailable.status().reason(), cp_reason::kRateLimited);
  ASSERT_TRUE(unavailable.status().retry_after().has_value());
  EXPECT_GE(*unavailable.status().retry_after(), 100s);
  EXPECT_LE(*unavailable.status().retry_after(), 121s);

  // Capped at 15 minutes; no Retry-After: none.
  QueueFault(ControlPlaneFault::Status(429, "86400"), Endpoint::kSigningKeys);
  auto capped = agent_->SigningKeys();
  ASSERT_TRUE(capped.status().retry_after().has_value());
  EXPECT_EQ(*capped.status().retry_after(), 15min);
  QueueFault(ControlPlaneFault::Status(503), Endpoint::kSigningKeys);
  auto bare = agent_->SigningKeys();
  EXPECT_EQ(bare.status().reason(), cp_reason::kRateLimited);
  EXPECT_FALSE(bare.status().retry_after().has_value());
}

TEST_F(ClientTest, ServerFailuresAreServerErrors) {
  ASSERT_NO_FATAL_FAILURE(EnrollAgent());
  QueueFault(ControlPlaneFault::Status(500), Endpoint::kSigningKeys);
  auto internal = agent_->SigningKeys();
  EXPECT_EQ(internal.status().reason(), cp_reason::kServerError);
  EXPECT_THAT(internal.status().message(), HasSubstr("HTTP 500 internal"));

  ControlPlaneFault html;
  html.kind = ControlPlaneFault::Kind::kHtmlPage;
  html.status = 502;
  QueueFault(html, Endpoint::kSigningKeys);
  auto gateway = agent_->SigningKeys();
  EXPECT_EQ(gateway.status().reason(), cp_reason::kServerError);
  EXPECT_THAT(gateway.status().message(), HasSubstr("HTTP 502"));
  EXPECT_THAT(gateway.status().message(), HasSubstr("without the control plane's error body"));

  ControlPlaneFault garbage;
  garbage.kind = ControlPlaneFault::Kind::kMalformedJson;
  QueueFault(garbage, Endpoint::kClaim);
  auto claim = agent_->Claim(1, 0);
  EXPECT_EQ(claim.status().reason(), cp_reason::kServerError);
  EXPECT_THAT(claim.status().message(), HasSubstr("not the documented JSON"));
}

TEST_F(ClientTest, TransportFailuresKeepTheTransportsReason) {
  ASSERT_NO_FATAL_FAILURE(EnrollAgent());
  QueueFault(ControlPlaneFault::Reset(), Endpoint::kSigningKeys);
  auto reset = agent_->SigningKeys();
  ASSERT_FALSE(reset.ok());
  EXPECT_EQ(reset.status().reason(), http::reason::kProtocol) << reset.status().ToString();
  EXPECT_THAT(reset.status().message(), HasSubstr("GET /signing-keys"));

  auto quick = MakeTransport(&identity_, 1500ms);
  ControlPlaneClient impatient(*quick, cp_->base_url());
  ControlPlaneFault stall;
  stall.kind = ControlPlaneFault::Kind::kStall;
  stall.delay = 5s;
  QueueFault(stall, Endpoint::kSigningKeys);
  auto timed_out = impatient.SigningKeys();
  ASSERT_FALSE(timed_out.ok());
  EXPECT_EQ(timed_out.status().reason(), http::reason::kTimeout) << timed_out.status().ToString();
}

TEST_F(ClientTest, LongPollIsHeldWithinItsOwnTimeout) {
  ASSERT_NO_FATAL_FAILURE(EnrollAgent());
  // The transport's own timeout (2 s) is shorter than the wait: the claim's timeout is the wait
  // plus a margin, so the empty answer after 3 s arrives.
  auto short_timeout = MakeTransport(&identity_, 2s);
  ControlPlaneClient c(*short_timeout, cp_->base_url());
  const auto start = std::chrono::steady_clock::now();
  auto jobs = c.Claim(1, 3);
  ASSERT_TRUE(jobs.ok()) << jobs.status().ToString();
  EXPECT_TRUE(jobs->empty());
  EXPECT_GE(std::chrono::steady_clock::now() - start, 2900ms);
}

// --- A scripted transport --------------------------------------------------------------------

class ScriptedTransport final : public http::Transport {
 public:
  void Answer(long status, std::string body, std::vector<http::Header> headers = {}) {
    std::lock_guard lock(mu_);
    http::Response r;
    r.status = status;
    r.body = std::move(body);
    r.headers = std::move(headers);
    answers_.push_back(std::move(r));
  }
  Result<http::Response> Send(const http::Request& request) override {
    std::lock_guard lock(mu_);
    Seen s{request.method, request.url, request.body, request.timeout};
    seen_.push_back(s);
    if (answers_.empty()) return Status(Code::kUnavailable, "no answer scripted", "protocol_error");
    http::Response r = std::move(answers_.front());
    answers_.pop_front();
    return r;
  }
  std::optional<std::chrono::seconds> LastClockSkew() const override { return std::nullopt; }
  void ResetConnections() override {}

  struct Seen {
    std::string method, url, body;
    std::optional<std::chrono::milliseconds> timeout;
  };
  std::vector<Seen> seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  std::mutex mu_;
  std::deque<http::Response> answers_;
  std::vector<Seen> seen_;
};

TEST(ClientScriptedTest, ClaimTimeoutIsTheWaitPlusAMargin) {
  ScriptedTransport t;
  ControlPlaneClient c(t, "https://cp.example/agent/v1/");
  t.Answer(200, R"({"jobs": []})");
  ASSERT_TRUE(c.Claim(3, 40).ok());
  auto seen = t.seen();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].url, "https://cp.example/agent/v1/jobs/claim");
  ASSERT_TRUE(seen[0].timeout.has_value());
  EXPECT_EQ(*seen[0].timeout, 70s);
  auto body = ParseJson(seen[0].body, "body");
  ASSERT_TRUE(body.ok());
  EXPECT_EQ((*body)["max_jobs"].asInt(), 3);
  EXPECT_EQ((*body)["wait_seconds"].asInt(), 40);
  // Arguments outside the protocol's ranges are refused before sending.
  EXPECT_EQ(c.Claim(0, 10).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(c.Claim(1, 61).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(t.seen().size(), 1u);
}

// Records given as their canonical JSON make, byte for byte, the canonical JSON of the whole body
// (the access sync hashes those bytes; the control plane hashes what it receives); text that is
// not an object is refused before sending.
TEST(ClientScriptedTest, RecordTextsMakeTheSameBody) {
  ScriptedTransport t;
  ControlPlaneClient c(t, "https://cp.example/agent/v1");
  t.Answer(200, "{}");
  t.Answer(200, "{}");
  Json::Value records(Json::arrayValue);
  std::vector<std::string> texts;
  for (int i = 0; i < 3; ++i) {
    Json::Value r(Json::objectValue);
    r["kind"] = "user";
    r["id"] = "u\"" + std::to_string(i);
    r["display_name"] = "Zo\xc3\xab " + std::to_string(i);
    r["groups"] = Json::Value(Json::arrayValue);
    r["groups"].append("g<&>");
    r["last_login"] = Json::Value(Json::nullValue);
    records.append(r);
    texts.push_back(WriteJson(r));
  }
  // The body the records' values make, serialized canonically as a whole.
  auto canonical = [](const std::string& lease, std::int64_t seq, const Json::Value& recs) {
    Json::Value body(Json::objectValue);
    body["lease_id"] = lease;
    body["seq"] = static_cast<Json::Int64>(seq);
    body["records"] = recs;
    return WriteJson(body);
  };
  ASSERT_TRUE(c.PostRecordTexts("job_1", "lease \"1\"", 7, texts).ok());
  auto seen = t.seen();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].url, "https://cp.example/agent/v1/jobs/job_1/records");
  EXPECT_EQ(seen[0].body, canonical("lease \"1\"", 7, records));
  // An empty call too.
  ASSERT_TRUE(c.PostRecordTexts("job_1", "l", 0, {}).ok());
  seen = t.seen();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].body, canonical("l", 0, Json::Value(Json::arrayValue)));
  EXPECT_EQ(c.PostRecordTexts("job_1", "l", 1, {"[1]"}).code(), Code::kInvalidArgument);
  EXPECT_EQ(c.PostRecordTexts("job_1", "l", 1, {""}).code(), Code::kInvalidArgument);
  EXPECT_EQ(t.seen().size(), 2u);
}

TEST(ClientScriptedTest, JobIdsAreUrlEncodedInPaths) {
  ScriptedTransport t;
  ControlPlaneClient c(t, "https://cp.example/agent/v1");
  t.Answer(200, R"({"lease_expires_at": "2026-12-04T17:30:08Z"})");
  t.Answer(200, "{}");
  t.Answer(200, "{}");
  ASSERT_TRUE(c.ExtendLease("job/../x y?z", "lease_1").ok());
  ASSERT_TRUE(c.PostRecordTexts("job#1", "lease_1", 4, {}).ok());
  JobResult r;
  r.outcome = JobResult::Outcome::kRejected;
  r.error = {"bad_signature", "the signature does not verify", false};
  ASSERT_TRUE(c.PostResult("job%2F", r).ok());
  auto seen = t.seen();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].url, "https://cp.example/agent/v1/jobs/job%2F..%2Fx%20y%3Fz/lease");
  EXPECT_EQ(seen[1].url, "https://cp.example/agent/v1/jobs/job%231/records");
  EXPECT_EQ(seen[2].url, "https://cp.example/agent/v1/jobs/job%252F/result");
  auto result = ParseJson(seen[2].body, "body");
  ASSERT_TRUE(result.ok());
  EXPECT_EQ((*result)["status"].asString(), "rejected");
  EXPECT_FALSE(result->isMember("output"));
  EXPECT_EQ((*result)["error"]["retryable"].asBool(), false);
  auto records = ParseJson(seen[1].body, "body");
  ASSERT_TRUE(records.ok());
  EXPECT_EQ((*records)["seq"].asInt(), 4);
}

TEST(ClientScriptedTest, MalformedAnswersAreServerErrorsAndExtraFieldsAreTolerated) {
  ScriptedTransport t;
  ControlPlaneClient c(t, "https://cp.example/agent/v1");
  const char* const bad_claims[] = {
      R"([])",
      R"({"jobs": {}})",
      R"({"jobs": [{"jws": "a.b.c", "lease_id": "l"}]})",
      R"({"jobs": [{"jws": "a.b.c", "lease_id": "l", "lease_expires_at": "yesterday"}]})",
      R"({"jobs": [{"jws": "a.b.c", "lease_id": "l", "lease_expires_at": "2026-12-04T17:30:08Z"},
                   {"jws": "d.e.f", "lease_id": "m", "lease_expires_at": "2026-12-04T17:30:08Z"}]})",
      R"({"jobs": [{"jws": 5, "lease_id": "l", "lease_expires_at": "2026-12-04T17:30:08Z"}]})",
  };
  for (const char* body : bad_claims) {
    t.Answer(200, body);
    auto r = c.Claim(1, 0);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(r.status().reason(), cp_reason::kServerError) << body;
    EXPECT_EQ(r.status().code(), Code::kUnavailable);
  }
  t.Answer(200, R"({"jobs": [{"jws": "a.b.c", "lease_id": "l",
                   "lease_expires_at": "2026-12-04T17:30:08Z", "priority": 3}],
                   "server_time": "now"})");
  auto tolerant = c.Claim(1, 0);
  ASSERT_TRUE(tolerant.ok()) << tolerant.status().ToString();
  EXPECT_EQ((*tolerant)[0].lease_id, "l");

  t.Answer(200, R"({})");
  EXPECT_EQ(c.Heartbeat(Json::Value(Json::objectValue)).status().reason(), cp_reason::kServerError);
  t.Answer(200, R"({"renew_certificate": "yes"})");
  EXPECT_EQ(c.Heartbeat(Json::Value(Json::objectValue)).status().reason(), cp_reason::kServerError);
  t.Answer(200, R"({"job_signing_keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "a",
                   "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
                   {"kty": "OKP", "crv": "Ed25519", "kid": "a",
                   "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]})");
  auto dup = c.SigningKeys();
  EXPECT_EQ(dup.status().reason(), cp_reason::kServerError);
  EXPECT_THAT(dup.status().message(), HasSubstr("repeats the kid"));
  t.Answer(201, R"({"agent_id": "agt_1", "certificate_chain": "x", "job_signing_keys": []})");
  auto enroll = c.Enroll(SecretBytes::CopyOf(std::string_view("tok")), EnrollRequest{});
  EXPECT_EQ(enroll.status().reason(), cp_reason::kServerError);
  EXPECT_THAT(enroll.status().message(), HasSubstr("poll_wait_seconds"));
}

TEST(ClientScriptedTest, StatusMapping) {
  struct Case {
    long status;
    const char* reason;
    Code code;
  };
  const Case cases[] = {
      {400, cp_reason::kRequestRejected, Code::kInvalidArgument},
      {401, cp_reason::kIdentityRejected, Code::kUnauthenticated},
      {403, cp_reason::kIdentityRejected, Code::kPermissionDenied},
      {404, cp_reason::kRequestRejected, Code::kNotFound},
      {405, cp_reason::kServerError, Code::kUnavailable},
      {409, cp_reason::kConflict, Code::kAborted},
      {422, cp_reason::kRequestRejected, Code::kInvalidArgument},
      {429, cp_reason::kRateLimited, Code::kResourceExhausted},
      {500, cp_reason::kServerError, Code::kUnavailable},
      {502, cp_reason::kServerError, Code::kUnavailable},
      {503, cp_reason::kRateLimited, Code::kUnavailable},
      {504, cp_reason::kServerError, Code::kUnavailable},
      {302, cp_reason::kServerError, Code::kUnavailable},
  };
  for (const Case& k : cases) {
    ScriptedTransport t;
    ControlPlaneClient c(t, "https://cp.example/agent/v1");
    t.Answer(k.status, R"({"error": {"code": "some_code", "message": "said \u0007 this"}})");
    auto r = c.SigningKeys();
    ASSERT_FALSE(r.ok()) << k.status;
    EXPECT_EQ(r.status().reason(), k.reason) << k.status;
    EXPECT_EQ(r.status().code(), k.code) << k.status;
    EXPECT_THAT(r.status().message(),
                HasSubstr("HTTP " + std::to_string(k.status) + " some_code: said ? this"));
  }
}

TEST(SigningKeyTest, OnlyEd25519Jwks) {
  auto parse = [](const char* text) {
    auto v = ParseJson(text, "jwk");
    EXPECT_TRUE(v.ok());
    return ParseSigningKey(*v, "$.k");
  };
  auto good = parse(R"({"kty": "OKP", "crv": "Ed25519", "kid": "jsk_1", "use": "sig",
      "alg": "EdDSA", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})");
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  EXPECT_EQ(good->kid, "jsk_1");
  EXPECT_EQ(HexEncode(good->public_key),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");

  const char* const bad[] = {
      R"({"kty": "EC", "crv": "Ed25519", "kid": "k", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})",
      R"({"kty": "OKP", "crv": "X25519", "kid": "k", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})",
      R"({"kty": "OKP", "crv": "Ed25519", "kid": "", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})",
      R"({"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo="})",
      R"({"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcH"})",
      R"({"kty": "OKP", "crv": "Ed25519", "kid": "k", "alg": "HS256",
          "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})",
      R"({"kty": "OKP", "crv": "Ed25519", "kid": "k", "use": "enc",
          "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})",
      R"({"kty": "OKP", "crv": "Ed25519", "kid": 7, "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})",
      R"({"kty": "OKP", "crv": "Ed25519", "kid": "k"})",
  };
  for (const char* text : bad) {
    auto k = parse(text);
    EXPECT_FALSE(k.ok()) << text;
    if (!k.ok()) {
      EXPECT_THAT(k.status().message(), StartsWith("$.k")) << text;
    }
  }
  EXPECT_FALSE(ParseSigningKey(Json::Value("x"), "$.k").ok());
}

}  // namespace
}  // namespace cakewalk::agent
