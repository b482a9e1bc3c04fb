/* backbone.h: the frozen, pretrained CNN that turns images into UniAD's feature maps (DESIGN.md
 * sections 2 and 4).
 *
 * Architectures (drdc_backbone_config.arch):
 * - "mobilenet_v2": TF-slim MobileNetV2 1.0 with BatchNorm folded into each conv's bias, tensor
 *   names in torchvision style (`features.N...`, `classifier.1`), as ../shared/weights/README.md.
 *   TF "SAME" padding computed from the actual input size. Input x*2-1. 1001 classes (0 =
 *   background). Block N is `features.N` (0 = the stem); default blocks 1,3,6,13 (16+24+32+96 =
 *   168 channels at strides 2,4,8,16).
 * - "efficientnet-b0".."efficientnet-b7": lukemelas' EfficientNet-PyTorch port (0.7.1): names
 *   `_conv_stem`, `_bn0`, `_blocks.N.{_expand_conv,_bn0,_depthwise_conv,_bn1,_se_reduce,
 *   _se_expand,_project_conv,_bn2}`, `_conv_head`, `_bn1`, `_fc`; BatchNorm (eps 1e-3) with
 *   running statistics, swish, squeeze-excitation, TF-SAME padding computed STATICALLY for the
 *   model's native image size (224, 240, 260, 300, 380, 456, 528, 600) exactly as the port's
 *   Conv2dStaticSamePadding, whatever size is fed. Input normalised with ImageNet mean/std (as
 *   UniAD). 1000 classes. Block N is `_blocks.N`.
 * - "efficientnet-lite0".."efficientnet-lite4": the EfficientNet-Lite variant of that port
 *   (PyPI efficientnet_lite_pytorch 0.1.0): no SE, ReLU6, stem (32) and head (1280) not scaled,
 *   first and last stage not repeated more; native sizes 224, 240, 260, 280, 300; same names and
 *   normalisation as above.
 * Default feature blocks for EfficientNets: the last block of the stride-2, stride-4, stride-8
 * and the last stride-16 stage, i.e. b4 (UniAD) 1,5,9,21 (24+32+56+160 = 272 channels),
 * b0 0,2,4,10 (16+24+40+112 = 192), lite4 0,4,8,20; drdc_backbone_default_blocks tells.
 *
 * The backbone is frozen: no parameter requires grad; every forward pass runs under no-grad, in
 * eval mode, inside a shim scope (no handle leaks, also on errors).
 *
 * Equations: none of DESIGN.md's (1)-(17); drdc_backbone_features computes f, the features that
 * (1) and (2) (base.h) compare with their reconstruction. */
#ifndef DRDC_BACKBONE_H
#define DRDC_BACKBONE_H

#include <stdint.h>

#include "drdc/core/config.h"
#include "drdc/core/error.h"
#include "drdc/formats/params.h"
#include "drdc/shim/shim.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DRDC_BACKBONE_MAX_BLOCKS 64   /* more inverted-residual blocks than any supported net (b7: 55) */

typedef enum drdc_backbone_family {
    DRDC_BACKBONE_MOBILENET_V2 = 0,
    DRDC_BACKBONE_EFFICIENTNET = 1,   /* b0..b7: swish + SE */
    DRDC_BACKBONE_EFFICIENTNET_LITE = 2,  /* lite0..4: ReLU6, no SE */
} drdc_backbone_family;

/* One inverted-residual block (MBConv). Pads are (left, right, top, bottom) of its depthwise
 * conv; for EfficientNets they are fixed at build time (static, native image size), for
 * MobileNetV2 they are computed from the input at run time and these are unused. */
typedef struct drdc_backbone_block {
    int in_ch, expand_ch, out_ch;     /* channels in, after the 1x1 expansion (= in_ch if none), out */
    int kernel, stride;               /* depthwise kernel (3 or 5), stride (1 or 2) */
    int se_ch;                        /* squeeze-excitation channels; 0 = no SE */
    int residual;                     /* 1: out = block(x) + x */
    int pad[4];                       /* static depthwise padding (EfficientNet) */
    int total_stride;                 /* stride of its output relative to the input image */
} drdc_backbone_block;

/* A built backbone. Fields are read-only for callers. */
typedef struct drdc_backbone {
    char arch[DRDC_NAME_CAP];         /* "mobilenet_v2", "efficientnet-b4", ... */
    drdc_backbone_family family;
    int image_size;                   /* H = W it was built for (the pipeline's data.image_size) */
    int native_size;                  /* EfficientNet: the size its static padding is computed for */
    dt_device device;
    drdc_params params;               /* every weight and BN buffer, by PyTorch name; all frozen */
    int stem_ch, head_ch;             /* stem conv out channels, head conv out channels (1280 for b0) */
    int stem_pad[4];                  /* static stem padding (EfficientNet) */
    int n_classes;                    /* 1001 (mobilenet_v2) or 1000 */
    double bn_eps;                    /* EfficientNet BatchNorm eps (1e-3) */
    int n_blocks;                     /* inverted-residual blocks */
    drdc_backbone_block blocks[DRDC_BACKBONE_MAX_BLOCKS];  /* [n_blocks]; mobilenet_v2: index = features index, 0 unused */
    int n_feat;                       /* chosen feature blocks */
    int feat_blocks[DRDC_MAX_LIST];   /* [n_feat] block indices, increasing */
    int feat_channels[DRDC_MAX_LIST]; /* [n_feat] their channels */
    int channels;                     /* C = sum of feat_channels */
} drdc_backbone;

