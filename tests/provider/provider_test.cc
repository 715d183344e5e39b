// The cakewalk-token provider's keymgmt and signature tables, driven through the public EVP API
// with a software TokenKey (test code) behind them.
#include "hsm/provider.h"

#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>

#include <string>
#include <vector>

#include "base/c_free.h"
#include "tests/provider/soft_token_key.h"

namespace cakewalk::hsm {
namespace {

using testing::SoftTokenKey;
using EvpMdCtx = CPtr<EVP_MD_CTX, EVP_MD_CTX_free>;
using EvpPkeyCtx = CPtr<EVP_PKEY_CTX, EVP_PKEY_CTX_free>;

std::string TakeErrors() {
  std::string out;
  unsigned long e = 0;
  const char* data = nullptr;
  int flags = 0;
  while ((e = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += buf;
    if ((flags & ERR_TXT_STRING) != 0 && data != nullptr) out += std::string(" [") + data + "]";
    out += "\n";
  }
  return out;
}

EvpPkey MustProviderKey(const std::shared_ptr<SoftTokenKey>& key) {
  auto pkey = ProviderKey(key);
  EXPECT_TRUE(pkey.ok()) << pkey.status().ToString();
  return pkey.ok() ? std::move(pkey).value() : nullptr;
}

// EVP_DigestSign in one shot, as libssl does it (size query first).
std::vector<unsigned char> DigestSign(EVP_PKEY* pkey, const char* md, std::string_view data,
                                      bool pss = false) {
  EvpMdCtx ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  if (EVP_DigestSignInit_ex(ctx.get(), &pctx, md, nullptr, nullptr, pkey, nullptr) != 1) {
    ADD_FAILURE() << "EVP_DigestSignInit_ex: " << TakeErrors();
    return {};
  }
  if (pss && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
              EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)) {
    ADD_FAILURE() << "PSS parameters: " << TakeErrors();
    return {};
  }
  std::size_t len = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(data.data());
  if (EVP_DigestSign(ctx.get(), nullptr, &len, in, data.size()) != 1) {
    ADD_FAILURE() << "size query: " << TakeErrors();
    return {};
  }
  std::vector<unsigned char> sig(len);
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, in, data.size()) != 1) {
    ADD_FAILURE() << "EVP_DigestSign: " << TakeErrors();
    return {};
  }
  sig.resize(len);
  return sig;
}

bool DigestVerify(EVP_PKEY* pub, const char* md, std::string_view data,
                  const std::vector<unsigned char>& sig, bool pss = false) {
  EvpMdCtx ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  if (EVP_DigestVerifyInit_ex(ctx.get(), &pctx, md, nullptr, nullptr, pub, nullptr) != 1) {
    return false;
  }
  if (pss && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
              EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)) {
    return false;
  }
  const int rc = EVP_DigestVerify(ctx.get(), sig.data(), sig.size(),
                                  reinterpret_cast<const unsigned char*>(data.data()), data.size());
  ERR_clear_error();
  return rc == 1;
}

// A provider-backed public key object (not a legacy one), from the SPKI DER.
EvpPkey DecodeProvidedPublicKey(const std::vector<std::uint8_t>& der, const char* type) {
  EVP_PKEY* raw = nullptr;
  CPtr<OSSL_DECODER_CTX, OSSL_DECODER_CTX_free> dctx(OSSL_DECODER_CTX_new_for_pkey(
      &raw, "DER", "SubjectPublicKeyInfo", type, EVP_PKEY_PUBLIC_KEY, nullptr, "provider=default"));
  const unsigned char* p = der.data();
  std::size_t left = der.size();
  EXPECT_EQ(OSSL_DECODER_from_data(dctx.get(), &p, &left), 1);
  return EvpPkey(raw);
}

class ProviderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(InstallTokenProvider().ok());
    ERR_clear_error();
  }
  void TearDown() override {
    EXPECT_EQ(ERR_peek_error(), 0u) << "error queue not clean: " << TakeErrors();
  }
};

TEST_F(ProviderTest, InstallLoadsDefaultAndTokenProvidersAndIsIdempotent) {
  EXPECT_TRUE(InstallTokenProvider().ok());
  EXPECT_TRUE(InstallTokenProvider().ok());
  EXPECT_EQ(OSSL_PROVIDER_available(nullptr, "default"), 1);
  EXPECT_EQ(OSSL_PROVIDER_available(nullptr, "cakewalk-token"), 1);
}

