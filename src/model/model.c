/* model.c: DRDC composed from its stages; model files (see model.h). */
#include "drdc/model/model.h"
#include "drdc/stages/fusion.h"
#include "drdc/stages/amx.h"
#include "drdc/stages/simd.h"
#include "drdc/core/progress.h"
#include "drdc/core/rng.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


drdc_status drdc_model_check_config(const drdc_config *cfg) {
    drdc_status st = DRDC_OK;
    TRY(drdc_config_validate(cfg));
    TRY(drdc_backbone_check_config(&cfg->backbone));
    TRY(drdc_base_check_config(&cfg->base, cfg->data.image_size));
    TRY(drdc_unet_check_config(&cfg->refiner));
    TRY(drdc_diffusion_check_config(&cfg->refiner, &cfg->infer));
    TRY(drdc_fusion_check_config(&cfg->infer, cfg->data.image_size));
done:
    return st;
}

drdc_status drdc_model_build(drdc_model *m, const drdc_config *cfg, dt_device dev) {
    memset(m, 0, sizeof *m);
    drdc_status cst = drdc_model_check_config(cfg);
    if (cst) return cst;
    m->cfg = *cfg;
    m->dev = dev;
    int S = cfg->data.image_size;
    drdc_status st = drdc_backbone_build(&m->backbone, &cfg->backbone, S, dev,
                                         drdc_seed(cfg->train.seed, DRDC_SEED_BACKBONE_INIT));
    if (st) return drdc_error_context(st, "building backbone %s", cfg->backbone.arch);
    if (cfg->backbone.weights[0]) {
        st = drdc_backbone_load(&m->backbone, cfg->backbone.weights);
        if (st) {
            drdc_model_free(m);
            return drdc_error_context(st, "backbone.weights");
        }
        m->backbone_pretrained = 1;
    }
    st = drdc_base_build(&m->base, &cfg->base, drdc_backbone_channels(&m->backbone), S / 16, S / 16, dev,
                          drdc_seed(cfg->train.seed, DRDC_SEED_BASE_INIT));
    if (st) {
        drdc_model_free(m);
        return drdc_error_context(st, "building the base transformer");
    }
    st = drdc_model_build_refiner(m);
    if (st) {
        drdc_model_free(m);
        return st;
    }
    return DRDC_OK;
}

drdc_status drdc_model_refiner_init(drdc_unet *unet, const drdc_config *cfg, dt_device dev) {
    return drdc_unet_build(unet, &cfg->refiner, dev, drdc_seed(cfg->train.seed, DRDC_SEED_REFINER_INIT));
}

drdc_status drdc_model_build_refiner(drdc_model *m) {
    drdc_unet_free(&m->refiner);
    drdc_schedule_free(&m->schedule);
    drdc_status st = DRDC_OK;
    TRY(drdc_model_refiner_init(&m->refiner, &m->cfg, m->dev));
    TRY(drdc_schedule_from_config(&m->schedule, &m->cfg.refiner, m->dev));
done:
    return st ? drdc_error_context(st, "building the diffusion refiner") : DRDC_OK;
}

const char *drdc_model_cpu_kernels(void) {
    if (drdc_amx_available()) return "AMX and AVX-512 (bf16 convolutions and attention on AMX tiles)";
    return drdc_cpu_avx512(0) ? "AVX-512" : "portable C";
}

void drdc_model_free(drdc_model *m) {
    drdc_backbone_free(&m->backbone);
    drdc_base_free(&m->base);
    drdc_unet_free(&m->refiner);
    drdc_schedule_free(&m->schedule);
    memset(m, 0, sizeof *m);
}

drdc_status drdc_model_set_infer(drdc_model *m, const char *const *sets, int n, const char *path) {
    for (int i = 0; i < n; i++)
        if (strncmp(sets[i], "infer.", 6) != 0)
            return drdc_fail(DRDC_ERR_USAGE, "--set %s: only infer.* keys can change after training (the other keys "
                             "describe the trained networks of %s)", sets[i], path);
    drdc_config c = m->cfg;
    drdc_status st = DRDC_OK;
    for (int i = 0; i < n; i++) TRY(drdc_config_set(&c, sets[i]));
    TRY(drdc_model_check_config(&c));
    m->cfg = c;
    TRY(drdc_model_prepare(m));   /* infer.precision may have changed */
done:
    return st ? drdc_error_context(st, "--set") : DRDC_OK;
}

void drdc_model_describe_drdc(const drdc_model *m, char *out, size_t cap) {
    const drdc_infer_config *ic = &m->cfg.infer;
    char grids[128] = "";
    for (int i = 0; i < ic->n_grids; i++)
        snprintf(grids + strlen(grids), sizeof grids - strlen(grids), "%s%d", i ? "," : "", ic->grids[i]);
    snprintf(out, cap, "start from the %s, tau %d, %d DDIM steps, K %d, grids %s, x0 clipping %s%s",
             strcmp(ic->start, "masked") == 0 ? "masked image x~_k" : "image", ic->tau, ic->steps, ic->K, grids,
             ic->clip_x0 ? "on" : "off",
             strcmp(ic->diff_norm, "image_mean") == 0 ? ", diffusion map divided by its image's mean" : "");
}

