// The provisioning jobs on Jira Cloud (the fake's REST API 3 over TLS, e-mail + API token and the
// organization API key in SoftHSM): idempotency, product access through the product groups,
// deactivation through the organization API (managed accounts only), IdP-managed sites, and the
// anonymous-200 trap of a refused API token.
#include <gtest/gtest.h>

#include "jira/errors.h"
#include "jira/jobs.h"
#include "tests/jira/jira_env.h"

namespace cakewalk::testing {
namespace {

class CloudJobsTest : public JiraFixture {
 protected:
  void SetUp() override {
    JiraFixture::SetUp();
    if (HasFatalFailure()) return;
    Start({});
  }
  void Start(const std::function<void(FakeJiraOptions&)>& tweak) {
    FakeJiraOptions o;
    o.flavor = JiraFlavor::kCloud;
    if (tweak) tweak(o);
    StartJira(o);
    SeedCloudAdmin();
    auto g = jira_->AddGroup("Team A");
    ASSERT_TRUE(g.ok());
    conn_ = Open(CloudSettings());
  }

  std::string AddCloudUser(const std::string& email, std::vector<std::string> groups = {},
                           bool managed = true) {
    NewUser u;
    u.email = email;
    u.display_name = email.substr(0, email.find('@'));
    u.groups = std::move(groups);
    u.managed = managed;
    auto id = jira_->AddUser(u);
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    return id.ok() ? *id : "";
  }

  Result<Json::Value> Provision(const std::string& email, std::vector<std::string> groups,
                                std::vector<std::string> products) {
    Json::Value p;
    p["email"] = email;
    p["display_name"] = "Someone";
    for (auto& g : groups) p["groups"].append(g);
    p["products"] = Json::Value(Json::arrayValue);
    for (auto& pr : products) p["products"].append(pr);
    return jira::RunProvision(*conn_, p, {});
  }

  Result<Json::Value> Deprovision(const std::string& key, const std::string& value,
                                  const std::string& action) {
    Json::Value p;
    p["user"][key] = value;
    p["action"] = action;
    return jira::RunDeprovision(*conn_, p, {});
  }

  std::unique_ptr<jira::Connection> conn_;
};

TEST_F(CloudJobsTest, VerifyUsesTheApiToken) {
  auto out = jira::RunVerify(*conn_, Json::Value(Json::objectValue), {});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(Str(*out, "flavor"), "cloud");
  EXPECT_EQ(Str(*out, "mfa"), "none");
  EXPECT_TRUE((*out)["account"]["username"].isNull());
  EXPECT_EQ(Str((*out)["account"], "email"), kCloudAdmin);
  EXPECT_TRUE((*out)["system_admin"].asBool());
  for (const auto& a : jira_->LoginAttempts(kCloudAdmin)) EXPECT_EQ(a.method, "api_token");
}

TEST_F(CloudJobsTest, RefusedApiTokenIsNeverAnAnonymousSuccess) {
  // Revoke by replacing the token in the agent with a value Jira does not know: the site carries
  // on anonymously (user search would answer an empty 200), and the agent must see the refusal.
  PutSecret("api-token", "ATATT-not-a-real-token");
  auto c = Open(CloudSettings());
  Json::Value p;
  p["user"]["email"] = kCloudAdmin;
  p["group"] = "Team A";
  auto out = jira::RunGroupMembership(*c, p, true, {});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().reason(), "auth_failed");
  EXPECT_NE(out.status().message().find("API token"), std::string::npos);
  auto verify = jira::RunVerify(*c, Json::Value(Json::objectValue), {});
  EXPECT_EQ(verify.status().reason(), "auth_failed");
}

TEST_F(CloudJobsTest, ExpiredApiTokenSaysSo) {
  clock_.Advance(std::chrono::hours(24 * 366));
  auto out = jira::RunVerify(*conn_, Json::Value(Json::objectValue), {});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().reason(), "auth_failed");
  EXPECT_NE(out.status().message().find("expire"), std::string::npos);
}

