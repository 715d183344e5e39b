#include "tests/audit/audit_env.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cstring>
#include <stdexcept>
#include <thread>

#include "base/json.h"
#include "tests/systemd/process.h"

namespace cakewalk::testing {

AgentProcess::~AgentProcess() {
  if (!reaped_) {
    kill(pid_, SIGKILL);
    Wait(std::chrono::seconds(10));
  }
}

std::optional<int> AgentProcess::Wait(std::chrono::milliseconds timeout) {
  if (reaped_) return std::nullopt;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      raw_status_ = status;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      return -WTERMSIG(status);
    }
    if (r < 0 || std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string AgentProcess::Log() const {
  std::error_code ec;
  return std::filesystem::exists(log_, ec) ? ReadFile(log_) : std::string();
}

AuditHome::AuditHome() {
  auto hsm = SoftHsm::Create("cakewalk-audit");
  if (!hsm.ok()) throw std::runtime_error("SoftHSM: " + hsm.status().ToString());
  hsm_ = std::move(hsm).value();
  // Short leases: a job handed to a long poll of an agent the test just killed comes back soon.
  RunningControlPlaneOptions options;
  options.control_plane.lease_duration = std::chrono::seconds(4);
  auto cp = RunningControlPlane::Start(options);
  if (!cp.ok()) throw std::runtime_error("control plane: " + cp.status().ToString());
  cp_ = std::move(cp).value();
  WriteFile(dir() / "cp-ca.pem", cp_->server_ca_pem(), 0644);
}

AuditHome::~AuditHome() = default;

ServedJira& AuditHome::AddJira(const std::string& name, FakeJiraOptions options) {
  auto jira = ServedJira::Start(std::move(options));
  if (!jira.ok()) throw std::runtime_error("fake Jira: " + jira.status().ToString());
  WriteFile(jira_ca_file(name), (*jira)->ca_pem(), 0644);
  jiras_.emplace_back(name, std::move(jira).value());
  return *jiras_.back().second;
}

void AuditHome::WriteConfig(const Json::Value& connections,
                            const Json::Value& control_plane_extra) {
  Json::Value c(Json::objectValue);
  c["state_dir"] = state_dir().string();
  c["log_level"] = "debug";  // the most the agent ever logs: secrets must be absent even here
  c["control_plane"]["url"] = cp_->base_url();
  c["control_plane"]["ca_file"] = (dir() / "cp-ca.pem").string();
  for (const auto& name : control_plane_extra.getMemberNames()) {
    c["control_plane"][name] = control_plane_extra[name];
  }
  c["token"]["module"] = SoftHsm::kModulePath;
  c["token"]["uri"] = hsm_->token().uri;
  c["token"]["pin_file"] = hsm_->token().pin_file.string();
  c["jobs"]["max_concurrent"] = 2;
  c["jobs"]["poll_wait_seconds"] = 1;
  c["jobs"]["shutdown_grace_seconds"] = 5;
  c["connections"] = connections;
  WriteFile(config_path(), WritePrettyJson(c), 0600);
}

CliResult AuditHome::Cli(const std::vector<std::string>& args, const std::string& stdin_data,
                         std::chrono::milliseconds timeout) {
  std::vector<std::string> argv = {CAKEWALK_AGENT_BINARY, "--config", config_path().string()};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessResult r = RunProcess(argv, {}, timeout, stdin_data);
  return {r.timed_out ? -1 : r.exit_code, r.out, r.err};
}

std::unique_ptr<AgentProcess> AuditHome::StartAgent(const std::filesystem::path& cwd,
                                                    const std::vector<std::string>& wrapper) {
  const std::string binary = CAKEWALK_AGENT_BINARY;
  const std::string config = config_path().string();
  const std::string log = agent_log().string();
  const std::string folder = cwd.empty() ? dir().string() : cwd.string();
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawn_file_actions_addchdir_np(&actions, folder.c_str());
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  sigset_t all;
  sigfillset(&all);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<std::string> args = wrapper;
  for (const std::string& a : {binary, std::string("--config"), config, std::string("run")}) {
    args.push_back(a);
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env = MergedEnvironment({});
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0].c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw std::runtime_error("cannot start the agent: " + std::string(strerror(rc)));
  return std::make_unique<AgentProcess>(pid, agent_log());
}

Json::Value WaitForResult(FakeControlPlane& cp, const std::string& job_id,
                          std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (auto job = cp.Job(job_id); job && job->state == JobState::kFinished) return job->result;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Json::Value();
}

std::string Describe(const Json::Value& result) {
  if (result.isNull()) return "no result in time";
  const std::string status = result["status"].asString();
  if (status == "succeeded") return status;
  return status + " (" + result["error"]["code"].asString() + ": " +
         result["error"]["message"].asString() + ")";
}

}  // namespace cakewalk::testing
