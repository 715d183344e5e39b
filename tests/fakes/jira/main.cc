// fake-jira: FakeJira as a standalone HTTPS server for the demo and the chaos scripts.
//
//   fake-jira --dir DIR --flavor datacenter|cloud [--version 10.3.4] [--context-path /jira]
//             [--port N] [--users N] [--seed S]
//
// Writes into DIR (created 0700 if missing):
//   ca.pem   the test CA that signed the server certificate for "localhost"
//   url      the base URL (Data Center: with the context path; Cloud: the site URL)
//   pid      this process
//   Data Center: admin-username, admin-password (0600), admin-totp-seed (Base32, 0600)
//   Cloud: admin-email, admin-api-token (0600), org-api-key (0600), cloud-id, org-id
//   Both: oauth-client-id, oauth-client-secret (0600), oauth-redirect-uri
// Secrets go to files only (never argv, environment or standard output); the demo feeds them to
// the agent on standard input.
//
// Test-only endpoints (no authentication; the server listens on 127.0.0.1 only):
//   GET  /_fake/state, /_fake/mutations?since=N, /_fake/expected, /_fake/login-attempts,
//        /_fake/totp-events
//   POST /_fake/reset-captcha {"username"?}, /_fake/expire-sessions, /_fake/idp-managed
//        {"enabled"}, /_fake/faults {FaultRule as JSON}, /_fake/oauth/code {"client_id", "user",
//        "redirect_uri", "scopes", "code_challenge"?}, /_fake/clock {"offset_seconds"}
//   DELETE /_fake/faults
// One line per mutation is printed on standard output ("alice added to jira-software-users").
#include <openssl/rand.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/json.h"
#include "tests/fakes/https_server.h"
#include "tests/fakes/jira/fake_jira.h"
#include "tests/fakes/jira/totp.h"
#include "tests/support/pki.h"
#include "tests/support/temp_dir.h"

namespace {

using namespace cakewalk;
using namespace cakewalk::testing;

// The system clock shifted by an offset the chaos scripts can set (clock-skew scenarios).
class OffsetClock final : public Clock {
 public:
  std::chrono::system_clock::time_point Now() const override {
    return SystemClock().Now() + std::chrono::seconds(offset_.load());
  }
  std::chrono::steady_clock::time_point Steady() const override {
    return SystemClock().Steady() + std::chrono::seconds(offset_.load());
  }
  void set_offset(long long seconds) { offset_ = seconds; }

 private:
  std::atomic<long long> offset_{0};
};

struct Args {
  std::filesystem::path dir;
  JiraFlavor flavor = JiraFlavor::kDataCenter;
  std::string version = "10.3.4";
  std::string context_path;
  std::uint16_t port = 0;
  std::uint32_t users = 0;
  std::uint64_t seed = 1;
};

int Usage(const char* why) {
  std::fprintf(stderr,
               "fake-jira: %s\nusage: fake-jira --dir DIR --flavor datacenter|cloud "
               "[--version 10.3.4] [--context-path /jira] [--port N] [--users N] [--seed S]\n",
               why);
  return 2;
}

bool ParseNumber(const std::string& s, unsigned long long max, unsigned long long* out) {
  if (s.empty() || s.size() > 20) return false;
  unsigned long long v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<unsigned long long>(c - '0');
    if (v > max) return false;
  }
  *out = v;
  return true;
}

std::string RandomSecret(std::size_t bytes) {
  std::vector<std::uint8_t> buf(bytes);
  if (RAND_bytes(buf.data(), static_cast<int>(buf.size())) != 1)
    throw std::runtime_error("RAND_bytes");
  return Base32Encode(buf);
}

void Check(const Status& s, const char* what) {
  if (!s.ok()) throw std::runtime_error(std::string(what) + ": " + s.message());
}
template <class T>
T Check(Result<T> r, const char* what) {
  if (!r.ok()) throw std::runtime_error(std::string(what) + ": " + r.status().message());
  return std::move(r).value();
}

