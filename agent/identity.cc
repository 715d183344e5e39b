#include "agent/identity.h"

#include <fcntl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "base/encoding.h"
#include "base/json.h"
#include "hsm/key_pair.h"
#include "hsm/x509.h"

namespace cakewalk::agent {
namespace {

constexpr std::size_t kMaxIdentityBytes = 1024 * 1024;

std::string Errno(int err) { return std::strerror(err); }

std::string OctalMode(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

std::string UserName(uid_t uid) {
  struct passwd pw {};
  struct passwd* found = nullptr;
  char buf[1024];
  if (getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found != nullptr) {
    return found->pw_name;
  }
  return "uid " + std::to_string(uid);
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

Json::Value TokenJson(const TokenDescription& t) {
  Json::Value v(Json::objectValue);
  v["manufacturer"] = t.manufacturer;
  v["model"] = t.model;
  v["serial"] = t.serial;
  v["label"] = t.label;
  return v;
}

Json::Value JwkJson(const SigningKey& k) {
  Json::Value v(Json::objectValue);
  v["kty"] = "OKP";
  v["crv"] = "Ed25519";
  v["kid"] = k.kid;
  v["x"] = Base64UrlEncode(k.public_key);
  return v;
}

Json::Value CertificateJson(const IdentityCertificate& c) {
  Json::Value v(Json::objectValue);
  v["key_label"] = c.key_label;
  v["certificate_chain"] = c.chain_pem;
  return v;
}

Status CheckKeyLabel(JsonFields& f, std::string_view key, const std::string& label) {
  if (label.rfind(kIdentityKeyLabelPrefix, 0) != 0 ||
      label.size() == std::string_view(kIdentityKeyLabelPrefix).size() ||
      label.find_first_not_of("0123456789", std::string_view(kIdentityKeyLabelPrefix).size()) !=
          std::string::npos) {
    f.Fail(key, "'" + label + "' is not an identity key label (" + kIdentityKeyLabelPrefix +
                    "<number>)");
  }
  return Status::Ok();
}

std::optional<IdentityCertificate> ParseCertificateEntry(JsonFields& parent, std::string_view key,
                                                         JsonFields::Presence presence) {
  const Json::Value* v = parent.Object(key, presence);
  if (v == nullptr || !parent.ok()) return std::nullopt;
  JsonFields f(*v, parent.ChildPath(key));
  std::string label = f.String("key_label", JsonFields::kRequired);
  std::string chain = f.String("certificate_chain", JsonFields::kRequired);
  if (f.ok()) CheckKeyLabel(f, "key_label", label).IgnoreError();
  std::optional<IdentityCertificate> out;
  if (f.ok()) {
    auto cert = MakeIdentityCertificate(std::move(label), std::move(chain));
    if (!cert.ok()) {
      f.Fail("certificate_chain", cert.status().message());
    } else {
      out = std::move(cert).value();
    }
  }
  parent.Merge(f.Finish());
  return parent.ok() ? out : std::nullopt;
}

SysTime TimeField(JsonFields& f, std::string_view key) {
  const std::string text = f.String(key, JsonFields::kRequired);
  if (!f.ok()) return {};
  auto t = ParseRfc3339(text);
  if (!t.ok()) {
    f.Fail(key, "is not an RFC 3339 time");
    return {};
  }
  return *t;
}

bool ValidAt(const IdentityCertificate& c, SysTime now) {
  return c.not_before <= now && now < c.not_after;
}

}  // namespace

std::string IdentityKeyLabel(std::uint32_t number) {
  return kIdentityKeyLabelPrefix + std::to_string(number);
}

Status EnsureStateDir(const std::filesystem::path& dir) {
  const std::string name = dir.string();
  struct stat st {};
  if (::stat(name.c_str(), &st) != 0) {
    const int err = errno;
    if (err != ENOENT) {
      return PermissionDenied("cannot use the state directory " + name + ": " + Errno(err));
    }
    if (::mkdir(name.c_str(), 0700) != 0 && errno != EEXIST) {
      return PermissionDenied("cannot create the state directory " + name + ": " + Errno(errno) +
                              "; create it with: mkdir -m 0700 " + name +
                              " (or set state_dir in the configuration)");
    }
    if (::stat(name.c_str(), &st) != 0) {
      return PermissionDenied("cannot use the state directory " + name + ": " + Errno(errno));
    }
  }
  if (!S_ISDIR(st.st_mode)) {
    return FailedPrecondition("the state directory " + name +
                              " is not a directory; remove it or set state_dir");
  }
  if (st.st_uid != ::geteuid()) {
    return PermissionDenied("the state directory " + name + " belongs to " + UserName(st.st_uid) +
                            ", not to the user running this command (" + UserName(::geteuid()) +
                            "); run the command as " + UserName(st.st_uid) + " (e.g. sudo -u " +
                            UserName(st.st_uid) + " cakewalk-agent ...)");
  }
  if ((st.st_mode & 077) != 0) {
    return PermissionDenied("the state directory " + name + " can be used by other users (mode " +
                            OctalMode(st.st_mode) + "); run: chmod 0700 " + name);
  }
  return Status::Ok();
}

Status WriteFileAtomically(const std::filesystem::path& path, std::string_view content,
                           mode_t mode) {
  const std::filesystem::path dir = path.parent_path().empty() ? "." : path.parent_path();
  std::string tmp = (dir / ("." + path.filename().string() + ".tmp-XXXXXX")).string();
  Fd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (fd.get() < 0) {
    return PermissionDenied("cannot create a temporary file in " + dir.string() + ": " +
                            Errno(errno));
  }
  auto fail = [&](std::string what) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return PermissionDenied("cannot write " + path.string() + ": " + what + ": " + Errno(err));
  };
  if (::fchmod(fd.get(), mode) != 0) return fail("fchmod");
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("write");
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return fail("fsync");
  if (::close(fd.release()) != 0) return fail("close");
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail("rename");
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() < 0 || ::fsync(dfd.get()) != 0) {
    return PermissionDenied("cannot flush the folder " + dir.string() + " after writing " +
                            path.string() + ": " + Errno(errno));
  }
  return Status::Ok();
}

Result<IdentityCertificate> MakeIdentityCertificate(std::string key_label, std::string chain_pem) {
  CW_ASSIGN_OR_RETURN(std::vector<hsm::X509Ptr> chain, hsm::ParsePemChain(chain_pem));
  IdentityCertificate c;
  CW_ASSIGN_OR_RETURN(c.not_before, hsm::CertificateNotBefore(chain.front().get()));
  CW_ASSIGN_OR_RETURN(c.not_after, hsm::CertificateNotAfter(chain.front().get()));
  c.key_label = std::move(key_label);
  c.chain_pem = std::move(chain_pem);
  return c;
}

Result<IdentityCertificate> VerifyIssuedCertificate(std::string key_label, std::string chain_pem,
                                                    const hsm::TokenKey& key,
                                                    std::string_view agent_id, SysTime now) {
  const std::string what = "the certificate chain from the control plane";
  auto chain = hsm::ParsePemChain(chain_pem);
  if (!chain.ok()) {
    return FailedPrecondition(what +
                              " is not a PEM certificate chain: " + chain.status().message());
  }
  X509* leaf = chain->front().get();
  if (Status s = hsm::CheckCertificateKey(leaf, key.public_key_der()); !s.ok()) {
    return FailedPrecondition(what + " does not start with a certificate for the agent's key " +
                              key.label() + ": " + s.message());
  }
  std::string cn;
  X509_NAME* subject = X509_get_subject_name(leaf);
  const int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (idx >= 0) {
    const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
    cn.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)),
              static_cast<std::size_t>(ASN1_STRING_length(data)));
  }
  if (cn != agent_id) {
    return FailedPrecondition(what + " names " + hsm::CertificateSubject(leaf) +
                              ", not the agent id " + std::string(agent_id));
  }
  CW_ASSIGN_OR_RETURN(IdentityCertificate cert,
                      MakeIdentityCertificate(std::move(key_label), std::move(chain_pem)));
  if (cert.not_before > now + std::chrono::minutes(5)) {
    return FailedPrecondition(what + " is valid only from " + FormatRfc3339(cert.not_before) +
                              " (now is " + FormatRfc3339(now) + "); check the local clock");
  }
  if (cert.not_after <= now) {
    return FailedPrecondition(what + " expired at " + FormatRfc3339(cert.not_after) + " (now is " +
                              FormatRfc3339(now) + "); check the local clock");
  }
  for (std::size_t i = 0; i + 1 < chain->size(); ++i) {
    X509* child = (*chain)[i].get();
    X509* issuer = (*chain)[i + 1].get();
    EVP_PKEY* issuer_key = X509_get0_pubkey(issuer);
    if (X509_check_issued(issuer, child) != X509_V_OK || issuer_key == nullptr ||
        X509_verify(child, issuer_key) != 1) {
      (void)hsm::DrainOpensslErrors();
      return FailedPrecondition(what + " is out of order: certificate #" + std::to_string(i + 1) +
                                " (" + hsm::CertificateSubject(child) +
                                ") is not issued by the next one (" +
                                hsm::CertificateSubject(issuer) + ")");
    }
  }
  return cert;
}

