/* test_eval.c: `drdc eval --maps` end to end on `drdc synth` data: maps equal to the ground
 * truth score 1.0 on every metric; random maps score about 0.5 AUROC; a missing or misshapen
 * map is an error naming the file; JSON and CSV have the documented layout. */
#include "testlib.h"
#include "drdc/core/rng.h"
#include "drdc/data/dataset.h"
#include "drdc/model/eval.h"
#include "drdc/core/fsutil.h"
#include "drdc/formats/image.h"
#include "drdc/formats/npy.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static char g_data[1024];

/* Writes one map per test image into dir: the truth (mode 0), uniform noise (mode 1). */
static drdc_status write_maps(const char *dir, int mode, unsigned seed) {
    drdc_dataset ds;
    drdc_status st = drdc_dataset_open(&ds, "mvtec", g_data, 0, NULL);
    if (st) return st;
    uint64_t rng = seed;
    for (int c = 0; !st && c < ds.n_categories; c++) {
        drdc_category *cat = &ds.categories[c];
        for (int i = 0; !st && i < cat->n_test; i++) {
            const drdc_sample *s = &cat->test[i];
            int w, h;
            st = drdc_image_probe(s->image_path, &w, &h);
            if (st) break;
            drdc_image m = {0};
            if (mode == 0 && s->mask_path)
                st = drdc_image_load_mask(s->mask_path, &m);
            else
                st = drdc_image_alloc(&m, w, h, 1);
            if (mode == 1)
                for (int k = 0; !st && k < w * h; k++) m.data[k] = (float)(drdc_splitmix64(&rng) >> 40) / (1 << 24);
            char path[4096], folder[4096];
            drdc_eval_map_path(path, sizeof path, dir, NULL, cat->name, s);
            snprintf(folder, sizeof folder, "%s", path);
            *strrchr(folder, '/') = 0;
            if (!st) st = drdc_mkdirs(folder);
            int64_t shape[2] = {m.h, m.w};
            if (!st) st = drdc_npy_write(path, DRDC_NPY_F32, 2, shape, m.data);
            drdc_image_free(&m);
        }
    }
    drdc_dataset_free(&ds);
    return st;
}

static cJSON *read_json(const char *path) {
    char *text;
    size_t n;
    if (drdc_read_file(path, &text, &n)) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    return j;
}

