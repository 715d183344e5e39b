// FakeControlPlane: a strict, in-process stand-in for the Cakewalk control plane's agent API
// (docs/protocol.md), for tests and the demo.
//
// - Handle() implements every endpoint under `base_path` ("/agent/v1"): enrollment with one-time
//   tokens, certificate renewal (the fake is the CA of agent certificates), signing keys,
//   heartbeat, long-poll claims, leases, records and results. It can be driven directly (no
//   network) or served by FakeHttpsServer (see running_control_plane.h).
// - Strict: unknown or missing fields, wrong types and protocol misuse are refused the way the
//   protocol says, and recorded as violations where the protocol would silently tolerate them
//   (a repeated records seq with different content, two different results for one job, ...).
// - Jobs are Ed25519-signed JWS; a test can enqueue deliberately forged ones (jws.h).
// - Faults are data: queue the next N responses, optionally for one endpoint.
// - Ground truth for assertions: jobs with lease history, result deliveries and records; agents;
//   heartbeats; every request's arrival time; violations. Waits return AssertionResult.
//
// Thread-safe: every member that changes after construction is guarded by mu_. Handle() may run
// on many server threads at once; a claim long poll blocks its thread on a condition variable.
//
// Test-only administration endpoints under "/_fake/" (enabled with Options::enable_admin_api) are
// described in docs/protocol.md; they are never part of the agent protocol.
#pragma once

#include <gtest/gtest.h>
#include <json/json.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/clock.h"
#include "base/status.h"
#include "base/time.h"
#include "tests/fakes/control_plane/jws.h"
#include "tests/fakes/https_server.h"

namespace cakewalk::testing {

enum class Endpoint {
  kEnroll,       // POST /enroll
  kCertificate,  // POST /certificate
  kSigningKeys,  // GET  /signing-keys
  kHeartbeat,    // POST /heartbeat
  kClaim,        // POST /jobs/claim
  kLease,        // POST /jobs/{id}/lease
  kRecords,      // POST /jobs/{id}/records
  kResult,       // POST /jobs/{id}/result
  kAdmin,        // /_fake/... (test-only)
  kUnknown,      // anything else (404/405)
};
std::string_view EndpointName(Endpoint endpoint) noexcept;  // "enroll", "jobs/claim", ...
std::optional<Endpoint> ParseEndpoint(std::string_view name);

// A scripted misbehaviour of the control plane (or of what sits in front of it).
struct ControlPlaneFault {
  enum class Kind {
    kStatus,              // `status` with the protocol's error body (and Retry-After if set)
    kHtmlPage,            // `status` with an HTML error page, as a load balancer sends
    kMalformedJson,       // 200 with a body that is not JSON
    kResetBeforeHeaders,  // connection reset, no answer
    kTruncateBody,        // the real answer, cut in half
    kDelay,               // the real answer, after `delay`
    kStall,               // no answer until `delay` passed (or the client gave up)
  };
  Kind kind = Kind::kStatus;
  int status = 503;
  // Retry-After value as sent: delta seconds ("7") or an HTTP date.
  std::optional<std::string> retry_after;
  std::chrono::milliseconds delay{0};
  // Run the request normally first (its effects stay: a result is stored, a lease granted) and
  // replace only the answer — "the server did it, but the reply got lost". kTruncateBody and
  // kDelay always process the request.
  bool process_request = false;

  static ControlPlaneFault Status(int status, std::optional<std::string> retry_after = {});
  static ControlPlaneFault Reset(bool process_request = false);
};
std::string_view FaultKindName(ControlPlaneFault::Kind kind) noexcept;
std::optional<ControlPlaneFault::Kind> ParseFaultKind(std::string_view name);

// What a test enqueues.
struct JobSpec {
  std::string id;  // empty: "job_<n>"
  std::string type;
  std::string connection;
  Json::Value params = Json::Value(Json::objectValue);
  std::string agent_id;  // empty: any enrolled agent may claim it
  Forgery forgery = Forgery::kNone;
  // kReplayedJti: the job whose jti and payload are delivered again (empty: the latest job that
  // is not itself a replay).
  std::string replay_of;
  // kMissingClaims: claims to leave out (empty: {"exp"}).
  std::vector<std::string> omit_claims;
  std::chrono::seconds ttl{3600};  // exp - iat
};

enum class JobState { kQueued, kLeased, kFinished };
std::string_view JobStateName(JobState state) noexcept;

struct LeaseInfo {
  enum class End { kActive, kExpired, kFinished };
  std::string lease_id;
  std::string agent_id;
  SysTime granted_at;
  SysTime expires_at;  // latest expiry (after extensions)
  int extensions = 0;
  End end = End::kActive;
  std::string jws;  // exactly what was delivered with this lease
};

struct ResultDelivery {
  std::string agent_id;
  std::string lease_id;
  SysTime received_at;
  Json::Value body;
  int http_status = 0;
  std::string outcome;  // "accepted", "duplicate", or the error code answered
};

// The records of one call, each kept as its canonical JSON (WriteJson) and read back as a
// Json::Value: a sync of a million users kept as Json::Value trees would take gigabytes, and the
// allocator's time for them would set the pace of a benchmark's sync instead of the agent.
class RecordTexts {
 public:
  void push_back(const Json::Value& record);
  std::size_t size() const { return texts_.size(); }
  bool empty() const { return texts_.empty(); }
  Json::Value operator[](std::size_t i) const;  // parsed again
  const std::string& text(std::size_t i) const { return texts_[i]; }
  bool operator==(const RecordTexts&) const = default;

