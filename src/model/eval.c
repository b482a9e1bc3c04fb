/* eval.c: walks a dataset's test images, gathers each method's maps and scores, and computes
 * the exact per-category metrics, tables, JSON and CSV (see eval.h). */
#include "drdc/model/eval.h"
#include "drdc/model/report.h"
#include "drdc/data/loader.h"
#include "drdc/model/calibrate.h"
#include "drdc/stages/fusion.h"
#include "drdc/core/fsutil.h"
#include "drdc/stages/draw.h"
#include "drdc/stages/heatmap.h"
#include "drdc/stages/metrics.h"
#include "drdc/formats/npy.h"
#include "drdc/core/progress.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *METRIC_KEYS[DRDC_N_METRICS] = {"image_auroc", "pixel_auroc", "aupro", "image_ap",
                                                  "pixel_ap", "image_f1max", "pixel_f1max"};
static const char *METRIC_TITLES[DRDC_N_METRICS] = {"Image AUROC", "Pixel AUROC", "AUPRO (FPR<=0.3)",
                                                    "Image AP", "Pixel AP", "Image F1-max", "Pixel F1-max"};

const char *drdc_metric_key(int m) { return (m >= 0 && m < DRDC_N_METRICS) ? METRIC_KEYS[m] : "?"; }
const char *drdc_metric_title(int m) { return (m >= 0 && m < DRDC_N_METRICS) ? METRIC_TITLES[m] : "?"; }

