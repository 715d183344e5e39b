// TEST CODE ONLY: see tls_peer.h.
#include "tests/provider/tls_peer.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

namespace cakewalk::testing {
namespace {

using Ssl = CPtr<SSL, SSL_free>;
using X509Ptr = CPtr<X509, X509_free>;

std::string TakeErrors() {
  std::string out;
  unsigned long e = 0;
  const char* data = nullptr;
  int flags = 0;
  while ((e = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
    if ((flags & ERR_TXT_STRING) != 0 && data != nullptr && data[0] != '\0') {
      out += std::string(" [") + data + "]";
    }
  }
  return out;
}

Status AddCaCerts(X509_STORE* store, const std::string& pem) {
  CPtr<BIO, BIO_free> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  int added = 0;
  while (X509Ptr cert{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) {
    if (X509_STORE_add_cert(store, cert.get()) != 1) return Internal("X509_STORE_add_cert");
    ++added;
  }
  ERR_clear_error();  // end of input
  if (added == 0) return InvalidArgument("no CA certificate in PEM");
  return Status::Ok();
}

void SetTimeouts(int fd) {
  timeval tv{};
  tv.tv_sec = 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

}  // namespace

Result<SslCtx> MakeServerCtx(const TlsServerOptions& options) {
  SslCtx ctx(SSL_CTX_new(TLS_server_method()));
  if (ctx == nullptr) return Internal("SSL_CTX_new: " + TakeErrors());
  SSL_CTX_set_min_proto_version(ctx.get(), options.min_version);
  SSL_CTX_set_max_proto_version(ctx.get(), options.max_version);
  CPtr<BIO, BIO_free> chain(
      BIO_new_mem_buf(options.chain_pem.data(), static_cast<int>(options.chain_pem.size())));
  X509Ptr leaf(PEM_read_bio_X509(chain.get(), nullptr, nullptr, nullptr));
  if (leaf == nullptr || SSL_CTX_use_certificate(ctx.get(), leaf.get()) != 1) {
    return Internal("server certificate: " + TakeErrors());
  }
  while (X509Ptr extra{PEM_read_bio_X509(chain.get(), nullptr, nullptr, nullptr)}) {
    if (SSL_CTX_add1_chain_cert(ctx.get(), extra.get()) != 1) return Internal("server chain");
  }
  ERR_clear_error();
  CPtr<BIO, BIO_free> key_bio(
      BIO_new_mem_buf(options.key_pem.data(), static_cast<int>(options.key_pem.size())));
  CPtr<EVP_PKEY, EVP_PKEY_free> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr || SSL_CTX_use_PrivateKey(ctx.get(), key.get()) != 1 ||
      SSL_CTX_check_private_key(ctx.get()) != 1) {
    return Internal("server key: " + TakeErrors());
  }
  Status st = AddCaCerts(SSL_CTX_get_cert_store(ctx.get()), options.client_ca_pem);
  if (!st.ok()) return st;
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  if (!options.client_sigalgs.empty() &&
      SSL_CTX_set1_client_sigalgs_list(ctx.get(), options.client_sigalgs.c_str()) != 1) {
    return Internal("client sigalgs: " + TakeErrors());
  }
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx.get(), 0);
  return ctx;
}

Result<SslCtx> MakeClientCtx(const std::string& ca_pem, int min_version, int max_version,
                             const std::string& cipher_list) {
  SslCtx ctx(SSL_CTX_new(TLS_client_method()));
  if (ctx == nullptr) return Internal("SSL_CTX_new: " + TakeErrors());
  SSL_CTX_set_min_proto_version(ctx.get(), min_version);
  SSL_CTX_set_max_proto_version(ctx.get(), max_version);
  if (!cipher_list.empty() && SSL_CTX_set_cipher_list(ctx.get(), cipher_list.c_str()) != 1) {
    return Internal("cipher list: " + TakeErrors());
  }
  Status st = AddCaCerts(SSL_CTX_get_cert_store(ctx.get()), ca_pem);
  if (!st.ok()) return st;
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  return ctx;
}

Result<std::unique_ptr<TlsExchange>> TlsExchange::Start(SSL_CTX* server_ctx) {
  // A peer that hangs up must show as an error, not kill the test process.
  signal(SIGPIPE, SIG_IGN);
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return Internal("socketpair failed");
  }
  SetTimeouts(fds[0]);
  SetTimeouts(fds[1]);
  std::unique_ptr<TlsExchange> ex(new TlsExchange);
  ex->client_fd_ = fds[1];
  const int server_fd = fds[0];
  TlsExchange* self = ex.get();
  ex->server_thread_ =
      std::thread([self, server_ctx, server_fd] { self->Serve(server_ctx, server_fd); });
  return ex;
}

TlsExchange::~TlsExchange() {
  if (client_fd_ >= 0) {
    shutdown(client_fd_, SHUT_RDWR);
    close(client_fd_);
  }
  if (server_thread_.joinable()) server_thread_.join();
}

void TlsExchange::Serve(SSL_CTX* ctx, int fd) {
  Ssl ssl(SSL_new(ctx));
  if (ssl == nullptr || SSL_set_fd(ssl.get(), fd) != 1) {
    server_.error = "SSL_new: " + TakeErrors();
    close(fd);
    return;
  }
  if (SSL_accept(ssl.get()) != 1) {
    server_.error = "SSL_accept: " + TakeErrors();
    // Keep the connection open until the client hangs up, as a TCP peer's kernel would accept
    // the client's next write: the client then learns of the refusal from the alert it reads.
    char sink[512];
    while (read(fd, sink, sizeof sink) > 0) {
    }
    close(fd);
    return;
  }
  server_.handshake_ok = true;
  server_.protocol = SSL_get_version(ssl.get());
  SSL_get_peer_signature_type_nid(ssl.get(), &server_.peer_signature_type);
  SSL_get_peer_signature_nid(ssl.get(), &server_.peer_signature_digest);
  X509* peer = SSL_get0_peer_certificate(ssl.get());
  if (peer == nullptr || SSL_get_verify_result(ssl.get()) != X509_V_OK) {
    server_.error = "client certificate missing or not verified";
    close(fd);
    return;
  }
  char subject[256] = {0};
  X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof subject);
  server_.client_subject = subject;
  char line[64] = {0};
  const int n = SSL_read(ssl.get(), line, sizeof line - 1);
  if (n <= 0 || std::string(line, static_cast<std::size_t>(n)) != "ping\n") {
    server_.error = "no ping: " + TakeErrors();
    close(fd);
    return;
  }
  const std::string answer = "hello " + server_.client_subject + "\n";
  if (SSL_write(ssl.get(), answer.data(), static_cast<int>(answer.size())) ==
      static_cast<int>(answer.size())) {
    server_.answered = true;
  }
  SSL_shutdown(ssl.get());
  ERR_clear_error();
  close(fd);
}

