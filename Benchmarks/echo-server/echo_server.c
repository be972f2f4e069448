/*
 * A bare gRPC-core echo server: the speed reference for RecServe's own server.
 *
 *   echo_server [--port P] [--threads N] [--outstanding K]
 *
 * Listens (plain text) on 127.0.0.1:P (default 50052; 0 picks a free port) with N worker
 * threads (default 2), each owning one completion queue. /recserve.v1.Recommender/Predict and
 * /recserve.v1.Recommender/Rank are registered with the request payload delivered with the call;
 * each call is answered with the request bytes as its response and status OK, in one batch. Other
 * methods get UNIMPLEMENTED. Each queue keeps K requested calls outstanding per method (default
 * 16). Prints "listening on 127.0.0.1:PORT" once ready; SIGINT or SIGTERM shut it down cleanly.
 *
 * Build: see build.sh (cc -O2 echo_server.c -lgrpc -lgpr -lpthread).
 */
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kMethods[] = {
    "/recserve.v1.Recommender/Predict",
    "/recserve.v1.Recommender/Rank",
};
enum { kMethodCount = sizeof(kMethods) / sizeof(kMethods[0]) };

typedef struct worker {
  grpc_completion_queue *cq;
  pthread_t thread;
  int index;
} worker;

/* What a tag points to. A context is reused for the next call once its call is finished, so
 * each one keeps a requested call outstanding until shutdown. A context belongs to the worker
 * whose queue it was requested on; only that worker's thread touches it. */
typedef enum { REGISTERED_REQUESTED, REGISTERED_ANSWERING, GENERIC_REQUESTED, GENERIC_ANSWERING } call_state;

typedef struct call_ctx {
  call_state state;
  worker *owner;
  void *method; /* registered method handle; NULL for the generic (unknown method) catcher */
  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array request_metadata;
  grpc_call_details details;    /* generic calls only */
  grpc_byte_buffer *payload;    /* the request, sent back as the response */
  int cancelled;
} call_ctx;

static grpc_server *g_server;
static void *g_methods[kMethodCount];

/* Once set (under the write lock), no new calls are requested, so nothing is posted to a queue
 * after it is shut down. */
static pthread_rwlock_t g_request_lock = PTHREAD_RWLOCK_INITIALIZER;
static int g_shutting_down;

static void fail(const char *what) {
  fprintf(stderr, "echo_server: %s\n", what);
  exit(1);
}

/* Requests the next call for ctx on its worker's queue. Returns 0 when no request was made
 * (shutting down or an error); the caller then frees ctx. */
static int request_call(call_ctx *ctx) {
  int requested = 0;
  pthread_rwlock_rdlock(&g_request_lock);
  if (!g_shutting_down) {
    grpc_call_error err;
    ctx->call = NULL;
    ctx->payload = NULL;
    ctx->cancelled = 0;
    grpc_metadata_array_init(&ctx->request_metadata);
    if (ctx->method != NULL) {
      ctx->state = REGISTERED_REQUESTED;
      err = grpc_server_request_registered_call(g_server, ctx->method, &ctx->call, &ctx->deadline,
                                                &ctx->request_metadata, &ctx->payload,
                                                ctx->owner->cq, ctx->owner->cq, ctx);
    } else {
      ctx->state = GENERIC_REQUESTED;
      grpc_call_details_init(&ctx->details);
      err = grpc_server_request_call(g_server, &ctx->call, &ctx->details, &ctx->request_metadata,
                                     ctx->owner->cq, ctx->owner->cq, ctx);
      if (err != GRPC_CALL_OK) grpc_call_details_destroy(&ctx->details);
    }
    if (err == GRPC_CALL_OK) {
      requested = 1;
    } else {
      fprintf(stderr, "echo_server: requesting a call failed (%d)\n", (int)err);
      grpc_metadata_array_destroy(&ctx->request_metadata);
    }
  }
  pthread_rwlock_unlock(&g_request_lock);
  return requested;
}

