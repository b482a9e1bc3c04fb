/* train.c: stage-1 training loop, checkpoints and resume, validation calibration (train.h). */
#include "drdc/train.h"
#include "drdc/fsutil.h"
#include "drdc/loader.h"
#include "drdc/progress.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRY(call) do { st = (call); if (st) goto done; } while (0)
#define MAX_PARAMS 4096

void drdc_checkpoint_path(char *out, size_t cap, const char *out_dir) {
    snprintf(out, cap, "%s/checkpoint.safetensors", out_dir);
}

/* ---- checkpoint: model + optimizer + generator + counters -------------------------------- */

static drdc_status tensor_to_writer(drdc_st_writer *w, const char *name, dt_tensor t) {
    int64_t shape[8];
    int nd = dt_ndim(t);
    drdc_status st = dt_shape(shape, 8, t);
    if (st) return st;
    dt_dtype dt = dt_dtype_of(t);
    drdc_st_dtype sdt = dt == DT_U8 ? DRDC_ST_U8 : dt == DT_I64 ? DRDC_ST_I64 : DRDC_ST_F32;
    dt_tensor conv = NULL;
    if (sdt == DRDC_ST_F32 && dt != DT_F32) {
        st = dt_to_dtype(&conv, t, DT_F32);
        if (st) return st;
    }
    size_t nbytes = (size_t)dt_numel(t) * drdc_st_dtype_size(sdt);
    void *buf = malloc(nbytes ? nbytes : 1);
    if (!buf) st = drdc_fail(DRDC_ERR_NOMEM, "out of memory saving %s", name);
    if (!st) st = dt_copy_to_host(conv ? conv : t, buf, nbytes);
    if (!st) st = drdc_st_writer_add(w, name, sdt, nd, shape, buf, nbytes);
    free(buf);
    dt_free(conv);
    return st;
}

static drdc_status save_checkpoint(const drdc_model *m, dt_optimizer opt, dt_generator gen, const char *out_dir) {
    drdc_st_writer *w = NULL;
    dt_tensor rng = NULL;
    char path[4096], name[128];
    drdc_status st = drdc_st_writer_new(&w);
    if (st) return st;
    TRY(drdc_model_write(m, w));
    for (int i = 0; i < dt_adamw_num_params(opt); i++) {
        dt_tensor a = NULL, b = NULL;
        int64_t step = 0;
        TRY(dt_adamw_state_get(&a, &b, &step, opt, i));
        if (a) {
            snprintf(name, sizeof name, "opt.base.%d.exp_avg", i);
            st = tensor_to_writer(w, name, a);
            snprintf(name, sizeof name, "opt.base.%d.exp_avg_sq", i);
            if (!st) st = tensor_to_writer(w, name, b);
            snprintf(name, sizeof name, "opt.base.%d.step", i);
            if (!st) st = drdc_st_writer_add(w, name, DRDC_ST_I64, 0, NULL, &step, sizeof step);
        }
        dt_free(a);
        dt_free(b);
        if (st) goto done;
    }
    TRY(dt_generator_get_state(&rng, gen));
    TRY(tensor_to_writer(w, "rng.base", rng));
    drdc_checkpoint_path(path, sizeof path, out_dir);
    TRY(drdc_st_writer_write(w, path));
done:
    dt_free(rng);
    drdc_st_writer_free(w);
    return st;
}

static drdc_status host_tensor(dt_tensor *out, const drdc_st_tensor *t, dt_device dev) {
    dt_dtype dt = t->dtype == DRDC_ST_U8 ? DT_U8 : t->dtype == DRDC_ST_I64 ? DT_I64 : DT_F32;
    if (t->dtype != DRDC_ST_U8 && t->dtype != DRDC_ST_I64 && t->dtype != DRDC_ST_F32)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%s' has an unexpected dtype", t->file, t->name);
    /* copy into an aligned buffer: safetensors data is only as aligned as the file */
    void *buf = malloc(t->nbytes ? t->nbytes : 1);
    if (!buf) return drdc_fail(DRDC_ERR_NOMEM, "out of memory");
    memcpy(buf, t->data, t->nbytes);
    drdc_status st = dt_from_host(out, buf, dt, t->shape, t->ndim, dev);
    free(buf);
    return st;
}

