/* test_shim.c: the libtorch shim (include/drdc/shim/shim.h), compiled as C: values of each group
 * of ops on small hand-checked inputs, error reporting, handle leaks and scopes, autograd, AdamW
 * against the formulas in double precision, gradient clipping, generator determinism (row
 * generators too) and device parsing. Being C, this file also proves the public header compiles as C. */
#include "testlib.h"
#include "drdc/shim/shim.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const dt_device CPU = {DT_CPU, 0};

/* ---- helpers ------------------------------------------------------------------------- */

static dt_tensor mk(const float *v, const int64_t *shape, int nd) {
    dt_tensor t = NULL;
    CHECK_OK(dt_from_host(&t, v, DT_F32, shape, nd, CPU));
    return t;
}

/* Copies t (any dtype) into out as floats; returns the element count, or -1. */
static int64_t get_floats(dt_tensor t, float *out, int64_t cap) {
    dt_tensor f = NULL;
    if (!t || dt_to_dtype(&f, t, DT_F32) != DRDC_OK) return -1;
    int64_t n = dt_numel(f);
    drdc_status st = n <= cap ? dt_copy_to_host(f, out, (size_t)n * sizeof(float)) : DRDC_ERR_INPUT;
    dt_free(f);
    return st == DRDC_OK ? n : -1;
}

/* Copies t (any dtype) into out as doubles; returns the element count, or -1. */
static int64_t get_doubles(dt_tensor t, double *out, int64_t cap) {
    dt_tensor f = NULL;
    if (!t || dt_to_dtype(&f, t, DT_F64) != DRDC_OK) return -1;
    int64_t n = dt_numel(f);
    drdc_status st = n <= cap ? dt_copy_to_host(f, out, (size_t)n * sizeof(double)) : DRDC_ERR_INPUT;
    dt_free(f);
    return st == DRDC_OK ? n : -1;
}

static int close_to(dt_tensor t, const double *want, int64_t n, double tol) {
    double got[512];
    int64_t m = get_doubles(t, got, 512);
    if (m != n) {
        fprintf(stderr, "  got %lld elements, want %lld (%s)\n", (long long)m, (long long)n, drdc_last_error());
        return 0;
    }
    int ok = 1;
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= tol)) {
            fprintf(stderr, "  [%lld] got %.12g, want %.12g\n", (long long)i, got[i], want[i]);
            ok = 0;
        }
    return ok;
}

static int shape_is(dt_tensor t, const int64_t *want, int n) {
    int64_t s[16];
    if (!t || dt_ndim(t) != n || dt_shape(s, 16, t) != DRDC_OK) return 0;
    for (int i = 0; i < n; i++)
        if (s[i] != want[i]) return 0;
    return 1;
}

#define NARGS_D(...) ((int64_t)(sizeof((double[]){__VA_ARGS__}) / sizeof(double)))
#define CHECK_VALS(t, tol, ...) CHECK(close_to((t), (const double[]){__VA_ARGS__}, NARGS_D(__VA_ARGS__), (tol)))
#define CHECK_SHAPE(t, ...) \
    CHECK(shape_is((t), (const int64_t[]){__VA_ARGS__}, (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))))

/* x [2,3] = [[0,1,2],[3,4,5]] */
static dt_tensor x23(void) {
    static const float v[] = {0, 1, 2, 3, 4, 5};
    return mk(v, (const int64_t[]){2, 3}, 2);
}

/* ---- creation, info, host copies ----------------------------------------------------- */

static void test_creation_and_info(void) {
    CHECK_OK(dt_scope_begin());
    dt_tensor x = x23(), t;
    CHECK(dt_ndim(x) == 2);
    CHECK(dt_numel(x) == 6);
    CHECK(dt_dtype_of(x) == DT_F32);
    CHECK(dt_device_of(x).type == DT_CPU);
    CHECK(dt_requires_grad(x) == 0);
    int64_t s;
    CHECK_OK(dt_size(&s, x, 1));
    CHECK(s == 3);
    CHECK_OK(dt_size(&s, x, -2));
    CHECK(s == 2);
    CHECK_ERR(dt_size(&s, x, 5), DRDC_ERR_TORCH, "dt_size");
    int64_t sh[1];
    CHECK_ERR(dt_shape(sh, 1, x), DRDC_ERR_INPUT, "cap");

    CHECK_OK(dt_zeros(&t, (const int64_t[]){2, 2}, 2, DT_F32, CPU));
    CHECK_VALS(t, 0, 0, 0, 0, 0);
    CHECK_OK(dt_ones(&t, (const int64_t[]){3}, 1, DT_F64, CPU));
    CHECK(dt_dtype_of(t) == DT_F64);
    CHECK_VALS(t, 0, 1, 1, 1);
    CHECK_OK(dt_full(&t, (const int64_t[]){2}, 1, 3.5, DT_F32, CPU));
    CHECK_VALS(t, 0, 3.5, 3.5);
    CHECK_OK(dt_arange(&t, 0, 5, 2, DT_I64, CPU));
    CHECK(dt_dtype_of(t) == DT_I64);
    CHECK_VALS(t, 0, 0, 2, 4);
    CHECK_OK(dt_zeros_like(&t, x));
    CHECK_SHAPE(t, 2, 3);
    CHECK_VALS(t, 0, 0, 0, 0, 0, 0, 0);
    CHECK_OK(dt_ones_like(&t, x));
    CHECK_VALS(t, 0, 1, 1, 1, 1, 1, 1);
    CHECK_OK(dt_zeros(&t, NULL, 0, DT_F32, CPU)); /* a 0-dim scalar */
    CHECK(dt_ndim(t) == 0 && dt_numel(t) == 1);

    /* a transposed (non-contiguous) tensor comes back in logical order */
    CHECK_OK(dt_transpose(&t, x, 0, 1));
    float got[6];
    CHECK_OK(dt_copy_to_host(t, got, sizeof got));
    CHECK(got[0] == 0 && got[1] == 3 && got[2] == 1 && got[3] == 4 && got[4] == 2 && got[5] == 5);
    CHECK_ERR(dt_copy_to_host(t, got, sizeof got - 4), DRDC_ERR_INPUT, "bytes");

    double item;
    CHECK_OK(dt_sum_all(&t, x));
    CHECK_OK(dt_item(&item, t));
    CHECK(item == 15.0);
    CHECK_ERR(dt_item(&item, x), DRDC_ERR_TORCH, "dt_item");
    CHECK_OK(dt_scope_end());
}

static void test_dtypes_round_trip(void) {
    CHECK_OK(dt_scope_begin());
    const int64_t two[] = {2};
    int64_t i64[2] = {5, -7}, i64b[2] = {0, 0};
    int32_t i32[2] = {1 << 30, -3}, i32b[2];
    uint8_t u8[2] = {0, 255}, u8b[2];
    uint8_t bl[2] = {1, 0}, blb[2];
    double f64[2] = {1e-300, -2.5}, f64b[2];
    dt_tensor t;
    CHECK_OK(dt_from_host(&t, i64, DT_I64, two, 1, CPU));
    CHECK_OK(dt_copy_to_host(t, i64b, sizeof i64b));
    CHECK(i64b[0] == 5 && i64b[1] == -7);
    CHECK_OK(dt_from_host(&t, i32, DT_I32, two, 1, CPU));
    CHECK_OK(dt_copy_to_host(t, i32b, sizeof i32b));
    CHECK(i32b[0] == i32[0] && i32b[1] == -3);
    CHECK_OK(dt_from_host(&t, u8, DT_U8, two, 1, CPU));
    CHECK_OK(dt_copy_to_host(t, u8b, sizeof u8b));
    CHECK(u8b[0] == 0 && u8b[1] == 255);
    CHECK_OK(dt_from_host(&t, bl, DT_BOOL, two, 1, CPU));
    CHECK(dt_dtype_of(t) == DT_BOOL);
    CHECK_OK(dt_copy_to_host(t, blb, sizeof blb));
    CHECK(blb[0] == 1 && blb[1] == 0);
    CHECK_OK(dt_from_host(&t, f64, DT_F64, two, 1, CPU));
    CHECK_OK(dt_copy_to_host(t, f64b, sizeof f64b));
    CHECK(f64b[0] == 1e-300 && f64b[1] == -2.5);

    /* casts: float -> int truncates toward zero; bf16 and f16 keep small integers exactly */
    dt_tensor f = mk((const float[]){1.7f, -2.5f}, two, 1), c;
    CHECK_OK(dt_to_dtype(&c, f, DT_I64));
    CHECK_OK(dt_copy_to_host(c, i64b, sizeof i64b));
    CHECK(i64b[0] == 1 && i64b[1] == -2);
    CHECK_OK(dt_to_dtype(&c, f, DT_BF16));
    CHECK(dt_dtype_of(c) == DT_BF16);
    CHECK_VALS(c, 0.02, 1.7, -2.5);
    CHECK_OK(dt_to_dtype(&c, f, DT_F16));
    CHECK_VALS(c, 0.002, 1.7, -2.5);
    CHECK(dt_dtype_size(DT_F32) == 4 && dt_dtype_size(DT_BF16) == 2 && dt_dtype_size(DT_I64) == 8 &&
          dt_dtype_size(DT_BOOL) == 1);
    CHECK(strcmp(dt_dtype_name(DT_BF16), "bf16") == 0);

    /* moves on the CPU: clone is a copy, detach shares storage */
    dt_tensor cl, de, moved, fours;
    CHECK_OK(dt_clone(&cl, f));
    CHECK_OK(dt_detach(&de, f));
    CHECK_OK(dt_to_device(&moved, f, CPU));
    CHECK_OK(dt_full(&fours, two, 1, 4.0, DT_F32, CPU));
    CHECK_OK(dt_copy_(de, fours));
    CHECK_VALS(f, 0, 4, 4);
    CHECK_VALS(cl, 1e-6, 1.7, -2.5);
    CHECK_OK(dt_copy_(f, cl));
    CHECK_VALS(f, 1e-6, 1.7, -2.5);
    CHECK_OK(dt_contiguous(&c, f));
    CHECK_VALS(c, 1e-6, 1.7, -2.5);
    CHECK_OK(dt_scope_end());
}

