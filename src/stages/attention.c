/* attention.c: the fused multi-head attention kernel of CPU inference (see attention.h), used by
 * base.c (UniAD's attention: libtorch 1.13 runs its batched products as one small GEMM per head and
 * its softmax at 0.7 ns a value; on the shared 224 px model, 196 tokens and 8 heads of 32, the
 * attention was half of the base model's time) and unet.c (the attention blocks at 16 px). */
#include "drdc/stages/attention.h"
#include "drdc/shim/shim.h"
#include "drdc/stages/amx.h"
#include "drdc/stages/simd.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_int g_fused_attention = 1;   /* drdc_attention_use_fused */

int drdc_attention_use_fused(int on) { return atomic_exchange(&g_fused_attention, on != 0); }

int drdc_attention_fused_active(void) {
    return DRDC_SIMD_AVX512 && atomic_load(&g_fused_attention) && drdc_cpu_avx512(0);
}

#if DRDC_SIMD_AVX512
/* One row of softmax over S scores (row holds Sp >= S, a multiple of 16): x = scale * score + mask
 * (mask a row of S, or NULL); the maximum and any NaN; row = exp(x - max), exactly 0 for the lanes
 * past S and where exp underflows; *inv = 1 / sum. Returns 1 (row untouched after the first pass,
 * *inv 0) when a score is NaN or the maximum infinite: the caller writes NaN, as libtorch's softmax
 * gives it (fail closed). */
DRDC_TARGET_AVX512 static inline int softmax_exp(float *row, int64_t S, int64_t Sp, const float *mask, float scale,
                                                 float *inv) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY), lo = _mm512_set1_ps(-87.3365447505531f);
    const __m512 sc = _mm512_set1_ps(scale);
    __m512 mx = ninf;
    __mmask16 nan = 0;
    for (int64_t s = 0; s < Sp; s += 16) {
        const __mmask16 live = drdc_lanes16(S - s);
        __m512 x = _mm512_mask_mul_ps(ninf, live, _mm512_maskz_loadu_ps(live, row + s), sc);
        if (mask) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(live, mask + s));
        nan |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
        mx = _mm512_max_ps(mx, x);
        _mm512_storeu_ps(row + s, x);
    }
    const float m = _mm512_reduce_max_ps(mx);
    *inv = 0.0f;
    if (nan || m == -INFINITY || m == INFINITY) return 1;
    const __m512 mv = _mm512_set1_ps(m);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t s = 0; s < Sp; s += 16) {
        const __m512 x = _mm512_sub_ps(_mm512_loadu_ps(row + s), mv);
        const __m512 e = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, lo, _CMP_GT_OQ), drdc_exp16(x));
        sum = _mm512_add_ps(sum, e);
        _mm512_storeu_ps(row + s, e);
    }
    *inv = 1.0f / _mm512_reduce_add_ps(sum);
    return 0;
}
#endif

#define ATTN_ROWS 4   /* query rows per pass: each K^T and V load serves this many rows */
/* Floats of one task's scratch: K_h^T [D][S_pad], V_h [S][D], ATTN_ROWS rows of scores [S_pad],
 * ATTN_ROWS query rows [D] (scaled). */
#define ATTN_SCRATCH(D, S, Sp) ((D) * (Sp) + (S) * (D) + ATTN_ROWS * (Sp) + ATTN_ROWS * (D))

typedef struct attn_job {
    const drdc_attention *a;  /* sizes, strides, mask, scale; its q, k, v, o unless the operands are bf16 */
    const uint16_t *q16, *k16, *v16;   /* bf16 operands (drdc_attention_run_bf16), else NULL */
    uint16_t *o16;
    int64_t S_pad;            /* S rounded up to 16 */
    float *scratch;           /* per task: ATTN_SCRATCH floats */
} attn_job;

/* Element i of operand p (float32) or p16 (bf16, widened exactly). */
static inline float operand(const float *p, const uint16_t *p16, int64_t i) {
    return p16 ? drdc_bf16_to_f32(p16[i]) : p[i];
}

#if DRDC_SIMD_AVX512

/* Query rows i0 .. i0 + R - 1 (R <= ATTN_ROWS, a constant where inlined) of image b, head h:
 * kt = K_h^T [D][S_pad], vt = V_h [S][D] (packed), rows = R rows of S_pad scores, qst = R rows of D
 * (the query rows staged here, times the scale). */
