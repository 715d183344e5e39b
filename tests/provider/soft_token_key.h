// TEST CODE ONLY. A TokenKey whose private key is an ordinary OpenSSL key in this process'
// memory: it exists to exercise the cakewalk-token provider without a token. It offers none of
// a token's protection and must never be used outside tests.
//
// It counts Sign calls, records the schemes asked for, and can be told to fail.
#pragma once

#include <openssl/evp.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/c_free.h"
#include "hsm/token_key.h"

namespace cakewalk::testing {

class SoftTokenKey final : public hsm::TokenKey {
 public:
  // A fresh EC P-256 or RSA-3072 key.
  static std::shared_ptr<SoftTokenKey> Generate(hsm::KeyType type, std::string label);
  // Wraps an existing private key (e.g. from the test PKI); `type` must describe it.
  static std::shared_ptr<SoftTokenKey> FromPrivateKeyPem(hsm::KeyType type, std::string label,
                                                         const std::string& key_pem);

  hsm::KeyType type() const override { return type_; }
  const std::vector<std::uint8_t>& public_key_der() const override { return public_der_; }
  const std::string& label() const override { return label_; }
  Result<std::vector<std::uint8_t>> Sign(hsm::SignScheme scheme,
                                         std::span<const std::uint8_t> input) override;

  int sign_calls() const { return sign_calls_.load(); }
  // Every later Sign fails with Unavailable("simulated token failure") while set.
  void set_failing(bool failing) { failing_.store(failing); }
  std::vector<hsm::SignScheme> schemes() const;
  // The private key, for tests that verify signatures in software.
  EVP_PKEY* pkey() const { return pkey_.get(); }
  // A public-key-only copy (default provider).
  CPtr<EVP_PKEY, EVP_PKEY_free> PublicKey() const;

  // Counts destroyed SoftTokenKeys (to check who releases keys when).
  static int destroyed() { return destroyed_.load(); }
  ~SoftTokenKey() override { destroyed_.fetch_add(1); }

 private:
  SoftTokenKey(hsm::KeyType type, std::string label, CPtr<EVP_PKEY, EVP_PKEY_free> pkey);

  const hsm::KeyType type_;
  const std::string label_;
  const CPtr<EVP_PKEY, EVP_PKEY_free> pkey_;
  std::vector<std::uint8_t> public_der_;
  std::atomic<int> sign_calls_{0};
  std::atomic<bool> failing_{false};
  mutable std::mutex mu_;
  std::vector<hsm::SignScheme> schemes_;
  static std::atomic<int> destroyed_;
};

}  // namespace cakewalk::testing
