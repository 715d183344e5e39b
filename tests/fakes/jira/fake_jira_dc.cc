// FakeJira: the Jira Data Center routes (REST API 2, auth/1/session, tsv 2SV login, PATs,
// application links, the OAuth 2.0 provider).
#include <openssl/crypto.h>

#include <algorithm>

#include "base/encoding.h"
#include "tests/fakes/jira/fake_jira_impl.h"

namespace cakewalk::testing {

using jira_fake::ToLower;

namespace {

using Segs = std::vector<std::string>;

// What Jersey answers for a REST path no resource serves.
HttpResponse NoResource(const std::string& url) {
  Json::Value body;
  body["message"] = "null for uri: " + url;
  body["status-code"] = 404;
  return FakeJira::Impl::JsonResponse(404, body);
}

bool CodeEquals(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string StripQuotes(std::string s) {
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') return s.substr(1, s.size() - 2);
  return s;
}

std::vector<std::string> SplitComma(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    const std::size_t comma = s.find(',', start);
    std::string part =
        s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!part.empty()) out.push_back(part);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

constexpr std::string_view kReadOnlyDirectory = "Corporate LDAP";

}  // namespace

// ---- Rendering ----------------------------------------------------------------------------------

Json::Value FakeJira::Impl::AvatarUrls(const std::string& base, const std::string& id) const {
  Json::Value a(Json::objectValue);
  for (const char* size : {"16x16", "24x24", "32x32", "48x48"}) {
    a[size] = base + "/secure/useravatar?size=" + size + "&ownerId=" + UrlEncode(id);
  }
  return a;
}

Json::Value FakeJira::Impl::DcUserJson(const Ctx& ctx, UserIndex u, bool full, bool expand_groups,
                                       bool expand_roles) const {
  const UserRecord r = dir.User(u);
  Json::Value j(Json::objectValue);
  j["self"] = Url(ctx, "/user", {{"username", r.name}});
  j["key"] = r.key;
  j["name"] = r.name;
  j["emailAddress"] = r.email.value_or("");
  j["avatarUrls"] = AvatarUrls(ctx.base, r.key);
  j["displayName"] = r.display_name;
  j["active"] = r.active;
  j["timeZone"] = "Europe/Berlin";
  if (!full) return j;
  j["deleted"] = r.deleted;
  j["locale"] = "en_US";
  if (r.last_login) j["lastLoginTime"] = JiraTime(*r.last_login);
  const auto groups = dir.GroupsOf(u);
  Json::Value g(Json::objectValue);
  g["size"] = static_cast<Json::UInt64>(groups.size());
  g["items"] = Json::Value(Json::arrayValue);
  if (expand_groups) {
    for (GroupIndex gi : groups) {
      Json::Value item;
      item["name"] = dir.group(gi).name;
      item["self"] = Url(ctx, "/group", {{"groupname", dir.group(gi).name}});
      g["items"].append(item);
    }
  }
  j["groups"] = g;
  const auto products = dir.ProductsOf(u);
  Json::Value roles(Json::objectValue);
  roles["size"] = static_cast<Json::UInt64>(products.size());
  roles["items"] = Json::Value(Json::arrayValue);
  if (expand_roles) {
    for (const auto& key : products) {
      Json::Value item;
      item["key"] = key;
      item["name"] = dir.FindRole(key)->name;
      roles["items"].append(item);
    }
  }
  j["applicationRoles"] = roles;
  j["expand"] = "groups,applicationRoles";
  return j;
}

Json::Value FakeJira::Impl::PermissionJson(const jira_fake::GlobalPermissionInfo& p,
                                           bool have) const {
  Json::Value j;
  j["id"] = std::string(p.id);
  j["key"] = std::string(p.key);
  j["name"] = std::string(p.name);
  j["type"] = "GLOBAL";
  j["description"] = std::string(p.description);
  j["havePermission"] = have;
  return j;
}

Json::Value FakeJira::Impl::ApplicationRoleJson(const Ctx& ctx, const AppRole& role) const {
  Json::Value j;
  j["key"] = role.key;
  j["name"] = role.name;
  j["groups"] = Json::Value(Json::arrayValue);
  j["defaultGroups"] = Json::Value(Json::arrayValue);
  for (GroupIndex g : role.groups) j["groups"].append(dir.group(g).name);
  for (GroupIndex g : role.default_groups) j["defaultGroups"].append(dir.group(g).name);
  if (!IsDc()) {
    j["groupDetails"] = Json::Value(Json::arrayValue);
    j["defaultGroupsDetails"] = Json::Value(Json::arrayValue);
    auto detail = [&](GroupIndex g) {
      Json::Value d;
      d["groupId"] = dir.group(g).id;
      d["name"] = dir.group(g).name;
      d["self"] = Url(ctx, "/group", {{"groupId", dir.group(g).id}});
      return d;
    };
    for (GroupIndex g : role.groups) j["groupDetails"].append(detail(g));
    for (GroupIndex g : role.default_groups) j["defaultGroupsDetails"].append(detail(g));
  }
  const std::uint64_t users = dir.RoleUserCount(role);
  auto seats = opt.seat_limits.find(role.key);
  const bool unlimited = seats == opt.seat_limits.end();
  j["selectedByDefault"] = role.selected_by_default;
  j["defined"] = true;
  j["numberOfSeats"] = unlimited ? -1 : seats->second;
  j["remainingSeats"] = unlimited ? -1
                                  : static_cast<Json::Int64>(std::max<std::int64_t>(
                                        0, seats->second - static_cast<std::int64_t>(users)));
  j["userCount"] = static_cast<Json::UInt64>(users);
  j["userCountDescription"] = std::to_string(users) + (users == 1 ? " user" : " users");
  j["hasUnlimitedSeats"] = unlimited;
  j["platform"] = role.platform;
  return j;
}

std::string FakeJira::Impl::RoleEtag(const std::vector<const AppRole*>& roles) const {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const AppRole* r : roles) {
    for (char c : r->key) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
    h = (h ^ r->version) * 0x100000001b3ull;
  }
  return "\"" + std::to_string(h % 100000000000ull) + "\"";
}

// ---- Routing ------------------------------------------------------------------------------------

HttpResponse FakeJira::Impl::RouteDc(Ctx& ctx) {
  const Segs& s = ctx.segs;
  const std::string& m = ctx.req.method;
  std::string url = ctx.base + "/rest";
  for (const auto& seg : s) url += "/" + seg;
  auto method = [&](MethodHandlers handlers) { return ByMethod(m, handlers); };

  if (s.size() >= 2 && s[0] == "api" && (s[1] == "2" || s[1] == "latest")) {
    const Segs a(s.begin() + 2, s.end());
    if (PathIs(a, {"serverInfo"})) return method({{"GET", [&] { return DcServerInfo(ctx); }}});
    if (PathIs(a, {"myself"})) return method({{"GET", [&] { return DcMyself(ctx); }}});
    if (PathIs(a, {"myself", "password"})) {
      return method({{"PUT", [&] { return DcChangeMyPassword(ctx); }}});
    }
    if (PathIs(a, {"password", "policy"})) {
      return method({{"GET", [&] { return DcPasswordPolicy(ctx); }}});
    }
    if (PathIs(a, {"mypermissions"}))
      return method({{"GET", [&] { return DcMyPermissions(ctx); }}});
    if (PathIs(a, {"user"})) {
      return method({{"GET", [&] { return DcGetUser(ctx); }},
                     {"POST", [&] { return DcCreateUser(ctx); }},
                     {"PUT", [&] { return DcUpdateUser(ctx); }},
                     {"DELETE", [&] { return DcDeleteUser(ctx); }}});
    }
    if (PathIs(a, {"user", "search"})) return method({{"GET", [&] { return DcUserSearch(ctx); }}});
    if (PathIs(a, {"user", "list"}) && VersionAtLeast(10, 3)) {
      return method({{"GET", [&] { return DcUserList(ctx); }}});
    }
    if (PathIs(a, {"user", "session", "*"})) {
      return method({{"DELETE", [&] { return DcKillSessions(ctx, a[2]); }}});
    }
    if (PathIs(a, {"user", "application"})) {
      return method({{"POST", [&] { return DcUserApplication(ctx, true); }},
                     {"DELETE", [&] { return DcUserApplication(ctx, false); }}});
    }
    if (PathIs(a, {"group", "member"}))
      return method({{"GET", [&] { return DcGroupMembers(ctx); }}});
    if (PathIs(a, {"group", "user"})) {
      return method({{"POST", [&] { return DcGroupUser(ctx, true); }},
                     {"DELETE", [&] { return DcGroupUser(ctx, false); }}});
    }
    if (PathIs(a, {"group"})) {
      return method({{"POST", [&] { return DcGroupCreateDelete(ctx, true); }},
                     {"DELETE", [&] { return DcGroupCreateDelete(ctx, false); }}});
    }
    if (PathIs(a, {"groups", "picker"}))
      return method({{"GET", [&] { return DcGroupsPicker(ctx); }}});
    if (PathIs(a, {"applicationrole"})) {
      return method({{"GET", [&] { return DcApplicationRoles(ctx, nullptr); }},
                     {"PUT", [&] { return DcApplicationRoles(ctx, nullptr); }}});
    }
    if (PathIs(a, {"applicationrole", "*"})) {
      return method({{"GET", [&] { return DcApplicationRoles(ctx, &a[1]); }},
                     {"PUT", [&] { return DcApplicationRoles(ctx, &a[1]); }}});
    }
    return NoResource(url);
  }
  if (PathIs(s, {"auth", "1", "session"})) {
    return method({{"GET", [&] { return DcAuthSession(ctx); }},
                   {"POST", [&] { return DcAuthSession(ctx); }},
                   {"DELETE", [&] { return DcAuthSession(ctx); }}});
  }
  if (two_step_login_ && s.size() >= 3 && s[0] == "tsv" && (s[1] == "1.0" || s[1] == "latest")) {
    const Segs t(s.begin() + 2, s.end());
    if (PathIs(t, {"authenticate"}))
      return method({{"POST", [&] { return DcTsvAuthenticate(ctx); }}});
    if (PathIs(t, {"authenticate", "totp-code"})) {
      return method({{"POST", [&] { return DcTsvTotpCode(ctx); }}});
    }
    if (PathIs(t, {"status"})) return method({{"GET", [&] { return DcTsvStatus(ctx); }}});
    return NoResource(url);
  }
  if (PathIs(s, {"pat", "latest", "tokens"})) {
    return method({{"GET", [&] { return DcPats(ctx); }}, {"POST", [&] { return DcPats(ctx); }}});
  }
  if (PathIs(s, {"pat", "latest", "tokens", "search"})) {
    return method({{"POST", [&] { return DcPatSearch(ctx); }}});
  }
  if (PathIs(s, {"pat", "latest", "tokens", "*"})) {
    return method({{"DELETE", [&] { return DcPatDelete(ctx, s[3]); }}});
  }
  if (PathIs(s, {"applinks", "latest", "listApplicationlinks"}) ||
      PathIs(s, {"applinks", "3.0", "listApplicationlinks"})) {
    return method({{"GET", [&] { return DcApplicationLinks(ctx); }}});
  }
  if (PathIs(s, {"oauth2", "latest", "client"})) {
    return method({{"GET", [&] { return DcOAuthClients(ctx); }}});
  }
  if (PathIs(s, {"oauth2", "latest", "authorize"})) {
    return method({{"GET", [&] { return DcOAuthAuthorize(ctx); }}});
  }
  if (PathIs(s, {"oauth2", "latest", "token"})) {
    return method({{"POST", [&] { return DcOAuthToken(ctx); }}});
  }
  return NoResource(url);
}

// ---- Server, self, permissions ------------------------------------------------------------------

HttpResponse FakeJira::Impl::DcServerInfo(Ctx& ctx) {
  Json::Value j;
  j["baseUrl"] = ctx.base;
  j["version"] = opt.version;
  j["versionNumbers"] = Json::Value(Json::arrayValue);
  for (int v : version_) j["versionNumbers"].append(v);
  // FAKE ASSUMPTION: Data Center reports "Server" here, as Jira Server always did.
  j["deploymentType"] = "Server";
  j["buildNumber"] = version_[0] * 10000 + version_[1] * 100 + version_[2];
  j["buildDate"] = "2025-01-15T00:00:00.000+0000";
  j["serverTime"] = JiraTime(ctx.now);
  j["scmInfo"] = "0f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6";
  j["serverTitle"] = "Jira (fake)";
  return JsonResponse(200, j);
}

HttpResponse FakeJira::Impl::DcMyself(Ctx& ctx) {
  if (auto r = RequireUser(ctx)) return *r;
  const std::string expand = ctx.req.Query("expand").value_or("");
  return JsonResponse(200,
                      DcUserJson(ctx, ctx.id.user, true, expand.find("groups") != std::string::npos,
                                 expand.find("applicationRoles") != std::string::npos));
}

HttpResponse FakeJira::Impl::DcPasswordPolicy(Ctx& ctx) {
  bool bad = false;
  const bool has_old = QueryBool(ctx, "hasOldPassword", &bad).value_or(false);
  if (bad) return ErrorResponse(400, {"hasOldPassword must be true or false."});
  Json::Value j(Json::arrayValue);
  j.append("The password must contain at least 8 characters.");
  if (has_old) j.append("The new password must be different from the current password.");
  return JsonResponse(200, j);
}

HttpResponse FakeJira::Impl::DcChangeMyPassword(Ctx& ctx) {
  if (auto r = RequireUser(ctx)) return *r;
  Json::Value body;
  if (auto r = ReadJsonBody(ctx, &body)) return *r;
  if (auto r = CheckBodyKeys(body, {"password", "currentPassword"})) return *r;
  bool bad = false;
  auto password = BodyString(body, "password", &bad);
  auto current = BodyString(body, "currentPassword", &bad);
  if (bad) return ErrorResponse(400, {"password and currentPassword must be strings."});
  const UserRecord r = dir.User(ctx.id.user);
  if (r.directory == kReadOnlyDirectory) {
    return ErrorResponse(403, {"The user directory is read-only."});
  }
  Secrets& s = secrets_[ctx.id.user];
  if (!current || s.password.empty() || !CodeEquals(*current, s.password)) {
    return ErrorResponse(400, {}, {{"currentPassword", "The current password was incorrect."}});
  }
  if (!password || password->size() < 8) {
    return ErrorResponse(400, {},
                         {{"password", "The password must contain at least 8 characters."}});
  }
  if (*password == s.password) {
    return ErrorResponse(400, {},
                         {{"password",
                           "The new password must be different from the "
                           "current password."}});
  }
  s.password = *password;
  s.password_expired = false;
  Log("password_changed", r.name, r.name, "", ActorLabel(ctx));
  return Empty(204);
}

HttpResponse FakeJira::Impl::DcMyPermissions(Ctx& ctx) {
  if (auto r = RequireUser(ctx)) return *r;
  if (auto r = RequireScopes(ctx, {"READ"})) return *r;
  std::vector<std::string> wanted;
  if (auto p = ctx.req.Query("permissions")) wanted = SplitComma(*p);
  Json::Value perms(Json::objectValue);
  for (const auto& p : jira_fake::GlobalPermissionCatalog()) {
    if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), p.key) == wanted.end()) continue;
    perms[std::string(p.key)] = PermissionJson(p, dir.HasPermission(ctx.id.user, p.key));
  }
  for (const auto& w : wanted) {
    if (!perms.isMember(w))
      return ErrorResponse(400, {"The permission key '" + w + "' is not valid."});
  }
  Json::Value j;
  j["permissions"] = perms;
  return JsonResponse(200, j);
}

