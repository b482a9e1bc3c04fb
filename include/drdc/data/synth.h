/* synth.h: the built-in synthetic inspection dataset (demo and test data), in MVTec AD layout.
 *
 * Categories are two textures and two simple objects, in this order: "weave" (woven cloth),
 * "grain" (wood grain), "disc" (a machined washer on a dark background), "plate" (a rounded
 * plate with holes on a light background). Normal images vary: position, rotation, texture
 * phase and period, lighting gradient and gain, sensor noise. Defects (four per category) are
 * "scratch", "crack", "hole", "stain", "missing_piece" and "color". A defect image is its
 * normal counterpart with the defect painted in; then every pixel whose 8-bit value changed by
 * less than DRDC_SYNTH_MASK_THRESHOLD (any channel) is put back, so the ground-truth mask is
 * exactly the set of pixels that differ from the normal counterpart.
 *
 * Layout written by drdc_synth_write (NNN is zero-padded, at least 3 digits, from 000):
 *   <out>/<category>/train/good/NNN.png
 *   <out>/<category>/test/good/NNN.png
 *   <out>/<category>/test/<defect>/NNN.png
 *   <out>/<category>/ground_truth/<defect>/NNN_mask.png   (8-bit gray, 0 or 255)
 * Everything is a pure function of the options (own splitmix64 RNG): the same options give
 * byte-identical files. Existing files of the same names are replaced (atomically); other
 * files already in the folder are left alone. */
#ifndef DRDC_SYNTH_H
#define DRDC_SYNTH_H

#include <stdint.h>
#include "drdc/core/error.h"
#include "drdc/formats/image.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DRDC_SYNTH_MAX_CATEGORIES 4
#define DRDC_SYNTH_MASK_THRESHOLD 8   /* 8-bit levels: smaller changes are reverted */

typedef struct drdc_synth_options {
    const char *out_dir;  /* folder to write into; created (with parents) if missing */
    int n_categories;     /* the first N categories, 1..DRDC_SYNTH_MAX_CATEGORIES */
    int n_train;          /* train/good images per category, >= 1 */
    int n_test;           /* test images per category, >= 0: n_test/2 defective, spread over the
                             category's defect types in turn, the rest test/good */
    int size;             /* width = height in pixels, 32..4096 */
    uint64_t seed;        /* same seed, same bytes */
} drdc_synth_options;

/* The demo defaults: out_dir NULL, 4 categories, 40 train, 20 test, 128 px, seed 0. */
void drdc_synth_default_options(drdc_synth_options *o);

/* Category names in order; NULL when i is out of range. */
int drdc_synth_category_count(void);
const char *drdc_synth_category_name(int i);

/* The defect folder names of category i (j = 0..count-1); NULL when out of range. */
int drdc_synth_defect_count(int category);
const char *drdc_synth_defect_name(int category, int j);

/* Renders one image in memory: category index, defect index within that category (-1 for a
 * normal image), side in pixels (32..4096), seed. img gets c = 3 with values k/255 (exactly
 * what the PNG holds); mask (may be NULL) gets c = 1 with values 0 or 1, all zero for a normal
 * image. The same (category, size, seed) with defect -1 gives the normal counterpart of every
 * defect image: the two differ exactly on the mask. Outputs are allocated here. */
drdc_status drdc_synth_render(int category, int defect, int size, uint64_t seed, drdc_image *img,
                              drdc_image *mask);

/* Writes the whole dataset (layout above). Errors name the file or option. */
drdc_status drdc_synth_write(const drdc_synth_options *o);

#ifdef __cplusplus
}
#endif
#endif
