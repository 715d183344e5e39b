// CurlTransport against an in-process FakeHttpsServer with a run-time test PKI: round trips,
// credentials from secret memory, clock skew, the size cap, no redirects, URL refusal, keep-alive,
// mutual TLS and the TLS negative matrix, faults and recovery, concurrency.
#include "jira/curl_transport.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <stop_token>
#include <thread>

#include "base/time.h"
#include "tests/fakes/https_server.h"
#include "tests/support/canary.h"
#include "tests/support/proc_status.h"
#include "tests/transport/tls_env.h"

namespace cakewalk::testing {
namespace {

using http::Request;
using http::Response;
using http::Transport;
namespace reason = http::reason;

HttpResponse Text(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  r.headers.emplace_back("Content-Type", "text/plain");
  return r;
}

class CurlTransportTest : public ::testing::Test {
 protected:
  void StartServer(Handler handler, ServerOptions options) {
    server_ = FakeHttpsServer::Start(std::move(options), std::move(handler));
  }
  void StartServer(Handler handler) { StartServer(std::move(handler), env_.ServerOpts()); }
  std::string Url(const std::string& path) const { return server_->base_url() + path; }

  TlsEnv env_;
  std::unique_ptr<FakeHttpsServer> server_;
};

// ------------------------------------------------------------------------------------------
// Round trips.

TEST_F(CurlTransportTest, GetRoundTripWithHeaders) {
  StartServer([](const HttpRequest& req) {
    HttpResponse r = Text(200, "path=" + req.path + " q=" + req.Query("q").value_or("-"));
    r.WithHeader("X-Custom-Reply", "Value With Case");
    return r;
  });
  auto t = MustCreate(env_.TransportOpts());
  Request req = Get(Url("/api/a%20b?q=x%26y&q=second"));
  req.headers.push_back({"X-Request-Id", "r-1"});
  auto resp = t->Send(req);
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->status, 200);
  EXPECT_TRUE(resp->ok());
  EXPECT_EQ(resp->body, "path=/api/a b q=x&y");
  EXPECT_EQ(resp->Header("X-CUSTOM-REPLY").value_or(""), "Value With Case");
  bool lower = false;
  for (const auto& h : resp->headers) lower |= h.name == "x-custom-reply";
  EXPECT_TRUE(lower) << "header names are lower-cased";

  auto seen = server_->requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].method, "GET");
  EXPECT_EQ(seen[0].raw_path, "/api/a%20b");
  EXPECT_EQ(seen[0].Header("x-request-id"), "r-1");
  EXPECT_EQ(seen[0].Header("user-agent"), "cakewalk-agent");
  EXPECT_EQ(seen[0].Header("content-type"), "");
  EXPECT_EQ(seen[0].Header("authorization"), "");
  EXPECT_EQ(seen[0].tls_version, "TLSv1.3");
}

TEST_F(CurlTransportTest, PostPutDeleteBodiesAndContentType) {
  StartServer([](const HttpRequest& req) { return Text(201, req.method + ":" + req.body); });
  auto t = MustCreate(env_.TransportOpts());
  for (const std::string method : {"POST", "PUT", "PATCH", "DELETE"}) {
    Request req = Get(Url("/items"));
    req.method = method;
    req.body = R"({"name":"x"})";
    auto resp = t->Send(req);
    ASSERT_TRUE(resp.ok()) << method << ": " << resp.status().ToString();
    EXPECT_EQ(resp->status, 201);
    EXPECT_EQ(resp->body, method + R"(:{"name":"x"})");
  }
  // Empty bodies: no libcurl form default, Content-Length 0 for POST, nothing for DELETE.
  Request post = Get(Url("/empty"));
  post.method = "POST";
  ASSERT_TRUE(t->Send(post).ok());
  Request del = Get(Url("/gone"));
  del.method = "DELETE";
  ASSERT_TRUE(t->Send(del).ok());
  auto seen = server_->requests();
  ASSERT_EQ(seen.size(), 6u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(seen[i].Header("content-type"), "application/json") << seen[i].method;
    EXPECT_EQ(seen[i].Header("expect"), "") << "no 100-continue";
  }
  EXPECT_EQ(seen[4].method, "POST");
  EXPECT_EQ(seen[4].Header("content-type"), "");
  EXPECT_EQ(seen[4].Header("content-length"), "0");
  EXPECT_EQ(seen[5].method, "DELETE");
  EXPECT_EQ(seen[5].body, "");
  // A caller's own Content-Type wins.
  Request form = Get(Url("/token"));
  form.method = "POST";
  form.headers.push_back({"Content-Type", "application/x-www-form-urlencoded"});
  form.body = "a=b";
  ASSERT_TRUE(t->Send(form).ok());
  EXPECT_EQ(server_->requests().back().Header("content-type"), "application/x-www-form-urlencoded");
  // Sent once, the body goes through libcurl's read callback: the same bytes arrive, secret or not.
  for (const std::string method : {"POST", "PUT", "PATCH", "DELETE"}) {
    Request req = Get(Url("/once"));
    req.method = method;
    req.send_once = true;
    if (method == "PUT") {
      req.sensitive_body = SecretBytes::CopyOf(R"({"secret":"y"})");
    } else {
      req.body = std::string(70000, 'b');  // more than libcurl's upload buffer holds at once
    }
    auto resp = t->Send(req);
    ASSERT_TRUE(resp.ok()) << method << ": " << resp.status().ToString();
    EXPECT_EQ(resp->body,
              method + ":" + (method == "PUT" ? std::string(R"({"secret":"y"})") : req.body));
  }
  EXPECT_EQ(server_->requests().size(), 11u);
}

