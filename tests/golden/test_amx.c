/* test_amx.c: the AMX kernels against libtorch's and the project's float32 ones.
 *
 * amx_conv.h's bf16 convolutions against libtorch's bf16 convolution (oneDNN) on the same bf16
 * inputs, weights and bias: both sum in float32 and round once to bf16, in different orders, so
 * every output must be within one bf16 step of libtorch's (2^-7 of its magnitude, plus a float32
 * summation margin of 1e-3 of the output's scale where sums cancel; measured on this project's
 * machine: equal to the bit, oneDNN's AMX kernels sum in the same order). 1x1, 3x3 and stride-2 3x3
 * shapes of the refiner, two images a call; a NaN input pixel makes exactly the outputs that read it
 * NaN (fail closed, no spill into the other image); shapes outside the kernel's rules are refused,
 * and packing checks its channels.
 *
 * attention.h's bf16 attention on AMX tiles against the float32 fused kernel on the same (bf16)
 * values: within 1 % of the output's scale (its weights and output are rounded to bf16), on whole
 * tiles, off them, and with the base model's neighbourhood mask; a NaN key makes its head's rows
 * NaN and nothing else, a row with every key masked is NaN (as the float32 kernel and libtorch's
 * softmax); sizes outside its rules are refused.
 *
 * attention.h's float32 kernel on bf16 operands (drdc_attention_run_bf16, for CPUs without AMX)
 * against casting the operands to float32, the float32 kernel and casting its output to bf16: equal
 * to the bit, with separate and interleaved operands, sizes off the vectors, the mask, a NaN key.
 *
 * Parts that need AMX skip with a message on a CPU without it. */
#include "testlib.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "drdc/shim/shim.h"
#include "drdc/stages/amx_conv.h"
#include "drdc/stages/simd.h"
#include "drdc/stages/attention.h"

static const dt_device CPU = {DT_CPU, 0};

/* N(0, sd) in bf16: [n,c,h,w] (channels-last when cl). */
static dt_tensor rand_bf16(const int64_t *shape, int ndim, double sd, uint64_t seed, int cl) {
    dt_generator g = NULL;
    dt_tensor x = NULL, y = NULL, z = NULL, zc = NULL;
    CHECK_OK(dt_generator_new(&g, seed));
    CHECK_OK(dt_randn(&x, shape, ndim, DT_F32, CPU, g));
    CHECK_OK(dt_mul_scalar(&y, x, sd));
    CHECK_OK(dt_to_dtype(&z, y, DT_BF16));
    if (cl) CHECK_OK(dt_to_memory_format(&zc, z, 1));
    dt_generator_free(g);
    dt_free(x);
    dt_free(y);
    if (!cl) return z;
    dt_free(z);
    return zc;
}

typedef struct conv_case {
    int64_t in, out, h, w;
    int k, stride;
} conv_case;

/* Packs a random [out,in,k,k] weight and bias; *wt, *bt the bf16 tensors libtorch gets. */
static int make_weights(drdc_amx_weights *pw, dt_tensor *wt, dt_tensor *bt, const conv_case *cc, uint64_t seed) {
    const int64_t ws[4] = {cc->out, cc->in, cc->k, cc->k}, bs[1] = {cc->out};
    const size_t nw = (size_t)(cc->out * cc->in * cc->k * cc->k);
    *wt = rand_bf16(ws, 4, 1.0 / sqrt((double)(cc->in * cc->k * cc->k)), seed, 0);
    *bt = rand_bf16(bs, 1, 0.5, seed + 1, 0);
    uint16_t *w = malloc(nw * sizeof *w);
    float *b = test_host_copy(*bt);
    int ok = w && b && *wt;
    if (ok) CHECK_OK(dt_copy_to_host(*wt, w, nw * sizeof *w));
    if (ok) CHECK_OK(drdc_amx_pack(pw, w, b, cc->out, cc->in, cc->k));
    free(w);
    free(b);
    return ok && pw->w;
}

