// RAII for sd-bus handles (private to systemd/; public headers stay free of sd-bus types).
#pragma once

#include <systemd/sd-bus.h>

#include <string>

#include "base/c_free.h"

namespace cakewalk::sd {

using BusPtr = CPtr<sd_bus, sd_bus_flush_close_unref>;
using MessagePtr = CPtr<sd_bus_message, sd_bus_message_unref>;
using SlotPtr = CPtr<sd_bus_slot, sd_bus_slot_unref>;

// An sd_bus_error that frees itself.
class BusError {
 public:
  BusError() = default;
  ~BusError() { sd_bus_error_free(&e_); }
  BusError(const BusError&) = delete;
  BusError& operator=(const BusError&) = delete;

  sd_bus_error* get() noexcept { return &e_; }
  bool is_set() const noexcept { return sd_bus_error_is_set(&e_) != 0; }
  std::string name() const { return e_.name != nullptr ? e_.name : ""; }
  std::string message() const { return e_.message != nullptr ? e_.message : ""; }

 private:
  // SD_BUS_ERROR_NULL, spelled without its C compound literal (clang refuses it in C++ with
  // -Wpedantic): every member zero.
  sd_bus_error e_{};
};

}  // namespace cakewalk::sd
