/* diffusion.c: the diffusion refiner around a network callback (see diffusion.h): the config
 * rules of the schedule and the sampler, the linear schedule, q_sample (eq. 4), the inpainting
 * masks of paper 4.2, the training batch and loss of eq. (10) and the DDIM inpainting sampler
 * with test-time conditioning (eqs. 7, 11-13, one step in drdc_ddim_step) folded per grid by
 * eq. (8). Every tensor step runs inside a shim scope, so no temporary outlives its call; each
 * DDIM step has its own scope so memory does not grow with the number of steps. */
#include "drdc/stages/diffusion.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


static const dt_device k_cpu = {DT_CPU, 0};

/* ---- config rules ----------------------------------------------------------------------------- */

drdc_status drdc_diffusion_check_config(const drdc_refiner_config *r, const drdc_infer_config *in) {
    if (!r || !in) return drdc_fail(DRDC_ERR_INPUT, "diffusion config check: NULL config");
    if (!(r->beta_start < r->beta_end))
        return drdc_fail(DRDC_ERR_CONFIG, "refiner.beta_start %g must be below refiner.beta_end %g", r->beta_start,
                         r->beta_end);
    if (r->max_train_t > r->timesteps)
        return drdc_fail(DRDC_ERR_CONFIG, "refiner.max_train_t %d exceeds refiner.timesteps %d", r->max_train_t,
                         r->timesteps);
    if (in->tau >= r->timesteps)
        return drdc_fail(DRDC_ERR_CONFIG, "infer.tau %d must be below refiner.timesteps %d", in->tau, r->timesteps);
    if (in->steps > in->tau) return drdc_fail(DRDC_ERR_CONFIG, "infer.steps %d exceeds infer.tau %d", in->steps, in->tau);
    if (in->n_grids < 1 || in->n_grids > DRDC_MAX_LIST)
        return drdc_fail(DRDC_ERR_CONFIG, "infer.grids has %d cell sizes, want 1..%d", in->n_grids, DRDC_MAX_LIST);
    int coarsest = 0;
    for (int g = 0; g < in->n_grids; g++) {
        if (in->grids[g] < 1 || r->image_size % in->grids[g] != 0)
            return drdc_fail(DRDC_ERR_CONFIG, "infer.grids: cell size %d does not divide refiner.image_size %d",
                             in->grids[g], r->image_size);
        if (in->grids[g] > coarsest) coarsest = in->grids[g];
    }
    long cells = (long)(r->image_size / coarsest) * (r->image_size / coarsest);
    if (in->K > cells)
        return drdc_fail(DRDC_ERR_CONFIG,
                         "infer.K %d exceeds the %ld cells of the coarsest grid (%d px cells on refiner.image_size %d)",
                         in->K, cells, coarsest, r->image_size);
    return DRDC_OK;
}

/* ---- shapes ----------------------------------------------------------------------------------- */

/* Checks rank, f32 dtype and dims of a tensor (a dim of -1 matches anything). */
static drdc_status expect_shape(dt_tensor t, const char *fn, const char *name, int ndim, const int64_t *want) {
    if (!t) return drdc_fail(DRDC_ERR_INPUT, "%s: %s is NULL", fn, name);
    int64_t got[8] = {0};
    if (dt_ndim(t) != ndim)
        return drdc_fail(DRDC_ERR_INPUT, "%s: %s has rank %d, want %d", fn, name, dt_ndim(t), ndim);
    drdc_status st = dt_shape(got, 8, t);
    if (st) return drdc_error_context(st, "%s: %s", fn, name);
    for (int i = 0; i < ndim; i++) {
        if (want[i] >= 0 && got[i] != want[i])
            return drdc_fail(DRDC_ERR_INPUT, "%s: %s has size %lld in dim %d, want %lld", fn, name,
                             (long long)got[i], i, (long long)want[i]);
    }
    if (dt_dtype_of(t) != DT_F32)
        return drdc_fail(DRDC_ERR_INPUT, "%s: %s is %s, want f32", fn, name, dt_dtype_name(dt_dtype_of(t)));
    return DRDC_OK;
}

/* Checks that images are f32 [N,3,H,W] and writes their shape. */
static drdc_status image_shape(int64_t shape[4], dt_tensor x, const char *fn, const char *name) {
    static const int64_t want[4] = {-1, 3, -1, -1};
    drdc_status st = DRDC_OK;
    TRY(expect_shape(x, fn, name, 4, want));
    TRY(dt_shape(shape, 4, x));
done:
    return st;
}

/* expect_shape for an optional tensor: NULL passes. */
static drdc_status expect_given(dt_tensor t, const char *fn, const char *name, int ndim, const int64_t *want) {
    return t ? expect_shape(t, fn, name, ndim, want) : DRDC_OK;
}

/* ---- schedule --------------------------------------------------------------------------------- */

