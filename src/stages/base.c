/* base.c: UniAD's feature-reconstruction transformer, DRDC's base model, and its config rules
 * (see base.h). Multi-head attention is written out with linear / bmm / softmax (libtorch 1.13
 * has no fused attention), and in CPU inference runs as one fused C kernel where the CPU has
 * AVX-512; every forward step runs inside a shim scope, so no temporary handle outlives the call.
 * Layout inside: batch first, tokens [B,L,E] with token index y*w + x. */
#include "drdc/stages/base.h"
#include "drdc/stages/attention.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LN_EPS 1e-5   /* nn.LayerNorm's default, as UniAD */


/* ---- config rules -------------------------------------------------------------------------- */

/* The rules that do not depend on the feature grid: heads divides hidden, hidden even, the
 * neighbour mask odd or 0 (and what they need to be computed: heads >= 1, hidden >= 2, mask >= 0). */
static drdc_status check_heads_and_mask(const drdc_base_config *b) {
    if (b->heads < 1) return drdc_fail(DRDC_ERR_CONFIG, "base.heads %d must be >= 1", b->heads);
    if (b->hidden < 2) return drdc_fail(DRDC_ERR_CONFIG, "base.hidden %d must be >= 2", b->hidden);
    if (b->neighbor_mask < 0) return drdc_fail(DRDC_ERR_CONFIG, "base.neighbor_mask %d must be >= 0", b->neighbor_mask);
    if (b->hidden % b->heads != 0)
        return drdc_fail(DRDC_ERR_CONFIG, "base.heads %d does not divide base.hidden %d", b->heads, b->hidden);
    if (b->hidden % 2 != 0)
        return drdc_fail(DRDC_ERR_CONFIG,
                         "base.hidden %d must be even (half for rows, half for columns of the position embedding)",
                         b->hidden);
    if (b->neighbor_mask != 0 && b->neighbor_mask % 2 == 0)
        return drdc_fail(DRDC_ERR_CONFIG, "base.neighbor_mask %d must be odd (or 0 = off)", b->neighbor_mask);
    return DRDC_OK;
}

/* Whether the n x n neighbour mask hides every token from some token of an h x w feature grid
 * (that token's softmax would be over -inf only: NaN). The centre token is the worst off: it keeps
 * a visible token iff h/2 or w/2 (rounded down) exceeds the mask radius n/2. */
static int mask_hides_all(int n, int h, int w) { return n > 0 && h / 2 <= n / 2 && w / 2 <= n / 2; }

drdc_status drdc_base_check_config(const drdc_base_config *b, int image_size) {
    if (!b) return drdc_fail(DRDC_ERR_INPUT, "base config check: NULL config");
    drdc_status st = check_heads_and_mask(b);
    if (st) return st;
    const int h = image_size / 16;
    if (mask_hides_all(b->neighbor_mask, h, h))
        return drdc_fail(DRDC_ERR_CONFIG,
                         "base.neighbor_mask %d hides every token from some token of the %dx%d feature grid "
                         "(data.image_size %d / 16); use a smaller odd value or 0",
                         b->neighbor_mask, h, h, image_size);
    return DRDC_OK;
}

/* ---- building ------------------------------------------------------------------------------ */

/* nn.Linear under UniAD's xavier_uniform initializer: weight U(+-sqrt(6/(in+out))), bias 0. */
static drdc_status add_linear(drdc_params *p, const char *prefix, int64_t out_f, int64_t in_f, dt_device dev,
                              dt_generator g) {
    char name[256];
    const int64_t wshape[2] = {out_f, in_f}, bshape[1] = {out_f};
    drdc_status st = DRDC_OK;
    snprintf(name, sizeof name, "%s.weight", prefix);
    TRY(drdc_params_add_uniform(p, name, wshape, 2, sqrt(6.0 / (double)(in_f + out_f)), dev, g, 1));
    snprintf(name, sizeof name, "%s.bias", prefix);
    TRY(drdc_params_add_full(p, name, bshape, 1, 0.0, dev, 1));
done:
    return st;
}

/* nn.MultiheadAttention: in_proj_weight [3E,E] xavier-uniform (fan_in E, fan_out 3E), in_proj_bias
 * 0; out_proj is an nn.Linear, so UniAD's initializer gives it xavier-uniform and bias 0. */
static drdc_status add_mha(drdc_params *p, const char *prefix, int64_t E, dt_device dev, dt_generator g) {
    char name[200];
    const int64_t wshape[2] = {3 * E, E}, bshape[1] = {3 * E};
    drdc_status st = DRDC_OK;
    snprintf(name, sizeof name, "%s.in_proj_weight", prefix);
    TRY(drdc_params_add_uniform(p, name, wshape, 2, sqrt(6.0 / (double)(E + 3 * E)), dev, g, 1));
    snprintf(name, sizeof name, "%s.in_proj_bias", prefix);
    TRY(drdc_params_add_full(p, name, bshape, 1, 0.0, dev, 1));
    snprintf(name, sizeof name, "%s.out_proj", prefix);
    TRY(add_linear(p, name, E, E, dev, g));
done:
    return st;
}

static drdc_status add_layer_norm(drdc_params *p, const char *prefix, int64_t E, dt_device dev) {
    char name[256];
    const int64_t shape[1] = {E};
    drdc_status st = DRDC_OK;
    snprintf(name, sizeof name, "%s.weight", prefix);
    TRY(drdc_params_add_full(p, name, shape, 1, 1.0, dev, 1));
    snprintf(name, sizeof name, "%s.bias", prefix);
    TRY(drdc_params_add_full(p, name, shape, 1, 0.0, dev, 1));
done:
    return st;
}

