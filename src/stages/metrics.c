/* metrics.c: exact image- and pixel-level AUROC, AP, F1-max and AUPRO (see metrics.h).
 *
 * Every sample becomes one 64-bit key: the high 32 bits are an order key of its score (smaller
 * key = higher score, so an ascending sort lists scores from high to low), the low 32 bits say
 * what the sample is: 0 a normal sample, otherwise a positive one (pixel level: 1 + the index
 * of its ground-truth region, whose size gives its AUPRO weight). The keys are sorted in place
 * by an MSD radix sort on the high 32 bits, then one sweep walks the thresholds (runs of equal
 * score keys) and accumulates every curve at once; when curves are asked for, the same sweep
 * feeds each point to a streaming sampler that thins it by arc length (drdc_curves). */
#include "drdc/stages/metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define REF_MASK 0xFFFFFFFFull
#define REF_UNVISITED 0xFFFFFFFFu /* defect pixel not yet given a region (only inside add) */
#define MAX_REGIONS 0xFFFFFFFEull

struct drdc_pixel_accum {
    uint64_t *keys;        /* [cap] score key << 32 | region reference (0 = defect-free) */
    uint64_t n, cap;       /* keys used / allocated */
    uint32_t *region_size; /* [n_regions] pixel count of each 8-connected region */
    uint64_t n_regions, region_cap;
    uint64_t n_positive, n_images;
};

/* ---- score keys ------------------------------------------------------------------------- */

/* Order key of a finite float: key(a) < key(b) exactly when a > b; -0.0 and +0.0 share one. */
static inline uint32_t score_key(float s) {
    uint32_t u;
    if (s == 0.0f) s = 0.0f; /* -0.0 -> +0.0 */
    memcpy(&u, &s, sizeof u);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u); /* ascending in s */
    return ~u;                                       /* descending in s */
}

static inline float key_score(uint32_t key) {
    uint32_t u = ~key;
    u = (u & 0x80000000u) ? (u & 0x7FFFFFFFu) : ~u;
    float s;
    memcpy(&s, &u, sizeof s);
    return s;
}

/* ---- in-place MSD radix sort (American flag sort) on bits 63..32 ------------------------- */

static void insertion_sort_hi(uint64_t *a, size_t n) {
    for (size_t i = 1; i < n; i++) {
        uint64_t v = a[i];
        size_t j = i;
        while (j > 0 && (a[j - 1] >> 32) > (v >> 32)) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = v;
    }
}

/* Sorts a[0..n) by the byte at `shift` and then, recursively, by the lower bytes down to
 * bit 32. Bits 31..0 (the sample reference) are not ordered: ties keep any order. */
static void radix_sort_hi(uint64_t *a, size_t n, int shift) {
    if (n < 48) {
        insertion_sort_hi(a, n);
        return;
    }
    size_t count[256] = {0};
    for (size_t i = 0; i < n; i++) count[(a[i] >> shift) & 0xFF]++;
    size_t begin[256], next[256], end[256];
    size_t pos = 0;
    int only_bucket = -1;
    for (int b = 0; b < 256; b++) {
        begin[b] = next[b] = pos;
        pos += count[b];
        end[b] = pos;
        if (count[b] == n) only_bucket = b;
    }
    if (only_bucket < 0) {
        for (int b = 0; b < 256; b++) {
            while (next[b] < end[b]) {
                uint64_t v = a[next[b]];
                int d = (int)((v >> shift) & 0xFF);
                while (d != b) { /* cycle v to its bucket, pick up what was there */
                    uint64_t t = a[next[d]];
                    a[next[d]++] = v;
                    v = t;
                    d = (int)((v >> shift) & 0xFF);
                }
                a[next[b]++] = v;
            }
        }
    }
    if (shift == 32) return;
    for (int b = 0; b < 256; b++)
        if (count[b] > 1) radix_sort_hi(a + begin[b], count[b], shift - 8);
}

static void sort_keys(uint64_t *a, size_t n) { radix_sort_hi(a, n, 56); }

/* ---- curves: streamed thinning by arc length ---------------------------------------------- */

/* Keeps the first and the last point fed to it and, between them, the first point past each
 * multiple of `step` in arc length (plot units); step starts at 0 (keep everything) and is set,
 * then doubled, whenever the buffer fills. The buffer holds twice the points asked for, so that
 * finishing can pick the max_out points wanted from a grid at least as fine. */
