#include "jira/jobs.h"

#include <algorithm>

#include "base/json.h"
#include "jira/client_util.h"
#include "jira/errors.h"

namespace cakewalk::jira {
namespace {

using internal::SameName;

Status AsInvalidParams(const Status& s) {
  if (s.ok()) return s;
  return InvalidParams("invalid params: " + s.message());
}

Status CheckObject(const Json::Value& params) {
  if (!params.isObject()) return InvalidParams("params must be a JSON object");
  return Status::Ok();
}

// A non-empty string without control characters.
void RequireText(JsonFields& f, const char* key, const std::string& value) {
  if (!f.ok() || value.empty()) {
    if (f.ok()) f.Fail(key, "must not be empty");
    return;
  }
  for (char c : value) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      f.Fail(key, "must not contain control characters");
      return;
    }
  }
}

std::vector<std::string> Unique(JsonFields& f, const char* key, std::vector<std::string> in) {
  std::vector<std::string> out;
  for (auto& v : in) {
    RequireText(f, key, v);
    if (std::none_of(out.begin(), out.end(),
                     [&](const std::string& o) { return SameName(o, v); })) {
      out.push_back(std::move(v));
    }
  }
  return out;
}

Result<UserRef> ParseUserRef(JsonFields& f) {
  const Json::Value* obj = f.Object("user", JsonFields::kRequired);
  if (obj == nullptr) return AsInvalidParams(f.Finish());
  JsonFields u(*obj, f.ChildPath("user"));
  UserRef ref;
  int given = 0;
  for (auto [key, kind] : {std::pair{"username", UserRef::Kind::kUsername},
                           std::pair{"account_id", UserRef::Kind::kAccountId},
                           std::pair{"email", UserRef::Kind::kEmail}}) {
    if (auto v = u.OptionalString(key)) {
      ++given;
      ref.kind = kind;
      ref.value = *v;
      RequireText(u, key, *v);
    }
  }
  if (u.ok() && given != 1) u.Fail("username", "exactly one of username, account_id, email");
  Status s = u.Finish();
  if (!s.ok()) return AsInvalidParams(s);
  return ref;
}

Json::Value NullableString(const std::optional<std::string>& s) {
  return s ? Json::Value(*s) : Json::Value(Json::nullValue);
}

Json::Value UserJson(const User& u, bool with_active) {
  Json::Value j(Json::objectValue);
  j["id"] = u.id;
  j["username"] = NullableString(u.username);
  j["email"] = NullableString(u.email);
  j["display_name"] = NullableString(u.display_name);
  if (with_active) j["active"] = u.active;
  return j;
}

Json::Value Array(const std::vector<std::string>& items) {
  Json::Value a(Json::arrayValue);
  for (const auto& i : items) a.append(i);
  return a;
}

Status NoSuchUser(const UserRef& ref) {
  return JiraError(Code::kNotFound, "no Jira user has " + ref.Describe(), reason::kUserNotFound);
}

Status NoSuchGroup(const std::string& name) {
  return JiraError(Code::kNotFound, "Jira has no group '" + name + "'", reason::kGroupNotFound);
}

Result<User> Resolve(JiraClient& client, const UserRef& ref, bool include_deleted,
                     std::stop_token stop) {
  CW_ASSIGN_OR_RETURN(std::optional<User> user, client.FindUser(ref, include_deleted, stop));
  if (!user) return NoSuchUser(ref);
  return std::move(*user);
}

Result<GroupRef> ResolveGroup(JiraClient& client, const std::string& name, std::stop_token stop) {
  CW_ASSIGN_OR_RETURN(std::optional<GroupRef> group, client.FindGroup(name, stop));
  if (!group) return NoSuchGroup(name);
  return std::move(*group);
}

// The agent must never lock itself out.
Status RefuseSelf(JiraClient& client, const User& target, std::string_view action,
                  std::stop_token stop) {
  CW_ASSIGN_OR_RETURN(User me, client.Myself(stop));
  if (me.id == target.id) {
    return JiraError(Code::kFailedPrecondition,
                     "refusing to " + std::string(action) +
                         " the account the agent itself uses for this connection",
                     reason::kPolicyDenied);
  }
  return Status::Ok();
}

