#include "agent/daemon.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <optional>
#include <ostream>
#include <stop_token>
#include <thread>

#include "agent/cp_transport.h"
#include "agent/executor.h"
#include "agent/heartbeat.h"
#include "agent/identity.h"
#include "agent/jira_connection.h"
#include "agent/jira_executors.h"
#include "agent/job_loop.h"
#include "agent/journal.h"
#include "agent/jws.h"
#include "agent/renewal.h"
#include "agent/rotation.h"
#include "agent/token_context.h"
#include "agent/version.h"
#include "systemd/agent_control.h"
#include "systemd/bus_service.h"
#include "systemd/event_loop.h"
#include "systemd/journal_sink.h"
#include "systemd/notify.h"

namespace cakewalk::agent {

// --- ConfigHolder ----------------------------------------------------------------------------

std::shared_ptr<const Config> ConfigHolder::Get() const {
  std::lock_guard lock(mu_);
  return current_;
}

Status ConfigHolder::Reload() {
  std::filesystem::path file;
  {
    std::lock_guard lock(mu_);
    file = current_->file;
  }
  CW_ASSIGN_OR_RETURN(Config next, LoadConfig(file, ConfigEnvironment::FromProcess()));
  return Apply(std::move(next));
}

Status ConfigHolder::Apply(Config next) {
  std::lock_guard lock(mu_);
  const Config& now = *current_;
  std::vector<std::string> changed;
  const ControlPlaneConfig& a = now.control_plane;
  const ControlPlaneConfig& b = next.control_plane;
  if (a.url != b.url || a.ca_file != b.ca_file || a.pinned_spki_sha256 != b.pinned_spki_sha256 ||
      a.proxy != b.proxy || a.proxy_username != b.proxy_username || a.no_proxy != b.no_proxy ||
      a.connect_timeout != b.connect_timeout || a.request_timeout != b.request_timeout) {
    changed.emplace_back("control_plane");
  }
  if (now.token.module != next.token.module || now.token.uri != next.token.uri ||
      now.token.pin_file != next.token.pin_file) {
    changed.emplace_back("token");
  }
  if (now.state_dir != next.state_dir) changed.emplace_back("state_dir");
  if (!changed.empty()) {
    std::string list;
    for (const auto& c : changed) list += (list.empty() ? "" : ", ") + c;
    return FailedPrecondition("the new configuration changes " + list +
                              ", which takes a restart (systemctl restart cakewalk-agent); the "
                              "running configuration stays in effect");
  }
  current_ = std::make_shared<const Config>(std::move(next));
  return Status::Ok();
}

namespace {

// How long the start may spend settling interrupted rotations before READY.
constexpr std::chrono::seconds kStartupRecoveryBudget{40};

Severity SeverityOf(const std::string& level) {
  if (level == "debug") return Severity::kDebug;
  if (level == "notice") return Severity::kNotice;
  if (level == "warning") return Severity::kWarning;
  if (level == "error") return Severity::kError;
  return Severity::kInfo;
}

std::string DbusState(LoopState s) {
  switch (s) {
    case LoopState::kStarting:
      return "starting";
    case LoopState::kPolling:
      return "running";
    case LoopState::kBackingOff:
    case LoopState::kIdentityRejected:
      return "degraded";
    case LoopState::kStopping:
    case LoopState::kStopped:
      return "stopping";
  }
  return "degraded";
}

std::string SecretStateWord(hsm::SecretState s) {
  switch (s) {
    case hsm::SecretState::kCurrent:
      return "current";
    case hsm::SecretState::kPending:
      return "pending";
    case hsm::SecretState::kRetired:
      return "previous";
  }
  return "previous";
}

// Publishes the job loop's state to systemd (STATUS=) and to D-Bus properties. Thread-safe; the
// bus may come and go.
//
// The job loop's threads call Publish() and must never wait for systemd: sd_notify blocks while
// the notification socket's queue is full (PID 1 busy or stalled; the kernel queues 10 datagrams
// by default). So Publish() only records the newest line and posts one send to the event loop's
// thread, which sends whatever line is newest when it gets there (changes in between coalesce).
// If that send blocks, the loop thread waits, as it would for its own watchdog ping; jobs, results
// and status reads go on.
class Publisher {
 public:
  Publisher(const sd::Notifier& notifier, sd::LoopHandle events, const Identity& identity)
      : notifier_(notifier), events_(std::move(events)), identity_(identity) {}

