#include "jira/credentials.h"

#include <algorithm>

#include "jira/errors.h"

namespace cakewalk::jira {
namespace {

class TokenCredentialsImpl final : public Credentials {
 public:
  TokenCredentialsImpl(hsm::SecretStore& store, std::string connection)
      : store_(store), connection_(std::move(connection)) {}

  const std::string& connection() const override { return connection_; }

  Result<SecretBytes> Get(std::string_view name, std::string_view purpose) override {
    auto value = store_.Unseal(connection_, name, purpose);
    if (!value.ok()) return Map(value.status(), name);
    return std::move(*value);
  }

  Result<SecretBytes> GetVersion(std::string_view name, std::uint32_t version,
                                 std::string_view purpose) override {
    auto value = store_.UnsealVersion(connection_, name, version, purpose);
    if (!value.ok() && value.status().code() == Code::kNotFound) {
      return Status(Code::kFailedPrecondition,
                    "version " + std::to_string(version) + " of '" + std::string(name) +
                        "' of connection " + connection_ + " is no longer in the token",
                    std::string(reason::kCredentialsMissing));
    }
    if (!value.ok()) return Map(value.status(), name);
    return std::move(*value);
  }

  Result<hsm::TotpCode> Totp(std::uint32_t version, hsm::TotpTime at,
                             std::string_view purpose) override {
    auto code = version == 0 ? store_.Totp(connection_, at, purpose)
                             : store_.TotpVersion(connection_, version, at, purpose);
    if (!code.ok()) return Map(code.status(), secret::kTotp);
    return std::move(*code);
  }

  Result<std::vector<SecretVersion>> Versions(std::string_view name) override {
    auto all = store_.List();
    if (!all.ok()) return Map(all.status(), name);
    std::vector<SecretVersion> out;
    for (const hsm::SecretInfo& info : *all) {
      if (info.connection != connection_ || info.name != name) continue;
      out.push_back({info.version, info.state == hsm::SecretState::kCurrent,
                     info.state == hsm::SecretState::kPending});
    }
    return out;
  }

  Status Put(std::string_view name, const SecretBytes& value) override {
    auto stored = store_.Put(connection_, name, value);
    if (!stored.ok()) return Map(stored.status(), name);
    // Keep the version just replaced (a safety net while the new one is first used); destroy
    // older retired ones.
    auto versions = Versions(name);
    if (!versions.ok()) return Status::Ok();  // stored; tidying up can wait for the next Put
    std::vector<std::uint32_t> retired;
    for (const SecretVersion& v : *versions) {
      if (!v.current && !v.pending && v.version < stored->version) retired.push_back(v.version);
    }
    std::sort(retired.begin(), retired.end());
    if (!retired.empty()) retired.pop_back();
    for (std::uint32_t v : retired) store_.Destroy(connection_, name, v).IgnoreError();
    return Status::Ok();
  }

  Status Promote(std::string_view name, std::uint32_t version) override {
    Status s = store_.Promote(connection_, name, version);
    return s.ok() ? s : Map(s, name);
  }

  Result<SecretBytes> Random(std::size_t size) override {
    auto bytes = store_.Random(size);
    if (!bytes.ok()) return Map(bytes.status(), "random");
    return std::move(*bytes);
  }

 private:
  Status Map(const Status& s, std::string_view name) const {
    if (s.code() == Code::kNotFound) return MissingSecret(connection_, name);
    return Status(s.code(), "the token could not be used: " + s.message(),
                  std::string(reason::kTokenUnavailable));
  }

  hsm::SecretStore& store_;
  const std::string connection_;
};

}  // namespace

Result<SecretBytes> Credentials::GetVersion(std::string_view name, std::uint32_t version,
                                            std::string_view purpose) {
  CW_ASSIGN_OR_RETURN(std::uint32_t current, CurrentVersion(name));
  if (current == 0 || current != version) {
    return Status(Code::kFailedPrecondition,
                  "these credentials serve only the current version of '" + std::string(name) +
                      "', not version " + std::to_string(version),
                  std::string(reason::kTokenUnavailable));
  }
  return Get(name, purpose);
}

Result<std::uint32_t> Credentials::CurrentVersion(std::string_view name) {
  CW_ASSIGN_OR_RETURN(std::vector<SecretVersion> versions, Versions(name));
  for (const SecretVersion& v : versions) {
    if (v.current) return v.version;
  }
  return 0u;
}

std::unique_ptr<Credentials> TokenCredentials(hsm::SecretStore& store, std::string connection) {
  return std::make_unique<TokenCredentialsImpl>(store, std::move(connection));
}

Status MissingSecret(std::string_view connection, std::string_view name) {
  const std::string conn(connection);
  std::string how = name == secret::kTotp ? "cakewalk-agent mfa enroll " + conn
                    : name == secret::kOAuthRefreshToken
                        ? "cakewalk-agent oauth authorize " + conn
                        : "cakewalk-agent secret set " + conn + " " + std::string(name);
  return Status(Code::kFailedPrecondition,
                "connection " + conn + " has no current '" + std::string(name) +
                    "' in the token; store it with: " + how,
                std::string(reason::kCredentialsMissing));
}

}  // namespace cakewalk::jira
