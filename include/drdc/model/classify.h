/* classify.h: a backbone's full ImageNet network on image files: the top-k classes of each, the
 * self-check that pretrained weights load and run correctly (`drdc backbone`). */
#ifndef DRDC_CLASSIFY_H
#define DRDC_CLASSIFY_H

#include <stdint.h>
#include "drdc/core/error.h"
#include "drdc/shim/shim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct drdc_topk {
    int n_images, k;         /* k classes per image */
    int n_classes;           /* of the network (1001 for the shared MobileNetV2: index 0 is "background") */
    int size;                /* images were resized to size x size */
    float *p;                /* [n_images, k] softmax probabilities, descending */
    int64_t *idx;            /* [n_images, k] class indices */
} drdc_topk;

/* Builds `arch` (size 0: its native size), loads `weights` (NULL: random, untrained weights), resizes
 * each image to size x size and returns the top-k classes of each. */
drdc_status drdc_classify_images(drdc_topk *out, const char *arch, const char *weights, const char *const *images,
                                 int n_images, int size, int k, dt_device dev);
void drdc_topk_free(drdc_topk *t);   /* safe on a zeroed struct */

#ifdef __cplusplus
}
#endif
#endif
