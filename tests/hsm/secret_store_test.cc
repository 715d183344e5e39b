#include "hsm/secret_store.h"

#include <gtest/gtest.h>

#include <set>

#include "base/encoding.h"
#include "base/json.h"
#include "tests/hsm/fixture.h"

namespace cakewalk::testing {
namespace {

using hsm::SecretState;

SecretBytes Secret(std::string_view s) { return SecretBytes::CopyOf(s); }

std::string Open(const Result<SecretBytes>& r) {
  if (!r.ok()) return "<error: " + r.status().ToString() + ">";
  return std::string(r->RevealString(SecretAccess::Grant()));
}

class SecretStoreTest : public TokenFixture {
 protected:
  // CKA_VALUE of the record labelled `label`, read behind the store's back.
  std::string RawRecord(const std::string& label) {
    auto found = raw_->FindByLabel(raw_session_, label, CKO_DATA);
    EXPECT_TRUE(found.ok() && found->size() == 1) << label;
    if (!found.ok() || found->size() != 1) return {};
    CK_ATTRIBUTE a{CKA_VALUE, nullptr, 0};
    EXPECT_EQ(raw_->f()->C_GetAttributeValue(raw_session_, (*found)[0], &a, 1), CKR_OK);
    std::string v(a.ulValueLen, '\0');
    a.pValue = v.data();
    EXPECT_EQ(raw_->f()->C_GetAttributeValue(raw_session_, (*found)[0], &a, 1), CKR_OK);
    return v;
  }

  // Creates a record object by hand (what a tamperer with the PIN could do).
  void RawCreateRecord(const std::string& label, const std::string& value) {
    CK_OBJECT_CLASS cls = CKO_DATA;
    CK_BBOOL yes = CK_TRUE;
    std::string app = "cakewalk-agent";
    CK_ATTRIBUTE t[] = {
        {CKA_CLASS, &cls, sizeof cls},
        {CKA_TOKEN, &yes, sizeof yes},
        {CKA_PRIVATE, &yes, sizeof yes},
        {CKA_APPLICATION, app.data(), static_cast<CK_ULONG>(app.size())},
        {CKA_LABEL, const_cast<char*>(label.data()), static_cast<CK_ULONG>(label.size())},
        {CKA_VALUE, const_cast<char*>(value.data()), static_cast<CK_ULONG>(value.size())}};
    CK_OBJECT_HANDLE h;
    ASSERT_EQ(raw_->f()->C_CreateObject(raw_session_, t, 6, &h), CKR_OK);
  }

  void RawRelabel(const std::string& from, const std::string& to) {
    auto found = raw_->FindByLabel(raw_session_, from, CKO_DATA);
    ASSERT_TRUE(found.ok() && found->size() == 1) << from;
    CK_ATTRIBUTE a{CKA_LABEL, const_cast<char*>(to.data()), static_cast<CK_ULONG>(to.size())};
    ASSERT_EQ(raw_->f()->C_SetAttributeValue(raw_session_, (*found)[0], &a, 1), CKR_OK);
  }
};

TEST_F(SecretStoreTest, PutThenUnsealRoundTripsAndListsMetadataOnly) {
  clock_.SetUnix(1764850000);
  auto put = store_->Put("jira-prod", "password", Secret("correct horse battery staple"));
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->version, 1u);
  EXPECT_EQ(put->state, SecretState::kCurrent);
  EXPECT_EQ(Open(store_->Unseal("jira-prod", "password", "login")), "correct horse battery staple");

  auto list = store_->List();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->size(), 1u);
  const hsm::SecretInfo& info = (*list)[0];
  EXPECT_EQ(info.connection, "jira-prod");
  EXPECT_EQ(info.name, "password");
  EXPECT_EQ(info.version, 1u);
  EXPECT_EQ(info.state, SecretState::kCurrent);
  EXPECT_EQ(info.kind, hsm::SecretKind::kSealed);
  EXPECT_EQ(info.scheme, "aes-256-gcm");
  EXPECT_EQ(info.created, UnixTime(1764850000));
}