  void SetLoop(const JobLoop* loop) {
    std::lock_guard lock(mu_);
    loop_ = loop;
  }
  void SetBus(sd::BusService* bus) {
    std::lock_guard lock(mu_);
    bus_ = bus;
  }
  LoopSnapshot Snapshot() const {
    std::lock_guard lock(mu_);
    return SnapshotLocked();
  }
  void Publish() {
    std::lock_guard lock(mu_);
    if (loop_ == nullptr) return;
    const LoopSnapshot s = SnapshotLocked();
    std::string line = StatusLine(s);
    if (line != last_line_) {
      last_line_ = std::move(line);
      if (!send_posted_) send_posted_ = events_.Post([this] { SendStatus(); });
    }
    if (bus_ != nullptr) {
      sd::AgentProperties p;
      p.state = DbusState(s.state);
      p.certificate_expires_at = s.certificate_expires_at;
      p.jobs_running = static_cast<std::uint32_t>(std::max(0, s.jobs_running));
      p.results_pending = static_cast<std::uint32_t>(std::max<std::int64_t>(0, s.results_pending));
      bus_->SetProperties(p);  // posts to the loop, returns at once
    }
  }
  void JobFinished(const std::string& id, const std::string& type, const std::string& status) {
    std::lock_guard lock(mu_);
    if (bus_ != nullptr) bus_->EmitJobFinished(id, type, status);
  }

 private:
  LoopSnapshot SnapshotLocked() const {
    LoopSnapshot s = loop_ != nullptr ? loop_->Snapshot() : LoopSnapshot{};
    s.certificate_expires_at = identity_.certificate_not_after();
    return s;
  }
  // Loop thread.
  void SendStatus() {
    std::string line;
    {
      std::lock_guard lock(mu_);
      send_posted_ = false;
      line = last_line_;
    }
    notifier_.SetStatus(line).IgnoreError();  // outside the lock: it may block
  }

  const sd::Notifier& notifier_;
  const sd::LoopHandle events_;
  const Identity& identity_;
  mutable std::mutex mu_;
  const JobLoop* loop_ = nullptr;
  sd::BusService* bus_ = nullptr;
  std::string last_line_;
  bool send_posted_ = false;  // a SendStatus is queued on the loop and has not read the line yet
};

class DaemonControl final : public sd::AgentControl {
 public:
  DaemonControl(ConfigHolder& config, Publisher& publisher, hsm::Token& token,
                hsm::SecretStore& secrets, const ConnectionHealth& health,
                RotationService& rotation, LogSink& log)
      : config_(config),
        publisher_(publisher),
        token_(token),
        secrets_(secrets),
        health_(health),
        rotation_(rotation),
        log_(log),
        started_(std::chrono::steady_clock::now()) {}

  sd::StatusSnapshot GetStatus() override {
    const LoopSnapshot s = publisher_.Snapshot();
    sd::StatusSnapshot out;
    out.state = DbusState(s.state);
    out.version = kAgentVersion;
    out.uptime = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() -
                                                                  started_);
    out.jobs_running = static_cast<std::uint32_t>(std::max(0, s.jobs_running));
    out.results_pending = static_cast<std::uint32_t>(std::max<std::int64_t>(0, s.results_pending));
    out.certificate_expires_at = s.certificate_expires_at;
    sd::ConnectionStatus cp;
    cp.name = kControlPlaneConnection;
    cp.state = s.state == LoopState::kIdentityRejected ? "unauthenticated"
               : s.state == LoopState::kBackingOff     ? "unreachable"
                                                       : "ok";
    cp.detail = s.last_error;
    const std::shared_ptr<const Config> config = config_.Get();
    // Metadata only (versions, ages); a token that cannot list them just adds no notes.
    auto listed = secrets_.List();
    const std::vector<hsm::SecretInfo> secrets =
        listed.ok() ? std::move(listed).value() : std::vector<hsm::SecretInfo>{};
    const SysTime now = std::chrono::system_clock::now();
    cp.detail += SecretNotes(secrets, kControlPlaneConnection, config->rotation.max_age, now, true);
    out.connections.push_back(cp);
    for (const ConnectionConfig& c : config->connections) {
      sd::ConnectionStatus cs;
      cs.name = c.name;
      auto h = health_.Get(c.name);
      cs.state = !h.has_value() ? "ok" : h->ok ? "ok" : "error";
      cs.detail = h.has_value() ? h->detail : "not used yet";
      cs.detail += SecretNotes(secrets, c.name, config->rotation.max_age, now, true);
      out.connections.push_back(cs);
    }
    out.sync_progress = s.progress;
    return out;
  }

