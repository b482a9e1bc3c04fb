/* amx_conv.c: see amx_conv.h. */
#include "drdc/stages/amx_conv.h"
#include "drdc/shim/shim.h"
#include "drdc/stages/amx.h"

#include <stdlib.h>
#include <string.h>

#define AMX_MAX_PADDED_BYTES (96 * 1024)   /* stride-1 3x3: oneDNN is faster above (amx_conv.h) */

drdc_status drdc_amx_pack(drdc_amx_weights *pw, const uint16_t *w, const float *bias, int64_t out, int64_t in, int k) {
    memset(pw, 0, sizeof *pw);
    if (!w || out <= 0 || in <= 0 || out % 32 || in % 32 || (k != 1 && k != 3))
        return drdc_fail(DRDC_ERR_INPUT, "amx_conv: cannot pack a [%lld,%lld,%d,%d] weight (channels must be multiples "
                         "of 32, k 1 or 3)", (long long)out, (long long)in, k, k);
    const int64_t taps = (int64_t)k * k, kb_n = in / 32;
    pw->w = aligned_alloc(64, (size_t)(out * in * taps) * sizeof *pw->w);
    pw->bias = malloc((size_t)out * sizeof *pw->bias);
    if (!pw->w || !pw->bias) {
        drdc_amx_weights_free(pw);
        return drdc_fail(DRDC_ERR_NOMEM, "amx_conv: out of memory packing a [%lld,%lld,%d,%d] weight", (long long)out,
                         (long long)in, k, k);
    }
    for (int64_t nb = 0; nb < out / 16; nb++)
        for (int64_t tap = 0; tap < taps; tap++)
            for (int64_t kb = 0; kb < kb_n; kb++) {
                uint16_t *tile = pw->w + ((nb * taps + tap) * kb_n + kb) * 512;
                for (int64_t r = 0; r < 16; r++)       /* row r: input channels kb*32 + 2r, + 2r + 1 */
                    for (int64_t n = 0; n < 16; n++)   /* column n: output channel nb*16 + n */
                        for (int64_t e = 0; e < 2; e++)
                            tile[r * 32 + n * 2 + e] = w[((nb * 16 + n) * in + kb * 32 + 2 * r + e) * taps + tap];
            }
    for (int64_t o = 0; o < out; o++) pw->bias[o] = bias ? drdc_bf16_to_f32(drdc_f32_to_bf16(bias[o])) : 0.0f;
    pw->out = out, pw->in = in, pw->k = k;
    return DRDC_OK;
}

void drdc_amx_weights_free(drdc_amx_weights *pw) {
    if (!pw) return;
    free(pw->w);
    free(pw->bias);
    memset(pw, 0, sizeof *pw);
}

int drdc_amx_conv_fits(const drdc_amx_weights *pw, int stride, int64_t h, int64_t w) {
    if (!pw || !pw->w || !drdc_amx_active() || h <= 0 || w <= 0) return 0;
    if (pw->k == 1) return stride == 1 && (h * w) % 32 == 0;
    if (stride != 1 && stride != 2) return 0;
    if (h % stride || w % stride) return 0;
    const int64_t ho = h / stride, wo = w / stride;
    if (wo % 16 || (ho * wo) % 32) return 0;
    return stride == 2 || (h + 2) * (w + 2) * pw->in * 2 <= AMX_MAX_PADDED_BYTES;
}

#if DRDC_AMX_BUILT
typedef struct amx_job {
    const drdc_amx_weights *pw;
    const uint16_t *x;    /* [n][h][w][in] (1x1 with x2: the first in1 channels, [n][h*w][in1]) */
    const uint16_t *x2;   /* 1x1: the other in - in1 channels, [n][h*w][in - in1], or NULL */
    int64_t in1;          /* 1x1: x's channels (in without x2) */
    uint16_t *y;          /* [n][ho*wo][out] */
    int64_t h, w;         /* x's rows and columns */
    int64_t off;          /* 3x3: 1 when the zero border is virtual, 0 when x holds it (padded) */
    int64_t wo, po;       /* output columns, output pixels per image */
    int stride;
} amx_job;

