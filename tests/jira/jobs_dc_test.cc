// The provisioning jobs on Jira Data Center 9.x, 10.0, 10.3 LTS and 11.x (the fake, over TLS,
// with the admin's password — and TOTP seed where the version has the 2SV login — in SoftHSM).
// Every mutating job runs twice: the second run reports what it found and the fake's mutation
// log gains nothing.
#include <gtest/gtest.h>

#include "base/json.h"
#include "jira/errors.h"
#include "jira/jobs.h"
#include "tests/jira/jira_env.h"

namespace cakewalk::testing {
namespace {

struct Version {
  const char* version;
  bool totp;        // the admin has 2SV (needs the 2SV REST login: 10.3 on)
  bool deactivate;  // PUT /user {"active": false} works (the fake: 10.3 on)
};

class DcJobsTest : public JiraFixture, public ::testing::WithParamInterface<Version> {
 protected:
  void SetUp() override {
    JiraFixture::SetUp();
    if (HasFatalFailure()) return;
    FakeJiraOptions o;
    o.version = GetParam().version;
    StartJira(o);
    SeedDcAdmin(GetParam().totp);
    ASSERT_TRUE(jira_->AddGroup("Team A").ok());
    conn_ = Open(DcSettings(GetParam().totp));
  }

  Json::Value Ref(const std::string& username) {
    Json::Value r;
    r["username"] = username;
    return r;
  }

  Result<Json::Value> Provision(const std::string& username, std::vector<std::string> groups,
                                std::vector<std::string> products, bool reactivate = false) {
    Json::Value p;
    p["email"] = username + "@corp.example";
    p["display_name"] = "User " + username;
    p["username"] = username;
    for (auto& g : groups) p["groups"].append(g);
    for (auto& pr : products) p["products"].append(pr);
    if (reactivate) p["reactivate"] = true;
    return jira::RunProvision(*conn_, p, {});
  }

  Result<Json::Value> Deprovision(const std::string& username, const std::string& action) {
    Json::Value p;
    p["user"] = Ref(username);
    p["action"] = action;
    return jira::RunDeprovision(*conn_, p, {});
  }

  Result<Json::Value> Member(const std::string& username, const std::string& group, bool add) {
    Json::Value p;
    p["user"] = Ref(username);
    p["group"] = group;
    return jira::RunGroupMembership(*conn_, p, add, {});
  }