static double *value_at(drdc_eval_result *r, int method, int category, int metric) {
    return &r->values[((size_t)method * (r->n_categories + 1) + category) * DRDC_N_METRICS + metric];
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

void drdc_eval_result_free(drdc_eval_result *r) {
    for (int i = 0; r->methods && i < r->n_methods; i++) free(r->methods[i]);
    for (int i = 0; r->categories && i < r->n_categories; i++) free(r->categories[i]);
    for (int i = 0; r->notes && i < r->n_categories; i++) free(r->notes[i]);
    free(r->methods);
    free(r->categories);
    free(r->notes);
    free(r->values);
    free(r->model_json);
    free(r->rates);
    for (int i = 0; r->images && i < r->n_images; i++) {
        free(r->images[i].path);
        free(r->images[i].defect);
        free(r->images[i].scores);
        free(r->images[i].verdicts);
    }
    free(r->images);
    for (int i = 0; i < r->n_methods * r->n_categories; i++) {
        if (r->image_curves) drdc_curves_free(&r->image_curves[i]);
        if (r->pixel_curves) drdc_curves_free(&r->pixel_curves[i]);
    }
    free(r->image_curves);
    free(r->pixel_curves);
    memset(r, 0, sizeof *r);
}

static drdc_status result_alloc(drdc_eval_result *r, const drdc_dataset *ds, int n_methods,
                                const char *const *methods, const drdc_eval_options *o) {
    memset(r, 0, sizeof *r);
    r->n_methods = n_methods;
    r->n_categories = ds->n_categories;
    r->methods = calloc((size_t)n_methods, sizeof *r->methods);
    r->categories = calloc((size_t)ds->n_categories, sizeof *r->categories);
    r->notes = calloc((size_t)ds->n_categories, sizeof *r->notes);
    size_t nv = (size_t)n_methods * (ds->n_categories + 1) * DRDC_N_METRICS;
    r->values = malloc(nv * sizeof *r->values);
    int total = 0;
    for (int c = 0; c < ds->n_categories; c++) total += ds->categories[c].n_test;
    r->images = calloc((size_t)(total ? total : 1), sizeof *r->images);
    size_t nr = (size_t)n_methods * (ds->n_categories + 1), nc = (size_t)n_methods * ds->n_categories;
    if (o->thresholds) r->rates = calloc(nr, sizeof *r->rates);
    if (o->curves) {
        r->image_curves = calloc(nc ? nc : 1, sizeof *r->image_curves);
        r->pixel_curves = calloc(nc ? nc : 1, sizeof *r->pixel_curves);
    }
    int ok = r->methods && r->categories && r->notes && r->values && r->images && (!o->thresholds || r->rates) &&
             (!o->curves || (r->image_curves && r->pixel_curves));
    for (int i = 0; ok && i < n_methods; i++) ok = (r->methods[i] = dup_str(methods[i])) != NULL;
    for (int i = 0; ok && i < ds->n_categories; i++)
        ok = (r->categories[i] = dup_str(ds->categories[i].name)) != NULL;
    if (!ok) {
        drdc_eval_result_free(r);
        return drdc_fail(DRDC_ERR_NOMEM, "out of memory for the evaluation result");
    }
    for (size_t i = 0; i < nv; i++) r->values[i] = NAN;
    return DRDC_OK;
}

/* Appends "what: why" to a category's note. */
static void add_note(drdc_eval_result *r, int c, const char *what, const char *why) {
    size_t old = r->notes[c] ? strlen(r->notes[c]) : 0;
    size_t n = old + strlen(what) + strlen(why) + 8;
    char *s = realloc(r->notes[c], n);
    if (!s) return;
    snprintf(s + old, n - old, "%s%s: %s", old ? "; " : "", what, why);
    r->notes[c] = s;
}

/* The map resized to (w, h) if it is not that size already (bilinear); *tmp owns a new image. */
static drdc_status map_at_size(const drdc_image *map, int w, int h, drdc_image *tmp, const drdc_image **out) {
    if (map->w == w && map->h == h) {
        *out = map;
        return DRDC_OK;
    }
    drdc_status st = drdc_image_resize(map, w, h, tmp);
    *out = tmp;
    return st;
}

/* The ground truth of a sample at (w, h): its mask file resized (bilinear, then > 0.5), or
 * zeros for a good image. Returns uint8 0/1 in *mask (malloc'd). */
static drdc_status load_truth(const drdc_sample *s, int eval_size, uint8_t **mask, int *w, int *h) {
    *mask = NULL;
    drdc_image m = {0}, r = {0};
    drdc_status st;
    if (s->mask_path) {
        int iw, ih;
        st = drdc_image_load_mask(s->mask_path, &m);
        if (!st) st = drdc_image_probe(s->image_path, &iw, &ih);
        if (!st && (iw != m.w || ih != m.h))
            st = drdc_fail(DRDC_ERR_INPUT, "mask %s is %dx%d but its image %s is %dx%d", s->mask_path, m.w, m.h,
                           s->image_path, iw, ih);
        if (st) {
            drdc_image_free(&m);
            return st;
        }
    } else {
        int iw, ih;
        st = drdc_image_probe(s->image_path, &iw, &ih);
        if (st) return st;
        st = drdc_image_alloc(&m, iw, ih, 1);
        if (st) return st;
    }
    const drdc_image *use = &m;
    if (eval_size > 0) {
        st = drdc_image_resize(&m, eval_size, eval_size, &r);
        if (st) goto done;
        use = &r;
    }
    *w = use->w;
    *h = use->h;
    *mask = malloc((size_t)use->w * use->h);
    if (!*mask) {
        st = drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory", s->image_path);
        goto done;
    }
    for (size_t i = 0; i < (size_t)use->w * use->h; i++) (*mask)[i] = use->data[i] > 0.5f;
done:
    drdc_image_free(&m);
    drdc_image_free(&r);
    return st;
}

/* DIR[/method]/<category>/<defect>/<stem>.npy */
void drdc_eval_map_path(char *out, size_t cap, const char *dir, const char *method, const char *category,
                        const drdc_sample *s) {
    char stem[512];
    drdc_path_stem(s->image_path, stem, sizeof stem);
    if (method)
        snprintf(out, cap, "%s/%s/%s/%s/%s.npy", dir, method, category, s->defect, stem);
    else
        snprintf(out, cap, "%s/%s/%s/%s.npy", dir, category, s->defect, stem);
}

/* Writes a map as .npy at the image's original size (the layout and size --maps reads). */
static drdc_status dump_map(const drdc_eval_options *o, int several, const char *method, const char *category,
                            const drdc_sample *s, const drdc_image *model_map) {
    char path[4096], dir[4096];
    drdc_eval_map_path(path, sizeof path, o->dump_maps, several ? method : NULL, category, s);
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = 0;
    int iw = 0, ih = 0;
    drdc_image tmp = {0};
    const drdc_image *map = NULL;
    drdc_status st = drdc_mkdirs(dir);
    if (!st) st = drdc_image_probe(s->image_path, &iw, &ih);
    if (!st) st = map_at_size(model_map, iw, ih, &tmp, &map);
    if (!st) st = drdc_npy_write(path, DRDC_NPY_F32, 2, (const int64_t[2]){map->h, map->w}, map->data);
    drdc_image_free(&tmp);
    return st;
}

/* One labelled panel: image with the truth outlined | each method's map (its colour bar with the pixel
 * threshold, the predicted regions outlined) ; the caption gives the label and each method's score
 * and verdict. The maps are at the model's size; the truth at (mw, mh). */
static drdc_status write_vis(const drdc_eval_options *o, const char *category, const drdc_sample *s,
                             const uint8_t *mask, int mw, int mh, const drdc_image *maps, int n_methods,
                             const char *const *methods, const float *scores, const double *img_thr,
                             const double *pix_thr) {
    drdc_image img = {0};
    drdc_panel_column *cols = calloc((size_t)n_methods + 1, sizeof *cols);
    uint8_t **pred = calloc((size_t)n_methods, sizeof *pred);
    char **titles = calloc((size_t)n_methods, sizeof *titles);
    drdc_image canvas = {0};
    drdc_status st = DRDC_OK;
    if (!cols || !pred || !titles) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory for a panel");
        goto done;
    }
    TRY(drdc_image_load_rgb(s->image_path, &img));
    cols[0] = (drdc_panel_column){"image + truth", &img, 0, 0, NAN, s->label ? mask : NULL, NULL, mw, mh};
    char caption[1024];
    size_t cl = (size_t)snprintf(caption, sizeof caption, "%s/%s:", category, s->defect);
    for (int m = 0; m < n_methods; m++) {
        const drdc_image *mp = &maps[m];
        float lo = INFINITY, hi = -INFINITY;
        if (o->vis_lo && o->vis_hi) {
            lo = (float)o->vis_lo[m];
            hi = (float)o->vis_hi[m];
        } else {
            for (size_t p = 0; p < (size_t)mp->w * mp->h; p++) lo = fminf(lo, mp->data[p]), hi = fmaxf(hi, mp->data[p]);
        }
        if (!(hi > lo)) hi = lo + 1.0f;
        if (isfinite(pix_thr[m]) && (pred[m] = malloc((size_t)mp->w * mp->h)))
            for (size_t p = 0; p < (size_t)mp->w * mp->h; p++) pred[m][p] = mp->data[p] >= pix_thr[m];
        titles[m] = malloc(64);
        if (titles[m]) snprintf(titles[m], 64, "%s map", methods[m]);
        cols[m + 1] = (drdc_panel_column){titles[m], mp, lo, hi, (float)pix_thr[m], NULL, pred[m], mp->w, mp->h};
        drdc_verdict v = drdc_verdict_of(scores[m], img_thr[m]);
        if (cl < sizeof caption)
            cl += (size_t)snprintf(caption + cl, sizeof caption - cl, " %s %.3g%s%s", methods[m], scores[m],
                                   isfinite(img_thr[m]) ? " " : "",
                                   isfinite(img_thr[m]) ? (v == DRDC_VERDICT_ANOMALOUS ? "ANOMALOUS" : v ==
                                                           DRDC_VERDICT_NORMAL ? "normal" : "ERROR") : "");
    }
    TRY(drdc_panel_render(&canvas, cols, n_methods + 1, 256, caption));
    char dir[4096], path[8192], stem[512];
    snprintf(dir, sizeof dir, "%s/%s/%s", o->vis, category, s->defect);
    drdc_path_stem(s->image_path, stem, sizeof stem);
    snprintf(path, sizeof path, "%s/%s.png", dir, stem);
    TRY(drdc_mkdirs(dir));
    TRY(drdc_image_write_png(path, &canvas));
done:
    for (int m = 0; pred && m < n_methods; m++) free(pred[m]);
    for (int m = 0; titles && m < n_methods; m++) free(titles[m]);
    free(pred);
    free(titles);
    free(cols);
    drdc_image_free(&img);
    drdc_image_free(&canvas);
    return st;
}

