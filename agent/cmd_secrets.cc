// `secret set`, `secret list`, `mfa enroll`, `mfa code`, `mfa activate`.
#include <algorithm>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "agent/commands.h"
#include "agent/token_context.h"
#include "base/json.h"
#include "base/log.h"
#include "base/time.h"
#include "hsm/otpauth.h"
#include "hsm/secret_store.h"

namespace cakewalk::agent {
namespace {

// Which secrets make sense where (operator interface): a typo or a Cloud-only secret on a Data
// Center connection is refused before anything is read or stored.
Status CheckSecretTarget(const Config& config, const std::string& connection,
                         const std::string& name) {
  if (connection == kControlPlaneConnection) {
    if (name != "proxy-password") {
      return InvalidArgument("the connection 'control-plane' holds only 'proxy-password'");
    }
    if (!config.control_plane.proxy_username) {
      return FailedPrecondition(
          "control_plane.proxy_username is not set in " + config.file.string() +
          ", so a proxy password would never be used; set the user name first");
    }
    return Status::Ok();
  }
  const ConnectionConfig* conn = config.FindConnection(connection);
  if (conn == nullptr) {
    std::string names;
    for (const auto& c : config.connections) names += (names.empty() ? "" : ", ") + c.name;
    return NotFound("no connection named '" + connection + "' in " + config.file.string() +
                    (names.empty() ? "" : " (configured: " + names + ")"));
  }
  static const std::map<std::string, std::string> kNames = {
      {"password", "jira-datacenter"}, {"pat", "jira-datacenter"},  {"api-token", "jira-cloud"},
      {"org-api-key", "jira-cloud"},   {"oauth-client-secret", ""}, {"oauth-refresh-token", ""},
  };
  const auto it = kNames.find(name);
  if (it == kNames.end()) {
    return InvalidArgument("'" + name +
                           "' is not a secret name the agent uses; use one of: password, pat "
                           "(Data Center), api-token, org-api-key (Cloud), oauth-client-secret, "
                           "oauth-refresh-token");
  }
  if (!it->second.empty() && it->second != FlavorName(conn->flavor)) {
    return InvalidArgument("'" + name + "' is used only by " + it->second + " connections, and '" +
                           connection + "' is " + std::string(FlavorName(conn->flavor)));
  }
  return Status::Ok();
}

const ConnectionConfig* FindJiraConnection(const Config& config, const std::string& connection,
                                           Status& error) {
  const ConnectionConfig* conn = config.FindConnection(connection);
  if (conn == nullptr) {
    error = NotFound("no connection named '" + connection + "' in " + config.file.string());
  }
  return conn;
}

std::string Age(SysTime created, SysTime now) {
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(now - created).count();
  if (secs < 0) return "0s";
  if (secs < 120) return std::to_string(secs) + "s";
  if (secs < 7200) return std::to_string(secs / 60) + "m";
  if (secs < 2 * 86400) return std::to_string(secs / 3600) + "h";
  return std::to_string(secs / 86400) + "d";
}

Result<std::unique_ptr<TokenContext>> OpenToken(const Config& config) {
  return TokenContext::Open(config, CommandLogSink());
}

void PrintCode(const hsm::TotpCode& code, std::ostream& out) {
  out << code.code.Reveal(SecretAccess::Grant());
}

}  // namespace

Status CommandSecretSet(const Config& config, const std::string& connection,
                        const std::string& name, CliIo io) {
  CW_RETURN_IF_ERROR(CheckSecretTarget(config, connection, name));
  CW_ASSIGN_OR_RETURN(auto ctx, OpenToken(config));
  const std::string prompt = "Value for " + connection + "/" + name + ": ";
  CW_ASSIGN_OR_RETURN(
      SecretBytes value,
      SecretBytes::ReadStdin(prompt, hsm::kMaxSecretBytes, SecretBytes::Trim::kTrailingNewline));
  if (value.empty()) {
    return InvalidArgument("no value was given on standard input; nothing was stored");
  }
  CW_ASSIGN_OR_RETURN(hsm::SecretInfo info, ctx->secrets().Put(connection, name, value));
  io.out << "Stored " << connection << "/" << name << " as version " << info.version
         << ", sealed in token '" << ctx->token().info().label << "'.\n";
  return Status::Ok();
}

Status CommandSecretList(const Config& config, bool json, CliIo io) {
  CW_ASSIGN_OR_RETURN(auto ctx, OpenToken(config));
  CW_ASSIGN_OR_RETURN(std::vector<hsm::SecretInfo> all, ctx->secrets().List());
  const SysTime now = std::chrono::system_clock::now();
  auto note = [&](const hsm::SecretInfo& s) -> std::string {
    if (s.state == hsm::SecretState::kCurrent && now - s.created > config.rotation.max_age) {
      return "older than rotation.max_age_days: rotate it";
    }
    if (s.state == hsm::SecretState::kPending) return "staged, not yet in use";
    return "";
  };
  if (json) {
    Json::Value arr(Json::arrayValue);
    for (const auto& s : all) {
      Json::Value v;
      v["connection"] = s.connection;
      v["name"] = s.name;
      v["version"] = s.version;
      v["state"] = std::string(hsm::SecretStateName(s.state));
      v["kind"] = std::string(hsm::SecretKindName(s.kind));
      v["scheme"] = s.scheme;
      v["created_at"] = FormatRfc3339(s.created);
      v["note"] = note(s);
      arr.append(v);
    }
    io.out << WritePrettyJson(arr) << "\n";
    return Status::Ok();
  }
  if (all.empty()) {
    io.out << "No secrets in token '" << ctx->token().info().label << "' yet.\n";
    return Status::Ok();
  }
  std::ostringstream table;
  table << std::left << std::setw(16) << "CONNECTION" << std::setw(22) << "NAME" << std::setw(8)
        << "VERSION" << std::setw(9) << "STATE" << std::setw(22) << "CREATED" << std::setw(6)
        << "AGE"
        << "NOTE\n";
  for (const auto& s : all) {
    table << std::left << std::setw(16) << s.connection << std::setw(22) << s.name << std::setw(8)
          << s.version << std::setw(9) << hsm::SecretStateName(s.state) << std::setw(22)
          << FormatRfc3339(s.created) << std::setw(6) << Age(s.created, now) << note(s) << "\n";
  }
  io.out << table.str();
  return Status::Ok();
}

Status CommandMfaEnroll(const Config& config, const std::string& connection, CliIo io) {
  Status error;
  const ConnectionConfig* conn = FindJiraConnection(config, connection, error);
  if (conn == nullptr) return error;
  if (!conn->provisioning || !conn->provisioning->mfa_totp) {
    return FailedPrecondition("connection '" + connection +
                              "' does not use two-step verification: set \"mfa\": \"totp\" in "
                              "its provisioning section of " +
                              config.file.string() + " first");
  }
  CW_ASSIGN_OR_RETURN(auto ctx, OpenToken(config));
  CW_ASSIGN_OR_RETURN(
      SecretBytes input,
      SecretBytes::ReadStdin("MFA key (base32 from Jira's \"Can't scan the code?\", or an "
                             "otpauth:// URI): ",
                             8192, SecretBytes::Trim::kWhitespace));
  CW_ASSIGN_OR_RETURN(hsm::TotpSeed seed,
                      hsm::ParseTotpSeedInput(input.RevealString(SecretAccess::Grant())));
  input.Wipe();

  // A connection that already has a working key gets the new one staged: it becomes current
  // after a confirmed 2SV login or `mfa activate`, so a mistyped key never locks the agent out.
  CW_ASSIGN_OR_RETURN(std::vector<hsm::SecretInfo> all, ctx->secrets().List());
  const bool has_current = std::any_of(all.begin(), all.end(), [&](const hsm::SecretInfo& s) {
    return s.connection == connection && s.name == hsm::kTotpSecretName &&
           s.state == hsm::SecretState::kCurrent;
  });
  const auto activation = has_current ? hsm::Activation::kPending : hsm::Activation::kCurrent;
  CW_ASSIGN_OR_RETURN(hsm::SecretInfo info,
                      ctx->secrets().EnrollTotp(connection, seed, activation));
  CW_ASSIGN_OR_RETURN(
      hsm::TotpCode code,
      ctx->secrets().TotpVersion(connection, info.version, std::chrono::system_clock::now(),
                                 "mfa enroll: confirmation code for Jira"));
  io.err << "Stored the MFA key for " << connection << " as version " << info.version << " ("
         << info.scheme << ") in token '" << ctx->token().info().label << "'"
         << (has_current ? ", staged next to the current one" : "") << ".\n"
         << "Enter this code in Jira's \"6-digit code\" field (valid for " << code.remaining.count()
         << " s more):\n";
  PrintCode(code, io.out);
  io.out << "\n";
  if (has_current) {
    io.err << "The new key becomes current after the next successful two-step login, or run: "
              "cakewalk-agent mfa activate "
           << connection << "\n";
  }
  return Status::Ok();
}

Status CommandMfaCode(const Config& config, const std::string& connection, CliIo io) {
  Status error;
  if (FindJiraConnection(config, connection, error) == nullptr) return error;
  CW_ASSIGN_OR_RETURN(auto ctx, OpenToken(config));
  auto code = ctx->secrets().Totp(connection, std::chrono::system_clock::now(),
                                  "mfa code: requested by an operator");
  if (!code.ok()) {
    if (code.status().code() == Code::kNotFound) {
      return NotFound("no MFA key is stored for " + connection +
                      "; run: cakewalk-agent mfa enroll " + connection);
    }
    return code.status();
  }
  PrintCode(*code, io.out);
  io.out << "\n";
  io.err << "(valid for " << code->remaining.count() << " s more; key version " << code->version
         << ")\n";
  return Status::Ok();
}

Status CommandMfaActivate(const Config& config, const std::string& connection, CliIo io) {
  Status error;
  if (FindJiraConnection(config, connection, error) == nullptr) return error;
  CW_ASSIGN_OR_RETURN(auto ctx, OpenToken(config));
  CW_ASSIGN_OR_RETURN(std::vector<hsm::SecretInfo> all, ctx->secrets().List());
  const hsm::SecretInfo* pending = nullptr;
  for (const auto& s : all) {
    if (s.connection == connection && s.name == hsm::kTotpSecretName &&
        s.state == hsm::SecretState::kPending) {
      pending = &s;  // List is sorted by version: the last pending one is the newest
    }
  }
  if (pending == nullptr) {
    return FailedPrecondition("no staged MFA key for " + connection +
                              "; 'mfa enroll' stages one when a current key exists");
  }
  CW_RETURN_IF_ERROR(ctx->secrets().Promote(connection, hsm::kTotpSecretName, pending->version));
  io.out << "MFA key version " << pending->version << " is now current for " << connection << ".\n";
  return Status::Ok();
}

}  // namespace cakewalk::agent
