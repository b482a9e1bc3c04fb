/* test_robustness.c: bad input through the drdc binary. One test per bad input: broken
 * images (`infer --image`, and inside a dataset for `train` and `eval`), broken datasets, broken
 * configs (`train --config`), broken or mismatched model files, a diverging loss, a full disk, and
 * the stale temporary files of a killed run. Each checks the exit code (2: the user's input is
 * wrong; 1: a runtime failure), that the message names the file or the key, and that nothing
 * partial is left behind (no half-written model, heatmap, JSON or checkpoint, no *.tmp.* file).
 * The three PNG variants that must work (16-bit, palette, gray+alpha) are built by hand here.
 * Everything runs on `drdc synth` data at 64 px with the tiny config (see docs/RELIABILITY.md). */
#define _GNU_SOURCE
#include "testlib.h"
#include "drdc/core/fsutil.h"
#include "drdc/formats/image.h"
#include "drdc/formats/safetensors.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_tmp[1024], g_cat[2][256], g_defect[256];

/* The tiny settings of every training run here (64 px, one base epoch, two refiner steps). */
static const char *SETS =
    "--set base.epochs=1 --set base.batch=4 --set data.val_fraction=0.25 --set refiner.batch=2 "
    "--set refiner.steps=2 --set infer.batch=4 --set infer.steps=2 --set train.checkpoint_every=1";
static const char *MODEL = "runs/good/model.safetensors";

/* ---- helpers ------------------------------------------------------------------------------ */

/* `drdc ARGS` in the test folder, output to log; its exit code (testlib). */
#define drdc(log, ...) test_drdc_in(g_tmp, (log), __VA_ARGS__)

/* "<test folder>/<relative path>" in one of a few rotating buffers. */
static const char *at(const char *fmt, ...) {
    static char bufs[6][2048];
    static int k;
    char rel[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof rel, fmt, ap);
    va_end(ap);
    char *b = bufs[k++ % 6];
    snprintf(b, sizeof bufs[0], "%s/%s", g_tmp, rel);
    return b;
}

/* 1 when the test folder's log contains needle (testlib). */
#define log_has(log, needle) test_log_has(g_tmp, (log), (needle))

static void show_log(const char *log) { test_system("echo '--- %s:'; tail -n 5 '%s/%s'", log, g_tmp, log); }

/* The exit code must be `want` and the output must hold both needles (NULL: none). */
#define EXPECT(log, rc, want, n1, n2)                                                              \
    do {                                                                                           \
        int e_rc = (rc), e_ok = e_rc == (want) && log_has(log, n1) && log_has(log, n2);            \
        CHECK(e_rc == (want));                                                                     \
        CHECK(log_has(log, n1));                                                                   \
        CHECK(log_has(log, n2));                                                                   \
        if (!e_ok) {                                                                               \
            fprintf(stderr, "  exit code %d (want %d), wanted \"%s\" and \"%s\"\n", e_rc, (want), \
                    tl_str(n1), tl_str(n2));                                                       \
            show_log(log);                                                                         \
        }                                                                                          \
    } while (0)

static int exists(const char *path) { return access(path, F_OK) == 0; }

/* 1 when no file under dir (recursively) has ".tmp." in its name. */
static int no_tmp_files(const char *dir) {
    return test_system("test -z \"$(find '%s' -name '*.tmp.*' 2>/dev/null)\"", dir) == 0;
}

/* 1 when the folder holds no entries (or does not exist). */
static int dir_empty(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n == 0;
}

/* 1 when both files exist and hold the same bytes. */
static int same_bytes(const char *a, const char *b) {
    char *ta = NULL, *tb = NULL;
    size_t na = 0, nb = 0;
    int same = drdc_read_file(a, &ta, &na) == DRDC_OK && drdc_read_file(b, &tb, &nb) == DRDC_OK && na == nb &&
               memcmp(ta, tb, na) == 0;
    free(ta);
    free(tb);
    return same;
}

/* The first entry (byte order) of a folder other than `skip`, into out. */
static int first_entry(const char *dir, const char *skip, char *out, size_t cap) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    out[0] = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || (skip && strcmp(e->d_name, skip) == 0)) continue;
        if (!out[0] || strcmp(e->d_name, out) < 0) snprintf(out, cap, "%s", e->d_name);
    }
    closedir(d);
    return out[0] ? 0 : -1;
}

/* A fresh copy of the synthetic dataset as <name>. */
static int copy_data(const char *name) {
    return test_system("rm -rf '%s/%s' && cp -r '%s/data' '%s/%s'", g_tmp, name, g_tmp, g_tmp, name);
}

static cJSON *read_json(const char *path) {
    char *text = NULL;
    size_t n;
    if (drdc_read_file(path, &text, &n)) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    return j;
}

static int write_text(const char *path, const char *text) { return test_write_file(path, text, strlen(text)); }

/* Writes tiny.json with one key replaced ("section", "key", JSON value text) as <name>. */
static int write_tiny_with(const char *name, const char *section, const char *key, const char *value) {
    cJSON *cfg = read_json(at("tiny.json"));
    cJSON *sec = cJSON_GetObjectItem(cfg, section);
    if (!sec) {
        cJSON_Delete(cfg);
        return -1;
    }
    cJSON_DeleteItemFromObject(sec, key);
    cJSON_AddItemToObject(sec, key, cJSON_Parse(value));
    char *text = cJSON_Print(cfg);
    int rc = write_text(at("%s", name), text);
    free(text);
    cJSON_Delete(cfg);
    return rc;
}

