#include "agent/executor.h"

#include <algorithm>
#include <array>

#include "base/json.h"

namespace cakewalk::agent {
namespace {

constexpr std::array<std::string_view, 7> kProtocolTypes = {
    kJobTypeVerify,       kJobTypeProvision,  kJobTypeDeprovision, kJobTypeAddMember,
    kJobTypeRemoveMember, kJobTypeAccessSync, kJobTypeSecretRotate};

constexpr std::array<std::string_view, 16> kErrorCodes = {"invalid_params",
                                                          "user_not_found",
                                                          "ambiguous_user",
                                                          "group_not_found",
                                                          "not_admin",
                                                          "auth_failed",
                                                          "mfa_failed",
                                                          "captcha_required",
                                                          "credentials_missing",
                                                          "rate_limited",
                                                          "jira_unavailable",
                                                          "license_exceeded",
                                                          "unsupported_by_jira_version",
                                                          "token_unavailable",
                                                          "policy_denied",
                                                          "internal"};

constexpr std::array<std::string_view, 3> kTransientCodes = {"rate_limited", "jira_unavailable",
                                                             "token_unavailable"};

constexpr char kStoppedReason[] = "stopped";
// Messages go to the control plane and the journal: keep them to one bounded line.
constexpr std::size_t kMaxMessageBytes = 1000;

template <std::size_t N>
bool Contains(const std::array<std::string_view, N>& list, std::string_view value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

std::string OneLine(std::string_view text) {
  std::string out(text.substr(0, kMaxMessageBytes));
  for (char& c : out) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  return out;
}

}  // namespace

bool IsProtocolJobType(std::string_view type) { return Contains(kProtocolTypes, type); }
bool IsJobErrorCode(std::string_view code) { return Contains(kErrorCodes, code); }
bool IsTransientErrorCode(std::string_view code) { return Contains(kTransientCodes, code); }

Status ExecutorRegistry::Register(std::string type, std::shared_ptr<Executor> executor) {
  if (!IsProtocolJobType(type)) {
    return InvalidArgument("'" + type + "' is not a job type of the protocol");
  }
  if (executor == nullptr) return InvalidArgument("no executor given for " + type);
  if (executors_.count(type) > 0) {
    return AlreadyExists("an executor for " + type + " is already registered");
  }
  executors_.emplace(std::move(type), std::move(executor));
  return Status::Ok();
}

Executor* ExecutorRegistry::Find(std::string_view type) const {
  auto it = executors_.find(type);
  return it == executors_.end() ? nullptr : it->second.get();
}

std::vector<std::string> ExecutorRegistry::Types() const {
  std::vector<std::string> out;
  for (const auto& [type, executor] : executors_) out.push_back(type);
  return out;
}

ReportedError ErrorFromStatus(const Status& status) {
  ReportedError e;
  if (IsJobErrorCode(status.reason())) {
    e.code = status.reason();
    e.message = OneLine(status.message());
  } else {
    e.code = "internal";
    e.message = OneLine(status.ToString());
  }
  if (e.message.empty()) e.message = e.code;
  e.retryable = status.retryable() && IsTransientErrorCode(e.code);
  return e;
}

Status StoppedStatus() {
  return Status(Code::kAborted, "the job was stopped before it finished", kStoppedReason);
}

bool IsStoppedStatus(const Status& status) {
  return status.code() == Code::kAborted && status.reason() == kStoppedReason;
}

Status CheckParams(const Json::Value& params, const std::set<std::string, std::less<>>& allowed) {
  if (!params.isObject()) {
    return Status(Code::kInvalidArgument, "params must be a JSON object", "invalid_params");
  }
  for (const std::string& key : params.getMemberNames()) {
    if (allowed.count(key) == 0) {
      std::string known;
      for (const auto& a : allowed) known += (known.empty() ? "" : ", ") + a;
      return Status(
          Code::kInvalidArgument,
          "unknown parameter '" + OneLine(key.substr(0, 64)) + "'" +
              (known.empty() ? std::string(" (this job takes none)") : " (known: " + known + ")"),
          "invalid_params");
    }
  }
  return Status::Ok();
}

std::vector<std::string> RequiredSecrets(const ConnectionConfig& connection) {
  std::vector<std::string> out;
  if (connection.provisioning.has_value()) {
    const ProvisioningConfig& p = *connection.provisioning;
    out.push_back(p.auth == ProvisioningConfig::Auth::kApiToken ? "api-token" : "password");
    if (p.mfa_totp) out.emplace_back("totp");
    return out;
  }
  if (connection.access_sync.has_value()) {
    switch (connection.access_sync->auth) {
      case AccessSyncConfig::Auth::kOAuth2:
        out = {"oauth-client-secret", "oauth-refresh-token"};
        break;
      case AccessSyncConfig::Auth::kPat:
        out = {"pat"};
        break;
      case AccessSyncConfig::Auth::kApiToken:
        out = {"api-token"};
        break;
      case AccessSyncConfig::Auth::kPassword:
        out = {"password"};
        break;
    }
  }
  return out;
}

Status RecordSink::EmitJson(std::string record_json) {
  CW_ASSIGN_OR_RETURN(Json::Value record, ParseJson(record_json, "access-sync record"));
  return Emit(std::move(record));
}

}  // namespace cakewalk::agent
