/* unet.h: DRDC's refiner network eps_theta(x_t, t, x~_k) (paper 4.5, eq. 10; DESIGN.md section 3):
 * "the U-Net of Dhariwal and Nichol", i.e. openai/guided-diffusion's UNetModel
 * (guided_diffusion/unet.py, nn.py), written in C over the libtorch shim.
 *
 * The subset built (guided-diffusion's flags in brackets):
 *   6 input channels = concat(x_t, cond) on channels (x_t first) with model conditioning (eq. 10), or 3
 *   (x_t alone, cond ignored) when cfg->model_conditioning is 0 (the paper's ablation); 3 output channels (eps);
 *   use_scale_shift_norm = True, conv_resample = True, resblock_updown = False,
 *   num_head_channels = cfg->head_channels (heads = channels / head_channels),
 *   use_new_attention_order = False: QKVAttentionLegacy (heads split BEFORE q,k,v: the qkv conv's
 *   3C output channels are laid out head by head, each head [q(ch) k(ch) v(ch)]), which is also
 *   the layout of improved-diffusion's checkpoints; no class embedding, no fp16 conversion.
 * Forward, as UNetModel.forward:
 *   emb = time_embed(timestep_embedding(t, C))      C = cfg->channels, emb [N,4C]
 *     timestep_embedding: half = C/2, freqs_i = exp(-ln(10000) * i / half) (float32), args = t * freqs,
 *     [cos(args), sin(args)] (cos first), a zero column when C is odd;
 *     time_embed = Linear(C,4C) SiLU Linear(4C,4C)
 *   input_blocks: [conv3x3 6->ch0], then per level l (mult m_l): res_blocks x [ResBlock(->m_l C)
 *     (+ AttentionBlock when the level's resolution is in cfg->attention_res)], and after every
 *     level but the last a Downsample (3x3 conv, stride 2, padding 1); each block's output is kept
 *   middle_block: ResBlock, AttentionBlock, ResBlock (attention always, as guided-diffusion)
 *   output_blocks: levels from the last up, res_blocks + 1 blocks each: h = cat([h, skip], dim 1)
 *     (h first), ResBlock(->m_l C) (+ AttentionBlock), and on the level's last block (not level 0)
 *     an Upsample (nearest x2, then 3x3 conv)
 *   out: GroupNorm SiLU conv3x3(ch0 -> 3)
 * ResBlock(x, emb): h = conv3x3(SiLU(GN(x))); scale, shift = chunk(Linear(SiLU(emb)), 2) (scale
 *   first); h = GN(h) * (1 + scale) + shift; h = conv3x3(Dropout(SiLU(h))); return skip(x) + h,
 *   skip = identity or a 1x1 conv when the channel count changes.
 * AttentionBlock(x): qkv = conv1x1(GN(x)) -> per head q, k, v [ch, L] (L = H*W); w = softmax over
 *   s of (q s)^T (k s) with s = ch^(-1/4); a = v w^T; return x + conv1x1(a) (proj_out).
 * GroupNorm is GroupNorm32: 32 groups, eps 1e-5, computed in float32 (also under bf16 autocast,
 * which keeps group_norm in float32).
 *
 * Parameters live in unet->params under guided-diffusion's state-dict names, e.g.
 *   time_embed.0.weight [4C,C]          time_embed.2.weight [4C,4C]
 *   input_blocks.0.0.weight [ch0,6,3,3]
 *   input_blocks.1.0.in_layers.0.weight [ch] (GN)   .in_layers.2.weight [out,ch,3,3]
 *   input_blocks.1.0.emb_layers.1.weight [2 out,4C] .out_layers.0.weight [out] (GN)
 *   input_blocks.1.0.out_layers.3.weight [out,out,3,3]  .skip_connection.weight [out,ch,1,1]
 *   input_blocks.1.1.norm.weight [ch]  .qkv.weight [3ch,ch,1]  .proj_out.weight [ch,ch,1]
 *   input_blocks.N.0.op.weight [ch,ch,3,3] (Downsample)   output_blocks.N.K.conv.weight (Upsample)
 *   middle_block.0 / .1 / .2, output_blocks.N..., out.0.weight [ch0] (GN), out.2.weight [3,ch0,3,3]
 * (each with its .bias), so a guided-diffusion / improved-diffusion state dict of the same shape
 * loads with drdc_params_load unchanged.
 * Initialisation as guided-diffusion: PyTorch's defaults (Conv and Linear weight and bias
 * U(+-1/sqrt(fan_in)), GroupNorm weight 1, bias 0), and zero_module (weight and bias 0) on every
 * ResBlock's out_layers.3, every AttentionBlock's proj_out and out.2: a new model outputs 0.
 *
 * Equations (DESIGN.md section 3): the network eps_theta of (5) and (10), on concat(x_t, x~_k):
 * drdc_unet_forward (drdc_unet_eps is it as the sampler's callback); its training loss (6)/(10)
 * is diffusion.h's drdc_diffusion_loss. */
