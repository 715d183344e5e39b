// The agent's request bodies as the fake control plane checks them: every documented field, with
// its type and range, and nothing else (docs/protocol.md is the reference).
//
// A failed check is a Status whose reason() is the error code the fake answers with:
//   - kInvalidArgument, reason "invalid_request": the body's shape is wrong (400);
//   - kFailedPrecondition, reason e.g. "invalid_record", "invalid_output", "too_many_records",
//     "unknown_error_code": well-formed but unacceptable content (422).
#pragma once

#include <json/json.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"
#include "base/time.h"

namespace cakewalk::testing::wire {

inline constexpr std::int64_t kMaxRecordsPerCall = 1000;

// HTTP status for a Status returned by the functions below (400 or 422).
int HttpStatusFor(const Status& status);

struct TokenInfo {
  std::string manufacturer;
  std::string model;
  std::string serial;
  std::string label;
};

struct EnrollRequest {
  std::string csr_pem;
  std::string hostname;
  std::string agent_version;
  TokenInfo token;
};
Result<EnrollRequest> ParseEnroll(const Json::Value& body);

// {"csr": "<PEM>"}
Result<std::string> ParseRenewal(const Json::Value& body);

struct HeartbeatRequest {
  std::string agent_version;
  std::int64_t uptime_seconds = 0;
  SysTime certificate_expires_at;
  TokenInfo token;
  std::int64_t jobs_running = 0;
  std::int64_t results_pending = 0;
};
Result<HeartbeatRequest> ParseHeartbeat(const Json::Value& body);

struct ClaimRequest {
  int max_jobs = 1;
  int wait_seconds = 0;
};
Result<ClaimRequest> ParseClaim(const Json::Value& body);

// {"lease_id": "..."}
Result<std::string> ParseLeaseExtension(const Json::Value& body);

struct RecordsRequest {
  std::string lease_id;
  std::int64_t seq = 0;
  Json::Value records;  // an array of validated records
};
Result<RecordsRequest> ParseRecords(const Json::Value& body);
// One access-sync record (kind user, group or credential), as jobs are documented to stream them.
Status ValidateRecord(const Json::Value& record, const std::string& path);

struct ResultRequest {
  std::string lease_id;
  std::string status;  // "succeeded", "failed" or "rejected"
  SysTime started_at;
  SysTime finished_at;
  Json::Value output;  // null unless succeeded
  Json::Value error;   // null when succeeded
};
// `job_type` selects the output shape checked for a success (unknown types: any object), when
// `validate_output` is set.
Result<ResultRequest> ParseResult(const Json::Value& body, std::string_view job_type,
                                  bool validate_output);
Status ValidateOutput(std::string_view job_type, const Json::Value& output);

// jobs.md's error codes, and the ones that may be retryable.
bool IsKnownErrorCode(std::string_view code);
bool IsRetryableErrorCode(std::string_view code);
// The job types the protocol defines.
bool IsKnownJobType(std::string_view type);

}  // namespace cakewalk::testing::wire
