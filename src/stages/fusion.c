/* fusion.c: spatio-temporal heatmap fusion (paper 4.4, eqs. 14-17) and its config rules, the
 * UniAD image score, and the normal statistics (running mean / std in double, quantiles) that
 * standardise the maps and calibrate the image-score threshold. See fusion.h. Every tensor step
 * runs inside a shim scope. */
#include "drdc/stages/fusion.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


/* Checks a map: rank 4, f32; fills its shape. */
static drdc_status check_map(dt_tensor h, const char *fn, const char *name, int64_t shape[4]) {
    if (!h) return drdc_fail(DRDC_ERR_INPUT, "%s: %s is NULL", fn, name);
    if (dt_ndim(h) != 4) return drdc_fail(DRDC_ERR_INPUT, "%s: %s has rank %d, want 4 [B,C,H,W]", fn, name, dt_ndim(h));
    if (dt_dtype_of(h) != DT_F32)
        return drdc_fail(DRDC_ERR_INPUT, "%s: %s is %s, want f32", fn, name, dt_dtype_name(dt_dtype_of(h)));
    return dt_shape(shape, 4, h);
}

drdc_status drdc_fusion_check_config(const drdc_infer_config *in, int image_size) {
    if (!in) return drdc_fail(DRDC_ERR_INPUT, "fusion config check: NULL config");
    if (in->filter % 2 == 0) return drdc_fail(DRDC_ERR_CONFIG, "infer.filter %d must be odd", in->filter);
    if (in->filter > image_size)
        return drdc_fail(DRDC_ERR_CONFIG, "infer.filter %d exceeds data.image_size %d", in->filter, image_size);
    if (in->pool > image_size)
        return drdc_fail(DRDC_ERR_CONFIG, "infer.pool %d exceeds data.image_size %d", in->pool, image_size);
    return DRDC_OK;
}

drdc_status drdc_fusion_opts_from_config(drdc_fusion_opts *o, const drdc_infer_config *ic) {
    if (!o || !ic) return drdc_fail(DRDC_ERR_INPUT, "fusion options: NULL argument");
    memset(o, 0, sizeof *o);
    o->n_scales = ic->n_scales < DRDC_MAX_LIST ? ic->n_scales : DRDC_MAX_LIST;
    for (int i = 0; i < o->n_scales; i++) o->scales[i] = ic->scales[i];
    o->filter = ic->filter;
    o->alpha = ic->alpha;
    o->pool = ic->pool;
    if (!strcmp(ic->standardize, "normal")) o->standardize = 1;
    else if (!strcmp(ic->standardize, "none")) o->standardize = 0;
    else
        return drdc_fail(DRDC_ERR_CONFIG, "infer.standardize: \"%s\", want \"normal\" or \"none\"", ic->standardize);
    if (!strcmp(ic->diff_norm, "image_mean")) o->diff_norm = 1;
    else if (strcmp(ic->diff_norm, "none") && ic->diff_norm[0])
        return drdc_fail(DRDC_ERR_CONFIG, "infer.diff_norm: \"%s\", want \"none\" or \"image_mean\"", ic->diff_norm);
    o->diff_stats.mean = o->base_stats.mean = 0.0;
    o->diff_stats.std = o->base_stats.std = 1.0;
    return DRDC_OK;
}

/* x [B,3,H,W] and its refinements x_hat [B,G,S,3,H,W] (shapes into xs, hs). */
static drdc_status check_refined(const char *fn, int64_t xs[4], int64_t hs[6], dt_tensor x, dt_tensor x_hat) {
    drdc_status st = DRDC_OK;
    TRY(check_map(x, fn, "x", xs));
    if (!x_hat || dt_ndim(x_hat) != 6 || dt_dtype_of(x_hat) != DT_F32)
        return drdc_fail(DRDC_ERR_INPUT, "%s: x_hat must be f32 [B,G,S,3,H,W]", fn);
    TRY(dt_shape(hs, 6, x_hat));
    if (hs[0] != xs[0] || hs[3] != xs[1] || hs[4] != xs[2] || hs[5] != xs[3])
        return drdc_fail(DRDC_ERR_INPUT, "%s: x_hat [%lld,%lld,%lld,%lld,%lld,%lld] does not match x [%lld,%lld,%lld,%lld]",
                         fn, (long long)hs[0], (long long)hs[1], (long long)hs[2], (long long)hs[3], (long long)hs[4],
                         (long long)hs[5], (long long)xs[0], (long long)xs[1], (long long)xs[2], (long long)xs[3]);
done:
    return st;
}

