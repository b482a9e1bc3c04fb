/* backbone.c: MobileNetV2 and EfficientNet(-Lite) feature extractors over the shim (see
 * backbone.h). The layouts follow ../shared/weights/README.md (MobileNetV2, BatchNorm folded)
 * and lukemelas' EfficientNet-PyTorch 0.7.1 / efficientnet_lite_pytorch 0.1.0 (round_filters,
 * round_repeats, Conv2dStaticSamePadding, calculate_output_image_size), transcribed so that
 * their state dicts load by name. */
#include "drdc/stages/backbone.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- architecture tables ----------------------------------------------------------------- */

typedef struct mb_stage { int repeats, kernel, stride, expand, in, out; } mb_stage;

/* EfficientNet-b0 block strings 'rK_kK_sSS_eE_iI_oO_se0.25' (lite: the same without se). */
static const mb_stage EFF_STAGES[7] = {
    {1, 3, 1, 1, 32, 16},  {2, 3, 2, 6, 16, 24},   {2, 5, 2, 6, 24, 40},   {3, 3, 2, 6, 40, 80},
    {3, 5, 1, 6, 80, 112}, {4, 5, 2, 6, 112, 192}, {1, 3, 1, 6, 192, 320},
};

/* MobileNetV2 inverted-residual settings (expand t, channels c, repeats n, first stride s). */
static const mb_stage MNV2_STAGES[7] = {
    {1, 3, 1, 1, 32, 16},   {2, 3, 2, 6, 16, 24},   {3, 3, 2, 6, 24, 32},  {4, 3, 2, 6, 32, 64},
    {3, 3, 1, 6, 64, 96},   {3, 3, 2, 6, 96, 160},  {1, 3, 1, 6, 160, 320},
};

typedef struct eff_coef { const char *name; double width, depth; int native; } eff_coef;

static const eff_coef EFF_COEFS[] = {
    {"efficientnet-b0", 1.0, 1.0, 224},    {"efficientnet-b1", 1.0, 1.1, 240},
    {"efficientnet-b2", 1.1, 1.2, 260},    {"efficientnet-b3", 1.2, 1.4, 300},
    {"efficientnet-b4", 1.4, 1.8, 380},    {"efficientnet-b5", 1.6, 2.2, 456},
    {"efficientnet-b6", 1.8, 2.6, 528},    {"efficientnet-b7", 2.0, 3.1, 600},
    {"efficientnet-lite0", 1.0, 1.0, 224}, {"efficientnet-lite1", 1.0, 1.1, 240},
    {"efficientnet-lite2", 1.1, 1.2, 260}, {"efficientnet-lite3", 1.2, 1.4, 280},
    {"efficientnet-lite4", 1.4, 1.8, 300},
};

static const double IMAGENET_MEAN[3] = {0.485, 0.456, 0.406};
static const double IMAGENET_STD[3] = {0.229, 0.224, 0.225};

/* The EfficientNet(-Lite) coefficients of arch, or NULL when it is not one of them. */
static const eff_coef *find_coef(const char *arch) {
    for (size_t i = 0; i < sizeof EFF_COEFS / sizeof EFF_COEFS[0]; i++)
        if (strcmp(arch, EFF_COEFS[i].name) == 0) return &EFF_COEFS[i];
    return NULL;
}

static int known_arch(const char *arch) { return strcmp(arch, "mobilenet_v2") == 0 || find_coef(arch) != NULL; }

static drdc_status unknown_arch(const char *arch) {
    return drdc_fail(DRDC_ERR_CONFIG,
                     "backbone.arch '%s' is not known (mobilenet_v2, efficientnet-b0..b7, efficientnet-lite0..4)", arch);
}

/* The port's round_filters (depth_divisor 8, min_depth None); skip: lite's fixed stem/head. */
static int round_filters(int filters, double width, int skip) {
    if (skip) return filters;
    double f = filters * width;
    int nf = (int)(f + 4.0) / 8 * 8;
    if (nf < 8) nf = 8;
    if (nf < 0.9 * f) nf += 8;
    return nf;
}

static int round_repeats(int repeats, double depth) { return (int)ceil(depth * repeats); }

/* TF "SAME": out = ceil(in / s), total = max((out - 1) * s + k - in, 0), the odd pixel after. */
static void same_pad(int in, int k, int s, int *before, int *after) {
    int out = (in + s - 1) / s;
    int total = (out - 1) * s + k - in;
    if (total < 0) total = 0;
    *before = total / 2;
    *after = total - total / 2;
}

static void same_pad4(int size, int k, int s, int pad[4]) {
    same_pad(size, k, s, &pad[0], &pad[1]);
    pad[2] = pad[0];
    pad[3] = pad[1];
}

