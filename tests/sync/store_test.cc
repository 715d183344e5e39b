// The scratch store (jira/sync_store.h): de-duplication, order, the join, the file's life.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "jira/sync_store.h"
#include "tests/support/temp_dir.h"

namespace cakewalk::jira {
namespace {

using cakewalk::testing::TempDir;
using cakewalk::testing::WriteFile;

UserRow Row(std::string id, std::string name = "") {
  UserRow r;
  r.id = std::move(id);
  r.display_name = name.empty() ? r.id : name;
  return r;
}

TEST(SyncStoreTest, UsersOnceInFirstSeenOrder) {
  TempDir dir;
  auto store = SyncStore::Create(dir / "scratch");
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  SyncStore& s = **store;
  auto added = s.AddUsers({Row("c"), Row("a"), Row("b")});
  ASSERT_TRUE(added.ok());
  EXPECT_EQ(*added, 3);
  // Overlap and reordering: only "d" is new, and "a" keeps its first record.
  added = s.AddUsers({Row("b"), Row("d"), Row("a", "Other Name"), Row("c")});
  ASSERT_TRUE(added.ok());
  EXPECT_EQ(*added, 1);
  EXPECT_EQ(*s.UserCount(), 4);
  std::vector<std::string> order;
  std::int64_t after = 0;
  while (true) {
    auto batch = s.UsersAfter(after, 3);
    ASSERT_TRUE(batch.ok());
    if (batch->empty()) break;
    for (const auto& u : *batch) {
      order.push_back(u.row.id);
      after = u.seq;
      if (u.row.id == "a") {
        EXPECT_EQ(u.row.display_name, "a");
      }
    }
  }
  EXPECT_EQ(order, (std::vector<std::string>{"c", "a", "b", "d"}));
}

TEST(SyncStoreTest, FieldsSurviveIncludingNulls) {
  TempDir dir;
  auto store = SyncStore::Create(dir / "scratch");
  ASSERT_TRUE(store.ok());
  UserRow r = Row("JIRAUSER10001", "Zoë Ñandú");
  r.username = "zoe";
  r.email = std::nullopt;
  r.active = false;
  r.last_login = "2026-01-01T10:00:00Z";
  r.account_type = "app";
  ASSERT_TRUE((*store)->AddUsers({r}).ok());
  auto batch = (*store)->UsersAfter(0, 10);
  ASSERT_TRUE(batch.ok());
  ASSERT_EQ(batch->size(), 1u);
  const UserRow& got = (*batch)[0].row;
  EXPECT_EQ(got.id, "JIRAUSER10001");
  EXPECT_EQ(got.username, "zoe");
  EXPECT_FALSE(got.email.has_value());
  EXPECT_EQ(got.display_name, "Zoë Ñandú");
  EXPECT_FALSE(got.active);
  EXPECT_EQ(got.last_login, "2026-01-01T10:00:00Z");
  EXPECT_EQ(got.account_type, "app");
}

TEST(SyncStoreTest, MembershipsOnceAndJoinedPerUser) {
  TempDir dir;
  auto store = SyncStore::Create(dir / "scratch");
  ASSERT_TRUE(store.ok());
  SyncStore& s = **store;
  ASSERT_TRUE(s.AddUsers({Row("u1"), Row("u2"), Row("u3")}).ok());
  EXPECT_EQ(*s.AddMembers(7, {"u1", "u2"}), 2);
  EXPECT_EQ(*s.AddMembers(7, {"u2", "u3", "u1"}), 1);  // an overlapping page
  EXPECT_EQ(*s.AddMembers(2, {"u1"}), 1);
  ASSERT_TRUE(s.AddTokenOwners({"u3", "u3", "nobody"}).ok());
  ASSERT_TRUE(s.IndexMembers().ok());
  ASSERT_TRUE(s.IndexMembers().ok());  // idempotent
  auto batch = s.UsersAfter(0, 10);
  ASSERT_TRUE(batch.ok());
  ASSERT_EQ(batch->size(), 3u);
  EXPECT_EQ((*batch)[0].groups, (std::vector<std::uint32_t>{2, 7}));
  EXPECT_EQ((*batch)[1].groups, (std::vector<std::uint32_t>{7}));
  EXPECT_EQ((*batch)[2].groups, (std::vector<std::uint32_t>{7}));
  EXPECT_FALSE((*batch)[0].owns_token);
  EXPECT_TRUE((*batch)[2].owns_token);
}

// Writes are grouped into transactions of many pages: rows of every page, on either side of a
// commit, are read back once, including users added after the index, and large gids and groups of
// many members survive the join.
TEST(SyncStoreTest, ManyPagesAcrossTransactionsAllReadBackOnce) {
  TempDir dir;
  auto store = SyncStore::Create(dir / "scratch");
  ASSERT_TRUE(store.ok());
  SyncStore& s = **store;
  constexpr int kPages = 300;  // several transactions' worth
  std::int64_t users = 0, members = 0;
  for (int p = 0; p < kPages; ++p) {
    // Each page repeats the previous page's last user: a duplicate across pages (and commits).
    std::vector<UserRow> rows;
    for (int i = std::max(0, p * 10 - 1); i < p * 10 + 10; ++i)
      rows.push_back(Row("u" + std::to_string(i)));
    auto added = s.AddUsers(rows);
    ASSERT_TRUE(added.ok()) << added.status().ToString();
    users += *added;
    // Group 4000000000 + p % 3 gets every user of the page, twice over pages p and p + 3.
    std::vector<std::string> ids;
    for (int i = p * 10; i < p * 10 + 10; ++i) ids.push_back("u" + std::to_string(i));
    auto m = s.AddMembers(4'000'000'000u + static_cast<std::uint32_t>(p % 3), ids);
    ASSERT_TRUE(m.ok());
    members += *m;
    ASSERT_TRUE(s.AddMembers(4'000'000'000u + static_cast<std::uint32_t>(p % 3), ids).ok());
    ASSERT_TRUE(s.AddMembers(1, {"u0"}).ok());
  }
  EXPECT_EQ(users, kPages * 10);
  EXPECT_EQ(members, kPages * 10);
  ASSERT_TRUE(s.AddTokenOwners({"u5"}).ok());
  ASSERT_TRUE(s.IndexMembers().ok());
  ASSERT_EQ(*s.AddUsers({Row("late"), Row("u1")}), 1);
  EXPECT_EQ(*s.UserCount(), kPages * 10 + 1);
  std::int64_t after = 0, seen = 0;
  while (true) {
    auto batch = s.UsersAfter(after, 250);
    ASSERT_TRUE(batch.ok()) << batch.status().ToString();
    if (batch->empty()) break;
    for (const auto& u : *batch) {
      after = u.seq;
      if (u.row.id == "late") {
        EXPECT_TRUE(u.groups.empty());
      } else {
        const int i = std::stoi(u.row.id.substr(1));
        std::vector<std::uint32_t> want;
        if (i == 0) want.push_back(1);
        want.push_back(4'000'000'000u + static_cast<std::uint32_t>((i / 10) % 3));
        EXPECT_EQ(u.groups, want) << u.row.id;
      }
      EXPECT_EQ(u.owns_token, u.row.id == "u5") << u.row.id;
      ++seen;
    }
  }
  EXPECT_EQ(seen, kPages * 10 + 1);
}

TEST(SyncStoreTest, PrivateFileRemovedAfterwardsAndStaleOnesCleaned) {
  TempDir dir;
  const auto scratch = dir / "scratch";
  std::filesystem::create_directories(scratch);
  WriteFile(scratch / "sync-1-0.sqlite3", "left by a crash");
  const std::string own =
      "sync-" + std::to_string(::getpid()) + "-999999.sqlite3";  // another sync of this process
  WriteFile(scratch / own, "busy");
  WriteFile(scratch / "notes.txt", "not ours");
  std::filesystem::path file;
  {
    auto store = SyncStore::Create(scratch);
    ASSERT_TRUE(store.ok());
    file = (*store)->path();
    struct stat st {};
    ASSERT_EQ(::stat(file.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    ASSERT_EQ(::stat(scratch.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    EXPECT_FALSE(std::filesystem::exists(scratch / "sync-1-0.sqlite3"));
    EXPECT_TRUE(std::filesystem::exists(scratch / own));
    EXPECT_TRUE(std::filesystem::exists(scratch / "notes.txt"));
  }
  EXPECT_FALSE(std::filesystem::exists(file));
}

TEST(SyncStoreTest, TwoStoresAtOnceUseTwoFiles) {
  TempDir dir;
  auto a = SyncStore::Create(dir / "scratch");
  auto b = SyncStore::Create(dir / "scratch");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE((*a)->path(), (*b)->path());
  ASSERT_TRUE((*a)->AddUsers({Row("x")}).ok());
  EXPECT_EQ(*(*b)->UserCount(), 0);
}

}  // namespace
}  // namespace cakewalk::jira
