#include "agent/commands.h"

#include <unistd.h>

#include "agent/daemon.h"
#include "agent/enroll.h"
#include "systemd/journal_sink.h"

namespace cakewalk::agent {

LogSink& CommandLogSink() {
  static const std::unique_ptr<LogSink> sink =
      sd::MakeLogSink(access("/run/systemd/journal/socket", W_OK) == 0 ? sd::LogTarget::kJournal
                                                                       : sd::LogTarget::kStderr);
  return *sink;
}

Status RunCommand(const CommandArgs& args, const Config* config, CliIo io) {
  const auto& p = args.positional;
  const std::string& c = args.command;
  if (c == "secret set") return CommandSecretSet(*config, p[0], p[1], io);
  if (c == "secret list") return CommandSecretList(*config, args.Flag("--json"), io);
  if (c == "secret rotate") return CommandSecretRotate(*config, p[0], p[1], io);
  if (c == "mfa enroll") return CommandMfaEnroll(*config, p[0], io);
  if (c == "mfa code") return CommandMfaCode(*config, p[0], io);
  if (c == "mfa activate") return CommandMfaActivate(*config, p[0], io);
  if (c == "run") return RunDaemon(*config, io);
  if (c == "status") return CommandStatus(args.Flag("--json"), io);
  if (c == "doctor") return CommandDoctor(*config, io);
  if (c == "oauth authorize") return CommandOauthAuthorize(*config, p[0], io);
  if (c == "enroll") {
    const auto file = args.values.find("--token-file");
    if (file == args.values.end()) {
      return InvalidArgument(
                 "enroll needs --token-file FILE, or --token-file - to read the one-time token "
                 "from standard input (never give the token itself on the command line)")
          .WithReason("usage");
    }
    EnrollOptions options;
    options.token_file = file->second;
    options.force = args.Flag("--force");
    return RunEnroll(*config, options, io.out, CommandLogSink());
  }
  return Unavailable("'" + c + "' is not available in this build yet").WithReason("usage");
}

}  // namespace cakewalk::agent
