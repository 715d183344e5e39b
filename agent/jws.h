// Job authenticity: verification of the compact JWS a job arrives as (docs/protocol.md §5, §7).
//
// VerifyJobToken runs the checks in the protocol's order and stops at the first failure:
//   1. form: three base64url segments (no padding), the header a JSON object;
//   2. alg is exactly "EdDSA" (none, HS*, RS*, ES*, PS* ... are refused before any key is used);
//   3. kid present and known — an unknown kid triggers one refresh of the key set
//      (SigningKeySet::Find, at most once a minute), and is refused if still unknown;
//   4. Ed25519 signature (64 bytes) over "<header segment>.<payload segment>", checked by
//      OpenSSL (EVP_DigestVerify with an EVP_PKEY_ED25519 key);
//   5. only now the payload is parsed: strict JSON, every claim present with its type;
//   6. iss == "cakewalk", aud == our agent id, exp > now - 60 s, iat <= now + 5 min + 60 s.
// Step 7 (local policy: connection configured, type known and allowed) is CheckLocalPolicy.
//
// A failure is a Status whose reason() is the rejection reason of §7 (jws_reason below).
//
// The one exception to "nothing from an unverified payload": UnverifiedJobId reads the `jti`
// of a token that failed verification, solely to address its `rejected` report (the job URL
// needs the id). It decodes at most kMaxUnverifiedPayloadBytes, parses strictly, reads nothing but
// `jti`, and accepts only an id of the documented form. Nothing else of such a payload is used.
#pragma once

#include <json/json.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/config.h"
#include "agent/control_plane.h"
#include "base/clock.h"
#include "base/status.h"
#include "base/time.h"

namespace cakewalk::agent {

class ExecutorRegistry;

// Rejection reasons (error.code of a `rejected` result).
namespace jws_reason {
inline constexpr char kMalformedJob[] = "malformed_job";
inline constexpr char kUnsupportedAlg[] = "unsupported_alg";
inline constexpr char kUnknownKid[] = "unknown_kid";
inline constexpr char kBadSignature[] = "bad_signature";
inline constexpr char kWrongIssuer[] = "wrong_issuer";
inline constexpr char kWrongAudience[] = "wrong_audience";
inline constexpr char kExpired[] = "expired";
inline constexpr char kNotYetValid[] = "not_yet_valid";
inline constexpr char kConnectionNotConfigured[] = "connection_not_configured";
inline constexpr char kUnknownType[] = "unknown_type";
inline constexpr char kPolicyDenied[] = "policy_denied";
}  // namespace jws_reason

inline constexpr std::size_t kMaxJobTokenBytes = 1024 * 1024;
inline constexpr std::size_t kMaxUnverifiedPayloadBytes = 16 * 1024;
inline constexpr std::chrono::seconds kAllowedClockSkew{60};
inline constexpr std::chrono::seconds kMaxIssuedAhead{5 * 60};
inline constexpr std::chrono::seconds kKeyRefreshInterval{60};

// Job ids appear in URLs and journal rows: 1-128 characters of [A-Za-z0-9._-], not starting
// with '.'.
bool IsValidJobId(std::string_view id);

// The job-signing keys (JWKs from enrollment and GET /signing-keys). Thread-safe.
class SigningKeySet {
 public:
  using Fetch = std::function<Result<std::vector<SigningKey>>()>;

  // `fetch` is GET /signing-keys; `clock` paces refreshes (steady time).
  SigningKeySet(std::vector<SigningKey> initial, Fetch fetch, const Clock& clock,
                std::chrono::seconds min_refresh_interval = kKeyRefreshInterval);

  // The key named `kid`. When it is unknown, refreshes the set once — unless a refresh happened
  // less than the interval ago — and looks again.
  std::optional<SigningKey> Find(std::string_view kid);
  // The key named `kid` among the keys held now; never refreshes.
  std::optional<SigningKey> FindCached(std::string_view kid) const;
  // Replaces the set (keys absent from `keys` are retired).
  void Replace(std::vector<SigningKey> keys);
  std::vector<std::string> kids() const;
  // Refreshes done, and the error of the last one (OK when it worked or none was done).
  int refreshes() const;
  Status last_refresh_error() const;

 private:
  mutable std::mutex mu_;
  std::vector<SigningKey> keys_;
  Fetch fetch_;
  const Clock& clock_;
  std::chrono::seconds interval_;
  std::optional<std::chrono::steady_clock::time_point> last_refresh_;
  int refreshes_ = 0;
  Status last_error_;
};

struct JobClaims {
  std::string id;  // jti
  std::string issuer;
  std::string audience;
  SysTime issued_at;
  SysTime expires_at;
  std::string type;
  std::string connection;
  Json::Value params;  // an object
};

struct VerifyOptions {
  std::string agent_id;  // expected aud
  std::string issuer = "cakewalk";
  std::chrono::seconds skew = kAllowedClockSkew;
  std::chrono::seconds max_issued_ahead = kMaxIssuedAhead;
};

struct VerifyOutcome {
  // OK, or the first failed check with reason() from jws_reason.
  Status status;
  // True when the signature verified and the payload parsed with every claim typed (steps 1-5
  // passed): `claims` are then the control plane's own, even when a step-6 check failed.
  bool authentic = false;
  JobClaims claims;
  // The verified jti when authentic; otherwise UnverifiedJobId (empty when none could be read),
  // to address the rejection report only.
  std::string job_id;
};

VerifyOutcome VerifyJobToken(std::string_view jws, SigningKeySet& keys,
                             const VerifyOptions& options, SysTime now);

// Step 7. The connection must be configured; the type must be a job type this agent knows
// (has an executor for) and be allowed by jobs.allowed_types; secret.rotate additionally needs
// jobs.allow_remote_secret_rotation. Reasons: connection_not_configured, unknown_type,
// policy_denied.
Status CheckLocalPolicy(const JobClaims& claims, const Config& config,
                        const ExecutorRegistry& executors);

// The `jti` of a token that did not verify, read for addressing its rejection only (see above).
std::optional<std::string> UnverifiedJobId(std::string_view jws);

// Ed25519 verification of `signature` over `data` with a raw 32-byte public key (OpenSSL).
bool VerifyEd25519(const std::vector<std::uint8_t>& public_key, std::string_view data,
                   const std::vector<std::uint8_t>& signature);

}  // namespace cakewalk::agent
