#include "systemd/notify.h"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace cakewalk::sd {
namespace {

// A status line must not carry a newline: the protocol is newline-separated assignments, so a
// newline in the text would let it inject READY=1, STOPPING=1 and the like.
std::string OneLine(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c == '\n' || c == '\r' || c == '\0') c = ' ';
  }
  return out;
}

uint64_t MonotonicUsec() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

}  // namespace

Notifier Notifier::FromEnvironment() {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  const bool enabled = socket != nullptr && socket[0] != '\0';
  std::optional<std::chrono::microseconds> watchdog;
  uint64_t usec = 0;
  // Returns > 0 only when WATCHDOG_USEC is valid and WATCHDOG_PID is unset or names us.
  if (enabled && sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    watchdog = std::chrono::microseconds(static_cast<int64_t>(usec));
  }
  return Notifier(enabled, watchdog);
}

std::optional<std::chrono::microseconds> Notifier::watchdog_ping_interval() const noexcept {
  if (!watchdog_timeout_) return std::nullopt;
  return *watchdog_timeout_ / 2;
}

std::string Notifier::Message(std::string_view assignment, std::string_view status_text) {
  std::string m(assignment);
  if (!status_text.empty()) {
    if (!m.empty()) m += '\n';
    m += "STATUS=";
    m += OneLine(status_text);
  }
  return m;
}

Status Notifier::Send(const std::string& message) const {
  if (!enabled_ || message.empty()) return Status::Ok();
  const int r = sd_notify(0, message.c_str());
  if (r < 0) {
    return Unavailable(std::string("cannot notify the service manager: ") + std::strerror(-r));
  }
  return Status::Ok();
}

Status Notifier::Ready(std::string_view status_text) const {
  return Send(Message("READY=1", status_text));
}

Status Notifier::SetStatus(std::string_view status_text) const {
  return Send(Message("", status_text));
}

Status Notifier::Reloading(std::string_view status_text) const {
  return Send(
      Message("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(MonotonicUsec()), status_text));
}

Status Notifier::Stopping(std::string_view status_text) const {
  return Send(Message("STOPPING=1", status_text));
}

Status Notifier::WatchdogPing() const { return Send("WATCHDOG=1"); }

Status Notifier::ExtendTimeout(std::chrono::microseconds extra) const {
  if (extra.count() <= 0) return InvalidArgument("timeout extension must be positive");
  return Send("EXTEND_TIMEOUT_USEC=" + std::to_string(extra.count()));
}

}  // namespace cakewalk::sd