// ---- Users --------------------------------------------------------------------------------------

HttpResponse FakeJira::Impl::DcGetUser(Ctx& ctx) {
  if (auto r = RequireUser(ctx)) return *r;
  if (auto r = RequireScopes(ctx, {"READ"})) return *r;
  bool bad = false;
  const bool include_deleted = QueryBool(ctx, "includeDeleted", &bad).value_or(false);
  if (bad) return ErrorResponse(400, {"includeDeleted must be true or false."});
  auto username = ctx.req.Query("username");
  auto key = ctx.req.Query("key");
  std::optional<UserIndex> u;
  if (username) {
    u = dir.FindByName(*username);
  } else if (key) {
    u = dir.FindByKey(*key);
  }
  const std::string shown = username ? *username : key ? *key : "null";
  if (!u ||
      (dir.IsDeleted(*u) && !(include_deleted && dir.HasPermission(ctx.id.user, "ADMINISTER")))) {
    return ErrorResponse(404, {"The user named '" + shown + "' does not exist"});
  }
  const std::string expand = ctx.req.Query("expand").value_or("");
  return JsonResponse(200, DcUserJson(ctx, *u, true, expand.find("groups") != std::string::npos,
                                      expand.find("applicationRoles") != std::string::npos));
}

HttpResponse FakeJira::Impl::DcCreateUser(Ctx& ctx) {
  if (auto r = Require(ctx, "ADMINISTER")) return *r;
  if (auto r = RequireScopes(ctx, {"ADMIN"})) return *r;
  Json::Value body;
  if (auto r = ReadJsonBody(ctx, &body)) return *r;
  if (auto r = CheckBodyKeys(body, {"name", "password", "emailAddress", "displayName",
                                    "notification", "applicationKeys", "key", "self"})) {
    return *r;
  }
  bool bad = false;
  auto name = BodyString(body, "name", &bad);
  auto email = BodyString(body, "emailAddress", &bad);
  auto display = BodyString(body, "displayName", &bad);
  auto password = BodyString(body, "password", &bad);
  auto keys = BodyStrings(body, "applicationKeys", &bad);
  if (bad) return ErrorResponse(400, {"The request body has a field of the wrong type."});
  std::map<std::string, std::string> errors;
  if (!name || name->empty()) errors["username"] = "You must specify a username.";
  if (!email || email->find('@') == std::string::npos) {
    errors["email"] = "You must specify a valid email address.";
  }
  if (!display || display->empty()) errors["displayName"] = "You must specify a full name.";
  if (!errors.empty()) return ErrorResponse(400, {}, errors);
  if (auto existing = dir.FindByName(*name); existing && !dir.IsDeleted(*existing)) {
    return ErrorResponse(400, {}, {{"username", "A user with that username already exists."}});
  }
  std::vector<const AppRole*> grant;
  if (keys) {
    for (const auto& k : *keys) {
      const AppRole* role = dir.FindRole(k);
      if (role == nullptr) {
        return ErrorResponse(400, {},
                             {{"applicationKeys", "Application '" + k + "' does not exist."}});
      }
      grant.push_back(role);
    }
  } else {
    for (const AppRole& role : dir.roles()) {
      if (role.selected_by_default) grant.push_back(&role);
    }
  }
  // Seats: a new user takes one seat of every role it gets.
  for (const AppRole* role : grant) {
    auto it = opt.seat_limits.find(role->key);
    if (it != opt.seat_limits.end() &&
        dir.RoleUserCount(*role) + 1 > static_cast<std::uint64_t>(it->second)) {
      return ErrorResponse(
          400, {"The user limit for " + role->name + " has been reached. Licence exceeded."});
    }
  }
  UserRecord r;
  r.name = *name;
  r.email = *email;
  r.display_name = *display;
  r.directory = "Jira Internal Directory";
  auto added = dir.AddUser(std::move(r));
  if (!added.ok()) return ErrorResponse(400, {added.status().message()});
  const UserIndex u = *added;
  secrets_[u].password = password.value_or(jira_fake::RandomToken(18));
  const std::string actor = ActorLabel(ctx);
  Log("user_created", *name, *name, "", actor, *email);
  for (const AppRole* role : grant) {
    for (GroupIndex g : role->default_groups)
      ChangeMembership(g, u, true, actor, "application access");
  }
  Json::Value j = DcUserJson(ctx, u, false, false, false);
  j.removeMember("avatarUrls");
  j.removeMember("timeZone");
  HttpResponse resp = JsonResponse(201, j);
  resp.WithHeader("Location", j["self"].asString());
  return resp;
}