DRDC_TARGET_AVX512 static inline __attribute__((always_inline)) void attn_rows(const attn_job *j, int64_t b,
                                                                               int64_t h, const float *kt,
                                                                               const float *vt, float *rows,
                                                                               float *qst, int64_t i0,
                                                                               const int R) {
    const drdc_attention *a = j->a;
    const int64_t S = a->S, D = a->D, Sp = j->S_pad;
    const float *q[ATTN_ROWS];
    int64_t o[ATTN_ROWS];   /* where each row's output starts, in elements of o or o16 */
    float inv[ATTN_ROWS];
    int dead[ATTN_ROWS];
    for (int r = 0; r < R; r++) {
        const int64_t qi = b * a->qs.image + (i0 + r) * a->qs.row + h * a->qs.head;
        for (int64_t d = 0; d < D; d++) qst[r * D + d] = operand(a->q, j->q16, qi + d) * a->scale;
        q[r] = qst + r * D;
        o[r] = b * a->os.image + (i0 + r) * a->os.row + h * a->os.head;
    }
    /* scores: 4 key vectors (64 keys) x R rows in registers, then single key vectors */
    int64_t j0 = 0;
    for (; j0 + 64 <= Sp; j0 += 64) {
        __m512 acc[ATTN_ROWS][4];
        for (int r = 0; r < R; r++)
            for (int u = 0; u < 4; u++) acc[r][u] = _mm512_setzero_ps();
        for (int64_t d = 0; d < D; d++) {
            const float *kd = kt + d * Sp + j0;
            const __m512 k0 = _mm512_loadu_ps(kd), k1 = _mm512_loadu_ps(kd + 16), k2 = _mm512_loadu_ps(kd + 32),
                         k3 = _mm512_loadu_ps(kd + 48);
            for (int r = 0; r < R; r++) {
                const __m512 qd = _mm512_set1_ps(q[r][d]);
                acc[r][0] = _mm512_fmadd_ps(qd, k0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(qd, k1, acc[r][1]);
                acc[r][2] = _mm512_fmadd_ps(qd, k2, acc[r][2]);
                acc[r][3] = _mm512_fmadd_ps(qd, k3, acc[r][3]);
            }
        }
        for (int r = 0; r < R; r++)
            for (int u = 0; u < 4; u++) _mm512_storeu_ps(rows + r * Sp + j0 + 16 * u, acc[r][u]);
    }
    for (; j0 < Sp; j0 += 16) {
        __m512 acc[ATTN_ROWS];
        for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
        for (int64_t d = 0; d < D; d++) {
            const __m512 kv = _mm512_loadu_ps(kt + d * Sp + j0);
            for (int r = 0; r < R; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(q[r][d]), kv, acc[r]);
        }
        for (int r = 0; r < R; r++) _mm512_storeu_ps(rows + r * Sp + j0, acc[r]);
    }
    for (int r = 0; r < R; r++)   /* softmax per row, the mask added */
        dead[r] = softmax_exp(rows + r * Sp, S, Sp, a->mask ? a->mask + (i0 + r) * S : NULL, 1.0f, &inv[r]);
    /* o_r = inv_r sum_s e_rs v_s, 16 output columns at a time, two keys in flight per row */
    for (int64_t c = 0; c < D; c += 16) {
        const __mmask16 cm = drdc_lanes16(D - c);
        __m512 a0[ATTN_ROWS], a1[ATTN_ROWS];
        for (int r = 0; r < R; r++) a0[r] = a1[r] = _mm512_setzero_ps();
        int64_t s = 0;
        for (; s + 2 <= S; s += 2) {
            const __m512 v0 = _mm512_maskz_loadu_ps(cm, vt + s * D + c);
            const __m512 v1 = _mm512_maskz_loadu_ps(cm, vt + (s + 1) * D + c);
            for (int r = 0; r < R; r++) {
                a0[r] = _mm512_fmadd_ps(_mm512_set1_ps(rows[r * Sp + s]), v0, a0[r]);
                a1[r] = _mm512_fmadd_ps(_mm512_set1_ps(rows[r * Sp + s + 1]), v1, a1[r]);
            }
        }
        if (s < S) {
            const __m512 v0 = _mm512_maskz_loadu_ps(cm, vt + s * D + c);
            for (int r = 0; r < R; r++) a0[r] = _mm512_fmadd_ps(_mm512_set1_ps(rows[r * Sp + s]), v0, a0[r]);
        }
        for (int r = 0; r < R; r++) {
            const __m512 y = dead[r] ? _mm512_set1_ps(NAN)
                                     : _mm512_mul_ps(_mm512_add_ps(a0[r], a1[r]), _mm512_set1_ps(inv[r]));
            if (j->o16) drdc_store_bf16x16(j->o16 + o[r] + c, cm, y);
            else _mm512_mask_storeu_ps(a->o + o[r] + c, cm, y);
        }
    }
}

DRDC_TARGET_AVX512 static void attn_task(void *ctx, int64_t t0, int64_t t1) {
    const attn_job *j = ctx;
    const drdc_attention *a = j->a;
    const int64_t L = a->L, S = a->S, D = a->D, Sp = j->S_pad;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t b = t / a->H, h = t % a->H;
        float *kt = j->scratch + t * ATTN_SCRATCH(D, S, Sp), *vt = kt + D * Sp, *rows = vt + S * D;
        float *qst = rows + ATTN_ROWS * Sp;
        const int64_t kb = b * a->ks.image + h * a->ks.head, vb = b * a->vs.image + h * a->vs.head;
        for (int64_t s = 0; s < S; s++)   /* K_h^T, zero-padded to S_pad keys, and V_h, packed */
            for (int64_t d = 0; d < D; d++) {
                kt[d * Sp + s] = operand(a->k, j->k16, kb + s * a->ks.row + d);
                vt[s * D + d] = operand(a->v, j->v16, vb + s * a->vs.row + d);
            }
        for (int64_t d = 0; d < D; d++)
            for (int64_t s = S; s < Sp; s++) kt[d * Sp + s] = 0.0f;
        int64_t i = 0;
        for (; i + ATTN_ROWS <= L; i += ATTN_ROWS) attn_rows(j, b, h, kt, vt, rows, qst, i, ATTN_ROWS);
        for (; i < L; i++) attn_rows(j, b, h, kt, vt, rows, qst, i, 1);
    }
}
#endif

