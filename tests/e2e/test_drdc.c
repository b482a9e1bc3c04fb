/* test_drdc.c: the whole DRDC pipeline on tiny synthetic data: `drdc train` runs both stages,
 * `eval --method both` prints base and DRDC side by side, `infer` writes a heatmap of the
 * image's own size with a JSON verdict, and a refiner stage resumed mid-way ends with exactly
 * the weights of an uninterrupted one. */
#include "testlib.h"
#include "drdc/core/fsutil.h"
#include "drdc/formats/image.h"
#include "drdc/model/model.h"
#include "drdc/core/rng.h"
#include "drdc/formats/safetensors.h"
#include "drdc/model/train.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static char g_tmp[1024], g_data[1200];

static const char *SETS =
    "--set data.categories=weave,disc --set base.epochs=1 --set base.batch=4 --set data.val_fraction=0.25 "
    "--set refiner.batch=2 --set infer.batch=4 --set infer.steps=2 --set train.checkpoint_every=2";

static int train(const char *name, const char *extra) {
    return test_system("cd '%s' && '%s' train --config tiny.json --data-root '%s' --out 'runs/%s' --threads 2 %s %s "
                       ">'%s.log' 2>&1", g_tmp, test_drdc_bin(), g_data, name, SETS, extra, name);
}

static cJSON *read_json(const char *fmt, const char *arg) {
    char path[1400], *text = NULL;
    size_t n;
    snprintf(path, sizeof path, fmt, arg);
    if (drdc_read_file(path, &text, &n)) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    return j;
}

/* Opens runs/<run>/model.safetensors of the test folder (NULL on failure, CHECKed). */
static drdc_st_file *open_run_model(const char *run) {
    char path[1400];
    snprintf(path, sizeof path, "%s/runs/%s/model.safetensors", g_tmp, run);
    drdc_st_file *f = NULL;
    CHECK_OK(drdc_st_open(&f, path));
    return f;
}

static void test_train_both_stages(void) {
    CHECK(train("full", "--set refiner.steps=4") == 0);
    drdc_st_file *f = open_run_model("full");
    if (!f) return;
    CHECK(strcmp(drdc_st_meta(f, "refiner_steps"), "4") == 0);
    CHECK(drdc_st_find(f, "refiner.input_blocks.0.0.weight") != NULL);
    cJSON *stats = cJSON_Parse(drdc_st_meta(f, "stats"));
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(stats, "drdc_ready")));
    CHECK(cJSON_GetObjectItem(stats, "diff_std")->valuedouble > 0);
    cJSON_Delete(stats);
    drdc_st_close(f);
}

static void test_eval_both_methods(void) {
    int rc = test_system("cd '%s' && '%s' eval --data-root '%s' --json both.json >eval.log 2>&1", g_tmp,
                         test_drdc_bin(), g_data);
    CHECK(rc == 0);
    if (rc) test_system("cat '%s/eval.log'", g_tmp);
    /* base and drdc side by side in every table */
    CHECK(test_system("grep -A3 'Pixel AUROC' '%s/eval.log' | grep -q '^base' && grep -A3 'Pixel AUROC' '%s/eval.log' "
                      "| grep -q '^drdc'", g_tmp, g_tmp) == 0);
    cJSON *j = read_json("%s/both.json", g_tmp);
    cJSON *methods = cJSON_GetObjectItem(j, "methods");
    CHECK(cJSON_GetObjectItem(methods, "base") != NULL && cJSON_GetObjectItem(methods, "drdc") != NULL);
    cJSON_Delete(j);
}

