#include "hsm/otpauth.h"

#include <gtest/gtest.h>

#include "base/encoding.h"

namespace cakewalk::hsm {
namespace {

std::string Hex(const SecretBytes& s) { return HexEncode(s.Reveal(SecretAccess::Grant())); }

// No error message may contain the key or a recognisable run of it.
void ExpectNoEcho(const Status& s, std::string_view input) {
  for (std::size_t i = 0; i + 6 <= input.size(); ++i) {
    const std::string_view piece = input.substr(i, 6);
    if (piece.find_first_of(" -=") != std::string_view::npos) continue;
    EXPECT_EQ(s.message().find(piece), std::string::npos)
        << "error echoes part of the key: " << s.message();
  }
}

TEST(Base32SeedTest, DecodesJiraStyleInput) {
  for (std::string_view in : {"JBSWY3DPEHPK3PXP", "jbswy3dpehpk3pxp", "JBSW Y3DP EHPK 3PXP",
                              "jbsw-y3dp-ehpk-3pxp", "  JBSWY3DP\tEHPK3PXP\n"}) {
    auto s = DecodeBase32Seed(in);
    ASSERT_TRUE(s.ok()) << in << ": " << s.status().ToString();
    EXPECT_EQ(Hex(*s), "48656c6c6f21deadbeef") << in;
  }
}

TEST(Base32SeedTest, PaddingIsOptionalButMustBeRight) {
  auto padded = DecodeBase32Seed("GEZDGNBVGY3TQOJQGE======");
  ASSERT_TRUE(padded.ok()) << padded.status().ToString();
  EXPECT_EQ(padded->RevealString(SecretAccess::Grant()), "12345678901");
  auto unpadded = DecodeBase32Seed("GEZDGNBVGY3TQOJQGE");
  ASSERT_TRUE(unpadded.ok());
  EXPECT_EQ(unpadded->RevealString(SecretAccess::Grant()), "12345678901");

  auto wrong = DecodeBase32Seed("GEZDGNBVGY3TQOJQGE===");
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("padding"), std::string::npos);
  auto inside = DecodeBase32Seed("GEZDGNBV=GY3TQOJQGE");
  ASSERT_FALSE(inside.ok());
  EXPECT_NE(inside.status().message().find("after '=' padding at position 10"), std::string::npos)
      << inside.status().message();
}

TEST(Base32SeedTest, RejectsCharactersWithTheirPosition) {
  const std::string digit = "JBSW1Y3DPEHPK3PXP";
  auto a = DecodeBase32Seed(digit);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), Code::kInvalidArgument);
  EXPECT_NE(a.status().message().find("position 5"), std::string::npos) << a.status().message();
  EXPECT_NE(a.status().message().find("0, 1, 8 or 9"), std::string::npos);
  ExpectNoEcho(a.status(), digit);

  const std::string other = "JBSWY3DPEHPK3PX!";
  auto b = DecodeBase32Seed(other);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("outside base32"), std::string::npos);
  EXPECT_NE(b.status().message().find("position 16"), std::string::npos);
  ExpectNoEcho(b.status(), other);
}

TEST(Base32SeedTest, RejectsImpossibleLengthsTrailingBitsAndSizes) {
  auto length = DecodeBase32Seed("JBSWY3DPEHPK3PXPA");  // 17 characters: tail of 1
  ASSERT_FALSE(length.ok());
  EXPECT_NE(length.status().message().find("no base32 encoder produces"), std::string::npos);

  auto bits = DecodeBase32Seed("GEZDGNBVGY3TQOJQGF");  // 'F' sets an unused bit
  ASSERT_FALSE(bits.ok());
  EXPECT_NE(bits.status().message().find("bits set beyond the end"), std::string::npos);
  EXPECT_NE(bits.status().message().find("position 18"), std::string::npos);
  ExpectNoEcho(bits.status(), "GEZDGNBVGY3TQOJQGF");

  auto short_key = DecodeBase32Seed("JBSWY3DP");
  ASSERT_FALSE(short_key.ok());
  EXPECT_NE(short_key.status().message().find("too short: 5 bytes"), std::string::npos);

  auto empty = DecodeBase32Seed(" - ");
  ASSERT_FALSE(empty.ok());

  std::string huge(824, 'A');  // 515 bytes
  auto too_long = DecodeBase32Seed(huge);
  ASSERT_FALSE(too_long.ok());
  EXPECT_NE(too_long.status().message().find("too long"), std::string::npos);
}

