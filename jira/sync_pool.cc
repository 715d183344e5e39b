#include "jira/sync_pool.h"

#include <algorithm>

#include "jira/errors.h"

namespace cakewalk::jira {

FetchPool::FetchPool(int threads, std::stop_token outer) {
  outer_.emplace(std::move(outer), std::function<void()>([this] { Fail(Stopped()); }));
  const int n = std::max(1, threads);
  threads_.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) threads_.emplace_back([this] { Worker(); });
}

FetchPool::~FetchPool() {
  outer_.reset();
  {
    std::lock_guard lock(mu_);
    shutdown_ = true;
    for (auto& q : queues_) q.clear();
  }
  stop_.request_stop();
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void FetchPool::Submit(Priority priority, Task task) {
  {
    std::lock_guard lock(mu_);
    if (failure_ || shutdown_) return;
    queues_[priority].push_back(std::move(task));
  }
  work_cv_.notify_one();
}

void FetchPool::Fail(Status status) {
  {
    std::lock_guard lock(mu_);
    if (!failure_) failure_ = std::move(status);
    for (auto& q : queues_) q.clear();
  }
  stop_.request_stop();
  work_cv_.notify_all();
  idle_cv_.notify_all();
}

std::optional<Status> FetchPool::failure() const {
  std::lock_guard lock(mu_);
  return failure_;
}

bool FetchPool::Idle() const {
  std::lock_guard lock(mu_);
  return running_ == 0 && std::all_of(std::begin(queues_), std::end(queues_),
                                      [](const auto& q) { return q.empty(); });
}

Status FetchPool::Wait() {
  std::unique_lock lock(mu_);
  idle_cv_.wait(lock, [&] {
    return failure_.has_value() ||
           (running_ == 0 && std::all_of(std::begin(queues_), std::end(queues_),
                                         [](const auto& q) { return q.empty(); }));
  });
  return failure_ ? *failure_ : Status::Ok();
}

std::int64_t FetchPool::tasks_done() const {
  std::lock_guard lock(mu_);
  return done_;
}

void FetchPool::Worker() {
  std::unique_lock lock(mu_);
  while (true) {
    work_cv_.wait(lock, [&] {
      return shutdown_ || std::any_of(std::begin(queues_), std::end(queues_),
                                      [](const auto& q) { return !q.empty(); });
    });
    if (shutdown_) return;
    Task task;
    for (auto& q : queues_) {
      if (!q.empty()) {
        task = std::move(q.front());
        q.pop_front();
        break;
      }
    }
    ++running_;
    lock.unlock();
    Status s;
    try {
      s = task();
    } catch (const std::exception& e) {
      s = JiraInternal(std::string("an access sync task threw: ") + e.what());
    } catch (...) {
      s = JiraInternal("an access sync task threw");
    }
    task = nullptr;
    if (!s.ok()) Fail(s);
    lock.lock();
    --running_;
    ++done_;
    if (running_ == 0) idle_cv_.notify_all();
  }
}

}  // namespace cakewalk::jira
