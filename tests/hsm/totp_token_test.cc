// TOTP computed inside SoftHSM: RFC 6238 vectors, agreement with oathtool, and the seed key's
// protection as seen by raw PKCS#11 probes and by OpenSC's pkcs11-tool.
#include <gtest/gtest.h>
#include <openssl/rand.h>

#include "base/encoding.h"
#include "hsm/otpauth.h"
#include "hsm/secret_store.h"
#include "tests/hsm/fixture.h"

namespace cakewalk::testing {
namespace {

using hsm::TotpAlgorithm;

std::string Code(const Result<hsm::TotpCode>& r) {
  if (!r.ok()) return "<error: " + r.status().ToString() + ">";
  return std::string(r->code.Reveal(SecretAccess::Grant()));
}

hsm::TotpSeed Seed(std::string_view key, TotpAlgorithm a, int digits,
                   std::chrono::seconds period = std::chrono::seconds(30)) {
  hsm::TotpSeed s;
  s.key = SecretBytes::CopyOf(key);
  s.params = {a, digits, period};
  return s;
}

class TotpTokenTest : public TokenFixture {};

TEST_F(TotpTokenTest, Rfc6238AppendixBVectorsInTheToken) {
  // RFC 6238 Appendix B: the seeds are ASCII "1234567890" repeated to 20, 32 and 64 bytes.
  const std::string base = "1234567890123456789012345678901234567890123456789012345678901234";
  struct Algo {
    TotpAlgorithm algorithm;
    std::size_t seed_bytes;
    std::string connection;
  };
  const Algo algos[] = {{TotpAlgorithm::kSha1, 20, "rfc-sha1"},
                        {TotpAlgorithm::kSha256, 32, "rfc-sha256"},
                        {TotpAlgorithm::kSha512, 64, "rfc-sha512"}};
  struct Vector {
    long long time;
    const char* codes[3];
  };
  const Vector vectors[] = {
      {59, {"94287082", "46119246", "90693936"}},
      {1111111109, {"07081804", "68084774", "25091201"}},
      {1111111111, {"14050471", "67062674", "99943326"}},
      {1234567890, {"89005924", "91819424", "93441116"}},
      {2000000000, {"69279037", "90698825", "38618901"}},
      {20000000000, {"65353130", "77737706", "47863826"}},
  };
  for (const Algo& a : algos) {
    auto enrolled =
        store_->EnrollTotp(a.connection, Seed(base.substr(0, a.seed_bytes), a.algorithm, 8),
                           hsm::Activation::kCurrent);
    ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
  }
  int checked = 0;
  for (const Vector& v : vectors) {
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(Code(store_->Totp(algos[i].connection, UnixSeconds(v.time), "rfc vector")),
                v.codes[i])
          << algos[i].connection << " at " << v.time;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 18);
}

// oathtool reads the hex key from standard input ("-"), so even these throw-away seeds never
// appear on a command line.
std::string Oathtool(const std::string& hex_key, TotpAlgorithm a, int digits, int period,
                     long long time) {
  const char* mode = a == TotpAlgorithm::kSha1     ? "--totp=SHA1"
                     : a == TotpAlgorithm::kSha256 ? "--totp=SHA256"
                                                   : "--totp=SHA512";
  ProgramResult r =
      RunProgram({"oathtool", mode, "-d", std::to_string(digits), "-s",
                  std::to_string(period) + "s", "-N", "@" + std::to_string(time), "-"},
                 hex_key + "\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  while (!r.out.empty() && (r.out.back() == '\n' || r.out.back() == '\r')) r.out.pop_back();
  return r.out;
}

TEST_F(TotpTokenTest, RandomSeedsAndTimesAgreeWithOathtool) {
  // Short seeds exercise the zero-padding rule (10 < 20/32/64 bytes); 64+ byte seeds exercise
  // keys at and beyond the hash block (64 bytes for SHA-1/SHA-256, 128 for SHA-512), which must
  // be stored unpadded.
  const std::size_t lengths[] = {10, 16, 20, 31, 32, 63, 64, 65, 100, 128, 129, 200};
  const TotpAlgorithm algorithms[] = {TotpAlgorithm::kSha1, TotpAlgorithm::kSha256,
                                      TotpAlgorithm::kSha512};
  int n = 0;
  for (std::size_t len : lengths) {
    for (TotpAlgorithm a : algorithms) {
      std::string key(len, '\0');
      ASSERT_EQ(RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), static_cast<int>(len)), 1);
      const int digits = (n % 2 == 0) ? 6 : 8;
      const int period = (n % 3 == 0) ? 60 : 30;
      const std::string connection = "oath-" + std::to_string(n++);
      auto enrolled =
          store_->EnrollTotp(connection, Seed(key, a, digits, std::chrono::seconds(period)),
                             hsm::Activation::kCurrent);
      ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
      std::uint32_t r = 0;
      ASSERT_EQ(RAND_bytes(reinterpret_cast<unsigned char*>(&r), sizeof r), 1);
      for (long long t : {1700000000LL, 1796398080LL, 4102444800LL,
                          static_cast<long long>(1000000000u + r % 3000000000u)}) {
        EXPECT_EQ(Code(store_->Totp(connection, UnixTime(t), "oathtool comparison")),
                  Oathtool(HexEncode(AsBytes(key)), a, digits, period, t))
            << "seed " << len << " bytes, " << hsm::TotpAlgorithmName(a) << ", " << digits
            << " digits, period " << period << ", t=" << t;
      }
    }
  }
}

TEST_F(TotpTokenTest, ReportsItsWindowAndRemainingSeconds) {
  ASSERT_TRUE(store_
                  ->EnrollTotp("c", Seed("12345678901234567890", TotpAlgorithm::kSha1, 6),
                               hsm::Activation::kCurrent)
                  .ok());
  auto r = store_->Totp("c", UnixTime(1700000005), "window");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->window.counter, 1700000005u / 30);
  EXPECT_EQ(r->window.valid_from, UnixSeconds(1699999980));
  EXPECT_EQ(r->window.valid_until, UnixSeconds(1700000010));
  EXPECT_EQ(r->remaining, std::chrono::seconds(5));
  EXPECT_EQ(r->version, 1u);
  EXPECT_EQ(r->code.size(), 6u);
  auto late = store_->Totp("c", UnixTime(1700000009) + std::chrono::milliseconds(500), "window");
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(late->remaining, std::chrono::seconds(1));
  // Same window, same code; the next window differs.
  EXPECT_EQ(Code(store_->Totp("c", UnixTime(1699999980), "w")), Code(r));
  EXPECT_NE(Code(store_->Totp("c", UnixTime(1700000010), "w")), Code(r));
}