HttpResponse FakeJira::Impl::DcUpdateUser(Ctx& ctx) {
  if (auto r = Require(ctx, "ADMINISTER")) return *r;
  if (auto r = RequireScopes(ctx, {"ADMIN"})) return *r;
  auto username = ctx.req.Query("username");
  auto key = ctx.req.Query("key");
  std::optional<UserIndex> u = username ? dir.FindByName(*username)
                               : key    ? dir.FindByKey(*key)
                                        : std::nullopt;
  if (!u || dir.IsDeleted(*u)) {
    return ErrorResponse(
        404, {"The user named '" + username.value_or(key.value_or("null")) + "' does not exist"});
  }
  Json::Value body;
  if (auto r = ReadJsonBody(ctx, &body)) return *r;
  if (auto r = CheckBodyKeys(body, {"name", "password", "emailAddress", "displayName", "active",
                                    "notification", "applicationKeys", "key", "self"})) {
    return *r;
  }
  bool bad = false;
  auto name = BodyString(body, "name", &bad);
  auto email = BodyString(body, "emailAddress", &bad);
  auto display = BodyString(body, "displayName", &bad);
  // Tri-state: absent, false, true (std::optional<bool> trips GCC's maybe-uninitialized here).
  bool has_active = false, active_value = false;
  if (body.isMember("active") && !body["active"].isNull()) {
    if (!body["active"].isBool()) {
      bad = true;
    } else {
      has_active = true;
      active_value = body["active"].asBool();
    }
  }
  if (bad) return ErrorResponse(400, {"The request body has a field of the wrong type."});
  UserRecord r = dir.User(*u);
  if (name && ToLower(*name) != ToLower(r.name)) {
    return ErrorResponse(400, {}, {{"username", "Renaming users is not supported by this fake."}});
  }
  if (!deactivate_via_put_) has_active = false;  // ignored: older versions cannot change it here
  std::vector<std::string> changed;
  if (email && *email != r.email.value_or("")) changed.push_back("emailAddress");
  if (display && *display != r.display_name) changed.push_back("displayName");
  if (has_active && active_value != r.active) changed.push_back("active");
  if (changed.empty()) {
    if (!deactivate_via_put_) {
      // FAKE ASSUMPTION (UNVERIFIED per version; see README.md): what older versions answer to
      // {"active": false}.
      return ErrorResponse(400, {"error.no.value.found.to.be.changed"});
    }
    return JsonResponse(200, DcUserJson(ctx, *u, true, false, false));
  }
  if (r.directory == kReadOnlyDirectory) {
    return ErrorResponse(403, {"Cannot update user '" + r.name + "': the user directory '" +
                               r.directory + "' is read-only."});
  }
  if (has_active && !active_value && *u == ctx.id.user) {
    return ErrorResponse(400, {}, {{"active", "You cannot deactivate yourself."}});
  }
  const std::string actor = ActorLabel(ctx);
  std::string detail;
  for (const auto& c : changed) detail += (detail.empty() ? "" : ",") + c;
  if (email) r.email = *email;
  if (display) r.display_name = *display;
  const bool activity_changed = has_active && active_value != r.active;
  if (has_active) r.active = active_value;
  dir.PutUser(*u, r);
  if (activity_changed) {
    Log(r.active ? "user_activated" : "user_deactivated", r.name, r.name, "", actor);
  }
  if (changed.size() > (activity_changed ? 1u : 0u))
    Log("user_updated", r.name, r.name, "", actor, detail);
  return JsonResponse(200, DcUserJson(ctx, *u, true, false, false));
}

HttpResponse FakeJira::Impl::DcDeleteUser(Ctx& ctx) {
  if (auto r = Require(ctx, "ADMINISTER")) return *r;
  if (auto r = RequireScopes(ctx, {"ADMIN"})) return *r;
  auto username = ctx.req.Query("username");
  auto key = ctx.req.Query("key");
  std::optional<UserIndex> u = username ? dir.FindByName(*username)
                               : key    ? dir.FindByKey(*key)
                                        : std::nullopt;
  if (!u || dir.IsDeleted(*u)) {
    return ErrorResponse(
        404, {"The user named '" + username.value_or(key.value_or("null")) + "' does not exist"});
  }
  if (*u == ctx.id.user)
    return ErrorResponse(400, {"You cannot delete the currently logged in user."});
  UserRecord r = dir.User(*u);
  if (r.directory == kReadOnlyDirectory) {
    return ErrorResponse(400, {"Cannot delete user '" + r.name + "': the user directory '" +
                               r.directory + "' is read-only."});
  }
  const std::string actor = ActorLabel(ctx);
  RemoveAllMemberships(*u, actor, "user deleted");
  std::erase_if(sessions_, [&](const auto& s) { return s.second.user == *u; });
  for (Pat& p : pats_) {
    if (p.owner == *u) p.revoked = true;
  }
  r.deleted = true;
  dir.PutUser(*u, r);
  Log("user_deleted", r.name, r.name, "", actor);
  return Empty(204);
}

