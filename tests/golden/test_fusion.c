/* test_fusion.c: spatio-temporal fusion (src/stages/fusion.c) against the PyTorch twin
 * (scripts/twins/twin_diffusion.py fusion: eqs. 14-17 written out per grid, step and scale), plus the
 * normal-statistics accumulator, quantiles, the mean filter's border and the error paths. */
#include "drdc/stages/fusion.h"
#include "drdc/formats/safetensors.h"
#include "testlib.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const dt_device CPU = {DT_CPU, 0};

static float *to_host(dt_tensor t) {
    int64_t n = dt_numel(t);
    float *h = calloc((size_t)(n ? n : 1), sizeof(float));
    if (dt_copy_to_host(t, h, sizeof(float) * (size_t)n)) fprintf(stderr, "to_host: %s\n", drdc_last_error());
    return h;
}

static dt_tensor randn(const int64_t *shape, int nd, dt_generator g, double scale, double shift) {
    dt_tensor r = NULL, a = NULL, b = NULL;
    CHECK_OK(dt_randn(&r, shape, nd, DT_F32, CPU, g));
    CHECK_OK(dt_mul_scalar(&a, r, scale));
    CHECK_OK(dt_add_scalar(&b, a, shift));
    dt_free(r), dt_free(a);
    return b;
}

static int add_f32(drdc_st_writer *w, const char *name, dt_tensor t) {
    int64_t shape[8];
    CHECK_OK(dt_shape(shape, 8, t));
    size_t nb = (size_t)dt_numel(t) * 4;
    float *h = to_host(t);
    drdc_status st = drdc_st_writer_add(w, name, DRDC_ST_F32, dt_ndim(t), shape, h, nb);
    CHECK_OK(st);
    free(h);
    return st != DRDC_OK;
}

static double f64_at(const drdc_st_tensor *t, int i) {
    double v;
    memcpy(&v, (const char *)t->data + 8 * i, 8);
    return v;
}

