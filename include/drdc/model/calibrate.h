/* calibrate.h: a trained model's normal statistics (drdc_model_stats), computed on validation
 * images held out from train/good: the mean and standard deviation of each map's pixels (for the
 * standardisation before eq. 17), the image-score thresholds (infer.threshold_quantile of the
 * validation scores) and the heatmap colour ranges. */
#ifndef DRDC_CALIBRATE_H
#define DRDC_CALIBRATE_H

#include "drdc/data/dataset.h"
#include "drdc/model/model.h"
#include "drdc/stages/fusion.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Colour range of a method's heatmaps over normal images (see drdc_model_stats): mean to
 * mean + 2 (threshold - mean) when the threshold lies above the mean, else mean to mean + 6 std
 * (pass NAN when a map has no threshold). */
void drdc_colour_range(const drdc_norm_stats *ns, double threshold, double *lo, double *hi);

/* Runs the validation list through the model (base, and the refiner when trained) and stores
 * the normal statistics, thresholds and colour ranges in m->stats (replacing them): image
 * thresholds = infer.threshold_quantile of the validation scores, pixel thresholds =
 * infer.pixel_quantile of all validation map pixels (at the refiner's size when the model has one),
 * for all images and, when category_names are given (the dataset's categories, indexed by each
 * sample's category), for each category's own validation images. */
drdc_status drdc_calibrate(drdc_model *m, const drdc_sample_list *val, const char *const *category_names,
                           int n_categories, int quiet);

/* Recalibrates m on its own validation split (m->cfg's data section and seed; data_root, when not
 * NULL, replaces the stored root), on n_images evenly spaced validation images (0: all): what
 * `eval --set infer.KEY=V` needs, since the stored statistics describe the trained settings.
 * *n_used (may be NULL) gets the number of images used. */
drdc_status drdc_model_recalibrate(drdc_model *m, const char *data_root, int n_images, int *n_used);

#ifdef __cplusplus
}
#endif
#endif
