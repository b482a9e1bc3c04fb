/* test_report.c: the HTML evaluation report (model/report.h) from a hand-made drdc_report: two
 * methods, two categories (one named with '<', '&' and '"'), real curves from metrics.h, a few
 * images with panels. Checks the page as text: the doctype, the table values, escaping, one
 * <svg> per chart, the images worst first, nothing from the network and no script.
 *
 * It also leaves the page, its panels and the values it must show in
 * $DRDC_TEST_TMP/test_report/ (report.html, panels/, values.txt) for the browser test
 * tests/e2e/test_report_browser.sh, which runs this binary to make them. */
#include "testlib.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "drdc/core/fsutil.h"
#include "drdc/formats/image.h"
#include "drdc/model/report.h"
#include "drdc/stages/heatmap.h"

#define N_METHODS 2
#define N_CATS 2
#define N_METRICS 4

static const char *const METHODS[N_METHODS] = {"base", "drdc"};
static const char *const CATS[N_CATS] = {"bottle", "screw <M&M> \"x\""};
static const char *const CATS_ESCAPED[N_CATS] = {"bottle", "screw &lt;M&amp;M&gt; &quot;x&quot;"};
static const char *const METRICS[N_METRICS] = {"Image AUROC", "Pixel AUROC", "AUPRO", "Image F1-max"};

/* values[method][category or mean][metric]: distinctive numbers; screw has no pixel metrics. */
static const double VALUES[N_METHODS][N_CATS + 1][N_METRICS] = {
    {{0.9123, 0.9456, 0.8012, 0.8833}, {0.7345, NAN, NAN, 0.7111}, {0.8234, 0.9456, 0.8012, 0.7972}},
    {{0.9871, 0.9765, 0.9102, 0.9555}, {0.8642, NAN, NAN, 0.8222}, {0.9257, 0.9765, 0.9102, 0.8889}},
};

static uint64_t rng_state = 42;
static double rng_unif(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* Curves of a random ranking problem whose separation grows with `skill`. */
static void make_curves(drdc_curves *img, drdc_curves *pix, double skill, int with_pixels) {
    enum { N = 120 };
    float s[N];
    uint8_t l[N];
    for (int i = 0; i < N; i++) {
        l[i] = i % 3 == 0;
        s[i] = (float)(rng_unif() + (l[i] ? skill : 0.0));
    }
    drdc_curve_metrics m;
    CHECK_OK(drdc_image_metrics_curves(s, l, N, &m, img, DRDC_CURVE_POINTS));
    memset(pix, 0, sizeof *pix);
    if (!with_pixels) return;
    drdc_pixel_accum *acc = NULL;
    CHECK_OK(drdc_pixel_accum_create(&acc, 0));
    enum { H = 40, W = 40 };
    float map[H * W];
    uint8_t mask[H * W];
    for (int k = 0; k < 6; k++) {
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int d = k % 2 && (x - 10 - 3 * k) * (x - 10 - 3 * k) + (y - 20) * (y - 20) < 36 + 10 * k;
                mask[y * W + x] = (uint8_t)d;
                map[y * W + x] = (float)(rng_unif() + (d ? skill : 0.0));
            }
        CHECK_OK(drdc_pixel_accum_add(acc, map, mask, H, W));
    }
    drdc_pixel_metrics pm;
    CHECK_OK(drdc_pixel_accum_finalize_curves(acc, DRDC_AUPRO_FPR_LIMIT, &pm, pix, DRDC_CURVE_POINTS));
    drdc_pixel_accum_free(acc);
}

/* A panel like eval's: image | truth | one map per method, 96 px tiles. */
static void write_panel(const char *path, int defect, double strength) {
    enum { T = 96, GAP = 4, NT = 2 + N_METHODS };
    drdc_image p = {0};
    CHECK_OK(drdc_image_alloc(&p, NT * T + (NT - 1) * GAP, T, 3));
    if (!p.data) return;
    for (size_t i = 0; i < (size_t)p.w * p.h * 3; i++) p.data[i] = 1.0f;
    for (int t = 0; t < NT; t++)
        for (int y = 0; y < T; y++)
            for (int x = 0; x < T; x++) {
                double d2 = (x - 60.0) * (x - 60.0) + (y - 40.0) * (y - 40.0);
                int in = defect && d2 < 150.0;
                float rgb[3];
                if (t == 0) { /* a grey part with a dark scratch */
                    float g = (float)(0.55 + 0.25 * sin(x * 0.2) * cos(y * 0.15));
                    rgb[0] = rgb[1] = rgb[2] = in ? 0.15f : g;
                } else if (t == 1) {
                    rgb[0] = rgb[1] = rgb[2] = in ? 1.0f : 0.0f;
                } else {
                    double heat = exp(-d2 / 300.0) * strength * (t == 2 ? 0.6 : 1.0);
                    drdc_colormap_turbo((float)heat, rgb);
                }
                float *px = &p.data[((size_t)y * p.w + (size_t)t * (T + GAP) + x) * 3];
                memcpy(px, rgb, sizeof rgb);
            }
    CHECK_OK(drdc_image_write_png(path, &p));
    drdc_image_free(&p);
}

