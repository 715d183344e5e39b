// The daemon's start and its idle footprint (a plain program, not a test; scripts/bench runs it):
// the real cakewalk-agent binary with a private SoftHSM token, the in-process fake control plane
// and a fake Jira Data Center.
//
//   daemon_bench [--starts N] [--idle-seconds S] [--window-seconds W]
//
// 1. Start to READY=1: from posix_spawn of `cakewalk-agent run` until READY=1 arrives on a notify
//    socket standing in for systemd's (token module load and PIN login, identity, journal, the
//    job loop and heartbeat started), over N starts (median; target <= 150 ms). Reference: the
//    same binary's `version` command, spawn to exit (process start, hardening, libcurl init).
// 2. Idle: the last start is left alone for S seconds (default 60; jobs.poll_wait_seconds 50, so
//    the long poll is renewed as the control plane answers it), then over W more seconds
//    (default 30): the resident memory (VmRSS, target <= 10 MB) and the wake-ups per second,
//    counted as the voluntary plus involuntary context switches of all its threads
//    (/proc/PID/task/*/status; target <= 1/s).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/agent/agent_process.h"
#include "tests/bench/bench_report.h"
#include "tests/fakes/control_plane/running_control_plane.h"
#include "tests/support/notify_socket.h"
#include "tests/support/proc_status.h"
#include "tests/support/temp_dir.h"
#include "tests/systemd/process.h"

namespace {

using namespace cakewalk;
using namespace cakewalk::testing;
using Steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "daemon_bench: %s\n", what.c_str());
  std::exit(1);
}

struct Switches {
  long total = 0;
  int threads = 0;
  std::map<std::string, long> by_thread;  // "tid name" -> switches
};

// Context switches of every thread of `pid` so far.
Switches CountSwitches(pid_t pid) {
  Switches s;
  std::error_code ec;
  for (const auto& task :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    const long v = ProcField(task.path() / "status", "voluntary_ctxt_switches");
    const long n = ProcField(task.path() / "status", "nonvoluntary_ctxt_switches");
    if (v < 0 || n < 0) continue;  // the thread ended meanwhile
    s.total += v + n;
    ++s.threads;
    std::ifstream comm(task.path() / "comm");
    std::string name;
    std::getline(comm, name);
    s.by_thread[task.path().filename().string() + " " + name] = v + n;
  }
  return s;
}

double Median(std::vector<double> v) { return bench::Percentile(std::move(v), 0.5); }

}  // namespace

