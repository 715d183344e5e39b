// The durable job journal: what the agent did with every job, and the results it still owes the
// control plane. SQLite file `<state_dir>/journal.sqlite3` (mode 0600), WAL mode,
// synchronous=FULL, busy timeout 5 s, one connection serialized by a mutex, an exclusive lock
// file so that two agents never share a state folder.
//
// Why synchronous=FULL: in WAL mode, NORMAL keeps every commit across a process crash (SIGKILL)
// but may lose the last commits on power loss. The journal is written before the agent acts
// (before a job starts, before a result is sent), so a lost commit after a power cut could make
// the agent run a job again or compute a second, different result for a job whose first result
// the control plane already accepted. FULL fsyncs the WAL at each commit: two fsyncs per job
// (before it runs, before its result is sent), which is cheap next to a Jira call. What only
// settles a result the control plane has (acknowledged, dropped, set aside, an attempt counted) is
// committed without an fsync: lost on a power cut, the result is sent again and answered the same
// way (results are idempotent); it becomes durable with the next FULL commit.
//
// Tables (schema version 1):
//   jobs     one row per job id: state, type, connection, current lease, runs (how many times an
//            executor was started), timestamps, the result (JSON, without lease id) and a note
//            saying why the state is what it is.
//   outbox   results to deliver, in order (seq): job id, lease id, result, state, attempts.
//   history  every transition: time, job id, lease id, state, detail. "The journal says what
//            happened."
//   meta     schema version.
//
// Job states (history):  claimed -> verified -> running -> finished -> reported
//                                 \-> rejected ------------------------^
//              running -> interrupted (agent stopped mid-job) | dropped (lease lost: no result)
// Outbox states: pending -> acknowledged | dropped (409) | set_aside (400/422) | superseded (the
// job was re-delivered and the result is now owed under the new lease).
//
// Crash recovery (Recover(), at start): `running` becomes `interrupted`; nothing is reported for
// it — their lease runs out and the control plane
// delivers the job again. On re-delivery an interrupted job is run again when its executor is
// idempotent (every mutating Jira job is), else failed (see job_loop.h). Pending results are
// re-sent in order until acknowledged or dropped. A job id with a stored result is never run
// again: the stored result is re-sent under the new lease (ResendStored).
//
// What is never stored: secrets, params, the JWS. Results and error messages never contain
// secrets by contract (and tests check with canaries).
//
// Growth: Prune() deletes jobs with nothing pending (and their outbox and history rows) whose last
// change is older than jobs.journal_retention. A job pruned from the journal and delivered again
// after that is run again (idempotent).
#pragma once

#include <json/json.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/control_plane.h"
#include "base/clock.h"
#include "base/status.h"
#include "base/time.h"

struct sqlite3;

namespace cakewalk::agent {

// The state of a job id (the `jobs` table). "claimed" and "verified" appear in the history; they
// are written in the same transaction as the step that follows them (running or rejected),
// because a delivery the agent has not yet acted on needs no recovery: its lease runs out.
enum class JournalState {
  kRejected,     // refused before running; the `rejected` result is stored
  kRunning,      // an executor was started (runs counts how many times)
  kInterrupted,  // the agent stopped while it ran (shutdown past the grace, crash); no result
  kFinished,     // the result is stored and queued
  kReported,     // a result was acknowledged by the control plane
  kDropped,      // the lease was lost while it ran, or the control plane refused the result (409)
};
std::string_view JournalStateName(JournalState state) noexcept;
std::optional<JournalState> ParseJournalState(std::string_view name);

enum class OutboxState { kPending, kAcknowledged, kDropped, kSetAside, kSuperseded };
std::string_view OutboxStateName(OutboxState state) noexcept;

struct JournalEntry {
  std::string job_id;
  // True when the id came from a verified token. Rows for tokens that failed verification exist
  // only for display (and only when no verified row had that id); they never suppress a run.
  bool authentic = false;
  std::string type;
  std::string connection;
  JournalState state = JournalState::kRunning;
  std::string lease_id;
  int runs = 0;
  std::optional<SysTime> started_at;
  std::optional<SysTime> finished_at;
  SysTime updated_at;
  // The stored result (lease_id empty), when the job finished or was rejected.
  std::optional<JobResult> result;
  std::string note;
};

struct PendingResult {
  std::int64_t seq = 0;
  std::string job_id;
  JobResult result;  // with the lease it is owed under
  int attempts = 0;
};

struct HistoryEvent {
  SysTime at;
  std::string job_id;
  std::string lease_id;
  std::string state;
  std::string detail;
};

// One delivery from a claim answer.
struct DeliveryInfo {
  std::string job_id;  // verified jti (or the unverified one, for rejections)
  std::string lease_id;
  SysTime lease_expires_at;
  SysTime claimed_at;
};

struct RecoveryReport {
  std::vector<std::string> interrupted;  // were running
  std::int64_t pending_results = 0;
};

// The result body without its lease, as stored (canonical JSON), and back.
std::string EncodeStoredResult(const JobResult& result);
Result<JobResult> DecodeStoredResult(std::string_view text, std::string lease_id);

class JobJournal {
 public:
  static constexpr char kFileName[] = "journal.sqlite3";
  static constexpr char kLockFileName[] = "journal.lock";

