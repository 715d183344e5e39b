// Control-plane answers (agent/control_plane.h): every ControlPlaneClient call fed answers from a
// response script (fuzz_support.h), plus ParseSigningKey on any JSON object an answer holds.
//
// Input: first line names the call to start with (enroll, certificate, signing-keys, claim,
// lease, records, result, heartbeat); the calls then go round in that order, one answer each.
// Properties: a failed call carries one of the documented reasons (cp_reason::* or a transport
// reason); a Retry-After is honoured only up to 15 minutes; accepted answers have the documented
// shape (non-empty ids and chains, 32-byte Ed25519 keys with unique kids, at most max_jobs jobs).
#include <array>
#include <set>
#include <string>

#include "agent/control_plane.h"
#include "base/json.h"
#include "tests/fuzz/fuzz_support.h"

using cakewalk::fuzz::FuzzCheck;
using namespace cakewalk::agent;

namespace {

constexpr std::array<std::string_view, 8> kCalls = {
    "enroll", "certificate", "signing-keys", "claim", "lease", "records", "result", "heartbeat"};
constexpr int kMaxJobs = 3;

void CheckFailure(const cakewalk::Status& s) {
  if (s.ok()) return;
  static const std::set<std::string, std::less<>> kReasons = {
      cp_reason::kConflict,
      cp_reason::kIdentityRejected,
      cp_reason::kRateLimited,
      cp_reason::kServerError,
      cp_reason::kRequestRejected,
      cakewalk::http::reason::kProtocol,
      cakewalk::http::reason::kTimeout,
      cakewalk::http::reason::kTlsVerifyFailed,
      cakewalk::http::reason::kConnectFailed,
      cakewalk::http::reason::kResponseTooLarge,
  };
  FuzzCheck(kReasons.count(s.reason()) == 1, "a failure carries a documented reason");
  if (auto wait = s.retry_after()) {
    FuzzCheck(*wait >= std::chrono::milliseconds(0) && *wait <= std::chrono::minutes(15),
              "Retry-After is honoured within [0, 15 min]");
  }
}

void CheckKeys(const std::vector<SigningKey>& keys) {
  std::set<std::string> kids;
  for (const auto& k : keys) {
    FuzzCheck(k.public_key.size() == 32, "an Ed25519 key has 32 bytes");
    FuzzCheck(!k.kid.empty() && kids.insert(k.kid).second, "kids are present and unique");
  }
}

void Call(ControlPlaneClient& client, std::string_view call) {
  if (call == "enroll") {
    EnrollRequest request{"-----BEGIN CERTIFICATE REQUEST-----\n",
                          "host",
                          "0.1.0",
                          {"SoftHSM project", "SoftHSM v2", "0123", "cakewalk"}};
    auto r =
        client.Enroll(cakewalk::SecretBytes::CopyOf(std::string_view("enroll-token")), request);
    CheckFailure(r.status());
    if (r.ok()) {
      FuzzCheck(!r->agent_id.empty() && !r->certificate_chain_pem.empty(), "enrollment answer");
      FuzzCheck(r->poll_wait_seconds >= 0 && r->poll_wait_seconds <= 60, "poll wait in range");
      CheckKeys(r->signing_keys);
    }
  } else if (call == "certificate") {
    auto r = client.RenewCertificate("-----BEGIN CERTIFICATE REQUEST-----\n");
    CheckFailure(r.status());
    if (r.ok()) FuzzCheck(!r->empty(), "a renewed chain is not empty");
  } else if (call == "signing-keys") {
    auto r = client.SigningKeys();
    CheckFailure(r.status());
    if (r.ok()) CheckKeys(*r);
  } else if (call == "claim") {
    auto r = client.Claim(kMaxJobs, 0);
    CheckFailure(r.status());
    if (r.ok()) {
      FuzzCheck(r->size() <= kMaxJobs, "never more jobs than asked for");
      for (const auto& j : *r) FuzzCheck(!j.jws.empty() && !j.lease_id.empty(), "claimed job");
    }
  } else if (call == "lease") {
    CheckFailure(client.ExtendLease("job_1", "lease_1").status());
  } else if (call == "records") {
    CheckFailure(client.PostRecordTexts("job_1", "lease_1", 0, {}));
  } else if (call == "result") {
    JobResult result;
    result.lease_id = "lease_1";
    result.outcome = JobResult::Outcome::kFailed;
    result.error = {"jira_unavailable", "Jira answered 503", true};
    CheckFailure(client.PostResult("job_1", result));
  } else {
    Json::Value body(Json::objectValue);
    body["agent_version"] = "0.1.0";
    CheckFailure(client.Heartbeat(body).status());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text = cakewalk::fuzz::AsText(data, size);
  const std::string_view first = cakewalk::fuzz::TakeLine(text);
  auto answers = cakewalk::fuzz::ParseScript(text, 16);

  // JWKs exactly as they would sit in a key set.
  for (const auto& a : answers) {
    auto json = cakewalk::ParseJson(a.response.body, "body");
    if (!json.ok() || !json->isObject()) continue;
    const Json::Value& keys = (*json)["job_signing_keys"];
    if (!keys.isArray()) continue;
    for (const auto& jwk : keys) {
      if (auto k = ParseSigningKey(jwk, "$.job_signing_keys[0]"); k.ok()) {
        FuzzCheck(k->public_key.size() == 32, "a parsed JWK has a 32-byte key");
      }
    }
  }

  std::size_t start = 0;
  for (std::size_t i = 0; i < kCalls.size(); ++i) {
    if (kCalls[i] == first) start = i;
  }
  const std::size_t calls = answers.size();
  cakewalk::fuzz::ScriptedTransport transport(std::move(answers));
  ControlPlaneClient client(transport, "https://cp.example/agent/v1");
  for (std::size_t i = 0; i < calls; ++i) Call(client, kCalls[(start + i) % kCalls.size()]);
  return 0;
}
