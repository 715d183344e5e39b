#include "base/log.h"

#include <unistd.h>

namespace cakewalk {

std::string_view SeverityName(Severity s) noexcept {
  switch (s) {
    case Severity::kDebug:
      return "debug";
    case Severity::kInfo:
      return "info";
    case Severity::kNotice:
      return "notice";
    case Severity::kWarning:
      return "warning";
    case Severity::kError:
      return "error";
    case Severity::kCritical:
      return "critical";
  }
  return "unknown";
}

void StderrLogSink::Write(Severity severity, std::string_view /*message_id*/,
                          std::string_view message, std::span<const LogField> fields) noexcept {
  if (severity < min_) return;
  try {
    std::string line = "cakewalk-agent: ";
    line += SeverityName(severity);
    line += ": ";
    line += message;
    if (!fields.empty()) {
      line += " [";
      bool first = true;
      for (const LogField& f : fields) {
        if (!first) line += ' ';
        first = false;
        line += f.name;
        line += '=';
        line += f.value;
      }
      line += ']';
    }
    line += '\n';
    std::lock_guard lock(mu_);
    (void)!::write(STDERR_FILENO, line.data(), line.size());
  } catch (...) {
    // Logging must never take the process down.
  }
}

}  // namespace cakewalk
