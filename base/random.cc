#include "base/random.h"

#include <mutex>
#include <random>

namespace cakewalk {

double SharedUniformUnit() {
  static std::mutex mu;
  static std::mt19937_64 engine{std::random_device{}()};
  std::lock_guard lock(mu);
  return std::uniform_real_distribution<double>(0.0, 1.0)(engine);
}

}  // namespace cakewalk
