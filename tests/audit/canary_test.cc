// Secret leaks: one canary value for every kind of secret, a full run of the real binary, and a
// search for each canary everywhere it must not be — raw, hex, base64 at every alignment,
// URL-encoded (tests/support/canary.h).
//
// Secrets: the Jira Data Center password and MFA key, a personal access token (Data Center access
// sync), the Cloud API token and organization key, the OAuth client secret, the OAuth refresh and
// access tokens (minted by the fake, read back from the requests where they legitimately travel),
// the token's user PIN, the enrollment token, the proxy password.
//
// The run, all through the binary: enroll (token on standard input) through an authenticating
// proxy, `secret set` for each secret, `mfa enroll`, `oauth authorize` (the URL read from
// standard output, the redirect pasted back on standard input), `secret list`, `mfa code`,
// `doctor`, then `run` with jobs on both Jiras — verify, provisioning, a Cloud deactivation with
// the organization key, access syncs (PAT on Data Center, OAuth through the Cloud gateway).
//
// Searched: standard output and error of every command, the agent's log, every file under the
// agent's folder (configuration, state folder, SQLite journal and its WAL, connection state) and
// under the token's folder (the PIN file excepted for the PIN), /proc/<pid>/cmdline and environ of
// the running agent, and every request the fakes received (URL, headers, body) — where each
// secret must appear ONLY where it legitimately goes (the password only in Jira's login bodies,
// tokens only in their Authorization headers, the client secret and refresh tokens only in token
// endpoint bodies, the enrollment token only in POST /enroll), and must appear there at least
// once (the searches are shown to work, and the secret was really used).
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <thread>

#include "base/encoding.h"
#include "base/json.h"
#include "jira/pagination.h"
#include "tests/audit/audit_env.h"
#include "tests/fakes/jira/totp.h"
#include "tests/support/canary.h"
#include "tests/support/tinyproxy.h"
#include "tests/systemd/process.h"

namespace cakewalk::testing {
namespace {

using namespace std::chrono_literals;

constexpr char kRedirect[] = "https://localhost/cakewalk-agent/oauth-callback";
constexpr char kClientId[] = "cakewalk-sync";

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Where a request may legitimately carry a secret.
enum class Part { kNowhere, kAuthorizationHeader, kBody };
struct Allowed {
  Part part = Part::kNowhere;
  // The request must match this (method + path) for `part` to be allowed.
  std::function<bool(const HttpRequest&)> where;
};

struct Secret {
  std::string kind;
  std::string value;
  // Which fake's requests may carry it ("cp", "dc", "cloud"), and where.
  std::string server;
  Allowed allowed;
  int legit_hits = 0;
};

// `cakewalk-agent oauth authorize` with its standard input and output on pipes: the URL is read
// from the output, `answer` computes the redirect to paste.
CliResult AuthorizeInteractively(const std::filesystem::path& config,
                                 const std::function<std::string(const std::string&)>& answer) {
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0 ||
      pipe2(err_pipe, O_CLOEXEC) != 0) {
    return {};
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_pipe[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  std::vector<std::string> args = {CAKEWALK_AGENT_BINARY, "--config",  config.string(), "oauth",
                                   "authorize",           "jira-cloud"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env = MergedEnvironment({});
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0].c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  CliResult out;
  if (rc != 0) return out;
  std::string url;
  bool answered = false;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  while (open_fds > 0 && std::chrono::steady_clock::now() < deadline) {
    if (poll(fds, 2, 200) < 0) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP)) == 0) continue;
      char buf[4096];
      const ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
        continue;
      }
      (i == 0 ? out.out : out.err).append(buf, static_cast<std::size_t>(n));
    }
    if (!answered) {
      const std::size_t at = out.out.find("https://");
      const std::size_t end = at == std::string::npos ? at : out.out.find_first_of(" \n", at);
      if (end != std::string::npos) {
        url = out.out.substr(at, end - at);
        const std::string pasted = answer(url) + "\n";
        (void)!write(in_pipe[1], pasted.data(), pasted.size());
        close(in_pipe[1]);
        answered = true;
      }
    }
  }
  if (!answered) close(in_pipe[1]);
  int status = 0;
  if (waitpid(pid, &status, 0) == pid && WIFEXITED(status)) out.exit_code = WEXITSTATUS(status);
  return out;
}