/* Fills everything but the parameters: family, channels, blocks, default feature blocks. */
static drdc_status plan(drdc_backbone *bb, const char *arch) {
    memset(bb, 0, sizeof *bb);
    snprintf(bb->arch, sizeof bb->arch, "%s", arch);
    if (strcmp(arch, "mobilenet_v2") == 0) {
        bb->family = DRDC_BACKBONE_MOBILENET_V2;
        bb->native_size = 224;
        bb->stem_ch = 32;
        bb->head_ch = 1280;
        bb->n_classes = 1001;
        bb->bn_eps = 0.0;   /* BatchNorm folded into the conv biases */
        /* block 0 = features.0, the stem: 3 -> 32, 3x3, stride 2 */
        bb->blocks[0] = (drdc_backbone_block){3, 3, 32, 3, 2, 0, 0, {0, 0, 0, 0}, 2};
        int n = 1, in = 32, total = 2;
        for (int s = 0; s < 7; s++) {
            const mb_stage *g = &MNV2_STAGES[s];
            for (int r = 0; r < g->repeats; r++) {
                int stride = r == 0 ? g->stride : 1;
                total *= stride;
                drdc_backbone_block *b = &bb->blocks[n++];
                *b = (drdc_backbone_block){in, in * g->expand, g->out, g->kernel, stride, 0,
                                           stride == 1 && in == g->out, {0, 0, 0, 0}, total};
                in = g->out;
            }
        }
        bb->n_blocks = n;   /* 18: features.0 .. features.17 */
        static const int def[4] = {1, 3, 6, 13};
        bb->n_feat = 4;
        memcpy(bb->feat_blocks, def, sizeof def);
        return DRDC_OK;
    }
    const eff_coef *c = find_coef(arch);
    if (!c) return unknown_arch(arch);
    int lite = strncmp(arch, "efficientnet-lite", 17) == 0;
    bb->family = lite ? DRDC_BACKBONE_EFFICIENTNET_LITE : DRDC_BACKBONE_EFFICIENTNET;
    bb->native_size = c->native;
    bb->n_classes = 1000;
    bb->bn_eps = 1e-3;
    bb->stem_ch = round_filters(32, c->width, lite);
    bb->head_ch = round_filters(1280, c->width, lite);
    /* the port's static padding: each conv's pad is fixed for the image size it would see at
     * the native resolution, tracked with calculate_output_image_size */
    int size = c->native;
    same_pad4(size, 3, 2, bb->stem_pad);
    size = (size + 1) / 2;
    int n = 0, total = 2, stage_end[7];
    for (int s = 0; s < 7; s++) {
        const mb_stage *g = &EFF_STAGES[s];
        int in = round_filters(g->in, c->width, 0), out = round_filters(g->out, c->width, 0);
        int repeats = round_repeats(g->repeats, c->depth);
        if (lite && (s == 0 || s == 6)) {   /* fix_head_stem: first and last stage not repeated more */
            repeats = g->repeats;
            if (s == 0) in = 32;
        }
        for (int r = 0; r < repeats; r++) {
            if (n >= DRDC_BACKBONE_MAX_BLOCKS) return drdc_fail(DRDC_ERR_STATE, "%s: too many blocks", arch);
            int stride = r == 0 ? g->stride : 1;
            int bin = r == 0 ? in : out;
            drdc_backbone_block *b = &bb->blocks[n++];
            b->in_ch = bin;
            b->expand_ch = bin * g->expand;
            b->out_ch = out;
            b->kernel = g->kernel;
            b->stride = stride;
            b->se_ch = lite ? 0 : (int)(bin * 0.25) > 1 ? (int)(bin * 0.25) : 1;
            /* the port skips only when stride == 1 compares true: the first block of a stage
             * carries stride as a list ([1] != 1), so only the repeats are residual */
            b->residual = r > 0;
            same_pad4(size, g->kernel, stride, b->pad);
            if (r == 0) size = (size + stride - 1) / stride;
            total *= stride;
            b->total_stride = total;
        }
        stage_end[s] = n - 1;
    }
    bb->n_blocks = n;
    /* last block of the stride-2, 4, 8 stages and of the last stride-16 stage */
    bb->n_feat = 4;
    bb->feat_blocks[0] = stage_end[0];
    bb->feat_blocks[1] = stage_end[1];
    bb->feat_blocks[2] = stage_end[2];
    bb->feat_blocks[3] = stage_end[4];
    return DRDC_OK;
}

drdc_status drdc_backbone_native_size(const char *arch, int *size) {
    drdc_backbone tmp;
    drdc_status st = plan(&tmp, arch ? arch : "");
    if (st) return st;
    *size = tmp.native_size;
    return DRDC_OK;
}

drdc_status drdc_backbone_default_blocks(const char *arch, int *blocks, int *n) {
    drdc_backbone tmp;
    drdc_status st = plan(&tmp, arch ? arch : "");
    if (st) return st;
    memcpy(blocks, tmp.feat_blocks, sizeof(int) * (size_t)tmp.n_feat);
    *n = tmp.n_feat;
    return DRDC_OK;
}

/* ---- config rules ------------------------------------------------------------------------ */

drdc_status drdc_backbone_check_config(const drdc_backbone_config *bb) {
    if (!bb) return drdc_fail(DRDC_ERR_INPUT, "backbone config check: NULL config");
    if (!known_arch(bb->arch)) return unknown_arch(bb->arch);
    if (bb->n_blocks > DRDC_MAX_LIST)
        return drdc_fail(DRDC_ERR_CONFIG, "backbone.blocks: %d blocks, at most %d", bb->n_blocks, DRDC_MAX_LIST);
    for (int i = 1; i < bb->n_blocks; i++)
        if (bb->blocks[i] <= bb->blocks[i - 1])
            return drdc_fail(DRDC_ERR_CONFIG, "backbone.blocks must be increasing (block %d after block %d)",
                             bb->blocks[i], bb->blocks[i - 1]);
    return DRDC_OK;
}

