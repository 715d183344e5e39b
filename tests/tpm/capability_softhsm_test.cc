// The TPM backend's adaptations are chosen by capability, not by module: shown on SoftHSM.
//   - A SoftHSM whose mechanism list hides CKM_AES_GCM gets the CBC + HMAC sealing scheme (its
//     keys made by C_GenerateKey: no out-of-band provisioning where the token generates keys),
//     and the same token with GCM visible again writes GCM records and still opens the CBC ones.
//   - The TPM tests' sensitivity proof (CheckSecretKeyNotExportable) accepts SoftHSM's
//     specification behaviour and refuses keys that really are exportable.
#include <gtest/gtest.h>

#include "base/encoding.h"
#include "base/json.h"
#include "hsm/ck.h"
#include "hsm/module.h"
#include "hsm/otpauth.h"
#include "hsm/pin.h"
#include "hsm/secret_store.h"
#include "hsm/token.h"
#include "tests/support/capture_log.h"
#include "tests/support/fake_clock.h"
#include "tests/support/softhsm.h"
#include "tests/support/swtpm.h"

namespace cakewalk::testing {
namespace {

std::string Open(const Result<SecretBytes>& r) {
  if (!r.ok()) return "<error: " + r.status().ToString() + ">";
  return std::string(r->RevealString(SecretAccess::Grant()));
}

// SoftHSM's function list with CKM_AES_GCM removed from C_GetMechanismList (test interposer).
CK_FUNCTION_LIST g_without_gcm;
CK_C_GetMechanismList g_real_get_mechanism_list = nullptr;

CK_RV GetMechanismListWithoutGcm(CK_SLOT_ID slot, CK_MECHANISM_TYPE* list, CK_ULONG* count) {
  CK_ULONG n = 0;
  CK_RV rv = g_real_get_mechanism_list(slot, nullptr, &n);
  if (rv != CKR_OK) return rv;
  std::vector<CK_MECHANISM_TYPE> all(n);
  rv = g_real_get_mechanism_list(slot, all.data(), &n);
  if (rv != CKR_OK) return rv;
  all.resize(n);
  std::erase(all, CKM_AES_GCM);
  if (list == nullptr) {
    *count = all.size();
    return CKR_OK;
  }
  if (*count < all.size()) {
    *count = all.size();
    return CKR_BUFFER_TOO_SMALL;
  }
  std::copy(all.begin(), all.end(), list);
  *count = all.size();
  return CKR_OK;
}

class CapabilitySoftHsmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto h = SoftHsm::Create("capability");
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    softhsm_ = std::move(*h);
    auto r = RawPkcs11::Load();
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    raw_ = std::move(*r);
  }

  std::unique_ptr<hsm::Token> OpenToken(hsm::Module& module) {
    auto pin = hsm::ResolvePin(softhsm_->token().pin_file);
    EXPECT_TRUE(pin.ok());
    auto t = hsm::Token::Open(module, softhsm_->token().uri, std::move(*pin));
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return t.ok() ? std::move(*t) : nullptr;
  }

  CapturingLogSink audit_;
  FakeClock clock_;
  std::unique_ptr<SoftHsm> softhsm_;
  std::unique_ptr<RawPkcs11> raw_;
};

