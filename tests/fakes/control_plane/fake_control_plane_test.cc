// FakeControlPlane driven through Handle(), without a network: enrollment, identity, JWS jobs and
// forgeries, long polls, leases, records, results, heartbeat, signing keys, faults, admin API.
#include "tests/fakes/control_plane/fake_control_plane.h"

#include <gtest/gtest.h>
#include <openssl/hmac.h>

#include <chrono>
#include <future>
#include <thread>

#include "base/encoding.h"
#include "base/json.h"
#include "base/time.h"
#include "tests/fakes/control_plane/test_util.h"
#include "tests/fakes/control_plane/wire.h"
#include "tests/support/fake_clock.h"
#include "tests/support/pki.h"

namespace cakewalk::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::unique_ptr<FakeControlPlane> MakeFake(FakeControlPlaneOptions options = {}) {
  auto fake = FakeControlPlane::Create(std::move(options));
  EXPECT_TRUE(fake.ok()) << fake.status().ToString();
  return std::move(fake).value();
}

HttpRequest EnrollRequest(const std::string& token, const Json::Value& body) {
  HttpRequest req = MakeRequest("POST", "/agent/v1/enroll", WriteJson(body));
  req.headers.emplace_back("authorization", "Bearer " + token);
  return req;
}

std::string Enqueue(FakeControlPlane& fake, JobSpec spec) {
  auto id = fake.EnqueueJob(std::move(spec));
  EXPECT_TRUE(id.ok()) << id.status().ToString();
  return id.ok() ? *id : std::string();
}

JobSpec Provision(std::string agent_id = {}) {
  JobSpec spec;
  spec.type = "jira.user.provision";
  spec.connection = "jira-prod";
  spec.params["email"] = "ada@example.com";
  spec.params["display_name"] = "Ada";
  spec.params["username"] = "ada";
  spec.agent_id = std::move(agent_id);
  return spec;
}

JobSpec AccessSync() {
  JobSpec spec;
  spec.type = "jira.access_sync";
  spec.connection = "jira-prod";
  return spec;
}

Json::Value ProvisionOutput() {
  Json::Value o(Json::objectValue);
  o["user"]["id"] = "ada";
  o["user"]["username"] = "ada";
  o["user"]["email"] = "ada@example.com";
  o["user"]["display_name"] = "Ada";
  o["user"]["active"] = true;
  o["created"] = true;
  for (const char* k : {"groups_added", "groups_already", "products_granted", "products_already"}) {
    o[k] = Json::Value(Json::arrayValue);
  }
  return o;
}

Json::Value Error(const std::string& code, const std::string& message, bool retryable = false) {
  Json::Value e(Json::objectValue);
  e["code"] = code;
  e["message"] = message;
  e["retryable"] = retryable;
  return e;
}

Json::Value LeaseBody(const std::string& lease_id) {
  Json::Value b(Json::objectValue);
  b["lease_id"] = lease_id;
  return b;
}

Json::Value RecordsBody(const std::string& lease_id, int seq, const Json::Value& records) {
  Json::Value b(Json::objectValue);
  b["lease_id"] = lease_id;
  b["seq"] = seq;
  b["records"] = records;
  return b;
}

Json::Value Records(std::initializer_list<const char*> ids) {
  Json::Value r(Json::arrayValue);
  for (const char* id : ids) r.append(UserRecord(id));
  return r;
}

std::string JobIdOf(const Json::Value& claimed) {
  return JwsPayload(claimed["jws"].asString())["jti"].asString();
}

// --- Enrollment ---------------------------------------------------------------------------------

TEST(FakeControlPlaneEnroll, IssuesAClientCertificateFromTheAgentCa) {
  auto fake = MakeFake();
  EvpPkeyPtr key = NewEcP256Key();
  const std::string token = fake->NewEnrollmentToken();
  HttpResponse resp = fake->Handle(EnrollRequest(token, EnrollBody(MakeCsrPem(key.get()))));
  ASSERT_EQ(resp.status, 201) << resp.body;
  const Json::Value body = BodyOf(resp);
  const std::string agent_id = body["agent_id"].asString();
  EXPECT_EQ(agent_id.rfind("agt_", 0), 0u) << agent_id;
  const std::string chain = body["certificate_chain"].asString();
  EXPECT_EQ(CountCerts(chain), 2);  // leaf, then the agent CA
  EXPECT_EQ(CommonName(chain), agent_id);
  EXPECT_TRUE(SignedBy(chain, fake->agent_ca_pem()));
  EXPECT_NE(chain.find(fake->agent_ca_pem()), std::string::npos);
  EXPECT_GT(chain.find(fake->agent_ca_pem()), 0u);  // the CA is not first
  ASSERT_EQ(body["job_signing_keys"].size(), 1u);
  const Json::Value& jwk = body["job_signing_keys"][0];
  EXPECT_EQ(jwk["kty"], "OKP");
  EXPECT_EQ(jwk["crv"], "Ed25519");
  EXPECT_EQ(jwk["kid"], fake->current_kid());
  auto x = Base64UrlDecode(jwk["x"].asString());
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(x->size(), 32u);
  EXPECT_EQ(body["poll_wait_seconds"], 25);
  EXPECT_EQ(body.size(), 4u);

  auto agent = fake->Agent(agent_id);
  ASSERT_TRUE(agent.has_value());
  EXPECT_EQ(agent->hostname, "agent-host-1");
  EXPECT_EQ(agent->token["label"], "cakewalk");
}

TEST(FakeControlPlaneEnroll, TokenIsAcceptedOnlyOnce) {
  auto fake = MakeFake();
  const std::string token = fake->NewEnrollmentToken();
  EvpPkeyPtr k1 = NewEcP256Key();
  EvpPkeyPtr k2 = NewEcP256Key();
  ASSERT_EQ(fake->Handle(EnrollRequest(token, EnrollBody(MakeCsrPem(k1.get())))).status, 201);
  EXPECT_TRUE(IsError(fake->Handle(EnrollRequest(token, EnrollBody(MakeCsrPem(k2.get())))), 401,
                      "token_used"));
  EXPECT_TRUE(
      IsError(fake->Handle(EnrollRequest("cwe_not-a-token", EnrollBody(MakeCsrPem(k2.get())))), 401,
              "invalid_token"));
  HttpRequest no_auth =
      MakeRequest("POST", "/agent/v1/enroll", WriteJson(EnrollBody(MakeCsrPem(k2.get()))));
  EXPECT_TRUE(IsError(fake->Handle(no_auth), 401, "invalid_token"));
  HttpRequest basic = no_auth;
  basic.headers.emplace_back("authorization", "Basic " + token);
  EXPECT_TRUE(IsError(fake->Handle(basic), 401, "invalid_token"));
  EXPECT_EQ(fake->Agents().size(), 1u);
}

TEST(FakeControlPlaneEnroll, RefusesAKeyThatIsAlreadyEnrolled) {
  auto fake = MakeFake();
  EvpPkeyPtr key = NewEcP256Key();
  ASSERT_EQ(
      fake->Handle(EnrollRequest(fake->NewEnrollmentToken(), EnrollBody(MakeCsrPem(key.get()))))
          .status,
      201);
  const std::string second = fake->NewEnrollmentToken();
  EXPECT_TRUE(
      IsError(fake->Handle(EnrollRequest(second, EnrollBody(MakeCsrPem(key.get(), "other")))), 409,
              "already_enrolled"));
  // The refused attempt did not use up the token.
  EvpPkeyPtr fresh = NewEcP256Key();
  EXPECT_EQ(fake->Handle(EnrollRequest(second, EnrollBody(MakeCsrPem(fresh.get())))).status, 201);
}