/* Restores optimizer moments and the generator from an open checkpoint. */
static drdc_status restore_train_state(const drdc_st_file *f, dt_optimizer opt, dt_generator gen, dt_device dev) {
    char name[128];
    drdc_status st = DRDC_OK;
    for (int i = 0; i < dt_adamw_num_params(opt); i++) {
        snprintf(name, sizeof name, "opt.base.%d.exp_avg", i);
        const drdc_st_tensor *ta = drdc_st_find(f, name);
        if (!ta) continue;   /* the parameter had not been updated yet */
        const drdc_st_tensor *tb = NULL, *ts = NULL;
        snprintf(name, sizeof name, "opt.base.%d.exp_avg_sq", i);
        TRY(drdc_st_get(f, name, &tb));
        snprintf(name, sizeof name, "opt.base.%d.step", i);
        TRY(drdc_st_get(f, name, &ts));
        int64_t step;
        if (ts->nbytes != sizeof step) return drdc_fail(DRDC_ERR_FORMAT, "%s: bad %s", drdc_st_source(f), name);
        memcpy(&step, ts->data, sizeof step);
        dt_tensor a = NULL, b = NULL;
        st = host_tensor(&a, ta, dev);
        if (!st) st = host_tensor(&b, tb, dev);
        if (!st) st = dt_adamw_state_set(opt, i, a, b, step);
        dt_free(a);
        dt_free(b);
        if (st) return drdc_error_context(st, "%s: optimizer state %d", drdc_st_source(f), i);
    }
    const drdc_st_tensor *tr = NULL;
    TRY(drdc_st_get(f, "rng.base", &tr));
    dt_tensor rng = NULL;
    TRY(host_tensor(&rng, tr, (dt_device){DT_CPU, 0}));
    st = dt_generator_set_state(gen, rng);
    dt_free(rng);
done:
    return st;
}

/* The config a run may change on resume: only how long it trains. */
static void training_length_from(drdc_config *dst, const drdc_config *src) {
    dst->base.epochs = src->base.epochs;
    dst->refiner.steps = src->refiner.steps;
    memcpy(dst->train.out, src->train.out, sizeof dst->train.out);
    dst->data.workers = src->data.workers;
    memcpy(dst->data.root, src->data.root, sizeof dst->data.root);
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
    drdc_config want = *cfg;
    training_length_from(&m->cfg, &want);
    char *a = drdc_config_to_json(&m->cfg), *b = drdc_config_to_json(&want);
    int same = a && b && strcmp(a, b) == 0;
    free(a);
    free(b);
    if (!same) {
        drdc_model_free(m);
        return drdc_fail(DRDC_ERR_INPUT, "%s: this checkpoint was trained with another config (see its metadata "
                         "'config'); resume with the same --config and --set options, or train into a new --out",
                         path);
    }
    return DRDC_OK;
}

/* ---- stage 1 -------------------------------------------------------------------------------- */

static drdc_status base_step(const drdc_model *m, dt_optimizer opt, dt_generator gen, const dt_tensor *params,
                             int n_params, const drdc_batch *b, double *loss_out) {
    int S = b->size;
    const int64_t shape[4] = {b->n, 3, S, S};
    dt_tensor host, images, feats, rec, loss;
    drdc_status st = dt_scope_begin();
    if (st) return st;
    TRY(dt_from_host(&host, b->images, DT_F32, shape, 4, (dt_device){DT_CPU, 0}));
    TRY(dt_to_device(&images, host, m->dev));                       /* [B,3,S,S] */
    int prev = dt_set_grad_enabled(0);
    st = drdc_backbone_features(&feats, &m->backbone, images);      /* [B,C,S/16,S/16], frozen */
    dt_set_grad_enabled(prev);
    if (st) goto done;
    TRY(drdc_uniad_forward(&rec, &m->base, feats, 1, gen));         /* [B,C,S/16,S/16], jittered input */
    TRY(drdc_uniad_loss(&loss, rec, feats));                        /* MSE against clean features */
    TRY(dt_item(loss_out, loss));
    if (!isfinite(*loss_out)) {
        st = drdc_fail(DRDC_ERR_NUMERIC, "the base loss became %g at epoch %d, batch %d; stopping, the last "
                       "checkpoint is kept (lower base.lr or check the input images)", *loss_out, b->epoch,
                       b->batch_index);
        goto done;
    }
    TRY(dt_zero_grad(params, n_params));
    TRY(dt_backward(loss));
    if (m->cfg.base.clip > 0) TRY(dt_clip_grad_norm(params, n_params, m->cfg.base.clip, NULL));
    TRY(dt_adamw_step(opt));
done:
    dt_scope_end();
    return st;
}