/* nn.Embedding table that UniAD resets with nn.init.uniform_: U[0,1). */
static drdc_status add_unit_uniform(drdc_params *p, const char *name, const int64_t *shape, dt_device dev,
                                    dt_generator g) {
    dt_tensor t = NULL;
    drdc_status st = dt_rand(&t, shape, 2, DT_F32, dev, g);
    if (st) return drdc_error_context(st, "creating parameter %s", name);
    return drdc_params_add(p, name, t, 1);
}

/* Adds every parameter in the order of UniAD's state dict. */
static drdc_status add_parameters(drdc_params *p, const drdc_base_config *cfg, int64_t C, int64_t h, int64_t w,
                                  dt_device dev, dt_generator g) {
    const int64_t E = cfg->hidden, F = cfg->ffn, L = h * w;
    char prefix[160];
    drdc_status st = DRDC_OK;
    /* learned position embedding: row and column tables */
    const int64_t row_shape[2] = {h, E / 2}, col_shape[2] = {w, E / 2};
    TRY(add_unit_uniform(p, "pos_embed.row_embed.weight", row_shape, dev, g));   /* [h,E/2] */
    TRY(add_unit_uniform(p, "pos_embed.col_embed.weight", col_shape, dev, g));   /* [w,E/2] */
    for (int i = 0; i < cfg->enc_layers; i++) {
        const char *parts[] = {"self_attn", "linear1", "linear2", "norm1", "norm2"};
        char names[5][160];
        for (int k = 0; k < 5; k++)
            snprintf(names[k], sizeof names[k], "transformer.encoder.layers.%d.%s", i, parts[k]);
        TRY(add_mha(p, names[0], E, dev, g));
        TRY(add_linear(p, names[1], F, E, dev, g));
        TRY(add_linear(p, names[2], E, F, dev, g));
        TRY(add_layer_norm(p, names[3], E, dev));
        TRY(add_layer_norm(p, names[4], E, dev));
    }
    for (int i = 0; i < cfg->dec_layers; i++) {
        const char *parts[] = {"learned_embed.weight", "self_attn", "multihead_attn", "linear1", "linear2",
                               "norm1", "norm2", "norm3"};
        char names[8][160];
        for (int k = 0; k < 8; k++)
            snprintf(names[k], sizeof names[k], "transformer.decoder.layers.%d.%s", i, parts[k]);
        const int64_t q_shape[2] = {L, E};
        TRY(drdc_params_add_normal(p, names[0], q_shape, 2, 1.0, dev, g, 1));  /* [L,E] nn.Embedding: N(0,1) */
        TRY(add_mha(p, names[1], E, dev, g));
        TRY(add_mha(p, names[2], E, dev, g));
        TRY(add_linear(p, names[3], F, E, dev, g));
        TRY(add_linear(p, names[4], E, F, dev, g));
        for (int k = 5; k < 8; k++) TRY(add_layer_norm(p, names[k], E, dev));
    }
    snprintf(prefix, sizeof prefix, "transformer.decoder.norm");
    TRY(add_layer_norm(p, prefix, E, dev));
    TRY(add_linear(p, "input_proj", E, C, dev, g));
    TRY(add_linear(p, "output_proj", C, E, dev, g));
done:
    return st;
}

static drdc_status get_attn(drdc_base_attn *a, const drdc_params *p, const char *prefix) {
    drdc_status st = DRDC_OK;
    TRY(drdc_params_getf(&a->in_proj_weight, p, "%s.in_proj_weight", prefix));
    TRY(drdc_params_getf(&a->in_proj_bias, p, "%s.in_proj_bias", prefix));
    TRY(drdc_params_getf(&a->out_proj_weight, p, "%s.out_proj.weight", prefix));
    TRY(drdc_params_getf(&a->out_proj_bias, p, "%s.out_proj.bias", prefix));
done:
    return st;
}

/* A Linear or LayerNorm of the model: "<prefix><part>.weight" and ".bias" go to *w and *b. */
typedef struct param_pair {
    const char *part;
    dt_tensor *w, *b;
} param_pair;

static drdc_status get_pairs(const drdc_params *p, const char *prefix, const param_pair *pairs, int n) {
    drdc_status st = DRDC_OK;
    for (int i = 0; i < n; i++) {
        TRY(drdc_params_getf(pairs[i].w, p, "%s%s.weight", prefix, pairs[i].part));
        TRY(drdc_params_getf(pairs[i].b, p, "%s%s.bias", prefix, pairs[i].part));
    }
done:
    return st;
}

