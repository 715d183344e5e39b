// A private key that lives in the token and never leaves it. The OpenSSL provider (provider.h)
// exposes a TokenKey to libssl and to CSR signing; hsm/ implements it over a PKCS#11 key pair.
// Tests may implement it in software to exercise the provider on its own.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace cakewalk::hsm {

enum class KeyType {
  kEcP256,   // ECDSA on prime256v1
  kRsa3072,  // RSA, signing with PKCS#1 v1.5 or PSS
};

enum class SignScheme {
  kEcdsa,         // input: a message digest; output: raw r||s (64 bytes for P-256)
  kRsaPkcs1,      // input: a DER DigestInfo (CKM_RSA_PKCS); output: the signature
  kRsaPssSha256,  // input: a SHA-256 digest; salt length 32, MGF1-SHA256
  kRsaPssSha384,  // input: a SHA-384 digest; salt length 48, MGF1-SHA384
  kRsaPssSha512,  // input: a SHA-512 digest; salt length 64, MGF1-SHA512
};

class TokenKey {
 public:
  virtual ~TokenKey() = default;

  virtual KeyType type() const = 0;
  // The public key as DER SubjectPublicKeyInfo.
  virtual const std::vector<std::uint8_t>& public_key_der() const = 0;
  // A stable, non-secret name for logs and provider parameters (the token object label).
  virtual const std::string& label() const = 0;
  // Signs inside the token. Thread-safe: implementations serialise access to their session.
  virtual Result<std::vector<std::uint8_t>> Sign(SignScheme scheme,
                                                 std::span<const std::uint8_t> input) = 0;
};

}  // namespace cakewalk::hsm
