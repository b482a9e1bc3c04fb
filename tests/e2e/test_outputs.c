/* test_outputs.c: what a production line gets out of `drdc infer`, `drdc eval` and `drdc train`,
 * end to end on a tiny model trained here: outputs to standard output, through symlinks and into
 * FIFOs; a folder tree with name collisions, awkward names and a corrupt file (CSV quoting, JSON
 * Lines, skipped files and exit code 3); the threshold override and per-category thresholds; the
 * defect mask against the JSON; eval's false-reject and escape counts against a hand count of its
 * own per-image records; the report page; a training run that refuses a used folder and logs its
 * losses. */
#include "testlib.h"
#include "drdc/core/fsutil.h"
#include "drdc/formats/csv.h"
#include "drdc/formats/image.h"
#include "drdc/formats/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char g_tmp[1024], g_data[1200], g_img[1400];

static const char *SETS =
    "--set data.categories=weave,disc --set base.epochs=1 --set base.batch=4 --set data.val_fraction=0.25 "
    "--set refiner.batch=2 --set refiner.steps=3 --set infer.batch=4 --set infer.steps=2";

/* `drdc ARGS` in the test folder, output to log; its exit code (testlib). */
#define drdc(log, ...) test_drdc_in(g_tmp, (log), __VA_ARGS__)

static cJSON *read_json(const char *path) {
    char *text = NULL;
    size_t n = 0;
    char full[2048];
    snprintf(full, sizeof full, "%s%s%s", path[0] == '/' ? "" : g_tmp, path[0] == '/' ? "" : "/", path);
    if (drdc_read_file(full, &text, &n)) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    return j;
}

static const char *str(cJSON *o, const char *key) { return cJSON_GetStringValue(cJSON_GetObjectItem(o, key)); }
static double num(cJSON *o, const char *key) { return cJSON_GetNumberValue(cJSON_GetObjectItem(o, key)); }

/* --json - writes to standard output; through a symlink the target is replaced and the link stays;
 * a FIFO is written through, not replaced by a file. */
static void test_json_to_stdout_symlink_and_fifo(void) {
    int rc = drdc("stdout.json", "infer --image '%s' --json - --quiet --threads 2", g_img);
    CHECK(rc == 0);
    cJSON *j = read_json("stdout.json");
    CHECK(j && str(j, "verdict") != NULL);
    cJSON_Delete(j);
    CHECK(test_system("cd '%s' && echo old > real.json && ln -sf real.json link.json", g_tmp) == 0);
    rc = drdc("link.log", "infer --image '%s' --json link.json --threads 2", g_img);
    CHECK(rc == 0);
    CHECK(test_system("test -L '%s/link.json'", g_tmp) == 0);
    j = read_json("real.json");
    CHECK(j && str(j, "verdict") != NULL);
    cJSON_Delete(j);
    CHECK(test_system("cd '%s' && rm -f fifo && mkfifo fifo", g_tmp) == 0);
    rc = test_system("cd '%s' && (timeout 60 cat fifo > from_fifo.json &) && timeout 120 '%s' infer --image '%s' "
                     "--json fifo --threads 2 > fifo.log 2>&1 && sleep 1", g_tmp, test_drdc_bin(), g_img);
    CHECK(rc == 0);
    CHECK(test_system("test -p '%s/fifo'", g_tmp) == 0);
    j = read_json("from_fifo.json");
    CHECK(j && str(j, "verdict") != NULL);
    cJSON_Delete(j);
}

/* A folder tree: two files named 000 (png and jpg), the same name in a subfolder, a name with a
 * comma and a quote, a corrupt PNG and a text file. Every readable image is scored once with its
 * own outputs; the corrupt one is listed as an error row; the exit code is 3. */
