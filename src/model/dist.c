/* dist.c: data-parallel training over the shim's process group (see dist.h): the environment,
 * joining, the status exchange every agreement uses, the step's bucketed gradient average, waiting
 * for rank 0, the same-weights check, and what to say when a peer is gone. */
#define _GNU_SOURCE
#include "drdc/model/dist.h"
#include "drdc/core/progress.h"
#include "drdc/shim/dist.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MSG 255                        /* message bytes per rank in a status exchange */
#define SLOT (1 + MSG)                 /* status code + message, one float each */
#define BUCKET_FLOATS (25 * 1024 * 1024 / 4)   /* 25 MB, torch DDP's bucket size */

static struct {
    int rank, world;
    dt_device dev;                     /* where the group's buffers live (NCCL: the rank's GPU) */
    double timeout_s;
    int *pids;                         /* [world] each rank's pid */
    char (*hosts)[64];                 /* [world] each rank's host name */
    double t_reduce, t_flat, t_wait;
    long steps;
} D = {0, 1, {DT_CPU, 0}, 0, NULL, NULL, 0, 0, 0, 0};

int drdc_dist_compiled(void) { return dt_dist_compiled(); }
int drdc_dist_nccl_compiled(void) { return dt_dist_nccl_compiled(); }
int drdc_dist_rank(void) { return D.rank; }
int drdc_dist_world(void) { return D.world; }
const char *drdc_dist_backend(void) { return dt_dist_backend(); }

void drdc_dist_timing(double *allreduce_s, double *flatten_s, double *wait_s, long *steps, int reset) {
    if (allreduce_s) *allreduce_s = D.t_reduce;
    if (flatten_s) *flatten_s = D.t_flat;
    if (wait_s) *wait_s = D.t_wait;
    if (steps) *steps = D.steps;
    if (reset) D.t_reduce = D.t_flat = D.t_wait = 0, D.steps = 0;
}

/* ---- the environment -------------------------------------------------------------------------- */

static drdc_status env_int(const char *name, int *out, int lo, int hi, int required) {
    const char *v = getenv(name);
    if (!v || !*v) {
        if (required) return drdc_fail(DRDC_ERR_INPUT, "%s is not set (a distributed run needs RANK, WORLD_SIZE, "
                                       "MASTER_ADDR and MASTER_PORT, as torchrun sets them)", name);
        return DRDC_OK;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi)
        return drdc_fail(DRDC_ERR_INPUT, "environment variable %s = '%s': expected a whole number in [%d, %d]", name,
                         v, lo, hi);
    *out = (int)x;
    return DRDC_OK;
}

drdc_status drdc_dist_read_env(drdc_dist_env *e) {
    memset(e, 0, sizeof *e);
    e->world = 1;
    drdc_status st = DRDC_OK;
    const char *ws = getenv("WORLD_SIZE");
    if (!ws || !*ws) return DRDC_OK;
    e->present = 1;
    TRY(env_int("WORLD_SIZE", &e->world, 1, 65536, 1));
    TRY(env_int("RANK", &e->rank, 0, e->world - 1, 1));
    e->local_rank = e->rank;
    TRY(env_int("LOCAL_RANK", &e->local_rank, 0, 65535, 0));
    TRY(env_int("LOCAL_WORLD_SIZE", &e->local_world, 1, 65536, 0));
    if (e->world == 1) return DRDC_OK;
    const char *addr = getenv("MASTER_ADDR");
    if (!addr || !*addr)
        return drdc_fail(DRDC_ERR_INPUT, "MASTER_ADDR is not set (WORLD_SIZE is %d: the ranks meet at "
                         "MASTER_ADDR:MASTER_PORT)", e->world);
    if (strlen(addr) >= sizeof e->addr) return drdc_fail(DRDC_ERR_INPUT, "MASTER_ADDR is too long");
    snprintf(e->addr, sizeof e->addr, "%s", addr);
    TRY(env_int("MASTER_PORT", &e->port, 1, 65535, 1));
    const char *agent = getenv("TORCHELASTIC_USE_AGENT_STORE");
    e->agent_store = agent && strcmp(agent, "True") == 0;
    if (e->agent_store) {
        int attempt = 0;
        TRY(env_int("TORCHELASTIC_RESTART_COUNT", &attempt, 0, INT_MAX, 0));
        snprintf(e->prefix, sizeof e->prefix, "/worker/attempt_%d", attempt);
    }
done:
    return st;
}

