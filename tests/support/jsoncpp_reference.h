// jsoncpp's own writer, set up as the canonical JSON form was first defined (docs/protocol.md):
// the reference base/json's WriteJson is held to, byte for byte, by tests/base/json_test.cc and
// the json fuzzer. Header only: the fuzzers link no test main.
#pragma once

#include <json/json.h>

#include <string>

namespace cakewalk::testing {

inline std::string JsoncppCanonical(const Json::Value& value) {
  Json::StreamWriterBuilder builder;
  builder["indentation"] = "";
  builder["emitUTF8"] = true;
  builder["commentStyle"] = "None";
  builder["enableYAMLCompatibility"] = false;
  builder["dropNullPlaceholders"] = false;
  builder["useSpecialFloats"] = false;
  builder["precision"] = 17;
  return Json::writeString(builder, value);
}

}  // namespace cakewalk::testing