/* Eqs. (14)-(17), the image score, the statistics and quantiles against the twin. */
static void test_matches_twin(void) {
    const char *py = getenv("DRDC_PYTHON");
    if (!py || !*py) py = "/usr/bin/python3";
    if (test_system("'%s' -c 'import torch, numpy' >/dev/null 2>&1", py) != 0) {
        test_skip_part("%s lacks torch/numpy, needed for the twin", py);
        return;
    }
    dt_generator g = NULL;
    CHECK_OK(dt_generator_new(&g, 3));
    const int64_t B = 2, G = 2, S = 3, H = 30, W = 20;   /* 30 * 0.25 = 7.5: exercises the floor */
    const int64_t xs[4] = {B, 3, H, W}, hs[6] = {B, G, S, 3, H, W}, bs[4] = {B, 1, H, W};
    dt_tensor x = randn(xs, 4, g, 0.5, 0), x_hat = randn(hs, 6, g, 0.5, 0), h_base = randn(bs, 4, g, 0.2, 1.0);
    drdc_fusion_opts o;
    memset(&o, 0, sizeof o);
    o.n_scales = 3;
    o.scales[0] = 1, o.scales[1] = 0.5, o.scales[2] = 0.25;
    o.filter = 7, o.alpha = 0.9, o.pool = 8, o.standardize = 1;
    o.diff_stats = (drdc_norm_stats){0.7, 0.3};
    o.base_stats = (drdc_norm_stats){1.1, 0.25};
    const int nv = 101;
    double values[101], qs[4] = {0, 0.5, 0.99, 1};
    for (int i = 0; i < nv; i++) values[i] = sin(i * 1.7) * 3 + i * 0.01;

    const char *dir = test_tmpdir("fusion_twin");
    char in[1200], out[1200], m[64];
    snprintf(in, sizeof in, "%s/in.safetensors", dir);
    snprintf(out, sizeof out, "%s/out.safetensors", dir);
    drdc_st_writer *w = NULL;
    CHECK_OK(drdc_st_writer_new(&w));
    add_f32(w, "x", x), add_f32(w, "x_hat", x_hat), add_f32(w, "h_base", h_base);
    const int64_t ns[1] = {o.n_scales}, nvs[1] = {nv}, nq[1] = {4};
    CHECK_OK(drdc_st_writer_add(w, "scales", DRDC_ST_F64, 1, ns, o.scales, sizeof(double) * 3));
    CHECK_OK(drdc_st_writer_add(w, "values", DRDC_ST_F64, 1, nvs, values, sizeof values));
    CHECK_OK(drdc_st_writer_add(w, "qs", DRDC_ST_F64, 1, nq, qs, sizeof qs));
    snprintf(m, sizeof m, "%d", o.filter), drdc_st_writer_set_meta(w, "filter", m);
    snprintf(m, sizeof m, "%.17g", o.alpha), drdc_st_writer_set_meta(w, "alpha", m);
    snprintf(m, sizeof m, "%d", o.pool), drdc_st_writer_set_meta(w, "pool", m);
    snprintf(m, sizeof m, "%.17g", o.diff_stats.mean), drdc_st_writer_set_meta(w, "diff_mean", m);
    snprintf(m, sizeof m, "%.17g", o.diff_stats.std), drdc_st_writer_set_meta(w, "diff_std", m);
    snprintf(m, sizeof m, "%.17g", o.base_stats.mean), drdc_st_writer_set_meta(w, "base_mean", m);
    snprintf(m, sizeof m, "%.17g", o.base_stats.std), drdc_st_writer_set_meta(w, "base_std", m);
    CHECK_OK(drdc_st_writer_write(w, in));
    drdc_st_writer_free(w);
    int rc = test_system("'%s' '%s/scripts/twins/twin_diffusion.py' fusion '%s' '%s'", py, test_source_dir(), in, out);
    CHECK(rc == 0);
    drdc_st_file *f = NULL;
    if (rc == 0) CHECK_OK(drdc_st_open(&f, out));
    if (f) {
        const long live = dt_live_handles();
        dt_tensor h_diff = NULL, h_diff_f = NULL, heat = NULL, score = NULL, heat_none = NULL, score_none = NULL;
        CHECK_OK(drdc_fusion_diffusion_map(&h_diff, x, x_hat, o.scales, o.n_scales));
        CHECK_OK(drdc_fusion_diffusion_heat(&h_diff_f, x, x_hat, &o));
        CHECK_OK(drdc_fusion_final(&heat, &score, h_diff_f, h_base, &o));
        o.standardize = 0;
        CHECK_OK(drdc_fusion_final(&heat_none, &score_none, h_diff_f, h_base, &o));
        CHECK(dt_live_handles() == live + 6);
        test_compare_tensor("h_diff", h_diff, f, "h_diff", 1e-4);
        test_compare_tensor("h_diff_f", h_diff_f, f, "h_diff_f", 1e-4);
        test_compare_tensor("heat", heat, f, "heat", 1e-4);
        test_compare_tensor("heat_none", heat_none, f, "heat_none", 1e-4);
        test_compare_tensor("score", score, f, "score", 1e-4);
        test_compare_tensor("score_none", score_none, f, "score_none", 1e-4);
        /* statistics over the batch, added in two pieces, against numpy's */
        const drdc_st_tensor *ts = NULL, *tq = NULL;
        CHECK_OK(drdc_st_expect(f, "stats", 1, (const int64_t[]){4}, &ts));
        CHECK_OK(drdc_st_expect(f, "quantiles", 1, (const int64_t[]){4}, &tq));
        if (ts && h_diff_f) {
            drdc_stats_acc ad, ab;
            drdc_stats_reset(&ad), drdc_stats_reset(&ab);
            dt_tensor d0 = NULL, d1 = NULL;
            CHECK_OK(dt_narrow(&d0, h_diff_f, 0, 0, 1));
            CHECK_OK(dt_narrow(&d1, h_diff_f, 0, 1, 1));
            CHECK_OK(drdc_stats_add(&ad, d0));
            CHECK_OK(drdc_stats_add(&ad, d1));
            float *hb = to_host(h_base);
            CHECK_OK(drdc_stats_add_host(&ab, hb, 7));                 /* uneven pieces */
            CHECK_OK(drdc_stats_add_host(&ab, hb + 7, B * H * W - 7));
            free(hb);
            drdc_norm_stats sd, sb;
            CHECK_OK(drdc_stats_get(&ad, &sd));
            CHECK_OK(drdc_stats_get(&ab, &sb));
            printf("  stats: diff %.9g/%.9g (numpy %.9g/%.9g), base %.9g/%.9g (numpy %.9g/%.9g)\n", sd.mean, sd.std,
                   f64_at(ts, 0), f64_at(ts, 1), sb.mean, sb.std, f64_at(ts, 2), f64_at(ts, 3));
            /* the twin's h_diff_f differs from ours by float rounding (~1e-7); h_base is shared */
            CHECK_NEAR(sd.mean, f64_at(ts, 0), 1e-6);
            CHECK_NEAR(sd.std, f64_at(ts, 1), 1e-6);
            CHECK_NEAR(sb.mean, f64_at(ts, 2), 1e-9);
            CHECK_NEAR(sb.std, f64_at(ts, 3), 1e-9);
            dt_free(d0), dt_free(d1);
        }
        if (tq) {
            for (int i = 0; i < 4; i++) {
                double q = 0;
                CHECK_OK(drdc_quantile(&q, values, nv, qs[i]));
                CHECK_NEAR(q, f64_at(tq, i), 1e-12);
            }
        }
        dt_free(h_diff), dt_free(h_diff_f), dt_free(heat), dt_free(score), dt_free(heat_none), dt_free(score_none);
        CHECK(dt_live_handles() == live);
        drdc_st_close(f);
    }
    dt_free(x), dt_free(x_hat), dt_free(h_base);
    dt_generator_free(g);
}

