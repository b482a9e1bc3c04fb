/* unet.c: DRDC's refiner U-Net, a transcription of guided-diffusion's UNetModel (see unet.h for
 * the architecture, names and initialisation). Shapes are [N,C,H,W] throughout; without autograd
 * (inference) the activations are stored channels-last (NHWC), the layout oneDNN's convolutions run
 * in without reordering their input and output on every call, and eps comes back as plain NCHW. The
 * attention's 1x1 Conv1d layers run as 1x1 Conv2d on [N,C,H,W] (the same product), and the
 * attention itself is bmm + softmax. Every block runs in its own nested shim scope, so its
 * temporaries are freed when the block ends (inference memory stays at a few activations plus
 * the skip connections) and nothing outlives a forward call. */
#include "drdc/stages/unet.h"
#include "drdc/stages/attention.h"
#include "drdc/stages/simd.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GN_GROUPS 32
#define GN_EPS 1e-5           /* nn.GroupNorm's default, as GroupNorm32 */
#define MAX_PERIOD 10000.0    /* timestep_embedding's max_period */


/* ---- building ------------------------------------------------------------------------------ */

/* nn.Conv2d / Conv1d / Linear with PyTorch's default init: weight and bias U(+-1/sqrt(fan_in))
 * (kaiming_uniform with a = sqrt(5) gives the same bound); zero = 1: zero_module (both 0). */
static drdc_status add_layer(drdc_params *p, const char *prefix, const int64_t *wshape, int ndim, int zero,
                             dt_device dev, dt_generator g) {
    char name[256];
    int64_t fan_in = 1;
    for (int d = 1; d < ndim; d++) fan_in *= wshape[d];
    const double bound = 1.0 / sqrt((double)fan_in);
    const int64_t bshape[1] = {wshape[0]};
    drdc_status st = DRDC_OK;
    snprintf(name, sizeof name, "%s.weight", prefix);
    TRY(zero ? drdc_params_add_full(p, name, wshape, ndim, 0.0, dev, 1)
             : drdc_params_add_uniform(p, name, wshape, ndim, bound, dev, g, 1));
    snprintf(name, sizeof name, "%s.bias", prefix);
    TRY(zero ? drdc_params_add_full(p, name, bshape, 1, 0.0, dev, 1)
             : drdc_params_add_uniform(p, name, bshape, 1, bound, dev, g, 1));
done:
    return st;
}

static drdc_status add_conv(drdc_params *p, const char *prefix, int64_t out_ch, int64_t in_ch, int64_t k, int zero,
                            dt_device dev, dt_generator g) {
    const int64_t shape[4] = {out_ch, in_ch, k, k};
    return add_layer(p, prefix, shape, 4, zero, dev, g);
}

static drdc_status add_group_norm(drdc_params *p, const char *prefix, int64_t ch, dt_device dev) {
    char name[256];
    const int64_t shape[1] = {ch};
    drdc_status st = DRDC_OK;
    snprintf(name, sizeof name, "%s.weight", prefix);
    TRY(drdc_params_add_full(p, name, shape, 1, 1.0, dev, 1));
    snprintf(name, sizeof name, "%s.bias", prefix);
    TRY(drdc_params_add_full(p, name, shape, 1, 0.0, dev, 1));
done:
    return st;
}

/* Looks up "<prefix>.<part>.weight" and ".bias". */
static drdc_status get_pair(dt_tensor *w, dt_tensor *b, const drdc_params *p, const char *prefix, const char *part) {
    drdc_status st = DRDC_OK;
    TRY(drdc_params_getf(w, p, "%s%s.weight", prefix, part));
    TRY(drdc_params_getf(b, p, "%s%s.bias", prefix, part));
done:
    return st;
}

/* ResBlock(in_ch -> out_ch) under prefix ("input_blocks.1.0"), in state-dict order; wires rb. */
static drdc_status add_resblock(drdc_unet_resblock *rb, drdc_params *p, const char *prefix, int in_ch, int out_ch,
                                int emb_ch, dt_device dev, dt_generator g) {
    char name[200];
    drdc_status st = DRDC_OK;
    const int64_t emb_shape[2] = {2 * (int64_t)out_ch, emb_ch};
    rb->in_ch = in_ch;
    rb->out_ch = out_ch;
    snprintf(name, sizeof name, "%s.in_layers.0", prefix);
    TRY(add_group_norm(p, name, in_ch, dev));
    snprintf(name, sizeof name, "%s.in_layers.2", prefix);
    TRY(add_conv(p, name, out_ch, in_ch, 3, 0, dev, g));
    snprintf(name, sizeof name, "%s.emb_layers.1", prefix);
    TRY(add_layer(p, name, emb_shape, 2, 0, dev, g));
    snprintf(name, sizeof name, "%s.out_layers.0", prefix);
    TRY(add_group_norm(p, name, out_ch, dev));
    snprintf(name, sizeof name, "%s.out_layers.3", prefix);
    TRY(add_conv(p, name, out_ch, out_ch, 3, 1, dev, g));   /* zero_module */
    if (in_ch != out_ch) {
        snprintf(name, sizeof name, "%s.skip_connection", prefix);
        TRY(add_conv(p, name, out_ch, in_ch, 1, 0, dev, g));
    }
    char pre[220];
    snprintf(pre, sizeof pre, "%s.", prefix);
    TRY(get_pair(&rb->in_norm.w, &rb->in_norm.b, p, pre, "in_layers.0"));
    TRY(get_pair(&rb->in_conv.w, &rb->in_conv.b, p, pre, "in_layers.2"));
    TRY(get_pair(&rb->emb_w, &rb->emb_b, p, pre, "emb_layers.1"));
    TRY(get_pair(&rb->out_norm.w, &rb->out_norm.b, p, pre, "out_layers.0"));
    TRY(get_pair(&rb->out_conv.w, &rb->out_conv.b, p, pre, "out_layers.3"));
    if (in_ch != out_ch) TRY(get_pair(&rb->skip.w, &rb->skip.b, p, pre, "skip_connection"));
done:
    return st;
}

/* AttentionBlock(ch) with num_head_channels = head_ch. */
static drdc_status add_attn(drdc_unet_attn *a, drdc_params *p, const char *prefix, int ch, int head_ch,
                            dt_device dev, dt_generator g) {
    char name[200];
    drdc_status st = DRDC_OK;
    const int64_t qkv_shape[3] = {3 * (int64_t)ch, ch, 1}, proj_shape[3] = {ch, ch, 1};
    a->ch = ch;
    a->heads = ch / head_ch;
    snprintf(name, sizeof name, "%s.norm", prefix);
    TRY(add_group_norm(p, name, ch, dev));
    snprintf(name, sizeof name, "%s.qkv", prefix);
    TRY(add_layer(p, name, qkv_shape, 3, 0, dev, g));
    snprintf(name, sizeof name, "%s.proj_out", prefix);
    TRY(add_layer(p, name, proj_shape, 3, 1, dev, g));   /* zero_module */
    char pre[220];
    snprintf(pre, sizeof pre, "%s.", prefix);
    TRY(get_pair(&a->norm.w, &a->norm.b, p, pre, "norm"));
    TRY(get_pair(&a->qkv.w, &a->qkv.b, p, pre, "qkv"));
    TRY(get_pair(&a->proj.w, &a->proj.b, p, pre, "proj_out"));
done:
    return st;
}

/* A 3x3 conv that stands alone in a block (input conv, Downsample.op, Upsample.conv). */
static drdc_status add_block_conv(drdc_unet_block *b, drdc_params *p, const char *name, drdc_unet_conv_kind kind,
                                  int out_ch, int in_ch, dt_device dev, dt_generator g) {
    drdc_status st = DRDC_OK;
    TRY(add_conv(p, name, out_ch, in_ch, 3, 0, dev, g));                 /* [out,in,3,3] */
    b->conv_kind = kind;
    b->out_ch = out_ch;
    TRY(get_pair(&b->conv.w, &b->conv.b, p, name, ""));
done:
    return st;
}

static int level_has_attention(const drdc_refiner_config *cfg, int level) {
    for (int a = 0; a < cfg->n_attention; a++)
        if ((cfg->image_size >> level) == cfg->attention_res[a]) return 1;
    return 0;
}

drdc_status drdc_unet_check_config(const drdc_refiner_config *c) {
    if (!c) return drdc_fail(DRDC_ERR_INPUT, "unet config check: NULL config");
    /* what the rules below need to be computed at all */
    if (c->n_mult < 1 || c->n_mult > DRDC_MAX_LIST)
        return drdc_fail(DRDC_ERR_CONFIG, "refiner.channel_mult has %d levels: need 1..%d", c->n_mult, DRDC_MAX_LIST);
    if (c->channels < 1) return drdc_fail(DRDC_ERR_CONFIG, "refiner.channels %d must be >= 1", c->channels);
    if (c->head_channels < 1)
        return drdc_fail(DRDC_ERR_CONFIG, "refiner.head_channels %d must be >= 1", c->head_channels);
    for (int l = 0; l < c->n_mult; l++)
        if (c->channel_mult[l] < 1)
            return drdc_fail(DRDC_ERR_CONFIG, "refiner.channel_mult %d must be >= 1", c->channel_mult[l]);
    /* the architecture */
    const int levels = c->n_mult, down = 1 << (levels - 1);
    if (c->image_size < down || c->image_size % down != 0)
        return drdc_fail(DRDC_ERR_CONFIG,
                         "refiner.image_size %d is not divisible by %d = 2^(levels-1) for the %d levels of "
                         "refiner.channel_mult",
                         c->image_size, down, levels);
    for (int l = 0; l < levels; l++) {
        const int ch = c->channels * c->channel_mult[l];
        if (ch % GN_GROUPS != 0)
            return drdc_fail(DRDC_ERR_CONFIG,
                             "refiner.channels %d x refiner.channel_mult %d = %d channels is not a multiple of 32 "
                             "(GroupNorm(32))",
                             c->channels, c->channel_mult[l], ch);
    }
    for (int a = 0; a < c->n_attention; a++) {
        int level = -1;
        for (int l = 0; l < levels; l++)
            if ((c->image_size >> l) == c->attention_res[a]) level = l;
        if (level < 0) {
            char res[160] = "";
            size_t u = 0;
            for (int l = 0; l < levels && u < sizeof res; l++)
                u += (size_t)snprintf(res + u, sizeof res - u, "%s%d", l ? ", " : "", c->image_size >> l);
            return drdc_fail(DRDC_ERR_CONFIG, "refiner.attention_res %d is not a resolution of the U-Net levels (%s)",
                             c->attention_res[a], res);
        }
        const int ch = c->channels * c->channel_mult[level];
        if (ch % c->head_channels != 0)
            return drdc_fail(DRDC_ERR_CONFIG, "refiner.head_channels %d does not divide the %d channels at resolution %d",
                             c->head_channels, ch, c->attention_res[a]);
    }
    const int mid = c->channels * c->channel_mult[levels - 1];   /* the middle block always has attention */
    if (mid % c->head_channels != 0)
        return drdc_fail(DRDC_ERR_CONFIG, "refiner.head_channels %d does not divide the %d channels of the U-Net's "
                         "middle block", c->head_channels, mid);
    return DRDC_OK;
}

/* Adds every parameter in guided-diffusion's construction (= state-dict) order and wires the
 * blocks. */
static drdc_status build_layers(drdc_unet *u, dt_generator g) {
    const drdc_refiner_config *c = &u->cfg;
    drdc_params *p = &u->params;
    const int C = c->channels, E = 4 * C, levels = c->n_mult;
    const dt_device dev = u->dev;
    char name[200];
    drdc_status st = DRDC_OK;
    int chans[1 + 2 * DRDC_MAX_LIST * 17];   /* input_block_chans: n_in <= 1 + 16*16 + 15 */
    int n_chans = 0;

    const int64_t te0[2] = {E, C}, te2[2] = {E, E};
    TRY(add_layer(p, "time_embed.0", te0, 2, 0, dev, g));
    TRY(add_layer(p, "time_embed.2", te2, 2, 0, dev, g));
    TRY(get_pair(&u->temb0_w, &u->temb0_b, p, "time_embed.", "0"));
    TRY(get_pair(&u->temb2_w, &u->temb2_b, p, "time_embed.", "2"));

    int ch = C * c->channel_mult[0];
    const int ch0 = ch;
    int bi = 0;
    TRY(add_block_conv(&u->in[bi], p, "input_blocks.0.0", DRDC_UNET_CONV_INPUT, ch, drdc_unet_in_channels(c), dev,
                       g));
    chans[n_chans++] = ch;
    bi++;
    for (int level = 0; level < levels; level++) {
        const int out_ch = C * c->channel_mult[level];
        for (int r = 0; r < c->res_blocks; r++, bi++) {
            drdc_unet_block *b = &u->in[bi];
            snprintf(name, sizeof name, "input_blocks.%d.0", bi);
            TRY(add_resblock(&b->res, p, name, ch, out_ch, E, dev, g));
            b->has_res = 1;
            ch = out_ch;
            if (level_has_attention(c, level)) {
                snprintf(name, sizeof name, "input_blocks.%d.1", bi);
                TRY(add_attn(&b->attn, p, name, ch, c->head_channels, dev, g));
                b->has_attn = 1;
            }
            b->out_ch = ch;
            chans[n_chans++] = ch;
        }
        if (level != levels - 1) {
            snprintf(name, sizeof name, "input_blocks.%d.0.op", bi);
            TRY(add_block_conv(&u->in[bi], p, name, DRDC_UNET_CONV_DOWN, ch, ch, dev, g));
            chans[n_chans++] = ch;
            bi++;
        }
    }
    if (bi != u->n_in) {
        st = drdc_fail(DRDC_ERR_STATE, "unet build: %d input blocks, expected %d", bi, u->n_in);
        goto done;
    }

    TRY(add_resblock(&u->mid_res0, p, "middle_block.0", ch, ch, E, dev, g));
    TRY(add_attn(&u->mid_attn, p, "middle_block.1", ch, c->head_channels, dev, g));
    TRY(add_resblock(&u->mid_res2, p, "middle_block.2", ch, ch, E, dev, g));

    bi = 0;
    for (int level = levels - 1; level >= 0; level--) {
        const int out_ch = C * c->channel_mult[level];
        for (int i = 0; i <= c->res_blocks; i++, bi++) {
            drdc_unet_block *b = &u->out[bi];
            const int ich = chans[--n_chans];
            snprintf(name, sizeof name, "output_blocks.%d.0", bi);
            TRY(add_resblock(&b->res, p, name, ch + ich, out_ch, E, dev, g));
            b->has_res = 1;
            ch = out_ch;
            int k = 1;
            if (level_has_attention(c, level)) {
                snprintf(name, sizeof name, "output_blocks.%d.1", bi);
                TRY(add_attn(&b->attn, p, name, ch, c->head_channels, dev, g));
                b->has_attn = 1;
                k = 2;
            }
            b->out_ch = ch;
            if (level && i == c->res_blocks) {
                snprintf(name, sizeof name, "output_blocks.%d.%d.conv", bi, k);
                TRY(add_block_conv(b, p, name, DRDC_UNET_CONV_UP, ch, ch, dev, g));
            }
        }
    }
    if (bi != u->n_out || n_chans != 0) {
        st = drdc_fail(DRDC_ERR_STATE, "unet build: %d output blocks (expected %d), %d skips left", bi, u->n_out,
                       n_chans);
        goto done;
    }

    TRY(add_group_norm(p, "out.0", ch, dev));
    TRY(add_conv(p, "out.2", DRDC_UNET_OUT_CHANNELS, ch0, 3, 1, dev, g));   /* zero_module */
    TRY(get_pair(&u->out_norm.w, &u->out_norm.b, p, "out.", "0"));
    TRY(get_pair(&u->out_conv.w, &u->out_conv.b, p, "out.", "2"));
done:
    return st;
}

