// FakeJira, Cloud dialect: site and gateway, privacy-filtered pagination, product access through
// groups, the organization admin API and the OAuth token endpoint, driven through Handle().
#include <gtest/gtest.h>

#include <memory>
#include <set>

#include "tests/fakes/jira/fake_jira.h"
#include "tests/fakes/jira/fake_jira_test_util.h"
#include "tests/support/fake_clock.h"

namespace cakewalk::testing {
namespace {

constexpr char kCloudId[] = "11111111-2222-4333-8444-555555555555";
constexpr char kOrgId[] = "99999999-8888-4777-8666-555555555555";

class CloudTest : public ::testing::Test {
 protected:
  void Make(const std::function<void(FakeJiraOptions&)>& tweak = {},
            const SiteSpec* site = nullptr) {
    FakeJiraOptions o;
    o.flavor = JiraFlavor::kCloud;
    o.cloud_id = kCloudId;
    o.org_id = kOrgId;
    o.clock = &clock_;
    if (tweak) tweak(o);
    jira_ = std::make_unique<FakeJira>(o);
    if (site != nullptr) {
      ASSERT_TRUE(jira_->GenerateSite(*site).ok());
    }
    NewUser admin;
    admin.email = "admin@corp.example";
    admin.display_name = "Site Admin";
    admin.password = "cloud-password-1";
    admin.groups = {"site-admins", "jira-administrators", "jira-software-users"};
    auto id = jira_->AddUser(admin);
    ASSERT_TRUE(id.ok());
    admin_id_ = *id;
    token_ = *jira_->AddApiToken(admin_id_, "agent", Later());
    NewUser alice;
    alice.email = "alice@corp.example";
    alice.display_name = "Alice Liddell";
    alice.groups = {"jira-software-users"};
    alice_id_ = *jira_->AddUser(alice);
  }
  SysTime Later() const { return clock_.Now() + std::chrono::hours(24 * 90); }
  Req Site(const std::string& method, const std::string& path) {
    return std::move(Req(method, "/rest/api/3" + path).Basic("admin@corp.example", token_));
  }
  HttpResponse Get(const std::string& path) { return Call(*jira_, Site("GET", path)); }
  std::string Gateway(const std::string& path) const {
    return std::string("/ex/jira/") + kCloudId + "/rest/api/3" + path;
  }