/* y (bf16 [n,out,ho,wo] channels-last) from drdc_amx_conv on x; NULL on failure (counted). */
static dt_tensor run_amx(const drdc_amx_weights *pw, dt_tensor x, const conv_case *cc, int64_t n) {
    const int64_t ys[4] = {n, cc->out, cc->h / cc->stride, cc->w / cc->stride};
    dt_tensor y = NULL;
    void *xp = NULL, *yp = NULL;
    CHECK_OK(dt_empty(&y, ys, 4, DT_BF16, CPU, 1));
    CHECK_OK(dt_host_data(&xp, x));
    CHECK_OK(dt_host_data(&yp, y));
    drdc_status st = xp && yp ? drdc_amx_conv(pw, xp, yp, n, cc->h, cc->w, cc->stride) : DRDC_ERR_STATE;
    CHECK_OK(st);
    if (st) {
        dt_free(y);
        return NULL;
    }
    return y;
}

static void test_matches_libtorch(void) {
    if (!drdc_amx_available()) {
        test_skip_part("amx_conv against libtorch: this CPU lacks AMX-BF16 (or Linux refused the tile data)");
        return;
    }
    const conv_case cases[] = {
        {64, 192, 16, 16, 1, 1},   /* the attention's qkv */
        {64, 32, 64, 64, 1, 1},    /* a skip connection */
        {64, 64, 16, 16, 3, 1},
        {128, 64, 16, 16, 3, 1},
        {32, 64, 32, 32, 3, 1},
        {32, 32, 64, 64, 3, 2},    /* downsampling */
        {64, 96, 32, 32, 3, 2},
    };
    const long before = dt_live_handles();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const conv_case *cc = &cases[i];
        const int64_t xs[4] = {2, cc->in, cc->h, cc->w};
        drdc_amx_weights pw;
        dt_tensor x = rand_bf16(xs, 4, 1.0, 100 + i, 1), wt = NULL, bt = NULL, ref = NULL, got = NULL;
        if (make_weights(&pw, &wt, &bt, cc, 200 + i) && x) {
            CHECK(drdc_amx_conv_fits(&pw, cc->stride, cc->h, cc->w));
            const int64_t pad = cc->k / 2;
            CHECK_OK(dt_conv2d(&ref, x, wt, bt, cc->stride, cc->stride, pad, pad, 1, 1, 1));
            got = run_amx(&pw, x, cc, 2);
        }
        float *g = got ? test_host_copy(got) : NULL, *r = ref ? test_host_copy(ref) : NULL;
        if (g && r) {
            const int64_t n = dt_numel(ref);
            double scale = 0, worst = 0;
            int64_t off = 0;
            for (int64_t e = 0; e < n; e++) scale = fmax(scale, fabs(r[e]));
            for (int64_t e = 0; e < n; e++) {
                const double d = fabs((double)g[e] - r[e]);
                worst = fmax(worst, d);
                off += !(d <= 0x1p-7 * fabs(r[e]) + 1e-3 * scale);
            }
            printf("  %lldx%lld stride %d, %lld -> %lld channels, %lldx%lld: max |diff| %.3g of max |y| %.3g, %lld of %lld "
                   "outputs beyond one bf16 step\n", (long long)cc->k, (long long)cc->k, cc->stride, (long long)cc->in,
                   (long long)cc->out, (long long)cc->h, (long long)cc->w, worst, scale, (long long)off, (long long)n);
            CHECK(scale > 0.1);
            CHECK(off == 0);
        }
        free(g);
        free(r);
        dt_free(x); dt_free(wt); dt_free(bt); dt_free(ref); dt_free(got);
        drdc_amx_weights_free(&pw);
    }
    CHECK(dt_live_handles() == before);
}

/* A 1x1 convolution on its input in two parts (drdc_amx_conv_1x1_split: 32 + 64 channels, 32 x 32
 * px, two images) equals the convolution of the concatenation to the bit; a split that is not a
 * multiple of 32, or of a 3x3 convolution, is refused. */
