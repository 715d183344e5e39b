// Time as a dependency, so that tests can move it (TOTP windows, leases, certificate renewal).
#pragma once

#include <chrono>

namespace cakewalk {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time (UTC), for anything compared with other machines.
  virtual std::chrono::system_clock::time_point Now() const = 0;
  // Monotonic time, for timeouts and intervals.
  virtual std::chrono::steady_clock::time_point Steady() const = 0;
};

// The real clocks.
Clock& SystemClock() noexcept;

}  // namespace cakewalk
