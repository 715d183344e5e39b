// TOTP throughput, three ways, in one run (a plain program, not a test; scripts/bench runs it):
//   agent     SecretStore::Totp on a token-resident seed (audit to a NullLogSink)
//   raw       a bare C_SignInit + C_Sign loop on the same key, through SoftHSM's own function
//             list (no p11-kit wrapper) and through p11-kit's managed wrapper (what the agent uses)
//   openssl   in-process HMAC with one EVP_MAC context reused (no token at all)
// and the ratios. The paths take turns in short slices (kSliceSeconds each, one after the other,
// the agent's and the raw loop's swapping places every other time, over --rounds x --seconds per
// path), so that a slow stretch of a shared host falls on all of them alike; each ratio is the
// median of the ratios of adjacent slices, with the 10th and 90th percentiles next to it, and
// each rate the median over its slices.
//
//   totp_bench [--seconds S] [--rounds N]
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <p11-kit/p11-kit.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "base/c_free.h"
#include "base/log.h"
#include "hsm/module.h"
#include "hsm/pin.h"
#include "hsm/secret_store.h"
#include "hsm/token.h"
#include "tests/bench/bench_report.h"
#include "tests/support/softhsm.h"

namespace {

using namespace cakewalk;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kSeed = "12345678901234567890";
constexpr const char* kSeedLabel = "cakewalk:seed:bench:totp:v1";

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "totp_bench: %s\n", what.c_str());
  std::exit(1);
}

constexpr double kSliceSeconds = 0.02;

// Runs `op` repeatedly for `seconds`; returns operations per second.
double Rate(double seconds, const std::function<bool()>& op) {
  const auto start = Clock::now();
  const auto stop = start + std::chrono::duration<double>(seconds);
  long long n = 0;
  auto now = start;
  while (now < stop) {
    for (int i = 0; i < 16; ++i) {
      if (!op()) Die("operation failed during measurement");
    }
    n += 16;
    now = Clock::now();
  }
  return static_cast<double>(n) / std::chrono::duration<double>(now - start).count();
}

double Quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

// One path's rate in every slice.
struct Slices {
  std::vector<double> rates;
  double Median() const { return Quantile(rates, 0.5); }
};

// The ratios a[i] / b[i] of slices taken next to each other: p10, median, p90.
struct PairedRatio {
  double p10, median, p90;
};
PairedRatio Paired(const Slices& a, const Slices& b) {
  std::vector<double> r;
  for (std::size_t i = 0; i < a.rates.size(); ++i) r.push_back(a.rates[i] / b.rates[i]);
  return {Quantile(r, 0.1), Quantile(r, 0.5), Quantile(r, 0.9)};
}

struct RawLoop {
  CK_FUNCTION_LIST* f = nullptr;
  CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
  CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;

  void Open(CK_FUNCTION_LIST* functions, const std::string& label, const std::string& pin) {
    f = functions;
    CK_ULONG n = 16;
    CK_SLOT_ID slots[16];
    if (f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK) Die("C_GetSlotList");
    for (CK_ULONG i = 0; i < n && session == CK_INVALID_HANDLE; ++i) {
      CK_TOKEN_INFO ti;
      if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK) continue;
      if (std::string(reinterpret_cast<char*>(ti.label), label.size()) != label) continue;
      if (f->C_OpenSession(slots[i], CKF_SERIAL_SESSION, nullptr, nullptr, &session) != CKR_OK) {
        Die("C_OpenSession");
      }
    }
    if (session == CK_INVALID_HANDLE) Die("token not found");
    const CK_RV rv =
        f->C_Login(session, CKU_USER, reinterpret_cast<CK_UTF8CHAR*>(const_cast<char*>(pin.data())),
                   static_cast<CK_ULONG>(pin.size()));
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) Die("C_Login");
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls},
                        {CKA_LABEL, const_cast<char*>(kSeedLabel), std::strlen(kSeedLabel)}};
    CK_ULONG found = 0;
    if (f->C_FindObjectsInit(session, t, 2) != CKR_OK ||
        f->C_FindObjects(session, &key, 1, &found) != CKR_OK || found != 1) {
      Die("seed key not found");
    }
    f->C_FindObjectsFinal(session);
  }

  bool Step() {
    static const std::uint8_t counter[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    CK_MECHANISM m{CKM_SHA_1_HMAC, nullptr, 0};
    std::uint8_t mac[64];
    CK_ULONG len = sizeof mac;
    return f->C_SignInit(session, &m, key) == CKR_OK &&
           f->C_Sign(session, const_cast<std::uint8_t*>(counter), 8, mac, &len) == CKR_OK &&
           len == 20;
  }
};

}  // namespace