static void test_folder_tree(void) {
    char src[1400];
    snprintf(src, sizeof src, "%s/weave/test/good/000.png", g_data);
    CHECK(test_system("cd '%s' && rm -rf tree && mkdir -p tree/sub && cp '%s' tree/000.png && cp '%s' tree/sub/000.png "
                      "&& cp '%s' 'tree/a,b\"c.png' && printf 'not an image' > tree/notes.txt && "
                      "printf '\\211PNG\\r\\n\\032\\nbroken' > tree/corrupt.png", g_tmp, src, src, src) == 0);
    char jpg[1500];
    snprintf(jpg, sizeof jpg, "%s/tree/000.jpg", g_tmp);
    /* a JPEG named like the PNG, written by Debian's python3-pil (set-up installs it) */
    int have_jpg = test_system("/usr/bin/python3 -c \"from PIL import Image; Image.open('%s').save('%s')\" 2>/dev/null",
                               src, jpg) == 0;
    if (!have_jpg) test_skip_part("python3-pil missing: the 000.png / 000.jpg collision is not tried");
    int rc = drdc("tree.log", "infer --images tree --out-dir tree_out --masks --panels --jsonl tree.jsonl --threads 2");
    CHECK(rc == 3);   /* the corrupt file could not be judged */
    if (rc != 3) test_system("cat '%s/tree.log'", g_tmp);
    CHECK(test_system("cd '%s/tree_out' && test -f 000.png.heat.png && test -f sub/000.png.heat.png && "
                      "test -f 000.png.overlay.png && test -f 000.png.mask.png && test -f 000.png.panel.png", g_tmp) == 0);
    if (have_jpg) CHECK(test_system("test -f '%s/tree_out/000.jpg.heat.png'", g_tmp) == 0);
    CHECK(test_system("grep -q 'skipped corrupt.png' '%s/tree.log'", g_tmp) == 0);
    char path[1500];
    snprintf(path, sizeof path, "%s/tree_out/scores.csv", g_tmp);
    drdc_csv csv = {0};
    CHECK_OK(drdc_csv_load(path, &csv));
    int expect = 4 + have_jpg;   /* 000.png, sub/000.png, a,b"c.png, corrupt.png (+ 000.jpg) */
    CHECK(csv.n_rows == 1 + expect);
    int quoted = 0, corrupt = 0;
    for (int r = 1; r < csv.n_rows; r++) {
        CHECK(drdc_csv_row_fields(&csv, r) == 7);
        if (strcmp(drdc_csv_field(&csv, r, 0), "a,b\"c.png") == 0) quoted = 1;
        if (strcmp(drdc_csv_field(&csv, r, 0), "corrupt.png") == 0) {
            corrupt = 1;
            CHECK(strcmp(drdc_csv_field(&csv, r, 3), "error") == 0);
            CHECK(drdc_csv_field(&csv, r, 6)[0] != '\0');   /* says why */
        }
    }
    CHECK(quoted && corrupt);
    drdc_csv_free(&csv);
    /* JSON Lines: one object per image, the corrupt one with verdict error */
    snprintf(path, sizeof path, "%s/tree.jsonl", g_tmp);
    char *text = NULL;
    size_t n = 0;
    CHECK_OK(drdc_read_file(path, &text, &n));
    int lines = 0, errors = 0;
    for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        CHECK(o != NULL);
        lines++;
        errors += o && strcmp(str(o, "verdict"), "error") == 0;
        cJSON_Delete(o);
    }
    free(text);
    CHECK(lines == expect && errors == 1);
}

/* The mask PNG has the image's size and as many set pixels as the JSON's defect_pixels, which is
 * the sum of its regions' areas; --threshold moves the verdict; --category uses that category's
 * own calibrated threshold, as stored in the model. */