char *drdc_model_describe_json(const drdc_model *m, const char *path) {
    char *config = drdc_config_to_json(&m->cfg);
    cJSON *o = cJSON_CreateObject(), *c = config ? cJSON_Parse(config) : NULL;
    free(config);
    char *text = NULL;
    if (o && c) {
        cJSON_AddStringToObject(o, "file", path ? path : "");
        cJSON_AddNumberToObject(o, "base_epochs", m->base_epochs);
        cJSON_AddNumberToObject(o, "refiner_steps", m->refiner_steps);
        cJSON_AddBoolToObject(o, "backbone_pretrained", m->backbone_pretrained);
        cJSON_AddItemToObject(o, "config", c);
        c = NULL;
        text = cJSON_PrintUnformatted(o);
    }
    cJSON_Delete(c);
    cJSON_Delete(o);
    return text;
}

/* The stats fields stored in the model file, one table for writing and reading. */
#define STAT(field) {#field, offsetof(drdc_model_stats, field)}
static const struct {
    const char *key;
    size_t offset;
} STATS_FIELDS[] = {
    STAT(base_mean), STAT(base_std), STAT(base_threshold), STAT(score_lo), STAT(score_hi),
    STAT(fuse_base_mean), STAT(fuse_base_std), STAT(diff_mean), STAT(diff_std), STAT(drdc_mean),
    STAT(drdc_std), STAT(drdc_threshold), STAT(drdc_lo), STAT(drdc_hi),
    STAT(base_pixel_threshold), STAT(drdc_pixel_threshold),
};
#define N_STATS ((int)(sizeof STATS_FIELDS / sizeof STATS_FIELDS[0]))
#define FIRST_DRDC_STAT 5   /* STATS_FIELDS from fuse_base_mean on belong to the full model */
#define FIRST_OPTIONAL_STAT 14   /* from here on: added later; a model file without them has NAN */

/* The per-category fields, one table for writing and reading. */
#define CSTAT(field) {#field, offsetof(drdc_category_stats, field)}
static const struct {
    const char *key;
    size_t offset;
} CATEGORY_FIELDS[] = {
    CSTAT(base_threshold), CSTAT(base_pixel_threshold), CSTAT(drdc_threshold), CSTAT(drdc_pixel_threshold),
};
#define N_CATEGORY_FIELDS ((int)(sizeof CATEGORY_FIELDS / sizeof CATEGORY_FIELDS[0]))

static double *cstat_at(drdc_category_stats *c, int i) { return (double *)((char *)c + CATEGORY_FIELDS[i].offset); }