/* Copies a safetensors file, replacing (or adding) metadata key = value, or, with prefix_from
 * set, keeping only the tensors starting with prefix_from (renamed without it) times `scale`. */
static drdc_status rewrite_st(const char *src, const char *dst, const char *key, const char *value,
                              const char *prefix_from, float scale) {
    drdc_st_file *f = NULL;
    drdc_st_writer *w = NULL;
    drdc_status st = drdc_st_open(&f, src);
    if (!st) st = drdc_st_writer_new(&w);
    for (int i = 0; !st && !prefix_from && i < drdc_st_meta_count(f); i++) {
        const char *k, *v;
        drdc_st_meta_at(f, i, &k, &v);
        st = drdc_st_writer_set_meta(w, k, v);
    }
    if (!st && key) st = drdc_st_writer_set_meta(w, key, value);
    size_t plen = prefix_from ? strlen(prefix_from) : 0;
    for (int i = 0; !st && i < drdc_st_count(f); i++) {
        const drdc_st_tensor *t = drdc_st_at(f, i);
        if (prefix_from && strncmp(t->name, prefix_from, plen) != 0) continue;
        if (prefix_from && t->dtype == DRDC_ST_F32) {
            float *buf = malloc(t->nbytes ? t->nbytes : 1);
            if (!buf) {
                st = drdc_fail(DRDC_ERR_NOMEM, "out of memory copying %s", t->name);
                break;
            }
            memcpy(buf, t->data, t->nbytes);
            for (int64_t k = 0; k < t->numel; k++) buf[k] *= scale;
            st = drdc_st_writer_add(w, t->name + plen, t->dtype, t->ndim, t->shape, buf, t->nbytes);
            free(buf);
        } else if (!prefix_from) {
            st = drdc_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes);
        }
    }
    if (!st) st = drdc_st_writer_write(w, dst);
    drdc_st_writer_free(w);
    drdc_st_close(f);
    return st;
}

/* Number of F32 tensors of an open file holding a NaN or an infinity (first one's name to stderr). */
static int nonfinite_tensors(const drdc_st_file *f) {
    int bad = 0;
    for (int i = 0; i < drdc_st_count(f); i++) {
        const drdc_st_tensor *t = drdc_st_at(f, i);
        if (t->dtype != DRDC_ST_F32) continue;
        for (int64_t k = 0; k < t->numel; k++) {
            float v;
            memcpy(&v, (const char *)t->data + 4 * k, 4);
            if (!isfinite(v)) {
                if (!bad) fprintf(stderr, "  tensor %s holds %g at %lld\n", t->name, v, (long long)k);
                bad++;
                break;
            }
        }
    }
    return bad;
}

/* Writes a PNG from unfiltered scanlines (rows NULL: header only). Returns 0 on success. */
static int png_write(const char *path, uint32_t w, uint32_t h, int depth, int ctype, const unsigned char *rows,
                     size_t rowbytes, const unsigned char *plte, int n_plte) {
    test_buf b = test_png_make(w, h, depth, ctype, rows, rowbytes, plte, n_plte);
    return test_buf_write(path, &b);
}

/* ---- images: `drdc infer --image` ----------------------------------------------------------- */

/* infer on a bad image: exit `want`, the message names the file and says `why`, and out_bad/
 * (where the heatmap, overlay and JSON would go) stays empty. */
static void infer_bad_image(const char *name, int want, const char *why) {
    char log[300], needle[300];
    snprintf(log, sizeof log, "infer_%s.log", name);
    snprintf(needle, sizeof needle, "%s: ", name);
    test_system("rm -rf '%s/out_bad' && mkdir -p '%s/out_bad'", g_tmp, g_tmp);
    int rc = drdc(log, "infer --model %s --image bad/%s --out out_bad/heat.png --overlay out_bad/over.png "
                  "--json out_bad/r.json --threads 2", MODEL, name);
    EXPECT(log, rc, want, needle, why);
    CHECK(dir_empty(at("out_bad")));
}

static void test_image_missing(void) {
    /* an input file that does not exist is the user's input error: exit 2, the message says why */
    infer_bad_image("nosuch.png", 2, "No such file");
}

static void test_image_zero_bytes(void) {
    CHECK(test_write_file(at("bad/zero.png"), "", 0) == 0);
    infer_bad_image("zero.png", 2, "empty file");
}

static void test_image_truncated(void) {
    char *png = NULL;
    size_t n;
    CHECK_OK(drdc_read_file(at("data/%s/test/good/000.png", g_cat[0]), &png, &n));
    if (!png) return;
    CHECK(test_write_file(at("bad/truncated.png"), png, n / 3) == 0);   /* cut inside the pixel data */
    free(png);
    infer_bad_image("truncated.png", 2, "truncated");
}

static void test_image_random_bytes(void) {
    unsigned char junk[3000];
    uint64_t s = 12345;
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)((s = s * 6364136223846793005ull + 1442695040888963407ull) >> 56);
    CHECK(test_write_file(at("bad/random.png"), junk, sizeof junk) == 0);
    infer_bad_image("random.png", 2, "not a readable image");
}

