#include "agent/rotation.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <tuple>

#include "agent/identity.h"
#include "agent/jira_executors.h"
#include "agent/password_generator.h"
#include "base/fault_point.h"
#include "base/json.h"
#include "base/time.h"
#include "jira/credentials.h"
#include "jira/errors.h"
#include "jira/password_change.h"

namespace cakewalk::agent {
namespace {

constexpr std::string_view kPassword = "password";
constexpr char kRetiredFile[] = "retired.json";
constexpr char kRetiredLock[] = "retired.lock";

// Record steps (rotation.h).
constexpr char kStepStaging[] = "staging";
constexpr char kStepStaged[] = "staged";
constexpr char kStepChangeSent[] = "change-sent";
constexpr char kStepChanged[] = "changed";
constexpr char kStepPendingRefused[] = "pending-refused";
constexpr char kStepVerified[] = "verified";

bool KnownStep(std::string_view s) {
  for (std::string_view k : {kStepStaging, kStepStaged, kStepChangeSent, kStepChanged,
                             kStepPendingRefused, kStepVerified}) {
    if (s == k) return true;
  }
  return false;
}

// A token failure as a job error (retryable when the token said so).
Status TokenError(const Status& s, std::string_view what) {
  return Status(s.code(), std::string(what) + ": " + s.message(),
                std::string(jira::reason::kTokenUnavailable));
}

std::string Errno(int err) { return std::strerror(err); }

struct PasswordVersions {
  std::uint32_t current = 0;
  std::vector<std::uint32_t> pending;  // ascending
};

Result<PasswordVersions> LoadPasswordVersions(hsm::SecretStore& secrets,
                                              const std::string& connection) {
  auto all = secrets.List();
  if (!all.ok()) return TokenError(all.status(), "listing the token's secrets");
  PasswordVersions v;
  for (const hsm::SecretInfo& info : *all) {
    if (info.connection != connection || info.name != kPassword) continue;
    if (info.state == hsm::SecretState::kCurrent) v.current = info.version;
    if (info.state == hsm::SecretState::kPending) v.pending.push_back(info.version);
  }
  return v;
}

std::string Describe(const std::string& connection, std::uint32_t version) {
  return connection + "/password v" + std::to_string(version);
}

}  // namespace

std::string_view RotationStepName(RotationStep step) noexcept {
  switch (step) {
    case RotationStep::kStaged:
      return "staged";
    case RotationStep::kChangeRecorded:
      return "change-recorded";
    case RotationStep::kJiraChanged:
      return "jira-changed";
    case RotationStep::kVerified:
      return "verified";
    case RotationStep::kPromoted:
      return "promoted";
    case RotationStep::kFinished:
      return "finished";
  }
  return "unknown";
}

namespace {
void Reached(RotationStep step) {
  FaultPoint(std::string("rotation.") + std::string(RotationStepName(step)));
}
}  // namespace

// ---- FileLock -----------------------------------------------------------------------------------

Result<std::optional<FileLock>> FileLock::TryAcquire(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return FailedPrecondition("cannot open the lock file " + path.string() + ": " + Errno(errno));
  }
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EINTR) continue;
    ::close(fd);
    if (err == EWOULDBLOCK) return std::optional<FileLock>();
    return FailedPrecondition("cannot lock " + path.string() + ": " + Errno(err));
  }
  return std::optional<FileLock>(FileLock(fd));
}