TEST_F(CurlTransportTest, CredentialsComeFromSecretFieldsAndSetCookieStaysSecret) {
  const std::string token = MakeCanary("bearer");
  const std::string session = MakeCanary("session");
  StartServer([&](const HttpRequest&) {
    HttpResponse r = Text(200, "ok");
    r.WithHeader("Set-Cookie", "JSESSIONID=" + session + "; Path=/; Secure; HttpOnly");
    r.WithHeader("Set-Cookie", "atl.xsrf.token=abc; Path=/");
    return r;
  });
  auto t = MustCreate(env_.TransportOpts());
  Request req = Get(Url("/rest/api/2/myself"));
  req.authorization = SecretBytes::CopyOf("Bearer " + token);
  req.cookie = SecretBytes::CopyOf("JSESSIONID=" + session);
  auto resp = t->Send(req);
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  auto seen = server_->requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].Header("authorization"), "Bearer " + token);
  EXPECT_EQ(seen[0].Header("cookie"), "JSESSIONID=" + session);

  ASSERT_EQ(resp->set_cookies.size(), 2u);
  EXPECT_EQ(resp->set_cookies[0].RevealString(SecretAccess::Grant()),
            "JSESSIONID=" + session + "; Path=/; Secure; HttpOnly");
  EXPECT_FALSE(resp->Header("set-cookie").has_value());
  for (const auto& h : resp->headers) {
    EXPECT_TRUE(FindCanaryIn(session, h.value, h.name).empty());
  }
}

TEST_F(CurlTransportTest, CredentialHeadersInThePlainListAreRefused) {
  StartServer([](const HttpRequest&) { return Text(200, "ok"); });
  auto t = MustCreate(env_.TransportOpts());
  for (const char* name : {"Authorization", "cookie", "Proxy-Authorization"}) {
    Request req = Get(Url("/"));
    req.headers.push_back({name, "x"});
    auto resp = t->Send(req);
    ASSERT_FALSE(resp.ok()) << name;
    EXPECT_EQ(resp.status().code(), Code::kInvalidArgument);
  }
  Request inject = Get(Url("/"));
  inject.headers.push_back({"X-A", "b\r\nX-Injected: 1"});
  EXPECT_FALSE(t->Send(inject).ok());
  EXPECT_TRUE(server_->requests().empty());
}

TEST_F(CurlTransportTest, SensitiveBodyAndSensitiveResponse) {
  const std::string password = MakeCanary("password");
  const std::string big(300 * 1024, 'k');  // several receive buffers: the secret buffer grows
  StartServer([&](const HttpRequest& req) {
    return Text(200, req.body == "{\"password\":\"" + password + "\"}" ? big : "wrong");
  });
  auto t = MustCreate(env_.TransportOpts());
  Request req = Get(Url("/login"));
  req.method = "POST";
  req.sensitive_body = SecretBytes::CopyOf("{\"password\":\"" + password + "\"}");
  req.sensitive_response = true;
  auto resp = t->Send(req);
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->body.size(), big.size());
  EXPECT_EQ(resp->body, big);
  EXPECT_EQ(server_->requests()[0].Header("content-type"), "application/json");
  Request both = Get(Url("/login"));
  both.method = "POST";
  both.body = "{}";
  both.sensitive_body = SecretBytes::CopyOf(std::string_view("{}"));
  EXPECT_FALSE(t->Send(both).ok());
}

TEST_F(CurlTransportTest, MeasuresClockSkewFromTheDateHeader) {
  StartServer([](const HttpRequest& req) {
    HttpResponse r = Text(200, "ok");
    if (req.path == "/ahead") {
      r.WithHeader("Date",
                   FormatHttpDate(std::chrono::system_clock::now() + std::chrono::seconds(120)));
    }
    return r;
  });
  auto t = MustCreate(env_.TransportOpts());
  EXPECT_FALSE(t->LastClockSkew().has_value());
  auto resp = t->Send(Get(Url("/ahead")));
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  ASSERT_TRUE(resp->clock_skew.has_value());
  ASSERT_TRUE(resp->server_date.has_value());
  EXPECT_NEAR(static_cast<double>(resp->clock_skew->count()), 120.0, 2.0);
  ASSERT_TRUE(t->LastClockSkew().has_value());
  EXPECT_NEAR(static_cast<double>(t->LastClockSkew()->count()), 120.0, 2.0);
  // The server's own Date (real time) brings it back to about zero.
  auto normal = t->Send(Get(Url("/now")));
  ASSERT_TRUE(normal.ok());
  ASSERT_TRUE(normal->clock_skew.has_value());
  EXPECT_LE(std::abs(normal->clock_skew->count()), 2);
  EXPECT_LE(std::abs(t->LastClockSkew()->count()), 2);
}

// ------------------------------------------------------------------------------------------
// Size cap.

TEST_F(CurlTransportTest, ResponseSizeCap) {
  constexpr std::size_t kCap = http::kDefaultMaxResponseBytes;
  StartServer([&](const HttpRequest& req) {
    HttpResponse r;
    r.body.assign(req.path == "/over" ? kCap + 1024 * 1024 : kCap, 'x');
    r.close_delimited = req.Query("no-length").has_value();
    return r;
  });
  auto t = MustCreate(env_.TransportOpts());
  auto exact = t->Send(Get(Url("/exact")));
  ASSERT_TRUE(exact.ok()) << exact.status().ToString();
  EXPECT_EQ(exact->body.size(), kCap);

  // Announced by Content-Length: refused before the body is read.
  auto over = t->Send(Get(Url("/over")));
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().reason(), reason::kResponseTooLarge);
  EXPECT_NE(over.status().message().find("localhost"), std::string::npos);

  // No Content-Length: the write callback stops at the cap.
  auto over_stream = t->Send(Get(Url("/over?no-length")));
  ASSERT_FALSE(over_stream.ok());
  EXPECT_EQ(over_stream.status().reason(), reason::kResponseTooLarge);
  auto exact_stream = t->Send(Get(Url("/exact?no-length")));
  ASSERT_TRUE(exact_stream.ok()) << exact_stream.status().ToString();
  EXPECT_EQ(exact_stream->body.size(), kCap);
}