/* One image's record in the result (scores and, with thresholds, verdicts). */
static drdc_status record_image(drdc_eval_result *r, int c, const drdc_sample *s, const float *sc,
                                const double *img_thr) {
    drdc_eval_image *e = &r->images[r->n_images];
    memset(e, 0, sizeof *e);
    e->category = c;
    e->label = s->label != 0;
    e->path = dup_str(s->image_path);
    e->defect = dup_str(s->defect);
    e->scores = malloc(sizeof(float) * (size_t)r->n_methods);
    e->verdicts = malloc((size_t)r->n_methods);
    r->n_images++;   /* counted now, so a failure below is freed with the result */
    if (!e->path || !e->defect || !e->scores || !e->verdicts) return drdc_fail(DRDC_ERR_NOMEM, "out of memory");
    for (int m = 0; m < r->n_methods; m++) {
        e->scores[m] = sc[m];
        e->verdicts[m] = (signed char)(isnan(img_thr[m]) ? -1 : (int)drdc_verdict_of(sc[m], img_thr[m]));
        if (!r->rates || e->verdicts[m] < 0) continue;
        drdc_eval_rates *cr = &r->rates[(size_t)m * (r->n_categories + 1) + c];
        drdc_eval_rates *all = &r->rates[(size_t)m * (r->n_categories + 1) + r->n_categories];
        for (drdc_eval_rates *q = cr;; q = all) {
            q->n_errors += e->verdicts[m] == DRDC_VERDICT_ERROR;
            if (e->label) {
                q->n_defective++;
                q->n_escapes += e->verdicts[m] == DRDC_VERDICT_NORMAL;
            } else {
                q->n_good++;
                q->n_false_rejects += e->verdicts[m] != DRDC_VERDICT_NORMAL;   /* an error stops a good part too */
            }
            if (q == all) break;
        }
    }
    return DRDC_OK;
}

