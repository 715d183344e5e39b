// A process that ends without tearing anything down, to check the exit-order contract of
// hsm/module.h: OpenSSL (initialised first, like in the agent) cleans up after the module's own
// static destructors, and a late user of a token object — like an OpenSSL provider freeing or
// using its key from OpenSSL's atexit handler — must get an error, not a crash.
//
//   exit_order_helper <module path> <token uri> <pin file>
// Prints "late totp: <CODE>" and "late sign: <CODE>" from a handler that runs after the module
// was finalised, and exits 0.
#include <openssl/crypto.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "base/log.h"
#include "hsm/key_pair.h"
#include "hsm/module.h"
#include "hsm/pin.h"
#include "hsm/secret_store.h"
#include "hsm/token.h"

namespace {

using namespace cakewalk;

// Deliberately leaked: alive until the very end of the process.
hsm::Module* g_module = nullptr;
hsm::Token* g_token = nullptr;
hsm::SecretStore* g_store = nullptr;
hsm::KeyPair* g_key = nullptr;

void LateUser() {
  std::printf("late module closed: %s\n", g_module->closed() ? "yes" : "no");
  std::printf("late token: %s\n", g_token->info().label.c_str());
  auto code = g_store->Totp("c", SysTime(std::chrono::seconds(59)), "late");
  std::printf("late totp: %s\n",
              code.ok() ? "OK" : std::string(CodeName(code.status().code())).c_str());
  std::vector<std::uint8_t> digest(32, 1);
  auto sig = g_key->Sign(hsm::SignScheme::kEcdsa, digest);
  std::printf("late sign: %s\n",
              sig.ok() ? "OK" : std::string(CodeName(sig.status().code())).c_str());
  std::fflush(stdout);
}

int Fail(const Status& s) {
  std::fprintf(stderr, "exit_order_helper: %s\n", s.ToString().c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) return 2;
  OPENSSL_init_crypto(0, nullptr);
  std::atexit(LateUser);  // registered before the module is loaded: runs after its teardown
  auto module = hsm::Module::Load(std::string(argv[1]));
  if (!module.ok()) return Fail(module.status());
  auto pin = hsm::ResolvePin(std::filesystem::path(argv[3]));
  if (!pin.ok()) return Fail(pin.status());
  auto token = hsm::Token::Open(**module, argv[2], std::move(*pin));
  if (!token.ok()) return Fail(token.status());
  static NullLogSink audit;
  auto store = hsm::SecretStore::Open(**token, audit);
  if (!store.ok()) return Fail(store.status());
  hsm::TotpSeed seed;
  seed.key = SecretBytes::CopyOf(std::string_view("12345678901234567890"));
  if (auto e = (*store)->EnrollTotp("c", seed, hsm::Activation::kCurrent); !e.ok()) {
    return Fail(e.status());
  }
  auto key = hsm::KeyPair::Generate(**token, hsm::KeyType::kEcP256, "exit-order");
  if (!key.ok()) return Fail(key.status());
  auto code = (*store)->Totp("c", SysTime(std::chrono::seconds(59)), "before exit");
  if (!code.ok()) return Fail(code.status());
  std::printf("before exit: %s\n", std::string(code->code.Reveal(SecretAccess::Grant())).c_str());
  std::fflush(stdout);
  g_store = store->release();
  g_key = key->release();
  g_module = module->release();
  g_token = token->release();
  return 0;
}
