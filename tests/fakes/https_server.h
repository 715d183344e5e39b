// FakeHttpsServer: a real HTTPS/1.1 server on 127.0.0.1 (ephemeral port), running in the test
// process on its own threads, used as the base of FakeJira and FakeControlPlane.
//
// - TLS via OpenSSL with a certificate from the test PKI (tests/support/pki.h); optionally asks
//   for, or requires and verifies, a client certificate.
// - Every request is passed to a Handler and recorded (method, target, headers, body, client
//   certificate subject) for assertions.
// - Faults are data on the response: a handler (or a queued fault) can delay, stall, reset the
//   connection before headers, or truncate the body.
//
// This is test code: it is deliberately simple, but strict in what it parses (a malformed request
// gets a 400, never a guess).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <json/json.h>

namespace cakewalk::testing {

struct HttpRequest {
  std::string method;
  std::string target;    // as sent: path plus "?query"
  std::string path;      // percent-decoded path, without the query
  std::string raw_path;  // path as sent, still percent-encoded
  // Query parameters, percent-decoded. A repeated name keeps every value in order.
  std::multimap<std::string, std::string> query;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  // Subject of the verified client certificate ("CN=agt_..."), when one was presented.
  std::optional<std::string> client_cert_subject;
  // DER of the client certificate, when one was presented.
  std::string client_cert_der;
  std::chrono::system_clock::time_point received_at;
  // Which TCP connection carried the request: 1 for the first one the server accepted, 2 for the
  // next... (keep-alive reuse shows as equal ids).
  std::uint64_t connection_id = 0;
  std::string tls_version;  // as OpenSSL names it: "TLSv1.3", "TLSv1.2"

  // First header value with this (case-insensitive) name, or "".
  std::string Header(std::string_view name) const;
  // First query value with this name, or nullopt.
  std::optional<std::string> Query(std::string_view name) const;
};

struct Fault {
  enum Kind {
    kNone,
    kDelay,               // wait `delay`, then answer normally
    kResetBeforeHeaders,  // close the connection (TCP RST) without answering
    kTruncateBody,        // announce the full Content-Length, send half the body, close
    kStall,               // send nothing until the client gives up (or `delay` passes), close
  };
  Kind kind = kNone;
  std::chrono::milliseconds delay{0};
};

struct HttpResponse {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  Fault fault;
  // No Content-Length: the body ends when the server closes the connection (HTTP/1.0 style).
  bool close_delimited = false;

  static HttpResponse Json(int status, const Json::Value& body);
  // {"error": {"code": code, "message": message}}
  static HttpResponse Error(int status, std::string_view code, std::string_view message);
  HttpResponse& WithHeader(std::string name, std::string value);
};

// Called on the connection's thread; may block (long polls). Must be thread-safe.
using Handler = std::function<HttpResponse(const HttpRequest&)>;

struct ServerOptions {
  std::string certificate_chain_pem;  // leaf first
  std::string private_key_pem;
  enum class ClientCerts {
    kNone,     // never ask
    kRequest,  // ask, accept any or none, do not verify (a server that ignores client certs)
    kRequire,  // require one that verifies against client_ca_pem (handshake fails otherwise)
    // Ask; a presented certificate must verify against client_ca_pem (handshake fails
    // otherwise), but none is also accepted — the handler decides per endpoint (the control
    // plane's /enroll is called before the agent has a certificate).
    kVerifyIfPresented,
  };
  ClientCerts client_certs = ClientCerts::kNone;
  std::string client_ca_pem;
  // Bind address; "127.0.0.1" unless a test needs another loopback address.
  std::string bind_address = "127.0.0.1";
  std::uint16_t port = 0;  // 0: ephemeral
  // Highest TLS version offered (TLS 1.2 is always the lowest); kTls12 tests the TLS 1.2 paths.
  enum class MaxTls { kTls13, kTls12 };
  MaxTls max_tls = MaxTls::kTls13;
};

class FakeHttpsServer {
 public:
  static std::unique_ptr<FakeHttpsServer> Start(ServerOptions options, Handler handler);
  ~FakeHttpsServer();  // stops and joins every thread

  std::uint16_t port() const;
  // "https://localhost:<port>" — the name in the test PKI's server certificate.
  std::string base_url() const;

  // Faults applied to the next N responses, before the handler's own (FIFO).
  void QueueFault(Fault fault, int count = 1);
  // Every request received so far, in order of arrival.
  std::vector<HttpRequest> requests() const;
  void ClearRequests();
  // Closes every open connection (the client sees a reset on its next use).
  void DropConnections();
  // TCP connections accepted so far (including ones whose TLS handshake failed).
  std::uint64_t connections_accepted() const;
  // CPU time the connections' threads have used so far (TLS, parsing, the handler, answering),
  // the live ones included: what serving costs, apart from the rest of the process.
  double serving_cpu_seconds() const;
  void Stop();

  class Impl;

 private:
  explicit FakeHttpsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cakewalk::testing