  FakeClock clock_;
  std::unique_ptr<FakeJira> jira_;
  std::string admin_id_, alice_id_, token_;
};

TEST_F(CloudTest, TenantInfoAndServerInfo) {
  Make();
  HttpResponse tenant = Call(*jira_, Req("GET", "/_edge/tenant_info"));
  ASSERT_EQ(tenant.status, 200);
  EXPECT_EQ(Body(tenant)["cloudId"].asString(), kCloudId);
  Json::Value info = Body(Call(*jira_, Req("GET", "/rest/api/3/serverInfo")));
  EXPECT_EQ(info["deploymentType"].asString(), "Cloud");
}

TEST_F(CloudTest, BasicTakesAnApiTokenNotAPasswordAndExpiredTokensFail) {
  Make();
  HttpResponse me = Get("/myself");
  ASSERT_EQ(me.status, 200);
  EXPECT_EQ(Body(me)["accountId"].asString(), admin_id_);
  EXPECT_EQ(Body(me)["accountType"].asString(), "atlassian");

  HttpResponse password = Call(
      *jira_, Req("GET", "/rest/api/3/myself").Basic("admin@corp.example", "cloud-password-1"));
  EXPECT_EQ(password.status, 401);
  EXPECT_EQ(jira_->LoginAttempts("admin@corp.example").back().outcome, "password_refused");

  // Wrong token: anonymous; user search answers an empty 200, myself 401.
  HttpResponse search = Call(
      *jira_, Req("GET", "/rest/api/3/user/search?query=a").Basic("admin@corp.example", "nope"));
  EXPECT_EQ(search.status, 200);
  EXPECT_EQ(Body(search).size(), 0u);
  EXPECT_EQ(HeaderOf(search, "X-Seraph-LoginReason"), "AUTHENTICATED_FAILED");
  EXPECT_EQ(
      Call(*jira_, Req("GET", "/rest/api/3/myself").Basic("admin@corp.example", "nope")).status,
      401);
  // A token presented with another account's e-mail does not work either.
  EXPECT_EQ(
      Call(*jira_, Req("GET", "/rest/api/3/myself").Basic("alice@corp.example", token_)).status,
      401);

  clock_.Advance(std::chrono::hours(24 * 91));
  EXPECT_EQ(Get("/myself").status, 401);
  EXPECT_EQ(jira_->LoginAttempts("admin@corp.example").back().outcome, "expired");
}

TEST_F(CloudTest, OAuthAndScopedTokensWorkOnlyThroughTheGateway) {
  Make();
  OAuthClientSpec client;
  client.client_id = "app";
  client.client_secret = "app-secret";
  client.redirect_uris = {"https://cb.example/cb"};
  client.scopes = {"read:jira-user", "read:jira-work", "offline_access"};
  ASSERT_TRUE(jira_->AddOAuthClient(client).ok());
  auto code = jira_->IssueAuthorizationCode("app", admin_id_, "https://cb.example/cb",
                                            {"read:jira-user", "offline_access"});
  ASSERT_TRUE(code.ok());
  Json::Value req;
  req["grant_type"] = "authorization_code";
  req["client_id"] = "app";
  req["client_secret"] = "app-secret";
  req["code"] = *code;
  req["redirect_uri"] = "https://cb.example/cb";
  HttpResponse issued = Call(*jira_, Req("POST", "/oauth/token").Json(req));
  ASSERT_EQ(issued.status, 200) << issued.body;
  const std::string access = Body(issued)["access_token"].asString();

  EXPECT_EQ(Call(*jira_, Req("GET", "/rest/api/3/myself").Bearer(access)).status, 401);
  EXPECT_EQ(Call(*jira_, Req("GET", Gateway("/myself")).Bearer(access)).status, 200);
  EXPECT_EQ(
      Call(*jira_, Req("GET", "/ex/jira/00000000-0000-4000-8000-000000000000/rest/api/3/myself")
                       .Bearer(access))
          .status,
      404);
  // The token lacks manage:jira-configuration.
  HttpResponse scope = Call(
      *jira_, Req("GET", Gateway("/group/member?groupname=jira-software-users")).Bearer(access));
  EXPECT_EQ(scope.status, 401);
  EXPECT_EQ(Body(scope)["message"].asString(), "Unauthorized; scope does not match");
  // User creation is Basic only.
  Json::Value user;
  user["emailAddress"] = "x@corp.example";
  user["products"] = Json::Value(Json::arrayValue);
  HttpResponse create = Call(*jira_, Req("POST", Gateway("/user")).Bearer(access).Json(user));
  EXPECT_EQ(create.status, 401);

  HttpResponse resources =
      Call(*jira_, Req("GET", "/oauth/token/accessible-resources").Bearer(access));
  ASSERT_EQ(resources.status, 200);
  EXPECT_EQ(Body(resources)[0]["id"].asString(), kCloudId);

  auto scoped = jira_->AddApiToken(admin_id_, "scoped", Later(), true, {"read:jira-user"});
  ASSERT_TRUE(scoped.ok());
  EXPECT_EQ(
      Call(*jira_, Req("GET", "/rest/api/3/myself").Basic("admin@corp.example", *scoped)).status,
      401);
  EXPECT_EQ(
      Call(*jira_, Req("GET", Gateway("/myself")).Basic("admin@corp.example", *scoped)).status,
      200);
  EXPECT_EQ(Call(*jira_, Req("GET", Gateway("/myself")).Bearer(*scoped)).status, 200);
  // A classic token belongs on the site URL.
  EXPECT_EQ(Call(*jira_, Req("GET", Gateway("/myself")).Basic("admin@corp.example", token_)).status,
            401);
  EXPECT_EQ(Call(*jira_, Req("GET", Gateway("/serverInfo"))).status, 401);
}

TEST_F(CloudTest, UsersSearchPagesAreShortBecausePrivacyFilteringRunsAfterTheRange) {
  SiteSpec site;
  site.seed = 7;
  site.users = 3000;
  site.groups = 5;
  site.memberships = 500;
  site.search_hidden_fraction = 0.05;
  Make({}, &site);
  std::set<std::string> expected;
  for (const auto& u : jira_->ExpectedSyncUsers()) expected.insert(u.id);
  ASSERT_LT(expected.size(), 3002u);  // some users are hidden

  // Correct: advance by the maxResults asked for; stop on an empty page.
  std::set<std::string> correct;
  int short_pages = 0;
  for (int start = 0;; start += 1000) {
    Json::Value page =
        OkArray(Get("/users/search?maxResults=1000&startAt=" + std::to_string(start)));
    if (page.empty()) break;
    if (page.size() < 1000u) ++short_pages;
    for (const auto& u : page) EXPECT_TRUE(correct.insert(u["accountId"].asString()).second);
  }
  EXPECT_EQ(correct, expected);
  EXPECT_GE(short_pages, 3);

  // Wrong: stopping at the first short page misses users.
  std::set<std::string> stopped;
  for (int start = 0;; start += 1000) {
    Json::Value page =
        OkArray(Get("/users/search?maxResults=1000&startAt=" + std::to_string(start)));
    for (const auto& u : page) stopped.insert(u["accountId"].asString());
    if (page.size() < 1000u) break;
  }
  EXPECT_LT(stopped.size(), expected.size());

  // Wrong: advancing by the number of items received re-reads users.
  int duplicates = 0;
  std::set<std::string> by_items;
  for (int start = 0;;) {
    Json::Value page =
        OkArray(Get("/users/search?maxResults=1000&startAt=" + std::to_string(start)));
    if (page.empty()) break;
    for (const auto& u : page)
      duplicates += by_items.insert(u["accountId"].asString()).second ? 0 : 1;
    start += static_cast<int>(page.size());
  }
  EXPECT_GT(duplicates, 0);

  // maxResults is capped at 1000.
  EXPECT_LE(Body(Get("/users/search?maxResults=5000")).size(), 1000u);
  EXPECT_EQ(Body(Get("/users?maxResults=10")).size(),
            Body(Get("/users/search?maxResults=10")).size());
}

TEST_F(CloudTest, UsersSearchAnswers409OnDemandAndAnonymousCallersFindNobody) {
  Make();
  FaultRule slow;
  slow.status = 409;
  slow.path_contains = "/users/search";
  jira_->QueueFault(slow);
  EXPECT_EQ(Get("/users/search").status, 409);
  EXPECT_EQ(Get("/users/search").status, 200);
  EXPECT_EQ(Body(Call(*jira_, Req("GET", "/rest/api/3/users/search"))).size(), 0u);
  EXPECT_EQ(Body(Call(*jira_, Req("GET", "/rest/api/3/user/search?query=alice"))).size(), 0u);
  EXPECT_EQ(Body(Get("/user/search?query=alice")).size(), 1u);
  EXPECT_EQ(Get("/user/search").status, 400);
}

TEST_F(CloudTest, HiddenEmailsAreNullOrAbsent) {
  for (HiddenEmailStyle style : {HiddenEmailStyle::kNull, HiddenEmailStyle::kAbsent}) {
    Make([&](FakeJiraOptions& o) { o.hidden_email_style = style; });
    NewUser shy;
    shy.email = "shy@corp.example";
    shy.display_name = "Shy";
    shy.email_visible = false;
    const std::string id = *jira_->AddUser(shy);
    Json::Value u = Body(Get("/user?accountId=" + id));
    if (style == HiddenEmailStyle::kNull) {
      ASSERT_TRUE(u.isMember("emailAddress"));
      EXPECT_TRUE(u["emailAddress"].isNull());
    } else {
      EXPECT_FALSE(u.isMember("emailAddress"));
    }
    EXPECT_FALSE(jira_->FindUser(id)->email.has_value());
  }
}

TEST_F(CloudTest, CreateUserNeedsProductsAndFollowsTheExistingUserAndLicenceRules) {
  Make([](FakeJiraOptions& o) { o.seat_limits["jira-servicedesk"] = 1; });
  Json::Value body;
  body["emailAddress"] = "new@corp.example";
  HttpResponse missing = Call(*jira_, Site("POST", "/user").Json(body));
  EXPECT_EQ(missing.status, 400);
  EXPECT_TRUE(Body(missing)["errors"].isMember("products"));
  body["products"].append("jira-software");
  HttpResponse created = Call(*jira_, Site("POST", "/user").Json(body));
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string id = Body(created)["accountId"].asString();
  EXPECT_EQ(jira_->FindUser(id)->products, std::vector<std::string>{"jira-software"});
  EXPECT_EQ(jira_->FindUser(id)->groups, std::vector<std::string>{"jira-software-users"});
  // Existing user with access: 201 again.
  EXPECT_EQ(Call(*jira_, Site("POST", "/user").Json(body)).status, 201);
  // Existing user without access: 400.
  NewUser idle;
  idle.email = "idle@corp.example";
  ASSERT_TRUE(jira_->AddUser(idle).ok());
  body["emailAddress"] = "idle@corp.example";
  EXPECT_EQ(Call(*jira_, Site("POST", "/user").Json(body)).status, 400);
  // Licence: one servicedesk seat.
  body["products"] = Json::Value(Json::arrayValue);
  body["products"].append("jira-servicedesk");
  body["emailAddress"] = "one@corp.example";
  EXPECT_EQ(Call(*jira_, Site("POST", "/user").Json(body)).status, 201);
  body["emailAddress"] = "two@corp.example";
  HttpResponse over = Call(*jira_, Site("POST", "/user").Json(body));
  EXPECT_EQ(over.status, 400);
  EXPECT_FALSE(jira_->FindUser("two@corp.example").has_value());
  // Only Jira administrators may create users.
  auto alice_token = jira_->AddApiToken(alice_id_, "t", Later());
  body["emailAddress"] = "three@corp.example";
  EXPECT_EQ(
      Call(*jira_,
           Req("POST", "/rest/api/3/user").Basic("alice@corp.example", *alice_token).Json(body))
          .status,
      403);
}

TEST_F(CloudTest, GroupMemberAndGroupBulkPaging) {
  SiteSpec site;
  site.users = 500;
  site.groups = 3;
  site.memberships = 700;
  site.product_access_fraction = 1.0;
  site.search_hidden_fraction = 0;
  Make({}, &site);
  Json::Value page = Body(Get("/group/member?groupname=jira-software-users&maxResults=100"));
  EXPECT_EQ(page["maxResults"].asInt(), 50);
  EXPECT_EQ(page["values"].size(), 50u);
  EXPECT_FALSE(page["isLast"].asBool());
  EXPECT_TRUE(page["nextPage"].asString().find("startAt=50") != std::string::npos);
  EXPECT_EQ(Get("/group/member?groupname=jira-software-users&maxResults=0").status, 400);
  EXPECT_EQ(Get("/group/member").status, 400);
  // Follow isLast through every member of one group, by groupId.
  const std::string gid =
      Body(Get("/group/bulk?groupName=jira-software-users"))["values"][0]["groupId"].asString();
  std::set<std::string> members;
  for (int start = 0;; start += 50) {
    Json::Value p = OkPage(Get("/group/member?includeInactiveUsers=true&groupId=" + gid +
                               "&startAt=" + std::to_string(start)));
    for (const auto& u : p["values"]) members.insert(u["accountId"].asString());
    if (p["isLast"].asBool()) break;
  }
  const auto truth = jira_->GroupMemberIds("jira-software-users");
  EXPECT_EQ(members, std::set<std::string>(truth.begin(), truth.end()));
  // group/bulk: pages of at most 50, `total` counts the page only.
  Json::Value bulk = Body(Get("/group/bulk?maxResults=4"));
  EXPECT_EQ(bulk["values"].size(), 4u);
  EXPECT_EQ(bulk["total"].asInt(), 4);
  EXPECT_FALSE(bulk["isLast"].asBool());
  std::size_t groups = 0;
  for (int start = 0;; start += 4) {
    Json::Value p = OkPage(Get("/group/bulk?maxResults=4&startAt=" + std::to_string(start)));
    groups += p["values"].size();
    if (p["isLast"].asBool()) break;
  }
  EXPECT_EQ(groups, jira_->Groups().size());
  Json::Value admins = Body(Get("/group/bulk?accessType=site-admin"));
  ASSERT_EQ(admins["values"].size(), 1u);
  EXPECT_EQ(admins["values"][0]["name"].asString(), "site-admins");
}

TEST_F(CloudTest, GroupEditsByGroupIdOrNameAndIdpManagedRefusal) {
  Make();
  const std::string gid = *jira_->AddGroup("auditors");
  Json::Value body;
  body["accountId"] = alice_id_;
  HttpResponse added = Call(*jira_, Site("POST", "/group/user?groupId=" + gid).Json(body));
  ASSERT_EQ(added.status, 201) << added.body;
  EXPECT_EQ(Body(added)["groupId"].asString(), gid);
  EXPECT_EQ(Call(*jira_, Site("POST", "/group/user?groupname=auditors").Json(body)).status, 400);
  EXPECT_EQ(
      Call(*jira_, Site("DELETE", "/group/user?groupname=auditors&accountId=" + alice_id_)).status,
      200);
  EXPECT_EQ(
      Call(*jira_, Site("DELETE", "/group/user?groupId=" + gid + "&accountId=" + alice_id_)).status,
      400);
  Json::Value by_name;
  by_name["name"] = "alice";
  EXPECT_EQ(Call(*jira_, Site("POST", "/group/user?groupId=" + gid).Json(by_name)).status, 400);

  jira_->SetIdpManaged(true);
  HttpResponse refused = Call(*jira_, Site("POST", "/group/user?groupId=" + gid).Json(body));
  EXPECT_EQ(refused.status, 403);
  EXPECT_NE(
      Body(refused)["errorMessages"][0].asString().find("external user management is enabled"),
      std::string::npos);
  EXPECT_EQ(jira_->FindUser(alice_id_)->groups, std::vector<std::string>{"jira-software-users"});
  // Product access comes from groups: adding to a product group grants the product.
  jira_->SetIdpManaged(false);
  const std::string sd =
      Body(Get("/group/bulk?groupName=jira-servicedesk-users"))["values"][0]["groupId"].asString();
  ASSERT_EQ(Call(*jira_, Site("POST", "/group/user?groupId=" + sd).Json(body)).status, 201);
  EXPECT_EQ(jira_->Mutations().back().kind, "product_granted");
  EXPECT_EQ(jira_->Mutations().back().subject, alice_id_);
}

TEST_F(CloudTest, SiteRemovalNeedsASiteAdminAndKeepsTheAccountListed) {
  Make();
  NewUser jadmin;
  jadmin.email = "jadmin@corp.example";
  jadmin.groups = {"jira-administrators"};
  const std::string jid = *jira_->AddUser(jadmin);
  const std::string jtoken = *jira_->AddApiToken(jid, "t", Later());
  EXPECT_EQ(Call(*jira_, Req("DELETE", "/rest/api/3/user?accountId=" + alice_id_)
                             .Basic("jadmin@corp.example", jtoken))
                .status,
            403);
  EXPECT_EQ(Call(*jira_, Site("DELETE", "/user?accountId=" + alice_id_)).status, 204);
  EXPECT_EQ(Call(*jira_, Site("DELETE", "/user?accountId=" + alice_id_)).status, 404);
  auto alice = jira_->FindUser(alice_id_);
  EXPECT_TRUE(alice->groups.empty());
  EXPECT_TRUE(alice->deleted);
  bool listed = false;
  for (const auto& u : Body(Get("/users/search"))) listed |= u["accountId"].asString() == alice_id_;
  EXPECT_TRUE(listed);
  // Creating the user again brings back the same Atlassian account.
  Json::Value body;
  body["emailAddress"] = "alice@corp.example";
  body["products"].append("jira-software");
  HttpResponse back = Call(*jira_, Site("POST", "/user").Json(body));
  ASSERT_EQ(back.status, 201) << back.body;
  EXPECT_EQ(Body(back)["accountId"].asString(), alice_id_);
  EXPECT_FALSE(jira_->FindUser(alice_id_)->deleted);
  EXPECT_EQ(jira_->FindUser(alice_id_)->products, std::vector<std::string>{"jira-software"});
}

TEST_F(CloudTest, ApplicationRolesAndPermissions) {
  Make();
  Json::Value roles = Body(Get("/applicationrole"));
  ASSERT_TRUE(roles.isArray());
  EXPECT_EQ(roles.size(), 4u);
  EXPECT_EQ(Call(*jira_, Site("PUT", "/applicationrole/jira-software")).status, 405);
  Json::Value perms = Body(Get("/mypermissions?permissions=ADMINISTER,SYSTEM_ADMIN"));
  EXPECT_TRUE(perms["permissions"]["SYSTEM_ADMIN"]["havePermission"].asBool());
  EXPECT_EQ(Get("/mypermissions").status, 400);
  Json::Value check;
  check["accountId"] = alice_id_;
  check["globalPermissions"].append("ADMINISTER");
  check["globalPermissions"].append("USER_PICKER");
  Json::Value granted = Body(Call(*jira_, Site("POST", "/permissions/check").Json(check)));
  ASSERT_EQ(granted["globalPermissions"].size(), 1u);
  EXPECT_EQ(granted["globalPermissions"][0].asString(), "USER_PICKER");
  Json::Value groups = Body(Get("/user/groups?accountId=" + alice_id_));
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0]["name"].asString(), "jira-software-users");
  Json::Value expanded =
      Body(Get("/user?accountId=" + admin_id_ + "&expand=groups,applicationRoles"));
  EXPECT_EQ(expanded["groups"]["items"].size(), 3u);
  EXPECT_EQ(expanded["applicationRoles"]["items"][0]["key"].asString(), "jira-software");
}

