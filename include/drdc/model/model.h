/* model.h: DRDC as one object: the frozen backbone, the base transformer (UniAD) and, once
 * trained, the diffusion refiner, plus the normal statistics and threshold calibrated on the
 * validation split. Commands use this layer; they never reach into a stage.
 *
 * Model file (safetensors): tensors "backbone.*", "base.*" (and "refiner.*", the EMA U-Net)
 * under their PyTorch names; __metadata__: format "drdc-model", format_version, config (the
 * resolved JSON), stats (JSON), base_epochs, refiner_steps. */
#ifndef DRDC_MODEL_H
#define DRDC_MODEL_H

#include "drdc/stages/backbone.h"
#include "drdc/core/config.h"
#include "drdc/stages/diffusion.h"
#include "drdc/core/error.h"
#include "drdc/formats/safetensors.h"
#include "drdc/shim/shim.h"
#include "drdc/stages/base.h"
#include "drdc/stages/unet.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DRDC_MODEL_FORMAT "drdc-model"
#define DRDC_MODEL_FORMAT_VERSION 1

/* Calibration on the normal validation images (never test images). The heatmap colour range
 * [lo, hi] of a method is [mean of its normal map pixels, mean + 2 * (threshold - mean)] when
 * the threshold lies above the mean (so the threshold sits mid-scale), else [mean, mean + 6 std].
 * Decisions: an image is anomalous when its score >= the image threshold (infer.threshold_quantile
 * of the validation images' scores); a pixel is a defect pixel when its map value >= the pixel
 * threshold (infer.pixel_quantile of all validation pixels of that method's map). Both exist for
 * all categories together and for each category of the training data (its own validation images).
 * A threshold that was never calibrated (models written before it existed) is NAN. */
#define DRDC_MAX_CATEGORIES 64
typedef struct drdc_category_stats {
    char name[DRDC_NAME_CAP];
    int n_val_images;
    double base_threshold, base_pixel_threshold;   /* of the base map, this category's validation images */
    double drdc_threshold, drdc_pixel_threshold;   /* of the fused map */
} drdc_category_stats;

typedef struct drdc_model_stats {
    int ready;              /* 1 once the base model is calibrated */
    int n_val_images;       /* images it was calibrated on */
    double base_mean, base_std;        /* pixels of H_base (at data.image_size) */
    double base_threshold;             /* threshold of the base image score */
    double score_lo, score_hi;         /* colour range of the base map */
    int drdc_ready;                    /* 1 once the full model (with refiner) is calibrated */
    double fuse_base_mean, fuse_base_std;  /* pixels of H_base at refiner size, for eq. (17) */
    double diff_mean, diff_std;        /* pixels of H'_diff (eq. 16), for eq. (17) */
    double drdc_mean, drdc_std;        /* pixels of the fused map H */
    double drdc_threshold;             /* threshold of the DRDC image score */
    double drdc_lo, drdc_hi;           /* colour range of the fused map */
    double base_pixel_threshold;       /* pixel thresholds, all categories (NAN: not calibrated) */
    double drdc_pixel_threshold;
    int n_categories;                  /* per-category thresholds (0: none) */
    drdc_category_stats categories[DRDC_MAX_CATEGORIES];
} drdc_model_stats;

/* A method's decision thresholds for one image. */
typedef struct drdc_thresholds {
    double image;        /* score >= image: anomalous */
    double pixel;        /* map value >= pixel: defect pixel; NAN when the model has none */
    const char *scope;   /* "all categories" or the category's name (borrowed from the model) */
} drdc_thresholds;

typedef struct drdc_model {
    drdc_config cfg;        /* the resolved config it was built with */
    dt_device dev;
    drdc_backbone backbone; /* frozen */
    drdc_base base;        /* trained in stage 1 */
    drdc_unet refiner;      /* stage 2, the EMA weights (what inference uses) */
    drdc_schedule schedule; /* linear betas of the refiner */
    drdc_model_stats stats;
    int base_epochs;        /* epochs of stage 1 done */
    int refiner_steps;      /* optimisation steps of stage 2 done (0: no refiner yet) */
    int backbone_pretrained;/* 1 when backbone weights were loaded from a file */
} drdc_model;

