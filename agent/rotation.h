// Secret rotation through the token (docs/rotation.md is the operator's version of this comment).
//
// JIRA PASSWORD (Data Center). One rotation of <connection>/password, holding the rotation lock
// (flock on <state_dir>/rotation/<connection>.password.lock: the daemon and the command line take
// the same lock, so rotations of one secret never overlap, across processes too):
//
//   0. settle what an earlier rotation left (recovery, below); refuse if it cannot be settled
//   1. plan: Jira's password rules (GET password/policy) against connections[].password_policy;
//      refuse before anything is stored when the policy cannot meet them
//   2. record {step: staging, from: C}                                   (record: see below)
//   3. generate the password from the token's random generator and seal it as pending version P
//      -- fault point rotation.staged --
//   4. record {step: staged, to: P}
//   5. log in with C (a fresh session; TOTP when the account uses it); record {step: change-sent}
//      -- fault point rotation.change-recorded --
//   6. PUT /rest/api/2/myself/password {password: P, currentPassword: C} with that session, sent
//      exactly once (jira/password_change.h)
//      -- fault point rotation.jira-changed --
//   7. record {step: changed}; a fresh login with P (TOTP included), confirmed by /myself
//   8. record {step: verified}
//      -- fault point rotation.verified --
//   9. promote P (C becomes retired; its retirement time is stamped)
//      -- fault point rotation.promoted --
//  10. record removed; retired versions past the grace period destroyed (sweep, below)
//      -- fault point rotation.finished --
//
// A refusal before step 6, or Jira refusing the change (a single answer: 400/403/404/429),
// destroys P and the record: Jira kept C. A change without a usable answer (timeout, reset, 5xx)
// is settled at once by recovery's probes.
//
// THE RECORD <state_dir>/rotation/<connection>.password.json (0600, written atomically) is what
// tells recovery how far a rotation got; the token holds the versions.
//
// RECOVERY (before each rotation, at daemon start before the job loop runs, and every minute in
// the daemon for rotations whose lock nobody holds). With C the current and P the newest pending
// version above it:
//   - pending versions at or below C are stale: destroyed;
//   - no P: the record (if any) is removed;
//   - record staging/staged: the change was never sent, P is destroyed (no login at all);
//   - record verified: P is promoted (it logged in before the interruption; no login);
//   - record change-sent/changed, or no record: Jira may have either. At most ONE login per
//     version: P first (a refusal is not made a login stop, and the record notes it so that P is
//     never tried again), then C. P works: promoted. C works: P destroyed. Both refused: the login
//     stop (auth_failed) is set and an operator must act. A CAPTCHA demand stops recovery at once
//     (the login stop is set); a network failure leaves everything for the next attempt.
// Every step and every recovery decision is an audit event (event::kSecretRotation, with
// CONNECTION, SECRET_NAME, ROTATION_STEP, SECRET_VERSION, PREVIOUS_VERSION; never a value).
// Meanwhile a job's login uses C, and after a refusal P once (jira/auth.h), so jobs that log in
// between Jira's change and the promotion still succeed.
//
// OLD VERSIONS. A retired version (of any secret) is destroyed once it has been retired for
// rotation.old_version_grace_seconds. The time it was first seen retired is stamped in
// <state_dir>/rotation/retired.json; the daemon sweeps every minute, and every rotation and
// recovery sweeps too (so without a daemon, the next rotation or start does it).
//
// THE AGENT CERTIFICATE is renewed on request (RotateCertificate: CertificateRenewer with the
// server's "renew" flag); the command line does that only when no daemon runs (cmd_rotate.cc).
#pragma once

#include <json/json.h>

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "agent/config.h"
#include "agent/executor.h"
#include "agent/renewal.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/status.h"
#include "hsm/secret_store.h"
#include "jira/connection.h"

