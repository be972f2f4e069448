#include "CGRPCShim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/support/alloc.h>

// A tag: what happened, and to which object. Tags live inside the object they belong to.
typedef struct {
  int kind;
  void *owner;
} cgrpc_tag;

// ---- library ---------------------------------------------------------------------------------

void cgrpc_init(void) { grpc_init(); }
void cgrpc_shutdown(void) { grpc_shutdown(); }
const char *cgrpc_version(void) { return grpc_version_string(); }

void cgrpc_set_log_verbosity(int level) {
  gpr_log_severity severity = GPR_LOG_SEVERITY_ERROR;
  if (level == 1) severity = GPR_LOG_SEVERITY_INFO;
  if (level >= 2) severity = GPR_LOG_SEVERITY_DEBUG;
  gpr_set_log_verbosity(severity);
}

static gpr_timespec deadline_after(double seconds) {
  if (seconds < 0 || isinf(seconds)) return gpr_inf_future(GPR_CLOCK_MONOTONIC);
  int64_t micros = (int64_t)(seconds * 1e6);
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_micros(micros, GPR_TIMESPAN));
}

// ---- completion queues -----------------------------------------------------------------------

grpc_completion_queue *cgrpc_cq_create(void) { return grpc_completion_queue_create_for_next(NULL); }

cgrpc_next_result cgrpc_cq_next(grpc_completion_queue *cq, double timeout_seconds, int *kind,
                                void **owner, int *ok) {
  grpc_event event = grpc_completion_queue_next(cq, deadline_after(timeout_seconds), NULL);
  switch (event.type) {
    case GRPC_OP_COMPLETE: {
      cgrpc_tag *tag = (cgrpc_tag *)event.tag;
      *kind = tag->kind;
      *owner = tag->owner;
      *ok = event.success;
      return CGRPC_NEXT_EVENT;
    }
    case GRPC_QUEUE_SHUTDOWN:
      return CGRPC_NEXT_SHUTDOWN;
    case GRPC_QUEUE_TIMEOUT:
    default:
      return CGRPC_NEXT_TIMEOUT;
  }
}

void cgrpc_cq_shutdown(grpc_completion_queue *cq) { grpc_completion_queue_shutdown(cq); }

void cgrpc_cq_drain_and_destroy(grpc_completion_queue *cq) {
  for (;;) {
    grpc_event event =
        grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (event.type == GRPC_QUEUE_SHUTDOWN) break;
  }
  grpc_completion_queue_destroy(cq);
}

void cgrpc_cq_destroy(grpc_completion_queue *cq) { grpc_completion_queue_destroy(cq); }

// ---- server ----------------------------------------------------------------------------------

struct cgrpc_server {
  grpc_server *server;
  cgrpc_tag shutdown_tag;
};

cgrpc_server *cgrpc_server_create(int max_receive_bytes, int max_concurrent_streams) {
  grpc_arg args[2];
  size_t count = 0;
  if (max_receive_bytes > 0) {
    args[count].type = GRPC_ARG_INTEGER;
    args[count].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[count].value.integer = max_receive_bytes;
    count++;
  }
  if (max_concurrent_streams > 0) {
    args[count].type = GRPC_ARG_INTEGER;
    args[count].key = (char *)GRPC_ARG_MAX_CONCURRENT_STREAMS;
    args[count].value.integer = max_concurrent_streams;
    count++;
  }
  grpc_channel_args channel_args = {count, args};
  cgrpc_server *server = calloc(1, sizeof(cgrpc_server));
  if (server == NULL) return NULL;
  server->server = grpc_server_create(count > 0 ? &channel_args : NULL, NULL);
  return server;
}

void cgrpc_server_register_cq(cgrpc_server *server, grpc_completion_queue *cq) {
  grpc_server_register_completion_queue(server->server, cq, NULL);
}

int cgrpc_server_add_tls_port(cgrpc_server *server, const char *address, const char *cert_chain_pem,
                              const char *private_key_pem, const char *client_ca_pem) {
  grpc_ssl_pem_key_cert_pair pair = {private_key_pem, cert_chain_pem};
  grpc_server_credentials *creds = grpc_ssl_server_credentials_create_ex(
      client_ca_pem, &pair, 1,
      client_ca_pem != NULL ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                            : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
      NULL);
  if (creds == NULL) return 0;
  int port = grpc_server_add_http2_port(server->server, address, creds);
  grpc_server_credentials_release(creds);
  return port;
}

