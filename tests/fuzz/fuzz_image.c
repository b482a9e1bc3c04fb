/* fuzz_image.c: libFuzzer target for the image loader (include/drdc/image.h): drdc's own
 * header checks (the PNG IHDR size check before stb_image, the truncated-BMP check) and the
 * stb_image decoders behind them. The loader takes a path only (src/formats/image.c exposes no memory
 * entry point), so the input is written to a memfd (fuzz_memfile.h) and read through
 * drdc_image_probe, drdc_image_load_rgb and drdc_image_load_mask. On success the result's
 * size must agree with the probe and every pixel is read. */
#include "fuzz_memfile.h" /* first: it defines _GNU_SOURCE for memfd_create */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "drdc/formats/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static fuzz_memfile g_file;

static void touch(const drdc_image *img, int pw, int ph, int probed) {
    if (img->c != 1 && img->c != 3) __builtin_trap();
    if (probed && (img->w != pw || img->h != ph)) __builtin_trap();
    if (img->w > DRDC_IMAGE_MAX_SIDE || img->h > DRDC_IMAGE_MAX_SIDE) __builtin_trap();
    volatile float s = 0;
    size_t n = (size_t)img->w * img->h * img->c;
    for (size_t k = 0; k < n; k++) s += img->data[k];
    (void)s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_memfile_put(&g_file, data, size);
    if (!path) return 0;
    int pw = 0, ph = 0;
    int probed = drdc_image_probe(path, &pw, &ph) == DRDC_OK;
    drdc_image img;
    if (drdc_image_load_rgb(path, &img) == DRDC_OK) {
        touch(&img, pw, ph, probed);
        drdc_image_free(&img);
    }
    if (drdc_image_load_mask(path, &img) == DRDC_OK) {
        touch(&img, pw, ph, probed);
        drdc_image_free(&img);
    }
    return 0;
}