static void test_infer_heatmap_has_image_size(void) {
    /* a 96x80 image (not the training size): the mask comes back at 96x80, the heatmap and overlay
     * enlarged by whole pixels to at least 256 px (384x320) */
    char img[1400], heat[1400], json[1400], mask[1400], over[1400];
    snprintf(img, sizeof img, "%s/odd.png", g_tmp);
    snprintf(heat, sizeof heat, "%s/odd_heat.png", g_tmp);
    snprintf(json, sizeof json, "%s/odd.json", g_tmp);
    snprintf(mask, sizeof mask, "%s/odd_mask.png", g_tmp);
    snprintf(over, sizeof over, "%s/odd_over.png", g_tmp);
    drdc_image src = {0}, odd = {0};
    char first[1400];
    snprintf(first, sizeof first, "%s/disc/test/good/000.png", g_data);
    CHECK_OK(drdc_image_load_rgb(first, &src));
    CHECK_OK(drdc_image_resize(&src, 96, 80, &odd));
    CHECK_OK(drdc_image_write_png(img, &odd));
    drdc_image_free(&src);
    drdc_image_free(&odd);
    int rc = test_system("cd '%s' && '%s' infer --image '%s' --out '%s' --json '%s' --mask '%s' --overlay '%s' "
                         ">infer.log 2>&1", g_tmp, test_drdc_bin(), img, heat, json, mask, over);
    CHECK(rc == 0);
    if (rc) test_system("cat '%s/infer.log'", g_tmp);
    int w = 0, h = 0;
    CHECK_OK(drdc_image_probe(heat, &w, &h));
    CHECK(w == 384 && h == 320);
    CHECK_OK(drdc_image_probe(mask, &w, &h));
    CHECK(w == 96 && h == 80);
    CHECK_OK(drdc_image_probe(over, &w, &h));
    CHECK(w == 384 && h > 320);   /* the caption band on top */
    cJSON *j = read_json("%s", json);
    CHECK(strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "method")), "drdc") == 0);
    const char *verdict = cJSON_GetStringValue(cJSON_GetObjectItem(j, "verdict"));
    double score = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "score"));
    double thr = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "threshold"));
    CHECK(verdict && strcmp(verdict, score >= thr ? "anomalous" : "normal") == 0);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "timings_ms"), "refiner") != NULL);
    CHECK(cJSON_IsNumber(cJSON_GetObjectItem(j, "pixel_threshold")));
    CHECK(cJSON_IsArray(cJSON_GetObjectItem(j, "regions")));
    cJSON_Delete(j);
}

static void test_infer_folder_writes_scores(void) {
    char dir[1400];
    snprintf(dir, sizeof dir, "%s/weave/test/good", g_data);
    int rc = test_system("cd '%s' && '%s' infer --images '%s' --out-dir out --method base >folder.log 2>&1", g_tmp,
                         test_drdc_bin(), dir);
    CHECK(rc == 0);
    CHECK(test_system("test -f '%s/out/000.png.heat.png' && test -f '%s/out/000.png.overlay.png'", g_tmp, g_tmp) == 0);
    CHECK(test_system("head -1 '%s/out/scores.csv' | grep -q '^path,score,threshold,verdict,defect_pixels,regions,error'",
                      g_tmp) == 0);
    /* a header, then one row per image of the folder */
    CHECK(test_system("test $(wc -l < '%s/out/scores.csv') -eq $(( $(ls '%s' | wc -l) + 1 ))", g_tmp, dir) == 0);
}

static void test_refiner_resume_matches(void) {
    CHECK(train("part", "--set refiner.steps=2") == 0);
    CHECK(train("part", "--resume --set refiner.steps=4") == 0);
    char a[1400], b[1400];
    snprintf(a, sizeof a, "%s/runs/full/model.safetensors", g_tmp);
    snprintf(b, sizeof b, "%s/runs/part/model.safetensors", g_tmp);
    drdc_st_file *fa = NULL, *fb = NULL;
    CHECK_OK(drdc_st_open(&fa, a));
    CHECK_OK(drdc_st_open(&fb, b));
    int compared = 0;
    for (int i = 0; fa && fb && i < drdc_st_count(fa); i++) {
        const drdc_st_tensor *ta = drdc_st_at(fa, i), *tb = drdc_st_find(fb, ta->name);
        if (strncmp(ta->name, "refiner.", 8) != 0) continue;
        compared++;
        CHECK(tb && tb->nbytes == ta->nbytes && memcmp(ta->data, tb->data, ta->nbytes) == 0);
    }
    CHECK(compared > 10);
    drdc_st_close(fa);
    drdc_st_close(fb);
}

