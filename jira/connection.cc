#include "jira/connection.h"

#include "base/encoding.h"
#include "jira/client_util.h"
#include "jira/cloud_client.h"
#include "jira/curl_transport.h"
#include "jira/dc_client.h"
#include "jira/errors.h"

namespace cakewalk::jira {
namespace {

constexpr std::string_view kCloudIdPlaceholder = "{cloudId}";

std::string NormalisedSite(std::string_view url) {
  std::string s = internal::Lower(url);
  while (!s.empty() && s.back() == '/') s.pop_back();
  return s;
}

// "https://api.atlassian.com/ex/jira/{cloudId}" -> "https://api.atlassian.com".
std::string GatewayRoot(const std::string& api_base_url) {
  const std::size_t ex = api_base_url.find("/ex/");
  if (ex != std::string::npos) return api_base_url.substr(0, ex);
  const std::size_t scheme = api_base_url.find("://");
  const std::size_t path = api_base_url.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  return path == std::string::npos ? api_base_url : api_base_url.substr(0, path);
}

}  // namespace

Connection::Connection(ConnectionSettings settings, Credentials& credentials)
    : settings_(std::move(settings)), credentials_(credentials) {}

Connection::~Connection() = default;

Result<std::unique_ptr<Connection>> Connection::Open(ConnectionSettings settings,
                                                     Credentials& credentials,
                                                     ConnectionOptions options) {
  CW_RETURN_IF_ERROR(ValidateSettings(settings));
  std::unique_ptr<Connection> c(new Connection(std::move(settings), credentials));
  const ConnectionSettings& s = c->settings_;
  c->runtime_ = Runtime::Default();
  if (options.clock != nullptr) c->runtime_.clock = options.clock;
  if (options.sleeper != nullptr) c->runtime_.sleeper = options.sleeper;
  if (options.random) c->runtime_.random = std::move(options.random);
  c->runtime_.retry = options.retry;
  c->oauth_hooks_ = std::move(options.oauth_hooks);
  if (options.transport) {
    c->transport_ = std::move(options.transport);
  } else {
    http::TransportOptions t;
    t.config_name = "connections[" + s.name + "]";
    if (s.ca_file) t.ca_file = s.ca_file->string();
    t.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(s.request_timeout);
    t.connect_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(s.connect_timeout);
    CW_ASSIGN_OR_RETURN(std::unique_ptr<http::Transport> transport,
                        http::CurlTransport::Create(std::move(t)));
    c->transport_ = std::move(transport);
  }
  CW_ASSIGN_OR_RETURN(c->state_, ConnectionState::Open(s.state_dir, s.name));
  c->skew_ = std::make_shared<SkewTracker>();
  c->site_ = std::make_unique<RestClient>(c->transport_, s.base_url, c->runtime_, c->skew_);
  return c;
}

RestClient& Connection::token_endpoint() {
  std::lock_guard lock(mu_);
  if (!token_endpoint_) {
    token_endpoint_ = std::make_unique<RestClient>(transport_, settings_.oauth.token_url, runtime_,
                                                   std::make_shared<SkewTracker>());
  }
  return *token_endpoint_;
}

Result<JiraClient*> Connection::Provisioning(std::stop_token) {
  std::lock_guard lock(mu_);
  if (provisioning_) return provisioning_.get();
  const ConnectionSettings& s = settings_;
  switch (s.provisioning) {
    case ProvisioningAuth::kNone:
      return JiraError(Code::kFailedPrecondition,
                       "connection " + s.name +
                           " has no provisioning credentials configured (no provisioning section)",
                       reason::kCredentialsMissing);
    case ProvisioningAuth::kPassword:
      session_ = std::make_unique<DcSessionAuth>(settings_, *site_, credentials_, *state_);
      provisioning_ = MakeDataCenterClient(*site_, *session_);
      break;
    case ProvisioningAuth::kApiToken: {
      provisioning_token_ = std::make_unique<SecretHeaderAuth>(
          credentials_, std::string(secret::kApiToken), SecretHeaderAuth::Scheme::kBasic,
          s.username, "the API token of " + s.username + " (connection " + s.name + ")",
          *runtime_.clock);
      OrgAdminAccess org;
      if (!s.admin_api_url.empty()) {
        admin_ = std::make_unique<RestClient>(transport_, s.admin_api_url, runtime_,
                                              std::make_shared<SkewTracker>());
        org_key_ = std::make_unique<SecretHeaderAuth>(
            credentials_, std::string(secret::kOrgApiKey), SecretHeaderAuth::Scheme::kBearer, "",
            "the organization API key of connection " + s.name, *runtime_.clock);
        org.api = admin_.get();
        org.auth = org_key_.get();
      }
      org.org_id = s.org_id;
      provisioning_ = MakeCloudClient(*site_, *provisioning_token_, org, s.name);
      break;
    }
  }
  return provisioning_.get();
}

Result<std::string> Connection::ResolveCloudId(std::stop_token stop) {
  // The site names its cloudId anonymously.
  std::optional<std::string> cloud_id;
  {
    RestCall call;
    call.path = {"_edge", "tenant_info"};
    auto reply = site_->Execute(call, nullptr, stop, "GET _edge/tenant_info");
    if (reply.ok() && reply->ok()) cloud_id = internal::OptString(reply->json, "cloudId");
  }
  // The grant must cover that site: accessible-resources lists the sites of the token. Its URLs
  // are compared with the configured site, never used.
  RestCall call;
  call.path = {"oauth", "token", "accessible-resources"};
  CW_ASSIGN_OR_RETURN(RestReply reply, internal::Expect2xx(*gateway_, call, oauth_auth_.get(), stop,
                                                           "GET oauth/token/accessible-resources"));
  if (!reply.json.isArray()) return JiraInternal("accessible-resources is not a list");
  const std::string site = NormalisedSite(settings_.base_url);
  std::vector<std::string> covered;
  for (const auto& r : reply.json) {
    auto id = internal::OptString(r, "id");
    auto url = internal::OptString(r, "url");
    if (!id || !url) continue;
    covered.push_back(*url);
    if (cloud_id ? *id == *cloud_id : NormalisedSite(*url) == site) {
      if (NormalisedSite(*url) != site) {
        return AuthFailed("the OAuth grant's resource " + *id + " is the site " + *url +
                          ", not the configured " + settings_.base_url);
      }
      return *id;
    }
  }
  std::string list;
  for (const auto& u : covered) list += (list.empty() ? "" : ", ") + u;
  return AuthFailed("the OAuth grant of connection " + settings_.name + " does not cover " +
                    settings_.base_url + " (it covers: " + (list.empty() ? "nothing" : list) +
                    "); authorize again with 'cakewalk-agent oauth authorize " + settings_.name +
                    "' and choose that site");
}

Result<JiraClient*> Connection::AccessSync(std::stop_token stop) {
  const ConnectionSettings& s = settings_;
  if (s.access_sync == AccessSyncAuth::kPassword) return Provisioning(stop);
  // Its own lock: resolving the cloudId makes network calls, which must not hold up
  // Provisioning().
  std::lock_guard sync_lock(sync_mu_);
  if (access_sync_) return access_sync_.get();
  const bool cloud = s.flavor == Flavor::kCloud;
  switch (s.access_sync) {
    case AccessSyncAuth::kNone:
      return JiraError(Code::kFailedPrecondition,
                       "connection " + s.name + " has no access_sync credentials configured",
                       reason::kCredentialsMissing);
    case AccessSyncAuth::kPassword:
      break;  // handled above
    case AccessSyncAuth::kPat:
      sync_token_ = std::make_unique<SecretHeaderAuth>(
          credentials_, std::string(secret::kPat), SecretHeaderAuth::Scheme::kBearer, "",
          "the personal access token of connection " + s.name, *runtime_.clock);
      access_sync_ = MakeDataCenterClient(*site_, *sync_token_);
      break;
    case AccessSyncAuth::kApiToken:
      sync_token_ = std::make_unique<SecretHeaderAuth>(
          credentials_, std::string(secret::kApiToken), SecretHeaderAuth::Scheme::kBasic,
          s.username, "the API token of " + s.username + " (connection " + s.name + ")",
          *runtime_.clock);
      access_sync_ = MakeCloudClient(*site_, *sync_token_, {}, s.name);
      break;
    case AccessSyncAuth::kOAuth2: {
      {
        std::lock_guard lock(mu_);
        EnsureOAuthLocked();
      }
      if (!cloud) {
        access_sync_ = MakeDataCenterClient(*site_, *oauth_auth_);
        break;
      }
      if (!gateway_) {
        gateway_ =
            std::make_unique<RestClient>(transport_, GatewayRoot(s.api_base_url), runtime_, skew_);
      }
      CW_ASSIGN_OR_RETURN(std::string cloud_id, ResolveCloudId(stop));
      std::string base = s.api_base_url;
      base.replace(base.find(kCloudIdPlaceholder), kCloudIdPlaceholder.size(), UrlEncode(cloud_id));
      api_gateway_ = std::make_unique<RestClient>(transport_, base, runtime_, skew_);
      access_sync_ = MakeCloudClient(*api_gateway_, *oauth_auth_, {}, s.name);
      break;
    }
  }
  return access_sync_.get();
}

Result<Connection::RestAccess> Connection::AccessSyncRest(std::stop_token stop) {
  CW_RETURN_IF_ERROR(AccessSync(stop).status());
  const ConnectionSettings& s = settings_;
  if (s.access_sync == AccessSyncAuth::kPassword) {
    std::lock_guard lock(mu_);
    if (session_) return RestAccess{site_.get(), session_.get()};
    return RestAccess{site_.get(), provisioning_token_.get()};
  }
  std::lock_guard sync_lock(sync_mu_);
  switch (s.access_sync) {
    case AccessSyncAuth::kPat:
    case AccessSyncAuth::kApiToken:
      return RestAccess{site_.get(), sync_token_.get()};
    case AccessSyncAuth::kOAuth2:
      if (s.flavor == Flavor::kCloud) return RestAccess{api_gateway_.get(), oauth_auth_.get()};
      return RestAccess{site_.get(), oauth_auth_.get()};
    default:
      break;
  }
  return JiraInternal("connection " + s.name + " has no access sync client");
}

void Connection::EnsureOAuthLocked() {
  if (!token_endpoint_) {
    token_endpoint_ = std::make_unique<RestClient>(transport_, settings_.oauth.token_url, runtime_,
                                                   std::make_shared<SkewTracker>());
  }
  if (!oauth_tokens_) {
    oauth_tokens_ =
        std::make_unique<OAuthTokens>(settings_, credentials_, *token_endpoint_, oauth_hooks_);
    oauth_auth_ = std::make_unique<OAuthAuthenticator>(*oauth_tokens_, settings_.name);
  }
}

void Connection::SeedOAuthAccessToken(SecretBytes access_token, std::chrono::seconds lifetime) {
  std::lock_guard lock(mu_);
  EnsureOAuthLocked();
  oauth_tokens_->Seed(std::move(access_token), lifetime);
}

Result<ServerInfo> Connection::Server(std::stop_token stop) {
  {
    std::lock_guard lock(mu_);
    if (server_) return *server_;
  }
  RestCall call;
  call.path = {"rest", "api", settings_.flavor == Flavor::kCloud ? "3" : "2", "serverInfo"};
  CW_ASSIGN_OR_RETURN(RestReply reply,
                      internal::Expect2xx(*site_, call, nullptr, stop, "GET serverInfo"));
  CW_ASSIGN_OR_RETURN(ServerInfo info, internal::ParseServerInfo(reply.json));
  std::lock_guard lock(mu_);
  server_ = info;
  return info;
}

std::optional<std::chrono::seconds> Connection::clock_skew() const { return skew_->skew(); }

std::string Connection::mfa_used() {
  std::lock_guard lock(mu_);
  return session_ && session_->used_totp() ? "totp" : "none";
}

Status Connection::ClearLoginStop() { return state_->ClearLoginStop(); }

}  // namespace cakewalk::jira
