#include "agent/journal.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <utility>

#include "base/json.h"

namespace cakewalk::agent {
namespace {

constexpr int kSchemaVersion = 1;
constexpr int kBusyTimeoutMs = 5000;
// Errors and notes are one bounded line.
constexpr std::size_t kMaxNoteBytes = 1000;

std::int64_t ToMs(SysTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
SysTime FromMs(std::int64_t ms) {
  return SysTime(std::chrono::duration_cast<SysTime::duration>(std::chrono::milliseconds(ms)));
}

std::string Bounded(std::string_view text) {
  std::string out(text.substr(0, kMaxNoteBytes));
  for (char& c : out) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return out;
}

std::string_view OutcomeName(JobResult::Outcome o) {
  switch (o) {
    case JobResult::Outcome::kSucceeded:
      return "succeeded";
    case JobResult::Outcome::kFailed:
      return "failed";
    case JobResult::Outcome::kRejected:
      return "rejected";
  }
  return "failed";
}

Status SqlError(sqlite3* db, std::string_view what) {
  return Internal("job journal: " + std::string(what) + ": " +
                  (db != nullptr ? sqlite3_errmsg(db) : "no database"));
}

// One prepared statement. A statement from the connection's cache (`in_use` set) is reset and its
// bindings cleared on destruction, so that it holds no read snapshot and no bound values, and
// goes back to the cache; any other is finalised.
class Stmt {
 public:
  Stmt(sqlite3* db, sqlite3_stmt* stmt, bool* in_use = nullptr)
      : db_(db), stmt_(stmt), in_use_(in_use) {}
  Stmt(Stmt&& o) noexcept
      : db_(o.db_),
        stmt_(std::exchange(o.stmt_, nullptr)),
        in_use_(std::exchange(o.in_use_, nullptr)),
        rc_(o.rc_) {}
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt() {
    if (stmt_ == nullptr) return;
    if (in_use_ != nullptr) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
      *in_use_ = false;
    } else {
      sqlite3_finalize(stmt_);
    }
  }

  Stmt& Bind(int i, std::string_view text) {
    if (rc_ == SQLITE_OK) {
      rc_ =
          sqlite3_bind_text(stmt_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    }
    return *this;
  }
  Stmt& Bind(int i, const char* text) { return Bind(i, std::string_view(text)); }
  Stmt& Bind(int i, const std::string& text) { return Bind(i, std::string_view(text)); }
  Stmt& Bind(int i, std::int64_t value) {
    if (rc_ == SQLITE_OK) rc_ = sqlite3_bind_int64(stmt_, i, value);
    return *this;
  }
  Stmt& Bind(int i, int value) { return Bind(i, static_cast<std::int64_t>(value)); }
  Stmt& BindNull(int i) {
    if (rc_ == SQLITE_OK) rc_ = sqlite3_bind_null(stmt_, i);
    return *this;
  }

  // True when a row is available, false when done.
  Result<bool> Step() {
    if (rc_ != SQLITE_OK) return SqlError(db_, "bind");
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqlError(db_, "step");
  }
  Status Run() {
    Result<bool> r = Step();
    return r.status();
  }

  bool IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  std::int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::string Text(int col) const {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    const int n = sqlite3_column_bytes(stmt_, col);
    return p == nullptr
               ? std::string()
               : std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
  bool* in_use_;
  int rc_ = SQLITE_OK;
};

constexpr const char* kSchema[] = {
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS jobs ("
    " job_id TEXT PRIMARY KEY,"
    " authentic INTEGER NOT NULL,"
    " type TEXT NOT NULL DEFAULT '',"
    " connection TEXT NOT NULL DEFAULT '',"
    " state TEXT NOT NULL,"
    " lease_id TEXT NOT NULL DEFAULT '',"
    " lease_expires_at INTEGER,"
    " runs INTEGER NOT NULL DEFAULT 0,"
    " claimed_at INTEGER NOT NULL,"
    " started_at INTEGER,"
    " finished_at INTEGER,"
    " updated_at INTEGER NOT NULL,"
    " result TEXT,"
    " note TEXT NOT NULL DEFAULT '')",
    "CREATE TABLE IF NOT EXISTS outbox ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " job_id TEXT NOT NULL,"
    " lease_id TEXT NOT NULL,"
    " result TEXT NOT NULL,"
    " state TEXT NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " last_error TEXT NOT NULL DEFAULT '',"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS outbox_by_state ON outbox(state, seq)",
    "CREATE INDEX IF NOT EXISTS outbox_by_job ON outbox(job_id)",
    "CREATE TABLE IF NOT EXISTS history ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " at INTEGER NOT NULL,"
    " job_id TEXT NOT NULL,"
    " lease_id TEXT NOT NULL,"
    " state TEXT NOT NULL,"
    " detail TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS history_by_job ON history(job_id, id)",
};

Status OpenPrivateFile(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return FailedPrecondition("cannot open the job journal " + path.string() + ": " +
                              std::strerror(errno));
  }
  struct stat st {};
  Status s;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    s = FailedPrecondition(path.string() + " is not a regular file");
  } else if ((st.st_mode & 0077) != 0 && ::fchmod(fd, 0600) != 0) {
    s = FailedPrecondition("cannot make " + path.string() +
                           " private (mode 0600): " + std::strerror(errno));
  }
  ::close(fd);
  return s;
}

}  // namespace

std::string_view JournalStateName(JournalState state) noexcept {
  switch (state) {
    case JournalState::kRejected:
      return "rejected";
    case JournalState::kRunning:
      return "running";
    case JournalState::kInterrupted:
      return "interrupted";
    case JournalState::kFinished:
      return "finished";
    case JournalState::kReported:
      return "reported";
    case JournalState::kDropped:
      return "dropped";
  }
  return "unknown";
}

std::optional<JournalState> ParseJournalState(std::string_view name) {
  for (JournalState s :
       {JournalState::kRejected, JournalState::kRunning, JournalState::kInterrupted,
        JournalState::kFinished, JournalState::kReported, JournalState::kDropped}) {
    if (JournalStateName(s) == name) return s;
  }
  return std::nullopt;
}

std::string_view OutboxStateName(OutboxState state) noexcept {
  switch (state) {
    case OutboxState::kPending:
      return "pending";
    case OutboxState::kAcknowledged:
      return "acknowledged";
    case OutboxState::kDropped:
      return "dropped";
    case OutboxState::kSetAside:
      return "set_aside";
    case OutboxState::kSuperseded:
      return "superseded";
  }
  return "unknown";
}

std::string EncodeStoredResult(const JobResult& result) {
  Json::Value v(Json::objectValue);
  v["status"] = std::string(OutcomeName(result.outcome));
  v["started_at"] = FormatRfc3339(result.started_at);
  v["finished_at"] = FormatRfc3339(result.finished_at);
  if (result.outcome == JobResult::Outcome::kSucceeded) {
    v["output"] = result.output.isObject() ? result.output : Json::Value(Json::objectValue);
  } else {
    Json::Value e(Json::objectValue);
    e["code"] = result.error.code;
    e["message"] = result.error.message;
    e["retryable"] = result.error.retryable;
    v["error"] = e;
  }
  return WriteJson(v);
}

Result<JobResult> DecodeStoredResult(std::string_view text, std::string lease_id) {
  CW_ASSIGN_OR_RETURN(Json::Value v, ParseJson(text, "a stored job result"));
  if (!v.isObject()) return Internal("a stored job result is not an object");
  JsonFields f(v, "$");
  JobResult r;
  r.lease_id = std::move(lease_id);
  const std::string status = f.String("status", JsonFields::kRequired);
  const std::string started = f.String("started_at", JsonFields::kRequired);
  const std::string finished = f.String("finished_at", JsonFields::kRequired);
  const Json::Value* output = f.Object("output");
  const Json::Value* error = f.Object("error");
  CW_RETURN_IF_ERROR(f.Finish().WithContext("stored job result"));
  if (status == "succeeded") {
    r.outcome = JobResult::Outcome::kSucceeded;
  } else if (status == "failed") {
    r.outcome = JobResult::Outcome::kFailed;
  } else if (status == "rejected") {
    r.outcome = JobResult::Outcome::kRejected;
  } else {
    return Internal("stored job result: unknown status '" + status + "'");
  }
  CW_ASSIGN_OR_RETURN(r.started_at, ParseRfc3339(started));
  CW_ASSIGN_OR_RETURN(r.finished_at, ParseRfc3339(finished));
  if (r.outcome == JobResult::Outcome::kSucceeded) {
    if (output == nullptr) return Internal("stored job result: success without output");
    r.output = *output;
  } else {
    if (error == nullptr) return Internal("stored job result: failure without error");
    JsonFields e(*error, "$.error");
    r.error.code = e.String("code", JsonFields::kRequired);
    r.error.message = e.String("message", JsonFields::kRequired);
    r.error.retryable = e.Bool("retryable", false, JsonFields::kRequired);
    CW_RETURN_IF_ERROR(e.Finish().WithContext("stored job result"));
  }
  return r;
}

// --- Database ------------------------------------------------------------------------------------

struct JobJournal::Db {
  sqlite3* db = nullptr;
  // Prepared statements by SQL text, parsed once per connection (the journal's statements are a
  // fixed set; parsing them was a good part of the journal's CPU per job).
  struct Cached {
    sqlite3_stmt* stmt = nullptr;
    bool in_use = false;
  };
  std::map<std::string, Cached, std::less<>> cache;

