// `doctor`: one line per check — configuration, token, secrets, control plane, then each Jira
// connection (reachable, TLS, secrets, login stop, login, Admin permission, access sync auth, clock
// skew; jira/health.h) — and a non-zero exit when any check fails. Nothing is stored, rotated or
// renewed; the only effect is one Jira login per connection (none while a login stop holds, and a
// refused login sets one, exactly as a job's would).
#include <algorithm>
#include <ostream>
#include <set>
#include <string_view>

#include "agent/checks.h"
#include "agent/commands.h"
#include "agent/jira_connection.h"
#include "agent/token_context.h"
#include "hsm/secret_store.h"

namespace cakewalk::agent {
namespace {

struct Needed {
  std::string name;
  std::string why;
  std::string how;  // the command that stores it
};

// The name jira/health.cc gives a connection's secrets check, after "CONNECTION".
constexpr std::string_view kSecretsInToken = ": secrets in the token";

// The secrets a connection's configuration needs, with the command that stores each.
std::vector<Needed> NeededSecrets(const ConnectionConfig& c) {
  std::vector<Needed> out;
  const std::string set = "cakewalk-agent secret set " + c.name + " ";
  auto add = [&](std::string name, std::string why, std::string how) {
    if (std::none_of(out.begin(), out.end(), [&](const Needed& n) { return n.name == name; })) {
      out.push_back({std::move(name), std::move(why), std::move(how)});
    }
  };
  if (c.provisioning) {
    if (c.provisioning->auth == ProvisioningConfig::Auth::kPassword) {
      add("password", "provisioning login", set + "password");
      if (c.provisioning->mfa_totp) {
        add(std::string(hsm::kTotpSecretName), "two-step verification",
            "cakewalk-agent mfa enroll " + c.name);
      }
    } else {
      add("api-token", "provisioning login", set + "api-token");
    }
    if (c.provisioning->org_id) {
      add("org-api-key", "deactivation through the organization admin API", set + "org-api-key");
    }
  }
  if (c.access_sync) {
    switch (c.access_sync->auth) {
      case AccessSyncConfig::Auth::kOAuth2:
        add("oauth-client-secret", "access sync (OAuth client)", set + "oauth-client-secret");
        add("oauth-refresh-token", "access sync (OAuth grant)",
            "cakewalk-agent oauth authorize " + c.name);
        break;
      case AccessSyncConfig::Auth::kPat:
        add("pat", "access sync", set + "pat");
        break;
      case AccessSyncConfig::Auth::kApiToken:
        add("api-token", "access sync", set + "api-token");
        break;
      case AccessSyncConfig::Auth::kPassword:
        break;  // the provisioning credentials, checked above
    }
  }
  return out;
}

std::vector<CheckResult> SecretChecks(const Config& config, hsm::SecretStore& store) {
  std::vector<CheckResult> out;
  auto listed = store.List();
  if (!listed.ok()) {
    out.push_back({"secrets", CheckResult::kFail, listed.status().message()});
    return out;
  }
  const SysTime now = std::chrono::system_clock::now();
  auto current = [&](const std::string& conn, const std::string& name) -> const hsm::SecretInfo* {
    const hsm::SecretInfo* found = nullptr;
    for (const auto& s : *listed) {
      if (s.connection == conn && s.name == name && s.state == hsm::SecretState::kCurrent) {
        found = &s;
      }
    }
    return found;
  };
  auto check = [&](const std::string& conn, const Needed& n) {
    const std::string label = "secret " + conn + "/" + n.name;
    const hsm::SecretInfo* s = current(conn, n.name);
    if (s == nullptr) {
      out.push_back(
          {label, CheckResult::kFail, "missing (needed for " + n.why + "); run: " + n.how});
    } else if (now - s->created > config.rotation.max_age) {
      out.push_back({label, CheckResult::kWarn,
                     "version " + std::to_string(s->version) + " is older than " +
                         std::to_string(config.rotation.max_age.count() / 24) +
                         " days (rotation.max_age_days): rotate it"});
    } else {
      out.push_back({label, CheckResult::kOk, "version " + std::to_string(s->version)});
    }
  };
  if (config.control_plane.proxy_username) {
    check(kControlPlaneConnection, {"proxy-password", "the proxy",
                                    "cakewalk-agent secret set control-plane proxy-password"});
  }
  for (const auto& c : config.connections) {
    for (const Needed& n : NeededSecrets(c)) check(c.name, n);
  }
  for (const auto& s : *listed) {
    if (s.state == hsm::SecretState::kPending) {
      out.push_back({"secret " + s.connection + "/" + s.name, CheckResult::kWarn,
                     "version " + std::to_string(s.version) +
                         " is staged but not in use (an unfinished rotation or mfa enroll)"});
    }
  }
  return out;
}

}  // namespace

Status CommandDoctor(const Config& config, CliIo io) {
  std::vector<CheckResult> checks;
  checks.push_back({"configuration", CheckResult::kOk,
                    config.file.string() + " (" + std::to_string(config.connections.size()) +
                        " connection(s))"});
  auto token = TokenContext::Open(config, CommandLogSink());
  if (token.ok()) {
    const auto& info = (*token)->token().info();
    checks.push_back({"token", CheckResult::kOk,
                      "'" + info.label + "' (" + info.manufacturer + " " + info.model +
                          ", serial " + info.serial + ") via " + info.module});
    checks.push_back(
        {"token mechanisms", CheckResult::kOk, (*token)->token().capabilities().Summary()});
    const auto secrets = SecretChecks(config, (*token)->secrets());
    checks.insert(checks.end(), secrets.begin(), secrets.end());
  } else {
    checks.push_back({"token", CheckResult::kFail, token.status().message()});
  }
  const auto cp = ControlPlaneChecks(config, token.ok() ? token->get() : nullptr);
  checks.insert(checks.end(), cp.begin(), cp.end());
  auto jira = JiraConnectionChecks(config, token.ok() ? token->get() : nullptr);
  // A missing secret is already a failed "secret CONNECTION/NAME" line above, with the command
  // that stores it; the connection's own "secrets in the token" check would count it twice.
  std::erase_if(jira, [&](const CheckResult& j) {
    if (j.outcome != CheckResult::kFail || !j.name.ends_with(kSecretsInToken)) return false;
    const std::string prefix =
        "secret " + j.name.substr(0, j.name.size() - kSecretsInToken.size()) + "/";
    return std::any_of(checks.begin(), checks.end(), [&](const CheckResult& c) {
      return c.outcome == CheckResult::kFail && c.name.starts_with(prefix);
    });
  });
  checks.insert(checks.end(), jira.begin(), jira.end());

  int failed = 0;
  int warned = 0;
  for (const CheckResult& c : checks) {
    io.out << FormatCheck(c) << "\n";
    if (c.outcome == CheckResult::kFail) ++failed;
    if (c.outcome == CheckResult::kWarn) ++warned;
  }
  if (failed > 0) {
    // A token that refused the PIN keeps its reason, so the exit status says so (77).
    return FailedPrecondition(std::to_string(failed) + " check(s) failed, " +
                              std::to_string(warned) + " warning(s); see the lines above")
        .WithReason(token.ok() ? std::string() : token.status().reason());
  }
  io.out << "all " << checks.size() << " checks passed"
         << (warned > 0 ? " (" + std::to_string(warned) + " warning(s))" : std::string()) << "\n";
  return Status::Ok();
}

}  // namespace cakewalk::agent
