// Numbers the kernel publishes per process, for tests and benchmarks that watch a child.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
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

// CPU time (user + system, all threads) a process has used, in seconds (PID 0: this process);
// -1 when it cannot be read. From fields 14 and 15 of /proc/PID/stat, after the command name
// (which may hold spaces and parentheses, so the fields are counted from the last ')').
inline double ProcCpuSeconds(pid_t pid) {
  std::ifstream in(pid == 0 ? std::string("/proc/self/stat")
                            : "/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(stat.substr(close + 1));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  // After ')': state is field 3, so utime (14) is the 12th word and stime (15) the 13th.
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  if (!fields) return -1;
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace cakewalk::testing