static void test_refiner_design_free_until_trained(void) {
    /* base first, then the refiner with another design: accepted while the refiner has no steps */
    CHECK(train("later", "--stage base --set refiner.steps=2") == 0);
    CHECK(train("later", "--stage refiner --set refiner.steps=2 --set refiner.res_blocks=2") == 0);
    drdc_st_file *f = open_run_model("later");
    /* with 2 res blocks per level, input block 2 is a ResBlock (with 1 it would be a downsample) */
    CHECK(f && drdc_st_find(f, "refiner.input_blocks.2.0.in_layers.0.weight") != NULL);
    drdc_st_close(f);
    /* once trained, the design is fixed: a resume that changes it is refused, naming the key */
    CHECK(train("full", "--resume --set refiner.steps=5 --set refiner.res_blocks=2") == 2);
    CHECK(test_system("grep -q 'refiner.res_blocks' '%s/full.log'", g_tmp) == 0);
}

/* A model's maps dumped with --dump-maps are at each image's original size (96 px images here,
 * maps of the 64 px model), so `eval --maps` reads them back and gives the same pixel metrics. */
static void test_dump_maps_round_trip(void) {
    int rc = test_system("cd '%s' && '%s' synth --out data96 --categories 4 --train 1 --test 4 --size 96 --seed 5 "
                         ">dump.log 2>&1 && '%s' eval --data-root data96 --method base --dump-maps dumped --json m.json "
                         ">>dump.log 2>&1 && '%s' eval --maps dumped --dataset mvtec --data-root data96 "
                         "--categories weave,disc --json d.json >>dump.log 2>&1",
                         g_tmp, test_drdc_bin(), test_drdc_bin(), test_drdc_bin());
    CHECK(rc == 0);
    if (rc) test_system("cat '%s/dump.log'", g_tmp);
    cJSON *a = read_json("%s/m.json", g_tmp), *b = read_json("%s/d.json", g_tmp);
    cJSON *ma = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(a, "methods"), "base"), "mean");
    cJSON *mb = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(b, "methods"), "maps"), "mean");
    const char *keys[] = {"pixel_auroc", "aupro", "pixel_ap"};
    for (int k = 0; k < 3; k++) {
        cJSON *x = cJSON_GetObjectItem(ma, keys[k]), *y = cJSON_GetObjectItem(mb, keys[k]);
        CHECK(cJSON_IsNumber(x) && cJSON_IsNumber(y));
        if (cJSON_IsNumber(x) && cJSON_IsNumber(y)) CHECK(fabs(x->valuedouble - y->valuedouble) < 1e-9);
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
}

/* The ablation without model conditioning: the U-Net takes x_t alone (3 input channels), trains,
 * and its model evaluates with DRDC. */
static void test_unconditioned_refiner(void) {
    CHECK(train("uncond", "--set refiner.steps=2 --set refiner.model_conditioning=false") == 0);
    drdc_st_file *f = open_run_model("uncond");
    const drdc_st_tensor *w = f ? drdc_st_find(f, "refiner.input_blocks.0.0.weight") : NULL;
    CHECK(w && w->ndim == 4 && w->shape[1] == 3);
    drdc_st_close(f);
    int rc = test_system("cd '%s' && '%s' eval --model runs/uncond/model.safetensors --data-root '%s' --method drdc "
                         ">uncond_eval.log 2>&1", g_tmp, test_drdc_bin(), g_data);
    CHECK(rc == 0);
    if (rc) test_system("cat '%s/uncond_eval.log'", g_tmp);
}

/* eval --set changes inference keys and recalibrates; --every evaluates a subset; --method all
 * adds the diffusion map alone; keys that describe the trained networks, and invalid values, are
 * usage errors naming the key. */