TEST_F(CurlTransportTest, ConfigurableSmallCap) {
  StartServer([](const HttpRequest& req) {
    HttpResponse r = Text(200, std::string(req.path == "/big" ? 1001 : 1000, 'y'));
    r.close_delimited = req.Query("no-length").has_value();
    return r;
  });
  auto opts = env_.TransportOpts();
  opts.max_response_bytes = 1000;
  auto t = MustCreate(std::move(opts));
  EXPECT_TRUE(t->Send(Get(Url("/ok"))).ok());
  EXPECT_TRUE(t->Send(Get(Url("/ok?no-length"))).ok());
  EXPECT_EQ(t->Send(Get(Url("/big"))).status().reason(), reason::kResponseTooLarge);
  EXPECT_EQ(t->Send(Get(Url("/big?no-length"))).status().reason(), reason::kResponseTooLarge);
}

// ------------------------------------------------------------------------------------------
// Redirects and URLs.

TEST_F(CurlTransportTest, RedirectsAreReturnedNotFollowed) {
  StartServer([](const HttpRequest& req) {
    if (req.path == "/start") {
      HttpResponse r = Text(302, "moved");
      r.WithHeader("Location", "/elsewhere");
      return r;
    }
    return Text(200, "followed!");
  });
  auto t = MustCreate(env_.TransportOpts());
  auto resp = t->Send(Get(Url("/start")));
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->status, 302);
  EXPECT_EQ(resp->Header("location").value_or(""), "/elsewhere");
  EXPECT_EQ(resp->body, "moved");
  ASSERT_EQ(server_->requests().size(), 1u);
}

TEST_F(CurlTransportTest, NonHttpsUrlsAreRefusedWithoutNetworkActivity) {
  StartServer([](const HttpRequest&) { return Text(200, "ok"); });
  auto t = MustCreate(env_.TransportOpts());
  const std::string port = std::to_string(server_->port());
  for (const std::string& url : std::vector<std::string>{
           "http://localhost:" + port + "/", "ftp://localhost:" + port + "/", "localhost:" + port,
           "file:///etc/passwd", "https://user:pw@localhost:" + port + "/", "", "https://",
           "https://localhost:" + port + "/a b"}) {
    auto resp = t->Send(Get(url));
    ASSERT_FALSE(resp.ok()) << url;
    EXPECT_EQ(resp.status().reason(), reason::kBadUrl) << url;
    EXPECT_EQ(resp.status().code(), Code::kInvalidArgument) << url;
    EXPECT_EQ(resp.status().message().find("pw@"), std::string::npos);
  }
  auto http = t->Send(Get("http://localhost:" + port + "/x"));
  EXPECT_NE(http.status().message().find("only https://"), std::string::npos)
      << http.status().message();
  EXPECT_NE(http.status().message().find("control_plane.url"), std::string::npos);
  EXPECT_EQ(server_->connections_accepted(), 0u);
}

TEST_F(CurlTransportTest, ConnectionRefusedIsConnectFailed) {
  StartServer([](const HttpRequest&) { return Text(200, "ok"); });
  const std::string url = Url("/");
  server_->Stop();  // the port is closed now
  auto t = MustCreate(env_.TransportOpts());
  auto resp = t->Send(Get(url));
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().reason(), reason::kConnectFailed) << resp.status().ToString();
  EXPECT_EQ(resp.status().code(), Code::kUnavailable);
  EXPECT_NE(resp.status().message().find("localhost:"), std::string::npos);
}

TEST_F(CurlTransportTest, CreateValidatesOptions) {
  {
    auto o = env_.TransportOpts();
    o.ca_file = (env_.dir / "missing.pem").string();
    auto t = http::CurlTransport::Create(std::move(o));
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find("control_plane.ca_file"), std::string::npos);
  }
  {
    auto o = env_.TransportOpts();
    WriteFile(env_.dir / "junk.pem", "not a certificate");
    o.ca_file = (env_.dir / "junk.pem").string();
    EXPECT_FALSE(http::CurlTransport::Create(std::move(o)).ok());
  }
  {
    auto o = env_.TransportOpts();
    o.pinned_spki_sha256 = {"c2hvcnQ="};
    auto t = http::CurlTransport::Create(std::move(o));
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find("pinned_spki_sha256[0]"), std::string::npos);
  }
  for (const char* proxy : {"https://proxy.example:3128", "socks5://127.0.0.1:1080",
                            "http://user:pw@proxy.example:3128", "not a url",
                            "http://proxy.example", "http://proxy.example:3128/path"}) {
    auto o = env_.TransportOpts();
    o.proxy_url = proxy;
    auto t = http::CurlTransport::Create(std::move(o));
    ASSERT_FALSE(t.ok()) << proxy;
    EXPECT_EQ(t.status().reason(), reason::kBadUrl) << proxy;
    EXPECT_EQ(t.status().message().find("pw"), std::string::npos);
  }
  {
    auto o = env_.TransportOpts();
    o.proxy_url = "http://proxy.example";
    auto t = http::CurlTransport::Create(std::move(o));
    EXPECT_NE(t.status().message().find("must name its port"), std::string::npos)
        << t.status().message();
    EXPECT_NE(t.status().message().find("control_plane.proxy"), std::string::npos);
  }
  {
    auto o = env_.TransportOpts();
    o.proxy_url = "http://proxy.example:3128/";  // a bare trailing slash is fine
    EXPECT_TRUE(http::CurlTransport::Create(std::move(o)).ok());
  }
  {
    auto o = env_.TransportOpts();
    o.proxy_password = SecretBytes::CopyOf(std::string_view("pw"));  // but no proxy user
    EXPECT_FALSE(http::CurlTransport::Create(std::move(o)).ok());
  }
}