Result<FileLock> FileLock::Acquire(const std::filesystem::path& path, std::stop_token stop,
                                   const std::function<void()>& busy) {
  bool told = false;
  while (true) {
    CW_ASSIGN_OR_RETURN(std::optional<FileLock> lock, TryAcquire(path));
    if (lock) return std::move(*lock);
    if (!told && busy) busy();
    told = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (stop.stop_requested()) {
      return Status(Code::kAborted, "stopped while waiting for " + path.string(),
                    std::string(jira::reason::kStopped));
    }
  }
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

// ---- SecretRotator ------------------------------------------------------------------------------

struct SecretRotator::Record {
  std::string connection;
  std::string step;
  std::uint32_t from = 0;
  std::uint32_t to = 0;  // 0 while staging
  SysTime started_at;
  SysTime updated_at;
};

SecretRotator::SecretRotator(Deps deps) : deps_(std::move(deps)) {
  if (deps_.clock == nullptr) deps_.clock = &SystemClock();
}

std::filesystem::path SecretRotator::Folder(const std::filesystem::path& state_dir) {
  return state_dir / "rotation";
}

std::filesystem::path SecretRotator::StateDir() const { return deps_.config()->state_dir; }

namespace {

Status EnsureFolder(const std::filesystem::path& state_dir) {
  CW_RETURN_IF_ERROR(EnsureStateDir(state_dir));
  return EnsureStateDir(SecretRotator::Folder(state_dir));
}

std::filesystem::path LockPath(const std::filesystem::path& state_dir,
                               const std::string& connection) {
  return SecretRotator::Folder(state_dir) / (connection + ".password.lock");
}

std::filesystem::path RecordPath(const std::filesystem::path& state_dir,
                                 const std::string& connection) {
  return SecretRotator::Folder(state_dir) / (connection + ".password.json");
}

Result<std::optional<std::string>> ReadText(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::optional<std::string>();
  std::ifstream in(path, std::ios::binary);
  if (!in) return FailedPrecondition("cannot read " + path.string());
  std::stringstream text;
  text << in.rdbuf();
  return std::optional<std::string>(text.str());
}

}  // namespace

Result<std::optional<SecretRotator::Record>> SecretRotator::ReadRecord(
    const std::string& connection) const {
  const std::filesystem::path path = RecordPath(StateDir(), connection);
  CW_ASSIGN_OR_RETURN(std::optional<std::string> text, ReadText(path));
  if (!text) return std::optional<Record>();
  const std::string what = "rotation record " + path.string();
  auto parsed = ParseJson(*text, what, 64 * 1024);
  // A record that cannot be read says nothing: recovery then treats the rotation as unknown and
  // probes (never guesses "not sent").
  if (!parsed.ok() || !parsed->isObject()) return std::optional<Record>();
  JsonFields f(*parsed, "$");
  Record r;
  f.Int("format", 1, 1, 1, JsonFields::kRequired);
  r.connection = f.String("connection", JsonFields::kRequired);
  f.String("secret", JsonFields::kRequired);
  r.step = f.String("step", JsonFields::kRequired);
  r.from = static_cast<std::uint32_t>(f.Int("from", 0, 0, UINT32_MAX, JsonFields::kRequired));
  r.to = static_cast<std::uint32_t>(f.Int("to", 0, 0, UINT32_MAX, JsonFields::kRequired));
  const std::string started = f.String("started_at", JsonFields::kRequired);
  const std::string updated = f.String("updated_at", JsonFields::kRequired);
  if (!f.Finish().ok() || r.connection != connection || !KnownStep(r.step)) {
    return std::optional<Record>();
  }
  auto s = ParseRfc3339(started);
  auto u = ParseRfc3339(updated);
  if (s.ok()) r.started_at = *s;
  if (u.ok()) r.updated_at = *u;
  return std::optional<Record>(r);
}

Status SecretRotator::WriteRecord(const Record& record) const {
  Json::Value j(Json::objectValue);
  j["format"] = 1;
  j["connection"] = record.connection;
  j["secret"] = std::string(kPassword);
  j["step"] = record.step;
  j["from"] = Json::UInt(record.from);
  j["to"] = Json::UInt(record.to);
  j["started_at"] = FormatRfc3339(record.started_at);
  j["updated_at"] = FormatRfc3339(deps_.clock->Now());
  return WriteFileAtomically(RecordPath(StateDir(), record.connection), WritePrettyJson(j) + "\n",
                             0600);
}

Status SecretRotator::RemoveRecord(const std::string& connection) const {
  const std::filesystem::path path = RecordPath(StateDir(), connection);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return FailedPrecondition("cannot remove " + path.string() + ": " + Errno(errno));
  }
  return Status::Ok();
}

void SecretRotator::Audit(Severity severity, const std::string& connection, std::string_view step,
                          std::uint32_t version, std::uint32_t previous, const std::string& message,
                          std::vector<LogField> extra) {
  if (deps_.audit == nullptr) return;
  std::vector<LogField> fields = {{"CONNECTION", connection},
                                  {"SECRET_NAME", std::string(kPassword)},
                                  {"ROTATION_STEP", std::string(step)},
                                  {"SECRET_VERSION", std::to_string(version)},
                                  {"PREVIOUS_VERSION", std::to_string(previous)}};
  for (LogField& f : extra) fields.push_back(std::move(f));
  deps_.audit->Write(severity, event::kSecretRotation,
                     "rotation of " + connection + "/password: " + message, fields);
}

Status SecretRotator::CheckPasswordTarget(const ConnectionConfig& c) const {
  if (c.flavor == JiraFlavor::kCloud) return jira::CloudPasswordRotationRefusal(c.name);
  if (!c.provisioning || c.provisioning->auth != ProvisioningConfig::Auth::kPassword) {
    return Status(Code::kFailedPrecondition,
                  "connection " + c.name +
                      " does not log in to Jira with a password (provisioning.auth is not "
                      "\"password\"), so there is no Jira password to rotate",
                  std::string(jira::reason::kInvalidParams));
  }
  return Status::Ok();
}

Status SecretRotator::Discard(const std::string& connection, std::uint32_t version,
                              const std::string& why) {
  Status s = deps_.secrets->Destroy(connection, kPassword, version);
  if (!s.ok() && s.code() != Code::kNotFound) {
    return TokenError(s, "discarding the staged " + Describe(connection, version));
  }
  Audit(Severity::kNotice, connection, "discarded", version, 0,
        "staged version " + std::to_string(version) + " discarded: " + why);
  return Status::Ok();
}

