#include "hsm/csr.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "base/c_free.h"
#include "hsm/provider.h"
#include "hsm/x509.h"

namespace cakewalk::hsm {
namespace {

using BioPtr = CPtr<BIO, BIO_free>;
using EvpMdCtx = CPtr<EVP_MD_CTX, EVP_MD_CTX_free>;
using X509Req = CPtr<X509_REQ, X509_REQ_free>;
using X509Name = CPtr<X509_NAME, X509_NAME_free>;

Status CheckCommonName(std::string_view cn) {
  if (cn.empty()) return InvalidArgument("CSR common name is empty");
  if (cn.size() > kMaxCommonNameBytes) {
    return InvalidArgument("CSR common name is longer than " + std::to_string(kMaxCommonNameBytes) +
                           " bytes");
  }
  for (char c : cn) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f)
      return InvalidArgument("CSR common name contains a control character");
  }
  return Status::Ok();
}

// Everything after the caller's checks; OpenSSL errors are left on the queue for the caller.
Result<std::string> BuildCsr(EVP_PKEY* signing_key, EVP_PKEY* public_key, std::string_view cn,
                             const std::string& label) {
  const std::string what = "CSR for token key '" + label + "'";
  X509Req req(X509_REQ_new());
  X509Name name(X509_NAME_new());
  if (req == nullptr || name == nullptr) return Internal(what + ": out of memory");
  if (X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) != 1) {
    return Internal(what + ": cannot set the version");
  }
  if (X509_NAME_add_entry_by_txt(name.get(), "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.data()),
                                 static_cast<int>(cn.size()), -1, 0) != 1) {
    return InvalidArgument(what + ": common name is not valid UTF-8 for X.509");
  }
  if (X509_REQ_set_subject_name(req.get(), name.get()) != 1 ||
      X509_REQ_set_pubkey(req.get(), public_key) != 1) {
    return Internal(what + ": cannot set subject or public key");
  }
  EvpMdCtx md(EVP_MD_CTX_new());
  if (md == nullptr || EVP_DigestSignInit_ex(md.get(), nullptr, "SHA2-256", nullptr, nullptr,
                                             signing_key, nullptr) != 1) {
    return Internal(what + ": cannot start signing");
  }
  if (X509_REQ_sign_ctx(req.get(), md.get()) <= 0) {
    return Unavailable(what + ": signing in the token failed");
  }
  if (X509_REQ_verify(req.get(), public_key) != 1) {
    return Internal(what + ": the signed request does not verify with the token key's public key");
  }
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || PEM_write_bio_X509_REQ(bio.get(), req.get()) != 1) {
    return Internal(what + ": cannot write PEM");
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

}  // namespace

Result<std::string> MakeCsrPem(std::shared_ptr<TokenKey> key, std::string_view common_name) {
  if (key == nullptr) return InvalidArgument("MakeCsrPem: no key");
  CW_RETURN_IF_ERROR(CheckCommonName(common_name));
  const std::string label = key->label();
  const std::vector<std::uint8_t> spki = key->public_key_der();
  CW_ASSIGN_OR_RETURN(EvpPkey signing_key, ProviderKey(std::move(key)));

  ERR_set_mark();
  const unsigned char* p = spki.data();
  EvpPkey public_key(
      d2i_PUBKEY_ex(nullptr, &p, static_cast<long>(spki.size()), nullptr, "provider=default"));
  if (public_key == nullptr || p != spki.data() + spki.size()) {
    return InvalidArgument("token key '" + label +
                           "' has an invalid public key: " + DrainOpensslErrors());
  }
  auto csr = BuildCsr(signing_key.get(), public_key.get(), common_name, label);
  if (!csr.ok()) {
    return Status(csr.status().code(), csr.status().message() + ": " + DrainOpensslErrors());
  }
  ERR_pop_to_mark();
  return csr;
}

}  // namespace cakewalk::hsm