drdc_status drdc_train_base(drdc_model *m, const drdc_sample_list *train, const drdc_train_options *o) {
    const drdc_base_config *bc = &m->cfg.base;
    dt_tensor params[MAX_PARAMS];
    int n_params = 0;
    dt_optimizer opt = NULL;
    dt_generator gen = NULL;
    drdc_loader *ld = NULL;
    drdc_status st;
    TRY(drdc_params_trainable(&m->base.params, params, MAX_PARAMS, &n_params));
    TRY(dt_adamw_new(&opt, 0.9, 0.999, 1e-8));
    TRY(dt_adamw_add_group(opt, params, n_params, bc->lr, bc->weight_decay));
    TRY(dt_generator_new(&gen, (uint64_t)m->cfg.train.seed + 2));
    if (o->resume && m->base_epochs > 0) {
        char path[4096];
        drdc_st_file *f = NULL;
        drdc_checkpoint_path(path, sizeof path, o->out_dir);
        TRY(drdc_st_open(&f, path));
        st = restore_train_state(f, opt, gen, m->dev);
        drdc_st_close(f);
        if (st) goto done;
    }
    if (m->base_epochs >= bc->epochs) {
        if (!o->quiet) fprintf(stderr, "train base: %d of %d epochs already done\n", m->base_epochs, bc->epochs);
        goto done;
    }
    drdc_loader_options lo;
    drdc_loader_options_default(&lo);
    lo.image_size = m->cfg.data.image_size;
    lo.batch_size = bc->batch;
    lo.workers = m->cfg.data.workers;
    lo.shuffle = 1;
    lo.seed = (uint64_t)m->cfg.train.seed;
    TRY(drdc_loader_create(&ld, train->items, train->n, &lo));
    int per_epoch = drdc_loader_batches_per_epoch(ld);
    drdc_progress prog;
    drdc_progress_begin(&prog, "train base (images)", (int64_t)(bc->epochs - m->base_epochs) * train->n, o->quiet);
    int64_t images_done = 0, steps_since_ckpt = 0;
    double loss_sum = 0;
    for (int epoch = m->base_epochs; epoch < bc->epochs; epoch++) {
        /* StepLR: lr * gamma^(epoch / lr_step) */
        double lr = bc->lr * pow(bc->lr_gamma, bc->lr_step > 0 ? epoch / bc->lr_step : 0);
        TRY(dt_adamw_set_lr(opt, 0, lr));
        TRY(drdc_loader_start_epoch(ld, epoch));
        loss_sum = 0;
        int steps = 0;
        const drdc_batch *b;
        for (;;) {
            TRY(drdc_loader_next(ld, &b));
            if (!b) break;
            double loss;
            st = base_step(m, opt, gen, params, n_params, b, &loss);
            if (st) {
                drdc_progress_end(&prog);
                goto done;
            }
            loss_sum += loss;
            steps++;
            steps_since_ckpt++;
            images_done += b->n;
            char extra[128];
            snprintf(extra, sizeof extra, "epoch %d/%d, batch %d/%d, loss %.5f, lr %.2g", epoch + 1, bc->epochs, steps,
                     per_epoch, loss, lr);
            drdc_progress_update(&prog, images_done, extra);
        }
        m->base_epochs = epoch + 1;
        if (!o->quiet) {
            drdc_progress_end(&prog);
            fprintf(stderr, "train base: epoch %d/%d mean loss %.6f\n", epoch + 1, bc->epochs,
                    steps ? loss_sum / steps : 0.0);
        }
        if (steps_since_ckpt >= m->cfg.train.checkpoint_every || epoch + 1 == bc->epochs) {
            TRY(save_checkpoint(m, opt, gen, o->out_dir));
            steps_since_ckpt = 0;
        }
    }
done:
    drdc_loader_free(ld);
    dt_optimizer_free(opt);
    dt_generator_free(gen);
    return st;
}

