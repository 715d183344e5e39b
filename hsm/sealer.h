// Sealing secret strings under a key that never leaves the token (internal to hsm/).
//
// A Sealer encrypts and authenticates plaintext inside the token, bound to an AAD string, and
// returns a self-contained record. The scheme name is stored beside each record, so a token
// opens every record whose scheme it supports, whichever scheme it writes new records with.
//
//   "aes-256-gcm" (AesGcmSealer), chosen when the token offers CKM_AES_GCM and CKM_AES_KEY_GEN:
//     key "cakewalk:seal-key" (AES-256, generated in the token, {CKM_AES_GCM} only); 96-bit IV
//     from C_GenerateRandom, 128-bit tag; record = IV(12) || ciphertext || tag(16).
//
//   "aes-256-cbc-hmac-sha256" (CbcHmacSealer), chosen when the token lacks AES-GCM but offers
//     CKM_AES_CBC and CKM_SHA256_HMAC (TPM 2.0 has no GCM, so tpm2-pkcs11 lands here).
//     Encrypt-then-MAC under two independent keys that share one random CKA_ID (records name the
//     pair by it): "cakewalk:seal-key:cbc" (AES-256) and "cakewalk:seal-key:mac" (32-byte HMAC
//     key). Both are generated inside the token — C_GenerateKey, or where the token refuses that,
//     its store's own key generation (key_provisioner.h; in a TPM: TPM2_Create, so the keys are
//     always sensitive, never extractable, local).
//       IV   = 16 bytes from C_GenerateRandom (unpredictable, as CBC needs)
//       C    = AES-256-CBC(enc key, IV, plaintext || PKCS#7 padding)         (C_Encrypt)
//       T    = HMAC-SHA256(mac key, M),                                      (C_Sign)
//              M = scheme || 0x00 || u32be(|AAD|) || AAD || IV || SHA-256(C)
//       record = IV(16) || C || T(32)
//     Opening recomputes T in the token over the stored IV and C and compares it with
//     CRYPTO_memcmp (constant time) before anything is decrypted, so a modified record, another
//     AAD (secret name or version) or another key pair is refused without a decryption — no
//     padding oracle. The scheme name inside M binds the construction and its version; the
//     length prefix keeps AAD and IV apart. The two keys are never used for anything else.
//     C enters the MAC through its SHA-256 (computed on the host; C is public): tpm2-pkcs11 1.9
//     MACs at most 4096 bytes (CKR_BUFFER_TOO_SMALL beyond, one-shot or multi-part), and values
//     go up to 64 KiB. A forgery then needs the MAC key or a SHA-256 collision.
//     The padding is added and removed on the host (in SecretBytes) with plain CKM_AES_CBC:
//     tpm2-pkcs11 1.9's CKM_AES_CBC_PAD cannot decrypt more than 32 bytes ("Internal buffer too
//     small", CKR_GENERAL_ERROR) and leaves the operation active afterwards.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/secret.h"
#include "base/status.h"
#include "hsm/session.h"

namespace cakewalk::hsm::internal {

struct SealedRecord {
  std::string key_id;               // hex CKA_ID of the sealing key
  std::vector<std::uint8_t> bytes;  // scheme-specific record
};

inline constexpr std::string_view kAesGcmScheme = "aes-256-gcm";
inline constexpr std::string_view kCbcHmacScheme = "aes-256-cbc-hmac-sha256";

class Sealer {
 public:
  virtual ~Sealer() = default;
  virtual std::string_view scheme() const noexcept = 0;
  // Finds or creates the current sealing key(s). Call it before finding other objects in the same
  // session run: creating keys out of band (key_provisioner.h) opens a new session, which makes
  // every handle found before invalid.
  virtual Status Prepare(Session& session) = 0;
  // Seals under the current sealing key, creating it in the token on first use.
  virtual Result<SealedRecord> Seal(Session& session, const SecretBytes& plaintext,
                                    std::string_view aad) = 0;
  // Any failure to authenticate gives kFailedPrecondition "authentication failed ..." (SoftHSM
  // reports a bad tag as CKR_GENERAL_ERROR); a lost session gives kUnavailable.
  virtual Result<SecretBytes> Unseal(Session& session, std::string_view key_id,
                                     std::span<const std::uint8_t> record,
                                     std::string_view aad) = 0;
};

// The sealer new records are written with on this token (AES-GCM when it has it, else
// CBC + HMAC), or kFailedPrecondition naming what is missing. Used only inside
// TokenCore::WithSession (its caches rely on the token mutex).
Result<std::unique_ptr<Sealer>> MakeSealer(const Capabilities& capabilities);
// The sealer for records of `scheme`, or kFailedPrecondition when the token cannot open them.
Result<std::unique_ptr<Sealer>> MakeSealerFor(std::string_view scheme,
                                              const Capabilities& capabilities);

}  // namespace cakewalk::hsm::internal