int main(int argc, char** argv) {
  double seconds = 2.0;
  int rounds = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (a == "--rounds" && i + 1 < argc) {
      rounds = std::atoi(argv[++i]);
    } else {
      Die("usage: totp_bench [--seconds S] [--rounds N]");
    }
  }
  if (seconds <= 0 || rounds <= 0) Die("--seconds and --rounds must be positive");

  auto softhsm = testing::SoftHsm::Create("bench");
  if (!softhsm.ok()) Die(softhsm.status().ToString());
  const auto& spec = (*softhsm)->token();
  auto module = hsm::Module::Load(std::string(testing::SoftHsm::kModulePath));
  if (!module.ok()) Die(module.status().ToString());
  auto pin = hsm::ResolvePin(spec.pin_file);
  if (!pin.ok()) Die(pin.status().ToString());
  auto token = hsm::Token::Open(**module, spec.uri, std::move(*pin));
  if (!token.ok()) Die(token.status().ToString());
  NullLogSink audit;
  auto store = hsm::SecretStore::Open(**token, audit);
  if (!store.ok()) Die(store.status().ToString());
  hsm::TotpSeed seed;
  seed.key = SecretBytes::CopyOf(kSeed);
  if (auto e = (*store)->EnrollTotp("bench", seed, hsm::Activation::kCurrent); !e.ok()) {
    Die(e.status().ToString());
  }
  const SysTime at = SysTime(std::chrono::seconds(1700000000));
  auto agent = [&] {
    auto code = (*store)->Totp("bench", at, "benchmark");
    return code.ok() && code->code.size() == 6;
  };

  // Raw loops on the same key: SoftHSM's own function list, and p11-kit's managed wrapper.
  auto raw_direct_module = testing::RawPkcs11::Load();
  if (!raw_direct_module.ok()) Die(raw_direct_module.status().ToString());
  RawLoop direct;
  direct.Open((*raw_direct_module)->f(), spec.label, spec.user_pin);
  CK_FUNCTION_LIST* managed_functions = p11_kit_module_load(testing::SoftHsm::kModulePath, 0);
  if (managed_functions == nullptr || p11_kit_module_initialize(managed_functions) != CKR_OK) {
    Die("cannot load SoftHSM through p11-kit");
  }
  RawLoop managed;
  managed.Open(managed_functions, spec.label, spec.user_pin);

  // OpenSSL HMAC-SHA1 with one EVP_MAC context reused.
  using Mac = CPtr<EVP_MAC, EVP_MAC_free>;
  using MacCtx = CPtr<EVP_MAC_CTX, EVP_MAC_CTX_free>;
  Mac mac(EVP_MAC_fetch(nullptr, "HMAC", nullptr));
  MacCtx ctx(mac ? EVP_MAC_CTX_new(mac.get()) : nullptr);
  if (!ctx) Die("EVP_MAC");
  char digest_name[] = "SHA1";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
                         OSSL_PARAM_construct_end()};
  if (EVP_MAC_CTX_set_params(ctx.get(), params) != 1) Die("EVP_MAC_CTX_set_params");
  auto openssl = [&] {
    static const std::uint8_t counter[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    unsigned char out[64];
    std::size_t len = 0;
    return EVP_MAC_init(ctx.get(), reinterpret_cast<const unsigned char*>(kSeed.data()),
                        kSeed.size(), nullptr) == 1 &&
           EVP_MAC_update(ctx.get(), counter, sizeof counter) == 1 &&
           EVP_MAC_final(ctx.get(), out, &len, sizeof out) == 1 && len == 20;
  };

  // Warm up, then take turns in short slices.
  Rate(0.2, agent);
  Rate(0.2, [&] { return direct.Step(); });
  Slices s_agent, s_direct, s_managed, s_openssl;
  const long slices = std::max(1L, std::lround(seconds * rounds / kSliceSeconds));
  for (long i = 0; i < slices; ++i) {  // the agent and the raw loop swap places every other time
    if (i % 2 == 1) s_direct.rates.push_back(Rate(kSliceSeconds, [&] { return direct.Step(); }));
    s_agent.rates.push_back(Rate(kSliceSeconds, agent));
    if (i % 2 == 0) s_direct.rates.push_back(Rate(kSliceSeconds, [&] { return direct.Step(); }));
    s_managed.rates.push_back(Rate(kSliceSeconds, [&] { return managed.Step(); }));
    s_openssl.rates.push_back(Rate(kSliceSeconds, openssl));
  }
  const double agent_rate = s_agent.Median(), direct_rate = s_direct.Median();
  const double managed_rate = s_managed.Median(), openssl_rate = s_openssl.Median();
  const PairedRatio vs_direct = Paired(s_agent, s_direct);
  const PairedRatio vs_managed = Paired(s_agent, s_managed);
  const PairedRatio vs_openssl = Paired(s_agent, s_openssl);

  std::printf(
      "TOTP (HMAC-SHA1 over the 8-byte counter), SoftHSM token key, %ld slices of %.0f ms per "
      "path, taking turns; medians\n",
      slices, kSliceSeconds * 1000);
  std::printf("  %-44s %12.0f ops/s  %8.2f us/op\n", "agent: SecretStore::Totp", agent_rate,
              1e6 / agent_rate);
  std::printf("  %-44s %12.0f ops/s  %8.2f us/op\n", "raw C_SignInit+C_Sign (SoftHSM directly)",
              direct_rate, 1e6 / direct_rate);
  std::printf("  %-44s %12.0f ops/s  %8.2f us/op\n", "raw C_SignInit+C_Sign (p11-kit managed)",
              managed_rate, 1e6 / managed_rate);
  std::printf("  %-44s %12.0f ops/s  %8.2f us/op\n", "OpenSSL EVP_MAC in process (reused ctx)",
              openssl_rate, 1e6 / openssl_rate);
  std::printf(
      "  ratio agent / raw (SoftHSM directly)   %6.3f  p10 %.3f p90 %.3f  (target >= 0.90: %s)\n",
      vs_direct.median, vs_direct.p10, vs_direct.p90, vs_direct.median >= 0.9 ? "met" : "MISSED");
  std::printf("  ratio agent / raw (p11-kit managed)    %6.3f  p10 %.3f p90 %.3f\n",
              vs_managed.median, vs_managed.p10, vs_managed.p90);
  std::printf("  ratio OpenSSL / agent                  %6.1f\n", 1 / vs_openssl.median);

  char spread[96];
  std::snprintf(spread, sizeof spread, "median of %ld paired %.0f ms slices (p10 %.3f, p90 %.3f)",
                slices, kSliceSeconds * 1000, vs_direct.p10, vs_direct.p90);
  const std::string rounds_note = std::string(spread) + ", SoftHSM token key";
  bench::Figure raw;
  raw.section = "totp";
  raw.id = "totp.agent_vs_raw";
  raw.name = "TOTP agent path vs raw C_Sign";
  raw.value = agent_rate;
  raw.unit = "ops/s";
  raw.reference = direct_rate;
  raw.reference_name = "raw C_Sign";
  raw.ratio = vs_direct.median;
  raw.target = "ratio >= 0.9";
  raw.met = *raw.ratio >= 0.9;
  raw.note = rounds_note;
  bench::Report(raw);
  bench::Figure managed_f;
  managed_f.section = "totp";
  managed_f.id = "totp.agent_vs_p11kit";
  managed_f.name = "TOTP agent path vs C_Sign via p11-kit";
  managed_f.value = agent_rate;
  managed_f.unit = "ops/s";
  managed_f.reference = managed_rate;
  managed_f.reference_name = "p11-kit C_Sign";
  managed_f.ratio = vs_managed.median;
  bench::Report(managed_f);
  bench::Figure ossl;
  ossl.section = "totp";
  ossl.id = "totp.agent_vs_openssl";
  ossl.name = "TOTP agent path vs OpenSSL HMAC";
  ossl.value = agent_rate;
  ossl.unit = "ops/s";
  ossl.reference = openssl_rate;
  ossl.reference_name = "EVP_MAC";
  ossl.ratio = vs_openssl.median;
  bench::Report(ossl);

  managed.f->C_CloseSession(managed.session);
  p11_kit_module_finalize(managed_functions);
  p11_kit_module_release(managed_functions);
  direct.f->C_CloseSession(direct.session);
  raw_direct_module->reset();
  store->reset();
  token->reset();
  (void)(*module)->Close();
  return 0;
}
