// RAII for C handles: one generic deleter, one alias per type where it is used.
//
//   using EvpPkey = std::unique_ptr<EVP_PKEY, CFree<EVP_PKEY_free>>;
#pragma once

#include <memory>

namespace cakewalk {

template <auto Free>
struct CFree {
  template <class T>
  void operator()(T* p) const noexcept {
    if (p != nullptr) Free(p);
  }
};

template <class T, auto Free>
using CPtr = std::unique_ptr<T, CFree<Free>>;

}  // namespace cakewalk
