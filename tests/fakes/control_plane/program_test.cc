// The standalone fake-control-plane program, as scripts/demo uses it: the files it writes, the
// agent API and the test-only admin API over HTTPS with curl-like calls, the event lines it
// prints, and a clean stop on SIGTERM.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "base/json.h"
#include "tests/fakes/control_plane/https_client.h"
#include "tests/fakes/control_plane/test_util.h"
#include "tests/support/temp_dir.h"

extern char** environ;

namespace cakewalk::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// The program, running with its output in a file; stopped with SIGTERM when destroyed.
class Program {
 public:
  Program(std::vector<std::string> args, const std::filesystem::path& output) {
    std::vector<char*> argv;
    args.insert(args.begin(), FAKE_CONTROL_PLANE_BIN);
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    if (posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~Program() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
  }
  pid_t pid() const { return pid_; }
  // Exit status after SIGTERM (or -1 when it did not stop within `timeout`).
  int Stop(std::chrono::milliseconds timeout = seconds(10)) {
    kill(pid_, SIGTERM);
    return Wait(timeout);
  }
  int Wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(milliseconds(20));
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
};

bool WaitForFile(const std::filesystem::path& path, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (std::filesystem::exists(path)) return true;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return false;
}

std::string Chomp(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

TEST(FakeControlPlaneProgram, ServesTheAgentAndAdminApisUntilSigterm) {
  TempDir tmp("cakewalk-fake-cp");
  const auto dir = tmp / "cp";
  Program program({"--dir", dir.string(), "--lease-seconds", "30"}, tmp / "out.log");
  ASSERT_GT(program.pid(), 0);
  ASSERT_TRUE(WaitForFile(dir / "url", seconds(15))) << ReadFile(tmp / "out.log");

  const std::string url = Chomp(ReadFile(dir / "url"));
  EXPECT_EQ(url.rfind("https://localhost:", 0), 0u) << url;
  EXPECT_EQ(url.substr(url.size() - 9), "/agent/v1");
  const std::string root = url.substr(0, url.size() - 9);
  EXPECT_EQ(Chomp(ReadFile(dir / "pid")), std::to_string(program.pid()));
  struct stat st {};
  ASSERT_EQ(stat((dir / "enrollment-token").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  const std::string ca = ReadFile(dir / "ca.pem");
  const std::string token = Chomp(ReadFile(dir / "enrollment-token"));

  // Enroll with the token the program wrote.
  HttpsClient anonymous(ca);
  EvpPkeyPtr key = NewEcP256Key();
  ClientResponse enrolled = anonymous.Post(url + "/enroll", EnrollBody(MakeCsrPem(key.get())),
                                           {"Authorization: Bearer " + token});
  ASSERT_EQ(enrolled.status, 201) << enrolled.curl_error << enrolled.body;
  const std::string agent_id = enrolled.Json()["agent_id"].asString();
  HttpsClient agent(ca, enrolled.Json()["certificate_chain"].asString(), PrivateKeyPem(key.get()));

  // The admin API needs no client certificate.
  Json::Value job(Json::objectValue);
  job["type"] = "jira.user.provision";
  job["connection"] = "jira-prod";
  job["params"]["email"] = "ada@example.com";
  job["params"]["display_name"] = "Ada";
  job["params"]["username"] = "ada";
  ClientResponse queued = anonymous.Post(root + "/_fake/jobs", job);
  ASSERT_EQ(queued.status, 201) << queued.body;
  const std::string job_id = queued.Json()["job_id"].asString();

  Json::Value claim(Json::objectValue);
  claim["max_jobs"] = 1;
  claim["wait_seconds"] = 5;
  ClientResponse claimed = agent.Post(url + "/jobs/claim", claim);
  ASSERT_EQ(claimed.status, 200) << claimed.body;
  const Json::Value item = claimed.Json()["jobs"][0];
  ClientResponse keys = agent.Get(url + "/signing-keys");
  auto claims = VerifyJobJws(item["jws"].asString(), keys.Json()["job_signing_keys"]);
  ASSERT_TRUE(claims.ok()) << claims.status().ToString();
  EXPECT_EQ((*claims)["jti"], job_id);

  Json::Value output = *ParseJson(R"({"user": {"id": "ada", "username": "ada",
      "email": "ada@example.com", "display_name": "Ada", "active": true}, "created": true,
      "groups_added": [], "groups_already": [], "products_granted": [], "products_already": []})",
                                  "t");
  ClientResponse result = agent.Post(url + "/jobs/" + job_id + "/result",
                                     ResultBody(item["lease_id"].asString(), "succeeded", output));
  EXPECT_EQ(result.status, 200) << result.body;

  // A fault injected through the admin API.
  ClientResponse fault = anonymous.Post(
      root + "/_fake/faults",
      *ParseJson(
          R"({"kind": "status", "status": 429, "retry_after": "5", "endpoint": "heartbeat"})",
          "t"));
  EXPECT_EQ(fault.status, 200) << fault.body;
  ClientResponse limited = agent.Post(
      url + "/heartbeat", HeartbeatBody(enrolled.Json()["certificate_chain"].asString()));
  EXPECT_EQ(limited.status, 429);
  EXPECT_EQ(limited.Header("retry-after"), "5");

  ClientResponse state = anonymous.Get(root + "/_fake/state");
  ASSERT_EQ(state.status, 200);
  const Json::Value s = state.Json();
  ASSERT_EQ(s["jobs"].size(), 1u);
  EXPECT_EQ(s["jobs"][0]["state"], "finished");
  EXPECT_EQ(s["jobs"][0]["finished_by"], agent_id);
  EXPECT_EQ(s["jobs"][0]["result"]["status"], "succeeded");
  EXPECT_EQ(s["agents"][0]["agent_id"], agent_id);
  EXPECT_EQ(s["violations"].size(), 0u);

  EXPECT_EQ(program.Stop(), 0);
  const std::string log = ReadFile(tmp / "out.log");
  EXPECT_NE(log.find("enrolled " + agent_id), std::string::npos) << log;
  EXPECT_NE(log.find("job " + job_id + " claimed by " + agent_id), std::string::npos) << log;
  EXPECT_NE(log.find("result " + job_id + " succeeded"), std::string::npos) << log;
  EXPECT_NE(log.find("fault status 429"), std::string::npos) << log;
  EXPECT_EQ(log.find(token), std::string::npos) << "the enrollment token must not be printed";
  EXPECT_FALSE(std::filesystem::exists(dir / "url"));
}

TEST(FakeControlPlaneProgram, RefusesBadArguments) {
  TempDir tmp("cakewalk-fake-cp");
  for (std::vector<std::string> args : {std::vector<std::string>{},
                                        {"--port"},
                                        {"--dir", (tmp / "d").string(), "--port", "x"},
                                        {"--dir", (tmp / "d").string(), "--lease-seconds", "0"},
                                        {"--dir", (tmp / "d").string(), "--insecure", "1"}}) {
    Program program(args, tmp / "out.log");
    ASSERT_GT(program.pid(), 0);
    EXPECT_EQ(program.Wait(seconds(10)), 1);
    const std::string log = ReadFile(tmp / "out.log");
    EXPECT_NE(log.find("usage: fake-control-plane"), std::string::npos) << log;
  }
  EXPECT_FALSE(std::filesystem::exists(tmp / "d" / "url"));
}

}  // namespace
}  // namespace cakewalk::testing