const char *drdc_dist_device(const drdc_dist_env *e, const char *device_arg, char *buf, size_t cap) {
    int n = dt_cuda_device_count();
    if (e->world > 1 && n > 0 && (!device_arg || !strcmp(device_arg, "auto") || !strcmp(device_arg, "cuda"))) {
        snprintf(buf, cap, "cuda:%d", e->local_rank % n);
        return buf;
    }
    return device_arg;
}

/* ---- status exchange -------------------------------------------------------------------------- */

/* Reads the exchanged statuses out of W slots of a reduced mean. */
static void read_slots(const float *h, int W, int *codes, char (*msgs)[MSG + 1]) {
    for (int r = 0; r < W; r++) {
        const float *s = h + (size_t)r * SLOT;
        codes[r] = (int)lrintf(s[0] * (float)W);
        int i = 0;
        for (; i < MSG; i++) {
            long c = lrintf(s[1 + i] * (float)W);
            if (c <= 0 || c > 255) break;
            msgs[r][i] = (char)c;
        }
        msgs[r][i] = '\0';
    }
}


/* Collective: every rank's (code, message) to every rank, through one all-reduce of world slots
 * (each rank fills its own, the mean times world is every slot exactly: bytes and small codes are
 * exact in f32). codes[world], msgs[world][MSG + 1]. */
static drdc_status exchange(int code, const char *msg, dt_device dev, int *codes, char (*msgs)[MSG + 1]) {
    const int W = D.world;
    float *h = calloc((size_t)W * SLOT, sizeof(float));
    dt_tensor t = NULL;
    drdc_status st = DRDC_OK;
    if (!h) return drdc_fail(DRDC_ERR_NOMEM, "status exchange: out of memory");
    float *mine = h + (size_t)D.rank * SLOT;
    mine[0] = (float)code;
    for (int i = 0; msg && msg[i] && i < MSG; i++) mine[1 + i] = (float)(unsigned char)msg[i];
    const int64_t shape[1] = {(int64_t)W * SLOT};
    TRY(dt_from_host(&t, h, DT_F32, shape, 1, dev));
    TRY(dt_dist_allreduce_mean(&t, 1));
    TRY(dt_copy_to_host(t, h, sizeof(float) * (size_t)W * SLOT));
    read_slots(h, W, codes, msgs);
done:
    dt_free(t);
    free(h);
    return st;
}

/* 1 when process pid on this machine has ended (gone, or a zombie not yet reaped). */
static int pid_ended(int pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    return p && (p[2] == 'Z' || p[2] == 'X');
}

/* After a collective failed: names the ranks of this machine whose process has ended, or says the
 * connection broke or timed out; returns st with that context. */
static drdc_status peer_lost(drdc_status st, const char *where) {
    char host[64] = "", gone[512] = "";
    gethostname(host, sizeof host - 1);
    size_t used = 0;
    for (int r = 0; D.pids && r < D.world; r++) {
        if (r == D.rank || strcmp(D.hosts[r], host) != 0 || !pid_ended(D.pids[r])) continue;
        used += (size_t)snprintf(gone + used, used < sizeof gone ? sizeof gone - used : 0, "%srank %d (pid %d)",
                                 used ? ", " : "", r, D.pids[r]);
        if (used >= sizeof gone) break;
    }
    const char *m = drdc_last_error();
    if (gone[0])
        return drdc_error_context(st, "rank %d of %d, %s: %s on this machine has ended (killed or crashed), so this "
                                  "rank stops too", D.rank, D.world, where, gone);
    if (strstr(m, "Timed out") || strstr(m, "timed out") || strstr(m, "Timeout"))
        return drdc_error_context(st, "rank %d of %d, %s: another rank did not answer within %g s (--dist-timeout); "
                                  "this rank stops", D.rank, D.world, where, D.timeout_s);
    return drdc_error_context(st, "rank %d of %d, %s: the connection to another rank broke (it ended, or its "
                              "machine is unreachable); this rank stops", D.rank, D.world, where);
}

/* The verdict of an exchange: own failure first, else the lowest failing rank's. */
static drdc_status verdict(drdc_status own, const char *own_msg, const int *codes, char (*msgs)[MSG + 1],
                           const char *where) {
    if (own) return drdc_fail(own, "%s", own_msg);
    for (int r = 0; r < D.world; r++)
        if (codes[r]) {
            drdc_status st = codes[r] > 0 && codes[r] <= DRDC_ERR_NUMERIC ? (drdc_status)codes[r] : DRDC_ERR_STATE;
            return drdc_fail(st, "rank %d of %d stopped %s: %s", r, D.world, where, msgs[r]);
        }
    return DRDC_OK;
}

