#include "base/secret.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <new>

namespace cakewalk {
namespace {

std::size_t PageSize() {
  static const std::size_t page = [] {
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? static_cast<std::size_t>(p) : std::size_t{4096};
  }();
  return page;
}

// Released one-page secrets are kept, wiped and still locked and out of core dumps, for the next
// secret instead of being unmapped. A Jira request allocates and releases a few (the cookie or
// bearer header, the answer's cookies), and each munmap made the kernel interrupt every CPU running
// one of the agent's threads to flush its TLB. Never destroyed: secrets in static storage may be
// released after the pool's destructor would have run.
class PagePool {
 public:
  static PagePool& Get() {
    static PagePool* pool = new PagePool();
    return *pool;
  }
  std::uint8_t* Pop() {
    std::lock_guard lock(mu_);
    return count_ > 0 ? pages_[--count_] : nullptr;
  }
  bool Push(std::uint8_t* page) {
    std::lock_guard lock(mu_);
    if (count_ == pages_.size()) return false;
    pages_[count_++] = page;
    return true;
  }

 private:
  std::mutex mu_;
  std::array<std::uint8_t*, 32> pages_{};  // at most 128 KiB kept
  std::size_t count_ = 0;
};

std::uint8_t* MapSecretPages(std::size_t bytes) {
  if (bytes == PageSize()) {
    if (std::uint8_t* page = PagePool::Get().Pop()) return page;  // wiped when it was pooled
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  // Best effort: keep the pages out of swap and out of core dumps. mlock can fail under a small
  // RLIMIT_MEMLOCK; the process is non-dumpable and core-less anyway (HardenProcess).
  (void)mlock(p, bytes);
  (void)madvise(p, bytes, MADV_DONTDUMP);
  return static_cast<std::uint8_t*>(p);
}

void UnmapSecretPages(std::uint8_t* p, std::size_t bytes) noexcept {
  if (p == nullptr) return;
  OPENSSL_cleanse(p, bytes);
  if (bytes == PageSize() && PagePool::Get().Push(p)) return;
  (void)munlock(p, bytes);
  (void)munmap(p, bytes);
}

bool IsSpace(std::uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

void ApplyTrim(SecretBytes& s, SecretBytes::Trim trim) {
  auto bytes = s.RevealMutable(SecretAccess::Grant());
  std::size_t begin = 0;
  std::size_t end = bytes.size();
  switch (trim) {
    case SecretBytes::Trim::kNone:
      return;
    case SecretBytes::Trim::kTrailingNewline:
      if (end > 0 && bytes[end - 1] == '\n') --end;
      if (end > 0 && bytes[end - 1] == '\r') --end;
      break;
    case SecretBytes::Trim::kWhitespace:
      while (begin < end && IsSpace(bytes[begin])) ++begin;
      while (end > begin && IsSpace(bytes[end - 1])) --end;
      break;
  }
  if (begin > 0) std::memmove(bytes.data(), bytes.data() + begin, end - begin);
  s.Truncate(end - begin);
}

}  // namespace

void WipeBytes(void* data, std::size_t size) noexcept {
  if (data != nullptr && size > 0) OPENSSL_cleanse(data, size);
}

void WipeString(std::string& s) noexcept {
  s.resize(s.capacity());
  WipeBytes(s.data(), s.size());
  s.clear();
}

SecretBytes::~SecretBytes() { Wipe(); }

SecretBytes::SecretBytes(SecretBytes&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      capacity_(std::exchange(other.capacity_, 0)) {}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    Wipe();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    capacity_ = std::exchange(other.capacity_, 0);
  }
  return *this;
}

void SecretBytes::Wipe() noexcept {
  UnmapSecretPages(data_, capacity_);
  data_ = nullptr;
  size_ = 0;
  capacity_ = 0;
}

void SecretBytes::Reserve(std::size_t capacity) {
  if (capacity <= capacity_) return;
  const std::size_t page = PageSize();
  const std::size_t bytes = (capacity + page - 1) / page * page;
  std::uint8_t* fresh = MapSecretPages(bytes);
  if (size_ > 0) std::memcpy(fresh, data_, size_);
  UnmapSecretPages(data_, capacity_);
  data_ = fresh;
  capacity_ = bytes;
}

SecretBytes SecretBytes::Allocate(std::size_t size) {
  SecretBytes s;
  s.Reserve(std::max<std::size_t>(size, 1));
  s.size_ = size;  // fresh anonymous pages are zero-filled, pooled ones were wiped to zeros
  return s;
}

SecretBytes SecretBytes::CopyOf(std::span<const std::uint8_t> bytes) {
  SecretBytes s = Allocate(bytes.size());
  if (!bytes.empty()) std::memcpy(s.data_, bytes.data(), bytes.size());
  return s;
}

SecretBytes SecretBytes::CopyOf(std::string_view bytes) {
  return CopyOf(std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
}

SecretBytes SecretBytes::Take(std::string& s) {
  SecretBytes out = CopyOf(std::string_view(s));
  WipeString(s);
  return out;
}

void SecretBytes::Append(std::span<const std::uint8_t> bytes) {
  if (bytes.empty()) return;
  if (size_ + bytes.size() > capacity_) Reserve(std::max(capacity_ * 2, size_ + bytes.size()));
  std::memcpy(data_ + size_, bytes.data(), bytes.size());
  size_ += bytes.size();
}

void SecretBytes::Append(std::string_view bytes) {
  Append(std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
}

void SecretBytes::Append(const SecretBytes& other) { Append(std::span(other.data_, other.size_)); }

void SecretBytes::Truncate(std::size_t size) noexcept {
  if (size >= size_) return;
  OPENSSL_cleanse(data_ + size, size_ - size);
  size_ = size;
}

SecretBytes SecretBytes::Clone() const { return CopyOf(std::span(data_, size_)); }

bool SecretBytes::ConstantTimeEquals(const SecretBytes& other) const noexcept {
  if (size_ != other.size_) return false;
  if (size_ == 0) return true;
  return CRYPTO_memcmp(data_, other.data_, size_) == 0;
}

Result<SecretBytes> SecretBytes::ReadFd(int fd, std::string_view what, std::size_t max_size,
                                        Trim trim) {
  SecretBytes s;
  s.Reserve(std::min<std::size_t>(max_size + 1, 4096));
  for (;;) {
    if (s.size_ == s.capacity_) {
      if (s.size_ > max_size) break;
      s.Reserve(s.capacity_ * 2);
    }
    ssize_t n = read(fd, s.data_ + s.size_, s.capacity_ - s.size_);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Unavailable("cannot read " + std::string(what) + ": " + std::strerror(errno));
    }
    if (n == 0) break;
    s.size_ += static_cast<std::size_t>(n);
    if (s.size_ > max_size) break;
  }
  if (s.size_ > max_size) {
    return InvalidArgument(std::string(what) + " is larger than " + std::to_string(max_size) +
                           " bytes; it does not look like the expected secret");
  }
  ApplyTrim(s, trim);
  return s;
}

Result<SecretBytes> SecretBytes::ReadFile(const std::filesystem::path& path, std::size_t max_size,
                                          Trim trim) {
  const std::string name = path.string();
  int fd = open(name.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return NotFound("secret file " + name + " does not exist");
    if (err == EACCES) {
      return PermissionDenied("cannot read secret file " + name +
                              ": permission denied (run as the agent's user)");
    }
    return Unavailable("cannot open secret file " + name + ": " + std::strerror(err));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return InvalidArgument("secret file " + name + " is not a regular file");
  }
  if ((st.st_mode & (S_IROTH | S_IWOTH)) != 0) {
    close(fd);
    return PermissionDenied("secret file " + name +
                            " is accessible to other users; run: chmod o-rwx " + name);
  }
  auto r = ReadFd(fd, "secret file " + name, max_size, trim);
  close(fd);
  return r;
}

Result<SecretBytes> SecretBytes::ReadStdin(std::string_view prompt, std::size_t max_size,
                                           Trim trim) {
  if (isatty(STDIN_FILENO) == 0) return ReadFd(STDIN_FILENO, "standard input", max_size, trim);

  termios saved{};
  const bool have_termios = tcgetattr(STDIN_FILENO, &saved) == 0;
  if (have_termios) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    quiet.c_lflag |= ICANON;
    (void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  }
  if (!prompt.empty()) {
    (void)!write(STDERR_FILENO, prompt.data(), prompt.size());
  }
  // On a terminal read one line, so that Enter finishes the input.
  SecretBytes s;
  s.Reserve(std::min<std::size_t>(max_size + 1, 4096));
  Status error;
  for (;;) {
    if (s.size_ == s.capacity_) s.Reserve(s.capacity_ * 2);
    std::uint8_t c = 0;
    ssize_t n = read(STDIN_FILENO, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || c == '\n') break;
    s.data_[s.size_++] = c;
    if (s.size_ > max_size) {
      error = InvalidArgument("input is longer than " + std::to_string(max_size) + " bytes");
      break;
    }
  }
  if (have_termios) (void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
  if (!prompt.empty()) (void)!write(STDERR_FILENO, "\n", 1);
  if (!error.ok()) return error;
  ApplyTrim(s, trim);
  return s;
}

}  // namespace cakewalk