/* ---- parameters ------------------------------------------------------------------------- */

/* conv weight [out, in/groups, k, k] and optional bias, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as
 * torch's Conv2d.reset_parameters */
static drdc_status add_conv(drdc_backbone *bb, dt_generator g, const char *name, int in, int out, int k, int groups,
                            int bias) {
    char full[256];
    int64_t shape[4] = {out, in / groups, k, k};
    double bound = 1.0 / sqrt((double)(in / groups) * k * k);
    drdc_status st = DRDC_OK;
    snprintf(full, sizeof full, "%s.weight", name);
    TRY(drdc_params_add_uniform(&bb->params, full, shape, 4, bound, bb->device, g, 0));   /* [out,in/groups,k,k] */
    if (bias) {
        snprintf(full, sizeof full, "%s.bias", name);
        TRY(drdc_params_add_uniform(&bb->params, full, shape, 1, bound, bb->device, g, 0)); /* [out] */
    }
done:
    return st;
}

/* BatchNorm2d: weight 1, bias 0, running_mean 0, running_var 1 */
static drdc_status add_bn(drdc_backbone *bb, const char *name, int ch) {
    static const char *fields[4] = {"weight", "bias", "running_mean", "running_var"};
    static const double values[4] = {1.0, 0.0, 0.0, 1.0};
    char full[256];
    int64_t shape[1] = {ch};
    drdc_status st = DRDC_OK;
    for (int i = 0; i < 4; i++) {
        snprintf(full, sizeof full, "%s.%s", name, fields[i]);
        TRY(drdc_params_add_full(&bb->params, full, shape, 1, values[i], bb->device, 0));   /* [ch] */
    }
done:
    return st;
}

static drdc_status add_linear(drdc_backbone *bb, dt_generator g, const char *name, int in, int out) {
    char full[256];
    int64_t shape[2] = {out, in};
    double bound = 1.0 / sqrt((double)in);
    drdc_status st = DRDC_OK;
    snprintf(full, sizeof full, "%s.weight", name);
    TRY(drdc_params_add_uniform(&bb->params, full, shape, 2, bound, bb->device, g, 0));   /* [out,in] */
    snprintf(full, sizeof full, "%s.bias", name);
    TRY(drdc_params_add_uniform(&bb->params, full, shape, 1, bound, bb->device, g, 0));   /* [out] */
done:
    return st;
}

static drdc_status add_mobilenet_params(drdc_backbone *bb, dt_generator g) {
    char name[128];
    drdc_status st = DRDC_OK;
    TRY(add_conv(bb, g, "features.0.0", 3, 32, 3, 1, 1));   /* [32,3,3,3] */
    for (int i = 1; i < bb->n_blocks; i++) {
        const drdc_backbone_block *b = &bb->blocks[i];
        if (b->expand_ch == b->in_ch) {   /* features.1: depthwise, project */
            snprintf(name, sizeof name, "features.%d.conv.0.0", i);
            TRY(add_conv(bb, g, name, b->in_ch, b->in_ch, b->kernel, b->in_ch, 1));
            snprintf(name, sizeof name, "features.%d.conv.1", i);
            TRY(add_conv(bb, g, name, b->in_ch, b->out_ch, 1, 1, 1));
            continue;
        }
        snprintf(name, sizeof name, "features.%d.conv.0.0", i);
        TRY(add_conv(bb, g, name, b->in_ch, b->expand_ch, 1, 1, 1));
        snprintf(name, sizeof name, "features.%d.conv.1.0", i);
        TRY(add_conv(bb, g, name, b->expand_ch, b->expand_ch, b->kernel, b->expand_ch, 1));
        snprintf(name, sizeof name, "features.%d.conv.2", i);
        TRY(add_conv(bb, g, name, b->expand_ch, b->out_ch, 1, 1, 1));
    }
    snprintf(name, sizeof name, "features.%d.0", bb->n_blocks);   /* features.18.0: 320 -> 1280 */
    TRY(add_conv(bb, g, name, bb->blocks[bb->n_blocks - 1].out_ch, bb->head_ch, 1, 1, 1));
    TRY(add_linear(bb, g, "classifier.1", bb->head_ch, bb->n_classes));
done:
    return st;
}

