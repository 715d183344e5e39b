// Provisioning throughput (a plain program, not a test; scripts/bench runs it): jobs per second
// end to end through the real cakewalk-agent binary, against the fake Jira's own floor.
//
//   provision_bench [--jobs N] [--concurrency C] [--jira-latency-ms L] [--cp-latency-ms M]
//
// 1. Agent: N jira.user.provision jobs (a new user each, with a product and a group) are
//    enqueued at once at the in-process fake control plane; the agent (jobs.max_concurrent = C)
//    claims them over mutual TLS, verifies, journals, logs in to the fake Jira Data Center with
//    the password from its SoftHSM token, runs them and posts the results. Wall time from the
//    enqueue to the last accepted result. Every Jira request is recorded.
// 2. Floor: a second fake Jira in the same start state gets exactly the recorded requests,
//    straight from this process over TLS (the same libcurl transport), with C in flight: the
//    requests of one user in their recorded order (they depend on each other), requests naming
//    no user on their own. One session login first (not timed), kept-alive connections
//    throughout, writes sent once as the agent sends them. Every answer's status must equal the
//    recorded one.
// Ratio agent / floor: target >= 0.8. Each side runs once after a warm-up job (its login and
// first connections are not counted on either side). --jira-latency-ms makes both fakes answer
// every request that much later (a loaded Jira), to show how the agent's fixed costs per job
// weigh against a slower server; that figure carries no target. --cp-latency-ms makes the fake
// control plane answer every claim and every result that much later (it acts at once, as a
// server across a WAN would, and the answer takes the way back): what a distant control plane
// costs the agent, against the same floor; no target either. CPU per job is split into the
// agent, each fake's serving threads and the floor's client; for the unslowed run it prints the
// ceiling the fake control plane's own CPU leaves on busy cores, floor / (floor + control plane).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/json.h"
#include "base/secret.h"
#include "jira/curl_transport.h"
#include "tests/agent/agent_process.h"
#include "tests/bench/bench_report.h"
#include "tests/fakes/control_plane/running_control_plane.h"
#include "tests/fakes/https_server.h"
#include "tests/fakes/jira/fake_jira.h"
#include "tests/fakes/jira/served_jira.h"
#include "tests/support/pki.h"
#include "tests/support/proc_status.h"
#include "tests/support/temp_dir.h"
#include "tests/systemd/process.h"

namespace {

using namespace cakewalk;
using namespace cakewalk::testing;
using Steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr char kAdminPassword[] = "Bench-admin-password-42";
constexpr int kTeams = 10;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "provision_bench: %s\n", what.c_str());
  std::exit(1);
}

struct Recorded {
  std::string method, target, body;
  int status = 0;
  std::string key;  // the user key a user creation answered with
  SysTime at;       // when the fake received it
};

// The key in a user creation's answer ("JIRAUSER10004"), else "".
std::string CreatedKey(const std::string& method, const std::string& target,
                       const std::string& answer) {
  if (method != "POST" ||
      (target != "/rest/api/2/user" && target.rfind("/rest/api/2/user?", 0) != 0)) {
    return "";
  }
  auto v = ParseJson(answer, "answer");
  if (!v.ok() || !v->isObject() || !(*v)["key"].isString()) return "";
  return (*v)["key"].asString();
}

// A fake Jira Data Center served over TLS, every request recorded when asked.
class Site {
 public:
  explicit Site(std::chrono::milliseconds latency) {
    auto served = ServedJira::Start({}, [this](const HttpRequest& r, FakeJira& jira) {
      HttpResponse resp = jira.Handle(r);
      if (recording_) {
        std::lock_guard lock(mu_);
        log_.push_back({r.method, r.target, r.body, resp.status,
                        CreatedKey(r.method, r.target, resp.body), r.received_at});
      }
      return resp;
    });
    if (!served.ok()) Die(served.status().ToString());
    served_ = std::move(served).value();
    NewUser admin;
    admin.username = "svc-cakewalk";
    admin.email = "svc-cakewalk@corp.example";
    admin.display_name = "Cakewalk Agent";
    admin.password = kAdminPassword;
    admin.groups = {"jira-administrators", "jira-software-users"};
    if (!jira().AddUser(admin).ok()) Die("admin");
    for (int t = 0; t < kTeams; ++t) {
      if (!jira().AddGroup("bench-team-" + std::to_string(t)).ok()) Die("group");
    }
    if (latency.count() > 0) {  // every answer takes this long, as a loaded Jira's would
      FaultRule slow;
      slow.count = -1;
      slow.transport = Fault{Fault::kDelay, latency};
      jira().QueueFault(slow);
    }
  }
  const ServedJira& served() const { return *served_; }
  FakeJira& jira() { return served_->jira(); }
  std::string base_url() const { return served_->base_url(); }
  const std::string& ca_pem() const { return served_->ca_pem(); }
  std::uint64_t connections() const { return served_->server().connections_accepted(); }
  double serving_cpu_seconds() const { return served_->server().serving_cpu_seconds(); }
  void Record(bool on) { recording_ = on; }
  std::vector<Recorded> TakeLog() {
    std::lock_guard lock(mu_);
    return std::exchange(log_, {});
  }