ClientOutcome TlsExchange::RunClient(SSL_CTX* client_ctx) {
  ClientOutcome out;
  {
    Ssl ssl(SSL_new(client_ctx));
    if (ssl == nullptr || SSL_set_fd(ssl.get(), client_fd_) != 1 ||
        SSL_set1_host(ssl.get(), "localhost") != 1) {
      out.error = "SSL_new: " + TakeErrors();
    } else if (SSL_connect(ssl.get()) != 1) {
      out.error = "SSL_connect: " + TakeErrors();
    } else {
      out.connected = true;
      out.protocol = SSL_get_version(ssl.get());
      out.cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl.get()));
      if (SSL_write(ssl.get(), "ping\n", 5) != 5) {
        out.error = "SSL_write: " + TakeErrors();
      } else {
        char buf[512];
        const int n = SSL_read(ssl.get(), buf, sizeof buf);
        if (n > 0) {
          out.response.assign(buf, static_cast<std::size_t>(n));
        } else {
          out.error = "SSL_read: " + TakeErrors();
        }
      }
    }
  }
  shutdown(client_fd_, SHUT_RDWR);
  close(client_fd_);
  client_fd_ = -1;
  if (server_thread_.joinable()) server_thread_.join();
  return out;
}

}  // namespace cakewalk::testing
