// FakeHttpsServer: OpenSSL on non-blocking sockets, one thread per connection plus an accept
// thread. Every wait is a poll() that also watches a wake pipe, so Stop() returns promptly even
// with idle keep-alive connections or stalled responses. A handler that blocks on its own must
// return by itself (the server cannot interrupt user code).
//
// Handler and faults: every well-formed request is recorded and passed to the handler; a fault
// (queued, else the response's own) only changes what goes back on the wire.
#include "tests/fakes/https_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "base/c_free.h"
#include "base/json.h"
#include "base/time.h"

namespace cakewalk::testing {
namespace {

using SslCtxPtr = CPtr<SSL_CTX, SSL_CTX_free>;
using SslPtr = CPtr<SSL, SSL_free>;
using BioPtr = CPtr<BIO, BIO_free_all>;
using X509Ptr = CPtr<X509, X509_free>;
using EvpPkeyPtr = CPtr<EVP_PKEY, EVP_PKEY_free>;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kMaxHeadBytes = 64 * 1024;
constexpr std::size_t kMaxBodyBytes = 64 * 1024 * 1024;
constexpr auto kHandshakeTimeout = std::chrono::seconds(10);
constexpr auto kIdleTimeout = std::chrono::seconds(120);
constexpr auto kIoTimeout = std::chrono::seconds(30);

std::string OpenSslErrors() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

[[noreturn]] void Fail(const std::string& what) {
  throw std::runtime_error("FakeHttpsServer: " + what + ": " + OpenSslErrors());
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool IsTchar(char c) {
  if (std::isalnum(static_cast<unsigned char>(c))) return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes; '+' becomes a space only in query components. False on a bad escape.
bool PercentDecode(std::string_view in, bool plus_is_space, std::string& out) {
  out.clear();
  for (std::size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      const int hi = HexValue(in[i + 1]);
      const int lo = HexValue(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return true;
}

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 304:
      return "Not Modified";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 417:
      return "Expectation Failed";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Status";
  }
}

// A parse failure: the status to answer with and why.
struct ParseError {
  int status = 400;
  std::string message;
};

// Parses the request line and header fields (everything before the blank line, without it).
// Fills `req` and `content_length`; returns false with `err` set on anything malformed.
bool ParseHead(std::string_view head, HttpRequest& req, std::size_t& content_length,
               bool& close_after, bool& expect_continue, ParseError& err) {
  auto bad = [&](int status, std::string message) {
    err = {status, std::move(message)};
    return false;
  };
  std::size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  std::string_view rest = eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);

  // Request line: METHOD SP request-target SP HTTP-version
  const std::size_t sp1 = line.find(' ');
  const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == std::string_view::npos || sp2 == std::string_view::npos ||
      line.find(' ', sp2 + 1) != std::string_view::npos)
    return bad(400, "malformed request line");
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (method.empty() ||
      !std::all_of(method.begin(), method.end(), [](char c) { return c >= 'A' && c <= 'Z'; }))
    return bad(400, "malformed method");
  if (version != "HTTP/1.1") {
    if (version.size() == 8 && version.substr(0, 5) == "HTTP/") {
      return bad(505, "only HTTP/1.1 is supported");
    }
    return bad(400, "malformed HTTP version");
  }
  if (target.empty() || target[0] != '/') return bad(400, "request target must be origin-form");
  for (char c : target) {
    if (c <= 0x20 || c >= 0x7f || c == '#') return bad(400, "invalid character in target");
  }
  req.method = std::string(method);
  req.target = std::string(target);
  const std::size_t q = target.find('?');
  req.raw_path = std::string(target.substr(0, q));
  if (!PercentDecode(req.raw_path, false, req.path)) return bad(400, "bad percent-encoding");
  if (q != std::string_view::npos) {
    std::string_view query = target.substr(q + 1);
    while (!query.empty()) {
      const std::size_t amp = query.find('&');
      std::string_view pair = query.substr(0, amp);
      query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
      if (pair.empty()) continue;
      const std::size_t eq = pair.find('=');
      std::string name, value;
      if (!PercentDecode(pair.substr(0, eq), true, name) ||
          (eq != std::string_view::npos && !PercentDecode(pair.substr(eq + 1), true, value)))
        return bad(400, "bad percent-encoding in query");
      req.query.emplace(std::move(name), std::move(value));
    }
  }

  // Header fields.
  bool have_length = false;
  bool have_host = false;
  content_length = 0;
  close_after = false;
  expect_continue = false;
  while (!rest.empty()) {
    eol = rest.find("\r\n");
    line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 2);
    if (line.empty()) return bad(400, "empty header line");
    if (line[0] == ' ' || line[0] == '\t') return bad(400, "obsolete line folding");
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return bad(400, "malformed header field");
    const std::string_view name = line.substr(0, colon);
    if (!std::all_of(name.begin(), name.end(), IsTchar))
      return bad(400, "invalid header field name");
    std::string_view value = line.substr(colon + 1);
    for (char c : value) {
      const auto u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7f) return bad(400, "control character in header");
    }
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    std::string lname = Lower(name);
    if (lname == "content-length") {
      if (have_length) return bad(400, "repeated Content-Length");
      have_length = true;
      if (value.empty() || value.size() > 12 ||
          !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return bad(400, "malformed Content-Length");
      std::from_chars(value.data(), value.data() + value.size(), content_length);
    } else if (lname == "transfer-encoding") {
      return bad(411, "Transfer-Encoding is not supported; send Content-Length");
    } else if (lname == "host") {
      if (have_host) return bad(400, "repeated Host");
      have_host = true;
    } else if (lname == "connection") {
      if (Lower(value).find("close") != std::string::npos) close_after = true;
    } else if (lname == "expect") {
      if (Lower(value) != "100-continue") return bad(417, "unsupported Expect");
      expect_continue = true;
    }
    req.headers.emplace_back(std::move(lname), std::string(value));
  }
  if (!have_host) return bad(400, "missing Host header");
  if (content_length > kMaxBodyBytes) return bad(413, "request body too large");
  return true;
}

std::string NameToString(const X509_NAME* name) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) return {};
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return n > 0 ? std::string(data, static_cast<std::size_t>(n)) : std::string();
}