std::vector<std::string> GroupNames(const User& u) {
  std::vector<std::string> out;
  for (const auto& g : u.groups) out.push_back(g.name);
  return out;
}

// Entries of `before` that `after` no longer has (case-insensitive).
std::vector<std::string> Gone(const std::vector<std::string>& before,
                              const std::vector<std::string>& after) {
  std::vector<std::string> out;
  for (const auto& b : before) {
    if (std::none_of(after.begin(), after.end(),
                     [&](const std::string& a) { return SameName(a, b); }))
      out.push_back(b);
  }
  return out;
}

}  // namespace

// ---- jira.connection.verify ---------------------------------------------------------------------

Result<Json::Value> RunVerify(Connection& connection, const Json::Value& params,
                              std::stop_token stop) {
  CW_RETURN_IF_ERROR(CheckObject(params));
  {
    JsonFields f(params, "$.params");
    CW_RETURN_IF_ERROR(AsInvalidParams(f.Finish()));
  }
  const ConnectionSettings& s = connection.settings();
  const bool has_provisioning = s.provisioning != ProvisioningAuth::kNone;
  CW_ASSIGN_OR_RETURN(JiraClient * client, has_provisioning ? connection.Provisioning(stop)
                                                            : connection.AccessSync(stop));
  CW_ASSIGN_OR_RETURN(ServerInfo info, connection.Server(stop));
  if (info.flavor != s.flavor) {
    return Unsupported("connection " + s.name + " is configured as " +
                       (s.flavor == Flavor::kCloud ? "jira-cloud" : "jira-datacenter") + ", but " +
                       s.base_url + " reports deploymentType '" + info.deployment_type + "'");
  }
  CW_ASSIGN_OR_RETURN(User me, client->Myself(stop));
  CW_ASSIGN_OR_RETURN(GlobalPermissions perms, client->MyPermissions(stop));
  if (!perms.administer) {
    return NotAdmin("the account " + me.username.value_or(me.email.value_or(me.id)) +
                    " of connection " + s.name +
                    " lacks Jira's Administer permission (global ADMINISTER), which the "
                    "integration needs");
  }
  std::string sync = "ok";
  if (s.access_sync == AccessSyncAuth::kNone) {
    sync = std::string(reason::kCredentialsMissing);
  } else if (has_provisioning && s.access_sync != AccessSyncAuth::kPassword) {
    auto sync_client = connection.AccessSync(stop);
    Status checked =
        sync_client.ok() ? (*sync_client)->Myself(stop).status() : sync_client.status();
    if (reason::kStopped == checked.reason()) return checked;
    if (!checked.ok()) {
      sync = checked.reason().empty() ? std::string(reason::kInternal) : checked.reason();
    }
  }
  Json::Value out(Json::objectValue);
  out["flavor"] = std::string(FlavorWord(s.flavor));
  out["server_version"] = info.version;
  out["account"] = UserJson(me, false);
  out["admin"] = true;
  out["system_admin"] = perms.system_admin;
  out["mfa"] = connection.mfa_used();
  out["access_sync_auth"] = sync;
  out["clock_skew_seconds"] =
      static_cast<Json::Int64>(connection.clock_skew().value_or(std::chrono::seconds(0)).count());
  return out;
}

// ---- jira.user.provision ------------------------------------------------------------------------

