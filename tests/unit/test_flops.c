/* test_flops.c: the FLOP counters that `drdc bench` divides by time: drdc_unet_flops against a
 * count by hand of a tiny U-Net, and each stage's static count (U-Net, base transformer, backbone)
 * against what the shim counted while the stage really ran (dt_flops_done, from the shapes of the
 * convolutions and products it was called with). */
#include "testlib.h"

#include "drdc/core/config.h"
#include "drdc/stages/backbone.h"
#include "drdc/stages/base.h"
#include "drdc/stages/unet.h"

#include <string.h>

static const dt_device CPU = {DT_CPU, 0};

/* 16 px, 32 channels, mult [1,2], one ResBlock per level, attention at 8 px (level 1), 32 channels
 * per head, conditioned (6 input channels). */
static void tiny_refiner(drdc_refiner_config *r) {
    drdc_config all;
    drdc_config_defaults(&all);
    *r = all.refiner;
    r->image_size = 16;
    r->channels = 32;
    r->n_mult = 2;
    r->channel_mult[0] = 1;
    r->channel_mult[1] = 2;
    r->res_blocks = 1;
    r->n_attention = 1;
    r->attention_res[0] = 8;
    r->head_channels = 32;
    r->model_conditioning = 1;
}

/* The tiny U-Net's forward pass on one 16x16 image, layer by layer (2 x multiply-adds; a k x k
 * conv cin -> cout at h x w is 2*h*w*cout*cin*k*k; attention over L positions of ch channels is
 * qkv 2*L*3ch*ch + proj 2*L*ch*ch + q^T k and v w^T 2*L*L*ch each). C = 32, emb 4C = 128. */
static void test_unet_hand_count(void) {
    drdc_refiner_config r;
    tiny_refiner(&r);
    const int64_t time_embed = 2 * (32 * 128) + 2 * (128 * 128);
    const int64_t in_conv = 2 * 256 * 32 * 6 * 9;
    /* level 0, 16x16: ResBlock 32 -> 32 (two 3x3 convs, emb Linear 128 -> 64) */
    const int64_t l0 = 2 * (2 * 256 * 32 * 32 * 9) + 2 * 128 * 64;
    const int64_t down = 2 * 64 * 32 * 32 * 9;                        /* stride 2, 8x8 output */
    /* level 1, 8x8: ResBlock 32 -> 64 (with the 1x1 skip), attention at 64 channels */
    const int64_t l1 = 2 * 64 * 64 * 32 * 9 + 2 * 64 * 64 * 64 * 9 + 2 * 128 * 128 + 2 * 64 * 64 * 32;
    const int64_t attn64 = 2 * 64 * 192 * 64 + 2 * 64 * 64 * 64 + 2 * (2 * 64 * 64 * 64);
    const int64_t res64 = 2 * (2 * 64 * 64 * 64 * 9) + 2 * 128 * 128;   /* ResBlock 64 -> 64 */
    const int64_t middle = res64 + attn64 + res64;
    /* output level 1: cat(64, skip 64) -> 64, then cat(64, skip 32 of the downsample) -> 64, each with
     * attention; the last one upsamples (conv 64 -> 64 at 16x16) */
    const int64_t o1a = 2 * 64 * 64 * 128 * 9 + 2 * 64 * 64 * 64 * 9 + 2 * 128 * 128 + 2 * 64 * 64 * 128 + attn64;
    const int64_t o1b = 2 * 64 * 64 * 96 * 9 + 2 * 64 * 64 * 64 * 9 + 2 * 128 * 128 + 2 * 64 * 64 * 96 + attn64;
    const int64_t up = 2 * 256 * 64 * 64 * 9;
    /* output level 0: cat(64, skip 32 of level 0) -> 32, then cat(32, skip 32 of the input conv) -> 32 */
    const int64_t o0a = 2 * 256 * 32 * 96 * 9 + 2 * 256 * 32 * 32 * 9 + 2 * 128 * 64 + 2 * 256 * 32 * 96;
    const int64_t o0b = 2 * 256 * 32 * 64 * 9 + 2 * 256 * 32 * 32 * 9 + 2 * 128 * 64 + 2 * 256 * 32 * 64;
    const int64_t out_conv = 2 * 256 * 3 * 32 * 9;
    const int64_t hand = time_embed + in_conv + l0 + down + l1 + attn64 + middle + o1a + o1b + up + o0a + o0b + out_conv;
    printf("  tiny U-Net, one 16x16 image: %lld FLOPs by hand, %lld counted\n", (long long)hand,
           (long long)drdc_unet_flops(&r, 1, 16, 16));
    CHECK(drdc_unet_flops(&r, 1, 16, 16) == hand);
    CHECK(drdc_unet_flops(&r, 3, 16, 16) == 3 * hand);   /* linear in the batch */
    r.model_conditioning = 0;   /* 3 input channels: only the input conv changes */
    CHECK(drdc_unet_flops(&r, 1, 16, 16) == hand - in_conv / 2);
    r.channels = 48;            /* 48 x 1 is not a multiple of 32: not a U-Net */
    CHECK(drdc_unet_flops(&r, 1, 16, 16) == -1);
}