int cgrpc_server_add_insecure_port(cgrpc_server *server, const char *address) {
  grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
  int port = grpc_server_add_http2_port(server->server, address, creds);
  grpc_server_credentials_release(creds);
  return port;
}

void *cgrpc_server_register_method(cgrpc_server *server, const char *path, int payload_with_call) {
  return grpc_server_register_method(
      server->server, path, NULL,
      payload_with_call ? GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER : GRPC_SRM_PAYLOAD_NONE, 0);
}

void cgrpc_server_start(cgrpc_server *server) { grpc_server_start(server->server); }

void cgrpc_server_shutdown_and_notify(cgrpc_server *server, grpc_completion_queue *cq,
                                      void *owner) {
  server->shutdown_tag.kind = CGRPC_TAG_SHUTDOWN;
  server->shutdown_tag.owner = owner;
  grpc_server_shutdown_and_notify(server->server, cq, &server->shutdown_tag);
}

void cgrpc_server_cancel_all_calls(cgrpc_server *server) {
  grpc_server_cancel_all_calls(server->server);
}

void cgrpc_server_destroy(cgrpc_server *server) {
  if (server == NULL) return;
  grpc_server_destroy(server->server);
  free(server);
}

// ---- server calls ----------------------------------------------------------------------------

struct cgrpc_server_call {
  void *user;
  grpc_call *call;
  int registered;
  gpr_timespec deadline;
  grpc_call_details details;
  grpc_metadata_array metadata;
  grpc_byte_buffer *payload;
  grpc_slice flat;  // the payload flattened into one slice
  int flat_valid;
  int cancelled;
  int sent_initial_metadata;
  // One response metadata entry (e.g. x-request-id on an error), kept until the call is
  // destroyed so that core may read it for as long as the batch that sends it runs.
  grpc_metadata response_md;
  int has_response_md;
  cgrpc_tag accept_tag;
  cgrpc_tag close_tag;
  cgrpc_tag send_tag;
  cgrpc_tag recv_tag;
};

cgrpc_server_call *cgrpc_server_call_create(void *user) {
  cgrpc_server_call *call = calloc(1, sizeof(cgrpc_server_call));
  if (call == NULL) return NULL;
  call->user = user;
  grpc_call_details_init(&call->details);
  grpc_metadata_array_init(&call->metadata);
  call->accept_tag = (cgrpc_tag){CGRPC_TAG_ACCEPT, call};
  call->close_tag = (cgrpc_tag){CGRPC_TAG_CLOSE, call};
  call->send_tag = (cgrpc_tag){CGRPC_TAG_SEND, call};
  call->recv_tag = (cgrpc_tag){CGRPC_TAG_RECV, call};
  return call;
}

void *cgrpc_server_call_user(cgrpc_server_call *call) { return call->user; }
void cgrpc_server_call_set_user(cgrpc_server_call *call, void *user) { call->user = user; }

void cgrpc_server_call_clear_payload(cgrpc_server_call *call) {
  if (call->flat_valid) {
    grpc_slice_unref(call->flat);
    call->flat_valid = 0;
  }
  if (call->payload != NULL) {
    grpc_byte_buffer_destroy(call->payload);
    call->payload = NULL;
  }
}

void cgrpc_server_call_destroy(cgrpc_server_call *call) {
  if (call == NULL) return;
  cgrpc_server_call_clear_payload(call);
  grpc_call_details_destroy(&call->details);
  grpc_metadata_array_destroy(&call->metadata);
  if (call->has_response_md != 0) {
    grpc_slice_unref(call->response_md.key);
    grpc_slice_unref(call->response_md.value);
  }
  if (call->call != NULL) grpc_call_unref(call->call);
  free(call);
}

int cgrpc_server_call_request(cgrpc_server_call *call, cgrpc_server *server, void *method,
                              int payload_with_call, grpc_completion_queue *cq) {
  if (method != NULL) {
    call->registered = 1;
    // Core insists: a payload pointer exactly when the method reads its payload with the call.
    return grpc_server_request_registered_call(
        server->server, method, &call->call, &call->deadline, &call->metadata,
        payload_with_call ? &call->payload : NULL, cq, cq, &call->accept_tag);
  }
  call->registered = 0;
  return grpc_server_request_call(server->server, &call->call, &call->details, &call->metadata,
                                  cq, cq, &call->accept_tag);
}