/* Fills the model's borrowed handles from its store. */
static drdc_status wire(drdc_base *m) {
    const drdc_params *p = &m->params;
    drdc_status st = DRDC_OK;
    char pre[256], sub[300];
    const param_pair top[2] = {{"input_proj", &m->input_proj_weight, &m->input_proj_bias},       /* [E,C], [E] */
                               {"output_proj", &m->output_proj_weight, &m->output_proj_bias}};   /* [C,E], [C] */
    const param_pair dec_norm[1] = {{"norm", &m->dec_norm_weight, &m->dec_norm_bias}};            /* [E], [E] */
    TRY(get_pairs(p, "", top, 2));
    TRY(drdc_params_getf(&m->row_embed, p, "pos_embed.row_embed.weight"));                        /* [h,E/2] */
    TRY(drdc_params_getf(&m->col_embed, p, "pos_embed.col_embed.weight"));                        /* [w,E/2] */
    TRY(get_pairs(p, "transformer.decoder.", dec_norm, 1));
    for (int i = 0; i < m->cfg.enc_layers; i++) {
        drdc_base_enc_layer *l = &m->enc[i];
        const param_pair parts[4] = {{"linear1", &l->linear1_weight, &l->linear1_bias},
                                     {"linear2", &l->linear2_weight, &l->linear2_bias},
                                     {"norm1", &l->norm1_weight, &l->norm1_bias},
                                     {"norm2", &l->norm2_weight, &l->norm2_bias}};
        snprintf(pre, sizeof pre, "transformer.encoder.layers.%d.", i);
        snprintf(sub, sizeof sub, "%sself_attn", pre);
        TRY(get_attn(&l->self_attn, p, sub));
        TRY(get_pairs(p, pre, parts, 4));
    }
    for (int i = 0; i < m->cfg.dec_layers; i++) {
        drdc_base_dec_layer *l = &m->dec[i];
        const param_pair parts[5] = {{"linear1", &l->linear1_weight, &l->linear1_bias},
                                     {"linear2", &l->linear2_weight, &l->linear2_bias},
                                     {"norm1", &l->norm1_weight, &l->norm1_bias},
                                     {"norm2", &l->norm2_weight, &l->norm2_bias},
                                     {"norm3", &l->norm3_weight, &l->norm3_bias}};
        snprintf(pre, sizeof pre, "transformer.decoder.layers.%d.", i);
        TRY(drdc_params_getf(&l->learned_embed, p, "%slearned_embed.weight", pre));               /* [L,E] */
        snprintf(sub, sizeof sub, "%sself_attn", pre);
        TRY(get_attn(&l->self_attn, p, sub));
        snprintf(sub, sizeof sub, "%smultihead_attn", pre);
        TRY(get_attn(&l->multihead_attn, p, sub));
        TRY(get_pairs(p, pre, parts, 5));
    }
done:
    return st;
}

drdc_status drdc_base_neighbor_mask(dt_tensor *out_mask, int feat_h, int feat_w, int n, dt_device dev) {
    if (!out_mask) return drdc_fail(DRDC_ERR_INPUT, "base neighbour mask: out is NULL");
    *out_mask = NULL;
    if (feat_h < 1 || feat_w < 1 || n < 1)
        return drdc_fail(DRDC_ERR_INPUT, "base neighbour mask: feature %dx%d with neighbourhood %d is invalid",
                         feat_h, feat_w, n);
    const int64_t L = (int64_t)feat_h * feat_w;
    float *buf = malloc(sizeof(float) * (size_t)(L * L));
    if (!buf) return drdc_fail(DRDC_ERR_NOMEM, "base neighbour mask: out of memory for %lldx%lld", (long long)L,
                               (long long)L);
    const int r = n / 2;   /* UniAD: rows [y1 - n//2, y1 + n//2] clipped to the map */
    for (int y1 = 0; y1 < feat_h; y1++)
        for (int x1 = 0; x1 < feat_w; x1++)
            for (int y2 = 0; y2 < feat_h; y2++)
                for (int x2 = 0; x2 < feat_w; x2++) {
                    int blocked = abs(y1 - y2) <= r && abs(x1 - x2) <= r;
                    buf[((int64_t)y1 * feat_w + x1) * L + (int64_t)y2 * feat_w + x2] = blocked ? -INFINITY : 0.0f;
                }
    const int64_t shape[2] = {L, L};
    drdc_status st = dt_from_host(out_mask, buf, DT_F32, shape, 2, dev);
    free(buf);
    return st ? drdc_error_context(st, "base neighbour mask") : DRDC_OK;
}


drdc_status drdc_base_build(drdc_base *model, const drdc_base_config *cfg, int in_channels, int feat_h,
                             int feat_w, dt_device dev, uint64_t seed) {
    if (!model || !cfg) return drdc_fail(DRDC_ERR_INPUT, "base build: model or config is NULL");
    memset(model, 0, sizeof *model);
    if (in_channels < 1 || feat_h < 1 || feat_w < 1)
        return drdc_fail(DRDC_ERR_INPUT, "base build: bad feature shape C=%d h=%d w=%d", in_channels, feat_h, feat_w);
    drdc_status st = check_heads_and_mask(cfg);
    if (st) return st;
    if (cfg->enc_layers < 1 || cfg->dec_layers < 1)
        return drdc_fail(DRDC_ERR_CONFIG, "base.enc_layers = %d, base.dec_layers = %d: each must be >= 1",
                         cfg->enc_layers, cfg->dec_layers);
    if (cfg->ffn < 1) return drdc_fail(DRDC_ERR_CONFIG, "base.ffn = %d: must be >= 1", cfg->ffn);
    if (!(cfg->dropout >= 0.0 && cfg->dropout < 1.0))
        return drdc_fail(DRDC_ERR_CONFIG, "base.dropout = %g: must be in [0, 1)", cfg->dropout);
    /* the grid is the built one here (not data.image_size / 16, which drdc_base_check_config assumes) */
    if (mask_hides_all(cfg->neighbor_mask, feat_h, feat_w))
        return drdc_fail(DRDC_ERR_CONFIG,
                         "base.neighbor_mask = %d: on a %dx%d feature map the centre token could attend to "
                         "nothing; use a smaller neighbourhood or a larger image",
                         cfg->neighbor_mask, feat_h, feat_w);
    if (!(cfg->jitter_scale >= 0.0) || !(cfg->jitter_prob >= 0.0 && cfg->jitter_prob <= 1.0))
        return drdc_fail(DRDC_ERR_CONFIG, "base.jitter_scale = %g / base.jitter_prob = %g out of range",
                         cfg->jitter_scale, cfg->jitter_prob);

    model->cfg = *cfg;
    model->in_channels = in_channels;
    model->feat_h = feat_h;
    model->feat_w = feat_w;
    model->tokens = feat_h * feat_w;
    model->dev = dev;
    model->enc = calloc((size_t)cfg->enc_layers, sizeof *model->enc);
    model->dec = calloc((size_t)cfg->dec_layers, sizeof *model->dec);
    if (!model->enc || !model->dec) {
        drdc_base_free(model);
        return drdc_fail(DRDC_ERR_NOMEM, "base build: out of memory");
    }
    dt_generator g = NULL;
    TRY(dt_generator_new(&g, seed));
    TRY(add_parameters(&model->params, cfg, in_channels, feat_h, feat_w, dev, g));
    TRY(wire(model));
    if (cfg->neighbor_mask > 0)
        TRY(drdc_base_neighbor_mask(&model->attn_mask, feat_h, feat_w, cfg->neighbor_mask, dev)); /* [L,L] */
done:
    dt_generator_free(g);
    if (st) {
        drdc_base_free(model);
        return drdc_error_context(st, "building the base transformer");
    }
    return DRDC_OK;
}

