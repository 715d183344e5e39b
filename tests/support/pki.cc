// Test PKI with the OpenSSL 3 builders. Failures to build the CA itself throw std::runtime_error
// (GoogleTest reports the exception with OpenSSL's error text); everything else returns a Status.
#include "tests/support/pki.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <stdexcept>

#include "base/c_free.h"
#include "base/encoding.h"

namespace cakewalk::testing {
namespace {

using EvpPkey = CPtr<EVP_PKEY, EVP_PKEY_free>;
using X509Ptr = CPtr<X509, X509_free>;
using X509ReqPtr = CPtr<X509_REQ, X509_REQ_free>;
using BioPtr = CPtr<BIO, BIO_free_all>;
using X509ExtPtr = CPtr<X509_EXTENSION, X509_EXTENSION_free>;

Status OpenSslError(std::string_view what) {
  std::string detail;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!detail.empty()) detail += "; ";
    detail += buf;
  }
  return Internal("test PKI: " + std::string(what) + (detail.empty() ? "" : ": " + detail));
}

Result<EvpPkey> NewKey(TestKeyType type) {
  EVP_PKEY* key = nullptr;
  switch (type) {
    case TestKeyType::kEcP256:
      key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
      break;
    case TestKeyType::kRsa2048:
      key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048));
      break;
  }
  if (key == nullptr) return OpenSslError("key generation");
  return EvpPkey(key);
}

Result<std::string> BioToString(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  if (n < 0 || (n > 0 && data == nullptr)) return OpenSslError("reading a memory BIO");
  return std::string(data, static_cast<std::size_t>(n));
}

Result<std::string> KeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  // PEM_write_bio_PrivateKey writes PKCS#8 ("BEGIN PRIVATE KEY") in OpenSSL 3.
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return OpenSslError("encoding a private key");
  return BioToString(bio.get());
}

Result<std::string> CertToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return OpenSslError("encoding a cert");
  return BioToString(bio.get());
}

Result<X509Ptr> CertFromPem(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return OpenSslError("BIO_new_mem_buf");
  X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
  if (cert == nullptr) return OpenSslError("parsing a PEM certificate");
  return X509Ptr(cert);
}

Status SetRandomSerial(X509* cert) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) return OpenSslError("RAND_bytes");
  bytes[0] &= 0x7f;  // positive
  bytes[0] |= 0x01;  // and without a leading zero byte
  CPtr<BIGNUM, BN_free> bn(BN_bin2bn(bytes, sizeof bytes, nullptr));
  if (!bn || BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)) == nullptr)
    return OpenSslError("serial number");
  return Status::Ok();
}

Status SetCommonName(X509_NAME* name, const std::string& cn) {
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                 0) != 1)
    return OpenSslError("subject CN");
  return Status::Ok();
}

Status SetValidity(X509* cert, std::chrono::seconds not_before_offset,
                   std::chrono::seconds not_after_offset) {
  std::time_t now = std::time(nullptr);
  if (X509_time_adj_ex(X509_getm_notBefore(cert), 0, static_cast<long>(not_before_offset.count()),
                       &now) == nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(cert), 0, static_cast<long>(not_after_offset.count()),
                       &now) == nullptr)
    return OpenSslError("validity");
  return Status::Ok();
}

// Adds one extension in openssl.cnf syntax ("critical,CA:TRUE"), with issuer context for the
// key identifiers.
Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1)
    return OpenSslError("extension " + std::string(OBJ_nid2sn(nid)) + "=" + value);
  return Status::Ok();
}

struct CertSpec {
  std::string common_name;
  std::chrono::seconds not_before_offset;
  std::chrono::seconds not_after_offset;
  bool ca = false;
  std::string subject_alt_names = {};   // "DNS:localhost,IP:127.0.0.1" or empty
  std::string extended_key_usage = {};  // "serverAuth", "clientAuth" or both
  std::string key_usage = {};
};