#ifndef DRDC_UNET_H
#define DRDC_UNET_H

#include <stdint.h>

#include "drdc/core/config.h"
#include "drdc/core/error.h"
#include "drdc/formats/params.h"
#include "drdc/shim/shim.h"
#include "drdc/stages/amx_conv.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DRDC_UNET_OUT_CHANNELS 3   /* eps */

/* Input channels: 6 = concat(x_t, cond) with model conditioning (eq. 10), else 3 (x_t only). */
static inline int drdc_unet_in_channels(const drdc_refiner_config *cfg) { return cfg->model_conditioning ? 6 : 3; }

/* One convolution: its weight and bias (borrowed from the model's params) and, once
 * drdc_unet_prepare has made them, copies for inference (owned): the weight as [out,in,k,k]
 * stored channels-last, the layout of the activations, and both in the dtype the convolutions run
 * in, so that a call neither casts nor reorders them. The forward pass takes the copies only while
 * w's and b's versions (dt_version) are still those they were made from: a weight written since
 * (a training step, a load) is read from the params as before. */
typedef struct drdc_unet_conv {
    dt_tensor w, b;                    /* borrowed: [out,in,k,k] ([out,in,1] for the attention's Conv1d), [out] */
    dt_tensor run_w, run_b;            /* owned copies, or NULL */
    drdc_amx_weights amx;              /* owned: w and b packed for amx_conv.h (bf16 copies on an AMX CPU), or empty */
    int64_t w_ver, b_ver;              /* w's and b's versions when the copies were made */
} drdc_unet_conv;

/* One GroupNorm's weight and bias (borrowed) and, once drdc_unet_prepare has made it, their values
 * on the host for the fused norm kernel (owned; [2C] floats: w, then b), used while w's and b's
 * versions are those they were read at. */
typedef struct drdc_unet_norm {
    dt_tensor w, b;                    /* [C], [C] */
    float *host;                       /* owned, or NULL */
    int64_t w_ver, b_ver;
} drdc_unet_norm;

/* One ResBlock (borrowed handles into the model's params). */
typedef struct drdc_unet_resblock {
    int in_ch, out_ch;
    drdc_unet_norm in_norm;            /* in_layers.0   [in_ch], [in_ch] */
    drdc_unet_conv in_conv;            /* in_layers.2   [out_ch,in_ch,3,3], [out_ch] */
    dt_tensor emb_w, emb_b;            /* emb_layers.1  [2*out_ch,4C], [2*out_ch] (scale rows, then shift) */
    int64_t emb_row;                   /* prepared: its first row in the U-Net's emb_all_w */
    int64_t emb_w_ver, emb_b_ver;      /* prepared: emb_w's and emb_b's versions when copied */
    drdc_unet_norm out_norm;           /* out_layers.0  [out_ch], [out_ch] */
    drdc_unet_conv out_conv;           /* out_layers.3  [out_ch,out_ch,3,3], [out_ch] (zero-initialised) */
    drdc_unet_conv skip;               /* skip_connection [out_ch,in_ch,1,1], [out_ch]; w NULL when in_ch == out_ch */
} drdc_unet_resblock;

/* One AttentionBlock. */
typedef struct drdc_unet_attn {
    int ch, heads;                     /* heads = ch / head_channels */
    drdc_unet_norm norm;               /* norm      [ch], [ch] */
    drdc_unet_conv qkv;                /* qkv       [3ch,ch,1], [3ch] (Conv1d; legacy head-major layout) */
    drdc_unet_conv proj;               /* proj_out  [ch,ch,1], [ch] (Conv1d, zero-initialised) */
} drdc_unet_attn;

typedef enum drdc_unet_conv_kind {
    DRDC_UNET_CONV_NONE = 0,
    DRDC_UNET_CONV_INPUT = 1,          /* input_blocks.0.0: 3x3 conv, 6 -> ch0 */
    DRDC_UNET_CONV_DOWN = 2,           /* Downsample "op": 3x3 conv, stride 2, padding 1 */
    DRDC_UNET_CONV_UP = 3,             /* Upsample "conv": nearest x2, then 3x3 conv */
} drdc_unet_conv_kind;