class CanaryAudit : public ::testing::Test {
 protected:
  void SetUp() override {
    home_ = std::make_unique<AuditHome>();
    pin_ = {"token PIN", home_->hsm().token().user_pin, "", {}, 0};
    password_ = MakeCanary("jira-password");
    seed_ = MakeCanary("mfa-seed");
    client_secret_ = MakeCanary("oauth-client-secret");
    enrollment_ = MakeCanary("enrollment-token");
    proxy_password_ = MakeCanary("proxy-password");
    home_->cp().fake().AddEnrollmentToken(enrollment_);

    // Data Center: password + TOTP for provisioning, a PAT for access sync.
    FakeJiraOptions dc_options;
    dc_options.version = "10.3.4";
    dc_ = &home_->AddJira("jira-dc", dc_options);
    NewUser admin;
    admin.username = "svc-cakewalk";
    admin.email = "svc-cakewalk@corp.example";
    admin.display_name = "Cakewalk Agent";
    admin.password = password_;
    admin.groups = {"jira-administrators", "jira-system-administrators", "jira-software-users"};
    ASSERT_TRUE(dc_->jira().AddUser(admin).ok());
    ASSERT_TRUE(dc_->jira().EnrolTotp("svc-cakewalk", AsBytes(seed_)).ok());
    auto pat = dc_->jira().AddPersonalAccessToken("svc-cakewalk", "cakewalk-sync", std::nullopt);
    ASSERT_TRUE(pat.ok());
    pat_ = *pat;  // minted by the fake: the canary from here on
    ASSERT_TRUE(dc_->jira().AddGroup("developers").ok());

    // Cloud: API token and organization key for provisioning, OAuth 2.0 for access sync; access
    // tokens live 100 s, so that the agent refreshes (2 minutes ahead) and refresh tokens rotate.
    FakeJiraOptions cloud_options;
    cloud_options.flavor = JiraFlavor::kCloud;
    cloud_options.access_token_lifetime = 100s;
    cloud_ = &home_->AddJira("jira-cloud", cloud_options);
    NewUser cloud_admin;
    cloud_admin.email = "admin@corp.example";
    cloud_admin.display_name = "Site Admin";
    cloud_admin.groups = {"jira-administrators", "site-admins", "jira-software-users"};
    ASSERT_TRUE(cloud_->jira().AddUser(cloud_admin).ok());
    auto token = cloud_->jira().AddApiToken("admin@corp.example", "cakewalk",
                                            std::chrono::system_clock::now() + 24h);
    ASSERT_TRUE(token.ok());
    api_token_ = *token;
    auto key = cloud_->jira().AddOrgApiKey();
    ASSERT_TRUE(key.ok());
    org_key_ = *key;
    OAuthClientSpec client;
    client.client_id = kClientId;
    client.client_secret = client_secret_;
    client.name = "Cakewalk";
    client.redirect_uris = {kRedirect};
    client.scopes = {"read:jira-user", "manage:jira-configuration", "read:jira-work",
                     "offline_access"};
    ASSERT_TRUE(cloud_->jira().AddOAuthClient(client).ok());
    ASSERT_TRUE(cloud_->jira().AddGroup("developers").ok());
    NewUser alice;
    alice.email = "alice@corp.example";
    alice.display_name = "Alice";
    alice.groups = {"developers"};
    ASSERT_TRUE(cloud_->jira().AddUser(alice).ok());

    proxy_ = std::make_unique<TinyProxy>(
        proxy_dir_, TinyProxy::Options{"agent-proxy", proxy_password_, {home_->cp().port()}});

    Json::Value dc(Json::objectValue);
    dc["name"] = "jira-dc";
    dc["type"] = "jira-datacenter";
    dc["base_url"] = dc_->base_url();
    dc["ca_file"] = home_->jira_ca_file("jira-dc").string();
    dc["provisioning"]["auth"] = "password";
    dc["provisioning"]["username"] = "svc-cakewalk";
    dc["provisioning"]["mfa"] = "totp";
    dc["access_sync"]["auth"] = "pat";
    Json::Value cloud(Json::objectValue);
    const std::string base = cloud_->base_url();
    cloud["name"] = "jira-cloud";
    cloud["type"] = "jira-cloud";
    cloud["base_url"] = base;
    cloud["ca_file"] = home_->jira_ca_file("jira-cloud").string();
    cloud["api_base_url"] = base + "/ex/jira/{cloudId}";
    cloud["admin_api_url"] = base + "/admin-api";
    cloud["provisioning"]["auth"] = "api-token";
    cloud["provisioning"]["username"] = "admin@corp.example";
    cloud["provisioning"]["org_id"] = cloud_->jira().options().org_id;
    cloud["access_sync"]["auth"] = "oauth2";
    cloud["access_sync"]["client_id"] = kClientId;
    for (const auto& s : client.scopes) cloud["access_sync"]["scopes"].append(s);
    cloud["access_sync"]["authorize_url"] = base + "/authorize";
    cloud["access_sync"]["token_url"] = base + "/oauth/token";
    cloud["access_sync"]["redirect_uri"] = kRedirect;
    Json::Value connections(Json::arrayValue);
    connections.append(dc);
    connections.append(cloud);
    Json::Value cp_extra(Json::objectValue);
    cp_extra["proxy"] = proxy_->url();
    cp_extra["proxy_username"] = "agent-proxy";
    home_->WriteConfig(connections, cp_extra);
  }

