#include "hsm/tpm2_provisioner.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "base/encoding.h"
#include "base/json.h"
#include "hsm/tpm2_key_helper_script.h"

namespace cakewalk::hsm::internal {
namespace {

constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Base64 of `bytes` appended to `out`, without any copy outside secret memory but a 4-byte
// stack buffer (wiped).
void AppendBase64(SecretBytes& out, std::span<const std::uint8_t> bytes) {
  char quad[4];
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    const std::size_t n = std::min<std::size_t>(3, bytes.size() - i);
    std::uint32_t v = static_cast<std::uint32_t>(bytes[i]) << 16;
    if (n > 1) v |= static_cast<std::uint32_t>(bytes[i + 1]) << 8;
    if (n > 2) v |= bytes[i + 2];
    quad[0] = kBase64[(v >> 18) & 63];
    quad[1] = kBase64[(v >> 12) & 63];
    quad[2] = n > 1 ? kBase64[(v >> 6) & 63] : '=';
    quad[3] = n > 2 ? kBase64[v & 63] : '=';
    out.Append(std::string_view(quad, 4));
    v = 0;
  }
  WipeBytes(quad, sizeof quad);
}

std::string_view HmacAlgorithm(TotpAlgorithm a) {
  switch (a) {
    case TotpAlgorithm::kSha1:
      return "hmac:sha1";
    case TotpAlgorithm::kSha256:
      return "hmac:sha256";
    case TotpAlgorithm::kSha512:
      return "hmac:sha512";
  }
  return "hmac:sha1";
}

std::string LastLine(const std::string& text) {
  std::string_view v(text);
  while (!v.empty() && (v.back() == '\n' || v.back() == '\r' || v.back() == ' ')) {
    v.remove_suffix(1);
  }
  const std::size_t nl = v.rfind('\n');
  if (nl != std::string_view::npos) v.remove_prefix(nl + 1);
  if (v.size() > 300) v = v.substr(v.size() - 300);
  return std::string(v);
}

struct Pipe {
  int fd[2] = {-1, -1};
  ~Pipe() {
    for (int f : fd) {
      if (f >= 0) close(f);
    }
  }
  void CloseEnd(int i) {
    if (fd[i] >= 0) close(fd[i]);
    fd[i] = -1;
  }
};

struct HelperResult {
  int exit_code = -1;  // -1: killed or not run
  bool timed_out = false;
  std::string out;
  std::string err;
};

// Blocks SIGPIPE in this thread while writing to a helper that may have exited, and discards a
// SIGPIPE raised meanwhile (unless one was already pending), so that the agent is never killed by
// it and its own SIGPIPE handling stays as it was.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe, &old_);
  }
  ~SigpipeGuard() {
    if (!was_pending_) {
      sigset_t pipe;
      sigemptyset(&pipe);
      sigaddset(&pipe, SIGPIPE);
      const timespec zero{0, 0};
      while (sigtimedwait(&pipe, nullptr, &zero) == SIGPIPE) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t old_;
  bool was_pending_ = false;
};

// Runs the helper, writing `input` to its standard input.
Result<HelperResult> RunHelper(const Tpm2StoreOptions& options, const SecretBytes& input) {
  SigpipeGuard sigpipe;
  Pipe in, out, err;
  if (pipe2(in.fd, O_CLOEXEC) != 0 || pipe2(out.fd, O_CLOEXEC) != 0 ||
      pipe2(err.fd, O_CLOEXEC) != 0) {
    return Unavailable(std::string("cannot create pipes for the tpm2-pkcs11 key helper: ") +
                       std::strerror(errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in.fd[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out.fd[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err.fd[1], STDERR_FILENO);
  // Nothing of this process (token sessions, sockets, the SQLite store) reaches the helper.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigaddset(&defaults, SIGCHLD);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  const std::string python = options.python.string();
  std::vector<std::string> args = {python, "-I", "-c", std::string(kTpm2KeyHelperScript)};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env = options.environment;
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_t pid = -1;
  const int rc = posix_spawn(&pid, python.c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return FailedPrecondition("cannot run " + python + " for the tpm2-pkcs11 key helper: " +
                              std::strerror(rc) + " (install python3-tpm2-pkcs11-tools)");
  }
  in.CloseEnd(0);
  out.CloseEnd(1);
  err.CloseEnd(1);
  fcntl(in.fd[1], F_SETFL, O_NONBLOCK);

  HelperResult result;
  std::span<const std::uint8_t> pending = input.Reveal(SecretAccess::Grant());
  if (pending.empty()) in.CloseEnd(1);
  const auto deadline = std::chrono::steady_clock::now() + options.timeout;
  while (out.fd[0] >= 0 || err.fd[0] >= 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    pollfd fds[3];
    nfds_t n = 0;
    if (out.fd[0] >= 0) fds[n++] = {out.fd[0], POLLIN, 0};
    if (err.fd[0] >= 0) fds[n++] = {err.fd[0], POLLIN, 0};
    if (in.fd[1] >= 0) fds[n++] = {in.fd[1], POLLOUT, 0};
    const int ready = poll(fds, n, static_cast<int>(std::min<long long>(left.count(), 1000)));
    if (ready < 0 && errno != EINTR) break;
    for (nfds_t i = 0; i < n && ready > 0; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == in.fd[1]) {
        const ssize_t w = write(in.fd[1], pending.data(), pending.size());
        if (w > 0) pending = pending.subspan(static_cast<std::size_t>(w));
        if ((w < 0 && errno != EAGAIN && errno != EINTR) || pending.empty()) in.CloseEnd(1);
        continue;
      }
      char buf[4096];
      const ssize_t r = read(fds[i].fd, buf, sizeof buf);
      if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (fds[i].fd == out.fd[0]) out.CloseEnd(0);
        if (fds[i].fd == err.fd[0]) err.CloseEnd(0);
        continue;
      }
      std::string& dst = fds[i].fd == out.fd[0] ? result.out : result.err;
      if (dst.size() < 64 * 1024) dst.append(buf, static_cast<std::size_t>(r));
    }
  }
  in.CloseEnd(1);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!result.timed_out && WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

}  // namespace

Result<std::unique_ptr<Tpm2StoreProvisioner>> Tpm2StoreProvisioner::FromEnvironment() {
  const char* store = std::getenv("TPM2_PKCS11_STORE");
  if (store == nullptr || *store == '\0') {
    return FailedPrecondition(
        "TPM2_PKCS11_STORE is not set, so the agent cannot add keys to a tpm2-pkcs11 store (set "
        "it to the store directory, e.g. /var/lib/cakewalk-agent/tpm2-pkcs11, for the agent and "
        "the module alike)");
  }
  Tpm2StoreOptions options;
  options.store = store;
  // TSS2_LOG=all+NONE: the TSS libraries' own log lines would hide the tools' error messages.
  options.environment = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "TSS2_LOG=all+NONE",
                         "TPM2_PKCS11_STORE=" + options.store.string()};
  const char* tools_tcti = std::getenv("TPM2TOOLS_TCTI");
  const char* lib_tcti = std::getenv("TPM2_PKCS11_TCTI");
  if (tools_tcti != nullptr && *tools_tcti != '\0') {
    options.environment.push_back(std::string("TPM2TOOLS_TCTI=") + tools_tcti);
  } else if (lib_tcti != nullptr && *lib_tcti != '\0') {
    options.environment.push_back(std::string("TPM2TOOLS_TCTI=") + lib_tcti);
  }
  if (const char* runtime = std::getenv("RUNTIME_DIRECTORY"); runtime != nullptr && *runtime) {
    const std::string first(
        runtime, std::strcspn(runtime, ":"));  // several when RuntimeDirectory= lists several
    options.ram_dir = first;
  }
  for (const char* name :
       {"TPM2_PKCS11_TCTI", "DBUS_SESSION_BUS_ADDRESS", "DBUS_SYSTEM_BUS_ADDRESS", "TMPDIR"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && *value != '\0') {
      options.environment.push_back(std::string(name) + "=" + value);
    }
  }
  return std::make_unique<Tpm2StoreProvisioner>(std::move(options));
}

std::string Tpm2StoreProvisioner::Describe() const {
  return "the tpm2-pkcs11 store " + options_.store.string();
}

Status Tpm2StoreProvisioner::ImportHmac(const ProvisionTarget& target, TotpAlgorithm algorithm,
                                        const SecretBytes& key, std::string_view label,
                                        std::span<const std::uint8_t> id) {
  if (key.empty()) return InvalidArgument("an HMAC key must not be empty");
  return Run(target, "import", HmacAlgorithm(algorithm), &key, label, id);
}

Status Tpm2StoreProvisioner::Generate(const ProvisionTarget& target, GeneratedKey kind,
                                      std::string_view label, std::span<const std::uint8_t> id) {
  return Run(target, "generate", kind == GeneratedKey::kAes256 ? "aes256" : "hmac:sha256", nullptr,
             label, id);
}

Status Tpm2StoreProvisioner::Run(const ProvisionTarget& target, std::string_view op,
                                 std::string_view algorithm, const SecretBytes* key,
                                 std::string_view label, std::span<const std::uint8_t> id) {
  const std::string what = "adding key '" + std::string(label) + "' to " + Describe();
  Json::Value request(Json::objectValue);
  request["op"] = std::string(op);
  request["store"] = options_.store.string();
  request["token"] = target.token.label;
  request["key_label"] = std::string(label);
  request["id"] = HexEncode(id);
  request["algorithm"] = std::string(algorithm);
  request["ram_dir"] = options_.ram_dir.string();
  request["memfd"] = options_.use_memfd;
  std::string head = WriteJson(request);  // {"algorithm":...} without secrets
  if (head.empty() || head.back() != '}') return Internal(what + ": cannot build the request");
  head.pop_back();
  SecretBytes input;
  input.Append(head);
  input.Append(std::string_view(",\"pin\":\""));
  AppendBase64(input, target.pin.Reveal(SecretAccess::Grant()));
  input.Append(std::string_view("\""));
  if (key != nullptr) {
    input.Append(std::string_view(",\"key\":\""));
    AppendBase64(input, key->Reveal(SecretAccess::Grant()));
    input.Append(std::string_view("\""));
  }
  input.Append(std::string_view("}\n"));

  CW_ASSIGN_OR_RETURN(HelperResult run, RunHelper(options_, input));
  input.Wipe();
  if (run.timed_out) {
    return Unavailable(what + ": the key helper did not finish within " +
                       std::to_string(options_.timeout.count()) + " s and was stopped");
  }
  auto parsed = ParseJson(LastLine(run.out), "the tpm2-pkcs11 key helper's answer", 4096);
  if (!parsed.ok() || !parsed->isObject() || !(*parsed)["ok"].isBool()) {
    std::string detail = LastLine(run.err);
    return Internal(what + ": the key helper failed (exit status " + std::to_string(run.exit_code) +
                    (detail.empty() ? "" : ": " + detail) + ")");
  }
  if (!(*parsed)["ok"].asBool() || run.exit_code != 0) {
    const Json::Value& error = (*parsed)["error"];
    return FailedPrecondition(what + ": " +
                              (error.isString() ? error.asString() : std::string("failed")));
  }
  return Status::Ok();
}

Result<std::shared_ptr<KeyProvisioner>> DefaultKeyProvisioner() {
  CW_ASSIGN_OR_RETURN(std::unique_ptr<Tpm2StoreProvisioner> tpm2,
                      Tpm2StoreProvisioner::FromEnvironment());
  return std::shared_ptr<KeyProvisioner>(std::move(tpm2));
}

bool RefusesSecretKeyCreation(CK_RV rv) noexcept {
  return rv == CKR_ATTRIBUTE_VALUE_INVALID || rv == CKR_TEMPLATE_INCONSISTENT ||
         rv == CKR_FUNCTION_NOT_SUPPORTED || rv == CKR_MECHANISM_INVALID;
}

}  // namespace cakewalk::hsm::internal
