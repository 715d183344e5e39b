// The jobs.md error codes the connector puts on Status::reason(), and the statuses that carry
// them. The code (Status::code()) follows the retry rule of base/status.h: only rate_limited,
// jira_unavailable and token_unavailable are ever retryable.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"

namespace cakewalk::jira {

namespace reason {
inline constexpr std::string_view kInvalidParams = "invalid_params";
inline constexpr std::string_view kUserNotFound = "user_not_found";
inline constexpr std::string_view kAmbiguousUser = "ambiguous_user";
inline constexpr std::string_view kGroupNotFound = "group_not_found";
inline constexpr std::string_view kNotAdmin = "not_admin";
inline constexpr std::string_view kAuthFailed = "auth_failed";
inline constexpr std::string_view kMfaFailed = "mfa_failed";
inline constexpr std::string_view kCaptchaRequired = "captcha_required";
inline constexpr std::string_view kCredentialsMissing = "credentials_missing";
inline constexpr std::string_view kRateLimited = "rate_limited";
inline constexpr std::string_view kJiraUnavailable = "jira_unavailable";
inline constexpr std::string_view kLicenseExceeded = "license_exceeded";
inline constexpr std::string_view kUnsupported = "unsupported_by_jira_version";
inline constexpr std::string_view kTokenUnavailable = "token_unavailable";
inline constexpr std::string_view kPolicyDenied = "policy_denied";
inline constexpr std::string_view kInternal = "internal";
// Not a job error: the job stopped because its stop_token was requested (the job loop's
// convention, agent/executor.h).
inline constexpr std::string_view kStopped = "stopped";
}  // namespace reason

inline Status JiraError(Code code, std::string message, std::string_view why) {
  return Status(code, std::move(message), std::string(why));
}
inline Status InvalidParams(std::string message) {
  return JiraError(Code::kInvalidArgument, std::move(message), reason::kInvalidParams);
}
inline Status AuthFailed(std::string message) {
  return JiraError(Code::kUnauthenticated, std::move(message), reason::kAuthFailed);
}
inline Status MfaFailed(std::string message) {
  return JiraError(Code::kFailedPrecondition, std::move(message), reason::kMfaFailed);
}
inline Status CaptchaRequired(std::string message) {
  return JiraError(Code::kFailedPrecondition, std::move(message), reason::kCaptchaRequired);
}
inline Status NotAdmin(std::string message) {
  return JiraError(Code::kPermissionDenied, std::move(message), reason::kNotAdmin);
}
inline Status JiraUnavailable(std::string message) {
  return JiraError(Code::kUnavailable, std::move(message), reason::kJiraUnavailable);
}
inline Status RateLimited(std::string message) {
  return JiraError(Code::kResourceExhausted, std::move(message), reason::kRateLimited);
}
inline Status Unsupported(std::string message) {
  return JiraError(Code::kFailedPrecondition, std::move(message), reason::kUnsupported);
}
inline Status JiraInternal(std::string message) {
  return JiraError(Code::kInternal, std::move(message), reason::kInternal);
}
inline Status Stopped() {
  return JiraError(Code::kAborted, "stopped before it finished", reason::kStopped);
}

}  // namespace cakewalk::jira
