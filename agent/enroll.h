// `cakewalk-agent enroll --token-file F|- [--force]`: the agent's first contact with the control
// plane (docs/protocol.md §3).
//
//   1. Refuse when already enrolled, unless --force (then say what will be replaced).
//   2. Read the one-time enrollment token from F, or standard input for "-": whitespace-trimmed,
//      at most 4 KiB of visible ASCII. It is sent once (Authorization: Bearer) and never logged,
//      printed, stored or put into an error message.
//   3. Generate the identity key pair in the token, non-extractable: EC P-256 when the token can
//      generate it and sign with ECDSA, else RSA-3072 (PKCS#1 v1.5 or PSS), else refuse. Label
//      cakewalk-tls-<n> (`pkcs11-tool --list-objects` shows it).
//   4. Build a PKCS#10 request signed inside the token, POST /enroll with the host name, the
//      agent version and the token's description.
//   5. Check the answer strictly: the leaf comes first, carries our public key and the agent id
//      as CN, is valid now, and each certificate is issued by the next one.
//   6. Store the identity (identity.h), then — with --force — destroy the replaced keys.
// A failure at any step leaves the previous identity (if any) as it was and destroys the key
// generated in step 3: no orphan keys.
#pragma once

#include <unistd.h>

#include <iosfwd>
#include <optional>
#include <string>

#include "agent/config.h"
#include "agent/identity.h"
#include "agent/token_context.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/secret.h"
#include "base/status.h"

namespace cakewalk::agent {

// Enrollment tokens are at most this long.
inline constexpr std::size_t kMaxEnrollmentTokenBytes = 4096;

struct EnrollOptions {
  std::string token_file;  // a path, or "-" for standard input
  bool force = false;      // replace an existing identity
  std::string hostname;    // empty: the machine's host name
};

// Reads the enrollment token from `token_file`, or from `stdin_fd` when it is "-" (a terminal
// gets a prompt and no echo). The file must not be readable by others (SecretBytes::ReadFile).
Result<SecretBytes> ReadEnrollmentToken(const std::string& token_file, int stdin_fd = STDIN_FILENO);

struct EnrollOutcome {
  std::string agent_id;
  std::string key_label;
  SysTime certificate_not_after;
  std::optional<std::string> replaced_agent_id;  // with --force
};

// The command as the CLI runs it: checks the state directory and any existing identity, reads
// the enrollment token, opens the token (writing audit events to `log`) and enrolls. Progress and
// the outcome go to `out` (a few lines, never a secret).
Status RunEnroll(const Config& config, const EnrollOptions& options, std::ostream& out,
                 LogSink& log);

// Steps 1 and 3-6 with a token already open and the enrollment token already read.
Result<EnrollOutcome> Enroll(const Config& config, TokenContext& token,
                             const SecretBytes& enrollment_token, const EnrollOptions& options,
                             std::ostream& out, LogSink& log, const Clock& clock = SystemClock());

}  // namespace cakewalk::agent
