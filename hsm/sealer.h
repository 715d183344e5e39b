// Sealing secret strings under a key that never leaves the token (internal to hsm/).
//
// A Sealer encrypts and authenticates plaintext inside the token, bound to an AAD string, and
// returns a self-contained record. The scheme name is stored beside each record, so constructions
// can be added by capability without touching SecretStore:
//   - "aes-256-gcm" (AesGcmSealer): CKM_AES_GCM, 96-bit IV from C_GenerateRandom, 128-bit tag;
//     record = IV || ciphertext || tag.
//   - later, for tpm2-pkcs11 (no GCM): AES-CBC-PAD + HMAC-SHA256 encrypt-then-MAC under two
//     token keys, chosen when the token lacks CKM_AES_GCM.
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

class Sealer {
 public:
  virtual ~Sealer() = default;
  virtual std::string_view scheme() const noexcept = 0;
  // Seals under the current sealing key, creating it in the token on first use.
  virtual Result<SealedRecord> Seal(Session& session, const SecretBytes& plaintext,
                                    std::string_view aad) = 0;
  // Any failure to authenticate gives kFailedPrecondition "authentication failed ..." (SoftHSM
  // reports a bad tag as CKR_GENERAL_ERROR); a lost session gives kUnavailable.
  virtual Result<SecretBytes> Unseal(Session& session, std::string_view key_id,
                                     std::span<const std::uint8_t> record,
                                     std::string_view aad) = 0;
};

// The sealer this token supports, or kFailedPrecondition naming what is missing. Used only
// inside TokenCore::WithSession (its caches rely on the token mutex).
Result<std::unique_ptr<Sealer>> MakeSealer(const Capabilities& capabilities);

}  // namespace cakewalk::hsm::internal
