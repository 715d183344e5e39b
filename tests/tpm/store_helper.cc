// TEST HELPER: another process that changes the token while a test holds it open.
//
//   tpm_store_helper put <module> <token-uri> <pin-file> <connection> <name>   (value on stdin)
//
// Stores the value as a new current version through hsm::SecretStore and exits 0, or prints the
// error and exits 1. The environment (TPM2_PKCS11_STORE, TCTI, D-Bus address) comes from the
// test that runs it.
#include <iostream>
#include <string>

#include "base/log.h"
#include "base/secret.h"
#include "hsm/module.h"
#include "hsm/pin.h"
#include "hsm/secret_store.h"
#include "hsm/token.h"

namespace {

class NullSink final : public cakewalk::LogSink {
 public:
  void Write(cakewalk::Severity, std::string_view, std::string_view,
             std::span<const cakewalk::LogField>) noexcept override {}
};

int Fail(const cakewalk::Status& s) {
  std::cerr << s.ToString() << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace cakewalk;
  if (argc != 7 || std::string(argv[1]) != "put") {
    std::cerr << "usage: tpm_store_helper put MODULE URI PIN_FILE CONNECTION NAME < value\n";
    return 2;
  }
  auto value = SecretBytes::ReadStdin("", 64 * 1024, SecretBytes::Trim::kNone);
  if (!value.ok()) return Fail(value.status());
  auto module = hsm::Module::Load(std::string(argv[2]));
  if (!module.ok()) return Fail(module.status());
  auto pin = hsm::ResolvePin(argv[4]);
  if (!pin.ok()) return Fail(pin.status());
  auto token = hsm::Token::Open(**module, argv[3], std::move(*pin));
  if (!token.ok()) return Fail(token.status());
  NullSink sink;
  auto store = hsm::SecretStore::Open(**token, sink);
  if (!store.ok()) return Fail(store.status());
  auto put = (*store)->Put(argv[5], argv[6], *value);
  if (!put.ok()) return Fail(put.status());
  store->reset();
  token->reset();
  Status closed = (*module)->Close();
  if (!closed.ok()) return Fail(closed);
  return 0;
}
