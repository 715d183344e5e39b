// The sd_notify protocol as systemd would see it, without systemd: a datagram socket with
// SO_PASSCRED stands in for PID 1's notification socket, and notify_child runs with
// NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID pointing at it. The kernel-supplied sender PID
// of every message is compared with the child's PID, as NotifyAccess=main does.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "systemd/notify.h"
#include "tests/support/temp_dir.h"
#include "tests/systemd/process.h"

namespace cakewalk::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using namespace std::chrono_literals;

struct Notification {
  pid_t pid = 0;
  std::string text;
};

class NotifySocket {
 public:
  NotifySocket() : path_((dir_ / "notify").string()) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw std::runtime_error("cannot bind the notification socket");
    }
    const int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
  }
  ~NotifySocket() { close(fd_); }

  const std::string& path() const { return path_; }

  std::optional<Notification> Receive(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
    char buf[4096];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = recvmsg(fd_, &msg, 0);
    if (n < 0) return std::nullopt;
    Notification out;
    out.text.assign(buf, static_cast<size_t>(n));
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
        ucred cred{};
        std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
        out.pid = cred.pid;
      }
    }
    return out;
  }

  // Notifications until one contains `needle` (returned last), or nullopt on timeout.
  std::optional<std::vector<Notification>> Until(const std::string& needle,
                                                 std::chrono::milliseconds timeout = 10s) {
    std::vector<Notification> seen;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      auto n = Receive(left);
      if (!n) break;
      seen.push_back(*n);
      if (n->text.find(needle) != std::string::npos) return seen;
    }
    return std::nullopt;
  }

  // Everything that arrives during `window`.
  std::vector<Notification> During(std::chrono::milliseconds window) {
    std::vector<Notification> seen;
    const auto deadline = std::chrono::steady_clock::now() + window;
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      if (auto n = Receive(left)) seen.push_back(*n);
    }
    return seen;
  }

 private:
  TempDir dir_{"cakewalk-notify"};
  std::string path_;
  int fd_ = -1;
};

int CountExact(const std::vector<Notification>& v, const std::string& text) {
  int n = 0;
  for (const auto& x : v) n += x.text == text ? 1 : 0;
  return n;
}

// Starts notify_child so that WATCHDOG_PID is its own PID (the shell execs it).
Child StartChild(NotifySocket& socket, const std::string& watchdog_usec,
                 const std::vector<std::string>& args = {},
                 const std::string& watchdog_pid = "$$") {
  std::vector<std::string> argv = {"/bin/sh", "-c",
                                   "WATCHDOG_PID=" + watchdog_pid + " exec \"$0\" \"$@\"",
                                   CAKEWALK_NOTIFY_CHILD};
  argv.insert(argv.end(), args.begin(), args.end());
  return Child::Spawn(argv, {"NOTIFY_SOCKET=" + socket.path(), "WATCHDOG_USEC=" + watchdog_usec});
}

TEST(NotifyTest, ReadyWatchdogReloadStopFromTheMainProcessOnly) {
  NotifySocket socket;
  Child child = StartChild(socket, "400000");  // 0.4 s: pings every 0.2 s
  auto start = socket.Until("READY=1");
  ASSERT_TRUE(start.has_value()) << "no READY=1";
  EXPECT_EQ(start->back().text, "READY=1\nSTATUS=Serving");

  // About 10 pings in 2 s; demand at least 4, so a loaded machine does not fail the test.
  const auto window = socket.During(2000ms);
  const int pings = CountExact(window, "WATCHDOG=1");
  std::cout << "watchdog pings in 2 s at a 0.2 s interval: " << pings << "\n";
  EXPECT_GE(pings, 4);

  child.Signal(SIGHUP);
  auto reload = socket.Until("READY=1");
  ASSERT_TRUE(reload.has_value()) << "no READY=1 after SIGHUP";
  std::vector<std::string> texts;
  for (const auto& n : *reload) {
    if (n.text != "WATCHDOG=1") texts.push_back(n.text);
  }
  ASSERT_EQ(texts.size(), 3u);
  EXPECT_THAT(texts[0], StartsWith("RELOADING=1\nMONOTONIC_USEC="));
  EXPECT_EQ(texts[1], "STATUS=reloaded 1");
  EXPECT_EQ(texts[2], "READY=1");

  child.Signal(SIGTERM);
  auto stop = socket.Until("STOPPING=1");
  ASSERT_TRUE(stop.has_value()) << "no STOPPING=1";
  EXPECT_EQ(stop->back().text, "STOPPING=1\nSTATUS=Stopping (SIGTERM)");
  auto status = child.Wait(10s);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 0);

  // NotifyAccess=main: every message came from the main process itself.
  std::vector<Notification> all = *start;
  all.insert(all.end(), window.begin(), window.end());
  all.insert(all.end(), reload->begin(), reload->end());
  all.insert(all.end(), stop->begin(), stop->end());
  for (const auto& n : all) EXPECT_EQ(n.pid, child.pid()) << n.text;
}

