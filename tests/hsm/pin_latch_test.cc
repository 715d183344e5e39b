// Never lock the token: one login attempt per process after a wrong PIN, and no attempt at all
// when the token says the PIN is locked, on its final try, or must be changed.
//
// SoftHSM 2.6 never reports CKF_USER_PIN_FINAL_TRY or CKF_USER_PIN_LOCKED (it has no retry
// limit; a wrong PIN only sets CKF_USER_PIN_COUNT_LOW, see SoftHsmNeverReportsFinalTry), so the
// refusal logic is tested through a seam: a copy of SoftHSM's function list whose C_Login counts
// calls and whose C_GetTokenInfo adds flags, wrapped with ModuleAccess::Borrow.
#include <gtest/gtest.h>

#include <atomic>

#include "hsm/ck.h"
#include "hsm/secret_store.h"
#include "hsm/session.h"
#include "hsm/token.h"
#include "tests/support/softhsm.h"

namespace cakewalk::testing {
namespace {

CK_FUNCTION_LIST* g_real = nullptr;
std::atomic<int> g_logins{0};
std::atomic<CK_FLAGS> g_add_flags{0};
std::atomic<CK_FLAGS> g_remove_flags{0};

CK_RV CountingLogin(CK_SESSION_HANDLE s, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG len) {
  ++g_logins;
  return g_real->C_Login(s, user, pin, len);
}

CK_RV FlaggedTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info) {
  const CK_RV rv = g_real->C_GetTokenInfo(slot, info);
  if (rv == CKR_OK) info->flags = (info->flags | g_add_flags) & ~g_remove_flags.load();
  return rv;
}

class PinLatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    hsm::internal::ResetPinLatchForTesting();
    g_logins = 0;
    g_add_flags = 0;
    g_remove_flags = 0;
    auto h = SoftHsm::Create("latch");
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    softhsm_ = std::move(*h);
    auto raw = RawPkcs11::Load();
    ASSERT_TRUE(raw.ok()) << raw.status().ToString();
    raw_ = std::move(*raw);
    g_real = raw_->f();
    wrapped_ = *g_real;
    wrapped_.C_Login = CountingLogin;
    wrapped_.C_GetTokenInfo = FlaggedTokenInfo;
    module_ = hsm::internal::ModuleAccess::Borrow(&wrapped_, "counting wrapper around SoftHSM");
  }
  void TearDown() override {
    module_.reset();
    raw_.reset();
    hsm::internal::ResetPinLatchForTesting();
  }

  Result<std::unique_ptr<hsm::Token>> Open(std::string_view pin) {
    return hsm::Token::Open(*module_, softhsm_->token().uri, SecretBytes::CopyOf(pin));
  }

  CK_FLAGS RealFlags() {
    auto slot = raw_->SlotOf("latch");
    CK_TOKEN_INFO ti{};
    EXPECT_TRUE(slot.ok());
    EXPECT_EQ(g_real->C_GetTokenInfo(*slot, &ti), CKR_OK);
    return ti.flags;
  }

  std::unique_ptr<SoftHsm> softhsm_;
  std::unique_ptr<RawPkcs11> raw_;
  CK_FUNCTION_LIST wrapped_{};
  std::unique_ptr<hsm::Module> module_;
};

TEST_F(PinLatchTest, WrongPinStopsAfterExactlyOneAttempt) {
  auto first = Open("wrong-pin-1");
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(first.status().reason(), hsm::kPinIncorrectReason);
  EXPECT_NE(first.status().message().find("one login attempt"), std::string::npos)
      << first.status().message();
  EXPECT_NE(first.status().message().find("PIN file"), std::string::npos);
  EXPECT_EQ(first.status().message().find("wrong-pin-1"), std::string::npos);
  EXPECT_EQ(g_logins.load(), 1);

  // Neither another wrong PIN nor even the right one is tried again in this process.
  auto second = Open("wrong-pin-2");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().reason(), hsm::kPinIncorrectReason);
  EXPECT_NE(second.status().message().find("earlier login"), std::string::npos);
  auto right = Open(softhsm_->token().user_pin);
  ASSERT_FALSE(right.ok());
  EXPECT_EQ(right.status().reason(), hsm::kPinIncorrectReason);
  EXPECT_EQ(g_logins.load(), 1);

  // The token is not locked: SoftHSM only notes the failure.
  const CK_FLAGS flags = RealFlags();
  EXPECT_EQ(flags & CKF_USER_PIN_LOCKED, 0u);
  EXPECT_EQ(flags & CKF_USER_PIN_FINAL_TRY, 0u);
  EXPECT_NE(flags & CKF_USER_PIN_COUNT_LOW, 0u);
  // A new process (simulated by resetting the latch) logs in with the right PIN.
  hsm::internal::ResetPinLatchForTesting();
  auto fresh = Open(softhsm_->token().user_pin);
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_EQ(g_logins.load(), 2);
  EXPECT_EQ(RealFlags() & CKF_USER_PIN_COUNT_LOW, 0u);
}

