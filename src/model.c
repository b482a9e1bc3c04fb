/* model.c: DRDC composed from its stages; model files (see model.h). */
#include "drdc/model.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRY(call) do { st = (call); if (st) goto done; } while (0)

drdc_status drdc_model_build(drdc_model *m, const drdc_config *cfg, dt_device dev) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->dev = dev;
    int S = cfg->data.image_size;
    drdc_status st = drdc_backbone_build(&m->backbone, &cfg->backbone, S, dev, (uint64_t)cfg->train.seed);
    if (st) return drdc_error_context(st, "building backbone %s", cfg->backbone.arch);
    if (cfg->backbone.weights[0]) {
        st = drdc_backbone_load(&m->backbone, cfg->backbone.weights);
        if (st) {
            drdc_model_free(m);
            return drdc_error_context(st, "backbone.weights");
        }
        m->backbone_pretrained = 1;
    }
    st = drdc_uniad_build(&m->base, &cfg->base, drdc_backbone_channels(&m->backbone), S / 16, S / 16, dev,
                          (uint64_t)cfg->train.seed + 1);
    if (st) {
        drdc_model_free(m);
        return drdc_error_context(st, "building the base transformer");
    }
    return DRDC_OK;
}

void drdc_model_free(drdc_model *m) {
    drdc_backbone_free(&m->backbone);
    drdc_uniad_free(&m->base);
    memset(m, 0, sizeof *m);
}

static char *stats_json(const drdc_model *m) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ready", m->stats.ready);
    cJSON_AddNumberToObject(o, "n_val_images", m->stats.n_val_images);
    cJSON_AddNumberToObject(o, "base_mean", m->stats.base_mean);
    cJSON_AddNumberToObject(o, "base_std", m->stats.base_std);
    cJSON_AddNumberToObject(o, "base_threshold", m->stats.base_threshold);
    cJSON_AddNumberToObject(o, "score_lo", m->stats.score_lo);
    cJSON_AddNumberToObject(o, "score_hi", m->stats.score_hi);
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
    const char *keys[] = {"n_val_images", "base_mean", "base_std", "base_threshold", "score_lo", "score_hi"};
    double vals[6];
    for (int i = 0; i < 6; i++) {
        cJSON *v = cJSON_GetObjectItem(o, keys[i]);
        if (!cJSON_IsNumber(v)) {
            cJSON_Delete(o);
            return drdc_fail(DRDC_ERR_FORMAT, "%s: metadata 'stats' lacks the number '%s'", path, keys[i]);
        }
        vals[i] = v->valuedouble;
    }
    m->stats.ready = cJSON_IsTrue(cJSON_GetObjectItem(o, "ready"));
    m->stats.n_val_images = (int)vals[0];
    m->stats.base_mean = vals[1];
    m->stats.base_std = vals[2];
    m->stats.base_threshold = vals[3];
    m->stats.score_lo = vals[4];
    m->stats.score_hi = vals[5];
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
    TRY(drdc_st_writer_set_meta(w, "backbone_pretrained", m->backbone_pretrained ? "1" : "0"));
    TRY(drdc_params_save(&m->backbone.params, w, "backbone."));
    TRY(drdc_params_save(&m->base.params, w, "base."));
done:
    free(config);
    free(stats);
    return st;
}

drdc_status drdc_model_save(const drdc_model *m, const char *path) {
    drdc_st_writer *w = NULL;
    drdc_status st = drdc_st_writer_new(&w);
    if (!st) st = drdc_model_write(m, w);
    if (!st) st = drdc_st_writer_write(w, path);
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
    drdc_status st = drdc_config_parse(&cfg, config, path);
    if (st) return drdc_error_context(st, "%s: the model's stored config", path);
    /* The weights come from this file; do not read the training-time weights path again. */
    cfg.backbone.weights[0] = '\0';
    st = drdc_model_build(m, &cfg, dev);
    if (st) return st;
    TRY(drdc_backbone_load_st(&m->backbone, f, "backbone."));
    TRY(drdc_params_load(&m->base.params, f, "base.", 1));
    TRY(parse_stats(m, stats, path));
    const char *epochs = drdc_st_meta(f, "base_epochs"), *pre = drdc_st_meta(f, "backbone_pretrained");
    m->base_epochs = epochs ? atoi(epochs) : 0;
    m->backbone_pretrained = pre && strcmp(pre, "1") == 0;
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

drdc_status drdc_image_score(dt_tensor *score, dt_tensor map, int pool) {
    int64_t shape[4];
    *score = NULL;
    drdc_status st = dt_shape(shape, 4, map);
    if (st) return st;
    int64_t p = pool;
    if (p > shape[2]) p = shape[2];
    if (p > shape[3]) p = shape[3];
    if (p < 1) p = 1;
    TRY(dt_scope_begin());
    dt_tensor pooled, flat;
    const int64_t dims[1] = {1};
    TRY(dt_avg_pool2d(&pooled, map, p, 1, 0, 1));            /* [B,1,H-p+1,W-p+1] */
    TRY(dt_flatten(&flat, pooled, 1, 3));                    /* [B,(H-p+1)(W-p+1)] */
    TRY(dt_amax(score, flat, dims, 1, 0));                   /* [B] */
    TRY(dt_scope_keep(*score));
done:
    if (dt_scope_depth() > 0) dt_scope_end();
    return st;
}

drdc_status drdc_model_base(dt_tensor *map, dt_tensor *score, const drdc_model *m, dt_tensor images) {
    *map = *score = NULL;
    int S = m->cfg.data.image_size;
    int prev = dt_set_grad_enabled(0);
    drdc_status st = dt_scope_begin();
    if (st) {
        dt_set_grad_enabled(prev);
        return st;
    }
    dt_tensor feats, rec, low;
    TRY(drdc_backbone_features(&feats, &m->backbone, images));     /* [B,C,S/16,S/16] */
    TRY(drdc_uniad_forward(&rec, &m->base, feats, 0, NULL));       /* [B,C,S/16,S/16] */
    TRY(drdc_uniad_anomaly_map(&low, rec, feats));                 /* [B,1,S/16,S/16] */
    TRY(dt_interpolate(map, low, S, S, DT_INTERP_BILINEAR_AC));    /* [B,1,S,S] */
    TRY(drdc_image_score(score, *map, m->cfg.infer.pool));         /* [B] */
    TRY(dt_scope_keep(*map));
    TRY(dt_scope_keep(*score));
done:
    dt_scope_end();
    dt_set_grad_enabled(prev);
    if (st) {
        dt_free(*map);
        dt_free(*score);
        *map = *score = NULL;
    }
    return st;
}