// Builds and signs a certificate for `subject_key`; `issuer` null means self-signed.
Result<X509Ptr> BuildCert(const CertSpec& spec, EVP_PKEY* subject_key, X509* issuer,
                          EVP_PKEY* issuer_key) {
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) return OpenSslError("X509_new");
  CW_RETURN_IF_ERROR(SetRandomSerial(cert.get()));
  CW_RETURN_IF_ERROR(SetCommonName(X509_get_subject_name(cert.get()), spec.common_name));
  const X509_NAME* issuer_name =
      issuer != nullptr ? X509_get_subject_name(issuer) : X509_get_subject_name(cert.get());
  if (X509_set_issuer_name(cert.get(), issuer_name) != 1) return OpenSslError("issuer name");
  CW_RETURN_IF_ERROR(SetValidity(cert.get(), spec.not_before_offset, spec.not_after_offset));
  if (X509_set_pubkey(cert.get(), subject_key) != 1) return OpenSslError("public key");

  X509* issuer_cert = issuer != nullptr ? issuer : cert.get();
  CW_RETURN_IF_ERROR(AddExtension(cert.get(), issuer_cert, NID_basic_constraints,
                                  spec.ca ? "critical,CA:TRUE" : "critical,CA:FALSE"));
  CW_RETURN_IF_ERROR(AddExtension(cert.get(), issuer_cert, NID_key_usage, spec.key_usage));
  CW_RETURN_IF_ERROR(AddExtension(cert.get(), issuer_cert, NID_subject_key_identifier, "hash"));
  if (issuer != nullptr) {
    CW_RETURN_IF_ERROR(
        AddExtension(cert.get(), issuer_cert, NID_authority_key_identifier, "keyid:always"));
  }
  if (!spec.extended_key_usage.empty()) {
    CW_RETURN_IF_ERROR(
        AddExtension(cert.get(), issuer_cert, NID_ext_key_usage, spec.extended_key_usage));
  }
  if (!spec.subject_alt_names.empty()) {
    CW_RETURN_IF_ERROR(
        AddExtension(cert.get(), issuer_cert, NID_subject_alt_name, spec.subject_alt_names));
  }
  if (X509_sign(cert.get(), issuer_key != nullptr ? issuer_key : subject_key, EVP_sha256()) <= 0)
    return OpenSslError("signing the certificate");
  return cert;
}

void FreeOpenSslBytes(unsigned char* p) { OPENSSL_free(p); }

std::string KeyUsageFor(EVP_PKEY* key, bool ca) {
  if (ca) return "critical,keyCertSign,cRLSign,digitalSignature";
  // RSA key exchange (TLS 1.2 RSA ciphers) also wants keyEncipherment.
  return EVP_PKEY_is_a(key, "RSA") ? "critical,digitalSignature,keyEncipherment"
                                   : "critical,digitalSignature";
}

}  // namespace

class TestCa::Impl {
 public:
  EvpPkey key;
  X509Ptr cert;
  std::string cert_pem;
};