/* ---- arithmetic and reductions ------------------------------------------------------- */

static void test_arithmetic(void) {
    CHECK_OK(dt_scope_begin());
    dt_tensor a = mk((const float[]){1, 4, 9}, (const int64_t[]){3}, 1);
    dt_tensor b = mk((const float[]){1, 2}, (const int64_t[]){2, 1}, 2);
    dt_tensor t, c;
    CHECK_OK(dt_add(&t, a, b)); /* broadcast [3] with [2,1] -> [2,3] */
    CHECK_SHAPE(t, 2, 3);
    CHECK_VALS(t, 0, 2, 5, 10, 3, 6, 11);
    CHECK_OK(dt_sub(&t, a, b));
    CHECK_VALS(t, 0, 0, 3, 8, -1, 2, 7);
    CHECK_OK(dt_mul(&t, a, b));
    CHECK_VALS(t, 0, 1, 4, 9, 2, 8, 18);
    CHECK_OK(dt_div(&t, a, b));
    CHECK_VALS(t, 1e-6, 1, 4, 9, 0.5, 2, 4.5);
    CHECK_OK(dt_add_scalar(&t, a, 1));
    CHECK_VALS(t, 0, 2, 5, 10);
    CHECK_OK(dt_mul_scalar(&t, a, -2));
    CHECK_VALS(t, 0, -2, -8, -18);
    CHECK_OK(dt_sqrt(&t, a));
    CHECK_VALS(t, 1e-6, 1, 2, 3);
    CHECK_OK(dt_exp(&t, a));
    CHECK_VALS(t, 1e-2, exp(1), exp(4), exp(9));
    CHECK_OK(dt_neg(&t, a));
    CHECK_VALS(t, 0, -1, -4, -9);
    CHECK_OK(dt_square(&t, a));
    CHECK_VALS(t, 0, 1, 16, 81);
    CHECK_OK(dt_clamp(&t, a, 2, 5));
    CHECK_VALS(t, 0, 2, 4, 5);
    CHECK_OK(dt_clamp(&t, a, -INFINITY, 5));
    CHECK_VALS(t, 0, 1, 4, 5);

    /* in place */
    CHECK_OK(dt_clone(&c, a));
    CHECK_OK(dt_add_(c, a, 2));
    CHECK_VALS(c, 0, 3, 12, 27);
    CHECK_OK(dt_zeros_like(&t, c));
    CHECK_OK(dt_lerp_(c, t, 0.5)); /* c + 0.5 * (0 - c) */
    CHECK_VALS(c, 1e-6, 1.5, 6, 13.5);
    CHECK_VALS(a, 0, 1, 4, 9); /* inputs untouched */
    CHECK_OK(dt_scope_end());
}

static void test_reductions(void) {
    CHECK_OK(dt_scope_begin());
    dt_tensor x = mk((const float[]){1, 2, 3, 4, 5, 6}, (const int64_t[]){2, 3}, 2), t;
    const int64_t d1[] = {1}, d0[] = {0}, d01[] = {0, 1};
    CHECK_OK(dt_sum(&t, x, d1, 1, 0));
    CHECK_SHAPE(t, 2);
    CHECK_VALS(t, 0, 6, 15);
    CHECK_OK(dt_sum(&t, x, d1, 1, 1));
    CHECK_SHAPE(t, 2, 1);
    CHECK_OK(dt_sum(&t, x, d01, 2, 0));
    CHECK(dt_ndim(t) == 0);
    CHECK_VALS(t, 0, 21);
    CHECK_ERR(dt_sum(&t, x, d1, 0, 0), DRDC_ERR_INPUT, "at least one dim");
    CHECK_OK(dt_mean(&t, x, d0, 1, 0));
    CHECK_VALS(t, 1e-6, 2.5, 3.5, 4.5);
    CHECK_OK(dt_sum_all(&t, x));
    CHECK_VALS(t, 0, 21);
    CHECK_OK(dt_mean_all(&t, x));
    CHECK_VALS(t, 1e-6, 3.5);
    CHECK_OK(dt_max_all(&t, x));
    CHECK_VALS(t, 0, 6);
    CHECK_OK(dt_min_all(&t, x));
    CHECK_VALS(t, 0, 1);
    CHECK_OK(dt_amax(&t, x, d1, 1, 0));
    CHECK_VALS(t, 0, 3, 6);
    dt_tensor y = mk((const float[]){3, 4, 6, 8}, (const int64_t[]){2, 2}, 2);
    CHECK_OK(dt_norm2(&t, y, 1, 0));
    CHECK_VALS(t, 1e-6, 5, 10);
    CHECK_OK(dt_norm2(&t, y, 0, 1));
    CHECK_SHAPE(t, 1, 2);
    CHECK_VALS(t, 1e-5, sqrt(45), sqrt(80));
    CHECK_OK(dt_scope_end());
}

/* dt_norm2 on each of its paths: float (sqrt of the summed squares), bf16 (linalg's), and with
 * a gradient (linalg's: 0 at a zero vector, where sqrt's would be infinite or NaN). */
static void test_norm2_paths(void) {
    CHECK_OK(dt_scope_begin());
    enum { B = 2, C = 3, HW = 5 };
    float v[B * C * HW];
    double want[B * HW];
    for (int i = 0; i < B * C * HW; i++) v[i] = (float)sin(1.3 * i + 0.2) * (float)(1 + i % 7);
    for (int b = 0; b < B; b++)
        for (int p = 0; p < HW; p++) {
            double s = 0;
            for (int c = 0; c < C; c++) s += (double)v[(b * C + c) * HW + p] * v[(b * C + c) * HW + p];
            want[b * HW + p] = sqrt(s);
        }
    dt_tensor x = mk(v, (const int64_t[]){B, C, HW}, 3), t, xb, g, l;
    CHECK_OK(dt_norm2(&t, x, 1, 1));
    CHECK_SHAPE(t, B, 1, HW);
    CHECK(close_to(t, want, B * HW, 1e-6 * 7));
    CHECK(dt_dtype_of(t) == DT_F32);
    CHECK_OK(dt_to_dtype(&xb, x, DT_BF16));
    CHECK_OK(dt_norm2(&t, xb, 1, 0));
    CHECK(dt_dtype_of(t) == DT_BF16);
    CHECK(close_to(t, want, B * HW, 0.01 * 7 * 2));
    dt_tensor z = mk((const float[]){0, 0, 0, 3, 4, 0}, (const int64_t[]){2, 3}, 2);
    CHECK_OK(dt_set_requires_grad(z, 1));
    CHECK_OK(dt_norm2(&t, z, 1, 0));
    CHECK_VALS(t, 1e-6, 0, 5);
    CHECK_OK(dt_sum_all(&l, t));
    CHECK_OK(dt_backward(l));
    CHECK_OK(dt_grad(&g, z));
    CHECK_VALS(g, 1e-6, 0, 0, 0, 0.6, 0.8, 0);
    CHECK_OK(dt_scope_end());
}

/* ---- nn ------------------------------------------------------------------------------ */

/* Naive reference convolution, x [1,Cin,H,W], w [Cout,Cin/g,K,K]. */
static void ref_conv(const float *x, int cin, int h, int w_, const float *w, const float *b, int cout, int k,
                     int stride, int pad, int dil, int groups, double *out, int *oh, int *ow) {
    *oh = (h + 2 * pad - dil * (k - 1) - 1) / stride + 1;
    *ow = (w_ + 2 * pad - dil * (k - 1) - 1) / stride + 1;
    int cin_g = cin / groups, cout_g = cout / groups;
    for (int co = 0; co < cout; co++)
        for (int i = 0; i < *oh; i++)
            for (int j = 0; j < *ow; j++) {
                double s = b ? b[co] : 0;
                int g = co / cout_g;
                for (int ci = 0; ci < cin_g; ci++)
                    for (int u = 0; u < k; u++)
                        for (int v = 0; v < k; v++) {
                            int y = i * stride - pad + u * dil, xx = j * stride - pad + v * dil;
                            if (y < 0 || y >= h || xx < 0 || xx >= w_) continue;
                            s += x[((g * cin_g + ci) * h + y) * w_ + xx] * w[((co * cin_g + ci) * k + u) * k + v];
                        }
                out[(co * *oh + i) * *ow + j] = s;
            }
}

