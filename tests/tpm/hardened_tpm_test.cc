// The tpm2-pkcs11 key helper under the agent unit's restrictions: memfd_create forbidden and no
// writable+executable memory (tests/tpm/sandbox_exec.cc). Secrets then go through nameless
// O_TMPFILE files on a tmpfs — and never onto a disk: a ram_dir that is not a tmpfs is refused.
#include <gtest/gtest.h>

#include "hsm/session.h"
#include "hsm/tpm2_provisioner.h"
#include "tests/support/canary.h"
#include "tests/tpm/fixture.h"

namespace cakewalk::testing {
namespace {

class HardenedTpmTest : public TpmFixture {
 protected:
  // The provisioner the agent would build from this environment, run through the sandbox.
  void UseSandboxedHelper(const std::filesystem::path& ram_dir) {
    auto p = hsm::internal::Tpm2StoreProvisioner::FromEnvironment();
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    hsm::internal::Tpm2StoreOptions options = (*p)->options();
    options.python = CAKEWALK_TPM_SANDBOX_EXEC;
    options.ram_dir = ram_dir;
    hsm::internal::TokenAccess::core(*token_)->SetProvisionerForTesting(
        std::make_shared<hsm::internal::Tpm2StoreProvisioner>(std::move(options)));
  }
};

TEST_F(HardenedTpmTest, TheSandboxReallyForbidsMemfdAndWritableExecutableMemory) {
  ProgramResult memfd =
      RunProgram({CAKEWALK_TPM_SANDBOX_EXEC, "-I", "-c", "import os; os.memfd_create('x')"});
  EXPECT_NE(memfd.exit_code, 0);
  EXPECT_NE(memfd.err.find("PermissionError"), std::string::npos) << memfd.err;
  ProgramResult wx = RunProgram(
      {CAKEWALK_TPM_SANDBOX_EXEC, "-I", "-c",
       "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ|mmap.PROT_WRITE|mmap.PROT_EXEC)"});
  EXPECT_NE(wx.exit_code, 0) << wx.out << wx.err;
  ProgramResult fine = RunProgram({CAKEWALK_TPM_SANDBOX_EXEC, "-I", "-c", "print('ok')"});
  EXPECT_EQ(fine.exit_code, 0) << fine.err;
}

TEST_F(HardenedTpmTest, SeedsAndSealingKeysGoInWithoutMemfd) {
  ASSERT_NO_FATAL_FAILURE(UseSandboxedHelper("/dev/shm"));
  hsm::TotpSeed seed;
  seed.key = SecretBytes::CopyOf(std::string_view("12345678901234567890"));
  seed.params.digits = 8;
  auto enrolled = store_->EnrollTotp("c", seed, hsm::Activation::kCurrent);
  ASSERT_TRUE(enrolled.ok()) << enrolled.status().ToString();
  auto code = store_->Totp("c", UnixSeconds(59), "t");
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(code->code.Reveal(SecretAccess::Grant()), "94287082");
  ASSERT_TRUE(store_->Put("c", "password", SecretBytes::CopyOf(std::string_view("pw"))).ok());
  auto pw = store_->Unseal("c", "password", "t");
  ASSERT_TRUE(pw.ok()) << pw.status().ToString();
  EXPECT_EQ(pw->RevealString(SecretAccess::Grant()), "pw");
  // Nameless files leave nothing behind.
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm", ec)) {
    EXPECT_EQ(
        FindCanaryIn("12345678901234567890", ReadFile(entry.path()), entry.path().string()).size(),
        0u);
  }
}

TEST_F(HardenedTpmTest, ARamDirOnDiskIsRefused) {
  std::filesystem::create_directory(tpm_->dir() / "disk");
  ASSERT_NO_FATAL_FAILURE(UseSandboxedHelper(tpm_->dir() / "disk"));
  hsm::TotpSeed seed;
  seed.key = SecretBytes::CopyOf(std::string_view("12345678901234567890"));
  auto refused = store_->EnrollTotp("c", seed, hsm::Activation::kCurrent);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("is not a tmpfs"), std::string::npos)
      << refused.status().message();
  EXPECT_TRUE(std::filesystem::is_empty(tpm_->dir() / "disk"));
}

}  // namespace
}  // namespace cakewalk::testing
