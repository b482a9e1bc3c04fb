/* test_unet.c: the refiner U-Net (src/stages/unet.c) against its PyTorch twin (scripts/twins/twin_unet.py, a
 * transcription of guided-diffusion's UNetModel): timestep embedding, output eps, MSE loss and
 * the gradient of every parameter, each compared by relative error (max |diff| / max |ref|) with
 * the max difference printed per tensor. Also: guided-diffusion's initialisation, i64 and float
 * timesteps, dropout, the configs/tiny.json refiner (shapes, backward, no handle leaks, a timing
 * that is printed, not asserted), the eps callback, and errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "drdc/core/config.h"
#include "drdc/formats/params.h"
#include "drdc/formats/safetensors.h"
#include "drdc/shim/shim.h"
#include "drdc/stages/attention.h"
#include "drdc/stages/unet.h"
#include "testlib.h"

/* The tiny model the twin builds (passed to it explicitly so both sides agree): attention on the
 * 8x8 level only (64 channels, 4 heads) and in the middle block; none on the 16x16 level. */
enum { TW_SIZE = 16, TW_CH = 32, TW_RES_BLOCKS = 2, TW_ATT = 8, TW_HEAD_CH = 16, TW_B = 3 };
#define REL_TOL 1e-4

static const dt_device CPU = {DT_CPU, 0};
static char twin_path[1200], twin_uncond_path[1200];

static drdc_refiner_config twin_config(double dropout) {
    drdc_config all;
    drdc_config_defaults(&all);
    drdc_refiner_config c = all.refiner;
    c.image_size = TW_SIZE;
    c.channels = TW_CH;
    c.n_mult = 2;
    c.channel_mult[0] = 1;
    c.channel_mult[1] = 2;
    c.res_blocks = TW_RES_BLOCKS;
    c.n_attention = 1;
    c.attention_res[0] = TW_ATT;
    c.head_channels = TW_HEAD_CH;
    c.dropout = dropout;
    return c;
}

/* The twin's timesteps (stored as exact float values) as an i64 [B] tensor. */
static dt_tensor twin_timesteps_i64(const drdc_st_file *f) {
    const drdc_st_tensor *t = NULL;
    CHECK_OK(drdc_st_get(f, "input.t", &t));
    if (!t) return NULL;
    float *v = test_st_floats(t);
    int64_t *iv = malloc(sizeof(int64_t) * (size_t)t->numel);
    dt_tensor out = NULL;
    if (v && iv) {
        for (int64_t i = 0; i < t->numel; i++) iv[i] = (int64_t)v[i];
        CHECK_OK(dt_from_host(&out, iv, DT_I64, (const int64_t[1]){t->numel}, 1, CPU));
    }
    free(v);
    free(iv);
    return out;
}

static double max_abs_diff(dt_tensor a, dt_tensor b) {
    float *x = test_host_copy(a), *y = test_host_copy(b);
    double d = 0.0;
    for (int64_t i = 0; x && y && i < dt_numel(a); i++)
        if (fabs((double)x[i] - y[i]) > d || isnan((double)x[i] - y[i])) d = fabs((double)x[i] - y[i]);
    free(x);
    free(y);
    return d;
}

static double max_abs(dt_tensor a) {
    float *x = test_host_copy(a);
    double m = 0.0;
    for (int64_t i = 0; x && i < dt_numel(a); i++) m = fmax(m, fabs((double)x[i]));
    free(x);
    return m;
}

/* Builds the twin's model and loads its weights (strict: guided-diffusion's names both ways). */
static int load_twin_model(drdc_unet *u, drdc_st_file **f, double dropout) {
    drdc_refiner_config cfg = twin_config(dropout);
    *f = NULL;
    drdc_status st = drdc_unet_build(u, &cfg, CPU, 7);
    CHECK_OK(st);
    if (st) return -1;
    CHECK_OK(st = drdc_st_open(f, twin_path));
    if (!st) CHECK_OK(st = drdc_params_load(&u->params, *f, "param.", 1));
    if (st) {
        drdc_st_close(*f);
        *f = NULL;
        drdc_unet_free(u);
        return -1;
    }
    return 0;
}

/* ---- golden tests -------------------------------------------------------------------------- */

/* Without model conditioning (the paper's ablation) the U-Net sees x_t alone: 3 input channels,
 * the condition is ignored, and the network is the twin's UNetModel(in_channels = 3). */
static void test_unconditioned_matches_twin(void) {
    drdc_refiner_config cfg = twin_config(0.0);
    cfg.model_conditioning = 0;
    drdc_unet u;
    drdc_st_file *f = NULL;
    CHECK_OK(drdc_unet_build(&u, &cfg, CPU, 7));
    int64_t s[4] = {0};
    CHECK_OK(dt_shape(s, 4, drdc_params_get(&u.params, "input_blocks.0.0.weight")));
    CHECK(s[0] == TW_CH && s[1] == 3 && s[2] == 3 && s[3] == 3);
    CHECK_OK(drdc_st_open(&f, twin_uncond_path));
    if (!f) {
        drdc_unet_free(&u);
        return;
    }
    CHECK_OK(drdc_params_load(&u.params, f, "param.", 1));   /* strict: the 3-channel shapes agree */
    dt_tensor x_t = test_st_tensor(f, "input.x_t"), cond = test_st_tensor(f, "input.cond");
    dt_tensor target = test_st_tensor(f, "input.target"), t = twin_timesteps_i64(f);
    dt_tensor eps = NULL, eps_c = NULL, loss = NULL, gr = NULL;
    const long before = dt_live_handles();
    CHECK_OK(drdc_unet_forward(&eps, &u, x_t, t, NULL, 1, NULL));   /* cond may be NULL */
    if (eps) CHECK_OK(dt_mse_loss(&loss, eps, target));
    if (loss) CHECK_OK(dt_backward(loss));
    test_compare_tensor("eps, no model conditioning [B,3,16,16]", eps, f, "out.eps", REL_TOL);
    test_compare_tensor("MSE loss, no model conditioning", loss, f, "out.loss", REL_TOL);
    CHECK_OK(dt_grad(&gr, drdc_params_get(&u.params, "input_blocks.0.0.weight")));
    test_compare_tensor("d/d input_blocks.0.0.weight [32,3,3,3]", gr, f, "grad.input_blocks.0.0.weight", REL_TOL);
    dt_tensor eps_n = NULL;   /* a condition changes nothing (both without autograd: the same kernels) */
    CHECK_OK(drdc_unet_eps(&eps_n, &u, x_t, t, NULL));
    CHECK_OK(drdc_unet_eps(&eps_c, &u, x_t, t, cond));
    if (eps_n && eps_c) CHECK(max_abs_diff(eps_n, eps_c) == 0.0);
    dt_free(eps); dt_free(eps_c); dt_free(eps_n); dt_free(loss); dt_free(gr);
    CHECK(dt_live_handles() == before);
    dt_free(x_t); dt_free(cond); dt_free(target); dt_free(t);
    drdc_st_close(f);
    drdc_unet_free(&u);
}

