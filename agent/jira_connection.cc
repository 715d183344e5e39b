#include "agent/jira_connection.h"

#include <ostream>

#include "agent/token_context.h"
#include "base/json.h"
#include "jira/health.h"
#include "jira/oauth.h"

namespace cakewalk::agent {
namespace {

// Everything that shapes a Connection, as text: a changed configuration gives another value.
std::string Fingerprint(const jira::ConnectionSettings& s) {
  Json::Value j(Json::objectValue);
  j["name"] = s.name;
  j["flavor"] = std::string(jira::FlavorWord(s.flavor));
  j["base_url"] = s.base_url;
  j["ca_file"] = s.ca_file ? s.ca_file->string() : "";
  j["timeouts"] =
      std::to_string(s.request_timeout.count()) + "/" + std::to_string(s.connect_timeout.count());
  j["provisioning"] = static_cast<int>(s.provisioning);
  j["username"] = s.username;
  j["mfa_totp"] = s.mfa_totp;
  j["org_id"] = s.org_id.value_or("");
  j["access_sync"] = static_cast<int>(s.access_sync);
  j["client_id"] = s.oauth.client_id;
  for (const auto& scope : s.oauth.scopes) j["scopes"].append(scope);
  j["authorize_url"] = s.oauth.authorize_url;
  j["token_url"] = s.oauth.token_url;
  j["redirect_uri"] = s.oauth.redirect_uri;
  j["api_base_url"] = s.api_base_url;
  j["admin_api_url"] = s.admin_api_url;
  j["state_dir"] = s.state_dir.string();
  return WriteJson(j);
}

CheckResult::Outcome OutcomeOf(jira::HealthCheck::Outcome o) {
  switch (o) {
    case jira::HealthCheck::kOk:
      return CheckResult::kOk;
    case jira::HealthCheck::kWarn:
      return CheckResult::kWarn;
    case jira::HealthCheck::kFail:
      return CheckResult::kFail;
  }
  return CheckResult::kFail;
}

}  // namespace

jira::ConnectionSettings JiraSettings(const Config& config, const ConnectionConfig& c) {
  jira::ConnectionSettings s;
  s.name = c.name;
  s.flavor = c.flavor == JiraFlavor::kCloud ? jira::Flavor::kCloud : jira::Flavor::kDataCenter;
  s.base_url = c.base_url;
  s.ca_file = c.ca_file;
  s.request_timeout = c.request_timeout;
  if (c.provisioning) {
    s.provisioning = c.provisioning->auth == ProvisioningConfig::Auth::kPassword
                         ? jira::ProvisioningAuth::kPassword
                         : jira::ProvisioningAuth::kApiToken;
    s.username = c.provisioning->username;
    s.mfa_totp = c.provisioning->mfa_totp;
    s.org_id = c.provisioning->org_id;
  }
  if (c.access_sync) {
    switch (c.access_sync->auth) {
      case AccessSyncConfig::Auth::kOAuth2:
        s.access_sync = jira::AccessSyncAuth::kOAuth2;
        break;
      case AccessSyncConfig::Auth::kPat:
        s.access_sync = jira::AccessSyncAuth::kPat;
        break;
      case AccessSyncConfig::Auth::kApiToken:
        s.access_sync = jira::AccessSyncAuth::kApiToken;
        break;
      case AccessSyncConfig::Auth::kPassword:
        s.access_sync = jira::AccessSyncAuth::kPassword;
        break;
    }
    s.oauth.client_id = c.access_sync->client_id;
    s.oauth.scopes = c.access_sync->scopes;
    s.oauth.authorize_url = c.access_sync->authorize_url;
    s.oauth.token_url = c.access_sync->token_url;
    s.oauth.redirect_uri = c.access_sync->redirect_uri;
  }
  s.api_base_url = c.api_base_url;
  s.admin_api_url = c.admin_api_url;
  s.state_dir = config.state_dir;
  return s;
}

JiraConnections::JiraConnections(hsm::SecretStore& secrets, std::filesystem::path state_dir,
                                 jira::ConnectionOptions options)
    : secrets_(secrets), state_dir_(std::move(state_dir)), options_(std::move(options)) {}

JiraConnections::~JiraConnections() = default;

Result<std::shared_ptr<jira::Connection>> JiraConnections::Get(const ConnectionConfig& c) {
  Config holder;
  holder.state_dir = state_dir_;
  jira::ConnectionSettings settings = JiraSettings(holder, c);
  const std::string fingerprint = Fingerprint(settings);
  std::lock_guard lock(mu_);
  auto it = entries_.find(c.name);
  if (it != entries_.end() && it->second.fingerprint == fingerprint) {
    return it->second.connection;
  }
  // The connection owns its credentials (through its deleter), so that a job still holding a
  // connection replaced by a reload keeps working with it.
  std::shared_ptr<jira::Credentials> credentials = jira::TokenCredentials(secrets_, c.name);
  CW_ASSIGN_OR_RETURN(std::unique_ptr<jira::Connection> opened,
                      jira::Connection::Open(std::move(settings), *credentials, options_));
  std::shared_ptr<jira::Connection> connection(opened.release(),
                                               [credentials](jira::Connection* p) { delete p; });
  entries_[c.name] = Entry{connection, fingerprint};
  return connection;
}

std::vector<CheckResult> JiraConnectionChecks(const Config& config, TokenContext* token) {
  std::vector<CheckResult> out;
  for (const ConnectionConfig& c : config.connections) {
    if (token == nullptr) {
      out.push_back({c.name + ": Jira", CheckResult::kWarn, "not checked: the token is not open"});
      continue;
    }
    auto credentials = jira::TokenCredentials(token->secrets(), c.name);
    auto conn = jira::Connection::Open(JiraSettings(config, c), *credentials);
    if (!conn.ok()) {
      out.push_back({c.name + ": Jira", CheckResult::kFail, conn.status().message()});
      continue;
    }
    for (const jira::HealthCheck& h : jira::CheckConnection(**conn).checks) {
      out.push_back({h.name, OutcomeOf(h.outcome), h.detail});
    }
  }
  return out;
}

Status AuthorizeOAuth(const Config& config, const std::string& connection,
                      hsm::SecretStore& secrets, CliIo io,
                      const std::function<Result<SecretBytes>()>& read_pasted,
                      jira::ConnectionOptions options) {
  const ConnectionConfig* c = config.FindConnection(connection);
  if (c == nullptr) {
    return NotFound("no connection named '" + connection + "' in " + config.file.string());
  }
  if (!c->access_sync || c->access_sync->auth != AccessSyncConfig::Auth::kOAuth2) {
    return FailedPrecondition("connection '" + connection +
                              "' does not use OAuth 2.0: set \"auth\": \"oauth2\" (with "
                              "client_id) in its access_sync section of " +
                              config.file.string() + " first");
  }
  jira::ConnectionSettings settings = JiraSettings(config, *c);
  auto credentials = jira::TokenCredentials(secrets, connection);
  CW_ASSIGN_OR_RETURN(std::uint32_t secret_version,
                      credentials->CurrentVersion(jira::secret::kOAuthClientSecret));
  if (secret_version == 0) {
    return FailedPrecondition("store the OAuth client secret first: cakewalk-agent secret set " +
                              connection + " oauth-client-secret");
  }
  CW_ASSIGN_OR_RETURN(std::unique_ptr<jira::Connection> conn,
                      jira::Connection::Open(settings, *credentials, std::move(options)));
  CW_ASSIGN_OR_RETURN(jira::AuthorizationRequest request,
                      jira::BeginAuthorization(conn->settings(), *credentials));
  io.out << "Open this address in a browser, signed in to Jira as the account Access Sync should "
            "use, and approve the access:\n\n  "
         << request.url << "\n\n"
         << "The browser is then sent to " << settings.oauth.redirect_uri
         << "?code=... (the page itself may not load; that is expected: no port is opened "
            "here).\nPaste that whole address, or only the code, and end with Enter:\n";
  io.out.flush();
  CW_ASSIGN_OR_RETURN(SecretBytes pasted, read_pasted());
  auto done = jira::CompleteAuthorization(conn->settings(), *credentials, conn->token_endpoint(),
                                          request, pasted.RevealString(SecretAccess::Grant()), {});
  pasted.Wipe();
  if (!done.ok()) return done.status();
  conn->SeedOAuthAccessToken(std::move(done->access_token), done->access_lifetime);
  CW_ASSIGN_OR_RETURN(jira::JiraClient * client, conn->AccessSync({}));
  auto me = client->Myself({});
  std::string scopes;
  for (const auto& s : done->scopes) scopes += (scopes.empty() ? "" : " ") + s;
  if (!me.ok()) {
    return Status(me.status().code(),
                  "the refresh token is stored (version " +
                      std::to_string(done->refresh_token_version) +
                      "), but the first call with it failed: " + me.status().message(),
                  me.status().reason());
  }
  io.out << "Authorized: Access Sync for " << connection << " acts as "
         << me->username.value_or(me->email.value_or(me->id))
         << (scopes.empty() ? "" : " (scopes: " + scopes + ")")
         << ". The refresh token is sealed in the token (version " << done->refresh_token_version
         << ") and rotates on every use.\n";
  return Status::Ok();
}

}  // namespace cakewalk::agent
