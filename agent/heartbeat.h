// POST /heartbeat at start and every 60 s (docs/protocol.md §11), and what it reports.
//
// The body is metadata only: agent version, uptime, the expiry of the certificate the call
// presents, the token's description, each configured connection with a status, the current
// version of each secret in the token (SecretStore::List: connection, name, version, creation
// time — never a value), and job counts. An answer with "renew_certificate": true calls the
// renewal hook (agent/renewal.h runs the renewal).
//
// Connection status: "error" when a secret the connection needs has no current version in the
// token, or when the latest job on it failed for a reason that is about the connection
// (jira_unavailable, auth_failed, mfa_failed, captcha_required, not_admin, credentials_missing,
// rate_limited, token_unavailable, unsupported_by_jira_version); "ok" otherwise, with a detail
// saying what is known ("last job succeeded at ...", "not used yet").
#pragma once

#include <json/json.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agent/config.h"
#include "agent/control_plane.h"
#include "agent/job_loop.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/status.h"
#include "hsm/secret_store.h"

namespace cakewalk::agent {

inline constexpr std::chrono::seconds kHeartbeatInterval{60};

// What the latest jobs said about each connection. Thread-safe.
class ConnectionHealth {
 public:
  struct Entry {
    bool ok = true;
    std::string detail;
    SysTime at;
  };
  // Records a job outcome on `connection`: `error_code` empty for a success. Codes that say
  // nothing about the connection (user_not_found, invalid_params, ...) count as reachable.
  void RecordJob(const std::string& connection, const std::string& error_code,
                 const std::string& message, SysTime at);
  std::optional<Entry> Get(const std::string& connection) const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, Entry, std::less<>> entries_;
};

struct HeartbeatInputs {
  std::string agent_version;
  std::chrono::seconds uptime{0};
  SysTime certificate_expires_at;
  TokenDescription token;
  std::vector<ConnectionConfig> connections;
  std::vector<hsm::SecretInfo> secrets;  // metadata from SecretStore::List
  // Set when listing the token's secrets failed: connections then say so.
  std::optional<Status> secrets_error;
  int jobs_running = 0;
  std::int64_t results_pending = 0;
  // rotation.max_age_days and the time to measure ages at: a current secret older than that is
  // named in its connection's detail ("... is 120 days old ...: rotate it").
  std::optional<std::chrono::hours> max_age;
  SysTime now;
};

// "; password v3 is 120 days old (rotation.max_age_days: 90): rotate it" for each current secret
// of `connection` created more than `max_age` before `now`, and with `staged` also "; password v4
// staged (rotation in progress)" for each pending one; empty when there is nothing to say. The
// heartbeat's and `status`'s connection details end with it.
std::string SecretNotes(const std::vector<hsm::SecretInfo>& secrets, std::string_view connection,
                        std::chrono::hours max_age, SysTime now, bool staged);

// The heartbeat body (docs/protocol.md §11). Only current secret versions are listed: the
// protocol's secret entries have no state, and a staged version is not in use (`status` and
// `secret list` show rotations in progress).
Json::Value BuildHeartbeatBody(const HeartbeatInputs& inputs, const ConnectionHealth* health);

class HeartbeatLoop {
 public:
  struct Deps {
    ControlPlaneSource control_plane;
    std::string agent_version;
    TokenDescription token;
    std::function<std::shared_ptr<const Config>()> config;
    hsm::SecretStore* secrets = nullptr;  // null: no secrets listed
    // Running jobs and pending results.
    std::function<LoopSnapshot()> snapshot;
    const ConnectionHealth* health = nullptr;
    // Called on the heartbeat thread before each heartbeat (renewal when due, confirmations).
    std::function<void()> before_each;
    // Called (on the heartbeat thread) when the answer asks for a certificate renewal.
    std::function<void()> renew_certificate;
    // Every call's outcome (for the loop's state: identity rejections).
    std::function<void(const Status&)> on_result;
    std::function<void()> reset_connections;
    LogSink* log = nullptr;
    const Clock* clock = nullptr;
    std::chrono::milliseconds interval = kHeartbeatInterval;
    Backoff::Random random;
  };

  explicit HeartbeatLoop(Deps deps);
  ~HeartbeatLoop();  // Stop()
  HeartbeatLoop(const HeartbeatLoop&) = delete;
  HeartbeatLoop& operator=(const HeartbeatLoop&) = delete;

  // Sends the first heartbeat at once, then every interval (a failure is retried with back-off,
  // never sooner than the schedule allows, never later than the interval).
  void Start();
  void Stop();
  // The body the next heartbeat would send.
  Json::Value Body(SysTime certificate_expires_at) const;
  int sent() const;

 private:
  void Run();

  Deps deps_;
  const std::chrono::steady_clock::time_point started_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  int sent_ = 0;
  std::thread thread_;
};

}  // namespace cakewalk::agent
