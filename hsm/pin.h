// Where the token's user PIN comes from: a file, never argv or the environment.
#pragma once

#include <filesystem>
#include <optional>

#include "base/secret.h"
#include "base/status.h"

namespace cakewalk::hsm {

inline constexpr std::size_t kMaxPinBytes = 256;

// Reads the user PIN from `pin_file` (configuration `token.pin_file`) when given, else from
// `$CREDENTIALS_DIRECTORY/hsm-pin` (systemd credentials: LoadCredential=/LoadCredentialEncrypted=
// hsm-pin). One trailing newline is dropped. The file must be a regular file that others cannot
// read (SecretBytes::ReadFile's rules). Errors name the file and say what to do.
[[nodiscard]] Result<SecretBytes> ResolvePin(const std::optional<std::filesystem::path>& pin_file);

}  // namespace cakewalk::hsm
