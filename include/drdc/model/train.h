/* train.h: training: a whole run (drdc_train_run) and its two stages.
 *
 * Stage 1 (base): the UniAD transformer learns to reconstruct frozen backbone features of
 * normal images of every category together (MSE, feature jitter, AdamW, gradient clipping,
 * StepLR). A checkpoint (model + optimizer moments + generator state + epoch) is written
 * atomically to <out>/checkpoint.safetensors at epoch ends every train.checkpoint_every steps
 * and at the end; --resume continues from it to the same result as an uninterrupted run.
 * After each stage the model is calibrated on the validation split (calibrate.h) and written. */
#ifndef DRDC_TRAIN_H
#define DRDC_TRAIN_H

#include <stdio.h>

#include "drdc/data/dataset.h"
#include "drdc/stages/fusion.h"
#include "drdc/model/model.h"
#include "drdc/shim/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct drdc_train_options {
    const char *out_dir;   /* run folder (exists) */
    int resume;            /* continue from out_dir/checkpoint.safetensors */
    int quiet;             /* no progress lines */
    FILE *log;             /* the loss log (drdc_train_log_step), or NULL */
} drdc_train_options;

/* What `drdc train` asks for besides the config. */
typedef struct drdc_train_request {
    const char *stage;     /* "base" | "refiner" | "all" (NULL: all) */
    int resume;            /* continue the run folder's training */
    int force;             /* train into a folder that already holds a run, replacing it */
} drdc_train_request;

/* Appends one row to the loss log (stage, step, epoch, loss, lr, images/s); nothing without a log. */
void drdc_train_log_step(const drdc_train_options *o, const char *stage, int64_t step, int epoch, double loss,
                         double lr, double images_per_s);

/* A training run as `drdc train` does it: makes the run folder (cfg->train.out, default
 * runs/<name>) and locks it for the run (a second run on it fails at once, naming the holder's pid),
 * refuses a folder that already holds a run unless resuming or forced, stores the data root
 * absolute, prints the resolved config, opens the dataset and splits it (validation images are
 * never trained on; none at all is refused before training), builds the model or (resume, or stage
 * "refiner") loads the folder's checkpoint, trains (loss.csv in the folder gets a row per step),
 * calibrates, writes model.safetensors and points runs/latest at the folder. */
drdc_status drdc_train_run(drdc_config *cfg, const drdc_train_request *req, const drdc_runtime *rt);

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


#ifdef __cplusplus
}
#endif
#endif
