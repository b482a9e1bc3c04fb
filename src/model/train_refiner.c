/* train_refiner.c: stage 2, the inpainting U-Net with model conditioning (eq. 10), EMA, resume,
 * one process or a data-parallel group (train.h). */
#include "drdc/core/rng.h"
#include "drdc/model/checkpoint.h"
#include "drdc/model/dist.h"
#include "drdc/stages/diffusion.h"
#include "drdc/core/fsutil.h"
#include "drdc/data/loader.h"
#include "drdc/core/progress.h"
#include "drdc/model/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARAMS 4096

/* This process's part of a step: *loss, the mean over its samples (NULL when it has none). The
 * eq. (10) draws and the dropout masks of sample i come from its own generator (stream, step, its
 * position in the global batch). In the caller's scope. */
static drdc_status refiner_loss(dt_tensor *loss, const drdc_model *m, const drdc_unet *live, int64_t step,
                                const drdc_batch *b, drdc_train_batch *tb) {
    const drdc_refiner_config *rc = &m->cfg.refiner;
    const drdc_infer_config *ic = &m->cfg.infer;
    dt_tensor images, x0, eps;
    dt_generator rows = NULL;
    drdc_status st = DRDC_OK;
    *loss = NULL;
    if (b->n == 0) return DRDC_OK;
    TRY(drdc_step_generators(&rows, drdc_seed(m->cfg.train.seed, DRDC_SEED_REFINER_TRAIN), step, b));
    TRY(drdc_model_upload(&images, m, b->images, b->n, 3, b->size));  /* [B,3,R,R] in [0,1] */
    TRY(drdc_model_refiner_range(&x0, images));                       /* [B,3,R,R] in [-1,1] */
    TRY(drdc_diffusion_train_batch(tb, &m->schedule, x0, ic->grids, ic->n_grids, ic->K, rc->max_train_t, rows));
    TRY(drdc_unet_forward(&eps, live, tb->x_t, tb->t, tb->cond, 1, rows)); /* [B,3,R,R] */
    TRY(drdc_diffusion_loss(loss, eps, tb->eps));                  /* eqs. (6), (10) */
done:
    dt_generator_free(rows);
    return st;
}

/* One optimisation step on a batch (b NULL: this process's loader failed, local says why). */
static drdc_status refiner_step(const drdc_model *m, const drdc_unet *live, dt_optimizer opt, const dt_tensor *params,
                                int n_params, const drdc_batch *b, drdc_status local, double *loss_out) {
    drdc_train_batch tb = {0};
    dt_tensor loss = NULL;
    char where[64];
    snprintf(where, sizeof where, "refiner step %d", m->refiner_steps + 1);
    drdc_status st = dt_scope_begin();
    if (st) return st;
    if (!local) local = refiner_loss(&loss, m, live, m->refiner_steps, b, &tb);
    double share = b && b->n > 0 ? (double)b->n * drdc_dist_world() / b->global_n : 1.0;
    st = drdc_optimise_step(loss_out, loss, share, local, params, n_params, m->cfg.refiner.clip, opt, where);
    if (st == DRDC_ERR_NUMERIC && b)
        st = drdc_error_context(st, "refiner stage, epoch %d, batch %d (lower refiner.lr)", b->epoch, b->batch_index);
    drdc_train_batch_free(&tb);
    drdc_status end = dt_scope_end();
    return st ? st : end;
}

/* The EMA's decay at update n (0-based): ema_decay, or with the warm-up min(ema_decay, (1 + n) / (10 + n))
 * (DESIGN.md; update 0 keeps 10 % of the initial weights, update 90 1 %). */
double drdc_ema_decay_at(const drdc_refiner_config *rc, int n) {
    double warm = (1.0 + n) / (10.0 + n);
    return rc->ema_warmup && warm < rc->ema_decay ? warm : rc->ema_decay;
}

/* ema <- ema + (1 - decay) (live - ema), under no-grad. */
static drdc_status ema_update(drdc_unet *ema, const drdc_unet *live, double decay) {
    int prev = dt_set_grad_enabled(0);
    drdc_status st = DRDC_OK;
    for (int i = 0; !st && i < ema->params.n; i++) st = dt_lerp_(ema->params.tensors[i], live->params.tensors[i], 1.0 - decay);
    dt_set_grad_enabled(prev);
    return st;
}

/* live <- ema weights (start of training: both begin equal). */
static drdc_status copy_params(drdc_params *dst, const drdc_params *src) {
    int prev = dt_set_grad_enabled(0);
    drdc_status st = DRDC_OK;
    for (int i = 0; !st && i < dst->n; i++) st = dt_copy_(dst->tensors[i], src->tensors[i]);
    dt_set_grad_enabled(prev);
    return st;
}

