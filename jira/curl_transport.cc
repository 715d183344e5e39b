#include "jira/curl_transport.h"

#include <curl/curl.h>
#include <malloc.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <signal.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <climits>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <mutex>
#include <stop_token>
#include <utility>

#include "base/c_free.h"
#include "base/encoding.h"
#include "base/time.h"

namespace cakewalk::http {
namespace {

using CurlUrl = CPtr<CURLU, curl_url_cleanup>;
using CurlString = CPtr<char, curl_free>;

constexpr std::size_t kMaxHeaderBytes = 256 * 1024;
// How long a connection may have been idle to carry a request: libcurl's default for most, and
// for a request sent once (Request::send_once) far less than the keep-alive timeouts of Jira's
// Tomcat (20 s) or the usual proxies in front of it. libcurl compares whole seconds of idleness
// with "greater than", so 1 lets a connection idle for less than 2 s carry the request.
constexpr long kMaxIdleSeconds = 118;
constexpr long kSendOnceMaxIdleSeconds = 1;
// libcurl's smallest upload buffer (CURLOPT_UPLOAD_BUFFERSIZE accepts 16 KB to 2 MB).
constexpr long kUploadBufferBytes = 16 * 1024;

// ---------------------------------------------------------------------------------------------
// TLS observations. libcurl runs each easy transfer on the calling thread, so the SSL info
// callback records what it sees in thread-local storage that Send() clears before each transfer.

struct TlsObservations {
  int fatal_alert_received = -1;       // TLS alert description, -1: none
  bool certificate_requested = false;  // the server sent a CertificateRequest
};
thread_local TlsObservations t_tls;

void SslInfoCallback(const SSL* ssl, int where, int ret) {
  if ((where & SSL_CB_READ_ALERT) != 0 && (ret >> 8) == SSL3_AL_FATAL) {
    t_tls.fatal_alert_received = ret & 0xff;
  }
  if ((where & SSL_CB_CONNECT_LOOP) != 0) {
    const OSSL_HANDSHAKE_STATE state = SSL_get_state(ssl);
    if (state == TLS_ST_CR_CERT_REQ || state == TLS_ST_CW_CERT) t_tls.certificate_requested = true;
  }
}

// Alerts with which a server rejects the client certificate (RFC 8446 §6.2, RFC 5246 §7.2).
bool IsClientCertAlert(int alert) {
  switch (alert) {
    case 42:   // bad_certificate
    case 43:   // unsupported_certificate
    case 44:   // certificate_revoked
    case 45:   // certificate_expired
    case 46:   // certificate_unknown
    case 48:   // unknown_ca
    case 49:   // access_denied
    case 116:  // certificate_required (TLS 1.3)
      return true;
    default:
      return false;
  }
}

std::string AlertName(int alert) {
  // SSL_alert_desc_string_long takes the info-callback value: level << 8 | description.
  return SSL_alert_desc_string_long((SSL3_AL_FATAL << 8) | alert);
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool HasControlChars(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && c != '\t') || u == 0x7f;
  });
}

// curl's error text, made safe for a message: printable ASCII, bounded.
std::string CurlDetail(CURLcode rc, const char* errbuf) {
  std::string text = (errbuf != nullptr && errbuf[0] != '\0') ? errbuf : curl_easy_strerror(rc);
  if (text.size() > 240) text.resize(240);
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = ' ';
  }
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

struct UrlParts {
  std::string scheme;
  std::string host;
  long port = 0;
  std::string Origin() const { return scheme + "://" + host + ":" + std::to_string(port); }
  std::string HostPort() const { return host + ":" + std::to_string(port); }
};

std::optional<std::string> GetPart(CURLU* u, CURLUPart part, unsigned flags = 0) {
  char* out = nullptr;
  if (curl_url_get(u, part, &out, flags) != CURLUE_OK || out == nullptr) return std::nullopt;
  CurlString owned(out);
  return std::string(out);
}

