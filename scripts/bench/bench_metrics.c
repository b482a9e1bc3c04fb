/* bench_metrics.c: times the pixel metrics (AUROC, AP, F1-max, AUPRO) of one category.
 *
 * Usage: bench_metrics [N_IMAGES [SIZE [EXPECTED]]]   (defaults: 100 images of 1024 x 1024;
 * EXPECTED 1 reserves the pixel buffer up front, 0 lets it grow)
 * Each image gets a random map (uniform noise, raised on defects) and a mask with a few
 * elliptical blobs (every third image defect-free). Only the metric calls are timed (adding
 * each image, then finalize), not the generation of the inputs. Prints seconds per phase, the
 * accumulator's bytes per pixel and the process's peak RSS. Measures; asserts nothing. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "drdc/stages/metrics.h"

static uint64_t g_rng = 0x1234567ull;
static uint64_t rng_u64(void) { /* splitmix64 */
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float rng_unif(void) { return (float)(rng_u64() >> 40) * (1.0f / 16777216.0f); }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void make_image(float *map, uint8_t *mask, int size, int index) {
    size_t n = (size_t)size * size;
    for (size_t i = 0; i < n; i++) mask[i] = 0;
    int blobs = index % 3 == 0 ? 0 : 1 + (int)(rng_u64() % 4);
    for (int b = 0; b < blobs; b++) {
        int cy = (int)(rng_u64() % (uint64_t)size), cx = (int)(rng_u64() % (uint64_t)size);
        int ry = 4 + (int)(rng_u64() % (uint64_t)(size / 10)), rx = 4 + (int)(rng_u64() % (uint64_t)(size / 10));
        for (int y = cy - ry; y <= cy + ry; y++) {
            if (y < 0 || y >= size) continue;
            for (int x = cx - rx; x <= cx + rx; x++) {
                if (x < 0 || x >= size) continue;
                double dy = (double)(y - cy) / ry, dx = (double)(x - cx) / rx;
                if (dy * dy + dx * dx <= 1.0) mask[(size_t)y * size + x] = 1;
            }
        }
    }
    for (size_t i = 0; i < n; i++) map[i] = rng_unif() + (mask[i] ? 0.5f : 0.0f);
}

int main(int argc, char **argv) {
    int n_images = argc > 1 ? atoi(argv[1]) : 100;
    int size = argc > 2 ? atoi(argv[2]) : 1024;
    int reserve = argc > 3 ? atoi(argv[3]) : 1;
    if (n_images <= 0 || size < 16) {
        fprintf(stderr, "usage: bench_metrics [N_IMAGES [SIZE>=16 [EXPECTED 0|1]]]\n");
        return 2;
    }
    uint64_t total = (uint64_t)n_images * size * size;
    float *map = malloc((size_t)size * size * sizeof *map);
    uint8_t *mask = malloc((size_t)size * size);
    if (!map || !mask) {
        fprintf(stderr, "bench_metrics: out of memory\n");
        return 1;
    }
    drdc_pixel_accum *acc = NULL;
    drdc_status st = drdc_pixel_accum_create(&acc, reserve ? total : 0);
    double t_add = 0.0;
    for (int i = 0; i < n_images && st == DRDC_OK; i++) {
        make_image(map, mask, size, i);
        double t0 = now_s();
        st = drdc_pixel_accum_add(acc, map, mask, size, size);
        t_add += now_s() - t0;
    }
    drdc_pixel_metrics m = {0};
    double t0 = now_s();
    if (st == DRDC_OK) st = drdc_pixel_accum_finalize(acc, DRDC_AUPRO_FPR_LIMIT, &m);
    double t_fin = now_s() - t0;
    if (st != DRDC_OK) {
        fprintf(stderr, "bench_metrics: %s\n", drdc_last_error());
        drdc_pixel_accum_free(acc);
        free(map);
        free(mask);
        return 1;
    }
    size_t bytes = drdc_pixel_accum_bytes(acc);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("category: %d images of %dx%d = %llu pixels, %llu anomalous, %llu regions\n", n_images,
           size, size, (unsigned long long)total, (unsigned long long)m.curve.n_positive,
           (unsigned long long)m.n_regions);
    printf("pixel AUROC %.6f  AP %.6f  F1-max %.6f  AUPRO@0.3 %.6f\n", m.curve.auroc, m.curve.ap,
           m.curve.f1_max, m.aupro);
    printf("time: add %.2f s (labelling, keys), finalize %.2f s (sort, sweep), total %.2f s\n",
           t_add, t_fin, t_add + t_fin);
    printf("memory: accumulator %.1f MB (%.2f bytes/pixel), peak RSS %.1f MB (incl. one input "
           "image)\n", bytes / 1048576.0, (double)bytes / (double)total, ru.ru_maxrss / 1024.0);
    drdc_pixel_accum_free(acc);
    free(map);
    free(mask);
    return 0;
}
