// The service-manager notification channel (sd_notify): readiness, status text, reload and stop
// announcements, watchdog pings.
//
// With Type=notify and NotifyAccess=main, systemd accepts these messages only from the main
// process, so only the process that `systemd` started (cakewalk-agent run) may use a Notifier;
// processes it spawns must not. Every method is a no-op when NOTIFY_SOCKET is unset (the agent
// run by hand, or in tests), and every method is thread-safe.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"

namespace cakewalk::sd {

class Notifier {
 public:
  // Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID once.
  static Notifier FromEnvironment();

  // True when a service manager listens (NOTIFY_SOCKET is set).
  bool enabled() const noexcept { return enabled_; }

  // WATCHDOG_USEC when the watchdog is on for this process (WATCHDOG_PID unset or equal to our
  // PID, as sd_watchdog_enabled decides); nullopt otherwise.
  std::optional<std::chrono::microseconds> watchdog_timeout() const noexcept {
    return watchdog_timeout_;
  }
  // How often to ping: half of the watchdog timeout, so one late ping is not yet fatal.
  std::optional<std::chrono::microseconds> watchdog_ping_interval() const noexcept;

  // READY=1 (+ STATUS=). Send only when the agent can do its work: configuration valid, token
  // session open, bus name owned. Also ends a reload.
  Status Ready(std::string_view status_text = {}) const;
  // STATUS=<text>: one human line shown by `systemctl status`. Newlines become spaces.
  Status SetStatus(std::string_view status_text) const;
  // RELOADING=1 + MONOTONIC_USEC (which systemd >= 253 wants with it; 252 ignores it). Must be
  // followed by Ready() when the reload is done.
  Status Reloading(std::string_view status_text = {}) const;
  // STOPPING=1 (+ STATUS=), as soon as shutdown begins.
  Status Stopping(std::string_view status_text = {}) const;
  // WATCHDOG=1.
  Status WatchdogPing() const;
  // EXTEND_TIMEOUT_USEC: asks for more time for the current start, reload or stop (e.g. a slow
  // token login), counted from now.
  Status ExtendTimeout(std::chrono::microseconds extra) const;

  // The message a call would send (for tests and diagnostics).
  static std::string Message(std::string_view assignment, std::string_view status_text);

 private:
  Notifier(bool enabled, std::optional<std::chrono::microseconds> watchdog)
      : enabled_(enabled), watchdog_timeout_(watchdog) {}
  Status Send(const std::string& message) const;

  bool enabled_ = false;
  std::optional<std::chrono::microseconds> watchdog_timeout_;
};

}  // namespace cakewalk::sd