drdc_status drdc_schedule_init(drdc_schedule *s, int T, double beta_start, double beta_end, dt_device dev) {
    if (!s) return drdc_fail(DRDC_ERR_INPUT, "diffusion schedule: NULL output");
    memset(s, 0, sizeof *s);
    if (T < 1) return drdc_fail(DRDC_ERR_INPUT, "diffusion schedule: timesteps %d, want >= 1", T);
    if (!(beta_start > 0.0) || !(beta_end >= beta_start) || !(beta_end < 1.0))
        return drdc_fail(DRDC_ERR_INPUT, "diffusion schedule: betas %g..%g, want 0 < beta_start <= beta_end < 1",
                         beta_start, beta_end);
    drdc_status st = DRDC_OK;
    s->T = T;
    s->device = dev;
    s->betas = malloc(sizeof(double) * (size_t)T);
    s->abar64 = malloc(sizeof(double) * (size_t)T);
    s->abar = malloc(sizeof(float) * (size_t)T);
    if (!s->betas || !s->abar64 || !s->abar) {
        st = drdc_fail(DRDC_ERR_NOMEM, "diffusion schedule: out of memory for %d timesteps", T);
        goto done;
    }
    double prod = 1.0;
    for (int i = 0; i < T; i++) {
        double beta = T == 1 ? beta_start : beta_start + (beta_end - beta_start) * (double)i / (double)(T - 1);
        s->betas[i] = beta;                   /* beta_i */
        prod *= 1.0 - beta;                   /* abar_i = prod_{j<=i} alpha_j */
        s->abar64[i] = prod;
        s->abar[i] = (float)prod;
    }
    const int64_t shape[1] = {T};
    st = dt_from_host(&s->abar_dev, s->abar, DT_F32, shape, 1, dev);  /* [T] */
    if (st) drdc_error_context(st, "diffusion schedule: abar to device");
done:
    if (st) drdc_schedule_free(s);
    return st;
}

drdc_status drdc_schedule_from_config(drdc_schedule *s, const drdc_refiner_config *rc, dt_device dev) {
    if (!rc) return drdc_fail(DRDC_ERR_INPUT, "diffusion schedule: NULL config");
    return drdc_schedule_init(s, rc->timesteps, rc->beta_start, rc->beta_end, dev);
}

void drdc_schedule_free(drdc_schedule *s) {
    if (!s) return;
    free(s->betas);
    free(s->abar64);
    free(s->abar);
    dt_free(s->abar_dev);
    memset(s, 0, sizeof *s);
}

double drdc_schedule_abar(const drdc_schedule *s, int t) {
    if (!s || !s->abar || t < -1 || t >= s->T) return NAN;
    return t == -1 ? 1.0 : (double)s->abar[t];
}

drdc_status drdc_schedule_gather(dt_tensor *out, const drdc_schedule *s, dt_tensor t) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "diffusion gather abar: NULL output");
    *out = NULL;
    if (!s || !s->abar_dev) return drdc_fail(DRDC_ERR_INPUT, "diffusion gather abar: schedule not initialised");
    if (!t || dt_ndim(t) != 1 || dt_dtype_of(t) != DT_I64)
        return drdc_fail(DRDC_ERR_INPUT, "diffusion gather abar: t must be a 1-D i64 tensor");
    drdc_status st = dt_scope_begin();
    if (st) return st;
    dt_tensor lo = NULL, hi = NULL, ab = NULL, onto = NULL, res = NULL;
    double tmin = 0, tmax = 0;
    if (dt_numel(t) > 0) {
        TRY(dt_min_all(&lo, t));
        TRY(dt_max_all(&hi, t));
        TRY(dt_item(&tmin, lo));
        TRY(dt_item(&tmax, hi));
        if (tmin < 0 || tmax >= s->T) {
            st = drdc_fail(DRDC_ERR_INPUT, "diffusion gather abar: timesteps span [%.0f, %.0f], want [0, %d)", tmin,
                           tmax, s->T);
            goto done;
        }
    }
    TRY(dt_to_device(&onto, s->abar_dev, dt_device_of(t)));            /* [T] on t's device */
    TRY(dt_index_select(&ab, onto, 0, t));                             /* [N] */
    const int64_t shape[4] = {-1, 1, 1, 1};
    TRY(dt_reshape(&res, ab, shape, 4));                               /* [N,1,1,1] */
done:
    return dt_scope_finish(st, res, out);
}

drdc_status drdc_q_sample(dt_tensor *x_t, const drdc_schedule *s, dt_tensor x0, dt_tensor t, dt_tensor eps) {
    if (!x_t) return drdc_fail(DRDC_ERR_INPUT, "q_sample: NULL output");
    *x_t = NULL;
    if (!x0 || !eps || !t) return drdc_fail(DRDC_ERR_INPUT, "q_sample: NULL x0, t or eps");
    drdc_status st = dt_scope_begin();
    if (st) return st;
    dt_tensor ab = NULL, sa = NULL, om = NULL, so = NULL, a = NULL, b = NULL, res = NULL;
    TRY(drdc_schedule_gather(&ab, s, t));      /* [N,1,1,1] abar_t */
    TRY(dt_sqrt(&sa, ab));                     /* sqrt(abar_t) */
    TRY(dt_neg(&om, ab));
    TRY(dt_add_scalar(&om, om, 1.0));          /* 1 - abar_t (om reassigned: the old handle stays in the scope) */
    TRY(dt_sqrt(&so, om));                     /* sqrt(1 - abar_t) */
    TRY(dt_mul(&a, sa, x0));                   /* [N,C,H,W] */
    TRY(dt_mul(&b, so, eps));                  /* [N,C,H,W] */
    TRY(dt_add(&res, a, b));                   /* [N,C,H,W] x_t, eq. (4) */
done:
    if (st) drdc_error_context(st, "q_sample");
    return dt_scope_finish(st, res, x_t);
}

/* ---- masks ------------------------------------------------------------------------------------ */

static drdc_status check_grid(const char *fn, int H, int W, int grid, int K, int64_t *cells) {
    if (H <= 0 || W <= 0 || grid <= 0 || H % grid || W % grid)
        return drdc_fail(DRDC_ERR_INPUT, "%s: grid size %d does not divide the image size %dx%d", fn, grid, H, W);
    int64_t c = (int64_t)(H / grid) * (W / grid);
    if (K < 1 || K > c)
        return drdc_fail(DRDC_ERR_INPUT, "%s: K = %d hidden sets for %lld cells of %d px, want 1 <= K <= cells", fn,
                         K, (long long)c, grid);
    *cells = c;
    return DRDC_OK;
}