static void test_timestep_embedding_matches_twin(void) {
    drdc_st_file *f = NULL;
    CHECK_OK(drdc_st_open(&f, twin_path));
    if (!f) return;
    dt_tensor t = twin_timesteps_i64(f), emb = NULL;
    CHECK_OK(drdc_unet_timestep_embedding(&emb, t, TW_CH, CPU));
    test_compare_tensor("timestep_embedding(t, 32) [B,32]", emb, f, "out.temb", 1e-5);
    /* odd width: guided-diffusion appends a zero column */
    dt_tensor odd = NULL;
    CHECK_OK(drdc_unet_timestep_embedding(&odd, t, 7, CPU));
    int64_t s[2] = {0};
    CHECK_OK(dt_shape(s, 2, odd));
    CHECK(s[0] == TW_B && s[1] == 7);
    float *v = test_host_copy(odd);
    for (int i = 0; v && i < TW_B; i++) {
        CHECK(v[i * 7 + 6] == 0.0f);
        CHECK(fabsf(v[i * 7 + 0] * v[i * 7 + 0] + v[i * 7 + 3] * v[i * 7 + 3] - 1.0f) < 1e-5f); /* cos^2 + sin^2 */
    }
    free(v);
    dt_free(t);
    dt_free(emb);
    dt_free(odd);
    drdc_st_close(f);
}

static void test_forward_loss_and_grads_match_twin(void) {
    drdc_unet u;
    drdc_st_file *f;
    if (load_twin_model(&u, &f, 0.0)) return;
    dt_tensor x_t = test_st_tensor(f, "input.x_t"), cond = test_st_tensor(f, "input.cond"), target = test_st_tensor(f, "input.target");
    dt_tensor t = twin_timesteps_i64(f), eps = NULL, loss = NULL;
    dt_generator g = NULL;
    CHECK_OK(dt_generator_new(&g, 1));
    CHECK_OK(drdc_unet_forward(&eps, &u, x_t, t, cond, 1, g));
    if (eps) CHECK_OK(dt_mse_loss(&loss, eps, target));
    if (loss) CHECK_OK(dt_backward(loss));
    test_compare_tensor("eps [B,3,16,16]", eps, f, "out.eps", REL_TOL);
    test_compare_tensor("MSE loss", loss, f, "out.loss", REL_TOL);
    /* A conv bias that feeds a GroupNorm with one channel per group (the 32-channel level: 32
     * groups of 32 channels) has a gradient of exactly 0 in exact arithmetic: the norm removes
     * any per-channel constant. Both sides then hold rounding noise (~1e-9), which is checked in
     * absolute terms against the scale of the real gradients instead of relatively. */
    double gmax = 0.0;
    for (int i = 0; i < drdc_st_count(f); i++) {
        const drdc_st_tensor *e = drdc_st_at(f, i);
        if (!e || strncmp(e->name, "grad.", 5) != 0) continue;
        float *w = test_st_floats(e);
        for (int64_t k = 0; w && k < e->numel; k++) gmax = fmax(gmax, fabs((double)w[k]));
        free(w);
    }
    CHECK(gmax > 0.0);
    int compared = 0, noise_only = 0;
    double worst = 0.0;
    for (int i = 0; i < u.params.n; i++) {
        char name[600], label[600];
        dt_tensor gr = NULL;
        snprintf(name, sizeof name, "grad.%s", u.params.names[i]);
        CHECK_OK(dt_grad(&gr, u.params.tensors[i]));
        CHECK(gr != NULL);
        const drdc_st_tensor *want = drdc_st_find(f, name);
        CHECK(want != NULL);
        float *w = want ? test_st_floats(want) : NULL, *g = gr ? test_host_copy(gr) : NULL;
        if (w && g && dt_numel(gr) == want->numel) {
            double maxref = 0.0, maxdiff = 0.0;
            for (int64_t k = 0; k < want->numel; k++) {
                maxref = fmax(maxref, fabs((double)w[k]));
                maxdiff = fmax(maxdiff, fabs((double)g[k] - (double)w[k]));
            }
            if (maxref < 1e-6 * gmax && test_ends_with(u.params.names[i], ".bias")) {
                printf("  d/d %-54s max|diff| %.3e  max|ref| %.3e  (exactly 0 in exact arithmetic: |diff| vs "
                       "%.1e)\n", u.params.names[i], maxdiff, maxref, 1e-6 * gmax);
                CHECK(maxdiff < 1e-6 * gmax);
                noise_only++;
            } else {
                snprintf(label, sizeof label, "d/d %s", u.params.names[i]);
                worst = fmax(worst, test_compare_tensor(label, gr, f, name, REL_TOL));
            }
            compared++;
        } else {
            CHECK(!"gradient missing or misshapen");
        }
        free(w);
        free(g);
        dt_free(gr);
    }
    printf("  %d gradients compared (%d of them zero in exact arithmetic), largest |grad| %.3e\n", compared,
           noise_only, gmax);
    /* the 32-channel ResBlocks: 2 in + 3 out in_layers.2.bias, and the last block's out_layers.3.bias and
     * skip_connection.bias (into out.0) */
    CHECK(noise_only == 2 + 3 + 2);
    printf("  worst relative error over the other gradients %.3e\n", worst);
    CHECK(compared == u.params.n);
    /* strict load matched every name; count what the twin holds to pin the parameter total */
    int64_t twin_numel = 0;
    for (int i = 0; i < drdc_st_count(f); i++) {
        const drdc_st_tensor *e = drdc_st_at(f, i);
        if (e && strncmp(e->name, "param.", 6) == 0) twin_numel += e->numel;
    }
    printf("  parameters: C %lld, twin %lld\n", (long long)drdc_unet_num_params(&u), (long long)twin_numel);
    CHECK(drdc_unet_num_params(&u) == twin_numel);
    dt_free(x_t); dt_free(cond); dt_free(target); dt_free(t); dt_free(eps); dt_free(loss);
    dt_generator_free(g);
    drdc_st_close(f);
    drdc_unet_free(&u);
}

/* Float timesteps give the same result as integer ones (guided-diffusion casts with .float()),
 * eval with dropout 0 equals training, and the eps callback matches eval with grad off. */
static void test_timestep_dtypes_and_callback(void) {
    drdc_unet u;
    drdc_st_file *f;
    if (load_twin_model(&u, &f, 0.0)) return;
    dt_tensor x_t = test_st_tensor(f, "input.x_t"), cond = test_st_tensor(f, "input.cond");
    dt_tensor ti = twin_timesteps_i64(f), tf = test_st_tensor(f, "input.t"), td = NULL;
    dt_tensor a = NULL, b = NULL, c = NULL, d = NULL, e = NULL;
    CHECK_OK(dt_to_dtype(&td, ti, DT_F64));
    int prev = dt_set_grad_enabled(0);
    CHECK_OK(drdc_unet_forward(&a, &u, x_t, ti, cond, 0, NULL));
    CHECK_OK(drdc_unet_forward(&b, &u, x_t, tf, cond, 0, NULL));
    CHECK_OK(drdc_unet_forward(&c, &u, x_t, td, cond, 0, NULL));
    CHECK_OK(drdc_unet_forward(&d, &u, x_t, ti, cond, 1, NULL));
    dt_set_grad_enabled(1);
    CHECK_OK(drdc_unet_eps(&e, &u, x_t, ti, cond));
    CHECK(dt_is_grad_enabled() == 1);          /* restored */
    dt_set_grad_enabled(prev);
    CHECK(e && !dt_requires_grad(e));          /* computed without autograd */
    CHECK(max_abs_diff(a, b) == 0.0);
    CHECK(max_abs_diff(a, c) == 0.0);
    CHECK(max_abs_diff(a, d) == 0.0);
    CHECK(max_abs_diff(a, e) == 0.0);
    test_compare_tensor("eval eps (no dropout)", a, f, "out.eps", REL_TOL);
    dt_free(x_t); dt_free(cond); dt_free(ti); dt_free(tf); dt_free(td);
    dt_free(a); dt_free(b); dt_free(c); dt_free(d); dt_free(e);
    drdc_st_close(f);
    drdc_unet_free(&u);
}