static drdc_status add_efficientnet_params(drdc_backbone *bb, dt_generator g) {
    char name[128];
    drdc_status st = DRDC_OK;
    TRY(add_conv(bb, g, "_conv_stem", 3, bb->stem_ch, 3, 1, 0));
    TRY(add_bn(bb, "_bn0", bb->stem_ch));
    for (int i = 0; i < bb->n_blocks; i++) {
        const drdc_backbone_block *b = &bb->blocks[i];
        if (b->expand_ch != b->in_ch) {
            snprintf(name, sizeof name, "_blocks.%d._expand_conv", i);
            TRY(add_conv(bb, g, name, b->in_ch, b->expand_ch, 1, 1, 0));
            snprintf(name, sizeof name, "_blocks.%d._bn0", i);
            TRY(add_bn(bb, name, b->expand_ch));
        }
        snprintf(name, sizeof name, "_blocks.%d._depthwise_conv", i);
        TRY(add_conv(bb, g, name, b->expand_ch, b->expand_ch, b->kernel, b->expand_ch, 0));
        snprintf(name, sizeof name, "_blocks.%d._bn1", i);
        TRY(add_bn(bb, name, b->expand_ch));
        if (b->se_ch) {
            snprintf(name, sizeof name, "_blocks.%d._se_reduce", i);
            TRY(add_conv(bb, g, name, b->expand_ch, b->se_ch, 1, 1, 1));
            snprintf(name, sizeof name, "_blocks.%d._se_expand", i);
            TRY(add_conv(bb, g, name, b->se_ch, b->expand_ch, 1, 1, 1));
        }
        snprintf(name, sizeof name, "_blocks.%d._project_conv", i);
        TRY(add_conv(bb, g, name, b->expand_ch, b->out_ch, 1, 1, 0));
        snprintf(name, sizeof name, "_blocks.%d._bn2", i);
        TRY(add_bn(bb, name, b->out_ch));
    }
    TRY(add_conv(bb, g, "_conv_head", bb->blocks[bb->n_blocks - 1].out_ch, bb->head_ch, 1, 1, 0));
    TRY(add_bn(bb, "_bn1", bb->head_ch));
    TRY(add_linear(bb, g, "_fc", bb->head_ch, bb->n_classes));
done:
    return st;
}

drdc_status drdc_backbone_build(drdc_backbone *bb, const drdc_backbone_config *cfg, int image_size, dt_device dev,
                                uint64_t seed) {
    if (!bb || !cfg) return drdc_fail(DRDC_ERR_INPUT, "drdc_backbone_build: NULL argument");
    if (dt_scope_depth() != 0)
        return drdc_fail(DRDC_ERR_STATE, "drdc_backbone_build: called inside a shim scope (its weights would be "
                                         "freed when the scope ends)");
    memset(bb, 0, sizeof *bb);
    drdc_status st = drdc_backbone_check_config(cfg);
    if (st) return st;
    st = plan(bb, cfg->arch);
    if (st) return st;
    if (image_size < 32) {
        memset(bb, 0, sizeof *bb);
        return drdc_fail(DRDC_ERR_CONFIG, "backbone %s: image size %d is below 32 px", cfg->arch, image_size);
    }
    bb->image_size = image_size;
    bb->device = dev;
    if (cfg->n_blocks > 0) {   /* increasing, at most DRDC_MAX_LIST: drdc_backbone_check_config */
        for (int i = 0; i < cfg->n_blocks; i++) {
            int b = cfg->blocks[i];
            if (b < 0 || b >= bb->n_blocks) {
                int n = bb->n_blocks;
                memset(bb, 0, sizeof *bb);
                return drdc_fail(DRDC_ERR_CONFIG, "backbone.blocks: block %d is out of range (%s has blocks 0..%d)", b,
                                 cfg->arch, n - 1);
            }
            bb->feat_blocks[i] = b;
        }
        bb->n_feat = cfg->n_blocks;
    }
    bb->channels = 0;
    for (int i = 0; i < bb->n_feat; i++) {
        bb->feat_channels[i] = bb->blocks[bb->feat_blocks[i]].out_ch;
        bb->channels += bb->feat_channels[i];
    }
    dt_generator g = NULL;
    TRY(dt_generator_new(&g, seed));
    if (bb->family == DRDC_BACKBONE_MOBILENET_V2)
        TRY(add_mobilenet_params(bb, g));
    else
        TRY(add_efficientnet_params(bb, g));
done:
    dt_generator_free(g);
    if (st) {
        drdc_backbone_free(bb);
        return drdc_error_context(st, "building backbone %s", cfg->arch);
    }
    return DRDC_OK;
}

drdc_status drdc_backbone_load_st(drdc_backbone *bb, const drdc_st_file *f, const char *prefix) {
    drdc_status st = drdc_params_load(&bb->params, f, prefix ? prefix : "", 0);
    if (st) return drdc_error_context(st, "loading %s backbone weights", bb->arch);
    return DRDC_OK;
}

drdc_status drdc_backbone_load(drdc_backbone *bb, const char *path) {
    drdc_st_file *f = NULL;
    drdc_status st = drdc_st_open(&f, path);
    if (st) return drdc_error_context(st, "loading %s backbone weights", bb->arch);
    st = drdc_backbone_load_st(bb, f, "");
    drdc_st_close(f);
    return st;
}

int drdc_backbone_channels(const drdc_backbone *bb) { return bb->channels; }

void drdc_backbone_free(drdc_backbone *bb) {
    if (!bb) return;
    drdc_params_free(&bb->params);
    memset(bb, 0, sizeof *bb);
}

/* ---- forward pass -----------------------------------------------------------------------
 * Every function below runs inside the scope opened by run(): on an error it leaves through
 * `done:` and what it made is freed there or, at the latest, when that scope ends; on success it
 * frees intermediates early to keep the peak memory low. `x` arguments are borrowed. */