Status SecretRotator::PromoteVersion(const std::string& connection, std::uint32_t version,
                                     std::uint32_t previous, const std::string& why) {
  if (Status s = deps_.secrets->Promote(connection, kPassword, version); !s.ok()) {
    return TokenError(s, "promoting " + Describe(connection, version));
  }
  if (previous != 0) StampRetired(connection, kPassword, previous).IgnoreError();
  Audit(Severity::kNotice, connection, "promoted", version, previous,
        "version " + std::to_string(version) + " is current" +
            (previous != 0 ? ", version " + std::to_string(previous) + " retired" : "") + " (" +
            why + ")");
  return Status::Ok();
}

// ---- Retired versions ---------------------------------------------------------------------------

namespace {

using StampKey = std::tuple<std::string, std::string, std::uint32_t>;

Result<std::map<StampKey, SysTime>> LoadStamps(const std::filesystem::path& path) {
  std::map<StampKey, SysTime> out;
  CW_ASSIGN_OR_RETURN(std::optional<std::string> text, ReadText(path));
  if (!text) return out;
  auto parsed = ParseJson(*text, path.string(), 1024 * 1024);
  // An unreadable file only means versions are stamped again (destroyed later, never sooner).
  if (!parsed.ok() || !parsed->isObject() || !(*parsed)["retired"].isArray()) return out;
  for (const Json::Value& e : (*parsed)["retired"]) {
    if (!e.isObject() || !e["connection"].isString() || !e["name"].isString() ||
        !e["version"].isUInt() || !e["since"].isString()) {
      continue;
    }
    auto since = ParseRfc3339(e["since"].asString());
    if (!since.ok()) continue;
    out[{e["connection"].asString(), e["name"].asString(), e["version"].asUInt()}] = *since;
  }
  return out;
}

Status SaveStamps(const std::filesystem::path& path, const std::map<StampKey, SysTime>& stamps) {
  Json::Value j(Json::objectValue);
  j["format"] = 1;
  j["retired"] = Json::Value(Json::arrayValue);
  for (const auto& [key, since] : stamps) {
    Json::Value e(Json::objectValue);
    e["connection"] = std::get<0>(key);
    e["name"] = std::get<1>(key);
    e["version"] = Json::UInt(std::get<2>(key));
    e["since"] = FormatRfc3339(since);
    j["retired"].append(e);
  }
  return WriteFileAtomically(path, WritePrettyJson(j) + "\n", 0600);
}

}  // namespace

Status SecretRotator::StampRetired(const std::string& connection, std::string_view name,
                                   std::uint32_t version) {
  const std::filesystem::path state = StateDir();
  CW_RETURN_IF_ERROR(EnsureFolder(state));
  CW_ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire(Folder(state) / kRetiredLock, {}));
  CW_ASSIGN_OR_RETURN(auto stamps, LoadStamps(Folder(state) / kRetiredFile));
  auto [it, added] =
      stamps.try_emplace({connection, std::string(name), version}, deps_.clock->Now());
  (void)it;
  if (!added) return Status::Ok();
  return SaveStamps(Folder(state) / kRetiredFile, stamps);
}

Status SecretRotator::SweepRetired() {
  const std::shared_ptr<const Config> config = deps_.config();
  const std::filesystem::path state = config->state_dir;
  CW_RETURN_IF_ERROR(EnsureFolder(state));
  CW_ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire(Folder(state) / kRetiredLock, {}));
  CW_ASSIGN_OR_RETURN(auto stamps, LoadStamps(Folder(state) / kRetiredFile));
  auto listed = deps_.secrets->List();
  if (!listed.ok()) return TokenError(listed.status(), "listing the token's secrets");
  const SysTime now = deps_.clock->Now();
  std::map<StampKey, SysTime> kept;
  Status first;
  for (const hsm::SecretInfo& info : *listed) {
    if (info.state != hsm::SecretState::kRetired) continue;
    const StampKey key{info.connection, info.name, info.version};
    auto it = stamps.find(key);
    const SysTime since = it != stamps.end() ? it->second : now;
    if (now - since < config->rotation.old_version_grace) {
      kept[key] = since;
      continue;
    }
    Status s = deps_.secrets->Destroy(info.connection, info.name, info.version);
    if (!s.ok() && s.code() != Code::kNotFound) {
      kept[key] = since;
      if (first.ok()) first = TokenError(s, "destroying a retired version");
      continue;
    }
    if (deps_.audit != nullptr) {
      deps_.audit->Log(Severity::kNotice, event::kSecretRotation,
                       "rotation of " + info.connection + "/" + info.name + ": retired version " +
                           std::to_string(info.version) + " destroyed after the grace period (" +
                           std::to_string(config->rotation.old_version_grace.count()) + " s)",
                       {{"CONNECTION", info.connection},
                        {"SECRET_NAME", info.name},
                        {"ROTATION_STEP", "old-destroyed"},
                        {"SECRET_VERSION", std::to_string(info.version)},
                        {"RETIRED_SINCE", FormatRfc3339(since)}});
    }
  }
  if (kept != stamps) CW_RETURN_IF_ERROR(SaveStamps(Folder(state) / kRetiredFile, kept));
  return first;
}

