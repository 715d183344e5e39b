// A logged-in PKCS#11 token, selected by an RFC 7512 URI.
//
//   CW_ASSIGN_OR_RETURN(auto token, hsm::Token::Open(*module, "pkcs11:token=cakewalk", pin));
//   token->capabilities().Require(hsm::Mechanism::kAesGcm, "sealing passwords");
//
// Selection: p11-kit's own URI parser and matcher (p11_kit_uri_parse, p11_kit_uri_match_*) over
// the slots that hold an initialised token. Slot ids change whenever a token is initialised, so
// select by token attributes (token=, serial=, manufacturer=, model=), never by slot-id. Errors
// say when nothing matches (listing the tokens that exist) and when several match.
//
// Session: one long-lived read-write session, logged in once, used behind a mutex by every
// thread (SecretStore, KeyPair). When the token reports the session lost
// (CKR_SESSION_HANDLE_INVALID, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, ...), the next use
// reopens it, logs in again if needed and re-finds object handles, transparently.
//
// The PIN: kept in SecretBytes for the Token's lifetime, for one purpose only: logging in again
// after the session was lost. Before every C_Login the token's flags are read and the login is
// refused when the token says the PIN is locked, on its final try, must be changed, or was never
// set. After one CKR_PIN_INCORRECT no Token in this process calls C_Login again (a process-wide
// latch): Open returns kFailedPrecondition with reason "pin_incorrect" (kPinIncorrectReason), so
// that a restart loop cannot lock the token.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "base/secret.h"
#include "base/status.h"
#include "hsm/module.h"

namespace cakewalk::hsm {

namespace internal {
class TokenCore;
struct TokenAccess;
}  // namespace internal

// Status::reason() of the wrong-PIN error (the CLI maps it to its own exit status).
inline constexpr std::string_view kPinIncorrectReason = "pin_incorrect";

struct TokenInfo {
  std::string label;
  std::string manufacturer;
  std::string model;
  std::string serial;
  std::string module;  // Module::description()
  // A pkcs11: URI naming exactly this token (token, serial, manufacturer, model).
  std::string uri;
};

// What the agent needs from a token, detected with C_GetMechanismList / C_GetMechanismInfo.
// A listed mechanism is what the module claims; where modules claim more than they do (tpm2-pkcs11
// lists CKM_AES_KEY_GEN but refuses C_GenerateKey), hsm/ also adapts to the refusal itself (see
// hsm/key_provisioner.h), never to the module's name.
enum class Mechanism {
  kAesKeyGen,      // CKM_AES_KEY_GEN, 256-bit keys: the sealing key
  kAesGcm,         // CKM_AES_GCM encrypt + decrypt: sealing passwords and tokens
  kSha1Hmac,       // CKM_SHA_1_HMAC sign: TOTP (SHA-1)
  kSha256Hmac,     // CKM_SHA256_HMAC sign: TOTP (SHA-256)
  kSha512Hmac,     // CKM_SHA512_HMAC sign: TOTP (SHA-512)
  kEcKeyPairGen,   // CKM_EC_KEY_PAIR_GEN, P-256: the agent's TLS key
  kEcdsa,          // CKM_ECDSA sign
  kRsaKeyPairGen,  // CKM_RSA_PKCS_KEY_PAIR_GEN, 3072 bits
  kRsaPkcs,        // CKM_RSA_PKCS sign
  kRsaPkcsPss,     // CKM_RSA_PKCS_PSS sign
  kRandom,         // C_GenerateRandom (CKF_RNG)
  kAesCbc,         // CKM_AES_CBC encrypt + decrypt: sealing where the token has no AES-GCM
};
inline constexpr int kMechanismCount = 12;

// "CKM_AES_GCM" (or "random number generator (CKF_RNG)").
std::string_view MechanismName(Mechanism m) noexcept;

class Capabilities {
 public:
  bool Has(Mechanism m) const noexcept { return (bits_ >> static_cast<int>(m)) & 1u; }
  // OK, or kFailedPrecondition naming the token, the missing mechanism and `needed_for`
  // ("token 'cakewalk' does not offer CKM_AES_GCM, needed for sealing secrets").
  Status Require(Mechanism m, std::string_view needed_for) const;
  // One line: "has CKM_AES_KEY_GEN, ...; lacks CKM_RSA_PKCS_PSS" (for `doctor`).
  std::string Summary() const;

 private:
  friend class internal::TokenCore;
  std::uint32_t bits_ = 0;
  std::string token_label_;
};

class Token {
 public:
  // Selects the token named by `uri` in `module`, opens a session and logs in with `pin`.
  // `module` must stay loaded (see the teardown contract in module.h); the Token keeps the
  // module's internal state alive, so destroying them in either order is safe.
  [[nodiscard]] static Result<std::unique_ptr<Token>> Open(Module& module, std::string_view uri,
                                                           SecretBytes pin);
  ~Token();  // Close()
  Token(const Token&) = delete;
  Token& operator=(const Token&) = delete;

  const TokenInfo& info() const;
  const Capabilities& capabilities() const;

  // Closes the session (no C_Logout, see module.h) and wipes the PIN. Idempotent; later uses of
  // this token and of stores and keys opened from it fail with kFailedPrecondition.
  Status Close();

  // Makes objects that other processes added or removed since the module was loaded visible.
  // Some modules read their object store only in C_Initialize (tpm2-pkcs11 does: a key or secret
  // that `cakewalk-agent secret set` stores from another process stays invisible to a running
  // agent until then), so this finalises and initialises the module again. Every Token, store and
  // key opened from the module continues transparently on a new session; operations in flight
  // on other threads are retried once. SoftHSM and HSMs do not need it (harmless there).
  Status Refresh();

 private:
  friend struct internal::TokenAccess;
  explicit Token(std::shared_ptr<internal::TokenCore> core);

  std::shared_ptr<internal::TokenCore> core_;
};

}  // namespace cakewalk::hsm
