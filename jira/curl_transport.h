// CurlTransport: the http::Transport over libcurl (7.88, OpenSSL backend). The only libcurl user
// in the tree.
//
// Fixed behaviour, not configurable: https:// only (refused before anything is sent otherwise),
// TLS >= 1.2, peer and host name verification, no redirects (a 3xx is returned as a response),
// HTTP/1.1, no content decoding (the size cap applies to the bytes on the wire), libcurl never
// reads proxy environment variables (the caller resolves proxy settings and passes them here).
//
// Connections: a pool of easy handles; each request borrows one handle (LIFO, so a sequential
// caller keeps reusing the same kept-alive connection), each handle keeps its own connections
// (in a multi handle of its own, driven until libcurl's next timer: no periodic wake-ups during a
// long poll). The handles share one TLS session cache, so a new connection resumes an earlier
// session; every connection is still verified and pinned. A handle whose transfer failed is
// destroyed, never returned to the pool. ResetConnections() destroys every idle handle, makes
// borrowed ones be destroyed on return and starts a new session cache.
//
// Writes (Request::send_once) ride kept-alive connections that were busy within the last 2 s,
// but libcurl cannot send them twice: a body goes out through a read callback without a rewind,
// so where libcurl would silently repeat a request whose connection died before the answer, it
// fails instead (reason kNotResent); a write without a body takes a new connection.
//
// Secrets and their copies:
// - Authorization/Cookie header lines are built in secret memory and handed to libcurl as
//   curl_slist entries that are wiped before they are freed. libcurl's own copies (its request
//   buffer, a small body appended to it, the upload buffer of a body sent once) are wiped when
//   freed: GlobalInit gives libcurl an allocator that clears every block it frees.
// - sensitive_body is sent straight from secret memory (CURLOPT_POSTFIELDS or the read callback,
//   no copy by us).
// - sensitive_response bodies are collected in a buffer that is wiped whenever it grows; OpenSSL
//   clears the decrypted data it has handed on (SSL_OP_CLEANSE_PLAINTEXT); libcurl's receive
//   buffer holds the bytes until it is reused or freed.
// - The proxy password is kept NUL-terminated in secret memory for the transport's lifetime;
//   libcurl strdup()s it per handle (CURLOPT_PROXYPASSWORD) and builds the Proxy-Authorization
//   header (base64 of "user:password") in its own buffers, wiped when freed.
#pragma once

#include <openssl/types.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/secret.h"
#include "base/status.h"
#include "jira/http.h"

namespace cakewalk::http {

// Initialises libcurl (and, through it, OpenSSL) once per process. Thread-safe and idempotent;
// main() should call it first thing, before other threads start. CurlTransport::Create calls it
// as well. It also sets SIGPIPE to ignored: with CURLOPT_NOSIGNAL libcurl does not do so, and a
// peer that closes mid-write must not kill the agent.
Status GlobalInit();

// Installs the client identity (certificate chain, then private key, then a consistency check)
// into the SSL_CTX of each new connection. Runs inside a libcurl callback: it must not throw (a
// thrown exception is caught and reported as an internal error) and must not replace the
// SSL_CTX's info callback (the transport uses it to recognise TLS alerts).
using ClientIdentityHook = std::function<Status(SSL_CTX*)>;

inline constexpr std::size_t kDefaultMaxResponseBytes = 16u * 1024u * 1024u;

struct TransportOptions {
  // Where these options come from in the configuration, for hints in error messages:
  // "control_plane" gives "check control_plane.ca_file".
  std::string config_name = "transport";

  // TLS. The server is always verified: against this PEM file when set (and only against it),
  // else against the system trust store.
  std::optional<std::string> ca_file;
  // base64(SHA-256(SubjectPublicKeyInfo)) values; when non-empty, the server key must match one.
  std::vector<std::string> pinned_spki_sha256;
  // Client certificate for mutual TLS; empty: none is presented.
  ClientIdentityHook client_identity;

  std::chrono::milliseconds connect_timeout{10'000};  // TCP, proxy CONNECT and TLS handshake
  std::chrono::milliseconds timeout{60'000};          // whole request; Request::timeout overrides
  std::size_t max_response_bytes = kDefaultMaxResponseBytes;
  std::string user_agent = "cakewalk-agent";

  // HTTP CONNECT proxy, "http://host:port" (no credentials in the URL). nullopt: direct.
  std::optional<std::string> proxy_url;
  std::optional<std::string> proxy_username;
  SecretBytes proxy_password;  // from the token; only with proxy_username
  // Hosts that bypass the proxy, libcurl CURLOPT_NOPROXY syntax ("localhost,.corp.example", "*").
  std::string no_proxy;

  // Idle easy handles (each with its kept-alive connections) kept for reuse.
  std::size_t max_idle_handles = 8;
};

class CurlTransport {
 public:
  // Validates the options (CA file readable and holding certificates, pins well-formed, proxy URL
  // http:// without credentials) and creates the transport.
  static Result<std::unique_ptr<Transport>> Create(TransportOptions options);

  CurlTransport() = delete;
};

}  // namespace cakewalk::http