/* check_grid for every grid size of a list. */
static drdc_status check_grids(const char *fn, int H, int W, const int *grids, int n_grids, int K) {
    int64_t cells = 0;
    drdc_status st = DRDC_OK;
    for (int g = 0; g < n_grids; g++) TRY(check_grid(fn, H, W, grids[g], K, &cells));
done:
    return st;
}

/* One mask M_k [H,W]: 1 everywhere except the cells perm[p] with p mod K == k. */
static void fill_mask(float *dst, int H, int W, int grid, int K, const int64_t *perm, int64_t cells, int k) {
    int cw = W / grid;
    for (int64_t i = 0; i < (int64_t)H * W; i++) dst[i] = 1.0f;
    for (int64_t p = k; p < cells; p += K) {
        int64_t c = perm[p];
        int cy = (int)(c / cw), cx = (int)(c % cw);
        for (int y = cy * grid; y < (cy + 1) * grid; y++)
            for (int x = cx * grid; x < (cx + 1) * grid; x++) dst[(int64_t)y * W + x] = 0.0f;
    }
}

drdc_status drdc_inpaint_masks_from_perm(float *out, int H, int W, int grid, int K, const int64_t *perm) {
    int64_t cells = 0;
    drdc_status st = check_grid("inpaint masks", H, W, grid, K, &cells);
    if (st) return st;
    if (!out || !perm) return drdc_fail(DRDC_ERR_INPUT, "inpaint masks: NULL output or permutation");
    for (int64_t p = 0; p < cells; p++) {
        if (perm[p] < 0 || perm[p] >= cells)
            return drdc_fail(DRDC_ERR_INPUT, "inpaint masks: permutation entry %lld = %lld is not a cell index < %lld",
                             (long long)p, (long long)perm[p], (long long)cells);
    }
    for (int k = 0; k < K; k++) fill_mask(out + (int64_t)k * H * W, H, W, grid, K, perm, cells, k);
    return DRDC_OK;
}

/* Draws one permutation of `cells` cell indices from g into a new host array (caller frees). */
static drdc_status draw_perm(int64_t **out, int64_t cells, dt_generator g) {
    *out = NULL;
    dt_tensor p = NULL;
    int64_t *host = NULL;
    drdc_status st = dt_randperm(&p, cells, k_cpu, g);                     /* [cells] i64 */
    if (st) {
        drdc_error_context(st, "inpaint masks: drawing the partition");
        goto done;
    }
    host = malloc(sizeof(int64_t) * (size_t)cells);
    if (!host) {
        st = drdc_fail(DRDC_ERR_NOMEM, "inpaint masks: out of memory for %lld cells", (long long)cells);
        goto done;
    }
    TRY(dt_copy_to_host(p, host, sizeof(int64_t) * (size_t)cells));
    *out = host;
    host = NULL;
done:
    dt_free(p);
    free(host);
    return st;
}

drdc_status drdc_inpaint_masks(dt_tensor *masks, int H, int W, int grid, int K, dt_generator g, dt_device dev) {
    if (!masks) return drdc_fail(DRDC_ERR_INPUT, "inpaint masks: NULL output");
    *masks = NULL;
    int64_t cells = 0;
    drdc_status st = check_grid("inpaint masks", H, W, grid, K, &cells);
    if (st) return st;
    int64_t *perm = NULL;
    float *host = NULL;
    const int64_t shape[4] = {K, 1, H, W};
    TRY(draw_perm(&perm, cells, g));
    host = malloc(sizeof(float) * (size_t)K * H * W);
    if (!host) {
        st = drdc_fail(DRDC_ERR_NOMEM, "inpaint masks: out of memory for %d masks of %dx%d", K, H, W);
        goto done;
    }
    TRY(drdc_inpaint_masks_from_perm(host, H, W, grid, K, perm));
    TRY(dt_from_host(masks, host, DT_F32, shape, 4, dev));                /* [K,1,H,W] */
done:
    free(host);
    free(perm);
    return st;
}

drdc_status drdc_inpaint_condition(dt_tensor *cond, dt_tensor x, dt_tensor mask, dt_tensor z) {
    if (!cond) return drdc_fail(DRDC_ERR_INPUT, "inpaint condition: NULL output");
    *cond = NULL;
    if (!x || !mask || !z) return drdc_fail(DRDC_ERR_INPUT, "inpaint condition: NULL x, mask or z");
    drdc_status st = dt_scope_begin();
    if (st) return st;
    dt_tensor neg = NULL, hidden = NULL, kx = NULL, hz = NULL, res = NULL;
    /* written out as M x + (1 - M) z (not z + M (x - z)) so that binary masks copy x and z exactly */
    TRY(dt_neg(&neg, mask));
    TRY(dt_add_scalar(&hidden, neg, 1.0));     /* [N,1,H,W] 1 - M */
    TRY(dt_mul(&kx, mask, x));                 /* [N,3,H,W] M x */
    TRY(dt_mul(&hz, hidden, z));               /* [N,3,H,W] (1 - M) z */
    TRY(dt_add(&res, kx, hz));                 /* [N,3,H,W] x~ */
done:
    if (st) drdc_error_context(st, "inpaint condition");
    return dt_scope_finish(st, res, cond);
}