/* One TimestepEmbedSequential of input_blocks / output_blocks: [ResBlock] [AttentionBlock] [conv],
 * run in that order; absent parts are skipped. */
typedef struct drdc_unet_block {
    int has_res;
    drdc_unet_resblock res;            /* layer 0 when present */
    int has_attn;
    drdc_unet_attn attn;               /* layer 1 */
    drdc_unet_conv_kind conv_kind;
    drdc_unet_conv conv;               /* [out,in,3,3], [out] (names: "N.0" input, "N.0.op" down, "N.K.conv" up) */
    int out_ch;                        /* channels of the block's output */
} drdc_unet_block;

typedef struct drdc_unet {
    drdc_refiner_config cfg;           /* copy of the config it was built with */
    int model_channels;                /* C = cfg.channels (timestep embedding width) */
    int emb_channels;                  /* 4C */
    int levels;                        /* cfg.n_mult */
    int min_divisor;                   /* 2^(levels-1): H and W must be multiples of it */
    dt_device dev;
    drdc_params params;                /* owns every parameter (guided-diffusion state-dict names) */
    /* borrowed views into params, for the forward pass */
    dt_tensor temb0_w, temb0_b;        /* time_embed.0  [4C,C], [4C] */
    dt_tensor temb2_w, temb2_b;        /* time_embed.2  [4C,4C], [4C] */
    int n_in;                          /* 1 + levels*res_blocks + (levels-1) */
    drdc_unet_block *in;               /* [n_in] input_blocks (owned array) */
    drdc_unet_resblock mid_res0;       /* middle_block.0 */
    drdc_unet_attn mid_attn;           /* middle_block.1 */
    drdc_unet_resblock mid_res2;       /* middle_block.2 */
    int n_out;                         /* levels*(res_blocks+1) == n_in */
    drdc_unet_block *out;              /* [n_out] output_blocks (owned array) */
    drdc_unet_norm out_norm;           /* out.0  [ch0], [ch0] */
    drdc_unet_conv out_conv;           /* out.2  [3,ch0,3,3], [3] (zero-initialised) */
    /* drdc_unet_prepare: every ResBlock's emb_layers.1 stacked (rows emb_row.. of each), so that a
     * pass projects the embedding once for all of them (owned, or NULL) */
    dt_tensor emb_all_w, emb_all_b;    /* [sum 2*out_ch, 4C], [sum 2*out_ch] */
    float *temb_freqs;                 /* owned: prepare's copy of the timestep embedding's C/2 frequencies, or NULL */
} drdc_unet;

/* The U-Net's architecture rules (DRDC_ERR_CONFIG naming the keys): 1..DRDC_MAX_LIST levels
 * (refiner.channel_mult); refiner.image_size divisible by 2^(levels-1); channels x mult a multiple
 * of 32 at every level (GroupNorm(32)); each attention_res is a level's resolution;
 * head_channels divides the channels at every attention resolution and in the middle block. */
drdc_status drdc_unet_check_config(const drdc_refiner_config *cfg);

/* The floating-point operations of one forward pass of n images of h x w (2 x multiply-adds of
 * every convolution, Linear and attention product, from the layer shapes of cfg: what the shim's
 * dt_flops_done counts for the same call; norms and elementwise ops are not counted). -1 when cfg
 * fails drdc_unet_check_config. */
int64_t drdc_unet_flops(const drdc_refiner_config *cfg, int64_t n, int64_t h, int64_t w);

/* Builds the U-Net for cfg (image_size, channels, channel_mult, res_blocks, attention_res,
 * head_channels, dropout) on dev, with guided-diffusion's initialisation drawn from a CPU
 * generator seeded with `seed`. Checks (DRDC_ERR_CONFIG naming the key): drdc_unet_check_config,
 * res_blocks >= 1, dropout in [0,1). On failure *unet is left zeroed. */
drdc_status drdc_unet_build(drdc_unet *unet, const drdc_refiner_config *cfg, dt_device dev, uint64_t seed);

