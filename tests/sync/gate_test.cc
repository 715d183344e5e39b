// SyncGate (jira/sync_gate.h): additive increase, multiplicative decrease, server holds and the
// Data Center pacer, on a fake clock; the slot limit under real threads.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/time.h"
#include "jira/errors.h"
#include "jira/sync_gate.h"
#include "tests/support/fake_clock.h"

namespace cakewalk::jira {
namespace {

using cakewalk::testing::FakeClock;
using std::chrono::milliseconds;
using std::chrono::seconds;

class ClockSleeper final : public Sleeper {
 public:
  explicit ClockSleeper(FakeClock& clock) : clock_(clock) {}
  Status Sleep(milliseconds d, std::stop_token stop) override {
    if (stop.stop_requested()) return Stopped();
    std::lock_guard lock(mu_);
    sleeps.push_back(d);
    clock_.Advance(d);
    return Status::Ok();
  }
  std::vector<milliseconds> sleeps;

 private:
  FakeClock& clock_;
  std::mutex mu_;
};

// Answers with what the test scripts; records the fake time of each request it receives.
class ScriptedTransport final : public http::Transport {
 public:
  explicit ScriptedTransport(const FakeClock& clock) : clock_(clock) {}
  Result<http::Response> Send(const http::Request&) override {
    std::lock_guard lock(mu_);
    times.push_back(clock_.Now());
    if (script.empty()) return Ok();
    Result<http::Response> r = std::move(script.front());
    script.pop_front();
    return r;
  }
  std::optional<seconds> LastClockSkew() const override { return std::nullopt; }
  void ResetConnections() override {}

  static http::Response Ok() {
    http::Response r;
    r.status = 200;
    r.body = "{}";
    return r;
  }
  static http::Response With(long status, std::vector<http::Header> headers) {
    http::Response r;
    r.status = status;
    r.headers = std::move(headers);
    return r;
  }
  std::deque<Result<http::Response>> script;
  std::vector<SysTime> times;

