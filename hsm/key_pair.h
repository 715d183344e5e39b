// Key pairs generated inside the token (the agent's TLS client key), usable through TokenKey.
//
//   CW_ASSIGN_OR_RETURN(auto key, hsm::KeyPair::Generate(*token, KeyType::kEcP256,
//   "cakewalk-tls-1")); key->public_key_der();                 // SubjectPublicKeyInfo, for the CSR
//   key->Sign(SignScheme::kEcdsa, digest); // raw r||s, computed in the token
//
// Objects: the private key is CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, never extractable,
// CKA_SIGN=TRUE and every other usage FALSE (DECRYPT, UNWRAP, DERIVE, SIGN_RECOVER),
// CKA_ALLOWED_MECHANISMS = {CKM_ECDSA} or {CKM_RSA_PKCS, CKM_RSA_PKCS_PSS}; the public key is
// CKA_VERIFY=TRUE only — except on tokens that refuse usage flags for the public half
// (tpm2-pkcs11 derives them from the TPM object and fails C_GenerateKeyPair otherwise): there the
// public key gets the token's own flags. Both carry the same CKA_LABEL (the name given) and a
// random 16-byte CKA_ID, so `pkcs11-tool --list-objects` shows them as a pair. CKA_MODIFIABLE stays
// TRUE on key pairs so they can be relabelled (the PIN holder can do anything with the token
// anyway).
//
// A KeyPair finds its private key again by CKA_ID after the session was reopened; relabelling
// does not disturb keys already open. Thread-safe: signing runs under the token's session mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "hsm/token.h"
#include "hsm/token_key.h"

namespace cakewalk::hsm {

class KeyPair final : public TokenKey {
 public:
  // Generates a new key pair named `label` (1-64 characters from [A-Za-z0-9._:-], not starting
  // with "cakewalk:secret:", "cakewalk:seed:" or "cakewalk:seal-key"). Refuses an existing label.
  [[nodiscard]] static Result<std::unique_ptr<KeyPair>> Generate(Token& token, KeyType type,
                                                                 std::string_view label);
  // The key pair named `label`: kNotFound when absent, kFailedPrecondition when ambiguous or of a
  // kind the agent does not use (not P-256 / not RSA-3072, or missing its public key).
  [[nodiscard]] static Result<std::unique_ptr<KeyPair>> Find(Token& token, std::string_view label);
  // Destroys both halves of the key pair named `label`.
  [[nodiscard]] static Status Destroy(Token& token, std::string_view label);
  // Renames both halves. KeyPair objects already open keep working (they hold the CKA_ID) but
  // report the old label().
  [[nodiscard]] static Status Relabel(Token& token, std::string_view label,
                                      std::string_view new_label);

  ~KeyPair() override;  // makes no PKCS#11 call

  KeyType type() const override { return type_; }
  const std::vector<std::uint8_t>& public_key_der() const override { return spki_; }
  const std::string& label() const override { return label_; }
  const std::vector<std::uint8_t>& id() const { return id_; }

  // kEcdsa: input is a digest of 20 to 64 bytes, output raw r||s (64 bytes for P-256).
  // kRsaPkcs1: input is a DER DigestInfo. kRsaPss*: input is the digest of that hash.
  Result<std::vector<std::uint8_t>> Sign(SignScheme scheme,
                                         std::span<const std::uint8_t> input) override;

 private:
  struct State;
  KeyPair(std::unique_ptr<State> state, KeyType type, std::string label,
          std::vector<std::uint8_t> id, std::vector<std::uint8_t> spki);

  std::unique_ptr<State> state_;
  const KeyType type_;
  const std::string label_;
  const std::vector<std::uint8_t> id_;
  const std::vector<std::uint8_t> spki_;
};

}  // namespace cakewalk::hsm