/* eps_theta(x_t, t, cond):
 *   *eps   [N,3,H,W] f32, a new handle owned by the caller
 *   x_t    [N,3,H,W] f32 noisy image, on the model's device
 *   t      [N] timesteps, any integer or float dtype (fractional values allowed, as guided-diffusion)
 *   cond   [N,3,H,W] f32 condition x~_k (ignored, and may be NULL, without model conditioning)
 * H and W must be multiples of 2^(levels-1) (normally both cfg.image_size); attention sits on the
 * levels chosen at build time. training = 1 applies dropout (p = cfg.dropout, masks drawn from g;
 * NULL g: libtorch's default generator); training = 0 applies none. Autograd follows the caller's
 * grad mode. Runs inside a shim scope: no temporary handle outlives the call, also on failure. */
drdc_status drdc_unet_forward(dt_tensor *eps, const drdc_unet *unet, dt_tensor x_t, dt_tensor t, dt_tensor cond,
                              int training, dt_generator g);

/* The network as diffusion.h's drdc_eps_fn callback (same signature; ctx is a const drdc_unet *):
 * eval mode (no dropout) with autograd off during the call (the grad mode is restored). */
drdc_status drdc_unet_eps(dt_tensor *eps, void *ctx, dt_tensor x_t, dt_tensor t, dt_tensor cond);

/* The fused GroupNorm+SiLU kernel of CPU inference (channels-last, no autograd) comes in two
 * versions: AVX-512 intrinsics (AVX-512 F; also BW and BF16 for bf16 activations) and a portable one
 * the compiler vectorises. drdc_unet_use_avx512(0) makes every later call take the portable one,
 * (1) (the default) the AVX-512 one where the CPU has it; returns the previous setting (process-wide;
 * for tests and measurements). drdc_unet_avx512_active: whether a call would now take AVX-512 for
 * that dtype (bf16 = 1) and channel count. */
int drdc_unet_use_avx512(int on);
int drdc_unet_avx512_active(int bf16, int64_t channels);

/* CPU inference on channels-last activations also runs the residual adds, the skip concatenation
 * and the nearest x2 upsampling in C (one pass each, libtorch's results to the bit).
 * drdc_unet_use_c_moves(0) gives libtorch's ops for them from then on, (1) (the default) the C
 * passes; returns the previous setting (process-wide; for tests and measurements). */
int drdc_unet_use_c_moves(int on);

/* Where a forward pass's time goes, for drdc bench: while a profile runs, every drdc_unet_forward
 * adds its wall time by kind of work (all threads together; each split part is a pass of its own):
 * the convolutions (and the FLOPs they did), the norms (with their SiLU), the attention blocks'
 * heads, the residual adds / skip concatenation / upsampling, and the whole pass. Process-wide;
 * start zeroes the sums; a pass that fails adds part of its time. Off (no clock read) otherwise. */
enum {
    DRDC_UNET_PROF_CONV,
    DRDC_UNET_PROF_NORM,
    DRDC_UNET_PROF_ATTENTION,
    DRDC_UNET_PROF_MOVES,
    DRDC_UNET_PROF_ALL,
    DRDC_UNET_PROF_KINDS
};
typedef struct drdc_unet_profile {
    double seconds[DRDC_UNET_PROF_KINDS];
    int64_t conv_flops;   /* 2 x multiply-adds of the convolutions timed */
    int64_t passes;       /* forward passes that finished */
} drdc_unet_profile;
void drdc_unet_profile_start(void);
void drdc_unet_profile_stop(drdc_unet_profile *out);   /* out may be NULL */

/* guided-diffusion's timestep_embedding(t, dim, max_period = 10000): *out [N,dim] f32 on dev,
 * [cos(t * freqs), sin(t * freqs)] (+ a zero column when dim is odd); t [N] any dtype, any device. */
drdc_status drdc_unet_timestep_embedding(dt_tensor *out, dt_tensor t, int dim, dt_device dev);

/* Makes (or remakes) the inference copies: every convolution's weights (drdc_unet_conv) in dtype
 * (DT_BF16 for bf16 autocast, DT_F32 otherwise), every GroupNorm's affine on the host
 * (drdc_unet_norm) and the ResBlocks' embedding projections stacked into one (emb_all_w); the
 * copies made before are freed. For the forward pass without autograd (the channels-last path); a
 * call after the weights change makes the copies current again (until then the pass reads the
 * params). Not while a forward pass runs. On failure no copies are left. */
drdc_status drdc_unet_prepare(drdc_unet *unet, dt_dtype dtype);

/* Number of trainable scalars (every parameter of the U-Net is trainable). */
int64_t drdc_unet_num_params(const drdc_unet *unet);

/* Frees the parameters and arrays; leaves the struct zeroed. NULL-safe. */
void drdc_unet_free(drdc_unet *unet);

#ifdef __cplusplus
}
#endif
#endif
