// The HTTP seam. jira/curl_transport.cc is the only libcurl user in the tree; the Jira clients and
// the control-plane client in agent/ both send through a Transport.
//
// Security properties every Transport has (see curl_transport.h): HTTPS only, TLS >= 1.2, the
// server always verified (configured CA file or the system store, optional SPKI pins), no
// redirects, connect and total timeouts, and a response-size cap enforced while receiving.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "base/secret.h"
#include "base/status.h"
#include "base/time.h"

namespace cakewalk::http {

struct Header {
  std::string name;
  std::string value;
};

struct Request {
  std::string method = "GET";  // GET, POST, PUT, DELETE
  // Absolute https:// URL. Built only from locally configured base URLs plus path segments and
  // query values that went through UrlEncode(); never from anything a job sent.
  std::string url;
  std::vector<Header> headers;  // never secret: credentials go in the fields below
  // Value of the Authorization header ("Bearer ...", "Basic ..."), wiped after use.
  SecretBytes authorization;
  // Value of the Cookie header (session cookies are credentials), wiped after use.
  SecretBytes cookie;
  std::string body;  // JSON; Content-Type: application/json is added when non-empty
  // Used instead of `body` when non-empty: request bodies that carry a secret (login, token
  // exchange). Wiped after use.
  SecretBytes sensitive_body;
  // The response body carries a secret (OAuth token responses): the transport wipes its own
  // copies, and the caller wipes Response::body after parsing it.
  bool sensitive_response = false;
  // Overrides the transport's total timeout for this request (long polls).
  std::optional<std::chrono::milliseconds> timeout;
  // Never sent twice. libcurl silently sends a request again when a reused connection dies before
  // the first byte of the answer, even if the server acted on it (a write answered by a reset).
  // For a request sent once the transport rules that out while still reusing connections: a body
  // goes out through a callback that cannot rewind, so libcurl fails with reason kNotResent
  // instead of sending it again; a request without a body takes a new connection. Only a
  // connection idle for less than 2 s carries it. Set for writes.
  bool send_once = false;
  // Send on a new connection, never on a kept-alive one.
  bool fresh_connection = false;
  // Cancels the request from another thread, at any point: Send then returns promptly, failed
  // with reason kCancelled, and the connection is not used again. For long polls, which would
  // otherwise hold a stopping agent for up to a minute.
  std::stop_token cancel;
};

struct Response {
  long status = 0;
  // Names lower-cased; Set-Cookie values are in set_cookies only. (Qualified: the member
  // function Header() below would otherwise change the meaning of the name in this class.)
  std::vector<http::Header> headers;
  std::string body;
  // Raw "name=value; attrs" of each Set-Cookie header: session cookies are credentials.
  std::vector<SecretBytes> set_cookies;
  // The server's Date header, when it sent a valid one.
  std::optional<SysTime> server_date;
  // server Date minus local time at receipt (positive: the server is ahead), when Date was sent.
  std::optional<std::chrono::seconds> clock_skew;

  // First header with this (case-insensitive) name.
  std::optional<std::string> Header(std::string_view name) const;
  bool ok() const { return status >= 200 && status < 300; }
};

// Reasons a Transport puts on a failed Status (Status::reason()), so that callers and `doctor`
// can tell the failures apart without parsing messages.
namespace reason {
inline constexpr char kConnectFailed[] = "connect_failed";       // refused, unreachable, DNS
inline constexpr char kTimeout[] = "timeout";                    // connect or total timeout
inline constexpr char kTlsVerifyFailed[] = "tls_verify_failed";  // chain, name or expiry
inline constexpr char kTlsPinMismatch[] = "tls_pin_mismatch";    // no configured SPKI pin matched
inline constexpr char kTlsHandshake[] = "tls_handshake_failed";  // other TLS failures
inline constexpr char kClientCertRejected[] = "client_certificate_rejected";
inline constexpr char kProxyAuthFailed[] = "proxy_auth_failed";  // CONNECT answered 407 or 401
inline constexpr char kProxyError[] = "proxy_error";             // CONNECT answered 502 etc.
inline constexpr char kResponseTooLarge[] = "response_too_large";
inline constexpr char kProtocol[] = "protocol_error";  // malformed HTTP, reset
inline constexpr char kBadUrl[] = "bad_url";           // not https://, unparsable
inline constexpr char kCancelled[] = "cancelled";      // Request::cancel was requested
// A request sent once lost its kept-alive connection before the answer; it was not sent again,
// and the server may or may not have acted on it.
inline constexpr char kNotResent[] = "not_resent";
}  // namespace reason

class Transport {
 public:
  virtual ~Transport() = default;
  // Sends one request. A non-2xx HTTP status is a successful Send (the caller interprets it);
  // a failed Status means no HTTP response was received, with a reason from `reason` above.
  // Thread-safe.
  virtual Result<Response> Send(const Request& request) = 0;
  // Most recent clock skew measured from a server Date header, if any.
  virtual std::optional<std::chrono::seconds> LastClockSkew() const = 0;
  // Drops pooled connections (after errors, or when the client identity changed).
  virtual void ResetConnections() = 0;
};

}  // namespace cakewalk::http
