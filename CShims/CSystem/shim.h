#ifndef CSYSTEM_SHIM_H
#define CSYSTEM_SHIM_H
// glibc calls that Swift's Glibc module leaves out: malloc_trim, to hand memory freed by an
// unloaded model version back to the system.
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

// Line-buffered standard output (so that `listening on ...` reaches a pipe at once), without
// Swift touching the C global `stdout`, which Swift 6 cannot prove race-free.
static inline void csystem_line_buffer_stdout(void) { setvbuf(stdout, NULL, _IOLBF, 0); }

// SIGINT and SIGTERM each write their number to a pipe (async-signal-safe), which a thread reads
// to stop the server gracefully. sigaction takes effect when it returns, so a signal sent the
// moment the server says it listens is never lost (Dispatch signal sources arm asynchronously,
// and a signal ignored before they are armed would be dropped).
static int csystem_stop_pipe_fd = -1;

static void csystem_stop_signal_handler(int number) {
  unsigned char byte = (unsigned char)number;
  ssize_t written = write(csystem_stop_pipe_fd, &byte, 1);
  (void)written;
}

/// Installs the handler for SIGINT and SIGTERM, writing to `write_fd`; 0 on success.
static inline int csystem_install_stop_signals(int write_fd) {
  csystem_stop_pipe_fd = write_fd;
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = csystem_stop_signal_handler;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  if (sigaction(SIGINT, &action, NULL) != 0) return -1;
  if (sigaction(SIGTERM, &action, NULL) != 0) return -1;
  return 0;
}
#endif
