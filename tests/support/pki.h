// A throw-away test PKI generated at run time with OpenSSL: a CA, server certificates for
// "localhost"/127.0.0.1, client certificates, and the broken variants the TLS negative tests need.
// Nothing here is ever written outside a test's temp folder.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace cakewalk::testing {

struct KeyAndCert {
  std::string key_pem;    // PKCS#8 private key
  std::string cert_pem;   // the certificate
  std::string chain_pem;  // leaf first, then the issuing CA (no root for a self-signed cert)
};

enum class TestKeyType { kEcP256, kRsa2048 };

class TestCa {
 public:
  // A fresh self-signed CA ("CN=<name>"), valid from one hour ago for `validity`.
  static std::unique_ptr<TestCa> Create(const std::string& name,
                                        std::chrono::hours validity = std::chrono::hours(24 * 30));
  ~TestCa();

  const std::string& cert_pem() const;

  struct LeafOptions {
    std::string common_name = "localhost";
    std::vector<std::string> dns_names = {"localhost"};
    std::vector<std::string> ip_addresses = {"127.0.0.1"};
    bool server = true;  // serverAuth EKU, else clientAuth
    // Validity window relative to now.
    std::chrono::seconds not_before_offset = std::chrono::hours(-1);
    std::chrono::seconds not_after_offset = std::chrono::hours(24);
    TestKeyType key_type = TestKeyType::kEcP256;
  };
  // A key pair and a certificate signed by this CA.
  Result<KeyAndCert> Issue(const LeafOptions& options) const;
  // Signs a PKCS#10 CSR (verifying its self-signature first) as a client certificate.
  Result<std::string> IssueFromCsr(
      const std::string& csr_pem, const std::string& common_name, std::chrono::seconds lifetime,
      std::chrono::seconds not_before_offset = std::chrono::seconds(-60)) const;

  class Impl;

 private:
  explicit TestCa(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A self-signed leaf (no CA), for the "self-signed server certificate" case.
Result<KeyAndCert> MakeSelfSigned(const std::string& common_name);

// base64(SHA-256(SubjectPublicKeyInfo)) of the certificate's key, as
// control_plane.pinned_spki_sha256 and CURLOPT_PINNEDPUBLICKEY expect.
Result<std::string> SpkiSha256Base64(const std::string& cert_pem);

}  // namespace cakewalk::testing
