// The bench of the audit tests (tests/audit/): the real cakewalk-agent binary, driven only through
// its command line and `run`, against in-process fakes whose every request is recorded.
//
// AuditHome: a private SoftHSM token (SoftHsm sets SOFTHSM2_CONF for this process and its
// children), the fake control plane over TLS, Jira fakes over TLS (Data Center and/or Cloud) with
// their CAs in files, a configuration file written from JSON, CLI runs with standard input, and
// agent processes started with posix_spawn in a chosen working folder.
#pragma once

#include <json/json.h>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "tests/fakes/control_plane/running_control_plane.h"
#include "tests/fakes/https_server.h"
#include "tests/fakes/jira/fake_jira.h"
#include "tests/fakes/jira/served_jira.h"
#include "tests/support/pki.h"
#include "tests/support/softhsm.h"
#include "tests/support/temp_dir.h"

namespace cakewalk::testing {

struct CliResult {
  int exit_code = -1;  // -1: killed or timed out
  std::string out;
  std::string err;
};

// A running `cakewalk-agent run`; killed (SIGKILL) and reaped by the destructor if still alive.
class AgentProcess {
 public:
  AgentProcess(pid_t pid, std::filesystem::path log) : pid_(pid), log_(std::move(log)) {}
  AgentProcess(const AgentProcess&) = delete;
  AgentProcess& operator=(const AgentProcess&) = delete;
  ~AgentProcess();
  pid_t pid() const { return pid_; }
  // Exit status (WEXITSTATUS), -signal when killed by one, nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  // The raw wait status once reaped (WCOREDUMP and friends).
  int raw_status() const { return raw_status_; }
  std::string Log() const;

 private:
  pid_t pid_;
  std::filesystem::path log_;
  bool reaped_ = false;
  int raw_status_ = 0;
};

class AuditHome {
 public:
  AuditHome();
  ~AuditHome();

  const std::filesystem::path& dir() const { return dir_.path(); }
  std::filesystem::path state_dir() const { return dir() / "state"; }
  std::filesystem::path config_path() const { return dir() / "agent.json"; }
  const SoftHsm& hsm() const { return *hsm_; }
  RunningControlPlane& cp() { return *cp_; }

  // Serves a Jira fake; its CA goes to <dir>/<name>-ca.pem.
  ServedJira& AddJira(const std::string& name, FakeJiraOptions options);
  std::filesystem::path jira_ca_file(const std::string& name) const {
    return dir() / (name + "-ca.pem");
  }

  // The configuration: state_dir, control_plane (url, ca_file; `control_plane_extra` members
  // added), token (SoftHSM, uri, pin_file), fast jobs settings, and `connections`.
  void WriteConfig(const Json::Value& connections,
                   const Json::Value& control_plane_extra = Json::Value(Json::objectValue));

  // `cakewalk-agent --config <file> args...` with `stdin_data` on standard input.
  CliResult Cli(const std::vector<std::string>& args, const std::string& stdin_data = "",
                std::chrono::milliseconds timeout = std::chrono::seconds(120));

  // `cakewalk-agent --config <file> run` in `cwd` (default: dir()), standard output and error
  // appended to <dir>/agent.log; `wrapper` (e.g. setpriv ... --) goes in front of the command.
  std::unique_ptr<AgentProcess> StartAgent(const std::filesystem::path& cwd = {},
                                           const std::vector<std::string>& wrapper = {});
  std::filesystem::path agent_log() const { return dir() / "agent.log"; }

 private:
  TempDir dir_{"cakewalk-audit"};
  std::unique_ptr<SoftHsm> hsm_;
  std::unique_ptr<RunningControlPlane> cp_;
  std::vector<std::pair<std::string, std::unique_ptr<ServedJira>>> jiras_;
};

// Waits until `job_id` is finished at the fake control plane; its accepted result (null on
// timeout).
Json::Value WaitForResult(FakeControlPlane& cp, const std::string& job_id,
                          std::chrono::milliseconds timeout);

// The job's result status ("succeeded", ...) and, when it failed, the error for messages.
std::string Describe(const Json::Value& result);

}  // namespace cakewalk::testing
