/* calibrate.c: the normal statistics of a trained model, from its validation images (never test
 * images): standardisation of both maps for eq. (17), the image-score thresholds and the heatmap
 * colour ranges (calibrate.h). */
#include "drdc/model/calibrate.h"
#include "drdc/core/progress.h"
#include "drdc/core/rng.h"
#include "drdc/data/loader.h"
#include "drdc/stages/fusion.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void drdc_colour_range(const drdc_norm_stats *ns, double threshold, double *lo, double *hi) {
    *lo = ns->mean;
    *hi = threshold > ns->mean ? ns->mean + 2.0 * (threshold - ns->mean) : ns->mean + 6.0 * ns->std;
}

/* Appends b->n maps [n,1,R,R] (host copy) to a growing host array. */
static drdc_status append_maps(float **dst, size_t *len, dt_tensor maps) {
    size_t n = (size_t)dt_numel(maps);
    float *grown = realloc(*dst, sizeof(float) * (*len + n));
    if (!grown) return drdc_fail(DRDC_ERR_NOMEM, "out of memory keeping validation maps");
    *dst = grown;
    drdc_status st = dt_copy_to_host(maps, *dst + *len, sizeof(float) * n);
    if (!st) *len += n;
    return st;
}

/* The q-quantile of the image scores (images == NULL) or of all map pixels (plane values per image)
 * of the images of category c (c < 0: every image). *out is NAN when no image belongs to c. */
static drdc_status quantile_of(double *out, const double *scores, const float *maps, size_t plane, const int *cat,
                               int n, int c, double q) {
    *out = NAN;
    size_t count = 0;
    for (int i = 0; i < n; i++) count += (c < 0 || cat[i] == c) ? (maps ? plane : 1) : 0;
    if (count == 0) return DRDC_OK;
    double *v = malloc(sizeof(double) * count);
    if (!v) return drdc_fail(DRDC_ERR_NOMEM, "out of memory for %zu calibration values", count);
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        if (c >= 0 && cat[i] != c) continue;
        if (!maps) {
            v[k++] = scores[i];
            continue;
        }
        for (size_t p = 0; p < plane; p++) v[k++] = maps[(size_t)i * plane + p];
    }
    drdc_status st = drdc_quantile(out, v, (int64_t)count, q);
    free(v);
    return st;
}

/* The image and pixel thresholds of one method (scores and maps of every validation image), for all
 * categories and for each category. */
static drdc_status method_thresholds(drdc_model_stats *s, int drdc, const double *scores, const float *maps,
                                     size_t plane, const int *cat, int n, const drdc_infer_config *ic) {
    drdc_status st = DRDC_OK;
    double *img = drdc ? &s->drdc_threshold : &s->base_threshold;
    double *pix = drdc ? &s->drdc_pixel_threshold : &s->base_pixel_threshold;
    TRY(quantile_of(img, scores, NULL, plane, cat, n, -1, ic->threshold_quantile));
    TRY(quantile_of(pix, scores, maps, plane, cat, n, -1, ic->pixel_quantile));
    for (int c = 0; c < s->n_categories; c++) {
        drdc_category_stats *cs = &s->categories[c];
        TRY(quantile_of(drdc ? &cs->drdc_threshold : &cs->base_threshold, scores, NULL, plane, cat, n, c,
                        ic->threshold_quantile));
        TRY(quantile_of(drdc ? &cs->drdc_pixel_threshold : &cs->base_pixel_threshold, scores, maps, plane, cat, n, c,
                        ic->pixel_quantile));
    }
done:
    return st;
}

