// A scripted AgentControl for the D-Bus tests. Set the fields before the loop runs; the bus
// handlers call it on the loop thread; RotateSecret's reply may come from another thread.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "systemd/agent_control.h"

namespace cakewalk::testing {

class FakeAgent final : public sd::AgentControl {
 public:
  sd::StatusSnapshot status;
  Result<std::vector<sd::SecretInfo>> secrets = std::vector<sd::SecretInfo>{};
  // Default: answers at once with version 7.
  std::function<void(std::string, std::string, sd::Reply<int64_t>)> on_rotate =
      [](std::string, std::string, sd::Reply<int64_t> done) { std::move(done).Send(int64_t{7}); };
  Status reload_result = Status::Ok();

  std::atomic<int> get_status_calls{0};
  std::atomic<int> reload_calls{0};

  sd::StatusSnapshot GetStatus() override {
    ++get_status_calls;
    return status;
  }
  Result<std::vector<sd::SecretInfo>> ListSecrets() override { return secrets; }
  void RotateSecret(std::string connection, std::string name, sd::Reply<int64_t> done) override {
    {
      std::lock_guard lock(mu_);
      rotations_.emplace_back(connection, name);
    }
    on_rotate(std::move(connection), std::move(name), std::move(done));
  }
  Status Reload() override {
    ++reload_calls;
    return reload_result;
  }

  std::vector<std::pair<std::string, std::string>> rotations() const {
    std::lock_guard lock(mu_);
    return rotations_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::pair<std::string, std::string>> rotations_;
};

}  // namespace cakewalk::testing
