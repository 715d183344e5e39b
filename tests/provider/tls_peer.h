// TEST CODE ONLY. Both ends of a real TLS connection over a socketpair, with libssl: a server
// that requires and verifies a client certificate (run on its own thread), and a client driven
// by an SSL_CTX the test prepares (e.g. with UseClientIdentity). The server answers one line
// "ping" with "hello <client subject>", so tests can assert on the application data that
// follows the handshake rather than on SSL_connect (in TLS 1.3 the client finishes its
// handshake before the server has judged its certificate).
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <thread>

#include "base/c_free.h"
#include "base/status.h"

namespace cakewalk::testing {

using SslCtx = CPtr<SSL_CTX, SSL_CTX_free>;

struct TlsServerOptions {
  std::string chain_pem;  // server certificate chain, leaf first
  std::string key_pem;
  std::string client_ca_pem;  // client certificates must verify against this CA
  int min_version = TLS1_2_VERSION;
  int max_version = TLS1_3_VERSION;
  // Signature algorithms the server accepts for client certificates ("RSA+SHA256"); empty for
  // OpenSSL's default list.
  std::string client_sigalgs;
};

struct ServerOutcome {
  bool handshake_ok = false;
  bool answered = false;
  std::string client_subject;
  std::string protocol;           // "TLSv1.3"
  int peer_signature_type = 0;    // EVP_PKEY_EC, EVP_PKEY_RSA, EVP_PKEY_RSA_PSS
  int peer_signature_digest = 0;  // NID_sha256, ...
  std::string error;
};

struct ClientOutcome {
  bool connected = false;  // SSL_connect returned success (not proof of acceptance in TLS 1.3)
  std::string response;    // the server's answer, empty when none arrived
  std::string protocol;
  std::string cipher;
  std::string error;
};

// A server context for `options`.
Result<SslCtx> MakeServerCtx(const TlsServerOptions& options);

// A client context that verifies the server against `ca_pem` (host "localhost"), limited to
// [min_version, max_version]; `cipher_list` (TLS 1.2 suites) applies when not empty. The test
// installs the client identity itself.
Result<SslCtx> MakeClientCtx(const std::string& ca_pem, int min_version, int max_version,
                             const std::string& cipher_list = "");

// One connection: the server side runs on a thread, the client side on the calling thread.
class TlsExchange {
 public:
  // Sets up the socketpair and starts the server thread.
  static Result<std::unique_ptr<TlsExchange>> Start(SSL_CTX* server_ctx);
  ~TlsExchange();

  // Runs the client side: handshake, "ping\n", read the answer. Then joins the server.
  ClientOutcome RunClient(SSL_CTX* client_ctx);
  const ServerOutcome& server() const { return server_; }

 private:
  TlsExchange() = default;
  void Serve(SSL_CTX* ctx, int fd);

  int client_fd_ = -1;
  std::thread server_thread_;
  ServerOutcome server_;
};

}  // namespace cakewalk::testing
