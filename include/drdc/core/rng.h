/* rng.h: the project's host-side random numbers and hashes, and the named seed streams.
 *
 * Everything random in drdc is seeded from train.seed: host-side orders (data split, loader
 * shuffles, synthetic data) by splitmix64, tensors by libtorch generators. Each use draws from its
 * own stream, train.seed + a drdc_seed_stream offset, so adding a draw to one stage never shifts
 * another's (streams that share an offset use different generators: libtorch's or splitmix64). The offsets are part of the model format (they decide the initial weights and the
 * training order that --resume replays): append, never renumber. */
#ifndef DRDC_RNG_H
#define DRDC_RNG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum drdc_seed_stream {
    DRDC_SEED_BACKBONE_INIT = 0,   /* random backbone weights (when none are given) */
    DRDC_SEED_SPLIT = 0,           /* the train/validation split (splitmix64 per category) */
    DRDC_SEED_BASE_ORDER = 0,      /* the base stage's loader order (splitmix64 per epoch) */
    DRDC_SEED_BASE_INIT = 1,       /* the base transformer's initial weights */
    DRDC_SEED_BASE_TRAIN = 2,      /* feature jitter and dropout of stage 1 (per step and sample: drdc_seed_sample) */
    DRDC_SEED_REFINER_INIT = 3,    /* the U-Net's initial weights */
    DRDC_SEED_REFINER_TRAIN = 5,   /* eq. (10) batches (grid, partition, t, noise) and dropout of stage 2 (per
                                    * step and sample: drdc_seed_sample) */
    DRDC_SEED_INFER = 7,           /* per-image inpainting draws at test time (mixed with the image's hash) */
    DRDC_SEED_REFINER_ORDER = 1000, /* the refiner's loader order */
} drdc_seed_stream;

/* The seed of a stream: train.seed + its offset. */
static inline uint64_t drdc_seed(int train_seed, drdc_seed_stream s) { return (uint64_t)train_seed + (uint64_t)s; }

/* The seed of one sample's draws at one training step: a hash of (stream seed, step, index), index
 * = the sample's position in the GLOBAL batch (-1: the step's own draws, e.g. the base stage's
 * jitter coin). The training stages draw every per-sample random number from a generator seeded
 * with it, so a sample gets the same numbers whichever process of a data-parallel group trains it
 * and however the batch is split, and a resumed run (which knows its step) draws them again. */
uint64_t drdc_seed_sample(uint64_t stream_seed, int64_t step, int64_t index);

/* splitmix64 (Steele, Lea and Flood): advances *state by 0x9E3779B97F4A7C15 and returns
 * drdc_mix64 of the new state: the next 64 random bits. */
uint64_t drdc_splitmix64(uint64_t *state);

/* splitmix64's output function alone: a 64-bit mixing hash (a bijection). */
uint64_t drdc_mix64(uint64_t z);

/* FNV-1a, 64 bit, over n bytes, continuing from h (start with DRDC_FNV_OFFSET). */
#define DRDC_FNV_OFFSET 0xcbf29ce484222325ull
uint64_t drdc_fnv1a64(uint64_t h, const void *data, size_t n);

#ifdef __cplusplus
}
#endif
#endif