// Parses an absolute URL; `what` names it in messages. Never echoes path or query (they may carry
// identifiers), only scheme, host and port.
// With `default_port`, a URL without a port gets its scheme's default; otherwise port stays 0.
// `path_and_query`, when given, receives the path plus "?query" as written (for checks only).
Result<UrlParts> ParseUrl(std::string_view url, std::string_view what, bool default_port = true,
                          std::string* path_and_query = nullptr) {
  const Status bad(Code::kInvalidArgument, std::string(what) + " is not a valid absolute URL",
                   reason::kBadUrl);
  if (url.empty() || HasControlChars(url) || url.find(' ') != std::string_view::npos) return bad;
  CurlUrl u(curl_url());
  if (!u) return ResourceExhausted("out of memory parsing a URL");
  const std::string copy(url);
  if (curl_url_set(u.get(), CURLUPART_URL, copy.c_str(), CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK)
    return bad;
  UrlParts parts;
  parts.scheme = Lower(GetPart(u.get(), CURLUPART_SCHEME).value_or(""));
  parts.host = GetPart(u.get(), CURLUPART_HOST).value_or("");
  if (parts.host.empty()) return bad;
  if (GetPart(u.get(), CURLUPART_USER) || GetPart(u.get(), CURLUPART_PASSWORD)) {
    return Status(Code::kInvalidArgument,
                  std::string(what) +
                      " carries credentials (user@ or user:password@ before the "
                      "host); credentials never go into URLs",
                  reason::kBadUrl);
  }
  const auto port = GetPart(u.get(), CURLUPART_PORT, default_port ? CURLU_DEFAULT_PORT : 0u);
  if (port) {
    std::from_chars(port->data(), port->data() + port->size(), parts.port);
  }
  if (path_and_query != nullptr) {
    *path_and_query = GetPart(u.get(), CURLUPART_PATH).value_or("");
    if (auto query = GetPart(u.get(), CURLUPART_QUERY)) *path_and_query += "?" + *query;
  }
  return parts;
}

// A header list for libcurl whose entries may hold credentials: each entry is wiped before the
// list is freed.
class WipedSlist {
 public:
  WipedSlist() = default;
  ~WipedSlist() {
    for (curl_slist* p = list_; p != nullptr; p = p->next) {
      if (p->data != nullptr) OPENSSL_cleanse(p->data, std::strlen(p->data));
    }
    curl_slist_free_all(list_);
  }
  WipedSlist(const WipedSlist&) = delete;
  WipedSlist& operator=(const WipedSlist&) = delete;

  bool Append(const char* line) {
    curl_slist* next = curl_slist_append(list_, line);
    if (next == nullptr) return false;
    list_ = next;
    return true;
  }
  // "Name: <secret>" built in secret memory, then copied by libcurl into the (wiped) entry.
  bool AppendSecret(std::string_view name, const SecretBytes& value) {
    SecretBytes line = SecretBytes::CopyOf(name);
    line.Append(std::string_view(": "));
    line.Append(value);
    line.Append(std::string_view("\0", 1));
    return Append(reinterpret_cast<const char*>(line.Reveal(SecretAccess::Grant()).data()));
  }
  curl_slist* get() const { return list_; }

 private:
  curl_slist* list_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// One transfer's state, reached from the libcurl callbacks.

struct Transfer {
  std::size_t max_body = 0;
  bool sensitive = false;
  const ClientIdentityHook* identity = nullptr;

  Response response;
  bool too_large = false;
  bool callback_failed = false;  // an exception or allocation failure inside a callback
  std::size_t header_bytes = 0;
  Status identity_status;  // set when the client identity hook failed
  bool cancelled = false;  // Request::cancel ended the transfer

  // The body of a request sent once, handed to libcurl by ReadCallback (which cannot rewind).
  std::string_view upload;
  std::size_t uploaded = 0;
};

// Appends to the body (the caller checked the cap). Growth is explicit, so the buffer never
// exceeds the cap (std::string's own growth could double past it), and for sensitive responses
// the old buffer is wiped instead of being freed with the bytes in it.
void AppendBody(Transfer& t, const char* data, std::size_t n) {
  std::string& body = t.response.body;
  if (body.size() + n > body.capacity()) {
    std::string bigger;  // fresh: reserve() on it allocates exactly what is asked
    bigger.reserve(std::min(t.max_body, std::max(body.capacity() * 2, body.size() + n)));
    bigger.append(body);
    if (t.sensitive) WipeString(body);
    body.swap(bigger);
  }
  body.append(data, n);
}

size_t WriteCallback(char* data, size_t size, size_t nmemb, void* userdata) noexcept {
  auto* t = static_cast<Transfer*>(userdata);
  const std::size_t n = size * nmemb;
  if (n > t->max_body - t->response.body.size()) {
    t->too_large = true;
    return 0;  // makes libcurl stop with CURLE_WRITE_ERROR; nothing beyond the cap is stored
  }
  try {
    AppendBody(*t, data, n);
  } catch (...) {
    t->callback_failed = true;
    return 0;
  }
  return n;
}

// Hands libcurl the body of a request sent once. There is deliberately no seek callback: to send
// the request again on a new connection libcurl would have to rewind the body, and without a way
// to it fails with CURLE_SEND_FAIL_REWIND instead. libcurl copies the body into an upload buffer
// that it frees (through WipingFree) when the transfer ends.
size_t ReadCallback(char* buffer, size_t size, size_t nitems, void* userdata) noexcept {
  auto* t = static_cast<Transfer*>(userdata);
  const std::size_t n = std::min(size * nitems, t->upload.size() - t->uploaded);
  std::memcpy(buffer, t->upload.data() + t->uploaded, n);
  t->uploaded += n;
  return n;
}

void StartNewHeaderBlock(Response& r) {
  r.status = 0;
  r.headers.clear();
  r.set_cookies.clear();  // SecretBytes wipe themselves
  r.server_date.reset();
  r.clock_skew.reset();
}

void HandleHeaderLine(Transfer& t, std::string_view line) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  if (line.empty()) return;  // end of a header block
  if (line.substr(0, 5) == "HTTP/") {
    // A new response (after 1xx interim responses): only the last block counts.
    StartNewHeaderBlock(t.response);
    return;
  }
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos) return;
  std::string name = Lower(line.substr(0, colon));
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (name == "set-cookie") {
    t.response.set_cookies.push_back(SecretBytes::CopyOf(value));
    return;
  }
  if (name == "date") {
    if (auto when = ParseHttpDate(value); when.ok()) {
      t.response.server_date = *when;
      t.response.clock_skew =
          std::chrono::round<std::chrono::seconds>(*when - std::chrono::system_clock::now());
    }
  } else if (name == "content-length") {
    std::size_t length = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
    if (ec == std::errc() && end == value.data() + value.size()) {
      if (length > t.max_body) {
        t.too_large = true;
      } else if (t.response.body.capacity() < length) {
        t.response.body.reserve(length);  // at most the cap
      }
    }
  }
  t.response.headers.push_back({std::move(name), std::string(value)});
}

size_t HeaderCallback(char* data, size_t size, size_t nitems, void* userdata) noexcept {
  auto* t = static_cast<Transfer*>(userdata);
  const std::size_t n = size * nitems;
  t->header_bytes += n;
  if (t->header_bytes > kMaxHeaderBytes) {
    t->too_large = true;
    return 0;
  }
  try {
    HandleHeaderLine(*t, std::string_view(data, n));
  } catch (...) {
    t->callback_failed = true;
    return 0;
  }
  return t->too_large ? 0 : n;
}

CURLcode SslCtxCallback(CURL*, void* ssl_ctx, void* userdata) noexcept {
  auto* t = static_cast<Transfer*>(userdata);
  auto* ctx = static_cast<SSL_CTX*>(ssl_ctx);
  SSL_CTX_set_info_callback(ctx, SslInfoCallback);
  // OpenSSL otherwise leaves decrypted data (a token response, a session cookie) in its read
  // buffer until the next record overwrites it, and frees that buffer without clearing it.
  SSL_CTX_set_options(ctx, SSL_OP_CLEANSE_PLAINTEXT);
  if (t->identity == nullptr || !*t->identity) return CURLE_OK;
  try {
    Status s = (*t->identity)(ctx);
    if (!s.ok()) {
      t->identity_status = std::move(s);
      return CURLE_ABORTED_BY_CALLBACK;
    }
  } catch (const std::exception& e) {
    t->identity_status = Internal(std::string("client identity hook threw: ") + e.what());
    return CURLE_ABORTED_BY_CALLBACK;
  } catch (...) {
    t->identity_status = Internal("client identity hook threw");
    return CURLE_ABORTED_BY_CALLBACK;
  }
  return CURLE_OK;
}