TEST_F(ProviderTest, UnqualifiedFetchesStayOnTheDefaultProvider) {
  // ECDHE key shares and verification fetch "EC" and "ECDSA" without a property query.
  CPtr<EVP_KEYMGMT, EVP_KEYMGMT_free> km(EVP_KEYMGMT_fetch(nullptr, "EC", nullptr));
  ASSERT_NE(km, nullptr);
  EXPECT_STREQ(OSSL_PROVIDER_get0_name(EVP_KEYMGMT_get0_provider(km.get())), "default");
  CPtr<EVP_SIGNATURE, EVP_SIGNATURE_free> sig(EVP_SIGNATURE_fetch(nullptr, "ECDSA", nullptr));
  ASSERT_NE(sig, nullptr);
  EXPECT_STREQ(OSSL_PROVIDER_get0_name(EVP_SIGNATURE_get0_provider(sig.get())), "default");
  CPtr<EVP_SIGNATURE, EVP_SIGNATURE_free> ours(
      EVP_SIGNATURE_fetch(nullptr, "ECDSA", "provider=cakewalk-token"));
  ASSERT_NE(ours, nullptr);
  EXPECT_STREQ(OSSL_PROVIDER_get0_name(EVP_SIGNATURE_get0_provider(ours.get())), "cakewalk-token");
}

TEST_F(ProviderTest, EcKeyReportsItsFacts) {
  auto soft = SoftTokenKey::Generate(KeyType::kEcP256, "agent-identity-1");
  EvpPkey pkey = MustProviderKey(soft);
  ASSERT_NE(pkey, nullptr);
  EXPECT_STREQ(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(pkey.get())), "cakewalk-token");
  EXPECT_TRUE(EVP_PKEY_is_a(pkey.get(), "EC"));
  EXPECT_EQ(EVP_PKEY_get_bits(pkey.get()), 256);
  EXPECT_EQ(EVP_PKEY_get_security_bits(pkey.get()), 128);
  EXPECT_EQ(EVP_PKEY_get_size(pkey.get()), 72);
  char group[64] = {0};
  std::size_t len = 0;
  ASSERT_EQ(EVP_PKEY_get_group_name(pkey.get(), group, sizeof group, &len), 1);
  EXPECT_STREQ(group, "prime256v1");
  char md[64] = {0};
  ASSERT_GT(EVP_PKEY_get_default_digest_name(pkey.get(), md, sizeof md), 0);
  EXPECT_STREQ(md, "SHA256");
  EXPECT_EQ(ProviderKeyLabel(pkey.get()), "agent-identity-1");
  // The encoded public point is the software key's.
  unsigned char ours[128];
  unsigned char theirs[128];
  std::size_t ours_len = 0;
  std::size_t theirs_len = 0;
  ASSERT_EQ(EVP_PKEY_get_octet_string_param(pkey.get(), OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, ours,
                                            sizeof ours, &ours_len),
            1);
  ASSERT_EQ(EVP_PKEY_get_octet_string_param(soft->pkey(), OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY,
                                            theirs, sizeof theirs, &theirs_len),
            1);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(ours), ours_len),
            std::string(reinterpret_cast<char*>(theirs), theirs_len));
  // Nothing private can be read.
  EXPECT_EQ(EVP_PKEY_get_bn_param(pkey.get(), OSSL_PKEY_PARAM_PRIV_KEY, nullptr), 0);
  ERR_clear_error();
  EXPECT_EQ(soft->sign_calls(), 0);
}

