// SecretBytes: the one type that holds plaintext secret bytes in this process.
//
// - Move-only; the bytes live in their own mlock()ed, MADV_DONTDUMP pages and are wiped with
//   OPENSSL_cleanse when released, resized or moved from. Wiped single pages are kept for the
//   next secret (at most 32) rather than unmapped.
// - No formatter, no operator<<, no implicit conversion to a string.
// - Plaintext is reached only through Reveal*(SecretAccess::Grant()); `git grep
//   SecretAccess::Grant` therefore lists every place in the tree that touches a secret's value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#include "base/status.h"

namespace cakewalk {

class SecretAccess {
 public:
  static SecretAccess Grant() noexcept { return SecretAccess(); }

 private:
  SecretAccess() = default;
};

class SecretBytes {
 public:
  enum class Trim {
    kNone,
    kTrailingNewline,  // strips one trailing "\n" or "\r\n" (files written with echo)
    kWhitespace,       // strips leading and trailing ASCII whitespace
  };

  SecretBytes() noexcept = default;
  ~SecretBytes();
  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;

  // Zero-filled secret of `size` bytes, to be written through RevealMutable.
  static SecretBytes Allocate(std::size_t size);
  static SecretBytes CopyOf(std::span<const std::uint8_t> bytes);
  static SecretBytes CopyOf(std::string_view bytes);
  // Moves the content of `s` into secret memory and wipes `s` (its whole capacity).
  static SecretBytes Take(std::string& s);

  // Reads a secret file (a PIN, an enrollment token). Refuses files that are not regular files,
  // that others can read or write, or that exceed `max_size` — with a message naming the file.
  static Result<SecretBytes> ReadFile(const std::filesystem::path& path, std::size_t max_size,
                                      Trim trim);
  static Result<SecretBytes> ReadFd(int fd, std::string_view what, std::size_t max_size, Trim trim);
  // Reads standard input until EOF, or one line when it is a terminal; on a terminal, prints
  // `prompt` to stderr and turns echo off.
  static Result<SecretBytes> ReadStdin(std::string_view prompt, std::size_t max_size, Trim trim);

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }

  std::span<const std::uint8_t> Reveal(SecretAccess) const noexcept { return {data_, size_}; }
  std::span<std::uint8_t> RevealMutable(SecretAccess) noexcept { return {data_, size_}; }
  std::string_view RevealString(SecretAccess) const noexcept {
    return {reinterpret_cast<const char*>(data_), size_};
  }

  // Appends bytes (e.g. building "Basic " + base64(user:password)); growth re-allocates into
  // fresh secret pages and wipes the old ones.
  void Append(std::span<const std::uint8_t> bytes);
  void Append(std::string_view bytes);
  void Append(const SecretBytes& other);
  // Shrinks to `size` bytes, wiping the tail.
  void Truncate(std::size_t size) noexcept;
  // An explicit copy; there is no copy constructor so copies stay visible in review.
  SecretBytes Clone() const;
  bool ConstantTimeEquals(const SecretBytes& other) const noexcept;
  // Wipes and releases the bytes now.
  void Wipe() noexcept;

 private:
  void Reserve(std::size_t capacity);

  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;  // bytes mapped at data_ (whole pages)
};

// Wipes a buffer that held secret bytes (std::string, std::vector, C arrays) before release.
void WipeBytes(void* data, std::size_t size) noexcept;
void WipeString(std::string& s) noexcept;

}  // namespace cakewalk
