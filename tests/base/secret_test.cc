#include "base/secret.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "tests/support/temp_dir.h"

namespace cakewalk {
namespace {

using testing::TempDir;
using testing::WriteFile;

TEST(SecretBytesTest, MoveLeavesSourceEmptyAndAppendGrows) {
  SecretBytes a = SecretBytes::CopyOf(std::string_view("abc"));
  SecretBytes b = std::move(a);
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  EXPECT_EQ(b.RevealString(SecretAccess::Grant()), "abc");
  std::string big(10000, 'x');
  b.Append(big);
  EXPECT_EQ(b.size(), 10003u);
  EXPECT_EQ(b.RevealString(SecretAccess::Grant()).substr(0, 4), "abcx");
  b.Truncate(2);
  EXPECT_EQ(b.RevealString(SecretAccess::Grant()), "ab");
}

TEST(SecretBytesTest, TakeWipesTheSourceString) {
  std::string s = "hunter2-and-more-than-sso-length";
  const char* storage = s.data();
  const std::size_t n = s.size();
  SecretBytes secret = SecretBytes::Take(s);
  EXPECT_TRUE(s.empty());
  // The string kept its heap buffer; every byte of it must be zero now.
  for (std::size_t i = 0; i < n; ++i) EXPECT_EQ(storage[i], '\0') << i;
  EXPECT_EQ(secret.RevealString(SecretAccess::Grant()), "hunter2-and-more-than-sso-length");
}

TEST(SecretBytesTest, AReleasedPageComesBackWipedForTheNextSecret) {
  const std::uint8_t* page = nullptr;
  {
    SecretBytes first = SecretBytes::CopyOf(std::string_view("pooled-page-canary"));
    page = first.Reveal(SecretAccess::Grant()).data();
  }
  // Released pages are reused last in, first out: the next one-page secret gets the same page,
  // every byte of it zero.
  SecretBytes next = SecretBytes::Allocate(static_cast<std::size_t>(sysconf(_SC_PAGESIZE)));
  const auto bytes = next.Reveal(SecretAccess::Grant());
  EXPECT_EQ(bytes.data(), page);
  EXPECT_EQ(std::count(bytes.begin(), bytes.end(), 0), static_cast<std::ptrdiff_t>(bytes.size()));
  // A secret larger than a page gets pages of its own, zero-filled too.
  SecretBytes large = SecretBytes::Allocate(3 * bytes.size());
  const auto big = large.Reveal(SecretAccess::Grant());
  EXPECT_EQ(std::count(big.begin(), big.end(), 0), static_cast<std::ptrdiff_t>(big.size()));
}

TEST(SecretBytesTest, ConstantTimeEquals) {
  auto a = SecretBytes::CopyOf(std::string_view("same"));
  auto b = SecretBytes::CopyOf(std::string_view("same"));
  auto c = SecretBytes::CopyOf(std::string_view("diff"));
  EXPECT_TRUE(a.ConstantTimeEquals(b));
  EXPECT_FALSE(a.ConstantTimeEquals(c));
  EXPECT_FALSE(a.ConstantTimeEquals(SecretBytes()));
}

TEST(SecretBytesTest, ReadFileTrimsNewlineAndRefusesWorldReadable) {
  TempDir dir;
  WriteFile(dir / "pin", "1234\n", 0600);
  auto pin = SecretBytes::ReadFile(dir / "pin", 64, SecretBytes::Trim::kTrailingNewline);
  ASSERT_TRUE(pin.ok()) << pin.status().ToString();
  EXPECT_EQ(pin->RevealString(SecretAccess::Grant()), "1234");

  WriteFile(dir / "open", "1234", 0644);
  auto open = SecretBytes::ReadFile(dir / "open", 64, SecretBytes::Trim::kNone);
  ASSERT_FALSE(open.ok());
  EXPECT_EQ(open.status().code(), Code::kPermissionDenied);
  EXPECT_NE(open.status().message().find("chmod o-rwx"), std::string::npos);

  auto missing = SecretBytes::ReadFile(dir / "absent", 64, SecretBytes::Trim::kNone);
  EXPECT_EQ(missing.status().code(), Code::kNotFound);

  WriteFile(dir / "big", std::string(100, 'x'), 0600);
  auto big = SecretBytes::ReadFile(dir / "big", 64, SecretBytes::Trim::kNone);
  EXPECT_EQ(big.status().code(), Code::kInvalidArgument);
}

TEST(SecretBytesTest, WhitespaceTrim) {
  TempDir dir;
  WriteFile(dir / "t", "  \ttoken-value \r\n", 0600);
  auto t = SecretBytes::ReadFile(dir / "t", 64, SecretBytes::Trim::kWhitespace);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->RevealString(SecretAccess::Grant()), "token-value");
}

}  // namespace
}  // namespace cakewalk