/* Releases what the finished (or failed) request left in ctx. */
static void release_call(call_ctx *ctx) {
  if (ctx->payload != NULL) {
    grpc_byte_buffer_destroy(ctx->payload);
    ctx->payload = NULL;
  }
  grpc_metadata_array_destroy(&ctx->request_metadata);
  if (ctx->method == NULL) grpc_call_details_destroy(&ctx->details);
  if (ctx->call != NULL) {
    grpc_call_unref(ctx->call);
    ctx->call = NULL;
  }
}

/* Echo: initial metadata, the request bytes back, status OK, and the close, in one batch. */
static grpc_call_error answer_echo(call_ctx *ctx) {
  grpc_op ops[4];
  memset(ops, 0, sizeof(ops));
  if (ctx->payload == NULL) {
    /* The client half-closed without a message: echo an empty one. */
    ctx->payload = grpc_raw_byte_buffer_create(NULL, 0);
  }
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = 0;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = ctx->payload; /* still ours to destroy afterwards */
  ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[2].data.send_status_from_server.trailing_metadata_count = 0;
  ops[2].data.send_status_from_server.status = GRPC_STATUS_OK;
  ops[2].data.send_status_from_server.status_details = NULL;
  ops[3].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[3].data.recv_close_on_server.cancelled = &ctx->cancelled;
  ctx->state = REGISTERED_ANSWERING;
  return grpc_call_start_batch(ctx->call, ops, 4, ctx, NULL);
}

static grpc_call_error answer_unimplemented(call_ctx *ctx) {
  grpc_op ops[3];
  memset(ops, 0, sizeof(ops));
  grpc_slice details = grpc_slice_from_static_string("method not implemented by the echo server");
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[1].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
  ops[1].data.send_status_from_server.status_details = &details; /* not retained */
  ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[2].data.recv_close_on_server.cancelled = &ctx->cancelled;
  ctx->state = GENERIC_ANSWERING;
  return grpc_call_start_batch(ctx->call, ops, 3, ctx, NULL);
}

/* The call is over: release it and request the next one with the same context. */
static void finish_and_rerequest(call_ctx *ctx) {
  release_call(ctx);
  if (!request_call(ctx)) free(ctx);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type != GRPC_OP_COMPLETE) continue;
    call_ctx *ctx = ev.tag;
    switch (ctx->state) {
      case REGISTERED_REQUESTED:
      case GENERIC_REQUESTED: {
        if (!ev.success) {
          /* The server is shutting down and failed the request. */
          release_call(ctx);
          free(ctx);
          break;
        }
        grpc_call_error err =
            ctx->state == REGISTERED_REQUESTED ? answer_echo(ctx) : answer_unimplemented(ctx);
        if (err != GRPC_CALL_OK) {
          fprintf(stderr, "echo_server: start_batch failed (%d)\n", (int)err);
          finish_and_rerequest(ctx);
        }
        break;
      }
      case REGISTERED_ANSWERING:
      case GENERIC_ANSWERING:
        /* The batch is done (ev.success is false when the call was cancelled). */
        finish_and_rerequest(ctx);
        break;
    }
  }
  return NULL;
}

static int parse_int(const char *flag, const char *value, int min, int max) {
  char *end = NULL;
  errno = 0;
  long v = value ? strtol(value, &end, 10) : 0;
  if (value == NULL || *value == '\0' || *end != '\0' || errno != 0 || v < min || v > max) {
    fprintf(stderr, "echo_server: %s needs an integer in %d...%d\n", flag, min, max);
    exit(2);
  }
  return (int)v;
}

