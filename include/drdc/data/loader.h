/* loader.h: decodes dataset samples into float batches, in parallel, ahead of the consumer.
 *
 * A loader owns a copy of a sample list (paths copied). Each epoch, worker threads (pthreads)
 * decode and resize the images of the epoch's order into a small ring of batch buffers
 * (prefetch batches ahead of the one the consumer holds); the consumer takes batches in order
 * with drdc_loader_next. Pixels are plain float buffers (no libtorch):
 *   images [B,3,S,S] CHW, values in [0,1] (drdc_image_load_rgb + drdc_image_resize)
 *   masks  [B,1,S,S] values exactly 0 or 1: the mask resized like the image (antialiased
 *          bilinear), then thresholded at >= 0.5; all zero for samples without a mask
 * Order: sample order, or (shuffle) a permutation that depends only on (seed, epoch, n), so
 * --resume can reproduce it (drdc_loader_epoch_order). drop_last drops a final partial batch.
 * Errors: unless keep_going, the first failing sample (unreadable, corrupt, mask size differing
 * from the image) ends the epoch: the batches before it are still delivered in order, then drdc_loader_next
 * returns the error (naming the file), the worker threads are joined, and every later call
 * returns the same error until the next drdc_loader_start_epoch. No thread outlives
 * drdc_loader_free, nor an epoch that ended.
 * Shards (data-parallel training, as torch's DistributedSampler but split within each batch):
 * with shards = W > 1, batch_size is the GLOBAL batch B (a multiple of W). Every shard computes the
 * same epoch order; global batch b is positions [b*B, b*B + n_b) of it (n_b = B but for a final
 * partial batch), and shard s takes positions b*B + s*B/W .. b*B + (s+1)*B/W - 1 that exist: B/W
 * samples, fewer or none in a final partial batch. Every shard hands out the same number of batches
 * (drdc_loader_batches_per_epoch, the global count), so a shard may get an empty last batch (n 0).
 * The shards' batches b, concatenated in shard order, are the one-process batch b. */
#ifndef DRDC_LOADER_H
#define DRDC_LOADER_H

#include <stdint.h>
#include "drdc/data/dataset.h"
#include "drdc/core/error.h"
#include "drdc/formats/image.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct drdc_loader_options {
    int image_size;    /* S: every image is resized to S x S; >= 1 */
    int batch_size;    /* B; >= 1 */
    int workers;       /* decoding threads; >= 1 */
    int prefetch;      /* batches decoded ahead of the one the consumer holds; >= 1 (2 is typical) */
    int with_masks;    /* also produce masks */
    int shuffle;       /* permute per epoch */
    int drop_last;     /* drop the last batch when it has fewer than B samples */
    uint64_t seed;     /* shuffle seed (mixed with the epoch number) */
    int keep_going;    /* a sample that cannot be decoded does not end the epoch: it is delivered in its
                        * place with zero pixels, batch.status and batch.error saying why */
    int keep_original; /* also deliver each decoded image at its own size (batch.original) */
    int shard, shards; /* data-parallel: this process's share of every batch (0 and 0 or 1: all) */
} drdc_loader_options;

/* Sensible defaults: batch 8, 2 workers, prefetch 2, no masks, no shuffle, keep last, seed 0;
 * image_size must still be set. */
void drdc_loader_options_default(drdc_loader_options *opt);

typedef struct drdc_batch {
    int n;             /* samples in this batch (B, or fewer in a last partial batch) */
    int size;          /* S */
    int epoch;         /* the epoch it belongs to */
    int batch_index;   /* position of this batch within the epoch */
    int first;         /* position of its first sample within the global batch (shard * B/W; 0 unsharded) */
    int global_n;      /* samples in the global batch (all shards together; = n unsharded) */
    float *images;     /* (n, 3, S, S) */
    float *masks;      /* (n, 1, S, S), NULL unless with_masks */
    int *index;        /* (n) position of each sample in the loader's sample list */
    int *label;        /* (n) 0 normal / 1 anomalous */
    int *category;     /* (n) category index */
    int *orig_w, *orig_h;   /* (n) size of the image file before resizing (0 for a failed sample) */
    drdc_status *status;    /* (n) DRDC_OK, or (keep_going) why the sample could not be decoded */
    char **error;           /* (n) (keep_going) the failed sample's message, NULL for the others */
    drdc_image *original;   /* (n) keep_original: the decoded image at its own size, HWC in [0,1]; the
                             * consumer may take one (move it out and zero the entry) */
} drdc_batch;

typedef struct drdc_loader drdc_loader;

/* Builds a loader over n samples (copied). No thread starts until drdc_loader_start_epoch. */
drdc_status drdc_loader_create(drdc_loader **out, const drdc_sample *samples, int n,
                               const drdc_loader_options *opt);

/* Starts an epoch (any epoch number, e.g. the one a resumed run stops at); an unfinished
 * previous epoch is cancelled first (its threads joined). */
drdc_status drdc_loader_start_epoch(drdc_loader *ld, int epoch);

/* Waits for the next batch of the current epoch. *batch is set to a buffer owned by the loader,
 * valid until the next drdc_loader_next / start_epoch / free call; NULL at the end of the epoch
 * (then the threads are joined) and on every later call until the next start_epoch. On a
 * sample error, returns it (message names the file). Without a started epoch: DRDC_ERR_STATE. */
drdc_status drdc_loader_next(drdc_loader *ld, const drdc_batch **batch);

/* Batches per epoch with the loader's (global) batch size and drop_last. */
int drdc_loader_batches_per_epoch(const drdc_loader *ld);

/* Stops any running epoch, joins every thread, frees everything. NULL is fine. */
void drdc_loader_free(drdc_loader *ld);

/* The sample order of one epoch: order[i] = index of the i-th sample (n entries); identity when
 * shuffle is 0. The same (n, seed, epoch) always gives the same order. */
void drdc_loader_epoch_order(int n, uint64_t seed, int epoch, int shuffle, int *order);

/* ---- one sample at a time (evaluation at the original resolution) ---------------------------- */

typedef struct drdc_sample_pixels {
    int w, h;          /* stored size: the original size (size 0) or S x S */
    int orig_w, orig_h;
    float *image;      /* (3, h, w) CHW in [0,1] */
    float *mask;       /* (1, h, w) 0/1; NULL unless asked for (all zero for a good sample) */
} drdc_sample_pixels;

/* Loads one sample. size 0 keeps the original resolution (no resampling); size > 0 resizes
 * exactly as the batch path does. with_mask: also load (or zero-fill) its mask. */
drdc_status drdc_sample_load(const drdc_sample *sample, int size, int with_mask, drdc_sample_pixels *out);
void drdc_sample_pixels_free(drdc_sample_pixels *px);   /* safe on a zeroed struct */

#ifdef __cplusplus
}
#endif
#endif