TEST(FakeControlPlaneEnroll, ValidatesTheBodyStrictly) {
  auto fake = MakeFake();
  const std::string token = fake->NewEnrollmentToken();
  EvpPkeyPtr key = NewEcP256Key();
  const Json::Value good = EnrollBody(MakeCsrPem(key.get()));

  Json::Value missing = good;
  missing.removeMember("hostname");
  EXPECT_TRUE(IsError(fake->Handle(EnrollRequest(token, missing)), 400, "invalid_request"));
  Json::Value unknown = good;
  unknown["pin"] = "1234";
  EXPECT_TRUE(IsError(fake->Handle(EnrollRequest(token, unknown)), 400, "invalid_request"));
  Json::Value token_unknown = good;
  token_unknown["token"]["so_pin"] = "x";
  EXPECT_TRUE(IsError(fake->Handle(EnrollRequest(token, token_unknown)), 400, "invalid_request"));
  Json::Value wrong_type = good;
  wrong_type["agent_version"] = 1;
  EXPECT_TRUE(IsError(fake->Handle(EnrollRequest(token, wrong_type)), 400, "invalid_request"));
  Json::Value not_pem = good;
  not_pem["csr"] = "hello";
  EXPECT_TRUE(IsError(fake->Handle(EnrollRequest(token, not_pem)), 422, "invalid_csr"));
  Json::Value bad_sig = good;
  bad_sig["csr"] = MakeCsrWithBadSignature(key.get());
  ASSERT_FALSE(bad_sig["csr"].asString().empty());
  EXPECT_TRUE(IsError(fake->Handle(EnrollRequest(token, bad_sig)), 422, "invalid_csr"));
  EvpPkeyPtr small_rsa = NewRsaKey(2048);
  Json::Value rsa = good;
  rsa["csr"] = MakeCsrPem(small_rsa.get());
  EXPECT_TRUE(IsError(fake->Handle(EnrollRequest(token, rsa)), 422, "unsupported_key"));

  HttpRequest text = EnrollRequest(token, good);
  text.headers = {{"authorization", "Bearer " + token}, {"content-type", "text/plain"}};
  EXPECT_TRUE(IsError(fake->Handle(text), 400, "invalid_request"));
  HttpRequest broken = EnrollRequest(token, good);
  broken.body = "{\"csr\": ";
  EXPECT_TRUE(IsError(fake->Handle(broken), 400, "invalid_request"));

  // None of that used the token up.
  EXPECT_EQ(fake->Handle(EnrollRequest(token, good)).status, 201);
}

TEST(FakeControlPlaneEnroll, AcceptsRsa3072) {
  auto fake = MakeFake();
  EvpPkeyPtr key = NewRsaKey(3072);
  EXPECT_EQ(
      fake->Handle(EnrollRequest(fake->NewEnrollmentToken(), EnrollBody(MakeCsrPem(key.get()))))
          .status,
      201);
}

// --- Identity -----------------------------------------------------------------------------------

TEST(FakeControlPlaneIdentity, EndpointsNeedAnEnrolledNonRevokedAgent) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  EXPECT_EQ(agent.Get("/signing-keys").status, 200);

  HttpRequest anonymous = MakeRequest("GET", "/agent/v1/signing-keys");
  EXPECT_TRUE(IsError(fake->Handle(anonymous), 401, "certificate_required"));

  // A certificate with the agent's name from another CA.
  auto other_ca = TestCa::Create("Some other CA");
  EvpPkeyPtr key = NewEcP256Key();
  auto forged = other_ca->IssueFromCsr(MakeCsrPem(key.get()), agent.id(), seconds(3600));
  ASSERT_TRUE(forged.ok()) << forged.status().ToString();
  HttpRequest impostor = anonymous;
  impostor.client_cert_der = FirstCertDer(*forged);
  EXPECT_TRUE(IsError(fake->Handle(impostor), 401, "certificate_invalid"));

  ASSERT_TRUE(fake->RevokeAgent(agent.id()).ok());
  EXPECT_TRUE(IsError(agent.Get("/signing-keys"), 401, "certificate_revoked"));
  ASSERT_TRUE(fake->DeleteAgent(agent.id()).ok());
  EXPECT_TRUE(IsError(agent.Get("/signing-keys"), 403, "agent_deleted"));
  ASSERT_TRUE(fake->RestoreAgent(agent.id()).ok());
  EXPECT_EQ(agent.Get("/signing-keys").status, 200);
  EXPECT_FALSE(fake->RevokeAgent("agt_nobody").ok());
}

TEST(FakeControlPlaneIdentity, RoutesMethodsQueriesAndBodies) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  EXPECT_TRUE(
      IsError(agent.Post("/nothing-here", Json::Value(Json::objectValue)), 404, "not_found"));
  HttpResponse wrong_method = agent.Get("/jobs/claim");
  EXPECT_TRUE(IsError(wrong_method, 405, "method_not_allowed"));
  HttpRequest outside = MakeRequest("GET", "/other/v1/signing-keys");
  EXPECT_TRUE(IsError(fake->Handle(outside), 404, "not_found"));
  HttpRequest query = MakeRequest("GET", "/agent/v1/signing-keys");
  query.target += "?all=1";
  query.query.emplace("all", "1");
  query.client_cert_der = FirstCertDer(agent.chain());
  EXPECT_TRUE(IsError(fake->Handle(query), 400, "invalid_request"));
  HttpResponse array_body = agent.Post("/heartbeat", Json::Value(Json::arrayValue));
  EXPECT_TRUE(IsError(array_body, 400, "invalid_request"));
  // The admin API is off unless asked for.
  EXPECT_TRUE(IsError(fake->Handle(MakeRequest("GET", "/_fake/state")), 404, "not_found"));
}

// --- Jobs and JWS -------------------------------------------------------------------------------

TEST(FakeControlPlaneJobs, JobIsAnEd25519JwsThatVerifiesWithThePublishedKey) {
  FakeClock clock;
  FakeControlPlaneOptions options;
  options.clock = &clock;
  auto fake = MakeFake(options);
  DirectAgent agent = DirectAgent::Enroll(*fake);
  const std::string id = Enqueue(*fake, Provision());

  const Json::Value jobs = agent.Claim(10, 0);
  ASSERT_EQ(jobs.size(), 1u);
  const Json::Value& item = jobs[0];
  EXPECT_EQ(item.size(), 3u);
  EXPECT_FALSE(item["lease_id"].asString().empty());
  EXPECT_EQ(item["lease_expires_at"].asString(), FormatRfc3339(clock.Now() + seconds(60)));

  const std::string jws = item["jws"].asString();
  const Json::Value header = JwsHeader(jws);
  EXPECT_EQ(header["alg"], "EdDSA");
  EXPECT_EQ(header["kid"], fake->current_kid());
  auto claims = VerifyJobJws(jws, BodyOf(agent.Get("/signing-keys"))["job_signing_keys"]);
  ASSERT_TRUE(claims.ok()) << claims.status().ToString();
  EXPECT_EQ((*claims)["jti"], id);
  EXPECT_EQ((*claims)["iss"], "cakewalk");
  EXPECT_EQ((*claims)["aud"], agent.id());
  const auto now = std::chrono::duration_cast<seconds>(clock.Now().time_since_epoch()).count();
  EXPECT_EQ((*claims)["iat"].asInt64(), now);
  EXPECT_EQ((*claims)["exp"].asInt64(), now + 3600);
  EXPECT_EQ((*claims)["type"], "jira.user.provision");
  EXPECT_EQ((*claims)["connection"], "jira-prod");
  EXPECT_EQ((*claims)["params"]["username"], "ada");
  EXPECT_EQ(claims->size(), 8u);

  auto job = fake->Job(id);
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->state, JobState::kLeased);
  ASSERT_EQ(job->leases.size(), 1u);
  EXPECT_EQ(job->leases[0].agent_id, agent.id());
  EXPECT_EQ(job->leases[0].jws, jws);
}