typedef struct curve_sampler {
    drdc_curve *c;      /* kept points, capacity cap */
    double *s;          /* [cap] arc position of each kept point; NULL when nothing is thinned */
    size_t cap;         /* 2 max_out, or every threshold when nothing is thinned */
    size_t max_out;     /* points wanted at the end; 0: all kept */
    double step;        /* 0: keep every point */
    double x_range;     /* x is plotted over [0, x_range], y over [0, 1] */
    double arc, px, py; /* arc length fed so far and the last point fed */
    int pending;        /* the last point fed was not kept */
} curve_sampler;

void drdc_curves_free(drdc_curves *c) {
    if (!c) return;
    drdc_curve *all[3] = {&c->roc, &c->pr, &c->pro};
    for (int i = 0; i < 3; i++) {
        free(all[i]->x);
        free(all[i]->y);
    }
    memset(c, 0, sizeof *c);
}

/* max_out > 0: thin to max_out points; 0: keep every point (cap is enough for all). */
static drdc_status sampler_init(curve_sampler *cs, drdc_curve *c, size_t cap, size_t max_out,
                                double x_range) {
    int thin = max_out > 0;
    memset(cs, 0, sizeof *cs);
    cs->c = c;
    cs->cap = thin ? 2 * max_out : cap;
    cs->max_out = max_out;
    cap = cs->cap;
    cs->x_range = x_range;
    c->n = 0;
    c->x = malloc(cap * sizeof *c->x);
    c->y = malloc(cap * sizeof *c->y);
    if (thin) cs->s = malloc(cap * sizeof *cs->s);
    if (!c->x || !c->y || (thin && !cs->s))
        return drdc_fail(DRDC_ERR_NOMEM, "cannot allocate a curve of %zu points", cap);
    return DRDC_OK;
}

/* 1 when arc position a lies in a later step cell than b. */
static inline int past_cell(double a, double b, double step) {
    return floor(a / step) > floor(b / step);
}

/* The buffer is full: re-selects the kept points on a coarser step until there is room. The
 * points kept on step are the first of each step cell, so those of a multiple of step are
 * among them: the result is what feeding on the coarser step from the start would keep. */
static void sampler_thin(curve_sampler *cs) {
    drdc_curve *c = cs->c;
    double step = cs->step > 0.0 ? 2.0 * cs->step : cs->s[c->n - 1] / (double)(cs->cap / 2);
    if (!(step > 0.0)) step = 1.0;
    for (;;) {
        size_t k = 1;
        for (size_t i = 1; i < c->n; i++)
            if (past_cell(cs->s[i], cs->s[k - 1], step)) {
                c->x[k] = c->x[i];
                c->y[k] = c->y[i];
                cs->s[k] = cs->s[i];
                k++;
            }
        c->n = k;
        if (k < cs->cap) break;
        step *= 2.0;
    }
    cs->step = step;
}

static void sampler_push(curve_sampler *cs, double x, double y) {
    drdc_curve *c = cs->c;
    if (c->n) {
        double dx = (x - cs->px) / cs->x_range, dy = y - cs->py;
        cs->arc += sqrt(dx * dx + dy * dy);
    }
    cs->px = x;
    cs->py = y;
    cs->pending = 1;
    if (c->n && cs->step > 0.0 && !past_cell(cs->arc, cs->s[c->n - 1], cs->step)) return;
    if (c->n == cs->cap) {
        sampler_thin(cs);
        if (!past_cell(cs->arc, cs->s[c->n - 1], cs->step)) return;
    }
    c->x[c->n] = x;
    c->y[c->n] = y;
    if (cs->s) cs->s[c->n] = cs->arc;
    c->n++;
    cs->pending = 0;
}

/* Number of points a final selection on step keeps: the first, the first past each multiple of
 * step, and the last. compact: 1 also moves them to the front. */
