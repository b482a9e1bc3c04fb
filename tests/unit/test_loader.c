/* test_loader.c: the parallel batch loader: shapes and values against direct loading, every
 * sample once per epoch, per-(seed, epoch) shuffling, shards of each batch for data-parallel
 * training, errors naming a corrupt file without
 * hanging, clean thread shutdown, and single-sample loading at the original size. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <stb/stb_image_write.h>

#include "drdc/data/dataset.h"
#include "drdc/formats/image.h"
#include "drdc/data/loader.h"
#include "testlib.h"

#define N_ITEMS 10
#define SIZE 16

static char g_img[N_ITEMS][1024];
static char g_mask[N_ITEMS][1024];
static drdc_sample g_samples[N_ITEMS];

/* Threads of this process, from /proc/self/task (-1 if unavailable). */
static int thread_count(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* N_ITEMS images of varying sizes (one JPEG, one gray PNG) with position-dependent content;
 * odd items are anomalous with a mask holding a rectangle. */
static void make_items(void) {
    const char *dir = test_tmpdir("loader_items");
    for (int k = 0; k < N_ITEMS; k++) {
        int w = 12 + 7 * k, h = 10 + 5 * (k % 4);
        drdc_image img = {0};
        CHECK_OK(drdc_image_alloc(&img, w, h, 3));
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int c = 0; c < 3; c++)
                    img.data[((size_t)y * w + x) * 3 + c] = (float)((x * 3 + y * 5 + c * 40 + k * 17) % 256) / 255.0f;
        if (k == 3) {   /* a JPEG */
            snprintf(g_img[k], sizeof g_img[k], "%s/img%02d.jpg", dir, k);
            unsigned char *px = malloc((size_t)w * h * 3);
            for (int i = 0; i < w * h * 3; i++) px[i] = (unsigned char)lrintf(img.data[i] * 255.0f);
            CHECK(stbi_write_jpg(g_img[k], w, h, 3, px, 95) != 0);
            free(px);
        } else {
            snprintf(g_img[k], sizeof g_img[k], "%s/img%02d.png", dir, k);
            CHECK_OK(drdc_image_write_png(g_img[k], &img));
        }
        drdc_image_free(&img);
        g_samples[k] = (drdc_sample){g_img[k], NULL, "good", 0, k % 3};
        if (k % 2) {
            drdc_image m = {0};
            CHECK_OK(drdc_image_alloc(&m, w, h, 1));
            for (int y = h / 4; y < h / 2 + 1; y++)
                for (int x = w / 3; x < w - 2; x++) m.data[(size_t)y * w + x] = 1.0f;
            snprintf(g_mask[k], sizeof g_mask[k], "%s/img%02d_mask.png", dir, k);
            CHECK_OK(drdc_image_write_png(g_mask[k], &m));
            drdc_image_free(&m);
            g_samples[k].mask_path = g_mask[k];
            g_samples[k].defect = "scratch";
            g_samples[k].label = 1;
        }
    }
}

static drdc_loader_options opts(int batch, int workers, int shuffle, int drop_last, int masks) {
    drdc_loader_options o;
    drdc_loader_options_default(&o);
    o.image_size = SIZE;
    o.batch_size = batch;
    o.workers = workers;
    o.shuffle = shuffle;
    o.drop_last = drop_last;
    o.with_masks = masks;
    o.seed = 42;
    return o;
}

/* Direct reference: load, resize, (mask: threshold at 0.5). */
static void reference(int k, drdc_image *rgb, drdc_image *mask) {
    drdc_image raw = {0};
    memset(rgb, 0, sizeof *rgb);
    memset(mask, 0, sizeof *mask);
    CHECK_OK(drdc_image_load_rgb(g_img[k], &raw));
    CHECK_OK(drdc_image_resize(&raw, SIZE, SIZE, rgb));
    drdc_image_free(&raw);
    if (g_samples[k].mask_path) {
        CHECK_OK(drdc_image_load_mask(g_mask[k], &raw));
        CHECK_OK(drdc_image_resize(&raw, SIZE, SIZE, mask));
        drdc_image_free(&raw);
        for (int i = 0; mask->data && i < SIZE * SIZE; i++) mask->data[i] = mask->data[i] >= 0.5f ? 1.0f : 0.0f;
    }
}

