// Key pairs generated in the token and used through TokenKey: public key DER, signatures that
// OpenSSL verifies, object attributes, find / relabel / destroy.
#include "hsm/key_pair.h"

#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "base/c_free.h"
#include "tests/hsm/fixture.h"

namespace cakewalk::testing {
namespace {

using hsm::KeyPair;
using hsm::KeyType;
using hsm::SignScheme;
using EvpPkey = CPtr<EVP_PKEY, EVP_PKEY_free>;
using EvpPkeyCtx = CPtr<EVP_PKEY_CTX, EVP_PKEY_CTX_free>;

EvpPkey ParseSpki(const std::vector<std::uint8_t>& der) {
  const unsigned char* p = der.data();
  EvpPkey key(d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size())));
  EXPECT_TRUE(key) << "public_key_der() is not a SubjectPublicKeyInfo";
  EXPECT_EQ(p, der.data() + der.size());
  return key;
}

std::vector<std::uint8_t> Sha256(std::string_view message) {
  std::vector<std::uint8_t> d(32);
  SHA256(reinterpret_cast<const unsigned char*>(message.data()), message.size(), d.data());
  return d;
}

// Raw r||s (64 bytes) -> DER ECDSA-Sig-Value.
std::vector<std::uint8_t> EcdsaDer(const std::vector<std::uint8_t>& raw) {
  ECDSA_SIG* sig = ECDSA_SIG_new();
  ECDSA_SIG_set0(sig, BN_bin2bn(raw.data(), 32, nullptr), BN_bin2bn(raw.data() + 32, 32, nullptr));
  unsigned char* der = nullptr;
  const int n = i2d_ECDSA_SIG(sig, &der);
  std::vector<std::uint8_t> out(der, der + n);
  OPENSSL_free(der);
  ECDSA_SIG_free(sig);
  return out;
}

bool Verify(EVP_PKEY* key, const std::vector<std::uint8_t>& sig,
            const std::vector<std::uint8_t>& digest, int padding = 0, int salt = 0,
            const EVP_MD* md = EVP_sha256()) {
  EvpPkeyCtx ctx(EVP_PKEY_CTX_new(key, nullptr));
  if (!ctx || EVP_PKEY_verify_init(ctx.get()) <= 0) return false;
  if (EVP_PKEY_CTX_set_signature_md(ctx.get(), md) <= 0) return false;
  if (padding != 0) {
    if (EVP_PKEY_CTX_set_rsa_padding(ctx.get(), padding) <= 0) return false;
    if (padding == RSA_PKCS1_PSS_PADDING &&
        (EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx.get(), salt) <= 0 ||
         EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), md) <= 0)) {
      return false;
    }
  }
  return EVP_PKEY_verify(ctx.get(), sig.data(), sig.size(), digest.data(), digest.size()) == 1;
}

class KeyPairTest : public TokenFixture {
 protected:
  CK_OBJECT_HANDLE RawFind(const std::string& label, CK_OBJECT_CLASS cls) {
    auto found = raw_->FindByLabel(raw_session_, label, cls);
    EXPECT_TRUE(found.ok() && found->size() == 1) << label;
    return found.ok() && found->size() == 1 ? (*found)[0] : CK_INVALID_HANDLE;
  }
};

