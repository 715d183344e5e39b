// `secret rotate CONNECTION password` and `secret rotate control-plane certificate`.
//
// Where the rotation runs: when the daemon is running and answers on D-Bus, it rotates
// (RotateSecret): it holds the identity and the Jira sessions, and serialises rotations with its
// jobs. Otherwise this process rotates itself:
//   - the password under the same per-secret lock file the daemon takes (agent/rotation.h), so a
//     daemon that starts meanwhile never interleaves with it;
//   - the certificate only while it holds the agent's own lock (<state_dir>/journal.lock, the lock
//     of `run`): a daemon running without a D-Bus connection still holds it, and the identity
//     file must have one writer. A daemon that starts during the renewal finds the lock taken and
//     exits (systemd starts it again a few seconds later).
#include <ostream>

#include "agent/commands.h"
#include "agent/cp_transport.h"
#include "agent/identity.h"
#include "agent/jira_connection.h"
#include "agent/journal.h"
#include "agent/renewal.h"
#include "agent/rotation.h"
#include "agent/token_context.h"
#include "jira/password_change.h"
#include "systemd/status_client.h"

namespace cakewalk::agent {
namespace {

// How long the command waits for the daemon's answer: a rotation logs in twice (each may wait for
// a fresh TOTP step) and may wait for another rotation first.
constexpr std::chrono::minutes kDaemonRotationTimeout{10};

// Checks what may be rotated, before anything is opened.
Status CheckRotationTarget(const Config& config, const std::string& connection,
                           const std::string& name) {
  if (connection == kControlPlaneConnection) {
    if (name == "certificate") return Status::Ok();
    return InvalidArgument(
        "the control plane's rotatable secret is 'certificate' (secret rotate control-plane "
        "certificate); a proxy password is stored with 'secret set control-plane "
        "proxy-password'");
  }
  const ConnectionConfig* c = config.FindConnection(connection);
  if (c == nullptr) {
    std::string names;
    for (const auto& conn : config.connections) names += (names.empty() ? "" : ", ") + conn.name;
    return NotFound("no connection named '" + connection + "' in " + config.file.string() +
                    (names.empty() ? "" : " (configured: " + names + ")"));
  }
  if (c->flavor == JiraFlavor::kCloud && (name == "password" || name == "api-token")) {
    return jira::CloudPasswordRotationRefusal(connection);
  }
  if (name == "totp") {
    return InvalidArgument("an MFA key is rotated by enrolling the new one: cakewalk-agent mfa " +
                           std::string("enroll ") + connection);
  }
  if (name != "password") {
    return InvalidArgument("'" + name +
                           "' is not rotated by the agent; store a new value with "
                           "'cakewalk-agent secret set " +
                           connection + " " + name + "'");
  }
  if (!c->provisioning || c->provisioning->auth != ProvisioningConfig::Auth::kPassword) {
    return FailedPrecondition("connection '" + connection +
                              "' does not log in to Jira with a password (provisioning.auth is "
                              "not \"password\"), so there is no Jira password to rotate");
  }
  return Status::Ok();
}

// The daemon's answer when it runs and can be asked; nullopt when it does not run (or no bus).
Result<std::optional<std::int64_t>> RotateThroughDaemon(const std::string& connection,
                                                        const std::string& name, CliIo io) {
  auto client = sd::AgentClient::ConnectSystem();
  if (!client.ok()) return std::optional<std::int64_t>();
  auto status = client->GetStatus(std::chrono::seconds(10));
  if (!status.ok()) {
    if (status.status().code() == Code::kUnavailable) return std::optional<std::int64_t>();
    return status.status().WithContext("asking the running agent");
  }
  io.err << "The agent is running: it rotates " << connection << "/" << name << ".\n";
  CW_ASSIGN_OR_RETURN(std::int64_t version,
                      client->RotateSecret(connection, name, kDaemonRotationTimeout));
  return std::optional<std::int64_t>(version);
}

Status RotatePasswordHere(const Config& config, const std::string& connection, CliIo io) {
  CW_ASSIGN_OR_RETURN(auto token, TokenContext::Open(config, CommandLogSink()));
  JiraConnections connections(token->secrets(), config.state_dir);
  auto shared = std::make_shared<const Config>(config);
  SecretRotator rotator({[shared] { return shared; }, &token->secrets(),
                         [&](const ConnectionConfig& c) { return connections.Get(c); },
                         &CommandLogSink(), nullptr});
  CW_ASSIGN_OR_RETURN(RotationOutcome out, rotator.RotatePassword(connection, {}, [&] {
    io.err << "Another rotation of " << connection
           << "/password is running; waiting for it to finish.\n";
  }));
  io.out << "Rotated " << connection << "/password: version " << out.version
         << " is in use (verified by a fresh login); version " << out.previous
         << " is destroyed after " << config.rotation.old_version_grace.count() << " s.\n";
  return Status::Ok();
}

Status RotateCertificateHere(const Config& config, CliIo io) {
  CW_RETURN_IF_ERROR(EnsureStateDir(config.state_dir));
  const std::filesystem::path agent_lock = config.state_dir / JobJournal::kLockFileName;
  CW_ASSIGN_OR_RETURN(std::optional<FileLock> lock, FileLock::TryAcquire(agent_lock));
  if (!lock) {
    return FailedPrecondition(
        "the agent is running (it holds " + agent_lock.string() +
        ") but cannot be reached over D-Bus, and the certificate belongs to it; renew through "
        "D-Bus when the bus is back (or stop the agent, then run this again)");
  }
  CW_ASSIGN_OR_RETURN(auto token, TokenContext::Open(config, CommandLogSink()));
  CW_ASSIGN_OR_RETURN(std::unique_ptr<Identity> identity,
                      Identity::Open(config.state_dir, token->token(), CommandLogSink()));
  ControlPlaneLink link(config, token->secrets(), *identity);
  CertificateRenewer renewer(*identity, [&link] { return link.Client(); });
  CW_ASSIGN_OR_RETURN(std::uint32_t number, RotateCertificate(renewer, *identity));
  io.out << "Renewed the agent certificate: key " << IdentityKeyLabel(number)
         << " is in use, valid until " << FormatRfc3339(identity->certificate_not_after()) << ".\n";
  return Status::Ok();
}

}  // namespace

Status CommandSecretRotate(const Config& config, const std::string& connection,
                           const std::string& name, CliIo io) {
  CW_RETURN_IF_ERROR(CheckRotationTarget(config, connection, name));
  CW_ASSIGN_OR_RETURN(std::optional<std::int64_t> by_daemon,
                      RotateThroughDaemon(connection, name, io));
  if (by_daemon) {
    if (name == "certificate") {
      io.out << "Renewed the agent certificate: key "
             << IdentityKeyLabel(static_cast<std::uint32_t>(*by_daemon)) << " is in use.\n";
    } else {
      io.out << "Rotated " << connection << "/" << name << ": version " << *by_daemon
             << " is in use (verified by a fresh login).\n";
    }
    return Status::Ok();
  }
  if (name == "certificate") return RotateCertificateHere(config, io);
  return RotatePasswordHere(config, connection, io);
}

}  // namespace cakewalk::agent
