// Job pickup latency (a plain program, not a test; scripts/bench runs it): the time from a job
// being enqueued at the fake control plane to its executor starting in the agent's job loop,
// over real mutual TLS on loopback. In between: the held long poll wakes, the fake signs the JWS
// and answers, the agent verifies it (Ed25519), checks the journal for the id, journals
// "claimed, verified, running" (one SQLite transaction, synchronous=FULL: an fsync) and starts a
// worker thread. Jobs are enqueued one at a time, each after the previous one started.
//
//   pickup_bench [--jobs N] [--state-dir DIR]
// The journal lives in a fresh temporary folder (under $TMPDIR) unless --state-dir names another
// (the fsync cost depends on the file system; the figure printed says which one was used).
#include <sys/vfs.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "agent/executor.h"
#include "agent/job_loop.h"
#include "agent/journal.h"
#include "agent/jws.h"
#include "base/log.h"
#include "tests/agent/loop_harness.h"
#include "tests/bench/bench_report.h"
#include "tests/fakes/control_plane/running_control_plane.h"
#include "tests/support/temp_dir.h"

namespace {

using namespace cakewalk;
using Steady = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "pickup_bench: %s\n", what.c_str());
  std::exit(1);
}

// Records when each job's executor started.
class StartClock final : public agent::Executor {
 public:
  Result<Json::Value> Run(agent::JobContext& job) override {
    const auto now = Steady::now();
    {
      std::lock_guard lock(mu_);
      started_[job.job_id] = now;
    }
    cv_.notify_all();
    return cakewalk::testing::AddMemberOutput("bench");
  }
  bool WaitFor(const std::string& id, Steady::time_point* at) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(30), [&] { return started_.count(id) > 0; })) {
      return false;
    }
    *at = started_[id];
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Steady::time_point> started_;
};

std::string FileSystemOf(const std::filesystem::path& p) {
  struct statfs s {};
  if (statfs(p.c_str(), &s) != 0) return "unknown";
  switch (static_cast<unsigned long>(s.f_type)) {
    case 0x01021994UL:
      return "tmpfs";
    case 0xEF53UL:
      return "ext4";
    case 0x794C7630UL:
      return "overlayfs";
    case 0x58465342UL:
      return "xfs";
    case 0x9123683EUL:
      return "btrfs";
    default: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "0x%lx", static_cast<unsigned long>(s.f_type));
      return buf;
    }
  }
}

using bench::Percentile;

}  // namespace

