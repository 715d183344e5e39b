// The agent's configuration file (JSON), loaded strictly: unknown keys, wrong types, missing
// required keys, unusable paths and http:// URLs are refused with the key's JSON path and what to
// do. Everything optional has a default. Relative paths are relative to the file's folder.
//
// The file never holds a secret: the token PIN comes from token.pin_file or
// $CREDENTIALS_DIRECTORY/hsm-pin, and every other credential lives in the token.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace cakewalk::agent {

inline constexpr char kDefaultConfigPath[] = "/etc/cakewalk-agent/agent.json";
inline constexpr char kDefaultStateDir[] = "/var/lib/cakewalk-agent";
// The connection name under which control-plane secrets (proxy-password) are kept.
inline constexpr char kControlPlaneConnection[] = "control-plane";

struct ControlPlaneConfig {
  std::string url;  // https://..., without a trailing slash
  std::optional<std::filesystem::path> ca_file;
  std::vector<std::string> pinned_spki_sha256;  // base64 SHA-256 of SubjectPublicKeyInfo
  // HTTP CONNECT proxy: from the file, else https_proxy / HTTPS_PROXY (lower case wins).
  std::optional<std::string> proxy;
  std::optional<std::string> proxy_username;  // password: token secret control-plane/proxy-password
  std::string no_proxy;      // from no_proxy / NO_PROXY when the proxy came from the environment
  std::string proxy_source;  // "config", "https_proxy", "HTTPS_PROXY" or "" (none)
  std::chrono::seconds connect_timeout{10};
  std::chrono::seconds request_timeout{60};
};

struct TokenConfig {
  // A path to a PKCS#11 module, or a p11-kit module name; absent: p11-kit's proxy.
  std::optional<std::string> module;
  std::string uri;  // RFC 7512 pkcs11: URI selecting the token
  // Absent: $CREDENTIALS_DIRECTORY/hsm-pin (resolved at use, not at load).
  std::optional<std::filesystem::path> pin_file;
};

struct JobsConfig {
  int max_concurrent = 4;
  std::vector<std::string> allowed_types = {"jira.*"};
  bool allow_remote_secret_rotation = false;
  std::chrono::seconds timeout{30 * 60};         // per job
  std::chrono::seconds shutdown_grace{20};       // SIGTERM: time for running jobs to finish
  std::chrono::hours journal_retention{24 * 7};  // acknowledged journal entries are pruned after
  int poll_wait_seconds = 50;                    // long-poll hold asked from the control plane

  // True when `type` matches an allowed pattern ("jira.*" or an exact type name).
  bool Allows(std::string_view type) const;
};

enum class JiraFlavor { kDataCenter, kCloud };
std::string_view FlavorName(JiraFlavor flavor);  // "jira-datacenter" / "jira-cloud"

struct ProvisioningConfig {
  enum class Auth { kPassword, kApiToken };
  Auth auth = Auth::kPassword;
  std::string username;  // Data Center login name, or the Cloud account e-mail
  bool mfa_totp = false;
  std::optional<std::string> org_id;  // Cloud: the organization, for deactivation
};

struct AccessSyncConfig {
  enum class Auth { kOAuth2, kPat, kApiToken, kPassword };
  Auth auth = Auth::kPassword;
  // OAuth 2.0 (authorization code + PKCE)
  std::string client_id;
  std::vector<std::string> scopes;
  std::string authorize_url;
  std::string token_url;
  std::string redirect_uri;
  // Upper bound for concurrent page fetches during a sync.
  int max_concurrency = 8;
};

struct PasswordPolicy {
  int length = 32;
  bool lower = true;
  bool upper = true;
  bool digits = true;
  bool symbols = true;
};

struct ConnectionConfig {
  std::string name;
  JiraFlavor flavor = JiraFlavor::kDataCenter;
  std::string base_url;  // https://..., no trailing slash
  std::optional<std::filesystem::path> ca_file;
  std::optional<ProvisioningConfig> provisioning;
  std::optional<AccessSyncConfig> access_sync;
  // Where REST calls go when they cannot use base_url (Cloud OAuth: the api.atlassian.com
  // gateway); defaults per flavor.
  std::string api_base_url;
  std::string admin_api_url;  // Atlassian organization admin API (Cloud)
  // Data Center non-human identity name patterns ('*' wildcards), e.g. "svc-*", "*-bot".
  std::vector<std::string> nhi_patterns = {"svc-*", "svc_*",    "*-bot",    "*_bot",
                                           "bot-*", "noreply*", "no-reply*"};
  PasswordPolicy password_policy;
  std::chrono::seconds request_timeout{60};
};

struct RotationConfig {
  std::chrono::hours max_age{24 * 90};           // warn when a secret is older than this
  std::chrono::seconds old_version_grace{3600};  // keep a replaced version this long
};

struct Config {
  std::filesystem::path file;  // the file this came from (absolute)
  std::filesystem::path state_dir = kDefaultStateDir;
  std::string log_level = "info";
  ControlPlaneConfig control_plane;
  TokenConfig token;
  JobsConfig jobs;
  RotationConfig rotation;
  std::vector<ConnectionConfig> connections;

  const ConnectionConfig* FindConnection(std::string_view name) const;
};

// What the loader may read from the environment (proxy variables only), passed in so that tests
// and callers decide; FromProcess() reads the real environment.
struct ConfigEnvironment {
  std::map<std::string, std::string> vars;
  static ConfigEnvironment FromProcess();
  std::optional<std::string> Get(std::string_view name) const;
};

Result<Config> LoadConfig(const std::filesystem::path& file, const ConfigEnvironment& env);
// Parses configuration text as if it were read from `file` (relative paths resolve against its
// folder).
Result<Config> ParseConfig(std::string_view text, const std::filesystem::path& file,
                           const ConfigEnvironment& env);

// Connection and secret names: 1-64 characters of [A-Za-z0-9._-], starting with a letter or
// digit. They become parts of token object labels, so the rule is strict.
Status ValidateName(std::string_view what, std::string_view name);

}  // namespace cakewalk::agent