/* ---- behaviour without the twin ------------------------------------------------------------ */

static dt_tensor randn4(int64_t n, int64_t c, int64_t h, int64_t w, uint64_t seed) {
    dt_generator g = NULL;
    dt_tensor x = NULL;
    const int64_t shape[4] = {n, c, h, w};
    CHECK_OK(dt_generator_new(&g, seed));
    CHECK_OK(dt_randn(&x, shape, 4, DT_F32, CPU, g));
    dt_generator_free(g);
    return x;
}

static dt_tensor timesteps(int64_t n, int64_t first) {
    int64_t v[64];
    for (int64_t i = 0; i < n && i < 64; i++) v[i] = (first + 137 * i) % 1000;
    dt_tensor t = NULL;
    CHECK_OK(dt_from_host(&t, v, DT_I64, (const int64_t[1]){n}, 1, CPU));
    return t;
}

/* Dropout: eval is deterministic, training draws its masks from g (same state, same result) and
 * changes the output. The twin's weights make every layer non-trivial. */
static void test_dropout_draws_from_generator(void) {
    drdc_unet u;
    drdc_st_file *f;
    if (load_twin_model(&u, &f, 0.3)) return;
    dt_tensor x_t = test_st_tensor(f, "input.x_t"), cond = test_st_tensor(f, "input.cond"), t = twin_timesteps_i64(f);
    dt_tensor e1 = NULL, e2 = NULL, t1 = NULL, t2 = NULL, t3 = NULL;
    dt_generator g1 = NULL, g2 = NULL;
    CHECK_OK(dt_generator_new(&g1, 11));
    CHECK_OK(dt_generator_new(&g2, 11));
    int prev = dt_set_grad_enabled(0);
    CHECK_OK(drdc_unet_forward(&e1, &u, x_t, t, cond, 0, g1));
    CHECK_OK(drdc_unet_forward(&e2, &u, x_t, t, cond, 0, g2));
    CHECK_OK(drdc_unet_forward(&t1, &u, x_t, t, cond, 1, g1));
    CHECK_OK(drdc_unet_forward(&t2, &u, x_t, t, cond, 1, g2));
    CHECK_OK(drdc_unet_forward(&t3, &u, x_t, t, cond, 1, g1));
    dt_set_grad_enabled(prev);
    CHECK(max_abs_diff(e1, e2) == 0.0);
    CHECK(max_abs_diff(t1, t2) == 0.0);
    CHECK(max_abs_diff(t1, e1) > 1e-3);
    CHECK(max_abs_diff(t1, t3) > 1e-3);
    test_compare_tensor("eval eps with dropout 0.3 configured", e1, f, "out.eps", REL_TOL);
    dt_free(x_t); dt_free(cond); dt_free(t);
    dt_free(e1); dt_free(e2); dt_free(t1); dt_free(t2); dt_free(t3);
    dt_generator_free(g1);
    dt_generator_free(g2);
    drdc_st_close(f);
    drdc_unet_free(&u);
}

/* guided-diffusion's init: GroupNorm 1/0; zero_module layers (out_layers.3, proj_out, out.2) all
 * zero; every other weight and bias in U(+-1/sqrt(fan_in)) and filling most of it. A new model
 * therefore outputs exactly 0. The same seed builds the same weights, another seed others. */
static void test_init_follows_guided_diffusion(void) {
    drdc_refiner_config cfg = twin_config(0.0);
    drdc_unet u, u2, u3;
    CHECK_OK(drdc_unet_build(&u, &cfg, CPU, 123));
    CHECK_OK(drdc_unet_build(&u2, &cfg, CPU, 123));
    CHECK_OK(drdc_unet_build(&u3, &cfg, CPU, 124));
    int zeroed = 0, norms = 0, uniform = 0;
    for (int i = 0; i < u.params.n; i++) {
        const char *name = u.params.names[i];
        dt_tensor p = u.params.tensors[i];
        CHECK(u.params.trainable[i] && dt_requires_grad(p));
        float *v = test_host_copy(p);
        if (!v) continue;
        const int64_t n = dt_numel(p);
        double mn = INFINITY, mx = -INFINITY;
        for (int64_t k = 0; k < n; k++) {
            mn = fmin(mn, v[k]);
            mx = fmax(mx, v[k]);
        }
        free(v);
        const int is_norm = strstr(name, "in_layers.0.") || strstr(name, "out_layers.0.") || strstr(name, ".norm.") ||
                            strncmp(name, "out.0.", 6) == 0;
        const int is_zero = strstr(name, "out_layers.3.") || strstr(name, "proj_out.") || strncmp(name, "out.2.", 6) == 0;
        if (is_norm) {
            const double want = test_ends_with(name, ".weight") ? 1.0 : 0.0;
            CHECK(mn == want && mx == want);
            norms++;
        } else if (is_zero) {
            CHECK(mn == 0.0 && mx == 0.0);
            zeroed++;
        } else {
            /* the weight's fan_in: numel / out for the weight; the bias shares its layer's bound */
            char wname[600];
            snprintf(wname, sizeof wname, "%.*s.weight", (int)(strlen(name) - (test_ends_with(name, ".bias") ? 5 : 7)), name);
            dt_tensor w = drdc_params_get(&u.params, wname);
            int64_t out_ch = 0;
            CHECK(w != NULL);
            if (!w) continue;
            CHECK_OK(dt_size(&out_ch, w, 0));
            const double bound = 1.0 / sqrt((double)(dt_numel(w) / out_ch));
            const int filled = n < 16 || (mx > 0.5 * bound && mn < -0.5 * bound);
            if (!(mx <= bound && mn >= -bound && filled))
                fprintf(stderr, "  %s: [%g, %g] vs bound %g\n", name, mn, mx, bound);
            CHECK(mx <= bound && mn >= -bound && filled);
            uniform++;
        }
        CHECK(max_abs_diff(p, u2.params.tensors[i]) == 0.0);
    }
    printf("  %d GroupNorm tensors, %d zero_module tensors, %d uniform tensors\n", norms, zeroed, uniform);
    /* ResBlocks: levels*res_blocks in, 2 in the middle, levels*(res_blocks+1) out; attention blocks:
     * 2*res_blocks+1 on the one attention level, 1 in the middle; each zero layer has weight + bias */
    const int resblocks = 2 * TW_RES_BLOCKS + 2 + 2 * (TW_RES_BLOCKS + 1), attns = 2 * TW_RES_BLOCKS + 1 + 1;
    CHECK(zeroed == 2 * (resblocks + attns + 1));
    CHECK(norms == 2 * (2 * resblocks + attns + 1));
    CHECK(max_abs_diff(drdc_params_get(&u.params, "input_blocks.0.0.weight"),
                       drdc_params_get(&u3.params, "input_blocks.0.0.weight")) > 0.0);
    /* a new model outputs exactly zero (zero_module on out.2) */
    dt_tensor x = randn4(2, 3, TW_SIZE, TW_SIZE, 1), c = randn4(2, 3, TW_SIZE, TW_SIZE, 2), t = timesteps(2, 5);
    dt_tensor eps = NULL;
    CHECK_OK(drdc_unet_forward(&eps, &u, x, t, c, 0, NULL));
    CHECK(eps && max_abs(eps) == 0.0);
    dt_free(x); dt_free(c); dt_free(t); dt_free(eps);
    drdc_unet_free(&u);
    drdc_unet_free(&u2);
    drdc_unet_free(&u3);
}

