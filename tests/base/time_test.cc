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
  EXPECT_EQ(ParseRetryAfter("soon", now, cap), std::nullopt);
  EXPECT_EQ(ParseRetryAfter("-5", now, cap), std::nullopt);
}

}  // namespace
}  // namespace cakewalk
