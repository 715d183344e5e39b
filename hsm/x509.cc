#include "hsm/x509.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <ctime>

#include "base/encoding.h"

namespace cakewalk::hsm {
namespace {

using BioPtr = CPtr<BIO, BIO_free>;
using EvpPkeyPtr = CPtr<EVP_PKEY, EVP_PKEY_free>;

constexpr std::string_view kBegin = "-----BEGIN CERTIFICATE-----";
constexpr std::string_view kEnd = "-----END CERTIFICATE-----";

std::string_view TrimLine(std::string_view line) {
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
    line.remove_suffix(1);
  }
  return line;
}

Result<SysTime> ToSysTime(const ASN1_TIME* t, std::string_view what) {
  if (t == nullptr) return InvalidArgument(std::string("certificate has no ") + std::string(what));
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) {
    ERR_clear_error();
    return InvalidArgument("certificate " + std::string(what) + " is not a valid time");
  }
  const std::time_t secs = timegm(&tm);
  // SysTime (64-bit nanoseconds) ends in 2262; certificates may say 9999 (RFC 5280's "no
  // well-defined expiration" is 99991231235959Z). Clamp instead of overflowing in from_time_t.
  constexpr std::time_t kLimit =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::duration::max())
          .count();
  if (secs >= kLimit) return SysTime::max();
  if (secs <= -kLimit) return SysTime::min();
  return std::chrono::system_clock::from_time_t(secs);
}

}  // namespace

std::string DrainOpensslErrors() {
  std::string out;
  unsigned long e = 0;
  const char* data = nullptr;
  int flags = 0;
  while ((e = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
    if (data != nullptr && (flags & ERR_TXT_STRING) != 0 && data[0] != '\0') {
      out += " (";
      out += data;
      out += ")";
    }
  }
  if (out.empty()) out = "no OpenSSL error detail";
  return out;
}

Result<std::vector<X509Ptr>> ParsePemChain(std::string_view pem) {
  if (pem.size() > kMaxChainPemBytes) {
    return InvalidArgument("certificate chain is larger than " + std::to_string(kMaxChainPemBytes) +
                           " bytes");
  }
  std::vector<X509Ptr> chain;
  bool in_block = false;
  std::string body;
  std::size_t line_no = 0;
  std::size_t pos = 0;
  while (pos < pem.size()) {
    std::size_t eol = pem.find('\n', pos);
    if (eol == std::string_view::npos) eol = pem.size();
    const std::string_view line = TrimLine(pem.substr(pos, eol - pos));
    pos = eol + 1;
    ++line_no;
    const std::string where = "certificate chain line " + std::to_string(line_no);
    if (!in_block) {
      if (line.empty()) continue;
      if (line != kBegin) {
        return InvalidArgument(where + ": expected '" + std::string(kBegin) + "' or a blank line");
      }
      in_block = true;
      body.clear();
      continue;
    }
    if (line == kEnd) {
      in_block = false;
      auto der = Base64Decode(body);
      if (!der.ok()) {
        return InvalidArgument(where + ": certificate body: " + der.status().message());
      }
      const unsigned char* p = der->data();
      X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der->size())));
      if (cert == nullptr) {
        return InvalidArgument(where + ": certificate is not valid DER: " + DrainOpensslErrors());
      }
      if (p != der->data() + der->size()) {
        return InvalidArgument(where + ": trailing bytes after the certificate's DER");
      }
      if (chain.size() == kMaxChainCertificates) {
        return InvalidArgument("certificate chain has more than " +
                               std::to_string(kMaxChainCertificates) + " certificates");
      }
      chain.push_back(std::move(cert));
      continue;
    }
    if (line.find(':') != std::string_view::npos) {
      return InvalidArgument(where + ": PEM headers are not allowed in a certificate");
    }
    if (line.starts_with("-----")) {
      return InvalidArgument(where + ": unexpected PEM boundary inside a certificate");
    }
    body.append(line);
  }
  if (in_block) return InvalidArgument("certificate chain ends inside a certificate");
  if (chain.empty()) return InvalidArgument("certificate chain contains no certificate");
  return chain;
}

Result<std::string> CertificateToPem(const X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return Internal("cannot write certificate as PEM: " + DrainOpensslErrors());
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

std::string CertificateSubject(const X509* cert) {
  const X509_NAME* name = X509_get_subject_name(cert);
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (name == nullptr || bio == nullptr ||
      X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) {
    ERR_clear_error();
    return "(unreadable subject)";
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  std::string s(data, static_cast<std::size_t>(n));
  return s.empty() ? "(empty subject)" : s;
}

Result<SysTime> CertificateNotBefore(const X509* cert) {
  return ToSysTime(X509_get0_notBefore(cert), "notBefore");
}

Result<SysTime> CertificateNotAfter(const X509* cert) {
  return ToSysTime(X509_get0_notAfter(cert), "notAfter");
}

Result<SysTime> CertificateNotAfter(std::string_view chain_pem) {
  CW_ASSIGN_OR_RETURN(auto chain, ParsePemChain(chain_pem));
  return CertificateNotAfter(chain.front().get());
}

Result<std::vector<std::uint8_t>> CertificateSpkiDer(const X509* cert) {
  const X509_PUBKEY* pub = X509_get_X509_PUBKEY(cert);
  unsigned char* der = nullptr;
  const int n = pub == nullptr ? -1 : i2d_X509_PUBKEY(pub, &der);
  if (n <= 0) {
    return InvalidArgument("cannot encode the public key of certificate " +
                           CertificateSubject(cert) + ": " + DrainOpensslErrors());
  }
  std::vector<std::uint8_t> out(der, der + n);
  OPENSSL_free(der);
  return out;
}

Status CheckCertificateKey(const X509* cert, std::span<const std::uint8_t> spki_der) {
  const unsigned char* p = spki_der.data();
  EvpPkeyPtr expected(
      d2i_PUBKEY_ex(nullptr, &p, static_cast<long>(spki_der.size()), nullptr, "provider=default"));
  if (expected == nullptr || p != spki_der.data() + spki_der.size()) {
    return InvalidArgument("the key to compare with is not a valid SubjectPublicKeyInfo: " +
                           DrainOpensslErrors());
  }
  const EVP_PKEY* actual = X509_get0_pubkey(cert);
  if (actual == nullptr) {
    return InvalidArgument("cannot read the public key of certificate " + CertificateSubject(cert) +
                           ": " + DrainOpensslErrors());
  }
  ERR_set_mark();
  const int eq = EVP_PKEY_eq(actual, expected.get());
  ERR_pop_to_mark();
  if (eq != 1) {
    return FailedPrecondition("certificate " + CertificateSubject(cert) +
                              " does not carry the expected public key");
  }
  return Status::Ok();
}

}  // namespace cakewalk::hsm