drdc_status drdc_unet_build(drdc_unet *unet, const drdc_refiner_config *cfg, dt_device dev, uint64_t seed) {
    if (!unet || !cfg) return drdc_fail(DRDC_ERR_INPUT, "unet build: unet or config is NULL");
    memset(unet, 0, sizeof *unet);
    drdc_status st = drdc_unet_check_config(cfg);
    if (st) return st;
    if (cfg->res_blocks < 1) return drdc_fail(DRDC_ERR_CONFIG, "refiner.res_blocks %d must be >= 1", cfg->res_blocks);
    if (!(cfg->dropout >= 0.0 && cfg->dropout < 1.0))
        return drdc_fail(DRDC_ERR_CONFIG, "refiner.dropout %g must be in [0, 1)", cfg->dropout);
    unet->cfg = *cfg;
    unet->model_channels = cfg->channels;
    unet->emb_channels = 4 * cfg->channels;
    unet->levels = cfg->n_mult;
    unet->min_divisor = 1 << (cfg->n_mult - 1);
    unet->dev = dev;
    unet->n_in = 1 + cfg->n_mult * cfg->res_blocks + (cfg->n_mult - 1);
    unet->n_out = cfg->n_mult * (cfg->res_blocks + 1);
    unet->in = calloc((size_t)unet->n_in, sizeof *unet->in);
    unet->out = calloc((size_t)unet->n_out, sizeof *unet->out);
    dt_generator g = NULL;
    if (!unet->in || !unet->out) {
        st = drdc_fail(DRDC_ERR_NOMEM, "unet build: out of memory for %d blocks", unet->n_in + unet->n_out);
        goto done;
    }
    TRY(dt_generator_new(&g, seed));
    TRY(build_layers(unet, g));
done:
    dt_generator_free(g);
    if (st) {
        drdc_unet_free(unet);
        return drdc_error_context(st, "building the refiner U-Net");
    }
    return DRDC_OK;
}

/* ---- inference copies (drdc_unet_prepare) ---------------------------------------------------- */

static drdc_status timestep_freqs(float *fr, int half);   /* the timestep embedding's, below */

/* Whether a copy made from w and b (at versions w_ver, b_ver) is still theirs: neither written since. */
static int copy_current(dt_tensor w, dt_tensor b, int64_t w_ver, int64_t b_ver) {
    return w_ver >= 0 && dt_version(w) == w_ver && dt_version(b) == b_ver;
}

/* What a walk over u's parts does to each (a NULL entry: nothing). */
typedef struct part_fns {
    drdc_status (*conv)(drdc_unet_conv *cv, void *ctx);
    drdc_status (*norm)(drdc_unet_norm *nm, void *ctx);
    drdc_status (*res)(drdc_unet_resblock *rb, void *ctx);   /* after the block's convolutions and norms */
    void *ctx;
} part_fns;

static drdc_status each_of_res(drdc_unet_resblock *r, const part_fns *f) {
    drdc_unet_conv *cv[3] = {&r->in_conv, &r->out_conv, &r->skip};
    drdc_unet_norm *nm[2] = {&r->in_norm, &r->out_norm};
    drdc_status st = DRDC_OK;
    for (int k = 0; k < 3 && f->conv && !st; k++) st = f->conv(cv[k], f->ctx);
    for (int k = 0; k < 2 && f->norm && !st; k++) st = f->norm(nm[k], f->ctx);
    return !st && f->res ? f->res(r, f->ctx) : st;
}

static drdc_status each_of_attn(drdc_unet_attn *a, const part_fns *f) {
    drdc_status st = DRDC_OK;
    if (f->conv) st = f->conv(&a->qkv, f->ctx);
    if (f->conv && !st) st = f->conv(&a->proj, f->ctx);
    return f->norm && !st ? f->norm(&a->norm, f->ctx) : st;
}

/* fns on every part of u that was built, each once, in a fixed order (the middle block, the input
 * and output blocks, the output layers); stops at the first failure. */
static drdc_status each_part(drdc_unet *u, const part_fns *f) {
    drdc_status st = each_of_res(&u->mid_res0, f);
    if (!st) st = each_of_attn(&u->mid_attn, f);
    if (!st) st = each_of_res(&u->mid_res2, f);
    for (int i = 0; i < u->n_in + u->n_out && !st; i++) {
        drdc_unet_block *b = i < u->n_in ? &u->in[i] : &u->out[i - u->n_in];
        if (b->has_res) st = each_of_res(&b->res, f);
        if (!st && b->has_attn) st = each_of_attn(&b->attn, f);
        if (!st && b->conv.w && f->conv) st = f->conv(&b->conv, f->ctx);
    }
    if (!st && f->conv) st = f->conv(&u->out_conv, f->ctx);
    return !st && f->norm ? f->norm(&u->out_norm, f->ctx) : st;
}

static drdc_status free_conv_copy(drdc_unet_conv *cv, void *ctx) {
    (void)ctx;
    dt_free(cv->run_w);
    dt_free(cv->run_b);
    cv->run_w = cv->run_b = NULL;
    drdc_amx_weights_free(&cv->amx);
    cv->w_ver = cv->b_ver = -1;
    return DRDC_OK;
}

static drdc_status free_norm_copy(drdc_unet_norm *nm, void *ctx) {
    (void)ctx;
    free(nm->host);
    nm->host = NULL;
    nm->w_ver = nm->b_ver = -1;
    return DRDC_OK;
}

static drdc_status forget_emb_row(drdc_unet_resblock *rb, void *ctx) {
    (void)ctx;
    rb->emb_row = rb->emb_w_ver = rb->emb_b_ver = -1;   /* each block projects its own */
    return DRDC_OK;
}

/* Frees every inference copy of u. */
static void free_copies(drdc_unet *u) {
    const part_fns f = {free_conv_copy, free_norm_copy, forget_emb_row, NULL};
    (void)each_part(u, &f);   /* these never fail */
    dt_free(u->emb_all_w);
    dt_free(u->emb_all_b);
    u->emb_all_w = u->emb_all_b = NULL;
    free(u->temb_freqs);
    u->temb_freqs = NULL;
}

/* cv's weight (wd: [out,in,k,k] bf16, contiguous) and bias packed for amx_conv.h into cv->amx,
 * where the CPU has AMX and the shape is one it takes (channels multiples of 32, k 1 or 3). */
static drdc_status pack_amx(drdc_unet_conv *cv, dt_tensor wd, const int64_t s[4]) {
    if (!drdc_amx_available() || dt_device_of(wd).type != DT_CPU || s[0] % 32 || s[1] % 32 || s[2] != s[3] ||
        (s[2] != 1 && s[2] != 3))
        return DRDC_OK;
    const size_t nw = (size_t)(s[0] * s[1] * s[2] * s[3]);
    uint16_t *w = malloc(nw * sizeof *w);
    float *b = malloc((size_t)s[0] * sizeof *b);
    drdc_status st = DRDC_OK;
    if (!w || !b) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory packing a convolution for AMX");
        goto done;
    }
    TRY(dt_copy_to_host(wd, w, nw * sizeof *w));
    TRY(dt_copy_to_host(cv->b, b, (size_t)s[0] * sizeof *b));   /* the float32 bias (packing rounds it) */
    TRY(drdc_amx_pack(&cv->amx, w, b, s[0], s[1], (int)s[2]));
done:
    free(w);
    free(b);
    return st;
}

/* cv's inference copies in the dtype *ctx: the weight [out,in,k,k] (a Conv1d's [out,in,1] as
 * [out,in,1,1]) channels-last, the bias; in bf16 also both packed for AMX (pack_amx). */
static drdc_status prepare_conv(drdc_unet_conv *cv, void *ctx) {
    const dt_dtype dtype = *(const dt_dtype *)ctx;
    if (!cv->w) return DRDC_OK;   /* a ResBlock without a skip convolution */
    int64_t s[4] = {0, 0, 1, 1};
    dt_tensor w4 = NULL, wd = NULL, wc = NULL, bd = NULL, w = NULL, b = NULL;
    drdc_status st = DRDC_OK;
    const int nd = dt_ndim(cv->w);
    if (nd != 3 && nd != 4) {
        st = drdc_fail(DRDC_ERR_STATE, "a convolution weight of %d dims", nd);
        goto done;
    }
    TRY(dt_shape(s, 4, cv->w));
    const int64_t w_ver = dt_version(cv->w), b_ver = dt_version(cv->b);
    if (w_ver < 0 || b_ver < 0) goto done;   /* no version to check against: the params are read */
    TRY(dt_reshape(&w4, cv->w, s, 4));
    TRY(dt_to_dtype(&wd, w4, dtype));
    TRY(dt_to_memory_format(&wc, wd, 1));
    TRY(dt_to_dtype(&bd, cv->b, dtype));
    TRY(dt_clone(&w, wc));   /* storage of their own (a cast to the same dtype is the param itself) */
    TRY(dt_clone(&b, bd));
    TRY(dt_detach(&cv->run_w, w));
    TRY(dt_detach(&cv->run_b, b));
    if (dtype == DT_BF16) TRY(pack_amx(cv, wd, s));
    cv->w_ver = w_ver, cv->b_ver = b_ver;
done:
    dt_free(w4);
    dt_free(wd);
    dt_free(wc);
    dt_free(bd);
    dt_free(w);
    dt_free(b);
    return st;
}

/* The norm's w then b as floats into dst ([2C]). */
static drdc_status read_affine(const drdc_unet_norm *nm, float *dst, int64_t C) {
    drdc_status st = dt_copy_to_host(nm->w, dst, sizeof(float) * (size_t)C);
    return st ? st : dt_copy_to_host(nm->b, dst + C, sizeof(float) * (size_t)C);
}

static drdc_status prepare_norm(drdc_unet_norm *nm, void *ctx) {
    (void)ctx;
    const int64_t C = dt_numel(nm->w), w_ver = dt_version(nm->w), b_ver = dt_version(nm->b);
    if (w_ver < 0 || b_ver < 0) return DRDC_OK;   /* no version to check against: the params are read */
    float *h = malloc(sizeof(float) * (size_t)(2 * C));
    if (!h) return drdc_fail(DRDC_ERR_NOMEM, "a norm's %lld values", (long long)C);
    const drdc_status st = read_affine(nm, h, C);
    if (st) {
        free(h);
        return st;
    }
    nm->host = h, nm->w_ver = w_ver, nm->b_ver = b_ver;
    return DRDC_OK;
}

/* The ResBlocks in walk order, for stacking their embedding projections. */
typedef struct emb_stack {
    dt_tensor *w, *b;   /* [cap] each */
    int n, cap;
    int64_t rows;
} emb_stack;

static drdc_status stack_emb(drdc_unet_resblock *rb, void *ctx) {
    emb_stack *e = ctx;
    if (e->n >= e->cap) return drdc_fail(DRDC_ERR_STATE, "more ResBlocks than the U-Net has blocks");
    e->w[e->n] = rb->emb_w, e->b[e->n++] = rb->emb_b;
    rb->emb_row = e->rows, rb->emb_w_ver = dt_version(rb->emb_w), rb->emb_b_ver = dt_version(rb->emb_b);
    e->rows += 2 * rb->out_ch;
    return DRDC_OK;
}

/* emb_all_w / emb_all_b: every ResBlock's emb_layers.1 stacked in walk order (float32, their own
 * storage), each block's emb_row its first row there; none where a version is missing. */
static drdc_status prepare_emb_all(drdc_unet *u) {
    const int cap = u->n_in + u->n_out + 2;
    emb_stack e = {malloc(sizeof(dt_tensor) * (size_t)cap), malloc(sizeof(dt_tensor) * (size_t)cap), 0, cap, 0};
    dt_tensor w = NULL, b = NULL;
    const part_fns f = {NULL, NULL, stack_emb, &e};
    drdc_status st = DRDC_OK;
    if (!e.w || !e.b) {
        st = drdc_fail(DRDC_ERR_NOMEM, "stacking %d embedding projections", cap);
        goto done;
    }
    TRY(each_part(u, &f));
    for (int i = 0; i < e.n; i++)
        if (dt_version(e.w[i]) < 0 || dt_version(e.b[i]) < 0) goto done;   /* no versions: the params are read */
    TRY(dt_cat(&w, e.w, e.n, 0));                                         /* [rows, 4C] */
    TRY(dt_cat(&b, e.b, e.n, 0));                                         /* [rows] */
    TRY(dt_detach(&u->emb_all_w, w));
    TRY(dt_detach(&u->emb_all_b, b));
done:
    dt_free(w);
    dt_free(b);
    free(e.w);
    free(e.b);
    if (!u->emb_all_w) {
        const part_fns forget = {NULL, NULL, forget_emb_row, NULL};
        (void)each_part(u, &forget);
    }
    return st;
}