static void test_eval_overrides(void) {
    int rc = test_system("cd '%s' && '%s' eval --data-root '%s' --method all --set infer.steps=1 --set infer.alpha=0.5 "
                         "--set infer.base_scales=1,0.5 --calib-images 2 --every 2 --vis vis >set.log 2>&1", g_tmp,
                         test_drdc_bin(), g_data);
    CHECK(rc == 0);
    if (rc) test_system("cat '%s/set.log'", g_tmp);
    CHECK(test_system("grep -q 'recalibrated with the --set values on 2 validation images' '%s/set.log'", g_tmp) == 0);
    CHECK(test_system("grep -q -- '--every 2: a subset' '%s/set.log'", g_tmp) == 0);
    CHECK(test_system("grep -A4 'Pixel AUROC' '%s/set.log' | grep -q '^diffusion'", g_tmp) == 0);
    /* a panel per image: the image with its truth outlined and the three maps side by side, each
     * 256 px high (the 64 px images enlarged) under title strips and a caption band */
    char vis[1400];
    snprintf(vis, sizeof vis, "%s/vis/weave/good/000.png", g_tmp);
    int w = 0, h = 0;
    CHECK_OK(drdc_image_probe(vis, &w, &h));
    CHECK(w >= 4 * 256 && w < 5 * 256 && h > 256);
    rc = test_system("cd '%s' && '%s' eval --data-root '%s' --set base.hidden=8 >bad1.log 2>&1", g_tmp, test_drdc_bin(),
                     g_data);
    CHECK(rc == 2);
    CHECK(test_system("grep -q 'base.hidden=8: only infer' '%s/bad1.log'", g_tmp) == 0);
    rc = test_system("cd '%s' && '%s' eval --data-root '%s' --set infer.filter=4 >bad2.log 2>&1", g_tmp, test_drdc_bin(),
                     g_data);
    CHECK(rc == 2);
    CHECK(test_system("grep -q 'infer.filter 4 must be odd' '%s/bad2.log'", g_tmp) == 0);
}

/* infer.base_scales (Table 5's multi-scale base map): [1] is UniAD's map; [0.5] is
 * Up(||Down(f) - Down(f^)||) with Down = 2x2 area, checked against a host computation; [1, 0.5]
 * is their mean. */
