// hsm: version numbers are never handed out twice, on a TPM through tpm2-pkcs11 (the same cases
// as on SoftHSM: the counter uses only data objects, which the TPM token creates and destroys).
#include <gtest/gtest.h>

#include "tests/rotation/version_counter_cases.h"
#include "tests/tpm/fixture.h"

namespace cakewalk::testing {
namespace {

using namespace version_counter;

class VersionCounterTpmTest : public TpmFixture {
 protected:
  std::pair<RawPkcs11*, CK_SESSION_HANDLE> Raw() {
    OpenRaw();  // after the store's operations: an import may have re-initialised the module
    return {raw_.get(), raw_session_};
  }
};

TEST_F(VersionCounterTpmTest, DestroyedHighestVersionIsNeverReused) {
  DestroyedHighestIsNeverReused(*store_, [&] { return Raw(); });
}

TEST_F(VersionCounterTpmTest, EmptiedSecretKeepsCountingSealedValuesAndImportedSeeds) {
  hsm::TotpSeed seed;
  seed.key = SecretBytes::CopyOf(std::string_view("12345678901234567890"));
  EmptiedSecretKeepsCounting(
      *store_, [&] { return Raw(); }, seed);
  // And for a fresh process.
  ASSERT_NO_FATAL_FAILURE(ReopenToken());
  auto next = store_->Put("c2", "pat", Secret("d"));
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(next->version, 4u);
}

}  // namespace
}  // namespace cakewalk::testing