static void test_batches_match_direct_loading(void) {
    drdc_loader *ld = NULL;
    drdc_loader_options o = opts(3, 3, 0, 0, 1);
    CHECK_OK(drdc_loader_create(&ld, g_samples, N_ITEMS, &o));
    if (!ld) return;
    CHECK(drdc_loader_batches_per_epoch(ld) == 4);
    CHECK_OK(drdc_loader_start_epoch(ld, 0));
    const drdc_batch *b;
    int seen = 0, nb = 0;
    const size_t plane = SIZE * SIZE;
    for (;;) {
        drdc_status st = drdc_loader_next(ld, &b);
        CHECK_OK(st);
        if (st || !b) break;
        CHECK(b->batch_index == nb && b->epoch == 0 && b->size == SIZE);
        CHECK(b->n == (nb < 3 ? 3 : 1));
        CHECK(b->masks != NULL);
        for (int j = 0; j < b->n; j++) {
            int k = b->index[j];
            CHECK(k == seen);   /* no shuffle: sample order */
            drdc_image rgb, mask;
            reference(k, &rgb, &mask);
            int w = 12 + 7 * k, h = 10 + 5 * (k % 4);
            CHECK(b->orig_w[j] == w && b->orig_h[j] == h);
            CHECK(b->label[j] == g_samples[k].label && b->category[j] == k % 3);
            double maxdiff = 0, mdiff = 0, mask_sum = 0;
            const float *im = b->images + (size_t)j * 3 * plane;
            for (int c = 0; c < 3; c++)
                for (size_t p = 0; p < plane; p++) {
                    double d = fabs(im[c * plane + p] - rgb.data[p * 3 + c]);
                    if (d > maxdiff) maxdiff = d;
                    CHECK(im[c * plane + p] >= 0.0f && im[c * plane + p] <= 1.0f);
                }
            const float *mk = b->masks + (size_t)j * plane;
            for (size_t p = 0; p < plane; p++) {
                CHECK(mk[p] == 0.0f || mk[p] == 1.0f);
                mask_sum += mk[p];
                if (mask.data) mdiff += fabs(mk[p] - mask.data[p]);
            }
            CHECK(maxdiff == 0.0);
            CHECK(mdiff == 0.0);
            if (g_samples[k].mask_path) CHECK(mask_sum > 0);
            else CHECK(mask_sum == 0);
            drdc_image_free(&rgb);
            drdc_image_free(&mask);
            seen++;
        }
        nb++;
    }
    CHECK(seen == N_ITEMS && nb == 4);
    /* after the end, next keeps reporting the end */
    CHECK_OK(drdc_loader_next(ld, &b));
    CHECK(b == NULL);
    drdc_loader_free(ld);
}

/* Runs one epoch, filling order_out with the sample index sequence; returns the count. */
static int run_epoch(drdc_loader *ld, int epoch, int *order_out, int cap, int *batch_sizes) {
    CHECK_OK(drdc_loader_start_epoch(ld, epoch));
    const drdc_batch *b;
    int n = 0, nb = 0;
    while (drdc_loader_next(ld, &b) == DRDC_OK && b) {
        if (batch_sizes) batch_sizes[nb] = b->n;
        nb++;
        for (int j = 0; j < b->n && n < cap; j++) order_out[n++] = b->index[j];
    }
    return n;
}

