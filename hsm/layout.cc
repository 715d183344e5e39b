#include "hsm/layout.h"

#include <charconv>
#include <vector>

namespace cakewalk::hsm::internal {

std::string_view RecordStateName(RecordState s) noexcept {
  switch (s) {
    case RecordState::kPending:
      return "pending";
    case RecordState::kCurrent:
      return "current";
    case RecordState::kRetired:
      return "retired";
  }
  return "unknown";
}

std::string RecordLabel(std::string_view connection, std::string_view name, std::uint32_t version,
                        RecordState state) {
  return std::string(kRecordPrefix) + std::string(connection) + ":" + std::string(name) + ":v" +
         std::to_string(version) + ":" + std::string(RecordStateName(state));
}

std::string SeedLabel(std::string_view connection, std::string_view name, std::uint32_t version) {
  return std::string(kSeedPrefix) + std::string(connection) + ":" + std::string(name) + ":v" +
         std::to_string(version);
}

std::string CounterLabel(std::string_view connection, std::string_view name) {
  return std::string(kCounterPrefix) + std::string(connection) + ":" + std::string(name);
}

std::optional<RecordLabelParts> ParseRecordLabel(std::string_view label) {
  if (label.substr(0, kRecordPrefix.size()) != kRecordPrefix) return std::nullopt;
  label.remove_prefix(kRecordPrefix.size());
  std::vector<std::string_view> parts;
  while (true) {
    const std::size_t colon = label.find(':');
    parts.push_back(label.substr(0, colon));
    if (colon == std::string_view::npos) break;
    label.remove_prefix(colon + 1);
  }
  if (parts.size() != 4) return std::nullopt;
  RecordLabelParts out;
  out.connection = std::string(parts[0]);
  out.name = std::string(parts[1]);
  if (!ValidateName("connection", out.connection).ok() || !ValidateName("name", out.name).ok()) {
    return std::nullopt;
  }
  std::string_view v = parts[2];
  if (v.size() < 2 || v[0] != 'v' || v[1] == '0') return std::nullopt;
  v.remove_prefix(1);
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out.version);
  if (ec != std::errc() || end != v.data() + v.size() || out.version == 0) return std::nullopt;
  if (parts[3] == "pending") {
    out.state = RecordState::kPending;
  } else if (parts[3] == "current") {
    out.state = RecordState::kCurrent;
  } else if (parts[3] == "retired") {
    out.state = RecordState::kRetired;
  } else {
    return std::nullopt;
  }
  return out;
}

std::optional<std::vector<std::uint8_t>> ParseHex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::vector<std::uint8_t> out;
  out.reserve(hex.size() / 2);
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int hi = nibble(hex[i]);
    const int lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<std::uint8_t>(hi * 16 + lo));
  }
  return out;
}

std::string SealAad(std::string_view connection, std::string_view name, std::uint32_t version) {
  return "cakewalk:v1:" + std::string(connection) + ":" + std::string(name) + ":" +
         std::to_string(version);
}

Status ValidateName(std::string_view what, std::string_view value) {
  if (value.empty() || value.size() > 64) {
    return InvalidArgument(std::string(what) + " must be 1 to 64 characters long");
  }
  for (std::size_t i = 0; i < value.size(); ++i) {
    const char c = value[i];
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return InvalidArgument(std::string(what) + " '" + std::string(value) +
                             "' has a character outside A-Z, a-z, 0-9, '.', '_', '-' at position " +
                             std::to_string(i + 1));
    }
  }
  return Status::Ok();
}

}  // namespace cakewalk::hsm::internal
