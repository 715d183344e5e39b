#include "systemd/journal_sink.h"

#include <sys/stat.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace cakewalk::sd {
namespace {

constexpr size_t kMaxFieldName = 64;
constexpr std::array<std::string_view, 4> kOwnFields = {"MESSAGE", "MESSAGE_ID", "PRIORITY",
                                                        "SYSLOG_IDENTIFIER"};

bool IsOwnField(std::string_view name) {
  for (std::string_view f : kOwnFields) {
    if (f == name) return true;
  }
  return false;
}

std::string Assignment(std::string_view name, std::string_view value) {
  std::string s;
  s.reserve(name.size() + 1 + value.size());
  s += name;
  s += '=';
  s += value;
  return s;
}

}  // namespace

int JournalPriority(Severity severity) noexcept {
  switch (severity) {
    case Severity::kDebug:
      return 7;
    case Severity::kInfo:
      return 6;
    case Severity::kNotice:
      return 5;
    case Severity::kWarning:
      return 4;
    case Severity::kError:
      return 3;
    case Severity::kCritical:
      return 2;
  }
  return 3;
}

bool IsValidJournalFieldName(std::string_view name) noexcept {
  if (name.empty() || name.size() > kMaxFieldName) return false;
  if (name[0] == '_' || (name[0] >= '0' && name[0] <= '9')) return false;
  for (char c : name) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

std::string JournalFieldName(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  for (char c : name) {
    if (c >= 'a' && c <= 'z') {
      out += static_cast<char>(c - 'a' + 'A');
    } else if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_') {
      out += c;
    } else {
      out += '_';
    }
  }
  if (out.empty() || out[0] == '_' || (out[0] >= '0' && out[0] <= '9') || IsOwnField(out)) {
    out.insert(0, "FIELD_");
  }
  if (out.size() > kMaxFieldName) out.resize(kMaxFieldName);
  return out;
}

std::vector<std::string> JournalAssignments(Severity severity, std::string_view message_id,
                                            std::string_view message,
                                            std::span<const LogField> fields,
                                            std::string_view identifier) {
  std::vector<std::string> out;
  out.reserve(4 + fields.size());
  out.push_back(Assignment("MESSAGE", message));
  out.push_back(Assignment("PRIORITY", std::to_string(JournalPriority(severity))));
  out.push_back(Assignment("SYSLOG_IDENTIFIER", identifier));
  if (!message_id.empty()) out.push_back(Assignment("MESSAGE_ID", message_id));
  for (const LogField& f : fields) out.push_back(Assignment(JournalFieldName(f.name), f.value));
  return out;
}

JournalLogSink::JournalLogSink(Severity min_severity)
    : JournalLogSink(min_severity, [](std::span<const iovec> iov) {
        return sd_journal_sendv(iov.data(), static_cast<int>(iov.size()));
      }) {}

JournalLogSink::JournalLogSink(Severity min_severity, Sender sender)
    : min_(min_severity), sender_(std::move(sender)), fallback_(min_severity) {}

void JournalLogSink::Write(Severity severity, std::string_view message_id, std::string_view message,
                           std::span<const LogField> fields) noexcept {
  if (severity < min_) return;
  int r = -EINVAL;
  try {
    // Values may hold newlines or any byte: sd_journal_sendv frames them as binary fields.
    const std::vector<std::string> assignments =
        JournalAssignments(severity, message_id, message, fields);
    std::vector<iovec> iov;
    iov.reserve(assignments.size());
    for (const std::string& a : assignments) {
      iov.push_back({const_cast<char*>(a.data()), a.size()});
    }
    r = sender_(iov);
  } catch (...) {
    r = -ENOMEM;
  }
  if (r < 0) fallback_.Write(severity, message_id, message, fields);
}

bool IsJournalStream(const char* journal_stream, int stderr_fd) noexcept {
  if (journal_stream == nullptr || journal_stream[0] == '\0') return false;
  const char* colon = std::strchr(journal_stream, ':');
  if (colon == nullptr) return false;
  char* end = nullptr;
  errno = 0;
  const unsigned long long dev = std::strtoull(journal_stream, &end, 10);
  if (errno != 0 || end != colon || end == journal_stream) return false;
  const unsigned long long ino = std::strtoull(colon + 1, &end, 10);
  if (errno != 0 || *end != '\0' || end == colon + 1) return false;
  struct stat st {};
  if (::fstat(stderr_fd, &st) != 0) return false;
  return static_cast<unsigned long long>(st.st_dev) == dev &&
         static_cast<unsigned long long>(st.st_ino) == ino;
}

bool ShouldUseJournal(const char* journal_stream, int stderr_fd,
                      const std::filesystem::path& journal_socket) noexcept {
  if (!IsJournalStream(journal_stream, stderr_fd)) return false;
  struct stat st {};
  return ::stat(journal_socket.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

std::unique_ptr<LogSink> MakeLogSink(LogTarget target, Severity min_severity) {
  bool journal = target == LogTarget::kJournal;
  if (target == LogTarget::kAuto) {
    journal = ShouldUseJournal(std::getenv("JOURNAL_STREAM"), STDERR_FILENO,
                               std::filesystem::path(kJournalSocket));
  }
  if (journal) return std::make_unique<JournalLogSink>(min_severity);
  return std::make_unique<StderrLogSink>(min_severity);
}

}  // namespace cakewalk::sd
