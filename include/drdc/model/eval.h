/* eval.h: evaluation of score maps over a labelled dataset (DESIGN.md section 6).
 *
 * drdc_evaluate walks every test image of every category of a dataset, asks a map source for
 * each method's map and image score, compares maps with the ground truth at each image's
 * original size (or at eval_size x eval_size, the UniAD protocol) and computes, per category
 * and method, the seven metrics of metrics.h; the mean over categories is the last column.
 * A metric that is undefined for a category (e.g. no defect images) is NaN inside the result
 * and is written as "n/a" in tables and null in JSON, never as a number; the mean then covers
 * the categories where it is defined. */
#ifndef DRDC_EVAL_H
#define DRDC_EVAL_H

#include <stdio.h>
#include "drdc/data/dataset.h"
#include "drdc/core/error.h"
#include "drdc/formats/image.h"
#include "drdc/model/model.h"
#include "drdc/stages/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

enum drdc_metric_id {
    DRDC_M_IMAGE_AUROC, DRDC_M_PIXEL_AUROC, DRDC_M_AUPRO, DRDC_M_IMAGE_AP, DRDC_M_PIXEL_AP,
    DRDC_M_IMAGE_F1MAX, DRDC_M_PIXEL_F1MAX, DRDC_N_METRICS
};
/* JSON/CSV key of a metric ("image_auroc", ...) and its table title ("Image AUROC", ...). */
const char *drdc_metric_key(int metric);
const char *drdc_metric_title(int metric);

/* Fills maps[m] (c = 1, any size: it is resized bilinearly to the comparison size) and
 * scores[m] for each method m of test sample s. The evaluator frees the maps. */
typedef drdc_status (*drdc_map_source)(void *ctx, const drdc_dataset *ds, const drdc_sample *s,
                                       drdc_image *maps, float *scores);

/* A method's decision thresholds for the test images of a category: *image (an image is anomalous
 * when its score >= it) and *pixel (a defect pixel when its map value >= it); NAN: none. */
typedef void (*drdc_threshold_source)(void *ctx, int method, const char *category, double *image, double *pixel);

typedef struct drdc_eval_options {
    int eval_size;           /* 0: compare at each image's original size */
    const char *dump_maps;   /* folder for .npy maps (original size), NULL: none */
    const char *vis;         /* folder for one labelled panel per test image (<vis>/<category>/<defect>/<stem>.png):
                              * image with the truth outlined, each method's map with its colour bar, pixel
                              * threshold and predicted regions, a caption with scores and verdicts; NULL: none */
    const double *vis_lo, *vis_hi; /* per method: fixed colour range of its maps (a model's calibrated
                                      range); NULL: each panel's own min..max */
    int quiet;               /* 0: a progress line on stderr */
    drdc_threshold_source thresholds;  /* NULL: no verdicts and no rates */
    void *thresholds_ctx;
    int curves;              /* 1: keep the ROC, PR and PRO curves of every method and category */
} drdc_eval_options;

/* Decisions of a method at its calibrated threshold over a set of test images. Good images judged
 * anomalous, or given an error verdict, are false rejects (a line stops a good part); defective
 * images judged normal are escapes. */
typedef struct drdc_eval_rates {
    double threshold;        /* the image threshold used (NAN: none, or several in a pooled column) */
    int n_good, n_false_rejects;
    int n_defective, n_escapes;
    int n_errors;            /* images whose score was not finite (counted in the above as well) */
} drdc_eval_rates;

/* One test image: its scores and verdicts by method. */
typedef struct drdc_eval_image {
    int category;            /* index into the result's categories */
    char *path, *defect;     /* owned */
    int label;               /* 0 good, 1 defective */
    float *scores;           /* (n_methods) */
    signed char *verdicts;   /* (n_methods) drdc_verdict values, or -1 without a threshold */
} drdc_eval_image;

typedef struct drdc_eval_result {
    int n_methods, n_categories;
    char **methods;          /* (n_methods) */
    char **categories;       /* (n_categories) */
    double *values;          /* (n_methods, n_categories + 1, DRDC_N_METRICS); column n_categories = mean */
    char **notes;            /* (n_categories) why metrics are n/a, or NULL */
    char *model_json;        /* what produced the maps (a JSON object: model file, steps, the inference
                              * settings used), written under "model"; NULL: none. Owned (free()). */
    drdc_eval_rates *rates;  /* (n_methods, n_categories + 1), the last column all categories pooled;
                              * NULL without thresholds */
    int n_images;
    drdc_eval_image *images; /* (n_images) every test image evaluated, in dataset order */
    drdc_curves *image_curves, *pixel_curves;  /* (n_methods, n_categories) with options.curves, else NULL */
} drdc_eval_result;

