// Sealed secrets on a TPM: tpm2-pkcs11 has no AES-GCM, so the store seals with AES-256-CBC +
// HMAC-SHA256 (encrypt-then-MAC) under two keys generated inside the TPM. Round trips, the record
// format, tamper detection, name/version binding, versioning, and the keys' protection.
#include <gtest/gtest.h>

#include <set>

#include "base/encoding.h"
#include "base/json.h"
#include "tests/tpm/fixture.h"

namespace cakewalk::testing {
namespace {

using hsm::SecretState;

SecretBytes Secret(std::string_view s) { return SecretBytes::CopyOf(s); }

std::string Open(const Result<SecretBytes>& r) {
  if (!r.ok()) return "<error: " + r.status().ToString() + ">";
  return std::string(r->RevealString(SecretAccess::Grant()));
}

class SealTpmTest : public TpmFixture {
 protected:
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

  void RawCreateRecord(const std::string& label, const std::string& value) {
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
    ASSERT_EQ(raw_->f()->C_CreateObject(raw_session_, t, 7, &h), CKR_OK);
  }

  // The record's sealed bytes, changed by `edit`, stored as `name` (content matching the label).
  void PlantEdited(const Json::Value& record, const std::string& name,
                   const std::function<void(std::vector<std::uint8_t>&)>& edit) {
    Json::Value copy = record;
    auto bytes = Base64Decode(copy["sealed"].asString());
    ASSERT_TRUE(bytes.ok());
    edit(*bytes);
    copy["sealed"] = Base64Encode(*bytes);
    copy["name"] = name;
    RawCreateRecord("cakewalk:secret:" + copy["connection"].asString() + ":" + name + ":v" +
                        std::to_string(copy["version"].asUInt()) + ":current",
                    WriteJson(copy));
  }

  std::vector<CK_OBJECT_HANDLE> Keys(const std::string& label) {
    auto keys = raw_->FindByLabel(raw_session_, label, CKO_SECRET_KEY);
    EXPECT_TRUE(keys.ok());
    return keys.ok() ? *keys : std::vector<CK_OBJECT_HANDLE>{};
  }
};

TEST_F(SealTpmTest, TheTokenHasNoGcmSoTheStoreSealsWithCbcAndHmac) {
  const hsm::Capabilities& caps = token_->capabilities();
  EXPECT_FALSE(caps.Has(hsm::Mechanism::kAesGcm)) << caps.Summary();
  EXPECT_TRUE(caps.Has(hsm::Mechanism::kAesCbc)) << caps.Summary();
  EXPECT_TRUE(caps.Has(hsm::Mechanism::kSha256Hmac)) << caps.Summary();

  clock_.SetUnix(1764850000);
  auto put = store_->Put("jira-prod", "password", Secret("correct horse battery staple"));
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->scheme, "aes-256-cbc-hmac-sha256");
  EXPECT_EQ(put->version, 1u);
  EXPECT_EQ(Open(store_->Unseal("jira-prod", "password", "login")), "correct horse battery staple");
  auto list = store_->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].scheme, "aes-256-cbc-hmac-sha256");

  // The record: IV(16) || CBC ciphertext (whole blocks) || tag(32), and the scheme named.
  ASSERT_NO_FATAL_FAILURE(OpenRaw());
  auto json = ParseJson(RawRecord("cakewalk:secret:jira-prod:password:v1:current"), "record");
  ASSERT_TRUE(json.ok()) << json.status().ToString();
  EXPECT_EQ((*json)["scheme"].asString(), "aes-256-cbc-hmac-sha256");
  auto sealed = Base64Decode((*json)["sealed"].asString());
  ASSERT_TRUE(sealed.ok());
  EXPECT_EQ(sealed->size(), 16u + 32u + 32u);  // 28 bytes of plaintext pad to two blocks
  const std::string raw_record = RawRecord("cakewalk:secret:jira-prod:password:v1:current");
  EXPECT_EQ(raw_record.find("correct horse"), std::string::npos);

  // Survives a restart of everything but the TPM and its store.
  ASSERT_NO_FATAL_FAILURE(ReopenToken());
  EXPECT_EQ(Open(store_->Unseal("jira-prod", "password", "after restart")),
            "correct horse battery staple");
}

TEST_F(SealTpmTest, ValuesOfEverySizeRoundTrip) {
  // Block boundaries of CBC padding, and the largest value the store takes (64 KiB).
  for (std::size_t size : {1u, 15u, 16u, 17u, 31u, 32u, 33u, 1000u, 4096u, 65536u}) {
    std::string value(size, '\0');
    for (std::size_t i = 0; i < size; ++i) value[i] = static_cast<char>('a' + (i * 7 + size) % 26);
    const std::string name = "s" + std::to_string(size);
    auto put = store_->Put("c", name, Secret(value));
    ASSERT_TRUE(put.ok()) << size << ": " << put.status().ToString();
    EXPECT_EQ(Open(store_->Unseal("c", name, "t")), value) << size;
  }
}

