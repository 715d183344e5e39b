// What the Jira connector needs to know about one connection, in its own words: jira/ does not
// depend on agent/. agent/jira_connection.cc translates the agent's ConnectionConfig into this.
//
// Every host the connector contacts comes from here (base_url, api_base_url, admin_api_url,
// token_url): never from a job and never from a server's answer.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace cakewalk::jira {

enum class Flavor { kDataCenter, kCloud };
// "datacenter" / "cloud" (the words of the verify job's output).
std::string_view FlavorWord(Flavor flavor) noexcept;

// How the provisioning account logs in.
enum class ProvisioningAuth {
  kNone,      // no provisioning section
  kPassword,  // Data Center: user name + password (+ TOTP when mfa_totp)
  kApiToken,  // Cloud: account e-mail + API token (Basic)
};

// How Access Sync authenticates.
enum class AccessSyncAuth {
  kNone,      // no access_sync section
  kOAuth2,    // authorization code + PKCE, rotating refresh token in the token
  kPat,       // Data Center personal access token (Bearer)
  kApiToken,  // Cloud e-mail + API token
  kPassword,  // the provisioning credentials
};

struct OAuthSettings {
  std::string client_id;
  std::vector<std::string> scopes;
  std::string authorize_url;  // https://
  std::string token_url;      // https://
  std::string redirect_uri;
};

struct ConnectionSettings {
  std::string name;  // the connection name: secrets and state are filed under it
  Flavor flavor = Flavor::kDataCenter;
  std::string base_url;  // https://host[/context], no trailing slash
  std::optional<std::filesystem::path> ca_file;
  std::chrono::seconds request_timeout{60};
  std::chrono::seconds connect_timeout{10};

  ProvisioningAuth provisioning = ProvisioningAuth::kNone;
  std::string username;  // DC login name, or the Cloud account e-mail
  bool mfa_totp = false;
  std::optional<std::string> org_id;  // Cloud: needed for deactivation

  AccessSyncAuth access_sync = AccessSyncAuth::kNone;
  OAuthSettings oauth;

  // Cloud with OAuth: "https://api.atlassian.com/ex/jira/{cloudId}"; otherwise base_url.
  std::string api_base_url;
  // Cloud: the organization admin API ("https://api.atlassian.com").
  std::string admin_api_url;

  // Where the connector keeps what must survive a restart (the login stop, the last TOTP step
  // used). Empty: kept in memory only.
  std::filesystem::path state_dir;
};

// Checks the settings the connector relies on (https:// URLs, names, flavor-specific fields).
Status ValidateSettings(const ConnectionSettings& settings);

}  // namespace cakewalk::jira