drdc_status drdc_unet_prepare(drdc_unet *unet, dt_dtype dtype) {
    if (!unet || !unet->in) return drdc_fail(DRDC_ERR_INPUT, "unet prepare: the U-Net is NULL or not built");
    if (dtype != DT_F32 && dtype != DT_BF16)
        return drdc_fail(DRDC_ERR_INPUT, "unet prepare: the convolutions run in f32 or bf16, not %s",
                         dt_dtype_name(dtype));
    if (dt_scope_depth() != 0)   /* the copies live with the U-Net, not with a scope */
        return drdc_fail(DRDC_ERR_STATE, "unet prepare: called inside a shim scope");
    free_copies(unet);
    const part_fns f = {prepare_conv, prepare_norm, NULL, &dtype};
    drdc_status st = each_part(unet, &f);
    if (!st) st = prepare_emb_all(unet);
    if (!st) {   /* the timestep embedding's frequencies (constants of the width) */
        const int half = unet->model_channels / 2;
        unet->temb_freqs = malloc(sizeof(float) * (size_t)(half ? half : 1));
        st = unet->temb_freqs ? timestep_freqs(unet->temb_freqs, half)
                              : drdc_fail(DRDC_ERR_NOMEM, "out of memory for %d frequencies", half);
    }
    if (st) free_copies(unet);
    return st ? drdc_error_context(st, "unet prepare (%s)", dt_dtype_name(dtype)) : DRDC_OK;
}

void drdc_unet_free(drdc_unet *unet) {
    if (!unet) return;
    if (unet->in && unet->out) free_copies(unet);
    drdc_params_free(&unet->params);
    free(unet->in);
    free(unet->out);
    memset(unet, 0, sizeof *unet);
}

int64_t drdc_unet_num_params(const drdc_unet *unet) {
    return unet ? drdc_params_numel(&unet->params, 1) : 0;
}

/* ---- timestep embedding -------------------------------------------------------------------- */

/* freqs[k] = exp(-log(max_period) * k / half), k < half, with libtorch's float32 ops, exactly as
 * nn.py: exp(-math.log(max_period) * arange(0, half, float32) / half). */
static drdc_status timestep_freqs(float *fr, int half) {
    dt_tensor ar = NULL, sc = NULL, hv = NULL, q = NULL, fq = NULL;
    drdc_status st = DRDC_OK;
    if (half < 1) return DRDC_OK;
    TRY(dt_arange(&ar, 0.0, (double)half, 1.0, DT_F32, (dt_device){DT_CPU, 0}));
    TRY(dt_mul_scalar(&sc, ar, -log(MAX_PERIOD)));
    TRY(dt_full(&hv, (const int64_t[1]){0}, 0, (double)half, DT_F32, (dt_device){DT_CPU, 0}));
    TRY(dt_div(&q, sc, hv));
    TRY(dt_exp(&fq, q));
    TRY(dt_copy_to_host(fq, fr, sizeof(float) * (size_t)half));
done:
    dt_free(ar);
    dt_free(sc);
    dt_free(hv);
    dt_free(q);
    dt_free(fq);
    return st;
}

/* The embedding of t ([N], checked) with the frequencies fr ([dim / 2]). */
static drdc_status timestep_embed(dt_tensor *out, dt_tensor t, int dim, dt_device dev, const float *fr) {
    const int half = dim / 2;
    const int64_t n = dt_numel(t);
    drdc_status st = DRDC_OK;
    double *tv = malloc(sizeof(double) * (size_t)(n ? n : 1));
    float *emb = malloc(sizeof(float) * (size_t)(n > 0 ? n * dim : 1));
    dt_tensor t64 = NULL;
    if (!tv || !emb) {
        st = drdc_fail(DRDC_ERR_NOMEM, "timestep embedding: out of memory for %lld x %d", (long long)n, dim);
        goto done;
    }
    /* t as double on the host (exact for integer dtypes; the float -> float32 cast happens below) */
    TRY(dt_to_dtype(&t64, t, DT_F64));
    TRY(dt_copy_to_host(t64, tv, sizeof(double) * (size_t)n));
    /* args = t.float() * freqs in float32 (one rounding, as torch); cos/sin correctly rounded */
    for (int64_t i = 0; i < n; i++) {
        const float tf = (float)tv[i];
        float *row = emb + i * dim;
        for (int k = 0; k < half; k++) {
            const float arg = tf * fr[k];
            row[k] = (float)cos((double)arg);
            row[half + k] = (float)sin((double)arg);
        }
        if (dim % 2) row[dim - 1] = 0.0f;
    }
    TRY(dt_from_host(out, emb, DT_F32, (const int64_t[2]){n, dim}, 2, dev));
done:
    dt_free(t64);
    free(tv);
    free(emb);
    return st;
}

drdc_status drdc_unet_timestep_embedding(dt_tensor *out, dt_tensor t, int dim, dt_device dev) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "timestep embedding: out is NULL");
    *out = NULL;
    if (!t || dt_ndim(t) != 1)
        return drdc_fail(DRDC_ERR_INPUT, "timestep embedding: t must be a 1-D tensor [N] (got %d dims)",
                         t ? dt_ndim(t) : -1);
    if (dim < 1) return drdc_fail(DRDC_ERR_INPUT, "timestep embedding: dim %d must be >= 1", dim);
    float *fr = malloc(sizeof(float) * (size_t)(dim / 2 ? dim / 2 : 1));
    drdc_status st = fr ? timestep_freqs(fr, dim / 2)
                        : drdc_fail(DRDC_ERR_NOMEM, "timestep embedding: out of memory for %d frequencies", dim / 2);
    if (!st) st = timestep_embed(out, t, dim, dev, fr);
    free(fr);
    return st ? drdc_error_context(st, "timestep embedding") : DRDC_OK;
}

/* ---- work ---------------------------------------------------------------------------------- */

/* 2 x multiply-adds of a k x k convolution cin -> cout with an h x w output, of n images. */
static int64_t conv_flops(int64_t n, int64_t cin, int64_t cout, int64_t k, int64_t h, int64_t w) {
    return 2 * n * h * w * cout * cin * k * k;
}

/* ResBlock in -> out at h x w: two 3x3 convs, the emb_layers Linear(4C -> 2 out), the 1x1 skip. */
static int64_t resblock_flops(int64_t n, int64_t in, int64_t out, int64_t emb, int64_t h, int64_t w) {
    int64_t f = conv_flops(n, in, out, 3, h, w) + conv_flops(n, out, out, 3, h, w) + 2 * n * emb * 2 * out;
    return in != out ? f + conv_flops(n, in, out, 1, h, w) : f;
}

/* AttentionBlock of ch channels over L = h*w positions: qkv and proj_out (1x1), q^T k and v w^T
 * (each 2 L^2 ch over all heads together). */
static int64_t attn_flops(int64_t n, int64_t ch, int64_t h, int64_t w) {
    const int64_t L = h * w;
    return conv_flops(n, ch, 3 * ch, 1, h, w) + conv_flops(n, ch, ch, 1, h, w) + 2 * (2 * n * L * L * ch);
}

int64_t drdc_unet_flops(const drdc_refiner_config *c, int64_t n, int64_t h, int64_t w) {
    if (!c || drdc_unet_check_config(c) != DRDC_OK) return -1;
    const int64_t C = c->channels, E = 4 * C, levels = c->n_mult;
    int64_t chans[1 + 2 * DRDC_MAX_LIST * 17];   /* input_block_chans, as build_layers */
    int n_chans = 0;
    int64_t f = 2 * n * (C * E + E * E);                                   /* time_embed */
    int64_t ch = C * c->channel_mult[0];
    const int64_t ch0 = ch;
    f += conv_flops(n, drdc_unet_in_channels(c), ch, 3, h, w);              /* input conv */
    chans[n_chans++] = ch;
    for (int level = 0; level < levels; level++) {
        const int64_t out = C * c->channel_mult[level];
        for (int r = 0; r < c->res_blocks; r++) {
            f += resblock_flops(n, ch, out, E, h, w);
            ch = out;
            if (level_has_attention(c, level)) f += attn_flops(n, ch, h, w);
            chans[n_chans++] = ch;
        }
        if (level != levels - 1) {
            h /= 2, w /= 2;
            f += conv_flops(n, ch, ch, 3, h, w);                            /* Downsample, stride 2 */
            chans[n_chans++] = ch;
        }
    }
    f += 2 * resblock_flops(n, ch, ch, E, h, w) + attn_flops(n, ch, h, w);   /* middle block */
    for (int level = levels - 1; level >= 0; level--) {
        const int64_t out = C * c->channel_mult[level];
        for (int i = 0; i <= c->res_blocks; i++) {
            f += resblock_flops(n, ch + chans[--n_chans], out, E, h, w);  /* on cat(h, skip) */
            ch = out;
            if (level_has_attention(c, level)) f += attn_flops(n, ch, h, w);
            if (level && i == c->res_blocks) {
                h *= 2, w *= 2;
                f += conv_flops(n, ch, ch, 3, h, w);                        /* Upsample: nearest x2, conv */
            }
        }
    }
    return f + conv_flops(n, ch0, DRDC_UNET_OUT_CHANNELS, 3, h, w);          /* out conv */
}

/* ---- drdc_unet_profile: the forward pass's time by kind of work ------------------------------ */
static atomic_int g_prof_on;
static atomic_llong g_prof_ns[DRDC_UNET_PROF_KINDS], g_prof_conv_flops, g_prof_passes;

static int64_t prof_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A start time, or 0 while the profile is off. */
static int64_t prof_start(void) { return atomic_load_explicit(&g_prof_on, memory_order_relaxed) ? prof_now_ns() : 0; }

static void prof_end(int kind, int64_t t0) {
    if (t0) atomic_fetch_add_explicit(&g_prof_ns[kind], prof_now_ns() - t0, memory_order_relaxed);
}

/* stmt (a TRY: on failure it leaves without adding its time), timed as kind */
#define PROF(kind, stmt)                        \
    do {                                        \
        const int64_t prof_t0_ = prof_start();  \
        stmt;                                   \
        prof_end(kind, prof_t0_);               \
    } while (0)

void drdc_unet_profile_start(void) {
    for (int k = 0; k < DRDC_UNET_PROF_KINDS; k++) atomic_store(&g_prof_ns[k], 0);
    atomic_store(&g_prof_conv_flops, 0);
    atomic_store(&g_prof_passes, 0);
    atomic_store(&g_prof_on, 1);
}

void drdc_unet_profile_stop(drdc_unet_profile *out) {
    atomic_store(&g_prof_on, 0);
    if (!out) return;
    for (int k = 0; k < DRDC_UNET_PROF_KINDS; k++) out->seconds[k] = (double)atomic_load(&g_prof_ns[k]) * 1e-9;
    out->conv_flops = atomic_load(&g_prof_conv_flops);
    out->passes = atomic_load(&g_prof_passes);
}

/* ---- forward ------------------------------------------------------------------------------- */

/* Per-call state shared by the blocks. */
typedef struct fwd_ctx {
    const drdc_unet *u;
    dt_tensor emb_act;   /* [N,4C] SiLU(emb): the first layer of every ResBlock's emb_layers */
    int training;
    dt_generator g;
    int channels_last;   /* activations stored NHWC (without autograd): oneDNN's convolutions never reorder */
    /* the ResBlocks' scale and shift for the fused norm, projected once for the pass (NULL: each
     * block projects its own): row n, block rb at emb_host[n * emb_stride + rb->emb_row] */
    const float *emb_host;
    int64_t emb_stride;
    int emb_bf16;        /* the projection ran in bf16 (autocast): 1 + scale is rounded to bf16, as libtorch's */
} fwd_ctx;

/* ---- GroupNorm + affine + SiLU in one kernel (CPU inference) --------------------------------
 * libtorch runs a ResBlock's "GroupNorm, scale-shift, SiLU" as three passes over the activations
 * (norm, addcmul, SiLU; the norm itself reads them twice), memory-bound at the U-Net's 128 px
 * levels. Here: one read for the statistics, one read and one write for y = SiLU(a x + b) with
 * a, b per sample and channel (the norm's weight and bias, and the ResBlock's 1 + scale and shift,
 * folded). Channels-last on the CPU only (the activations NHWC: channel c of pixel p at p * C + c),
 * float32, or bf16 under autocast: then read and written as bf16 (the arithmetic in float32, as
 * libtorch's norm), so the next convolution gets the bf16 it runs on and no cast in between.
 * Anything else takes the libtorch ops. Statistics per chunk of pixels in float about the chunk's
 * first pixel, merged in double (Chan et al.): no cancellation for means far from 0. */
#define GN_CHUNK 256          /* pixels per task */
#define GN_MAX_CHANNELS 2048  /* wider activations take the libtorch ops */

typedef struct gn_job {
    const void *x;
    const void *xb;           /* NULL, or the input's channels from ca on (x then holds the first ca) */
    int64_t ca;
    void *y;
    int bf16;                 /* x and y bf16 (uint16: a float32's high half), else float32 */
    int silu;                 /* y = SiLU(a x + b), else y = a x + b (the attention blocks' norm) */
    int64_t P, C, n_chunks;   /* pixels per sample, channels, chunks per sample */
    double *mean, *m2;        /* [N*n_chunks][C]: per chunk and channel */
    const float *a, *b;       /* [N][C] */
} gn_job;

/* Clones for x86-64-v4 (AVX-512 F/BW/DQ/VL: BW lets the bf16 passes mix 16- and 32-bit lanes; with
 * F alone GCC 12 left them scalar, 109 against 47 ms per U-Net call), AVX2 and the baseline. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define GN_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define GN_CLONES
#endif

/* exp(x) for SiLU: Cephes' expf polynomial (about 1 ulp), written so that the compiler vectorises
 * it. x is clamped to [-87.3, 88.4] by two comparisons that also turn a NaN into the upper bound
 * (a comparison with NaN is false), so the float-to-int step never sees a NaN: the caller's
 * product with its own NaN keeps the NaN. */
static inline float gn_exp(float x) {
    x = x < 88.3762626647949f ? x : 88.3762626647949f;
    x = x > -87.3365447505531f ? x : -87.3365447505531f;
    const float fx = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;   /* round to nearest (1.5 2^23) */
    x -= fx * 0.693359375f;
    x -= fx * -2.12194440e-4f;
    const float z = x * x;
    float y = ((((1.9875691500e-4f * x + 1.3981999507e-3f) * x + 8.3334519073e-3f) * x + 4.1665795894e-2f) * x +
               1.6666665459e-1f) * x + 5.0000001201e-1f;
    y = y * z + x + 1.0f;
    const uint32_t bits = (uint32_t)((int32_t)fx + 127) << 23;   /* 2^fx, fx in [-126, 128] */
    float pow2;
    memcpy(&pow2, &bits, sizeof pow2);
    return y * pow2;
}

