#include "base/time.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>
#include <ctime>

namespace cakewalk {
namespace {

bool ParseDigits(std::string_view s, std::size_t pos, std::size_t count, int& out) {
  if (pos + count > s.size()) return false;
  int v = 0;
  for (std::size_t i = pos; i < pos + count; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  out = v;
  return true;
}

Result<SysTime> FromFields(int year, int month, int day, int hour, int minute, int second,
                           long offset_seconds, std::string_view original) {
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    return InvalidArgument("timestamp '" + std::string(original) + "' has an out-of-range field");
  }
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = std::min(second, 59);
  const time_t t = timegm(&tm);
  // SysTime counts nanoseconds in 64 bits: it reaches from 1677 to 2262. Anything outside would
  // overflow in from_time_t; no protocol time is there.
  constexpr auto kLimit =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::duration::max())
          .count() -
      7 * 24 * 3600;  // room for the largest offset (±99:99)
  if (t == static_cast<time_t>(-1) || t > kLimit || t < -kLimit) {
    return InvalidArgument("timestamp '" + std::string(original) + "' is out of range");
  }
  return std::chrono::system_clock::from_time_t(t - offset_seconds);
}

constexpr std::array<std::string_view, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
constexpr std::array<std::string_view, 7> kDays = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};

}  // namespace

std::string FormatRfc3339(SysTime t) {
  const time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[80];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

Result<SysTime> ParseRfc3339(std::string_view s) {
  auto bad = [&] {
    return InvalidArgument("'" + std::string(s.substr(0, 64)) +
                           "' is not an RFC 3339 timestamp (expected e.g. 2026-12-04T17:29:08Z)");
  };
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (!ParseDigits(s, 0, 4, year) || s.size() < 19 || s[4] != '-' || !ParseDigits(s, 5, 2, month) ||
      s[7] != '-' || !ParseDigits(s, 8, 2, day) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      !ParseDigits(s, 11, 2, hour) || s[13] != ':' || !ParseDigits(s, 14, 2, minute) ||
      s[16] != ':' || !ParseDigits(s, 17, 2, second)) {
    return bad();
  }
  std::size_t pos = 19;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    const std::size_t start = pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') ++pos;
    if (pos == start) return bad();
  }
  long offset = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    const int sign = s[pos] == '-' ? -1 : 1;
    ++pos;
    int oh = 0, om = 0;
    if (!ParseDigits(s, pos, 2, oh)) return bad();
    pos += 2;
    if (pos < s.size() && s[pos] == ':') ++pos;
    if (!ParseDigits(s, pos, 2, om)) return bad();
    pos += 2;
    offset = sign * (oh * 3600L + om * 60L);
  } else {
    return bad();
  }
  if (pos != s.size()) return bad();
  return FromFields(year, month, day, hour, minute, second, offset, s);
}

Result<SysTime> ParseHttpDate(std::string_view s) {
  // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" (exactly 29 characters).
  auto bad = [&] {
    return InvalidArgument("'" + std::string(s.substr(0, 64)) + "' is not an HTTP date");
  };
  if (s.size() != 29 || s.substr(3, 2) != ", " || s.substr(25) != " GMT") return bad();
  int day = 0, year = 0, hour = 0, minute = 0, second = 0;
  if (!ParseDigits(s, 5, 2, day) || s[7] != ' ' || s[11] != ' ' || !ParseDigits(s, 12, 4, year) ||
      s[16] != ' ' || !ParseDigits(s, 17, 2, hour) || s[19] != ':' ||
      !ParseDigits(s, 20, 2, minute) || s[22] != ':' || !ParseDigits(s, 23, 2, second)) {
    return bad();
  }
  const auto it = std::find(kMonths.begin(), kMonths.end(), s.substr(8, 3));
  if (it == kMonths.end()) return bad();
  const int month = static_cast<int>(it - kMonths.begin()) + 1;
  return FromFields(year, month, day, hour, minute, second, 0, s);
}

std::string FormatHttpDate(SysTime t) {
  const time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[80];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                std::string(kDays[static_cast<std::size_t>(tm.tm_wday)]).c_str(), tm.tm_mday,
                std::string(kMonths[static_cast<std::size_t>(tm.tm_mon)]).c_str(),
                tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::optional<std::chrono::seconds> ParseRetryAfter(std::string_view value, SysTime now,
                                                    std::chrono::seconds cap) {
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
  if (value.empty()) return std::nullopt;
  if (value.front() >= '0' && value.front() <= '9') {
    long long secs = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), secs);
    if (ec == std::errc::result_out_of_range) return cap;
    if (ec != std::errc() || end != value.data() + value.size()) return std::nullopt;
    return std::min(std::chrono::seconds(secs), cap);
  }
  auto when = ParseHttpDate(value);
  if (!when.ok()) return std::nullopt;
  // A date in the past means no wait; compared first because the difference between a date
  // far in the past (1678 still parses) and now does not fit in nanoseconds.
  if (*when <= now) return std::chrono::seconds(0);
  const auto delta = std::chrono::duration_cast<std::chrono::seconds>(*when - now);
  return std::clamp(delta, std::chrono::seconds(0), cap);
}

std::chrono::seconds SecondsBetween(SysTime from, SysTime to) {
  using std::chrono::duration_cast;
  using std::chrono::seconds;
  // Whole seconds and the rest of each point apart (duration_cast truncates, so neither part can
  // overflow), then the exact difference truncated towards zero.
  const auto whole_from = duration_cast<seconds>(from.time_since_epoch());
  const auto whole_to = duration_cast<seconds>(to.time_since_epoch());
  auto frac = (to.time_since_epoch() - whole_to) - (from.time_since_epoch() - whole_from);
  seconds whole = whole_to - whole_from + duration_cast<seconds>(frac);
  frac -= duration_cast<seconds>(frac);  // now within (-1 s, 1 s)
  if (whole > seconds::zero() && frac < frac.zero()) whole -= seconds(1);
  if (whole < seconds::zero() && frac > frac.zero()) whole += seconds(1);
  return whole;
}

}  // namespace cakewalk
