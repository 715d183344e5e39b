// EventLoop in-process: cross-thread posting, stop requests, periodic callbacks, reload, failure
// containment; and Reply's exactly-once contract.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "systemd/agent_control.h"
#include "systemd/bus_api.h"
#include "systemd/event_loop.h"
#include "tests/support/capture_log.h"

namespace cakewalk::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

std::unique_ptr<sd::EventLoop> NewLoop(LogSink& log) {
  auto loop = sd::EventLoop::Create(sd::Notifier::FromEnvironment(), log,
                                    sd::EventLoop::Options{.handle_signals = false});
  if (!loop.ok()) throw std::runtime_error(loop.status().ToString());
  return std::move(*loop);
}

TEST(EventLoopTest, PostedFunctionsRunInOrderOnTheLoopThread) {
  CapturingLogSink log;
  auto loop = NewLoop(log);
  const auto loop_thread = std::this_thread::get_id();
  std::vector<int> order;
  bool all_on_loop_thread = true;
  sd::LoopHandle handle = loop->handle();
  std::thread worker([&] {
    for (int i = 0; i < 100; ++i) {
      ASSERT_TRUE(handle.Post([&, i] {
        order.push_back(i);
        all_on_loop_thread = all_on_loop_thread && std::this_thread::get_id() == loop_thread;
      }));
    }
    handle.RequestStop(Status::Ok());
  });
  const sd::LoopExit exit = loop->Run();
  worker.join();
  EXPECT_EQ(exit.reason, sd::LoopExit::Reason::kStopRequested);
  EXPECT_TRUE(exit.status.ok());
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[static_cast<size_t>(i)], i);
  EXPECT_TRUE(all_on_loop_thread);
}

TEST(EventLoopTest, TheFirstStopReasonWins) {
  CapturingLogSink log;
  auto loop = NewLoop(log);
  loop->handle().RequestStop(FailedPrecondition("token PIN incorrect"));
  loop->handle().RequestStop(Status::Ok());
  const sd::LoopExit exit = loop->Run();
  EXPECT_EQ(exit.reason, sd::LoopExit::Reason::kStopRequested);
  EXPECT_EQ(exit.status.code(), Code::kFailedPrecondition);
  EXPECT_EQ(exit.status.message(), "token PIN incorrect");
}

TEST(EventLoopTest, HandlesOutliveTheLoopSafely) {
  CapturingLogSink log;
  auto loop = NewLoop(log);
  sd::LoopHandle handle = loop->handle();
  bool ran = false;
  EXPECT_TRUE(handle.Post([&] { ran = true; }));  // queued, never run
  loop.reset();
  EXPECT_FALSE(ran);
  EXPECT_FALSE(handle.Post([&] { ran = true; }));
  handle.RequestStop(Status::Ok());  // no effect, no crash
  EXPECT_FALSE(sd::LoopHandle().Post([] {}));
}

TEST(EventLoopTest, PeriodicCallbacksRepeat) {
  CapturingLogSink log;
  auto loop = NewLoop(log);
  int ticks = 0;
  ASSERT_TRUE(loop->AddPeriodic(20ms,
                                [&] {
                                  if (++ticks == 5)
                                    loop->Exit({sd::LoopExit::Reason::kStopRequested, 0, {}});
                                })
                  .ok());
  EXPECT_EQ(loop->AddPeriodic(0ms, [] {}).code(), Code::kInvalidArgument);
  const sd::LoopExit exit = loop->Run();
  EXPECT_EQ(exit.reason, sd::LoopExit::Reason::kStopRequested);
  EXPECT_EQ(ticks, 5);
}

TEST(EventLoopTest, AThrowingCallbackEndsTheLoopAsFailed) {
  CapturingLogSink log;
  auto loop = NewLoop(log);
  loop->handle().Post([] { throw std::runtime_error("boom"); });
  const sd::LoopExit exit = loop->Run();
  EXPECT_EQ(exit.reason, sd::LoopExit::Reason::kFailed);
  EXPECT_THAT(exit.status.message(), HasSubstr("boom"));
}

