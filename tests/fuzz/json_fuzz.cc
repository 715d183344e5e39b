// Strict JSON (base/json.h): ParseJson on anything, the canonical writer's round trip, and every
// JsonFields accessor on whatever members the document has.
//
// Properties: an accepted document re-parses from its canonical form to an equal value, the
// canonical form is a fixed point (records are hashed over it, docs/protocol.md §12) and is what
// jsoncpp's own writer makes of the document with the same settings; JsonFields
// never throws (jsoncpp throws on type mismatches) and always says why it refused.
#include <string>

#include "base/json.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/support/jsoncpp_reference.h"

using cakewalk::fuzz::FuzzCheck;
using cakewalk::testing::JsoncppCanonical;

namespace {

void ExerciseFields(const Json::Value& object, int depth) {
  cakewalk::JsonFields f(object, "$");
  for (const std::string& name : object.getMemberNames()) {
    switch (name.size() % 9) {
      case 0:
        f.String(name, cakewalk::JsonFields::kRequired);
        break;
      case 1:
        f.OptionalString(name);
        break;
      case 2:
        f.NullableString(name);
        break;
      case 3:
        f.Int(name, 0, -1000, 1000);
        break;
      case 4:
        f.Bool(name, false, cakewalk::JsonFields::kRequired);
        break;
      case 5:
        f.StringArray(name);
        break;
      case 6:
        if (const Json::Value* o = f.Object(name); o != nullptr && depth < 8) {
          ExerciseFields(*o, depth + 1);
        }
        break;
      case 7:
        f.Array(name);
        break;
      default:
        f.Any(name);
        break;
    }
  }
  f.String("absent-required", cakewalk::JsonFields::kRequired);
  const cakewalk::Status strict = f.Finish();
  const cakewalk::Status lenient = f.FinishAllowingUnknown();
  FuzzCheck(!strict.ok(), "a missing required key is reported");
  FuzzCheck(!strict.message().empty() && !lenient.message().empty(), "a refusal says why");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = cakewalk::fuzz::AsText(data, size);
  auto parsed = cakewalk::ParseJson(text, "fuzz input", 1 << 20);
  if (!parsed.ok()) {
    FuzzCheck(!parsed.status().message().empty(), "a refusal says why");
    return 0;
  }
  const std::string canonical = cakewalk::WriteJson(*parsed);
  FuzzCheck(canonical == JsoncppCanonical(*parsed), "the canonical form is jsoncpp's");
  auto again = cakewalk::ParseJson(canonical, "canonical form", 1 << 22);
  FuzzCheck(again.ok(), "the canonical form of an accepted document parses");
  FuzzCheck(*again == *parsed, "the canonical form parses to an equal value");
  FuzzCheck(cakewalk::WriteJson(*again) == canonical, "the canonical form is a fixed point");
  auto pretty = cakewalk::ParseJson(cakewalk::WritePrettyJson(*parsed), "pretty form", 1 << 22);
  FuzzCheck(pretty.ok() && *pretty == *parsed, "the pretty form parses to an equal value");
  if (parsed->isObject()) ExerciseFields(*parsed, 0);
  return 0;
}
