/* test_wiring.c: the model layer wires the stages together as DESIGN.md says. Each stage is matched
 * to its PyTorch twin elsewhere; these tests catch a pipeline that is mis-wired between stages:
 * - the refiner sees the image in [-1,1] (training's range), not the loader's [0,1];
 * - eq. (17) blends the diffusion map with weight alpha and the base map with 1 - alpha, each
 *   standardised with ITS OWN normal statistics, and calibration stores each map's statistics under
 *   its own name;
 * - an image's inpainting draws come from its own generator (drdc_model_image_seed), so its maps
 *   and score do not depend on the batch it is in or its position there;
 * - infer.precision bf16 and infer.batch_refiner stay close to the default (stated bounds).
 * A tiny model is built in process with random weights (the U-Net's zero-initialised output layer
 * randomised too, so the refiner's output depends on its input). */
#include "drdc/model/model.h"
#include "drdc/stages/fusion.h"
#include "drdc/formats/image.h"
#include "drdc/model/calibrate.h"
#include "testlib.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const dt_device CPU = {DT_CPU, 0};
static drdc_model g_m;
static int g_ready;

/* data.image_size S = 64, refiner.image_size R = 32: the base map is resized between them. */
static const char *TINY =
    "{\"data\": {\"image_size\": 64}, \"backbone\": {\"arch\": \"mobilenet_v2\"},"
    " \"base\": {\"hidden\": 32, \"heads\": 4, \"enc_layers\": 1, \"dec_layers\": 1, \"ffn\": 64, \"neighbor_mask\": 3},"
    " \"refiner\": {\"image_size\": 32, \"channels\": 32, \"channel_mult\": [1, 2], \"res_blocks\": 1,"
    " \"attention_res\": [16], \"head_channels\": 32},"
    " \"infer\": {\"steps\": 2, \"grids\": [4, 8], \"scales\": [1, 0.5], \"filter\": 3, \"pool\": 4, \"K\": 2,"
    " \"alpha\": 0.9, \"batch\": 3}}";

static void setup(void) {
    drdc_config cfg;
    drdc_config_defaults(&cfg);
    CHECK_OK(drdc_config_parse(&cfg, TINY, "test_wiring"));
    if (drdc_model_build(&g_m, &cfg, CPU)) {
        CHECK(!"tiny model builds");
        return;
    }
    /* every refiner tensor random (the output layer starts at zero) */
    dt_generator g = NULL;
    CHECK_OK(dt_generator_new(&g, 5));
    int prev = dt_set_grad_enabled(0);
    for (int i = 0; i < g_m.refiner.params.n; i++) {
        dt_tensor t = g_m.refiner.params.tensors[i], r = NULL, s = NULL;
        int64_t shape[8];
        CHECK_OK(dt_shape(shape, 8, t));
        CHECK_OK(dt_randn(&r, shape, dt_ndim(t), DT_F32, CPU, g));
        CHECK_OK(dt_mul_scalar(&s, r, 0.05));
        CHECK_OK(dt_copy_(t, s));
        dt_free(r);
        dt_free(s);
    }
    dt_set_grad_enabled(prev);
    dt_generator_free(g);
    g_m.refiner_steps = 1;
    /* distinct statistics, so that swapping the two maps or their statistics changes the result */
    g_m.stats.ready = g_m.stats.drdc_ready = 1;
    g_m.stats.fuse_base_mean = 3.0, g_m.stats.fuse_base_std = 2.0;
    g_m.stats.diff_mean = 0.5, g_m.stats.diff_std = 0.25;
    g_ready = 1;
}

/* B images [B,3,R,R] in [0,1], from a seeded generator. */
static dt_tensor images(int B, int R, uint64_t seed) {
    dt_generator g = NULL;
    dt_tensor x = NULL;
    CHECK_OK(dt_generator_new(&g, seed));
    CHECK_OK(dt_rand(&x, (const int64_t[4]){B, 3, R, R}, 4, DT_F32, CPU, g));
    dt_generator_free(g);
    return x;
}

