// Back-off for every loop that talks to the control plane (docs/protocol.md §2).
//
// - Transient failures (other 5xx, connection/TLS errors, timeouts, a 2xx whose body is not the
//   documented JSON): full jitter. Before retry n (n = 1 for the first) the wait is uniformly
//   random in [kMinRetryDelay, min(60 s, 1 s * 2^(n-1))]. The protocol says [0, bound]; the floor
//   of 100 ms is ours, so that no two attempts are ever closer than that, whatever the random
//   draw — it moves the mean by at most 50 ms.
// - 429 / 503 with Retry-After (Status::retry_after()): exactly that long, at least 1 s (a
//   "Retry-After: 0" repeated forever must not become a tight loop) and at most 15 minutes. The
//   exponential bound still advances, so a later failure without Retry-After keeps growing.
// - 401 / 403 (identity rejected): kIdentityRetryInterval (5 minutes) — slowly, and the caller
//   says so loudly.
// - Reset() after any success: the next failure starts again at the 1 s bound.
//
// Not thread-safe: each loop owns its own Backoff.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include "base/status.h"

namespace cakewalk::agent {

inline constexpr std::chrono::milliseconds kBackoffInitial{1000};
inline constexpr std::chrono::milliseconds kBackoffCap{60'000};
inline constexpr std::chrono::milliseconds kMinRetryDelay{100};
inline constexpr std::chrono::milliseconds kMinRetryAfter{1000};
inline constexpr std::chrono::milliseconds kRetryAfterCap{15 * 60'000};
inline constexpr std::chrono::milliseconds kIdentityRetryInterval{5 * 60'000};

// What kind of answer a failed control-plane call got (from Status::reason(), see
// agent/control_plane.h).
enum class Failure {
  kIdentityRejected,  // 401/403
  kRateLimited,       // 429/503
  kConflict,          // 409
  kRequestRejected,   // 400/404/422: do not send the same request again
  kTransient,         // other 5xx, bad 2xx bodies, no HTTP answer at all
};
Failure ClassifyFailure(const Status& status);
// True when the failure came from the connection itself (no HTTP answer, or garbage where JSON
// was due): the caller drops pooled connections before retrying.
bool ShouldResetConnections(const Status& status);

class Backoff {
 public:
  // Returns a uniformly distributed value in [0, 1). Tests pass a fixed sequence.
  using Random = std::function<double()>;

  Backoff();  // draws from SharedUniformUnit (base/random.h)
  explicit Backoff(Random random);

  // The wait before the next attempt after `failure`, and advances the schedule.
  std::chrono::milliseconds NextDelay(const Status& failure);
  // The next full-jitter wait (as for a transient failure).
  std::chrono::milliseconds NextJitterDelay();
  void Reset() noexcept { retries_ = 0; }
  // Retries since the last Reset().
  int retries() const noexcept { return retries_; }

  // min(kBackoffCap, kBackoffInitial * 2^(retry-1)) for retry >= 1.
  static std::chrono::milliseconds UpperBound(int retry);

 private:
  Random random_;
  int retries_ = 0;
};

}  // namespace cakewalk::agent