static inline const drdc_eval_rates *drdc_eval_rates_at(const drdc_eval_result *r, int method, int category) {
    return &r->rates[(size_t)method * (r->n_categories + 1) + category];
}

static inline double drdc_eval_value(const drdc_eval_result *r, int method, int category, int metric) {
    return r->values[((size_t)method * (r->n_categories + 1) + category) * DRDC_N_METRICS + metric];
}

drdc_status drdc_evaluate(const drdc_dataset *ds, int n_methods, const char *const *methods,
                          drdc_map_source source, void *ctx, const drdc_eval_options *opt,
                          drdc_eval_result *out);
void drdc_eval_result_free(drdc_eval_result *r);   /* safe on a zeroed struct */

/* ---- a trained model's maps as a map source -------------------------------------------------- */

/* Methods a model source computes (a set of flags). "base": UniAD's map at data.image_size (eq. 2);
 * "diffusion": the diffusion map alone (eqs. 14-16), scored by the same pooled maximum; "drdc": the
 * fused map (eq. 17); the last two at refiner.image_size. */
enum { DRDC_METHOD_BASE = 1, DRDC_METHOD_DIFFUSION = 2, DRDC_METHOD_DRDC = 4 };
typedef struct drdc_model_source drdc_model_source;

/* A source of m's maps for drdc_evaluate (m is borrowed and must outlive it). A category's test maps
 * are computed in batches of infer.batch the first time one of them is asked for (with a progress
 * line) and kept until the next category. Asking for diffusion or drdc of a model without a trained
 * refiner is DRDC_ERR_INPUT. */
drdc_status drdc_model_source_new(drdc_model_source **out, const drdc_model *m, unsigned methods);
/* The methods in the order their maps come, and each one's calibrated colour range (any output may
 * be NULL); returns their number. */
int drdc_model_source_methods(const drdc_model_source *ms, const char **names, double *lo, double *hi);
/* The drdc_threshold_source callback; ctx is the drdc_model_source: a method's calibrated
 * thresholds for a category (its own when the model knows it; the diffusion map has none). */
void drdc_model_source_thresholds(void *ctx, int method, const char *category, double *image, double *pixel);
/* The drdc_map_source callback; ctx is the drdc_model_source. */
drdc_status drdc_model_source_maps(void *ctx, const drdc_dataset *ds, const drdc_sample *s, drdc_image *maps,
                                   float *scores);
void drdc_model_source_free(drdc_model_source *ms);   /* NULL-safe */

/* The map file of sample s: DIR[/method]/<category>/<defect>/<image stem>.npy (method NULL:
 * no method folder). The layout --dump-maps writes and --maps reads. */
void drdc_eval_map_path(char *out, size_t cap, const char *dir, const char *method, const char *category,
                        const drdc_sample *s);

/* Tables like the paper's Tables 2-3: one per metric, categories as columns (mean last),
 * methods as rows, percent with one decimal. */
void drdc_eval_print_tables(FILE *f, const drdc_eval_result *r);
/* {"methods": {m: {"categories": {c: {key: x}}, "mean": {key: x}}}, "notes": {...}, "model": {...},
 * "rates": {m: {c or "all": {threshold, good, false_rejects, false_reject_rate, defective, escapes,
 * escape_rate, errors}}}, "images": [{category, defect, path, label, scores: {m: x}, verdicts: {m: v}}]},
 * values in [0,1] or null. */
drdc_status drdc_eval_write_json(const drdc_eval_result *r, const char *path);
/* Writes DIR/index.html: one self-contained page with every table, the curves (options.curves),
 * the thresholds with their false-reject and escape rates, and the test images worst first (by
 * the last method) with their panels, found at panels_dir/<category>/<defect>/<stem>.png relative
 * to DIR (NULL: no panels). `about` lines describe the model and settings. */
drdc_status drdc_eval_write_report(const drdc_eval_result *r, const char *dir, const char *panels_dir,
                                   const char *const *about, int n_about);

/* Header "method,category,<keys>"; one row per method and category, then "mean". */
drdc_status drdc_eval_write_csv(const drdc_eval_result *r, const char *path);

#ifdef __cplusplus
}
#endif
#endif
