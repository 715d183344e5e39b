// FetchPool: the worker threads of an access sync. Tasks (one page fetch each, plus what it
// stores) run on `threads` threads, higher priority first, FIFO within a priority; a task may
// submit more tasks. The first task that fails stops the pool: its Status is kept, the pool's stop
// token is requested (so RestClient waits and the SyncGate end at once), queued tasks are dropped
// and Wait() returns that failure. A stop of the outer token does the same with "stopped".
//
// The number of threads only bounds how many fetches can be in flight; SyncGate decides how many
// are.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>
#include <vector>

#include "base/status.h"

namespace cakewalk::jira {

class FetchPool {
 public:
  enum Priority { kHigh = 0, kNormal = 1, kLow = 2 };
  using Task = std::function<Status()>;

  FetchPool(int threads, std::stop_token outer);
  ~FetchPool();  // stops and joins
  FetchPool(const FetchPool&) = delete;
  FetchPool& operator=(const FetchPool&) = delete;

  void Submit(Priority priority, Task task);
  // Records a failure from outside a task (first one wins) and stops the pool.
  void Fail(Status status);
  // The pool's stop token: requested on the first failure or when the outer token is.
  std::stop_token stop_token() const { return stop_.get_token(); }
  // The first failure, if any.
  std::optional<Status> failure() const;
  // True when no task is queued or running.
  bool Idle() const;
  // Blocks until the pool is idle or failed; returns the failure, else OK.
  Status Wait();
  std::int64_t tasks_done() const;

 private:
  void Worker();

  mutable std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable idle_cv_;
  std::deque<Task> queues_[3];
  int running_ = 0;
  bool shutdown_ = false;
  std::int64_t done_ = 0;
  std::optional<Status> failure_;
  std::stop_source stop_;
  std::optional<std::stop_callback<std::function<void()>>> outer_;
  std::vector<std::thread> threads_;
};

}  // namespace cakewalk::jira