TEST_F(PinLatchTest, RefusesToLogInWhenTheTokenWarns) {
  struct Case {
    CK_FLAGS add;
    CK_FLAGS remove;
    const char* expected;
  };
  for (const Case& c : {Case{CKF_USER_PIN_FINAL_TRY, 0, "one more wrong PIN locks it"},
                        Case{CKF_USER_PIN_LOCKED, 0, "PIN is locked"},
                        Case{CKF_USER_PIN_TO_BE_CHANGED, 0, "PIN to be changed"},
                        Case{0, CKF_USER_PIN_INITIALIZED, "never set"},
                        Case{0, CKF_TOKEN_INITIALIZED, "no token"}}) {
    g_add_flags = c.add;
    g_remove_flags = c.remove;
    auto r = Open(softhsm_->token().user_pin);
    ASSERT_FALSE(r.ok()) << c.expected;
    EXPECT_EQ(r.status().code(),
              c.remove == CKF_TOKEN_INITIALIZED ? Code::kNotFound : Code::kFailedPrecondition);
    EXPECT_NE(r.status().message().find(c.expected), std::string::npos) << r.status().message();
  }
  EXPECT_EQ(g_logins.load(), 0);
  g_add_flags = 0;
  g_remove_flags = 0;
  auto ok = Open(softhsm_->token().user_pin);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(g_logins.load(), 1);
}

TEST_F(PinLatchTest, ReloginAfterSessionLossAlsoChecksTheFlags) {
  auto token = Open(softhsm_->token().user_pin);
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  NullLogSink audit;
  auto store = hsm::SecretStore::Open(**token, audit);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->List().ok());
  EXPECT_EQ(g_logins.load(), 1);
  // The token starts to warn while the agent runs; its session is then lost.
  g_add_flags = CKF_USER_PIN_FINAL_TRY;
  auto slot = raw_->SlotOf("latch");
  ASSERT_TRUE(slot.ok());
  ASSERT_EQ(g_real->C_CloseAllSessions(*slot), CKR_OK);
  auto list = (*store)->List();  // needs the session again: reopen, then login
  ASSERT_FALSE(list.ok());
  EXPECT_NE(list.status().message().find("one more wrong PIN"), std::string::npos)
      << list.status().message();
  EXPECT_EQ(g_logins.load(), 1);
}

TEST_F(PinLatchTest, SoftHsmNeverReportsFinalTry) {
  // Characterisation of the test token: many wrong PINs, no lock-out flags (hence the seam).
  auto slot = raw_->SlotOf("latch");
  ASSERT_TRUE(slot.ok());
  CK_SESSION_HANDLE s;
  ASSERT_EQ(g_real->C_OpenSession(*slot, CKF_SERIAL_SESSION, nullptr, nullptr, &s), CKR_OK);
  for (int i = 0; i < 12; ++i) {
    std::string wrong = "wrong-" + std::to_string(i);
    EXPECT_EQ(g_real->C_Login(s, CKU_USER, reinterpret_cast<CK_UTF8CHAR*>(wrong.data()),
                              static_cast<CK_ULONG>(wrong.size())),
              CKR_PIN_INCORRECT);
    const CK_FLAGS flags = RealFlags();
    EXPECT_EQ(flags & (CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED), 0u);
    EXPECT_NE(flags & CKF_USER_PIN_COUNT_LOW, 0u);
  }
  g_real->C_CloseSession(s);
}

}  // namespace
}  // namespace cakewalk::testing
