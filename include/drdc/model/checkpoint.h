/* checkpoint.h: the run folder's checkpoint.safetensors: the model (as in a model file) plus
 * the training state of the stage in progress: the optimizer's moments ("opt.<stage>.<i>.*"),
 * the stage's generator state ("rng.<stage>"), any extra tensors of the stage (the refiner's
 * live weights next to its EMA copy) and counters in metadata. Written atomically: a crash
 * keeps the previous checkpoint whole. */
#ifndef DRDC_CHECKPOINT_H
#define DRDC_CHECKPOINT_H

#include "drdc/model/model.h"
#include "drdc/formats/params.h"
#include "drdc/formats/safetensors.h"
#include "drdc/shim/shim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a stage adds to the model in a checkpoint. */
typedef struct drdc_stage_state {
    const char *stage;            /* "base" | "refiner" */
    dt_optimizer opt;
    dt_generator gen;             /* a generator whose state is saved ("rng.<stage>"), or NULL: none (the
                                   * stages draw from per-step generators, which need no state) */
    const drdc_params *extra;     /* saved as "<stage>_live." + name; NULL: none */
    int epoch, batch;             /* where the stage's data order stands */
    int world;                    /* restored: the number of ranks that wrote the checkpoint (1: one process) */
    int per_sample;               /* restored: 1 when its draws were per sample (drdc_seed_sample); 0: a
                                   * checkpoint of a drdc that drew from one generator per stage */
} drdc_stage_state;

void drdc_checkpoint_path(char *out, size_t cap, const char *out_dir);

/* Writes model + stage state to <out_dir>/checkpoint.safetensors. */
drdc_status drdc_checkpoint_save(const drdc_model *m, const drdc_stage_state *s, const char *out_dir);

/* Writes model + stage state to the checkpoint (its metadata also holds the world size of the
 * run, drdc_dist_world, and "draws": "per-sample"). */

/* Restores the stage state (optimizer, generator, extra tensors, epoch and batch, world, draws)
 * from an open checkpoint; a checkpoint written by another stage leaves it untouched and sets
 * *found = 0. */
drdc_status drdc_checkpoint_restore(drdc_stage_state *s, drdc_params *extra, const drdc_st_file *f, dt_device dev,
                                    int *found);

/* What a resumed stage says (lead only): a checkpoint of another number of ranks continues the
 * same run (the global batch and every per-sample draw are the same; float sums are ordered
 * differently, so the weights match a same-world continuation within float rounding), and one of an
 * older drdc continues with per-sample draws. */
void drdc_checkpoint_say_resume(const drdc_stage_state *s, int lead);

/* Loads the model of a run folder's checkpoint. `cfg` is the config asked for now: it must equal
 * the checkpoint's except for the length of training (base.epochs, refiner.steps), where the
 * data and run are (data.root, data.workers, train.out), how often it logs and saves, the inference settings (infer.*), and,
 * while the refiner has not trained a step, the refiner's design (refiner.*: it is rebuilt);
 * else an error names the first key that differs. */
drdc_status drdc_checkpoint_load_model(drdc_model *m, const char *out_dir, const drdc_config *cfg, dt_device dev);

/* A tensor of a file as a new tensor on dev (F32, U8 and I64 files). */
drdc_status drdc_tensor_from_st(dt_tensor *out, const drdc_st_tensor *t, dt_device dev);
/* Adds a tensor to a writer (F32, U8 and I64 kept; other float dtypes stored as F32). */
drdc_status drdc_tensor_to_writer(drdc_st_writer *w, const char *name, dt_tensor t);

#ifdef __cplusplus
}
#endif
#endif
