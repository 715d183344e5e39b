// Numbers the kernel publishes per process, for tests and benchmarks that watch a child.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

namespace cakewalk::testing {

// The number after "FIELD:" in a file of "Name: value" lines (/proc/PID/status, a thread's
// /proc/PID/task/TID/status, /proc/PID/smaps_rollup), or -1 when the field is absent.
inline long ProcField(const std::filesystem::path& file, std::string_view field) {
  std::ifstream in(file);
  const std::string prefix = std::string(field) + ":";
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) {
      std::istringstream words(line.substr(prefix.size()));
      long value = -1;
      words >> value;
      return value;
    }
  }
  return -1;
}

// A field of /proc/PID/status (PID 0: this process), e.g. VmRSS or VmHWM in kB; -1 if absent.
inline long ProcStatusKb(pid_t pid, std::string_view field) {
  return ProcField(pid == 0 ? std::filesystem::path("/proc/self/status")
                            : std::filesystem::path("/proc/" + std::to_string(pid) + "/status"),
                   field);
}

}  // namespace cakewalk::testing