std::string SerializeIdentity(const IdentityRecord& r) {
  Json::Value v(Json::objectValue);
  v["format"] = 1;
  v["agent_id"] = r.agent_id;
  v["control_plane_url"] = r.control_plane_url;
  v["enrolled_at"] = FormatRfc3339(r.enrolled_at);
  v["poll_wait_seconds"] = r.poll_wait_seconds;
  v["token"] = TokenJson(r.token);
  Json::Value keys(Json::arrayValue);
  for (const auto& k : r.signing_keys) keys.append(JwkJson(k));
  v["job_signing_keys"] = keys;
  v["next_key_number"] = r.next_key_number;
  v["current"] = CertificateJson(r.current);
  if (r.previous) v["previous"] = CertificateJson(*r.previous);
  if (r.pending) {
    Json::Value p(Json::objectValue);
    p["key_label"] = r.pending->key_label;
    p["created_at"] = FormatRfc3339(r.pending->created_at);
    v["pending"] = p;
  }
  return WritePrettyJson(v) + "\n";
}

Result<IdentityRecord> ParseIdentity(std::string_view text, std::string_view what) {
  CW_ASSIGN_OR_RETURN(Json::Value root, ParseJson(text, what, kMaxIdentityBytes));
  if (!root.isObject()) return InvalidArgument(std::string(what) + ": expected a JSON object");
  JsonFields f(root, "$");
  IdentityRecord r;
  const std::int64_t format = f.Int("format", 0, 1, 1, JsonFields::kRequired);
  (void)format;
  r.agent_id = f.String("agent_id", JsonFields::kRequired);
  if (f.ok() && r.agent_id.empty()) f.Fail("agent_id", "is empty");
  r.control_plane_url = f.String("control_plane_url", JsonFields::kRequired);
  r.enrolled_at = TimeField(f, "enrolled_at");
  r.poll_wait_seconds =
      static_cast<int>(f.Int("poll_wait_seconds", 25, 0, 60, JsonFields::kRequired));
  if (const Json::Value* t = f.Object("token", JsonFields::kRequired); t != nullptr && f.ok()) {
    JsonFields tf(*t, f.ChildPath("token"));
    r.token.manufacturer = tf.String("manufacturer", JsonFields::kRequired);
    r.token.model = tf.String("model", JsonFields::kRequired);
    r.token.serial = tf.String("serial", JsonFields::kRequired);
    r.token.label = tf.String("label", JsonFields::kRequired);
    f.Merge(tf.Finish());
  }
  if (const Json::Value* keys = f.Array("job_signing_keys", JsonFields::kRequired);
      keys != nullptr && f.ok()) {
    for (Json::ArrayIndex i = 0; i < keys->size(); ++i) {
      auto k = ParseSigningKey((*keys)[i],
                               f.ChildPath("job_signing_keys") + "[" + std::to_string(i) + "]");
      if (!k.ok()) {
        f.Merge(k.status());
        break;
      }
      r.signing_keys.push_back(std::move(k).value());
    }
  }
  r.next_key_number =
      static_cast<std::uint32_t>(f.Int("next_key_number", 1, 1, 1'000'000, JsonFields::kRequired));
  if (auto c = ParseCertificateEntry(f, "current", JsonFields::kRequired)) r.current = *c;
  r.previous = ParseCertificateEntry(f, "previous", JsonFields::kOptional);
  if (const Json::Value* p = f.Object("pending", JsonFields::kOptional); p != nullptr && f.ok()) {
    JsonFields pf(*p, f.ChildPath("pending"));
    PendingKey pending;
    pending.key_label = pf.String("key_label", JsonFields::kRequired);
    if (pf.ok()) CheckKeyLabel(pf, "key_label", pending.key_label).IgnoreError();
    pending.created_at = TimeField(pf, "created_at");
    f.Merge(pf.Finish());
    r.pending = std::move(pending);
  }
  if (Status s = f.Finish(); !s.ok()) return s.WithContext(what);
  return r;
}

