// Timestamps and wait hints from servers (base/time.h, jira/retry.h): RFC 3339 (control plane,
// Jira), HTTP dates (Date, Retry-After), Retry-After in both forms, Cloud's X-RateLimit-Reset.
//
// Input: the whole text is tried as each timestamp form; its first line is also a Retry-After
// value and its second line an X-RateLimit-Reset value for ServerRetryHint.
// Properties: what is accepted formats and parses back to the same second; waits are never
// negative and never above their cap.
#include <chrono>
#include <string>

#include "base/time.h"
#include "jira/http.h"
#include "jira/retry.h"
#include "tests/fuzz/fuzz_support.h"

using cakewalk::fuzz::FuzzCheck;
using std::chrono::seconds;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text = cakewalk::fuzz::AsText(data, size);
  const cakewalk::SysTime now{seconds(1764850000)};

  if (auto t = cakewalk::ParseRfc3339(text); t.ok()) {
    auto again = cakewalk::ParseRfc3339(cakewalk::FormatRfc3339(*t));
    FuzzCheck(again.ok(), "a parsed RFC 3339 time formats into a parsable one");
    FuzzCheck(std::chrono::floor<seconds>(*again) == std::chrono::floor<seconds>(*t),
              "RFC 3339 round trip keeps the second");
  }
  if (auto t = cakewalk::ParseHttpDate(text); t.ok()) {
    auto again = cakewalk::ParseHttpDate(cakewalk::FormatHttpDate(*t));
    FuzzCheck(again.ok() && *again == *t, "HTTP date round trip");
  }
  const seconds cap{15 * 60};
  if (auto wait = cakewalk::ParseRetryAfter(text, now, cap)) {
    FuzzCheck(*wait >= seconds(0) && *wait <= cap, "Retry-After within [0, cap]");
  }

  std::string_view rest = text;
  const std::string_view retry_after = cakewalk::fuzz::TakeLine(rest);
  const std::string_view reset = cakewalk::fuzz::TakeLine(rest);
  cakewalk::http::Response response;
  response.status = 429;
  response.headers.push_back({"retry-after", std::string(retry_after)});
  response.headers.push_back({"x-ratelimit-reset", std::string(reset)});
  if (auto hint = cakewalk::jira::ServerRetryHint(response, now)) {
    FuzzCheck(*hint >= std::chrono::milliseconds(0), "a retry hint is never negative");
  }
  response.headers.erase(response.headers.begin());
  if (auto hint = cakewalk::jira::ServerRetryHint(response, now)) {
    FuzzCheck(*hint >= std::chrono::milliseconds(0), "a reset hint is never negative");
  }
  return 0;
}