int main(int argc, char** argv) {
  int jobs = 1000;
  std::string state_dir_arg;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--jobs" && i + 1 < argc) {
      jobs = std::atoi(argv[++i]);
    } else if (a == "--state-dir" && i + 1 < argc) {
      state_dir_arg = argv[++i];
    } else {
      Die("usage: pickup_bench [--jobs N] [--state-dir DIR]");
    }
  }
  if (jobs < 10) Die("--jobs must be at least 10");

  cakewalk::testing::RunningControlPlaneOptions options;
  auto cp = cakewalk::testing::RunningControlPlane::Start(options);
  if (!cp.ok()) Die(cp.status().ToString());
  cakewalk::testing::TempDir dir("cakewalk-pickup-bench");
  const std::filesystem::path ca_file = dir / "cp-ca.pem";
  cakewalk::testing::WriteFile(ca_file, (*cp)->server_ca_pem());
  auto enrolled = cakewalk::testing::EnrollSoftwareAgent(**cp, ca_file);
  if (!enrolled.ok()) Die(enrolled.status().ToString());
  cakewalk::testing::SoftwareAgent& a = *enrolled;

  // The reference: one request and answer on the same mutual-TLS client (GET signing-keys, the
  // same loopback, TLS session and HTTP stack), before the loop starts.
  std::vector<double> round_trips;
  for (int i = 0; i < 220; ++i) {
    const auto t0 = Steady::now();
    auto keys = a.client->SigningKeys();
    if (!keys.ok()) Die(keys.status().ToString());
    if (i >= 20) {
      round_trips.push_back(std::chrono::duration<double, std::milli>(Steady::now() - t0).count());
    }
  }

  agent::Config config;
  agent::ConnectionConfig conn;
  conn.name = "jira-prod";
  conn.base_url = "https://jira.example.test";
  config.connections.push_back(conn);
  config.jobs.poll_wait_seconds = 25;
  config.state_dir = state_dir_arg.empty() ? dir / "state" : std::filesystem::path(state_dir_arg);
  auto journal = agent::JobJournal::Open(config.state_dir);
  if (!journal.ok()) Die(journal.status().ToString());

  agent::ExecutorRegistry registry;
  auto executor = std::make_shared<StartClock>();
  if (!registry.Register("jira.group.add_member", executor).ok()) Die("register");
  agent::SigningKeySet keys(
      a.signing_keys, [&]() { return a.client->SigningKeys(); }, SystemClock());
  NullLogSink log;
  agent::JobLoopDeps deps;
  auto shared = std::make_shared<const agent::Config>(config);
  deps.config = [shared] { return shared; };
  deps.agent_id = a.agent_id;
  deps.control_plane = [&]() -> Result<agent::ControlPlaneHandle> {
    return agent::ControlPlaneHandle{a.client, a.not_after};
  };
  deps.reset_connections = [&] { a.transport->ResetConnections(); };
  deps.journal = journal->get();
  deps.executors = &registry;
  deps.keys = &keys;
  deps.log = &log;
  deps.clock = &SystemClock();
  agent::JobLoopOptions loop_options;
  loop_options.server_poll_wait_seconds = a.poll_wait_seconds;
  auto loop = agent::JobLoop::Create(std::move(deps), loop_options);
  if (!loop.ok()) Die(loop.status().ToString());
  if (Status s = (*loop)->Start(); !s.ok()) Die(s.ToString());

  // Warm up (TLS session, first key use), then measure.
  std::vector<double> ms;
  const int warmup = 20;
  for (int i = 0; i < warmup + jobs; ++i) {
    // Enqueue only while a claim is held open, as in steady state.
    if (!(*cp)->fake().WaitForWaitingClaims(1, std::chrono::seconds(30))) Die("no claim held");
    const auto t0 = Steady::now();
    auto id = (*cp)->fake().EnqueueJob(cakewalk::testing::Job("jira.group.add_member"));
    if (!id.ok()) Die(id.status().ToString());
    Steady::time_point started;
    if (!executor->WaitFor(*id, &started)) Die("job " + *id + " never started");
    if (i >= warmup) {
      ms.push_back(std::chrono::duration<double, std::milli>(started - t0).count());
    }
  }
  // Release the held long poll first: the loop's shutdown waits for it.
  (*cp)->fake().Shutdown();
  (*loop)->Shutdown(std::chrono::seconds(5));

  std::printf(
      "job pickup latency, enqueue at the fake -> executor start (%d jobs, loopback mTLS,\n"
      "journal on %s, synchronous=FULL):\n",
      jobs, FileSystemOf(config.state_dir).c_str());
  const double p50 = Percentile(ms, 0.50), p90 = Percentile(ms, 0.90), p99 = Percentile(ms, 0.99);
  std::printf(
      "  p50 %.2f ms   p90 %.2f ms   p99 %.2f ms   max %.2f ms   (target p99 <= 25 ms: %s)\n", p50,
      p90, p99, *std::max_element(ms.begin(), ms.end()), p99 <= 25 ? "met" : "MISSED");
  const double rt50 = Percentile(round_trips, 0.50), rt90 = Percentile(round_trips, 0.90),
               rt99 = Percentile(round_trips, 0.99);
  std::printf(
      "  reference, one control-plane request on the same mTLS client (%zu): p50 %.2f ms   "
      "p90 %.2f ms   p99 %.2f ms\n",
      round_trips.size(), rt50, rt90, rt99);

  const std::string fs = FileSystemOf(config.state_dir);
  for (auto [pct, value, reference] :
       {std::tuple{50, p50, rt50}, std::tuple{90, p90, rt90}, std::tuple{99, p99, rt99}}) {
    cakewalk::bench::Figure f;
    f.section = "pickup";
    f.id = "pickup.p" + std::to_string(pct);
    f.name = "job pickup latency p" + std::to_string(pct);
    f.value = value;
    f.unit = "ms";
    f.reference = reference;
    f.reference_name = "one mTLS request p" + std::to_string(pct);
    f.ratio = value / reference;
    if (pct == 99) {
      f.target = "p99 <= 25 ms";
      f.met = value <= 25.0;
      f.note = std::to_string(jobs) + " jobs, journal on " + fs + " (synchronous=FULL)";
    }
    cakewalk::bench::Report(f);
  }
  if (auto path = cakewalk::bench::SeriesPath("pickup-latency.dat")) {
    std::sort(ms.begin(), ms.end());
    std::ofstream out(*path);
    out << "# fraction_of_jobs latency_ms (sorted; " << jobs << " jobs)\n";
    for (std::size_t i = 0; i < ms.size(); ++i) {
      out << static_cast<double>(i + 1) / static_cast<double>(ms.size()) << ' ' << ms[i] << '\n';
    }
  }
  return 0;
}
