// The command line of cakewalk-agent: `cakewalk-agent [--config FILE] COMMAND [ARGS]`.
//
// Exit status: 0 on success; otherwise one clear line on standard error (what failed and what to
// do) and one of the codes below. systemd's unit prevents restarts on kExitTokenPin and
// kExitConfig, so that a restart loop can never lock the token.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "base/status.h"

namespace cakewalk::agent {

enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,    // the operation failed; the message says why
  kExitUsage = 64,     // EX_USAGE: wrong arguments
  kExitTokenPin = 77,  // EX_NOPERM: token PIN incorrect, or the token refuses a login
  kExitConfig = 78,    // EX_CONFIG: the configuration file is invalid
};

struct CliIo {
  std::ostream& out;
  std::ostream& err;
};

// Parses arguments and runs one command. `args` excludes the program name.
int RunCli(const std::vector<std::string>& args, CliIo io);

// Maps a failed Status to the exit code the command returns.
int ExitCodeFor(const Status& status);

}  // namespace cakewalk::agent
