// A software TPM with a tpm2-pkcs11 token (tests/support/swtpm.h), the module loaded by path, an
// open Token and a SecretStore, for one test.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "hsm/module.h"
#include "hsm/pin.h"
#include "hsm/secret_store.h"
#include "hsm/token.h"
#include "tests/support/capture_log.h"
#include "tests/support/fake_clock.h"
#include "tests/support/softhsm.h"
#include "tests/support/swtpm.h"

namespace cakewalk::testing {

inline std::chrono::sys_seconds UnixSeconds(long long seconds) {
  return std::chrono::sys_seconds(std::chrono::seconds(seconds));
}

class TpmFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = Swtpm::Start();
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    tpm_ = std::move(*t);
    ASSERT_NO_FATAL_FAILURE(OpenToken());
  }

  void TearDown() override {
    CloseRaw();
    store_.reset();
    token_.reset();
    if (module_) {
      EXPECT_TRUE(module_->Close().ok());
    }
    module_.reset();
    tpm_.reset();
  }

  void OpenToken() {
    auto m = hsm::Module::Load(std::string(Swtpm::kModulePath));
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    module_ = std::move(*m);
    auto pin = hsm::ResolvePin(tpm_->token().pin_file);
    ASSERT_TRUE(pin.ok()) << pin.status().ToString();
    auto t = hsm::Token::Open(*module_, tpm_->token().uri, std::move(*pin));
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    token_ = std::move(*t);
    auto s = hsm::SecretStore::Open(*token_, audit_, clock_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }

  // A fresh start, as a restarted agent sees the token: everything closed, module loaded again.
  void ReopenToken() {
    CloseRaw();
    store_.reset();
    token_.reset();
    ASSERT_TRUE(module_->Close().ok());
    module_.reset();
    OpenToken();
  }

  // A raw, logged-in PKCS#11 session on the same (already initialised) module instance. Open it
  // after the operations under test: an out-of-band key import re-initialises the module, which
  // ends every session, this one included.
  void OpenRaw() {
    CloseRaw();
    auto r = RawPkcs11::Load(Swtpm::kModulePath);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    raw_ = std::move(*r);
    auto s = raw_->OpenUserSession(tpm_->token().label, tpm_->token().user_pin);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    raw_session_ = *s;
  }
  void CloseRaw() {
    if (raw_ && raw_session_ != CK_INVALID_HANDLE) raw_->f()->C_CloseSession(raw_session_);
    raw_session_ = CK_INVALID_HANDLE;
    raw_.reset();
  }

  CapturingLogSink audit_;
  FakeClock clock_;
  std::unique_ptr<Swtpm> tpm_;
  std::unique_ptr<hsm::Module> module_;
  std::unique_ptr<hsm::Token> token_;
  std::unique_ptr<hsm::SecretStore> store_;
  std::unique_ptr<RawPkcs11> raw_;
  CK_SESSION_HANDLE raw_session_ = CK_INVALID_HANDLE;
};

}  // namespace cakewalk::testing
