#include "base/fault_point.h"

#include <atomic>

namespace cakewalk {
namespace {
std::atomic<FaultHook> g_hook{nullptr};
}  // namespace

void SetFaultHookForTesting(FaultHook hook) noexcept { g_hook.store(hook); }

void FaultPoint(std::string_view point) noexcept {
  if (FaultHook hook = g_hook.load(std::memory_order_relaxed); hook != nullptr) hook(point);
}

}  // namespace cakewalk
