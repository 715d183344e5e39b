// Timestamps on the wire: RFC 3339 (control plane, Jira), HTTP dates (Date, Retry-After).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"

namespace cakewalk {

using SysTime = std::chrono::system_clock::time_point;

// "2026-12-04T17:29:08Z" (UTC, whole seconds).
std::string FormatRfc3339(SysTime t);
// Accepts "YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)", and Jira's "±HHMM" offsets.
Result<SysTime> ParseRfc3339(std::string_view text);
// IMF-fixdate ("Fri, 04 Dec 2026 17:29:08 GMT"), as servers send in Date and Retry-After.
Result<SysTime> ParseHttpDate(std::string_view text);
std::string FormatHttpDate(SysTime t);
// Retry-After: delta-seconds or an HTTP date (relative to `now`); never negative, capped at
// `cap`. nullopt when the value is malformed.
std::optional<std::chrono::seconds> ParseRetryAfter(std::string_view value, SysTime now,
                                                    std::chrono::seconds cap);

// `to - from` in whole seconds (towards zero), for any two SysTimes. Subtracting the time points
// directly overflows when they lie far apart: a certificate's notAfter of 9999 or notBefore before
// 1678 is clamped to SysTime::max()/min(), and those differ from now by more than int64
// nanoseconds hold.
std::chrono::seconds SecondsBetween(SysTime from, SysTime to);

}  // namespace cakewalk
