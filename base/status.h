// Status and Result<T>: how every library in this tree reports failure.
//
// Codes follow the retry rule: kUnavailable / kResourceExhausted / kDeadlineExceeded mean "the same
// call may simply be retried"; kFailedPrecondition means "nothing should retry until someone fixes
// the state"; kInvalidArgument is only for input malformed in itself. A Status may also carry a
// `reason`: the machine-readable error code of jobs.md ("user_not_found", "captcha_required", ...)
// that the job layer reports verbatim. Messages never contain secrets.
#pragma once

#include <cassert>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace cakewalk {

enum class Code {
  kOk,
  kInvalidArgument,
  kNotFound,
  kAlreadyExists,
  kPermissionDenied,
  kUnauthenticated,
  kFailedPrecondition,
  kAborted,
  kUnavailable,
  kDeadlineExceeded,
  kResourceExhausted,
  kInternal,
};

std::string_view CodeName(Code code) noexcept;

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message, std::string reason = {})
      : code_(code), message_(std::move(message)), reason_(std::move(reason)) {}

  static Status Ok() { return Status(); }

  bool ok() const noexcept { return code_ == Code::kOk; }
  Code code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  // Machine-readable error code for job results (jobs.md), empty when none was set.
  const std::string& reason() const noexcept { return reason_; }
  bool retryable() const noexcept {
    return code_ == Code::kUnavailable || code_ == Code::kResourceExhausted ||
           code_ == Code::kDeadlineExceeded;
  }

  // "context: message" — for adding where a failure happened at the call site.
  Status WithContext(std::string_view context) const;
  Status WithReason(std::string reason) const;
  // A server's request to wait before retrying (Retry-After, rate-limit reset), when it sent one.
  Status WithRetryAfter(std::chrono::milliseconds delay) const;
  std::optional<std::chrono::milliseconds> retry_after() const noexcept { return retry_after_; }
  // "CODE_NAME: message" for diagnostics.
  std::string ToString() const;

  // Marks the status as deliberately ignored.
  void IgnoreError() const noexcept {}

 private:
  Code code_ = Code::kOk;
  std::string message_;
  std::string reason_;
  std::optional<std::chrono::milliseconds> retry_after_;
};

inline Status InvalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
inline Status NotFound(std::string m) { return {Code::kNotFound, std::move(m)}; }
inline Status AlreadyExists(std::string m) { return {Code::kAlreadyExists, std::move(m)}; }
inline Status PermissionDenied(std::string m) { return {Code::kPermissionDenied, std::move(m)}; }
inline Status Unauthenticated(std::string m) { return {Code::kUnauthenticated, std::move(m)}; }
inline Status FailedPrecondition(std::string m) {
  return {Code::kFailedPrecondition, std::move(m)};
}
inline Status Aborted(std::string m) { return {Code::kAborted, std::move(m)}; }
inline Status Unavailable(std::string m) { return {Code::kUnavailable, std::move(m)}; }
inline Status DeadlineExceeded(std::string m) { return {Code::kDeadlineExceeded, std::move(m)}; }
inline Status ResourceExhausted(std::string m) { return {Code::kResourceExhausted, std::move(m)}; }
inline Status Internal(std::string m) { return {Code::kInternal, std::move(m)}; }

// Holds either a T or a non-OK Status.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(v_).ok() && "Result constructed from an OK status");
    if (std::get<Status>(v_).ok()) v_ = Status(Code::kInternal, "OK status used as an error");
  }

  bool ok() const noexcept { return std::holds_alternative<T>(v_); }
  Status status() const {
    if (ok()) return Status::Ok();
    return std::get<Status>(v_);
  }

  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }

  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

namespace internal {
inline Status AsStatus(const Status& s) { return s; }
template <class T>
Status AsStatus(const Result<T>& r) {
  return r.status();
}
}  // namespace internal

}  // namespace cakewalk

#define CW_CONCAT_INNER(a, b) a##b
#define CW_CONCAT(a, b) CW_CONCAT_INNER(a, b)

// Returns the status from the enclosing function when `expr` (a Status) is not OK.
#define CW_RETURN_IF_ERROR(expr)                                          \
  do {                                                                    \
    ::cakewalk::Status cw_status_ = ::cakewalk::internal::AsStatus(expr); \
    if (!cw_status_.ok()) return cw_status_;                              \
  } while (false)

// `CW_ASSIGN_OR_RETURN(auto x, MakeX());` declares x from a Result, or returns its status.
#define CW_ASSIGN_OR_RETURN(lhs, expr) \
  CW_ASSIGN_OR_RETURN_IMPL(CW_CONCAT(cw_result_, __LINE__), lhs, expr)
#define CW_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()