TEST_F(KeyPairTest, EcP256KeySignsInTheTokenAndOpenSslVerifies) {
  auto key = KeyPair::Generate(*token_, KeyType::kEcP256, "cakewalk-tls-1");
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  const hsm::TokenKey& tk = **key;
  EXPECT_EQ(tk.type(), KeyType::kEcP256);
  EXPECT_EQ(tk.label(), "cakewalk-tls-1");
  EvpPkey pub = ParseSpki(tk.public_key_der());
  ASSERT_TRUE(pub);
  EXPECT_EQ(EVP_PKEY_get_base_id(pub.get()), EVP_PKEY_EC);
  char group[64] = {};
  ASSERT_EQ(EVP_PKEY_get_utf8_string_param(pub.get(), "group", group, sizeof group, nullptr), 1);
  EXPECT_STREQ(group, "prime256v1");

  const auto digest = Sha256("a TLS 1.3 CertificateVerify, say");
  auto sig = (*key)->Sign(SignScheme::kEcdsa, digest);
  ASSERT_TRUE(sig.ok()) << sig.status().ToString();
  ASSERT_EQ(sig->size(), 64u);
  EXPECT_TRUE(Verify(pub.get(), EcdsaDer(*sig), digest));
  auto other = Sha256("something else");
  EXPECT_FALSE(Verify(pub.get(), EcdsaDer(*sig), other));

  // Schemes that do not fit the key, and malformed input.
  EXPECT_EQ((*key)->Sign(SignScheme::kRsaPkcs1, digest).status().code(), Code::kInvalidArgument);
  EXPECT_EQ((*key)->Sign(SignScheme::kRsaPssSha256, digest).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ((*key)->Sign(SignScheme::kEcdsa, std::vector<std::uint8_t>(5, 1)).status().code(),
            Code::kInvalidArgument);
}

TEST_F(KeyPairTest, PrivateKeyIsSensitiveAndCanOnlySign) {
  auto key = KeyPair::Generate(*token_, KeyType::kEcP256, "attr-key");
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  OpenRaw();
  CK_FUNCTION_LIST* f = raw_->f();
  const CK_OBJECT_HANDLE priv = RawFind("attr-key", CKO_PRIVATE_KEY);
  const CK_OBJECT_HANDLE pub = RawFind("attr-key", CKO_PUBLIC_KEY);
  CK_ATTRIBUTE value{CKA_VALUE, nullptr, 0};
  EXPECT_EQ(f->C_GetAttributeValue(raw_session_, priv, &value, 1), CKR_ATTRIBUTE_SENSITIVE);

  CK_BBOOL p[11] = {};
  CK_ATTRIBUTE pa[] = {{CKA_TOKEN, &p[0], 1},
                       {CKA_PRIVATE, &p[1], 1},
                       {CKA_SENSITIVE, &p[2], 1},
                       {CKA_ALWAYS_SENSITIVE, &p[3], 1},
                       {CKA_NEVER_EXTRACTABLE, &p[4], 1},
                       {CKA_SIGN, &p[5], 1},
                       {CKA_EXTRACTABLE, &p[6], 1},
                       {CKA_DECRYPT, &p[7], 1},
                       {CKA_UNWRAP, &p[8], 1},
                       {CKA_DERIVE, &p[9], 1},
                       {CKA_SIGN_RECOVER, &p[10], 1}};
  ASSERT_EQ(f->C_GetAttributeValue(raw_session_, priv, pa, 11), CKR_OK);
  for (int i = 0; i <= 5; ++i) EXPECT_TRUE(p[i]) << "private attribute #" << i;
  for (int i = 6; i <= 10; ++i) EXPECT_FALSE(p[i]) << "private attribute #" << i;

  CK_BBOOL q[5] = {};
  CK_ATTRIBUTE qa[] = {{CKA_VERIFY, &q[0], 1},
                       {CKA_ENCRYPT, &q[1], 1},
                       {CKA_WRAP, &q[2], 1},
                       {CKA_DERIVE, &q[3], 1},
                       {CKA_VERIFY_RECOVER, &q[4], 1}};
  ASSERT_EQ(f->C_GetAttributeValue(raw_session_, pub, qa, 5), CKR_OK);
  EXPECT_TRUE(q[0]);
  EXPECT_FALSE(q[1] || q[2] || q[3] || q[4]);

  std::uint8_t id_priv[64], id_pub[64];
  CK_ATTRIBUTE ida{CKA_ID, id_priv, sizeof id_priv};
  CK_ATTRIBUTE idb{CKA_ID, id_pub, sizeof id_pub};
  ASSERT_EQ(f->C_GetAttributeValue(raw_session_, priv, &ida, 1), CKR_OK);
  ASSERT_EQ(f->C_GetAttributeValue(raw_session_, pub, &idb, 1), CKR_OK);
  ASSERT_EQ(ida.ulValueLen, 16u);
  EXPECT_EQ(std::vector<std::uint8_t>(id_priv, id_priv + 16), (*key)->id());
  EXPECT_EQ(std::vector<std::uint8_t>(id_pub, id_pub + 16), (*key)->id());

  // pkcs11-tool shows both halves with label and ID.
  const SoftHsm::TokenSpec& t = softhsm_->token();
  ProgramResult r = RunProgram({"pkcs11-tool", "--module", SoftHsm::kModulePath, "--token-label",
                                t.label, "--login", "--pin", t.user_pin, "--list-objects"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("Private Key Object; EC"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Public Key Object; EC"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("label:      attr-key"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Access:     sensitive, always sensitive, never extractable, local"),
            std::string::npos)
      << r.out;
}

TEST_F(KeyPairTest, FindRelabelDestroy) {
  auto key = KeyPair::Generate(*token_, KeyType::kEcP256, "agent:tls:1");
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  auto dup = KeyPair::Generate(*token_, KeyType::kEcP256, "agent:tls:1");
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().code(), Code::kAlreadyExists);

  auto found = KeyPair::Find(*token_, "agent:tls:1");
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ((*found)->public_key_der(), (*key)->public_key_der());
  EXPECT_EQ((*found)->id(), (*key)->id());

  ASSERT_TRUE(KeyPair::Relabel(*token_, "agent:tls:1", "agent:tls:old").ok());
  EXPECT_EQ(KeyPair::Find(*token_, "agent:tls:1").status().code(), Code::kNotFound);
  auto renamed = KeyPair::Find(*token_, "agent:tls:old");
  ASSERT_TRUE(renamed.ok()) << renamed.status().ToString();
  EXPECT_EQ((*renamed)->public_key_der(), (*key)->public_key_der());
  // The object opened before the rename still signs (it holds the CKA_ID).
  const auto digest = Sha256("after relabel");
  EvpPkey pub = ParseSpki((*key)->public_key_der());
  auto sig = (*key)->Sign(SignScheme::kEcdsa, digest);
  ASSERT_TRUE(sig.ok()) << sig.status().ToString();
  EXPECT_TRUE(Verify(pub.get(), EcdsaDer(*sig), digest));

  ASSERT_TRUE(KeyPair::Destroy(*token_, "agent:tls:old").ok());
  EXPECT_EQ(KeyPair::Find(*token_, "agent:tls:old").status().code(), Code::kNotFound);
  auto gone = (*key)->Sign(SignScheme::kEcdsa, digest);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(KeyPair::Destroy(*token_, "agent:tls:old").code(), Code::kNotFound);
}

TEST_F(KeyPairTest, RefusesBadAndReservedLabels) {
  for (const char* label :
       {"", "has space", "cakewalk:secret:x", "cakewalk:seal-key", "cakewalk:seed:c:totp:v1"}) {
    auto r = KeyPair::Generate(*token_, KeyType::kEcP256, label);
    ASSERT_FALSE(r.ok()) << label;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << label;
  }
  auto missing = KeyPair::Find(*token_, "nothing-here");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_NE(missing.status().message().find("nothing-here"), std::string::npos);
}

TEST_F(KeyPairTest, Rsa3072SignsPkcs1AndPss) {
  auto key = KeyPair::Generate(*token_, KeyType::kRsa3072, "rsa-key");
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  EXPECT_EQ((*key)->type(), KeyType::kRsa3072);
  EvpPkey pub = ParseSpki((*key)->public_key_der());
  ASSERT_TRUE(pub);
  EXPECT_EQ(EVP_PKEY_get_bits(pub.get()), 3072);

  // PKCS#1 v1.5 over a DER DigestInfo (SHA-256 prefix || digest).
  const auto digest = Sha256("signed with RSA");
  static constexpr std::uint8_t kSha256Prefix[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
                                                   0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                                                   0x01, 0x05, 0x00, 0x04, 0x20};
  std::vector<std::uint8_t> info(sizeof kSha256Prefix + digest.size());
  std::copy(std::begin(kSha256Prefix), std::end(kSha256Prefix), info.begin());
  std::copy(digest.begin(), digest.end(), info.begin() + sizeof kSha256Prefix);
  auto pkcs1 = (*key)->Sign(SignScheme::kRsaPkcs1, info);
  ASSERT_TRUE(pkcs1.ok()) << pkcs1.status().ToString();
  EXPECT_EQ(pkcs1->size(), 384u);
  EXPECT_TRUE(Verify(pub.get(), *pkcs1, digest, RSA_PKCS1_PADDING));

  auto pss = (*key)->Sign(SignScheme::kRsaPssSha256, digest);
  ASSERT_TRUE(pss.ok()) << pss.status().ToString();
  EXPECT_TRUE(Verify(pub.get(), *pss, digest, RSA_PKCS1_PSS_PADDING, 32));

  std::vector<std::uint8_t> d512(64, 7);
  auto pss512 = (*key)->Sign(SignScheme::kRsaPssSha512, d512);
  ASSERT_TRUE(pss512.ok()) << pss512.status().ToString();
  EXPECT_TRUE(Verify(pub.get(), *pss512, d512, RSA_PKCS1_PSS_PADDING, 64, EVP_sha512()));

  EXPECT_EQ((*key)->Sign(SignScheme::kEcdsa, digest).status().code(), Code::kInvalidArgument);
  EXPECT_EQ((*key)->Sign(SignScheme::kRsaPssSha384, digest).status().code(),
            Code::kInvalidArgument);

  auto found = KeyPair::Find(*token_, "rsa-key");
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ((*found)->type(), KeyType::kRsa3072);
}

}  // namespace
}  // namespace cakewalk::testing