drdc_status drdc_train_refiner(drdc_model *m, const drdc_sample_list *train, const drdc_train_options *o) {
    const drdc_refiner_config *rc = &m->cfg.refiner;
    drdc_unet live = {0};
    dt_tensor params[MAX_PARAMS];
    int n_params = 0;
    dt_optimizer opt = NULL;
    drdc_loader *ld = NULL;
    drdc_progress prog = {0};
    drdc_status st;
    if (m->refiner_steps >= rc->steps) {
        if (!o->quiet) fprintf(stderr, "train refiner: %d of %d steps already done\n", m->refiner_steps, rc->steps);
        return DRDC_OK;
    }
    TRY(drdc_model_refiner_init(&live, &m->cfg, m->dev));
    TRY(copy_params(&live.params, &m->refiner.params));
    TRY(drdc_params_trainable(&live.params, params, MAX_PARAMS, &n_params));
    TRY(dt_adamw_new(&opt, 0.9, 0.999, 1e-8));
    TRY(dt_adamw_add_group(opt, params, n_params, rc->lr, rc->weight_decay));
    drdc_stage_state ss = {"refiner", opt, NULL, &live.params, 0, 0, 1, 1};
    double t_stage = drdc_now_seconds();
    if (o->resume && m->refiner_steps > 0) {
        char path[4096];
        drdc_st_file *f = NULL;
        int found = 0;
        drdc_checkpoint_path(path, sizeof path, o->out_dir);
        TRY(drdc_st_open(&f, path));
        st = drdc_checkpoint_restore(&ss, &live.params, f, m->dev, &found);
        drdc_st_close(f);
        if (st) goto done;
        if (!found) {
            st = drdc_fail(DRDC_ERR_FORMAT, "%s: the model has %d refiner steps but the checkpoint holds no refiner "
                           "training state", path, m->refiner_steps);
            goto done;
        }
        drdc_checkpoint_say_resume(&ss, o->lead);
    }
    drdc_loader_options lo;
    drdc_loader_options_default(&lo);
    lo.image_size = rc->image_size;
    lo.batch_size = rc->batch;
    lo.workers = m->cfg.data.workers;
    lo.shuffle = 1;
    lo.drop_last = train->n > rc->batch;   /* full batches, when there are enough images */
    lo.seed = drdc_seed(m->cfg.train.seed, DRDC_SEED_REFINER_ORDER);
    lo.shard = drdc_dist_rank();
    lo.shards = drdc_dist_world();
    TRY(drdc_loader_create(&ld, train->items, train->n, &lo));
    if (!o->quiet)
        fprintf(stderr, "train refiner: U-Net with %.1fM parameters, %dx%d images, batch %d, steps %d to %d\n",
                drdc_unet_num_params(&live) / 1e6, rc->image_size, rc->image_size, rc->batch, m->refiner_steps,
                rc->steps);
    drdc_progress_begin(&prog, "train refiner (steps)", rc->steps - m->refiner_steps, o->quiet);
    int start_steps = m->refiner_steps, since_ckpt = 0;
    double loss_avg = 0;
    while (m->refiner_steps < rc->steps) {
        TRY(drdc_loader_start_epoch(ld, ss.epoch));
        const drdc_batch *b;
        drdc_status lst = DRDC_OK;   /* a loader failure still takes part in the next step: all ranks stop */
        for (int skip = 0; skip < ss.batch; skip++) {   /* resume mid-epoch: replay the order */
            lst = drdc_loader_next(ld, &b);
            if (lst || !b) break;
        }
        for (;;) {
            if (!lst) lst = drdc_loader_next(ld, &b);
            if ((!lst && !b) || m->refiner_steps >= rc->steps) break;
            double loss = 0, t_step = drdc_now_seconds();
            TRY(refiner_step(m, &live, opt, params, n_params, lst ? NULL : b, lst, &loss));
            lst = DRDC_OK;
            TRY(ema_update(&m->refiner, &live, drdc_ema_decay_at(rc, m->refiner_steps)));
            m->refiner_steps++;
            ss.batch++;
            since_ckpt++;
            loss_avg = m->refiner_steps - start_steps == 1 ? loss : 0.98 * loss_avg + 0.02 * loss;
            char extra[128];
            snprintf(extra, sizeof extra, "epoch %d, loss %.5f (avg %.5f)", ss.epoch + 1, loss, loss_avg);
            drdc_progress_update(&prog, m->refiner_steps - start_steps, extra);
            double dt = drdc_now_seconds() - t_step;
            drdc_train_log_step(o, "refiner", m->refiner_steps, ss.epoch + 1, loss, rc->lr,
                                dt > 0 ? b->global_n / dt : 0);
            if (since_ckpt >= m->cfg.train.checkpoint_every || m->refiner_steps == rc->steps) {
                TRY(drdc_dist_after_rank0(o->lead ? drdc_checkpoint_save(m, &ss, o->out_dir) : DRDC_OK,
                                      "writing the checkpoint", drdc_train_rank0_wait_s()));
                since_ckpt = 0;
            }
        }
        if (m->refiner_steps < rc->steps) {
            ss.epoch++;
            ss.batch = 0;
        }
    }
    TRY(drdc_dist_check_same(params, n_params, "after the refiner stage"));
    drdc_progress_end(&prog);
    drdc_train_say_dist_time(o, "refiner stage", drdc_now_seconds() - t_stage);
done:
    drdc_progress_end(&prog);
    drdc_loader_free(ld);
    dt_optimizer_free(opt);
    drdc_unet_free(&live);
    return st;
}
