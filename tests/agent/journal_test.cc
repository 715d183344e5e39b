// The durable job journal (agent/journal.h): SQLite settings, file modes, the lock, state
// transitions with their history, re-send order across reopen, dedupe of re-deliveries,
// interrupted jobs, rejections of unverified tokens, outbox outcomes, pruning.
#include "agent/journal.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <memory>
#include <vector>

#include "base/json.h"
#include "tests/agent/journal_vfs.h"
#include "tests/support/fake_clock.h"
#include "tests/support/temp_dir.h"

namespace cakewalk::agent {
namespace {

using testing::FakeClock;
using testing::TempDir;

int ModeOf(const std::filesystem::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 07777);
}

class JournalTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen() {
    journal_.reset();
    auto j = JobJournal::Open(dir_.path() / "state", clock_);
    ASSERT_TRUE(j.ok()) << j.status().ToString();
    journal_ = std::move(j).value();
  }

  DeliveryInfo Delivery(const std::string& job, const std::string& lease) {
    return {job, lease, clock_.Now() + std::chrono::seconds(60), clock_.Now()};
  }

  JobResult Succeeded(const std::string& lease, int n = 1) {
    JobResult r;
    r.lease_id = lease;
    r.outcome = JobResult::Outcome::kSucceeded;
    r.started_at = clock_.Now();
    r.finished_at = clock_.Now() + std::chrono::seconds(2);
    r.output = Json::Value(Json::objectValue);
    r.output["changed"] = true;
    r.output["n"] = n;
    return r;
  }

  JobResult Rejected(const std::string& lease, const std::string& reason) {
    JobResult r;
    r.lease_id = lease;
    r.outcome = JobResult::Outcome::kRejected;
    r.started_at = r.finished_at = clock_.Now();
    r.error = {reason, "refused: " + reason, false};
    return r;
  }

  JournalEntry Entry(const std::string& job) {
    auto e = journal_->Find(job);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    EXPECT_TRUE(e.ok() && e->has_value()) << job << " is not in the journal";
    return e.ok() && e->has_value() ? **e : JournalEntry{};
  }

  std::vector<std::string> HistoryStates(const std::string& job) {
    auto h = journal_->History(job);
    EXPECT_TRUE(h.ok());
    std::vector<std::string> out;
    for (const auto& e : *h) out.push_back(e.state);
    return out;
  }

  std::vector<std::string> PendingLeases() {
    auto p = journal_->Pending();
    EXPECT_TRUE(p.ok());
    std::vector<std::string> out;
    for (const auto& r : *p) out.push_back(r.job_id + "@" + r.result.lease_id);
    return out;
  }

  TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<JobJournal> journal_;
};

TEST_F(JournalTest, WalFullSynchronousAndBusyTimeout) {
  EXPECT_EQ(journal_->Pragma("journal_mode").value(), "wal");
  EXPECT_EQ(journal_->Pragma("synchronous").value(), "2");  // FULL
  EXPECT_EQ(journal_->Pragma("busy_timeout").value(), "5000");
  EXPECT_FALSE(journal_->Pragma("writable_schema").ok());
}

// The journal opened through a VFS that counts syncs and can fail writes. The VFS is registered
// before SetUp opens the journal and outlives it: TearDown closes the journal.
class JournalOnVfsTest : public JournalTest {
 protected:
  void TearDown() override {
    vfs.FailWrites(false);
    journal_.reset();
  }
  testing::JournalVfs vfs;
};

