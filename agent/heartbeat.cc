#include "agent/heartbeat.h"

#include <algorithm>
#include <array>

namespace cakewalk::agent {
namespace {

// Job error codes that describe the connection (Jira, its credentials, the token) rather than
// the job's own input.
constexpr std::array<std::string_view, 9> kConnectionCodes = {
    "jira_unavailable", "auth_failed",       "mfa_failed",
    "captcha_required", "not_admin",         "credentials_missing",
    "rate_limited",     "token_unavailable", "unsupported_by_jira_version"};

}  // namespace

void ConnectionHealth::RecordJob(const std::string& connection, const std::string& error_code,
                                 const std::string& message, SysTime at) {
  Entry e;
  e.at = at;
  if (error_code.empty()) {
    e.ok = true;
    e.detail = "last job succeeded at " + FormatRfc3339(at);
  } else if (std::find(kConnectionCodes.begin(), kConnectionCodes.end(), error_code) !=
             kConnectionCodes.end()) {
    e.ok = false;
    e.detail = error_code + ": " + message.substr(0, 300);
  } else {
    e.ok = true;
    e.detail = "reachable; last job failed with " + error_code + " at " + FormatRfc3339(at);
  }
  std::lock_guard lock(mu_);
  entries_[connection] = std::move(e);
}

std::optional<ConnectionHealth::Entry> ConnectionHealth::Get(const std::string& connection) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(connection);
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

std::string SecretNotes(const std::vector<hsm::SecretInfo>& secrets, std::string_view connection,
                        std::chrono::hours max_age, SysTime now, bool staged) {
  std::string out;
  for (const hsm::SecretInfo& s : secrets) {
    if (s.connection != connection) continue;
    const std::string what = s.name + " v" + std::to_string(s.version);
    if (s.state == hsm::SecretState::kCurrent && now - s.created > max_age) {
      const auto days =
          std::chrono::duration_cast<std::chrono::hours>(now - s.created).count() / 24;
      out += "; " + what + " is " + std::to_string(days) +
             " days old (rotation.max_age_days: " + std::to_string(max_age.count() / 24) +
             "): rotate it";
    } else if (staged && s.state == hsm::SecretState::kPending) {
      out += "; " + what + " staged (rotation in progress)";
    }
  }
  return out;
}

Json::Value BuildHeartbeatBody(const HeartbeatInputs& in, const ConnectionHealth* health) {
  Json::Value body(Json::objectValue);
  body["agent_version"] = in.agent_version;
  body["uptime_seconds"] = static_cast<Json::Int64>(std::max<std::int64_t>(0, in.uptime.count()));
  body["certificate_expires_at"] = FormatRfc3339(in.certificate_expires_at);
  Json::Value token(Json::objectValue);
  token["manufacturer"] = in.token.manufacturer;
  token["model"] = in.token.model;
  token["serial"] = in.token.serial;
  token["label"] = in.token.label;
  body["token"] = token;

  Json::Value connections(Json::arrayValue);
  for (const ConnectionConfig& c : in.connections) {
    Json::Value entry(Json::objectValue);
    entry["name"] = c.name;
    entry["type"] = std::string(FlavorName(c.flavor));
    std::vector<std::string> missing;
    if (!in.secrets_error) {
      for (const std::string& name : RequiredSecrets(c)) {
        const bool present = std::any_of(in.secrets.begin(), in.secrets.end(), [&](const auto& s) {
          return s.connection == c.name && s.name == name && s.state == hsm::SecretState::kCurrent;
        });
        if (!present) missing.push_back(name);
      }
    }
    std::optional<ConnectionHealth::Entry> seen =
        health != nullptr ? health->Get(c.name) : std::nullopt;
    if (in.secrets_error) {
      entry["status"] = "error";
      entry["detail"] = "the token's secrets cannot be listed";
    } else if (!missing.empty()) {
      std::string names;
      for (const auto& m : missing) names += (names.empty() ? "" : ", ") + m;
      entry["status"] = "error";
      entry["detail"] = "credentials missing in the token: " + names;
    } else if (seen.has_value()) {
      entry["status"] = seen->ok ? "ok" : "error";
      entry["detail"] = seen->detail;
    } else {
      entry["status"] = "ok";
      entry["detail"] = "credentials present; not used yet";
    }
    if (in.max_age) {
      // The rotation policy's warning: secrets in use for longer than rotation.max_age_days.
      entry["detail"] = entry["detail"].asString() +
                        SecretNotes(in.secrets, c.name, *in.max_age, in.now, /*staged=*/false);
    }
    connections.append(entry);
  }
  body["connections"] = connections;

  Json::Value secrets(Json::arrayValue);
  for (const hsm::SecretInfo& s : in.secrets) {
    if (s.state != hsm::SecretState::kCurrent || s.version == 0) continue;
    Json::Value entry(Json::objectValue);
    entry["connection"] = s.connection;
    entry["name"] = s.name;
    entry["version"] = static_cast<Json::UInt>(s.version);
    entry["created_at"] = FormatRfc3339(s.created);
    secrets.append(entry);
  }
  body["secrets"] = secrets;

  Json::Value jobs(Json::objectValue);
  jobs["running"] = std::max(0, in.jobs_running);
  jobs["results_pending"] = static_cast<Json::Int64>(std::max<std::int64_t>(0, in.results_pending));
  body["jobs"] = jobs;
  return body;
}

HeartbeatLoop::HeartbeatLoop(Deps deps)
    : deps_(std::move(deps)), started_(std::chrono::steady_clock::now()) {}

HeartbeatLoop::~HeartbeatLoop() { Stop(); }

void HeartbeatLoop::Start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread(&HeartbeatLoop::Run, this);
}

