/* image.h: images in host memory, loading (stb_image), resizing, PNG writing.
 *
 * An image is float32, interleaved HWC, values in [0,1]; `c` is 1 (gray/mask) or 3 (RGB).
 * Loading turns gray, gray+alpha, RGB, RGBA (8 or 16 bit PNG, JPEG, BMP, ...) into RGB
 * (alpha is dropped). Every failure names the file. Dimensions are checked from the header
 * before any pixel memory is allocated. */
#ifndef DRDC_IMAGE_H
#define DRDC_IMAGE_H

#include <stdint.h>
#include "drdc/core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DRDC_IMAGE_MAX_SIDE 32768              /* larger sides are refused */
#define DRDC_IMAGE_MAX_PIXELS (256LL << 20)    /* w*h above this is refused (256 Mpx) */

typedef struct drdc_image {
    int w, h, c;        /* width, height, channels (1 or 3) */
    float *data;        /* (h, w, c) row-major, values in [0,1]; owned, free with drdc_image_free */
} drdc_image;

/* Allocates a zeroed image. */
drdc_status drdc_image_alloc(drdc_image *img, int w, int h, int c);
void drdc_image_free(drdc_image *img);   /* safe on a zeroed struct; leaves it zeroed */

/* Reads width and height from the file header without decoding pixels. */
drdc_status drdc_image_probe(const char *path, int *w, int *h);

/* Loads any supported file as RGB (c = 3). */
drdc_status drdc_image_load_rgb(const char *path, drdc_image *out);

/* Loads a ground-truth mask as c = 1 with values exactly 0 or 1 (any non-zero pixel -> 1;
 * colour masks use any non-zero channel). */
drdc_status drdc_image_load_mask(const char *path, drdc_image *out);

/* Resizes to (w, h) like torch.nn.functional.interpolate(mode="bilinear",
 * align_corners=False, antialias=True): a triangle filter widened by the scale when shrinking
 * (PIL-style), plain bilinear when enlarging. */
drdc_status drdc_image_resize(const drdc_image *src, int w, int h, drdc_image *dst);

/* Writes an 8-bit PNG (c = 1 or 3), values clamped to [0,1] and rounded. Atomic: written to a
 * temporary file in the same folder, then renamed. */
drdc_status drdc_image_write_png(const char *path, const drdc_image *img);

#ifdef __cplusplus
}
#endif
#endif