/* SiLU(v) = v / (1 + exp(-v)) without a division (the divide unit was half of this kernel's time):
 * 1/d from the exponent trick (12 % error at most) and three Newton steps (each squares the
 * error: 2 %, 2e-4, 4e-8). -v is capped at 80 so that d = 1 + exp(-v) <= 5.6e34 and 1/d stays a
 * normal float; below v = -80 SiLU is under 2e-33 in magnitude either way. */
static inline float gn_silu(float v) {
    const float mv = -v < 80.0f ? -v : 80.0f;   /* NaN -> 80: v's NaN comes through the product */
    const float d = 1.0f + gn_exp(mv);
    uint32_t i;
    memcpy(&i, &d, sizeof i);
    i = 0x7ef311c3u - i;
    float r;
    memcpy(&r, &i, sizeof r);
    r = r * (2.0f - d * r);
    r = r * (2.0f - d * r);
    r = r * (2.0f - d * r);
    return v * r;
}

#define GN_F32_LOAD(v) (v)
#define GN_F32_STORE(v) (v)

/* Task t's pixels: np pixels from p0 of sample n (chunk t % n_chunks of sample t / n_chunks), x
 * the first one's values (T *). */
#define GN_TASK(T, j, t)                                                                               \
    const int64_t n = (t) / (j)->n_chunks, p0 = ((t) % (j)->n_chunks) * GN_CHUNK;                      \
    const int64_t np = p0 + GN_CHUNK < (j)->P ? GN_CHUNK : (j)->P - p0;                                \
    const T *x = (const T *)(j)->x + (n * (j)->P + p0) * (j)->C

/* GN_TASK, and y, a, b: the outputs of those pixels and sample n's coefficients. */
#define GN_APPLY_TASK(T, j, t)                                                                         \
    GN_TASK(T, j, t);                                                                                  \
    T *y = (T *)(j)->y + (n * (j)->P + p0) * (j)->C;                                                   \
    const float *a = (j)->a + n * (j)->C, *b = (j)->b + n * (j)->C

/* The two passes for activations of type T (float, or uint16_t holding bf16), LOAD and STORE
 * converting to and from float32: one piece of code for both dtypes. Task t is chunk t % n_chunks
 * of sample t / n_chunks. Statistics: per channel, the sums of (x - k) and of its square, k the
 * chunk's first pixel. Apply: y = SiLU(a x + b), NaN in, NaN out. */
#define GN_PASSES(SUFFIX, T, LOAD, STORE)                                                              \
    GN_CLONES static void gn_stats_##SUFFIX(void *ctx, int64_t t0, int64_t t1) {                       \
        const gn_job *j = ctx;                                                                         \
        const int64_t C = j->C;                                                                        \
        float s[GN_MAX_CHANNELS], q[GN_MAX_CHANNELS], k[GN_MAX_CHANNELS];                              \
        for (int64_t t = t0; t < t1; t++) {                                                            \
            GN_TASK(T, j, t);                                                                          \
            for (int64_t c = 0; c < C; c++) k[c] = LOAD(x[c]), s[c] = q[c] = 0.0f;                     \
            for (int64_t p = 0; p < np; p++, x += C)                                                   \
                for (int64_t c = 0; c < C; c++) {                                                      \
                    const float d = LOAD(x[c]) - k[c];                                                 \
                    s[c] += d;                                                                         \
                    q[c] += d * d;                                                                     \
                }                                                                                      \
            for (int64_t c = 0; c < C; c++) {                                                          \
                const double ds = s[c], mean_d = ds / (double)np;                                      \
                j->mean[t * C + c] = k[c] + mean_d;                                                    \
                j->m2[t * C + c] = q[c] - ds * mean_d;                                                 \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
    GN_CLONES static void gn_apply_##SUFFIX(void *ctx, int64_t t0, int64_t t1) {                       \
        const gn_job *j = ctx;                                                                         \
        const int64_t C = j->C;                                                                        \
        for (int64_t t = t0; t < t1; t++) {                                                            \
            GN_APPLY_TASK(T, j, t);                                                                    \
            if (j->silu)                                                                               \
                for (int64_t p = 0; p < np; p++, x += C, y += C)                                       \
                    for (int64_t c = 0; c < C; c++) y[c] = STORE(gn_silu(a[c] * LOAD(x[c]) + b[c]));   \
            else                                                                                       \
                for (int64_t p = 0; p < np; p++, x += C, y += C)                                       \
                    for (int64_t c = 0; c < C; c++) y[c] = STORE(a[c] * LOAD(x[c]) + b[c]);            \
        }                                                                                              \
    }

GN_PASSES(f32, float, GN_F32_LOAD, GN_F32_STORE)
GN_PASSES(bf16, uint16_t, drdc_bf16_to_f32, drdc_f32_to_bf16)

/* The apply pass in AVX-512 intrinsics, chosen at run time when the CPU has them. With the clones
 * above it was the largest item of a bf16 U-Net call after the convolutions (22 % of the call's
 * samples, as much as oneDNN's kernels): GCC's code for gn_exp's clamps, gn_silu's Newton steps and
 * the bf16 rounding spends about 60 instructions per 16 values. Here exp is simd.h's drdc_exp16
 * (the same polynomial, vscalefps for 2^n), 1/d is vrcp14ps (2^-14) with one Newton step (2^-28),
 * and bf16 is stored by vcvtneps2bf16 (round to nearest even, a NaN stays NaN). The clamps as in
 * gn_silu and gn_exp: vminps and vmaxps return their second operand when the first is NaN, so a NaN
 * v reaches the exponent as a bound and comes out through the product v * r. C must be a multiple
 * of 16 (GroupNorm32 gives a multiple of 32). */
#if DRDC_SIMD_AVX512
#define GN_AVX512 1
#define GN_TARGET_F32 DRDC_TARGET_AVX512
#define GN_TARGET_BF16 DRDC_TARGET_AVX512_BF16

GN_TARGET_F32 static inline __m512 gn_silu16(__m512 v) {
    const __m512 mv = _mm512_min_ps(_mm512_sub_ps(_mm512_setzero_ps(), v), _mm512_set1_ps(80.0f)); /* NaN -> 80 */
    const __m512 d = _mm512_add_ps(drdc_exp16(mv), _mm512_set1_ps(1.0f));                         /* 1 + exp(-v) */
    __m512 r = _mm512_rcp14_ps(d);
    r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
    return _mm512_mul_ps(v, r);
}

/* SiLU for bf16 outputs, which keep 8 significant bits (rounding error up to 2^-9): exp(-v) as
 * 2^t, t = -v log2(e), split into n = round(t) and r = t - n in [-1/2, 1/2] (exact), 2^r from a
 * degree-4 Taylor polynomial in r ln2 (relative error under 4.4e-5) and 2^n by vscalefps; 1/d from
 * vrcp14ps alone (2^-14). Both far below bf16's rounding; nine instructions fewer per 16 values than
 * gn_silu16. No upper clamp is needed: vscalefps saturates (a large -v gives d = inf, 1/d = 0,
 * SiLU = -0, as v / (1 + exp(-v)) in libtorch); t is held above -126 so that v = +inf gives
 * n = -126, d = 1 and +inf, not inf - inf. A NaN v passes the clamp as -126 (vmaxps returns its
 * second operand) and comes out through the product v * (1/d); v = -inf gives NaN, as libtorch. */
GN_TARGET_F32 static inline __m512 gn_silu16_bf16(__m512 v) {
    const __m512 t = _mm512_max_ps(_mm512_mul_ps(v, _mm512_set1_ps(-1.44269504088896341f)), _mm512_set1_ps(-126.0f));
    const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_sub_ps(t, n);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(9.6181291076e-3f), r, _mm512_set1_ps(5.5504108665e-2f)); /* ln2^4/24, ln2^3/6 */
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(2.4022650696e-1f));                                         /* ln2^2/2 */
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(6.9314718056e-1f));                                         /* ln2 */
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const __m512 d = _mm512_add_ps(_mm512_scalef_ps(p, n), _mm512_set1_ps(1.0f));                 /* 1 + exp(-v) */
    return _mm512_mul_ps(v, _mm512_rcp14_ps(d));
}

/* One task range of the apply pass; LOAD16(T *) -> __m512, STORE16(T *, __m512), SILU16 the SiLU. */
#define GN_APPLY_AVX512(SUFFIX, TARGET, T, LOAD16, STORE16, SILU16)                                    \
    TARGET static void gn_apply_##SUFFIX##_avx512(void *ctx, int64_t t0, int64_t t1) {                  \
        const gn_job *j = ctx;                                                                         \
        const int64_t C = j->C;                                                                        \
        for (int64_t t = t0; t < t1; t++) {                                                            \
            GN_APPLY_TASK(T, j, t);                                                                    \
            for (int64_t p = 0; p < np; p++, x += C, y += C)                                           \
                for (int64_t c = 0; c < C; c += 16) {                                                  \
                    const __m512 v = _mm512_fmadd_ps(_mm512_loadu_ps(a + c), LOAD16(x + c),            \
                                                     _mm512_loadu_ps(b + c));                          \
                    STORE16(y + c, j->silu ? SILU16(v) : v);                                           \
                }                                                                                      \
        }                                                                                              \
    }
#define GN_LOAD16_F32(p) _mm512_loadu_ps(p)
#define GN_STORE16_F32(p, v) _mm512_storeu_ps((p), (v))
#define GN_LOAD16_BF16(p) \
    _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p))), 16))
#define GN_STORE16_BF16(p, v) _mm256_storeu_si256((__m256i *)(p), (__m256i)_mm512_cvtneps_pbh(v))
GN_APPLY_AVX512(f32, GN_TARGET_F32, float, GN_LOAD16_F32, GN_STORE16_F32, gn_silu16)
GN_APPLY_AVX512(bf16, GN_TARGET_BF16, uint16_t, GN_LOAD16_BF16, GN_STORE16_BF16, gn_silu16_bf16)

/* bf16 in pairs: 32 channels a vector load, split into the even channels (each 32-bit lane's low
 * half shifted up) and the odd ones (the high half, masked): two instructions for 32 values where
 * widening takes two for 16. The apply pass packs its two results back with one vcvtne2ps2bf16
 * and puts the channels back in order with one vpermw; its coefficients a and b come in the same
 * even/odd order per block of 32 channels (gn_lane). C a multiple of 32. */
#define GN_EVEN(v) _mm512_castsi512_ps(_mm512_slli_epi32((v), 16))
#define GN_ODD(v) _mm512_castsi512_ps(_mm512_and_si512((v), _mm512_set1_epi32((int)0xffff0000u)))

/* Pixel pix's (of all samples) channels c .. c + 31 (c a multiple of 32) of a bf16 input in one
 * part or, with xb, in two (the U-Net decoder's concatenation, never written); *stride: the values
 * from one pixel to the next. */
static inline const uint16_t *pair_at(const gn_job *j, int64_t pix, int64_t c, int64_t *stride) {
    if (!j->xb) {
        *stride = j->C;
        return (const uint16_t *)j->x + pix * j->C + c;
    }
    if (c < j->ca) {
        *stride = j->ca;
        return (const uint16_t *)j->x + pix * j->ca + c;
    }
    *stride = j->C - j->ca;
    return (const uint16_t *)j->xb + pix * (j->C - j->ca) + (c - j->ca);
}

/* Statistics of a task's pixels in bf16 pairs: per block of 32 channels, the sums of (x - k) and
 * (x - k)^2 in registers over the pixels, k the first pixel; as gn_stats_bf16, in the same float32
 * arithmetic. (Four chains of sums a pixel keep both vector ports busy: unrolling gained nothing.) */
GN_TARGET_BF16 static void gn_stats_bf16_pairs(void *ctx, int64_t t0, int64_t t1) {
    const gn_job *j = ctx;
    const int64_t C = j->C;
    for (int64_t t = t0; t < t1; t++) {
        GN_TASK(uint16_t, j, t);
        (void)x;   /* pair_at: the input may be in two parts */
        for (int64_t c = 0; c < C; c += 32) {
            int64_t cs = 0;
            const uint16_t *xc = pair_at(j, n * j->P + p0, c, &cs);
            const __m512i k = _mm512_loadu_si512(xc);
            const __m512 ke = GN_EVEN(k), ko = GN_ODD(k);
            __m512 se = _mm512_setzero_ps(), so = se, qe = se, qo = se;
            for (int64_t p = 0; p < np; p++) {
                const __m512i v = _mm512_loadu_si512(xc + p * cs);
                const __m512 de = _mm512_sub_ps(GN_EVEN(v), ke), dO = _mm512_sub_ps(GN_ODD(v), ko);
                se = _mm512_add_ps(se, de);
                qe = _mm512_fmadd_ps(de, de, qe);
                so = _mm512_add_ps(so, dO);
                qo = _mm512_fmadd_ps(dO, dO, qo);
            }
            float sum[2][16], sq[2][16], kf[2][16];   /* [0]: the even channels, [1]: the odd */
            _mm512_storeu_ps(sum[0], se);
            _mm512_storeu_ps(sum[1], so);
            _mm512_storeu_ps(sq[0], qe);
            _mm512_storeu_ps(sq[1], qo);
            _mm512_storeu_ps(kf[0], ke);
            _mm512_storeu_ps(kf[1], ko);
            for (int i = 0; i < 32; i++) {   /* channel c + i: lane i / 2 of set i % 2 */
                const double ds = sum[i % 2][i / 2], mean_d = ds / (double)np;
                j->mean[t * C + c + i] = kf[i % 2][i / 2] + mean_d;
                j->m2[t * C + c + i] = sq[i % 2][i / 2] - ds * mean_d;
            }
        }
    }
}

/* The apply pass in bf16 pairs: a and b in gn_lane's order. */
GN_TARGET_BF16 static void gn_apply_bf16_pairs(void *ctx, int64_t t0, int64_t t1) {
    const gn_job *j = ctx;
    const int64_t C = j->C;
    const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                           21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);   /* even i, odd i, ... */
    for (int64_t t = t0; t < t1; t++) {
        GN_APPLY_TASK(uint16_t, j, t);
        (void)x;   /* pair_at: the input may be in two parts */
        for (int64_t p = 0; p < np; p++, y += C)
            for (int64_t c = 0; c < C; c += 32) {
                int64_t cs = 0;
                const __m512i v = _mm512_loadu_si512(pair_at(j, n * j->P + p0 + p, c, &cs));
                __m512 e = _mm512_fmadd_ps(_mm512_loadu_ps(a + c), GN_EVEN(v), _mm512_loadu_ps(b + c));
                __m512 o = _mm512_fmadd_ps(_mm512_loadu_ps(a + c + 16), GN_ODD(v), _mm512_loadu_ps(b + c + 16));
                if (j->silu) e = gn_silu16_bf16(e), o = gn_silu16_bf16(o);
                const __m512i packed = (__m512i)_mm512_cvtne2ps_pbh(o, e);   /* e's 16 values, then o's */
                _mm512_storeu_si512(y + c, _mm512_permutexvar_epi16(order, packed));
            }
    }
}
#else
#define GN_AVX512 0
#endif