/* The checks both kernels make on their arguments: no NULL operand, every size at least 1. */
static drdc_status check_args(const char *what, int operands, const int64_t sizes[5]) {
    if (!operands) return drdc_fail(DRDC_ERR_INPUT, "%s: an operand is NULL", what);
    for (int i = 0; i < 5; i++)
        if (sizes[i] < 1)
            return drdc_fail(DRDC_ERR_INPUT, "%s: sizes B %lld, H %lld, L %lld, S %lld, D %lld must be >= 1", what,
                             (long long)sizes[0], (long long)sizes[1], (long long)sizes[2], (long long)sizes[3],
                             (long long)sizes[4]);
    return DRDC_OK;
}

/* The float32 kernel on job j (its operands checked by the caller). */
static drdc_status run_float32(attn_job *j) {
    const drdc_attention *a = j->a;
    if (!drdc_attention_fused_active())
        return drdc_fail(DRDC_ERR_STATE, "fused attention: needs AVX-512 (and the kernel switched on)");
#if DRDC_SIMD_AVX512
    j->S_pad = (a->S + 15) / 16 * 16;
    j->scratch = malloc(sizeof(float) * (size_t)(a->B * a->H * ATTN_SCRATCH(a->D, a->S, j->S_pad)));
    if (!j->scratch)
        return drdc_fail(DRDC_ERR_NOMEM, "fused attention: out of memory for %lld heads' keys", (long long)(a->B * a->H));
    drdc_status st = dt_parallel_for(0, a->B * a->H, 1, attn_task, j);
    free(j->scratch);
    if (!st) dt_flops_add(2 * 2 * a->B * a->H * a->L * a->S * a->D);   /* q k^T and the weights times v */
    return st;
#else
    return DRDC_OK;   /* not reached: drdc_attention_fused_active() is 0 */
#endif
}

drdc_status drdc_attention_run(const drdc_attention *a) {
    if (!a) return drdc_fail(DRDC_ERR_INPUT, "fused attention: an operand is NULL");
    drdc_status st = check_args("fused attention", a->q && a->k && a->v && a->o,
                                (const int64_t[5]){a->B, a->H, a->L, a->S, a->D});
    if (st) return st;
    attn_job j = {.a = a};
    return run_float32(&j);
}

drdc_status drdc_attention_run_bf16(const drdc_attention16 *a) {
    if (!a) return drdc_fail(DRDC_ERR_INPUT, "fused attention (bf16 operands): an operand is NULL");
    drdc_status st = check_args("fused attention (bf16 operands)", a->q && a->k && a->v && a->o,
                                (const int64_t[5]){a->B, a->H, a->L, a->S, a->D});
    if (st) return st;
    const drdc_attention f = {.qs = a->qs, .ks = a->ks, .vs = a->vs, .os = a->os, .mask = a->mask, .B = a->B,
                              .H = a->H, .L = a->L, .S = a->S, .D = a->D, .scale = a->scale};
    attn_job j = {.a = &f, .q16 = a->q, .k16 = a->k, .v16 = a->v, .o16 = a->o};
    return run_float32(&j);
}

