// Test-only program: the daemon's lifecycle in miniature, for the sd_notify harness.
// Creates the EventLoop (signals, watchdog), sends READY=1 with a status, reloads on SIGHUP
// (the reload handler sets STATUS=reloaded <n>), stops on SIGTERM. Prints "RUNNING" on standard
// output once the loop's signal handling is in place.
//
//   notify_child [--unhealthy]    --unhealthy: the watchdog health check always fails
// Exit status: 0 after SIGTERM/SIGINT, 3 for any other loop exit, 2 when the loop cannot start.
#include <cstdio>
#include <cstring>
#include <string>

#include "base/log.h"
#include "systemd/event_loop.h"
#include "systemd/notify.h"

int main(int argc, char** argv) {
  using namespace cakewalk;
  const bool unhealthy = argc > 1 && std::strcmp(argv[1], "--unhealthy") == 0;
  StderrLogSink log;
  auto loop = sd::EventLoop::Create(sd::Notifier::FromEnvironment(), log);
  if (!loop.ok()) {
    std::fprintf(stderr, "notify_child: %s\n", loop.status().ToString().c_str());
    return 2;
  }
  sd::EventLoop& l = **loop;
  int reloads = 0;
  l.SetReloadHandler([&] {
    ++reloads;
    return l.notifier().SetStatus("reloaded " + std::to_string(reloads));
  });
  if (unhealthy) l.SetWatchdogCheck([] { return false; });
  l.notifier().Ready("Serving").IgnoreError();
  std::printf("RUNNING\n");
  std::fflush(stdout);
  const sd::LoopExit exit = l.Run();
  return exit.reason == sd::LoopExit::Reason::kSignal ? 0 : 3;
}