static void test_every_sample_once(void) {
    drdc_loader *ld = NULL;
    drdc_loader_options o = opts(4, 2, 1, 0, 0);
    CHECK_OK(drdc_loader_create(&ld, g_samples, N_ITEMS, &o));
    if (!ld) return;
    int order[64], sizes[16];
    for (int e = 0; e < 3; e++) {
        int n = run_epoch(ld, e, order, 64, sizes);
        CHECK(n == N_ITEMS);
        int count[N_ITEMS] = {0};
        for (int i = 0; i < n; i++)
            if (order[i] >= 0 && order[i] < N_ITEMS) count[order[i]]++;
        for (int k = 0; k < N_ITEMS; k++) CHECK(count[k] == 1);
        CHECK(sizes[0] == 4 && sizes[1] == 4 && sizes[2] == 2);
    }
    drdc_loader_free(ld);

    /* drop_last: 2 full batches of 4, 8 distinct samples */
    o = opts(4, 3, 1, 1, 0);
    CHECK_OK(drdc_loader_create(&ld, g_samples, N_ITEMS, &o));
    if (!ld) return;
    CHECK(drdc_loader_batches_per_epoch(ld) == 2);
    int n = run_epoch(ld, 5, order, 64, sizes);
    CHECK(n == 8 && sizes[0] == 4 && sizes[1] == 4);
    int count[N_ITEMS] = {0};
    for (int i = 0; i < n; i++) count[order[i]]++;
    for (int k = 0; k < N_ITEMS; k++) CHECK(count[k] <= 1);
    drdc_loader_free(ld);

    /* fewer samples than one batch with drop_last: an empty epoch, no hang */
    o = opts(16, 2, 0, 1, 0);
    CHECK_OK(drdc_loader_create(&ld, g_samples, N_ITEMS, &o));
    if (!ld) return;
    CHECK(run_epoch(ld, 0, order, 64, NULL) == 0);
    drdc_loader_free(ld);
}

static int same(const int *a, const int *b, int n) { return memcmp(a, b, (size_t)n * sizeof *a) == 0; }

/* Shards: each global batch split in shard order; together the shards' batches are the one-process
 * batches (same order, same positions), a partial last batch leaves a shard short or empty, and
 * every shard hands out the global number of batches. */
static void test_shards_split_each_batch(void) {
    for (int drop = 0; drop < 2; drop++) {
        for (int W = 2; W <= 4; W += 2) {
            const int B = 4;   /* 10 samples: batches 4, 4, 2 (drop_last: 4, 4) */
            drdc_loader *one = NULL, *sh[4] = {NULL};
            drdc_loader_options o = opts(B, 2, 1, drop, 0);
            CHECK_OK(drdc_loader_create(&one, g_samples, N_ITEMS, &o));
            for (int s = 0; s < W; s++) {
                o.shard = s;
                o.shards = W;
                o.workers = 1 + s % 2;
                CHECK_OK(drdc_loader_create(&sh[s], g_samples, N_ITEMS, &o));
            }
            if (!one || !sh[W - 1]) return;
            int nb = drdc_loader_batches_per_epoch(one);
            for (int s = 0; s < W; s++) CHECK(drdc_loader_batches_per_epoch(sh[s]) == nb);
            CHECK_OK(drdc_loader_start_epoch(one, 3));
            for (int s = 0; s < W; s++) CHECK_OK(drdc_loader_start_epoch(sh[s], 3));
            for (int b = 0; b <= nb; b++) {
                const drdc_batch *ob = NULL;
                CHECK_OK(drdc_loader_next(one, &ob));
                int got[16], n = 0;
                for (int s = 0; s < W; s++) {
                    const drdc_batch *sb = NULL;
                    CHECK_OK(drdc_loader_next(sh[s], &sb));
                    CHECK(!sb == !ob);
                    if (!sb || !ob) continue;
                    CHECK(sb->first == s * (B / W) && sb->global_n == ob->n && sb->batch_index == b);
                    CHECK(sb->n == (ob->n - s * (B / W) < 0 ? 0 : ob->n - s * (B / W) > B / W ? B / W : ob->n - s * (B / W)));
                    for (int j = 0; j < sb->n; j++) {
                        got[n++] = sb->index[j];
                        size_t px = 3 * (size_t)SIZE * SIZE;
                        CHECK(memcmp(sb->images + j * px, ob->images + (size_t)(sb->first + j) * px, px * sizeof(float)) == 0);
                    }
                }
                if (ob) CHECK(n == ob->n && same(got, ob->index, n));
            }
            drdc_loader_free(one);
            for (int s = 0; s < W; s++) drdc_loader_free(sh[s]);
        }
    }
    drdc_loader *ld = NULL;
    drdc_loader_options o = opts(6, 2, 1, 0, 0);
    o.shards = 4;
    CHECK_ERR(drdc_loader_create(&ld, g_samples, N_ITEMS, &o), DRDC_ERR_INPUT, "a batch of 6 cannot be split evenly over 4");
}