drdc_status drdc_dist_agree(drdc_status st, const char *where) {
    if (D.world == 1) return st;
    char own[MSG + 1];
    snprintf(own, sizeof own, "%s", st ? drdc_last_error() : "");
    int *codes = calloc((size_t)D.world, sizeof *codes);
    char (*msgs)[MSG + 1] = calloc((size_t)D.world, sizeof *msgs);
    drdc_status xs;
    if (!codes || !msgs) {
        xs = drdc_fail(DRDC_ERR_NOMEM, "status exchange: out of memory");
    } else {
        xs = exchange(st, own, D.dev, codes, msgs);
        if (xs) xs = peer_lost(xs, where);
        else xs = verdict(st, own, codes, msgs, where);
    }
    free(codes);
    free(msgs);
    return xs;
}

/* ---- joining ---------------------------------------------------------------------------------- */

drdc_status drdc_dist_begin(const drdc_dist_env *e, double timeout_s, dt_device dev) {
    if (!e->present || e->world == 1) return DRDC_OK;
    if (!(timeout_s > 0)) return drdc_fail(DRDC_ERR_INPUT, "--dist-timeout %g: must be above 0", timeout_s);
    dt_dist_options o = {e->rank, e->world, e->addr, e->port, e->agent_store, e->prefix, timeout_s, dev};
    double t0 = drdc_now_seconds();
    drdc_status st = dt_dist_init(&o);
    if (st) {
        const char *m = drdc_last_error();
        const char *why = strstr(m, "Address already in use") || strstr(m, "failed to listen")
                              ? "the store's port is in use on this machine (another job?): choose another MASTER_PORT"
                          : strstr(m, "imeout") || strstr(m, "imed out")
                              ? "not every rank arrived within the timeout (--dist-timeout): start all WORLD_SIZE ranks "
                                "with the same MASTER_ADDR and MASTER_PORT"
                              : "see the cause after the colon";
        return drdc_error_context(st, "rank %d of %d could not join the group at %s:%d (%s store, waited %.1f of %g s; "
                                  "%s)", e->rank, e->world, e->addr, e->port,
                                  e->agent_store ? "the launcher's" : e->rank == 0 ? "its own" : "rank 0's",
                                  drdc_now_seconds() - t0, timeout_s, why);
    }
    D.rank = e->rank;
    D.world = e->world;
    D.dev = dev;
    D.timeout_s = timeout_s;
    /* who is who: every rank's pid and host, to name a rank whose process ends */
    D.pids = calloc((size_t)D.world, sizeof *D.pids);
    D.hosts = calloc((size_t)D.world, sizeof *D.hosts);
    int *codes = calloc((size_t)D.world, sizeof *codes);
    char (*msgs)[MSG + 1] = calloc((size_t)D.world, sizeof *msgs);
    char me[MSG + 1], host[64] = "";
    if (!D.pids || !D.hosts || !codes || !msgs) {
        st = drdc_fail(DRDC_ERR_NOMEM, "joining the group: out of memory");
        goto done;
    }
    gethostname(host, sizeof host - 1);
    snprintf(me, sizeof me, "%d %s", (int)getpid(), host);
    st = exchange(0, me, D.dev, codes, msgs);
    if (st) {
        st = peer_lost(st, "joining");
        goto done;
    }
    for (int r = 0; r < D.world; r++) {
        if (sscanf(msgs[r], "%d %63s", &D.pids[r], D.hosts[r]) < 1) D.pids[r] = 0;
    }
done:
    free(codes);
    free(msgs);
    if (st) drdc_dist_end();
    return st;
}

void drdc_dist_end(void) {
    dt_dist_finalize();
    free(D.pids);
    free(D.hosts);
    D.pids = NULL;
    D.hosts = NULL;
    D.rank = 0;
    D.world = 1;
    D.dev = (dt_device){DT_CPU, 0};
}

/* ---- the step --------------------------------------------------------------------------------- */