void drdc_base_free(drdc_base *model) {
    if (!model) return;
    drdc_params_free(&model->params);
    dt_free(model->attn_mask);
    free(model->enc);
    free(model->dec);
    memset(model, 0, sizeof *model);
}

/* ---- forward ------------------------------------------------------------------------------- */

/* Dropout on an intermediate of the current scope (p = 0 or not training: x itself). */
static drdc_status dropout(dt_tensor *out, dt_tensor x, double p, int training, dt_generator g) {
    if (!training || p <= 0.0) {
        *out = x;
        return DRDC_OK;
    }
    return dt_dropout(out, x, p, training, g);
}

/* ---- fused attention (CPU inference): attention.h's kernel on the projections as the linears
 * leave them ([B,L,E], head h in columns h*D..h*D+D-1) --------------------------------------- */

/* Whether mha can take the fused kernel: AVX-512 (and the switch on), no autograd, no dropout on
 * the attention weights, CPU float32 or bf16 projections. */
static int attention_fusable(dt_tensor q, dt_tensor k, dt_tensor v, dt_tensor mask, double p, int training) {
    if (!drdc_attention_fused_active()) return 0;
    if (training && p > 0.0) return 0;
    const dt_tensor ts[4] = {q, k, v, mask};
    for (int i = 0; i < 4; i++) {
        if (!ts[i]) continue;
        const dt_dtype d = dt_dtype_of(ts[i]);
        if (dt_requires_grad(ts[i]) || dt_device_of(ts[i]).type != DT_CPU || !(d == DT_F32 || d == DT_BF16)) return 0;
    }
    return 1;
}

/* out [B,L,E] = the heads' softmax(q k^T / sqrt(D) + mask) v, concatenated: float32, or bf16 where
 * q, k and v are bf16 (autocast): on the AMX kernel where it takes them (drdc_attention16_fits),
 * else the float32 kernel on the bf16 operands (drdc_attention_run_bf16). */
static drdc_status fused_attention(dt_tensor *out, dt_tensor q, dt_tensor k, dt_tensor v, dt_tensor mask,
                                   int64_t heads) {
    int64_t qs[3], ks[3];
    drdc_status st = dt_scope_begin();
    if (st) return st;
    dt_tensor q32 = NULL, k32 = NULL, v32 = NULL, m32 = NULL, o = NULL, res = NULL;
    TRY(dt_shape(qs, 3, q));
    TRY(dt_shape(ks, 3, k));
    const int64_t B = qs[0], L = qs[1], E = qs[2], S = ks[1], D = E / heads;
    const drdc_attn_strides lq = {L * E, E, D}, sk = {S * E, E, D};
    const float scale = (float)(1.0 / sqrt((double)D));   /* on q, as nn.MultiheadAttention */
    if (dt_dtype_of(q) == DT_BF16 && dt_dtype_of(k) == DT_BF16 && dt_dtype_of(v) == DT_BF16) {
        /* bf16 under autocast: out in bf16, no casts */
        dt_tensor q16 = NULL, k16 = NULL, v16 = NULL;
        void *qp, *kp, *vp, *mp = NULL, *op;
        TRY(dt_contiguous(&q16, q));
        TRY(dt_contiguous(&k16, k));
        TRY(dt_contiguous(&v16, v));
        if (mask) {
            TRY(dt_to_dtype(&m32, mask, DT_F32));
            TRY(dt_contiguous(&m32, m32));
            TRY(dt_host_data(&mp, m32));
        }
        TRY(dt_empty_like(&o, q16));
        TRY(dt_host_data(&qp, q16));
        TRY(dt_host_data(&kp, k16));
        TRY(dt_host_data(&vp, v16));
        TRY(dt_host_data(&op, o));
        const drdc_attention16 a = {.q = qp, .k = kp, .v = vp, .o = op, .qs = lq, .ks = sk, .vs = sk, .os = lq,
                                    .mask = mp, .B = B, .H = heads, .L = L, .S = S, .D = D, .scale = scale};
        TRY(drdc_attention16_fits(L, S, D) ? drdc_attention16_run(&a) : drdc_attention_run_bf16(&a));
        res = o;
        goto done;
    }
    const dt_tensor in[4] = {q, k, v, mask};
    dt_tensor *f32[4] = {&q32, &k32, &v32, &m32};
    for (int i = 0; i < 4; i++) {
        if (!in[i]) continue;
        TRY(dt_to_dtype(f32[i], in[i], DT_F32));   /* a no-op for float32; the mask, or a bf16/float32 mix */
        TRY(dt_contiguous(f32[i], *f32[i]));
    }
    TRY(dt_empty_like(&o, q32));
    void *qp, *kp, *vp, *mp = NULL, *op;
    TRY(dt_host_data(&qp, q32));
    TRY(dt_host_data(&kp, k32));
    TRY(dt_host_data(&vp, v32));
    if (m32) TRY(dt_host_data(&mp, m32));
    TRY(dt_host_data(&op, o));
    const drdc_attention a = {.q = qp, .k = kp, .v = vp, .o = op, .qs = lq, .ks = sk, .vs = sk, .os = lq,
                              .mask = mp, .B = B, .H = heads, .L = L, .S = S, .D = D, .scale = scale};
    TRY(drdc_attention_run(&a));
    res = o;
done:
    return dt_scope_finish(st, res, out);
}