TestCa::TestCa(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TestCa::~TestCa() = default;

std::unique_ptr<TestCa> TestCa::Create(const std::string& name, std::chrono::hours validity) {
  auto impl = std::make_unique<Impl>();
  auto fail = [](const Status& s) { throw std::runtime_error(s.ToString()); };
  auto key = NewKey(TestKeyType::kEcP256);
  if (!key.ok()) fail(key.status());
  impl->key = std::move(key).value();
  CertSpec spec{.common_name = name,
                .not_before_offset = std::chrono::hours(-1),
                .not_after_offset = std::chrono::hours(-1) + validity,
                .ca = true,
                .key_usage = KeyUsageFor(impl->key.get(), true)};
  auto cert = BuildCert(spec, impl->key.get(), nullptr, nullptr);
  if (!cert.ok()) fail(cert.status());
  impl->cert = std::move(cert).value();
  auto pem = CertToPem(impl->cert.get());
  if (!pem.ok()) fail(pem.status());
  impl->cert_pem = std::move(pem).value();
  return std::unique_ptr<TestCa>(new TestCa(std::move(impl)));
}

const std::string& TestCa::cert_pem() const { return impl_->cert_pem; }

Result<KeyAndCert> TestCa::Issue(const LeafOptions& options) const {
  CW_ASSIGN_OR_RETURN(EvpPkey key, NewKey(options.key_type));
  std::string san;
  for (const auto& dns : options.dns_names) san += (san.empty() ? "" : ",") + ("DNS:" + dns);
  for (const auto& ip : options.ip_addresses) san += (san.empty() ? "" : ",") + ("IP:" + ip);
  CertSpec spec{.common_name = options.common_name,
                .not_before_offset = options.not_before_offset,
                .not_after_offset = options.not_after_offset,
                .subject_alt_names = san,
                .extended_key_usage = options.server ? "serverAuth" : "clientAuth",
                .key_usage = KeyUsageFor(key.get(), false)};
  CW_ASSIGN_OR_RETURN(X509Ptr cert,
                      BuildCert(spec, key.get(), impl_->cert.get(), impl_->key.get()));
  KeyAndCert out;
  CW_ASSIGN_OR_RETURN(out.key_pem, KeyToPem(key.get()));
  CW_ASSIGN_OR_RETURN(out.cert_pem, CertToPem(cert.get()));
  out.chain_pem = out.cert_pem + impl_->cert_pem;
  return out;
}

Result<std::string> TestCa::IssueFromCsr(const std::string& csr_pem, const std::string& common_name,
                                         std::chrono::seconds lifetime,
                                         std::chrono::seconds not_before_offset) const {
  BioPtr bio(BIO_new_mem_buf(csr_pem.data(), static_cast<int>(csr_pem.size())));
  if (!bio) return OpenSslError("BIO_new_mem_buf");
  X509ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) {
    ERR_clear_error();
    return InvalidArgument("test PKI: the CSR is not a PEM PKCS#10 request");
  }
  EVP_PKEY* public_key = X509_REQ_get0_pubkey(req.get());
  if (public_key == nullptr) return InvalidArgument("test PKI: the CSR carries no public key");
  if (X509_REQ_verify(req.get(), public_key) != 1) {
    ERR_clear_error();
    return InvalidArgument("test PKI: the CSR's signature does not verify with its own key");
  }
  // Only the public key is taken from the CSR; subject and extensions are ours.
  CertSpec spec{.common_name = common_name,
                .not_before_offset = not_before_offset,
                .not_after_offset = lifetime,
                .extended_key_usage = "clientAuth",
                .key_usage = KeyUsageFor(public_key, false)};
  CW_ASSIGN_OR_RETURN(X509Ptr cert,
                      BuildCert(spec, public_key, impl_->cert.get(), impl_->key.get()));
  return CertToPem(cert.get());
}

Result<KeyAndCert> MakeSelfSigned(const std::string& common_name) {
  CW_ASSIGN_OR_RETURN(EvpPkey key, NewKey(TestKeyType::kEcP256));
  CertSpec spec{.common_name = common_name,
                .not_before_offset = std::chrono::hours(-1),
                .not_after_offset = std::chrono::hours(24),
                .subject_alt_names = "DNS:" + common_name + ",IP:127.0.0.1",
                .extended_key_usage = "serverAuth,clientAuth",
                .key_usage = KeyUsageFor(key.get(), false)};
  CW_ASSIGN_OR_RETURN(X509Ptr cert, BuildCert(spec, key.get(), nullptr, nullptr));
  KeyAndCert out;
  CW_ASSIGN_OR_RETURN(out.key_pem, KeyToPem(key.get()));
  CW_ASSIGN_OR_RETURN(out.cert_pem, CertToPem(cert.get()));
  out.chain_pem = out.cert_pem;
  return out;
}

Result<std::string> SpkiSha256Base64(const std::string& cert_pem) {
  CW_ASSIGN_OR_RETURN(X509Ptr cert, CertFromPem(cert_pem));
  unsigned char* der = nullptr;
  const int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert.get()), &der);
  if (n <= 0) return OpenSslError("encoding the SubjectPublicKeyInfo");
  CPtr<unsigned char, FreeOpenSslBytes> owned(der);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(der, static_cast<std::size_t>(n), digest);
  return Base64Encode(digest);
}

}  // namespace cakewalk::testing