/* ---- the hand-made report ---------------------------------------------------------------- */

enum { N_IMAGES = 7 };
static drdc_curves g_img[N_METHODS * N_CATS], g_pix[N_METHODS * N_CATS];
static drdc_report_threshold g_thr[N_METHODS * N_CATS];
static drdc_report_image g_images[N_IMAGES];
static char g_panels[N_IMAGES][128];
static const char *g_about[2] = {"model: runs/all & more/model.safetensors",
                                 "settings: steps=5, tau=0.5 <default>"};
static const char *g_notes[N_CATS] = {NULL, "no defect mask: pixel metrics need anomalous pixels"};

/* The expected order of the images on the page (indices into g_images). */
static const int EXPECTED_ORDER[N_IMAGES] = {2, 0, 5, 4, 6, 1, 3};

static void make_report(drdc_report *r, const char *dir) {
    for (int m = 0; m < N_METHODS; m++)
        for (int c = 0; c < N_CATS; c++) {
            make_curves(&g_img[m * N_CATS + c], &g_pix[m * N_CATS + c], 0.3 + 0.5 * m + 0.1 * c, c == 0);
            g_thr[m * N_CATS + c] = (drdc_report_threshold){.threshold = 1.5 + m + 0.25 * c, .n_good = 20,
                .n_false_rejects = 2 - m - c, .n_defective = 30, .n_escapes = 5 - 2 * m - c};
        }
    g_thr[0 * N_CATS + 1].threshold = NAN; /* base has no threshold on screw */
    /* images judged by drdc (method 1): thresholds 2.5 (bottle), 2.75 (screw) */
    static const struct { int cat; const char *defect, *file; int label; double score; } spec[N_IMAGES] = {
        {0, "broken_large", "bottle/test/broken_large/000.png", 1, 2.40},  /* miss by .10 */
        {0, "good", "bottle/test/good/001.png", 0, 1.00},                  /* right, 1.50 away */
        {1, "scratch & dent", "screw <M&M> \"x\"/test/scratch & dent/002.png", 1, 1.75}, /* miss by 1.00 */
        {1, "good", "screw <M&M> \"x\"/test/good/003.png", 0, 0.50},       /* right, 2.25 away */
        {0, "good", "bottle/test/good/004.png", 0, 2.60},                  /* false alarm by .10 */
        {1, "good", "screw <M&M> \"x\"/test/good/005.png", 0, 3.75},       /* false alarm by 1.00 */
        {0, "contamination", "bottle/test/contamination/006.png", 1, 2.55}, /* right, .05 away */
    };
    for (int i = 0; i < N_IMAGES; i++) {
        double t = g_thr[1 * N_CATS + spec[i].cat].threshold;
        snprintf(g_panels[i], sizeof g_panels[i], "panels/%s/%s/%03d.png", CATS[spec[i].cat], spec[i].defect, i);
        g_images[i] = (drdc_report_image){.category = spec[i].cat, .defect = spec[i].defect, .path = spec[i].file,
            .label = spec[i].label, .score = spec[i].score, .threshold = t, .verdict = spec[i].score >= t,
            .panel = g_panels[i]};
        if (dir) {
            char path[1024], folder[1024];
            snprintf(path, sizeof path, "%s/%s", dir, g_panels[i]);
            snprintf(folder, sizeof folder, "%s/panels/%s/%s", dir, CATS[spec[i].cat], spec[i].defect);
            CHECK_OK(drdc_mkdirs(folder));
            write_panel(path, spec[i].label, spec[i].score / 3.0);
        }
    }
    *r = (drdc_report){.title = "Evaluation of \"model\" <test> & co", .n_about = 2, .about = g_about,
        .n_methods = N_METHODS, .methods = METHODS, .n_categories = N_CATS, .categories = CATS,
        .n_metrics = N_METRICS, .metrics = METRICS, .values = &VALUES[0][0][0], .notes = g_notes,
        .image_curves = g_img, .pixel_curves = g_pix, .thresholds = g_thr, .image_method = 1,
        .n_images = N_IMAGES, .images = g_images};
}

