#include "base/encoding.h"

#include <gtest/gtest.h>

namespace cakewalk {
namespace {

TEST(EncodingTest, Base64UrlRoundTripsAndIsStrict) {
  const std::vector<std::uint8_t> bytes = {0xfb, 0xff, 0xfe, 0x00, 0x41};
  EXPECT_EQ(Base64UrlEncode(bytes), "-__-AEE");
  auto back = Base64UrlDecode("-__-AEE");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, bytes);
  EXPECT_FALSE(Base64UrlDecode("-__-AEE=").ok());  // padding
  EXPECT_FALSE(Base64UrlDecode("+//+AEE").ok());   // standard alphabet
  EXPECT_FALSE(Base64UrlDecode("-__-AEF").ok());   // non-canonical trailing bits
  EXPECT_TRUE(Base64UrlDecode("").ok());
}

TEST(EncodingTest, Base64Decode) {
  auto v = Base64Decode("aGk=");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(std::string(v->begin(), v->end()), "hi");
  EXPECT_FALSE(Base64Decode("aGk").ok());
  // Found by fuzzing (tests/fuzz/encoding_fuzz.cc): one spelling per value.
  EXPECT_FALSE(Base64Decode("Zm9=").ok());      // set bits after the last byte
  EXPECT_FALSE(Base64Decode("Zg==Zg==").ok());  // padding in the middle
  EXPECT_FALSE(Base64Decode("====").ok());
  EXPECT_TRUE(Base64Decode("Zm8=").ok());
}

TEST(EncodingTest, UrlEncodeKeepsInjectionInsideOneValue) {
  EXPECT_EQ(UrlEncode("a&b/../x"), "a%26b%2F..%2Fx");
  EXPECT_EQ(UrlEncode("user name+1@x.com"), "user%20name%2B1%40x.com");
  EXPECT_EQ(UrlEncode("é"), "%C3%A9");
}

}  // namespace
}  // namespace cakewalk