static void test_shuffle_deterministic(void) {
    drdc_loader *a = NULL, *b = NULL;
    drdc_loader_options o = opts(3, 3, 1, 0, 0);
    CHECK_OK(drdc_loader_create(&a, g_samples, N_ITEMS, &o));
    o.workers = 1;   /* a different thread count must not change the order */
    CHECK_OK(drdc_loader_create(&b, g_samples, N_ITEMS, &o));
    if (!a || !b) { drdc_loader_free(a); drdc_loader_free(b); return; }
    int oa1[16], ob1[16], oa2[16], expect[N_ITEMS], ident[N_ITEMS];
    CHECK(run_epoch(a, 1, oa1, 16, NULL) == N_ITEMS);
    CHECK(run_epoch(b, 1, ob1, 16, NULL) == N_ITEMS);
    CHECK(same(oa1, ob1, N_ITEMS));
    drdc_loader_epoch_order(N_ITEMS, 42, 1, 1, expect);
    CHECK(same(oa1, expect, N_ITEMS));
    /* a resumed run starting at epoch 1 gets the same order again */
    CHECK(run_epoch(b, 1, ob1, 16, NULL) == N_ITEMS);
    CHECK(same(oa1, ob1, N_ITEMS));
    /* another epoch, another order; another seed, another order */
    CHECK(run_epoch(a, 2, oa2, 16, NULL) == N_ITEMS);
    CHECK(!same(oa1, oa2, N_ITEMS));
    drdc_loader_epoch_order(N_ITEMS, 43, 1, 1, expect);
    CHECK(!same(oa1, expect, N_ITEMS));
    for (int k = 0; k < N_ITEMS; k++) ident[k] = k;
    CHECK(!same(oa1, ident, N_ITEMS));
    drdc_loader_epoch_order(N_ITEMS, 42, 1, 0, expect);
    CHECK(same(expect, ident, N_ITEMS));
    drdc_loader_free(a);
    drdc_loader_free(b);
}

static void test_corrupt_image(void) {
    const char *dir = test_tmpdir("loader_corrupt");
    char bad[1024];
    snprintf(bad, sizeof bad, "%s/broken.png", dir);
    const char junk[] = "\x89PNG\r\n\x1a\n this is not really a PNG file at all";
    CHECK(test_write_file(bad, junk, sizeof junk - 1) == 0);
    drdc_sample items[N_ITEMS];
    memcpy(items, g_samples, sizeof items);
    items[7].image_path = bad;
    items[7].mask_path = NULL;
    int before = thread_count();
    for (int workers = 1; workers <= 4; workers += 3) {
        drdc_loader *ld = NULL;
        drdc_loader_options o = opts(2, workers, 0, 0, 1);
        CHECK_OK(drdc_loader_create(&ld, items, N_ITEMS, &o));
        if (!ld) return;
        for (int rep = 0; rep < 2; rep++) {   /* the error repeats in a new epoch */
            CHECK_OK(drdc_loader_start_epoch(ld, 0));
            const drdc_batch *b;
            int good_batches = 0;
            drdc_status st;
            while ((st = drdc_loader_next(ld, &b)) == DRDC_OK && b) good_batches++;
            CHECK(good_batches == 3);   /* samples 0-5 come first, sample 7 is in batch 3 */
            CHECK(st == DRDC_ERR_FORMAT || st == DRDC_ERR_IO);
            CHECK(tl_contains(drdc_last_error(), "broken.png"));
            CHECK(b == NULL);
            /* sticky until the next epoch */
            CHECK_ERR(drdc_loader_next(ld, &b), st, "broken.png");
            if (before > 0) CHECK(thread_count() == before);   /* workers joined */
        }
        drdc_loader_free(ld);
    }
    /* a missing file, first in the list, with more workers than samples left */
    drdc_loader *ld = NULL;
    items[0].image_path = "/nonexistent/drdc/nothing.png";
    drdc_loader_options o = opts(4, 4, 0, 0, 0);
    CHECK_OK(drdc_loader_create(&ld, items, N_ITEMS, &o));
    if (ld) {
        CHECK_OK(drdc_loader_start_epoch(ld, 0));
        const drdc_batch *b;
        CHECK_ERR(drdc_loader_next(ld, &b), DRDC_ERR_INPUT, "nothing.png");
        drdc_loader_free(ld);
    }
    if (before > 0) CHECK(thread_count() == before);
}

