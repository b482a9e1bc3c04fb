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

#include "drdc/dataset.h"
#include "drdc/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct drdc_train_options {
    const char *out_dir;   /* run folder (exists) */
    int resume;            /* continue from out_dir/checkpoint.safetensors */
    int quiet;             /* no progress lines */
} drdc_train_options;

/* Path of the checkpoint in a run folder. */
void drdc_checkpoint_path(char *out, size_t cap, const char *out_dir);

/* Loads a checkpoint: the model (built from the checkpoint's config) and how far stage 1 got.
 * `cfg` is the config the user asked for now: it must equal the checkpoint's except for the
 * length of training (base.epochs, refiner.steps), else an error says so. */
drdc_status drdc_checkpoint_load_model(drdc_model *m, const char *out_dir, const drdc_config *cfg, dt_device dev);

/* Stage 1 on the training list; m is freshly built, or loaded from the checkpoint with resume. */
drdc_status drdc_train_base(drdc_model *m, const drdc_sample_list *train, const drdc_train_options *o);

/* Runs the validation list through the base model and stores statistics and threshold in m. */
drdc_status drdc_calibrate(drdc_model *m, const drdc_sample_list *val, int quiet);

#ifdef __cplusplus
}
#endif
#endif