/* *x = y, freeing the old *x */
static void replace(dt_tensor *x, dt_tensor y) {
    dt_free(*x);
    *x = y;
}

/* conv named `name` (weight [O, I/groups, k, k], optional bias). pad: (left, right, top,
 * bottom), or NULL for TF-SAME computed from x. */
static drdc_status conv(dt_tensor *out, const drdc_backbone *bb, dt_tensor x, const char *name, int stride,
                        int64_t groups, const int *pad) {
    dt_tensor w, b = NULL, padded = NULL;
    char full[256];
    int64_t k;
    int p[4];
    drdc_status st = DRDC_OK;
    TRY(drdc_params_getf(&w, &bb->params, "%s.weight", name));
    snprintf(full, sizeof full, "%s.bias", name);
    b = drdc_params_get(&bb->params, full);
    TRY(dt_size(&k, w, -1));
    if (pad) {
        memcpy(p, pad, sizeof p);
    } else {
        int64_t h, wd;
        TRY(dt_size(&h, x, 2));
        TRY(dt_size(&wd, x, 3));
        same_pad((int)wd, (int)k, stride, &p[0], &p[1]);
        same_pad((int)h, (int)k, stride, &p[2], &p[3]);
    }
    if (p[0] == p[1] && p[2] == p[3]) {   /* symmetric: let the conv pad */
        TRY(dt_conv2d(out, x, w, b, stride, stride, p[2], p[0], 1, 1, groups));
    } else {
        TRY(dt_constant_pad_nd(&padded, x, p[0], p[1], p[2], p[3], 0.0));    /* [N,C,H+t+b,W+l+r] */
        TRY(dt_conv2d(out, padded, w, b, stride, stride, 0, 0, 1, 1, groups));
    }
done:
    dt_free(padded);
    return st;
}

/* *x = BatchNorm_name(*x) with running statistics */
static drdc_status bn_(dt_tensor *x, const drdc_backbone *bb, const char *name) {
    dt_tensor w, b, m, v, y;
    drdc_status st = DRDC_OK;
    TRY(drdc_params_getf(&w, &bb->params, "%s.weight", name));
    TRY(drdc_params_getf(&b, &bb->params, "%s.bias", name));
    TRY(drdc_params_getf(&m, &bb->params, "%s.running_mean", name));
    TRY(drdc_params_getf(&v, &bb->params, "%s.running_var", name));
    TRY(dt_batch_norm_eval(&y, *x, m, v, w, b, bb->bn_eps));
    replace(x, y);
done:
    return st;
}

/* *x = act(*x): swish for EfficientNet, ReLU6 otherwise */
static drdc_status act_(dt_tensor *x, const drdc_backbone *bb) {
    dt_tensor y;
    drdc_status st = DRDC_OK;
    TRY(bb->family == DRDC_BACKBONE_EFFICIENTNET ? dt_silu(&y, *x) : dt_relu6(&y, *x));
    replace(x, y);
done:
    return st;
}

/* *x = conv(*x) */
static drdc_status conv_(dt_tensor *x, const drdc_backbone *bb, const char *name, int stride, int64_t groups,
                         const int *pad) {
    dt_tensor y;
    drdc_status st = DRDC_OK;
    TRY(conv(&y, bb, *x, name, stride, groups, pad));
    replace(x, y);
done:
    return st;
}

/* images [B,3,H,W] in [0,1] -> *out normalised: x*2-1 (MobileNetV2 TF weights) or
 * (x - mean) / std with ImageNet statistics (EfficientNet, as UniAD) */
static drdc_status normalise(dt_tensor *out, const drdc_backbone *bb, dt_tensor images) {
    dt_tensor t = NULL, m = NULL, s = NULL, c = NULL;
    drdc_status st = DRDC_OK;
    if (bb->family == DRDC_BACKBONE_MOBILENET_V2) {
        TRY(dt_mul_scalar(&t, images, 2.0));                              /* [B,3,H,W] in [0,2] */
        TRY(dt_add_scalar(out, t, -1.0));                                 /* [B,3,H,W] in [-1,1] */
    } else {
        float mean[3], inv_std[3];
        for (int i = 0; i < 3; i++) {
            mean[i] = (float)IMAGENET_MEAN[i];
            inv_std[i] = (float)IMAGENET_STD[i];
        }
        int64_t shape[4] = {1, 3, 1, 1};
        TRY(dt_from_host(&m, mean, DT_F32, shape, 4, bb->device));        /* [1,3,1,1] */
        TRY(dt_from_host(&s, inv_std, DT_F32, shape, 4, bb->device));     /* [1,3,1,1] */
        TRY(dt_sub(&c, images, m));                                       /* [B,3,H,W] */
        TRY(dt_div(out, c, s));                                           /* [B,3,H,W] */
    }
done:
    dt_free(t);
    dt_free(c);
    dt_free(m);
    dt_free(s);
    return st;
}