void HeartbeatLoop::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

int HeartbeatLoop::sent() const {
  std::lock_guard lock(mu_);
  return sent_;
}

Json::Value HeartbeatLoop::Body(SysTime certificate_expires_at) const {
  HeartbeatInputs in;
  in.agent_version = deps_.agent_version;
  in.uptime =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_);
  in.certificate_expires_at = certificate_expires_at;
  in.token = deps_.token;
  if (deps_.config) {
    const std::shared_ptr<const Config> config = deps_.config();
    in.connections = config->connections;
    in.max_age = config->rotation.max_age;
  }
  in.now = deps_.clock != nullptr ? deps_.clock->Now() : SystemClock().Now();
  if (deps_.secrets != nullptr) {
    auto listed = deps_.secrets->List();
    if (listed.ok()) {
      in.secrets = std::move(listed).value();
    } else {
      in.secrets_error = listed.status();
    }
  }
  if (deps_.snapshot) {
    LoopSnapshot s = deps_.snapshot();
    in.jobs_running = s.jobs_running;
    in.results_pending = s.results_pending;
  }
  return BuildHeartbeatBody(in, deps_.health);
}

void HeartbeatLoop::Run() {
  Backoff backoff = deps_.random ? Backoff(deps_.random) : Backoff();
  while (true) {
    std::chrono::milliseconds delay = deps_.interval;
    if (deps_.before_each) deps_.before_each();
    auto cp = deps_.control_plane();
    Result<HeartbeatResponse> answer = cp.ok()
                                           ? cp->client->Heartbeat(Body(cp->certificate_not_after))
                                           : Result<HeartbeatResponse>(cp.status());
    if (deps_.on_result) deps_.on_result(answer.status());
    if (answer.ok()) {
      backoff.Reset();
      {
        std::lock_guard lock(mu_);
        ++sent_;
      }
      if (answer->renew_certificate) {
        deps_.log->Log(Severity::kNotice, event::kCertificate,
                       "the control plane asks for a certificate renewal");
        if (deps_.renew_certificate) deps_.renew_certificate();
      }
    } else {
      const Status& s = answer.status();
      if (ClassifyFailure(s) != Failure::kIdentityRejected) {
        deps_.log->Log(Severity::kWarning, event::kControlPlane, "heartbeat failed: " + s.message(),
                       {{"REASON", s.reason()}});
      }
      if (ShouldResetConnections(s) && deps_.reset_connections) deps_.reset_connections();
      const std::chrono::milliseconds next = backoff.NextDelay(s);
      // Never sooner than the back-off allows; never later than the regular interval, except
      // for identity rejections (5 minutes).
      delay =
          ClassifyFailure(s) == Failure::kIdentityRejected ? next : std::min(next, deps_.interval);
    }
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, delay, [&] { return stop_; })) return;
  }
}

}  // namespace cakewalk::agent