TEST_F(TotpTokenTest, PendingSeedIsUsedOnlyAfterPromotion) {
  auto v1 = store_->EnrollTotp("jira", Seed("12345678901234567890", TotpAlgorithm::kSha1, 8),
                               hsm::Activation::kCurrent);
  ASSERT_TRUE(v1.ok());
  auto v2 = store_->EnrollTotp("jira",
                               Seed("12345678901234567890123456789012", TotpAlgorithm::kSha256, 8),
                               hsm::Activation::kPending);
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(v2->version, 2u);
  EXPECT_EQ(v2->scheme, "SHA256/8/30s");
  EXPECT_EQ(Code(store_->Totp("jira", UnixTime(59), "t")), "94287082");
  EXPECT_EQ(Code(store_->TotpVersion("jira", 2, UnixTime(59), "verify")), "46119246");
  ASSERT_TRUE(store_->Promote("jira", "totp", 2).ok());
  EXPECT_EQ(Code(store_->Totp("jira", UnixTime(59), "t")), "46119246");
  ASSERT_TRUE(store_->Destroy("jira", "totp", 1).ok());
  EXPECT_EQ(Code(store_->Totp("jira", UnixTime(59), "t")), "46119246");
  auto none = store_->Totp("other", UnixTime(59), "t");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Code::kNotFound);
  EXPECT_NE(none.status().message().find("mfa enroll other"), std::string::npos);
  // A TOTP seed is not a sealed value.
  EXPECT_EQ(store_->Unseal("jira", "totp", "t").status().code(), Code::kFailedPrecondition);
}

