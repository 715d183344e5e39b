#include "tests/support/softhsm.h"

#include <fcntl.h>
#include <p11-kit/p11-kit.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "base/encoding.h"
#include "tests/support/canary.h"

extern char** environ;

namespace cakewalk::testing {
namespace {

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
  // MakeCanary gives "<kind>-canary-<hex>"; a PIN is not a canary, keep only the random part.
  std::string c = MakeCanary(kind);
  return std::string(kind) + "-" + c.substr(c.size() - 16);
}

void PadLabel(std::string_view label, CK_UTF8CHAR out[32]) {
  std::memset(out, ' ', 32);
  std::memcpy(out, label.data(), std::min<std::size_t>(label.size(), 32));
}

std::string Trim(const unsigned char* p, std::size_t n) {
  std::string s(reinterpret_cast<const char*>(p), n);
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

// A managed p11-kit load of SoftHSM, finalised on scope exit.
class ManagedSoftHsm {
 public:
  ~ManagedSoftHsm() {
    if (f_ != nullptr) {
      p11_kit_module_finalize(f_);
      p11_kit_module_release(f_);
    }
  }
  Status Load() {
    f_ = p11_kit_module_load(SoftHsm::kModulePath, 0);
    if (f_ == nullptr) return Internal(std::string("cannot load SoftHSM: ") + p11_kit_message());
    const CK_RV rv = p11_kit_module_initialize(f_);
    if (rv != CKR_OK) {
      p11_kit_module_release(f_);
      f_ = nullptr;
      return Check(rv, "C_Initialize");
    }
    return Status::Ok();
  }
  CK_FUNCTION_LIST* f() const { return f_; }

 private:
  CK_FUNCTION_LIST* f_ = nullptr;
};

Result<std::vector<CK_SLOT_ID>> Slots(CK_FUNCTION_LIST* f) {
  CK_ULONG n = 0;
  CW_RETURN_IF_ERROR(Check(f->C_GetSlotList(CK_TRUE, nullptr, &n), "C_GetSlotList"));
  std::vector<CK_SLOT_ID> slots(n);
  CW_RETURN_IF_ERROR(Check(f->C_GetSlotList(CK_TRUE, slots.data(), &n), "C_GetSlotList"));
  slots.resize(n);
  return slots;
}

Result<CK_SLOT_ID> FindSlot(CK_FUNCTION_LIST* f, std::string_view label, bool initialised) {
  CW_ASSIGN_OR_RETURN(std::vector<CK_SLOT_ID> slots, Slots(f));
  for (CK_SLOT_ID slot : slots) {
    CK_TOKEN_INFO ti{};
    if (f->C_GetTokenInfo(slot, &ti) != CKR_OK) continue;
    const bool is_init = (ti.flags & CKF_TOKEN_INITIALIZED) != 0;
    if (!initialised && !is_init) return slot;
    if (initialised && is_init && Trim(ti.label, sizeof ti.label) == label) return slot;
  }
  return NotFound(initialised ? "no token labelled " + std::string(label)
                              : std::string("no free SoftHSM slot"));
}

}  // namespace

Result<std::unique_ptr<SoftHsm>> SoftHsm::Create(std::string label) {
  std::unique_ptr<SoftHsm> hsm(new SoftHsm);
  std::filesystem::create_directory(hsm->token_dir());
  WriteFile(hsm->conf(),
            "# private SoftHSM2 store of one test\n"
            "directories.tokendir = " +
                hsm->token_dir().string() +
                "\n"
                "objectstore.backend = file\n"
                "log.level = ERROR\n"
                "slots.removable = false\n",
            0600);
  setenv("SOFTHSM2_CONF", hsm->conf().c_str(), 1);
  CW_ASSIGN_OR_RETURN(TokenSpec spec, hsm->AddToken(label));
  (void)spec;
  return hsm;
}

Result<SoftHsm::TokenSpec> SoftHsm::AddToken(const std::string& label) {
  TokenSpec spec;
  spec.label = label;
  spec.uri = "pkcs11:token=" + UrlEncode(label);
  spec.user_pin = RandomPin("user-pin");
  spec.so_pin = RandomPin("so-pin");
  spec.pin_file = dir_.path() / (label + ".pin");

  ManagedSoftHsm m;
  CW_RETURN_IF_ERROR(m.Load());
  CK_FUNCTION_LIST* f = m.f();
  CW_ASSIGN_OR_RETURN(CK_SLOT_ID free_slot, FindSlot(f, label, /*initialised=*/false));
  CK_UTF8CHAR padded[32];
  PadLabel(label, padded);
  CW_RETURN_IF_ERROR(
      Check(f->C_InitToken(free_slot, reinterpret_cast<CK_UTF8CHAR*>(spec.so_pin.data()),
                           static_cast<CK_ULONG>(spec.so_pin.size()), padded),
            "C_InitToken"));
  // The slot id changes once the token is initialised: find it again by label.
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

// ---- RawPkcs11 ------------------------------------------------------------------------------

Result<std::unique_ptr<RawPkcs11>> RawPkcs11::Load(const std::string& path) {
  std::unique_ptr<RawPkcs11> raw(new RawPkcs11);
  raw->functions_ = p11_kit_module_load(path.c_str(), P11_KIT_MODULE_UNMANAGED);
  if (raw->functions_ == nullptr) {
    return Internal("cannot load " + path + ": " + p11_kit_message());
  }
  CK_C_INITIALIZE_ARGS args{};
  args.flags = CKF_OS_LOCKING_OK;
  const CK_RV rv = raw->functions_->C_Initialize(&args);
  if (rv == CKR_OK) {
    raw->finalize_ = true;
  } else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
    return Check(rv, "C_Initialize");
  }
  return raw;
}

RawPkcs11::~RawPkcs11() {
  if (functions_ == nullptr) return;
  if (finalize_) functions_->C_Finalize(nullptr);
  p11_kit_module_release(functions_);
}

Result<CK_SLOT_ID> RawPkcs11::SlotOf(std::string_view label) {
  return FindSlot(functions_, label, /*initialised=*/true);
}

Result<CK_SESSION_HANDLE> RawPkcs11::OpenUserSession(std::string_view label, std::string_view pin) {
  CW_ASSIGN_OR_RETURN(CK_SLOT_ID slot, SlotOf(label));
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  CW_RETURN_IF_ERROR(Check(
      functions_->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &s),
      "C_OpenSession"));
  const CK_RV rv = functions_->C_Login(
      s, CKU_USER, reinterpret_cast<CK_UTF8CHAR*>(const_cast<char*>(pin.data())),
      static_cast<CK_ULONG>(pin.size()));
  if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
    functions_->C_CloseSession(s);
    return Check(rv, "C_Login");
  }
  return s;
}

