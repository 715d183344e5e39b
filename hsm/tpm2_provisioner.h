// The KeyProvisioner of a tpm2-pkcs11 store (internal to hsm/; key_provisioner.h says when it is
// used).
//
// tpm2-pkcs11 keeps its objects in a SQLite store (TPM2_PKCS11_STORE) whose keys are TPM blobs
// wrapped under the store's primary key; secret keys enter it only through its tool, tpm2_ptool
// (Python). tpm2_ptool itself would need the user PIN on its command line and the seed in a file,
// so the agent runs hsm/tpm2_key_helper.py instead: the same Python package (database code and
// object attributes identical to `tpm2_ptool import` / `tpm2_ptool addkey`), with every secret
// passed through pipes and memfds. The helper's header comment lists what was verified.
//
// The secrets the helper hands to tpm2-tools (auth values, the key) sit in memfds, or where
// memfd_create is forbidden in nameless O_TMPFILE files on a tmpfs (ram_dir): never on a disk.
//
// How the helper runs: posix_spawn (never fork: PKCS#11 sessions do not survive it) of
// `/usr/bin/python3 -I -c <helper>`, every descriptor above 2 closed, an environment reduced to
// PATH, LANG, the TCTI variables (TPM2TOOLS_TCTI, else TPM2_PKCS11_TCTI), D-Bus addresses (for
// tpm2-abrmd) and TMPDIR — none of which is secret. The request (PIN and key in base64) is
// written to its standard input from SecretBytes; the answer is one JSON line. A helper that
// does not answer within two minutes is killed.
//
// What remains outside SecretBytes: the helper is a separate process (same user) that holds the
// PIN and the key in Python objects, which cannot be wiped, for about a second; the pipe buffers
// and memfds it uses are kernel memory. It must stay dumpable (tpm2_import opens the key through
// /proc/<helper>/fd/N), so another process of the same user could ptrace it while it runs
// (Yama's default ptrace_scope=1 allows only ancestors). docs/tpm.md discusses this.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "hsm/key_provisioner.h"

namespace cakewalk::hsm::internal {

struct Tpm2StoreOptions {
  std::filesystem::path store;  // the directory holding tpm2_pkcs11.sqlite3
  std::filesystem::path python = "/usr/bin/python3";
  std::vector<std::string> environment;  // NAME=value entries for the helper
  std::chrono::seconds timeout{120};
  // Where the helper keeps secrets it hands to tpm2-tools when memfd_create is not allowed (the
  // agent's unit filters it): a tmpfs, checked by the helper. $RUNTIME_DIRECTORY under systemd
  // (/run/cakewalk-agent), else /dev/shm.
  std::filesystem::path ram_dir = "/dev/shm";
  // false: skip memfd_create and use ram_dir (tests of the hardened path).
  bool use_memfd = true;
};

class Tpm2StoreProvisioner final : public KeyProvisioner {
 public:
  explicit Tpm2StoreProvisioner(Tpm2StoreOptions options) : options_(std::move(options)) {}
  // From this process's environment: TPM2_PKCS11_STORE (required), the TCTI and D-Bus variables.
  static Result<std::unique_ptr<Tpm2StoreProvisioner>> FromEnvironment();

  std::string Describe() const override;
  Status ImportHmac(const ProvisionTarget& target, TotpAlgorithm algorithm, const SecretBytes& key,
                    std::string_view label, std::span<const std::uint8_t> id) override;
  Status Generate(const ProvisionTarget& target, GeneratedKey kind, std::string_view label,
                  std::span<const std::uint8_t> id) override;

  const Tpm2StoreOptions& options() const { return options_; }

 private:
  Status Run(const ProvisionTarget& target, std::string_view op, std::string_view algorithm,
             const SecretBytes* key, std::string_view label, std::span<const std::uint8_t> id);

  Tpm2StoreOptions options_;
};

}  // namespace cakewalk::hsm::internal
