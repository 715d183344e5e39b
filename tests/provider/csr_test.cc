// CSRs signed in the (software stand-in) token through the provider.
#include "hsm/csr.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "base/c_free.h"
#include "hsm/provider.h"
#include "hsm/x509.h"
#include "tests/provider/soft_token_key.h"
#include "tests/support/pki.h"

namespace cakewalk::hsm {
namespace {

using testing::SoftTokenKey;
using X509Req = CPtr<X509_REQ, X509_REQ_free>;

X509Req ParseCsr(const std::string& pem) {
  CPtr<BIO, BIO_free> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return X509Req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
}

std::string CommonName(X509_REQ* req) {
  const X509_NAME* name = X509_REQ_get_subject_name(req);
  EXPECT_EQ(X509_NAME_entry_count(name), 1);
  char cn[128] = {0};
  const int n = X509_NAME_get_text_by_NID(name, NID_commonName, cn, sizeof cn);
  return n < 0 ? "" : std::string(cn, static_cast<std::size_t>(n));
}

class CsrTest : public ::testing::TestWithParam<KeyType> {
 protected:
  void TearDown() override { EXPECT_EQ(ERR_peek_error(), 0u); }
};

TEST_P(CsrTest, CsrIsSignedOnceByTheTokenKeyAndVerifies) {
  auto soft = SoftTokenKey::Generate(GetParam(), "enroll-key");
  auto pem = MakeCsrPem(soft, "agent-host-01.example");
  ASSERT_TRUE(pem.ok()) << pem.status().ToString();
  EXPECT_TRUE(pem->starts_with("-----BEGIN CERTIFICATE REQUEST-----")) << *pem;
  EXPECT_EQ(soft->sign_calls(), 1);

  X509Req req = ParseCsr(*pem);
  ASSERT_NE(req, nullptr);
  EXPECT_EQ(CommonName(req.get()), "agent-host-01.example");
  EvpPkey pub = soft->PublicKey();
  EXPECT_EQ(X509_REQ_verify(req.get(), pub.get()), 1);
  // The request carries the token key's public key...
  EXPECT_EQ(EVP_PKEY_eq(X509_REQ_get0_pubkey(req.get()), pub.get()), 1);
  // ...and does not verify with another key.
  auto other = SoftTokenKey::Generate(GetParam(), "other");
  EvpPkey other_pub = other->PublicKey();
  EXPECT_NE(X509_REQ_verify(req.get(), other_pub.get()), 1);
  ERR_clear_error();
  const int sig_nid = X509_REQ_get_signature_nid(req.get());
  EXPECT_EQ(sig_nid,
            GetParam() == KeyType::kEcP256 ? NID_ecdsa_with_SHA256 : NID_sha256WithRSAEncryption);
  // The key object made for signing is gone again.
  EXPECT_EQ(RegisteredProviderKeyCount(), 0u);
}

TEST_P(CsrTest, TestCaIssuesACertificateForTheTokenKey) {
  auto soft = SoftTokenKey::Generate(GetParam(), "enroll-key");
  auto pem = MakeCsrPem(soft, "agt_123");
  ASSERT_TRUE(pem.ok()) << pem.status().ToString();
  auto ca = testing::TestCa::Create("Cakewalk Test CA");
  auto cert_pem = ca->IssueFromCsr(*pem, "agt_123", std::chrono::hours(24));
  ASSERT_TRUE(cert_pem.ok()) << cert_pem.status().ToString();
  auto chain = ParsePemChain(*cert_pem);
  ASSERT_TRUE(chain.ok()) << chain.status().ToString();
  EXPECT_TRUE(CheckCertificateKey(chain->front().get(), soft->public_key_der()).ok());
  auto pkey = ProviderKey(soft);
  ASSERT_TRUE(pkey.ok());
  EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(chain->front().get()), pkey->get()), 1);
}

std::string KeyTypeName(const ::testing::TestParamInfo<KeyType>& p) {
  return p.param == KeyType::kEcP256 ? "EcP256" : "Rsa3072";
}

INSTANTIATE_TEST_SUITE_P(KeyTypes, CsrTest, ::testing::Values(KeyType::kEcP256, KeyType::kRsa3072),
                         KeyTypeName);

TEST(CsrErrors, BadCommonNamesAreRefusedBeforeSigning) {
  auto soft = SoftTokenKey::Generate(KeyType::kEcP256, "k");
  EXPECT_EQ(MakeCsrPem(soft, "").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(MakeCsrPem(soft, std::string(65, 'a')).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(MakeCsrPem(soft, "line\nbreak").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(MakeCsrPem(soft, "bad\xff utf8").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(MakeCsrPem(nullptr, "x").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(soft->sign_calls(), 0);
  EXPECT_TRUE(MakeCsrPem(soft, std::string(64, 'a')).ok());
  EXPECT_TRUE(MakeCsrPem(soft, "Agent \xc3\xa9t\xc3\xa9").ok());  // UTF-8 is fine
  EXPECT_EQ(soft->sign_calls(), 2);
  EXPECT_EQ(ERR_peek_error(), 0u);
}

TEST(CsrErrors, TokenFailureIsReported) {
  auto soft = SoftTokenKey::Generate(KeyType::kEcP256, "broken-token-key");
  soft->set_failing(true);
  auto pem = MakeCsrPem(soft, "agt_1");
  ASSERT_FALSE(pem.ok());
  EXPECT_NE(pem.status().message().find("broken-token-key"), std::string::npos)
      << pem.status().message();
  EXPECT_NE(pem.status().message().find("simulated token failure"), std::string::npos)
      << pem.status().message();
  EXPECT_EQ(ERR_peek_error(), 0u);
}

}  // namespace
}  // namespace cakewalk::hsm
