// cakewalk-chaos: the real `cakewalk-agent run`, SIGKILLed at random moments while both fakes
// inject network faults, then checked for exactly-once results and an exact Jira end state.
//
//   cakewalk-chaos [--kills N] [--ops N] [--seed S] [--fault-rate P] [--min-ms M] [--max-ms M]
//                  [--settle-seconds S] [--keep] [--dir DIR]
//
// Set-up (every piece a separate process, as in production): fake-control-plane (leases of 4 s,
// so a killed agent's jobs come back quickly), two fake-jira (Data Center 10.3 with two-step
// verification, and Cloud) with generated sites, a private SoftHSM token (softhsm-init), the
// agent enrolled, the Jira password and MFA key, the Cloud API token and organization key stored
// in the token through the CLI.
//
// Work: "operations" with disjoint subjects, so that the end state they imply is exact whatever
// order and concurrency they run in — provision a new user (groups + product), add a user to a
// group, remove a user from a group, remove a user's access — on both Jiras, plus access syncs
// and a few forged jobs. They are enqueued through the control plane's /_fake/jobs over the
// first cycles. An operation whose job fails with a retryable error is enqueued again (a new job
// with the same parameters), as Cakewalk would.
//
// Chaos: N cycles of start agent, wait a random time (--min-ms..--max-ms), SIGKILL. Before a cycle,
// with probability --fault-rate, faults are queued at the control plane (5xx, 429 with
// Retry-After, resets, delays, truncation, malformed JSON, results processed but answered with a
// reset) and at one of the Jiras (503/429, resets before or after the request was handled,
// delays, truncated answers). Then the faults are cleared, the agent runs until every operation
// is settled (at most --settle-seconds), and is stopped with SIGTERM.
//
// Checks (each a row of the summary; any failure exits 1 and keeps the folder):
//   1. every job has exactly one accepted result; other deliveries are identical re-sends or
//      409s for superseded leases; the control plane saw no violation (differing results, reused
//      record seqs, another agent's lease ...);
//   2. every operation ended in success (forged jobs: rejected with their reason);
//   3. each Jira's state is what the operations imply (memberships, products, users);
//   4. the mutation logs hold no mutation twice and none outside the operations' subjects;
//   5. the journal passes SQLite's integrity_check, owes nothing, has every job reported with the
//      control plane's accepted result, and every extra run follows an interruption;
//   6. the agent stops on SIGTERM with status 0.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/journal.h"
#include "base/json.h"
#include "tests/fakes/control_plane/https_client.h"

extern char** environ;

namespace cakewalk::chaos {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::HttpsClient;

// ---- Small process and file helpers -------------------------------------------------------------

// Every long-running child, so that a fatal error takes them down too (they also run under
// setpriv --pdeathsig, which covers this program being killed).
std::vector<pid_t> g_children;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "cakewalk-chaos: %s\n", what.c_str());
  for (pid_t pid : g_children) kill(pid, SIGKILL);
  std::exit(2);
}

std::string Slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

std::vector<std::string> Environment(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    const std::string name = kv.substr(0, kv.find('='));
    const bool replaced = std::any_of(extra.begin(), extra.end(), [&](const std::string& x) {
      return x.substr(0, x.find('=')) == name;
    });
    if (!replaced) env.push_back(kv);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

// posix_spawn (never fork: PKCS#11 sessions and threads) with stdin from `stdin_path`, stdout and
// stderr appended to `log`.
pid_t Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env,
            const fs::path& log, const fs::path& stdin_path = "/dev/null") {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, stdin_path.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const std::vector<std::string> env = Environment(extra_env);
  std::vector<char*> envp;
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) Die("cannot start " + argv[0] + ": " + std::strerror(rc));
  return pid;
}

void Forget(pid_t pid) {
  g_children.erase(std::remove(g_children.begin(), g_children.end(), pid), g_children.end());
}

// A long-running child that dies with this process (setpriv execs it: same pid).
pid_t SpawnTied(std::vector<std::string> argv, const std::vector<std::string>& extra_env,
                const fs::path& log) {
  argv.insert(argv.begin(), {"/usr/bin/setpriv", "--pdeathsig", "KILL", "--"});
  const pid_t pid = Spawn(argv, extra_env, log);
  g_children.push_back(pid);
  return pid;
}

// Waits for `pid`; the wait status, or nullopt after `timeout`.
std::optional<int> WaitPid(pid_t pid, milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0) return std::nullopt;
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(milliseconds(20));
  }
}

// Runs a command to completion; its exit status (or -1), output in `log`.
int Run(const std::vector<std::string>& argv, const std::vector<std::string>& env,
        const fs::path& log, const fs::path& stdin_path = "/dev/null") {
  const pid_t pid = Spawn(argv, env, log, stdin_path);
  auto status = WaitPid(pid, seconds(120));
  if (!status) {
    kill(pid, SIGKILL);
    WaitPid(pid, seconds(5));
    return -1;
  }
  return WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
}

fs::path WaitForFile(const fs::path& p, seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!fs::exists(p)) {
    if (std::chrono::steady_clock::now() >= deadline) Die("timed out waiting for " + p.string());
    std::this_thread::sleep_for(milliseconds(50));
  }
  return p;
}

// ---- Options ------------------------------------------------------------------------------------

