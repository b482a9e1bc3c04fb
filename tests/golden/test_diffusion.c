/* test_diffusion.c: the diffusion refiner (src/stages/diffusion.c) with fake networks: an oracle that
 * knows the clean image, a network that reveals which run it serves, a recording network, and
 * against the PyTorch twin (scripts/twins/twin_diffusion.py) for the schedule, q_sample and one DDIM
 * inpainting pass. Also masks, the training batch, batching/chunking and handle leaks. */
#include "drdc/stages/diffusion.h"
#include "drdc/stages/fusion.h"
#include "drdc/formats/safetensors.h"
#include "testlib.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const dt_device CPU = {DT_CPU, 0};

/* ---- helpers --------------------------------------------------------------------------------- */

static float *to_host(dt_tensor t) {
    int64_t n = dt_numel(t);
    float *h = malloc(sizeof(float) * (size_t)(n ? n : 1));
    dt_tensor c = NULL;
    if (dt_to_dtype(&c, t, DT_F32) || dt_copy_to_host(c, h, sizeof(float) * (size_t)n)) {
        fprintf(stderr, "to_host: %s\n", drdc_last_error());
        memset(h, 0, sizeof(float) * (size_t)n);
    }
    dt_free(c);
    return h;
}

static double max_abs_diff(dt_tensor a, dt_tensor b) {
    if (dt_numel(a) != dt_numel(b)) return INFINITY;
    float *ha = to_host(a), *hb = to_host(b);
    double m = 0;
    for (int64_t i = 0; i < dt_numel(a); i++) {
        double d = fabs((double)ha[i] - hb[i]);
        if (!(d <= m)) m = d;   /* NaN propagates */
    }
    free(ha);
    free(hb);
    return m;
}

static dt_tensor randn(const int64_t *shape, int nd, dt_generator g) {
    dt_tensor t = NULL;
    CHECK_OK(dt_randn(&t, shape, nd, DT_F32, CPU, g));
    return t;
}

/* Images in [-1,1]: tanh of a Gaussian. */
static dt_tensor images(int64_t B, int64_t H, int64_t W, dt_generator g) {
    const int64_t s[4] = {B, 3, H, W};
    dt_tensor r = randn(s, 4, g), x = NULL;
    CHECK_OK(dt_tanh(&x, r));
    dt_free(r);
    return x;
}

/* Takes a handle made inside a callback out of every open scope (the sampler's scopes would free
 * it when they end), so the test owns it. */
static drdc_status keep_all(dt_tensor t) {
    drdc_status st = DRDC_OK;
    for (int i = dt_scope_depth(); i > 0 && !st; i--) st = dt_scope_keep(t);
    return st;
}

/* ---- fake networks --------------------------------------------------------------------------- */

/* Knows the clean image of every run: eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t).
 * Chunks arrive in order, so the next run index is tracked modulo N. */
typedef struct oracle_ctx {
    const drdc_schedule *s;
    dt_tensor x0_runs;   /* [N,3,H,W] */
    int64_t next, N;
} oracle_ctx;

static drdc_status oracle_net(dt_tensor *out, void *ctx, dt_tensor x_t, dt_tensor t, dt_tensor cond) {
    (void)cond;
    oracle_ctx *o = ctx;
    int64_t n = 0;
    drdc_status st = dt_size(&n, x_t, 0);
    if (st) return st;
    dt_tensor x0 = NULL, ab = NULL, sa = NULL, om = NULL, so = NULL, ax = NULL, d = NULL, neg = NULL;
    st = dt_narrow(&x0, o->x0_runs, 0, o->next, n);
    o->next = (o->next + n) % o->N;
    if (!st) st = drdc_schedule_gather(&ab, o->s, t);
    if (!st) st = dt_sqrt(&sa, ab);
    if (!st) st = dt_neg(&neg, ab);
    if (!st) st = dt_add_scalar(&om, neg, 1.0);
    if (!st) st = dt_sqrt(&so, om);
    if (!st) st = dt_mul(&ax, sa, x0);
    if (!st) st = dt_sub(&d, x_t, ax);
    if (!st) st = dt_div(out, d, so);
    dt_free(x0), dt_free(ab), dt_free(sa), dt_free(om), dt_free(so), dt_free(ax), dt_free(d), dt_free(neg);
    return st;
}

/* Garbage that names its run: x0_hat of run r is exactly the constant 10 + r.
 * eps = (x_t - sqrt(abar_t) * (10 + r)) / sqrt(1 - abar_t). Also counts calls and sizes. */
typedef struct tag_ctx {
    const drdc_schedule *s;
    int64_t next, N;
    int calls;
    int64_t sizes[64];
} tag_ctx;

static drdc_status tag_net(dt_tensor *out, void *ctx, dt_tensor x_t, dt_tensor t, dt_tensor cond) {
    (void)cond;
    tag_ctx *c = ctx;
    int64_t n = 0, shape[4];
    drdc_status st = dt_shape(shape, 4, x_t);
    if (st) return st;
    n = shape[0];
    if (c->calls < 64) c->sizes[c->calls] = n;
    c->calls++;
    int64_t tv[64];
    if (n > 64 || (st = dt_copy_to_host(t, tv, sizeof(int64_t) * (size_t)n))) return st ? st : DRDC_ERR_STATE;
    const double ab = drdc_schedule_abar(c->s, (int)tv[0]);
    float *v = malloc(sizeof(float) * (size_t)dt_numel(x_t));
    for (int64_t r = 0; r < n; r++)
        for (int64_t i = 0; i < dt_numel(x_t) / n; i++) v[r * (dt_numel(x_t) / n) + i] = (float)(10 + (c->next + r));
    c->next = (c->next + n) % c->N;
    dt_tensor tag = NULL, stag = NULL, d = NULL;
    st = dt_from_host(&tag, v, DT_F32, shape, 4, CPU);
    free(v);
    if (!st) st = dt_mul_scalar(&stag, tag, sqrt(ab));
    if (!st) st = dt_sub(&d, x_t, stag);
    if (!st) st = dt_mul_scalar(out, d, 1.0 / sqrt(1.0 - ab));
    dt_free(tag), dt_free(stag), dt_free(d);
    return st;
}

/* A fixed per-sample network (the twin's): tanh(conv3x3(cat(x_t, cond))) + t_scale * t. */
typedef struct conv_ctx {
    dt_tensor w, b;   /* [3,6,3,3], [3] */
    double t_scale;
    int calls;
    int fail_at;      /* > 0: the call with this number fails */
    dt_tensor seen[16];   /* copies of x_t of the first calls (when record) */
    int record;
} conv_ctx;