TEST_F(ProviderTest, EcKeyEqualsItsPublicKeyAndNoOther) {
  auto soft = SoftTokenKey::Generate(KeyType::kEcP256, "k");
  auto other = SoftTokenKey::Generate(KeyType::kEcP256, "other");
  EvpPkey pkey = MustProviderKey(soft);
  ASSERT_NE(pkey, nullptr);
  // A legacy public key (as X509_get0_pubkey returns) and a provider-native one, both ways.
  EvpPkey legacy = soft->PublicKey();
  EvpPkey native = DecodeProvidedPublicKey(soft->public_key_der(), "EC");
  EXPECT_EQ(EVP_PKEY_eq(legacy.get(), pkey.get()), 1);
  EXPECT_EQ(EVP_PKEY_eq(pkey.get(), legacy.get()), 1);
  EXPECT_EQ(EVP_PKEY_eq(native.get(), pkey.get()), 1);
  EXPECT_EQ(EVP_PKEY_eq(pkey.get(), native.get()), 1);
  EvpPkey other_pub = other->PublicKey();
  EXPECT_NE(EVP_PKEY_eq(other_pub.get(), pkey.get()), 1);
  EvpPkey other_pkey = MustProviderKey(other);
  EXPECT_NE(EVP_PKEY_eq(other_pkey.get(), pkey.get()), 1);
  ERR_clear_error();
  // Comparing may leave a public-only copy of our key in OpenSSL's export cache; signing must
  // still go to the token.
  auto sig = DigestSign(pkey.get(), "SHA256", "after comparisons");
  EXPECT_TRUE(DigestVerify(legacy.get(), "SHA256", "after comparisons", sig));
  EXPECT_EQ(soft->sign_calls(), 1);
}

TEST_F(ProviderTest, EcDigestSignProducesDerThatVerifies) {
  auto soft = SoftTokenKey::Generate(KeyType::kEcP256, "k");
  EvpPkey pkey = MustProviderKey(soft);
  ASSERT_NE(pkey, nullptr);
  EvpPkey pub = soft->PublicKey();
  int expected_calls = 0;
  for (const char* md : {"SHA2-256", "SHA256", "SHA384", "SHA2-512"}) {
    SCOPED_TRACE(md);
    const std::string data = std::string("to be signed with ") + md;
    auto sig = DigestSign(pkey.get(), md, data);
    ++expected_calls;
    ASSERT_FALSE(sig.empty());
    EXPECT_LE(sig.size(), 72u);
    EXPECT_EQ(sig[0], 0x30) << "not a DER SEQUENCE";
    EXPECT_TRUE(DigestVerify(pub.get(), md, data, sig));
    EXPECT_FALSE(DigestVerify(pub.get(), md, data + "x", sig));
    EXPECT_EQ(soft->sign_calls(), expected_calls) << "the size query must not sign";
  }
  for (auto s : soft->schemes()) EXPECT_EQ(s, SignScheme::kEcdsa);
}

TEST_F(ProviderTest, EcStreamingSignAndPrehashedSignVerify) {
  auto soft = SoftTokenKey::Generate(KeyType::kEcP256, "k");
  EvpPkey pkey = MustProviderKey(soft);
  ASSERT_NE(pkey, nullptr);
  EvpPkey pub = soft->PublicKey();

  // Update/final (EVP_DigestSignFinal duplicates the context before finishing).
  EvpMdCtx ctx(EVP_MD_CTX_new());
  ASSERT_EQ(
      EVP_DigestSignInit_ex(ctx.get(), nullptr, "SHA256", nullptr, nullptr, pkey.get(), nullptr),
      1);
  ASSERT_EQ(EVP_DigestSignUpdate(ctx.get(), "part one, ", 10), 1);
  ASSERT_EQ(EVP_DigestSignUpdate(ctx.get(), "part two", 8), 1);
  std::size_t len = 0;
  ASSERT_EQ(EVP_DigestSignFinal(ctx.get(), nullptr, &len), 1);
  EXPECT_EQ(len, 72u);
  std::vector<unsigned char> sig(len);
  ASSERT_EQ(EVP_DigestSignFinal(ctx.get(), sig.data(), &len), 1) << TakeErrors();
  sig.resize(len);
  EXPECT_TRUE(DigestVerify(pub.get(), "SHA256", "part one, part two", sig));
  EXPECT_EQ(soft->sign_calls(), 1);

  // Prehashed (EVP_PKEY_sign over a digest).
  unsigned char digest[32];
  unsigned int dlen = 0;
  ASSERT_EQ(EVP_Digest("prehashed", 9, digest, &dlen, EVP_sha256(), nullptr), 1);
  EvpPkeyCtx pctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey.get(), nullptr));
  ASSERT_EQ(EVP_PKEY_sign_init(pctx.get()), 1) << TakeErrors();
  std::size_t slen = 0;
  ASSERT_EQ(EVP_PKEY_sign(pctx.get(), nullptr, &slen, digest, dlen), 1);
  std::vector<unsigned char> psig(slen);
  ASSERT_EQ(EVP_PKEY_sign(pctx.get(), psig.data(), &slen, digest, dlen), 1) << TakeErrors();
  psig.resize(slen);
  EvpPkeyCtx vctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pub.get(), nullptr));
  ASSERT_EQ(EVP_PKEY_verify_init(vctx.get()), 1);
  EXPECT_EQ(EVP_PKEY_verify(vctx.get(), psig.data(), psig.size(), digest, dlen), 1);
  EXPECT_EQ(soft->sign_calls(), 2);
}