struct Options {
  int kills = 100;
  int ops = 0;  // 0: from kills
  std::uint64_t seed = 0;
  double fault_rate = 0.6;
  int min_ms = 150;
  int max_ms = 3000;
  int settle_seconds = 240;
  bool keep = false;
  fs::path dir;
};

Options ParseOptions(int argc, char** argv) {
  Options o;
  o.seed = static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Die("missing value after " + a);
      return argv[++i];
    };
    auto number = [&](long long min, long long max) {
      const std::string v = value();
      char* end = nullptr;
      const long long n = std::strtoll(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < min || n > max) Die("bad value for " + a + ": " + v);
      return n;
    };
    if (a == "--kills") {
      o.kills = static_cast<int>(number(0, 100000));
    } else if (a == "--ops") {
      o.ops = static_cast<int>(number(1, 10000));
    } else if (a == "--seed") {
      o.seed = static_cast<std::uint64_t>(number(0, std::numeric_limits<long long>::max()));
    } else if (a == "--fault-rate") {
      o.fault_rate = static_cast<double>(number(0, 100)) / 100.0;
    } else if (a == "--min-ms") {
      o.min_ms = static_cast<int>(number(0, 600000));
    } else if (a == "--max-ms") {
      o.max_ms = static_cast<int>(number(1, 600000));
    } else if (a == "--settle-seconds") {
      o.settle_seconds = static_cast<int>(number(10, 36000));
    } else if (a == "--keep") {
      o.keep = true;
    } else if (a == "--dir") {
      o.dir = value();
    } else if (a == "-h" || a == "--help") {
      std::printf(
          "usage: cakewalk-chaos [--kills N] [--ops N] [--seed S] [--fault-rate PERCENT]\n"
          "                      [--min-ms M] [--max-ms M] [--settle-seconds S] [--keep]"
          " [--dir DIR]\n");
      std::exit(0);
    } else {
      Die("unknown argument " + a + " (--help)");
    }
  }
  if (o.min_ms > o.max_ms) Die("--min-ms is larger than --max-ms");
  if (o.ops == 0) o.ops = std::clamp(o.kills / 2, 16, 80);
  return o;
}

// ---- The fakes ----------------------------------------------------------------------------------

struct Jira {
  std::string connection;  // jira-dc, jira-cloud
  bool cloud = false;
  fs::path dir;
  pid_t pid = -1;
  std::string url;
  std::unique_ptr<HttpsClient> http;

  Json::Value Get(const std::string& path) const {
    auto r = http->Get(url + path);
    if (r.status != 200) Die("fake Jira " + path + " answered " + std::to_string(r.status));
    return r.Json();
  }
  void Post(const std::string& path, const Json::Value& body) const {
    auto r = http->Post(url + path, body);
    if (r.status >= 300) Die("fake Jira " + path + " answered " + std::to_string(r.status));
  }
  void ClearFaults() const {
    auto r = http->Request("DELETE", url + "/_fake/faults");
    if (r.status >= 300) Die("clearing the fake Jira's faults failed");
  }
};

struct ControlPlane {
  fs::path dir;
  pid_t pid = -1;
  std::string api_url;  // .../agent/v1
  std::string root;     // https://localhost:port
  std::unique_ptr<HttpsClient> http;

  Json::Value Get(const std::string& path) const {
    auto r = http->Get(root + path);
    if (r.status != 200)
      Die("fake control plane " + path + " answered " + std::to_string(r.status));
    return r.Json();
  }
  Json::Value Post(const std::string& path, const Json::Value& body) const {
    auto r = http->Post(root + path, body);
    if (r.status >= 300) {
      Die("fake control plane " + path + " answered " + std::to_string(r.status) + " " + r.body);
    }
    return r.Json();
  }
  void ClearFaults() const {
    auto r = http->Request("DELETE", root + "/_fake/faults");
    if (r.status >= 300) Die("clearing the control plane's faults failed");
  }
};

// ---- Operations ---------------------------------------------------------------------------------

struct Op {
  int index = 0;
  std::string kind;  // provision, add_member, remove_member, remove_access, sync, forged
  const Jira* jira = nullptr;
  std::string type;  // job type
  Json::Value params;
  std::string forgery;   // forged jobs only
  std::string user;      // the subject: DC username / Cloud accountId (new users: the e-mail)
  std::string username;  // new user's DC name
  std::string email;
  std::string group;
  std::vector<std::string> job_ids;  // one per attempt
  std::string outcome;               // "", succeeded, failed:<code>, rejected:<code>
  int retries = 0;
};

bool Has(const Json::Value& array, const std::string& value) {
  if (!array.isArray()) return false;
  for (const auto& v : array) {
    if (v.isString() && v.asString() == value) return true;
  }
  return false;
}

std::string Str(const Json::Value& v) { return v.isString() ? v.asString() : std::string(); }