/* Evaluates one category into r. */
static drdc_status eval_category(const drdc_dataset *ds, int c, drdc_map_source source, void *ctx,
                                 const drdc_eval_options *o, drdc_eval_result *r, int *done,
                                 drdc_progress *prog) {
    const drdc_category *cat = &ds->categories[c];
    int nm = r->n_methods, n = cat->n_test;
    if (n == 0) {
        add_note(r, c, "all metrics", "no test images");
        return DRDC_OK;
    }
    drdc_status st = DRDC_OK;
    float *scores = malloc(sizeof(float) * (size_t)n * nm);
    uint8_t *labels = malloc((size_t)n), *mask = NULL;
    drdc_pixel_accum **acc = calloc((size_t)nm, sizeof *acc);
    drdc_image *maps = calloc((size_t)nm, sizeof *maps), tmp = {0};
    double img_thr[64], pix_thr[64];
    if (!scores || !labels || !acc || !maps) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int m = 0; m < nm; m++) {
        img_thr[m] = pix_thr[m] = NAN;
        if (o->thresholds) o->thresholds(o->thresholds_ctx, m, cat->name, &img_thr[m], &pix_thr[m]);
        if (r->rates) r->rates[(size_t)m * (r->n_categories + 1) + c].threshold = img_thr[m];
        TRY(drdc_pixel_accum_create(&acc[m], 0));
    }
    for (int i = 0; i < n; i++) {
        const drdc_sample *s = &cat->test[i];
        int mw = 0, mh = 0;
        float sc[64];
        for (int m = 0; m < nm; m++) drdc_image_free(&maps[m]);
        free(mask);
        mask = NULL;
        TRY(source(ctx, ds, s, maps, sc));
        TRY(load_truth(s, o->eval_size, &mask, &mw, &mh));
        for (int m = 0; m < nm; m++) {
            const drdc_image *use;
            scores[(size_t)m * n + i] = sc[m];
            drdc_image_free(&tmp);
            if (o->dump_maps) st = dump_map(o, nm > 1, r->methods[m], cat->name, s, &maps[m]);
            if (!st) st = map_at_size(&maps[m], mw, mh, &tmp, &use);
            if (!st) st = drdc_pixel_accum_add(acc[m], use->data, s->label ? mask : NULL, mh, mw);
            if (st) {
                drdc_error_context(st, "%s", s->image_path);
                goto done;
            }
        }
        TRY(record_image(r, c, s, sc, img_thr));
        if (o->vis)
            TRY(write_vis(o, cat->name, s, mask, mw, mh, maps, nm, (const char *const *)r->methods, sc, img_thr,
                          pix_thr));
        labels[i] = (uint8_t)(s->label != 0);
        ++*done;
    }
    /* once per category: a source may compute a category's maps at its first image (the model does,
     * with a progress line of its own), and a count that moved image by image then ran far behind the
     * work done, its ETA far too long */
    drdc_progress_update(prog, *done, cat->name);
    for (int m = 0; m < nm; m++) {
        drdc_curve_metrics im;
        drdc_pixel_metrics px;
        drdc_curves *ic = r->image_curves ? &r->image_curves[(size_t)m * r->n_categories + c] : NULL;
        drdc_curves *pc = r->pixel_curves ? &r->pixel_curves[(size_t)m * r->n_categories + c] : NULL;
        drdc_status s1 = ic ? drdc_image_metrics_curves(scores + (size_t)m * n, labels, (size_t)n, &im, ic,
                                                        DRDC_CURVE_POINTS)
                            : drdc_image_metrics(scores + (size_t)m * n, labels, (size_t)n, &im);
        if (s1 == DRDC_OK) {
            *value_at(r, m, c, DRDC_M_IMAGE_AUROC) = im.auroc;
            *value_at(r, m, c, DRDC_M_IMAGE_AP) = im.ap;
            *value_at(r, m, c, DRDC_M_IMAGE_F1MAX) = im.f1_max;
        } else if (s1 == DRDC_ERR_INPUT) {
            if (m == 0) add_note(r, c, "image metrics", drdc_last_error());
        } else {
            st = s1;
            goto done;
        }
        drdc_status s2 = pc ? drdc_pixel_accum_finalize_curves(acc[m], DRDC_AUPRO_FPR_LIMIT, &px, pc, DRDC_CURVE_POINTS)
                            : drdc_pixel_accum_finalize(acc[m], DRDC_AUPRO_FPR_LIMIT, &px);
        if (s2 == DRDC_OK) {
            *value_at(r, m, c, DRDC_M_PIXEL_AUROC) = px.curve.auroc;
            *value_at(r, m, c, DRDC_M_PIXEL_AP) = px.curve.ap;
            *value_at(r, m, c, DRDC_M_PIXEL_F1MAX) = px.curve.f1_max;
            *value_at(r, m, c, DRDC_M_AUPRO) = px.aupro;
        } else if (s2 == DRDC_ERR_INPUT) {
            if (m == 0) add_note(r, c, "pixel metrics", drdc_last_error());
        } else {
            st = s2;
            goto done;
        }
    }
done:
    for (int m = 0; maps && m < nm; m++) drdc_image_free(&maps[m]);
    for (int m = 0; acc && m < nm; m++) drdc_pixel_accum_free(acc[m]);
    drdc_image_free(&tmp);
    free(mask);
    free(acc);
    free(maps);
    free(scores);
    free(labels);
    return st;
}

drdc_status drdc_evaluate(const drdc_dataset *ds, int n_methods, const char *const *methods,
                          drdc_map_source source, void *ctx, const drdc_eval_options *o,
                          drdc_eval_result *out) {
    if (n_methods < 1 || n_methods > 64) return drdc_fail(DRDC_ERR_INPUT, "between 1 and 64 methods, not %d", n_methods);
    drdc_status st = result_alloc(out, ds, n_methods, methods, o);
    if (st) return st;
    int total = 0, done = 0;
    for (int c = 0; c < ds->n_categories; c++) total += ds->categories[c].n_test;
    drdc_progress prog;
    drdc_progress_begin(&prog, "eval images", total, o->quiet);
    for (int c = 0; !st && c < ds->n_categories; c++)
        st = eval_category(ds, c, source, ctx, o, out, &done, &prog);
    drdc_progress_end(&prog);
    if (st) {
        drdc_eval_result_free(out);
        return st;
    }
    for (int m = 0; m < n_methods; m++)
        for (int k = 0; k < DRDC_N_METRICS; k++) {
            double sum = 0;
            int cnt = 0;
            for (int c = 0; c < out->n_categories; c++) {
                double v = *value_at(out, m, c, k);
                if (!isnan(v)) {
                    sum += v;
                    cnt++;
                }
            }
            *value_at(out, m, out->n_categories, k) = cnt ? sum / cnt : NAN;
        }
    return DRDC_OK;
}

