// Typed client for the Cakewalk control-plane API (docs/protocol.md). It only speaks the wire
// format: no retries and no waiting (the job loop owns back-off), no journal, no policy.
//
// Failed calls return a Status whose reason() says what kind of answer it was, so callers never
// parse messages:
//   kConflict          409: lease lost / finished elsewhere / already enrolled
//   kIdentityRejected  401/403: certificate revoked, agent deleted, enrollment token refused
//   kRateLimited       429/503 (retry_after() set when the server sent Retry-After)
//   kServerError       other 5xx, or a 2xx whose body is not the documented JSON
//   kRequestRejected   400/404/422 (the request itself is wrong; do not resend as is)
//   http::reason::*    no HTTP answer (connect, TLS, timeout, proxy ...), from the transport
// Messages carry the server's error code and message, never a secret.
#pragma once

#include <json/json.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "base/secret.h"
#include "base/status.h"
#include "base/time.h"
#include "jira/http.h"

namespace cakewalk::agent {

namespace cp_reason {
inline constexpr char kConflict[] = "conflict";
inline constexpr char kIdentityRejected[] = "identity_rejected";
inline constexpr char kRateLimited[] = "rate_limited";
inline constexpr char kServerError[] = "server_error";
inline constexpr char kRequestRejected[] = "request_rejected";
}  // namespace cp_reason

// An Ed25519 job-signing key (JWK, RFC 8037).
struct SigningKey {
  std::string kid;
  std::vector<std::uint8_t> public_key;  // 32 bytes
};

struct TokenDescription {
  std::string manufacturer;
  std::string model;
  std::string serial;
  std::string label;
};

struct EnrollRequest {
  std::string csr_pem;
  std::string hostname;
  std::string agent_version;
  TokenDescription token;
};

struct EnrollResponse {
  std::string agent_id;
  std::string certificate_chain_pem;  // leaf first
  std::vector<SigningKey> signing_keys;
  int poll_wait_seconds = 25;
};

struct ClaimedJob {
  std::string jws;
  std::string lease_id;
  SysTime lease_expires_at;
};

struct JobError {
  std::string code;  // jobs.md error code, or a rejection reason
  std::string message;
  bool retryable = false;
};

struct JobResult {
  enum class Outcome { kSucceeded, kFailed, kRejected };
  std::string lease_id;
  Outcome outcome = Outcome::kSucceeded;
  SysTime started_at;
  SysTime finished_at;
  Json::Value output;  // when succeeded
  JobError error;      // otherwise
};

struct HeartbeatResponse {
  bool renew_certificate = false;
};

class ControlPlaneClient {
 public:
  // `transport` carries the mutual-TLS identity (none before enrollment) and must outlive this.
  // `base_url` is control_plane.url.
  ControlPlaneClient(http::Transport& transport, std::string base_url);

  // POST /enroll with the one-time token as a Bearer credential (wiped by the caller's
  // SecretBytes; never logged).
  Result<EnrollResponse> Enroll(const SecretBytes& enrollment_token, const EnrollRequest& request);
  // POST /certificate with a CSR for a new key; returns the new chain (leaf first).
  Result<std::string> RenewCertificate(const std::string& csr_pem);
  Result<std::vector<SigningKey>> SigningKeys();
  // POST /jobs/claim; the request's timeout is wait_seconds plus a margin. A stop requested on
  // `cancel` ends the long poll at once (reason http::reason::kCancelled); jobs the control plane
  // leased in an answer never read are delivered again when their lease expires.
  Result<std::vector<ClaimedJob>> Claim(int max_jobs, int wait_seconds,
                                        std::stop_token cancel = {});
  // POST /jobs/{id}/lease; returns the new expiry.
  Result<SysTime> ExtendLease(const std::string& job_id, const std::string& lease_id);
  // POST /jobs/{id}/records with at most 1000 records, each given as its canonical JSON (WriteJson
  // of an object) and joined into the body as it is: the body is WriteJson of {"lease_id",
  // "records", "seq"}, and the control plane hashes exactly the bytes the producer hashed.
  Status PostRecordTexts(const std::string& job_id, const std::string& lease_id, std::int64_t seq,
                         const std::vector<std::string>& records);
  Status PostResult(const std::string& job_id, const JobResult& result);
  // POST /heartbeat with a body built by the caller (metadata only).
  Result<HeartbeatResponse> Heartbeat(const Json::Value& body);

 private:
  http::Transport& transport_;
  std::string base_url_;
};

// Parses one JWK set member; refuses anything but kty OKP / crv Ed25519 with a 32-byte x.
Result<SigningKey> ParseSigningKey(const Json::Value& jwk, const std::string& path);

}  // namespace cakewalk::agent