/* JSON has no NaN: a threshold that does not exist is written as null. */
static void add_number_or_null(cJSON *o, const char *key, double v) {
    if (isfinite(v))
        cJSON_AddNumberToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

const char *drdc_verdict_name(drdc_verdict v) {
    return v == DRDC_VERDICT_ANOMALOUS ? "anomalous" : v == DRDC_VERDICT_NORMAL ? "normal" : "error";
}

drdc_verdict drdc_verdict_of(double score, double threshold) {
    if (!isfinite(score) || !isfinite(threshold)) return DRDC_VERDICT_ERROR;
    return score >= threshold ? DRDC_VERDICT_ANOMALOUS : DRDC_VERDICT_NORMAL;
}

drdc_thresholds drdc_model_thresholds(const drdc_model *m, int use_drdc, const char *category) {
    const drdc_model_stats *s = &m->stats;
    drdc_thresholds t = {use_drdc ? s->drdc_threshold : s->base_threshold,
                         use_drdc ? s->drdc_pixel_threshold : s->base_pixel_threshold, "all categories"};
    int c = category ? drdc_model_category(m, category) : -1;
    if (c >= 0) {
        const drdc_category_stats *cs = &s->categories[c];
        t.image = use_drdc ? cs->drdc_threshold : cs->base_threshold;
        t.pixel = use_drdc ? cs->drdc_pixel_threshold : cs->base_pixel_threshold;
        t.scope = cs->name;
    }
    return t;
}

int drdc_model_category(const drdc_model *m, const char *name) {
    for (int i = 0; name && i < m->stats.n_categories; i++)
        if (strcmp(m->stats.categories[i].name, name) == 0) return i;
    return -1;
}

static double *stat_at(drdc_model_stats *st, int i) { return (double *)((char *)st + STATS_FIELDS[i].offset); }

static char *stats_json(const drdc_model *m) {
    drdc_model_stats copy = m->stats;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ready", copy.ready);
    cJSON_AddBoolToObject(o, "drdc_ready", copy.drdc_ready);
    cJSON_AddNumberToObject(o, "n_val_images", copy.n_val_images);
    for (int i = 0; i < N_STATS; i++) add_number_or_null(o, STATS_FIELDS[i].key, *stat_at(&copy, i));
    if (copy.n_categories > 0) {
        cJSON *cats = cJSON_AddArrayToObject(o, "categories");
        for (int c = 0; c < copy.n_categories; c++) {
            cJSON *co = cJSON_CreateObject();
            cJSON_AddStringToObject(co, "name", copy.categories[c].name);
            cJSON_AddNumberToObject(co, "n_val_images", copy.categories[c].n_val_images);
            for (int i = 0; i < N_CATEGORY_FIELDS; i++)
                add_number_or_null(co, CATEGORY_FIELDS[i].key, *cstat_at(&copy.categories[c], i));
            cJSON_AddItemToArray(cats, co);
        }
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static drdc_status parse_stats(drdc_model *m, const char *text, const char *path) {
    cJSON *o = cJSON_Parse(text);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return drdc_fail(DRDC_ERR_FORMAT, "%s: metadata 'stats' is not a JSON object", path);
    }
    drdc_model_stats st = {0};
    st.ready = cJSON_IsTrue(cJSON_GetObjectItem(o, "ready"));
    st.drdc_ready = cJSON_IsTrue(cJSON_GetObjectItem(o, "drdc_ready"));
    for (int i = -1; i < N_STATS; i++) {
        const char *key = i < 0 ? "n_val_images" : STATS_FIELDS[i].key;
        cJSON *v = cJSON_GetObjectItem(o, key);
        int absent = !v || cJSON_IsNull(v);
        if (absent && ((!st.drdc_ready && i >= FIRST_DRDC_STAT) || i >= FIRST_OPTIONAL_STAT)) {
            *stat_at(&st, i) = NAN;   /* a base-only model's DRDC stats; a threshold an older model file lacks */
            *stat_at(&st, i) = NAN;
            continue;
        }
        if (!cJSON_IsNumber(v)) {
            cJSON_Delete(o);
            return drdc_fail(DRDC_ERR_FORMAT, "%s: metadata 'stats' lacks the number '%s'", path, key);
        }
        if (i < 0)
            st.n_val_images = v->valueint;
        else
            *stat_at(&st, i) = v->valuedouble;
    }
    cJSON *cats = cJSON_GetObjectItem(o, "categories"), *co;
    cJSON_ArrayForEach(co, cats) {
        if (st.n_categories >= DRDC_MAX_CATEGORIES) break;
        drdc_category_stats *cs = &st.categories[st.n_categories];
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(co, "name"));
        cJSON *n = cJSON_GetObjectItem(co, "n_val_images");
        if (!name || strlen(name) >= sizeof cs->name || !cJSON_IsNumber(n)) {
            cJSON_Delete(o);
            return drdc_fail(DRDC_ERR_FORMAT, "%s: metadata 'stats' has a malformed category entry", path);
        }
        snprintf(cs->name, sizeof cs->name, "%s", name);
        cs->n_val_images = n->valueint;
        for (int i = 0; i < N_CATEGORY_FIELDS; i++) {
            cJSON *v = cJSON_GetObjectItem(co, CATEGORY_FIELDS[i].key);
            *cstat_at(cs, i) = cJSON_IsNumber(v) ? v->valuedouble : NAN;
        }
        st.n_categories++;
    }
    m->stats = st;
    cJSON_Delete(o);
    return DRDC_OK;
}

drdc_status drdc_model_write(const drdc_model *m, drdc_st_writer *w) {
    char *config = drdc_config_to_json(&m->cfg), *stats = stats_json(m), num[32];
    drdc_status st = DRDC_OK;
    if (!config || !stats) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory writing the model");
        goto done;
    }
    TRY(drdc_st_writer_set_meta(w, "format", DRDC_MODEL_FORMAT));
    snprintf(num, sizeof num, "%d", DRDC_MODEL_FORMAT_VERSION);
    TRY(drdc_st_writer_set_meta(w, "format_version", num));
    TRY(drdc_st_writer_set_meta(w, "config", config));
    TRY(drdc_st_writer_set_meta(w, "stats", stats));
    snprintf(num, sizeof num, "%d", m->base_epochs);
    TRY(drdc_st_writer_set_meta(w, "base_epochs", num));
    snprintf(num, sizeof num, "%d", m->refiner_steps);
    TRY(drdc_st_writer_set_meta(w, "refiner_steps", num));
    TRY(drdc_st_writer_set_meta(w, "backbone_pretrained", m->backbone_pretrained ? "1" : "0"));
    TRY(drdc_params_save(&m->backbone.params, w, "backbone."));
    TRY(drdc_params_save(&m->base.params, w, "base."));
    if (m->refiner_steps > 0) TRY(drdc_params_save(&m->refiner.params, w, "refiner."));
done:
    free(config);
    free(stats);
    return st;
}

