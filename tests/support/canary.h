// Canary secrets: distinctive values planted as passwords, seeds, tokens and PINs, then searched
// for everywhere they must not appear — raw, hex-encoded, and base64-encoded at every alignment
// (so "user:<canary>" inside a Basic header is found as well).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace cakewalk::testing {

// A fresh, recognisable value: "<kind>-canary-<random hex>".
std::string MakeCanary(std::string_view kind);

// Every form in which `canary` is searched for.
std::vector<std::string> CanaryForms(std::string_view canary);

// Where the canary was found in `haystack` (empty when absent); `where` names the haystack.
std::vector<std::string> FindCanaryIn(std::string_view canary, std::string_view haystack,
                                      std::string_view where);
// Searches every regular file under `root` (recursively, binary-safe, including SQLite files).
std::vector<std::string> FindCanaryInTree(std::string_view canary,
                                          const std::filesystem::path& root);

}  // namespace cakewalk::testing