// ---- Recovery -----------------------------------------------------------------------------------

Status SecretRotator::Recover(const std::string& connection, std::stop_token stop) {
  const std::shared_ptr<const Config> config = deps_.config();
  const ConnectionConfig* c = config->FindConnection(connection);
  if (c == nullptr) return NotFound("no connection named '" + connection + "' is configured");
  CW_RETURN_IF_ERROR(CheckPasswordTarget(*c));
  CW_RETURN_IF_ERROR(EnsureFolder(config->state_dir));
  CW_ASSIGN_OR_RETURN(FileLock lock, FileLock::Acquire(LockPath(config->state_dir, c->name), stop));
  Status settled = RecoverLocked(*c, stop);
  SweepRetired().IgnoreError();
  return settled;
}

Status SecretRotator::RecoverAll(std::stop_token stop) {
  const std::shared_ptr<const Config> config = deps_.config();
  Status first;
  for (const ConnectionConfig& c : config->connections) {
    if (!CheckPasswordTarget(c).ok()) continue;
    Status s = EnsureFolder(config->state_dir);
    if (s.ok()) {
      auto lock = FileLock::TryAcquire(LockPath(config->state_dir, c.name));
      if (!lock.ok()) {
        s = lock.status();
      } else if (lock->has_value()) {
        s = RecoverLocked(c, stop);
      }  // else: a rotation is running; it settles its own state
    }
    if (!s.ok() && first.ok()) first = s.WithContext(c.name);
  }
  if (Status swept = SweepRetired(); !swept.ok() && first.ok()) first = swept;
  return first;
}

