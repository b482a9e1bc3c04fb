/* train.h: training stages and calibration on the validation split.
 *
 * Stage 1 (base): the UniAD transformer learns to reconstruct frozen backbone features of
 * normal images of every category together (MSE, feature jitter, AdamW, gradient clipping,
 * StepLR). A checkpoint (model + optimizer moments + generator state + epoch) is written
 * atomically to <out>/checkpoint.safetensors at epoch ends every train.checkpoint_every steps
 * and at the end; --resume continues from it to the same result as an uninterrupted run.
 * Calibration: the validation split's base maps give the normal statistics and the image-score
 * threshold stored in the model file. */
#ifndef DRDC_TRAIN_H
#define DRDC_TRAIN_H

#include "drdc/data/dataset.h"
#include "drdc/stages/fusion.h"
#include "drdc/model/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct drdc_train_options {
    const char *out_dir;   /* run folder (exists) */
    int resume;            /* continue from out_dir/checkpoint.safetensors */
    int quiet;             /* no progress lines */
} drdc_train_options;

/* One optimisation step: the loss value (a non-finite loss is DRDC_ERR_NUMERIC and changes
 * nothing), zero grads, backward, gradient clipping to `clip` (0: none), AdamW step. */
drdc_status drdc_optimise(double *loss_value, dt_tensor loss, const dt_tensor *params, int n_params, double clip,
                          dt_optimizer opt);

/* Stage 1 on the training list; m is freshly built, or loaded from the checkpoint with resume. */
drdc_status drdc_train_base(drdc_model *m, const drdc_sample_list *train, const drdc_train_options *o);

/* Stage 2 (refiner): the inpainting U-Net learns eq. (10) on the same normal images: random
 * grid size, partition and hidden set per image, random t < refiner.max_train_t, MSE on the
 * noise; AdamW with clipping; an EMA copy of the weights (refiner.ema_decay) becomes the model's
 * refiner. Runs until refiner.steps optimisation steps; checkpoints every
 * train.checkpoint_every steps (mid-epoch too: resume replays the epoch's order and skips the
 * batches already done). */
drdc_status drdc_train_refiner(drdc_model *m, const drdc_sample_list *train, const drdc_train_options *o);

/* The EMA decay of update n (0-based): refiner.ema_decay, or with refiner.ema_warmup
 * min(ema_decay, (1 + n) / (10 + n)). ema <- decay * ema + (1 - decay) * live after each step. */
double drdc_ema_decay_at(const drdc_refiner_config *rc, int n);

/* Colour range of a method's heatmaps over normal images (see drdc_model_stats): mean to
 * mean + 2 (threshold - mean) when the threshold lies above the mean, else mean to mean + 6 std
 * (pass NAN when a map has no threshold). */
void drdc_colour_range(const drdc_norm_stats *ns, double threshold, double *lo, double *hi);

/* Runs the validation list through the model (base, and the refiner when trained) and stores
 * the normal statistics, thresholds and colour ranges in m->stats. */
drdc_status drdc_calibrate(drdc_model *m, const drdc_sample_list *val, int quiet);

#ifdef __cplusplus
}
#endif
#endif