/* Size of Down_s for one side: floor(n * s), at least 1. */
static int64_t scaled_size(int64_t n, double s) {
    int64_t m = (int64_t)floor((double)n * s);
    return m < 1 ? 1 : m;
}

drdc_status drdc_fusion_diffusion_map(dt_tensor *h_diff, dt_tensor x, dt_tensor x_hat, const double *scales,
                                      int n_scales) {
    static const char *fn = "fusion diffusion map";
    if (!h_diff) return drdc_fail(DRDC_ERR_INPUT, "%s: NULL output", fn);
    *h_diff = NULL;
    int64_t xs[4], hs[6];
    drdc_status st = check_refined(fn, xs, hs, x, x_hat);
    if (st) return st;
    if (!scales || n_scales < 1) return drdc_fail(DRDC_ERR_INPUT, "%s: no scales", fn);
    for (int i = 0; i < n_scales; i++)
        if (!(scales[i] > 0.0 && scales[i] <= 1.0))
            return drdc_fail(DRDC_ERR_INPUT, "%s: scale %g, want (0,1]", fn, scales[i]);
    const int64_t B = xs[0], C = xs[1], H = xs[2], W = xs[3], M = hs[1] * hs[2];   /* M = G*S maps per image */
    st = dt_scope_begin();
    if (st) return st;
    dt_tensor xv = NULL, diff = NULL, d = NULL, acc = NULL, res = NULL;
    const int64_t vshape[6] = {B, 1, 1, C, H, W}, dshape[4] = {B * M, C, H, W};
    TRY(dt_reshape(&xv, x, vshape, 6));                                    /* [B,1,1,3,H,W] */
    TRY(dt_sub(&diff, xv, x_hat));                                         /* [B,G,S,3,H,W] x - x^_{n,t} */
    TRY(dt_reshape(&d, diff, dshape, 4));                                  /* [B*M,3,H,W] */
    for (int i = 0; i < n_scales; i++) {
        const int64_t h = scaled_size(H, scales[i]), w = scaled_size(W, scales[i]);
        dt_tensor down = d, norm = NULL, up = NULL;
        if (h != H || w != W) TRY(dt_interpolate(&down, d, h, w, DT_INTERP_AREA));   /* [B*M,3,h,w] Down_s */
        TRY(dt_norm2(&norm, down, 1, 1));                                  /* [B*M,1,h,w] L2 over RGB */
        up = norm;
        if (h != H || w != W) TRY(dt_interpolate(&up, norm, H, W, DT_INTERP_BILINEAR));  /* [B*M,1,H,W] Up */
        if (!acc) acc = up;
        else TRY(dt_add(&acc, acc, up));                                   /* [B*M,1,H,W] sum over scales */
    }
    {
        const int64_t mshape[4] = {B, M, H, W}, dim1[1] = {1};
        dt_tensor a4 = NULL, mean = NULL;
        TRY(dt_reshape(&a4, acc, mshape, 4));                              /* [B,M,H,W] */
        TRY(dt_mean(&mean, a4, dim1, 1, 1));                               /* [B,1,H,W] mean over grids, steps */
        TRY(dt_mul_scalar(&res, mean, 1.0 / n_scales));                    /* [B,1,H,W] and over scales, eq. (15) */
    }
done:
    if (st) drdc_error_context(st, "%s", fn);
    return dt_scope_finish(st, res, h_diff);
}

drdc_status drdc_fusion_mean_filter(dt_tensor *out, dt_tensor h, int f) {
    static const char *fn = "fusion mean filter";
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "%s: NULL output", fn);
    *out = NULL;
    int64_t hs[4];
    drdc_status st = check_map(h, fn, "map", hs);
    if (st) return st;
    if (f < 1 || f % 2 == 0) return drdc_fail(DRDC_ERR_INPUT, "%s: filter size %d, want an odd number >= 1", fn, f);
    if (f == 1) return dt_clone(out, h);
    st = dt_avg_pool2d(out, h, f, 1, f / 2, 0);                            /* [B,C,H,W] count_include_pad False */
    if (st) drdc_error_context(st, "%s (f = %d)", fn, f);
    return st;
}