static const char *tiny_json_path(void) {
    static char path[1200];
    snprintf(path, sizeof path, "%s/configs/tiny.json", test_source_dir());
    return path;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* zero-initialised output layers would give zero outputs and gradients upstream: perturb every
 * parameter */
static void perturb_params(drdc_unet *u) {
    for (int i = 0; i < u->params.n; i++) {
        dt_tensor noise = NULL;
        int prev = dt_set_grad_enabled(0);
        int64_t shape[4] = {0};
        const int nd = dt_ndim(u->params.tensors[i]);
        CHECK_OK(dt_shape(shape, 4, u->params.tensors[i]));
        dt_generator g = NULL;
        CHECK_OK(dt_generator_new(&g, (uint64_t)i + 100));
        CHECK_OK(dt_randn(&noise, shape, nd, DT_F32, CPU, g));
        CHECK_OK(dt_add_(u->params.tensors[i], noise, 0.02));
        dt_generator_free(g);
        dt_free(noise);
        dt_set_grad_enabled(prev);
    }
}

/* configs/tiny.json's refiner: forward + backward at its resolution, right shapes, a gradient
 * for every parameter, no handle left behind; then one batch-8 step timed (printed only). */
static void test_tiny_config_forward_backward(void) {
    drdc_config cfg;
    drdc_config_defaults(&cfg);
    CHECK_OK(drdc_config_load(&cfg, tiny_json_path()));
    const drdc_refiner_config *rc = &cfg.refiner;
    drdc_unet u;
    CHECK_OK(drdc_unet_build(&u, rc, CPU, 3));
    if (!u.in) return;
    const int S = rc->image_size;
    printf("  tiny refiner: %dpx, %d channels, %d levels, %lld parameters, %d input / %d output blocks\n", S,
           rc->channels, rc->n_mult, (long long)drdc_unet_num_params(&u), u.n_in, u.n_out);
    perturb_params(&u);
    dt_tensor x = randn4(2, 3, S, S, 1), c = randn4(2, 3, S, S, 2), target = randn4(2, 3, S, S, 3), t = timesteps(2, 9);
    const long before = dt_live_handles();
    dt_tensor eps = NULL, loss = NULL;
    CHECK_OK(drdc_unet_forward(&eps, &u, x, t, c, 1, NULL));
    int64_t s[4] = {0};
    if (eps) {
        CHECK(dt_ndim(eps) == 4);
        CHECK_OK(dt_shape(s, 4, eps));
        CHECK(s[0] == 2 && s[1] == 3 && s[2] == S && s[3] == S);
        CHECK(dt_requires_grad(eps));
        CHECK(dt_live_handles() == before + 1);
        CHECK_OK(dt_mse_loss(&loss, eps, target));
        CHECK_OK(dt_backward(loss));
    }
    int with_grad = 0;
    for (int i = 0; i < u.params.n; i++) {
        dt_tensor gr = NULL;
        CHECK_OK(dt_grad(&gr, u.params.tensors[i]));
        if (gr && max_abs(gr) > 0.0) with_grad++;
        else fprintf(stderr, "  no gradient for %s\n", u.params.names[i]);
        dt_free(gr);
    }
    CHECK(with_grad == u.params.n);
    dt_free(eps);
    dt_free(loss);
    CHECK(dt_live_handles() == before);
    CHECK(dt_scope_depth() == 0);

    /* a failing call leaks nothing either */
    dt_tensor wrong = randn4(2, 3, S, S / 2 + 1, 4), bad = NULL;
    const long before2 = dt_live_handles();
    CHECK_ERR(drdc_unet_forward(&bad, &u, x, t, wrong, 1, NULL), DRDC_ERR_INPUT, "cond");
    CHECK(bad == NULL);
    CHECK(dt_live_handles() == before2);
    CHECK(dt_scope_depth() == 0);
    dt_free(wrong);

    /* timing: one forward + backward at batch 8 (printed, not asserted) */
    dt_tensor x8 = randn4(8, 3, S, S, 5), c8 = randn4(8, 3, S, S, 6), y8 = randn4(8, 3, S, S, 7), t8 = timesteps(8, 1);
    double t0 = now_s();
    dt_tensor e8 = NULL, l8 = NULL;
    CHECK_OK(drdc_unet_forward(&e8, &u, x8, t8, c8, 1, NULL));
    double t1 = now_s();
    if (e8) CHECK_OK(dt_mse_loss(&l8, e8, y8));
    if (l8) CHECK_OK(dt_backward(l8));
    double t2 = now_s();
    printf("  timing (%d threads): tiny refiner batch 8 at %dpx: forward %.3f s, backward %.3f s, total %.3f s\n",
           dt_get_num_threads(), S, t1 - t0, t2 - t1, t2 - t0);
    int prev = dt_set_grad_enabled(0);
    dt_tensor e9 = NULL;
    t0 = now_s();
    CHECK_OK(drdc_unet_forward(&e9, &u, x8, t8, c8, 0, NULL));
    t1 = now_s();
    dt_set_grad_enabled(prev);
    printf("  timing: tiny refiner batch 8 eval forward (no grad) %.3f s\n", t1 - t0);
    dt_free(e8); dt_free(l8); dt_free(e9);
    dt_free(x8); dt_free(c8); dt_free(y8); dt_free(t8);
    dt_free(x); dt_free(c); dt_free(target); dt_free(t);
    drdc_unet_free(&u);
}

/* got against ref: the largest difference, printed with what, within rel of ref's largest value
 * (which must be above 0.1: a vanishing output would make any comparison pass). */
static void expect_close(const char *what, dt_tensor got, dt_tensor ref, double rel) {
    if (!got || !ref) return;   /* the call that should have made them failed, and was counted */
    const double scale = max_abs(ref), d = max_abs_diff(got, ref);
    printf("  %s: max |diff| %.3g, max |eps| %.3g\n", what, d, scale);
    CHECK(scale > 0.1);
    CHECK(d <= rel * scale);
}

/* The tiny config's refiner with perturbed weights (every layer non-trivial); S its image size.
 * Returns 0 when it could not be built (the failure is counted). */
static int tiny_perturbed_unet(drdc_unet *u, int *S) {
    drdc_config cfg;
    drdc_config_defaults(&cfg);
    CHECK_OK(drdc_config_load(&cfg, tiny_json_path()));
    CHECK_OK(drdc_unet_build(u, &cfg.refiner, CPU, 5));
    if (!u->in) return 0;
    perturb_params(u);
    *S = cfg.refiner.image_size;
    return 1;
}

/* Selects the fused kernel's version (avx = 1: AVX-512, 0: portable) for dtype bf16 or float32;
 * 0 when this CPU cannot run that version (said, so that a variant never passes unseen). */
static int kernel_variant(int avx, int bf16) {
    drdc_unet_use_avx512(avx);
    if (avx && !drdc_unet_avx512_active(bf16, 32)) {
        printf("  SKIP the AVX-512 kernel (%s): this CPU lacks AVX-512 F%s\n", bf16 ? "bf16" : "float32",
               bf16 ? "/BW/BF16" : "");
        return 0;
    }
    CHECK(drdc_unet_avx512_active(bf16, 32) == avx);
    return 1;
}

/* One NaN pixel in the first image of x [2,3,S,S]: that image's eps is NaN everywhere (its norms
 * are NaN), the other image's untouched (fail closed, and no leak across the batch). */
static void check_nan_stays_in_its_image(const drdc_unet *u, dt_tensor x, dt_tensor t, dt_tensor c, int S) {
    float *h = test_host_copy(x);
    if (!h) return;
    h[(int64_t)S * S + 5] = NAN;   /* one pixel of the first image's second channel */
    const int64_t shape[4] = {2, 3, S, S};
    dt_tensor xn = NULL, e = NULL;
    CHECK_OK(dt_from_host(&xn, h, DT_F32, shape, 4, CPU));
    CHECK_OK(drdc_unet_eps(&e, (void *)u, xn, t, c));
    float *o = e ? test_host_copy(e) : NULL;
    int64_t n_nan0 = 0, n_finite1 = 0, per = 3 * (int64_t)S * S;
    for (int64_t i = 0; o && i < per; i++) n_nan0 += isnan(o[i]) != 0;
    for (int64_t i = per; o && i < 2 * per; i++) n_finite1 += isfinite(o[i]) != 0;
    CHECK(n_nan0 == per);
    CHECK(n_finite1 == per);
    free(o);
    free(h);
    dt_free(xn);
    dt_free(e);
}

/* Inference on the CPU runs each "GroupNorm, scale-shift, SiLU" (and the attention blocks' GroupNorm)
 * as one C kernel on channels-last activations (unet.c, gn_fused); with autograd on, the same
 * network runs libtorch's ops on NCHW. Both on the tiny refiner (perturbed weights, 64 channels at
 * most, 32 px), with each kernel version: equal within 1.5e-5 of the output's scale, also for
 * inputs far from 0 (the statistics must not cancel), and a NaN in the input comes out as NaN, not
 * as a number (fail closed). */
static void test_fused_norm_matches_libtorch(void) {
    drdc_unet u;
    int S = 0;
    if (!tiny_perturbed_unet(&u, &S)) return;
    dt_tensor x = randn4(2, 3, S, S, 11), c = randn4(2, 3, S, S, 12), t = timesteps(2, 40), far = NULL;
    CHECK_OK(dt_add_scalar(&far, x, 300.0));
    const dt_tensor inputs[2] = {x, far};
    const char *what[2] = {"x_t ~ N(0,1)", "x_t ~ N(300,1)"};
    for (int avx = 0; avx < 2; avx++) {
        if (!kernel_variant(avx, 0)) continue;
        for (int k = 0; k < 2; k++) {
            const long before = dt_live_handles();
            dt_tensor fused = NULL, ref = NULL;
            CHECK_OK(drdc_unet_eps(&fused, &u, inputs[k], t, c));                 /* no autograd: fused */
            CHECK_OK(drdc_unet_forward(&ref, &u, inputs[k], t, c, 0, NULL));     /* autograd on: libtorch */
            if (fused && ref) {
                const double scale = max_abs(ref), d = max_abs_diff(fused, ref);
                printf("  fused norm (%s), %s: max |diff| %.3g against max |eps| %.3g (relative %.3g)\n",
                       avx ? "AVX-512" : "portable", what[k], d, scale, d / scale);
                CHECK(scale > 0.1);
                CHECK(d <= 1.5e-5 * scale);   /* measured <= 3.5e-6; without the AVX-512 Newton step 3.4e-5 */
            }
            dt_free(fused);
            dt_free(ref);
            CHECK(dt_live_handles() == before);
        }
        check_nan_stays_in_its_image(&u, x, t, c, S);
    }
    drdc_unet_use_avx512(1);
    dt_free(x); dt_free(c); dt_free(t); dt_free(far);
    drdc_unet_free(&u);
}

/* Under bf16 autocast the fused kernel reads and writes bf16 (the convolutions' own dtype);
 * libtorch's path (autograd on) normalises in float32 and lets the next convolution cast. Both
 * round to bf16 at the same places, so they agree to bf16's precision over the network (within 2 %
 * of the output's scale; measured 0.85 %), and both differ from float32 by more than float32's
 * rounding (the bf16 path really ran). A NaN pixel still makes its image's eps all NaN. */
static void test_fused_norm_bf16_matches_libtorch(void) {
    drdc_unet u;
    int S = 0;
    if (!tiny_perturbed_unet(&u, &S)) return;
    dt_tensor x = randn4(2, 3, S, S, 21), c = randn4(2, 3, S, S, 22), t = timesteps(2, 40);
    const long before = dt_live_handles();
    dt_tensor f32 = NULL, fused[2] = {NULL, NULL}, ref = NULL;
    CHECK_OK(drdc_unet_eps(&f32, &u, x, t, c));
    CHECK_OK(dt_autocast_inference(CPU, 1));
    CHECK_OK(drdc_unet_forward(&ref, &u, x, t, c, 0, NULL));            /* autograd on: libtorch */
    for (int avx = 0; avx < 2; avx++) {
        if (!kernel_variant(avx, 1)) continue;
        CHECK_OK(drdc_unet_eps(&fused[avx], &u, x, t, c));               /* no autograd: fused, bf16 */
        if (fused[avx] && ref && f32) {
            CHECK(dt_dtype_of(fused[avx]) == DT_F32);
            const double scale = max_abs(f32), d = max_abs_diff(fused[avx], ref), d32 = max_abs_diff(fused[avx], f32);
            printf("  fused norm (%s), bf16: max |diff| %.3g against libtorch's bf16 ops, %.3g against float32, "
                   "max |eps| %.3g\n", avx ? "AVX-512" : "portable", d, d32, scale);
            CHECK(scale > 0.1);
            CHECK(d <= 2e-2 * scale);
            CHECK(d32 > 1e-4 * scale);
        }
        check_nan_stays_in_its_image(&u, x, t, c, S);
    }
    if (fused[0] && fused[1]) {   /* the two kernels differ only in float32's last bits before each bf16 rounding */
        const double scale = max_abs(f32), d = max_abs_diff(fused[0], fused[1]);
        printf("  fused norm, bf16: AVX-512 against portable: max |diff| %.3g (relative %.3g)\n", d, d / scale);
        CHECK(d <= 1e-2 * scale);
    }
    drdc_unet_use_avx512(1);
    CHECK_OK(dt_autocast_inference(CPU, 0));
    dt_free(f32); dt_free(fused[0]); dt_free(fused[1]); dt_free(ref);
    CHECK(dt_live_handles() == before);
    dt_free(x); dt_free(c); dt_free(t);
    drdc_unet_free(&u);
}

/* drdc_unet_eps splits a batch of runs across threads (min(N, threads) parts); each run's eps is the
 * one the whole batch gives in one call (the network treats every run on its own), for an uneven
 * split too (3 runs on 2 threads: 1 + 2), in float32 and under bf16 autocast; nothing leaks. */
static void test_split_runs_match_one_call(void) {
    drdc_unet u;
    int S = 0;
    if (!tiny_perturbed_unet(&u, &S)) return;
    const int prev = dt_get_num_threads();
    CHECK_OK(dt_set_num_threads(2));
    dt_tensor x = randn4(3, 3, S, S, 31), c = randn4(3, 3, S, S, 32), t = timesteps(3, 70);
    const long before = dt_live_handles();
    for (int bf16 = 0; bf16 < 2; bf16++) {
        dt_tensor split = NULL, whole = NULL;
        if (bf16) CHECK_OK(dt_autocast_inference(CPU, 1));
        CHECK_OK(drdc_unet_eps(&split, &u, x, t, c));
        const int grad = dt_set_grad_enabled(0);
        CHECK_OK(drdc_unet_forward(&whole, &u, x, t, c, 0, NULL));      /* one call, the same path */
        dt_set_grad_enabled(grad);
        if (bf16) CHECK_OK(dt_autocast_inference(CPU, 0));
        expect_close(bf16 ? "split runs (bf16) against one call" : "split runs (fp32) against one call", split, whole,
                     1e-6);
        dt_free(split);
        dt_free(whole);
    }
    CHECK(dt_live_handles() == before);
    CHECK(dt_get_num_threads() == 2);
    CHECK_OK(dt_set_num_threads(prev));
    dt_free(x); dt_free(c); dt_free(t);
    drdc_unet_free(&u);
}

/* eps of the tiny refiner (perturbed weights) in inference with a process-wide switch `use` on
 * (the default) against off, in float32 and under bf16 autocast: within rel32 / rel16 of the
 * output's scale; the switch is left on and nothing leaks. */
static void compare_switch(const char *what, int (*use)(int), double rel32, double rel16, uint64_t seed) {
    drdc_unet u;
    int S = 0;
    if (!tiny_perturbed_unet(&u, &S)) return;
    dt_tensor x = randn4(2, 3, S, S, seed), c = randn4(2, 3, S, S, seed + 1), t = timesteps(2, 65);
    const long before = dt_live_handles();
    for (int bf16 = 0; bf16 < 2; bf16++) {
        dt_tensor on = NULL, off = NULL;
        char label[200];
        if (bf16) CHECK_OK(dt_autocast_inference(CPU, 1));
        CHECK_OK(drdc_unet_eps(&on, &u, x, t, c));
        use(0);
        CHECK_OK(drdc_unet_eps(&off, &u, x, t, c));
        use(1);
        if (bf16) CHECK_OK(dt_autocast_inference(CPU, 0));
        snprintf(label, sizeof label, "%s (%s) against libtorch's ops", what, bf16 ? "bf16" : "fp32");
        expect_close(label, on, off, bf16 ? rel16 : rel32);
        dt_free(on);
        dt_free(off);
    }
    CHECK(dt_live_handles() == before);
    dt_free(x); dt_free(c); dt_free(t);
    drdc_unet_free(&u);
}

/* The attention blocks' heads in CPU inference run attention.h's fused kernel on qkv as the 1x1
 * convolution leaves it (channels-last, legacy head-major channels); drdc_attention_use_fused(0)
 * gives libtorch's bmm / softmax path. The tiny refiner has attention at 16 px (64 channels, 2 heads
 * of 32): both agree within 1e-5 of the output's scale in float32 and within 2 % under bf16
 * autocast. */
static void test_fused_attention_matches_libtorch(void) {
    if (!drdc_attention_fused_active()) {
        printf("  SKIP: the fused attention needs AVX-512 F, which this CPU lacks\n");
        return;
    }
    compare_switch("fused attention", drdc_attention_use_fused, 1e-5, 2e-2, 51);
}

/* The residual adds, the skip concatenation and the nearest x2 upsampling of CPU inference in C
 * give libtorch's results to the bit: eps with them and with libtorch's ops (drdc_unet_use_c_moves)
 * is the same, in float32 and under bf16 autocast (a bf16 add rounds to nearest even, as
 * libtorch's), with each version of the passes (AVX-512 and portable). */
static void test_c_moves_match_libtorch_exactly(void) {
    for (int avx = 0; avx < 2; avx++) {
        if (!kernel_variant(avx, 1)) continue;
        compare_switch(avx ? "adds, concatenation, upsampling in C (AVX-512)" : "adds, concatenation, upsampling in C "
                       "(portable)", drdc_unet_use_c_moves, 0.0, 0.0, 61);
    }
    drdc_unet_use_avx512(1);
}

/* drdc_unet_prepare's copies (every convolution's weight channels-last in the run dtype, the norms'
 * affine on the host, the ResBlocks' embedding projections stacked) give the eps the params give,
 * in float32 (within 5e-6: the stacked projection is one GEMM, its sums in another order) and under
 * bf16 autocast; the forward pass really runs on them (zeroing the output convolution's copies
 * zeroes eps) and never on stale ones: after a convolution's, a projection's and a norm's weights
 * are written in place, eps follows them without a new prepare; a float32 pass with bf16 copies in
 * place runs in float32; nothing leaks. */
static void test_prepared_weights_match_params(void) {
    drdc_unet u;
    int S = 0;
    const long start = dt_live_handles();
    if (!tiny_perturbed_unet(&u, &S)) return;
    dt_tensor x = randn4(2, 3, S, S, 41), c = randn4(2, 3, S, S, 42), t = timesteps(2, 55);
    const long before = dt_live_handles();
    const dt_dtype dtypes[2] = {DT_F32, DT_BF16};
    for (int k = 0; k < 2; k++) {
        const int bf16 = dtypes[k] == DT_BF16;
        dt_tensor plain = NULL, prep = NULL, zero = NULL, e0 = NULL, e1 = NULL, e2 = NULL, noise = NULL;
        if (bf16) CHECK_OK(dt_autocast_inference(CPU, 1));
        CHECK_OK(drdc_unet_eps(&plain, &u, x, t, c));                     /* the params' weights */
        CHECK_OK(drdc_unet_prepare(&u, dtypes[k]));
        CHECK(u.out_conv.run_w && dt_dtype_of(u.out_conv.run_w) == dtypes[k] && dt_is_channels_last(u.out_conv.run_w));
        CHECK(u.in[1].res.skip.run_w == NULL);                            /* no skip convolution there */
        CHECK_OK(drdc_unet_eps(&prep, &u, x, t, c));
        expect_close(bf16 ? "prepared weights (bf16) against the params'" : "prepared weights (fp32) against the params'",
                     prep, plain, bf16 ? 1e-3 : 5e-6);   /* fp32: one stacked GEMM for the embeddings */
        /* the copies are what runs: zeroed, the output convolution gives 0 */
        CHECK_OK(dt_add_(u.out_conv.run_w, u.out_conv.run_w, -1.0));
        CHECK_OK(dt_add_(u.out_conv.run_b, u.out_conv.run_b, -1.0));
        CHECK_OK(drdc_unet_eps(&zero, &u, x, t, c));
        if (zero) CHECK(max_abs(zero) == 0.0);
        /* a weight written after prepare: eps follows it (the stale copies are not used) */
        CHECK_OK(drdc_unet_prepare(&u, dtypes[k]));
        CHECK_OK(drdc_unet_eps(&e0, &u, x, t, c));
        {   /* between passes, as a training step (autocast, and its casts of the weights, off): a
             * convolution's weight, a ResBlock's embedding projection and a norm's weight */
            if (bf16) CHECK_OK(dt_autocast_inference(CPU, 0));
            const int grad = dt_set_grad_enabled(0);
            const dt_tensor written[3] = {u.out_conv.w, u.in[1].res.emb_w, u.in[1].res.in_norm.w};
            for (int i = 0; i < 3; i++) {
                int64_t ws[4];
                dt_free(noise);
                noise = NULL;
                CHECK_OK(dt_shape(ws, dt_ndim(written[i]), written[i]));
                CHECK_OK(dt_randn(&noise, ws, dt_ndim(written[i]), DT_F32, CPU, NULL));
                CHECK_OK(dt_add_(written[i], noise, 0.5));
            }
            dt_set_grad_enabled(grad);
            if (bf16) CHECK_OK(dt_autocast_inference(CPU, 1));
        }
        CHECK_OK(drdc_unet_eps(&e1, &u, x, t, c));
        CHECK_OK(drdc_unet_prepare(&u, dtypes[k]));
        CHECK_OK(drdc_unet_eps(&e2, &u, x, t, c));
        expect_close(bf16 ? "a weight written after prepare (bf16), against a new prepare"
                          : "a weight written after prepare (fp32), against a new prepare", e1, e2, bf16 ? 1e-3 : 5e-6);
        if (e0 && e1) CHECK(max_abs_diff(e1, e0) > 1e-2 * max_abs(e0));   /* the weight's change shows in eps */
        if (bf16) {
            /* with autocast off, a float32 pass runs in float32 with bf16 copies in place (the input
             * convolution's float32 input is cast to bf16 only under autocast) */
            dt_tensor f32_bf16copies = NULL, f32_copies = NULL;
            CHECK_OK(dt_autocast_inference(CPU, 0));
            CHECK_OK(drdc_unet_eps(&f32_bf16copies, &u, x, t, c));
            CHECK_OK(drdc_unet_prepare(&u, DT_F32));
            CHECK_OK(drdc_unet_eps(&f32_copies, &u, x, t, c));
            expect_close("float32 pass with bf16 copies in place, against float32 copies", f32_bf16copies, f32_copies,
                         5e-6);
            dt_free(f32_bf16copies);
            dt_free(f32_copies);
        }
        dt_free(plain); dt_free(prep); dt_free(zero); dt_free(e0); dt_free(e1); dt_free(e2); dt_free(noise);
    }
    const long with_copies = dt_live_handles();
    CHECK(with_copies > before);                                          /* the copies are handles of u's */
    dt_free(x); dt_free(c); dt_free(t);
    drdc_unet_free(&u);                                                   /* frees them with the params */
    CHECK(dt_live_handles() == start);
}

static void test_build_rejects_bad_config(void) {
    drdc_unet u;
    drdc_refiner_config cfg = twin_config(0.0);
    cfg.head_channels = 48;   /* divides neither 64 (attention level) nor the middle block */
    CHECK_ERR(drdc_unet_build(&u, &cfg, CPU, 1), DRDC_ERR_CONFIG, "refiner.head_channels");
    CHECK(u.params.n == 0 && u.in == NULL);
    cfg = twin_config(0.0);
    cfg.n_attention = 0;
    cfg.channel_mult[1] = 3;  /* middle block 96 channels; head 64 divides no attention level... */
    cfg.head_channels = 64;
    CHECK_ERR(drdc_unet_build(&u, &cfg, CPU, 1), DRDC_ERR_CONFIG, "middle block");
    cfg = twin_config(0.0);
    cfg.attention_res[0] = 4; /* not a level of a 16px, 2-level U-Net */
    CHECK_ERR(drdc_unet_build(&u, &cfg, CPU, 1), DRDC_ERR_CONFIG, "refiner.attention_res 4");
    cfg = twin_config(0.0);
    cfg.channels = 24;
    CHECK_ERR(drdc_unet_build(&u, &cfg, CPU, 1), DRDC_ERR_CONFIG, "multiple of 32");
    cfg = twin_config(0.0);
    cfg.image_size = 15;
    cfg.n_attention = 0;
    CHECK_ERR(drdc_unet_build(&u, &cfg, CPU, 1), DRDC_ERR_CONFIG, "refiner.image_size 15");
    cfg = twin_config(1.0);
    CHECK_ERR(drdc_unet_build(&u, &cfg, CPU, 1), DRDC_ERR_CONFIG, "refiner.dropout");
    CHECK(u.params.n == 0 && u.in == NULL && u.out == NULL);
    CHECK_ERR(drdc_unet_build(&u, NULL, CPU, 1), DRDC_ERR_INPUT, NULL);
}

static void test_forward_rejects_bad_input(void) {
    drdc_refiner_config cfg = twin_config(0.0);
    drdc_unet u;
    CHECK_OK(drdc_unet_build(&u, &cfg, CPU, 1));
    dt_tensor x = randn4(2, 3, 16, 16, 1), c = randn4(2, 3, 16, 16, 2), t = timesteps(2, 0), t3 = timesteps(3, 0);
    dt_tensor x4 = randn4(2, 4, 16, 16, 3), odd = randn4(2, 3, 15, 15, 4), eps = NULL;
    const long before = dt_live_handles();
    CHECK_ERR(drdc_unet_forward(&eps, &u, x4, t, c, 0, NULL), DRDC_ERR_INPUT, "x_t must be [N,3,H,W]");
    CHECK_ERR(drdc_unet_forward(&eps, &u, x, t3, c, 0, NULL), DRDC_ERR_INPUT, "t must be [N] = [2]");
    CHECK_ERR(drdc_unet_forward(&eps, &u, odd, t, odd, 0, NULL), DRDC_ERR_INPUT, "not a multiple of 2");
    CHECK_ERR(drdc_unet_forward(&eps, &u, x, t, NULL, 0, NULL), DRDC_ERR_INPUT, "cond is NULL");
    CHECK(eps == NULL);
    CHECK(dt_live_handles() == before);
    /* non-square input whose sides are multiples of 2^(levels-1) is fine */
    dt_tensor xr = randn4(1, 3, 16, 8, 5), cr = randn4(1, 3, 16, 8, 6), t1 = timesteps(1, 3);
    CHECK_OK(drdc_unet_forward(&eps, &u, xr, t1, cr, 0, NULL));
    int64_t s[4] = {0};
    if (eps) CHECK_OK(dt_shape(s, 4, eps));
    CHECK(s[0] == 1 && s[1] == 3 && s[2] == 16 && s[3] == 8);
    dt_free(eps);
    dt_free(x); dt_free(c); dt_free(t); dt_free(t3); dt_free(x4); dt_free(odd);
    dt_free(xr); dt_free(cr); dt_free(t1);
    drdc_unet_free(&u);
    drdc_unet_free(&u);   /* twice is safe: the struct is zeroed */
    drdc_unet_free(NULL);
}

/* Under bf16 autocast with bf16 copies prepared, the U-Net's small convolutions run amx_conv.h's
 * kernel (1x1, stride-2 and small 3x3 ones) and its attention heads the bf16 AMX attention: eps with
 * them and without (drdc_amx_use(0): oneDNN and the float32 fused attention) within 2 % of the
 * output's scale (measured 0.0078 of 0.8: one bf16 step; the convolutions alone gave the same to
 * the bit); the decoder blocks reading their two inputs side by side give the eps of their
 * concatenation to the bit; and the convolution kernel really runs: zeroing the packed weights and bias of one 16 px
 * 3x3 convolution (the deepest decoder block's first) changes eps, which the params and the
 * libtorch copies do not see. Nothing leaks. */
static void test_amx_kernels_in_the_unet(void) {
    if (!drdc_amx_available()) {
        test_skip_part("AMX kernels in the U-Net: this CPU lacks AMX-BF16");
        return;
    }
    drdc_unet u;
    int S = 0;
    if (!tiny_perturbed_unet(&u, &S)) return;
    dt_tensor x = randn4(2, 3, S, S, 81), c = randn4(2, 3, S, S, 82), t = timesteps(2, 45);
    dt_tensor on = NULL, off = NULL, zeroed = NULL;
    CHECK_OK(drdc_unet_prepare(&u, DT_BF16));
    const long before = dt_live_handles();   /* with the copies, which u owns */
    CHECK_OK(dt_autocast_inference(CPU, 1));
    drdc_amx_weights *pw = &u.out[0].res.in_conv.amx;
    CHECK(pw->w != NULL && pw->k == 3);
    CHECK_OK(drdc_unet_eps(&on, &u, x, t, c));
    CHECK(drdc_amx_use(0) == 1);
    CHECK_OK(drdc_unet_eps(&off, &u, x, t, c));
    CHECK(drdc_amx_use(1) == 0);
    expect_close("AMX convolutions and attention (bf16) against oneDNN's and the float32 kernel", on, off, 2e-2);
    {   /* the decoder's inputs side by side (split_input_ok; C moves on) or concatenated (off): the same eps */
        dt_tensor cat = NULL;
        CHECK(drdc_unet_use_c_moves(0) == 1);
        CHECK_OK(drdc_unet_eps(&cat, &u, x, t, c));
        CHECK(drdc_unet_use_c_moves(1) == 0);
        expect_close("decoder inputs side by side against their concatenation (bf16, AMX)", on, cat, 0.0);
        dt_free(cat);
    }
    if (pw->w) {
        memset(pw->w, 0, (size_t)(pw->out * pw->in * 9) * sizeof *pw->w);
        memset(pw->bias, 0, (size_t)pw->out * sizeof *pw->bias);
        CHECK_OK(drdc_unet_eps(&zeroed, &u, x, t, c));
        if (zeroed && on) {
            printf("  one AMX convolution's packed weights zeroed: eps moves by %.3g\n", max_abs_diff(zeroed, on));
            CHECK(max_abs_diff(zeroed, on) > 1e-2 * max_abs(on));
        }
    }
    CHECK_OK(dt_autocast_inference(CPU, 0));
    dt_free(on); dt_free(off); dt_free(zeroed);
    CHECK(dt_live_handles() == before);
    dt_free(x); dt_free(c); dt_free(t);
    drdc_unet_free(&u);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);   /* keep the per-tensor lines in order with CHECK messages */
    const char *py = getenv("DRDC_PYTHON");
    if (!py || !*py) py = "/usr/bin/python3";
    if (test_system("'%s' -c 'import torch, numpy' >/dev/null 2>&1", py) != 0)
        test_skip("test_unet: $DRDC_PYTHON (or /usr/bin/python3) lacks torch/numpy, needed for the twin");
    const char *dir = test_tmpdir("unet");
    snprintf(twin_path, sizeof twin_path, "%s/twin.safetensors", dir);
    int rc = test_system("'%s' '%s/scripts/twins/twin_unet.py' --out '%s' --image-size %d --channels %d --mult 1,2 "
                         "--res-blocks %d --attention-res %d --head-channels %d --batch %d",
                         py, test_source_dir(), twin_path, TW_SIZE, TW_CH, TW_RES_BLOCKS, TW_ATT, TW_HEAD_CH, TW_B);
    snprintf(twin_uncond_path, sizeof twin_uncond_path, "%s/twin_uncond.safetensors", dir);
    if (rc == 0)
        rc = test_system("'%s' '%s/scripts/twins/twin_unet.py' --out '%s' --image-size %d --channels %d --mult 1,2 "
                         "--res-blocks %d --attention-res %d --head-channels %d --batch %d --no-model-conditioning",
                         py, test_source_dir(), twin_uncond_path, TW_SIZE, TW_CH, TW_RES_BLOCKS, TW_ATT, TW_HEAD_CH,
                         TW_B);
    if (rc != 0) {
        fprintf(stderr, "the twin (scripts/twins/twin_unet.py) failed with status %d\n", rc);
        return 1;
    }
    RUN(test_timestep_embedding_matches_twin);
    RUN(test_forward_loss_and_grads_match_twin);
    RUN(test_unconditioned_matches_twin);
    RUN(test_timestep_dtypes_and_callback);
    RUN(test_dropout_draws_from_generator);
    RUN(test_init_follows_guided_diffusion);
    RUN(test_build_rejects_bad_config);
    RUN(test_forward_rejects_bad_input);
    RUN(test_tiny_config_forward_backward);
    RUN(test_fused_norm_matches_libtorch);
    RUN(test_fused_norm_bf16_matches_libtorch);
    RUN(test_split_runs_match_one_call);
    RUN(test_prepared_weights_match_params);
    RUN(test_fused_attention_matches_libtorch);
    RUN(test_c_moves_match_libtorch_exactly);
    RUN(test_amx_kernels_in_the_unet);
    return test_summary();
}
