#include "agent/jws.h"

#include <openssl/err.h>
#include <openssl/evp.h>

#include <algorithm>

#include "agent/executor.h"
#include "base/c_free.h"
#include "base/encoding.h"
#include "base/json.h"

namespace cakewalk::agent {
namespace {

using EvpPkey = CPtr<EVP_PKEY, EVP_PKEY_free>;
using EvpMdCtx = CPtr<EVP_MD_CTX, EVP_MD_CTX_free>;

constexpr std::size_t kMaxHeaderBytes = 4096;
constexpr std::size_t kMaxKidBytes = 128;
constexpr std::size_t kEd25519PublicKeyBytes = 32;
constexpr std::size_t kEd25519SignatureBytes = 64;
// The latest Unix second a claim may name: what SysTime (64-bit nanoseconds) holds, which ends in
// 2262, less a day so that comparisons with the allowed skews never overflow.
constexpr std::int64_t kMaxUnixSeconds =
    std::chrono::duration_cast<std::chrono::seconds>(SysTime::duration::max()).count() - 86400;

Status Reject(const char* reason, std::string message) {
  return Status(Code::kPermissionDenied, std::move(message), reason);
}

struct Segments {
  std::string_view header;
  std::string_view payload;
  std::string_view signature;
};

std::optional<Segments> Split(std::string_view jws) {
  const std::size_t a = jws.find('.');
  if (a == std::string_view::npos) return std::nullopt;
  const std::size_t b = jws.find('.', a + 1);
  if (b == std::string_view::npos) return std::nullopt;
  if (jws.find('.', b + 1) != std::string_view::npos) return std::nullopt;
  return Segments{jws.substr(0, a), jws.substr(a + 1, b - a - 1), jws.substr(b + 1)};
}

SysTime FromUnix(std::int64_t seconds) { return SysTime(std::chrono::seconds(seconds)); }

}  // namespace

bool IsValidJobId(std::string_view id) {
  if (id.empty() || id.size() > 128 || id.front() == '.') return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

// --- SigningKeySet -------------------------------------------------------------------------------

SigningKeySet::SigningKeySet(std::vector<SigningKey> initial, Fetch fetch, const Clock& clock,
                             std::chrono::seconds min_refresh_interval)
    : keys_(std::move(initial)),
      fetch_(std::move(fetch)),
      clock_(clock),
      interval_(min_refresh_interval) {}

std::optional<SigningKey> SigningKeySet::FindCached(std::string_view kid) const {
  std::lock_guard lock(mu_);
  for (const auto& k : keys_) {
    if (k.kid == kid) return k;
  }
  return std::nullopt;
}

std::optional<SigningKey> SigningKeySet::Find(std::string_view kid) {
  if (auto k = FindCached(kid)) return k;
  {
    std::lock_guard lock(mu_);
    if (!fetch_) return std::nullopt;
    const auto now = clock_.Steady();
    if (last_refresh_.has_value() && now - *last_refresh_ < interval_) return std::nullopt;
    // Claimed before the call, so that concurrent lookups do not refresh a second time.
    last_refresh_ = now;
    ++refreshes_;
  }
  Result<std::vector<SigningKey>> fetched = fetch_();
  {
    std::lock_guard lock(mu_);
    if (fetched.ok()) {
      keys_ = std::move(fetched).value();
      last_error_ = Status::Ok();
    } else {
      last_error_ = fetched.status();  // keep the keys we have
    }
  }
  return FindCached(kid);
}

void SigningKeySet::Replace(std::vector<SigningKey> keys) {
  std::lock_guard lock(mu_);
  keys_ = std::move(keys);
}

std::vector<std::string> SigningKeySet::kids() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const auto& k : keys_) out.push_back(k.kid);
  return out;
}

int SigningKeySet::refreshes() const {
  std::lock_guard lock(mu_);
  return refreshes_;
}

Status SigningKeySet::last_refresh_error() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

// --- Verification ------------------------------------------------------------------------------

