/* bench.c: inference speed stage by stage (bench.h): a random batch through the model's stages
 * (backbone features, base transformer, one U-Net evaluation at the sampler's batch B*K*G, the whole
 * DRDC pass, the fusion alone), plus peak memory; the runs breakdown shows that the refiner's cost is
 * linear in steps x K x grids and what batching the runs together gains over one run at a time.
 * The weights and check outputs let scripts/bench/bench.py time the PyTorch twins on exactly the same
 * network and check they compute the same thing. Times are wall clock, device-synchronised, warm-up
 * excluded, median over the iterations. */
#include "drdc/model/bench.h"
#include "drdc/core/fsutil.h"
#include "drdc/core/progress.h"
#include "drdc/core/sysinfo.h"
#include "drdc/formats/safetensors.h"
#include "drdc/model/checkpoint.h"
#include "drdc/stages/fusion.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static const drdc_bench_options *O;   /* the options of the run in progress */

/* ---- what is timed ------------------------------------------------------------------------- */

enum { ST_BACKBONE, ST_BASE, ST_UNET, ST_DRDC, ST_FUSION, N_STAGES };
static const char *STAGE_NAMES[N_STAGES] = {"backbone", "base", "unet", "drdc", "fusion"};

typedef struct bench_ctx {
    drdc_model m;
    int B, S, R, G, K, steps;
    dt_generator gen;          /* inputs, refiner noise, DRDC's partitions and noise */
    dt_tensor images_s;        /* [B,3,S,S] in [0,1] (backbone, base input) */
    dt_tensor images_r;        /* [B,3,R,R] in [0,1] (DRDC input) */
    dt_tensor feats;           /* [B,C,S/16,S/16] backbone features (base input) */
    dt_tensor x_t, t, cond;    /* [N,3,R,R], [N] i64, [N,3,R,R] with N = B*G*K (U-Net input) */
    dt_tensor x, x_hat, h_base;/* [B,3,R,R] in [-1,1], [B,G,steps,3,R,R], [B,1,R,R] (fusion input) */
    drdc_fusion_opts fo;
    drdc_refine_opts ro;       /* for the batching comparison */
    drdc_stage_times last;     /* of the last DRDC pass */
    int64_t NU;                /* U-Net batch of one call in a DRDC pass: K*G (one image), B*K*G (infer.batch_refiner) */
    int bf16;                  /* infer.precision bf16: the stages run under bf16 autocast */
    drdc_pass_flops fl;        /* FLOPs of the stages at this batch */
} bench_ctx;

typedef drdc_status (*stage_fn)(dt_tensor *out, bench_ctx *c);

/* The single-stage rows run under the precision of the DRDC pass (drdc_model_drdc sets its own). */
static drdc_status precision_on(const bench_ctx *c, int on) {
    return c->bf16 ? dt_autocast_inference(c->m.dev, on) : DRDC_OK;
}
static drdc_status run_backbone(dt_tensor *out, bench_ctx *c) {
    drdc_status st = precision_on(c, 1);
    if (!st) st = drdc_backbone_features(out, &c->m.backbone, c->images_s);
    drdc_status off = precision_on(c, 0);
    return st ? st : off;
}
static drdc_status run_base(dt_tensor *out, bench_ctx *c) {
    drdc_status st = precision_on(c, 1);
    if (!st) st = drdc_base_forward(out, &c->m.base, c->feats, 0, NULL);
    drdc_status off = precision_on(c, 0);
    return st ? st : off;
}
static drdc_status run_unet(dt_tensor *out, bench_ctx *c) {
    drdc_status st = precision_on(c, 1);
    if (!st) st = drdc_unet_eps(out, &c->m.refiner, c->x_t, c->t, c->cond);
    drdc_status off = precision_on(c, 0);
    return st ? st : off;
}
static drdc_status run_drdc(dt_tensor *out, bench_ctx *c) {
    dt_tensor score = NULL;
    drdc_status st = drdc_model_drdc(out, &score, NULL, NULL, NULL, &c->m, c->images_r, 0, &c->last);
    dt_free(score);
    return st;
}
static drdc_status run_fusion(dt_tensor *out, bench_ctx *c) {
    dt_tensor hd = NULL, score = NULL;
    drdc_status st = DRDC_OK;
    TRY(drdc_fusion_diffusion_heat(&hd, c->x, c->x_hat, &c->fo));   /* eqs. 14-16 */
    TRY(drdc_fusion_final(out, &score, hd, c->h_base, &c->fo));     /* eq. 17 + score */
done:
    dt_free(hd);
    dt_free(score);
    return st;
}
static drdc_status run_refine(dt_tensor *out, bench_ctx *c) {
    return drdc_diffusion_refine(out, NULL, NULL, &c->m.schedule, drdc_unet_eps, &c->m.refiner, c->x, &c->ro);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n) {
    double *s = malloc(sizeof *s * (size_t)n);
    if (!s) return NAN;
    memcpy(s, v, sizeof *s * (size_t)n);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double r = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return r;
}