drdc_status drdc_model_save(const drdc_model *m, const char *path) {
    drdc_st_writer *w = NULL;
    drdc_status st = DRDC_OK;
    TRY(drdc_st_writer_new(&w));
    TRY(drdc_model_write(m, w));
    TRY(drdc_st_writer_write(w, path));
done:
    drdc_st_writer_free(w);
    return st;
}

drdc_status drdc_model_load_st(drdc_model *m, const drdc_st_file *f, dt_device dev) {
    const char *path = drdc_st_source(f);
    const char *format = drdc_st_meta(f, "format"), *version = drdc_st_meta(f, "format_version");
    if (!format || strcmp(format, DRDC_MODEL_FORMAT) != 0)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: not a drdc model (metadata 'format' is %s%s%s); give a file written "
                         "by 'drdc train'", path, format ? "'" : "absent", format ? format : "", format ? "'" : "");
    if (!version || atoi(version) != DRDC_MODEL_FORMAT_VERSION)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: model format version %s, this drdc reads version %d; retrain with "
                         "this drdc ('drdc train --config ...') or use the drdc that wrote it", path,
                         version ? version : "(none)", DRDC_MODEL_FORMAT_VERSION);
    const char *config = drdc_st_meta(f, "config"), *stats = drdc_st_meta(f, "stats");
    if (!config || !stats) return drdc_fail(DRDC_ERR_FORMAT, "%s: model metadata lacks 'config' or 'stats'", path);
    drdc_config cfg;
    drdc_config_defaults(&cfg);
    drdc_status st = drdc_config_parse_stored(&cfg, config, path);
    if (st) return drdc_error_context(st, "%s: the model's stored config", path);
    /* The weights come from this file; do not read the training-time weights path again. */
    cfg.backbone.weights[0] = '\0';
    st = drdc_model_build(m, &cfg, dev);
    if (st) return st;
    TRY(drdc_backbone_load_st(&m->backbone, f, "backbone."));
    TRY(drdc_params_load(&m->base.params, f, "base.", 1));
    TRY(parse_stats(m, stats, path));
    const char *epochs = drdc_st_meta(f, "base_epochs"), *pre = drdc_st_meta(f, "backbone_pretrained");
    const char *rsteps = drdc_st_meta(f, "refiner_steps");
    m->base_epochs = epochs ? atoi(epochs) : 0;
    m->refiner_steps = rsteps ? atoi(rsteps) : 0;
    if (m->refiner_steps > 0) TRY(drdc_params_load(&m->refiner.params, f, "refiner.", 1));
    m->backbone_pretrained = pre && strcmp(pre, "1") == 0;
    TRY(drdc_model_prepare(m));
done:
    if (st) drdc_model_free(m);
    return st;
}

drdc_status drdc_model_load(drdc_model *m, const char *path, dt_device dev) {
    memset(m, 0, sizeof *m);
    drdc_st_file *f = NULL;
    drdc_status st = drdc_st_open(&f, path);
    if (st) return st;
    st = drdc_model_load_st(m, f, dev);
    drdc_st_close(f);
    return st;
}

/* H_base at S x S: for each scale s of infer.base_scales, Up(||Down_s(f) - Down_s(f^)||_2 over
 * channels) with Down = area to floor(h*s) x floor(w*s) (at least 1) and Up = bilinear,
 * align_corners true (UniAD); the mean over the scales. Scale 1 is UniAD's map. */
static drdc_status base_map_scales(dt_tensor *map, dt_tensor rec, dt_tensor feats, const drdc_infer_config *ic, int S) {
    int64_t shape[4];
    drdc_status st = dt_shape(shape, 4, feats);
    if (st) return st;
    TRY(dt_scope_begin());
    dt_tensor sum = NULL, res = NULL;
    for (int i = 0; i < ic->n_base_scales; i++) {
        dt_tensor r = rec, f = feats, low, up;
        if (ic->base_scales[i] != 1.0) {
            int64_t h = (int64_t)(shape[2] * ic->base_scales[i]), w = (int64_t)(shape[3] * ic->base_scales[i]);
            h = h < 1 ? 1 : h;
            w = w < 1 ? 1 : w;
            TRY(dt_interpolate(&r, rec, h, w, DT_INTERP_AREA));               /* [B,C,h',w'] */
            TRY(dt_interpolate(&f, feats, h, w, DT_INTERP_AREA));
        }
        TRY(drdc_base_anomaly_map(&low, r, f));                              /* [B,1,h',w'] */
        TRY(dt_interpolate(&up, low, S, S, DT_INTERP_BILINEAR_AC));           /* [B,1,S,S] */
        if (sum) {
            dt_tensor next;
            TRY(dt_add(&next, sum, up));
            sum = next;
        } else {
            sum = up;
        }
    }
    TRY(dt_mul_scalar(&res, sum, 1.0 / ic->n_base_scales));
    return dt_scope_finish(st, res, map);
done:
    return dt_scope_finish(st, NULL, map);
}