drdc_status drdc_dist_step(double *loss, const dt_tensor *params, int n_params, drdc_status local,
                           const char *where) {
    if (D.world == 1) return local;
    const int W = D.world;
    char own[MSG + 1];
    snprintf(own, sizeof own, "%s", local ? drdc_last_error() : "");
    double t0 = drdc_now_seconds(), t_reduce = 0;
    /* pieces: [0] the header (every rank's status slot, the loss, a has-grad flag per parameter),
     * [1 + i] parameter i's flat gradient (zeros when it has none here) */
    const int64_t head = (int64_t)W * SLOT + 1 + n_params;
    float *h = calloc((size_t)head, sizeof(float));
    dt_tensor *pieces = calloc((size_t)n_params + 1, sizeof *pieces);
    dt_tensor *buckets = calloc((size_t)n_params + 1, sizeof *buckets);
    int *first = calloc((size_t)n_params + 2, sizeof *first);   /* first piece of each bucket */
    int *codes = calloc((size_t)W, sizeof *codes);
    char (*msgs)[MSG + 1] = calloc((size_t)W, sizeof *msgs);
    if (!h || !pieces || !buckets || !first || !codes || !msgs) {
        free(h), free(pieces), free(buckets), free(first), free(codes), free(msgs);
        return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory for the gradient buckets", where);
    }
    int nb = 0;
    drdc_status st = dt_scope_begin();
    if (st) goto out;
    const dt_device dev = n_params > 0 ? dt_device_of(params[0]) : D.dev;
    float *mine = h + (size_t)D.rank * SLOT, *flags = h + (size_t)W * SLOT + 1;
    mine[0] = (float)local;
    for (int i = 0; own[i] && i < MSG; i++) mine[1 + i] = (float)(unsigned char)own[i];
    h[(size_t)W * SLOT] = local ? 0.0f : (float)*loss;
    for (int i = 0; i < n_params; i++) {
        dt_tensor g = NULL;
        const int64_t m1[1] = {-1}, z[1] = {dt_numel(params[i])};
        if (!local) TRY(dt_grad(&g, params[i]));
        if (g) {
            flags[i] = 1.0f;
            TRY(dt_reshape(&pieces[1 + i], g, m1, 1));
            if (dt_dtype_of(pieces[1 + i]) != DT_F32) TRY(dt_to_dtype(&pieces[1 + i], pieces[1 + i], DT_F32));
        } else {
            TRY(dt_zeros(&pieces[1 + i], z, 1, DT_F32, dev));
        }
    }
    const int64_t hshape[1] = {head};
    TRY(dt_from_host(&pieces[0], h, DT_F32, hshape, 1, dev));
    /* buckets of at most BUCKET_FLOATS (a larger tensor gets one of its own) */
    int64_t fill = 0;
    for (int p = 0; p <= n_params; p++) {
        int64_t numel = dt_numel(pieces[p]);
        if (p > first[nb] && fill + numel > BUCKET_FLOATS) {
            TRY(dt_cat(&buckets[nb], pieces + first[nb], p - first[nb], 0));
            first[++nb] = p;
            fill = 0;
        }
        fill += numel;
    }
    TRY(dt_cat(&buckets[nb], pieces + first[nb], n_params + 1 - first[nb], 0));
    first[++nb] = n_params + 1;
    static int profile = -1;   /* DRDC_DIST_PROFILE=1: a barrier first, so the all-reduce time is the transfer alone */
    if (profile < 0) profile = getenv("DRDC_DIST_PROFILE") && atoi(getenv("DRDC_DIST_PROFILE")) > 0;
    if (profile) {
        double tw = drdc_now_seconds();
        st = dt_dist_barrier();
        D.t_wait += drdc_now_seconds() - tw;
        t0 += drdc_now_seconds() - tw;
        if (st) {
            st = peer_lost(st, where);
            goto done;
        }
    }
    double t1 = drdc_now_seconds();
    st = dt_dist_allreduce_mean(buckets, nb);
    t_reduce = drdc_now_seconds() - t1;
    if (st) {
        st = peer_lost(st, where);
        goto done;
    }
    dt_tensor hv = NULL;
    TRY(dt_narrow(&hv, buckets[0], 0, 0, head));
    TRY(dt_copy_to_host(hv, h, sizeof(float) * (size_t)head));
    read_slots(h, W, codes, msgs);
    TRY(verdict(local, own, codes, msgs, where));
    *loss = h[(size_t)W * SLOT];
    /* unflatten into the grads (a parameter with a grad on no rank keeps none) */
    for (int k = 0; k < nb; k++) {
        int64_t off = 0;
        for (int p = first[k]; p < first[k + 1]; p++) {
            int64_t numel = dt_numel(pieces[p]);
            if (p > 0 && flags[p - 1] > 0.0f) {
                dt_tensor slice = NULL, g = NULL;
                int64_t shape[8];
                int nd = dt_ndim(params[p - 1]);
                TRY(dt_shape(shape, 8, params[p - 1]));
                TRY(dt_narrow(&slice, buckets[k], 0, off, numel));
                TRY(dt_reshape(&slice, slice, shape, nd));
                TRY(dt_grad(&g, params[p - 1]));
                if (g) TRY(dt_copy_(g, slice));
                else TRY(dt_set_grad(params[p - 1], slice));
            }
            off += numel;
        }
    }
    D.steps++;
done:
    {
        drdc_status end = dt_scope_end();
        if (!st) st = end;
    }
out:
    D.t_reduce += t_reduce;
    D.t_flat += drdc_now_seconds() - t0 - t_reduce;
    free(h);
    free(pieces);
    free(buckets);
    free(first);
    free(codes);
    free(msgs);
    return st;
}