static void test_conv2d(void) {
    CHECK_OK(dt_scope_begin());
    float xv[2 * 4 * 4];
    for (int i = 0; i < 32; i++) xv[i] = (float)i;
    dt_tensor x = mk(xv, (const int64_t[]){1, 2, 4, 4}, 4), t;
    /* depthwise (groups 2), stride 2, bias */
    const float wv[] = {1, 2, 3, 4, 1, 0, 0, -1}, bv[] = {0.5f, -1};
    dt_tensor w = mk(wv, (const int64_t[]){2, 1, 2, 2}, 4), b = mk(bv, (const int64_t[]){2}, 1);
    CHECK_OK(dt_conv2d(&t, x, w, b, 2, 2, 0, 0, 1, 1, 2));
    CHECK_SHAPE(t, 1, 2, 2, 2);
    /* out[0,0,0,0] by hand: 0*1 + 1*2 + 4*3 + 5*4 + 0.5; out[0,1,0,0]: 16 - 21 - 1 */
    float got[64];
    CHECK(get_floats(t, got, 64) == 8);
    CHECK(got[0] == 34.5f && got[4] == -6.0f);
    double want[64];
    int oh, ow;
    ref_conv(xv, 2, 4, 4, wv, bv, 2, 2, 2, 0, 1, 2, want, &oh, &ow);
    CHECK(close_to(t, want, 8, 1e-4));
    /* dense 3x3 with padding 1 and dilation 2, no bias, 2 -> 3 channels */
    float w3[3 * 2 * 9];
    for (int i = 0; i < 54; i++) w3[i] = (float)((i * 7) % 5 - 2) * 0.25f;
    dt_tensor w3t = mk(w3, (const int64_t[]){3, 2, 3, 3}, 4);
    CHECK_OK(dt_conv2d(&t, x, w3t, NULL, 1, 1, 1, 1, 2, 2, 1));
    ref_conv(xv, 2, 4, 4, w3, NULL, 3, 3, 1, 1, 2, 1, want, &oh, &ow);
    CHECK(oh == 2 && ow == 2);
    CHECK_SHAPE(t, 1, 3, 2, 2);
    CHECK(close_to(t, want, 12, 1e-4));
    /* constant_pad_nd: left 1, bottom 1 with 9 */
    dt_tensor p = mk((const float[]){1, 2}, (const int64_t[]){1, 1, 1, 2}, 4);
    CHECK_OK(dt_constant_pad_nd(&t, p, 1, 0, 0, 1, 9));
    CHECK_SHAPE(t, 1, 1, 2, 3);
    CHECK_VALS(t, 0, 9, 1, 2, 9, 9, 9);
    CHECK_OK(dt_scope_end());
}

static void test_linear_bmm(void) {
    CHECK_OK(dt_scope_begin());
    dt_tensor x = mk((const float[]){1, 2}, (const int64_t[]){1, 2}, 2), t;
    dt_tensor w = mk((const float[]){1, 0, 0, 1, 1, 1}, (const int64_t[]){3, 2}, 2);
    dt_tensor b = mk((const float[]){0, 0, 1}, (const int64_t[]){3}, 1);
    CHECK_OK(dt_linear(&t, x, w, b));
    CHECK_SHAPE(t, 1, 3);
    CHECK_VALS(t, 0, 1, 2, 4);
    CHECK_OK(dt_linear(&t, x, w, NULL));
    CHECK_VALS(t, 0, 1, 2, 3);
    dt_tensor m = mk((const float[]){1, 2, 3, 4}, (const int64_t[]){2, 2}, 2);
    dt_tensor v = mk((const float[]){1, 10}, (const int64_t[]){2, 1}, 2);
    dt_tensor m3, v3;
    CHECK_OK(dt_unsqueeze(&m3, m, 0));
    CHECK_OK(dt_unsqueeze(&v3, v, 0));
    CHECK_OK(dt_bmm(&t, m3, v3));
    CHECK_SHAPE(t, 1, 2, 1);
    CHECK_VALS(t, 0, 21, 43);
    dt_tensor l = mk((const float[]){1, 2}, (const int64_t[]){2}, 1), r = mk((const float[]){3, 2}, (const int64_t[]){2}, 1);
    CHECK_OK(dt_mse_loss(&t, l, r));
    CHECK_VALS(t, 1e-6, 2); /* (4 + 0) / 2 */
    CHECK_OK(dt_scope_end());
}

static void test_softmax_and_norms(void) {
    CHECK_OK(dt_scope_begin());
    dt_tensor x = mk((const float[]){1, 2, 3}, (const int64_t[]){1, 3}, 2), t;
    double z = exp(1) + exp(2) + exp(3);
    CHECK_OK(dt_softmax(&t, x, -1));
    CHECK_VALS(t, 1e-6, exp(1) / z, exp(2) / z, exp(3) / z);

    /* layer_norm over the last dim: mean 2.5, biased var 1.25 */
    dt_tensor l = mk((const float[]){1, 2, 3, 4}, (const int64_t[]){1, 4}, 2);
    dt_tensor w = mk((const float[]){1, 1, 2, 2}, (const int64_t[]){4}, 1), b = mk((const float[]){0, 0, 0, 1}, (const int64_t[]){4}, 1);
    double sd = sqrt(1.25 + 1e-5);
    CHECK_OK(dt_layer_norm(&t, l, 1, NULL, NULL, 1e-5));
    CHECK_VALS(t, 1e-5, -1.5 / sd, -0.5 / sd, 0.5 / sd, 1.5 / sd);
    CHECK_OK(dt_layer_norm(&t, l, 1, w, b, 1e-5));
    CHECK_VALS(t, 1e-5, -1.5 / sd, -0.5 / sd, 1.0 / sd, 3.0 / sd + 1);
    CHECK_OK(dt_layer_norm(&t, l, 2, NULL, NULL, 1e-5)); /* over both dims: same numbers here */
    CHECK_VALS(t, 1e-5, -1.5 / sd, -0.5 / sd, 0.5 / sd, 1.5 / sd);
    CHECK_ERR(dt_layer_norm(&t, l, 3, NULL, NULL, 1e-5), DRDC_ERR_INPUT, "n_norm_dims");

    /* group_norm, 2 groups of 2 channels: (1,3) mean 2 var 1; (10,20) mean 15 var 25 */
    dt_tensor g = mk((const float[]){1, 3, 10, 20}, (const int64_t[]){1, 4, 1, 1}, 4);
    CHECK_OK(dt_group_norm(&t, g, 2, NULL, NULL, 1e-5));
    CHECK_VALS(t, 1e-5, -1 / sqrt(1 + 1e-5), 1 / sqrt(1 + 1e-5), -5 / sqrt(25 + 1e-5), 5 / sqrt(25 + 1e-5));
    dt_tensor gw = mk((const float[]){1, 2, 3, 4}, (const int64_t[]){4}, 1), gb = mk((const float[]){0, 0, 0, 1}, (const int64_t[]){4}, 1);
    CHECK_OK(dt_group_norm(&t, g, 2, gw, gb, 0));
    CHECK_VALS(t, 1e-5, -1, 2, -3, 5);

    /* batch norm with running stats: (x - mean) / sqrt(var + eps) * w + b */
    dt_tensor bx = mk((const float[]){1, 2}, (const int64_t[]){1, 2, 1, 1}, 4);
    dt_tensor rm = mk((const float[]){0, 1}, (const int64_t[]){2}, 1), rv = mk((const float[]){4, 1}, (const int64_t[]){2}, 1);
    dt_tensor bw = mk((const float[]){2, 1}, (const int64_t[]){2}, 1), bb = mk((const float[]){0, 1}, (const int64_t[]){2}, 1);
    CHECK_OK(dt_batch_norm_eval(&t, bx, rm, rv, bw, bb, 0));
    CHECK_VALS(t, 1e-6, 1, 2);
    CHECK_OK(dt_batch_norm_eval(&t, bx, rm, rv, NULL, NULL, 1e-3));
    CHECK_VALS(t, 1e-6, 1 / sqrt(4.001), 1 / sqrt(1.001));
    CHECK_ERR(dt_batch_norm_eval(&t, bx, NULL, rv, NULL, NULL, 1e-3), DRDC_ERR_INPUT, "running_mean");
    CHECK_OK(dt_scope_end());
}

static void test_activations(void) {
    CHECK_OK(dt_scope_begin());
    const double v[] = {-1, 0, 1, 7};
    dt_tensor x = mk((const float[]){-1, 0, 1, 7}, (const int64_t[]){4}, 1), t;
    double w[4];
    CHECK_OK(dt_relu(&t, x));
    CHECK_VALS(t, 0, 0, 0, 1, 7);
    CHECK_OK(dt_relu6(&t, x));
    CHECK_VALS(t, 0, 0, 0, 1, 6);
    CHECK_OK(dt_silu(&t, x));
    for (int i = 0; i < 4; i++) w[i] = v[i] / (1 + exp(-v[i]));
    CHECK(close_to(t, w, 4, 1e-6));
    CHECK_OK(dt_sigmoid(&t, x));
    for (int i = 0; i < 4; i++) w[i] = 1 / (1 + exp(-v[i]));
    CHECK(close_to(t, w, 4, 1e-6));
    CHECK_OK(dt_tanh(&t, x));
    for (int i = 0; i < 4; i++) w[i] = tanh(v[i]);
    CHECK(close_to(t, w, 4, 1e-6));
    CHECK_OK(dt_scope_end());
}

