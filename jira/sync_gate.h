// SyncGate: the adaptive concurrency of an access sync's page fetches, as an http::Transport that
// wraps the connection's transport. Every request (retries included: RestClient sends them
// through here too) waits for a slot, and every answer adjusts the number of slots.
//
// - Additive increase: after `limit` answers in a row without a sign of trouble, one more slot,
//   up to `max_concurrency` (access_sync.max_concurrency).
// - Multiplicative decrease: a 429 or a 503 halves the slots (at least one); so does a
//   connection failure. A latency that grows well past what this kind of request took so far
//   (3x the best seen for the same path, and 50 ms more) takes a quarter off, at most once a
//   second.
// - Server limits are obeyed once signalled: a Retry-After (or X-RateLimit-Reset) on a 429/503
//   holds EVERY new request until that moment, not just the one that was refused (RestClient
//   then retries that one); Data Center's X-RateLimit-Remaining / -FillRate / -Interval-Seconds
//   switch on a pacer that spends the reported tokens, then no more than the fill per interval
//   (refilled one whole interval after the report, never before the server refills); Cloud's
//   X-RateLimit-Remaining: 0 holds requests until X-RateLimit-Reset, and X-RateLimit-NearLimit:
//   true counts as a decrease signal.
// - Waits use the connection's Clock and Sleeper (tests move a fake clock) and end when the
//   sync's stop token is requested (the request then fails with reason "stopped"). Only one
//   thread sleeps for a server hold at a time, so a fake clock is advanced once per hold.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>

#include "base/clock.h"
#include "jira/http.h"
#include "jira/retry.h"

namespace cakewalk::jira {

struct GateOptions {
  int max_concurrency = 8;
  int initial_concurrency = 2;
};

struct GateStats {
  int limit = 0;  // slots now
  int in_flight = 0;
  int waiting = 0;         // requests waiting for a slot now
  int peak_in_flight = 0;  // most requests ever in flight at once
  int peak_limit = 0;
  std::int64_t requests = 0;     // sent (retries included)
  std::int64_t throttled = 0;    // 429 answers
  std::int64_t unavailable = 0;  // 503 answers and connection failures
  std::int64_t decreases = 0;
  std::chrono::milliseconds held{0};  // time spent holding for server hints and the pacer
};

class SyncGate final : public http::Transport {
 public:
  // `inner`, `clock` and `sleeper` must outlive the gate.
  SyncGate(http::Transport& inner, const Clock& clock, Sleeper& sleeper, GateOptions options,
           std::stop_token stop);

  Result<http::Response> Send(const http::Request& request) override;
  std::optional<std::chrono::seconds> LastClockSkew() const override {
    return inner_.LastClockSkew();
  }
  void ResetConnections() override { inner_.ResetConnections(); }

  GateStats stats() const;
  // While one lives on a thread, that thread's requests take the next free slot before others
  // (a sequential cursor chain that everything else can wait for). Limits and holds still apply.
  class Priority {
   public:
    Priority();
    ~Priority();
    Priority(const Priority&) = delete;
    Priority& operator=(const Priority&) = delete;

   private:
    bool previous_;
  };
  // Called after every exchange that produced an HTTP answer (the bench records the requests to
  // replay them). Set before the first request.
  void SetObserver(std::function<void(const http::Request&, const http::Response&)> observer) {
    observer_ = std::move(observer);
  }

 private:
  using Steady = std::chrono::steady_clock;
  Status Acquire();
  void Release(const http::Request& request, const Result<http::Response>& answer,
               Steady::duration latency);
  // Sleeps until `until` (one thread at a time); false when stopped.
  bool HoldUntil(Steady::time_point until);
  void Decrease(double factor, Steady::time_point now);

  http::Transport& inner_;
  const Clock& clock_;
  Sleeper& sleeper_;
  const GateOptions options_;
  std::stop_token stop_;
  std::function<void(const http::Request&, const http::Response&)> observer_;

  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  std::mutex hold_mu_;  // one sleeper at a time
  GateStats stats_;
  int successes_ = 0;  // since the last change of the limit
  int priority_waiting_ = 0;
  Steady::time_point hold_until_{};
  Steady::time_point last_latency_decrease_{};
  // The pacer, once the server announced its bucket (Data Center).
  bool pacing_ = false;
  double tokens_ = 0;
  double fill_ = 0;  // tokens per interval
  Steady::duration interval_{std::chrono::seconds(1)};
  double capacity_ = 1;
  Steady::time_point tokens_at_{};  // when tokens_ was last known (a report or a refill)
  // Best latency seen per path (without the query), for the latency signal.
  std::map<std::string, Steady::duration> best_latency_;
  std::map<std::string, double> recent_latency_ms_;  // moving average per path
};

}  // namespace cakewalk::jira
