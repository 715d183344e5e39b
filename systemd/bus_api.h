// The agent's D-Bus API: names, and the mapping between Status codes and D-Bus error names.
// Shared by the service (bus_service.h) and the client (status_client.h); documented for
// operators in docs/operations.md.
//
//   bus name   security.cakewalk.Agent1 (system bus)
//   object     /security/cakewalk/Agent1
//   interface  security.cakewalk.Agent1
//     GetStatus() -> a{sv}                 keys: see kStatus* below
//     ListSecrets() -> a(ssxss)            connection, name, version, created_at, state
//     RotateSecret(s connection, s name) -> x version
//     Reload()
//     property s Version                   const
//     property s State                     emits PropertiesChanged
//     property s CertificateExpiresAt      RFC 3339 UTC, "" when unknown; emits PropertiesChanged
//     property u JobsRunning               emits PropertiesChanged
//     property u ResultsPending            emits PropertiesChanged
//     signal JobFinished(s job_id, s type, s status)
//
// Timestamps are RFC 3339 strings in UTC ("2026-12-04T17:29:08Z"), "" when unknown.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"

namespace cakewalk::sd {

inline constexpr char kBusName[] = "security.cakewalk.Agent1";
inline constexpr char kObjectPath[] = "/security/cakewalk/Agent1";
inline constexpr char kInterface[] = "security.cakewalk.Agent1";
// The group whose members may call the agent (besides root and the agent's own user).
inline constexpr char kAdminGroup[] = "cakewalk-admin";

// GetStatus() keys. a{sv} is open-ended: clients ignore keys they do not know, and new keys may
// be added; existing keys keep their name and type.
inline constexpr char kStatusState[] = "State";                                // s
inline constexpr char kStatusVersion[] = "Version";                            // s
inline constexpr char kStatusUptimeSeconds[] = "UptimeSeconds";                // t
inline constexpr char kStatusJobsRunning[] = "JobsRunning";                    // u
inline constexpr char kStatusResultsPending[] = "ResultsPending";              // u
inline constexpr char kStatusCertificateExpiresAt[] = "CertificateExpiresAt";  // s
inline constexpr char kStatusConnections[] = "Connections";    // a(sss) name, state, detail
inline constexpr char kStatusSyncProgress[] = "SyncProgress";  // s

// Error names. Authorisation failures use the standard org.freedesktop.DBus.Error.AccessDenied;
// a Status returned by the daemon maps to security.cakewalk.Agent1.Error.<Code>.
inline constexpr char kErrorAccessDenied[] = "org.freedesktop.DBus.Error.AccessDenied";
inline constexpr char kErrorInvalidArgs[] = "org.freedesktop.DBus.Error.InvalidArgs";
inline constexpr char kErrorPrefix[] = "security.cakewalk.Agent1.Error.";

// "security.cakewalk.Agent1.Error.NotFound" etc. for a non-OK code:
//   kInvalidArgument InvalidArgument   kNotFound NotFound          kAlreadyExists AlreadyExists
//   kPermissionDenied PermissionDenied kUnauthenticated Unauthenticated
//   kFailedPrecondition FailedPrecondition  kAborted Aborted        kUnavailable Unavailable
//   kDeadlineExceeded Timeout          kResourceExhausted ResourceExhausted
//   kInternal (and anything else) Failed
std::string ErrorNameFor(Code code);
// The reverse, for the client; nullopt for names outside our namespace.
std::optional<Code> CodeForErrorName(std::string_view name);

// Connection and secret names accepted over the bus: 1 to 64 characters of [A-Za-z0-9._-],
// not starting with '.' or '-'. Anything else is refused before the daemon sees it.
Status ValidateName(std::string_view what, std::string_view value);

}  // namespace cakewalk::sd
