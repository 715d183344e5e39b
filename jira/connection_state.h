// What the connector remembers about a connection across restarts:
//
// - The login stop. After Jira demanded a CAPTCHA, refused the password (401 on a login), refused
//   a one-time code or asked for an enrolment, the connector makes NO further automatic login
//   attempt with those credentials: retrying would count failed logins against the Jira account
//   (and keep the CAPTCHA alive). The stop names the credential versions it applies to; it ends
//   when an operator stores a new version of one of them (`secret set ... password`,
//   `mfa enroll`) or clears it explicitly (ClearLoginStop). `doctor` shows it.
// - The last TOTP time step submitted, so that no code is ever sent twice (Jira refuses a reused
//   code, and a refused code is a failed login).
//
// Stored as JSON in <state_dir>/jira/<connection>.json (0600, folder 0700), written atomically
// (temporary file, fsync, rename) and re-read before each use, so that the daemon and `doctor`
// see each other's writes. With no state_dir, kept in memory only. Thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "base/status.h"
#include "base/time.h"

namespace cakewalk::jira {

struct LoginStop {
  std::string reason;   // captcha_required, auth_failed or mfa_failed
  std::string message;  // what happened and what the operator must do (never a secret)
  std::uint32_t password_version = 0;
  std::uint32_t totp_version = 0;  // 0 when no TOTP seed was involved
  SysTime since;
};

// Held while a login runs, so that two processes (the daemon and `doctor`) never pick TOTP steps
// at the same time. Released on destruction.
class LoginLock {
 public:
  LoginLock() = default;
  explicit LoginLock(int fd) : fd_(fd) {}
  ~LoginLock();
  LoginLock(LoginLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  LoginLock& operator=(LoginLock&&) = delete;
  LoginLock(const LoginLock&) = delete;

 private:
  int fd_ = -1;
};

class ConnectionState {
 public:
  // Loads <state_dir>/jira/<connection>.json when state_dir is set (a missing file is an empty
  // state; an unreadable or malformed one is an error naming the file).
  static Result<std::unique_ptr<ConnectionState>> Open(const std::filesystem::path& state_dir,
                                                       const std::string& connection);
  static std::unique_ptr<ConnectionState> InMemory();

  std::optional<LoginStop> login_stop();
  Status SetLoginStop(LoginStop stop);
  Status ClearLoginStop();

  std::optional<std::uint64_t> last_totp_step();
  Status SetLastTotpStep(std::uint64_t step);

  // An exclusive lock across processes (flock on <file>.lock); a no-op in memory.
  Result<LoginLock> LockLogins();

  // The file, or empty when in memory.
  const std::filesystem::path& file() const { return file_; }

 private:
  ConnectionState() = default;
  Status SaveLocked() const;
  // Re-reads the file (another process may have written it); keeps memory on errors.
  void ReloadLocked();
  Status LoadFrom(const std::string& text);

  mutable std::mutex mu_;
  std::filesystem::path file_;
  std::optional<LoginStop> login_stop_;
  std::optional<std::uint64_t> last_totp_step_;
};

}  // namespace cakewalk::jira