static double max_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}

/* The refiner's maps recomposed from the stages with DESIGN.md's conventions: x = 2 * image - 1,
 * each image's masks and noise drawn from its own generator in the documented order (model.h),
 * then drdc_diffusion_refine and eqs. (14)-(16). */
static dt_tensor reference_h_diff(dt_tensor img) {
    const drdc_infer_config *ic = &g_m.cfg.infer;
    int64_t sh[4];
    CHECK_OK(dt_shape(sh, 4, img));
    const int64_t B = sh[0], R = sh[2], G = ic->n_grids, K = ic->K, S = ic->steps;
    const size_t plane = (size_t)(3 * R * R);
    float *px = test_host_copy(img);
    dt_tensor per[4][8] = {{NULL}}, all[4] = {NULL}, x2 = NULL, x = NULL, x_hat = NULL, hd = NULL;
    for (int64_t b = 0; px && b < B; b++) {
        dt_generator gen = NULL;
        CHECK_OK(dt_generator_new(&gen, drdc_model_image_seed(&g_m, px + (size_t)b * plane, plane)));
        dt_tensor gm[DRDC_MAX_LIST] = {NULL};
        for (int64_t g = 0; g < G; g++)
            CHECK_OK(drdc_inpaint_masks(&gm[g], (int)R, (int)R, ic->grids[g], (int)K, gen, CPU));
        CHECK_OK(dt_stack(&per[0][b], gm, (int)G, 0));
        for (int64_t g = 0; g < G; g++) dt_free(gm[g]);
        CHECK_OK(dt_randn(&per[1][b], (const int64_t[5]){G, K, 3, R, R}, 5, DT_F32, CPU, gen));
        CHECK_OK(dt_randn(&per[2][b], (const int64_t[5]){G, K, 3, R, R}, 5, DT_F32, CPU, gen));
        CHECK_OK(dt_randn(&per[3][b], (const int64_t[6]){S, G, K, 3, R, R}, 6, DT_F32, CPU, gen));
        dt_generator_free(gen);
    }
    for (int i = 0; i < 4; i++) CHECK_OK(dt_stack(&all[i], per[i], (int)B, i == 3 ? 1 : 0));
    drdc_refine_opts ro;
    drdc_refine_opts_from_config(&ro, ic);
    ro.masks = all[0], ro.z = all[1], ro.eps0 = all[2], ro.eps_known = all[3];
    CHECK_OK(dt_mul_scalar(&x2, img, 2.0));
    CHECK_OK(dt_add_scalar(&x, x2, -1.0));
    CHECK_OK(drdc_diffusion_refine(&x_hat, NULL, NULL, &g_m.schedule, drdc_unet_eps, (void *)&g_m.refiner, x, &ro));
    drdc_fusion_opts fo;
    CHECK_OK(drdc_fusion_opts_from_config(&fo, ic));
    CHECK_OK(drdc_fusion_diffusion_heat(&hd, x, x_hat, &fo));
    for (int i = 0; i < 4; i++) {
        dt_free(all[i]);
        for (int b = 0; b < B; b++) dt_free(per[i][b]);
    }
    dt_free(x2), dt_free(x), dt_free(x_hat);
    free(px);
    return hd;
}

/* The refiner gets x = 2 * image - 1 (a pipeline that feeds it the loader's [0,1] fails), and the
 * base map is the base stage's map of the image at data.image_size, resized to the refiner's. */
