// JiraClient for Jira Cloud (REST API 3) and, for deactivation, the Atlassian organization admin
// API.
//
// - Users are accountIds; a reference by e-mail is resolved with user/search (exact, case-
//   insensitive match on the visible address); Cloud has no user names.
// - Product access is membership of the product's groups (applicationrole: defaultGroups to
//   grant, every group of the role to revoke); Cloud has no /user/application.
// - Deactivation is the organization API's lifecycle disable (POST
//   {admin_api_url}/users/{accountId}/manage/lifecycle/disable, Bearer organization API key),
//   checked first against GET .../manage: an account the organization does not manage, or a key
//   without lifecycle.enablement, fails with a precise error instead of anything else.
// - Sites whose users come from an identity provider refuse group edits ("external user
//   management"): unsupported_by_jira_version with Jira's words.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "jira/client.h"
#include "jira/rest.h"

namespace cakewalk::jira {

struct OrgAdminAccess {
  RestClient* api = nullptr;      // base: admin_api_url
  Authenticator* auth = nullptr;  // Bearer organization API key
  std::optional<std::string> org_id;
};

// `api` is the site (API token) or the gateway with the cloudId (OAuth). `org` may be empty: then
// SetActive fails with credentials_missing / what is missing.
std::unique_ptr<JiraClient> MakeCloudClient(RestClient& api, Authenticator& auth,
                                            OrgAdminAccess org, std::string connection);

}  // namespace cakewalk::jira
