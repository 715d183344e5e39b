// Access sync against the fake Jira Cloud over TLS, compared with its ground truth.
#include "base/json.h"
#include "tests/sync/sync_env.h"

namespace cakewalk::testing {
namespace {

SiteSpec CloudSite(std::uint64_t seed = 13) {
  SiteSpec s;
  s.seed = seed;
  s.users = 3200;  // four pages of users/search, the last one short
  s.groups = 30;
  s.memberships = 5000;
  s.hidden_email_fraction = 0.15;
  s.search_hidden_fraction = 0.02;
  return s;
}

class CloudSyncTest : public SyncFixture {};

// Every field of every user, groups with member counts; account types decide what is human,
// exactly as the fake knows it.
TEST_F(CloudSyncTest, ReportsExactlyWhatJiraHolds) {
  ASSERT_NO_FATAL_FAILURE(StartCloud(CloudSite()));
  CollectingSink sink;
  auto report = Sync(sink);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_NO_FATAL_FAILURE(VerifyComplete(sink, *report));
  std::map<std::string, Json::Value> by_id;
  for (const auto& r : sink.OfKind("user")) by_id[r["id"].asString()] = r;
  std::map<std::string, int> types;
  jira_->ForEachExpectedSyncUser([&](const UserTruth& t) {
    const Json::Value& r = by_id[t.id];
    EXPECT_EQ(r["human"].asBool(), t.nhi == NhiKind::kHuman) << t.id;
    if (t.nhi != NhiKind::kHuman) {
      EXPECT_EQ(r["nhi_type"].asString(), NhiKindName(t.nhi)) << t.id;
      ++types[r["nhi_type"].asString()];
    }
  });
  EXPECT_GT(types["app"], 0);
  EXPECT_GT(types["service_account"], 0);
  EXPECT_GT(types["customer"], 0);
  const auto warnings = WarningCodes(report->output);
  EXPECT_EQ(warnings, (std::set<std::string>{"credentials_not_listed", "last_login_unavailable"}));
  // users/search: bare arrays of 1000 from startAt 0, 1000, 2000, ... up to the first empty page.
  std::set<std::string> starts;
  for (const auto& r : RequestsTo("/rest/api/3/users/search")) {
    EXPECT_EQ(r.request.Query("maxResults").value_or(""), "1000");
    starts.insert(r.request.Query("startAt").value_or("?"));
  }
  EXPECT_TRUE(starts.count("0") && starts.count("1000") && starts.count("2000") &&
              starts.count("3000") && starts.count("4000"));
  // Admin groups were asked for by access type.
  EXPECT_FALSE(RequestsTo("/group/bulk").empty());
  bool site_admin = false;
  for (const auto& r : RequestsTo("/group/bulk")) {
    site_admin |= r.request.Query("accessType").value_or("") == "site-admin";
  }
  EXPECT_TRUE(site_admin);
}

// Short pages (privacy filtering drops users after the range was taken) do not end the listing;
// only an empty page does.
TEST_F(CloudSyncTest, ShortPagesDoNotEndTheListing) {
  ASSERT_NO_FATAL_FAILURE(StartCloud());
  // 2500 people, every third hidden from listings: each page of 1000 comes back with ~667.
  for (int i = 0; i < 2500; ++i) {
    NewUser u;
    u.email = "person" + std::to_string(i) + "@corp.example";
    u.display_name = "Person " + std::to_string(i);
    u.search_hidden = i % 3 == 0;
    ASSERT_TRUE(jira_->AddUser(u).ok());
  }
  CollectingSink sink;
  auto report = Sync(sink);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_NO_FATAL_FAILURE(VerifyComplete(sink, *report));
  EXPECT_EQ(sink.OfKind("user").size(), 2500u - 834u + 1u);  // + the admin
}

// E-mail addresses hidden by privacy settings are null — whether Jira sends null or leaves the
// field out — and never filled in from elsewhere.
TEST_F(CloudSyncTest, HiddenEmailsAreNull) {
  for (HiddenEmailStyle style : {HiddenEmailStyle::kNull, HiddenEmailStyle::kAbsent}) {
    FakeJiraOptions o;
    o.hidden_email_style = style;
    ASSERT_NO_FATAL_FAILURE(StartCloud(std::nullopt, o));
    NewUser shy;
    shy.email = "shy@corp.example";
    shy.display_name = "Shy Person";
    shy.email_visible = false;
    shy.groups = {"jira-software-users"};
    auto id = jira_->AddUser(shy);
    ASSERT_TRUE(id.ok());
    NewUser open;
    open.email = "open@corp.example";
    open.display_name = "Open Person";
    ASSERT_TRUE(jira_->AddUser(open).ok());
    CollectingSink sink;
    auto report = Sync(sink);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    ASSERT_NO_FATAL_FAILURE(VerifyComplete(sink, *report));
    for (const auto& r : sink.OfKind("user")) {
      if (r["id"].asString() == *id) {
        EXPECT_TRUE(r["email"].isNull());
        EXPECT_EQ(r["display_name"].asString(), "Shy Person");
      }
    }
    // The address appears nowhere in what was sent.
    for (const auto& r : sink.records()) {
      EXPECT_EQ(WriteJson(r).find("shy@corp.example"), std::string::npos);
    }
    server_->Stop();
  }
}

// Cloud's own account kinds: apps, service accounts (by their e-mail domain), customers.
TEST_F(CloudSyncTest, NonHumanRules) {
  ASSERT_NO_FATAL_FAILURE(StartCloud());
  auto add = [&](std::string email, CloudAccountType type, std::string name) {
    NewUser u;
    u.email = std::move(email);
    u.display_name = std::move(name);
    u.account_type = type;
    auto id = jira_->AddUser(u);
    EXPECT_TRUE(id.ok());
    return id.ok() ? *id : std::string();
  };
  const std::string person = add("person@corp.example", CloudAccountType::kAtlassian, "Person");
  const std::string app = add("", CloudAccountType::kApp, "Slack for Jira");
  const std::string svc =
      add("deploy-7@serviceaccount.atlassian.com", CloudAccountType::kApp, "Deploy");
  const std::string customer = add("buyer@customer.example", CloudAccountType::kCustomer, "Buyer");
  CollectingSink sink;
  auto report = Sync(sink);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  std::map<std::string, std::string> verdict;
  for (const auto& r : sink.OfKind("user")) {
    verdict[r["id"].asString()] =
        r["human"].asBool() ? "human" : r["nhi_type"].asString() + " " + r["nhi_reason"].asString();
  }
  EXPECT_EQ(verdict[person], "human");
  EXPECT_EQ(verdict[app], "app cloud_account_type:app");
  EXPECT_EQ(verdict[svc], "service_account cloud_service_account");
  EXPECT_EQ(verdict[customer], "customer cloud_account_type:customer");
  EXPECT_EQ(report->output["counts"]["non_human"].asInt(), 3);
}

// Overlapping and reordered pages of users/search and group/member: no duplicates.
TEST_F(CloudSyncTest, OverlappingReorderedPagesGiveNoDuplicates) {
  FakeJiraOptions o;
  o.overlapping_items = 13;
  o.reversed_pages = true;
  ASSERT_NO_FATAL_FAILURE(StartCloud(CloudSite(17), o));
  CollectingSink sink;
  auto report = Sync(sink);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_NO_FATAL_FAILURE(VerifyComplete(sink, *report));
}

}  // namespace
}  // namespace cakewalk::testing
