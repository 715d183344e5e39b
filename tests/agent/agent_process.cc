#include "tests/agent/agent_process.h"

#include <sys/wait.h>

#include <cstdlib>
#include <sstream>

#include "agent/config.h"
#include "agent/enroll.h"
#include "agent/token_context.h"
#include "base/log.h"

namespace cakewalk::testing {

Result<std::unique_ptr<ServedJira>> ServeJiraWithAdmin(
    const std::string& admin_password, FakeJiraOptions options,
    const std::function<Status(FakeJira&)>& seed) {
  CW_ASSIGN_OR_RETURN(std::unique_ptr<ServedJira> served, ServedJira::Start(std::move(options)));
  if (seed) CW_RETURN_IF_ERROR(seed(served->jira()));
  NewUser admin;
  admin.username = "svc-cakewalk";
  admin.email = "svc-cakewalk@corp.example";
  admin.display_name = "Cakewalk Agent";
  admin.password = admin_password;
  admin.groups = {"jira-administrators", "jira-software-users"};
  CW_RETURN_IF_ERROR(served->jira().AddUser(admin).status());
  return served;
}

Result<std::unique_ptr<AgentHome>> AgentHome::Create(RunningControlPlane& cp,
                                                     AgentHomeOptions options) {
  std::unique_ptr<AgentHome> home(new AgentHome());
  CW_ASSIGN_OR_RETURN(home->hsm_, SoftHsm::Create("cakewalk-agent"));
  WriteFile(home->dir() / "cp-ca.pem", cp.server_ca_pem(), 0644);
  std::string jira = R"("base_url": "https://jira.example.test")";
  if (options.jira != nullptr) {
    WriteFile(home->dir() / "jira-ca.pem", options.jira->ca_pem(), 0644);
    jira = R"("base_url": ")" + options.jira->base_url() + R"(", "ca_file": ")" +
           (home->dir() / "jira-ca.pem").string() + "\"";
  }
  const std::string config =
      R"({
    "state_dir": ")" +
      home->state_dir().string() + R"(",
    "log_level": "info",
    "control_plane": {"url": ")" +
      cp.base_url() + R"(", "ca_file": ")" + (home->dir() / "cp-ca.pem").string() + R"("},
    "token": {"module": ")" +
      std::string(SoftHsm::kModulePath) + R"(", "uri": ")" + home->hsm_->token().uri +
      R"(", "pin_file": ")" + home->hsm_->token().pin_file.string() + R"("},
    "jobs": {"max_concurrent": )" +
      std::to_string(options.max_concurrent) + R"(, "poll_wait_seconds": )" +
      std::to_string(options.poll_wait_seconds) + R"(, "shutdown_grace_seconds": )" +
      std::to_string(options.shutdown_grace_seconds) + R"(, "timeout_seconds": )" +
      std::to_string(options.timeout_seconds) + R"(},
    "connections": [
      {"name": "jira-prod", "type": "jira-datacenter", )" +
      jira + ",\n       " + options.connection_extra + R"(}
    ]})";
  WriteFile(home->config_path(), config, 0600);

  CW_ASSIGN_OR_RETURN(agent::Config loaded,
                      agent::LoadConfig(home->config_path(), agent::ConfigEnvironment{}));
  NullLogSink log;
  CW_ASSIGN_OR_RETURN(auto token, agent::TokenContext::Open(loaded, log));
  const SecretBytes enrollment = SecretBytes::CopyOf(cp.fake().NewEnrollmentToken());
  agent::EnrollOptions enroll;
  enroll.token_file = "-";
  enroll.hostname = "crash-test-host";
  std::ostringstream out;
  CW_ASSIGN_OR_RETURN(agent::EnrollOutcome outcome,
                      agent::Enroll(loaded, *token, enrollment, enroll, out, log));
  home->agent_id_ = outcome.agent_id;
  return home;
}

Status AgentHome::PutSecret(const std::string& connection, const std::string& name,
                            const std::string& value) {
  CW_ASSIGN_OR_RETURN(agent::Config loaded,
                      agent::LoadConfig(config_path(), agent::ConfigEnvironment{}));
  NullLogSink log;
  CW_ASSIGN_OR_RETURN(auto token, agent::TokenContext::Open(loaded, log));
  return token->secrets().Put(connection, name, SecretBytes::CopyOf(value)).status();
}

Child AgentHome::Start(const std::vector<std::string>& env) const {
  std::vector<std::string> argv = {CAKEWALK_AGENT_BINARY, "--config", config_path().string(),
                                   "run"};
  // A profiler or debugger around the agent (benches, by hand): the wrapper gets the agent's
  // command line and is expected to exec it, so that the child's pid stays the agent's.
  if (const char* wrapper = std::getenv("CAKEWALK_TEST_AGENT_WRAPPER");
      wrapper != nullptr && *wrapper != '\0') {
    argv.insert(argv.begin(), wrapper);
  }
  return Child::Spawn(argv, env, log_path().string());
}

std::string AgentHome::Log() const {
  std::error_code ec;
  if (!std::filesystem::exists(log_path(), ec)) return {};
  return ReadFile(log_path());
}

Result<std::unique_ptr<agent::JobJournal>> AgentHome::OpenJournal() const {
  return agent::JobJournal::Open(state_dir());
}

int WaitExit(Child& child, std::chrono::milliseconds timeout) {
  std::optional<int> status = child.Wait(timeout);
  if (!status.has_value()) return -2;
  if (WIFEXITED(*status)) return WEXITSTATUS(*status);
  return -1;
}

}  // namespace cakewalk::testing