TEST_F(CloudJobsTest, ProvisionCreatesWithProductsThenFindsTheUser) {
  auto first = Provision("new.person@corp.example", {"Team A"}, {"jira-software"});
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE((*first)["created"].asBool());
  EXPECT_TRUE((*first)["user"]["username"].isNull());
  EXPECT_EQ(Str((*first)["user"], "email"), "new.person@corp.example");
  EXPECT_EQ(Strings((*first)["products_granted"]), (std::vector<std::string>{"jira-software"}));
  EXPECT_EQ(Strings((*first)["groups_added"]), (std::vector<std::string>{"Team A"}));
  const std::string id = Str((*first)["user"], "id");
  auto truth = jira_->FindUser(id);
  ASSERT_TRUE(truth.has_value());
  EXPECT_EQ(truth->products, (std::vector<std::string>{"jira-software"}));
  const auto mutations = MutationLines();

  auto second = Provision("New.Person@corp.example", {"Team A"}, {"jira-software"});
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_FALSE((*second)["created"].asBool());
  EXPECT_EQ(Str((*second)["user"], "id"), id);
  EXPECT_EQ(Strings((*second)["groups_already"]), (std::vector<std::string>{"Team A"}));
  EXPECT_EQ(Strings((*second)["products_already"]), (std::vector<std::string>{"jira-software"}));
  EXPECT_EQ(MutationLines(), mutations);
}

TEST_F(CloudJobsTest, ProductForAnExistingUserGoesThroughItsDefaultGroup) {
  const std::string id = AddCloudUser("olga@corp.example", {"jira-software-users"});
  auto out = Provision("olga@corp.example", {}, {"jira-software", "jira-servicedesk"});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_FALSE((*out)["created"].asBool());
  EXPECT_EQ(Strings((*out)["products_granted"]), (std::vector<std::string>{"jira-servicedesk"}));
  EXPECT_EQ(Strings((*out)["products_already"]), (std::vector<std::string>{"jira-software"}));
  auto truth = jira_->FindUser(id);
  EXPECT_NE(std::find(truth->groups.begin(), truth->groups.end(), "jira-servicedesk-users"),
            truth->groups.end());
  EXPECT_TRUE(RequestsTo("/user/application").empty());  // no such thing on Cloud
}

TEST_F(CloudJobsTest, UsernameIsRefusedOnCloud) {
  Json::Value p;
  p["email"] = "x@corp.example";
  p["display_name"] = "X";
  p["username"] = "x";
  EXPECT_EQ(jira::RunProvision(*conn_, p, {}).status().reason(), "invalid_params");
  Json::Value m;
  m["user"]["username"] = "x";
  m["group"] = "Team A";
  EXPECT_EQ(jira::RunGroupMembership(*conn_, m, true, {}).status().reason(), "invalid_params");
}

TEST_F(CloudJobsTest, GroupMembershipByAccountIdAndEmail) {
  const std::string id = AddCloudUser("pia@corp.example");
  Json::Value p;
  p["user"]["account_id"] = id;
  p["group"] = "team a";
  auto add = jira::RunGroupMembership(*conn_, p, true, {});
  ASSERT_TRUE(add.ok()) << add.status().ToString();
  EXPECT_TRUE((*add)["changed"].asBool());
  EXPECT_EQ(Str(*add, "group"), "Team A");  // Jira's spelling
  const auto once = MutationLines();
  Json::Value q;
  q["user"]["email"] = "pia@corp.example";
  q["group"] = "Team A";
  auto again = jira::RunGroupMembership(*conn_, q, true, {});
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE((*again)["changed"].asBool());
  EXPECT_EQ(MutationLines(), once);
  auto rm = jira::RunGroupMembership(*conn_, q, false, {});
  ASSERT_TRUE(rm.ok());
  EXPECT_TRUE((*rm)["changed"].asBool());
  auto rm2 = jira::RunGroupMembership(*conn_, q, false, {});
  ASSERT_TRUE(rm2.ok());
  EXPECT_FALSE((*rm2)["changed"].asBool());
  q["group"] = "Nope";
  EXPECT_EQ(jira::RunGroupMembership(*conn_, q, false, {}).status().reason(), "group_not_found");
  q["group"] = "Team A";
  q["user"]["email"] = "ghost@corp.example";
  EXPECT_EQ(jira::RunGroupMembership(*conn_, q, false, {}).status().reason(), "user_not_found");
}