// ---------------------------------------------------------------------------------------------
// The transport.

// An easy handle driven through its own multi handle. The multi handle owns the connection cache
// (as the hidden one of curl_easy_perform would), so it lives as long as the easy handle:
// kept-alive connections survive between transfers. The transfer is driven with curl_multi_poll for
// exactly as long as libcurl's next timer (curl_easy_perform caps each wait at one second, which
// woke an idle agent's long poll every second).
// TLS sessions shared by the easy handles of one transport and one generation (libcurl keeps a
// session cache per easy handle otherwise): a fresh connection from any pooled handle resumes the
// session of an earlier one instead of a full handshake. Resumption skips no check: libcurl
// only offers a session to the same host, port and TLS settings (CA file, pins, verification),
// the pin and verify result are checked again on every connection (OpenSSL keeps the peer
// certificate and its verify result in the session), and the SSL_CTX callback (client identity,
// info callback) runs for every new connection. ResetConnections starts a new share, so
// sessions do not outlive the connections dropped with them.
class SessionShare {
 public:
  static std::shared_ptr<SessionShare> Create() {
    auto share = std::shared_ptr<SessionShare>(new SessionShare());
    share->share_ = curl_share_init();
    if (share->share_ == nullptr) return nullptr;
    CURLSH* sh = share->share_;
    if (curl_share_setopt(sh, CURLSHOPT_LOCKFUNC, &SessionShare::Lock) != CURLSHE_OK ||
        curl_share_setopt(sh, CURLSHOPT_UNLOCKFUNC, &SessionShare::Unlock) != CURLSHE_OK ||
        curl_share_setopt(sh, CURLSHOPT_USERDATA, static_cast<void*>(share.get())) != CURLSHE_OK ||
        curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK) {
      return nullptr;
    }
    return share;
  }
  SessionShare(const SessionShare&) = delete;
  SessionShare& operator=(const SessionShare&) = delete;
  // Only after every easy handle that used it is gone (the handles hold a shared_ptr).
  ~SessionShare() {
    if (share_ != nullptr) curl_share_cleanup(share_);
  }
  CURLSH* get() const { return share_; }

 private:
  SessionShare() = default;
  std::mutex& For(curl_lock_data data) {
    const auto i = static_cast<std::size_t>(data);
    return mu_[i < std::size(mu_) ? i : 0];
  }
  static void Lock(CURL*, curl_lock_data data, curl_lock_access, void* self) noexcept {
    static_cast<SessionShare*>(self)->For(data).lock();
  }
  static void Unlock(CURL*, curl_lock_data data, void* self) noexcept {
    static_cast<SessionShare*>(self)->For(data).unlock();
  }

  CURLSH* share_ = nullptr;
  std::mutex mu_[CURL_LOCK_DATA_LAST];  // one per kind of shared data libcurl locks
};

struct Handle {
  std::shared_ptr<SessionShare> sessions;  // destroyed after the easy handle (declared first)
  CURL* curl = nullptr;
  CURLM* multi = nullptr;
  std::uint64_t generation = 0;
  char errbuf[CURL_ERROR_SIZE] = {};

  Handle() = default;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() {
    // The easy handle is never attached between transfers; the multi handle closes the cached
    // connections.
    if (multi != nullptr) curl_multi_cleanup(multi);
    if (curl != nullptr) curl_easy_cleanup(curl);
  }
};

// Runs one transfer of `c` through `multi` on the calling thread and returns its result, like
// curl_easy_perform. `timeout` is the request's total timeout (CURLOPT_TIMEOUT_MS, which libcurl
// enforces and reports as a timer); it also bounds a wait for which libcurl names no timer.
// A stop requested on `cancel` wakes the wait (curl_multi_wakeup may be called from any thread)
// and ends the transfer with CURLE_ABORTED_BY_CALLBACK.
CURLcode Perform(CURLM* multi, CURL* c, std::chrono::milliseconds timeout,
                 const std::stop_token& cancel) {
  if (cancel.stop_requested()) return CURLE_ABORTED_BY_CALLBACK;
  if (curl_multi_add_handle(multi, c) != CURLM_OK) return CURLE_FAILED_INIT;
  std::stop_callback wake(cancel, [multi] { curl_multi_wakeup(multi); });
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  CURLcode result = CURLE_OK;
  bool done = false;
  while (!done) {
    if (cancel.stop_requested()) {
      result = CURLE_ABORTED_BY_CALLBACK;
      break;
    }
    int running = 0;
    const CURLMcode mc = curl_multi_perform(multi, &running);
    if (mc != CURLM_OK) {
      result = mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_SEND_ERROR;
      break;
    }
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &queued)) {
      if (msg->msg == CURLMSG_DONE && msg->easy_handle == c) {
        result = msg->data.result;
        done = true;
      }
    }
    if (done) break;
    if (running == 0) {  // finished without a message: not expected from libcurl
      result = CURLE_GOT_NOTHING;
      break;
    }
    long next_ms = -1;
    curl_multi_timeout(multi, &next_ms);
    const auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    // No timer from libcurl: wait for the sockets, at most until the request's deadline (and at
    // least 10 ms past it, so that a late wake-up cannot spin).
    const long bound = static_cast<long>(std::max<std::int64_t>(remaining.count(), 10));
    const long wait_ms = next_ms < 0 ? bound : std::min(next_ms, bound);
    if (wait_ms > 0) {
      const CURLMcode pc = curl_multi_poll(
          multi, nullptr, 0, static_cast<int>(std::min<long>(wait_ms, INT_MAX)), nullptr);
      if (pc != CURLM_OK) {
        result = pc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_RECV_ERROR;
        break;
      }
    }
  }
  curl_multi_remove_handle(multi, c);
  return result;
}

struct ProxyConfig {
  UrlParts url;
  std::string normalized;  // "http://host:port"
};

class CurlTransportImpl final : public Transport {
 public:
  explicit CurlTransportImpl(TransportOptions options) : options_(std::move(options)) {}

