// FetchPool (jira/sync_pool.h): nested work, the first failure stops everything, priorities.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>

#include "jira/errors.h"
#include "jira/sync_pool.h"

namespace cakewalk::jira {
namespace {

TEST(FetchPoolTest, RunsNestedTasksToCompletion) {
  FetchPool pool(4, {});
  std::atomic<int> ran{0};
  std::function<Status(int)> spawn = [&](int depth) -> Status {
    ++ran;
    if (depth < 5) {
      for (int i = 0; i < 2; ++i)
        pool.Submit(FetchPool::kNormal, [&, depth] { return spawn(depth + 1); });
    }
    return Status::Ok();
  };
  pool.Submit(FetchPool::kNormal, [&] { return spawn(0); });
  EXPECT_TRUE(pool.Wait().ok());
  EXPECT_EQ(ran.load(), 63);
  EXPECT_TRUE(pool.Idle());
  EXPECT_EQ(pool.tasks_done(), 63);
}

TEST(FetchPoolTest, FirstFailureStopsAndIsReported) {
  FetchPool pool(2, {});
  std::atomic<int> after{0};
  pool.Submit(FetchPool::kNormal, [] { return JiraUnavailable("page 3 could not be fetched"); });
  Status s = pool.Wait();
  EXPECT_EQ(s.reason(), "jira_unavailable");
  EXPECT_TRUE(pool.stop_token().stop_requested());
  pool.Submit(FetchPool::kNormal, [&] {
    ++after;
    return Status::Ok();
  });
  pool.Fail(JiraInternal("second"));
  EXPECT_EQ(pool.Wait().reason(), "jira_unavailable");  // the first one wins
  EXPECT_EQ(after.load(), 0);
}

TEST(FetchPoolTest, OuterStopStopsThePool) {
  std::stop_source outer;
  FetchPool pool(2, outer.get_token());
  std::atomic<bool> saw_stop{false};
  pool.Submit(FetchPool::kNormal, [&] {
    auto token = pool.stop_token();
    while (!token.stop_requested()) std::this_thread::yield();
    saw_stop = true;
    return Status::Ok();
  });
  outer.request_stop();
  EXPECT_EQ(pool.Wait().reason(), "stopped");
  // Destruction joins the worker, which has seen the stop.
}

TEST(FetchPoolTest, HigherPriorityFirst) {
  FetchPool pool(1, {});
  std::mutex mu;
  std::vector<std::string> order;
  std::atomic<bool> release{false};
  pool.Submit(FetchPool::kNormal, [&] {
    while (!release) std::this_thread::yield();
    return Status::Ok();
  });
  auto log = [&](std::string s) {
    return [&, s] {
      std::lock_guard lock(mu);
      order.push_back(s);
      return Status::Ok();
    };
  };
  pool.Submit(FetchPool::kLow, log("low"));
  pool.Submit(FetchPool::kNormal, log("normal"));
  pool.Submit(FetchPool::kHigh, log("high"));
  release = true;
  ASSERT_TRUE(pool.Wait().ok());
  EXPECT_EQ(order, (std::vector<std::string>{"high", "normal", "low"}));
}

}  // namespace
}  // namespace cakewalk::jira
