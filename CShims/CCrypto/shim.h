#ifndef CCRYPTO_SHIM_H
#define CCRYPTO_SHIM_H
// OpenSSL's libcrypto (installed with libgrpc-dev via libssl-dev): SHA-256 for model checksums.
#include <openssl/sha.h>
#include <openssl/evp.h>
#endif