/* The mean filter keeps a constant map constant up to the border (count_include_pad false),
 * and averages an impulse over f x f. */
static void test_mean_filter_border(void) {
    const int64_t s[4] = {1, 1, 9, 9};
    dt_tensor c = NULL, out = NULL;
    CHECK_OK(dt_full(&c, s, 4, 2.5, DT_F32, CPU));
    CHECK_OK(drdc_fusion_mean_filter(&out, c, 5));
    float *h = to_host(out);
    for (int i = 0; i < 81; i++) CHECK_NEAR(h[i], 2.5, 1e-6);
    free(h);
    dt_free(out);
    float imp[81] = {0};
    imp[4 * 9 + 4] = 9.0f;
    dt_tensor t = NULL;
    CHECK_OK(dt_from_host(&t, imp, DT_F32, s, 4, CPU));
    CHECK_OK(drdc_fusion_mean_filter(&out, t, 3));
    h = to_host(out);
    CHECK_NEAR(h[4 * 9 + 4], 1.0, 1e-6);
    CHECK_NEAR(h[3 * 9 + 5], 1.0, 1e-6);
    CHECK_NEAR(h[2 * 9 + 4], 0.0, 1e-6);
    free(h);
    dt_free(out);
    CHECK_ERR(drdc_fusion_mean_filter(&out, t, 4), DRDC_ERR_INPUT, "filter size 4");
    dt_free(t), dt_free(c);
}