static void test_refiner_and_base_inputs(void) {
    if (!g_ready) return;
    const int R = g_m.cfg.refiner.image_size, S = g_m.cfg.data.image_size, I = drdc_model_input_size(&g_m, 1);
    CHECK(I == S && S > R);
    dt_tensor img = images(2, I, 11), img_r = NULL, heat = NULL, score = NULL, bmap = NULL, bscore = NULL, hd = NULL;
    const long before = dt_live_handles();
    CHECK_OK(drdc_model_drdc(&heat, &score, &bmap, &bscore, &hd, &g_m, img, 0, NULL));
    CHECK(dt_live_handles() == before + 5);   /* the five outputs, nothing else */
    CHECK_OK(dt_interpolate(&img_r, img, R, R, DT_INTERP_AREA));   /* what the refiner gets */
    dt_tensor ref = reference_h_diff(img_r);
    float *a = test_host_copy(hd), *b = test_host_copy(ref);
    const int64_t n = 2 * R * R;
    double d = a && b ? max_diff(a, b, n) : INFINITY;
    printf("  H'_diff against the recomposition: max diff %.3g\n", d);
    CHECK(d < 1e-5);
    free(a), free(b);
    /* base map: drdc_model_base on the image at S, resized to R (area: S > R) */
    dt_tensor bm_s = NULL, bs_s = NULL, bm_r = NULL;
    CHECK_OK(drdc_model_base(&bm_s, &bs_s, &g_m, img));
    CHECK_OK(dt_interpolate(&bm_r, bm_s, R, R, DT_INTERP_AREA));
    float *ga = test_host_copy(bmap), *gb = test_host_copy(bm_r), *sa = test_host_copy(bscore), *sb = test_host_copy(bs_s);
    double db = ga && gb ? max_diff(ga, gb, n) : INFINITY, ds = sa && sb ? max_diff(sa, sb, 2) : INFINITY;
    printf("  base map at refiner size: max diff %.3g; base score %.3g\n", db, ds);
    CHECK(db < 1e-5 && ds < 1e-5);
    free(ga), free(gb), free(sa), free(sb);
    dt_free(img_r), dt_free(bm_s), dt_free(bs_s), dt_free(bm_r), dt_free(ref);
    dt_free(img), dt_free(heat), dt_free(score), dt_free(bmap), dt_free(bscore), dt_free(hd);
}

/* Eq. (17) on the maps the model returns, computed on the host: alpha on the diffusion map with the
 * diffusion statistics, 1 - alpha on the base map with the base statistics; the score is the
 * maximum of the p x p average pool of the fused map. */
static void test_fusion_takes_each_map_with_its_statistics(void) {
    if (!g_ready) return;
    const int R = g_m.cfg.refiner.image_size, B = 2, p = g_m.cfg.infer.pool;
    const double a = g_m.cfg.infer.alpha;
    const drdc_model_stats *s = &g_m.stats;
    dt_tensor img = images(B, R, 12), heat = NULL, score = NULL, bmap = NULL, hd = NULL;
    CHECK_OK(drdc_model_drdc(&heat, &score, &bmap, NULL, &hd, &g_m, img, 0, NULL));
    float *h = test_host_copy(heat), *b = test_host_copy(bmap), *d = test_host_copy(hd), *sc = test_host_copy(score);
    double worst = 0, worst_score = 0, worst_swapped = INFINITY;
    for (int i = 0; h && b && d && sc && i < B; i++) {
        float *want = malloc(sizeof(float) * R * R);
        double swapped = 0;
        for (int j = 0; j < R * R; j++) {
            size_t o = (size_t)i * R * R + j;
            want[j] = (float)(a * (d[o] - s->diff_mean) / s->diff_std + (1 - a) * (b[o] - s->fuse_base_mean) / s->fuse_base_std);
            double sw = a * (b[o] - s->fuse_base_mean) / s->fuse_base_std + (1 - a) * (d[o] - s->diff_mean) / s->diff_std;
            worst = fmax(worst, fabs((double)h[o] - want[j]));
            swapped = fmax(swapped, fabs((double)h[o] - sw));
        }
        worst_swapped = fmin(worst_swapped, swapped);
        double best = -INFINITY;
        for (int y = 0; y + p <= R; y++)
            for (int x = 0; x + p <= R; x++) {
                double acc = 0;
                for (int dy = 0; dy < p; dy++)
                    for (int dx = 0; dx < p; dx++) acc += want[(y + dy) * R + x + dx];
                best = fmax(best, acc / (p * p));
            }
        worst_score = fmax(worst_score, fabs(best - sc[i]));
        free(want);
    }
    printf("  eq. (17): max diff %.3g (with the maps swapped it would be >= %.3g); score max diff %.3g\n", worst,
           worst_swapped, worst_score);
    CHECK(worst < 1e-4);
    CHECK(worst_swapped > 0.1);   /* the check can tell a swap */
    CHECK(worst_score < 1e-4);
    free(h), free(b), free(d), free(sc);
    dt_free(img), dt_free(heat), dt_free(score), dt_free(bmap), dt_free(hd);
}

