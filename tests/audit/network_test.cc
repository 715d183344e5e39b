// Network: the running agent listens on nothing, and reaches nothing but its configured hosts.
//
// NoListeningSocket: scripts/check-no-listen (socket inodes of the process and its descendants
// matched against every socket table of their network namespaces) passes on the agent while it
// runs jobs — and fails on this test process, which holds the fakes' listening sockets (the
// control: the script can see a listener).
//
// OnlyConfiguredHosts: the test moves itself into a new network namespace before anything starts
// (unshare(CLONE_NEWNET) as root, else a user namespace with it), so everything it creates — the
// fakes, the agent, the interfaces — lives and dies with this process; nothing on the host is
// touched. In it: loopback, where the fakes serve, and a veth pair that carries the default
// routes (IPv4 and IPv6), so that any packet the namespace tries to send anywhere but loopback —
// a DNS server, an update check, telemetry, a host taken from an answer — leaves through it and
// is counted. The agent then enrols, stores its secrets and runs jobs on Data Center and Cloud;
// afterwards the veth's transmit counter must not have moved. Meanwhile the agent's TCP sockets
// are sampled (its /proc fds matched to /proc/<pid>/net/tcp{,6}): every peer must be one of the
// fakes. The control: one connect() to a documentation address afterwards does move the counter.
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <set>
#include <thread>

#include "base/encoding.h"
#include "tests/audit/audit_env.h"
#include "tests/fakes/jira/totp.h"
#include "tests/systemd/process.h"

namespace cakewalk::testing {
namespace {

using namespace std::chrono_literals;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A Data Center and a Cloud Jira with the agent's accounts, the configuration, the enrollment and
// every secret through the CLI.
class NetworkAudit : public ::testing::Test {
 protected:
  void Build() {
    FakeJiraOptions dc_options;
    dc_options.version = "10.3.4";
    dc_ = &home_->AddJira("jira-dc", dc_options);
    NewUser admin;
    admin.username = "svc-cakewalk";
    admin.email = "svc-cakewalk@corp.example";
    admin.display_name = "Cakewalk Agent";
    admin.password = "network-audit-password";
    admin.groups = {"jira-administrators", "jira-software-users"};
    ASSERT_TRUE(dc_->jira().AddUser(admin).ok());
    const std::string seed = "network-audit-totp-seed";
    ASSERT_TRUE(dc_->jira().EnrolTotp("svc-cakewalk", AsBytes(seed)).ok());
    ASSERT_TRUE(dc_->jira().AddGroup("developers").ok());

    FakeJiraOptions cloud_options;
    cloud_options.flavor = JiraFlavor::kCloud;
    cloud_ = &home_->AddJira("jira-cloud", cloud_options);
    NewUser cloud_admin;
    cloud_admin.email = "admin@corp.example";
    cloud_admin.display_name = "Site Admin";
    cloud_admin.groups = {"jira-administrators", "site-admins", "jira-software-users"};
    ASSERT_TRUE(cloud_->jira().AddUser(cloud_admin).ok());
    auto token = cloud_->jira().AddApiToken("admin@corp.example", "cakewalk",
                                            std::chrono::system_clock::now() + 24h);
    ASSERT_TRUE(token.ok());
    ASSERT_TRUE(cloud_->jira().AddGroup("developers").ok());

    Json::Value dc(Json::objectValue);
    dc["name"] = "jira-dc";
    dc["type"] = "jira-datacenter";
    dc["base_url"] = dc_->base_url();
    dc["ca_file"] = home_->jira_ca_file("jira-dc").string();
    dc["provisioning"]["auth"] = "password";
    dc["provisioning"]["username"] = "svc-cakewalk";
    dc["provisioning"]["mfa"] = "totp";
    Json::Value cloud(Json::objectValue);
    cloud["name"] = "jira-cloud";
    cloud["type"] = "jira-cloud";
    cloud["base_url"] = cloud_->base_url();
    cloud["ca_file"] = home_->jira_ca_file("jira-cloud").string();
    cloud["provisioning"]["auth"] = "api-token";
    cloud["provisioning"]["username"] = "admin@corp.example";
    Json::Value connections(Json::arrayValue);
    connections.append(dc);
    connections.append(cloud);
    home_->WriteConfig(connections);

    auto enrolled =
        home_->Cli({"enroll", "--token-file", "-"}, home_->cp().fake().NewEnrollmentToken());
    ASSERT_EQ(enrolled.exit_code, 0) << enrolled.err;
    ASSERT_EQ(home_->Cli({"secret", "set", "jira-dc", "password"}, admin.password).exit_code, 0);
    ASSERT_EQ(home_->Cli({"mfa", "enroll", "jira-dc"}, Base32Encode(AsBytes(seed))).exit_code, 0);
    ASSERT_EQ(home_->Cli({"secret", "set", "jira-cloud", "api-token"}, *token).exit_code, 0);
  }