// Round after round (the synchronous level is switched for each settling commit and set back
// after it), records before a job acts and before its result is sent are synced, and the
// commits that settle a result are not.
TEST_F(JournalOnVfsTest, RecordsBeforeActingAreSyncedSettlingAResultIsNot) {
  vfs.TakeSyncs();
  for (int round = 1; round <= 3; ++round) {
    const std::string job = "job_" + std::to_string(round);
    const std::string lease = "lease_" + std::to_string(round);
    SCOPED_TRACE(job);
    // Before the job runs and before its result is sent: on disk when the call returns.
    ASSERT_TRUE(journal_->RecordStart(Delivery(job, lease), "t", "c").ok());
    EXPECT_GE(vfs.TakeSyncs(), 1);
    auto seq = journal_->RecordFinished(job, Succeeded(lease));
    ASSERT_TRUE(seq.ok()) << seq.status().ToString();
    EXPECT_GE(vfs.TakeSyncs(), 1);
    // Settling a result the control plane has: no wait for the disk (a lost commit only means the
    // result is sent again, which the control plane answers the same way).
    ASSERT_TRUE(journal_->RecordAttempt(*seq, "HTTP 503").ok());
    EXPECT_EQ(vfs.TakeSyncs(), 0);
    ASSERT_TRUE(journal_->RecordAttempt(*seq, "HTTP 502").ok());
    EXPECT_EQ(vfs.TakeSyncs(), 0);
    ASSERT_TRUE(journal_->MarkAcknowledged(*seq).ok());
    EXPECT_EQ(vfs.TakeSyncs(), 0);
    // ... and the connection is back to synchronous=FULL for what follows.
    EXPECT_EQ(journal_->Pragma("synchronous").value(), "2");
  }
  ASSERT_TRUE(journal_->RecordStart(Delivery("job_d", "lease_d"), "t", "c").ok());
  EXPECT_GE(vfs.TakeSyncs(), 1);
  ASSERT_TRUE(journal_->RecordDropped("job_d", "lease lost").ok());
  EXPECT_GE(vfs.TakeSyncs(), 1);
  Reopen();
  for (const char* job : {"job_1", "job_2", "job_3"}) {
    EXPECT_EQ(Entry(job).state, JournalState::kReported) << job;
  }
  EXPECT_EQ(Entry("job_d").state, JournalState::kDropped);
}

TEST_F(JournalOnVfsTest, AFullDiskFailsTheRecordAndLosesNothing) {
  ASSERT_TRUE(journal_->RecordStart(Delivery("job_1", "lease_1"), "t", "c").ok());
  auto first = journal_->RecordFinished("job_1", Succeeded("lease_1"));
  ASSERT_TRUE(first.ok()) << first.status().ToString();

  vfs.FailWrites(true);
  Status start = journal_->RecordStart(Delivery("job_2", "lease_2"), "t", "c");
  EXPECT_FALSE(start.ok());
  EXPECT_NE(start.message().find("disk is full"), std::string::npos) << start.ToString();
  EXPECT_FALSE(journal_->MarkAcknowledged(*first).ok());  // a relaxed commit fails alike
  EXPECT_GT(vfs.failed_writes(), 0);
  // Nothing half-written: job_2 is not there, job_1's result is the first one, still owed.
  auto missing = journal_->Find("job_2");
  ASSERT_TRUE(missing.ok()) << missing.status().ToString();
  EXPECT_FALSE(missing->has_value());
  EXPECT_EQ(PendingLeases(), std::vector<std::string>{"job_1@lease_1"});

  // Space again: the same connection carries on, and everything is on disk after a reopen.
  vfs.FailWrites(false);
  ASSERT_TRUE(journal_->RecordStart(Delivery("job_2", "lease_2"), "t", "c").ok());
  ASSERT_TRUE(journal_->MarkAcknowledged(*first).ok());
  EXPECT_EQ(journal_->Pragma("synchronous").value(), "2");
  Reopen();
  EXPECT_EQ(Entry("job_1").state, JournalState::kReported);
  ASSERT_TRUE(Entry("job_1").result.has_value());
  EXPECT_EQ(Entry("job_1").result->output["n"].asInt(), 1);
  EXPECT_EQ(Entry("job_2").state, JournalState::kRunning);
  EXPECT_TRUE(PendingLeases().empty());
}