  ~Db() {
    for (auto& [sql, cached] : cache) sqlite3_finalize(cached.stmt);
    if (db != nullptr) sqlite3_close_v2(db);
  }

  Status Exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err != nullptr ? err : sqlite3_errmsg(db);
      sqlite3_free(err);
      return Internal("job journal: " + msg);
    }
    return Status::Ok();
  }

  // The cached statement for `sql`; a statement of its own when that one is still in use (the
  // same SQL stepped inside a loop over its own rows).
  Result<Stmt> Prepare(std::string_view sql) {
    auto it = cache.find(sql);
    if (it != cache.end() && !it->second.in_use) {
      it->second.in_use = true;
      return Stmt(db, it->second.stmt, &it->second.in_use);
    }
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                           it == cache.end() ? SQLITE_PREPARE_PERSISTENT : 0u, &stmt,
                           nullptr) != SQLITE_OK) {
      if (stmt != nullptr) sqlite3_finalize(stmt);
      return SqlError(db, "prepare");
    }
    if (it != cache.end()) return Stmt(db, stmt);
    Cached& cached = cache.emplace(std::string(sql), Cached{stmt, true}).first->second;
    return Stmt(db, stmt, &cached.in_use);
  }

  // BEGIN, COMMIT or ROLLBACK from the cache: parsing them for every transaction was about 2 % of
  // the agent's CPU per provisioning job. Not for the synchronous pragma: SQLite applies a
  // pragma's new value while preparing it, so a cached one stepped again may change nothing.
  Status Run(std::string_view sql) {
    CW_ASSIGN_OR_RETURN(Stmt st, Prepare(sql));
    return st.Run();
  }

  // Runs `body` in one IMMEDIATE transaction, durable when COMMIT returns (synchronous=FULL);
  // rolls back when it fails.
  Status Transaction(const std::function<Status()>& body) {
    if (relaxed) {  // a relaxed transaction could not restore FULL: do it before anything durable
      CW_RETURN_IF_ERROR(Exec("PRAGMA synchronous = FULL"));
      relaxed = false;
    }
    return RunTransaction(body);
  }

  // The same for what only settles a result the control plane already has (acknowledged, dropped,
  // set aside, an attempt counted): committed without waiting for the disk (synchronous=NORMAL
  // for this one commit). A power cut may lose it; the result is then sent again, which the
  // control plane answers as before (a result is idempotent: the same one gets 200 again; 409
  // and 400/422 again). It is durable with the next full commit (the WAL is written in order),
  // and it never comes back out of order: the WAL is replayed up to the last complete commit.
  Status RelaxedTransaction(const std::function<Status()>& body) {
    CW_RETURN_IF_ERROR(Exec("PRAGMA synchronous = NORMAL"));
    relaxed = true;
    Status s = RunTransaction(body);
    Status back = Exec("PRAGMA synchronous = FULL");
    if (back.ok()) relaxed = false;
    return s.ok() ? back : s;
  }

  Status RunTransaction(const std::function<Status()>& body) {
    CW_RETURN_IF_ERROR(Run("BEGIN IMMEDIATE"));
    Status s = body();
    if (s.ok()) s = Run("COMMIT");
    if (!s.ok()) Run("ROLLBACK").IgnoreError();
    return s;
  }
  bool relaxed = false;  // synchronous is NORMAL (set back to FULL after a relaxed transaction)

  Status History(std::int64_t at, std::string_view job_id, std::string_view lease_id,
                 std::string_view state, std::string_view detail) {
    CW_ASSIGN_OR_RETURN(Stmt st, Prepare("INSERT INTO history (at, job_id, lease_id, state, detail)"
                                         " VALUES (?1, ?2, ?3, ?4, ?5)"));
    return st.Bind(1, at)
        .Bind(2, job_id)
        .Bind(3, lease_id)
        .Bind(4, state)
        .Bind(5, Bounded(detail))
        .Run();
  }

  Result<bool> JobExists(std::string_view job_id) {
    CW_ASSIGN_OR_RETURN(Stmt st, Prepare("SELECT 1 FROM jobs WHERE job_id = ?1"));
    st.Bind(1, job_id);
    return st.Step();
  }

  Status SetState(std::string_view job_id, JournalState state, std::int64_t now,
                  std::string_view note) {
    CW_ASSIGN_OR_RETURN(
        Stmt st,
        Prepare("UPDATE jobs SET state = ?2, updated_at = ?3, note = ?4 WHERE job_id = ?1"));
    return st.Bind(1, job_id)
        .Bind(2, JournalStateName(state))
        .Bind(3, now)
        .Bind(4, Bounded(note))
        .Run();
  }

  Status SupersedePending(std::string_view job_id, std::int64_t now) {
    CW_ASSIGN_OR_RETURN(Stmt st, Prepare("UPDATE outbox SET state = 'superseded', updated_at = ?2"
                                         " WHERE job_id = ?1 AND state = 'pending'"));
    return st.Bind(1, job_id).Bind(2, now).Run();
  }

  Result<std::int64_t> Enqueue(std::string_view job_id, std::string_view lease_id,
                               std::string_view result, std::int64_t now) {
    CW_ASSIGN_OR_RETURN(Stmt st,
                        Prepare("INSERT INTO outbox (job_id, lease_id, result, state, created_at,"
                                " updated_at) VALUES (?1, ?2, ?3, 'pending', ?4, ?4)"));
    CW_RETURN_IF_ERROR(st.Bind(1, job_id).Bind(2, lease_id).Bind(3, result).Bind(4, now).Run());
    return static_cast<std::int64_t>(sqlite3_last_insert_rowid(db));
  }

  // The outbox row's job id (empty when there is no such row).
  Result<std::string> OutboxJob(std::int64_t seq) {
    CW_ASSIGN_OR_RETURN(Stmt st, Prepare("SELECT job_id FROM outbox WHERE seq = ?1"));
    st.Bind(1, seq);
    CW_ASSIGN_OR_RETURN(bool row, st.Step());
    return row ? st.Text(0) : std::string();
  }

  Status SetOutbox(std::int64_t seq, OutboxState state, std::string_view error, std::int64_t now) {
    CW_ASSIGN_OR_RETURN(Stmt st, Prepare("UPDATE outbox SET state = ?2, last_error = ?3,"
                                         " updated_at = ?4 WHERE seq = ?1"));
    return st.Bind(1, seq)
        .Bind(2, OutboxStateName(state))
        .Bind(3, Bounded(error))
        .Bind(4, now)
        .Run();
  }
};