// Disjoint operations on one Jira, from its generated site.
void PlanJira(const Jira& jira, int count, std::mt19937_64& rng, std::vector<Op>& ops) {
  const Json::Value state = jira.Get("/_fake/state");
  std::vector<std::string> groups;
  for (const auto& g : state["groups"]) {
    const std::string name = Str(g["name"]);
    if (name.rfind("jira-", 0) == 0 || name == "site-admins" || name == "administrators" ||
        name.empty()) {
      continue;
    }
    groups.push_back(name);
  }
  if (groups.empty()) Die("the fake Jira has no custom groups");
  std::vector<const Json::Value*> people;
  for (const auto& u : state["users"]) {
    if (Str(u["nhi"]) != "human" || !u["active"].asBool() || u["deleted"].asBool()) continue;
    if (jira.cloud && (u["search_hidden"].asBool() || !u["managed"].asBool() ||
                       !u["email"].isString() || Str(u["account_type"]) != "atlassian")) {
      continue;
    }
    if (Str(u["username"]) == "admin" || Str(u["email"]) == "admin@corp.example") continue;
    people.push_back(&u);
  }
  std::shuffle(people.begin(), people.end(), rng);
  std::size_t next_person = 0;
  auto ref = [&](const Json::Value& u) {
    Json::Value r(Json::objectValue);
    if (jira.cloud) {
      r["account_id"] = Str(u["id"]);
    } else {
      r["username"] = Str(u["username"]);
    }
    return r;
  };
  auto subject = [&](const Json::Value& u) { return Str(u["id"]); };
  static const char* const kKinds[] = {"provision", "add_member", "remove_member", "remove_access"};
  for (int i = 0; i < count; ++i) {
    Op op;
    op.jira = &jira;
    op.kind = kKinds[static_cast<std::size_t>(i) % 4];
    op.group = groups[static_cast<std::size_t>(rng() % groups.size())];
    if (op.kind == "provision") {
      const std::string name = "chaos-" + jira.connection.substr(5) + "-" + std::to_string(i);
      op.type = "jira.user.provision";
      op.email = name + "@corp.example";
      op.username = name;
      op.params["email"] = op.email;
      op.params["display_name"] = "Chaos " + std::to_string(i);
      if (!jira.cloud) op.params["username"] = name;
      op.params["groups"].append(op.group);
      op.params["products"].append("jira-software");
      ops.push_back(op);
      continue;
    }
    // An existing person who fits the operation.
    const Json::Value* person = nullptr;
    while (next_person < people.size() && person == nullptr) {
      const Json::Value* u = people[next_person++];
      if (op.kind == "add_member" && !Has((*u)["groups"], op.group)) person = u;
      if (op.kind == "remove_member") {
        for (const auto& g : (*u)["groups"]) {
          if (std::find(groups.begin(), groups.end(), Str(g)) != groups.end()) {
            op.group = Str(g);
            person = u;
            break;
          }
        }
      }
      if (op.kind == "remove_access" && (*u)["groups"].size() > 0) person = u;
    }
    if (person == nullptr) continue;  // the site ran out of fitting people
    op.user = subject(*person);
    if (!jira.cloud) op.username = Str((*person)["username"]);  // DC mutations name the login
    if (op.kind == "remove_access") {
      op.type = "jira.user.deprovision";
      op.params["user"] = ref(*person);
      op.params["action"] = "remove_access";
    } else {
      op.type = op.kind == "add_member" ? "jira.group.add_member" : "jira.group.remove_member";
      op.params["user"] = ref(*person);
      op.params["group"] = op.group;
    }
    ops.push_back(op);
  }
}

// ---- The run ------------------------------------------------------------------------------------

class Chaos {
 public:
  explicit Chaos(Options o) : o_(std::move(o)), rng_(o_.seed) {}
  int Main();

 private:
  void SetUp();
  void Plan();
  void Enqueue(Op& op);
  void InjectFaults();
  void Cycle(int i);
  // Reads the control plane's jobs; settles operations; re-enqueues retryable failures. True when
  // every operation is settled.
  bool Harvest();
  pid_t StartAgent();
  void TearDown(bool success);