// ------------------------------------------------------------------------------------------
// Connections.

TEST_F(CurlTransportTest, KeepAliveReusesOneConnectionAndResetDropsIt) {
  StartServer([](const HttpRequest&) { return Text(200, "ok"); });
  auto t = MustCreate(env_.TransportOpts());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(t->Send(Get(Url("/n"))).ok());
  EXPECT_EQ(server_->connections_accepted(), 1u);
  for (const auto& r : server_->requests()) EXPECT_EQ(r.connection_id, 1u);

  t->ResetConnections();
  ASSERT_TRUE(t->Send(Get(Url("/after-reset"))).ok());
  EXPECT_EQ(server_->connections_accepted(), 2u);
  EXPECT_EQ(server_->requests().back().connection_id, 2u);

  // The server closing idle connections is survived transparently.
  server_->DropConnections();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto after_drop = t->Send(Get(Url("/after-drop")));
  ASSERT_TRUE(after_drop.ok()) << after_drop.status().ToString();
  EXPECT_EQ(server_->connections_accepted(), 3u);
}

// libcurl sends a request again by itself when a kept-alive connection dies before the answer
// begins. The server may have acted on it: here it handles the request, then resets.
TEST_F(CurlTransportTest, AWriteSentOnceIsNeverSentAgainBehindTheCallersBack) {
  StartServer([](const HttpRequest&) { return Text(200, "ok"); });
  auto t = MustCreate(env_.TransportOpts());
  auto write = [&](const std::string& path, bool once) {
    Request req = Get(Url(path));
    req.method = "POST";
    req.body = R"({"name":"new-user"})";
    req.send_once = once;
    return t->Send(req);
  };
  auto count = [&](const std::string& path) {
    const auto seen = server_->requests();
    return std::count_if(seen.begin(), seen.end(), [&](const auto& r) { return r.path == path; });
  };
  ASSERT_TRUE(t->Send(Get(Url("/read"))).ok());

  // A write sent once rides the kept-alive connection.
  ASSERT_TRUE(write("/create", true).ok());
  EXPECT_EQ(server_->connections_accepted(), 1u);

  // Its connection dies after the server acted: a failure, and the server saw it once.
  server_->QueueFault({Fault::kResetBeforeHeaders, {}});
  auto lost = write("/create-lost", true);
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.status().reason(), reason::kNotResent) << lost.status().ToString();
  EXPECT_EQ(lost.status().code(), Code::kUnavailable);
  EXPECT_NE(lost.status().message().find("was not sent again"), std::string::npos)
      << lost.status().message();
  EXPECT_EQ(count("/create-lost"), 1);

  // What it prevents: the same on a request not sent once is sent twice, and looks successful.
  ASSERT_TRUE(t->Send(Get(Url("/read"))).ok());
  server_->QueueFault({Fault::kResetBeforeHeaders, {}});
  ASSERT_TRUE(write("/create-twice", false).ok());
  EXPECT_EQ(count("/create-twice"), 2);

  // A connection the server closed while idle is noticed before use: the write goes out on a new
  // one, and succeeds.
  server_->DropConnections();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const auto before_drop = server_->connections_accepted();
  auto after_drop = write("/after-drop", true);
  ASSERT_TRUE(after_drop.ok()) << after_drop.status().ToString();
  EXPECT_EQ(server_->connections_accepted(), before_drop + 1);
  EXPECT_EQ(count("/after-drop"), 1);

  // Without a body libcurl could send it again unrewound: it takes a new connection.
  Request del = Get(Url("/membership"));
  del.method = "DELETE";
  del.send_once = true;
  const auto before_delete = server_->connections_accepted();
  ASSERT_TRUE(t->Send(del).ok());
  EXPECT_EQ(server_->connections_accepted(), before_delete + 1);

  // Only a connection busy moments ago carries a write; reads reuse older ones.
  ASSERT_TRUE(t->Send(Get(Url("/read"))).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(2200));
  const auto before_idle = server_->connections_accepted();
  ASSERT_TRUE(write("/after-idle", true).ok());
  EXPECT_EQ(server_->connections_accepted(), before_idle + 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(2200));
  ASSERT_TRUE(t->Send(Get(Url("/read"))).ok());
  EXPECT_EQ(server_->connections_accepted(), before_idle + 1);
}

TEST_F(CurlTransportTest, ConcurrentSendsThroughOneTransport) {
  std::atomic<int> in_flight{0};
  std::atomic<int> max_in_flight{0};
  StartServer([&](const HttpRequest& req) {
    const int now = ++in_flight;
    int seen = max_in_flight.load();
    while (now > seen && !max_in_flight.compare_exchange_weak(seen, now)) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    --in_flight;
    return Text(200, req.Query("id").value_or(""));
  });
  auto t = MustCreate(env_.TransportOpts());
  constexpr int kThreads = 6;
  constexpr int kPerThread = 15;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int j = 0; j < kPerThread; ++j) {
        const std::string id = std::to_string(i) + "-" + std::to_string(j);
        auto resp = t->Send(Get(Url("/c?id=" + id)));
        if (!resp.ok() || resp->body != id) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(server_->requests().size(), static_cast<std::size_t>(kThreads * kPerThread));
  EXPECT_GT(max_in_flight.load(), 1) << "requests ran in parallel";
  // Handles (and their connections) are pooled: far fewer connections than requests.
  EXPECT_LE(server_->connections_accepted(), static_cast<std::uint64_t>(kThreads));
}

// ------------------------------------------------------------------------------------------
// Faults.