TEST_F(CloudJobsTest, RemoveAccessEmptiesGroupsAndProducts) {
  const std::string id = AddCloudUser("quinn@corp.example", {"jira-software-users", "Team A"});
  auto out = Deprovision("account_id", id, "remove_access");
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  auto removed = Strings((*out)["groups_removed"]);
  std::sort(removed.begin(), removed.end());
  EXPECT_EQ(removed, (std::vector<std::string>{"Team A", "jira-software-users"}));
  EXPECT_EQ(Strings((*out)["products_revoked"]), (std::vector<std::string>{"jira-software"}));
  EXPECT_TRUE(jira_->FindUser(id)->groups.empty());
  const auto once = MutationLines();
  auto again = Deprovision("account_id", id, "remove_access");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE((*again)["already"].asBool());
  EXPECT_EQ(MutationLines(), once);
}

TEST_F(CloudJobsTest, DeactivateThroughTheOrganizationApi) {
  const std::string id = AddCloudUser("rae@corp.example", {"jira-software-users"});
  auto out = Deprovision("email", "rae@corp.example", "deactivate");
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_TRUE((*out)["deactivated"].asBool());
  EXPECT_FALSE(jira_->FindUser(id)->active);
  ASSERT_FALSE(RequestsTo("/admin-api/users/" + id + "/manage/lifecycle/disable").empty());
  for (const auto& r : RequestsTo("/admin-api/")) {
    EXPECT_EQ(r.request.Header("authorization"), "Bearer " + org_key_);
  }
  const auto once = MutationLines();
  auto again = Deprovision("account_id", id, "deactivate");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE((*again)["already"].asBool());
  EXPECT_EQ(MutationLines(), once);
}

TEST_F(CloudJobsTest, DeactivatedUsersAreFoundByEmailThroughTheOrganization) {
  // More users than one page of the organization's list: the cursor is followed.
  for (int i = 0; i < 130; ++i) AddCloudUser("filler" + std::to_string(i) + "@corp.example");
  const std::string id = AddCloudUser("wes@corp.example", {"jira-software-users"});
  auto out = Deprovision("email", "wes@corp.example", "deactivate");
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_FALSE((*out)["already"].asBool());
  const auto once = MutationLines();
  // user/search no longer shows the account; the second run still finds it, and says so.
  auto again = Deprovision("email", "wes@corp.example", "deactivate");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE((*again)["already"].asBool());
  EXPECT_EQ(Str((*again)["user"], "id"), id);
  EXPECT_EQ(MutationLines(), once);
  const auto pages = RequestsTo("/admin-api/admin/v1/orgs/");
  ASSERT_GE(pages.size(), 2u);
  EXPECT_TRUE(pages[0].request.Query("cursor") == std::nullopt);
  EXPECT_TRUE(pages[1].request.Query("cursor").has_value());

  // Provisioning the same e-mail reports the inactive account and leaves it alone.
  const auto before = MutationLines();
  auto prov = Provision("wes@corp.example", {"Team A"}, {"jira-software"});
  ASSERT_TRUE(prov.ok()) << prov.status().ToString();
  EXPECT_FALSE((*prov)["created"].asBool());
  EXPECT_FALSE((*prov)["user"]["active"].asBool());
  EXPECT_TRUE(Strings((*prov)["groups_added"]).empty());
  EXPECT_EQ(MutationLines(), before);
  // With "reactivate": enabled again through the organization API, then provisioned.
  Json::Value p;
  p["email"] = "wes@corp.example";
  p["display_name"] = "Wes";
  p["groups"].append("Team A");
  p["reactivate"] = true;
  auto back = jira::RunProvision(*conn_, p, {});
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE((*back)["user"]["active"].asBool());
  EXPECT_EQ(Strings((*back)["groups_added"]), (std::vector<std::string>{"Team A"}));
}

