// main() for every test binary.
//
// - Makes the environment hermetic: no system SoftHSM configuration, no system bus, no proxy
//   variables inherited from the machine. Tests that need any of them set their own.
// - Exits 77 when a test was skipped (and none failed), so ctest reports it as skipped and
//   scripts/test can refuse a run in which anything was skipped.
#include <gtest/gtest.h>

#include <cstdlib>

namespace {

class SkipCounter : public ::testing::EmptyTestEventListener {
 public:
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result() != nullptr && info.result()->Skipped()) ++skipped;
  }
  int skipped = 0;
};

}  // namespace

int main(int argc, char** argv) {
  // A test that forgets to create its own token must fail, not find the system one.
  setenv("SOFTHSM2_CONF", "/nonexistent/cakewalk-tests-create-their-own-softhsm2.conf", 1);
  setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/cakewalk-tests-start-their-own-bus", 1);
  // Nor a tpm2-pkcs11 store in $HOME, nor a real TPM.
  setenv("TPM2_PKCS11_STORE", "/nonexistent/cakewalk-tests-start-their-own-tpm2-store", 1);
  setenv("TPM2_PKCS11_TCTI", "swtpm:host=127.0.0.1,port=1", 1);
  setenv("TPM2TOOLS_TCTI", "swtpm:host=127.0.0.1,port=1", 1);
  for (const char* var : {"https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy",
                          "NO_PROXY", "all_proxy", "ALL_PROXY", "CREDENTIALS_DIRECTORY",
                          "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}) {
    unsetenv(var);
  }

  ::testing::InitGoogleTest(&argc, argv);
  auto* counter = new SkipCounter;  // owned by gtest's listener list
  ::testing::UnitTest::GetInstance()->listeners().Append(counter);
  const int rc = RUN_ALL_TESTS();
  if (rc == 0 && counter->skipped > 0) return 77;
  return rc;
}