/* Where the 16 input pixels of output tile t (16 pixels from output pixel t * 16 of image img) for
 * tap (dy, dx) lie: *row the input row's first pixel, *xi0 the first pixel's column (the others
 * follow at stride); for 1x1, *row NULL and *xi0 the tile's first pixel (a_rows finds each channel
 * block's part). 0 when that input row is in the zero border (the tap adds nothing); *edge = 1 when
 * a pixel falls in the border's columns (the tile is staged, stage_rows). */
static int tile_src(const amx_job *j, int64_t img, int64_t t, int dy, int dx, const uint16_t **row, int64_t *xi0,
                    int *edge) {
    const int64_t in = j->pw->in;
    *edge = 0;
    if (j->pw->k == 1) {   /* 1x1: the tile's first pixel (one_by_one gives each channel block's rows) */
        *row = NULL, *xi0 = img * j->po + t * 16;
        return 1;
    }
    const int64_t yo = t * 16 / j->wo, xo = t * 16 % j->wo, yi = yo * j->stride + dy - j->off;
    if (yi < 0 || yi >= j->h) return 0;
    *row = j->x + (img * j->h + yi) * j->w * in;
    *xi0 = xo * j->stride + dx - j->off;
    *edge = *xi0 < 0 || *xi0 + 15 * j->stride >= j->w;
    return 1;
}

/* A 1x1 tile's rows for channel block kb: pixels p.. p + 15 of x (channels below in1) or of x2; *stride
 * in bytes. */
static const uint16_t *one_by_one(const amx_job *j, int64_t p, int64_t kb, int64_t *stride) {
    const int64_t c = kb * 32;
    if (c < j->in1) {
        *stride = j->in1 * 2;
        return j->x + p * j->in1 + c;
    }
    const int64_t in2 = j->pw->in - j->in1;
    *stride = in2 * 2;
    return j->x2 + p * in2 + (c - j->in1);
}

/* An edge tile's 16 pixels of input channels kb*32.. +31 into dst ([16][32]), zeros in the border. */
static void stage_rows(uint16_t *dst, const amx_job *j, const uint16_t *row, int64_t xi0, int64_t kb) {
    for (int64_t i = 0; i < 16; i++) {
        const int64_t xi = xi0 + i * j->stride;
        if (xi >= 0 && xi < j->w) memcpy(dst + i * 32, row + xi * j->pw->in + kb * 32, 64);
        else memset(dst + i * 32, 0, 64);
    }
}

/* A tile's 16 rows of input channels kb*32.. +31, as tile_src placed them (row, xi0, edge): in x (or
 * x2) for 1x1, in x at stride for 3x3, or staged into stage for an edge tile; *stride in bytes.
 * Inlined into the AMX loop: called out of line, it made the stride-2 convolutions twice as slow
 * (73 -> 127 us at 128 px, measured). */
static inline __attribute__((always_inline)) const uint16_t *a_rows(const amx_job *j, const uint16_t *row,
                                                                    int64_t xi0, int edge, int64_t kb,
                                                                    uint16_t *stage, int64_t *stride) {
    if (j->pw->k == 1) return one_by_one(j, xi0, kb, stride);
    if (edge) {
        stage_rows(stage, j, row, xi0, kb);
        *stride = 64;
        return stage;
    }
    *stride = j->stride * j->pw->in * 2;
    return row + xi0 * j->pw->in + kb * 32;
}

/* Tasks [t0, t1): pairs of output tiles, image by image. Tiles 0-3 accumulate (pixel tile a or b) x
 * (channel block c or c+1), 4-5 the two inputs, 6-7 the two weight tiles. Where the zero border is
 * virtual, a tap whose input row is in it is skipped and a tile with pixels in its columns is staged
 * through a small buffer. */