void FreeNameStack(STACK_OF(X509_NAME) * s) { sk_X509_NAME_pop_free(s, X509_NAME_free); }

int AcceptAnyClientCert(int, X509_STORE_CTX*) { return 1; }

}  // namespace

std::string HttpRequest::Header(std::string_view name) const {
  const std::string lname = Lower(name);
  for (const auto& [n, v] : headers) {
    if (n == lname) return v;
  }
  return {};
}

std::optional<std::string> HttpRequest::Query(std::string_view name) const {
  auto it = query.find(std::string(name));
  if (it == query.end()) return std::nullopt;
  return it->second;
}

HttpResponse HttpResponse::Json(int status, const Json::Value& body) {
  HttpResponse r;
  r.status = status;
  r.headers.emplace_back("Content-Type", "application/json");
  r.body = WriteJson(body);
  return r;
}

HttpResponse HttpResponse::Error(int status, std::string_view code, std::string_view message) {
  Json::Value body(Json::objectValue);
  body["error"]["code"] = std::string(code);
  body["error"]["message"] = std::string(message);
  return Json(status, body);
}

HttpResponse& HttpResponse::WithHeader(std::string name, std::string value) {
  headers.emplace_back(std::move(name), std::move(value));
  return *this;
}

class FakeHttpsServer::Impl {
 public:
  Impl(ServerOptions options, Handler handler)
      : options_(std::move(options)), handler_(std::move(handler)) {}
  ~Impl() { Stop(); }

  void Start();
  void Stop();