Status SecretRotator::RecoverLocked(const ConnectionConfig& c, std::stop_token stop) {
  const std::string& conn = c.name;
  CW_ASSIGN_OR_RETURN(PasswordVersions v, LoadPasswordVersions(*deps_.secrets, conn));
  CW_ASSIGN_OR_RETURN(std::optional<Record> record, ReadRecord(conn));
  const std::uint32_t current = v.current;
  std::uint32_t pending = 0;
  for (std::uint32_t p : v.pending) {
    if (p > current) pending = p;  // ascending: the newest wins...
  }
  if (record && record->to != 0 &&
      std::find(v.pending.begin(), v.pending.end(), record->to) != v.pending.end() &&
      record->to > current) {
    pending = record->to;  // ...unless the record names its own
  }
  for (std::uint32_t p : v.pending) {
    if (p == pending) continue;
    CW_RETURN_IF_ERROR(Discard(
        conn, p,
        p <= current ? "stale (at or below the current version " + std::to_string(current) + ")"
                     : "superseded by staged version " + std::to_string(pending)));
  }
  if (pending == 0) {
    if (record) {
      CW_RETURN_IF_ERROR(RemoveRecord(conn));
      Audit(Severity::kInfo, conn, "recovered", current, 0,
            "nothing staged remains; the record of an earlier rotation (step " + record->step +
                ") was removed");
    }
    return Status::Ok();
  }
  // A record that does not describe this staged version says nothing about it.
  if (record && record->to != 0 && record->to != pending) record.reset();
  const std::string step = record ? record->step : "";
  const std::vector<LogField> recovery = {{"RECOVERY", "1"}};

  if (step == kStepStaging || step == kStepStaged) {
    CW_RETURN_IF_ERROR(Discard(conn, pending, "an interrupted rotation never sent it to Jira"));
    CW_RETURN_IF_ERROR(RemoveRecord(conn));
    Audit(Severity::kNotice, conn, "recovered", current, pending,
          "the interrupted rotation had not sent the change; version " + std::to_string(current) +
              " stays current",
          recovery);
    return Status::Ok();
  }
  if (step == kStepVerified) {
    CW_RETURN_IF_ERROR(PromoteVersion(conn, pending, current,
                                      "the new password had logged in before the "
                                      "interruption"));
    CW_RETURN_IF_ERROR(RemoveRecord(conn));
    Audit(Severity::kNotice, conn, "recovered", pending, current,
          "the interrupted rotation was verified; version " + std::to_string(pending) +
              " promoted without a login",
          recovery);
    return Status::Ok();
  }

  // Jira may have either password: one login per version, the staged one first.
  CW_ASSIGN_OR_RETURN(std::shared_ptr<jira::Connection> connection, deps_.connections(c));
  if (std::optional<jira::LoginStop> st = connection->state().login_stop()) {
    // A stop that still applies (same password, and same MFA key when it is about the second
    // factor) forbids every login; a stale one is lifted by the next login (jira/auth.h).
    bool applies = st->password_version == current;
    if (applies && (st->totp_version != 0 || st->reason == jira::reason::kMfaFailed)) {
      auto totp = connection->credentials().CurrentVersion(jira::secret::kTotp);
      applies = totp.ok() && *totp == st->totp_version;
    }
    if (applies) {
      Audit(Severity::kWarning, conn, "recovery-blocked", pending, current,
            "staged version " + std::to_string(pending) +
                " is unsettled, and the login stop forbids the logins that would settle it",
            recovery);
      return Status(Code::kFailedPrecondition,
                    "rotation of " + conn + "/password: staged version " + std::to_string(pending) +
                        " is unsettled and no login may be attempted: " + st->message,
                    st->reason);
    }
  }
  if (step != kStepPendingRefused) {
    Audit(Severity::kInfo, conn, "recovery-probe", pending, current,
          "trying staged version " + std::to_string(pending) +
              " (the interrupted rotation may have changed Jira's password)",
          recovery);
    Status probe = jira::VerifyPasswordVersion(*connection, pending, false, stop);
    if (probe.ok()) {
      CW_RETURN_IF_ERROR(PromoteVersion(conn, pending, current, "Jira accepted it at login"));
      CW_RETURN_IF_ERROR(RemoveRecord(conn));
      Audit(Severity::kNotice, conn, "recovered", pending, current,
            "Jira has the new password; version " + std::to_string(pending) + " promoted",
            recovery);
      return Status::Ok();
    }
    if (probe.reason() != jira::reason::kAuthFailed) {
      Audit(Severity::kWarning, conn, "recovery-stopped", pending, current,
            "could not try staged version " + std::to_string(pending) + ": " + probe.message(),
            recovery);
      return probe.WithContext("rotation of " + conn + "/password, trying staged version " +
                               std::to_string(pending));
    }
    // Never try this version again: the record remembers the refusal.
    Record r = record.value_or(Record{conn, "", current, pending, deps_.clock->Now(), {}});
    r.step = kStepPendingRefused;
    r.to = pending;
    CW_RETURN_IF_ERROR(WriteRecord(r));
    Audit(Severity::kNotice, conn, "recovery-probe", pending, current,
          "Jira refused staged version " + std::to_string(pending), recovery);
  }
  if (current == 0) {
    return Status(Code::kFailedPrecondition,
                  "rotation of " + conn + "/password: Jira refused staged version " +
                      std::to_string(pending) + " and there is no current version to fall back on",
                  std::string(jira::reason::kAuthFailed));
  }
  Audit(Severity::kInfo, conn, "recovery-probe", current, pending,
        "trying version " + std::to_string(current) + " (the one in use before the rotation)",
        recovery);
  Status kept = jira::VerifyPasswordVersion(*connection, current, true, stop);
  if (kept.ok()) {
    CW_RETURN_IF_ERROR(Discard(conn, pending, "Jira kept the old password"));
    CW_RETURN_IF_ERROR(RemoveRecord(conn));
    Audit(Severity::kNotice, conn, "recovered", current, pending,
          "Jira kept the old password; version " + std::to_string(current) + " stays current",
          recovery);
    return Status::Ok();
  }
  Audit(Severity::kError, conn, "recovery-stopped", current, pending,
        "neither staged version " + std::to_string(pending) + " nor version " +
            std::to_string(current) + " logged in: " + kept.message(),
        recovery);
  return kept.WithContext("rotation of " + conn + "/password: Jira refused staged version " +
                          std::to_string(pending) + ", then version " + std::to_string(current));
}

// ---- Rotation -----------------------------------------------------------------------------------