  Status Init();
  Result<Response> Send(const Request& request) override;
  std::optional<std::chrono::seconds> LastClockSkew() const override {
    std::lock_guard lock(skew_mu_);
    return last_skew_;
  }
  void ResetConnections() override {
    std::vector<std::unique_ptr<Handle>> doomed;
    {
      std::lock_guard lock(pool_mu_);
      ++generation_;
      doomed.swap(idle_);
      sessions_.reset();  // the next new handle starts a new share
    }
    // Destroyed outside the lock: curl_easy_cleanup may send TLS close_notify.
  }

 private:
  Result<std::unique_ptr<Handle>> NewHandle();
  Result<std::unique_ptr<Handle>> Checkout();
  void Return(std::unique_ptr<Handle> handle);
  Status MapError(CURLcode rc, const Handle& handle, const Transfer& t, const UrlParts& url,
                  std::chrono::milliseconds timeout) const;
  std::string Hint(std::string_view key) const {
    return options_.config_name + "." + std::string(key);
  }
  std::string ProxyHint() const { return Hint("proxy") + " (or https_proxy)"; }

  TransportOptions options_;
  std::optional<ProxyConfig> proxy_;
  std::string pins_;                 // "sha256//a;sha256//b"
  SecretBytes proxy_password_cstr_;  // NUL-terminated copy for CURLOPT_PROXYPASSWORD

  std::mutex pool_mu_;
  std::vector<std::unique_ptr<Handle>> idle_;
  std::uint64_t generation_ = 0;
  std::shared_ptr<SessionShare> sessions_;  // of the current generation

  mutable std::mutex skew_mu_;
  std::optional<std::chrono::seconds> last_skew_;
};

Status CurlTransportImpl::Init() {
  // TLS trust.
  if (options_.ca_file) {
    if (options_.ca_file->empty() || HasControlChars(*options_.ca_file)) {
      return InvalidArgument(Hint("ca_file") + " is empty or malformed");
    }
    CPtr<X509_STORE, X509_STORE_free> store(X509_STORE_new());
    if (!store || X509_STORE_load_file(store.get(), options_.ca_file->c_str()) != 1) {
      ERR_clear_error();
      return FailedPrecondition("cannot load CA certificates from " + *options_.ca_file +
                                ": not a readable PEM file with at least one certificate; check " +
                                Hint("ca_file"));
    }
  }
  for (std::size_t i = 0; i < options_.pinned_spki_sha256.size(); ++i) {
    const std::string& pin = options_.pinned_spki_sha256[i];
    auto decoded = Base64Decode(pin);
    if (pin.empty() || !decoded.ok() || decoded->size() != 32) {
      return InvalidArgument(Hint("pinned_spki_sha256") + "[" + std::to_string(i) +
                             "] is not the base64 of a SHA-256 digest (44 characters)");
    }
    pins_ += (pins_.empty() ? "sha256//" : ";sha256//") + pin;
  }
  if (options_.connect_timeout.count() <= 0 || options_.timeout.count() <= 0) {
    return InvalidArgument("transport timeouts must be positive");
  }
  if (options_.max_response_bytes == 0) {
    return InvalidArgument("the response size cap must be positive");
  }
  if (HasControlChars(options_.user_agent) || HasControlChars(options_.no_proxy)) {
    return InvalidArgument("user agent and no_proxy must not contain control characters");
  }

  // Proxy.
  if (options_.proxy_url) {
    std::string path;
    auto parts = ParseUrl(*options_.proxy_url, "the proxy URL", false, &path);
    if (!parts.ok()) return parts.status().WithContext(ProxyHint());
    auto bad = [&](std::string problem) {
      return Status(Code::kInvalidArgument, ProxyHint() + ": " + problem, reason::kBadUrl);
    };
    if (parts->scheme != "http") {
      return bad("only http:// proxies are supported (got " + parts->scheme +
                 "://); the connection to the server is TLS end to end through the proxy's "
                 "CONNECT tunnel either way");
    }
    if (parts->port == 0) {
      // libcurl would guess 1080, other tools 80: make the operator say it.
      return bad("the proxy URL must name its port (http://" + parts->host + ":<port>)");
    }
    if (!path.empty() && path != "/") return bad("the proxy URL must not have a path or query");
    proxy_ = ProxyConfig{*parts, "http://" + parts->HostPort()};
  }
  if (!options_.proxy_password.empty()) {
    if (!proxy_ || !options_.proxy_username) {
      return InvalidArgument("a proxy password is configured without a proxy and a proxy user");
    }
    const auto pw = options_.proxy_password.RevealString(SecretAccess::Grant());
    if (pw.find('\0') != std::string_view::npos) {
      return InvalidArgument("the proxy password contains a NUL byte");
    }
    proxy_password_cstr_ = std::move(options_.proxy_password);
    proxy_password_cstr_.Append(std::string_view("\0", 1));
  }
  if (options_.proxy_username && (HasControlChars(*options_.proxy_username) || !proxy_)) {
    return InvalidArgument(Hint("proxy_username") + " is malformed or set without a proxy");
  }

  // One handle up front: option errors show at start, not at the first request.
  CW_ASSIGN_OR_RETURN(auto first, NewHandle());
  Return(std::move(first));
  return Status::Ok();
}