TEST(EventLoopTest, RunTwiceOrFromAnotherThreadIsRefused) {
  CapturingLogSink log;
  auto loop = NewLoop(log);
  sd::LoopExit other;
  std::thread t([&] { other = loop->Run(); });
  t.join();
  EXPECT_EQ(other.reason, sd::LoopExit::Reason::kFailed);
  EXPECT_EQ(other.status.code(), Code::kFailedPrecondition);
  loop->handle().RequestStop(Status::Ok());
  EXPECT_EQ(loop->Run().reason, sd::LoopExit::Reason::kStopRequested);
  EXPECT_EQ(loop->Run().status.code(), Code::kFailedPrecondition);
}

TEST(EventLoopTest, ReloadRunsTheHandlerAndLogsTheOutcome) {
  CapturingLogSink log;
  auto loop = NewLoop(log);
  EXPECT_EQ(loop->Reload().code(), Code::kFailedPrecondition);  // no handler
  int calls = 0;
  Status next = Status::Ok();
  loop->SetReloadHandler([&] {
    ++calls;
    return next;
  });
  EXPECT_TRUE(loop->Reload().ok());
  next = InvalidArgument("connections[0].base_url: must be https");
  EXPECT_EQ(loop->Reload().code(), Code::kInvalidArgument);
  EXPECT_EQ(calls, 2);
  const auto entries = log.WithId(event::kConfig);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].message, "configuration reloaded");
  EXPECT_THAT(entries[1].message, HasSubstr("previous configuration stays in effect"));
  EXPECT_EQ(entries[1].Field("ERROR_CODE"), "INVALID_ARGUMENT");
}

TEST(ReplyTest, SendsExactlyOnce) {
  std::vector<int64_t> got;
  {
    sd::Reply<int64_t> r([&](Result<int64_t> v) { got.push_back(v.ok() ? *v : -1); });
    sd::Reply<int64_t> moved = std::move(r);
    std::move(moved).Send(int64_t{5});
    std::move(moved).Send(int64_t{6});  // ignored
  }
  EXPECT_THAT(got, ElementsAre(5));
}

TEST(ReplyTest, DroppingAnswersAborted) {
  Status seen = Status::Ok();
  {
    sd::Reply<int64_t> r([&](Result<int64_t> v) { seen = v.status(); });
  }
  EXPECT_EQ(seen.code(), Code::kAborted);
  EXPECT_EQ(seen.message(), "the agent dropped the request");
}

TEST(BusApiTest, EveryCodeHasItsOwnErrorNameAndMapsBack) {
  const Code codes[] = {Code::kInvalidArgument,   Code::kNotFound,        Code::kAlreadyExists,
                        Code::kPermissionDenied,  Code::kUnauthenticated, Code::kFailedPrecondition,
                        Code::kAborted,           Code::kUnavailable,     Code::kDeadlineExceeded,
                        Code::kResourceExhausted, Code::kInternal};
  std::vector<std::string> names;
  for (Code c : codes) {
    const std::string name = sd::ErrorNameFor(c);
    EXPECT_EQ(sd::CodeForErrorName(name), c) << name;
    for (const auto& other : names) EXPECT_NE(other, name);
    names.push_back(name);
  }
  EXPECT_EQ(sd::ErrorNameFor(Code::kNotFound), "security.cakewalk.Agent1.Error.NotFound");
  EXPECT_EQ(sd::ErrorNameFor(Code::kDeadlineExceeded), "security.cakewalk.Agent1.Error.Timeout");
  EXPECT_EQ(sd::ErrorNameFor(Code::kInternal), "security.cakewalk.Agent1.Error.Failed");
  EXPECT_FALSE(sd::CodeForErrorName("org.freedesktop.DBus.Error.Failed").has_value());
  EXPECT_FALSE(sd::CodeForErrorName("security.cakewalk.Agent1.Error.Bogus").has_value());
}

TEST(BusApiTest, NamesAreValidatedStrictly) {
  EXPECT_TRUE(sd::ValidateName("connection", "jira-prod").ok());
  EXPECT_TRUE(sd::ValidateName("connection", "control-plane").ok());
  EXPECT_TRUE(sd::ValidateName("secret name", "oauth-refresh-token").ok());
  EXPECT_TRUE(sd::ValidateName("x", std::string(64, 'a')).ok());
  for (const char* bad : {"", "../etc", "a/b", "-x", ".hidden", "a b", "jira\nprod", "ü"}) {
    EXPECT_EQ(sd::ValidateName("connection", bad).code(), Code::kInvalidArgument) << bad;
  }
  EXPECT_EQ(sd::ValidateName("x", std::string(65, 'a')).code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace cakewalk::testing