/* The static counts equal what the shim counted while the stage ran. */
static void test_unet_counts_what_runs(void) {
    drdc_refiner_config r;
    tiny_refiner(&r);
    r.image_size = 32;
    r.n_mult = 3;
    r.channel_mult[2] = 2;
    r.res_blocks = 2;
    r.n_attention = 2;
    r.attention_res[1] = 16;
    drdc_unet u;
    CHECK_OK(drdc_unet_build(&u, &r, CPU, 7));
    dt_tensor x = NULL, c = NULL, t = NULL, eps = NULL;
    const int64_t shape[4] = {2, 3, 32, 32}, ts[1] = {2};
    CHECK_OK(dt_zeros(&x, shape, 4, DT_F32, CPU));
    CHECK_OK(dt_ones(&c, shape, 4, DT_F32, CPU));
    CHECK_OK(dt_full(&t, ts, 1, 100, DT_I64, CPU));
    int64_t before = dt_flops_done();
    CHECK_OK(drdc_unet_eps(&eps, &u, x, t, c));
    int64_t ran = dt_flops_done() - before;
    printf("  U-Net (3 levels, 2 ResBlocks each, attention at 16 and 8 px), 2 images of 32x32: %lld counted "
           "statically, %lld run\n", (long long)drdc_unet_flops(&r, 2, 32, 32), (long long)ran);
    CHECK(ran > 0 && ran == drdc_unet_flops(&r, 2, 32, 32));
    dt_free(x), dt_free(c), dt_free(t), dt_free(eps);
    drdc_unet_free(&u);
}

static void test_base_counts_what_runs(void) {
    drdc_config all;
    drdc_config_defaults(&all);
    drdc_base_config b = all.base;
    b.hidden = 64, b.heads = 4, b.enc_layers = 2, b.dec_layers = 1, b.ffn = 96, b.neighbor_mask = 3;
    drdc_base m;
    CHECK_OK(drdc_base_build(&m, &b, 40, 4, 4, CPU, 3));
    dt_tensor f = NULL, rec = NULL;
    const int64_t shape[4] = {3, 40, 4, 4};
    CHECK_OK(dt_ones(&f, shape, 4, DT_F32, CPU));
    int64_t before = dt_flops_done();
    CHECK_OK(drdc_base_forward(&rec, &m, f, 0, NULL));
    int64_t ran = dt_flops_done() - before;
    /* by hand: B 3, L 16, E 64, C 40, F 96; attention 4*2BLE^2 + 2*2BL^2E, FFN 2*2BLEF */
    const int64_t mha = 4 * (2 * 3 * 16 * 64 * 64) + 2 * (2 * 3 * 16 * 16 * 64), ffn = 2 * (2 * 3 * 16 * 64 * 96);
    const int64_t hand = 2 * (2 * 3 * 16 * 40 * 64) + 2 * (mha + ffn) + (2 * mha + ffn);
    printf("  base transformer (2 encoder, 1 decoder layer), 3 maps of 4x4: %lld by hand, %lld counted, %lld run\n",
           (long long)hand, (long long)drdc_base_flops(&m, 3), (long long)ran);
    CHECK(drdc_base_flops(&m, 3) == hand);
    CHECK(ran == hand);
    dt_free(f), dt_free(rec);
    drdc_base_free(&m);
}

static void backbone_case(const char *arch, int size) {
    drdc_config all;
    drdc_config_defaults(&all);
    drdc_backbone_config bc = all.backbone;
    snprintf(bc.arch, sizeof bc.arch, "%s", arch);
    bc.weights[0] = '\0';
    bc.n_blocks = 0;   /* the architecture's default feature blocks */
    drdc_backbone bb;
    CHECK_OK(drdc_backbone_build(&bb, &bc, size, CPU, 5));
    dt_tensor img = NULL, feats = NULL;
    const int64_t shape[4] = {2, 3, size, size};
    CHECK_OK(dt_full(&img, shape, 4, 0.5, DT_F32, CPU));
    int64_t before = dt_flops_done();
    CHECK_OK(drdc_backbone_features(&feats, &bb, img));
    int64_t ran = dt_flops_done() - before;
    printf("  backbone %s, 2 images of %dx%d: %lld counted statically, %lld run\n", arch, size, size,
           (long long)drdc_backbone_flops(&bb, 2), (long long)ran);
    CHECK(ran > 0 && ran == drdc_backbone_flops(&bb, 2));
    dt_free(img), dt_free(feats);
    drdc_backbone_free(&bb);
}

static void test_backbone_counts_what_runs(void) {
    backbone_case("mobilenet_v2", 64);
    backbone_case("efficientnet-b0", 96);      /* squeeze-excitation, static padding for 224 px */
    backbone_case("efficientnet-lite0", 64);
}

int main(void) {
    RUN(test_unet_hand_count);
    RUN(test_unet_counts_what_runs);
    RUN(test_base_counts_what_runs);
    RUN(test_backbone_counts_what_runs);
    return test_summary();
}