static drdc_status conv_net(dt_tensor *out, void *ctx, dt_tensor x_t, dt_tensor t, dt_tensor cond) {
    conv_ctx *c = ctx;
    c->calls++;
    if (c->fail_at && c->calls == c->fail_at) return drdc_fail(DRDC_ERR_NUMERIC, "fake network: deliberate failure");
    if (c->record && c->calls <= 16) {
        drdc_status st = dt_clone(&c->seen[c->calls - 1], x_t);
        if (!st) st = keep_all(c->seen[c->calls - 1]);   /* outlives the sampler's scopes */
        if (st) return st;
    }
    const dt_tensor parts[2] = {x_t, cond};
    const int64_t s4[4] = {-1, 1, 1, 1};
    dt_tensor cat = NULL, conv = NULL, th = NULL, tf = NULL, t4 = NULL, ts = NULL;
    drdc_status st = dt_cat(&cat, parts, 2, 1);                  /* [N,6,H,W] */
    if (!st) st = dt_conv2d(&conv, cat, c->w, c->b, 1, 1, 1, 1, 1, 1, 1);
    if (!st) st = dt_tanh(&th, conv);
    if (!st) st = dt_to_dtype(&tf, t, DT_F32);
    if (!st) st = dt_reshape(&t4, tf, s4, 4);
    if (!st) st = dt_mul_scalar(&ts, t4, c->t_scale);
    if (!st) st = dt_add(out, th, ts);
    dt_free(cat), dt_free(conv), dt_free(th), dt_free(tf), dt_free(t4), dt_free(ts);
    return st;
}

static void conv_init(conv_ctx *c, dt_generator g) {
    memset(c, 0, sizeof *c);
    const int64_t ws[4] = {3, 6, 3, 3}, bs[1] = {3};
    dt_tensor w = randn(ws, 4, g), b = randn(bs, 1, g);
    CHECK_OK(dt_mul_scalar(&c->w, w, 0.3));
    CHECK_OK(dt_mul_scalar(&c->b, b, 0.1));
    dt_free(w);
    dt_free(b);
    c->t_scale = 1e-3;
}

static void conv_free(conv_ctx *c) {
    dt_free(c->w);
    dt_free(c->b);
    for (int i = 0; i < 16; i++) dt_free(c->seen[i]);
}

/* Given randomness for a refine call: masks, z, eps0, eps_known. */
typedef struct given {
    dt_tensor masks, z, eps0, eps_known;
} given;

static void given_make(given *gv, int64_t B, int G, const int *grids, int K, int S, int H, int W, dt_generator g) {
    dt_tensor *m = calloc((size_t)(B * G), sizeof *m);
    for (int64_t b = 0; b < B; b++)
        for (int i = 0; i < G; i++) CHECK_OK(drdc_inpaint_masks(&m[b * G + i], H, W, grids[i], K, g, CPU));
    dt_tensor st = NULL;
    const int64_t ms[6] = {B, G, K, 1, H, W}, ns[6] = {B, G, K, 3, H, W}, ks[7] = {S, B, G, K, 3, H, W};
    CHECK_OK(dt_stack(&st, m, (int)(B * G), 0));
    CHECK_OK(dt_reshape(&gv->masks, st, ms, 6));
    dt_free(st);
    for (int64_t i = 0; i < B * G; i++) dt_free(m[i]);
    free(m);
    gv->z = randn(ns, 6, g);
    gv->eps0 = randn(ns, 6, g);
    gv->eps_known = randn(ks, 7, g);
}

static void given_free(given *gv) {
    dt_free(gv->masks), dt_free(gv->z), dt_free(gv->eps0), dt_free(gv->eps_known);
    memset(gv, 0, sizeof *gv);
}

static void opts_set(drdc_refine_opts *o, int tau, int steps, int K, int G, const int *grids, const given *gv) {
    memset(o, 0, sizeof *o);
    o->sampler.tau = tau;
    o->sampler.steps = steps;
    o->K = K;
    o->n_grids = G;
    for (int i = 0; i < G; i++) o->grids[i] = grids[i];
    if (gv) {
        o->masks = gv->masks;
        o->z = gv->z;
        o->eps0 = gv->eps0;
        o->eps_known = gv->eps_known;
    }
}

/* ---- schedule and timesteps ------------------------------------------------------------------ */

static void test_timesteps_and_final_abar(void) {
    int ts[10];
    CHECK_OK(drdc_ddim_timesteps(ts, 250, 10));
    for (int i = 0; i < 10; i++) CHECK(ts[i] == 250 - 25 * i);   /* DESIGN: 250, 225, ..., 25 */
    int one[1];
    CHECK_OK(drdc_ddim_timesteps(one, 7, 1));
    CHECK(one[0] == 7);
    CHECK_ERR(drdc_ddim_timesteps(ts, 5, 10), DRDC_ERR_INPUT, "steps");
    drdc_schedule s;
    CHECK_OK(drdc_schedule_init(&s, 1000, 1e-4, 0.02, CPU));
    CHECK(drdc_schedule_abar(&s, -1) == 1.0);                   /* t' of the last step: the clean image */
    CHECK_NEAR(drdc_schedule_abar(&s, 0), 1.0 - 1e-4, 1e-7);
    CHECK(drdc_schedule_abar(&s, 999) < drdc_schedule_abar(&s, 998));
    CHECK(isnan(drdc_schedule_abar(&s, 1000)));
    drdc_schedule_free(&s);
    CHECK_ERR(drdc_schedule_init(&s, 0, 1e-4, 0.02, CPU), DRDC_ERR_INPUT, "timesteps");
}

/* ---- masks ------------------------------------------------------------------------------------ */