TEST(FakeControlPlaneJobs, EveryForgeryIsWhatItClaims) {
  FakeClock clock;
  FakeControlPlaneOptions options;
  options.clock = &clock;
  auto fake = MakeFake(options);
  DirectAgent agent = DirectAgent::Enroll(*fake);
  const Json::Value jwks = fake->PublishedJwks();
  const auto now = std::chrono::duration_cast<seconds>(clock.Now().time_since_epoch()).count();

  // The original of the replay: claimed and finished first.
  const std::string original = Enqueue(*fake, Provision());
  Json::Value first = agent.Claim(1, 0);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(agent
                .Post("/jobs/" + original + "/result",
                      ResultBody(first[0]["lease_id"].asString(), "succeeded", ProvisionOutput()))
                .status,
            200);

  for (Forgery forgery : AllForgeries()) {
    SCOPED_TRACE(std::string(ForgeryName(forgery)));
    JobSpec spec = Provision();
    spec.forgery = forgery;
    if (forgery == Forgery::kUnknownType) spec.type.clear();
    if (forgery == Forgery::kConnectionNotConfigured) spec.connection.clear();
    if (forgery == Forgery::kReplayedJti) spec.replay_of = original;
    const std::string id = Enqueue(*fake, spec);
    const Json::Value claimed = agent.Claim(1, 0);
    ASSERT_EQ(claimed.size(), 1u);
    const std::string jws = claimed[0]["jws"].asString();
    const Json::Value header = JwsHeader(jws);
    const Json::Value payload = JwsPayload(jws);
    auto verified = VerifyJobJws(jws, jwks);

    switch (forgery) {
      case Forgery::kBadSignature: {
        EXPECT_EQ(header["alg"], "EdDSA");
        EXPECT_FALSE(verified.ok());
        auto sig = Base64UrlDecode(JwsSignatureSegment(jws));
        ASSERT_TRUE(sig.ok());
        ASSERT_EQ(sig->size(), 64u);
        (*sig)[0] ^= 0x01;  // one flipped bit: flipping it back gives the real signature
        const std::string repaired = jws.substr(0, jws.rfind('.') + 1) + Base64UrlEncode(*sig);
        EXPECT_TRUE(VerifyJobJws(repaired, jwks).ok());
        break;
      }
      case Forgery::kAlgNone:
        EXPECT_EQ(header["alg"], "none");
        EXPECT_FALSE(header.isMember("kid"));
        EXPECT_EQ(JwsSignatureSegment(jws), "");
        EXPECT_EQ(jws.back(), '.');
        EXPECT_EQ(payload["aud"], agent.id());
        break;
      case Forgery::kHs256WithPublicKey: {
        EXPECT_EQ(header["alg"], "HS256");
        auto x = Base64UrlDecode(jwks[0]["x"].asString());
        ASSERT_TRUE(x.ok());
        const std::string input = jws.substr(0, jws.rfind('.'));
        unsigned char mac[32];
        unsigned int len = 0;
        HMAC(EVP_sha256(), x->data(), static_cast<int>(x->size()),
             reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len);
        EXPECT_EQ(JwsSignatureSegment(jws), Base64UrlEncode(std::span(mac, len)));
        break;
      }
      case Forgery::kUnknownKid:
        EXPECT_EQ(header["alg"], "EdDSA");
        ASSERT_TRUE(header["kid"].isString());
        EXPECT_NE(header["kid"], fake->current_kid());
        EXPECT_EQ(verified.status().code(), Code::kNotFound);
        EXPECT_EQ(Base64UrlDecode(JwsSignatureSegment(jws))->size(), 64u);
        break;
      case Forgery::kMissingKid: {
        EXPECT_FALSE(header.isMember("kid"));
        // Properly signed by the current key all the same.
        EXPECT_FALSE(verified.ok());
        auto sig = Base64UrlDecode(JwsSignatureSegment(jws));
        EvpPkeyPtr pub(EVP_PKEY_new_raw_public_key(
            EVP_PKEY_ED25519, nullptr, Base64UrlDecode(jwks[0]["x"].asString())->data(), 32));
        CPtr<EVP_MD_CTX, EVP_MD_CTX_free> ctx(EVP_MD_CTX_new());
        const std::string input = jws.substr(0, jws.rfind('.'));
        ASSERT_EQ(EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pub.get()), 1);
        EXPECT_EQ(
            EVP_DigestVerify(ctx.get(), sig->data(), sig->size(),
                             reinterpret_cast<const unsigned char*>(input.data()), input.size()),
            1);
        break;
      }
      case Forgery::kTamperedPayload: {
        EXPECT_FALSE(verified.ok());
        EXPECT_EQ(verified.status().code(), Code::kPermissionDenied);
        EXPECT_EQ(payload["params"]["tampered"], true);
        // The signature is the original payload's.
        Json::Value original_claims = payload;
        original_claims["params"].removeMember("tampered");
        const std::string restored = jws.substr(0, jws.find('.') + 1) +
                                     Base64UrlEncode(AsBytes(WriteJson(original_claims))) +
                                     jws.substr(jws.rfind('.'));
        EXPECT_TRUE(VerifyJobJws(restored, jwks).ok());
        break;
      }
      case Forgery::kWrongAudience:
        ASSERT_TRUE(verified.ok());
        EXPECT_TRUE((*verified)["aud"].isString());
        EXPECT_NE((*verified)["aud"], agent.id());
        break;
      case Forgery::kExpired:
        ASSERT_TRUE(verified.ok());
        EXPECT_LT((*verified)["exp"].asInt64(), now);
        break;
      case Forgery::kIssuedInFuture:
        ASSERT_TRUE(verified.ok());
        EXPECT_GT((*verified)["iat"].asInt64(), now + 5 * 60 + 60);
        EXPECT_GT((*verified)["exp"].asInt64(), now);
        break;
      case Forgery::kReplayedJti: {
        ASSERT_TRUE(verified.ok());
        EXPECT_EQ((*verified)["jti"], original);
        EXPECT_EQ(id, original);
        // Byte for byte what was delivered the first time.
        EXPECT_EQ(jws, first[0]["jws"].asString());
        break;
      }
      case Forgery::kUnknownType:
        ASSERT_TRUE(verified.ok());
        EXPECT_FALSE(wire::IsKnownJobType((*verified)["type"].asString()));
        break;
      case Forgery::kConnectionNotConfigured:
        ASSERT_TRUE(verified.ok());
        EXPECT_EQ((*verified)["connection"], "no-such-connection");
        break;
      case Forgery::kMissingClaims:
        ASSERT_TRUE(verified.ok());
        EXPECT_FALSE(verified->isMember("exp"));
        EXPECT_TRUE(verified->isMember("jti"));
        EXPECT_TRUE(verified->isMember("aud"));
        break;
      case Forgery::kNone:
        ADD_FAILURE() << "AllForgeries() lists kNone";
        break;
    }
    if (forgery != Forgery::kReplayedJti) {
      EXPECT_NE(id, original);
      EXPECT_EQ(payload["jti"], id);
    }
    // The agent's report is recorded against the job.
    const Json::Value report =
        ResultBody(claimed[0]["lease_id"].asString(), "rejected", Error("bad_job", "refused"));
    EXPECT_EQ(agent.Post("/jobs/" + id + "/result", report).status, 200);
  }

  int rejected = 0;
  for (const auto& job : fake->Jobs()) {
    if (job.spec.forgery == Forgery::kNone) continue;
    EXPECT_EQ(job.state, JobState::kFinished) << job.id;
    ASSERT_EQ(job.result_posts(), 1);
    EXPECT_EQ(job.result["status"], "rejected");
    ++rejected;
  }
  EXPECT_EQ(rejected, static_cast<int>(AllForgeries().size()));
  // The original keeps its own result; the replay is a separate entry under the same id.
  EXPECT_EQ(fake->Job(original)->result["status"], "succeeded");
  EXPECT_TRUE(fake->Violations().empty());
}

TEST(FakeControlPlaneJobs, KeyRotationPublishesAndSignsWithTheNewKey) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  const std::string old_kid = fake->current_kid();
  auto new_kid = fake->RotateSigningKey();
  ASSERT_TRUE(new_kid.ok());
  EXPECT_NE(*new_kid, old_kid);
  Json::Value keys = BodyOf(agent.Get("/signing-keys"))["job_signing_keys"];
  ASSERT_EQ(keys.size(), 2u);

  Enqueue(*fake, Provision());
  Json::Value jobs = agent.Claim(1, 0);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(JwsHeader(jobs[0]["jws"].asString())["kid"], *new_kid);
  EXPECT_TRUE(VerifyJobJws(jobs[0]["jws"].asString(), keys).ok());

  EXPECT_FALSE(fake->RetireSigningKey(*new_kid).ok());
  ASSERT_TRUE(fake->RetireSigningKey(old_kid).ok());
  keys = BodyOf(agent.Get("/signing-keys"))["job_signing_keys"];
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0]["kid"], *new_kid);
}

// --- Long poll ----------------------------------------------------------------------------------

TEST(FakeControlPlaneClaim, IdleLongPollAnswersEmptyAfterWaitSeconds) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  const auto start = std::chrono::steady_clock::now();
  const Json::Value jobs = agent.Claim(5, 1);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(jobs.size(), 0u);
  EXPECT_TRUE(jobs.isArray());
  EXPECT_GE(elapsed, milliseconds(950));
  EXPECT_LT(elapsed, milliseconds(3000));

  const auto start0 = std::chrono::steady_clock::now();
  EXPECT_EQ(agent.Claim(5, 0).size(), 0u);
  EXPECT_LT(std::chrono::steady_clock::now() - start0, milliseconds(500));
}