JobJournal::JobJournal(std::filesystem::path path, int lock_fd, sqlite3* db, const Clock& clock)
    : path_(std::move(path)), lock_fd_(lock_fd), clock_(clock), db_(std::make_unique<Db>()) {
  db_->db = db;
}

JobJournal::~JobJournal() {
  db_.reset();
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

Result<std::unique_ptr<JobJournal>> JobJournal::Open(const std::filesystem::path& state_dir,
                                                     const Clock& clock) {
  std::error_code ec;
  if (!std::filesystem::exists(state_dir, ec)) {
    if (::mkdir(state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return FailedPrecondition("cannot create the state folder " + state_dir.string() + ": " +
                                std::strerror(errno));
    }
  }
  if (!std::filesystem::is_directory(state_dir, ec)) {
    return FailedPrecondition("the state folder " + state_dir.string() + " is not a folder");
  }

  const std::filesystem::path lock_path = state_dir / kLockFileName;
  const int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (lock_fd < 0) {
    return FailedPrecondition("cannot open " + lock_path.string() + ": " + std::strerror(errno));
  }
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(lock_fd);
    if (err == EWOULDBLOCK) {
      return FailedPrecondition("another cakewalk-agent process is using the job journal in " +
                                state_dir.string());
    }
    return FailedPrecondition("cannot lock " + lock_path.string() + ": " + std::strerror(err));
  }

  const std::filesystem::path path = state_dir / kFileName;
  // Created 0600 before SQLite opens it; SQLite gives the -wal and -shm files the same mode.
  if (Status s = OpenPrivateFile(path); !s.ok()) {
    ::close(lock_fd);
    return s;
  }
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, nullptr);
  std::unique_ptr<JobJournal> journal(new JobJournal(path, lock_fd, db, clock));
  if (rc != SQLITE_OK) return SqlError(db, "open " + path.string());
  Db& d = *journal->db_;
  sqlite3_extended_result_codes(db, 1);
  if (sqlite3_busy_timeout(db, kBusyTimeoutMs) != SQLITE_OK) return SqlError(db, "busy timeout");
  CW_RETURN_IF_ERROR(d.Exec("PRAGMA journal_mode = WAL"));
  CW_RETURN_IF_ERROR(d.Exec("PRAGMA synchronous = FULL"));
  CW_RETURN_IF_ERROR(d.Exec("PRAGMA foreign_keys = ON"));
  CW_ASSIGN_OR_RETURN(std::string mode, journal->Pragma("journal_mode"));
  if (mode != "wal") {
    return FailedPrecondition("the job journal " + path.string() +
                              " cannot use write-ahead logging (journal_mode is " + mode + ")");
  }
  if (Status tx = d.Transaction([&]() -> Status {
        for (const char* sql : kSchema) CW_RETURN_IF_ERROR(d.Exec(sql));
        CW_ASSIGN_OR_RETURN(Stmt get, d.Prepare("SELECT value FROM meta WHERE key = 'schema'"));
        CW_ASSIGN_OR_RETURN(bool row, get.Step());
        if (!row) {
          CW_ASSIGN_OR_RETURN(Stmt put,
                              d.Prepare("INSERT INTO meta (key, value) VALUES ('schema', ?1)"));
          return put.Bind(1, std::to_string(kSchemaVersion)).Run();
        }
        if (get.Text(0) != std::to_string(kSchemaVersion)) {
          return FailedPrecondition("the job journal " + path.string() + " has schema version " +
                                    get.Text(0) + "; this agent understands " +
                                    std::to_string(kSchemaVersion));
        }
        return Status::Ok();
      });
      !tx.ok()) {
    return tx;
  }
  return journal;
}

