// The job loop: claims jobs from the control plane, verifies them, runs them on worker threads,
// keeps their leases, and delivers their results through the durable journal.
//
// Threads (all started by Start(), all joined by Shutdown()):
// - claim: long-polls POST /jobs/claim, asking for exactly as many jobs as there are free
//   workers (jobs.max_concurrent minus running jobs) and never claiming with none free.
//   wait_seconds is jobs.poll_wait_seconds, lowered to the control plane's suggestion
//   (poll_wait_seconds from enrollment) when that is smaller, within 1..kMaxPollWaitSeconds (30:
//   it also bounds how long a connection that died silently, a middlebox dropping it without a
//   reset, holds the claim thread; a stop cancels the poll in flight). After an answer it
//   claims again at once; errors back off (agent/backoff.h). Answers that come back early with
//   nothing to start (an empty list well before the hold ended, or only rejected/duplicate jobs)
//   are paced with the same schedule, so no server behaviour can make the agent spin.
// - one worker per running job: runs the Executor with a JobContext (stop token, records sink).
// - supervisor: extends leases at about half the remaining time, enforces jobs.timeout, prunes
//   the journal hourly.
// - sender: posts journaled results in order until each is acknowledged (2xx), dropped (409) or
//   set aside (400/422).
//
// Results: a worker makes the first attempt at its own job's result (after freeing its slot)
// when nothing is owed: no attempt has failed since the last success and the sender holds no
// batch. Otherwise, and after any failed attempt, the result is the sender's, which re-sends
// what is owed strictly in journal order. Every attempt, a worker's or the sender's, goes
// through one backoff schedule: a failure holds all results until its delay has passed. So
// results go out concurrently while the control plane answers (one round trip per result no
// longer caps the agent's throughput) and in order while anything is owed.
//
// Each delivery, in order (docs/protocol.md §7):
//   verify (agent/jws.h) -> if authentic and for us: a job id running here adopts the new lease;
//   a job id with a stored result gets that result re-sent under the new lease (never run
//   again) -> reject (journal + `rejected` result) on any failed check -> local policy -> a
//   worker, which journals "claimed, verified, running" (durable) and then starts the executor
//   (the claim thread does not wait for the disk).
//
// Decisions documented here:
// - Lease lost (409 from a lease extension or a records call): the job's stop token is requested
//   and NO result is reported; the journal says `dropped`.
// - Lease fence: a lease that runs out by the agent's clock without a successful extension (the
//   control plane unreachable, a partition) is treated as lost in the same way, so that an agent
//   cut off from the control plane never keeps running a job that may be handed to another agent.
//   The remaining time is read against the local clock when the lease is granted or extended (at
//   most 10 minutes is believed); a server clock far ahead of ours makes the fence late.
// - jobs.timeout: stop is requested; a job that then ends with an error (or does not return
//   within kTimeoutStopGrace) is reported `failed` with code `jira_unavailable`, retryable, and a
//   message naming the timeout — the work was cut short for being too slow, which is transient
//   by nature, and every job is idempotent, so a retry is safe. A job that still succeeds after
//   the stop request is reported as it ended.
// - An interrupted job (agent stopped mid-run, see journal.h) that is delivered again is run
//   again when its executor is idempotent; otherwise it is failed with `internal` ("was
//   interrupted; not re-run automatically") without running.
// - A job re-delivered while it runs here continues under the new lease; if it had already
//   streamed records under the old lease, it is stopped and started again under the new one
//   (records belong to one delivery).
// - Shutdown: claiming stops; running jobs get jobs.shutdown_grace to finish; then their stop
//   token is requested; a job that ends with an error after that is recorded `interrupted`, no
//   result. Pending results are flushed for up to result_flush_timeout. Shutdown waits for
//   executors to return (they must honour the stop token): it never abandons a thread that still
//   uses the loop. A long poll in flight is cancelled when claiming stops (http::Request::cancel),
//   so an idle agent stops at once; jobs leased in an answer that was cut off, or that arrives
//   after the stop, are not started and their leases run out (the control plane delivers them
//   again).
#pragma once

