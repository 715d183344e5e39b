// `cakewalk-agent doctor`: one line per check. CheckResult is shared by every doctor check; the
// control-plane checks live here.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "agent/config.h"
#include "agent/token_context.h"
#include "base/clock.h"

namespace cakewalk::agent {

struct CheckResult {
  enum Outcome { kOk, kWarn, kFail };
  std::string name;
  Outcome outcome = kOk;
  std::string detail;
};

std::string_view CheckOutcomeName(CheckResult::Outcome outcome) noexcept;  // "ok", "warn", "FAIL"
// "[ ok ] control plane reachable: connected to localhost:8443" — one line.
std::string FormatCheck(const CheckResult& check);

// Warn when a certificate has less than this left (or less than a third of its lifetime).
inline constexpr std::chrono::hours kCertificateWarnBefore{24 * 14};

// The control-plane checks, in this order (names as shown):
//   "enrollment"                 enrolled (agent id, key, token) or not, identity file readable
//   "agent certificate"          expiry: fail when expired or not yet valid; warn when less than
//                                a third of its lifetime or 14 days are left
//   "control plane reachable"    DNS, TCP and proxy (407/401 and other CONNECT refusals told
//                                apart), and timeouts
//   "control plane TLS"          server certificate verification and SPKI pins
//   "agent identity accepted"    an authenticated call (GET /signing-keys) with the agent's
//                                certificate and token key
// A check that cannot run because an earlier one failed says so as a warning ("not checked: ...").
// `token` may be null when the token could not be opened; checks that need it say so. Nothing is
// changed: the identity is opened read-only and no renewal or cleanup happens.
std::vector<CheckResult> ControlPlaneChecks(const Config& config, TokenContext* token,
                                            const Clock& clock = SystemClock());

}  // namespace cakewalk::agent