/* ---- after rank 0's own work ------------------------------------------------------------------ */

drdc_status drdc_dist_after_rank0(drdc_status st, const char *what, double limit_s) {
    if (D.world == 1) return st;
    static int seq;   /* every rank calls in the same order: the same key for the same call */
    char key[160], val[MSG + 16];
    snprintf(key, sizeof key, "drdc/after_rank0/%d/%s", ++seq, what);
    drdc_status xs = DRDC_OK;
    int code = 0;
    char msg[MSG + 1] = "";
    if (D.rank == 0) {
        snprintf(msg, sizeof msg, "%s", st ? drdc_last_error() : "");
        int len = snprintf(val, sizeof val, "%d %s", (int)st, msg);
        xs = dt_dist_store_set(key, val, (size_t)(len < (int)sizeof val ? len : (int)sizeof val - 1));
        code = st;
    } else {
        size_t n = 0;
        xs = dt_dist_store_get(key, limit_s, val, sizeof val - 1, &n);
        if (!xs) {
            val[n < sizeof val - 1 ? n : sizeof val - 1] = '\0';
            int used = 0;
            if (sscanf(val, "%d %n", &code, &used) < 1) code = DRDC_ERR_STATE;
            snprintf(msg, sizeof msg, "%s", val + used);
        }
    }
    /* rank 0 may host the store: nobody leaves until every rank has read its verdict */
    if (!xs) xs = dt_dist_barrier();
    if (xs) return peer_lost(xs, what);
    if (D.rank == 0) return st ? drdc_fail(st, "%s", msg) : DRDC_OK;
    if (code) {
        drdc_status s = code > 0 && code <= DRDC_ERR_NUMERIC ? (drdc_status)code : DRDC_ERR_STATE;
        return drdc_fail(s, "rank 0 of %d stopped %s: %s", D.world, what, msg);
    }
    return DRDC_OK;
}

/* ---- same weights ----------------------------------------------------------------------------- */

drdc_status drdc_dist_check_same(const dt_tensor *params, int n_params, const char *what) {
    if (D.world == 1 || n_params == 0) return DRDC_OK;
    float *mine = malloc(sizeof(float) * (size_t)n_params), *lead = malloc(sizeof(float) * (size_t)n_params);
    dt_tensor t = NULL;
    drdc_status st = DRDC_OK;
    if (!mine || !lead) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < n_params; i++) {
        dt_tensor s = NULL;
        double v = 0;
        TRY(dt_sum_all(&s, params[i]));
        st = dt_item(&v, s);
        dt_free(s);
        if (st) goto done;
        mine[i] = lead[i] = (float)v;
    }
    const int64_t shape[1] = {n_params};
    TRY(dt_from_host(&t, lead, DT_F32, shape, 1, D.dev));
    st = dt_dist_broadcast(t, 0);
    if (st) {
        st = peer_lost(st, what);
        goto done;
    }
    TRY(dt_copy_to_host(t, lead, sizeof(float) * (size_t)n_params));
    int bad = -1;
    for (int i = 0; i < n_params && bad < 0; i++)
        if (!(fabsf(mine[i] - lead[i]) <= 1e-5f * fmaxf(1.0f, fabsf(lead[i])))) bad = i;
    /* every rank learns whether any differs */
    drdc_status own = DRDC_OK;
    if (bad >= 0)
        own = drdc_fail(DRDC_ERR_STATE, "its weights differ from rank 0's %s (tensor %d sums to %.9g here, %.9g on "
                        "rank 0): the ranks stopped taking the same steps", what, bad, mine[bad], lead[bad]);
    st = drdc_dist_agree(own, what);
done:
    dt_free(t);
    free(mine);
    free(lead);
    return st;
}