TEST(FakeControlPlaneClaim, LongPollAnswersAsSoonAsAJobArrives) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  auto start = std::chrono::steady_clock::now();
  auto claim = std::async(std::launch::async, [&] { return agent.Claim(5, 30); });
  ASSERT_TRUE(fake->WaitForWaitingClaims(1));
  const std::string id = Enqueue(*fake, Provision());
  ASSERT_EQ(claim.wait_for(seconds(5)), std::future_status::ready);
  const Json::Value jobs = claim.get();
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(5));
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(JobIdOf(jobs[0]), id);
  EXPECT_EQ(fake->waiting_claims(), 0);
}

TEST(FakeControlPlaneClaim, TimeScaleShortensTheWait) {
  FakeControlPlaneOptions options;
  options.long_poll_time_scale = 0.01;
  auto fake = MakeFake(options);
  DirectAgent agent = DirectAgent::Enroll(*fake);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(agent.Claim(1, 60).size(), 0u);  // 60 s scaled to 0.6 s
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, milliseconds(550));
  EXPECT_LT(elapsed, milliseconds(5000));
}

TEST(FakeControlPlaneClaim, ShutdownReleasesHeldClaims) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  auto claim = std::async(std::launch::async, [&] { return agent.Claim(1, 60); });
  ASSERT_TRUE(fake->WaitForWaitingClaims(1));
  fake->Shutdown();
  ASSERT_EQ(claim.wait_for(seconds(5)), std::future_status::ready);
  EXPECT_EQ(claim.get().size(), 0u);
}

TEST(FakeControlPlaneClaim, HonoursMaxJobsAndValidatesTheBody) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  const std::string a = Enqueue(*fake, Provision());
  const std::string b = Enqueue(*fake, Provision());
  const std::string c = Enqueue(*fake, Provision());
  Json::Value two = agent.Claim(2, 0);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(JobIdOf(two[0]), a);  // in enqueue order
  EXPECT_EQ(JobIdOf(two[1]), b);
  Json::Value rest = agent.Claim(100, 0);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(JobIdOf(rest[0]), c);

  for (const char* body :
       {R"({"max_jobs": 0, "wait_seconds": 0})", R"({"max_jobs": 101, "wait_seconds": 0})",
        R"({"max_jobs": 1, "wait_seconds": 61})", R"({"max_jobs": 1, "wait_seconds": -1})",
        R"({"max_jobs": 1})", R"({"wait_seconds": 1})",
        R"({"max_jobs": 1, "wait_seconds": 0, "all": true})",
        R"({"max_jobs": "1", "wait_seconds": 0})"}) {
    SCOPED_TRACE(body);
    EXPECT_TRUE(IsError(agent.Post("/jobs/claim", *ParseJson(body, "t")), 400, "invalid_request"));
  }
}

TEST(FakeControlPlaneClaim, JobForOneAgentIsNotGivenToAnother) {
  auto fake = MakeFake();
  DirectAgent a = DirectAgent::Enroll(*fake);
  DirectAgent b = DirectAgent::Enroll(*fake);
  Enqueue(*fake, Provision(a.id()));
  EXPECT_EQ(b.Claim(10, 0).size(), 0u);
  EXPECT_EQ(a.Claim(10, 0).size(), 1u);
}

// --- Leases -------------------------------------------------------------------------------------

TEST(FakeControlPlaneLease, ExpiredLeaseRedeliversToAnotherAgent) {
  FakeClock clock;
  FakeControlPlaneOptions options;
  options.clock = &clock;
  auto fake = MakeFake(options);
  DirectAgent a = DirectAgent::Enroll(*fake);
  DirectAgent b = DirectAgent::Enroll(*fake);
  const std::string id = Enqueue(*fake, AccessSync());

  Json::Value first = a.Claim(1, 0);
  ASSERT_EQ(first.size(), 1u);
  const std::string lease_a = first[0]["lease_id"].asString();
  // Never to two agents at once.
  EXPECT_EQ(b.Claim(1, 0).size(), 0u);

  clock.Advance(seconds(61));
  Json::Value second = b.Claim(1, 0);
  ASSERT_EQ(second.size(), 1u);
  const std::string lease_b = second[0]["lease_id"].asString();
  EXPECT_NE(lease_a, lease_b);
  EXPECT_EQ(JwsPayload(second[0]["jws"].asString())["jti"], id);
  EXPECT_EQ(JwsPayload(second[0]["jws"].asString())["aud"], b.id());

  // A's lease is gone for everything.
  EXPECT_TRUE(IsError(a.Post("/jobs/" + id + "/lease", LeaseBody(lease_a)), 409, "lease_lost"));
  EXPECT_TRUE(IsError(a.Post("/jobs/" + id + "/records", RecordsBody(lease_a, 0, Records({"u1"}))),
                      409, "lease_lost"));
  Json::Value sync_output = *ParseJson(
      R"({"counts": {"users": 0, "groups": 0, "non_human": 0, "credentials": 0}, "records": 0,
          "pages": 0, "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
          "duration_ms": 5})",
      "t");
  EXPECT_TRUE(
      IsError(a.Post("/jobs/" + id + "/result", ResultBody(lease_a, "succeeded", sync_output)), 409,
              "lease_lost"));
  EXPECT_EQ(b.Post("/jobs/" + id + "/result", ResultBody(lease_b, "succeeded", sync_output)).status,
            200);

  auto job = fake->Job(id);
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->state, JobState::kFinished);
  ASSERT_EQ(job->leases.size(), 2u);
  EXPECT_EQ(job->leases[0].agent_id, a.id());
  EXPECT_EQ(job->leases[0].end, LeaseInfo::End::kExpired);
  EXPECT_EQ(job->leases[1].agent_id, b.id());
  EXPECT_EQ(job->leases[1].end, LeaseInfo::End::kFinished);
  EXPECT_EQ(job->finished_by, b.id());
  EXPECT_EQ(job->result_posts(), 2);
  EXPECT_EQ(job->result_deliveries[0].outcome, "lease_lost");
  EXPECT_TRUE(fake->Violations().empty());
}

TEST(FakeControlPlaneLease, RealTimeExpiryWakesAWaitingClaim) {
  FakeControlPlaneOptions options;
  options.lease_duration = milliseconds(300);
  auto fake = MakeFake(options);
  DirectAgent a = DirectAgent::Enroll(*fake);
  DirectAgent b = DirectAgent::Enroll(*fake);
  const std::string id = Enqueue(*fake, Provision());
  ASSERT_EQ(a.Claim(1, 0).size(), 1u);
  const auto start = std::chrono::steady_clock::now();
  Json::Value jobs = b.Claim(1, 10);
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(3));
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(JobIdOf(jobs[0]), id);
}

TEST(FakeControlPlaneLease, ExtensionMovesTheExpiryAndNeedsTheOwnersLease) {
  FakeClock clock;
  FakeControlPlaneOptions options;
  options.clock = &clock;
  auto fake = MakeFake(options);
  DirectAgent a = DirectAgent::Enroll(*fake);
  DirectAgent b = DirectAgent::Enroll(*fake);
  const std::string id = Enqueue(*fake, Provision());
  const std::string lease = a.Claim(1, 0)[0]["lease_id"].asString();

  clock.Advance(seconds(40));
  HttpResponse extended = a.Post("/jobs/" + id + "/lease", LeaseBody(lease));
  ASSERT_EQ(extended.status, 200) << extended.body;
  EXPECT_EQ(BodyOf(extended)["lease_expires_at"], FormatRfc3339(clock.Now() + seconds(60)));
  EXPECT_EQ(BodyOf(extended).size(), 1u);
  clock.Advance(seconds(40));  // 80 s after the claim, 40 s after the extension
  EXPECT_EQ(b.Claim(1, 0).size(), 0u);
  EXPECT_EQ(fake->Job(id)->leases.back().extensions, 1);

  EXPECT_TRUE(
      IsError(a.Post("/jobs/" + id + "/lease", LeaseBody("lease_nope")), 409, "lease_unknown"));
  EXPECT_TRUE(IsError(a.Post("/jobs/job_nope/lease", LeaseBody(lease)), 404, "job_not_found"));
  EXPECT_TRUE(IsError(a.Post("/jobs/" + id + "/lease", Json::Value(Json::objectValue)), 400,
                      "invalid_request"));
  // Another agent presenting A's lease id.
  EXPECT_TRUE(IsError(b.Post("/jobs/" + id + "/lease", LeaseBody(lease)), 409, "lease_unknown"));
  EXPECT_EQ(fake->Violations().size(), 1u);

  ASSERT_TRUE(fake->ExpireLease(id).ok());
  EXPECT_TRUE(IsError(a.Post("/jobs/" + id + "/lease", LeaseBody(lease)), 409, "lease_lost"));
}