/* The heads' softmax(q k^T / sqrt(D) + mask) v through libtorch's ops (autograd, dropout p on the
 * attention weights): q [B,L,E], k and v [B,S,E] -> out [B,L,E], the heads concatenated. */
static drdc_status heads_attention(dt_tensor *out, dt_tensor q, dt_tensor k, dt_tensor v, dt_tensor mask,
                                   int64_t H, double p, int training, dt_generator g) {
    *out = NULL;
    int64_t qs[3], ks[3];
    drdc_status st = dt_scope_begin();
    if (st) return st;
    dt_tensor qh, kh, vh, t, kt, scores, attn, o, res = NULL;
    TRY(dt_shape(qs, 3, q));
    TRY(dt_shape(ks, 3, k));
    const int64_t B = qs[0], L = qs[1], E = qs[2], S = ks[1], D = E / H;
    const int64_t q4[4] = {B, L, H, D}, s4[4] = {B, S, H, D}, perm[4] = {0, 2, 1, 3};
    const int64_t q3[3] = {B * H, L, D}, s3[3] = {B * H, S, D};
    TRY(dt_reshape(&t, q, q4, 4));                                       /* [B,L,H,D] */
    TRY(dt_permute(&t, t, perm, 4));                                     /* [B,H,L,D] */
    TRY(dt_reshape(&qh, t, q3, 3));                                      /* [B*H,L,D] */
    TRY(dt_mul_scalar(&qh, qh, 1.0 / sqrt((double)D)));                 /* [B*H,L,D] scaled */
    TRY(dt_reshape(&t, k, s4, 4));                                       /* [B,S,H,D] */
    TRY(dt_permute(&t, t, perm, 4));                                     /* [B,H,S,D] */
    TRY(dt_reshape(&kh, t, s3, 3));                                      /* [B*H,S,D] */
    TRY(dt_reshape(&t, v, s4, 4));                                       /* [B,S,H,D] */
    TRY(dt_permute(&t, t, perm, 4));                                     /* [B,H,S,D] */
    TRY(dt_reshape(&vh, t, s3, 3));                                      /* [B*H,S,D] */
    TRY(dt_transpose(&kt, kh, 1, 2));                                    /* [B*H,D,S] */
    TRY(dt_bmm(&scores, qh, kt));                                        /* [B*H,L,S] */
    if (mask) TRY(dt_add(&scores, scores, mask));                        /* [B*H,L,S] + [L,S] */
    TRY(dt_softmax(&attn, scores, -1));                                  /* [B*H,L,S] */
    TRY(dropout(&attn, attn, p, training, g));                           /* [B*H,L,S] */
    TRY(dt_bmm(&o, attn, vh));                                           /* [B*H,L,D] */
    const int64_t o4[4] = {B, H, L, D}, o3[3] = {B, L, E};
    TRY(dt_reshape(&t, o, o4, 4));                                       /* [B,H,L,D] */
    TRY(dt_permute(&t, t, perm, 4));                                     /* [B,L,H,D] */
    TRY(dt_reshape(&res, t, o3, 3));                                     /* [B,L,E] */
done:
    return dt_scope_finish(st, res, out);
}

/* torch 1.13's nn.MultiheadAttention (batch first here): query [B,L,E], key and value [B,S,E],
 * mask [L,S] added to the logits (or NULL); dropout p on the attention weights. The heads run in
 * the fused kernel where attention_fusable, else through libtorch's ops. */
static drdc_status mha(dt_tensor *out, const drdc_base_attn *a, dt_tensor query, dt_tensor key, dt_tensor value,
                       dt_tensor mask, int heads, double p, int training, dt_generator g) {
    *out = NULL;
    int64_t qs[3];
    drdc_status st = dt_scope_begin();
    if (st) return st;
    dt_tensor wq, wk, wv, bq, bk, bv, q, k, v, t, res = NULL;
    TRY(dt_shape(qs, 3, query));
    const int64_t E = qs[2];
    TRY(dt_narrow(&wq, a->in_proj_weight, 0, 0, E));                     /* [E,E] */
    TRY(dt_narrow(&wk, a->in_proj_weight, 0, E, E));                     /* [E,E] */
    TRY(dt_narrow(&wv, a->in_proj_weight, 0, 2 * E, E));                 /* [E,E] */
    TRY(dt_narrow(&bq, a->in_proj_bias, 0, 0, E));                       /* [E] */
    TRY(dt_narrow(&bk, a->in_proj_bias, 0, E, E));                       /* [E] */
    TRY(dt_narrow(&bv, a->in_proj_bias, 0, 2 * E, E));                   /* [E] */
    TRY(dt_linear(&q, query, wq, bq));                                   /* [B,L,E] */
    TRY(dt_linear(&k, key, wk, bk));                                     /* [B,S,E] */
    TRY(dt_linear(&v, value, wv, bv));                                   /* [B,S,E] */
    if (attention_fusable(q, k, v, mask, p, training)) TRY(fused_attention(&t, q, k, v, mask, heads)); /* [B,L,E] */
    else TRY(heads_attention(&t, q, k, v, mask, heads, p, training, g)); /* [B,L,E] */
    TRY(dt_linear(&res, t, a->out_proj_weight, a->out_proj_bias));      /* [B,L,E] */
done:
    return dt_scope_finish(st, res, out);
}

