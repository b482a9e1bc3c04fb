/* test_curves.c: the ROC, PR and PRO curves of metrics.h (drdc_image_metrics_curves,
 * drdc_pixel_accum_finalize_curves): at full resolution their areas are the reported AUROC, AP
 * and AUPRO; thinned, they keep their start and end, stay monotone where they must, are made of
 * the full curve's own points, spread evenly in arc length; the metrics are bit for bit those of
 * the plain functions. Needs no Python. */
#include "testlib.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "drdc/stages/metrics.h"

static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s * 0x9E3779B97F4A7C15ull + 1; }
static double rng_unif(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* ---- helpers over a curve ---------------------------------------------------------------- */

static double trapezoid(const drdc_curve *c) {
    double a = 0.0;
    for (size_t i = 1; i < c->n; i++) a += 0.5 * (c->y[i] + c->y[i - 1]) * (c->x[i] - c->x[i - 1]);
    return a;
}

/* AP's step rule over a PR curve: sum (r_i - r_{i-1}) p_i from r_0 = 0. */
static double step_area(const drdc_curve *c) {
    double a = 0.0, r0 = 0.0;
    for (size_t i = 0; i < c->n; i++) {
        a += (c->x[i] - r0) * c->y[i];
        r0 = c->x[i];
    }
    return a;
}

static int nondecreasing(const double *v, size_t n) {
    for (size_t i = 1; i < n; i++)
        if (v[i] < v[i - 1]) return 0;
    return 1;
}

static double seg(const drdc_curve *c, size_t i, double x_range) { /* length of segment i-1 -> i */
    double dx = (c->x[i] - c->x[i - 1]) / x_range, dy = c->y[i] - c->y[i - 1];
    return sqrt(dx * dx + dy * dy);
}

/* Checks that thin is made of full's points in full's order, with full's first and last point,
 * and spread evenly: between two kept points the arc along the full curve, less the last
 * segment (one jump may be any length), is at most 4 x total / (max_points - 1). */
static void check_thinned(const char *what, const drdc_curve *thin, const drdc_curve *full,
                          int max_points, double x_range) {
    CHECK(thin->n >= 2 && thin->n <= (size_t)max_points);
    CHECK(thin->n == full->n || thin->n >= (size_t)max_points / 4);
    if (thin->n < 2) return;
    CHECK(thin->x[0] == full->x[0] && thin->y[0] == full->y[0]);
    CHECK(thin->x[thin->n - 1] == full->x[full->n - 1] && thin->y[thin->n - 1] == full->y[full->n - 1]);
    double *arc = malloc(full->n * sizeof *arc);
    arc[0] = 0.0;
    for (size_t i = 1; i < full->n; i++) arc[i] = arc[i - 1] + seg(full, i, x_range);
    double bound = 4.0 * arc[full->n - 1] / (double)(max_points - 1) + 1e-12;
    size_t j = 0, prev = 0;
    int subsequence = 1, even = 1;
    for (size_t k = 0; k < thin->n; k++) {
        while (j < full->n && !(full->x[j] == thin->x[k] && full->y[j] == thin->y[k])) j++;
        if (j == full->n) {
            subsequence = 0;
            break;
        }
        if (k > 0 && arc[j] - arc[prev] - seg(full, j, x_range) > bound) {
            even = 0;
            fprintf(stderr, "%s: kept points %zu and %zu are %.6g apart along the curve (bound %.6g)\n",
                    what, prev, j, arc[j] - arc[prev], bound);
        }
        prev = j++;
    }
    if (!subsequence) fprintf(stderr, "%s: a kept point is not one of the full curve's\n", what);
    CHECK(subsequence);
    CHECK(even);
    free(arc);
}

/* The same numbers, bit for bit (fields, not memcmp: the structs have padding). */
static int same_curve_metrics(const drdc_curve_metrics *a, const drdc_curve_metrics *b) {
    return memcmp(&a->auroc, &b->auroc, sizeof a->auroc) == 0 && memcmp(&a->ap, &b->ap, sizeof a->ap) == 0 &&
           memcmp(&a->f1_max, &b->f1_max, sizeof a->f1_max) == 0 &&
           memcmp(&a->f1_threshold, &b->f1_threshold, sizeof a->f1_threshold) == 0 &&
           a->n_positive == b->n_positive && a->n_negative == b->n_negative;
}

static int same_pixel_metrics(const drdc_pixel_metrics *a, const drdc_pixel_metrics *b) {
    return same_curve_metrics(&a->curve, &b->curve) && memcmp(&a->aupro, &b->aupro, sizeof a->aupro) == 0 &&
           a->aupro_fpr_limit == b->aupro_fpr_limit && a->n_regions == b->n_regions && a->n_images == b->n_images;
}

/* ---- cases -------------------------------------------------------------------------------- */

/* n image scores, ~30% anomalous; ties: scores on a grid of 6 values. */
static void make_images(size_t n, int ties, float *scores, uint8_t *labels) {
    for (size_t i = 0; i < n; i++) {
        labels[i] = rng_unif() < 0.3;
        double v = rng_unif() + (labels[i] ? 0.5 : 0.0);
        scores[i] = ties ? (float)floor(v * 4.0) : (float)v;
    }
}

/* An accumulator of n_maps h x w maps with rectangular defects and noisy scores. */
static drdc_pixel_accum *make_pixels(int n_maps, int h, int w) {
    drdc_pixel_accum *acc = NULL;
    CHECK_OK(drdc_pixel_accum_create(&acc, 0));
    float *map = malloc((size_t)h * w * sizeof *map);
    uint8_t *mask = malloc((size_t)h * w);
    for (int m = 0; m < n_maps; m++) {
        memset(mask, 0, (size_t)h * w);
        if (m % 3) {
            int y0 = (int)(rng_unif() * h * 0.7), x0 = (int)(rng_unif() * w * 0.7);
            int rh = 1 + (int)(rng_unif() * h * 0.3), rw = 1 + (int)(rng_unif() * w * 0.3);
            for (int y = y0; y < y0 + rh && y < h; y++)
                for (int x = x0; x < x0 + rw && x < w; x++) mask[y * w + x] = 1;
        }
        for (int i = 0; i < h * w; i++) map[i] = (float)(rng_unif() + (mask[i] ? 0.45 : 0.0));
        CHECK_OK(drdc_pixel_accum_add(acc, map, m % 3 ? mask : NULL, h, w));
    }
    free(map);
    free(mask);
    return acc;
}

/* ---- tests -------------------------------------------------------------------------------- */

/* Full resolution: ROC area = AUROC and PR step area = AP to 1e-12; ROC from (0,0) to (1,1). */
static void test_image_full_resolution(void) {
    for (int ties = 0; ties < 2; ties++) {
        rng_seed(11 + (uint64_t)ties);
        size_t n = 400;
        float scores[400];
        uint8_t labels[400];
        make_images(n, ties, scores, labels);
        drdc_curve_metrics m, plain;
        drdc_curves c;
        CHECK_OK(drdc_image_metrics_curves(scores, labels, n, &m, &c, 0));
        CHECK_OK(drdc_image_metrics(scores, labels, n, &plain));
        CHECK(same_curve_metrics(&m, &plain));
        CHECK_NEAR(trapezoid(&c.roc), m.auroc, 1e-12);
        CHECK_NEAR(step_area(&c.pr), m.ap, 1e-12);
        CHECK(c.roc.x[0] == 0.0 && c.roc.y[0] == 0.0);
        CHECK(c.roc.x[c.roc.n - 1] == 1.0 && c.roc.y[c.roc.n - 1] == 1.0);
        CHECK(nondecreasing(c.roc.x, c.roc.n) && nondecreasing(c.roc.y, c.roc.n));
        CHECK(nondecreasing(c.pr.x, c.pr.n));
        CHECK(c.pr.x[c.pr.n - 1] == 1.0);
        CHECK_NEAR(c.pr.y[c.pr.n - 1], (double)m.n_positive / (double)n, 1e-15);
        CHECK(c.roc.n == c.pr.n + 1); /* one point per threshold, plus the ROC's start */
        CHECK(ties ? c.pr.n <= 6 : c.pr.n == n);
        CHECK(c.pro.n == 0 && c.pro_fpr_limit == 0.0);
        drdc_curves_free(&c);
        CHECK(c.roc.n == 0 && c.roc.x == NULL);
    }
}

/* Thinned image curves: at most max_points, (0,0) to (1,1), monotone, the full curve's own
 * points, evenly spread; the metrics unchanged. */
static void test_image_thinned(void) {
    rng_seed(5);
    size_t n = 3000;
    float *scores = malloc(n * sizeof *scores);
    uint8_t *labels = malloc(n);
    make_images(n, 0, scores, labels);
    drdc_curves full, thin;
    drdc_curve_metrics mf, mt;
    CHECK_OK(drdc_image_metrics_curves(scores, labels, n, &mf, &full, 0));
    const int budgets[] = {2, 3, 20, 200, 2999, 3001, 5000};
    for (size_t b = 0; b < sizeof budgets / sizeof *budgets; b++) {
        int mp = budgets[b];
        CHECK_OK(drdc_image_metrics_curves(scores, labels, n, &mt, &thin, mp));
        CHECK(same_curve_metrics(&mf, &mt));
        CHECK(thin.roc.x[0] == 0.0 && thin.roc.y[0] == 0.0);
        CHECK(thin.roc.x[thin.roc.n - 1] == 1.0 && thin.roc.y[thin.roc.n - 1] == 1.0);
        CHECK(nondecreasing(thin.roc.x, thin.roc.n) && nondecreasing(thin.roc.y, thin.roc.n));
        CHECK(nondecreasing(thin.pr.x, thin.pr.n));
        char what[64];
        snprintf(what, sizeof what, "image ROC, %d points", mp);
        check_thinned(what, &thin.roc, &full.roc, mp, 1.0);
        snprintf(what, sizeof what, "image PR, %d points", mp);
        check_thinned(what, &thin.pr, &full.pr, mp, 1.0);
        if ((size_t)mp >= n + 1) CHECK(thin.roc.n == full.roc.n); /* room for all: nothing dropped */
        if (mp == 200) CHECK_NEAR(trapezoid(&thin.roc), mf.auroc, 0.01);
        drdc_curves_free(&thin);
    }
    drdc_curves_free(&full);
    free(scores);
    free(labels);
}

/* Pixel curves: full resolution areas are AUROC, AP and AUPRO; thinned ones keep the shape. */
static void test_pixel_curves(void) {
    rng_seed(7);
    drdc_pixel_accum *acc = make_pixels(12, 48, 64);
    drdc_pixel_metrics plain, pf, pt;
    drdc_curves full, thin;
    CHECK_OK(drdc_pixel_accum_finalize(acc, DRDC_AUPRO_FPR_LIMIT, &plain));
    CHECK_OK(drdc_pixel_accum_finalize_curves(acc, DRDC_AUPRO_FPR_LIMIT, &pf, &full, 0));
    CHECK(same_pixel_metrics(&plain, &pf));
    CHECK_NEAR(trapezoid(&full.roc), pf.curve.auroc, 1e-12);
    CHECK_NEAR(step_area(&full.pr), pf.curve.ap, 1e-12);
    CHECK_NEAR(trapezoid(&full.pro) / DRDC_AUPRO_FPR_LIMIT, pf.aupro, 1e-12);
    CHECK(full.pro_fpr_limit == DRDC_AUPRO_FPR_LIMIT);
    CHECK(full.pro.x[0] == 0.0 && full.pro.y[0] == 0.0);
    CHECK(full.pro.x[full.pro.n - 1] == DRDC_AUPRO_FPR_LIMIT);
    CHECK(nondecreasing(full.pro.x, full.pro.n) && nondecreasing(full.pro.y, full.pro.n));
    CHECK(full.pr.n > 48 * 64 * 12 * 9 / 10); /* continuous scores: nearly every pixel a threshold */
    CHECK(full.roc.n == full.pr.n + 1);
    CHECK_OK(drdc_pixel_accum_finalize_curves(acc, DRDC_AUPRO_FPR_LIMIT, &pt, &thin, DRDC_CURVE_POINTS));
    CHECK(same_pixel_metrics(&plain, &pt));
    check_thinned("pixel ROC", &thin.roc, &full.roc, DRDC_CURVE_POINTS, 1.0);
    check_thinned("pixel PR", &thin.pr, &full.pr, DRDC_CURVE_POINTS, 1.0);
    /* the PRO curve's last point is the interpolated one at the limit, which both share */
    check_thinned("pixel PRO", &thin.pro, &full.pro, DRDC_CURVE_POINTS, DRDC_AUPRO_FPR_LIMIT);
    CHECK(nondecreasing(thin.pro.x, thin.pro.n) && nondecreasing(thin.pro.y, thin.pro.n));
    CHECK(thin.roc.x[thin.roc.n - 1] == 1.0 && thin.roc.y[thin.roc.n - 1] == 1.0);
    CHECK_NEAR(trapezoid(&thin.pro) / DRDC_AUPRO_FPR_LIMIT, pf.aupro, 0.01);
    drdc_curves_free(&full);
    drdc_curves_free(&thin);
    drdc_pixel_accum_free(acc);
}

/* The PRO curve of a crossing segment that rises (test_metrics checks a flat one by hand):
 * two one-pixel regions and 10 normal pixels; the first threshold (9) ties a normal pixel with
 * region 1's only pixel, so the curve goes (0,0) -> (.1,.5); to 0.05 it ends at the
 * interpolated (.05,.25): area .00625, / .05 = AUPRO = .125. */
static void test_pro_rising_crossing(void) {
    uint8_t mask[12] = {0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    drdc_pixel_accum *acc = NULL;
    drdc_pixel_metrics pm;
    drdc_curves c;
    float map[12] = {9, 9, 7, 6, 5, 4, 3, 2, 1, 0.5f, 0.25f, 0.125f};
    CHECK_OK(drdc_pixel_accum_create(&acc, 0));
    CHECK_OK(drdc_pixel_accum_add(acc, map, mask, 3, 4));
    CHECK_OK(drdc_pixel_accum_finalize_curves(acc, 0.05, &pm, &c, 0));
    CHECK(c.pro.n == 2);
    if (c.pro.n == 2) {
        CHECK_NEAR(c.pro.x[1], 0.05, 1e-15);
        CHECK_NEAR(c.pro.y[1], 0.25, 1e-15);
    }
    CHECK_NEAR(trapezoid(&c.pro) / 0.05, pm.aupro, 1e-6);
    CHECK_NEAR(pm.aupro, 0.125, 1e-12);
    drdc_curves_free(&c);
    drdc_pixel_accum_free(acc);
}

/* Errors leave the curves zeroed; a budget of 1 point is refused. */
static void test_errors(void) {
    float s[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    uint8_t l[4] = {0, 1, 0, 1}, none[4] = {0};
    drdc_curve_metrics m;
    drdc_curves c;
    memset(&c, 0xAB, sizeof c);
    CHECK_ERR(drdc_image_metrics_curves(s, l, 4, &m, &c, 1), DRDC_ERR_INPUT, "at least 2 points");
    CHECK(c.roc.n == 0 && c.roc.x == NULL && c.pr.y == NULL);
    memset(&c, 0xAB, sizeof c);
    CHECK_ERR(drdc_image_metrics_curves(s, none, 4, &m, &c, 10), DRDC_ERR_INPUT, "all 4 images are normal");
    CHECK(c.roc.n == 0 && c.roc.x == NULL);
    CHECK_ERR(drdc_image_metrics_curves(s, l, 4, &m, NULL, 10), DRDC_ERR_INPUT, "NULL curves");
    drdc_pixel_accum *acc = NULL;
    CHECK_OK(drdc_pixel_accum_create(&acc, 0));
    CHECK_OK(drdc_pixel_accum_add(acc, s, NULL, 2, 2));
    drdc_pixel_metrics pm;
    memset(&c, 0xAB, sizeof c);
    CHECK_ERR(drdc_pixel_accum_finalize_curves(acc, 0.3, &pm, &c, 10), DRDC_ERR_INPUT, "all 4 pixels");
    CHECK(c.pro.n == 0 && c.pro.x == NULL);
    uint8_t mask[4] = {1, 0, 0, 0};
    CHECK_OK(drdc_pixel_accum_add(acc, s, mask, 2, 2));
    memset(&c, 0xAB, sizeof c);
    CHECK_ERR(drdc_pixel_accum_finalize_curves(acc, 0.3, &pm, &c, -3), DRDC_ERR_INPUT,
              "pixel metrics: a curve needs at least 2 points (asked for -3");
    CHECK(c.pro.n == 0 && c.pro.x == NULL);
    CHECK_OK(drdc_pixel_accum_finalize_curves(acc, 0.3, &pm, &c, 2));
    CHECK(c.roc.n == 2 && c.pr.n == 2 && c.pro.n == 2);
    drdc_curves_free(&c);
    drdc_pixel_accum_free(acc);
    drdc_curves_free(NULL);
}

int main(void) {
    RUN(test_image_full_resolution);
    RUN(test_image_thinned);
    RUN(test_pixel_curves);
    RUN(test_pro_rising_crossing);
    RUN(test_errors);
    return test_summary();
}
