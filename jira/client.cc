#include "jira/client.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "jira/client_util.h"
#include "jira/errors.h"
#include "jira/pagination.h"

namespace cakewalk::jira {

bool User::InGroup(std::string_view name) const {
  return std::any_of(groups.begin(), groups.end(),
                     [&](const GroupRef& g) { return internal::SameName(g.name, name); });
}

bool User::HasProduct(std::string_view key) const {
  return std::find(products.begin(), products.end(), key) != products.end();
}

std::string UserRef::Describe() const {
  switch (kind) {
    case Kind::kUsername:
      return "username '" + value + "'";
    case Kind::kAccountId:
      return "account_id '" + value + "'";
    case Kind::kEmail:
      return "email '" + value + "'";
  }
  return "'" + value + "'";
}

namespace internal {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool SameName(std::string_view a, std::string_view b) { return Lower(a) == Lower(b); }

bool Contains(std::string_view haystack, std::string_view needle) {
  return Lower(haystack).find(Lower(needle)) != std::string::npos;
}

std::optional<std::string> OptString(const Json::Value& v, const char* key) {
  if (!v.isObject() || !v[key].isString()) return std::nullopt;
  return v[key].asString();
}

Result<ServerInfo> ParseServerInfo(const Json::Value& j) {
  if (!j.isObject() || !j["version"].isString()) {
    return JiraUnavailable("Jira's serverInfo has no version (is base_url a Jira?)");
  }
  ServerInfo info;
  info.version = j["version"].asString();
  info.deployment_type = OptString(j, "deploymentType").value_or("");
  info.flavor = Lower(info.deployment_type) == "cloud" ? Flavor::kCloud : Flavor::kDataCenter;
  const Json::Value& nums = j["versionNumbers"];
  if (nums.isArray()) {
    for (Json::ArrayIndex i = 0; i < nums.size() && i < 3; ++i) {
      if (nums[i].isInt()) info.numbers[i] = nums[i].asInt();
    }
  } else {
    int a = 0, b = 0, c = 0;
    if (std::sscanf(info.version.c_str(), "%d.%d.%d", &a, &b, &c) >= 2) info.numbers = {a, b, c};
  }
  return info;
}

Result<User> ParseUser(const Json::Value& j, Flavor flavor) {
  if (!j.isObject()) return JiraInternal("Jira answered a user that is not an object");
  User u;
  if (flavor == Flavor::kDataCenter) {
    auto key = OptString(j, "key");
    auto name = OptString(j, "name");
    if (!name) return JiraInternal("a Data Center user without a name");
    u.id = key.value_or(*name);
    u.username = name;
  } else {
    auto id = OptString(j, "accountId");
    if (!id) return JiraInternal("a Cloud user without an accountId");
    u.id = *id;
  }
  u.email = OptString(j, "emailAddress");
  if (u.email && u.email->empty()) u.email.reset();
  u.display_name = OptString(j, "displayName");
  u.active = !j["active"].isBool() || j["active"].asBool();
  u.deleted = j["deleted"].isBool() && j["deleted"].asBool();
  if (j["groups"].isObject() && j["groups"]["items"].isArray()) {
    for (const auto& g : j["groups"]["items"]) {
      auto name = OptString(g, "name");
      if (!name) continue;
      u.groups.push_back({*name, OptString(g, "groupId").value_or(*name)});
    }
  }
  if (j["applicationRoles"].isObject() && j["applicationRoles"]["items"].isArray()) {
    for (const auto& r : j["applicationRoles"]["items"]) {
      if (auto key = OptString(r, "key")) u.products.push_back(*key);
    }
  }
  std::sort(u.products.begin(), u.products.end());
  return u;
}

Result<GlobalPermissions> ParsePermissions(const Json::Value& j) {
  if (!j.isObject() || !j["permissions"].isObject()) {
    return JiraInternal("Jira's mypermissions answer has no permissions");
  }
  const Json::Value& perms = j["permissions"];
  auto have = [&](const char* key) {
    return perms[key].isObject() && perms[key]["havePermission"].isBool() &&
           perms[key]["havePermission"].asBool();
  };
  return GlobalPermissions{have("ADMINISTER"), have("SYSTEM_ADMIN")};
}

Result<RestReply> Expect2xx(RestClient& client, const RestCall& call, Authenticator* auth,
                            std::stop_token stop, std::string_view what) {
  CW_ASSIGN_OR_RETURN(RestReply reply, client.Execute(call, auth, stop, what));
  if (!reply.ok()) return UnexpectedReply(reply, what);
  return reply;
}

RestJiraClient::RestJiraClient(RestClient& api, Authenticator& auth, Flavor flavor,
                               bool anonymous_server_info)
    : api_(api), auth_(auth), flavor_(flavor), anonymous_server_info_(anonymous_server_info) {}

std::vector<std::string> RestJiraClient::Api(std::initializer_list<std::string> tail) const {
  std::vector<std::string> p = {"rest", "api", flavor_ == Flavor::kCloud ? "3" : "2"};
  p.insert(p.end(), tail);
  return p;
}

Result<ServerInfo> RestJiraClient::Server(std::stop_token stop) {
  {
    std::lock_guard lock(mu_);
    if (server_) return *server_;
  }
  RestCall call;
  call.path = Api({"serverInfo"});
  CW_ASSIGN_OR_RETURN(
      RestReply reply,
      Expect2xx(api_, call, anonymous_server_info_ ? nullptr : &auth_, stop, "GET serverInfo"));
  CW_ASSIGN_OR_RETURN(ServerInfo info, ParseServerInfo(reply.json));
  std::lock_guard lock(mu_);
  server_ = info;
  return info;
}

Result<User> RestJiraClient::Myself(std::stop_token stop) {
  RestCall call;
  call.path = Api({"myself"});
  call.query = {{"expand", "groups,applicationRoles"}};
  CW_ASSIGN_OR_RETURN(RestReply reply, Expect2xx(api_, call, &auth_, stop, "GET myself"));
  return ParseUser(reply.json, flavor_);
}

Result<GlobalPermissions> RestJiraClient::MyPermissions(std::stop_token stop) {
  RestCall call;
  call.path = Api({"mypermissions"});
  call.query = {{"permissions", "ADMINISTER,SYSTEM_ADMIN"}};
  CW_ASSIGN_OR_RETURN(RestReply reply, Expect2xx(api_, call, &auth_, stop, "GET mypermissions"));
  return ParsePermissions(reply.json);
}

Result<std::optional<User>> RestJiraClient::GetUser(
    std::vector<std::pair<std::string, std::string>> query, std::stop_token stop) {
  RestCall call;
  call.path = Api({"user"});
  call.query = std::move(query);
  call.query.emplace_back("expand", "groups,applicationRoles");
  CW_ASSIGN_OR_RETURN(RestReply reply, api_.Execute(call, &auth_, stop, "GET user"));
  if (reply.status == 404) return std::optional<User>();
  if (!reply.ok()) return UnexpectedReply(reply, "GET user");
  CW_ASSIGN_OR_RETURN(User u, ParseUser(reply.json, flavor_));
  return std::optional<User>(std::move(u));
}

Result<std::vector<std::string>> RestJiraClient::SearchEmail(
    const std::string& email, std::vector<std::pair<std::string, std::string>> query,
    const char* id_field, std::stop_token stop) {
  constexpr int kPage = 100;             // DC 10.x+ answers only the first 100 anyway
  constexpr std::int64_t kLimit = 1000;  // Cloud reaches the first 1000 matches only
  RestCall call;
  call.path = Api({"user", "search"});
  call.query = std::move(query);
  std::vector<std::string> ids;
  PageLimits limits;
  limits.page_size = kPage;
  limits.limit = kLimit;
  CW_RETURN_IF_ERROR(ForEachStartAtItem(
      api_, call, &auth_, limits, stop, "GET user/search", [&](const Json::Value& item) {
        auto mail = OptString(item, "emailAddress");
        auto id = OptString(item, id_field);
        if (mail && id && SameName(*mail, email) &&
            std::none_of(ids.begin(), ids.end(),
                         [&](const std::string& known) { return SameName(known, *id); })) {
          ids.push_back(*id);
        }
        return Result<bool>(true);
      }));
  return ids;
}

Status RestJiraClient::Ambiguous(const std::string& email, std::size_t count,
                                 std::string_view hint) {
  return JiraError(Code::kFailedPrecondition,
                   "the e-mail address " + email + " belongs to " + std::to_string(count) +
                       " Jira accounts; name one by " + std::string(hint),
                   reason::kAmbiguousUser);
}

}  // namespace internal
}  // namespace cakewalk::jira