/* The score is the max of the p x p average: one hot p x p block gives its mean exactly. */
static void test_image_score_pool(void) {
    float m[2 * 64] = {0};
    for (int y = 2; y < 5; y++)
        for (int x = 3; x < 6; x++) m[y * 8 + x] = 3.0f;       /* image 0: a 3x3 block of 3 */
    m[64 + 0] = 90.0f;                                         /* image 1: one corner pixel */
    const int64_t s[4] = {2, 1, 8, 8};
    dt_tensor t = NULL, score = NULL;
    CHECK_OK(dt_from_host(&t, m, DT_F32, s, 4, CPU));
    CHECK_OK(drdc_fusion_image_score(&score, t, 3));
    float sc[2] = {0, 0};
    if (score) CHECK_OK(dt_copy_to_host(score, sc, sizeof sc));
    CHECK_NEAR(sc[0], 3.0, 1e-6);
    CHECK_NEAR(sc[1], 10.0, 1e-5);   /* 90 / 9: a lone pixel is averaged away */
    dt_free(score);
    CHECK_OK(drdc_fusion_image_score(&score, t, 100));          /* p clamped to the map: the mean */
    if (score) CHECK_OK(dt_copy_to_host(score, sc, sizeof sc));
    CHECK_NEAR(sc[0], 27.0 / 64, 1e-6);
    dt_free(score), dt_free(t);
}

/* Statistics and standardisation errors, config parsing. */
static void test_stats_and_options(void) {
    drdc_stats_acc a;
    drdc_norm_stats ns;
    drdc_stats_reset(&a);
    CHECK_ERR(drdc_stats_get(&a, &ns), DRDC_ERR_NUMERIC, "no values");
    const float same[4] = {2, 2, 2, 2};
    CHECK_OK(drdc_stats_add_host(&a, same, 4));
    CHECK_ERR(drdc_stats_get(&a, &ns), DRDC_ERR_NUMERIC, "std 0");
    const float more[2] = {0, 4};
    CHECK_OK(drdc_stats_add_host(&a, more, 2));
    CHECK_OK(drdc_stats_get(&a, &ns));
    CHECK_NEAR(ns.mean, 2.0, 1e-12);
    CHECK_NEAR(ns.std, sqrt(8.0 / 6.0), 1e-12);
    const float bad[1] = {NAN};
    CHECK_ERR(drdc_stats_add_host(&a, bad, 1), DRDC_ERR_NUMERIC, NULL);
    CHECK(a.n == 6);

    const int64_t s[4] = {1, 1, 4, 4};
    dt_tensor h = NULL, b2 = NULL, out = NULL;
    CHECK_OK(dt_ones(&h, s, 4, DT_F32, CPU));
    const drdc_norm_stats zero = {0.0, 0.0};
    CHECK_ERR(drdc_fusion_blend(&out, h, h, 0.9, &zero, NULL), DRDC_ERR_NUMERIC, "diffusion map");
    const int64_t s2[4] = {1, 1, 4, 5};
    CHECK_OK(dt_ones(&b2, s2, 4, DT_F32, CPU));
    CHECK_ERR(drdc_fusion_blend(&out, h, b2, 0.9, NULL, NULL), DRDC_ERR_INPUT, "differ");
    CHECK(out == NULL);
    dt_free(h), dt_free(b2);

    drdc_config cfg;
    drdc_config_defaults(&cfg);
    drdc_fusion_opts o;
    CHECK_OK(drdc_fusion_opts_from_config(&o, &cfg.infer));
    CHECK(o.standardize == (strcmp(cfg.infer.standardize, "normal") == 0));
    CHECK(o.n_scales == cfg.infer.n_scales && o.filter == cfg.infer.filter && o.pool == cfg.infer.pool);
    strcpy(cfg.infer.standardize, "none");
    CHECK_OK(drdc_fusion_opts_from_config(&o, &cfg.infer));
    CHECK(o.standardize == 0);
    strcpy(cfg.infer.standardize, "zscore");
    CHECK_ERR(drdc_fusion_opts_from_config(&o, &cfg.infer), DRDC_ERR_CONFIG, "infer.standardize");

    double q = 0;
    const double v[3] = {3, 1, 2};
    CHECK_OK(drdc_quantile(&q, v, 3, 0.75));
    CHECK_NEAR(q, 2.5, 1e-12);
    CHECK(v[0] == 3 && v[1] == 1);   /* input not reordered */
    CHECK_ERR(drdc_quantile(&q, v, 3, 1.5), DRDC_ERR_INPUT, "q = 1.5");
}

