// cakewalk-agent for crash tests: the same command line code as the shipped binary (RunCli), with
// one fault point armed. CAKEWALK_TEST_CRASH_AT names the point (base/fault_point.h); when the
// process reaches it, it kills itself with SIGKILL — exactly "kill -9 between two steps", at a
// deterministic place. This program is built only under tests/ and never installed: the shipped
// binary has no code that installs a fault hook, so no configuration, environment variable or
// argument can arm one there.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "agent/cli.h"
#include "base/fault_point.h"
#include "base/process.h"
#include "jira/curl_transport.h"

namespace {

std::string g_crash_at;

void CrashAt(std::string_view point) noexcept {
  if (point != g_crash_at) return;
  // One line for the test's log, then the kill -9 (no destructors, no atexit, no flush beyond
  // what is already written).
  std::fprintf(stderr, "fault_agent: SIGKILL at %.*s\n", static_cast<int>(point.size()),
               point.data());
  std::fflush(nullptr);
  ::raise(SIGKILL);
}

}  // namespace

int main(int argc, char** argv) {
  if (cakewalk::Status s = cakewalk::HardenProcess(); !s.ok()) {
    std::cerr << "fault_agent: " << s.message() << "\n";
    return 1;
  }
  if (cakewalk::Status s = cakewalk::http::GlobalInit(); !s.ok()) {
    std::cerr << "fault_agent: " << s.message() << "\n";
    return 1;
  }
  if (const char* at = std::getenv("CAKEWALK_TEST_CRASH_AT"); at != nullptr && *at != '\0') {
    g_crash_at = at;
    cakewalk::SetFaultHookForTesting(&CrashAt);
  }
  std::vector<std::string> args(argv + 1, argv + argc);
  return cakewalk::agent::RunCli(args, {std::cout, std::cerr});
}