/* Checks masks [K,H,W]: binary, constant on cells, hidden sets partition the image, sizes within 1. */
static void check_partition(const float *m, int K, int H, int W, int grid) {
    int64_t cells = (int64_t)(H / grid) * (W / grid), lo = cells, hi = 0;
    for (int k = 0; k < K; k++) {
        int64_t hidden_cells = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                float v = m[((int64_t)k * H + y) * W + x];
                CHECK(v == 0.0f || v == 1.0f);
                float corner = m[((int64_t)k * H + (y / grid) * grid) * W + (x / grid) * grid];
                if (v != corner) {
                    CHECK(v == corner);   /* constant on each cell */
                    return;
                }
                if (y % grid == 0 && x % grid == 0 && v == 0.0f) hidden_cells++;
            }
        if (hidden_cells < lo) lo = hidden_cells;
        if (hidden_cells > hi) hi = hidden_cells;
    }
    CHECK(hi - lo <= 1);
    if (cells % K == 0) CHECK(hi == lo && lo == cells / K);
    for (int64_t p = 0; p < (int64_t)H * W; p++) {
        float hidden_sum = 0;
        for (int k = 0; k < K; k++) hidden_sum += 1.0f - m[k * (int64_t)H * W + p];
        if (hidden_sum != 1.0f) {
            CHECK(hidden_sum == 1.0f);   /* each pixel hidden in exactly one run */
            return;
        }
    }
}

static void test_masks_partition(void) {
    dt_generator g = NULL;
    CHECK_OK(dt_generator_new(&g, 11));
    struct { int H, W, grid, K; } cases[] = {{32, 32, 8, 2}, {32, 48, 4, 4}, {24, 24, 8, 2}, {16, 16, 4, 3}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        dt_tensor m = NULL;
        CHECK_OK(drdc_inpaint_masks(&m, cases[c].H, cases[c].W, cases[c].grid, cases[c].K, g, CPU));
        if (!m) continue;
        int64_t shape[4];
        CHECK_OK(dt_shape(shape, 4, m));
        CHECK(shape[0] == cases[c].K && shape[1] == 1 && shape[2] == cases[c].H && shape[3] == cases[c].W);
        float *h = to_host(m);
        check_partition(h, cases[c].K, cases[c].H, cases[c].W, cases[c].grid);
        free(h);
        dt_free(m);
    }
    /* two draws give different partitions; the same seed gives the same */
    dt_tensor a = NULL, b = NULL, a2 = NULL;
    dt_generator g2 = NULL;
    CHECK_OK(dt_generator_new(&g2, 11));
    CHECK_OK(drdc_inpaint_masks(&a, 32, 32, 8, 2, g2, CPU));
    CHECK_OK(drdc_inpaint_masks(&b, 32, 32, 8, 2, g2, CPU));
    dt_generator_free(g2);
    CHECK_OK(dt_generator_new(&g2, 11));
    CHECK_OK(drdc_inpaint_masks(&a2, 32, 32, 8, 2, g2, CPU));
    CHECK(max_abs_diff(a, b) > 0.5);
    CHECK(max_abs_diff(a, a2) == 0.0);
    dt_free(a), dt_free(b), dt_free(a2);
    dt_generator_free(g2);
    dt_tensor bad = NULL;
    CHECK_ERR(drdc_inpaint_masks(&bad, 30, 32, 8, 2, g, CPU), DRDC_ERR_INPUT, "grid size 8");
    CHECK_ERR(drdc_inpaint_masks(&bad, 8, 8, 8, 2, g, CPU), DRDC_ERR_INPUT, "K = 2");
    CHECK(bad == NULL);
    dt_generator_free(g);
}

/* ---- training batch --------------------------------------------------------------------------- */

static void test_train_batch(void) {
    dt_generator g = NULL;
    CHECK_OK(dt_generator_new(&g, 5));
    drdc_schedule s;
    CHECK_OK(drdc_schedule_init(&s, 1000, 1e-4, 0.02, CPU));
    const int B = 16, H = 16, W = 16, K = 2, max_t = 300;
    const int grids[2] = {4, 8};
    dt_tensor x0 = images(B, H, W, g);
    long live = dt_live_handles();
    drdc_train_batch tb;
    CHECK_OK(drdc_diffusion_train_batch(&tb, &s, x0, grids, 2, K, max_t, g));
    CHECK(dt_live_handles() == live + 5);
    float *hx0 = to_host(x0), *hxt = to_host(tb.x_t), *hc = to_host(tb.cond), *he = to_host(tb.eps),
          *hm = to_host(tb.mask);
    int64_t ht[16];
    CHECK_OK(dt_copy_to_host(tb.t, ht, sizeof ht));
    int seen8 = 0, seen4 = 0;
    double worst = 0;
    for (int b = 0; b < B; b++) {
        CHECK(ht[b] >= 0 && ht[b] < max_t);
        const double ab = s.abar[ht[b]];
        int64_t hidden = 0, coarse = 1;
        for (int64_t p = 0; p < (int64_t)H * W; p++) {
            float m = hm[b * H * W + p];
            hidden += m == 0.0f;
            int y = (int)(p / W), x = (int)(p % W);
            if (m != hm[b * H * W + (y / 8) * 8 * W + (x / 8) * 8]) coarse = 0;
            for (int c = 0; c < 3; c++) {
                int64_t i = ((int64_t)b * 3 + c) * H * W + p;
                double want = sqrt(ab) * hx0[i] + sqrt(1.0 - ab) * he[i];   /* eq. (4) */
                if (fabs(want - hxt[i]) > worst) worst = fabs(want - hxt[i]);
                if (m == 1.0f) CHECK(hc[i] == hx0[i]);                       /* known: the image */
            }
        }
        CHECK(hidden == (int64_t)H * W / K);   /* one of K = 2 equal sets hidden */
        if (coarse) seen8++;
        else seen4++;
    }
    CHECK(worst < 1e-5);
    CHECK(seen8 > 0 && seen4 > 0);   /* both grid sizes drawn */
    free(hx0), free(hxt), free(hc), free(he), free(hm);
    drdc_train_batch_free(&tb);
    CHECK(dt_live_handles() == live);
    CHECK_ERR(drdc_diffusion_train_batch(&tb, &s, x0, grids, 2, K, 1001, g), DRDC_ERR_INPUT, "max_train_t");
    const int bad_grid[1] = {5};
    CHECK_ERR(drdc_diffusion_train_batch(&tb, &s, x0, bad_grid, 1, K, 10, g), DRDC_ERR_INPUT, "grid size 5");
    CHECK(dt_live_handles() == live);
    dt_free(x0);
    drdc_schedule_free(&s);
    dt_generator_free(g);
}

/* ---- sampler behaviour ------------------------------------------------------------------------ */