static void test_split_input_equals_concatenation(void) {
    if (!drdc_amx_available()) {
        test_skip_part("amx_conv split input: this CPU lacks AMX-BF16");
        return;
    }
    const conv_case cc = {96, 64, 32, 32, 1, 1};
    const int64_t sa[4] = {2, 32, 32, 32}, sb[4] = {2, 64, 32, 32};
    drdc_amx_weights pw;
    dt_tensor a = rand_bf16(sa, 4, 1.0, 41, 1), b = rand_bf16(sb, 4, 1.0, 42, 1), wt = NULL, bt = NULL, cat = NULL;
    dt_tensor whole = NULL, split = NULL;
    if (!make_weights(&pw, &wt, &bt, &cc, 43) || !a || !b) return;
    const dt_tensor pair[2] = {a, b};
    CHECK_OK(dt_cat(&cat, pair, 2, 1));
    dt_tensor catcl = NULL;
    CHECK_OK(dt_to_memory_format(&catcl, cat, 1));
    whole = run_amx(&pw, catcl, &cc, 2);
    void *pa = NULL, *pb = NULL, *ps = NULL;
    CHECK_OK(dt_empty(&split, (const int64_t[4]){2, 64, 32, 32}, 4, DT_BF16, CPU, 1));
    CHECK_OK(dt_host_data(&pa, a));
    CHECK_OK(dt_host_data(&pb, b));
    CHECK_OK(dt_host_data(&ps, split));
    if (pa && pb && ps) CHECK_OK(drdc_amx_conv_1x1_split(&pw, pa, 32, pb, ps, 2, 32, 32));
    float *w = whole ? test_host_copy(whole) : NULL, *sp = split ? test_host_copy(split) : NULL;
    if (w && sp) {
        int64_t differ = 0;
        for (int64_t e = 0; e < 2 * 64 * 32 * 32; e++) differ += w[e] != sp[e];
        printf("  1x1 on a split input (32 + 64 channels): %lld outputs differ from the concatenation's\n",
               (long long)differ);
        CHECK(differ == 0);
    }
    CHECK_ERR(drdc_amx_conv_1x1_split(&pw, pa, 48, pb, ps, 2, 32, 32), DRDC_ERR_INPUT, "multiple of 32");
    free(w);
    free(sp);
    dt_free(a); dt_free(b); dt_free(wt); dt_free(bt); dt_free(cat); dt_free(catcl); dt_free(whole); dt_free(split);
    drdc_amx_weights_free(&pw);
}

/* One NaN value in image 0 at pixel (5, 7): a 3x3 convolution's outputs at the 3x3 pixels around it
 * are NaN in every channel, every other output (and all of image 1) finite. */
static void test_nan_reaches_exactly_its_outputs(void) {
    if (!drdc_amx_available()) {
        test_skip_part("amx_conv NaN: this CPU lacks AMX-BF16");
        return;
    }
    const conv_case cc = {64, 64, 16, 16, 3, 1};
    const int64_t xs[4] = {2, 64, 16, 16};
    drdc_amx_weights pw;
    dt_tensor x = rand_bf16(xs, 4, 1.0, 7, 1), wt = NULL, bt = NULL, got = NULL;
    void *xp = NULL;
    if (!make_weights(&pw, &wt, &bt, &cc, 8) || !x) return;
    CHECK_OK(dt_host_data(&xp, x));
    if (xp) ((uint16_t *)xp)[(5 * 16 + 7) * 64 + 3] = 0x7fc0;   /* image 0, pixel (5,7), channel 3 */
    got = run_amx(&pw, x, &cc, 2);
    float *g = got ? test_host_copy(got) : NULL;   /* [2,64,16,16] */
    if (g) {
        int64_t wrong = 0;
        for (int64_t n = 0; n < 2; n++)
            for (int64_t c = 0; c < 64; c++)
                for (int64_t yy = 0; yy < 16; yy++)
                    for (int64_t xx = 0; xx < 16; xx++) {
                        const int near = n == 0 && llabs(yy - 5) <= 1 && llabs(xx - 7) <= 1;
                        const float v = g[((n * 64 + c) * 16 + yy) * 16 + xx];
                        wrong += near ? !isnan(v) : !isfinite(v);
                    }
        printf("  NaN at one input value: %lld outputs wrong (NaN where finite or finite where NaN)\n", (long long)wrong);
        CHECK(wrong == 0);
    }
    free(g);
    dt_free(x); dt_free(wt); dt_free(bt); dt_free(got);
    drdc_amx_weights_free(&pw);
}

