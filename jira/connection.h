// Connection: everything the connector keeps for one configured Jira connection — the transport
// (TLS to the connection's CA), the REST clients per base URL, the authenticators (with their
// session, cached secrets and OAuth tokens), the persisted state, and the JiraClients the jobs
// use. Long-lived: the agent keeps one per connection so sessions and tokens are reused.
//
// Auth selection:
//   provisioning  Data Center: password (+TOTP) session login (auth.h). Cloud: e-mail + API token
//                 (Basic) on the site; organization API key (Bearer) on admin_api_url for
//                 deactivation.
//   access sync   oauth2: Data Center Bearer on base_url; Cloud Bearer through api_base_url with
//                 {cloudId} resolved from the site's /_edge/tenant_info and confirmed against
//                 accessible-resources (whose entry for that cloudId must name the configured
//                 site). pat: DC Bearer. api-token: Cloud Basic. password: the provisioning client.
// Every base URL comes from the settings; nothing in an answer or a job selects a host.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>

#include "jira/auth.h"
#include "jira/client.h"
#include "jira/connection_state.h"
#include "jira/credentials.h"
#include "jira/oauth.h"
#include "jira/rest.h"
#include "jira/settings.h"

namespace cakewalk::jira {

struct ConnectionOptions {
  // Time, waiting, randomness, retry bounds. Unset members get the real ones.
  const Clock* clock = nullptr;
  Sleeper* sleeper = nullptr;
  RandomUnit random;
  RetryPolicy retry;
  // The transport; empty: a CurlTransport for the settings (ca_file, timeouts).
  std::shared_ptr<http::Transport> transport;
  OAuthHooks oauth_hooks;
};

class Connection {
 public:
  // Validates the settings, opens the transport and the persisted state. `credentials` must
  // outlive the connection.
  static Result<std::unique_ptr<Connection>> Open(ConnectionSettings settings,
                                                  Credentials& credentials,
                                                  ConnectionOptions options = {});
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  const ConnectionSettings& settings() const { return settings_; }
  Credentials& credentials() { return credentials_; }
  ConnectionState& state() { return *state_; }
  const Runtime& runtime() const { return runtime_; }
  http::Transport& transport() { return *transport_; }

  // The client acting with the provisioning credentials (credentials_missing when the connection
  // has none).
  Result<JiraClient*> Provisioning(std::stop_token stop);
  // The client acting with the Access Sync credentials.
  Result<JiraClient*> AccessSync(std::stop_token stop);
  // The REST base and the credentials that AccessSync()'s client acts with (building it first),
  // for jira/access_sync.h, which pages through the site itself. Both live as long as the
  // connection.
  struct RestAccess {
    RestClient* api = nullptr;  // Data Center base_url; Cloud site, or the gateway with the cloudId
    Authenticator* auth = nullptr;
  };
  Result<RestAccess> AccessSyncRest(std::stop_token stop);

  // Server information, anonymously where the flavor allows (cached).
  Result<ServerInfo> Server(std::stop_token stop);
  // Jira's clock minus ours, from the most recent answer of the site.
  std::optional<std::chrono::seconds> clock_skew() const;
  // "totp" when the provisioning login used a one-time code, else "none".
  std::string mfa_used();

  // Uses an access token obtained by the authorization code exchange (saves one refresh).
  void SeedOAuthAccessToken(SecretBytes access_token, std::chrono::seconds lifetime);

  // Lifts the login stop (an operator's explicit reset).
  Status ClearLoginStop();

  // For tests and diagnostics.
  DcSessionAuth* session_auth() { return session_.get(); }
  OAuthTokens* oauth_tokens() { return oauth_tokens_.get(); }
  RestClient& site() { return *site_; }
  RestClient& token_endpoint();

 private:
  Connection(ConnectionSettings settings, Credentials& credentials);
  Result<std::string> ResolveCloudId(std::stop_token stop);
  void EnsureOAuthLocked();

  const ConnectionSettings settings_;
  Credentials& credentials_;
  Runtime runtime_;
  OAuthHooks oauth_hooks_;
  std::shared_ptr<http::Transport> transport_;
  std::shared_ptr<SkewTracker> skew_;
  std::unique_ptr<ConnectionState> state_;

  std::mutex mu_;       // the provisioning side, OAuth tokens, caches
  std::mutex sync_mu_;  // the access sync client (gateway_, api_gateway_, sync_token_)
  std::unique_ptr<RestClient> site_;
  std::unique_ptr<RestClient> admin_;
  std::unique_ptr<RestClient> gateway_;      // api.atlassian.com (accessible-resources)
  std::unique_ptr<RestClient> api_gateway_;  // .../ex/jira/<cloudId>
  std::unique_ptr<RestClient> token_endpoint_;
  std::unique_ptr<DcSessionAuth> session_;
  std::unique_ptr<SecretHeaderAuth> provisioning_token_;
  std::unique_ptr<SecretHeaderAuth> org_key_;
  std::unique_ptr<SecretHeaderAuth> sync_token_;
  std::unique_ptr<OAuthTokens> oauth_tokens_;
  std::unique_ptr<OAuthAuthenticator> oauth_auth_;
  std::unique_ptr<JiraClient> provisioning_;
  std::unique_ptr<JiraClient> access_sync_;
  std::optional<ServerInfo> server_;
};

}  // namespace cakewalk::jira