  // Verify and provisioning jobs on both Jiras; every one must succeed.
  void RunJobs() {
    std::vector<std::string> ids;
    for (const char* connection : {"jira-dc", "jira-cloud"}) {
      JobSpec verify;
      verify.type = "jira.connection.verify";
      verify.connection = connection;
      ids.push_back(*home_->cp().fake().EnqueueJob(verify));
      JobSpec provision;
      provision.type = "jira.user.provision";
      provision.connection = connection;
      provision.params["email"] = std::string("carol-") + connection + "@corp.example";
      provision.params["display_name"] = "Carol";
      if (std::string(connection) == "jira-dc") provision.params["username"] = "carol";
      provision.params["groups"].append("developers");
      ids.push_back(*home_->cp().fake().EnqueueJob(provision));
    }
    for (const auto& id : ids) {
      const Json::Value result = WaitForResult(home_->cp().fake(), id, 120s);
      EXPECT_EQ(result["status"].asString(), "succeeded") << id << ": " << Describe(result);
    }
  }

  std::unique_ptr<AuditHome> home_;
  ServedJira* dc_ = nullptr;
  ServedJira* cloud_ = nullptr;
};

// The TCP peers ("127.0.0.1:443", "[::1]:8443") of the sockets `pid` holds now.
std::set<std::string> TcpPeers(pid_t pid) {
  std::set<std::string> inodes;
  const std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(fd_dir, ec)) {
    std::error_code link_ec;
    const std::string target = std::filesystem::read_symlink(entry.path(), link_ec).string();
    if (target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  std::set<std::string> peers;
  for (const char* table : {"tcp", "tcp6"}) {
    std::istringstream lines(Slurp("/proc/" + std::to_string(pid) + "/net/" + table));
    std::string line;
    std::getline(lines, line);  // header
    while (std::getline(lines, line)) {
      std::istringstream f(line);
      std::string sl, local, remote, st, queues, timer, retr, uid, timeout, inode;
      f >> sl >> local >> remote >> st >> queues >> timer >> retr >> uid >> timeout >> inode;
      if (inodes.count(inode) == 0) continue;
      const std::string hex = remote.substr(0, remote.find(':'));
      const int port = std::stoi(remote.substr(remote.find(':') + 1), nullptr, 16);
      std::string addr;
      if (hex.size() == 8) {
        addr = std::to_string(std::stoi(hex.substr(6, 2), nullptr, 16)) + "." +
               std::to_string(std::stoi(hex.substr(4, 2), nullptr, 16)) + "." +
               std::to_string(std::stoi(hex.substr(2, 2), nullptr, 16)) + "." +
               std::to_string(std::stoi(hex.substr(0, 2), nullptr, 16));
      } else {
        addr = "[" + hex + "]";  // IPv6, kernel byte order: compared as text below
      }
      peers.insert(addr + ":" + std::to_string(port));
    }
  }
  return peers;
}

// Packets sent through `device` so far (/proc/self/net/dev of this network namespace).
long long TxPackets(const std::string& device) {
  std::istringstream lines(Slurp("/proc/self/net/dev"));
  for (std::string line; std::getline(lines, line);) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    name.erase(0, name.find_first_not_of(' '));
    if (name != device) continue;
    std::istringstream f(line.substr(colon + 1));
    long long v[10] = {};
    for (auto& x : v) f >> x;
    return v[9];  // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets
  }
  return -1;
}

TEST_F(NetworkAudit, TheRunningAgentHoldsNoListeningSocket) {
  home_ = std::make_unique<AuditHome>();
  ASSERT_NO_FATAL_FAILURE(Build());
  auto agent = home_->StartAgent();
  std::atomic<bool> done{false};
  std::thread jobs([&] {
    RunJobs();
    done = true;
  });
  // While the jobs run (and after): the agent and its children hold no listening socket.
  int checks = 0;
  while (checks < 3 || !done) {
    ProcessResult r = RunProcess({CHECK_NO_LISTEN, std::to_string(agent->pid())}, {}, 30s);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("no listening socket"), std::string::npos) << r.out;
    ++checks;
    std::this_thread::sleep_for(300ms);
  }
  jobs.join();
  // The control: this process serves the fakes, and the script sees it.
  ProcessResult self = RunProcess({CHECK_NO_LISTEN, std::to_string(getpid())}, {}, 30s);
  EXPECT_EQ(self.exit_code, 1) << self.out << self.err;
  EXPECT_NE(self.out.find("LISTEN tcp"), std::string::npos) << self.out;
  kill(agent->pid(), SIGTERM);
  EXPECT_EQ(agent->Wait(60s), 0) << agent->Log();
}

TEST_F(NetworkAudit, InItsOwnNetworkNamespaceTheAgentReachesOnlyTheConfiguredHosts) {
  // Into a new network namespace before anything starts (threads inherit it).
  const uid_t uid = getuid();
  const gid_t gid = getgid();
  if (unshare(CLONE_NEWNET) != 0) {
    ASSERT_EQ(unshare(CLONE_NEWUSER | CLONE_NEWNET), 0)
        << "neither unshare(CLONE_NEWNET) (root) nor a user namespace is available: "
        << std::strerror(errno);
    std::ofstream("/proc/self/setgroups") << "deny";
    std::ofstream("/proc/self/uid_map") << "0 " << uid << " 1";
    std::ofstream("/proc/self/gid_map") << "0 " << gid << " 1";
  }
  auto ip = [](std::vector<std::string> args) {
    args.insert(args.begin(), "ip");
    ProcessResult r = RunProcess(args, {}, 10s);
    EXPECT_EQ(r.exit_code, 0) << r.err;
  };
  ip({"link", "set", "lo", "up"});
  ip({"link", "add", "audit0", "type", "veth", "peer", "name", "audit1"});
  // No IPv6 chatter of its own on the counted interface: no link-local address (so no multicast
  // reports), no duplicate address detection, no router solicitations.
  for (const char* iface : {"audit0", "audit1"}) {
    for (const auto& [name, value] :
         std::vector<std::pair<std::string, std::string>>{{"addr_gen_mode", "1"},
                                                          {"accept_dad", "0"},
                                                          {"router_solicitations", "0"},
                                                          {"accept_ra", "0"}}) {
      std::ofstream(std::string("/proc/sys/net/ipv6/conf/") + iface + "/" + name) << value;
    }
  }
  ip({"link", "set", "audit1", "up"});
  ip({"addr", "add", "192.0.2.1/24", "dev", "audit0"});
  ip({"-6", "addr", "add", "2001:db8::1/64", "dev", "audit0", "nodad"});
  ip({"link", "set", "audit0", "up"});
  ip({"route", "add", "default", "via", "192.0.2.2", "dev", "audit0"});
  ip({"-6", "route", "add", "default", "via", "2001:db8::2", "dev", "audit0"});
  ASSERT_FALSE(HasFailure());
  // Whatever link-up chatter remains dies down within seconds; the baseline is taken once the
  // counter has been still for five seconds.
  long long baseline = TxPackets("audit0");
  for (int still = 0, i = 0; still < 50 && i < 300; ++i) {
    std::this_thread::sleep_for(100ms);
    const long long now = TxPackets("audit0");
    still = now == baseline ? still + 1 : 0;
    baseline = now;
  }
  ASSERT_GE(baseline, 0);

  home_ = std::make_unique<AuditHome>();
  ASSERT_NO_FATAL_FAILURE(Build());
  const std::set<std::string> allowed = {
      "127.0.0.1:" + std::to_string(home_->cp().port()),
      "127.0.0.1:" + dc_->base_url().substr(dc_->base_url().rfind(':') + 1),
      "127.0.0.1:" + cloud_->base_url().substr(cloud_->base_url().rfind(':') + 1)};
  auto agent = home_->StartAgent();
  std::atomic<bool> done{false};
  std::set<std::string> peers;
  std::thread sampler([&] {
    while (!done) {
      for (const auto& p : TcpPeers(agent->pid())) peers.insert(p);
      std::this_thread::sleep_for(20ms);
    }
  });
  RunJobs();
  done = true;
  sampler.join();
  kill(agent->pid(), SIGTERM);
  EXPECT_EQ(agent->Wait(60s), 0) << agent->Log();

  EXPECT_FALSE(peers.empty()) << "the sampler saw no connection at all";
  for (const auto& p : peers) {
    // IPv6 loopback ([::1] in the kernel's word order) is a configured host as well.
    const bool loopback6 = p.rfind("[00000000000000000000000001000000]:", 0) == 0;
    EXPECT_TRUE(allowed.count(p) == 1 ||
                (loopback6 && allowed.count("127.0.0.1:" + p.substr(p.find("]:") + 2))))
        << "the agent was connected to " << p;
  }
  const long long after_run = TxPackets("audit0");
  EXPECT_EQ(after_run, baseline) << "packets left loopback while the agent ran";

  // The control: a connection attempt anywhere else is counted.
  ProcessResult probe = RunProcess(
      {"bash", "-c", "timeout 2 bash -c 'echo > /dev/tcp/198.51.100.7/443' 2>/dev/null; true"}, {},
      10s);
  (void)probe;
  EXPECT_GT(TxPackets("audit0"), after_run) << "a connect() to 198.51.100.7 was not counted";
  std::cout << "sampled peers:";
  for (const auto& p : peers) std::cout << " " << p;
  std::cout << "; packets through the default route during the run: " << (after_run - baseline)
            << "\n";
}

}  // namespace
}  // namespace cakewalk::testing