/* CPU seconds used by the whole process (every thread) so far. */
static double cpu_seconds(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return 0;
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs fn warmup times untimed, then iters times timed: ms[i] is the wall time of one call up
 * to a device synchronisation (freeing the result is not timed), cpu_ms[i] (may be NULL) the
 * process CPU time of that call (all threads: on a shared machine it shows the work done while
 * wall time also shows the waiting). on_iter (may be NULL) is called after each timed call
 * with its index. */
static drdc_status time_stage(double *ms, double *cpu_ms, int iters, int warmup, stage_fn fn, bench_ctx *c,
                              const char *what, void (*on_iter)(bench_ctx *, int)) {
    drdc_status st = DRDC_OK;
    dt_tensor out = NULL;
    for (int i = 0; i < warmup + iters; i++) {
        dt_free(out);
        out = NULL;
        double c0 = cpu_seconds(), t0 = drdc_now_seconds();
        TRY(fn(&out, c));
        TRY(dt_synchronize(c->m.dev));   /* freeing the result is not timed */
        double t1 = drdc_now_seconds(), c1 = cpu_seconds();
        if (i >= warmup) {
            ms[i - warmup] = 1e3 * (t1 - t0);
            if (cpu_ms) cpu_ms[i - warmup] = 1e3 * (c1 - c0);
            if (on_iter) on_iter(c, i - warmup);
        }
    }
done:
    dt_free(out);
    return st ? drdc_error_context(st, "bench %s", what) : DRDC_OK;
}

/* Where a U-Net call's time goes: `iters` more calls with drdc_unet_profile on, per pass (a call's
 * runs split into passes that run side by side, one per thread), printed under the unet row. */
static drdc_status profile_unet(bench_ctx *c, int iters, double peak, const char *prec, cJSON *root) {
    drdc_unet_profile p;
    dt_tensor out = NULL;
    drdc_status st = DRDC_OK;
    drdc_unet_profile_start();
    for (int i = 0; i < iters && !st; i++) {
        dt_free(out);
        out = NULL;
        st = run_unet(&out, c);
    }
    drdc_unet_profile_stop(&p);
    dt_free(out);
    if (st) return drdc_error_context(st, "bench unet profile");
    if (p.passes < 1) return DRDC_OK;
    const double per = 1e3 / (double)p.passes, conv_ms = p.seconds[DRDC_UNET_PROF_CONV] * per;
    const double all_ms = p.seconds[DRDC_UNET_PROF_ALL] * per;
    const char *what[4] = {"convolutions", "norms (with SiLU)", "attention heads", "adds, concatenation, x2"};
    double named = 0;
    printf("    one pass of the unet call (%lld passes in %d calls; each on its own thread, side by side):\n",
           (long long)p.passes, iters);
    for (int k = 0; k < 4; k++) {
        const double ms = p.seconds[k] * per;
        named += ms;
        printf("      %-26s %8.2f ms %5.1f %%", what[k], ms, all_ms > 0 ? 100 * ms / all_ms : 0.0);
        if (k == DRDC_UNET_PROF_CONV && conv_ms > 0) {
            const double gs = (double)p.conv_flops / iters / conv_ms / 1e6;
            printf("   %.1f GFLOP/s", gs);
            if (peak > 0) printf(" (%.1f %% of the %s peak)", 100 * gs / peak, prec);
        }
        printf("\n");
    }
    printf("      %-26s %8.2f ms %5.1f %%   (timestep embedding, casts, allocation, libtorch's dispatch)\n",
           "the rest", all_ms - named, all_ms > 0 ? 100 * (all_ms - named) / all_ms : 0.0);
    printf("      %-26s %8.2f ms\n", "whole pass", all_ms);
    printf("    (GFLOP/s: the call's convolution FLOPs over one pass's convolution time, the rate the call "
           "would reach\n     if it did nothing but its convolutions)\n");
    if (root) {
        cJSON *o = cJSON_AddObjectToObject(root, "unet_pass_ms");
        const char *keys[DRDC_UNET_PROF_KINDS] = {"convolutions", "norms", "attention", "moves", "whole"};
        for (int k = 0; k < DRDC_UNET_PROF_KINDS; k++) cJSON_AddNumberToObject(o, keys[k], p.seconds[k] * per);
    }
    return DRDC_OK;
}

/* ---- set-up ---------------------------------------------------------------------------------- */

/* Adds 0.02 * N(0,1) to every refiner weight: the zero-initialised output layers would otherwise
 * make eps identically 0 (the cost is the same; the comparison with a twin would be vacuous). */
static drdc_status randomise_refiner(drdc_model *m, dt_generator g) {
    drdc_status st = DRDC_OK;
    int prev = dt_set_grad_enabled(0), i = 0;
    dt_tensor noise = NULL;
    for (; i < m->refiner.params.n; i++) {
        dt_tensor p = m->refiner.params.tensors[i];
        int64_t shape[8];
        dt_free(noise);
        noise = NULL;
        TRY(dt_shape(shape, 8, p));
        TRY(dt_randn(&noise, shape, dt_ndim(p), DT_F32, m->dev, g));
        TRY(dt_add_(p, noise, 0.02));
    }
done:
    dt_free(noise);
    dt_set_grad_enabled(prev);
    return st ? drdc_error_context(st, "randomising refiner.%s", m->refiner.params.names[i]) : DRDC_OK;
}

/* Builds the model and every stage's input. */
static drdc_status setup(bench_ctx *c, const drdc_config *cfg, dt_device dev) {
    dt_tensor tmp[3] = {NULL, NULL, NULL};
    drdc_status st = drdc_model_build(&c->m, cfg, dev);
    if (st) return st;
    /* Benchmarking a fresh model: pretend the refiner is trained and calibrated with the identity
     * statistics (mean 0, std 1), so drdc_model_drdc runs the whole path. */
    c->m.refiner_steps = 1;
    c->m.stats.ready = c->m.stats.drdc_ready = 1;
    c->m.stats.base_std = c->m.stats.fuse_base_std = c->m.stats.diff_std = c->m.stats.drdc_std = 1.0;
    const drdc_infer_config *ic = &cfg->infer;
    c->B = O->batch ? O->batch : ic->batch;
    c->S = cfg->data.image_size;
    c->R = cfg->refiner.image_size;
    c->G = ic->n_grids;
    c->K = ic->K;
    c->steps = ic->steps;
    TRY(dt_generator_new(&c->gen, (uint64_t)O->seed));
    TRY(randomise_refiner(&c->m, c->gen));
    TRY(drdc_model_prepare(&c->m));
    TRY(drdc_fusion_opts_from_config(&c->fo, ic));
    drdc_refine_opts_from_config(&c->ro, ic);
    c->ro.sampler.gen = c->gen;
    c->bf16 = strcmp(ic->precision, "bf16") == 0;
    c->NU = (int64_t)(ic->batch_refiner ? c->B : 1) * c->G * c->K;
    drdc_model_flops(&c->fl, &c->m, c->B);
    const int64_t B = c->B, S = c->S, R = c->R, N = c->NU;
    const int64_t ss[4] = {B, 3, S, S}, rs[4] = {B, 3, R, R}, ns[4] = {N, 3, R, R}, nt[1] = {N};
    const int64_t hs[6] = {B, c->G, c->steps, 3, R, R}, bs[4] = {B, 1, R, R};
    TRY(dt_rand(&c->images_s, ss, 4, DT_F32, dev, c->gen));
    TRY(dt_rand(&c->images_r, rs, 4, DT_F32, dev, c->gen));
    TRY(dt_randn(&c->x_t, ns, 4, DT_F32, dev, c->gen));
    TRY(dt_randn(&c->cond, ns, 4, DT_F32, dev, c->gen));
    TRY(dt_full(&c->t, nt, 1, ic->tau, DT_I64, dev));
    TRY(drdc_model_refiner_range(&c->x, c->images_r));                      /* [B,3,R,R] in [-1,1] */
    /* x_hat near x, as a refiner's reconstructions are: x + 0.1 N(0,1) per grid and step */
    TRY(dt_randn(&tmp[0], hs, 6, DT_F32, dev, c->gen));                     /* [B,G,S,3,R,R] noise */
    TRY(dt_mul_scalar(&tmp[1], tmp[0], 0.1));
    TRY(dt_reshape(&tmp[2], c->x, (const int64_t[6]){B, 1, 1, 3, R, R}, 6));
    TRY(dt_add(&c->x_hat, tmp[2], tmp[1]));
    TRY(dt_rand(&c->h_base, bs, 4, DT_F32, dev, c->gen));
    {
        int prev = dt_set_grad_enabled(0);
        st = drdc_backbone_features(&c->feats, &c->m.backbone, c->images_s);
        dt_set_grad_enabled(prev);
    }
done:
    dt_free_all(tmp, 3);
    if (st) drdc_error_context(st, "setting up the benchmark");
    return st;
}

static void ctx_free(bench_ctx *c) {
    dt_tensor ts[] = {c->images_s, c->images_r, c->feats, c->x_t, c->t, c->cond, c->x, c->x_hat, c->h_base};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) dt_free(ts[i]);
    dt_generator_free(c->gen);
    drdc_model_free(&c->m);
    memset(c, 0, sizeof *c);
}