Result<std::vector<CK_OBJECT_HANDLE>> RawPkcs11::FindByLabel(CK_SESSION_HANDLE session,
                                                             std::string_view label,
                                                             CK_OBJECT_CLASS cls) {
  CK_ATTRIBUTE tmpl[2] = {
      {CKA_LABEL, const_cast<char*>(label.data()), static_cast<CK_ULONG>(label.size())},
      {CKA_CLASS, &cls, sizeof cls}};
  const CK_ULONG n = cls == ~CK_OBJECT_CLASS{0} ? 1 : 2;
  CW_RETURN_IF_ERROR(Check(functions_->C_FindObjectsInit(session, tmpl, n), "C_FindObjectsInit"));
  std::vector<CK_OBJECT_HANDLE> out(256);
  CK_ULONG found = 0;
  const CK_RV rv = functions_->C_FindObjects(session, out.data(), 256, &found);
  functions_->C_FindObjectsFinal(session);
  CW_RETURN_IF_ERROR(Check(rv, "C_FindObjects"));
  out.resize(found);
  return out;
}

Result<std::size_t> RawPkcs11::CountObjects(CK_SESSION_HANDLE session) {
  CK_BBOOL yes = CK_TRUE;
  CK_ATTRIBUTE tmpl[1] = {{CKA_TOKEN, &yes, sizeof yes}};
  CW_RETURN_IF_ERROR(Check(functions_->C_FindObjectsInit(session, tmpl, 1), "C_FindObjectsInit"));
  std::size_t total = 0;
  CK_RV rv = CKR_OK;
  while (true) {
    CK_OBJECT_HANDLE batch[64];
    CK_ULONG n = 0;
    rv = functions_->C_FindObjects(session, batch, 64, &n);
    if (rv != CKR_OK || n == 0) break;
    total += n;
  }
  functions_->C_FindObjectsFinal(session);
  CW_RETURN_IF_ERROR(Check(rv, "C_FindObjects"));
  return total;
}

// ---- RunProgram -----------------------------------------------------------------------------

ProgramResult RunProgram(const std::vector<std::string>& argv, std::string_view input) {
  ProgramResult result;
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    result.err = "pipe failed";
    return result;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(in[0]);
  close(out[1]);
  close(err[1]);
  if (rc != 0) {
    close(in[1]);
    close(out[0]);
    close(err[0]);
    result.err = "cannot run " + argv[0] + ": " + std::strerror(rc);
    return result;
  }
  // Feed stdin and drain both outputs together, so that no pipe fills up.
  signal(SIGPIPE, SIG_IGN);
  std::size_t written = 0;
  int stdin_fd = in[1];
  if (input.empty()) {
    close(stdin_fd);
    stdin_fd = -1;
  }
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    pollfd fds[3];
    nfds_t n = 0;
    if (out_open) fds[n++] = {out[0], POLLIN, 0};
    if (err_open) fds[n++] = {err[0], POLLIN, 0};
    if (stdin_fd >= 0) fds[n++] = {stdin_fd, POLLOUT, 0};
    if (poll(fds, n, 30000) <= 0) break;
    for (nfds_t i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == stdin_fd) {
        const ssize_t w = write(stdin_fd, input.data() + written, input.size() - written);
        if (w > 0) written += static_cast<std::size_t>(w);
        if (w < 0 || written == input.size()) {
          close(stdin_fd);
          stdin_fd = -1;
        }
        continue;
      }
      char buf[4096];
      const ssize_t r = read(fds[i].fd, buf, sizeof buf);
      if (r <= 0) {
        if (fds[i].fd == out[0]) out_open = false;
        if (fds[i].fd == err[0]) err_open = false;
        continue;
      }
      (fds[i].fd == out[0] ? result.out : result.err).append(buf, static_cast<std::size_t>(r));
    }
  }
  if (stdin_fd >= 0) close(stdin_fd);
  close(out[0]);
  close(err[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

}  // namespace cakewalk::testing