bool VerifyEd25519(const std::vector<std::uint8_t>& public_key, std::string_view data,
                   const std::vector<std::uint8_t>& signature) {
  if (public_key.size() != kEd25519PublicKeyBytes || signature.size() != kEd25519SignatureBytes) {
    return false;
  }
  EvpPkey key(
      EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, public_key.data(), public_key.size()));
  EvpMdCtx ctx(EVP_MD_CTX_new());
  bool ok = key != nullptr && ctx != nullptr &&
            EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) == 1 &&
            EVP_DigestVerify(ctx.get(), signature.data(), signature.size(),
                             reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
  ERR_clear_error();
  return ok;
}

std::optional<std::string> UnverifiedJobId(std::string_view jws) {
  // Used ONLY to address the `rejected` report of a token that failed verification
  // (docs/protocol.md §7): nothing but `jti` is read, from a bounded, strictly parsed payload, and
  // only an id of the documented form is returned.
  if (jws.size() > kMaxJobTokenBytes) return std::nullopt;
  auto segments = Split(jws);
  if (!segments) return std::nullopt;
  // base64url expands 3 bytes into 4 characters.
  if (segments->payload.size() > kMaxUnverifiedPayloadBytes / 3 * 4 + 4) return std::nullopt;
  auto bytes = Base64UrlDecode(segments->payload);
  if (!bytes.ok()) return std::nullopt;
  auto parsed = ParseJson(AsChars(*bytes), "job payload", kMaxUnverifiedPayloadBytes);
  if (!parsed.ok() || !parsed->isObject()) return std::nullopt;
  const Json::Value& jti = (*parsed)["jti"];
  if (!jti.isString() || !IsValidJobId(jti.asString())) return std::nullopt;
  return jti.asString();
}

