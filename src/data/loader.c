/* loader.c: parallel decoding of dataset samples into float batches (see loader.h).
 *
 * Threads per epoch: drdc_loader_start_epoch spawns the workers, which claim samples in epoch
 * order from one shared counter and decode each straight into its place in a ring of
 * prefetch + 1 batch buffers; a worker waits while the batch its next sample belongs to has no
 * free buffer (the consumer still holds or has not yet taken the batch that used it). The
 * consumer (drdc_loader_next) takes batch b once all its samples are in, and hands back batch
 * b - 1 at the same time. A failing sample stops all further claims; because claims are in
 * order, every sample before it is still decoded, so the consumer sees the batches before the
 * failure and then the lowest failing sample's error, the same on every run. With keep_going a
 * failing sample is delivered in its place instead (zero pixels, its status and message), and the
 * epoch goes on. */
#define _POSIX_C_SOURCE 200809L
#include "drdc/data/loader.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drdc/formats/image.h"
#include "drdc/core/rng.h"

#define LOADER_ERR_CAP 2048
#define LOADER_MAX_SIZE 16384

typedef struct loader_slot {
    drdc_batch batch;
    int filled;               /* samples of the batch occupying this slot that are decoded */
} loader_slot;

struct drdc_loader {
    drdc_loader_options opt;
    drdc_sample *samples;     /* (n) with owned string copies */
    int n;
    int *order;               /* (n) this epoch's order: this shard's samples of it */
    int *global_order;        /* (n) the whole epoch's order (sharded loaders) */
    int n_used;               /* this shard's samples this epoch (drop_last may drop a tail) */
    int n_used_global;        /* samples of all shards this epoch */
    int bs;                   /* this shard's samples per full batch: batch_size / shards */
    int shard, shards;
    int n_batches;
    int n_slots;
    loader_slot *slots;       /* (n_slots) */

    pthread_mutex_t mu;
    pthread_cond_t cv_work;   /* workers: a slot was freed, or cancel */
    pthread_cond_t cv_ready;  /* consumer: a sample finished, or an error */
    pthread_t *threads;       /* (opt.workers) */
    int n_threads;            /* started this epoch, not yet joined */

    int epoch;
    int running;              /* an epoch was started and has not ended */
    int ended;                /* the current epoch was read to its end */
    int next_item;            /* next position in order to claim */
    int released;             /* batches whose buffer is free again */
    int consumed;             /* batches handed to the consumer */
    int cancel;               /* workers must stop claiming */
    int err_item;             /* lowest failing position in order, or INT_MAX */
    drdc_status err_st;
    char err_msg[LOADER_ERR_CAP];
    int failed;               /* the epoch ended with err_st / err_msg (sticky) */
};

void drdc_loader_options_default(drdc_loader_options *opt) {
    memset(opt, 0, sizeof *opt);
    opt->batch_size = 8;
    opt->workers = 2;
    opt->prefetch = 2;
}