static drdc_status check_stats(const char *fn, const char *which, const drdc_norm_stats *s) {
    if (!isfinite(s->mean) || !isfinite(s->std) || !(s->std > 0.0))
        return drdc_fail(DRDC_ERR_NUMERIC, "%s: %s statistics mean %g std %g cannot standardise (std must be finite and > 0)",
                         fn, which, s->mean, s->std);
    return DRDC_OK;
}

drdc_status drdc_fusion_standardize(dt_tensor *out, dt_tensor h, const drdc_norm_stats *stats) {
    static const char *fn = "fusion standardize";
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "%s: NULL output", fn);
    *out = NULL;
    if (!h) return drdc_fail(DRDC_ERR_INPUT, "%s: NULL map", fn);
    if (!stats) return dt_clone(out, h);
    drdc_status st = check_stats(fn, "the", stats);
    if (st) return st;
    dt_tensor c = NULL;
    TRY(dt_add_scalar(&c, h, -stats->mean));                               /* h - mean */
    TRY(dt_mul_scalar(out, c, 1.0 / stats->std));                          /* (h - mean) / std */
done:
    dt_free(c);
    return st;
}

/* The two maps of a blend: same shape, f32 [B,1,H,W]; alpha in [0,1]; usable statistics. */
static drdc_status check_blend(const char *fn, dt_tensor h_diff_f, dt_tensor h_base, double alpha,
                               const drdc_norm_stats *diff_stats, const drdc_norm_stats *base_stats) {
    int64_t ds[4], bs[4];
    drdc_status st = DRDC_OK;
    TRY(check_map(h_diff_f, fn, "diffusion map", ds));
    TRY(check_map(h_base, fn, "base map", bs));
    if (memcmp(ds, bs, sizeof ds))
        return drdc_fail(DRDC_ERR_INPUT, "%s: diffusion map [%lld,%lld,%lld,%lld] and base map [%lld,%lld,%lld,%lld] differ "
                         "(upsample the base map to the image size first)", fn, (long long)ds[0], (long long)ds[1],
                         (long long)ds[2], (long long)ds[3], (long long)bs[0], (long long)bs[1], (long long)bs[2],
                         (long long)bs[3]);
    if (!(alpha >= 0.0 && alpha <= 1.0)) return drdc_fail(DRDC_ERR_INPUT, "%s: alpha %g, want [0,1]", fn, alpha);
    if (diff_stats) TRY(check_stats(fn, "diffusion map", diff_stats));
    if (base_stats) TRY(check_stats(fn, "base map", base_stats));
done:
    return st;
}

drdc_status drdc_fusion_blend(dt_tensor *heat, dt_tensor h_diff_f, dt_tensor h_base, double alpha,
                              const drdc_norm_stats *diff_stats, const drdc_norm_stats *base_stats) {
    static const char *fn = "fusion blend";
    if (!heat) return drdc_fail(DRDC_ERR_INPUT, "%s: NULL output", fn);
    *heat = NULL;
    drdc_status st = check_blend(fn, h_diff_f, h_base, alpha, diff_stats, base_stats);
    if (st) return st;
    st = dt_scope_begin();
    if (st) return st;
    dt_tensor sd = NULL, sb = NULL, wd = NULL, wb = NULL, res = NULL;
    TRY(drdc_fusion_standardize(&sd, h_diff_f, diff_stats));               /* [B,1,H,W] */
    TRY(drdc_fusion_standardize(&sb, h_base, base_stats));                 /* [B,1,H,W] */
    TRY(dt_mul_scalar(&wd, sd, alpha));                                    /* a H'_diff */
    TRY(dt_mul_scalar(&wb, sb, 1.0 - alpha));                              /* (1 - a) H_base */
    TRY(dt_add(&res, wd, wb));                                             /* [B,1,H,W] eq. (17) */
done:
    if (st) drdc_error_context(st, "%s", fn);
    return dt_scope_finish(st, res, heat);
}