/* ---- bf16 on AMX tiles ------------------------------------------------------------------------ */

#define ATTN16_MAX_S 8192

int drdc_attention16_fits(int64_t L, int64_t S, int64_t D) {
    return drdc_attention_fused_active() && drdc_amx_active() && (D == 32 || D == 64) && L >= 1 && S >= 1 &&
           S <= ATTN16_MAX_S;
}

#define ATTN16_SP(S) (((S) + 31) / 32 * 32)   /* keys padded to whole tiles */
/* bf16 values of one task's scratch: K_h's tiles, V_h's tiles, 16 rows of weights, 16 staged query
 * rows; then 16 rows of float32 scores (2 bf16 each). Sp = ATTN16_SP(S). */
#define ATTN16_SCRATCH(Sp, D) (2 * (Sp) * (D) + 16 * (Sp) + 16 * (D) + 2 * 16 * (Sp))

typedef struct attn16_job {
    const drdc_attention16 *a;
    uint16_t *scratch;   /* per task: ATTN16_SCRATCH values, 64-byte aligned */
} attn16_job;

#if DRDC_AMX_BUILT
/* One (image, head): K_h packed as the scores' right operand (per 16 keys and 32 channels, a tile
 * of channel pairs x keys), V_h as the output's (per 32 keys and 16 channels, key pairs x channels),
 * both zero past the S keys; then per 16 query rows (the last block's rows staged, zero past L):
 * scores on the tiles, softmax (the mask added, the padding keys 0), weights x V on the tiles. */
DRDC_TARGET_AMX static void attn16_head(const attn16_job *j, int64_t b, int64_t h, uint16_t *kt) {
    const drdc_attention16 *a = j->a;
    const int64_t S = a->S, Sp = ATTN16_SP(S), D = a->D, db_n = D / 32;
    uint16_t *vt = kt + Sp * D, *p = vt + Sp * D, *qst = p + 16 * Sp;
    float *scores = (float *)(qst + 16 * D);
    const uint16_t *kb = a->k + b * a->ks.image + h * a->ks.head, *vb = a->v + b * a->vs.image + h * a->vs.head;
    memset(kt, 0, (size_t)(2 * Sp * D) * sizeof *kt);   /* the padding keys and values */
    for (int64_t s0 = 0; s0 < S; s0 += 16)   /* K tile (keys s0.., channels d0..): row r, column n = the */
        for (int64_t d0 = 0; d0 < D; d0 += 32) {   /* channel pair d0 + 2r of key s0 + n (a 32-bit transpose) */
            uint16_t *tile = kt + ((s0 / 16) * db_n + d0 / 32) * 512;
            for (int64_t n = 0; n < 16 && s0 + n < S; n++) {
                const uint16_t *key = kb + (s0 + n) * a->ks.row + d0;
                for (int64_t r = 0; r < 16; r++) memcpy(tile + r * 32 + n * 2, key + 2 * r, 4);
            }
        }
    for (int64_t s = 0; s < S; s++) {   /* V tile (keys s0.., channels c0..): row r = keys s0 + 2r and */
        const uint16_t *vs = vb + s * a->vs.row;   /* s0 + 2r + 1, their values of channel c0 + n interleaved */
        for (int64_t c0 = 0; c0 < D; c0 += 16) {
            uint16_t *row = vt + ((s / 32) * (D / 16) + c0 / 16) * 512 + (s % 32 / 2) * 32 + s % 2;
            for (int64_t n = 0; n < 16; n++) row[2 * n] = vs[c0 + n];
        }
    }
    float acc[2][16][16] __attribute__((aligned(64)));
    for (int64_t i0 = 0; i0 < a->L; i0 += 16) {
        const int64_t rows = a->L - i0 < 16 ? a->L - i0 : 16;
        const uint16_t *q = a->q + b * a->qs.image + i0 * a->qs.row + h * a->qs.head;
        int64_t qrow = a->qs.row;
        if (rows < 16) {   /* the last rows, staged: a tile reads 16 */
            memset(qst, 0, (size_t)(16 * D) * sizeof *qst);
            for (int64_t r = 0; r < rows; r++) memcpy(qst + r * D, q + r * a->qs.row, (size_t)D * sizeof *qst);
            q = qst, qrow = D;
        }
        DRDC_AMX_FENCE();   /* the packed keys and values, the staged rows, the last block's weights */
        for (int64_t s0 = 0; s0 < Sp; s0 += 32) {   /* scores of keys s0 .. s0 + 31 */
            _tile_zero(0);
            _tile_zero(1);
            for (int64_t db = 0; db < db_n; db++) {
                _tile_loadd(6, q + db * 32, qrow * 2);
                _tile_loadd(4, kt + ((s0 / 16) * db_n + db) * 512, 64);
                _tile_loadd(5, kt + ((s0 / 16 + 1) * db_n + db) * 512, 64);
                _tile_dpbf16ps(0, 6, 4);
                _tile_dpbf16ps(1, 6, 5);
            }
            _tile_stored(0, scores + s0, Sp * 4);
            _tile_stored(1, scores + s0 + 16, Sp * 4);
        }
        int dead[16];
        for (int r = 0; r < 16; r++) {   /* softmax, then the weights in bf16, as libtorch's bf16 softmax */
            float *row = scores + r * Sp, inv = 0.0f;
            dead[r] = r < rows ? softmax_exp(row, S, Sp, a->mask ? a->mask + (i0 + r) * S : NULL, a->scale, &inv) : 1;
            const __m512 iv = _mm512_set1_ps(inv);   /* 0 for a dead or padding row: its weights 0 */
            for (int64_t s = 0; s < Sp; s += 16)
                _mm256_storeu_si256((__m256i *)(p + r * Sp + s),
                                    (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(row + s), iv)));
        }
        DRDC_AMX_FENCE();   /* the weights are in memory before the tiles load them */
        for (int64_t c0 = 0; c0 < D; c0 += 32) {   /* output channels c0 .. c0 + 31 */
            _tile_zero(0);
            _tile_zero(1);
            for (int64_t s0 = 0; s0 < Sp; s0 += 32) {
                _tile_loadd(4, p + s0, Sp * 2);
                _tile_loadd(5, vt + ((s0 / 32) * (D / 16) + c0 / 16) * 512, 64);
                _tile_loadd(6, vt + ((s0 / 32) * (D / 16) + c0 / 16 + 1) * 512, 64);
                _tile_dpbf16ps(0, 4, 5);
                _tile_dpbf16ps(1, 4, 6);
            }
            _tile_stored(0, acc[0], 64);
            _tile_stored(1, acc[1], 64);
            for (int r = 0; r < rows; r++) {
                uint16_t *o = a->o + b * a->os.image + (i0 + r) * a->os.row + h * a->os.head + c0;
                for (int u = 0; u < 2; u++) {
                    const __m512 y = dead[r] ? _mm512_set1_ps(NAN) : _mm512_load_ps(acc[u][r]);
                    _mm256_storeu_si256((__m256i *)(o + 16 * u), (__m256i)_mm512_cvtneps_pbh(y));
                }
            }
        }
    }
}