TEST_F(ProviderTest, ExportRefusesThePrivateKeyAndGivesThePublicKey) {
  auto soft = SoftTokenKey::Generate(KeyType::kEcP256, "k");
  EvpPkey pkey = MustProviderKey(soft);
  ASSERT_NE(pkey, nullptr);
  OSSL_PARAM* params = nullptr;
  EXPECT_NE(EVP_PKEY_todata(pkey.get(), EVP_PKEY_KEYPAIR, &params), 1);
  OSSL_PARAM_free(params);
  params = nullptr;
  ERR_clear_error();

  ASSERT_EQ(EVP_PKEY_todata(pkey.get(), EVP_PKEY_PUBLIC_KEY, &params), 1) << TakeErrors();
  EXPECT_EQ(OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_PRIV_KEY), nullptr);
  const OSSL_PARAM* group = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_GROUP_NAME);
  ASSERT_NE(group, nullptr);
  const char* group_name = nullptr;
  ASSERT_EQ(OSSL_PARAM_get_utf8_string_ptr(group, &group_name), 1);
  EXPECT_STREQ(group_name, "prime256v1");
  ASSERT_NE(OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_PUB_KEY), nullptr);
  // The exported public key rebuilds an equal key on the default provider.
  EvpPkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", "provider=default"));
  EVP_PKEY* rebuilt = nullptr;
  ASSERT_EQ(EVP_PKEY_fromdata_init(ctx.get()), 1);
  ASSERT_EQ(EVP_PKEY_fromdata(ctx.get(), &rebuilt, EVP_PKEY_PUBLIC_KEY, params), 1);
  EvpPkey rebuilt_key(rebuilt);
  OSSL_PARAM_free(params);
  EvpPkey pub = soft->PublicKey();
  EXPECT_EQ(EVP_PKEY_eq(rebuilt_key.get(), pub.get()), 1);
  EXPECT_EQ(soft->sign_calls(), 0);
}

TEST_F(ProviderTest, ImportRefusesSoftwarePrivateKeys) {
  // Someone exporting a software key pair into our keymgmt gets refused, not a silent copy.
  auto soft = SoftTokenKey::Generate(KeyType::kEcP256, "k");
  OSSL_PARAM* params = nullptr;
  ASSERT_EQ(EVP_PKEY_todata(soft->pkey(), EVP_PKEY_KEYPAIR, &params), 1);
  EvpPkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", "provider=cakewalk-token"));
  ASSERT_NE(ctx, nullptr);
  ASSERT_EQ(EVP_PKEY_fromdata_init(ctx.get()), 1);
  EVP_PKEY* raw = nullptr;
  EXPECT_NE(EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_KEYPAIR, params), 1);
  EvpPkey key(raw);
  OSSL_PARAM_free(params);
  const std::string errors = TakeErrors();
  EXPECT_NE(errors.find("never holds private key material"), std::string::npos) << errors;
}

