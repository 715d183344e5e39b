#include "tests/fuzz/fuzz_support.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "base/encoding.h"
#include "jira/errors.h"

namespace cakewalk::fuzz {

bool FuzzVerbose() {
  static const bool verbose = std::getenv("CAKEWALK_FUZZ_VERBOSE") != nullptr;
  return verbose;
}

void FuzzCheck(bool condition, const char* what) {
  if (condition) return;
  std::fprintf(stderr, "fuzz property violated: %s\n", what);
  std::abort();
}

std::string_view TakeLine(std::string_view& text) {
  const std::size_t end = text.find('\n');
  std::string_view line = text.substr(0, end);
  text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
  return line;
}

namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

// The next record: from just after '@' up to (not including) the next line starting with '@'.
std::string_view NextRecord(std::string_view& text) {
  const std::size_t end = text.find("\n@");
  if (end == std::string_view::npos) {
    // The last record: the newline that ends the script is not part of the body.
    std::string_view record = text;
    if (!record.empty() && record.back() == '\n') record.remove_suffix(1);
    text = {};
    return record;
  }
  std::string_view record = text.substr(0, end);  // the newline before '@' ends the body
  text = text.substr(end + 2);
  return record;
}

// Splits a status line into its first word and the route after it ("" when none: a route starts
// with '/').
std::string_view SplitRoute(std::string_view line, std::string& route) {
  line = Trim(line);
  const std::size_t space = line.find_first_of(" \t");
  if (space == std::string_view::npos) return line;
  const std::string_view rest = Trim(line.substr(space + 1));
  if (!rest.empty() && rest.front() == '/') route = std::string(rest);
  return line.substr(0, space);
}

ScriptedAnswer ParseRecord(std::string_view record) {
  ScriptedAnswer answer;
  std::string_view status_line = TakeLine(record);
  if (!status_line.empty() && status_line.front() == '!') {
    const std::string_view kind = SplitRoute(status_line.substr(1), answer.route);
    if (kind == "timeout") {
      answer.failure_reason = http::reason::kTimeout;
    } else if (kind == "tls") {
      answer.failure_reason = http::reason::kTlsVerifyFailed;
    } else if (kind == "connect") {
      answer.failure_reason = http::reason::kConnectFailed;
    } else if (kind == "too-large") {
      answer.failure_reason = http::reason::kResponseTooLarge;
    } else {
      answer.failure_reason = http::reason::kProtocol;
    }
    return answer;
  }
  long status = 0;
  for (char c : SplitRoute(status_line, answer.route)) {
    if (c < '0' || c > '9' || status > 999) break;
    status = status * 10 + (c - '0');
  }
  answer.response.status = status == 0 ? 200 : status;
  while (!record.empty()) {
    std::string_view line = TakeLine(record);
    if (Trim(line).empty()) break;
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    http::Header h{Lower(Trim(line.substr(0, colon))), std::string(Trim(line.substr(colon + 1)))};
    if (h.name == "set-cookie") {
      answer.response.set_cookies.push_back(SecretBytes::CopyOf(h.value));
      continue;
    }
    answer.response.headers.push_back(std::move(h));
  }
  answer.response.body = std::string(record);
  return answer;
}

}  // namespace

std::deque<ScriptedAnswer> ParseScript(std::string_view text, std::size_t max_answers) {
  std::deque<ScriptedAnswer> out;
  // Anything before the first '@' is ignored.
  const std::size_t first = text.find('@');
  if (first == std::string_view::npos) return out;
  text = text.substr(first + 1);
  while (!text.empty() && out.size() < max_answers) {
    out.push_back(ParseRecord(NextRecord(text)));
  }
  return out;
}

std::string FormatAnswer(const http::Response& response, std::string_view route) {
  std::string out = "@" + std::to_string(response.status);
  if (!route.empty()) out += " " + std::string(route);
  out += "\n";
  for (const auto& h : response.headers) {
    if (h.name == "content-length" || h.name == "connection" || h.name == "keep-alive") continue;
    out += h.name + ": " + h.value + "\n";
  }
  for (const auto& c : response.set_cookies) {
    out += "set-cookie: " + std::string(c.RevealString(SecretAccess::Grant())) + "\n";
  }
  out += "\n" + response.body + "\n";
  return out;
}

std::string_view UrlPath(std::string_view url) {
  const std::size_t scheme = url.find("://");
  if (scheme != std::string_view::npos) url.remove_prefix(scheme + 3);
  const std::size_t slash = url.find('/');
  if (slash == std::string_view::npos) return "/";
  url.remove_prefix(slash);
  return url.substr(0, url.find_first_of("?#"));
}

