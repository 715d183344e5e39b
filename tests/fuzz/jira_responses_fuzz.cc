// Every Jira answer the connector reads: a provisioning job, verify, doctor's health checks or an
// access sync (jira/jobs.h, jira/health.h, jira/access_sync.h) runs against a Data Center or
// Cloud connection whose transport answers from a response script (fuzz_support.h) — logins with
// TOTP, session cookies, OAuth token responses, cloudId resolution, serverInfo, user and group
// look-ups, pages, writes, organization API answers, group picker answers, member, user and token
// pages, rate limits and errors.
//
// Input: first line names the scenario (jira_harness.cc; an unknown name picks one by hash),
// then the script. The seeds are transcripts of the same jobs against FakeJira
// (tests/fuzz/seed_jira.cc), so mutations start from real shapes.
// Properties: jira_harness.h (jobs.md codes, documented outputs, no credential in any output or
// message, no request outside the configured base URLs; access sync records and output).
#include <chrono>
#include <cstdio>
#include <string>

#include "base/json.h"
#include "tests/fuzz/jira_harness.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text = cakewalk::fuzz::AsText(data, size);
  const std::string_view name = cakewalk::fuzz::TakeLine(text);
  const auto& scenario = cakewalk::fuzz::FindScenario(name, size);
  auto transport =
      std::make_shared<cakewalk::fuzz::ScriptedTransport>(cakewalk::fuzz::ParseScript(text));
  cakewalk::fuzz::JiraHarness harness(scenario.flavor, scenario.oauth_sync, transport);
  auto params = cakewalk::ParseJson(scenario.params, "params");
  cakewalk::fuzz::FuzzCheck(params.ok(), "scenario params parse");
  const auto started = std::chrono::steady_clock::now();
  const auto outcome = harness.Run(scenario.job, *params);
  if (cakewalk::fuzz::FuzzVerbose()) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - started)
                        .count();
    std::fprintf(stderr, "%.*s: %s after %zu requests, %lld ms\n",
                 static_cast<int>(scenario.name.size()), scenario.name.data(),
                 outcome.ok() ? "ok" : outcome.status().ToString().c_str(), transport->requests(),
                 static_cast<long long>(ms));
  }
  cakewalk::fuzz::CheckJobOutcome(scenario.job, outcome, cakewalk::fuzz::AsText(data, size));
  if (scenario.job == "access_sync") {
    cakewalk::fuzz::CheckSyncRecords(harness, outcome, cakewalk::fuzz::AsText(data, size));
  }
  cakewalk::fuzz::CheckRequests(harness);
  return 0;
}