/* The oracle network recovers the image at every visited t, so the diffusion heatmap is 0. */
static void test_oracle_recovers_image(void) {
    dt_generator g = NULL;
    CHECK_OK(dt_generator_new(&g, 21));
    drdc_schedule s;
    CHECK_OK(drdc_schedule_init(&s, 1000, 1e-4, 0.02, CPU));
    const int B = 2, H = 16, W = 16, K = 2, S = 5;
    const int grids[2] = {4, 8};
    dt_tensor x = images(B, H, W, g);
    drdc_refine_opts o;
    opts_set(&o, 250, S, K, 2, grids, NULL);
    o.sampler.gen = g;
    o.sampler.chunk = 3;   /* the oracle follows chunks too */
    /* runs in refine's order r = (b*G + g)*K + k: the image b */
    dt_tensor xv = NULL, xe = NULL, xr = NULL;
    const int64_t v6[6] = {B, 1, 1, 3, H, W}, e6[6] = {B, 2, K, 3, H, W}, r4[4] = {B * 2 * K, 3, H, W};
    CHECK_OK(dt_reshape(&xv, x, v6, 6));
    CHECK_OK(dt_expand(&xe, xv, e6, 6));
    CHECK_OK(dt_reshape(&xr, xe, r4, 4));
    oracle_ctx oc = {&s, xr, 0, B * 2 * K};
    dt_tensor x_hat = NULL;
    CHECK_OK(drdc_diffusion_refine(&x_hat, NULL, NULL, &s, oracle_net, &oc, x, &o));
    if (x_hat) {
        dt_tensor want = NULL;
        const int64_t w6[6] = {B, 2, S, 3, H, W};
        CHECK_OK(dt_expand(&want, xv, w6, 6));
        double d = max_abs_diff(x_hat, want);
        printf("  oracle: max |x^_{n,t} - x| = %.3g\n", d);
        CHECK(d < 1e-5);
        dt_tensor heat = NULL;
        const double scales[3] = {1, 0.5, 0.25};
        CHECK_OK(drdc_fusion_diffusion_map(&heat, x, x_hat, scales, 3));
        dt_tensor z = NULL;
        CHECK_OK(dt_zeros_like(&z, heat));
        CHECK(max_abs_diff(heat, z) < 1e-5);   /* a normal image gets a zero diffusion heatmap */
        dt_free(want), dt_free(heat), dt_free(z);
    }
    dt_free(x_hat), dt_free(xv), dt_free(xe), dt_free(xr), dt_free(x);
    drdc_schedule_free(&s);
    dt_generator_free(g);
}

/* A network that names its run: x^ at each pixel comes from the run in which it is hidden
 * (eq. 8), in the documented run order; the callback sees all N runs once per step. */
static void test_each_pixel_from_its_hidden_run(void) {
    dt_generator g = NULL;
    CHECK_OK(dt_generator_new(&g, 31));
    drdc_schedule s;
    CHECK_OK(drdc_schedule_init(&s, 1000, 1e-4, 0.02, CPU));
    const int B = 2, G = 2, H = 16, W = 16, K = 3, S = 4;
    const int grids[2] = {4, 8};
    dt_tensor x = images(B, H, W, g);
    drdc_refine_opts o;
    opts_set(&o, 100, S, K, G, grids, NULL);
    o.sampler.gen = g;
    tag_ctx tc = {&s, 0, B * G * K, 0, {0}};
    dt_tensor x_hat = NULL, masks = NULL, fin = NULL;
    long live = dt_live_handles();
    CHECK_OK(drdc_diffusion_refine(&x_hat, &fin, &masks, &s, tag_net, &tc, x, &o));
    CHECK(dt_live_handles() == live + 3);
    CHECK(tc.calls == S);
    for (int i = 0; i < S && i < 64; i++) CHECK(tc.sizes[i] == B * G * K);
    if (x_hat && masks && fin) {
        float *hx = to_host(x_hat), *hm = to_host(masks), *hf = to_host(fin), *hi = to_host(x);
        int bad = 0, bad_known = 0, bad_hidden = 0;
        for (int b = 0; b < B; b++)
            for (int gi = 0; gi < G; gi++)
                for (int64_t p = 0; p < (int64_t)H * W; p++) {
                    int hidden_in = -1;
                    for (int k = 0; k < K; k++) {
                        float m = hm[((int64_t)(b * G + gi) * K + k) * H * W + p];
                        if (m == 0.0f) hidden_in = k;
                        for (int c = 0; c < 3; c++) {
                            float f = hf[(((int64_t)(b * G + gi) * K + k) * 3 + c) * H * W + p];
                            float img = hi[((int64_t)b * 3 + c) * H * W + p];
                            if (m == 1.0f && f != img) bad_known++;           /* known pixels end as x */
                            if (m == 0.0f && fabsf(f - (float)(10 + (b * G + gi) * K + k)) > 1e-4f) bad_hidden++;
                        }
                    }
                    float want = (float)(10 + (b * G + gi) * K + hidden_in);
                    for (int st = 0; st < S; st++)
                        for (int c = 0; c < 3; c++)
                            if (fabsf(hx[((((int64_t)b * G + gi) * S + st) * 3 + c) * H * W + p] - want) > 1e-4f) bad++;
                }
        CHECK(bad == 0);
        CHECK(bad_known == 0);
        CHECK(bad_hidden == 0);
        free(hx), free(hm), free(hf), free(hi);
    }
    dt_free(x_hat), dt_free(masks), dt_free(fin), dt_free(x);
    CHECK(dt_live_handles() == live - 1);
    drdc_schedule_free(&s);
    dt_generator_free(g);
}