static void test_image_huge_dimensions(void) {
    /* a valid PNG header claiming 100000 x 100000 pixels: refused before any pixel memory */
    CHECK(png_write(at("bad/huge.png"), 100000, 100000, 8, 2, NULL, 0, NULL, 0) == 0);
    infer_bad_image("huge.png", 2, "100000x100000");
    CHECK(log_has("infer_huge.png.log", "limit"));
}

/* 16-bit RGB, 8-bit palette and gray+alpha PNGs of 40x24 must score and give a 40x24 heatmap. */
static void test_image_16bit_palette_gray_alpha_work(void) {
    enum { W = 40, H = 24 };
    unsigned char rgb16[H][W * 6], pal[H][W], ga[H][W * 2], plte[16 * 3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            unsigned v = (unsigned)(x * 1500 + y * 900) & 0xFFFF;
            for (int c = 0; c < 3; c++) {
                rgb16[y][x * 6 + 2 * c] = (unsigned char)(v >> 8);
                rgb16[y][x * 6 + 2 * c + 1] = (unsigned char)(v + 77 * c);
            }
            pal[y][x] = (unsigned char)((x / 5 + y / 3) % 16);
            ga[y][x * 2] = (unsigned char)(x * 6 + y);
            ga[y][x * 2 + 1] = (unsigned char)(255 - y * 4);   /* alpha is dropped */
        }
    for (int i = 0; i < 16; i++) {
        plte[3 * i] = (unsigned char)(i * 16);
        plte[3 * i + 1] = (unsigned char)(255 - i * 12);
        plte[3 * i + 2] = (unsigned char)(i * 7);
    }
    CHECK(png_write(at("ok/rgb16.png"), W, H, 16, 2, &rgb16[0][0], W * 6, NULL, 0) == 0);
    CHECK(png_write(at("ok/palette.png"), W, H, 8, 3, &pal[0][0], W, plte, 16) == 0);
    CHECK(png_write(at("ok/gray_alpha.png"), W, H, 8, 4, &ga[0][0], W * 2, NULL, 0) == 0);
    const char *names[3] = {"rgb16", "palette", "gray_alpha"};
    for (int i = 0; i < 3; i++) {
        char log[128];
        snprintf(log, sizeof log, "infer_ok_%s.log", names[i]);
        int rc = drdc(log, "infer --model %s --image ok/%s.png --out ok/%s_heat.png --json ok/%s.json --threads 2",
                      MODEL, names[i], names[i], names[i]);
        EXPECT(log, rc, 0, "score", NULL);
        int w = 0, h = 0;
        CHECK_OK(drdc_image_probe(at("ok/%s_heat.png", names[i]), &w, &h));
        int k = (256 + (W < H ? W : H) - 1) / (W < H ? W : H);   /* small images: whole-pixel enlargement */
        CHECK(w == k * W && h == k * H);
        cJSON *j = read_json(at("ok/%s.json", names[i]));
        cJSON *score = cJSON_GetObjectItem(j, "score");
        CHECK(cJSON_IsNumber(score) && isfinite(score->valuedouble));
        cJSON_Delete(j);
    }
    CHECK(no_tmp_files(at("ok")));
}

/* ---- images inside a dataset: `drdc train`, `drdc eval` -------------------------------------- */

static void test_train_bad_image_in_dataset(void) {
    CHECK(copy_data("d_badtrain") == 0);
    char *png = NULL;
    size_t n;
    CHECK_OK(drdc_read_file(at("d_badtrain/%s/train/good/001.png", g_cat[0]), &png, &n));
    if (!png) return;
    CHECK(test_write_file(at("d_badtrain/%s/train/good/001.png", g_cat[0]), png, n / 3) == 0);
    free(png);
    int rc = drdc("train_badimg.log", "train --config tiny.json --data-root d_badtrain --out runs/badimg --threads 2 %s",
                  SETS);
    EXPECT("train_badimg.log", rc, 2, "train/good/001.png: ", "truncated");
    CHECK(!exists(at("runs/badimg/model.safetensors")));
    /* the image may sit in the validation share: then the base checkpoint exists, whole */
    if (exists(at("runs/badimg/checkpoint.safetensors"))) {
        drdc_st_file *f = NULL;
        CHECK_OK(drdc_st_open(&f, at("runs/badimg/checkpoint.safetensors")));
        drdc_st_close(f);
    }
    CHECK(no_tmp_files(at("runs/badimg")));
}

static void test_train_warns_on_non_image_file(void) {
    CHECK(copy_data("d_txt") == 0);
    CHECK(write_text(at("d_txt/%s/train/good/notes.txt", g_cat[1]), "not an image\n") == 0);
    int rc = drdc("train_txt.log", "train --config tiny.json --data-root d_txt --out runs/txt --threads 2 --stage base %s",
                  SETS);
    EXPECT("train_txt.log", rc, 0, "warning: skipped 1 files", "notes.txt");
    CHECK(exists(at("runs/txt/model.safetensors")));
}

