// What the agent knows about itself after enrollment, and where it keeps it.
//
// Location: <state_dir>/identity.json (state_dir from the configuration, default
// /var/lib/cakewalk-agent). The state directory must be a directory owned by the agent's user
// with no group or other permissions (0700); EnsureStateDir creates it so, and refuses anything
// else with the command that fixes it. The file is mode 0600 and written atomically (a temporary
// file in the same folder, fsync, rename, fsync of the folder), so a crash leaves either the old
// or the new version, never a mix.
//
// The file never holds a secret: the private keys stay in the token (non-extractable key pairs
// labelled cakewalk-tls-<n>, see docs/token-layout.md), and the certificate chains kept here
// are public. Format (version 1), loaded strictly (unknown or missing keys are errors):
//
//   {
//     "format": 1,
//     "agent_id": "agt_000001",
//     "control_plane_url": "https://agents.cakewalk.example/agent/v1",  // enrolled with
//     "enrolled_at": "2026-12-04T17:29:08Z",
//     "poll_wait_seconds": 25,
//     "token": {"manufacturer": "...", "model": "...", "serial": "...", "label": "..."},
//     "job_signing_keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "jsk_1", "x": "..."}],
//     "next_key_number": 2,           // the next key is labelled cakewalk-tls-2
//     "current":  {"key_label": "cakewalk-tls-1", "certificate_chain": "<PEM, leaf first>"},
//     "previous": {"key_label": ..., "certificate_chain": ...},  // optional, see renewal.h
//     "pending":  {"key_label": ..., "created_at": ...}          // optional, see renewal.h
//   }
//
// `current` is the identity in use. `previous` is the identity a renewal replaced; its key is
// kept until the new one has made a successful call. `pending` names a key a renewal is
// generating and has no certificate yet. renewal.h describes the state machine; Identity::Open
// repairs what a crash left behind.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/control_plane.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/status.h"
#include "base/time.h"
#include "hsm/token.h"
#include "hsm/token_key.h"

namespace cakewalk::agent {

inline constexpr char kIdentityFileName[] = "identity.json";
// Identity key pairs in the token are labelled <prefix><n>, n = 1, 2, ...
inline constexpr char kIdentityKeyLabelPrefix[] = "cakewalk-tls-";

std::string IdentityKeyLabel(std::uint32_t number);

// Creates `dir` (mode 0700) when it is missing, its parent must exist. Refuses a path that is
// not a directory, a directory owned by another user (run the command as that user), and one
// that grants any permission to group or others (the message says which chmod to run).
Status EnsureStateDir(const std::filesystem::path& dir);

// Replaces `path` atomically with `content` (mode `mode`): temporary file in the same folder,
// fsync, rename over `path`, fsync of the folder. The temporary file is removed on failure.
Status WriteFileAtomically(const std::filesystem::path& path, std::string_view content,
                           mode_t mode);

struct IdentityCertificate {
  std::string key_label;
  std::string chain_pem;  // leaf first
  // From the leaf certificate (not stored separately).
  SysTime not_before;
  SysTime not_after;
};

struct PendingKey {
  std::string key_label;
  SysTime created_at;
};

struct IdentityRecord {
  std::string agent_id;
  std::string control_plane_url;
  SysTime enrolled_at;
  int poll_wait_seconds = 25;
  TokenDescription token;
  std::vector<SigningKey> signing_keys;
  std::uint32_t next_key_number = 1;
  IdentityCertificate current;
  std::optional<IdentityCertificate> previous;
  std::optional<PendingKey> pending;
};

// A certificate entry for `chain_pem` (dates read from its leaf).
Result<IdentityCertificate> MakeIdentityCertificate(std::string key_label, std::string chain_pem);

// Checks a chain the control plane issued for `key`: it parses (leaf first), the leaf carries
// `key`'s public key and `agent_id` as its common name, is valid at `now` (a notBefore up to
// 5 minutes ahead is tolerated as clock skew), and every certificate is issued and signed by the
// next one. Errors say what is wrong, as kFailedPrecondition.
Result<IdentityCertificate> VerifyIssuedCertificate(std::string key_label, std::string chain_pem,
                                                    const hsm::TokenKey& key,
                                                    std::string_view agent_id, SysTime now);

std::string SerializeIdentity(const IdentityRecord& record);
// `what` names the document in errors ("identity file /var/lib/...").
Result<IdentityRecord> ParseIdentity(std::string_view text, std::string_view what);

std::filesystem::path IdentityFile(const std::filesystem::path& state_dir);
// The stored record; nullopt when there is no identity file (not enrolled). Checks the state
// directory first (EnsureStateDir) and refuses an identity file others can read or write.
Result<std::optional<IdentityRecord>> ReadIdentity(const std::filesystem::path& state_dir);
// As ReadIdentity, but "not enrolled" is an error (kFailedPrecondition, reason "not_enrolled")
// telling the operator to run `cakewalk-agent enroll --token-file ...`.
Result<IdentityRecord> LoadIdentity(const std::filesystem::path& state_dir);
Status WriteIdentity(const std::filesystem::path& state_dir, const IdentityRecord& record);

inline constexpr char kNotEnrolledReason[] = "not_enrolled";

// The mutual-TLS identity: the token key and its certificate chain.
struct ClientIdentity {
  std::shared_ptr<hsm::TokenKey> key;
  std::string chain_pem;  // leaf first
  SysTime not_after;
  std::uint64_t generation = 0;  // Identity::generation() this snapshot belongs to
};

// The enrolled identity in use, shared by the job loop, the heartbeat and renewal. Thread-safe:
// every accessor returns a snapshot taken under the object's mutex.
class Identity {
 public:
  enum class Mode {
    // Repair what an interrupted renewal left (see renewal.h) and store the result.
    kRecover,
    // Choose the identity the same way but change nothing, neither file nor token (doctor).
    kReadOnly,
  };