Result<std::unique_ptr<Handle>> CurlTransportImpl::NewHandle() {
  auto h = std::make_unique<Handle>();
  h->curl = curl_easy_init();
  if (h->curl == nullptr) return ResourceExhausted("curl_easy_init failed");
  h->multi = curl_multi_init();
  if (h->multi == nullptr) return ResourceExhausted("curl_multi_init failed");
  // curl_easy_perform's own multi handle keeps as many connections as the easy handle's
  // CURLOPT_MAXCONNECTS (5 by default); ours does the same.
  if (curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, 5L) != CURLM_OK) {
    return Internal("libcurl rejected option CURLMOPT_MAXCONNECTS");
  }
  CURL* c = h->curl;
  CURLcode rc = CURLE_OK;
  const char* failed = nullptr;
  auto set = [&](const char* name, auto option, auto value) {
    if (rc != CURLE_OK) return;
    rc = curl_easy_setopt(c, option, value);
    if (rc != CURLE_OK) failed = name;
  };
  set("ERRORBUFFER", CURLOPT_ERRORBUFFER, h->errbuf);
  set("NOSIGNAL", CURLOPT_NOSIGNAL, 1L);
  set("PROTOCOLS_STR", CURLOPT_PROTOCOLS_STR, "https");
  set("REDIR_PROTOCOLS_STR", CURLOPT_REDIR_PROTOCOLS_STR, "https");
  set("FOLLOWLOCATION", CURLOPT_FOLLOWLOCATION, 0L);
  set("MAXREDIRS", CURLOPT_MAXREDIRS, 0L);
  set("HTTP_VERSION", CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
  set("SSL_VERIFYPEER", CURLOPT_SSL_VERIFYPEER, 1L);
  set("SSL_VERIFYHOST", CURLOPT_SSL_VERIFYHOST, 2L);
  set("SSLVERSION", CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
  if (options_.ca_file) set("CAINFO", CURLOPT_CAINFO, options_.ca_file->c_str());
  // Trust comes from one bundle file: the configured CA, or the system's bundle (libcurl's
  // compiled-in CAINFO, /etc/ssl/certs/ca-certificates.crt on Debian, which update-ca-certificates
  // writes from the same sources as the hashed directory). Without a CA directory libcurl keeps
  // the parsed store in its CA cache (CURLOPT_CA_CACHE_TIMEOUT, 24 h); with one it parses the
  // whole bundle again for every new connection, i.e. for every Jira write.
  set("CAPATH", CURLOPT_CAPATH, static_cast<const char*>(nullptr));
  if (!pins_.empty()) set("PINNEDPUBLICKEY", CURLOPT_PINNEDPUBLICKEY, pins_.c_str());
  set("SSL_CTX_FUNCTION", CURLOPT_SSL_CTX_FUNCTION, SslCtxCallback);
  set("CONNECTTIMEOUT_MS", CURLOPT_CONNECTTIMEOUT_MS,
      static_cast<long>(options_.connect_timeout.count()));
  set("TCP_KEEPALIVE", CURLOPT_TCP_KEEPALIVE, 1L);
  set("USERAGENT", CURLOPT_USERAGENT, options_.user_agent.c_str());
  // libcurl allocates an upload buffer for every transfer (64 KB by default) and frees it when the
  // transfer ends, where WipingFree clears all of it, faulting in pages nothing wrote. With its
  // minimum (16 KB) each request wipes a quarter of that; the rare large body (a batch of sync
  // records) only takes more read callbacks.
  set("UPLOAD_BUFFERSIZE", CURLOPT_UPLOAD_BUFFERSIZE, kUploadBufferBytes);
  set("MAXFILESIZE_LARGE", CURLOPT_MAXFILESIZE_LARGE,
      static_cast<curl_off_t>(options_.max_response_bytes));
  {
    std::lock_guard lock(pool_mu_);
    if (sessions_ == nullptr) sessions_ = SessionShare::Create();
    if (sessions_ == nullptr) return ResourceExhausted("curl_share_init failed");
    h->sessions = sessions_;
    h->generation = generation_;
  }
  set("SHARE", CURLOPT_SHARE, h->sessions->get());
  set("WRITEFUNCTION", CURLOPT_WRITEFUNCTION, WriteCallback);
  set("HEADERFUNCTION", CURLOPT_HEADERFUNCTION, HeaderCallback);
  // Proxy: always explicit, so libcurl never consults https_proxy/no_proxy itself (an empty
  // CURLOPT_PROXY means "no proxy"; a set CURLOPT_NOPROXY wins over NO_PROXY in the environment).
  set("PROXY", CURLOPT_PROXY, proxy_ ? proxy_->normalized.c_str() : "");
  set("NOPROXY", CURLOPT_NOPROXY, options_.no_proxy.c_str());
  if (proxy_) {
    set("PROXYTYPE", CURLOPT_PROXYTYPE, static_cast<long>(CURLPROXY_HTTP));
    set("HTTPPROXYTUNNEL", CURLOPT_HTTPPROXYTUNNEL, 1L);
    set("SUPPRESS_CONNECT_HEADERS", CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    if (options_.proxy_username) {
      set("PROXYAUTH", CURLOPT_PROXYAUTH, static_cast<unsigned long>(CURLAUTH_ANY));
      set("PROXYUSERNAME", CURLOPT_PROXYUSERNAME, options_.proxy_username->c_str());
      if (!proxy_password_cstr_.empty()) {
        // libcurl keeps its own strdup()ed copy, freed unwiped (see the header).
        set("PROXYPASSWORD", CURLOPT_PROXYPASSWORD,
            reinterpret_cast<const char*>(
                proxy_password_cstr_.Reveal(SecretAccess::Grant()).data()));
      }
    }
  }
  if (rc != CURLE_OK) {
    return Internal(std::string("libcurl rejected option CURLOPT_") + failed + ": " +
                    curl_easy_strerror(rc));
  }
  return h;
}

Result<std::unique_ptr<Handle>> CurlTransportImpl::Checkout() {
  {
    std::lock_guard lock(pool_mu_);
    if (!idle_.empty()) {
      auto h = std::move(idle_.back());
      idle_.pop_back();
      return h;
    }
  }
  return NewHandle();
}

void CurlTransportImpl::Return(std::unique_ptr<Handle> handle) {
  {
    std::lock_guard lock(pool_mu_);
    if (handle->generation == generation_ && idle_.size() < options_.max_idle_handles) {
      idle_.push_back(std::move(handle));
      return;
    }
  }
  // A stale generation (ResetConnections) or a full pool: destroyed here, outside the lock.
}

Result<Response> CurlTransportImpl::Send(const Request& request) {
  // Refuse before anything touches the network.
  auto url_or = ParseUrl(request.url, "the request URL");
  if (!url_or.ok()) return url_or.status();
  const UrlParts url = std::move(url_or).value();
  if (url.scheme != "https") {
    return Status(Code::kInvalidArgument,
                  "refusing to send a request to " + url.scheme + "://" + url.HostPort() +
                      ": only https:// URLs are allowed; check " + Hint("url"),
                  reason::kBadUrl);
  }
  const std::string method = request.method;
  const bool has_body_method = method == "POST" || method == "PUT" || method == "PATCH";
  if (method != "GET" && method != "DELETE" && !has_body_method) {
    return InvalidArgument("unsupported HTTP method '" + method + "'");
  }
  if (!request.body.empty() && !request.sensitive_body.empty()) {
    return InvalidArgument("a request has either a body or a sensitive body, not both");
  }
  const bool sensitive_body = !request.sensitive_body.empty();
  const std::size_t body_size =
      sensitive_body ? request.sensitive_body.size() : request.body.size();
  if (method == "GET" && body_size > 0) return InvalidArgument("a GET request cannot have a body");

  WipedSlist headers;
  bool have_content_type = false;
  for (const auto& h : request.headers) {
    const std::string name = Lower(h.name);
    if (name.empty() || HasControlChars(h.name) || HasControlChars(h.value) ||
        h.name.find(':') != std::string::npos || h.name.find(' ') != std::string::npos) {
      return InvalidArgument("malformed request header '" + h.name + "'");
    }
    if (name == "authorization" || name == "proxy-authorization" || name == "cookie") {
      return InvalidArgument("header '" + h.name +
                             "' carries credentials: use Request::authorization or cookie");
    }
    if (name == "host" || name == "content-length" || name == "transfer-encoding" ||
        name == "connection" || name == "expect") {
      return InvalidArgument("header '" + h.name + "' is managed by the transport");
    }
    if (name == "content-type") have_content_type = true;
    if (!headers.Append((h.name + ": " + h.value).c_str())) return ResourceExhausted("headers");
  }
  bool ok = true;
  if (!have_content_type) {
    // With no body, "Content-Type:" removes libcurl's form-encoding default for POST.
    ok = headers.Append(body_size > 0 ? "Content-Type: application/json" : "Content-Type:");
  }
  ok = ok && headers.Append("Expect:");  // no 100-continue round trip
  for (const auto& [name, secret] :
       {std::pair<std::string_view, const SecretBytes*>{"Authorization", &request.authorization},
        {"Cookie", &request.cookie}}) {
    if (secret->empty()) continue;
    const auto bytes = secret->RevealString(SecretAccess::Grant());
    if (HasControlChars(bytes) || bytes.find('\0') != std::string_view::npos) {
      return InvalidArgument(std::string(name) + " value contains control characters");
    }
    ok = ok && headers.AppendSecret(name, *secret);
  }
  if (!ok) return ResourceExhausted("out of memory building request headers");

  CW_ASSIGN_OR_RETURN(std::unique_ptr<Handle> handle, Checkout());
  CURL* c = handle->curl;
  Transfer t;
  t.max_body = options_.max_response_bytes;
  t.sensitive = request.sensitive_response;
  t.identity = &options_.client_identity;
  const std::chrono::milliseconds timeout = request.timeout.value_or(options_.timeout);

  const char* body_data = sensitive_body
                              ? reinterpret_cast<const char*>(
                                    request.sensitive_body.Reveal(SecretAccess::Grant()).data())
                              : request.body.data();
  CURLcode rc = CURLE_OK;
  auto set = [&](auto option, auto value) {
    if (rc == CURLE_OK) rc = curl_easy_setopt(c, option, value);
  };
  // A request sent once with a body goes out through ReadCallback, so libcurl cannot send it
  // again by itself; one without a body, which libcurl could send again, takes a new connection.
  const bool read_body = request.send_once && body_size > 0;
  const bool fresh = request.fresh_connection || (request.send_once && body_size == 0);
  set(CURLOPT_URL, request.url.c_str());
  if (has_body_method || (method == "DELETE" && body_size > 0)) {
    set(CURLOPT_POST, 1L);
    set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body_size));
    if (read_body) {
      t.upload = std::string_view(body_data, body_size);
      set(CURLOPT_READFUNCTION, ReadCallback);
      set(CURLOPT_READDATA, static_cast<void*>(&t));
    } else {
      set(CURLOPT_POSTFIELDS, body_size > 0 ? body_data : "");  // not copied by libcurl
    }
    set(CURLOPT_CUSTOMREQUEST, method == "POST" ? nullptr : method.c_str());
  } else {
    set(CURLOPT_HTTPGET, 1L);
    set(CURLOPT_CUSTOMREQUEST, method == "GET" ? nullptr : method.c_str());
  }
  set(CURLOPT_HTTPHEADER, headers.get());
  set(CURLOPT_FRESH_CONNECT, fresh ? 1L : 0L);
  // A request sent once reuses only a connection that was busy moments ago: one a server is
  // about to close for idleness is where libcurl's resend would otherwise have happened, and
  // where this request would now fail.
  set(CURLOPT_MAXAGE_CONN, request.send_once ? kSendOnceMaxIdleSeconds : kMaxIdleSeconds);
  set(CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  set(CURLOPT_WRITEDATA, static_cast<void*>(&t));
  set(CURLOPT_HEADERDATA, static_cast<void*>(&t));
  set(CURLOPT_SSL_CTX_DATA, static_cast<void*>(&t));
  if (rc != CURLE_OK) {
    return Internal(std::string("libcurl rejected a request option: ") + curl_easy_strerror(rc));
  }

  handle->errbuf[0] = '\0';
  t_tls = TlsObservations{};
  rc = Perform(handle->multi, c, timeout, request.cancel);
  t.cancelled = rc == CURLE_ABORTED_BY_CALLBACK && request.cancel.stop_requested();

  // The handle must not keep pointers into this request.
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, static_cast<curl_slist*>(nullptr));
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, static_cast<const char*>(nullptr));
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, static_cast<const char*>(nullptr));
  curl_easy_setopt(c, CURLOPT_WRITEDATA, static_cast<void*>(nullptr));
  curl_easy_setopt(c, CURLOPT_HEADERDATA, static_cast<void*>(nullptr));
  curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, static_cast<void*>(nullptr));
  if (read_body) {
    curl_easy_setopt(c, CURLOPT_READFUNCTION, static_cast<curl_read_callback>(nullptr));
    curl_easy_setopt(c, CURLOPT_READDATA, static_cast<void*>(nullptr));
  }

  if (rc != CURLE_OK || t.too_large || t.callback_failed) {
    Status status = MapError(rc, *handle, t, url, timeout);
    if (t.sensitive) WipeString(t.response.body);
    handle.reset();  // a failed handle is never reused: its connection may be half-used
    return status;
  }
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  t.response.status = code;
  if (t.response.clock_skew) {
    std::lock_guard lock(skew_mu_);
    last_skew_ = t.response.clock_skew;
  }
  Return(std::move(handle));
  return std::move(t.response);
}