  std::uint16_t port() const { return port_; }
  void QueueFault(Fault fault, int count) {
    std::lock_guard lock(mu_);
    for (int i = 0; i < count; ++i) faults_.push_back(fault);
  }
  std::vector<HttpRequest> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }
  void ClearRequests() {
    std::lock_guard lock(mu_);
    requests_.clear();
  }
  void DropConnections() {
    std::lock_guard lock(mu_);
    for (auto& c : conns_) {
      if (c->fd >= 0) {
        c->dropped = true;
        ::shutdown(c->fd, SHUT_RDWR);
      }
    }
  }
  std::uint64_t connections_accepted() const {
    std::lock_guard lock(mu_);
    return accepted_;
  }
  double serving_cpu_seconds() const {
    std::lock_guard lock(mu_);
    double total = finished_cpu_seconds_;
    for (const auto& c : conns_) {
      if (!c->done) total += ThreadCpuSeconds(c->cpu_clock);
    }
    return total;
  }

 private:
  struct Conn {
    int fd = -1;  // closed (and set to -1) only under mu_
    std::uint64_t id = 0;
    std::thread thread;
    std::atomic<bool> done{false};
    std::atomic<bool> dropped{false};
    clockid_t cpu_clock{};  // the serving thread's CPU clock, read while !done
  };

  static double ThreadCpuSeconds(clockid_t clock) {
    timespec ts{};
    if (clock_gettime(clock, &ts) != 0) return 0;
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
  }

  enum class Io { kOk, kEof, kError, kTimeout, kStopped };

  void InitTls();
  void AcceptLoop();
  void ReapFinished();
  void Serve(Conn* conn);
  void CloseConn(Conn* conn, bool reset);
  // Waits until `fd` is ready for `events`; kStopped when Stop() was called.
  Io Wait(int fd, short events, Clock::time_point deadline);
  Io Handshake(SSL* ssl, int fd);
  Io ReadMore(SSL* ssl, int fd, std::string& buf, Clock::time_point deadline);
  Io WriteAll(SSL* ssl, int fd, std::string_view data);
  void SleepInterruptibly(std::chrono::milliseconds d);
  // Waits for the client to close (or d to pass, when positive) without answering.
  void StallUntilClientLeaves(int fd, std::chrono::milliseconds d);
  void LingeringClose(int fd);
  std::string Render(const HttpResponse& resp, bool head, bool close, std::size_t* body_offset);

  ServerOptions options_;
  Handler handler_;
  SslCtxPtr ctx_;
  int listen_fd_ = -1;
  int wake_read_ = -1;
  int wake_write_ = -1;
  std::uint16_t port_ = 0;
  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};
  std::once_flag stop_once_;

  mutable std::mutex mu_;
  std::vector<HttpRequest> requests_;
  std::deque<Fault> faults_;
  std::list<std::unique_ptr<Conn>> conns_;
  std::uint64_t accepted_ = 0;
  double finished_cpu_seconds_ = 0;  // of the serving threads that have closed their connection
};

void FakeHttpsServer::Impl::InitTls() {
  ctx_.reset(SSL_CTX_new(TLS_server_method()));
  if (!ctx_) Fail("SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx_.get(), TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx_.get(), options_.max_tls == ServerOptions::MaxTls::kTls12
                                                ? TLS1_2_VERSION
                                                : TLS1_3_VERSION);
  SSL_CTX_set_mode(ctx_.get(), SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);
  // Session resumption with client certificates needs a session id context.
  static const unsigned char kSidCtx[] = "cakewalk-fake";
  SSL_CTX_set_session_id_context(ctx_.get(), kSidCtx, sizeof kSidCtx - 1);

  // Certificate chain: leaf first, then intermediates/CA.
  {
    BioPtr bio(BIO_new_mem_buf(options_.certificate_chain_pem.data(),
                               static_cast<int>(options_.certificate_chain_pem.size())));
    X509Ptr leaf(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!leaf) Fail("parsing certificate_chain_pem");
    if (SSL_CTX_use_certificate(ctx_.get(), leaf.get()) != 1) Fail("SSL_CTX_use_certificate");
    while (X509* extra = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
      if (SSL_CTX_add0_chain_cert(ctx_.get(), extra) != 1) {
        X509_free(extra);
        Fail("SSL_CTX_add0_chain_cert");
      }
    }
    ERR_clear_error();  // the loop ends on a "no start line" error
  }
  {
    BioPtr bio(BIO_new_mem_buf(options_.private_key_pem.data(),
                               static_cast<int>(options_.private_key_pem.size())));
    EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    if (!key) Fail("parsing private_key_pem");
    if (SSL_CTX_use_PrivateKey(ctx_.get(), key.get()) != 1) Fail("SSL_CTX_use_PrivateKey");
    if (SSL_CTX_check_private_key(ctx_.get()) != 1) Fail("key does not match certificate");
  }

  using CC = ServerOptions::ClientCerts;
  if (options_.client_certs == CC::kRequire || options_.client_certs == CC::kVerifyIfPresented) {
    X509_STORE* store = SSL_CTX_get_cert_store(ctx_.get());
    CPtr<STACK_OF(X509_NAME), FreeNameStack> names(sk_X509_NAME_new_null());
    BioPtr bio(BIO_new_mem_buf(options_.client_ca_pem.data(),
                               static_cast<int>(options_.client_ca_pem.size())));
    int count = 0;
    while (X509* ca = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
      X509Ptr owned(ca);
      if (X509_STORE_add_cert(store, ca) != 1) Fail("X509_STORE_add_cert");
      sk_X509_NAME_push(names.get(), X509_NAME_dup(X509_get_subject_name(ca)));
      ++count;
    }
    ERR_clear_error();
    if (count == 0) throw std::runtime_error("FakeHttpsServer: client_ca_pem holds no certificate");
    SSL_CTX_set_client_CA_list(ctx_.get(), names.release());
    SSL_CTX_set_purpose(ctx_.get(), X509_PURPOSE_SSL_CLIENT);
    int mode = SSL_VERIFY_PEER;
    if (options_.client_certs == CC::kRequire) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx_.get(), mode, nullptr);
  } else if (options_.client_certs == CC::kRequest) {
    SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, AcceptAnyClientCert);
  } else {
    SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_NONE, nullptr);
  }
}