int main(int argc, char** argv) {
  int starts = 5;
  int idle_seconds = 60;
  int window_seconds = 30;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--starts" && i + 1 < argc) {
      starts = std::atoi(argv[++i]);
    } else if (a == "--idle-seconds" && i + 1 < argc) {
      idle_seconds = std::atoi(argv[++i]);
    } else if (a == "--window-seconds" && i + 1 < argc) {
      window_seconds = std::atoi(argv[++i]);
    } else {
      Die("usage: daemon_bench [--starts N] [--idle-seconds S] [--window-seconds W]");
    }
  }
  if (starts < 1 || idle_seconds < 0 || window_seconds < 1) Die("bad arguments");

  auto cp = RunningControlPlane::Start();
  if (!cp.ok()) Die(cp.status().ToString());
  const std::string password = "Bench-admin-password-42";
  auto jira = ServeJiraWithAdmin(password);
  if (!jira.ok()) Die(jira.status().ToString());
  AgentHomeOptions ho;
  ho.jira = jira->get();
  ho.poll_wait_seconds = 50;  // the configuration's default
  auto home = AgentHome::Create(**cp, ho);
  if (!home.ok()) Die(home.status().ToString());
  if (Status s = (*home)->PutSecret("jira-prod", "password", password); !s.ok()) {
    Die(s.ToString());
  }

  // The reference: the binary's start and exit alone.
  std::vector<double> version_ms;
  for (int i = 0; i < std::max(3, starts); ++i) {
    const auto t0 = Steady::now();
    ProcessResult r = RunProcess({CAKEWALK_AGENT_BINARY, "version"}, {}, 30s);
    if (r.exit_code != 0) Die("cakewalk-agent version failed: " + r.err);
    version_ms.push_back(std::chrono::duration<double, std::milli>(Steady::now() - t0).count());
  }

  std::vector<double> ready_ms;
  std::optional<Child> last;
  for (int i = 0; i < starts; ++i) {
    NotifySocket notify;
    if (!notify.bound()) Die("cannot bind a notify socket");
    const auto t0 = Steady::now();
    Child agent = (*home)->Start({"NOTIFY_SOCKET=" + notify.path()});
    auto ready = notify.WaitFor("READY=1", 30s);
    if (!ready) Die("no READY=1 within 30 s:\n" + (*home)->Log());
    ready_ms.push_back(std::chrono::duration<double, std::milli>(*ready - t0).count());
    if (i + 1 < starts) {
      agent.Signal(SIGTERM);
      if (WaitExit(agent, 30s) != 0) Die("the agent did not stop cleanly:\n" + (*home)->Log());
    } else {
      last.emplace(std::move(agent));
    }
  }
  const double ready_median = Median(ready_ms);
  const double ready_max = *std::max_element(ready_ms.begin(), ready_ms.end());
  const double version_median = Median(version_ms);
  std::printf(
      "start to READY=1 (%d starts, SoftHSM token login included): median %.1f ms, max %.1f ms"
      " (target <= 150 ms: %s)\n",
      starts, ready_median, ready_max, ready_median <= 150 ? "met" : "MISSED");
  std::printf("  reference, `cakewalk-agent version` spawn to exit: median %.1f ms\n",
              version_median);
  std::fflush(stdout);

  // Idle: RSS once a second while the agent is left alone, then the window.
  const pid_t pid = last->pid();
  const auto idle_start = Steady::now();
  std::vector<std::pair<double, long>> rss;
  auto sample = [&] {
    rss.emplace_back(std::chrono::duration<double>(Steady::now() - idle_start).count(),
                     ProcField("/proc/" + std::to_string(pid) + "/status", "VmRSS"));
  };
  while (Steady::now() - idle_start < std::chrono::seconds(idle_seconds)) {
    sample();
    std::this_thread::sleep_for(1s);
  }
  const Switches before = CountSwitches(pid);
  const auto w0 = Steady::now();
  while (Steady::now() - w0 < std::chrono::seconds(window_seconds)) {
    sample();
    std::this_thread::sleep_for(1s);
  }
  const Switches after = CountSwitches(pid);
  const double window = std::chrono::duration<double>(Steady::now() - w0).count();
  const long rss_kb = ProcField("/proc/" + std::to_string(pid) + "/status", "VmRSS");
  const long hwm_kb = ProcField("/proc/" + std::to_string(pid) + "/status", "VmHWM");
  const double rss_mb = static_cast<double>(rss_kb) * 1024 / 1e6;
  // RSS counts every page of the binary and the libraries mapped in; PSS shares them out among
  // the processes mapping them. Anonymous pages (heap, stacks, the libraries' relocated data) are
  // the agent's own memory; file pages that no other process maps count as private too.
  const std::string rollup = "/proc/" + std::to_string(pid) + "/smaps_rollup";
  const auto mb = [&](const char* field) {
    return static_cast<double>(ProcField(rollup, field)) * 1024 / 1e6;
  };
  const double pss_mb = mb("Pss");
  const double private_mb = mb("Private_Dirty") + mb("Private_Clean");
  const double shared_mb = mb("Shared_Clean");
  const double anonymous_mb = mb("Anonymous");
  const double wakeups = static_cast<double>(after.total - before.total) / window;
  last->Signal(SIGTERM);
  if (WaitExit(*last, 30s) != 0) Die("the agent did not stop cleanly:\n" + (*home)->Log());
  const int heartbeats = static_cast<int>((*cp)->fake().Heartbeats().size());

  std::printf(
      "idle after %d s, over %.0f s: RSS %.1f MB (peak %.1f MB; target <= 10 MB: %s), "
      "%.2f wake-ups/s over %d threads (target <= 1/s: %s); %d heartbeats in all\n",
      idle_seconds, window, rss_mb, static_cast<double>(hwm_kb) * 1024 / 1e6,
      rss_mb <= 10 ? "met" : "MISSED", wakeups, after.threads, wakeups <= 1.0 ? "met" : "MISSED",
      heartbeats);
  std::printf(
      "  of the RSS: %.1f MB shared clean (library text), %.1f MB private, of which %.1f MB "
      "anonymous (heap, stacks, relocated data) and the rest file pages no other process maps; "
      "PSS %.1f MB\n",
      shared_mb, private_mb, anonymous_mb, pss_mb);

  std::printf("  wake-ups per thread:");
  for (const auto& [thread, n] : after.by_thread) {
    auto it = before.by_thread.find(thread);
    const long d = n - (it == before.by_thread.end() ? 0 : it->second);
    std::printf(" %s %.2f/s;", thread.c_str(), static_cast<double>(d) / window);
  }
  std::printf("\n");

  bench::Figure ready;
  ready.section = "daemon";
  ready.id = "daemon.start_to_ready";
  ready.name = "start to READY=1 (token login included)";
  ready.value = ready_median;
  ready.unit = "ms";
  ready.reference = version_median;
  ready.reference_name = "`version` spawn to exit";
  ready.ratio = ready_median / version_median;
  ready.target = "<= 150 ms";
  ready.met = ready_median <= 150;
  char note[96];
  std::snprintf(note, sizeof note, "median of %d starts, max %.1f ms", starts, ready_max);
  ready.note = note;
  bench::Report(ready);
  const std::string idle_note = "after " + std::to_string(idle_seconds) + " s idle, over " +
                                std::to_string(window_seconds) + " s, " +
                                std::to_string(after.threads) + " threads";
  bench::Figure memory;
  memory.section = "daemon";
  memory.id = "daemon.idle_rss";
  memory.name = "idle RSS";
  memory.value = rss_mb;
  memory.unit = "MB";
  memory.target = "<= 10 MB";
  memory.met = rss_mb <= 10;
  char split[160];
  std::snprintf(split, sizeof split,
                "; of it %.1f MB shared library pages, %.1f MB private (%.1f MB anonymous)",
                shared_mb, private_mb, anonymous_mb);
  memory.note = idle_note + split;
  bench::Report(memory);
  bench::Figure pss;
  pss.section = "daemon";
  pss.id = "daemon.idle_pss";
  pss.name = "idle PSS (shared pages divided)";
  pss.value = pss_mb;
  pss.unit = "MB";
  pss.reference = rss_mb;
  pss.reference_name = "RSS";
  pss.ratio = pss_mb / rss_mb;
  bench::Report(pss);
  bench::Figure wake;
  wake.section = "daemon";
  wake.id = "daemon.idle_wakeups";
  wake.name = "idle wake-ups";
  wake.value = wakeups;
  wake.unit = "/s";
  wake.target = "<= 1/s";
  wake.met = wakeups <= 1.0;
  wake.note = idle_note;
  bench::Report(wake);
  if (auto path = bench::SeriesPath("daemon-idle-rss.dat")) {
    std::ofstream out(*path);
    out << "# seconds_since_ready agent_rss_MB (idle)\n";
    for (const auto& [t, kb] : rss) out << t << ' ' << static_cast<double>(kb) * 1024 / 1e6 << '\n';
  }
  return 0;
}