std::filesystem::path IdentityFile(const std::filesystem::path& state_dir) {
  return state_dir / kIdentityFileName;
}

Result<std::optional<IdentityRecord>> ReadIdentity(const std::filesystem::path& state_dir) {
  CW_RETURN_IF_ERROR(EnsureStateDir(state_dir));
  const std::string name = IdentityFile(state_dir).string();
  Fd fd(::open(name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) {
    if (errno == ENOENT) return std::optional<IdentityRecord>();
    return PermissionDenied("cannot read the identity file " + name + ": " + Errno(errno));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return FailedPrecondition("the identity file " + name + " is not a regular file");
  }
  if (st.st_uid != ::geteuid() || (st.st_mode & 022) != 0) {
    return PermissionDenied("the identity file " + name + " may be changed by other users (owner " +
                            UserName(st.st_uid) + ", mode " + OctalMode(st.st_mode) +
                            "); run: chown " + UserName(::geteuid()) + " " + name +
                            " && chmod 0600 " + name);
  }
  std::string text;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return PermissionDenied("cannot read the identity file " + name + ": " + Errno(errno));
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > kMaxIdentityBytes) {
      return FailedPrecondition("the identity file " + name + " is larger than 1 MiB");
    }
  }
  auto record = ParseIdentity(text, "identity file " + name);
  if (!record.ok()) {
    return Status(record.status().code(),
                  record.status().message() +
                      " (the file is written by cakewalk-agent enroll; to start over, run "
                      "cakewalk-agent enroll --force --token-file FILE)");
  }
  return std::optional<IdentityRecord>(std::move(record).value());
}

