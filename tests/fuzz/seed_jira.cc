// fuzz-seed-jira: writes the seed corpus of the jira_responses fuzzer. Each scenario of
// jira_harness.cc runs once against an in-process FakeJira over real TLS, through the same
// connection set-up the fuzzer uses (only the URLs point at the fake); every answer the
// connector received is written, in order, as a response script (fuzz_support.h).
//
//   fuzz-seed-jira OUTPUT_DIR
//
// The transcripts hold only what the fake minted (session cookies, OAuth tokens of the fake); the
// connector's own credentials are the harness's canaries and never appear in answers.
#include <openssl/sha.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/encoding.h"
#include "base/json.h"
#include "jira/curl_transport.h"
#include "jira/oauth.h"
#include "tests/fakes/https_server.h"
#include "tests/fakes/jira/fake_jira.h"
#include "tests/fuzz/jira_harness.h"
#include "tests/support/pki.h"

namespace cakewalk::fuzz {
namespace {

using testing::ApplicationLinkSpec;
using testing::FakeHttpsServer;
using testing::FakeJira;
using testing::FakeJiraOptions;
using testing::HttpRequest;
using testing::JiraFlavor;
using testing::NewUser;
using testing::OAuthClientSpec;
using testing::ServerOptions;
using testing::SiteSpec;
using testing::TestCa;

constexpr char kAliceCloudId[] = "5b10ac8d82e05b22cc7d4ef5";

// The route an answer to `url` is written with: its path from "/rest/" on (the Cloud gateway's
// /ex/jira/{cloudId} and the fake's prefixes left out), else the whole path.
std::string RouteOf(const std::string& url) {
  const std::string_view path = UrlPath(url);
  const std::size_t rest = path.find("/rest/");
  return std::string(rest == std::string_view::npos ? path : path.substr(rest));
}

// Records every answer of the inner transport while `recording` is set; with `routed`, each
// answer carries its request's path (fuzz_support.h), for concurrent fetches.
class Recorder final : public http::Transport {
 public:
  Recorder(std::unique_ptr<http::Transport> inner, bool routed)
      : inner_(std::move(inner)), routed_(routed) {}
  Result<http::Response> Send(const http::Request& request) override {
    auto r = inner_->Send(request);
    std::lock_guard lock(mu_);
    if (recording_) {
      const std::string route = routed_ ? RouteOf(request.url) : std::string();
      if (r.ok()) {
        script_ += FormatAnswer(*r, route);
      } else {
        script_ += "@!reset" + (route.empty() ? "" : " " + route) + "\n";
      }
    }
    if (r.ok() && adjust_) adjust_(request, *r);
    return r;
  }
  // Changes what the connector gets after the answer was recorded as the fake sent it.
  void Adjust(std::function<void(const http::Request&, http::Response&)> adjust) {
    adjust_ = std::move(adjust);
  }
  std::optional<std::chrono::seconds> LastClockSkew() const override {
    return inner_->LastClockSkew();
  }
  void ResetConnections() override { inner_->ResetConnections(); }
  void Record(bool on) {
    std::lock_guard lock(mu_);
    recording_ = on;
  }
  std::string script() const {
    std::lock_guard lock(mu_);
    return script_;
  }