/* MobileNetV2 features.i (i >= 1): x [B,Cin,H,W] -> *out [B,Cout,H/s,W/s] */
static drdc_status mobilenet_block(dt_tensor *out, const drdc_backbone *bb, int i, dt_tensor x) {
    const drdc_backbone_block *b = &bb->blocks[i];
    char name[64];
    dt_tensor h = NULL;
    drdc_status st = DRDC_OK;
    if (b->expand_ch == b->in_ch) {   /* features.1 */
        snprintf(name, sizeof name, "features.%d.conv.0.0", i);
        TRY(conv(&h, bb, x, name, b->stride, b->in_ch, NULL));          /* [B,Cin,H/s,W/s] depthwise */
        TRY(act_(&h, bb));
        snprintf(name, sizeof name, "features.%d.conv.1", i);
        TRY(conv_(&h, bb, name, 1, 1, NULL));                            /* [B,Cout,H/s,W/s] project */
    } else {
        snprintf(name, sizeof name, "features.%d.conv.0.0", i);
        TRY(conv(&h, bb, x, name, 1, 1, NULL));                          /* [B,E,H,W] expand */
        TRY(act_(&h, bb));
        snprintf(name, sizeof name, "features.%d.conv.1.0", i);
        TRY(conv_(&h, bb, name, b->stride, b->expand_ch, NULL));         /* [B,E,H/s,W/s] depthwise */
        TRY(act_(&h, bb));
        snprintf(name, sizeof name, "features.%d.conv.2", i);
        TRY(conv_(&h, bb, name, 1, 1, NULL));                            /* [B,Cout,H/s,W/s] project */
    }
    if (b->residual) {
        dt_tensor y;
        TRY(dt_add(&y, h, x));                                           /* [B,Cout,H,W] */
        replace(&h, y);
    }
    *out = h;
done:
    return st;
}

/* EfficientNet _blocks.i (MBConvBlock.forward in eval mode, drop-connect off):
 * x [B,Cin,H,W] -> *out [B,Cout,~H/s,~W/s] */
static drdc_status efficientnet_block(dt_tensor *out, const drdc_backbone *bb, int i, dt_tensor x) {
    const drdc_backbone_block *b = &bb->blocks[i];
    static const int nopad[4] = {0, 0, 0, 0};
    char name[64];
    dt_tensor h = NULL;
    drdc_status st = DRDC_OK;
    if (b->expand_ch != b->in_ch) {
        snprintf(name, sizeof name, "_blocks.%d._expand_conv", i);
        TRY(conv(&h, bb, x, name, 1, 1, nopad));                         /* [B,E,H,W] */
        snprintf(name, sizeof name, "_blocks.%d._bn0", i);
        TRY(bn_(&h, bb, name));
        TRY(act_(&h, bb));
        snprintf(name, sizeof name, "_blocks.%d._depthwise_conv", i);
        TRY(conv_(&h, bb, name, b->stride, b->expand_ch, b->pad));          /* [B,E,H',W'] */
    } else {
        snprintf(name, sizeof name, "_blocks.%d._depthwise_conv", i);
        TRY(conv(&h, bb, x, name, b->stride, b->expand_ch, b->pad));        /* [B,E,H',W'] */
    }
    snprintf(name, sizeof name, "_blocks.%d._bn1", i);
    TRY(bn_(&h, bb, name));
    TRY(act_(&h, bb));
    if (b->se_ch) {
        dt_tensor s, gate, y;
        TRY(dt_adaptive_avg_pool2d(&s, h, 1, 1));                        /* [B,E,1,1] */
        snprintf(name, sizeof name, "_blocks.%d._se_reduce", i);
        TRY(conv_(&s, bb, name, 1, 1, nopad));                            /* [B,S,1,1] */
        TRY(act_(&s, bb));
        snprintf(name, sizeof name, "_blocks.%d._se_expand", i);
        TRY(conv_(&s, bb, name, 1, 1, nopad));                            /* [B,E,1,1] */
        TRY(dt_sigmoid(&gate, s));                                        /* [B,E,1,1] */
        dt_free(s);
        TRY(dt_mul(&y, gate, h));                                         /* [B,E,H',W'] */
        dt_free(gate);
        replace(&h, y);
    }
    snprintf(name, sizeof name, "_blocks.%d._project_conv", i);
    TRY(conv_(&h, bb, name, 1, 1, nopad));                                /* [B,Cout,H',W'] */
    snprintf(name, sizeof name, "_blocks.%d._bn2", i);
    TRY(bn_(&h, bb, name));
    if (b->residual) {
        dt_tensor y;
        TRY(dt_add(&y, h, x));                                            /* [B,Cout,H,W] */
        replace(&h, y);
    }
    *out = h;
done:
    return st;
}