const char *cgrpc_server_call_method(cgrpc_server_call *call, size_t *length) {
  if (call->registered) {
    *length = 0;
    return NULL;
  }
  *length = GRPC_SLICE_LENGTH(call->details.method);
  return (const char *)GRPC_SLICE_START_PTR(call->details.method);
}

double cgrpc_server_call_deadline_remaining(cgrpc_server_call *call) {
  gpr_timespec deadline = call->registered ? call->deadline : call->details.deadline;
  if (gpr_time_cmp(deadline, gpr_inf_future(deadline.clock_type)) == 0) return INFINITY;
  gpr_timespec monotonic = gpr_convert_clock_type(deadline, GPR_CLOCK_MONOTONIC);
  gpr_timespec left = gpr_time_sub(monotonic, gpr_now(GPR_CLOCK_MONOTONIC));
  return (double)left.tv_sec + (double)left.tv_nsec * 1e-9;
}

size_t cgrpc_server_call_metadata_count(cgrpc_server_call *call) { return call->metadata.count; }

void cgrpc_server_call_metadata(cgrpc_server_call *call, size_t index, const char **key,
                                size_t *key_length, const char **value, size_t *value_length) {
  grpc_metadata *entry = &call->metadata.metadata[index];
  *key = (const char *)GRPC_SLICE_START_PTR(entry->key);
  *key_length = GRPC_SLICE_LENGTH(entry->key);
  *value = (const char *)GRPC_SLICE_START_PTR(entry->value);
  *value_length = GRPC_SLICE_LENGTH(entry->value);
}

int cgrpc_server_call_has_payload(cgrpc_server_call *call) { return call->payload != NULL; }

static void flatten_payload(cgrpc_server_call *call) {
  if (call->flat_valid || call->payload == NULL) return;
  grpc_byte_buffer_reader reader;
  if (!grpc_byte_buffer_reader_init(&reader, call->payload)) {
    call->flat = grpc_empty_slice();
  } else {
    call->flat = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
  }
  call->flat_valid = 1;
}

size_t cgrpc_server_call_payload_length(cgrpc_server_call *call) {
  flatten_payload(call);
  return call->flat_valid ? GRPC_SLICE_LENGTH(call->flat) : 0;
}

const void *cgrpc_server_call_payload_bytes(cgrpc_server_call *call) {
  flatten_payload(call);
  return call->flat_valid ? GRPC_SLICE_START_PTR(call->flat) : NULL;
}

int cgrpc_server_call_start_recv_close(cgrpc_server_call *call) {
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  op.data.recv_close_on_server.cancelled = &call->cancelled;
  return grpc_call_start_batch(call->call, &op, 1, &call->close_tag, NULL);
}

int cgrpc_server_call_was_cancelled(cgrpc_server_call *call) { return call->cancelled; }

int cgrpc_server_call_start_recv_message(cgrpc_server_call *call) {
  cgrpc_server_call_clear_payload(call);
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &call->payload;
  return grpc_call_start_batch(call->call, &op, 1, &call->recv_tag, NULL);
}

int cgrpc_server_call_set_response_metadata(cgrpc_server_call *call, const char *key,
                                            const char *value) {
  if (call->has_response_md) return -1;
  call->response_md.key = grpc_slice_from_copied_string(key);
  call->response_md.value = grpc_slice_from_copied_string(value);
  call->has_response_md = 1;
  return 0;
}

