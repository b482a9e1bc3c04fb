/* attention.h: the fused multi-head attention kernel of CPU inference, shared by the base
 * transformer's attention (base.c) and the refiner U-Net's attention blocks (unet.c).
 * softmax(q k^T * scale + mask) v for every (image, head) in one C kernel: float32, AVX-512 F, on
 * the operands where the layers leave them (any strides per image, row and head: no head permutes,
 * no score tensor). One task per (image, head) on libtorch's intra-op threads: K_h^T packed so that
 * a query's scores come out 16 keys per FMA, softmax in float32 (masked keys exactly 0), the output
 * row accumulated over the keys. A row whose scores hold a NaN, or whose keys are all masked, comes
 * out NaN, as libtorch's softmax gives it (fail closed). */
#ifndef DRDC_STAGES_ATTENTION_H
#define DRDC_STAGES_ATTENTION_H

#include <stdint.h>

#include "drdc/core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where element d of head h, row i, image b lies: p + b * image + i * row + h * head + d (floats). */
typedef struct drdc_attn_strides {
    int64_t image, row, head;
} drdc_attn_strides;

typedef struct drdc_attention {
    const float *q, *k, *v;            /* q: L rows per image; k, v: S rows */
    float *o;                          /* L rows per image; must not overlap q, k or v */
    drdc_attn_strides qs, ks, vs, os;
    const float *mask;                 /* [L][S] added to the scores, or NULL */
    int64_t B, H, L, S, D;             /* images, heads, query rows, key rows, columns per head */
    float scale;                       /* on the scores q k^T */
} drdc_attention;

/* Runs a (B * H tasks). DRDC_ERR_STATE where drdc_attention_fused_active() is 0; DRDC_ERR_INPUT for
 * sizes below 1 or NULL operands. */
drdc_status drdc_attention_run(const drdc_attention *a);

/* drdc_attention_use_fused(0) makes the stages take libtorch's ops for their attention from then on,
 * (1) (the default) this kernel where the CPU has AVX-512; returns the previous setting
 * (process-wide; for tests and measurements). drdc_attention_fused_active: whether the stages would
 * now take the kernel. */
int drdc_attention_use_fused(int on);
int drdc_attention_fused_active(void);

/* The same attention on bf16 operands with AMX tiles (the U-Net's and the base model's heads under
 * bf16 autocast): per 16 query rows, the scores q k^T in float32 on the tiles, softmax in float32
 * (AVX-512, the mask added), the weights rounded to bf16 (as libtorch's bf16 softmax gives them)
 * and multiplied with v on the tiles, the output rounded once to bf16. Strides in bf16 values; keys
 * and query rows padded to whole tiles inside. A row whose scores hold a NaN, or whose keys are all
 * masked, comes out NaN. */
typedef struct drdc_attention16 {
    const uint16_t *q, *k, *v;
    uint16_t *o;                       /* must not overlap q, k or v */
    drdc_attn_strides qs, ks, vs, os;
    const float *mask;                 /* [L][S] added to the scores, or NULL */
    int64_t B, H, L, S, D;
    float scale;
} drdc_attention16;

/* Whether drdc_attention16_run takes these sizes: drdc_attention_fused_active() and
 * drdc_amx_active(), D 32 or 64, S up to 8192. */
int drdc_attention16_fits(int64_t L, int64_t S, int64_t D);

/* Runs a (B * H tasks). DRDC_ERR_STATE where drdc_attention16_fits says 0; DRDC_ERR_INPUT for sizes
 * below 1 or NULL operands. */
drdc_status drdc_attention16_run(const drdc_attention16 *a);

/* The float32 kernel (drdc_attention_run) on bf16 operands, for a CPU without AMX: q, k and v
 * widened exactly, float32 throughout, the output rounded once to bf16 (nearest even, NaN kept):
 * the same values to the bit as casting q, k and v to float32, drdc_attention_run, and casting its
 * output to bf16, without the casts' tensors. Strides in bf16 values. Errors as drdc_attention_run. */
drdc_status drdc_attention_run_bf16(const drdc_attention16 *a);

#ifdef __cplusplus
}
#endif
#endif
