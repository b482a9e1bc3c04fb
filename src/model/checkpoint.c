/* checkpoint.c: atomic training checkpoints and exact resume (see checkpoint.h). */
#include "drdc/model/checkpoint.h"
#include "drdc/core/fsutil.h"
#include "drdc/model/dist.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


void drdc_checkpoint_path(char *out, size_t cap, const char *out_dir) {
    snprintf(out, cap, "%s/checkpoint.safetensors", out_dir);
}

drdc_status drdc_tensor_to_writer(drdc_st_writer *w, const char *name, dt_tensor t) {
    int64_t shape[8];
    int nd = dt_ndim(t);
    drdc_status st = dt_shape(shape, 8, t);
    if (st) return st;
    dt_dtype dt = dt_dtype_of(t);
    drdc_st_dtype sdt = dt == DT_U8 ? DRDC_ST_U8 : dt == DT_I64 ? DRDC_ST_I64 : DRDC_ST_F32;
    dt_tensor conv = NULL;
    size_t nbytes = (size_t)dt_numel(t) * drdc_st_dtype_size(sdt);
    void *buf = NULL;
    if (sdt == DRDC_ST_F32 && dt != DT_F32) TRY(dt_to_dtype(&conv, t, DT_F32));
    if (!(buf = malloc(nbytes ? nbytes : 1))) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory saving %s", name);
        goto done;
    }
    TRY(dt_copy_to_host(conv ? conv : t, buf, nbytes));
    TRY(drdc_st_writer_add(w, name, sdt, nd, shape, buf, nbytes));
done:
    free(buf);
    dt_free(conv);
    return st;
}

drdc_status drdc_tensor_from_st(dt_tensor *out, const drdc_st_tensor *t, dt_device dev) {
    *out = NULL;
    if (t->dtype != DRDC_ST_U8 && t->dtype != DRDC_ST_I64 && t->dtype != DRDC_ST_F32)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected F32, U8 or I64", t->file, t->name,
                         drdc_st_dtype_name(t->dtype));
    dt_dtype dt = t->dtype == DRDC_ST_U8 ? DT_U8 : t->dtype == DRDC_ST_I64 ? DT_I64 : DT_F32;
    /* copy into an aligned buffer: safetensors data is only as aligned as the file */
    void *buf = malloc(t->nbytes ? t->nbytes : 1);
    if (!buf) return drdc_fail(DRDC_ERR_NOMEM, "out of memory loading %s", t->name);
    memcpy(buf, t->data, t->nbytes);
    drdc_status st = dt_from_host(out, buf, dt, t->shape, t->ndim, dev);
    free(buf);
    return st;
}

drdc_status drdc_checkpoint_save(const drdc_model *m, const drdc_stage_state *s, const char *out_dir) {
    drdc_st_writer *w = NULL;
    dt_tensor rng = NULL, moments[2] = {NULL, NULL};
    char path[4096], name[160], num[32];
    drdc_status st = DRDC_OK;
    TRY(drdc_st_writer_new(&w));
    TRY(drdc_model_write(m, w));
    TRY(drdc_st_writer_set_meta(w, "stage", s->stage));
    snprintf(num, sizeof num, "%d", s->epoch);
    TRY(drdc_st_writer_set_meta(w, "stage_epoch", num));
    snprintf(num, sizeof num, "%d", s->batch);
    TRY(drdc_st_writer_set_meta(w, "stage_batch", num));
    snprintf(num, sizeof num, "%d", drdc_dist_world());
    TRY(drdc_st_writer_set_meta(w, "world_size", num));
    TRY(drdc_st_writer_set_meta(w, "draws", "per-sample"));
    for (int i = 0; i < dt_adamw_num_params(s->opt); i++) {
        int64_t step = 0;
        dt_free_all(moments, 2);
        TRY(dt_adamw_state_get(&moments[0], &moments[1], &step, s->opt, i));
        if (!moments[0]) continue;   /* the parameter has not been updated yet */
        snprintf(name, sizeof name, "opt.%s.%d.exp_avg", s->stage, i);
        TRY(drdc_tensor_to_writer(w, name, moments[0]));
        snprintf(name, sizeof name, "opt.%s.%d.exp_avg_sq", s->stage, i);
        TRY(drdc_tensor_to_writer(w, name, moments[1]));
        snprintf(name, sizeof name, "opt.%s.%d.step", s->stage, i);
        TRY(drdc_st_writer_add(w, name, DRDC_ST_I64, 0, NULL, &step, sizeof step));
    }
    if (s->gen) {
        TRY(dt_generator_get_state(&rng, s->gen));
        snprintf(name, sizeof name, "rng.%s", s->stage);
        TRY(drdc_tensor_to_writer(w, name, rng));
    }
    if (s->extra) {
        snprintf(name, sizeof name, "%s_live.", s->stage);
        TRY(drdc_params_save(s->extra, w, name));
    }
    drdc_checkpoint_path(path, sizeof path, out_dir);
    /* test hook: DRDC_TEST_CHECKPOINT_DELAY_MS makes every checkpoint write that much slower (a slow
     * disk: the other ranks of a group must wait for it without timing out) */
    const char *delay = getenv("DRDC_TEST_CHECKPOINT_DELAY_MS");
    if (delay) usleep((useconds_t)(1000 * atoi(delay)));
    TRY(drdc_st_writer_write(w, path));
done:
    dt_free(rng);
    dt_free_all(moments, 2);
    drdc_st_writer_free(w);
    return st;
}