static size_t select_points(curve_sampler *cs, double step, int compact) {
    drdc_curve *c = cs->c;
    size_t last = c->n - 1, k = 1;
    double prev = cs->s[0];
    for (size_t i = 1; i < last; i++)
        if (past_cell(cs->s[i], prev, step)) {
            prev = cs->s[i];
            if (compact) {
                c->x[k] = c->x[i];
                c->y[k] = c->y[i];
                cs->s[k] = cs->s[i];
            }
            k++;
        }
    if (compact) {
        c->x[k] = c->x[last];
        c->y[k] = c->y[last];
        cs->s[k] = cs->s[last];
        c->n = k + 1;
    }
    return k + 1;
}

/* Keeps the last point fed (in place of the last kept one when the buffer is full), then picks
 * at most max_out of the kept points, evenly in arc length. */
static void sampler_finish(curve_sampler *cs) {
    drdc_curve *c = cs->c;
    if (cs->pending) {
        if (c->n == cs->cap) c->n--;
        c->x[c->n] = cs->px;
        c->y[c->n] = cs->py;
        if (cs->s) cs->s[c->n] = cs->arc;
        c->n++;
        cs->pending = 0;
    }
    if (!cs->max_out || c->n <= cs->max_out) return;
    double step = cs->s[c->n - 1] / (double)(cs->max_out - 1);
    if (!(step > 0.0)) step = 1.0;
    while (select_points(cs, step, 0) > cs->max_out) step *= 1.05;
    select_points(cs, step, 1);
}

/* The samplers of one sweep: roc and pr always, pro at pixel level. */
typedef struct sweep_curves {
    curve_sampler roc, pr, pro;
    int with_pro;
} sweep_curves;

/* Frees the samplers' arc positions (the points stay in the curves). */
static void sweep_curves_release(sweep_curves *sc) {
    free(sc->roc.s);
    free(sc->pr.s);
    free(sc->pro.s);
    memset(sc, 0, sizeof *sc);
}

/* Allocates the samplers for a sweep of n samples into *curves (zeroed first; zeroed again on
 * failure). */
static drdc_status sweep_curves_init(sweep_curves *sc, drdc_curves *curves, int max_points,
                                     uint64_t n, int with_pro, double fpr_limit) {
    memset(curves, 0, sizeof *curves);
    memset(sc, 0, sizeof *sc);
    if (max_points < 0 || max_points == 1)
        return drdc_fail(DRDC_ERR_INPUT, "a curve needs at least 2 points (asked for "
                         "%d; 0 keeps every threshold)", max_points);
    int thin = max_points > 0;
    if (!thin && n > SIZE_MAX / (4 * sizeof(double)))
        return drdc_fail(DRDC_ERR_NOMEM, "curves of %llu points do not fit in memory",
                         (unsigned long long)n);
    size_t cap = (size_t)n + 2; /* when nothing is thinned: thresholds <= n, plus the start */
    size_t max_out = thin ? (size_t)max_points : 0;
    drdc_status st = DRDC_OK;
    sc->with_pro = with_pro;
    TRY(sampler_init(&sc->roc, &curves->roc, cap, max_out, 1.0));
    TRY(sampler_init(&sc->pr, &curves->pr, cap, max_out, 1.0));
    if (with_pro) {
        TRY(sampler_init(&sc->pro, &curves->pro, cap, max_out, fpr_limit));
        curves->pro_fpr_limit = fpr_limit;
    }
done:
    if (st) {
        sweep_curves_release(sc);
        drdc_curves_free(curves);
    }
    return st;
}

/* ---- the sweep over thresholds ----------------------------------------------------------- */

typedef struct sweep_result {
    double auroc, ap, f1_max, aupro;
    float f1_threshold;
} sweep_result;

/* Walks sorted keys (highest score first). n_pos / n_neg > 0. region_weight (NULL: no AUPRO)
 * maps reference r >= 1 to 1 / size of region r-1; n_regions > 0 then. sc (NULL: no curves)
 * gets every point walked; the numbers returned do not depend on it. */
