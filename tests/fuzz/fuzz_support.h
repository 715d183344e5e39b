// Shared pieces of the fuzz targets (tests/fuzz/*_fuzz.cc).
//
// Each target defines LLVMFuzzerTestOneInput. It is linked twice: with libFuzzer's main
// (-fsanitize=fuzzer, clang builds with CAKEWALK_FUZZ) for scripts/fuzz, and with replay_main.cc
// into a plain program that runs the checked-in corpus as a ctest in every build.
//
// Targets check properties as well as "does not crash": a violated property calls FuzzCheck's
// abort, which both the fuzzer and the replay test report as a failure.
//
// Response scripts. Targets that drive a client through an http::Transport read the answers it
// gets from the input, in this text form (easy to write by hand, easy for the fuzzer to mutate):
//
//   <scenario line>            (only where the target has scenarios)
//   @200                       status line: '@' and a decimal status
//   content-type: application/json
//   retry-after: 3             header lines until an empty line
//
//   {"body": "..."}            the body, up to the next line that starts with '@'
//   @404
//   ...
//   @!reset                    no HTTP answer: the transport fails (reasons: reset, timeout,
//                              tls, connect)
//
// When the script runs out, every further request fails as a reset connection.
//
// Routed answers. A status line may name a path after the status (or failure reason):
//
//   @200 /rest/api/2/group/member
//   @!reset /rest/api/2/user/list
//
// Such an answer goes only to a request whose URL path (without the query) ends with that path,
// in script order among the answers routed to it; a request no routed answer is left for takes the
// next unrouted answer. Unrouted answers keep the plain queue order, so scripts without routes
// mean what they always meant. Routes let a script answer fetches that run concurrently (the
// access sync's pages), whose relative order is not fixed.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/clock.h"
#include "base/status.h"
#include "jira/credentials.h"
#include "jira/http.h"
#include "jira/retry.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace cakewalk::fuzz {

// True when CAKEWALK_FUZZ_VERBOSE is set: targets then say what each input led to (for corpus
// upkeep: a seed should reach the path it was written for).
bool FuzzVerbose();

// Aborts with `what` on standard error when `condition` is false (a property violation).
void FuzzCheck(bool condition, const char* what);

inline std::string_view AsText(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Splits off the first line ("scenario"); the rest stays in `text`.
std::string_view TakeLine(std::string_view& text);

// One scripted answer: an HTTP response, or a transport failure with its reason.
struct ScriptedAnswer {
  std::optional<std::string> failure_reason;  // http::reason::*
  http::Response response;
  std::string route;  // "" (the queue) or a path the request's URL path must end with
};

// Parses the script format above. Bounded: at most `max_answers` answers.
std::deque<ScriptedAnswer> ParseScript(std::string_view text, std::size_t max_answers = 64);

// Serialises answers back into the script format (the seed generator writes corpora with it);
// `route`, when not empty, is written on the status line.
std::string FormatAnswer(const http::Response& response, std::string_view route = {});

// The path of an http(s) URL, without scheme, host and query ("/" when it has none).
std::string_view UrlPath(std::string_view url);

// A Transport that answers from a script: routed answers by path, the others in order.
class ScriptedTransport final : public http::Transport {
 public:
  explicit ScriptedTransport(std::deque<ScriptedAnswer> answers) : answers_(std::move(answers)) {}
  Result<http::Response> Send(const http::Request& request) override;
  std::optional<std::chrono::seconds> LastClockSkew() const override;
  void ResetConnections() override {}
  std::size_t requests() const;

 private:
  mutable std::mutex mu_;
  std::deque<ScriptedAnswer> answers_;
  std::size_t requests_ = 0;
  std::optional<std::chrono::seconds> skew_;
};

// A clock that only moves when FuzzSleeper sleeps (or Advance is called).
class FuzzClock final : public Clock {
 public:
  FuzzClock();
  std::chrono::system_clock::time_point Now() const override;
  std::chrono::steady_clock::time_point Steady() const override;
  void Advance(std::chrono::milliseconds d);

 private:
  mutable std::mutex mu_;
  std::chrono::system_clock::time_point now_;
};

// "Sleeps" by advancing the FuzzClock: no real waiting, and time-based loops still end.
class FuzzSleeper final : public jira::Sleeper {
 public:
  explicit FuzzSleeper(FuzzClock& clock) : clock_(clock) {}
  Status Sleep(std::chrono::milliseconds duration, std::stop_token stop) override;

 private:
  FuzzClock& clock_;
};

// Credentials held in memory with fixed, recognisable values; TOTP codes are real RFC 6238 codes
// of the stored seed (so the seed generator can log in to the fake Jira with them).
class MemoryCredentials final : public jira::Credentials {
 public:
  explicit MemoryCredentials(std::string connection) : connection_(std::move(connection)) {}
  const std::string& connection() const override { return connection_; }
  Result<SecretBytes> Get(std::string_view name, std::string_view purpose) override;
  Result<hsm::TotpCode> Totp(std::uint32_t version, hsm::TotpTime at,
                             std::string_view purpose) override;
  Result<std::vector<jira::SecretVersion>> Versions(std::string_view name) override;
  Status Put(std::string_view name, const SecretBytes& value) override;
  Status Promote(std::string_view name, std::uint32_t version) override;
  Result<SecretBytes> Random(std::size_t size) override;

  // Sets a secret (a string; the "totp" secret holds the raw seed bytes).
  void Set(std::string_view name, std::string_view value);

 private:
  std::string connection_;
  std::mutex mu_;
  std::map<std::string, std::string, std::less<>> values_;
  std::uint32_t version_ = 1;
};

}  // namespace cakewalk::fuzz