void drdc_loader_epoch_order(int n, uint64_t seed, int epoch, int shuffle, int *order) {
    for (int i = 0; i < n; i++) order[i] = i;
    if (!shuffle || n < 2) return;
    uint64_t state = seed ^ (0xD1B54A32D192ED03ull * ((uint64_t)(uint32_t)epoch + 1));
    (void)drdc_splitmix64(&state);
    for (int i = n - 1; i > 0; i--) {   /* Fisher-Yates */
        int j = (int)(drdc_splitmix64(&state) % (uint64_t)(i + 1));
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* ---- decoding one sample --------------------------------------------------------------------- */

/* The 0/1 mask of sample s at w x h (all zero when the sample has none); the mask file must have
 * its image's size, orig_w x orig_h. */
static drdc_status decode_mask(const drdc_sample *s, int w, int h, int orig_w, int orig_h, drdc_image *mask) {
    if (!s->mask_path) return drdc_image_alloc(mask, w, h, 1);
    drdc_image mraw = {0};
    drdc_status st = DRDC_OK;
    TRY(drdc_image_load_mask(s->mask_path, &mraw));
    if (mraw.w != orig_w || mraw.h != orig_h) {
        st = drdc_fail(DRDC_ERR_INPUT, "mask %s is %dx%d but its image %s is %dx%d", s->mask_path, mraw.w,
                       mraw.h, s->image_path, orig_w, orig_h);
        goto done;
    }
    if (mraw.w == w && mraw.h == h) {
        *mask = mraw;
        memset(&mraw, 0, sizeof mraw);
    } else {
        TRY(drdc_image_resize(&mraw, w, h, mask));
        size_t np = (size_t)w * (size_t)h;
        for (size_t i = 0; i < np; i++) mask->data[i] = mask->data[i] >= 0.5f ? 1.0f : 0.0f;
    }
done:
    drdc_image_free(&mraw);
    return st;
}

/* Decodes a sample: rgb (HWC, resized to size x size unless size is 0) and, when with_mask,
 * its 0/1 mask at the same size (zero when the sample has none); original (may be NULL) gets the
 * decoded image at its own size. */
static drdc_status decode_sample(const drdc_sample *s, int size, int with_mask, drdc_image *rgb,
                                 drdc_image *mask, int *orig_w, int *orig_h, drdc_image *original) {
    drdc_image raw = {0};
    memset(rgb, 0, sizeof *rgb);
    memset(mask, 0, sizeof *mask);
    drdc_status st = DRDC_OK;
    TRY(drdc_image_load_rgb(s->image_path, &raw));
    *orig_w = raw.w;
    *orig_h = raw.h;
    int w = size ? size : raw.w, h = size ? size : raw.h;
    if (raw.w == w && raw.h == h && !original) {
        *rgb = raw;
        memset(&raw, 0, sizeof raw);
    } else {
        TRY(drdc_image_resize(&raw, w, h, rgb));
    }
    if (with_mask) TRY(decode_mask(s, w, h, *orig_w, *orig_h, mask));
    if (original) {
        *original = raw;
        memset(&raw, 0, sizeof raw);
    }
done:
    drdc_image_free(&raw);
    if (st) {
        drdc_image_free(rgb);
        drdc_image_free(mask);
    }
    return st;
}

/* HWC (c = 3) -> CHW. */
static void to_chw(const drdc_image *img, float *dst) {
    size_t np = (size_t)img->w * (size_t)img->h;
    const float *src = img->data;
    for (size_t p = 0; p < np; p++) {
        dst[p] = src[3 * p];
        dst[np + p] = src[3 * p + 1];
        dst[2 * np + p] = src[3 * p + 2];
    }
}

drdc_status drdc_sample_load(const drdc_sample *sample, int size, int with_mask, drdc_sample_pixels *out) {
    memset(out, 0, sizeof *out);
    if (size < 0 || size > LOADER_MAX_SIZE)
        return drdc_fail(DRDC_ERR_INPUT, "image size %d out of range [0, %d]", size, LOADER_MAX_SIZE);
    drdc_image rgb = {0}, mask = {0};
    drdc_status st = DRDC_OK;
    TRY(decode_sample(sample, size, with_mask, &rgb, &mask, &out->orig_w, &out->orig_h, NULL));
    size_t np = (size_t)rgb.w * (size_t)rgb.h;
    out->w = rgb.w;
    out->h = rgb.h;
    out->image = malloc(3 * np * sizeof(float));
    if (with_mask) out->mask = mask.data;   /* c = 1 HWC is already (1, h, w) */
    mask.data = NULL;
    if (!out->image) {
        st = drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory (%dx%d image)", sample->image_path, rgb.w, rgb.h);
        drdc_sample_pixels_free(out);
        goto done;
    }
    to_chw(&rgb, out->image);
done:
    drdc_image_free(&rgb);
    return st;
}

void drdc_sample_pixels_free(drdc_sample_pixels *px) {
    if (!px) return;
    free(px->image);
    free(px->mask);
    memset(px, 0, sizeof *px);
}

/* ---- the loader ------------------------------------------------------------------------------ */

static void free_samples(drdc_sample *s, int n) {
    if (!s) return;
    for (int i = 0; i < n; i++) {
        free((void *)s[i].image_path);
        free((void *)s[i].mask_path);
        free((void *)s[i].defect);
    }
    free(s);
}

static char *dup_or_null(const char *s, int *bad) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (!d) *bad = 1;
    else memcpy(d, s, n);
    return d;
}

static void free_slots(drdc_loader *ld) {
    if (!ld->slots) return;
    for (int k = 0; k < ld->n_slots; k++) {
        drdc_batch *b = &ld->slots[k].batch;
        free(b->images);
        free(b->masks);
        free(b->index);
        free(b->label);
        free(b->category);
        free(b->orig_w);
        free(b->orig_h);
        free(b->status);
        for (int i = 0; b->error && i < ld->bs; i++) free(b->error[i]);
        free(b->error);
        for (int i = 0; b->original && i < ld->bs; i++) drdc_image_free(&b->original[i]);
        free(b->original);
    }
    free(ld->slots);
    ld->slots = NULL;
}

drdc_status drdc_loader_create(drdc_loader **out, const drdc_sample *samples, int n,
                               const drdc_loader_options *opt) {
    *out = NULL;
    if (n < 0 || (n > 0 && !samples)) return drdc_fail(DRDC_ERR_INPUT, "loader: %d samples", n);
    if (opt->image_size < 1 || opt->image_size > LOADER_MAX_SIZE)
        return drdc_fail(DRDC_ERR_INPUT, "loader: image size %d out of range [1, %d]", opt->image_size, LOADER_MAX_SIZE);
    if (opt->batch_size < 1 || opt->batch_size > 65536)
        return drdc_fail(DRDC_ERR_INPUT, "loader: batch size %d out of range [1, 65536]", opt->batch_size);
    if (opt->workers < 1 || opt->workers > 256)
        return drdc_fail(DRDC_ERR_INPUT, "loader: %d workers (expected 1..256)", opt->workers);
    if (opt->prefetch < 1 || opt->prefetch > 64)
        return drdc_fail(DRDC_ERR_INPUT, "loader: prefetch %d (expected 1..64)", opt->prefetch);
    size_t plane = (size_t)opt->image_size * (size_t)opt->image_size;
    size_t B = (size_t)opt->batch_size;
    if (plane * 3 * B > ((size_t)1 << 34) / sizeof(float))
        return drdc_fail(DRDC_ERR_INPUT, "loader: batch %d of %dx%d images is too large", opt->batch_size,
                         opt->image_size, opt->image_size);

    int shards = opt->shards > 1 ? opt->shards : 1;
    if (opt->shard < 0 || opt->shard >= shards)
        return drdc_fail(DRDC_ERR_INPUT, "loader: shard %d of %d", opt->shard, shards);
    if (opt->batch_size % shards != 0)
        return drdc_fail(DRDC_ERR_INPUT, "loader: a batch of %d cannot be split evenly over %d processes (the batch "
                         "is the global one: make it a multiple of %d)", opt->batch_size, shards, shards);
    drdc_loader *ld = calloc(1, sizeof *ld);
    if (!ld) return drdc_fail(DRDC_ERR_NOMEM, "loader: out of memory");
    ld->opt = *opt;
    ld->shards = shards;
    ld->shard = opt->shard;
    ld->bs = opt->batch_size / shards;
    B = (size_t)ld->bs;   /* the buffers hold this shard's part */
    ld->n = n;
    ld->err_item = INT_MAX;
    int bad = 0;
    ld->samples = calloc((size_t)(n ? n : 1), sizeof *ld->samples);
    ld->order = malloc((size_t)(n ? n : 1) * sizeof *ld->order);
    ld->global_order = malloc((size_t)(n ? n : 1) * sizeof *ld->global_order);
    ld->threads = calloc((size_t)opt->workers, sizeof *ld->threads);
    ld->n_slots = opt->prefetch + 1;
    ld->slots = calloc((size_t)ld->n_slots, sizeof *ld->slots);
    if (!ld->samples || !ld->order || !ld->global_order || !ld->threads || !ld->slots) bad = 1;
    for (int i = 0; !bad && i < n; i++) {
        ld->samples[i] = samples[i];
        ld->samples[i].image_path = dup_or_null(samples[i].image_path, &bad);
        ld->samples[i].mask_path = dup_or_null(samples[i].mask_path, &bad);
        ld->samples[i].defect = dup_or_null(samples[i].defect, &bad);
        if (!bad && !ld->samples[i].image_path) {
            free_samples(ld->samples, i + 1);
            free(ld->order);
            free(ld->global_order);
            free(ld->threads);
            free_slots(ld);
            free(ld);
            return drdc_fail(DRDC_ERR_INPUT, "loader: sample %d has no image path", i);
        }
    }
    for (int k = 0; !bad && k < ld->n_slots; k++) {
        drdc_batch *b = &ld->slots[k].batch;
        b->size = opt->image_size;
        b->images = malloc(B * 3 * plane * sizeof(float));
        if (opt->with_masks) b->masks = malloc(B * plane * sizeof(float));
        b->index = malloc(B * sizeof(int));
        b->label = malloc(B * sizeof(int));
        b->category = malloc(B * sizeof(int));
        b->orig_w = malloc(B * sizeof(int));
        b->orig_h = malloc(B * sizeof(int));
        b->status = calloc(B, sizeof *b->status);
        b->error = calloc(B, sizeof *b->error);
        if (opt->keep_original) b->original = calloc(B, sizeof *b->original);
        if (!b->images || (opt->with_masks && !b->masks) || !b->index || !b->label || !b->category ||
            !b->orig_w || !b->orig_h || !b->status || !b->error || (opt->keep_original && !b->original))
            bad = 1;
    }
    if (bad) {
        free_samples(ld->samples, n);
        free(ld->order);
        free(ld->global_order);
        free(ld->threads);
        free_slots(ld);
        free(ld);
        return drdc_fail(DRDC_ERR_NOMEM, "loader: out of memory for %d samples, %d buffers of %d x %dx%d", n,
                         opt->prefetch + 1, opt->batch_size, opt->image_size, opt->image_size);
    }
    pthread_mutex_init(&ld->mu, NULL);
    pthread_cond_init(&ld->cv_work, NULL);
    pthread_cond_init(&ld->cv_ready, NULL);
    *out = ld;
    return DRDC_OK;
}

int drdc_loader_batches_per_epoch(const drdc_loader *ld) {
    int B = ld->opt.batch_size;
    return ld->opt.drop_last ? ld->n / B : (ld->n + B - 1) / B;
}

/* This shard's samples in batch b (0 for an empty last part). */
static int batch_count(const drdc_loader *ld, int b) {
    int left = ld->n_used - b * ld->bs;
    return left < 0 ? 0 : left < ld->bs ? left : ld->bs;
}

static void *worker_main(void *arg) {
    drdc_loader *ld = arg;
    const int B = ld->bs, S = ld->opt.image_size;
    const size_t plane = (size_t)S * (size_t)S;
    pthread_mutex_lock(&ld->mu);
    for (;;) {
        if (ld->cancel || ld->err_item != INT_MAX || ld->next_item >= ld->n_used) break;
        int i = ld->next_item, b = i / B;
        if (b >= ld->released + ld->n_slots) {   /* its buffer is still in use */
            pthread_cond_wait(&ld->cv_work, &ld->mu);
            continue;
        }
        ld->next_item++;
        pthread_mutex_unlock(&ld->mu);

        loader_slot *slot = &ld->slots[b % ld->n_slots];
        drdc_batch *bt = &slot->batch;
        int pos = i % B, si = ld->order[i];
        const drdc_sample *s = &ld->samples[si];
        drdc_image rgb, mask;
        int ow = 0, oh = 0;
        if (bt->original) drdc_image_free(&bt->original[pos]);   /* the slot's previous batch's */
        drdc_status st = decode_sample(s, S, ld->opt.with_masks, &rgb, &mask, &ow, &oh,
                                       bt->original ? &bt->original[pos] : NULL);
        bt->status[pos] = st;
        if (st != DRDC_OK && ld->opt.keep_going) {   /* delivered in its place: zero pixels and the reason */
            const size_t np = (size_t)S * (size_t)S;
            memset(bt->images + (size_t)pos * 3 * plane, 0, 3 * np * sizeof(float));
            if (ld->opt.with_masks) memset(bt->masks + (size_t)pos * plane, 0, np * sizeof(float));
            free(bt->error[pos]);
            bt->error[pos] = dup_or_null(drdc_last_error(), &(int){0});
            bt->index[pos] = si;
            bt->label[pos] = s->label;
            bt->category[pos] = s->category;
            bt->orig_w[pos] = bt->orig_h[pos] = 0;
            st = DRDC_OK;
        } else if (st == DRDC_OK) {
            free(bt->error[pos]);
            bt->error[pos] = NULL;
        }
        if (st == DRDC_OK && bt->status[pos] == DRDC_OK) {
            to_chw(&rgb, bt->images + (size_t)pos * 3 * plane);
            if (ld->opt.with_masks) memcpy(bt->masks + (size_t)pos * plane, mask.data, plane * sizeof(float));
            bt->index[pos] = si;
            bt->label[pos] = s->label;
            bt->category[pos] = s->category;
            bt->orig_w[pos] = ow;
            bt->orig_h[pos] = oh;
            drdc_image_free(&rgb);
            drdc_image_free(&mask);
        }

        pthread_mutex_lock(&ld->mu);
        if (st != DRDC_OK && i < ld->err_item) {
            ld->err_item = i;
            ld->err_st = st;
            snprintf(ld->err_msg, sizeof ld->err_msg, "%s", drdc_last_error());
            pthread_cond_broadcast(&ld->cv_work);   /* other waiting workers: stop */
        }
        slot->filled++;
        pthread_cond_broadcast(&ld->cv_ready);
    }
    pthread_mutex_unlock(&ld->mu);
    return NULL;
}

/* Stops the workers of the current epoch (if any) and joins them. Call without the lock. */
static void stop_workers(drdc_loader *ld) {
    pthread_mutex_lock(&ld->mu);
    ld->cancel = 1;
    pthread_cond_broadcast(&ld->cv_work);
    int nt = ld->n_threads;
    ld->n_threads = 0;
    pthread_mutex_unlock(&ld->mu);
    for (int t = 0; t < nt; t++) pthread_join(ld->threads[t], NULL);
}

drdc_status drdc_loader_start_epoch(drdc_loader *ld, int epoch) {
    stop_workers(ld);
    /* no thread runs now: reset without the lock */
    ld->epoch = epoch;
    const int GB = ld->opt.batch_size;
    ld->n_used_global = ld->opt.drop_last ? (ld->n / GB) * GB : ld->n;
    ld->n_batches = drdc_loader_batches_per_epoch(ld);
    ld->next_item = ld->released = ld->consumed = 0;
    ld->cancel = 0;
    ld->failed = 0;
    ld->ended = 0;
    ld->err_item = INT_MAX;
    ld->err_st = DRDC_OK;
    ld->err_msg[0] = '\0';
    for (int k = 0; k < ld->n_slots; k++) ld->slots[k].filled = 0;
    if (ld->shards == 1) {
        drdc_loader_epoch_order(ld->n, ld->opt.seed, epoch, ld->opt.shuffle, ld->order);
        ld->n_used = ld->n_used_global;
    } else {   /* this shard's positions of each global batch, in order */
        drdc_loader_epoch_order(ld->n, ld->opt.seed, epoch, ld->opt.shuffle, ld->global_order);
        ld->n_used = 0;
        for (int b = 0; b < ld->n_batches; b++) {
            int end = (b + 1) * GB < ld->n_used_global ? (b + 1) * GB : ld->n_used_global;
            for (int p = b * GB + ld->shard * ld->bs; p < b * GB + (ld->shard + 1) * ld->bs && p < end; p++)
                ld->order[ld->n_used++] = ld->global_order[p];
        }
    }
    ld->running = 1;
    int want = ld->opt.workers < ld->n_used ? ld->opt.workers : ld->n_used;
    for (int t = 0; t < want; t++) {
        int rc = pthread_create(&ld->threads[t], NULL, worker_main, ld);
        if (rc != 0) {
            pthread_mutex_lock(&ld->mu);
            ld->n_threads = t;
            pthread_mutex_unlock(&ld->mu);
            stop_workers(ld);
            ld->running = 0;
            return drdc_fail(DRDC_ERR_STATE, "loader: cannot start worker thread %d of %d (error %d)", t + 1, want, rc);
        }
        pthread_mutex_lock(&ld->mu);
        ld->n_threads = t + 1;
        pthread_mutex_unlock(&ld->mu);
    }
    return DRDC_OK;
}

drdc_status drdc_loader_next(drdc_loader *ld, const drdc_batch **batch) {
    *batch = NULL;
    pthread_mutex_lock(&ld->mu);
    if (ld->failed) {
        drdc_status st = drdc_fail(ld->err_st, "%s", ld->err_msg);
        pthread_mutex_unlock(&ld->mu);
        return st;
    }
    if (!ld->running) {
        int ended = ld->ended;
        pthread_mutex_unlock(&ld->mu);
        if (ended) return DRDC_OK;   /* still at the end */
        return drdc_fail(DRDC_ERR_STATE, "loader: no epoch running (call drdc_loader_start_epoch)");
    }
    /* hand back the batch the consumer held */
    if (ld->consumed > ld->released) {
        for (int r = ld->released; r < ld->consumed; r++) ld->slots[r % ld->n_slots].filled = 0;
        ld->released = ld->consumed;
        pthread_cond_broadcast(&ld->cv_work);
    }
    int b = ld->consumed;
    if (b >= ld->n_batches) {   /* end of epoch */
        ld->running = 0;
        ld->ended = 1;
        pthread_mutex_unlock(&ld->mu);
        stop_workers(ld);
        return DRDC_OK;
    }
    loader_slot *slot = &ld->slots[b % ld->n_slots];
    int want = batch_count(ld, b);
    while (slot->filled < want && !(ld->err_item != INT_MAX && ld->err_item / ld->bs <= b))
        pthread_cond_wait(&ld->cv_ready, &ld->mu);
    if (ld->err_item != INT_MAX && ld->err_item / ld->bs <= b) {
        /* Join first: a sample before err_item in this batch may still be decoding and fail
         * too; after the join err_item is the lowest failing sample, the same on every run. */
        ld->failed = 1;
        ld->running = 0;
        pthread_mutex_unlock(&ld->mu);
        stop_workers(ld);
        pthread_mutex_lock(&ld->mu);
        drdc_status st = drdc_fail(ld->err_st, "%s", ld->err_msg);
        pthread_mutex_unlock(&ld->mu);
        return st;
    }
    ld->consumed++;
    slot->batch.n = want;
    slot->batch.epoch = ld->epoch;
    slot->batch.batch_index = b;
    slot->batch.first = ld->shard * ld->bs;
    int left = ld->n_used_global - b * ld->opt.batch_size;
    slot->batch.global_n = left < ld->opt.batch_size ? left : ld->opt.batch_size;
    pthread_mutex_unlock(&ld->mu);
    *batch = &slot->batch;
    return DRDC_OK;
}

void drdc_loader_free(drdc_loader *ld) {
    if (!ld) return;
    stop_workers(ld);
    pthread_mutex_destroy(&ld->mu);
    pthread_cond_destroy(&ld->cv_work);
    pthread_cond_destroy(&ld->cv_ready);
    free_samples(ld->samples, ld->n);
    free(ld->order);
    free(ld->global_order);
    free(ld->threads);
    free_slots(ld);
    free(ld);
}