  // Opens (creating when needed) the journal in `state_dir` (created 0700 when missing). Fails
  // when another process holds the journal's lock.
  [[nodiscard]] static Result<std::unique_ptr<JobJournal>> Open(
      const std::filesystem::path& state_dir, const Clock& clock = SystemClock());
  ~JobJournal();
  JobJournal(const JobJournal&) = delete;
  JobJournal& operator=(const JobJournal&) = delete;

  const std::filesystem::path& path() const { return path_; }

  // Crash recovery; call once at start, before the loop.
  [[nodiscard]] Result<RecoveryReport> Recover();

  // --- Deliveries (each records "claimed" first, in the same transaction as what follows: a
  // claimed-but-undecided delivery needs no recovery, its lease simply runs out).
  // claimed -> verified -> running (runs + 1), before the executor starts.
  [[nodiscard]] Status RecordStart(const DeliveryInfo& delivery, std::string_view type,
                                   std::string_view connection);
  // claimed -> rejected: a result decided without running the job (a `rejected` result, or a
  // failure such as "not re-run after an interruption"), stored and queued. The job's state
  // becomes `rejected` for a rejection, else `finished`. For a token that did not verify
  // (`authentic` false) an existing row with that id is left alone.
  [[nodiscard]] Result<std::int64_t> RecordWithoutRun(const DeliveryInfo& delivery, bool authentic,
                                                      std::string_view type,
                                                      std::string_view connection,
                                                      const JobResult& result);
  // A delivery of a job whose result is stored: queues the stored result under the new lease
  // (earlier pending copies are superseded).
  [[nodiscard]] Result<std::int64_t> ResendStored(const DeliveryInfo& delivery);
  // A delivery of a job that is running here: the job continues under the new lease.
  [[nodiscard]] Status RecordLeaseAdopted(const DeliveryInfo& delivery);
  // A delivery that cannot even be addressed (no readable jti): history only.
  [[nodiscard]] Status RecordUnaddressable(const DeliveryInfo& delivery, std::string_view why);

  // --- Running jobs.
  // The job starts again (under `lease_id`): runs + 1.
  [[nodiscard]] Status RecordRerun(std::string_view job_id, std::string_view lease_id,
                                   std::string_view why);
  // running -> finished: stores the result and queues it under result.lease_id.
  [[nodiscard]] Result<std::int64_t> RecordFinished(std::string_view job_id,
                                                    const JobResult& result);
  // running -> interrupted (the agent stopped the job; no result).
  [[nodiscard]] Status RecordInterrupted(std::string_view job_id, std::string_view why);
  // running -> dropped (the lease was lost; no result).
  [[nodiscard]] Status RecordDropped(std::string_view job_id, std::string_view why);

  // --- Outbox.
  [[nodiscard]] Result<std::vector<PendingResult>> Pending(std::size_t limit = 64);
  [[nodiscard]] Result<std::int64_t> PendingCount();
  // 2xx: acknowledged; the job becomes `reported`.
  [[nodiscard]] Status MarkAcknowledged(std::int64_t seq);
  // 409: the control plane will not take it (finished elsewhere, lease unknown); dropped.
  [[nodiscard]] Status MarkDropped(std::int64_t seq, std::string_view why);
  // 400/422: it can never succeed; set aside (kept for the operator, not re-sent).
  [[nodiscard]] Status MarkSetAside(std::int64_t seq, std::string_view why);
  // A failed attempt (counted, with its error).
  [[nodiscard]] Status RecordAttempt(std::int64_t seq, std::string_view error);

  // --- Queries.
  [[nodiscard]] Result<std::optional<JournalEntry>> Find(std::string_view job_id);
  [[nodiscard]] Result<std::vector<JournalEntry>> Entries();
  [[nodiscard]] Result<std::vector<HistoryEvent>> History(std::string_view job_id);
  // Outbox rows of a job in any state, oldest first (for tests and diagnostics).
  [[nodiscard]] Result<std::vector<std::pair<std::int64_t, OutboxState>>> OutboxOf(
      std::string_view job_id);
  // PRAGMA value (journal_mode, synchronous, busy_timeout), for tests and `doctor`.
  [[nodiscard]] Result<std::string> Pragma(std::string_view name);

  // Deletes what is older than `retention` and settled; returns the number of jobs pruned.
  [[nodiscard]] Result<int> Prune(std::chrono::hours retention);

  struct Db;

 private:
  JobJournal(std::filesystem::path path, int lock_fd, sqlite3* db, const Clock& clock);

  std::filesystem::path path_;
  int lock_fd_ = -1;
  const Clock& clock_;
  std::mutex mu_;
  std::unique_ptr<Db> db_;
};

}  // namespace cakewalk::agent