/* Known pixels are the forward-noised image at every step (eq. 11), given the noise. */
static void test_known_pixels_follow_forward_process(void) {
    dt_generator g = NULL;
    CHECK_OK(dt_generator_new(&g, 41));
    drdc_schedule s;
    CHECK_OK(drdc_schedule_init(&s, 1000, 1e-4, 0.02, CPU));
    const int B = 1, G = 1, H = 8, W = 8, K = 2, S = 3;
    const int grids[1] = {4};
    dt_tensor x = images(B, H, W, g);
    given gv;
    given_make(&gv, B, G, grids, K, S, H, W, g);
    drdc_refine_opts o;
    opts_set(&o, 90, S, K, G, grids, &gv);
    conv_ctx cc;
    conv_init(&cc, g);
    cc.record = 1;
    dt_tensor x_hat = NULL;
    CHECK_OK(drdc_diffusion_refine(&x_hat, NULL, NULL, &s, conv_net, &cc, x, &o));
    CHECK(cc.calls == S);
    float *hx = to_host(x), *hm = to_host(gv.masks), *he0 = to_host(gv.eps0), *hek = to_host(gv.eps_known);
    const int ts[3] = {90, 60, 30};
    double worst = 0;
    for (int i = 0; i < S && cc.seen[i]; i++) {
        float *seen = to_host(cc.seen[i]);   /* [K,3,H,W] */
        const double ab = s.abar[ts[i]];
        for (int k = 0; k < K; k++)
            for (int c = 0; c < 3; c++)
                for (int64_t p = 0; p < (int64_t)H * W; p++) {
                    if (hm[(int64_t)k * H * W + p] != 1.0f) continue;
                    int64_t ri = ((int64_t)k * 3 + c) * H * W + p;
                    /* step 0: x_tau from eps0; later: eq. (11) with the previous step's eps' */
                    double noise = i == 0 ? he0[ri] : hek[(int64_t)(i - 1) * K * 3 * H * W + ri];
                    double want = sqrt(ab) * hx[(int64_t)c * H * W + p] + sqrt(1.0 - ab) * noise;
                    if (fabs(want - seen[ri]) > worst) worst = fabs(want - seen[ri]);
                }
        free(seen);
    }
    CHECK(worst < 1e-5);
    free(hx), free(hm), free(he0), free(hek);
    dt_free(x_hat), dt_free(x);
    given_free(&gv);
    conv_free(&cc);
    drdc_schedule_free(&s);
    dt_generator_free(g);
}

/* Per-step x0 predictions of single runs, folded by hand (eq. 8). */
typedef struct collect_ctx {
    dt_tensor x0[8];   /* [1,3,H,W] per step */
} collect_ctx;

static drdc_status collect_x0(void *ctx, int step, int t, dt_tensor x0_hat) {
    (void)t;
    collect_ctx *c = ctx;
    drdc_status st = dt_clone(&c->x0[step], x0_hat);
    return st ? st : keep_all(c->x0[step]);
}

/* infer.start: the x_t the network sees at tau. From the image (default), EVERY pixel, hidden cells
 * included, is sqrt(abar_tau) x + sqrt(1 - abar_tau) eps0 (the hidden cells hold the noised input,
 * not noise); from x~_k (the ablation), the hidden cells are sqrt(abar_tau) z + sqrt(1 - abar_tau) eps0.
 * The same generator state gives the same draws either way. */
static void test_start_image_or_masked(void) {
    drdc_schedule s;
    CHECK_OK(drdc_schedule_init(&s, 1000, 1e-4, 0.02, CPU));
    const int B = 1, G = 1, H = 8, W = 8, K = 2, S = 2, tau = 250;
    const int grids[1] = {4};
    const double ab = s.abar[tau];
    double worst[2] = {0, 0}, hidden_gap[2] = {0, 0};
    for (int v = 0; v < 2; v++) {
        dt_generator g = NULL;
        CHECK_OK(dt_generator_new(&g, 45));   /* the same draws for both starts */
        dt_tensor x = images(B, H, W, g);
        given gv;
        given_make(&gv, B, G, grids, K, S, H, W, g);
        drdc_refine_opts o;
        opts_set(&o, tau, S, K, G, grids, &gv);
        o.sampler.start = v == 0 ? DRDC_START_IMAGE : DRDC_START_MASKED;
        conv_ctx cc;
        conv_init(&cc, g);
        cc.record = 1;
        dt_tensor x_hat = NULL;
        CHECK_OK(drdc_diffusion_refine(&x_hat, NULL, NULL, &s, conv_net, &cc, x, &o));
        float *hx = to_host(x), *hm = to_host(gv.masks), *hz = to_host(gv.z), *he0 = to_host(gv.eps0);
        float *seen = cc.seen[0] ? to_host(cc.seen[0]) : NULL;   /* [K,3,H,W] x_tau */
        CHECK(seen != NULL);
        for (int k = 0; seen && k < K; k++)
            for (int c = 0; c < 3; c++)
                for (int64_t p = 0; p < (int64_t)H * W; p++) {
                    int64_t ri = ((int64_t)k * 3 + c) * H * W + p;
                    int hidden = hm[(int64_t)k * H * W + p] == 0.0f;
                    double img = hx[(int64_t)c * H * W + p];
                    double from_image = sqrt(ab) * img + sqrt(1.0 - ab) * he0[ri];
                    double from_masked = sqrt(ab) * (hidden ? hz[ri] : img) + sqrt(1.0 - ab) * he0[ri];
                    double want = v == 0 ? from_image : from_masked;
                    if (fabs(want - seen[ri]) > worst[v]) worst[v] = fabs(want - seen[ri]);
                    if (hidden && fabs(from_image - from_masked) > hidden_gap[v])
                        hidden_gap[v] = fabs(from_image - from_masked);
                }
        free(seen), free(hx), free(hm), free(hz), free(he0);
        dt_free(x_hat), dt_free(x);
        given_free(&gv);
        conv_free(&cc);
        dt_generator_free(g);
    }
    printf("  x_tau: image start max diff %.3g, masked start %.3g (the two differ by up to %.3g in hidden cells)\n",
           worst[0], worst[1], hidden_gap[0]);
    CHECK(worst[0] < 1e-6);
    CHECK(worst[1] < 1e-6);
    CHECK(hidden_gap[0] > 0.1);   /* the check can tell the two starts apart */
    drdc_schedule_free(&s);
}

/* infer.clip_x0: every x0 prediction handed on is clamp(x0, -1, 1) of the unclipped one, and the
 * next step's hidden pixels use eps re-derived from the clipped x0 (guided-diffusion's DDIM):
 * x_t' = sqrt(abar_t') x0c + sqrt(1 - abar_t') (x_t - sqrt(abar_t) x0c) / sqrt(1 - abar_t). A
 * network with a large output drives x0 out of range, so clipping has something to do. */
