// The commands behind the CLI. agent/cli.cc parses arguments and loads the configuration;
// RunCommand dispatches to one of the functions below, each of which returns a Status whose
// message is the one line the operator sees on failure.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "agent/cli.h"
#include "agent/config.h"
#include "base/log.h"
#include "base/status.h"

namespace cakewalk::agent {

struct CommandArgs {
  std::string command;                        // "secret set"
  std::vector<std::string> positional;        // CONNECTION NAME ...
  std::set<std::string> flags;                // "--json", "--force"
  std::map<std::string, std::string> values;  // "--token-file" -> "-"
  bool needs_config = true;

  bool Flag(const std::string& name) const { return flags.count(name) > 0; }
};

// `config` is null for commands that need none (status).
Status RunCommand(const CommandArgs& args, const Config* config, CliIo io);

// Where commands write audit and log events: the journal when the machine has one (so that every
// use of a secret from the command line is audited there too), else standard error.
LogSink& CommandLogSink();

Status CommandSecretSet(const Config& config, const std::string& connection,
                        const std::string& name, CliIo io);
Status CommandSecretList(const Config& config, bool json, CliIo io);
Status CommandSecretRotate(const Config& config, const std::string& connection,
                           const std::string& name, CliIo io);
Status CommandMfaEnroll(const Config& config, const std::string& connection, CliIo io);
Status CommandMfaCode(const Config& config, const std::string& connection, CliIo io);
Status CommandMfaActivate(const Config& config, const std::string& connection, CliIo io);
Status CommandStatus(bool json, CliIo io);
Status CommandDoctor(const Config& config, CliIo io);
Status CommandOauthAuthorize(const Config& config, const std::string& connection, CliIo io);

}  // namespace cakewalk::agent