drdc_status drdc_checkpoint_restore(drdc_stage_state *s, drdc_params *extra, const drdc_st_file *f, dt_device dev,
                                    int *found) {
    const char *stage = drdc_st_meta(f, "stage"), *src = drdc_st_source(f);
    *found = stage && strcmp(stage, s->stage) == 0;
    if (!*found) return DRDC_OK;
    char name[160];
    drdc_status st = DRDC_OK;
    dt_tensor moments[2] = {NULL, NULL}, rng = NULL;
    for (int i = 0; i < dt_adamw_num_params(s->opt); i++) {
        snprintf(name, sizeof name, "opt.%s.%d.exp_avg", s->stage, i);
        const drdc_st_tensor *ta = drdc_st_find(f, name), *tb = NULL, *ts = NULL;
        if (!ta) continue;   /* the parameter had not been updated yet */
        snprintf(name, sizeof name, "opt.%s.%d.exp_avg_sq", s->stage, i);
        TRY(drdc_st_get(f, name, &tb));
        snprintf(name, sizeof name, "opt.%s.%d.step", s->stage, i);
        TRY(drdc_st_get(f, name, &ts));
        int64_t step;
        if (ts->nbytes != sizeof step) {
            st = drdc_fail(DRDC_ERR_FORMAT, "%s: tensor %s is not one I64", src, name);
            goto done;
        }
        memcpy(&step, ts->data, sizeof step);
        dt_free_all(moments, 2);
        TRY(drdc_tensor_from_st(&moments[0], ta, dev));
        TRY(drdc_tensor_from_st(&moments[1], tb, dev));
        st = dt_adamw_state_set(s->opt, i, moments[0], moments[1], step);
        if (st) {
            drdc_error_context(st, "%s: optimizer state %d", src, i);
            goto done;
        }
    }
    if (s->gen) {
        const drdc_st_tensor *tr = NULL;
        snprintf(name, sizeof name, "rng.%s", s->stage);
        TRY(drdc_st_get(f, name, &tr));
        TRY(drdc_tensor_from_st(&rng, tr, (dt_device){DT_CPU, 0}));
        TRY(dt_generator_set_state(s->gen, rng));
    }
    if (extra) {
        snprintf(name, sizeof name, "%s_live.", s->stage);
        TRY(drdc_params_load(extra, f, name, 0));
    }
    const char *e = drdc_st_meta(f, "stage_epoch"), *b = drdc_st_meta(f, "stage_batch");
    s->epoch = e ? atoi(e) : 0;
    s->batch = b ? atoi(b) : 0;
    const char *ws = drdc_st_meta(f, "world_size"), *dr = drdc_st_meta(f, "draws");
    s->world = ws && atoi(ws) > 0 ? atoi(ws) : 1;
    s->per_sample = dr && strcmp(dr, "per-sample") == 0;
done:
    dt_free_all(moments, 2);
    dt_free(rng);
    return st;
}

void drdc_checkpoint_say_resume(const drdc_stage_state *s, int lead) {
    if (!lead) return;
    if (s->world != drdc_dist_world())
        printf("resuming the %s stage of a run checkpointed by %d rank%s with %d: the same global batches and "
               "per-sample draws, so the same run (float sums are ordered differently: the weights match a %d-rank "
               "continuation within float rounding)\n", s->stage, s->world, s->world == 1 ? "" : "s",
               drdc_dist_world(), s->world);
    if (!s->per_sample)
        printf("note: this checkpoint was written by a drdc that drew the %s stage's noise from one generator per "
               "stage; it continues with per-sample draws, so it ends differently from what that drdc would give\n",
               s->stage);
    fflush(stdout);
}

