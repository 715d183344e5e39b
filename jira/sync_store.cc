#include "jira/sync_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <system_error>

#include "jira/errors.h"

namespace cakewalk::jira {
namespace {

std::atomic<std::uint64_t> g_counter{0};

constexpr std::string_view kPrefix = "sync-";
constexpr std::string_view kSuffix = ".sqlite3";

// The pid a scratch file name carries ("sync-<pid>-<n>.sqlite3"), when it is one.
std::optional<long> PidOf(const std::string& name) {
  if (name.rfind(kPrefix, 0) != 0 || name.size() <= kPrefix.size() + kSuffix.size() ||
      name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0) {
    return std::nullopt;
  }
  const std::size_t dash = name.find('-', kPrefix.size());
  if (dash == std::string::npos) return std::nullopt;
  long pid = 0;
  for (std::size_t i = kPrefix.size(); i < dash; ++i) {
    if (name[i] < '0' || name[i] > '9' || pid > 100'000'000) return std::nullopt;
    pid = pid * 10 + (name[i] - '0');
  }
  return pid;
}

// Users after a rowid, each with its token ownership and, once the members have their index by
// user, its groups (a list of gids, joined in SQLite rather than by a lookup per user).
std::string UsersAfterSql(bool with_groups) {
  return std::string(
             "SELECT u.rowid, u.id, u.username, u.email, u.display_name, u.active, "
             "u.last_login, u.account_type, ") +
         (with_groups ? "(SELECT group_concat(m.gid) FROM members m WHERE m.uid = u.id)" : "NULL") +
         ", EXISTS(SELECT 1 FROM token_owners t WHERE t.uid = u.id) "
         "FROM users u WHERE u.rowid > ?1 ORDER BY u.rowid LIMIT ?2";
}

// "3,17,5" (group_concat of gids) into ascending gids.
void ParseGids(const unsigned char* text, int size, std::vector<std::uint32_t>& out) {
  std::uint64_t v = 0;
  bool any = false;
  for (int i = 0; i <= size; ++i) {
    if (i == size || text[i] == ',') {
      if (any) out.push_back(static_cast<std::uint32_t>(v));
      v = 0;
      any = false;
    } else if (text[i] >= '0' && text[i] <= '9') {
      v = v * 10 + static_cast<std::uint64_t>(text[i] - '0');
      any = true;
    }
  }
  std::sort(out.begin(), out.end());
}

Status StoreError(std::string message) {
  return JiraInternal("access sync scratch store: " + message);
}

class Stmt {
 public:
  Stmt() = default;
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Status Prepare(sqlite3* db, const char* sql) {
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s_, nullptr) != SQLITE_OK) {
      return StoreError(std::string("preparing a statement: ") + sqlite3_errmsg(db));
    }
    return Status::Ok();
  }
  sqlite3_stmt* get() const { return s_; }
  void Reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }

 private:
  sqlite3_stmt* s_ = nullptr;
};

void BindText(sqlite3_stmt* s, int i, const std::optional<std::string>& v) {
  if (v) {
    sqlite3_bind_text(s, i, v->data(), static_cast<int>(v->size()), SQLITE_TRANSIENT);
  } else {
    sqlite3_bind_null(s, i);
  }
}

std::optional<std::string> ColumnText(sqlite3_stmt* s, int i) {
  if (sqlite3_column_type(s, i) == SQLITE_NULL) return std::nullopt;
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
  return std::string(p == nullptr ? "" : p, static_cast<std::size_t>(sqlite3_column_bytes(s, i)));
}

}  // namespace

struct SyncStore::Statements {
  Stmt begin, commit, insert_user, insert_member, insert_owner, users_after, users_after_joined,
      count_users;
};

