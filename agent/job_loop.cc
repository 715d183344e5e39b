#include "agent/job_loop.h"

#include <algorithm>
#include <exception>
#include <stop_token>
#include <utility>

#include "agent/heartbeat.h"
#include "base/json.h"

namespace cakewalk::agent {
namespace {

using std::chrono::milliseconds;
using Steady = std::chrono::steady_clock;

constexpr milliseconds kMinExtensionDelay{200};
constexpr milliseconds kProgressInterval{1000};
constexpr std::size_t kSendBatch = 32;
// Longest lease the fence believes (a clock far behind the server's must not disable it).
constexpr std::chrono::minutes kMaxLeaseBelieved{10};

enum class StopCause { kNone, kLeaseLost, kTimeout, kShutdown, kRestart };

milliseconds ToMs(std::chrono::nanoseconds d) {
  return std::chrono::duration_cast<milliseconds>(d);
}

// The local (steady) moment a lease expiring at `expires` (server time) runs out.
Steady::time_point FenceAt(const Clock& clock, SysTime expires) {
  const auto remaining = std::clamp<std::chrono::nanoseconds>(
      expires - clock.Now(), std::chrono::nanoseconds(0), kMaxLeaseBelieved);
  return Steady::now() + remaining;
}

std::string OutcomeWord(JobResult::Outcome o) {
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

// Waits up to `delay`, returning early when `stop` is requested.
void SleepFor(std::stop_token stop, milliseconds delay) {
  std::mutex m;
  std::condition_variable_any cv;
  std::unique_lock lock(m);
  cv.wait_for(lock, stop, delay, [] { return false; });
}

}  // namespace

std::string_view LoopStateName(LoopState state) noexcept {
  switch (state) {
    case LoopState::kStarting:
      return "starting";
    case LoopState::kPolling:
      return "polling";
    case LoopState::kBackingOff:
      return "backing_off";
    case LoopState::kIdentityRejected:
      return "identity_rejected";
    case LoopState::kStopping:
      return "stopping";
    case LoopState::kStopped:
      return "stopped";
  }
  return "unknown";
}

std::string StatusLine(const LoopSnapshot& s) {
  std::string line;
  switch (s.state) {
    case LoopState::kIdentityRejected:
      line =
          "identity rejected by the control plane (" + s.last_error + "); retrying every 5 minutes";
      break;
    case LoopState::kBackingOff:
      line = "control plane unreachable (" + s.last_error + "); retrying";
      break;
    case LoopState::kPolling:
      line = "waiting for jobs";
      break;
    default:
      line = std::string(LoopStateName(s.state));
      break;
  }
  line += "; " + std::to_string(s.jobs_running) + (s.jobs_running == 1 ? " job" : " jobs") +
          " running, " + std::to_string(s.results_pending) +
          (s.results_pending == 1 ? " result" : " results") + " pending";
  if (s.certificate_expires_at) {
    line += "; certificate expires " + FormatRfc3339(*s.certificate_expires_at);
  }
  if (!s.progress.empty()) line += "; " + s.progress;
  return line;
}

// --- Running jobs and their records ----------------------------------------------------------

struct JobLoop::Running {
  std::string job_id;
  std::string type;
  Json::Value params;
  std::shared_ptr<const Config> config;
  const ConnectionConfig* connection = nullptr;  // inside config
  Executor* executor = nullptr;

  // Guarded by JobLoop::mu_.
  SysTime started_at;
  std::string lease_id;
  SysTime lease_expires_at;
  Steady::time_point next_extension;
  // When the lease runs out by our clock if no extension succeeds: the job is stopped then (no
  // result), so that it never runs here while the control plane gives it to another agent.
  Steady::time_point fence_at;
  Steady::time_point deadline;
  std::optional<Steady::time_point> give_up_at;
  StopCause cause = StopCause::kNone;
  std::stop_source stop;
  bool records_sent = false;
  bool restart = false;
  bool result_recorded = false;  // the timeout failure was reported without the executor
  bool extending = false;
  SysTime claimed_at;  // when the delivery arrived (for the journal)
  Backoff extend_backoff;
  Steady::time_point last_progress{};
  std::thread thread;
};

class JobLoop::Records final : public RecordSink {
 public:
  Records(JobLoop& loop, std::shared_ptr<Running> job, std::string lease_id, std::stop_token stop)
      : loop_(loop), job_(std::move(job)), lease_id_(std::move(lease_id)), stop_(std::move(stop)) {}

  Status Emit(Json::Value record) override {
    if (!failed_.ok()) return failed_;
    if (!record.isObject()) return Internal("an access-sync record must be a JSON object");
    return EmitJson(WriteJson(record));
  }
  // The records are kept as their canonical JSON and the call's body is joined from them.
  Status EmitJson(std::string record_json) override {
    if (!failed_.ok()) return failed_;
    if (record_json.size() < 2 || record_json.front() != '{' || record_json.back() != '}') {
      return Internal("an access-sync record must be a JSON object");
    }
    buffer_.push_back(std::move(record_json));
    if (buffer_.size() >= kMaxRecordsPerCall) return Send();
    return Status::Ok();
  }
  Status Flush() override {
    if (!failed_.ok()) return failed_;
    if (buffer_.empty()) return Status::Ok();
    return Send();
  }
  std::int64_t records_sent() const override { return sent_; }
  std::int64_t calls_made() const override { return seq_; }