TEST_F(CloudTest, OrganizationAdminApi) {
  Make();
  const std::string key = *jira_->AddOrgApiKey();
  const std::string scoped = *jira_->AddOrgApiKey(OrgApiKeySpec{true, {"lifecycle.enablement"}});
  NewUser outsider;
  outsider.email = "guest@partner.example";
  outsider.managed = false;
  const std::string guest = *jira_->AddUser(outsider);
  auto org = [&](const std::string& method, const std::string& path, const std::string& k) {
    return Call(*jira_, Req(method, "/admin-api" + path).Bearer(k));
  };
  EXPECT_EQ(org("GET", "/users/" + alice_id_ + "/manage", "wrong").status, 401);
  Json::Value manage = Body(org("GET", "/users/" + alice_id_ + "/manage", key));
  EXPECT_TRUE(manage["lifecycle.enablement"]["allowed"].asBool());
  EXPECT_FALSE(
      Body(org("GET", "/users/" + guest + "/manage", key))["lifecycle.enablement"]["allowed"]
          .asBool());

  EXPECT_EQ(org("POST", "/users/" + alice_id_ + "/manage/lifecycle/disable", key).status, 204);
  EXPECT_FALSE(jira_->FindUser(alice_id_)->active);
  EXPECT_EQ(jira_->Mutations().back().kind, "account_disabled");
  EXPECT_EQ(org("POST", "/users/" + guest + "/manage/lifecycle/disable", key).status, 403);
  EXPECT_EQ(org("POST", "/users/" + admin_id_ + "/manage/lifecycle/disable", scoped).status, 403);
  EXPECT_EQ(org("POST", "/users/nobody/manage/lifecycle/disable", key).status, 404);
  EXPECT_EQ(org("POST", "/users/" + alice_id_ + "/manage/lifecycle/enable", key).status, 204);
  EXPECT_TRUE(jira_->FindUser(alice_id_)->active);

  Json::Value tokens = Body(org("GET", "/users/" + admin_id_ + "/manage/api-tokens", key));
  ASSERT_EQ(tokens.size(), 1u);
  EXPECT_EQ(tokens[0]["label"].asString(), "agent");

  // Org users list: cursors in links.next, limit at most 100.
  EXPECT_EQ(org("GET", std::string("/admin/v1/orgs/") + kOrgId + "/users?limit=101", key).status,
            400);
  EXPECT_EQ(org("GET", "/admin/v1/orgs/other/users", key).status, 404);
  std::set<std::string> listed;
  std::string next = std::string("/admin/v1/orgs/") + kOrgId + "/users?limit=2";
  while (true) {
    Json::Value page = OkPage(org("GET", next, key));
    for (const auto& u : page["data"]) {
      listed.insert(u["account_id"].asString());
      EXPECT_TRUE(u.isMember("account_status"));
    }
    if (!page["links"].isMember("next")) break;
    const std::string url = page["links"]["next"].asString();
    next = url.substr(url.find("/admin-api") + 10);
  }
  EXPECT_EQ(listed, (std::set<std::string>{admin_id_, alice_id_, guest}));
  Json::Value v2 =
      Body(org("GET", std::string("/admin/v2/orgs/") + kOrgId + "/directories/-/users", key));
  EXPECT_EQ(v2["data"].size(), 3u);
  EXPECT_TRUE(v2["data"][0].isMember("accountId"));
  Json::Value all_tokens =
      Body(org("GET", std::string("/admin/api-access/v1/orgs/") + kOrgId + "/api-tokens", key));
  ASSERT_EQ(all_tokens["data"].size(), 1u);
  EXPECT_EQ(all_tokens["data"][0]["user"]["accountId"].asString(), admin_id_);
}