 private:
  std::atomic<bool> recording_{false};
  std::mutex mu_;
  std::vector<Recorded> log_;
  std::unique_ptr<ServedJira> served_;  // last: its server stops before the log goes
};

Json::Value ProvisionParams(int i) {
  char name[32];
  std::snprintf(name, sizeof name, "bench-user-%05d", i);
  Json::Value p(Json::objectValue);
  p["username"] = name;
  p["email"] = std::string(name) + "@corp.example";
  p["display_name"] = "Bench User " + std::to_string(i);
  p["products"].append("jira-software");
  p["groups"].append("bench-team-" + std::to_string(i % kTeams));
  return p;
}

bool IsLogin(const Recorded& r) {
  return r.target.rfind("/rest/auth/", 0) == 0 || r.target.rfind("/rest/tsv/", 0) == 0 ||
         r.target.rfind("/login.jsp", 0) == 0;
}

// The replaying client: one session on the floor's site.
class Replayer {
 public:
  // Kept-alive connections throughout; writes are sent once, as the agent sends them
  // (jira/rest.cc, http::Request::send_once).
  Replayer(Site& site, const std::filesystem::path& ca_file) : base_(site.base_url()) {
    http::TransportOptions o;
    o.ca_file = ca_file.string();
    o.max_idle_handles = 16;
    auto t = http::CurlTransport::Create(std::move(o));
    if (!t.ok()) Die(t.status().ToString());
    transport_ = std::move(*t);
  }
  // Sends the recorded login requests; keeps the cookies the site set.
  void Login(const std::vector<Recorded>& logins) {
    for (const Recorded& r : logins) {
      auto resp = Send(r, false);
      if (resp.status != r.status) {
        Die("the floor's login " + r.target + " answered " + std::to_string(resp.status) +
            ", recorded " + std::to_string(r.status));
      }
      for (const SecretBytes& c : resp.set_cookies) {
        const std::string_view raw = c.RevealString(SecretAccess::Grant());
        const std::string_view pair = raw.substr(0, raw.find(';'));
        cookies_[std::string(pair.substr(0, pair.find('=')))] = SecretBytes::CopyOf(pair);
      }
    }
    if (cookies_.count("JSESSIONID") == 0) Die("the floor's login gave no session cookie");
  }
  http::Response Send(const Recorded& r, bool with_session) {
    http::Request req;
    req.method = r.method;
    req.url = base_ + r.target;
    req.body = r.body;
    req.headers.push_back({"Accept", "application/json"});
    if (r.method != "GET") req.headers.push_back({"X-Atlassian-Token", "no-check"});
    if (with_session) {
      for (const auto& [name, value] : cookies_) {
        if (!req.cookie.empty()) req.cookie.Append(std::string_view("; "));
        req.cookie.Append(value);
      }
    }
    req.send_once = r.method != "GET";
    auto resp = transport_->Send(req);
    if (!resp.ok()) Die("the floor's request failed: " + resp.status().ToString());
    return std::move(*resp);
  }

 private:
  std::string base_;
  std::unique_ptr<http::Transport> transport_;
  std::map<std::string, SecretBytes> cookies_;  // name -> the "name=value" pair
};