  // Yields each record as a Json::Value (by value).
  class Iterator {
   public:
    using value_type = Json::Value;
    using difference_type = std::ptrdiff_t;
    Iterator(const RecordTexts* of, std::size_t at) : of_(of), at_(at) {}
    Json::Value operator*() const { return (*of_)[at_]; }
    Iterator& operator++() {
      ++at_;
      return *this;
    }
    bool operator==(const Iterator& o) const { return at_ == o.at_; }

   private:
    const RecordTexts* of_;
    std::size_t at_;
  };
  Iterator begin() const { return {this, 0}; }
  Iterator end() const { return {this, texts_.size()}; }

 private:
  std::vector<std::string> texts_;
};

struct RecordBatch {
  std::int64_t seq = 0;
  RecordTexts records;
  std::int64_t users = 0, non_human = 0, groups = 0, credentials = 0;  // by the records' kind
  SysTime received_at;
  int deliveries = 1;  // identical repeats count here
};

struct JobInfo {
  std::string id;            // the jti and URL id (replays share their original's id)
  std::uint64_t serial = 0;  // unique per entry
  JobSpec spec;
  Json::Value claims;  // the payload as signed (before the claimant's aud is filled in)
  JobState state = JobState::kQueued;
  SysTime created_at;
  std::vector<LeaseInfo> leases;
  std::vector<ResultDelivery> result_deliveries;
  Json::Value result;  // the accepted result body, null until finished
  std::string finished_by;
  std::string finishing_lease;
  std::map<std::string, std::vector<RecordBatch>> records_by_lease;  // in seq order
  bool differing_results = false;  // a finished job got a different result afterwards

  int result_posts() const { return static_cast<int>(result_deliveries.size()); }
  // The records of the finishing lease (else the latest lease that sent any), flattened in order.
  std::vector<Json::Value> Records() const;
};

struct AgentInfo {
  enum class Status { kActive, kRevoked, kDeleted };
  std::string agent_id;
  std::string hostname;
  std::string agent_version;
  Json::Value token;  // as enrolled
  Status status = Status::kActive;
  SysTime enrolled_at;
  std::vector<std::string> key_sha256;    // hex SPKI hashes, enrollment key first, then renewals
  std::vector<std::string> certificates;  // leaf PEMs issued, in order
  bool renewal_requested = false;
  int renewals = 0;
};
std::string_view AgentStatusName(AgentInfo::Status status) noexcept;

struct HeartbeatInfo {
  std::string agent_id;
  SysTime received_at;
  std::string body;  // as received
  bool accepted = false;
  std::string problem;  // why it was refused
};

struct RequestInfo {
  Endpoint endpoint = Endpoint::kUnknown;
  std::string method;
  std::string path;
  std::string job_id;
  std::string agent_id;           // from the client certificate, when one verified
  std::string client_key_sha256;  // hex SPKI hash of the presented certificate's key
  std::chrono::steady_clock::time_point arrived;
  SysTime at;      // the fake's clock
  int status = 0;  // 0 while the request is still being handled (a held claim)
  std::string error_code;
  std::string fault;  // the injected fault's kind, when one was applied
};

struct Violation {
  std::string agent_id;
  std::string job_id;
  std::string what;
};

struct FakeControlPlaneOptions {
  std::string base_path = "/agent/v1";
  Clock* clock = nullptr;  // wall time for claims, leases and records (default: SystemClock())
  std::chrono::seconds certificate_lifetime = std::chrono::hours(24);
  std::chrono::milliseconds lease_duration = std::chrono::seconds(60);
  int poll_wait_seconds = 25;
  // A claim's wait_seconds is held for wait_seconds * long_poll_time_scale of real time.
  double long_poll_time_scale = 1.0;
  // Accept a result sent with the job's latest lease after that lease expired, as long as the job
  // was not delivered again (so a journal re-sent after an outage still lands).
  bool accept_late_results = true;
  // Check succeeded outputs against the job type's documented shape.
  bool validate_outputs = true;
  // Serve the test-only /_fake/ endpoints.
  bool enable_admin_api = false;
  // One readable line per event ("job job_000001 claimed by agt_000001"). Called with the fake's
  // lock held: it must not call back into the fake.
  std::function<void(std::string_view)> event_log;
};

class FakeControlPlane {
 public:
  using Options = FakeControlPlaneOptions;