 private:
  const FakeClock& clock_;
  std::mutex mu_;
};

http::Request Req(std::string path = "/rest/api/2/group/member") {
  http::Request r;
  r.url = "https://jira.example" + path + "?startAt=0";
  return r;
}

TEST(SyncGateTest, AdditiveIncreaseUpToTheCap) {
  FakeClock clock;
  ClockSleeper sleeper(clock);
  ScriptedTransport inner(clock);
  GateOptions o;
  o.max_concurrency = 5;
  o.initial_concurrency = 2;
  SyncGate gate(inner, clock, sleeper, o, {});
  EXPECT_EQ(gate.stats().limit, 2);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(gate.Send(Req()).ok());
  EXPECT_EQ(gate.stats().limit, 5);
  EXPECT_EQ(gate.stats().peak_limit, 5);
  EXPECT_EQ(gate.stats().requests, 40);
}

TEST(SyncGateTest, MultiplicativeDecreaseOnThrottlingAndFailures) {
  FakeClock clock;
  ClockSleeper sleeper(clock);
  ScriptedTransport inner(clock);
  GateOptions o;
  o.max_concurrency = 8;
  o.initial_concurrency = 8;
  SyncGate gate(inner, clock, sleeper, o, {});
  inner.script.push_back(ScriptedTransport::With(429, {}));
  inner.script.push_back(ScriptedTransport::With(503, {}));
  inner.script.push_back(Status(Code::kUnavailable, "connection reset", "protocol_error"));
  inner.script.push_back(ScriptedTransport::With(429, {}));
  ASSERT_TRUE(gate.Send(Req()).ok());
  EXPECT_EQ(gate.stats().limit, 4);
  ASSERT_TRUE(gate.Send(Req()).ok());
  EXPECT_EQ(gate.stats().limit, 2);
  EXPECT_FALSE(gate.Send(Req()).ok());
  EXPECT_EQ(gate.stats().limit, 1);
  ASSERT_TRUE(gate.Send(Req()).ok());
  EXPECT_EQ(gate.stats().limit, 1);  // never below one
  EXPECT_EQ(gate.stats().throttled, 2);
  EXPECT_EQ(gate.stats().unavailable, 2);
}

TEST(SyncGateTest, RetryAfterHoldsEveryRequest) {
  FakeClock clock;
  ClockSleeper sleeper(clock);
  ScriptedTransport inner(clock);
  SyncGate gate(inner, clock, sleeper, {}, {});
  inner.script.push_back(ScriptedTransport::With(429, {{"retry-after", "7"}}));
  const SysTime t0 = clock.Now();
  ASSERT_TRUE(gate.Send(Req("/rest/api/2/user/list")).ok());
  // Another request, to another path, waits until the hint has passed.
  ASSERT_TRUE(gate.Send(Req("/rest/api/2/group/member")).ok());
  ASSERT_EQ(inner.times.size(), 2u);
  EXPECT_EQ(inner.times[0], t0);
  EXPECT_GE(inner.times[1] - t0, seconds(7));
  EXPECT_EQ(gate.stats().held, milliseconds(7000));
}

TEST(SyncGateTest, HttpDateRetryAfterAndCloudReset) {
  FakeClock clock;
  ClockSleeper sleeper(clock);
  ScriptedTransport inner(clock);
  SyncGate gate(inner, clock, sleeper, {}, {});
  auto r =
      ScriptedTransport::With(503, {{"retry-after", FormatHttpDate(clock.Now() + seconds(4))}});
  r.server_date = clock.Now();
  inner.script.push_back(std::move(r));
  // Cloud: nothing left until the reset minute.
  const SysTime reset = clock.Now() + seconds(60);
  std::string stamp = FormatRfc3339(reset).substr(0, 16) + "Z";
  auto empty = ScriptedTransport::With(
      200,
      {{"x-ratelimit-remaining", "0"}, {"x-ratelimit-limit", "100"}, {"x-ratelimit-reset", stamp}});
  empty.server_date = clock.Now() + seconds(4);
  const SysTime t0 = clock.Now();
  ASSERT_TRUE(gate.Send(Req()).ok());
  inner.script.push_back(std::move(empty));
  ASSERT_TRUE(gate.Send(Req()).ok());
  ASSERT_TRUE(gate.Send(Req()).ok());
  ASSERT_EQ(inner.times.size(), 3u);
  EXPECT_GE(inner.times[1] - t0, seconds(4));
  // The third waited for the reset (minute resolution: at most a minute after the second).
  EXPECT_GE(inner.times[2], std::chrono::floor<std::chrono::minutes>(reset));
}

TEST(SyncGateTest, DataCenterPacerNeverOutrunsTheFillRate) {
  FakeClock clock;
  ClockSleeper sleeper(clock);
  ScriptedTransport inner(clock);
  SyncGate gate(inner, clock, sleeper, {}, {});
  // The bucket: 3 left, refilled 2 per 1 s.
  auto bucket = [&](int remaining) {
    return ScriptedTransport::With(200, {{"x-ratelimit-limit", "10"},
                                         {"x-ratelimit-remaining", std::to_string(remaining)},
                                         {"x-ratelimit-fillrate", "2"},
                                         {"x-ratelimit-interval-seconds", "1"}});
  };
  inner.script.push_back(bucket(3));
  for (int i = 0; i < 30; ++i) inner.script.push_back(bucket(0));
  for (int i = 0; i < 25; ++i) ASSERT_TRUE(gate.Send(Req()).ok());
  // After the first answer: 3 tokens, then 2 per second.
  const SysTime start = inner.times[1];
  for (std::size_t i = 1; i < inner.times.size(); ++i) {
    const double elapsed = std::chrono::duration<double>(inner.times[i] - start).count();
    const double allowed = 3 + 2 * elapsed;
    EXPECT_LE(static_cast<double>(i), allowed + 1e-6) << "request " << i;
  }
  EXPECT_GT(gate.stats().held, seconds(9));
}

TEST(SyncGateTest, SlotsBoundConcurrencyAcrossThreads) {
  FakeClock clock;
  ClockSleeper sleeper(clock);
  struct Slow final : http::Transport {
    std::atomic<int> now{0}, peak{0};
    Result<http::Response> Send(const http::Request&) override {
      const int n = ++now;
      int p = peak.load();
      while (n > p && !peak.compare_exchange_weak(p, n)) {
      }
      std::this_thread::sleep_for(milliseconds(5));
      --now;
      return ScriptedTransport::Ok();
    }
    std::optional<seconds> LastClockSkew() const override { return std::nullopt; }
    void ResetConnections() override {}
  } inner;
  GateOptions o;
  o.max_concurrency = 3;
  o.initial_concurrency = 1;
  SyncGate gate(inner, clock, sleeper, o, {});
  std::vector<std::thread> threads;
  for (int t = 0; t < 10; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i) EXPECT_TRUE(gate.Send(Req()).ok());
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(inner.peak.load(), 3);
  EXPECT_GE(inner.peak.load(), 2);  // it did open up
  EXPECT_EQ(gate.stats().peak_in_flight, inner.peak.load());
}

// A request sent under SyncGate::Priority takes the next free slot before requests that waited
// longer; the others follow once no priority request waits.
TEST(SyncGateTest, PriorityRequestTakesTheNextSlotFirst) {
  FakeClock clock;
  ClockSleeper sleeper(clock);
  struct Ordered final : http::Transport {
    std::mutex mu;
    std::condition_variable cv;
    bool open = false;  // the first request blocks until the test opens
    std::vector<std::string> order;
    Result<http::Response> Send(const http::Request& r) override {
      std::unique_lock lock(mu);
      order.push_back(r.url);
      if (order.size() == 1) cv.wait(lock, [&] { return open; });
      return ScriptedTransport::Ok();
    }
    std::optional<seconds> LastClockSkew() const override { return std::nullopt; }
    void ResetConnections() override {}
  } inner;
  GateOptions o;
  o.max_concurrency = 1;
  o.initial_concurrency = 1;
  SyncGate gate(inner, clock, sleeper, o, {});
  auto wait_for_waiting = [&](int n) {
    for (int i = 0; i < 5000 && gate.stats().waiting < n; ++i) {
      std::this_thread::sleep_for(milliseconds(1));
    }
    ASSERT_EQ(gate.stats().waiting, n);
  };
  std::vector<std::thread> threads;
  threads.emplace_back([&] { EXPECT_TRUE(gate.Send(Req("/blocker")).ok()); });
  for (int i = 0; i < 100 && gate.stats().in_flight < 1; ++i) {
    std::this_thread::sleep_for(milliseconds(1));
  }
  ASSERT_EQ(gate.stats().in_flight, 1);
  constexpr int kNormal = 8;
  for (int t = 0; t < kNormal; ++t) {
    threads.emplace_back([&] { EXPECT_TRUE(gate.Send(Req("/normal")).ok()); });
  }
  wait_for_waiting(kNormal);
  threads.emplace_back([&] {
    SyncGate::Priority first;
    EXPECT_TRUE(gate.Send(Req("/chain")).ok());
  });
  wait_for_waiting(kNormal + 1);
  {
    std::lock_guard lock(inner.mu);
    inner.open = true;
  }
  inner.cv.notify_all();
  for (auto& t : threads) t.join();
  ASSERT_EQ(inner.order.size(), static_cast<std::size_t>(kNormal + 2));
  EXPECT_NE(inner.order[0].find("/blocker"), std::string::npos);
  EXPECT_NE(inner.order[1].find("/chain"), std::string::npos) << inner.order[1];
  for (std::size_t i = 2; i < inner.order.size(); ++i) {
    EXPECT_NE(inner.order[i].find("/normal"), std::string::npos) << i;
  }
  EXPECT_EQ(gate.stats().waiting, 0);
  EXPECT_EQ(gate.stats().peak_in_flight, 1);
}

TEST(SyncGateTest, StopEndsWaiting) {
  FakeClock clock;
  ClockSleeper sleeper(clock);
  ScriptedTransport inner(clock);
  std::stop_source stop;
  SyncGate gate(inner, clock, sleeper, {}, stop.get_token());
  stop.request_stop();
  auto r = gate.Send(Req());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().reason(), "stopped");
  EXPECT_TRUE(inner.times.empty());
}

}  // namespace
}  // namespace cakewalk::jira
