#include "jira/cloud_client.h"

#include "jira/client_util.h"
#include "jira/credentials.h"
#include "jira/errors.h"
#include "jira/pagination.h"

namespace cakewalk::jira {
namespace {

using internal::Contains;
using internal::Expect2xx;
using internal::OptString;
using internal::ParseUser;
using internal::SameName;

// The organization's user list: 100 per page (its maximum), at most 50,000 users scanned.
constexpr int kOrgPage = 100;
constexpr int kOrgMaxPages = 500;

class CloudClient final : public internal::RestJiraClient {
 public:
  CloudClient(RestClient& api, Authenticator& auth, OrgAdminAccess org, std::string connection)
      : RestJiraClient(api, auth, Flavor::kCloud, /*anonymous_server_info=*/false),
        org_(std::move(org)),
        connection_(std::move(connection)) {}

  Result<std::optional<User>> FindUser(const UserRef& ref, bool, std::stop_token stop) override {
    switch (ref.kind) {
      case UserRef::Kind::kUsername:
        return InvalidParams("Jira Cloud has no user names: name the user by account_id or email");
      case UserRef::Kind::kAccountId:
        return GetUser({{"accountId", ref.value}}, stop);
      case UserRef::Kind::kEmail:
        return FindByEmail(ref.value, stop);
    }
    return InvalidParams("unknown kind of user reference");
  }

  Result<User> Reload(const User& user, std::stop_token stop) override {
    CW_ASSIGN_OR_RETURN(std::optional<User> fresh, GetUser({{"accountId", user.id}}, stop));
    if (!fresh) {
      return JiraError(Code::kNotFound, "user " + user.id + " vanished", reason::kUserNotFound);
    }
    return std::move(*fresh);
  }

  Result<User> CreateUser(const NewUser& user, std::stop_token stop) override {
    RestCall call;
    call.method = "POST";
    call.path = Api({"user"});
    Json::Value body(Json::objectValue);
    body["emailAddress"] = user.email;
    body["displayName"] = user.display_name;
    body["products"] = Json::Value(Json::arrayValue);
    for (const auto& p : user.products) body["products"].append(p);
    call.json = body;
    CW_ASSIGN_OR_RETURN(RestReply reply, Expect2xx(api_, call, &auth_, stop, "POST user"));
    CW_ASSIGN_OR_RETURN(User created, ParseUser(reply.json, Flavor::kCloud));
    return Reload(created, stop);
  }

  Result<std::optional<GroupRef>> FindGroup(const std::string& name,
                                            std::stop_token stop) override {
    RestCall call;
    call.path = Api({"group", "bulk"});
    call.query = {{"groupName", name}};
    std::optional<GroupRef> found;
    PageLimits limits;
    limits.page_size = 50;
    limits.max_pages = 20;
    CW_RETURN_IF_ERROR(ForEachPageBeanItem(api_, call, &auth_, limits, stop, "GET group/bulk",
                                           [&](const Json::Value& item) -> Result<bool> {
                                             auto n = OptString(item, "name");
                                             auto id = OptString(item, "groupId");
                                             if (n && id && SameName(*n, name)) {
                                               found = GroupRef{*n, *id};
                                               return false;
                                             }
                                             return true;
                                           }));
    return found;
  }

  Result<bool> AddMember(const User& user, const GroupRef& group, std::stop_token stop) override {
    if (user.InGroup(group.name)) return false;
    RestCall call;
    call.method = "POST";
    call.path = Api({"group", "user"});
    call.query = {{"groupId", group.id}};
    Json::Value body(Json::objectValue);
    body["accountId"] = user.id;
    call.json = body;
    const std::string what = "POST group/user (" + group.name + ")";
    CW_ASSIGN_OR_RETURN(RestReply reply, api_.Execute(call, &auth_, stop, what));
    if (reply.status == 201 || reply.status == 200) return true;
    if (reply.status == 400 && Contains(reply.ErrorText(), "already a member")) return false;
    return GroupEditFailure(reply, what);
  }

  Result<bool> RemoveMember(const User& user, const GroupRef& group,
                            std::stop_token stop) override {
    if (!user.InGroup(group.name)) return false;
    RestCall call;
    call.method = "DELETE";
    call.path = Api({"group", "user"});
    call.query = {{"groupId", group.id}, {"accountId", user.id}};
    const std::string what = "DELETE group/user (" + group.name + ")";
    CW_ASSIGN_OR_RETURN(RestReply reply, api_.Execute(call, &auth_, stop, what));
    if (reply.ok()) return true;
    if (reply.status == 400 && Contains(reply.ErrorText(), "not a member")) return false;
    return GroupEditFailure(reply, what);
  }

