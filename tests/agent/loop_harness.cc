#include "tests/agent/loop_harness.h"

#include "base/json.h"
#include "hsm/x509.h"
#include "jira/curl_transport.h"
#include "tests/fakes/control_plane/test_util.h"
#include "tests/transport/tls_env.h"

namespace cakewalk::testing {

using namespace std::chrono_literals;

Result<SoftwareAgent> EnrollSoftwareAgent(RunningControlPlane& cp,
                                          const std::filesystem::path& ca_file) {
  auto make_transport = [&](const KeyAndCert* identity) {
    http::TransportOptions o;
    o.config_name = "control_plane";
    o.ca_file = ca_file.string();
    o.connect_timeout = 5s;
    o.timeout = 30s;
    if (identity != nullptr) o.client_identity = SoftwareIdentity(*identity);
    return http::CurlTransport::Create(std::move(o));
  };
  CW_ASSIGN_OR_RETURN(auto anonymous, make_transport(nullptr));
  agent::ControlPlaneClient enroller(*anonymous, cp.base_url());
  EvpPkeyPtr key = NewEcP256Key();
  agent::EnrollRequest request;
  request.csr_pem = MakeCsrPem(key.get());
  request.hostname = "test-host";
  request.agent_version = "0.1.0";
  request.token = {"SoftHSM project", "SoftHSM v2", "0123abcd", "cakewalk"};
  const SecretBytes token = SecretBytes::CopyOf(cp.fake().NewEnrollmentToken());
  CW_ASSIGN_OR_RETURN(agent::EnrollResponse enrolled, enroller.Enroll(token, request));

  SoftwareAgent a;
  a.agent_id = enrolled.agent_id;
  a.chain_pem = enrolled.certificate_chain_pem;
  a.signing_keys = enrolled.signing_keys;
  a.poll_wait_seconds = enrolled.poll_wait_seconds;
  CW_ASSIGN_OR_RETURN(a.not_after, ParseRfc3339(NotAfter(a.chain_pem)));
  KeyAndCert identity;
  identity.key_pem = PrivateKeyPem(key.get());
  identity.chain_pem = a.chain_pem;
  identity.cert_pem = a.chain_pem;
  CW_ASSIGN_OR_RETURN(a.transport, make_transport(&identity));
  a.client = std::make_shared<agent::ControlPlaneClient>(*a.transport, cp.base_url());
  return a;
}

Json::Value AddMemberOutput(const std::string& user, bool changed) {
  Json::Value out(Json::objectValue);
  out["user"]["id"] = user;
  out["user"]["username"] = user;
  out["user"]["email"] = user + "@example.com";
  out["user"]["display_name"] = "User " + user;
  out["group"] = "jira-users";
  out["changed"] = changed;
  return out;
}

Result<Json::Value> SpyExecutor::Run(agent::JobContext& job) {
  {
    std::lock_guard lock(mu_);
    ++starts_[job.job_id];
    ++total_;
  }
  cv_.notify_all();
  const int now = ++running_;
  int seen = max_running_.load();
  while (now > seen && !max_running_.compare_exchange_weak(seen, now)) {
  }
  Result<Json::Value> out = behaviour_(job);
  --running_;
  return out;
}

int SpyExecutor::starts(const std::string& job_id) const {
  std::lock_guard lock(mu_);
  auto it = starts_.find(job_id);
  return it == starts_.end() ? 0 : it->second;
}

int SpyExecutor::total_starts() const {
  std::lock_guard lock(mu_);
  return total_;
}

::testing::AssertionResult SpyExecutor::WaitForStarts(int n,
                                                      std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  if (cv_.wait_for(lock, timeout, [&] { return total_ >= n; })) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "executor started " << total_ << " times, expected " << n;
}

SpyExecutor::Behaviour Succeed(Json::Value output) {
  return [output](agent::JobContext&) -> Result<Json::Value> { return output; };
}

SpyExecutor::Behaviour BlockUntil(std::shared_ptr<std::atomic<bool>> release, Json::Value output) {
  return [release, output](agent::JobContext& job) -> Result<Json::Value> {
    while (!release->load()) {
      if (job.stop.stop_requested()) return agent::StoppedStatus();
      std::this_thread::sleep_for(5ms);
    }
    return output;
  };
}

LoopHarness::LoopHarness(RunningControlPlane& control_plane, std::filesystem::path folder)
    : cp(control_plane), dir(std::move(folder)) {
  agent::ConnectionConfig conn;
  conn.name = "jira-prod";
  conn.flavor = agent::JiraFlavor::kDataCenter;
  conn.base_url = "https://jira.example.test";
  config.connections.push_back(conn);
  config.state_dir = dir / "state";
  config.jobs.poll_wait_seconds = 2;
  ca_file = dir / "cp-ca.pem";
  WriteFile(ca_file, cp.server_ca_pem());
}

LoopHarness::~LoopHarness() { StopLoop(); }

void LoopHarness::Enroll() {
  auto a = EnrollSoftwareAgent(cp, ca_file);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  agent = std::move(a).value();
}

void LoopHarness::StartLoop(agent::JobLoopOptions options) {
  ASSERT_NE(agent.client, nullptr) << "call Enroll() first";
  if (!journal) {
    auto j = agent::JobJournal::Open(config.state_dir);
    ASSERT_TRUE(j.ok()) << j.status().ToString();
    journal = std::move(j).value();
  }
  if (!keys) {
    keys = std::make_unique<agent::SigningKeySet>(
        agent.signing_keys,
        [this]() -> Result<std::vector<agent::SigningKey>> {
          ++key_fetches;
          return agent.client->SigningKeys();
        },
        SystemClock());
  }
  agent::JobLoopDeps deps;
  auto shared = std::make_shared<const agent::Config>(config);
  deps.config = [shared] { return shared; };
  deps.agent_id = agent.agent_id;
  deps.control_plane = [this]() -> Result<agent::ControlPlaneHandle> {
    if (partitioned.load()) {
      return Status(Code::kUnavailable, "test partition: the control plane is unreachable",
                    http::reason::kConnectFailed);
    }
    return agent::ControlPlaneHandle{agent.client, agent.not_after};
  };
  deps.reset_connections = [this] {
    ++resets;
    agent.transport->ResetConnections();
  };
  deps.journal = journal.get();
  deps.executors = &registry;
  deps.keys = keys.get();
  deps.log = &log;
  deps.clock = &SystemClock();
  deps.health = &health;
  deps.hooks.job_finished = [this](const std::string& id, const std::string& type,
                                   const std::string& status) {
    std::lock_guard lock(mu_);
    finished_.push_back(id + " " + type + " " + status);
  };
  if (options.server_poll_wait_seconds == 0) {
    options.server_poll_wait_seconds = agent.poll_wait_seconds;
  }
  auto l = agent::JobLoop::Create(std::move(deps), std::move(options));
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  loop = std::move(l).value();
  Status s = loop->Start();
  ASSERT_TRUE(s.ok()) << s.ToString();
}

void LoopHarness::StopLoop(std::chrono::milliseconds grace) {
  if (loop) {
    loop->Shutdown(grace);
    loop.reset();
  }
  journal.reset();
}

std::vector<std::string> LoopHarness::finished_events() const {
  std::lock_guard lock(mu_);
  return finished_;
}

JobSpec Job(std::string type, Json::Value params, std::string id) {
  JobSpec spec;
  spec.id = std::move(id);
  spec.type = std::move(type);
  spec.connection = "jira-prod";
  spec.params = std::move(params);
  return spec;
}

std::vector<Json::Value> RequestBodies(RunningControlPlane& cp, std::string_view path_suffix) {
  std::vector<Json::Value> out;
  for (const HttpRequest& r : cp.server().requests()) {
    if (r.path.size() >= path_suffix.size() &&
        r.path.compare(r.path.size() - path_suffix.size(), path_suffix.size(), path_suffix) == 0) {
      auto v = ParseJson(r.body, "request body");
      out.push_back(v.ok() ? *v : Json::Value());
    }
  }
  return out;
}

}  // namespace cakewalk::testing