static void test_dropout(void) {
    CHECK_OK(dt_scope_begin());
    const int64_t n[] = {1000};
    dt_tensor x, a, b;
    dt_generator g1, g2;
    CHECK_OK(dt_ones(&x, n, 1, DT_F32, CPU));
    CHECK_OK(dt_dropout(&a, x, 0.25, 0, NULL)); /* eval: identity */
    CHECK_OK(dt_sum_all(&b, a));
    CHECK_VALS(b, 0, 1000);
    CHECK_OK(dt_generator_new(&g1, 1));
    CHECK_OK(dt_generator_new(&g2, 1));
    CHECK_OK(dt_dropout(&a, x, 0.25, 1, g1));
    CHECK_OK(dt_dropout(&b, x, 0.25, 1, g2));
    static float fa[1000], fb[1000];
    CHECK(get_floats(a, fa, 1000) == 1000 && get_floats(b, fb, 1000) == 1000);
    int zeros = 0, same = 1, scaled = 1;
    for (int i = 0; i < 1000; i++) {
        zeros += fa[i] == 0;
        same &= fa[i] == fb[i];
        scaled &= fa[i] == 0 || fabs(fa[i] - 1 / 0.75) < 1e-6;
    }
    CHECK(same);   /* same seed, same mask */
    CHECK(scaled); /* kept values scaled by 1/(1-p) */
    CHECK(zeros > 150 && zeros < 350);
    CHECK_ERR(dt_dropout(&a, x, 1.5, 1, g1), DRDC_ERR_INPUT, "probability");
    dt_generator_free(g1);
    dt_generator_free(g2);
    CHECK_OK(dt_scope_end());
}

static void test_pooling_and_interpolate(void) {
    CHECK_OK(dt_scope_begin());
    float xv[16];
    for (int i = 0; i < 16; i++) xv[i] = (float)i;
    dt_tensor x = mk(xv, (const int64_t[]){1, 1, 4, 4}, 4), t;
    CHECK_OK(dt_avg_pool2d(&t, x, 2, 2, 0, 1));
    CHECK_VALS(t, 1e-6, 2.5, 4.5, 10.5, 12.5);
    /* padding 1: window (0,1) covers padding plus x[0][1], x[0][2] = 1 + 2 */
    CHECK_OK(dt_avg_pool2d(&t, x, 2, 2, 1, 1));
    CHECK_SHAPE(t, 1, 1, 3, 3);
    float got[16];
    CHECK(get_floats(t, got, 16) == 9);
    CHECK(fabs(got[1] - 0.75) < 1e-6);
    CHECK_OK(dt_avg_pool2d(&t, x, 2, 2, 1, 0));
    CHECK(get_floats(t, got, 16) == 9);
    CHECK(fabs(got[1] - 1.5) < 1e-6);
    CHECK_OK(dt_adaptive_avg_pool2d(&t, x, 1, 1));
    CHECK_VALS(t, 1e-6, 7.5);

    dt_tensor s = mk((const float[]){0, 1, 2, 3}, (const int64_t[]){1, 1, 2, 2}, 4);
    /* align_corners = true, 2x2 -> 3x3: corners kept, midpoints averaged */
    CHECK_OK(dt_interpolate(&t, s, 3, 3, DT_INTERP_BILINEAR_AC));
    CHECK_SHAPE(t, 1, 1, 3, 3);
    CHECK_VALS(t, 1e-6, 0, 0.5, 1, 1, 1.5, 2, 2, 2.5, 3);
    /* align_corners = false, 2x2 -> 4x4: source x = (i + 0.5) / 2 - 0.5 clamped to [0, 1]
     * gives weights 0, 0.25, 0.75, 1 per axis; value = 2 * ry + rx */
    CHECK_OK(dt_interpolate(&t, s, 4, 4, DT_INTERP_BILINEAR));
    const double r[4] = {0, 0.25, 0.75, 1};
    double want[16];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) want[i * 4 + j] = 2 * r[i] + r[j];
    CHECK(close_to(t, want, 16, 1e-6));
    /* nearest: source index floor(i / 2) */
    CHECK_OK(dt_interpolate(&t, s, 4, 4, DT_INTERP_NEAREST));
    CHECK_VALS(t, 0, 0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3);
    /* area 4x4 -> 2x2: block means */
    CHECK_OK(dt_interpolate(&t, x, 2, 2, DT_INTERP_AREA));
    CHECK_VALS(t, 1e-6, 2.5, 4.5, 10.5, 12.5);
    CHECK_ERR(dt_interpolate(&t, s, 2, 2, (dt_interp_mode)9), DRDC_ERR_INPUT, "mode");
    dt_tensor flat = mk(xv, (const int64_t[]){16}, 1);
    CHECK_ERR(dt_interpolate(&t, flat, 2, 2, DT_INTERP_BILINEAR), DRDC_ERR_INPUT, "[16]");
    CHECK_OK(dt_scope_end());
}

/* ---- shape ops ----------------------------------------------------------------------- */

static void test_shape_ops(void) {
    CHECK_OK(dt_scope_begin());
    dt_tensor x = x23(), t, u;
    dt_tensor pair[2] = {x, x};
    CHECK_OK(dt_cat(&t, pair, 2, 0));
    CHECK_SHAPE(t, 4, 3);
    CHECK_OK(dt_cat(&t, pair, 2, 1));
    CHECK_VALS(t, 0, 0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5);
    CHECK_OK(dt_stack(&t, pair, 2, 0));
    CHECK_SHAPE(t, 2, 2, 3);
    CHECK_OK(dt_narrow(&t, x, 1, 1, 2));
    CHECK_VALS(t, 0, 1, 2, 4, 5);
    int64_t iv[] = {2, 0};
    dt_tensor idx;
    CHECK_OK(dt_from_host(&idx, iv, DT_I64, (const int64_t[]){2}, 1, CPU));
    CHECK_OK(dt_index_select(&t, x, 1, idx));
    CHECK_VALS(t, 0, 2, 0, 5, 3);
    CHECK_OK(dt_reshape(&t, x, (const int64_t[]){3, -1}, 2));
    CHECK_SHAPE(t, 3, 2);
    CHECK_ERR(dt_reshape(&t, x, (const int64_t[]){4, -1}, 2), DRDC_ERR_TORCH, "dt_reshape");
    CHECK_OK(dt_permute(&t, x, (const int64_t[]){1, 0}, 2));
    CHECK_SHAPE(t, 3, 2);
    CHECK_VALS(t, 0, 0, 3, 1, 4, 2, 5);
    CHECK_OK(dt_reshape(&u, t, (const int64_t[]){6}, 1)); /* not contiguous: reshape copies */
    CHECK_VALS(u, 0, 0, 3, 1, 4, 2, 5);
    CHECK_OK(dt_unsqueeze(&t, x, 0));
    CHECK_SHAPE(t, 1, 2, 3);
    CHECK_OK(dt_squeeze(&u, t, 0));
    CHECK_SHAPE(u, 2, 3);
    dt_tensor row = mk((const float[]){7, 8, 9}, (const int64_t[]){1, 3}, 2);
    CHECK_OK(dt_expand(&t, row, (const int64_t[]){2, -1}, 2));
    CHECK_VALS(t, 0, 7, 8, 9, 7, 8, 9);

    /* topk: values and/or i64 indices; either output may be NULL */
    dt_tensor s = mk((const float[]){3, 1, 2}, (const int64_t[]){3}, 1), vals, inds;
    CHECK_OK(dt_topk(&vals, &inds, s, 2, 0, 1));
    CHECK_VALS(vals, 0, 3, 2);
    CHECK(dt_dtype_of(inds) == DT_I64);
    CHECK_VALS(inds, 0, 0, 2);
    CHECK_OK(dt_topk(&vals, NULL, s, 1, 0, 0));
    CHECK_VALS(vals, 0, 1);
    CHECK_OK(dt_topk(NULL, &inds, s, 3, 0, 0));
    CHECK_VALS(inds, 0, 1, 2, 0);
    CHECK_OK(dt_scope_end());
}

/* ---- errors -------------------------------------------------------------------------- */