  // Runs a command and keeps its output for the search.
  CliResult Cli(const std::vector<std::string>& args, const std::string& in = "") {
    CliResult r = home_->Cli(args, in);
    outputs_.push_back({"`" + ::testing::PrintToString(args) + "` stdout", r.out});
    outputs_.push_back({"`" + ::testing::PrintToString(args) + "` stderr", r.err});
    return r;
  }

  std::string Enqueue(const std::string& connection, const std::string& type,
                      Json::Value params = Json::Value(Json::objectValue)) {
    JobSpec spec;
    spec.type = type;
    spec.connection = connection;
    spec.params = std::move(params);
    auto id = home_->cp().fake().EnqueueJob(spec);
    EXPECT_TRUE(id.ok());
    return id.ok() ? *id : "";
  }

  std::unique_ptr<AuditHome> home_;
  TempDir proxy_dir_{"cakewalk-audit-proxy"};
  std::unique_ptr<TinyProxy> proxy_;
  ServedJira* dc_ = nullptr;
  ServedJira* cloud_ = nullptr;
  Secret pin_;
  std::string password_, seed_, pat_, api_token_, org_key_, client_secret_, enrollment_,
      proxy_password_;
  std::vector<std::pair<std::string, std::string>> outputs_;  // (where, text)
};

bool PathIs(const HttpRequest& r, std::string_view prefix) { return r.path.rfind(prefix, 0) == 0; }