  std::unique_ptr<jira::Connection> conn_;
};

TEST_P(DcJobsTest, VerifyReportsTheAccountAndVersion) {
  auto out = jira::RunVerify(*conn_, Json::Value(Json::objectValue), {});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(Str(*out, "server_version"), GetParam().version);
  EXPECT_EQ(Str(*out, "mfa"), GetParam().totp ? "totp" : "none");
  EXPECT_EQ(Str((*out)["account"], "username"), kDcAdmin);
  EXPECT_EQ(Str((*out)["account"], "email"), "svc-cakewalk@corp.example");
  EXPECT_EQ(Str(*out, "access_sync_auth"), "credentials_missing");  // no access_sync section
  std::vector<std::string> keys = out->getMemberNames();
  EXPECT_EQ(keys,
            (std::vector<std::string>{"access_sync_auth", "account", "admin", "clock_skew_seconds",
                                      "flavor", "mfa", "server_version", "system_admin"}));
}

TEST_P(DcJobsTest, ProvisionCreatesOnceThenReportsWhatItFound) {
  auto first = Provision("bob", {"Team A", "jira-core-users"}, {"jira-software"});
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE((*first)["created"].asBool());
  EXPECT_TRUE((*first)["user"]["active"].asBool());
  EXPECT_EQ(Str((*first)["user"], "username"), "bob");
  EXPECT_EQ(Strings((*first)["groups_added"]),
            (std::vector<std::string>{"Team A", "jira-core-users"}));
  EXPECT_EQ(Strings((*first)["products_granted"]), (std::vector<std::string>{"jira-software"}));
  auto truth = jira_->FindUser("bob");
  ASSERT_TRUE(truth.has_value());
  EXPECT_EQ(truth->products, (std::vector<std::string>{"jira-core", "jira-software"}));
  const auto mutations = MutationLines();

  auto second = Provision("bob", {"Team A", "jira-core-users"}, {"jira-software"});
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_FALSE((*second)["created"].asBool());
  EXPECT_TRUE(Strings((*second)["groups_added"]).empty());
  EXPECT_EQ(Strings((*second)["groups_already"]),
            (std::vector<std::string>{"Team A", "jira-core-users"}));
  EXPECT_EQ(Strings((*second)["products_already"]), (std::vector<std::string>{"jira-software"}));
  EXPECT_EQ(MutationLines(), mutations);

  // A product added later is granted through application access, once.
  auto third = Provision("bob", {"Team A"}, {"jira-software", "jira-servicedesk"});
  ASSERT_TRUE(third.ok()) << third.status().ToString();
  EXPECT_EQ(Strings((*third)["products_granted"]), (std::vector<std::string>{"jira-servicedesk"}));
  EXPECT_EQ(Strings((*third)["products_already"]), (std::vector<std::string>{"jira-software"}));
}

TEST_P(DcJobsTest, GroupMembershipChangesOnlyOnce) {
  AddUser("carol", "carol@corp.example");
  auto add1 = Member("carol", "Team A", true);
  ASSERT_TRUE(add1.ok()) << add1.status().ToString();
  EXPECT_TRUE((*add1)["changed"].asBool());
  EXPECT_EQ(Str(*add1, "group"), "Team A");
  const auto after_add = MutationLines();
  auto add2 = Member("carol", "team a", true);  // Jira compares group names case-insensitively
  ASSERT_TRUE(add2.ok()) << add2.status().ToString();
  EXPECT_FALSE((*add2)["changed"].asBool());
  EXPECT_EQ(MutationLines(), after_add);
  auto rm1 = Member("carol", "Team A", false);
  ASSERT_TRUE(rm1.ok());
  EXPECT_TRUE((*rm1)["changed"].asBool());
  const auto after_rm = MutationLines();
  auto rm2 = Member("carol", "Team A", false);
  ASSERT_TRUE(rm2.ok());
  EXPECT_FALSE((*rm2)["changed"].asBool());
  EXPECT_EQ(MutationLines(), after_rm);
  EXPECT_EQ(after_rm.size(), after_add.size() + 1);
}

TEST_P(DcJobsTest, RemoveAccessRevokesGroupsProductsAndSessions) {
  AddUser("dave", "dave@corp.example", {"jira-software-users", "Team A", "jira-core-users"});
  auto out = Deprovision("dave", "remove_access");
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_FALSE((*out)["already"].asBool());
  auto removed = Strings((*out)["groups_removed"]);
  std::sort(removed.begin(), removed.end());
  EXPECT_EQ(removed,
            (std::vector<std::string>{"Team A", "jira-core-users", "jira-software-users"}));
  auto revoked = Strings((*out)["products_revoked"]);
  std::sort(revoked.begin(), revoked.end());
  EXPECT_EQ(revoked, (std::vector<std::string>{"jira-core", "jira-software"}));
  auto truth = jira_->FindUser("dave");
  EXPECT_TRUE(truth->groups.empty());
  EXPECT_TRUE(truth->products.empty());
  int killed = 0;
  for (const auto& m : jira_->Mutations()) killed += m.kind == "sessions_killed" ? 1 : 0;
  EXPECT_EQ(killed, 1);

  const auto before = jira_->Mutations();
  auto again = Deprovision("dave", "remove_access");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE((*again)["already"].asBool());
  EXPECT_TRUE(Strings((*again)["groups_removed"]).empty());
  // Ending sessions is repeated (it cannot be observed beforehand) and changes nothing.
  const auto after = jira_->Mutations();
  ASSERT_EQ(after.size(), before.size() + 1);
  EXPECT_EQ(after.back().kind, "sessions_killed");
  EXPECT_EQ(after.back().detail, "0 session(s)");
}

TEST_P(DcJobsTest, DeactivateWhereTheVersionCanOtherwiseSaySo) {
  AddUser("erin", "erin@corp.example", {"jira-software-users"});
  const auto before = MutationLines();
  auto out = Deprovision("erin", "deactivate");
  if (!GetParam().deactivate) {
    ASSERT_FALSE(out.ok());
    EXPECT_EQ(out.status().reason(), "unsupported_by_jira_version");
    EXPECT_NE(out.status().message().find(GetParam().version), std::string::npos);
    EXPECT_TRUE(jira_->FindUser("erin")->active);
    EXPECT_EQ(MutationLines(), before);  // nothing else was done instead
    return;
  }
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_TRUE((*out)["deactivated"].asBool());
  EXPECT_FALSE((*out)["already"].asBool());
  EXPECT_FALSE((*out)["deleted"].asBool());
  EXPECT_FALSE(jira_->FindUser("erin")->active);
  const auto once = MutationLines();
  auto again = Deprovision("erin", "deactivate");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE((*again)["already"].asBool());
  EXPECT_TRUE((*again)["deactivated"].asBool());
  EXPECT_EQ(MutationLines(), once);
}

TEST_P(DcJobsTest, InactiveUserIsReportedAndLeftUnlessReactivated) {
  AddUser("fay", "fay@corp.example", {}, /*active=*/false);
  const auto before = MutationLines();
  auto left = Provision("fay", {"Team A"}, {"jira-software"});
  ASSERT_TRUE(left.ok()) << left.status().ToString();
  EXPECT_FALSE((*left)["created"].asBool());
  EXPECT_FALSE((*left)["user"]["active"].asBool());
  EXPECT_TRUE(Strings((*left)["groups_added"]).empty());
  EXPECT_EQ(MutationLines(), before);
  auto reactivated = Provision("fay", {"Team A"}, {"jira-software"}, /*reactivate=*/true);
  if (!GetParam().deactivate) {
    EXPECT_EQ(reactivated.status().reason(), "unsupported_by_jira_version");
    return;
  }
  ASSERT_TRUE(reactivated.ok()) << reactivated.status().ToString();
  EXPECT_TRUE((*reactivated)["user"]["active"].asBool());
  EXPECT_EQ(Strings((*reactivated)["groups_added"]), (std::vector<std::string>{"Team A"}));
}

TEST_P(DcJobsTest, DeleteOnceThenAlready) {
  AddUser("gus", "gus@corp.example", {"Team A"});
  auto out = Deprovision("gus", "delete");
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_TRUE((*out)["deleted"].asBool());
  EXPECT_FALSE((*out)["already"].asBool());
  EXPECT_TRUE(jira_->FindUser("gus")->deleted);
  const auto once = MutationLines();
  auto again = Deprovision("gus", "delete");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE((*again)["already"].asBool());
  EXPECT_TRUE((*again)["deleted"].asBool());
  EXPECT_EQ(MutationLines(), once);
}

INSTANTIATE_TEST_SUITE_P(Versions, DcJobsTest,
                         ::testing::Values(Version{"9.12.0", false, false},
                                           Version{"10.0.2", false, false},
                                           Version{"10.3.4", true, true},
                                           Version{"11.0.1", true, true}),
                         [](const auto& param_info) {
                           std::string name = param_info.param.version;
                           for (char& c : name) {
                             if (c == '.') c = '_';
                           }
                           return "v" + name;
                         });

// ---- Version-independent behaviour (10.3 LTS) ---------------------------------------------------

class DcJobsMiscTest : public JiraFixture {
 protected:
  void Start(const std::function<void(FakeJiraOptions&)>& tweak = {}) {
    FakeJiraOptions o;
    o.version = "10.3.4";
    if (tweak) tweak(o);
    StartJira(o);
    SeedDcAdmin(true);
    conn_ = Open(DcSettings(true));
  }
  std::unique_ptr<jira::Connection> conn_;
};

TEST_F(DcJobsMiscTest, AccountWithoutAdministerIsNotAdmin) {
  StartJira([] {
    FakeJiraOptions o;
    o.version = "10.3.4";
    return o;
  }());
  NewUser plain;
  plain.username = kDcAdmin;
  plain.email = "svc@corp.example";
  plain.display_name = "Not an admin";
  plain.password = password_;
  plain.groups = {"jira-software-users"};
  ASSERT_TRUE(jira_->AddUser(plain).ok());
  PutSecret("password", password_);
  auto c = Open(DcSettings(false));
  auto out = jira::RunVerify(*c, Json::Value(Json::objectValue), {});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().reason(), "not_admin");
  EXPECT_FALSE(out.status().retryable());
}

TEST_F(DcJobsMiscTest, UsersAndGroupsAreResolvedOrRefused) {
  Start();
  AddUser("hal", "shared@corp.example");
  AddUser("ian", "shared@corp.example");
  AddUser("jo", "Jo.Unique@corp.example");
  Json::Value p;
  p["group"] = "jira-core-users";
  p["user"]["email"] = "shared@corp.example";
  EXPECT_EQ(jira::RunGroupMembership(*conn_, p, true, {}).status().reason(), "ambiguous_user");
  p["user"]["email"] = "nobody@corp.example";
  EXPECT_EQ(jira::RunGroupMembership(*conn_, p, true, {}).status().reason(), "user_not_found");
  p["user"]["email"] = "jo.unique@CORP.example";
  auto ok = jira::RunGroupMembership(*conn_, p, true, {});
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(Str((*ok)["user"], "username"), "jo");
  p["group"] = "no-such-group";
  EXPECT_EQ(jira::RunGroupMembership(*conn_, p, true, {}).status().reason(), "group_not_found");
  // By key (the id Data Center outputs carry).
  Json::Value by_key;
  by_key["user"]["account_id"] = Str((*ok)["user"], "id");
  by_key["group"] = "jira-core-users";
  auto again = jira::RunGroupMembership(*conn_, by_key, true, {});
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_FALSE((*again)["changed"].asBool());

  // A provision naming a missing group changes nothing at all.
  const auto before = MutationLines();
  Json::Value prov;
  prov["email"] = "kim@corp.example";
  prov["display_name"] = "Kim";
  prov["username"] = "kim";
  prov["groups"].append("no-such-group");
  EXPECT_EQ(jira::RunProvision(*conn_, prov, {}).status().reason(), "group_not_found");
  EXPECT_EQ(MutationLines(), before);
  EXPECT_FALSE(jira_->FindUser("kim").has_value());
}

TEST_F(DcJobsMiscTest, LicenceExhaustionIsLicenseExceeded) {
  Start([](FakeJiraOptions& o) { o.seat_limits["jira-servicedesk"] = 0; });
  Json::Value p;
  p["email"] = "lee@corp.example";
  p["display_name"] = "Lee";
  p["username"] = "lee";
  p["products"].append("jira-servicedesk");
  auto out = jira::RunProvision(*conn_, p, {});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().reason(), "license_exceeded");
  EXPECT_FALSE(out.status().retryable());
  // Granting to an existing user hits the same limit.
  AddUser("mo", "mo@corp.example");
  p["username"] = "mo";
  p["email"] = "mo@corp.example";
  EXPECT_EQ(jira::RunProvision(*conn_, p, {}).status().reason(), "license_exceeded");
}

