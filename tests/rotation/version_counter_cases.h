// Version numbers are never handed out twice (hsm/layout.h, VERSION COUNTER): the same checks on
// every backend (SoftHSM in version_counter_test.cc, the TPM in version_counter_tpm_test.cc).
// `Raw` is the backend's raw PKCS#11 view of the token, for probes and tampering behind the
// store's back.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "base/encoding.h"
#include "base/json.h"
#include "hsm/secret_store.h"
#include "tests/support/softhsm.h"

namespace cakewalk::testing::version_counter {

inline SecretBytes Secret(std::string_view s) { return SecretBytes::CopyOf(s); }

inline std::string Open(const Result<SecretBytes>& r) {
  if (!r.ok()) return "<error: " + r.status().ToString() + ">";
  return std::string(r->RevealString(SecretAccess::Grant()));
}

// CKA_VALUE of every data object labelled `label`.
inline std::vector<std::string> RawValues(RawPkcs11& raw, CK_SESSION_HANDLE session,
                                          const std::string& label) {
  std::vector<std::string> out;
  auto found = raw.FindByLabel(session, label, CKO_DATA);
  EXPECT_TRUE(found.ok()) << label;
  if (!found.ok()) return out;
  for (CK_OBJECT_HANDLE h : *found) {
    CK_ATTRIBUTE a{CKA_VALUE, nullptr, 0};
    EXPECT_EQ(raw.f()->C_GetAttributeValue(session, h, &a, 1), CKR_OK);
    std::string v(a.ulValueLen, '\0');
    a.pValue = v.data();
    EXPECT_EQ(raw.f()->C_GetAttributeValue(session, h, &a, 1), CKR_OK);
    out.push_back(v);
  }
  return out;
}

// A data object made by hand, as an operator (or a restore from backup) with the PIN could.
inline void RawCreateData(RawPkcs11& raw, CK_SESSION_HANDLE session, const std::string& label,
                          const std::string& value) {
  CK_OBJECT_CLASS cls = CKO_DATA;
  CK_BBOOL yes = CK_TRUE;
  std::string app = "cakewalk-agent";
  CK_ATTRIBUTE t[] = {
      {CKA_CLASS, &cls, sizeof cls},
      {CKA_TOKEN, &yes, sizeof yes},
      {CKA_PRIVATE, &yes, sizeof yes},
      {CKA_MODIFIABLE, &yes, sizeof yes},
      {CKA_APPLICATION, app.data(), static_cast<CK_ULONG>(app.size())},
      {CKA_LABEL, const_cast<char*>(label.data()), static_cast<CK_ULONG>(label.size())},
      {CKA_VALUE, const_cast<char*>(value.data()), static_cast<CK_ULONG>(value.size())}};
  CK_OBJECT_HANDLE h;
  ASSERT_EQ(raw.f()->C_CreateObject(session, t, 7, &h), CKR_OK);
}

inline void RawDestroyAll(RawPkcs11& raw, CK_SESSION_HANDLE session, const std::string& label) {
  auto found = raw.FindByLabel(session, label, CKO_DATA);
  ASSERT_TRUE(found.ok());
  for (CK_OBJECT_HANDLE h : *found) ASSERT_EQ(raw.f()->C_DestroyObject(session, h), CKR_OK);
}

inline std::uint32_t CounterLast(const std::string& value) {
  auto json = ParseJson(value, "counter");
  EXPECT_TRUE(json.ok());
  if (!json.ok()) return 0;
  EXPECT_EQ((*json)["kind"].asString(), "last-version");
  return (*json)["last"].asUInt();
}

// The highest version destroyed, and the next value gets a new number; a record of the destroyed
// number, restored from a backup into the new version's place, does not authenticate. `raw` is
// called after the store's operations (a TPM import may re-initialise the module).
inline void DestroyedHighestIsNeverReused(
    hsm::SecretStore& store, const std::function<std::pair<RawPkcs11*, CK_SESSION_HANDLE>()>& raw) {
  ASSERT_TRUE(store.Put("c1", "password", Secret("first-value")).ok());
  auto v2 = store.Put("c1", "password", Secret("second-value"));
  ASSERT_TRUE(v2.ok());
  ASSERT_EQ(v2->version, 2u);
  auto [r, session] = raw();
  // The backup an attacker kept of version 2.
  const std::vector<std::string> backup =
      RawValues(*r, session, "cakewalk:secret:c1:password:v2:current");
  ASSERT_EQ(backup.size(), 1u);
  // Back to version 1, and version 2 destroyed (the highest).
  ASSERT_TRUE(store.Promote("c1", "password", 1).ok());
  ASSERT_TRUE(store.Destroy("c1", "password", 2).ok());
  auto v3 = store.Put("c1", "password", Secret("third-value"));
  ASSERT_TRUE(v3.ok()) << v3.status().ToString();
  EXPECT_EQ(v3->version, 3u) << "version 2 was handed out again";
  EXPECT_EQ(Open(store.Unseal("c1", "password", "t")), "third-value");

  // The old record's ciphertext put in the new version's place fails authentication: the AAD
  // names version 3, the ciphertext was bound to version 2.
  auto [r2, session2] = raw();
  auto old = ParseJson(backup[0], "backup");
  ASSERT_TRUE(old.ok());
  auto now =
      ParseJson(RawValues(*r2, session2, "cakewalk:secret:c1:password:v3:current").at(0), "record");
  ASSERT_TRUE(now.ok());
  Json::Value forged = *now;
  forged["sealed"] = (*old)["sealed"];
  RawDestroyAll(*r2, session2, "cakewalk:secret:c1:password:v3:current");
  RawCreateData(*r2, session2, "cakewalk:secret:c1:password:v3:current", WriteJson(forged));
  auto opened = store.Unseal("c1", "password", "t");
  ASSERT_FALSE(opened.ok()) << "the old ciphertext authenticated as version 3";
  EXPECT_EQ(Open(store.UnsealVersion("c1", "password", 1, "t")), "first-value");
}

// Destroying every version (the current one deliberately) does not restart the numbering, for
// sealed values and TOTP seeds alike; the counter is one object per secret.
inline void EmptiedSecretKeepsCounting(
    hsm::SecretStore& store, const std::function<std::pair<RawPkcs11*, CK_SESSION_HANDLE>()>& raw,
    const hsm::TotpSeed& seed) {
  ASSERT_TRUE(store.Put("c2", "pat", Secret("a")).ok());
  ASSERT_TRUE(store.Put("c2", "pat", Secret("b")).ok());
  ASSERT_TRUE(store.Destroy("c2", "pat", 1).ok());
  ASSERT_TRUE(store.Destroy("c2", "pat", 2, hsm::DestroyPolicy::kAllowCurrent).ok());
  auto list = store.List();
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
  auto next = store.Put("c2", "pat", Secret("c"));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->version, 3u);

  auto t1 = store.EnrollTotp("c2", seed, hsm::Activation::kCurrent);
  ASSERT_TRUE(t1.ok()) << t1.status().ToString();
  ASSERT_TRUE(store.Destroy("c2", "totp", t1->version, hsm::DestroyPolicy::kAllowCurrent).ok());
  auto t2 = store.EnrollTotp("c2", seed, hsm::Activation::kCurrent);
  ASSERT_TRUE(t2.ok()) << t2.status().ToString();
  EXPECT_EQ(t2->version, t1->version + 1);

  auto [r, session] = raw();
  const auto pat = RawValues(*r, session, "cakewalk:last-version:c2:pat");
  ASSERT_EQ(pat.size(), 1u);
  EXPECT_EQ(CounterLast(pat[0]), 3u);
  const auto totp = RawValues(*r, session, "cakewalk:last-version:c2:totp");
  ASSERT_EQ(totp.size(), 1u);
  EXPECT_EQ(CounterLast(totp[0]), t2->version);
}

}  // namespace cakewalk::testing::version_counter
