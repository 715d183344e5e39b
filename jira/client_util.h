// Shared pieces of the two JiraClient implementations (internal to jira/).
#pragma once

#include <json/json.h>

#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

// What both flavors do the same way, with REST API 2 (Data Center) or 3 (Cloud).
class RestJiraClient : public JiraClient {
 public:
  Flavor flavor() const override { return flavor_; }
  Result<ServerInfo> Server(std::stop_token stop) override;
  Result<User> Myself(std::stop_token stop) override;
  Result<GlobalPermissions> MyPermissions(std::stop_token stop) override;

 protected:
  // `anonymous_server_info`: serverInfo is read without credentials (Data Center).
  RestJiraClient(RestClient& api, Authenticator& auth, Flavor flavor, bool anonymous_server_info);

  // rest/api/<2|3>/<tail...>
  std::vector<std::string> Api(std::initializer_list<std::string> tail) const;
  // GET user?<query>&expand=groups,applicationRoles; nullopt on 404.
  Result<std::optional<User>> GetUser(std::vector<std::pair<std::string, std::string>> query,
                                      std::stop_token stop);
  // The `id_field` of every user whose visible e-mail is `email` (case-insensitive), from
  // user/search with `query` (the first 1000 matches at most).
  Result<std::vector<std::string>> SearchEmail(
      const std::string& email, std::vector<std::pair<std::string, std::string>> query,
      const char* id_field, std::stop_token stop);
  // ambiguous_user for `count` accounts sharing `email`; `hint` names the unambiguous reference.
  static Status Ambiguous(const std::string& email, std::size_t count, std::string_view hint);

  RestClient& api_;
  Authenticator& auth_;

 private:
  const Flavor flavor_;
  const bool anonymous_server_info_;
  std::mutex mu_;
  std::optional<ServerInfo> server_;
};

}  // namespace cakewalk::jira::internal