TEST(OtpauthUriTest, ParsesAllParameters) {
  auto s = ParseOtpauthUri(
      "otpauth://totp/ACME%20Co:john%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=ACME%20Co"
      "&algorithm=SHA256&digits=8&period=60&image=https%3A%2F%2Fx");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(Hex(s->key), "48656c6c6f21deadbeef");
  EXPECT_EQ(s->params.algorithm, TotpAlgorithm::kSha256);
  EXPECT_EQ(s->params.digits, 8);
  EXPECT_EQ(s->params.period, std::chrono::seconds(60));
  EXPECT_EQ(s->issuer, "ACME Co");
  EXPECT_EQ(s->account, "ACME Co:john@example.com");
}

TEST(OtpauthUriTest, DefaultsAndCaseInsensitivity) {
  auto s = ParseOtpauthUri("OTPAUTH://TOTP/x?SECRET=jbsw%20y3dp%20ehpk%203pxp&Algorithm=sha512");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(Hex(s->key), "48656c6c6f21deadbeef");
  EXPECT_EQ(s->params.algorithm, TotpAlgorithm::kSha512);
  EXPECT_EQ(s->params.digits, 6);
  EXPECT_EQ(s->params.period, std::chrono::seconds(30));
}

TEST(OtpauthUriTest, RejectsWithPreciseMessages) {
  struct Case {
    std::string uri;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"otpauth://hotp/x?secret=JBSWY3DPEHPK3PXP&counter=1", "HOTP"},
      {"otpauth://foo/x?secret=JBSWY3DPEHPK3PXP", "type must be totp"},
      {"otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&algorithm=MD5", "unsupported algorithm 'MD5'"},
      {"otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&digits=7", "digits must be 6 or 8, not 7"},
      {"otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&digits=six", "digits must be a number"},
      {"otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&period=5", "period must be between 15 and 300"},
      {"otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&period=86400", "period must be between"},
      {"otpauth://totp/x?issuer=ACME", "secret parameter is missing"},
      {"otpauth://totp/x?secret=", "secret parameter is empty"},
      {"otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&secret=JBSWY3DPEHPK3PXP", "'secret' appears more"},
      {"otpauth://totp/x?secret=JBSWY3DPEHPK3PXP&digits=6&digits=8", "'digits' appears more"},
      {"otpauth://totp/x?secret=JBSWY3DP%ZZEHPK3PXP", "malformed percent-escape"},
      {"otpauth://totp/x?secret=JBSWY3DPEHPK3PX%4", "incomplete percent-escape"},
      {"otpauth://totp/x?secret=JBSWY3D0EHPK3PXP", "secret parameter: the key has a digit"},
      {"otpauth://totp/x", "no parameters"},
      {"otpauth://totp/x?secret=JBSWY3DPEHPK3PXP#frag", "fragment"},
      {"https://example.com/?secret=JBSWY3DPEHPK3PXP", "not an otpauth"},
  };
  for (const Case& c : cases) {
    auto s = ParseOtpauthUri(c.uri);
    ASSERT_FALSE(s.ok()) << c.uri;
    EXPECT_EQ(s.status().code(), Code::kInvalidArgument) << c.uri;
    EXPECT_NE(s.status().message().find(c.expected), std::string::npos)
        << c.uri << " -> " << s.status().message();
    ExpectNoEcho(s.status(), "JBSWY3DPEHPK3PXP");
  }
}

TEST(TotpSeedInputTest, AcceptsBase32OrUri) {
  auto b = ParseTotpSeedInput("\n  jbsw y3dp ehpk 3pxp \n");
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(Hex(b->key), "48656c6c6f21deadbeef");
  EXPECT_EQ(b->params.algorithm, TotpAlgorithm::kSha1);
  EXPECT_EQ(b->params.digits, 6);
  auto u = ParseTotpSeedInput(" otpauth://totp/a?secret=JBSWY3DPEHPK3PXP&digits=8\n");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->params.digits, 8);
  auto none = ParseTotpSeedInput("   \n");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no MFA key"), std::string::npos);
}

}  // namespace
}  // namespace cakewalk::hsm
