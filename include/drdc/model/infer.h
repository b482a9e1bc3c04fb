/* infer.h: scoring image files with a trained model, as `drdc infer` does: the method (drdc, or base
 * when asked or when the refiner never trained), the calibrated threshold and colour range, one image
 * file in, its score and its map at the image's original size out, and the heatmap pictures. */
#ifndef DRDC_INFER_H
#define DRDC_INFER_H

#include <stdint.h>

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
    double lo, hi;           /* heatmap colour range of the method (calibrated) */
    char how[256];           /* the DRDC settings in words; "" for base */
    double threshold_override;   /* > -INFINITY: the image threshold the user gave (--threshold) */
    const char *category;    /* the images' category (its own calibrated thresholds), or NULL */
} drdc_inferer;

/* The decision thresholds for the images scored: the category's calibrated ones when the model
 * knows inf->category, else all categories'; the image threshold replaced by the override when
 * one is set (scope then says "--threshold"). */
drdc_thresholds drdc_inferer_thresholds(const drdc_inferer *inf);

/* Loads the model at path on rt's device and picks the method: "base", "drdc", or NULL for drdc when
 * the refiner has trained, else base with a warning on stderr. `sets` are infer.* overrides
 * ("infer.steps=5"; the threshold stays the calibrated one). A model that is not calibrated, or
 * "drdc" without a trained and calibrated refiner, is DRDC_ERR_INPUT. Close with drdc_inferer_close. */
drdc_status drdc_inferer_open(drdc_inferer *inf, const char *path, const char *method, const char *const *sets,
                              int n_sets, const drdc_runtime *rt);
void drdc_inferer_close(drdc_inferer *inf);   /* safe on a zeroed struct */

/* One 8-connected region of the defect mask. */
typedef struct drdc_region {
    int64_t area;            /* pixels */
    int x0, y0, x1, y1;      /* bounding box, inclusive, in the image's pixels */
    float peak;              /* largest map value inside */
} drdc_region;

typedef struct drdc_infer_result {
    float score;             /* the method's image score */
    float base_score;        /* the base stage's image score */
    drdc_image image;        /* the image as loaded, RGB in [0,1], original size */
    drdc_image map;          /* the method's map at the image's original size (c = 1) */
    double load_s, base_s, refine_s, fusion_s;   /* wall seconds */
    drdc_thresholds thr;     /* the thresholds applied */
    drdc_verdict verdict;
    uint8_t *mask;           /* [h*w] 1 where map >= thr.pixel (NULL when there is no pixel threshold) */
    int64_t defect_pixels;   /* pixels set in mask */
    int n_regions;           /* 8-connected regions of the mask, largest first */
    drdc_region *regions;    /* (n_regions) */
} drdc_infer_result;

/* Scores one image file and decides: verdict, and with a pixel threshold the defect mask and its
 * regions. r is filled (free with drdc_infer_result_free, also after a failure). A file that cannot
 * be read or decoded is DRDC_ERR_INPUT naming it (or DRDC_ERR_FORMAT); a non-finite score is not a
 * failure: the verdict says error. */
drdc_status drdc_infer_image(const drdc_inferer *inf, const char *path, drdc_infer_result *r);
void drdc_infer_result_free(drdc_infer_result *r);

/* A pipelined run over many files: what it measured. */
typedef struct drdc_infer_stats {
    int images;            /* files handed to the sink (scored or not) */
    double wall_s;         /* from the start to the last file handed over */
    double model_s;        /* inside the model (upload, the method, maps back to the host) */
    double idle_share;     /* 1 - model_s / wall_s: the share of time the model waited (decoding, the sink) */
} drdc_infer_stats;

/* Receives each file's outcome, in the order of the paths: r the scored and decided result (freed
 * after the call), or r NULL when the file could not be read or decoded (st and error say why). A
 * non-OK return stops the run with that status. */
typedef drdc_status (*drdc_infer_sink)(void *ctx, int index, const drdc_infer_result *r, drdc_status st,
                                       const char *error);

/* Scores n image files as drdc_infer_image would, one by one to the sink, pipelined: `workers` loader
 * threads decode and resize the next images while the model runs, and the model takes up to
 * infer.batch of them per call (every image's result is still the image's alone, bit for bit, unless
 * infer.batch_refiner). Unreadable files go to the sink as failures; model failures (memory, libtorch)
 * stop the run. */
drdc_status drdc_infer_files(const drdc_inferer *inf, const char *const *paths, int n, int workers,
                             drdc_infer_sink sink, void *ctx, drdc_infer_stats *stats);

/* Finds the 8-connected regions of a binary mask (w x h) with their areas, boxes and the peak of
 * map inside, largest area first. *regions is malloc'd (NULL when none). */
drdc_status drdc_mask_regions(const uint8_t *mask, const float *map, int w, int h, drdc_region **regions, int *n);

/* The pictures of one scored image; any path may be NULL (not written). Maps are coloured on the
 * method's calibrated range. Small images are enlarged (whole pixel repeats) to at least 256 px on
 * the shorter side; the mask keeps the image's size. */
typedef struct drdc_picture_paths {
    const char *heat;      /* the map in turbo colours */
    const char *overlay;   /* the map over the image, defect regions outlined, a caption with score and verdict */
    const char *mask;      /* the defect mask, black/white, at the image's size (needs a pixel threshold) */
    const char *panel;     /* labelled columns: image | map with colour bar and pixel threshold | overlay */
} drdc_picture_paths;
drdc_status drdc_infer_write_pictures(const drdc_inferer *inf, const drdc_infer_result *r,
                                      const drdc_picture_paths *p);

/* The caption of a scored image: "score 1.23, threshold 0.98 (all categories): ANOMALOUS, 2 regions". */
void drdc_infer_caption(const drdc_infer_result *r, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
