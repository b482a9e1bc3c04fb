/* classify.c: top-k ImageNet classes of image files with a backbone's full network (classify.h). */
#include "drdc/model/classify.h"
#include "drdc/formats/image.h"
#include "drdc/stages/backbone.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void drdc_topk_free(drdc_topk *t) {
    free(t->p);
    free(t->idx);
    memset(t, 0, sizeof *t);
}

/* Loads every image, resized to size x size, as one [N,3,size,size] tensor in [0,1] on dev. */
static drdc_status load_batch(dt_tensor *out, const char *const *paths, int n, int size, dt_device dev) {
    size_t plane = (size_t)size * (size_t)size;
    float *buf = malloc(sizeof(float) * 3 * plane * (size_t)n);
    if (!buf) return drdc_fail(DRDC_ERR_NOMEM, "out of memory for %d images", n);
    drdc_status st = DRDC_OK;
    drdc_image img = {0}, small = {0};
    dt_tensor host = NULL;
    for (int i = 0; i < n; i++) {
        drdc_image_free(&img);
        drdc_image_free(&small);
        TRY(drdc_image_load_rgb(paths[i], &img));
        TRY(drdc_image_resize(&img, size, size, &small));
        for (size_t p = 0; p < plane; p++)   /* HWC -> CHW */
            for (int c = 0; c < 3; c++) buf[((size_t)i * 3 + (size_t)c) * plane + p] = small.data[p * 3 + (size_t)c];
    }
    const int64_t shape[4] = {n, 3, size, size};
    TRY(dt_from_host(&host, buf, DT_F32, shape, 4, (dt_device){DT_CPU, 0}));
    TRY(dt_to_device(out, host, dev));
done:
    drdc_image_free(&img);
    drdc_image_free(&small);
    dt_free(host);
    free(buf);
    return st;
}

drdc_status drdc_classify_images(drdc_topk *out, const char *arch, const char *weights, const char *const *paths,
                                 int n_images, int size, int k, dt_device dev) {
    memset(out, 0, sizeof *out);
    drdc_backbone_config cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.arch, sizeof cfg.arch, "%s", arch);
    drdc_status st = DRDC_OK;
    if (!size && (st = drdc_backbone_native_size(arch, &size))) return drdc_error_context(DRDC_ERR_USAGE, "--arch");
    if (size < 32) return drdc_fail(DRDC_ERR_USAGE, "--size %d: at least 32 px", size);
    drdc_backbone bb;
    st = drdc_backbone_build(&bb, &cfg, size, dev, 0);
    if (st) return st;
    dt_tensor images = NULL, logits = NULL, probs = NULL, top_p = NULL, top_i = NULL, p_cpu = NULL, i_cpu = NULL;
    const dt_device cpu = {DT_CPU, 0};
    if (weights) TRY(drdc_backbone_load(&bb, weights));
    TRY(load_batch(&images, paths, n_images, size, dev));
    TRY(drdc_backbone_classify(&logits, &bb, images));                   /* [N,classes] */
    TRY(dt_softmax(&probs, logits, 1));
    out->n_images = n_images;
    out->n_classes = bb.n_classes;
    out->size = size;
    out->k = k < bb.n_classes ? k : bb.n_classes;
    TRY(dt_topk(&top_p, &top_i, probs, out->k, 1, 1));                   /* [N,k] */
    TRY(dt_to_device(&p_cpu, top_p, cpu));
    TRY(dt_to_device(&i_cpu, top_i, cpu));
    size_t n = (size_t)n_images * (size_t)out->k;
    out->p = malloc(sizeof *out->p * n);
    out->idx = malloc(sizeof *out->idx * n);
    if (!out->p || !out->idx) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory");
        goto done;
    }
    TRY(dt_copy_to_host(p_cpu, out->p, sizeof *out->p * n));
    TRY(dt_copy_to_host(i_cpu, out->idx, sizeof *out->idx * n));
done:
    if (st) drdc_topk_free(out);
    dt_free(images), dt_free(logits), dt_free(probs), dt_free(top_p), dt_free(top_i), dt_free(p_cpu), dt_free(i_cpu);
    drdc_backbone_free(&bb);
    return st;
}