static atomic_int g_gn_avx512 = 1;   /* drdc_unet_use_avx512 */

int drdc_unet_use_avx512(int on) { return atomic_exchange(&g_gn_avx512, on != 0); }

int drdc_unet_avx512_active(int bf16, int64_t channels) {
    return GN_AVX512 && atomic_load(&g_gn_avx512) && channels % 16 == 0 && drdc_cpu_avx512(bf16);
}

/* Whether a bf16 norm of C channels takes the pair kernels (their coefficients in gn_lane's order). */
static int gn_pairs(int bf16, int64_t C) { return GN_AVX512 && bf16 && C % 32 == 0 && drdc_unet_avx512_active(1, C); }

/* Where channel c's coefficient goes for the pair kernels: in each block of 32, the even channels
 * first, then the odd ones. */
static inline int64_t gn_lane(int64_t c) { return (c & ~(int64_t)31) + (c & 1) * 16 + (c & 31) / 2; }

/* The two passes for this dtype and width: AVX-512 where drdc_unet_avx512_active (in pairs for bf16
 * where gn_pairs), else the clones. */
static void (*gn_stats_pass(int bf16, int64_t C))(void *, int64_t, int64_t) {
#if GN_AVX512
    if (gn_pairs(bf16, C)) return gn_stats_bf16_pairs;
#endif
    return bf16 ? gn_stats_bf16 : gn_stats_f32;
}

static void (*gn_apply_pass(int bf16, int64_t C))(void *, int64_t, int64_t) {
#if GN_AVX512
    if (gn_pairs(bf16, C)) return gn_apply_bf16_pairs;
    if (drdc_unet_avx512_active(bf16, C)) return bf16 ? gn_apply_bf16_avx512 : gn_apply_f32_avx512;
#endif
    return bf16 ? gn_apply_bf16 : gn_apply_f32;
}

static int gn_fusable(const fwd_ctx *c, dt_tensor x) {
    int64_t C = 0;
    const dt_dtype d = dt_dtype_of(x);
    return c->channels_last && dt_device_of(x).type == DT_CPU && (d == DT_F32 || d == DT_BF16) &&
           dt_is_channels_last(x) && dt_size(&C, x, 1) == DRDC_OK && C <= GN_MAX_CHANNELS;
}

/* The norm's affine on the host: its prepared copy while current, else read into tmp ([2C]). */
static drdc_status norm_affine(const float **out, const drdc_unet_norm *nm, float *tmp, int64_t C) {
    if (nm->host && copy_current(nm->w, nm->b, nm->w_ver, nm->b_ver)) {
        *out = nm->host;
        return DRDC_OK;
    }
    *out = tmp;
    return read_affine(nm, tmp, C);
}

/* One ResBlock's scale and shift for sample n, channel c: scale at ss[n * stride + c], shift at
 * ss[n * stride + C + c] (the emb_layers output's two halves); round: 1 + scale rounded to bf16. */
typedef struct gn_scale_shift {
    const float *ss;
    int64_t stride;
    int round;
} gn_scale_shift;

static inline float round_bf16(float f) { return drdc_bf16_to_f32(drdc_f32_to_bf16(f)); }

/* y = SiLU(GroupNorm32(x) * w * scale1 + b * scale1 + shift) (silu = 1; without the SiLU for 0),
 * x [N,C,H,W] channels-last on the CPU, float32 or bf16 (under autocast); with xb, the input is x
 * and xb side by side along the channels (bf16 pair kernels only); y the same dtype and layout; nm
 * the norm's w and b; ss the ResBlock's scale and shift, or NULL (scale1 1, shift 0). inplace = 1:
 * y takes x's storage (the caller no longer reads x; see resblock_forward). */
static drdc_status gn_fused(dt_tensor *out, dt_tensor x, dt_tensor xb, const drdc_unet_norm *nm,
                            const gn_scale_shift *ss, int silu, int inplace) {
    int64_t s[4], sb[4] = {0, 0, 0, 0};
    drdc_status st = dt_shape(s, 4, x);
    if (!st && xb) st = dt_shape(sb, 4, xb);
    if (st) return st;
    const int64_t N = s[0], C = s[1] + sb[1], P = s[2] * s[3], G = GN_GROUPS, cg = C / G;
    if (xb && (inplace || !gn_pairs(dt_dtype_of(x) == DT_BF16, C) || s[1] % 32 || dt_dtype_of(xb) != dt_dtype_of(x)))
        return drdc_fail(DRDC_ERR_STATE, "unet: a group norm of an input in two parts needs the bf16 pair kernels");
    const int64_t n_chunks = (P + GN_CHUNK - 1) / GN_CHUNK;
    dt_tensor y = NULL;
    float *wb = malloc(sizeof(float) * (size_t)(2 * C + 2 * N * C));
    double *stats = malloc(sizeof(double) * (size_t)(2 * N * n_chunks * C));
    gn_job j = {.P = P, .C = C, .n_chunks = n_chunks, .bf16 = dt_dtype_of(x) == DT_BF16, .silu = silu};
    if (!wb || !stats) {
        st = drdc_fail(DRDC_ERR_NOMEM, "unet: group norm of [%lld,%lld,%lld,%lld]: out of memory", (long long)N,
                       (long long)C, (long long)s[2], (long long)s[3]);
        goto done;
    }
    const float *aff = NULL;
    float *a = wb + 2 * C, *bb = a + N * C;
    TRY(norm_affine(&aff, nm, wb, C));
    const float *wh = aff, *bh = aff + C;
    void *xp = NULL, *yp = NULL;
    if (inplace) TRY(dt_detach(&y, x));                                   /* x's storage */
    else TRY(dt_empty(&y, (const int64_t[4]){N, C, s[2], s[3]}, 4, dt_dtype_of(x), dt_device_of(x), 1)); /* channels-last */
    TRY(dt_host_data(&xp, x));
    TRY(dt_host_data(&yp, y));
    if (xb) {
        void *xbp = NULL;
        TRY(dt_host_data(&xbp, xb));
        j.xb = xbp, j.ca = s[1];
    }
    j.x = xp, j.y = yp, j.mean = stats, j.m2 = stats + N * n_chunks * C, j.a = a, j.b = bb;
    TRY(dt_parallel_for(0, N * n_chunks, 1, gn_stats_pass(j.bf16, C), &j));
    const int pairs = gn_pairs(j.bf16, C);
    const double last = (double)(P - (n_chunks - 1) * GN_CHUNK);   /* the last chunk's pixels */
    for (int64_t n = 0; n < N; n++) {
        const float *e = ss ? ss->ss + n * ss->stride : NULL;   /* sample n's scale, then shift */
        const double *cm = j.mean + n * n_chunks * C, *cq = j.m2 + n * n_chunks * C;
        for (int64_t g = 0; g < G; g++) {
            /* the group's mean over its chunks and channels, then its sum of squares about that mean:
             * each cell's own, plus its count times its mean's squared distance (exact, no cancellation) */
            double sum = 0, m2 = 0;
            for (int64_t k = 0; k < n_chunks; k++) {
                const double nb = k + 1 < n_chunks ? GN_CHUNK : last;
                for (int64_t c = g * cg; c < (g + 1) * cg; c++) sum += nb * cm[k * C + c];
            }
            const double mean = sum / ((double)P * (double)cg);
            for (int64_t k = 0; k < n_chunks; k++) {
                const double nb = k + 1 < n_chunks ? GN_CHUNK : last;
                for (int64_t c = g * cg; c < (g + 1) * cg; c++) {
                    const double d = cm[k * C + c] - mean;
                    m2 += cq[k * C + c] + nb * d * d;
                }
            }
            const double rstd = 1.0 / sqrt(m2 / ((double)P * (double)cg) + GN_EPS);
            for (int64_t c = g * cg; c < (g + 1) * cg; c++) {
                const double wr = wh[c] * rstd, s1 = !e ? 1.0 : ss->round ? round_bf16(1.0f + e[c]) : 1.0f + e[c];
                const int64_t l = n * C + (pairs ? gn_lane(c) : c);
                a[l] = (float)(wr * s1);
                bb[l] = (float)((bh[c] - mean * wr) * s1 + (e ? e[C + c] : 0.0f));
            }
        }
    }
    TRY(dt_parallel_for(0, N * n_chunks, 1, gn_apply_pass(j.bf16, C), &j));
done:
    free(wb);
    free(stats);
    if (st) {
        dt_free(y);
        return drdc_error_context(st, "unet: fused group norm");
    }
    *out = y;
    return DRDC_OK;
}

/* ---- the residual add, the skip concatenation and the nearest x2 upsampling in C (CPU inference)
 * On channels-last activations without autograd, three libtorch ops cost more than their bytes:
 * the residual add (in bf16 0.22 ns a value on a 128 px map: libtorch 1.13 widens and narrows
 * each value through its own loop), the concatenation along channels (a strided copy, 0.16 ms for
 * two [1,32,128,128] bf16 maps) and the nearest x2 upsampling (0.21 ms to 128 px). Here each is
 * one pass, with libtorch's results to the bit: the add in float32 rounded to nearest even (as
 * libtorch's bf16 add; float32 as it is), the other two copies. Anything else takes libtorch's ops. */
static atomic_int g_c_moves = 1;   /* drdc_unet_use_c_moves */

int drdc_unet_use_c_moves(int on) { return atomic_exchange(&g_c_moves, on != 0); }

static int cl_dense(const fwd_ctx *c, dt_tensor x) {
    const dt_dtype d = dt_dtype_of(x);
    return atomic_load(&g_c_moves) && c->channels_last && dt_device_of(x).type == DT_CPU &&
           (d == DT_F32 || d == DT_BF16) && dt_ndim(x) == 4 &&
           dt_is_channels_last(x);
}

typedef struct move_job {
    const char *a, *b;        /* inputs (b: the concatenation's second) */
    char *y;
    int64_t ea, eb;           /* bytes per pixel of a and b */
    int64_t H, W;             /* the upsampling's input rows and columns */
} move_job;

typedef struct add_job {
    const void *a;
    void *y;                  /* y += a */
} add_job;

GN_CLONES static void add_f32_range(void *ctx, int64_t i0, int64_t i1) {
    const add_job *j = ctx;
    const float *a = j->a;
    float *y = j->y;
    for (int64_t i = i0; i < i1; i++) y[i] += a[i];
}

GN_CLONES static void add_bf16_range(void *ctx, int64_t i0, int64_t i1) {
    const add_job *j = ctx;
    const uint16_t *a = j->a;
    uint16_t *y = j->y;
    for (int64_t i = i0; i < i1; i++) y[i] = drdc_f32_to_bf16(drdc_bf16_to_f32(a[i]) + drdc_bf16_to_f32(y[i]));
}

static void cat_range(void *ctx, int64_t p0, int64_t p1) {
    const move_job *j = ctx;
    for (int64_t p = p0; p < p1; p++) {
        memcpy(j->y + p * (j->ea + j->eb), j->a + p * j->ea, (size_t)j->ea);
        memcpy(j->y + p * (j->ea + j->eb) + j->ea, j->b + p * j->eb, (size_t)j->eb);
    }
}

/* output rows r0 .. r1 - 1 of the upsampling (row r: image r / 2H, row r % 2H, from input row / 2) */
static void up2_range(void *ctx, int64_t r0, int64_t r1) {
    const move_job *j = ctx;
    const int64_t e = j->ea, W = j->W;
    for (int64_t r = r0; r < r1; r++) {
        const char *src = j->a + ((r / (2 * j->H)) * j->H + (r % (2 * j->H)) / 2) * W * e;
        char *dst = j->y + r * 2 * W * e;
        for (int64_t x = 0; x < 2 * W; x++) memcpy(dst + x * e, src + (x / 2) * e, (size_t)e);
    }
}

/* The same passes in AVX-512 (where the norm kernel's switch and the CPU allow): whole 64-byte
 * vectors (a pixel's channels are a multiple of 64 bytes: C a multiple of 32), and the bf16 add by
 * vcvtneps2bf16 (round to nearest even; a NaN stays a NaN). GCC's code for the portable versions
 * called memcpy per pixel and narrowed bf16 lane by lane: 0.97 ms of a 12.6 ms bf16 pass. */
#if GN_AVX512
DRDC_TARGET_AVX512 static inline void copy64(char *dst, const char *src, int64_t bytes) {
    for (int64_t k = 0; k < bytes; k += 64) _mm512_storeu_si512(dst + k, _mm512_loadu_si512(src + k));
}

GN_TARGET_BF16 static void add_bf16_avx512(void *ctx, int64_t i0, int64_t i1) {
    const add_job *j = ctx;
    const uint16_t *a = j->a;
    uint16_t *y = j->y;
    int64_t i = i0;
    for (; i + 16 <= i1; i += 16)
        GN_STORE16_BF16(y + i, _mm512_add_ps(GN_LOAD16_BF16(a + i), GN_LOAD16_BF16(y + i)));
    for (; i < i1; i++) y[i] = drdc_f32_to_bf16(drdc_bf16_to_f32(a[i]) + drdc_bf16_to_f32(y[i]));
}

DRDC_TARGET_AVX512 static void cat_avx512(void *ctx, int64_t p0, int64_t p1) {
    const move_job *j = ctx;
    for (int64_t p = p0; p < p1; p++) {
        copy64(j->y + p * (j->ea + j->eb), j->a + p * j->ea, j->ea);
        copy64(j->y + p * (j->ea + j->eb) + j->ea, j->b + p * j->eb, j->eb);
    }
}

/* as up2_range; each pair of output rows: the first built pixel by pixel, the second copied from it */
DRDC_TARGET_AVX512 static void up2_avx512(void *ctx, int64_t q0, int64_t q1) {
    const move_job *j = ctx;
    const int64_t e = j->ea, W = j->W;
    for (int64_t q = q0; q < q1; q++) {   /* q: image q / H, input row q % H */
        const char *src = j->a + q * W * e;
        char *dst = j->y + 2 * q * 2 * W * e;
        for (int64_t x = 0; x < W; x++) {
            copy64(dst + 2 * x * e, src + x * e, e);
            copy64(dst + (2 * x + 1) * e, src + x * e, e);
        }
        copy64(dst + 2 * W * e, dst, 2 * W * e);
    }
}
#endif

