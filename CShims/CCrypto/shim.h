#ifndef CCRYPTO_SHIM_H
#define CCRYPTO_SHIM_H
// OpenSSL's libcrypto (installed with libgrpc-dev via libssl-dev): SHA-256 for model checksums;
// PEM and X.509 parsing to check TLS certificates and keys before gRPC is given them.
#include <openssl/sha.h>
#include <openssl/evp.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/err.h>
#endif
