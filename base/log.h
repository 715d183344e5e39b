// Structured log and audit events. Library folders (hsm/, jira/) return statuses and do not log,
// except audit events, which go to the LogSink they are handed. agent/ and systemd/ decide what
// to log. systemd/ provides a journald sink (MESSAGE_ID and fields); StderrLogSink is the
// fallback when there is no journal.
//
// Never put a secret, a one-time code or a PIN into a message or a field: SecretBytes has no
// conversion to string, so doing so takes a visible SecretAccess::Grant().
#pragma once

#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cakewalk {

enum class Severity { kDebug, kInfo, kNotice, kWarning, kError, kCritical };

std::string_view SeverityName(Severity s) noexcept;

// One structured field; names follow journald rules (upper case, digits, underscore).
struct LogField {
  std::string name;
  std::string value;
};

class LogSink {
 public:
  virtual ~LogSink() = default;
  virtual void Write(Severity severity, std::string_view message_id, std::string_view message,
                     std::span<const LogField> fields) noexcept = 0;

  void Log(Severity severity, std::string_view message_id, std::string_view message,
           std::initializer_list<LogField> fields = {}) noexcept {
    Write(severity, message_id, message, std::span(fields.begin(), fields.size()));
  }
};

// "cakewalk-agent: <severity>: message [FIELD=value ...]" lines on standard error.
class StderrLogSink final : public LogSink {
 public:
  explicit StderrLogSink(Severity min_severity = Severity::kInfo) : min_(min_severity) {}
  void Write(Severity severity, std::string_view message_id, std::string_view message,
             std::span<const LogField> fields) noexcept override;

 private:
  Severity min_;
  std::mutex mu_;
};

// Drops everything (for commands whose output must stay clean).
class NullLogSink final : public LogSink {
 public:
  void Write(Severity, std::string_view, std::string_view,
             std::span<const LogField>) noexcept override {}
};

// journald MESSAGE_IDs, one per event type (`journalctl MESSAGE_ID=...`).
namespace event {
inline constexpr std::string_view kSecretUsed = "dfcb72c220285147f29c20e55e94865e";
inline constexpr std::string_view kSecretStored = "9c9469e1ddb5c98c5f55a87adbcf9d56";
inline constexpr std::string_view kSecretRotation = "fd496ec636c1716346c27419e67fd74a";
inline constexpr std::string_view kTokenSession = "82199b7c079ff167d7ceec54949752d1";
inline constexpr std::string_view kJobReceived = "8f64a86d395da33f07fd54b4db7dae5f";
inline constexpr std::string_view kJobRejected = "5c6c41b246c75efdbc50e0c5abc8cd57";
inline constexpr std::string_view kJobStarted = "840aaad8a705d3c047f2d8402652af41";
inline constexpr std::string_view kJobFinished = "fc4f1854a1e006ae29caad5ea545e8f1";
inline constexpr std::string_view kJobReported = "b910cbf7fc1d5a45369f41e3cf80a15e";
inline constexpr std::string_view kLeaseLost = "003c9d3443c4facc48525a5687b2c19b";
inline constexpr std::string_view kControlPlane = "37ba097e3f4ebe3c65f89c0302c5d77a";
inline constexpr std::string_view kJira = "0ebd633f994ccd0a43f804d80274cee0";
inline constexpr std::string_view kAgentLifecycle = "7b50643a2ef938faeaec7330258889a0";
inline constexpr std::string_view kConfig = "189adc62d0d9a49a56badbc8aae275cf";
inline constexpr std::string_view kCertificate = "298c8276871915ce34e22210deb4bf56";
inline constexpr std::string_view kSyncProgress = "c0dff79459927b19bec12d916e9f4442";
}  // namespace event

}  // namespace cakewalk