static void test_errors(void) {
    long base = dt_live_handles();
    CHECK_OK(dt_scope_begin());
    dt_tensor a, b, t = (dt_tensor)&t; /* garbage: must become NULL on failure */
    /* x [2,3] times the transpose of w [5,4]: torch multiplies 2x3 by 4x5 and says so */
    CHECK_OK(dt_zeros(&a, (const int64_t[]){2, 3}, 2, DT_F32, CPU));
    CHECK_OK(dt_zeros(&b, (const int64_t[]){5, 4}, 2, DT_F32, CPU));
    CHECK_ERR(dt_linear(&t, a, b, NULL), DRDC_ERR_TORCH, "2x3");
    CHECK(tl_contains(drdc_last_error(), "4x5"));
    CHECK(tl_contains(drdc_last_error(), "dt_linear"));
    CHECK(!tl_contains(drdc_last_error(), "Exception raised from"));
    CHECK(!tl_contains(drdc_last_error(), "frame #"));
    CHECK(!tl_contains(drdc_last_error(), "\n"));
    CHECK(t == NULL);
    /* the process goes on */
    CHECK_OK(dt_add(&t, a, a));
    CHECK_SHAPE(t, 2, 3);
    CHECK_ERR(dt_add(&t, NULL, a), DRDC_ERR_INPUT, "'a' is NULL");
    CHECK_ERR(dt_add(NULL, a, a), DRDC_ERR_INPUT, "out is NULL");
    CHECK_ERR(dt_cat(&t, NULL, 0, 0), DRDC_ERR_INPUT, "non-empty");
    CHECK_ERR(dt_zeros(&t, (const int64_t[]){2}, 1, (dt_dtype)42, CPU), DRDC_ERR_INPUT, "dtype");
    CHECK_ERR(dt_randn(&t, (const int64_t[]){2}, 1, DT_I64, CPU, NULL), DRDC_ERR_INPUT, "float dtype");
    /* 2^50 bytes cannot be allocated anywhere: out of memory, not a crash */
    CHECK_ERR(dt_zeros(&t, (const int64_t[]){1LL << 24, 1LL << 24}, 2, DT_F32, CPU), DRDC_ERR_NOMEM, "dt_zeros");
    CHECK_ERR(dt_scope_keep(NULL), DRDC_ERR_INPUT, "NULL");
    CHECK_OK(dt_scope_end());
    CHECK(dt_live_handles() == base);
    CHECK_ERR(dt_scope_end(), DRDC_ERR_STATE, "no open scope");
}

/* ---- handles and scopes -------------------------------------------------------------- */

static void test_scopes_and_leaks(void) {
    long base = dt_live_handles();
    CHECK(dt_scope_depth() == 0);
    CHECK_OK(dt_scope_begin());
    dt_tensor x, y;
    CHECK_OK(dt_ones(&x, (const int64_t[]){4}, 1, DT_F32, CPU));
    for (int i = 0; i < 100; i++) {
        CHECK_OK(dt_add(&y, x, x));
        x = y;
    }
    CHECK(dt_live_handles() == base + 101);
    CHECK_OK(dt_scope_end());
    CHECK(dt_live_handles() == base);

    /* nested: keep moves a handle to the enclosing scope; dt_free takes one out early */
    dt_tensor a, b, c, d;
    CHECK_OK(dt_scope_begin());
    CHECK_OK(dt_zeros(&a, (const int64_t[]){1}, 1, DT_F32, CPU));
    CHECK_OK(dt_scope_begin());
    CHECK(dt_scope_depth() == 2);
    CHECK_OK(dt_ones(&b, (const int64_t[]){1}, 1, DT_F32, CPU));
    CHECK_OK(dt_ones(&c, (const int64_t[]){2}, 1, DT_F32, CPU));
    CHECK_OK(dt_ones(&d, (const int64_t[]){3}, 1, DT_F32, CPU));
    dt_free(d);
    CHECK_OK(dt_scope_keep(c));
    CHECK(dt_live_handles() == base + 3);
    CHECK_OK(dt_scope_end()); /* frees b */
    CHECK(dt_live_handles() == base + 2);
    CHECK(dt_numel(c) == 2); /* c survived, now in the outer scope */
    CHECK_OK(dt_scope_keep(c)); /* out of the last scope: the caller owns it */
    dt_free(a);
    CHECK_OK(dt_scope_end());
    CHECK(dt_live_handles() == base + 1);
    CHECK(dt_scope_depth() == 0);
    dt_free(c);
    dt_free(NULL);
    CHECK(dt_live_handles() == base);

    /* without a scope, the caller frees each handle */
    CHECK_OK(dt_ones(&a, (const int64_t[]){2}, 1, DT_F32, CPU));
    CHECK_OK(dt_scope_keep(a)); /* no-op */
    CHECK_OK(dt_mul(&b, a, a));
    CHECK(dt_live_handles() == base + 2);
    dt_free(a);
    dt_free(b);
    CHECK(dt_live_handles() == base);
}

/* ---- autograd ------------------------------------------------------------------------ */

static void test_autograd(void) {
    CHECK_OK(dt_scope_begin());
    dt_tensor x = mk((const float[]){1, -2, 3}, (const int64_t[]){3}, 1), sq, loss, g;
    CHECK_OK(dt_grad(&g, x));
    CHECK(g == NULL);
    CHECK_OK(dt_set_requires_grad(x, 1));
    CHECK(dt_requires_grad(x));
    CHECK_OK(dt_mul(&sq, x, x));
    CHECK(dt_requires_grad(sq));
    CHECK_ERR(dt_backward(sq), DRDC_ERR_TORCH, "scalar");
    CHECK_OK(dt_sum_all(&loss, sq));
    CHECK_OK(dt_backward(loss));
    CHECK_OK(dt_grad(&g, x));
    CHECK_VALS(g, 1e-6, 2, -4, 6);
    CHECK_OK(dt_zero_grad(&x, 1));
    CHECK_OK(dt_grad(&g, x));
    CHECK(g == NULL);
    CHECK(dt_is_grad_enabled() == 1);
    int prev = dt_set_grad_enabled(0);
    CHECK(prev == 1);
    CHECK_OK(dt_mul(&sq, x, x));
    CHECK(!dt_requires_grad(sq));
    CHECK(dt_set_grad_enabled(prev) == 0);
    CHECK_OK(dt_mul(&sq, x, x));
    CHECK(dt_requires_grad(sq));
    CHECK_OK(dt_scope_end());
}

/* ---- AdamW and clipping -------------------------------------------------------------- */

/* One AdamW step (torch.optim.AdamW) on a scalar, in double. */
static void ref_adamw(double *p, double *m, double *v, int t, double g, double lr, double wd) {
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    *p *= 1 - lr * wd;
    *m = b1 * *m + (1 - b1) * g;
    *v = b2 * *v + (1 - b2) * g * g;
    double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
    *p -= lr / bc1 * *m / (sqrt(*v) / sqrt(bc2) + eps);
}

/* loss = sum(p0^2) + sum(3 * p1): grads 2 * p0 and 3; p2 unused (no grad) */
static void loss_backward(dt_tensor p0, dt_tensor p1) {
    CHECK_OK(dt_scope_begin());
    dt_tensor a, b, c, s0, s1, l;
    CHECK_OK(dt_mul(&a, p0, p0));
    CHECK_OK(dt_sum_all(&s0, a));
    CHECK_OK(dt_mul_scalar(&b, p1, 3));
    CHECK_OK(dt_sum_all(&c, b));
    CHECK_OK(dt_to_dtype(&s1, c, DT_F64));
    CHECK_OK(dt_add(&l, s0, s1));
    CHECK_OK(dt_backward(l));
    CHECK_OK(dt_scope_end());
}

