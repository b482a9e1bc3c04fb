/* metrics.h: exact evaluation metrics for anomaly detection (DESIGN.md section 6).
 *
 * Image level: AUROC, average precision (AP) and F1-max from one score and one label per image.
 * Pixel level: the same three over all pixels of a category pooled, plus AUPRO (the official
 * MVTec AD per-region-overlap curve integrated to an FPR limit, normally 0.3, divided by it).
 *
 * Every metric is exact: scores are sorted (radix sort of the float bits), never binned, and
 * equal scores are one threshold, as scikit-learn does:
 *   - thresholds are the distinct scores; a sample is predicted anomalous when score >= t;
 *   - AUROC  = trapezoid rule over the ROC points (FPR, TPR), starting at (0, 0)
 *              (sklearn roc_auc_score); reversed scores give 0.0, nothing is flipped;
 *   - AP     = sum_n (R_n - R_{n-1}) P_n over thresholds in decreasing order, R_0 = 0, no
 *              interpolation (sklearn average_precision_score);
 *   - F1-max = max over thresholds of 2PR / (P + R), 0 where P + R = 0 (from sklearn's
 *              precision_recall_curve);
 *   - AUPRO  = the MVTec AD evaluation code's compute_pro + trapezoid(x_max = limit) / limit:
 *              ground-truth regions are 8-connected components of each image's mask; at each
 *              threshold FPR = false positives / all defect-free pixels and PRO = mean over all
 *              regions of the fraction of the region at or above the threshold; the curve starts
 *              at (0, 0), is integrated by the trapezoid rule up to FPR = limit, the last segment
 *              linearly interpolated at the limit.
 *
 * Single-class inputs: every metric here needs both classes (AUROC, AUPRO: an FPR or TPR needs
 * both; AP, F1-max: with no anomalous sample recall is 0/0; with no normal sample AP and F1 are
 * trivially 1 and say nothing). A call whose input has only normal or only anomalous samples
 * (pixels) returns DRDC_ERR_INPUT and computes nothing; the message names the metrics and the
 * reason, e.g. "image AUROC, AP and F1-max are undefined: all 20 images are normal (label 0);
 * they need both normal and anomalous images". Callers that want to go on (an eval table)
 * print such a metric as "n/a" with that message; no value is ever a NaN.
 *
 * Scores must be finite: a NaN or infinite score is DRDC_ERR_NUMERIC naming the image and pixel.
 * -0.0 and +0.0 are the same score.
 *
 * Memory (pixel level): 8 bytes per accumulated pixel (a 32-bit order key of the score and a
 * 32-bit region reference, sorted in place: finalize needs no second buffer), plus 4 bytes per
 * ground-truth region (8 more during finalize), plus while adding an image at most 4 bytes per
 * defect pixel of that image (the component-labelling stack). Peak resident memory is thus
 * 8 bytes/pixel plus one image: 100 images of 1024 x 1024 measured 806 MB peak RSS
 * (scripts/bench/bench_metrics.c). With expected_pixels given the buffer is exactly that size; when
 * it grows by doubling its capacity can reach twice the pixels, but the unused tail is never
 * touched and so (glibc, Linux: large blocks are mmap'ed) never resident.
 *
 * Precision: counts are 64-bit integers; rates and areas are double. The official AUPRO code
 * keeps FPRs in float32; this one does not, so the two agree to about 1e-7, not bit for bit.
 *
 * Curves (for drawing, e.g. eval --report): the *_curves variants also return the curves the
 * sweep walks, ROC, PR and (pixels) PRO, thinned to at most max_points points each; the plain
 * functions compute none and cost nothing more. The metrics are the same numbers either way.
 *
 * Equations: none of DESIGN.md's (1)-(17); these score the maps and image scores of fusion.h. */
#ifndef DRDC_METRICS_H
#define DRDC_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "drdc/core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The FPR limit of the official MVTec AD AUPRO. */
#define DRDC_AUPRO_FPR_LIMIT 0.3