 private:
  std::unique_ptr<http::Transport> inner_;
  const bool routed_;
  std::function<void(const http::Request&, http::Response&)> adjust_;
  mutable std::mutex mu_;
  bool recording_ = false;
  std::string script_;
};

void ReplaceAll(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "fuzz-seed-jira: %s\n", what.c_str());
  return 1;
}

// Runs one scenario on `version` and writes OUT/<file>.
int Generate(const JiraScenario& scenario, const std::string& version, const std::string& file,
             const std::filesystem::path& out_dir) {
  const bool cloud = scenario.flavor == jira::Flavor::kCloud;
  const jira::ConnectionSettings defaults = JiraHarness::DefaultSettings(scenario.flavor, false);
  FuzzClock clock;

  FakeJiraOptions options;
  options.flavor = cloud ? JiraFlavor::kCloud : JiraFlavor::kDataCenter;
  if (!cloud) options.version = version;
  options.clock = &clock;
  options.base_url = defaults.base_url;  // self links and accessible-resources name the harness's
  FakeJira jira(options);

  auto ca = TestCa::Create("fuzz seed CA");
  if (ca == nullptr) return Fail("test CA");
  auto leaf = ca->Issue({});
  if (!leaf.ok()) return Fail(leaf.status().ToString());
  ServerOptions so;
  so.certificate_chain_pem = leaf->chain_pem;
  so.private_key_pem = leaf->key_pem;
  auto server = FakeHttpsServer::Start(so, [&](const HttpRequest& r) { return jira.Handle(r); });
  if (server == nullptr) return Fail("server");
  const std::filesystem::path ca_file = out_dir / ".seed-ca.pem";
  { std::ofstream(ca_file) << ca->cert_pem(); }
  const std::string base = server->base_url();

  jira::ConnectionSettings s = JiraHarness::DefaultSettings(scenario.flavor, scenario.oauth_sync);
  s.base_url = base;
  s.ca_file = ca_file;
  if (cloud) {
    s.admin_api_url = base + "/admin-api";
    s.api_base_url = scenario.oauth_sync ? base + "/ex/jira/{cloudId}" : base;
    s.oauth.token_url = base + "/oauth/token";
  } else {
    s.api_base_url = base;
    s.oauth.token_url = base + "/rest/oauth2/latest/token";
  }
  http::TransportOptions t;
  t.ca_file = ca_file.string();
  auto curl = http::CurlTransport::Create(std::move(t));
  if (!curl.ok()) return Fail(curl.status().ToString());
  const bool sync = scenario.job == "access_sync";
  auto recorder = std::make_shared<Recorder>(std::move(curl).value(), sync);
  if (cloud && scenario.oauth_sync) {
    // The fake names the harness's site in accessible-resources (as the transcript must); the
    // connector here is configured with the fake's own address, which the grant must cover.
    recorder->Adjust([&](const http::Request& request, http::Response& response) {
      if (UrlPath(request.url).ends_with("/oauth/token/accessible-resources")) {
        ReplaceAll(response.body, defaults.base_url, base);
      }
    });
  }
  JiraHarness harness(s, recorder, &clock);
  MemoryCredentials& creds = harness.credentials();
  const auto& canaries = JiraCanaries();

  if (sync) {
    // A small site, so that a run stays quick: a few users (some non-human, some inactive, some
    // owning tokens) in a few groups besides the standard ones. (GenerateSite needs a fake
    // without users: first.)
    SiteSpec site;
    site.seed = 7;
    site.users = 6;
    site.groups = 2;
    site.memberships = 5;
    site.non_human_fraction = 0.4;
    site.inactive_fraction = 0.2;
    site.hidden_email_fraction = 0.2;
    site.pat_owner_fraction = 0.5;
    if (Status g = jira.GenerateSite(site); !g.ok()) return Fail("site: " + g.ToString());
    if (!cloud) {
      ApplicationLinkSpec link;
      link.id = "8a3c5e2f-1b4d-3a6c-9e8f-0d1c2b3a4f5e";
      link.name = "Confluence";
      link.display_url = "https://wiki.corp.example";
      if (!jira.AddApplicationLink(link).ok()) return Fail("application link");
    }
  }
  // The site: the connection's admin, alice in developers and the product group, a group.
  NewUser admin;
  if (cloud) {
    admin.email = "admin@corp.example";
    admin.display_name = "Site Admin";
    admin.groups = {"jira-administrators", "site-admins", "jira-software-users"};
  } else {
    admin.username = "svc-cakewalk";
    admin.email = "svc-cakewalk@corp.example";
    admin.display_name = "Cakewalk Agent";
    admin.password = canaries[0];
    admin.groups = {"jira-administrators", "jira-system-administrators", "jira-software-users"};
  }
  if (!jira.AddUser(admin).ok()) return Fail("admin");
  if (!jira.AddGroup("developers").ok()) return Fail("group");
  NewUser alice;
  alice.username = "alice";
  alice.email = "alice@corp.example";
  alice.display_name = "Alice Smith";
  alice.groups = {"developers", "jira-software-users"};
  auto alice_id = jira.AddUser(alice);
  if (!alice_id.ok()) return Fail("alice");
  if (cloud) {
    auto token = jira.AddApiToken("admin@corp.example", "cakewalk",
                                  clock.Now() + std::chrono::hours(24 * 365));
    auto key = jira.AddOrgApiKey();
    if (!token.ok() || !key.ok()) return Fail("cloud tokens");
    creds.Set(jira::secret::kApiToken, *token);
    creds.Set(jira::secret::kOrgApiKey, *key);
  } else {
    // 9.x has no two-step login; there the admin logs in with the session login alone.
    const std::string& seed = canaries[6];
    if (version.rfind("9.", 0) != 0 && !jira.EnrolTotp("svc-cakewalk", AsBytes(seed)).ok()) {
      return Fail("totp");
    }
    auto pat = jira.AddPersonalAccessToken("svc-cakewalk", "cakewalk", std::nullopt);
    if (!pat.ok()) return Fail("pat");
    creds.Set(jira::secret::kPat, *pat);
  }
  if (scenario.oauth_sync) {
    OAuthClientSpec client;
    client.client_id = s.oauth.client_id;
    client.client_secret = canaries[4];
    client.name = "cakewalk";
    client.redirect_uris = {s.oauth.redirect_uri};
    client.scopes = cloud ? std::vector<std::string>{"read:jira-user", "offline_access"}
                          : std::vector<std::string>{"READ"};
    // Cloud's applicationrole (read by access sync) needs the configuration scope.
    if (cloud && sync) client.scopes.push_back("manage:jira-configuration");
    if (!jira.AddOAuthClient(client).ok()) return Fail("oauth client");
    auto connection = harness.connection();
    if (!connection.ok()) return Fail(connection.status().ToString());
    auto request = jira::BeginAuthorization(s, creds);
    if (!request.ok()) return Fail(request.status().ToString());
    unsigned char digest[SHA256_DIGEST_LENGTH];
    const auto verifier = request->verifier.Reveal(SecretAccess::Grant());
    SHA256(verifier.data(), verifier.size(), digest);
    auto code = jira.IssueAuthorizationCode(
        s.oauth.client_id, cloud ? "admin@corp.example" : "svc-cakewalk", s.oauth.redirect_uri,
        client.scopes, Base64UrlEncode(std::span<const std::uint8_t>(digest, sizeof digest)));
    if (!code.ok()) return Fail(code.status().ToString());
    auto done =
        jira::CompleteAuthorization(s, creds, (*connection)->token_endpoint(), *request, *code, {});
    if (!done.ok()) return Fail("authorization: " + done.status().ToString());
  }

  // The harness names alice's Cloud account by a fixed id; the fake minted another, which the
  // job uses here and the transcript is written with the fixed one.
  std::string params_text(scenario.params);
  if (cloud) ReplaceAll(params_text, kAliceCloudId, *alice_id);
  auto params = ParseJson(params_text, "params");
  if (!params.ok()) return Fail("params");
  recorder->Record(true);
  auto outcome = harness.Run(scenario.job, *params);
  recorder->Record(false);
  const std::string result =
      outcome.ok() ? "ok" : outcome.status().reason() + ": " + outcome.status().message();

  std::string script = std::string(scenario.name) + "\n" + recorder->script();
  if (cloud) ReplaceAll(script, *alice_id, kAliceCloudId);
  std::ofstream(out_dir / file, std::ios::binary) << script;
  std::printf("%-40s %s (%zu bytes)\n", file.c_str(), result.c_str(), script.size());
  return 0;
}

}  // namespace
}  // namespace cakewalk::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz-seed-jira OUTPUT_DIR\n");
    return 2;
  }
  const std::filesystem::path out = argv[1];
  std::filesystem::create_directories(out);
  int failures = 0;
  for (const auto& scenario : cakewalk::fuzz::JiraScenarios()) {
    const std::string name(scenario.name);
    failures += cakewalk::fuzz::Generate(scenario, "10.3.4", name, out);
    if (scenario.flavor == cakewalk::jira::Flavor::kDataCenter &&
        (scenario.job == "provision" || scenario.job == "verify" ||
         name == "dc.deprovision.deactivate" || name == "dc.access_sync")) {
      failures += cakewalk::fuzz::Generate(scenario, "9.17.2", name + "@9.17", out);
      failures += cakewalk::fuzz::Generate(scenario, "11.0.1", name + "@11.0", out);
    }
    if (name == "dc.access_sync") {
      // 10.0-10.2: users come from the group members (user/search stops at 100).
      failures += cakewalk::fuzz::Generate(scenario, "10.0.1", name + "@10.0", out);
    }
  }
  std::filesystem::remove(out / ".seed-ca.pem");
  return failures == 0 ? 0 : 1;
}