TEST_F(JournalTest, FilesArePrivate) {
  ASSERT_TRUE(journal_->RecordStart(Delivery("job_1", "lease_1"), "jira.user.provision", "c").ok());
  EXPECT_EQ(ModeOf(dir_.path() / "state"), 0700);
  EXPECT_EQ(ModeOf(journal_->path()), 0600);
  EXPECT_EQ(ModeOf(journal_->path().string() + "-wal"), 0600);
  // A journal file someone loosened is made private again.
  journal_.reset();
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0700), 0);
  ASSERT_EQ(::chmod((dir_.path() / "state" / JobJournal::kFileName).c_str(), 0644), 0);
  Reopen();
  EXPECT_EQ(ModeOf(journal_->path()), 0600);
}

TEST_F(JournalTest, OneProcessAtATime) {
  auto second = JobJournal::Open(dir_.path() / "state", clock_);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("another cakewalk-agent"), std::string::npos);
  journal_.reset();
  EXPECT_TRUE(JobJournal::Open(dir_.path() / "state", clock_).ok());
}

TEST_F(JournalTest, LifecycleOfAJob) {
  ASSERT_TRUE(
      journal_->RecordStart(Delivery("job_1", "lease_1"), "jira.user.provision", "jira-prod").ok());
  JournalEntry e = Entry("job_1");
  EXPECT_TRUE(e.authentic);
  EXPECT_EQ(e.state, JournalState::kRunning);
  EXPECT_EQ(e.runs, 1);
  EXPECT_EQ(e.type, "jira.user.provision");
  EXPECT_EQ(e.connection, "jira-prod");
  EXPECT_EQ(e.lease_id, "lease_1");
  EXPECT_FALSE(e.result.has_value());

  clock_.Advance(std::chrono::seconds(3));
  auto seq = journal_->RecordFinished("job_1", Succeeded("lease_1"));
  ASSERT_TRUE(seq.ok()) << seq.status().ToString();
  e = Entry("job_1");
  EXPECT_EQ(e.state, JournalState::kFinished);
  ASSERT_TRUE(e.result.has_value());
  EXPECT_EQ(e.result->output["n"].asInt(), 1);
  EXPECT_EQ(journal_->PendingCount().value(), 1);

  ASSERT_TRUE(journal_->RecordAttempt(*seq, "HTTP 503").ok());
  auto pending = journal_->Pending();
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].attempts, 1);

  ASSERT_TRUE(journal_->MarkAcknowledged(*seq).ok());
  EXPECT_EQ(Entry("job_1").state, JournalState::kReported);
  EXPECT_EQ(journal_->PendingCount().value(), 0);
  EXPECT_EQ(HistoryStates("job_1"),
            (std::vector<std::string>{"claimed", "verified", "running", "finished", "reported"}));
}

TEST_F(JournalTest, PendingResultsSurviveAReopenInOrder) {
  for (const char* job : {"job_3", "job_1", "job_2"}) {
    ASSERT_TRUE(journal_->RecordStart(Delivery(job, std::string("lease_") + job), "t", "c").ok());
  }
  for (const char* job : {"job_2", "job_3", "job_1"}) {
    ASSERT_TRUE(journal_->RecordFinished(job, Succeeded(std::string("lease_") + job)).ok());
  }
  Reopen();
  EXPECT_EQ(PendingLeases(), (std::vector<std::string>{"job_2@lease_job_2", "job_3@lease_job_3",
                                                       "job_1@lease_job_1"}));
  auto pending = journal_->Pending();
  ASSERT_TRUE(journal_->MarkAcknowledged((*pending)[1].seq).ok());
  EXPECT_EQ(PendingLeases(), (std::vector<std::string>{"job_2@lease_job_2", "job_1@lease_job_1"}));
  auto one = journal_->Pending(1);
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ((*one)[0].job_id, "job_2");
}

