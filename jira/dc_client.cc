#include "jira/dc_client.h"

#include "jira/client_util.h"
#include "jira/errors.h"
#include "jira/pagination.h"

namespace cakewalk::jira {
namespace {

using internal::Contains;
using internal::Expect2xx;
using internal::ParseUser;

class DataCenterClient final : public internal::RestJiraClient {
 public:
  DataCenterClient(RestClient& site, Authenticator& auth)
      : RestJiraClient(site, auth, Flavor::kDataCenter, /*anonymous_server_info=*/true) {}

  Result<std::optional<User>> FindUser(const UserRef& ref, bool include_deleted,
                                       std::stop_token stop) override {
    switch (ref.kind) {
      case UserRef::Kind::kUsername:
        return GetBy("username", ref.value, include_deleted, stop);
      case UserRef::Kind::kAccountId:
        // Data Center's stable id is the user key.
        return GetBy("key", ref.value, include_deleted, stop);
      case UserRef::Kind::kEmail:
        return FindByEmail(ref.value, include_deleted, stop);
    }
    return InvalidParams("unknown kind of user reference");
  }

  Result<User> Reload(const User& user, std::stop_token stop) override {
    CW_ASSIGN_OR_RETURN(std::optional<User> fresh, GetBy("key", user.id, true, stop));
    if (!fresh) {
      return JiraError(Code::kNotFound, "user " + user.username.value_or(user.id) + " vanished",
                       reason::kUserNotFound);
    }
    return std::move(*fresh);
  }

  Result<User> CreateUser(const NewUser& user, std::stop_token stop) override {
    RestCall call;
    call.method = "POST";
    call.path = Api({"user"});
    Json::Value body(Json::objectValue);
    body["name"] = user.username;
    body["emailAddress"] = user.email;
    body["displayName"] = user.display_name;
    body["applicationKeys"] = Json::Value(Json::arrayValue);
    for (const auto& p : user.products) body["applicationKeys"].append(p);
    call.json = body;
    CW_ASSIGN_OR_RETURN(RestReply reply, Expect2xx(api_, call, &auth_, stop,
                                                   "POST user (create " + user.username + ")"));
    CW_ASSIGN_OR_RETURN(User created, ParseUser(reply.json, Flavor::kDataCenter));
    return Reload(created, stop);
  }

  Result<std::optional<GroupRef>> FindGroup(const std::string& name,
                                            std::stop_token stop) override {
    RestCall call;
    call.path = Api({"group", "member"});
    call.query = {{"groupname", name}, {"maxResults", "1"}};
    CW_ASSIGN_OR_RETURN(RestReply reply,
                        api_.Execute(call, &auth_, stop, "GET group/member (" + name + ")"));
    if (reply.status == 404) return std::optional<GroupRef>();
    if (!reply.ok()) return UnexpectedReply(reply, "GET group/member (" + name + ")");
    return std::optional<GroupRef>(GroupRef{name, name});
  }

  Result<bool> AddMember(const User& user, const GroupRef& group, std::stop_token stop) override {
    if (user.InGroup(group.name)) return false;
    RestCall call;
    call.method = "POST";
    call.path = Api({"group", "user"});
    call.query = {{"groupname", group.name}};
    Json::Value body(Json::objectValue);
    body["name"] = *user.username;
    call.json = body;
    const std::string what = "POST group/user (" + group.name + ")";
    CW_ASSIGN_OR_RETURN(RestReply reply, api_.Execute(call, &auth_, stop, what));
    if (reply.status == 201 || reply.status == 200) return true;
    if (reply.status == 400 && Contains(reply.ErrorText(), "already a member")) return false;
    if (reply.status == 404) return NotFoundReply(reply, what);
    return UnexpectedReply(reply, what);
  }

  Result<bool> RemoveMember(const User& user, const GroupRef& group,
                            std::stop_token stop) override {
    if (!user.InGroup(group.name)) return false;
    RestCall call;
    call.method = "DELETE";
    call.path = Api({"group", "user"});
    call.query = {{"groupname", group.name}, {"username", *user.username}};
    const std::string what = "DELETE group/user (" + group.name + ")";
    CW_ASSIGN_OR_RETURN(RestReply reply, api_.Execute(call, &auth_, stop, what));
    if (reply.ok()) return true;
    if (reply.status == 400 && Contains(reply.ErrorText(), "not a member")) return false;
    if (reply.status == 404) return NotFoundReply(reply, what);
    return UnexpectedReply(reply, what);
  }

  Result<bool> GrantProduct(const User& user, const std::string& product,
                            std::stop_token stop) override {
    if (user.HasProduct(product)) return false;
    RestCall call;
    call.method = "POST";
    call.path = Api({"user", "application"});
    call.query = {{"username", *user.username}, {"applicationKey", product}};
    CW_ASSIGN_OR_RETURN(RestReply reply, Expect2xx(api_, call, &auth_, stop,
                                                   "POST user/application (" + product + ")"));
    return true;
  }