/* Whether the AVX-512 passes run (bf16 = 1: the add of bf16, which needs AVX-512 BW and BF16 too). */
static int moves_avx512(int bf16) { return GN_AVX512 && atomic_load(&g_gn_avx512) && drdc_cpu_avx512(bf16); }

/* x + h, the blocks' residual connections. h is the block's own output (a new convolution result,
 * no other reader): the kernel writes the sum into it and *out is h. */
static drdc_status residual(dt_tensor *out, const fwd_ctx *c, dt_tensor x, dt_tensor h) {
    int64_t sx[4], sh[4];
    if (!cl_dense(c, x) || !cl_dense(c, h) || dt_dtype_of(x) != dt_dtype_of(h) || dt_shape(sx, 4, x) ||
        dt_shape(sh, 4, h) || memcmp(sx, sh, sizeof sx) != 0)
        return dt_add(out, x, h);
    void *a = NULL, *y = NULL;
    drdc_status st = DRDC_OK;
    TRY(dt_host_data(&a, x));
    TRY(dt_host_data(&y, h));
    add_job j = {a, y};
    dt_range_fn fn = dt_dtype_of(h) == DT_BF16 ? add_bf16_range : add_f32_range;
#if GN_AVX512
    if (dt_dtype_of(h) == DT_BF16 && moves_avx512(1)) fn = add_bf16_avx512;
#endif
    TRY(dt_parallel_for(0, dt_numel(h), 1 << 15, fn, &j));
    *out = h;
done:
    return st;
}

/* cat([a, b], channels): [N,Ca,H,W] and [N,Cb,H,W] -> [N,Ca+Cb,H,W] */
static drdc_status cat_channels(dt_tensor *out, const fwd_ctx *c, dt_tensor a, dt_tensor b) {
    int64_t sa[4], sb[4];
    const dt_tensor pair[2] = {a, b};
    if (!cl_dense(c, a) || !cl_dense(c, b) || dt_dtype_of(a) != dt_dtype_of(b) || dt_shape(sa, 4, a) ||
        dt_shape(sb, 4, b) || sa[0] != sb[0] || sa[2] != sb[2] || sa[3] != sb[3])
        return dt_cat(out, pair, 2, 1);
    const int64_t e = dt_dtype_of(a) == DT_BF16 ? 2 : 4;
    dt_tensor y = NULL;
    void *pa = NULL, *pb = NULL, *py = NULL;
    drdc_status st = DRDC_OK;
    TRY(dt_empty(&y, (const int64_t[4]){sa[0], sa[1] + sb[1], sa[2], sa[3]}, 4, dt_dtype_of(a), dt_device_of(a), 1));
    TRY(dt_host_data(&pa, a));
    TRY(dt_host_data(&pb, b));
    TRY(dt_host_data(&py, y));
    move_job j = {.a = pa, .b = pb, .y = py, .ea = sa[1] * e, .eb = sb[1] * e};
    dt_range_fn fn = cat_range;
#if GN_AVX512
    if (moves_avx512(0)) fn = cat_avx512;
#endif
    TRY(dt_parallel_for(0, sa[0] * sa[2] * sa[3], 512, fn, &j));
    *out = y;
    y = NULL;
done:
    dt_free(y);
    return st;
}

/* Nearest x2 upsampling: [N,C,H,W] -> [N,C,2H,2W] (pixel (y, x) from (y / 2, x / 2), as libtorch's) */
static drdc_status upsample2(dt_tensor *out, const fwd_ctx *c, dt_tensor x) {
    int64_t s[4];
    drdc_status st = dt_shape(s, 4, x);
    if (st) return st;
    if (!cl_dense(c, x)) return dt_interpolate(out, x, 2 * s[2], 2 * s[3], DT_INTERP_NEAREST);
    dt_tensor y = NULL;
    void *px = NULL, *py = NULL;
    TRY(dt_empty(&y, (const int64_t[4]){s[0], s[1], 2 * s[2], 2 * s[3]}, 4, dt_dtype_of(x), dt_device_of(x), 1));
    TRY(dt_host_data(&px, x));
    TRY(dt_host_data(&py, y));
    move_job j = {.a = px, .y = py, .ea = s[1] * (dt_dtype_of(x) == DT_BF16 ? 2 : 4), .H = s[2], .W = s[3]};
#if GN_AVX512
    if (moves_avx512(0)) TRY(dt_parallel_for(0, s[0] * s[2], 4, up2_avx512, &j));   /* over input rows */
    else
#endif
        TRY(dt_parallel_for(0, s[0] * 2 * s[2], 8, up2_range, &j));      /* over output rows */
    *out = y;
    y = NULL;
done:
    dt_free(y);
    return st;
}

/* GroupNorm32 (32 groups, eps 1e-5) followed by SiLU. [N,ch,H,W] -> [N,ch,H,W] */
static drdc_status norm_silu(dt_tensor *out, const fwd_ctx *c, dt_tensor x, dt_tensor xb, const drdc_unet_norm *nm,
                             int inplace) {
    dt_tensor n = NULL;
    drdc_status st = DRDC_OK;
    const int64_t t0 = prof_start();
    if (xb) {   /* x and xb side by side (split_input_ok) */
        TRY(gn_fused(out, x, xb, nm, NULL, 1, 0));
    } else if (gn_fusable(c, x)) {
        TRY(gn_fused(out, x, NULL, nm, NULL, 1, inplace));
    } else {
        TRY(dt_group_norm(&n, x, GN_GROUPS, nm->w, nm->b, GN_EPS));      /* [N,ch,H,W] */
        TRY(dt_silu(out, n));                                            /* [N,ch,H,W] */
    }
    prof_end(DRDC_UNET_PROF_NORM, t0);
done:
    dt_free(n);
    return st;
}

/* cv on x (bf16, channels-last, on the CPU, cv's copies current) by amx_conv.h where it takes this
 * shape (drdc_amx_conv_fits); with xb (a 1x1 convolution only), on x and xb side by side along the
 * channels (split_input_ok). *out [N,out,H/stride,W/stride] channels-last bf16, 1 in *done; else 0
 * in *done and nothing made. */
static drdc_status amx_conv(dt_tensor *out, int *done, const drdc_unet_conv *cv, dt_tensor x, dt_tensor xb,
                            int stride) {
    int64_t s[4], sb[4] = {0, 0, 0, 0};
    dt_tensor y = NULL;
    void *xp = NULL, *xbp = NULL, *yp = NULL;
    drdc_status st = DRDC_OK;
    *done = 0;
    TRY(dt_shape(s, 4, x));
    if (xb) TRY(dt_shape(sb, 4, xb));
    if (s[1] + sb[1] != cv->amx.in || !drdc_amx_conv_fits(&cv->amx, stride, s[2], s[3])) return DRDC_OK;
    const int64_t ys[4] = {s[0], cv->amx.out, s[2] / stride, s[3] / stride};
    TRY(dt_empty(&y, ys, 4, DT_BF16, dt_device_of(x), 1));               /* channels-last */
    TRY(dt_host_data(&xp, x));
    TRY(dt_host_data(&yp, y));
    if (xb) {
        TRY(dt_host_data(&xbp, xb));
        TRY(drdc_amx_conv_1x1_split(&cv->amx, xp, s[1], xbp, yp, s[0], s[2], s[3]));
    } else {
        TRY(drdc_amx_conv(&cv->amx, xp, yp, s[0], s[2], s[3], stride));
    }
    *out = y;
    *done = 1;
    return DRDC_OK;
done:
    dt_free(y);
    return st;
}

/* The convolution cv (k x k, padding k/2) on x: on its AMX packing (amx_conv) or inference copies where they are current and
 * match x (no autograd, channels-last, the copies' dtype), else on the params' weights (a Conv1d's
 * [out,in,1] viewed as [out,in,1,1]). */
static drdc_status conv_on(dt_tensor *out, const fwd_ctx *c, const drdc_unet_conv *cv, dt_tensor x, int k,
                           int stride) {
    const int64_t pad = k / 2;
    int64_t s[4] = {0, 0, 1, 1};
    dt_tensor w4 = NULL, x16 = NULL;
    drdc_status st = DRDC_OK;
    if (c->channels_last && cv->run_w && dt_is_channels_last(x) && copy_current(cv->w, cv->b, cv->w_ver, cv->b_ver)) {
        if (cv->amx.w && dt_dtype_of(x) == DT_BF16 && dt_device_of(x).type == DT_CPU) {
            int done_amx = 0;
            TRY(amx_conv(out, &done_amx, cv, x, NULL, stride));
            if (done_amx) return DRDC_OK;
        }
        if (dt_dtype_of(x) == dt_dtype_of(cv->run_w))
            return dt_conv2d(out, x, cv->run_w, cv->run_b, stride, stride, pad, pad, 1, 1, 1);
        if (dt_dtype_of(x) == DT_F32 && dt_dtype_of(cv->run_w) == DT_BF16 && dt_cpu_autocast_enabled()) {
            /* a float32 input under bf16 autocast (the input convolution's): autocast would cast x,
             * the weight and the bias to bf16 on every call; the copies are those casts, made once */
            TRY(dt_to_dtype(&x16, x, DT_BF16));                           /* channels-last kept */
            TRY(dt_conv2d(out, x16, cv->run_w, cv->run_b, stride, stride, pad, pad, 1, 1, 1));
            goto done;
        }
    }
    if (dt_ndim(cv->w) == 4) return dt_conv2d(out, x, cv->w, cv->b, stride, stride, pad, pad, 1, 1, 1);
    TRY(dt_shape(s, 3, cv->w));
    TRY(dt_reshape(&w4, cv->w, s, 4));                                    /* [out,in,1,1] */
    TRY(dt_conv2d(out, x, w4, cv->b, stride, stride, pad, pad, 1, 1, 1));
done:
    dt_free(w4);
    dt_free(x16);
    return st;
}

/* A convolution of cin input channels and k x k taps that made out, timed from t0 for the profile
 * (with its FLOPs: 2 x cin x k^2 per output value); nothing when the profile is off (t0 0). */
static void prof_conv(int64_t t0, int64_t cin, int k, dt_tensor out) {
    if (!t0) return;
    prof_end(DRDC_UNET_PROF_CONV, t0);
    atomic_fetch_add_explicit(&g_prof_conv_flops, 2 * cin * k * k * dt_numel(out), memory_order_relaxed);
}

/* conv_on, timed for the profile */
static drdc_status conv(dt_tensor *out, const fwd_ctx *c, const drdc_unet_conv *cv, dt_tensor x, int k, int stride) {
    const int64_t t0 = prof_start();
    const drdc_status st = conv_on(out, c, cv, x, k, stride);
    int64_t cin = 0;
    if (!st && dt_size(&cin, x, 1) == DRDC_OK) prof_conv(t0, cin, k, *out);
    return st;
}

/* act [N,4C] through the Linear (w [width,4C], b), into *out: N x width floats on the host, malloc'd
 * (the caller frees it, also on failure); *bf16: the Linear ran in bf16 (autocast). */
static drdc_status project_to_host(float **out, int *bf16, dt_tensor act, dt_tensor w, dt_tensor b, int64_t N,
                                   int64_t width) {
    dt_tensor e = NULL, e32 = NULL;
    drdc_status st = DRDC_OK;
    *out = NULL;
    TRY(dt_linear(&e, act, w, b));                                        /* [N,width] */
    *bf16 = dt_dtype_of(e) == DT_BF16;
    TRY(dt_to_dtype(&e32, e, DT_F32));
    if (!(*out = malloc(sizeof(float) * (size_t)(N * width)))) {
        st = drdc_fail(DRDC_ERR_NOMEM, "unet: out of memory for %lld ResBlock scales and shifts", (long long)width);
        goto done;
    }
    TRY(dt_copy_to_host(e32, *out, sizeof(float) * (size_t)(N * width)));
done:
    dt_free(e);
    dt_free(e32);
    return st;
}

/* rb's scale and shift for the fused norm: the pass's projection (fwd_ctx), or rb's own emb_layers
 * run now, into *own (the caller frees it). */
static drdc_status block_scale_shift(gn_scale_shift *ss, float **own, const fwd_ctx *c, const drdc_unet_resblock *rb,
                                     int64_t N) {
    *own = NULL;
    if (c->emb_host && rb->emb_row >= 0) {
        *ss = (gn_scale_shift){c->emb_host + rb->emb_row, c->emb_stride, c->emb_bf16};
        return DRDC_OK;
    }
    const int64_t w = 2 * (int64_t)rb->out_ch;
    int bf16 = 0;
    const drdc_status st = project_to_host(own, &bf16, c->emb_act, rb->emb_w, rb->emb_b, N, w);
    *ss = (gn_scale_shift){*own, w, bf16};
    return st;
}

/* The skip convolution (1x1, AMX) of a ResBlock whose input is x and xb side by side (split_input_ok),
 * timed for the profile as conv. */
static drdc_status skip_conv_split(dt_tensor *out, const drdc_unet_conv *cv, dt_tensor x, dt_tensor xb) {
    const int64_t t0 = prof_start();
    int done = 0;
    drdc_status st = amx_conv(out, &done, cv, x, xb, 1);
    if (!st && !done) st = drdc_fail(DRDC_ERR_STATE, "unet: a skip convolution on a split input needs AMX");
    if (!st) prof_conv(t0, cv->amx.in, 1, *out);
    return st;
}

/* ResBlock with scale-shift norm. x [N,in,H,W] -> [N,out,H,W]; with xb, the input is x and xb side by
 * side along the channels (the decoder's concatenation, never written: split_input_ok). x_spent: the
 * caller no longer reads x after the call, so that its storage may take the first norm's output (with
 * a skip convolution, run first) and the activations stay in cache: the fused norm writes its output
 * in place where it can (the second norm's input is the block's own), a U-Net call 6 % faster in bf16. */
