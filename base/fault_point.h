// Fault points: named places in the code where a crash test may end the process, so that "killed
// between step k and step k+1" is deterministic instead of a race against a timer.
//
//   FaultPoint("rotation.jira-changed");   // a no-op unless a test program installed a hook
//
// Only a program's own code can install a hook (SetFaultHookForTesting). The cakewalk-agent binary
// never does: no configuration key, environment variable, argument or D-Bus call reaches it. Test
// programs (tests/rotation/fault_agent.cc) wrap the same command line code and install a hook that
// raises SIGKILL at a chosen point. The cost in production is one relaxed atomic load.
#pragma once

#include <string_view>

namespace cakewalk {

// Called with the point's name; it may end the process. Must not throw.
using FaultHook = void (*)(std::string_view point) noexcept;

// Installs `hook` for the whole process (nullptr removes it). For test programs only.
void SetFaultHookForTesting(FaultHook hook) noexcept;

// Calls the installed hook, if any, with `point`.
void FaultPoint(std::string_view point) noexcept;

}  // namespace cakewalk