/* Every rule a config must satisfy: the core's (drdc_config_validate: ranges, name, categories,
 * data.image_size) then each stage's (backbone, base, U-Net, diffusion, fusion). Errors are
 * DRDC_ERR_CONFIG naming the key. */
drdc_status drdc_model_check_config(const drdc_config *cfg);

/* Builds every stage with its initial weights (after drdc_model_check_config); loads cfg->backbone.weights when set (else warns
 * on stderr that the backbone is random). Seeds from cfg->train.seed. */
drdc_status drdc_model_build(drdc_model *m, const drdc_config *cfg, dt_device dev);

/* Makes the refiner's inference copies of its convolution weights for infer.precision
 * (drdc_unet_prepare); a no-op without a trained refiner. Called where the weights or the
 * precision change (load, --set, calibration); a pass on weights changed since reads them
 * unprepared, as correct and slower. Outside any shim scope. */
drdc_status drdc_model_prepare(drdc_model *m);

/* (Re)builds m->refiner and m->schedule from m->cfg with their initial weights (replacing any). */
drdc_status drdc_model_build_refiner(drdc_model *m);
/* A U-Net with the refiner's initial weights for cfg (the one place its seed stream is used). */
drdc_status drdc_model_refiner_init(drdc_unet *unet, const drdc_config *cfg, dt_device dev);

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
 * bilinear align_corners = true up to S as UniAD; with infer.base_scales other than [1], the mean
 * over the scales s of Up(||Down_s(f) - Down_s(f^)||_2), Down = area) and score [B] (max of the
 * p x p average pool). */
drdc_status drdc_model_base(dt_tensor *map, dt_tensor *score, const drdc_model *m, dt_tensor images);

/* Host data -> the model's device: n items of c x size x size float32 values (the loader's
 * [n,3,S,S] image batches in [0,1], or [n,1,R,R] maps) as one [n,c,size,size] tensor on m->dev.
 * The one place a host batch becomes a device tensor. */
drdc_status drdc_model_upload(dt_tensor *out, const drdc_model *m, const float *data, int n, int c, int size);

/* The refiner's image range, in training and inference alike: x = 2 * images - 1 ([0,1] -> [-1,1]). */
drdc_status drdc_model_refiner_range(dt_tensor *x, dt_tensor images);

/* The size of the images the model takes: data.image_size, or with the refiner the larger of
 * data.image_size and refiner.image_size (each stage gets them area-resized down to its own size,
 * so neither sees an enlarged image). */
int drdc_model_input_size(const drdc_model *m, int with_refiner);

/* Full DRDC on a batch: images [B,3,I,I] in [0,1] on m->dev with I = drdc_model_input_size(m, 1)
 * (resized to data.image_size S for the base stage and to refiner.image_size R for the refiner) ->
 * heat [B,1,R,R] (eq. 17) and score [B]; base_map/base_score (may be NULL) get the base stage's
 * map (at S, resized to R x R) and its score. h_diff (may be NULL) gets H'_diff (eq. 16). With standardize "normal"
 * the model must be calibrated for DRDC (stats.drdc_ready) unless `calibrating` is 1, in which
 * case heat and score are not computed (NULL) and only the maps are returned. The inpainting
 * partitions and noise of each image come from its own generator, seeded by
 * drdc_model_image_seed, and every stage runs one image at a time: an image's maps and score depend
 * on the model and the image alone, not on the batch it is in (bit for bit). Except with
 * infer.batch_refiner: the inpainting runs of the whole batch then share each U-Net call (faster),
 * and an image's maps and score depend on its batch in the last bits (the base stage stays one image
 * at a time). infer.precision bf16 runs the backbone, base transformer and U-Net under bf16
 * autocast (maps and scores stay float32). times (may be NULL) gets the seconds spent in each stage. */