Result<Json::Value> RunProvision(Connection& connection, const Json::Value& params,
                                 std::stop_token stop) {
  CW_RETURN_IF_ERROR(CheckObject(params));
  const bool cloud = connection.settings().flavor == Flavor::kCloud;
  JsonFields f(params, "$.params");
  NewUser wanted;
  wanted.email = f.String("email", JsonFields::kRequired);
  RequireText(f, "email", wanted.email);
  if (f.ok() && wanted.email.find('@') == std::string::npos) f.Fail("email", "is not an address");
  wanted.display_name = f.String("display_name", JsonFields::kRequired);
  RequireText(f, "display_name", wanted.display_name);
  if (cloud) {
    if (f.ok() && f.Has("username")) {
      f.Fail("username", "Jira Cloud has no user names; leave it out");
    }
  } else {
    wanted.username = f.String("username", JsonFields::kRequired);
    RequireText(f, "username", wanted.username);
  }
  std::vector<std::string> groups = Unique(f, "groups", f.StringArray("groups"));
  std::vector<std::string> products = Unique(f, "products", f.StringArray("products"));
  const bool reactivate = f.Bool("reactivate", false);
  CW_RETURN_IF_ERROR(AsInvalidParams(f.Finish()));

  CW_ASSIGN_OR_RETURN(JiraClient * client, connection.Provisioning(stop));
  const UserRef ref = cloud ? UserRef{UserRef::Kind::kEmail, wanted.email}
                            : UserRef{UserRef::Kind::kUsername, wanted.username};
  CW_ASSIGN_OR_RETURN(std::optional<User> existing, client->FindUser(ref, false, stop));
  // Every group must exist before anything changes.
  std::vector<GroupRef> group_refs;
  for (const auto& name : groups) {
    CW_ASSIGN_OR_RETURN(GroupRef g, ResolveGroup(*client, name, stop));
    group_refs.push_back(std::move(g));
  }

  std::vector<std::string> groups_added, groups_already, products_granted, products_already;
  User user;
  bool created = false;
  auto output = [&](bool was_created) {
    Json::Value out(Json::objectValue);
    out["user"] = UserJson(user, true);
    out["created"] = was_created;
    out["groups_added"] = Array(groups_added);
    out["groups_already"] = Array(groups_already);
    out["products_granted"] = Array(products_granted);
    out["products_already"] = Array(products_already);
    return Result<Json::Value>(std::move(out));
  };
  if (existing) {
    user = std::move(*existing);
  } else {
    NewUser create = wanted;
    create.products = products;
    CW_ASSIGN_OR_RETURN(user, client->CreateUser(create, stop));
    // A new account is active. Cloud answers the creation of an existing account (one its
    // search could not show) with that account: an inactive one existed already.
    created = user.active;
  }
  if (!user.active) {
    if (!reactivate) {
      // Reported and left as it is.
      for (const auto& g : group_refs) {
        if (user.InGroup(g.name)) groups_already.push_back(g.name);
      }
      for (const auto& p : products) {
        if (user.HasProduct(p)) products_already.push_back(p);
      }
      return output(false);
    }
    CW_RETURN_IF_ERROR(client->SetActive(user, true, stop).status());
    CW_ASSIGN_OR_RETURN(user, client->Reload(user, stop));
  }

  for (const auto& p : products) {
    if (stop.stop_requested()) return Stopped();
    if (user.HasProduct(p)) {
      (created ? products_granted : products_already).push_back(p);
      continue;
    }
    CW_ASSIGN_OR_RETURN(bool granted, client->GrantProduct(user, p, stop));
    (granted ? products_granted : products_already).push_back(p);
  }
  if (!products_granted.empty() && !created) {
    CW_ASSIGN_OR_RETURN(user, client->Reload(user, stop));
  }
  for (const auto& g : group_refs) {
    if (stop.stop_requested()) return Stopped();
    CW_ASSIGN_OR_RETURN(bool added, client->AddMember(user, g, stop));
    (added ? groups_added : groups_already).push_back(g.name);
  }
  if (!groups_added.empty()) {
    CW_ASSIGN_OR_RETURN(user, client->Reload(user, stop));
  }

  return output(created);
}

// ---- jira.user.deprovision ----------------------------------------------------------------------