// --- Records ------------------------------------------------------------------------------------

TEST(FakeControlPlaneRecords, SeqStartsAtZeroIncreasesByOneAndRepeatsAreIdempotent) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  const std::string id = Enqueue(*fake, AccessSync());
  const std::string lease = agent.Claim(1, 0)[0]["lease_id"].asString();
  const std::string path = "/jobs/" + id + "/records";

  EXPECT_TRUE(
      IsError(agent.Post(path, RecordsBody(lease, 1, Records({"u0"}))), 422, "seq_out_of_order"));
  HttpResponse ok = agent.Post(path, RecordsBody(lease, 0, Records({"u1", "u2"})));
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(BodyOf(ok), Json::Value(Json::objectValue));
  EXPECT_EQ(agent.Post(path, RecordsBody(lease, 0, Records({"u1", "u2"}))).status, 200);
  EXPECT_TRUE(fake->Violations().size() == 1u);  // only the skipped seq so far
  EXPECT_TRUE(
      IsError(agent.Post(path, RecordsBody(lease, 2, Records({"u5"}))), 422, "seq_out_of_order"));
  EXPECT_EQ(agent.Post(path, RecordsBody(lease, 1, Records({"u3"}))).status, 200);

  auto job = fake->Job(id);
  ASSERT_EQ(job->records_by_lease[lease].size(), 2u);
  EXPECT_EQ(job->records_by_lease[lease][0].deliveries, 2);
  const std::vector<Json::Value> records = job->Records();
  ASSERT_EQ(records.size(), 3u);  // no duplicate stored
  EXPECT_EQ(records[0]["id"], "u1");
  EXPECT_EQ(records[2]["id"], "u3");

  // The same seq with other content: answered as the same call, flagged as a violation.
  const auto before = fake->Violations().size();
  EXPECT_EQ(agent.Post(path, RecordsBody(lease, 1, Records({"u4"}))).status, 200);
  ASSERT_EQ(fake->Violations().size(), before + 1);
  EXPECT_NE(fake->Violations().back().what.find("different content"), std::string::npos);
  EXPECT_EQ(fake->Job(id)->Records().size(), 3u);
}

TEST(FakeControlPlaneRecords, RefusesOversizedCallsBadRecordsAndOtherJobTypes) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  const std::string id = Enqueue(*fake, AccessSync());
  const std::string lease = agent.Claim(1, 0)[0]["lease_id"].asString();
  const std::string path = "/jobs/" + id + "/records";

  Json::Value many(Json::arrayValue);
  for (int i = 0; i < 1001; ++i) many.append(UserRecord("u" + std::to_string(i)));
  EXPECT_TRUE(IsError(agent.Post(path, RecordsBody(lease, 0, many)), 422, "too_many_records"));
  many.resize(1000);
  EXPECT_EQ(agent.Post(path, RecordsBody(lease, 0, many)).status, 200);

  Json::Value bad = Records({"x"});
  bad[0]["password"] = "hunter2";
  EXPECT_TRUE(IsError(agent.Post(path, RecordsBody(lease, 1, bad)), 422, "invalid_record"));
  bad = Records({"x"});
  bad[0]["human"] = false;  // non-human without an nhi_type
  EXPECT_TRUE(IsError(agent.Post(path, RecordsBody(lease, 1, bad)), 422, "invalid_record"));
  bad = Records({"x"});
  bad[0]["kind"] = "robot";
  EXPECT_TRUE(IsError(agent.Post(path, RecordsBody(lease, 1, bad)), 422, "invalid_record"));
  Json::Value group = *ParseJson(R"([{"kind": "group", "id": "g1", "name": "jira-users",
                                      "member_count": 3}])",
                                 "t");
  Json::Value cred = *ParseJson(R"([{"kind": "credential", "id": "c1",
      "nhi_type": "personal_access_token", "name": "ci", "owner_id": "u1",
      "created_at": "2026-01-01T00:00:00Z", "expires_at": null, "last_used_at": null}])",
                                "t");
  EXPECT_EQ(agent.Post(path, RecordsBody(lease, 1, group)).status, 200);
  EXPECT_EQ(agent.Post(path, RecordsBody(lease, 2, cred)).status, 200);
  Json::Value no_lease = RecordsBody(lease, 3, group);
  no_lease.removeMember("lease_id");
  EXPECT_TRUE(IsError(agent.Post(path, no_lease), 400, "invalid_request"));

  const std::string other = Enqueue(*fake, Provision());
  const std::string other_lease = agent.Claim(1, 0)[0]["lease_id"].asString();
  EXPECT_TRUE(IsError(
      agent.Post("/jobs/" + other + "/records", RecordsBody(other_lease, 0, Records({"u"}))), 422,
      "records_not_expected"));
}

// --- Results ------------------------------------------------------------------------------------

TEST(FakeControlPlaneResult, SameResultAgainIsAcceptedADifferentOneIsNot) {
  auto fake = MakeFake();
  DirectAgent a = DirectAgent::Enroll(*fake);
  DirectAgent b = DirectAgent::Enroll(*fake);
  const std::string id = Enqueue(*fake, Provision());
  const std::string lease = a.Claim(1, 0)[0]["lease_id"].asString();
  const std::string path = "/jobs/" + id + "/result";
  const Json::Value result = ResultBody(lease, "succeeded", ProvisionOutput());

  HttpResponse first = a.Post(path, result);
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(BodyOf(first), Json::Value(Json::objectValue));
  EXPECT_EQ(a.Post(path, result).status, 200);
  auto job = fake->Job(id);
  EXPECT_EQ(job->state, JobState::kFinished);
  EXPECT_EQ(job->result_posts(), 2);
  EXPECT_EQ(job->result_deliveries[1].outcome, "duplicate");
  EXPECT_FALSE(job->differing_results);
  EXPECT_TRUE(fake->Violations().empty());

  Json::Value different = ResultBody(lease, "failed", Error("jira_unavailable", "down", true));
  EXPECT_TRUE(IsError(a.Post(path, different), 409, "job_finished"));
  job = fake->Job(id);
  EXPECT_TRUE(job->differing_results);
  EXPECT_EQ(job->result["status"], "succeeded");  // the first result stands
  EXPECT_EQ(fake->Violations().size(), 1u);

  // Another agent with a lease it never had.
  EXPECT_TRUE(IsError(b.Post(path, ResultBody("lease_999999", "succeeded", ProvisionOutput())), 409,
                      "lease_unknown"));
  EXPECT_TRUE(IsError(b.Post("/jobs/job_nope/result", result), 404, "job_not_found"));
}

TEST(FakeControlPlaneResult, FinishedElsewhereIs409) {
  FakeClock clock;
  FakeControlPlaneOptions options;
  options.clock = &clock;
  auto fake = MakeFake(options);
  DirectAgent a = DirectAgent::Enroll(*fake);
  DirectAgent b = DirectAgent::Enroll(*fake);
  const std::string id = Enqueue(*fake, Provision());
  const std::string lease_a = a.Claim(1, 0)[0]["lease_id"].asString();
  ASSERT_TRUE(fake->ExpireLease(id).ok());
  const std::string lease_b = b.Claim(1, 0)[0]["lease_id"].asString();
  ASSERT_EQ(
      b.Post("/jobs/" + id + "/result", ResultBody(lease_b, "succeeded", ProvisionOutput())).status,
      200);
  EXPECT_TRUE(IsError(
      a.Post("/jobs/" + id + "/result", ResultBody(lease_a, "succeeded", ProvisionOutput())), 409,
      "job_finished"));
  EXPECT_FALSE(fake->Job(id)->differing_results);
}

