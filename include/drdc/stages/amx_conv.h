/* amx_conv.h: bf16 convolutions on AMX tiles for CPU inference (the refiner U-Net's small ones).
 * Through libtorch 1.13 each oneDNN convolution call costs about 20 us before it computes (measured
 * on the U-Net's 1x1 convolutions at 16 px: 22 us for 2 MFLOP), and its stride-2 and 1x1 kernels
 * run well below its 3x3 ones; a U-Net pass makes 53 such calls. Here a call is a loop of AMX tile
 * products on the activations as they lie (channels-last bf16), with the weights packed once:
 * 16 output pixels x 16 output channels per accumulator tile, 2 x 2 accumulators per step,
 * float32 sums, the bias added in float32 and one rounding to bf16 (as oneDNN). */
#ifndef DRDC_STAGES_AMX_CONV_H
#define DRDC_STAGES_AMX_CONV_H

#include <stdint.h>

#include "drdc/core/error.h"
#include "drdc/stages/amx.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A convolution's weights packed for the tiles: per block of 16 output channels, per tap, per
 * block of 32 input channels, one 16 x 32 bf16 tile of input-channel pairs (AMX's VNNI layout). */
typedef struct drdc_amx_weights {
    uint16_t *w;        /* out/16 x k*k x in/32 x 512 bf16 */
    float *bias;        /* [out]: the bias rounded to bf16 (as autocast casts it), in float32 */
    int64_t out, in;    /* channels: multiples of 32 */
    int k;              /* 1 or 3 (padding k / 2) */
} drdc_amx_weights;

/* Packs w ([out,in,k,k] bf16, contiguous) and bias ([out] float32, or NULL for none). DRDC_ERR_INPUT
 * unless out and in are multiples of 32 and k is 1 or 3. *pw is freed with drdc_amx_weights_free. */
drdc_status drdc_amx_pack(drdc_amx_weights *pw, const uint16_t *w, const float *bias, int64_t out, int64_t in, int k);
void drdc_amx_weights_free(drdc_amx_weights *pw);

/* Whether drdc_amx_conv runs pw at this stride on an input of h x w pixels: drdc_amx_active(),
 * the output's pixels a multiple of 32 (rows of a multiple of 16 for k = 3), and a shape where it was
 * measured faster than oneDNN on this project's machine (docs/BENCH.md section 12): every 1x1 and
 * stride-2 3x3 convolution; a stride-1 3x3 one when its zero-padded input is at most 96 KiB (at
 * larger maps oneDNN's direct 3x3 kernel is faster). */
int drdc_amx_conv_fits(const drdc_amx_weights *pw, int stride, int64_t h, int64_t w);

/* y = conv(x, w) + bias: x [n][h][w][in] bf16 (channels-last), y [n][h/stride][w/stride][out]
 * bf16; stride 1 or 2 (2: k = 3 only). Runs on libtorch's intra-op threads. DRDC_ERR_STATE where
 * drdc_amx_conv_fits says 0. */
drdc_status drdc_amx_conv(const drdc_amx_weights *pw, const uint16_t *x, uint16_t *y, int64_t n, int64_t h, int64_t w,
                          int stride);

/* A 1x1 convolution on an input given in two parts along its channels (the U-Net decoder's
 * concatenation, never written): xa [n][h][w][in_a], xb [n][h][w][in - in_a], in_a a multiple of 32;
 * the same sums in the same order as drdc_amx_conv on the concatenation. DRDC_ERR_INPUT for another
 * convolution or split, DRDC_ERR_STATE as drdc_amx_conv. */
drdc_status drdc_amx_conv_1x1_split(const drdc_amx_weights *pw, const uint16_t *xa, int64_t in_a, const uint16_t *xb,
                                    uint16_t *y, int64_t n, int64_t h, int64_t w);

#ifdef __cplusplus
}
#endif

#endif