Result<Json::Value> RunDeprovision(Connection& connection, const Json::Value& params,
                                   std::stop_token stop) {
  CW_RETURN_IF_ERROR(CheckObject(params));
  const bool cloud = connection.settings().flavor == Flavor::kCloud;
  JsonFields f(params, "$.params");
  CW_ASSIGN_OR_RETURN(UserRef ref, ParseUserRef(f));
  const std::string action = f.String("action", JsonFields::kRequired);
  if (f.ok() && action != "remove_access" && action != "deactivate" && action != "delete") {
    f.Fail("action", "must be remove_access, deactivate or delete");
  }
  CW_RETURN_IF_ERROR(AsInvalidParams(f.Finish()));

  CW_ASSIGN_OR_RETURN(JiraClient * client, connection.Provisioning(stop));
  CW_ASSIGN_OR_RETURN(User user, Resolve(*client, ref, action == "delete", stop));
  CW_RETURN_IF_ERROR(
      RefuseSelf(*client, user, action == "remove_access" ? "remove the access of" : action, stop));
  std::vector<std::string> groups_removed, products_revoked;
  bool deactivated = false, deleted = false, already = false;

  if (action == "remove_access") {
    const User before = user;
    already = before.groups.empty() && before.products.empty();
    if (!cloud) {
      for (const auto& p : before.products) {
        if (stop.stop_requested()) return Stopped();
        CW_RETURN_IF_ERROR(client->RevokeProduct(user, p, stop).status());
      }
      if (!before.products.empty()) {
        CW_ASSIGN_OR_RETURN(user, client->Reload(user, stop));
      }
    }
    for (const auto& g : std::vector<GroupRef>(user.groups)) {
      if (stop.stop_requested()) return Stopped();
      CW_RETURN_IF_ERROR(client->RemoveMember(user, g, stop).status());
    }
    CW_ASSIGN_OR_RETURN(user, client->Reload(user, stop));
    groups_removed = Gone(GroupNames(before), GroupNames(user));
    products_revoked = Gone(before.products, user.products);
    if (!user.groups.empty() || !user.products.empty()) {
      return JiraInternal("the user still has " + std::to_string(user.groups.size()) +
                          " group(s) and " + std::to_string(user.products.size()) +
                          " product(s) after removing them");
    }
    if (!cloud) {
      Status ended = client->EndSessions(user, stop);
      if (!ended.ok()) {
        return Status(
            ended.code(),
            "removed from " + std::to_string(groups_removed.size()) + " group(s) and " +
                std::to_string(products_revoked.size()) +
                " product(s), but the user's sessions could not be ended: " + ended.message(),
            ended.reason());
      }
    }
  } else if (action == "deactivate") {
    if (!user.active) {
      already = true;
    } else {
      CW_ASSIGN_OR_RETURN(bool changed, client->SetActive(user, false, stop));
      already = !changed;
      CW_ASSIGN_OR_RETURN(user, client->Reload(user, stop));
    }
    deactivated = !user.active;
  } else {
    CW_ASSIGN_OR_RETURN(bool removed, client->DeleteUser(user, stop));
    already = !removed;
    deleted = true;
  }

  Json::Value out(Json::objectValue);
  out["user"] = UserJson(user, false);
  out["groups_removed"] = Array(groups_removed);
  out["products_revoked"] = Array(products_revoked);
  out["deactivated"] = deactivated;
  out["deleted"] = deleted;
  out["already"] = already;
  return out;
}

// ---- jira.group.add_member / remove_member ------------------------------------------------------

Result<Json::Value> RunGroupMembership(Connection& connection, const Json::Value& params, bool add,
                                       std::stop_token stop) {
  CW_RETURN_IF_ERROR(CheckObject(params));
  JsonFields f(params, "$.params");
  CW_ASSIGN_OR_RETURN(UserRef ref, ParseUserRef(f));
  const std::string group_name = f.String("group", JsonFields::kRequired);
  RequireText(f, "group", group_name);
  CW_RETURN_IF_ERROR(AsInvalidParams(f.Finish()));

  CW_ASSIGN_OR_RETURN(JiraClient * client, connection.Provisioning(stop));
  CW_ASSIGN_OR_RETURN(User user, Resolve(*client, ref, false, stop));
  CW_ASSIGN_OR_RETURN(GroupRef group, ResolveGroup(*client, group_name, stop));
  CW_ASSIGN_OR_RETURN(bool changed, add ? client->AddMember(user, group, stop)
                                        : client->RemoveMember(user, group, stop));
  Json::Value out(Json::objectValue);
  out["user"] = UserJson(user, false);
  out["group"] = group.name;
  out["changed"] = changed;
  return out;
}

}  // namespace cakewalk::jira