/* ---- training batch --------------------------------------------------------------------------- */

void drdc_train_batch_free(drdc_train_batch *b) {
    if (!b) return;
    dt_free(b->x_t);
    dt_free(b->t);
    dt_free(b->cond);
    dt_free(b->eps);
    dt_free(b->mask);
    memset(b, 0, sizeof *b);
}

/* Draws n ints in [0, high) from g onto the host. */
static drdc_status draw_ints(int64_t *dst, int64_t n, int64_t high, dt_generator g) {
    dt_tensor r = NULL;
    const int64_t shape[1] = {n};
    drdc_status st = DRDC_OK;
    TRY(dt_randint(&r, 0, high, shape, 1, k_cpu, g));                     /* [n] i64 */
    TRY(dt_copy_to_host(r, dst, sizeof(int64_t) * (size_t)n));
done:
    dt_free(r);
    return st;
}

drdc_status drdc_diffusion_train_batch(drdc_train_batch *out, const drdc_schedule *s, dt_tensor x0,
                                       const int *grids, int n_grids, int K, int max_train_t, dt_generator g) {
    static const char *fn = "diffusion train batch";
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "%s: NULL output", fn);
    memset(out, 0, sizeof *out);
    if (!s || !s->abar) return drdc_fail(DRDC_ERR_INPUT, "%s: schedule not initialised", fn);
    int64_t shape[4];
    drdc_status st = image_shape(shape, x0, fn, "x0");
    if (st) return st;
    if (!grids || n_grids < 1 || n_grids > DRDC_MAX_LIST)
        return drdc_fail(DRDC_ERR_INPUT, "%s: %d grid sizes, want 1..%d", fn, n_grids, DRDC_MAX_LIST);
    if (max_train_t < 1 || max_train_t > s->T)
        return drdc_fail(DRDC_ERR_INPUT, "%s: max_train_t %d, want 1..T = %d", fn, max_train_t, s->T);
    const int64_t B = shape[0];
    const int H = (int)shape[2], W = (int)shape[3];
    st = check_grids(fn, H, W, grids, n_grids, K);
    if (st) return st;
    if (B < 1) return drdc_fail(DRDC_ERR_INPUT, "%s: empty batch", fn);
    const dt_device dev = dt_device_of(x0);

    st = dt_scope_begin();
    if (st) return st;
    dt_tensor t = NULL, mask = NULL, z = NULL, eps = NULL, cond = NULL, x_t = NULL;
    int64_t *gi = malloc(sizeof(int64_t) * (size_t)B * 3);
    float *mask_host = malloc(sizeof(float) * (size_t)B * H * W);
    if (!gi || !mask_host) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory for %lld masks", (long long)B);
        goto done;
    }
    int64_t *ki = gi + B, *ti = gi + 2 * B;
    TRY(draw_ints(gi, B, n_grids, g));                                  /* grid index per sample */
    TRY(draw_ints(ki, B, K, g));                                        /* hidden set per sample */
    TRY(draw_ints(ti, B, max_train_t, g));                              /* timestep per sample */
    for (int64_t b = 0; b < B; b++) {
        int grid = grids[gi[b]];
        int64_t c = (int64_t)(H / grid) * (W / grid), *perm = NULL;
        dt_generator gb = NULL;
        TRY(dt_generator_row(&gb, g, b, B));                            /* sample b's generator (or g) */
        TRY(draw_perm(&perm, c, gb));
        fill_mask(mask_host + b * H * W, H, W, grid, K, perm, c, (int)ki[b]);
        free(perm);
    }
    const int64_t tshape[1] = {B}, mshape[4] = {B, 1, H, W}, xshape[4] = {B, 3, H, W};
    TRY(dt_from_host(&t, ti, DT_I64, tshape, 1, dev));                   /* [B] */
    TRY(dt_from_host(&mask, mask_host, DT_F32, mshape, 4, dev));         /* [B,1,H,W] */
    TRY(dt_randn(&z, xshape, 4, DT_F32, dev, g));                        /* [B,3,H,W] */
    TRY(dt_randn(&eps, xshape, 4, DT_F32, dev, g));                      /* [B,3,H,W] */
    TRY(drdc_inpaint_condition(&cond, x0, mask, z));                     /* [B,3,H,W] x~_k */
    TRY(drdc_q_sample(&x_t, s, x0, t, eps));                             /* [B,3,H,W] eq. (4) */
    /* each handle goes into *out as soon as it leaves the scope, so that a failure frees it */
    TRY(dt_scope_keep(t));
    out->t = t;
    TRY(dt_scope_keep(mask));
    out->mask = mask;
    TRY(dt_scope_keep(eps));
    out->eps = eps;
    TRY(dt_scope_keep(cond));
    out->cond = cond;
    TRY(dt_scope_keep(x_t));
    out->x_t = x_t;
done:
    free(gi);
    free(mask_host);
    st = dt_scope_finish(st, NULL, NULL);   /* the rest of the temporaries */
    if (st) {
        drdc_error_context(st, "%s", fn);
        drdc_train_batch_free(out);
    }
    return st;
}

drdc_status drdc_diffusion_loss(dt_tensor *loss, dt_tensor eps_pred, dt_tensor eps) {
    static const char *fn = "diffusion loss";
    if (!loss) return drdc_fail(DRDC_ERR_INPUT, "%s: NULL output", fn);
    *loss = NULL;
    int64_t shape[4];
    drdc_status st = DRDC_OK;
    TRY(image_shape(shape, eps_pred, fn, "eps_theta"));
    TRY(expect_shape(eps, fn, "eps", 4, shape));
    TRY(dt_mse_loss(loss, eps_pred, eps));                               /* [] eq. (10) */
done:
    return st;
}

