// Many threads computing TOTP codes, unsealing and signing at once through one Token.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <atomic>
#include <thread>

#include "hsm/key_pair.h"
#include "tests/hsm/fixture.h"

namespace cakewalk::testing {
namespace {

std::string HostTotp(std::string_view seed, long long t) {
  const auto counter = hsm::TotpCounterBytes(static_cast<std::uint64_t>(t / 30));
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha1(), seed.data(), static_cast<int>(seed.size()), counter.data(), counter.size(), mac,
       &len);
  hsm::OneTimeCode code(hsm::DynamicTruncate(std::span(mac, len), 6), 6);
  return std::string(code.Reveal(SecretAccess::Grant()));
}

class ConcurrencyTest : public TokenFixture {};

TEST_F(ConcurrencyTest, ThreadsShareOneTokenSafely) {
  const std::string seed = "0123456789abcdefghij";
  hsm::TotpSeed s;
  s.key = SecretBytes::CopyOf(seed);
  ASSERT_TRUE(store_->EnrollTotp("c", s, hsm::Activation::kCurrent).ok());
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(store_
                    ->Put("c", "secret-" + std::to_string(i),
                          SecretBytes::CopyOf("value-" + std::to_string(i)))
                    .ok());
  }
  auto key = hsm::KeyPair::Generate(*token_, hsm::KeyType::kEcP256, "threads");
  ASSERT_TRUE(key.ok());

  constexpr int kThreads = 8;
  constexpr int kRounds = 40;
  std::atomic<int> failures{0};
  std::atomic<int> done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        const long long when = 1700000000LL + 30LL * (t * kRounds + r);
        auto code = store_->Totp("c", UnixTime(when), "concurrency");
        if (!code.ok() || code->code.Reveal(SecretAccess::Grant()) != HostTotp(seed, when)) {
          ++failures;
        }
        const int i = (t + r) % 4;
        auto value = store_->Unseal("c", "secret-" + std::to_string(i), "concurrency");
        if (!value.ok() ||
            value->RevealString(SecretAccess::Grant()) != "value-" + std::to_string(i)) {
          ++failures;
        }
        if (r % 8 == 0) {
          std::vector<std::uint8_t> digest(32, static_cast<std::uint8_t>(r));
          auto sig = (*key)->Sign(hsm::SignScheme::kEcdsa, digest);
          if (!sig.ok() || sig->size() != 64) ++failures;
        }
        ++done;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(done.load(), kThreads * kRounds);
  EXPECT_EQ(audit_.WithId(event::kSecretUsed).size(), 2u * kThreads * kRounds);
}

}  // namespace
}  // namespace cakewalk::testing