TEST_F(DcJobsMiscTest, InjectionShapedNamesStayNames) {
  Start();
  const std::vector<std::string> groups = {"a&b/../x", "grp #1 100%", "\xce\xa9mega+plus",
                                           "sp ace?q=1"};
  for (const auto& g : groups) ASSERT_TRUE(jira_->AddGroup(g).ok()) << g;
  const std::string user = "a&b/../x";
  Json::Value p;
  p["email"] = "weird+tag@corp.example";
  p["display_name"] = "W\xc3\xa9ird #1";
  p["username"] = user;
  for (const auto& g : groups) p["groups"].append(g);
  auto out = jira::RunProvision(*conn_, p, {});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(Str((*out)["user"], "username"), user);
  auto truth = jira_->FindUser(user);
  ASSERT_TRUE(truth.has_value());
  for (const auto& g : groups) {
    EXPECT_NE(std::find(truth->groups.begin(), truth->groups.end(), g), truth->groups.end()) << g;
  }
  // The names travelled percent-encoded, never as path structure.
  for (const auto& r : Requests()) {
    EXPECT_EQ(r.request.target.find("/../"), std::string::npos) << r.request.target;
    EXPECT_EQ(r.request.raw_path.find('&'), std::string::npos) << r.request.target;
  }
  // Another user named in the same way is a different user.
  EXPECT_FALSE(jira_->FindUser("x").has_value());

  Json::Value rm;
  rm["user"]["email"] = "weird+tag@corp.example";
  rm["group"] = "grp #1 100%";
  auto removed = jira::RunGroupMembership(*conn_, rm, false, {});
  ASSERT_TRUE(removed.ok()) << removed.status().ToString();
  EXPECT_TRUE((*removed)["changed"].asBool());

  // Ending the sessions of a user whose name holds a '/' cannot be asked of Jira: the access is
  // removed and the job says precisely what it could not do.
  Json::Value dep;
  dep["user"]["username"] = user;
  dep["action"] = "remove_access";
  auto dp = jira::RunDeprovision(*conn_, dep, {});
  ASSERT_FALSE(dp.ok());
  EXPECT_EQ(dp.status().reason(), "unsupported_by_jira_version");
  EXPECT_NE(dp.status().message().find("removed from"), std::string::npos);
  EXPECT_TRUE(jira_->FindUser(user)->groups.empty());
}