/* ---- DDIM sampler ----------------------------------------------------------------------------- */

drdc_status drdc_ddim_timesteps(int *out, int tau, int steps) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "ddim timesteps: NULL output");
    if (tau < 1 || steps < 1 || steps > tau)
        return drdc_fail(DRDC_ERR_INPUT, "ddim timesteps: tau %d with %d steps, want 1 <= steps <= tau", tau, steps);
    for (int i = 0; i < steps; i++) out[i] = (int)(((int64_t)tau * (steps - i)) / steps);
    return DRDC_OK;
}

/* Runs eps_fn on chunks of at most `chunk` runs and concatenates: [N,3,H,W]. */
static drdc_status call_network(dt_tensor *eps_out, drdc_eps_fn fn, void *ctx, dt_tensor x_t, dt_tensor t,
                                dt_tensor cond, int64_t N, int64_t chunk) {
    *eps_out = NULL;
    if (chunk <= 0 || chunk >= N) {
        drdc_status st = fn(eps_out, ctx, x_t, t, cond);                 /* [N,3,H,W] */
        if (st) return drdc_error_context(st, "network callback");
        if (!*eps_out) return drdc_fail(DRDC_ERR_STATE, "network callback returned no tensor");
        return DRDC_OK;
    }
    int64_t n_chunks = (N + chunk - 1) / chunk;
    dt_tensor *parts = calloc((size_t)n_chunks, sizeof *parts);
    if (!parts) return drdc_fail(DRDC_ERR_NOMEM, "network callback: out of memory for %lld chunks", (long long)n_chunks);
    drdc_status st = DRDC_OK;
    dt_tensor xc = NULL, tc = NULL, cc = NULL;
    for (int64_t c = 0; c < n_chunks; c++) {
        int64_t start = c * chunk, len = start + chunk <= N ? chunk : N - start;
        TRY(dt_narrow(&xc, x_t, 0, start, len));                         /* [len,3,H,W] */
        TRY(dt_narrow(&tc, t, 0, start, len));                           /* [len] */
        TRY(dt_narrow(&cc, cond, 0, start, len));                        /* [len,3,H,W] */
        st = fn(&parts[c], ctx, xc, tc, cc);                             /* [len,3,H,W] */
        if (st) {
            drdc_error_context(st, "network callback (runs %lld..%lld)", (long long)start,
                               (long long)(start + len - 1));
            goto done;
        }
        if (!parts[c]) {
            st = drdc_fail(DRDC_ERR_STATE, "network callback returned no tensor");
            goto done;
        }
        dt_free(xc);
        dt_free(tc);
        dt_free(cc);
        xc = tc = cc = NULL;
    }
    TRY(dt_cat(eps_out, parts, (int)n_chunks, 0));                       /* [N,3,H,W] */
done:
    dt_free(xc);
    dt_free(tc);
    dt_free(cc);
    for (int64_t c = 0; c < n_chunks; c++) dt_free(parts[c]);
    free(parts);
    return st;
}

/* a * x + b * y for scalars a, b (as torch's x * a + y * b). */
static drdc_status axpby(dt_tensor *out, double a, dt_tensor x, double b, dt_tensor y) {
    dt_tensor ax = NULL, by = NULL;
    drdc_status st = DRDC_OK;
    TRY(dt_mul_scalar(&ax, x, a));
    TRY(dt_mul_scalar(&by, y, b));
    TRY(dt_add(out, ax, by));
done:
    dt_free(ax);
    dt_free(by);
    return st;
}

/* x[i] along dim 0 as a view: [A,rest...] -> [rest...]. */
static drdc_status select0(dt_tensor *out, dt_tensor x, int64_t i) {
    dt_tensor row = NULL;
    drdc_status st = DRDC_OK;
    TRY(dt_narrow(&row, x, 0, i, 1));                                    /* [1,rest...] */
    TRY(dt_squeeze(out, row, 0));                                        /* [rest...] */
done:
    dt_free(row);
    return st;
}