TEST_F(CanaryAudit, EverySecretAppearsOnlyWhereItBelongs) {
  // ---- The command line: enrollment through the proxy, every secret on standard input.
  ASSERT_EQ(Cli({"secret", "set", "control-plane", "proxy-password"}, proxy_password_).exit_code,
            0);
  auto enrolled = Cli({"enroll", "--token-file", "-"}, enrollment_ + "\n");
  ASSERT_EQ(enrolled.exit_code, 0) << enrolled.err;
  ASSERT_GE(proxy_->TunnelsToLocalhost(), 1) << proxy_->Log();
  for (auto [conn, name, value] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"jira-dc", "password", password_},
           {"jira-dc", "pat", pat_},
           {"jira-cloud", "api-token", api_token_},
           {"jira-cloud", "org-api-key", org_key_},
           {"jira-cloud", "oauth-client-secret", client_secret_}}) {
    auto r = Cli({"secret", "set", conn, name}, value + "\n");
    ASSERT_EQ(r.exit_code, 0) << name << ": " << r.err;
  }
  auto mfa = Cli({"mfa", "enroll", "jira-dc"}, Base32Encode(AsBytes(seed_)) + "\n");
  ASSERT_EQ(mfa.exit_code, 0) << mfa.err;
  auto authorized = AuthorizeInteractively(home_->config_path(), [&](const std::string& url) {
    auto code = cloud_->jira().IssueAuthorizationCode(
        kClientId, "admin@corp.example", kRedirect,
        {"read:jira-user", "manage:jira-configuration", "read:jira-work", "offline_access"},
        jira::QueryParameter(url, "code_challenge").value_or(""));
    EXPECT_TRUE(code.ok()) << code.status().ToString();
    return std::string(kRedirect) + "?code=" + UrlEncode(code.ok() ? *code : "") +
           "&state=" + UrlEncode(jira::QueryParameter(url, "state").value_or(""));
  });
  outputs_.push_back({"oauth authorize stdout", authorized.out});
  outputs_.push_back({"oauth authorize stderr", authorized.err});
  ASSERT_EQ(authorized.exit_code, 0) << authorized.out << authorized.err;
  ASSERT_EQ(Cli({"secret", "list"}).exit_code, 0);
  ASSERT_EQ(Cli({"mfa", "code", "jira-dc"}).exit_code, 0);
  Cli({"doctor"});  // its verdict does not matter here; what it prints does

  // ---- The daemon: jobs that use every secret.
  auto agent = home_->StartAgent();
  std::vector<std::string> jobs;
  jobs.push_back(Enqueue("jira-dc", "jira.connection.verify"));
  Json::Value dc_provision(Json::objectValue);
  dc_provision["email"] = "carol@corp.example";
  dc_provision["display_name"] = "Carol";
  dc_provision["username"] = "carol";
  dc_provision["groups"].append("developers");
  jobs.push_back(Enqueue("jira-dc", "jira.user.provision", dc_provision));
  jobs.push_back(Enqueue("jira-dc", "jira.access_sync"));
  jobs.push_back(Enqueue("jira-cloud", "jira.connection.verify"));
  Json::Value cloud_provision(Json::objectValue);
  cloud_provision["email"] = "dave@corp.example";
  cloud_provision["display_name"] = "Dave";
  cloud_provision["groups"].append("developers");
  jobs.push_back(Enqueue("jira-cloud", "jira.user.provision", cloud_provision));
  Json::Value deactivate(Json::objectValue);
  deactivate["user"]["email"] = "alice@corp.example";
  deactivate["action"] = "deactivate";
  jobs.push_back(Enqueue("jira-cloud", "jira.user.deprovision", deactivate));
  jobs.push_back(Enqueue("jira-cloud", "jira.access_sync"));

  // While it works: its command line and environment.
  std::string proc_seen;
  for (int i = 0; i < 20; ++i) {
    const std::string base = "/proc/" + std::to_string(agent->pid());
    proc_seen += Slurp(base + "/cmdline") + "\n" + Slurp(base + "/environ") + "\n";
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_NE(proc_seen.find("run"), std::string::npos) << "/proc was not readable";
  for (const auto& id : jobs) {
    const Json::Value result = WaitForResult(home_->cp().fake(), id, 180s);
    EXPECT_EQ(result["status"].asString(), "succeeded")
        << id << " " << home_->cp().fake().Job(id)->spec.type << ": " << Describe(result);
  }
  kill(agent->pid(), SIGTERM);
  EXPECT_EQ(agent->Wait(60s), 0);
  outputs_.push_back({"the agent's log", agent->Log()});
  outputs_.push_back({"/proc/<agent>/cmdline and environ", proc_seen});

  // ---- The OAuth tokens the fake minted, read where they legitimately travel.
  std::set<std::string> refresh_tokens, access_tokens;
  for (const auto& r : cloud_->requests()) {
    if (r.method == "POST" && r.path == "/oauth/token") {
      auto body = ParseJson(r.body, "token request");
      if (body.ok() && (*body)["refresh_token"].isString()) {
        refresh_tokens.insert((*body)["refresh_token"].asString());
      }
    }
    const std::string auth = r.Header("authorization");
    if (auth.rfind("Bearer ", 0) == 0 && (PathIs(r, "/ex/jira/") || PathIs(r, "/oauth/token/"))) {
      access_tokens.insert(auth.substr(7));
    }
  }
  EXPECT_FALSE(refresh_tokens.empty()) << "no refresh happened: the OAuth path was not exercised";
  EXPECT_FALSE(access_tokens.empty()) << "no call went through the gateway";

  // ---- Every secret and where it may go.
  auto header = [](std::function<bool(const HttpRequest&)> where) {
    return Allowed{Part::kAuthorizationHeader, std::move(where)};
  };
  auto body = [](std::function<bool(const HttpRequest&)> where) {
    return Allowed{Part::kBody, std::move(where)};
  };
  auto login = [](const HttpRequest& r) {
    return r.method == "POST" &&
           (r.path == "/rest/tsv/1.0/authenticate" || r.path == "/rest/auth/1/session");
  };
  auto token_endpoint = [](const HttpRequest& r) {
    return r.method == "POST" && r.path == "/oauth/token";
  };
  auto gateway = [](const HttpRequest& r) {
    return PathIs(r, "/ex/jira/") || PathIs(r, "/oauth/token/accessible-resources");
  };
  auto site = [](const HttpRequest& r) {
    return !PathIs(r, "/ex/jira/") && !PathIs(r, "/admin-api") && !PathIs(r, "/oauth/");
  };
  std::vector<Secret> secrets = {
      {"Jira password", password_, "dc", body(login)},
      {"MFA seed", seed_, "", {}},
      {"MFA seed as pasted (base32)", Base32Encode(AsBytes(seed_)), "", {}},
      {"personal access token", pat_, "dc", header([](const HttpRequest&) { return true; })},
      {"API token", api_token_, "cloud", header(site)},
      {"organization API key", org_key_, "cloud",
       header([](const HttpRequest& r) { return PathIs(r, "/admin-api"); })},
      {"OAuth client secret", client_secret_, "cloud", body(token_endpoint)},
      pin_,
      {"enrollment token", enrollment_, "cp", header([](const HttpRequest& r) {
         return r.method == "POST" && r.path == "/agent/v1/enroll";
       })},
      {"proxy password", proxy_password_, "", {}},
  };
  int n = 0;
  for (const auto& t : refresh_tokens) {
    secrets.push_back(
        {"OAuth refresh token #" + std::to_string(++n), t, "cloud", body(token_endpoint)});
  }
  n = 0;
  for (const auto& t : access_tokens) {
    secrets.push_back({"OAuth access token #" + std::to_string(++n), t, "cloud", header(gateway)});
  }

  const std::vector<std::pair<std::string, std::vector<HttpRequest>>> servers = {
      {"cp", home_->cp().server().requests()},
      {"dc", dc_->requests()},
      {"cloud", cloud_->requests()}};
  const std::filesystem::path pin_file = home_->hsm().token().pin_file;
  for (Secret& s : secrets) {
    SCOPED_TRACE(s.kind);
    ASSERT_GE(s.value.size(), 8u);
    // Outputs, logs, /proc.
    for (const auto& [where, text] : outputs_) {
      EXPECT_THAT(FindCanaryIn(s.value, text, where), ::testing::IsEmpty());
    }
    // Files: the agent's folder (state, journal) and the token's folder.
    for (const std::filesystem::path& root : {home_->dir(), home_->hsm().dir()}) {
      for (auto it = std::filesystem::recursive_directory_iterator(root);
           it != std::filesystem::recursive_directory_iterator(); ++it) {
        if (!it->is_regular_file()) continue;
        if (s.value == pin_.value && it->path() == pin_file) continue;  // where the PIN lives
        EXPECT_THAT(FindCanaryIn(s.value, Slurp(it->path()), it->path().string()),
                    ::testing::IsEmpty());
      }
    }
    // Requests: only where it belongs.
    for (const auto& [server, requests] : servers) {
      for (const auto& r : requests) {
        const std::string what = server + " " + r.method + " " + r.path;
        const bool here =
            s.server == server && s.allowed.part != Part::kNowhere && s.allowed.where(r);
        std::string headers;
        for (const auto& [name, value] : r.headers) {
          if (name == "authorization" && here && s.allowed.part == Part::kAuthorizationHeader) {
            s.legit_hits += FindCanaryIn(s.value, value, what).empty() ? 0 : 1;
            continue;
          }
          headers += name + ": " + value + "\n";
        }
        EXPECT_THAT(FindCanaryIn(s.value, r.target, what + " (URL)"), ::testing::IsEmpty());
        EXPECT_THAT(FindCanaryIn(s.value, headers, what + " (headers)"), ::testing::IsEmpty());
        if (here && s.allowed.part == Part::kBody) {
          s.legit_hits += FindCanaryIn(s.value, r.body, what).empty() ? 0 : 1;
        } else {
          EXPECT_THAT(FindCanaryIn(s.value, r.body, what + " (body)"), ::testing::IsEmpty());
        }
      }
    }
    if (s.allowed.part != Part::kNowhere) {
      EXPECT_GT(s.legit_hits, 0) << s.kind
                                 << " never reached where it belongs: the run did not "
                                    "use it, or the search cannot find it";
    }
    std::cout << s.kind << ": " << s.legit_hits << " legitimate uses, found nowhere else\n";
  }
}

}  // namespace
}  // namespace cakewalk::testing