static void test_adamw(void) {
    long base = dt_live_handles();
    const double p0v[3] = {0.5, -1.0, 2.0};
    const float p1v[2] = {3.0f, -0.25f};
    dt_tensor p0, p1, p2;
    CHECK_OK(dt_from_host(&p0, p0v, DT_F64, (const int64_t[]){3}, 1, CPU));
    p1 = mk(p1v, (const int64_t[]){2}, 1);
    CHECK_OK(dt_ones(&p2, (const int64_t[]){2}, 1, DT_F32, CPU));
    dt_tensor all[3] = {p0, p1, p2};
    for (int i = 0; i < 3; i++) CHECK_OK(dt_set_requires_grad(all[i], 1));
    dt_optimizer opt;
    CHECK_OK(dt_adamw_new(&opt, 0.9, 0.999, 1e-8));
    CHECK_OK(dt_adamw_add_group(opt, &p0, 1, 0.1, 0.01));
    CHECK_OK(dt_adamw_add_group(opt, (dt_tensor[]){p1, p2}, 2, 0.05, 0.0));
    CHECK(dt_adamw_num_params(opt) == 3);
    /* the lr a group is stepped with is checked against the formulas below (and after set_lr) */
    CHECK_ERR(dt_adamw_set_lr(opt, 2, 0.1), DRDC_ERR_INPUT, "group 2");
    CHECK_ERR(dt_adamw_set_lr(opt, 1, -0.1), DRDC_ERR_INPUT, "bad lr");
    dt_optimizer bad;
    CHECK_OK(dt_adamw_new(&bad, 0.9, 0.999, 1e-8));
    CHECK_ERR(dt_adamw_add_group(bad, (dt_tensor[]){p1, p1}, 2, 0.1, 0), DRDC_ERR_INPUT, "already");
    dt_optimizer_free(bad);
    CHECK_ERR(dt_adamw_new(&bad, 1.0, 0.999, 1e-8), DRDC_ERR_INPUT, "beta1");

    double rp0[3], rm0[3] = {0}, rv0[3] = {0}, rp1[2], rm1[2] = {0}, rv1[2] = {0};
    for (int i = 0; i < 3; i++) rp0[i] = p0v[i];
    for (int i = 0; i < 2; i++) rp1[i] = p1v[i];
    for (int step = 1; step <= 2; step++) {
        CHECK_OK(dt_zero_grad(all, 3));
        loss_backward(p0, p1);
        CHECK_OK(dt_adamw_step(opt));
        for (int i = 0; i < 3; i++) ref_adamw(&rp0[i], &rm0[i], &rv0[i], step, 2 * rp0[i], 0.1, 0.01);
        for (int i = 0; i < 2; i++) ref_adamw(&rp1[i], &rm1[i], &rv1[i], step, 3, 0.05, 0.0);
    }
    CHECK(close_to(p0, rp0, 3, 1e-6));
    CHECK(close_to(p1, rp1, 2, 1e-6));
    CHECK_VALS(p2, 0, 1, 1); /* no grad: untouched */

    /* state: p0 has moments and step 2, p2 has none */
    dt_tensor m, v;
    int64_t st;
    CHECK_OK(dt_adamw_state_get(&m, &v, &st, opt, 0));
    CHECK(st == 2);
    CHECK(close_to(m, rm0, 3, 1e-9));
    CHECK(close_to(v, rv0, 3, 1e-9));
    dt_free(m);
    dt_free(v);
    CHECK_OK(dt_adamw_state_get(&m, &v, &st, opt, 2));
    CHECK(m == NULL && v == NULL && st == 0);
    CHECK_ERR(dt_adamw_state_get(&m, &v, &st, opt, 3), DRDC_ERR_INPUT, "param 3");

    /* export to a second optimizer over copies of the parameters; both continue identically */
    dt_tensor q0, q1, q2;
    CHECK_OK(dt_detach(&m, p0));
    CHECK_OK(dt_clone(&q0, m));
    dt_free(m);
    CHECK_OK(dt_detach(&m, p1));
    CHECK_OK(dt_clone(&q1, m));
    dt_free(m);
    CHECK_OK(dt_ones(&q2, (const int64_t[]){2}, 1, DT_F32, CPU));
    dt_tensor qall[3] = {q0, q1, q2};
    for (int i = 0; i < 3; i++) CHECK_OK(dt_set_requires_grad(qall[i], 1));
    dt_optimizer opt2;
    CHECK_OK(dt_adamw_new(&opt2, 0.9, 0.999, 1e-8));
    CHECK_OK(dt_adamw_add_group(opt2, &q0, 1, 0.1, 0.01));
    CHECK_OK(dt_adamw_add_group(opt2, (dt_tensor[]){q1, q2}, 2, 0.05, 0.0));
    for (int i = 0; i < 3; i++) {
        CHECK_OK(dt_adamw_state_get(&m, &v, &st, opt, i));
        CHECK_OK(dt_adamw_state_set(opt2, i, m, v, st));
        dt_free(m);
        dt_free(v);
    }
    CHECK_ERR(dt_adamw_state_set(opt2, 1, p0, p0, 1), DRDC_ERR_INPUT, "does not match");
    CHECK_OK(dt_adamw_set_lr(opt, 0, 0.2));
    CHECK_OK(dt_adamw_set_lr(opt2, 0, 0.2));
    CHECK_OK(dt_zero_grad(all, 3));
    loss_backward(p0, p1);
    CHECK_OK(dt_adamw_step(opt));
    CHECK_OK(dt_zero_grad(qall, 3));
    loss_backward(q0, q1);
    CHECK_OK(dt_adamw_step(opt2));
    for (int i = 0; i < 3; i++) ref_adamw(&rp0[i], &rm0[i], &rv0[i], 3, 2 * rp0[i], 0.2, 0.01);
    CHECK(close_to(p0, rp0, 3, 1e-6));
    CHECK(close_to(q0, rp0, 3, 1e-6));
    double a0[3], b0[3];
    float a1[2], b1[2];
    CHECK_OK(dt_copy_to_host(p0, a0, sizeof a0));
    CHECK_OK(dt_copy_to_host(q0, b0, sizeof b0));
    CHECK_OK(dt_copy_to_host(p1, a1, sizeof a1));
    CHECK_OK(dt_copy_to_host(q1, b1, sizeof b1));
    CHECK(memcmp(a0, b0, sizeof a0) == 0 && memcmp(a1, b1, sizeof a1) == 0);

    dt_optimizer_free(opt);
    dt_optimizer_free(opt2);
    dt_optimizer_free(NULL);
    for (int i = 0; i < 3; i++) dt_free(all[i]);
    for (int i = 0; i < 3; i++) dt_free(qall[i]);
    CHECK(dt_live_handles() == base);
}

static void test_clip_grad_norm(void) {
    CHECK_OK(dt_scope_begin());
    /* grads (3, 4) and (12): total L2 norm 13 */
    dt_tensor p1, p2, p3, k1, k2, a, b, s1, s2, l, g;
    CHECK_OK(dt_zeros(&p1, (const int64_t[]){2}, 1, DT_F32, CPU));
    CHECK_OK(dt_zeros(&p2, (const int64_t[]){1}, 1, DT_F32, CPU));
    CHECK_OK(dt_zeros(&p3, (const int64_t[]){1}, 1, DT_F32, CPU)); /* no grad */
    dt_tensor ps[3] = {p1, p2, p3};
    for (int i = 0; i < 3; i++) CHECK_OK(dt_set_requires_grad(ps[i], 1));
    k1 = mk((const float[]){3, 4}, (const int64_t[]){2}, 1);
    k2 = mk((const float[]){12}, (const int64_t[]){1}, 1);
    for (int round = 0; round < 2; round++) {
        CHECK_OK(dt_zero_grad(ps, 3));
        CHECK_OK(dt_mul(&a, p1, k1));
        CHECK_OK(dt_mul(&b, p2, k2));
        CHECK_OK(dt_sum_all(&s1, a));
        CHECK_OK(dt_sum_all(&s2, b));
        CHECK_OK(dt_add(&l, s1, s2));
        CHECK_OK(dt_backward(l));
        double total = -1;
        double max_norm = round == 0 ? 100.0 : 1.0;
        CHECK_OK(dt_clip_grad_norm(ps, 3, max_norm, &total));
        CHECK_NEAR(total, 13.0, 1e-5);
        double scale = round == 0 ? 1.0 : 1.0 / (13.0 + 1e-6);
        CHECK_OK(dt_grad(&g, p1));
        CHECK_VALS(g, 1e-6, 3 * scale, 4 * scale);
        CHECK_OK(dt_grad(&g, p2));
        CHECK_VALS(g, 1e-6, 12 * scale);
        CHECK_OK(dt_grad(&g, p3));
        CHECK(g == NULL);
    }
    double total = -1;
    CHECK_OK(dt_zero_grad(ps, 3));
    CHECK_OK(dt_clip_grad_norm(ps, 3, 1.0, &total)); /* no grads at all: norm 0 */
    CHECK(total == 0.0);
    CHECK_OK(dt_scope_end());
}

/* ---- random numbers ------------------------------------------------------------------ */

static int same_floats(dt_tensor a, dt_tensor b) {
    float fa[64], fb[64];
    int64_t n = get_floats(a, fa, 64);
    return n > 0 && n == get_floats(b, fb, 64) && memcmp(fa, fb, (size_t)n * sizeof(float)) == 0;
}