Result<RotationOutcome> SecretRotator::RotatePassword(const std::string& connection,
                                                      std::stop_token stop,
                                                      const std::function<void()>& waiting) {
  const std::shared_ptr<const Config> config = deps_.config();
  const ConnectionConfig* c = config->FindConnection(connection);
  if (c == nullptr) {
    return Status(Code::kNotFound, "no connection named '" + connection + "' is configured",
                  std::string(jira::reason::kInvalidParams));
  }
  CW_RETURN_IF_ERROR(CheckPasswordTarget(*c));
  CW_RETURN_IF_ERROR(EnsureFolder(config->state_dir));
  CW_ASSIGN_OR_RETURN(FileLock lock,
                      FileLock::Acquire(LockPath(config->state_dir, c->name), stop, waiting));
  if (Status s = RecoverLocked(*c, stop); !s.ok()) {
    return s.WithContext("an earlier rotation could not be settled, so no new one was started");
  }
  CW_ASSIGN_OR_RETURN(PasswordVersions v, LoadPasswordVersions(*deps_.secrets, connection));
  const std::uint32_t from = v.current;
  if (from == 0) {
    return Status(Code::kFailedPrecondition,
                  "connection " + connection +
                      " has no current password in the token to rotate from; store the one Jira "
                      "has with: cakewalk-agent secret set " +
                      connection + " password",
                  std::string(jira::reason::kCredentialsMissing));
  }
  CW_ASSIGN_OR_RETURN(std::shared_ptr<jira::Connection> jira_connection, deps_.connections(*c));
  jira::Connection& jc = *jira_connection;

  // 1. What the password must look like.
  CW_ASSIGN_OR_RETURN(std::optional<jira::PasswordRules> rules, jira::FetchPasswordRules(jc, stop));
  auto plan = PlanPassword(c->password_policy, rules ? &*rules : nullptr,
                           "connections[" + connection + "].password_policy");
  if (!plan.ok()) {
    Audit(Severity::kWarning, connection, "refused", 0, from, plan.status().message());
    return Status(Code::kFailedPrecondition, plan.status().message(),
                  std::string(jira::reason::kPolicyDenied));
  }
  if (rules && !rules->unrecognised.empty()) {
    std::string list;
    for (const auto& s : rules->unrecognised) list += (list.empty() ? "" : " | ") + s;
    Audit(Severity::kInfo, connection, "policy", 0, from,
          "Jira's password policy has rules the agent cannot check in advance (Jira checks them "
          "at the change): " +
              list);
  }

  // 2-4. Stage the new password before Jira is touched.
  Record record{connection, kStepStaging, from, 0, deps_.clock->Now(), {}};
  CW_RETURN_IF_ERROR(WriteRecord(record));
  std::uint32_t to = 0;
  {
    auto password =
        GeneratePassword(*plan, [this](std::size_t n) { return deps_.secrets->Random(n); });
    if (!password.ok()) {
      RemoveRecord(connection).IgnoreError();
      return TokenError(password.status(), "generating the new password");
    }
    auto staged = deps_.secrets->PutPending(connection, kPassword, *password);
    password->Wipe();
    if (!staged.ok()) {
      RemoveRecord(connection).IgnoreError();
      return TokenError(staged.status(), "sealing the new password");
    }
    to = staged->version;
  }
  Audit(Severity::kNotice, connection, "staged", to, from,
        "new password generated in the token and sealed as pending version " + std::to_string(to),
        {{"PASSWORD_LENGTH", std::to_string(plan->length)}});
  Reached(RotationStep::kStaged);
  record.step = kStepStaged;
  record.to = to;
  if (Status s = WriteRecord(record); !s.ok()) {
    Discard(connection, to, "the rotation record could not be written").IgnoreError();
    RemoveRecord(connection).IgnoreError();
    return s;
  }

  // 5-6. The change, sent at most once.
  jira::PasswordChange change = jira::ChangeAccountPassword(
      jc, from, to,
      [&]() -> Status {
        record.step = kStepChangeSent;
        CW_RETURN_IF_ERROR(WriteRecord(record));
        Audit(Severity::kNotice, connection, "change-sent", to, from,
              "logged in with version " + std::to_string(from) +
                  "; sending the change to Jira (PUT /rest/api/2/myself/password)");
        Reached(RotationStep::kChangeRecorded);
        return Status::Ok();
      },
      stop);
  using Outcome = jira::PasswordChange::Outcome;
  switch (change.outcome) {
    case Outcome::kNotSent:
    case Outcome::kRefused: {
      Audit(Severity::kWarning, connection,
            change.outcome == Outcome::kNotSent ? "not-sent" : "refused", to, from,
            change.status.message());
      CW_RETURN_IF_ERROR(Discard(connection, to, "Jira kept the old password"));
      CW_RETURN_IF_ERROR(RemoveRecord(connection));
      return change.status.WithContext("password rotation of " + connection +
                                       " (nothing changed; version " + std::to_string(from) +
                                       " stays current)");
    }
    case Outcome::kUnknown: {
      Audit(Severity::kWarning, connection, "change-unknown", to, from,
            "Jira's answer to the change was lost (" + change.status.message() +
                "); settling by one login per version");
      Status settled = RecoverLocked(*c, stop);
      CW_ASSIGN_OR_RETURN(PasswordVersions after, LoadPasswordVersions(*deps_.secrets, connection));
      if (settled.ok() && after.current == to) {
        SweepRetired().IgnoreError();
        return RotationOutcome{to, from, true};
      }
      if (settled.ok()) {
        return Status(Code::kFailedPrecondition,
                      "password rotation of " + connection + ": " + change.status.message() +
                          "; Jira kept the old password (version " + std::to_string(from) +
                          " stays current)",
                      change.status.reason());
      }
      return settled.WithContext("password rotation of " + connection + ": " +
                                 change.status.message());
    }
    case Outcome::kChanged:
      break;
  }
  Audit(Severity::kNotice, connection, "jira-changed", to, from,
        "Jira accepted the change to version " + std::to_string(to));
  Reached(RotationStep::kJiraChanged);
  record.step = kStepChanged;
  CW_RETURN_IF_ERROR(WriteRecord(record));

  // 7-8. A fresh login with the new password.
  Status verified = jira::VerifyPasswordVersion(jc, to, false, stop);
  if (!verified.ok()) {
    if (verified.reason() == jira::reason::kAuthFailed) {
      record.step = kStepPendingRefused;
      WriteRecord(record).IgnoreError();
      Audit(
          Severity::kError, connection, "verify-refused", to, from,
          "Jira accepted the change but refused the new password at login: " + verified.message());
      Status settled = RecoverLocked(*c, stop);
      return Status(Code::kFailedPrecondition,
                    "password rotation of " + connection +
                        ": Jira accepted the change but refused the new password at login" +
                        (settled.ok() ? "; the old password still works and stays current"
                                      : "; " + settled.message()),
                    std::string(jira::reason::kAuthFailed));
    }
    Audit(Severity::kWarning, connection, "verify-failed", to, from,
          "the new password could not be verified yet: " + verified.message() +
              " (recovery settles it at the next attempt)");
    return verified.WithContext("password rotation of " + connection +
                                ": Jira has the new password (version " + std::to_string(to) +
                                "), but the login that verifies it failed; recovery settles it "
                                "at the next start or rotation");
  }
  record.step = kStepVerified;
  if (Status s = WriteRecord(record); !s.ok()) {
    Audit(Severity::kWarning, connection, "verified", to, from,
          "verified, but the record could not be updated: " + s.message());
  } else {
    Audit(Severity::kNotice, connection, "verified", to, from,
          "a fresh login with version " + std::to_string(to) + " worked");
  }
  Reached(RotationStep::kVerified);

  // 9-10. Promote, tidy up.
  CW_RETURN_IF_ERROR(PromoteVersion(connection, to, from, "verified"));
  Reached(RotationStep::kPromoted);
  CW_RETURN_IF_ERROR(RemoveRecord(connection));
  if (Status swept = SweepRetired(); !swept.ok()) {
    Audit(Severity::kWarning, connection, "sweep", to, from,
          "retired versions could not be destroyed yet: " + swept.message());
  }
  Reached(RotationStep::kFinished);
  Audit(Severity::kNotice, connection, "finished", to, from,
        "rotated: version " + std::to_string(to) + " in use; version " + std::to_string(from) +
            " is destroyed after " + std::to_string(config->rotation.old_version_grace.count()) +
            " s");
  return RotationOutcome{to, from, true};
}

