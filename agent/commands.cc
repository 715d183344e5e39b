#include "agent/commands.h"

namespace cakewalk::agent {

Status RunCommand(const CommandArgs& args, const Config* config, CliIo io) {
  const auto& p = args.positional;
  const std::string& c = args.command;
  if (c == "secret set") return CommandSecretSet(*config, p[0], p[1], io);
  if (c == "secret list") return CommandSecretList(*config, args.Flag("--json"), io);
  if (c == "mfa enroll") return CommandMfaEnroll(*config, p[0], io);
  if (c == "mfa code") return CommandMfaCode(*config, p[0], io);
  if (c == "mfa activate") return CommandMfaActivate(*config, p[0], io);
  return Unavailable("'" + c + "' is not available in this build yet").WithReason("usage");
}

}  // namespace cakewalk::agent
