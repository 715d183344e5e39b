// Certificate utilities: strict PEM chains, validity dates, key checks.
#include "hsm/x509.h"

#include <gtest/gtest.h>
#include <openssl/err.h>

#include "tests/provider/soft_token_key.h"
#include "tests/support/pki.h"

namespace cakewalk::hsm {
namespace {

using std::chrono::hours;
using testing::TestCa;

class X509Test : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_ = TestCa::Create("X509 Test CA");
    TestCa::LeafOptions options;
    options.common_name = "agt_42";
    options.server = false;
    options.not_before_offset = hours(-2);
    options.not_after_offset = hours(48);
    auto leaf = ca_->Issue(options);
    ASSERT_TRUE(leaf.ok()) << leaf.status().ToString();
    leaf_ = *leaf;
    issued_at_ = std::chrono::system_clock::now();
  }
  void TearDown() override { EXPECT_EQ(ERR_peek_error(), 0u); }

  std::unique_ptr<TestCa> ca_;
  testing::KeyAndCert leaf_;
  SysTime issued_at_;
};

TEST_F(X509Test, ParsesAChainLeafFirst) {
  auto chain = ParsePemChain(leaf_.chain_pem);
  ASSERT_TRUE(chain.ok()) << chain.status().ToString();
  ASSERT_EQ(chain->size(), 2u);
  EXPECT_EQ(CertificateSubject((*chain)[0].get()), "CN=agt_42");
  EXPECT_EQ(CertificateSubject((*chain)[1].get()), "CN=X509 Test CA");
  // CRLF line ends and blank lines between blocks are fine.
  std::string crlf;
  for (char c : leaf_.cert_pem + "\n" + ca_->cert_pem()) {
    if (c == '\n') crlf += '\r';
    crlf += c;
  }
  auto chain2 = ParsePemChain(crlf);
  ASSERT_TRUE(chain2.ok()) << chain2.status().ToString();
  EXPECT_EQ(chain2->size(), 2u);
  // Round trip.
  auto pem = CertificateToPem((*chain)[0].get());
  ASSERT_TRUE(pem.ok());
  EXPECT_EQ(*pem, leaf_.cert_pem);
}

TEST_F(X509Test, RejectsAnythingButCertificates) {
  const std::string cert = leaf_.cert_pem;
  const std::string body = cert.substr(cert.find('\n') + 1);
  struct Case {
    std::string name;
    std::string pem;
  };
  const std::vector<Case> cases = {
      {"empty", ""},
      {"blank lines only", "\n\n"},
      {"text before", "hello\n" + cert},
      {"text after", cert + "trailing words\n"},
      {"private key block", leaf_.key_pem},
      {"truncated", cert.substr(0, cert.size() / 2)},
      {"header line", "-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n" + body},
      {"bad base64", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"},
      {"not DER", "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n"},
      {"nested begin", "-----BEGIN CERTIFICATE-----\n" + cert},
  };
  for (const Case& c : cases) {
    auto chain = ParsePemChain(c.pem);
    EXPECT_FALSE(chain.ok()) << c.name;
    if (!chain.ok()) {
      EXPECT_EQ(chain.status().code(), Code::kInvalidArgument) << c.name;
    }
  }
  std::string many;
  for (int i = 0; i < 11; ++i) many += cert;
  EXPECT_FALSE(ParsePemChain(many).ok());
  ERR_clear_error();
}

TEST_F(X509Test, ReadsValidityDates) {
  auto chain = ParsePemChain(leaf_.chain_pem);
  ASSERT_TRUE(chain.ok());
  auto not_before = CertificateNotBefore(chain->front().get());
  auto not_after = CertificateNotAfter(chain->front().get());
  ASSERT_TRUE(not_before.ok() && not_after.ok());
  const auto slack = std::chrono::minutes(5);
  EXPECT_LT(std::chrono::abs(*not_before - (issued_at_ - hours(2))), slack);
  EXPECT_LT(std::chrono::abs(*not_after - (issued_at_ + hours(48))), slack);
  auto from_pem = CertificateNotAfter(std::string_view(leaf_.chain_pem));
  ASSERT_TRUE(from_pem.ok());
  EXPECT_EQ(*from_pem, *not_after);
  EXPECT_FALSE(CertificateNotAfter(std::string_view("garbage")).ok());
}

// Found by fuzzing (tests/fuzz/pem_chain_fuzz.cc): a notAfter past 2262 (certificates may say
// 9999) overflowed in from_time_t. It is clamped: such a certificate stays valid.
TEST_F(X509Test, ValidityBeyondSysTimeIsClamped) {
  TestCa::LeafOptions options;
  options.not_after_offset = hours(24 * 365 * 7900);  // about the year 9926
  auto far = ca_->Issue(options);
  ASSERT_TRUE(far.ok()) << far.status().ToString();
  auto not_after = CertificateNotAfter(std::string_view(far->cert_pem));
  ASSERT_TRUE(not_after.ok()) << not_after.status().ToString();
  EXPECT_EQ(*not_after, SysTime::max());
  EXPECT_GT(*not_after, issued_at_ + hours(24 * 365 * 200));
}

TEST_F(X509Test, ChecksTheCertificateKey) {
  auto chain = ParsePemChain(leaf_.chain_pem);
  ASSERT_TRUE(chain.ok());
  auto spki = CertificateSpkiDer(chain->front().get());
  ASSERT_TRUE(spki.ok());
  EXPECT_TRUE(CheckCertificateKey(chain->front().get(), *spki).ok());
  auto other = testing::SoftTokenKey::Generate(KeyType::kEcP256, "other");
  Status mismatch = CheckCertificateKey(chain->front().get(), other->public_key_der());
  EXPECT_EQ(mismatch.code(), Code::kFailedPrecondition);
  EXPECT_NE(mismatch.message().find("CN=agt_42"), std::string::npos) << mismatch.message();
  const std::vector<std::uint8_t> junk = {0x30, 0x03, 0x02, 0x01, 0x01};
  EXPECT_EQ(CheckCertificateKey(chain->front().get(), junk).code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace cakewalk::hsm
