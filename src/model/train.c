/* train.c: stage-1 training loop, checkpoints and resume, validation calibration (train.h). */
#include "drdc/model/train.h"
#include "drdc/model/checkpoint.h"
#include "drdc/stages/fusion.h"
#include "drdc/core/fsutil.h"
#include "drdc/data/loader.h"
#include "drdc/core/progress.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARAMS 4096


drdc_status drdc_optimise(double *loss_value, dt_tensor loss, const dt_tensor *params, int n_params, double clip,
                          dt_optimizer opt) {
    drdc_status st = dt_item(loss_value, loss);
    if (st) return st;
    if (!isfinite(*loss_value))
        return drdc_fail(DRDC_ERR_NUMERIC, "the loss became %g; stopping, the last checkpoint is kept", *loss_value);
    if ((st = dt_zero_grad(params, n_params)) || (st = dt_backward(loss))) return st;
    if (clip > 0 && (st = dt_clip_grad_norm(params, n_params, clip, NULL))) return st;
    return dt_adamw_step(opt);
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
    TRY(drdc_base_forward(&rec, &m->base, feats, 1, gen));         /* [B,C,S/16,S/16], jittered input */
    TRY(drdc_base_loss(&loss, rec, feats));                        /* MSE against clean features */
    TRY(drdc_optimise(loss_out, loss, params, n_params, m->cfg.base.clip, opt));
done:
    if (st == DRDC_ERR_NUMERIC)
        st = drdc_error_context(st, "base stage, epoch %d, batch %d (lower base.lr or check the input images)",
                                b->epoch, b->batch_index);
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
    drdc_stage_state ss = {"base", opt, gen, NULL, m->base_epochs, 0};
    if (o->resume && m->base_epochs > 0 && m->base_epochs < bc->epochs) {
        char path[4096];
        drdc_st_file *f = NULL;
        int found = 0;
        drdc_checkpoint_path(path, sizeof path, o->out_dir);
        TRY(drdc_st_open(&f, path));
        st = drdc_checkpoint_restore(&ss, NULL, f, m->dev, &found);
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
            ss.epoch = m->base_epochs;
            TRY(drdc_checkpoint_save(m, &ss, o->out_dir));
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

drdc_status drdc_calibrate(drdc_model *m, const drdc_sample_list *val, int quiet) {
    if (val->n == 0)
        return drdc_fail(DRDC_ERR_INPUT, "no validation images to calibrate on (data.val_fraction is 0 or the "
                         "categories have fewer than 2 training images)");
    int with_refiner = m->refiner_steps > 0, R = m->cfg.refiner.image_size;
    int size = drdc_model_input_size(m, with_refiner);
    drdc_loader *ld = NULL;
    double *base_scores = malloc(sizeof(double) * (size_t)val->n), *drdc_scores = malloc(sizeof(double) * (size_t)val->n);
    float *kept_base = NULL, *kept_diff = NULL, *sc = NULL;
    size_t n_base = 0, n_diff = 0;
    drdc_stats_acc acc_base, acc_diff, acc_drdc;
    drdc_stats_reset(&acc_base);
    drdc_stats_reset(&acc_diff);
    drdc_stats_reset(&acc_drdc);
    drdc_norm_stats ns_base, ns_diff, ns_drdc;
    int k = 0;
    drdc_status st = base_scores && drdc_scores ? DRDC_OK : drdc_fail(DRDC_ERR_NOMEM, "out of memory");
    if (st) goto done;
    drdc_loader_options lo;
    drdc_loader_options_default(&lo);
    lo.image_size = size;
    lo.batch_size = m->cfg.infer.batch;
    lo.workers = m->cfg.data.workers;
    lo.shuffle = 0;
    sc = malloc(sizeof(float) * (size_t)lo.batch_size);
    if (!sc) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory");
        goto done;
    }
    TRY(drdc_loader_create(&ld, val->items, val->n, &lo));
    TRY(drdc_loader_start_epoch(ld, 0));
    drdc_progress prog;
    drdc_progress_begin(&prog, "calibrate (validation images)", val->n, quiet);
    const drdc_batch *b;
    /* pass 1: base maps and scores, and the diffusion maps when there is a refiner */
    for (;;) {
        TRY(drdc_loader_next(ld, &b));
        if (!b) break;
        const int64_t shape[4] = {b->n, 3, size, size};
        dt_tensor host = NULL, images = NULL, map = NULL, score = NULL, hd = NULL;
        st = dt_from_host(&host, b->images, DT_F32, shape, 4, (dt_device){DT_CPU, 0});
        if (!st) st = dt_to_device(&images, host, m->dev);
        if (!st && with_refiner) st = drdc_model_drdc(NULL, NULL, &map, &score, &hd, m, images, 1, NULL);
        if (!st && !with_refiner) st = drdc_model_base(&map, &score, m, images);
        if (!st) st = drdc_stats_add(&acc_base, map);
        if (!st) st = dt_copy_to_host(score, sc, sizeof(float) * (size_t)b->n);
        if (!st && with_refiner) st = drdc_stats_add(&acc_diff, hd);
        if (!st && with_refiner) st = append_maps(&kept_base, &n_base, map);
        if (!st && with_refiner) st = append_maps(&kept_diff, &n_diff, hd);
        dt_free(host);
        dt_free(images);
        dt_free(map);
        dt_free(score);
        dt_free(hd);
        if (st) {
            drdc_progress_end(&prog);
            goto done;
        }
        for (int i = 0; i < b->n; i++) base_scores[k++] = sc[i];
        drdc_progress_update(&prog, k, NULL);
    }
    drdc_progress_end(&prog);
    TRY(drdc_stats_get(&acc_base, &ns_base));
    TRY(drdc_quantile(&m->stats.base_threshold, base_scores, k, m->cfg.infer.threshold_quantile));
    m->stats.base_mean = ns_base.mean;
    m->stats.base_std = ns_base.std;
    drdc_colour_range(&ns_base, m->stats.base_threshold, &m->stats.score_lo, &m->stats.score_hi);
    m->stats.n_val_images = k;
    m->stats.ready = 1;
    if (!with_refiner) goto done;
    /* pass 2: the fused maps with the statistics of pass 1 */
    TRY(drdc_stats_get(&acc_diff, &ns_diff));
    m->stats.fuse_base_mean = ns_base.mean;
    m->stats.fuse_base_std = ns_base.std;
    m->stats.diff_mean = ns_diff.mean;
    m->stats.diff_std = ns_diff.std;
    drdc_fusion_opts fo;
    TRY(drdc_fusion_opts_from_config(&fo, &m->cfg.infer));
    fo.base_stats = ns_base;
    fo.diff_stats = ns_diff;
    for (int i0 = 0; i0 < k; i0 += lo.batch_size) {
        int n = k - i0 < lo.batch_size ? k - i0 : lo.batch_size;
        const int64_t shape[4] = {n, 1, R, R};
        size_t off = (size_t)i0 * R * R;
        dt_tensor hb = NULL, hd = NULL, hbd = NULL, hdd = NULL, heat = NULL, score = NULL;
        st = dt_from_host(&hb, kept_base + off, DT_F32, shape, 4, (dt_device){DT_CPU, 0});
        if (!st) st = dt_from_host(&hd, kept_diff + off, DT_F32, shape, 4, (dt_device){DT_CPU, 0});
        if (!st) st = dt_to_device(&hbd, hb, m->dev);
        if (!st) st = dt_to_device(&hdd, hd, m->dev);
        if (!st) st = drdc_fusion_final(&heat, &score, hdd, hbd, &fo);
        if (!st) st = drdc_stats_add(&acc_drdc, heat);
        if (!st) st = dt_copy_to_host(score, sc, sizeof(float) * (size_t)n);
        for (int i = 0; !st && i < n; i++) drdc_scores[i0 + i] = sc[i];
        dt_free(hb);
        dt_free(hd);
        dt_free(hbd);
        dt_free(hdd);
        dt_free(heat);
        dt_free(score);
        if (st) goto done;
    }
    TRY(drdc_stats_get(&acc_drdc, &ns_drdc));
    m->stats.drdc_mean = ns_drdc.mean;
    m->stats.drdc_std = ns_drdc.std;
    TRY(drdc_quantile(&m->stats.drdc_threshold, drdc_scores, k, m->cfg.infer.threshold_quantile));
    drdc_colour_range(&ns_drdc, m->stats.drdc_threshold, &m->stats.drdc_lo, &m->stats.drdc_hi);
    m->stats.drdc_ready = 1;
done:
    drdc_loader_free(ld);
    free(base_scores);
    free(drdc_scores);
    free(kept_base);
    free(kept_diff);
    free(sc);
    return st;
}
