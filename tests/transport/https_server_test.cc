// FakeHttpsServer on its own, driven by a raw OpenSSL client so that malformed requests, garbage,
// pipelining and Stop() with open connections can be exercised byte by byte.
#include "tests/fakes/https_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <thread>

#include "base/c_free.h"
#include "base/time.h"
#include "tests/transport/tls_env.h"

namespace cakewalk::testing {
namespace {

using namespace std::chrono_literals;

int ConnectTcp(std::uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// A minimal blocking TLS client that verifies the server against the test CA.
class RawTlsClient {
 public:
  RawTlsClient(const std::string& ca_file, std::uint16_t port) {
    ctx_.reset(SSL_CTX_new(TLS_client_method()));
    SSL_CTX_load_verify_locations(ctx_.get(), ca_file.c_str(), nullptr);
    SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, nullptr);
    fd_ = ConnectTcp(port);
    ssl_.reset(SSL_new(ctx_.get()));
    SSL_set_fd(ssl_.get(), fd_);
    SSL_set_tlsext_host_name(ssl_.get(), "localhost");
    SSL_set1_host(ssl_.get(), "localhost");
    connected_ = fd_ >= 0 && SSL_connect(ssl_.get()) == 1;
    ERR_clear_error();
  }
  ~RawTlsClient() {
    ssl_.reset();
    if (fd_ >= 0) close(fd_);
  }
  bool connected() const { return connected_; }

  bool Send(std::string_view data) {
    std::size_t n = 0;
    return SSL_write_ex(ssl_.get(), data.data(), data.size(), &n) == 1 && n == data.size();
  }
  // Reads one response (head + Content-Length body); "" when the connection ended first.
  std::string ReadResponse() {
    while (true) {
      const std::size_t head_end = buf_.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        std::size_t length = 0;
        const std::string head = buf_.substr(0, head_end);
        const std::size_t cl = head.find("Content-Length: ");
        if (cl != std::string::npos) length = std::stoul(head.substr(cl + 16));
        if (buf_.size() >= head_end + 4 + length) {
          std::string out = buf_.substr(0, head_end + 4 + length);
          buf_.erase(0, out.size());
          return out;
        }
      }
      if (!ReadMore()) return {};
    }
  }
  // True when the server closed the connection (EOF or reset) within the receive timeout.
  bool Closed() {
    while (ReadMore()) {
    }
    return true;
  }

 private:
  bool ReadMore() {
    char chunk[4096];
    std::size_t n = 0;
    if (SSL_read_ex(ssl_.get(), chunk, sizeof chunk, &n) != 1) {
      ERR_clear_error();
      return false;
    }
    buf_.append(chunk, n);
    return true;
  }

  CPtr<SSL_CTX, SSL_CTX_free> ctx_;
  CPtr<SSL, SSL_free> ssl_;
  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

int StatusOf(const std::string& response) {
  if (response.size() < 12 || response.compare(0, 9, "HTTP/1.1 ") != 0) return -1;
  return std::stoi(response.substr(9, 3));
}

std::string HeaderOf(const std::string& response, const std::string& name) {
  const std::string needle = "\r\n" + name + ": ";
  const std::size_t pos = response.find(needle);
  if (pos == std::string::npos) return {};
  const std::size_t end = response.find("\r\n", pos + needle.size());
  return response.substr(pos + needle.size(), end - pos - needle.size());
}

std::string BodyOf(const std::string& response) {
  const std::size_t pos = response.find("\r\n\r\n");
  return pos == std::string::npos ? std::string() : response.substr(pos + 4);
}

class HttpsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = FakeHttpsServer::Start(env_.ServerOpts(), [](const HttpRequest& req) {
      Json::Value v(Json::objectValue);
      v["method"] = req.method;
      v["path"] = req.path;
      v["raw_path"] = req.raw_path;
      v["body"] = req.body;
      Json::Value q(Json::arrayValue);
      for (const auto& [name, value] : req.query) q.append(name + "=" + value);
      v["query"] = q;
      HttpResponse r = HttpResponse::Json(200, v);
      if (req.path == "/dated") r.WithHeader("Date", "Fri, 04 Dec 2026 17:29:08 GMT");
      return r;
    });
  }
  RawTlsClient Client() { return RawTlsClient(env_.ca_file, server_->port()); }

  TlsEnv env_;
  std::unique_ptr<FakeHttpsServer> server_;
};