drdc_status drdc_ddim_step(dt_tensor *x_next, const drdc_schedule *s, drdc_eps_fn eps_fn, void *eps_ctx,
                           dt_tensor x_t, int t, int t_next, dt_tensor x, dt_tensor masks, dt_tensor cond,
                           dt_tensor eps_known, const drdc_sampler_opts *o, int step, drdc_x0_fn on_x0,
                           void *on_ctx) {
    static const char *fn = "ddim step";
    if (!x_next) return drdc_fail(DRDC_ERR_INPUT, "%s: NULL output", fn);
    *x_next = NULL;
    if (!s || !s->abar || !eps_fn || !o || !x || !masks || !cond)
        return drdc_fail(DRDC_ERR_INPUT, "%s: NULL schedule, network, options, x, masks or cond", fn);
    if (t < 0 || t >= s->T || t_next < -1 || t_next >= t)
        return drdc_fail(DRDC_ERR_INPUT, "%s: t = %d -> t' = %d, want T = %d > t > t' >= -1", fn, t, t_next, s->T);
    int64_t xs[4];
    drdc_status st = image_shape(xs, x_t, fn, "x_t");
    if (st) return st;
    st = dt_scope_begin();
    if (st) return st;
    dt_tensor tt = NULL, e = NULL, x0_hat = NULL, scaled = NULL, epsk = NULL, known = NULL, unknown = NULL;
    dt_tensor neg = NULL, hidden = NULL, mk = NULL, hu = NULL, res = NULL;
    const double ab = drdc_schedule_abar(s, t), ab_next = drdc_schedule_abar(s, t_next);
    const int64_t tshape[1] = {xs[0]};
    TRY(dt_full(&tt, tshape, 1, (double)t, DT_I64, dt_device_of(x_t)));         /* [N] i64 */
    TRY(call_network(&e, eps_fn, eps_ctx, x_t, tt, cond, xs[0], o->chunk));      /* [N,3,H,W] eps_theta */
    TRY(expect_shape(e, "ddim", "the network's output", 4, xs));
    /* (7) x0_hat = (x_t - sqrt(1 - abar_t) e) / sqrt(abar_t) */
    TRY(axpby(&scaled, 1.0, x_t, -sqrt(1.0 - ab), e));                           /* [N,3,H,W] */
    TRY(dt_mul_scalar(&x0_hat, scaled, 1.0 / sqrt(ab)));                         /* [N,3,H,W] */
    if (o->clip_x0) {   /* guided-diffusion's clip_denoised, then _predict_eps_from_xstart */
        dt_tensor clipped = NULL, rest = NULL;
        TRY(dt_clamp(&clipped, x0_hat, -1.0, 1.0));                              /* [N,3,H,W] in [-1,1] */
        x0_hat = clipped;
        TRY(axpby(&rest, 1.0, x_t, -sqrt(ab), x0_hat));                          /* x_t - sqrt(abar_t) x0_hat */
        TRY(dt_mul_scalar(&e, rest, 1.0 / sqrt(1.0 - ab)));                      /* [N,3,H,W] eps re-derived */
    }
    if (on_x0) {
        st = on_x0(on_ctx, step, t, x0_hat);
        if (st) {
            drdc_error_context(st, "ddim step %d (t = %d): x0 callback", step, t);
            goto done;
        }
    }
    if (eps_known)
        epsk = eps_known;                                                        /* [N,3,H,W] given */
    else
        TRY(dt_randn(&epsk, xs, 4, DT_F32, dt_device_of(x_t), o->gen));         /* [N,3,H,W] eps' */
    TRY(axpby(&known, sqrt(ab_next), x, sqrt(1.0 - ab_next), epsk));             /* (11) [N,3,H,W] */
    TRY(axpby(&unknown, sqrt(ab_next), x0_hat, sqrt(1.0 - ab_next), e));         /* (12) [N,3,H,W] */
    /* (13) written out, so that known pixels are exactly `known` */
    TRY(dt_neg(&neg, masks));
    TRY(dt_add_scalar(&hidden, neg, 1.0));                                       /* [N,1,H,W] 1 - M */
    TRY(dt_mul(&mk, masks, known));                                              /* [N,3,H,W] M known */
    TRY(dt_mul(&hu, hidden, unknown));                                           /* [N,3,H,W] (1 - M) unknown */
    TRY(dt_add(&res, mk, hu));                                                   /* [N,3,H,W] x_t' */
done:
    return dt_scope_finish(st, res, x_next);
}

/* The sampler's arguments: x [N,3,H,W] and the given masks and noise of its N runs. */
static drdc_status check_runs(const char *fn, int64_t xs[4], dt_tensor x, dt_tensor masks, dt_tensor z,
                              dt_tensor eps0, dt_tensor eps_known, int steps) {
    drdc_status st = DRDC_OK;
    TRY(image_shape(xs, x, fn, "x"));
    const int64_t mwant[4] = {xs[0], 1, xs[2], xs[3]}, ewant[5] = {steps, xs[0], 3, xs[2], xs[3]};
    TRY(expect_shape(masks, fn, "masks", 4, mwant));
    TRY(expect_given(z, fn, "z", 4, xs));
    TRY(expect_given(eps0, fn, "eps0", 4, xs));
    TRY(expect_given(eps_known, fn, "eps_known", 5, ewant));
done:
    return st;
}