TEST_F(CloudJobsTest, DeactivateRefusesWhatTheOrganizationCannotDo) {
  const std::string unmanaged = AddCloudUser("guest@elsewhere.example", {}, /*managed=*/false);
  auto out = Deprovision("account_id", unmanaged, "deactivate");
  EXPECT_EQ(out.status().reason(), "unsupported_by_jira_version");
  EXPECT_TRUE(jira_->FindUser(unmanaged)->active);

  // A key without the privilege.
  OrgApiKeySpec weak;
  weak.privileges = {"profile.read"};
  auto key = jira_->AddOrgApiKey(weak);
  ASSERT_TRUE(key.ok());
  PutSecret("org-api-key", *key);
  const std::string managed = AddCloudUser("sam@corp.example");
  auto c = Open(CloudSettings());
  Json::Value p;
  p["user"]["account_id"] = managed;
  p["action"] = "deactivate";
  EXPECT_EQ(jira::RunDeprovision(*c, p, {}).status().reason(), "not_admin");

  // Without org_id in the configuration, nothing is attempted.
  auto settings = CloudSettings();
  settings.org_id.reset();
  auto c2 = Open(settings);
  const auto before = RequestsTo("/admin-api/").size();
  EXPECT_EQ(jira::RunDeprovision(*c2, p, {}).status().reason(), "credentials_missing");
  EXPECT_EQ(RequestsTo("/admin-api/").size(), before);
  EXPECT_TRUE(jira_->FindUser(managed)->active);
}

TEST_F(CloudJobsTest, DeleteRemovesFromTheSiteOnce) {
  const std::string id = AddCloudUser("tom@corp.example", {"jira-software-users"});
  auto out = Deprovision("account_id", id, "delete");
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_TRUE((*out)["deleted"].asBool());
  EXPECT_FALSE((*out)["already"].asBool());
  const auto once = MutationLines();
  auto again = Deprovision("account_id", id, "delete");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE((*again)["already"].asBool());
  EXPECT_EQ(MutationLines(), once);
}

TEST_F(CloudJobsTest, IdpManagedSiteRefusesGroupEdits) {
  const std::string id = AddCloudUser("uma@corp.example");
  jira_->SetIdpManaged(true);
  Json::Value p;
  p["user"]["account_id"] = id;
  p["group"] = "Team A";
  auto out = jira::RunGroupMembership(*conn_, p, true, {});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().reason(), "unsupported_by_jira_version");
  EXPECT_NE(out.status().message().find("external user management"), std::string::npos);
}

TEST_F(CloudJobsTest, LicenceExhaustionIsLicenseExceeded) {
  jira_->SetSeatLimit("jira-servicedesk", 0);
  auto out = Provision("vic@corp.example", {}, {"jira-servicedesk"});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().reason(), "license_exceeded");
}

TEST_F(CloudJobsTest, InjectionShapedGroupNames) {
  const std::vector<std::string> groups = {"a&b/../x", "grp #1 100%", "\xce\xa9mega+plus"};
  for (const auto& g : groups) ASSERT_TRUE(jira_->AddGroup(g).ok());
  const std::string id = AddCloudUser("w+tag@corp.example");
  for (const auto& g : groups) {
    Json::Value p;
    p["user"]["email"] = "w+tag@corp.example";
    p["group"] = g;
    auto out = jira::RunGroupMembership(*conn_, p, true, {});
    ASSERT_TRUE(out.ok()) << g << ": " << out.status().ToString();
    EXPECT_EQ(Str(*out, "group"), g);
  }
  auto truth = jira_->FindUser(id);
  for (const auto& g : groups) {
    EXPECT_NE(std::find(truth->groups.begin(), truth->groups.end(), g), truth->groups.end()) << g;
  }
}

}  // namespace
}  // namespace cakewalk::testing
