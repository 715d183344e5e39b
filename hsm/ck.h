// The one choke point for PKCS#11 calls (internal to hsm/).
//
// Every C_* call in hsm/ is written as CW_CK_CALL / CW_CK_INVOKE (module-level calls) or
// CW_SESSION_CALL / CW_SESSION_INVOKE (session.h). They all end in ModuleCore::Invoke, which
//   - refuses cleanly (CKR_CRYPTOKI_NOT_INITIALIZED) once the module has been closed, so late
//     callers (OpenSSL's atexit provider teardown) get an error instead of a crash;
//   - brackets the call with ERR_set_mark()/ERR_pop_to_mark(), because SoftHSM (which uses
//     OpenSSL in-process) leaves entries on OpenSSL's error queue that would corrupt
//     SSL_get_error() and curl's messages;
// and CkrStatus maps CK_RV to a Status with the CKR_ name and hex code in the message.
#pragma once

#include <openssl/err.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "hsm/cryptoki.h"
#include "hsm/module.h"

namespace cakewalk::hsm::internal {

// "CKR_PIN_INCORRECT"; "CKR_0x..." spelled out by CkrText for codes without a name here.
std::string_view CkrName(CK_RV rv) noexcept;
// "CKR_PIN_INCORRECT (0xa0)".
std::string CkrText(CK_RV rv);
// "CKM_SHA256_HMAC"; empty when unknown.
std::string_view MechanismName(CK_MECHANISM_TYPE m) noexcept;
std::string MechanismText(CK_MECHANISM_TYPE m);

// Return values after which the session (and the object handles found through it) are gone and a
// new session, possibly a new login, is needed.
bool IsSessionLoss(CK_RV rv) noexcept;

// Maps a PKCS#11 return value to a Status ("C_Sign failed: CKR_KEY_SIZE_RANGE (0x162) ...").
// CKR_OK gives OK. Mapping:
//   PIN problems                              -> kFailedPrecondition, reason "token_unavailable"
//   token gone, session invalid, device error -> kUnavailable, reason "token_unavailable"
//   mechanism / key size / key type problems  -> kFailedPrecondition (a provisioning problem)
//   module closed or not initialised          -> kFailedPrecondition
//   anything else                             -> kInternal
Status CkrStatus(CK_RV rv, std::string_view call);

// State shared by a Module and everything opened from it; sessions, tokens and keys hold it with
// a shared_ptr, so it outlives the Module object if they do, and calls made after Close() fail
// with CKR_CRYPTOKI_NOT_INITIALIZED.
class ModuleCore {
 public:
  enum class Ownership {
    kP11KitManaged,  // p11_kit_module_load/_initialize; Close finalises and releases
    kProxy,          // dlopen()ed p11-kit proxy; Close calls C_Finalize and dlclose
    kBorrowed,       // a function list the caller owns (tests); Close only forgets it
  };

  ModuleCore(CK_FUNCTION_LIST* functions, Ownership ownership, std::string description,
             void* dl_handle = nullptr);
  ~ModuleCore();
  ModuleCore(const ModuleCore&) = delete;
  ModuleCore& operator=(const ModuleCore&) = delete;

  const std::string& description() const noexcept { return description_; }

  template <class Fn>
  CK_RV Invoke(Fn&& fn) noexcept {
    std::shared_lock lock(mu_);
    if (functions_ == nullptr) return CKR_CRYPTOKI_NOT_INITIALIZED;
    ERR_set_mark();
    const CK_RV rv = fn(*functions_);
    ERR_pop_to_mark();
    return rv;
  }

  // Invoke for calls on a session opened in module epoch `epoch`: once the module was initialised
  // again, the handle is dead (and its number may belong to a new session), so the call is not
  // made and CKR_SESSION_HANDLE_INVALID comes back instead.
  template <class Fn>
  CK_RV InvokeInEpoch(std::uint64_t epoch, Fn&& fn) noexcept {
    std::shared_lock lock(mu_);
    if (functions_ == nullptr) return CKR_CRYPTOKI_NOT_INITIALIZED;
    if (epoch != epoch_.load()) return CKR_SESSION_HANDLE_INVALID;
    ERR_set_mark();
    const CK_RV rv = fn(*functions_);
    ERR_pop_to_mark();
    return rv;
  }

  // Finalises the module (once); later Invoke calls return CKR_CRYPTOKI_NOT_INITIALIZED.
  // Waits for calls in flight to return.
  Status Close() noexcept;
  bool closed() const;

  // C_Finalize + C_Initialize, waiting for calls in flight. Some modules read their object store
  // only in C_Initialize (tpm2-pkcs11 1.9 loads every object of its SQLite store there), so
  // objects that another process or an out-of-band tool added stay invisible until then. Every
  // session of the module ends: each TokenCore notices the new epoch() and opens a new session
  // (logging in again) on its next use, and object handles are found again (Session
  // generations). kFailedPrecondition for a borrowed function list or a closed module.
  Status Reinitialize() noexcept;
  // Incremented by every Reinitialize.
  std::uint64_t epoch() const noexcept { return epoch_.load(); }

 private:
  mutable std::shared_mutex mu_;
  std::atomic<std::uint64_t> epoch_{0};
  CK_FUNCTION_LIST* functions_;
  const Ownership ownership_;
  const std::string description_;
  void* dl_handle_;  // kProxy
};

// Access to a Module's core for hsm/ internals, and the test seam.
struct ModuleAccess {
  static const std::shared_ptr<ModuleCore>& core(const Module& m) noexcept { return m.core_; }
  // Wraps a function list that the caller has loaded, initialised and keeps alive; Close() only
  // forgets it. Tests use it to interpose on calls (count C_Login, fake token flags).
  static std::unique_ptr<Module> Borrow(CK_FUNCTION_LIST* functions, std::string description);
};

}  // namespace cakewalk::hsm::internal

// CW_CK_INVOKE(core, C_GetSlotList, CK_TRUE, slots, &n) -> CK_RV
#define CW_CK_INVOKE(core, fn, ...)                             \
  (core).Invoke([&](CK_FUNCTION_LIST& cw_f_) -> CK_RV {         \
    if (cw_f_.fn == nullptr) return CKR_FUNCTION_NOT_SUPPORTED; \
    return cw_f_.fn(__VA_ARGS__);                               \
  })
// CW_CK_CALL(core, C_GetTokenInfo, slot, &info) -> Status
#define CW_CK_CALL(core, fn, ...) \
  ::cakewalk::hsm::internal::CkrStatus(CW_CK_INVOKE(core, fn, __VA_ARGS__), #fn)