Result<IdentityRecord> LoadIdentity(const std::filesystem::path& state_dir) {
  CW_ASSIGN_OR_RETURN(std::optional<IdentityRecord> record, ReadIdentity(state_dir));
  if (!record) {
    return Status(Code::kFailedPrecondition,
                  "the agent is not enrolled (no " + IdentityFile(state_dir).string() +
                      "): run cakewalk-agent enroll --token-file FILE with a one-time "
                      "enrollment token from the Cakewalk UI",
                  kNotEnrolledReason);
  }
  return std::move(*record);
}

Status WriteIdentity(const std::filesystem::path& state_dir, const IdentityRecord& record) {
  CW_RETURN_IF_ERROR(EnsureStateDir(state_dir));
  return WriteFileAtomically(IdentityFile(state_dir), SerializeIdentity(record), 0600);
}

// --- Identity --------------------------------------------------------------------------------

Result<std::unique_ptr<Identity>> Identity::Open(const std::filesystem::path& state_dir,
                                                 hsm::Token& token, LogSink& log,
                                                 const Clock& clock, Mode mode) {
  CW_ASSIGN_OR_RETURN(IdentityRecord record, LoadIdentity(state_dir));
  const SysTime now = clock.Now();
  const bool recover = mode == Mode::kRecover;
  bool changed = false;
  const std::string token_name = "token '" + token.info().label + "'";
  if (record.token.serial != token.info().serial || record.token.label != token.info().label) {
    return FailedPrecondition(
        "the agent enrolled with token '" + record.token.label + "' (serial " +
        record.token.serial + ") but token.uri selects token '" + token.info().label +
        "' (serial " + token.info().serial +
        "); point token.uri at the enrolled token, or enroll again: cakewalk-agent enroll "
        "--force --token-file FILE");
  }

  // A key generated for a renewal that never got its certificate: nobody will use it.
  if (record.pending) {
    if (recover) {
      Status s = hsm::KeyPair::Destroy(token, record.pending->key_label);
      if (!s.ok() && s.code() != Code::kNotFound) {
        return s.WithContext("cannot remove the unfinished renewal key " +
                             record.pending->key_label + " from " + token_name);
      }
      log.Log(
          Severity::kNotice, event::kCertificate,
          "removed the key of a renewal that did not finish (" + record.pending->key_label + ")",
          {{"KEY_LABEL", record.pending->key_label}});
    }
    record.pending.reset();
    changed = true;
  }

  auto find = [&](const IdentityCertificate& c) -> Result<std::shared_ptr<hsm::TokenKey>> {
    auto key = hsm::KeyPair::Find(token, c.key_label);
    if (!key.ok()) return key.status();
    return std::shared_ptr<hsm::TokenKey>(std::move(key).value());
  };

  auto current_key = find(record.current);
  if (!current_key.ok() && current_key.status().code() != Code::kNotFound) {
    return current_key.status().WithContext("cannot open the identity key " +
                                            record.current.key_label + " in " + token_name);
  }
  std::shared_ptr<hsm::TokenKey> previous_key;
  if (record.previous) {
    auto k = find(*record.previous);
    if (k.ok()) {
      previous_key = std::move(k).value();
    } else if (k.status().code() == Code::kNotFound) {
      // Destroyed after the current identity proved itself; only the record was left.
      record.previous.reset();
      changed = true;
    } else {
      return k.status().WithContext("cannot open the identity key " + record.previous->key_label +
                                    " in " + token_name);
    }
  }

  const bool current_usable = current_key.ok() && ValidAt(record.current, now);
  const bool previous_usable = previous_key != nullptr && ValidAt(*record.previous, now);
  std::shared_ptr<hsm::TokenKey> key;
  if (current_usable || (current_key.ok() && !previous_usable)) {
    key = *current_key;
  } else if (previous_key != nullptr) {
    // The newest usable identity is the previous one: swap, keeping the other key (if it exists)
    // as `previous` until the one in use has proven itself.
    log.Log(Severity::kWarning, event::kCertificate,
            "the newest identity (" + record.current.key_label +
                ") is not usable; using the previous one (" + record.previous->key_label + ")",
            {{"KEY_LABEL", record.previous->key_label}});
    IdentityCertificate old_current = std::move(record.current);
    record.current = std::move(*record.previous);
    record.previous.reset();
    if (current_key.ok()) record.previous = std::move(old_current);
    key = std::move(previous_key);
    changed = true;
  } else {
    return FailedPrecondition(
        "the agent's identity key " + record.current.key_label + " is not in " + token_name +
        " (is token.uri the token the agent enrolled with, serial " + record.token.serial +
        "?); enroll again: cakewalk-agent enroll --force --token-file FILE");
  }

  if (changed && recover) CW_RETURN_IF_ERROR(WriteIdentity(state_dir, record));

  std::unique_ptr<Identity> identity(new Identity(state_dir, token, log, clock));
  identity->record_ = std::move(record);
  identity->key_ = std::move(key);
  return identity;
}

