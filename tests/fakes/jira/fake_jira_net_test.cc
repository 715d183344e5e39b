// FakeJira over real TLS: served by FakeHttpsServer with a test-CA certificate, reached with
// libcurl; and the standalone fake-jira program as the demo uses it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "tests/fakes/control_plane/https_client.h"
#include "tests/fakes/https_server.h"
#include "tests/fakes/jira/fake_jira.h"
#include "tests/fakes/jira/fake_jira_test_util.h"
#include "tests/fakes/jira/served_jira.h"
#include "tests/support/fake_clock.h"
#include "tests/support/temp_dir.h"

extern char** environ;

namespace cakewalk::testing {
namespace {

std::string BasicHeader(const std::string& user, const std::string& password) {
  return "Authorization: Basic " + Base64Encode(AsBytes(user + ":" + password));
}

TEST(FakeJiraNetTest, ServesOverTlsWithSelfLinksAndDateFromItsClock) {
  FakeClock clock;
  FakeJiraOptions o;
  o.clock = &clock;
  auto started = ServedJira::Start(o);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  ServedJira& served = **started;
  NewUser admin;
  admin.username = "admin";
  admin.email = "admin@corp.example";
  admin.password = "net-admin-pw";
  admin.groups = {"jira-administrators", "jira-software-users"};
  ASSERT_TRUE(served.jira().AddUser(admin).ok());
  HttpsClient client(served.ca_pem());
  ClientResponse info = client.Get(served.base_url() + "/rest/api/2/serverInfo");
  ASSERT_EQ(info.curl_code, 0) << info.curl_error;
  EXPECT_EQ(info.status, 200);
  EXPECT_EQ(info.Json()["baseUrl"].asString(), served.base_url());
  EXPECT_EQ(info.Header("date"), FormatHttpDate(clock.Now()));
  ClientResponse me = client.Request("GET", served.base_url() + "/rest/api/2/myself?expand=groups",
                                     {}, {BasicHeader("admin", "net-admin-pw")});
  EXPECT_EQ(me.status, 200);
  EXPECT_EQ(me.Json()["self"].asString(), served.base_url() + "/rest/api/2/user?username=admin");
  EXPECT_EQ(me.Json()["groups"]["size"].asInt(), 2);
}

TEST(FakeJiraNetTest, TransportFaultsReachTheClient) {
  FakeJiraOptions o;
  auto started = ServedJira::Start(o);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  ServedJira& served = **started;
  HttpsClient client(served.ca_pem());
  FaultRule reset;
  reset.transport.kind = Fault::kResetBeforeHeaders;
  served.jira().QueueFault(reset);
  ClientResponse r1 = client.Get(served.base_url() + "/rest/api/2/serverInfo");
  EXPECT_NE(r1.curl_code, 0);
  FaultRule truncate;
  truncate.transport.kind = Fault::kTruncateBody;
  served.jira().QueueFault(truncate);
  ClientResponse r2 = client.Get(served.base_url() + "/rest/api/2/serverInfo");
  EXPECT_NE(r2.curl_code, 0);
  FaultRule html;
  html.status = 503;
  html.html = true;
  served.jira().QueueFault(html);
  ClientResponse r3 = client.Get(served.base_url() + "/rest/api/2/serverInfo");
  EXPECT_EQ(r3.status, 503);
  EXPECT_NE(r3.Header("content-type").find("text/html"), std::string::npos);
  ClientResponse r4 = client.Get(served.base_url() + "/rest/api/2/serverInfo");
  EXPECT_EQ(r4.curl_code, 0);
  EXPECT_EQ(r4.status, 200);
}

TEST(FakeJiraNetTest, TwoStepLoginOverTheWire) {
  FakeJiraOptions o;
  auto started = ServedJira::Start(o);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  ServedJira& served = **started;
  NewUser admin;
  admin.username = "admin";
  admin.email = "admin@corp.example";
  admin.password = "net-admin-pw";
  admin.groups = {"jira-administrators"};
  ASSERT_TRUE(served.jira().AddUser(admin).ok());
  std::vector<std::uint8_t> seed(20, 0x5a);
  ASSERT_TRUE(served.jira().EnrolTotp("admin", seed).ok());
  HttpsClient client(served.ca_pem());
  Json::Value login;
  login["username"] = "admin";
  login["password"] = "net-admin-pw";
  ClientResponse step1 = client.Post(served.base_url() + "/rest/tsv/1.0/authenticate", login,
                                     {"X-Atlassian-Token: no-check"});
  ASSERT_EQ(step1.status, 412) << step1.body;
  Json::Value code;
  code["conversationId"] = step1.Json()["conversationId"];
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  code["totpCode"] = ExpectedTotp(seed, now);
  ClientResponse step2 = client.Post(served.base_url() + "/rest/tsv/1.0/authenticate/totp-code",
                                     code, {"X-Atlassian-Token: no-check"});
  ASSERT_EQ(step2.status, 204) << step2.body;
  std::string cookie;
  for (const auto& [name, value] : step2.headers) {
    if (name == "set-cookie")
      cookie += (cookie.empty() ? "" : "; ") + value.substr(0, value.find(';'));
  }
  EXPECT_NE(cookie.find("JSESSIONID="), std::string::npos);
  EXPECT_NE(cookie.find("atlassian.xsrf.token="), std::string::npos);
  ClientResponse me =
      client.Request("GET", served.base_url() + "/rest/api/2/myself", {}, {"Cookie: " + cookie});
  EXPECT_EQ(me.status, 200);
  EXPECT_EQ(me.Json()["name"].asString(), "admin");
}

// The standalone program, as the demo runs it.
class Program {
 public:
  Program(const TempDir& dir, std::vector<std::string> args) : out_(dir / "fake-jira.out") {
    std::vector<std::string> all = {FAKE_JIRA_BINARY};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    if (posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~Program() { Stop(); }
  int Stop() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  // Waits for the program to end on its own.
  int Wait() {
    if (pid_ <= 0) return -1;
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  std::string Output() const { return ReadFile(out_); }
  bool running() const { return pid_ > 0; }

 private:
  std::filesystem::path out_;
  pid_t pid_ = -1;
};

bool WaitForFile(const std::filesystem::path& p) {
  for (int i = 0; i < 200; ++i) {
    std::error_code ec;
    if (std::filesystem::exists(p, ec) && std::filesystem::file_size(p, ec) > 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

int Mode(const std::filesystem::path& p) {
  struct stat st {};
  if (stat(p.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 0777);
}

TEST(FakeJiraProgramTest, DataCenterProgramWritesItsFilesAndPrintsMutations) {
  TempDir dir("fake-jira-program");
  const auto state = dir / "state";
  Program program(dir, {"--dir", state.string(), "--flavor", "datacenter", "--version", "10.3.4",
                        "--context-path", "/jira", "--users", "200"});
  ASSERT_TRUE(program.running());
  ASSERT_TRUE(WaitForFile(state / "url")) << program.Output();
  EXPECT_EQ(Mode(state / "admin-password"), 0600);
  EXPECT_EQ(Mode(state / "admin-totp-seed"), 0600);
  EXPECT_EQ(Mode(state / "oauth-client-secret"), 0600);
  const std::string url = Trimmed(ReadFile(state / "url"));
  EXPECT_EQ(url.substr(url.size() - 5), "/jira");
  const std::string password = Trimmed(ReadFile(state / "admin-password"));
  auto seed = Base32Decode(Trimmed(ReadFile(state / "admin-totp-seed")));
  ASSERT_TRUE(seed.ok());
  EXPECT_EQ(seed->size(), 20u);
  EXPECT_EQ(std::stoi(Trimmed(ReadFile(state / "pid"))) > 0, true);
  // The password never reaches the program's output.
  EXPECT_EQ(program.Output().find(password), std::string::npos);

  HttpsClient client(ReadFile(state / "ca.pem"));
  Json::Value user;
  user["name"] = "carol";
  user["emailAddress"] = "carol@corp.example";
  user["displayName"] = "Carol";
  ClientResponse created =
      client.Post(url + "/rest/api/2/user", user, {BasicHeader("admin", password)});
  ASSERT_EQ(created.status, 201) << created.body;
  ClientResponse dump = client.Get(url.substr(0, url.size() - 5) + "/_fake/state");
  ASSERT_EQ(dump.status, 200);
  EXPECT_EQ(dump.Json()["counts"]["users"].asInt(), 202);
  EXPECT_EQ(dump.Json()["flavor"].asString(), "datacenter");
  EXPECT_EQ(dump.body.find(password), std::string::npos);
  EXPECT_EQ(program.Stop(), 0);
  const std::string out = program.Output();
  EXPECT_NE(out.find("created user carol\n"), std::string::npos) << out;
  EXPECT_NE(out.find("carol added to jira-software-users\n"), std::string::npos) << out;
}

TEST(FakeJiraProgramTest, CloudProgramWritesTokensAndAcceptsThem) {
  TempDir dir("fake-jira-program");
  const auto state = dir / "state";
  Program program(dir, {"--dir", state.string(), "--flavor", "cloud"});
  ASSERT_TRUE(WaitForFile(state / "url")) << program.Output();
  EXPECT_EQ(Mode(state / "admin-api-token"), 0600);
  EXPECT_EQ(Mode(state / "org-api-key"), 0600);
  const std::string url = Trimmed(ReadFile(state / "url"));
  HttpsClient client(ReadFile(state / "ca.pem"));
  ClientResponse me = client.Request("GET", url + "/rest/api/3/myself", {},
                                     {BasicHeader(Trimmed(ReadFile(state / "admin-email")),
                                                  Trimmed(ReadFile(state / "admin-api-token")))});
  EXPECT_EQ(me.status, 200) << me.body;
  ClientResponse tenant = client.Get(url + "/_edge/tenant_info");
  EXPECT_EQ(tenant.Json()["cloudId"].asString(), Trimmed(ReadFile(state / "cloud-id")));
  ClientResponse skew = client.Post(url + "/_fake/clock", [] {
    Json::Value v;
    v["offset_seconds"] = 3600;
    return v;
  }());
  EXPECT_EQ(skew.status, 204);
  ClientResponse info = client.Get(url + "/rest/api/3/serverInfo");
  auto server_date = ParseHttpDate(info.Header("date"));
  ASSERT_TRUE(server_date.ok());
  EXPECT_GT(*server_date - std::chrono::system_clock::now(), std::chrono::minutes(59));
  EXPECT_EQ(program.Stop(), 0);
}

TEST(FakeJiraProgramTest, RefusesBadArguments) {
  TempDir dir("fake-jira-program");
  Program program(dir, {"--dir", (dir / "x").string(), "--flavor", "server"});
  const int status = program.Wait();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
  EXPECT_NE(program.Output().find("--flavor must be datacenter or cloud"), std::string::npos);
}

}  // namespace
}  // namespace cakewalk::testing
