#include "hsm/pin.h"

#include <cstdlib>
#include <string>

namespace cakewalk::hsm {

Result<SecretBytes> ResolvePin(const std::optional<std::filesystem::path>& pin_file) {
  std::filesystem::path path;
  std::string origin;
  if (pin_file.has_value()) {
    if (pin_file->empty()) {
      return InvalidArgument("token.pin_file is empty; give the path of the file holding the PIN");
    }
    path = *pin_file;
    origin = "token.pin_file";
  } else {
    const char* dir = std::getenv("CREDENTIALS_DIRECTORY");
    if (dir == nullptr || *dir == '\0') {
      return FailedPrecondition(
          "no token PIN: token.pin_file is not set and $CREDENTIALS_DIRECTORY is not set. Set "
          "token.pin_file in the configuration to a file readable only by the agent, or run the "
          "agent as its systemd service with LoadCredentialEncrypted=hsm-pin:... (or "
          "LoadCredential=hsm-pin:...)");
    }
    path = std::filesystem::path(dir) / "hsm-pin";
    origin = "the systemd credential hsm-pin";
  }
  Result<SecretBytes> pin =
      SecretBytes::ReadFile(path, kMaxPinBytes, SecretBytes::Trim::kTrailingNewline);
  if (!pin.ok()) {
    std::string hint;
    switch (pin.status().code()) {
      case Code::kNotFound:
        hint = origin == "token.pin_file"
                   ? "; create it (mode 0600, owned by the agent's user) or fix token.pin_file"
                   : "; add LoadCredentialEncrypted=hsm-pin:... to the service (see "
                     "systemd-creds encrypt) or set token.pin_file";
        break;
      case Code::kPermissionDenied:
        hint = "; the file must be readable by the agent's user and by nobody else (chmod 0600)";
        break;
      default:
        break;
    }
    return Status(pin.status().code(), "reading the token PIN from " + origin + " (" +
                                           path.string() + "): " + pin.status().message() + hint);
  }
  if (pin->empty()) {
    return InvalidArgument("the token PIN file " + path.string() + " (" + origin +
                           ") is empty; write the user PIN into it");
  }
  return pin;
}

}  // namespace cakewalk::hsm
