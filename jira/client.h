// JiraClient: what the jobs need from Jira, in domain terms, with one implementation per flavor
// (dc_client.cc: REST API 2; cloud_client.cc: REST API 3 plus the organization admin API). The
// jobs (jira/jobs.h) see only this interface.
//
// Identifiers: a Data Center user is its `name` (login) and `key` (stable id); a Cloud user is an
// `accountId`. User::id holds the key / accountId, User::username the DC name (none on Cloud).
#pragma once

#include <array>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "jira/settings.h"

namespace cakewalk::jira {

struct ServerInfo {
  Flavor flavor = Flavor::kDataCenter;
  std::string version;           // "10.3.4", "1001.0.0-SNAPSHOT"
  std::array<int, 3> numbers{};  // versionNumbers
  std::string deployment_type;   // "Server", "DataCenter", "Cloud"

  bool AtLeast(int major, int minor) const {
    return numbers[0] > major || (numbers[0] == major && numbers[1] >= minor);
  }
};

struct GroupRef {
  std::string name;
  std::string id;  // Cloud groupId; on Data Center the name
};

struct User {
  std::string id;                       // DC key, Cloud accountId
  std::optional<std::string> username;  // DC login name
  std::optional<std::string> email;     // may be hidden (Cloud privacy)
  std::optional<std::string> display_name;
  bool active = true;
  bool deleted = false;               // DC: only seen with includeDeleted
  std::vector<GroupRef> groups;       // direct memberships
  std::vector<std::string> products;  // application keys

  bool InGroup(std::string_view name) const;  // case-insensitive, as Jira compares
  bool HasProduct(std::string_view key) const;
};

struct UserRef {
  enum class Kind { kUsername, kAccountId, kEmail };
  Kind kind = Kind::kUsername;
  std::string value;
  std::string Describe() const;  // "username 'alice'"
};

struct NewUser {
  std::string username;  // Data Center
  std::string email;
  std::string display_name;
  std::vector<std::string> products;  // application keys granted at creation
};

struct GlobalPermissions {
  bool administer = false;
  bool system_admin = false;
};

class JiraClient {
 public:
  virtual ~JiraClient() = default;
  virtual Flavor flavor() const = 0;

  virtual Result<ServerInfo> Server(std::stop_token stop) = 0;
  // The authenticated account (confirms the credentials).
  virtual Result<User> Myself(std::stop_token stop) = 0;
  virtual Result<GlobalPermissions> MyPermissions(std::stop_token stop) = 0;

  // The user a reference names, with groups and products; nullopt when there is none. Several
  // matches fail with ambiguous_user. `include_deleted`: Data Center also finds deleted users
  // (User::deleted set).
  virtual Result<std::optional<User>> FindUser(const UserRef& ref, bool include_deleted,
                                               std::stop_token stop) = 0;
  // The same user again, fresh (groups and products included).
  virtual Result<User> Reload(const User& user, std::stop_token stop) = 0;
  virtual Result<User> CreateUser(const NewUser& user, std::stop_token stop) = 0;
  virtual Result<std::optional<GroupRef>> FindGroup(const std::string& name,
                                                    std::stop_token stop) = 0;

  // Each returns whether it changed anything (false: it was already so).
  virtual Result<bool> AddMember(const User& user, const GroupRef& group, std::stop_token stop) = 0;
  virtual Result<bool> RemoveMember(const User& user, const GroupRef& group,
                                    std::stop_token stop) = 0;
  virtual Result<bool> GrantProduct(const User& user, const std::string& product,
                                    std::stop_token stop) = 0;
  virtual Result<bool> RevokeProduct(const User& user, const std::string& product,
                                     std::stop_token stop) = 0;
  // Ends every session of the user (Data Center); unsupported_by_jira_version where impossible.
  virtual Status EndSessions(const User& user, std::stop_token stop) = 0;
  // Activates or deactivates by the flavor's real mechanism, or fails with
  // unsupported_by_jira_version; never does something else instead.
  virtual Result<bool> SetActive(const User& user, bool active, std::stop_token stop) = 0;
  virtual Result<bool> DeleteUser(const User& user, std::stop_token stop) = 0;
};

}  // namespace cakewalk::jira