TEST_F(JournalTest, StoredResultIsReSentUnderTheNewLease) {
  ASSERT_TRUE(journal_->RecordStart(Delivery("job_1", "lease_1"), "t", "c").ok());
  ASSERT_TRUE(journal_->RecordFinished("job_1", Succeeded("lease_1", 7)).ok());
  const std::string first = EncodeStoredResult(journal_->Pending()->front().result);

  auto seq = journal_->ResendStored(Delivery("job_1", "lease_2"));
  ASSERT_TRUE(seq.ok()) << seq.status().ToString();
  // Only the newest copy is owed; the old lease is superseded.
  EXPECT_EQ(PendingLeases(), std::vector<std::string>{"job_1@lease_2"});
  const PendingResult p = journal_->Pending()->front();
  EXPECT_EQ(EncodeStoredResult(p.result), first) << "the same result, byte for byte";
  auto outbox = journal_->OutboxOf("job_1");
  ASSERT_EQ(outbox->size(), 2u);
  EXPECT_EQ((*outbox)[0].second, OutboxState::kSuperseded);
  EXPECT_EQ((*outbox)[1].second, OutboxState::kPending);
  EXPECT_EQ(Entry("job_1").runs, 1) << "re-sending never runs the job";

  // After it was reported, a third delivery gets the stored result again.
  ASSERT_TRUE(journal_->MarkAcknowledged(p.seq).ok());
  ASSERT_TRUE(journal_->ResendStored(Delivery("job_1", "lease_3")).ok());
  EXPECT_EQ(PendingLeases(), std::vector<std::string>{"job_1@lease_3"});
  // A job without a stored result cannot be re-sent.
  ASSERT_TRUE(journal_->RecordStart(Delivery("job_2", "lease_9"), "t", "c").ok());
  EXPECT_EQ(journal_->ResendStored(Delivery("job_2", "lease_10")).status().code(), Code::kNotFound);
}

TEST_F(JournalTest, RecoveryMarksRunningJobsInterrupted) {
  ASSERT_TRUE(journal_->RecordStart(Delivery("job_run", "lease_1"), "t", "c").ok());
  ASSERT_TRUE(journal_->RecordStart(Delivery("job_done", "lease_2"), "t", "c").ok());
  ASSERT_TRUE(journal_->RecordFinished("job_done", Succeeded("lease_2")).ok());
  Reopen();  // as after a crash
  auto report = journal_->Recover();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->interrupted, std::vector<std::string>{"job_run"});
  EXPECT_EQ(report->pending_results, 1);
  JournalEntry e = Entry("job_run");
  EXPECT_EQ(e.state, JournalState::kInterrupted);
  EXPECT_NE(e.note.find("stopped while the job was running"), std::string::npos);
  EXPECT_EQ(Entry("job_done").state, JournalState::kFinished);
  // Recovery is idempotent.
  EXPECT_TRUE(journal_->Recover()->interrupted.empty());
  // Re-delivered and run again: the run count says so.
  ASSERT_TRUE(journal_->RecordStart(Delivery("job_run", "lease_3"), "t", "c").ok());
  e = Entry("job_run");
  EXPECT_EQ(e.runs, 2);
  EXPECT_EQ(e.lease_id, "lease_3");
  EXPECT_EQ(HistoryStates("job_run"),
            (std::vector<std::string>{"claimed", "verified", "running", "interrupted", "claimed",
                                      "verified", "running"}));
}

