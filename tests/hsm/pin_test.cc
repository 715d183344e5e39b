#include "hsm/pin.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "tests/support/temp_dir.h"

namespace cakewalk::hsm {
namespace {

using testing::TempDir;
using testing::WriteFile;

TEST(ResolvePinTest, ReadsTheConfiguredFile) {
  TempDir dir;
  WriteFile(dir / "pin", "4321\n", 0600);
  auto pin = ResolvePin(dir / "pin");
  ASSERT_TRUE(pin.ok()) << pin.status().ToString();
  EXPECT_EQ(pin->RevealString(SecretAccess::Grant()), "4321");
}

TEST(ResolvePinTest, FallsBackToSystemdCredentials) {
  TempDir dir;
  WriteFile(dir / "hsm-pin", "9876", 0400);
  setenv("CREDENTIALS_DIRECTORY", dir.path().c_str(), 1);
  auto pin = ResolvePin(std::nullopt);
  unsetenv("CREDENTIALS_DIRECTORY");
  ASSERT_TRUE(pin.ok()) << pin.status().ToString();
  EXPECT_EQ(pin->RevealString(SecretAccess::Grant()), "9876");
}

TEST(ResolvePinTest, ErrorsNameTheFileAndTheFix) {
  TempDir dir;
  unsetenv("CREDENTIALS_DIRECTORY");
  auto none = ResolvePin(std::nullopt);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(none.status().message().find("token.pin_file"), std::string::npos);
  EXPECT_NE(none.status().message().find("CREDENTIALS_DIRECTORY"), std::string::npos);

  auto missing = ResolvePin(dir / "absent");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_NE(missing.status().message().find((dir / "absent").string()), std::string::npos);
  EXPECT_NE(missing.status().message().find("create it"), std::string::npos);

  setenv("CREDENTIALS_DIRECTORY", dir.path().c_str(), 1);
  auto cred_missing = ResolvePin(std::nullopt);
  unsetenv("CREDENTIALS_DIRECTORY");
  ASSERT_FALSE(cred_missing.ok());
  EXPECT_NE(cred_missing.status().message().find((dir / "hsm-pin").string()), std::string::npos);
  EXPECT_NE(cred_missing.status().message().find("LoadCredential"), std::string::npos);

  WriteFile(dir / "open", "1234", 0644);
  auto open = ResolvePin(dir / "open");
  ASSERT_FALSE(open.ok());
  EXPECT_EQ(open.status().code(), Code::kPermissionDenied);
  EXPECT_NE(open.status().message().find((dir / "open").string()), std::string::npos);
  EXPECT_EQ(open.status().message().find("1234"), std::string::npos);

  WriteFile(dir / "empty", "\n", 0600);
  auto empty = ResolvePin(dir / "empty");
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("is empty"), std::string::npos);
}

}  // namespace
}  // namespace cakewalk::hsm