static void test_eval_bad_image_in_dataset(void) {
    CHECK(copy_data("d_badtest") == 0);
    CHECK(write_text(at("d_badtest/%s/test/good/000.png", g_cat[0]), "this is a text file, not an image\n") == 0);
    int rc = drdc("eval_badimg.log", "eval --model %s --data-root d_badtest --method base --json eval_badimg.json "
                  "--csv eval_badimg.csv --threads 2", MODEL);
    EXPECT("eval_badimg.log", rc, 2, "test/good/000.png: ", "not a readable image");
    CHECK(!exists(at("eval_badimg.json")) && !exists(at("eval_badimg.csv")));
}

static void test_eval_mask_size_differs(void) {
    CHECK(copy_data("d_mask") == 0);
    char gt[2048], mask_name[256];
    snprintf(gt, sizeof gt, "%s", at("d_mask/%s/ground_truth/%s", g_cat[0], g_defect));
    CHECK(first_entry(gt, NULL, mask_name, sizeof mask_name) == 0);
    drdc_image m = {0}, small = {0};
    CHECK_OK(drdc_image_load_mask(at("d_mask/%s/ground_truth/%s/%s", g_cat[0], g_defect, mask_name), &m));
    if (!m.data) return;
    CHECK_OK(drdc_image_resize(&m, 32, 48, &small));
    CHECK_OK(drdc_image_write_png(at("d_mask/%s/ground_truth/%s/%s", g_cat[0], g_defect, mask_name), &small));
    drdc_image_free(&m);
    drdc_image_free(&small);
    int rc = drdc("eval_mask.log", "eval --model %s --data-root d_mask --method base --json eval_mask.json --threads 2",
                  MODEL);
    EXPECT("eval_mask.log", rc, 2, mask_name, "32x48");
    CHECK(!exists(at("eval_mask.json")));
}

/* ---- datasets ------------------------------------------------------------------------------- */

static void test_dataset_missing_folders(void) {
    int rc = drdc("ds_noroot.log", "train --config tiny.json --data-root nowhere --out runs/noroot --threads 2 %s", SETS);
    EXPECT("ds_noroot.log", rc, 2, "nowhere", "not found");
    rc = drdc("ds_noroot_eval.log", "eval --model %s --data-root nowhere --threads 2", MODEL);
    EXPECT("ds_noroot_eval.log", rc, 2, "nowhere", "not found");
    rc = drdc("ds_nocat.log", "train --config tiny.json --data-root data --out runs/nocat --threads 2 %s "
              "--set data.categories=%s,nosuchcat", SETS, g_cat[0]);
    EXPECT("ds_nocat.log", rc, 2, "unknown category 'nosuchcat'", g_cat[1]);   /* lists the available ones */
    CHECK(copy_data("d_notrain") == 0);
    CHECK(test_system("rm -rf '%s/d_notrain/%s/train'", g_tmp, g_cat[1]) == 0);
    rc = drdc("ds_notrain.log", "train --config tiny.json --data-root d_notrain --out runs/notrain --threads 2 %s", SETS);
    EXPECT("ds_notrain.log", rc, 2, "train/good", "not found");
    CHECK(!exists(at("runs/notrain/checkpoint.safetensors")) && !exists(at("runs/notrain/model.safetensors")));
}

static void test_dataset_empty_train_good(void) {
    CHECK(copy_data("d_empty") == 0);
    CHECK(test_system("rm -f '%s/d_empty/%s/train/good/'*", g_tmp, g_cat[1]) == 0);
    int rc = drdc("ds_empty.log", "train --config tiny.json --data-root d_empty --out runs/empty --threads 2 %s", SETS);
    char needle[600];
    snprintf(needle, sizeof needle, "d_empty/%s/train/good", g_cat[1]);
    EXPECT("ds_empty.log", rc, 2, "no images in", needle);
    CHECK(!exists(at("runs/empty/checkpoint.safetensors")) && !exists(at("runs/empty/model.safetensors")));
}

static void test_dataset_defect_without_mask(void) {
    CHECK(copy_data("d_nomask") == 0);
    CHECK(test_system("rm -f '%s/d_nomask/%s/ground_truth/%s/'*", g_tmp, g_cat[0], g_defect) == 0);
    char needle[600];
    snprintf(needle, sizeof needle, "d_nomask/%s/test/%s/", g_cat[0], g_defect);
    int rc = drdc("ds_nomask_eval.log", "eval --model %s --data-root d_nomask --method base --threads 2", MODEL);
    EXPECT("ds_nomask_eval.log", rc, 2, needle, "has no ground-truth mask");
    /* train needs only train/good, but the dataset is checked whole when it is opened */
    rc = drdc("ds_nomask_train.log", "train --config tiny.json --data-root d_nomask --out runs/nomask --threads 2 %s",
              SETS);
    EXPECT("ds_nomask_train.log", rc, 2, needle, "has no ground-truth mask");
}