DRDC_TARGET_AMX static void amx_task(void *ctx, int64_t t0, int64_t t1) {
    const amx_job *j = ctx;
    const drdc_amx_weights *pw = j->pw;
    const int64_t in = pw->in, out = pw->out, kb_n = in / 32, taps = (int64_t)pw->k * pw->k;
    const int64_t pairs = j->po / 32, wstride = taps * kb_n * 512;
    drdc_amx_tiles_16x64();
    float acc[4][16][16] __attribute__((aligned(64)));
    uint16_t staged[2][16 * 32] __attribute__((aligned(64)));
    for (int64_t task = t0; task < t1; task++) {
        const int64_t img = task / pairs, ta = task % pairs * 2;
        for (int64_t nb = 0; nb < out / 16; nb += 2) {
            const uint16_t *w0 = pw->w + nb * wstride, *w1 = w0 + wstride;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int64_t tap = 0; tap < taps; tap++) {
                const int dy = (int)(tap / pw->k), dx = (int)(tap % pw->k);
                const uint16_t *r0 = NULL, *r1 = NULL;
                int64_t x0 = 0, x1 = 0;
                int e0 = 0, e1 = 0;
                const int v0 = tile_src(j, img, ta, dy, dx, &r0, &x0, &e0);
                const int v1 = tile_src(j, img, ta + 1, dy, dx, &r1, &x1, &e1);
                if (!v0 && !v1) continue;
                for (int64_t kb = 0; kb < kb_n; kb++) {
                    const int64_t wo = (tap * kb_n + kb) * 512;
                    int64_t s0 = 0, s1 = 0;
                    if (v0) {
                        const uint16_t *a0 = a_rows(j, r0, x0, e0, kb, staged[0], &s0);
                        DRDC_AMX_FENCE();   /* staged rows are in memory before the load, the next */
                        _tile_loadd(4, a0, s0);   /* staging after it */
                        DRDC_AMX_FENCE();
                    }
                    _tile_loadd(6, w0 + wo, 64);
                    if (v0) _tile_dpbf16ps(0, 4, 6);
                    _tile_loadd(7, w1 + wo, 64);
                    if (v0) _tile_dpbf16ps(1, 4, 7);
                    if (v1) {   /* staged while the first tile's products run */
                        const uint16_t *a1 = a_rows(j, r1, x1, e1, kb, staged[1], &s1);
                        DRDC_AMX_FENCE();
                        _tile_loadd(5, a1, s1);
                        DRDC_AMX_FENCE();
                        _tile_dpbf16ps(2, 5, 6);
                        _tile_dpbf16ps(3, 5, 7);
                    }
                }
            }
            _tile_stored(0, acc[0], 64);
            _tile_stored(1, acc[1], 64);
            _tile_stored(2, acc[2], 64);
            _tile_stored(3, acc[3], 64);
            for (int m = 0; m < 2; m++)   /* + bias, one rounding to bf16 (nearest even; NaN stays NaN) */
                for (int r = 0; r < 16; r++) {
                    uint16_t *o = j->y + (img * j->po + (ta + m) * 16 + r) * out + nb * 16;
                    for (int q = 0; q < 2; q++) {
                        const __m512 v = _mm512_add_ps(_mm512_load_ps(acc[m * 2 + q][r]),
                                                       _mm512_loadu_ps(pw->bias + nb * 16 + q * 16));
                        _mm256_storeu_si256((__m256i *)(o + q * 16), (__m256i)_mm512_cvtneps_pbh(v));
                    }
                }
        }
    }
    _tile_release();
}
#endif

static drdc_status run_conv(const drdc_amx_weights *pw, const uint16_t *x, const uint16_t *x2, int64_t in1,
                            uint16_t *y, int64_t n, int64_t h, int64_t w, int stride);