static void test_base_scales(void) {
    char path[1400];
    snprintf(path, sizeof path, "%s/runs/full/model.safetensors", g_tmp);
    drdc_model m;
    const dt_device cpu = {DT_CPU, 0};
    if (drdc_model_load(&m, path, cpu)) {
        CHECK(!"model loads");
        return;
    }
    const int S = m.cfg.data.image_size, B = 2;
    float *px = malloc(sizeof(float) * B * 3 * S * S);
    for (int i = 0; px && i < B * 3 * S * S; i++) px[i] = (float)((i * 7919) % 1000) / 999.0f;
    dt_tensor img = NULL, maps[3] = {NULL, NULL, NULL}, scores[3] = {NULL, NULL, NULL};
    CHECK_OK(dt_from_host(&img, px, DT_F32, (const int64_t[4]){B, 3, S, S}, 4, cpu));
    const long before = dt_live_handles();
    const char *sets[3] = {"infer.base_scales=1", "infer.base_scales=0.5", "infer.base_scales=1,0.5"};
    for (int k = 0; k < 3; k++) {
        CHECK_OK(drdc_config_set(&m.cfg, sets[k]));
        CHECK_OK(drdc_model_base(&maps[k], &scores[k], &m, img));
    }
    CHECK(dt_live_handles() == before + 6);
    /* host reference for scale 0.5 */
    dt_tensor feats = NULL, rec = NULL, low = NULL, up = NULL;
    CHECK_OK(drdc_backbone_features(&feats, &m.backbone, img));
    CHECK_OK(drdc_base_forward(&rec, &m.base, feats, 0, NULL));
    int64_t fs[4] = {0};
    CHECK_OK(dt_shape(fs, 4, feats));
    const int64_t C = fs[1], h = fs[2], w = fs[3], h2 = h / 2, w2 = w / 2;
    float *f = test_host_copy(feats), *r = test_host_copy(rec), *l = malloc(sizeof(float) * B * h2 * w2);
    for (int64_t b = 0; f && r && l && b < B; b++)
        for (int64_t y = 0; y < h2; y++)
            for (int64_t x = 0; x < w2; x++) {
                double ss = 0;
                for (int64_t c = 0; c < C; c++) {
                    double d = 0;
                    for (int dy = 0; dy < 2; dy++)
                        for (int dx = 0; dx < 2; dx++) {
                            size_t o = (size_t)(((b * C + c) * h + 2 * y + dy) * w + 2 * x + dx);
                            d += (double)f[o] - r[o];
                        }
                    ss += (d / 4) * (d / 4);
                }
                l[(b * h2 + y) * w2 + x] = (float)sqrt(ss);
            }
    CHECK_OK(dt_from_host(&low, l, DT_F32, (const int64_t[4]){B, 1, h2, w2}, 4, cpu));
    CHECK_OK(dt_interpolate(&up, low, S, S, DT_INTERP_BILINEAR_AC));
    float *m1 = test_host_copy(maps[0]), *m05 = test_host_copy(maps[1]), *mm = test_host_copy(maps[2]);
    float *ref = test_host_copy(up);
    double d_ref = 0, d_mean = 0, d_scales = 0;
    for (int64_t i = 0; m1 && m05 && mm && ref && i < (int64_t)B * S * S; i++) {
        d_ref = fmax(d_ref, fabs((double)m05[i] - ref[i]));
        d_mean = fmax(d_mean, fabs((double)mm[i] - 0.5 * ((double)m1[i] + m05[i])));
        d_scales = fmax(d_scales, fabs((double)m1[i] - m05[i]));
    }
    printf("  base_scales: |[0.5] - host| %.3e, |[1,0.5] - mean| %.3e, |[1] - [0.5]| %.3e (features %lldx%lld)\n",
           d_ref, d_mean, d_scales, (long long)h, (long long)w);
    CHECK(d_ref < 1e-4 && d_mean < 1e-5 && d_scales > 1e-3);
    free(px); free(f); free(r); free(l); free(m1); free(m05); free(mm); free(ref);
    dt_free(feats); dt_free(rec); dt_free(low); dt_free(up); dt_free(img);
    for (int k = 0; k < 3; k++) {
        dt_free(maps[k]);
        dt_free(scores[k]);
    }
    drdc_model_free(&m);
}

/* A model whose refiner never trained: infer and eval keep drdc as their default but say so and fall
 * back to the base method with a warning; asking for drdc explicitly is an input error. DRDC
 * models report the inference settings they use (the start of the reverse process). */
static void test_untrained_refiner_falls_back_to_base(void) {
    CHECK(train("baseonly", "--stage base") == 0);
    char img[1400];
    snprintf(img, sizeof img, "%s/disc/test/good/000.png", g_data);
    int rc = test_system("cd '%s' && '%s' infer --model runs/baseonly/model.safetensors --image '%s' --json bo.json "
                         ">bo_infer.log 2>&1", g_tmp, test_drdc_bin(), img);
    CHECK(rc == 0);
    CHECK(test_system("grep -q 'warning: .*no trained diffusion refiner.*using --method base' '%s/bo_infer.log'", g_tmp) == 0);
    cJSON *j = read_json("%s/bo.json", g_tmp);
    CHECK(j && strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "method")), "base") == 0);
    cJSON_Delete(j);
    rc = test_system("cd '%s' && '%s' eval --model runs/baseonly/model.safetensors --data-root '%s' --json bo_eval.json "
                     ">bo_eval.log 2>&1", g_tmp, test_drdc_bin(), g_data);
    CHECK(rc == 0);
    CHECK(test_system("grep -q 'warning: .*no trained diffusion refiner.*base method only' '%s/bo_eval.log'", g_tmp) == 0);
    j = read_json("%s/bo_eval.json", g_tmp);
    cJSON *methods = cJSON_GetObjectItem(j, "methods");
    CHECK(cJSON_GetObjectItem(methods, "base") && !cJSON_GetObjectItem(methods, "drdc"));
    cJSON_Delete(j);
    rc = test_system("cd '%s' && '%s' infer --model runs/baseonly/model.safetensors --image '%s' --json bo2.json "
                     "--method drdc >bo_drdc.log 2>&1", g_tmp, test_drdc_bin(), img);
    CHECK(rc == 2);
    /* a DRDC model says how it runs: the start, in the eval output, the eval JSON and the infer JSON */
    CHECK(test_system("grep -q 'drdc inference: start from the image' '%s/eval.log'", g_tmp) == 0);
    j = read_json("%s/both.json", g_tmp);
    cJSON *start = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "config"), "infer");
    CHECK(start && strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(start, "start")), "image") == 0);
    cJSON_Delete(j);
    j = read_json("%s/odd.json", g_tmp);
    CHECK(j && strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "drdc"), "start")), "image") == 0);
    cJSON_Delete(j);
}

