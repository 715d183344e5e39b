// Self-test of scripts/check-no-listen: every kind of listener is found (also in a descendant),
// outbound-only sockets are not, and a process that cannot be inspected is an error, not a pass.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "tests/support/temp_dir.h"
#include "tests/systemd/process.h"

namespace cakewalk::testing {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

const std::string kScript = std::string(CAKEWALK_SOURCE_DIR) + "/scripts/check-no-listen";

ProcessResult Check(pid_t pid) { return RunProcess({kScript, std::to_string(pid)}, {}, 60s); }

ProcessResult CheckChild(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {CAKEWALK_SOCKET_CHILD};
  argv.insert(argv.end(), args.begin(), args.end());
  Child child = Child::Spawn(argv);
  if (child.ReadLine(20s) != "READY") {
    ProcessResult r;
    r.exit_code = -100;
    r.err = "socket_child did not get ready";
    return r;
  }
  return Check(child.pid());
}

TEST(CheckNoListenTest, FindsTcpListener) {
  ProcessResult r = CheckChild({"tcp"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.out, ContainsRegex("^LISTEN tcp 127\\.0\\.0\\.1:[0-9]+ inode=[0-9]+ pid=[0-9]+ "
                                   "\\(socket_child\\)"));
}

TEST(CheckNoListenTest, FindsBoundUdpSockets) {
  ProcessResult v4 = CheckChild({"udp"});
  EXPECT_EQ(v4.exit_code, 1) << v4.err;
  EXPECT_THAT(v4.out, HasSubstr("LISTEN udp 127.0.0.1:"));
  ProcessResult v6 = CheckChild({"udp6"});
  EXPECT_EQ(v6.exit_code, 1) << v6.err;
  EXPECT_THAT(v6.out, HasSubstr("LISTEN udp6 [0000:0000:0000:0000:0000:0000:0000:0001]:"));
}

TEST(CheckNoListenTest, FindsUnixListenersAbstractAndOnDisk) {
  const std::string name = "cakewalk-test-" + std::to_string(getpid());
  ProcessResult abstract = CheckChild({"unix-abstract", name});
  EXPECT_EQ(abstract.exit_code, 1) << abstract.err;
  EXPECT_THAT(abstract.out, HasSubstr("LISTEN unix @" + name + " "));
  TempDir dir;
  ProcessResult path = CheckChild({"unix-path", (dir / "sock").string()});
  EXPECT_EQ(path.exit_code, 1) << path.err;
  EXPECT_THAT(path.out, HasSubstr("LISTEN unix " + (dir / "sock").string() + " "));
}

TEST(CheckNoListenTest, FindsRawSockets) {
  ProcessResult r = CheckChild({"raw"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.out, HasSubstr("LISTEN raw "));
}

TEST(CheckNoListenTest, FindsAListenerInADescendant) {
  ProcessResult r = CheckChild({"grandchild", "tcp"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.out, HasSubstr("LISTEN tcp 127.0.0.1:"));
}

TEST(CheckNoListenTest, OutboundOnlySocketsPass) {
  // A server in this process for the child to connect to; this process is not inspected.
  const int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(server, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(server, 4), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(getsockname(server, reinterpret_cast<sockaddr*>(&a), &len), 0);
  ProcessResult r = CheckChild({"outbound", std::to_string(ntohs(a.sin_port))});
  close(server);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, Not(HasSubstr("LISTEN")));
  EXPECT_THAT(r.out, ContainsRegex("no listening socket in 1 process\\(es\\) \\([4-9] sockets"));
}

TEST(CheckNoListenTest, MissingProcessOrBadUsageIsAnError) {
  EXPECT_EQ(RunProcess({kScript, "999999999"}).exit_code, 2);
  EXPECT_EQ(RunProcess({kScript, "abc"}).exit_code, 2);
  EXPECT_EQ(RunProcess({kScript}).exit_code, 2);
}

TEST(CheckNoListenTest, AProcessThatCannotBeInspectedIsAnError) {
  // As nobody, another user's /proc/<pid>/fd is unreadable: that must not pass.
  Child child = Child::Spawn({CAKEWALK_SOCKET_CHILD, "tcp"});
  ASSERT_EQ(child.ReadLine(20s), "READY");
  // A copy nobody can execute, wherever the source tree lives.
  TempDir dir;
  chmod(dir.path().c_str(), 0755);
  WriteFile(dir / "check-no-listen", ReadFile(kScript), 0755);
  ProcessResult r = RunProcess({"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                                (dir / "check-no-listen").string(), std::to_string(child.pid())});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("cannot read /proc/"));
}

}  // namespace
}  // namespace cakewalk::testing