HttpResponse FakeJira::Impl::DcUserSearch(Ctx& ctx) {
  bool bad = false;
  const std::int64_t start = QueryInt(ctx, "startAt", &bad).value_or(0);
  std::int64_t max = QueryInt(ctx, "maxResults", &bad).value_or(50);
  const bool include_active = QueryBool(ctx, "includeActive", &bad).value_or(true);
  const bool include_inactive = QueryBool(ctx, "includeInactive", &bad).value_or(false);
  if (bad || start < 0 || max < 0) return ErrorResponse(400, {"Invalid parameter value."});
  auto query = ctx.req.Query("username");
  if (!query) return ErrorResponse(400, {"The username query parameter was not provided"});
  if (auto r = RequireScopes(ctx, {"READ"})) return *r;
  Json::Value out(Json::arrayValue);
  // Anonymous callers and users without "Browse users" find nobody.
  if (ctx.id.kind != Identity::kUser || !dir.HasPermission(ctx.id.user, "USER_PICKER")) {
    return JsonResponse(200, out);
  }
  max = std::min<std::int64_t>(max, 1000);
  std::uint64_t end = static_cast<std::uint64_t>(start + max);
  // Jira 10.x returns only the first 100 results (JRASERVER-78520, -78660).
  if (version_[0] >= 10) end = std::min<std::uint64_t>(end, 100);
  const std::uint64_t begin = static_cast<std::uint64_t>(start);
  if (*query == ".") {
    // "." matches every user (the dc-app-performance-toolkit idiom).
    const std::uint64_t listed = std::min(end, dir.CountListed(include_active, include_inactive));
    for (std::uint64_t p = OverlapStart(begin, listed); p < end; ++p) {
      auto u = dir.SelectListed(p, include_active, include_inactive);
      if (!u) break;
      out.append(DcUserJson(ctx, *u, true, false, false));
    }
    return JsonResponse(200, Unreliable(std::move(out)));
  }
  // Prefix of the user name, the e-mail address or any word of the display name.
  const std::string q = ToLower(*query);
  auto matches = [&](const UserRecord& r) {
    if (ToLower(r.name).rfind(q, 0) == 0) return true;
    if (r.email && ToLower(*r.email).rfind(q, 0) == 0) return true;
    const std::string d = ToLower(r.display_name);
    for (std::size_t i = 0; i < d.size(); ++i) {
      if ((i == 0 || d[i - 1] == ' ') && d.compare(i, q.size(), q) == 0) return true;
    }
    return false;
  };
  std::uint64_t seen = 0;
  for (UserIndex u = 0; u < dir.user_count() && seen < end; ++u) {
    if (dir.IsDeleted(u)) continue;
    const bool active = dir.IsActive(u);
    if ((active && !include_active) || (!active && !include_inactive)) continue;
    if (!matches(dir.User(u))) continue;
    if (seen >= begin) out.append(DcUserJson(ctx, u, true, false, false));
    ++seen;
  }
  return JsonResponse(200, out);
}

HttpResponse FakeJira::Impl::DcUserList(Ctx& ctx) {
  if (auto r = Require(ctx, "ADMINISTER")) return *r;
  if (auto r = RequireScopes(ctx, {"READ"})) return *r;
  bool bad = false;
  const std::int64_t max = QueryInt(ctx, "maxResults", &bad).value_or(2000);
  if (bad || max <= 0) return ErrorResponse(400, {"maxResults must be a positive integer."});
  // The cursor is opaque to clients; here it is the index of the next user. Anything that is not
  // a cursor this fake handed out gives an empty last page, never a 404.
  std::uint64_t cursor = 0;
  bool unknown = false;
  if (auto c = ctx.req.Query("cursor")) {
    bool cursor_bad = false;
    auto v = QueryInt(ctx, "cursor", &cursor_bad);
    if (cursor_bad || !v || *v < 0) {
      unknown = true;
    } else {
      cursor = static_cast<std::uint64_t>(*v);
    }
  }
  Json::Value j;
  std::vector<std::pair<std::string, std::string>> self_query;
  if (auto c = ctx.req.Query("cursor")) self_query.emplace_back("cursor", *c);
  self_query.emplace_back("maxResults", std::to_string(max));
  j["self"] = Url(ctx, "/user/list", self_query);
  j["maxResults"] = static_cast<Json::Int64>(max);
  j["values"] = Json::Value(Json::arrayValue);
  const std::uint64_t n = dir.user_count();
  std::uint64_t u = unknown ? n : cursor;
  std::int64_t taken = 0;
  // Unreliable paging: users just before the cursor come again.
  for (std::uint64_t again = OverlapStart(u, n); again < u; ++again) {
    if (dir.IsDeleted(static_cast<UserIndex>(again))) continue;
    j["values"].append(DcUserJson(ctx, static_cast<UserIndex>(again), true, false, false));
  }
  for (; u < n && taken < max; ++u) {
    if (dir.IsDeleted(static_cast<UserIndex>(u))) continue;
    j["values"].append(DcUserJson(ctx, static_cast<UserIndex>(u), true, false, false));
    ++taken;
  }
  j["values"] = Unreliable(std::move(j["values"]));
  while (u < n && dir.IsDeleted(static_cast<UserIndex>(u))) ++u;
  const bool last = u >= n;
  j["isLast"] = last;
  if (!last) {
    j["nextCursor"] = std::to_string(u);
    j["nextPage"] = Url(ctx, "/user/list",
                        {{"cursor", std::to_string(u)}, {"maxResults", std::to_string(max)}});
  }
  return JsonResponse(200, j);
}

HttpResponse FakeJira::Impl::DcKillSessions(Ctx& ctx, const std::string& username) {
  if (auto r = Require(ctx, "ADMINISTER")) return *r;
  if (auto r = RequireScopes(ctx, {"ADMIN"})) return *r;
  auto u = dir.FindByName(username);
  if (!u || dir.IsDeleted(*u)) {
    return ErrorResponse(404, {"The user named '" + username + "' does not exist"});
  }
  const std::size_t n =
      std::erase_if(sessions_, [&](const auto& s) { return s.second.user == *u; });
  const std::string name = dir.User(*u).name;
  Log("sessions_killed", name, name, "", ActorLabel(ctx), std::to_string(n) + " session(s)");
  return Empty(200);
}

HttpResponse FakeJira::Impl::DcUserApplication(Ctx& ctx, bool grant) {
  if (auto r = Require(ctx, "ADMINISTER")) return *r;
  if (auto r = RequireScopes(ctx, {"ADMIN"})) return *r;
  auto username = ctx.req.Query("username");
  auto key = ctx.req.Query("applicationKey");
  if (!username || !key) return ErrorResponse(400, {"username and applicationKey are required."});
  auto u = dir.FindByName(*username);
  if (!u || dir.IsDeleted(*u))
    return ErrorResponse(400, {"User '" + *username + "' does not exist."});
  AppRole* role = dir.FindRole(*key);
  if (role == nullptr) return ErrorResponse(400, {"Application '" + *key + "' does not exist."});
  const std::string actor = ActorLabel(ctx);
  if (grant) {
    if (dir.HasProduct(*u, *role)) return Empty(200);
    if (auto problem = SeatProblem(*role, *u)) return ErrorResponse(400, {*problem});
    if (role->default_groups.empty()) {
      return ErrorResponse(400, {"Application '" + *key + "' has no default group."});
    }
    for (GroupIndex g : role->default_groups)
      ChangeMembership(g, *u, true, actor, "application access");
    return Empty(200);
  }
  // Revoking access removes the user from every group that grants it.
  for (GroupIndex g : role->groups) ChangeMembership(g, *u, false, actor, "application access");
  return Empty(204);
}

// ---- Groups -------------------------------------------------------------------------------------

HttpResponse FakeJira::Impl::DcGroupMembers(Ctx& ctx) {
  if (auto r = Require(ctx, "ADMINISTER")) return *r;
  if (auto r = RequireScopes(ctx, {"READ"})) return *r;
  auto name = ctx.req.Query("groupname");
  if (!name || name->empty()) return ErrorResponse(400, {"The group name must not be empty."});
  bool bad = false;
  const std::int64_t start = QueryInt(ctx, "startAt", &bad).value_or(0);
  std::int64_t max = QueryInt(ctx, "maxResults", &bad).value_or(50);
  const bool inactive = QueryBool(ctx, "includeInactiveUsers", &bad).value_or(false);
  if (bad || start < 0 || max < 0) return ErrorResponse(400, {"Invalid parameter value."});
  auto g = dir.FindGroup(*name);
  if (!g) return ErrorResponse(404, {"Group with name '" + *name + "' does not exist."});
  max = std::min<std::int64_t>(max, 50);
  const auto& members = ListedMembers(*g, inactive);
  const std::uint64_t total = members.size();
  Json::Value j;
  auto page_url = [&](std::int64_t at) {
    return Url(ctx, "/group/member",
               {{"groupname", dir.group(*g).name},
                {"includeInactiveUsers", inactive ? "true" : "false"},
                {"startAt", std::to_string(at)},
                {"maxResults", std::to_string(max)}});
  };
  j["self"] = page_url(start);
  j["maxResults"] = static_cast<Json::Int64>(max);
  j["startAt"] = static_cast<Json::Int64>(start);
  j["total"] = static_cast<Json::UInt64>(total);
  j["values"] = Json::Value(Json::arrayValue);
  const std::uint64_t end = std::min<std::uint64_t>(total, static_cast<std::uint64_t>(start + max));
  for (std::uint64_t p = OverlapStart(static_cast<std::uint64_t>(start), end); p < end; ++p) {
    j["values"].append(DcUserJson(ctx, members[p], false, false, false));
  }
  j["values"] = Unreliable(std::move(j["values"]));
  const bool last = end >= total;
  j["isLast"] = last;
  if (!last) j["nextPage"] = page_url(static_cast<std::int64_t>(end));
  return JsonResponse(200, j);
}