/* One image alone, and the same image at positions 0 and 2 of a batch of three (with another image
 * between): bit-identical DRDC maps and scores, and bit-identical base maps and scores. */
static void test_maps_do_not_depend_on_the_batch(void) {
    if (!g_ready) return;
    const int R = g_m.cfg.refiner.image_size, I = drdc_model_input_size(&g_m, 1);
    const size_t rr = (size_t)R * R, ii = (size_t)I * I;
    dt_tensor one = images(1, I, 21), other = images(1, I, 22), batch = NULL;
    const dt_tensor mixed[3] = {one, other, one};
    CHECK_OK(dt_cat(&batch, mixed, 3, 0));
    dt_tensor h1 = NULL, s1 = NULL, h3 = NULL, s3 = NULL, b1 = NULL, bs1 = NULL, b3 = NULL, bs3 = NULL;
    CHECK_OK(drdc_model_drdc(&h1, &s1, NULL, NULL, NULL, &g_m, one, 0, NULL));
    CHECK_OK(drdc_model_drdc(&h3, &s3, NULL, NULL, NULL, &g_m, batch, 0, NULL));
    CHECK_OK(drdc_model_base(&b1, &bs1, &g_m, one));
    CHECK_OK(drdc_model_base(&b3, &bs3, &g_m, batch));
    float *a = test_host_copy(h1), *b = test_host_copy(h3), *sa = test_host_copy(s1), *sb = test_host_copy(s3);
    float *ba = test_host_copy(b1), *bb = test_host_copy(b3), *bsa = test_host_copy(bs1), *bsb = test_host_copy(bs3);
    if (a && b && sa && sb && ba && bb && bsa && bsb) {
        int drdc0 = !memcmp(a, b, sizeof(float) * rr) && !memcmp(sa, sb, sizeof(float));
        int drdc2 = !memcmp(a, b + 2 * rr, sizeof(float) * rr) && !memcmp(sa, sb + 2, sizeof(float));
        int base0 = !memcmp(ba, bb, sizeof(float) * ii) && !memcmp(bsa, bsb, sizeof(float));
        int base2 = !memcmp(ba, bb + 2 * ii, sizeof(float) * ii) && !memcmp(bsa, bsb + 2, sizeof(float));
        printf("  alone vs batch positions 0 / 2: drdc %s / %s (score %.9g), base %s / %s\n",
               drdc0 ? "identical" : "DIFFER", drdc2 ? "identical" : "DIFFER", sa[0], base0 ? "identical" : "DIFFER",
               base2 ? "identical" : "DIFFER");
        CHECK(drdc0 && drdc2 && base0 && base2);
        CHECK(memcmp(a, b + rr, sizeof(float) * rr) != 0);   /* another image gets another map */
    } else {
        CHECK(!"host copies");
    }
    free(a), free(b), free(sa), free(sb), free(ba), free(bb), free(bsa), free(bsb);
    dt_free(one), dt_free(other), dt_free(batch);
    dt_free(h1), dt_free(s1), dt_free(h3), dt_free(s3), dt_free(b1), dt_free(bs1), dt_free(b3), dt_free(bs3);
}