drdc_status drdc_calibrate(drdc_model *m, const drdc_sample_list *val, const char *const *category_names,
                           int n_categories, int quiet) {
    if (val->n == 0)
        return drdc_fail(DRDC_ERR_INPUT, "no validation images to calibrate on (data.val_fraction is 0 or the "
                         "categories have fewer than 2 training images)");
    if (n_categories > DRDC_MAX_CATEGORIES)
        return drdc_fail(DRDC_ERR_INPUT, "%d categories: at most %d get thresholds of their own", n_categories,
                         DRDC_MAX_CATEGORIES);
    drdc_status prep = drdc_model_prepare(m);   /* the refiner's weights may be new (training) */
    if (prep) return prep;
    const drdc_infer_config *ic = &m->cfg.infer;
    int with_refiner = m->refiner_steps > 0, R = m->cfg.refiner.image_size;
    int size = drdc_model_input_size(m, with_refiner);
    int M = with_refiner ? R : m->cfg.data.image_size;   /* the maps' size */
    size_t plane = (size_t)M * M;
    drdc_loader *ld = NULL;
    drdc_model_stats s = {0};   /* built here, copied to m->stats at the end */
    double *base_scores = malloc(sizeof(double) * (size_t)val->n), *drdc_scores = malloc(sizeof(double) * (size_t)val->n);
    int *cat = malloc(sizeof(int) * (size_t)val->n);
    float *kept_base = NULL, *kept_diff = NULL, *kept_heat = NULL, *sc = NULL;
    size_t n_base = 0, n_diff = 0;
    drdc_stats_acc acc_base, acc_diff, acc_drdc;
    drdc_stats_reset(&acc_base);
    drdc_stats_reset(&acc_diff);
    drdc_stats_reset(&acc_drdc);
    drdc_norm_stats ns_base, ns_diff, ns_drdc;
    drdc_progress prog = {0};
    dt_tensor tmp[4] = {NULL};   /* one batch's temporaries */
    int k = 0;
    drdc_status st = DRDC_OK;
    if (!base_scores || !drdc_scores || !cat) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory");
        goto done;
    }
    s.n_categories = n_categories;
    for (int c = 0; c < n_categories; c++) snprintf(s.categories[c].name, sizeof s.categories[c].name, "%s",
                                                    category_names[c]);
    drdc_loader_options lo;
    drdc_loader_options_default(&lo);
    lo.image_size = size;
    lo.batch_size = ic->batch;
    lo.workers = m->cfg.data.workers;
    lo.shuffle = 0;
    sc = malloc(sizeof(float) * (size_t)lo.batch_size);
    if (!sc) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory");
        goto done;
    }
    TRY(drdc_loader_create(&ld, val->items, val->n, &lo));
    TRY(drdc_loader_start_epoch(ld, 0));
    drdc_progress_begin(&prog, "calibrate (validation images)", val->n, quiet);
    const drdc_batch *b;
    /* pass 1: base maps and scores, and the diffusion maps when there is a refiner */
    for (;;) {
        TRY(drdc_loader_next(ld, &b));
        if (!b) break;
        dt_free_all(tmp, 4);
        dt_tensor *images = &tmp[0], *map = &tmp[1], *score = &tmp[2], *hd = &tmp[3];
        TRY(drdc_model_upload(images, m, b->images, b->n, 3, size));
        if (with_refiner)
            TRY(drdc_model_drdc(NULL, NULL, map, score, hd, m, *images, 1, NULL));
        else
            TRY(drdc_model_base(map, score, m, *images));
        TRY(drdc_stats_add(&acc_base, *map));
        TRY(dt_copy_to_host(*score, sc, sizeof(float) * (size_t)b->n));
        TRY(append_maps(&kept_base, &n_base, *map));
        if (with_refiner) {
            TRY(drdc_stats_add(&acc_diff, *hd));
            TRY(append_maps(&kept_diff, &n_diff, *hd));
        }
        for (int i = 0; i < b->n; i++) {
            int c = val->items[b->index[i]].category;
            cat[k] = c >= 0 && c < n_categories ? c : -1;
            base_scores[k++] = sc[i];
        }
        drdc_progress_update(&prog, k, NULL);
    }
    drdc_progress_end(&prog);
    for (int c = 0; c < n_categories; c++)
        for (int i = 0; i < k; i++) s.categories[c].n_val_images += cat[i] == c;
    TRY(drdc_stats_get(&acc_base, &ns_base));
    TRY(method_thresholds(&s, 0, base_scores, kept_base, plane, cat, k, ic));
    s.base_mean = ns_base.mean;
    s.base_std = ns_base.std;
    drdc_colour_range(&ns_base, s.base_threshold, &s.score_lo, &s.score_hi);
    s.n_val_images = k;
    s.ready = 1;
    s.drdc_threshold = s.drdc_pixel_threshold = NAN;
    for (int c = 0; c < n_categories; c++) s.categories[c].drdc_threshold = s.categories[c].drdc_pixel_threshold = NAN;
    if (!with_refiner) goto publish;
    /* pass 2: the fused maps with the statistics of pass 1 */
    TRY(drdc_stats_get(&acc_diff, &ns_diff));
    s.fuse_base_mean = ns_base.mean;
    s.fuse_base_std = ns_base.std;
    s.diff_mean = ns_diff.mean;
    s.diff_std = ns_diff.std;
    drdc_fusion_opts fo;
    TRY(drdc_fusion_opts_from_config(&fo, ic));
    fo.base_stats = ns_base;
    fo.diff_stats = ns_diff;
    if (!(kept_heat = malloc(sizeof(float) * plane * (size_t)k))) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory keeping validation maps");
        goto done;
    }
    for (int i0 = 0; i0 < k; i0 += lo.batch_size) {
        int n = k - i0 < lo.batch_size ? k - i0 : lo.batch_size;
        size_t off = (size_t)i0 * plane;
        dt_free_all(tmp, 4);
        dt_tensor *hbd = &tmp[0], *hdd = &tmp[1], *heat = &tmp[2], *score = &tmp[3];
        TRY(drdc_model_upload(hbd, m, kept_base + off, n, 1, R));
        TRY(drdc_model_upload(hdd, m, kept_diff + off, n, 1, R));
        TRY(drdc_fusion_final(heat, score, *hdd, *hbd, &fo));
        TRY(drdc_stats_add(&acc_drdc, *heat));
        TRY(dt_copy_to_host(*heat, kept_heat + off, sizeof(float) * plane * (size_t)n));
        TRY(dt_copy_to_host(*score, sc, sizeof(float) * (size_t)n));
        for (int i = 0; i < n; i++) drdc_scores[i0 + i] = sc[i];
    }
    TRY(drdc_stats_get(&acc_drdc, &ns_drdc));
    s.drdc_mean = ns_drdc.mean;
    s.drdc_std = ns_drdc.std;
    TRY(method_thresholds(&s, 1, drdc_scores, kept_heat, plane, cat, k, ic));
    drdc_colour_range(&ns_drdc, s.drdc_threshold, &s.drdc_lo, &s.drdc_hi);
    s.drdc_ready = 1;
