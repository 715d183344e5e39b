// A private software TPM 2.0 with a tpm2-pkcs11 token for one test (label tpm), the C++ twin of
// scripts/tpm-env.
//
//   auto tpm = Swtpm::Start();                   // processes, store, token; environment set
//   ASSERT_TRUE(tpm.ok()) << tpm.status().ToString();
//   const Swtpm::TokenSpec& t = (*tpm)->token(); // label, uri, pin_file, user_pin
//   auto module = hsm::Module::Load(std::string(Swtpm::kModulePath));
//
// What runs, all in a temp folder and on 127.0.0.1:
//   - swtpm (TPM state in <dir>/state), server and control ports on two free neighbouring ports;
//   - a private dbus-daemon (session configuration, unix:path=<dir>/bus);
//   - tpm2-abrmd on that bus, the resource manager (swtpm holds 3 transient objects; without a
//     resource manager tpm2-pkcs11 fails after two keys). Clients use tabrmd:bus_type=session.
// Each is started with posix_spawn under `setpriv --pdeathsig KILL`, so none outlives a crashed
// test; the destructor stops them (SIGTERM, then SIGKILL) and removes the folder.
//
// Then: the dictionary-attack lockout is relaxed (swtpm locks out for 1000 s after 3 wrong
// authorisations, and every wrong user PIN counts), `tpm2_ptool init` creates the store in
// <dir>/store, and the token is created through PKCS#11 (C_InitToken + C_InitPIN on the empty
// slot tpm2-pkcs11 always offers): tpm2_ptool addtoken would need the PINs on its command line.
// The user PIN (a throw-away test value) is written to a 0600 file.
//
// Start() sets, for the whole process: TPM2_PKCS11_STORE, TPM2_PKCS11_TCTI, TPM2TOOLS_TCTI,
// DBUS_SESSION_BUS_ADDRESS, TPM2_PKCS11_LOG_LEVEL=0, TSS2_LOG=all+NONE and HOME=<dir> (so that
// nothing lands in the real home). One Swtpm per test process (ctest runs each test in its own).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "hsm/cryptoki.h"
#include "tests/support/temp_dir.h"

namespace cakewalk::testing {

class Swtpm {
 public:
  static constexpr const char* kModulePath = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so";
  static constexpr const char* kTcti = "tabrmd:bus_type=session";

  struct TokenSpec {
    std::string label;
    std::string uri;  // "pkcs11:token=<label>"
    std::filesystem::path pin_file;
    std::string user_pin;  // throw-away test PIN
    std::string so_pin;
  };

  // Everything above, with one token labelled `label`.
  static Result<std::unique_ptr<Swtpm>> Start(std::string label = "cakewalk-tpm");
  ~Swtpm();
  Swtpm(const Swtpm&) = delete;
  Swtpm& operator=(const Swtpm&) = delete;

  // Creates one more token in the same store (PKCS#11 C_InitToken). Call it before any
  // hsm::Module of the test loads tpm2-pkcs11, or refresh that module afterwards: tpm2-pkcs11
  // reads its store in C_Initialize.
  Result<TokenSpec> AddToken(const std::string& label);

  const TokenSpec& token() const { return tokens_.front(); }
  const std::filesystem::path& dir() const { return dir_.path(); }
  std::filesystem::path store() const { return dir_.path() / "store"; }
  std::string bus_address() const { return "unix:path=" + (dir_.path() / "bus").string(); }
  // The logs of swtpm, dbus-daemon and tpm2-abrmd, for failure messages.
  std::string Logs() const;
  // Stops the processes now (the destructor does it too). Idempotent.
  void Stop();

 private:
  Swtpm() : dir_("cakewalk-swtpm") {}
  Status Launch();

  TempDir dir_;
  std::vector<pid_t> pids_;  // in start order; stopped in reverse
  std::vector<TokenSpec> tokens_;
};

// Proof that a secret key cannot leave the token, in the form each backend gives it:
//   - CKA_SENSITIVE is TRUE;
//   - reading CKA_VALUE returns no byte: CKR_ATTRIBUTE_SENSITIVE (the specification; SoftHSM),
//     CKR_OK with length 0 (tpm2-pkcs11's secret keys, with a warning on stderr) or
//     CKR_ATTRIBUTE_TYPE_INVALID (tpm2-pkcs11's private keys have no such attribute) — never a
//     non-empty value, for a size query and for a 256-byte buffer alike;
//   - trying to open the key up (CKA_EXTRACTABLE to TRUE, CKA_SENSITIVE to FALSE) is refused, or —
//     where the token allows it, as tpm2-pkcs11 does: its flags are metadata in its store while
//     the value stays inside the TPM — changes nothing readable; the flags are restored;
//   - where the key reports CKA_EXTRACTABLE=TRUE (tpm2-pkcs11 says so for every imported key:
//     TPM2_Import needs fixedTPM/fixedParent clear) or its flags could be changed, there is no
//     export path: C_WrapKey is not supported (CKR_FUNCTION_NOT_SUPPORTED), tried under every AES
//     key the session sees (or a null wrapping key when there is none).
// OK, or a message saying which check failed; `notes` (optional) receives the backend-specific
// facts the proof relied on ("reports CKA_EXTRACTABLE=TRUE", "CKA_EXTRACTABLE can be set by the
// PIN holder", "CKA_SENSITIVE can be cleared by the PIN holder", "C_WrapKey is not supported").
// Works with any module; tests/tpm runs it against tpm2-pkcs11 and SoftHSM, and against
// deliberately exportable SoftHSM keys, which it must refuse.
Status CheckSecretKeyNotExportable(CK_FUNCTION_LIST* f, CK_SESSION_HANDLE session,
                                   CK_OBJECT_HANDLE key, std::vector<std::string>* notes = nullptr);

}  // namespace cakewalk::testing