/* ---- reporting ------------------------------------------------------------------------------- */

typedef struct stage_result {
    int done;
    int64_t n;                 /* tensor batch the stage ran at */
    double med, min, cpu_med;  /* wall ms per call (median, min), process CPU ms (median) */
    double *ms, *cpu;          /* [iters] each, owned */
} stage_result;

static cJSON *ms_array(const double *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

/* One stage: B images in ms (cpu_ms < 0: not shown), flops per call (0: none counted), against peak
 * GFLOP/s (0: not measured). */
static void print_row(const char *name, int64_t n, int B, double ms, double cpu_ms, double flops, double peak) {
    printf("  %-18s %6lld %11.2f %10.3f %9.2f", name, (long long)n, ms, ms / B, 1e3 * B / ms);
    if (cpu_ms >= 0) printf(" %10.2f", cpu_ms); else printf(" %10s", "");
    if (flops > 0) {
        double gs = flops / (1e-3 * ms) / 1e9;
        printf(" %8.2f %9.1f", flops / 1e9, gs);
        if (peak > 0) printf(" %6.1f%%", 100 * gs / peak);
    }
    printf("\n");
}

/* Peak resident memory of the process in bytes (ru_maxrss is in KiB on Linux). */
static int64_t peak_rss_bytes(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    return (int64_t)ru.ru_maxrss * 1024;
}

static void loadavg(double out[3]) {
    out[0] = out[1] = out[2] = -1;
    if (getloadavg(out, 3) < 0) out[0] = out[1] = out[2] = -1;
}

/* Adds a tensor to the writer (checkpoint.h's writer, float32); names the tensor on failure. */
static drdc_status add_tensor(drdc_st_writer *w, const char *name, dt_tensor t) {
    drdc_status st = drdc_tensor_to_writer(w, name, t);
    return st ? drdc_error_context(st, "--check-out: tensor %s", name) : DRDC_OK;
}

/* --check-out: every stage's input and output at this batch (the model's weights go to
 * --weights-out). Runs each stage once more with its output kept, in float32 whatever
 * infer.precision (a twin is checked to compute the same network at full precision). */
static drdc_status write_check(bench_ctx *c, const char *path) {
    drdc_st_writer *w = NULL;
    drdc_status st = drdc_st_writer_new(&w);
    if (st) return st;
    dt_tensor outs[N_STAGES] = {0}, score = NULL, hd = NULL;
    stage_fn fns[N_STAGES] = {run_backbone, run_base, run_unet, NULL, NULL};
    int prev = dt_set_grad_enabled(0), bf16 = c->bf16;
    c->bf16 = 0;
    for (int s = 0; s < N_STAGES; s++)
        if (fns[s]) TRY(fns[s](&outs[s], c));
    TRY(drdc_fusion_diffusion_heat(&hd, c->x, c->x_hat, &c->fo));
    TRY(drdc_fusion_final(&outs[ST_FUSION], &score, hd, c->h_base, &c->fo));
    TRY(add_tensor(w, "in.images", c->images_s));
    TRY(add_tensor(w, "out.backbone", outs[ST_BACKBONE]));
    TRY(add_tensor(w, "in.features", c->feats));
    TRY(add_tensor(w, "out.base", outs[ST_BASE]));
    TRY(add_tensor(w, "in.x_t", c->x_t));
    TRY(add_tensor(w, "in.t", c->t));
    TRY(add_tensor(w, "in.cond", c->cond));
    TRY(add_tensor(w, "out.unet", outs[ST_UNET]));
    TRY(add_tensor(w, "in.x", c->x));
    TRY(add_tensor(w, "in.x_hat", c->x_hat));
    TRY(add_tensor(w, "in.h_base", c->h_base));
    TRY(add_tensor(w, "out.fusion_h_diff_f", hd));
    TRY(add_tensor(w, "out.fusion_heat", outs[ST_FUSION]));
    TRY(add_tensor(w, "out.fusion_score", score));
    TRY(drdc_st_writer_set_meta(w, "format", "drdc-bench-check"));
    TRY(drdc_st_writer_write(w, path));
done:
    c->bf16 = bf16;
    dt_set_grad_enabled(prev);
    for (int s = 0; s < N_STAGES; s++) dt_free(outs[s]);
    dt_free(score);
    dt_free(hd);
    drdc_st_writer_free(w);
    return st;
}

/* ---- the machine's peak, measured in the same run ----------------------------------------------- */

enum { P_F32, P_BF16, N_PREC };
static const char *PREC_NAMES[N_PREC] = {"fp32", "bf16"};

/* Whether bf16 has fast kernels here: CUDA, or a CPU with AVX512-BF16 or AMX-BF16 (oneDNN uses them). */
static int bf16_available(dt_device dev) {
    return dev.type == DT_CUDA || drdc_cpu_has_flag("avx512_bf16") || drdc_cpu_has_flag("amx_bf16");
}

/* One microbenchmark kernel: GEMM [M,K] x [K,N] (a Linear without bias), or a 3x3 convolution on a
 * channels-last [n,c,s,s] batch to c channels, the layout oneDNN runs its convolutions in. */
typedef struct peak_kernel {
    const char *what;
    int conv;
    int64_t a, b, c, d;   /* GEMM: M, K, N; conv: n, c, s */
} peak_kernel;

static const peak_kernel PEAK_KERNELS[] = {
    {"GEMM", 0, 1024, 1024, 1024, 0},
    {"GEMM", 0, 4096, 256, 256, 0},
    {"conv 3x3, channels-last", 1, 8, 64, 64, 0},
    {"conv 3x3, channels-last", 1, 4, 128, 32, 0},
};
#define N_PEAK_KERNELS ((int)(sizeof PEAK_KERNELS / sizeof PEAK_KERNELS[0]))

/* Best-of-reps GFLOP/s of one kernel at one precision (the FLOPs as the shim counts them). */
static drdc_status time_kernel(double *gflops, double *flops_out, const peak_kernel *k, dt_dtype dt, dt_device dev,
                               dt_generator g, int reps) {
    dt_tensor x = NULL, w = NULL, xs = NULL, ws = NULL, y = NULL;
    drdc_status st = DRDC_OK;
    if (k->conv) {
        const int64_t xs4[4] = {k->a, k->b, k->c, k->c}, ws4[4] = {k->b, k->b, 3, 3};
        TRY(dt_randn(&x, xs4, 4, DT_F32, dev, g));
        TRY(dt_randn(&w, ws4, 4, DT_F32, dev, g));
        TRY(dt_to_memory_format(&x, x, 1));
    } else {
        const int64_t xs2[2] = {k->a, k->b}, ws2[2] = {k->c, k->b};
        TRY(dt_randn(&x, xs2, 2, DT_F32, dev, g));
        TRY(dt_randn(&w, ws2, 2, DT_F32, dev, g));
    }
    TRY(dt_to_dtype(&xs, x, dt));
    TRY(dt_to_dtype(&ws, w, dt));
    double best = INFINITY, flops = 0;
    for (int i = 0; i < reps + 1; i++) {   /* the first call is warm-up (oneDNN builds its kernel) */
        dt_free(y);
        y = NULL;
        int64_t f0 = dt_flops_done();
        double t0 = drdc_now_seconds();
        TRY(k->conv ? dt_conv2d(&y, xs, ws, NULL, 1, 1, 1, 1, 1, 1, 1) : dt_linear(&y, xs, ws, NULL));
        TRY(dt_synchronize(dev));
        double t = drdc_now_seconds() - t0;
        flops = (double)(dt_flops_done() - f0);
        if (i > 0 && t < best) best = t;
    }
    *gflops = flops / best / 1e9;
    *flops_out = flops;
done:
    dt_free(x), dt_free(w), dt_free(xs), dt_free(ws), dt_free(y);
    return st;
}

/* Measures each kernel at fp32 and (where it is fast) bf16 and prints the table; peak[p] = the best
 * GFLOP/s of precision p (0 when not measured). The best of several repetitions: on a shared
 * machine the least disturbed one is closest to what the cores can do. */
static drdc_status measure_peak(double peak[N_PREC], dt_device dev, dt_generator g, cJSON *root) {
    const int have_bf16 = bf16_available(dev), reps = 5;
    drdc_status st = DRDC_OK;
    peak[P_F32] = peak[P_BF16] = 0;
    printf("\nthe machine's peak, measured now through the same libtorch (%d threads; best of %d):\n",
           dt_get_num_threads(), reps);
    printf("  %-26s %-22s %8s %14s %14s\n", "kernel", "shape", "GFLOP", "fp32 GFLOP/s", "bf16 GFLOP/s");
    cJSON *arr = cJSON_AddArrayToObject(root, "peak_kernels");
    for (int i = 0; i < N_PEAK_KERNELS; i++) {
        const peak_kernel *k = &PEAK_KERNELS[i];
        char shape[64];
        if (k->conv)
            snprintf(shape, sizeof shape, "%lldx%lldx%lldx%lld -> %lld", (long long)k->a, (long long)k->b,
                     (long long)k->c, (long long)k->c, (long long)k->b);
        else
            snprintf(shape, sizeof shape, "%lld x %lld x %lld", (long long)k->a, (long long)k->b, (long long)k->c);
        double r[N_PREC] = {0, 0}, flops = 0;
        for (int p = 0; p < N_PREC; p++) {
            if (p == P_BF16 && !have_bf16) continue;
            TRY(time_kernel(&r[p], &flops, k, p == P_BF16 ? DT_BF16 : DT_F32, dev, g, reps));
            if (r[p] > peak[p]) peak[p] = r[p];
        }
        printf("  %-26s %-22s %8.2f %14.1f ", k->what, shape, flops / 1e9, r[P_F32]);
        if (have_bf16) printf("%14.1f\n", r[P_BF16]); else printf("%14s\n", "-");
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "kernel", k->what);
        cJSON_AddStringToObject(o, "shape", shape);
        cJSON_AddNumberToObject(o, "flops", flops);
        cJSON_AddNumberToObject(o, "gflops_fp32", r[P_F32]);
        if (have_bf16) cJSON_AddNumberToObject(o, "gflops_bf16", r[P_BF16]);
        cJSON_AddItemToArray(arr, o);
    }
    printf("  %-26s %-22s %8s %14.1f ", "peak (the best of each)", "", "", peak[P_F32]);
    if (have_bf16) printf("%14.1f\n", peak[P_BF16]); else printf("%14s\n", "(no bf16 here)");
    cJSON *pk = cJSON_AddObjectToObject(root, "peak_gflops");
    cJSON_AddNumberToObject(pk, "fp32", peak[P_F32]);
    if (have_bf16) cJSON_AddNumberToObject(pk, "bf16", peak[P_BF16]);
    fflush(stdout);
done:
    return st ? drdc_error_context(st, "measuring the peak") : DRDC_OK;
}