/* The rules: channels multiples of 32 and k 1 or 3 to pack; the output's rows a multiple of 16
 * pixels, stride 1 for 1x1; a stride-1 3x3 input above 96 KiB padded goes to oneDNN; the switch
 * turns it off; a call outside the rules fails with DRDC_ERR_STATE, not with a wrong result. */
static void test_rules(void) {
    drdc_amx_weights pw;
    const uint16_t w[1] = {0};
    CHECK_ERR(drdc_amx_pack(&pw, w, NULL, 48, 32, 3), DRDC_ERR_INPUT, "multiples of 32");
    CHECK_ERR(drdc_amx_pack(&pw, w, NULL, 32, 32, 5), DRDC_ERR_INPUT, "k 1 or 3");
    CHECK(pw.w == NULL);
    if (!drdc_amx_available()) {
        test_skip_part("amx_conv rules: this CPU lacks AMX-BF16");
        return;
    }
    const drdc_amx_weights k3 = {.w = (uint16_t *)w, .in = 64, .out = 64, .k = 3};
    const drdc_amx_weights k1 = {.w = (uint16_t *)w, .in = 64, .out = 64, .k = 1};
    CHECK(drdc_amx_conv_fits(&k3, 1, 16, 16));
    CHECK(!drdc_amx_conv_fits(&k3, 1, 32, 32));   /* 34 x 34 x 64 x 2 bytes > 96 KiB */
    CHECK(drdc_amx_conv_fits(&k3, 2, 32, 32));
    CHECK(!drdc_amx_conv_fits(&k3, 1, 8, 8));     /* rows of 8 pixels */
    CHECK(!drdc_amx_conv_fits(&k3, 2, 33, 32));   /* odd rows at stride 2 */
    CHECK(drdc_amx_conv_fits(&k1, 1, 128, 128));
    CHECK(!drdc_amx_conv_fits(&k1, 2, 16, 16));
    CHECK(!drdc_amx_conv_fits(&k1, 1, 5, 5));     /* 25 pixels */
    CHECK(drdc_amx_use(0) == 1);
    CHECK(!drdc_amx_conv_fits(&k1, 1, 16, 16));
    uint16_t x[8 * 8 * 64] = {0}, y[8 * 8 * 64];
    CHECK_ERR(drdc_amx_conv(&k3, x, y, 1, 16, 16, 1), DRDC_ERR_STATE, "cannot run here");
    CHECK(drdc_amx_use(1) == 0);
    CHECK_ERR(drdc_amx_conv(&k3, x, y, 1, 8, 8, 1), DRDC_ERR_STATE, "cannot run here");
}

/* q, k, v [B][rows][H*D] bf16 from N(0, 1); head h of a row at h*D. */
static uint16_t *rand_rows(int64_t n, uint64_t seed) {
    const int64_t shape[1] = {n};
    dt_tensor t = rand_bf16(shape, 1, 1.0, seed, 0);
    uint16_t *h = malloc((size_t)n * sizeof *h);
    if (t && h) CHECK_OK(dt_copy_to_host(t, h, (size_t)n * sizeof *h));
    dt_free(t);
    return h;
}

static float *widen(const uint16_t *x, int64_t n) {
    float *f = malloc((size_t)n * sizeof *f);
    for (int64_t i = 0; f && i < n; i++) f[i] = drdc_bf16_to_f32(x[i]);
    return f;
}

typedef struct attn_case {
    int64_t B, H, L, S, D;
} attn_case;

/* The mask of UniAD's neighbourhood attention on a side x side grid (L = S = side^2): 0 within
 * `reach` rows and columns, -inf beyond; row `dead_row` (>= 0) all -inf. */
