#include "systemd/event_loop.h"

#include <signal.h>
#include <sys/eventfd.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/c_free.h"

namespace cakewalk::sd {

namespace internal {

// The cross-thread part of the loop: a queue of functions and a pending stop request, and an
// eventfd that wakes the loop. Shared with every LoopHandle, so it outlives the loop; after
// Close() it accepts nothing.
class PostQueue {
 public:
  explicit PostQueue(int fd) : fd_(fd) {}
  ~PostQueue() { ::close(fd_); }
  PostQueue(const PostQueue&) = delete;
  PostQueue& operator=(const PostQueue&) = delete;

  int fd() const noexcept { return fd_; }

  bool Post(std::function<void()> fn) {
    {
      std::lock_guard lock(mu_);
      if (closed_) return false;
      fns_.push_back(std::move(fn));
    }
    Wake();
    return true;
  }

  void RequestStop(Status why) {
    {
      std::lock_guard lock(mu_);
      if (closed_ || stop_) return;
      stop_ = std::move(why);
    }
    Wake();
  }

  struct Batch {
    std::deque<std::function<void()>> fns;
    std::optional<Status> stop;
  };

  // Loop thread: everything queued so far.
  Batch Take() {
    uint64_t counter = 0;
    (void)!::read(fd_, &counter, sizeof counter);  // resets the eventfd; EAGAIN when empty
    Batch batch;
    std::lock_guard lock(mu_);
    batch.fns.swap(fns_);
    batch.stop = std::exchange(stop_, std::nullopt);
    return batch;
  }

  // Refuses further posts; returns what was still queued (destroyed by the caller, outside the
  // lock, because destroying a function may post again, e.g. a dropped Reply).
  std::deque<std::function<void()>> Close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    stop_.reset();
    return std::exchange(fns_, {});
  }

 private:
  void Wake() {
    const uint64_t one = 1;
    (void)!::write(fd_, &one, sizeof one);
  }

  const int fd_;
  std::mutex mu_;
  bool closed_ = false;
  std::deque<std::function<void()>> fns_;
  std::optional<Status> stop_;
};

}  // namespace internal

namespace {

using EventSource = CPtr<sd_event_source, sd_event_source_disable_unref>;

std::string_view SignalName(int sig) {
  switch (sig) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGHUP:
      return "SIGHUP";
    default:
      return "signal";
  }
}

uint64_t ToUsec(std::chrono::microseconds d) {
  return d.count() > 0 ? static_cast<uint64_t>(d.count()) : 1u;
}

// How late sd-event may fire a timer (it coalesces wake-ups): 5% of the period, instead of its
// 250 ms default, which would be most of a short watchdog interval.
uint64_t Accuracy(std::chrono::microseconds period) { return ToUsec(period) / 20 + 1; }

}  // namespace

std::string_view ReasonName(LoopExit::Reason reason) noexcept {
  switch (reason) {
    case LoopExit::Reason::kSignal:
      return "signal";
    case LoopExit::Reason::kBusDisconnected:
      return "bus-disconnected";
    case LoopExit::Reason::kStopRequested:
      return "stop-requested";
    case LoopExit::Reason::kFailed:
      return "failed";
  }
  return "unknown";
}

bool LoopHandle::Post(std::function<void()> fn) const {
  if (!q_) return false;
  try {
    return q_->Post(std::move(fn));
  } catch (...) {
    return false;  // allocation failure: the caller learns the function will not run
  }
}

void LoopHandle::RequestStop(Status why) const {
  if (!q_) return;
  try {
    q_->RequestStop(std::move(why));
  } catch (...) {
  }
}

struct EventLoop::Impl {
  struct Periodic {
    EventLoop* loop = nullptr;
    std::chrono::microseconds period{};
    std::function<void()> fn;
    EventSource source;
  };

  std::thread::id loop_thread = std::this_thread::get_id();
  std::vector<EventSource> sources;
  std::list<Periodic> periodic;  // std::list: the sources keep pointers to the elements
  std::function<Status()> reload;
  std::function<bool()> watchdog_check;
  bool watchdog_unhealthy = false;
  std::optional<LoopExit> exit;
  bool ran = false;
};

EventLoop::EventLoop(Notifier notifier, LogSink& log)
    : notifier_(std::move(notifier)), log_(log), impl_(std::make_unique<Impl>()) {}

