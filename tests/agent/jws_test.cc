// Job authenticity (agent/jws.h): every check of docs/protocol.md §7 in its order, the key set's
// refresh rules, the unverified-jti reader, local policy, and OpenSSL's Ed25519 against RFC 8032.
#include "agent/jws.h"

#include <gtest/gtest.h>

#include "agent/executor.h"
#include "base/encoding.h"
#include "base/json.h"
#include "tests/fakes/control_plane/jws.h"
#include "tests/support/fake_clock.h"

namespace cakewalk::agent {
namespace {

using testing::FakeClock;
using testing::Forgery;
using testing::JobSigningKey;

constexpr char kAgent[] = "agt_000001";

std::vector<std::uint8_t> Hex(std::string_view hex) {
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<std::uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

SigningKey AsAgentKey(const JobSigningKey& k) { return {k.kid(), k.public_key()}; }

class JwsTest : public ::testing::Test {
 protected:
  JwsTest()
      : key_(JobSigningKey::Generate("jsk_1").value()),
        stranger_(JobSigningKey::Generate("jsk_stranger").value()),
        published_({AsAgentKey(key_)}),
        keys_(
            {AsAgentKey(key_)}, [this] { return Fetch(); }, clock_) {}

  Result<std::vector<SigningKey>> Fetch() {
    ++fetches_;
    if (!fetch_result_.ok()) return fetch_result_;
    return published_;
  }

  Json::Value Claims() const {
    Json::Value c(Json::objectValue);
    c["jti"] = "job_000001";
    c["iss"] = "cakewalk";
    c["aud"] = kAgent;
    const auto now =
        std::chrono::duration_cast<std::chrono::seconds>(clock_.Now().time_since_epoch()).count();
    c["iat"] = static_cast<Json::Int64>(now);
    c["exp"] = static_cast<Json::Int64>(now + 3600);
    c["type"] = "jira.user.provision";
    c["connection"] = "jira-prod";
    c["params"] = Json::Value(Json::objectValue);
    c["params"]["email"] = "a@example.com";
    return c;
  }

  std::string Sign(const Json::Value& claims, Forgery forgery = Forgery::kNone) {
    auto jws = testing::MakeJobJws(claims, forgery, key_, stranger_);
    EXPECT_TRUE(jws.ok()) << jws.status().ToString();
    return jws.ok() ? *jws : std::string();
  }

  // Signs an arbitrary header and payload text with the published key.
  std::string SignRaw(const Json::Value& header, std::string_view payload) {
    const std::string input =
        Base64UrlEncode(AsBytes(WriteJson(header))) + "." + Base64UrlEncode(AsBytes(payload));
    auto sig = key_.Sign(input);
    EXPECT_TRUE(sig.ok());
    return input + "." + Base64UrlEncode(*sig);
  }

  VerifyOutcome Verify(std::string_view jws) {
    VerifyOptions options;
    options.agent_id = kAgent;
    return VerifyJobToken(jws, keys_, options, clock_.Now());
  }

  FakeClock clock_;
  JobSigningKey key_;
  JobSigningKey stranger_;
  std::vector<SigningKey> published_;
  Status fetch_result_;
  int fetches_ = 0;
  SigningKeySet keys_;
};

TEST_F(JwsTest, ValidTokenVerifiesAndYieldsTheClaims) {
  VerifyOutcome out = Verify(Sign(Claims()));
  ASSERT_TRUE(out.status.ok()) << out.status.ToString();
  EXPECT_TRUE(out.authentic);
  EXPECT_EQ(out.job_id, "job_000001");
  EXPECT_EQ(out.claims.type, "jira.user.provision");
  EXPECT_EQ(out.claims.connection, "jira-prod");
  EXPECT_EQ(out.claims.params["email"].asString(), "a@example.com");
  EXPECT_EQ(fetches_, 0);
}

struct ForgeryCase {
  Forgery forgery;
  const char* reason;
  bool authentic;
};

TEST_F(JwsTest, EveryTokenLevelForgeryIsRefusedWithItsReason) {
  const ForgeryCase cases[] = {
      {Forgery::kBadSignature, jws_reason::kBadSignature, false},
      {Forgery::kAlgNone, jws_reason::kUnsupportedAlg, false},
      {Forgery::kHs256WithPublicKey, jws_reason::kUnsupportedAlg, false},
      {Forgery::kUnknownKid, jws_reason::kUnknownKid, false},
      {Forgery::kMissingKid, jws_reason::kUnknownKid, false},
      {Forgery::kTamperedPayload, jws_reason::kBadSignature, false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(testing::ForgeryName(c.forgery)));
    VerifyOutcome out = Verify(Sign(Claims(), c.forgery));
    EXPECT_FALSE(out.status.ok());
    EXPECT_EQ(out.status.reason(), c.reason) << out.status.ToString();
    EXPECT_EQ(out.authentic, c.authentic);
    // The rejection can still be addressed: the jti is read for that purpose only.
    EXPECT_EQ(out.job_id, "job_000001");
  }
}

TEST_F(JwsTest, ClaimChecksInOrder) {
  auto reason_for = [&](const Json::Value& claims) {
    VerifyOutcome out = Verify(Sign(claims));
    EXPECT_TRUE(out.authentic);
    return out.status.reason();
  };
  const std::int64_t now = Claims()["iat"].asInt64();
  {
    Json::Value c = Claims();
    c["iss"] = "someone-else";
    EXPECT_EQ(reason_for(c), jws_reason::kWrongIssuer);
  }
  {
    Json::Value c = Claims();
    c["aud"] = "agt_999999";
    EXPECT_EQ(reason_for(c), jws_reason::kWrongAudience);
  }
  {
    Json::Value c = Claims();
    c["exp"] = static_cast<Json::Int64>(now - 600);
    EXPECT_EQ(reason_for(c), jws_reason::kExpired);
  }
  {
    Json::Value c = Claims();
    c["iat"] = static_cast<Json::Int64>(now + 3600);
    EXPECT_EQ(reason_for(c), jws_reason::kNotYetValid);
  }
  {
    // Wrong audience and expired: the audience is checked first.
    Json::Value c = Claims();
    c["aud"] = "agt_999999";
    c["exp"] = static_cast<Json::Int64>(now - 600);
    EXPECT_EQ(reason_for(c), jws_reason::kWrongAudience);
  }
}

TEST_F(JwsTest, ClockSkewBoundaries) {
  const std::int64_t now = Claims()["iat"].asInt64();
  auto status_for = [&](std::int64_t iat, std::int64_t exp) {
    Json::Value c = Claims();
    c["iat"] = static_cast<Json::Int64>(iat);
    c["exp"] = static_cast<Json::Int64>(exp);
    return Verify(Sign(c)).status;
  };
  EXPECT_TRUE(status_for(now - 100, now - 59).ok()) << "exp within the 60 s skew";
  EXPECT_EQ(status_for(now - 100, now - 60).reason(), jws_reason::kExpired);
  EXPECT_TRUE(status_for(now + 360, now + 3600).ok()) << "iat 5 min + 60 s ahead";
  EXPECT_EQ(status_for(now + 361, now + 3600).reason(), jws_reason::kNotYetValid);
}

TEST_F(JwsTest, MissingOrMistypedClaimsAreMalformed) {
  for (const char* claim : {"jti", "iss", "aud", "iat", "exp", "type", "connection", "params"}) {
    SCOPED_TRACE(claim);
    Json::Value c = Claims();
    c.removeMember(claim);
    VerifyOutcome out = Verify(Sign(c));
    EXPECT_EQ(out.status.reason(), jws_reason::kMalformedJob) << out.status.ToString();
    EXPECT_FALSE(out.authentic);
  }
  Json::Value c = Claims();
  c["exp"] = "tomorrow";
  EXPECT_EQ(Verify(Sign(c)).status.reason(), jws_reason::kMalformedJob);
  c = Claims();
  c["params"] = Json::Value(Json::arrayValue);
  EXPECT_EQ(Verify(Sign(c)).status.reason(), jws_reason::kMalformedJob);
  c = Claims();
  c["jti"] = "job/../../x";
  EXPECT_EQ(Verify(Sign(c)).status.reason(), jws_reason::kMalformedJob);
  // Found by fuzzing (tests/fuzz/jws_fuzz.cc): times SysTime cannot hold overflowed (year 2529).
  c = Claims();
  c["exp"] = static_cast<Json::Int64>(17648536000);
  EXPECT_EQ(Verify(Sign(c)).status.reason(), jws_reason::kMalformedJob);
  c = Claims();
  c["iat"] = static_cast<Json::Int64>(253402300799);
  EXPECT_EQ(Verify(Sign(c)).status.reason(), jws_reason::kMalformedJob);
  // Claims the protocol may add later are tolerated.
  c = Claims();
  c["nbf"] = 1;
  EXPECT_TRUE(Verify(Sign(c)).status.ok());
}

TEST_F(JwsTest, SignatureIsCheckedBeforeThePayloadIsParsed) {
  Json::Value header(Json::objectValue);
  header["alg"] = "EdDSA";
  header["kid"] = "jsk_1";
  // A properly signed payload that is not JSON: malformed (step 5).
  const std::string good = SignRaw(header, "{not json");
  EXPECT_EQ(Verify(good).status.reason(), jws_reason::kMalformedJob);
  // The same payload with a broken signature: bad_signature (step 4), the payload never parsed.
  std::string bad = good;
  char& c = bad[bad.rfind('.') + 10];  // a character inside the signature
  c = c == 'A' ? 'B' : 'A';
  EXPECT_EQ(Verify(bad).status.reason(), jws_reason::kBadSignature);
  // Duplicate keys are refused even when signed.
  const std::string dup = SignRaw(header, R"({"jti":"job_1","jti":"job_2"})");
  EXPECT_EQ(Verify(dup).status.reason(), jws_reason::kMalformedJob);
}

TEST_F(JwsTest, MalformedTokens) {
  const std::string good = Sign(Claims());
  for (const std::string& bad :
       {std::string(""), std::string("abc"), std::string("a.b"), good + ".x", good + "=",
        std::string("!!.??.**"),
        Base64UrlEncode(AsBytes("[1]")) + "." + Base64UrlEncode(AsBytes("{}")) + "."}) {
    SCOPED_TRACE(bad.substr(0, 40));
    EXPECT_EQ(Verify(bad).status.reason(), jws_reason::kMalformedJob);
  }
  Json::Value header(Json::objectValue);
  header["alg"] = "EdDSA";
  header["kid"] = "jsk_1";
  header["crit"] = Json::Value(Json::arrayValue);
  header["crit"].append("b64");
  EXPECT_EQ(Verify(SignRaw(header, WriteJson(Claims()))).status.reason(),
            jws_reason::kMalformedJob);
  // A 63-byte signature is not an Ed25519 signature.
  const std::string truncated =
      good.substr(0, good.rfind('.') + 1) + Base64UrlEncode(std::vector<std::uint8_t>(63, 0x01));
  EXPECT_EQ(Verify(truncated).status.reason(), jws_reason::kBadSignature);
}

TEST_F(JwsTest, AlgorithmIsNeverChosenByTheToken) {
  for (const char* alg : {"none", "HS256", "RS256", "ES256", "PS256", "eddsa", "Ed25519", ""}) {
    SCOPED_TRACE(alg);
    Json::Value header(Json::objectValue);
    header["alg"] = alg;
    header["kid"] = "jsk_1";
    // Even with a valid Ed25519 signature over the input, a wrong alg is refused first.
    EXPECT_EQ(Verify(SignRaw(header, WriteJson(Claims()))).status.reason(),
              jws_reason::kUnsupportedAlg);
  }
  EXPECT_EQ(fetches_, 0);
}

TEST_F(JwsTest, UnknownKidRefreshesOnceAMinute) {
  const std::string token = Sign(Claims(), Forgery::kUnknownKid);
  EXPECT_EQ(Verify(token).status.reason(), jws_reason::kUnknownKid);
  EXPECT_EQ(fetches_, 1);
  EXPECT_EQ(Verify(token).status.reason(), jws_reason::kUnknownKid);
  EXPECT_EQ(fetches_, 1) << "a second unknown kid within a minute must not refresh again";
  clock_.Advance(std::chrono::seconds(59));
  EXPECT_EQ(Verify(token).status.reason(), jws_reason::kUnknownKid);
  EXPECT_EQ(fetches_, 1);
  clock_.Advance(std::chrono::seconds(1));
  EXPECT_EQ(Verify(token).status.reason(), jws_reason::kUnknownKid);
  EXPECT_EQ(fetches_, 2);
  // A missing kid never refreshes.
  clock_.Advance(std::chrono::minutes(5));
  EXPECT_EQ(Verify(Sign(Claims(), Forgery::kMissingKid)).status.reason(), jws_reason::kUnknownKid);
  EXPECT_EQ(fetches_, 2);
}

TEST_F(JwsTest, RotatedKeyIsFoundByARefreshAndRetiredKeysAreDropped) {
  JobSigningKey rotated = JobSigningKey::Generate("jsk_2").value();
  published_ = {AsAgentKey(rotated)};  // jsk_1 retired
  Json::Value c = Claims();
  auto jws = testing::MakeJobJws(c, Forgery::kNone, rotated, stranger_);
  ASSERT_TRUE(jws.ok());
  VerifyOutcome out = Verify(*jws);
  EXPECT_TRUE(out.status.ok()) << out.status.ToString();
  EXPECT_EQ(fetches_, 1);
  EXPECT_EQ(keys_.kids(), std::vector<std::string>{"jsk_2"});
  // jsk_1 is gone now: its tokens are refused (no second refresh within the minute).
  EXPECT_EQ(Verify(Sign(Claims())).status.reason(), jws_reason::kUnknownKid);
}

TEST_F(JwsTest, FailedRefreshKeepsTheKeys) {
  fetch_result_ = Unavailable("control plane down");
  EXPECT_EQ(Verify(Sign(Claims(), Forgery::kUnknownKid)).status.reason(), jws_reason::kUnknownKid);
  EXPECT_EQ(fetches_, 1);
  EXPECT_FALSE(keys_.last_refresh_error().ok());
  EXPECT_TRUE(Verify(Sign(Claims())).status.ok()) << "jsk_1 must still be known";
}

TEST(UnverifiedJobIdTest, ReadsOnlyABoundedWellFormedJti) {
  auto token = [](std::string_view payload) {
    return Base64UrlEncode(AsBytes(R"({"alg":"none"})")) + "." + Base64UrlEncode(AsBytes(payload)) +
           ".";
  };
  EXPECT_EQ(UnverifiedJobId(token(R"({"jti":"job_42","type":"x"})")), "job_42");
  EXPECT_EQ(UnverifiedJobId(token(R"({"jti":"job 42"})")), std::nullopt);
  EXPECT_EQ(UnverifiedJobId(token(R"({"jti":"../x"})")), std::nullopt);
  EXPECT_EQ(UnverifiedJobId(token(R"({"jti":42})")), std::nullopt);
  EXPECT_EQ(UnverifiedJobId(token(R"({"jti":"a","jti":"b"})")), std::nullopt);
  EXPECT_EQ(UnverifiedJobId(token(R"(["jti"])")), std::nullopt);
  EXPECT_EQ(UnverifiedJobId(token("not json")), std::nullopt);
  EXPECT_EQ(UnverifiedJobId("only.two"), std::nullopt);
  const std::string big = R"({"jti":"job_1","pad":")" + std::string(20000, 'x') + "\"}";
  EXPECT_EQ(UnverifiedJobId(token(big)), std::nullopt);
  EXPECT_EQ(UnverifiedJobId(token(R"({"jti":")" + std::string(129, 'a') + "\"}")), std::nullopt);
}

TEST(Ed25519Test, Rfc8032TestVectors) {
  // RFC 8032 §7.1, TEST 1 (empty message) and TEST 2 (one byte 0x72).
  const auto pk1 = Hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  const auto sig1 =
      Hex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e3970"
          "1cf9b46bd25bf5f0595bbe24655141438e7a100b");
  EXPECT_TRUE(VerifyEd25519(pk1, "", sig1));
  EXPECT_FALSE(VerifyEd25519(pk1, "x", sig1));
  const auto pk2 = Hex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c");
  const auto sig2 =
      Hex("92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613"
          "d0f11d8c387b2eaeb4302aeeb00d291612bb0c00");
  EXPECT_TRUE(VerifyEd25519(pk2, "\x72", sig2));
  auto flipped = sig2;
  flipped[10] ^= 0x01;
  EXPECT_FALSE(VerifyEd25519(pk2, "\x72", flipped));
  EXPECT_FALSE(VerifyEd25519(pk1, "\x72", sig2)) << "wrong key";
  EXPECT_FALSE(VerifyEd25519(std::vector<std::uint8_t>(31, 1), "", sig1)) << "short key";
}