static drdc_status check_images(const drdc_backbone *bb, dt_tensor images, int need_size) {
    if (!images) return drdc_fail(DRDC_ERR_INPUT, "backbone %s: no images", bb->arch);
    int64_t s[4] = {0, 0, 0, 0};
    if (dt_ndim(images) != 4 || dt_shape(s, 4, images) != DRDC_OK || s[1] != 3 || s[0] < 1)
        return drdc_fail(DRDC_ERR_INPUT, "backbone %s: images must be [B,3,H,W], got %d dims [%lld,%lld,...]",
                         bb->arch, dt_ndim(images), (long long)s[0], (long long)s[1]);
    if (dt_dtype_of(images) != DT_F32)
        return drdc_fail(DRDC_ERR_INPUT, "backbone %s: images must be f32, got %s", bb->arch,
                         dt_dtype_name(dt_dtype_of(images)));
    if (need_size && bb->image_size % 16 != 0)
        return drdc_fail(DRDC_ERR_INPUT, "backbone %s: features need an image size that is a multiple of 16, not %d",
                         bb->arch, bb->image_size);
    if (need_size && (s[2] != bb->image_size || s[3] != bb->image_size))
        return drdc_fail(DRDC_ERR_INPUT, "backbone %s: built for %dx%d images, got [%lld,3,%lld,%lld]", bb->arch,
                         bb->image_size, bb->image_size, (long long)s[0], (long long)s[2], (long long)s[3]);
    if (s[2] < 32 || s[3] < 32)
        return drdc_fail(DRDC_ERR_INPUT, "backbone %s: images of %lldx%lld px are too small (at least 32)", bb->arch,
                         (long long)s[3], (long long)s[2]);
    return DRDC_OK;
}

/* Runs the trunk on images up to block `last` (inclusive). Each feature block's output goes
 * to feats[j] (a new handle, may be NULL when not wanted); the last output to *tail (may be
 * NULL). */
static drdc_status trunk(const drdc_backbone *bb, dt_tensor images, int last, dt_tensor *feats, dt_tensor *tail) {
    dt_tensor x = NULL;
    drdc_status st = DRDC_OK;
    TRY(normalise(&x, bb, images));                                       /* [B,3,H,W] */
    int j = 0;
    for (int i = 0; i <= last; i++) {
        dt_tensor y;
        if (bb->family == DRDC_BACKBONE_MOBILENET_V2) {
            if (i == 0) {
                TRY(conv(&y, bb, x, "features.0.0", 2, 1, NULL));         /* [B,32,H/2,W/2] stem */
                replace(&x, y);
                TRY(act_(&x, bb));
            } else {
                TRY(mobilenet_block(&y, bb, i, x));                       /* [B,c_i,H/s_i,W/s_i] */
                replace(&x, y);
            }
        } else {
            if (i == 0) {
                TRY(conv(&y, bb, x, "_conv_stem", 2, 1, bb->stem_pad));        /* [B,stem,H/2,W/2] */
                replace(&x, y);
                TRY(bn_(&x, bb, "_bn0"));
                TRY(act_(&x, bb));
            }
            TRY(efficientnet_block(&y, bb, i, x));                        /* [B,c_i,~H/s_i,~W/s_i] */
            replace(&x, y);
        }
        if (j < bb->n_feat && bb->feat_blocks[j] == i) {
            if (feats) TRY(dt_detach(&feats[j], x));                      /* shares storage with x */
            j++;
        }
    }
    if (tail)
        *tail = x;
    else
        dt_free(x);
done:
    return st;
}

/* Runs fn inside a scope with grad off; the n results are kept for the caller. */
typedef drdc_status (*forward_fn)(dt_tensor *outs, int n, const drdc_backbone *bb, dt_tensor images);

static drdc_status run(forward_fn fn, dt_tensor *outs, int n, const drdc_backbone *bb, dt_tensor images) {
    for (int i = 0; i < n; i++) outs[i] = NULL;
    drdc_status st = dt_scope_begin();
    if (st) return st;
    int prev = dt_set_grad_enabled(0);
    TRY(fn(outs, n, bb, images));
    for (int i = 0; i < n; i++) TRY(dt_scope_keep(outs[i]));
done:
    dt_set_grad_enabled(prev);
    if (st) {
        for (int i = 0; i < n; i++) {
            dt_free(outs[i]);   /* kept ones are the caller's now: free them here */
            outs[i] = NULL;
        }
        drdc_error_context(st, "backbone %s", bb->arch);
    }
    return dt_scope_finish(st, NULL, NULL);
}

static drdc_status blocks_fn(dt_tensor *outs, int n, const drdc_backbone *bb, dt_tensor images) {
    (void)n;
    return trunk(bb, images, bb->feat_blocks[bb->n_feat - 1], outs, NULL);
}

static drdc_status features_fn(dt_tensor *outs, int n, const drdc_backbone *bb, dt_tensor images) {
    (void)n;
    dt_tensor feats[DRDC_MAX_LIST] = {0}, resized[DRDC_MAX_LIST] = {0};
    int64_t h, w;
    drdc_status st = DRDC_OK;
    TRY(trunk(bb, images, bb->feat_blocks[bb->n_feat - 1], feats, NULL));
    TRY(dt_size(&h, images, 2));
    TRY(dt_size(&w, images, 3));
    for (int j = 0; j < bb->n_feat; j++) {
        if (dt_dtype_of(feats[j]) != DT_F32) {   /* bf16 under autocast: the features are float32 */
            dt_tensor f32;
            TRY(dt_to_dtype(&f32, feats[j], DT_F32));
            replace(&feats[j], f32);
        }
        TRY(dt_interpolate(&resized[j], feats[j], h / 16, w / 16, DT_INTERP_BILINEAR_AC)); /* [B,c_j,H/16,W/16] */
        dt_free(feats[j]);
        feats[j] = NULL;
    }
    TRY(dt_cat(&outs[0], resized, bb->n_feat, 1));                        /* [B,C,H/16,W/16] */
done:
    for (int j = 0; j < bb->n_feat; j++) {
        dt_free(feats[j]);
        dt_free(resized[j]);
    }
    return st;
}