// ---- Certificate --------------------------------------------------------------------------------

Result<std::uint32_t> RotateCertificate(CertificateRenewer& renewer, const Identity& identity) {
  CW_ASSIGN_OR_RETURN(CertificateRenewer::Outcome first, renewer.MaybeRenew(true));
  if (first == CertificateRenewer::Outcome::kFellBack) {
    return FailedPrecondition(
        "the control plane refused the renewed certificate; the agent is back on key " +
        identity.record().current.key_label + " (see the log)");
  }
  if (first != CertificateRenewer::Outcome::kRenewed) {
    // An earlier switch was confirmed first (or nothing happened): now the renewal itself.
    CW_ASSIGN_OR_RETURN(CertificateRenewer::Outcome second, renewer.MaybeRenew(true));
    if (second != CertificateRenewer::Outcome::kRenewed) {
      return FailedPrecondition("the certificate renewal did not take place; see the log");
    }
  }
  const std::string label = identity.record().current.key_label;
  const std::string prefix = kIdentityKeyLabelPrefix;
  if (label.rfind(prefix, 0) != 0) return Internal("unexpected identity key label " + label);
  try {
    return static_cast<std::uint32_t>(std::stoul(label.substr(prefix.size())));
  } catch (...) {
    return Internal("unexpected identity key label " + label);
  }
}

// ---- RotationService ----------------------------------------------------------------------------

RotationService::RotationService(SecretRotator& rotator,
                                 std::function<std::shared_ptr<const Config>()> config,
                                 std::function<Result<std::uint32_t>()> certificate, LogSink& log,
                                 std::chrono::milliseconds interval)
    : rotator_(rotator),
      config_(std::move(config)),
      certificate_(std::move(certificate)),
      log_(log),
      interval_(interval) {}

RotationService::~RotationService() { Stop(); }

void RotationService::Start() {
  std::lock_guard lock(mu_);
  if (maintenance_.joinable() || stopping_) return;
  maintenance_ = std::thread(&RotationService::Maintain, this);
}

void RotationService::Stop() {
  std::list<std::thread> workers;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    workers.swap(workers_);
  }
  stop_.request_stop();
  cv_.notify_all();
  if (maintenance_.joinable()) maintenance_.join();
  for (std::thread& t : workers) {
    if (t.joinable()) t.join();
  }
}