TEST_F(CloudTest, RotatingRefreshTokensWithLeewayAndFamilyRevocation) {
  Make();
  OAuthClientSpec client;
  client.client_id = "app";
  client.client_secret = "app-secret";
  client.redirect_uris = {"https://cb.example/cb"};
  client.scopes = {"read:jira-user", "offline_access"};
  ASSERT_TRUE(jira_->AddOAuthClient(client).ok());
  const std::string verifier = "cloud-verifier-abcdefghijklmnopqrstuvwxyz-0123456789";
  auto code =
      jira_->IssueAuthorizationCode("app", admin_id_, "https://cb.example/cb",
                                    {"read:jira-user", "offline_access"}, PkceS256(verifier));
  ASSERT_TRUE(code.ok());
  Json::Value req;
  req["grant_type"] = "authorization_code";
  req["client_id"] = "app";
  req["client_secret"] = "app-secret";
  req["code"] = *code;
  req["redirect_uri"] = "https://cb.example/other";
  EXPECT_EQ(Body(Call(*jira_, Req("POST", "/oauth/token").Json(req)))["error"].asString(),
            "invalid_grant");
  req["redirect_uri"] = "https://cb.example/cb";
  HttpResponse without_verifier = Call(*jira_, Req("POST", "/oauth/token").Json(req));
  EXPECT_EQ(Body(without_verifier)["error"].asString(), "invalid_request");
  req["code_verifier"] = verifier;
  Json::Value issued = Body(Call(*jira_, Req("POST", "/oauth/token").Json(req)));
  ASSERT_TRUE(issued.isMember("refresh_token")) << WriteJson(issued);
  const std::string rt1 = issued["refresh_token"].asString();
  const std::string access1 = issued["access_token"].asString();

  auto refresh = [&](const std::string& rt) {
    Json::Value r;
    r["grant_type"] = "refresh_token";
    r["client_id"] = "app";
    r["client_secret"] = "app-secret";
    r["refresh_token"] = rt;
    return Call(*jira_, Req("POST", "/oauth/token").Json(r));
  };
  HttpResponse r2 = refresh(rt1);
  ASSERT_EQ(r2.status, 200);
  const std::string rt2 = Body(r2)["refresh_token"].asString();
  EXPECT_NE(rt2, rt1);
  clock_.Advance(std::chrono::minutes(9));
  EXPECT_EQ(refresh(rt1).status, 200);  // within the 10-minute leeway
  clock_.Advance(std::chrono::minutes(2));
  HttpResponse reuse = refresh(rt1);
  EXPECT_EQ(reuse.status, 403);
  EXPECT_EQ(Body(reuse)["error"].asString(), "invalid_grant");
  EXPECT_EQ(refresh(rt2).status, 403);  // the whole family is gone
  EXPECT_EQ(Call(*jira_, Req("GET", Gateway("/myself")).Bearer(access1)).status, 401);
  EXPECT_EQ(jira_->Mutations().back().kind, "oauth_family_revoked");
  // Form bodies are accepted too; unknown clients are invalid_client.
  HttpResponse form =
      Call(*jira_,
           Req("POST", "/oauth/token")
               .Form("grant_type=refresh_token&client_id=app&client_secret=bad&refresh_token=x"));
  EXPECT_EQ(form.status, 401);
  EXPECT_EQ(Body(form)["error"].asString(), "invalid_client");
}