static void test_clip_x0(void) {
    drdc_schedule s;
    CHECK_OK(drdc_schedule_init(&s, 1000, 1e-4, 0.02, CPU));
    const int H = 8, W = 8, S = 2, tau = 200;
    const int64_t n = 3 * H * W;
    dt_tensor x0s[2] = {NULL, NULL}, seen1[2] = {NULL, NULL}, seen0 = NULL;
    dt_tensor mk = NULL;
    for (int clip = 0; clip < 2; clip++) {
        dt_generator g = NULL;
        CHECK_OK(dt_generator_new(&g, 47));
        dt_tensor x = images(1, H, W, g), masks = NULL, m1 = NULL;
        CHECK_OK(drdc_inpaint_masks(&masks, H, W, 4, 2, g, CPU));   /* [2,1,H,W] */
        CHECK_OK(dt_narrow(&m1, masks, 0, 0, 1));                    /* [1,1,H,W] run k = 0 */
        conv_ctx cc;
        conv_init(&cc, g);
        cc.t_scale = 0.05;   /* eps ~ 10 at t = 200: x0 far outside [-1,1] */
        cc.record = 1;
        collect_ctx col;
        memset(&col, 0, sizeof col);
        drdc_sampler_opts so = {.tau = tau, .steps = S, .clip_x0 = clip, .gen = g};
        CHECK_OK(drdc_ddim_inpaint_runs(NULL, &s, conv_net, &cc, x, m1, NULL, NULL, NULL, &so, collect_x0, &col));
        x0s[clip] = col.x0[0];
        dt_free(col.x0[1]);
        seen1[clip] = cc.seen[1];
        cc.seen[1] = NULL;
        if (clip) {
            seen0 = cc.seen[0];
            cc.seen[0] = NULL;
            CHECK_OK(dt_clone(&mk, m1));
        }
        dt_free(x), dt_free(masks), dt_free(m1);
        conv_free(&cc);
        dt_generator_free(g);
    }
    float *raw = to_host(x0s[0]), *cl = to_host(x0s[1]), *xt0 = to_host(seen0), *xt1 = to_host(seen1[1]);
    float *hm = to_host(mk);
    double out_of_range = 0, worst_clamp = 0, worst_next = 0;
    const double a0 = s.abar[tau], a1 = s.abar[tau / S];
    for (int64_t i = 0; i < n; i++) {
        if (fabs(raw[i]) > out_of_range) out_of_range = fabs(raw[i]);
        double want = raw[i] < -1 ? -1 : raw[i] > 1 ? 1 : raw[i];
        if (fabs(cl[i] - want) > worst_clamp) worst_clamp = fabs(cl[i] - want);
        if (hm[i % (H * W)] != 0.0f) continue;   /* hidden pixels follow eq. (12) */
        double e = (xt0[i] - sqrt(a0) * cl[i]) / sqrt(1.0 - a0);
        double next = sqrt(a1) * cl[i] + sqrt(1.0 - a1) * e;
        if (fabs(next - xt1[i]) > worst_next) worst_next = fabs(next - xt1[i]);
    }
    printf("  clip: unclipped |x0| up to %.3g; clamp max diff %.3g; next x_t (re-derived eps) max diff %.3g\n",
           out_of_range, worst_clamp, worst_next);
    CHECK(out_of_range > 2.0);
    CHECK(worst_clamp < 1e-6);
    CHECK(worst_next < 1e-4);
    free(raw), free(cl), free(xt0), free(xt1), free(hm);
    dt_free(x0s[0]), dt_free(x0s[1]), dt_free(seen1[0]), dt_free(seen1[1]), dt_free(seen0), dt_free(mk);
    drdc_schedule_free(&s);
}

/* One batch of all runs == each (b, g) alone == each (b, g, k) alone folded by eq. (8) ==
 * chunked calls; the chunked callback sees ceil(N / chunk) calls per step. */
static void test_batching_equals_one_at_a_time(void) {
    dt_generator g = NULL;
    CHECK_OK(dt_generator_new(&g, 51));
    drdc_schedule s;
    CHECK_OK(drdc_schedule_init(&s, 1000, 1e-4, 0.02, CPU));
    const int B = 2, G = 2, H = 16, W = 16, K = 2, S = 3, N = B * G * K;
    const int grids[2] = {4, 8};
    dt_tensor x = images(B, H, W, g);
    given gv;
    given_make(&gv, B, G, grids, K, S, H, W, g);
    conv_ctx cc;
    conv_init(&cc, g);
    drdc_refine_opts o;
    opts_set(&o, 120, S, K, G, grids, &gv);
    dt_tensor full = NULL, chunked = NULL;
    CHECK_OK(drdc_diffusion_refine(&full, NULL, NULL, &s, conv_net, &cc, x, &o));
    CHECK(cc.calls == S);
    cc.calls = 0;
    o.sampler.chunk = 3;
    CHECK_OK(drdc_diffusion_refine(&chunked, NULL, NULL, &s, conv_net, &cc, x, &o));
    CHECK(cc.calls == S * ((N + 2) / 3));
    CHECK(max_abs_diff(full, chunked) < 1e-5);
    double worst_bg = 0, worst_run = 0;
    for (int b = 0; b < B; b++)
        for (int gi = 0; gi < G; gi++) {
            /* (b, g) alone: slices of the given randomness */
            dt_tensor xb = NULL, t1 = NULL, t2 = NULL, t3 = NULL, t4 = NULL, t5 = NULL, t6 = NULL, t7 = NULL, t8 = NULL;
            dt_tensor one = NULL, want = NULL, w1 = NULL;
            CHECK_OK(dt_narrow(&xb, x, 0, b, 1));
            CHECK_OK(dt_narrow(&t1, gv.masks, 0, b, 1));
            CHECK_OK(dt_narrow(&t2, t1, 1, gi, 1));
            CHECK_OK(dt_narrow(&t3, gv.z, 0, b, 1));
            CHECK_OK(dt_narrow(&t4, t3, 1, gi, 1));
            CHECK_OK(dt_narrow(&t5, gv.eps0, 0, b, 1));
            CHECK_OK(dt_narrow(&t6, t5, 1, gi, 1));
            CHECK_OK(dt_narrow(&t7, gv.eps_known, 1, b, 1));
            CHECK_OK(dt_narrow(&t8, t7, 2, gi, 1));
            drdc_refine_opts o1;
            given g1 = {t2, t4, t6, t8};
            opts_set(&o1, 120, S, K, 1, &grids[gi], &g1);
            CHECK_OK(drdc_diffusion_refine(&one, NULL, NULL, &s, conv_net, &cc, xb, &o1));
            CHECK_OK(dt_narrow(&w1, full, 0, b, 1));
            CHECK_OK(dt_narrow(&want, w1, 1, gi, 1));
            double d = max_abs_diff(one, want);
            if (d > worst_bg) worst_bg = d;
            /* each k alone through the run-level sampler, folded by hand */
            float *acc = calloc((size_t)S * 3 * H * W, sizeof(float));
            for (int k = 0; k < K; k++) {
                dt_tensor m = NULL, zk = NULL, e0 = NULL, ek = NULL, mk = NULL, zk4 = NULL, e04 = NULL, ek5 = NULL;
                const int64_t r1[4] = {1, 1, H, W}, r3[4] = {1, 3, H, W}, rk[5] = {S, 1, 3, H, W};
                CHECK_OK(dt_narrow(&m, t2, 2, k, 1));
                CHECK_OK(dt_reshape(&mk, m, r1, 4));
                CHECK_OK(dt_narrow(&zk, t4, 2, k, 1));
                CHECK_OK(dt_reshape(&zk4, zk, r3, 4));
                CHECK_OK(dt_narrow(&e0, t6, 2, k, 1));
                CHECK_OK(dt_reshape(&e04, e0, r3, 4));
                CHECK_OK(dt_narrow(&ek, t8, 3, k, 1));
                CHECK_OK(dt_reshape(&ek5, ek, rk, 5));
                collect_ctx col;
                memset(&col, 0, sizeof col);
                drdc_sampler_opts so = {.tau = 120, .steps = S};
                CHECK_OK(drdc_ddim_inpaint_runs(NULL, &s, conv_net, &cc, xb, mk, zk4, e04, ek5, &so, collect_x0, &col));
                float *hm = to_host(mk);
                for (int st = 0; st < S; st++) {
                    if (!col.x0[st]) continue;
                    float *h = to_host(col.x0[st]);
                    for (int c = 0; c < 3; c++)
                        for (int64_t p = 0; p < (int64_t)H * W; p++)
                            acc[((int64_t)st * 3 + c) * H * W + p] += (1.0f - hm[p]) * h[(int64_t)c * H * W + p];
                    free(h);
                    dt_free(col.x0[st]);
                }
                free(hm);
                dt_free(m), dt_free(zk), dt_free(e0), dt_free(ek), dt_free(mk), dt_free(zk4), dt_free(e04), dt_free(ek5);
            }
            float *hw = to_host(want);
            for (int64_t i = 0; i < (int64_t)S * 3 * H * W; i++)
                if (fabs((double)acc[i] - hw[i]) > worst_run) worst_run = fabs((double)acc[i] - hw[i]);
            free(hw);
            free(acc);
            dt_free(xb), dt_free(t1), dt_free(t2), dt_free(t3), dt_free(t4), dt_free(t5), dt_free(t6), dt_free(t7);
            dt_free(t8), dt_free(one), dt_free(want), dt_free(w1);
        }
    printf("  batching: max diff per (b, g) %.3g, per run %.3g\n", worst_bg, worst_run);
    CHECK(worst_bg < 1e-5);
    CHECK(worst_run < 1e-5);
    dt_free(full), dt_free(chunked), dt_free(x);
    given_free(&gv);
    conv_free(&cc);
    drdc_schedule_free(&s);
    dt_generator_free(g);
}

