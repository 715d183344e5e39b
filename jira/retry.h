// Waiting and retrying, with time as a dependency so that tests never sleep for real.
//
// Jira throttles with 429 (and sometimes 503), telling how long to wait in Retry-After (seconds or
// an HTTP date) or, on Cloud, X-RateLimit-Reset ("yyyy-MM-ddTHH:mmZ"). RetryPolicy bounds how
// often and how long a call is retried; without a server hint the wait is exponential with full
// jitter. Every wait is interruptible by a std::stop_token.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <stop_token>

#include "base/clock.h"
#include "base/status.h"
#include "jira/http.h"

namespace cakewalk::jira {

class Sleeper {
 public:
  virtual ~Sleeper() = default;
  // Waits `duration`; returns early with Stopped() (reason "stopped") once `stop` is requested.
  virtual Status Sleep(std::chrono::milliseconds duration, std::stop_token stop) = 0;
};

// Real waiting on a condition variable that the stop token wakes.
Sleeper& RealSleeper() noexcept;

struct RetryPolicy {
  int max_attempts = 6;                                    // including the first
  std::chrono::milliseconds max_total{120'000};            // waiting, summed over one call
  std::chrono::milliseconds initial{1000};                 // jitter bound of the first retry
  std::chrono::milliseconds cap{30'000};                   // jitter bound never grows past this
  std::chrono::milliseconds max_server_wait{15 * 60'000};  // longer server hints are capped
};

// The full-jitter bound before retry `retry` (1 for the first): min(cap, initial * 2^(retry-1)).
std::chrono::milliseconds JitterBound(const RetryPolicy& policy, int retry);

// How long the server asked us to wait, from Retry-After, else X-RateLimit-Reset (relative to
// `now`, the server's idea of the time when it sent a Date). nullopt when it said nothing
// usable. "Retry-After: 0" is a hint of zero.
std::optional<std::chrono::milliseconds> ServerRetryHint(const http::Response& response,
                                                         SysTime now);

// A uniformly distributed value in [0, 1).
using RandomUnit = std::function<double()>;
RandomUnit DefaultRandom();

}  // namespace cakewalk::jira