/* The backbone's config rules (DRDC_ERR_CONFIG naming the key): backbone.arch is one of
 * mobilenet_v2, efficientnet-b0..b7, efficientnet-lite0..4; backbone.blocks has at most
 * DRDC_MAX_LIST entries, increasing. Whether each block exists in the architecture is
 * drdc_backbone_build's check. */
drdc_status drdc_backbone_check_config(const drdc_backbone_config *bb);

/* The default feature blocks of an architecture (into blocks, *n of them, at most DRDC_MAX_LIST).
 * An unknown arch is DRDC_ERR_CONFIG naming it. */
drdc_status drdc_backbone_default_blocks(const char *arch, int *blocks, int *n);

/* The image size an architecture was trained at (mobilenet_v2 224, efficientnet-b4 380, lite4
 * 300, ...): EfficientNet's static padding is computed for it. Unknown arch: DRDC_ERR_CONFIG. */
drdc_status drdc_backbone_native_size(const char *arch, int *size);

/* Builds the architecture cfg->arch with random PyTorch-default-like weights (conv and linear
 * weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), BatchNorm weight 1, bias 0, running
 * mean 0, var 1) drawn from a generator seeded with seed, on dev, frozen. cfg must pass
 * drdc_backbone_check_config; cfg->blocks (or the default when cfg->n_blocks is 0) picks the
 * feature blocks, an index out of range is DRDC_ERR_CONFIG. image_size (H = W, at least 32) is the size features expects
 * (it must then be a multiple of 16); classify takes any size. cfg->weights is NOT loaded here (see drdc_backbone_load). On failure *bb is freed
 * and zeroed. */
drdc_status drdc_backbone_build(drdc_backbone *bb, const drdc_backbone_config *cfg, int image_size, dt_device dev,
                                uint64_t seed);

/* Loads weights from a safetensors file by PyTorch names (extra tensors, e.g. BatchNorm
 * num_batches_tracked, are ignored). A missing or misshapen tensor is DRDC_ERR_FORMAT naming
 * the file and the tensor (drdc_params_load); an unreadable file is DRDC_ERR_IO. */
drdc_status drdc_backbone_load(drdc_backbone *bb, const char *path);
/* The same from a file already open; prefix is put before every name ("" for none). */
drdc_status drdc_backbone_load_st(drdc_backbone *bb, const drdc_st_file *f, const char *prefix);

/* The floating-point operations of drdc_backbone_features on n images (2 x multiply-adds of every
 * convolution up to the last feature block, from the built plan's shapes: stem, 1x1 expansions,
 * depthwise convs, squeeze-excitation, 1x1 projections; what the shim's dt_flops_done counts for
 * the same call). Normalisation, BatchNorm, activations and the resizing are not counted. */
int64_t drdc_backbone_flops(const drdc_backbone *bb, int64_t n);

/* images [B,3,H,W] float32 in [0,1] on bb's device, H = W = image_size -> *out
 * [B, C, H/16, W/16]: the chosen blocks' outputs, each resized to H/16 x W/16 (bilinear,
 * align_corners = true), concatenated on channels in block order. Normalisation is inside. */
drdc_status drdc_backbone_features(dt_tensor *out, const drdc_backbone *bb, dt_tensor images);

/* The chosen blocks' raw outputs (before resizing), outs[i] for feat_blocks[i]:
 * [B, feat_channels[i], ~H/s_i, ~W/s_i]. n must equal bb->n_feat. For tests and inspection. */
drdc_status drdc_backbone_blocks_out(dt_tensor *outs, int n, const drdc_backbone *bb, dt_tensor images);

/* images [B,3,H,W] in [0,1] -> *logits [B, n_classes] (the full network with its classifier,
 * for the ImageNet self-check; mobilenet_v2 index 0 = background). */
drdc_status drdc_backbone_classify(dt_tensor *logits, const drdc_backbone *bb, dt_tensor images);

/* C, the number of feature channels. */
int drdc_backbone_channels(const drdc_backbone *bb);

/* Frees every tensor; safe on a zeroed or already freed struct (leaves it zeroed). */
void drdc_backbone_free(drdc_backbone *bb);

#ifdef __cplusplus
}
#endif
#endif