TEST_F(SecretStoreTest, VersionsPendingPromoteRetireDestroy) {
  ASSERT_TRUE(store_->Put("c1", "password", Secret("one")).ok());
  auto v2 = store_->Put("c1", "password", Secret("two"));
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(v2->version, 2u);
  EXPECT_EQ(Open(store_->Unseal("c1", "password", "t")), "two");
  EXPECT_EQ(Open(store_->UnsealVersion("c1", "password", 1, "t")), "one");

  auto v3 = store_->PutPending("c1", "password", Secret("three"));
  ASSERT_TRUE(v3.ok());
  EXPECT_EQ(v3->state, SecretState::kPending);
  EXPECT_EQ(Open(store_->Unseal("c1", "password", "t")), "two");  // pending is not used
  EXPECT_EQ(Open(store_->UnsealVersion("c1", "password", 3, "verify")), "three");

  auto states = [&] {
    std::map<std::uint32_t, SecretState> m;
    auto list = store_->List();
    EXPECT_TRUE(list.ok());
    if (list.ok()) {
      for (const auto& i : *list) m[i.version] = i.state;
    }
    return m;
  };
  EXPECT_EQ(states(), (std::map<std::uint32_t, SecretState>{{1, SecretState::kRetired},
                                                            {2, SecretState::kCurrent},
                                                            {3, SecretState::kPending}}));
  ASSERT_TRUE(store_->Promote("c1", "password", 3).ok());
  EXPECT_EQ(Open(store_->Unseal("c1", "password", "t")), "three");
  EXPECT_EQ(states(), (std::map<std::uint32_t, SecretState>{{1, SecretState::kRetired},
                                                            {2, SecretState::kRetired},
                                                            {3, SecretState::kCurrent}}));

  auto refuse = store_->Destroy("c1", "password", 3);
  ASSERT_FALSE(refuse.ok());
  EXPECT_EQ(refuse.code(), Code::kFailedPrecondition);
  EXPECT_NE(refuse.message().find("current version"), std::string::npos);
  ASSERT_TRUE(store_->Destroy("c1", "password", 1).ok());
  EXPECT_EQ(states(), (std::map<std::uint32_t, SecretState>{{2, SecretState::kRetired},
                                                            {3, SecretState::kCurrent}}));
  EXPECT_EQ(store_->UnsealVersion("c1", "password", 1, "t").status().code(), Code::kNotFound);

  // Back to an older version (rollback), then destroy the current one on purpose.
  ASSERT_TRUE(store_->Promote("c1", "password", 2).ok());
  EXPECT_EQ(Open(store_->Unseal("c1", "password", "t")), "two");
  EXPECT_EQ(states(), (std::map<std::uint32_t, SecretState>{{2, SecretState::kCurrent},
                                                            {3, SecretState::kRetired}}));
  ASSERT_TRUE(store_->Destroy("c1", "password", 2, hsm::DestroyPolicy::kAllowCurrent).ok());
  auto gone = store_->Unseal("c1", "password", "t");
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.status().code(), Code::kNotFound);
  EXPECT_NE(gone.status().message().find("secret set c1 password"), std::string::npos);
  // Version numbers keep counting up.
  auto v4 = store_->Put("c1", "password", Secret("four"));
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->version, 4u);
  EXPECT_EQ(store_->Promote("c1", "password", 9).code(), Code::kNotFound);
}

TEST_F(SecretStoreTest, HighestCurrentWinsAfterAnInterruptedPromotion) {
  OpenRaw();
  ASSERT_TRUE(store_->Put("c", "pat", Secret("old")).ok());
  ASSERT_TRUE(store_->PutPending("c", "pat", Secret("new")).ok());
  // A crash between labelling v2 current and retiring v1 leaves both labelled current.
  RawRelabel("cakewalk:secret:c:pat:v2:pending", "cakewalk:secret:c:pat:v2:current");
  EXPECT_EQ(Open(store_->Unseal("c", "pat", "t")), "new");
  auto list = store_->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].state, SecretState::kRetired);
  EXPECT_EQ((*list)[1].state, SecretState::kCurrent);
  // The next write tidies the labels up.
  ASSERT_TRUE(store_->Promote("c", "pat", 2).ok());
  EXPECT_TRUE(raw_->FindByLabel(raw_session_, "cakewalk:secret:c:pat:v1:retired")->size() == 1);
}