/* keep_going: unreadable samples come in their place with their reason and zero pixels, the
 * others as without it; keep_original: each decoded image at its own size. */
static void test_keep_going_and_original(void) {
    const char *dir = test_tmpdir("loader_keep_going");
    char bad[1024];
    snprintf(bad, sizeof bad, "%s/broken.png", dir);
    const char junk[] = "\x89PNG\r\n\x1a\n not a PNG";
    CHECK(test_write_file(bad, junk, sizeof junk - 1) == 0);
    drdc_sample items[N_ITEMS];
    memcpy(items, g_samples, sizeof items);
    items[2].image_path = bad;
    items[5].image_path = "/nonexistent/drdc/nothing.png";
    for (int workers = 1; workers <= 3; workers += 2) {
        drdc_loader *ld = NULL;
        drdc_loader_options o = opts(3, workers, 0, 0, 1);
        o.keep_going = 1;
        o.keep_original = 1;
        CHECK_OK(drdc_loader_create(&ld, items, N_ITEMS, &o));
        if (!ld) return;
        CHECK_OK(drdc_loader_start_epoch(ld, 0));
        const drdc_batch *b;
        int seen = 0, failed = 0;
        drdc_status st;
        while ((st = drdc_loader_next(ld, &b)) == DRDC_OK && b) {
            for (int i = 0; i < b->n; i++, seen++) {
                const int k = b->index[i];
                CHECK(k == seen);
                const size_t plane = (size_t)SIZE * SIZE;
                const float *px = b->images + (size_t)i * 3 * plane;
                if (k == 2 || k == 5) {
                    failed++;
                    CHECK(b->status[i] != DRDC_OK && b->error[i] != NULL);
                    CHECK(b->error[i] && tl_contains(b->error[i], k == 2 ? "broken.png" : "nothing.png"));
                    int zero = 1;
                    for (size_t p = 0; p < 3 * plane; p++) zero &= px[p] == 0.0f;
                    CHECK(zero);
                    continue;
                }
                CHECK(b->status[i] == DRDC_OK && b->error[i] == NULL);
                drdc_image rgb, mask, raw = {0};
                reference(k, &rgb, &mask);
                float diff = 0;   /* CHW against the reference's HWC */
                for (size_t p = 0; p < plane && rgb.data; p++)
                    for (int c = 0; c < 3; c++) diff = fmaxf(diff, fabsf(px[c * plane + p] - rgb.data[p * 3 + c]));
                CHECK(diff == 0.0f);
                CHECK_OK(drdc_image_load_rgb(g_img[k], &raw));
                const drdc_image *orig = &b->original[i];
                CHECK(orig->w == raw.w && orig->h == raw.h && orig->c == 3 && b->orig_w[i] == raw.w);
                CHECK(orig->data && raw.data &&
                      !memcmp(orig->data, raw.data, sizeof(float) * (size_t)raw.w * raw.h * 3));
                drdc_image_free(&raw), drdc_image_free(&rgb), drdc_image_free(&mask);
            }
        }
        CHECK(st == DRDC_OK && seen == N_ITEMS && failed == 2);
        drdc_loader_free(ld);
    }
}

static void test_mask_size_mismatch(void) {
    drdc_sample s = g_samples[1];
    s.mask_path = g_mask[3];   /* a mask of another size */
    drdc_loader *ld = NULL;
    drdc_loader_options o = opts(1, 1, 0, 0, 1);
    CHECK_OK(drdc_loader_create(&ld, &s, 1, &o));
    if (!ld) return;
    CHECK_OK(drdc_loader_start_epoch(ld, 0));
    const drdc_batch *b;
    CHECK_ERR(drdc_loader_next(ld, &b), DRDC_ERR_INPUT, "img03_mask.png");
    CHECK(tl_contains(drdc_last_error(), "img01.png"));
    drdc_loader_free(ld);
}