TEST_F(CurlTransportTest, FaultsMapToDistinctReasonsAndTheTransportRecovers) {
  StartServer([](const HttpRequest&) { return Text(200, "0123456789abcdefghij"); });
  auto opts = env_.TransportOpts();
  opts.timeout = std::chrono::milliseconds(700);
  auto t = MustCreate(std::move(opts));

  // Faults on fresh connections: libcurl retries a request once by itself when a *reused*
  // connection dies before any answer (the stale keep-alive case).
  server_->QueueFault({Fault::kResetBeforeHeaders, {}});
  auto reset = t->Send(Get(Url("/reset")));
  ASSERT_FALSE(reset.ok());
  EXPECT_EQ(reset.status().reason(), reason::kProtocol) << reset.status().ToString();
  EXPECT_TRUE(t->Send(Get(Url("/ok1"))).ok());

  t->ResetConnections();
  server_->QueueFault({Fault::kTruncateBody, {}});
  auto truncated = t->Send(Get(Url("/truncated")));
  ASSERT_FALSE(truncated.ok());
  EXPECT_EQ(truncated.status().reason(), reason::kProtocol) << truncated.status().ToString();
  EXPECT_NE(truncated.status().message().find("cut short"), std::string::npos)
      << truncated.status().message();
  EXPECT_TRUE(t->Send(Get(Url("/ok2"))).ok());

  server_->QueueFault({Fault::kStall, {}});
  const auto start = std::chrono::steady_clock::now();
  auto stalled = t->Send(Get(Url("/stall")));
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(stalled.ok());
  EXPECT_EQ(stalled.status().reason(), reason::kTimeout) << stalled.status().ToString();
  EXPECT_EQ(stalled.status().code(), Code::kDeadlineExceeded);
  EXPECT_NE(stalled.status().message().find("no complete response"), std::string::npos);
  EXPECT_LT(took, std::chrono::seconds(5));
  const auto connections_before = server_->connections_accepted();
  auto after = t->Send(Get(Url("/ok3")));
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(after->body, "0123456789abcdefghij");
  EXPECT_EQ(server_->connections_accepted(), connections_before + 1)
      << "the timed-out connection is not reused";
}

TEST_F(CurlTransportTest, AServerThatNeverHandshakesIsAConnectTimeout) {
  // A listening socket that is never accepted: the kernel completes the TCP handshake, nobody
  // answers the TLS ClientHello.
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 8), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  auto opts = env_.TransportOpts();
  opts.connect_timeout = std::chrono::milliseconds(300);
  auto t = MustCreate(std::move(opts));
  const auto start = std::chrono::steady_clock::now();
  auto resp = t->Send(Get("https://localhost:" + std::to_string(ntohs(addr.sin_port)) + "/"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  close(fd);
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().reason(), reason::kTimeout) << resp.status().ToString();
  EXPECT_NE(resp.status().message().find("timed out connecting to localhost:"), std::string::npos)
      << resp.status().message();
}

TEST_F(CurlTransportTest, PerRequestTimeoutOverridesTheDefault) {
  StartServer([](const HttpRequest&) {
    HttpResponse r = Text(200, "late");
    r.fault = {Fault::kDelay, std::chrono::milliseconds(600)};
    return r;
  });
  auto opts = env_.TransportOpts();
  opts.timeout = std::chrono::milliseconds(250);
  auto t = MustCreate(std::move(opts));
  auto short_poll = t->Send(Get(Url("/poll")));
  EXPECT_EQ(short_poll.status().reason(), reason::kTimeout);
  Request long_poll = Get(Url("/poll"));
  long_poll.timeout = std::chrono::seconds(10);
  auto resp = t->Send(long_poll);
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->body, "late");
}

// Voluntary context switches of the calling thread: each time it blocked and was woken.
long ThreadWakeUps() { return ProcField("/proc/thread-self/status", "voluntary_ctxt_switches"); }

TEST_F(CurlTransportTest, ALongPollSleepsUntilTheAnswerNotOnceASecond) {
  // curl_easy_perform waits at most one second at a time: a 3.5 s long poll woke the calling
  // thread at least 3 extra times. The transport waits for libcurl's own next timer instead.
  std::atomic<bool> slow{false};
  StartServer([&](const HttpRequest&) {
    HttpResponse r = Text(200, "jobs");
    if (slow) r.fault = {Fault::kDelay, std::chrono::milliseconds(3500)};
    return r;
  });
  auto t = MustCreate(env_.TransportOpts());
  Request poll = Get(Url("/poll"));
  poll.timeout = std::chrono::seconds(50);
  ASSERT_TRUE(t->Send(poll).ok());  // connects; the next two reuse the connection
  long before = ThreadWakeUps();
  ASSERT_TRUE(t->Send(poll).ok());
  const long quick = ThreadWakeUps() - before;
  slow = true;
  before = ThreadWakeUps();
  const auto start = std::chrono::steady_clock::now();
  auto resp = t->Send(poll);
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(3400));
  const long waited = ThreadWakeUps() - before;
  EXPECT_LE(waited, quick + 1) << "a 3.5 s long poll woke the thread " << waited
                               << " times, an instant answer " << quick << " times";
  EXPECT_EQ(server_->connections_accepted(), 1u);
}