static void test_eval_category_without_defects(void) {
    CHECK(copy_data("d_nodef") == 0);
    /* the second category keeps only test/good: its image and pixel metrics are undefined */
    CHECK(test_system("cd '%s/d_nodef/%s' && rm -rf ground_truth && find test -mindepth 1 -maxdepth 1 ! -name good "
                      "-exec rm -rf {} +", g_tmp, g_cat[1]) == 0);
    int rc = drdc("eval_nodef.log", "eval --model %s --data-root d_nodef --method base --json eval_nodef.json "
                  "--threads 2", MODEL);
    char note[600];
    snprintf(note, sizeof note, "note: %s: image metrics: image AUROC, AP and F1-max are undefined", g_cat[1]);
    EXPECT("eval_nodef.log", rc, 0, " n/a", note);
    CHECK(log_has("eval_nodef.log", "all 2 images are normal"));
    cJSON *j = read_json(at("eval_nodef.json"));
    cJSON *cats = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "methods"), "base"), "categories");
    cJSON *mean = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "methods"), "base"), "mean");
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(cats, g_cat[1]), "image_auroc")));
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(cats, g_cat[1]), "aupro")));
    CHECK(cJSON_IsNumber(cJSON_GetObjectItem(cJSON_GetObjectItem(cats, g_cat[0]), "image_auroc")));
    CHECK(cJSON_IsNumber(cJSON_GetObjectItem(mean, "pixel_auroc")));   /* the mean of the defined ones */
    cJSON_Delete(j);
}

/* ---- configs: `drdc train --config bad.json` -------------------------------------------------- */

/* The config file `name` must be refused with exit 2, the message naming the file and `key`,
 * before the run folder is made. */
static void train_bad_config(const char *name, const char *key, const char *why) {
    char log[300], file[300];
    snprintf(log, sizeof log, "%s.log", name);
    snprintf(file, sizeof file, "%s: ", name);
    int rc = drdc(log, "train --config %s --data-root data --out runs/%s --threads 2", name, name);
    EXPECT(log, rc, 2, file, key);
    CHECK(log_has(log, why));
    CHECK(!exists(at("runs/%s", name)));
}

static void test_config_syntax_error(void) {
    CHECK(write_text(at("cfg_syntax.json"), "{\n  \"data\": {\"image_size\": 64,}\n}\n") == 0);
    /* no key to name: the file, line and column instead ("cfg_syntax.json:2:31: ...") */
    char log[] = "cfg_syntax.json.log";
    int rc = drdc(log, "train --config cfg_syntax.json --data-root data --out runs/cfg_syntax --threads 2");
    EXPECT(log, rc, 2, "cfg_syntax.json:2:", "JSON syntax error");
    CHECK(!exists(at("runs/cfg_syntax")));
}

static void test_config_wrong_type(void) {
    CHECK(write_text(at("cfg_type.json"), "{\"data\": {\"image_size\": \"64\"}}") == 0);
    train_bad_config("cfg_type.json", "'data.image_size'", "expects an integer");
}

static void test_config_unknown_key(void) {
    CHECK(write_text(at("cfg_unknown.json"), "{\"base\": {\"epoch\": 3}}") == 0);
    train_bad_config("cfg_unknown.json", "unknown key 'base.epoch'", "did you mean 'base.epochs'");
}

static void test_config_zero_size(void) {
    CHECK(write_tiny_with("cfg_zero.json", "data", "image_size", "0") == 0);
    train_bad_config("cfg_zero.json", "'data.image_size'", "out of range");
}

static void test_config_negative_size(void) {
    CHECK(write_tiny_with("cfg_negative.json", "base", "batch", "-4") == 0);
    train_bad_config("cfg_negative.json", "'base.batch'", "out of range");
    CHECK(write_tiny_with("cfg_negative2.json", "refiner", "channels", "-32") == 0);
    train_bad_config("cfg_negative2.json", "'refiner.channels'", "out of range");
}

static void test_config_grid_does_not_divide(void) {
    CHECK(write_tiny_with("cfg_grid.json", "infer", "grids", "[8, 12]") == 0);
    train_bad_config("cfg_grid.json", "infer.grids", "12 does not divide refiner.image_size 64");
}

static void test_config_image_size_not_multiple_of_16(void) {
    CHECK(write_tiny_with("cfg_size.json", "data", "image_size", "72") == 0);
    train_bad_config("cfg_size.json", "data.image_size 72", "multiple of 16");
}

/* ---- model files -------------------------------------------------------------------------- */

static void test_model_missing(void) {
    int rc = drdc("model_missing.log", "infer --model nosuch.safetensors --image data/%s/test/good/000.png "
                  "--out out_model/heat.png --threads 2", g_cat[0]);
    EXPECT("model_missing.log", rc, 2, "nosuch.safetensors: ", "No such file");
    CHECK(dir_empty(at("out_model")));
}

static void test_model_truncated(void) {
    char *bytes = NULL;
    size_t n;
    CHECK_OK(drdc_read_file(at("%s", MODEL), &bytes, &n));
    if (!bytes) return;
    CHECK(test_write_file(at("truncated.safetensors"), bytes, n / 2) == 0);
    CHECK(test_write_file(at("truncated_header.safetensors"), bytes, 100) == 0);   /* inside the JSON header */
    free(bytes);
    int rc = drdc("model_trunc.log", "infer --model truncated.safetensors --image data/%s/test/good/000.png "
                  "--out out_model/heat.png --threads 2", g_cat[0]);
    EXPECT("model_trunc.log", rc, 2, "truncated.safetensors: ", "truncated");
    rc = drdc("model_trunc2.log", "eval --model truncated_header.safetensors --data-root data --threads 2");
    EXPECT("model_trunc2.log", rc, 2, "truncated_header.safetensors: ", "truncated");
    CHECK(dir_empty(at("out_model")));
}

