// SyncStore: the access sync's scratch space on disk, so that the agent's memory does not grow
// with the size of the site (jira/access_sync.h explains the design).
//
// One SQLite file per sync in `<dir>` (created 0700), named sync-<pid>-<n>.sqlite3, created 0600
// with O_EXCL before SQLite opens it and deleted when the store is destroyed. Files left by an
// earlier process (a crash) are deleted when a store is created; files of this process are not
// touched (several syncs may run at once). The file holds what Jira showed about users and group
// memberships — no secret ever — and is private to the agent.
//
// SQLite runs without a journal and without fsync (the file is thrown away after the sync and
// never read after a crash), with a bounded page cache (`cache_kib`): its memory is fixed, the
// file grows instead.
//
// Tables:
//   users(id UNIQUE, username, email, display_name, active, last_login, account_type)
//        rowid order = the order in which users were first seen; a second sighting of the same id
//        (overlapping or reordered pages, a user found in several groups) is ignored: this is the
//        de-duplication, and it needs no memory per user.
//   members(gid, uid) PRIMARY KEY — one row per distinct membership; a repeated one is ignored.
//        After the memberships are complete, IndexMembers() adds the index by user.
//   token_owners(uid) PRIMARY KEY — accounts owning a personal access token (Data Center).
//
// Writes are grouped: a transaction spans kWritesPerTransaction calls that add rows (a page each),
// with BEGIN and COMMIT prepared once, so that SQLite writes its dirty pages once per group of
// pages instead of once per page of 50 memberships. Nothing needs the rows on disk before the
// sync reads them back on the same connection (which sees uncommitted rows); a failed write ends
// the sync, which throws the file away.
//
// Thread-safe: one connection behind a mutex; callers batch their rows per page.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace cakewalk::jira {

struct UserRow {
  std::string id;
  std::optional<std::string> username;
  std::optional<std::string> email;
  std::string display_name;
  bool active = true;
  std::optional<std::string> last_login;    // RFC 3339
  std::optional<std::string> account_type;  // Cloud accountType
};

// A stored user with what the join adds.
struct SpooledUser {
  std::int64_t seq = 0;  // rowid
  UserRow row;
  std::vector<std::uint32_t> groups;  // group ids (SyncStore's gid), ascending, distinct
  bool owns_token = false;
};

class SyncStore {
 public:
  // Creates `dir` (0700) when missing, removes stale files of other processes, creates the file.
  static Result<std::unique_ptr<SyncStore>> Create(const std::filesystem::path& dir,
                                                   int cache_kib = 4096);
  ~SyncStore();  // closes and deletes the file
  SyncStore(const SyncStore&) = delete;
  SyncStore& operator=(const SyncStore&) = delete;

  const std::filesystem::path& path() const { return path_; }

  // Adds users not seen before (by id); returns how many were new.
  Result<std::int64_t> AddUsers(const std::vector<UserRow>& users);
  // Adds memberships of group `gid`; returns how many were new for the group.
  Result<std::int64_t> AddMembers(std::uint32_t gid, const std::vector<std::string>& user_ids);
  Status AddTokenOwners(const std::vector<std::string>& user_ids);
  // Builds the index by user over the memberships (once they are complete).
  Status IndexMembers();

  // Up to `limit` users stored after `after_seq` (rowid order), each with its groups and token
  // ownership. Needs IndexMembers() first when memberships are wanted.
  Result<std::vector<SpooledUser>> UsersAfter(std::int64_t after_seq, int limit);
  Result<std::int64_t> UserCount();

 private:
  SyncStore() = default;
  Status Exec(const char* sql);
  // Runs a statement without rows (BEGIN, COMMIT) and resets it.
  Status Step(sqlite3_stmt* statement, const char* what);
  // The transaction around writes: opened by the first write, committed after
  // kWritesPerTransaction of them (and before the index is built).
  Status BeginWrite();
  Status EndWrite();
  Status Commit();
  static constexpr int kWritesPerTransaction = 64;

  std::filesystem::path path_;
  std::mutex mu_;
  sqlite3* db_ = nullptr;
  struct Statements;
  std::unique_ptr<Statements> st_;
  int cache_kib_ = 4096;  // the page cache's size outside IndexMembers()
  bool in_transaction_ = false;
  int writes_in_transaction_ = 0;
};

}  // namespace cakewalk::jira