static drdc_status classify_fn(dt_tensor *outs, int n, const drdc_backbone *bb, dt_tensor images) {
    (void)n;
    static const int nopad[4] = {0, 0, 0, 0};
    dt_tensor x = NULL, y, w, b;
    drdc_status st = DRDC_OK;
    TRY(trunk(bb, images, bb->n_blocks - 1, NULL, &x));                   /* [B,c_last,H/32,W/32] */
    static const int64_t hw[2] = {2, 3};
    if (bb->family == DRDC_BACKBONE_MOBILENET_V2) {
        char name[32];
        snprintf(name, sizeof name, "features.%d.0", bb->n_blocks);
        TRY(conv_(&x, bb, name, 1, 1, NULL));                             /* [B,1280,H/32,W/32] */
        TRY(act_(&x, bb));
        TRY(dt_mean(&y, x, hw, 2, 0));                                    /* [B,1280] */
        replace(&x, y);
        TRY(drdc_params_getf(&w, &bb->params, "classifier.1.weight"));
        TRY(drdc_params_getf(&b, &bb->params, "classifier.1.bias"));
    } else {
        TRY(conv_(&x, bb, "_conv_head", 1, 1, nopad));                    /* [B,head,H/32,W/32] */
        TRY(bn_(&x, bb, "_bn1"));
        TRY(act_(&x, bb));
        TRY(dt_mean(&y, x, hw, 2, 0));                                    /* [B,head] */
        replace(&x, y);
        TRY(drdc_params_getf(&w, &bb->params, "_fc.weight"));
        TRY(drdc_params_getf(&b, &bb->params, "_fc.bias"));
    }
    TRY(dt_linear(&outs[0], x, w, b));                                    /* [B,n_classes] */
done:
    dt_free(x);
    return st;
}

drdc_status drdc_backbone_blocks_out(dt_tensor *outs, int n, const drdc_backbone *bb, dt_tensor images) {
    if (!bb || !outs) return drdc_fail(DRDC_ERR_INPUT, "drdc_backbone_blocks_out: NULL argument");
    if (n != bb->n_feat)
        return drdc_fail(DRDC_ERR_INPUT, "backbone %s: %d outputs asked, it has %d feature blocks", bb->arch, n,
                         bb->n_feat);
    drdc_status st = check_images(bb, images, 0);
    return st ? st : run(blocks_fn, outs, n, bb, images);
}

/* Output size of a conv along one axis: TF-SAME (pad NULL: ceil(in / stride)) or the static
 * padding lo + hi. */
static int64_t conv_out(int64_t in, int k, int stride, const int *pad, int horizontal) {
    if (!pad) return (in + stride - 1) / stride;
    const int lo = horizontal ? pad[0] : pad[2], hi = horizontal ? pad[1] : pad[3];
    return (in + lo + hi - k) / stride + 1;
}

int64_t drdc_backbone_flops(const drdc_backbone *bb, int64_t n) {
    if (!bb || bb->n_feat < 1) return -1;
    const int mnv2 = bb->family == DRDC_BACKBONE_MOBILENET_V2;
    const int *stem_pad = mnv2 ? NULL : bb->stem_pad;
    int64_t h = conv_out(bb->image_size, 3, 2, stem_pad, 0), w = conv_out(bb->image_size, 3, 2, stem_pad, 1);
    int64_t f = 2 * n * h * w * bb->stem_ch * 3 * 9;                              /* the stem, 3 -> stem_ch */
    for (int i = mnv2 ? 1 : 0; i <= bb->feat_blocks[bb->n_feat - 1]; i++) {
        const drdc_backbone_block *b = &bb->blocks[i];
        const int64_t E = b->expand_ch, k = b->kernel;
        const int *pad = mnv2 ? NULL : b->pad;
        if (E != b->in_ch) f += 2 * n * h * w * E * b->in_ch;                     /* 1x1 expansion */
        h = conv_out(h, b->kernel, b->stride, pad, 0), w = conv_out(w, b->kernel, b->stride, pad, 1);
        f += 2 * n * h * w * E * k * k;                                           /* depthwise */
        if (b->se_ch) f += 2 * (2 * n * E * b->se_ch);                            /* SE reduce, expand (1x1 on 1x1) */
        f += 2 * n * h * w * b->out_ch * E;                                       /* 1x1 projection */
    }
    return f;
}

drdc_status drdc_backbone_features(dt_tensor *out, const drdc_backbone *bb, dt_tensor images) {
    if (!bb || !out) return drdc_fail(DRDC_ERR_INPUT, "drdc_backbone_features: NULL argument");
    *out = NULL;
    drdc_status st = check_images(bb, images, 1);
    return st ? st : run(features_fn, out, 1, bb, images);
}

drdc_status drdc_backbone_classify(dt_tensor *logits, const drdc_backbone *bb, dt_tensor images) {
    if (!bb || !logits) return drdc_fail(DRDC_ERR_INPUT, "drdc_backbone_classify: NULL argument");
    *logits = NULL;
    drdc_status st = check_images(bb, images, 0);
    return st ? st : run(classify_fn, logits, 1, bb, images);
}