static sweep_result sweep(const uint64_t *keys, uint64_t n, uint64_t n_pos, uint64_t n_neg,
                          const double *region_weight, uint64_t n_regions, double fpr_limit,
                          sweep_curves *sc) {
    sweep_result r = {0.0, 0.0, 0.0, 0.0, 0.0f};
    uint64_t tp = 0, fp = 0, tp_prev = 0, fp_prev = 0;
    double roc_area2 = 0.0; /* sum of dfp * (tp + tp_prev): twice the area times P*N */
    double pro_sum = 0.0;   /* sum over positive pixels so far of 1 / region size */
    double pro_x0 = 0.0, pro_y0 = 0.0, pro_area = 0.0;
    int pro_done = region_weight == NULL;
    int have_f1 = 0;
    if (sc) {
        sampler_push(&sc->roc, 0.0, 0.0);
        if (sc->with_pro) sampler_push(&sc->pro, 0.0, 0.0);
    }
    for (uint64_t i = 0; i < n; i++) {
        uint32_t ref = (uint32_t)(keys[i] & REF_MASK);
        if (ref) {
            tp++;
            if (region_weight) pro_sum += region_weight[ref - 1];
        } else {
            fp++;
        }
        if (i + 1 < n && (keys[i + 1] >> 32) == (keys[i] >> 32)) continue;
        /* one threshold: every sample with score >= keys[i]'s score is predicted anomalous */
        roc_area2 += (double)(fp - fp_prev) * (double)(tp + tp_prev);
        double precision = (double)tp / (double)(tp + fp);
        double recall = (double)tp / (double)n_pos;
        r.ap += ((double)(tp - tp_prev) / (double)n_pos) * precision;
        double f1 = precision + recall > 0.0 ? 2.0 * precision * recall / (precision + recall) : 0.0;
        if (!have_f1 || f1 > r.f1_max) {
            r.f1_max = f1;
            r.f1_threshold = key_score((uint32_t)(keys[i] >> 32));
            have_f1 = 1;
        }
        if (sc) {
            sampler_push(&sc->roc, (double)fp / (double)n_neg, recall);
            sampler_push(&sc->pr, recall, precision);
        }
        if (!pro_done) {
            double x1 = (double)fp / (double)n_neg;
            double y1 = pro_sum / (double)n_regions;
            if (y1 > 1.0) y1 = 1.0; /* rounding of the running sum, as the official clip */
            if (x1 <= fpr_limit) {
                pro_area += 0.5 * (y1 + pro_y0) * (x1 - pro_x0);
                pro_x0 = x1;
                pro_y0 = y1;
                if (sc && sc->with_pro) sampler_push(&sc->pro, x1, y1);
            } else {
                if (pro_x0 < fpr_limit) { /* interpolate the crossing segment at the limit */
                    double y_lim = pro_y0 + (y1 - pro_y0) * (fpr_limit - pro_x0) / (x1 - pro_x0);
                    pro_area += 0.5 * (y_lim + pro_y0) * (fpr_limit - pro_x0);
                    if (sc && sc->with_pro) sampler_push(&sc->pro, fpr_limit, y_lim);
                }
                pro_done = 1;
            }
        }
        tp_prev = tp;
        fp_prev = fp;
    }
    r.auroc = roc_area2 / (2.0 * (double)n_pos * (double)n_neg);
    r.aupro = pro_area / fpr_limit;
    if (sc) {
        sampler_finish(&sc->roc);
        sampler_finish(&sc->pr);
        if (sc->with_pro) sampler_finish(&sc->pro);
    }
    return r;
}

/* ---- image level ------------------------------------------------------------------------- */