  Result<bool> GrantProduct(const User& user, const std::string& product,
                            std::stop_token stop) override {
    if (user.HasProduct(product)) return false;
    CW_ASSIGN_OR_RETURN(Role role, GetRole(product, stop));
    if (role.default_groups.empty()) {
      return Unsupported("product " + product + " has no default access group to add users to");
    }
    bool changed = false;
    for (const GroupRef& g : role.default_groups) {
      CW_ASSIGN_OR_RETURN(bool added, AddMember(user, g, stop));
      changed = changed || added;
    }
    return changed;
  }

  Result<bool> RevokeProduct(const User& user, const std::string& product,
                             std::stop_token stop) override {
    if (!user.HasProduct(product)) return false;
    CW_ASSIGN_OR_RETURN(Role role, GetRole(product, stop));
    bool changed = false;
    for (const GroupRef& g : role.groups) {
      CW_ASSIGN_OR_RETURN(bool removed, RemoveMember(user, g, stop));
      changed = changed || removed;
    }
    return changed;
  }

  Status EndSessions(const User&, std::stop_token) override {
    return Unsupported("Jira Cloud has no REST call that ends a user's sessions");
  }

  Result<bool> SetActive(const User& user, bool active, std::stop_token stop) override {
    if (user.active == active) return false;
    if (org_.api == nullptr || org_.auth == nullptr) {
      return JiraError(Code::kFailedPrecondition,
                       "deactivating a Jira Cloud user needs the organization admin API: " +
                           MissingSecret(connection_, secret::kOrgApiKey).message(),
                       reason::kCredentialsMissing);
    }
    if (!org_.org_id || org_.org_id->empty()) {
      return JiraError(Code::kFailedPrecondition,
                       "deactivating a Jira Cloud user needs provisioning.org_id for connection " +
                           connection_ + " in the agent's configuration",
                       reason::kCredentialsMissing);
    }
    const std::string lifecycle = "lifecycle.enablement";
    RestCall check;
    check.path = {"users", user.id, "manage"};
    CW_ASSIGN_OR_RETURN(RestReply can, Expect2xx(*org_.api, check, org_.auth, stop,
                                                 "GET organization users/{id}/manage"));
    const Json::Value& p = can.json.isObject() ? can.json[lifecycle] : Json::Value::nullSingleton();
    const bool allowed = p.isObject() && p["allowed"].isBool() && p["allowed"].asBool();
    if (!allowed) {
      const std::string why =
          p.isObject() && p["reason"].isObject() && p["reason"]["key"].isString()
              ? p["reason"]["key"].asString()
              : "";
      if (why == "account.not.managed") {
        return Unsupported("the Atlassian account " + user.id +
                           " is not managed by the organization (no verified domain), so the "
                           "organization API cannot " +
                           (active ? "activate" : "deactivate") +
                           " it; use remove_access or delete");
      }
      return NotAdmin("the organization API key may not change the lifecycle of " + user.id + " (" +
                      (why.empty() ? "lifecycle.enablement not allowed" : why) +
                      "); create a key with user management rights (without scopes)");
    }
    RestCall call;
    call.method = "POST";
    call.path = {"users", user.id, "manage", "lifecycle", active ? "enable" : "disable"};
    CW_ASSIGN_OR_RETURN(RestReply done, Expect2xx(*org_.api, call, org_.auth, stop,
                                                  std::string("POST organization lifecycle/") +
                                                      (active ? "enable" : "disable")));
    return true;
  }

  Result<bool> DeleteUser(const User& user, std::stop_token stop) override {
    RestCall call;
    call.method = "DELETE";
    call.path = Api({"user"});
    call.query = {{"accountId", user.id}};
    CW_ASSIGN_OR_RETURN(RestReply reply, api_.Execute(call, &auth_, stop, "DELETE user"));
    if (reply.ok()) return true;
    if (reply.status == 404) return false;  // not (or no longer) on the site
    return UnexpectedReply(reply, "DELETE user");
  }

 private:
  struct Role {
    std::vector<GroupRef> groups;
    std::vector<GroupRef> default_groups;
  };

