// TEST CODE ONLY: see soft_token_key.h.
#include "tests/provider/soft_token_key.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <stdexcept>

namespace cakewalk::testing {
namespace {

using EvpPkey = CPtr<EVP_PKEY, EVP_PKEY_free>;
using EvpPkeyCtx = CPtr<EVP_PKEY_CTX, EVP_PKEY_CTX_free>;
using EcdsaSig = CPtr<ECDSA_SIG, ECDSA_SIG_free>;

// Test-only helper: failures here are bugs in the test setup, so they throw.
void Check(bool ok, const char* what) {
  if (!ok) {
    ERR_print_errors_fp(stderr);
    throw std::runtime_error(std::string("SoftTokenKey: ") + what);
  }
}

}  // namespace

std::atomic<int> SoftTokenKey::destroyed_{0};

SoftTokenKey::SoftTokenKey(hsm::KeyType type, std::string label, EvpPkey pkey)
    : type_(type), label_(std::move(label)), pkey_(std::move(pkey)) {
  unsigned char* der = nullptr;
  const int n = i2d_PUBKEY(pkey_.get(), &der);
  Check(n > 0, "i2d_PUBKEY");
  public_der_.assign(der, der + n);
  OPENSSL_free(der);
}

std::shared_ptr<SoftTokenKey> SoftTokenKey::Generate(hsm::KeyType type, std::string label) {
  EvpPkey pkey(type == hsm::KeyType::kEcP256
                   ? EVP_PKEY_Q_keygen(nullptr, "provider=default", "EC", "P-256")
                   : EVP_PKEY_Q_keygen(nullptr, "provider=default", "RSA", std::size_t{3072}));
  Check(pkey != nullptr, "keygen");
  return std::shared_ptr<SoftTokenKey>(new SoftTokenKey(type, std::move(label), std::move(pkey)));
}

std::shared_ptr<SoftTokenKey> SoftTokenKey::FromPrivateKeyPem(hsm::KeyType type, std::string label,
                                                              const std::string& key_pem) {
  CPtr<BIO, BIO_free> bio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  EvpPkey pkey(PEM_read_bio_PrivateKey_ex(bio.get(), nullptr, nullptr, nullptr, nullptr,
                                          "provider=default"));
  Check(pkey != nullptr, "PEM_read_bio_PrivateKey");
  return std::shared_ptr<SoftTokenKey>(new SoftTokenKey(type, std::move(label), std::move(pkey)));
}

std::vector<hsm::SignScheme> SoftTokenKey::schemes() const {
  std::lock_guard lock(mu_);
  return schemes_;
}

EvpPkey SoftTokenKey::PublicKey() const {
  const unsigned char* p = public_der_.data();
  EvpPkey pub(d2i_PUBKEY_ex(nullptr, &p, static_cast<long>(public_der_.size()), nullptr,
                            "provider=default"));
  Check(pub != nullptr, "d2i_PUBKEY");
  return pub;
}

Result<std::vector<std::uint8_t>> SoftTokenKey::Sign(hsm::SignScheme scheme,
                                                     std::span<const std::uint8_t> input) {
  sign_calls_.fetch_add(1);
  {
    std::lock_guard lock(mu_);
    schemes_.push_back(scheme);
  }
  if (failing_.load()) return Unavailable("simulated token failure (SoftTokenKey)");
  // Like a PKCS#11 module that uses OpenSSL in-process, leave noise on the error queue: the
  // provider must not let it reach its caller.
  ERR_raise_data(ERR_LIB_USER, ERR_R_INTERNAL_ERROR, "SoftTokenKey noise");

  const bool ec = type_ == hsm::KeyType::kEcP256;
  if (ec != (scheme == hsm::SignScheme::kEcdsa)) {
    return InvalidArgument("SoftTokenKey: scheme does not match the key type");
  }
  EvpPkeyCtx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey_.get(), "provider=default"));
  if (ctx == nullptr || EVP_PKEY_sign_init(ctx.get()) != 1) return Internal("sign_init");
  const char* md = nullptr;
  std::size_t expected_len = 0;
  switch (scheme) {
    case hsm::SignScheme::kEcdsa:
      break;
    case hsm::SignScheme::kRsaPkcs1:
      // Raw PKCS#1 v1.5 type 1 padding over the DigestInfo, as CKM_RSA_PKCS does.
      if (EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_PADDING) != 1) {
        return Internal("padding");
      }
      break;
    case hsm::SignScheme::kRsaPssSha256:
      md = "SHA256";
      expected_len = 32;
      break;
    case hsm::SignScheme::kRsaPssSha384:
      md = "SHA384";
      expected_len = 48;
      break;
    case hsm::SignScheme::kRsaPssSha512:
      md = "SHA512";
      expected_len = 64;
      break;
  }
  if (md != nullptr) {
    if (input.size() != expected_len) return InvalidArgument("SoftTokenKey: wrong digest length");
    if (EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_PSS_PADDING) != 1 ||
        EVP_PKEY_CTX_set_signature_md(ctx.get(), EVP_get_digestbyname(md)) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_get_digestbyname(md)) != 1 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx.get(), RSA_PSS_SALTLEN_DIGEST) != 1) {
      return Internal("pss parameters");
    }
  }
  std::size_t len = 0;
  if (EVP_PKEY_sign(ctx.get(), nullptr, &len, input.data(), input.size()) != 1) {
    return Internal("sign size");
  }
  std::vector<std::uint8_t> sig(len);
  if (EVP_PKEY_sign(ctx.get(), sig.data(), &len, input.data(), input.size()) != 1) {
    return Internal("sign");
  }
  sig.resize(len);
  if (!ec) return sig;
  // A token returns raw r||s for CKM_ECDSA.
  const unsigned char* p = sig.data();
  EcdsaSig parsed(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size())));
  if (parsed == nullptr) return Internal("d2i_ECDSA_SIG");
  std::vector<std::uint8_t> raw(64);
  if (BN_bn2binpad(ECDSA_SIG_get0_r(parsed.get()), raw.data(), 32) != 32 ||
      BN_bn2binpad(ECDSA_SIG_get0_s(parsed.get()), raw.data() + 32, 32) != 32) {
    return Internal("bn2binpad");
  }
  return raw;
}

}  // namespace cakewalk::testing
