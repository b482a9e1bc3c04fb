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
    int lead;              /* this process writes checkpoints (rank 0, or the only process) */
} drdc_train_options;

/* What `drdc train` asks for besides the config. */
typedef struct drdc_train_request {
    const char *stage;     /* "base" | "refiner" | "all" (NULL: all) */
    int resume;            /* continue the run folder's training */
    int force;             /* train into a folder that already holds a run, replacing it */
    double dist_timeout;   /* data-parallel runs: the longest wait for another rank, in seconds (0: 60) */
} drdc_train_request;

/* Appends one row to the loss log (stage, step, epoch, loss, lr, images/s); nothing without a log. */
void drdc_train_log_step(const drdc_train_options *o, const char *stage, int64_t step, int epoch, double loss,
                         double lr, double images_per_s);

/* Data-parallel training (dist.h): when the environment names a process group (torchrun's
 * RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; `drdc train --nproc N` sets them for its ranks),
 * every rank joins it, reads its shard of every global batch (base.batch and refiner.batch stay
 * the GLOBAL batch; each must be a multiple of the world size) and takes the same optimisation
 * steps with the gradients averaged over the ranks. Every per-sample random draw comes from a
 * generator seeded per (seed, stage, step, position in the global batch) (drdc_seed_sample), one
 * process or many, so a run on W ranks computes what the one-process run computes, up to the order
 * of float sums. Rank 0 alone takes the run folder's lock and writes the config, loss log,
 * checkpoints (with the world size in their metadata), calibration, model file and runs/latest,
 * and prints; the other ranks print only errors. A rank that fails stops the others at the next
 * step, naming it; a rank that dies is noticed at once, one that hangs after the timeout.
 *
 * A training run as `drdc train` does it: makes the run folder (cfg->train.out, default
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

/* The step of a training stage, one process or a data-parallel group: one process, drdc_optimise
 * (or `local` when it is a failure). In a group: local is this rank's status so far (a failure stops
 * every rank, naming this one), loss its mean loss over its samples (NULL when it has none) and
 * share the weight of its samples in the global batch's mean (n_local * world / n_global, 1 for an
 * even split); backward on loss * share, gradients and loss averaged over the ranks
 * (drdc_dist_step), then the non-finite check, clipping and the AdamW step, the same on every
 * rank. `where` names the step in messages. */
drdc_status drdc_optimise_step(double *loss_value, dt_tensor loss, double share, drdc_status local,
                               const dt_tensor *params, int n_params, double clip, dt_optimizer opt, const char *where);

/* Stage 1 on the training list; m is freshly built, or loaded from the checkpoint with resume. */
drdc_status drdc_train_base(drdc_model *m, const drdc_sample_list *train, const drdc_train_options *o);

/* Stage 2 (refiner): the inpainting U-Net learns eq. (10) on the same normal images: random
 * grid size, partition and hidden set per image, random t < refiner.max_train_t, MSE on the
 * noise; AdamW with clipping; an EMA copy of the weights (refiner.ema_decay) becomes the model's
 * refiner. Runs until refiner.steps optimisation steps; checkpoints every
 * train.checkpoint_every steps (mid-epoch too: resume replays the epoch's order and skips the
 * batches already done). */
drdc_status drdc_train_refiner(drdc_model *m, const drdc_sample_list *train, const drdc_train_options *o);

/* Shared by the stages: the row generator of a step (one generator per sample of this process's
 * part of the global batch b, seeded drdc_seed_sample(stream, step, b->first + i)); and rank 0's
 * line on the time a stage spent in the all-reduce (data-parallel runs only; resets the count). */
struct drdc_batch;
drdc_status drdc_step_generators(dt_generator *out, uint64_t stream, int64_t step, const struct drdc_batch *b);
void drdc_train_say_dist_time(const drdc_train_options *o, const char *stage, double stage_s);
/* How long the other ranks wait for work rank 0 does alone (a checkpoint, a calibration): an hour,
 * or the --dist-timeout when longer. */
double drdc_train_rank0_wait_s(void);

/* The EMA decay of update n (0-based): refiner.ema_decay, or with refiner.ema_warmup
 * min(ema_decay, (1 + n) / (10 + n)). ema <- decay * ema + (1 - decay) * live after each step. */
double drdc_ema_decay_at(const drdc_refiner_config *rc, int n);


#ifdef __cplusplus
}
#endif
#endif
