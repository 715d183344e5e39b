// Access sync against the fake Jira Data Center over TLS, compared with its ground truth.
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "base/json.h"
#include "jira/errors.h"
#include "tests/sync/sync_env.h"

namespace cakewalk::testing {
namespace {

SiteSpec MidSite(std::uint64_t seed = 7) {
  SiteSpec s;
  s.seed = seed;
  s.users = 2500;
  s.groups = 40;
  s.memberships = 6000;
  return s;
}

class DcSyncTest : public SyncFixture {};

struct VersionCase {
  const char* version;
  const char* listing;  // the path that lists users, "" for none (10.0-10.2)
};

class DcVersionTest : public SyncFixture, public ::testing::WithParamInterface<VersionCase> {};

// Every DC version: exact records (every field of every user), the listing each version calls
// for, and the blind spot reported where users come from groups.
TEST_P(DcVersionTest, ReportsExactlyWhatJiraHolds) {
  const VersionCase c = GetParam();
  ASSERT_NO_FATAL_FAILURE(StartDc(c.version, MidSite()));
  CollectingSink sink;
  auto report = Sync(sink);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_NO_FATAL_FAILURE(VerifyComplete(sink, *report));
  const auto warnings = WarningCodes(report->output);
  const bool groups_mode = std::string(c.listing).empty();
  EXPECT_EQ(warnings.count("users_outside_groups_not_listed"), groups_mode ? 1u : 0u);
  EXPECT_EQ(warnings.count("last_login_unavailable"), groups_mode ? 1u : 0u);
  EXPECT_EQ(warnings.count("system_admin_not_distinguished"), 1u);
  EXPECT_EQ(warnings.count("groups_incomplete"), 0u);
  EXPECT_EQ(RequestsTo("/rest/api/2/user/list").empty(), std::string(c.listing) != "user/list");
  EXPECT_EQ(RequestsTo("/rest/api/2/user/search").empty(), std::string(c.listing) != "user/search");
  if (groups_mode) {
    // The blind spot is real: there are users in no group, and none of them was reported.
    std::size_t outside = 0;
    jira_->ForEachExpectedSyncUser([&](const UserTruth& t) { outside += t.groups.empty(); });
    EXPECT_GT(outside, 0u);
  }
  // Pages of at most 1000 users (user/list, user/search) and 50 members.
  for (const auto& r : Requests()) {
    const auto max = r.request.Query("maxResults");
    if (r.request.path.find("/group/member") != std::string::npos) {
      EXPECT_EQ(max.value_or(""), "50");
    }
    if (r.request.path.find("/user/") != std::string::npos && max) {
      EXPECT_LE(std::stoi(*max), 1000);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Versions, DcVersionTest,
                         ::testing::Values(VersionCase{"9.17.2", "user/search"},
                                           VersionCase{"10.1.1", ""},
                                           VersionCase{"10.3.4", "user/list"},
                                           VersionCase{"11.0.1", "user/list"}),
                         [](const auto& test) {
                           std::string n = test.param.version;
                           for (char& ch : n) ch = ch == '.' ? '_' : ch;
                           return "v" + n;
                         });

// Overlapping and reordered pages (every listing repeats entries of the previous page, in
// reverse): still every user exactly once and every member counted once.
TEST_F(DcSyncTest, OverlappingReorderedPagesGiveNoDuplicates) {
  for (const char* version : {"9.17.2", "10.3.4"}) {
    SCOPED_TRACE(version);
    FakeJiraOptions o;
    o.overlapping_items = 7;
    o.reversed_pages = true;
    ASSERT_NO_FATAL_FAILURE(StartDc(version, MidSite(11), o));
    CollectingSink sink;
    auto report = Sync(sink);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    ASSERT_NO_FATAL_FAILURE(VerifyComplete(sink, *report));
    server_->Stop();
    ClearRequests();
  }
}

// Member pages are planned from each group's first page and kept at most a window ahead (the
// product group here needs over 40 pages, more than the window): every page a group needs is
// asked for exactly once, none past its end, every member arrives (VerifyComplete), and the
// progress counted exactly those pages.
TEST_F(DcSyncTest, EachMemberPageIsAskedForOnce) {
  ASSERT_NO_FATAL_FAILURE(StartDc("10.3.4", MidSite(5)));
  CollectingSink sink;
  jira::AccessSyncOptions options = SyncOptions();
  jira::SyncProgress last;
  options.progress = [&](const jira::SyncProgress& p) { last = p; };
  auto report = Sync(sink, Json::Value(Json::objectValue), options);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  // The progress' page counts end equal to the pages asked for.
  EXPECT_EQ(last.phase, "done");
  EXPECT_EQ(last.member_pages_known, last.member_pages_done);
  EXPECT_EQ(last.member_pages_done,
            static_cast<std::int64_t>(RequestsTo("/rest/api/2/group/member").size()));
  ASSERT_NO_FATAL_FAILURE(VerifyComplete(sink, *report));
  std::map<std::string, std::vector<std::int64_t>> starts;
  for (const auto& r : RequestsTo("/rest/api/2/group/member")) {
    starts[r.request.Query("groupname").value_or("")].push_back(
        std::stoll(r.request.Query("startAt").value_or("-1")));
  }
  std::int64_t largest = 0;
  for (const Json::Value& g : sink.OfKind("group")) {
    const std::string name = g["name"].asString();
    const std::int64_t members = g["member_count"].asInt64();
    largest = std::max(largest, members);
    std::vector<std::int64_t> want;
    for (std::int64_t s = 0; s == 0 || s < members; s += 50) want.push_back(s);
    std::vector<std::int64_t> got = starts[name];
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, want) << name << " (" << members << " members)";
  }
  EXPECT_GT(largest, 40 * 50) << "no group needs more pages than the window";
}

// However many groups the picker finds, the member pages of at most a window of groups (16 here;
// twice the concurrency of 6 is less) are queued or in flight at once, so what the sync holds does
// not grow with the groups. From the fake's log: when a member page arrives, every group whose
// first page has arrived and whose last page has not is still open in the sync.
TEST_F(DcSyncTest, MemberPagesOfABoundedNumberOfGroupsAtOnce) {
  SiteSpec site = MidSite(13);
  site.groups = 150;
  site.memberships = 15000;  // about two pages per group
  ASSERT_NO_FATAL_FAILURE(StartDc("10.3.4", site));
  CollectingSink sink;
  auto report = Sync(sink);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_NO_FATAL_FAILURE(VerifyComplete(sink, *report));
  std::map<std::string, std::int64_t> last_start;  // per group, where its last page starts
  for (const Json::Value& g : sink.OfKind("group")) {
    const std::int64_t members = g["member_count"].asInt64();
    last_start[g["name"].asString()] = members == 0 ? 0 : (members - 1) / 50 * 50;
  }
  ASSERT_GT(last_start.size(), 150u);
  std::set<std::string> open;
  std::size_t most = 0;
  for (const auto& r : RequestsTo("/rest/api/2/group/member")) {
    const std::string name = r.request.Query("groupname").value_or("");
    const std::int64_t start = std::stoll(r.request.Query("startAt").value_or("-1"));
    ASSERT_TRUE(last_start.count(name)) << name;
    if (start == 0) open.insert(name);
    most = std::max(most, open.size());
    if (start == last_start[name]) open.erase(name);
  }
  EXPECT_LE(most, 16u);
  EXPECT_GE(most, 6u) << "fewer groups at once than the concurrency";
}

// The group picker shows 20 names per query; 60 custom groups are still all found (and the
// queries that found them are narrower ones, not one call).
TEST_F(DcSyncTest, CappedGroupPickerIsCompleted) {
  FakeJiraOptions o;
  o.groups_picker_limit = 20;
  SiteSpec s = MidSite(3);
  s.users = 600;
  s.groups = 60;
  s.memberships = 1500;
  ASSERT_NO_FATAL_FAILURE(StartDc("10.3.4", s, o));
  CollectingSink sink;
  auto report = Sync(sink);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_NO_FATAL_FAILURE(VerifyComplete(sink, *report));
  EXPECT_EQ(WarningCodes(report->output).count("groups_incomplete"), 0u);
  EXPECT_GT(RequestsTo("/groups/picker").size(), 1u);
}

// Over 600 groups sharing prefixes and repeated characters ("aa", "aaa", ...: a name contains a
// query twice but counts once), upper case and non-ASCII names, 10 names per picker answer: too
// many for paging by exclusion, so the picker is narrowed and each query's count of known names
// decides when to stop. Every group is found (the records equal the fake's groups), no query is
// sent twice and nothing is reported missing (a count one below the truth reports a group
// missing; the counts themselves are checked exactly in GroupNameIndexTest).
TEST_F(DcSyncTest, CappedGroupPickerWithSharedPrefixes) {
  FakeJiraOptions o;
  o.groups_picker_limit = 10;
  SiteSpec s = MidSite(5);
  s.users = 300;
  s.groups = 600;
  s.memberships = 1200;
  ASSERT_NO_FATAL_FAILURE(StartDc("10.3.4", s, o));
  std::vector<std::string> extra;
  for (int n = 1; n <= 6; ++n) extra.push_back(std::string(static_cast<std::size_t>(n), 'a'));
  for (const char* name : {"AA-ops", "aa-OPS-2", "ops", "team-ops", "team-opsa", "\xc3\xa9quipe",
                           "\xc3\xa9quipe-a", "b-aaa-b", "a-a-a-a"}) {
    extra.push_back(name);
  }
  for (const std::string& name : extra) ASSERT_TRUE(jira_->AddGroup(name).ok()) << name;
  CollectingSink sink;
  auto report = Sync(sink);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_NO_FATAL_FAILURE(VerifyComplete(sink, *report));
  EXPECT_EQ(WarningCodes(report->output).count("groups_incomplete"), 0u);
  std::set<std::string> names;
  for (const auto& r : sink.OfKind("group")) names.insert(r["name"].asString());
  for (const std::string& name : extra) EXPECT_EQ(names.count(name), 1u) << name;
  std::set<std::string> sent;
  for (const auto& r : RequestsTo("/groups/picker")) {
    EXPECT_TRUE(sent.insert(r.request.target).second) << "asked twice: " << r.request.target;
  }
  // At most 10 names per answer: at least a tenth of the groups in requests.
  EXPECT_GE(sent.size(), (s.groups + extra.size()) / 10);
}

// Characters learned late: names with letters, digits, capitals, '-', '_', ' ' and a two-byte
// character, where the last three appear only in names that sort last (after the "team-" ones), so
// the first answers (the query "" and the queries narrowed from it) show none of them. Each query
// already narrowed while still short of its total must be narrowed again with every character
// learned after it; otherwise whole groups (and so their members) are missing. With 3 and with 20
// names per answer: every group and member is found (the records equal the fake's), no query is
// asked twice and nothing is reported missing.
TEST_F(DcSyncTest, CappedGroupPickerLearnsCharactersLate) {
  std::vector<std::string> extra;
  for (int i = 0; i < 200; ++i) {
    extra.push_back((i % 3 == 0 ? "Team-" : "team-") +
                    std::string(1, static_cast<char>('a' + i % 7)) +
                    std::string(1, static_cast<char>('b' + i % 5)) + std::to_string(i % 40) + "-" +
                    std::to_string(i));
  }
  const char* late[] = {"_", " ", "\xc3\xa9", "8", "9"};
  for (int i = 0; i < 180; ++i) {
    std::string name = i % 2 ? "zz" : "Zy";
    name += late[i % 5];
    name += static_cast<char>('a' + i % 4);
    name += late[(i / 5) % 5];
    name += std::to_string(i);
    extra.push_back(name);
  }
  // Names of late characters only: found only through queries made of them.
  const char* only[] = {"\xc3\xa9", "_", "8", " "};
  for (int i = 0; i < 64; ++i) {
    std::string name = "\xc3\xa9";
    for (int k = i; k > 0; k /= 4) name += only[k % 4];
    name += "\xc3\xa9\xc3\xa9";
    extra.push_back(name);
  }
  for (int cap : {3, 20}) {
    SCOPED_TRACE("cap " + std::to_string(cap));
    FakeJiraOptions o;
    o.groups_picker_limit = cap;
    SiteSpec s = MidSite(9);
    s.users = 200;
    s.groups = 30;
    s.memberships = 600;
    ASSERT_NO_FATAL_FAILURE(StartDc("10.3.4", s, o));
    for (const std::string& name : extra) ASSERT_TRUE(jira_->AddGroup(name).ok()) << name;
    // Members in the late groups: a missing group loses them.
    for (int u = 0; u < 40; ++u) {
      NewUser user;
      user.username = "late-" + std::to_string(u);
      user.email = user.username + "@corp.example";
      user.display_name = user.username;
      for (int k = 0; k < 4; ++k) {
        user.groups.push_back(extra[200 + static_cast<std::size_t>((u * 7 + k * 61) % 244)]);
      }
      ASSERT_TRUE(jira_->AddUser(user).ok()) << user.username;
    }
    CollectingSink sink;
    auto report = Sync(sink);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    ASSERT_NO_FATAL_FAILURE(VerifyComplete(sink, *report));
    EXPECT_EQ(WarningCodes(report->output).count("groups_incomplete"), 0u);
    std::set<std::string> names;
    for (const auto& r : sink.OfKind("group")) names.insert(r["name"].asString());
    std::size_t missing = 0;
    for (const std::string& name : extra) missing += names.count(name) == 0;
    EXPECT_EQ(missing, 0u);
    std::set<std::string> sent;
    for (const auto& r : RequestsTo("/groups/picker")) {
      EXPECT_TRUE(sent.insert(r.request.target).second) << "asked twice: " << r.request.target;
    }
    std::cout << "cap " << cap << ": " << sent.size() << " picker requests for "
              << s.groups + extra.size() << " custom groups\n";
    server_->Stop();
    ClearRequests();
  }
}

// A group picker answer without groups (a proxy page with status 200, a changed API) fails the
// sync: an empty list is never taken for "no groups".
TEST_F(DcSyncTest, MalformedGroupListFailsTheSync) {
  ASSERT_NO_FATAL_FAILURE(StartDc("10.3.4"));
  FaultRule odd;
  odd.path_contains = "/groups/picker";
  odd.count = -1;
  odd.status = 200;  // the fake's canned body: {"errorMessages": [...]}, no groups
  jira_->QueueFault(odd);
  CollectingSink sink;
  auto report = Sync(sink);
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.status().reason(), "internal");
  EXPECT_FALSE(sink.finished());
}

// Each Data Center non-human rule, with the reason it reports.
TEST_F(DcSyncTest, NonHumanRules) {
  ASSERT_NO_FATAL_FAILURE(StartDc("10.3.4"));
  patterns_ = {"svc-*", "*-bot-*", "noreply*"};
  const SysTime logged_in = clock_.Now() - std::chrono::hours(24);
  auto add = [&](const std::string& name, const std::string& email, std::vector<std::string> groups,
                 bool login) {
    NewUser u;
    u.username = name;
    u.email = email;
    u.display_name = name;
    u.groups = std::move(groups);
    if (login) u.last_login = logged_in;
    ASSERT_TRUE(jira_->AddUser(u).ok()) << name;
  };
  add("alice", "alice@corp.example", {"jira-software-users"}, true);
  add("svc-build", "build@corp.example", {"jira-software-users"}, true);
  add("ci-bot-7", "ci@corp.example", {"jira-software-users"}, false);
  add("mailer", "noreply@corp.example", {"jira-software-users"}, true);
  add("integration", "integration@corp.example", {}, true);
  add("scripter", "scripter@corp.example", {"jira-software-users"}, false);
  add("dev", "dev@corp.example", {"jira-software-users"}, true);
  for (const char* owner : {"integration", "scripter", "dev"}) {
    ASSERT_TRUE(jira_->AddPersonalAccessToken(owner, "automation", std::nullopt).ok());
  }
  CollectingSink sink;
  auto report = Sync(sink);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_NO_FATAL_FAILURE(VerifyComplete(sink, *report));
  std::map<std::string, std::string> verdict;
  for (const auto& r : sink.OfKind("user")) {
    verdict[r["username"].asString()] =
        r["human"].asBool() ? "human" : r["nhi_type"].asString() + " " + r["nhi_reason"].asString();
  }
  EXPECT_EQ(verdict["alice"], "human");
  EXPECT_EQ(verdict["svc-build"], "service_account name_pattern:svc-*");
  EXPECT_EQ(verdict["ci-bot-7"], "bot name_pattern:*-bot-*");
  EXPECT_EQ(verdict["mailer"], "service_account name_pattern:noreply*");
  EXPECT_EQ(verdict["integration"], "system token_without_application_access");
  EXPECT_EQ(verdict["scripter"], "service_account token_without_login");
  EXPECT_EQ(verdict["dev"], "human");  // a token alone is not enough
}

// On a generated site whose non-human accounts follow its naming (svc-*, *-bot-*, sys-* without
// any application), every one of them is found and typed as the fake knows it.
TEST_F(DcSyncTest, GeneratedNonHumanAccountsAreAllFound) {
  ASSERT_NO_FATAL_FAILURE(StartDc("11.0.1", MidSite(21)));
  CollectingSink sink;
  auto report = Sync(sink);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  std::map<std::string, Json::Value> by_id;
  for (const auto& r : sink.OfKind("user")) by_id[r["id"].asString()] = r;
  std::size_t nhi = 0, humans_flagged = 0, humans = 0;
  jira_->ForEachExpectedSyncUser([&](const UserTruth& t) {
    const Json::Value& r = by_id[t.id];
    if (t.nhi == NhiKind::kHuman) {
      ++humans;
      humans_flagged += !r["human"].asBool();
      return;
    }
    ++nhi;
    EXPECT_FALSE(r["human"].asBool()) << t.username;
    EXPECT_EQ(r["nhi_type"].asString(), NhiKindName(t.nhi)) << t.username;
  });
  EXPECT_GT(nhi, 20u);
  // Heuristics: a few people with a token and no product or no login look like accounts.
  EXPECT_LT(humans_flagged * 200, humans);
}

// Admin permission and level come from the groups: the picker's ADMIN label marks groups that
// give administrative access; products from the application roles' groups.
TEST_F(DcSyncTest, PermissionsAndLevels) {
  ASSERT_NO_FATAL_FAILURE(StartDc("10.3.4"));
  ASSERT_TRUE(jira_->AddGroup("helpdesk").ok());
  AddUser("root", "root@corp.example", {"jira-system-administrators"});
  AddUser("boss", "boss@corp.example", {"jira-administrators"});
  AddUser("worker", "worker@corp.example", {"jira-software-users", "helpdesk"});
  AddUser("agent", "agent@corp.example", {"jira-servicedesk-users", "jira-software-users"});
  AddUser("nobody", "nobody@corp.example", {"helpdesk"});
  CollectingSink sink;
  auto report = Sync(sink);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_NO_FATAL_FAILURE(VerifyComplete(sink, *report));
  std::map<std::string, Json::Value> by;
  for (const auto& r : sink.OfKind("user")) by[r["username"].asString()] = r;
  EXPECT_EQ(by["root"]["level"].asString(), "admin");
  EXPECT_EQ(WriteJson(by["root"]["permissions"]), R"(["ADMINISTER"])");
  EXPECT_EQ(by["boss"]["level"].asString(), "admin");
  EXPECT_EQ(by["worker"]["level"].asString(), "user");
  EXPECT_EQ(WriteJson(by["worker"]["products"]), R"(["jira-software"])");
  EXPECT_EQ(WriteJson(by["worker"]["groups"]), R"(["helpdesk","jira-software-users"])");
  EXPECT_EQ(WriteJson(by["agent"]["products"]), R"(["jira-servicedesk","jira-software"])");
  EXPECT_EQ(by["nobody"]["level"].asString(), "no_access");
  EXPECT_EQ(WriteJson(by["nobody"]["permissions"]), "[]");
}

// Credentials: personal access tokens (with owner and dates), application links, OAuth clients.
TEST_F(DcSyncTest, CredentialsAreListed) {
  ASSERT_NO_FATAL_FAILURE(StartDc("10.3.4"));
  AddUser("robot", "robot@corp.example", {"jira-software-users"});
  ASSERT_TRUE(
      jira_->AddPersonalAccessToken("robot", "nightly", clock_.Now() + std::chrono::hours(240))
          .ok());
  ASSERT_TRUE(jira_
                  ->AddApplicationLink(
                      {"7f2b7c3e-1", "Confluence", "confluence", "https://wiki.corp.example"})
                  .ok());
  OAuthClientSpec client;
  client.client_id = "reporting-tool";
  client.client_secret = "not-used-here";
  client.name = "Reporting";
  client.redirect_uris = {"https://reports.corp.example/cb"};
  client.scopes = {"READ"};
  ASSERT_TRUE(jira_->AddOAuthClient(client).ok());
  CollectingSink sink;
  auto report = Sync(sink);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_NO_FATAL_FAILURE(VerifyComplete(sink, *report));
  std::set<std::string> kinds;
  for (const auto& c : sink.OfKind("credential")) kinds.insert(c["nhi_type"].asString());
  EXPECT_EQ(kinds,
            (std::set<std::string>{"personal_access_token", "application_link", "oauth_client"}));
  EXPECT_EQ(report->output["counts"]["credentials"].asInt(), 4);  // 2 PATs, a link, a client
}

// A Jira without the token inventory: a warning, and the rest of the sync.
TEST_F(DcSyncTest, MissingTokenInventoryIsAWarning) {
  ASSERT_NO_FATAL_FAILURE(StartDc("10.3.4"));
  FaultRule gone;
  gone.path_contains = "/pat/latest/tokens/search";
  gone.count = -1;
  gone.status = 404;
  jira_->QueueFault(gone);
  CollectingSink sink;
  auto report = Sync(sink);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(WarningCodes(report->output).count("personal_access_tokens_not_listed"), 1u);
  for (const auto& c : sink.OfKind("credential")) {
    EXPECT_NE(c["nhi_type"].asString(), "personal_access_token");
  }
}

// include selects record kinds; user records are always complete; wrong params are refused.
TEST_F(DcSyncTest, IncludeSelectsRecordKinds) {
  ASSERT_NO_FATAL_FAILURE(StartDc("10.3.4", MidSite(5)));
  {
    CollectingSink sink;
    Json::Value p;
    p["include"].append("groups");
    auto report = Sync(sink, p);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_TRUE(sink.OfKind("user").empty());
    EXPECT_TRUE(sink.OfKind("credential").empty());
    EXPECT_EQ(sink.OfKind("group").size(), jira_->Groups().size());
    EXPECT_TRUE(RequestsTo("/user/list").empty());
  }
  {
    ClearRequests();
    CollectingSink sink;
    Json::Value p;
    p["include"].append("non_human");
    auto report = Sync(sink, p);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_EQ(sink.OfKind("credential").size(), jira_->Credentials().size());
    EXPECT_EQ(sink.records().size(), sink.OfKind("credential").size());
    EXPECT_TRUE(RequestsTo("/group/member").empty());
  }
  {
    CollectingSink sink;
    Json::Value p;
    p["include"].append("users");
    p["include"].append("memberships");
    p["include"].append("permissions");
    auto report = Sync(sink, p);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    ASSERT_NO_FATAL_FAILURE(VerifyComplete(sink, *report, /*groups=*/false,
                                           /*credentials=*/false));
  }
  for (const char* bad : {R"({"include": []})", R"({"include": ["everything"]})",
                          R"({"include": "users"})", R"({"since": "yesterday"})"}) {
    CollectingSink sink;
    auto report = Sync(sink, *ParseJson(bad, "params"));
    ASSERT_FALSE(report.ok()) << bad;
    EXPECT_EQ(report.status().reason(), "invalid_params") << bad;
    EXPECT_TRUE(sink.records().empty());
  }
}

// The scratch file exists only during the sync, 0600 in a 0700 folder, and is gone after — also
// after a failure.
TEST_F(DcSyncTest, ScratchFileIsPrivateAndRemoved) {
  ASSERT_NO_FATAL_FAILURE(StartDc("10.3.4", MidSite(9)));
  const auto dir = dir_ / "scratch";
  int checked = 0;
  CollectingSink sink;
  sink.before_write = [&](std::size_t, const Json::Value&) {
    if (checked++ > 0) return Status::Ok();
    struct stat st {};
    EXPECT_EQ(::stat(dir.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    int files = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      ++files;
      EXPECT_EQ(::stat(e.path().c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 0777, 0600u) << e.path();
    }
    EXPECT_EQ(files, 1);
    return Status::Ok();
  };
  auto report = Sync(sink);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(std::filesystem::is_empty(dir));

  CollectingSink failing;
  failing.before_write = [](std::size_t i, const Json::Value&) {
    return i == 100 ? Status(Code::kUnavailable, "sink down", "jira_unavailable") : Status::Ok();
  };
  EXPECT_FALSE(Sync(failing).ok());
  EXPECT_TRUE(std::filesystem::is_empty(dir));

  // A file left by a crashed process is removed by the next sync.
  WriteFile(dir / "sync-1-0.sqlite3", "leftover");
  CollectingSink again;
  ASSERT_TRUE(Sync(again).ok());
  EXPECT_TRUE(std::filesystem::is_empty(dir));
}

}  // namespace
}  // namespace cakewalk::testing
