#include "base/clock.h"

namespace cakewalk {
namespace {
class RealClock final : public Clock {
 public:
  std::chrono::system_clock::time_point Now() const override {
    return std::chrono::system_clock::now();
  }
  std::chrono::steady_clock::time_point Steady() const override {
    return std::chrono::steady_clock::now();
  }
};
}  // namespace

Clock& SystemClock() noexcept {
  static RealClock clock;
  return clock;
}

}  // namespace cakewalk