HttpResponse FakeJira::Impl::DcGroupUser(Ctx& ctx, bool add) {
  if (auto r = Require(ctx, "ADMINISTER")) return *r;
  if (auto r = RequireScopes(ctx, {"ADMIN"})) return *r;
  auto name = ctx.req.Query("groupname");
  if (!name || name->empty()) return ErrorResponse(400, {"The group name must not be empty."});
  std::string username;
  if (add) {
    Json::Value body;
    if (auto r = ReadJsonBody(ctx, &body)) return *r;
    if (auto r = CheckBodyKeys(body, {"name"})) return *r;
    bool bad = false;
    auto n = BodyString(body, "name", &bad);
    if (bad || !n || n->empty()) return ErrorResponse(400, {"The user name must not be empty."});
    username = *n;
  } else {
    auto n = ctx.req.Query("username");
    if (!n || n->empty()) return ErrorResponse(400, {"The user name must not be empty."});
    username = *n;
  }
  auto g = dir.FindGroup(*name);
  if (!g) return ErrorResponse(404, {"Group with name '" + *name + "' does not exist."});
  auto u = dir.FindByName(username);
  if (!u || dir.IsDeleted(*u))
    return ErrorResponse(404, {"User '" + username + "' does not exist."});
  const std::string group_name = dir.group(*g).name;
  // Only system administrators may change the membership of a group holding SYSTEM_ADMIN.
  const auto& sys = dir.global_permissions()["SYSTEM_ADMIN"];
  if (std::find(sys.begin(), sys.end(), *g) != sys.end() &&
      !dir.HasPermission(ctx.id.user, "SYSTEM_ADMIN")) {
    return ErrorResponse(403, {"You cannot edit the membership of group '" + group_name +
                               "': it grants system administrator rights."});
  }
  if (add) {
    if (!ChangeMembership(*g, *u, true, ActorLabel(ctx), "")) {
      return ErrorResponse(400, {"Cannot add user. '" + dir.User(*u).name +
                                 "' is already a member of '" + group_name + "'"});
    }
    Json::Value j;
    j["name"] = group_name;
    j["self"] = Url(ctx, "/group", {{"groupname", group_name}});
    j["users"]["size"] = static_cast<Json::UInt64>(dir.group(*g).members.size());
    j["users"]["items"] = Json::Value(Json::arrayValue);
    j["users"]["max-results"] = 50;
    j["users"]["start-index"] = 0;
    j["users"]["end-index"] = 0;
    j["expand"] = "users";
    return JsonResponse(201, j);
  }
  if (!ChangeMembership(*g, *u, false, ActorLabel(ctx), "")) {
    return ErrorResponse(
        400, {"Cannot remove user '" + dir.User(*u).name + "' from group '" + group_name +
              "' since user is not a member of '" + group_name + "'"});
  }
  return Empty(200);
}

HttpResponse FakeJira::Impl::DcGroupCreateDelete(Ctx& ctx, bool create) {
  if (auto r = Require(ctx, "ADMINISTER")) return *r;
  if (auto r = RequireScopes(ctx, {"ADMIN"})) return *r;
  const std::string actor = ActorLabel(ctx);
  if (create) {
    Json::Value body;
    if (auto r = ReadJsonBody(ctx, &body)) return *r;
    if (auto r = CheckBodyKeys(body, {"name"})) return *r;
    bool bad = false;
    auto name = BodyString(body, "name", &bad);
    if (bad || !name || name->empty())
      return ErrorResponse(400, {"You must specify a group name."});
    auto g = dir.AddGroup(*name);
    if (!g.ok()) return ErrorResponse(400, {"A group or user with this name already exists."});
    Log("group_created", *name, *name, "", actor);
    Json::Value j;
    j["name"] = *name;
    j["self"] = Url(ctx, "/group", {{"groupname", *name}});
    j["users"]["size"] = 0;
    j["users"]["items"] = Json::Value(Json::arrayValue);
    j["expand"] = "users";
    return JsonResponse(201, j);
  }
  auto name = ctx.req.Query("groupname");
  if (!name || name->empty()) return ErrorResponse(400, {"You must specify a group name."});
  auto g = dir.FindGroup(*name);
  if (!g) return ErrorResponse(404, {"Group with name '" + *name + "' does not exist."});
  for (UserIndex u : std::vector<UserIndex>(dir.group(*g).members)) {
    ChangeMembership(*g, u, false, actor, "group deleted");
  }
  const std::string shown = dir.group(*g).name;
  dir.DeleteGroup(*g);
  Log("group_deleted", shown, shown, "", actor);
  return Empty(200);
}

HttpResponse FakeJira::Impl::DcGroupsPicker(Ctx& ctx) {
  bool bad = false;
  const std::int64_t requested =
      QueryInt(ctx, "maxResults", &bad).value_or(opt.groups_picker_limit);
  if (bad || requested < 0) return ErrorResponse(400, {"maxResults must be a number."});
  const std::string query = ToLower(ctx.req.Query("query").value_or(""));
  std::vector<std::string> exclude;
  for (auto [it, end] = ctx.req.query.equal_range("exclude"); it != end; ++it) {
    exclude.push_back(ToLower(it->second));
  }
  std::vector<GroupIndex> found;
  if (ctx.id.kind == Identity::kUser && dir.HasPermission(ctx.id.user, "USER_PICKER")) {
    for (GroupIndex g = 0; g < dir.group_count(); ++g) {
      const auto& group = dir.group(g);
      if (group.deleted) continue;
      const std::string lower = ToLower(group.name);
      if (lower.find(query) == std::string::npos) continue;
      if (std::find(exclude.begin(), exclude.end(), lower) != exclude.end()) continue;
      found.push_back(g);
    }
  }
  std::sort(found.begin(), found.end(), [&](GroupIndex a, GroupIndex b) {
    return ToLower(dir.group(a).name) < ToLower(dir.group(b).name);
  });
  // jira.ajax.autocomplete.limit caps the answer whatever maxResults asks for.
  const std::size_t shown = std::min<std::size_t>(
      found.size(),
      static_cast<std::size_t>(std::min<std::int64_t>(requested, opt.groups_picker_limit)));
  Json::Value j;
  j["header"] = "Showing " + std::to_string(shown) + " of " + std::to_string(found.size()) +
                " matching groups";
  j["total"] = static_cast<Json::UInt64>(found.size());
  j["groups"] = Json::Value(Json::arrayValue);
  // UNVERIFIED: the label is taken to mark groups holding ADMINISTER or SYSTEM_ADMIN (both give
  // administrative access).
  std::vector<GroupIndex> admin_groups = dir.global_permissions()["ADMINISTER"];
  for (GroupIndex g : dir.global_permissions()["SYSTEM_ADMIN"]) admin_groups.push_back(g);
  for (std::size_t k = 0; k < shown; ++k) {
    const auto& group = dir.group(found[k]);
    Json::Value item;
    item["name"] = group.name;
    std::string html = group.name;
    if (!query.empty()) {
      const std::size_t at = ToLower(group.name).find(query);
      html = group.name.substr(0, at) + "<b>" + group.name.substr(at, query.size()) + "</b>" +
             group.name.substr(at + query.size());
    }
    item["html"] = html;
    item["labels"] = Json::Value(Json::arrayValue);
    if (std::find(admin_groups.begin(), admin_groups.end(), found[k]) != admin_groups.end()) {
      Json::Value label;
      label["text"] = "Admin";
      label["title"] = "Users added to this group will be given administrative access";
      label["type"] = "ADMIN";
      item["labels"].append(label);
    }
    if (!IsDc()) item["groupId"] = group.id;
    j["groups"].append(item);
  }
  return JsonResponse(200, j);
}