class NullExecutor final : public Executor {
 public:
  Result<Json::Value> Run(JobContext&) override { return Json::Value(Json::objectValue); }
};

TEST(LocalPolicyTest, ConnectionTypeAndPolicy) {
  Config config;
  ConnectionConfig conn;
  conn.name = "jira-prod";
  config.connections.push_back(conn);
  ExecutorRegistry registry;
  ASSERT_TRUE(registry.Register("jira.user.provision", std::make_shared<NullExecutor>()).ok());
  ASSERT_TRUE(registry.Register("secret.rotate", std::make_shared<NullExecutor>()).ok());
  JobClaims c;
  c.connection = "jira-prod";
  c.type = "jira.user.provision";
  EXPECT_TRUE(CheckLocalPolicy(c, config, registry).ok());

  c.connection = "jira-elsewhere";
  EXPECT_EQ(CheckLocalPolicy(c, config, registry).reason(), jws_reason::kConnectionNotConfigured);
  c.connection = "jira-prod";
  c.type = "jira.user.teleport";
  EXPECT_EQ(CheckLocalPolicy(c, config, registry).reason(), jws_reason::kUnknownType);
  c.type = "jira.group.add_member";  // a protocol type without an executor in this build
  EXPECT_EQ(CheckLocalPolicy(c, config, registry).reason(), jws_reason::kUnknownType);

  c.type = "jira.user.provision";
  config.jobs.allowed_types = {"jira.access_sync"};
  EXPECT_EQ(CheckLocalPolicy(c, config, registry).reason(), jws_reason::kPolicyDenied);

  c.type = "secret.rotate";
  config.jobs.allowed_types = {"jira.*", "secret.rotate"};
  config.jobs.allow_remote_secret_rotation = false;
  EXPECT_EQ(CheckLocalPolicy(c, config, registry).reason(), jws_reason::kPolicyDenied);
  config.jobs.allow_remote_secret_rotation = true;
  EXPECT_TRUE(CheckLocalPolicy(c, config, registry).ok());
  config.jobs.allowed_types = {"jira.*"};  // the flag alone is not enough
  EXPECT_EQ(CheckLocalPolicy(c, config, registry).reason(), jws_reason::kPolicyDenied);
}

}  // namespace
}  // namespace cakewalk::agent