TEST(FakeControlPlaneResult, LateResultLandsUnlessTheJobWasDeliveredAgain) {
  for (bool accept_late : {true, false}) {
    SCOPED_TRACE(accept_late ? "accept_late_results" : "strict leases");
    FakeClock clock;
    FakeControlPlaneOptions options;
    options.clock = &clock;
    options.accept_late_results = accept_late;
    auto fake = MakeFake(options);
    DirectAgent a = DirectAgent::Enroll(*fake);
    const std::string id = Enqueue(*fake, Provision());
    const std::string lease = a.Claim(1, 0)[0]["lease_id"].asString();
    clock.Advance(seconds(120));
    HttpResponse r =
        a.Post("/jobs/" + id + "/result", ResultBody(lease, "succeeded", ProvisionOutput()));
    if (accept_late) {
      EXPECT_EQ(r.status, 200) << r.body;
      EXPECT_EQ(fake->Job(id)->state, JobState::kFinished);
    } else {
      EXPECT_TRUE(IsError(r, 409, "lease_lost"));
      EXPECT_EQ(fake->Job(id)->state, JobState::kQueued);
    }
  }
}

TEST(FakeControlPlaneResult, ValidatesShapeCodesAndOutputs) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  const std::string id = Enqueue(*fake, Provision());
  const std::string lease = agent.Claim(1, 0)[0]["lease_id"].asString();
  const std::string path = "/jobs/" + id + "/result";

  Json::Value r = ResultBody(lease, "succeeded", ProvisionOutput());
  r.removeMember("started_at");
  EXPECT_TRUE(IsError(agent.Post(path, r), 400, "invalid_request"));
  r = ResultBody(lease, "succeeded", ProvisionOutput());
  r["error"] = Error("internal", "x");
  EXPECT_TRUE(IsError(agent.Post(path, r), 400, "invalid_request"));
  r = ResultBody(lease, "failed", Error("internal", "x"));
  r["output"] = ProvisionOutput();
  EXPECT_TRUE(IsError(agent.Post(path, r), 400, "invalid_request"));
  r = ResultBody(lease, "done", ProvisionOutput());
  EXPECT_TRUE(IsError(agent.Post(path, r), 400, "invalid_request"));
  r = ResultBody(lease, "failed", Error("it_broke", "x"));
  EXPECT_TRUE(IsError(agent.Post(path, r), 422, "unknown_error_code"));
  r = ResultBody(lease, "failed", Error("user_not_found", "x", /*retryable=*/true));
  EXPECT_TRUE(IsError(agent.Post(path, r), 422, "invalid_result"));
  r = ResultBody(lease, "rejected", Error("bad_signature", "x", /*retryable=*/true));
  EXPECT_TRUE(IsError(agent.Post(path, r), 422, "invalid_result"));
  r = ResultBody(lease, "rejected", Error("Bad Signature", "x"));
  EXPECT_TRUE(IsError(agent.Post(path, r), 422, "invalid_result"));
  r = ResultBody(lease, "succeeded", ProvisionOutput());
  r["finished_at"] = "2026-12-04T16:59:00Z";
  EXPECT_TRUE(IsError(agent.Post(path, r), 422, "invalid_result"));
  Json::Value output = ProvisionOutput();
  output.removeMember("created");
  EXPECT_TRUE(
      IsError(agent.Post(path, ResultBody(lease, "succeeded", output)), 422, "invalid_output"));
  output = ProvisionOutput();
  output["password"] = "x";
  EXPECT_TRUE(
      IsError(agent.Post(path, ResultBody(lease, "succeeded", output)), 422, "invalid_output"));
  EXPECT_EQ(fake->Job(id)->state, JobState::kLeased);  // nothing was accepted
  EXPECT_EQ(fake->Job(id)->result_posts(), 11);

  EXPECT_EQ(agent.Post(path, ResultBody(lease, "failed", Error("rate_limited", "slow down", true)))
                .status,
            200);
}

// The output of an access sync that sent these pages of records: their counts and the sha256 of
// their canonical JSON, in order (docs/protocol.md).
struct SyncCounts {
  int users = 0;
  int groups = 0;
  int non_human = 0;
};

Json::Value SyncOutput(const std::vector<Json::Value>& pages, SyncCounts counts) {
  std::string concatenated;
  int records = 0;
  for (const Json::Value& page : pages) {
    for (const auto& r : page) concatenated += WriteJson(r);
    records += static_cast<int>(page.size());
  }
  unsigned char digest[32];
  unsigned int len = 0;
  EVP_Digest(concatenated.data(), concatenated.size(), digest, &len, EVP_sha256(), nullptr);
  Json::Value output(Json::objectValue);
  output["counts"]["users"] = counts.users;
  output["counts"]["groups"] = counts.groups;
  output["counts"]["non_human"] = counts.non_human;
  output["counts"]["credentials"] = 0;
  output["records"] = records;
  output["pages"] = static_cast<int>(pages.size());
  output["sha256"] = HexEncode(std::span(digest, len));
  output["duration_ms"] = 10;
  return output;
}

TEST(FakeControlPlaneResult, AccessSyncOutputIsCheckedAgainstTheRecords) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  for (bool honest : {true, false}) {
    SCOPED_TRACE(honest ? "honest output" : "wrong hash");
    const std::string id = Enqueue(*fake, AccessSync());
    const std::string lease = agent.Claim(1, 0)[0]["lease_id"].asString();
    Json::Value page0 = Records({"u1"});
    page0.append(UserRecord("bot1", /*human=*/false));
    Json::Value page1 = *ParseJson(R"([{"kind": "group", "id": "g1", "name": "jira-users",
                                        "member_count": 2}])",
                                   "t");
    ASSERT_EQ(agent.Post("/jobs/" + id + "/records", RecordsBody(lease, 0, page0)).status, 200);
    ASSERT_EQ(agent.Post("/jobs/" + id + "/records", RecordsBody(lease, 1, page1)).status, 200);
    Json::Value output = SyncOutput({page0, page1}, {.users = 2, .groups = 1, .non_human = 1});
    if (!honest) output["sha256"] = std::string(64, '0');
    const auto before = fake->Violations().size();
    ASSERT_EQ(agent.Post("/jobs/" + id + "/result", ResultBody(lease, "succeeded", output)).status,
              200);
    EXPECT_EQ(fake->Violations().size(), before + (honest ? 0 : 1));
  }
}

// An agent that finished a sync but could not deliver the result before its lease expired re-sends
// the stored result under the next delivery, without running the sync again: the output answers
// for the records of the delivery that produced it, and must still match them exactly.
TEST(FakeControlPlaneResult, StoredSyncResultSentAgainAnswersForItsOwnDeliverysRecords) {
  FakeClock clock;
  FakeControlPlaneOptions options;
  options.clock = &clock;
  auto fake = MakeFake(options);
  DirectAgent agent = DirectAgent::Enroll(*fake);
  for (bool honest : {true, false}) {
    SCOPED_TRACE(honest ? "the stored output" : "an output matching no delivery");
    const std::string id = Enqueue(*fake, AccessSync());
    const std::string lease1 = agent.Claim(1, 0)[0]["lease_id"].asString();
    const Json::Value page = Records({"u1", "u2"});
    ASSERT_EQ(agent.Post("/jobs/" + id + "/records", RecordsBody(lease1, 0, page)).status, 200);
    Json::Value output = SyncOutput({page}, {.users = 2});
    if (!honest) output["records"] = 3;
    clock.Advance(seconds(61));  // the result never arrived: the job is delivered again
    Json::Value again = agent.Claim(1, 0);
    ASSERT_EQ(again.size(), 1u);
    const std::string lease2 = again[0]["lease_id"].asString();
    ASSERT_NE(lease2, lease1);
    const auto before = fake->Violations().size();
    ASSERT_EQ(agent.Post("/jobs/" + id + "/result", ResultBody(lease2, "succeeded", output)).status,
              200);
    // Otherwise it is held to its own delivery, which sent nothing: records, pages, users, sha256.
    EXPECT_EQ(fake->Violations().size(), before + (honest ? 0 : 4));
  }
}