TEST_F(ProviderTest, SigningFailureIsReportedWithTheTokenStatus) {
  auto soft = SoftTokenKey::Generate(KeyType::kEcP256, "failing-key");
  EvpPkey pkey = MustProviderKey(soft);
  ASSERT_NE(pkey, nullptr);
  soft->set_failing(true);
  EvpMdCtx ctx(EVP_MD_CTX_new());
  ASSERT_EQ(
      EVP_DigestSignInit_ex(ctx.get(), nullptr, "SHA256", nullptr, nullptr, pkey.get(), nullptr),
      1);
  unsigned char sig[72];
  std::size_t len = sizeof sig;
  EXPECT_NE(EVP_DigestSign(ctx.get(), sig, &len, reinterpret_cast<const unsigned char*>("x"), 1),
            1);
  EXPECT_EQ(soft->sign_calls(), 1);
  const std::string errors = TakeErrors();
  EXPECT_NE(errors.find("token signing failed"), std::string::npos) << errors;
  EXPECT_NE(errors.find("failing-key"), std::string::npos) << errors;
  EXPECT_NE(errors.find("simulated token failure"), std::string::npos) << errors;
  // Only our error: the module's noise does not reach the caller.
  EXPECT_EQ(errors.find("SoftTokenKey noise"), std::string::npos) << errors;
}

TEST_F(ProviderTest, WeakAndUnknownDigestsAreRefused) {
  auto soft = SoftTokenKey::Generate(KeyType::kEcP256, "k");
  EvpPkey pkey = MustProviderKey(soft);
  ASSERT_NE(pkey, nullptr);
  for (const char* md : {"SHA1", "MD5", "SHA2-224"}) {
    SCOPED_TRACE(md);
    EvpMdCtx ctx(EVP_MD_CTX_new());
    EXPECT_NE(EVP_DigestSignInit_ex(ctx.get(), nullptr, md, nullptr, nullptr, pkey.get(), nullptr),
              1);
    const std::string errors = TakeErrors();
    EXPECT_NE(errors.find("unsupported digest"), std::string::npos) << errors;
  }
  EXPECT_EQ(soft->sign_calls(), 0);
}

TEST_F(ProviderTest, RegistryFollowsKeyObjectsAndReleaseStopsSigning) {
  const int destroyed_before = SoftTokenKey::destroyed();
  auto soft = SoftTokenKey::Generate(KeyType::kEcP256, "released-key");
  EXPECT_EQ(RegisteredProviderKeyCount(), 0u);
  EvpPkey pkey = MustProviderKey(soft);
  ASSERT_NE(pkey, nullptr);
  EXPECT_EQ(RegisteredProviderKeyCount(), 1u);
  {
    EvpPkey dup(EVP_PKEY_dup(pkey.get()));
    ASSERT_NE(dup, nullptr) << TakeErrors();
    EXPECT_EQ(RegisteredProviderKeyCount(), 1u);
    EXPECT_FALSE(DigestSign(dup.get(), "SHA256", "via the duplicate").empty());
  }
  EXPECT_EQ(RegisteredProviderKeyCount(), 1u);
  EvpPkey second = MustProviderKey(soft);
  EXPECT_EQ(RegisteredProviderKeyCount(), 2u);
  second.reset();
  EXPECT_EQ(RegisteredProviderKeyCount(), 1u);

  // The owner releases everything (before finalising the module): the key stops signing, and
  // the provider holds no reference any more.
  EXPECT_EQ(ReleaseProviderKeys(), 1u);
  EXPECT_EQ(RegisteredProviderKeyCount(), 0u);
  EvpMdCtx ctx(EVP_MD_CTX_new());
  ASSERT_EQ(
      EVP_DigestSignInit_ex(ctx.get(), nullptr, "SHA256", nullptr, nullptr, pkey.get(), nullptr),
      1);
  unsigned char sig[72];
  std::size_t len = sizeof sig;
  EXPECT_NE(EVP_DigestSign(ctx.get(), sig, &len, reinterpret_cast<const unsigned char*>("x"), 1),
            1);
  const std::string errors = TakeErrors();
  EXPECT_NE(errors.find("was released"), std::string::npos) << errors;
  EXPECT_EQ(soft->sign_calls(), 1);  // only the duplicate's signature
  soft.reset();
  EXPECT_EQ(SoftTokenKey::destroyed(), destroyed_before + 1)
      << "the provider still holds the TokenKey after ReleaseProviderKeys";
  ctx.reset();
  pkey.reset();  // freeing a key object after release is harmless
  EXPECT_EQ(RegisteredProviderKeyCount(), 0u);
}