static void free_report(void) {
    for (int i = 0; i < N_METHODS * N_CATS; i++) {
        drdc_curves_free(&g_img[i]);
        drdc_curves_free(&g_pix[i]);
    }
}

/* ---- checks ------------------------------------------------------------------------------ */

static int count_of(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

static int contains_nocase(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (const char *p = hay; *p; p++)
        if (strncasecmp(p, needle, n) == 0) return 1;
    return 0;
}

/* Position of s in the page, or -1. */
static long pos_of(const char *page, const char *s) {
    const char *p = strstr(page, s);
    return p ? (long)(p - page) : -1;
}

static void test_order(void) {
    drdc_report r;
    make_report(&r, NULL);
    int order[N_IMAGES];
    drdc_report_order_images(g_images, N_IMAGES, order);
    for (int i = 0; i < N_IMAGES; i++) {
        if (order[i] != EXPECTED_ORDER[i]) fprintf(stderr, "order[%d] = %d, want %d\n", i, order[i], EXPECTED_ORDER[i]);
        CHECK(order[i] == EXPECTED_ORDER[i]);
    }
    free_report();
}

static void test_page(void) {
    const char *dir = test_tmpdir("test_report");
    drdc_report r;
    make_report(&r, dir);
    char path[1024];
    snprintf(path, sizeof path, "%s/report.html", dir);
    CHECK_OK(drdc_report_write(path, &r));
    char *page = NULL;
    size_t len = 0;
    CHECK_OK(drdc_read_file(path, &page, &len));
    if (!page) {
        free_report();
        return;
    }
    CHECK(strncmp(page, "<!DOCTYPE html>", 15) == 0);
    CHECK(len < 200 * 1024);
    /* every value as text, 4 decimals; n/a for the undefined ones */
    FILE *vf = NULL;
    char vpath[1100];
    snprintf(vpath, sizeof vpath, "%s/values.txt", dir);
    vf = fopen(vpath, "w");
    CHECK(vf != NULL);
    for (int m = 0; m < N_METHODS; m++)
        for (int c = 0; c <= N_CATS; c++)
            for (int k = 0; k < N_METRICS; k++) {
                if (isnan(VALUES[m][c][k])) continue;
                char v[32];
                snprintf(v, sizeof v, "%.4f", VALUES[m][c][k]);
                if (!strstr(page, v)) fprintf(stderr, "value %s is missing\n", v);
                CHECK(strstr(page, v) != NULL);
                if (vf) fprintf(vf, "%s\n", v);
            }
    if (vf) fclose(vf);
    CHECK(strstr(page, "<td class=\"na\" title=\"no defect mask: pixel metrics need anomalous pixels\">n/a</td>"));
    /* escaping: category, title, about lines; never the raw strings */
    CHECK(count_of(page, CATS_ESCAPED[1]) >= 4);
    CHECK(!strstr(page, CATS[1]));
    CHECK(!strstr(page, "<M&M>"));
    CHECK(strstr(page, "<title>Evaluation of &quot;model&quot; &lt;test&gt; &amp; co</title>"));
    CHECK(strstr(page, "runs/all &amp; more/model.safetensors"));
    CHECK(strstr(page, "tau=0.5 &lt;default&gt;"));
    CHECK(strstr(page, "scratch &amp; dent"));
    /* panel paths percent-encoded, relative */
    CHECK(strstr(page, "src=\"panels/screw%20%3CM%26M%3E%20%22x%22/scratch%20%26%20dent/002.png\""));
    CHECK(strstr(page, "src=\"panels/bottle/good/004.png\""));
    CHECK(count_of(page, "<img ") == N_IMAGES);
    /* one <svg> per chart: bottle has image ROC, PR, pixel ROC and PRO; screw only the image two */
    CHECK(count_of(page, "<svg") == 6);
    CHECK(count_of(page, "</svg>") == 6);
    CHECK(count_of(page, "<polyline") == 6 * N_METHODS);
    CHECK(strstr(page, "FPR limit 0.3"));
    CHECK(strstr(page, "PRO (FPR &le; 0.3)"));
    /* threshold table: drdc on bottle: 2.5000, 1/20 (5.0%) false rejects, 3/30 escapes */
    CHECK(strstr(page, "<td class=\"group\">2.5000</td><td class=\"warn\">1/20 (5.0%)</td>"
                       "<td class=\"bad\">3/30 (10.0%)</td>"));
    CHECK(strstr(page, "<td class=\"group\">2.7500</td><td>0/20 (0.0%)</td><td class=\"bad\">2/30 (6.7%)</td>"));
    /* base has no threshold on screw */
    CHECK(strstr(page, "<td class=\"group na\">n/a</td><td class=\"na\">n/a</td><td class=\"na\">n/a</td>"));
    /* pooled: base counts only bottle: 2 / 20, 5 / 30 */
    CHECK(strstr(page, "<td class=\"group\"></td><td class=\"warn\">2/20 (10.0%)</td>"
                       "<td class=\"bad\">5/30 (16.7%)</td>"));
    /* images worst first: the misses (largest miss first), the false alarms, then the rest */
    long last = -1;
    for (int i = 0; i < N_IMAGES; i++) {
        char esc[256];
        /* the paths of screw images are escaped on the page */
        const char *p = g_images[EXPECTED_ORDER[i]].path;
        size_t k = 0;
        for (; *p && k + 8 < sizeof esc; p++) {
            const char *e = *p == '<' ? "&lt;" : *p == '>' ? "&gt;" : *p == '&' ? "&amp;" : *p == '"' ? "&quot;" : NULL;
            if (e) {
                memcpy(esc + k, e, strlen(e));
                k += strlen(e);
            } else {
                esc[k++] = *p;
            }
        }
        esc[k] = 0;
        char needle[300];
        snprintf(needle, sizeof needle, "<div class=\"path\">%s</div>", esc);
        long at = pos_of(page, needle);
        if (at < 0) fprintf(stderr, "image %s is missing\n", needle);
        CHECK(at > last);
        last = at;
    }
    long first_ok = pos_of(page, "class=\"img ok\""), last_miss = -1;
    for (const char *p = strstr(page, "class=\"img miss\""); p; p = strstr(p + 1, "class=\"img miss\""))
        last_miss = (long)(p - page);
    CHECK(last_miss >= 0 && first_ok > last_miss);
    CHECK(count_of(page, "class=\"img miss\"") == 2 && count_of(page, "class=\"img alarm\"") == 2);
    CHECK(strstr(page, "2 misses") && strstr(page, "2 false alarms"));
    /* nothing from the network, no script */
    CHECK(!strstr(page, "http://") && !strstr(page, "https://"));
    CHECK(!contains_nocase(page, "<script"));
    CHECK(!contains_nocase(page, "@import") && !contains_nocase(page, "url("));
    free(page);
    free_report();
}

static void test_errors(void) {
    const char *dir = test_tmpdir("test_report_errors");
    char path[1024];
    snprintf(path, sizeof path, "%s/r.html", dir);
    drdc_report r;
    make_report(&r, NULL);
    CHECK_ERR(drdc_report_write(NULL, &r), DRDC_ERR_INPUT, "NULL");
    drdc_report_image bad = g_images[0];
    bad.category = N_CATS;
    drdc_report rb = r;
    rb.images = &bad;
    rb.n_images = 1;
    CHECK_ERR(drdc_report_write(path, &rb), DRDC_ERR_INPUT, "category 2 of 2");
    CHECK(!drdc_is_file(path));
    rb = r;
    rb.n_methods = 0;
    CHECK_ERR(drdc_report_write(path, &rb), DRDC_ERR_INPUT, "without methods");
    /* a folder that does not exist: an I/O error naming the file */
    snprintf(path, sizeof path, "%s/missing/r.html", dir);
    CHECK_ERR(drdc_report_write(path, &r), DRDC_ERR_IO, "missing/r.html");
    /* the minimum: no curves, thresholds or images */
    rb = (drdc_report){.n_methods = 1, .methods = METHODS, .n_categories = 1, .categories = CATS,
                       .n_metrics = 1, .metrics = METRICS, .values = (const double[2]){0.5, 0.5}};
    snprintf(path, sizeof path, "%s/min.html", dir);
    CHECK_OK(drdc_report_write(path, &rb));
    char *page = NULL;
    size_t len = 0;
    CHECK_OK(drdc_read_file(path, &page, &len));
    CHECK(page && strstr(page, "<title>drdc evaluation</title>") && !strstr(page, "<svg") &&
          strstr(page, "</html>"));
    free(page);
    free_report();
}

int main(void) {
    RUN(test_order);
    RUN(test_page);
    RUN(test_errors);
    return test_summary();
}