TEST_F(TotpTokenTest, EveryCodeIsAuditedWithItsPurpose) {
  ASSERT_TRUE(store_
                  ->EnrollTotp("jira-prod", Seed("12345678901234567890", TotpAlgorithm::kSha1, 6),
                               hsm::Activation::kCurrent)
                  .ok());
  ASSERT_TRUE(store_->Totp("jira-prod", UnixTime(59), "jira login step 2").ok());
  auto used = audit_.WithId(event::kSecretUsed);
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].Field("CONNECTION"), "jira-prod");
  EXPECT_EQ(used[0].Field("SECRET_NAME"), "totp");
  EXPECT_EQ(used[0].Field("SECRET_VERSION"), "1");
  EXPECT_EQ(used[0].Field("PURPOSE"), "jira login step 2");
  EXPECT_EQ(audit_.Text().find("287082"), std::string::npos);  // never the code
  auto stored = audit_.WithId(event::kSecretStored);
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].Field("SECRET_NAME"), "totp");
}

TEST_F(TotpTokenTest, SeedKeyIsSensitiveAndBoundToItsHash) {
  OpenRaw();
  ASSERT_TRUE(store_
                  ->EnrollTotp("c", Seed("0123456789", TotpAlgorithm::kSha256, 6),
                               hsm::Activation::kCurrent)
                  .ok());
  auto keys = raw_->FindByLabel(raw_session_, "cakewalk:seed:c:totp:v1", CKO_SECRET_KEY);
  ASSERT_TRUE(keys.ok());
  ASSERT_EQ(keys->size(), 1u);
  const CK_OBJECT_HANDLE key = (*keys)[0];
  CK_FUNCTION_LIST* f = raw_->f();

  CK_ATTRIBUTE value{CKA_VALUE, nullptr, 0};
  EXPECT_EQ(f->C_GetAttributeValue(raw_session_, key, &value, 1), CKR_ATTRIBUTE_SENSITIVE);
  EXPECT_EQ(value.ulValueLen, CK_UNAVAILABLE_INFORMATION);
  std::uint8_t buffer[256];
  CK_ATTRIBUTE value2{CKA_VALUE, buffer, sizeof buffer};
  EXPECT_EQ(f->C_GetAttributeValue(raw_session_, key, &value2, 1), CKR_ATTRIBUTE_SENSITIVE);

  CK_BBOOL b[11] = {};
  CK_ULONG value_len = 0;
  CK_KEY_TYPE key_type = 0;
  CK_ATTRIBUTE attrs[] = {{CKA_TOKEN, &b[0], 1},
                          {CKA_PRIVATE, &b[1], 1},
                          {CKA_SENSITIVE, &b[2], 1},
                          {CKA_EXTRACTABLE, &b[3], 1},
                          {CKA_SIGN, &b[4], 1},
                          {CKA_VERIFY, &b[5], 1},
                          {CKA_ENCRYPT, &b[6], 1},
                          {CKA_DECRYPT, &b[7], 1},
                          {CKA_WRAP, &b[8], 1},
                          {CKA_UNWRAP, &b[9], 1},
                          {CKA_DERIVE, &b[10], 1},
                          {CKA_VALUE_LEN, &value_len, sizeof value_len},
                          {CKA_KEY_TYPE, &key_type, sizeof key_type}};
  ASSERT_EQ(f->C_GetAttributeValue(raw_session_, key, attrs, 13), CKR_OK);
  EXPECT_TRUE(b[0] && b[1] && b[2] && b[4]);
  EXPECT_FALSE(b[3] || b[5] || b[6] || b[7] || b[8] || b[9] || b[10]);
  EXPECT_EQ(key_type, CKK_GENERIC_SECRET);
  EXPECT_EQ(value_len, 32u);  // the 10-byte seed, zero-padded to the SHA-256 digest length

  CK_BBOOL modifiable = 1;
  CK_ATTRIBUTE mod{CKA_MODIFIABLE, &modifiable, 1};
  ASSERT_EQ(f->C_GetAttributeValue(raw_session_, key, &mod, 1), CKR_OK);
  EXPECT_FALSE(modifiable);
  CK_BBOOL yes = CK_TRUE;
  CK_ATTRIBUTE make_extractable{CKA_EXTRACTABLE, &yes, 1};
  EXPECT_NE(f->C_SetAttributeValue(raw_session_, key, &make_extractable, 1), CKR_OK);

  CK_MECHANISM_TYPE allowed[4] = {};
  CK_ATTRIBUTE mechs{CKA_ALLOWED_MECHANISMS, allowed, sizeof allowed};
  ASSERT_EQ(f->C_GetAttributeValue(raw_session_, key, &mechs, 1), CKR_OK);
  ASSERT_EQ(mechs.ulValueLen, sizeof(CK_MECHANISM_TYPE));
  EXPECT_EQ(allowed[0], CKM_SHA256_HMAC);
  CK_MECHANISM sha1{CKM_SHA_1_HMAC, nullptr, 0};
  EXPECT_EQ(f->C_SignInit(raw_session_, &sha1, key), CKR_MECHANISM_INVALID);
}

