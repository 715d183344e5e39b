// What a request that carried secrets leaves behind in the process: nothing. A login's password
// goes out as a sensitive body, a token comes back as a sensitive response; once the caller has
// dropped both, the canaries are searched for in every writable mapping of the process — the
// heap, where libcurl's own copies of the request and OpenSSL's read buffer were freed, included.
//
// The HTTPS server runs in a child process forked before anything else starts, so that its copies
// of the canaries are not in this address space. Its own binary (one test): libcurl's allocator is
// chosen by the first curl_global_init of the process, which must be the transport's.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/rand.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "base/encoding.h"
#include "base/secret.h"
#include "jira/curl_transport.h"
#include "tests/fakes/https_server.h"
#include "tests/transport/tls_env.h"

namespace cakewalk::testing {
namespace {

struct Range {
  std::uintptr_t begin = 0;
  std::uintptr_t end = 0;
  bool Contains(std::uintptr_t p) const { return p >= begin && p < end; }
};

Range RangeOf(const void* p, std::size_t n) {
  const auto b = reinterpret_cast<std::uintptr_t>(p);
  return {b, b + n};
}

// A canary of 64 characters (long enough that a freed block still shows most of it), made in
// secret memory: the test's own copy is the only one it knows of, and is skipped by the search.
SecretBytes MakeSecretCanary(char tag) {
  unsigned char raw[31];
  RAND_bytes(raw, sizeof raw);
  std::string hex = HexEncode(std::span<const unsigned char>(raw, sizeof raw));
  hex.insert(hex.begin(), {tag, '-'});
  SecretBytes out = SecretBytes::CopyOf(hex);
  WipeString(hex);
  return out;
}

// Where `needle` occurs in the readable and writable private mappings of this process, outside
// `skip`. Mappings above 1 GiB (sanitizer shadow memory, reserved and mostly absent) are left out.
std::vector<std::uintptr_t> FindInOwnMemory(std::string_view needle, std::vector<Range> skip) {
  constexpr std::size_t kChunk = 1 << 20;
  void* buffer = mmap(nullptr, kChunk + needle.size(), PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buffer == MAP_FAILED) return {0};
  skip.push_back(RangeOf(buffer, kChunk + needle.size()));
  auto* buf = static_cast<char*>(buffer);
  std::vector<Range> regions;
  {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line)) {
      std::istringstream in(line);
      std::string span, perms;
      in >> span >> perms;
      if (perms.size() < 4 || perms[0] != 'r' || perms[1] != 'w') continue;
      const auto dash = span.find('-');
      const Range r{std::stoull(span.substr(0, dash), nullptr, 16),
                    std::stoull(span.substr(dash + 1), nullptr, 16)};
      if (r.end - r.begin > (std::uintptr_t{1} << 30)) continue;
      regions.push_back(r);
    }
  }
  std::vector<std::uintptr_t> found;
  const int mem = ::open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
  for (const Range& r : regions) {
    for (std::uintptr_t at = r.begin; at < r.end; at += kChunk) {
      const std::size_t want = std::min<std::uintptr_t>(kChunk + needle.size() - 1, r.end - at);
      const ssize_t got = ::pread(mem, buf, want, static_cast<off_t>(at));
      if (got <= 0) break;
      for (const char* p = buf; p != nullptr;) {
        p = static_cast<const char*>(
            memmem(p, static_cast<std::size_t>(got) - static_cast<std::size_t>(p - buf),
                   needle.data(), needle.size()));
        if (p == nullptr) break;
        const std::uintptr_t where = at + static_cast<std::uintptr_t>(p - buf);
        bool skipped = false;
        for (const Range& s : skip) skipped = skipped || s.Contains(where);
        // A match in the overlap is found again at the start of the next chunk.
        if (!skipped && static_cast<std::size_t>(p - buf) < kChunk) found.push_back(where);
        ++p;
      }
    }
  }
  ::close(mem);
  munmap(buffer, kChunk + needle.size());
  return found;
}

TEST(ResidueTest, SecretsSentAndReceivedLeaveNoCopyInTheProcess) {
  TlsEnv env;
  const SecretBytes password = MakeSecretCanary('p');
  const SecretBytes token = MakeSecretCanary('t');

  // The server, in a child process: it answers a login with the token.
  int ports[2];
  ASSERT_EQ(pipe(ports), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ports[0]);
    const std::string body(token.RevealString(SecretAccess::Grant()));
    auto server = FakeHttpsServer::Start(env.ServerOpts(), [body](const HttpRequest& req) {
      HttpResponse r;
      r.status = 200;
      r.body = req.path == "/rest/auth/1/session" ? body : "{}";
      r.headers.emplace_back("Content-Type", "application/json");
      return r;
    });
    const std::uint16_t port = server->port();
    if (::write(ports[1], &port, sizeof port) != sizeof port) _exit(1);
    for (;;) pause();
  }
  ::close(ports[1]);
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  } reaper{child};
  std::uint16_t port = 0;
  ASSERT_EQ(::read(ports[0], &port, sizeof port), static_cast<ssize_t>(sizeof port));
  ::close(ports[0]);

  const std::string_view p = password.RevealString(SecretAccess::Grant());
  const std::string_view tk = token.RevealString(SecretAccess::Grant());
  const std::vector<Range> needles = {RangeOf(p.data(), p.size()), RangeOf(tk.data(), tk.size())};

  // The search works: a copy freed without wiping is found.
  {
    auto* leaked = new std::string(p);
    const auto at = reinterpret_cast<std::uintptr_t>(leaked->data());
    const std::vector<std::uintptr_t> seen = FindInOwnMemory(p, needles);
    EXPECT_NE(std::find(seen.begin(), seen.end(), at), seen.end())
        << "the search did not find a live copy";
    WipeString(*leaked);
    delete leaked;
  }

  auto transport = http::CurlTransport::Create(env.TransportOpts());
  ASSERT_TRUE(transport.ok()) << transport.status().ToString();
  // Sent once, a body goes through libcurl's upload buffer instead of its request head; the last
  // of each kind reuses nothing the earlier ones left.
  for (int i = 0; i < 4; ++i) {
    http::Request login;
    login.method = "POST";
    login.send_once = i % 2 == 1;
    login.url = "https://localhost:" + std::to_string(port) + "/rest/auth/1/session";
    login.sensitive_body = SecretBytes::CopyOf(R"({"password":")");
    login.sensitive_body.Append(password);
    login.sensitive_body.Append(R"("})");
    login.sensitive_response = true;
    login.authorization = SecretBytes::CopyOf("Bearer ");
    login.authorization.Append(token);
    auto answer = (*transport)->Send(login);
    ASSERT_TRUE(answer.ok()) << answer.status().ToString();
    EXPECT_TRUE(answer->body == tk) << "the login's answer is not the token";
    WipeString(answer->body);  // the caller's part (http.h)
  }
  // A request without secrets after them, on a kept-alive handle.
  http::Request plain;
  plain.url = "https://localhost:" + std::to_string(port) + "/status";
  ASSERT_TRUE((*transport)->Send(plain).ok());

  EXPECT_EQ(FindInOwnMemory(p, needles).size(), 0u) << "copies of the password remain";
  EXPECT_EQ(FindInOwnMemory(tk, needles).size(), 0u) << "copies of the token remain";
}

}  // namespace
}  // namespace cakewalk::testing