/* Feed-forward block: linear2(dropout(relu(linear1(x)))) then dropout, [B,L,E] -> [B,L,E]. */
static drdc_status ffn(dt_tensor *out, dt_tensor x, dt_tensor w1, dt_tensor b1, dt_tensor w2, dt_tensor b2,
                       double p, int training, dt_generator g) {
    drdc_status st = DRDC_OK;
    TRY(dt_linear(out, x, w1, b1));                                      /* [B,L,F] */
    TRY(dt_relu(out, *out));                                             /* [B,L,F] */
    TRY(dropout(out, *out, p, training, g));                             /* [B,L,F] */
    TRY(dt_linear(out, *out, w2, b2));                                   /* [B,L,E] */
    TRY(dropout(out, *out, p, training, g));                             /* [B,L,E] */
done:
    return st;
}

/* Post-norm encoder layer: x = norm1(x + drop(attn(x+pos, x+pos, x))); x = norm2(x + drop(ffn(x))). */
static drdc_status encoder_layer(dt_tensor *out, const drdc_base *m, const drdc_base_enc_layer *l, dt_tensor x,
                                 dt_tensor pos, int training, dt_generator g) {
    *out = NULL;
    const double p = m->cfg.dropout;
    drdc_status st = dt_scope_begin();
    if (st) return st;
    dt_tensor qk, a, y, f, res = NULL;
    TRY(dt_add(&qk, x, pos));                                            /* [B,L,E] */
    TRY(mha(&a, &l->self_attn, qk, qk, x, m->attn_mask, m->cfg.heads, p, training, g)); /* [B,L,E] */
    TRY(dropout(&a, a, p, training, g));                                 /* [B,L,E] */
    TRY(dt_add(&y, x, a));                                               /* [B,L,E] */
    TRY(dt_layer_norm(&y, y, 1, l->norm1_weight, l->norm1_bias, LN_EPS)); /* [B,L,E] */
    TRY(ffn(&f, y, l->linear1_weight, l->linear1_bias, l->linear2_weight, l->linear2_bias, p, training, g));
    TRY(dt_add(&y, y, f));                                               /* [B,L,E] */
    TRY(dt_layer_norm(&res, y, 1, l->norm2_weight, l->norm2_bias, LN_EPS)); /* [B,L,E] */
done:
    return dt_scope_finish(st, res, out);
}

/* Post-norm decoder layer with its own learned query (UniAD's TransformerDecoderLayer):
 *   t = norm1(q0 + drop(self_attn(q0+pos, memory+pos, memory)))
 *   t = norm2(t + drop(multihead_attn(t+pos, prev+pos, prev)))
 *   t = norm3(t + drop(ffn(t))) */
static drdc_status decoder_layer(dt_tensor *out, const drdc_base *m, const drdc_base_dec_layer *l, dt_tensor prev,
                                 dt_tensor memory, dt_tensor pos, int training, dt_generator g) {
    *out = NULL;
    const double p = m->cfg.dropout;
    int64_t B;
    drdc_status st = dt_scope_begin();
    if (st) return st;
    dt_tensor q0, q, k, a, t, f, res = NULL;
    TRY(dt_size(&B, memory, 0));
    const int64_t qshape[3] = {B, m->tokens, m->cfg.hidden};
    TRY(dt_unsqueeze(&q0, l->learned_embed, 0));                         /* [1,L,E] */
    TRY(dt_expand(&q0, q0, qshape, 3));                                  /* [B,L,E] */
    TRY(dt_add(&q, q0, pos));                                            /* [B,L,E] */
    TRY(dt_add(&k, memory, pos));                                        /* [B,L,E] */
    TRY(mha(&a, &l->self_attn, q, k, memory, m->attn_mask, m->cfg.heads, p, training, g)); /* [B,L,E] */
    TRY(dropout(&a, a, p, training, g));                                 /* [B,L,E] */
    TRY(dt_add(&t, q0, a));                                              /* [B,L,E] */
    TRY(dt_layer_norm(&t, t, 1, l->norm1_weight, l->norm1_bias, LN_EPS)); /* [B,L,E] */
    TRY(dt_add(&q, t, pos));                                             /* [B,L,E] */
    TRY(dt_add(&k, prev, pos));                                          /* [B,L,E] */
    TRY(mha(&a, &l->multihead_attn, q, k, prev, m->attn_mask, m->cfg.heads, p, training, g)); /* [B,L,E] */
    TRY(dropout(&a, a, p, training, g));                                 /* [B,L,E] */
    TRY(dt_add(&t, t, a));                                               /* [B,L,E] */
    TRY(dt_layer_norm(&t, t, 1, l->norm2_weight, l->norm2_bias, LN_EPS)); /* [B,L,E] */
    TRY(ffn(&f, t, l->linear1_weight, l->linear1_bias, l->linear2_weight, l->linear2_bias, p, training, g));
    TRY(dt_add(&t, t, f));                                               /* [B,L,E] */
    TRY(dt_layer_norm(&res, t, 1, l->norm3_weight, l->norm3_bias, LN_EPS)); /* [B,L,E] */
done:
    return dt_scope_finish(st, res, out);
}

