#include "jira/sync_gate.h"

#include <algorithm>
#include <charconv>

#include "base/time.h"
#include "jira/errors.h"

namespace cakewalk::jira {
namespace {

using std::chrono::milliseconds;

std::optional<double> NumberHeader(const http::Response& r, std::string_view name) {
  auto v = r.Header(name);
  if (!v) return std::nullopt;
  double out = 0;
  const char* end = v->data() + v->size();
  auto [p, ec] = std::from_chars(v->data(), end, out);
  if (ec != std::errc() || p != end || out < 0) return std::nullopt;
  return out;
}

// The path of a URL without scheme, host and query: the latency baseline's key.
std::string PathKey(const std::string& url) {
  std::size_t start = url.find("://");
  start = url.find('/', start == std::string::npos ? 0 : start + 3);
  if (start == std::string::npos) return "/";
  const std::size_t q = url.find('?', start);
  return url.substr(start, q == std::string::npos ? std::string::npos : q - start);
}

thread_local bool t_priority = false;

}  // namespace

SyncGate::Priority::Priority() : previous_(t_priority) { t_priority = true; }
SyncGate::Priority::~Priority() { t_priority = previous_; }

SyncGate::SyncGate(http::Transport& inner, const Clock& clock, Sleeper& sleeper,
                   GateOptions options, std::stop_token stop)
    : inner_(inner),
      clock_(clock),
      sleeper_(sleeper),
      options_([&] {
        options.max_concurrency = std::max(1, options.max_concurrency);
        options.initial_concurrency =
            std::clamp(options.initial_concurrency, 1, options.max_concurrency);
        return options;
      }()),
      stop_(std::move(stop)) {
  stats_.limit = options_.initial_concurrency;
  stats_.peak_limit = stats_.limit;
}

GateStats SyncGate::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

bool SyncGate::HoldUntil(Steady::time_point until) {
  std::lock_guard hold(hold_mu_);
  const auto now = clock_.Steady();
  if (until <= now) return !stop_.stop_requested();
  const auto wait = std::chrono::ceil<milliseconds>(until - now);
  const Status slept = sleeper_.Sleep(wait, stop_);
  {
    std::lock_guard lock(mu_);
    stats_.held += wait;
  }
  return slept.ok();
}

Status SyncGate::Acquire() {
  std::unique_lock lock(mu_);
  while (true) {
    if (stop_.stop_requested()) return Stopped();
    const auto now = clock_.Steady();
    if (hold_until_ > now) {
      const auto until = hold_until_;
      lock.unlock();
      const bool ok = HoldUntil(until);
      lock.lock();
      if (!ok) return Stopped();
      continue;
    }
    if (pacing_) {
      // The server adds `fill` tokens at each of its interval boundaries; the next one after a
      // report comes at most one interval later, so refilling a whole interval after the report
      // never counts a token before the server has it.
      if (now - tokens_at_ >= interval_) {
        const auto intervals = (now - tokens_at_) / interval_;
        tokens_ = std::min(capacity_, tokens_ + static_cast<double>(intervals) * fill_);
        tokens_at_ += intervals * interval_;
      }
      if (tokens_ < 1.0) {
        const auto until = tokens_at_ + interval_;
        lock.unlock();
        const bool ok = HoldUntil(until);
        lock.lock();
        if (!ok) return Stopped();
        continue;
      }
    }
    const bool priority = t_priority;
    if (stats_.in_flight < stats_.limit && (priority || priority_waiting_ == 0)) {
      ++stats_.in_flight;
      ++stats_.requests;
      stats_.peak_in_flight = std::max(stats_.peak_in_flight, stats_.in_flight);
      if (pacing_) tokens_ -= 1.0;
      return Status::Ok();
    }
    // Wait for a slot; a hold set meanwhile is seen on wake-up.
    if (priority) ++priority_waiting_;
    ++stats_.waiting;
    cv_.wait(lock, stop_, [&] {
      return (stats_.in_flight < stats_.limit && (priority || priority_waiting_ == 0)) ||
             hold_until_ > clock_.Steady();
    });
    --stats_.waiting;
    if (priority && --priority_waiting_ == 0) cv_.notify_all();
  }
}

void SyncGate::Decrease(double factor, Steady::time_point) {
  const int next = std::max(1, static_cast<int>(static_cast<double>(stats_.limit) * factor));
  if (next < stats_.limit) ++stats_.decreases;
  stats_.limit = next;
  successes_ = 0;
}

void SyncGate::Release(const http::Request& request, const Result<http::Response>& answer,
                       Steady::duration latency) {
  std::lock_guard lock(mu_);
  --stats_.in_flight;
  const auto now = clock_.Steady();
  if (!answer.ok()) {
    ++stats_.unavailable;
    Decrease(0.5, now);
    cv_.notify_all();
    return;
  }
  const http::Response& r = *answer;
  bool trouble = false;
  if (r.status == 409) {
    // Cloud's users/search gave up after 10 s: the server is struggling.
    trouble = true;
    Decrease(0.5, now);
  }
  if (r.status == 429 || r.status == 503) {
    (r.status == 429 ? stats_.throttled : stats_.unavailable) += 1;
    trouble = true;
    Decrease(0.5, now);
    const SysTime server_now = r.server_date.value_or(clock_.Now());
    if (auto hint = ServerRetryHint(r, server_now); hint && *hint > milliseconds::zero()) {
      hold_until_ = std::max(hold_until_, now + *hint);
    }
  }
  // Data Center announces its token bucket on every answer once rate limiting is on.
  const auto remaining = NumberHeader(r, "x-ratelimit-remaining");
  const auto fill = NumberHeader(r, "x-ratelimit-fillrate");
  const auto interval = NumberHeader(r, "x-ratelimit-interval-seconds");
  if (remaining && fill && interval && *interval > 0) {
    // The server's count is the truth, but answers to requests sent earlier may arrive late:
    // never trust more tokens than the lowest recent report.
    if (!pacing_ || *remaining < tokens_) {
      tokens_ = *remaining;
      tokens_at_ = now;
    }
    pacing_ = true;
    fill_ = *fill;
    interval_ = std::chrono::duration_cast<Steady::duration>(
        std::chrono::duration<double>(std::max(0.001, *interval)));
    capacity_ = NumberHeader(r, "x-ratelimit-limit").value_or(std::max(1.0, *remaining));
  } else if (remaining && *remaining <= 0 && r.status != 429) {
    // Cloud: nothing left until X-RateLimit-Reset.
    if (auto hint = ServerRetryHint(r, r.server_date.value_or(clock_.Now()))) {
      hold_until_ = std::max(hold_until_, now + *hint);
    }
  }
  if (auto near = r.Header("x-ratelimit-nearlimit"); near && *near == "true" && !trouble) {
    trouble = true;
    Decrease(0.75, now);
  }
  if (!trouble && r.status < 500) {
    const std::string key = PathKey(request.url);
    auto& best = best_latency_[key];
    if (best == Steady::duration::zero() || latency < best) best = latency;
    const double ms = std::chrono::duration<double, std::milli>(latency).count();
    double& recent = recent_latency_ms_[key];
    recent = recent == 0 ? ms : recent * 0.8 + ms * 0.2;
    const double best_ms = std::chrono::duration<double, std::milli>(best).count();
    if (recent > 3 * best_ms && recent > best_ms + 50 &&
        now - last_latency_decrease_ >= std::chrono::seconds(1)) {
      last_latency_decrease_ = now;
      Decrease(0.75, now);
    } else if (++successes_ >= stats_.limit && stats_.limit < options_.max_concurrency) {
      ++stats_.limit;
      stats_.peak_limit = std::max(stats_.peak_limit, stats_.limit);
      successes_ = 0;
    }
  }
  cv_.notify_all();
}

Result<http::Response> SyncGate::Send(const http::Request& request) {
  CW_RETURN_IF_ERROR(Acquire());
  const auto start = Steady::now();
  Result<http::Response> answer = inner_.Send(request);
  const auto latency = Steady::now() - start;
  Release(request, answer, latency);
  if (answer.ok() && observer_) observer_(request, *answer);
  return answer;
}

}  // namespace cakewalk::jira