Status CurlTransportImpl::MapError(CURLcode rc, const Handle& handle, const Transfer& t,
                                   const UrlParts& url, std::chrono::milliseconds timeout) const {
  CURL* c = handle.curl;
  const std::string host = url.HostPort();
  const std::string detail = " (curl: " + CurlDetail(rc, handle.errbuf) + ")";
  auto fail = [](Code code, std::string message, const char* why) {
    return Status(code, std::move(message), why);
  };

  if (!t.identity_status.ok()) {
    Status s = t.identity_status.WithContext("cannot present the client certificate to " + host);
    return s.reason().empty() ? s.WithReason(reason::kTlsHandshake) : s;
  }
  if (t.cancelled) {
    return fail(Code::kAborted, "the request to " + host + " was cancelled", reason::kCancelled);
  }
  if (t.too_large || rc == CURLE_FILESIZE_EXCEEDED) {
    return fail(Code::kFailedPrecondition,
                "the response from " + host + " exceeds the " +
                    std::to_string(options_.max_response_bytes) +
                    "-byte limit; it was discarded while receiving",
                reason::kResponseTooLarge);
  }
  if (t.callback_failed) {
    return fail(Code::kResourceExhausted, "out of memory receiving the response from " + host,
                reason::kProtocol);
  }

  // Proxy CONNECT answers.
  long connect_code = 0;
  curl_easy_getinfo(c, CURLINFO_HTTP_CONNECTCODE, &connect_code);
  if (proxy_ && connect_code != 0 && (connect_code < 200 || connect_code >= 300)) {
    const std::string proxy = proxy_->url.HostPort();
    if (connect_code == 407 || connect_code == 401) {
      // tinyproxy answers a wrong password with 401 instead of 407.
      std::string who =
          options_.proxy_username
              ? "the proxy refused the credentials for user '" + *options_.proxy_username + "'"
              : "the proxy requires authentication and no proxy user is configured";
      return fail(Code::kUnavailable,
                  "proxy " + proxy + " answered " + std::to_string(connect_code) + " to CONNECT " +
                      host + ": " + who + "; check " + Hint("proxy_username") +
                      " and the token secret 'proxy-password'",
                  reason::kProxyAuthFailed);
    }
    return fail(Code::kUnavailable,
                "proxy " + proxy + " refused to open a tunnel to " + host + " (CONNECT answered " +
                    std::to_string(connect_code) + "); check that the proxy allows CONNECT to " +
                    "this host and port",
                reason::kProxyError);
  }

  switch (rc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      return fail(Code::kInvalidArgument, "the URL for " + host + " was refused" + detail,
                  reason::kBadUrl);
    case CURLE_COULDNT_RESOLVE_PROXY:
      return fail(Code::kUnavailable,
                  "cannot resolve the proxy host " + proxy_->url.host + "; check " + ProxyHint(),
                  reason::kProxyError);
    case CURLE_COULDNT_RESOLVE_HOST:
      return fail(Code::kUnavailable,
                  "cannot resolve " + url.host + "; check " + Hint("url") + " and DNS" + detail,
                  reason::kConnectFailed);
    case CURLE_COULDNT_CONNECT: {
      // libcurl names the address it failed to reach ("Failed to connect to <host> port <n>");
      // it reports no primary address for a failed connect.
      if (proxy_ && std::string_view(handle.errbuf)
                            .find(proxy_->url.host + " port " + std::to_string(proxy_->url.port)) !=
                        std::string_view::npos) {
        return fail(Code::kUnavailable,
                    "cannot connect to the proxy " + proxy_->url.HostPort() + "; check " +
                        ProxyHint() + detail,
                    reason::kProxyError);
      }
      return fail(Code::kUnavailable,
                  "cannot connect to " + host + "; check " + Hint("url") +
                      ", DNS and that outbound HTTPS is allowed" + detail,
                  reason::kConnectFailed);
    }
    case CURLE_OPERATION_TIMEDOUT: {
      long request_bytes = 0;  // 0: the request was never sent, we were still connecting
      curl_easy_getinfo(c, CURLINFO_REQUEST_SIZE, &request_bytes);
      if (request_bytes == 0) {
        return fail(Code::kDeadlineExceeded,
                    "timed out connecting to " + host + " (TCP, proxy or TLS handshake)" + detail,
                    reason::kTimeout);
      }
      return fail(Code::kDeadlineExceeded,
                  "no complete response from " + host + " within " +
                      std::to_string(timeout.count()) + " ms" + detail,
                  reason::kTimeout);
    }
    case CURLE_PEER_FAILED_VERIFICATION: {
      long verify = X509_V_OK;
      curl_easy_getinfo(c, CURLINFO_SSL_VERIFYRESULT, &verify);
      std::string what;
      std::string action = "check " + Hint("ca_file") + " (or the system trust store)";
      // libcurl checks the host name itself after OpenSSL accepted the chain; the verify result
      // then still holds libcurl's initial "unspecified" value.
      const bool host_mismatch =
          verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH ||
          std::string_view(handle.errbuf).find("target host name") != std::string_view::npos;
      switch (host_mismatch ? X509_V_ERR_HOSTNAME_MISMATCH : verify) {
        case X509_V_ERR_HOSTNAME_MISMATCH:
          what = "its certificate is not valid for the host name " + url.host;
          action = "check that " + Hint("url") + " uses a name in the server certificate";
          break;
        case X509_V_ERR_CERT_HAS_EXPIRED:
          what = "its certificate has expired";
          action = "the server certificate must be renewed; also check the local clock";
          break;
        case X509_V_ERR_CERT_NOT_YET_VALID:
          what = "its certificate is not yet valid";
          action = "check the local clock";
          break;
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
          what = "its certificate is self-signed and not trusted";
          break;
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:  // the chain ends in an untrusted root
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
          what = "its certificate is not issued by a trusted CA";
          break;
        default:
          what = "its certificate chain is not valid";
          break;
      }
      std::string openssl;
      if (verify != X509_V_OK && !host_mismatch) {
        openssl = std::string(" (OpenSSL: ") + X509_verify_cert_error_string(verify) + ")";
      }
      return fail(Code::kUnavailable,
                  "TLS verification of " + host + " failed: " + what + openssl + "; " + action,
                  reason::kTlsVerifyFailed);
    }
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
      return fail(Code::kUnavailable,
                  "the public key of " + host + " matches none of the " +
                      std::to_string(options_.pinned_spki_sha256.size()) +
                      " configured pins; check " + Hint("pinned_spki_sha256") +
                      " (the server key may have been rotated)",
                  reason::kTlsPinMismatch);
    case CURLE_SSL_CACERT_BADFILE:
      return fail(
          Code::kFailedPrecondition,
          "cannot load the CA certificates for " + host + "; check " + Hint("ca_file") + detail,
          reason::kTlsVerifyFailed);
    case CURLE_OUT_OF_MEMORY:
      return fail(Code::kResourceExhausted, "out of memory talking to " + host, reason::kProtocol);
    case CURLE_ABORTED_BY_CALLBACK:
      return fail(Code::kInternal, "the transfer to " + host + " was aborted" + detail,
                  reason::kProtocol);
    default:
      break;
  }

  // Everything else is a TLS or HTTP failure after connecting; an alert from the server tells
  // a rejected client certificate apart (TLS 1.3 reports it only on the first read).
  const int alert = t_tls.fatal_alert_received;
  if (alert >= 0 && (IsClientCertAlert(alert) || (alert == 40 && t_tls.certificate_requested))) {
    const std::string presented = options_.client_identity
                                      ? "the agent's client certificate"
                                      : "the connection (no client certificate is configured)";
    return fail(Code::kUnavailable,
                host + " rejected " + presented + " with TLS alert '" + AlertName(alert) +
                    "'; the certificate may be expired, revoked or from another CA — the agent "
                    "may need to enroll again",
                reason::kClientCertRejected);
  }
  if (rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_SSL_CIPHER ||
      rc == CURLE_SSL_ENGINE_NOTFOUND || rc == CURLE_SSL_ENGINE_SETFAILED ||
      rc == CURLE_SSL_ENGINE_INITFAILED || rc == CURLE_USE_SSL_FAILED) {
    std::string with_alert =
        alert >= 0 ? " (server sent TLS alert '" + AlertName(alert) + "')" : std::string();
    return fail(Code::kUnavailable, "TLS handshake with " + host + " failed" + with_alert + detail,
                reason::kTlsHandshake);
  }
  if (rc == CURLE_SEND_FAIL_REWIND) {
    // Only a request sent once gets here: its kept-alive connection died before the answer began.
    return fail(Code::kUnavailable,
                "the connection to " + host +
                    " closed before the server answered; the request was not sent again, since "
                    "the server may have acted on it" +
                    detail,
                reason::kNotResent);
  }
  if (rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR || rc == CURLE_GOT_NOTHING ||
      rc == CURLE_PARTIAL_FILE || rc == CURLE_WEIRD_SERVER_REPLY ||
      rc == CURLE_BAD_CONTENT_ENCODING || rc == CURLE_HTTP2 || rc == CURLE_HTTP2_STREAM ||
      rc == CURLE_HTTP3 || rc == CURLE_SSL_SHUTDOWN_FAILED || rc == CURLE_READ_ERROR) {
    std::string what = rc == CURLE_PARTIAL_FILE  ? "the response body was cut short"
                       : rc == CURLE_GOT_NOTHING ? "the server closed the connection without "
                                                   "answering"
                                                 : "the connection broke or the reply was "
                                                   "malformed";
    return fail(Code::kUnavailable, "request to " + host + " failed: " + what + detail,
                reason::kProtocol);
  }
  return fail(Code::kUnavailable, "request to " + host + " failed" + detail, reason::kProtocol);
}

