#ifndef CSYSTEM_SHIM_H
#define CSYSTEM_SHIM_H
// glibc calls that Swift's Glibc module leaves out: malloc_trim, to hand memory freed by an
// unloaded model version back to the system.
#include <malloc.h>
#include <stdio.h>

// Line-buffered standard output (so that `listening on ...` reaches a pipe at once), without
// Swift touching the C global `stdout`, which Swift 6 cannot prove race-free.
static inline void csystem_line_buffer_stdout(void) { setvbuf(stdout, NULL, _IOLBF, 0); }
#endif