static void test_clean_shutdown(void) {
    int before = thread_count();
    if (before < 0) printf("note: /proc/self/task unavailable; thread counts not checked\n");
    drdc_loader *ld = NULL;
    drdc_loader_options o = opts(1, 4, 1, 0, 1);
    o.prefetch = 1;
    CHECK_OK(drdc_loader_create(&ld, g_samples, N_ITEMS, &o));
    if (!ld) return;
    CHECK(before < 0 || thread_count() == before);   /* no thread before an epoch */
    /* abandon an epoch after one batch: restart, then free mid-epoch */
    CHECK_OK(drdc_loader_start_epoch(ld, 0));
    const drdc_batch *b;
    CHECK_OK(drdc_loader_next(ld, &b));
    CHECK(b != NULL && b->n == 1);
    CHECK_OK(drdc_loader_start_epoch(ld, 1));
    int order[16];
    CHECK(run_epoch(ld, 1, order, 16, NULL) == N_ITEMS);
    CHECK(before < 0 || thread_count() == before);   /* epoch over: joined */
    CHECK_OK(drdc_loader_start_epoch(ld, 2));
    CHECK_OK(drdc_loader_next(ld, &b));
    drdc_loader_free(ld);   /* workers are blocked on full buffers: must still stop */
    CHECK(before < 0 || thread_count() == before);
    drdc_loader_free(NULL);

    /* next without an epoch is an error, not a hang */
    CHECK_OK(drdc_loader_create(&ld, g_samples, N_ITEMS, &o));
    if (ld) {
        CHECK_ERR(drdc_loader_next(ld, &b), DRDC_ERR_STATE, "epoch");
        drdc_loader_free(ld);
    }
    /* bad options */
    o.image_size = 0;
    CHECK_ERR(drdc_loader_create(&ld, g_samples, N_ITEMS, &o), DRDC_ERR_INPUT, "image size");
    CHECK(ld == NULL);
}

static void test_sample_load_original_size(void) {
    drdc_sample_pixels px;
    int k = 5;
    CHECK_OK(drdc_sample_load(&g_samples[k], 0, 1, &px));
    int w = 12 + 7 * k, h = 10 + 5 * (k % 4);
    CHECK(px.w == w && px.h == h && px.orig_w == w && px.orig_h == h);
    drdc_image raw = {0}, m = {0};
    CHECK_OK(drdc_image_load_rgb(g_img[k], &raw));
    CHECK_OK(drdc_image_load_mask(g_mask[k], &m));
    size_t plane = (size_t)w * h;
    double d = 0, md = 0;
    for (int c = 0; px.image && raw.data && c < 3; c++)
        for (size_t p = 0; p < plane; p++) d += fabs(px.image[c * plane + p] - raw.data[p * 3 + c]);
    for (size_t p = 0; px.mask && m.data && p < plane; p++) md += fabs(px.mask[p] - m.data[p]);
    CHECK(px.image && px.mask && d == 0 && md == 0);
    drdc_image_free(&raw);
    drdc_image_free(&m);
    drdc_sample_pixels_free(&px);
    drdc_sample_pixels_free(&px);

    /* a good sample: zero mask; no mask asked: NULL */
    CHECK_OK(drdc_sample_load(&g_samples[0], 0, 1, &px));
    double s = 0;
    for (int i = 0; px.mask && i < px.w * px.h; i++) s += px.mask[i];
    CHECK(px.mask != NULL && s == 0);
    drdc_sample_pixels_free(&px);
    CHECK_OK(drdc_sample_load(&g_samples[0], SIZE, 0, &px));
    CHECK(px.w == SIZE && px.h == SIZE && px.mask == NULL && px.orig_w == 12);
    drdc_sample_pixels_free(&px);
}

int main(void) {
    make_items();
    RUN(test_batches_match_direct_loading);
    RUN(test_every_sample_once);
    RUN(test_shuffle_deterministic);
    RUN(test_shards_split_each_batch);
    RUN(test_corrupt_image);
    RUN(test_keep_going_and_original);
    RUN(test_mask_size_mismatch);
    RUN(test_clean_shutdown);
    RUN(test_sample_load_original_size);
    return test_summary();
}