static void test_generators(void) {
    CHECK_OK(dt_scope_begin());
    const int64_t five[] = {5};
    dt_generator g1, g2, g3;
    dt_tensor a, b, c, state;
    CHECK_OK(dt_generator_new(&g1, 42));
    CHECK_OK(dt_generator_new(&g2, 42));
    CHECK_OK(dt_generator_new(&g3, 43));
    CHECK_OK(dt_randn(&a, five, 1, DT_F32, CPU, g1));
    CHECK_OK(dt_randn(&b, five, 1, DT_F32, CPU, g2));
    CHECK_OK(dt_randn(&c, five, 1, DT_F32, CPU, g3));
    CHECK(same_floats(a, b));
    CHECK(!same_floats(a, c));
    /* f16 numbers are the f32 draws, cast (drawn on CPU in f32 whatever the target) */
    CHECK_OK(dt_randn(&a, five, 1, DT_F32, CPU, g1));
    CHECK_OK(dt_randn(&b, five, 1, DT_F16, CPU, g2));
    CHECK(dt_dtype_of(b) == DT_F16);
    float fa[5];
    CHECK(get_floats(a, fa, 5) == 5);
    double want[5];
    for (int i = 0; i < 5; i++) want[i] = fa[i];
    CHECK(close_to(b, want, 5, 4e-3));

    /* state save / restore reproduces the continuation, even on another generator */
    CHECK_OK(dt_generator_get_state(&state, g1));
    CHECK(dt_dtype_of(state) == DT_U8);
    CHECK_OK(dt_randn(&a, five, 1, DT_F32, CPU, g1));
    CHECK_OK(dt_rand(&b, five, 1, DT_F32, CPU, g1));
    CHECK_OK(dt_generator_set_state(g3, state));
    CHECK_OK(dt_randn(&c, five, 1, DT_F32, CPU, g3));
    CHECK(same_floats(a, c));
    CHECK_OK(dt_rand(&c, five, 1, DT_F32, CPU, g3));
    CHECK(same_floats(b, c));
    CHECK_ERR(dt_generator_set_state(g3, a), DRDC_ERR_INPUT, "u8");

    /* rand in [0, 1), randint in [low, high), randperm a permutation */
    float r[64];
    CHECK_OK(dt_rand(&a, (const int64_t[]){64}, 1, DT_F32, CPU, g1));
    CHECK(get_floats(a, r, 64) == 64);
    int in_range = 1;
    for (int i = 0; i < 64; i++) in_range &= r[i] >= 0 && r[i] < 1;
    CHECK(in_range);
    CHECK_OK(dt_randint(&a, 3, 6, (const int64_t[]){64}, 1, CPU, g1));
    CHECK(dt_dtype_of(a) == DT_I64);
    CHECK(get_floats(a, r, 64) == 64);
    int seen[3] = {0, 0, 0};
    in_range = 1;
    for (int i = 0; i < 64; i++) {
        in_range &= r[i] >= 3 && r[i] < 6 && r[i] == floorf(r[i]);
        if (r[i] >= 3 && r[i] < 6) seen[(int)r[i] - 3] = 1;
    }
    CHECK(in_range && seen[0] && seen[1] && seen[2]);
    CHECK_OK(dt_randperm(&a, 10, CPU, g1));
    int64_t perm[10];
    CHECK_OK(dt_copy_to_host(a, perm, sizeof perm));
    int hit[10] = {0}, ok = 1;
    for (int i = 0; i < 10; i++) {
        if (perm[i] < 0 || perm[i] >= 10 || hit[perm[i]]) ok = 0;
        else hit[perm[i]] = 1;
    }
    CHECK(ok);

    /* a NULL generator is libtorch's default one: it draws, and moves on between draws */
    CHECK_OK(dt_randn(&a, five, 1, DT_F32, CPU, NULL));
    CHECK_OK(dt_randn(&b, five, 1, DT_F32, CPU, NULL));
    CHECK(!same_floats(a, b));
    dt_generator_free(g1);
    dt_generator_free(g2);
    dt_generator_free(g3);
    dt_generator_free(NULL);
    CHECK_OK(dt_scope_end());
}

/* A row generator draws each group of rows from its own generator: the rows of one sample are
 * the same drawn alone or in any batch; dropout masks too; randperm and the state refuse it. */
static void test_row_generators(void) {
    CHECK_OK(dt_scope_begin());
    const uint64_t seeds[4] = {11, 12, 13, 14};
    dt_generator all = NULL, pair = NULL, one = NULL, row = NULL;
    dt_tensor a, b, c, x, da, db, st;
    CHECK_OK(dt_generator_new_rows(&all, seeds, 4));
    CHECK_OK(dt_generator_new_rows(&pair, seeds + 2, 2));
    CHECK_OK(dt_generator_new(&one, 13));
    CHECK(dt_generator_rows(all) == 4 && dt_generator_rows(one) == 1 && dt_generator_rows(NULL) == 1);
    const int64_t s4[3] = {4, 3, 5}, s2[3] = {2, 3, 5}, s1[3] = {1, 3, 5};
    CHECK_OK(dt_randn(&a, s4, 3, DT_F32, CPU, all));   /* rows 0..3 from seeds 11..14 */
    CHECK_OK(dt_randn(&b, s2, 3, DT_F32, CPU, pair));  /* rows of seeds 13, 14 */
    CHECK_OK(dt_randn(&c, s1, 3, DT_F32, CPU, one));   /* seed 13 alone */
    float fa[60], fb[30], fc[15];
    CHECK(get_floats(a, fa, 60) == 60 && get_floats(b, fb, 30) == 30 && get_floats(c, fc, 15) == 15);
    CHECK(memcmp(fa + 30, fb, sizeof fb) == 0);
    CHECK(memcmp(fa + 30, fc, sizeof fc) == 0);
    CHECK(memcmp(fa, fa + 15, sizeof fc) != 0);
    /* the next draws continue each generator: dropout masks of [4*2, 6] rows (2 per generator) */
    float ones[48];
    for (int i = 0; i < 48; i++) ones[i] = 1;
    x = mk(ones, (const int64_t[]){8, 6}, 2);
    CHECK_OK(dt_dropout(&da, x, 0.5, 1, all));
    dt_tensor x2 = mk(ones, (const int64_t[]){4, 6}, 2);
    CHECK_OK(dt_dropout(&db, x2, 0.5, 1, pair));
    float ma[48], mb[24];
    CHECK(get_floats(da, ma, 48) == 48 && get_floats(db, mb, 24) == 24);
    CHECK(memcmp(ma + 24, mb, sizeof mb) == 0);
    /* randint: one int per row generator */
    int64_t ia[4], ib[2];
    CHECK_OK(dt_randint(&a, 0, 1000, (const int64_t[]){4}, 1, CPU, all));
    CHECK_OK(dt_randint(&b, 0, 1000, (const int64_t[]){2}, 1, CPU, pair));
    CHECK_OK(dt_copy_to_host(a, ia, sizeof ia));
    CHECK_OK(dt_copy_to_host(b, ib, sizeof ib));
    CHECK(ia[2] == ib[0] && ia[3] == ib[1]);
    /* one row's generator, for draws of its own (randperm) */
    CHECK_OK(dt_generator_row(&row, all, 2, 4));
    CHECK(row != NULL && row != all && dt_generator_rows(row) == 1);
    CHECK_OK(dt_randperm(&a, 6, CPU, row));
    CHECK_OK(dt_generator_row(&row, one, 0, 3));
    CHECK(row == one);
    CHECK_ERR(dt_generator_row(&row, all, 1, 6), DRDC_ERR_INPUT, "cannot draw 6 rows");
    CHECK_ERR(dt_randn(&a, (const int64_t[]){6}, 1, DT_F32, CPU, all), DRDC_ERR_INPUT, "multiple of 4");
    CHECK_ERR(dt_randperm(&a, 5, CPU, all), DRDC_ERR_INPUT, "single generator");
    CHECK_ERR(dt_generator_get_state(&st, all), DRDC_ERR_INPUT, "single generator");
    CHECK_ERR(dt_generator_new_rows(&row, seeds, 0), DRDC_ERR_INPUT, "0 seeds");
    dt_generator_free(all);
    dt_generator_free(pair);
    dt_generator_free(one);
    CHECK_OK(dt_scope_end());
}

/* dt_set_grad gives a tensor a grad (a copy, in its shape). */
static void test_set_grad(void) {
    CHECK_OK(dt_scope_begin());
    const float v[4] = {1, 2, 3, 4};
    dt_tensor p = mk(v, (const int64_t[]){2, 2}, 2), g = mk(v, (const int64_t[]){4}, 1), got = NULL;
    CHECK_OK(dt_set_requires_grad(p, 1));
    CHECK_OK(dt_grad(&got, p));
    CHECK(got == NULL);
    CHECK_OK(dt_set_grad(p, g));
    CHECK_OK(dt_grad(&got, p));
    CHECK(got && dt_ndim(got) == 2);
    float out[4];
    CHECK(got && get_floats(got, out, 4) == 4 && out[3] == 4);
    CHECK_ERR(dt_set_grad(p, mk(v, (const int64_t[]){3}, 1)), DRDC_ERR_INPUT, "does not fit");
    CHECK_OK(dt_scope_end());
}

/* ---- devices and system -------------------------------------------------------------- */

static void test_devices(void) {
    dt_device d = {-1, -1};
    char buf[32];
    CHECK_OK(dt_device_parse(&d, "cpu"));
    CHECK(d.type == DT_CPU);
    dt_device_format(buf, sizeof buf, d);
    CHECK(strcmp(buf, "cpu") == 0);
    CHECK_OK(dt_device_parse(&d, "auto"));
    CHECK(d.type == (dt_cuda_available() ? DT_CUDA : DT_CPU));
    CHECK_ERR(dt_device_parse(&d, "gpu"), DRDC_ERR_INPUT, "'gpu'");
    CHECK_ERR(dt_device_parse(&d, "cuda:x"), DRDC_ERR_INPUT, "cuda:N");
    CHECK_ERR(dt_device_parse(&d, "cuda:1x"), DRDC_ERR_INPUT, "cuda:N");
    if (dt_cuda_device_count() == 0) {
        CHECK(!dt_cuda_available());
        CHECK_ERR(dt_device_parse(&d, "cuda"), DRDC_ERR_INPUT, "'cuda'");
        CHECK(tl_contains(drdc_last_error(), "no CUDA device"));
        CHECK_ERR(dt_device_parse(&d, "cuda:0"), DRDC_ERR_INPUT, "'cuda:0'");
        dt_tensor x = x23(), t = NULL;
        CHECK_ERR(dt_to_device(&t, x, (dt_device){DT_CUDA, 0}), DRDC_ERR_INPUT, "cuda:0");
        CHECK(t == NULL);
        dt_free(x);
    } else {
        CHECK_OK(dt_device_parse(&d, "cuda:0"));
        CHECK(d.type == DT_CUDA && d.index == 0);
        dt_device_format(buf, sizeof buf, d);
        CHECK(strcmp(buf, "cuda:0") == 0);
        CHECK_ERR(dt_device_parse(&d, "cuda:99"), DRDC_ERR_INPUT, "only");
    }
}