TEST_F(JournalTest, RejectionsAndUnverifiedTokens) {
  // A verified job finished here.
  ASSERT_TRUE(journal_->RecordStart(Delivery("job_1", "lease_1"), "t", "c").ok());
  ASSERT_TRUE(journal_->RecordFinished("job_1", Succeeded("lease_1")).ok());
  // A forged token naming the same id: reported, but the real row is untouched.
  ASSERT_TRUE(journal_
                  ->RecordWithoutRun(Delivery("job_1", "lease_x"), false, "", "",
                                     Rejected("lease_x", "bad_signature"))
                  .ok());
  JournalEntry e = Entry("job_1");
  EXPECT_TRUE(e.authentic);
  EXPECT_EQ(e.state, JournalState::kFinished);
  EXPECT_EQ(e.result->outcome, JobResult::Outcome::kSucceeded);
  EXPECT_EQ(PendingLeases(), (std::vector<std::string>{"job_1@lease_1", "job_1@lease_x"}));

  // A forged token with a new id gets a row marked as not authentic ...
  ASSERT_TRUE(journal_
                  ->RecordWithoutRun(Delivery("job_2", "lease_2"), false, "", "",
                                     Rejected("lease_2", "unsupported_alg"))
                  .ok());
  e = Entry("job_2");
  EXPECT_FALSE(e.authentic);
  EXPECT_EQ(e.state, JournalState::kRejected);
  // ... which a genuine delivery of that id replaces.
  ASSERT_TRUE(journal_->RecordStart(Delivery("job_2", "lease_3"), "t", "c").ok());
  e = Entry("job_2");
  EXPECT_TRUE(e.authentic);
  EXPECT_EQ(e.state, JournalState::kRunning);
  EXPECT_FALSE(e.result.has_value());

  // A verified rejection stores its result: a re-delivery re-sends it.
  ASSERT_TRUE(journal_
                  ->RecordWithoutRun(Delivery("job_3", "lease_4"), true, "jira.x", "c",
                                     Rejected("lease_4", "unknown_type"))
                  .ok());
  e = Entry("job_3");
  EXPECT_EQ(e.state, JournalState::kRejected);
  EXPECT_EQ(e.result->error.code, "unknown_type");
  ASSERT_TRUE(journal_->ResendStored(Delivery("job_3", "lease_5")).ok());
  EXPECT_EQ(HistoryStates("job_3"),
            (std::vector<std::string>{"claimed", "rejected", "claimed", "resent"}));

  // A failure decided without running (e.g. not re-run after an interruption) is `finished`.
  JobResult failed = Rejected("lease_6", "internal");
  failed.outcome = JobResult::Outcome::kFailed;
  ASSERT_TRUE(
      journal_->RecordWithoutRun(Delivery("job_4", "lease_6"), true, "t", "c", failed).ok());
  EXPECT_EQ(Entry("job_4").state, JournalState::kFinished);
  EXPECT_EQ(Entry("job_4").runs, 0);
}

TEST_F(JournalTest, OutboxOutcomes) {
  for (const char* job : {"job_1", "job_2", "job_3"}) {
    ASSERT_TRUE(journal_->RecordStart(Delivery(job, "lease"), "t", "c").ok());
  }
  auto s1 = journal_->RecordFinished("job_1", Succeeded("lease"));
  auto s2 = journal_->RecordFinished("job_2", Succeeded("lease"));
  ASSERT_TRUE(s1.ok() && s2.ok());
  ASSERT_TRUE(journal_->MarkDropped(*s1, "409 job_finished: finished elsewhere").ok());
  ASSERT_TRUE(journal_->MarkSetAside(*s2, "422 invalid_output").ok());
  EXPECT_EQ(Entry("job_1").state, JournalState::kDropped);
  EXPECT_NE(Entry("job_1").note.find("finished elsewhere"), std::string::npos);
  EXPECT_EQ(journal_->OutboxOf("job_2")->front().second, OutboxState::kSetAside);
  EXPECT_EQ(journal_->PendingCount().value(), 0);
  // Lease lost while running: no result at all.
  ASSERT_TRUE(journal_->RecordDropped("job_3", "lease lost (409 lease_lost)").ok());
  EXPECT_EQ(Entry("job_3").state, JournalState::kDropped);
  EXPECT_TRUE(journal_->OutboxOf("job_3")->empty());
  ASSERT_TRUE(journal_->RecordInterrupted("job_3", "x").ok());
  EXPECT_EQ(Entry("job_3").state, JournalState::kInterrupted);
  EXPECT_EQ(journal_->MarkAcknowledged(999).code(), Code::kNotFound);
}