TEST(FakeControlPlaneResult, ReplayedJobIsASeparateDeliveryUnderTheSameId) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  const std::string id = Enqueue(*fake, Provision());
  const std::string lease1 = agent.Claim(1, 0)[0]["lease_id"].asString();
  const Json::Value result = ResultBody(lease1, "succeeded", ProvisionOutput());
  ASSERT_EQ(agent.Post("/jobs/" + id + "/result", result).status, 200);

  JobSpec replay;
  replay.forgery = Forgery::kReplayedJti;
  ASSERT_EQ(Enqueue(*fake, replay), id);
  Json::Value again = agent.Claim(1, 0);
  ASSERT_EQ(again.size(), 1u);
  const std::string lease2 = again[0]["lease_id"].asString();
  // The agent re-sends its journaled result under the new lease.
  Json::Value resent = result;
  resent["lease_id"] = lease2;
  EXPECT_EQ(agent.Post("/jobs/" + id + "/result", resent).status, 200);

  const std::vector<JobInfo> jobs = fake->Jobs();
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[1].spec.forgery, Forgery::kReplayedJti);
  EXPECT_EQ(jobs[1].spec.replay_of, id);
  EXPECT_EQ(jobs[1].finishing_lease, lease2);
  EXPECT_EQ(fake->Job(id)->finishing_lease, lease1);
}

// --- Heartbeat and renewal ----------------------------------------------------------------------

TEST(FakeControlPlaneHeartbeat, IsValidatedRecordedAndCarriesTheRenewalFlag) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  HttpResponse ok = agent.Post("/heartbeat", HeartbeatBody(agent.chain()));
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.body, R"({"renew_certificate":false})");
  ASSERT_TRUE(fake->RequestCertificateRenewal(agent.id()).ok());
  EXPECT_EQ(BodyOf(agent.Post("/heartbeat", HeartbeatBody(agent.chain())))["renew_certificate"],
            true);

  Json::Value leaky = HeartbeatBody(agent.chain());
  leaky["secrets"][0]["value"] = "hunter2";
  EXPECT_TRUE(IsError(agent.Post("/heartbeat", leaky), 400, "invalid_request"));
  Json::Value code = HeartbeatBody(agent.chain());
  code["totp"] = "123456";
  EXPECT_TRUE(IsError(agent.Post("/heartbeat", code), 400, "invalid_request"));
  Json::Value bad_status = HeartbeatBody(agent.chain());
  bad_status["connections"][0]["status"] = "fine";
  EXPECT_TRUE(IsError(agent.Post("/heartbeat", bad_status), 400, "invalid_request"));
  Json::Value no_jobs = HeartbeatBody(agent.chain());
  no_jobs.removeMember("jobs");
  EXPECT_TRUE(IsError(agent.Post("/heartbeat", no_jobs), 400, "invalid_request"));

  const std::vector<HeartbeatInfo> beats = fake->Heartbeats();
  ASSERT_EQ(beats.size(), 6u);
  EXPECT_TRUE(beats[0].accepted);
  EXPECT_FALSE(beats[2].accepted);
  EXPECT_NE(beats[2].body.find("hunter2"), std::string::npos);  // recorded as received
  EXPECT_NE(beats[2].problem.find("value"), std::string::npos);
  EXPECT_EQ(fake->Violations().size(), 4u);

  // A well-formed heartbeat that misreports the certificate in use.
  Json::Value wrong_expiry = HeartbeatBody(agent.chain());
  wrong_expiry["certificate_expires_at"] = "2030-01-01T00:00:00Z";
  EXPECT_EQ(agent.Post("/heartbeat", wrong_expiry).status, 200);
  ASSERT_EQ(fake->Violations().size(), 5u);
  EXPECT_NE(fake->Violations()[4].what.find("expires at"), std::string::npos);
}

TEST(FakeControlPlaneHeartbeat, ForbiddenValuesAnywhereAreViolations) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  fake->AddForbiddenValue("password-canary-5f3a9c");
  ASSERT_EQ(agent.Post("/heartbeat", HeartbeatBody(agent.chain())).status, 200);
  EXPECT_TRUE(fake->Violations().empty());
  Json::Value hb = HeartbeatBody(agent.chain());
  hb["connections"][0]["detail"] = "login failed for password-canary-5f3a9c";
  ASSERT_EQ(agent.Post("/heartbeat", hb).status, 200);  // valid shape, but a leak
  ASSERT_EQ(fake->Violations().size(), 1u);
  EXPECT_NE(fake->Violations()[0].what.find("forbidden value"), std::string::npos);
  // Base64 of the value (as in a Basic header) is caught as well.
  hb["connections"][0]["detail"] = Base64Encode(AsBytes("u:password-canary-5f3a9c"));
  ASSERT_EQ(agent.Post("/heartbeat", hb).status, 200);
  EXPECT_EQ(fake->Violations().size(), 2u);
}

TEST(FakeControlPlaneRenewal, IssuesForANewKeyAndAcceptsIt) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  ASSERT_TRUE(fake->RequestCertificateRenewal(agent.id()).ok());
  Json::Value same(Json::objectValue);
  same["csr"] = MakeCsrPem(agent.key());
  EXPECT_TRUE(IsError(agent.Post("/certificate", same), 409, "already_enrolled"));

  EvpPkeyPtr fresh = NewEcP256Key();
  Json::Value body(Json::objectValue);
  body["csr"] = MakeCsrPem(fresh.get());
  HttpResponse resp = agent.Post("/certificate", body);
  ASSERT_EQ(resp.status, 200) << resp.body;
  const std::string chain = BodyOf(resp)["certificate_chain"].asString();
  EXPECT_EQ(BodyOf(resp).size(), 1u);
  EXPECT_EQ(CommonName(chain), agent.id());
  EXPECT_TRUE(SignedBy(chain, fake->agent_ca_pem()));

  const std::string old_chain = agent.chain();
  agent.UseCertificate(std::move(fresh), chain);
  EXPECT_EQ(agent.Get("/signing-keys").status, 200);
  auto info = fake->Agent(agent.id());
  EXPECT_EQ(info->renewals, 1);
  EXPECT_FALSE(info->renewal_requested);
  ASSERT_EQ(info->key_sha256.size(), 2u);
  const std::vector<RequestInfo> requests = fake->Requests();
  EXPECT_EQ(requests.back().client_key_sha256, info->key_sha256[1]);
  EXPECT_EQ(BodyOf(agent.Post("/heartbeat", HeartbeatBody(agent.chain())))["renew_certificate"],
            false);

  Json::Value bad(Json::objectValue);
  bad["csr"] = "nope";
  EXPECT_TRUE(IsError(agent.Post("/certificate", bad), 422, "invalid_csr"));
}

// --- Faults -------------------------------------------------------------------------------------

TEST(FakeControlPlaneFaults, QueuedStatusFaultsComeFirstThenNormalAnswers) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  fake->QueueFault(ControlPlaneFault::Status(503, "7"), 2, Endpoint::kClaim);
  Json::Value claim = *ParseJson(R"({"max_jobs": 1, "wait_seconds": 0})", "t");

  // Another endpoint is not affected.
  EXPECT_EQ(agent.Post("/heartbeat", HeartbeatBody(agent.chain())).status, 200);
  for (int i = 0; i < 2; ++i) {
    HttpResponse r = agent.Post("/jobs/claim", claim);
    EXPECT_TRUE(IsError(r, 503, "unavailable"));
    ASSERT_EQ(r.headers.size(), 2u);
    EXPECT_EQ(r.headers[1].first, "Retry-After");
    EXPECT_EQ(r.headers[1].second, "7");
  }
  EXPECT_EQ(agent.Post("/jobs/claim", claim).status, 200);
  EXPECT_EQ(fake->queued_faults(), 0);

  const std::string date = FormatHttpDate(std::chrono::system_clock::now() + seconds(30));
  fake->QueueFault(ControlPlaneFault::Status(429, date));
  HttpResponse limited = agent.Post("/jobs/claim", claim);
  EXPECT_TRUE(IsError(limited, 429, "rate_limited"));
  EXPECT_EQ(limited.headers.back().second, date);

  fake->QueueFault(ControlPlaneFault::Status(500));
  HttpResponse internal = agent.Get("/signing-keys");
  EXPECT_TRUE(IsError(internal, 500, "internal"));
  EXPECT_EQ(internal.headers.size(), 1u);  // no Retry-After

  std::vector<RequestInfo> requests = fake->Requests();
  EXPECT_EQ(requests.back().fault, "status");
  EXPECT_EQ(requests.back().status, 500);
}