  static Result<std::unique_ptr<FakeControlPlane>> Create(Options options = {});
  ~FakeControlPlane();
  FakeControlPlane(const FakeControlPlane&) = delete;
  FakeControlPlane& operator=(const FakeControlPlane&) = delete;

  // The whole API, for FakeHttpsServer or for direct calls.
  HttpResponse Handle(const HttpRequest& request);
  Handler AsHandler();
  // Releases every held long poll (answered with what is available) and makes later claims
  // answer at once. Call before stopping the server.
  void Shutdown();

  const Options& options() const;
  // The CA that issues agent certificates; the server verifies client certificates against it.
  const std::string& agent_ca_pem() const;

  // --- Enrollment tokens (each accepted once).
  std::string NewEnrollmentToken();
  void AddEnrollmentToken(std::string token);

  // --- Agents.
  Status RevokeAgent(std::string_view agent_id);   // later calls: 401
  Status DeleteAgent(std::string_view agent_id);   // later calls: 403
  Status RestoreAgent(std::string_view agent_id);  // active again
  // The next heartbeats answer renew_certificate: true until the agent renewed.
  Status RequestCertificateRenewal(std::string_view agent_id);

  // --- Job-signing keys.
  // A new key that signs every job from now on; older keys stay published until retired.
  Result<std::string> RotateSigningKey();
  Status RetireSigningKey(std::string_view kid);  // the current key cannot be retired
  std::string current_kid() const;
  Json::Value PublishedJwks() const;  // array of JWKs

  // --- Jobs.
  Result<std::string> EnqueueJob(JobSpec spec);
  // Ends a job's active lease now (as if it had run out): the job can be claimed again.
  Status ExpireLease(std::string_view job_id);
  void SetLeaseDuration(std::chrono::milliseconds duration);

  // --- Faults: the next `count` requests (to `endpoint`, or to any agent endpoint) get `fault`.
  void QueueFault(ControlPlaneFault fault, int count = 1,
                  std::optional<Endpoint> endpoint = std::nullopt);
  void ClearFaults();
  int queued_faults() const;

  // --- Values that must never reach the control plane (canaries): any request that carries one
  // (raw, hex or base64) is recorded as a violation.
  void AddForbiddenValue(std::string value);

  // --- Ground truth.
  std::vector<JobInfo> Jobs() const;
  // The entry with this id (the original, not a replay), if any.
  std::optional<JobInfo> Job(std::string_view job_id) const;
  // How many jobs have finished (a result accepted), without copying any: for waiting on many jobs
  // (a wait wakes at every request, and copying the jobs at each wake competes with the agent).
  std::size_t FinishedJobs() const;
  std::vector<AgentInfo> Agents() const;
  std::optional<AgentInfo> Agent(std::string_view agent_id) const;
  std::vector<HeartbeatInfo> Heartbeats() const;
  std::vector<RequestInfo> Requests() const;
  // Arrival times (monotonic) of the requests to one endpoint, for observing back-off.
  std::vector<std::chrono::steady_clock::time_point> Arrivals(Endpoint endpoint) const;
  std::vector<Violation> Violations() const;
  // Claims currently held open.
  int waiting_claims() const;
  // Everything above as JSON (the admin API's /_fake/state).
  Json::Value StateJson(bool include_records = false) const;

  // --- Waits (default timeout 10 s). `predicate` runs without the fake's lock and may call the
  // ground-truth accessors; it is re-evaluated whenever the fake's state changes.
  ::testing::AssertionResult WaitUntil(const std::function<bool()>& predicate,
                                       std::string_view what,
                                       std::chrono::milliseconds timeout = kDefaultWait);
  ::testing::AssertionResult WaitForJobState(std::string_view job_id, JobState state,
                                             std::chrono::milliseconds timeout = kDefaultWait);
  ::testing::AssertionResult WaitForResultPosts(std::string_view job_id, int count,
                                                std::chrono::milliseconds timeout = kDefaultWait);
  ::testing::AssertionResult WaitForRequests(Endpoint endpoint, int count,
                                             std::chrono::milliseconds timeout = kDefaultWait);
  ::testing::AssertionResult WaitForWaitingClaims(int count,
                                                  std::chrono::milliseconds timeout = kDefaultWait);
  ::testing::AssertionResult WaitForEnrollments(int count,
                                                std::chrono::milliseconds timeout = kDefaultWait);
  ::testing::AssertionResult WaitForHeartbeats(int count,
                                               std::chrono::milliseconds timeout = kDefaultWait);

  static constexpr std::chrono::milliseconds kDefaultWait{10000};

  class Impl;

 private:
  explicit FakeControlPlane(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cakewalk::testing