TEST_F(CloudTest, AccessTokensExpireAndWithoutOfflineAccessNoRefreshTokenIsIssued) {
  Make();
  OAuthClientSpec client;
  client.client_id = "app";
  client.client_secret = "app-secret";
  client.redirect_uris = {"https://cb.example/cb"};
  client.scopes = {"read:jira-user", "offline_access"};
  ASSERT_TRUE(jira_->AddOAuthClient(client).ok());
  auto code =
      jira_->IssueAuthorizationCode("app", admin_id_, "https://cb.example/cb", {"read:jira-user"});
  Json::Value req;
  req["grant_type"] = "authorization_code";
  req["client_id"] = "app";
  req["client_secret"] = "app-secret";
  req["code"] = *code;
  req["redirect_uri"] = "https://cb.example/cb";
  Json::Value issued = Body(Call(*jira_, Req("POST", "/oauth/token").Json(req)));
  EXPECT_FALSE(issued.isMember("refresh_token"));
  const std::string access = issued["access_token"].asString();
  EXPECT_EQ(Call(*jira_, Req("GET", Gateway("/myself")).Bearer(access)).status, 200);
  clock_.Advance(std::chrono::seconds(3600));
  EXPECT_EQ(Call(*jira_, Req("GET", Gateway("/myself")).Bearer(access)).status, 401);
}