EventLoop::~EventLoop() {
  if (queue_) {
    auto leftovers = queue_->Close();
    leftovers.clear();  // may post to the closed queue; that is refused
  }
  impl_->periodic.clear();
  impl_->sources.clear();
  if (event_ != nullptr) sd_event_unref(event_);
}

Result<std::unique_ptr<EventLoop>> EventLoop::Create(Notifier notifier, LogSink& log,
                                                     Options options) {
  std::unique_ptr<EventLoop> loop(new EventLoop(std::move(notifier), log));
  CW_RETURN_IF_ERROR(loop->Init(options));
  return loop;
}

Status EventLoop::Init(const Options& options) {
  int r = sd_event_new(&event_);
  if (r < 0) return Internal(std::string("sd_event_new: ") + std::strerror(-r));

  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return Internal(std::string("eventfd: ") + std::strerror(errno));
  queue_ = std::make_shared<internal::PostQueue>(fd);

  auto on_post = [](sd_event_source*, int, uint32_t, void* userdata) noexcept -> int {
    auto* self = static_cast<EventLoop*>(userdata);
    internal::PostQueue::Batch batch = self->queue_->Take();
    for (auto& fn : batch.fns) {
      try {
        fn();
      } catch (const std::exception& e) {
        self->Exit({LoopExit::Reason::kFailed, 0,
                    Internal(std::string("a function posted to the loop threw: ") + e.what())});
      } catch (...) {
        self->Exit({LoopExit::Reason::kFailed, 0, Internal("a function posted to the loop threw")});
      }
    }
    if (batch.stop) self->Exit({LoopExit::Reason::kStopRequested, 0, std::move(*batch.stop)});
    return 0;
  };
  sd_event_source* s = nullptr;
  r = sd_event_add_io(event_, &s, queue_->fd(), EPOLLIN, on_post, this);
  if (r < 0) return Internal(std::string("sd_event_add_io: ") + std::strerror(-r));
  impl_->sources.emplace_back(s);

  if (options.handle_signals) {
    auto on_signal = [](sd_event_source*, const signalfd_siginfo* si,
                        void* userdata) noexcept -> int {
      auto* self = static_cast<EventLoop*>(userdata);
      const int sig = static_cast<int>(si->ssi_signo);
      if (sig == SIGHUP) {
        self->Reload().IgnoreError();  // logged by Reload
        return 0;
      }
      const std::string text = "Stopping (" + std::string(SignalName(sig)) + ")";
      self->notifier_.Stopping(text).IgnoreError();
      self->log_.Log(Severity::kInfo, event::kAgentLifecycle,
                     "stopping: " + std::string(SignalName(sig)) + " received",
                     {{"SIGNAL", std::string(SignalName(sig))}});
      self->Exit({LoopExit::Reason::kSignal, sig, Status::Ok()});
      return 0;
    };
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
      // SD_EVENT_SIGNAL_PROCMASK blocks the signal in this thread (see the threading contract).
      r = sd_event_add_signal(event_, &s, sig | SD_EVENT_SIGNAL_PROCMASK, on_signal, this);
      if (r < 0) {
        return Internal("cannot handle " + std::string(SignalName(sig)) + ": " + std::strerror(-r));
      }
      impl_->sources.emplace_back(s);
    }
  }

  if (auto interval = notifier_.watchdog_ping_interval()) {
    auto on_watchdog = [](sd_event_source* src, uint64_t, void* userdata) noexcept -> int {
      auto* self = static_cast<EventLoop*>(userdata);
      bool healthy = true;
      if (self->impl_->watchdog_check) {
        try {
          healthy = self->impl_->watchdog_check();
        } catch (...) {
          healthy = false;
        }
      }
      if (healthy) {
        self->notifier_.WatchdogPing().IgnoreError();
        if (self->impl_->watchdog_unhealthy) {
          self->log_.Log(Severity::kNotice, event::kAgentLifecycle,
                         "health check passes again; watchdog pings resumed");
        }
      } else if (!self->impl_->watchdog_unhealthy) {
        self->log_.Log(Severity::kError, event::kAgentLifecycle,
                       "health check failed; watchdog pings withheld, systemd will restart the "
                       "agent unless it recovers");
      }
      self->impl_->watchdog_unhealthy = !healthy;
      uint64_t now = 0;
      sd_event_now(sd_event_source_get_event(src), CLOCK_MONOTONIC, &now);
      const auto next = self->notifier_.watchdog_ping_interval().value_or(std::chrono::seconds(1));
      sd_event_source_set_time(src, now + ToUsec(next));
      sd_event_source_set_enabled(src, SD_EVENT_ONESHOT);
      return 0;
    };
    r = sd_event_add_time_relative(event_, &s, CLOCK_MONOTONIC, ToUsec(*interval),
                                   Accuracy(*interval), on_watchdog, this);
    if (r < 0) return Internal(std::string("cannot arm the watchdog timer: ") + std::strerror(-r));
    impl_->sources.emplace_back(s);
  }
  return Status::Ok();
}

