#include "hsm/totp.h"

#include <gtest/gtest.h>

#include "base/encoding.h"

namespace cakewalk::hsm {
namespace {

SysTime At(long long unix_seconds) { return SysTime(std::chrono::seconds(unix_seconds)); }

TEST(TotpWindowTest, StepsAndBoundaries) {
  auto w = TotpWindowAt(At(59), std::chrono::seconds(30));
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->counter, 1u);
  EXPECT_EQ(w->valid_from, At(30));
  EXPECT_EQ(w->valid_until, At(60));
  // Whole seconds beyond what SysTime (nanoseconds) can hold: RFC 6238's last vector.
  auto far = TotpWindowAt(std::chrono::sys_seconds(std::chrono::seconds(20000000000LL)),
                          std::chrono::seconds(30));
  ASSERT_TRUE(far.ok());
  EXPECT_EQ(far->counter, 666666666u);
  auto edge = TotpWindowAt(At(60), std::chrono::seconds(30));
  ASSERT_TRUE(edge.ok());
  EXPECT_EQ(edge->counter, 2u);
  auto sub =
      TotpWindowAt(At(1700000005) + std::chrono::milliseconds(999), std::chrono::seconds(60));
  ASSERT_TRUE(sub.ok());
  EXPECT_EQ(sub->counter, 1700000005u / 60);
  EXPECT_FALSE(TotpWindowAt(At(-1), std::chrono::seconds(30)).ok());
  EXPECT_FALSE(TotpWindowAt(At(10), std::chrono::seconds(0)).ok());
}

TEST(TotpTest, CounterIsBigEndian) {
  auto b = TotpCounterBytes(0x0102030405060708ull);
  EXPECT_EQ(HexEncode(b), "0102030405060708");
  EXPECT_EQ(HexEncode(TotpCounterBytes(1)), "0000000000000001");
}

TEST(TotpTest, DynamicTruncationMatchesRfc4226Example) {
  // RFC 4226 §5.4: HMAC-SHA-1 1f8698690e02ca16618550ef7f19da8e945b555a -> 0x50ef7f19.
  const std::uint8_t mac[] = {0x1f, 0x86, 0x98, 0x69, 0x0e, 0x02, 0xca, 0x16, 0x61, 0x85,
                              0x50, 0xef, 0x7f, 0x19, 0xda, 0x8e, 0x94, 0x5b, 0x55, 0x5a};
  EXPECT_EQ(DynamicTruncate(mac, 6), 872921u);
  EXPECT_EQ(DynamicTruncate(mac, 8), 57872921u);
}

TEST(TotpTest, OneTimeCodeKeepsLeadingZerosAndWipesOnMove) {
  OneTimeCode a(123, 6);
  EXPECT_EQ(a.Reveal(SecretAccess::Grant()), "000123");
  OneTimeCode b(42, 8);
  EXPECT_EQ(b.Reveal(SecretAccess::Grant()), "00000042");
  OneTimeCode c = std::move(a);
  EXPECT_EQ(c.Reveal(SecretAccess::Grant()), "000123");
  EXPECT_EQ(a.size(), 0u);  // NOLINT(bugprone-use-after-move): moved-from state is specified
}

TEST(TotpTest, ValidatesParameters) {
  EXPECT_TRUE(ValidateTotpParams({TotpAlgorithm::kSha1, 6, std::chrono::seconds(30)}).ok());
  EXPECT_FALSE(ValidateTotpParams({TotpAlgorithm::kSha1, 7, std::chrono::seconds(30)}).ok());
  EXPECT_FALSE(ValidateTotpParams({TotpAlgorithm::kSha1, 6, std::chrono::seconds(14)}).ok());
  EXPECT_FALSE(ValidateTotpParams({TotpAlgorithm::kSha1, 6, std::chrono::seconds(301)}).ok());
}

}  // namespace
}  // namespace cakewalk::hsm
