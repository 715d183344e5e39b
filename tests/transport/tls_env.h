// Shared set-up for the transport tests: a run-time test PKI written into a temp folder, a
// FakeHttpsServer using it, CurlTransport options trusting it, and a software client identity
// installed through the same SSL_CTX hook the token-backed provider uses.
#pragma once

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <memory>
#include <string>

#include "base/c_free.h"
#include "jira/curl_transport.h"
#include "tests/fakes/https_server.h"
#include "tests/support/pki.h"
#include "tests/support/temp_dir.h"

namespace cakewalk::testing {

// Installs a PEM chain (leaf first) and key: certificate, then key, then the consistency check.
inline http::ClientIdentityHook SoftwareIdentity(const KeyAndCert& identity) {
  return [chain = identity.chain_pem, key_pem = identity.key_pem](SSL_CTX* ctx) -> Status {
    CPtr<BIO, BIO_free_all> bio(BIO_new_mem_buf(chain.data(), static_cast<int>(chain.size())));
    CPtr<X509, X509_free> leaf(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!leaf || SSL_CTX_use_certificate(ctx, leaf.get()) != 1) {
      ERR_clear_error();
      return Internal("test identity: bad certificate");
    }
    while (X509* extra = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
      SSL_CTX_add0_chain_cert(ctx, extra);
    }
    ERR_clear_error();
    CPtr<BIO, BIO_free_all> kbio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
    CPtr<EVP_PKEY, EVP_PKEY_free> key(
        PEM_read_bio_PrivateKey(kbio.get(), nullptr, nullptr, nullptr));
    if (!key || SSL_CTX_use_PrivateKey(ctx, key.get()) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      ERR_clear_error();
      return Internal("test identity: bad key");
    }
    return Status::Ok();
  };
}

class TlsEnv {
 public:
  TlsEnv() : ca(TestCa::Create("Cakewalk Test CA")) {
    auto issued = ca->Issue({});
    if (!issued.ok()) throw std::runtime_error(issued.status().ToString());
    server_identity = std::move(issued).value();
    ca_file = (dir / "ca.pem").string();
    WriteFile(ca_file, ca->cert_pem());
  }

  ServerOptions ServerOpts() const {
    ServerOptions o;
    o.certificate_chain_pem = server_identity.chain_pem;
    o.private_key_pem = server_identity.key_pem;
    return o;
  }

  http::TransportOptions TransportOpts() const {
    http::TransportOptions o;
    o.config_name = "control_plane";
    o.ca_file = ca_file;
    o.connect_timeout = std::chrono::seconds(5);
    o.timeout = std::chrono::seconds(20);
    return o;
  }

  // A client certificate issued by `issuer` (this CA when null).
  KeyAndCert ClientIdentity(const std::string& cn, const TestCa* issuer = nullptr) const {
    TestCa::LeafOptions leaf;
    leaf.common_name = cn;
    leaf.dns_names = {};
    leaf.ip_addresses = {};
    leaf.server = false;
    auto issued = (issuer != nullptr ? issuer : ca.get())->Issue(leaf);
    if (!issued.ok()) throw std::runtime_error(issued.status().ToString());
    return std::move(issued).value();
  }

  TempDir dir{"cakewalk-transport"};
  std::unique_ptr<TestCa> ca;
  KeyAndCert server_identity;
  std::string ca_file;
};

inline std::unique_ptr<http::Transport> MustCreate(http::TransportOptions options) {
  auto t = http::CurlTransport::Create(std::move(options));
  if (!t.ok()) throw std::runtime_error(t.status().ToString());
  return std::move(t).value();
}

inline http::Request Get(const std::string& url) {
  http::Request r;
  r.url = url;
  return r;
}

}  // namespace cakewalk::testing