drdc_status drdc_fusion_image_score(dt_tensor *score, dt_tensor heat, int pool) {
    static const char *fn = "fusion image score";
    if (!score) return drdc_fail(DRDC_ERR_INPUT, "%s: NULL output", fn);
    *score = NULL;
    int64_t hs[4];
    drdc_status st = check_map(heat, fn, "heatmap", hs);
    if (st) return st;
    if (pool < 1) return drdc_fail(DRDC_ERR_INPUT, "%s: pool %d, want >= 1", fn, pool);
    int64_t p = pool;
    if (p > hs[2]) p = hs[2];
    if (p > hs[3]) p = hs[3];
    st = dt_scope_begin();
    if (st) return st;
    dt_tensor pooled = NULL, res = NULL;
    const int64_t dims[3] = {1, 2, 3};
    TRY(dt_avg_pool2d(&pooled, heat, p, 1, 0, 1));                         /* [B,C,H-p+1,W-p+1] */
    TRY(dt_amax(&res, pooled, dims, 3, 0));                                /* [B] */
done:
    if (st) drdc_error_context(st, "%s", fn);
    return dt_scope_finish(st, res, score);
}

drdc_status drdc_fusion_diffusion_heat(dt_tensor *h_diff_f, dt_tensor x, dt_tensor x_hat, const drdc_fusion_opts *o) {
    if (!h_diff_f) return drdc_fail(DRDC_ERR_INPUT, "fusion: NULL output");
    *h_diff_f = NULL;
    if (!o) return drdc_fail(DRDC_ERR_INPUT, "fusion: NULL options");
    dt_tensor h = NULL;
    drdc_status st = DRDC_OK;
    dt_tensor f = NULL, mean = NULL, mean_eps = NULL;
    TRY(drdc_fusion_diffusion_map(&h, x, x_hat, o->scales, o->n_scales));             /* [B,1,H,W] */
    TRY(drdc_fusion_mean_filter(&f, h, o->filter));                                    /* [B,1,H,W] */
    if (o->diff_norm) {
        const int64_t hw[2] = {2, 3};
        TRY(dt_mean(&mean, f, hw, 2, 1));                                              /* [B,1,1,1] */
        TRY(dt_add_scalar(&mean_eps, mean, 1e-12));
        TRY(dt_div(h_diff_f, f, mean_eps));                                            /* [B,1,H,W] */
    } else {
        *h_diff_f = f;
        f = NULL;
    }
done:
    dt_free(h);
    dt_free(f);
    dt_free(mean);
    dt_free(mean_eps);
    return st;
}

drdc_status drdc_fusion_final(dt_tensor *heat, dt_tensor *score, dt_tensor h_diff_f, dt_tensor h_base,
                              const drdc_fusion_opts *o) {
    if (heat) *heat = NULL;
    if (score) *score = NULL;
    if (!o) return drdc_fail(DRDC_ERR_INPUT, "fusion: NULL options");
    dt_tensor h = NULL, s = NULL;
    drdc_status st = DRDC_OK;
    TRY(drdc_fusion_blend(&h, h_diff_f, h_base, o->alpha, o->standardize ? &o->diff_stats : NULL,
                          o->standardize ? &o->base_stats : NULL));                    /* [B,1,H,W] eq. (17) */
    if (score) TRY(drdc_fusion_image_score(&s, h, o->pool));                           /* [B] */
    if (score) *score = s;
    if (heat) {
        *heat = h;
        h = NULL;
    }
done:
    dt_free(h);   /* not wanted, or a failure */
    return st;
}

/* ---- normal statistics ------------------------------------------------------------------------ */

void drdc_stats_reset(drdc_stats_acc *a) {
    if (a) memset(a, 0, sizeof *a);
}

/* Chan et al.: merges a batch (n, mean, m2) into the accumulator. */
static void merge(drdc_stats_acc *a, int64_t n, double mean, double m2) {
    if (n <= 0) return;
    const int64_t tot = a->n + n;
    const double delta = mean - a->mean;
    a->mean += delta * (double)n / (double)tot;
    a->m2 += m2 + delta * delta * (double)a->n * (double)n / (double)tot;
    a->n = tot;
}