/* Runs fn on each image of a batch alone ([1,...] slices) and concatenates each wanted output along
 * dim 0. Every result of the model is computed this way (but the refiner's with infer.batch_refiner),
 * so an image's maps and score never depend on the batch it came in (libtorch's kernels pick their
 * summation order by batch size: a batch of four and a batch of one differ in the last bits).
 * fn gets the image's index in the batch (for inputs computed for the whole batch) and outs[i] NULL
 * when output i is not wanted. */
typedef drdc_status (*one_image_fn)(dt_tensor *const *outs, const drdc_model *m, dt_tensor image, int64_t index,
                                    void *ctx);

typedef struct per_image_job {
    dt_tensor *const *outs;
    int n_outs;
    const drdc_model *m;
    dt_tensor images;
    one_image_fn fn;
    void *ctx;
    int64_t B;
    int streams;        /* images b, b + streams, ... go to stream b */
    dt_tensor *parts;   /* [n_outs][B] */
} per_image_job;

static drdc_status per_image_stream(void *ctx, int s) {
    const per_image_job *j = ctx;
    dt_tensor one = NULL;
    drdc_status st = DRDC_OK;
    for (int64_t b = s; b < j->B; b += j->streams) {
        dt_tensor *slot[8];
        for (int i = 0; i < j->n_outs; i++) slot[i] = j->outs[i] ? &j->parts[i * j->B + b] : NULL;
        TRY(dt_narrow(&one, j->images, 0, b, 1));               /* [1,3,H,W] */
        TRY(j->fn(slot, j->m, one, b, j->ctx));
        dt_free(one);
        one = NULL;
    }
done:
    dt_free(one);
    return st;
}

/* streams > 0: the images in min(B, streams) concurrent streams on threads of their own, each image
 * with threads_each intra-op threads (and OpenBLAS threads), whatever the batch's size, so that an
 * image's bits do not depend on its batch here either; streams 0: one after the other on the
 * caller's threads. */
static drdc_status per_image(dt_tensor *const *outs, int n_outs, const drdc_model *m, dt_tensor images,
                             one_image_fn fn, void *ctx, int streams, int threads_each) {
    int64_t B = 0;
    drdc_status st = dt_size(&B, images, 0);
    if (st) return st;
    if (B == 1 && !streams) return fn(outs, m, images, 0, ctx);
    per_image_job j = {outs, n_outs, m, images, fn, ctx, B, streams < 1 ? 1 : streams < B ? streams : (int)B, NULL};
    j.parts = calloc((size_t)(n_outs * B), sizeof *j.parts);
    if (!j.parts) return drdc_fail(DRDC_ERR_NOMEM, "out of memory for a batch of %lld images", (long long)B);
    if (streams) {
        const int blas = dt_set_blas_threads(threads_each);
        st = dt_run_concurrently(j.streams, threads_each, per_image_stream, &j);
        if (blas) dt_set_blas_threads(blas);
    } else {
        st = per_image_stream(&j, 0);
    }
    for (int i = 0; i < n_outs && !st; i++)
        if (outs[i]) st = dt_cat(outs[i], &j.parts[i * B], (int)B, 0);
    for (int64_t k = 0; k < n_outs * B; k++) dt_free(j.parts[k]);
    free(j.parts);
    return st;
}

/* The base model's streams on the CPU: min(threads, infer.batch) images at a time, each on
 * threads / streams intra-op threads. One image of the shared config is too small for two OpenMP
 * threads (drdc bench --batch 1, 2 cores: backbone + transformer 44 ms on two threads against 42 on
 * one in fp32, 68 against 32 in bf16), so two images side by side, one thread each, take about as
 * long as one image on both threads. Fixed by the config and --threads, not by the batch: an image
 * alone runs on the same threads as in a full batch. On a GPU: one image after the other (0). */
static int base_streams(const drdc_model *m, int *threads_each) {
    const int threads = dt_get_num_threads();
    int streams = m->cfg.infer.batch < threads ? m->cfg.infer.batch : threads;
    if (streams < 1) streams = 1;
    *threads_each = threads / streams;
    return m->dev.type == DT_CPU ? streams : 0;
}

/* infer.precision: bf16 runs the networks (backbone, base transformer, U-Net) under bf16 autocast
 * on the model's device; their outputs, the maps and the scores stay float32. */
static int use_bf16(const drdc_model *m) { return strcmp(m->cfg.infer.precision, "bf16") == 0; }

drdc_status drdc_model_prepare(drdc_model *m) {
    if (m->refiner_steps <= 0) return DRDC_OK;
    return drdc_unet_prepare(&m->refiner, use_bf16(m) ? DT_BF16 : DT_F32);
}

