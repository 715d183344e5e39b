// FakeJira: the test-only /_fake/... endpoints (for the standalone program, its demo and chaos
// scripts) and the JSON form of the ground truth.
#include <algorithm>

#include "base/json.h"
#include "tests/fakes/jira/fake_jira_impl.h"

namespace cakewalk::testing {

namespace {

Json::Value TimeOrNull(const std::optional<SysTime>& t) {
  return t ? Json::Value(FormatRfc3339(*t)) : Json::Value(Json::nullValue);
}

Json::Value Strings(const std::vector<std::string>& v) {
  Json::Value a(Json::arrayValue);
  for (const auto& s : v) a.append(s);
  return a;
}

}  // namespace

Json::Value UserTruthJson(const UserTruth& t) {
  Json::Value j;
  j["id"] = t.id;
  j["username"] = t.username.empty() ? Json::Value(Json::nullValue) : Json::Value(t.username);
  j["email"] = t.email ? Json::Value(*t.email) : Json::Value(Json::nullValue);
  j["display_name"] = t.display_name;
  j["active"] = t.active;
  j["deleted"] = t.deleted;
  j["search_hidden"] = t.search_hidden;
  j["account_type"] =
      t.account_type.empty() ? Json::Value(Json::nullValue) : Json::Value(t.account_type);
  j["nhi"] = std::string(NhiKindName(t.nhi));
  j["directory"] = t.directory.empty() ? Json::Value(Json::nullValue) : Json::Value(t.directory);
  j["managed"] = t.managed;
  j["last_login"] = TimeOrNull(t.last_login);
  j["owns_token"] = t.owns_token;
  j["totp_enrolled"] = t.totp_enrolled;
  j["groups"] = Strings(t.groups);
  j["products"] = Strings(t.products);
  j["permissions"] = Strings(t.permissions);
  return j;
}

Json::Value CredentialTruthJson(const CredentialTruth& c) {
  Json::Value j;
  j["id"] = c.id;
  j["type"] = c.type;
  j["name"] = c.name;
  j["owner_id"] = c.owner_id ? Json::Value(*c.owner_id) : Json::Value(Json::nullValue);
  j["created_at"] = TimeOrNull(c.created_at);
  j["expires_at"] = TimeOrNull(c.expires_at);
  j["last_used_at"] = TimeOrNull(c.last_used_at);
  return j;
}

Json::Value FakeJira::Impl::MutationJson(const Mutation& m) const {
  Json::Value j;
  j["seq"] = static_cast<Json::UInt64>(m.seq);
  j["time"] = FormatRfc3339(m.time);
  j["kind"] = m.kind;
  j["subject"] = m.subject;
  j["label"] = m.label;
  j["object"] = m.object;
  j["actor"] = m.actor;
  j["detail"] = m.detail;
  j["text"] = m.Describe();
  return j;
}

Json::Value FakeJira::Impl::StateJson(std::size_t max_users) const {
  Json::Value j;
  j["flavor"] = IsDc() ? "datacenter" : "cloud";
  j["version"] = IsDc() ? opt.version : "cloud";
  j["users"] = Json::Value(Json::arrayValue);
  std::uint64_t expected = 0;
  for (UserIndex u = 0; u < dir.user_count(); ++u) {
    if (ExpectedInSync(u)) ++expected;
    if (j["users"].size() < max_users) j["users"].append(UserTruthJson(Truth(u)));
  }
  j["groups"] = Json::Value(Json::arrayValue);
  for (GroupIndex g = 0; g < dir.group_count(); ++g) {
    const auto& group = dir.group(g);
    if (group.deleted) continue;
    Json::Value item;
    item["id"] = IsDc() ? group.name : group.id;
    item["name"] = group.name;
    item["member_count"] = static_cast<Json::UInt64>(VisibleMemberCount(g));
    j["groups"].append(item);
  }
  j["application_roles"] = Json::Value(Json::arrayValue);
  for (const AppRole& role : dir.roles()) {
    Json::Value r;
    r["key"] = role.key;
    r["groups"] = Json::Value(Json::arrayValue);
    for (GroupIndex g : role.groups) r["groups"].append(dir.group(g).name);
    r["user_count"] = static_cast<Json::UInt64>(dir.RoleUserCount(role));
    auto seats = opt.seat_limits.find(role.key);
    r["seats"] =
        seats == opt.seat_limits.end() ? Json::Value(Json::nullValue) : Json::Value(seats->second);
    j["application_roles"].append(r);
  }
  j["credentials"] = Json::Value(Json::arrayValue);
  for (const auto& c : CredentialList()) j["credentials"].append(CredentialTruthJson(c));
  j["failed_logins"] = Json::Value(Json::objectValue);
  for (const auto& [name, n] : failed_logins_) j["failed_logins"][name] = n;
  j["sessions"] = static_cast<Json::UInt64>(sessions_.size());
  j["counts"]["users"] = static_cast<Json::UInt64>(dir.user_count());
  j["counts"]["expected_sync_users"] = static_cast<Json::UInt64>(expected);
  j["counts"]["memberships"] = static_cast<Json::UInt64>(dir.membership_count());
  j["counts"]["mutations"] = static_cast<Json::UInt64>(mutations_.size());
  return j;
}

HttpResponse FakeJira::Impl::RouteAdmin(const HttpRequest& req,
                                        const std::vector<std::string>& segs) {
  const std::vector<std::string> a(segs.begin() + 1, segs.end());
  const std::string& m = req.method;
  auto body_object = [&](Json::Value* out) -> std::optional<HttpResponse> {
    if (req.body.empty()) {
      *out = Json::Value(Json::objectValue);
      return std::nullopt;
    }
    auto parsed = ParseJson(req.body, "request body");
    if (!parsed.ok() || !parsed->isObject()) return ErrorResponse(400, {"Expected a JSON object."});
    *out = std::move(*parsed);
    return std::nullopt;
  };
  auto is = [&](std::initializer_list<std::string_view> p, const char* verb) {
    return m == verb && a.size() == p.size() && std::equal(p.begin(), p.end(), a.begin());
  };

  if (is({"state"}, "GET")) return JsonResponse(200, StateJson(10000));
  if (is({"mutations"}, "GET")) {
    std::uint64_t since = 0;
    if (auto s = req.Query("since");
        s && !s->empty() && std::all_of(s->begin(), s->end(), ::isdigit)) {
      since = std::stoull(*s);
    }
    Json::Value out(Json::arrayValue);
    for (const auto& mu_ : mutations_) {
      if (mu_.seq > since) out.append(MutationJson(mu_));
    }
    return JsonResponse(200, out);
  }
  if (is({"expected"}, "GET")) {
    Json::Value j;
    j["users"] = Json::Value(Json::arrayValue);
    for (UserIndex u = 0; u < dir.user_count(); ++u) {
      if (ExpectedInSync(u)) j["users"].append(UserTruthJson(Truth(u)));
    }
    j["groups"] = StateJson(0)["groups"];
    j["credentials"] = Json::Value(Json::arrayValue);
    for (const auto& c : CredentialList()) j["credentials"].append(CredentialTruthJson(c));
    return JsonResponse(200, j);
  }
  if (is({"login-attempts"}, "GET")) {
    Json::Value out(Json::arrayValue);
    for (const auto& l : login_attempts_) {
      Json::Value j;
      j["time"] = FormatRfc3339(l.time);
      j["principal"] = l.principal;
      j["method"] = l.method;
      j["outcome"] = l.outcome;
      out.append(j);
    }
    return JsonResponse(200, out);
  }
  if (is({"totp-events"}, "GET")) {
    Json::Value out(Json::arrayValue);
    for (const auto& e : totp_events_) {
      Json::Value j;
      j["time"] = FormatRfc3339(e.time);
      j["username"] = e.username;
      j["outcome"] = e.outcome;
      j["step"] =
          e.step ? Json::Value(static_cast<Json::UInt64>(*e.step)) : Json::Value(Json::nullValue);
      out.append(j);
    }
    return JsonResponse(200, out);
  }
  Json::Value body;
  if (is({"reset-captcha"}, "POST")) {
    if (auto r = body_object(&body)) return *r;
    if (body.isMember("username") && body["username"].isString()) {
      failed_logins_.erase(jira_fake::ToLower(body["username"].asString()));
    } else {
      failed_logins_.clear();
    }
    return Empty(204);
  }
  if (is({"expire-sessions"}, "POST")) {
    sessions_.clear();
    return Empty(204);
  }
  if (is({"idp-managed"}, "POST")) {
    if (auto r = body_object(&body)) return *r;
    if (!body["enabled"].isBool()) return ErrorResponse(400, {"enabled must be a boolean."});
    opt.idp_managed = body["enabled"].asBool();
    return Empty(204);
  }
  if (is({"faults"}, "DELETE")) {
    faults_.clear();
    return Empty(204);
  }
  if (is({"faults"}, "POST")) {
    if (auto r = body_object(&body)) return *r;
    JsonFields f(body, "$");
    FaultRule rule;
    rule.method = f.String("method", JsonFields::kOptional);
    rule.path_contains = f.String("path_contains", JsonFields::kOptional);
    rule.count = static_cast<int>(f.Int("count", 1, -1, 1000000));
    if (f.Has("status")) rule.status = static_cast<int>(f.Int("status", 503, 100, 599));
    if (f.Has("retry_after_seconds")) {
      rule.retry_after_seconds = static_cast<int>(f.Int("retry_after_seconds", 1, 0, 86400));
    }
    rule.html = f.Bool("html", false);
    const std::string transport = f.String("transport", JsonFields::kOptional, "none");
    rule.transport.delay = std::chrono::milliseconds(f.Int("delay_ms", 0, 0, 600000));
    rule.after_handling = f.Bool("after_handling", false);
    if (transport == "delay")
      rule.transport.kind = Fault::kDelay;
    else if (transport == "reset")
      rule.transport.kind = Fault::kResetBeforeHeaders;
    else if (transport == "truncate")
      rule.transport.kind = Fault::kTruncateBody;
    else if (transport == "stall")
      rule.transport.kind = Fault::kStall;
    else if (transport != "none")
      f.Fail("transport", "expected none, delay, reset, truncate or stall");
    if (rule.count == 0) f.Fail("count", "must be positive or -1");
    if (Status s = f.Finish(); !s.ok()) return ErrorResponse(400, {s.message()});
    faults_.push_back(rule);
    return Empty(204);
  }
  if (is({"oauth", "code"}, "POST")) {
    if (auto r = body_object(&body)) return *r;
    JsonFields f(body, "$");
    const std::string client = f.String("client_id", JsonFields::kRequired);
    const std::string user = f.String("user", JsonFields::kRequired);
    const std::string redirect = f.String("redirect_uri", JsonFields::kRequired);
    const std::vector<std::string> scopes = f.StringArray("scopes");
    const std::string challenge = f.String("code_challenge", JsonFields::kOptional);
    if (Status s = f.Finish(); !s.ok()) return ErrorResponse(400, {s.message()});
    auto u = dir.FindRef(user);
    if (!u) return ErrorResponse(404, {"No such user."});
    auto code = oauth.IssueCode(client, *u, redirect, scopes, challenge, clock.Now());
    if (!code.ok()) return ErrorResponse(400, {code.status().message()});
    Json::Value j;
    j["code"] = *code;
    return JsonResponse(200, j);
  }
  return ErrorResponse(404, {"Unknown fake admin endpoint."});
}

}  // namespace cakewalk::testing