drdc_status drdc_amx_conv(const drdc_amx_weights *pw, const uint16_t *x, uint16_t *y, int64_t n, int64_t h, int64_t w,
                          int stride) {
    return run_conv(pw, x, NULL, pw ? pw->in : 0, y, n, h, w, stride);
}

drdc_status drdc_amx_conv_1x1_split(const drdc_amx_weights *pw, const uint16_t *xa, int64_t in_a, const uint16_t *xb,
                                    uint16_t *y, int64_t n, int64_t h, int64_t w) {
    if (!pw || pw->k != 1 || !xb || in_a <= 0 || in_a % 32 || in_a >= pw->in)
        return drdc_fail(DRDC_ERR_INPUT, "amx_conv: a split input needs a 1x1 convolution and a first part of a "
                         "multiple of 32 channels below its %lld (got %lld)", (long long)(pw ? pw->in : 0),
                         (long long)in_a);
    return run_conv(pw, xa, xb, in_a, y, n, h, w, 1);
}

static drdc_status run_conv(const drdc_amx_weights *pw, const uint16_t *x, const uint16_t *x2, int64_t in1,
                            uint16_t *y, int64_t n, int64_t h, int64_t w, int stride) {
    if (!drdc_amx_conv_fits(pw, stride, h, w) || !x || !y || n <= 0)
        return drdc_fail(DRDC_ERR_STATE, "amx_conv: a %dx%d stride-%d convolution of %lld x %lld pixels cannot run "
                         "here (see drdc_amx_conv_fits)", pw ? pw->k : 0, pw ? pw->k : 0, stride, (long long)h,
                         (long long)w);
#if DRDC_AMX_BUILT
    const int64_t in = pw->in;
    amx_job j = {.pw = pw, .x = x, .x2 = x2, .in1 = in1, .y = y, .h = h, .w = w, .off = 1, .wo = w / stride,
                 .po = h / stride * (w / stride), .stride = stride};
    uint16_t *padded = NULL;
    if (pw->k == 3 && stride == 1) {
        /* a copy with its zero border (at most 96 KiB an image, drdc_amx_conv_fits): at 16 and 32 px most
         * tiles touch the border, which staging them costs more than this copy (measured: 13 against 22 us
         * for the U-Net's 64-channel 16 px convolution); stride 2 reads x as it is */
        const int64_t hp = h + 2, wp = w + 2;
        padded = malloc((size_t)(n * hp * wp * in) * sizeof *padded);
        if (!padded)
            return drdc_fail(DRDC_ERR_NOMEM, "amx_conv: out of memory padding [%lld,%lld,%lld,%lld]", (long long)n,
                             (long long)in, (long long)h, (long long)w);
        for (int64_t i = 0; i < n; i++) {
            uint16_t *p = padded + i * hp * wp * in;
            memset(p, 0, (size_t)(wp * in) * sizeof *p);                              /* top row */
            memset(p + (hp - 1) * wp * in, 0, (size_t)(wp * in) * sizeof *p);          /* bottom row */
            for (int64_t r = 0; r < h; r++) {
                uint16_t *row = p + (r + 1) * wp * in;
                memset(row, 0, (size_t)in * sizeof *row);                              /* left column */
                memcpy(row + in, x + (i * h + r) * w * in, (size_t)(w * in) * sizeof *x);
                memset(row + (w + 1) * in, 0, (size_t)in * sizeof *row);               /* right column */
            }
        }
        j.x = padded, j.h = hp, j.w = wp, j.off = 0;
    }
    const drdc_status st = dt_parallel_for(0, n * (j.po / 32), 4, amx_task, &j);
    free(padded);
    return st ? drdc_error_context(st, "amx_conv") : DRDC_OK;
#else
    return drdc_fail(DRDC_ERR_STATE, "amx_conv: not built for this compiler");
#endif
}