/* Turns the precision's autocast on (on = 1) or off around one network stage; a no-op for fp32. */
static drdc_status precision(const drdc_model *m, int on) {
    return use_bf16(m) ? dt_autocast_inference(m->dev, on) : DRDC_OK;
}

static drdc_status base_one(dt_tensor *const *outs, const drdc_model *m, dt_tensor images, int64_t index, void *ctx) {
    (void)index;
    (void)ctx;
    dt_tensor *map = outs[0], *score = outs[1];
    *map = *score = NULL;
    int S = m->cfg.data.image_size;
    int prev = dt_set_grad_enabled(0);
    drdc_status st = dt_scope_begin();
    if (st) {
        dt_set_grad_enabled(prev);
        return st;
    }
    dt_tensor feats, rec;
    TRY(precision(m, 1));
    st = drdc_backbone_features(&feats, &m->backbone, images);     /* [B,C,S/16,S/16] */
    if (!st) st = drdc_base_forward(&rec, &m->base, feats, 0, NULL); /* [B,C,S/16,S/16] */
    drdc_status off = precision(m, 0);
    if (!st) st = off;
    if (st) goto done;
    TRY(base_map_scales(map, rec, feats, &m->cfg.infer, S));       /* [B,1,S,S] */
    TRY(drdc_fusion_image_score(score, *map, m->cfg.infer.pool));  /* [B] */
    TRY(dt_scope_keep(*map));
    TRY(dt_scope_keep(*score));
done:;
    drdc_status end = dt_scope_end();   /* frees the temporaries (and the outputs unless kept) */
    if (!st) st = end;
    dt_set_grad_enabled(prev);
    if (st) {
        dt_free(*map);
        dt_free(*score);
        *map = *score = NULL;
    }
    return st;
}

drdc_status drdc_model_base(dt_tensor *map, dt_tensor *score, const drdc_model *m, dt_tensor images) {
    *map = *score = NULL;
    dt_tensor *const outs[2] = {map, score};
    int threads_each = 1;
    const int streams = base_streams(m, &threads_each);
    return per_image(outs, 2, m, images, base_one, NULL, streams, threads_each);
}

/* images [B,3,R,R] -> [B,3,size,size]: area when shrinking, bilinear when enlarging (a new
 * handle on the same tensor when the size is already right). */
static drdc_status resize_images(dt_tensor *out, dt_tensor images, int size) {
    int64_t shape[4];
    drdc_status st = dt_shape(shape, 4, images);
    if (st) return st;
    if (shape[2] == size && shape[3] == size) return dt_detach(out, images);
    return dt_interpolate(out, images, size, size, shape[2] > size ? DT_INTERP_AREA : DT_INTERP_BILINEAR);
}

void drdc_model_flops(drdc_pass_flops *f, const drdc_model *m, int64_t images) {
    const drdc_infer_config *ic = &m->cfg.infer;
    const int64_t R = m->cfg.refiner.image_size;
    f->unet_runs = images * ic->K * ic->n_grids;
    f->backbone = drdc_backbone_flops(&m->backbone, images);
    f->base = drdc_base_flops(&m->base, images);
    f->unet_call = drdc_unet_flops(&m->cfg.refiner, f->unet_runs, R, R);
    f->refine = ic->steps * f->unet_call;
    f->drdc = f->backbone + f->base + f->refine;
}

uint64_t drdc_model_image_seed(const drdc_model *m, const float *pixels, size_t n) {
    uint64_t state = drdc_seed(m->cfg.train.seed, DRDC_SEED_INFER) ^ drdc_fnv1a64(DRDC_FNV_OFFSET, pixels, n * sizeof *pixels);
    return drdc_splitmix64(&state);
}

/* The inpainting draws of every image of a batch, each from its own generator seeded by
 * drdc_model_image_seed (so an image's maps do not depend on its batch), as the given randomness
 * of ro: masks [B,G,K,1,R,R], z and eps0 [B,G,K,3,R,R], eps_known [S,B,G,K,3,R,R]. Per image, in
 * this order: for each grid one randperm (drdc_inpaint_masks), then z [G,K,3,R,R], eps0 [G,K,3,R,R]
 * and eps' [S,G,K,3,R,R], all N(0,1) on the CPU, moved to the images' device. Runs in the caller's
 * scope (the handles are its temporaries). */