 private:
  // Posts the buffer as call `seq_`; a retry repeats the same seq with the same records.
  Status Send() {
    {
      std::lock_guard lock(loop_.mu_);
      job_->records_sent = true;
    }
    Backoff backoff = loop_.options_.random ? Backoff(loop_.options_.random) : Backoff();
    while (true) {
      if (stop_.stop_requested()) return failed_ = StoppedStatus();
      auto cp = loop_.Client();
      Status s = cp.ok() ? cp->client->PostRecordTexts(job_->job_id, lease_id_, seq_, buffer_)
                         : cp.status();
      if (s.ok()) {
        loop_.NoteSuccess();
        sent_ += static_cast<std::int64_t>(buffer_.size());
        ++seq_;
        buffer_.clear();
        return Status::Ok();
      }
      switch (ClassifyFailure(s)) {
        case Failure::kConflict:
          loop_.OnLeaseLost(job_, lease_id_, s);
          return failed_ =
                     Status(Code::kAborted,
                            "the lease was lost while sending records: " + s.message(), "stopped");
        case Failure::kRequestRejected:
          return failed_ = Status(Code::kInternal,
                                  "the control plane refused records call " + std::to_string(seq_) +
                                      ": " + s.message(),
                                  "internal");
        default:
          break;
      }
      loop_.NoteFailure(s, "records");
      if (ShouldResetConnections(s) && loop_.deps_.reset_connections) {
        loop_.deps_.reset_connections();
      }
      SleepFor(stop_, backoff.NextDelay(s));
    }
  }

