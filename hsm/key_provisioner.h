// Adding secret keys to tokens that refuse to create them through PKCS#11 (internal to hsm/).
//
// SoftHSM and HSMs create secret keys with C_CreateObject (an imported TOTP seed) and
// C_GenerateKey (the sealing keys). tpm2-pkcs11 1.9 refuses both: C_CreateObject of a secret key
// fails with CKR_ATTRIBUTE_VALUE_INVALID, C_GenerateKey with CKR_FUNCTION_NOT_SUPPORTED (although
// C_GetMechanismList lists CKM_AES_KEY_GEN). Its store takes such keys only out of band, from
// its own tool. hsm/ therefore asks the token first and falls back to a KeyProvisioner only when
// the token has refused (behaviour, never the manufacturer string):
//
//   C_CreateObject / C_GenerateKey -> CKR_OK                       : done
//   -> CKR_ATTRIBUTE_VALUE_INVALID, CKR_TEMPLATE_INCONSISTENT,
//      CKR_FUNCTION_NOT_SUPPORTED, CKR_MECHANISM_INVALID           : KeyProvisioner, then
//      Session::ChangeOutOfBand re-reads the token (module re-initialised) and the key must now
//      be visible under the CKA_ID the provisioner was given — otherwise the provisioner wrote
//      to a store that is not this token's, and the operation fails.
//
// The one provisioner is the tpm2-pkcs11 store's (hsm/tpm2_provisioner.h). It is available when
// TPM2_PKCS11_STORE names the store, i.e. when the process is configured for tpm2-pkcs11.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "base/secret.h"
#include "base/status.h"
#include "hsm/cryptoki.h"
#include "hsm/token.h"
#include "hsm/totp.h"

namespace cakewalk::hsm::internal {

// Keys generated inside the token by a provisioner.
enum class GeneratedKey {
  kAes256,      // AES-256 for CKM_AES_CBC
  kHmacSha256,  // a 32-byte HMAC key for CKM_SHA256_HMAC
};

// The token a provisioner writes to, and the user PIN it needs to wrap new keys for it.
struct ProvisionTarget {
  const TokenInfo& token;
  const SecretBytes& pin;
};

class KeyProvisioner {
 public:
  virtual ~KeyProvisioner() = default;
  // "the tpm2-pkcs11 store /var/lib/cakewalk-agent/tpm2-pkcs11", for messages.
  virtual std::string Describe() const = 0;
  // Imports `key` as an HMAC key pinned to `algorithm` (sign only), labelled `label`, with
  // CKA_ID `id`. The key value is never written to a file system or put on a command line.
  virtual Status ImportHmac(const ProvisionTarget& target, TotpAlgorithm algorithm,
                            const SecretBytes& key, std::string_view label,
                            std::span<const std::uint8_t> id) = 0;
  // Generates a key inside the token (it never exists outside it).
  virtual Status Generate(const ProvisionTarget& target, GeneratedKey kind, std::string_view label,
                          std::span<const std::uint8_t> id) = 0;
};

// The provisioner this process is configured for, or kFailedPrecondition saying what to
// configure (TPM2_PKCS11_STORE). Never null on success.
Result<std::shared_ptr<KeyProvisioner>> DefaultKeyProvisioner();

// True when `rv`, returned by C_CreateObject or C_GenerateKey for a secret key, means "this
// token does not create secret keys this way" rather than "this template is wrong".
bool RefusesSecretKeyCreation(CK_RV rv) noexcept;

}  // namespace cakewalk::hsm::internal
