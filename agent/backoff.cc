#include "agent/backoff.h"

#include <algorithm>

#include "agent/control_plane.h"
#include "base/random.h"

namespace cakewalk::agent {

Failure ClassifyFailure(const Status& status) {
  const std::string& r = status.reason();
  if (r == cp_reason::kIdentityRejected) return Failure::kIdentityRejected;
  if (r == cp_reason::kRateLimited) return Failure::kRateLimited;
  if (r == cp_reason::kConflict) return Failure::kConflict;
  if (r == cp_reason::kRequestRejected) return Failure::kRequestRejected;
  return Failure::kTransient;
}

bool ShouldResetConnections(const Status& status) {
  // Anything that is not a well-formed HTTP error answer: the transport's reasons (connect, TLS,
  // timeout, reset, truncated body ...) and 2xx answers whose body was garbage.
  switch (ClassifyFailure(status)) {
    case Failure::kIdentityRejected:
    case Failure::kRateLimited:
    case Failure::kConflict:
    case Failure::kRequestRejected:
      return false;
    case Failure::kTransient:
      return true;
  }
  return true;
}

Backoff::Backoff() : random_(SharedUniformUnit) {}

Backoff::Backoff(Random random) : random_(std::move(random)) {}

std::chrono::milliseconds Backoff::UpperBound(int retry) {
  if (retry <= 1) return kBackoffInitial;
  // 2^6 s already exceeds the 60 s cap; stop doubling there so nothing overflows.
  const int doublings = std::min(retry - 1, 6);
  return std::min(kBackoffCap, kBackoffInitial * (std::int64_t{1} << doublings));
}

std::chrono::milliseconds Backoff::NextJitterDelay() {
  if (retries_ < 1000) ++retries_;
  const std::chrono::milliseconds bound = UpperBound(retries_);
  double u = random_();
  if (!(u >= 0.0)) u = 0.0;  // also catches NaN
  if (u > 1.0) u = 1.0;
  const auto jitter =
      std::chrono::milliseconds(static_cast<std::int64_t>(u * static_cast<double>(bound.count())));
  return std::clamp(jitter, kMinRetryDelay, bound);
}

std::chrono::milliseconds Backoff::NextDelay(const Status& failure) {
  switch (ClassifyFailure(failure)) {
    case Failure::kIdentityRejected:
      if (retries_ < 1000) ++retries_;
      return kIdentityRetryInterval;
    case Failure::kRateLimited:
      if (failure.retry_after().has_value()) {
        if (retries_ < 1000) ++retries_;
        return std::clamp(*failure.retry_after(), kMinRetryAfter, kRetryAfterCap);
      }
      return NextJitterDelay();
    case Failure::kConflict:
    case Failure::kRequestRejected:
    case Failure::kTransient:
      return NextJitterDelay();
  }
  return NextJitterDelay();
}

}  // namespace cakewalk::agent