TEST_F(SecretStoreTest, SealedRecordIsBoundToItsNameAndVersion) {
  OpenRaw();
  ASSERT_TRUE(store_->Put("jira-prod", "password", Secret("s3cret-value")).ok());
  const std::string original = RawRecord("cakewalk:secret:jira-prod:password:v1:current");
  ASSERT_FALSE(original.empty());
  auto json = ParseJson(original, "record");
  ASSERT_TRUE(json.ok()) << json.status().ToString();

  // The same sealed bytes under another name (content edited to match the label).
  Json::Value moved = *json;
  moved["name"] = "pat";
  RawCreateRecord("cakewalk:secret:jira-prod:pat:v1:current", WriteJson(moved));
  auto other_name = store_->Unseal("jira-prod", "pat", "t");
  ASSERT_FALSE(other_name.ok());
  EXPECT_EQ(other_name.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(other_name.status().message().find("authentication failed"), std::string::npos)
      << other_name.status().message();

  // ... under another version of the same secret.
  Json::Value bumped = *json;
  bumped["version"] = 5;
  RawCreateRecord("cakewalk:secret:jira-prod:password:v5:current", WriteJson(bumped));
  auto other_version = store_->Unseal("jira-prod", "password", "t");
  ASSERT_FALSE(other_version.ok());
  EXPECT_NE(other_version.status().message().find("authentication failed"), std::string::npos);

  // ... under another connection.
  Json::Value elsewhere = *json;
  elsewhere["connection"] = "jira-test";
  RawCreateRecord("cakewalk:secret:jira-test:password:v1:current", WriteJson(elsewhere));
  EXPECT_NE(
      store_->Unseal("jira-test", "password", "t").status().message().find("authentication failed"),
      std::string::npos);

  // Copied without editing: label and content disagree.
  RawCreateRecord("cakewalk:secret:jira-prod:api-token:v1:current", original);
  auto mismatch = store_->Unseal("jira-prod", "api-token", "t");
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().message().find("inconsistent"), std::string::npos);

  // A flipped ciphertext bit.
  Json::Value flipped = *json;
  auto bytes = Base64Decode(flipped["sealed"].asString());
  ASSERT_TRUE(bytes.ok());
  (*bytes)[14] ^= 0x01;
  flipped["sealed"] = Base64Encode(*bytes);
  flipped["name"] = "oauth-client-secret";
  RawCreateRecord("cakewalk:secret:jira-prod:oauth-client-secret:v1:current", WriteJson(flipped));
  EXPECT_NE(store_->Unseal("jira-prod", "oauth-client-secret", "t")
                .status()
                .message()
                .find("authentication failed"),
            std::string::npos);

  // The genuine one still opens.
  EXPECT_EQ(Open(store_->UnsealVersion("jira-prod", "password", 1, "t")), "s3cret-value");
}

TEST_F(SecretStoreTest, EverySealUsesAFreshIv) {
  OpenRaw();
  std::set<std::string> ivs;
  std::set<std::string> ciphertexts;
  for (int i = 1; i <= 12; ++i) {
    ASSERT_TRUE(store_->Put("c", "password", Secret("same value every time")).ok());
    const std::string label = "cakewalk:secret:c:password:v" + std::to_string(i) + ":current";
    auto json = ParseJson(RawRecord(label), "record");
    ASSERT_TRUE(json.ok());
    auto sealed = Base64Decode((*json)["sealed"].asString());
    ASSERT_TRUE(sealed.ok());
    ASSERT_EQ(sealed->size(), 12u + 21u + 16u);
    ivs.insert(HexEncode(std::span(sealed->data(), 12)));
    ciphertexts.insert(HexEncode(std::span(sealed->data() + 12, sealed->size() - 12)));
  }
  EXPECT_EQ(ivs.size(), 12u);
  EXPECT_EQ(ciphertexts.size(), 12u);
}

