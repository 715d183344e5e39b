#include "jira/retry.h"

#include <condition_variable>
#include <mutex>

#include "base/random.h"
#include "base/time.h"
#include "jira/errors.h"

namespace cakewalk::jira {
namespace {

class RealSleeperImpl final : public Sleeper {
 public:
  Status Sleep(std::chrono::milliseconds duration, std::stop_token stop) override {
    if (stop.stop_requested()) return Stopped();
    if (duration <= std::chrono::milliseconds::zero()) return Status::Ok();
    std::mutex mu;
    std::condition_variable_any cv;
    std::unique_lock lock(mu);
    cv.wait_for(lock, stop, duration, [] { return false; });
    return stop.stop_requested() ? Stopped() : Status::Ok();
  }
};

// Cloud's X-RateLimit-Reset: "2026-03-02T10:15Z" (minutes), tolerating seconds and offsets.
std::optional<SysTime> ParseReset(std::string_view text) {
  if (text.size() == 17 && text[16] == 'Z' && text[10] == 'T' && text[13] == ':') {
    std::string with_seconds(text.substr(0, 16));
    with_seconds += ":00Z";
    auto t = ParseRfc3339(with_seconds);
    if (t.ok()) return *t;
    return std::nullopt;
  }
  auto t = ParseRfc3339(text);
  if (t.ok()) return *t;
  return std::nullopt;
}

}  // namespace

Sleeper& RealSleeper() noexcept {
  static RealSleeperImpl sleeper;
  return sleeper;
}

std::chrono::milliseconds JitterBound(const RetryPolicy& policy, int retry) {
  std::chrono::milliseconds bound = policy.initial;
  for (int i = 1; i < retry && bound < policy.cap; ++i) bound *= 2;
  return std::min(bound, policy.cap);
}

std::optional<std::chrono::milliseconds> ServerRetryHint(const http::Response& response,
                                                         SysTime now) {
  constexpr std::chrono::seconds kCap{24 * 3600};
  if (auto ra = response.Header("retry-after")) {
    if (auto s = ParseRetryAfter(*ra, now, kCap)) {
      return std::chrono::duration_cast<std::chrono::milliseconds>(*s);
    }
  }
  if (auto reset = response.Header("x-ratelimit-reset")) {
    if (auto when = ParseReset(*reset)) {
      // Compared first: a reset far in the past is too far from now for nanoseconds.
      if (*when <= now) return std::chrono::milliseconds::zero();
      const auto wait = std::chrono::ceil<std::chrono::milliseconds>(*when - now);
      return std::max(wait, std::chrono::milliseconds::zero());
    }
  }
  return std::nullopt;
}

RandomUnit DefaultRandom() { return SharedUniformUnit; }

}  // namespace cakewalk::jira