int Run(const Args& args) {
  std::error_code ec;
  std::filesystem::create_directories(args.dir, ec);
  if (ec) throw std::runtime_error("cannot create " + args.dir.string() + ": " + ec.message());
  chmod(args.dir.c_str(), 0700);

  // Signals are handled by sigwait in this thread; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto ca = TestCa::Create("cakewalk fake-jira CA");
  KeyAndCert leaf = Check(ca->Issue(TestCa::LeafOptions{}), "issuing the server certificate");

  OffsetClock clock;
  FakeJiraOptions options;
  options.flavor = args.flavor;
  options.version = args.version;
  options.context_path = args.context_path;
  options.clock = &clock;
  options.admin_endpoints = true;
  FakeJira jira(options);
  const bool dc = args.flavor == JiraFlavor::kDataCenter;

  if (args.users > 0) {
    SiteSpec spec;
    spec.seed = args.seed;
    spec.users = args.users;
    spec.groups = std::max<std::uint32_t>(10, args.users / 200);
    spec.memberships = std::min<std::uint64_t>(std::uint64_t{args.users} * 2,
                                               std::uint64_t{args.users} * spec.groups / 2);
    Check(jira.GenerateSite(spec), "generating the site");
  }

  std::mutex out_mu;
  jira.SetMutationListener([&](const Mutation& m) {
    std::lock_guard lock(out_mu);
    std::cout << m.Describe() << std::endl;
  });

  const std::filesystem::path& d = args.dir;
  const std::string redirect = "https://localhost/cakewalk/oauth/callback";
  NewUser admin;
  admin.username = "admin";
  admin.email = "admin@corp.example";
  admin.display_name = "Jira Administrator";
  admin.password = RandomSecret(15);
  if (dc) {
    admin.groups = {"jira-administrators", "jira-system-administrators", "jira-software-users"};
    Check(jira.AddUser(admin), "seeding the admin");
    std::vector<std::uint8_t> seed(20);
    if (RAND_bytes(seed.data(), static_cast<int>(seed.size())) != 1)
      throw std::runtime_error("RAND_bytes");
    Check(jira.EnrolTotp("admin", seed), "enrolling the admin in 2SV");
    WriteFile(d / "admin-username", "admin\n", 0644);
    WriteFile(d / "admin-password", admin.password + "\n", 0600);
    WriteFile(d / "admin-totp-seed", Base32Encode(seed) + "\n", 0600);
    OPENSSL_cleanse(seed.data(), seed.size());
  } else {
    admin.groups = {"site-admins", "jira-administrators", "jira-software-users"};
    const std::string id = Check(jira.AddUser(admin), "seeding the admin");
    const std::string token =
        Check(jira.AddApiToken(id, "cakewalk-agent", clock.Now() + std::chrono::hours(24 * 365)),
              "creating the admin's API token");
    const std::string org_key = Check(jira.AddOrgApiKey(), "creating the organization key");
    WriteFile(d / "admin-email", admin.email + "\n", 0644);
    WriteFile(d / "admin-api-token", token + "\n", 0600);
    WriteFile(d / "org-api-key", org_key + "\n", 0600);
    WriteFile(d / "cloud-id", options.cloud_id + "\n", 0644);
    WriteFile(d / "org-id", options.org_id + "\n", 0644);
  }
  OAuthClientSpec client;
  client.client_id = "cakewalk-agent-" + RandomSecret(5);
  client.client_secret = RandomSecret(20);
  client.name = "Cakewalk agent";
  client.redirect_uris = {redirect};
  client.scopes = dc ? std::vector<std::string>{"READ", "WRITE", "ADMIN", "SYSTEM_ADMIN"}
                     : std::vector<std::string>{"read:jira-user", "read:jira-work",
                                                "manage:jira-configuration", "offline_access"};
  Check(jira.AddOAuthClient(client), "registering the OAuth client");
  WriteFile(d / "oauth-client-id", client.client_id + "\n", 0644);
  WriteFile(d / "oauth-client-secret", client.client_secret + "\n", 0600);
  WriteFile(d / "oauth-redirect-uri", redirect + "\n", 0644);

  ServerOptions server_options;
  server_options.certificate_chain_pem = leaf.chain_pem;
  server_options.private_key_pem = leaf.key_pem;
  server_options.port = args.port;
  auto server = FakeHttpsServer::Start(server_options, [&](const HttpRequest& req) {
    if (req.method == "POST" && req.path == "/_fake/clock") {
      auto body = ParseJson(req.body, "clock request");
      if (!body.ok() || !body->isObject() || !(*body)["offset_seconds"].isInt64()) {
        return HttpResponse::Error(400, "bad_request", "expected {\"offset_seconds\": n}");
      }
      clock.set_offset((*body)["offset_seconds"].asInt64());
      HttpResponse r;
      r.status = 204;
      return r;
    }
    return jira.Handle(req);
  });
  const std::string url = server->base_url() + (dc ? args.context_path : std::string());
  WriteFile(d / "ca.pem", ca->cert_pem(), 0644);
  WriteFile(d / "url", url + "\n", 0644);
  WriteFile(d / "pid", std::to_string(getpid()) + "\n", 0644);
  {
    std::lock_guard lock(out_mu);
    std::cout << "fake-jira: serving Jira " << (dc ? "Data Center " + args.version : "Cloud")
              << " at " << url << " (" << jira.Counts().users << " users)" << std::endl;
  }

  int sig = 0;
  sigwait(&signals, &sig);
  server->Stop();
  std::lock_guard lock(out_mu);
  std::cout << "fake-jira: stopped" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  bool have_dir = false, have_flavor = false;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) return Usage(("missing value for " + flag).c_str());
    const std::string value = argv[++i];
    unsigned long long n = 0;
    if (flag == "--dir") {
      args.dir = value;
      have_dir = true;
    } else if (flag == "--flavor") {
      if (value == "datacenter") {
        args.flavor = JiraFlavor::kDataCenter;
      } else if (value == "cloud") {
        args.flavor = JiraFlavor::kCloud;
      } else {
        return Usage("--flavor must be datacenter or cloud");
      }
      have_flavor = true;
    } else if (flag == "--version") {
      args.version = value;
    } else if (flag == "--context-path") {
      args.context_path = value;
    } else if (flag == "--port") {
      if (!ParseNumber(value, 65535, &n)) return Usage("--port must be 0-65535");
      args.port = static_cast<std::uint16_t>(n);
    } else if (flag == "--users") {
      if (!ParseNumber(value, 50000000, &n)) return Usage("--users must be a number");
      args.users = static_cast<std::uint32_t>(n);
    } else if (flag == "--seed") {
      if (!ParseNumber(value, ~0ull, &n)) return Usage("--seed must be a number");
      args.seed = n;
    } else {
      return Usage(("unknown option " + flag).c_str());
    }
  }
  if (!have_dir || !have_flavor) return Usage("--dir and --flavor are required");
  unsigned major = 0, minor = 0, patch = 0;
  char tail = 0;
  if (args.flavor == JiraFlavor::kDataCenter &&
      (std::sscanf(args.version.c_str(), "%u.%u.%u%c", &major, &minor, &patch, &tail) != 3 ||
       major < 8)) {
    return Usage("--version must look like 10.3.4");
  }
  if (!args.context_path.empty() &&
      (args.context_path.front() != '/' || args.context_path.back() == '/')) {
    return Usage("--context-path must look like /jira");
  }
  try {
    return Run(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fake-jira: %s\n", e.what());
    return 1;
  }
}
