// The real cakewalk-agent binary as a child process: a private SoftHSM token, a configuration
// file pointing at an in-process fake control plane, an enrollment done in the test process
// (which then closes its token session), and `cakewalk-agent run` started with posix_spawn.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/journal.h"
#include "base/status.h"
#include "tests/fakes/control_plane/running_control_plane.h"
#include "tests/fakes/jira/fake_jira.h"
#include "tests/fakes/jira/served_jira.h"
#include "tests/support/softhsm.h"
#include "tests/support/temp_dir.h"
#include "tests/systemd/process.h"

namespace cakewalk::testing {

// A FakeJira (Data Center, unless `options` says otherwise) served over TLS by a run-time test CA,
// with the agent's provisioning account `svc-cakewalk` (a Jira administrator) whose password the
// test chooses. `seed` runs on the fresh fake before the admin is added (GenerateSite needs a fake
// without users).
Result<std::unique_ptr<ServedJira>> ServeJiraWithAdmin(
    const std::string& admin_password, FakeJiraOptions options = {},
    const std::function<Status(FakeJira&)>& seed = {});

struct AgentHomeOptions {
  int max_concurrent = 4;
  int poll_wait_seconds = 1;
  int shutdown_grace_seconds = 5;
  int timeout_seconds = 600;
  // Extra members of the first connection (e.g. a provisioning section).
  std::string connection_extra =
      R"("provisioning": {"auth": "password", "username": "svc-cakewalk"})";
  // The Jira the connection points at (its CA is trusted through the connection's ca_file);
  // null: https://jira.example.test, which does not resolve.
  const ServedJira* jira = nullptr;
};

class AgentHome {
 public:
  // A token, a configuration file and an enrollment at `cp`. Only one per test process (SoftHSM
  // uses the process-wide SOFTHSM2_CONF).
  static Result<std::unique_ptr<AgentHome>> Create(RunningControlPlane& cp,
                                                   AgentHomeOptions options = {});

  const std::filesystem::path& dir() const { return dir_.path(); }
  std::filesystem::path config_path() const { return dir_ / "agent.json"; }
  std::filesystem::path state_dir() const { return dir_ / "state"; }
  std::filesystem::path log_path() const { return dir_ / "agent.log"; }
  const std::string& agent_id() const { return agent_id_; }
  const SoftHsm& hsm() const { return *hsm_; }

  // Stores a secret in the token (only while no agent process runs).
  Status PutSecret(const std::string& connection, const std::string& name,
                   const std::string& value);

  // `cakewalk-agent --config ... run`, standard error appended to log_path(); `env` adds or
  // replaces environment variables ("NAME=value"). With CAKEWALK_TEST_AGENT_WRAPPER set (a
  // program, e.g. a script starting heaptrack's preload), that program is started instead with
  // the agent's command line as its arguments, and must exec it.
  Child Start(const std::vector<std::string>& env = {}) const;
  // Everything the agent processes logged so far.
  std::string Log() const;

  // The journal, opened read/write (only while no agent process runs).
  Result<std::unique_ptr<agent::JobJournal>> OpenJournal() const;

 private:
  AgentHome() = default;
  TempDir dir_{"cakewalk-agent-home"};
  std::unique_ptr<SoftHsm> hsm_;
  std::string agent_id_;
};

// Waits until `child` exits; the exit status (or -1 on a signal, -2 on timeout).
int WaitExit(Child& child, std::chrono::milliseconds timeout);

}  // namespace cakewalk::testing