static drdc_status image_draws(drdc_refine_opts *ro, const drdc_model *m, dt_tensor images) {
    int64_t sh[4];
    drdc_status st = dt_shape(sh, 4, images);
    if (st) return st;
    const int64_t B = sh[0], R = sh[2], G = ro->n_grids, K = ro->K, S = ro->sampler.steps;
    const size_t plane = (size_t)(3 * R * R);
    const dt_device cpu = {DT_CPU, 0}, dev = dt_device_of(images);
    dt_tensor host = NULL, *per[4] = {NULL, NULL, NULL, NULL};
    dt_generator gen = NULL;
    float *px = malloc(sizeof(float) * plane * (size_t)B);
    for (int i = 0; i < 4; i++) per[i] = calloc((size_t)B, sizeof(dt_tensor));
    if (!px || !per[0] || !per[1] || !per[2] || !per[3]) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory for the inpainting draws");
        goto done;
    }
    TRY(dt_to_device(&host, images, cpu));
    TRY(dt_copy_to_host(host, px, sizeof(float) * plane * (size_t)B));   /* [B,3,R,R] */
    const int64_t nshape[5] = {G, K, 3, R, R}, kshape[6] = {S, G, K, 3, R, R};
    for (int64_t b = 0; b < B; b++) {
        dt_tensor grid_masks[DRDC_MAX_LIST] = {NULL};
        TRY(dt_generator_new(&gen, drdc_model_image_seed(m, px + (size_t)b * plane, plane)));
        for (int64_t g = 0; g < G; g++)
            TRY(drdc_inpaint_masks(&grid_masks[g], (int)R, (int)R, ro->grids[g], (int)K, gen, cpu)); /* [K,1,R,R] */
        TRY(dt_stack(&per[0][b], grid_masks, (int)G, 0));                 /* [G,K,1,R,R] */
        TRY(dt_randn(&per[1][b], nshape, 5, DT_F32, cpu, gen));           /* z */
        TRY(dt_randn(&per[2][b], nshape, 5, DT_F32, cpu, gen));           /* eps0 */
        TRY(dt_randn(&per[3][b], kshape, 6, DT_F32, cpu, gen));           /* eps' per step */
        dt_generator_free(gen);
        gen = NULL;
    }
    dt_tensor all[4];
    TRY(dt_stack(&all[0], per[0], (int)B, 0));    /* [B,G,K,1,R,R] */
    TRY(dt_stack(&all[1], per[1], (int)B, 0));    /* [B,G,K,3,R,R] */
    TRY(dt_stack(&all[2], per[2], (int)B, 0));    /* [B,G,K,3,R,R] */
    TRY(dt_stack(&all[3], per[3], (int)B, 1));    /* [S,B,G,K,3,R,R] */
    dt_tensor *dst[4] = {&ro->masks, &ro->z, &ro->eps0, &ro->eps_known};
    for (int i = 0; i < 4; i++) TRY(dt_to_device(dst[i], all[i], dev));
done:
    dt_generator_free(gen);
    free(px);
    for (int i = 0; i < 4; i++) free(per[i]);   /* the handles belong to the caller's scope */
    return st;
}

drdc_status drdc_model_upload(dt_tensor *out, const drdc_model *m, const float *data, int n, int c, int size) {
    *out = NULL;
    const int64_t shape[4] = {n, c, size, size};
    dt_tensor host = NULL;
    drdc_status st = DRDC_OK;
    TRY(dt_from_host(&host, data, DT_F32, shape, 4, (dt_device){DT_CPU, 0}));
    TRY(dt_to_device(out, host, m->dev));
done:
    dt_free(host);
    return st;
}

drdc_status drdc_model_refiner_range(dt_tensor *x, dt_tensor images) {
    dt_tensor x2 = NULL;
    drdc_status st = DRDC_OK;
    TRY(dt_mul_scalar(&x2, images, 2.0));
    TRY(dt_add_scalar(x, x2, -1.0));
done:
    dt_free(x2);
    return st;
}

int drdc_model_input_size(const drdc_model *m, int with_refiner) {
    int S = m->cfg.data.image_size, R = m->cfg.refiner.image_size;
    return with_refiner && R > S ? R : S;
}

typedef struct drdc_one_ctx {
    int calibrating;
    drdc_fusion_opts fo;
    dt_tensor bmap, bscore;    /* the whole batch's base maps [B,1,S,S] and scores [B] */
    drdc_stage_times *times;   /* summed over the images; NULL: not timed */
} drdc_one_ctx;

/* The refinement and fusion of images [n,3,H,W] (index: the first one's place in the batch, for
 * its base maps in ctx). */