VerifyOutcome VerifyJobToken(std::string_view jws, SigningKeySet& keys,
                             const VerifyOptions& options, SysTime now) {
  VerifyOutcome out;
  auto fail = [&](const char* reason, std::string message) -> VerifyOutcome& {
    out.status = Reject(reason, std::move(message));
    if (!out.authentic) out.job_id = UnverifiedJobId(jws).value_or("");
    return out;
  };

  // 1. Form.
  if (jws.size() > kMaxJobTokenBytes)
    return fail(jws_reason::kMalformedJob, "the job is too large");
  auto segments = Split(jws);
  if (!segments) {
    return fail(jws_reason::kMalformedJob, "the job is not a compact JWS (three segments)");
  }
  if (segments->header.size() > kMaxHeaderBytes / 3 * 4 + 4) {
    return fail(jws_reason::kMalformedJob, "the JWS header is too large");
  }
  auto header_bytes = Base64UrlDecode(segments->header);
  auto payload_bytes = Base64UrlDecode(segments->payload);
  auto signature = Base64UrlDecode(segments->signature);
  if (!header_bytes.ok() || !payload_bytes.ok() || !signature.ok()) {
    return fail(jws_reason::kMalformedJob, "a JWS segment is not base64url without padding");
  }
  auto header = ParseJson(AsChars(*header_bytes), "the JWS header", kMaxHeaderBytes);
  if (!header.ok() || !header->isObject()) {
    return fail(jws_reason::kMalformedJob, "the JWS header is not a JSON object");
  }

  // 2. Algorithm: exactly EdDSA; the token never chooses anything else.
  const Json::Value& alg = (*header)["alg"];
  if (!alg.isString() || alg.asString() != "EdDSA") {
    std::string shown = alg.isString() ? alg.asString().substr(0, 32) : "(missing)";
    return fail(jws_reason::kUnsupportedAlg, "alg '" + shown + "' is not accepted (only EdDSA)");
  }
  if (header->isMember("crit")) {
    return fail(jws_reason::kMalformedJob, "the JWS header names critical extensions (crit)");
  }

  // 3. Key.
  const Json::Value& kid_value = (*header)["kid"];
  if (!kid_value.isString() || kid_value.asString().empty() ||
      kid_value.asString().size() > kMaxKidBytes) {
    return fail(jws_reason::kUnknownKid, "the JWS header has no kid");
  }
  const std::string kid = kid_value.asString();
  std::optional<SigningKey> key = keys.Find(kid);
  if (!key) {
    std::string msg = "kid '" + kid + "' names no known job-signing key";
    Status refresh = keys.last_refresh_error();
    if (!refresh.ok()) msg += " (the last key refresh failed)";
    return fail(jws_reason::kUnknownKid, msg);
  }

  // 4. Signature over the ASCII "<header>.<payload>", before anything in the payload is read.
  const std::string_view signing_input =
      jws.substr(0, segments->header.size() + 1 + segments->payload.size());
  if (signature->size() != kEd25519SignatureBytes ||
      !VerifyEd25519(key->public_key, signing_input, *signature)) {
    return fail(jws_reason::kBadSignature, "the job's Ed25519 signature does not verify");
  }

  // 5. Payload: strict JSON, every claim present with its type.
  auto payload = ParseJson(AsChars(*payload_bytes), "the job payload", kMaxJobTokenBytes);
  if (!payload.ok()) return fail(jws_reason::kMalformedJob, payload.status().message());
  if (!payload->isObject()) return fail(jws_reason::kMalformedJob, "the payload is not an object");
  JsonFields f(*payload, "$");
  JobClaims c;
  c.id = f.String("jti", JsonFields::kRequired);
  c.issuer = f.String("iss", JsonFields::kRequired);
  c.audience = f.String("aud", JsonFields::kRequired);
  const std::int64_t iat = f.Int("iat", 0, 0, kMaxUnixSeconds, JsonFields::kRequired);
  const std::int64_t exp = f.Int("exp", 0, 0, kMaxUnixSeconds, JsonFields::kRequired);
  c.type = f.String("type", JsonFields::kRequired);
  c.connection = f.String("connection", JsonFields::kRequired);
  const Json::Value* params = f.Object("params", JsonFields::kRequired);
  if (f.ok() && !IsValidJobId(c.id)) f.Fail("jti", "is not a job id of the documented form");
  // Claims added to the protocol later are tolerated (JWT practice); the ones above are required.
  if (Status s = f.FinishAllowingUnknown(); !s.ok()) {
    return fail(jws_reason::kMalformedJob, "job payload: " + s.message());
  }
  c.issued_at = FromUnix(iat);
  c.expires_at = FromUnix(exp);
  c.params = *params;
  out.authentic = true;
  out.job_id = c.id;
  out.claims = std::move(c);
  const JobClaims& claims = out.claims;

  // 6. Claims.
  if (claims.issuer != options.issuer) {
    return fail(jws_reason::kWrongIssuer, "iss is '" + claims.issuer.substr(0, 64) + "'");
  }
  if (claims.audience != options.agent_id) {
    return fail(jws_reason::kWrongAudience, "the job is for '" + claims.audience.substr(0, 64) +
                                                "', not this agent (" + options.agent_id + ")");
  }
  if (claims.expires_at <= now - options.skew) {
    return fail(jws_reason::kExpired, "the job expired at " + FormatRfc3339(claims.expires_at) +
                                          " (now " + FormatRfc3339(now) + ")");
  }
  if (claims.issued_at > now + options.max_issued_ahead + options.skew) {
    return fail(jws_reason::kNotYetValid,
                "the job was issued at " + FormatRfc3339(claims.issued_at) +
                    ", more than 5 minutes ahead of this agent's clock (" + FormatRfc3339(now) +
                    ")");
  }
  return out;
}

Status CheckLocalPolicy(const JobClaims& claims, const Config& config,
                        const ExecutorRegistry& executors) {
  if (config.FindConnection(claims.connection) == nullptr) {
    return Reject(jws_reason::kConnectionNotConfigured,
                  "connection '" + claims.connection.substr(0, 64) +
                      "' is not in this agent's configuration");
  }
  const bool known = IsProtocolJobType(claims.type);
  if (!known) {
    return Reject(jws_reason::kUnknownType,
                  "job type '" + claims.type.substr(0, 64) + "' is unknown to this agent");
  }
  if (!config.jobs.Allows(claims.type)) {
    return Reject(jws_reason::kPolicyDenied,
                  "job type " + claims.type + " is not in jobs.allowed_types");
  }
  if (claims.type == kJobTypeSecretRotate && !config.jobs.allow_remote_secret_rotation) {
    return Reject(jws_reason::kPolicyDenied,
                  "remote secret rotation is off (jobs.allow_remote_secret_rotation)");
  }
  if (executors.Find(claims.type) == nullptr) {
    return Reject(jws_reason::kUnknownType, "this agent build cannot run " + claims.type + " jobs");
  }
  return Status::Ok();
}

}  // namespace cakewalk::agent