/* ---- --runs-breakdown ------------------------------------------------------------------------ */

typedef struct run_setting {
    int steps, K, n_grids;
    int grids[DRDC_MAX_LIST];
} run_setting;

static double *g_times_base, *g_times_refine, *g_times_fusion;   /* per timed DRDC call */
static void record_times(bench_ctx *c, int i) {
    if (g_times_base) g_times_base[i] = 1e3 * c->last.base_s;
    if (g_times_refine) g_times_refine[i] = 1e3 * c->last.refine_s;
    if (g_times_fusion) g_times_fusion[i] = 1e3 * c->last.fusion_s;
}

/* K sets need at least K cells at every grid size. */
static int setting_fits(const run_setting *s, int R, int tau) {
    if (s->steps > tau) return 0;
    for (int g = 0; g < s->n_grids; g++) {
        if (R % s->grids[g]) return 0;
        int64_t cells = (int64_t)(R / s->grids[g]) * (R / s->grids[g]);
        if (s->K > cells) return 0;
    }
    return 1;
}

static drdc_status runs_breakdown(bench_ctx *c, cJSON *root) {
    drdc_infer_config saved = c->m.cfg.infer;
    const drdc_infer_config *ic = &saved;
    const int s0 = ic->steps, K0 = ic->K, g0 = ic->grids[0];
    run_setting list[] = {
        {1, 1, 1, {g0}}, {2, 1, 1, {g0}}, {4, 1, 1, {g0}}, {2, 2, 1, {g0}}, {2, 4, 1, {g0}}, {s0, K0, 0, {0}},
        {2 * s0, K0, 0, {0}},
    };
    const int n_list = (int)(sizeof list / sizeof list[0]);
    for (int i = 0; i < n_list; i++)
        if (list[i].n_grids == 0) {
            list[i].n_grids = ic->n_grids;
            memcpy(list[i].grids, ic->grids, sizeof ic->grids);
        }
    double *ms = malloc(sizeof *ms * (size_t)O->iters * 4), *units = calloc((size_t)n_list, sizeof *units);
    double *ref = calloc((size_t)n_list, sizeof *ref);
    drdc_status st = DRDC_OK;
    if (!ms || !units || !ref) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory");
        goto done;
    }
    g_times_base = ms + O->iters;
    g_times_refine = ms + 2 * O->iters;
    g_times_fusion = ms + 3 * O->iters;
    cJSON *arr = cJSON_AddArrayToObject(root, "runs_breakdown");
    printf("\nDRDC cost against steps x K x grids (batch %d, %dx%d; median of %d; ms per batch)\n", c->B, c->R, c->R,
           O->iters);
    printf("  %5s %3s %-10s %6s %10s %10s %10s %10s %14s\n", "steps", "K", "grids", "units", "total", "base", "refine",
           "fusion", "refine/unit");
    int n_fit = 0;
    for (int i = 0; i < n_list; i++) {
        run_setting *s = &list[i];
        char gtxt[64] = "";
        for (int g = 0, o = 0; g < s->n_grids; g++)
            o += snprintf(gtxt + o, sizeof gtxt - (size_t)o, "%s%d", g ? "," : "", s->grids[g]);
        if (!setting_fits(s, c->R, ic->tau)) {
            printf("  %5d %3d %-10s  (does not fit refiner size %d / tau %d: skipped)\n", s->steps, s->K, gtxt, c->R,
                   ic->tau);
            continue;
        }
        c->m.cfg.infer.steps = s->steps;
        c->m.cfg.infer.K = s->K;
        c->m.cfg.infer.n_grids = s->n_grids;
        memcpy(c->m.cfg.infer.grids, s->grids, sizeof s->grids);
        TRY(drdc_model_check_config(&c->m.cfg));
        TRY(time_stage(ms, NULL, O->iters, O->warmup, run_drdc, c, "drdc (runs breakdown)", record_times));
        int u = s->steps * s->K * s->n_grids;
        double tot = median(ms, O->iters), b = median(g_times_base, O->iters), r = median(g_times_refine, O->iters);
        double f = median(g_times_fusion, O->iters);
        printf("  %5d %3d %-10s %6d %10.1f %10.1f %10.1f %10.1f %14.2f\n", s->steps, s->K, gtxt, u, tot, b, r, f,
               r / u);
        fflush(stdout);
        units[n_fit] = u;
        ref[n_fit++] = r;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "steps", s->steps);
        cJSON_AddNumberToObject(o, "K", s->K);
        cJSON_AddItemToObject(o, "grids", cJSON_CreateIntArray(s->grids, s->n_grids));
        cJSON_AddNumberToObject(o, "units", u);
        cJSON_AddNumberToObject(o, "ms_total", tot);
        cJSON_AddNumberToObject(o, "ms_base", b);
        cJSON_AddNumberToObject(o, "ms_refine", r);
        cJSON_AddNumberToObject(o, "ms_fusion", f);
        cJSON_AddItemToObject(o, "ms_all", ms_array(ms, O->iters));
        cJSON_AddItemToArray(arr, o);
    }
    if (n_fit >= 2) {   /* least squares refine_ms = a + b * units, and R^2 */
        double mu = 0, mr = 0, sxy = 0, sxx = 0, syy = 0;
        for (int i = 0; i < n_fit; i++) mu += units[i] / n_fit, mr += ref[i] / n_fit;
        for (int i = 0; i < n_fit; i++) {
            sxy += (units[i] - mu) * (ref[i] - mr);
            sxx += (units[i] - mu) * (units[i] - mu);
            syy += (ref[i] - mr) * (ref[i] - mr);
        }
        double slope = sxx > 0 ? sxy / sxx : 0, icpt = mr - slope * mu;
        double r2 = sxx > 0 && syy > 0 ? sxy * sxy / (sxx * syy) : 1;
        printf("  fit: refine ms = %.2f + %.2f * units (R^2 = %.4f); units = steps x K x grids, each unit is one U-Net "
               "evaluation of the batch's %d images\n", icpt, slope, r2, c->B);
        cJSON *fit = cJSON_AddObjectToObject(root, "runs_fit");
        cJSON_AddNumberToObject(fit, "intercept_ms", icpt);
        cJSON_AddNumberToObject(fit, "ms_per_unit", slope);
        cJSON_AddNumberToObject(fit, "r2", r2);
    }
    c->m.cfg.infer = saved;

    /* The config's own setting, the refiner alone: one run per U-Net call, one image's K*G runs
     * per call, and all B*K*G runs in one call. */
    g_times_base = g_times_refine = g_times_fusion = NULL;
    drdc_refine_opts_from_config(&c->ro, &c->m.cfg.infer);
    c->ro.sampler.gen = c->gen;
    const int64_t chunks[3] = {1, (int64_t)c->K * c->G, 0};
    const char *labels[3] = {"one run per call", "one image per call", "all runs in one call"};
    double res[3];
    int64_t N = (int64_t)c->B * c->K * c->G;
    printf("\nBatching the inpainting runs (refiner only: %d steps, K %d, %d grids, batch %d = %lld runs)\n", c->steps,
           c->K, c->G, c->B, (long long)N);
    printf("  %-26s %8s %12s %10s %12s\n", "U-Net batch", "calls", "ms", "speed-up", "cpu ms");
    cJSON *bat = cJSON_AddArrayToObject(root, "batching");
    int prev = dt_set_grad_enabled(0);
    for (int i = 0; i < 3; i++) {
        c->ro.sampler.chunk = chunks[i];
        st = time_stage(ms, ms + O->iters, O->iters, O->warmup, run_refine, c, labels[i], NULL);
        if (st) break;
        res[i] = median(ms, O->iters);
        double cpu = median(ms + O->iters, O->iters);
        int64_t per = chunks[i] ? chunks[i] : N, calls = (int64_t)c->steps * ((N + per - 1) / per);
        char lab[64];
        snprintf(lab, sizeof lab, "%lld (%s)", (long long)per, labels[i]);
        printf("  %-26s %8lld %12.1f %9.2fx %12.1f\n", lab, (long long)calls, res[i], res[0] / res[i], cpu);
        fflush(stdout);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "mode", labels[i]);
        cJSON_AddNumberToObject(o, "unet_batch", (double)per);
        cJSON_AddNumberToObject(o, "calls", (double)calls);
        cJSON_AddNumberToObject(o, "ms", res[i]);
        cJSON_AddNumberToObject(o, "speedup_vs_one_run", res[0] / res[i]);
        cJSON_AddNumberToObject(o, "cpu_ms", cpu);
        cJSON_AddItemToObject(o, "ms_all", ms_array(ms, O->iters));
        cJSON_AddItemToArray(bat, o);
    }
    dt_set_grad_enabled(prev);
    c->ro.sampler.chunk = 0;