HttpResponse FakeJira::Impl::DcApplicationRoles(Ctx& ctx, const std::string* key) {
  if (auto r = Require(ctx, "ADMINISTER")) return *r;
  if (auto r = RequireScopes(ctx, {ctx.req.method == "GET" ? "READ" : "ADMIN"})) return *r;
  std::vector<const AppRole*> all;
  for (const AppRole& role : dir.roles()) all.push_back(&role);
  AppRole* one = nullptr;
  if (key != nullptr) {
    one = dir.FindRole(*key);
    if (one == nullptr)
      return ErrorResponse(404, {"The application role '" + *key + "' does not exist."});
  }
  auto current_etag = [&] { return one != nullptr ? RoleEtag({one}) : RoleEtag(all); };
  if (ctx.req.method == "GET") {
    Json::Value j;
    if (one != nullptr) {
      j = ApplicationRoleJson(ctx, *one);
    } else {
      j = Json::Value(Json::arrayValue);
      for (const AppRole* r : all) j.append(ApplicationRoleJson(ctx, *r));
    }
    HttpResponse resp = JsonResponse(200, j);
    resp.WithHeader("ETag", current_etag());
    return resp;
  }
  // PUT: a stale If-Match (or versionHash) is refused; without one the update goes through.
  std::string if_match = ctx.req.Header("if-match");
  if (if_match.empty()) if_match = ctx.req.Header("versionhash");
  if (!if_match.empty() && StripQuotes(if_match) != StripQuotes(current_etag())) {
    return ErrorResponse(412, {"The application roles were changed by someone else. Reload and "
                               "try again."});
  }
  Json::Value body;
  if (auto r = ReadJsonBody(ctx, &body)) return *r;
  std::vector<std::pair<AppRole*, const Json::Value*>> updates;
  if (one != nullptr) {
    updates.emplace_back(one, &body);
  } else {
    if (!body.isArray()) return ErrorResponse(400, {"Expected an array of application roles."});
    for (const auto& item : body) {
      if (!item.isObject() || !item["key"].isString()) {
        return ErrorResponse(400, {"Every application role needs a key."});
      }
      AppRole* role = dir.FindRole(item["key"].asString());
      if (role == nullptr) return ErrorResponse(404, {"Unknown application role."});
      updates.emplace_back(role, &item);
    }
  }
  // Validate everything first, then apply.
  std::vector<std::pair<std::vector<GroupIndex>, std::vector<GroupIndex>>> planned;
  for (const auto& [role, value] : updates) {
    if (auto r =
            CheckBodyKeys(*value, {"key", "groups", "defaultGroups", "name", "selectedByDefault",
                                   "defined", "numberOfSeats", "remainingSeats", "userCount",
                                   "userCountDescription", "hasUnlimitedSeats", "platform"})) {
      return *r;
    }
    bool bad = false;
    auto groups = BodyStrings(*value, "groups", &bad);
    auto defaults = BodyStrings(*value, "defaultGroups", &bad);
    if (bad) return ErrorResponse(400, {"groups and defaultGroups must be arrays of names."});
    std::vector<GroupIndex> g_idx = role->groups, d_idx = role->default_groups;
    if (groups) {
      g_idx.clear();
      for (const auto& name : *groups) {
        auto g = dir.FindGroup(name);
        if (!g) return ErrorResponse(400, {"Group '" + name + "' does not exist."});
        g_idx.push_back(*g);
      }
    }
    if (defaults) {
      d_idx.clear();
      for (const auto& name : *defaults) {
        auto g = dir.FindGroup(name);
        if (!g) return ErrorResponse(400, {"Group '" + name + "' does not exist."});
        d_idx.push_back(*g);
      }
    }
    for (GroupIndex d : d_idx) {
      if (std::find(g_idx.begin(), g_idx.end(), d) == g_idx.end()) {
        return ErrorResponse(400, {"A default group must also be a group of the role."});
      }
    }
    planned.emplace_back(std::move(g_idx), std::move(d_idx));
  }
  Json::Value out(Json::arrayValue);
  for (std::size_t k = 0; k < updates.size(); ++k) {
    AppRole* role = updates[k].first;
    role->groups = planned[k].first;
    role->default_groups = planned[k].second;
    ++role->version;
    Log("application_role_updated", role->key, role->key, "", ActorLabel(ctx));
    out.append(ApplicationRoleJson(ctx, *role));
  }
  HttpResponse resp = JsonResponse(200, one != nullptr ? out[0] : out);
  resp.WithHeader("ETag", current_etag());
  return resp;
}

// ---- Cookie sessions and 2SV ------------------------------------------------------------------

HttpResponse FakeJira::Impl::DcAuthSession(Ctx& ctx) {
  const std::string& m = ctx.req.method;
  if (m == "GET") {
    if (auto r = RequireUser(ctx)) return *r;
    Json::Value j;
    j["self"] =
        ctx.base + "/rest/api/latest/user?username=" + UrlEncode(dir.User(ctx.id.user).name);
    j["name"] = dir.User(ctx.id.user).name;
    j["loginInfo"]["loginCount"] = static_cast<Json::Int64>(secrets_[ctx.id.user].login_count);
    return JsonResponse(200, j);
  }
  if (m == "DELETE") {
    if (!ctx.id.cookie) return ErrorResponse(401, {"You are not logged in."});
    const auto cookie = ctx.req.Header("cookie");
    std::erase_if(sessions_, [&](const auto& s) {
      return cookie.find("JSESSIONID=" + s.first) != std::string::npos;
    });
    return Empty(204);
  }
  // POST: log in.
  if (version_[0] >= 11) {
    // Jira 11 refuses this endpoint by default. FAKE ASSUMPTION: 403 and this text (the exact
    // answer is UNVERIFIED).
    RecordLogin("", "rest_session", "basic_disabled");
    return ErrorResponse(403, {"Login through /rest/auth/1/session is disabled on this instance."});
  }
  Json::Value body;
  if (auto r = ReadJsonBody(ctx, &body)) return *r;
  if (auto r = CheckBodyKeys(body, {"username", "password"})) return *r;
  bool bad = false;
  const std::string username = BodyString(body, "username", &bad).value_or("");
  std::string password = BodyString(body, "password", &bad).value_or("");
  if (bad) return ErrorResponse(400, {"username and password must be strings."});
  std::optional<UserIndex> u;
  const PasswordResult result = CheckPassword(username, password, &u, true);
  WipeString(password);
  if (result == PasswordResult::kCaptcha) {
    RecordLogin(username, "rest_session", "captcha");
    return CaptchaDenied(ctx);
  }
  if (result != PasswordResult::kOk) {
    RecordLogin(username, "rest_session",
                result == PasswordResult::kUnknownUser ? "unknown_user"
                : result == PasswordResult::kExpired   ? "expired"
                : result == PasswordResult::kInactive  ? "inactive"
                                                       : "bad_credentials");
    HttpResponse r = ErrorResponse(401, {"Login failed"});
    r.WithHeader("X-Seraph-LoginReason", "AUTHENTICATED_FAILED");
    return r;
  }
  const Secrets& s = secrets_[*u];
  if (!s.totp_seed.empty() || s.tsv_enforced) {
    // FAKE ASSUMPTION (UNVERIFIED): a password-only session login cannot bypass two-step
    // verification for an account that has it.
    RecordLogin(username, "rest_session", "second_factor_required");
    return ErrorResponse(403, {"Two-step verification is required for this account."});
  }
  RecordLogin(username, "rest_session", "ok");
  HttpResponse resp = Empty(200);
  const std::string id = NewSession(*u, ctx.now, resp);
  Json::Value j;
  j["session"]["name"] = "JSESSIONID";
  j["session"]["value"] = id;
  j["loginInfo"]["failedLoginCount"] = 0;
  j["loginInfo"]["loginCount"] = static_cast<Json::Int64>(s.login_count);
  if (s.previous_login) j["loginInfo"]["previousLoginTime"] = JiraTime(*s.previous_login);
  if (s.last_failed_login) j["loginInfo"]["lastFailedLoginTime"] = JiraTime(*s.last_failed_login);
  HttpResponse out = JsonResponse(200, j);
  for (auto& h : resp.headers) out.headers.push_back(std::move(h));
  return out;
}