/* Both image-level entry points; curves NULL: none. */
static drdc_status image_metrics(const float *scores, const uint8_t *labels, size_t n,
                                 drdc_curve_metrics *out, drdc_curves *curves, int max_points) {
    if (curves) memset(curves, 0, sizeof *curves);
    if (!scores || !labels || !out)
        return drdc_fail(DRDC_ERR_INPUT, "image metrics: NULL scores, labels or output");
    if (n == 0) return drdc_fail(DRDC_ERR_INPUT, "image metrics: no images");
    uint64_t n_pos = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(scores[i]))
            return drdc_fail(DRDC_ERR_NUMERIC, "image metrics: score of image %zu is %g", i,
                             (double)scores[i]);
        n_pos += labels[i] != 0;
    }
    uint64_t n_neg = n - n_pos;
    if (n_pos == 0)
        return drdc_fail(DRDC_ERR_INPUT,
                         "image AUROC, AP and F1-max are undefined: all %zu images are normal "
                         "(label 0); they need both normal and anomalous images", n);
    if (n_neg == 0)
        return drdc_fail(DRDC_ERR_INPUT,
                         "image AUROC, AP and F1-max are undefined: all %zu images are anomalous "
                         "(label != 0); they need both normal and anomalous images", n);
    sweep_curves sc;
    if (curves) {
        drdc_status st = sweep_curves_init(&sc, curves, max_points, n, 0, 0.0);
        if (st) return drdc_error_context(st, "image metrics");
    }
    uint64_t *keys = malloc(n * sizeof *keys);
    if (!keys) {
        if (curves) {
            sweep_curves_release(&sc);
            drdc_curves_free(curves);
        }
        return drdc_fail(DRDC_ERR_NOMEM, "image metrics: cannot allocate %zu keys", n);
    }
    for (size_t i = 0; i < n; i++)
        keys[i] = (uint64_t)score_key(scores[i]) << 32 | (uint64_t)(labels[i] != 0);
    sort_keys(keys, n);
    sweep_result r = sweep(keys, n, n_pos, n_neg, NULL, 0, 1.0, curves ? &sc : NULL);
    free(keys);
    if (curves) sweep_curves_release(&sc);
    out->auroc = r.auroc;
    out->ap = r.ap;
    out->f1_max = r.f1_max;
    out->f1_threshold = r.f1_threshold;
    out->n_positive = n_pos;
    out->n_negative = n_neg;
    return DRDC_OK;
}

drdc_status drdc_image_metrics(const float *scores, const uint8_t *labels, size_t n,
                               drdc_curve_metrics *out) {
    return image_metrics(scores, labels, n, out, NULL, 0);
}

drdc_status drdc_image_metrics_curves(const float *scores, const uint8_t *labels, size_t n,
                                      drdc_curve_metrics *out, drdc_curves *curves,
                                      int max_points) {
    if (!curves) return drdc_fail(DRDC_ERR_INPUT, "image metrics: NULL curves");
    return image_metrics(scores, labels, n, out, curves, max_points);
}

/* ---- pixel level ------------------------------------------------------------------------- */

static drdc_status reserve_keys(drdc_pixel_accum *acc, uint64_t need) {
    if (need <= acc->cap) return DRDC_OK;
    uint64_t cap = acc->cap * 2; /* exactly `need` the first time (the expected size) */
    if (cap < need) cap = need;
    if (cap > SIZE_MAX / sizeof(uint64_t))
        return drdc_fail(DRDC_ERR_NOMEM, "pixel metrics: %llu pixels do not fit in memory",
                         (unsigned long long)need);
    uint64_t *k = realloc(acc->keys, (size_t)cap * sizeof *k);
    if (!k)
        return drdc_fail(DRDC_ERR_NOMEM, "pixel metrics: cannot grow the pixel buffer to %llu "
                         "pixels (%llu MB)", (unsigned long long)cap,
                         (unsigned long long)(cap * sizeof *k >> 20));
    acc->keys = k;
    acc->cap = cap;
    return DRDC_OK;
}

drdc_status drdc_pixel_accum_create(drdc_pixel_accum **out, uint64_t expected_pixels) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "pixel metrics: NULL output");
    *out = NULL;
    drdc_pixel_accum *acc = calloc(1, sizeof *acc);
    if (!acc) return drdc_fail(DRDC_ERR_NOMEM, "pixel metrics: cannot allocate accumulator");
    if (expected_pixels) {
        drdc_status st = reserve_keys(acc, expected_pixels);
        if (st != DRDC_OK) {
            free(acc);
            return st;
        }
    }
    *out = acc;
    return DRDC_OK;
}

void drdc_pixel_accum_free(drdc_pixel_accum *acc) {
    if (!acc) return;
    free(acc->keys);
    free(acc->region_size);
    free(acc);
}

uint64_t drdc_pixel_accum_pixels(const drdc_pixel_accum *acc) { return acc ? acc->n : 0; }

size_t drdc_pixel_accum_bytes(const drdc_pixel_accum *acc) {
    if (!acc) return 0;
    return sizeof *acc + (size_t)acc->cap * sizeof(uint64_t) +
           (size_t)acc->region_cap * sizeof(uint32_t);
}