void drdc_eval_print_tables(FILE *f, const drdc_eval_result *r) {
    int width = 12;
    for (int c = 0; c < r->n_categories; c++) {
        int l = (int)strlen(r->categories[c]);
        if (l > width) width = l;
    }
    for (int k = 0; k < DRDC_N_METRICS; k++) {
        fprintf(f, "\n%s (%%)\n%-10s", drdc_metric_title(k), "method");
        for (int c = 0; c <= r->n_categories; c++)
            fprintf(f, " %*s", width, c < r->n_categories ? r->categories[c] : "mean");
        fputc('\n', f);
        for (int m = 0; m < r->n_methods; m++) {
            fprintf(f, "%-10s", r->methods[m]);
            for (int c = 0; c <= r->n_categories; c++) {
                double v = drdc_eval_value(r, m, c, k);
                if (isnan(v))
                    fprintf(f, " %*s", width, "n/a");
                else
                    fprintf(f, " %*.1f", width, 100.0 * v);
            }
            fputc('\n', f);
        }
    }
    for (int c = 0; c < r->n_categories; c++)
        if (r->notes[c]) fprintf(f, "note: %s: %s\n", r->categories[c], r->notes[c]);
    if (!r->rates) return;
    fprintf(f, "\nAt the calibrated image threshold: false rejects (good images judged anomalous) / escapes "
               "(defective images judged normal)\n%-10s", "method");
    for (int c = 0; c <= r->n_categories; c++) fprintf(f, " %*s", width + 8, c < r->n_categories ? r->categories[c] : "all");
    fputc('\n', f);
    for (int m = 0; m < r->n_methods; m++) {
        const drdc_eval_rates *all = drdc_eval_rates_at(r, m, r->n_categories);
        if (all->n_good + all->n_defective == 0) continue;   /* a method without a threshold */
        fprintf(f, "%-10s", r->methods[m]);
        for (int c = 0; c <= r->n_categories; c++) {
            const drdc_eval_rates *q = drdc_eval_rates_at(r, m, c);
            char cell[64];
            snprintf(cell, sizeof cell, "%d/%d, %d/%d", q->n_false_rejects, q->n_good, q->n_escapes, q->n_defective);
            fprintf(f, " %*s", width + 8, cell);
        }
        fputc('\n', f);
        if (all->n_errors) fprintf(f, "  %s: %d images had a score that is not a finite number (error verdicts)\n",
                                   r->methods[m], all->n_errors);
    }
}

static cJSON *rates_object(const drdc_eval_rates *q) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "threshold", isfinite(q->threshold) ? cJSON_CreateNumber(q->threshold) : cJSON_CreateNull());
    cJSON_AddNumberToObject(o, "good", q->n_good);
    cJSON_AddNumberToObject(o, "false_rejects", q->n_false_rejects);
    cJSON_AddItemToObject(o, "false_reject_rate",
                          q->n_good ? cJSON_CreateNumber((double)q->n_false_rejects / q->n_good) : cJSON_CreateNull());
    cJSON_AddNumberToObject(o, "defective", q->n_defective);
    cJSON_AddNumberToObject(o, "escapes", q->n_escapes);
    cJSON_AddItemToObject(o, "escape_rate",
                          q->n_defective ? cJSON_CreateNumber((double)q->n_escapes / q->n_defective) : cJSON_CreateNull());
    cJSON_AddNumberToObject(o, "errors", q->n_errors);
    return o;
}

static cJSON *metrics_object(const drdc_eval_result *r, int m, int c) {
    cJSON *o = cJSON_CreateObject();
    for (int k = 0; o && k < DRDC_N_METRICS; k++) {
        double v = drdc_eval_value(r, m, c, k);
        cJSON_AddItemToObject(o, drdc_metric_key(k), isnan(v) ? cJSON_CreateNull() : cJSON_CreateNumber(v));
    }
    return o;
}