TEST_F(JournalTest, PruningKeepsWhatIsOwedOrRecent) {
  ASSERT_TRUE(journal_->RecordStart(Delivery("old_done", "l1"), "t", "c").ok());
  auto seq = journal_->RecordFinished("old_done", Succeeded("l1"));
  ASSERT_TRUE(journal_->MarkAcknowledged(*seq).ok());
  ASSERT_TRUE(journal_->RecordStart(Delivery("old_pending", "l2"), "t", "c").ok());
  ASSERT_TRUE(journal_->RecordFinished("old_pending", Succeeded("l2")).ok());
  ASSERT_TRUE(journal_->RecordStart(Delivery("old_running", "l3"), "t", "c").ok());
  clock_.Advance(std::chrono::hours(24 * 8));
  ASSERT_TRUE(journal_->RecordStart(Delivery("new_done", "l4"), "t", "c").ok());
  seq = journal_->RecordFinished("new_done", Succeeded("l4"));
  ASSERT_TRUE(journal_->MarkAcknowledged(*seq).ok());

  auto pruned = journal_->Prune(std::chrono::hours(24 * 7));
  ASSERT_TRUE(pruned.ok()) << pruned.status().ToString();
  EXPECT_EQ(*pruned, 1);
  EXPECT_FALSE(journal_->Find("old_done")->has_value());
  EXPECT_TRUE(journal_->History("old_done")->empty());
  EXPECT_TRUE(journal_->OutboxOf("old_done")->empty());
  EXPECT_TRUE(journal_->Find("old_pending")->has_value()) << "a result still owed is kept";
  EXPECT_EQ(journal_->PendingCount().value(), 1);
  EXPECT_TRUE(journal_->Find("old_running")->has_value());
  EXPECT_TRUE(journal_->Find("new_done")->has_value());
  EXPECT_FALSE(journal_->History("new_done")->empty());
}

TEST(StoredResultTest, RoundTrip) {
  JobResult r;
  r.outcome = JobResult::Outcome::kFailed;
  r.started_at = SysTime(std::chrono::seconds(1764850000));
  r.finished_at = SysTime(std::chrono::seconds(1764850003));
  r.error = {"jira_unavailable", "Jira answered 503", true};
  auto back = DecodeStoredResult(EncodeStoredResult(r), "lease_7");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->lease_id, "lease_7");
  EXPECT_EQ(back->outcome, r.outcome);
  EXPECT_EQ(back->started_at, r.started_at);
  EXPECT_EQ(back->finished_at, r.finished_at);
  EXPECT_EQ(back->error.code, "jira_unavailable");
  EXPECT_TRUE(back->error.retryable);
  EXPECT_EQ(EncodeStoredResult(*back), EncodeStoredResult(r));
  EXPECT_FALSE(DecodeStoredResult(R"({"status":"maybe"})", "").ok());
}

TEST(JournalSchemaTest, RefusesAnUnknownSchemaVersion) {
  TempDir dir;
  FakeClock clock;
  {
    auto j = JobJournal::Open(dir.path() / "s", clock);
    ASSERT_TRUE(j.ok());
  }
  // Written by some future version.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir.path() / "s" / JobJournal::kFileName).c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE meta SET value = '99' WHERE key = 'schema'", nullptr, nullptr,
                         nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto j = JobJournal::Open(dir.path() / "s", clock);
  ASSERT_FALSE(j.ok());
  EXPECT_NE(j.status().message().find("schema version 99"), std::string::npos);
}

}  // namespace
}  // namespace cakewalk::agent
