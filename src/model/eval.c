/* eval.c: walks a dataset's test images, gathers each method's maps and scores, and computes
 * the exact per-category metrics, tables, JSON and CSV (see eval.h). */
#include "drdc/model/eval.h"
#include "drdc/data/loader.h"
#include "drdc/model/calibrate.h"
#include "drdc/stages/fusion.h"
#include "drdc/core/fsutil.h"
#include "drdc/stages/heatmap.h"
#include "drdc/stages/metrics.h"
#include "drdc/formats/npy.h"
#include "drdc/core/progress.h"

#include <cjson/cJSON.h>
#include <math.h>
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
    memset(r, 0, sizeof *r);
}

static drdc_status result_alloc(drdc_eval_result *r, const drdc_dataset *ds, int n_methods,
                                const char *const *methods) {
    memset(r, 0, sizeof *r);
    r->n_methods = n_methods;
    r->n_categories = ds->n_categories;
    r->methods = calloc((size_t)n_methods, sizeof *r->methods);
    r->categories = calloc((size_t)ds->n_categories, sizeof *r->categories);
    r->notes = calloc((size_t)ds->n_categories, sizeof *r->notes);
    size_t nv = (size_t)n_methods * (ds->n_categories + 1) * DRDC_N_METRICS;
    r->values = malloc(nv * sizeof *r->values);
    int ok = r->methods && r->categories && r->notes && r->values;
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

/* One PNG: image | truth | each method's map, 256 px high; each method's map on its fixed colour
 * range when the options give one, else on its own min..max. */
static drdc_status write_vis(const drdc_eval_options *o, const char *category, const drdc_sample *s,
                             const uint8_t *mask, int mw, int mh, const drdc_image *maps, int n_methods) {
    const int H = 256;
    int pw = (int)((double)mw * H / mh + 0.5);
    if (pw < 1) pw = 1;
    drdc_image img = {0}, img_r = {0}, truth = {0}, panel = {0}, colour = {0}, canvas = {0};
    drdc_status st = drdc_image_load_rgb(s->image_path, &img);
    if (!st) st = drdc_image_resize(&img, pw, H, &img_r);
    if (!st) st = drdc_image_alloc(&truth, mw, mh, 1);
    if (!st) {
        for (size_t i = 0; i < (size_t)mw * mh; i++) truth.data[i] = mask[i];
        drdc_image_free(&img);
        st = drdc_image_resize(&truth, pw, H, &img);   /* img reused as the resized truth */
    }
    int gap = 4, width = (2 + n_methods) * pw + (1 + n_methods) * gap;
    if (!st) st = drdc_image_alloc(&canvas, width, H, 3);
    for (int p = 0; !st && p < 2 + n_methods; p++) {
        const drdc_image *src = NULL;
        if (p == 0) {
            src = &img_r;
        } else if (p == 1) {
            src = &img;
        } else {
            drdc_image_free(&panel);
            drdc_image_free(&colour);
            const drdc_image *mp = &maps[p - 2];
            float lo = INFINITY, hi = -INFINITY;
            if (o->vis_lo && o->vis_hi) {
                lo = (float)o->vis_lo[p - 2];
                hi = (float)o->vis_hi[p - 2];
            } else {
                for (size_t i = 0; i < (size_t)mp->w * mp->h; i++) {
                    lo = fminf(lo, mp->data[i]);
                    hi = fmaxf(hi, mp->data[i]);
                }
            }
            if (!(hi > lo)) hi = lo + 1.0f;
            st = drdc_image_resize(mp, pw, H, &panel);
            if (!st) st = drdc_heatmap_colorize(&panel, lo, hi, &colour);
            src = &colour;
        }
        if (st) break;
        int x0 = p * (pw + gap);
        for (int y = 0; y < H; y++)
            for (int x = 0; x < pw; x++)
                for (int c = 0; c < 3; c++)
                    canvas.data[((size_t)y * width + x0 + x) * 3 + c] =
                        src->data[((size_t)y * pw + x) * src->c + (src->c == 3 ? c : 0)];
    }
    if (!st) {
        char dir[2048], path[4096], stem[512];
        snprintf(dir, sizeof dir, "%s/%s/%s", o->vis, category, s->defect);
        drdc_path_stem(s->image_path, stem, sizeof stem);
        snprintf(path, sizeof path, "%s/%s.png", dir, stem);
        st = drdc_mkdirs(dir);
        if (!st) st = drdc_image_write_png(path, &canvas);
    }
    drdc_image_free(&img);
    drdc_image_free(&img_r);
    drdc_image_free(&truth);
    drdc_image_free(&panel);
    drdc_image_free(&colour);
    drdc_image_free(&canvas);
    return st;
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
    uint8_t *labels = malloc((size_t)n);
    drdc_pixel_accum **acc = calloc((size_t)nm, sizeof *acc);
    drdc_image *maps = calloc((size_t)nm, sizeof *maps);
    if (!scores || !labels || !acc || !maps) st = drdc_fail(DRDC_ERR_NOMEM, "out of memory");
    for (int m = 0; !st && m < nm; m++) st = drdc_pixel_accum_create(&acc[m], 0);
    for (int i = 0; !st && i < n; i++) {
        const drdc_sample *s = &cat->test[i];
        uint8_t *mask = NULL;
        int mw = 0, mh = 0;
        float sc[64];
        memset(maps, 0, sizeof *maps * nm);
        st = source(ctx, ds, s, maps, sc);
        if (!st) st = load_truth(s, o->eval_size, &mask, &mw, &mh);
        for (int m = 0; !st && m < nm; m++) {
            drdc_image tmp = {0};
            const drdc_image *use;
            scores[(size_t)m * n + i] = sc[m];
            if (o->dump_maps) st = dump_map(o, nm > 1, r->methods[m], cat->name, s, &maps[m]);
            if (!st) st = map_at_size(&maps[m], mw, mh, &tmp, &use);
            if (!st) st = drdc_pixel_accum_add(acc[m], use->data, s->label ? mask : NULL, mh, mw);
            if (st) st = drdc_error_context(st, "%s", s->image_path);
            drdc_image_free(&tmp);
        }
        if (!st && o->vis) st = write_vis(o, cat->name, s, mask, mw, mh, maps, nm);
        labels[i] = (uint8_t)(s->label != 0);
        for (int m = 0; m < nm; m++) drdc_image_free(&maps[m]);
        free(mask);
        ++*done;
        drdc_progress_update(prog, *done, cat->name);
    }
    for (int m = 0; !st && m < nm; m++) {
        drdc_curve_metrics im;
        drdc_pixel_metrics px;
        drdc_status s1 = drdc_image_metrics(scores + (size_t)m * n, labels, (size_t)n, &im);
        if (s1 == DRDC_OK) {
            *value_at(r, m, c, DRDC_M_IMAGE_AUROC) = im.auroc;
            *value_at(r, m, c, DRDC_M_IMAGE_AP) = im.ap;
            *value_at(r, m, c, DRDC_M_IMAGE_F1MAX) = im.f1_max;
        } else if (s1 == DRDC_ERR_INPUT) {
            if (m == 0) add_note(r, c, "image metrics", drdc_last_error());
        } else {
            st = s1;
            break;
        }
        drdc_status s2 = drdc_pixel_accum_finalize(acc[m], DRDC_AUPRO_FPR_LIMIT, &px);
        if (s2 == DRDC_OK) {
            *value_at(r, m, c, DRDC_M_PIXEL_AUROC) = px.curve.auroc;
            *value_at(r, m, c, DRDC_M_PIXEL_AP) = px.curve.ap;
            *value_at(r, m, c, DRDC_M_PIXEL_F1MAX) = px.curve.f1_max;
            *value_at(r, m, c, DRDC_M_AUPRO) = px.aupro;
        } else if (s2 == DRDC_ERR_INPUT) {
            if (m == 0) add_note(r, c, "pixel metrics", drdc_last_error());
        } else {
            st = s2;
        }
    }
    for (int m = 0; acc && m < nm; m++) drdc_pixel_accum_free(acc[m]);
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
    drdc_status st = result_alloc(out, ds, n_methods, methods);
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
    while (!st && !(st = drdc_loader_next(ld, &b)) && b) {
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
        n_done += b->n;
        if (!st) drdc_progress_update(&prog, n_done, NULL);
    }
    drdc_progress_end(&prog);
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
