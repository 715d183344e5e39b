// A loaded PKCS#11 module (through p11-kit), and the teardown contract every user must follow.
//
//   CW_ASSIGN_OR_RETURN(auto module, hsm::Module::Load(config.token.module));
//   CW_ASSIGN_OR_RETURN(auto pin, hsm::ResolvePin(config.token.pin_file));
//   CW_ASSIGN_OR_RETURN(auto token, hsm::Token::Open(*module, config.token.uri, std::move(pin)));
//   ...
//   // teardown, in reverse: provider keys, SecretStore, Token, then
//   module->Close().IgnoreError();
//
// Which module (`token.module` in the configuration):
//   - a path (anything containing '/'): that file, loaded with p11_kit_module_load();
//   - a p11-kit module name ("softhsm2", as `p11-kit list-modules` shows it): looked up in
//     p11-kit's registry;
//   - absent: p11-kit's proxy, which offers the slots of every registered module. Prefer a path:
//     the proxy also loads modules such as tpm2-pkcs11 that misbehave on hosts without a TPM.
//
// TEARDOWN CONTRACT (for agent/main.cc and the OpenSSL provider in hsm/provider.*):
//   1. OpenSSL unloads providers from its atexit handler, which runs AFTER the C++ static
//      destructors of a dlopen()ed module such as SoftHSM; any PKCS#11 call from there
//      (C_Logout, C_Finalize, even C_Sign) can crash the process.
//   2. Therefore Module::Load registers an atexit handler (after the module's dlopen, so it runs
//      before the module's own destructors) that closes every Module still open. Close()
//      finalises the module exactly once; it is idempotent and thread-safe (it waits for calls
//      in flight).
//   3. After Close(), every object derived from the module (Token, SecretStore, KeyPair and any
//      TokenKey the provider holds) stays safe to use and to destroy: calls return a
//      kFailedPrecondition Status ("the PKCS#11 module is closed") instead of touching the
//      module. Those objects share ownership of the module's internal state, so destroying them
//      in any order, or after the Module object itself, is safe.
//   4. Destructors of Token, SecretStore and KeyPair make no call that needs the module once it
//      is closed; a Token's destructor closes its session (never C_Logout, which would log out
//      other Tokens on the same token in this process).
//   5. The provider should still not sign after Close() (it gets an error, not a crash) and
//      should make no module call from its own teardown.
//   6. Never fork() after Load: PKCS#11 sessions do not survive fork. Use posix_spawn.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "base/status.h"

namespace cakewalk::hsm {

namespace internal {
class ModuleCore;
struct ModuleAccess;
}  // namespace internal

class Module {
 public:
  // Loads and initialises the module named by `spec` (see above). Errors name the module and say
  // what to configure.
  [[nodiscard]] static Result<std::unique_ptr<Module>> Load(const std::optional<std::string>& spec);

  ~Module();  // Close()
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // "PKCS#11 module /usr/lib/softhsm/libsofthsm2.so", "p11-kit module 'softhsm2' (...)",
  // "p11-kit proxy (...)".
  const std::string& description() const;

  // Finalises the module. Idempotent; later calls through anything opened from this module fail
  // cleanly with kFailedPrecondition.
  Status Close();
  bool closed() const;

 private:
  friend struct internal::ModuleAccess;
  explicit Module(std::shared_ptr<internal::ModuleCore> core);

  std::shared_ptr<internal::ModuleCore> core_;
};

}  // namespace cakewalk::hsm