static drdc_status drdc_one(dt_tensor *const *outs_in, const drdc_model *m, dt_tensor images, int64_t index,
                            void *ctx_) {
    const drdc_one_ctx *ctx = ctx_;
    const int calibrating = ctx->calibrating;
    const drdc_fusion_opts *fo = &ctx->fo;
    drdc_stage_times *times = ctx->times;
    dt_tensor *outs[5];
    for (int i = 0; i < 5; i++) outs[i] = outs_in[i];
    for (int i = 0; i < 5; i++)
        if (outs[i]) *outs[i] = NULL;
    int R = m->cfg.refiner.image_size;
    drdc_refine_opts ro;
    drdc_refine_opts_from_config(&ro, &m->cfg.infer);
    int64_t n = 0;
    int prev = dt_set_grad_enabled(0);
    drdc_status st = dt_scope_begin();
    if (st) goto out;
    dt_tensor img_r, bmap, bscore, bmap_r, x, x_hat, hd, ht = NULL, sc = NULL;
    double t1 = drdc_now_seconds(), t2;
    TRY(dt_size(&n, images, 0));
    TRY(dt_narrow(&bmap, ctx->bmap, 0, index, n));                  /* [n,1,S,S] */
    TRY(dt_narrow(&bscore, ctx->bscore, 0, index, n));              /* [n] */
    TRY(resize_images(&bmap_r, bmap, R));                           /* [n,1,R,R] */
    TRY(resize_images(&img_r, images, R));                          /* [n,3,R,R] in [0,1] */
    TRY(image_draws(&ro, m, img_r));                                /* these images' masks and noise */
    TRY(drdc_model_refiner_range(&x, img_r));                       /* [n,3,R,R] in [-1,1] */
    TRY(precision(m, 1));
    st = drdc_diffusion_refine(&x_hat, NULL, NULL, &m->schedule, drdc_unet_eps, (void *)&m->refiner, x, &ro);
                                                                    /* [n,G,steps,3,R,R] */
    drdc_status off = precision(m, 0);
    if (!st) st = off;
    if (st) goto done;
    if (times) TRY(dt_synchronize(m->dev));
    t2 = drdc_now_seconds();
    TRY(drdc_fusion_diffusion_heat(&hd, x, x_hat, fo));             /* [n,1,R,R] eqs. 14-16 */
    if (!calibrating) TRY(drdc_fusion_final(&ht, &sc, hd, bmap_r, fo));  /* eq. 17, [n,1,R,R], [n] */
    if (times) {
        TRY(dt_synchronize(m->dev));
        times->refine_s += t2 - t1;
        times->fusion_s += drdc_now_seconds() - t2;
    }
    dt_tensor keep[5] = {ht, sc, bmap_r, bscore, hd};
    for (int i = 0; i < 5; i++)
        if (outs[i] && keep[i]) {
            TRY(dt_scope_keep(keep[i]));
            *outs[i] = keep[i];
        }
done:;
    drdc_status end = dt_scope_end();
    if (!st) st = end;
out:
    dt_set_grad_enabled(prev);
    if (st)
        for (int i = 0; i < 5; i++)
            if (outs[i]) {
                dt_free(*outs[i]);
                *outs[i] = NULL;
            }
    return st;
}

drdc_status drdc_model_drdc(dt_tensor *heat, dt_tensor *score, dt_tensor *base_map, dt_tensor *base_score,
                            dt_tensor *h_diff, const drdc_model *m, dt_tensor images, int calibrating,
                            drdc_stage_times *times) {
    dt_tensor *const outs[5] = {heat, score, base_map, base_score, h_diff};
    for (int i = 0; i < 5; i++)
        if (outs[i]) *outs[i] = NULL;
    if (times) memset(times, 0, sizeof *times);
    if (m->refiner_steps <= 0)
        return drdc_fail(DRDC_ERR_INPUT, "this model has no trained diffusion refiner (train stage 2, or use "
                         "--method base)");
    drdc_one_ctx ctx = {.calibrating = calibrating, .times = times};
    drdc_status st = drdc_fusion_opts_from_config(&ctx.fo, &m->cfg.infer);
    if (st) return st;
    if (ctx.fo.standardize && !calibrating && !m->stats.drdc_ready)
        return drdc_fail(DRDC_ERR_INPUT, "the model is not calibrated for DRDC (normal statistics missing); "
                         "finish 'drdc train' or set infer.standardize=none");
    ctx.fo.base_stats = (drdc_norm_stats){m->stats.fuse_base_mean, m->stats.fuse_base_std};
    ctx.fo.diff_stats = (drdc_norm_stats){m->stats.diff_mean, m->stats.diff_std};
    /* the base maps of the whole batch first (on the CPU its images side by side, base_streams),
     * then each image's refinement; infer.batch_refiner: the whole batch's inpainting runs share
     * each U-Net call (faster; the maps then depend on the batch in the last bits) */
    dt_tensor img_s = NULL;
    const double t0 = drdc_now_seconds();
    TRY(resize_images(&img_s, images, m->cfg.data.image_size));              /* [B,3,S,S] */
    TRY(drdc_model_base(&ctx.bmap, &ctx.bscore, m, img_s));                  /* [B,1,S,S], [B] */
    if (times) {
        TRY(dt_synchronize(m->dev));
        times->base_s = drdc_now_seconds() - t0;
    }
    if (m->cfg.infer.batch_refiner)
        st = drdc_one(outs, m, images, 0, &ctx);
    else
        st = per_image(outs, 5, m, images, drdc_one, &ctx, 0, 0);
done:
    dt_free(img_s);
    dt_free(ctx.bmap);
    dt_free(ctx.bscore);
    return st;
}