publish:
    m->stats = s;
done:
    drdc_progress_end(&prog);
    dt_free_all(tmp, 4);
    drdc_loader_free(ld);
    free(base_scores);
    free(drdc_scores);
    free(cat);
    free(kept_base);
    free(kept_diff);
    free(kept_heat);
    free(sc);
    return st;
}

drdc_status drdc_model_recalibrate(drdc_model *m, const char *data_root, int n_images, int *n_used) {
    drdc_data_config dc = m->cfg.data;
    if (data_root) {
        if (strlen(data_root) >= sizeof dc.root)
            return drdc_fail(DRDC_ERR_INPUT, "data root '%.64s...' is longer than %zu bytes", data_root, sizeof dc.root - 1);
        snprintf(dc.root, sizeof dc.root, "%s", data_root);
    }
    drdc_dataset ds;
    drdc_sample_list train = {0}, val = {0};
    drdc_status st = drdc_dataset_open_config(&ds, &dc);
    if (st) return st;
    TRY(drdc_dataset_split(&ds, dc.val_fraction, drdc_seed(m->cfg.train.seed, DRDC_SEED_SPLIT), &train, &val));
    if (n_images > 0 && n_images < val.n) {   /* evenly spaced, so every category counts */
        for (int i = 0; i < n_images; i++) val.items[i] = val.items[(int64_t)i * val.n / n_images];
        val.n = n_images;
    }
    const char *names[DRDC_MAX_CATEGORIES];
    int n_names = ds.n_categories < DRDC_MAX_CATEGORIES ? ds.n_categories : DRDC_MAX_CATEGORIES;
    for (int c = 0; c < n_names; c++) names[c] = ds.categories[c].name;
    TRY(drdc_calibrate(m, &val, names, n_names, 0));
    if (n_used) *n_used = val.n;
done:
    drdc_sample_list_free(&train);
    drdc_sample_list_free(&val);
    drdc_dataset_free(&ds);
    return st;
}
