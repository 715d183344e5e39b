#include "jira/health.h"

#include <algorithm>

#include "base/time.h"
#include "jira/errors.h"

namespace cakewalk::jira {
namespace {

HealthCheck Check(const ConnectionSettings& s, std::string what, HealthCheck::Outcome outcome,
                  std::string detail, std::string reason = {}) {
  return {s.name + ": " + std::move(what), outcome, std::move(detail), std::move(reason)};
}

HealthCheck FromStatus(const ConnectionSettings& s, std::string what, const Status& status,
                       std::string ok_detail) {
  if (status.ok()) return Check(s, std::move(what), HealthCheck::kOk, std::move(ok_detail));
  return Check(s, std::move(what), HealthCheck::kFail, status.message(), status.reason());
}

bool IsTlsReason(std::string_view r) {
  return r == http::reason::kTlsVerifyFailed || r == http::reason::kTlsPinMismatch ||
         r == http::reason::kTlsHandshake;
}

}  // namespace

bool ConnectionHealth::ok() const {
  return std::none_of(checks.begin(), checks.end(),
                      [](const HealthCheck& c) { return c.outcome == HealthCheck::kFail; });
}

std::string ConnectionHealth::first_failure_reason() const {
  for (const auto& c : checks) {
    if (c.outcome == HealthCheck::kFail) return c.reason.empty() ? "internal" : c.reason;
  }
  return "";
}

std::vector<std::string> RequiredSecretNames(const ConnectionSettings& s) {
  std::vector<std::string> out;
  auto add = [&](std::string_view n) {
    if (std::find(out.begin(), out.end(), n) == out.end()) out.emplace_back(n);
  };
  if (s.provisioning == ProvisioningAuth::kPassword) add(secret::kPassword);
  if (s.mfa_totp) add(secret::kTotp);
  if (s.provisioning == ProvisioningAuth::kApiToken) add(secret::kApiToken);
  if (s.flavor == Flavor::kCloud && s.org_id) add(secret::kOrgApiKey);
  switch (s.access_sync) {
    case AccessSyncAuth::kOAuth2:
      add(secret::kOAuthClientSecret);
      add(secret::kOAuthRefreshToken);
      break;
    case AccessSyncAuth::kPat:
      add(secret::kPat);
      break;
    case AccessSyncAuth::kApiToken:
      add(secret::kApiToken);
      break;
    case AccessSyncAuth::kPassword:
    case AccessSyncAuth::kNone:
      break;
  }
  return out;
}

ConnectionHealth CheckConnection(Connection& connection, std::stop_token stop) {
  const ConnectionSettings& s = connection.settings();
  ConnectionHealth h;
  auto& out = h.checks;

  // Reachability and TLS: one anonymous request, read at the transport level.
  http::Request probe;
  probe.url = s.base_url +
              (s.flavor == Flavor::kCloud ? "/rest/api/3/serverInfo" : "/rest/api/2/serverInfo");
  probe.headers.push_back({"Accept", "application/json"});
  auto sent = connection.transport().Send(probe);
  bool reached = sent.ok();
  if (sent.ok())
    connection.site().skew().Record(sent->server_date, connection.runtime().clock->Now());
  if (sent.ok()) {
    out.push_back(Check(s, "reachable", HealthCheck::kOk,
                        s.base_url + " answered HTTP " + std::to_string(sent->status)));
    out.push_back(Check(s, "TLS", HealthCheck::kOk,
                        "server certificate verified" +
                            std::string(s.ca_file ? " against " + s.ca_file->string()
                                                  : " against the system trust store")));
  } else if (IsTlsReason(sent.status().reason())) {
    out.push_back(Check(s, "reachable", HealthCheck::kOk, "TCP connection to " + s.base_url));
    out.push_back(Check(s, "TLS", HealthCheck::kFail, sent.status().message(),
                        std::string(reason::kJiraUnavailable)));
  } else {
    out.push_back(Check(s, "reachable", HealthCheck::kFail, sent.status().message(),
                        std::string(reason::kJiraUnavailable)));
    out.push_back(Check(s, "TLS", HealthCheck::kWarn, "not checked: Jira was not reached"));
  }

  // Secrets: metadata only.
  std::vector<std::string> missing;
  Status token_status;
  for (const std::string& name : RequiredSecretNames(s)) {
    auto version = connection.credentials().CurrentVersion(name);
    if (!version.ok()) {
      token_status = version.status();
      break;
    }
    if (*version == 0) missing.push_back(name);
  }
  if (!token_status.ok()) {
    out.push_back(Check(s, "secrets in the token", HealthCheck::kFail, token_status.message(),
                        token_status.reason()));
  } else if (!missing.empty()) {
    std::string list;
    for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    out.push_back(
        Check(s, "secrets in the token", HealthCheck::kFail,
              "missing: " + list + "; " + MissingSecret(s.name, missing.front()).message(),
              std::string(reason::kCredentialsMissing)));
  } else {
    out.push_back(Check(s, "secrets in the token", HealthCheck::kOk, "all present"));
  }

  // The login stop: an operator must act.
  std::optional<LoginStop> stop_state = connection.state().login_stop();
  if (stop_state) {
    out.push_back(Check(s, "login", HealthCheck::kFail,
                        "automatic logins are stopped since " + FormatRfc3339(stop_state->since) +
                            " (" + stop_state->reason + "): " + stop_state->message,
                        stop_state->reason));
  }

  const bool can_login = reached && missing.empty() && token_status.ok() && !stop_state;
  if (s.provisioning != ProvisioningAuth::kNone) {
    if (!can_login) {
      if (!stop_state) {
        out.push_back(Check(s, "login", HealthCheck::kWarn, "not checked: see above"));
      }
      out.push_back(Check(s, "admin permission", HealthCheck::kWarn, "not checked: see above"));
    } else {
      auto client = connection.Provisioning(stop);
      Result<User> me = client.ok() ? (*client)->Myself(stop) : Result<User>(client.status());
      out.push_back(FromStatus(
          s, "login", me.status(),
          me.ok() ? "logged in as " + me->username.value_or(me->email.value_or(me->id)) +
                        (connection.mfa_used() == "totp" ? " (two-step verification)" : "")
                  : ""));
      if (me.ok()) {
        auto perms = (*client)->MyPermissions(stop);
        if (!perms.ok()) {
          out.push_back(FromStatus(s, "admin permission", perms.status(), ""));
        } else if (!perms->administer) {
          out.push_back(Check(s, "admin permission", HealthCheck::kFail,
                              "the account lacks Jira's Administer permission (ADMINISTER)",
                              std::string(reason::kNotAdmin)));
        } else {
          out.push_back(
              Check(s, "admin permission", HealthCheck::kOk,
                    perms->system_admin ? "Administer and System administrator" : "Administer"));
        }
      } else {
        out.push_back(Check(s, "admin permission", HealthCheck::kWarn, "not checked: see above"));
      }
    }
  }

  if (s.access_sync == AccessSyncAuth::kNone) {
    out.push_back(Check(s, "access sync auth", HealthCheck::kWarn,
                        "no access_sync section: Access Sync cannot run on this connection"));
  } else if (s.access_sync == AccessSyncAuth::kPassword) {
    out.push_back(
        Check(s, "access sync auth", HealthCheck::kOk, "uses the provisioning credentials"));
  } else if (!reached || !missing.empty()) {
    out.push_back(Check(s, "access sync auth", HealthCheck::kWarn, "not checked: see above"));
  } else {
    auto client = connection.AccessSync(stop);
    Result<User> me = client.ok() ? (*client)->Myself(stop) : Result<User>(client.status());
    out.push_back(FromStatus(
        s, "access sync auth", me.status(),
        me.ok() ? "authenticated as " + me->username.value_or(me->email.value_or(me->id)) : ""));
  }

  if (auto skew = connection.clock_skew()) {
    const auto secs = skew->count();
    const auto magnitude = std::chrono::abs(*skew);
    const std::string detail = "Jira's clock minus ours: " + std::to_string(secs) + " s";
    if (magnitude >= std::chrono::seconds(30)) {
      out.push_back(Check(s, "clock skew", HealthCheck::kFail,
                          detail + "; more than one TOTP step: fix the time (NTP)",
                          std::string(reason::kMfaFailed)));
    } else if (magnitude > kSkewWarn) {
      out.push_back(Check(s, "clock skew", HealthCheck::kWarn, detail + "; check NTP"));
    } else {
      out.push_back(Check(s, "clock skew", HealthCheck::kOk, detail));
    }
  } else {
    out.push_back(Check(s, "clock skew", HealthCheck::kWarn, "not measured (no Date header)"));
  }
  return h;
}

}  // namespace cakewalk::jira
