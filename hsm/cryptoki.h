// The PKCS#11 header, included in exactly one place.
//
// hsm/ is the only library folder that sees PKCS#11 types; everything else talks to the token
// through hsm/'s public headers (module.h, token.h, secret_store.h, key_pair.h, token_key.h),
// which do not include this file. Tests may include it for raw probes and benchmarks.
//
// p11-kit's pkcs11.h spells structure members in lower case (`parameter`, `iv_len`) unless
// CRYPTOKI_COMPAT is defined first, which gives the OASIS names (`pParameter`, `ulIvLen`,
// `ulIvBits`, `pAAD`) used throughout hsm/.
#pragma once

#ifndef CRYPTOKI_COMPAT
#define CRYPTOKI_COMPAT 1
#endif
#include <p11-kit/pkcs11.h>