int cgrpc_server_call_start_send(cgrpc_server_call *call, const void *bytes, size_t length,
                                 int send_status, int status, const char *details,
                                 size_t details_length) {
  grpc_op ops[3];
  size_t count = 0;
  memset(ops, 0, sizeof(ops));
  // The response metadata entry goes with the initial metadata when those have not gone out
  // yet, else with the status (as a trailer); it is sent once.
  int md_in_initial = call->has_response_md == 1 && !call->sent_initial_metadata;
  int md_in_trailer = call->has_response_md == 1 && call->sent_initial_metadata && send_status;
  if (!call->sent_initial_metadata) {
    ops[count].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (md_in_initial) {
      ops[count].data.send_initial_metadata.count = 1;
      ops[count].data.send_initial_metadata.metadata = &call->response_md;
    }
    count++;
  }
  grpc_byte_buffer *buffer = NULL;
  if (bytes != NULL) {
    grpc_slice slice = grpc_slice_from_copied_buffer((const char *)bytes, length);
    buffer = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    ops[count].op = GRPC_OP_SEND_MESSAGE;
    ops[count].data.send_message.send_message = buffer;
    count++;
  }
  grpc_slice details_slice;
  if (send_status) {
    details_slice = grpc_slice_from_copied_buffer(details != NULL ? details : "",
                                                  details != NULL ? details_length : 0);
    ops[count].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[count].data.send_status_from_server.status = (grpc_status_code)status;
    ops[count].data.send_status_from_server.status_details = &details_slice;
    if (md_in_trailer) {
      ops[count].data.send_status_from_server.trailing_metadata_count = 1;
      ops[count].data.send_status_from_server.trailing_metadata = &call->response_md;
    }
    count++;
  }
  grpc_call_error error = grpc_call_start_batch(call->call, ops, count, &call->send_tag, NULL);
  if (error == GRPC_CALL_OK) {
    call->sent_initial_metadata = 1;
    if (md_in_initial || md_in_trailer) call->has_response_md = 2;  // sent; freed at destroy
  }
  // The batch took its own references: the message's slices and a copy of the details.
  if (buffer != NULL) grpc_byte_buffer_destroy(buffer);
  if (send_status) grpc_slice_unref(details_slice);
  return error;
}

int cgrpc_server_call_cancel(cgrpc_server_call *call, int status, const char *details) {
  return grpc_call_cancel_with_status(call->call, (grpc_status_code)status, details, NULL);
}

// ---- client ----------------------------------------------------------------------------------

struct cgrpc_channel {
  grpc_channel *channel;
};

static cgrpc_channel *cgrpc_channel_create_with(const char *target, int max_receive_bytes,
                                                 grpc_channel_credentials *creds) {
  grpc_arg args[1];
  size_t count = 0;
  if (max_receive_bytes > 0) {
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = max_receive_bytes;
    count = 1;
  }
  grpc_channel_args channel_args = {count, args};
  cgrpc_channel *channel = calloc(1, sizeof(cgrpc_channel));
  if (channel == NULL) {
    grpc_channel_credentials_release(creds);
    return NULL;
  }
  channel->channel = grpc_channel_create(target, creds, count > 0 ? &channel_args : NULL);
  grpc_channel_credentials_release(creds);
  return channel;
}

cgrpc_channel *cgrpc_channel_create_insecure(const char *target, int max_receive_bytes) {
  return cgrpc_channel_create_with(target, max_receive_bytes, grpc_insecure_credentials_create());
}

cgrpc_channel *cgrpc_channel_create_tls(const char *target, int max_receive_bytes,
                                        const char *root_pem, const char *cert_chain_pem,
                                        const char *private_key_pem) {
  grpc_ssl_pem_key_cert_pair pair = {private_key_pem, cert_chain_pem};
  grpc_channel_credentials *creds = grpc_ssl_credentials_create(
      root_pem, (cert_chain_pem != NULL && private_key_pem != NULL) ? &pair : NULL, NULL, NULL);
  if (creds == NULL) return NULL;
  return cgrpc_channel_create_with(target, max_receive_bytes, creds);
}

void *cgrpc_channel_register_method(cgrpc_channel *channel, const char *path) {
  return grpc_channel_register_call(channel->channel, path, NULL, NULL);
}

void cgrpc_channel_destroy(cgrpc_channel *channel) {
  if (channel == NULL) return;
  grpc_channel_destroy(channel->channel);
  free(channel);
}

struct cgrpc_client_call {
  void *user;
  grpc_call *call;
  grpc_metadata_array initial_metadata;
  grpc_metadata_array trailing_metadata;
  grpc_byte_buffer *response;
  grpc_slice flat;
  int flat_valid;
  grpc_status_code status;
  grpc_slice details;
  cgrpc_tag tag;
};