/* No handle survives a sampler run, successful or failed; a failing network's error comes back
 * with the step named. */
static void test_no_leaks_and_errors(void) {
    dt_generator g = NULL;
    CHECK_OK(dt_generator_new(&g, 61));
    drdc_schedule s;
    CHECK_OK(drdc_schedule_init(&s, 1000, 1e-4, 0.02, CPU));
    const int grids[2] = {4, 8};
    dt_tensor x = images(2, 16, 16, g);
    conv_ctx cc;
    conv_init(&cc, g);
    drdc_refine_opts o;
    opts_set(&o, 250, 10, 2, 2, grids, NULL);
    o.sampler.gen = g;
    o.sampler.chunk = 5;
    const long before = dt_live_handles();
    const int depth = dt_scope_depth();
    dt_tensor x_hat = NULL;
    CHECK_OK(drdc_diffusion_refine(&x_hat, NULL, NULL, &s, conv_net, &cc, x, &o));
    dt_free(x_hat);
    CHECK(dt_live_handles() == before);
    cc.calls = 0;
    cc.fail_at = 7;
    x_hat = NULL;
    CHECK_ERR(drdc_diffusion_refine(&x_hat, NULL, NULL, &s, conv_net, &cc, x, &o), DRDC_ERR_NUMERIC,
              "deliberate failure");
    CHECK(tl_contains(drdc_last_error(), "step 3"));
    CHECK(x_hat == NULL);
    CHECK(dt_live_handles() == before);
    CHECK(dt_scope_depth() == depth);
    cc.fail_at = 0;
    o.grids[1] = 5;
    CHECK_ERR(drdc_diffusion_refine(&x_hat, NULL, NULL, &s, conv_net, &cc, x, &o), DRDC_ERR_INPUT, "grid size 5");
    o.grids[1] = 8;
    o.sampler.tau = 1000;
    CHECK_ERR(drdc_diffusion_refine(&x_hat, NULL, NULL, &s, conv_net, &cc, x, &o), DRDC_ERR_INPUT, "tau 1000");
    CHECK(dt_live_handles() == before);
    dt_free(x);
    conv_free(&cc);
    drdc_schedule_free(&s);
    dt_generator_free(g);
}

/* ---- the twin --------------------------------------------------------------------------------- */

static int add_tensor(drdc_st_writer *w, const char *name, dt_tensor t) {
    int64_t shape[8];
    int nd = dt_ndim(t);
    if (dt_shape(shape, 8, t)) return 1;
    dt_dtype dt = dt_dtype_of(t);
    size_t nbytes = (size_t)dt_numel(t) * dt_dtype_size(dt);
    void *buf = malloc(nbytes ? nbytes : 1);
    drdc_status st = dt_copy_to_host(t, buf, nbytes);
    if (!st) st = drdc_st_writer_add(w, name, dt == DT_I64 ? DRDC_ST_I64 : DRDC_ST_F32, nd, shape, buf, nbytes);
    free(buf);
    CHECK_OK(st);
    return st != DRDC_OK;
}

