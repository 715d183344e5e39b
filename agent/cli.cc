#include "agent/cli.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <iomanip>
#include <map>
#include <ostream>
#include <set>
#include <sstream>

#include "agent/commands.h"
#include "agent/config.h"
#include "agent/version.h"
#include "hsm/token.h"

namespace cakewalk::agent {
namespace {

constexpr char kUsage[] =
    "usage: cakewalk-agent [--config FILE] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  run                              the daemon, in the foreground (systemd runs this)\n"
    "  enroll --token-file F|- [--force]\n"
    "                                   create the agent's key in the token and enroll with the\n"
    "                                   control plane using a one-time enrollment token\n"
    "  secret set CONNECTION NAME       store a secret in the token, read from standard input\n"
    "  secret list [--json]             the secrets' metadata (never a value)\n"
    "  secret rotate CONNECTION password\n"
    "                                   rotate the Jira password through the token\n"
    "  mfa enroll CONNECTION            store the Jira MFA key (base32 or otpauth:// URI, from\n"
    "                                   standard input) and print the current code\n"
    "  mfa code CONNECTION              print the current one-time code, computed in the token\n"
    "  mfa activate CONNECTION          make a newly enrolled (pending) MFA key the current one\n"
    "  oauth authorize CONNECTION       OAuth 2.0 authorization for Access Sync (no inbound port)\n"
    "  status [--json]                  the running daemon's state, over D-Bus\n"
    "  doctor                           check configuration, token, secrets, reachability and\n"
    "                                   certificates; one line per check\n"
    "  version                          print the version\n"
    "\n"
    "Global option: --config FILE (default /etc/cakewalk-agent/agent.json).\n"
    "Secrets are never taken from the command line or the environment.\n";

// The commands' argument shapes, checked before anything is opened.
struct CommandSpec {
  std::string name;                   // "secret set"
  std::size_t positional;             // required positional arguments
  std::set<std::string> flags;        // boolean flags
  std::set<std::string> value_flags;  // flags with a value
  bool needs_config = true;
};

const std::vector<CommandSpec>& Specs() {
  static const std::vector<CommandSpec> specs = {
      {"run", 0, {}, {}},
      {"enroll", 0, {"--force"}, {"--token-file"}},
      {"secret set", 2, {}, {}},
      {"secret list", 0, {"--json"}, {}},
      {"secret rotate", 2, {}, {}},
      {"mfa enroll", 1, {}, {}},
      {"mfa code", 1, {}, {}},
      {"mfa activate", 1, {}, {}},
      {"oauth authorize", 1, {}, {}},
      {"status", 0, {"--json"}, {}, false},
      {"doctor", 0, {}, {}},
      {"version", 0, {}, {}, false},
      {"help", 0, {}, {}, false},
  };
  return specs;
}

Status Usage(const std::string& problem) {
  return InvalidArgument(problem + " (run 'cakewalk-agent help' for usage)").WithReason("usage");
}

// Splits `args` (after global options) into the command and its parsed arguments.
Result<CommandArgs> ParseCommand(const std::vector<std::string>& args, std::size_t start) {
  if (start >= args.size()) return Usage("no command given");
  const CommandSpec* spec = nullptr;
  std::size_t next = start;
  for (const CommandSpec& s : Specs()) {
    const auto space = s.name.find(' ');
    if (space == std::string::npos) {
      if (args[start] == s.name) {
        spec = &s;
        next = start + 1;
        break;
      }
    } else if (args[start] == s.name.substr(0, space) && start + 1 < args.size() &&
               args[start + 1] == s.name.substr(space + 1)) {
      spec = &s;
      next = start + 2;
      break;
    }
  }
  if (spec == nullptr) {
    std::string group;
    for (const CommandSpec& s : Specs()) {
      if (s.name.rfind(args[start] + " ", 0) == 0) group += (group.empty() ? "" : ", ") + s.name;
    }
    if (!group.empty()) {
      return Usage("'" + args[start] + "' needs a subcommand: " + group);
    }
    return Usage("unknown command '" + args[start] + "'");
  }
  CommandArgs parsed;
  parsed.command = spec->name;
  parsed.needs_config = spec->needs_config;
  for (std::size_t i = next; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) == 0 && a.size() > 2) {
      std::string name = a;
      std::optional<std::string> value;
      if (const auto eq = a.find('='); eq != std::string::npos) {
        name = a.substr(0, eq);
        value = a.substr(eq + 1);
      }
      if (spec->flags.count(name) > 0 && !value) {
        parsed.flags.insert(name);
      } else if (spec->value_flags.count(name) > 0) {
        if (!value) {
          if (i + 1 >= args.size()) return Usage(name + " needs a value");
          value = args[++i];
        }
        parsed.values[name] = *value;
      } else {
        return Usage("'" + spec->name + "' does not take the option " + name);
      }
    } else {
      parsed.positional.push_back(a);
    }
  }
  if (parsed.positional.size() != spec->positional) {
    return Usage("'" + spec->name + "' takes " + std::to_string(spec->positional) +
                 " argument(s), got " + std::to_string(parsed.positional.size()));
  }
  return parsed;
}

}  // namespace

int ExitCodeFor(const Status& status) {
  if (status.ok()) return kExitOk;
  const std::string& reason = status.reason();
  if (reason == "usage") return kExitUsage;
  if (reason == "config_invalid") return kExitConfig;
  if (reason == hsm::kPinIncorrectReason || reason == "pin_locked" || reason == "pin_final_try" ||
      reason == "pin_to_be_changed" || reason == "pin_not_set") {
    return kExitTokenPin;
  }
  return kExitFailure;
}

int RunCli(const std::vector<std::string>& args, CliIo io) {
  std::filesystem::path config_path = kDefaultConfigPath;
  std::size_t i = 0;
  Status status;
  while (i < args.size() && args[i].rfind("--", 0) == 0) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      io.out << kUsage;
      return kExitOk;
    }
    if (a == "--version") {
      io.out << "cakewalk-agent " << kAgentVersion << "\n";
      return kExitOk;
    }
    if (a == "--config" && i + 1 < args.size()) {
      config_path = args[i + 1];
      i += 2;
    } else if (a.rfind("--config=", 0) == 0) {
      config_path = a.substr(9);
      ++i;
    } else if (a == "--config") {
      status = Usage("--config needs a file name");
      break;
    } else {
      status = Usage("unknown option " + a);
      break;
    }
  }
  Result<CommandArgs> parsed = status.ok() ? ParseCommand(args, i) : Result<CommandArgs>(status);
  if (!parsed.ok()) {
    io.err << "cakewalk-agent: " << parsed.status().message() << "\n";
    return ExitCodeFor(parsed.status());
  }
  if (parsed->command == "help") {
    io.out << kUsage;
    return kExitOk;
  }
  if (parsed->command == "version") {
    io.out << "cakewalk-agent " << kAgentVersion << "\n";
    return kExitOk;
  }

  std::optional<Config> config;
  if (parsed->needs_config) {
    auto loaded = LoadConfig(config_path, ConfigEnvironment::FromProcess());
    if (!loaded.ok()) {
      io.err << "cakewalk-agent: " << loaded.status().message() << "\n";
      return kExitConfig;
    }
    config = std::move(loaded).value();
  }
  status = RunCommand(*parsed, config ? &*config : nullptr, io);
  if (!status.ok()) {
    io.err << "cakewalk-agent: " << status.message() << "\n";
  }
  return ExitCodeFor(status);
}

}  // namespace cakewalk::agent