TEST_F(DcJobsMiscTest, TheAgentNeverDeprovisionsItself) {
  Start();
  for (const char* action : {"remove_access", "deactivate", "delete"}) {
    Json::Value p;
    p["user"]["username"] = kDcAdmin;
    p["action"] = action;
    auto out = jira::RunDeprovision(*conn_, p, {});
    EXPECT_EQ(out.status().reason(), "policy_denied") << action;
  }
  EXPECT_TRUE(jira_->FindUser(kDcAdmin)->active);
}

TEST_F(DcJobsMiscTest, ParamsAreCheckedStrictly) {
  Start();
  auto reason = [&](const char* text, int which) {
    auto parsed = ParseJson(text, "params");
    EXPECT_TRUE(parsed.ok()) << text;
    switch (which) {
      case 0:
        return jira::RunProvision(*conn_, *parsed, {}).status().reason();
      case 1:
        return jira::RunDeprovision(*conn_, *parsed, {}).status().reason();
      case 2:
        return jira::RunGroupMembership(*conn_, *parsed, true, {}).status().reason();
      default:
        return jira::RunVerify(*conn_, *parsed, {}).status().reason();
    }
  };
  EXPECT_EQ(reason(R"({"email":"a@b.c","display_name":"A"})", 0), "invalid_params");  // username
  EXPECT_EQ(reason(R"({"email":"a@b.c","display_name":"A","username":"a","extra":1})", 0),
            "invalid_params");
  EXPECT_EQ(reason(R"({"email":"a@b.c","display_name":"A","username":"a","groups":"g"})", 0),
            "invalid_params");
  EXPECT_EQ(reason(R"({"email":"nope","display_name":"A","username":"a"})", 0), "invalid_params");
  EXPECT_EQ(reason(R"({"email":"a@b.c","display_name":"","username":"a"})", 0), "invalid_params");
  EXPECT_EQ(reason(R"({"user":{"username":"a"},"action":"erase"})", 1), "invalid_params");
  EXPECT_EQ(reason(R"({"user":{"username":"a","email":"a@b.c"},"action":"delete"})", 1),
            "invalid_params");
  EXPECT_EQ(reason(R"({"user":{"login":"a"},"action":"delete"})", 1), "invalid_params");
  EXPECT_EQ(reason(R"({"user":{"username":"a"}})", 2), "invalid_params");
  EXPECT_EQ(reason(R"({"user":{"username":"a"},"group":"g","host":"evil.example"})", 2),
            "invalid_params");
  EXPECT_EQ(reason(R"({"anything":true})", 3), "invalid_params");
  EXPECT_TRUE(jira_->LoginAttempts().empty());  // refused before Jira was contacted
}

}  // namespace
}  // namespace cakewalk::testing