namespace cakewalk::agent {

// The steps of a password rotation, each a fault point "rotation.<name>" once completed.
enum class RotationStep {
  kStaged,
  kChangeRecorded,
  kJiraChanged,
  kVerified,
  kPromoted,
  kFinished,
};
std::string_view RotationStepName(RotationStep step) noexcept;

struct RotationOutcome {
  std::uint32_t version = 0;   // the new current version
  std::uint32_t previous = 0;  // the version it replaced
  bool verified = false;
};

// A held exclusive lock on a file (flock), released on destruction.
class FileLock {
 public:
  // Waits until the lock is free, checking `stop` every 100 ms; `busy` is called once if it has
  // to wait (to say so).
  static Result<FileLock> Acquire(const std::filesystem::path& path, std::stop_token stop,
                                  const std::function<void()>& busy = {});
  // The lock now, or nullopt when someone else holds it.
  static Result<std::optional<FileLock>> TryAcquire(const std::filesystem::path& path);
  FileLock(FileLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  FileLock& operator=(FileLock&&) = delete;
  FileLock(const FileLock&) = delete;
  ~FileLock();

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

class SecretRotator {
 public:
  struct Deps {
    std::function<std::shared_ptr<const Config>()> config;
    hsm::SecretStore* secrets = nullptr;
    // The connection's Jira connection (the daemon shares JiraConnections' with the jobs).
    std::function<Result<std::shared_ptr<jira::Connection>>(const ConnectionConfig&)> connections;
    LogSink* audit = nullptr;
    const Clock* clock = nullptr;  // null: the system clock
  };
  explicit SecretRotator(Deps deps);

  // Rotates the Jira password of `connection` (steps above). `waiting` is called when another
  // rotation of it holds the lock.
  Result<RotationOutcome> RotatePassword(const std::string& connection, std::stop_token stop,
                                         const std::function<void()>& waiting = {});

  // Settles what an interrupted rotation of `connection`'s password left (waits for the lock).
  Status Recover(const std::string& connection, std::stop_token stop);
  // Recovery for every Data Center password connection whose lock is free (busy ones are being
  // rotated); the first failure is returned after all were tried.
  Status RecoverAll(std::stop_token stop);
  // Destroys retired versions past rotation.old_version_grace_seconds (stamping new ones).
  Status SweepRetired();

  // Where the rotation files of `state_dir` live.
  static std::filesystem::path Folder(const std::filesystem::path& state_dir);

 private:
  struct Record;
  Status CheckPasswordTarget(const ConnectionConfig& c) const;
  Status RecoverLocked(const ConnectionConfig& c, std::stop_token stop);
  Result<std::optional<Record>> ReadRecord(const std::string& connection) const;
  Status WriteRecord(const Record& record) const;
  Status RemoveRecord(const std::string& connection) const;
  Status Discard(const std::string& connection, std::uint32_t version, const std::string& why);
  Status PromoteVersion(const std::string& connection, std::uint32_t version,
                        std::uint32_t previous, const std::string& why);
  Status StampRetired(const std::string& connection, std::string_view name, std::uint32_t version);
  void Audit(Severity severity, const std::string& connection, std::string_view step,
             std::uint32_t version, std::uint32_t previous, const std::string& message,
             std::vector<LogField> extra = {});
  std::filesystem::path StateDir() const;

  Deps deps_;
};

// Renews the agent certificate now (the manual rotation of control-plane/certificate): confirms a
// pending switch first, then renews. Returns the number of the new identity key
// (cakewalk-tls-<n>).
Result<std::uint32_t> RotateCertificate(CertificateRenewer& renewer, const Identity& identity);

// The daemon's side: D-Bus RotateSecret requests on worker threads, and a maintenance thread
// that recovers unsettled rotations and sweeps retired versions every minute.
class RotationService {
 public:
  // `certificate` renews the agent certificate (RotateCertificate over the daemon's renewer).
  RotationService(SecretRotator& rotator, std::function<std::shared_ptr<const Config>()> config,
                  std::function<Result<std::uint32_t>()> certificate, LogSink& log,
                  std::chrono::milliseconds interval = std::chrono::minutes(1));
  ~RotationService();  // Stop()
  RotationService(const RotationService&) = delete;
  RotationService& operator=(const RotationService&) = delete;

  // Starts the maintenance thread (its first round comes after one interval: the daemon recovers
  // synchronously at start, before the job loop runs).
  void Start();
  // Asks running rotations to stop (before Jira is changed they give up; after, recovery finishes
  // them at the next start) and joins every thread.
  void Stop();

  // Rotates `name` of `connection` on a worker thread and calls `done` with the new version
  // (or what went wrong: kNotFound, kInvalidArgument, kFailedPrecondition, ...).
  void RotateAsync(std::string connection, std::string name,
                   std::function<void(Result<std::int64_t>)> done);
  // The same, on the calling thread.
  Result<std::int64_t> Rotate(const std::string& connection, const std::string& name,
                              std::stop_token stop);

 private:
  void Maintain();

  SecretRotator& rotator_;
  std::function<std::shared_ptr<const Config>()> config_;
  std::function<Result<std::uint32_t>()> certificate_;
  LogSink& log_;
  const std::chrono::milliseconds interval_;
  std::stop_source stop_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread maintenance_;
  std::list<std::thread> workers_;
};

// The secret.rotate executor (params {"secret": "password"}; output {"secret", "version",
// "verified": true}). The job loop already refused it unless jobs.allow_remote_secret_rotation
// and jobs.allowed_types allow it; the executor checks the flag again (the configuration may have
// been reloaded since) and answers policy_denied. Not idempotent: an interrupted rotation job is
// not run again (recovery settles the rotation itself).
Status RegisterRotationExecutor(ExecutorRegistry& registry, SecretRotator& rotator,
                                std::function<std::shared_ptr<const Config>()> config);

}  // namespace cakewalk::agent
