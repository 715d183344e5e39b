// A private temporary folder (0700) removed with everything in it when the object goes away.
// Set CAKEWALK_KEEP_TEST_DIRS=1 to keep it for debugging.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace cakewalk::testing {

class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "cakewalk-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // Leaves the folder in place when this object goes away (tools that hand it to others).
  void Keep() { keep_ = true; }
  std::filesystem::path operator/(std::string_view name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
  bool keep_ = false;
};

// Writes `content` to `path` with `mode` (created or truncated).
void WriteFile(const std::filesystem::path& path, std::string_view content, int mode = 0600);
std::string ReadFile(const std::filesystem::path& path);

}  // namespace cakewalk::testing