  JobLoop& loop_;
  std::shared_ptr<Running> job_;
  const std::string lease_id_;
  std::stop_token stop_;
  std::vector<std::string> buffer_;  // each a record's canonical JSON
  std::int64_t seq_ = 0;
  std::int64_t sent_ = 0;
  Status failed_;
};

// --- Construction --------------------------------------------------------------------------

Result<std::unique_ptr<JobLoop>> JobLoop::Create(JobLoopDeps deps, JobLoopOptions options) {
  if (!deps.config || !deps.control_plane || deps.journal == nullptr || deps.executors == nullptr ||
      deps.keys == nullptr || deps.log == nullptr || deps.clock == nullptr) {
    return InvalidArgument("the job loop is missing a dependency");
  }
  if (deps.agent_id.empty()) return InvalidArgument("the job loop needs the agent id");
  return std::unique_ptr<JobLoop>(new JobLoop(std::move(deps), std::move(options)));
}

JobLoop::JobLoop(JobLoopDeps deps, JobLoopOptions options)
    : deps_(std::move(deps)),
      options_(std::move(options)),
      journal_(*deps_.journal),
      log_(*deps_.log),
      clock_(*deps_.clock) {
  if (options_.random) result_backoff_ = Backoff(options_.random);
}

JobLoop::~JobLoop() { Shutdown(milliseconds(0)); }

void JobLoop::Log(Severity severity, std::string_view id, std::string message,
                  std::initializer_list<LogField> fields) {
  log_.Log(severity, id, message, fields);
}

Result<ControlPlaneHandle> JobLoop::Client() {
  Result<ControlPlaneHandle> h = deps_.control_plane();
  if (h.ok()) {
    std::lock_guard lock(mu_);
    certificate_expires_at_ = h->certificate_not_after;
  }
  return h;
}

int JobLoop::PollWaitSeconds(const Config& config) const {
  int wait = config.jobs.poll_wait_seconds;
  if (options_.server_poll_wait_seconds > 0) {
    wait = std::min(wait, options_.server_poll_wait_seconds);
  }
  return std::clamp(wait, 1, kMaxPollWaitSeconds);
}

bool JobLoop::WaitFor(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                      milliseconds delay, const std::function<bool()>& done) {
  return cv.wait_for(lock, delay, done);
}

void JobLoop::Changed() {
  if (deps_.hooks.status_changed) deps_.hooks.status_changed();
}

void JobLoop::SetState(LoopState state, std::string last_error) {
  {
    std::lock_guard lock(mu_);
    if (state_ == LoopState::kStopping || state_ == LoopState::kStopped) {
      last_error_ = std::move(last_error);
    } else {
      state_ = state;
      last_error_ = std::move(last_error);
    }
  }
  Changed();
}

void JobLoop::NoteFailure(const Status& status, std::string_view what) {
  const std::string text = std::string(what) + ": " + status.message();
  if (ClassifyFailure(status) == Failure::kIdentityRejected) {
    bool log_now = false;
    {
      std::lock_guard lock(mu_);
      const auto now = Steady::now();
      // One error line per rejection episode per minute, however many loops see it.
      if (state_ != LoopState::kIdentityRejected ||
          now - last_identity_log_ > std::chrono::minutes(1)) {
        last_identity_log_ = now;
        log_now = true;
      }
    }
    if (log_now) {
      Log(Severity::kError, event::kControlPlane,
          "the control plane refuses this agent's identity (" + text +
              "); claiming stops and is retried every 5 minutes. If the agent was revoked or "
              "deleted in Cakewalk, enroll it again with 'cakewalk-agent enroll --force'",
          {{"REASON", status.reason()}});
    }
    SetState(LoopState::kIdentityRejected, text);
    return;
  }
  SetState(LoopState::kBackingOff, text);
}

void JobLoop::NoteSuccess() {
  bool was_rejected = false;
  bool changed = false;
  {
    std::lock_guard lock(mu_);
    if (state_ == LoopState::kBackingOff || state_ == LoopState::kIdentityRejected) {
      was_rejected = state_ == LoopState::kIdentityRejected;
      state_ = LoopState::kPolling;
      changed = true;
    }
    if (!last_error_.empty()) {
      last_error_.clear();
      changed = true;
    }
  }
  if (was_rejected) {
    Log(Severity::kNotice, event::kControlPlane, "the control plane accepts this agent again");
  }
  if (changed) Changed();
}

void JobLoop::NoteControlPlaneResult(const Status& status) {
  if (status.ok()) {
    NoteSuccess();
  } else if (ClassifyFailure(status) == Failure::kIdentityRejected) {
    NoteFailure(status, "heartbeat");
  }
}

void JobLoop::RefreshPendingCount() {
  auto n = journal_.PendingCount();
  if (!n.ok()) return;
  {
    std::lock_guard lock(mu_);
    results_pending_ = *n;
  }
  done_cv_.notify_all();
}

void JobLoop::WakeSender() {
  {
    std::lock_guard lock(mu_);
    ++outbox_generation_;
  }
  sender_cv_.notify_all();
  RefreshPendingCount();
  Changed();
}

LoopSnapshot JobLoop::Snapshot() const {
  std::lock_guard lock(mu_);
  LoopSnapshot s;
  s.state = state_;
  s.jobs_running = static_cast<int>(running_.size());
  s.results_pending = results_pending_;
  s.last_error = last_error_;
  s.certificate_expires_at = certificate_expires_at_;
  s.progress = progress_;
  return s;
}

std::int64_t JobLoop::executor_starts() const {
  std::lock_guard lock(mu_);
  return executor_starts_;
}

// --- Start and shutdown ----------------------------------------------------------------------

Status JobLoop::Start() {
  {
    std::lock_guard lock(mu_);
    if (started_) return FailedPrecondition("the job loop is already started");
  }
  CW_ASSIGN_OR_RETURN(RecoveryReport report, journal_.Recover());
  for (const std::string& id : report.interrupted) {
    Log(Severity::kWarning, event::kJobFinished,
        "job " + id +
            " was running when the agent stopped; it is recorded as interrupted and runs again "
            "if the control plane delivers it again",
        {{"JOB_ID", id}});
  }
  if (report.pending_results > 0) {
    Log(Severity::kNotice, event::kJobReported,
        std::to_string(report.pending_results) + " journaled results will be sent again");
  }
  auto pruned = journal_.Prune(deps_.config()->jobs.journal_retention);
  if (!pruned.ok()) {
    Log(Severity::kWarning, event::kAgentLifecycle,
        "pruning the job journal failed: " + pruned.status().message());
  }
  {
    std::lock_guard lock(mu_);
    started_ = true;
    state_ = LoopState::kPolling;
    results_pending_ = report.pending_results;
    // Owed from before: the sender goes through them first, in order.
    sender_backlog_ = static_cast<std::size_t>(report.pending_results);
    next_prune_ = Steady::now() + options_.prune_interval;
  }
  sender_thread_ = std::thread(&JobLoop::SenderLoop, this);
  supervisor_thread_ = std::thread(&JobLoop::SupervisorLoop, this);
  claim_thread_ = std::thread(&JobLoop::ClaimLoop, this);
  Changed();
  return Status::Ok();
}

void JobLoop::StopClaiming() {
  {
    std::lock_guard lock(mu_);
    if (!started_ || stop_claiming_) return;
    stop_claiming_ = true;
    state_ = LoopState::kStopping;
  }
  claim_cancel_.request_stop();
  claim_cv_.notify_all();
  Changed();
}

void JobLoop::Shutdown(milliseconds grace) {
  {
    std::lock_guard lock(mu_);
    if (!started_ || shut_down_) {
      shut_down_ = true;
      return;
    }
    shut_down_ = true;
  }
  StopClaiming();

  std::vector<std::shared_ptr<Running>> stuck;
  {
    std::unique_lock lock(mu_);
    if (!running_.empty()) {
      Log(Severity::kNotice, event::kAgentLifecycle,
          "stopping: waiting up to " + std::to_string(grace.count() / 1000) + " s for " +
              std::to_string(running_.size()) + " running jobs");
    }
    done_cv_.wait_for(lock, grace, [&] { return running_.empty(); });
    for (auto& [id, job] : running_) {
      if (job->cause == StopCause::kNone || job->cause == StopCause::kTimeout ||
          job->cause == StopCause::kRestart) {
        job->cause = StopCause::kShutdown;
      }
      job->restart = false;
      job->stop.request_stop();
    }
    done_cv_.wait_for(lock, options_.shutdown_stop_wait, [&] { return running_.empty(); });
    for (auto& [id, job] : running_) stuck.push_back(job);
  }
  for (const auto& job : stuck) {
    // Recorded now, so that a kill (systemd's stop timeout) leaves the journal truthful.
    journal_
        .RecordInterrupted(job->job_id,
                           "stopped by the agent's shutdown; the executor had "
                           "not returned")
        .IgnoreError();
    Log(Severity::kError, event::kAgentLifecycle,
        "job " + job->job_id + " (" + job->type +
            ") has not stopped after the shutdown grace; waiting for it",
        {{"JOB_ID", job->job_id}});
  }
  {
    std::unique_lock lock(mu_);
    done_cv_.wait(lock, [&] { return running_.empty(); });
  }

  // Flush what is owed, for a bounded time.
  RefreshPendingCount();
  {
    std::unique_lock lock(mu_);
    sender_cv_.notify_all();
    done_cv_.wait_for(lock, options_.result_flush_timeout, [&] { return results_pending_ == 0; });
    if (results_pending_ > 0) {
      Log(Severity::kWarning, event::kJobReported,
          std::to_string(results_pending_) +
              " results could not be delivered before stopping; they stay in the journal and "
              "are sent after the next start");
    }
    stop_sender_ = true;
    stop_supervisor_ = true;
  }
  sender_cv_.notify_all();
  supervisor_cv_.notify_all();
  claim_cv_.notify_all();
  if (sender_thread_.joinable()) sender_thread_.join();
  if (supervisor_thread_.joinable()) supervisor_thread_.join();
  // The long poll in flight was cancelled by StopClaiming.
  if (claim_thread_.joinable()) claim_thread_.join();
  std::vector<std::thread> finished;
  {
    std::unique_lock lock(mu_);
    // Workers still making a first attempt (bounded by the request timeout).
    done_cv_.wait(lock, [&] { return posting_.empty(); });
    finished.swap(finished_threads_);
    state_ = LoopState::kStopped;
  }
  for (auto& t : finished) t.join();
  Changed();
}

// --- Claiming --------------------------------------------------------------------------------

void JobLoop::ClaimLoop() {
  Backoff backoff = options_.random ? Backoff(options_.random) : Backoff();
  Backoff pacing = options_.random ? Backoff(options_.random) : Backoff();
  std::unique_lock lock(mu_);
  while (!stop_claiming_) {
    std::shared_ptr<const Config> config = deps_.config();
    const int max_concurrent = std::max(1, config->jobs.max_concurrent);
    claim_cv_.wait(
        lock, [&] { return stop_claiming_ || static_cast<int>(running_.size()) < max_concurrent; });
    if (stop_claiming_) break;
    const int free_workers = max_concurrent - static_cast<int>(running_.size());
    lock.unlock();

    const int wait_seconds = PollWaitSeconds(*config);
    const int max_jobs = std::min(free_workers, 100);
    const auto t0 = Steady::now();
    auto cp = Client();
    Result<std::vector<ClaimedJob>> claimed =
        cp.ok() ? cp->client->Claim(max_jobs, wait_seconds, claim_cancel_.get_token())
                : Result<std::vector<ClaimedJob>>(cp.status());
    const auto elapsed = Steady::now() - t0;
    if (!claimed.ok() && claimed.status().reason() == http::reason::kCancelled) break;

    milliseconds delay{0};
    if (!claimed.ok()) {
      const Status& s = claimed.status();
      NoteFailure(s, "claiming jobs");
      if (ClassifyFailure(s) == Failure::kRequestRejected) {
        Log(Severity::kError, event::kControlPlane,
            "the control plane refused a claim request as malformed: " + s.message());
      } else if (ClassifyFailure(s) != Failure::kIdentityRejected) {
        Log(Severity::kWarning, event::kControlPlane, "claiming jobs failed: " + s.message(),
            {{"REASON", s.reason()}});
      }
      if (ShouldResetConnections(s) && deps_.reset_connections) deps_.reset_connections();
      delay = backoff.NextDelay(s);
    } else {
      backoff.Reset();
      NoteSuccess();
      if (static_cast<int>(claimed->size()) > max_jobs) {
        Log(Severity::kWarning, event::kControlPlane,
            "the control plane sent " + std::to_string(claimed->size()) + " jobs for " +
                std::to_string(max_jobs) + " free workers; the extra ones are not started");
      }
      int started = 0;
      for (const ClaimedJob& job : *claimed) {
        if (HandleDelivery(job)) ++started;
      }
      // An early answer that gave nothing to do is paced, whatever the server's reasons.
      const bool early = elapsed < std::chrono::seconds(wait_seconds) / 2;
      if (started == 0 && early) {
        delay = pacing.NextJitterDelay();
      } else {
        pacing.Reset();
      }
    }
    lock.lock();
    if (delay > milliseconds(0)) {
      claim_cv_.wait_for(lock, delay, [&] { return stop_claiming_; });
    }
  }
}

bool JobLoop::HandleDelivery(const ClaimedJob& d) {
  DeliveryInfo info{"", d.lease_id, d.lease_expires_at, clock_.Now()};
  {
    std::lock_guard lock(mu_);
    if (stop_claiming_) {
      Log(Severity::kNotice, event::kJobReceived,
          "a job arrived while the agent is stopping; it is not started and its lease will run "
          "out",
          {{"LEASE_ID", d.lease_id}});
      return false;
    }
  }
  std::shared_ptr<const Config> config = deps_.config();
  VerifyOptions options;
  options.agent_id = deps_.agent_id;
  VerifyOutcome outcome = VerifyJobToken(d.jws, *deps_.keys, options, clock_.Now());
  info.job_id = outcome.job_id;
  if (info.job_id.empty()) {
    Log(Severity::kError, event::kJobRejected,
        "a delivered job could not be verified (" + outcome.status.message() +
            ") and names no readable job id, so it cannot be reported; its lease will run out",
        {{"LEASE_ID", d.lease_id}, {"REASON", outcome.status.reason()}});
    journal_.RecordUnaddressable(info, outcome.status.ToString()).IgnoreError();
    return false;
  }
  Log(Severity::kInfo, event::kJobReceived, "job " + info.job_id + " received",
      {{"JOB_ID", info.job_id}, {"LEASE_ID", d.lease_id}});

  const std::string& reason = outcome.status.reason();
  const bool same_job_as_before =
      outcome.authentic &&
      (outcome.status.ok() || reason == jws_reason::kExpired || reason == jws_reason::kNotYetValid);
  if (same_job_as_before) {
    // Running here: continue under the new lease.
    std::shared_ptr<Running> adopted;
    {
      std::lock_guard lock(mu_);
      auto it = running_.find(info.job_id);
      if (it != running_.end() && !it->second->result_recorded) {
        adopted = it->second;
        Running& job = *adopted;
        job.lease_id = d.lease_id;
        job.lease_expires_at = d.lease_expires_at;
        job.next_extension = Steady::now();  // extend (and learn the lease's state) at once
        job.fence_at = FenceAt(clock_, d.lease_expires_at);
        job.extend_backoff.Reset();
        if (job.cause == StopCause::kLeaseLost ||
            (job.cause == StopCause::kNone && job.records_sent)) {
          job.cause = StopCause::kRestart;
          job.restart = true;
          job.stop.request_stop();
        }
      }
    }
    if (adopted) {
      supervisor_cv_.notify_all();
      journal_.RecordLeaseAdopted(info).IgnoreError();
      Log(Severity::kNotice, event::kJobReceived,
          "job " + info.job_id +
              " was delivered again while running here; it continues under "
              "lease " +
              d.lease_id,
          {{"JOB_ID", info.job_id}, {"LEASE_ID", d.lease_id}});
      return false;
    }
    // Finished here before: never run again; the stored result is owed under the new lease.
    auto entry = journal_.Find(info.job_id);
    if (entry.ok() && entry->has_value() && (*entry)->authentic && (*entry)->result) {
      auto seq = journal_.ResendStored(info);
      if (seq.ok()) {
        Log(Severity::kNotice, event::kJobReceived,
            "job " + info.job_id +
                " was delivered again after it finished here; its stored "
                "result is sent again (it is not run again)",
            {{"JOB_ID", info.job_id}, {"LEASE_ID", d.lease_id}});
        WakeSender();
      } else {
        Log(Severity::kError, event::kJobReceived,
            "could not queue the stored result of job " + info.job_id + ": " +
                seq.status().message(),
            {{"JOB_ID", info.job_id}});
      }
      return false;
    }
  }

  if (!outcome.status.ok()) {
    Reject(info, outcome.authentic, outcome.authentic ? &outcome.claims : nullptr, outcome.status);
    return false;
  }
  const JobClaims& claims = outcome.claims;
  if (Status policy = CheckLocalPolicy(claims, *config, *deps_.executors); !policy.ok()) {
    Reject(info, true, &claims, policy);
    return false;
  }
  Executor* executor = deps_.executors->Find(claims.type);

  // Interrupted before and not safe to repeat: fail it rather than run it twice.
  auto entry = journal_.Find(info.job_id);
  if (!entry.ok()) {
    Log(Severity::kError, event::kJobReceived,
        "the job journal cannot be read (" + entry.status().message() + "); job " + info.job_id +
            " is not started",
        {{"JOB_ID", info.job_id}});
    return false;
  }
  if (entry->has_value() && (*entry)->authentic && (*entry)->runs > 0 && !executor->idempotent()) {
    JobResult r;
    r.lease_id = d.lease_id;
    r.outcome = JobResult::Outcome::kFailed;
    r.started_at = r.finished_at = clock_.Now();
    r.error = {"internal",
               "the job was interrupted while it ran (" + (*entry)->note + "); " + claims.type +
                   " is not re-run automatically, check its effect",
               false};
    auto seq = journal_.RecordWithoutRun(info, true, claims.type, claims.connection, r);
    if (seq.ok()) WakeSender();
    Log(Severity::kWarning, event::kJobFinished,
        "job " + info.job_id + " was interrupted earlier and is not idempotent: reported failed",
        {{"JOB_ID", info.job_id}, {"JOB_TYPE", claims.type}});
    if (deps_.hooks.job_finished) deps_.hooks.job_finished(info.job_id, claims.type, "failed");
    return false;
  }

  {
    std::lock_guard lock(mu_);
    if (static_cast<int>(running_.size()) >= std::max(1, config->jobs.max_concurrent)) {
      Log(Severity::kWarning, event::kJobReceived,
          "job " + info.job_id +
              " arrived with no free worker; it is not started and its lease "
              "will run out",
          {{"JOB_ID", info.job_id}});
      return false;
    }
  }
  // The worker journals the start (durably) before it runs the executor: the claim thread goes
  // back to the control plane without waiting for the disk.
  StartWorker(info, claims, executor, std::move(config));
  return true;
}

void JobLoop::Reject(const DeliveryInfo& info, bool authentic, const JobClaims* claims,
                     const Status& why) {
  JobResult r;
  r.lease_id = info.lease_id;
  r.outcome = JobResult::Outcome::kRejected;
  r.started_at = r.finished_at = clock_.Now();
  r.error.code = why.reason().empty() ? std::string(jws_reason::kMalformedJob) : why.reason();
  r.error.message = why.message().substr(0, 1000);
  r.error.retryable = false;
  const std::string type = claims != nullptr ? claims->type : "";
  const std::string connection = claims != nullptr ? claims->connection : "";
  auto seq = journal_.RecordWithoutRun(info, authentic, type, connection, r);
  Log(Severity::kWarning, event::kJobRejected,
      "job " + info.job_id + " rejected (" + r.error.code + "): " + r.error.message,
      {{"JOB_ID", info.job_id},
       {"LEASE_ID", info.lease_id},
       {"REASON", r.error.code},
       {"JOB_TYPE", type}});
  if (!seq.ok()) {
    Log(Severity::kError, event::kJobRejected,
        "the rejection of job " + info.job_id +
            " could not be journaled: " + seq.status().message(),
        {{"JOB_ID", info.job_id}});
    return;
  }
  WakeSender();
  if (deps_.hooks.job_finished) deps_.hooks.job_finished(info.job_id, type, "rejected");
}

// --- Workers ---------------------------------------------------------------------------------

void JobLoop::StartWorker(const DeliveryInfo& info, const JobClaims& claims, Executor* executor,
                          std::shared_ptr<const Config> config) {
  auto job = std::make_shared<Running>();
  job->job_id = info.job_id;
  job->type = claims.type;
  job->params = claims.params;
  job->connection = config->FindConnection(claims.connection);
  job->config = std::move(config);
  job->executor = executor;
  if (options_.random) job->extend_backoff = Backoff(options_.random);
  const auto now = Steady::now();
  {
    std::lock_guard lock(mu_);
    job->started_at = clock_.Now();
    job->claimed_at = info.claimed_at;
    job->lease_id = info.lease_id;
    job->lease_expires_at = info.lease_expires_at;
    const auto remaining = info.lease_expires_at - clock_.Now();
    job->next_extension = now + std::max(kMinExtensionDelay, ToMs(remaining / 2));
    job->fence_at = FenceAt(clock_, info.lease_expires_at);
    job->deadline = now + job->config->jobs.timeout;
    running_[job->job_id] = job;
    // Created under the lock: the worker takes it first, so job->thread is set before it can be
    // moved away by FinishJob.
    job->thread = std::thread(&JobLoop::Worker, this, job);
  }
  supervisor_cv_.notify_all();
  Changed();
}

void JobLoop::Worker(std::shared_ptr<Running> job) {
  DeliveryInfo info;
  {
    std::lock_guard lock(mu_);
    info = DeliveryInfo{job->job_id, job->lease_id, job->lease_expires_at, job->claimed_at};
  }
  if (Status s = journal_.RecordStart(info, job->type, job->connection->name); !s.ok()) {
    Log(Severity::kError, event::kJobReceived,
        "the job journal cannot record job " + job->job_id + " (" + s.message() +
            "); it is not started and its lease will run out",
        {{"JOB_ID", job->job_id}});
    {
      std::lock_guard lock(mu_);
      auto it = running_.find(job->job_id);
      if (it != running_.end() && it->second == job) running_.erase(it);
      finished_threads_.push_back(std::move(job->thread));
    }
    claim_cv_.notify_all();
    done_cv_.notify_all();
    supervisor_cv_.notify_all();
    Changed();
    return;
  }
  Result<Json::Value> outcome = Json::Value(Json::objectValue);
  while (true) {
    std::string lease;
    std::stop_token token;
    {
      std::lock_guard lock(mu_);
      lease = job->lease_id;
      token = job->stop.get_token();
      job->started_at = clock_.Now();
      ++executor_starts_;
    }
    Log(Severity::kInfo, event::kJobStarted, "job " + job->job_id + " (" + job->type + ") started",
        {{"JOB_ID", job->job_id},
         {"JOB_TYPE", job->type},
         {"CONNECTION", job->connection->name},
         {"LEASE_ID", lease}});
    Records records(*this, job, lease, token);
    JobContext context{job->job_id,
                       job->type,
                       *job->connection,
                       job->params,
                       token,
                       records,
                       [this, job](std::string_view text) {
                         bool publish = false;
                         {
                           std::lock_guard lock(mu_);
                           progress_ = job->job_id + ": " + std::string(text.substr(0, 200));
                           const auto now = Steady::now();
                           if (now - job->last_progress >= kProgressInterval) {
                             job->last_progress = now;
                             publish = true;
                           }
                         }
                         if (publish) Changed();
                       },
                       clock_,
                       log_};
    try {
      outcome = job->executor->Run(context);
    } catch (const std::exception& e) {
      outcome = Status(Code::kInternal, std::string("the executor threw: ") + e.what(), "internal");
    } catch (...) {
      outcome = Status(Code::kInternal, "the executor threw", "internal");
    }
    if (outcome.ok()) {
      if (Status flushed = records.Flush(); !flushed.ok()) outcome = flushed;
    }
    bool again = false;
    {
      std::lock_guard lock(mu_);
      if (job->restart) {
        job->restart = false;
        if (!stop_claiming_) {
          again = true;
          job->cause = StopCause::kNone;
          job->stop = std::stop_source();
          job->records_sent = false;
          lease = job->lease_id;
        } else {
          job->cause = StopCause::kShutdown;
        }
      }
    }
    if (!again) break;
    journal_
        .RecordRerun(job->job_id, lease,
                     "delivered again after it had sent records under the old lease: started "
                     "over under the new one")
        .IgnoreError();
  }
  FinishJob(job, std::move(outcome));
}

void JobLoop::FinishJob(const std::shared_ptr<Running>& job, Result<Json::Value> outcome) {
  StopCause cause;
  std::string lease;
  bool recorded;
  SysTime started;
  {
    std::lock_guard lock(mu_);
    cause = job->cause;
    lease = job->lease_id;
    recorded = job->result_recorded;
    started = job->started_at;
  }
  const SysTime finished = std::max(clock_.Now(), started);
  std::optional<PendingResult> first_attempt;  // this worker posts the result itself
  std::string word;
  std::string error_code;
  std::string message;
  if (recorded) {
    Log(Severity::kNotice, event::kJobFinished,
        "job " + job->job_id +
            " returned after its timeout was reported; its outcome is "
            "discarded",
        {{"JOB_ID", job->job_id}});
  } else if (cause == StopCause::kLeaseLost) {
    journal_.RecordDropped(job->job_id, "the lease was lost while the job ran; no result is sent")
        .IgnoreError();
    word = "dropped";
  } else if (cause == StopCause::kShutdown && !outcome.ok()) {
    journal_
        .RecordInterrupted(job->job_id, "stopped by the agent's shutdown after the grace period: " +
                                            outcome.status().message())
        .IgnoreError();
    word = "interrupted";
  } else {
    JobResult r;
    r.lease_id = lease;
    r.started_at = started;
    r.finished_at = finished;
    if (outcome.ok() && outcome->isObject()) {
      r.outcome = JobResult::Outcome::kSucceeded;
      r.output = std::move(outcome).value();
    } else {
      r.outcome = JobResult::Outcome::kFailed;
      if (outcome.ok()) {
        r.error = {"internal", "the executor returned an output that is not a JSON object", false};
      } else if (cause == StopCause::kTimeout) {
        const auto limit =
            std::chrono::duration_cast<std::chrono::seconds>(job->config->jobs.timeout);
        r.error = {"jira_unavailable",
                   "the job did not finish within jobs.timeout (" + std::to_string(limit.count()) +
                       " s) and was stopped",
                   true};
      } else {
        ReportedError e = ErrorFromStatus(outcome.status());
        r.error = {e.code, e.message, e.retryable};
      }
    }
    error_code = r.outcome == JobResult::Outcome::kSucceeded ? "" : r.error.code;
    message = r.error.message;
    word = OutcomeWord(r.outcome);
    {
      // Claimed before the journal holds the result, so that the sender never picks it up.
      std::lock_guard lock(mu_);
      if (!results_failing_ && sender_backlog_ == 0 && !stop_sender_) {
        posting_.insert(job->job_id);
        first_attempt.emplace();
      }
    }
    auto seq = journal_.RecordFinished(job->job_id, r);
    if (!seq.ok()) {
      Log(Severity::kCritical, event::kJobFinished,
          "the result of job " + job->job_id + " could not be journaled (" +
              seq.status().message() + "); it is not sent",
          {{"JOB_ID", job->job_id}});
      if (first_attempt) {
        // Nothing to attempt: give up the claim, or Shutdown would wait for it forever and the
        // sender would keep passing over this job's rows.
        first_attempt.reset();
        bool passed_over = false;
        {
          std::lock_guard lock(mu_);
          posting_.erase(job->job_id);
          passed_over = std::exchange(sender_passed_over_, false);
        }
        if (passed_over) WakeSender();
        done_cv_.notify_all();
      }
    } else if (first_attempt) {
      first_attempt->seq = *seq;
      first_attempt->job_id = job->job_id;
      first_attempt->result = std::move(r);
      RefreshPendingCount();
    } else {
      WakeSender();
    }
    if (deps_.health != nullptr && job->type != kJobTypeSecretRotate) {
      deps_.health->RecordJob(job->connection->name, error_code, message, finished);
    }
  }
  if (!word.empty()) {
    Log(word == "succeeded" ? Severity::kInfo : Severity::kWarning, event::kJobFinished,
        "job " + job->job_id + " (" + job->type + ") " + word +
            (error_code.empty() ? std::string() : ": " + error_code + ": " + message),
        {{"JOB_ID", job->job_id},
         {"JOB_TYPE", job->type},
         {"CONNECTION", job->connection->name},
         {"STATUS", word}});
  }
  {
    std::lock_guard lock(mu_);
    auto it = running_.find(job->job_id);
    if (it != running_.end() && it->second == job) running_.erase(it);
    if (progress_.rfind(job->job_id + ":", 0) == 0) progress_.clear();
    if (!first_attempt) finished_threads_.push_back(std::move(job->thread));
  }
  claim_cv_.notify_all();
  done_cv_.notify_all();
  supervisor_cv_.notify_all();
  if (!word.empty() && !recorded && deps_.hooks.job_finished) {
    deps_.hooks.job_finished(job->job_id, job->type, word);
  }
  if (first_attempt) {
    // The slot is free already: the next job may start while this result is in flight.
    const bool settled = Deliver(*first_attempt) == Delivery::kSettled;
    bool wake = !settled;
    {
      std::lock_guard lock(mu_);
      posting_.erase(job->job_id);
      if (settled) settled_.insert(first_attempt->seq);
      // The sender passed over this job while the attempt was in flight: it looks again (another
      // row of the same job, a re-delivery's stored result, may have been among what it passed).
      if (sender_passed_over_) {
        sender_passed_over_ = false;
        wake = true;
      }
      // Shutdown joins it (after waiting for posting_ to empty) or the supervisor does.
      finished_threads_.push_back(std::move(job->thread));
    }
    if (wake) WakeSender();
    done_cv_.notify_all();
    supervisor_cv_.notify_all();
  }
  Changed();
}

void JobLoop::OnLeaseLost(const std::shared_ptr<Running>& job, const std::string& lease_id,
                          const Status& why) {
  {
    std::lock_guard lock(mu_);
    if (job->lease_id != lease_id) return;  // an older lease; the job moved on
    if (job->cause == StopCause::kRestart || job->cause == StopCause::kLeaseLost) return;
    job->cause = StopCause::kLeaseLost;
    job->stop.request_stop();
  }
  Log(Severity::kWarning, event::kLeaseLost,
      "the lease on job " + job->job_id + " was lost (" + why.message() +
          "); the job is stopped and no result is sent",
      {{"JOB_ID", job->job_id}, {"LEASE_ID", lease_id}});
}

// --- Supervisor: leases, timeouts, pruning -------------------------------------------------

void JobLoop::SupervisorLoop() {
  std::unique_lock lock(mu_);
  while (!stop_supervisor_) {
    std::vector<std::thread> finished;
    finished.swap(finished_threads_);
    if (!finished.empty()) {
      lock.unlock();
      for (auto& t : finished) t.join();
      lock.lock();
      continue;
    }
    const auto now = Steady::now();
    // With nothing running the only deadline is the journal's pruning: an idle agent sleeps here
    // until then (or until a job starts or changes, which notifies supervisor_cv_).
    auto wake = std::max(next_prune_, now);
    std::vector<std::pair<std::shared_ptr<Running>, std::string>> extend;
    std::vector<std::shared_ptr<Running>> give_up;
    std::vector<std::shared_ptr<Running>> timed_out;
    std::vector<std::pair<std::shared_ptr<Running>, std::string>> fenced;
    for (auto& [id, job] : running_) {
      if ((job->cause == StopCause::kNone || job->cause == StopCause::kTimeout) &&
          !job->result_recorded && now >= job->fence_at) {
        fenced.emplace_back(job, job->lease_id);
        continue;
      }
      if (job->cause == StopCause::kNone && now >= job->deadline) {
        job->cause = StopCause::kTimeout;
        job->stop.request_stop();
        job->give_up_at = now + options_.timeout_stop_grace;
        timed_out.push_back(job);
      }
      if (job->give_up_at && !job->result_recorded && now >= *job->give_up_at &&
          job->cause == StopCause::kTimeout) {
        job->result_recorded = true;
        give_up.push_back(job);
      }
      if (job->cause != StopCause::kLeaseLost && !job->result_recorded && !job->extending &&
          now >= job->next_extension) {
        job->extending = true;
        extend.emplace_back(job, job->lease_id);
      }
      if (!job->extending) wake = std::min(wake, job->next_extension);
      if (job->cause == StopCause::kNone) wake = std::min(wake, job->deadline);
      if (job->give_up_at && !job->result_recorded) wake = std::min(wake, *job->give_up_at);
      if (job->cause == StopCause::kNone || job->cause == StopCause::kTimeout) {
        wake = std::min(wake, job->fence_at);
      }
    }
    const bool prune = now >= next_prune_;
    if (prune) next_prune_ = now + options_.prune_interval;
    if (extend.empty() && give_up.empty() && timed_out.empty() && fenced.empty() && !prune) {
      supervisor_cv_.wait_until(lock, wake);
      continue;
    }
    lock.unlock();

    for (const auto& [job, lease] : fenced) {
      OnLeaseLost(job, lease,
                  Status(Code::kDeadlineExceeded,
                         "the lease ran out without a successful extension; the control plane "
                         "may give the job to another agent"));
    }
    for (const auto& job : timed_out) {
      Log(Severity::kWarning, event::kJobFinished,
          "job " + job->job_id + " exceeded jobs.timeout; it is being stopped",
          {{"JOB_ID", job->job_id}});
    }
    for (const auto& job : give_up) {
      JobResult r;
      {
        std::lock_guard l(mu_);
        r.lease_id = job->lease_id;
        r.started_at = job->started_at;
      }
      r.outcome = JobResult::Outcome::kFailed;
      r.finished_at = std::max(clock_.Now(), r.started_at);
      const auto limit =
          std::chrono::duration_cast<std::chrono::seconds>(job->config->jobs.timeout);
      r.error = {"jira_unavailable",
                 "the job did not finish within jobs.timeout (" + std::to_string(limit.count()) +
                     " s) and did not stop when asked",
                 true};
      if (journal_.RecordFinished(job->job_id, r).ok()) WakeSender();
      Log(Severity::kError, event::kJobFinished,
          "job " + job->job_id +
              " did not stop after its timeout; reported failed while its "
              "executor still runs (its worker stays busy until it returns)",
          {{"JOB_ID", job->job_id}});
      if (deps_.hooks.job_finished) deps_.hooks.job_finished(job->job_id, job->type, "failed");
    }
    for (const auto& [job, lease] : extend) {
      auto cp = Client();
      Result<SysTime> r =
          cp.ok() ? cp->client->ExtendLease(job->job_id, lease) : Result<SysTime>(cp.status());
      if (r.ok()) NoteSuccess();
      std::unique_lock l(mu_);
      job->extending = false;
      if (job->lease_id != lease) continue;  // adopted a newer lease meanwhile
      const auto after = Steady::now();
      if (r.ok()) {
        job->lease_expires_at = *r;
        job->fence_at = FenceAt(clock_, *r);
        job->extend_backoff.Reset();
        job->next_extension = after + std::max(kMinExtensionDelay, ToMs((*r - clock_.Now()) / 2));
        continue;
      }
      const Status s = r.status();
      if (ClassifyFailure(s) == Failure::kConflict) {
        l.unlock();
        OnLeaseLost(job, lease, s);
        continue;
      }
      const milliseconds half =
          std::max(kMinExtensionDelay, ToMs((job->lease_expires_at - clock_.Now()) / 2));
      job->next_extension = after + std::min(job->extend_backoff.NextDelay(s), half);
      l.unlock();
      NoteFailure(s, "extending a lease");
      if (ShouldResetConnections(s) && deps_.reset_connections) deps_.reset_connections();
    }
    if (prune) {
      auto pruned = journal_.Prune(deps_.config()->jobs.journal_retention);
      if (!pruned.ok()) {
        Log(Severity::kWarning, event::kAgentLifecycle,
            "pruning the job journal failed: " + pruned.status().message());
      }
    }
    lock.lock();
  }
}

// --- Sender: results, in order ---------------------------------------------------------------

JobLoop::Delivery JobLoop::Deliver(const PendingResult& p) {
  auto cp = Client();
  Status s = cp.ok() ? cp->client->PostResult(p.job_id, p.result) : cp.status();
  const std::string word = OutcomeWord(p.result.outcome);
  if (s.ok()) {
    {
      std::lock_guard lock(mu_);
      result_backoff_.Reset();
      results_failing_ = false;
    }
    NoteSuccess();
    journal_.MarkAcknowledged(p.seq).IgnoreError();
    Log(Severity::kInfo, event::kJobReported,
        "result of job " + p.job_id + " (" + word + ") acknowledged",
        {{"JOB_ID", p.job_id}, {"LEASE_ID", p.result.lease_id}, {"STATUS", word}});
    RefreshPendingCount();
    return Delivery::kSettled;
  }
  const Failure f = ClassifyFailure(s);
  if (f == Failure::kConflict || f == Failure::kRequestRejected) {
    // Settled without being taken: 409, the control plane will not take it (dropped); 400/422,
    // it can never succeed (set aside in the journal for the operator).
    const bool conflict = f == Failure::kConflict;
    (conflict ? journal_.MarkDropped(p.seq, s.message())
              : journal_.MarkSetAside(p.seq, s.message()))
        .IgnoreError();
    Log(conflict ? Severity::kWarning : Severity::kError, event::kJobReported,
        (conflict ? "the control plane does not take the result of job "
                  : "the control plane refused the result of job ") +
            p.job_id + " (" + s.message() +
            (conflict ? "); it is dropped"
                      : "); it is set aside in the journal and not sent again"),
        {{"JOB_ID", p.job_id}, {"LEASE_ID", p.result.lease_id}});
    RefreshPendingCount();
    return Delivery::kSettled;
  }
  {
    // From now on every result waits for the sender. Concurrent first attempts that fail together
    // count as one failure: the schedule advances once per outage, not once per job in flight.
    std::lock_guard lock(mu_);
    if (!results_failing_ || Steady::now() >= result_retry_at_) {
      result_retry_at_ = Steady::now() + result_backoff_.NextDelay(s);
    }
    results_failing_ = true;
  }
  journal_.RecordAttempt(p.seq, s.message()).IgnoreError();
  NoteFailure(s, "sending results");
  if (ShouldResetConnections(s) && deps_.reset_connections) deps_.reset_connections();
  return Delivery::kFailed;
}

void JobLoop::SenderLoop() {
  std::unique_lock lock(mu_);
  while (!stop_sender_) {
    if (results_failing_ && Steady::now() < result_retry_at_) {
      sender_cv_.wait_until(lock, result_retry_at_, [&] { return stop_sender_; });
      continue;
    }
    const std::uint64_t generation = outbox_generation_;
    settled_.clear();  // what workers settled before this read, the read reflects
    lock.unlock();
    bool more = false;
    bool progress = false;
    bool failed = false;
    auto pending = journal_.Pending(kSendBatch);
    if (!pending.ok()) {
      Log(Severity::kError, event::kJobReported,
          "the job journal cannot be read: " + pending.status().message());
      lock.lock();
      sender_cv_.wait_for(lock, milliseconds(5000), [&] { return stop_sender_; });
      continue;
    }
    more = pending->size() == kSendBatch;
    lock.lock();
    sender_backlog_ = pending->size();
    lock.unlock();
    for (const PendingResult& p : *pending) {
      {
        std::lock_guard l(mu_);
        if (stop_sender_) break;
        --sender_backlog_;
        // A worker's first attempt in flight, or settled by it after the read: not ours.
        if (settled_.contains(p.seq)) continue;
        if (posting_.contains(p.job_id)) {
          sender_passed_over_ = true;
          continue;
        }
      }
      progress = true;
      if (Deliver(p) == Delivery::kFailed) {
        failed = true;
        break;
      }
    }
    Changed();
    lock.lock();
    // More than one batch owed: fresh results keep queueing behind them until the last batch.
    sender_backlog_ = more ? 1 : 0;
    if (failed) continue;  // the top of the loop waits out the backoff
    if (!more || !progress) {
      sender_cv_.wait(lock, [&] { return stop_sender_ || outbox_generation_ != generation; });
    }
  }
}

}  // namespace cakewalk::agent