/* infer.precision bf16 (autocast) gives maps close to fp32's, and is still a function of the image
 * alone; infer.batch_refiner (the batch's runs through the U-Net together) gives the same maps up to
 * the summation order. Bounds: the largest map difference within 5 % of the fp32 map's range for
 * bf16 (8-bit mantissas through every layer), 1e-4 for batching. */
static void run_maps(dt_tensor *heat, dt_tensor *score, dt_tensor imgs, const char *precision, int batched) {
    drdc_infer_config saved = g_m.cfg.infer;
    snprintf(g_m.cfg.infer.precision, sizeof g_m.cfg.infer.precision, "%s", precision);
    g_m.cfg.infer.batch_refiner = batched;
    CHECK_OK(drdc_model_drdc(heat, score, NULL, NULL, NULL, &g_m, imgs, 0, NULL));
    g_m.cfg.infer = saved;
}

static double range_of(const float *a, int64_t n) {
    float lo = a[0], hi = a[0];
    for (int64_t i = 1; i < n; i++) lo = a[i] < lo ? a[i] : lo, hi = a[i] > hi ? a[i] : hi;
    return (double)hi - lo;
}

static void test_bf16_and_batched_refiner_stay_close(void) {
    if (!g_ready) return;
    const int R = g_m.cfg.refiner.image_size, I = drdc_model_input_size(&g_m, 1);
    const int64_t rr = (int64_t)R * R;
    dt_tensor imgs = images(3, I, 41), one = NULL;
    CHECK_OK(dt_narrow(&one, imgs, 0, 1, 1));
    dt_tensor h32 = NULL, s32 = NULL, h16 = NULL, s16 = NULL, h16a = NULL, s16a = NULL, hb = NULL, sb = NULL;
    run_maps(&h32, &s32, imgs, "fp32", 0);
    run_maps(&h16, &s16, imgs, "bf16", 0);
    run_maps(&h16a, &s16a, one, "bf16", 0);
    run_maps(&hb, &sb, imgs, "fp32", 1);
    float *a = test_host_copy(h32), *b = test_host_copy(h16), *c = test_host_copy(h16a), *d = test_host_copy(hb);
    float *sa = test_host_copy(s32), *sc = test_host_copy(s16), *sd = test_host_copy(sb);
    if (a && b && c && d && sa && sc && sd) {
        const double range = range_of(a, 3 * rr), dh = max_diff(a, b, 3 * rr), ds = max_diff(sa, sc, 3);
        const double srange = range_of(sa, 3) > 0 ? range_of(sa, 3) : 1;
        const double db = max_diff(a, d, 3 * rr), dsb = max_diff(sa, sd, 3);
        printf("  bf16 vs fp32: max |map diff| %.3g (%.2f %% of the map range %.3g), max |score diff| %.3g\n", dh,
               100 * dh / range, range, ds);
        printf("  batched refiner vs one image at a time: max |map diff| %.3g, max |score diff| %.3g\n", db, dsb);
        CHECK(dh > 0 && dh < 0.05 * range);   /* bf16 really ran, and stayed close */
        CHECK(ds < 0.05 * range + 0.05 * srange);
        CHECK(db <= 1e-4 * range && dsb <= 1e-4 * (fabs(sa[0]) + 1));
        CHECK(!memcmp(b + rr, c, sizeof(float) * (size_t)rr));   /* bf16: still the image alone, bit for bit */
    } else {
        CHECK(!"host copies");
    }
    free(a), free(b), free(c), free(d), free(sa), free(sc), free(sd);
    dt_free(imgs), dt_free(one), dt_free(h32), dt_free(s32), dt_free(h16), dt_free(s16), dt_free(h16a);
    dt_free(s16a), dt_free(hb), dt_free(sb);
}

/* Calibration stores each map's statistics under its own name: with the images' maps computed
 * through drdc_model_drdc (a function of the image alone), fuse_base_mean/std are those of the base
 * maps and diff_mean/std those of the diffusion maps; the DRDC threshold is the quantile of the fused
 * scores. The validation images are PNG files at the model's input size, so the loader's resize is
 * the identity. */
