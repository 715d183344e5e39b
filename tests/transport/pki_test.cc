// The test PKI itself: certificates carry what the TLS tests rely on, checked with OpenSSL's own
// verifier.
#include "tests/support/pki.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ctime>

#include "base/c_free.h"
#include "base/encoding.h"

namespace cakewalk::testing {
namespace {

using X509Ptr = CPtr<X509, X509_free>;

X509Ptr Parse(const std::string& pem) {
  CPtr<BIO, BIO_free_all> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

// OpenSSL's verdict on `leaf` against `ca` for `purpose` (X509_PURPOSE_SSL_SERVER/CLIENT).
int Verify(const std::string& ca_pem, const std::string& leaf_pem, int purpose) {
  auto ca = Parse(ca_pem);
  auto leaf = Parse(leaf_pem);
  if (!ca || !leaf) return -1;
  CPtr<X509_STORE, X509_STORE_free> store(X509_STORE_new());
  X509_STORE_add_cert(store.get(), ca.get());
  CPtr<X509_STORE_CTX, X509_STORE_CTX_free> ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), nullptr);
  X509_STORE_CTX_set_purpose(ctx.get(), purpose);
  X509_verify_cert(ctx.get());
  ERR_clear_error();
  return X509_STORE_CTX_get_error(ctx.get());
}

// A CSR carrying `key`, signed by `signer` (the same key for an honest CSR).
std::string MakeCsr(EVP_PKEY* key, EVP_PKEY* signer = nullptr) {
  CPtr<X509_REQ, X509_REQ_free> req(X509_REQ_new());
  X509_REQ_set_version(req.get(), 0);
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("requested-name"), -1, -1, 0);
  X509_REQ_set_pubkey(req.get(), key);
  X509_REQ_sign(req.get(), signer != nullptr ? signer : key, EVP_sha256());
  CPtr<BIO, BIO_free_all> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(bio.get(), req.get());
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

TEST(TestPkiTest, CaIsACaAndLeavesVerifyForTheirPurpose) {
  auto ca = TestCa::Create("Test CA");
  auto ca_cert = Parse(ca->cert_pem());
  ASSERT_TRUE(ca_cert);
  EXPECT_EQ(X509_check_ca(ca_cert.get()), 1);
  EXPECT_TRUE(X509_get_key_usage(ca_cert.get()) & KU_KEY_CERT_SIGN);

  auto server = ca->Issue({});
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  EXPECT_EQ(Verify(ca->cert_pem(), server->cert_pem, X509_PURPOSE_SSL_SERVER), X509_V_OK);
  // serverAuth only: not usable as a client certificate.
  EXPECT_EQ(Verify(ca->cert_pem(), server->cert_pem, X509_PURPOSE_SSL_CLIENT),
            X509_V_ERR_INVALID_PURPOSE);
  auto leaf = Parse(server->cert_pem);
  EXPECT_EQ(X509_check_host(leaf.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(leaf.get(), "127.0.0.1", 0), 1);
  EXPECT_EQ(X509_check_host(leaf.get(), "other.example", 0, 0, nullptr), 0);
  EXPECT_EQ(X509_check_ca(leaf.get()), 0);
  EXPECT_EQ(server->chain_pem, server->cert_pem + ca->cert_pem());
  EXPECT_NE(server->key_pem.find("BEGIN PRIVATE KEY"), std::string::npos);  // PKCS#8

  TestCa::LeafOptions client;
  client.server = false;
  client.common_name = "agt_1";
  client.key_type = TestKeyType::kRsa2048;
  auto c = ca->Issue(client);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(Verify(ca->cert_pem(), c->cert_pem, X509_PURPOSE_SSL_CLIENT), X509_V_OK);
  EXPECT_EQ(Verify(ca->cert_pem(), c->cert_pem, X509_PURPOSE_SSL_SERVER),
            X509_V_ERR_INVALID_PURPOSE);
}

TEST(TestPkiTest, ExpiredAndForeignCertificatesFailVerification) {
  auto ca = TestCa::Create("Test CA");
  auto other = TestCa::Create("Other CA");
  TestCa::LeafOptions expired;
  expired.not_before_offset = -std::chrono::hours(48);
  expired.not_after_offset = -std::chrono::hours(24);
  auto e = ca->Issue(expired);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(Verify(ca->cert_pem(), e->cert_pem, X509_PURPOSE_SSL_SERVER),
            X509_V_ERR_CERT_HAS_EXPIRED);
  auto foreign = other->Issue({});
  ASSERT_TRUE(foreign.ok());
  EXPECT_EQ(Verify(ca->cert_pem(), foreign->cert_pem, X509_PURPOSE_SSL_SERVER),
            X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
  auto self = MakeSelfSigned("localhost");
  ASSERT_TRUE(self.ok());
  EXPECT_EQ(self->chain_pem, self->cert_pem);
  EXPECT_EQ(Verify(ca->cert_pem(), self->cert_pem, X509_PURPOSE_SSL_SERVER),
            X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT);
}

TEST(TestPkiTest, IssueFromCsrTakesOnlyThePublicKey) {
  auto ca = TestCa::Create("Test CA");
  CPtr<EVP_PKEY, EVP_PKEY_free> key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  ASSERT_TRUE(key);
  const std::string csr = MakeCsr(key.get());
  auto pem = ca->IssueFromCsr(csr, "agt_42", std::chrono::hours(24));
  ASSERT_TRUE(pem.ok()) << pem.status().ToString();
  auto cert = Parse(*pem);
  ASSERT_TRUE(cert);
  EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(cert.get()), key.get()), 1);
  char cn[64] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, cn, sizeof cn);
  EXPECT_STREQ(cn, "agt_42");  // ours, not the CSR's "requested-name"
  EXPECT_EQ(Verify(ca->cert_pem(), *pem, X509_PURPOSE_SSL_CLIENT), X509_V_OK);
  EXPECT_EQ(Verify(ca->cert_pem(), *pem, X509_PURPOSE_SSL_SERVER), X509_V_ERR_INVALID_PURPOSE);
  // Lifetime counts from now; not_before is back-dated by the default 60 s.
  std::time_t soon = std::time(nullptr) + 23 * 3600;
  std::time_t later = std::time(nullptr) + 25 * 3600;
  EXPECT_EQ(X509_cmp_time(X509_get0_notAfter(cert.get()), &soon), 1);
  EXPECT_EQ(X509_cmp_time(X509_get0_notAfter(cert.get()), &later), -1);
  std::time_t now = std::time(nullptr) - 30;
  EXPECT_EQ(X509_cmp_time(X509_get0_notBefore(cert.get()), &now), -1);
}