static void test_model_foreign_safetensors(void) {
    /* a backbone weights file (no drdc metadata) given as --model */
    CHECK_OK(rewrite_st(at("%s", MODEL), at("foreign.safetensors"), NULL, NULL, "backbone.", 1.0f));
    int rc = drdc("model_foreign.log", "infer --model foreign.safetensors --image data/%s/test/good/000.png "
                  "--out out_model/heat.png --threads 2", g_cat[0]);
    EXPECT("model_foreign.log", rc, 2, "foreign.safetensors: not a drdc model", "drdc train");
    const char *shared = test_shared_dir();
    char weights[1200];
    snprintf(weights, sizeof weights, "%s/weights/mobilenet_v2_1.0_224.safetensors", shared ? shared : "");
    if (shared && exists(weights)) {
        rc = drdc("model_foreign2.log", "eval --model '%s' --data-root data --threads 2", weights);
        EXPECT("model_foreign2.log", rc, 2, "mobilenet_v2_1.0_224.safetensors: not a drdc model", NULL);
    } else {
        test_skip_part("%s absent, the shared backbone file is not tried as --model", weights);
    }
    CHECK(dir_empty(at("out_model")));
}

static void test_model_old_format_version(void) {
    CHECK_OK(rewrite_st(at("%s", MODEL), at("old.safetensors"), "format_version", "0", NULL, 1.0f));
    int rc = drdc("model_old.log", "infer --model old.safetensors --image data/%s/test/good/000.png "
                  "--out out_model/heat.png --threads 2", g_cat[0]);
    EXPECT("model_old.log", rc, 2, "old.safetensors: model format version 0", "retrain");
    rc = drdc("model_old_eval.log", "eval --model old.safetensors --data-root data --threads 2");
    EXPECT("model_old_eval.log", rc, 2, "old.safetensors: model format version 0", "retrain");
    CHECK(dir_empty(at("out_model")));
}

/* eval and infer take the architecture from the model's own stored config: a file whose config
 * names another backbone than its tensors hold is refused, naming the file and the tensor. */
static void test_model_config_backbone_mismatch(void) {
    drdc_st_file *f = NULL;
    CHECK_OK(drdc_st_open(&f, at("%s", MODEL)));
    if (!f) return;
    cJSON *cfg = cJSON_Parse(drdc_st_meta(f, "config"));
    drdc_st_close(f);
    cJSON *bb = cJSON_GetObjectItem(cfg, "backbone");
    cJSON_DeleteItemFromObject(bb, "arch");
    cJSON_AddStringToObject(bb, "arch", "efficientnet-b0");
    char *text = cJSON_PrintUnformatted(cfg);
    cJSON_Delete(cfg);
    CHECK_OK(rewrite_st(at("%s", MODEL), at("otherarch.safetensors"), "config", text, NULL, 1.0f));
    free(text);
    int rc = drdc("model_arch.log", "eval --model otherarch.safetensors --data-root data --method base --json "
                  "eval_arch.json --threads 2");
    EXPECT("model_arch.log", rc, 2, "otherarch.safetensors: missing tensor 'backbone.", NULL);
    CHECK(!exists(at("eval_arch.json")));
}

/* Copies the trained run folder to runs/<name>, keeping copies of its checkpoint and model. */
static int copy_run(const char *name) {
    return test_system("rm -rf '%s/runs/%s' && cp -r '%s/runs/good' '%s/runs/%s'", g_tmp, name, g_tmp, g_tmp, name);
}

static void test_resume_refuses_another_backbone(void) {
    CHECK(copy_run("other_bb") == 0);
    int rc = drdc("resume_bb.log", "train --config tiny.json --data-root data --out runs/other_bb --threads 2 %s "
                  "--set refiner.steps=3 --resume --set backbone.arch=efficientnet-lite0", SETS);
    EXPECT("resume_bb.log", rc, 2, "runs/other_bb/checkpoint.safetensors: ", "another config");
    CHECK(log_has("resume_bb.log", "backbone.arch"));   /* which key differs */
    CHECK(same_bytes(at("runs/other_bb/checkpoint.safetensors"), at("runs/good/checkpoint.safetensors")));
    CHECK(same_bytes(at("runs/other_bb/model.safetensors"), at("runs/good/model.safetensors")));
    /* the run folder's config.json still describes what the run was trained with */
    CHECK(same_bytes(at("runs/other_bb/config.json"), at("runs/good/config.json")));
}

/* The run was trained on a random backbone; resuming it with backbone.weights given would go on
 * with the checkpoint's random backbone while the config claims the weights: refused. */
static void test_resume_refuses_new_backbone_weights(void) {
    CHECK(copy_run("new_weights") == 0);
    CHECK_OK(rewrite_st(at("%s", MODEL), at("weights.safetensors"), NULL, NULL, "backbone.", 0.5f));
    int rc = drdc("resume_weights.log", "train --config tiny.json --data-root data --out runs/new_weights --threads 2 "
                  "%s --set refiner.steps=3 --resume --set backbone.weights=weights.safetensors", SETS);
    EXPECT("resume_weights.log", rc, 2, "runs/new_weights/checkpoint.safetensors: ", "backbone.weights");
    CHECK(same_bytes(at("runs/new_weights/checkpoint.safetensors"), at("runs/good/checkpoint.safetensors")));
    CHECK(same_bytes(at("runs/new_weights/model.safetensors"), at("runs/good/model.safetensors")));
}