done:
    c->m.cfg.infer = saved;
    g_times_base = g_times_refine = g_times_fusion = NULL;
    free(ms);
    free(units);
    free(ref);
    return st;
}

/* ---- the command ----------------------------------------------------------------------------- */

/* Parses --stages into want[N_STAGES]. */
static drdc_status parse_stages(int *want) {
    for (int s = 0; s < N_STAGES; s++) want[s] = !O->stages;
    if (!O->stages) return DRDC_OK;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", O->stages);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int found = 0;
        for (int s = 0; s < N_STAGES; s++)
            if (!strcmp(tok, STAGE_NAMES[s])) want[s] = found = 1;
        if (!strcmp(tok, "all")) {
            for (int s = 0; s < N_STAGES; s++) want[s] = 1;
            found = 1;
        }
        if (!found)
            return drdc_fail(DRDC_ERR_USAGE, "--stages: unknown stage '%s' (known: backbone, base, unet, drdc, "
                             "fusion, all)", tok);
    }
    return DRDC_OK;
}

drdc_status drdc_bench_run(const drdc_bench_options *opts, const drdc_config *config, const drdc_runtime *rt) {
    O = opts;
    int want[N_STAGES];
    drdc_status st = parse_stages(want);
    if (st) return st;
    const drdc_config cfg = *config;
    bench_ctx c;
    memset(&c, 0, sizeof c);
    stage_result res[N_STAGES];
    memset(res, 0, sizeof res);
    double *drdc_parts[3] = {NULL, NULL, NULL};
    cJSON *root = cJSON_CreateObject();
    double load0[3], load1[3];
    loadavg(load0);
    int prev = dt_set_grad_enabled(0);
    if (!root) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory");
        goto done;
    }
    TRY(setup(&c, &cfg, rt->device));
    if (O->weights_out) TRY(drdc_model_save(&c.m, O->weights_out));
    if (O->check_out) TRY(write_check(&c, O->check_out));
    const char *omp = getenv("OMP_WAIT_POLICY");
    int64_t N = c.NU;
    double peak[N_PREC] = {0, 0};
    if (!O->no_peak) TRY(measure_peak(peak, rt->device, c.gen, root));
    const double pk = peak[c.bf16 ? P_BF16 : P_F32];
    const double stage_flops[N_STAGES] = {(double)c.fl.backbone, (double)c.fl.base,
                                          (double)drdc_unet_flops(&cfg.refiner, N, c.R, c.R), (double)c.fl.drdc, 0};
    const int unet_images = (int)(N / ((int64_t)c.G * c.K));
    printf("drdc bench: config %s, device %s, %d threads (OMP_WAIT_POLICY=%s), libtorch %s, %s\n", cfg.name,
           rt->device_name, dt_get_num_threads(), omp ? omp : "(unset)", dt_torch_version(), drdc_allocator_name());
    printf("  batch %d, image %dx%d, refiner %dx%d, backbone %s (%s), U-Net %d ch, DDIM %d steps, K %d, %d grids "
           "-> U-Net batch %lld (%s), precision %s\n", c.B, c.S, c.S, c.R, c.R, cfg.backbone.arch,
           c.m.backbone_pretrained ? "pretrained" : "random weights", cfg.refiner.channels, c.steps, c.K, c.G,
           (long long)N, cfg.infer.batch_refiner ? "the batch's runs together" : "one image's runs",
           cfg.infer.precision);
    char cpu[256];
    printf("  CPU: %s; kernels: %s\n", drdc_cpu_model(cpu, sizeof cpu), drdc_model_cpu_kernels());
    printf("  load average before: %.2f %.2f %.2f (%d cores online)\n", load0[0], load0[1], load0[2],
           drdc_cpu_count());
    if (O->weights_out) printf("  weights: %s\n", O->weights_out);
    fflush(stdout);
    stage_fn fns[N_STAGES] = {run_backbone, run_base, run_unet, run_drdc, run_fusion};
    for (int i = 0; i < 3; i++)
        if (!(drdc_parts[i] = calloc((size_t)O->iters, sizeof(double)))) {
            st = drdc_fail(DRDC_ERR_NOMEM, "out of memory");
            goto done;
        }
    printf("\n  %-18s %6s %11s %10s %9s %10s %8s %9s %7s\n", "stage", "N", "ms/call", "ms/image", "images/s",
           "cpu ms", "GFLOP", "GFLOP/s", "peak");
    for (int s = 0; s < N_STAGES; s++) {
        if (!want[s]) continue;
        if (!(res[s].ms = calloc((size_t)O->iters, sizeof(double))) ||
            !(res[s].cpu = calloc((size_t)O->iters, sizeof(double)))) {
            st = drdc_fail(DRDC_ERR_NOMEM, "out of memory");
            goto done;
        }
        g_times_base = s == ST_DRDC ? drdc_parts[0] : NULL;
        g_times_refine = s == ST_DRDC ? drdc_parts[1] : NULL;
        g_times_fusion = s == ST_DRDC ? drdc_parts[2] : NULL;
        TRY(time_stage(res[s].ms, res[s].cpu, O->iters, O->warmup, fns[s], &c, STAGE_NAMES[s],
                       s == ST_DRDC ? record_times : NULL));
        g_times_base = g_times_refine = g_times_fusion = NULL;
        res[s].done = 1;
        res[s].n = s == ST_UNET ? N : c.B;
        res[s].med = median(res[s].ms, O->iters);
        res[s].cpu_med = median(res[s].cpu, O->iters);
        res[s].min = res[s].ms[0];
        for (int i = 1; i < O->iters; i++) res[s].min = fmin(res[s].min, res[s].ms[i]);
        print_row(STAGE_NAMES[s], res[s].n, s == ST_UNET ? unet_images : c.B, res[s].med, res[s].cpu_med,
                  stage_flops[s], pk);
        if (s == ST_UNET && rt->device.type == DT_CPU)   /* host clocks: on a GPU they would time the launches */
            TRY(profile_unet(&c, O->iters, pk, PREC_NAMES[c.bf16 ? P_BF16 : P_F32], root));
        if (s == ST_DRDC) {
            const char *sub[3] = {"  drdc: base", "  drdc: refine", "  drdc: fusion"};
            const double sub_flops[3] = {(double)(c.fl.backbone + c.fl.base), (double)c.fl.refine, 0};
            for (int i = 0; i < 3; i++)
                print_row(sub[i], c.B, c.B, median(drdc_parts[i], O->iters), -1, sub_flops[i], pk);
        }
        fflush(stdout);
    }
    printf("  (wall clock, median of %d after %d warm-up; cpu ms = process CPU time, all threads; GFLOP = 2 x "
           "multiply-adds of\n   the convolutions, Linear layers and attention products, from the layer shapes; peak "
           "= share of the %s peak above.\n   The U-Net row is ONE call on N = %lld runs (%d image%s x K %d x %d grids); "
           "a DRDC pass makes %d steps x %d such calls)\n", O->iters, O->warmup, PREC_NAMES[c.bf16 ? P_BF16 : P_F32],
           (long long)N, unet_images, unet_images == 1 ? "" : "s", c.K, c.G, c.steps, c.B / unet_images);
    int64_t rss = peak_rss_bytes(), cuda_peak = 0;
    if (rt->device.type == DT_CUDA) TRY(dt_cuda_memory(&cuda_peak, rt->device));
    printf("  peak memory: %.1f MiB resident (host, whole process)", rss / 1048576.0);
    if (rt->device.type == DT_CUDA) printf(", %.1f MiB CUDA allocated", cuda_peak / 1048576.0);
    printf("\n");
    if (O->breakdown) TRY(runs_breakdown(&c, root));
    loadavg(load1);
    printf("  load average after: %.2f %.2f %.2f\n", load1[0], load1[1], load1[2]);

    if (O->json) {
        char *cj = drdc_config_to_json(&cfg);
        cJSON *cfgj = cj ? cJSON_Parse(cj) : NULL;
        free(cj);
        if (cfgj) cJSON_AddItemToObject(root, "config", cfgj);
        cJSON_AddStringToObject(root, "device", rt->device_name);
        cJSON_AddNumberToObject(root, "threads", dt_get_num_threads());
        cJSON_AddStringToObject(root, "omp_wait_policy", omp ? omp : "");
        cJSON_AddStringToObject(root, "allocator", drdc_allocator_name());
        cJSON_AddStringToObject(root, "cpu", cpu);
        cJSON_AddStringToObject(root, "cpu_kernels", drdc_model_cpu_kernels());
        cJSON_AddStringToObject(root, "libtorch", dt_torch_version());
        cJSON_AddNumberToObject(root, "batch", c.B);
        cJSON_AddNumberToObject(root, "image_size", c.S);
        cJSON_AddNumberToObject(root, "refiner_size", c.R);
        cJSON_AddNumberToObject(root, "unet_batch", (double)N);
        cJSON_AddStringToObject(root, "precision", cfg.infer.precision);
        cJSON_AddBoolToObject(root, "batch_refiner", cfg.infer.batch_refiner);
        cJSON_AddNumberToObject(root, "iters", O->iters);
        cJSON_AddNumberToObject(root, "warmup", O->warmup);
        cJSON_AddNumberToObject(root, "seed", O->seed);
        cJSON_AddItemToObject(root, "loadavg_before", cJSON_CreateDoubleArray(load0, 3));
        cJSON_AddItemToObject(root, "loadavg_after", cJSON_CreateDoubleArray(load1, 3));
        cJSON_AddNumberToObject(root, "peak_rss_bytes", (double)rss);
        if (rt->device.type == DT_CUDA) cJSON_AddNumberToObject(root, "peak_cuda_bytes", (double)cuda_peak);
        if (O->weights_out) cJSON_AddStringToObject(root, "weights", O->weights_out);
        if (O->check_out) cJSON_AddStringToObject(root, "check", O->check_out);
        cJSON *stages = cJSON_AddObjectToObject(root, "stages");
        for (int s = 0; s < N_STAGES; s++) {
            if (!res[s].done) continue;
            cJSON *o = cJSON_AddObjectToObject(stages, STAGE_NAMES[s]);
            cJSON_AddNumberToObject(o, "n", (double)res[s].n);
            cJSON_AddNumberToObject(o, "ms_median", res[s].med);
            cJSON_AddNumberToObject(o, "ms_min", res[s].min);
            cJSON_AddNumberToObject(o, "ms_per_image", res[s].med / c.B);
            cJSON_AddNumberToObject(o, "images_per_s", 1e3 * c.B / res[s].med);
            cJSON_AddItemToObject(o, "ms_all", ms_array(res[s].ms, O->iters));
            cJSON_AddNumberToObject(o, "cpu_ms_median", res[s].cpu_med);
            cJSON_AddNumberToObject(o, "flops", stage_flops[s]);
            if (stage_flops[s] > 0) {
                double gs = stage_flops[s] / (1e-3 * res[s].med) / 1e9;
                cJSON_AddNumberToObject(o, "gflops_per_s", gs);
                if (pk > 0) cJSON_AddNumberToObject(o, "share_of_peak", gs / pk);
            }
            cJSON_AddItemToObject(o, "cpu_ms_all", ms_array(res[s].cpu, O->iters));
            if (s == ST_DRDC) {
                cJSON_AddNumberToObject(o, "ms_base", median(drdc_parts[0], O->iters));
                cJSON_AddNumberToObject(o, "ms_refine", median(drdc_parts[1], O->iters));
                cJSON_AddNumberToObject(o, "ms_fusion", median(drdc_parts[2], O->iters));
            }
        }
        char *text = cJSON_Print(root);
        if (!text) {
            st = drdc_fail(DRDC_ERR_NOMEM, "out of memory writing %s", O->json);
            goto done;
        }
        st = drdc_write_file_atomic(O->json, text, strlen(text));
        free(text);
        if (st) goto done;
        printf("  measurements: %s\n", O->json);
    }
done:
    dt_set_grad_enabled(prev);
    g_times_base = g_times_refine = g_times_fusion = NULL;
    for (int s = 0; s < N_STAGES; s++) {
        free(res[s].ms);
        free(res[s].cpu);
    }
    for (int i = 0; i < 3; i++) free(drdc_parts[i]);
    cJSON_Delete(root);
    ctx_free(&c);
    return st;
}

