// FakeJira: the Jira Cloud routes — REST API 3 on the site and through the gateway, the
// organization admin API, the OAuth token endpoint, accessible-resources and tenant_info.
#include <openssl/crypto.h>

#include <algorithm>

#include "base/encoding.h"
#include "base/json.h"
#include "tests/fakes/jira/fake_jira_impl.h"

namespace cakewalk::testing {

using jira_fake::ToLower;

namespace {

using Segs = std::vector<std::string>;

HttpResponse OrgError(int status, const std::string& message) {
  Json::Value j;
  j["code"] = status;
  j["message"] = message;
  return FakeJira::Impl::JsonResponse(status, j);
}

constexpr std::string_view kIdpMessage =
    "Group membership can't be changed here: external user management is enabled for this site.";

}  // namespace

Json::Value FakeJira::Impl::CloudUserJson(const Ctx& ctx, UserIndex u, bool full,
                                          bool expand_groups, bool expand_roles) const {
  const UserRecord r = dir.User(u);
  Json::Value j(Json::objectValue);
  j["self"] = Url(ctx, "/user", {{"accountId", r.account_id}});
  j["accountId"] = r.account_id;
  j["accountType"] = std::string(CloudAccountTypeName(r.account_type));
  if (r.email && !r.email_hidden) {
    j["emailAddress"] = *r.email;
  } else if (opt.hidden_email_style == HiddenEmailStyle::kNull) {
    j["emailAddress"] = Json::Value(Json::nullValue);
  }
  Json::Value avatars(Json::objectValue);
  for (const char* size : {"16x16", "24x24", "32x32", "48x48"}) {
    avatars[size] = "https://avatar-management.example/avatars/" + r.account_id + "?size=" + size;
  }
  j["avatarUrls"] = avatars;
  j["displayName"] = r.display_name;
  j["active"] = r.active;
  j["timeZone"] = "Europe/Berlin";
  j["locale"] = "en_US";
  if (!full) return j;
  const auto groups = dir.GroupsOf(u);
  j["groups"]["size"] = static_cast<Json::UInt64>(groups.size());
  j["groups"]["items"] = Json::Value(Json::arrayValue);
  if (expand_groups) {
    for (GroupIndex g : groups) {
      Json::Value item;
      item["name"] = dir.group(g).name;
      item["groupId"] = dir.group(g).id;
      item["self"] = Url(ctx, "/group", {{"groupId", dir.group(g).id}});
      j["groups"]["items"].append(item);
    }
  }
  const auto products = dir.ProductsOf(u);
  j["applicationRoles"]["size"] = static_cast<Json::UInt64>(products.size());
  j["applicationRoles"]["items"] = Json::Value(Json::arrayValue);
  if (expand_roles) {
    for (const auto& key : products) {
      Json::Value item;
      item["key"] = key;
      item["name"] = dir.FindRole(key)->name;
      j["applicationRoles"]["items"].append(item);
    }
  }
  j["expand"] = "groups,applicationRoles";
  return j;
}

std::optional<UserIndex> FakeJira::Impl::CloudFindUser(std::string_view account_id) const {
  return dir.FindByAccountId(account_id);
}

HttpResponse FakeJira::Impl::RouteCloud(Ctx& ctx) {
  const Segs& a = ctx.segs;
  const std::string& m = ctx.req.method;
  auto method = [&](MethodHandlers handlers) { return ByMethod(m, handlers); };
  if (PathIs(a, {"serverInfo"})) return method({{"GET", [&] { return CloudServerInfo(ctx); }}});
  if (PathIs(a, {"myself"})) return method({{"GET", [&] { return CloudMyself(ctx); }}});
  if (PathIs(a, {"mypermissions"}))
    return method({{"GET", [&] { return CloudMyPermissions(ctx); }}});
  if (PathIs(a, {"permissions", "check"})) {
    return method({{"POST", [&] { return CloudPermissionsCheck(ctx); }}});
  }
  if (PathIs(a, {"user"})) {
    return method({{"GET", [&] { return CloudGetUser(ctx); }},
                   {"POST", [&] { return CloudCreateUser(ctx); }},
                   {"DELETE", [&] { return CloudDeleteUser(ctx); }}});
  }
  if (PathIs(a, {"user", "groups"})) return method({{"GET", [&] { return CloudUserGroups(ctx); }}});
  if (PathIs(a, {"users", "search"}) || PathIs(a, {"users"})) {
    return method({{"GET", [&] { return CloudUsersSearch(ctx); }}});
  }
  if (PathIs(a, {"user", "search"})) return method({{"GET", [&] { return CloudUserSearch(ctx); }}});
  if (PathIs(a, {"group", "bulk"})) return method({{"GET", [&] { return CloudGroupBulk(ctx); }}});
  if (PathIs(a, {"group", "member"}))
    return method({{"GET", [&] { return CloudGroupMembers(ctx); }}});
  if (PathIs(a, {"group", "user"})) {
    return method({{"POST", [&] { return CloudGroupUser(ctx, true); }},
                   {"DELETE", [&] { return CloudGroupUser(ctx, false); }}});
  }
  if (PathIs(a, {"group"})) {
    return method({{"POST", [&] { return CloudGroupCreateDelete(ctx, true); }},
                   {"DELETE", [&] { return CloudGroupCreateDelete(ctx, false); }}});
  }
  if (PathIs(a, {"groups", "picker"}))
    return method({{"GET", [&] { return CloudGroupsPicker(ctx); }}});
  if (PathIs(a, {"applicationrole"})) {
    return method({{"GET", [&] { return CloudApplicationRoles(ctx, nullptr); }}});
  }
  if (PathIs(a, {"applicationrole", "*"})) {
    return method({{"GET", [&] { return CloudApplicationRoles(ctx, &a[1]); }}});
  }
  return ErrorResponse(404, {"No resource found for " + ctx.req.path});
}

HttpResponse FakeJira::Impl::CloudServerInfo(Ctx& ctx) {
  Json::Value j;
  j["baseUrl"] = ctx.base;
  j["displayUrl"] = ctx.base;
  j["version"] = "1001.0.0-SNAPSHOT";
  j["versionNumbers"] = Json::Value(Json::arrayValue);
  for (int v : {1001, 0, 0}) j["versionNumbers"].append(v);
  j["deploymentType"] = "Cloud";
  j["buildNumber"] = 100282;
  j["buildDate"] = "2026-01-10T00:00:00.000+0000";
  j["serverTime"] = JiraTime(ctx.now);
  j["scmInfo"] = "5330f7d9a1b2c3d4e5f60718293a4b5c6d7e8f90";
  j["serverTitle"] = "Jira";
  j["defaultLocale"]["locale"] = "en_US";
  j["serverTimeZone"] = "Etc/UTC";
  return JsonResponse(200, j);
}

HttpResponse FakeJira::Impl::CloudMyself(Ctx& ctx) {
  if (auto r = RequireUser(ctx)) return *r;
  if (auto r = RequireScopes(ctx, {"read:jira-user"}, {"read:user:jira"})) return *r;
  const std::string expand = ctx.req.Query("expand").value_or("");
  return JsonResponse(
      200, CloudUserJson(ctx, ctx.id.user, true, expand.find("groups") != std::string::npos,
                         expand.find("applicationRoles") != std::string::npos));
}

HttpResponse FakeJira::Impl::CloudMyPermissions(Ctx& ctx) {
  if (auto r = RequireScopes(ctx, {"read:jira-work"}, {"read:permission:jira"})) return *r;
  auto wanted_param = ctx.req.Query("permissions");
  if (!wanted_param || wanted_param->empty()) {
    return ErrorResponse(400, {"The permissions query parameter is required."});
  }
  std::vector<std::string> wanted;
  for (std::size_t start = 0;;) {
    const std::size_t comma = wanted_param->find(',', start);
    wanted.push_back(wanted_param->substr(
        start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  Json::Value perms(Json::objectValue);
  for (const auto& w : wanted) {
    const auto& catalog = jira_fake::GlobalPermissionCatalog();
    auto it =
        std::find_if(catalog.begin(), catalog.end(), [&](const auto& p) { return p.key == w; });
    if (it == catalog.end()) return ErrorResponse(400, {"Invalid permission key: " + w});
    const bool have = ctx.id.kind == Identity::kUser && dir.HasPermission(ctx.id.user, w);
    perms[w] = PermissionJson(*it, have);
  }
  Json::Value j;
  j["permissions"] = perms;
  return JsonResponse(200, j);
}

HttpResponse FakeJira::Impl::CloudPermissionsCheck(Ctx& ctx) {
  Json::Value body;
  if (auto r = ReadJsonBody(ctx, &body)) return *r;
  if (auto r = CheckBodyKeys(body, {"accountId", "globalPermissions", "projectPermissions"})) {
    return *r;
  }
  bool bad = false;
  auto account = BodyString(body, "accountId", &bad);
  auto global = BodyStrings(body, "globalPermissions", &bad);
  if (bad) return ErrorResponse(400, {"Malformed request."});
  std::optional<UserIndex> who;
  if (account) {
    if (ctx.id.kind != Identity::kUser || !dir.HasPermission(ctx.id.user, "ADMINISTER")) {
      if (!(ctx.id.kind == Identity::kUser && dir.User(ctx.id.user).account_id == *account)) {
        return ErrorResponse(403, {"Only Jira administrators can perform this operation."});
      }
    }
    who = CloudFindUser(*account);
    if (!who) return ErrorResponse(400, {}, {{"accountId", "The account ID is not valid."}});
  } else if (ctx.id.kind == Identity::kUser) {
    who = ctx.id.user;
  }
  std::map<std::string, std::string> unknown;
  Json::Value granted(Json::arrayValue);
  const auto& catalog = jira_fake::GlobalPermissionCatalog();
  for (const auto& key : global.value_or(std::vector<std::string>{})) {
    if (std::none_of(catalog.begin(), catalog.end(), [&](const auto& p) { return p.key == key; })) {
      unknown[key] = "Unrecognized permission";
      continue;
    }
    if (who && dir.HasPermission(*who, key)) granted.append(key);
  }
  if (!unknown.empty()) return ErrorResponse(400, {}, unknown);
  Json::Value j;
  j["globalPermissions"] = granted;
  j["projectPermissions"] = Json::Value(Json::arrayValue);
  return JsonResponse(200, j);
}

HttpResponse FakeJira::Impl::CloudGetUser(Ctx& ctx) {
  if (auto r = RequireUser(ctx)) return *r;
  if (auto r = RequireScopes(ctx, {"read:jira-user"}, {"read:user:jira"})) return *r;
  auto account = ctx.req.Query("accountId");
  if (!account) {
    if (ctx.req.Query("username") || ctx.req.Query("key")) {
      return ErrorResponse(400, {"The username and key query parameters are no longer supported; "
                                 "use accountId."});
    }
    return ErrorResponse(400, {"The accountId query parameter needs to be provided."});
  }
  auto u = CloudFindUser(*account);
  if (!u)
    return ErrorResponse(404,
                         {"Specified user does not exist or you do not have required permissions"});
  const std::string expand = ctx.req.Query("expand").value_or("");
  return JsonResponse(200, CloudUserJson(ctx, *u, true, expand.find("groups") != std::string::npos,
                                         expand.find("applicationRoles") != std::string::npos));
}

HttpResponse FakeJira::Impl::CloudCreateUser(Ctx& ctx) {
  if (auto r = RequireBasicOnly(ctx)) return *r;
  if (auto r = Require(ctx, "ADMINISTER")) return *r;
  Json::Value body;
  if (auto r = ReadJsonBody(ctx, &body)) return *r;
  if (auto r = CheckBodyKeys(body, {"emailAddress", "products", "displayName", "name", "password",
                                    "key", "self", "applicationKeys", "notification"})) {
    return *r;
  }
  bool bad = false;
  auto email = BodyString(body, "emailAddress", &bad);
  auto products = BodyStrings(body, "products", &bad);
  auto display = BodyString(body, "displayName", &bad);
  if (bad) return ErrorResponse(400, {"The request body has a field of the wrong type."});
  std::map<std::string, std::string> errors;
  if (!email || email->find('@') == std::string::npos) {
    errors["emailAddress"] = "Email address is required.";
  }
  if (!products) errors["products"] = "products is required; use [] for no product access.";
  if (!errors.empty()) return ErrorResponse(400, {}, errors);
  if (opt.idp_managed) {
    return ErrorResponse(403, {"Users can't be created here: external user management is enabled "
                               "for this site."});
  }
  std::vector<AppRole*> roles;
  for (const auto& p : *products) {
    AppRole* role = dir.FindRole(p);
    if (role == nullptr) return ErrorResponse(400, {}, {{"products", "Unknown product: " + p}});
    roles.push_back(role);
  }
  const std::string actor = ActorLabel(ctx);
  auto existing = dir.FindByEmail(*email);
  std::optional<UserIndex> removed;  // an account once removed from the site
  for (UserIndex u : existing) {
    if (dir.IsDeleted(u)) removed = u;
  }
  std::erase_if(existing, [&](UserIndex u) { return dir.IsDeleted(u); });
  if (!existing.empty()) {
    const UserIndex u = existing.front();
    // An existing user is answered with 201 when it already has Jira access, 400 otherwise.
    if (dir.ProductsOf(u).empty()) {
      return ErrorResponse(400, {"The user already exists but has no access to Jira."});
    }
    for (AppRole* role : roles) {
      if (auto problem = SeatProblem(*role, u)) return ErrorResponse(400, {*problem});
    }
    for (AppRole* role : roles) {
      if (dir.HasProduct(u, *role)) continue;
      for (GroupIndex g : role->default_groups) {
        ChangeMembership(g, u, true, actor, "product access");
      }
    }
    return JsonResponse(201, CloudUserJson(ctx, u, true, false, false));
  }
  for (AppRole* role : roles) {
    auto it = opt.seat_limits.find(role->key);
    if (it != opt.seat_limits.end() &&
        dir.RoleUserCount(*role) + 1 > static_cast<std::uint64_t>(it->second)) {
      return ErrorResponse(
          400, {"The number of licensed users for " + role->name + " has been exceeded."});
    }
  }
  if (removed) {
    // The Atlassian account outlived its removal from the site: it comes back, same accountId.
    UserRecord back = dir.User(*removed);
    back.deleted = false;
    dir.PutUser(*removed, back);
    Log("user_created", back.account_id, *email, "", actor, "re-added to the site");
    for (AppRole* role : roles) {
      for (GroupIndex g : role->default_groups) {
        ChangeMembership(g, *removed, true, actor, "product access");
      }
    }
    return JsonResponse(201, CloudUserJson(ctx, *removed, true, false, false));
  }
  UserRecord r;
  r.email = *email;
  r.display_name = display.value_or(email->substr(0, email->find('@')));
  r.account_type = CloudAccountType::kAtlassian;
  auto added = dir.AddUser(std::move(r));
  if (!added.ok()) return ErrorResponse(400, {added.status().message()});
  const UserIndex u = *added;
  Log("user_created", dir.User(u).account_id, *email, "", actor);
  for (AppRole* role : roles) {
    for (GroupIndex g : role->default_groups) ChangeMembership(g, u, true, actor, "product access");
  }
  HttpResponse resp = JsonResponse(201, CloudUserJson(ctx, u, true, false, false));
  resp.WithHeader("Location", Url(ctx, "/user", {{"accountId", dir.User(u).account_id}}));
  return resp;
}

HttpResponse FakeJira::Impl::CloudDeleteUser(Ctx& ctx) {
  if (auto r = RequireBasicOnly(ctx)) return *r;
  if (auto r = Require(ctx, "SYSTEM_ADMIN")) return *r;
  auto account = ctx.req.Query("accountId");
  if (!account) return ErrorResponse(400, {"The accountId query parameter needs to be provided."});
  auto u = CloudFindUser(*account);
  if (!u || dir.IsDeleted(*u))
    return ErrorResponse(404, {"The user with accountId '" + *account + "' does not exist."});
  if (*u == ctx.id.user) return ErrorResponse(400, {"You cannot remove yourself."});
  if (opt.idp_managed) {
    return ErrorResponse(400, {"Users can't be removed here: external user management is enabled "
                               "for this site."});
  }
  const std::string actor = ActorLabel(ctx);
  RemoveAllMemberships(*u, actor, "removed from site");
  UserRecord r = dir.User(*u);
  r.deleted = true;  // removed from the site; the Atlassian account itself survives
  dir.PutUser(*u, r);
  Log("user_deleted", r.account_id, UserLabel(*u), "", actor, "removed from site");
  return Empty(204);
}

HttpResponse FakeJira::Impl::CloudUserGroups(Ctx& ctx) {
  if (auto r = RequireUser(ctx)) return *r;
  if (auto r = RequireScopes(ctx, {"read:jira-user"}, {"read:group:jira"})) return *r;
  auto account = ctx.req.Query("accountId");
  if (!account) return ErrorResponse(400, {"The accountId query parameter needs to be provided."});
  auto u = CloudFindUser(*account);
  if (!u)
    return ErrorResponse(404,
                         {"Specified user does not exist or you do not have required permissions"});
  Json::Value out(Json::arrayValue);
  for (GroupIndex g : dir.GroupsOf(*u)) {
    Json::Value item;
    item["name"] = dir.group(g).name;
    item["groupId"] = dir.group(g).id;
    item["self"] = Url(ctx, "/group", {{"groupId", dir.group(g).id}});
    out.append(item);
  }
  return JsonResponse(200, out);
}

HttpResponse FakeJira::Impl::CloudUsersSearch(Ctx& ctx) {
  if (auto r = RequireScopes(ctx, {"read:jira-user"}, {"read:user:jira"})) return *r;
  bool bad = false;
  const std::int64_t start = QueryInt(ctx, "startAt", &bad).value_or(0);
  std::int64_t max = QueryInt(ctx, "maxResults", &bad).value_or(50);
  if (bad || start < 0 || max < 0) return ErrorResponse(400, {"Invalid startAt or maxResults."});
  max = std::min<std::int64_t>(max, 1000);
  Json::Value out(Json::arrayValue);
  // Anonymous callers (e.g. after a failed Basic login) and callers without "Browse users and
  // groups" get an empty 200.
  if (ctx.id.kind != Identity::kUser || !dir.HasPermission(ctx.id.user, "USER_PICKER")) {
    return JsonResponse(200, out);
  }
  // The range is taken first, privacy filtering drops entries afterwards: pages come back short
  // and only an empty page means the end (Atlassian's description of these operations).
  const std::uint64_t n = dir.user_count();
  const std::uint64_t end = std::min<std::uint64_t>(n, static_cast<std::uint64_t>(start + max));
  const std::uint64_t begin =
      static_cast<std::uint64_t>(start) > end ? end : static_cast<std::uint64_t>(start);
  for (std::uint64_t u = OverlapStart(begin, end); u < end; ++u) {
    if (dir.IsSearchHidden(static_cast<UserIndex>(u))) continue;
    out.append(CloudUserJson(ctx, static_cast<UserIndex>(u), false, false, false));
  }
  return JsonResponse(200, Unreliable(std::move(out)));
}

HttpResponse FakeJira::Impl::CloudUserSearch(Ctx& ctx) {
  if (auto r = RequireScopes(ctx, {"read:jira-user"}, {"read:user:jira"})) return *r;
  auto query = ctx.req.Query("query");
  auto account = ctx.req.Query("accountId");
  auto property = ctx.req.Query("property");
  if (!query && !account && !property) {
    return ErrorResponse(400, {"One of 'accountId', 'query' or 'property' must be provided."});
  }
  if (query && account) return ErrorResponse(400, {"'query' and 'accountId' cannot be combined."});
  bool bad = false;
  const std::int64_t start = QueryInt(ctx, "startAt", &bad).value_or(0);
  std::int64_t max = QueryInt(ctx, "maxResults", &bad).value_or(50);
  if (bad || start < 0 || max < 0) return ErrorResponse(400, {"Invalid startAt or maxResults."});
  Json::Value out(Json::arrayValue);
  if (ctx.id.kind != Identity::kUser || !dir.HasPermission(ctx.id.user, "USER_PICKER") ||
      property) {
    return JsonResponse(200, out);
  }
  // Active users only, and only the first 1000 matches can be reached.
  const std::uint64_t end = std::min<std::uint64_t>(1000, static_cast<std::uint64_t>(start + max));
  const std::string q = ToLower(query.value_or(""));
  std::uint64_t seen = 0;
  for (UserIndex u = 0; u < dir.user_count() && seen < end; ++u) {
    if (!dir.IsActive(u) || dir.IsDeleted(u) || dir.IsSearchHidden(u)) continue;
    const UserRecord r = dir.User(u);
    bool match = false;
    if (account) {
      match = r.account_id == *account;
    } else {
      if (r.email && ToLower(*r.email).rfind(q, 0) == 0) match = true;
      const std::string d = ToLower(r.display_name);
      for (std::size_t i = 0; i < d.size() && !match; ++i) {
        if ((i == 0 || d[i - 1] == ' ') && d.compare(i, q.size(), q) == 0) match = true;
      }
    }
    if (!match) continue;
    if (seen >= static_cast<std::uint64_t>(start)) {
      out.append(CloudUserJson(ctx, u, false, false, false));
    }
    ++seen;
  }
  return JsonResponse(200, out);
}

HttpResponse FakeJira::Impl::CloudGroupBulk(Ctx& ctx) {
  if (auto r = RequireUser(ctx)) return *r;
  if (auto r = RequireScopes(ctx, {"read:jira-user"}, {"read:group:jira"})) return *r;
  if (!dir.HasPermission(ctx.id.user, "USER_PICKER")) {
    return ErrorResponse(403, {"Browse users and groups permission is required to view groups."});
  }
  bool bad = false;
  const std::int64_t start = QueryInt(ctx, "startAt", &bad).value_or(0);
  std::int64_t max = QueryInt(ctx, "maxResults", &bad).value_or(50);
  if (bad || start < 0 || max < 0) return ErrorResponse(400, {"Invalid startAt or maxResults."});
  // FAKE ASSUMPTION (the real maximum is UNVERIFIED): at most 50 per page.
  max = std::min<std::int64_t>(max, 50);
  std::vector<std::string> ids, names;
  for (auto [it, end] = ctx.req.query.equal_range("groupId"); it != end; ++it)
    ids.push_back(it->second);
  for (auto [it, end] = ctx.req.query.equal_range("groupName"); it != end; ++it) {
    names.push_back(ToLower(it->second));
  }
  const std::string access = ctx.req.Query("accessType").value_or("");
  const std::string app = ctx.req.Query("applicationKey").value_or("");
  if (!access.empty() && access != "site-admin" && access != "admin" && access != "user") {
    return ErrorResponse(400, {"Invalid accessType: " + access});
  }
  const AppRole* role = app.empty() ? nullptr : dir.FindRole(app);
  if (!app.empty() && role == nullptr)
    return ErrorResponse(400, {"Invalid applicationKey: " + app});
  auto perm_groups = [&](const char* key) { return dir.global_permissions()[key]; };
  std::vector<GroupIndex> matching;
  for (GroupIndex g = 0; g < dir.group_count(); ++g) {
    const auto& group = dir.group(g);
    if (group.deleted) continue;
    if (!ids.empty() && std::find(ids.begin(), ids.end(), group.id) == ids.end()) continue;
    if (!names.empty() &&
        std::find(names.begin(), names.end(), ToLower(group.name)) == names.end()) {
      continue;
    }
    if (role != nullptr &&
        std::find(role->groups.begin(), role->groups.end(), g) == role->groups.end()) {
      continue;
    }
    if (!access.empty()) {
      const auto sys = perm_groups("SYSTEM_ADMIN");
      const auto adm = perm_groups("ADMINISTER");
      const bool is_sys = std::find(sys.begin(), sys.end(), g) != sys.end();
      const bool is_adm = std::find(adm.begin(), adm.end(), g) != adm.end();
      bool is_user = false;
      for (const AppRole& r : dir.roles()) {
        is_user |= std::find(r.groups.begin(), r.groups.end(), g) != r.groups.end();
      }
      if ((access == "site-admin" && !is_sys) || (access == "admin" && !is_adm) ||
          (access == "user" && !is_user)) {
        continue;
      }
    }
    matching.push_back(g);
  }
  const std::uint64_t end =
      std::min<std::uint64_t>(matching.size(), static_cast<std::uint64_t>(start + max));
  Json::Value j;
  j["self"] = Url(ctx, "/group/bulk",
                  {{"startAt", std::to_string(start)}, {"maxResults", std::to_string(max)}});
  j["maxResults"] = static_cast<Json::Int64>(max);
  j["startAt"] = static_cast<Json::Int64>(start);
  j["values"] = Json::Value(Json::arrayValue);
  for (std::uint64_t k = static_cast<std::uint64_t>(start); k < end; ++k) {
    Json::Value item;
    item["groupId"] = dir.group(matching[k]).id;
    item["name"] = dir.group(matching[k]).name;
    j["values"].append(item);
  }
  // `total` counts this page, not the whole set.
  j["total"] = j["values"].size();
  const bool last = end >= matching.size();
  j["isLast"] = last;
  if (!last) {
    j["nextPage"] = Url(ctx, "/group/bulk",
                        {{"startAt", std::to_string(end)}, {"maxResults", std::to_string(max)}});
  }
  return JsonResponse(200, j);
}

HttpResponse FakeJira::Impl::CloudGroupMembers(Ctx& ctx) {
  if (auto r = RequireUser(ctx)) return *r;
  if (auto r = RequireScopes(ctx, {"manage:jira-configuration"},
                             {"read:group:jira", "read:user:jira"})) {
    return *r;
  }
  if (auto r = Require(ctx, "ADMINISTER")) return *r;
  bool bad = false;
  const std::int64_t start = QueryInt(ctx, "startAt", &bad).value_or(0);
  std::int64_t max = QueryInt(ctx, "maxResults", &bad).value_or(50);
  const bool inactive = QueryBool(ctx, "includeInactiveUsers", &bad).value_or(false);
  if (bad || start < 0 || max < 1) return ErrorResponse(400, {"Invalid startAt or maxResults."});
  max = std::min<std::int64_t>(max, 50);
  auto id = ctx.req.Query("groupId");
  auto name = ctx.req.Query("groupname");
  if (!id && !name) return ErrorResponse(400, {"Either groupId or groupname must be provided."});
  auto g = id ? dir.FindGroupById(*id) : dir.FindGroup(*name);
  if (!g) return ErrorResponse(404, {"The group was not found."});
  const auto& members = ListedMembers(*g, inactive);
  const std::uint64_t end =
      std::min<std::uint64_t>(members.size(), static_cast<std::uint64_t>(start + max));
  auto page_url = [&](std::uint64_t at) {
    return Url(ctx, "/group/member",
               {{"groupId", dir.group(*g).id},
                {"includeInactiveUsers", inactive ? "true" : "false"},
                {"startAt", std::to_string(at)},
                {"maxResults", std::to_string(max)}});
  };
  Json::Value j;
  j["self"] = page_url(static_cast<std::uint64_t>(start));
  j["maxResults"] = static_cast<Json::Int64>(max);
  j["startAt"] = static_cast<Json::Int64>(start);
  j["total"] = static_cast<Json::UInt64>(members.size());
  j["values"] = Json::Value(Json::arrayValue);
  for (std::uint64_t k = OverlapStart(static_cast<std::uint64_t>(start), end); k < end; ++k) {
    j["values"].append(CloudUserJson(ctx, members[k], false, false, false));
  }
  j["values"] = Unreliable(std::move(j["values"]));
  const bool last = end >= members.size();
  j["isLast"] = last;
  if (!last) j["nextPage"] = page_url(end);
  return JsonResponse(200, j);
}

HttpResponse FakeJira::Impl::CloudGroupUser(Ctx& ctx, bool add) {
  if (auto r = RequireUser(ctx)) return *r;
  if (auto r = RequireScopes(ctx, {"manage:jira-configuration"}, {"write:group:jira"})) return *r;
  if (auto r = Require(ctx, "SYSTEM_ADMIN")) return *r;
  auto id = ctx.req.Query("groupId");
  auto name = ctx.req.Query("groupname");
  if (!id && !name) return ErrorResponse(400, {"Either groupId or groupname must be provided."});
  std::string account;
  if (add) {
    Json::Value body;
    if (auto r = ReadJsonBody(ctx, &body)) return *r;
    if (auto r = CheckBodyKeys(body, {"accountId", "name"})) return *r;
    bool bad = false;
    if (body.isMember("name"))
      return ErrorResponse(400, {"'name' is no longer supported; use accountId."});
    account = BodyString(body, "accountId", &bad).value_or("");
    if (bad || account.empty())
      return ErrorResponse(400, {}, {{"accountId", "accountId is required."}});
  } else {
    account = ctx.req.Query("accountId").value_or("");
    if (account.empty()) return ErrorResponse(400, {}, {{"accountId", "accountId is required."}});
  }
  auto g = id ? dir.FindGroupById(*id) : dir.FindGroup(*name);
  if (!g) return ErrorResponse(404, {"The group was not found."});
  auto u = CloudFindUser(account);
  if (!u || dir.IsDeleted(*u)) return ErrorResponse(404, {"The user was not found."});
  // FAKE ASSUMPTION: status 403 for the refusal; the text says "external user management is
  // enabled", as Atlassian's community answers quote it.
  if (opt.idp_managed) return ErrorResponse(403, {std::string(kIdpMessage)});
  const std::string group_name = dir.group(*g).name;
  if (add) {
    if (!ChangeMembership(*g, *u, true, ActorLabel(ctx), "")) {
      return ErrorResponse(
          400, {"Cannot add user. The user is already a member of '" + group_name + "'."});
    }
    Json::Value j;
    j["name"] = group_name;
    j["groupId"] = dir.group(*g).id;
    j["self"] = Url(ctx, "/group", {{"groupId", dir.group(*g).id}});
    j["users"]["size"] = static_cast<Json::UInt64>(dir.group(*g).members.size());
    j["users"]["items"] = Json::Value(Json::arrayValue);
    j["users"]["max-results"] = 50;
    j["users"]["start-index"] = 0;
    j["users"]["end-index"] = 0;
    j["expand"] = "users";
    return JsonResponse(201, j);
  }
  if (!ChangeMembership(*g, *u, false, ActorLabel(ctx), "")) {
    return ErrorResponse(400,
                         {"Cannot remove user. The user is not a member of '" + group_name + "'."});
  }
  return Empty(200);
}

HttpResponse FakeJira::Impl::CloudGroupCreateDelete(Ctx& ctx, bool create) {
  if (auto r = RequireUser(ctx)) return *r;
  if (auto r = RequireScopes(ctx, {"manage:jira-configuration"}, {"write:group:jira"})) return *r;
  if (auto r = Require(ctx, "SYSTEM_ADMIN")) return *r;
  if (opt.idp_managed) return ErrorResponse(403, {std::string(kIdpMessage)});
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
    if (!g.ok()) return ErrorResponse(400, {"A group with this name already exists."});
    Log("group_created", dir.group(*g).id, *name, "", actor);
    Json::Value j;
    j["name"] = *name;
    j["groupId"] = dir.group(*g).id;
    j["self"] = Url(ctx, "/group", {{"groupId", dir.group(*g).id}});
    j["users"]["size"] = 0;
    j["users"]["items"] = Json::Value(Json::arrayValue);
    j["expand"] = "users";
    return JsonResponse(201, j);
  }
  auto id = ctx.req.Query("groupId");
  auto name = ctx.req.Query("groupname");
  if (!id && !name) return ErrorResponse(400, {"Either groupId or groupname must be provided."});
  auto g = id ? dir.FindGroupById(*id) : dir.FindGroup(*name);
  if (!g) return ErrorResponse(404, {"The group was not found."});
  for (UserIndex u : std::vector<UserIndex>(dir.group(*g).members)) {
    ChangeMembership(*g, u, false, actor, "group deleted");
  }
  const std::string shown = dir.group(*g).name;
  const std::string gid = dir.group(*g).id;
  dir.DeleteGroup(*g);
  Log("group_deleted", gid, shown, "", actor);
  return Empty(200);
}

HttpResponse FakeJira::Impl::CloudGroupsPicker(Ctx& ctx) {
  if (auto r = RequireScopes(ctx, {"read:jira-user"}, {"read:group:jira"})) return *r;
  return DcGroupsPicker(ctx);
}

HttpResponse FakeJira::Impl::CloudApplicationRoles(Ctx& ctx, const std::string* key) {
  if (auto r = RequireUser(ctx)) return *r;
  if (auto r = RequireScopes(ctx, {"manage:jira-configuration"}, {"read:application-role:jira"})) {
    return *r;
  }
  if (auto r = Require(ctx, "ADMINISTER")) return *r;
  if (key != nullptr) {
    const AppRole* role = dir.FindRole(*key);
    if (role == nullptr) return ErrorResponse(404, {"The application role was not found."});
    return JsonResponse(200, ApplicationRoleJson(ctx, *role));
  }
  Json::Value out(Json::arrayValue);
  for (const AppRole& role : dir.roles()) out.append(ApplicationRoleJson(ctx, role));
  return JsonResponse(200, out);
}

// ---- api.atlassian.com and auth.atlassian.com stand-ins -----------------------------------------

HttpResponse FakeJira::Impl::TenantInfo() {
  Json::Value j;
  j["cloudId"] = opt.cloud_id;
  return JsonResponse(200, j);
}

HttpResponse FakeJira::Impl::AccessibleResources(const HttpRequest& req, SysTime now) {
  if (req.method != "GET") return MethodNotAllowed();
  const std::string auth = req.Header("authorization");
  const jira_fake::AccessToken* at =
      auth.rfind("Bearer ", 0) == 0 ? oauth.FindAccessToken(auth.substr(7), now) : nullptr;
  if (at == nullptr) return OrgError(401, "Unauthorized");
  Json::Value site;
  site["id"] = opt.cloud_id;
  site["name"] = opt.site_name;
  const std::string host = req.Header("host").empty() ? "localhost" : req.Header("host");
  site["url"] = opt.base_url.empty() ? "https://" + host : opt.base_url;
  site["scopes"] = Json::Value(Json::arrayValue);
  for (const auto& s : at->scopes) site["scopes"].append(s);
  site["avatarUrl"] = "https://site-admin-avatar-cdn.example/avatars/240/rocket.png";
  Json::Value out(Json::arrayValue);
  out.append(site);
  return JsonResponse(200, out);
}

HttpResponse FakeJira::Impl::RouteCloudToken(const HttpRequest& req, SysTime now) {
  if (req.method != "POST") return MethodNotAllowed();
  std::map<std::string, std::string> params;
  const std::string type = ToLower(req.Header("content-type"));
  auto invalid = [](const char* why) {
    Json::Value j;
    j["error"] = "invalid_request";
    j["error_description"] = why;
    return JsonResponse(400, j);
  };
  if (type.rfind("application/json", 0) == 0) {
    auto parsed = ParseJson(req.body, "token request");
    if (!parsed.ok() || !parsed->isObject()) return invalid("Malformed JSON body.");
    for (const auto& name : parsed->getMemberNames()) {
      if (!(*parsed)[name].isString()) return invalid("Every parameter must be a string.");
      params[name] = (*parsed)[name].asString();
    }
  } else if (type.rfind("application/x-www-form-urlencoded", 0) == 0) {
    auto form = ParseForm(req.body);
    if (!form) return invalid("Malformed form body.");
    params = std::move(*form);
  } else {
    return invalid("Unsupported content type.");
  }
  jira_fake::TokenResult result = oauth.Token(params, now);
  for (auto& [k, v] : params) WipeString(v);
  RecordLogin(result.principal, "oauth", result.outcome);
  if (result.revoked_family_user) {
    const UserIndex u = *result.revoked_family_user;
    Log("oauth_family_revoked", dir.User(u).account_id, UserLabel(u), result.principal, "",
        result.outcome);
  }
  return JsonResponse(result.status, result.body);
}

HttpResponse FakeJira::Impl::RouteOrgAdmin(const HttpRequest& req, const Segs& segs, SysTime now) {
  const std::string auth = req.Header("authorization");
  const OrgKey* key = nullptr;
  if (auth.rfind("Bearer ", 0) == 0) {
    const std::string presented = auth.substr(7);
    for (const OrgKey& k : org_keys_) {
      if (k.key.size() == presented.size() &&
          CRYPTO_memcmp(k.key.data(), presented.data(), presented.size()) == 0) {
        key = &k;
      }
    }
  }
  if (key == nullptr) {
    RecordLogin("org-key", "org_key", auth.empty() ? "missing" : "bad_credentials");
    return OrgError(401, "Unauthorized");
  }
  RecordLogin("org-key", "org_key", "ok");
  const std::string host = req.Header("host").empty() ? "localhost" : req.Header("host");
  const std::string root = "https://" + host + opt.org_admin_prefix;
  auto has = [&](const char* privilege) {
    return std::find(key->spec.privileges.begin(), key->spec.privileges.end(), privilege) !=
           key->spec.privileges.end();
  };
  bool bad = false;
  auto limit_of = [&](std::int64_t fallback) -> std::int64_t {
    auto v = req.Query("limit");
    if (!v) return fallback;
    if (v->empty() || v->size() > 6 ||
        !std::all_of(v->begin(), v->end(), [](char c) { return c >= '0' && c <= '9'; })) {
      bad = true;
      return fallback;
    }
    return std::stoll(*v);
  };
  auto cursor_of = [&]() -> std::uint64_t {
    auto c = req.Query("cursor");
    if (!c) return 0;
    auto decoded = Base64UrlDecode(*c);
    std::string text = decoded.ok() ? std::string(AsChars(*decoded)) : std::string();
    if (text.rfind("idx:", 0) != 0 || text.size() == 4 ||
        !std::all_of(text.begin() + 4, text.end(),
                     [](char ch) { return ch >= '0' && ch <= '9'; })) {
      bad = true;
      return 0;
    }
    return std::stoull(text.substr(4));
  };
  auto make_cursor = [](std::uint64_t i) {
    return Base64UrlEncode(AsBytes("idx:" + std::to_string(i)));
  };

  // /users/{accountId}/manage...
  if (segs.size() >= 3 && segs[0] == "users" && segs[2] == "manage") {
    auto u = CloudFindUser(segs[1]);
    if (!u) return OrgError(404, "The user was not found.");
    const UserRecord r = dir.User(*u);
    if (PathIs(segs, {"users", "*", "manage"})) {
      if (req.method != "GET") return MethodNotAllowed();
      Json::Value j(Json::objectValue);
      for (const char* p : {"email.set", "lifecycle.enablement", "profile.write", "profile.read",
                            "apiToken.read", "apiToken.delete"}) {
        const bool allowed = r.managed && has(p) && !key->spec.scoped;
        j[p]["allowed"] = allowed;
        if (!allowed) {
          j[p]["reason"]["key"] = !r.managed ? "account.not.managed" : "privilege.missing";
        }
      }
      return JsonResponse(200, j);
    }
    const bool disable = PathIs(segs, {"users", "*", "manage", "lifecycle", "disable"});
    const bool enable = PathIs(segs, {"users", "*", "manage", "lifecycle", "enable"});
    if (disable || enable) {
      if (req.method != "POST") return MethodNotAllowed();
      // UNVERIFIED (jira.js says so): user management refuses keys created with scopes.
      if (key->spec.scoped) return OrgError(403, "API keys with scopes cannot manage users.");
      if (!has("lifecycle.enablement"))
        return OrgError(403, "The API key lacks lifecycle.enablement.");
      if (!r.managed) return OrgError(403, "The account is not managed by your organization.");
      if (!req.body.empty()) {
        auto parsed = ParseJson(req.body, "request body");
        if (!parsed.ok() || !parsed->isObject() ||
            CheckBodyKeys(*parsed, {"message"}).has_value() ||
            (parsed->isMember("message") && !(*parsed)["message"].isString()) || enable) {
          return OrgError(400, "Invalid request body.");
        }
      }
      if (r.active != enable) {
        UserRecord changed = r;
        changed.active = enable;
        dir.PutUser(*u, changed);
        Log(enable ? "account_enabled" : "account_disabled", r.account_id, UserLabel(*u), "",
            "org-key");
      }
      return Empty(204);
    }
    if (PathIs(segs, {"users", "*", "manage", "api-tokens"})) {
      if (req.method != "GET") return MethodNotAllowed();
      if (!has("apiToken.read") || !r.managed) return OrgError(403, "Not allowed to read tokens.");
      Json::Value out(Json::arrayValue);
      for (const ApiToken& t : api_tokens_) {
        if (t.owner != *u) continue;
        Json::Value j;
        j["id"] = t.id;
        j["label"] = t.label;
        j["createdAt"] = FormatRfc3339(t.created);
        if (t.last_access) j["lastAccess"] = FormatRfc3339(*t.last_access);
        j["expiry"] = FormatRfc3339(t.expires);
        out.append(j);
      }
      return JsonResponse(200, out);
    }
    return OrgError(404, "Not found.");
  }

  // /admin/v1/orgs/{orgId}/users, /admin/v2/orgs/{orgId}/directories/-/users
  const bool v1 = PathIs(segs, {"admin", "v1", "orgs", "*", "users"});
  const bool v2 = PathIs(segs, {"admin", "v2", "orgs", "*", "directories", "-", "users"});
  const bool tokens = PathIs(segs, {"admin", "api-access", "v1", "orgs", "*", "api-tokens"});
  if (v1 || v2 || tokens) {
    if (req.method != "GET") return MethodNotAllowed();
    if (segs[tokens ? 4 : 3] != opt.org_id) return OrgError(404, "The organization was not found.");
    const std::int64_t limit = limit_of(20);
    const std::uint64_t cursor = cursor_of();
    if (bad || limit < 1 || limit > 100) return OrgError(400, "Invalid limit or cursor.");
    const std::string self = root + "/" + [&] {
      std::string p;
      for (const auto& s : segs) p += (p.empty() ? "" : "/") + UrlEncode(s);
      return p;
    }();
    Json::Value j;
    j["data"] = Json::Value(Json::arrayValue);
    std::uint64_t i = cursor;
    if (tokens) {
      for (; i < api_tokens_.size() && j["data"].size() < static_cast<Json::ArrayIndex>(limit);
           ++i) {
        const ApiToken& t = api_tokens_[i];
        const UserRecord owner = dir.User(t.owner);
        Json::Value v;
        v["id"] = t.id;
        v["label"] = t.label;
        v["status"] = now >= t.expires ? "expired" : "active";
        v["createdAt"] = FormatRfc3339(t.created);
        v["expiresAt"] = FormatRfc3339(t.expires);
        if (t.last_access) v["lastActiveAt"] = FormatRfc3339(*t.last_access);
        v["user"]["accountId"] = owner.account_id;
        v["user"]["name"] = owner.display_name;
        if (owner.email) v["user"]["email"] = *owner.email;
        j["data"].append(v);
      }
      if (i < api_tokens_.size())
        j["links"]["next"] = self + "?cursor=" + make_cursor(i) + "&limit=" + std::to_string(limit);
    } else {
      const std::uint64_t n = dir.user_count();
      for (; i < n && j["data"].size() < static_cast<Json::ArrayIndex>(limit); ++i) {
        const UserIndex u = static_cast<UserIndex>(i);
        const UserRecord r = dir.User(u);
        if (r.account_type == CloudAccountType::kCustomer)
          continue;  // JSM customers are not org accounts
        Json::Value v;
        const char* id_key = v1 ? "account_id" : "accountId";
        v[id_key] = r.account_id;
        v[v1 ? "account_type" : "accountType"] = std::string(CloudAccountTypeName(r.account_type));
        v[v1 ? "account_status" : "accountStatus"] = r.active ? "active" : "inactive";
        v["name"] = r.display_name;
        if (r.email) v["email"] = *r.email;
        if (r.last_login) v[v1 ? "last_active" : "lastActive"] = FormatRfc3339(*r.last_login);
        v[v1 ? "access_billable" : "accessBillable"] = !dir.ProductsOf(u).empty();
        Json::Value access(Json::arrayValue);
        for (const auto& p : dir.ProductsOf(u)) {
          Json::Value a;
          a["key"] = p;
          a["name"] = dir.FindRole(p)->name;
          access.append(a);
        }
        v[v1 ? "product_access" : "productAccess"] = access;
        j["data"].append(v);
      }
      if (i < n)
        j["links"]["next"] = self + "?cursor=" + make_cursor(i) + "&limit=" + std::to_string(limit);
    }
    j["links"]["self"] = self;
    return JsonResponse(200, j);
  }
  return OrgError(404, "Not found.");
}

}  // namespace cakewalk::testing