static drdc_status push_region(drdc_pixel_accum *acc, uint64_t *n_regions, uint32_t size) {
    if (*n_regions == acc->region_cap) {
        uint64_t cap = acc->region_cap ? acc->region_cap * 2 : 256;
        uint32_t *r = realloc(acc->region_size, (size_t)cap * sizeof *r);
        if (!r) return drdc_fail(DRDC_ERR_NOMEM, "pixel metrics: cannot grow the region table");
        acc->region_size = r;
        acc->region_cap = cap;
    }
    acc->region_size[(*n_regions)++] = size;
    return DRDC_OK;
}

/* Labels the 8-connected components of the defect pixels of one image whose keys are
 * img[0..h*w) with reference REF_UNVISITED, giving them region references
 * acc->n_regions + 1, ...; n_defect is their count. On success acc->n_regions is updated. */
static drdc_status label_regions(drdc_pixel_accum *acc, uint64_t *img, int h, int w,
                                 uint64_t n_defect) {
    uint32_t *stack = malloc((size_t)n_defect * sizeof *stack);
    if (!stack)
        return drdc_fail(DRDC_ERR_NOMEM, "pixel metrics: cannot allocate the labelling stack "
                         "(%llu pixels)", (unsigned long long)n_defect);
    uint64_t n_regions = acc->n_regions;
    uint64_t hw = (uint64_t)h * (uint64_t)w;
    drdc_status st = DRDC_OK;
    for (uint64_t seed = 0; seed < hw && st == DRDC_OK; seed++) {
        if ((uint32_t)(img[seed] & REF_MASK) != REF_UNVISITED) continue;
        if (n_regions >= MAX_REGIONS) {
            st = drdc_fail(DRDC_ERR_INPUT, "pixel metrics: more than %llu ground-truth regions",
                           (unsigned long long)MAX_REGIONS);
            break;
        }
        uint64_t ref = n_regions + 1;
        size_t top = 0;
        uint32_t size = 0;
        img[seed] = (img[seed] & ~REF_MASK) | ref;
        stack[top++] = (uint32_t)seed;
        while (top) {
            uint32_t p = stack[--top];
            size++;
            int y = (int)(p / (uint32_t)w), x = (int)(p % (uint32_t)w);
            for (int dy = -1; dy <= 1; dy++) {
                int yy = y + dy;
                if (yy < 0 || yy >= h) continue;
                for (int dx = -1; dx <= 1; dx++) {
                    int xx = x + dx;
                    if (xx < 0 || xx >= w) continue;
                    uint64_t q = (uint64_t)yy * (uint64_t)w + (uint64_t)xx;
                    if ((uint32_t)(img[q] & REF_MASK) != REF_UNVISITED) continue;
                    img[q] = (img[q] & ~REF_MASK) | ref;
                    stack[top++] = (uint32_t)q;
                }
            }
        }
        st = push_region(acc, &n_regions, size);
    }
    free(stack);
    if (st == DRDC_OK) acc->n_regions = n_regions;
    return st;
}

drdc_status drdc_pixel_accum_add(drdc_pixel_accum *acc, const float *map, const uint8_t *mask,
                                 int height, int width) {
    if (!acc || !map) return drdc_fail(DRDC_ERR_INPUT, "pixel metrics: NULL accumulator or map");
    if (height <= 0 || width <= 0)
        return drdc_fail(DRDC_ERR_INPUT, "pixel metrics: image %llu has size %dx%d",
                         (unsigned long long)acc->n_images, height, width);
    uint64_t hw = (uint64_t)height * (uint64_t)width;
    if (hw > 0xFFFFFFFFull)
        return drdc_fail(DRDC_ERR_INPUT, "pixel metrics: image %llu has %llu pixels (max 2^32-1)",
                         (unsigned long long)acc->n_images, (unsigned long long)hw);
    for (uint64_t p = 0; p < hw; p++)
        if (!isfinite(map[p]))
            return drdc_fail(DRDC_ERR_NUMERIC, "pixel metrics: image %llu has score %g at row %llu, "
                             "column %llu", (unsigned long long)acc->n_images, (double)map[p],
                             (unsigned long long)(p / (uint64_t)width),
                             (unsigned long long)(p % (uint64_t)width));
    drdc_status st = reserve_keys(acc, acc->n + hw);
    if (st != DRDC_OK) return st;
    uint64_t *img = acc->keys + acc->n;
    uint64_t n_defect = 0;
    for (uint64_t p = 0; p < hw; p++) {
        int defect = mask && mask[p] != 0;
        n_defect += (uint64_t)defect;
        img[p] = (uint64_t)score_key(map[p]) << 32 | (defect ? REF_UNVISITED : 0u);
    }
    if (n_defect) {
        st = label_regions(acc, img, height, width, n_defect);
        if (st != DRDC_OK) return st; /* acc->n unchanged: the image is not added */
    }
    acc->n += hw;
    acc->n_positive += n_defect;
    acc->n_images++;
    return DRDC_OK;
}