TEST_F(TotpTokenTest, Pkcs11ToolListsTheSeedAsSensitive) {
  ASSERT_TRUE(store_
                  ->EnrollTotp("jira-prod", Seed("12345678901234567890", TotpAlgorithm::kSha1, 6),
                               hsm::Activation::kCurrent)
                  .ok());
  // The test token's throw-away PIN goes on pkcs11-tool's command line: it has no other way.
  const SoftHsm::TokenSpec& t = softhsm_->token();
  ProgramResult r =
      RunProgram({"pkcs11-tool", "--module", SoftHsm::kModulePath, "--token-label", t.label,
                  "--login", "--pin", t.user_pin, "--list-objects", "--type", "secrkey"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::size_t at = r.out.find("cakewalk:seed:jira-prod:totp:v1");
  ASSERT_NE(at, std::string::npos) << r.out;
  const std::size_t start = r.out.rfind("Secret Key Object", at);
  ASSERT_NE(start, std::string::npos) << r.out;
  const std::string object = r.out.substr(start, r.out.find("Object", at) - start);
  EXPECT_NE(object.find("Access:"), std::string::npos) << object;
  EXPECT_NE(object.find("sensitive"), std::string::npos) << object;
  // pkcs11-tool 0.23 prints only encrypt/decrypt/wrap/unwrap/verify usages for secret keys;
  // none of them may be on.
  EXPECT_NE(object.find("Usage:"), std::string::npos) << object;
  EXPECT_EQ(object.find("encrypt"), std::string::npos) << object;
  EXPECT_EQ(object.find("decrypt"), std::string::npos) << object;
  EXPECT_EQ(object.find("wrap"), std::string::npos) << object;
  // Reading the value back is refused.
  ProgramResult read =
      RunProgram({"pkcs11-tool", "--module", SoftHsm::kModulePath, "--token-label", t.label,
                  "--login", "--pin", t.user_pin, "--read-object", "--type", "secrkey", "--label",
                  "cakewalk:seed:jira-prod:totp:v1"});
  EXPECT_NE(read.exit_code, 0) << read.out;
}

TEST_F(TotpTokenTest, RejectedInputChangesNothingInTheToken) {
  OpenRaw();
  ASSERT_TRUE(store_
                  ->EnrollTotp("c", Seed("12345678901234567890", TotpAlgorithm::kSha1, 6),
                               hsm::Activation::kCurrent)
                  .ok());
  auto before = raw_->CountObjects(raw_session_);
  ASSERT_TRUE(before.ok());
  // What `mfa enroll` does: parse, then enroll only what parsed.
  for (std::string_view input :
       {"JBSW1Y3DPEHPK3PXP", "otpauth://hotp/x?secret=JBSWY3DPEHPK3PXP",
        "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&digits=7", "JBSWY3DP",
        "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&secret=JBSWY3DPEHPK3PXP"}) {
    auto parsed = hsm::ParseTotpSeedInput(input);
    ASSERT_FALSE(parsed.ok()) << input;
  }
  // And what the store itself refuses.
  hsm::TotpSeed bad_digits = Seed("12345678901234567890", TotpAlgorithm::kSha1, 7);
  EXPECT_EQ(store_->EnrollTotp("c", bad_digits, hsm::Activation::kCurrent).status().code(),
            Code::kInvalidArgument);
  hsm::TotpSeed short_seed = Seed("123456789", TotpAlgorithm::kSha1, 6);
  EXPECT_EQ(store_->EnrollTotp("c", short_seed, hsm::Activation::kCurrent).status().code(),
            Code::kInvalidArgument);
  hsm::TotpSeed ok_seed = Seed("12345678901234567890", TotpAlgorithm::kSha1, 6);
  EXPECT_EQ(store_->EnrollTotp("bad:name", ok_seed, hsm::Activation::kCurrent).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(store_->Totp("c", UnixTime(59), "").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(*raw_->CountObjects(raw_session_), *before);
}

}  // namespace
}  // namespace cakewalk::testing