cgrpc_client_call *cgrpc_client_unary_start(cgrpc_channel *channel, void *method,
                                            grpc_completion_queue *cq, const void *bytes,
                                            size_t length, double timeout_seconds,
                                            const char *const *metadata_keys,
                                            const char *const *metadata_values,
                                            size_t metadata_count, void *user) {
  cgrpc_client_call *call = calloc(1, sizeof(cgrpc_client_call));
  if (call == NULL) return NULL;
  call->user = user;
  call->tag = (cgrpc_tag){CGRPC_TAG_CLIENT_UNARY, call};
  call->details = grpc_empty_slice();
  grpc_metadata_array_init(&call->initial_metadata);
  grpc_metadata_array_init(&call->trailing_metadata);
  gpr_timespec deadline = timeout_seconds > 0 ? deadline_after(timeout_seconds)
                                              : gpr_inf_future(GPR_CLOCK_MONOTONIC);
  call->call = grpc_channel_create_registered_call(channel->channel, NULL, GRPC_PROPAGATE_DEFAULTS,
                                                   cq, method, deadline, NULL);
  if (call->call == NULL) {
    cgrpc_client_call_destroy(call);
    return NULL;
  }
  grpc_metadata *metadata = NULL;
  if (metadata_count > 0) {
    metadata = calloc(metadata_count, sizeof(grpc_metadata));
    for (size_t i = 0; i < metadata_count; i++) {
      metadata[i].key = grpc_slice_from_copied_string(metadata_keys[i]);
      metadata[i].value = grpc_slice_from_copied_string(metadata_values[i]);
    }
  }
  grpc_slice slice = grpc_slice_from_copied_buffer((const char *)bytes, length);
  grpc_byte_buffer *buffer = grpc_raw_byte_buffer_create(&slice, 1);
  grpc_slice_unref(slice);

  grpc_op ops[6];
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = metadata_count;
  ops[0].data.send_initial_metadata.metadata = metadata;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = buffer;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &call->initial_metadata;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &call->response;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &call->trailing_metadata;
  ops[5].data.recv_status_on_client.status = &call->status;
  ops[5].data.recv_status_on_client.status_details = &call->details;
  grpc_call_error error = grpc_call_start_batch(call->call, ops, 6, &call->tag, NULL);
  grpc_byte_buffer_destroy(buffer);
  for (size_t i = 0; i < metadata_count; i++) {
    grpc_slice_unref(metadata[i].key);
    grpc_slice_unref(metadata[i].value);
  }
  free(metadata);
  if (error != GRPC_CALL_OK) {
    cgrpc_client_call_destroy(call);
    return NULL;
  }
  return call;
}

void *cgrpc_client_call_user(cgrpc_client_call *call) { return call->user; }
int cgrpc_client_call_status(cgrpc_client_call *call) { return (int)call->status; }

const char *cgrpc_client_call_details(cgrpc_client_call *call, size_t *length) {
  *length = GRPC_SLICE_LENGTH(call->details);
  return (const char *)GRPC_SLICE_START_PTR(call->details);
}

static void flatten_response(cgrpc_client_call *call) {
  if (call->flat_valid || call->response == NULL) return;
  grpc_byte_buffer_reader reader;
  if (!grpc_byte_buffer_reader_init(&reader, call->response)) {
    call->flat = grpc_empty_slice();
  } else {
    call->flat = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
  }
  call->flat_valid = 1;
}

size_t cgrpc_client_call_response_length(cgrpc_client_call *call) {
  flatten_response(call);
  return call->flat_valid ? GRPC_SLICE_LENGTH(call->flat) : 0;
}

const void *cgrpc_client_call_response_bytes(cgrpc_client_call *call) {
  flatten_response(call);
  return call->flat_valid ? GRPC_SLICE_START_PTR(call->flat) : NULL;
}

void cgrpc_client_call_destroy(cgrpc_client_call *call) {
  if (call == NULL) return;
  if (call->flat_valid) grpc_slice_unref(call->flat);
  if (call->response != NULL) grpc_byte_buffer_destroy(call->response);
  grpc_slice_unref(call->details);
  grpc_metadata_array_destroy(&call->initial_metadata);
  grpc_metadata_array_destroy(&call->trailing_metadata);
  if (call->call != NULL) grpc_call_unref(call->call);
  free(call);
}
