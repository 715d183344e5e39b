#include "base/time.h"

#include <gtest/gtest.h>

namespace cakewalk {
namespace {

long long Unix(SysTime t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

TEST(TimeTest, Rfc3339RoundTripAndOffsets) {
  auto t = ParseRfc3339("2026-12-04T17:29:08Z");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(Unix(*t), 1796405348);
  EXPECT_EQ(FormatRfc3339(*t), "2026-12-04T17:29:08Z");
  EXPECT_EQ(Unix(*ParseRfc3339("2026-12-04T18:29:08.123+01:00")), 1796405348);
  EXPECT_EQ(Unix(*ParseRfc3339("2026-12-04T18:29:08.123+0100")), 1796405348);
  EXPECT_FALSE(ParseRfc3339("2026-12-04 nope").ok());
  EXPECT_FALSE(ParseRfc3339("2026-13-04T17:29:08Z").ok());
  EXPECT_FALSE(ParseRfc3339("2026-12-04T17:29:08").ok());  // no zone
}

TEST(TimeTest, HttpDateAndRetryAfter) {
  auto t = ParseHttpDate("Fri, 04 Dec 2026 17:29:08 GMT");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(Unix(*t), 1796405348);
  EXPECT_EQ(FormatHttpDate(*t), "Fri, 04 Dec 2026 17:29:08 GMT");
  const SysTime now = *t;
  const auto cap = std::chrono::seconds(300);
  EXPECT_EQ(ParseRetryAfter("7", now, cap), std::chrono::seconds(7));
  EXPECT_EQ(ParseRetryAfter("99999", now, cap), cap);
  EXPECT_EQ(ParseRetryAfter("Fri, 04 Dec 2026 17:29:38 GMT", now, cap), std::chrono::seconds(30));
  EXPECT_EQ(ParseRetryAfter("Fri, 04 Dec 2026 17:00:00 GMT", now, cap), std::chrono::seconds(0));
  // Far in the past: its distance to now does not fit in nanoseconds (found by fuzzing; it
  // overflowed and came out as the cap).
  EXPECT_EQ(ParseRetryAfter("Fri, 04 Feb 1720 17:29:08 GMT", now, cap), std::chrono::seconds(0));
  EXPECT_EQ(ParseRetryAfter("soon", now, cap), std::nullopt);
  EXPECT_EQ(ParseRetryAfter("-5", now, cap), std::nullopt);
}

// Found by fuzzing (tests/fuzz/time_fuzz.cc): years SysTime cannot hold overflowed inside
// from_time_t (undefined behaviour) instead of being refused.
TEST(TimeTest, YearsOutsideSysTimeAreRefused) {
  EXPECT_FALSE(ParseHttpDate("Thu, 04 Dec 0226 12:26:50 GMT").ok());
  EXPECT_FALSE(ParseRfc3339("9999-12-31T23:59:59Z").ok());
  EXPECT_FALSE(ParseRfc3339("0001-01-01T00:00:00Z").ok());
  EXPECT_EQ(ParseRetryAfter("Fri, 31 Dec 9999 23:59:59 GMT", SysTime{}, std::chrono::seconds(9)),
            std::nullopt);
  EXPECT_TRUE(ParseRfc3339("2261-12-31T23:59:59+01:00").ok());
  EXPECT_TRUE(ParseRfc3339("1970-01-01T00:00:00Z").ok());
}

// X.509 allows notAfter 9999-12-31 (RFC 5280's "no well-defined expiration") and dates before 1678;
// hsm/x509.cc clamps them to SysTime::max()/min(), whose distance does not fit in nanoseconds.
TEST(TimeTest, SecondsBetweenAnyTwoTimes) {
  const SysTime now(std::chrono::seconds(1796405348));
  EXPECT_EQ(SecondsBetween(now, now + std::chrono::minutes(2)), std::chrono::seconds(120));
  EXPECT_EQ(SecondsBetween(now + std::chrono::minutes(2), now), std::chrono::seconds(-120));
  EXPECT_EQ(SecondsBetween(now, now + std::chrono::milliseconds(1999)), std::chrono::seconds(1));
  EXPECT_EQ(SecondsBetween(now + std::chrono::milliseconds(1999), now), std::chrono::seconds(-1));
  const SysTime late = now + std::chrono::milliseconds(700);  // truncated towards zero, not floored
  EXPECT_EQ(SecondsBetween(late, now + std::chrono::seconds(3)), std::chrono::seconds(2));
  EXPECT_EQ(SecondsBetween(now + std::chrono::seconds(3), late), std::chrono::seconds(-2));
  EXPECT_EQ(SecondsBetween(late, now + std::chrono::milliseconds(900)), std::chrono::seconds(0));
  const SysTime before_1970 = SysTime(std::chrono::seconds(-5)) + std::chrono::milliseconds(300);
  EXPECT_EQ(SecondsBetween(before_1970, SysTime(std::chrono::seconds(2))), std::chrono::seconds(6));
  const auto span = SecondsBetween(SysTime::min(), SysTime::max());
  EXPECT_GT(span, std::chrono::hours(24 * 365 * 584));
  EXPECT_EQ(SecondsBetween(SysTime::max(), SysTime::min()), -span);
  EXPECT_GT(SecondsBetween(now, SysTime::max()), std::chrono::hours(24 * 365 * 235));
}

}  // namespace
}  // namespace cakewalk