  std::vector<std::string> AgentEnv() const { return {"SOFTHSM2_CONF=" + softhsm_conf_}; }
  std::vector<std::string> AgentArgv(std::vector<std::string> args) const {
    std::vector<std::string> argv = {CAKEWALK_AGENT_BINARY, "--config", config_.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

  // Check rows.
  struct Row {
    std::string check;
    bool ok = true;
    std::string detail;
  };
  void Check(std::string check, bool ok, std::string detail) {
    rows_.push_back({std::move(check), ok, std::move(detail)});
  }
  void CheckResults(const Json::Value& jobs);
  void CheckOperations();
  void CheckJiraState(const Jira& jira);
  void CheckMutations(const Jira& jira);
  void CheckJournal(const Json::Value& jobs);

  Options o_;
  std::mt19937_64 rng_;
  fs::path dir_;
  fs::path config_;
  std::string softhsm_conf_;
  ControlPlane cp_;
  Jira dc_, cloud_;
  std::vector<Op> ops_;
  std::map<std::string, std::size_t> op_of_job_;
  std::size_t enqueued_ = 0;
  bool sync_available_ = true;
  int cp_faults_ = 0, jira_faults_ = 0;
  int kills_during_start_ = 0;
  int agent_starts_ = 0;
  int final_exit_ = -100;
  std::vector<Row> rows_;
};

void Chaos::SetUp() {
  if (o_.dir.empty()) {
    std::string templ = (fs::temp_directory_path() / "cakewalk-chaos.XXXXXX").string();
    if (mkdtemp(templ.data()) == nullptr) Die("mkdtemp failed");
    dir_ = templ;
  } else {
    dir_ = fs::absolute(o_.dir);
    fs::create_directories(dir_);
  }
  chmod(dir_.c_str(), 0700);
  std::printf("cakewalk-chaos: seed %llu, folder %s\n", static_cast<unsigned long long>(o_.seed),
              dir_.c_str());

  cp_.dir = dir_ / "cp";
  cp_.pid = SpawnTied({FAKE_CONTROL_PLANE_BINARY, "--dir", cp_.dir.string(), "--lease-seconds", "4",
                       "--poll-wait-seconds", "1"},
                      {}, dir_ / "cp.log");
  dc_.connection = "jira-dc";
  dc_.dir = dir_ / "jira-dc";
  cloud_.connection = "jira-cloud";
  cloud_.cloud = true;
  cloud_.dir = dir_ / "jira-cloud";
  const std::string users = "300";
  const std::string seed = std::to_string(o_.seed % 100000 + 1);
  dc_.pid = SpawnTied({FAKE_JIRA_BINARY, "--dir", dc_.dir.string(), "--flavor", "datacenter",
                       "--version", "10.3.4", "--users", users, "--seed", seed},
                      {}, dir_ / "jira-dc.log");
  cloud_.pid = SpawnTied({FAKE_JIRA_BINARY, "--dir", cloud_.dir.string(), "--flavor", "cloud",
                          "--users", users, "--seed", seed},
                         {}, dir_ / "jira-cloud.log");

  cp_.api_url = Trimmed(Slurp(WaitForFile(cp_.dir / "url", seconds(60))));
  cp_.root = cp_.api_url.substr(0, cp_.api_url.find('/', std::string("https://").size()));
  cp_.http = std::make_unique<HttpsClient>(Slurp(cp_.dir / "ca.pem"));
  for (Jira* j : {&dc_, &cloud_}) {
    j->url = Trimmed(Slurp(WaitForFile(j->dir / "url", seconds(60))));
    j->http = std::make_unique<HttpsClient>(Slurp(j->dir / "ca.pem"));
  }

  // The token.
  const fs::path init_out = dir_ / "softhsm-init.out";
  if (Run({SOFTHSM_INIT_BINARY, "--dir", dir_.string(), "--label", "chaos"}, {}, init_out) != 0) {
    Die("softhsm-init failed: " + Slurp(init_out));
  }
  std::string token_uri, pin_file;
  std::istringstream lines(Slurp(init_out));
  for (std::string line; std::getline(lines, line);) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    const std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    if (k == "SOFTHSM2_CONF") softhsm_conf_ = v;
    if (k == "TOKEN_URI") token_uri = v;
    if (k == "PIN_FILE") pin_file = v;
  }
  if (softhsm_conf_.empty() || token_uri.empty() || pin_file.empty()) Die("softhsm-init output");

  // The configuration.
  Json::Value c(Json::objectValue);
  c["state_dir"] = (dir_ / "state").string();
  c["log_level"] = "info";
  c["control_plane"]["url"] = cp_.api_url;
  c["control_plane"]["ca_file"] = (cp_.dir / "ca.pem").string();
  c["token"]["module"] = "/usr/lib/softhsm/libsofthsm2.so";
  c["token"]["uri"] = token_uri;
  c["token"]["pin_file"] = pin_file;
  c["jobs"]["max_concurrent"] = 4;
  c["jobs"]["poll_wait_seconds"] = 1;
  c["jobs"]["shutdown_grace_seconds"] = 5;
  c["jobs"]["timeout_seconds"] = 120;
  Json::Value dcc(Json::objectValue);
  dcc["name"] = dc_.connection;
  dcc["type"] = "jira-datacenter";
  dcc["base_url"] = dc_.url;
  dcc["ca_file"] = (dc_.dir / "ca.pem").string();
  dcc["provisioning"]["auth"] = "password";
  dcc["provisioning"]["username"] = Trimmed(Slurp(dc_.dir / "admin-username"));
  dcc["provisioning"]["mfa"] = "totp";
  dcc["access_sync"]["auth"] = "password";
  Json::Value cc(Json::objectValue);
  cc["name"] = cloud_.connection;
  cc["type"] = "jira-cloud";
  cc["base_url"] = cloud_.url;
  cc["ca_file"] = (cloud_.dir / "ca.pem").string();
  cc["admin_api_url"] = cloud_.url + "/admin-api";
  cc["provisioning"]["auth"] = "api-token";
  cc["provisioning"]["username"] = Trimmed(Slurp(cloud_.dir / "admin-email"));
  cc["provisioning"]["org_id"] = Trimmed(Slurp(cloud_.dir / "org-id"));
  cc["access_sync"]["auth"] = "api-token";
  c["connections"].append(dcc);
  c["connections"].append(cc);
  config_ = dir_ / "agent.json";
  std::ofstream(config_) << WritePrettyJson(c);
  chmod(config_.c_str(), 0600);

  // Enrollment and secrets, through the CLI (secrets on standard input only).
  const fs::path cli = dir_ / "cli.log";
  auto cli_ok = [&](std::vector<std::string> args, const fs::path& in, const char* what) {
    if (Run(AgentArgv(std::move(args)), AgentEnv(), cli, in) != 0) {
      Die(std::string(what) + " failed; see " + cli.string());
    }
  };
  cli_ok({"enroll", "--token-file", (cp_.dir / "enrollment-token").string()}, "/dev/null",
         "enroll");
  cli_ok({"secret", "set", "jira-dc", "password"}, dc_.dir / "admin-password", "secret set");
  cli_ok({"mfa", "enroll", "jira-dc"}, dc_.dir / "admin-totp-seed", "mfa enroll");
  cli_ok({"secret", "set", "jira-cloud", "api-token"}, cloud_.dir / "admin-api-token",
         "secret set");
  cli_ok({"secret", "set", "jira-cloud", "org-api-key"}, cloud_.dir / "org-api-key", "secret set");
}

void Chaos::Plan() {
  // Two thirds on Cloud: the Data Center login waits for a fresh TOTP step after every restart
  // (a step is never used twice), so its jobs progress more slowly under constant kills.
  const int syncs = std::max(2, o_.ops / 10);
  const int forged = std::max(2, o_.ops / 20);
  const int jira_ops = std::max(4, o_.ops - syncs - forged);
  PlanJira(dc_, jira_ops / 3, rng_, ops_);
  PlanJira(cloud_, jira_ops - jira_ops / 3, rng_, ops_);
  for (int i = 0; i < syncs; ++i) {
    Op op;
    op.kind = "sync";
    op.jira = i % 2 == 0 ? &cloud_ : &dc_;
    op.type = "jira.access_sync";
    op.params = Json::Value(Json::objectValue);
    ops_.push_back(op);
  }
  static const char* const kForgeries[] = {"bad_signature", "expired", "alg_none",
                                           "wrong_audience"};
  for (int i = 0; i < forged; ++i) {
    Op op;
    op.kind = "forged";
    op.jira = &cloud_;
    op.type = "jira.group.add_member";
    op.forgery = kForgeries[i % 4];
    op.params["user"]["email"] = "nobody@corp.example";
    op.params["group"] = "nothing";
    ops_.push_back(op);
  }
  std::shuffle(ops_.begin(), ops_.end(), rng_);
  for (std::size_t i = 0; i < ops_.size(); ++i) ops_[i].index = static_cast<int>(i);
}

void Chaos::Enqueue(Op& op) {
  Json::Value spec(Json::objectValue);
  spec["type"] = op.type;
  spec["connection"] = op.jira->connection;
  spec["params"] = op.params;
  if (!op.forgery.empty()) spec["forgery"] = op.forgery;
  const Json::Value r = cp_.Post("/_fake/jobs", spec);
  const std::string id = Str(r["job_id"]);
  if (id.empty()) Die("the control plane gave no job id");
  op.job_ids.push_back(id);
  op_of_job_[id] = static_cast<std::size_t>(op.index);
}

void Chaos::InjectFaults() {
  std::uniform_real_distribution<double> unit(0, 1);
  if (unit(rng_) < o_.fault_rate) {
    static const char* const kEndpoints[] = {"jobs/claim", "jobs/lease",   "jobs/result",
                                             "heartbeat",  "jobs/records", "signing-keys"};
    Json::Value f(Json::objectValue);
    f["endpoint"] = kEndpoints[rng_() % 6];
    f["count"] = static_cast<int>(1 + rng_() % 3);
    switch (rng_() % 8) {
      case 0:
        f["kind"] = "status";
        f["status"] = 503;
        f["retry_after"] = "1";
        break;
      case 1:
        f["kind"] = "status";
        f["status"] = 429;
        f["retry_after_http_date_in"] = 1;
        break;
      case 2:
        f["kind"] = "reset";
        break;
      case 3:
        f["kind"] = "delay";
        f["delay_ms"] = static_cast<int>(200 + rng_() % 1500);
        break;
      case 4:
        f["kind"] = "truncate";
        break;
      case 5:
        f["kind"] = "malformed_json";
        break;
      case 6:
        f["kind"] = "html";
        f["status"] = 502;
        break;
      default:  // done, but the answer is lost
        f["kind"] = "reset";
        f["process_request"] = true;
        f["endpoint"] = "jobs/result";
        break;
    }
    cp_.Post("/_fake/faults", f);
    ++cp_faults_;
  }
  if (unit(rng_) < o_.fault_rate) {
    const Jira& j = rng_() % 3 == 0 ? dc_ : cloud_;
    Json::Value f(Json::objectValue);
    f["path_contains"] = "/rest/";
    f["count"] = static_cast<int>(1 + rng_() % 3);
    switch (rng_() % 7) {
      case 0:
        f["status"] = 503;
        break;
      case 1:
        f["status"] = 429;
        f["retry_after_seconds"] = 1;
        break;
      case 2:
        f["transport"] = "reset";
        break;
      case 3:  // Jira did it, the agent never heard
        f["transport"] = "reset";
        f["after_handling"] = true;
        break;
      case 4:
        f["transport"] = "delay";
        f["delay_ms"] = static_cast<int>(100 + rng_() % 1500);
        break;
      case 5:
        f["transport"] = "truncate";
        break;
      default:
        f["status"] = 502;
        f["html"] = true;
        break;
    }
    j.Post("/_fake/faults", f);
    ++jira_faults_;
  }
}

pid_t Chaos::StartAgent() {
  ++agent_starts_;
  const pid_t pid = SpawnTied(AgentArgv({"run"}), AgentEnv(), dir_ / "agent.log");
  return pid;
}

void Chaos::Cycle(int i) {
  // Operations are enqueued over the first 70% of the cycles (all at once when there are none).
  const int enqueue_cycles = std::max(1, o_.kills * 7 / 10);
  const std::size_t due = i >= enqueue_cycles ? ops_.size()
                                              : ops_.size() * static_cast<std::size_t>(i + 1) /
                                                    static_cast<std::size_t>(enqueue_cycles);
  while (enqueued_ < due) Enqueue(ops_[enqueued_++]);
  InjectFaults();
  const pid_t agent = StartAgent();
  std::uniform_int_distribution<int> wait(o_.min_ms, o_.max_ms);
  const int ms = wait(rng_);
  if (ms < 400) ++kills_during_start_;
  std::this_thread::sleep_for(milliseconds(ms));
  kill(agent, SIGKILL);
  if (!WaitPid(agent, seconds(10))) Die("the killed agent did not go away");
  Forget(agent);
  Harvest();
}

bool Chaos::Harvest() {
  const Json::Value jobs = cp_.Get("/_fake/jobs")["jobs"];
  std::map<std::string, const Json::Value*> by_id;
  for (const auto& j : jobs) by_id[Str(j["id"])] = &j;
  bool all = true;
  for (std::size_t i = 0; i < enqueued_; ++i) {
    Op& op = ops_[i];
    if (!op.outcome.empty()) continue;
    auto it = by_id.find(op.job_ids.back());
    if (it == by_id.end() || Str((*it->second)["state"]) != "finished") {
      all = false;
      continue;
    }
    const Json::Value& result = (*it->second)["result"];
    const std::string status = Str(result["status"]);
    if (status == "succeeded") {
      op.outcome = "succeeded";
      continue;
    }
    const std::string code = Str(result["error"]["code"]);
    if (op.kind == "sync" && status == "rejected" && code == "unknown_type") {
      sync_available_ = false;  // this build has no access sync executor yet
      op.outcome = "rejected:unknown_type";
      continue;
    }
    if (status == "failed" && result["error"]["retryable"].asBool() && op.retries < 8) {
      ++op.retries;
      Enqueue(op);  // as Cakewalk would: the same operation, a new job
      all = false;
      continue;
    }
    op.outcome = status + ":" + code;
  }
  return all && enqueued_ == ops_.size();
}

void Chaos::CheckResults(const Json::Value& jobs) {
  int accepted_once = 0, resends = 0, bad = 0;
  std::string first_problem;
  for (const auto& j : jobs) {
    int accepted = 0;
    for (const auto& d : j["result_deliveries"]) {
      const std::string outcome = Str(d["outcome"]);
      if (outcome == "accepted") {
        ++accepted;
      } else if (outcome == "duplicate") {
        ++resends;
      } else if (outcome != "lease_lost" && outcome != "lease_unknown" &&
                 outcome != "job_finished") {
        ++bad;
        if (first_problem.empty()) first_problem = Str(j["id"]) + ": delivery " + outcome;
      }
    }
    if (accepted == 1 && !j["differing_results"].asBool()) {
      ++accepted_once;
    } else if (first_problem.empty()) {
      first_problem = Str(j["id"]) + ": " + std::to_string(accepted) + " accepted results" +
                      (j["differing_results"].asBool() ? ", differing results" : "");
    }
  }
  const Json::Value violations = cp_.Get("/_fake/violations");
  const bool ok = accepted_once == static_cast<int>(jobs.size()) && bad == 0 && violations.empty();
  if (!violations.empty() && first_problem.empty()) {
    first_problem = "violation: " + Str(violations[0]["what"]);
  }
  Check("every job reported exactly once", ok,
        std::to_string(accepted_once) + "/" + std::to_string(jobs.size()) +
            " jobs with one accepted result; " + std::to_string(resends) + " identical re-sends; " +
            std::to_string(violations.size()) + " violations" +
            (first_problem.empty() ? "" : "; first problem: " + first_problem));
}

void Chaos::CheckOperations() {
  std::map<std::string, int> succeeded, total;
  int retries = 0;
  std::string failures;
  for (const auto& op : ops_) {
    ++total[op.kind];
    retries += op.retries;
    bool ok = op.outcome == "succeeded";
    if (op.kind == "forged") ok = op.outcome.rfind("rejected:", 0) == 0;
    if (op.kind == "sync" && !sync_available_) ok = op.outcome == "rejected:unknown_type";
    if (ok) {
      ++succeeded[op.kind];
    } else if (failures.size() < 300) {
      failures += " " + op.kind + "#" + std::to_string(op.index) + "=" +
                  (op.outcome.empty() ? "unsettled" : op.outcome);
    }
  }
  std::string detail;
  bool ok = true;
  for (const auto& [kind, n] : total) {
    detail += kind + " " + std::to_string(succeeded[kind]) + "/" + std::to_string(n) + ", ";
    ok = ok && succeeded[kind] == n;
  }
  detail += std::to_string(retries) + " re-enqueued after retryable failures";
  if (!sync_available_) detail += "; access sync not in this build (unknown_type)";
  if (!failures.empty()) detail += "; not settled as expected:" + failures;
  Check("every operation settled as expected", ok, detail);
}

void Chaos::CheckJiraState(const Jira& jira) {
  const Json::Value state = jira.Get("/_fake/state");
  std::map<std::string, const Json::Value*> by_id, by_email, by_name;
  for (const auto& u : state["users"]) {
    by_id[Str(u["id"])] = &u;
    if (u["email"].isString()) by_email[Str(u["email"])] = &u;
    if (u["username"].isString()) by_name[Str(u["username"])] = &u;
  }
  int checked = 0;
  std::string wrong;
  for (const auto& op : ops_) {
    if (op.jira != &jira || op.outcome != "succeeded") continue;
    if (op.kind == "sync" || op.kind == "forged") continue;
    ++checked;
    const Json::Value* u = nullptr;
    if (op.kind == "provision") {
      auto it = jira.cloud ? by_email.find(op.email) : by_name.find(op.username);
      if (it != (jira.cloud ? by_email.end() : by_name.end())) u = it->second;
    } else {
      auto it = by_id.find(op.user);
      if (it != by_id.end()) u = it->second;
    }
    std::string problem;
    if (u == nullptr) {
      problem = "user missing";
    } else if (op.kind == "provision") {
      if (!(*u)["active"].asBool()) problem = "inactive";
      if (!Has((*u)["groups"], op.group)) problem = "not in " + op.group;
      if (!Has((*u)["products"], "jira-software")) problem = "no jira-software";
    } else if (op.kind == "add_member" && !Has((*u)["groups"], op.group)) {
      problem = "not in " + op.group;
    } else if (op.kind == "remove_member" && Has((*u)["groups"], op.group)) {
      problem = "still in " + op.group;
    } else if (op.kind == "remove_access" && (*u)["groups"].size() != 0) {
      problem = "still in " + std::to_string((*u)["groups"].size()) + " groups";
    }
    if (!problem.empty() && wrong.size() < 300) {
      wrong += " " + op.kind + "#" + std::to_string(op.index) + ":" + problem;
    }
  }
  Check("Jira state is what the jobs imply (" + jira.connection + ")", wrong.empty(),
        std::to_string(checked) + " operations checked against /_fake/state" +
            (wrong.empty() ? "" : ";" + wrong));
}

void Chaos::CheckMutations(const Jira& jira) {
  const Json::Value mutations = jira.Get("/_fake/mutations?since=0");
  // Subjects the operations may touch: existing users by id, new users by their name or e-mail.
  std::set<std::string> subjects;
  for (const auto& op : ops_) {
    if (op.jira != &jira) continue;
    if (!op.user.empty()) subjects.insert(op.user);
    if (!op.username.empty()) subjects.insert(op.username);
    if (!op.email.empty()) subjects.insert(op.email);
  }
  std::map<std::string, int> seen;
  int duplicates = 0, no_ops = 0, foreign = 0, during_setup = 0;
  std::string first;
  for (const auto& m : mutations) {
    const std::string kind = Str(m["kind"]);
    const std::string key = kind + " " + Str(m["subject"]) + " " + Str(m["object"]);
    if (Str(m["actor"]).empty()) {
      ++during_setup;  // the fake's own site generation
      continue;
    }
    const bool ours = subjects.count(Str(m["subject"])) != 0 || subjects.count(Str(m["label"]));
    if (!ours) {
      ++foreign;
      if (first.empty()) first = "unexpected: " + Str(m["text"]);
    }
    if (++seen[key] > 1) {
      if (kind == "sessions_killed") {
        ++no_ops;  // ending sessions again is a no-op (a job re-run after an interruption)
      } else {
        ++duplicates;
        if (first.empty()) first = "twice: " + Str(m["text"]);
      }
    }
  }
  Check("no Jira mutation twice or outside the jobs (" + jira.connection + ")",
        duplicates == 0 && foreign == 0,
        std::to_string(mutations.size() - static_cast<unsigned>(during_setup)) +
            " mutations by the agent, " + std::to_string(duplicates) + " duplicated, " +
            std::to_string(foreign) + " outside the jobs' subjects, " + std::to_string(no_ops) +
            " repeated session ends" + (first.empty() ? "" : "; " + first));
}

void Chaos::CheckJournal(const Json::Value& jobs) {
  const fs::path db = dir_ / "state" / agent::JobJournal::kFileName;
  const fs::path out = dir_ / "integrity_check.out";
  const int rc = Run({"/usr/bin/sqlite3", db.string(), "PRAGMA integrity_check;"}, {}, out);
  const std::string integrity = Trimmed(Slurp(out));
  Check("journal passes SQLite integrity_check", rc == 0 && integrity == "ok",
        rc == 0 ? integrity : "sqlite3 exit " + std::to_string(rc));

  auto journal = agent::JobJournal::Open(dir_ / "state");
  if (!journal.ok()) {
    Check("journal state rules", false, journal.status().ToString());
    return;
  }
  auto entries = (*journal)->Entries();
  auto pending = (*journal)->PendingCount();
  if (!entries.ok() || !pending.ok()) {
    Check("journal state rules", false, "cannot read the journal");
    return;
  }
  std::map<std::string, const agent::JournalEntry*> by_id;
  for (const auto& e : *entries) by_id[e.job_id] = &e;
  int reported = 0, extra_runs = 0, unexplained = 0, mismatched = 0, missing = 0;
  std::string first;
  for (const auto& j : jobs) {
    const std::string id = Str(j["id"]);
    if (j["leases"].empty()) continue;  // never delivered
    auto it = by_id.find(id);
    if (it == by_id.end()) {
      ++missing;
      if (first.empty()) first = id + " not in the journal";
      continue;
    }
    const agent::JournalEntry& e = *it->second;
    if (e.state == agent::JournalState::kReported)
      ++reported;
    else if (first.empty())
      first = id + " is " + std::string(agent::JournalStateName(e.state));
    // The stored result is the one the control plane accepted.
    const Json::Value& accepted = j["result"];
    if (e.result) {
      const std::string status =
          e.result->outcome == agent::JobResult::Outcome::kSucceeded ? "succeeded"
          : e.result->outcome == agent::JobResult::Outcome::kFailed  ? "failed"
                                                                     : "rejected";
      const bool same =
          status == Str(accepted["status"]) &&
          (status == "succeeded" ? e.result->output == accepted["output"]
                                 : e.result->error.code == Str(accepted["error"]["code"]));
      if (!same) {
        ++mismatched;
        if (first.empty()) first = id + ": the journal's result differs from the accepted one";
      }
    }
    if (e.runs > 1) {
      extra_runs += e.runs - 1;
      auto history = (*journal)->History(id);
      int interruptions = 0;
      if (history.ok()) {
        for (const auto& h : *history) {
          if (h.state == "interrupted" || h.state == "dropped") ++interruptions;
        }
      }
      if (e.runs - 1 > interruptions) {
        ++unexplained;
        if (first.empty()) {
          first = id + " ran " + std::to_string(e.runs) + " times after " +
                  std::to_string(interruptions) + " interruptions";
        }
      }
    }
  }
  const bool ok = missing == 0 && mismatched == 0 && unexplained == 0 && *pending == 0 &&
                  reported == static_cast<int>(std::count_if(
                                  jobs.begin(), jobs.end(),
                                  [](const Json::Value& j) { return !j["leases"].empty(); }));
  Check("journal state rules", ok,
        std::to_string(reported) + " jobs reported, " + std::to_string(*pending) +
            " results owed, " + std::to_string(extra_runs) + " re-runs (" +
            std::to_string(unexplained) + " without an interruption before them), " +
            std::to_string(mismatched) + " results differing from the accepted one" +
            (first.empty() ? "" : "; first: " + first));
}

void Chaos::TearDown(bool success) {
  for (pid_t pid : {cp_.pid, dc_.pid, cloud_.pid}) {
    if (pid > 0) {
      kill(pid, SIGTERM);
      if (!WaitPid(pid, seconds(10))) {
        kill(pid, SIGKILL);
        WaitPid(pid, seconds(5));
      }
    }
  }
  if (success && !o_.keep && o_.dir.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  } else {
    std::printf("cakewalk-chaos: kept %s (agent.log, cp.log, jira-*.log, state/)\n", dir_.c_str());
  }
}

int Chaos::Main() {
  const auto started = std::chrono::steady_clock::now();
  SetUp();
  Plan();
  std::printf("cakewalk-chaos: %zu operations, %d kills, faults with probability %.0f%%\n",
              ops_.size(), o_.kills, o_.fault_rate * 100);
  for (int i = 0; i < o_.kills; ++i) {
    Cycle(i);
    if ((i + 1) % 10 == 0 || i + 1 == o_.kills) {
      std::printf("cakewalk-chaos: %d/%d kills\n", i + 1, o_.kills);
      std::fflush(stdout);
    }
  }
  while (enqueued_ < ops_.size()) Enqueue(ops_[enqueued_++]);

  // Settle: no more faults, no more kills.
  cp_.ClearFaults();
  dc_.ClearFaults();
  cloud_.ClearFaults();
  const pid_t agent = StartAgent();
  const auto deadline = std::chrono::steady_clock::now() + seconds(o_.settle_seconds);
  bool settled = false;
  while (!(settled = Harvest()) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(300));
  }
  // Let the last acknowledgements land before stopping.
  std::this_thread::sleep_for(milliseconds(500));
  kill(agent, SIGTERM);
  if (auto status = WaitPid(agent, seconds(60))) {
    final_exit_ = WIFEXITED(*status) ? WEXITSTATUS(*status) : -WTERMSIG(*status);
  } else {
    kill(agent, SIGKILL);
    WaitPid(agent, seconds(5));
  }
  Forget(agent);