  Result<std::vector<sd::SecretInfo>> ListSecrets() override {
    CW_ASSIGN_OR_RETURN(std::vector<hsm::SecretInfo> listed, secrets_.List());
    std::vector<sd::SecretInfo> out;
    for (const auto& s : listed) {
      out.push_back({s.connection, s.name, static_cast<int64_t>(s.version), s.created,
                     SecretStateWord(s.state)});
    }
    return out;
  }

  // Runs on a rotation worker (a rotation logs in to Jira twice); answers when it is done.
  void RotateSecret(std::string connection, std::string name, sd::Reply<int64_t> done) override {
    auto reply = std::make_shared<sd::Reply<int64_t>>(std::move(done));
    rotation_.RotateAsync(std::move(connection), std::move(name), [reply](Result<std::int64_t> r) {
      std::move(*reply).Send(std::move(r));
    });
  }

  // The token is re-read first: objects that another process stored since the start (`secret
  // set`, `mfa enroll` from the command line) become visible. tpm2-pkcs11 reads its store only
  // when the module is initialised; on SoftHSM and HSMs this changes nothing. Then the file.
  Status Reload() override {
    Status token = token_.Refresh();
    if (token.ok()) {
      log_.Log(Severity::kInfo, event::kTokenSession, "token objects re-read");
    } else {
      log_.Log(Severity::kError, event::kTokenSession,
               "the token could not be re-read: " + token.message());
    }
    // The event loop logs the outcome (both SIGHUP and D-Bus come through it).
    Status s = config_.Reload();
    if (!s.ok()) return s;
    return token.ok() ? s : token.WithContext("reload");
  }

 private:
  ConfigHolder& config_;
  Publisher& publisher_;
  hsm::Token& token_;
  hsm::SecretStore& secrets_;
  const ConnectionHealth& health_;
  RotationService& rotation_;
  LogSink& log_;
  const std::chrono::steady_clock::time_point started_;
};

TokenDescription Describe(const hsm::TokenInfo& info) {
  return {info.manufacturer, info.model, info.serial, info.label};
}

}  // namespace

