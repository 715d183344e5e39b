// Canary secrets: a planted password and MFA seed go through every store, list, use and TOTP path
// (and some failing ones); afterwards neither may appear in any log text, error message, listing,
// or file under the test's folder — including SoftHSM's own token files, which hold only
// encrypted private objects.
#include <gtest/gtest.h>

#include "base/encoding.h"
#include "hsm/key_pair.h"
#include "hsm/otpauth.h"
#include "tests/hsm/fixture.h"
#include "tests/support/canary.h"

namespace cakewalk::testing {
namespace {

std::string Base32(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  std::string out;
  std::uint32_t buffer = 0;
  int bits = 0;
  for (char ch : bytes) {
    buffer = (buffer << 8) | static_cast<unsigned char>(ch);
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += kAlphabet[(buffer >> bits) & 31u];
    }
  }
  if (bits > 0) out += kAlphabet[(buffer << (5 - bits)) & 31u];
  return out;
}

class CanaryTest : public TokenFixture {};

TEST_F(CanaryTest, PlantedSecretsAppearNowhere) {
  const std::string password = MakeCanary("password");
  const std::string next_password = MakeCanary("next-password");
  const std::string seed = MakeCanary("seed");
  const std::string seed_base32 = Base32(seed);
  std::string seen;  // every message and listing the code produced
  auto note = [&](const Status& s) { seen += s.ToString() + "\n"; };

  // mfa enroll, the way an operator pastes it (lower case, grouped).
  std::string pasted;
  for (std::size_t i = 0; i < seed_base32.size(); ++i) {
    if (i > 0 && i % 4 == 0) pasted += ' ';
    pasted += static_cast<char>(std::tolower(static_cast<unsigned char>(seed_base32[i])));
  }
  auto parsed = hsm::ParseTotpSeedInput(pasted);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  auto enrolled = store_->EnrollTotp("jira-prod", *parsed, hsm::Activation::kCurrent);
  ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
  auto uri = hsm::ParseTotpSeedInput("otpauth://totp/Jira:svc?secret=" + seed_base32 +
                                     "&issuer=Jira&digits=8");
  ASSERT_TRUE(uri.ok()) << uri.status().ToString();
  ASSERT_TRUE(store_->EnrollTotp("jira-prod", *uri, hsm::Activation::kPending).ok());

  // Failing inputs that contain the canary.
  note(hsm::ParseTotpSeedInput(seed_base32 + "1").status());
  note(hsm::ParseTotpSeedInput("otpauth://totp/x?secret=" + seed_base32 + "&digits=9").status());
  note(hsm::ParseTotpSeedInput("otpauth://hotp/x?secret=" + seed_base32).status());
  note(hsm::DecodeBase32Seed(seed_base32.substr(0, seed_base32.size() - 1)).status());

  // secret set / rotate / list / use.
  ASSERT_TRUE(store_->Put("jira-prod", "password", SecretBytes::CopyOf(password)).ok());
  ASSERT_TRUE(store_->PutPending("jira-prod", "password", SecretBytes::CopyOf(next_password)).ok());
  auto used = store_->Unseal("jira-prod", "password", "jira login");
  ASSERT_TRUE(used.ok());
  EXPECT_EQ(used->RevealString(SecretAccess::Grant()), password);
  auto staged = store_->UnsealVersion("jira-prod", "password", 2, "verify rotation");
  ASSERT_TRUE(staged.ok());
  ASSERT_TRUE(store_->Promote("jira-prod", "password", 2).ok());
  ASSERT_TRUE(store_->Destroy("jira-prod", "password", 1).ok());
  for (int i = 0; i < 3; ++i) {
    auto code = store_->Totp("jira-prod", clock_.Now(), "jira login step 2");
    ASSERT_TRUE(code.ok()) << code.status().ToString();
  }
  ASSERT_TRUE(store_->Promote("jira-prod", "totp", 2).ok());
  ASSERT_TRUE(store_->Totp("jira-prod", clock_.Now(), "after promotion").ok());
  note(store_->Put("jira-prod", "bad name", SecretBytes::CopyOf(password)).status());
  note(store_->Unseal("jira-prod", "pat", "missing").status());
  auto list = store_->List();
  ASSERT_TRUE(list.ok());
  for (const hsm::SecretInfo& i : *list) {
    seen += i.connection + " " + i.name + " " + std::to_string(i.version) + " " + i.scheme + "\n";
  }
  auto key = hsm::KeyPair::Generate(*token_, hsm::KeyType::kEcP256, "canary-tls");
  ASSERT_TRUE(key.ok());
  store_.reset();
  token_.reset();
  module_.reset();  // flush everything SoftHSM keeps

  ASSERT_FALSE(audit_.entries().empty());
  const std::string logs = audit_.Text();
  for (const std::string& canary : {password, next_password, seed}) {
    for (const std::string& hit : FindCanaryIn(canary, logs, "audit log")) ADD_FAILURE() << hit;
    for (const std::string& hit : FindCanaryIn(canary, seen, "messages")) ADD_FAILURE() << hit;
    for (const std::string& hit : FindCanaryInTree(canary, softhsm_->dir())) ADD_FAILURE() << hit;
  }
  // The base32 spelling of the seed, too.
  EXPECT_EQ(logs.find(seed_base32.substr(0, 16)), std::string::npos);
  EXPECT_EQ(seen.find(seed_base32.substr(0, 16)), std::string::npos);
  for (const std::string& hit : FindCanaryInTree(seed_base32.substr(0, 16), softhsm_->dir())) {
    ADD_FAILURE() << hit;
  }
  // The scan itself works: the token folder is not empty and a planted file is found.
  ASSERT_FALSE(std::filesystem::is_empty(softhsm_->token_dir()));
  WriteFile(softhsm_->dir() / "probe", "x" + password + "x");
  EXPECT_FALSE(FindCanaryInTree(password, softhsm_->dir()).empty());
}

}  // namespace
}  // namespace cakewalk::testing
