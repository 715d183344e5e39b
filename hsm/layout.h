// How secrets are laid out in the token (internal to hsm/; docs/token-layout.md is the operator's
// version of this comment). The token is the single source of truth: there is no other index.
//
// Every secret version is one RECORD, a CKO_DATA object:
//   CKA_TOKEN=TRUE, CKA_PRIVATE=TRUE (readable only after login), CKA_MODIFIABLE=TRUE (the label
//   carries the state), CKA_APPLICATION="cakewalk-agent",
//   CKA_LABEL="cakewalk:secret:<connection>:<name>:v<version>:<state>",
//   CKA_VALUE=compact JSON (never a plaintext secret):
//     {"format":1,"kind":"sealed","connection":"jira-prod","name":"password","version":3,
//      "created":"2026-12-04T17:29:08Z","scheme":"aes-256-gcm","key":"<hex CKA_ID of the sealing
//      key>","sealed":"<base64 of IV(12) || ciphertext || tag(16)>"}
//     {"format":1,"kind":"totp","connection":"jira-prod","name":"totp","version":2,
//      "created":"...","algorithm":"SHA1","digits":6,"period":30,"seed":"<hex CKA_ID of the
//      seed key>"}
//   (Data objects have no CKA_ID in PKCS#11, so the link to the seed key lives in the JSON.)
//   <state> is "pending" (staged, not used yet), "current" (in use) or "retired" (superseded,
//   kept until destroyed after a grace period). State changes are one C_SetAttributeValue of the
//   label, so each is atomic. If two versions are labelled current (a crash between promoting one
//   and retiring the other), the highest version wins and the next write retires the rest.
//   The JSON repeats connection, name and version; a record whose label and content disagree
//   (relabelled by hand) is refused.
//
// TOTP SEED KEY of a "totp" record, a CKO_SECRET_KEY:
//   CKK_GENERIC_SECRET, CKA_LABEL="cakewalk:seed:<connection>:totp:v<version>", CKA_ID=16
//   random bytes (named by the record's "seed"), CKA_TOKEN/PRIVATE/SENSITIVE=TRUE,
//   CKA_EXTRACTABLE=FALSE, CKA_SIGN=TRUE, CKA_VERIFY, ENCRYPT, DECRYPT, WRAP, UNWRAP, DERIVE=FALSE,
//   CKA_MODIFIABLE=FALSE (rotation = new version + destroy old), CKA_ALLOWED_MECHANISMS={the one
//   CKM_SHA*_HMAC of its algorithm}. CKA_VALUE = the seed, zero-padded up to the minimum key size
//   the token declares for that HMAC mechanism (C_GetMechanismInfo; SoftHSM: the digest length)
//   when shorter and that minimum is within the hash block — HMAC pads short keys with zeros to the
//   block size anyway (RFC 2104 §2), so the MAC is unchanged. Seeds at least that long are stored
//   unchanged.
//   Tokens that refuse C_CreateObject for secret keys (tpm2-pkcs11) get the seed through their
//   store's import path instead (key_provisioner.h, secret_store.cc ImportSeedOutOfBand): a typed
//   key (CKK_SHA_1_HMAC / CKK_SHA256_HMAC / CKK_SHA512_HMAC), same label and CKA_ID, the seed as it
//   is (hashed first when longer than the hash block, as HMAC does).
// SEALING KEY, a CKO_SECRET_KEY generated in the token (CKM_AES_KEY_GEN, 256 bits):
//   CKA_LABEL="cakewalk:seal-key", CKA_ID=16 random bytes (records name it by this id),
//   CKA_TOKEN/PRIVATE/SENSITIVE=TRUE, CKA_EXTRACTABLE=FALSE, CKA_ENCRYPT/DECRYPT=TRUE, SIGN,
//   VERIFY, WRAP, UNWRAP, DERIVE=FALSE, CKA_MODIFIABLE=FALSE,
//   CKA_ALLOWED_MECHANISMS={CKM_AES_GCM}.
//   AAD of every sealed record: "cakewalk:v1:<connection>:<name>:<version>", so a record copied
//   to another secret or version fails authentication.
//   Tokens without AES-GCM (tpm2-pkcs11) seal with "aes-256-cbc-hmac-sha256" instead (sealer.h):
//   "cakewalk:seal-key:cbc" (AES-256, {CKM_AES_CBC}) and "cakewalk:seal-key:mac" (32-byte HMAC key,
//   {CKM_SHA256_HMAC}), generated in the token, sharing one CKA_ID that records name in "key";
//   "sealed" is then base64 of IV(16) || ciphertext || HMAC tag(32).
//
// VERSION COUNTER of a secret, a CKO_DATA object (one per connection and name):
//   CKA_TOKEN=TRUE, CKA_PRIVATE=TRUE, CKA_MODIFIABLE=TRUE (as records), CKA_APPLICATION=
//   "cakewalk-agent", CKA_LABEL="cakewalk:last-version:<connection>:<name>",
//   CKA_VALUE={"format":1,"kind":"last-version","connection":"jira-prod","name":"password",
//              "last":7}
//   The highest version number ever handed out for that secret. A new version is
//   max(last, highest record) + 1, and the counter is raised BEFORE the record is created, so a
//   number is never handed out twice — not even after the highest version was destroyed. That
//   matters because the version is bound into the AAD: a reused number would let an old,
//   backed-up record of that number authenticate again. The counter is never destroyed with the
//   secret's versions. Raising it creates the new counter object first and then destroys the
//   old one (no C_SetAttributeValue on CKA_VALUE, which not every token allows); a crash in
//   between leaves two, and the highest "last" wins. Tokens written before the counter existed
//   start counting from their highest record.
//
// Names: connection and secret names are 1-64 characters from [A-Za-z0-9._-] (so ':' can
// separate label fields).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace cakewalk::hsm::internal {

inline constexpr std::string_view kApplication = "cakewalk-agent";
inline constexpr std::string_view kRecordPrefix = "cakewalk:secret:";
inline constexpr std::string_view kSeedPrefix = "cakewalk:seed:";
inline constexpr std::string_view kSealKeyLabel = "cakewalk:seal-key";
inline constexpr std::string_view kCounterPrefix = "cakewalk:last-version:";
inline constexpr std::size_t kObjectIdBytes = 16;

enum class RecordState { kPending, kCurrent, kRetired };

std::string_view RecordStateName(RecordState s) noexcept;

std::string RecordLabel(std::string_view connection, std::string_view name, std::uint32_t version,
                        RecordState state);
std::string SeedLabel(std::string_view connection, std::string_view name, std::uint32_t version);
// The version counter's label.
std::string CounterLabel(std::string_view connection, std::string_view name);

struct RecordLabelParts {
  std::string connection;
  std::string name;
  std::uint32_t version = 0;
  RecordState state = RecordState::kPending;
};
// nullopt when `label` is not a record label of this layout.
std::optional<RecordLabelParts> ParseRecordLabel(std::string_view label);

// Lower-case hex (as HexEncode writes it) to bytes; nullopt when malformed.
std::optional<std::vector<std::uint8_t>> ParseHex(std::string_view hex);

// AAD of a sealed record.
std::string SealAad(std::string_view connection, std::string_view name, std::uint32_t version);

// [A-Za-z0-9._-]{1,64}; `what` names the field in the error ("connection name").
Status ValidateName(std::string_view what, std::string_view value);

}  // namespace cakewalk::hsm::internal