static double metric(cJSON *j, const char *category, const char *key) {
    cJSON *m = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "methods"), "maps");
    cJSON *c = strcmp(category, "mean") ? cJSON_GetObjectItem(cJSON_GetObjectItem(m, "categories"), category)
                                        : cJSON_GetObjectItem(m, "mean");
    cJSON *v = cJSON_GetObjectItem(c, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const char *KEYS[] = {"image_auroc", "pixel_auroc", "aupro", "image_ap", "pixel_ap", "image_f1max",
                             "pixel_f1max"};

static void test_truth_maps_score_one(void) {
    const char *tmp = test_tmpdir("eval_truth");
    char maps[1200], json[1200], csv[1200];
    snprintf(maps, sizeof maps, "%s/maps", tmp);
    snprintf(json, sizeof json, "%s/r.json", tmp);
    snprintf(csv, sizeof csv, "%s/r.csv", tmp);
    CHECK_OK(write_maps(maps, 0, 0));
    int rc = test_system("'%s' eval --maps '%s' --dataset mvtec --data-root '%s' --json '%s' --csv '%s' >'%s/out.txt' 2>&1",
                         test_drdc_bin(), maps, g_data, json, csv, tmp);
    CHECK(rc == 0);
    if (rc) test_system("cat '%s/out.txt'", tmp);
    cJSON *j = read_json(json);
    CHECK(j != NULL);
    const char *cats[] = {"weave", "mean"};
    for (int c = 0; j && c < 2; c++)
        for (int k = 0; k < 7; k++) CHECK_NEAR(metric(j, cats[c], KEYS[k]), 1.0, 1e-9);
    cJSON_Delete(j);
    char *text;
    size_t n;
    CHECK_OK(drdc_read_file(csv, &text, &n));
    if (text) {
        CHECK(strncmp(text, "method,category,image_auroc,pixel_auroc,aupro", 45) == 0);
        CHECK(strstr(text, "\nmaps,mean,1.000000") != NULL);
        free(text);
    }
}

static void test_random_maps_near_chance(void) {
    const char *tmp = test_tmpdir("eval_random");
    char maps[1200], json[1200];
    snprintf(maps, sizeof maps, "%s/maps", tmp);
    snprintf(json, sizeof json, "%s/r.json", tmp);
    CHECK_OK(write_maps(maps, 1, 7));
    CHECK(test_system("'%s' eval --maps '%s' --dataset mvtec --data-root '%s' --json '%s' >/dev/null 2>&1",
                      test_drdc_bin(), maps, g_data, json) == 0);
    cJSON *j = read_json(json);
    CHECK(j != NULL);
    if (j) {
        double px = metric(j, "mean", "pixel_auroc"), pro = metric(j, "mean", "aupro");
        fprintf(stderr, "random maps: pixel AUROC %.4f, AUPRO %.4f, image AUROC %.4f\n", px, pro,
                metric(j, "mean", "image_auroc"));
        CHECK(fabs(px - 0.5) < 0.02);   /* hundreds of thousands of pixels: chance within 2 points */
        CHECK(fabs(pro - 0.15) < 0.03); /* random maps: PRO ~ FPR, so AUPRO(0.3) ~ 0.045 / 0.3 = 0.15 */
        CHECK(fabs(metric(j, "mean", "image_auroc") - 0.5) < 0.3);
    }
    cJSON_Delete(j);
}

static void test_missing_and_misshapen_maps(void) {
    const char *tmp = test_tmpdir("eval_bad");
    char maps[1200];
    snprintf(maps, sizeof maps, "%s/maps", tmp);
    CHECK(test_system("'%s' eval --maps '%s' --dataset mvtec --data-root '%s' >'%s/out.txt' 2>&1", test_drdc_bin(),
                      maps, g_data, tmp) != 0);
    CHECK(test_system("grep -q 'maps/grain/good/000.npy' '%s/out.txt'", tmp) == 0);
    CHECK_OK(write_maps(maps, 0, 0));
    /* overwrite one map with a wrong size */
    char path[1400];
    snprintf(path, sizeof path, "%s/weave/good/000.npy", maps);
    float z[6] = {0};
    int64_t shape[2] = {2, 3};
    CHECK_OK(drdc_npy_write(path, DRDC_NPY_F32, 2, shape, z));
    CHECK(test_system("'%s' eval --maps '%s' --dataset mvtec --data-root '%s' >'%s/out.txt' 2>&1", test_drdc_bin(),
                      maps, g_data, tmp) == 2);
    CHECK(test_system("grep -q \"original size\" '%s/out.txt'", tmp) == 0);
}

static void test_dump_maps_and_vis(void) {
    /* --dump-maps writes the --maps layout: evaluating the dumped maps gives the same numbers */
    const char *tmp = test_tmpdir("eval_dump");
    char maps[1200];
    snprintf(maps, sizeof maps, "%s/maps", tmp);
    CHECK_OK(write_maps(maps, 1, 11));
    CHECK(test_system("'%s' eval --maps '%s' --dataset mvtec --data-root '%s' --json '%s/a.json' --dump-maps '%s/dump' "
                      "--vis '%s/vis' >/dev/null 2>&1", test_drdc_bin(), maps, g_data, tmp, tmp, tmp) == 0);
    CHECK(test_system("'%s' eval --maps '%s/dump' --dataset mvtec --data-root '%s' --json '%s/b.json' >/dev/null 2>&1",
                      test_drdc_bin(), tmp, g_data, tmp) == 0);
    CHECK(test_system("cmp -s '%s/a.json' '%s/b.json'", tmp, tmp) == 0);
    /* one labelled panel per test image: image with the truth outlined | the map, each 256 px high
     * under title strips and a caption band */
    char panel[1400];
    snprintf(panel, sizeof panel, "%s/vis/weave/good/000.png", tmp);
    int w = 0, h = 0;
    CHECK_OK(drdc_image_probe(panel, &w, &h));
    CHECK(h > 256 && w >= 2 * 256 && w < 3 * 256);
    CHECK(test_system("test $(find '%s/vis' -name '*.png' | wc -l) -eq 24", tmp) == 0);
}

int main(void) {
    if (!test_drdc_bin()) test_skip("DRDC_BIN not set (run under ctest)");
    snprintf(g_data, sizeof g_data, "%s/data", test_tmpdir("eval_data"));
    if (test_system("'%s' synth --out '%s' --categories 2 --train 4 --test 12 --size 64 --seed 3 >/dev/null",
                    test_drdc_bin(), g_data) != 0) {
        fprintf(stderr, "drdc synth failed\n");
        return 1;
    }
    RUN(test_truth_maps_score_one);
    RUN(test_random_maps_near_chance);
    RUN(test_missing_and_misshapen_maps);
    RUN(test_dump_maps_and_vis);
    return test_summary();
}