/* Checks that t is [B,C,h,w] for this model; writes B. */
static drdc_status check_features(int64_t *B, const drdc_base *m, dt_tensor t, const char *what) {
    int64_t s[4];
    if (!t) return drdc_fail(DRDC_ERR_INPUT, "base: %s is NULL", what);
    if (dt_ndim(t) != 4) return drdc_fail(DRDC_ERR_INPUT, "base: %s must be [B,C,h,w], got %d dims", what, dt_ndim(t));
    drdc_status st = dt_shape(s, 4, t);
    if (st) return st;
    if (s[1] != m->in_channels || s[2] != m->feat_h || s[3] != m->feat_w)
        return drdc_fail(DRDC_ERR_INPUT, "base: %s has shape [%lld,%lld,%lld,%lld], the model expects [B,%d,%d,%d]",
                         what, (long long)s[0], (long long)s[1], (long long)s[2], (long long)s[3], m->in_channels,
                         m->feat_h, m->feat_w);
    *B = s[0];
    return DRDC_OK;
}

/* Whether this training batch gets jitter: UniAD draws u ~ U[0,1) and jitters when u <= prob. */
static drdc_status jitter_coin(int *apply, double prob, dt_generator g) {
    *apply = 0;
    if (prob >= 1.0) { *apply = 1; return DRDC_OK; }
    if (prob <= 0.0) return DRDC_OK;
    const int64_t one[1] = {1};
    dt_tensor u = NULL;
    double v = 1.0;
    drdc_status st = DRDC_OK;
    TRY(dt_rand(&u, one, 1, DT_F32, (dt_device){DT_CPU, 0}, g));       /* [1] U[0,1) */
    TRY(dt_item(&v, u));
    *apply = v <= prob;
done:
    dt_free(u);
    return st;
}

/* features [B,C,h,w] for this model and, when given, jitter noise of the same shape; writes B. */
static drdc_status check_inputs(int64_t *B, const drdc_base *m, dt_tensor features, dt_tensor jitter_noise) {
    int64_t nB = 0;
    drdc_status st = DRDC_OK;
    TRY(check_features(B, m, features, "features"));
    if (jitter_noise) {
        TRY(check_features(&nB, m, jitter_noise, "jitter noise"));
        if (nB != *B)
            return drdc_fail(DRDC_ERR_INPUT, "base: jitter noise batch %lld != features batch %lld", (long long)nB,
                             (long long)*B);
    }
done:
    return st;
}

/* The forward pass; coin -1: the jitter coin is drawn from g (or decided by jitter_noise), 0: no
 * jitter, 1: jitter (noise given, or drawn from g). */
static drdc_status forward(dt_tensor *out_rec, const drdc_base *m, dt_tensor features, int training, dt_generator g,
                           dt_tensor jitter_noise, int coin) {
    if (!out_rec || !m || !m->enc) return drdc_fail(DRDC_ERR_INPUT, "base forward: NULL output or unbuilt model");
    *out_rec = NULL;
    int64_t B = 0;
    drdc_status st = check_inputs(&B, m, features, jitter_noise);
    if (st) return st;
    const int64_t C = m->in_channels, h = m->feat_h, w = m->feat_w, L = m->tokens, E = m->cfg.hidden;
    st = dt_scope_begin();
    if (st) return st;
    dt_tensor x = features, noise = jitter_noise, norms, j, tok, src, colx, rowy, pos, memory, out, rec = NULL;
    /* feature jitter (training only): f + N(0,1) * ||f||_2 / C * scale, per token */
    int jitter = 0;
    if (training && m->cfg.jitter_scale > 0.0) {
        if (coin >= 0) jitter = coin;
        else if (jitter_noise) jitter = 1;
        else TRY(jitter_coin(&jitter, m->cfg.jitter_prob, g));
    }
    if (jitter) {
        const int64_t fshape[4] = {B, C, h, w};
        if (!noise) TRY(dt_randn(&noise, fshape, 4, DT_F32, m->dev, g));  /* [B,C,h,w] */
        TRY(dt_norm2(&norms, features, 1, 1));                           /* [B,1,h,w] */
        TRY(dt_mul_scalar(&norms, norms, m->cfg.jitter_scale / (double)C)); /* [B,1,h,w] */
        TRY(dt_mul(&j, noise, norms));                                   /* [B,C,h,w] */
        TRY(dt_add(&x, features, j));                                    /* [B,C,h,w] */
    }
    const int64_t bcl[3] = {B, C, L};
    TRY(dt_reshape(&tok, x, bcl, 3));                                    /* [B,C,L] */
    TRY(dt_transpose(&tok, tok, 1, 2));                                  /* [B,L,C] */
    TRY(dt_linear(&src, tok, m->input_proj_weight, m->input_proj_bias)); /* [B,L,E] */
    /* learned position embedding: pos[y*w + x] = concat(col_embed[x], row_embed[y]) */
    const int64_t hw_half[3] = {h, w, E / 2}, pos_shape[3] = {1, L, E};
    TRY(dt_unsqueeze(&colx, m->col_embed, 0));                           /* [1,w,E/2] */
    TRY(dt_expand(&colx, colx, hw_half, 3));                             /* [h,w,E/2] */
    TRY(dt_unsqueeze(&rowy, m->row_embed, 1));                           /* [h,1,E/2] */
    TRY(dt_expand(&rowy, rowy, hw_half, 3));                             /* [h,w,E/2] */
    const dt_tensor halves[2] = {colx, rowy};
    TRY(dt_cat(&pos, halves, 2, -1));                                    /* [h,w,E] */
    TRY(dt_reshape(&pos, pos, pos_shape, 3));                            /* [1,L,E] */
    memory = src;
    for (int i = 0; i < m->cfg.enc_layers; i++)
        TRY(encoder_layer(&memory, m, &m->enc[i], memory, pos, training, g)); /* [B,L,E] */
    out = memory;
    for (int i = 0; i < m->cfg.dec_layers; i++)
        TRY(decoder_layer(&out, m, &m->dec[i], out, memory, pos, training, g)); /* [B,L,E] */
    TRY(dt_layer_norm(&out, out, 1, m->dec_norm_weight, m->dec_norm_bias, LN_EPS)); /* [B,L,E] */
    TRY(dt_linear(&out, out, m->output_proj_weight, m->output_proj_bias)); /* [B,L,C] */
    TRY(dt_transpose(&out, out, 1, 2));                                  /* [B,C,L] */
    const int64_t bchw[4] = {B, C, h, w};
    if (dt_dtype_of(out) != DT_F32) TRY(dt_to_dtype(&out, out, DT_F32));  /* bf16 under autocast: f32 out */
    TRY(dt_reshape(&rec, out, bchw, 4));                                 /* [B,C,h,w] */
done:
    st = dt_scope_finish(st, rec, out_rec);
    return st ? drdc_error_context(st, "base transformer forward") : DRDC_OK;
}

