#include "tests/support/swtpm.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <p11-kit/p11-kit.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "base/encoding.h"
#include "tests/support/canary.h"
#include "tests/support/softhsm.h"
#include "tests/support/tinyproxy.h"

extern char** environ;

namespace cakewalk::testing {
namespace {

using namespace std::chrono_literals;

std::string Rv(CK_RV rv) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%lx", rv);
  return buf;
}

Status Check(CK_RV rv, std::string_view what) {
  if (rv == CKR_OK) return Status::Ok();
  return Internal(std::string(what) + " failed with CK_RV " + Rv(rv));
}

std::string RandomPin(std::string_view kind) {
  std::string c = MakeCanary(kind);
  return std::string(kind) + "-" + c.substr(c.size() - 16);
}

std::string Trim(const unsigned char* p, std::size_t n) {
  std::string s(reinterpret_cast<const char*>(p), n);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

// Two free neighbouring ports on 127.0.0.1 (swtpm's server and control ports).
bool BindLoopback(int fd, std::uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

std::uint16_t PickFreePortPair() {
  for (int attempt = 0; attempt < 100; ++attempt) {
    const std::uint16_t p = PickFreePort();
    if (p >= 65535) continue;
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool free = fd >= 0 && BindLoopback(fd, static_cast<std::uint16_t>(p + 1));
    if (fd >= 0) close(fd);
    if (free) return p;
  }
  return 0;
}

// posix_spawn of `argv` under `setpriv --pdeathsig KILL` (dies with the test process), with
// standard input from /dev/null and both outputs appended to `log`.
Result<pid_t> SpawnDaemon(const std::vector<std::string>& argv, const std::filesystem::path& log) {
  std::vector<std::string> full = {"/usr/bin/setpriv", "--pdeathsig", "KILL", "--"};
  full.insert(full.end(), argv.begin(), argv.end());
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  std::vector<char*> args;
  for (std::string& a : full) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return Internal("cannot run " + argv[0] + ": " + std::strerror(rc));
  return pid;
}

bool Exited(pid_t pid) {
  int status = 0;
  return waitpid(pid, &status, WNOHANG) == pid;
}

void StopPid(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (Exited(pid)) return;
    std::this_thread::sleep_for(10ms);
  }
  kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

// The module loaded without p11-kit's managed wrapper and finalised on scope exit, for token
// set-up before any hsm::Module of the test exists.
class RawModule {
 public:
  ~RawModule() {
    if (f_ == nullptr) return;
    if (initialized_) f_->C_Finalize(nullptr);
    p11_kit_module_release(f_);
  }
  Status Load() {
    f_ = p11_kit_module_load(Swtpm::kModulePath, P11_KIT_MODULE_UNMANAGED);
    if (f_ == nullptr)
      return Internal(std::string("cannot load tpm2-pkcs11: ") + p11_kit_message());
    CK_C_INITIALIZE_ARGS args{};
    args.flags = CKF_OS_LOCKING_OK;
    const CK_RV rv = f_->C_Initialize(&args);
    if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
      return FailedPrecondition(
          "tpm2-pkcs11 is already initialised in this process; add tokens before loading it");
    }
    CW_RETURN_IF_ERROR(Check(rv, "C_Initialize"));
    initialized_ = true;
    return Status::Ok();
  }
  CK_FUNCTION_LIST* f() const { return f_; }

 private:
  CK_FUNCTION_LIST* f_ = nullptr;
  bool initialized_ = false;
};

Result<CK_SLOT_ID> FindSlot(CK_FUNCTION_LIST* f, std::string_view label, bool initialised) {
  CK_ULONG n = 0;
  CW_RETURN_IF_ERROR(Check(f->C_GetSlotList(CK_TRUE, nullptr, &n), "C_GetSlotList"));
  std::vector<CK_SLOT_ID> slots(n);
  CW_RETURN_IF_ERROR(Check(f->C_GetSlotList(CK_TRUE, slots.data(), &n), "C_GetSlotList"));
  slots.resize(n);
  for (CK_SLOT_ID slot : slots) {
    CK_TOKEN_INFO ti{};
    if (f->C_GetTokenInfo(slot, &ti) != CKR_OK) continue;
    const bool is_init = (ti.flags & CKF_TOKEN_INITIALIZED) != 0;
    if (!initialised && !is_init) return slot;
    if (initialised && is_init && Trim(ti.label, sizeof ti.label) == label) return slot;
  }
  return NotFound(initialised ? "no token labelled " + std::string(label)
                              : std::string("tpm2-pkcs11 offers no uninitialised slot"));
}

}  // namespace

Result<std::unique_ptr<Swtpm>> Swtpm::Start(std::string label) {
  std::unique_ptr<Swtpm> tpm(new Swtpm);
  std::filesystem::create_directory(tpm->dir() / "state");
  std::filesystem::create_directory(tpm->store());
  setenv("HOME", tpm->dir().c_str(), 1);
  setenv("TPM2_PKCS11_STORE", tpm->store().c_str(), 1);
  setenv("TPM2_PKCS11_TCTI", kTcti, 1);
  setenv("TPM2TOOLS_TCTI", kTcti, 1);
  setenv("TPM2_PKCS11_LOG_LEVEL", "0", 1);
  setenv("TSS2_LOG", "all+NONE", 1);
  setenv("DBUS_SESSION_BUS_ADDRESS", tpm->bus_address().c_str(), 1);
  if (Status launched = tpm->Launch(); !launched.ok()) {
    return launched.WithContext("starting swtpm / dbus-daemon / tpm2-abrmd; logs:\n" + tpm->Logs());
  }
  CW_ASSIGN_OR_RETURN(TokenSpec spec, tpm->AddToken(label));
  (void)spec;
  return tpm;
}

Status Swtpm::Launch() {
  const std::filesystem::path d = dir();
  // swtpm, on two free neighbouring ports (retried if another process takes them meanwhile).
  std::uint16_t port = 0;
  for (int attempt = 0; attempt < 5 && port == 0; ++attempt) {
    const std::uint16_t p = PickFreePortPair();
    if (p == 0) return Internal("no two free neighbouring ports on 127.0.0.1");
    CW_ASSIGN_OR_RETURN(
        pid_t pid,
        SpawnDaemon({"swtpm", "socket", "--tpm2", "--server",
                     "type=tcp,port=" + std::to_string(p) + ",bindaddr=127.0.0.1", "--ctrl",
                     "type=tcp,port=" + std::to_string(p + 1) + ",bindaddr=127.0.0.1", "--flags",
                     "not-need-init,startup-clear", "--tpmstate", "dir=" + (d / "state").string()},
                    d / "swtpm.log"));
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    bool up = false;
    while (std::chrono::steady_clock::now() < deadline) {
      if (Exited(pid)) break;
      if (CanConnect(static_cast<std::uint16_t>(p + 1))) {
        up = true;
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
    if (up) {
      pids_.push_back(pid);
      port = p;
    } else {
      StopPid(pid);
    }
  }
  if (port == 0) return Internal("swtpm did not start");

  // A private session bus in the folder.
  const std::filesystem::path bus = d / "bus";
  CW_ASSIGN_OR_RETURN(pid_t dbus, SpawnDaemon({"dbus-daemon", "--session", "--nofork",
                                               "--address=unix:path=" + bus.string()},
                                              d / "dbus.log"));
  pids_.push_back(dbus);
  for (auto deadline = std::chrono::steady_clock::now() + 10s;
       !std::filesystem::exists(bus) && std::chrono::steady_clock::now() < deadline;) {
    if (Exited(dbus)) return Internal("dbus-daemon exited");
    std::this_thread::sleep_for(10ms);
  }
  if (!std::filesystem::exists(bus)) return Internal("dbus-daemon did not create its socket");

  // The resource manager, and the first TPM command through it.
  CW_ASSIGN_OR_RETURN(pid_t abrmd,
                      SpawnDaemon({"tpm2-abrmd", "--session", "--allow-root",
                                   "--tcti=swtpm:host=127.0.0.1,port=" + std::to_string(port)},
                                  d / "abrmd.log"));
  pids_.push_back(abrmd);
  ProgramResult probe;
  for (auto deadline = std::chrono::steady_clock::now() + 15s;
       std::chrono::steady_clock::now() < deadline;) {
    probe = RunProgram({"tpm2_getrandom", "4"});
    if (probe.exit_code == 0) break;
    if (Exited(abrmd)) return Internal("tpm2-abrmd exited");
    std::this_thread::sleep_for(50ms);
  }
  if (probe.exit_code != 0) return Internal("tpm2-abrmd does not answer: " + probe.err);

  ProgramResult da = RunProgram({"tpm2_dictionarylockout", "--setup-parameters", "--max-tries=1000",
                                 "--recovery-time=1", "--lockout-recovery-time=1"});
  if (da.exit_code != 0) return Internal("tpm2_dictionarylockout failed: " + da.err);
  ProgramResult init = RunProgram({"tpm2_ptool", "init", "--path", store().string()});
  if (init.exit_code != 0) return Internal("tpm2_ptool init failed: " + init.out + init.err);
  return Status::Ok();
}

Result<Swtpm::TokenSpec> Swtpm::AddToken(const std::string& label) {
  TokenSpec spec;
  spec.label = label;
  spec.uri = "pkcs11:token=" + UrlEncode(label);
  spec.user_pin = RandomPin("user-pin");
  spec.so_pin = RandomPin("so-pin");
  spec.pin_file = dir() / (label + ".pin");

  RawModule m;
  CW_RETURN_IF_ERROR(m.Load());
  CK_FUNCTION_LIST* f = m.f();
  CW_ASSIGN_OR_RETURN(CK_SLOT_ID empty, FindSlot(f, label, /*initialised=*/false));
  CK_UTF8CHAR padded[32];
  std::memset(padded, ' ', sizeof padded);
  std::memcpy(padded, label.data(), std::min<std::size_t>(label.size(), sizeof padded));
  CW_RETURN_IF_ERROR(Check(f->C_InitToken(empty, reinterpret_cast<CK_UTF8CHAR*>(spec.so_pin.data()),
                                          static_cast<CK_ULONG>(spec.so_pin.size()), padded),
                           "C_InitToken"));
  CW_ASSIGN_OR_RETURN(CK_SLOT_ID slot, FindSlot(f, label, /*initialised=*/true));
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  CW_RETURN_IF_ERROR(
      Check(f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &s),
            "C_OpenSession"));
  Status status = Check(f->C_Login(s, CKU_SO, reinterpret_cast<CK_UTF8CHAR*>(spec.so_pin.data()),
                                   static_cast<CK_ULONG>(spec.so_pin.size())),
                        "C_Login(SO)");
  if (status.ok()) {
    status = Check(f->C_InitPIN(s, reinterpret_cast<CK_UTF8CHAR*>(spec.user_pin.data()),
                                static_cast<CK_ULONG>(spec.user_pin.size())),
                   "C_InitPIN");
    f->C_Logout(s);
  }
  f->C_CloseSession(s);
  CW_RETURN_IF_ERROR(status);
  WriteFile(spec.pin_file, spec.user_pin + "\n", 0600);
  tokens_.push_back(spec);
  return spec;
}

std::string Swtpm::Logs() const {
  std::string out;
  for (const char* name : {"swtpm.log", "dbus.log", "abrmd.log"}) {
    std::error_code ec;
    if (!std::filesystem::exists(dir() / name, ec)) continue;
    out += std::string("--- ") + name + "\n" + ReadFile(dir() / name);
  }
  return out;
}

void Swtpm::Stop() {
  for (auto it = pids_.rbegin(); it != pids_.rend(); ++it) StopPid(*it);
  pids_.clear();
}

Swtpm::~Swtpm() { Stop(); }

// ---- CheckSecretKeyNotExportable ---------------------------------------------------------------

namespace {

// CKA_VALUE: a size query, then a real buffer; no byte may come back.
Status CheckValueUnreadable(CK_FUNCTION_LIST* f, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key,
                            std::string_view when) {
  CK_ATTRIBUTE query{CKA_VALUE, nullptr, 0};
  const CK_RV q = f->C_GetAttributeValue(session, key, &query, 1);
  if (q == CKR_OK && query.ulValueLen != 0) {
    return FailedPrecondition(std::string(when) + ": the CKA_VALUE size query says " +
                              std::to_string(query.ulValueLen) + " bytes are readable");
  }
  // CKR_ATTRIBUTE_TYPE_INVALID: the object has no value attribute at all (tpm2-pkcs11's private
  // keys, whose key material exists only as a TPM blob).
  if (q != CKR_OK && q != CKR_ATTRIBUTE_SENSITIVE && q != CKR_ATTRIBUTE_TYPE_INVALID) {
    return FailedPrecondition(std::string(when) + ": the CKA_VALUE size query returned " + Rv(q) +
                              " (expected CKR_ATTRIBUTE_SENSITIVE, CKR_ATTRIBUTE_TYPE_INVALID or "
                              "an empty value)");
  }
  std::uint8_t buffer[256];
  std::memset(buffer, 0xa5, sizeof buffer);
  CK_ATTRIBUTE read{CKA_VALUE, buffer, sizeof buffer};
  const CK_RV r = f->C_GetAttributeValue(session, key, &read, 1);
  if (r == CKR_OK && read.ulValueLen != 0) {
    return FailedPrecondition(std::string(when) + ": CKA_VALUE returned " +
                              std::to_string(read.ulValueLen) + " bytes");
  }
  if (r != CKR_OK && r != CKR_ATTRIBUTE_SENSITIVE && r != CKR_ATTRIBUTE_TYPE_INVALID) {
    return FailedPrecondition(std::string(when) + ": reading CKA_VALUE returned " + Rv(r));
  }
  for (std::uint8_t b : buffer) {
    if (b != 0xa5)
      return FailedPrecondition(std::string(when) + ": CKA_VALUE wrote into the buffer");
  }
  return Status::Ok();
}

// Sets a CK_BBOOL attribute; true when the token accepted it and now reports the new value.
bool FlagChanged(CK_FUNCTION_LIST* f, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key,
                 CK_ATTRIBUTE_TYPE type, CK_BBOOL value) {
  CK_ATTRIBUTE set{type, &value, sizeof value};
  if (f->C_SetAttributeValue(session, key, &set, 1) != CKR_OK) return false;
  CK_BBOOL now = value == CK_TRUE ? CK_FALSE : CK_TRUE;
  CK_ATTRIBUTE get{type, &now, sizeof now};
  return f->C_GetAttributeValue(session, key, &get, 1) == CKR_OK && now == value;
}

// Every C_WrapKey attempt must be refused as unsupported.
Status CheckNoWrapping(CK_FUNCTION_LIST* f, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key) {
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_KEY_TYPE aes = CKK_AES;
  CK_ATTRIBUTE find[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_KEY_TYPE, &aes, sizeof aes}};
  std::vector<CK_OBJECT_HANDLE> wrappers;
  if (f->C_FindObjectsInit(session, find, 2) == CKR_OK) {
    CK_OBJECT_HANDLE batch[16];
    CK_ULONG n = 0;
    if (f->C_FindObjects(session, batch, 16, &n) == CKR_OK) wrappers.assign(batch, batch + n);
    f->C_FindObjectsFinal(session);
  }
  if (wrappers.empty()) wrappers.push_back(CK_INVALID_HANDLE);
  for (CK_MECHANISM_TYPE type : {CKM_AES_KEY_WRAP_PAD, CKM_AES_KEY_WRAP, CKM_AES_CBC_PAD}) {
    std::uint8_t iv[16] = {};
    CK_MECHANISM mechanism{type, type == CKM_AES_CBC_PAD ? iv : nullptr,
                           type == CKM_AES_CBC_PAD ? CK_ULONG{16} : CK_ULONG{0}};
    for (CK_OBJECT_HANDLE wrapper : wrappers) {
      std::uint8_t wrapped[1024];
      CK_ULONG len = sizeof wrapped;
      const CK_RV w = f->C_WrapKey(session, &mechanism, wrapper, key, wrapped, &len);
      if (w == CKR_OK) {
        return FailedPrecondition("C_WrapKey exported the key (" + std::to_string(len) + " bytes)");
      }
      if (w != CKR_FUNCTION_NOT_SUPPORTED) {
        return FailedPrecondition("C_WrapKey is implemented (it returned " + Rv(w) +
                                  "); this token might export the key with the right wrapping "
                                  "key");
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Status CheckSecretKeyNotExportable(CK_FUNCTION_LIST* f, CK_SESSION_HANDLE session,
                                   CK_OBJECT_HANDLE key, std::vector<std::string>* notes) {
  CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE;
  CK_ATTRIBUTE flags[] = {{CKA_SENSITIVE, &sensitive, sizeof sensitive},
                          {CKA_EXTRACTABLE, &extractable, sizeof extractable}};
  CW_RETURN_IF_ERROR(Check(f->C_GetAttributeValue(session, key, flags, 2),
                           "C_GetAttributeValue(CKA_SENSITIVE, CKA_EXTRACTABLE)"));
  if (sensitive != CK_TRUE) return FailedPrecondition("CKA_SENSITIVE is FALSE");
  CW_RETURN_IF_ERROR(CheckValueUnreadable(f, session, key, "as stored"));

  // Try to open the key up. The specification forbids both changes; tpm2-pkcs11 allows them (the
  // flags are metadata in its store, the value stays in the TPM). Either way, nothing may become
  // readable, and where the flags moved, no export path may exist; then they are put back.
  const bool made_extractable =
      extractable == CK_FALSE && FlagChanged(f, session, key, CKA_EXTRACTABLE, CK_TRUE);
  const bool made_insensitive = FlagChanged(f, session, key, CKA_SENSITIVE, CK_FALSE);
  Status status = CheckValueUnreadable(f, session, key, "with the flags changed");
  if (status.ok() && (extractable == CK_TRUE || made_extractable || made_insensitive)) {
    status = CheckNoWrapping(f, session, key);
  }
  if (made_insensitive && !FlagChanged(f, session, key, CKA_SENSITIVE, CK_TRUE) && status.ok()) {
    status = FailedPrecondition("CKA_SENSITIVE could be cleared and not restored");
  }
  if (made_extractable && !FlagChanged(f, session, key, CKA_EXTRACTABLE, CK_FALSE) && status.ok()) {
    status = FailedPrecondition("CKA_EXTRACTABLE could be set and not restored");
  }
  CW_RETURN_IF_ERROR(status);
  if (notes != nullptr) {
    if (extractable == CK_TRUE) notes->push_back("reports CKA_EXTRACTABLE=TRUE");
    if (made_extractable) notes->push_back("CKA_EXTRACTABLE can be set by the PIN holder");
    if (made_insensitive) notes->push_back("CKA_SENSITIVE can be cleared by the PIN holder");
    if (extractable == CK_TRUE || made_extractable || made_insensitive) {
      notes->push_back("C_WrapKey is not supported");
    }
  }
  return Status::Ok();
}

}  // namespace cakewalk::testing