static void test_matches_twin(void) {
    const char *py = getenv("DRDC_PYTHON");
    if (!py || !*py) py = "/usr/bin/python3";
    if (test_system("'%s' -c 'import torch, numpy' >/dev/null 2>&1", py) != 0) {
        test_skip_part("%s lacks torch/numpy, needed for the twin", py);
        return;
    }
    dt_generator g = NULL;
    CHECK_OK(dt_generator_new(&g, 71));
    const int T = 400, tau = 250, S = 10, B = 2, G = 2, K = 2, H = 16, W = 16;
    const double b0 = 1e-4, b1 = 0.02;
    const int grids[2] = {4, 8};
    drdc_schedule s;
    CHECK_OK(drdc_schedule_init(&s, T, b0, b1, CPU));
    dt_tensor x = images(B, H, W, g);
    given gv;
    given_make(&gv, B, G, grids, K, S, H, W, g);
    conv_ctx cc;
    conv_init(&cc, g);
    dt_tensor qs_x0 = images(B, H, W, g), qs_t = NULL, qs_eps = NULL, qs_xt = NULL;
    const int64_t tshape[1] = {B}, xs[4] = {B, 3, H, W};
    CHECK_OK(dt_randint(&qs_t, 0, T, tshape, 1, CPU, g));
    qs_eps = randn(xs, 4, g);
    CHECK_OK(drdc_q_sample(&qs_xt, &s, qs_x0, qs_t, qs_eps));

    const char *dir = test_tmpdir("diffusion_twin");
    char in[1200], out[1200], meta[64];
    snprintf(in, sizeof in, "%s/in.safetensors", dir);
    snprintf(out, sizeof out, "%s/out.safetensors", dir);
    drdc_st_writer *w = NULL;
    CHECK_OK(drdc_st_writer_new(&w));
    add_tensor(w, "x", x), add_tensor(w, "masks", gv.masks), add_tensor(w, "z", gv.z);
    add_tensor(w, "eps0", gv.eps0), add_tensor(w, "eps_known", gv.eps_known);
    add_tensor(w, "conv_w", cc.w), add_tensor(w, "conv_b", cc.b);
    add_tensor(w, "qs_x0", qs_x0), add_tensor(w, "qs_t", qs_t), add_tensor(w, "qs_eps", qs_eps);
    snprintf(meta, sizeof meta, "%d", T), drdc_st_writer_set_meta(w, "T", meta);
    snprintf(meta, sizeof meta, "%.17g", b0), drdc_st_writer_set_meta(w, "beta_start", meta);
    snprintf(meta, sizeof meta, "%.17g", b1), drdc_st_writer_set_meta(w, "beta_end", meta);
    snprintf(meta, sizeof meta, "%d", tau), drdc_st_writer_set_meta(w, "tau", meta);
    snprintf(meta, sizeof meta, "%d", S), drdc_st_writer_set_meta(w, "steps", meta);
    snprintf(meta, sizeof meta, "%.17g", cc.t_scale), drdc_st_writer_set_meta(w, "t_scale", meta);
    CHECK_OK(drdc_st_writer_write(w, in));
    drdc_st_writer_free(w);
    int rc = test_system("'%s' '%s/scripts/twins/twin_diffusion.py' ddim '%s' '%s'", py, test_source_dir(), in, out);
    CHECK(rc == 0);
    drdc_st_file *f = NULL;
    if (rc == 0) CHECK_OK(drdc_st_open(&f, out));
    if (f) {
        const drdc_st_tensor *tb = NULL, *ta = NULL, *tt = NULL;
        CHECK_OK(drdc_st_expect(f, "betas", 1, (const int64_t[]){T}, &tb));
        CHECK_OK(drdc_st_expect(f, "abar", 1, (const int64_t[]){T}, &ta));
        CHECK_OK(drdc_st_expect(f, "timesteps", 1, (const int64_t[]){S}, &tt));
        if (tb && ta && tt) {
            double wb = 0, wa = 0;
            for (int i = 0; i < T; i++) {
                double beta, abar;
                float af;
                memcpy(&beta, (const char *)tb->data + 8 * i, 8);
                memcpy(&af, (const char *)ta->data + 4 * i, 4);
                abar = af;
                if (fabs(beta - s.betas[i]) > wb) wb = fabs(beta - s.betas[i]);
                if (fabs(abar - s.abar[i]) / abar > wa) wa = fabs(abar - s.abar[i]) / abar;
            }
            printf("  schedule: betas max diff %.3g, abar max relative diff %.3g\n", wb, wa);
            CHECK(wb < 1e-15);
            CHECK(wa < 1e-6);
            int ts[10];
            CHECK_OK(drdc_ddim_timesteps(ts, tau, S));
            for (int i = 0; i < S; i++) {
                int64_t v;
                memcpy(&v, (const char *)tt->data + 8 * i, 8);
                CHECK(v == ts[i]);
            }
        }
        test_compare_tensor("q_sample", qs_xt, f, "qs_xt", 1e-5);
        drdc_refine_opts o;
        opts_set(&o, tau, S, K, G, grids, &gv);
        o.sampler.chunk = 3;
        /* the default start from the image, the masked start (ablation), x0 clipping */
        static const struct { const char *suffix; drdc_start start; int clip; } variants[3] = {
            {"", DRDC_START_IMAGE, 0}, {"_masked", DRDC_START_MASKED, 0}, {"_clip", DRDC_START_IMAGE, 1}};
        for (int v = 0; v < 3; v++) {
            char nh[32], nf[32];
            snprintf(nh, sizeof nh, "x_hat%s", variants[v].suffix);
            snprintf(nf, sizeof nf, "x_final%s", variants[v].suffix);
            o.sampler.start = variants[v].start;
            o.sampler.clip_x0 = variants[v].clip;
            dt_tensor x_hat = NULL, fin = NULL;
            CHECK_OK(drdc_diffusion_refine(&x_hat, &fin, NULL, &s, conv_net, &cc, x, &o));
            test_compare_tensor(nh, x_hat, f, nh, 1e-4);
            test_compare_tensor(nf, fin, f, nf, 1e-4);
            dt_free(x_hat), dt_free(fin);
        }
        drdc_st_close(f);
    }
    dt_free(x), dt_free(qs_x0), dt_free(qs_t), dt_free(qs_eps), dt_free(qs_xt);
    given_free(&gv);
    conv_free(&cc);
    drdc_schedule_free(&s);
    dt_generator_free(g);
}

int main(void) {
    RUN(test_timesteps_and_final_abar);
    RUN(test_masks_partition);
    RUN(test_train_batch);
    RUN(test_oracle_recovers_image);
    RUN(test_each_pixel_from_its_hidden_run);
    RUN(test_known_pixels_follow_forward_process);
    RUN(test_start_image_or_masked);
    RUN(test_clip_x0);
    RUN(test_batching_equals_one_at_a_time);
    RUN(test_no_leaks_and_errors);
    RUN(test_matches_twin);
    return test_summary();
}
