/* test_train.c: `drdc train` end to end on tiny synthetic data: it writes a loadable model with
 * calibrated statistics, `drdc eval --method base` evaluates it, and an interrupted run resumed
 * with --resume ends with exactly the weights of an uninterrupted run. */
#include "testlib.h"
#include "drdc/core/fsutil.h"
#include "drdc/formats/safetensors.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static char g_tmp[1024], g_data[1200];

static const char *SETS =
    "--set data.categories=weave,disc --set base.epochs=2 --set base.batch=4 --set data.val_fraction=0.25 "
    "--set train.checkpoint_every=1 --set infer.batch=4 --stage base";

/* Trains into runs/<name>; the output goes to <name>.log. */
static int train(const char *name, const char *extra) {
    return test_system("cd '%s' && '%s' train --config tiny.json --data-root '%s' --out 'runs/%s' --threads 2 %s %s "
                       ">'%s.log' 2>&1", g_tmp, test_drdc_bin(), g_data, name, SETS, extra, name);
}

/* 1 when every tensor of a and b has the same bytes. */
static int same_tensors(const char *a, const char *b) {
    drdc_st_file *fa = NULL, *fb = NULL;
    int same = drdc_st_open(&fa, a) == DRDC_OK && drdc_st_open(&fb, b) == DRDC_OK && test_st_same_tensors(fa, fb);
    drdc_st_close(fa);
    drdc_st_close(fb);
    return same;
}

static void test_train_writes_calibrated_model(void) {
    CHECK(train("full", "") == 0);
    char path[1400];
    snprintf(path, sizeof path, "%s/runs/full/model.safetensors", g_tmp);
    drdc_st_file *f = NULL;
    CHECK_OK(drdc_st_open(&f, path));
    if (!f) return;
    CHECK(strcmp(drdc_st_meta(f, "format"), "drdc-model") == 0);
    CHECK(strcmp(drdc_st_meta(f, "base_epochs"), "2") == 0);
    cJSON *stats = cJSON_Parse(drdc_st_meta(f, "stats"));
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(stats, "ready")));
    CHECK(cJSON_GetObjectItem(stats, "base_std")->valuedouble > 0);
    CHECK(cJSON_GetObjectItem(stats, "n_val_images")->valueint == 2);   /* 25% of 4 train images, 2 categories */
    cJSON_Delete(stats);
    cJSON *cfg = cJSON_Parse(drdc_st_meta(f, "config"));
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(cfg, "base"), "epochs")->valueint == 2);
    cJSON_Delete(cfg);
    CHECK(drdc_st_find(f, "base.input_proj.weight") != NULL);
    CHECK(drdc_st_find(f, "backbone.features.0.0.weight") != NULL);
    drdc_st_close(f);
    CHECK(test_system("test -L '%s/runs/latest' && test -f '%s/runs/latest/model.safetensors'", g_tmp, g_tmp) == 0);
}

static void test_eval_base_on_trained_model(void) {
    /* the user's words: no --model (runs/latest), data root from the model's config overridden */
    int rc = test_system("cd '%s' && '%s' eval --dataset mvtec --data-root '%s' --method base --json r.json "
                         ">eval.log 2>&1", g_tmp, test_drdc_bin(), g_data);
    CHECK(rc == 0);
    if (rc) test_system("cat '%s/eval.log'", g_tmp);
    CHECK(test_system("grep -q 'Pixel AUROC' '%s/eval.log'", g_tmp) == 0);
    char path[1400], *text = NULL;
    size_t n;
    snprintf(path, sizeof path, "%s/r.json", g_tmp);
    CHECK_OK(drdc_read_file(path, &text, &n));
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    cJSON *mean = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "methods"), "base"), "mean");
    double auroc = cJSON_GetNumberValue(cJSON_GetObjectItem(mean, "pixel_auroc"));
    CHECK(auroc >= 0 && auroc <= 1);
    /* the model's two categories only, not all four of the data root */
    cJSON *cats = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "methods"), "base"), "categories");
    CHECK(cJSON_GetArraySize(cats) == 2);
    cJSON_Delete(j);
    free(text);
}

static void test_resume_matches_uninterrupted(void) {
    /* one epoch, then --resume to two: the same weights as two epochs in one go */
    CHECK(train("part", "--set base.epochs=1") == 0);
    CHECK(train("part", "--resume") == 0);
    char a[1400], b[1400];
    snprintf(a, sizeof a, "%s/runs/full/model.safetensors", g_tmp);
    snprintf(b, sizeof b, "%s/runs/part/model.safetensors", g_tmp);
    CHECK(same_tensors(a, b));
}

static void test_resume_refuses_another_config(void) {
    int rc = train("part", "--resume --set base.hidden=32");
    CHECK(rc == 2);
    CHECK(test_system("grep -q 'another config' '%s/part.log'", g_tmp) == 0);
    CHECK(train("none", "--resume") == 2);
    CHECK(test_system("grep -q 'no checkpoint' '%s/none.log'", g_tmp) == 0);
}

int main(void) {
    if (!test_drdc_bin()) test_skip("DRDC_BIN not set (run under ctest)");
    snprintf(g_tmp, sizeof g_tmp, "%s", test_tmpdir("train"));
    snprintf(g_data, sizeof g_data, "%s/data", g_tmp);
    if (test_system("'%s' synth --out '%s' --categories 4 --train 4 --test 6 --size 64 --seed 5 >/dev/null",
                    test_drdc_bin(), g_data) != 0 ||
        test_system("mkdir -p '%s/configs' && cp '%s/configs/tiny.json' '%s/configs/'", g_tmp, test_source_dir(),
                    g_tmp) != 0) {
        fprintf(stderr, "set-up failed\n");
        return 1;
    }
    RUN(test_train_writes_calibrated_model);
    RUN(test_eval_base_on_trained_model);
    RUN(test_resume_matches_uninterrupted);
    RUN(test_resume_refuses_another_config);
    return test_summary();
}