/* ---- calibration -------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile of sorted values (linear interpolation, numpy's default). */
static double quantile(const double *sorted, int n, double q) {
    if (n == 0) return 0;
    double pos = q * (n - 1);
    int i = (int)floor(pos);
    if (i >= n - 1) return sorted[n - 1];
    return sorted[i] + (pos - i) * (sorted[i + 1] - sorted[i]);
}

drdc_status drdc_calibrate(drdc_model *m, const drdc_sample_list *val, int quiet) {
    if (val->n == 0)
        return drdc_fail(DRDC_ERR_INPUT, "no validation images to calibrate on (data.val_fraction is 0 or the "
                         "categories have fewer than 2 training images)");
    drdc_loader *ld = NULL;
    double *scores = malloc(sizeof(double) * (size_t)val->n);
    float *mapbuf = NULL;
    double sum = 0, sumsq = 0;
    int64_t count = 0;
    int k = 0, S = m->cfg.data.image_size;
    drdc_status st = scores ? DRDC_OK : drdc_fail(DRDC_ERR_NOMEM, "out of memory");
    if (st) return st;
    drdc_loader_options lo;
    drdc_loader_options_default(&lo);
    lo.image_size = S;
    lo.batch_size = m->cfg.infer.batch;
    lo.workers = m->cfg.data.workers;
    lo.shuffle = 0;
    TRY(drdc_loader_create(&ld, val->items, val->n, &lo));
    TRY(drdc_loader_start_epoch(ld, 0));
    mapbuf = malloc(sizeof(float) * ((size_t)lo.batch_size * S * S + (size_t)lo.batch_size));
    if (!mapbuf) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory");
        goto done;
    }
    drdc_progress prog;
    drdc_progress_begin(&prog, "calibrate (validation images)", val->n, quiet);
    const drdc_batch *b;
    for (;;) {
        TRY(drdc_loader_next(ld, &b));
        if (!b) break;
        const int64_t shape[4] = {b->n, 3, S, S};
        dt_tensor host = NULL, images = NULL, map = NULL, score = NULL;
        float *sc = mapbuf + (size_t)lo.batch_size * S * S;   /* [B] scores after the maps */
        st = dt_from_host(&host, b->images, DT_F32, shape, 4, (dt_device){DT_CPU, 0});
        if (!st) st = dt_to_device(&images, host, m->dev);
        if (!st) st = drdc_model_base(&map, &score, m, images);
        if (!st) st = dt_copy_to_host(map, mapbuf, sizeof(float) * (size_t)b->n * S * S);
        if (!st) st = dt_copy_to_host(score, sc, sizeof(float) * (size_t)b->n);
        dt_free(host);
        dt_free(images);
        dt_free(map);
        dt_free(score);
        if (st) goto done;
        for (size_t i = 0; i < (size_t)b->n * S * S; i++) {
            sum += mapbuf[i];
            sumsq += (double)mapbuf[i] * mapbuf[i];
        }
        count += (int64_t)b->n * S * S;
        for (int i = 0; i < b->n; i++) scores[k++] = sc[i];
        drdc_progress_update(&prog, k, NULL);
    }
    drdc_progress_end(&prog);
    qsort(scores, (size_t)k, sizeof *scores, cmp_double);
    double mean = sum / (double)count, var = sumsq / (double)count - mean * mean;
    m->stats.base_mean = mean;
    m->stats.base_std = var > 0 ? sqrt(var) : 0;
    m->stats.base_threshold = quantile(scores, k, m->cfg.infer.threshold_quantile);
    m->stats.score_lo = mean;
    m->stats.score_hi = m->stats.base_threshold > mean ? mean + 2.0 * (m->stats.base_threshold - mean)
                                                       : mean + 6.0 * m->stats.base_std;
    m->stats.n_val_images = k;
    m->stats.ready = 1;
done:
    drdc_loader_free(ld);
    free(scores);
    free(mapbuf);
    return st;
}
