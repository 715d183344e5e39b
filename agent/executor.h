// Executors: the code that runs one job type (docs/protocol.md §12).
//
// The job loop verifies a job, picks the Executor registered for its `type`, and calls Run() on a
// worker thread with a JobContext. Run() returns the job's output (a JSON object, the type's
// documented shape) or a Status whose reason() is the jobs.md error code ("user_not_found",
// "jira_unavailable", ...) and whose retryable() (kUnavailable, kResourceExhausted,
// kDeadlineExceeded) says whether the control plane may retry. A failure without a known code is
// reported as `internal`.
//
// The Jira executors (agent/jira_executors.h) register like this, in agent/daemon.cc:
//
//   class ProvisionExecutor final : public agent::Executor {
//    public:
//     Result<Json::Value> Run(agent::JobContext& job) override {
//       CW_RETURN_IF_ERROR(agent::CheckParams(job.params, {"email", "display_name", ...}));
//       ...  // poll job.stop at safe points: return agent::StoppedStatus() when requested
//     }
//   };
//   registry.Register("jira.user.provision", std::make_shared<ProvisionExecutor>(...));
//
// Rules for executors:
// - Never read a host from params: the connection (base URL, TLS, credentials) is local
//   configuration; params only name users, groups and options.
// - Check `stop` at every safe point (between Jira calls, between pages) and return promptly
//   once it is requested (lease lost, per-job timeout, shutdown). What happens to the result then
//   is the loop's decision.
// - Outputs and messages never contain a secret.
// - Access sync streams its records through `records` (Emit, then Flush before returning); the
//   loop posts them in batches of at most 1000 with seq numbers. A records call answered 409
//   stops the job: Emit/Flush then fail and `stop` is requested.
#pragma once

#include <json/json.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "agent/config.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/status.h"

namespace cakewalk::agent {

// The job types of the protocol (docs/protocol.md §12).
inline constexpr std::string_view kJobTypeVerify = "jira.connection.verify";
inline constexpr std::string_view kJobTypeProvision = "jira.user.provision";
inline constexpr std::string_view kJobTypeDeprovision = "jira.user.deprovision";
inline constexpr std::string_view kJobTypeAddMember = "jira.group.add_member";
inline constexpr std::string_view kJobTypeRemoveMember = "jira.group.remove_member";
inline constexpr std::string_view kJobTypeAccessSync = "jira.access_sync";
inline constexpr std::string_view kJobTypeSecretRotate = "secret.rotate";
bool IsProtocolJobType(std::string_view type);

// jobs.md error codes, and the transient ones (the only ones that may be retryable).
bool IsJobErrorCode(std::string_view code);
bool IsTransientErrorCode(std::string_view code);

inline constexpr std::size_t kMaxRecordsPerCall = 1000;

// Where an access sync sends its records. Implemented by the job loop.
class RecordSink {
 public:
  virtual ~RecordSink() = default;
  // Queues one record (a JSON object of docs/protocol.md §12); posts a batch when 1000 are queued.
  virtual Status Emit(Json::Value record) = 0;
  // The same for a record given as its canonical JSON (base/json.h WriteJson): the call's body
  // carries these bytes as they are, so what a producer hashed is what the control plane gets.
  // The default parses it and calls Emit.
  virtual Status EmitJson(std::string record_json);
  // Posts whatever is queued, and returns once every record so far is acknowledged.
  virtual Status Flush() = 0;
  // Records and calls acknowledged so far.
  virtual std::int64_t records_sent() const = 0;
  virtual std::int64_t calls_made() const = 0;
};

struct JobContext {
  std::string job_id;
  std::string type;
  // The connection from the local configuration (never from the job).
  const ConnectionConfig& connection;
  // The job's params object, as signed (already checked to be an object).
  const Json::Value& params;
  // Requested when the lease is lost, the per-job timeout expires or the agent stops.
  std::stop_token stop;
  RecordSink& records;
  // One human line about progress ("page 3 of users"); shown on D-Bus. May be called often.
  std::function<void(std::string_view)> progress;
  const Clock& clock;
  LogSink& log;
};

class Executor {
 public:
  virtual ~Executor() = default;
  // True when running the job a second time converges to the same state (every mutating Jira
  // job is idempotent by contract). A job interrupted by a crash or a stop is run again on
  // re-delivery only when this is true; otherwise it is failed with `internal` and a message
  // saying it was not re-run.
  virtual bool idempotent() const { return true; }
  virtual Result<Json::Value> Run(JobContext& job) = 0;
};

// Executors by job type. Filled before the loop starts; read-only afterwards (thread-safe reads).
class ExecutorRegistry {
 public:
  // Refuses an empty type, a type that is not a protocol job type, and a second registration.
  Status Register(std::string type, std::shared_ptr<Executor> executor);
  Executor* Find(std::string_view type) const;
  std::vector<std::string> Types() const;

 private:
  std::map<std::string, std::shared_ptr<Executor>, std::less<>> executors_;
};

// The error a failed Run() is reported with: reason() when it is a jobs.md code, else
// `internal`; retryable only for a transient code and a retryable status.
struct ReportedError {
  std::string code;
  std::string message;
  bool retryable = false;
};
ReportedError ErrorFromStatus(const Status& status);

// The status an executor returns when it stopped because `stop` was requested.
Status StoppedStatus();
// True for StoppedStatus() (and any kAborted status with reason "stopped").
bool IsStoppedStatus(const Status& status);

// Fails with invalid_params when `params` is not an object or has a key outside `allowed`.
Status CheckParams(const Json::Value& params, const std::set<std::string, std::less<>>& allowed);

// The token secrets a connection needs for provisioning (else access sync): e.g. "password" and
// "totp" for a Data Center connection with TOTP. Names as `cakewalk-agent secret set` uses them.
std::vector<std::string> RequiredSecrets(const ConnectionConfig& connection);

}  // namespace cakewalk::agent
