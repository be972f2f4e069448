#ifndef CGRPCSHIM_H
#define CGRPCSHIM_H

// A small C surface over gRPC core 1.51 for RecServe's Swift runtime.
//
// Batch assembly (grpc_op unions, slices, metadata arrays) stays here; Swift holds opaque handles
// and plain bytes only. Every function carries the `cgrpc_` prefix. No policy lives in C: which
// calls to request, how many, what to answer and when to shut down are all decided in Swift.
//
// Ownership: each object created here (server, completion queue, server call, channel, client
// call) is freed exactly once by the matching `_destroy` function, called by the one Swift type
// that owns it.

#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- library ---------------------------------------------------------------------------------

void cgrpc_init(void);
void cgrpc_shutdown(void);
/// 0: errors only, 1: info, 2: debug. Core logs to stderr.
void cgrpc_set_log_verbosity(int level);
const char *cgrpc_version(void);

// ---- completion queues -----------------------------------------------------------------------

/// What a tag stands for; Swift dispatches on it.
typedef enum {
  CGRPC_TAG_ACCEPT = 1,       ///< a requested server call arrived (or failed: shutdown)
  CGRPC_TAG_CLOSE = 2,        ///< RECV_CLOSE_ON_SERVER completed: the call is over
  CGRPC_TAG_SEND = 3,         ///< a send batch completed
  CGRPC_TAG_RECV = 4,         ///< a RECV_MESSAGE completed
  CGRPC_TAG_CLIENT_UNARY = 5, ///< a client unary call completed
  CGRPC_TAG_SHUTDOWN = 6,     ///< grpc_server_shutdown_and_notify completed
} cgrpc_tag_kind;

typedef enum {
  CGRPC_NEXT_EVENT = 0,
  CGRPC_NEXT_TIMEOUT = 1,
  CGRPC_NEXT_SHUTDOWN = 2,
} cgrpc_next_result;

grpc_completion_queue *cgrpc_cq_create(void);
/// Waits up to `timeout_seconds` (negative: forever) for the next event. On an event sets the
/// tag's kind, the object it belongs to (server call, client call, or the pointer given with
/// a shutdown tag) and whether the operation succeeded.
cgrpc_next_result cgrpc_cq_next(grpc_completion_queue *cq, double timeout_seconds, int *kind,
                                void **owner, int *ok);
void cgrpc_cq_shutdown(grpc_completion_queue *cq);
/// Drains the queue to GRPC_QUEUE_SHUTDOWN and destroys it.
void cgrpc_cq_drain_and_destroy(grpc_completion_queue *cq);
/// Destroys a queue that was shut down and already drained (next returned SHUTDOWN).
void cgrpc_cq_destroy(grpc_completion_queue *cq);

// ---- server ----------------------------------------------------------------------------------

typedef struct cgrpc_server cgrpc_server;

/// `max_receive_bytes` <= 0 keeps core's default (4 MiB). `max_concurrent_streams` <= 0: default.
cgrpc_server *cgrpc_server_create(int max_receive_bytes, int max_concurrent_streams);
void cgrpc_server_register_cq(cgrpc_server *server, grpc_completion_queue *cq);
/// Returns the bound port (so port 0 picks a free one), or 0 when binding failed.
int cgrpc_server_add_insecure_port(cgrpc_server *server, const char *address);
/// Listens with TLS: the server's certificate chain and private key (PEM); with `client_ca_pem`
/// (PEM roots), every client must present a certificate those roots verify (mutual TLS), else
/// client certificates are not asked for. Returns the bound port, or 0.
int cgrpc_server_add_tls_port(cgrpc_server *server, const char *address, const char *cert_chain_pem,
                              const char *private_key_pem, const char *client_ca_pem);
/// `payload_with_call`: the request message arrives with the call (unary and server-streaming).
/// Returns an opaque method handle, or NULL on failure. Call before start.
void *cgrpc_server_register_method(cgrpc_server *server, const char *path, int payload_with_call);
void cgrpc_server_start(cgrpc_server *server);
/// Stops accepting calls; the tag (kind SHUTDOWN, owner `owner`) arrives on `cq` when every call
/// has finished.
void cgrpc_server_shutdown_and_notify(cgrpc_server *server, grpc_completion_queue *cq,
                                      void *owner);
void cgrpc_server_cancel_all_calls(cgrpc_server *server);
/// Call after the shutdown tag arrived.
void cgrpc_server_destroy(cgrpc_server *server);

// ---- server calls ----------------------------------------------------------------------------

typedef struct cgrpc_server_call cgrpc_server_call;

/// Allocates a call record whose `user` pointer is given back by `cgrpc_server_call_user`.
cgrpc_server_call *cgrpc_server_call_create(void *user);
void *cgrpc_server_call_user(cgrpc_server_call *call);
void cgrpc_server_call_set_user(cgrpc_server_call *call, void *user);
/// Frees the record and everything it holds (the grpc_call reference, metadata, buffers).
void cgrpc_server_call_destroy(cgrpc_server_call *call);

