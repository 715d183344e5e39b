// The agent's side of the Jira connector (jira/ does not depend on agent/): the translation of
// a configured connection into jira::ConnectionSettings, the long-lived jira::Connection per
// connection that jobs share (sessions, OAuth tokens and cached secrets survive between jobs),
// the doctor lines for each connection, and the body of `oauth authorize`.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "agent/checks.h"
#include "agent/cli.h"
#include "agent/config.h"
#include "base/secret.h"
#include "base/status.h"
#include "hsm/secret_store.h"
#include "jira/connection.h"
#include "jira/credentials.h"

namespace cakewalk::agent {

// The connector's view of `connection`; state lives under config.state_dir.
jira::ConnectionSettings JiraSettings(const Config& config, const ConnectionConfig& connection);

// One jira::Connection per configured connection, opened on first use. After a configuration
// reload a connection whose settings changed is opened afresh for the next job (jobs still
// running keep the one they started with). Thread-safe.
class JiraConnections {
 public:
  // `secrets` must outlive this object. `options` apply to every connection (tests inject the
  // clock, sleeper and transport).
  JiraConnections(hsm::SecretStore& secrets, std::filesystem::path state_dir,
                  jira::ConnectionOptions options = {});
  ~JiraConnections();

  Result<std::shared_ptr<jira::Connection>> Get(const ConnectionConfig& connection);

 private:
  struct Entry {
    std::shared_ptr<jira::Connection> connection;
    std::string fingerprint;  // of the settings it was opened with
  };
  hsm::SecretStore& secrets_;
  const std::filesystem::path state_dir_;
  const jira::ConnectionOptions options_;
  std::mutex mu_;
  std::map<std::string, Entry, std::less<>> entries_;
};

// Doctor: for each configured connection, reachability, TLS, secrets, the login stop, login,
// Admin permission, access sync credentials and clock skew (jira/health.h). `token` may be null
// when the token could not be opened: each connection then says it was not checked.
std::vector<CheckResult> JiraConnectionChecks(const Config& config, TokenContext* token);

// The body of `oauth authorize CONNECTION`, its input injected: prints the authorization URL to
// io.out, calls `read_pasted` for what the operator pasted (the redirect URL or the code),
// exchanges it, seals the refresh token in the token and confirms the grant with one call.
Status AuthorizeOAuth(const Config& config, const std::string& connection,
                      hsm::SecretStore& secrets, CliIo io,
                      const std::function<Result<SecretBytes>()>& read_pasted,
                      jira::ConnectionOptions options = {});

}  // namespace cakewalk::agent