  Result<bool> RevokeProduct(const User& user, const std::string& product,
                             std::stop_token stop) override {
    if (!user.HasProduct(product)) return false;
    RestCall call;
    call.method = "DELETE";
    call.path = Api({"user", "application"});
    call.query = {{"username", *user.username}, {"applicationKey", product}};
    CW_ASSIGN_OR_RETURN(RestReply reply, Expect2xx(api_, call, &auth_, stop,
                                                   "DELETE user/application (" + product + ")"));
    return true;
  }

  Status EndSessions(const User& user, std::stop_token stop) override {
    const std::string& name = *user.username;
    if (name.find('/') != std::string::npos || name.find('\\') != std::string::npos) {
      return Unsupported(
          "Jira cannot name the user '" + name +
          "' in DELETE /rest/api/2/user/session/{username}: its servlet container "
          "refuses encoded slashes and backslashes in paths; end the user's sessions "
          "in Jira's administration");
    }
    RestCall call;
    call.method = "DELETE";
    call.path = Api({"user", "session", name});
    const std::string what = "DELETE user/session";
    CW_ASSIGN_OR_RETURN(RestReply reply, api_.Execute(call, &auth_, stop, what));
    if (reply.ok()) return Status::Ok();
    if (reply.status == 404) return NotFoundReply(reply, what);
    return UnexpectedReply(reply, what);
  }

  Result<bool> SetActive(const User& user, bool active, std::stop_token stop) override {
    if (user.active == active) return false;
    RestCall call;
    call.method = "PUT";
    call.path = Api({"user"});
    call.query = {{"username", *user.username}};
    Json::Value body(Json::objectValue);
    body["active"] = active;
    call.json = body;
    const std::string what =
        std::string("PUT user {\"active\": ") + (active ? "true" : "false") + "}";
    CW_ASSIGN_OR_RETURN(RestReply reply, api_.Execute(call, &auth_, stop, what));
    CW_ASSIGN_OR_RETURN(ServerInfo info, Server(stop));
    const std::string cannot = "this Jira (" + info.version + ") does not " +
                               (active ? "activate" : "deactivate") +
                               " users through REST API 2 (PUT /rest/api/2/user";
    if (reply.status == 400 && Contains(reply.ErrorText(), "no.value.found.to.be.changed")) {
      return Unsupported(cannot +
                         " answered error.no.value.found.to.be.changed); do it in Jira's "
                         "user administration, or use remove_access or delete");
    }
    if (reply.status == 404) return NotFoundReply(reply, what);
    if (!reply.ok()) return UnexpectedReply(reply, what);
    CW_ASSIGN_OR_RETURN(User after, ParseUser(reply.json, Flavor::kDataCenter));
    if (after.active != active) {
      return Unsupported(cannot + " accepted the request but left the user unchanged)");
    }
    return true;
  }

  Result<bool> DeleteUser(const User& user, std::stop_token stop) override {
    if (user.deleted) return false;
    RestCall call;
    call.method = "DELETE";
    call.path = Api({"user"});
    call.query = {{"username", *user.username}};
    const std::string what = "DELETE user";
    CW_ASSIGN_OR_RETURN(RestReply reply, api_.Execute(call, &auth_, stop, what));
    if (reply.ok()) return true;
    if (reply.status == 404) return false;
    return UnexpectedReply(reply, what);
  }

 private:
  static Status NotFoundReply(const RestReply& reply, std::string_view what) {
    const std::string text = reply.ErrorText();
    const bool group = Contains(text, "group");
    return JiraError(Code::kNotFound,
                     "Jira answered HTTP 404 to " + std::string(what) + ": " + text,
                     group ? reason::kGroupNotFound : reason::kUserNotFound);
  }

  Result<std::optional<User>> GetBy(const char* param, const std::string& value,
                                    bool include_deleted, std::stop_token stop) {
    std::vector<std::pair<std::string, std::string>> query = {{param, value}};
    if (include_deleted) query.emplace_back("includeDeleted", "true");
    return GetUser(std::move(query), stop);
  }

  // user/search matches a prefix of the name, the e-mail or the display name: the exact e-mail
  // is picked out of the answers.
  Result<std::optional<User>> FindByEmail(const std::string& email, bool include_deleted,
                                          std::stop_token stop) {
    CW_ASSIGN_OR_RETURN(
        std::vector<std::string> names,
        SearchEmail(email,
                    {{"username", email}, {"includeActive", "true"}, {"includeInactive", "true"}},
                    "name", stop));
    if (names.empty()) return std::optional<User>();
    if (names.size() > 1) return Ambiguous(email, names.size(), "username");
    return GetBy("username", names.front(), include_deleted, stop);
  }
};

}  // namespace

DcUserListing ChooseDcUserListing(const ServerInfo& info) {
  if (info.AtLeast(10, 3)) return DcUserListing::kUserList;
  if (info.AtLeast(10, 0)) return DcUserListing::kGroupMembers;
  return DcUserListing::kSearchAll;
}

std::unique_ptr<JiraClient> MakeDataCenterClient(RestClient& site, Authenticator& auth) {
  return std::make_unique<DataCenterClient>(site, auth);
}

}  // namespace cakewalk::jira