/* ---- training failures ---------------------------------------------------------------------- */

/* lr 10 with weight decay 10 multiplies every weight by (1 - 100) per step: the base loss overflows
 * within a few epochs. The run stops with exit 1; the checkpoint it keeps must be usable: whole
 * and finite (a resume from non-finite weights would only fail again). */
static void test_nan_loss_base_keeps_finite_checkpoint(void) {
    int rc = drdc("nan_base.log", "train --config tiny.json --data-root data --out runs/nan_base --threads 2 %s "
                  "--stage base --set base.epochs=30 --set base.lr=10 --set base.weight_decay=10", SETS);
    /* stopped by the loss check ("the loss became nan") or, earlier, by a save refusing
     * non-finite weights ("diverged"); either way the message says what is kept */
    EXPECT("nan_base.log", rc, 1, "kept", NULL);
    CHECK(log_has("nan_base.log", "loss became") || log_has("nan_base.log", "diverged"));
    CHECK(!exists(at("runs/nan_base/model.safetensors")));
    drdc_st_file *f = NULL;
    CHECK_OK(drdc_st_open(&f, at("runs/nan_base/checkpoint.safetensors")));
    if (f) {
        CHECK(atoi(drdc_st_meta(f, "stage_epoch")) < 30);
        CHECK(nonfinite_tensors(f) == 0);
        drdc_st_close(f);
    }
    CHECK(no_tmp_files(at("runs/nan_base")));
}

/* The refiner diverges on its second step: the checkpoint and model of the finished base stage
 * stay byte for byte as they were. */
static void test_nan_loss_refiner_keeps_files(void) {
    const char *div = "--set refiner.lr=10 --set refiner.weight_decay=10 --set refiner.steps=40 "
                      "--set train.checkpoint_every=100";
    int rc = drdc("nan_ref1.log", "train --config tiny.json --data-root data --out runs/nan_ref --threads 2 %s %s "
                  "--stage base", SETS, div);
    CHECK(rc == 0);
    CHECK(test_system("cd '%s/runs' && cp nan_ref/checkpoint.safetensors nan_ref_ckpt.before && "
                      "cp nan_ref/model.safetensors nan_ref_model.before", g_tmp) == 0);
    rc = drdc("nan_ref2.log", "train --config tiny.json --data-root data --out runs/nan_ref --threads 2 %s %s "
              "--stage refiner", SETS, div);
    EXPECT("nan_ref2.log", rc, 1, "loss became", "--resume continues from it");
    CHECK(log_has("nan_ref2.log", "refiner"));
    CHECK(same_bytes(at("runs/nan_ref/checkpoint.safetensors"), at("runs/nan_ref_ckpt.before")));
    CHECK(same_bytes(at("runs/nan_ref/model.safetensors"), at("runs/nan_ref_model.before")));
    CHECK(no_tmp_files(at("runs/nan_ref")));
}

/* Fills the file system of `dir` up to `leave` free bytes with real (non-sparse) data. */
static int fill_disk(const char *dir, long long leave) {
    struct statvfs vs;
    if (statvfs(dir, &vs) != 0) return -1;
    long long avail = (long long)vs.f_bavail * (long long)vs.f_frsize - leave;
    FILE *f = fopen(at("full/filler"), "wb");
    if (!f) return -1;
    static char chunk[1 << 16];
    memset(chunk, 0x5a, sizeof chunk);
    while (avail > 0) {
        size_t n = avail > (long long)sizeof chunk ? sizeof chunk : (size_t)avail;
        if (fwrite(chunk, 1, n, f) != n) break;
        avail -= (long long)n;
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* A full disk while the next checkpoint is written: exit 1 naming the file and ENOSPC; the old
 * checkpoint and model stay whole; no temporary file is left. Needs a small tmpfs (root). */
static void test_disk_full_keeps_checkpoint(void) {
    char mnt[2048];
    snprintf(mnt, sizeof mnt, "%s", at("full"));
    test_system("mkdir -p '%s'", mnt);
    /* a private mount namespace: the tmpfs is seen by this test and its children only, and
     * vanishes with the process even if the test dies before umount */
    int can_mount = geteuid() == 0 && unshare(CLONE_NEWNS) == 0 &&
                    mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) == 0 &&
                    mount("tmpfs", mnt, "tmpfs", 0, "size=48m") == 0;
    if (!can_mount && geteuid() == 0) {
        test_skip_part("cannot mount a tmpfs here (%s): the full-disk test", strerror(errno));
        return;
    }
    if (!can_mount) {
        /* not root: a read-only run folder instead; the write fails before the checkpoint (at the
         * resolved config.json), so this only shows that nothing is lost */
        printf("note: cannot mount a tmpfs (needs root), a read-only run folder stands in for the full disk\n");
        CHECK(copy_run("readonly") == 0);
        test_system("chmod 555 '%s/runs/readonly'", g_tmp);
        int rc = drdc("full.log", "train --config tiny.json --data-root data --out runs/readonly --threads 2 %s "
                      "--resume --set refiner.steps=3", SETS);
        EXPECT("full.log", rc, 1, "runs/readonly/", "Permission denied");
        test_system("chmod 755 '%s/runs/readonly'", g_tmp);
        CHECK(same_bytes(at("runs/readonly/checkpoint.safetensors"), at("runs/good/checkpoint.safetensors")));
        return;
    }
    const char *one = "--stage base --set data.categories=";
    int rc = drdc("full1.log", "train --config tiny.json --data-root data --out full/run --threads 2 %s %s%s", SETS, one,
                  g_cat[0]);
    CHECK(rc == 0);
    CHECK(test_system("cp '%s/run/checkpoint.safetensors' '%s/ckpt.before' && cp '%s/run/model.safetensors' "
                      "'%s/model.before'", mnt, g_tmp, mnt, g_tmp) == 0);
    CHECK(fill_disk(mnt, 2 << 20) == 0);   /* 2 MB left: the next checkpoint cannot fit */
    rc = drdc("full2.log", "train --config tiny.json --data-root data --out full/run --threads 2 %s %s%s "
              "--set base.epochs=2 --resume", SETS, one, g_cat[0]);
    EXPECT("full2.log", rc, 1, "full/run/checkpoint.safetensors: ", "No space left on device");
    CHECK(same_bytes(at("full/run/checkpoint.safetensors"), at("ckpt.before")));
    CHECK(same_bytes(at("full/run/model.safetensors"), at("model.before")));
    CHECK(no_tmp_files(at("full/run")));
    if (umount(mnt) != 0) fprintf(stderr, "cannot unmount %s\n", mnt);
}

/* kill -9 during a write leaves <file>.tmp.<pid> (nothing can remove it then); the next run in
 * that folder (--resume) must remove the stale temporary files of dead processes. */
static void test_resume_removes_stale_tmp_files(void) {
    CHECK(copy_run("stale") == 0);
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);   /* a pid that no process holds now */
    CHECK(test_write_file(at("runs/stale/checkpoint.safetensors.tmp.%d", (int)dead), "half a checkpoint", 17) == 0);
    CHECK(test_write_file(at("runs/stale/model.safetensors.tmp.%d", (int)dead), "half a model", 12) == 0);
    int rc = drdc("stale.log", "train --config tiny.json --data-root data --out runs/stale --threads 2 %s --resume "
                  "--set refiner.steps=3", SETS);
    CHECK(rc == 0);
    CHECK(no_tmp_files(at("runs/stale")));
}