/* Both pixel-level entry points; curves NULL: none. */
static drdc_status pixel_finalize(drdc_pixel_accum *acc, double fpr_limit, drdc_pixel_metrics *out,
                                  drdc_curves *curves, int max_points) {
    if (curves) memset(curves, 0, sizeof *curves);
    if (!acc || !out) return drdc_fail(DRDC_ERR_INPUT, "pixel metrics: NULL accumulator or output");
    if (!(fpr_limit > 0.0 && fpr_limit <= 1.0))
        return drdc_fail(DRDC_ERR_INPUT, "pixel metrics: AUPRO FPR limit %g is not in (0, 1]",
                         fpr_limit);
    if (acc->n == 0) return drdc_fail(DRDC_ERR_INPUT, "pixel metrics: no pixels were added");
    uint64_t n_pos = acc->n_positive, n_neg = acc->n - acc->n_positive;
    if (n_pos == 0)
        return drdc_fail(DRDC_ERR_INPUT,
                         "pixel AUROC, AP, F1-max and AUPRO are undefined: all %llu pixels of %llu "
                         "images are normal (no mask pixel set, no ground-truth region); they need "
                         "both normal and anomalous pixels", (unsigned long long)acc->n,
                         (unsigned long long)acc->n_images);
    if (n_neg == 0)
        return drdc_fail(DRDC_ERR_INPUT,
                         "pixel AUROC, AP, F1-max and AUPRO are undefined: all %llu pixels of %llu "
                         "images are anomalous (no defect-free pixel, so no false-positive rate); "
                         "they need both normal and anomalous pixels", (unsigned long long)acc->n,
                         (unsigned long long)acc->n_images);
    double *weight = malloc((size_t)acc->n_regions * sizeof *weight);
    if (!weight)
        return drdc_fail(DRDC_ERR_NOMEM, "pixel metrics: cannot allocate %llu region weights",
                         (unsigned long long)acc->n_regions);
    for (uint64_t r = 0; r < acc->n_regions; r++) weight[r] = 1.0 / (double)acc->region_size[r];
    sweep_curves sc;
    if (curves) {
        drdc_status st = sweep_curves_init(&sc, curves, max_points, acc->n, 1, fpr_limit);
        if (st) {
            free(weight);
            return drdc_error_context(st, "pixel metrics");
        }
    }
    sort_keys(acc->keys, (size_t)acc->n);
    sweep_result r = sweep(acc->keys, acc->n, n_pos, n_neg, weight, acc->n_regions, fpr_limit,
                           curves ? &sc : NULL);
    free(weight);
    if (curves) sweep_curves_release(&sc);
    out->curve.auroc = r.auroc;
    out->curve.ap = r.ap;
    out->curve.f1_max = r.f1_max;
    out->curve.f1_threshold = r.f1_threshold;
    out->curve.n_positive = n_pos;
    out->curve.n_negative = n_neg;
    out->aupro = r.aupro;
    out->aupro_fpr_limit = fpr_limit;
    out->n_regions = acc->n_regions;
    out->n_images = acc->n_images;
    return DRDC_OK;
}

drdc_status drdc_pixel_accum_finalize(drdc_pixel_accum *acc, double fpr_limit,
                                      drdc_pixel_metrics *out) {
    return pixel_finalize(acc, fpr_limit, out, NULL, 0);
}

drdc_status drdc_pixel_accum_finalize_curves(drdc_pixel_accum *acc, double fpr_limit,
                                             drdc_pixel_metrics *out, drdc_curves *curves,
                                             int max_points) {
    if (!curves) return drdc_fail(DRDC_ERR_INPUT, "pixel metrics: NULL curves");
    return pixel_finalize(acc, fpr_limit, out, curves, max_points);
}
