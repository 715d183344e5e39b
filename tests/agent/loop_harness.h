// Test harness for the job loop: an agent enrolled at the fake control plane with a software key
// (no token needed), talking over real mutual TLS through CurlTransport and ControlPlaneClient;
// a journal in a temp folder; scripted executors that count their starts.
#pragma once

#include <gtest/gtest.h>
#include <json/json.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/config.h"
#include "agent/control_plane.h"
#include "agent/executor.h"
#include "agent/heartbeat.h"
#include "agent/job_loop.h"
#include "agent/journal.h"
#include "agent/jws.h"
#include "jira/http.h"
#include "tests/fakes/control_plane/running_control_plane.h"
#include "tests/support/capture_log.h"
#include "tests/support/temp_dir.h"

namespace cakewalk::testing {

// An agent enrolled with a software EC P-256 key.
struct SoftwareAgent {
  std::string agent_id;
  std::string chain_pem;
  SysTime not_after;
  std::vector<agent::SigningKey> signing_keys;
  int poll_wait_seconds = 0;
  std::unique_ptr<http::Transport> transport;
  std::shared_ptr<agent::ControlPlaneClient> client;
};
Result<SoftwareAgent> EnrollSoftwareAgent(RunningControlPlane& cp,
                                          const std::filesystem::path& ca_file);

// A valid jira.group.add_member output for `user`.
Json::Value AddMemberOutput(const std::string& user, bool changed = true);

// An executor whose behaviour the test scripts, counting starts per job id.
class SpyExecutor final : public agent::Executor {
 public:
  using Behaviour = std::function<Result<Json::Value>(agent::JobContext&)>;
  explicit SpyExecutor(Behaviour behaviour, bool idempotent = true)
      : behaviour_(std::move(behaviour)), idempotent_(idempotent) {}

  bool idempotent() const override { return idempotent_; }
  Result<Json::Value> Run(agent::JobContext& job) override;

  int starts(const std::string& job_id) const;
  int total_starts() const;
  int running() const { return running_.load(); }
  int max_running() const { return max_running_.load(); }
  // Waits until `n` starts happened in total.
  ::testing::AssertionResult WaitForStarts(
      int n, std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;

 private:
  Behaviour behaviour_;
  bool idempotent_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::map<std::string, int> starts_;
  int total_ = 0;
  std::atomic<int> running_{0};
  std::atomic<int> max_running_{0};
};

// Returns `output` at once.
SpyExecutor::Behaviour Succeed(Json::Value output);
// Waits until the stop token is requested or `release` is set, then succeeds (or returns
// StoppedStatus when stopped).
SpyExecutor::Behaviour BlockUntil(std::shared_ptr<std::atomic<bool>> release, Json::Value output);

// Everything a JobLoop needs, over the fake.
class LoopHarness {
 public:
  // `dir` holds the journal (dir/state). Enrolls a new agent at `cp`.
  LoopHarness(RunningControlPlane& cp, std::filesystem::path dir);
  ~LoopHarness();

  // Enrolls; call before using anything else (ASSERT_NO_FATAL_FAILURE).
  void Enroll();
  // Opens the journal (again) and creates and starts the loop.
  void StartLoop(agent::JobLoopOptions options = {});
  // Shuts the loop down and closes the journal.
  void StopLoop(std::chrono::milliseconds grace = std::chrono::milliseconds(0));

  agent::Config config;
  agent::ExecutorRegistry registry;
  CapturingLogSink log;
  agent::ConnectionHealth health;
  SoftwareAgent agent;
  std::unique_ptr<agent::JobJournal> journal;
  std::unique_ptr<agent::SigningKeySet> keys;
  std::unique_ptr<agent::JobLoop> loop;
  std::atomic<int> resets{0};
  // While set, every control-plane call of this agent fails as if the network were down.
  std::atomic<bool> partitioned{false};
  std::atomic<int> key_fetches{0};
  std::vector<std::string> finished_events() const;

  RunningControlPlane& cp;
  const std::filesystem::path dir;
  std::filesystem::path ca_file;

 private:
  mutable std::mutex mu_;
  std::vector<std::string> finished_;
};

// A job spec for `type` on jira-prod with `params`.
JobSpec Job(std::string type, Json::Value params = Json::Value(Json::objectValue),
            std::string id = {});

// The records of a job's requests to an endpoint, in arrival order (bodies parsed).
std::vector<Json::Value> RequestBodies(RunningControlPlane& cp, std::string_view path_suffix);

}  // namespace cakewalk::testing
