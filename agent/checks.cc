#include "agent/checks.h"

#include <optional>
#include <utility>

#include "agent/control_plane.h"
#include "agent/cp_transport.h"
#include "agent/identity.h"
#include "agent/renewal.h"
#include "base/log.h"
#include "base/time.h"

namespace cakewalk::agent {
namespace {

constexpr char kEnrollment[] = "enrollment";
constexpr char kCertificate[] = "agent certificate";
constexpr char kReachable[] = "control plane reachable";
constexpr char kTls[] = "control plane TLS";
constexpr char kAccepted[] = "agent identity accepted";

CheckResult Ok(std::string name, std::string detail) {
  return {std::move(name), CheckResult::kOk, std::move(detail)};
}
CheckResult Warn(std::string name, std::string detail) {
  return {std::move(name), CheckResult::kWarn, std::move(detail)};
}
CheckResult Fail(std::string name, std::string detail) {
  return {std::move(name), CheckResult::kFail, std::move(detail)};
}

std::string Days(std::chrono::seconds d) {
  const auto hours = std::chrono::duration_cast<std::chrono::hours>(d).count();
  if (hours >= 48) return std::to_string(hours / 24) + " days";
  const auto minutes = std::chrono::duration_cast<std::chrono::minutes>(d).count();
  if (minutes >= 120) return std::to_string(hours) + " hours";
  return std::to_string(minutes) + " minutes";
}

CheckResult CertificateCheck(const IdentityCertificate& c, SysTime now) {
  const std::string until = FormatRfc3339(c.not_after);
  if (now >= c.not_after) {
    return Fail(kCertificate, "expired at " + until +
                                  "; the agent cannot renew an expired certificate: enroll "
                                  "again with cakewalk-agent enroll --force --token-file FILE");
  }
  if (now < c.not_before) {
    return Fail(kCertificate,
                "not valid before " + FormatRfc3339(c.not_before) + "; check the local clock");
  }
  const auto left = SecondsBetween(now, c.not_after);
  const std::string detail =
      "key " + c.key_label + ", valid until " + until + " (" + Days(left) + " left)";
  if (RenewalDue(c.not_before, c.not_after, now) || left < kCertificateWarnBefore) {
    return Warn(kCertificate, detail +
                                  "; renewal is due: the running agent renews it automatically, "
                                  "check that it is running and reaches the control plane");
  }
  return Ok(kCertificate, detail);
}

bool ConnectionLevel(const std::string& why) {
  namespace r = http::reason;
  return why == r::kConnectFailed || why == r::kTimeout || why == r::kProxyAuthFailed ||
         why == r::kProxyError || why == r::kBadUrl;
}

bool TlsLevel(const std::string& why) {
  namespace r = http::reason;
  return why == r::kTlsVerifyFailed || why == r::kTlsPinMismatch || why == r::kTlsHandshake;
}

std::string Describe(const Status& s) {
  std::string kind = FailureKind(s);
  return kind.empty() ? s.message() : kind + ": " + s.message();
}

std::string Route(const Config& config) {
  const ControlPlaneConfig& cp = config.control_plane;
  std::string s = cp.url;
  if (cp.proxy) {
    s += " through proxy " + *cp.proxy;
    if (cp.proxy_source != "config") s += " (from " + cp.proxy_source + ")";
    if (!cp.no_proxy.empty()) s += ", no_proxy " + cp.no_proxy;
  }
  return s;
}

std::string TlsSettings(const Config& config) {
  const ControlPlaneConfig& cp = config.control_plane;
  std::string s = cp.ca_file ? "server certificate verified against " + cp.ca_file->string()
                             : "server certificate verified against the system trust store";
  if (!cp.pinned_spki_sha256.empty()) {
    s += ", key matches one of " + std::to_string(cp.pinned_spki_sha256.size()) + " pins";
  }
  return s;
}

}  // namespace

std::string_view CheckOutcomeName(CheckResult::Outcome outcome) noexcept {
  switch (outcome) {
    case CheckResult::kOk:
      return "ok";
    case CheckResult::kWarn:
      return "warn";
    case CheckResult::kFail:
      return "FAIL";
  }
  return "FAIL";
}

std::string FormatCheck(const CheckResult& check) {
  std::string name(CheckOutcomeName(check.outcome));
  while (name.size() < 4) name += ' ';
  std::string line = "[" + name + "] " + check.name + ": " + check.detail;
  for (char& c : line) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return line;
}

std::vector<CheckResult> ControlPlaneChecks(const Config& config, TokenContext* token,
                                            const Clock& clock) {
  std::vector<CheckResult> out;
  const SysTime now = clock.Now();
  NullLogSink quiet;

  // Enrollment and the certificate.
  std::optional<IdentityRecord> record;
  std::unique_ptr<Identity> identity;
  {
    auto read = ReadIdentity(config.state_dir);
    if (!read.ok()) {
      out.push_back(Fail(kEnrollment, read.status().message()));
      out.push_back(Warn(kCertificate, "not checked: the identity file cannot be used"));
    } else if (!read->has_value()) {
      out.push_back(Fail(kEnrollment,
                         "not enrolled: run cakewalk-agent enroll --token-file FILE with a "
                         "one-time enrollment token from the Cakewalk UI"));
      out.push_back(Warn(kCertificate, "not checked: not enrolled"));
    } else {
      record = std::move(**read);
      if (token == nullptr) {
        out.push_back(Warn(kEnrollment, "enrolled as " + record->agent_id + " with key " +
                                            record->current.key_label + " in token '" +
                                            record->token.label +
                                            "' (the key was not checked: the token is not "
                                            "available)"));
        out.push_back(CertificateCheck(record->current, now));
      } else {
        auto opened = Identity::Open(config.state_dir, token->token(), quiet, clock,
                                     Identity::Mode::kReadOnly);
        if (!opened.ok()) {
          out.push_back(Fail(kEnrollment, "enrolled as " + record->agent_id + ", but " +
                                              opened.status().message()));
          out.push_back(CertificateCheck(record->current, now));
        } else {
          identity = std::move(opened).value();
          const IdentityRecord in_use = identity->record();
          std::string detail = "enrolled as " + in_use.agent_id + " since " +
                               FormatRfc3339(in_use.enrolled_at) + ", key " +
                               in_use.current.key_label + " in token '" + in_use.token.label + "'";
          if (in_use.previous) {
            detail +=
                "; a renewal awaits confirmation (old key " + in_use.previous->key_label + " kept)";
          }
          if (in_use.pending)
            detail += "; an unfinished renewal left key " + in_use.pending->key_label;
          if (in_use.control_plane_url != config.control_plane.url) {
            out.push_back(Warn(kEnrollment, detail + "; enrolled with " + in_use.control_plane_url +
                                                " but control_plane.url is now " +
                                                config.control_plane.url));
          } else {
            out.push_back(Ok(kEnrollment, detail));
          }
          out.push_back(CertificateCheck(in_use.current, now));
        }
      }
    }
  }

  // Reachability and TLS, without a client certificate.
  hsm::SecretStore* secrets = token != nullptr ? &token->secrets() : nullptr;
  bool reachable = false;
  {
    auto transport = MakeControlPlaneTransport(config, secrets, nullptr);
    if (!transport.ok()) {
      out.push_back(Fail(kReachable, transport.status().message()));
      out.push_back(Warn(kTls, "not checked: no connection could be set up"));
    } else {
      http::Request probe;
      probe.url = config.control_plane.url + "/signing-keys";
      auto response = (*transport)->Send(probe);
      if (response.ok()) {
        reachable = true;
        out.push_back(Ok(kReachable, "connected to " + Route(config)));
        out.push_back(Ok(kTls, TlsSettings(config)));
      } else {
        const Status failure = response.status();
        const std::string& why = failure.reason();
        if (ConnectionLevel(why)) {
          out.push_back(Fail(kReachable, Describe(failure)));
          out.push_back(Warn(kTls, "not checked: the control plane is not reachable"));
        } else if (TlsLevel(why)) {
          out.push_back(Ok(kReachable, "connected to " + Route(config)));
          out.push_back(Fail(kTls, Describe(failure)));
        } else if (why == http::reason::kClientCertRejected) {
          // The server verified fine and then demanded a client certificate during the handshake.
          reachable = true;
          out.push_back(Ok(kReachable, "connected to " + Route(config)));
          out.push_back(Ok(kTls, TlsSettings(config) +
                                     " (the server requires a client certificate for every "
                                     "connection)"));
        } else {
          out.push_back(Fail(kReachable, Describe(failure)));
          out.push_back(Warn(kTls, "not checked: " + FailureKind(failure)));
        }
      }
    }
  }

  // The identity, with the token key.
  if (!reachable) {
    out.push_back(Warn(kAccepted, "not checked: the control plane is not reachable over TLS"));
  } else if (identity == nullptr) {
    out.push_back(Warn(kAccepted, record ? "not checked: the identity key cannot be used"
                                         : "not checked: not enrolled"));
  } else {
    const ClientIdentity id = identity->client_identity();
    auto client = MakeControlPlaneClient(config, secrets, &id);
    if (!client.ok()) {
      out.push_back(Fail(kAccepted, client.status().message()));
    } else {
      auto keys = (*client)->SigningKeys();
      if (keys.ok()) {
        out.push_back(Ok(kAccepted, "the control plane accepts " + identity->agent_id() + " (key " +
                                        id.key->label() + "); " + std::to_string(keys->size()) +
                                        " job-signing keys published"));
      } else if (keys.status().reason() == cp_reason::kIdentityRejected ||
                 keys.status().reason() == http::reason::kClientCertRejected) {
        out.push_back(Fail(kAccepted, Describe(keys.status()) +
                                          "; if the agent was revoked or deleted in Cakewalk, "
                                          "enroll again: cakewalk-agent enroll --force "
                                          "--token-file FILE"));
      } else {
        out.push_back(Fail(kAccepted, Describe(keys.status())));
      }
    }
  }
  return out;
}

}  // namespace cakewalk::agent