static void test_calibration_stores_each_maps_statistics(void) {
    if (!g_ready) return;
    const int I = drdc_model_input_size(&g_m, 1), n = 5;
    const char *dir = test_tmpdir("wiring_calib");
    drdc_sample_list val = {calloc(n, sizeof(drdc_sample)), n};
    char paths[5][1200];
    dt_tensor imgs = images(n, I, 31);
    float *px = test_host_copy(imgs);
    for (int i = 0; px && i < n; i++) {
        drdc_image im = {0};
        CHECK_OK(drdc_image_alloc(&im, I, I, 3));
        for (int c = 0; c < 3; c++)   /* CHW -> HWC */
            for (int p = 0; p < I * I; p++) im.data[p * 3 + c] = px[((size_t)i * 3 + c) * I * I + p];
        snprintf(paths[i], sizeof paths[i], "%s/%d.png", dir, i);
        CHECK_OK(drdc_image_write_png(paths[i], &im));
        drdc_image_free(&im);
        val.items[i] = (drdc_sample){paths[i], NULL, "good", 0, 0};
    }
    /* the images as the loader decodes them (8-bit PNG), through the model one at a time */
    drdc_stats_acc acc_b, acc_d;
    drdc_stats_reset(&acc_b);
    drdc_stats_reset(&acc_d);
    for (int i = 0; i < n; i++) {
        drdc_image im = {0};
        CHECK_OK(drdc_image_load_rgb(paths[i], &im));
        dt_tensor host = NULL, chw = NULL, b = NULL, d = NULL;
        CHECK_OK(dt_from_host(&host, im.data, DT_F32, (const int64_t[4]){1, I, I, 3}, 4, CPU));
        CHECK_OK(dt_permute(&chw, host, (const int64_t[4]){0, 3, 1, 2}, 4));
        CHECK_OK(drdc_model_drdc(NULL, NULL, &b, NULL, &d, &g_m, chw, 1, NULL));
        CHECK_OK(drdc_stats_add(&acc_b, b));
        CHECK_OK(drdc_stats_add(&acc_d, d));
        dt_free(host), dt_free(chw), dt_free(b), dt_free(d);
        drdc_image_free(&im);
    }
    drdc_norm_stats nb, nd;
    CHECK_OK(drdc_stats_get(&acc_b, &nb));
    CHECK_OK(drdc_stats_get(&acc_d, &nd));
    drdc_model_stats saved = g_m.stats;
    CHECK_OK(drdc_calibrate(&g_m, &val, NULL, 0, 1));
    const drdc_model_stats *s = &g_m.stats;
    printf("  calibration: base %.6g/%.6g (maps %.6g/%.6g), diffusion %.6g/%.6g (maps %.6g/%.6g)\n",
           s->fuse_base_mean, s->fuse_base_std, nb.mean, nb.std, s->diff_mean, s->diff_std, nd.mean, nd.std);
    CHECK(fabs(s->fuse_base_mean - nb.mean) < 1e-5 * fabs(nb.mean) && fabs(s->fuse_base_std - nb.std) < 1e-4 * nb.std);
    CHECK(fabs(s->diff_mean - nd.mean) < 1e-5 * fabs(nd.mean) && fabs(s->diff_std - nd.std) < 1e-4 * nd.std);
    CHECK(fabs(nb.mean - nd.mean) > 0.1 * fabs(nd.mean));   /* the two maps are told apart */
    CHECK(s->drdc_ready && s->n_val_images == n);
    g_m.stats = saved;
    free(px);
    free(val.items);
    dt_free(imgs);
}

int main(void) {
    setup();
    RUN(test_refiner_and_base_inputs);
    RUN(test_fusion_takes_each_map_with_its_statistics);
    RUN(test_maps_do_not_depend_on_the_batch);
    RUN(test_bf16_and_batched_refiner_stay_close);
    RUN(test_calibration_stores_each_maps_statistics);
    drdc_model_free(&g_m);
    return test_summary();
}