drdc_status drdc_eval_write_json(const drdc_eval_result *r, const char *path) {
    cJSON *root = cJSON_CreateObject();
    cJSON *methods = cJSON_AddObjectToObject(root, "methods");
    for (int m = 0; methods && m < r->n_methods; m++) {
        cJSON *mo = cJSON_AddObjectToObject(methods, r->methods[m]);
        cJSON *cats = cJSON_AddObjectToObject(mo, "categories");
        for (int c = 0; cats && c < r->n_categories; c++)
            cJSON_AddItemToObject(cats, r->categories[c], metrics_object(r, m, c));
        cJSON_AddItemToObject(mo, "mean", metrics_object(r, m, r->n_categories));
    }
    cJSON *notes = cJSON_AddObjectToObject(root, "notes");
    for (int c = 0; notes && c < r->n_categories; c++)
        if (r->notes[c]) cJSON_AddStringToObject(notes, r->categories[c], r->notes[c]);
    if (r->model_json) {
        cJSON *model = cJSON_Parse(r->model_json);
        if (model) cJSON_AddItemToObject(root, "model", model);
    }
    if (r->rates) {
        cJSON *rates = cJSON_AddObjectToObject(root, "rates");
        for (int m = 0; rates && m < r->n_methods; m++) {
            if (drdc_eval_rates_at(r, m, r->n_categories)->n_good + drdc_eval_rates_at(r, m, r->n_categories)->n_defective == 0)
                continue;
            cJSON *mo = cJSON_AddObjectToObject(rates, r->methods[m]);
            for (int c = 0; mo && c <= r->n_categories; c++)
                cJSON_AddItemToObject(mo, c < r->n_categories ? r->categories[c] : "all",
                                      rates_object(drdc_eval_rates_at(r, m, c)));
        }
    }
    cJSON *images = cJSON_AddArrayToObject(root, "images");
    for (int i = 0; images && i < r->n_images; i++) {
        const drdc_eval_image *e = &r->images[i];
        cJSON *io = cJSON_CreateObject(), *sc = NULL, *vd = NULL;
        cJSON_AddStringToObject(io, "category", r->categories[e->category]);
        cJSON_AddStringToObject(io, "defect", e->defect);
        cJSON_AddStringToObject(io, "path", e->path);
        cJSON_AddNumberToObject(io, "label", e->label);
        sc = cJSON_AddObjectToObject(io, "scores");
        vd = cJSON_AddObjectToObject(io, "verdicts");
        for (int m = 0; m < r->n_methods; m++) {
            cJSON_AddItemToObject(sc, r->methods[m], isfinite(e->scores[m]) ? cJSON_CreateNumber(e->scores[m])
                                                                             : cJSON_CreateNull());
            if (e->verdicts[m] >= 0)
                cJSON_AddStringToObject(vd, r->methods[m], drdc_verdict_name((drdc_verdict)e->verdicts[m]));
        }
        cJSON_AddItemToArray(images, io);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory writing JSON", path);
    drdc_status st = drdc_write_file_atomic(path, text, strlen(text));
    free(text);
    return st;
}

drdc_status drdc_eval_write_csv(const drdc_eval_result *r, const char *path) {
    size_t cap = 256 + (size_t)r->n_methods * (r->n_categories + 1) * (128 + DRDC_N_METRICS * 24);
    for (int c = 0; c < r->n_categories; c++) cap += (size_t)r->n_methods * strlen(r->categories[c]);
    char *buf = malloc(cap);
    if (!buf) return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory writing CSV", path);
    size_t n = (size_t)snprintf(buf, cap, "method,category");
    for (int k = 0; k < DRDC_N_METRICS; k++) n += (size_t)snprintf(buf + n, cap - n, ",%s", drdc_metric_key(k));
    n += (size_t)snprintf(buf + n, cap - n, "\n");
    for (int m = 0; m < r->n_methods; m++)
        for (int c = 0; c <= r->n_categories; c++) {
            n += (size_t)snprintf(buf + n, cap - n, "%s,%s", r->methods[m],
                                  c < r->n_categories ? r->categories[c] : "mean");
            for (int k = 0; k < DRDC_N_METRICS; k++) {
                double v = drdc_eval_value(r, m, c, k);
                n += isnan(v) ? (size_t)snprintf(buf + n, cap - n, ",") : (size_t)snprintf(buf + n, cap - n, ",%.6f", v);
            }
            n += (size_t)snprintf(buf + n, cap - n, "\n");
        }
    drdc_status st = drdc_write_file_atomic(path, buf, n);
    free(buf);
    return st;
}

/* ---- a model's maps as a map source (eval.h) ------------------------------------------------- */

enum { SRC_BASE, SRC_DIFF, SRC_DRDC, N_SRC };
static const char *const SRC_NAMES[N_SRC] = {"base", "diffusion", "drdc"};

struct drdc_model_source {
    const drdc_model *m;
    int want[N_SRC];
    int size;              /* maps are size x size */
    int load_size;         /* images are loaded at load_size x load_size (drdc_model_input_size) */
    int category;          /* category cached, -1 none */
    float *maps[N_SRC];    /* [n][size*size] per method */
    float *scores[N_SRC];  /* [n] */
};
typedef struct drdc_model_source model_source;

static drdc_status fill_category(model_source *ms, const drdc_dataset *ds, int c) {
    const drdc_category *cat = &ds->categories[c];
    int S = ms->size, I = ms->load_size, n = cat->n_test;
    size_t plane = (size_t)S * S;
    ms->category = -1;
    for (int k = 0; k < N_SRC; k++) {
        free(ms->maps[k]);
        free(ms->scores[k]);
        ms->maps[k] = ms->scores[k] = NULL;
        if (!ms->want[k]) continue;
        ms->maps[k] = malloc(sizeof(float) * (size_t)n * plane);
        ms->scores[k] = malloc(sizeof(float) * (size_t)n);
        if (!ms->maps[k] || !ms->scores[k]) return drdc_fail(DRDC_ERR_NOMEM, "out of memory for %d maps", n);
    }
    drdc_loader_options lo;
    drdc_loader_options_default(&lo);
    lo.image_size = I;
    lo.batch_size = ms->m->cfg.infer.batch;
    lo.workers = ms->m->cfg.data.workers;
    drdc_loader *ld = NULL;
    drdc_status st = drdc_loader_create(&ld, cat->test, cat->n_test, &lo);
    if (!st) st = drdc_loader_start_epoch(ld, 0);
    const drdc_batch *b;
    /* the category's maps come first, in batches: their own progress line (DRDC takes minutes) */
    char label[320];
    snprintf(label, sizeof label, "maps of %s", cat->name);
    drdc_progress prog;
    drdc_progress_begin(&prog, label, n, 0);
    int n_done = 0;
    const double t_start = drdc_now_seconds();
    double model_s = 0;   /* inside the model; the rest the model waited (for the loader threads) */
    while (!st && !(st = drdc_loader_next(ld, &b)) && b) {
        const double t_model = drdc_now_seconds();
        dt_tensor images = NULL, out[2 * N_SRC] = {NULL};   /* map, score per method */
        st = drdc_model_upload(&images, ms->m, b->images, b->n, 3, I);
        if (!st && (ms->want[SRC_DRDC] || ms->want[SRC_DIFF])) {
            st = drdc_model_drdc(&out[2 * SRC_DRDC], &out[2 * SRC_DRDC + 1], &out[2 * SRC_BASE], &out[2 * SRC_BASE + 1],
                                 ms->want[SRC_DIFF] ? &out[2 * SRC_DIFF] : NULL, ms->m, images, 0, NULL);
            if (!st && ms->want[SRC_DIFF])
                st = drdc_fusion_image_score(&out[2 * SRC_DIFF + 1], out[2 * SRC_DIFF], ms->m->cfg.infer.pool);
        } else if (!st) {
            st = drdc_model_base(&out[2 * SRC_BASE], &out[2 * SRC_BASE + 1], ms->m, images);
        }
        int first = b->index[0];   /* unshuffled: the batch holds samples first .. first + n - 1 */
        for (int k = 0; !st && k < N_SRC; k++) {
            if (!ms->want[k] || !out[2 * k]) continue;
            st = dt_copy_to_host(out[2 * k], ms->maps[k] + (size_t)first * plane, sizeof(float) * b->n * plane);
            if (!st) st = dt_copy_to_host(out[2 * k + 1], ms->scores[k] + first, sizeof(float) * (size_t)b->n);
        }
        dt_free(images);
        for (int k = 0; k < 2 * N_SRC; k++) dt_free(out[k]);
        model_s += drdc_now_seconds() - t_model;
        n_done += b->n;
        if (!st) drdc_progress_update(&prog, n_done, NULL);
    }
    drdc_progress_end(&prog);
    const double wall = drdc_now_seconds() - t_start;
    if (!st && wall > 0)
        fprintf(stderr, "maps of %s: %d images in %.1f s, %.2f images/s; the model was idle %.0f %% of the time "
                "(waiting for %d loader threads)\n", cat->name, n_done, wall, n_done / wall,
                100 * (wall > model_s ? 1 - model_s / wall : 0), lo.workers);
    drdc_loader_free(ld);
    if (!st) ms->category = c;
    return st;
}

drdc_status drdc_model_source_maps(void *ctx, const drdc_dataset *ds, const drdc_sample *s, drdc_image *maps,
                                   float *scores) {
    model_source *ms = ctx;
    int S = ms->size;
    if (ms->category != s->category) {
        drdc_status st = fill_category(ms, ds, s->category);
        if (st) return st;
    }
    int i = (int)(s - ds->categories[s->category].test), m = 0;
    for (int k = 0; k < N_SRC; k++) {
        if (!ms->want[k]) continue;
        drdc_status st = drdc_image_alloc(&maps[m], S, S, 1);
        if (st) return st;
        memcpy(maps[m].data, ms->maps[k] + (size_t)i * S * S, sizeof(float) * (size_t)S * S);
        scores[m++] = ms->scores[k][i];
    }
    return DRDC_OK;
}

drdc_status drdc_model_source_new(drdc_model_source **out, const drdc_model *m, unsigned methods) {
    *out = NULL;
    model_source *ms = calloc(1, sizeof *ms);
    if (!ms) return drdc_fail(DRDC_ERR_NOMEM, "out of memory");
    ms->m = m;
    ms->category = -1;
    ms->want[SRC_BASE] = (methods & DRDC_METHOD_BASE) != 0;
    ms->want[SRC_DIFF] = (methods & DRDC_METHOD_DIFFUSION) != 0;
    ms->want[SRC_DRDC] = (methods & DRDC_METHOD_DRDC) != 0;
    int refined = ms->want[SRC_DIFF] || ms->want[SRC_DRDC];
    if (refined && m->refiner_steps <= 0) {
        free(ms);
        return drdc_fail(DRDC_ERR_INPUT, "the diffusion and drdc methods need the diffusion refiner, and this model "
                         "has none (train stage 2, or use --method base)");
    }
    ms->size = refined ? m->cfg.refiner.image_size : m->cfg.data.image_size;
    ms->load_size = drdc_model_input_size(m, refined);
    *out = ms;
    return DRDC_OK;
}

void drdc_model_source_thresholds(void *ctx, int method, const char *category, double *image, double *pixel) {
    const model_source *ms = ctx;
    *image = *pixel = NAN;
    int k = -1;
    for (int i = 0, m = 0; i < N_SRC; i++)
        if (ms->want[i] && m++ == method) k = i;
    if (k != SRC_BASE && k != SRC_DRDC) return;   /* the diffusion map alone has no thresholds */
    drdc_thresholds t = drdc_model_thresholds(ms->m, k == SRC_DRDC, category);
    *image = t.image;
    *pixel = t.pixel;
}

int drdc_model_source_methods(const drdc_model_source *ms, const char **names, double *lo, double *hi) {
    const drdc_model_stats *s = &ms->m->stats;
    double src_lo[N_SRC] = {s->score_lo, 0, s->drdc_lo}, src_hi[N_SRC] = {s->score_hi, 0, s->drdc_hi};
    /* the diffusion map has no threshold: its validation mean to mean + 6 std */
    drdc_colour_range(&(drdc_norm_stats){s->diff_mean, s->diff_std}, NAN, &src_lo[SRC_DIFF], &src_hi[SRC_DIFF]);
    int n = 0;
    for (int k = 0; k < N_SRC; k++) {
        if (!ms->want[k]) continue;
        if (names) names[n] = SRC_NAMES[k];
        if (lo) lo[n] = src_lo[k];
        if (hi) hi[n] = src_hi[k];
        n++;
    }
    return n;
}

void drdc_model_source_free(drdc_model_source *ms) {
    if (!ms) return;
    for (int k = 0; k < N_SRC; k++) {
        free(ms->maps[k]);
        free(ms->scores[k]);
    }
    free(ms);
}

/* ---- the HTML report of a result ---------------------------------------------------------------- */

drdc_status drdc_eval_write_report(const drdc_eval_result *r, const char *dir, const char *panels_dir,
                                   const char *const *about, int n_about) {
    int nm = r->n_methods, nc = r->n_categories, main = nm - 1;   /* the last method: drdc when present */
    const char *titles[DRDC_N_METRICS];
    for (int k = 0; k < DRDC_N_METRICS; k++) titles[k] = drdc_metric_title(k);
    drdc_report_threshold *thr = calloc((size_t)nm * (nc ? nc : 1), sizeof *thr);
    drdc_report_image *imgs = calloc((size_t)(r->n_images ? r->n_images : 1), sizeof *imgs);
    char **panels = calloc((size_t)(r->n_images ? r->n_images : 1), sizeof *panels);
    drdc_status st = DRDC_OK;
    if (!thr || !imgs || !panels) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory writing the report");
        goto done;
    }
    for (int m = 0; m < nm; m++)
        for (int c = 0; c < nc; c++) {
            drdc_report_threshold *t = &thr[(size_t)m * nc + c];
            t->threshold = NAN;
            if (!r->rates) continue;
            const drdc_eval_rates *q = drdc_eval_rates_at(r, m, c);
            *t = (drdc_report_threshold){q->threshold, q->n_good, q->n_false_rejects, q->n_defective, q->n_escapes};
        }
    for (int i = 0; i < r->n_images; i++) {
        const drdc_eval_image *e = &r->images[i];
        drdc_report_image *ri = &imgs[i];
        const drdc_eval_rates *q = r->rates ? drdc_eval_rates_at(r, main, e->category) : NULL;
        ri->category = e->category;
        ri->defect = e->defect;
        ri->path = e->path;
        ri->label = e->label;
        ri->score = e->scores[main];
        ri->threshold = q ? q->threshold : NAN;
        ri->verdict = e->verdicts[main] != DRDC_VERDICT_NORMAL;   /* an error is not "normal" */
        if (panels_dir) {
            char stem[512];
            drdc_path_stem(e->path, stem, sizeof stem);
            size_t n = strlen(panels_dir) + strlen(r->categories[e->category]) + strlen(e->defect) + strlen(stem) + 8;
            if ((panels[i] = malloc(n)))
                snprintf(panels[i], n, "%s/%s/%s/%s.png", panels_dir, r->categories[e->category], e->defect, stem);
            ri->panel = panels[i];
        }
    }
    const drdc_report rep = {
        "drdc evaluation", n_about, about, nm, (const char *const *)r->methods, nc, (const char *const *)r->categories,
        DRDC_N_METRICS, titles, r->values, (const char *const *)r->notes, r->image_curves, r->pixel_curves,
        r->rates ? thr : NULL, main, r->n_images, imgs,
    };
    char path[8192];
    snprintf(path, sizeof path, "%s/index.html", dir);
    TRY(drdc_report_write(path, &rep));
done:
    for (int i = 0; panels && i < r->n_images; i++) free(panels[i]);
    free(panels);
    free(imgs);
    free(thr);
    return st;
}