int main(void) {
    if (!test_drdc_bin()) test_skip("DRDC_BIN not set (run under ctest)");
    snprintf(g_tmp, sizeof g_tmp, "%s", test_tmpdir("robustness"));
    if (test_system("'%s' synth --out '%s/data' --categories 2 --train 4 --test 4 --size 64 --seed 5 >/dev/null",
                    test_drdc_bin(), g_tmp) != 0 ||
        test_system("cp '%s/configs/tiny.json' '%s/' && mkdir -p '%s/bad' '%s/ok' '%s/out_model' '%s/runs'",
                    test_source_dir(), g_tmp, g_tmp, g_tmp, g_tmp, g_tmp) != 0 ||
        first_entry(at("data"), NULL, g_cat[0], sizeof g_cat[0]) != 0 ||
        first_entry(at("data"), g_cat[0], g_cat[1], sizeof g_cat[1]) != 0 ||
        first_entry(at("data/%s/ground_truth", g_cat[0]), NULL, g_defect, sizeof g_defect) != 0) {
        fprintf(stderr, "set-up failed (synthetic data)\n");
        return 1;
    }
    /* the model every infer / eval test uses: both stages, tiny */
    if (drdc("train_good.log", "train --config tiny.json --data-root data --out runs/good --threads 2 %s", SETS) != 0) {
        show_log("train_good.log");
        fprintf(stderr, "set-up failed (training the tiny model)\n");
        return 1;
    }
    RUN(test_image_missing);
    RUN(test_image_zero_bytes);
    RUN(test_image_truncated);
    RUN(test_image_random_bytes);
    RUN(test_image_huge_dimensions);
    RUN(test_image_16bit_palette_gray_alpha_work);
    RUN(test_train_bad_image_in_dataset);
    RUN(test_train_warns_on_non_image_file);
    RUN(test_eval_bad_image_in_dataset);
    RUN(test_eval_mask_size_differs);
    RUN(test_dataset_missing_folders);
    RUN(test_dataset_empty_train_good);
    RUN(test_dataset_defect_without_mask);
    RUN(test_eval_category_without_defects);
    RUN(test_config_syntax_error);
    RUN(test_config_wrong_type);
    RUN(test_config_unknown_key);
    RUN(test_config_zero_size);
    RUN(test_config_negative_size);
    RUN(test_config_grid_does_not_divide);
    RUN(test_config_image_size_not_multiple_of_16);
    RUN(test_model_missing);
    RUN(test_model_truncated);
    RUN(test_model_foreign_safetensors);
    RUN(test_model_old_format_version);
    RUN(test_model_config_backbone_mismatch);
    RUN(test_resume_refuses_another_backbone);
    RUN(test_resume_refuses_new_backbone_weights);
    RUN(test_nan_loss_base_keeps_finite_checkpoint);
    RUN(test_nan_loss_refiner_keeps_files);
    RUN(test_disk_full_keeps_checkpoint);
    RUN(test_resume_removes_stale_tmp_files);
    return test_summary();
}