TEST_F(CurlTransportTest, CancelEndsALongPollAtOnceAndTheTransportCarriesOn) {
  StartServer([](const HttpRequest& req) {
    HttpResponse r = Text(200, "jobs");
    if (req.path == "/poll") r.fault = {Fault::kDelay, std::chrono::seconds(20)};
    return r;
  });
  auto t = MustCreate(env_.TransportOpts());
  std::stop_source stop;
  Request poll = Get(Url("/poll"));
  poll.timeout = std::chrono::seconds(50);
  poll.cancel = stop.get_token();
  std::thread stopper([&] {
    // Once the server holds the poll: the transport is waiting in curl_multi_poll.
    for (int i = 0; i < 1000 && server_->requests().empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    stop.request_stop();
  });
  const auto start = std::chrono::steady_clock::now();
  auto resp = t->Send(poll);
  const auto took = std::chrono::steady_clock::now() - start;
  stopper.join();
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), Code::kAborted);
  EXPECT_EQ(resp.status().reason(), reason::kCancelled);
  EXPECT_NE(resp.status().message().find("was cancelled"), std::string::npos);
  ASSERT_EQ(server_->requests().size(), 1u);
  // Well short of the server's 20 s hold (and of the 50 s timeout).
  EXPECT_LT(took, std::chrono::seconds(10));

  // A request whose token was stopped before it started is not sent at all.
  auto again = t->Send(poll);
  EXPECT_EQ(again.status().reason(), reason::kCancelled);
  EXPECT_EQ(server_->requests().size(), 1u);

  // The transport is still usable; the cut-off connection is not reused.
  auto next = t->Send(Get(Url("/next")));
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(next->body, "jobs");
  EXPECT_EQ(server_->connections_accepted(), 2u);
}

// ------------------------------------------------------------------------------------------
// Mutual TLS and the negative matrix.

class MutualTlsTest : public CurlTransportTest,
                      public ::testing::WithParamInterface<ServerOptions::MaxTls> {
 protected:
  ServerOptions Opts(ServerOptions::ClientCerts mode) {
    ServerOptions o = env_.ServerOpts();
    o.client_certs = mode;
    o.client_ca_pem = env_.ca->cert_pem();
    o.max_tls = GetParam();
    return o;
  }
  std::string ExpectedVersion() const {
    return GetParam() == ServerOptions::MaxTls::kTls12 ? "TLSv1.2" : "TLSv1.3";
  }
};

TEST_P(MutualTlsTest, ClientCertificateThroughTheSslCtxHook) {
  StartServer([](const HttpRequest&) { return Text(200, "hello agent"); },
              Opts(ServerOptions::ClientCerts::kRequire));
  auto opts = env_.TransportOpts();
  opts.client_identity = SoftwareIdentity(env_.ClientIdentity("agt_test"));
  auto t = MustCreate(std::move(opts));
  auto resp = t->Send(Get(Url("/agent/v1/jobs")));
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  EXPECT_EQ(resp->body, "hello agent");
  auto seen = server_->requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].client_cert_subject.value_or("<none>"), "CN=agt_test");
  EXPECT_FALSE(seen[0].client_cert_der.empty());
  EXPECT_EQ(seen[0].tls_version, ExpectedVersion());
}

TEST_P(MutualTlsTest, RejectionWithoutClientCertificateIsDetected) {
  StartServer([](const HttpRequest&) { return Text(200, "must not be reached"); },
              Opts(ServerOptions::ClientCerts::kRequire));
  auto t = MustCreate(env_.TransportOpts());  // no client identity
  auto resp = t->Send(Get(Url("/agent/v1/jobs")));
  ASSERT_FALSE(resp.ok()) << "got an application response: " << resp->body;
  EXPECT_EQ(resp.status().reason(), reason::kClientCertRejected) << resp.status().ToString();
  EXPECT_NE(resp.status().message().find("no client certificate is configured"), std::string::npos);
  EXPECT_TRUE(server_->requests().empty());
  EXPECT_EQ(server_->connections_accepted(), 1u);
}

TEST_P(MutualTlsTest, RejectionOfACertificateFromAnotherCaIsDetected) {
  StartServer([](const HttpRequest&) { return Text(200, "must not be reached"); },
              Opts(ServerOptions::ClientCerts::kRequire));
  auto other = TestCa::Create("Some Other CA");
  auto opts = env_.TransportOpts();
  opts.client_identity = SoftwareIdentity(env_.ClientIdentity("agt_test", other.get()));
  auto t = MustCreate(std::move(opts));
  auto resp = t->Send(Get(Url("/agent/v1/jobs")));
  ASSERT_FALSE(resp.ok()) << "got an application response: " << resp->body;
  EXPECT_EQ(resp.status().reason(), reason::kClientCertRejected) << resp.status().ToString();
  EXPECT_NE(resp.status().message().find("unknown CA"), std::string::npos)
      << resp.status().message();
  EXPECT_TRUE(server_->requests().empty());
}

TEST_P(MutualTlsTest, AServerThatIgnoresClientCertificatesAcceptsTheCall) {
  StartServer([](const HttpRequest&) { return Text(200, "ignored"); },
              Opts(ServerOptions::ClientCerts::kRequest));
  auto opts = env_.TransportOpts();
  opts.client_identity = SoftwareIdentity(env_.ClientIdentity("agt_test"));
  auto t = MustCreate(std::move(opts));
  auto resp = t->Send(Get(Url("/")));
  ASSERT_TRUE(resp.ok()) << resp.status().ToString();
  auto seen = server_->requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_FALSE(seen[0].client_cert_subject.has_value()) << "kRequest verifies nothing";
  EXPECT_FALSE(seen[0].client_cert_der.empty()) << "but the certificate was presented";
}

TEST_P(MutualTlsTest, VerifyIfPresentedAcceptsNoCertificateButNotAForeignOne) {
  StartServer(
      [](const HttpRequest& req) {
        return Text(200, req.client_cert_subject.value_or("anonymous"));
      },
      Opts(ServerOptions::ClientCerts::kVerifyIfPresented));
  auto anonymous = MustCreate(env_.TransportOpts());
  auto a = anonymous->Send(Get(Url("/enroll")));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->body, "anonymous");
  auto opts = env_.TransportOpts();
  opts.client_identity = SoftwareIdentity(env_.ClientIdentity("agt_7"));
  auto b = MustCreate(std::move(opts))->Send(Get(Url("/jobs")));
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->body, "CN=agt_7");
  auto other = TestCa::Create("Some Other CA");
  auto foreign_opts = env_.TransportOpts();
  foreign_opts.client_identity = SoftwareIdentity(env_.ClientIdentity("agt_x", other.get()));
  auto c = MustCreate(std::move(foreign_opts))->Send(Get(Url("/jobs")));
  EXPECT_EQ(c.status().reason(), reason::kClientCertRejected) << c.status().ToString();
}

