/* dist.h: data-parallel process groups over PyTorch's c10d, the shim's only door to it: one group
 * per process, joined through a TCPStore (as torchrun and torch.distributed's env:// do), Gloo on
 * the CPU and NCCL on CUDA (NCCL only in builds whose libtorch has it: dt_dist_nccl_compiled).
 *
 * - Without a group (never initialised, or world 1) every call is a no-op: rank 0, world 1.
 * - A build without c10d (dt_dist_compiled() == 0) still links: dt_dist_init with world > 1 fails
 *   with DRDC_ERR_INPUT saying so.
 * - Errors: a c10d or Gloo exception (a peer that closed its connection, a peer that did not answer
 *   within the timeout, a port in use) becomes DRDC_ERR_TORCH with its message, prefixed with the
 *   function's name; after a failed collective the group is unusable (finalize it).
 * - The timeout bounds every wait for a peer: joining (the store and the group's rendezvous) and
 *   every collective. A peer whose process ends is noticed at once (its connections close).
 * The collectives take flat f32 tensors (1-D, contiguous) on the group's device. */
#ifndef DRDC_DIST_H
#define DRDC_DIST_H

#include "drdc/core/error.h"
#include "drdc/shim/shim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dt_dist_options {
    int rank, world;          /* this process's rank in [0, world) */
    const char *addr;         /* the store's host (MASTER_ADDR) */
    int port;                 /* the store's port (MASTER_PORT), 1..65535 */
    int store_client;         /* 1: a launcher hosts the store (torchrun's agent, drdc train --nproc) and
                               * every rank is a client; 0: rank 0 hosts it (env://) */
    const char *prefix;       /* prefix of every store key ("" or NULL: none; torchrun: "/worker/attempt_N") */
    double timeout_s;         /* > 0 */
    dt_device device;         /* CUDA with NCCL compiled in: NCCL on this device; else Gloo */
} dt_dist_options;

int dt_dist_compiled(void);        /* 1 when built with c10d (Gloo) */
int dt_dist_nccl_compiled(void);   /* 1 when built with c10d's NCCL backend */

/* Joins the group (blocks until every rank has joined, at most timeout_s). Fails when a group is
 * already up. world 1 sets nothing up. */
drdc_status dt_dist_init(const dt_dist_options *o);
int dt_dist_rank(void);            /* 0 without a group */
int dt_dist_world(void);           /* 1 without a group */
const char *dt_dist_backend(void); /* "gloo", "nccl" or "none" */

/* In place: each buffer <- the mean over the ranks of that buffer (sum, then / world). The
 * buffers go out together (one collective each, waited for in order); every rank ends with the
 * same values. Every rank must pass the same number of buffers of the same sizes, in the same order. */
drdc_status dt_dist_allreduce_mean(const dt_tensor *bufs, int n);
/* In place: buf <- rank root's buf. */
drdc_status dt_dist_broadcast(dt_tensor buf, int root);
/* Waits until every rank has reached it. */
drdc_status dt_dist_barrier(void);
/* The group's store, a small key-value table every rank reaches (for what is not a collective:
 * waiting for rank 0 without the group's timeout). set: key <- n bytes; get: waits for the key at
 * most timeout_s, then copies its value (at most cap bytes; *n gets its full size). */
drdc_status dt_dist_store_set(const char *key, const void *value, size_t n);
drdc_status dt_dist_store_get(const char *key, double timeout_s, void *out, size_t cap, size_t *n);
/* Leaves the group (NULL-safe to call without one; later calls see no group). */
void dt_dist_finalize(void);

/* A TCPStore server alone, as torchrun's agent hosts one for its workers (drdc train --nproc):
 * listens on `port` (0: a free port chosen by the system, written to *bound_port) until freed. */
typedef struct dt_dist_server_s *dt_dist_server;
drdc_status dt_dist_serve(dt_dist_server *out, const char *addr, int port, double timeout_s, int *bound_port);
void dt_dist_server_free(dt_dist_server s);   /* NULL-safe */

#ifdef __cplusplus
}
#endif
#endif