  // Loads <state_dir>/identity.json and opens the current key in `token`. On the way (kRecover):
  // a pending key without certificate is destroyed; an entry whose key is missing from the token
  // is dropped; when `current` is unusable (key missing, certificate not valid now) and
  // `previous` is usable, they swap. Fails when no entry has its key in the token (the message
  // says to enroll again with --force). `token` and `log` must outlive the Identity.
  [[nodiscard]] static Result<std::unique_ptr<Identity>> Open(
      const std::filesystem::path& state_dir, hsm::Token& token, LogSink& log,
      const Clock& clock = SystemClock(), Mode mode = Mode::kRecover);

  std::string agent_id() const;
  int poll_wait_seconds() const;
  std::vector<SigningKey> signing_keys() const;
  // Replaces the job-signing keys (after GET /signing-keys) and stores them.
  Status UpdateSigningKeys(std::vector<SigningKey> keys);
  SysTime certificate_not_before() const;
  SysTime certificate_not_after() const;
  // The key and chain for mutual TLS (see cp_transport.h).
  ClientIdentity client_identity() const;
  std::shared_ptr<hsm::TokenKey> key() const;
  // Increases by one each time the TLS identity changes (renewal); a transport built for an
  // older generation still works until the old key is destroyed, but should be rebuilt.
  std::uint64_t generation() const;
  // A copy of everything above, as stored.
  IdentityRecord record() const;

  const std::filesystem::path& state_dir() const { return state_dir_; }
  hsm::Token& token() const { return token_; }
  LogSink& log() const { return log_; }
  const Clock& clock() const { return clock_; }

  // Stores `next`, then adopts it. When next.current.key_label differs from the current one,
  // `new_key` must be that key pair: the TLS identity switches and generation() increases.
  // Nothing changes in memory when storing fails. (Used by renewal.)
  Status Commit(IdentityRecord next, std::shared_ptr<hsm::TokenKey> new_key = nullptr);

 private:
  Identity(std::filesystem::path state_dir, hsm::Token& token, LogSink& log, const Clock& clock)
      : state_dir_(std::move(state_dir)), token_(token), log_(log), clock_(clock) {}

  const std::filesystem::path state_dir_;
  hsm::Token& token_;
  LogSink& log_;
  const Clock& clock_;

  mutable std::mutex mu_;
  IdentityRecord record_;
  std::shared_ptr<hsm::TokenKey> key_;
  std::uint64_t generation_ = 1;
};

}  // namespace cakewalk::agent