Result<std::string> JobJournal::Pragma(std::string_view name) {
  if (name != "journal_mode" && name != "synchronous" && name != "busy_timeout") {
    return InvalidArgument("unsupported pragma");
  }
  std::lock_guard lock(mu_);
  const std::string sql = "PRAGMA " + std::string(name);
  CW_ASSIGN_OR_RETURN(Stmt st, db_->Prepare(sql));
  CW_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return Internal("PRAGMA " + std::string(name) + " returned nothing");
  return st.Text(0);
}

Result<RecoveryReport> JobJournal::Recover() {
  std::lock_guard lock(mu_);
  Db& d = *db_;
  RecoveryReport report;
  const std::int64_t now = ToMs(clock_.Now());
  if (Status tx = d.Transaction([&]() -> Status {
        CW_ASSIGN_OR_RETURN(Stmt st,
                            d.Prepare("SELECT job_id, lease_id FROM jobs WHERE state = 'running'"));
        std::vector<std::pair<std::string, std::string>> rows;
        while (true) {
          CW_ASSIGN_OR_RETURN(bool row, st.Step());
          if (!row) break;
          rows.emplace_back(st.Text(0), st.Text(1));
        }
        for (const auto& [job_id, lease] : rows) {
          const char* note = "the agent stopped while the job was running (crash or kill)";
          CW_RETURN_IF_ERROR(d.SetState(job_id, JournalState::kInterrupted, now, note));
          CW_RETURN_IF_ERROR(d.History(now, job_id, lease, "interrupted", note));
          report.interrupted.push_back(job_id);
        }
        CW_ASSIGN_OR_RETURN(Stmt count,
                            d.Prepare("SELECT COUNT(*) FROM outbox WHERE state = 'pending'"));
        CW_ASSIGN_OR_RETURN(bool row, count.Step());
        report.pending_results = row ? count.Int(0) : 0;
        return Status::Ok();
      });
      !tx.ok()) {
    return tx;
  }
  return report;
}