/* What a run may change on resume: how long it trains and where the data and run are. */
static void resumable_from(drdc_config *dst, const drdc_config *src, int refiner_untrained) {
    /* inference settings never change the weights (the model is recalibrated after training) */
    dst->infer = src->infer;
    /* the refiner's design is free until it has trained a step */
    if (refiner_untrained) dst->refiner = src->refiner;
    dst->base.epochs = src->base.epochs;
    dst->refiner.steps = src->refiner.steps;
    dst->data.workers = src->data.workers;
    dst->train.checkpoint_every = src->train.checkpoint_every;
    dst->train.log_every = src->train.log_every;
    memcpy(dst->train.out, src->train.out, sizeof dst->train.out);
    memcpy(dst->data.root, src->data.root, sizeof dst->data.root);
    memcpy(dst->backbone.weights, src->backbone.weights, sizeof dst->backbone.weights);
}

/* The first "section.key" whose value differs between two config JSON texts, with both values. */
static void first_difference(const char *a, const char *b, char *out, size_t cap) {
    cJSON *ja = cJSON_Parse(a), *jb = cJSON_Parse(b);
    snprintf(out, cap, "?");
    for (cJSON *s = ja ? ja->child : NULL; s; s = s->next) {
        cJSON *t = cJSON_GetObjectItemCaseSensitive(jb, s->string);
        cJSON *keys = cJSON_IsObject(s) ? s->child : s;
        for (cJSON *k = keys; k; k = cJSON_IsObject(s) ? k->next : NULL) {
            cJSON *o = cJSON_IsObject(s) ? cJSON_GetObjectItemCaseSensitive(t, k->string) : t;
            if (o && cJSON_Compare(k, o, 1)) continue;
            char *va = cJSON_PrintUnformatted(k), *vb = o ? cJSON_PrintUnformatted(o) : NULL;
            if (cJSON_IsObject(s))
                snprintf(out, cap, "%s.%s is %s now but %s in the checkpoint", s->string, k->string, vb ? vb : "absent",
                         va ? va : "?");
            else
                snprintf(out, cap, "%s is %s now but %s in the checkpoint", s->string, vb ? vb : "absent", va ? va : "?");
            free(va);
            free(vb);
            goto done;
        }
    }
done:
    cJSON_Delete(ja);
    cJSON_Delete(jb);
}

drdc_status drdc_checkpoint_load_model(drdc_model *m, const char *out_dir, const drdc_config *cfg, dt_device dev) {
    char path[4096];
    drdc_checkpoint_path(path, sizeof path, out_dir);
    if (!drdc_is_file(path))
        return drdc_fail(DRDC_ERR_INPUT, "%s: no checkpoint to resume from (train without --resume to start)", path);
    drdc_st_file *f = NULL;
    drdc_status st = drdc_st_open(&f, path);
    if (st) return st;
    st = drdc_model_load_st(m, f, dev);
    drdc_st_close(f);
    if (st) return st;
    int rebuild_refiner = m->refiner_steps == 0;
    resumable_from(&m->cfg, cfg, rebuild_refiner);
    char *a = drdc_config_to_json(&m->cfg), *b = drdc_config_to_json(cfg), diff[512] = "?";
    int same = a && b && strcmp(a, b) == 0;
    if (!same && a && b) first_difference(a, b, diff, sizeof diff);
    free(a);
    free(b);
    if (!same) {
        drdc_model_free(m);
        return drdc_fail(DRDC_ERR_INPUT, "%s: this checkpoint was trained with another config (%s); resume with the "
                         "same --config and --set options, or train into a new --out", path, diff);
    }
    if (rebuild_refiner) {   /* the requested (possibly different) refiner, freshly initialised */
        drdc_status st2 = drdc_model_build_refiner(m);
        if (st2) {
            drdc_model_free(m);
            return drdc_error_context(st2, "%s: building the refiner", path);
        }
    }
    if (cfg->backbone.weights[0] && !m->backbone_pretrained) {
        drdc_model_free(m);
        return drdc_fail(DRDC_ERR_INPUT, "%s: this run was trained on a random backbone, but backbone.weights = %s "
                         "is given now; a resumed run keeps its checkpoint's backbone: resume without "
                         "backbone.weights, or train into a new --out", path, cfg->backbone.weights);
    }
    return DRDC_OK;
}