TEST_F(CloudTest, RateLimitingUsesTheCloudHeaders) {
  Make([](FakeJiraOptions& o) { o.rate_limit = RateLimit{5, 5, std::chrono::seconds(60)}; });
  for (int i = 0; i < 4; ++i) {
    HttpResponse r = Get("/myself");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(HeaderOf(r, "X-RateLimit-Limit"), "5");
  }
  HttpResponse near = Get("/myself");
  EXPECT_EQ(near.status, 200);
  EXPECT_EQ(HeaderOf(near, "X-RateLimit-NearLimit"), "true");
  HttpResponse limited = Get("/myself");
  EXPECT_EQ(limited.status, 429);
  EXPECT_EQ(HeaderOf(limited, "Retry-After"), "60");
  EXPECT_EQ(HeaderOf(limited, "RateLimit-Reason"), "jira-burst-based");
  const std::string reset = HeaderOf(limited, "X-RateLimit-Reset");
  ASSERT_EQ(reset.size(), 17u) << reset;  // yyyy-MM-ddTHH:mmZ
  EXPECT_EQ(reset.back(), 'Z');
  EXPECT_EQ(reset[10], 'T');
  FaultRule burst;
  burst.status = 429;
  burst.retry_after_seconds = 3;
  jira_->QueueFault(burst);
  clock_.Advance(std::chrono::seconds(60));
  HttpResponse injected = Get("/serverInfo");
  EXPECT_EQ(injected.status, 429);
  EXPECT_EQ(HeaderOf(injected, "Retry-After"), "3");
  EXPECT_EQ(HeaderCount(injected, "Retry-After"), 1);
  EXPECT_EQ(Get("/serverInfo").status, 200);
}

TEST_F(CloudTest, NonHumanAccountsCarryTheirSignals) {
  Make();
  NewUser app;
  app.display_name = "Automation for Jira";
  app.account_type = CloudAccountType::kApp;
  app.nhi = NhiKind::kApp;
  const std::string app_id = *jira_->AddUser(app);
  NewUser svc;
  svc.email = "deploy@serviceaccount.atlassian.com";
  svc.display_name = "deploy";
  svc.account_type = CloudAccountType::kApp;
  svc.nhi = NhiKind::kServiceAccount;
  const std::string svc_id = *jira_->AddUser(svc);
  Json::Value a = Body(Get("/user?accountId=" + app_id));
  EXPECT_EQ(a["accountType"].asString(), "app");
  EXPECT_TRUE(a["emailAddress"].isNull());
  Json::Value s = Body(Get("/user?accountId=" + svc_id));
  EXPECT_EQ(s["emailAddress"].asString(), "deploy@serviceaccount.atlassian.com");
  EXPECT_EQ(jira_->FindUser(svc_id)->nhi, NhiKind::kServiceAccount);
}

}  // namespace
}  // namespace cakewalk::testing
