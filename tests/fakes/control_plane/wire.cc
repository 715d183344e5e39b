#include "tests/fakes/control_plane/wire.h"

#include <algorithm>
#include <array>
#include <initializer_list>
#include <limits>
#include <optional>

#include "base/json.h"

namespace cakewalk::testing::wire {
namespace {

constexpr std::int64_t kMaxInt = std::numeric_limits<std::int64_t>::max();

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

constexpr std::array<std::string_view, 3> kRetryableCodes = {"rate_limited", "jira_unavailable",
                                                             "token_unavailable"};

constexpr std::array<std::string_view, 7> kJobTypes = {
    "jira.connection.verify", "jira.user.provision",      "jira.user.deprovision",
    "jira.group.add_member",  "jira.group.remove_member", "jira.access_sync",
    "secret.rotate"};

// A shape problem in the request itself: 400.
Status Shape(Status s) {
  if (s.ok()) return s;
  return Status(Code::kInvalidArgument, s.message(), "invalid_request");
}

// Acceptable shape, unacceptable content: 422.
Status Unprocessable(std::string reason, std::string message) {
  return Status(Code::kFailedPrecondition, std::move(message), std::move(reason));
}

Status AsUnprocessable(const Status& s, std::string reason) {
  if (s.ok()) return s;
  return Unprocessable(std::move(reason), s.message());
}

std::string NonEmptyString(JsonFields& f, std::string_view key) {
  std::string v = f.String(key, JsonFields::kRequired);
  if (f.ok() && v.empty()) f.Fail(key, "must not be empty");
  return v;
}

std::string Enum(JsonFields& f, std::string_view key,
                 std::initializer_list<std::string_view> allowed) {
  std::string v = f.String(key, JsonFields::kRequired);
  if (!f.ok()) return v;
  if (std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
    std::string list;
    for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    f.Fail(key, "must be one of " + list + ", found '" + v.substr(0, 64) + "'");
  }
  return v;
}

// Present, and a string or null.
std::optional<std::string> RequiredNullableString(JsonFields& f, std::string_view key) {
  if (f.ok() && !f.Has(key)) f.Fail(key, "is required (null is allowed)");
  return f.NullableString(key);
}

SysTime Time(JsonFields& f, std::string_view key) {
  std::string v = f.String(key, JsonFields::kRequired);
  if (!f.ok()) return {};
  auto t = ParseRfc3339(v);
  if (!t.ok()) {
    f.Fail(key, t.status().message());
    return {};
  }
  return *t;
}

void NullableTime(JsonFields& f, std::string_view key) {
  std::optional<std::string> v = RequiredNullableString(f, key);
  if (f.ok() && v.has_value() && !ParseRfc3339(*v).ok()) {
    f.Fail(key, "is neither null nor an RFC 3339 timestamp");
  }
}

void RequiredStringArray(JsonFields& f, std::string_view key) {
  f.StringArray(key, JsonFields::kRequired);
}

TokenInfo Token(JsonFields& parent) {
  TokenInfo t;
  const Json::Value* v = parent.Object("token", JsonFields::kRequired);
  if (v == nullptr) return t;
  JsonFields f(*v, parent.ChildPath("token"));
  t.manufacturer = f.String("manufacturer", JsonFields::kRequired);
  t.model = f.String("model", JsonFields::kRequired);
  t.serial = f.String("serial", JsonFields::kRequired);
  t.label = f.String("label", JsonFields::kRequired);
  Status s = f.Finish();
  if (!s.ok()) parent.Fail("token", s.message());
  return t;
}

// Runs `check` on every element of the array at `key`, which must be objects.
template <class Check>
void EachObject(JsonFields& f, std::string_view key, Check check) {
  const Json::Value* arr = f.Array(key, JsonFields::kRequired);
  if (arr == nullptr) return;
  for (Json::ArrayIndex i = 0; i < arr->size(); ++i) {
    const std::string path = f.ChildPath(key) + "[" + std::to_string(i) + "]";
    JsonFields item((*arr)[i], path);
    check(item);
    Status s = item.Finish();
    if (!s.ok()) {
      f.Fail(key, s.message());
      return;
    }
  }
}

// {"id", "username", "email", "display_name"[, "active"]} as outputs name a Jira user.
void OutputUser(JsonFields& parent, bool active_required) {
  const Json::Value* v = parent.Object("user", JsonFields::kRequired);
  if (v == nullptr) return;
  JsonFields f(*v, parent.ChildPath("user"));
  NonEmptyString(f, "id");
  RequiredNullableString(f, "username");
  RequiredNullableString(f, "email");
  RequiredNullableString(f, "display_name");
  f.Bool("active", false, active_required ? JsonFields::kRequired : JsonFields::kOptional);
  Status s = f.Finish();
  if (!s.ok()) parent.Fail("user", s.message());
}

}  // namespace

int HttpStatusFor(const Status& status) {
  return status.code() == Code::kFailedPrecondition ? 422 : 400;
}

bool IsKnownErrorCode(std::string_view code) {
  return std::find(kErrorCodes.begin(), kErrorCodes.end(), code) != kErrorCodes.end();
}

bool IsRetryableErrorCode(std::string_view code) {
  return std::find(kRetryableCodes.begin(), kRetryableCodes.end(), code) != kRetryableCodes.end();
}

bool IsKnownJobType(std::string_view type) {
  return std::find(kJobTypes.begin(), kJobTypes.end(), type) != kJobTypes.end();
}

Result<EnrollRequest> ParseEnroll(const Json::Value& body) {
  JsonFields f(body, "$");
  EnrollRequest r;
  r.csr_pem = NonEmptyString(f, "csr");
  r.hostname = NonEmptyString(f, "hostname");
  r.agent_version = NonEmptyString(f, "agent_version");
  r.token = Token(f);
  CW_RETURN_IF_ERROR(Shape(f.Finish()));
  return r;
}

Result<std::string> ParseRenewal(const Json::Value& body) {
  JsonFields f(body, "$");
  std::string csr = NonEmptyString(f, "csr");
  CW_RETURN_IF_ERROR(Shape(f.Finish()));
  return csr;
}

Result<HeartbeatRequest> ParseHeartbeat(const Json::Value& body) {
  JsonFields f(body, "$");
  HeartbeatRequest h;
  h.agent_version = NonEmptyString(f, "agent_version");
  h.uptime_seconds = f.Int("uptime_seconds", 0, 0, kMaxInt, JsonFields::kRequired);
  h.certificate_expires_at = Time(f, "certificate_expires_at");
  h.token = Token(f);
  EachObject(f, "connections", [](JsonFields& c) {
    NonEmptyString(c, "name");
    Enum(c, "type", {"jira-datacenter", "jira-cloud"});
    Enum(c, "status", {"ok", "error"});
    c.OptionalString("detail");
  });
  EachObject(f, "secrets", [](JsonFields& s) {
    NonEmptyString(s, "connection");
    NonEmptyString(s, "name");
    s.Int("version", 0, 1, kMaxInt, JsonFields::kRequired);
    Time(s, "created_at");
  });
  if (const Json::Value* jobs = f.Object("jobs", JsonFields::kRequired)) {
    JsonFields j(*jobs, f.ChildPath("jobs"));
    h.jobs_running = j.Int("running", 0, 0, kMaxInt, JsonFields::kRequired);
    h.results_pending = j.Int("results_pending", 0, 0, kMaxInt, JsonFields::kRequired);
    Status s = j.Finish();
    if (!s.ok()) f.Fail("jobs", s.message());
  }
  CW_RETURN_IF_ERROR(Shape(f.Finish()));
  return h;
}

Result<ClaimRequest> ParseClaim(const Json::Value& body) {
  JsonFields f(body, "$");
  ClaimRequest c;
  c.max_jobs = static_cast<int>(f.Int("max_jobs", 1, 1, 100, JsonFields::kRequired));
  c.wait_seconds = static_cast<int>(f.Int("wait_seconds", 0, 0, 60, JsonFields::kRequired));
  CW_RETURN_IF_ERROR(Shape(f.Finish()));
  return c;
}

Result<std::string> ParseLeaseExtension(const Json::Value& body) {
  JsonFields f(body, "$");
  std::string lease = NonEmptyString(f, "lease_id");
  CW_RETURN_IF_ERROR(Shape(f.Finish()));
  return lease;
}

Status ValidateRecord(const Json::Value& record, const std::string& path) {
  JsonFields f(record, path);
  const std::string kind = Enum(f, "kind", {"user", "group", "credential"});
  if (!f.ok()) return AsUnprocessable(f.Finish(), "invalid_record");
  NonEmptyString(f, "id");
  if (kind == "user") {
    RequiredNullableString(f, "username");
    RequiredNullableString(f, "email");
    f.String("display_name", JsonFields::kRequired);
    f.Bool("active", false, JsonFields::kRequired);
    const bool human = f.Bool("human", false, JsonFields::kRequired);
    std::optional<std::string> nhi = RequiredNullableString(f, "nhi_type");
    if (f.ok() && nhi.has_value()) {
      constexpr std::array<std::string_view, 5> kNhi = {"app", "service_account", "bot", "system",
                                                        "customer"};
      if (std::find(kNhi.begin(), kNhi.end(), *nhi) == kNhi.end()) {
        f.Fail("nhi_type", "must be null, app, service_account, bot, system or customer");
      }
    }
    if (f.ok() && human == nhi.has_value()) {
      f.Fail("nhi_type", human ? "must be null for a human user"
                               : "must name the kind of non-human identity when human is false");
    }
    RequiredStringArray(f, "groups");
    RequiredStringArray(f, "products");
    RequiredStringArray(f, "permissions");
    Enum(f, "level", {"system_admin", "admin", "user", "no_access"});
    NullableTime(f, "last_login");
    f.NullableString("nhi_reason");
  } else if (kind == "group") {
    f.String("name", JsonFields::kRequired);
    f.Int("member_count", 0, 0, kMaxInt, JsonFields::kRequired);
  } else {
    Enum(f, "nhi_type", {"personal_access_token", "api_token", "oauth_client", "application_link"});
    f.String("name", JsonFields::kRequired);
    RequiredNullableString(f, "owner_id");
    NullableTime(f, "created_at");
    NullableTime(f, "expires_at");
    NullableTime(f, "last_used_at");
  }
  return AsUnprocessable(f.Finish(), "invalid_record");
}

Result<RecordsRequest> ParseRecords(const Json::Value& body) {
  JsonFields f(body, "$");
  RecordsRequest r;
  r.lease_id = NonEmptyString(f, "lease_id");
  r.seq = f.Int("seq", 0, 0, kMaxInt, JsonFields::kRequired);
  const Json::Value* records = f.Array("records", JsonFields::kRequired);
  CW_RETURN_IF_ERROR(Shape(f.Finish()));
  if (records->size() > static_cast<Json::ArrayIndex>(kMaxRecordsPerCall)) {
    return Unprocessable("too_many_records", "$.records: " + std::to_string(records->size()) +
                                                 " records in one call; at most " +
                                                 std::to_string(kMaxRecordsPerCall) +
                                                 " are accepted");
  }
  for (Json::ArrayIndex i = 0; i < records->size(); ++i) {
    CW_RETURN_IF_ERROR(ValidateRecord((*records)[i], "$.records[" + std::to_string(i) + "]"));
  }
  r.records = *records;
  return r;
}

Status ValidateOutput(std::string_view job_type, const Json::Value& output) {
  JsonFields f(output, "$.output");
  if (job_type == "jira.connection.verify") {
    Enum(f, "flavor", {"datacenter", "cloud"});
    f.String("server_version", JsonFields::kRequired);
    if (const Json::Value* acct = f.Object("account", JsonFields::kRequired)) {
      JsonFields a(*acct, f.ChildPath("account"));
      NonEmptyString(a, "id");
      RequiredNullableString(a, "username");
      RequiredNullableString(a, "email");
      RequiredNullableString(a, "display_name");
      Status s = a.Finish();
      if (!s.ok()) f.Fail("account", s.message());
    }
    if (f.ok() && !f.Bool("admin", false, JsonFields::kRequired) && f.ok()) {
      f.Fail("admin", "a successful verification means the account is an admin (else not_admin)");
    }
    f.Bool("system_admin", false, JsonFields::kRequired);
    Enum(f, "mfa", {"totp", "none"});
    std::string sync = f.String("access_sync_auth", JsonFields::kRequired);
    if (f.ok() && sync != "ok" && !IsKnownErrorCode(sync)) {
      f.Fail("access_sync_auth", "must be \"ok\" or an error code");
    }
    f.Int("clock_skew_seconds", 0, std::numeric_limits<std::int64_t>::min(), kMaxInt,
          JsonFields::kRequired);
  } else if (job_type == "jira.user.provision") {
    OutputUser(f, /*active_required=*/true);
    f.Bool("created", false, JsonFields::kRequired);
    RequiredStringArray(f, "groups_added");
    RequiredStringArray(f, "groups_already");
    RequiredStringArray(f, "products_granted");
    RequiredStringArray(f, "products_already");
  } else if (job_type == "jira.user.deprovision") {
    OutputUser(f, /*active_required=*/false);
    RequiredStringArray(f, "groups_removed");
    RequiredStringArray(f, "products_revoked");
    f.Bool("deactivated", false, JsonFields::kRequired);
    f.Bool("deleted", false, JsonFields::kRequired);
    f.Bool("already", false, JsonFields::kRequired);
  } else if (job_type == "jira.group.add_member" || job_type == "jira.group.remove_member") {
    OutputUser(f, /*active_required=*/false);
    NonEmptyString(f, "group");
    f.Bool("changed", false, JsonFields::kRequired);
  } else if (job_type == "jira.access_sync") {
    if (const Json::Value* counts = f.Object("counts", JsonFields::kRequired)) {
      JsonFields c(*counts, f.ChildPath("counts"));
      for (std::string_view k : {"users", "groups", "non_human", "credentials"}) {
        c.Int(k, 0, 0, kMaxInt, JsonFields::kRequired);
      }
      Status s = c.Finish();
      if (!s.ok()) f.Fail("counts", s.message());
    }
    f.Int("records", 0, 0, kMaxInt, JsonFields::kRequired);
    f.Int("pages", 0, 0, kMaxInt, JsonFields::kRequired);
    std::string sha = f.String("sha256", JsonFields::kRequired);
    if (f.ok() &&
        (sha.size() != 64 || sha.find_first_not_of("0123456789abcdef") != std::string::npos)) {
      f.Fail("sha256", "must be 64 lower-case hex digits");
    }
    f.Int("duration_ms", 0, 0, kMaxInt, JsonFields::kRequired);
    // Optional: what the sync could not see ({"code": snake_case, "message"}), e.g. the users a
    // Jira 10.0-10.2 enumeration through groups cannot reach.
    if (const Json::Value* warnings = f.Array("warnings")) {
      for (Json::ArrayIndex i = 0; i < warnings->size(); ++i) {
        const std::string path = f.ChildPath("warnings") + "[" + std::to_string(i) + "]";
        if (!(*warnings)[i].isObject()) {
          f.Fail("warnings", "each warning must be an object");
          break;
        }
        JsonFields w((*warnings)[i], path);
        const std::string code = NonEmptyString(w, "code");
        if (w.ok() &&
            code.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos) {
          w.Fail("code", "must be snake_case");
        }
        w.String("message", JsonFields::kRequired);
        Status s = w.Finish();
        if (!s.ok()) {
          f.Merge(s);
          break;
        }
      }
    }
  } else if (job_type == "secret.rotate") {
    Enum(f, "secret", {"password"});
    f.Int("version", 0, 1, kMaxInt, JsonFields::kRequired);
    if (f.ok() && !f.Bool("verified", false, JsonFields::kRequired) && f.ok()) {
      f.Fail("verified", "a successful rotation is verified");
    }
  } else {
    // A type the protocol does not define: any object.
    return output.isObject() ? Status::Ok()
                             : Unprocessable("invalid_output", "$.output: expected an object");
  }
  return AsUnprocessable(f.Finish(), "invalid_output");
}

Result<ResultRequest> ParseResult(const Json::Value& body, std::string_view job_type,
                                  bool validate_output) {
  JsonFields f(body, "$");
  ResultRequest r;
  r.lease_id = NonEmptyString(f, "lease_id");
  r.status = Enum(f, "status", {"succeeded", "failed", "rejected"});
  r.started_at = Time(f, "started_at");
  r.finished_at = Time(f, "finished_at");
  const bool success = r.status == "succeeded";
  const Json::Value* output =
      f.Object("output", success ? JsonFields::kRequired : JsonFields::kOptional);
  const Json::Value* error =
      f.Object("error", success ? JsonFields::kOptional : JsonFields::kRequired);
  if (f.ok() && success && error != nullptr) f.Fail("error", "must be absent when succeeded");
  if (f.ok() && !success && output != nullptr) {
    f.Fail("output", "must be absent unless succeeded");
  }
  std::string code;
  bool retryable = false;
  if (f.ok() && error != nullptr) {
    JsonFields e(*error, "$.error");
    code = NonEmptyString(e, "code");
    NonEmptyString(e, "message");
    retryable = e.Bool("retryable", false, JsonFields::kRequired);
    Status s = e.Finish();
    if (!s.ok()) f.Fail("error", s.message());
  }
  CW_RETURN_IF_ERROR(Shape(f.Finish()));

  if (r.finished_at < r.started_at) {
    return Unprocessable("invalid_result", "$.finished_at is before $.started_at");
  }
  if (r.status == "failed") {
    if (!IsKnownErrorCode(code)) {
      return Unprocessable("unknown_error_code",
                           "$.error.code: '" + code.substr(0, 64) + "' is not a documented code");
    }
    if (retryable && !IsRetryableErrorCode(code)) {
      return Unprocessable("invalid_result",
                           "$.error.retryable: '" + code + "' is not a transient cause");
    }
  } else if (r.status == "rejected") {
    const bool snake =
        !code.empty() && code[0] >= 'a' && code[0] <= 'z' &&
        code.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") == std::string::npos;
    if (!snake) {
      return Unprocessable("invalid_result",
                           "$.error.code: a rejection reason is a snake_case code");
    }
    if (retryable) {
      return Unprocessable("invalid_result", "$.error.retryable: a rejected job is not retryable");
    }
  }
  if (success) {
    r.output = *output;
    if (validate_output) CW_RETURN_IF_ERROR(ValidateOutput(job_type, *output));
  } else {
    r.error = *error;
  }
  return r;
}

}  // namespace cakewalk::testing::wire
