// base/fault_point.h: a no-op until a test program installs a hook; the hook sees every point by
// name; and nothing outside tests/ can install one (the production binary has no way to).
#include "base/fault_point.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace cakewalk::testing {
namespace {

std::vector<std::string> g_seen;

void Record(std::string_view point) noexcept {
  try {
    g_seen.emplace_back(point);
  } catch (...) {
  }
}

TEST(FaultPointTest, NoHookNoEffectThenTheHookSeesEachPointUntilRemoved) {
  g_seen.clear();
  FaultPoint("before");
  EXPECT_TRUE(g_seen.empty());
  SetFaultHookForTesting(&Record);
  FaultPoint("rotation.staged");
  FaultPoint("rotation.jira-changed");
  SetFaultHookForTesting(nullptr);
  FaultPoint("after");
  EXPECT_EQ(g_seen, (std::vector<std::string>{"rotation.staged", "rotation.jira-changed"}));
}

TEST(FaultPointTest, OnlyTestCodeInstallsAHook) {
  // Every call of SetFaultHookForTesting outside tests/ would be a way for the shipped binary to
  // arm a fault point. There must be none (the definition in base/ aside).
  const std::filesystem::path root = CAKEWALK_SOURCE_DIR;
  std::vector<std::string> offenders;
  for (const char* folder : {"base", "hsm", "jira", "agent", "systemd"}) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(root / folder)) {
      if (!entry.is_regular_file()) continue;
      const std::string ext = entry.path().extension().string();
      if (ext != ".cc" && ext != ".h") continue;
      if (entry.path().filename().string().rfind("fault_point.", 0) == 0) continue;
      std::ifstream in(entry.path());
      std::stringstream text;
      text << in.rdbuf();
      if (text.str().find("SetFaultHookForTesting") != std::string::npos) {
        offenders.push_back(entry.path().string());
      }
    }
  }
  EXPECT_TRUE(offenders.empty()) << offenders.front();
}

}  // namespace
}  // namespace cakewalk::testing