HttpResponse FakeJira::Impl::DcTsvAuthenticate(Ctx& ctx) {
  Json::Value body;
  if (auto r = ReadJsonBody(ctx, &body)) return *r;
  if (auto r = CheckBodyKeys(body, {"username", "password", "rememberMe", "targetUrl", "captchaId",
                                    "captchaChallenge"})) {
    return *r;
  }
  bool bad = false;
  const std::string username = BodyString(body, "username", &bad).value_or("");
  std::string password = BodyString(body, "password", &bad).value_or("");
  const std::string target = BodyString(body, "targetUrl", &bad).value_or("");
  if (bad) return ErrorResponse(400, {"Malformed login request."});
  auto refuse = [&](bool captcha, bool expired, const char* outcome) {
    RecordLogin(username, "tsv_password", outcome);
    Json::Value j;
    j["captchaRequired"] = captcha;
    j["expiredCredentials"] = expired;
    j["message"] = expired   ? "Your password has expired."
                   : captcha ? "Please answer the CAPTCHA challenge to log in."
                             : "Sorry, your username and password are incorrect - please try "
                               "again.";
    return JsonResponse(401, j);
  };
  std::optional<UserIndex> u;
  const PasswordResult result = CheckPassword(username, password, &u, true);
  WipeString(password);
  switch (result) {
    case PasswordResult::kOk:
      break;
    case PasswordResult::kCaptcha:
      return refuse(true, false, "captcha");
    case PasswordResult::kExpired:
      return refuse(false, true, "expired");
    case PasswordResult::kUnknownUser:
      return refuse(false, false, "unknown_user");
    case PasswordResult::kInactive:
      return refuse(CaptchaRequired(username), false, "inactive");
    case PasswordResult::kBad:
      return refuse(CaptchaRequired(username), false, "bad_credentials");
  }
  const Secrets& s = secrets_[*u];
  if (!s.totp_seed.empty() || s.tsv_enforced) {
    RecordLogin(username, "tsv_password", "ok");
    const std::string conversation = jira_fake::RandomToken(18);
    conversations_[conversation] = Conversation{*u, ctx.now, 0, s.totp_seed.empty()};
    Json::Value j;
    j["conversationId"] = conversation;
    j["nextLoginStep"] = s.totp_seed.empty() ? "ENROLLMENT" : "TOTP_CODE_VERIFICATION";
    return JsonResponse(412, j);
  }
  RecordLogin(username, "tsv_password", "ok");
  Json::Value j;
  j["next"] = target.empty() ? ctx.base + "/" : target;
  HttpResponse resp = JsonResponse(200, j);
  NewSession(*u, ctx.now, resp);
  return resp;
}

HttpResponse FakeJira::Impl::DcTsvTotpCode(Ctx& ctx) {
  Json::Value body;
  if (auto r = ReadJsonBody(ctx, &body)) return *r;
  if (auto r = CheckBodyKeys(body, {"conversationId", "totpCode"})) return *r;
  bool bad = false;
  const std::string conversation = BodyString(body, "conversationId", &bad).value_or("");
  const std::string code = BodyString(body, "totpCode", &bad).value_or("");
  if (bad) return ErrorResponse(400, {"Malformed request."});
  auto invalid = [&](const char* outcome, std::string user) {
    totp_events_.push_back({ctx.now, std::move(user), outcome, std::nullopt});
    Json::Value j;
    j["message"] = "The login conversation is unknown or has expired. Log in again.";
    return JsonResponse(400, j);
  };
  auto it = conversations_.find(conversation);
  if (it == conversations_.end()) return invalid("unknown_conversation", "");
  Conversation& c = it->second;
  const std::string username = dir.User(c.user).name;
  if (ctx.now - c.created > opt.tsv_conversation_lifetime || c.enrollment) {
    conversations_.erase(it);
    return invalid("expired", username);
  }
  Secrets& s = secrets_[c.user];
  const auto unix =
      std::chrono::duration_cast<std::chrono::seconds>(ctx.now.time_since_epoch()).count();
  const std::uint64_t current = TotpStep(unix, opt.totp.period_seconds);
  std::optional<std::uint64_t> matched;
  for (int d = -opt.totp_step_tolerance; d <= opt.totp_step_tolerance; ++d) {
    if (d < 0 && current < static_cast<std::uint64_t>(-d)) continue;
    const std::uint64_t step = current + static_cast<std::uint64_t>(static_cast<std::int64_t>(d));
    if (CodeEquals(code, HotpCode(s.totp_seed, step, opt.totp.algorithm, opt.totp.digits))) {
      matched = step;
      break;
    }
  }
  const bool reused = matched && s.used_steps.count(*matched) != 0;
  if (!matched || reused) {
    totp_events_.push_back({ctx.now, username, reused ? "reused" : "wrong_code", matched});
    RecordLogin(username, "tsv_totp", reused ? "reused_code" : "bad_credentials");
    if (++c.wrong_codes >= opt.max_totp_attempts) conversations_.erase(it);
    Json::Value j;
    j["message"] = "The verification code is incorrect.";
    return JsonResponse(401, j);
  }
  s.used_steps.insert(*matched);
  // Steps older than the tolerance window can never match again.
  const std::uint64_t oldest = current > static_cast<std::uint64_t>(opt.totp_step_tolerance)
                                   ? current - static_cast<std::uint64_t>(opt.totp_step_tolerance)
                                   : 0;
  s.used_steps.erase(s.used_steps.begin(), s.used_steps.lower_bound(oldest));
  totp_events_.push_back({ctx.now, username, "accepted", matched});
  RecordLogin(username, "tsv_totp", "ok");
  const UserIndex u = c.user;
  conversations_.erase(it);
  HttpResponse resp = Empty(204);
  NewSession(u, ctx.now, resp);
  return resp;
}

HttpResponse FakeJira::Impl::DcTsvStatus(Ctx& ctx) {
  if (auto r = RequireUser(ctx)) return *r;
  const Secrets& s = secrets_[ctx.id.user];
  Json::Value j;
  j["twoSVActive"] = !s.totp_seed.empty();
  Json::Value method;
  method["type"] = "TOTP";
  method["enabled"] = !s.totp_seed.empty();
  method["enforced"] = s.tsv_enforced;
  j["methods"] = Json::Value(Json::arrayValue);
  j["methods"].append(method);
  return JsonResponse(200, j);
}

// ---- Personal access tokens, application links, OAuth provider --------------------------------

HttpResponse FakeJira::Impl::DcPats(Ctx& ctx) {
  if (auto r = RequireUser(ctx)) return *r;
  auto pat_json = [&](const Pat& p) {
    Json::Value j;
    j["id"] = static_cast<Json::Int64>(p.id);
    j["name"] = p.name;
    j["createdAt"] = JiraTime(p.created);
    if (p.expires) j["expiringAt"] = JiraTime(*p.expires);
    if (p.last_accessed) j["lastAccessedAt"] = JiraTime(*p.last_accessed);
    return j;
  };
  if (ctx.req.method == "GET") {
    Json::Value out(Json::arrayValue);
    for (const Pat& p : pats_) {
      if (p.owner == ctx.id.user && !p.revoked) out.append(pat_json(p));
    }
    return JsonResponse(200, out);
  }
  // Creating a token needs a password-backed login (Basic or a session), not a token.
  if (ctx.id.method != "basic" && ctx.id.method != "session") {
    return ErrorResponse(403, {"Personal access tokens can only be created from a login session "
                               "or Basic authentication."});
  }
  Json::Value body;
  if (auto r = ReadJsonBody(ctx, &body)) return *r;
  if (auto r = CheckBodyKeys(body, {"name", "expirationDuration"})) return *r;
  bool bad = false;
  auto name = BodyString(body, "name", &bad);
  std::optional<std::int64_t> days;
  if (body.isMember("expirationDuration") && !body["expirationDuration"].isNull()) {
    if (!body["expirationDuration"].isIntegral() || body["expirationDuration"].asInt64() <= 0) {
      bad = true;
    } else {
      days = body["expirationDuration"].asInt64();
    }
  }
  if (bad || !name || name->empty()) return ErrorResponse(400, {"A token needs a name."});
  Pat pat;
  pat.id = next_pat_id_++;
  pat.owner = ctx.id.user;
  pat.name = *name;
  pat.token = jira_fake::RandomToken(33);
  pat.created = ctx.now;
  if (days) pat.expires = ctx.now + std::chrono::hours(24 * *days);
  pat_by_token_[pat.token] = pats_.size();
  token_owners_.insert(ctx.id.user);
  pats_.push_back(pat);
  const std::string owner = dir.User(ctx.id.user).name;
  Log("pat_created", owner, owner, *name, ActorLabel(ctx));
  Json::Value j = pat_json(pat);
  j["rawToken"] = pat.token;
  return JsonResponse(201, j);
}

