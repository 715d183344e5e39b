// JiraClient for Jira Data Center (REST API 2).
//
// Per-version behaviour, from serverInfo's versionNumbers:
// - deactivation: PUT /rest/api/2/user {"active": false}; where the server answers
//   "error.no.value.found.to.be.changed" (older versions) or ignores the field, the job fails
//   with unsupported_by_jira_version — the outcome is checked, never assumed;
// - user search: 9.x pages through every match, 10.x+ returns only the first 100 (enumeration is
//   access sync's business: 10.3+/11 use /user/list);
// - logins: see auth.h (Jira 11 refuses /rest/auth/1/session).
// Path segments are percent-encoded; Jira's servlet container refuses encoded slashes and
// backslashes in paths, so a user name containing one cannot be named in DELETE
// /user/session/{username}: EndSessions reports that as unsupported_by_jira_version.
#pragma once

#include <memory>

#include "jira/client.h"
#include "jira/rest.h"

namespace cakewalk::jira {

// How a Data Center of `info`'s version lists every user (access sync's enumeration):
//   kUserList      10.3 LTS and 11.x: GET /rest/api/2/user/list, cursor pages (nextCursor);
//   kGroupMembers  10.0-10.2: user/search stops at 100 results, so users come from the members of
//                  every group (group/member PageBeans, <= 50 per page);
//   kSearchAll     9.x and older: GET /rest/api/2/user/search?username=. in pages of 1000.
enum class DcUserListing { kUserList, kGroupMembers, kSearchAll };
DcUserListing ChooseDcUserListing(const ServerInfo& info);

// `site` is the Data Center base URL; `auth` the credentials to act with. Both must outlive the
// client.
std::unique_ptr<JiraClient> MakeDataCenterClient(RestClient& site, Authenticator& auth);

}  // namespace cakewalk::jira
