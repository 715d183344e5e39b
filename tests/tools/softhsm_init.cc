// softhsm-init: creates a private SoftHSM2 token store for the demo and the chaos runs, the same
// way the tests do (PKCS#11 C_InitToken/C_InitPIN, never a PIN on a command line).
//
//   softhsm-init --dir DIR [--label LABEL]
// Creates DIR/cakewalk-softhsm.XXXXXX/{softhsm2.conf,tokens/,LABEL.pin} and prints, one per line:
//   SOFTHSM2_CONF=<path>  TOKEN_URI=<uri>  PIN_FILE=<path>
#include <cstdlib>
#include <iostream>
#include <string>

#include "tests/support/softhsm.h"

int main(int argc, char** argv) {
  std::string dir;
  std::string label = "cakewalk";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else if (a == "--label" && i + 1 < argc) {
      label = argv[++i];
    } else {
      std::cerr << "usage: softhsm-init --dir DIR [--label LABEL]\n";
      return 64;
    }
  }
  if (dir.empty()) {
    std::cerr << "softhsm-init: --dir is required\n";
    return 64;
  }
  setenv("TMPDIR", dir.c_str(), 1);
  auto hsm = cakewalk::testing::SoftHsm::Create(label);
  if (!hsm.ok()) {
    std::cerr << "softhsm-init: " << hsm.status().ToString() << "\n";
    return 1;
  }
  (*hsm)->Keep();
  std::cout << "SOFTHSM2_CONF=" << (*hsm)->conf().string() << "\n"
            << "TOKEN_URI=" << (*hsm)->token().uri << "\n"
            << "PIN_FILE=" << (*hsm)->token().pin_file.string() << "\n";
  return 0;
}