Status JobJournal::RecordStart(const DeliveryInfo& delivery, std::string_view type,
                               std::string_view connection) {
  std::lock_guard lock(mu_);
  Db& d = *db_;
  const std::int64_t now = ToMs(clock_.Now());
  return d.Transaction([&]() -> Status {
    CW_RETURN_IF_ERROR(d.History(ToMs(delivery.claimed_at), delivery.job_id, delivery.lease_id,
                                 "claimed", "until " + FormatRfc3339(delivery.lease_expires_at)));
    CW_RETURN_IF_ERROR(d.History(now, delivery.job_id, delivery.lease_id, "verified",
                                 std::string(type) + " on " + std::string(connection)));
    CW_ASSIGN_OR_RETURN(
        Stmt st,
        d.Prepare("INSERT INTO jobs (job_id, authentic, type, connection, state, lease_id,"
                  " lease_expires_at, runs, claimed_at, started_at, updated_at, note)"
                  " VALUES (?1, 1, ?2, ?3, 'running', ?4, ?5, 1, ?6, ?7, ?7, '')"
                  " ON CONFLICT(job_id) DO UPDATE SET authentic = 1, type = ?2, connection = ?3,"
                  " state = 'running', lease_id = ?4, lease_expires_at = ?5, runs = runs + 1,"
                  " claimed_at = ?6, started_at = ?7, finished_at = NULL, result = NULL,"
                  " updated_at = ?7, note = ''"));
    CW_RETURN_IF_ERROR(st.Bind(1, delivery.job_id)
                           .Bind(2, type)
                           .Bind(3, connection)
                           .Bind(4, delivery.lease_id)
                           .Bind(5, ToMs(delivery.lease_expires_at))
                           .Bind(6, ToMs(delivery.claimed_at))
                           .Bind(7, now)
                           .Run());
    return d.History(now, delivery.job_id, delivery.lease_id, "running", "executor started");
  });
}

Result<std::int64_t> JobJournal::RecordWithoutRun(const DeliveryInfo& delivery, bool authentic,
                                                  std::string_view type,
                                                  std::string_view connection,
                                                  const JobResult& rejected) {
  if (delivery.job_id.empty()) return InvalidArgument("a result needs a job id");
  const char* state = rejected.outcome == JobResult::Outcome::kRejected ? "rejected" : "finished";
  std::lock_guard lock(mu_);
  Db& d = *db_;
  const std::int64_t now = ToMs(clock_.Now());
  const std::string stored = EncodeStoredResult(rejected);
  const std::string detail = std::string(OutcomeName(rejected.outcome)) + ": " +
                             rejected.error.code + ": " + rejected.error.message;
  std::int64_t seq = 0;
  if (Status tx = d.Transaction([&]() -> Status {
        CW_RETURN_IF_ERROR(d.History(ToMs(delivery.claimed_at), delivery.job_id, delivery.lease_id,
                                     "claimed",
                                     "until " + FormatRfc3339(delivery.lease_expires_at)));
        CW_ASSIGN_OR_RETURN(bool exists, d.JobExists(delivery.job_id));
        if (authentic || !exists) {
          CW_ASSIGN_OR_RETURN(
              Stmt st,
              d.Prepare("INSERT INTO jobs (job_id, authentic, type, connection, state, lease_id,"
                        " lease_expires_at, claimed_at, finished_at, updated_at, result, note)"
                        " VALUES (?1, ?2, ?3, ?4, ?11, ?5, ?6, ?7, ?8, ?8, ?9, ?10)"
                        " ON CONFLICT(job_id) DO UPDATE SET authentic = ?2, type = ?3,"
                        " connection = ?4, state = ?11, lease_id = ?5, lease_expires_at = ?6,"
                        " claimed_at = ?7, finished_at = ?8, updated_at = ?8, result = ?9,"
                        " note = ?10"));
          CW_RETURN_IF_ERROR(st.Bind(1, delivery.job_id)
                                 .Bind(2, authentic ? 1 : 0)
                                 .Bind(3, type)
                                 .Bind(4, connection)
                                 .Bind(5, delivery.lease_id)
                                 .Bind(6, ToMs(delivery.lease_expires_at))
                                 .Bind(7, ToMs(delivery.claimed_at))
                                 .Bind(8, now)
                                 .Bind(9, stored)
                                 .Bind(10, Bounded(detail))
                                 .Bind(11, state)
                                 .Run());
        }
        CW_RETURN_IF_ERROR(
            d.History(now, delivery.job_id, delivery.lease_id, state,
                      (authentic ? std::string() : std::string("(unverified token) ")) + detail));
        CW_ASSIGN_OR_RETURN(seq, d.Enqueue(delivery.job_id, delivery.lease_id, stored, now));
        return Status::Ok();
      });
      !tx.ok()) {
    return tx;
  }
  return seq;
}