void RotationService::Maintain() {
  while (true) {
    {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, interval_, [&] { return stopping_; })) return;
    }
    Status s = rotator_.RecoverAll(stop_.get_token());
    if (!s.ok() && !stop_.stop_requested()) {
      log_.Log(Severity::kWarning, event::kSecretRotation, "rotation maintenance: " + s.message());
    }
  }
}

void RotationService::RotateAsync(std::string connection, std::string name,
                                  std::function<void(Result<std::int64_t>)> done) {
  std::lock_guard lock(mu_);
  if (stopping_) {
    done(Unavailable("the agent is stopping"));
    return;
  }
  workers_.emplace_back([this, connection = std::move(connection), name = std::move(name),
                         done = std::move(done)]() mutable {
    Result<std::int64_t> r = Rotate(connection, name, stop_.get_token());
    if (!r.ok()) {
      log_.Log(Severity::kWarning, event::kSecretRotation,
               "rotation of " + connection + "/" + name + " failed: " + r.status().message(),
               {{"CONNECTION", connection}, {"SECRET_NAME", name}});
    }
    done(std::move(r));
  });
}

Result<std::int64_t> RotationService::Rotate(const std::string& connection, const std::string& name,
                                             std::stop_token stop) {
  if (connection == kControlPlaneConnection) {
    if (name == "certificate") {
      if (!certificate_) return FailedPrecondition("certificate renewal is not available here");
      CW_ASSIGN_OR_RETURN(std::uint32_t number, certificate_());
      return static_cast<std::int64_t>(number);
    }
    if (name == "proxy-password") {
      return FailedPrecondition(
          "the proxy password is issued by the proxy's administrators; store a new one with "
          "'cakewalk-agent secret set control-plane proxy-password'");
    }
    return InvalidArgument("the control plane's rotatable secret is 'certificate'");
  }
  const std::shared_ptr<const Config> config = config_();
  const ConnectionConfig* c = config->FindConnection(connection);
  if (c == nullptr) return NotFound("no connection named '" + connection + "' is configured");
  if (name == "password") {
    CW_ASSIGN_OR_RETURN(RotationOutcome out, rotator_.RotatePassword(connection, stop));
    return static_cast<std::int64_t>(out.version);
  }
  if (name == "totp") {
    return FailedPrecondition(
        "an MFA key is rotated by enrolling the new one: cakewalk-agent mfa "
        "enroll " +
        connection + " (it becomes current after the next successful two-step login)");
  }
  if (name == "oauth-refresh-token") {
    return FailedPrecondition("the OAuth refresh token rotates by itself on every refresh");
  }
  if (name == "api-token" && c->flavor == JiraFlavor::kCloud) {
    return jira::CloudPasswordRotationRefusal(connection);
  }
  return InvalidArgument("'" + name +
                         "' cannot be rotated by the agent; store a new value with "
                         "'cakewalk-agent secret set " +
                         connection + " " + name + "'");
}

// ---- The secret.rotate executor -----------------------------------------------------------------

namespace {

class RotationExecutor final : public Executor {
 public:
  RotationExecutor(SecretRotator& rotator, std::function<std::shared_ptr<const Config>()> config)
      : rotator_(rotator), config_(std::move(config)) {}

  bool idempotent() const override { return false; }

  Result<Json::Value> Run(JobContext& job) override {
    if (job.stop.stop_requested()) return StoppedStatus();
    CW_RETURN_IF_ERROR(CheckParams(job.params, {"secret"}));
    const Json::Value& secret = job.params["secret"];
    if (!secret.isString() || secret.asString() != "password") {
      return Status(Code::kInvalidArgument,
                    "params.secret must be \"password\", the one secret a job may rotate",
                    std::string(jira::reason::kInvalidParams));
    }
    if (!config_()->jobs.allow_remote_secret_rotation) {
      return Status(Code::kPermissionDenied,
                    "remote secret rotation is off (jobs.allow_remote_secret_rotation)",
                    std::string(jira::reason::kPolicyDenied));
    }
    auto out = rotator_.RotatePassword(job.connection.name, job.stop);
    if (!out.ok()) return JobStatus(out.status());
    Json::Value output(Json::objectValue);
    output["secret"] = "password";
    output["version"] = Json::UInt(out->version);
    output["verified"] = out->verified;
    return output;
  }

 private:
  SecretRotator& rotator_;
  std::function<std::shared_ptr<const Config>()> config_;
};

}  // namespace

Status RegisterRotationExecutor(ExecutorRegistry& registry, SecretRotator& rotator,
                                std::function<std::shared_ptr<const Config>()> config) {
  return registry.Register(std::string(kJobTypeSecretRotate),
                           std::make_shared<RotationExecutor>(rotator, std::move(config)));
}

}  // namespace cakewalk::agent