static float *grid_mask(int64_t side, int64_t reach, int64_t dead_row) {
    const int64_t L = side * side;
    float *m = malloc((size_t)(L * L) * sizeof *m);
    for (int64_t i = 0; m && i < L; i++)
        for (int64_t j = 0; j < L; j++) {
            const int near = llabs(i / side - j / side) <= reach && llabs(i % side - j % side) <= reach;
            m[i * L + j] = near && i != dead_row ? 0.0f : -INFINITY;
        }
    return m;
}

/* The bf16 AMX attention and the float32 fused kernel on the same values (and the same mask, or
 * none); nan_key >= 0 puts a NaN into key nan_key of image 0, head H - 1; dead_row >= 0 is a query
 * row whose keys are all masked. Returns the largest difference over the outputs that must be finite,
 * relative to the float32 output's scale (and CHECKs that the others are NaN). */
static double compare_attention(const attn_case *c, uint64_t seed, int64_t nan_key, const float *mask,
                                int64_t dead_row) {
    const int64_t HD = c->H * c->D, nq = c->B * c->L * HD, nk = c->B * c->S * HD;
    uint16_t *q = rand_rows(nq, seed), *k = rand_rows(nk, seed + 1), *v = rand_rows(nk, seed + 2);
    uint16_t *o16 = malloc((size_t)nq * sizeof *o16);
    float *qf = NULL, *kf = NULL, *vf = NULL, *o32 = malloc((size_t)nq * sizeof *o32);
    double rel = -1;
    if (!q || !k || !v || !o16 || !o32) goto out;
    if (nan_key >= 0) k[nan_key * HD + (c->H - 1) * c->D + 3] = 0x7fc0;
    qf = widen(q, nq), kf = widen(k, nk), vf = widen(v, nk);
    const drdc_attn_strides qs = {c->L * HD, HD, c->D}, ks = {c->S * HD, HD, c->D};
    const float scale = (float)(1.0 / sqrt((double)c->D));
    const drdc_attention16 a16 = {.q = q, .k = k, .v = v, .o = o16, .qs = qs, .ks = ks, .vs = ks, .os = qs,
                                  .mask = mask, .B = c->B, .H = c->H, .L = c->L, .S = c->S, .D = c->D, .scale = scale};
    const drdc_attention a32 = {.q = qf, .k = kf, .v = vf, .o = o32, .qs = qs, .ks = ks, .vs = ks, .os = qs, .mask = mask,
                                .B = c->B, .H = c->H, .L = c->L, .S = c->S, .D = c->D, .scale = scale};
    CHECK(drdc_attention16_fits(c->L, c->S, c->D));
    CHECK_OK(drdc_attention16_run(&a16));
    CHECK_OK(drdc_attention_run(&a32));
    double scale_o = 0, worst = 0;
    int64_t nan_wrong = 0;
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t i = 0; i < c->L; i++)
            for (int64_t h = 0; h < c->H; h++)
                for (int64_t d = 0; d < c->D; d++) {
                    const int64_t e = (b * c->L + i) * HD + h * c->D + d;
                    const float g = drdc_bf16_to_f32(o16[e]);
                    if ((nan_key >= 0 && b == 0 && h == c->H - 1) || i == dead_row) {
                        nan_wrong += !isnan(g);
                        continue;
                    }
                    nan_wrong += !isfinite(g);
                    scale_o = fmax(scale_o, fabs(o32[e]));
                    worst = fmax(worst, fabs((double)g - o32[e]));
                }
    CHECK(nan_wrong == 0);
    CHECK(scale_o > 0.1);
    rel = worst / scale_o;
    printf("  bf16 AMX attention, B %lld H %lld L %lld S %lld D %lld%s%s%s: max |diff| %.3g of max |o| %.3g (relative "
           "%.3g), %lld outputs NaN where they should not be or finite where they should\n", (long long)c->B,
           (long long)c->H, (long long)c->L, (long long)c->S, (long long)c->D, nan_key >= 0 ? ", a NaN key" : "",
           mask ? ", masked" : "", dead_row >= 0 ? ", a row all masked" : "", worst, scale_o, rel, (long long)nan_wrong);
out:
    free(q); free(k); free(v); free(o16); free(qf); free(kf); free(vf); free(o32);
    return rel;
}