Result<std::int64_t> JobJournal::ResendStored(const DeliveryInfo& delivery) {
  std::lock_guard lock(mu_);
  Db& d = *db_;
  const std::int64_t now = ToMs(clock_.Now());
  std::int64_t seq = 0;
  if (Status tx = d.Transaction([&]() -> Status {
        CW_ASSIGN_OR_RETURN(Stmt st, d.Prepare("SELECT result FROM jobs WHERE job_id = ?1 AND"
                                               " authentic = 1 AND result IS NOT NULL"));
        st.Bind(1, delivery.job_id);
        CW_ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) return NotFound("job " + delivery.job_id + " has no stored result");
        const std::string stored = st.Text(0);
        CW_RETURN_IF_ERROR(d.History(ToMs(delivery.claimed_at), delivery.job_id, delivery.lease_id,
                                     "claimed",
                                     "until " + FormatRfc3339(delivery.lease_expires_at)));
        CW_RETURN_IF_ERROR(d.SupersedePending(delivery.job_id, now));
        CW_ASSIGN_OR_RETURN(Stmt up,
                            d.Prepare("UPDATE jobs SET lease_id = ?2, lease_expires_at = ?3,"
                                      " updated_at = ?4 WHERE job_id = ?1"));
        CW_RETURN_IF_ERROR(up.Bind(1, delivery.job_id)
                               .Bind(2, delivery.lease_id)
                               .Bind(3, ToMs(delivery.lease_expires_at))
                               .Bind(4, now)
                               .Run());
        CW_RETURN_IF_ERROR(
            d.History(now, delivery.job_id, delivery.lease_id, "resent",
                      "delivered again: the stored result is sent under the new lease"));
        CW_ASSIGN_OR_RETURN(seq, d.Enqueue(delivery.job_id, delivery.lease_id, stored, now));
        return Status::Ok();
      });
      !tx.ok()) {
    return tx;
  }
  return seq;
}

Status JobJournal::RecordLeaseAdopted(const DeliveryInfo& delivery) {
  std::lock_guard lock(mu_);
  Db& d = *db_;
  const std::int64_t now = ToMs(clock_.Now());
  return d.Transaction([&]() -> Status {
    CW_RETURN_IF_ERROR(d.History(ToMs(delivery.claimed_at), delivery.job_id, delivery.lease_id,
                                 "claimed", "until " + FormatRfc3339(delivery.lease_expires_at)));
    CW_ASSIGN_OR_RETURN(Stmt up, d.Prepare("UPDATE jobs SET lease_id = ?2, lease_expires_at = ?3,"
                                           " updated_at = ?4 WHERE job_id = ?1"));
    CW_RETURN_IF_ERROR(up.Bind(1, delivery.job_id)
                           .Bind(2, delivery.lease_id)
                           .Bind(3, ToMs(delivery.lease_expires_at))
                           .Bind(4, now)
                           .Run());
    return d.History(now, delivery.job_id, delivery.lease_id, "adopted",
                     "delivered again while running here: continues under the new lease");
  });
}

Status JobJournal::RecordUnaddressable(const DeliveryInfo& delivery, std::string_view why) {
  std::lock_guard lock(mu_);
  return db_->History(ToMs(clock_.Now()), delivery.job_id, delivery.lease_id, "unaddressable", why);
}

Status JobJournal::RecordRerun(std::string_view job_id, std::string_view lease_id,
                               std::string_view why) {
  std::lock_guard lock(mu_);
  Db& d = *db_;
  const std::int64_t now = ToMs(clock_.Now());
  return d.Transaction([&]() -> Status {
    CW_ASSIGN_OR_RETURN(Stmt up, d.Prepare("UPDATE jobs SET state = 'running', lease_id = ?2,"
                                           " runs = runs + 1, started_at = ?3, updated_at = ?3,"
                                           " note = ?4 WHERE job_id = ?1"));
    CW_RETURN_IF_ERROR(
        up.Bind(1, job_id).Bind(2, lease_id).Bind(3, now).Bind(4, Bounded(why)).Run());
    return d.History(now, job_id, lease_id, "running", why);
  });
}

Result<std::int64_t> JobJournal::RecordFinished(std::string_view job_id, const JobResult& result) {
  std::lock_guard lock(mu_);
  Db& d = *db_;
  const std::int64_t now = ToMs(clock_.Now());
  const std::string stored = EncodeStoredResult(result);
  std::int64_t seq = 0;
  if (Status tx = d.Transaction([&]() -> Status {
        CW_ASSIGN_OR_RETURN(Stmt up, d.Prepare("UPDATE jobs SET state = 'finished', lease_id = ?2,"
                                               " finished_at = ?3, updated_at = ?3, result = ?4,"
                                               " note = '' WHERE job_id = ?1"));
        CW_RETURN_IF_ERROR(
            up.Bind(1, job_id).Bind(2, result.lease_id).Bind(3, now).Bind(4, stored).Run());
        if (sqlite3_changes(d.db) != 1)
          return NotFound("job " + std::string(job_id) + " is unknown");
        std::string detail(OutcomeName(result.outcome));
        if (result.outcome != JobResult::Outcome::kSucceeded) {
          detail += ": " + result.error.code + ": " + result.error.message;
        }
        CW_RETURN_IF_ERROR(d.History(now, job_id, result.lease_id, "finished", detail));
        CW_RETURN_IF_ERROR(d.SupersedePending(job_id, now));
        CW_ASSIGN_OR_RETURN(seq, d.Enqueue(job_id, result.lease_id, stored, now));
        return Status::Ok();
      });
      !tx.ok()) {
    return tx;
  }
  return seq;
}