void FakeHttpsServer::Impl::Start() {
  // A client that goes away mid-write must not kill the test process.
  signal(SIGPIPE, SIG_IGN);
  InitTls();

  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) != 0) throw std::runtime_error("pipe2 failed");
  wake_read_ = pipefd[0];
  wake_write_ = pipefd[1];

  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listen_fd_ < 0) throw std::runtime_error("socket failed");
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(options_.port);
  if (inet_pton(AF_INET, options_.bind_address.c_str(), &addr.sin_addr) != 1)
    throw std::runtime_error("FakeHttpsServer: bad bind_address " + options_.bind_address);
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listen_fd_, 64) != 0)
    throw std::runtime_error("FakeHttpsServer: cannot listen on " + options_.bind_address + ": " +
                             std::strerror(errno));
  socklen_t len = sizeof addr;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  accept_thread_ = std::thread([this] { AcceptLoop(); });
}

void FakeHttpsServer::Impl::Stop() {
  std::call_once(stop_once_, [this] {
    stopping_ = true;
    if (wake_write_ >= 0) {
      // Never drained: the pipe stays readable and wakes every poll() from now on.
      [[maybe_unused]] ssize_t n = write(wake_write_, "x", 1);
    }
    if (accept_thread_.joinable()) accept_thread_.join();
    if (listen_fd_ >= 0) close(listen_fd_);
    listen_fd_ = -1;
    std::list<std::unique_ptr<Conn>> conns;
    {
      std::lock_guard lock(mu_);
      for (auto& c : conns_) {
        if (c->fd >= 0) ::shutdown(c->fd, SHUT_RDWR);
      }
      conns.swap(conns_);
    }
    for (auto& c : conns) {
      if (c->thread.joinable()) c->thread.join();
    }
    if (wake_read_ >= 0) close(wake_read_);
    if (wake_write_ >= 0) close(wake_write_);
    wake_read_ = wake_write_ = -1;
  });
}

void FakeHttpsServer::Impl::ReapFinished() {
  std::list<std::unique_ptr<Conn>> finished;
  {
    std::lock_guard lock(mu_);
    for (auto it = conns_.begin(); it != conns_.end();) {
      if ((*it)->done) {
        finished.push_back(std::move(*it));
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& c : finished) c->thread.join();
}

void FakeHttpsServer::Impl::AcceptLoop() {
  while (!stopping_) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_read_, POLLIN, 0}};
    const int n = poll(fds, 2, 1000);
    ReapFinished();
    if (n < 0 && errno != EINTR) return;
    if (stopping_ || (fds[1].revents & POLLIN)) return;
    if (!(fds[0].revents & POLLIN)) continue;
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto conn = std::make_unique<Conn>();
    conn->fd = fd;
    Conn* raw = conn.get();
    std::lock_guard lock(mu_);  // the thread and its CPU clock are set before anyone reads them
    raw->id = ++accepted_;
    conns_.push_back(std::move(conn));
    raw->thread = std::thread([this, raw] { Serve(raw); });
    pthread_getcpuclockid(raw->thread.native_handle(), &raw->cpu_clock);
  }
}

