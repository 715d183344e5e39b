// A SoftHSM token, a loaded module, an open Token and a SecretStore for one test.
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "hsm/module.h"
#include "hsm/pin.h"
#include "hsm/secret_store.h"
#include "hsm/token.h"
#include "tests/support/capture_log.h"
#include "tests/support/fake_clock.h"
#include "tests/support/softhsm.h"

namespace cakewalk::testing {

inline SysTime UnixTime(long long seconds) { return SysTime(std::chrono::seconds(seconds)); }
// For times past 2262, which SysTime (nanoseconds) cannot hold.
inline std::chrono::sys_seconds UnixSeconds(long long seconds) {
  return std::chrono::sys_seconds(std::chrono::seconds(seconds));
}

class TokenFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    auto h = SoftHsm::Create();
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    softhsm_ = std::move(*h);
    auto m = hsm::Module::Load(std::string(SoftHsm::kModulePath));
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    module_ = std::move(*m);
    auto pin = hsm::ResolvePin(softhsm_->token().pin_file);
    ASSERT_TRUE(pin.ok()) << pin.status().ToString();
    auto t = hsm::Token::Open(*module_, softhsm_->token().uri, std::move(*pin));
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    token_ = std::move(*t);
    auto s = hsm::SecretStore::Open(*token_, audit_, clock_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }

  // A raw PKCS#11 view of the same token, logged in (for probes behind the store's back).
  void OpenRaw() {
    auto r = RawPkcs11::Load();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    raw_ = std::move(*r);
    auto s = raw_->OpenUserSession(softhsm_->token().label, softhsm_->token().user_pin);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    raw_session_ = *s;
  }

  CapturingLogSink audit_;
  FakeClock clock_;
  std::unique_ptr<SoftHsm> softhsm_;
  std::unique_ptr<hsm::Module> module_;
  std::unique_ptr<hsm::Token> token_;
  std::unique_ptr<hsm::SecretStore> store_;
  std::unique_ptr<RawPkcs11> raw_;
  CK_SESSION_HANDLE raw_session_ = CK_INVALID_HANDLE;
};

}  // namespace cakewalk::testing