static void test_attention_matches_float32(void) {
    if (!drdc_amx_active() || !drdc_attention_fused_active()) {
        test_skip_part("bf16 AMX attention: this CPU lacks AMX-BF16 (or AVX-512)");
        return;
    }
    /* the U-Net's heads (256 tokens), whole tiles; then sizes off the tiles (L 37, S 50 and 196: staged
     * query rows, padding keys, a whole padding vector of 16 keys past S) */
    const attn_case cases[] = {{2, 2, 256, 256, 32}, {1, 3, 48, 96, 64}, {2, 2, 37, 50, 32}, {1, 2, 20, 196, 64}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const double rel = compare_attention(&cases[i], 300 + 10 * i, -1, NULL, -1);
        CHECK(rel >= 0 && rel <= 1e-2);
    }
    double rel = compare_attention(&cases[0], 400, 5, NULL, -1);   /* a NaN in key 5 of image 0's last head */
    CHECK(rel >= 0 && rel <= 1e-2);
    /* the base model's: 14 x 14 tokens, 8 heads of 32, the neighbourhood mask (7 x 7: reach 3), and one
     * row all masked */
    const attn_case base = {2, 8, 196, 196, 32};
    float *mask = grid_mask(14, 3, -1), *dead = grid_mask(14, 3, 100);
    if (mask && dead) {
        rel = compare_attention(&base, 500, -1, mask, -1);
        CHECK(rel >= 0 && rel <= 1e-2);
        rel = compare_attention(&base, 510, -1, dead, 100);
        CHECK(rel >= 0 && rel <= 1e-2);
    }
    free(mask);
    free(dead);
}

/* drdc_attention_run_bf16 against the casts around drdc_attention_run on the same values: q, k, v
 * either separate [B][rows][H*D] arrays or one interleaved [B][rows][3*H*D] buffer (the U-Net's qkv
 * layout, self-attention: L == S); returns the number of outputs that differ in any bit (-1 when memory ran out). */
static int64_t compare_bf16_operands(const attn_case *c, uint64_t seed, int interleaved, int64_t nan_key,
                                     const float *mask) {
    const int64_t HD = c->H * c->D, w = interleaved ? 3 * HD : HD, nq = c->B * c->L * w, nk = c->B * c->S * w;
    const int64_t no = c->B * c->L * HD;
    uint16_t *q = rand_rows(nq, seed), *k = interleaved ? q : rand_rows(nk, seed + 1),
             *v = interleaved ? q : rand_rows(nk, seed + 2), *o16 = malloc((size_t)no * sizeof *o16);
    float *qf = NULL, *kf = NULL, *vf = NULL, *o32 = malloc((size_t)no * sizeof *o32);
    int64_t differ = -1;
    CHECK(!interleaved || c->L == c->S);   /* one buffer holds the rows of q, k and v */
    if (!q || !k || !v || !o16 || !o32 || (interleaved && c->L != c->S)) goto out;
    const int64_t ko = interleaved ? c->D : 0, vo = interleaved ? 2 * c->D : 0;   /* head h: q, k, v side by side */
    const drdc_attn_strides qs = {c->L * w, w, interleaved ? 3 * c->D : c->D}, ks = {c->S * w, w, qs.head},
                            os = {c->L * HD, HD, c->D};
    if (nan_key >= 0) k[nan_key * w + ko + 3] = 0x7fc0;   /* key nan_key of image 0, head 0 */
    qf = widen(q, nq), kf = interleaved ? qf : widen(k, nk), vf = interleaved ? qf : widen(v, nk);
    const float scale = (float)(1.0 / sqrt((double)c->D));
    const drdc_attention16 a16 = {.q = q, .k = k + ko, .v = v + vo, .o = o16, .qs = qs, .ks = ks, .vs = ks, .os = os,
                                  .mask = mask, .B = c->B, .H = c->H, .L = c->L, .S = c->S, .D = c->D, .scale = scale};
    const drdc_attention a32 = {.q = qf, .k = kf + ko, .v = vf + vo, .o = o32, .qs = qs, .ks = ks, .vs = ks, .os = os,
                                .mask = mask, .B = c->B, .H = c->H, .L = c->L, .S = c->S, .D = c->D, .scale = scale};
    CHECK_OK(drdc_attention_run_bf16(&a16));
    CHECK_OK(drdc_attention_run(&a32));
    int64_t nans = 0;
    differ = 0;
    for (int64_t e = 0; e < no; e++) {
        differ += o16[e] != drdc_f32_to_bf16(o32[e]);
        nans += isnan(drdc_bf16_to_f32(o16[e]));
    }
    /* a NaN key makes its head NaN in image 0 (every row reads it), nothing else */
    CHECK(nans == (nan_key >= 0 ? c->L * c->D : 0));
    printf("  float32 kernel on bf16 operands, B %lld H %lld L %lld S %lld D %lld%s%s%s: %lld of %lld outputs differ "
           "from the casts around the float32 kernel, %lld NaN\n", (long long)c->B, (long long)c->H, (long long)c->L,
           (long long)c->S, (long long)c->D, interleaved ? ", interleaved" : "", mask ? ", masked" : "",
           nan_key >= 0 ? ", a NaN key" : "", (long long)differ, (long long)no, (long long)nans);
out:
    free(q); free(o16); free(o32); free(qf);
    if (!interleaved) free(k), free(v), free(kf), free(vf);
    return differ;
}