drdc_status drdc_stats_add(drdc_stats_acc *a, dt_tensor maps) {
    static const char *fn = "normal statistics";
    if (!a || !maps) return drdc_fail(DRDC_ERR_INPUT, "%s: NULL argument", fn);
    const int64_t n = dt_numel(maps);
    if (n == 0) return DRDC_OK;
    drdc_status st = dt_scope_begin();
    if (st) return st;
    dt_tensor x64 = NULL, mean_t = NULL, c = NULL, sq = NULL, m2_t = NULL;
    double mean = 0, m2 = 0;
    TRY(dt_to_dtype(&x64, maps, DT_F64));                                  /* [...] f64 */
    TRY(dt_mean_all(&mean_t, x64));
    TRY(dt_item(&mean, mean_t));
    if (!isfinite(mean)) {
        st = drdc_fail(DRDC_ERR_NUMERIC, "%s: the maps hold NaN or infinite values", fn);
        goto done;
    }
    TRY(dt_add_scalar(&c, x64, -mean));                                    /* deviations */
    TRY(dt_square(&sq, c));
    TRY(dt_sum_all(&m2_t, sq));
    TRY(dt_item(&m2, m2_t));
    merge(a, n, mean, m2);
done:
    return dt_scope_finish(st, NULL, NULL);
}

drdc_status drdc_stats_add_host(drdc_stats_acc *a, const float *v, int64_t n) {
    if (!a || (!v && n > 0)) return drdc_fail(DRDC_ERR_INPUT, "normal statistics: NULL argument");
    if (n <= 0) return DRDC_OK;
    double mean = 0, m2 = 0;
    for (int64_t i = 0; i < n; i++) {                                      /* Welford within the batch */
        double x = v[i];
        if (!isfinite(x)) return drdc_fail(DRDC_ERR_NUMERIC, "normal statistics: value %lld is %g", (long long)i, x);
        double d = x - mean;
        mean += d / (double)(i + 1);
        m2 += d * (x - mean);
    }
    merge(a, n, mean, m2);
    return DRDC_OK;
}

drdc_status drdc_stats_get(const drdc_stats_acc *a, drdc_norm_stats *out) {
    if (!a || !out) return drdc_fail(DRDC_ERR_INPUT, "normal statistics: NULL argument");
    if (a->n <= 0) return drdc_fail(DRDC_ERR_NUMERIC, "normal statistics: no values were added");
    out->mean = a->mean;
    out->std = sqrt(a->m2 > 0 ? a->m2 / (double)a->n : 0.0);
    if (!(out->std > 0.0))
        return drdc_fail(DRDC_ERR_NUMERIC, "normal statistics: the %lld values are all equal (%g): std 0 cannot standardise",
                         (long long)a->n, a->mean);
    return DRDC_OK;
}

static int cmp_double(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

drdc_status drdc_quantile(double *out, const double *v, int64_t n, double q) {
    if (!out || !v) return drdc_fail(DRDC_ERR_INPUT, "quantile: NULL argument");
    if (n < 1) return drdc_fail(DRDC_ERR_INPUT, "quantile: no values");
    if (!(q >= 0.0 && q <= 1.0)) return drdc_fail(DRDC_ERR_INPUT, "quantile: q = %g, want [0,1]", q);
    double *s = malloc(sizeof(double) * (size_t)n);
    if (!s) return drdc_fail(DRDC_ERR_NOMEM, "quantile: out of memory for %lld values", (long long)n);
    drdc_status st = DRDC_OK;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(v[i])) {
            st = drdc_fail(DRDC_ERR_NUMERIC, "quantile: value %lld is %g", (long long)i, v[i]);
            goto done;
        }
        s[i] = v[i];
    }
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    const double pos = q * (double)(n - 1);
    int64_t lo = (int64_t)floor(pos);
    if (lo > n - 1) lo = n - 1;
    const int64_t hi = lo + 1 < n ? lo + 1 : lo;
    const double frac = pos - (double)lo;
    *out = s[lo] + (s[hi] - s[lo]) * frac;
done:
    free(s);
    return st;
}
