#include "jira/settings.h"

namespace cakewalk::jira {
namespace {

bool IsHttpsUrl(std::string_view url) {
  return url.size() > 8 && url.substr(0, 8) == "https://" && url.back() != '/';
}

Status Bad(const ConnectionSettings& s, std::string_view problem) {
  return InvalidArgument("connection '" + s.name + "': " + std::string(problem));
}

}  // namespace

std::string_view FlavorWord(Flavor flavor) noexcept {
  return flavor == Flavor::kCloud ? "cloud" : "datacenter";
}

Status ValidateSettings(const ConnectionSettings& s) {
  if (s.name.empty()) return InvalidArgument("a Jira connection needs a name");
  if (!IsHttpsUrl(s.base_url)) {
    return Bad(s, "base_url must be an https:// URL without a trailing slash");
  }
  if (!s.api_base_url.empty() && !IsHttpsUrl(s.api_base_url)) {
    return Bad(s, "api_base_url must be an https:// URL without a trailing slash");
  }
  if (!s.admin_api_url.empty() && !IsHttpsUrl(s.admin_api_url)) {
    return Bad(s, "admin_api_url must be an https:// URL without a trailing slash");
  }
  const bool cloud = s.flavor == Flavor::kCloud;
  switch (s.provisioning) {
    case ProvisioningAuth::kNone:
      break;
    case ProvisioningAuth::kPassword:
      if (cloud) return Bad(s, "Jira Cloud does not accept passwords; use an API token");
      if (s.username.empty()) return Bad(s, "password login needs a user name");
      break;
    case ProvisioningAuth::kApiToken:
      if (!cloud) return Bad(s, "API tokens are for Jira Cloud; Data Center uses a password");
      if (s.username.empty()) return Bad(s, "an API token needs the account's e-mail address");
      break;
  }
  if (s.mfa_totp && s.provisioning != ProvisioningAuth::kPassword) {
    return Bad(s, "TOTP applies only to password logins");
  }
  switch (s.access_sync) {
    case AccessSyncAuth::kNone:
      break;
    case AccessSyncAuth::kOAuth2:
      if (s.oauth.client_id.empty()) return Bad(s, "OAuth 2.0 needs a client_id");
      if (!IsHttpsUrl(s.oauth.token_url) || !IsHttpsUrl(s.oauth.authorize_url)) {
        return Bad(s, "OAuth 2.0 needs https:// authorize_url and token_url");
      }
      if (s.oauth.redirect_uri.empty()) return Bad(s, "OAuth 2.0 needs a redirect_uri");
      if (cloud && s.api_base_url.find("{cloudId}") == std::string::npos) {
        return Bad(s, "on Jira Cloud OAuth calls go through a gateway URL with {cloudId}");
      }
      break;
    case AccessSyncAuth::kPat:
      if (cloud) return Bad(s, "personal access tokens are a Data Center feature");
      break;
    case AccessSyncAuth::kApiToken:
      if (!cloud) return Bad(s, "API tokens are a Jira Cloud feature");
      if (s.username.empty()) return Bad(s, "an API token needs the account's e-mail address");
      break;
    case AccessSyncAuth::kPassword:
      if (s.provisioning == ProvisioningAuth::kNone) {
        return Bad(s, "access sync reuses the provisioning credentials, which are not configured");
      }
      break;
  }
  return Status::Ok();
}

}  // namespace cakewalk::jira