static void test_attention_bf16_operands_equal_casts(void) {
    if (!drdc_attention_fused_active()) {
        test_skip_part("float32 attention on bf16 operands: this CPU lacks AVX-512");
        return;
    }
    const attn_case unet = {2, 2, 256, 256, 32}, off = {2, 3, 37, 50, 24}, self = {2, 3, 37, 37, 24},
                    base = {2, 8, 196, 196, 32};
    CHECK(compare_bf16_operands(&unet, 700, 1, -1, NULL) == 0);
    CHECK(compare_bf16_operands(&off, 710, 0, -1, NULL) == 0);
    CHECK(compare_bf16_operands(&off, 720, 0, 7, NULL) == 0);
    CHECK(compare_bf16_operands(&self, 730, 1, 7, NULL) == 0);
    float *mask = grid_mask(14, 3, -1);
    if (mask) CHECK(compare_bf16_operands(&base, 740, 0, -1, mask) == 0);
    free(mask);
}

static void test_attention_rules(void) {
    if (!drdc_amx_active() || !drdc_attention_fused_active()) {
        test_skip_part("bf16 AMX attention rules: this CPU lacks AMX-BF16 (or AVX-512)");
        return;
    }
    CHECK(drdc_attention16_fits(256, 256, 32));
    CHECK(drdc_attention16_fits(1, 1, 64));
    CHECK(!drdc_attention16_fits(256, 256, 48));   /* D 32 or 64 */
    CHECK(!drdc_attention16_fits(16, 8193, 32));   /* S up to 8192 */
    uint16_t x[16 * 48] = {0}, y[16 * 48];
    const drdc_attn_strides st = {16 * 48, 48, 48};
    drdc_attention16 a = {.q = x, .k = x, .v = x, .o = y, .qs = st, .ks = st, .vs = st, .os = st, .B = 1, .H = 1,
                          .L = 16, .S = 16, .D = 48, .scale = 1.0f};
    CHECK_ERR(drdc_attention16_run(&a), DRDC_ERR_STATE, "cannot run here");
    a.v = NULL;
    CHECK_ERR(drdc_attention16_run(&a), DRDC_ERR_INPUT, "NULL");
    CHECK(drdc_amx_use(0) == 1);
    CHECK(!drdc_attention16_fits(256, 256, 32));
    CHECK(drdc_amx_use(1) == 0);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    RUN(test_matches_libtorch);
    RUN(test_split_input_equals_concatenation);
    RUN(test_nan_reaches_exactly_its_outputs);
    RUN(test_rules);
    RUN(test_attention_matches_float32);
    RUN(test_attention_rules);
    RUN(test_attention_bf16_operands_equal_casts);
    return test_summary();
}