static drdc_status resblock_forward(dt_tensor *out, const fwd_ctx *c, const drdc_unet_resblock *rb, dt_tensor x,
                                   dt_tensor xb, int x_spent) {
    drdc_status st = dt_scope_begin();
    if (st) return st;
    dt_tensor result = NULL, h = NULL, h1 = NULL, e = NULL, scale = NULL, shift = NULL, scale1 = NULL;
    dt_tensor hn = NULL, hs = NULL, hss = NULL, ha = NULL, hd = NULL, h2 = NULL, skip = NULL;
    dt_tensor sc_flat = NULL, sh_flat = NULL;
    int64_t N = 0;
    const int64_t oc = rb->out_ch;
    TRY(dt_size(&N, x, 0));
    if (xb) TRY(skip_conv_split(&skip, &rb->skip, x, xb));              /* [N,out,H,W] 1x1 */
    else if (rb->skip.w) TRY(conv(&skip, c, &rb->skip, x, 1, 1));        /* [N,out,H,W] 1x1 */
    TRY(norm_silu(&h, c, x, xb, &rb->in_norm, x_spent && rb->skip.w));  /* [N,in,H,W] */
    TRY(conv(&h1, c, &rb->in_conv, h, 3, 1));                            /* [N,out,H,W] */
    const int64_t col[4] = {N, oc, 1, 1};
    const int64_t t_norm = prof_start();
    if (gn_fusable(c, h1)) {
        gn_scale_shift ss;
        float *own = NULL;
        st = block_scale_shift(&ss, &own, c, rb, N);
        if (!st) st = gn_fused(&ha, h1, NULL, &rb->out_norm, &ss, 1, 1); /* [N,out,H,W] */
        free(own);
        if (st) goto done;
    } else {
        TRY(dt_linear(&e, c->emb_act, rb->emb_w, rb->emb_b));             /* [N,2out] */
        TRY(dt_narrow(&sc_flat, e, 1, 0, oc));                            /* [N,out] scale */
        TRY(dt_narrow(&sh_flat, e, 1, oc, oc));                           /* [N,out] shift */
        TRY(dt_add_scalar(&scale1, sc_flat, 1.0));                        /* [N,out] 1 + scale */
        if (c->channels_last) {
            /* inference: GN's affine and the scale-shift folded into one pass over the activations,
             * (n w + b)(1 + scale) + shift = n [w (1 + scale)] + [b (1 + scale) + shift] */
            dt_tensor wa = NULL, ba = NULL;
            TRY(dt_mul(&wa, scale1, rb->out_norm.w));                     /* [N,out] */
            TRY(dt_addcmul(&ba, sh_flat, scale1, rb->out_norm.b));        /* [N,out] */
            TRY(dt_reshape(&scale, wa, col, 4));                          /* [N,out,1,1] */
            TRY(dt_reshape(&shift, ba, col, 4));                          /* [N,out,1,1] */
            TRY(dt_group_norm(&hn, h1, GN_GROUPS, NULL, NULL, GN_EPS));   /* [N,out,H,W] normalised, f32 */
            TRY(dt_addcmul(&hss, shift, hn, scale));                      /* [N,out,H,W] */
        } else {
            TRY(dt_reshape(&scale, scale1, col, 4));                      /* [N,out,1,1] */
            TRY(dt_reshape(&shift, sh_flat, col, 4));                     /* [N,out,1,1] */
            TRY(dt_group_norm(&hn, h1, GN_GROUPS, rb->out_norm.w, rb->out_norm.b, GN_EPS)); /* [N,out,H,W] */
            TRY(dt_mul(&hs, hn, scale));                                  /* [N,out,H,W] */
            TRY(dt_add(&hss, hs, shift));                                 /* [N,out,H,W] */
        }
        TRY(dt_silu(&ha, hss));                                           /* [N,out,H,W] */
    }
    prof_end(DRDC_UNET_PROF_NORM, t_norm);
    if (c->training && c->u->cfg.dropout > 0.0) {
        TRY(dt_dropout(&hd, ha, c->u->cfg.dropout, 1, c->g));             /* [N,out,H,W] */
    }
    TRY(conv(&h2, c, &rb->out_conv, hd ? hd : ha, 3, 1));                /* [N,out,H,W] */
    PROF(DRDC_UNET_PROF_MOVES, TRY(residual(&result, c, skip ? skip : x, h2))); /* [N,out,H,W] */
done:
    return dt_scope_finish(st, result, out);
}

/* The heads' attention of an AttentionBlock on the CPU without autograd: attention.h's kernel on
 * qkv [N,3C,H,W] channels-last, where pixel p's channels are a row of 3C floats and head h's q, k and
 * v are its channels h*3ch + [0,ch), + [ch,2ch), + [2ch,3ch) (the legacy head-major layout);
 * QKVAttentionLegacy's scale 1/sqrt(sqrt(ch)) on q and on k is 1/sqrt(ch) on the scores. out
 * [N,C,H,W] channels-last in qkv's dtype (float32, or bf16 under autocast), head h in channels
 * h*ch + [0,ch). 0 in *done where it does not apply (the caller takes libtorch's ops). */
static drdc_status fused_heads(dt_tensor *out, int *done, const fwd_ctx *c, dt_tensor qkv, int64_t heads) {
    *done = 0;
    const dt_dtype dt = dt_dtype_of(qkv);
    if (!c->channels_last || !drdc_attention_fused_active() || dt_device_of(qkv).type != DT_CPU ||
        !(dt == DT_F32 || dt == DT_BF16) || !dt_is_channels_last(qkv))
        return DRDC_OK;
    int64_t s[4];
    drdc_status st = dt_scope_begin();
    if (st) return st;
    dt_tensor res = NULL;
    TRY(dt_shape(s, 4, qkv));
    const int64_t N = s[0], C = s[1] / 3, L = s[2] * s[3], ch = C / heads;
    if (dt == DT_BF16) {   /* bf16: on AMX tiles where they take it, else the float32 kernel; no casts */
        void *qp = NULL, *op = NULL;
        TRY(dt_empty(&res, (const int64_t[4]){N, C, s[2], s[3]}, 4, DT_BF16, dt_device_of(qkv), 1)); /* channels-last */
        TRY(dt_host_data(&qp, qkv));
        TRY(dt_host_data(&op, res));
        const uint16_t *base = qp;
        const drdc_attn_strides in = {L * 3 * C, 3 * C, 3 * ch}, os = {L * C, C, ch};
        const drdc_attention16 a = {.q = base, .k = base + ch, .v = base + 2 * ch, .o = op, .qs = in, .ks = in,
                                    .vs = in, .os = os, .B = N, .H = heads, .L = L, .S = L, .D = ch,
                                    .scale = (float)(1.0 / sqrt((double)ch))};
        TRY(drdc_attention16_fits(L, L, ch) ? drdc_attention16_run(&a) : drdc_attention_run_bf16(&a));
        *done = 1;
        goto done;
    }
    TRY(dt_empty(&res, (const int64_t[4]){N, C, s[2], s[3]}, 4, DT_F32, dt_device_of(qkv), 1)); /* channels-last */
    void *qp = NULL, *op = NULL;
    TRY(dt_host_data(&qp, qkv));
    TRY(dt_host_data(&op, res));
    const float *base = qp;
    const drdc_attn_strides in = {L * 3 * C, 3 * C, 3 * ch}, os = {L * C, C, ch};
    const drdc_attention a = {.q = base, .k = base + ch, .v = base + 2 * ch, .o = op, .qs = in, .ks = in,
                              .vs = in, .os = os, .mask = NULL, .B = N, .H = heads, .L = L, .S = L, .D = ch,
                              .scale = (float)(1.0 / sqrt((double)ch))};
    TRY(drdc_attention_run(&a));
    *done = 1;
done:
    return dt_scope_finish(st, res, out);
}

/* AttentionBlock (QKVAttentionLegacy). x [N,C,H,W] -> [N,C,H,W] */
static drdc_status attn_forward(dt_tensor *out, const fwd_ctx *c, const drdc_unet_attn *a, dt_tensor x) {
    drdc_status st = dt_scope_begin();
    if (st) return st;
    dt_tensor result = NULL, hn = NULL, qkv = NULL, qkv3 = NULL, q = NULL, k = NULL, v = NULL;
    dt_tensor qs = NULL, ks = NULL, qt = NULL, w = NULL, p = NULL, pt = NULL, att = NULL, att4 = NULL;
    dt_tensor h = NULL;
    int64_t shape[4];
    int fused = 0;
    TRY(dt_shape(shape, 4, x));
    const int64_t N = shape[0], C = shape[1], L = shape[2] * shape[3], heads = a->heads, ch = C / heads;
    const double scale = 1.0 / sqrt(sqrt((double)ch));
    const int64_t t_norm = prof_start();
    if (gn_fusable(c, x)) TRY(gn_fused(&hn, x, NULL, &a->norm, NULL, 0, 0)); /* [N,C,H,W] */
    else TRY(dt_group_norm(&hn, x, GN_GROUPS, a->norm.w, a->norm.b, GN_EPS)); /* [N,C,H,W] */
    prof_end(DRDC_UNET_PROF_NORM, t_norm);
    TRY(conv(&qkv, c, &a->qkv, hn, 1, 1));                                /* [N,3C,H,W] */
    const int64_t t_heads = prof_start();
    TRY(fused_heads(&att4, &fused, c, qkv, heads));                       /* [N,C,H,W], or not applicable */
    if (!fused) {
        TRY(dt_reshape(&qkv3, qkv, (const int64_t[3]){N * heads, 3 * ch, L}, 3)); /* [B,3ch,L], B = N*heads */
        TRY(dt_narrow(&q, qkv3, 1, 0, ch));                               /* [B,ch,L] */
        TRY(dt_narrow(&k, qkv3, 1, ch, ch));                              /* [B,ch,L] */
        TRY(dt_narrow(&v, qkv3, 1, 2 * ch, ch));                          /* [B,ch,L] */
        TRY(dt_mul_scalar(&qs, q, scale));                                /* [B,ch,L] */
        TRY(dt_mul_scalar(&ks, k, scale));                                /* [B,ch,L] */
        TRY(dt_transpose(&qt, qs, 1, 2));                                 /* [B,L(t),ch] */
        TRY(dt_bmm(&w, qt, ks));                                          /* [B,L(t),L(s)] */
        TRY(dt_softmax(&p, w, -1));                                       /* [B,t,s] */
        TRY(dt_transpose(&pt, p, 1, 2));                                  /* [B,s,t] */
        TRY(dt_bmm(&att, v, pt));                                         /* [B,ch,L(t)] */
        TRY(dt_reshape(&att4, att, shape, 4));                            /* [N,C,H,W] */
        if (dt_is_channels_last(x)) TRY(dt_to_memory_format(&att4, att4, 1)); /* as x (small: attention resolutions) */
    }
    prof_end(DRDC_UNET_PROF_ATTENTION, t_heads);
    TRY(conv(&h, c, &a->proj, att4, 1, 1));                               /* [N,C,H,W] */
    PROF(DRDC_UNET_PROF_MOVES, TRY(residual(&result, c, x, h)));         /* [N,C,H,W] */
done:
    return dt_scope_finish(st, result, out);
}

/* One TimestepEmbedSequential: [ResBlock] [AttentionBlock] [conv]; xb and x_spent as resblock_forward. */
static drdc_status block_forward(dt_tensor *out, const fwd_ctx *c, const drdc_unet_block *b, dt_tensor x,
                                 dt_tensor xb, int x_spent) {
    drdc_status st = dt_scope_begin();
    if (st) return st;
    dt_tensor result = NULL, h = x, t = NULL, up = NULL;
    if (!b->has_res && !b->has_attn && b->conv_kind == DRDC_UNET_CONV_NONE) {
        st = drdc_fail(DRDC_ERR_STATE, "unet forward: an empty block (the model was not built)");
        goto done;
    }
    if (b->has_res) {
        TRY(resblock_forward(&t, c, &b->res, h, xb, x_spent));            /* [N,out,H,W] */
        h = t;
    }
    if (b->has_attn) {
        TRY(attn_forward(&t, c, &b->attn, h));                            /* [N,out,H,W] */
        h = t;
    }
    switch (b->conv_kind) {
    case DRDC_UNET_CONV_NONE:
        result = h;   /* a handle of this scope: the ResBlock's or the attention's output */
        break;
    case DRDC_UNET_CONV_INPUT:
        TRY(conv(&result, c, &b->conv, h, 3, 1));                         /* [N,ch0,H,W] */
        break;
    case DRDC_UNET_CONV_DOWN:
        TRY(conv(&result, c, &b->conv, h, 3, 2));                         /* [N,ch,H/2,W/2] */
        break;
    case DRDC_UNET_CONV_UP:
        PROF(DRDC_UNET_PROF_MOVES, TRY(upsample2(&up, c, h)));            /* [N,ch,2H,2W] */
        TRY(conv(&result, c, &b->conv, up, 3, 1));                        /* [N,ch,2H,2W] */
        break;
    }
done:
    return dt_scope_finish(st, result, out);
}

/* The conditioned U-Net's input in CPU inference: x_t and cond (float32 [N,3,H,W]) side by side as
 * one channels-last [N,6,H,W] in a single pass (libtorch's concatenation and its copy to
 * channels-last were two passes and 91 us of a 128 px pass); *done 0 (nothing made) where it does
 * not apply. The same values as dt_cat then dt_to_memory_format, moved, not computed. */
static drdc_status pack_input(dt_tensor *out, int *done, const fwd_ctx *c, dt_tensor x_t, dt_tensor cond) {
    *done = 0;
    if (!c->channels_last || !atomic_load(&g_c_moves) || dt_device_of(x_t).type != DT_CPU ||
        dt_device_of(cond).type != DT_CPU || dt_dtype_of(x_t) != DT_F32 || dt_dtype_of(cond) != DT_F32)
        return DRDC_OK;
    int64_t s[4];
    dt_tensor xc = NULL, cc = NULL, y = NULL;
    void *xp = NULL, *cp = NULL, *yp = NULL;
    drdc_status st = DRDC_OK;
    TRY(dt_shape(s, 4, x_t));
    TRY(dt_contiguous(&xc, x_t));
    TRY(dt_contiguous(&cc, cond));
    TRY(dt_empty(&y, (const int64_t[4]){s[0], 6, s[2], s[3]}, 4, DT_F32, dt_device_of(x_t), 1)); /* channels-last */
    TRY(dt_host_data(&xp, xc));
    TRY(dt_host_data(&cp, cc));
    TRY(dt_host_data(&yp, y));
    const int64_t P = s[2] * s[3];
    for (int64_t n = 0; n < s[0]; n++) {
        const float *a = (const float *)xp + n * 3 * P, *b = (const float *)cp + n * 3 * P;
        float *o = (float *)yp + n * 6 * P;
        for (int64_t p = 0; p < P; p++, o += 6)
            o[0] = a[p], o[1] = a[P + p], o[2] = a[2 * P + p], o[3] = b[p], o[4] = b[P + p], o[5] = b[2 * P + p];
    }
    *out = y;
    y = NULL;
    *done = 1;
done:
    dt_free(xc);
    dt_free(cc);
    dt_free(y);
    return st;
}