/// Asks for the next call of a registered method (method != NULL) or of any unregistered method
/// (method == NULL), bound to `cq`. `payload_with_call` must match the method's registration.
/// An ACCEPT tag arrives on `cq`. Returns a grpc_call_error.
int cgrpc_server_call_request(cgrpc_server_call *call, cgrpc_server *server, void *method,
                              int payload_with_call, grpc_completion_queue *cq);

/// Method path of an unregistered call (valid while the call lives); NULL for registered calls.
const char *cgrpc_server_call_method(cgrpc_server_call *call, size_t *length);
/// Seconds until the deadline; +infinity when the client set none.
double cgrpc_server_call_deadline_remaining(cgrpc_server_call *call);
size_t cgrpc_server_call_metadata_count(cgrpc_server_call *call);
/// Key and value of metadata entry `index` (not NUL-terminated; valid while the call lives).
void cgrpc_server_call_metadata(cgrpc_server_call *call, size_t index, const char **key,
                                size_t *key_length, const char **value, size_t *value_length);

/// Whether a payload is available (registered calls with payload, or after a RECV tag).
int cgrpc_server_call_has_payload(cgrpc_server_call *call);
/// Length of the available payload in bytes (flattens it once).
size_t cgrpc_server_call_payload_length(cgrpc_server_call *call);
/// Pointer to the flattened payload (valid until the next receive or destroy).
const void *cgrpc_server_call_payload_bytes(cgrpc_server_call *call);
/// Releases the payload.
void cgrpc_server_call_clear_payload(cgrpc_server_call *call);

/// Posts RECV_CLOSE_ON_SERVER (CLOSE tag). Post it first, once, on every accepted call.
int cgrpc_server_call_start_recv_close(cgrpc_server_call *call);
/// 1 when the call ended without our status reaching the client (cancel, deadline, network).
int cgrpc_server_call_was_cancelled(cgrpc_server_call *call);
/// Posts RECV_MESSAGE (RECV tag); afterwards has_payload says whether a message came or the
/// client half-closed.
int cgrpc_server_call_start_recv_message(cgrpc_server_call *call);
/// One metadata entry for the response (sent with the next send: in the initial metadata if
/// those have not gone out, else as a trailer with the status). Once per call; -1 after.
int cgrpc_server_call_set_response_metadata(cgrpc_server_call *call, const char *key,
                                            const char *value);
/// Posts one SEND batch: initial metadata (the first time), then the message if `bytes` is not
/// NULL, then the status if `send_status` is set. SEND tag.
int cgrpc_server_call_start_send(cgrpc_server_call *call, const void *bytes, size_t length,
                                 int send_status, int status, const char *details,
                                 size_t details_length);
/// Cancels the call with a status (used for calls that must not continue).
int cgrpc_server_call_cancel(cgrpc_server_call *call, int status, const char *details);

// ---- client ----------------------------------------------------------------------------------

typedef struct cgrpc_channel cgrpc_channel;

cgrpc_channel *cgrpc_channel_create_insecure(const char *target, int max_receive_bytes);
/// A TLS channel: the server is verified against `root_pem` (NULL: gRPC's default roots); with
/// `cert_chain_pem` and `private_key_pem`, the client presents that certificate (mutual TLS).
cgrpc_channel *cgrpc_channel_create_tls(const char *target, int max_receive_bytes,
                                        const char *root_pem, const char *cert_chain_pem,
                                        const char *private_key_pem);
/// Registers a method path on the channel for fast calls; the handle lives as long as the channel.
void *cgrpc_channel_register_method(cgrpc_channel *channel, const char *path);
void cgrpc_channel_destroy(cgrpc_channel *channel);

typedef struct cgrpc_client_call cgrpc_client_call;

/// Starts a unary call in one batch; a CLIENT_UNARY tag (owner: the returned call) arrives on
/// `cq`. `timeout_seconds` <= 0: no deadline. Metadata are `count` key/value C strings.
/// Returns NULL if the batch could not start.
cgrpc_client_call *cgrpc_client_unary_start(cgrpc_channel *channel, void *method,
                                            grpc_completion_queue *cq, const void *bytes,
                                            size_t length, double timeout_seconds,
                                            const char *const *metadata_keys,
                                            const char *const *metadata_values,
                                            size_t metadata_count, void *user);
void *cgrpc_client_call_user(cgrpc_client_call *call);
int cgrpc_client_call_status(cgrpc_client_call *call);
const char *cgrpc_client_call_details(cgrpc_client_call *call, size_t *length);
size_t cgrpc_client_call_response_length(cgrpc_client_call *call);
const void *cgrpc_client_call_response_bytes(cgrpc_client_call *call);
void cgrpc_client_call_destroy(cgrpc_client_call *call);

#ifdef __cplusplus
}
#endif

#endif