Status JobJournal::RecordInterrupted(std::string_view job_id, std::string_view why) {
  std::lock_guard lock(mu_);
  Db& d = *db_;
  const std::int64_t now = ToMs(clock_.Now());
  return d.Transaction([&]() -> Status {
    CW_RETURN_IF_ERROR(d.SetState(job_id, JournalState::kInterrupted, now, why));
    return d.History(now, job_id, "", "interrupted", why);
  });
}

Status JobJournal::RecordDropped(std::string_view job_id, std::string_view why) {
  std::lock_guard lock(mu_);
  Db& d = *db_;
  const std::int64_t now = ToMs(clock_.Now());
  return d.Transaction([&]() -> Status {
    CW_RETURN_IF_ERROR(d.SetState(job_id, JournalState::kDropped, now, why));
    return d.History(now, job_id, "", "dropped", why);
  });
}

Result<std::vector<PendingResult>> JobJournal::Pending(std::size_t limit) {
  std::lock_guard lock(mu_);
  CW_ASSIGN_OR_RETURN(Stmt st,
                      db_->Prepare("SELECT seq, job_id, lease_id, result, attempts FROM"
                                   " outbox WHERE state = 'pending' ORDER BY seq LIMIT ?1"));
  st.Bind(1, static_cast<std::int64_t>(limit));
  std::vector<PendingResult> out;
  while (true) {
    CW_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    PendingResult p;
    p.seq = st.Int(0);
    p.job_id = st.Text(1);
    CW_ASSIGN_OR_RETURN(p.result, DecodeStoredResult(st.Text(3), st.Text(2)));
    p.attempts = static_cast<int>(st.Int(4));
    out.push_back(std::move(p));
  }
  return out;
}

Result<std::int64_t> JobJournal::PendingCount() {
  std::lock_guard lock(mu_);
  CW_ASSIGN_OR_RETURN(Stmt st, db_->Prepare("SELECT COUNT(*) FROM outbox WHERE state = 'pending'"));
  CW_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.Int(0) : std::int64_t{0};
}

Status JobJournal::MarkAcknowledged(std::int64_t seq) {
  std::lock_guard lock(mu_);
  Db& d = *db_;
  const std::int64_t now = ToMs(clock_.Now());
  return d.RelaxedTransaction([&]() -> Status {
    CW_ASSIGN_OR_RETURN(std::string job_id, d.OutboxJob(seq));
    if (job_id.empty()) return NotFound("no journal outbox entry " + std::to_string(seq));
    CW_RETURN_IF_ERROR(d.SetOutbox(seq, OutboxState::kAcknowledged, "", now));
    CW_ASSIGN_OR_RETURN(Stmt up, d.Prepare("UPDATE jobs SET state = 'reported', updated_at = ?2"
                                           " WHERE job_id = ?1 AND state IN ('finished',"
                                           " 'rejected', 'reported', 'dropped')"));
    CW_RETURN_IF_ERROR(up.Bind(1, job_id).Bind(2, now).Run());
    return d.History(now, job_id, "", "reported",
                     "result acknowledged (outbox " + std::to_string(seq) + ")");
  });
}

Status JobJournal::MarkDropped(std::int64_t seq, std::string_view why) {
  std::lock_guard lock(mu_);
  Db& d = *db_;
  const std::int64_t now = ToMs(clock_.Now());
  return d.RelaxedTransaction([&]() -> Status {
    CW_ASSIGN_OR_RETURN(std::string job_id, d.OutboxJob(seq));
    if (job_id.empty()) return NotFound("no journal outbox entry " + std::to_string(seq));
    CW_RETURN_IF_ERROR(d.SetOutbox(seq, OutboxState::kDropped, why, now));
    CW_ASSIGN_OR_RETURN(Stmt up,
                        d.Prepare("UPDATE jobs SET state = 'dropped', updated_at = ?2,"
                                  " note = ?3 WHERE job_id = ?1 AND state IN"
                                  " ('finished', 'rejected') AND NOT EXISTS (SELECT 1"
                                  " FROM outbox WHERE job_id = ?1 AND state = 'pending')"));
    CW_RETURN_IF_ERROR(up.Bind(1, job_id).Bind(2, now).Bind(3, Bounded(why)).Run());
    return d.History(now, job_id, "", "result dropped", why);
  });
}

Status JobJournal::MarkSetAside(std::int64_t seq, std::string_view why) {
  std::lock_guard lock(mu_);
  Db& d = *db_;
  const std::int64_t now = ToMs(clock_.Now());
  return d.RelaxedTransaction([&]() -> Status {
    CW_ASSIGN_OR_RETURN(std::string job_id, d.OutboxJob(seq));
    if (job_id.empty()) return NotFound("no journal outbox entry " + std::to_string(seq));
    CW_RETURN_IF_ERROR(d.SetOutbox(seq, OutboxState::kSetAside, why, now));
    return d.History(now, job_id, "", "result set aside", why);
  });
}

Status JobJournal::RecordAttempt(std::int64_t seq, std::string_view error) {
  std::lock_guard lock(mu_);
  Db& d = *db_;
  return d.RelaxedTransaction([&]() -> Status {
    CW_ASSIGN_OR_RETURN(Stmt st, d.Prepare("UPDATE outbox SET attempts = attempts + 1,"
                                           " last_error = ?2, updated_at = ?3 WHERE seq = ?1"));
    return st.Bind(1, seq).Bind(2, Bounded(error)).Bind(3, ToMs(clock_.Now())).Run();
  });
}

