/* model.h: DRDC as one object: the frozen backbone, the base transformer (UniAD) and, once
 * trained, the diffusion refiner, plus the normal statistics and threshold calibrated on the
 * validation split. Commands use this layer; they never reach into a stage.
 *
 * Model file (safetensors): tensors "backbone.*", "base.*" (and "refiner.*", the EMA U-Net)
 * under their PyTorch names; __metadata__: format "drdc-model", format_version, config (the
 * resolved JSON), stats (JSON), base_epochs, refiner_steps. */
#ifndef DRDC_MODEL_H
#define DRDC_MODEL_H

#include "drdc/backbone.h"
#include "drdc/config.h"
#include "drdc/error.h"
#include "drdc/safetensors.h"
#include "drdc/shim.h"
#include "drdc/transformer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DRDC_MODEL_FORMAT "drdc-model"
#define DRDC_MODEL_FORMAT_VERSION 1

typedef struct drdc_model_stats {
    int ready;              /* 1 once calibrated on the validation split */
    int n_val_images;       /* images it was calibrated on */
    double base_mean, base_std;        /* pixels of H_base on normal validation images */
    double base_threshold;             /* threshold of the base image score */
    double score_lo, score_hi;         /* heatmap colour range of the base map (0.5th / 99.9th pct-ish) */
} drdc_model_stats;

typedef struct drdc_model {
    drdc_config cfg;        /* the resolved config it was built with */
    dt_device dev;
    drdc_backbone backbone; /* frozen */
    drdc_uniad base;        /* trained in stage 1 */
    drdc_model_stats stats;
    int base_epochs;        /* epochs of stage 1 done */
    int backbone_pretrained;/* 1 when backbone weights were loaded from a file */
} drdc_model;

/* Builds every stage with its initial weights; loads cfg->backbone.weights when set (else warns
 * on stderr that the backbone is random). Seeds from cfg->train.seed. */
drdc_status drdc_model_build(drdc_model *m, const drdc_config *cfg, dt_device dev);

/* Adds the model's tensors and metadata to a writer (a checkpoint adds its own on top). */
drdc_status drdc_model_write(const drdc_model *m, drdc_st_writer *w);
/* Writes the model file atomically. */
drdc_status drdc_model_save(const drdc_model *m, const char *path);

/* Reads the config from a model file's metadata, builds the model and loads every tensor.
 * A file that is not a drdc model, a newer or older format version, or a tensor that does not
 * fit is an error naming the file and saying how to fix it. */
drdc_status drdc_model_load(drdc_model *m, const char *path, dt_device dev);
/* The same from an open file (a checkpoint). */
drdc_status drdc_model_load_st(drdc_model *m, const drdc_st_file *f, dt_device dev);

/* Base stage on a batch: images [B,3,S,S] in [0,1] on m->dev -> map [B,1,S,S] (H_base, eq. 2,
 * bilinear align_corners = true up to S as UniAD) and score [B] (max of the p x p average pool). */
drdc_status drdc_model_base(dt_tensor *map, dt_tensor *score, const drdc_model *m, dt_tensor images);

/* Image score of maps [B,1,H,W]: max over the map of an average pool p x p, stride 1 (UniAD);
 * p is clamped to the map size. */
drdc_status drdc_image_score(dt_tensor *score, dt_tensor map, int pool);

void drdc_model_free(drdc_model *m);   /* safe on a zeroed struct */

#ifdef __cplusplus
}
#endif
#endif