  const Json::Value jobs = cp_.Get("/_fake/jobs")["jobs"];
  Check("operations settled within the time", settled,
        settled ? "yes" : "not within " + std::to_string(o_.settle_seconds) + " s");
  CheckResults(jobs);
  CheckOperations();
  CheckJiraState(dc_);
  CheckJiraState(cloud_);
  CheckMutations(dc_);
  CheckMutations(cloud_);
  CheckJournal(jobs);
  Check("the agent stops on SIGTERM with status 0", final_exit_ == 0,
        "exit status " + std::to_string(final_exit_));

  const auto elapsed =
      std::chrono::duration_cast<seconds>(std::chrono::steady_clock::now() - started).count();
  bool ok = true;
  std::printf(
      "\ncakewalk-chaos summary: seed %llu, %d kills (%d within 400 ms of a start), "
      "%d agent starts, %zu jobs for %zu operations, faults queued: control plane %d, "
      "Jira %d; %lld s\n",
      static_cast<unsigned long long>(o_.seed), o_.kills, kills_during_start_, agent_starts_,
      static_cast<std::size_t>(jobs.size()), ops_.size(), cp_faults_, jira_faults_,
      static_cast<long long>(elapsed));
  std::size_t width = 0;
  for (const auto& r : rows_) width = std::max(width, r.check.size());
  for (const auto& r : rows_) {
    std::printf("  %-*s  %-4s  %s\n", static_cast<int>(width), r.check.c_str(),
                r.ok ? "ok" : "FAIL", r.detail.c_str());
    ok = ok && r.ok;
  }
  TearDown(ok);
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace cakewalk::chaos

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  cakewalk::chaos::Chaos chaos(cakewalk::chaos::ParseOptions(argc, argv));
  return chaos.Main();
}
