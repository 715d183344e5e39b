#include "agent/enroll.h"

#include <unistd.h>

#include <filesystem>
#include <optional>
#include <ostream>
#include <utility>

#include "agent/control_plane.h"
#include "agent/cp_transport.h"
#include "agent/journal.h"
#include "agent/rotation.h"
#include "agent/version.h"
#include "hsm/csr.h"
#include "hsm/key_pair.h"

namespace cakewalk::agent {
namespace {

std::string KeyTypeName(hsm::KeyType type) {
  return type == hsm::KeyType::kEcP256 ? "EC P-256" : "RSA-3072";
}

Result<hsm::KeyType> ChooseKeyType(const hsm::Token& token) {
  const hsm::Capabilities& caps = token.capabilities();
  using M = hsm::Mechanism;
  if (caps.Has(M::kEcKeyPairGen) && caps.Has(M::kEcdsa)) return hsm::KeyType::kEcP256;
  if (caps.Has(M::kRsaKeyPairGen) && (caps.Has(M::kRsaPkcs) || caps.Has(M::kRsaPkcsPss))) {
    return hsm::KeyType::kRsa3072;
  }
  return FailedPrecondition("token '" + token.info().label +
                            "' can generate neither EC P-256 keys with ECDSA signatures nor "
                            "RSA-3072 keys with PKCS#1 or PSS signatures, so it cannot hold the "
                            "agent's identity key (" +
                            caps.Summary() + ")");
}

// The first free identity label from `start` on (a label already in the token is skipped, so a
// key left over from a lost state directory is never reused or overwritten).
Result<std::uint32_t> FreeKeyNumber(hsm::Token& token, std::uint32_t start) {
  for (std::uint32_t n = std::max<std::uint32_t>(start, 1); n < start + 1000; ++n) {
    auto found = hsm::KeyPair::Find(token, IdentityKeyLabel(n));
    if (!found.ok() && found.status().code() == Code::kNotFound) return n;
    if (!found.ok() && found.status().code() != Code::kFailedPrecondition) {
      return found.status().WithContext("cannot look for identity keys in the token");
    }
  }
  return FailedPrecondition(
      "the token holds a thousand identity keys; remove the unused "
      "cakewalk-tls-* keys with pkcs11-tool");
}

std::string MachineHostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

std::string Describe(const IdentityRecord& r) {
  return "agent " + r.agent_id + ", key " + r.current.key_label + " in token '" + r.token.label +
         "', certificate valid until " + FormatRfc3339(r.current.not_after);
}

Status AlreadyEnrolled(const IdentityRecord& r) {
  return Status(Code::kFailedPrecondition,
                "the agent is already enrolled (" + Describe(r) +
                    "); to replace this identity run: cakewalk-agent enroll --force --token-file "
                    "FILE",
                "already_enrolled");
}

// The message for a failed POST /enroll: what it means for the operator, then the details.
Status EnrollFailure(const Status& s) {
  const std::string& why = s.reason();
  std::string head;
  if (why == cp_reason::kIdentityRejected && s.code() == Code::kUnauthenticated) {
    head =
        "the enrollment token was refused (unknown or already used): create a new one in the "
        "Cakewalk UI";
  } else if (why == cp_reason::kIdentityRejected) {
    head = "the control plane refused the enrollment";
  } else if (why == cp_reason::kConflict) {
    head =
        "the control plane says the new key is already enrolled (409); run the enrollment again "
        "to use a fresh key";
  } else if (why == cp_reason::kRequestRejected) {
    head =
        "the control plane refused the enrollment request (the token's key type may not be "
        "accepted, or this agent version is not supported)";
  } else if (why == cp_reason::kRateLimited) {
    head = "the control plane is busy";
    if (s.retry_after()) {
      head += "; try again in " +
              std::to_string(
                  std::chrono::duration_cast<std::chrono::seconds>(*s.retry_after()).count()) +
              " s";
    } else {
      head += "; try again in a minute";
    }
  } else if (why == cp_reason::kServerError) {
    head = "the control plane failed to answer properly; try again later";
  } else {
    head = FailureKind(s);
  }
  std::string message = "enrollment failed";
  if (!head.empty()) message += ": " + head;
  message += " (" + s.message() + ")";
  return Status(s.code(), std::move(message), s.reason());
}

}  // namespace

Result<SecretBytes> ReadEnrollmentToken(const std::string& token_file, int stdin_fd) {
  if (token_file.empty()) {
    return InvalidArgument("--token-file needs a file name, or - for standard input");
  }
  Result<SecretBytes> token = Status(Code::kInternal, "unread");
  if (token_file == "-") {
    token = stdin_fd == STDIN_FILENO
                ? SecretBytes::ReadStdin("Enrollment token: ", kMaxEnrollmentTokenBytes,
                                         SecretBytes::Trim::kWhitespace)
                : SecretBytes::ReadFd(stdin_fd, "standard input", kMaxEnrollmentTokenBytes,
                                      SecretBytes::Trim::kWhitespace);
  } else {
    token =
        SecretBytes::ReadFile(token_file, kMaxEnrollmentTokenBytes, SecretBytes::Trim::kWhitespace);
  }
  if (!token.ok()) return token.status().WithContext("cannot read the enrollment token");
  const std::string source = token_file == "-" ? "standard input" : token_file;
  if (token->empty()) {
    return InvalidArgument("the enrollment token from " + source +
                           " is empty; paste the token shown in the Cakewalk UI");
  }
  for (std::uint8_t c : token->Reveal(SecretAccess::Grant())) {
    if (c <= 0x20 || c >= 0x7f) {
      return InvalidArgument("the enrollment token from " + source +
                             " contains spaces, control characters or non-ASCII bytes; it must "
                             "be exactly the token shown in the Cakewalk UI");
    }
  }
  return token;
}

namespace {

// A running agent holds the journal's lock and works with the identity that --force replaces (its
// key would be destroyed under it): refused. Otherwise the lock, taken for the caller to hold.
Result<std::optional<FileLock>> RefuseWhileRunning(const Config& config,
                                                   const EnrollOptions& options) {
  if (!options.force || !std::filesystem::is_directory(config.state_dir)) {
    return std::optional<FileLock>();
  }
  const std::filesystem::path lock_path = config.state_dir / JobJournal::kLockFileName;
  CW_ASSIGN_OR_RETURN(std::optional<FileLock> lock, FileLock::TryAcquire(lock_path));
  if (!lock) {
    return FailedPrecondition("the agent is running (it holds " + lock_path.string() +
                              ") and uses the identity that --force would replace; stop it first "
                              "(systemctl stop cakewalk-agent), enroll, then start it again");
  }
  return lock;
}

}  // namespace

Status RunEnroll(const Config& config, const EnrollOptions& options, std::ostream& out,
                 LogSink& log) {
  // Refuse early, before anything is read or opened (Enroll checks again).
  auto existing = ReadIdentity(config.state_dir);
  if (!existing.ok()) {
    if (!options.force || existing.status().code() == Code::kPermissionDenied) {
      return existing.status();
    }
  } else if (existing->has_value() && !options.force) {
    return AlreadyEnrolled(**existing);
  }
  // Held until the enrollment is done, so that the agent cannot start meanwhile either.
  CW_ASSIGN_OR_RETURN(std::optional<FileLock> agent_lock, RefuseWhileRunning(config, options));
  CW_ASSIGN_OR_RETURN(SecretBytes enrollment_token, ReadEnrollmentToken(options.token_file));
  CW_ASSIGN_OR_RETURN(std::unique_ptr<TokenContext> token, TokenContext::Open(config, log));
  auto outcome = Enroll(config, *token, enrollment_token, options, out, log);
  enrollment_token.Wipe();
  return outcome.status();
}

Result<EnrollOutcome> Enroll(const Config& config, TokenContext& token,
                             const SecretBytes& enrollment_token, const EnrollOptions& options,
                             std::ostream& out, LogSink& log, const Clock& clock) {
  hsm::Token& tok = token.token();
  const hsm::TokenInfo& info = tok.info();

  // 1. An existing identity.
  std::optional<IdentityRecord> old;
  {
    auto existing = ReadIdentity(config.state_dir);
    if (!existing.ok()) {
      if (!options.force || existing.status().code() == Code::kPermissionDenied) {
        return existing.status();
      }
      out << "The existing identity file cannot be read and will be replaced: "
          << existing.status().message() << "\n";
    } else {
      old = std::move(*existing);
    }
  }
  if (old && !options.force) return AlreadyEnrolled(*old);
  const bool same_token = old && old->token.serial == info.serial && old->token.label == info.label;
  if (old) {
    out << "Replacing the enrolled identity: " << Describe(*old) << "\n";
    if (old->previous) out << "  and the previous key " << old->previous->key_label << "\n";
    if (old->pending) out << "  and the unfinished renewal key " << old->pending->key_label << "\n";
  }

  // 3. The key pair.
  CW_ASSIGN_OR_RETURN(hsm::KeyType type, ChooseKeyType(tok));
  CW_ASSIGN_OR_RETURN(std::uint32_t number,
                      FreeKeyNumber(tok, old && same_token ? old->next_key_number : 1));
  const std::string label = IdentityKeyLabel(number);
  auto generated = hsm::KeyPair::Generate(tok, type, label);
  if (!generated.ok()) {
    return generated.status().WithContext("cannot generate the " + KeyTypeName(type) +
                                          " identity key in token '" + info.label + "'");
  }
  std::shared_ptr<hsm::TokenKey> key(std::move(generated).value());
  // From here on every failure removes the new key.
  auto fail = [&](Status s) -> Status {
    // Drop our references first: the provider registry may still hold the key until the
    // transport and its EVP_PKEY are gone.
    key.reset();
    Status destroyed = hsm::KeyPair::Destroy(tok, label);
    if (!destroyed.ok()) {
      return Status(s.code(),
                    s.message() + "; the new key " + label +
                        " could not be removed from the token (" + destroyed.message() +
                        "), remove it with pkcs11-tool --delete-object --type privkey --label " +
                        label,
                    s.reason());
    }
    return s;
  };

  // 4. Request and enrollment.
  auto csr = hsm::MakeCsrPem(key, "cakewalk-agent");
  if (!csr.ok()) return fail(csr.status().WithContext("cannot build the certificate request"));
  EnrollResponse response;
  {
    auto client = MakeControlPlaneClient(config, &token.secrets(), nullptr);
    if (!client.ok()) return fail(client.status().WithContext("enrollment failed"));
    EnrollRequest request;
    request.csr_pem = *csr;
    request.hostname = options.hostname.empty() ? MachineHostname() : options.hostname;
    request.agent_version = kAgentVersion;
    request.token = TokenDescription{info.manufacturer, info.model, info.serial, info.label};
    auto answer = (*client)->Enroll(enrollment_token, request);
    if (!answer.ok()) return fail(EnrollFailure(answer.status()));
    response = std::move(answer).value();
  }

  // 5. The answer.
  auto valid_id = [](const std::string& id) {
    return !id.empty() && id.size() <= 128 &&
           id.find_first_not_of(
               "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") ==
               std::string::npos;
  };
  if (!valid_id(response.agent_id)) {
    return fail(FailedPrecondition(
        "enrollment failed: the control plane returned an unusable agent id (expected 1-128 "
        "letters, digits, '.', '_' or '-')"));
  }
  auto cert = VerifyIssuedCertificate(label, response.certificate_chain_pem, *key,
                                      response.agent_id, clock.Now());
  if (!cert.ok()) {
    return fail(
        cert.status().WithContext("enrollment as " + response.agent_id + " cannot be used"));
  }

  // 6. Store, then retire what was replaced.
  IdentityRecord record;
  record.agent_id = response.agent_id;
  record.control_plane_url = config.control_plane.url;
  record.enrolled_at = clock.Now();
  record.poll_wait_seconds = response.poll_wait_seconds;
  record.token = TokenDescription{info.manufacturer, info.model, info.serial, info.label};
  record.signing_keys = std::move(response.signing_keys);
  record.next_key_number = number + 1;
  record.current = std::move(cert).value();
  if (Status s = WriteIdentity(config.state_dir, record); !s.ok()) {
    return fail(s.WithContext("the control plane enrolled the agent as " + record.agent_id +
                              " but the identity could not be stored; create a new enrollment "
                              "token and enroll again"));
  }
  log.Log(Severity::kNotice, event::kAgentLifecycle,
          "enrolled as " + record.agent_id + " with key " + label,
          {{"AGENT_ID", record.agent_id}, {"KEY_LABEL", label}});

  EnrollOutcome outcome;
  outcome.agent_id = record.agent_id;
  outcome.key_label = label;
  outcome.certificate_not_after = record.current.not_after;
  out << "Enrolled as " << record.agent_id << " with the " << KeyTypeName(type) << " key " << label
      << " in token '" << info.label << "'; certificate valid until "
      << FormatRfc3339(record.current.not_after) << "\n";

  if (old) {
    outcome.replaced_agent_id = old->agent_id;
    std::vector<std::string> labels = {old->current.key_label};
    if (old->previous) labels.push_back(old->previous->key_label);
    if (old->pending) labels.push_back(old->pending->key_label);
    for (const std::string& l : labels) {
      if (!same_token) {
        out << "The replaced key " << l << " is in token '" << old->token.label
            << "', which is not the configured token; remove it there with pkcs11-tool\n";
        continue;
      }
      Status s = hsm::KeyPair::Destroy(tok, l);
      if (s.ok()) {
        out << "Destroyed the replaced key " << l << "\n";
      } else if (s.code() != Code::kNotFound) {
        out << "Could not destroy the replaced key " << l << " (" << s.message()
            << "); remove it with pkcs11-tool --delete-object --type privkey --label " << l << "\n";
      }
    }
  }
  return outcome;
}

}  // namespace cakewalk::agent