TEST_F(ProviderTest, KeyTypeMismatchIsRefused) {
  auto rsa = SoftTokenKey::Generate(KeyType::kRsa3072, "rsa");
  // A TokenKey that claims EC but carries an RSA public key.
  auto liar = SoftTokenKey::FromPrivateKeyPem(KeyType::kEcP256, "liar", [&] {
    CPtr<BIO, BIO_free> bio(BIO_new(BIO_s_mem()));
    PEM_write_bio_PrivateKey(bio.get(), rsa->pkey(), nullptr, nullptr, 0, nullptr, nullptr);
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
  }());
  auto pkey = ProviderKey(liar);
  ASSERT_FALSE(pkey.ok());
  EXPECT_NE(pkey.status().message().find("liar"), std::string::npos) << pkey.status().message();
  EXPECT_NE(pkey.status().message().find("not an EC P-256 key"), std::string::npos)
      << pkey.status().message();
  EXPECT_EQ(RegisteredProviderKeyCount(), 0u);
}

TEST_F(ProviderTest, RsaKeyReportsItsFactsAndSignsPkcs1AndPss) {
  auto soft = SoftTokenKey::Generate(KeyType::kRsa3072, "rsa-identity");
  EvpPkey pkey = MustProviderKey(soft);
  ASSERT_NE(pkey, nullptr);
  EXPECT_TRUE(EVP_PKEY_is_a(pkey.get(), "RSA"));
  EXPECT_EQ(EVP_PKEY_get_bits(pkey.get()), 3072);
  EXPECT_EQ(EVP_PKEY_get_security_bits(pkey.get()), 128);
  EXPECT_EQ(EVP_PKEY_get_size(pkey.get()), 384);
  EXPECT_EQ(ProviderKeyLabel(pkey.get()), "rsa-identity");
  EvpPkey pub = soft->PublicKey();
  EXPECT_EQ(EVP_PKEY_eq(pub.get(), pkey.get()), 1);

  // PKCS#1 v1.5 (the default padding).
  auto sig = DigestSign(pkey.get(), "SHA2-256", "pkcs1 data");
  ASSERT_EQ(sig.size(), 384u);
  EXPECT_TRUE(DigestVerify(pub.get(), "SHA2-256", "pkcs1 data", sig));
  EXPECT_FALSE(DigestVerify(pub.get(), "SHA2-256", "pkcs1 data", sig, /*pss=*/true));
  // PSS, salt length = digest length, as TLS 1.3 asks for it.
  for (const char* md : {"SHA256", "SHA384", "SHA512"}) {
    SCOPED_TRACE(md);
    auto pss = DigestSign(pkey.get(), md, "pss data", /*pss=*/true);
    ASSERT_EQ(pss.size(), 384u);
    EXPECT_TRUE(DigestVerify(pub.get(), md, "pss data", pss, /*pss=*/true));
  }
  const std::vector<SignScheme> expected = {SignScheme::kRsaPkcs1, SignScheme::kRsaPssSha256,
                                            SignScheme::kRsaPssSha384, SignScheme::kRsaPssSha512};
  EXPECT_EQ(soft->schemes(), expected);
}

TEST_F(ProviderTest, RsaPssWithOtherSaltLengthsIsRefused) {
  auto soft = SoftTokenKey::Generate(KeyType::kRsa3072, "rsa");
  EvpPkey pkey = MustProviderKey(soft);
  ASSERT_NE(pkey, nullptr);
  EvpMdCtx ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  ASSERT_EQ(
      EVP_DigestSignInit_ex(ctx.get(), &pctx, "SHA256", nullptr, nullptr, pkey.get(), nullptr), 1);
  ASSERT_EQ(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1) << TakeErrors();
  EXPECT_LE(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_MAX), 0);
  std::string errors = TakeErrors();
  EXPECT_NE(errors.find("salt length"), std::string::npos) << errors;
  // An explicit length other than the digest's is refused when signing.
  ASSERT_EQ(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 20), 1) << TakeErrors();
  unsigned char sig[384];
  std::size_t len = sizeof sig;
  EXPECT_NE(EVP_DigestSign(ctx.get(), sig, &len, reinterpret_cast<const unsigned char*>("x"), 1),
            1);
  errors = TakeErrors();
  EXPECT_NE(errors.find("salt length"), std::string::npos) << errors;
  EXPECT_EQ(soft->sign_calls(), 0);
}

}  // namespace
}  // namespace cakewalk::hsm