drdc_status drdc_ddim_inpaint_runs(dt_tensor *x_final, const drdc_schedule *s, drdc_eps_fn eps_fn, void *eps_ctx,
                                   dt_tensor x, dt_tensor masks, dt_tensor z, dt_tensor eps0, dt_tensor eps_known,
                                   const drdc_sampler_opts *o, drdc_x0_fn on_x0, void *on_ctx) {
    static const char *fn = "ddim inpaint";
    if (x_final) *x_final = NULL;
    if (!s || !s->abar) return drdc_fail(DRDC_ERR_INPUT, "%s: schedule not initialised", fn);
    if (!eps_fn || !o) return drdc_fail(DRDC_ERR_INPUT, "%s: NULL network callback or options", fn);
    if (o->tau < 1 || o->tau >= s->T)
        return drdc_fail(DRDC_ERR_INPUT, "%s: tau %d, want 1 <= tau < T = %d", fn, o->tau, s->T);
    if (o->steps < 1 || o->steps > o->tau)
        return drdc_fail(DRDC_ERR_INPUT, "%s: %d steps from tau %d, want 1 <= steps <= tau", fn, o->steps, o->tau);
    int64_t xs[4];
    drdc_status st = check_runs(fn, xs, x, masks, z, eps0, eps_known, o->steps);
    if (st) return st;
    st = dt_scope_begin();
    if (st) return st;
    const int prev_grad = dt_set_grad_enabled(0);
    const dt_device dev = dt_device_of(x);
    dt_tensor zz = z, e0 = eps0, cond = NULL, x_cur = NULL;
    int step = -1;   /* the step running, for the error message */
    int *ts = malloc(sizeof(int) * (size_t)o->steps);
    if (!ts) {
        st = drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory", fn);
        goto done;
    }
    TRY(drdc_ddim_timesteps(ts, o->tau, o->steps));
    if (!zz) TRY(dt_randn(&zz, xs, 4, DT_F32, dev, o->gen));                   /* [N,3,H,W] z */
    if (!e0) TRY(dt_randn(&e0, xs, 4, DT_F32, dev, o->gen));                   /* [N,3,H,W] eps */
    TRY(drdc_inpaint_condition(&cond, x, masks, zz));                           /* [N,3,H,W] x~_k */
    {
        const double ab = drdc_schedule_abar(s, ts[0]);
        dt_tensor from = o->start == DRDC_START_MASKED ? cond : x;               /* what is noised to tau */
        TRY(axpby(&x_cur, sqrt(ab), from, sqrt(1.0 - ab), e0));                 /* [N,3,H,W] x_tau */
    }
    for (step = 0; step < o->steps; step++) {
        const int t_next = step + 1 < o->steps ? ts[step + 1] : -1;
        dt_tensor ek = NULL, x_next = NULL;
        if (eps_known) TRY(select0(&ek, eps_known, step));                       /* [N,3,H,W] eps' given */
        st = drdc_ddim_step(&x_next, s, eps_fn, eps_ctx, x_cur, ts[step], t_next, x, masks, cond, ek, o, step,
                            on_x0, on_ctx);                                     /* [N,3,H,W] */
        dt_free(ek);
        if (st) goto done;
        dt_free(x_cur);
        x_cur = x_next;
    }
done:
    if (st && step >= 0 && step < o->steps)
        drdc_error_context(st, "%s: step %d (t = %d -> %d)", fn, step, ts[step],
                           step + 1 < o->steps ? ts[step + 1] : -1);
    free(ts);
    dt_set_grad_enabled(prev_grad);
    return dt_scope_finish(st, x_final ? x_cur : NULL, x_final);
}

/* ---- the refiner's pass: all (image, grid, hidden set) runs as one batch ------------------------ */

void drdc_refine_opts_from_config(drdc_refine_opts *o, const drdc_infer_config *ic) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    if (!ic) return;
    o->sampler.tau = ic->tau;
    o->sampler.steps = ic->steps;
    o->sampler.start = strcmp(ic->start, "masked") == 0 ? DRDC_START_MASKED : DRDC_START_IMAGE;
    o->sampler.clip_x0 = ic->clip_x0;
    o->K = ic->K;
    o->n_grids = ic->n_grids < DRDC_MAX_LIST ? ic->n_grids : DRDC_MAX_LIST;
    for (int i = 0; i < o->n_grids; i++) o->grids[i] = ic->grids[i];
}

/* Folds one step's predictions into x_hat by eq. (8). */
typedef struct fold_ctx {
    dt_tensor x_hat;    /* [B,G,S,3,H,W] output being filled */
    dt_tensor hidden;   /* [B,G,K,1,H,W] 1 - M */
    int64_t B, G, K, H, W;
} fold_ctx;

static drdc_status fold_x0(void *ctx, int step, int t, dt_tensor x0_hat) {
    (void)t;
    fold_ctx *f = ctx;
    drdc_status st = dt_scope_begin();
    if (st) return st;
    dt_tensor v = NULL, part = NULL, sum = NULL, dst = NULL, src = NULL;
    const int64_t vshape[6] = {f->B, f->G, f->K, 3, f->H, f->W};
    const int64_t dim2[1] = {2};
    TRY(dt_reshape(&v, x0_hat, vshape, 6));                       /* [B,G,K,3,H,W] x^_{k,t} */
    TRY(dt_mul(&part, f->hidden, v));                             /* [B,G,K,3,H,W] (1 - M_k) x^_{k,t} */
    TRY(dt_sum(&sum, part, dim2, 1, 0));                          /* [B,G,3,H,W] eq. (8) */
    TRY(dt_unsqueeze(&src, sum, 2));                              /* [B,G,1,3,H,W] */
    TRY(dt_narrow(&dst, f->x_hat, 2, step, 1));                   /* [B,G,1,3,H,W] view into x_hat */
    TRY(dt_copy_(dst, src));
done:
    return dt_scope_finish(st, NULL, NULL);
}

/* The refine call's arguments: x [B,3,H,W] (shape into xs), the grids, and the given masks and
 * noise of its runs. */
static drdc_status check_refine(const char *fn, int64_t xs[4], dt_tensor x, const drdc_refine_opts *o) {
    drdc_status st = DRDC_OK;
    TRY(image_shape(xs, x, fn, "x"));
    if (o->n_grids < 1 || o->n_grids > DRDC_MAX_LIST)
        return drdc_fail(DRDC_ERR_INPUT, "%s: %d grid sizes, want 1..%d", fn, o->n_grids, DRDC_MAX_LIST);
    if (o->sampler.steps < 1) return drdc_fail(DRDC_ERR_INPUT, "%s: %d DDIM steps, want >= 1", fn, o->sampler.steps);
    const int64_t B = xs[0], G = o->n_grids, K = o->K, S = o->sampler.steps, H = xs[2], W = xs[3];
    TRY(check_grids(fn, (int)H, (int)W, o->grids, o->n_grids, o->K));
    if (B < 1) return drdc_fail(DRDC_ERR_INPUT, "%s: empty batch", fn);
    const int64_t mshape[6] = {B, G, K, 1, H, W}, nshape[6] = {B, G, K, 3, H, W};
    const int64_t kshape[7] = {S, B, G, K, 3, H, W};
    TRY(expect_given(o->masks, fn, "masks", 6, mshape));
    TRY(expect_given(o->z, fn, "z", 6, nshape));
    TRY(expect_given(o->eps0, fn, "eps0", 6, nshape));
    TRY(expect_given(o->eps_known, fn, "eps_known", 7, kshape));
done:
    return st;
}