  static Status GroupEditFailure(const RestReply& reply, std::string_view what) {
    if (reply.status == 404) {
      const bool group = Contains(reply.ErrorText(), "group");
      return JiraError(Code::kNotFound,
                       "Jira answered HTTP 404 to " + std::string(what) + ": " + reply.ErrorText(),
                       group ? reason::kGroupNotFound : reason::kUserNotFound);
    }
    return UnexpectedReply(reply, what);
  }

  Result<Role> GetRole(const std::string& key, std::stop_token stop) {
    RestCall call;
    call.path = Api({"applicationrole", key});
    const std::string what = "GET applicationrole/" + key;
    CW_ASSIGN_OR_RETURN(RestReply reply, api_.Execute(call, &auth_, stop, what));
    if (reply.status == 404) {
      return InvalidParams("Jira Cloud has no product '" + key + "'");
    }
    if (!reply.ok()) return UnexpectedReply(reply, what);
    Role role;
    auto read = [&](const char* details, const char* names, std::vector<GroupRef>& out) -> Status {
      if (reply.json[details].isArray()) {
        for (const auto& g : reply.json[details]) {
          auto n = OptString(g, "name");
          auto id = OptString(g, "groupId");
          if (n && id) out.push_back({*n, *id});
        }
        return Status::Ok();
      }
      // Older answers name the groups only: look each one up.
      if (reply.json[names].isArray()) {
        for (const auto& g : reply.json[names]) {
          if (!g.isString()) continue;
          CW_ASSIGN_OR_RETURN(std::optional<GroupRef> ref, FindGroup(g.asString(), stop));
          if (ref) out.push_back(*ref);
        }
      }
      return Status::Ok();
    };
    CW_RETURN_IF_ERROR(read("groupDetails", "groups", role.groups));
    CW_RETURN_IF_ERROR(read("defaultGroupsDetails", "defaultGroups", role.default_groups));
    return role;
  }

  Result<std::optional<User>> FindByEmail(const std::string& email, std::stop_token stop) {
    CW_ASSIGN_OR_RETURN(std::vector<std::string> ids,
                        SearchEmail(email, {{"query", email}}, "accountId", stop));
    if (ids.empty()) CW_RETURN_IF_ERROR(FindInOrganization(email, ids, stop));
    if (ids.empty()) return std::optional<User>();
    if (ids.size() > 1) return Ambiguous(email, ids.size(), "account_id");
    return GetUser({{"accountId", ids.front()}}, stop);
  }

  // user/search lists active users only: an inactive (deactivated) account is found by e-mail
  // through the organization's user list, when the organization API is configured. Its cursor
  // comes from links.next; that URL itself is never followed.
  Status FindInOrganization(const std::string& email, std::vector<std::string>& ids,
                            std::stop_token stop) {
    if (org_.api == nullptr || org_.auth == nullptr || !org_.org_id || org_.org_id->empty()) {
      return Status::Ok();
    }
    RestCall call;
    call.path = {"admin", "v1", "orgs", *org_.org_id, "users"};
    call.query = {{"limit", std::to_string(kOrgPage)}};
    Status scanned = ForEachCursorItem(
        *org_.api, call, org_.auth, "data", "cursor",
        [](const Json::Value& page) -> std::optional<std::string> {
          if (!page["links"].isObject() || !page["links"]["next"].isString()) return std::nullopt;
          return QueryParameter(page["links"]["next"].asString(), "cursor");
        },
        kOrgMaxPages, stop, "GET organization users",
        [&](const Json::Value& item) {
          auto mail = OptString(item, "email");
          auto id = OptString(item, "account_id");
          if (mail && id && SameName(*mail, email) &&
              std::find(ids.begin(), ids.end(), *id) == ids.end()) {
            ids.push_back(*id);
          }
          return Result<bool>(true);
        });
    // A missing or refused organization key must not stop provisioning: the look-up then only
    // knows the active users. Transient failures and stops are reported (a retry may find it).
    const std::string& why = scanned.reason();
    if (scanned.ok() || why == reason::kStopped || why == reason::kRateLimited ||
        why == reason::kJiraUnavailable || why == reason::kTokenUnavailable) {
      return scanned;
    }
    return Status::Ok();
  }

  OrgAdminAccess org_;
  const std::string connection_;
};

}  // namespace

std::unique_ptr<JiraClient> MakeCloudClient(RestClient& api, Authenticator& auth,
                                            OrgAdminAccess org, std::string connection) {
  return std::make_unique<CloudClient>(api, auth, std::move(org), std::move(connection));
}

}  // namespace cakewalk::jira
