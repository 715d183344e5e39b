// The daemon's main loop: an sd-event loop that handles SIGTERM/SIGINT (stop) and SIGHUP
// (reload), pings the systemd watchdog, runs periodic callbacks, carries the D-Bus connection
// (BusService attaches to it) and runs work posted from other threads.
//
// Threading contract
// - Create the EventLoop on the main thread BEFORE starting any other thread. Create blocks
//   SIGTERM, SIGINT and SIGHUP in the calling thread; threads started afterwards inherit that
//   mask, so these signals are only ever consumed by the loop (a thread started earlier would
//   take SIGTERM with its default action and kill the process).
// - Run(), and every method marked "loop thread", must be called on the thread that created the
//   loop. Callbacks (reload handler, watchdog check, periodic callbacks, posted functions, and
//   all D-Bus handlers) run on that thread, one at a time; each must return quickly (well under
//   half of WatchdogSec), since a blocked loop stops the watchdog pings and systemd then kills
//   and restarts the agent. That is intended: a hung loop is a hung agent.
// - Other threads talk to the loop only through a LoopHandle (handle()): Post() and
//   RequestStop() are thread-safe and stay safe to call after the loop is gone (they then do
//   nothing and Post returns false). Worker threads must be joined before the objects their
//   posted functions refer to are destroyed; functions still queued when the loop is destroyed
//   are destroyed without running.
// - Destroy, on the loop thread, in reverse order of creation: BusService, then EventLoop.
//
// How `cakewalk-agent run` wires the systemd layer, in this order:
//   1. log = sd::MakeLogSink();                            journal under systemd, else stderr
//   2. loop = sd::EventLoop::Create(sd::Notifier::FromEnvironment(), *log);   before any thread
//   3. load the configuration (exit 78 on error); open the token session (exit 77 when the PIN
//      is wrong or the token refuses a login) — loop->notifier().SetStatus()/ExtendTimeout()
//      may report progress; then start the worker threads
//   4. bus = sd::BusService::Start(*loop, agent, {version});   OK means the bus name is owned
//   5. loop->SetReloadHandler([&] { return agent.Reload(); }); optionally SetWatchdogCheck and
//      AddPeriodic; workers publish with bus->SetProperties / EmitJobFinished
//   6. loop->notifier().Ready("...");                      only now: config, token and bus ready
//   7. exit = loop->Run();
//   8. Stopping() unless exit.reason is kSignal (it was sent already); stop and join the
//      workers; destroy bus, then loop
//   9. exit status: kSignal 0; kBusDisconnected 1 (Restart=on-failure restarts the agent);
//      kStopRequested from its status (77/78 must never be used for anything else); kFailed 1
// Watchdog pings come from the loop's own timer at half of WATCHDOG_USEC (not
// sd_event_set_watchdog, which pings at a random point between 1/2 and 3/4 and has no health
// check), and only while Run() runs; systemd arms the watchdog once READY=1 arrives.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string_view>

#include "base/log.h"
#include "base/status.h"
#include "systemd/notify.h"

struct sd_event;

namespace cakewalk::sd {

// Why Run() returned. The daemon turns this into its exit status (docs/operations.md):
// kSignal -> 0 (systemd asked it to stop); kBusDisconnected -> non-zero so that
// Restart=on-failure restarts it; kStopRequested -> from `status`; kFailed -> non-zero.
struct LoopExit {
  enum class Reason {
    kSignal,           // SIGTERM or SIGINT; STOPPING=1 was already sent
    kBusDisconnected,  // the system bus went away (dbus-daemon restarted or died)
    kStopRequested,    // RequestStop()/Exit() by the daemon itself
    kFailed,           // the loop itself failed, or a callback threw
  };
  Reason reason = Reason::kFailed;
  int signal = 0;  // kSignal: the signal number
  Status status;   // kStopRequested: the reason given (OK for a clean stop); otherwise what failed
};

std::string_view ReasonName(LoopExit::Reason reason) noexcept;

namespace internal {
class PostQueue;
}

// A copyable, thread-safe way to reach the loop from other threads.
class LoopHandle {
 public:
  LoopHandle() = default;
  // Queues `fn` to run on the loop thread. False when the loop is gone or has been destroyed.
  bool Post(std::function<void()> fn) const;
  // Makes Run() return LoopExit{kStopRequested, why}. The first stop reason wins.
  void RequestStop(Status why) const;

 private:
  friend class EventLoop;
  explicit LoopHandle(std::shared_ptr<internal::PostQueue> q) : q_(std::move(q)) {}
  std::shared_ptr<internal::PostQueue> q_;
};

class EventLoop {
 public:
  struct Options {
    // Handle SIGTERM/SIGINT/SIGHUP (the daemon: yes; tests that run several loops: maybe not).
    bool handle_signals = true;
  };

  // `log` must outlive the loop; it receives lifecycle events (event::kAgentLifecycle).
  static Result<std::unique_ptr<EventLoop>> Create(Notifier notifier, LogSink& log,
                                                   Options options);
  static Result<std::unique_ptr<EventLoop>> Create(Notifier notifier, LogSink& log) {
    return Create(std::move(notifier), log, Options{});
  }
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // --- loop thread ---

  // What a reload does (SIGHUP, or the D-Bus Reload method): the daemon passes
  // [&agent] { return agent.Reload(); }.
  void SetReloadHandler(std::function<Status()> handler);
  // Asked before every watchdog ping; returning false skips the ping (and is logged), so a
  // daemon whose workers are stuck gets restarted by systemd. Default: always healthy.
  void SetWatchdogCheck(std::function<bool()> check);
  // Runs `fn` every `period` (first run one period from now) until the loop ends.
  Status AddPeriodic(std::chrono::microseconds period, std::function<void()> fn);

  // RELOADING=1, the reload handler, then READY=1 (also when the handler fails: the previous
  // configuration keeps running). Returns the handler's status; FailedPrecondition when no
  // handler is set.
  Status Reload();

  // Runs until a stop signal, a stop request, a bus disconnect or a failure. Call once.
  LoopExit Run();
  // Ends Run() with `why` (the first reason recorded wins).
  void Exit(LoopExit why);

  // True on the thread that created the loop.
  bool InLoopThread() const noexcept;
  LoopHandle handle() const { return LoopHandle(queue_); }
  const Notifier& notifier() const noexcept { return notifier_; }
  LogSink& log() const noexcept { return log_; }
  // The underlying sd-event loop, for BusService (sd_bus_attach_event).
  sd_event* event() const noexcept { return event_; }

 private:
  struct Impl;
  EventLoop(Notifier notifier, LogSink& log);
  Status Init(const Options& options);

  Notifier notifier_;
  LogSink& log_;
  sd_event* event_ = nullptr;
  std::shared_ptr<internal::PostQueue> queue_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cakewalk::sd