TEST_F(SecretStoreTest, SealingKeyIsGeneratedInTheTokenAndNeverExtractable) {
  OpenRaw();
  ASSERT_TRUE(store_->Put("c", "password", Secret("x")).ok());
  auto keys = raw_->FindByLabel(raw_session_, "cakewalk:seal-key", CKO_SECRET_KEY);
  ASSERT_TRUE(keys.ok());
  ASSERT_EQ(keys->size(), 1u);
  CK_ATTRIBUTE value{CKA_VALUE, nullptr, 0};
  EXPECT_EQ(raw_->f()->C_GetAttributeValue(raw_session_, (*keys)[0], &value, 1),
            CKR_ATTRIBUTE_SENSITIVE);
  CK_BBOOL sensitive = 0, extractable = 1, always = 0, never = 0, local = 0, modifiable = 1;
  CK_ATTRIBUTE flags[] = {{CKA_SENSITIVE, &sensitive, 1},
                          {CKA_EXTRACTABLE, &extractable, 1},
                          {CKA_ALWAYS_SENSITIVE, &always, 1},
                          {CKA_NEVER_EXTRACTABLE, &never, 1},
                          {CKA_LOCAL, &local, 1},
                          {CKA_MODIFIABLE, &modifiable, 1}};
  ASSERT_EQ(raw_->f()->C_GetAttributeValue(raw_session_, (*keys)[0], flags, 6), CKR_OK);
  EXPECT_TRUE(sensitive && always && never && local);
  EXPECT_FALSE(extractable);
  EXPECT_FALSE(modifiable);
  // A second secret reuses the key.
  ASSERT_TRUE(store_->Put("c", "pat", Secret("y")).ok());
  EXPECT_EQ(raw_->FindByLabel(raw_session_, "cakewalk:seal-key", CKO_SECRET_KEY)->size(), 1u);
}

TEST_F(SecretStoreTest, RefusesBadNamesAndValuesWithoutTouchingTheToken) {
  OpenRaw();
  ASSERT_TRUE(store_->Put("c", "password", Secret("x")).ok());
  auto before = raw_->CountObjects(raw_session_);
  ASSERT_TRUE(before.ok());
  struct Case {
    std::string connection, name;
    std::size_t size;
    std::string expected;
  };
  for (const Case& c : std::vector<Case>{{"bad name", "password", 3, "position 4"},
                                         {"a:b", "password", 3, "outside"},
                                         {std::string(65, 'c'), "password", 3, "1 to 64"},
                                         {"", "password", 3, "1 to 64"},
                                         {"c", "pass/word", 3, "secret name"},
                                         {"c", "totp", 3, "reserved"},
                                         {"c", "password", 0, "1 byte to 64 KiB"},
                                         {"c", "password", 64 * 1024 + 1, "1 byte to 64 KiB"}}) {
    auto r = store_->Put(c.connection, c.name, Secret(std::string(c.size, 'v')));
    ASSERT_FALSE(r.ok()) << c.connection << "/" << c.name;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.expected), std::string::npos) << r.status().message();
  }
  EXPECT_EQ(store_->Unseal("c", "password", "").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(store_->Unseal("c", "password", "bad\npurpose").status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(*raw_->CountObjects(raw_session_), *before);
}

TEST_F(SecretStoreTest, AuditsEveryStoreAndUseWithoutValues) {
  ASSERT_TRUE(store_->Put("jira-prod", "password", Secret("zebra-value")).ok());
  ASSERT_TRUE(store_->Unseal("jira-prod", "password", "jira login").ok());
  ASSERT_TRUE(store_->Unseal("jira-prod", "password", "verify connection").ok());
  auto stored = audit_.WithId(event::kSecretStored);
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].Field("CONNECTION"), "jira-prod");
  EXPECT_EQ(stored[0].Field("SECRET_NAME"), "password");
  EXPECT_EQ(stored[0].Field("SECRET_VERSION"), "1");
  EXPECT_EQ(stored[0].Field("ACTION"), "stored");
  auto used = audit_.WithId(event::kSecretUsed);
  ASSERT_EQ(used.size(), 2u);
  EXPECT_EQ(used[0].Field("PURPOSE"), "jira login");
  EXPECT_EQ(used[1].Field("PURPOSE"), "verify connection");
  EXPECT_EQ(used[1].Field("SECRET_VERSION"), "1");
  EXPECT_EQ(audit_.Text().find("zebra-value"), std::string::npos);
  // A failed use is not audited as a use.
  ASSERT_FALSE(store_->Unseal("jira-prod", "pat", "x").ok());
  EXPECT_EQ(audit_.WithId(event::kSecretUsed).size(), 2u);
  ASSERT_TRUE(store_->Destroy("jira-prod", "password", 1, hsm::DestroyPolicy::kAllowCurrent).ok());
  EXPECT_EQ(audit_.WithId(event::kSecretStored).back().Field("ACTION"), "destroyed");
}

TEST_F(SecretStoreTest, RandomComesFromTheToken) {
  auto a = store_->Random(32);
  auto b = store_->Random(32);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 32u);
  EXPECT_FALSE(a->ConstantTimeEquals(*b));
  EXPECT_EQ(store_->Random(0).status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace cakewalk::testing