drdc_status drdc_base_forward_ex(dt_tensor *out_rec, const drdc_base *m, dt_tensor features, int training,
                                  dt_generator g, dt_tensor jitter_noise) {
    return forward(out_rec, m, features, training, g, jitter_noise, -1);
}

drdc_status drdc_base_forward(dt_tensor *out_rec, const drdc_base *model, dt_tensor features, int training,
                               dt_generator g) {
    return forward(out_rec, model, features, training, g, NULL, -1);
}

drdc_status drdc_base_forward_train(dt_tensor *out_rec, const drdc_base *model, dt_tensor features, int jitter,
                                     dt_generator g) {
    return forward(out_rec, model, features, 1, g, NULL, jitter ? 1 : 0);
}

drdc_status drdc_base_jitter_coin(int *apply, const drdc_base *model, dt_generator g) {
    *apply = 0;
    if (!(model->cfg.jitter_scale > 0.0)) return DRDC_OK;
    return jitter_coin(apply, model->cfg.jitter_prob, g);
}

/* Both tensors must have the same shape, of rank 4. */
static drdc_status same_bchw(dt_tensor a, dt_tensor b, const char *what) {
    int64_t sa[4], sb[4];
    if (!a || !b) return drdc_fail(DRDC_ERR_INPUT, "base %s: NULL tensor", what);
    if (dt_ndim(a) != 4 || dt_ndim(b) != 4)
        return drdc_fail(DRDC_ERR_INPUT, "base %s: expected [B,C,h,w] tensors, got %d and %d dims", what, dt_ndim(a),
                         dt_ndim(b));
    drdc_status st = DRDC_OK;
    TRY(dt_shape(sa, 4, a));
    TRY(dt_shape(sb, 4, b));
    if (memcmp(sa, sb, sizeof sa) != 0)
        return drdc_fail(DRDC_ERR_INPUT, "base %s: reconstruction [%lld,%lld,%lld,%lld] vs features [%lld,%lld,%lld,%lld]",
                         what, (long long)sa[0], (long long)sa[1], (long long)sa[2], (long long)sa[3],
                         (long long)sb[0], (long long)sb[1], (long long)sb[2], (long long)sb[3]);
done:
    return st;
}

drdc_status drdc_base_loss(dt_tensor *out_loss, dt_tensor rec, dt_tensor features) {
    if (!out_loss) return drdc_fail(DRDC_ERR_INPUT, "base loss: out is NULL");
    *out_loss = NULL;
    drdc_status st = same_bchw(rec, features, "loss");
    if (st) return st;
    return dt_mse_loss(out_loss, rec, features);                         /* [] */
}

drdc_status drdc_base_anomaly_map(dt_tensor *out_map, dt_tensor rec, dt_tensor features) {
    if (!out_map) return drdc_fail(DRDC_ERR_INPUT, "base anomaly map: out is NULL");
    *out_map = NULL;
    drdc_status st = same_bchw(rec, features, "anomaly map");
    if (st) return st;
    st = dt_scope_begin();
    if (st) return st;
    dt_tensor diff, map = NULL;
    TRY(dt_sub(&diff, features, rec));                                   /* [B,C,h,w] */
    TRY(dt_norm2(&map, diff, 1, 1));                                     /* [B,1,h,w] */
done:
    return dt_scope_finish(st, map, out_map);
}

int64_t drdc_base_flops(const drdc_base *m, int64_t batch) {
    if (!m || m->tokens < 1) return -1;
    const int64_t B = batch, L = m->tokens, E = m->cfg.hidden, C = m->in_channels, F = m->cfg.ffn;
    const int64_t mha = 4 * (2 * B * L * E * E) + 2 * (2 * B * L * L * E);   /* q, k, v, out_proj; q k^T, a v */
    const int64_t ffn = 2 * (2 * B * L * E * F);
    return 2 * (2 * B * L * C * E)                                            /* input_proj, output_proj */
           + m->cfg.enc_layers * (mha + ffn) + m->cfg.dec_layers * (2 * mha + ffn);
}