Result<http::Response> ScriptedTransport::Send(const http::Request& request) {
  const std::string_view path = UrlPath(request.url);
  std::lock_guard lock(mu_);
  ++requests_;
  // The first answer routed to this path, else the first unrouted one.
  auto it = std::find_if(answers_.begin(), answers_.end(), [&](const ScriptedAnswer& a) {
    return !a.route.empty() && path.size() >= a.route.size() &&
           path.substr(path.size() - a.route.size()) == a.route;
  });
  if (it == answers_.end()) {
    it = std::find_if(answers_.begin(), answers_.end(),
                      [](const ScriptedAnswer& a) { return a.route.empty(); });
  }
  if (it == answers_.end()) {
    return Status(Code::kUnavailable, "the script has no more answers", http::reason::kProtocol);
  }
  ScriptedAnswer a = std::move(*it);
  answers_.erase(it);
  if (a.failure_reason) {
    return Status(Code::kUnavailable, "scripted transport failure", *a.failure_reason);
  }
  if (auto date = a.response.Header("date")) {
    if (auto t = ParseHttpDate(*date); t.ok()) {
      a.response.server_date = *t;
      a.response.clock_skew = std::chrono::seconds(0);
      skew_ = std::chrono::seconds(0);
    }
  }
  return std::move(a.response);
}

std::optional<std::chrono::seconds> ScriptedTransport::LastClockSkew() const {
  std::lock_guard lock(mu_);
  return skew_;
}

std::size_t ScriptedTransport::requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

// 2025-12-04T12:26:40Z, the FakeClock default of the tests.
FuzzClock::FuzzClock() : now_(std::chrono::seconds(1764850000)) {}

std::chrono::system_clock::time_point FuzzClock::Now() const {
  std::lock_guard lock(mu_);
  return now_;
}

std::chrono::steady_clock::time_point FuzzClock::Steady() const {
  std::lock_guard lock(mu_);
  return std::chrono::steady_clock::time_point(
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(now_.time_since_epoch()));
}

void FuzzClock::Advance(std::chrono::milliseconds d) {
  std::lock_guard lock(mu_);
  now_ += d;
}

Status FuzzSleeper::Sleep(std::chrono::milliseconds duration, std::stop_token stop) {
  if (stop.stop_requested()) return jira::Stopped();
  clock_.Advance(duration);
  return Status::Ok();
}

Result<SecretBytes> MemoryCredentials::Get(std::string_view name, std::string_view purpose) {
  (void)purpose;
  std::lock_guard lock(mu_);
  auto it = values_.find(name);
  if (it == values_.end()) return jira::MissingSecret(connection_, name);
  return SecretBytes::CopyOf(it->second);
}

Result<hsm::TotpCode> MemoryCredentials::Totp(std::uint32_t version, hsm::TotpTime at,
                                              std::string_view purpose) {
  (void)purpose;
  std::string seed;
  {
    std::lock_guard lock(mu_);
    auto it = values_.find(std::string_view("totp"));
    if (it == values_.end()) return jira::MissingSecret(connection_, "totp");
    seed = it->second;
  }
  CW_ASSIGN_OR_RETURN(hsm::TotpWindow window, hsm::TotpWindowAt(at, std::chrono::seconds(30)));
  const auto counter = hsm::TotpCounterBytes(window.counter);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  if (HMAC(EVP_sha1(), seed.data(), static_cast<int>(seed.size()), counter.data(), counter.size(),
           mac, &mac_len) == nullptr) {
    return Internal("HMAC failed");
  }
  hsm::TotpCode code;
  code.code = hsm::OneTimeCode(hsm::DynamicTruncate(std::span(mac, mac_len), 6), 6);
  code.version = version == 0 ? 1 : version;
  code.window = window;
  code.remaining =
      std::chrono::ceil<std::chrono::seconds>((window.valid_until - at.seconds()) - at.fraction());
  return code;
}

Result<std::vector<jira::SecretVersion>> MemoryCredentials::Versions(std::string_view name) {
  std::lock_guard lock(mu_);
  if (values_.find(name) == values_.end()) return std::vector<jira::SecretVersion>{};
  return std::vector<jira::SecretVersion>{{version_, true, false}};
}

Status MemoryCredentials::Put(std::string_view name, const SecretBytes& value) {
  std::lock_guard lock(mu_);
  values_[std::string(name)] = std::string(value.RevealString(SecretAccess::Grant()));
  ++version_;
  return Status::Ok();
}

Status MemoryCredentials::Promote(std::string_view name, std::uint32_t version) {
  (void)name;
  (void)version;
  return Status::Ok();
}

Result<SecretBytes> MemoryCredentials::Random(std::size_t size) {
  // Deterministic: fuzz runs must be reproducible.
  SecretBytes out = SecretBytes::Allocate(size);
  auto bytes = out.RevealMutable(SecretAccess::Grant());
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 37 + 11);
  return out;
}

void MemoryCredentials::Set(std::string_view name, std::string_view value) {
  std::lock_guard lock(mu_);
  values_[std::string(name)] = std::string(value);
}

}  // namespace cakewalk::fuzz