static void test_mask_threshold_and_category(void) {
    int rc = drdc("mask.log", "infer --image '%s' --mask m.png --json m.json --threads 2", g_img);
    CHECK(rc == 0);
    cJSON *j = read_json("m.json");
    drdc_image mask = {0}, img = {0};
    char path[1500];
    snprintf(path, sizeof path, "%s/m.png", g_tmp);
    CHECK_OK(drdc_image_load_rgb(path, &mask));
    CHECK_OK(drdc_image_load_rgb(g_img, &img));
    CHECK(mask.w == img.w && mask.h == img.h);
    long set = 0;
    for (size_t i = 0; i < (size_t)mask.w * mask.h; i++) set += mask.data[i * 3] > 0.5f;
    cJSON *regions = cJSON_GetObjectItem(j, "regions"), *g;
    double area = 0;
    cJSON_ArrayForEach(g, regions) area += num(g, "area");
    CHECK(j && (double)set == num(j, "defect_pixels") && area == set);
    cJSON_Delete(j);
    drdc_image_free(&mask);
    drdc_image_free(&img);

    rc = drdc("thr_hi.log", "infer --image '%s' --json hi.json --threshold 1e9 --threads 2", g_img);
    CHECK(rc == 0);
    rc = drdc("thr_lo.log", "infer --image '%s' --json lo.json --threshold -1e9 --threads 2", g_img);
    CHECK(rc == 0);
    cJSON *hi = read_json("hi.json"), *lo = read_json("lo.json");
    CHECK(hi && strcmp(str(hi, "verdict"), "normal") == 0 && strcmp(str(hi, "threshold_scope"), "--threshold") == 0);
    CHECK(lo && strcmp(str(lo, "verdict"), "anomalous") == 0 && num(lo, "threshold") == -1e9);
    cJSON_Delete(hi);
    cJSON_Delete(lo);

    /* the model's own per-category thresholds */
    snprintf(path, sizeof path, "%s/runs/out/model.safetensors", g_tmp);
    drdc_st_file *f = NULL;
    CHECK_OK(drdc_st_open(&f, path));
    cJSON *stats = f ? cJSON_Parse(drdc_st_meta(f, "stats")) : NULL, *c;
    double weave = NAN, global = cJSON_GetNumberValue(cJSON_GetObjectItem(stats, "drdc_threshold"));
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(stats, "categories")) {
        if (strcmp(str(c, "name"), "weave") == 0) weave = num(c, "drdc_threshold");
    }
    cJSON_Delete(stats);
    drdc_st_close(f);
    CHECK(isfinite(weave) && isfinite(global));
    rc = drdc("cat.log", "infer --image '%s' --json cat.json --category weave --threads 2", g_img);
    CHECK(rc == 0);
    cJSON *cj = read_json("cat.json");
    CHECK(cj && strcmp(str(cj, "threshold_scope"), "weave") == 0 && fabs(num(cj, "threshold") - weave) < 1e-9);
    cJSON_Delete(cj);
    rc = drdc("cat_none.log", "infer --image '%s' --json cat2.json --category nosuch --threads 2", g_img);
    CHECK(rc == 0);
    CHECK(test_system("grep -q \"no thresholds of its own for category 'nosuch'\" '%s/cat_none.log'", g_tmp) == 0);
    cj = read_json("cat2.json");
    CHECK(cj && fabs(num(cj, "threshold") - global) < 1e-9);
    cJSON_Delete(cj);
}

/* eval's false rejects and escapes equal a count, by category, of its own per-image verdicts; the
 * per-image verdicts follow the per-category thresholds in its rates. A report page is written. */
static void test_eval_rates_and_report(void) {
    int rc = drdc("eval.log", "eval --data-root '%s' --json eval.json --report report --threads 2", g_data);
    CHECK(rc == 0);
    if (rc) test_system("cat '%s/eval.log'", g_tmp);
    cJSON *j = read_json("eval.json");
    cJSON *rates = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "rates"), "drdc");
    const char *cats[2] = {"weave", "disc"};
    int tot_fr = 0, tot_es = 0, checked = 0;
    for (int k = 0; k < 2; k++) {
        cJSON *q = cJSON_GetObjectItem(rates, cats[k]), *img;
        double thr = num(q, "threshold");
        int good = 0, fr = 0, def = 0, es = 0;
        cJSON_ArrayForEach(img, cJSON_GetObjectItem(j, "images")) {
            if (strcmp(str(img, "category"), cats[k]) != 0) continue;
            double s = num(cJSON_GetObjectItem(img, "scores"), "drdc");
            const char *v = str(cJSON_GetObjectItem(img, "verdicts"), "drdc");
            CHECK(v && strcmp(v, s >= thr ? "anomalous" : "normal") == 0);
            if (num(img, "label") == 0) {
                good++;
                fr += s >= thr;
            } else {
                def++;
                es += s < thr;
            }
            checked++;
        }
        CHECK(num(q, "good") == good && num(q, "false_rejects") == fr && num(q, "defective") == def &&
              num(q, "escapes") == es);
        tot_fr += fr, tot_es += es;
    }
    cJSON *all = cJSON_GetObjectItem(rates, "all");
    CHECK(checked > 0 && num(all, "false_rejects") == tot_fr && num(all, "escapes") == tot_es);
    cJSON_Delete(j);
    CHECK(test_system("grep -q '<!DOCTYPE html>' '%s/report/index.html' && ls '%s/report/panels/weave' >/dev/null",
                      g_tmp, g_tmp) == 0);
}

