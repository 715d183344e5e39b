#include "systemd/bus_api.h"

#include <array>
#include <utility>

namespace cakewalk::sd {
namespace {

constexpr std::array<std::pair<Code, std::string_view>, 11> kErrorSuffixes = {{
    {Code::kInvalidArgument, "InvalidArgument"},
    {Code::kNotFound, "NotFound"},
    {Code::kAlreadyExists, "AlreadyExists"},
    {Code::kPermissionDenied, "PermissionDenied"},
    {Code::kUnauthenticated, "Unauthenticated"},
    {Code::kFailedPrecondition, "FailedPrecondition"},
    {Code::kAborted, "Aborted"},
    {Code::kUnavailable, "Unavailable"},
    {Code::kDeadlineExceeded, "Timeout"},
    {Code::kResourceExhausted, "ResourceExhausted"},
    {Code::kInternal, "Failed"},
}};

}  // namespace

std::string ErrorNameFor(Code code) {
  std::string name = kErrorPrefix;
  for (const auto& [c, suffix] : kErrorSuffixes) {
    if (c == code) {
      name += suffix;
      return name;
    }
  }
  name += "Failed";
  return name;
}

std::optional<Code> CodeForErrorName(std::string_view name) {
  const std::string_view prefix = kErrorPrefix;
  if (name.substr(0, prefix.size()) != prefix) return std::nullopt;
  const std::string_view suffix = name.substr(prefix.size());
  for (const auto& [c, s] : kErrorSuffixes) {
    if (s == suffix) return c;
  }
  return std::nullopt;
}

Status ValidateName(std::string_view what, std::string_view value) {
  if (value.empty() || value.size() > 64) {
    return InvalidArgument(std::string(what) + " must be 1 to 64 characters long");
  }
  if (value[0] == '.' || value[0] == '-') {
    return InvalidArgument(std::string(what) + " must not start with '.' or '-'");
  }
  for (char c : value) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return InvalidArgument(std::string(what) +
                             " may only contain letters, digits, '.', '_' and '-'");
    }
  }
  return Status::Ok();
}

}  // namespace cakewalk::sd
