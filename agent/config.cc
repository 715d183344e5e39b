#include "agent/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>

#include "base/json.h"

extern char** environ;

namespace cakewalk::agent {
namespace {

constexpr std::size_t kMaxConfigBytes = 1024 * 1024;

struct ParsedUrl {
  std::string scheme;
  std::string host;
  std::string rest;  // port and path
};

// Accepts scheme://host[:port][/path]; refuses user info, queries and fragments.
Result<ParsedUrl> ParseUrl(std::string_view url) {
  const auto sep = url.find("://");
  if (sep == std::string_view::npos || sep == 0) {
    return InvalidArgument("'" + std::string(url) + "' is not an absolute URL");
  }
  ParsedUrl p;
  p.scheme = std::string(url.substr(0, sep));
  std::transform(p.scheme.begin(), p.scheme.end(), p.scheme.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string_view after = url.substr(sep + 3);
  const auto slash = after.find('/');
  std::string_view authority = after.substr(0, slash);
  if (authority.find('@') != std::string_view::npos) {
    return InvalidArgument("must not contain a user name or password");
  }
  if (url.find_first_of("?#") != std::string_view::npos) {
    return InvalidArgument("must not contain a query or fragment");
  }
  if (url.find_first_of(" \t\r\n") != std::string_view::npos) {
    return InvalidArgument("must not contain whitespace");
  }
  const auto colon = authority.rfind(':');
  std::string_view host = authority;
  if (colon != std::string_view::npos && authority.find(']') == std::string_view::npos) {
    host = authority.substr(0, colon);
    std::string_view port = authority.substr(colon + 1);
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        std::stoi(std::string(port)) > 65535 || std::stoi(std::string(port)) == 0) {
      return InvalidArgument("has an invalid port '" + std::string(port) + "'");
    }
  }
  if (host.empty()) return InvalidArgument("has no host");
  p.host = std::string(host);
  p.rest = std::string(after.substr(host.size()));
  return p;
}

std::string TrimTrailingSlash(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

// An https:// URL of a server the agent talks to.
std::string HttpsUrl(JsonFields& f, std::string_view key, JsonFields::Presence presence,
                     std::string_view what) {
  std::string url = f.String(key, presence);
  if (!f.ok() || url.empty()) {
    if (f.ok() && presence == JsonFields::kRequired) f.Fail(key, "must not be empty");
    return url;
  }
  auto parsed = ParseUrl(url);
  if (!parsed.ok()) {
    f.Fail(key, "'" + url + "' " + parsed.status().message());
    return url;
  }
  if (parsed->scheme == "http") {
    f.Fail(key, "http:// is refused: " + std::string(what) +
                    " is reached over HTTPS only, with the server certificate verified; use "
                    "https://" +
                    url.substr(7));
    return url;
  }
  if (parsed->scheme != "https") {
    f.Fail(key, "'" + url + "' must start with https://");
    return url;
  }
  return TrimTrailingSlash(url);
}

std::filesystem::path ResolvePath(const std::filesystem::path& base_dir, const std::string& p) {
  std::filesystem::path path(p);
  if (path.is_relative()) path = base_dir / path;
  return path.lexically_normal();
}

std::optional<std::filesystem::path> OptionalPath(JsonFields& f, std::string_view key,
                                                  const std::filesystem::path& base_dir) {
  auto s = f.OptionalString(key);
  if (!s) return std::nullopt;
  if (s->empty()) {
    f.Fail(key, "must not be empty (remove the key to use the default)");
    return std::nullopt;
  }
  if (s->find('\0') != std::string::npos) {
    f.Fail(key, "contains a NUL character");
    return std::nullopt;
  }
  return ResolvePath(base_dir, *s);
}

// A proxy URL must be http://host:port (an HTTP CONNECT proxy), without credentials.
Status CheckProxyUrl(const std::string& url, std::string_view where) {
  auto parsed = ParseUrl(url);
  if (!parsed.ok()) {
    if (parsed.status().message().find("user name") != std::string::npos) {
      return InvalidArgument(
          std::string(where) +
          ": the proxy URL must not carry credentials; put the user in "
          "control_plane.proxy_username and store the password in the token with "
          "'cakewalk-agent secret set control-plane proxy-password'");
    }
    return InvalidArgument(std::string(where) + ": proxy '" + url + "' " +
                           parsed.status().message());
  }
  if (parsed->scheme != "http") {
    return InvalidArgument(std::string(where) + ": proxy '" + url +
                           "' must be an http:// URL of an HTTP CONNECT proxy (the TLS session "
                           "to the server runs inside the tunnel)");
  }
  const std::string& rest = parsed->rest;  // ":port" and maybe a path
  const auto path = rest.find('/');
  if (rest.empty() || rest[0] != ':') {
    return InvalidArgument(std::string(where) + ": proxy '" + url +
                           "' must name its port, e.g. http://" + parsed->host + ":3128");
  }
  if (path != std::string::npos && rest.substr(path) != "/") {
    return InvalidArgument(std::string(where) + ": proxy '" + url +
                           "' must not have a path; use http://host:port");
  }
  return Status::Ok();
}

std::chrono::seconds Seconds(JsonFields& f, std::string_view key, std::chrono::seconds fallback,
                             std::int64_t min, std::int64_t max) {
  return std::chrono::seconds(f.Int(key, fallback.count(), min, max));
}

void ParseControlPlane(JsonFields& root, Config& c, const std::filesystem::path& base_dir,
                       const ConfigEnvironment& env) {
  const Json::Value* v = root.Object("control_plane", JsonFields::kRequired);
  if (v == nullptr) return;
  JsonFields f(*v, root.ChildPath("control_plane"));
  auto& cp = c.control_plane;
  cp.url = HttpsUrl(f, "url", JsonFields::kRequired, "the control plane");
  cp.ca_file = OptionalPath(f, "ca_file", base_dir);
  cp.pinned_spki_sha256 = f.StringArray("pinned_spki_sha256");
  for (std::size_t i = 0; i < cp.pinned_spki_sha256.size() && f.ok(); ++i) {
    const std::string& pin = cp.pinned_spki_sha256[i];
    const bool plausible = pin.size() == 44 && pin.back() == '=' &&
                           pin.find_first_not_of(
                               "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstu"
                               "vwxyz0123456789+/=") == std::string::npos;
    if (!plausible) {
      f.Fail("pinned_spki_sha256[" + std::to_string(i) + "]",
             "'" + pin +
                 "' is not a base64 SHA-256 digest (44 characters ending in '='); compute it with "
                 "openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst "
                 "-sha256 -binary | base64");
    }
  }
  cp.proxy = f.OptionalString("proxy");
  cp.proxy_username = f.OptionalString("proxy_username");
  cp.connect_timeout = Seconds(f, "connect_timeout_seconds", cp.connect_timeout, 1, 300);
  cp.request_timeout = Seconds(f, "request_timeout_seconds", cp.request_timeout, 5, 3600);
  if (f.ok() && cp.proxy) {
    if (cp.proxy->empty()) {
      f.Fail("proxy", "must not be empty (remove the key to use no proxy)");
    } else if (Status s = CheckProxyUrl(*cp.proxy, f.ChildPath("proxy")); !s.ok()) {
      f.Merge(s);
    } else {
      cp.proxy_source = "config";
    }
  }
  if (f.ok() && cp.proxy_username && !cp.proxy) {
    f.Fail("proxy_username", "is set but control_plane.proxy is not; set both or neither");
  }
  root.Merge(f.Finish());
  if (!root.ok()) return;
  if (!cp.proxy) {
    // The environment applies only when the file names no proxy; lower case wins, as curl does.
    for (const char* var : {"https_proxy", "HTTPS_PROXY"}) {
      auto value = env.Get(var);
      if (!value || value->empty()) continue;
      if (Status s = CheckProxyUrl(*value, std::string("environment variable ") + var); !s.ok()) {
        root.Fail("control_plane", s.message());
        return;
      }
      cp.proxy = *value;
      cp.proxy_source = var;
      break;
    }
    if (cp.proxy) {
      auto np = env.Get("no_proxy");
      if (!np) np = env.Get("NO_PROXY");
      cp.no_proxy = np.value_or("");
    }
  }
}

void ParseToken(JsonFields& root, Config& c, const std::filesystem::path& base_dir) {
  const Json::Value* v = root.Object("token", JsonFields::kRequired);
  if (v == nullptr) return;
  JsonFields f(*v, root.ChildPath("token"));
  auto& t = c.token;
  t.module = f.OptionalString("module");
  if (f.ok() && t.module) {
    if (t.module->empty()) {
      f.Fail("module", "must not be empty (remove the key to use p11-kit's proxy module)");
    } else if (t.module->find('/') != std::string::npos) {
      t.module = ResolvePath(base_dir, *t.module).string();  // a path
    }                                                        // else: a p11-kit module name
  }
  t.uri = f.String("uri", JsonFields::kRequired);
  if (f.ok() && t.uri.rfind("pkcs11:", 0) != 0) {
    f.Fail("uri", "'" + t.uri +
                      "' is not an RFC 7512 PKCS#11 URI; it must start with 'pkcs11:', e.g. "
                      "pkcs11:token=cakewalk");
  }
  if (f.ok() && (t.uri.find("pin-value") != std::string::npos ||
                 t.uri.find("pin-source") != std::string::npos)) {
    f.Fail("uri",
           "must not carry a PIN; put the PIN in token.pin_file or the systemd credential "
           "hsm-pin");
  }
  t.pin_file = OptionalPath(f, "pin_file", base_dir);
  root.Merge(f.Finish());
}

const std::set<std::string, std::less<>> kJobTypes = {
    "jira.connection.verify", "jira.user.provision",      "jira.user.deprovision",
    "jira.group.add_member",  "jira.group.remove_member", "jira.access_sync",
    "secret.rotate"};

void ParseJobs(JsonFields& root, Config& c) {
  const Json::Value* v = root.Object("jobs");
  if (v == nullptr) return;
  JsonFields f(*v, root.ChildPath("jobs"));
  auto& j = c.jobs;
  j.max_concurrent = static_cast<int>(f.Int("max_concurrent", j.max_concurrent, 1, 64));
  if (f.Has("allowed_types")) j.allowed_types = f.StringArray("allowed_types");
  for (std::size_t i = 0; i < j.allowed_types.size() && f.ok(); ++i) {
    const std::string& p = j.allowed_types[i];
    const bool prefix = p.size() > 2 && p.ends_with(".*");
    bool known = kJobTypes.count(p) > 0 || p == "*";
    if (prefix) {
      const std::string stem = p.substr(0, p.size() - 1);  // "jira."
      known = std::any_of(kJobTypes.begin(), kJobTypes.end(),
                          [&](const std::string& t) { return t.rfind(stem, 0) == 0; });
    }
    if (!known) {
      std::string all;
      for (const auto& t : kJobTypes) all += (all.empty() ? "" : ", ") + t;
      f.Fail("allowed_types[" + std::to_string(i) + "]",
             "'" + p + "' matches no job type; use a type (" + all +
                 ") or a prefix pattern such as \"jira.*\"");
    }
  }
  j.allow_remote_secret_rotation =
      f.Bool("allow_remote_secret_rotation", j.allow_remote_secret_rotation);
  j.timeout = Seconds(f, "timeout_seconds", j.timeout, 10, 24 * 3600);
  j.shutdown_grace = Seconds(f, "shutdown_grace_seconds", j.shutdown_grace, 0, 600);
  j.journal_retention = std::chrono::hours(
      24 * f.Int("journal_retention_days", j.journal_retention.count() / 24, 1, 3650));
  j.poll_wait_seconds = static_cast<int>(f.Int("poll_wait_seconds", j.poll_wait_seconds, 1, 60));
  root.Merge(f.Finish());
}

void ParseRotation(JsonFields& root, Config& c) {
  const Json::Value* v = root.Object("rotation");
  if (v == nullptr) return;
  JsonFields f(*v, root.ChildPath("rotation"));
  c.rotation.max_age =
      std::chrono::hours(24 * f.Int("max_age_days", c.rotation.max_age.count() / 24, 1, 3650));
  c.rotation.old_version_grace =
      Seconds(f, "old_version_grace_seconds", c.rotation.old_version_grace, 0, 30 * 24 * 3600);
  root.Merge(f.Finish());
}

std::optional<ProvisioningConfig> ParseProvisioning(JsonFields& cf, JiraFlavor flavor) {
  const Json::Value* v = cf.Object("provisioning");
  if (v == nullptr) return std::nullopt;
  JsonFields f(*v, cf.ChildPath("provisioning"));
  ProvisioningConfig p;
  const std::string auth = f.String("auth", JsonFields::kRequired);
  p.username = f.String("username", JsonFields::kRequired);
  const std::string mfa = f.String("mfa", JsonFields::kOptional, "none");
  p.org_id = f.OptionalString("org_id");
  if (f.ok()) {
    if (auth == "password") {
      if (flavor == JiraFlavor::kCloud) {
        f.Fail("auth",
               "'password' does not work on Jira Cloud (password logins to the REST API were "
               "removed); use \"api-token\" with the account e-mail as username");
      }
      p.auth = ProvisioningConfig::Auth::kPassword;
    } else if (auth == "api-token") {
      if (flavor == JiraFlavor::kDataCenter) {
        f.Fail("auth", "'api-token' is for Jira Cloud; on Data Center use \"password\"");
      }
      p.auth = ProvisioningConfig::Auth::kApiToken;
    } else {
      f.Fail("auth", "'" + auth + "' is not one of: password, api-token");
    }
  }
  if (f.ok() && p.username.empty()) f.Fail("username", "must not be empty");
  if (f.ok()) {
    if (mfa == "totp") {
      if (p.auth != ProvisioningConfig::Auth::kPassword) {
        f.Fail("mfa",
               "\"totp\" applies only to auth \"password\" (Data Center two-step "
               "verification)");
      }
      p.mfa_totp = true;
    } else if (mfa != "none") {
      f.Fail("mfa", "'" + mfa + "' is not one of: totp, none");
    }
  }
  if (f.ok() && p.org_id && flavor != JiraFlavor::kCloud) {
    f.Fail("org_id", "is only used with Jira Cloud (organization admin API)");
  }
  cf.Merge(f.Finish());
  if (!cf.ok()) return std::nullopt;
  return p;
}

std::optional<AccessSyncConfig> ParseAccessSync(JsonFields& cf, const ConnectionConfig& conn) {
  const Json::Value* v = cf.Object("access_sync");
  if (v == nullptr) return std::nullopt;
  JsonFields f(*v, cf.ChildPath("access_sync"));
  AccessSyncConfig a;
  const std::string auth = f.String("auth", JsonFields::kRequired);
  a.client_id = f.String("client_id", JsonFields::kOptional);
  a.scopes = f.StringArray("scopes");
  a.authorize_url = HttpsUrl(f, "authorize_url", JsonFields::kOptional, "the OAuth server");
  a.token_url = HttpsUrl(f, "token_url", JsonFields::kOptional, "the OAuth server");
  a.redirect_uri = f.String("redirect_uri", JsonFields::kOptional);
  a.max_concurrency = static_cast<int>(f.Int("max_concurrency", a.max_concurrency, 1, 64));
  const bool cloud = conn.flavor == JiraFlavor::kCloud;
  if (f.ok()) {
    if (auth == "oauth2") {
      a.auth = AccessSyncConfig::Auth::kOAuth2;
      if (a.client_id.empty()) f.Fail("client_id", "is required when auth is \"oauth2\"");
    } else if (auth == "pat") {
      a.auth = AccessSyncConfig::Auth::kPat;
      if (cloud) f.Fail("auth", "'pat' is for Data Center; on Jira Cloud use oauth2 or api-token");
    } else if (auth == "api-token") {
      a.auth = AccessSyncConfig::Auth::kApiToken;
      if (!cloud) f.Fail("auth", "'api-token' is for Jira Cloud; on Data Center use pat or oauth2");
    } else if (auth == "password") {
      a.auth = AccessSyncConfig::Auth::kPassword;
      if (!conn.provisioning) {
        f.Fail("auth",
               "\"password\" reuses the provisioning credentials, but this connection "
               "has no provisioning section");
      }
    } else {
      f.Fail("auth", "'" + auth + "' is not one of: oauth2, pat, api-token, password");
    }
  }
  if (f.ok() && a.auth != AccessSyncConfig::Auth::kOAuth2) {
    for (const char* key : {"client_id", "authorize_url", "token_url", "redirect_uri"}) {
      if (f.Has(key)) f.Fail(key, "is only used when auth is \"oauth2\"");
    }
    if (f.Has("scopes")) f.Fail("scopes", "is only used when auth is \"oauth2\"");
  }
  if (f.ok() && a.auth == AccessSyncConfig::Auth::kOAuth2) {
    if (a.scopes.empty()) {
      a.scopes = cloud ? std::vector<std::string>{"read:jira-user", "manage:jira-configuration",
                                                  "read:jira-work", "offline_access"}
                       : std::vector<std::string>{"ADMIN"};
    }
    if (a.authorize_url.empty()) {
      a.authorize_url = cloud ? "https://auth.atlassian.com/authorize"
                              : conn.base_url + "/rest/oauth2/latest/authorize";
    }
    if (a.token_url.empty()) {
      a.token_url = cloud ? "https://auth.atlassian.com/oauth/token"
                          : conn.base_url + "/rest/oauth2/latest/token";
    }
    if (a.redirect_uri.empty()) a.redirect_uri = "https://localhost/cakewalk-agent/oauth-callback";
    auto parsed = ParseUrl(a.redirect_uri);
    if (!parsed.ok())
      f.Fail("redirect_uri", "'" + a.redirect_uri + "' " + parsed.status().message());
  }
  cf.Merge(f.Finish());
  if (!cf.ok()) return std::nullopt;
  return a;
}

void ParsePasswordPolicy(JsonFields& cf, PasswordPolicy& p) {
  const Json::Value* v = cf.Object("password_policy");
  if (v == nullptr) return;
  JsonFields f(*v, cf.ChildPath("password_policy"));
  p.length = static_cast<int>(f.Int("length", p.length, 12, 128));
  p.lower = f.Bool("lower", p.lower);
  p.upper = f.Bool("upper", p.upper);
  p.digits = f.Bool("digits", p.digits);
  p.symbols = f.Bool("symbols", p.symbols);
  if (f.ok() && !(p.lower || p.upper || p.digits || p.symbols)) {
    f.Fail("lower", "at least one character class must be enabled");
  }
  cf.Merge(f.Finish());
}

void ParseConnections(JsonFields& root, Config& c, const std::filesystem::path& base_dir) {
  const Json::Value* arr = root.Array("connections", JsonFields::kRequired);
  if (arr == nullptr) return;
  std::set<std::string, std::less<>> names;
  for (Json::ArrayIndex i = 0; i < arr->size() && root.ok(); ++i) {
    const std::string key = "connections[" + std::to_string(i) + "]";
    JsonFields f((*arr)[i], root.ChildPath(key));
    ConnectionConfig conn;
    conn.name = f.String("name", JsonFields::kRequired);
    if (f.ok()) {
      if (Status s = ValidateName("connection name", conn.name); !s.ok()) {
        f.Fail("name", s.message());
      } else if (conn.name == kControlPlaneConnection) {
        f.Fail("name", "'control-plane' is reserved for the control plane's own secrets");
      } else if (!names.insert(conn.name).second) {
        f.Fail("name", "'" + conn.name + "' is used by another connection; names must be unique");
      }
    }
    const std::string type = f.String("type", JsonFields::kRequired);
    if (f.ok()) {
      if (type == "jira-datacenter") {
        conn.flavor = JiraFlavor::kDataCenter;
      } else if (type == "jira-cloud") {
        conn.flavor = JiraFlavor::kCloud;
      } else {
        f.Fail("type", "'" + type + "' is not one of: jira-datacenter, jira-cloud");
      }
    }
    conn.base_url = HttpsUrl(f, "base_url", JsonFields::kRequired, "Jira");
    conn.ca_file = OptionalPath(f, "ca_file", base_dir);
    conn.api_base_url = HttpsUrl(f, "api_base_url", JsonFields::kOptional, "the Jira API");
    conn.admin_api_url =
        HttpsUrl(f, "admin_api_url", JsonFields::kOptional, "the organization admin API");
    if (f.Has("nhi_patterns")) conn.nhi_patterns = f.StringArray("nhi_patterns");
    conn.request_timeout = Seconds(f, "request_timeout_seconds", conn.request_timeout, 5, 3600);
    if (f.ok()) conn.provisioning = ParseProvisioning(f, conn.flavor);
    if (f.ok()) conn.access_sync = ParseAccessSync(f, conn);
    if (f.ok()) ParsePasswordPolicy(f, conn.password_policy);
    if (f.ok() && !conn.provisioning && !conn.access_sync) {
      f.Fail("provisioning",
             "a connection needs a provisioning or an access_sync section (or both)");
    }
    if (f.ok() && conn.flavor == JiraFlavor::kDataCenter && f.Has("admin_api_url")) {
      f.Fail("admin_api_url", "is only used with Jira Cloud");
    }
    if (f.ok()) {
      if (conn.api_base_url.empty()) {
        const bool cloud_oauth = conn.flavor == JiraFlavor::kCloud && conn.access_sync &&
                                 conn.access_sync->auth == AccessSyncConfig::Auth::kOAuth2;
        // OAuth tokens work only through the gateway; {cloudId} is resolved at run time.
        conn.api_base_url =
            cloud_oauth ? "https://api.atlassian.com/ex/jira/{cloudId}" : conn.base_url;
      }
      if (conn.admin_api_url.empty() && conn.flavor == JiraFlavor::kCloud) {
        conn.admin_api_url = "https://api.atlassian.com";
      }
    }
    root.Merge(f.Finish());
    if (!root.ok()) return;
    c.connections.push_back(std::move(conn));
  }
}

}  // namespace

std::string_view FlavorName(JiraFlavor flavor) {
  return flavor == JiraFlavor::kCloud ? "jira-cloud" : "jira-datacenter";
}

bool JobsConfig::Allows(std::string_view type) const {
  for (const std::string& p : allowed_types) {
    if (p == "*" || p == type) return true;
    if (p.ends_with(".*") &&
        type.substr(0, p.size() - 1) == std::string_view(p).substr(0, p.size() - 1)) {
      return true;
    }
  }
  return false;
}

const ConnectionConfig* Config::FindConnection(std::string_view name) const {
  for (const auto& c : connections) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

ConfigEnvironment ConfigEnvironment::FromProcess() {
  ConfigEnvironment env;
  for (const char* name : {"https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"}) {
    if (const char* v = std::getenv(name)) env.vars[name] = v;
  }
  return env;
}

std::optional<std::string> ConfigEnvironment::Get(std::string_view name) const {
  auto it = vars.find(std::string(name));
  if (it == vars.end()) return std::nullopt;
  return it->second;
}

Status ValidateName(std::string_view what, std::string_view name) {
  if (name.empty() || name.size() > 64) {
    return InvalidArgument(std::string(what) + " must be 1 to 64 characters long");
  }
  const auto ok = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  };
  if (!std::all_of(name.begin(), name.end(), ok) || name.front() == '.' || name.front() == '-' ||
      name.front() == '_') {
    return InvalidArgument(std::string(what) + " '" + std::string(name) +
                           "' may use only letters, digits, '.', '_' and '-', and must start "
                           "with a letter or digit");
  }
  return Status::Ok();
}

Result<Config> ParseConfig(std::string_view text, const std::filesystem::path& file,
                           const ConfigEnvironment& env) {
  const std::filesystem::path abs = std::filesystem::absolute(file).lexically_normal();
  const std::string where = "configuration file " + abs.string();
  CW_ASSIGN_OR_RETURN(Json::Value root, ParseJson(text, where, kMaxConfigBytes));
  Config c;
  c.file = abs;
  const std::filesystem::path base_dir = abs.parent_path();
  JsonFields f(root, "$");
  if (auto sd = OptionalPath(f, "state_dir", base_dir)) c.state_dir = *sd;
  c.log_level = f.String("log_level", JsonFields::kOptional, c.log_level);
  if (f.ok() && c.log_level != "debug" && c.log_level != "info" && c.log_level != "notice" &&
      c.log_level != "warning" && c.log_level != "error") {
    f.Fail("log_level", "'" + c.log_level + "' is not one of: debug, info, notice, warning, error");
  }
  ParseControlPlane(f, c, base_dir, env);
  ParseToken(f, c, base_dir);
  ParseJobs(f, c);
  ParseRotation(f, c);
  ParseConnections(f, c, base_dir);
  if (Status s = f.Finish(); !s.ok()) return s.WithContext(where);
  return c;
}

Result<Config> LoadConfig(const std::filesystem::path& file, const ConfigEnvironment& env) {
  const std::string name = file.string();
  int fd = open(name.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) {
      return NotFound("configuration file " + name +
                      " does not exist; create it (see the README) or pass --config FILE");
    }
    return PermissionDenied("cannot read configuration file " + name + ": " + std::strerror(err));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return InvalidArgument("configuration file " + name + " is not a regular file");
  }
  if ((st.st_mode & S_IWOTH) != 0) {
    close(fd);
    return PermissionDenied("configuration file " + name +
                            " is writable by every user; run: chmod o-w " + name);
  }
  std::string text;
  char buf[8192];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > kMaxConfigBytes) break;
  }
  close(fd);
  return ParseConfig(text, file, env);
}

}  // namespace cakewalk::agent
