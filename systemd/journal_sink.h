// Structured logging to the systemd journal, and the choice between journal and standard error.
//
// Each entry carries MESSAGE, MESSAGE_ID (the event ids of base/log.h), PRIORITY,
// SYSLOG_IDENTIFIER=cakewalk-agent and every LogField as its own journal field, so operators can
// filter with `journalctl MESSAGE_ID=<id>` or `journalctl CONNECTION=jira-prod`.
#pragma once

#include <sys/uio.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/log.h"

namespace cakewalk::sd {

inline constexpr std::string_view kSyslogIdentifier = "cakewalk-agent";
// Where journald listens for native-protocol datagrams.
inline constexpr std::string_view kJournalSocket = "/run/systemd/journal/socket";

// syslog priority (0 emerg .. 7 debug) for a severity.
int JournalPriority(Severity severity) noexcept;

// A valid journal field name for `name`: upper-case letters, digits and underscores, at most 64
// characters, not starting with a digit or an underscore (journald reserves a leading
// underscore for fields it sets itself, and drops such fields from clients). Lower-case letters
// are upper-cased and other characters become '_'; a name that would start with a digit or an
// underscore, is empty, or would collide with a field the sink sets itself (MESSAGE,
// MESSAGE_ID, PRIORITY, SYSLOG_IDENTIFIER) gets the prefix "FIELD_".
std::string JournalFieldName(std::string_view name);
bool IsValidJournalFieldName(std::string_view name) noexcept;

// The "NAME=value" assignments of one entry, in order: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER,
// MESSAGE_ID (when not empty), then the fields with sanitized names.
std::vector<std::string> JournalAssignments(Severity severity, std::string_view message_id,
                                            std::string_view message,
                                            std::span<const LogField> fields,
                                            std::string_view identifier = kSyslogIdentifier);

class JournalLogSink final : public LogSink {
 public:
  // Sends one entry; returns 0 or a negative errno (sd_journal_sendv by default).
  using Sender = std::function<int(std::span<const iovec>)>;

  explicit JournalLogSink(Severity min_severity = Severity::kInfo);
  // For tests: a different sender.
  JournalLogSink(Severity min_severity, Sender sender);

  // Never throws. When the journal refuses an entry, the line goes to standard error instead
  // (which systemd also collects), so nothing is lost silently.
  void Write(Severity severity, std::string_view message_id, std::string_view message,
             std::span<const LogField> fields) noexcept override;

 private:
  Severity min_;
  Sender sender_;
  StderrLogSink fallback_;
};

enum class LogTarget { kAuto, kJournal, kStderr };

// True when standard error is a journal stream: JOURNAL_STREAM ("<dev>:<inode>", set by systemd
// for services whose output goes to the journal) names the file `stderr_fd` refers to.
bool IsJournalStream(const char* journal_stream, int stderr_fd) noexcept;

// kAuto picks the journal when the process runs as a systemd service logging to the journal
// (IsJournalStream on fd 2 and the journal socket exists), else standard error — so commands
// run from a shell print readable lines, and the daemon under systemd writes structured entries.
std::unique_ptr<LogSink> MakeLogSink(LogTarget target = LogTarget::kAuto,
                                     Severity min_severity = Severity::kInfo);
// The decision MakeLogSink(kAuto) takes, with its inputs spelled out (for tests).
bool ShouldUseJournal(const char* journal_stream, int stderr_fd,
                      const std::filesystem::path& journal_socket) noexcept;

}  // namespace cakewalk::sd