TEST_P(MutualTlsTest, AFailingIdentityHookIsAClearError) {
  StartServer([](const HttpRequest&) { return Text(200, "x"); },
              Opts(ServerOptions::ClientCerts::kRequire));
  auto opts = env_.TransportOpts();
  opts.client_identity = [](SSL_CTX*) {
    return Status(Code::kUnavailable, "token not present", "token_unavailable");
  };
  auto t = MustCreate(std::move(opts));
  auto resp = t->Send(Get(Url("/")));
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().reason(), "token_unavailable");
  EXPECT_NE(resp.status().message().find("token not present"), std::string::npos);
  EXPECT_NE(resp.status().message().find("client certificate"), std::string::npos);

  auto throwing = env_.TransportOpts();
  throwing.client_identity = [](SSL_CTX*) -> Status { throw std::runtime_error("boom"); };
  auto t2 = MustCreate(std::move(throwing));
  auto resp2 = t2->Send(Get(Url("/")));
  ASSERT_FALSE(resp2.ok());
  EXPECT_EQ(resp2.status().code(), Code::kInternal);
  EXPECT_EQ(resp2.status().reason(), reason::kTlsHandshake);
  EXPECT_TRUE(server_->requests().empty());
}

// Counts, through an SSL_CTX hook, the new connections, the server Certificate messages the
// client receives (one per full handshake, none when a session was resumed) and the session
// tickets it receives.
struct HandshakeCounter {
  std::atomic<int> connections{0};
  std::atomic<int> server_certificates{0};
  std::atomic<int> tickets{0};
};

void CountServerCertificate(int write_p, int, int content_type, const void* buf, size_t len, SSL*,
                            void* arg) {
  if (write_p != 0 || content_type != SSL3_RT_HANDSHAKE || len == 0) return;
  auto* counter = static_cast<HandshakeCounter*>(arg);
  const unsigned char type = static_cast<const unsigned char*>(buf)[0];
  if (type == SSL3_MT_CERTIFICATE) ++counter->server_certificates;
  if (type == SSL3_MT_NEWSESSION_TICKET) ++counter->tickets;
}

http::ClientIdentityHook Counting(http::ClientIdentityHook inner, HandshakeCounter* counter) {
  return [inner = std::move(inner), counter](SSL_CTX* ctx) {
    ++counter->connections;
    SSL_CTX_set_msg_callback(ctx, CountServerCertificate);
    SSL_CTX_set_msg_callback_arg(ctx, counter);
    return inner(ctx);
  };
}

TEST_P(MutualTlsTest, FreshConnectionsOfAnyPooledHandleResumeTheTlsSession) {
  StartServer(
      [](const HttpRequest& r) {
        HttpResponse resp = Text(200, "done");
        if (r.path == "/slow") resp.fault = {Fault::kDelay, std::chrono::milliseconds(800)};
        return resp;
      },
      Opts(ServerOptions::ClientCerts::kRequire));
  HandshakeCounter counter;
  auto opts = env_.TransportOpts();
  opts.client_identity = Counting(SoftwareIdentity(env_.ClientIdentity("agt_test")), &counter);
  auto t = MustCreate(std::move(opts));
  auto fresh_write = [&](const std::string& path) {
    Request write = Get(Url(path));
    write.method = "POST";
    write.body = "{}";
    write.fresh_connection = true;
    return write;
  };
  const Request write = fresh_write("/write");
  ASSERT_TRUE(t->Send(write).ok());  // the first pooled handle: a full handshake
  const int tickets_before_second =
      GetParam() == ServerOptions::MaxTls::kTls13 ? counter.tickets.load() + 1 : 0;
  // While that handle is busy with a slow write, this thread's write takes a second handle, whose
  // own session cache would be empty.
  std::thread busy([&] {
    auto r = t->Send(fresh_write("/slow"));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
  });
  // A TLS 1.3 session resumes once: OpenSSL marks it not resumable when a handshake has resumed
  // it (RFC 8446 asks clients not to reuse a ticket), and the resumed connection gets a new ticket
  // right after its handshake. So under TLS 1.3 this write can only resume once the slow write's
  // connection has received its ticket (the full handshake sent two); sooner it would offer no
  // session and make a full handshake, as it did on a loaded CI machine.
  for (int i = 0; i < 500 && (server_->requests().size() < 2 ||
                              counter.tickets.load() < tickets_before_second);
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  auto second = t->Send(write);
  busy.join();
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(counter.connections.load(), 3);
  EXPECT_EQ(counter.server_certificates.load(), 1) << "only the first connection is a full "
                                                      "handshake, the others resume its session";
  auto seen = server_->requests();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[1].path, "/slow");
  for (const auto& r : seen) {
    // The server still knows the client certificate of a resumed session.
    EXPECT_EQ(r.client_cert_subject.value_or("<none>"), "CN=agt_test");
    EXPECT_EQ(r.tls_version, ExpectedVersion());
  }
  EXPECT_EQ(server_->connections_accepted(), 3u);

  // ResetConnections drops the sessions with the connections.
  t->ResetConnections();
  ASSERT_TRUE(t->Send(write).ok());
  EXPECT_EQ(counter.connections.load(), 4);
  EXPECT_EQ(counter.server_certificates.load(), 2);
}