TEST(FakeControlPlaneFaults, HtmlMalformedJsonAndTransportFaults) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  ControlPlaneFault html;
  html.kind = ControlPlaneFault::Kind::kHtmlPage;
  html.status = 502;
  fake->QueueFault(html);
  HttpResponse page = agent.Get("/signing-keys");
  EXPECT_EQ(page.status, 502);
  EXPECT_NE(page.body.find("<html>"), std::string::npos);
  EXPECT_FALSE(ParseJson(page.body, "t").ok());

  ControlPlaneFault garbage;
  garbage.kind = ControlPlaneFault::Kind::kMalformedJson;
  fake->QueueFault(garbage);
  HttpResponse bad = agent.Get("/signing-keys");
  EXPECT_EQ(bad.status, 200);
  EXPECT_FALSE(ParseJson(bad.body, "t").ok());

  fake->QueueFault(ControlPlaneFault::Reset());
  HttpResponse reset = agent.Get("/signing-keys");
  EXPECT_EQ(reset.fault.kind, Fault::kResetBeforeHeaders);

  for (auto kind : {ControlPlaneFault::Kind::kTruncateBody, ControlPlaneFault::Kind::kDelay}) {
    ControlPlaneFault f;
    f.kind = kind;
    f.delay = milliseconds(250);
    fake->QueueFault(f);
    HttpResponse r = agent.Get("/signing-keys");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.fault.delay, milliseconds(250));
    EXPECT_EQ(r.fault.kind, kind == ControlPlaneFault::Kind::kTruncateBody ? Fault::kTruncateBody
                                                                           : Fault::kDelay);
    EXPECT_EQ(BodyOf(r)["job_signing_keys"].size(), 1u);  // the real answer underneath
  }
  ControlPlaneFault stall;
  stall.kind = ControlPlaneFault::Kind::kStall;
  stall.delay = milliseconds(300);
  fake->QueueFault(stall);
  HttpResponse stalled = agent.Get("/signing-keys");
  EXPECT_EQ(stalled.fault.kind, Fault::kStall);
  EXPECT_EQ(stalled.fault.delay, milliseconds(300));
}

TEST(FakeControlPlaneFaults, ProcessedRequestWhoseAnswerIsLost) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  const std::string id = Enqueue(*fake, Provision());
  const std::string lease = agent.Claim(1, 0)[0]["lease_id"].asString();
  const Json::Value result = ResultBody(lease, "succeeded", ProvisionOutput());

  // Not processed: the result is not stored.
  fake->QueueFault(ControlPlaneFault::Reset(/*process_request=*/false), 1, Endpoint::kResult);
  EXPECT_EQ(agent.Post("/jobs/" + id + "/result", result).fault.kind, Fault::kResetBeforeHeaders);
  EXPECT_EQ(fake->Job(id)->state, JobState::kLeased);
  // Processed: stored, but the agent never hears so, and sends it again.
  fake->QueueFault(ControlPlaneFault::Reset(/*process_request=*/true), 1, Endpoint::kResult);
  EXPECT_EQ(agent.Post("/jobs/" + id + "/result", result).fault.kind, Fault::kResetBeforeHeaders);
  EXPECT_EQ(fake->Job(id)->state, JobState::kFinished);
  EXPECT_EQ(agent.Post("/jobs/" + id + "/result", result).status, 200);
  auto job = fake->Job(id);
  ASSERT_EQ(job->result_posts(), 2);  // the unprocessed one never reached the job
  EXPECT_EQ(job->result_deliveries[0].outcome, "accepted");
  EXPECT_EQ(job->result_deliveries[1].outcome, "duplicate");
}

TEST(FakeControlPlaneFaults, ArrivalsAreRecordedPerEndpoint) {
  auto fake = MakeFake();
  DirectAgent agent = DirectAgent::Enroll(*fake);
  fake->QueueFault(ControlPlaneFault::Status(503), 3, Endpoint::kClaim);
  Json::Value claim = *ParseJson(R"({"max_jobs": 1, "wait_seconds": 0})", "t");
  for (int i = 0; i < 3; ++i) {
    agent.Post("/jobs/claim", claim);
    std::this_thread::sleep_for(milliseconds(20));
  }
  agent.Post("/heartbeat", HeartbeatBody(agent.chain()));
  const auto arrivals = fake->Arrivals(Endpoint::kClaim);
  ASSERT_EQ(arrivals.size(), 3u);
  EXPECT_GE(arrivals[1] - arrivals[0], milliseconds(20));
  EXPECT_GE(arrivals[2] - arrivals[1], milliseconds(20));
  EXPECT_EQ(fake->Arrivals(Endpoint::kHeartbeat).size(), 1u);
  EXPECT_EQ(fake->Arrivals(Endpoint::kEnroll).size(), 1u);
  EXPECT_TRUE(fake->WaitForRequests(Endpoint::kClaim, 3, milliseconds(10)));
  EXPECT_FALSE(fake->WaitForRequests(Endpoint::kClaim, 4, milliseconds(200)));
}

// --- Admin API ----------------------------------------------------------------------------------

TEST(FakeControlPlaneAdmin, EnqueuesFaultsAndReportsState) {
  FakeControlPlaneOptions options;
  options.enable_admin_api = true;
  auto fake = MakeFake(options);
  DirectAgent agent = DirectAgent::Enroll(*fake);

  HttpResponse created =
      fake->Handle(MakeRequest("POST", "/_fake/jobs",
                               R"({"type": "jira.group.add_member", "connection": "jira-prod",
          "params": {"user": {"username": "ada"}, "group": "devs"}})"));
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string id = BodyOf(created)["job_id"].asString();
  HttpResponse forged =
      fake->Handle(MakeRequest("POST", "/_fake/jobs", R"({"type": "jira.connection.verify",
                                             "connection": "jira-prod", "forgery": "alg_none"})"));
  ASSERT_EQ(forged.status, 201) << forged.body;
  EXPECT_TRUE(IsError(
      fake->Handle(MakeRequest("POST", "/_fake/jobs", R"({"type": "x", "forgery": "sneaky"})")),
      400, "admin_error"));

  HttpResponse fault =
      fake->Handle(MakeRequest("POST", "/_fake/faults",
                               R"({"kind": "status", "status": 503, "retry_after": "2", "count": 1,
          "endpoint": "jobs/claim"})"));
  ASSERT_EQ(fault.status, 200) << fault.body;
  EXPECT_TRUE(
      IsError(agent.Post("/jobs/claim", *ParseJson(R"({"max_jobs": 2, "wait_seconds": 0})", "t")),
              503, "unavailable"));
  Json::Value jobs = agent.Claim(2, 0);
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(JwsHeader(jobs[1]["jws"].asString())["alg"], "none");

  HttpResponse state = fake->Handle(MakeRequest("GET", "/_fake/state"));
  ASSERT_EQ(state.status, 200);
  const Json::Value s = BodyOf(state);
  ASSERT_EQ(s["jobs"].size(), 2u);
  EXPECT_EQ(s["jobs"][0]["id"], id);
  EXPECT_EQ(s["jobs"][0]["state"], "leased");
  EXPECT_EQ(s["jobs"][1]["forgery"], "alg_none");
  EXPECT_EQ(s["agents"][0]["agent_id"], agent.id());
  EXPECT_EQ(s["requests"].size(), fake->Requests().size());

  HttpResponse one = fake->Handle(MakeRequest("GET", "/_fake/jobs/" + id));
  EXPECT_EQ(BodyOf(one)["leases"][0]["agent_id"], agent.id());
  HttpResponse token = fake->Handle(MakeRequest("POST", "/_fake/enrollment-tokens"));
  EXPECT_EQ(token.status, 201);
  EXPECT_EQ(BodyOf(token)["token"].asString().rfind("cwe_", 0), 0u);
  EXPECT_EQ(fake->Handle(MakeRequest("POST", "/_fake/agents/" + agent.id() + "/revoke")).status,
            200);
  EXPECT_TRUE(IsError(agent.Get("/signing-keys"), 401, "certificate_revoked"));
  EXPECT_EQ(fake->Handle(MakeRequest("POST", "/_fake/signing-keys/rotate")).status, 200);
  EXPECT_EQ(fake->PublishedJwks().size(), 2u);
  EXPECT_TRUE(IsError(fake->Handle(MakeRequest("GET", "/_fake/nothing")), 404, "not_found"));
}

}  // namespace
}  // namespace cakewalk::testing
