/* test_metrics.c: image and pixel AUROC / AP / F1-max / AUPRO against scikit-learn and a
 * transcription of the official MVTec AD AUPRO (scripts/twins/metrics_ref.py), plus sanity checks
 * that need no Python (perfect and reversed scores, a textbook example, AUPRO and its PRO curve
 * by hand, errors, memory).
 *
 * Cases are generated with a seeded RNG, written as .npy into the test folder, and the
 * reference is computed once by `$DRDC_PYTHON scripts/twins/metrics_ref.py IN OUT.json`.
 * Tolerances: AUROC, AP, F1-max 1e-6; AUPRO 1e-4 (the official code keeps FPRs in float32). */
#include "testlib.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "drdc/stages/metrics.h"
#include "drdc/formats/npy.h"

/* ---- deterministic RNG ------------------------------------------------------------------- */

static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s * 0x9E3779B97F4A7C15ull + 1; }
static uint64_t rng_u64(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_unif(void) { return (double)(rng_u64() >> 11) * (1.0 / 9007199254740992.0); }
static int rng_int(int n) { return (int)(rng_u64() % (uint64_t)n); }
static double rng_normal(void) {
    double u = rng_unif() + 1e-12, v = rng_unif();
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* ---- cases ------------------------------------------------------------------------------- */

typedef struct tcase {
    const char *name;
    size_t n_img;          /* image level: n_img scores and labels (0: none) */
    float *img_scores;
    uint8_t *img_labels;
    int n_maps, h, w;      /* pixel level: n_maps maps of h x w (0: none) */
    float *maps;
    uint8_t *masks;
    int null_empty_masks;  /* pass NULL to the accumulator for all-zero masks */
} tcase;

enum { C_RANDOM, C_TIES, C_TINY, C_DIAGONAL, C_SALT, C_SIGNED, C_ONE_NORMAL, C_ONE_ANOMALOUS,
       N_CASES };
static tcase g_cases[N_CASES];
static cJSON *g_ref;            /* the reference JSON, or NULL when unavailable */
static char g_ref_why[1400];     /* why it is unavailable */

static void alloc_images(tcase *c, size_t n) {
    c->n_img = n;
    c->img_scores = calloc(n, sizeof(float));
    c->img_labels = calloc(n, 1);
}

static void alloc_maps(tcase *c, int n, int h, int w) {
    c->n_maps = n;
    c->h = h;
    c->w = w;
    c->maps = calloc((size_t)n * h * w, sizeof(float));
    c->masks = calloc((size_t)n * h * w, 1);
}

/* Draws a filled ellipse of label 1 into mask (h x w). */
static void draw_blob(uint8_t *mask, int h, int w) {
    int cy = rng_int(h), cx = rng_int(w);
    double ry = 1 + rng_int(h / 6 + 1), rx = 1 + rng_int(w / 6 + 1);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double dy = (y - cy) / ry, dx = (x - cx) / rx;
            if (dy * dy + dx * dx <= 1.0) mask[y * w + x] = 1;
        }
}

/* Scores correlated with the mask: uniform noise + 0.6 on defects. */
static void fill_scores(tcase *c) {
    size_t n = (size_t)c->n_maps * c->h * c->w;
    for (size_t i = 0; i < n; i++)
        c->maps[i] = (float)(rng_unif() + (c->masks[i] ? 0.6 : 0.0));
}

static void make_cases(void) {
    tcase *c;
    /* random continuous scores; image labels ~30% anomalous; blobs on some images */
    c = &g_cases[C_RANDOM];
    c->name = "random";
    rng_seed(1);
    alloc_images(c, 300);
    for (size_t i = 0; i < c->n_img; i++) {
        c->img_labels[i] = rng_unif() < 0.3;
        c->img_scores[i] = (float)(rng_normal() + (c->img_labels[i] ? 1.0 : 0.0));
    }
    alloc_maps(c, 8, 40, 56);
    for (int m = 0; m < c->n_maps; m++) {
        int blobs = m % 3 == 0 ? 0 : 1 + rng_int(3);
        for (int b = 0; b < blobs; b++) draw_blob(c->masks + (size_t)m * 40 * 56, 40, 56);
    }
    fill_scores(c);
    c->null_empty_masks = 1;

    /* tie-heavy: 3 distinct values (and -0.0 beside +0.0, which must tie) */
    c = &g_cases[C_TIES];
    c->name = "ties";
    rng_seed(2);
    alloc_images(c, 200);
    for (size_t i = 0; i < c->n_img; i++) {
        c->img_labels[i] = rng_unif() < 0.4;
        int v = rng_int(3) + (c->img_labels[i] && rng_unif() < 0.5);
        c->img_scores[i] = v >= 3 ? 1.0f : v == 2 ? 0.5f : (rng_int(2) ? -0.0f : 0.0f);
    }
    alloc_maps(c, 6, 32, 32);
    for (int m = 0; m < c->n_maps; m++)
        for (int b = 0; b < 2; b++) draw_blob(c->masks + (size_t)m * 32 * 32, 32, 32);
    for (size_t i = 0; i < (size_t)6 * 32 * 32; i++) {
        int v = rng_int(3) + (c->masks[i] && rng_unif() < 0.5);
        c->maps[i] = v >= 3 ? 1.0f : v == 2 ? 0.5f : (rng_int(2) ? -0.0f : 0.0f);
    }

    /* tiny: 2 images, 1 map of 1x2 */
    c = &g_cases[C_TINY];
    c->name = "tiny";
    alloc_images(c, 2);
    c->img_scores[0] = 0.2f;
    c->img_labels[0] = 1;
    c->img_scores[1] = 0.7f;
    c->img_labels[1] = 0;
    alloc_maps(c, 1, 1, 2);
    c->maps[0] = 0.9f;
    c->masks[0] = 1;
    c->maps[1] = 0.1f;

    /* several images, several components, regions touching only diagonally */
    c = &g_cases[C_DIAGONAL];
    c->name = "diagonal";
    rng_seed(4);
    alloc_maps(c, 3, 12, 12);
    {
        static const char *rows[3][12] = {
            {"x...........", ".x..........", "..x...xx....", "......xx....", "........x...",
             "............", "xx..........", "xx.....x.x..", "........x...", ".......x.x..",
             "............", "...........x"},
            {"............", "............", "............", "............", "............",
             "............", "............", "............", "............", "............",
             "............", "............"},
            {"xxxx........", "...x........", "....x..xxx..", "....x..x.x..", "...x...xxx..",
             "..x.........", ".x......x...", "........x...", "........x...", "............",
             "x.x.x.x.x.x.", ".x.x.x.x.x.x"},
        };
        for (int m = 0; m < 3; m++)
            for (int y = 0; y < 12; y++)
                for (int x = 0; x < 12; x++)
                    c->masks[(size_t)m * 144 + y * 12 + x] = rows[m][y][x] == 'x';
    }
    fill_scores(c);
    c->null_empty_masks = 1;

    /* salt: sparse random defect pixels, where 4- and 8-connectivity differ a lot */
    c = &g_cases[C_SALT];
    c->name = "salt";
    rng_seed(5);
    alloc_maps(c, 4, 48, 48);
    for (size_t i = 0; i < (size_t)4 * 48 * 48; i++) c->masks[i] = rng_unif() < 0.12;
    fill_scores(c);

    /* signed scores over many radix buckets: normal scores, both signs, 200k pixels */
    c = &g_cases[C_SIGNED];
    c->name = "signed";
    rng_seed(6);
    alloc_images(c, 1000);
    for (size_t i = 0; i < c->n_img; i++) {
        c->img_labels[i] = rng_unif() < 0.5;
        c->img_scores[i] = (float)(1e3 * rng_normal() + (c->img_labels[i] ? 500.0 : 0.0));
    }
    alloc_maps(c, 3, 256, 256);
    for (int m = 0; m < 3; m++)
        for (int b = 0; b < 4; b++) draw_blob(c->masks + (size_t)m * 65536, 256, 256);
    for (size_t i = 0; i < (size_t)3 * 65536; i++)
        c->maps[i] = (float)(rng_normal() * 10.0 + (c->masks[i] ? 8.0 : 0.0));

    /* single-class: all normal */
    c = &g_cases[C_ONE_NORMAL];
    c->name = "all_normal";
    rng_seed(7);
    alloc_images(c, 20);
    for (size_t i = 0; i < c->n_img; i++) c->img_scores[i] = (float)rng_unif();
    alloc_maps(c, 2, 8, 8);
    fill_scores(c);
    c->null_empty_masks = 1;

    /* single-class: all anomalous */
    c = &g_cases[C_ONE_ANOMALOUS];
    c->name = "all_anomalous";
    rng_seed(8);
    alloc_images(c, 20);
    for (size_t i = 0; i < c->n_img; i++) {
        c->img_scores[i] = (float)rng_unif();
        c->img_labels[i] = 1;
    }
    alloc_maps(c, 2, 8, 8);
    memset(c->masks, 1, (size_t)2 * 8 * 8);
    fill_scores(c);
}

static void free_cases(void) {
    for (int i = 0; i < N_CASES; i++) {
        free(g_cases[i].img_scores);
        free(g_cases[i].img_labels);
        free(g_cases[i].maps);
        free(g_cases[i].masks);
    }
}

/* Writes the cases and runs the reference; fills g_ref or g_ref_why. */
static void run_reference(void) {
    const char *py = getenv("DRDC_PYTHON");
    if (!py || !*py) {
        snprintf(g_ref_why, sizeof g_ref_why, "DRDC_PYTHON is not set (run under ctest)");
        return;
    }
    if (test_system("'%s' -c 'import numpy, scipy, sklearn' 2>/dev/null", py) != 0) {
        snprintf(g_ref_why, sizeof g_ref_why, "%s lacks numpy, scipy or sklearn", py);
        return;
    }
    char dir[1024], path[1200], out[1200];
    snprintf(dir, sizeof dir, "%s", test_tmpdir("metrics_ref"));
    for (int i = 0; i < N_CASES; i++) {
        const tcase *c = &g_cases[i];
        snprintf(path, sizeof path, "%s/%s", dir, c->name);
        mkdir(path, 0777);
        drdc_status st = DRDC_OK;
        if (c->n_img) {
            int64_t shape[1] = {(int64_t)c->n_img};
            snprintf(path, sizeof path, "%s/%s/image_scores.npy", dir, c->name);
            st = drdc_npy_write(path, DRDC_NPY_F32, 1, shape, c->img_scores);
            snprintf(path, sizeof path, "%s/%s/image_labels.npy", dir, c->name);
            if (st == DRDC_OK) st = drdc_npy_write(path, DRDC_NPY_U8, 1, shape, c->img_labels);
        }
        if (c->n_maps && st == DRDC_OK) {
            int64_t shape[3] = {c->n_maps, c->h, c->w};
            snprintf(path, sizeof path, "%s/%s/maps.npy", dir, c->name);
            st = drdc_npy_write(path, DRDC_NPY_F32, 3, shape, c->maps);
            snprintf(path, sizeof path, "%s/%s/masks.npy", dir, c->name);
            if (st == DRDC_OK) st = drdc_npy_write(path, DRDC_NPY_U8, 3, shape, c->masks);
        }
        if (st != DRDC_OK) {
            snprintf(g_ref_why, sizeof g_ref_why, "cannot write case inputs: %s", drdc_last_error());
            return;
        }
    }
    snprintf(out, sizeof out, "%s/ref.json", dir);
    int rc = test_system("'%s' '%s/scripts/twins/metrics_ref.py' '%s' '%s'", py, test_source_dir(), dir, out);
    if (rc != 0) {
        snprintf(g_ref_why, sizeof g_ref_why, "metrics_ref.py failed (exit %d)", rc);
        tl_failures++; /* the script exists and Python has its modules: this is a failure */
        return;
    }
    FILE *f = fopen(out, "rb");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    size_t got = fread(text, 1, (size_t)n, f);
    text[got] = '\0';
    fclose(f);
    g_ref = cJSON_Parse(text);
    free(text);
    if (!g_ref) snprintf(g_ref_why, sizeof g_ref_why, "cannot parse %s", out);
}

static const cJSON *ref_block(const char *case_name, const char *level) {
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(g_ref, "cases");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(cases, case_name);
    return cJSON_GetObjectItemCaseSensitive(c, level);
}

static double ref_num(const cJSON *block, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(block, key);
    if (!cJSON_IsNumber(v)) {
        fprintf(stderr, "reference lacks %s\n", key);
        tl_failures++;
        return NAN;
    }
    return v->valuedouble;
}

/* ---- C side of a case -------------------------------------------------------------------- */

static drdc_status pixel_metrics_of(const tcase *c, drdc_pixel_metrics *out) {
    drdc_pixel_accum *acc = NULL;
    drdc_status st = drdc_pixel_accum_create(&acc, 0);
    size_t hw = (size_t)c->h * c->w;
    for (int m = 0; m < c->n_maps && st == DRDC_OK; m++) {
        const uint8_t *mask = c->masks + m * hw;
        int empty = 1;
        for (size_t i = 0; i < hw; i++) empty &= mask[i] == 0;
        st = drdc_pixel_accum_add(acc, c->maps + m * hw, (empty && c->null_empty_masks) ? NULL : mask,
                                  c->h, c->w);
    }
    if (st == DRDC_OK) st = drdc_pixel_accum_finalize(acc, DRDC_AUPRO_FPR_LIMIT, out);
    drdc_pixel_accum_free(acc);
    return st;
}

static void compare_curve(const drdc_curve_metrics *m, const cJSON *ref) {
    CHECK_NEAR(m->auroc, ref_num(ref, "auroc"), 1e-6);
    CHECK_NEAR(m->ap, ref_num(ref, "ap"), 1e-6);
    CHECK_NEAR(m->f1_max, ref_num(ref, "f1_max"), 1e-6);
    const cJSON *thr = cJSON_GetObjectItemCaseSensitive(ref, "f1_threshold");
    if (cJSON_IsNumber(thr)) CHECK((double)m->f1_threshold == thr->valuedouble);
}

static void check_image_case(int idx) {
    const tcase *c = &g_cases[idx];
    const cJSON *ref = ref_block(c->name, "image");
    CHECK(ref != NULL);
    if (!ref) return;
    drdc_curve_metrics m;
    CHECK_OK(drdc_image_metrics(c->img_scores, c->img_labels, c->n_img, &m));
    compare_curve(&m, ref);
}

static void check_pixel_case(int idx) {
    const tcase *c = &g_cases[idx];
    const cJSON *ref = ref_block(c->name, "pixel");
    CHECK(ref != NULL);
    if (!ref) return;
    drdc_pixel_metrics m;
    CHECK_OK(pixel_metrics_of(c, &m));
    compare_curve(&m.curve, ref);
    CHECK_NEAR(m.aupro, ref_num(ref, "aupro"), 1e-4);
    CHECK(m.n_regions == (uint64_t)ref_num(ref, "n_regions"));
    CHECK(m.n_images == (uint64_t)c->n_maps);
}

/* ---- tests against the reference ---------------------------------------------------------- */

static void test_random_image(void) { check_image_case(C_RANDOM); }
static void test_random_pixel(void) { check_pixel_case(C_RANDOM); }
static void test_ties_image(void) { check_image_case(C_TIES); }
static void test_ties_pixel(void) { check_pixel_case(C_TIES); }
static void test_tiny_image(void) { check_image_case(C_TINY); }
static void test_tiny_pixel(void) { check_pixel_case(C_TINY); }
static void test_diagonal_regions_pixel(void) { check_pixel_case(C_DIAGONAL); }
static void test_salt_regions_pixel(void) { check_pixel_case(C_SALT); }
static void test_signed_scores_image(void) { check_image_case(C_SIGNED); }
static void test_signed_scores_pixel(void) { check_pixel_case(C_SIGNED); }

/* Single class: the reference (sklearn) refuses too; C says which metrics and why. */
static void test_single_class_image(void) {
    const tcase *n = &g_cases[C_ONE_NORMAL], *a = &g_cases[C_ONE_ANOMALOUS];
    CHECK(cJSON_GetObjectItemCaseSensitive(ref_block(n->name, "image"), "error") != NULL);
    CHECK(cJSON_GetObjectItemCaseSensitive(ref_block(a->name, "image"), "error") != NULL);
    drdc_curve_metrics m;
    CHECK_ERR(drdc_image_metrics(n->img_scores, n->img_labels, n->n_img, &m), DRDC_ERR_INPUT,
              "image AUROC, AP and F1-max are undefined: all 20 images are normal");
    CHECK_ERR(drdc_image_metrics(a->img_scores, a->img_labels, a->n_img, &m), DRDC_ERR_INPUT,
              "image AUROC, AP and F1-max are undefined: all 20 images are anomalous");
}

static void test_single_class_pixel(void) {
    const tcase *n = &g_cases[C_ONE_NORMAL], *a = &g_cases[C_ONE_ANOMALOUS];
    CHECK(cJSON_GetObjectItemCaseSensitive(ref_block(n->name, "pixel"), "error") != NULL);
    CHECK(cJSON_GetObjectItemCaseSensitive(ref_block(a->name, "pixel"), "error") != NULL);
    drdc_pixel_metrics m;
    CHECK_ERR(pixel_metrics_of(n, &m), DRDC_ERR_INPUT,
              "pixel AUROC, AP, F1-max and AUPRO are undefined: all 128 pixels of 2 images are normal");
    CHECK_ERR(pixel_metrics_of(a, &m), DRDC_ERR_INPUT,
              "pixel AUROC, AP, F1-max and AUPRO are undefined: all 128 pixels of 2 images are anomalous");
}

/* ---- tests without Python ------------------------------------------------------------------ */

/* Scores that rank every anomaly above every normal sample: every metric is exactly 1. */
static void test_perfect_scores(void) {
    float s[6] = {0.1f, 0.9f, 0.2f, 0.8f, 0.3f, 0.95f};
    uint8_t l[6] = {0, 1, 0, 1, 0, 1};
    drdc_curve_metrics m;
    CHECK_OK(drdc_image_metrics(s, l, 6, &m));
    CHECK(m.auroc == 1.0 && m.ap == 1.0 && m.f1_max == 1.0);
    CHECK(m.f1_threshold == 0.8f);
    CHECK(m.n_positive == 3 && m.n_negative == 3);

    float map[16];
    uint8_t mask[16] = {0};
    mask[5] = mask[6] = mask[10] = 1; /* one region; plus a second in another image */
    for (int i = 0; i < 16; i++) map[i] = mask[i] ? 2.0f + i : 0.01f * i;
    uint8_t mask2[16] = {0};
    mask2[0] = 1;
    float map2[16];
    for (int i = 0; i < 16; i++) map2[i] = mask2[i] ? 5.0f : -1.0f;
    drdc_pixel_accum *acc = NULL;
    CHECK_OK(drdc_pixel_accum_create(&acc, 0));
    CHECK_OK(drdc_pixel_accum_add(acc, map, mask, 4, 4));
    CHECK_OK(drdc_pixel_accum_add(acc, map2, mask2, 4, 4));
    drdc_pixel_metrics pm;
    CHECK_OK(drdc_pixel_accum_finalize(acc, DRDC_AUPRO_FPR_LIMIT, &pm));
    CHECK(pm.curve.auroc == 1.0 && pm.curve.ap == 1.0 && pm.curve.f1_max == 1.0);
    CHECK_NEAR(pm.aupro, 1.0, 1e-12);
    CHECK(pm.n_regions == 2);
    drdc_pixel_accum_free(acc);
}

/* Scores that rank every anomaly below every normal sample: AUROC 0 (not flipped to 1). */
static void test_reversed_scores(void) {
    float s[6] = {0.9f, 0.1f, 0.8f, 0.2f, 0.7f, 0.05f};
    uint8_t l[6] = {0, 1, 0, 1, 0, 1};
    drdc_curve_metrics m;
    CHECK_OK(drdc_image_metrics(s, l, 6, &m));
    CHECK(m.auroc == 0.0);
    CHECK(m.ap < 1.0);
    float map[16];
    uint8_t mask[16] = {0};
    mask[0] = mask[15] = 1;
    for (int i = 0; i < 16; i++) map[i] = mask[i] ? -1.0f : (float)i;
    drdc_pixel_accum *acc = NULL;
    CHECK_OK(drdc_pixel_accum_create(&acc, 16));
    CHECK_OK(drdc_pixel_accum_add(acc, map, mask, 4, 4));
    drdc_pixel_metrics pm;
    CHECK_OK(drdc_pixel_accum_finalize(acc, DRDC_AUPRO_FPR_LIMIT, &pm));
    CHECK(pm.curve.auroc == 0.0);
    CHECK(pm.aupro == 0.0);
    drdc_pixel_accum_free(acc);
}

/* scikit-learn's documented example: y = [0 0 1 1], s = [.1 .4 .35 .8]: AUROC .75, AP .8333. */
static void test_textbook_example(void) {
    float s[4] = {0.1f, 0.4f, 0.35f, 0.8f};
    uint8_t l[4] = {0, 0, 1, 1};
    drdc_curve_metrics m;
    CHECK_OK(drdc_image_metrics(s, l, 4, &m));
    CHECK_NEAR(m.auroc, 0.75, 1e-12);
    CHECK_NEAR(m.ap, 0.8333333333333333, 1e-12);
    CHECK_NEAR(m.f1_max, 0.8, 1e-12); /* t = .35: P = 2/3, R = 1 */
    CHECK(m.f1_threshold == 0.35f);
}

/* AUPRO by hand: two one-pixel regions and 10 normal pixels in one 3x4 image. Thresholds:
 * 9 (OK: FPR .1, PRO 0), 8 (region 1: .1, .5), 7 (OK: .2, .5), 6 (OK: .3, .5), ..., .25 (OK:
 * 1, .5), .125 (region 2: 1, 1). Area to .3 = 0 + .5*.1 + .5*.1 = .1, / .3 = 1/3. */
static void test_aupro_by_hand(void) {
    float map[12] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0.5f, 0.25f, 0.125f};
    uint8_t mask[12] = {0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    /* pixels 1 and 11: (0,1) and (2,3) are not neighbours -> two regions */
    drdc_pixel_accum *acc = NULL;
    CHECK_OK(drdc_pixel_accum_create(&acc, 0));
    CHECK_OK(drdc_pixel_accum_add(acc, map, mask, 3, 4));
    drdc_pixel_metrics pm;
    CHECK_OK(drdc_pixel_accum_finalize(acc, DRDC_AUPRO_FPR_LIMIT, &pm));
    CHECK(pm.n_regions == 2);
    CHECK_NEAR(pm.aupro, (0.5 * 0.2) / 0.3, 1e-12);
    /* the same with limit 1: the last region pixel comes after all 10 OK pixels */
    CHECK_OK(drdc_pixel_accum_finalize(acc, 1.0, &pm));
    CHECK_NEAR(pm.aupro, 0.5 * 0.9 / 1.0, 1e-12);
    /* the PRO curve walked to .3: (0,0) (.1,0) (.1,.5) (.2,.5) (.3,.5), area / .3 = AUPRO; to
     * .25 it ends at the interpolated (.25,.5) */
    const double limits[2] = {0.3, 0.25}, want_x[2][5] = {{0, .1, .1, .2, .3}, {0, .1, .1, .2, .25}};
    for (int l = 0; l < 2; l++) {
        drdc_curves c;
        CHECK_OK(drdc_pixel_accum_finalize_curves(acc, limits[l], &pm, &c, 0));
        CHECK(c.pro.n == 5 && c.pro_fpr_limit == limits[l]);
        double area = 0.0;
        for (size_t i = 0; i < 5 && i < c.pro.n; i++) {
            CHECK_NEAR(c.pro.x[i], want_x[l][i], 1e-15);
            CHECK_NEAR(c.pro.y[i], i < 2 ? 0.0 : 0.5, 1e-15);
            if (i) area += 0.5 * (c.pro.y[i] + c.pro.y[i - 1]) * (c.pro.x[i] - c.pro.x[i - 1]);
        }
        CHECK_NEAR(area / limits[l], pm.aupro, 1e-6);
        drdc_curves_free(&c);
    }
    CHECK_NEAR(pm.aupro, 0.5 * 0.15 / 0.25, 1e-12);
    drdc_pixel_accum_free(acc);
}

/* A non-finite score is an error naming the image and pixel, and leaves the accumulator as it was. */
static void test_nonfinite_rejected(void) {
    float map[4] = {0.1f, 0.2f, NAN, 0.4f};
    uint8_t mask[4] = {1, 0, 0, 0};
    drdc_pixel_accum *acc = NULL;
    CHECK_OK(drdc_pixel_accum_create(&acc, 0));
    CHECK_ERR(drdc_pixel_accum_add(acc, map, mask, 2, 2), DRDC_ERR_NUMERIC, "image 0 has score nan at row 1, column 0");
    CHECK(drdc_pixel_accum_pixels(acc) == 0);
    map[2] = INFINITY;
    CHECK_ERR(drdc_pixel_accum_add(acc, map, mask, 2, 2), DRDC_ERR_NUMERIC, "inf");
    CHECK_ERR(drdc_pixel_accum_finalize(acc, 0.3, &(drdc_pixel_metrics){0}), DRDC_ERR_INPUT, "no pixels");
    CHECK_ERR(drdc_pixel_accum_add(acc, map, mask, 0, 2), DRDC_ERR_INPUT, "size 0x2");
    drdc_pixel_accum_free(acc);
    float s[2] = {0.5f, NAN};
    uint8_t l[2] = {0, 1};
    CHECK_ERR(drdc_image_metrics(s, l, 2, &(drdc_curve_metrics){0}), DRDC_ERR_NUMERIC, "image 1");
}

/* The documented footprint: 8 bytes per pixel (plus a small fixed part and the region table). */
static void test_memory_per_pixel(void) {
    const int h = 500, w = 400;
    float *map = malloc((size_t)h * w * sizeof *map);
    uint8_t *mask = calloc((size_t)h * w, 1);
    for (int i = 0; i < h * w; i++) map[i] = (float)(i % 977);
    for (int y = 100; y < 140; y++)
        for (int x = 50; x < 90; x++) mask[y * w + x] = 1;
    drdc_pixel_accum *acc = NULL;
    CHECK_OK(drdc_pixel_accum_create(&acc, 3 * (uint64_t)h * w));
    for (int i = 0; i < 3; i++) CHECK_OK(drdc_pixel_accum_add(acc, map, mask, h, w));
    CHECK(drdc_pixel_accum_pixels(acc) == 3 * (uint64_t)h * w);
    size_t bytes = drdc_pixel_accum_bytes(acc);
    CHECK(bytes <= 8 * 3 * (size_t)h * w + 4096);
    drdc_pixel_metrics pm;
    CHECK_OK(drdc_pixel_accum_finalize(acc, DRDC_AUPRO_FPR_LIMIT, &pm));
    CHECK(drdc_pixel_accum_bytes(acc) == bytes); /* finalize sorts in place */
    CHECK(pm.n_regions == 3);
    drdc_pixel_accum_free(acc);
    free(map);
    free(mask);
}

int main(void) {
    make_cases();
    RUN(test_perfect_scores);
    RUN(test_reversed_scores);
    RUN(test_textbook_example);
    RUN(test_aupro_by_hand);
    RUN(test_nonfinite_rejected);
    RUN(test_memory_per_pixel);
    int failures_before = tl_failures;
    tl_failures = 0;
    run_reference();
    int ref_failed = tl_failures;
    tl_failures = failures_before;
    if (!g_ref && !ref_failed) {
        free_cases();
        int rc = test_summary();
        if (rc != 0) return rc;
        char why[1500];
        snprintf(why, sizeof why, "reference comparisons not run: %s", g_ref_why);
        test_skip(why);
    }
    if (!g_ref) {
        fprintf(stderr, "FAIL reference: %s\n", g_ref_why);
        free_cases();
        test_summary();
        return 1;
    }
    RUN(test_random_image);
    RUN(test_random_pixel);
    RUN(test_ties_image);
    RUN(test_ties_pixel);
    RUN(test_tiny_image);
    RUN(test_tiny_pixel);
    RUN(test_diagonal_regions_pixel);
    RUN(test_salt_regions_pixel);
    RUN(test_signed_scores_image);
    RUN(test_signed_scores_pixel);
    RUN(test_single_class_image);
    RUN(test_single_class_pixel);
    cJSON_Delete(g_ref);
    free_cases();
    return test_summary();
}