FakeHttpsServer::Impl::Io FakeHttpsServer::Impl::Wait(int fd, short events,
                                                      Clock::time_point deadline) {
  while (true) {
    if (stopping_) return Io::kStopped;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return Io::kTimeout;
    pollfd fds[2] = {{fd, events, 0}, {wake_read_, POLLIN, 0}};
    const int n = poll(fds, 2, static_cast<int>(std::min<long long>(left.count(), 1000)));
    if (n < 0 && errno != EINTR) return Io::kError;
    if (fds[1].revents & POLLIN) return Io::kStopped;
    if (fds[0].revents & (events | POLLHUP | POLLERR)) return Io::kOk;
  }
}

FakeHttpsServer::Impl::Io FakeHttpsServer::Impl::Handshake(SSL* ssl, int fd) {
  const auto deadline = Clock::now() + kHandshakeTimeout;
  while (true) {
    const int rc = SSL_accept(ssl);
    if (rc == 1) return Io::kOk;
    const int err = SSL_get_error(ssl, rc);
    Io io;
    if (err == SSL_ERROR_WANT_READ) {
      io = Wait(fd, POLLIN, deadline);
    } else if (err == SSL_ERROR_WANT_WRITE) {
      io = Wait(fd, POLLOUT, deadline);
    } else {
      ERR_clear_error();
      return Io::kError;
    }
    if (io != Io::kOk) return io;
  }
}

FakeHttpsServer::Impl::Io FakeHttpsServer::Impl::ReadMore(SSL* ssl, int fd, std::string& buf,
                                                          Clock::time_point deadline) {
  char chunk[16384];
  while (true) {
    std::size_t n = 0;
    const int rc = SSL_read_ex(ssl, chunk, sizeof chunk, &n);
    if (rc == 1) {
      buf.append(chunk, n);
      return Io::kOk;
    }
    const int err = SSL_get_error(ssl, rc);
    Io io;
    if (err == SSL_ERROR_WANT_READ) {
      io = Wait(fd, POLLIN, deadline);
    } else if (err == SSL_ERROR_WANT_WRITE) {
      io = Wait(fd, POLLOUT, deadline);
    } else if (err == SSL_ERROR_ZERO_RETURN) {
      return Io::kEof;
    } else {
      ERR_clear_error();
      return Io::kError;
    }
    if (io != Io::kOk) return io;
  }
}

FakeHttpsServer::Impl::Io FakeHttpsServer::Impl::WriteAll(SSL* ssl, int fd, std::string_view data) {
  const auto deadline = Clock::now() + kIoTimeout;
  while (!data.empty()) {
    std::size_t n = 0;
    const int rc = SSL_write_ex(ssl, data.data(), data.size(), &n);
    if (rc == 1) {
      data.remove_prefix(n);
      continue;
    }
    const int err = SSL_get_error(ssl, rc);
    Io io;
    if (err == SSL_ERROR_WANT_WRITE) {
      io = Wait(fd, POLLOUT, deadline);
    } else if (err == SSL_ERROR_WANT_READ) {
      io = Wait(fd, POLLIN, deadline);
    } else {
      ERR_clear_error();
      return Io::kError;
    }
    if (io != Io::kOk) return io;
  }
  return Io::kOk;
}

void FakeHttpsServer::Impl::SleepInterruptibly(std::chrono::milliseconds d) {
  const auto deadline = Clock::now() + d;
  while (!stopping_ && Clock::now() < deadline) {
    pollfd fd{wake_read_, POLLIN, 0};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    if (poll(&fd, 1, static_cast<int>(std::min<long long>(left.count(), 1000))) > 0) break;
  }
}

void FakeHttpsServer::Impl::StallUntilClientLeaves(int fd, std::chrono::milliseconds d) {
  const auto deadline = d.count() > 0 ? Clock::now() + d : Clock::time_point::max();
  // Any readability (the client's FIN or RST) means it gave up: a stalled client sends nothing.
  (void)Wait(fd, POLLIN, deadline);
}