HttpResponse FakeJira::Impl::DcPatDelete(Ctx& ctx, const std::string& id) {
  if (auto r = RequireUser(ctx)) return *r;
  for (Pat& p : pats_) {
    if (std::to_string(p.id) == id && !p.revoked &&
        (p.owner == ctx.id.user || dir.HasPermission(ctx.id.user, "SYSTEM_ADMIN"))) {
      p.revoked = true;
      const std::string owner = dir.User(p.owner).name;
      Log("pat_revoked", owner, owner, p.name, ActorLabel(ctx));
      return Empty(204);
    }
  }
  return ErrorResponse(404, {"Token not found."});
}

HttpResponse FakeJira::Impl::DcPatSearch(Ctx& ctx) {
  // UNVERIFIED: the admin UI's undocumented token search. Shape chosen by the fake:
  // 1-based `page`, `limit` (default 50, at most 100), `values`, `isLastPage`.
  if (auto r = Require(ctx, "ADMINISTER")) return *r;
  Json::Value body;
  if (auto r = ReadJsonBody(ctx, &body)) return *r;
  if (auto r = CheckBodyKeys(body, {"page", "limit", "name", "userKeys"})) return *r;
  auto int_field = [&](const char* key, std::int64_t fallback) -> std::optional<std::int64_t> {
    if (!body.isMember(key)) return fallback;
    if (!body[key].isIntegral()) return std::nullopt;
    return body[key].asInt64();
  };
  auto page = int_field("page", 1);
  auto limit = int_field("limit", 50);
  bool bad = !page || !limit || *page < 1 || *limit < 1;
  const std::string name = BodyString(body, "name", &bad).value_or("");
  auto keys = BodyStrings(body, "userKeys", &bad);
  if (bad) return ErrorResponse(400, {"Malformed search."});
  const std::int64_t lim = std::min<std::int64_t>(*limit, 100);
  std::vector<const Pat*> matching;
  for (const Pat& p : pats_) {
    if (p.revoked) continue;
    if (!name.empty() && ToLower(p.name).find(ToLower(name)) == std::string::npos) continue;
    if (keys && std::find(keys->begin(), keys->end(), dir.User(p.owner).key) == keys->end())
      continue;
    matching.push_back(&p);
  }
  Json::Value j;
  j["page"] = static_cast<Json::Int64>(*page);
  j["limit"] = static_cast<Json::Int64>(lim);
  j["values"] = Json::Value(Json::arrayValue);
  const std::size_t begin = static_cast<std::size_t>((*page - 1) * lim);
  const std::size_t end = std::min(matching.size(), begin + static_cast<std::size_t>(lim));
  for (std::size_t k = begin; k < end; ++k) {
    const Pat& p = *matching[k];
    const UserRecord owner = dir.User(p.owner);
    Json::Value v;
    v["id"] = static_cast<Json::Int64>(p.id);
    v["name"] = p.name;
    v["createdAt"] = JiraTime(p.created);
    if (p.expires) v["expiringAt"] = JiraTime(*p.expires);
    if (p.last_accessed) v["lastAccessedAt"] = JiraTime(*p.last_accessed);
    v["userProfileResource"]["key"] = owner.key;
    v["userProfileResource"]["name"] = owner.name;
    v["userProfileResource"]["displayName"] = owner.display_name;
    j["values"].append(v);
  }
  j["size"] = static_cast<Json::UInt64>(j["values"].size());
  j["isLastPage"] = end >= matching.size();
  return JsonResponse(200, j);
}

HttpResponse FakeJira::Impl::DcApplicationLinks(Ctx& ctx) {
  // Shape UNVERIFIED beyond the application id, type, name and URLs.
  if (auto r = Require(ctx, "ADMINISTER")) return *r;
  Json::Value j;
  j["list"] = Json::Value(Json::arrayValue);
  for (const auto& l : app_links_) {
    Json::Value app;
    app["id"] = l.id;
    app["typeId"] = l.type;
    app["name"] = l.name;
    app["displayUrl"] = l.display_url;
    app["rpcUrl"] = l.display_url;
    app["isPrimary"] = false;
    app["isSystem"] = false;
    Json::Value item;
    item["application"] = app;
    j["list"].append(item);
  }
  return JsonResponse(200, j);
}

HttpResponse FakeJira::Impl::DcOAuthClients(Ctx& ctx) {
  if (ctx.id.kind != Identity::kUser || !dir.HasPermission(ctx.id.user, "ADMINISTER")) {
    return ErrorResponse(401, {"Administrator access is required."});
  }
  Json::Value out(Json::arrayValue);
  for (const OAuthClientSpec* c : oauth.Clients()) {
    Json::Value j;
    j["id"] = c->client_id;
    j["clientId"] = c->client_id;
    j["name"] = c->name;
    j["redirects"] = Json::Value(Json::arrayValue);
    for (const auto& r : c->redirect_uris) j["redirects"].append(r);
    std::string scope;
    for (const auto& s : c->scopes) scope += (scope.empty() ? "" : " ") + s;
    j["scope"] = scope;
    out.append(j);
  }
  return JsonResponse(200, out);
}

HttpResponse FakeJira::Impl::DcOAuthAuthorize(Ctx& ctx) {
  // The browser consent page, reduced to its outcome for a logged-in user: a redirect carrying
  // the code.
  if (auto r = RequireUser(ctx)) return *r;
  const std::string client = ctx.req.Query("client_id").value_or("");
  const std::string redirect = ctx.req.Query("redirect_uri").value_or("");
  const std::string state = ctx.req.Query("state").value_or("");
  const std::string challenge = ctx.req.Query("code_challenge").value_or("");
  if (ctx.req.Query("response_type").value_or("") != "code") {
    return ErrorResponse(400, {"response_type must be code."});
  }
  if (!challenge.empty() && ctx.req.Query("code_challenge_method").value_or("") != "S256") {
    return ErrorResponse(400, {"Only the S256 code challenge method is supported."});
  }
  std::vector<std::string> scopes;
  std::string scope = ctx.req.Query("scope").value_or("");
  for (std::size_t start = 0; start < scope.size();) {
    const std::size_t sp = scope.find(' ', start);
    const std::string one =
        scope.substr(start, sp == std::string::npos ? std::string::npos : sp - start);
    if (!one.empty()) scopes.push_back(one);
    if (sp == std::string::npos) break;
    start = sp + 1;
  }
  // Scopes are capped by the user's own rights.
  for (const auto& s : scopes) {
    if ((s == "ADMIN" && !dir.HasPermission(ctx.id.user, "ADMINISTER")) ||
        (s == "SYSTEM_ADMIN" && !dir.HasPermission(ctx.id.user, "SYSTEM_ADMIN"))) {
      return ErrorResponse(403, {"The user cannot grant scope " + s + "."});
    }
  }
  auto code = oauth.IssueCode(client, ctx.id.user, redirect, scopes, challenge, ctx.now);
  if (!code.ok()) return ErrorResponse(400, {code.status().message()});
  HttpResponse r = Empty(302);
  std::string location =
      redirect + (redirect.find('?') == std::string::npos ? "?" : "&") + "code=" + UrlEncode(*code);
  if (!state.empty()) location += "&state=" + UrlEncode(state);
  r.WithHeader("Location", location);
  return r;
}

HttpResponse FakeJira::Impl::DcOAuthToken(Ctx& ctx) {
  // Parameters come as a form body or, as Atlassian's examples show, in the query string.
  // FAKE ASSUMPTION: a JSON body is not accepted by the Data Center provider.
  std::map<std::string, std::string> params;
  for (const auto& [k, v] : ctx.req.query) params[k] = v;
  if (!ctx.req.body.empty()) {
    const std::string type = ToLower(ctx.req.Header("content-type"));
    if (type.rfind("application/x-www-form-urlencoded", 0) != 0) {
      Json::Value j;
      j["error"] = "invalid_request";
      j["error_description"] = "The token endpoint takes application/x-www-form-urlencoded.";
      return JsonResponse(400, j);
    }
    auto form = ParseForm(ctx.req.body);
    if (!form) {
      Json::Value j;
      j["error"] = "invalid_request";
      j["error_description"] = "Malformed form body.";
      return JsonResponse(400, j);
    }
    for (auto& [k, v] : *form) params[k] = v;
  }
  jira_fake::TokenResult result = oauth.Token(params, ctx.now);
  for (auto& [k, v] : params) WipeString(v);
  RecordLogin(result.principal, "oauth", result.outcome);
  if (result.revoked_family_user) {
    const std::string who = dir.User(*result.revoked_family_user).name;
    Log("oauth_family_revoked", who, who, result.principal, "", result.outcome);
  }
  HttpResponse r = JsonResponse(result.status, result.body);
  r.WithHeader("Pragma", "no-cache");
  return r;
}

}  // namespace cakewalk::testing