DRDC_TARGET_AMX static void attn16_task(void *ctx, int64_t t0, int64_t t1) {
    const attn16_job *j = ctx;
    drdc_amx_tiles_16x64();
    for (int64_t t = t0; t < t1; t++)
        attn16_head(j, t / j->a->H, t % j->a->H, j->scratch + t * ATTN16_SCRATCH(ATTN16_SP(j->a->S), j->a->D));
    _tile_release();
}
#endif

drdc_status drdc_attention16_run(const drdc_attention16 *a) {
    if (!a) return drdc_fail(DRDC_ERR_INPUT, "bf16 attention: an operand is NULL");
    drdc_status st = check_args("bf16 attention", a->q && a->k && a->v && a->o,
                                (const int64_t[5]){a->B, a->H, a->L, a->S, a->D});
    if (st) return st;
    if (!drdc_attention16_fits(a->L, a->S, a->D))
        return drdc_fail(DRDC_ERR_STATE, "bf16 attention: L %lld, S %lld, D %lld cannot run here (AMX, D 32 or 64, S up "
                         "to %d)", (long long)a->L, (long long)a->S, (long long)a->D, ATTN16_MAX_S);
#if DRDC_AMX_BUILT
    const size_t per = (size_t)ATTN16_SCRATCH(ATTN16_SP(a->S), a->D), n = (size_t)(a->B * a->H) * per * sizeof(uint16_t);
    attn16_job j = {a, aligned_alloc(64, (n + 63) / 64 * 64)};
    if (!j.scratch)
        return drdc_fail(DRDC_ERR_NOMEM, "bf16 attention: out of memory for %lld heads' keys", (long long)(a->B * a->H));
    st = dt_parallel_for(0, a->B * a->H, 1, attn16_task, &j);
    free(j.scratch);
    if (!st) dt_flops_add(2 * 2 * a->B * a->H * a->L * a->S * a->D);   /* q k^T and the weights times v */
    return st;
#else
    return DRDC_OK;   /* not reached: drdc_attention16_fits is 0 */
#endif
}