/* On a machine with a GPU: the same seed draws the same numbers on CPU and CUDA, and a value
 * round-trips through the device. Skipped (returns) without one. */
static void test_cuda_if_present(void) {
    if (dt_cuda_device_count() == 0) {
        fprintf(stderr, "     (no CUDA device: CUDA checks not run)\n");
        return;
    }
    CHECK_OK(dt_scope_begin());
    dt_device gpu = {DT_CUDA, 0};
    dt_generator g1, g2;
    dt_tensor a, b, c;
    CHECK_OK(dt_generator_new(&g1, 3));
    CHECK_OK(dt_generator_new(&g2, 3));
    CHECK_OK(dt_randn(&a, (const int64_t[]){8}, 1, DT_F32, CPU, g1));
    CHECK_OK(dt_randn(&b, (const int64_t[]){8}, 1, DT_F32, gpu, g2));
    CHECK(dt_device_of(b).type == DT_CUDA);
    CHECK(same_floats(a, b));
    CHECK_OK(dt_mul(&c, b, b));
    CHECK_OK(dt_synchronize(gpu));
    int64_t peak = -1;
    CHECK_OK(dt_cuda_memory(&peak, gpu));
    CHECK(peak >= 0);
    CHECK_OK(dt_autocast_bf16(1));
    CHECK_OK(dt_autocast_bf16(0));
    dt_generator_free(g1);
    dt_generator_free(g2);
    CHECK_OK(dt_scope_end());
}

static void test_runtime_settings(void) {
    int prev = dt_get_num_threads();
    CHECK(prev >= 1);
    CHECK_OK(dt_set_num_threads(1));
    CHECK(dt_get_num_threads() == 1);
    CHECK_OK(dt_set_num_threads(prev));
    CHECK_ERR(dt_set_num_threads(0), DRDC_ERR_INPUT, "n >= 1");
    const char *v = dt_torch_version();
    CHECK(v && v[0] >= '0' && v[0] <= '9' && strchr(v, '.') != NULL);
    int64_t peak = -1;
    CHECK_OK(dt_cuda_memory(&peak, CPU));
    CHECK(peak == 0);
    CHECK_OK(dt_synchronize(CPU));
    /* CUDA autocast leaves CPU ops in f32 */
    CHECK_OK(dt_autocast_bf16(1));
    CHECK_OK(dt_scope_begin());
    dt_tensor x = x23(), t;
    CHECK_OK(dt_linear(&t, x, x, NULL)); /* x x^T */
    CHECK(dt_dtype_of(t) == DT_F32);
    CHECK_VALS(t, 0, 5, 14, 14, 50);
    CHECK_OK(dt_scope_end());
    CHECK_OK(dt_autocast_bf16(0));
}

/* dt_run_concurrently: every task runs (on other threads than the caller's but the first), sees the caller's
 * autograd and autocast state and threads_each intra-op threads; the caller's thread count is
 * restored; the first failing task's code and message reach the caller; no handle is left. */
typedef struct conc_job {
    int ran[4], grad[4], threads[4], bf16[4];
    int fail_at;
} conc_job;

static drdc_status conc_task(void *ctx, int i) {
    conc_job *j = ctx;
    j->ran[i] = 1;
    j->grad[i] = dt_is_grad_enabled();
    j->threads[i] = dt_get_num_threads();
    dt_tensor a = NULL, b = NULL;
    drdc_status st = dt_randn(&a, (const int64_t[2]){4, 4}, 2, DT_F32, CPU, NULL);
    if (!st) st = dt_linear(&b, a, a, NULL);   /* under CPU autocast: bf16 */
    j->bf16[i] = b && dt_dtype_of(b) == DT_BF16;
    dt_free(a);
    dt_free(b);
    if (st) return st;
    return i == j->fail_at ? drdc_fail(DRDC_ERR_STATE, "task %d failed on purpose", i) : DRDC_OK;
}

/* A task that runs tasks itself: the pool is busy with its caller, so the nested call takes
 * threads of its own (no deadlock), and every nested task runs. */
static drdc_status nested_leaf(void *ctx, int i) {
    int *ran = ctx;
    ran[i] = 1;
    return DRDC_OK;
}

static drdc_status nested_task(void *ctx, int i) {
    int(*ran)[3] = ctx;
    return dt_run_concurrently(3, 1, nested_leaf, ran[i]);
}

/* dt_empty gives the shape and dtype asked for, stored NHWC when asked (4-D only); dt_version
 * counts in-place writes (shared with a view), not out-of-place results; dt_flops_add adds to the
 * count dt_flops_done reads. */
static void test_empty_version_flops(void) {
    const int64_t shape[4] = {2, 8, 3, 5}, s3[3] = {2, 8, 3};
    dt_tensor e = NULL, f = NULL, v = NULL, sum = NULL, bad = NULL;
    int64_t got[4] = {0};
    CHECK_OK(dt_empty(&e, shape, 4, DT_BF16, CPU, 1));
    CHECK_OK(dt_empty(&f, shape, 4, DT_F32, CPU, 0));
    if (e && f) {
        CHECK_OK(dt_shape(got, 4, e));
        CHECK(memcmp(got, shape, sizeof got) == 0);
        CHECK(dt_dtype_of(e) == DT_BF16 && dt_is_channels_last(e));
        CHECK(dt_dtype_of(f) == DT_F32 && !dt_is_channels_last(f));
    }
    CHECK(dt_empty(&bad, s3, 3, DT_F32, CPU, 1) == DRDC_ERR_INPUT);
    CHECK(bad == NULL);
    dt_free(f);
    f = NULL;
    CHECK_OK(dt_full(&f, shape, 4, 1.0, DT_F32, CPU));
    const int64_t v0 = dt_version(f);
    CHECK(v0 >= 0);
    CHECK_OK(dt_add(&sum, f, f));                      /* out of place: f unchanged */
    CHECK(dt_version(f) == v0);
    CHECK_OK(dt_narrow(&v, f, 1, 0, 4));
    CHECK_OK(dt_add_(v, v, 1.0));                      /* through a view: the storage's count moves */
    CHECK(dt_version(f) > v0);
    CHECK(dt_version(NULL) == -1);
    const int64_t before = dt_flops_done();
    dt_flops_add(1234);
    CHECK(dt_flops_done() - before == 1234);
    dt_free(e); dt_free(f); dt_free(v); dt_free(sum);
}

static void test_run_concurrently(void) {
    const long before = dt_live_handles();
    const int prev = dt_get_num_threads();
    conc_job j = {.fail_at = -1};
    const int grad0 = dt_set_grad_enabled(0);
    CHECK_OK(dt_autocast_inference(CPU, 1));
    CHECK_OK(dt_run_concurrently(4, 1, conc_task, &j));
    CHECK_OK(dt_autocast_inference(CPU, 0));
    dt_set_grad_enabled(grad0);
    for (int i = 0; i < 4; i++) {
        CHECK(j.ran[i] == 1);
        CHECK(j.grad[i] == 0);
        CHECK(j.threads[i] == 1);
        CHECK(j.bf16[i] == 1);
    }
    CHECK(dt_get_num_threads() == prev);
    conc_job k = {.fail_at = 2};
    CHECK_ERR(dt_run_concurrently(4, 1, conc_task, &k), DRDC_ERR_STATE, "task 2 failed on purpose");
    CHECK(k.ran[0] && k.ran[1] && k.ran[2] && k.ran[3]);
    CHECK(k.grad[3] == 1);   /* autograd on in the caller: on in the tasks */
    CHECK(dt_get_num_threads() == prev);
    CHECK_ERR(dt_run_concurrently(0, 1, conc_task, &k), DRDC_ERR_INPUT, "n >= 1");
    int ran[2][3] = {{0}};
    CHECK_OK(dt_run_concurrently(2, 1, nested_task, ran));
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 3; b++) CHECK(ran[a][b] == 1);
    CHECK(dt_live_handles() == before);
}

int main(void) {
    long base = dt_live_handles();
    RUN(test_creation_and_info);
    RUN(test_dtypes_round_trip);
    RUN(test_arithmetic);
    RUN(test_reductions);
    RUN(test_norm2_paths);
    RUN(test_conv2d);
    RUN(test_linear_bmm);
    RUN(test_softmax_and_norms);
    RUN(test_activations);
    RUN(test_dropout);
    RUN(test_pooling_and_interpolate);
    RUN(test_shape_ops);
    RUN(test_errors);
    RUN(test_scopes_and_leaks);
    RUN(test_autograd);
    RUN(test_adamw);
    RUN(test_clip_grad_norm);
    RUN(test_generators);
    RUN(test_row_generators);
    RUN(test_set_grad);
    RUN(test_devices);
    RUN(test_cuda_if_present);
    RUN(test_runtime_settings);
    RUN(test_run_concurrently);
    RUN(test_empty_version_flops);
    if (dt_live_handles() != base || dt_scope_depth() != 0) {
        fprintf(stderr, "leak: %ld live handles, %d open scopes after all tests\n", dt_live_handles() - base,
                dt_scope_depth());
        return 1;
    }
    return test_summary();
}