INSTANTIATE_TEST_SUITE_P(TlsVersions, MutualTlsTest,
                         ::testing::Values(ServerOptions::MaxTls::kTls13,
                                           ServerOptions::MaxTls::kTls12),
                         [](const auto& param_info) {
                           return param_info.param == ServerOptions::MaxTls::kTls12 ? "Tls12"
                                                                                    : "Tls13";
                         });

struct BadServerCase {
  const char* name;
  // Returns the server identity to present.
  std::function<KeyAndCert(const TlsEnv&, const TestCa& other)> identity;
  const char* expected_reason;
  const char* expected_text;
  const char* expected_hint;
};

class ServerVerificationTest : public CurlTransportTest,
                               public ::testing::WithParamInterface<BadServerCase> {};

TEST_P(ServerVerificationTest, IsRefusedWithAPreciseReason) {
  auto other = TestCa::Create("Untrusted CA");
  KeyAndCert identity = GetParam().identity(env_, *other);
  ServerOptions o = env_.ServerOpts();
  o.certificate_chain_pem = identity.chain_pem;
  o.private_key_pem = identity.key_pem;
  StartServer([](const HttpRequest&) { return Text(200, "must not be reached"); }, o);
  auto t = MustCreate(env_.TransportOpts());
  auto resp = t->Send(Get(Url("/")));
  ASSERT_FALSE(resp.ok()) << "got an application response";
  EXPECT_EQ(resp.status().reason(), GetParam().expected_reason) << resp.status().ToString();
  EXPECT_NE(resp.status().message().find(GetParam().expected_text), std::string::npos)
      << resp.status().message();
  EXPECT_NE(resp.status().message().find(GetParam().expected_hint), std::string::npos)
      << resp.status().message();
  EXPECT_NE(resp.status().message().find("localhost:" + std::to_string(server_->port())),
            std::string::npos)
      << resp.status().message();
  EXPECT_TRUE(server_->requests().empty());
}

KeyAndCert MustIssue(const TestCa& ca, const TestCa::LeafOptions& o) {
  auto r = ca.Issue(o);
  if (!r.ok()) throw std::runtime_error(r.status().ToString());
  return std::move(r).value();
}

INSTANTIATE_TEST_SUITE_P(
    Matrix, ServerVerificationTest,
    ::testing::Values(
        BadServerCase{
            "WrongCa", [](const TlsEnv&, const TestCa& other) { return MustIssue(other, {}); },
            reason::kTlsVerifyFailed, "not issued by a trusted CA", "check control_plane.ca_file"},
        BadServerCase{"WrongHostName",
                      [](const TlsEnv& env, const TestCa&) {
                        TestCa::LeafOptions o;
                        o.common_name = "other.example";
                        o.dns_names = {"other.example"};
                        o.ip_addresses = {};
                        return MustIssue(*env.ca, o);
                      },
                      reason::kTlsVerifyFailed, "not valid for the host name localhost",
                      "check that control_plane.url uses a name in the server certificate"},
        BadServerCase{"Expired",
                      [](const TlsEnv& env, const TestCa&) {
                        TestCa::LeafOptions o;
                        o.not_before_offset = -std::chrono::hours(72);
                        o.not_after_offset = -std::chrono::hours(1);
                        return MustIssue(*env.ca, o);
                      },
                      reason::kTlsVerifyFailed, "has expired", "must be renewed"},
        BadServerCase{"SelfSigned",
                      [](const TlsEnv&, const TestCa&) {
                        auto r = MakeSelfSigned("localhost");
                        if (!r.ok()) throw std::runtime_error(r.status().ToString());
                        return std::move(r).value();
                      },
                      reason::kTlsVerifyFailed, "self-signed", "check control_plane.ca_file"}),
    [](const auto& param_info) { return std::string(param_info.param.name); });

TEST_F(CurlTransportTest, SpkiPins) {
  StartServer([](const HttpRequest&) { return Text(200, "pinned"); });
  auto right = SpkiSha256Base64(env_.server_identity.cert_pem);
  auto wrong = SpkiSha256Base64(env_.ClientIdentity("someone-else").cert_pem);
  ASSERT_TRUE(right.ok() && wrong.ok());

  auto mismatch_opts = env_.TransportOpts();
  mismatch_opts.pinned_spki_sha256 = {*wrong};
  auto mismatch = MustCreate(std::move(mismatch_opts))->Send(Get(Url("/")));
  ASSERT_FALSE(mismatch.ok());
  EXPECT_EQ(mismatch.status().reason(), reason::kTlsPinMismatch) << mismatch.status().ToString();
  EXPECT_NE(mismatch.status().message().find("control_plane.pinned_spki_sha256"),
            std::string::npos);

  auto match_opts = env_.TransportOpts();
  match_opts.pinned_spki_sha256 = {*wrong, *right};  // any one pin may match
  auto match = MustCreate(std::move(match_opts))->Send(Get(Url("/")));
  ASSERT_TRUE(match.ok()) << match.status().ToString();
  EXPECT_EQ(match->body, "pinned");
  EXPECT_EQ(server_->requests().size(), 1u);
}

TEST_F(CurlTransportTest, SecretsNeverAppearInErrors) {
  const std::string token = MakeCanary("token");
  StartServer([](const HttpRequest&) { return Text(200, "x"); });
  auto t = MustCreate(env_.TransportOpts());
  server_->QueueFault({Fault::kResetBeforeHeaders, {}});
  Request req = Get(Url("/"));
  req.authorization = SecretBytes::CopyOf("Bearer " + token);
  req.sensitive_body = SecretBytes::CopyOf(token);
  req.method = "POST";
  auto resp = t->Send(req);
  ASSERT_FALSE(resp.ok());
  EXPECT_TRUE(FindCanaryIn(token, resp.status().ToString(), "status").empty());
}

}  // namespace
}  // namespace cakewalk::testing