void EventLoop::SetReloadHandler(std::function<Status()> handler) {
  impl_->reload = std::move(handler);
}

void EventLoop::SetWatchdogCheck(std::function<bool()> check) {
  impl_->watchdog_check = std::move(check);
}

Status EventLoop::AddPeriodic(std::chrono::microseconds period, std::function<void()> fn) {
  if (period.count() <= 0) return InvalidArgument("a periodic callback needs a positive period");
  if (!fn) return InvalidArgument("a periodic callback needs a function");
  Impl::Periodic& p = impl_->periodic.emplace_back();
  p.loop = this;
  p.period = period;
  p.fn = std::move(fn);
  auto on_time = [](sd_event_source* src, uint64_t, void* userdata) noexcept -> int {
    auto* per = static_cast<Impl::Periodic*>(userdata);
    try {
      per->fn();
    } catch (const std::exception& e) {
      per->loop->Exit({LoopExit::Reason::kFailed, 0,
                       Internal(std::string("a periodic callback threw: ") + e.what())});
    } catch (...) {
      per->loop->Exit({LoopExit::Reason::kFailed, 0, Internal("a periodic callback threw")});
    }
    uint64_t now = 0;
    sd_event_now(sd_event_source_get_event(src), CLOCK_MONOTONIC, &now);
    sd_event_source_set_time(src, now + ToUsec(per->period));
    sd_event_source_set_enabled(src, SD_EVENT_ONESHOT);
    return 0;
  };
  sd_event_source* s = nullptr;
  const int r = sd_event_add_time_relative(event_, &s, CLOCK_MONOTONIC, ToUsec(period),
                                           Accuracy(period), on_time, &p);
  if (r < 0) {
    impl_->periodic.pop_back();
    return Internal(std::string("cannot add a timer: ") + std::strerror(-r));
  }
  p.source.reset(s);
  return Status::Ok();
}

Status EventLoop::Reload() {
  if (!impl_->reload) return FailedPrecondition("this agent cannot reload its configuration");
  notifier_.Reloading().IgnoreError();
  Status st;
  try {
    st = impl_->reload();
  } catch (const std::exception& e) {
    st = Internal(std::string("reload threw: ") + e.what());
  } catch (...) {
    st = Internal("reload threw");
  }
  // READY=1 ends the reload either way: on failure the previous configuration keeps running.
  notifier_.Ready().IgnoreError();
  if (st.ok()) {
    log_.Log(Severity::kInfo, event::kConfig, "configuration reloaded");
  } else {
    log_.Log(Severity::kError, event::kConfig,
             "reload failed; the previous configuration stays in effect: " + st.message(),
             {{"ERROR_CODE", std::string(CodeName(st.code()))}});
  }
  return st;
}

LoopExit EventLoop::Run() {
  if (!InLoopThread()) {
    return {LoopExit::Reason::kFailed, 0,
            FailedPrecondition("EventLoop::Run called on a thread other than its creator")};
  }
  if (impl_->ran) return {LoopExit::Reason::kFailed, 0, FailedPrecondition("Run called twice")};
  impl_->ran = true;
  const int r = sd_event_loop(event_);
  if (impl_->exit) return *impl_->exit;
  if (r < 0) {
    return {LoopExit::Reason::kFailed, 0,
            Internal(std::string("event loop failed: ") + std::strerror(-r))};
  }
  return {LoopExit::Reason::kFailed, 0,
          Internal("event loop ended with code " + std::to_string(r) + " for no recorded reason")};
}

void EventLoop::Exit(LoopExit why) {
  if (!impl_->exit) impl_->exit = std::move(why);
  sd_event_exit(event_, 0);
}

bool EventLoop::InLoopThread() const noexcept {
  return std::this_thread::get_id() == impl_->loop_thread;
}

}  // namespace cakewalk::sd
