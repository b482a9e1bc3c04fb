/* dist.h: data-parallel training over the shim's process group (drdc/shim/dist.h): joining it
 * from the environment torchrun sets, the averaged gradients of a step, agreeing on failures (so
 * that every rank stops together, naming the rank that failed and why), waiting for rank 0's own
 * work, a check that the ranks hold the same weights, and the local launcher of
 * `drdc train --nproc N`.
 *
 * Every function is a no-op (or returns its input status) in a process that joined no group
 * (world 1), so the one-process run takes the same code path. Collective functions must be called
 * by every rank in the same order. */
#ifndef DRDC_MODEL_DIST_H
#define DRDC_MODEL_DIST_H

#include <stddef.h>

#include "drdc/core/error.h"
#include "drdc/shim/shim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What torchrun (and `drdc train --nproc`) put in a rank's environment. */
typedef struct drdc_dist_env {
    int present;                 /* WORLD_SIZE is set */
    int rank, world;             /* RANK, WORLD_SIZE */
    int local_rank, local_world; /* LOCAL_RANK, LOCAL_WORLD_SIZE (local_world 0 when unset) */
    char addr[256];              /* MASTER_ADDR */
    int port;                    /* MASTER_PORT */
    int agent_store;             /* TORCHELASTIC_USE_AGENT_STORE=True: the launcher hosts the store */
    char prefix[64];             /* then "/worker/attempt_<TORCHELASTIC_RESTART_COUNT>" (torchrun's keys) */
} drdc_dist_env;

int drdc_dist_compiled(void);        /* 1 when this drdc can join a group (built with c10d) */
int drdc_dist_nccl_compiled(void);   /* 1 when it has c10d's NCCL backend */

/* Reads the environment; no WORLD_SIZE: present 0, world 1. A variable that is set but wrong
 * (not a number, RANK >= WORLD_SIZE, WORLD_SIZE > 1 without MASTER_ADDR or MASTER_PORT) is
 * DRDC_ERR_INPUT naming it. */
drdc_status drdc_dist_read_env(drdc_dist_env *e);

/* The --device of a rank: with more than one rank and CUDA devices, "auto", "cuda" or none means
 * cuda:LOCAL_RANK (modulo the devices seen: one GPU per local rank); anything else is kept. */
const char *drdc_dist_device(const drdc_dist_env *e, const char *device_arg, char *buf, size_t cap);

/* Joins the group of e (world > 1; nothing for world 1): Gloo, or NCCL when dev is CUDA and the
 * build has it. timeout_s bounds every wait for another rank. Errors say which rank could not join
 * and why (a rank that did not arrive in time, a store port in use). */
drdc_status drdc_dist_begin(const drdc_dist_env *e, double timeout_s, dt_device dev);
void drdc_dist_end(void);
int drdc_dist_rank(void);        /* 0 outside a group */
int drdc_dist_world(void);       /* 1 outside a group */
const char *drdc_dist_backend(void);

/* Collective: every rank passes its own status; all return DRDC_OK when every status was OK.
 * Otherwise a failing rank returns its own status and message, and the others the status of the
 * lowest failing rank with "rank R of W stopped <where>: <its message>". */
drdc_status drdc_dist_agree(drdc_status st, const char *where);

/* Collective, one optimisation step: averages the gradients of params over the ranks (a rank's
 * None gradient counts as zero; a parameter that has none on every rank keeps none), and *loss
 * (this rank's loss, already weighted by its share of the global batch) becomes the group's. The
 * gradients travel flattened in buckets of at most 25 MB (the first also carries every rank's
 * status, so a rank whose step failed (`local`) stops them all: see drdc_dist_agree). */
drdc_status drdc_dist_step(double *loss, const dt_tensor *params, int n_params, drdc_status local,
                           const char *where);

/* Collective, after work rank 0 does alone (a checkpoint, the calibration between the stages):
 * rank 0 passes its status through the store, the other ranks wait for it there for at most
 * limit_s (not the group's timeout: the work may take long; a rank 0 that dies while it hosts the
 * store is noticed at once), all meet at a barrier (rank 0 may host the store: it leaves only once
 * everyone has read it), then all return as drdc_dist_agree. `what` names the work in messages. */
drdc_status drdc_dist_after_rank0(drdc_status st, const char *what, double limit_s);

/* Collective: rank 0's per-tensor sums of params against this rank's; a difference beyond float
 * rounding is DRDC_ERR_STATE naming the tensor (the ranks stopped taking the same steps). */
drdc_status drdc_dist_check_same(const dt_tensor *params, int n_params, const char *what);

/* Seconds this process spent in drdc_dist_step's all-reduce (waiting for the other ranks
 * included) and in flattening and unflattening, and the number of steps; reset with reset = 1.
 * With DRDC_DIST_PROFILE=1 in the environment every step meets at a barrier first: wait_s is the
 * time spent there (waiting for the slowest rank) and allreduce_s the transfer alone (a measuring
 * aid: one more collective per step). */
void drdc_dist_timing(double *allreduce_s, double *flatten_s, double *wait_s, long *steps, int reset);

/* `drdc train --nproc N`: hosts a TCPStore on a free loopback port and runs N copies of this
 * program (argv: the whole command line; threads: the --threads given, 0: none given, then each
 * rank gets --threads cores / N) with
 * torchrun's variables set (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR,
 * MASTER_PORT, TORCHELASTIC_USE_AGENT_STORE). Waits for all; when a rank fails it says which and
 * how (exit status or signal), gives the others timeout_s + 10 s to stop by themselves and then
 * terminates them. SIGINT and SIGTERM are passed on to the ranks. *exit_code gets 0 when every rank
 * succeeded, else the first failing rank's exit code (128 + signal for a signal). */
drdc_status drdc_dist_launch(char **argv, int nproc, int threads, double timeout_s, int *exit_code);

#ifdef __cplusplus
}
#endif
#endif
