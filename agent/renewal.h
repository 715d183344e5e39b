// Certificate renewal (docs/protocol.md §4): a new key pair in the token, a new certificate for
// it, a switch of the TLS identity, and only then the end of the old key.
//
// When: less than a third of the current certificate's lifetime (notAfter - notBefore) is left,
// or the control plane's heartbeat answer says "renew_certificate": true. The job loop calls
// MaybeRenew after each heartbeat (and may call it at any time); it is cheap when nothing is due.
//
// State machine. The identity file (identity.h) is the record; every arrow that changes it is
// one atomic write. Entries: C = `current` (in use), P = `previous` (replaced, key kept),
// N = `pending` (key being generated, no certificate).
//
//   steady {C=k1}
//     -- write: N=k2, next_key_number+1 ------------------------------------> [kPendingRecorded]
//   {C=k1, N=k2}
//     -- generate key pair k2 in the token ---------------------------------> [kKeyGenerated]
//     -- CSR signed by k2 in the token; POST /certificate with k1's TLS identity; the chain is
//        verified against k2 (VerifyIssuedCertificate) --------------------> [kCertificateIssued]
//     -- write: C=k2+chain, P=k1, N dropped --------------------------------> [kSwitched]
//   {C=k2, P=k1}      generation() + 1: ControlPlaneLink (cp_transport.h) hands out clients with
//                     the new TLS identity from now on; old clients keep working meanwhile
//     -- a call with k2 succeeds (GET /signing-keys, made by the renewer) --> [kNewIdentityWorked]
//     -- destroy key pair k1 -----------------------------------------------> [kOldKeyDestroyed]
//     -- write: P dropped --------------------------------------------------> [kFinished]
//   steady {C=k2}
//
// A failure (not a crash) before kSwitched destroys k2 and drops N; k1 stays in use. A failed
// confirmation call keeps P and its key; the next MaybeRenew tries the call again before
// anything else, and no new renewal starts while P exists. If the control plane refuses the new
// identity itself (401/403) while k1's certificate is still valid, the agent falls back:
//   {C=k2, P=k1} -- write: C=k1, N=k2, P dropped (switch back) -- destroy k2 -- N dropped
// and the next renewal starts again when due.
//
// A crash between any two steps, followed by a restart (Identity::Open, mode kRecover):
//   {C=k1, N=k2}, k2 absent or present  -> k2 destroyed if present, N dropped: steady {C=k1}
//   {C=k2, P=k1}, both keys present     -> k2 used (the newer certificate, if valid); the next
//                                          MaybeRenew confirms it and destroys k1
//   {C=k2, P=k1}, k1 already destroyed  -> P dropped: steady {C=k2}
// An entry whose key is missing is dropped; if C is unusable (key missing or certificate not
// valid now) while P is usable, they swap. So the identity in use is always the newest valid
// certificate whose key exists, and no key is destroyed before its successor made a call.
#pragma once

#include <functional>
#include <memory>
#include <mutex>

#include "agent/control_plane.h"
#include "agent/identity.h"
#include "base/log.h"
#include "base/status.h"

namespace cakewalk::agent {

// Points of the state machine above, reported to the test hook after each step completed.
enum class RenewalPoint {
  kPendingRecorded,
  kKeyGenerated,
  kCertificateIssued,
  kSwitched,
  kNewIdentityWorked,
  kOldKeyDestroyed,
  kFinished,
};
std::string_view RenewalPointName(RenewalPoint point) noexcept;

// Whether less than a third of [not_before, not_after] is left at `now`.
bool RenewalDue(SysTime not_before, SysTime not_after, SysTime now);

// A client for the identity in use (ControlPlaneLink::Client, typically).
using ClientSource = std::function<Result<std::shared_ptr<ControlPlaneClient>>()>;

class CertificateRenewer {
 public:
  enum class Outcome {
    kNothingToDo,  // not due, nothing pending
    kRenewed,      // a new certificate and key are in use (confirmed, unless the call failed)
    kConfirmed,    // an earlier switch was confirmed; the old key is gone
    kFellBack,     // the control plane refused the new certificate (401/403 with it): the old
                   // one, still valid, is in use again and the new key is gone
  };

  // `identity` (and its token) must outlive the renewer. Events go to identity.log().
  CertificateRenewer(Identity& identity, ClientSource clients)
      : identity_(identity), clients_(std::move(clients)) {}

  // Whether the certificate in use is due for renewal by its lifetime (identity.clock()).
  bool Due() const;

  // Confirms a pending switch if there is one, then renews when due or `requested_by_server`.
  // Thread-safe: concurrent calls run one after the other.
  Result<Outcome> MaybeRenew(bool requested_by_server);

  // Test seam: called after each step of the state machine (a test may exit the process there
  // to simulate a crash).
  void SetStepHook(std::function<void(RenewalPoint)> hook) { hook_ = std::move(hook); }

 private:
  // kConfirmed, or kFellBack when the call with the new identity was refused as an identity.
  Result<Outcome> ConfirmSwitch();
  Status FallBack(const Status& refused);
  Result<Outcome> Renew();
  Status DropPending();
  void Step(RenewalPoint p) {
    if (hook_) hook_(p);
  }

  Identity& identity_;
  ClientSource clients_;
  std::function<void(RenewalPoint)> hook_;
  std::mutex mu_;
};

}  // namespace cakewalk::agent