// libcurl's memory, wiped when it is freed: libcurl copies what it sends into buffers of its own
// (the request head with the Authorization or Cookie header, a small body such as a login's) and
// frees them without clearing. Installed by GlobalInit before libcurl allocates anything.
void WipingFree(void* p) {
  if (p == nullptr) return;
  WipeBytes(p, malloc_usable_size(p));
  std::free(p);
}

void* WipingMalloc(std::size_t size) { return std::malloc(size); }

void* WipingCalloc(std::size_t n, std::size_t size) { return std::calloc(n, size); }

// Never lets the C library move a block and free the old one unwiped.
void* WipingRealloc(void* p, std::size_t size) {
  if (p == nullptr) return std::malloc(size);
  const std::size_t have = malloc_usable_size(p);
  if (size <= have) return p;
  void* bigger = std::malloc(size);
  if (bigger == nullptr) return nullptr;
  std::memcpy(bigger, p, have);
  WipingFree(p);
  return bigger;
}

char* WipingStrdup(const char* s) {
  const std::size_t n = std::strlen(s) + 1;
  auto* copy = static_cast<char*>(std::malloc(n));
  if (copy != nullptr) std::memcpy(copy, s, n);
  return copy;
}

}  // namespace

Status GlobalInit() {
  static std::once_flag once;
  static CURLcode result = CURLE_OK;
  std::call_once(once, [] {
    signal(SIGPIPE, SIG_IGN);
    // Only the first initialisation of the process chooses libcurl's allocator; later calls of
    // curl_global_init* count references.
    result = curl_global_init_mem(CURL_GLOBAL_DEFAULT, WipingMalloc, WipingFree, WipingRealloc,
                                  WipingStrdup, WipingCalloc);
  });
  if (result != CURLE_OK) {
    return Internal(std::string("curl_global_init failed: ") + curl_easy_strerror(result));
  }
  return Status::Ok();
}

Result<std::unique_ptr<Transport>> CurlTransport::Create(TransportOptions options) {
  CW_RETURN_IF_ERROR(GlobalInit());
  auto transport = std::make_unique<CurlTransportImpl>(std::move(options));
  CW_RETURN_IF_ERROR(transport->Init());
  return std::unique_ptr<Transport>(std::move(transport));
}

}  // namespace cakewalk::http