/* Whether decoder block b can take its input as h and skip side by side instead of their
 * concatenation: CPU inference in bf16 with the C moves on, both channels-last with the same
 * pixels, the first part a multiple of 32 channels, the norm's bf16 pair kernels and the block's
 * skip convolution on AMX for this shape (its copies current). Both then read the two parts where
 * they lie (gn_fused, drdc_amx_conv_1x1_split): the same values as with the concatenation, which
 * is never written. */
static int split_input_ok(const fwd_ctx *c, const drdc_unet_block *b, dt_tensor h, dt_tensor skip) {
    int64_t sh[4], ss[4];
    if (!b->has_res || !b->res.skip.amx.w || !cl_dense(c, h) || !cl_dense(c, skip) || dt_dtype_of(h) != DT_BF16 ||
        dt_dtype_of(skip) != DT_BF16 || dt_shape(sh, 4, h) || dt_shape(ss, 4, skip))
        return 0;
    const drdc_unet_conv *cv = &b->res.skip;
    return sh[0] == ss[0] && sh[2] == ss[2] && sh[3] == ss[3] && sh[1] % 32 == 0 && gn_pairs(1, sh[1] + ss[1]) &&
           sh[1] + ss[1] <= GN_MAX_CHANNELS && cv->amx.in == sh[1] + ss[1] && cv->amx.k == 1 &&
           copy_current(cv->w, cv->b, cv->w_ver, cv->b_ver) && drdc_amx_conv_fits(&cv->amx, 1, sh[2], sh[3]);
}

static drdc_status check_image(dt_tensor x, const char *what, int64_t N, const drdc_unet *u, int64_t *H, int64_t *W) {
    int64_t s[4] = {0};
    if (!x) return drdc_fail(DRDC_ERR_INPUT, "unet forward: %s is NULL", what);
    if (dt_ndim(x) != 4 || dt_shape(s, 4, x) != DRDC_OK || s[1] != 3 || (N >= 0 && s[0] != N) ||
        (*H >= 0 && (s[2] != *H || s[3] != *W)))
        return drdc_fail(DRDC_ERR_INPUT, "unet forward: %s must be [N,3,H,W] matching x_t (got %d dims: "
                         "[%lld,%lld,%lld,%lld])", what, dt_ndim(x), (long long)s[0], (long long)s[1],
                         (long long)s[2], (long long)s[3]);
    if (s[2] < 1 || s[3] < 1 || s[2] % u->min_divisor != 0 || s[3] % u->min_divisor != 0)
        return drdc_fail(DRDC_ERR_INPUT, "unet forward: %s is %lldx%lld, not a multiple of %d (2^(levels-1)) in "
                         "both dims", what, (long long)s[2], (long long)s[3], u->min_divisor);
    if (dt_dtype_of(x) != DT_F32)
        return drdc_fail(DRDC_ERR_INPUT, "unet forward: %s must be f32 (got %s)", what, dt_dtype_name(dt_dtype_of(x)));
    *H = s[2];
    *W = s[3];
    return DRDC_OK;
}

/* x_t [N,3,H,W], cond the same (when the model is conditioned on it) and t [N]. */
static drdc_status check_inputs(const drdc_unet *u, dt_tensor x_t, dt_tensor t, dt_tensor cond) {
    int64_t H = -1, W = -1, N = -1;
    drdc_status st = DRDC_OK;
    TRY(check_image(x_t, "x_t", -1, u, &H, &W));
    TRY(dt_size(&N, x_t, 0));
    if (u->cfg.model_conditioning) TRY(check_image(cond, "cond", N, u, &H, &W));
    if (!t || dt_ndim(t) != 1 || dt_numel(t) != N)
        return drdc_fail(DRDC_ERR_INPUT, "unet forward: t must be [N] = [%lld] (got %d dims, %lld values)",
                         (long long)N, t ? dt_ndim(t) : -1, t ? (long long)dt_numel(t) : -1LL);
done:
    return st;
}

static drdc_status check_emb_row(drdc_unet_resblock *rb, void *ctx) {
    if (!copy_current(rb->emb_w, rb->emb_b, rb->emb_w_ver, rb->emb_b_ver)) *(int *)ctx = 0;
    return DRDC_OK;
}

/* Whether the stacked embedding projections (drdc_unet_prepare) are current: made, and no block's
 * emb_layers written since. */
static int emb_stack_current(const drdc_unet *u) {
    int current = u->emb_all_w != NULL;
    const part_fns f = {NULL, NULL, check_emb_row, &current};
    if (current) (void)each_part((drdc_unet *)u, &f);   /* the walk only reads u */
    return current;
}

drdc_status drdc_unet_forward(dt_tensor *eps, const drdc_unet *unet, dt_tensor x_t, dt_tensor t, dt_tensor cond,
                              int training, dt_generator g) {
    if (!eps) return drdc_fail(DRDC_ERR_INPUT, "unet forward: eps out is NULL");
    *eps = NULL;
    if (!unet || !unet->in) return drdc_fail(DRDC_ERR_INPUT, "unet forward: the U-Net is NULL or not built");
    drdc_status st = check_inputs(unet, x_t, t, cond);
    if (st) return st;
    const int conditioned = unet->cfg.model_conditioning;
    st = dt_scope_begin();
    if (st) return st;
    const int64_t t_all = prof_start();
    const int nb = unet->n_in;
    dt_tensor result = NULL, x = NULL, temb = NULL, e0 = NULL, e1 = NULL, emb = NULL, h = NULL, hn = NULL;
    dt_tensor m0 = NULL, m1 = NULL, raw = NULL;
    float *emb_host = NULL;
    dt_tensor *hs = calloc((size_t)nb, sizeof *hs);
    /* channels-last without autograd: nothing runs backward */
    fwd_ctx c = {.u = unet, .training = training, .g = g, .channels_last = !dt_is_grad_enabled()};
    if (!hs) {
        st = drdc_fail(DRDC_ERR_NOMEM, "unet forward: out of memory");
        goto done;
    }
    int packed = 0;
    if (conditioned) TRY(pack_input(&x, &packed, &c, x_t, cond));        /* [N,6,H,W] channels-last, in C */
    if (!packed) {
        if (conditioned) {
            const dt_tensor in2[2] = {x_t, cond};
            TRY(dt_cat(&x, in2, 2, 1));                                   /* [N,6,H,W] */
        } else {
            x = x_t;                                                      /* [N,3,H,W] (borrowed) */
        }
        if (c.channels_last) TRY(dt_to_memory_format(&x, x, 1));          /* NHWC from here on */
    }
    if (unet->temb_freqs) TRY(timestep_embed(&temb, t, unet->model_channels, unet->dev, unet->temb_freqs)); /* [N,C] */
    else TRY(drdc_unet_timestep_embedding(&temb, t, unet->model_channels, unet->dev));
    TRY(dt_linear(&e0, temb, unet->temb0_w, unet->temb0_b));              /* [N,4C] */
    TRY(dt_silu(&e1, e0));                                                /* [N,4C] */
    TRY(dt_linear(&emb, e1, unet->temb2_w, unet->temb2_b));               /* [N,4C] emb */
    TRY(dt_silu(&c.emb_act, emb));                                        /* [N,4C] */
    if (c.channels_last && dt_device_of(x_t).type == DT_CPU && emb_stack_current(unet)) {
        int64_t rows = 0, N = 0;
        TRY(dt_size(&rows, unet->emb_all_b, 0));
        TRY(dt_size(&N, x_t, 0));
        /* every block's scale and shift at once */
        TRY(project_to_host(&emb_host, &c.emb_bf16, c.emb_act, unet->emb_all_w, unet->emb_all_b, N, rows));
        c.emb_host = emb_host, c.emb_stride = rows;
    }
    h = x;
    for (int i = 0; i < nb; i++) {
        TRY(block_forward(&hs[i], &c, &unet->in[i], h, NULL, 0));         /* [N,ch_i,H_i,W_i] */
        h = hs[i];
    }
    TRY(resblock_forward(&m0, &c, &unet->mid_res0, h, NULL, 0));          /* [N,chL,H/2^(L-1),..] */
    TRY(attn_forward(&m1, &c, &unet->mid_attn, m0));
    dt_free(m0);
    TRY(resblock_forward(&h, &c, &unet->mid_res2, m1, NULL, 1));
    dt_free(m1);
    for (int i = 0; i < unet->n_out; i++) {
        dt_tensor cat = NULL, next = NULL, *skip_in = &hs[nb - 1 - i];
        const int split = split_input_ok(&c, &unet->out[i], h, *skip_in);
        if (!split) {   /* the concatenation, its parts freed before the block runs */
            PROF(DRDC_UNET_PROF_MOVES, TRY(cat_channels(&cat, &c, h, *skip_in))); /* [N,ch+ich,.,.] */
            dt_free(h);
            dt_free(*skip_in);
            h = *skip_in = NULL;
        }
        st = split ? block_forward(&next, &c, &unet->out[i], h, *skip_in, 0)
                   : block_forward(&next, &c, &unet->out[i], cat, NULL, 1);   /* [N,out_ch,.,.] */
        dt_free(cat);
        dt_free(h);
        dt_free(*skip_in);
        *skip_in = NULL;
        h = next;   /* NULL when the block failed */
        if (st) goto done;
    }
    TRY(norm_silu(&hn, &c, h, NULL, &unet->out_norm, 1));                /* [N,ch0,H,W], in place */
    TRY(conv(&raw, &c, &unet->out_conv, hn, 3, 1));                      /* [N,3,H,W] eps */
    if (dt_dtype_of(raw) != DT_F32) TRY(dt_to_dtype(&raw, raw, DT_F32));  /* bf16 under autocast: eps is always f32 */
    if (c.channels_last)
        TRY(dt_to_memory_format(&result, raw, 0));                       /* plain NCHW for the caller */
    else
        result = raw;
    if (t_all) {
        prof_end(DRDC_UNET_PROF_ALL, t_all);
        atomic_fetch_add_explicit(&g_prof_passes, 1, memory_order_relaxed);
    }
done:
    free(hs);
    free(emb_host);
    st = dt_scope_finish(st, result, eps);   /* frees every temporary (and result on failure) */
    return st ? drdc_error_context(st, "unet forward") : DRDC_OK;
}

#define DRDC_UNET_MAX_PARTS 64   /* threads of one split call, at most */

/* The runs of one inference call split into parts that run at the same time, each on its own
 * thread with its share of the intra-op threads (dt_run_concurrently). */
typedef struct split_job {
    const drdc_unet *u;
    dt_tensor x_t, t, cond;   /* the whole batch */
    int64_t N;
    int parts;
    dt_tensor *eps;           /* [parts]: each part's output */
} split_job;

static drdc_status split_part(void *ctx, int i) {
    split_job *j = ctx;
    const int64_t b = j->N * i / j->parts, n = j->N * (i + 1) / j->parts - b;
    dt_tensor x = NULL, t = NULL, c = NULL;
    drdc_status st = DRDC_OK;
    TRY(dt_narrow(&x, j->x_t, 0, b, n));
    TRY(dt_narrow(&t, j->t, 0, b, n));
    if (j->cond) TRY(dt_narrow(&c, j->cond, 0, b, n));
    TRY(drdc_unet_forward(&j->eps[i], j->u, x, t, c, 0, NULL));
done:
    dt_free(x);
    dt_free(t);
    dt_free(c);
    return st ? drdc_error_context(st, "unet: runs %lld..%lld of %lld", (long long)b, (long long)(b + n - 1),
                                   (long long)j->N)
              : DRDC_OK;
}

/* Inference, the sampler's eps function: no autograd, OpenBLAS on one thread, and on the CPU the
 * runs split across the intra-op threads. Why each:
 * - OpenBLAS: the U-Net's only BLAS work is the attention products (small: 16x16 tokens at the
 *   shared config); OpenBLAS's second thread wakes for each and then spins on sched_yield, taking
 *   CPU from the convolutions' OpenMP threads (perf on 2 cores: a quarter of a U-Net call's
 *   samples in sched_yield and the scheduler). The base transformer keeps OpenBLAS's full count.
 * - The split: at the refiner's sizes (32-64 channels, 16-128 px) each layer is too small to keep
 *   two OpenMP threads busy: one thread per run is faster than two threads on every run (the
 *   waiting thread sleeps and is woken ~150 times a call, and bf16 convolutions of a 16 px map are
 *   4x slower on two threads than on one). So a batch of N runs is cut into min(N, threads) parts,
 *   each on its own thread with threads / parts OpenMP threads. Each run's eps does not depend on
 *   the split (the network treats every run on its own; test_unet compares with the unsplit call).
 * drdc bench --stages unet on the shared config (2 runs of 128 px, 2 cores): one call 52.1-53.6 ms
 * split against 62.2-62.8 (fp32), 33.4-34.1 against 46.2-48.6 (bf16); 39.8-41.0 and 19.0-19.2 once
 * dt_run_concurrently kept its threads. */
drdc_status drdc_unet_eps(dt_tensor *eps, void *ctx, dt_tensor x_t, dt_tensor t, dt_tensor cond) {
    const drdc_unet *u = ctx;
    int prev = dt_set_grad_enabled(0);
    int blas = dt_set_blas_threads(1);
    drdc_status st = DRDC_OK;
    const int threads = dt_get_num_threads();
    int64_t n = 0;
    if (u && x_t && dt_ndim(x_t) == 4) dt_size(&n, x_t, 0);
    const int parts = n < threads ? (int)n : threads;
    if (!eps || !u || parts < 2 || dt_device_of(x_t).type != DT_CPU) {
        st = drdc_unet_forward(eps, u, x_t, t, cond, 0, NULL);
    } else {
        *eps = NULL;
        dt_tensor outs[DRDC_UNET_MAX_PARTS] = {NULL};
        const int p = parts < DRDC_UNET_MAX_PARTS ? parts : DRDC_UNET_MAX_PARTS;
        split_job j = {u, x_t, t, u->cfg.model_conditioning ? cond : NULL, n, p, outs};
        st = check_inputs(u, x_t, t, cond);
        if (!st) st = dt_run_concurrently(p, threads / p, split_part, &j);
        if (!st) st = dt_cat(eps, outs, p, 0);                           /* [N,3,H,W] in run order */
        for (int i = 0; i < p; i++) dt_free(outs[i]);
        if (st) st = drdc_error_context(st, "unet forward");
    }
    if (blas) dt_set_blas_threads(blas);
    dt_set_grad_enabled(prev);
    return st;
}