TEST(NotifyTest, NoPingsWhenWatchdogPidNamesAnotherProcess) {
  NotifySocket socket;
  Child child = StartChild(socket, "200000", {}, "1");
  ASSERT_TRUE(socket.Until("READY=1").has_value());
  EXPECT_EQ(CountExact(socket.During(1500ms), "WATCHDOG=1"), 0);
  child.Signal(SIGTERM);
  ASSERT_TRUE(socket.Until("STOPPING=1").has_value());
}

TEST(NotifyTest, AFailingHealthCheckWithholdsPings) {
  NotifySocket socket;
  Child child = StartChild(socket, "200000", {"--unhealthy"});
  ASSERT_TRUE(socket.Until("READY=1").has_value());
  EXPECT_EQ(CountExact(socket.During(1500ms), "WATCHDOG=1"), 0);
  child.Signal(SIGTERM);
  ASSERT_TRUE(socket.Until("STOPPING=1").has_value());
}

TEST(NotifyTest, WithoutNotifySocketEverythingIsANoOp) {
  Child child = Child::Spawn({CAKEWALK_NOTIFY_CHILD}, {"WATCHDOG_USEC=200000"});
  ASSERT_EQ(child.ReadLine(10s), "RUNNING");
  child.Signal(SIGHUP);  // reload without a manager
  child.Signal(SIGTERM);
  auto status = child.Wait(10s);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 0);
}

TEST(NotifierTest, ReadsTheWatchdogOnlyForThisProcess) {
  setenv("NOTIFY_SOCKET", "/nonexistent/notify", 1);
  setenv("WATCHDOG_USEC", "30000000", 1);
  setenv("WATCHDOG_PID", std::to_string(getpid()).c_str(), 1);
  sd::Notifier mine = sd::Notifier::FromEnvironment();
  EXPECT_TRUE(mine.enabled());
  EXPECT_EQ(mine.watchdog_timeout(), std::chrono::microseconds(30000000));
  EXPECT_EQ(mine.watchdog_ping_interval(), std::chrono::microseconds(15000000));

  setenv("WATCHDOG_PID", "1", 1);
  EXPECT_FALSE(sd::Notifier::FromEnvironment().watchdog_timeout().has_value());

  unsetenv("WATCHDOG_PID");
  unsetenv("NOTIFY_SOCKET");
  sd::Notifier none = sd::Notifier::FromEnvironment();
  EXPECT_FALSE(none.enabled());
  EXPECT_FALSE(none.watchdog_timeout().has_value());
  EXPECT_TRUE(none.Ready("x").ok());  // a no-op, not an error
  unsetenv("WATCHDOG_USEC");
}

TEST(NotifierTest, StatusTextCannotInjectAssignments) {
  EXPECT_EQ(sd::Notifier::Message("READY=1", "token ok\nSTOPPING=1"),
            "READY=1\nSTATUS=token ok STOPPING=1");
  EXPECT_EQ(sd::Notifier::Message("", "a\r\nb"), "STATUS=a  b");
  EXPECT_EQ(sd::Notifier::Message("STOPPING=1", ""), "STOPPING=1");
}

TEST(NotifierTest, SendFailureIsReported) {
  setenv("NOTIFY_SOCKET", "/nonexistent/cakewalk-notify", 1);
  Status st = sd::Notifier::FromEnvironment().Ready("x");
  unsetenv("NOTIFY_SOCKET");
  EXPECT_EQ(st.code(), Code::kUnavailable);
  EXPECT_THAT(st.message(), HasSubstr("cannot notify the service manager"));
}

}  // namespace
}  // namespace cakewalk::testing