TEST_F(CapabilitySoftHsmTest, WithoutGcmTheStoreSealsWithCbcAndHmacAndReadsBothSchemes) {
  g_without_gcm = *raw_->f();
  g_real_get_mechanism_list = raw_->f()->C_GetMechanismList;
  g_without_gcm.C_GetMechanismList = &GetMechanismListWithoutGcm;
  auto no_gcm_module = hsm::internal::ModuleAccess::Borrow(&g_without_gcm, "SoftHSM without GCM");
  {
    auto token = OpenToken(*no_gcm_module);
    ASSERT_NE(token, nullptr);
    EXPECT_FALSE(token->capabilities().Has(hsm::Mechanism::kAesGcm));
    EXPECT_TRUE(token->capabilities().Has(hsm::Mechanism::kAesCbc));
    auto store = hsm::SecretStore::Open(*token, audit_, clock_);
    ASSERT_TRUE(store.ok());
    auto put = (*store)->Put("c", "password", SecretBytes::CopyOf(std::string_view("cbc value")));
    ASSERT_TRUE(put.ok()) << put.status().ToString();
    EXPECT_EQ(put->scheme, "aes-256-cbc-hmac-sha256");
    EXPECT_EQ(Open((*store)->Unseal("c", "password", "t")), "cbc value");
  }
  // The keys came from C_GenerateKey: generated in the token, pinned to their one mechanism.
  auto s = raw_->OpenUserSession(softhsm_->token().label, softhsm_->token().user_pin);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  for (const auto& [label, mechanism] : {std::pair{"cakewalk:seal-key:cbc", CKM_AES_CBC},
                                         std::pair{"cakewalk:seal-key:mac", CKM_SHA256_HMAC}}) {
    auto keys = raw_->FindByLabel(*s, label, CKO_SECRET_KEY);
    ASSERT_TRUE(keys.ok());
    ASSERT_EQ(keys->size(), 1u) << label;
    CK_BBOOL local = CK_FALSE;
    CK_MECHANISM_TYPE allowed[4] = {};
    CK_ATTRIBUTE attrs[] = {{CKA_LOCAL, &local, 1},
                            {CKA_ALLOWED_MECHANISMS, allowed, sizeof allowed}};
    ASSERT_EQ(raw_->f()->C_GetAttributeValue(*s, (*keys)[0], attrs, 2), CKR_OK);
    EXPECT_TRUE(local) << label;
    EXPECT_EQ(attrs[1].ulValueLen, sizeof(CK_MECHANISM_TYPE)) << label;
    EXPECT_EQ(allowed[0], mechanism) << label;
    std::vector<std::string> notes;
    Status st = CheckSecretKeyNotExportable(raw_->f(), *s, (*keys)[0], &notes);
    EXPECT_TRUE(st.ok()) << st.ToString();
    EXPECT_TRUE(notes.empty()) << ::testing::PrintToString(notes);
  }
  raw_->f()->C_CloseSession(*s);
  no_gcm_module.reset();

  // The same token with its full mechanism list: new records use GCM, old ones still open.
  auto module = hsm::Module::Load(std::string(SoftHsm::kModulePath));
  ASSERT_TRUE(module.ok()) << module.status().ToString();
  auto token = OpenToken(**module);
  ASSERT_NE(token, nullptr);
  auto store = hsm::SecretStore::Open(*token, audit_, clock_);
  ASSERT_TRUE(store.ok());
  auto put = (*store)->Put("c", "pat", SecretBytes::CopyOf(std::string_view("gcm value")));
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->scheme, "aes-256-gcm");
  EXPECT_EQ(Open((*store)->Unseal("c", "pat", "t")), "gcm value");
  EXPECT_EQ(Open((*store)->Unseal("c", "password", "t")), "cbc value");
  auto list = (*store)->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].scheme, "aes-256-cbc-hmac-sha256");
  EXPECT_EQ((*list)[1].scheme, "aes-256-gcm");
  token.reset();
  EXPECT_TRUE((*module)->Close().ok());
}

TEST_F(CapabilitySoftHsmTest, TheSensitivityProofAcceptsSoftHsmAndRefusesExportableKeys) {
  auto s = raw_->OpenUserSession(softhsm_->token().label, softhsm_->token().user_pin);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  CK_FUNCTION_LIST* f = raw_->f();
  auto make = [&](bool sensitive, bool extractable) {
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_GENERIC_SECRET;
    CK_BBOOL yes = CK_TRUE, sens = sensitive, extr = extractable;
    std::uint8_t value[32] = {7, 7, 7};
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls},       {CKA_KEY_TYPE, &type, sizeof type},
                        {CKA_TOKEN, &yes, sizeof yes},       {CKA_PRIVATE, &yes, sizeof yes},
                        {CKA_SENSITIVE, &sens, sizeof sens}, {CKA_EXTRACTABLE, &extr, sizeof extr},
                        {CKA_SIGN, &yes, sizeof yes},        {CKA_VALUE, value, sizeof value}};
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    EXPECT_EQ(f->C_CreateObject(*s, t, 8, &h), CKR_OK);
    return h;
  };
  // What the store makes: sensitive, not extractable — accepted, nothing backend-specific.
  std::vector<std::string> notes;
  Status good = CheckSecretKeyNotExportable(f, *s, make(true, false), &notes);
  EXPECT_TRUE(good.ok()) << good.ToString();
  EXPECT_TRUE(notes.empty());
  // Readable keys are refused.
  Status readable = CheckSecretKeyNotExportable(f, *s, make(false, true));
  ASSERT_FALSE(readable.ok());
  EXPECT_NE(readable.message().find("CKA_SENSITIVE is FALSE"), std::string::npos)
      << readable.message();
  // Sensitive but extractable: SoftHSM implements C_WrapKey, so an export path exists.
  Status wrappable = CheckSecretKeyNotExportable(f, *s, make(true, true));
  ASSERT_FALSE(wrappable.ok());
  EXPECT_NE(wrappable.message().find("C_WrapKey"), std::string::npos) << wrappable.message();
  f->C_CloseSession(*s);
}

}  // namespace
}  // namespace cakewalk::testing