/* Largest |ema - (d * prev + (1 - d) * live)| over every refiner tensor: the model file's refiner.*
 * (the EMA) against the previous EMA (a U-Net's params, or the "refiner." tensors of prev_file) and
 * the checkpoint's refiner_live.* (the weights after the step). Also the largest |live - prev|, so a
 * test can tell that the step moved the weights. */
static double ema_law_error(const drdc_st_file *model, const drdc_st_file *ckpt, const drdc_params *prev_params,
                            const drdc_st_file *prev_file, double d, double *moved) {
    double worst = 0;
    *moved = 0;
    int n = prev_params ? prev_params->n : 0, count = 0;
    for (int i = 0; i < drdc_st_count(model); i++) {
        const drdc_st_tensor *e = drdc_st_at(model, i);
        if (strncmp(e->name, "refiner.", 8) != 0) continue;
        char live_name[300];
        snprintf(live_name, sizeof live_name, "refiner_live.%s", e->name + 8);
        const drdc_st_tensor *l = drdc_st_find(ckpt, live_name), *p = prev_file ? drdc_st_find(prev_file, e->name) : NULL;
        float *pv = NULL;
        if (prev_params) {
            for (int k = 0; k < n; k++)
                if (strcmp(prev_params->names[k], e->name + 8) == 0) pv = test_host_copy(prev_params->tensors[k]);
        } else if (p) {
            pv = test_st_floats(p);
        }
        float *ev = test_st_floats(e), *lv = l ? test_st_floats(l) : NULL;
        if (!pv || !ev || !lv) {
            CHECK(!"every refiner tensor has its live and previous value");
            free(pv), free(ev), free(lv);
            return INFINITY;
        }
        for (int64_t j = 0; j < e->numel; j++) {
            double want = d * pv[j] + (1 - d) * lv[j];
            worst = fmax(worst, fabs(ev[j] - want) / fmax(1.0, fabs(want)));
            *moved = fmax(*moved, fabs((double)lv[j] - pv[j]));
        }
        count++;
        free(pv), free(ev), free(lv);
    }
    CHECK(count > 10);
    return worst;
}

/* The refiner's EMA (what the model file keeps for inference) is updated after every step with the
 * warm-up decay min(ema_decay, (1 + n) / (10 + n)): after step 1 it is 0.1 * initial + 0.9 * live,
 * after step 2 (2/11) * ema_1 + (9/11) * live_2. A training loop that never updates the EMA, or
 * updates it without the warm-up (0.999), fails. */
