// A LogSink that keeps every entry, for asserting on audit events and for canary scans.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "base/log.h"

namespace cakewalk::testing {

struct LogEntry {
  Severity severity;
  std::string message_id;
  std::string message;
  std::vector<LogField> fields;

  std::string Field(std::string_view name) const {
    for (const auto& f : fields) {
      if (f.name == name) return f.value;
    }
    return {};
  }
};

class CapturingLogSink final : public LogSink {
 public:
  void Write(Severity severity, std::string_view message_id, std::string_view message,
             std::span<const LogField> fields) noexcept override {
    std::lock_guard lock(mu_);
    entries_.push_back({severity, std::string(message_id), std::string(message),
                        std::vector<LogField>(fields.begin(), fields.end())});
  }
  std::vector<LogEntry> entries() const {
    std::lock_guard lock(mu_);
    return entries_;
  }
  std::vector<LogEntry> WithId(std::string_view id) const {
    std::lock_guard lock(mu_);
    std::vector<LogEntry> out;
    for (const auto& e : entries_) {
      if (e.message_id == id) out.push_back(e);
    }
    return out;
  }
  // Everything as one text blob (messages and field values), for canary scans.
  std::string Text() const {
    std::lock_guard lock(mu_);
    std::string s;
    for (const auto& e : entries_) {
      s += e.message + "\n";
      for (const auto& f : e.fields) s += f.name + "=" + f.value + "\n";
    }
    return s;
  }

 private:
  mutable std::mutex mu_;
  std::vector<LogEntry> entries_;
};

}  // namespace cakewalk::testing
