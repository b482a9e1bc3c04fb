/* infer.h: scoring image files with a trained model, as `drdc infer` does: the method (drdc, or base
 * when asked or when the refiner never trained), the calibrated threshold and colour range, one image
 * file in, its score and its map at the image's original size out, and the heatmap pictures. */
#ifndef DRDC_INFER_H
#define DRDC_INFER_H

#include "drdc/formats/image.h"
#include "drdc/model/model.h"
#include "drdc/shim/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct drdc_inferer {
    drdc_model m;
    const char *model_path;  /* borrowed */
    int use_drdc;            /* 1: the fused DRDC map (eq. 17); 0: the base map (eq. 2) */
    int map_size;            /* the model's maps are map_size x map_size */
    int load_size;           /* images go in at load_size x load_size (drdc_model_input_size) */
    double threshold;        /* image-score threshold of the method (calibrated) */
    double lo, hi;           /* heatmap colour range of the method (calibrated) */
    char how[256];           /* the DRDC settings in words; "" for base */
} drdc_inferer;

/* Loads the model at path on rt's device and picks the method: "base", "drdc", or NULL for drdc when
 * the refiner has trained, else base with a warning on stderr. `sets` are infer.* overrides
 * ("infer.steps=5"; the threshold stays the calibrated one). A model that is not calibrated, or
 * "drdc" without a trained and calibrated refiner, is DRDC_ERR_INPUT. Close with drdc_inferer_close. */
drdc_status drdc_inferer_open(drdc_inferer *inf, const char *path, const char *method, const char *const *sets,
                              int n_sets, const drdc_runtime *rt);
void drdc_inferer_close(drdc_inferer *inf);   /* safe on a zeroed struct */

typedef struct drdc_infer_result {
    float score;             /* the method's image score */
    float base_score;        /* the base stage's image score */
    drdc_image image;        /* the image as loaded, RGB in [0,1], original size */
    drdc_image map;          /* the method's map at the image's original size (c = 1) */
    double load_s, base_s, refine_s, fusion_s;   /* wall seconds */
} drdc_infer_result;

/* Scores one image file. r is filled (free with drdc_infer_result_free, also after a failure). */
drdc_status drdc_infer_image(const drdc_inferer *inf, const char *path, drdc_infer_result *r);
void drdc_infer_result_free(drdc_infer_result *r);

/* Writes the map as a turbo heatmap PNG (heat, may be NULL) and over the image (overlay, may be NULL),
 * on the method's calibrated colour range, at the image's size. */
drdc_status drdc_infer_write_pictures(const drdc_inferer *inf, const drdc_infer_result *r, const char *heat,
                                      const char *overlay);

#ifdef __cplusplus
}
#endif
#endif