static void test_ema_warmup(void) {
    drdc_refiner_config rc = {0};
    rc.ema_decay = 0.999, rc.ema_warmup = 1;
    CHECK_NEAR(drdc_ema_decay_at(&rc, 0), 0.1, 1e-12);
    CHECK_NEAR(drdc_ema_decay_at(&rc, 1), 2.0 / 11, 1e-12);
    CHECK_NEAR(drdc_ema_decay_at(&rc, 100000), 0.999, 1e-12);
    rc.ema_warmup = 0;
    CHECK_NEAR(drdc_ema_decay_at(&rc, 0), 0.999, 1e-12);

    CHECK(train("ema", "--set refiner.steps=1") == 0);
    CHECK(test_system("cp '%s/runs/ema/model.safetensors' '%s/ema1.safetensors'", g_tmp, g_tmp) == 0);
    drdc_st_file *m1 = open_run_model("ema"), *c1 = NULL, *m2 = NULL, *c2 = NULL;
    char path[1400];
    snprintf(path, sizeof path, "%s/runs/ema/checkpoint.safetensors", g_tmp);
    CHECK_OK(drdc_st_open(&c1, path));
    if (!m1 || !c1) return;
    /* the initial U-Net: the stored refiner config and its seed stream */
    drdc_config cfg;
    drdc_config_defaults(&cfg);
    CHECK_OK(drdc_config_parse_stored(&cfg, drdc_st_meta(m1, "config"), "model config"));
    drdc_unet init;
    CHECK_OK(drdc_unet_build(&init, &cfg.refiner, (dt_device){DT_CPU, 0}, drdc_seed(cfg.train.seed, DRDC_SEED_REFINER_INIT)));
    double moved1, e1 = ema_law_error(m1, c1, &init.params, NULL, 0.1, &moved1);
    drdc_unet_free(&init);
    drdc_st_close(m1);
    drdc_st_close(c1);
    CHECK(train("ema", "--resume --set refiner.steps=2") == 0);
    snprintf(path, sizeof path, "%s/ema1.safetensors", g_tmp);
    CHECK_OK(drdc_st_open(&m1, path));
    m2 = open_run_model("ema");
    snprintf(path, sizeof path, "%s/runs/ema/checkpoint.safetensors", g_tmp);
    CHECK_OK(drdc_st_open(&c2, path));
    double moved2 = 0, e2 = m1 && m2 && c2 ? ema_law_error(m2, c2, NULL, m1, 2.0 / 11, &moved2) : INFINITY;
    printf("  EMA after step 1: max rel. error %.3g (live moved %.3g); after step 2: %.3g (moved %.3g)\n", e1, moved1,
           e2, moved2);
    CHECK(e1 < 1e-5 && e2 < 1e-5);
    CHECK(moved1 > 1e-5 && moved2 > 1e-5);   /* the steps changed the weights, so the law is tested */
    drdc_st_close(m1);
    drdc_st_close(m2);
    drdc_st_close(c2);
}

int main(void) {
    if (!test_drdc_bin()) test_skip("DRDC_BIN not set (run under ctest)");
    snprintf(g_tmp, sizeof g_tmp, "%s", test_tmpdir("drdc"));
    snprintf(g_data, sizeof g_data, "%s/data", g_tmp);
    if (test_system("'%s' synth --out '%s' --categories 4 --train 4 --test 4 --size 64 --seed 9 >/dev/null",
                    test_drdc_bin(), g_data) != 0 ||
        test_system("mkdir -p '%s/configs' && cp '%s/configs/tiny.json' '%s/configs/'", g_tmp, test_source_dir(),
                    g_tmp) != 0) {
        fprintf(stderr, "set-up failed\n");
        return 1;
    }
    RUN(test_train_both_stages);
    RUN(test_eval_both_methods);
    RUN(test_infer_heatmap_has_image_size);
    RUN(test_infer_folder_writes_scores);
    RUN(test_refiner_resume_matches);
    RUN(test_refiner_design_free_until_trained);
    RUN(test_dump_maps_round_trip);
    RUN(test_unconditioned_refiner);
    RUN(test_eval_overrides);
    RUN(test_base_scales);
    RUN(test_ema_warmup);
    RUN(test_untrained_refiner_falls_back_to_base);
    return test_summary();
}