TEST(TestPkiTest, IssueFromCsrRejectsABadSignatureOrGarbage) {
  auto ca = TestCa::Create("Test CA");
  CPtr<EVP_PKEY, EVP_PKEY_free> key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  CPtr<EVP_PKEY, EVP_PKEY_free> other(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  // Well-formed, but signed by a key other than the one it carries.
  auto forged = ca->IssueFromCsr(MakeCsr(key.get(), other.get()), "agt_1", std::chrono::hours(1));
  ASSERT_FALSE(forged.ok());
  EXPECT_NE(forged.status().message().find("signature"), std::string::npos)
      << forged.status().message();
  EXPECT_FALSE(ca->IssueFromCsr("not a csr", "agt_1", std::chrono::hours(1)).ok());
}

TEST(TestPkiTest, SpkiPinIsBase64OfSha256) {
  auto ca = TestCa::Create("Test CA");
  auto a = ca->Issue({});
  auto b = ca->Issue({});
  auto pin_a = SpkiSha256Base64(a->cert_pem);
  auto pin_b = SpkiSha256Base64(b->cert_pem);
  ASSERT_TRUE(pin_a.ok() && pin_b.ok());
  auto raw = Base64Decode(*pin_a);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->size(), 32u);
  EXPECT_NE(*pin_a, *pin_b);                           // fresh key per leaf
  EXPECT_EQ(*pin_a, *SpkiSha256Base64(a->chain_pem));  // first certificate of a chain
  EXPECT_FALSE(SpkiSha256Base64("garbage").ok());
}

}  // namespace
}  // namespace cakewalk::testing