/* infer.diff_norm image_mean: each image's filtered diffusion map divided by its own mean (by hand),
 * so scaling an image's whole error by a constant leaves it unchanged; "none" leaves the map as is. */
static void test_diff_norm_image_mean(void) {
    dt_generator g = NULL;
    CHECK_OK(dt_generator_new(&g, 5));
    const int64_t B = 2, G = 1, S = 2, H = 12, W = 10, N = H * W;
    const int64_t xs[4] = {B, 3, H, W}, hs[6] = {B, G, S, 3, H, W};
    const int64_t vs[6] = {B, 1, 1, 3, H, W};
    dt_tensor x = randn(xs, 4, g, 0.5, 0), x_hat = randn(hs, 6, g, 0.5, 0), xv = NULL, d = NULL, d3 = NULL,
              x_hat3 = NULL;
    CHECK_OK(dt_reshape(&xv, x, vs, 6));
    CHECK_OK(dt_sub(&d, x_hat, xv));           /* x^ - x, broadcast over [G,S] */
    CHECK_OK(dt_mul_scalar(&d3, d, 3.0));
    CHECK_OK(dt_add(&x_hat3, xv, d3));         /* the same refinements, three times as far from x */
    drdc_fusion_opts o;
    memset(&o, 0, sizeof o);
    o.n_scales = 2, o.scales[0] = 1, o.scales[1] = 0.5, o.filter = 3;
    dt_tensor plain = NULL, normed = NULL, normed3 = NULL;
    CHECK_OK(drdc_fusion_diffusion_heat(&plain, x, x_hat, &o));
    o.diff_norm = 1;
    CHECK_OK(drdc_fusion_diffusion_heat(&normed, x, x_hat, &o));
    CHECK_OK(drdc_fusion_diffusion_heat(&normed3, x, x_hat3, &o));
    float p[2 * 12 * 10], n1[2 * 12 * 10], n3[2 * 12 * 10];
    CHECK_OK(dt_copy_to_host(plain, p, sizeof p));
    CHECK_OK(dt_copy_to_host(normed, n1, sizeof n1));
    CHECK_OK(dt_copy_to_host(normed3, n3, sizeof n3));
    double worst = 0, worst3 = 0;
    for (int64_t b = 0; b < B; b++) {
        double mean = 0;
        for (int64_t i = 0; i < N; i++) mean += p[b * N + i];
        mean /= (double)N;
        for (int64_t i = 0; i < N; i++) {
            double want = p[b * N + i] / mean;
            worst = fmax(worst, fabs(n1[b * N + i] - want) / want);
            worst3 = fmax(worst3, fabs(n3[b * N + i] - n1[b * N + i]) / want);
        }
    }
    CHECK(worst < 1e-5);
    CHECK(worst3 < 1e-4);
    drdc_config cfg;
    drdc_config_defaults(&cfg);
    CHECK(strcmp(cfg.infer.diff_norm, "none") == 0);
    CHECK_OK(drdc_fusion_opts_from_config(&o, &cfg.infer));
    CHECK(o.diff_norm == 0);
    strcpy(cfg.infer.diff_norm, "image_mean");
    CHECK_OK(drdc_fusion_opts_from_config(&o, &cfg.infer));
    CHECK(o.diff_norm == 1);
    strcpy(cfg.infer.diff_norm, "max");
    CHECK_ERR(drdc_fusion_opts_from_config(&o, &cfg.infer), DRDC_ERR_CONFIG, "infer.diff_norm");
    dt_tensor all[9] = {x, x_hat, xv, d, d3, x_hat3, plain, normed, normed3};
    dt_free_all(all, 9);
    dt_generator_free(g);
}

int main(void) {
    RUN(test_mean_filter_border);
    RUN(test_image_score_pool);
    RUN(test_stats_and_options);
    RUN(test_diff_norm_image_mean);
    RUN(test_matches_twin);
    return test_summary();
}
