#include "tests/systemd/private_bus.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include "tests/systemd/process.h"

#ifndef CAKEWALK_SOURCE_DIR
#error "CAKEWALK_SOURCE_DIR must be defined"
#endif

namespace cakewalk::testing {
namespace {

void ReplaceAll(std::string& s, const std::string& from, const std::string& to) {
  size_t pos = 0;
  size_t count = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
    ++count;
  }
  if (count == 0) throw std::runtime_error("policy file has no " + from);
}

// A system bus configuration: the default policy of Debian's system.conf, trimmed to what a
// private bus needs (no activation, no syslog, no <user>, no <fork>).
std::string BusConfig(const std::string& socket, const std::string& policy, bool permissive) {
  std::string c =
      "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n"
      " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
      "<busconfig>\n"
      "  <type>system</type>\n"
      "  <listen>unix:path=" +
      socket +
      "</listen>\n"
      "  <auth>EXTERNAL</auth>\n"
      "  <policy context=\"default\">\n"
      "    <allow user=\"*\"/>\n"
      "    <deny own=\"*\"/>\n"
      "    <deny send_type=\"method_call\"/>\n"
      "    <allow send_type=\"signal\"/>\n"
      "    <allow send_requested_reply=\"true\" send_type=\"method_return\"/>\n"
      "    <allow send_requested_reply=\"true\" send_type=\"error\"/>\n"
      "    <allow receive_type=\"method_call\"/>\n"
      "    <allow receive_type=\"method_return\"/>\n"
      "    <allow receive_type=\"error\"/>\n"
      "    <allow receive_type=\"signal\"/>\n"
      "    <allow send_destination=\"org.freedesktop.DBus\"\n"
      "           send_interface=\"org.freedesktop.DBus\"/>\n"
      "    <allow send_destination=\"org.freedesktop.DBus\"\n"
      "           send_interface=\"org.freedesktop.DBus.Introspectable\"/>\n"
      "    <allow send_destination=\"org.freedesktop.DBus\"\n"
      "           send_interface=\"org.freedesktop.DBus.Properties\"/>\n"
      "    <deny send_destination=\"org.freedesktop.DBus\" "
      "send_interface=\"org.freedesktop.DBus\"\n"
      "          send_member=\"UpdateActivationEnvironment\"/>\n"
      "    <deny send_destination=\"org.freedesktop.DBus\"\n"
      "          send_interface=\"org.freedesktop.DBus.Debug.Stats\"/>\n";
  if (permissive) {
    c += "    <allow own=\"*\"/>\n    <allow send_type=\"method_call\"/>\n";
  }
  c += "  </policy>\n"
       "  <policy user=\"root\">\n"
       "    <allow send_destination=\"org.freedesktop.DBus\"\n"
       "           send_interface=\"org.freedesktop.DBus.Monitoring\"/>\n"
       "  </policy>\n";
  if (!permissive) c += "  <include>" + policy + "</include>\n";
  c += "</busconfig>\n";
  return c;
}

}  // namespace

std::string RewrittenPolicy(const std::string& owner_user, const std::string& admin_group) {
  std::string policy =
      ReadFile(std::string(CAKEWALK_SOURCE_DIR) + "/systemd/security.cakewalk.Agent1.conf");
  ReplaceAll(policy, "user=\"cakewalk-agent\"", "user=\"" + owner_user + "\"");
  ReplaceAll(policy, "group=\"cakewalk-admin\"", "group=\"" + admin_group + "\"");
  return policy;
}

PrivateBus::PrivateBus(PrivateBusOptions options) {
  // Callers that drop to other users must reach the socket.
  if (chmod(dir_.path().c_str(), 0755) != 0) throw std::runtime_error("chmod failed");
  const std::string socket = (dir_ / "system_bus_socket").string();
  WriteFile(dir_ / "policy.conf", RewrittenPolicy(options.owner_user, options.admin_group), 0644);
  WriteFile(dir_ / "bus.conf", BusConfig(socket, policy_path(), options.permissive), 0644);

  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  const std::string err_path = (dir_ / "stderr").string();
  const int err_fd = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_fd, STDERR_FILENO);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  std::string config_arg = "--config-file=" + (dir_ / "bus.conf").string();
  // setpriv --pdeathsig: the daemon dies with the test process, even when a test crashes.
  std::vector<std::string> args = {
      "setpriv", "--pdeathsig", "KILL", "dbus-daemon", config_arg, "--nofork", "--print-address=1"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env = MergedEnvironment({});
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const int r = posix_spawnp(&pid_, "setpriv", &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(out[1]);
  close(err_fd);
  if (r != 0) {
    close(out[0]);
    throw std::runtime_error(std::string("cannot start dbus-daemon: ") + std::strerror(r));
  }

  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (text.find('\n') == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{out[0], POLLIN, 0};
    if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[512];
    const ssize_t got = read(out[0], buf, sizeof buf);
    if (got <= 0) break;
    text.append(buf, static_cast<size_t>(got));
  }
  close(out[0]);
  if (text.find('\n') == std::string::npos) {
    Kill();
    throw std::runtime_error("dbus-daemon did not print its address; stderr: " +
                             ReadFile(err_path));
  }
  address_ = text.substr(0, text.find('\n'));
}

PrivateBus::~PrivateBus() { Kill(); }

void PrivateBus::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

std::vector<std::string> PrivateBus::Warnings() const {
  std::vector<std::string> out;
  std::istringstream in(ReadFile(dir_ / "stderr"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line.find("Failed to set fd limit") != std::string::npos) continue;
    if (line.find("Rejected send message") != std::string::npos) continue;  // see Rejections()
    out.push_back(line);
  }
  return out;
}

std::vector<std::string> PrivateBus::Rejections() const {
  std::vector<std::string> out;
  std::istringstream in(ReadFile(dir_ / "stderr"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("Rejected send message") != std::string::npos) out.push_back(line);
  }
  return out;
}

uid_t UidOf(const std::string& user) {
  const passwd* pw = getpwnam(user.c_str());
  if (pw == nullptr) throw std::runtime_error("no user " + user + " on this machine");
  return pw->pw_uid;
}

gid_t PrimaryGidOf(const std::string& user) {
  const passwd* pw = getpwnam(user.c_str());
  if (pw == nullptr) throw std::runtime_error("no user " + user + " on this machine");
  return pw->pw_gid;
}

gid_t GidOf(const std::string& group) {
  const struct group* gr = getgrnam(group.c_str());
  if (gr == nullptr) throw std::runtime_error("no group " + group + " on this machine");
  return gr->gr_gid;
}

}  // namespace cakewalk::testing