// After a failed handshake: stop sending, read and discard what the client still sends for a
// moment, then close. Closing with unread data would make the kernel send a RST that can
// overtake our TLS alert; real servers linger the same way.
void FakeHttpsServer::Impl::LingeringClose(int fd) {
  ::shutdown(fd, SHUT_WR);
  const auto deadline = Clock::now() + std::chrono::seconds(2);
  char buf[4096];
  while (Wait(fd, POLLIN, deadline) == Io::kOk) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR))) break;
  }
}

// Called by the connection's own thread, which does nothing much after it.
void FakeHttpsServer::Impl::CloseConn(Conn* conn, bool reset) {
  std::lock_guard lock(mu_);
  finished_cpu_seconds_ += ThreadCpuSeconds(conn->cpu_clock);
  if (conn->fd >= 0) {
    if (reset || conn->dropped) {
      linger lg{1, 0};  // close() then sends a TCP RST instead of a FIN
      setsockopt(conn->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(conn->fd);
    conn->fd = -1;
  }
  conn->done = true;
}

std::string FakeHttpsServer::Impl::Render(const HttpResponse& resp, bool head, bool close,
                                          std::size_t* body_offset) {
  std::string out = "HTTP/1.1 " + std::to_string(resp.status) + " " +
                    std::string(ReasonPhrase(resp.status)) + "\r\n";
  bool have_date = false;
  for (const auto& [name, value] : resp.headers) {
    const std::string lname = Lower(name);
    if (lname == "content-length" || lname == "connection") continue;  // ours
    if (lname == "date") have_date = true;
    out += name + ": " + value + "\r\n";
  }
  if (!have_date) out += "Date: " + FormatHttpDate(std::chrono::system_clock::now()) + "\r\n";
  if (!resp.close_delimited) out += "Content-Length: " + std::to_string(resp.body.size()) + "\r\n";
  if (close) out += "Connection: close\r\n";
  out += "\r\n";
  *body_offset = out.size();
  if (!head) out += resp.body;
  return out;
}

void FakeHttpsServer::Impl::Serve(Conn* conn) {
  const int fd = conn->fd;
  SslPtr ssl(SSL_new(ctx_.get()));
  if (!ssl || SSL_set_fd(ssl.get(), fd) != 1) {
    ERR_clear_error();
    CloseConn(conn, true);
    return;
  }
  if (Io io = Handshake(ssl.get(), fd); io != Io::kOk) {
    if (io == Io::kError) LingeringClose(fd);
    CloseConn(conn, false);
    return;
  }

  // Client certificate, once per connection.
  std::optional<std::string> subject;
  std::string cert_der;
  if (X509* peer = SSL_get0_peer_certificate(ssl.get())) {
    unsigned char* der = nullptr;
    const int n = i2d_X509(peer, &der);
    if (n > 0) cert_der.assign(reinterpret_cast<char*>(der), static_cast<std::size_t>(n));
    OPENSSL_free(der);
    const bool verifying = options_.client_certs == ServerOptions::ClientCerts::kRequire ||
                           options_.client_certs == ServerOptions::ClientCerts::kVerifyIfPresented;
    if (verifying && SSL_get_verify_result(ssl.get()) == X509_V_OK) {
      subject = NameToString(X509_get_subject_name(peer));
    }
  }
  const std::string tls_version = SSL_get_version(ssl.get());

  std::string buf;
  bool reset = false;
  while (true) {
    // Read the head.
    std::size_t head_end;
    bool idle = buf.empty();
    const auto head_deadline = Clock::now() + (idle ? kIdleTimeout : kIoTimeout);
    Io io = Io::kOk;
    bool bare_lf = false;
    while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
      if (buf.size() > kMaxHeadBytes) break;
      // A line feed without its carriage return can never end a valid head: answer now.
      // (Without a complete head, everything buffered is head.)
      for (std::size_t lf = buf.find('\n'); lf != std::string::npos; lf = buf.find('\n', lf + 1)) {
        if (lf == 0 || buf[lf - 1] != '\r') bare_lf = true;
      }
      if (bare_lf) break;
      io = ReadMore(ssl.get(), fd, buf, head_deadline);
      if (io != Io::kOk) break;
    }
    if (io != Io::kOk) break;  // the client went away (or stop, timeout, garbage)

    HttpRequest req;
    std::size_t content_length = 0;
    bool close_after = false;
    bool expect_continue = false;
    ParseError perr;
    bool parsed = false;
    if (bare_lf) {
      perr = {400, "lines must end with CRLF"};
    } else if (head_end == std::string::npos) {
      perr = {431, "request head too large"};
    } else {
      parsed = ParseHead(std::string_view(buf).substr(0, head_end), req, content_length,
                         close_after, expect_continue, perr);
    }
    if (!parsed) {
      std::size_t off = 0;
      WriteAll(
          ssl.get(), fd,
          Render(HttpResponse::Error(perr.status, "bad_request", perr.message), false, true, &off));
      SSL_shutdown(ssl.get());
      break;
    }
    buf.erase(0, head_end + 4);
    if (expect_continue && buf.size() < content_length) {
      if (WriteAll(ssl.get(), fd, "HTTP/1.1 100 Continue\r\n\r\n") != Io::kOk) break;
    }
    const auto body_deadline = Clock::now() + kIoTimeout;
    while (buf.size() < content_length) {
      io = ReadMore(ssl.get(), fd, buf, body_deadline);
      if (io != Io::kOk) break;
    }
    if (io != Io::kOk) break;
    req.body = buf.substr(0, content_length);
    buf.erase(0, content_length);
    req.client_cert_subject = subject;
    req.client_cert_der = cert_der;
    req.received_at = std::chrono::system_clock::now();
    req.connection_id = conn->id;
    req.tls_version = tls_version;

    std::optional<Fault> queued;
    {
      std::lock_guard lock(mu_);
      requests_.push_back(req);
      if (!faults_.empty()) {
        queued = faults_.front();
        faults_.pop_front();
      }
    }
    HttpResponse resp;
    try {
      resp = handler_(req);
    } catch (const std::exception& e) {
      resp = HttpResponse::Error(500, "handler_exception", e.what());
    } catch (...) {
      resp = HttpResponse::Error(500, "handler_exception", "unknown exception");
    }
    const Fault fault = queued.has_value() ? *queued : resp.fault;

    if (fault.kind == Fault::kDelay) SleepInterruptibly(fault.delay);
    if (stopping_) break;
    if (fault.kind == Fault::kResetBeforeHeaders) {
      reset = true;
      break;
    }
    if (fault.kind == Fault::kStall) {
      StallUntilClientLeaves(fd, fault.delay);
      reset = true;
      break;
    }
    const bool head = req.method == "HEAD";
    const bool truncate = fault.kind == Fault::kTruncateBody;
    std::size_t body_offset = 0;
    const bool close = close_after || truncate || resp.close_delimited;
    std::string wire = Render(resp, head, close, &body_offset);
    if (truncate) wire.resize(body_offset + resp.body.size() / 2);
    if (WriteAll(ssl.get(), fd, wire) != Io::kOk) break;
    if (close) {
      SSL_shutdown(ssl.get());
      break;
    }
  }
  CloseConn(conn, reset);
}

FakeHttpsServer::FakeHttpsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FakeHttpsServer::~FakeHttpsServer() { Stop(); }

std::unique_ptr<FakeHttpsServer> FakeHttpsServer::Start(ServerOptions options, Handler handler) {
  auto impl = std::make_unique<Impl>(std::move(options), std::move(handler));
  impl->Start();
  return std::unique_ptr<FakeHttpsServer>(new FakeHttpsServer(std::move(impl)));
}

std::uint16_t FakeHttpsServer::port() const { return impl_->port(); }
std::string FakeHttpsServer::base_url() const {
  return "https://localhost:" + std::to_string(impl_->port());
}
void FakeHttpsServer::QueueFault(Fault fault, int count) { impl_->QueueFault(fault, count); }
std::vector<HttpRequest> FakeHttpsServer::requests() const { return impl_->requests(); }
void FakeHttpsServer::ClearRequests() { impl_->ClearRequests(); }
void FakeHttpsServer::DropConnections() { impl_->DropConnections(); }
double FakeHttpsServer::serving_cpu_seconds() const { return impl_->serving_cpu_seconds(); }

std::uint64_t FakeHttpsServer::connections_accepted() const {
  return impl_->connections_accepted();
}
void FakeHttpsServer::Stop() {
  if (impl_) impl_->Stop();
}

}  // namespace cakewalk::testing
