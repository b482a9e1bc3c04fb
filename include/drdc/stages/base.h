/* base.h: the base model of DRDC, UniAD's feature-reconstruction transformer (paper 3.1,
 * DESIGN.md section 3), written in C over the libtorch shim.
 *
 * What it computes (UniAD, models/reconstructions/uniad.py, "learned" position embedding,
 * post-norm, ReLU):
 *   f [B,C,h,w] --(training: feature jitter)--> tokens [B,L,C] (L = h*w, token = y*w + x)
 *   --input_proj--> [B,L,E] --encoder (self-attention, q = k = x + pos, v = x)--> memory
 *   --decoder: each layer starts from its own learned query q0 [L,E] (layer-wise query):
 *        attention 1 ("self_attn"):      q = q0 + pos,  k = memory + pos, v = memory
 *        attention 2 ("multihead_attn"): q = t + pos,   k = prev + pos,   v = prev
 *        (prev: the previous decoder layer's output, memory for the first layer)
 *   --decoder norm--> output_proj --> f_hat [B,C,h,w].
 * pos [L,E] = concat(col_embed[x], row_embed[y]) (column half first, as UniAD).
 * Every attention adds the neighbour mask: token i may not attend to any token within the
 * n x n window centred on it (itself included); n = cfg->neighbor_mask, 0 = no mask.
 * Feature jitter (training only): with probability jitter_prob per batch,
 *   f += N(0,1) * (||f||_2 over channels / C) * jitter_scale, per token;
 * the loss target stays the un-jittered f.
 *
 * Parameters live in model->params under the names of UniAD's state dict for this module
 * (a full UniAD checkpoint has them under "reconstruction." / "module.reconstruction."), e.g.
 *   input_proj.weight [E,C], pos_embed.row_embed.weight [h,E/2], pos_embed.col_embed.weight [w,E/2],
 *   transformer.encoder.layers.N.self_attn.in_proj_weight [3E,E], ...,
 *   transformer.decoder.layers.N.learned_embed.weight [L,E], ..., transformer.decoder.norm.weight [E],
 *   output_proj.weight [C,E].
 * Initialisation follows UniAD (initializer "xavier_uniform"): every Linear weight (attention
 * out_proj included) xavier-uniform, biases 0; in_proj_weight xavier-uniform over [3E,E] (torch's
 * MultiheadAttention), in_proj_bias 0; LayerNorm 1/0; position tables U[0,1); learned queries
 * N(0,1) (nn.Embedding's default).
 *
 * Equations (DESIGN.md section 3): f_hat: drdc_base_forward; (1) L_base = ||f - f_hat||^2 (MSE):
 * drdc_base_loss; (2) H_base = ||f - f_hat||_2 over channels, before its upsampling to the image:
 * drdc_base_anomaly_map. */
#ifndef DRDC_BASE_H
#define DRDC_BASE_H

#include <stdint.h>

#include "drdc/core/config.h"
#include "drdc/core/error.h"
#include "drdc/formats/params.h"
#include "drdc/shim/shim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One nn.MultiheadAttention (borrowed handles into the model's params). */
typedef struct drdc_base_attn {
    dt_tensor in_proj_weight;   /* [3E,E] rows: q, k, v */
    dt_tensor in_proj_bias;     /* [3E] */
    dt_tensor out_proj_weight;  /* [E,E] */
    dt_tensor out_proj_bias;    /* [E] */
} drdc_base_attn;

typedef struct drdc_base_enc_layer {
    drdc_base_attn self_attn;
    dt_tensor linear1_weight, linear1_bias;  /* [F,E], [F] */
    dt_tensor linear2_weight, linear2_bias;  /* [E,F], [E] */
    dt_tensor norm1_weight, norm1_bias;      /* [E], [E] */
    dt_tensor norm2_weight, norm2_bias;      /* [E], [E] */
} drdc_base_enc_layer;

typedef struct drdc_base_dec_layer {
    dt_tensor learned_embed;                 /* [L,E] this layer's query */
    drdc_base_attn self_attn;               /* queries attend to the encoder memory */
    drdc_base_attn multihead_attn;          /* queries attend to the previous layer's output */
    dt_tensor linear1_weight, linear1_bias;  /* [F,E], [F] */
    dt_tensor linear2_weight, linear2_bias;  /* [E,F], [E] */
    dt_tensor norm1_weight, norm1_bias;      /* [E] */
    dt_tensor norm2_weight, norm2_bias;      /* [E] */
    dt_tensor norm3_weight, norm3_bias;      /* [E] */
} drdc_base_dec_layer;

typedef struct drdc_base {
    drdc_base_config cfg;          /* copy of the config it was built with */
    int in_channels;               /* C */
    int feat_h, feat_w;            /* h, w */
    int tokens;                    /* L = h*w */
    dt_device dev;
    drdc_params params;            /* owns every parameter (UniAD state-dict names) */
    dt_tensor attn_mask;           /* [L,L] f32: -inf where attention is blocked, 0 elsewhere; NULL when off (owned) */
    /* borrowed views into params, for the forward pass */
    dt_tensor input_proj_weight, input_proj_bias;    /* [E,C], [E] */
    dt_tensor output_proj_weight, output_proj_bias;  /* [C,E], [C] */
    dt_tensor row_embed, col_embed;                  /* [h,E/2], [w,E/2] */
    dt_tensor dec_norm_weight, dec_norm_bias;        /* [E], [E] */
    drdc_base_enc_layer *enc;     /* [cfg.enc_layers] (owned array) */
    drdc_base_dec_layer *dec;     /* [cfg.dec_layers] (owned array) */
} drdc_base;