/* Threshold metrics of one binary ranking problem (image or pixel level). */
typedef struct drdc_curve_metrics {
    double auroc;        /* area under the ROC curve, in [0, 1] */
    double ap;           /* average precision (step rule), in [0, 1] */
    double f1_max;       /* best F1 over all distinct thresholds, in [0, 1] */
    float f1_threshold;  /* the score t reaching f1_max (anomalous when score >= t); the highest
                            such t when several thresholds tie */
    uint64_t n_positive; /* anomalous samples (images or pixels) */
    uint64_t n_negative; /* normal samples */
} drdc_curve_metrics;

/* Pixel-level metrics of one category. */
typedef struct drdc_pixel_metrics {
    drdc_curve_metrics curve; /* pixel AUROC, AP, F1-max over all pixels pooled */
    double aupro;             /* area under the PRO curve to fpr_limit, divided by fpr_limit */
    double aupro_fpr_limit;   /* the limit used (DRDC_AUPRO_FPR_LIMIT by default) */
    uint64_t n_regions;       /* 8-connected ground-truth regions over all images */
    uint64_t n_images;        /* images added */
} drdc_pixel_metrics;

/* ---- curves -------------------------------------------------------------------------------
 *
 * One point per threshold walked (distinct scores, highest first), plus the curve's defined
 * start where it has one. Thinning to max_points keeps the first and the last point and, between
 * them, the first point walked past each multiple of a step in arc length (Euclidean, in plot
 * units: each axis over its range [0, 1], the PRO curve's FPR over [0, fpr_limit]): the curve's
 * own points, never fabricated or moved, spread evenly along the drawn line (a single long jump,
 * e.g. a tie of many samples, stays one segment). It is streamed: a buffer of 2 x max_points
 * points per curve (48 bytes each) keeps the first point of each step cell, the step doubling
 * whenever it fills; at the end the step is set so that at most max_points remain (a long curve
 * keeps close to max_points; one with fewer thresholds keeps them all). max_points 0 keeps every
 * threshold (up to 3 x 16 bytes per sample: for tests and small inputs). */

/* Default point budget of a drawn curve. */
#define DRDC_CURVE_POINTS 200

/* One curve: n points (x[i], y[i]); n = 0: not computed. */
typedef struct drdc_curve {
    size_t n;
    double *x, *y; /* (n), malloc'd: drdc_curves_free */
} drdc_curve;

typedef struct drdc_curves {
    drdc_curve roc;       /* (FPR, TPR): starts at (0, 0) (no sample anomalous), one point per
                           * threshold, ends at (1, 1); x and y non-decreasing. Its trapezoid
                           * area at max_points 0 is the AUROC. */
    drdc_curve pr;        /* (recall, precision): one point per threshold, highest first; recall
                           * non-decreasing, ends at (1, P / (P + N)). No (0, 1) is prepended;
                           * at max_points 0, sum (r_i - r_{i-1}) p_i from r_0 = 0 is the AP. */
    drdc_curve pro;       /* pixel level only (n = 0 for images): (FPR, PRO) from (0, 0) through
                           * the thresholds with FPR <= fpr_limit, ending at FPR = fpr_limit (the
                           * crossing segment linearly interpolated, as the AUPRO integral does);
                           * both non-decreasing. At max_points 0 its trapezoid area / fpr_limit
                           * is the AUPRO. */
    double pro_fpr_limit; /* the limit of pro (0 at image level) */
} drdc_curves;

/* Frees the points and zeroes *c; NULL or a zeroed struct is a no-op. */
void drdc_curves_free(drdc_curves *c);

