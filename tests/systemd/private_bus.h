// A private dbus-daemon configured like a system bus, in a temporary folder, with the project's
// policy file systemd/security.cakewalk.Agent1.conf included — rewritten so that the user and
// group it names exist on the test machine (tests run as root; the agent's user does not exist).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/support/temp_dir.h"

namespace cakewalk::testing {

struct PrivateBusOptions {
  // Substituted for user "cakewalk-agent" and group "cakewalk-admin" in the policy file.
  std::string owner_user = "root";
  std::string admin_group = "staff";
  // Permissive: no project policy; everybody may own any name and call anything. For testing
  // the agent's own authorisation, which must hold even when the bus policy lets a call through.
  bool permissive = false;
};

class PrivateBus {
 public:
  // Starts dbus-daemon and waits for its address; throws std::runtime_error on failure.
  explicit PrivateBus(PrivateBusOptions options = {});
  ~PrivateBus();
  PrivateBus(const PrivateBus&) = delete;
  PrivateBus& operator=(const PrivateBus&) = delete;

  const std::string& address() const { return address_; }
  pid_t pid() const { return pid_; }
  // SIGKILLs the daemon and reaps it.
  void Kill();
  // What dbus-daemon wrote on standard error: warnings (a broken policy file shows only here),
  // minus the harmless "Failed to set fd limit" line and the rejections below.
  std::vector<std::string> Warnings() const;
  // dbus-daemon's "Rejected send message ..." lines: calls the bus policy refused.
  std::vector<std::string> Rejections() const;
  std::string policy_path() const { return (dir_ / "policy.conf").string(); }

 private:
  TempDir dir_{"cakewalk-dbus"};
  std::string address_;
  pid_t pid_ = -1;
};

// The project's policy file with user and group names substituted.
std::string RewrittenPolicy(const std::string& owner_user, const std::string& admin_group);

// Passwd/group lookups that throw when the entry is missing.
uid_t UidOf(const std::string& user);
gid_t GidOf(const std::string& group);
gid_t PrimaryGidOf(const std::string& user);

}  // namespace cakewalk::testing
