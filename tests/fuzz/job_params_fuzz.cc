// Job parameters (jira/jobs.h): the `params` object of every Jira job type, on Data Center and
// Cloud connections whose transport is down, so that only the parameter checks and what follows
// them without Jira run.
//
// Input: first line "<dc|cloud> <verify|provision|deprovision|add_member|remove_member>" (an
// unknown line picks one by hash), then the params JSON.
// Properties: params that are not a JSON object, or not valid, fail with invalid_params before
// anything is sent; whatever is sent goes to the configured site; plus jira_harness.h's checks.
#include <array>
#include <string>

#include "base/json.h"
#include "jira/errors.h"
#include "tests/fuzz/jira_harness.h"

using cakewalk::fuzz::FuzzCheck;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static constexpr std::array<std::string_view, 5> kJobs = {"verify", "provision", "deprovision",
                                                            "add_member", "remove_member"};
  std::string_view text = cakewalk::fuzz::AsText(data, size);
  const std::string_view line = cakewalk::fuzz::TakeLine(text);
  const bool cloud = line.substr(0, 5) == "cloud" || (line.substr(0, 2) != "dc" && size % 2 == 1);
  std::string_view job = kJobs[size % kJobs.size()];
  for (std::string_view j : kJobs) {
    if (line.size() > j.size() && line.substr(line.size() - j.size()) == j &&
        line[line.size() - j.size() - 1] == ' ') {
      job = j;
    }
  }
  auto params = cakewalk::ParseJson(text, "params", 64 * 1024);
  if (!params.ok()) return 0;  // the job loop never hands over params that are not JSON

  auto transport = std::make_shared<cakewalk::fuzz::ScriptedTransport>(
      std::deque<cakewalk::fuzz::ScriptedAnswer>{});
  cakewalk::fuzz::JiraHarness harness(
      cloud ? cakewalk::jira::Flavor::kCloud : cakewalk::jira::Flavor::kDataCenter, false,
      transport);
  const auto outcome = harness.Run(job, *params);
  cakewalk::fuzz::CheckJobOutcome(job, outcome, cakewalk::fuzz::AsText(data, size));
  cakewalk::fuzz::CheckRequests(harness);
  if (!params->isObject()) {
    FuzzCheck(!outcome.ok() && outcome.status().reason() == cakewalk::jira::reason::kInvalidParams,
              "params that are not an object are invalid_params");
  }
  if (!outcome.ok() && outcome.status().reason() == cakewalk::jira::reason::kInvalidParams) {
    FuzzCheck(transport->requests() == 0, "invalid params are refused before anything is sent");
  }
  return 0;
}