/* Image level: scores[i] is image i's anomaly score, labels[i] != 0 marks it anomalous.
 * Fills *out (AUROC, AP, F1-max). Errors: n == 0 or a NULL array (DRDC_ERR_INPUT), a
 * non-finite score (DRDC_ERR_NUMERIC), one class only (DRDC_ERR_INPUT, see above),
 * allocation failure (DRDC_ERR_NOMEM). Allocates 8 bytes per image, freed before return. */
drdc_status drdc_image_metrics(const float *scores, const uint8_t *labels, size_t n,
                               drdc_curve_metrics *out);

/* drdc_image_metrics plus the image-level ROC and PR curves in *curves (pro stays empty), each
 * of at most max_points points (>= 2, or 0 for every threshold). *curves is overwritten (free
 * an earlier result first) and is zeroed on failure. *out is exactly drdc_image_metrics'. */
drdc_status drdc_image_metrics_curves(const float *scores, const uint8_t *labels, size_t n,
                                      drdc_curve_metrics *out, drdc_curves *curves,
                                      int max_points);

/* Accumulator of one category's pixels: add each test image's map and mask, then finalize. */
typedef struct drdc_pixel_accum drdc_pixel_accum;

/* Creates an empty accumulator in *out. expected_pixels (0: unknown) reserves space up front;
 * the buffer otherwise grows by doubling (realloc, which for large buffers remaps pages
 * rather than copying them, so growth does not double the peak). */
drdc_status drdc_pixel_accum_create(drdc_pixel_accum **out, uint64_t expected_pixels);

/* Adds one image: map[height * width] are its pixel scores (row-major), mask[height * width]
 * its ground truth (non-zero = anomalous pixel) or NULL for an image without defects (MVTec's
 * good test images have no mask file). The mask's 8-connected components become AUPRO regions
 * (the official code labels with scipy.ndimage.label and a 3x3 structure of ones). Images may
 * differ in size. Neither array is kept. Errors: bad size or NULL map (DRDC_ERR_INPUT), a
 * non-finite score (DRDC_ERR_NUMERIC, naming image index, row and column; the accumulator is
 * left as it was before the call), more than 2^32 - 2 regions (DRDC_ERR_INPUT), allocation
 * (DRDC_ERR_NOMEM). */
drdc_status drdc_pixel_accum_add(drdc_pixel_accum *acc, const float *map, const uint8_t *mask,
                                 int height, int width);

/* Computes the pixel metrics of everything added so far into *out; fpr_limit in (0, 1] is the
 * AUPRO integration limit (pass DRDC_AUPRO_FPR_LIMIT). Sorts the accumulator in place (no
 * extra per-pixel memory); more images may be added afterwards and finalize called again.
 * Errors: no pixels, or only normal or only anomalous pixels (DRDC_ERR_INPUT: all four pixel
 * metrics are then undefined, the message says which class is missing), a bad limit. */
drdc_status drdc_pixel_accum_finalize(drdc_pixel_accum *acc, double fpr_limit,
                                      drdc_pixel_metrics *out);

/* drdc_pixel_accum_finalize plus the pixel-level ROC, PR and PRO curves in *curves, each of at
 * most max_points points (>= 2, or 0 for every threshold; see drdc_curves). *curves is
 * overwritten (free an earlier result first) and is zeroed on failure. *out is exactly
 * drdc_pixel_accum_finalize's. */
drdc_status drdc_pixel_accum_finalize_curves(drdc_pixel_accum *acc, double fpr_limit,
                                             drdc_pixel_metrics *out, drdc_curves *curves,
                                             int max_points);

/* Pixels added so far. */
uint64_t drdc_pixel_accum_pixels(const drdc_pixel_accum *acc);

/* Bytes held by the accumulator now (its pixel buffer's capacity and region table). */
size_t drdc_pixel_accum_bytes(const drdc_pixel_accum *acc);

/* Frees the accumulator; NULL is a no-op. */
void drdc_pixel_accum_free(drdc_pixel_accum *acc);

#ifdef __cplusplus
}
#endif
#endif