drdc_status drdc_diffusion_refine(dt_tensor *x_hat, dt_tensor *x_final, dt_tensor *masks_out, const drdc_schedule *s,
                                  drdc_eps_fn eps_fn, void *eps_ctx, dt_tensor x, const drdc_refine_opts *o) {
    static const char *fn = "diffusion refine";
    if (!x_hat) return drdc_fail(DRDC_ERR_INPUT, "%s: NULL output", fn);
    *x_hat = NULL;
    if (x_final) *x_final = NULL;
    if (masks_out) *masks_out = NULL;
    if (!o) return drdc_fail(DRDC_ERR_INPUT, "%s: NULL options", fn);
    int64_t xs[4];
    drdc_status st = check_refine(fn, xs, x, o);
    if (st) return st;
    const int64_t B = xs[0], G = o->n_grids, K = o->K, S = o->sampler.steps, H = xs[2], W = xs[3];
    const int64_t N = B * G * K;
    const int64_t mshape[6] = {B, G, K, 1, H, W}, nshape[6] = {B, G, K, 3, H, W};
    const dt_device dev = dt_device_of(x);

    st = dt_scope_begin();
    if (st) return st;
    const int prev_grad = dt_set_grad_enabled(0);
    dt_tensor masks = o->masks, ones = NULL, hidden = NULL, xe = NULL, xr = NULL, mr = NULL;
    dt_tensor zr = NULL, e0r = NULL, ekr = NULL, out = NULL, fin = NULL, fin6 = NULL;
    dt_tensor *drawn = NULL;
    int fin_kept = 0, masks_kept = 0;
    if (!masks) {
        drawn = calloc((size_t)(B * G), sizeof *drawn);
        if (!drawn) {
            st = drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory", fn);
            goto done;
        }
        for (int64_t b = 0; b < B; b++)
            for (int64_t g = 0; g < G; g++)
                TRY(drdc_inpaint_masks(&drawn[b * G + g], (int)H, (int)W, o->grids[g], o->K, o->sampler.gen,
                                       dev));                                   /* [K,1,H,W] */
        dt_tensor stacked = NULL;
        TRY(dt_stack(&stacked, drawn, (int)(B * G), 0));                        /* [B*G,K,1,H,W] */
        TRY(dt_reshape(&masks, stacked, mshape, 6));                            /* [B,G,K,1,H,W] */
    }
    TRY(dt_ones_like(&ones, masks));
    TRY(dt_sub(&hidden, ones, masks));                                          /* [B,G,K,1,H,W] 1 - M */
    {
        const int64_t eshape[6] = {B, 1, 1, 3, H, W}, rshape[4] = {N, 3, H, W}, r1shape[4] = {N, 1, H, W};
        const int64_t rkshape[5] = {S, N, 3, H, W};
        dt_tensor xv = NULL;
        TRY(dt_reshape(&xv, x, eshape, 6));                                     /* [B,1,1,3,H,W] */
        TRY(dt_expand(&xe, xv, nshape, 6));                                     /* [B,G,K,3,H,W] */
        TRY(dt_reshape(&xr, xe, rshape, 4));                                    /* [N,3,H,W] run r = (b*G+g)*K+k */
        TRY(dt_reshape(&mr, masks, r1shape, 4));                                /* [N,1,H,W] */
        if (o->z) TRY(dt_reshape(&zr, o->z, rshape, 4));                        /* [N,3,H,W] */
        if (o->eps0) TRY(dt_reshape(&e0r, o->eps0, rshape, 4));                 /* [N,3,H,W] */
        if (o->eps_known) TRY(dt_reshape(&ekr, o->eps_known, rkshape, 5));      /* [S,N,3,H,W] */
    }
    const int64_t oshape[6] = {B, G, S, 3, H, W};
    TRY(dt_zeros(&out, oshape, 6, DT_F32, dev));                                /* [B,G,S,3,H,W] */
    fold_ctx fc = {out, hidden, B, G, K, H, W};
    TRY(drdc_ddim_inpaint_runs(x_final ? &fin : NULL, s, eps_fn, eps_ctx, xr, mr, zr, e0r, ekr, &o->sampler, fold_x0,
                               &fc));
    if (x_final) {
        TRY(dt_reshape(&fin6, fin, nshape, 6));                                 /* [B,G,K,3,H,W] */
        TRY(dt_contiguous(&fin, fin6));
        TRY(dt_scope_keep(fin));
        fin_kept = 1;
    }
    if (masks_out) {
        if (o->masks) TRY(dt_clone(&masks, o->masks));                          /* a handle of the caller's own */
        TRY(dt_scope_keep(masks));
        masks_kept = 1;
    }
done:
    free(drawn);   /* the drawn handles themselves belong to the scope */
    if (st) drdc_error_context(st, "%s", fn);
    dt_set_grad_enabled(prev_grad);
    st = dt_scope_finish(st, out, x_hat);
    if (st) {
        /* the kept extras were moved out of the scope before a later failure: free them */
        if (fin_kept) dt_free(fin);
        if (masks_kept) dt_free(masks);
        return st;
    }
    if (x_final) *x_final = fin;
    if (masks_out) *masks_out = masks;
    return DRDC_OK;
}
