/* report.h: one evaluation as a single self-contained HTML page (`drdc eval --report DIR`).
 *
 * The caller fills a drdc_report (plain input: nothing is computed from images or models here)
 * and drdc_report_write turns it into one HTML file that needs nothing else: no script, no
 * network, no external font or style sheet. The page holds, top down:
 *   - the title and the "about" lines (model file, settings);
 *   - an overview: per method the mean of each metric and the pooled false-reject and escape
 *     counts at the calibrated thresholds;
 *   - the metrics table: categories x methods x metrics, 4 decimals, cells shaded by value, the
 *     best method of each category and metric in bold, "n/a" with the category's note, then
 *     the mean over categories;
 *   - the threshold table: per category and method the calibrated image threshold, the false
 *     rejects (good images judged anomalous) and escapes (defective images judged normal),
 *     counts and rates, and the pooled totals;
 *   - the curves: per category one inline SVG for each of image ROC, image PR, pixel ROC and PRO
 *     (to the FPR limit, drawn as a line), one polyline per method, axes, ticks and a legend;
 *   - the test images, worst first (drdc_report_order_images): misjudged ones open, the others
 *     in a <details> block, each with its panel as an <img> of the given relative path.
 * Every caller string is HTML-escaped; panel paths are also percent-encoded as URLs (so a '#',
 * '?', ':' or '<' in a category name stays part of the relative file path). */
#ifndef DRDC_REPORT_H
#define DRDC_REPORT_H

#include "drdc/core/error.h"
#include "drdc/stages/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A method's calibrated image threshold on one category, and what it does to the test images
 * (anomalous when score >= threshold, as `drdc infer` judges). */
typedef struct drdc_report_threshold {
    double threshold;     /* NAN: no threshold for this method and category (row shows n/a) */
    int n_good;           /* good test images */
    int n_false_rejects;  /* of them, judged anomalous */
    int n_defective;      /* defective test images */
    int n_escapes;        /* of them, judged normal */
} drdc_report_threshold;

/* One test image as judged by the report's image method. */
typedef struct drdc_report_image {
    int category;         /* index into drdc_report.categories */
    const char *defect;   /* defect type ("good" for a normal image) */
    const char *path;     /* the image file, as shown */
    int label;            /* 1 defective, 0 good */
    double score;         /* image score */
    double threshold;     /* the threshold it was judged against (NAN: none) */
    int verdict;          /* 1 judged anomalous, 0 judged normal */
    const char *panel;    /* its panel PNG, relative to the HTML file; NULL: none */
} drdc_report_image;

typedef struct drdc_report {
    const char *title;
    int n_about;
    const char *const *about;        /* (n_about) lines: "model: run/model.safetensors", ... */
    int n_methods;
    const char *const *methods;      /* (n_methods) */
    int n_categories;
    const char *const *categories;   /* (n_categories) */
    int n_metrics;
    const char *const *metrics;      /* (n_metrics) column titles ("Image AUROC", ...) */
    const double *values;            /* (n_methods, n_categories + 1, n_metrics) in [0, 1], NAN
                                      * = n/a; column n_categories is the mean over categories:
                                      * the layout of drdc_eval_result.values */
    const char *const *notes;        /* (n_categories) why a category's n/a metrics are n/a, or
                                      * NULL entries; NULL: no notes */
    const drdc_curves *image_curves; /* (n_methods, n_categories): image ROC and PR; NULL, or a
                                      * curve with n = 0: not drawn */
    const drdc_curves *pixel_curves; /* (n_methods, n_categories): pixel ROC and PRO; likewise */
    const drdc_report_threshold *thresholds; /* (n_methods, n_categories); NULL: no table */
    int image_method;                /* the method whose scores and verdicts the images carry */
    int n_images;
    const drdc_report_image *images; /* (n_images), any order */
} drdc_report;

/* The order the page lists images in, worst first: misses (defective judged normal), by how far
 * the score lies below the threshold, largest first; then false alarms (good judged anomalous),
 * by how far it lies above, largest first; then the correctly judged ones, closest to the
 * threshold first. Ties: category index, then path. order[0..n) gets image indices. */
void drdc_report_order_images(const drdc_report_image *images, int n, int *order);

/* Writes the page to html_path (atomically). Errors: a NULL or inconsistent input (counts,
 * arrays, an image's category out of range: DRDC_ERR_INPUT), writing (DRDC_ERR_IO). */
drdc_status drdc_report_write(const char *html_path, const drdc_report *r);

#ifdef __cplusplus
}
#endif
#endif