TEST_F(SealTpmTest, SealingKeysAreGeneratedInsideTheTpmAndCannotLeave) {
  ASSERT_TRUE(store_->Put("c", "password", Secret("x")).ok());
  ASSERT_NO_FATAL_FAILURE(OpenRaw());
  const auto enc = Keys("cakewalk:seal-key:cbc");
  const auto mac = Keys("cakewalk:seal-key:mac");
  ASSERT_EQ(enc.size(), 1u);
  ASSERT_EQ(mac.size(), 1u);
  EXPECT_TRUE(Keys("cakewalk:seal-key").empty()) << "no AES-GCM key on a token without GCM";
  CK_FUNCTION_LIST* f = raw_->f();
  for (CK_OBJECT_HANDLE key : {enc[0], mac[0]}) {
    CK_BBOOL b[5] = {};
    CK_ATTRIBUTE attrs[] = {{CKA_LOCAL, &b[0], 1},
                            {CKA_ALWAYS_SENSITIVE, &b[1], 1},
                            {CKA_NEVER_EXTRACTABLE, &b[2], 1},
                            {CKA_EXTRACTABLE, &b[3], 1},
                            {CKA_PRIVATE, &b[4], 1}};
    ASSERT_EQ(f->C_GetAttributeValue(raw_session_, key, attrs, 5), CKR_OK);
    EXPECT_TRUE(b[0] && b[1] && b[2]) << "generated in the TPM: local, always sensitive, never "
                                         "extractable";
    EXPECT_FALSE(b[3]);
    EXPECT_TRUE(b[4]);
    std::vector<std::string> notes;
    Status st = CheckSecretKeyNotExportable(f, raw_session_, key, &notes);
    EXPECT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(notes, (std::vector<std::string>{"CKA_EXTRACTABLE can be set by the PIN holder",
                                               "CKA_SENSITIVE can be cleared by the PIN holder",
                                               "C_WrapKey is not supported"}));
  }
  // One CKA_ID names the pair, and the record names it.
  auto id_of = [&](CK_OBJECT_HANDLE h) {
    std::uint8_t id[64];
    CK_ATTRIBUTE a{CKA_ID, id, sizeof id};
    EXPECT_EQ(f->C_GetAttributeValue(raw_session_, h, &a, 1), CKR_OK);
    return HexEncode(std::span(id, a.ulValueLen));
  };
  EXPECT_EQ(id_of(enc[0]), id_of(mac[0]));
  auto json = ParseJson(RawRecord("cakewalk:secret:c:password:v1:current"), "record");
  ASSERT_TRUE(json.ok());
  EXPECT_EQ((*json)["key"].asString(), id_of(enc[0]));

  // Later secrets reuse the pair: no new keys.
  CloseRaw();
  ASSERT_TRUE(store_->Put("c", "pat", Secret("y")).ok());
  ASSERT_NO_FATAL_FAILURE(OpenRaw());
  EXPECT_EQ(Keys("cakewalk:seal-key:cbc").size(), 1u);
  EXPECT_EQ(Keys("cakewalk:seal-key:mac").size(), 1u);
}

TEST_F(SealTpmTest, AnyModifiedByteFailsAuthenticationBeforeDecryption) {
  ASSERT_TRUE(store_->Put("jira-prod", "password", Secret("s3cret-value-of-some-length")).ok());
  ASSERT_NO_FATAL_FAILURE(OpenRaw());
  auto json = ParseJson(RawRecord("cakewalk:secret:jira-prod:password:v1:current"), "record");
  ASSERT_TRUE(json.ok());
  const std::size_t size = Base64Decode((*json)["sealed"].asString())->size();
  ASSERT_EQ(size, 16u + 32u + 32u);
  struct Edit {
    std::string name;
    std::function<void(std::vector<std::uint8_t>&)> edit;
  };
  const Edit edits[] = {
      {"iv-byte", [](auto& b) { b[3] ^= 0x01; }},
      {"ciphertext-first-block", [](auto& b) { b[16] ^= 0x80; }},
      {"ciphertext-last-block", [](auto& b) { b[47] ^= 0x01; }},  // the padding block
      {"tag-byte", [&](auto& b) { b[size - 1] ^= 0x01; }},
      {"tag-cut", [](auto& b) { b.resize(b.size() - 32); }},
      {"block-dropped", [](auto& b) { b.erase(b.begin() + 16, b.begin() + 32); }},
      {"not-whole-blocks", [](auto& b) { b.erase(b.begin() + 20); }},
      {"truncated", [](auto& b) { b.resize(40); }},
      {"iv-of-another-record", [](auto& b) { std::fill(b.begin(), b.begin() + 16, 0); }},
  };
  for (const Edit& e : edits) {
    SCOPED_TRACE(e.name);
    ASSERT_NO_FATAL_FAILURE(PlantEdited(*json, e.name, e.edit));
    auto opened = store_->Unseal("jira-prod", e.name, "t");
    ASSERT_FALSE(opened.ok());
    EXPECT_EQ(opened.status().code(), Code::kFailedPrecondition);
    EXPECT_NE(opened.status().message().find("authentication failed"), std::string::npos)
        << opened.status().message();
  }
  // The genuine record still opens.
  EXPECT_EQ(Open(store_->Unseal("jira-prod", "password", "t")), "s3cret-value-of-some-length");
}

