#ifndef CSYSTEM_SHIM_H
#define CSYSTEM_SHIM_H
// glibc calls that Swift's Glibc module leaves out: malloc_trim, to hand memory freed by an
// unloaded model version back to the system.
#include <malloc.h>
#endif