/* A report of a thinned test set (--every) says so in its header, as the tables on stdout do. */
static void test_report_says_subset(void) {
    int rc = drdc("every.log", "eval --data-root '%s' --method base --every 2 --report report_every --threads 2", g_data);
    CHECK(rc == 0);
    CHECK(test_system("grep -q -- '--every 2: a subset' '%s/report_every/index.html'", g_tmp) == 0);
    CHECK(test_system("grep -q -- '--every 2: a subset' '%s/report/index.html'", g_tmp) != 0);   /* the full run's does not */
}

/* A folder that holds a run is refused without --resume or --force; --force replaces it; the loss
 * log has a header and one row per optimisation step. */
static void test_train_hygiene(void) {
    int rc = drdc("again.log", "train --config tiny.json --data-root '%s' --out runs/out --threads 2 %s", g_data, SETS);
    CHECK(rc == 2);
    CHECK(test_system("grep -q 'already holds a training run' '%s/again.log'", g_tmp) == 0);
    CHECK(test_system("head -1 '%s/runs/out/loss.csv' | grep -q '^stage,step,epoch,loss,lr,images_per_s$'", g_tmp) == 0);
    /* 1 base epoch of 6 images at batch 4 = 2 steps, then 3 refiner steps */
    CHECK(test_system("test $(grep -c '^base,' '%s/runs/out/loss.csv') -eq 2 && "
                      "test $(grep -c '^refiner,' '%s/runs/out/loss.csv') -eq 3", g_tmp, g_tmp) == 0);
    rc = drdc("force.log", "train --config tiny.json --data-root '%s' --out runs/forced --threads 2 --stage base %s",
              g_data, SETS);
    CHECK(rc == 0);
    rc = drdc("force2.log", "train --config tiny.json --data-root '%s' --out runs/forced --threads 2 --stage base "
              "--force %s", g_data, SETS);
    CHECK(rc == 0);
    /* the stored data root is absolute, so eval finds it from another folder */
    rc = test_system("cd / && '%s' eval --model '%s/runs/out/model.safetensors' --method base --every 3 "
                     "> '%s/elsewhere.log' 2>&1", test_drdc_bin(), g_tmp, g_tmp);
    CHECK(rc == 0);
}

int main(void) {
    if (!test_drdc_bin()) test_skip("DRDC_BIN not set (run under ctest)");
    snprintf(g_tmp, sizeof g_tmp, "%s", test_tmpdir("outputs"));
    snprintf(g_data, sizeof g_data, "%s/data", g_tmp);
    snprintf(g_img, sizeof g_img, "%s/disc/test/good/000.png", g_data);
    if (test_system("'%s' synth --out '%s' --categories 4 --train 4 --test 4 --size 64 --seed 11 >/dev/null",
                    test_drdc_bin(), g_data) != 0 ||
        test_system("mkdir -p '%s/configs' && cp '%s/configs/tiny.json' '%s/configs/'", g_tmp, test_source_dir(),
                    g_tmp) != 0 ||
        drdc("train.log", "train --config tiny.json --data-root '%s' --out runs/out --threads 2 %s", g_data, SETS) != 0) {
        fprintf(stderr, "set-up failed\n");
        test_system("cat '%s/train.log'", g_tmp);
        return 1;
    }
    RUN(test_json_to_stdout_symlink_and_fifo);
    RUN(test_folder_tree);
    RUN(test_mask_threshold_and_category);
    RUN(test_eval_rates_and_report);
    RUN(test_report_says_subset);
    RUN(test_train_hygiene);
    return test_summary();
}