TEST_F(SealTpmTest, RecordsAreBoundToConnectionNameAndVersion) {
  ASSERT_TRUE(store_->Put("jira-prod", "password", Secret("s3cret")).ok());
  ASSERT_NO_FATAL_FAILURE(OpenRaw());
  const std::string original = RawRecord("cakewalk:secret:jira-prod:password:v1:current");
  auto json = ParseJson(original, "record");
  ASSERT_TRUE(json.ok());

  Json::Value moved = *json;
  moved["name"] = "pat";
  RawCreateRecord("cakewalk:secret:jira-prod:pat:v1:current", WriteJson(moved));
  EXPECT_NE(
      store_->Unseal("jira-prod", "pat", "t").status().message().find("authentication failed"),
      std::string::npos);

  Json::Value bumped = *json;
  bumped["version"] = 5;
  RawCreateRecord("cakewalk:secret:jira-prod:password:v5:current", WriteJson(bumped));
  EXPECT_NE(
      store_->Unseal("jira-prod", "password", "t").status().message().find("authentication failed"),
      std::string::npos);

  Json::Value elsewhere = *json;
  elsewhere["connection"] = "jira-test";
  RawCreateRecord("cakewalk:secret:jira-test:password:v1:current", WriteJson(elsewhere));
  EXPECT_NE(
      store_->Unseal("jira-test", "password", "t").status().message().find("authentication failed"),
      std::string::npos);

  // Claiming the other scheme does not help: the GCM construction is not even available here.
  Json::Value gcm = *json;
  gcm["scheme"] = "aes-256-gcm";
  gcm["name"] = "api-token";
  RawCreateRecord("cakewalk:secret:jira-prod:api-token:v1:current", WriteJson(gcm));
  auto wrong_scheme = store_->Unseal("jira-prod", "api-token", "t");
  ASSERT_FALSE(wrong_scheme.ok());
  EXPECT_NE(wrong_scheme.status().message().find("sealed with 'aes-256-gcm'"), std::string::npos)
      << wrong_scheme.status().message();

  EXPECT_EQ(Open(store_->UnsealVersion("jira-prod", "password", 1, "t")), "s3cret");
}

TEST_F(SealTpmTest, VersioningAndFreshIvs) {
  ASSERT_TRUE(store_->Put("c1", "password", Secret("one")).ok());
  ASSERT_TRUE(store_->Put("c1", "password", Secret("two")).ok());
  auto v3 = store_->PutPending("c1", "password", Secret("three"));
  ASSERT_TRUE(v3.ok());
  EXPECT_EQ(v3->state, SecretState::kPending);
  EXPECT_EQ(Open(store_->Unseal("c1", "password", "t")), "two");
  EXPECT_EQ(Open(store_->UnsealVersion("c1", "password", 1, "t")), "one");
  EXPECT_EQ(Open(store_->UnsealVersion("c1", "password", 3, "verify")), "three");
  ASSERT_TRUE(store_->Promote("c1", "password", 3).ok());
  EXPECT_EQ(Open(store_->Unseal("c1", "password", "t")), "three");
  ASSERT_TRUE(store_->Destroy("c1", "password", 1).ok());
  EXPECT_EQ(store_->UnsealVersion("c1", "password", 1, "t").status().code(), Code::kNotFound);
  auto list = store_->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].state, SecretState::kRetired);
  EXPECT_EQ((*list)[1].state, SecretState::kCurrent);

  // The same value sealed again and again: a fresh IV and ciphertext every time.
  ASSERT_NO_FATAL_FAILURE(OpenRaw());
  std::set<std::string> ivs, ciphertexts;
  for (int i = 1; i <= 8; ++i) {
    ASSERT_TRUE(store_->Put("c2", "password", Secret("same value every time")).ok());
    auto json = ParseJson(
        RawRecord("cakewalk:secret:c2:password:v" + std::to_string(i) + ":current"), "record");
    ASSERT_TRUE(json.ok());
    auto sealed = Base64Decode((*json)["sealed"].asString());
    ASSERT_TRUE(sealed.ok());
    ASSERT_EQ(sealed->size(), 16u + 32u + 32u);
    ivs.insert(HexEncode(std::span(sealed->data(), 16)));
    ciphertexts.insert(HexEncode(std::span(sealed->data() + 16, 32)));
  }
  EXPECT_EQ(ivs.size(), 8u);
  EXPECT_EQ(ciphertexts.size(), 8u);
}

}  // namespace
}  // namespace cakewalk::testing