Status RunDaemon(const Config& initial, CliIo io) {
  std::unique_ptr<LogSink> log =
      sd::MakeLogSink(sd::LogTarget::kAuto, SeverityOf(initial.log_level));
  CW_ASSIGN_OR_RETURN(std::unique_ptr<sd::EventLoop> events,
                      sd::EventLoop::Create(sd::Notifier::FromEnvironment(), *log));
  const sd::Notifier& notifier = events->notifier();
  notifier.SetStatus("opening the token").IgnoreError();
  ConfigHolder config(initial);

  auto token_or = TokenContext::Open(initial, *log);
  if (!token_or.ok()) return token_or.status().WithContext("opening the token");
  std::unique_ptr<TokenContext> token = std::move(token_or).value();

  auto identity_or = Identity::Open(initial.state_dir, token->token(), *log);
  if (!identity_or.ok()) return identity_or.status();
  std::unique_ptr<Identity> identity = std::move(identity_or).value();
  if (identity->record().control_plane_url != initial.control_plane.url) {
    log->Log(Severity::kWarning, event::kConfig,
             "control_plane.url differs from the URL this agent enrolled with (" +
                 identity->record().control_plane_url + ")");
  }
  const std::string agent_id = identity->agent_id();
  const TokenDescription token_description = Describe(token->token().info());

  auto link = std::make_unique<ControlPlaneLink>(initial, token->secrets(), *identity);
  auto renewer = std::make_unique<CertificateRenewer>(*identity, [&]() { return link->Client(); });

  CW_ASSIGN_OR_RETURN(std::unique_ptr<JobJournal> journal, JobJournal::Open(initial.state_dir));
  SigningKeySet keys(
      identity->signing_keys(),
      [&]() -> Result<std::vector<SigningKey>> {
        CW_ASSIGN_OR_RETURN(std::shared_ptr<ControlPlaneClient> client, link->Client());
        CW_ASSIGN_OR_RETURN(std::vector<SigningKey> fetched, client->SigningKeys());
        if (Status s = identity->UpdateSigningKeys(fetched); !s.ok()) {
          log->Log(Severity::kWarning, event::kControlPlane,
                   "the refreshed job-signing keys could not be stored: " + s.message());
        }
        return fetched;
      },
      SystemClock());

  // The Jira job types run through the connector, one long-lived connection per configured
  // Jira (sessions and tokens are reused between jobs).
  auto jira = std::make_unique<JiraConnections>(token->secrets(), initial.state_dir);
  ExecutorRegistry executors;
  CW_RETURN_IF_ERROR(RegisterJiraExecutors(executors, *jira));
  // Secret rotation (rotation.h) shares the jobs' Jira connections; secret.rotate runs only when
  // jobs.allow_remote_secret_rotation (and allowed_types) allow it.
  auto config_source = [&config] { return config.Get(); };
  auto rotator = std::make_unique<SecretRotator>(SecretRotator::Deps{
      config_source, &token->secrets(), [&jira](const ConnectionConfig& c) { return jira->Get(c); },
      log.get(), &SystemClock()});
  CW_RETURN_IF_ERROR(RegisterRotationExecutor(executors, *rotator, config_source));

  ConnectionHealth health;
  Publisher publisher(notifier, events->handle(), *identity);
  auto control_plane = [&]() -> Result<ControlPlaneHandle> {
    CW_ASSIGN_OR_RETURN(ControlPlaneLink::Connection c, link->Current());
    return ControlPlaneHandle{std::move(c.client), c.certificate_not_after};
  };

  JobLoopDeps deps;
  deps.config = [&config] { return config.Get(); };
  deps.agent_id = agent_id;
  deps.control_plane = control_plane;
  deps.reset_connections = [&] { link->Reset(); };
  deps.journal = journal.get();
  deps.executors = &executors;
  deps.keys = &keys;
  deps.log = log.get();
  deps.clock = &SystemClock();
  deps.health = &health;
  deps.hooks.status_changed = [&publisher] { publisher.Publish(); };
  deps.hooks.job_finished = [&publisher](const std::string& id, const std::string& type,
                                         const std::string& status) {
    publisher.JobFinished(id, type, status);
  };
  JobLoopOptions options;
  options.server_poll_wait_seconds = identity->poll_wait_seconds();
  CW_ASSIGN_OR_RETURN(std::unique_ptr<JobLoop> loop, JobLoop::Create(std::move(deps), options));
  publisher.SetLoop(loop.get());

  HeartbeatLoop::Deps hb;
  hb.control_plane = control_plane;
  hb.agent_version = kAgentVersion;
  hb.token = token_description;
  hb.config = [&config] { return config.Get(); };
  hb.secrets = &token->secrets();
  hb.snapshot = [&publisher] { return publisher.Snapshot(); };
  hb.health = &health;
  hb.before_each = [&] {
    auto r = renewer->MaybeRenew(false);
    if (!r.ok()) {
      log->Log(Severity::kWarning, event::kCertificate,
               "certificate renewal failed: " + r.status().message());
    }
  };
  hb.renew_certificate = [&] {
    auto r = renewer->MaybeRenew(true);
    if (!r.ok()) {
      log->Log(Severity::kWarning, event::kCertificate,
               "certificate renewal failed: " + r.status().message());
    }
  };
  hb.on_result = [&loop](const Status& s) { loop->NoteControlPlaneResult(s); };
  hb.reset_connections = [&] { link->Reset(); };
  hb.log = log.get();
  hb.clock = &SystemClock();
  auto heartbeat = std::make_unique<HeartbeatLoop>(std::move(hb));

  auto rotation = std::make_unique<RotationService>(
      *rotator, config_source,
      [&]() -> Result<std::uint32_t> { return RotateCertificate(*renewer, *identity); }, *log);
  DaemonControl control(config, publisher, token->token(), token->secrets(), health, *rotation,
                        *log);
  std::unique_ptr<sd::BusService> bus;
  {
    auto started = sd::BusService::Start(*events, control, {kAgentVersion, sd::kAdminGroup});
    if (started.ok()) {
      bus = std::move(started).value();
      publisher.SetBus(bus.get());
    } else if (started.status().code() == Code::kUnavailable) {
      log->Log(Severity::kWarning, event::kAgentLifecycle,
               "no system bus: the agent runs without its D-Bus interface (" +
                   started.status().message() + ")");
    } else {
      return started.status().WithContext("D-Bus service");
    }
  }
  events->SetReloadHandler([&control] { return control.Reload(); });

  // Before any job can use a password: settle rotations a crash interrupted (bounded, so that the
  // start stays within TimeoutStartSec; what is left is settled by the rotation service, and a
  // job's login falls back to a staged password meanwhile).
  notifier.SetStatus("settling interrupted secret rotations").IgnoreError();
  {
    std::stop_source deadline;
    std::jthread timer([&deadline](std::stop_token cancel) {
      std::mutex m;
      std::condition_variable_any cv;
      std::unique_lock lock(m);
      cv.wait_for(lock, cancel, kStartupRecoveryBudget, [] { return false; });
      deadline.request_stop();
    });
    if (Status s = rotator->RecoverAll(deadline.get_token()); !s.ok()) {
      log->Log(Severity::kWarning, event::kSecretRotation,
               "an interrupted secret rotation is not settled yet: " + s.message());
    }
  }
  CW_RETURN_IF_ERROR(loop->Start());
  heartbeat->Start();
  rotation->Start();
  publisher.Publish();
  log->Log(Severity::kNotice, event::kAgentLifecycle,
           "cakewalk-agent " + std::string(kAgentVersion) + " running as " + agent_id,
           {{"AGENT_ID", agent_id}});
  notifier.Ready(StatusLine(publisher.Snapshot())).IgnoreError();

  const sd::LoopExit exit = events->Run();

  if (exit.reason != sd::LoopExit::Reason::kSignal) notifier.Stopping("stopping").IgnoreError();
  log->Log(Severity::kNotice, event::kAgentLifecycle,
           "stopping (" + std::string(sd::ReasonName(exit.reason)) + ")");
  heartbeat->Stop();
  loop->Shutdown(config.Get()->jobs.shutdown_grace);
  rotation->Stop();  // before the bus (its answers go there) and the Jira connections
  publisher.SetBus(nullptr);
  bus.reset();
  publisher.SetLoop(nullptr);
  heartbeat.reset();
  loop.reset();
  rotation.reset();
  rotator.reset();
  jira.reset();  // after the workers that used it, before the token its credentials read
  events.reset();
  renewer.reset();
  link.reset();  // its transports hold token keys: before the token goes
  identity.reset();
  journal.reset();
  token.reset();
  log->Log(Severity::kNotice, event::kAgentLifecycle, "stopped");
  (void)io;

  switch (exit.reason) {
    case sd::LoopExit::Reason::kSignal:
      return Status::Ok();
    case sd::LoopExit::Reason::kBusDisconnected:
      return Unavailable("the D-Bus connection was lost; systemd restarts the agent");
    case sd::LoopExit::Reason::kStopRequested:
      return exit.status;
    case sd::LoopExit::Reason::kFailed:
      return exit.status.ok() ? Internal("the main loop failed") : exit.status;
  }
  return Internal("the main loop ended for an unknown reason");
}

}  // namespace cakewalk::agent