// One replay of the recorded requests.
struct FloorRun {
  double seconds = 0;
  double cpu_seconds = 0;         // of this process (the replaying client and the fake Jira)
  double jira_cpu_seconds = 0;    // of it, the fake Jira's serving threads
  std::uint64_t connections = 0;  // TLS connections the site accepted
  int skipped_logins = 0;
};

}  // namespace

int main(int argc, char** argv) {
  int jobs = 400;
  int concurrency = 4;
  int latency_ms = 0;
  int cp_latency_ms = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--jobs" && i + 1 < argc) {
      jobs = std::atoi(argv[++i]);
    } else if (a == "--concurrency" && i + 1 < argc) {
      concurrency = std::atoi(argv[++i]);
    } else if (a == "--jira-latency-ms" && i + 1 < argc) {
      latency_ms = std::atoi(argv[++i]);
    } else if (a == "--cp-latency-ms" && i + 1 < argc) {
      cp_latency_ms = std::atoi(argv[++i]);
    } else {
      Die("usage: provision_bench [--jobs N] [--concurrency C] [--jira-latency-ms L] "
          "[--cp-latency-ms M]");
    }
  }
  if (jobs < 10 || concurrency < 1 || concurrency > 64) Die("bad --jobs or --concurrency");
  if (latency_ms < 0 || cp_latency_ms < 0) Die("bad --jira-latency-ms or --cp-latency-ms");

  // ---- The agent ----------------------------------------------------------------------------
  auto cp = RunningControlPlane::Start();
  if (!cp.ok()) Die(cp.status().ToString());
  const std::chrono::milliseconds latency(latency_ms);
  Site site_a(latency);
  AgentHomeOptions ho;
  ho.max_concurrent = concurrency;
  ho.poll_wait_seconds = 25;
  ho.jira = &site_a.served();
  auto home = AgentHome::Create(**cp, ho);
  if (!home.ok()) Die(home.status().ToString());
  if (Status s = (*home)->PutSecret("jira-prod", "password", kAdminPassword); !s.ok()) {
    Die(s.ToString());
  }
  Child agent = (*home)->Start();
  if (!(*cp)->fake().WaitForHeartbeats(1, 60s)) Die("the agent did not start");

  auto run_job = [&](int i) {
    JobSpec spec;
    spec.type = "jira.user.provision";
    spec.connection = "jira-prod";
    spec.params = ProvisionParams(i);
    auto id = (*cp)->fake().EnqueueJob(spec);
    if (!id.ok()) Die(id.status().ToString());
    return *id;
  };
  auto check = [&](const std::string& id) {
    auto job = (*cp)->fake().Job(id);
    if (!job || job->result["status"].asString() != "succeeded") {
      Die("job " + id + " did not succeed: " + (job ? WriteJson(job->result) : "missing") + "\n" +
          (*home)->Log());
    }
  };
  // Warm-up: the login and the first connections.
  site_a.Record(true);
  const std::string warm = run_job(0);
  if (!(*cp)->fake().WaitForJobState(warm, JobState::kFinished, 60s)) Die("warm-up job");
  check(warm);
  const std::vector<Recorded> warmup = site_a.TakeLog();
  if (cp_latency_ms > 0) {
    // More than the run can use: a claim brings one job or more, a result is posted once.
    ControlPlaneFault late;
    late.kind = ControlPlaneFault::Kind::kDelay;
    late.delay = std::chrono::milliseconds(cp_latency_ms);
    (*cp)->fake().QueueFault(late, 2 * jobs + 100, Endpoint::kClaim);
    (*cp)->fake().QueueFault(late, 2 * jobs + 100, Endpoint::kResult);
  }

  const std::uint64_t connections_before = site_a.connections();
  std::vector<std::string> ids;
  const std::size_t finished_before = (*cp)->fake().FinishedJobs();
  const double agent_cpu_before = ProcCpuSeconds(agent.pid());
  const double fakes_cpu_before = ProcCpuSeconds(0);
  const double cp_cpu_before = (*cp)->server().serving_cpu_seconds();
  const double jira_cpu_before = site_a.serving_cpu_seconds();
  const auto t0 = Steady::now();
  for (int i = 1; i <= jobs; ++i) ids.push_back(run_job(i));
  if (!(*cp)->fake().WaitUntil(
          [&] { return (*cp)->fake().FinishedJobs() >= finished_before + ids.size(); },
          "every job finished", 600s)) {
    Die("not every job finished");
  }
  const double agent_s = std::chrono::duration<double>(Steady::now() - t0).count();
  const double agent_cpu = ProcCpuSeconds(agent.pid()) - agent_cpu_before;
  const double fakes_cpu = ProcCpuSeconds(0) - fakes_cpu_before;
  const double cp_cpu = (*cp)->server().serving_cpu_seconds() - cp_cpu_before;
  const double jira_cpu = site_a.serving_cpu_seconds() - jira_cpu_before;
  site_a.Record(false);
  const std::uint64_t agent_connections = site_a.connections() - connections_before;
  for (const std::string& id : ids) check(id);
  agent.Signal(SIGTERM);
  WaitExit(agent, 30s);
  const std::vector<Recorded> measured = site_a.TakeLog();

  // Where an agent job's time goes, from the two fakes' clocks: lease granted -> first Jira
  // request (verification, journal, worker start), first -> last Jira request, last Jira request
  // -> result received (journal, result post).
  double before_ms = 0, jira_ms = 0, after_ms = 0;
  int broken_down = 0;
  {
    std::map<std::string, std::pair<SysTime, SysTime>> span;  // user -> first, last request
    const std::regex user("bench-user-[0-9]+");
    const std::regex key("JIRAUSER[0-9]+");
    std::map<std::string, std::string> user_of_key;
    for (const Recorded& r : measured) {
      std::smatch m;
      const std::string where = r.target + " " + r.body;
      std::string who;
      if (std::regex_search(where, m, user)) {
        who = m.str();
        if (!r.key.empty()) user_of_key[r.key] = who;
      } else if (std::regex_search(where, m, key)) {
        who = user_of_key[m.str()];
      }
      if (who.empty()) continue;
      auto [it, fresh] = span.emplace(who, std::pair{r.at, r.at});
      if (!fresh) it->second.second = std::max(it->second.second, r.at);
    }
    auto ms = [](SysTime a, SysTime b) {
      return std::chrono::duration<double, std::milli>(b - a).count();
    };
    for (const std::string& id : ids) {
      auto job = (*cp)->fake().Job(id);
      if (!job || job->leases.empty() || job->result_deliveries.empty()) continue;
      const std::string who = job->spec.params["username"].asString();
      if (span.count(who) == 0) continue;
      before_ms += ms(job->leases.back().granted_at, span[who].first);
      jira_ms += ms(span[who].first, span[who].second);
      after_ms += ms(span[who].second, job->result_deliveries.back().received_at);
      ++broken_down;
    }
    if (broken_down > 0) {
      before_ms /= broken_down;
      jira_ms /= broken_down;
      after_ms /= broken_down;
    }
  }

  // ---- The floor ----------------------------------------------------------------------------
  // On a new site in the same start state.
  auto run_floor = [&]() -> FloorRun {
    TempDir dir("cakewalk-provision-bench");
    Site site_b(latency);
    WriteFile(dir / "jira-b-ca.pem", site_b.ca_pem(), 0644);
    Replayer replayer(site_b, dir / "jira-b-ca.pem");
    std::vector<Recorded> logins;
    for (const Recorded& r : warmup) {
      if (IsLogin(r)) logins.push_back(r);
    }
    replayer.Login(logins);
    // Users get their keys in the order of creation, which differs between the runs: a request
    // naming a key the agent was given is sent with the key the floor's site gave the same user.
    auto send = [&](const Recorded& r, std::map<std::string, std::string>& keys) {
      Recorded copy = r;
      for (const auto& [from, to] : keys) {
        for (std::string* text : {&copy.target, &copy.body}) {
          for (std::size_t at = text->find(from); at != std::string::npos;
               at = text->find(from, at + to.size())) {
            text->replace(at, from.size(), to);
          }
        }
      }
      http::Response resp = replayer.Send(copy, true);
      if (!r.key.empty()) {
        const std::string key = CreatedKey(r.method, r.target, resp.body);
        if (key.empty()) Die("the floor's site created no user for " + r.target);
        keys[r.key] = key;
      }
      return resp;
    };
    {
      std::map<std::string, std::string> keys;
      for (const Recorded& r : warmup) {  // the warm-up job's changes, so both sites start alike
        if (!IsLogin(r)) send(r, keys);
      }
    }
    // Work items: the requests naming one bench user, in order; others one by one.
    const std::regex subject("bench-user-[0-9]+");
    const std::regex key_pattern("JIRAUSER[0-9]+");
    std::map<std::string, std::string> subject_of_key;
    for (const Recorded& r : measured) {
      std::smatch m;
      if (!r.key.empty() && std::regex_search(r.body, m, subject)) subject_of_key[r.key] = m.str();
    }
    std::vector<std::vector<const Recorded*>> items;
    std::map<std::string, std::size_t> item_of;
    int skipped_logins = 0;
    for (const Recorded& r : measured) {
      if (IsLogin(r)) {
        ++skipped_logins;
        continue;
      }
      std::smatch m;
      const std::string where = r.target + " " + r.body;
      std::string who;
      if (std::regex_search(where, m, subject)) {
        who = m.str();
      } else if (std::regex_search(where, m, key_pattern) && subject_of_key.count(m.str()) > 0) {
        who = subject_of_key[m.str()];
      }
      if (!who.empty()) {
        auto [it, fresh] = item_of.emplace(who, items.size());
        if (fresh) items.emplace_back();
        items[it->second].push_back(&r);
      } else {
        items.push_back({&r});
      }
    }
    std::atomic<std::size_t> next{0};
    std::atomic<int> mismatches{0};
    std::mutex mismatch_mu;
    std::string first_mismatch;
    const std::uint64_t floor_connections_before = site_b.connections();
    const double cpu_before = ProcCpuSeconds(0);
    const double site_cpu_before = site_b.serving_cpu_seconds();
    const auto f0 = Steady::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < concurrency; ++t) {
      threads.emplace_back([&] {
        while (true) {
          const std::size_t k = next++;
          if (k >= items.size()) return;
          std::map<std::string, std::string> keys;
          for (const Recorded* r : items[k]) {
            const http::Response resp = send(*r, keys);
            if (resp.status != r->status) {
              ++mismatches;
              std::lock_guard lock(mismatch_mu);
              if (first_mismatch.empty()) {
                first_mismatch = r->method + " " + r->target + ": " + std::to_string(resp.status) +
                                 ", recorded " + std::to_string(r->status);
              }
            }
          }
        }
      });
    }
    for (auto& t : threads) t.join();
    const double floor_s = std::chrono::duration<double>(Steady::now() - f0).count();
    const double floor_cpu = ProcCpuSeconds(0) - cpu_before;
    const double floor_jira_cpu = site_b.serving_cpu_seconds() - site_cpu_before;
    const std::uint64_t floor_connections = site_b.connections() - floor_connections_before;
    if (mismatches > 0) {
      Die(std::to_string(mismatches.load()) +
          " replayed requests answered differently, first: " + first_mismatch);
    }
    return FloorRun{floor_s, floor_cpu, floor_jira_cpu, floor_connections, skipped_logins};
  };
  const FloorRun kept_alive = run_floor();
  const double floor_s = kept_alive.seconds;
  const std::uint64_t floor_connections = kept_alive.connections;
  const int skipped_logins = kept_alive.skipped_logins;

  const double agent_rate = jobs / agent_s;
  const double floor_rate = jobs / floor_s;
  const double ratio = agent_rate / floor_rate;
  std::printf(
      "provisioning, %d jira.user.provision jobs (new user, a product, a group), %d at a time, "
      "fake Jira answering after %d ms, the control plane after %d ms:\n",
      jobs, concurrency, latency_ms, cp_latency_ms);
  std::printf(
      "  agent (real binary, end to end):  %7.2f s  %7.1f jobs/s  %zu Jira requests, %llu TLS "
      "connections\n",
      agent_s, agent_rate, measured.size(), static_cast<unsigned long long>(agent_connections));
  std::printf(
      "  floor (same requests, direct):    %7.2f s  %7.1f jobs/s  %llu TLS connections "
      "(%d login requests not replayed)\n",
      floor_s, floor_rate, static_cast<unsigned long long>(floor_connections), skipped_logins);
  const bool slowed = latency_ms != 0 || cp_latency_ms != 0;
  std::printf("  ratio agent / floor %.2f (%s)\n", ratio,
              slowed         ? "no target with a slowed fake"
              : ratio >= 0.8 ? "target >= 0.8: met"
                             : "target >= 0.8: MISSED");
  std::printf(
      "  an agent job on average (%d jobs): lease -> first Jira request %.2f ms, Jira requests "
      "%.2f ms, last Jira request -> result received %.2f ms\n",
      broken_down, before_ms, jira_ms, after_ms);
  std::printf("  floor: %.2f ms of requests per job and lane\n",
              floor_s * 1000.0 * concurrency / jobs);
  // Both sides share this machine's cores with the fakes: when they are busy, the ratio is bounded
  // by the CPU each side spends per job. The fake control plane's share (TLS, signing each job,
  // checking each result) has no counterpart in the floor: an agent that spent no more CPU than
  // the floor's client would still run the floor's CPU plus the control plane's per job, so on
  // busy cores the ratio cannot pass floor / (floor + control plane).
  const long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  const auto per_job = [&](double seconds) { return seconds * 1000.0 / jobs; };
  const double agent_path_cpu_ms = per_job(agent_cpu + fakes_cpu);
  const double floor_cpu_ms = per_job(kept_alive.cpu_seconds);
  const double cp_cpu_ms = per_job(cp_cpu);
  const double ceiling = floor_cpu_ms / (floor_cpu_ms + cp_cpu_ms);
  std::printf(
      "  CPU per job: agent path %.2f ms (agent %.2f, fake control plane %.2f, fake Jira %.2f, "
      "rest of this program %.2f), floor %.2f ms (client %.2f, fake Jira %.2f); %ld cores busy "
      "%.0f%% and %.0f%% of the time\n",
      agent_path_cpu_ms, per_job(agent_cpu), cp_cpu_ms, per_job(jira_cpu),
      per_job(fakes_cpu - cp_cpu - jira_cpu), floor_cpu_ms,
      per_job(kept_alive.cpu_seconds - kept_alive.jira_cpu_seconds),
      per_job(kept_alive.jira_cpu_seconds), cores,
      100.0 * (agent_cpu + fakes_cpu) / (agent_s * static_cast<double>(cores)),
      100.0 * kept_alive.cpu_seconds / (floor_s * static_cast<double>(cores)));
  if (!slowed) {  // a slowed fake leaves the cores idle, and then CPU bounds nothing
    std::printf(
        "  ceiling on busy cores, the control plane's CPU counted and the agent's taken as the "
        "floor client's: %.2f\n",
        ceiling);
  }

  bench::Figure f;
  f.section = "provision";
  f.id = "provision.jobs_per_s";
  f.name = "provisioning throughput";
  if (latency_ms != 0) {
    f.id += "_latency" + std::to_string(latency_ms);
    f.name += ", Jira answers in " + std::to_string(latency_ms) + " ms";
  }
  if (cp_latency_ms != 0) {
    f.id += "_cp_latency" + std::to_string(cp_latency_ms);
    f.name += ", control plane answers in " + std::to_string(cp_latency_ms) + " ms";
  }
  f.value = agent_rate;
  f.unit = "jobs/s";
  f.reference = floor_rate;
  f.reference_name = "fake Jira floor";
  f.ratio = ratio;
  if (!slowed) {  // the target's figure; the slowed fakes show what a slower server costs
    f.target = "ratio >= 0.8";
    f.met = ratio >= 0.8;
  }
  char breakdown[320];
  std::snprintf(breakdown, sizeof breakdown,
                "; an agent job: %.1f ms to the first Jira request, %.1f ms of Jira requests "
                "(floor %.1f), %.1f ms to the result; CPU per job %.2f ms (agent %.2f, fake "
                "control plane %.2f; floor %.2f)",
                before_ms, jira_ms, floor_s * 1000.0 * concurrency / jobs, after_ms,
                agent_path_cpu_ms, per_job(agent_cpu), cp_cpu_ms, floor_cpu_ms);
  const std::string ceiling_note =
      slowed ? "" : "; ceiling on busy cores " + std::to_string(ceiling).substr(0, 4);
  f.note = std::to_string(jobs) + " provision jobs, " + std::to_string(concurrency) +
           " in flight, " + std::to_string(measured.size()) +
           " Jira requests; TLS connections: " + "agent " + std::to_string(agent_connections) +
           ", floor " + std::to_string(floor_connections) + breakdown + ceiling_note;
  bench::Report(f);

  return 0;
}