/* The base model's config rules (DRDC_ERR_CONFIG naming the keys): base.heads divides
 * base.hidden, base.hidden is even, base.neighbor_mask is odd or 0 and leaves every token of the
 * (image_size/16) x (image_size/16) feature grid something to attend to (image_size is
 * data.image_size: the backbone's features are at stride 16). */
drdc_status drdc_base_check_config(const drdc_base_config *b, int image_size);

/* Builds the model with UniAD's initialisation drawn from a generator seeded with `seed`, and
 * the neighbour mask. Checks: in_channels, feat_h, feat_w >= 1; the rules of
 * drdc_base_check_config that do not depend on the grid (same messages); layers >= 1; ffn >= 1;
 * dropout in [0,1); the neighbour mask leaves every token of the feat_h x feat_w grid something
 * to attend to (DRDC_ERR_INPUT / DRDC_ERR_CONFIG naming the value). On failure the model is left
 * zeroed (nothing to free). */
drdc_status drdc_base_build(drdc_base *model, const drdc_base_config *cfg, int in_channels, int feat_h,
                             int feat_w, dt_device dev, uint64_t seed);

/* Reconstructs features [B,C,h,w] (f32, on the model's device) into *out_rec [B,C,h,w].
 * training = 1: feature jitter (coin and noise drawn from g) and dropout (masks from g, p =
 * cfg.dropout, on attention weights and as in torch's Transformer layers); training = 0: neither.
 * g may be NULL (libtorch's default generator). Leaves no temporary handle behind. */
drdc_status drdc_base_forward(dt_tensor *out_rec, const drdc_base *model, dt_tensor features, int training,
                               dt_generator g);

/* Multi-head attention in inference (no autograd, no dropout) on the CPU runs as attention.h's
 * fused kernel where the CPU has AVX-512 (drdc_attention_use_fused switches it), else as libtorch's
 * linear / bmm / softmax ops. */

/* The floating-point operations of drdc_base_forward on `batch` feature maps (2 x multiply-adds of
 * every Linear and attention product, from the model's shapes: input/output projections, per
 * encoder layer one attention and the FFN, per decoder layer two attentions and the FFN; what the
 * shim's dt_flops_done counts for the same call). */
int64_t drdc_base_flops(const drdc_base *model, int64_t batch);

/* As drdc_base_forward, but with the jitter's N(0,1) draws given: jitter_noise [B,C,h,w] (or
 * NULL: drawn from g as above). With jitter_noise given and training = 1 the jitter is applied
 * whatever jitter_prob says (the caller has decided the coin) and jitter_scale still applies;
 * dropout still draws from g. This lets a test match a PyTorch twin exactly. */
drdc_status drdc_base_forward_ex(dt_tensor *out_rec, const drdc_base *model, dt_tensor features, int training,
                                  dt_generator g, dt_tensor jitter_noise);

/* A training pass whose jitter coin the caller has decided (drdc_base_jitter_coin): jitter = 1
 * draws the jitter's noise [B,C,h,w] from g, then the dropout masks from g; jitter = 0 only the
 * masks. With a row generator of B (one generator per sample, dt_generator_new_rows) every sample's
 * noise and masks come from its own generator, so its reconstruction does not depend on the batch
 * it is trained in (data-parallel training splits batches). */
drdc_status drdc_base_forward_train(dt_tensor *out_rec, const drdc_base *model, dt_tensor features, int jitter,
                                     dt_generator g);
/* UniAD's coin for one batch: one U[0,1) draw from g, jitter when it is <= base.jitter_prob (no draw
 * when jitter_prob is 0 or 1, or jitter_scale 0; *apply = 0 when jitter_scale is 0). */
drdc_status drdc_base_jitter_coin(int *apply, const drdc_base *model, dt_generator g);

/* Eq. (1): MSE (mean over all elements) between the reconstruction and the un-jittered
 * features, both [B,C,h,w]; *out_loss is a 0-dim tensor. */
drdc_status drdc_base_loss(dt_tensor *out_loss, dt_tensor rec, dt_tensor features);

/* Eq. (2) before upsampling: ||f - f_hat||_2 over channels per position, [B,C,h,w] -> [B,1,h,w].
 * Upsampling to the image (bilinear, align_corners = true) is the caller's. */
drdc_status drdc_base_anomaly_map(dt_tensor *out_map, dt_tensor rec, dt_tensor features);

/* The neighbour mask alone, as UniAD's generate_mask: [h*w, h*w] f32 on dev, -inf where query
 * token (y1,x1) may not see key token (y2,x2) (|y1-y2| <= n/2 and |x1-x2| <= n/2), 0 elsewhere. */
drdc_status drdc_base_neighbor_mask(dt_tensor *out_mask, int feat_h, int feat_w, int n, dt_device dev);

/* Frees the parameters, the mask and the layer arrays; leaves the struct zeroed. NULL-safe. */
void drdc_base_free(drdc_base *model);

#ifdef __cplusplus
}
#endif
#endif
