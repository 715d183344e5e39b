#include "agent/renewal.h"

#include <utility>

#include "agent/cp_transport.h"
#include "base/time.h"
#include "hsm/csr.h"
#include "hsm/key_pair.h"

namespace cakewalk::agent {

std::string_view RenewalPointName(RenewalPoint point) noexcept {
  switch (point) {
    case RenewalPoint::kPendingRecorded:
      return "pending-recorded";
    case RenewalPoint::kKeyGenerated:
      return "key-generated";
    case RenewalPoint::kCertificateIssued:
      return "certificate-issued";
    case RenewalPoint::kSwitched:
      return "switched";
    case RenewalPoint::kNewIdentityWorked:
      return "new-identity-worked";
    case RenewalPoint::kOldKeyDestroyed:
      return "old-key-destroyed";
    case RenewalPoint::kFinished:
      return "finished";
  }
  return "unknown";
}

bool RenewalDue(SysTime not_before, SysTime not_after, SysTime now) {
  const auto lifetime = SecondsBetween(not_before, not_after);
  if (lifetime <= std::chrono::seconds::zero()) return true;
  return SecondsBetween(now, not_after) * 3 < lifetime;
}

bool CertificateRenewer::Due() const {
  return RenewalDue(identity_.certificate_not_before(), identity_.certificate_not_after(),
                    identity_.clock().Now());
}

Result<CertificateRenewer::Outcome> CertificateRenewer::MaybeRenew(bool requested_by_server) {
  std::lock_guard lock(mu_);
  const IdentityRecord record = identity_.record();
  if (record.previous) {
    // The server's request (if any) was most likely answered by the switch just confirmed, or is
    // answered by the next renewal after a fallback.
    return ConfirmSwitch();
  }
  if (record.pending) CW_RETURN_IF_ERROR(DropPending());
  if (!requested_by_server && !Due()) return Outcome::kNothingToDo;
  identity_.log().Log(Severity::kNotice, event::kCertificate,
                      requested_by_server
                          ? "renewing the agent certificate: the control plane asked for it"
                          : "renewing the agent certificate: less than a third of its lifetime "
                            "is left (valid until " +
                                FormatRfc3339(identity_.certificate_not_after()) + ")");
  return Renew();
}

Status CertificateRenewer::DropPending() {
  IdentityRecord next = identity_.record();
  if (!next.pending) return Status::Ok();
  Status s = hsm::KeyPair::Destroy(identity_.token(), next.pending->key_label);
  if (!s.ok() && s.code() != Code::kNotFound) {
    return s.WithContext("cannot remove the unfinished renewal key " + next.pending->key_label);
  }
  next.pending.reset();
  return identity_.Commit(std::move(next));
}

Result<CertificateRenewer::Outcome> CertificateRenewer::ConfirmSwitch() {
  const IdentityRecord record = identity_.record();
  if (!record.previous) return Outcome::kConfirmed;
  const std::string old_label = record.previous->key_label;
  CW_ASSIGN_OR_RETURN(std::shared_ptr<ControlPlaneClient> client, clients_());
  auto keys = client->SigningKeys();
  if (!keys.ok() && keys.status().reason() == cp_reason::kIdentityRejected) {
    CW_RETURN_IF_ERROR(FallBack(keys.status()));
    return Outcome::kFellBack;
  }
  if (!keys.ok()) {
    return keys.status().WithContext("the renewed certificate (key " + record.current.key_label +
                                     ") has not made a successful call yet, so the old key " +
                                     old_label + " is kept");
  }
  Step(RenewalPoint::kNewIdentityWorked);
  Status s = hsm::KeyPair::Destroy(identity_.token(), old_label);
  if (!s.ok() && s.code() != Code::kNotFound) {
    return s.WithContext("cannot destroy the replaced identity key " + old_label);
  }
  Step(RenewalPoint::kOldKeyDestroyed);
  IdentityRecord next = identity_.record();
  next.previous.reset();
  CW_RETURN_IF_ERROR(identity_.Commit(std::move(next)));
  Step(RenewalPoint::kFinished);
  identity_.log().Log(Severity::kNotice, event::kCertificate,
                      "the renewed certificate works; destroyed the old identity key " + old_label,
                      {{"KEY_LABEL", old_label}});
  return Outcome::kConfirmed;
}

Status CertificateRenewer::FallBack(const Status& refused) {
  const IdentityRecord record = identity_.record();
  const IdentityCertificate& old = *record.previous;
  const std::string new_label = record.current.key_label;
  const std::string context = "the control plane refused the renewed certificate (key " +
                              new_label + "): " + refused.message();
  const SysTime now = identity_.clock().Now();
  if (now < old.not_before || now >= old.not_after) {
    return refused.WithContext(context + "; the old certificate (key " + old.key_label +
                               ") is no longer valid, so there is nothing to go back to");
  }
  auto found = hsm::KeyPair::Find(identity_.token(), old.key_label);
  if (!found.ok()) {
    return found.status().WithContext(context + "; cannot go back to the old key " + old.key_label);
  }
  // Back to the old identity, the refused key recorded as an unfinished one (so a crash from here
  // on still ends with it removed), then removed.
  IdentityRecord next = record;
  next.current = old;
  next.previous.reset();
  next.pending = PendingKey{new_label, now};
  CW_RETURN_IF_ERROR(
      identity_.Commit(std::move(next), std::shared_ptr<hsm::TokenKey>(std::move(found).value())));
  identity_.log().Log(Severity::kWarning, event::kCertificate,
                      context + "; back to key " + old.key_label + " (valid until " +
                          FormatRfc3339(old.not_after) + "); the renewal starts again when due",
                      {{"KEY_LABEL", old.key_label}});
  return DropPending();
}

Result<CertificateRenewer::Outcome> CertificateRenewer::Renew() {
  hsm::Token& token = identity_.token();
  IdentityRecord record = identity_.record();
  const std::shared_ptr<hsm::TokenKey> old_key = identity_.key();

  // The new label: never one that exists in the token (a key left by someone else).
  std::uint32_t number = record.next_key_number;
  for (;; ++number) {
    auto found = hsm::KeyPair::Find(token, IdentityKeyLabel(number));
    if (!found.ok() && found.status().code() == Code::kNotFound) break;
    if (!found.ok() && found.status().code() != Code::kFailedPrecondition) {
      return found.status().WithContext("certificate renewal");
    }
    if (number > record.next_key_number + 1000) {
      return FailedPrecondition("certificate renewal: no free identity key label");
    }
  }
  const std::string label = IdentityKeyLabel(number);

  record.pending = PendingKey{label, identity_.clock().Now()};
  record.next_key_number = number + 1;
  CW_RETURN_IF_ERROR(identity_.Commit(record));
  Step(RenewalPoint::kPendingRecorded);

  // Before the switch, any failure removes the new key again and leaves k1 in use.
  auto abandon = [&](Status s) -> Status {
    Status dropped = DropPending();
    if (!dropped.ok()) {
      return Status(s.code(), s.message() + " (and: " + dropped.message() + ")", s.reason());
    }
    return s;
  };

  auto generated = hsm::KeyPair::Generate(token, old_key->type(), label);
  if (!generated.ok()) {
    return abandon(generated.status().WithContext("certificate renewal: cannot generate " + label));
  }
  std::shared_ptr<hsm::TokenKey> key(std::move(generated).value());
  Step(RenewalPoint::kKeyGenerated);

  auto csr = hsm::MakeCsrPem(key, "cakewalk-agent");
  if (!csr.ok()) return abandon(csr.status().WithContext("certificate renewal"));
  auto client = clients_();
  if (!client.ok()) return abandon(client.status().WithContext("certificate renewal"));
  auto chain = (*client)->RenewCertificate(*csr);
  client->reset();
  if (!chain.ok()) {
    std::string kind = FailureKind(chain.status());
    return abandon(chain.status().WithContext("certificate renewal failed" +
                                              (kind.empty() ? std::string() : ": " + kind)));
  }
  auto cert = VerifyIssuedCertificate(label, std::move(chain).value(), *key, record.agent_id,
                                      identity_.clock().Now());
  if (!cert.ok()) return abandon(cert.status().WithContext("certificate renewal"));
  Step(RenewalPoint::kCertificateIssued);

  IdentityRecord next = identity_.record();
  next.pending.reset();
  next.previous = next.current;
  next.current = std::move(cert).value();
  const SysTime not_after = next.current.not_after;
  if (Status s = identity_.Commit(std::move(next), key); !s.ok()) {
    key.reset();
    return abandon(s.WithContext("certificate renewal: cannot store the new certificate"));
  }
  Step(RenewalPoint::kSwitched);
  identity_.log().Log(Severity::kNotice, event::kCertificate,
                      "renewed the agent certificate: now using key " + label + ", valid until " +
                          FormatRfc3339(not_after),
                      {{"KEY_LABEL", label}, {"NOT_AFTER", FormatRfc3339(not_after)}});

  auto confirmed = ConfirmSwitch();
  if (!confirmed.ok()) {
    identity_.log().Log(Severity::kWarning, event::kCertificate, confirmed.status().message());
  } else if (*confirmed == Outcome::kFellBack) {
    return Outcome::kFellBack;
  }
  return Outcome::kRenewed;
}

}  // namespace cakewalk::agent