TEST_F(HttpsServerTest, ParsesAndDecodesAndAddsDateAndLength) {
  auto c = Client();
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(
      c.Send("POST /a%2Fb/c%20d?x=1+2&y=%26&x=3&flag HTTP/1.1\r\nHost: localhost\r\n"
             "Content-Length: 5\r\nX-Mixed-Case: V\r\n\r\nhello"));
  const std::string resp = c.ReadResponse();
  ASSERT_EQ(StatusOf(resp), 200) << resp;
  EXPECT_FALSE(HeaderOf(resp, "Date").empty());
  EXPECT_TRUE(ParseHttpDate(HeaderOf(resp, "Date")).ok());
  EXPECT_EQ(HeaderOf(resp, "Content-Length"), std::to_string(BodyOf(resp).size()));
  EXPECT_EQ(HeaderOf(resp, "Content-Type"), "application/json");
  auto seen = server_->requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].method, "POST");
  EXPECT_EQ(seen[0].target, "/a%2Fb/c%20d?x=1+2&y=%26&x=3&flag");
  EXPECT_EQ(seen[0].path, "/a/b/c d");
  EXPECT_EQ(seen[0].raw_path, "/a%2Fb/c%20d");
  EXPECT_EQ(seen[0].Query("x").value_or(""), "1 2");  // first of the repeated values
  EXPECT_EQ(seen[0].query.count("x"), 2u);
  EXPECT_EQ(seen[0].Query("y").value_or(""), "&");
  EXPECT_EQ(seen[0].Query("flag").value_or("absent"), "");
  EXPECT_FALSE(seen[0].Query("nope").has_value());
  EXPECT_EQ(seen[0].Header("X-MIXED-CASE"), "V");
  EXPECT_EQ(seen[0].headers[2].first, "x-mixed-case");
  EXPECT_EQ(seen[0].body, "hello");
  EXPECT_FALSE(seen[0].client_cert_subject.has_value());

  // A handler's own Date is kept.
  ASSERT_TRUE(c.Send("GET /dated HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  EXPECT_EQ(HeaderOf(c.ReadResponse(), "Date"), "Fri, 04 Dec 2026 17:29:08 GMT");
}

TEST_F(HttpsServerTest, KeepAliveAndPipelining) {
  auto c = Client();
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(
      c.Send("GET /one HTTP/1.1\r\nHost: localhost\r\n\r\n"
             "GET /two HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  EXPECT_NE(BodyOf(c.ReadResponse()).find("/one"), std::string::npos);
  EXPECT_NE(BodyOf(c.ReadResponse()).find("/two"), std::string::npos);
  ASSERT_TRUE(c.Send("GET /three HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"));
  const std::string last = c.ReadResponse();
  EXPECT_EQ(HeaderOf(last, "Connection"), "close");
  EXPECT_TRUE(c.Closed());
  auto seen = server_->requests();
  ASSERT_EQ(seen.size(), 3u);
  for (const auto& r : seen) EXPECT_EQ(r.connection_id, 1u);
  EXPECT_EQ(server_->connections_accepted(), 1u);
  EXPECT_EQ(seen[0].tls_version, "TLSv1.3");
}

struct BadRequest {
  const char* name;
  std::string wire;
  int status;
};

class HttpsServerBadRequestTest : public HttpsServerTest,
                                  public ::testing::WithParamInterface<BadRequest> {};

TEST_P(HttpsServerBadRequestTest, IsAnsweredWithAnErrorAndTheConnectionClosed) {
  auto c = Client();
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Send(GetParam().wire));
  const std::string resp = c.ReadResponse();
  EXPECT_EQ(StatusOf(resp), GetParam().status) << resp;
  EXPECT_EQ(HeaderOf(resp, "Connection"), "close");
  EXPECT_TRUE(c.Closed());
  EXPECT_TRUE(server_->requests().empty());
  // The server is still fine.
  auto next = Client();
  ASSERT_TRUE(next.Send("GET /ok HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  EXPECT_EQ(StatusOf(next.ReadResponse()), 200);
}

INSTANTIATE_TEST_SUITE_P(
    Strict, HttpsServerBadRequestTest,
    ::testing::Values(
        BadRequest{"Garbage", "\x01\x02garbage\xff\r\n\r\n", 400},
        BadRequest{"LowerCaseMethod", "get / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        BadRequest{"ExtraSpace", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        BadRequest{"AbsoluteTarget", "GET https://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        BadRequest{"Http10", "GET / HTTP/1.0\r\nHost: x\r\n\r\n", 505},
        BadRequest{"MissingHost", "GET / HTTP/1.1\r\n\r\n", 400},
        BadRequest{"TwoHosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        BadRequest{"ObsFold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", 400},
        BadRequest{"SpaceBeforeColon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400},
        BadRequest{"BadPercent", "GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        BadRequest{"TruncatedPercent", "GET /a% HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        BadRequest{"Chunked",
                   "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                   411},
        BadRequest{"BadLength", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400},
        BadRequest{"TwoLengths",
                   "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
                   400},
        BadRequest{"BareLineFeeds", "GET / HTTP/1.1\nHost: x\n\n", 400},
        BadRequest{"HugeHead", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(70000, 'a'),
                   431}),
    [](const auto& param_info) { return std::string(param_info.param.name); });

TEST_F(HttpsServerTest, SurvivesNonTlsGarbageAndHalfHandshakes) {
  for (int i = 0; i < 3; ++i) {
    const int fd = ConnectTcp(server_->port());
    ASSERT_GE(fd, 0);
    const std::string junk = i == 0   ? "GET / HTTP/1.1\r\nHost: x\r\n\r\n"  // plain HTTP
                             : i == 1 ? std::string(5000, '\x16')            // TLS-looking junk
                                      : std::string();                       // connect and leave
    if (!junk.empty()) (void)!write(fd, junk.data(), junk.size());
    close(fd);
  }
  auto c = Client();
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Send("GET /fine HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  EXPECT_EQ(StatusOf(c.ReadResponse()), 200);
  EXPECT_EQ(server_->connections_accepted(), 4u);
}

TEST_F(HttpsServerTest, QueuedFaultsApplyFirstInOrder) {
  server_->QueueFault({Fault::kResetBeforeHeaders, {}}, 2);
  for (int i = 0; i < 2; ++i) {
    auto c = Client();
    ASSERT_TRUE(c.Send("GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    EXPECT_EQ(c.ReadResponse(), "") << i;
  }
  auto c = Client();
  ASSERT_TRUE(c.Send("GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  EXPECT_EQ(StatusOf(c.ReadResponse()), 200);
  EXPECT_EQ(server_->requests().size(), 3u) << "faulted requests are still recorded";
  server_->ClearRequests();
  EXPECT_TRUE(server_->requests().empty());
}

TEST_F(HttpsServerTest, TruncatedBodyAnnouncesTheFullLength) {
  server_.reset();
  server_ = FakeHttpsServer::Start(env_.ServerOpts(), [](const HttpRequest&) {
    HttpResponse r;
    r.body = std::string(1000, 'b');
    r.fault.kind = Fault::kTruncateBody;
    return r;
  });
  auto c = Client();
  ASSERT_TRUE(c.Send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  EXPECT_EQ(c.ReadResponse(), "");  // never complete
}

// What serving costs: the serving threads' CPU, live connections and closed ones alike, and not
// the time a handler spends waiting.
TEST_F(HttpsServerTest, CountsItsServingThreadsCpuNotTheirWaits) {
  constexpr auto kBurn = std::chrono::milliseconds(80);
  server_.reset();
  server_ = FakeHttpsServer::Start(env_.ServerOpts(), [kBurn](const HttpRequest& req) {
    if (req.path == "/burn") {
      const auto thread_cpu = [] {
        timespec ts{};
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
      };
      const auto start = thread_cpu();
      while (thread_cpu() - start < kBurn) {
      }
    } else if (req.path == "/wait") {
      std::this_thread::sleep_for(300ms);
    }
    return HttpResponse::Json(200, Json::Value("done"));
  });
  const double burn = std::chrono::duration<double>(kBurn).count();
  auto c = Client();
  ASSERT_TRUE(c.Send("GET /wait HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  ASSERT_NE(c.ReadResponse(), "");
  const double after_wait = server_->serving_cpu_seconds();
  EXPECT_LT(after_wait, 0.05);  // the handshake and one answer; the 300 ms wait is not serving
  ASSERT_TRUE(c.Send("GET /burn HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  ASSERT_NE(c.ReadResponse(), "");
  const double live = server_->serving_cpu_seconds();  // the connection is still open
  EXPECT_GE(live, after_wait + burn);
  EXPECT_LT(live, after_wait + burn + 0.1);
  server_->Stop();  // every serving thread has ended: what they used is kept
  EXPECT_GE(server_->serving_cpu_seconds(), live);
}

TEST_F(HttpsServerTest, StopIsPromptWithIdleAndStalledConnections) {
  server_->QueueFault({Fault::kStall, {}});
  auto stalled = Client();
  ASSERT_TRUE(stalled.Send("GET /stall HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  auto idle = Client();
  ASSERT_TRUE(idle.connected());
  const int half_open = ConnectTcp(server_->port());  // no TLS handshake at all
  std::this_thread::sleep_for(100ms);
  const auto start = std::chrono::steady_clock::now();
  server_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  EXPECT_EQ(stalled.ReadResponse(), "");
  close(half_open);
}

TEST_F(HttpsServerTest, DropConnectionsClosesOpenConnections) {
  auto c = Client();
  ASSERT_TRUE(c.Send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  ASSERT_EQ(StatusOf(c.ReadResponse()), 200);
  server_->DropConnections();
  EXPECT_TRUE(c.Closed());
  EXPECT_EQ(c.ReadResponse(), "");
}

TEST(HttpResponseTest, Helpers) {
  Json::Value v(Json::objectValue);
  v["b"] = 1;
  v["a"] = "x";
  auto r = HttpResponse::Json(201, v).WithHeader("X-A", "1");
  EXPECT_EQ(r.status, 201);
  EXPECT_EQ(r.body, R"({"a":"x","b":1})");
  ASSERT_EQ(r.headers.size(), 2u);
  EXPECT_EQ(r.headers[1].first, "X-A");
  auto e = HttpResponse::Error(409, "lease_lost", "gone");
  EXPECT_EQ(e.status, 409);
  EXPECT_EQ(e.body, R"({"error":{"code":"lease_lost","message":"gone"}})");
}

}  // namespace
}  // namespace cakewalk::testing