typedef struct drdc_stage_times {
    double base_s, refine_s, fusion_s;   /* wall seconds of each stage (device synchronised) */
} drdc_stage_times;
drdc_status drdc_model_drdc(dt_tensor *heat, dt_tensor *score, dt_tensor *base_map, dt_tensor *base_score,
                            dt_tensor *h_diff, const drdc_model *m, dt_tensor images, int calibrating,
                            drdc_stage_times *times);

/* The floating-point operations of drdc_model_drdc on `images` images (stages.h's counters: 2 x
 * multiply-adds of the convolutions, Linear layers and attention products; norms, elementwise ops,
 * resizing and the fusion's filters are not counted): the backbone and base transformer at
 * data.image_size, one U-Net call on the images' B*K*G inpainting runs at refiner.image_size, and
 * infer.steps of them for the refiner. drdc = backbone + base + refine (the fusion counts 0). */
typedef struct drdc_pass_flops {
    int64_t backbone, base, unet_call, refine, drdc;
    int64_t unet_runs;   /* B*K*G: the U-Net batch of one call */
} drdc_pass_flops;
void drdc_model_flops(drdc_pass_flops *f, const drdc_model *m, int64_t images);

/* The seed of an image's inpainting draws: splitmix64 of (train.seed + DRDC_SEED_INFER) xor FNV-1a of
 * its n float32 pixel values (the [3,R,R] image in [0,1] at the refiner's size). */
uint64_t drdc_model_image_seed(const drdc_model *m, const float *pixels, size_t n);

void drdc_model_free(drdc_model *m);   /* safe on a zeroed struct */

/* Which of drdc's own CPU kernels this CPU runs, for --version and the bench header: "AMX and
 * AVX-512 (bf16 convolutions and attention on AMX tiles)", "AVX-512" or "portable C". */
const char *drdc_model_cpu_kernels(void);

/* The verdict on an image: fail closed, a score that is not a finite number is an error, never
 * "normal". */
typedef enum drdc_verdict { DRDC_VERDICT_NORMAL = 0, DRDC_VERDICT_ANOMALOUS = 1, DRDC_VERDICT_ERROR = 2 } drdc_verdict;
const char *drdc_verdict_name(drdc_verdict v);   /* "normal", "anomalous", "error" */
/* The verdict of a score against a threshold (score >= threshold: anomalous; non-finite: error). */
drdc_verdict drdc_verdict_of(double score, double threshold);

/* The thresholds of the base (use_drdc 0) or DRDC (1) method for an image of `category` (its own
 * calibrated thresholds when the model knows the category; NULL or unknown: all categories'). */
drdc_thresholds drdc_model_thresholds(const drdc_model *m, int use_drdc, const char *category);
/* Index of a category the model was calibrated on, or -1. */
int drdc_model_category(const drdc_model *m, const char *name);

/* Applies "infer.KEY=VALUE" overrides to a loaded model's config and validates it. Only infer.* keys
 * may change after training (the others describe the trained networks): any other key is a usage
 * error naming it and the model file `path`. The stored statistics then describe other settings:
 * recalibrate (calibrate.h) before trusting thresholds. */
drdc_status drdc_model_set_infer(drdc_model *m, const char *const *sets, int n, const char *path);

/* One line for people: the DRDC inference settings in use ("start from the image, tau 250, 10 DDIM
 * steps, K 2, grids 8,16, x0 clipping off"). */
void drdc_model_describe_drdc(const drdc_model *m, char *out, size_t cap);

/* The same for files: {"file", "base_epochs", "refiner_steps", "backbone_pretrained", "config"} with the
 * resolved config in use (overrides included). Caller frees with free(); NULL on OOM. */
char *drdc_model_describe_json(const drdc_model *m, const char *path);

#ifdef __cplusplus
}
#endif
#endif
