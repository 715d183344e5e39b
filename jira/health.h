// CheckConnection: the per-connection lines of `cakewalk-agent doctor` (and what the heartbeat's
// connection status can be derived from). Each check says what it found and, on failure, what an
// operator should do. Reading only, except that a login is made when no session is live (a login
// stop is honoured: then no login is attempted at all).
#pragma once

#include <chrono>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "jira/connection.h"

namespace cakewalk::jira {

struct HealthCheck {
  enum Outcome { kOk, kWarn, kFail };
  std::string name;  // "jira-prod: reachable"
  Outcome outcome = kOk;
  std::string detail;
  std::string reason;  // the jobs.md code of a failure, when there is one
};

struct ConnectionHealth {
  std::vector<HealthCheck> checks;
  bool ok() const;
  // The first failure's reason ("" when all passed), for a heartbeat "status": "error".
  std::string first_failure_reason() const;
};

// Warn above this clock skew (codes are corrected for it; beyond one TOTP step they are refused).
inline constexpr std::chrono::seconds kSkewWarn{10};

// Checks, in order: reachable (DNS/TCP/timeout), TLS (verification against ca_file), secrets
// present in the token (metadata only), login stop, login (provisioning credentials, /myself),
// Admin permission, access sync credentials, clock skew. A check that cannot run because an
// earlier one failed says so as a warning.
ConnectionHealth CheckConnection(Connection& connection, std::stop_token stop = {});

// The secret names a connection needs (for the "secrets" check and `secret list` hints).
std::vector<std::string> RequiredSecretNames(const ConnectionSettings& settings);

}  // namespace cakewalk::jira