namespace {
constexpr char kEntryColumns[] =
    "SELECT job_id, authentic, type, connection, state, lease_id, runs, started_at, finished_at,"
    " updated_at, result, note FROM jobs";

Result<JournalEntry> ReadEntry(const Stmt& st) {
  JournalEntry e;
  e.job_id = st.Text(0);
  e.authentic = st.Int(1) != 0;
  e.type = st.Text(2);
  e.connection = st.Text(3);
  auto state = ParseJournalState(st.Text(4));
  if (!state) return Internal("job journal: unknown state '" + st.Text(4) + "'");
  e.state = *state;
  e.lease_id = st.Text(5);
  e.runs = static_cast<int>(st.Int(6));
  if (!st.IsNull(7)) e.started_at = FromMs(st.Int(7));
  if (!st.IsNull(8)) e.finished_at = FromMs(st.Int(8));
  e.updated_at = FromMs(st.Int(9));
  if (!st.IsNull(10)) {
    CW_ASSIGN_OR_RETURN(JobResult r, DecodeStoredResult(st.Text(10), ""));
    e.result = std::move(r);
  }
  e.note = st.Text(11);
  return e;
}
}  // namespace

Result<std::optional<JournalEntry>> JobJournal::Find(std::string_view job_id) {
  std::lock_guard lock(mu_);
  const std::string sql = std::string(kEntryColumns) + " WHERE job_id = ?1";
  CW_ASSIGN_OR_RETURN(Stmt st, db_->Prepare(sql));
  st.Bind(1, job_id);
  CW_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::optional<JournalEntry>();
  CW_ASSIGN_OR_RETURN(JournalEntry e, ReadEntry(st));
  return std::optional<JournalEntry>(std::move(e));
}

Result<std::vector<JournalEntry>> JobJournal::Entries() {
  std::lock_guard lock(mu_);
  const std::string sql = std::string(kEntryColumns) + " ORDER BY claimed_at, job_id";
  CW_ASSIGN_OR_RETURN(Stmt st, db_->Prepare(sql));
  std::vector<JournalEntry> out;
  while (true) {
    CW_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    CW_ASSIGN_OR_RETURN(JournalEntry e, ReadEntry(st));
    out.push_back(std::move(e));
  }
  return out;
}

Result<std::vector<HistoryEvent>> JobJournal::History(std::string_view job_id) {
  std::lock_guard lock(mu_);
  CW_ASSIGN_OR_RETURN(Stmt st, db_->Prepare("SELECT at, job_id, lease_id, state, detail FROM"
                                            " history WHERE job_id = ?1 ORDER BY id"));
  st.Bind(1, job_id);
  std::vector<HistoryEvent> out;
  while (true) {
    CW_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back({FromMs(st.Int(0)), st.Text(1), st.Text(2), st.Text(3), st.Text(4)});
  }
  return out;
}

Result<std::vector<std::pair<std::int64_t, OutboxState>>> JobJournal::OutboxOf(
    std::string_view job_id) {
  std::lock_guard lock(mu_);
  CW_ASSIGN_OR_RETURN(Stmt st,
                      db_->Prepare("SELECT seq, state FROM outbox WHERE job_id = ?1 ORDER BY seq"));
  st.Bind(1, job_id);
  std::vector<std::pair<std::int64_t, OutboxState>> out;
  while (true) {
    CW_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    const std::string state = st.Text(1);
    OutboxState s = OutboxState::kPending;
    for (OutboxState c : {OutboxState::kPending, OutboxState::kAcknowledged, OutboxState::kDropped,
                          OutboxState::kSetAside, OutboxState::kSuperseded}) {
      if (OutboxStateName(c) == state) s = c;
    }
    out.emplace_back(st.Int(0), s);
  }
  return out;
}

Result<int> JobJournal::Prune(std::chrono::hours retention) {
  std::lock_guard lock(mu_);
  Db& d = *db_;
  const std::int64_t cutoff = ToMs(clock_.Now() - retention);
  int pruned = 0;
  if (Status tx = d.Transaction([&]() -> Status {
        // Settled jobs: not in progress, nothing owed.
        CW_ASSIGN_OR_RETURN(
            Stmt jobs, d.Prepare("DELETE FROM jobs WHERE updated_at < ?1 AND state != 'running' "
                                 "AND NOT EXISTS (SELECT 1 FROM outbox WHERE"
                                 " outbox.job_id = jobs.job_id AND outbox.state = 'pending')"));
        CW_RETURN_IF_ERROR(jobs.Bind(1, cutoff).Run());
        pruned = sqlite3_changes(d.db);
        CW_ASSIGN_OR_RETURN(Stmt outbox, d.Prepare("DELETE FROM outbox WHERE state != 'pending' AND"
                                                   " updated_at < ?1"));
        CW_RETURN_IF_ERROR(outbox.Bind(1, cutoff).Run());
        CW_ASSIGN_OR_RETURN(
            Stmt history, d.Prepare("DELETE FROM history WHERE at < ?1 AND NOT EXISTS (SELECT 1"
                                    " FROM jobs WHERE jobs.job_id = history.job_id) AND NOT EXISTS"
                                    " (SELECT 1 FROM outbox WHERE outbox.job_id = history.job_id"
                                    " AND outbox.state = 'pending')"));
        return history.Bind(1, cutoff).Run();
      });
      !tx.ok()) {
    return tx;
  }
  return pruned;
}

}  // namespace cakewalk::agent