#include <json/json.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "agent/backoff.h"
#include "agent/config.h"
#include "agent/control_plane.h"
#include "agent/executor.h"
#include "agent/journal.h"
#include "agent/jws.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/status.h"

namespace cakewalk::agent {

class ConnectionHealth;

// A client for the identity in use, and the expiry of the certificate it presents.
struct ControlPlaneHandle {
  std::shared_ptr<ControlPlaneClient> client;
  SysTime certificate_not_after;
};
// Called before each control-plane call (cheap); the daemon backs it with ControlPlaneLink.
using ControlPlaneSource = std::function<Result<ControlPlaneHandle>()>;

enum class LoopState {
  kStarting,          // Start() not yet done
  kPolling,           // claiming (or waiting for a free worker)
  kBackingOff,        // the last control-plane call failed; waiting before the next
  kIdentityRejected,  // 401/403: the control plane refuses this agent; retried every 5 minutes
  kStopping,          // shutdown in progress
  kStopped,
};
std::string_view LoopStateName(LoopState state) noexcept;

// What systemd's STATUS= line and D-Bus GetStatus show.
struct LoopSnapshot {
  LoopState state = LoopState::kStarting;
  int jobs_running = 0;
  std::int64_t results_pending = 0;
  std::string last_error;  // the last control-plane failure, "" after a success
  std::optional<SysTime> certificate_expires_at;
  std::string progress;  // the latest progress line of a running job ("" when none)
};
// One line: "polling; 2 jobs running, 1 result pending" / "identity rejected by the control
// plane: ...; retrying every 5 minutes".
std::string StatusLine(const LoopSnapshot& snapshot);

struct JobLoopHooks {
  // The snapshot changed (state, running jobs, pending results, last error). Called without
  // the loop's lock held, from any loop thread; must return quickly.
  std::function<void()> status_changed;
  // A job reached its final local state: status "succeeded", "failed" or "rejected".
  std::function<void(const std::string& job_id, const std::string& type, const std::string& status)>
      job_finished;
};

struct JobLoopDeps {
  // The configuration for each new job (the daemon swaps it on reload); never null.
  std::function<std::shared_ptr<const Config>()> config;
  std::string agent_id;
  ControlPlaneSource control_plane;
  // Drops pooled connections after a failure that may have left one broken.
  std::function<void()> reset_connections;
  JobJournal* journal = nullptr;
  const ExecutorRegistry* executors = nullptr;
  SigningKeySet* keys = nullptr;
  LogSink* log = nullptr;
  const Clock* clock = nullptr;
  ConnectionHealth* health = nullptr;  // optional
  JobLoopHooks hooks;
};

// The longest hold the loop asks for (see the header comment).
inline constexpr int kMaxPollWaitSeconds = 30;

struct JobLoopOptions {
  // poll_wait_seconds the control plane suggested at enrollment; 0: none.
  int server_poll_wait_seconds = 0;
  std::chrono::milliseconds result_flush_timeout{10'000};
  // After the per-job timeout's stop request, how long the job may take to return before the
  // timeout failure is reported without it.
  std::chrono::milliseconds timeout_stop_grace{30'000};
  // After the shutdown grace and its stop request, how long Shutdown waits for executors before
  // recording them interrupted (it still joins them afterwards).
  std::chrono::milliseconds shutdown_stop_wait{5'000};
  std::chrono::seconds prune_interval{3600};
  // Source of randomness for back-off (tests); empty: SharedUniformUnit (base/random.h).
  Backoff::Random random;
};

class JobLoop {
 public:
  [[nodiscard]] static Result<std::unique_ptr<JobLoop>> Create(JobLoopDeps deps,
                                                               JobLoopOptions options = {});
  // Shuts down (no grace) when still running.
  ~JobLoop();
  JobLoop(const JobLoop&) = delete;
  JobLoop& operator=(const JobLoop&) = delete;

  // Recovers the journal (journal.h), prunes it, then starts the threads: pending results are
  // re-sent in order, claiming begins.
  [[nodiscard]] Status Start();
  // Stops claiming (the first step of a shutdown); running jobs continue.
  void StopClaiming();
  // The whole shutdown described above. Idempotent.
  void Shutdown(std::chrono::milliseconds grace);

  LoopSnapshot Snapshot() const;
  // Lets other control-plane users (the heartbeat) report what their calls got, so that an
  // identity rejection shows in the state and a success clears it.
  void NoteControlPlaneResult(const Status& status);

  // For tests and the bench: executors started since Start().
  std::int64_t executor_starts() const;

  struct Running;
  class Records;

 private:
  JobLoop(JobLoopDeps deps, JobLoopOptions options);

  void ClaimLoop();
  bool HandleDelivery(const ClaimedJob& delivery);
  void Reject(const DeliveryInfo& info, bool authentic, const JobClaims* claims, const Status& why);
  void StartWorker(const DeliveryInfo& info, const JobClaims& claims, Executor* executor,
                   std::shared_ptr<const Config> config);
  void Worker(std::shared_ptr<Running> job);
  void FinishJob(const std::shared_ptr<Running>& job, Result<Json::Value> outcome);
  void SupervisorLoop();
  void SenderLoop();
  void WakeSender();
  enum class Delivery { kSettled, kFailed };
  // One attempt at a journaled result: posts it, records what came of it in the journal and the
  // log; a failure advances the shared backoff (only the first of concurrent failures does).
  Delivery Deliver(const PendingResult& result);
  void OnLeaseLost(const std::shared_ptr<Running>& job, const std::string& lease_id,
                   const Status& why);

  int PollWaitSeconds(const Config& config) const;
  Result<ControlPlaneHandle> Client();
  // Waits on cv_ up to `delay` or until `done` (under mu_) holds. True when `done` held.
  bool WaitFor(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
               std::chrono::milliseconds delay, const std::function<bool()>& done);
  void SetState(LoopState state, std::string last_error);
  void NoteFailure(const Status& status, std::string_view what);
  void NoteSuccess();
  void Changed();
  void RefreshPendingCount();
  void Log(Severity severity, std::string_view id, std::string message,
           std::initializer_list<LogField> fields = {});

  const JobLoopDeps deps_;
  const JobLoopOptions options_;
  JobJournal& journal_;
  LogSink& log_;
  const Clock& clock_;

  mutable std::mutex mu_;
  std::condition_variable claim_cv_;       // a worker became free; stop
  std::condition_variable sender_cv_;      // a result was queued; stop
  std::condition_variable supervisor_cv_;  // a job started or changed; stop
  std::condition_variable done_cv_;        // a job ended (Shutdown waits on it)
  bool started_ = false;
  bool stop_claiming_ = false;
  std::stop_source claim_cancel_;  // requested with stop_claiming_: cuts the long poll short
  bool stop_sender_ = false;
  bool stop_supervisor_ = false;
  bool shut_down_ = false;
  std::uint64_t outbox_generation_ = 0;
  // Results (see "Results" above).
  std::set<std::string> posting_;    // job ids whose first attempt a worker is making
  std::set<std::int64_t> settled_;   // outbox seqs a worker settled since the sender's last read
  bool sender_passed_over_ = false;  // the sender skipped a job in posting_
  std::size_t sender_backlog_ = 0;   // results of the sender's current batch not yet attempted
  bool results_failing_ = false;     // an attempt failed and none succeeded since
  std::chrono::steady_clock::time_point result_retry_at_{};
  Backoff result_backoff_;
  LoopState state_ = LoopState::kStarting;
  std::string last_error_;
  std::int64_t results_pending_ = 0;
  std::optional<SysTime> certificate_expires_at_;
  std::map<std::string, std::shared_ptr<Running>> running_;
  std::vector<std::thread> finished_threads_;
  std::int64_t executor_starts_ = 0;
  std::string progress_;
  std::chrono::steady_clock::time_point next_prune_{};
  std::chrono::steady_clock::time_point last_identity_log_{};

  std::thread claim_thread_;
  std::thread supervisor_thread_;
  std::thread sender_thread_;
};

}  // namespace cakewalk::agent
