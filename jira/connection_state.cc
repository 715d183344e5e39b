#include "jira/connection_state.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "base/json.h"

namespace cakewalk::jira {
namespace {

constexpr std::size_t kMaxStateBytes = 64 * 1024;

Status WriteAll(int fd, std::string_view data, const std::filesystem::path& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Internal("cannot write " + path.string() + ": " + std::strerror(errno));
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return Status::Ok();
}

// The file's content, nullopt when it does not exist.
Result<std::optional<std::string>> ReadState(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    if (!std::filesystem::exists(file)) return std::optional<std::string>();
    return Internal("cannot read " + file.string());
  }
  std::ostringstream text;
  text << in.rdbuf();
  return std::optional<std::string>(text.str());
}

}  // namespace

Result<std::unique_ptr<ConnectionState>> ConnectionState::Open(
    const std::filesystem::path& state_dir, const std::string& connection) {
  if (state_dir.empty()) return InMemory();
  std::unique_ptr<ConnectionState> state(new ConnectionState());
  const std::filesystem::path dir = state_dir / "jira";
  state->file_ = dir / (connection + ".json");
  // Folders this creates are private (0700); existing ones are left as they are.
  for (const std::filesystem::path& d : {state_dir, dir}) {
    if (::mkdir(d.c_str(), 0700) != 0 && errno != EEXIST) {
      return Internal("cannot create " + d.string() + ": " + std::strerror(errno));
    }
  }
  CW_ASSIGN_OR_RETURN(std::optional<std::string> text, ReadState(state->file_));
  if (text) CW_RETURN_IF_ERROR(state->LoadFrom(*text));
  return state;
}

Status ConnectionState::LoadFrom(const std::string& text) {
  CW_ASSIGN_OR_RETURN(Json::Value root, ParseJson(text, file_.string(), kMaxStateBytes));
  JsonFields f(root, file_.string());
  std::optional<LoginStop> login_stop;
  std::optional<std::uint64_t> last_step;
  if (const Json::Value* stop = f.Object("login_stop")) {
    JsonFields s(*stop, f.ChildPath("login_stop"));
    LoginStop ls;
    ls.reason = s.String("reason", JsonFields::kRequired);
    ls.message = s.String("message", JsonFields::kRequired);
    ls.password_version = static_cast<std::uint32_t>(
        s.Int("password_version", 0, 0, std::numeric_limits<std::uint32_t>::max()));
    ls.totp_version = static_cast<std::uint32_t>(
        s.Int("totp_version", 0, 0, std::numeric_limits<std::uint32_t>::max()));
    const std::string since = s.String("since", JsonFields::kRequired);
    f.Merge(s.Finish());
    if (f.ok()) {
      auto t = ParseRfc3339(since);
      if (!t.ok()) {
        f.Fail("login_stop", "since: " + t.status().message());
      } else {
        ls.since = *t;
        login_stop = std::move(ls);
      }
    }
  }
  if (f.Has("last_totp_step")) {
    last_step = static_cast<std::uint64_t>(
        f.Int("last_totp_step", 0, 0, std::numeric_limits<std::int64_t>::max()));
  }
  CW_RETURN_IF_ERROR(f.Finish());
  login_stop_ = std::move(login_stop);
  last_totp_step_ = last_step;
  return Status::Ok();
}

void ConnectionState::ReloadLocked() {
  if (file_.empty()) return;
  auto text = ReadState(file_);
  if (!text.ok() || !*text) return;
  LoadFrom(**text).IgnoreError();
}

Result<LoginLock> ConnectionState::LockLogins() {
  if (file_.empty()) return LoginLock();
  const std::string path = file_.string() + ".lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Internal("cannot open " + path + ": " + std::strerror(errno));
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    const int err = errno;
    ::close(fd);
    return Internal("cannot lock " + path + ": " + std::strerror(err));
  }
  return LoginLock(fd);
}

LoginLock::~LoginLock() {
  if (fd_ >= 0) {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
}

std::unique_ptr<ConnectionState> ConnectionState::InMemory() {
  return std::unique_ptr<ConnectionState>(new ConnectionState());
}

std::optional<LoginStop> ConnectionState::login_stop() {
  std::lock_guard lock(mu_);
  ReloadLocked();
  return login_stop_;
}

Status ConnectionState::SetLoginStop(LoginStop stop) {
  std::lock_guard lock(mu_);
  ReloadLocked();
  login_stop_ = std::move(stop);
  return SaveLocked();
}

Status ConnectionState::ClearLoginStop() {
  std::lock_guard lock(mu_);
  ReloadLocked();
  if (!login_stop_) return Status::Ok();
  login_stop_.reset();
  return SaveLocked();
}

std::optional<std::uint64_t> ConnectionState::last_totp_step() {
  std::lock_guard lock(mu_);
  ReloadLocked();
  return last_totp_step_;
}

Status ConnectionState::SetLastTotpStep(std::uint64_t step) {
  std::lock_guard lock(mu_);
  ReloadLocked();
  if (last_totp_step_ && *last_totp_step_ >= step) return Status::Ok();
  last_totp_step_ = step;
  return SaveLocked();
}

Status ConnectionState::SaveLocked() const {
  if (file_.empty()) return Status::Ok();
  Json::Value root(Json::objectValue);
  if (login_stop_) {
    Json::Value s(Json::objectValue);
    s["reason"] = login_stop_->reason;
    s["message"] = login_stop_->message;
    s["password_version"] = login_stop_->password_version;
    s["totp_version"] = login_stop_->totp_version;
    s["since"] = FormatRfc3339(login_stop_->since);
    root["login_stop"] = s;
  }
  if (last_totp_step_) root["last_totp_step"] = static_cast<Json::UInt64>(*last_totp_step_);
  const std::string text = WritePrettyJson(root) + "\n";
  const std::filesystem::path tmp = file_.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Internal("cannot write " + tmp.string() + ": " + std::strerror(errno));
  Status written = WriteAll(fd, text, tmp);
  if (written.ok() && ::fsync(fd) != 0) {
    written = Internal("cannot sync " + tmp.string() + ": " + std::strerror(errno));
  }
  ::close(fd);
  if (!written.ok()) return written;
  if (::rename(tmp.c_str(), file_.c_str()) != 0) {
    return Internal("cannot replace " + file_.string() + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

}  // namespace cakewalk::jira
