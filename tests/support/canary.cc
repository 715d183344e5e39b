#include "tests/support/canary.h"

#include <openssl/rand.h>

#include "base/encoding.h"
#include "tests/support/temp_dir.h"

namespace cakewalk::testing {

std::string MakeCanary(std::string_view kind) {
  std::uint8_t bytes[8];
  RAND_bytes(bytes, sizeof bytes);
  return std::string(kind) + "-canary-" + HexEncode(bytes);
}

std::vector<std::string> CanaryForms(std::string_view canary) {
  std::vector<std::string> forms{std::string(canary), HexEncode(AsBytes(canary))};
  // Base64 of the canary at each of the three byte alignments; keep the part that does not
  // depend on neighbouring bytes.
  for (std::size_t shift = 0; shift < 3; ++shift) {
    std::string padded(shift, '\0');
    padded += canary;
    std::string enc = Base64Encode(AsBytes(padded));
    const std::size_t skip = (shift == 0) ? 0 : 4;  // first group mixes in the padding bytes
    const std::size_t usable = ((padded.size()) / 3) * 4;
    if (usable > skip + 8) {
      std::string core = enc.substr(skip, usable - skip - 4);
      if (core.size() >= 8) forms.push_back(core);
    }
  }
  forms.push_back(UrlEncode(canary));
  return forms;
}

std::vector<std::string> FindCanaryIn(std::string_view canary, std::string_view haystack,
                                      std::string_view where) {
  std::vector<std::string> hits;
  for (const std::string& form : CanaryForms(canary)) {
    if (form.empty()) continue;
    if (haystack.find(form) != std::string_view::npos) {
      hits.push_back(std::string(where) + " contains the canary (as '" + form.substr(0, 12) +
                     "...')");
    }
  }
  return hits;
}

std::vector<std::string> FindCanaryInTree(std::string_view canary,
                                          const std::filesystem::path& root) {
  std::vector<std::string> hits;
  std::error_code ec;
  if (!std::filesystem::exists(root, ec)) return hits;
  for (auto it = std::filesystem::recursive_directory_iterator(
           root, std::filesystem::directory_options::skip_permission_denied, ec);
       it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (!it->is_regular_file(ec)) continue;
    std::string content;
    try {
      content = ReadFile(it->path());
    } catch (...) {
      continue;
    }
    auto found = FindCanaryIn(canary, content, it->path().string());
    hits.insert(hits.end(), found.begin(), found.end());
  }
  return hits;
}

}  // namespace cakewalk::testing
