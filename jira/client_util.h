// Shared pieces of the two JiraClient implementations (internal to jira/).
#pragma once

#include <json/json.h>

#include <optional>
#include <string>
#include <string_view>

#include "jira/client.h"
#include "jira/rest.h"

namespace cakewalk::jira::internal {

std::string Lower(std::string_view s);
bool SameName(std::string_view a, std::string_view b);              // case-insensitive
bool Contains(std::string_view haystack, std::string_view needle);  // case-insensitive

// A string member, or nullopt when absent, null or of another type.
std::optional<std::string> OptString(const Json::Value& v, const char* key);

// serverInfo.
Result<ServerInfo> ParseServerInfo(const Json::Value& j);

// A Jira user (DC: key/name; Cloud: accountId) with the expanded groups and applicationRoles.
Result<User> ParseUser(const Json::Value& j, Flavor flavor);

// mypermissions?permissions=ADMINISTER,SYSTEM_ADMIN.
Result<GlobalPermissions> ParsePermissions(const Json::Value& j);

// Runs a call and requires a 2xx answer.
Result<RestReply> Expect2xx(RestClient& client, const RestCall& call, Authenticator* auth,
                            std::stop_token stop, std::string_view what);

}  // namespace cakewalk::jira::internal