std::string Identity::agent_id() const {
  std::lock_guard lock(mu_);
  return record_.agent_id;
}

int Identity::poll_wait_seconds() const {
  std::lock_guard lock(mu_);
  return record_.poll_wait_seconds;
}

std::vector<SigningKey> Identity::signing_keys() const {
  std::lock_guard lock(mu_);
  return record_.signing_keys;
}

Status Identity::UpdateSigningKeys(std::vector<SigningKey> keys) {
  std::lock_guard lock(mu_);
  IdentityRecord next = record_;
  next.signing_keys = std::move(keys);
  CW_RETURN_IF_ERROR(WriteIdentity(state_dir_, next));
  record_ = std::move(next);
  return Status::Ok();
}

SysTime Identity::certificate_not_before() const {
  std::lock_guard lock(mu_);
  return record_.current.not_before;
}

SysTime Identity::certificate_not_after() const {
  std::lock_guard lock(mu_);
  return record_.current.not_after;
}

ClientIdentity Identity::client_identity() const {
  std::lock_guard lock(mu_);
  return ClientIdentity{key_, record_.current.chain_pem, record_.current.not_after, generation_};
}

std::shared_ptr<hsm::TokenKey> Identity::key() const {
  std::lock_guard lock(mu_);
  return key_;
}

std::uint64_t Identity::generation() const {
  std::lock_guard lock(mu_);
  return generation_;
}

IdentityRecord Identity::record() const {
  std::lock_guard lock(mu_);
  return record_;
}

Status Identity::Commit(IdentityRecord next, std::shared_ptr<hsm::TokenKey> new_key) {
  std::lock_guard lock(mu_);
  const bool switching = next.current.key_label != record_.current.key_label;
  if (switching && (new_key == nullptr || new_key->label() != next.current.key_label)) {
    return Internal("identity commit: switching to " + next.current.key_label +
                    " needs that key pair");
  }
  CW_RETURN_IF_ERROR(WriteIdentity(state_dir_, next));
  record_ = std::move(next);
  if (switching) {
    key_ = std::move(new_key);
    ++generation_;
  }
  return Status::Ok();
}

}  // namespace cakewalk::agent