int main(int argc, char **argv) {
  int port = 50052, threads = 2, outstanding = 16;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0) {
      port = parse_int("--port", i + 1 < argc ? argv[++i] : NULL, 0, 65535);
    } else if (strcmp(argv[i], "--threads") == 0) {
      threads = parse_int("--threads", i + 1 < argc ? argv[++i] : NULL, 1, 256);
    } else if (strcmp(argv[i], "--outstanding") == 0) {
      outstanding = parse_int("--outstanding", i + 1 < argc ? argv[++i] : NULL, 1, 4096);
    } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      printf("usage: echo_server [--port P] [--threads N] [--outstanding K]\n");
      return 0;
    } else {
      fprintf(stderr, "echo_server: unknown argument %s\n"
                      "usage: echo_server [--port P] [--threads N] [--outstanding K]\n",
              argv[i]);
      return 2;
    }
  }

  /* Signals are taken by sigwait in main only; every thread created below inherits the mask. */
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, NULL);

  grpc_init();
  g_server = grpc_server_create(NULL, NULL);
  worker *workers = calloc((size_t)threads, sizeof(worker));
  if (workers == NULL) fail("out of memory");
  for (int i = 0; i < threads; i++) {
    workers[i].index = i;
    workers[i].cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(g_server, workers[i].cq, NULL);
  }
  for (int m = 0; m < kMethodCount; m++) {
    g_methods[m] = grpc_server_register_method(g_server, kMethods[m], NULL,
                                               GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    if (g_methods[m] == NULL) fail("registering a method failed");
  }

  char address[64];
  snprintf(address, sizeof(address), "127.0.0.1:%d", port);
  grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
  int bound = grpc_server_add_http2_port(g_server, address, creds);
  grpc_server_credentials_release(creds);
  if (bound == 0) {
    fprintf(stderr, "echo_server: cannot listen on %s\n", address);
    grpc_server_destroy(g_server);
    for (int i = 0; i < threads; i++) grpc_completion_queue_destroy(workers[i].cq);
    free(workers);
    grpc_shutdown();
    return 1;
  }
  grpc_server_start(g_server);

  for (int i = 0; i < threads; i++) {
    /* K requested calls per registered method, and one catcher for unknown methods. */
    for (int m = 0; m <= kMethodCount; m++) {
      int count = m < kMethodCount ? outstanding : 1;
      for (int k = 0; k < count; k++) {
        call_ctx *ctx = calloc(1, sizeof(call_ctx));
        if (ctx == NULL) fail("out of memory");
        ctx->owner = &workers[i];
        ctx->method = m < kMethodCount ? g_methods[m] : NULL;
        if (!request_call(ctx)) fail("requesting a call failed");
      }
    }
    if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
      fail("cannot start a worker thread");
    }
  }

  printf("listening on 127.0.0.1:%d\n", bound);
  fflush(stdout);

  int sig = 0;
  while (sigwait(&signals, &sig) != 0) {
  }
  fprintf(stderr, "echo_server: signal %d, shutting down\n", sig);

  pthread_rwlock_wrlock(&g_request_lock);
  g_shutting_down = 1;
  pthread_rwlock_unlock(&g_request_lock);

  grpc_completion_queue *shutdown_cq = grpc_completion_queue_create_for_pluck(NULL);
  static int shutdown_tag;
  grpc_server_shutdown_and_notify(g_server, shutdown_cq, &shutdown_tag);
  grpc_server_cancel_all_calls(g_server);
  grpc_event ev =
      grpc_completion_queue_pluck(shutdown_cq, &shutdown_tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  if (ev.type != GRPC_OP_COMPLETE) fprintf(stderr, "echo_server: unexpected shutdown event\n");
  grpc_completion_queue_shutdown(shutdown_cq);
  grpc_completion_queue_destroy(shutdown_cq);

  /* Workers drain their queues (freeing every context) until GRPC_QUEUE_SHUTDOWN. */
  for (int i = 0; i < threads; i++) grpc_completion_queue_shutdown(workers[i].cq);
  for (int i = 0; i < threads; i++) pthread_join(workers[i].thread, NULL);
  grpc_server_destroy(g_server);
  for (int i = 0; i < threads; i++) grpc_completion_queue_destroy(workers[i].cq);
  free(workers);
  grpc_shutdown();
  fprintf(stderr, "echo_server: stopped\n");
  return 0;
}