Result<std::unique_ptr<SyncStore>> SyncStore::Create(const std::filesystem::path& dir,
                                                     int cache_kib) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return StoreError("cannot create " + dir.string() + ": " + ec.message());
  if (::chmod(dir.c_str(), 0700) != 0) {
    return StoreError("cannot restrict " + dir.string() + ": " + std::strerror(errno));
  }
  // Files of earlier processes are leftovers of a crash: nobody reads them again.
  const long self = static_cast<long>(::getpid());
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    auto pid = PidOf(name);
    if (pid && *pid != self) std::filesystem::remove(entry.path(), ec);
  }

  std::unique_ptr<SyncStore> store(new SyncStore());
  store->cache_kib_ = cache_kib;
  store->path_ = dir / (std::string(kPrefix) + std::to_string(self) + "-" +
                        std::to_string(g_counter.fetch_add(1)) + std::string(kSuffix));
  const int fd = ::open(store->path_.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    const std::string why = std::strerror(errno);
    store->path_.clear();
    return StoreError("cannot create its file in " + dir.string() + ": " + why);
  }
  ::close(fd);
  if (sqlite3_open_v2(store->path_.c_str(), &store->db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    return StoreError("cannot open " + store->path_.string() + ": " +
                      (store->db_ ? sqlite3_errmsg(store->db_) : "out of memory"));
  }
  const std::string pragmas =
      "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; "
      "PRAGMA locking_mode=EXCLUSIVE; PRAGMA temp_store=FILE; "
      "PRAGMA mmap_size=0; PRAGMA cache_size=-" +
      std::to_string(cache_kib) + ";";
  CW_RETURN_IF_ERROR(store->Exec(pragmas.c_str()));
  CW_RETURN_IF_ERROR(store->Exec(
      "CREATE TABLE users(id TEXT NOT NULL UNIQUE, username TEXT, email TEXT, "
      "display_name TEXT NOT NULL, active INTEGER NOT NULL, last_login TEXT, account_type TEXT);"
      "CREATE TABLE members(gid INTEGER NOT NULL, uid TEXT NOT NULL, PRIMARY KEY(gid, uid)) "
      "WITHOUT ROWID;"
      "CREATE TABLE token_owners(uid TEXT PRIMARY KEY) WITHOUT ROWID;"));
  store->st_ = std::make_unique<Statements>();
  Statements& st = *store->st_;
  sqlite3* db = store->db_;
  CW_RETURN_IF_ERROR(st.begin.Prepare(db, "BEGIN"));
  CW_RETURN_IF_ERROR(st.commit.Prepare(db, "COMMIT"));
  CW_RETURN_IF_ERROR(st.insert_user.Prepare(
      db,
      "INSERT OR IGNORE INTO users(id, username, email, display_name, active, last_login, "
      "account_type) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
  CW_RETURN_IF_ERROR(
      st.insert_member.Prepare(db, "INSERT OR IGNORE INTO members(gid, uid) VALUES(?1, ?2)"));
  CW_RETURN_IF_ERROR(
      st.insert_owner.Prepare(db, "INSERT OR IGNORE INTO token_owners(uid) VALUES(?1)"));
  CW_RETURN_IF_ERROR(st.users_after.Prepare(db, UsersAfterSql(false).c_str()));
  CW_RETURN_IF_ERROR(st.count_users.Prepare(db, "SELECT COUNT(*) FROM users"));
  return store;
}

SyncStore::~SyncStore() {
  st_.reset();
  if (db_ != nullptr) sqlite3_close_v2(db_);
  if (!path_.empty()) {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
}

Status SyncStore::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string message = err != nullptr ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    return StoreError(message);
  }
  return Status::Ok();
}

Status SyncStore::Step(sqlite3_stmt* statement, const char* what) {
  const int rc = sqlite3_step(statement);
  sqlite3_reset(statement);
  if (rc != SQLITE_DONE) return StoreError(std::string(what) + ": " + sqlite3_errmsg(db_));
  return Status::Ok();
}

Status SyncStore::BeginWrite() {
  if (in_transaction_) return Status::Ok();
  CW_RETURN_IF_ERROR(Step(st_->begin.get(), "starting a transaction"));
  in_transaction_ = true;
  return Status::Ok();
}

Status SyncStore::EndWrite() {
  if (++writes_in_transaction_ < kWritesPerTransaction) return Status::Ok();
  return Commit();
}

Status SyncStore::Commit() {
  if (!in_transaction_) return Status::Ok();
  in_transaction_ = false;
  writes_in_transaction_ = 0;
  return Step(st_->commit.get(), "committing");
}

Result<std::int64_t> SyncStore::AddUsers(const std::vector<UserRow>& users) {
  std::lock_guard lock(mu_);
  CW_RETURN_IF_ERROR(BeginWrite());
  std::int64_t added = 0;
  sqlite3_stmt* s = st_->insert_user.get();
  for (const UserRow& u : users) {
    sqlite3_bind_text(s, 1, u.id.data(), static_cast<int>(u.id.size()), SQLITE_TRANSIENT);
    BindText(s, 2, u.username);
    BindText(s, 3, u.email);
    sqlite3_bind_text(s, 4, u.display_name.data(), static_cast<int>(u.display_name.size()),
                      SQLITE_TRANSIENT);
    sqlite3_bind_int(s, 5, u.active ? 1 : 0);
    BindText(s, 6, u.last_login);
    BindText(s, 7, u.account_type);
    const int rc = sqlite3_step(s);
    st_->insert_user.Reset();
    if (rc != SQLITE_DONE) {
      return StoreError(std::string("adding users: ") + sqlite3_errmsg(db_));
    }
    added += sqlite3_changes(db_);
  }
  CW_RETURN_IF_ERROR(EndWrite());
  return added;
}

Result<std::int64_t> SyncStore::AddMembers(std::uint32_t gid,
                                           const std::vector<std::string>& user_ids) {
  std::lock_guard lock(mu_);
  CW_RETURN_IF_ERROR(BeginWrite());
  std::int64_t added = 0;
  sqlite3_stmt* s = st_->insert_member.get();
  for (const std::string& id : user_ids) {
    sqlite3_bind_int64(s, 1, gid);
    sqlite3_bind_text(s, 2, id.data(), static_cast<int>(id.size()), SQLITE_TRANSIENT);
    const int rc = sqlite3_step(s);
    st_->insert_member.Reset();
    if (rc != SQLITE_DONE) {
      return StoreError(std::string("adding memberships: ") + sqlite3_errmsg(db_));
    }
    added += sqlite3_changes(db_);
  }
  CW_RETURN_IF_ERROR(EndWrite());
  return added;
}

Status SyncStore::AddTokenOwners(const std::vector<std::string>& user_ids) {
  std::lock_guard lock(mu_);
  CW_RETURN_IF_ERROR(BeginWrite());
  sqlite3_stmt* s = st_->insert_owner.get();
  for (const std::string& id : user_ids) {
    sqlite3_bind_text(s, 1, id.data(), static_cast<int>(id.size()), SQLITE_TRANSIENT);
    const int rc = sqlite3_step(s);
    st_->insert_owner.Reset();
    if (rc != SQLITE_DONE) {
      return StoreError(std::string("adding token owners: ") + sqlite3_errmsg(db_));
    }
  }
  return EndWrite();
}

Status SyncStore::IndexMembers() {
  std::lock_guard lock(mu_);
  if (st_->users_after_joined.get() != nullptr) return Status::Ok();
  CW_RETURN_IF_ERROR(Commit());
  // SQLite's sorter takes as much memory as the page cache may: building the index with a 1 MiB
  // cache keeps the peak flat (at 4M memberships, 4.6 MB less for the second or two it takes).
  const std::string sort_cache = std::to_string(std::min(1024, cache_kib_));
  CW_RETURN_IF_ERROR(Exec(("PRAGMA cache_size=-" + sort_cache).c_str()));
  CW_RETURN_IF_ERROR(Exec("CREATE INDEX members_by_user ON members(uid, gid)"));
  CW_RETURN_IF_ERROR(Exec(("PRAGMA cache_size=-" + std::to_string(cache_kib_)).c_str()));
  return st_->users_after_joined.Prepare(db_, UsersAfterSql(true).c_str());
}

Result<std::vector<SpooledUser>> SyncStore::UsersAfter(std::int64_t after_seq, int limit) {
  std::lock_guard lock(mu_);
  std::vector<SpooledUser> out;
  const bool joined = st_->users_after_joined.get() != nullptr;
  Stmt& statement = joined ? st_->users_after_joined : st_->users_after;
  sqlite3_stmt* s = statement.get();
  sqlite3_bind_int64(s, 1, after_seq);
  sqlite3_bind_int(s, 2, limit);
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    SpooledUser u;
    u.seq = sqlite3_column_int64(s, 0);
    u.row.id = ColumnText(s, 1).value_or("");
    u.row.username = ColumnText(s, 2);
    u.row.email = ColumnText(s, 3);
    u.row.display_name = ColumnText(s, 4).value_or("");
    u.row.active = sqlite3_column_int(s, 5) != 0;
    u.row.last_login = ColumnText(s, 6);
    u.row.account_type = ColumnText(s, 7);
    if (joined && sqlite3_column_type(s, 8) != SQLITE_NULL) {
      ParseGids(sqlite3_column_text(s, 8), sqlite3_column_bytes(s, 8), u.groups);
    }
    u.owns_token = sqlite3_column_int(s, 9) != 0;
    out.push_back(std::move(u));
  }
  statement.Reset();
  if (rc != SQLITE_DONE) return StoreError(std::string("reading users: ") + sqlite3_errmsg(db_));
  return out;
}

Result<std::int64_t> SyncStore::UserCount() {
  std::lock_guard lock(mu_);
  sqlite3_stmt* s = st_->count_users.get();
  const int rc = sqlite3_step(s);
  const std::int64_t n = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
  st_->count_users.Reset();
  if (rc != SQLITE_ROW) return StoreError(std::string("counting users: ") + sqlite3_errmsg(db_));
  return n;
}

}  // namespace cakewalk::jira
