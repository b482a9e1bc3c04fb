/* train_base.c: stage 1, the base transformer (UniAD) learning to reconstruct frozen backbone
 * features of normal images (eqs. 1-2), with checkpoints and exact resume, one process or a
 * data-parallel group (train.h); and the per-sample generators both stages draw from. */
#include "drdc/core/rng.h"
#include "drdc/model/train.h"
#include "drdc/model/checkpoint.h"
#include "drdc/model/dist.h"
#include "drdc/core/fsutil.h"
#include "drdc/data/loader.h"
#include "drdc/core/progress.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARAMS 4096


/* ---- stage 1 -------------------------------------------------------------------------------- */

/* The per-sample generators of a training step: a row generator with one generator per sample of
 * this process's part of the global batch, seeded by (stream, step, the sample's position in the
 * global batch) (drdc_seed_sample): the same numbers for a sample on any rank. */
drdc_status drdc_step_generators(dt_generator *out, uint64_t stream, int64_t step, const drdc_batch *b) {
    *out = NULL;
    uint64_t *seeds = malloc(sizeof *seeds * (size_t)(b->n > 0 ? b->n : 1));
    if (!seeds) return drdc_fail(DRDC_ERR_NOMEM, "out of memory for %d generators", b->n);
    for (int i = 0; i < b->n; i++) seeds[i] = drdc_seed_sample(stream, step, b->first + i);
    drdc_status st = dt_generator_new_rows(out, seeds, b->n);
    free(seeds);
    return st;
}

/* This process's part of a step: *loss, the mean over its samples (NULL when it has none). In the
 * caller's scope. */
static drdc_status base_loss(dt_tensor *loss, const drdc_model *m, int64_t step, const drdc_batch *b) {
    dt_tensor images, feats, rec;
    dt_generator rows = NULL, coin = NULL;
    const uint64_t stream = drdc_seed(m->cfg.train.seed, DRDC_SEED_BASE_TRAIN);
    int jitter = 0;
    drdc_status st = DRDC_OK;
    *loss = NULL;
    if (b->n == 0) return DRDC_OK;
    /* UniAD's one jitter coin per batch: a draw of the step (index -1), the same on every rank */
    TRY(dt_generator_new(&coin, drdc_seed_sample(stream, step, -1)));
    TRY(drdc_base_jitter_coin(&jitter, &m->base, coin));
    TRY(drdc_step_generators(&rows, stream, step, b));
    TRY(drdc_model_upload(&images, m, b->images, b->n, 3, b->size));  /* [B,3,S,S] */
    int prev = dt_set_grad_enabled(0);
    st = drdc_backbone_features(&feats, &m->backbone, images);      /* [B,C,S/16,S/16], frozen */
    dt_set_grad_enabled(prev);
    if (st) goto done;
    TRY(drdc_base_forward_train(&rec, &m->base, feats, jitter, rows)); /* [B,C,S/16,S/16], jittered input */
    TRY(drdc_base_loss(loss, rec, feats));                           /* MSE against clean features */
done:
    dt_generator_free(rows);
    dt_generator_free(coin);
    return st;
}

/* One optimisation step; b is NULL when this process's loader failed (local says why: the other
 * ranks stop with it). */
static drdc_status base_step(const drdc_model *m, dt_optimizer opt, int64_t step, const dt_tensor *params,
                             int n_params, const drdc_batch *b, drdc_status local, double *loss_out) {
    dt_tensor loss = NULL;
    char where[96];
    if (b) snprintf(where, sizeof where, "base stage, epoch %d, batch %d", b->epoch + 1, b->batch_index + 1);
    else snprintf(where, sizeof where, "base stage, step %lld", (long long)step + 1);
    drdc_status st = dt_scope_begin();
    if (st) return st;
    if (!local) local = base_loss(&loss, m, step, b);
    double share = b && b->n > 0 ? (double)b->n * drdc_dist_world() / b->global_n : 1.0;
    st = drdc_optimise_step(loss_out, loss, share, local, params, n_params, m->cfg.base.clip, opt, where);
    if (st == DRDC_ERR_NUMERIC && b)
        st = drdc_error_context(st, "base stage, epoch %d, batch %d (lower base.lr or check the input images)",
                                b->epoch, b->batch_index);
    drdc_status end = dt_scope_end();
    return st ? st : end;
}

/* Rank 0's account of the all-reduce time of a stage (data-parallel runs). */
void drdc_train_say_dist_time(const drdc_train_options *o, const char *stage, double stage_s) {
    double ar = 0, fl = 0, wait = 0;
    long steps = 0;
    drdc_dist_timing(&ar, &fl, &wait, &steps, 1);
    if (drdc_dist_world() == 1 || !o->lead || steps == 0) return;
    double pc = stage_s > 0 ? 100 / stage_s : 0;
    if (wait > 0)
        printf("%s: %d ranks (%s): %ld steps in %.1f s; waiting for the slowest rank %.2f s (%.1f %%), all-reduce "
               "transfer %.2f s (%.1f %%), flattening %.2f s (%.1f %%)\n", stage, drdc_dist_world(),
               drdc_dist_backend(), steps, stage_s, wait, wait * pc, ar, ar * pc, fl, fl * pc);
    else
        printf("%s: %d ranks (%s): %ld steps in %.1f s; all-reduce %.2f s (%.1f %%, waiting for the slowest rank "
               "included), flattening %.2f s (%.1f %%)\n", stage, drdc_dist_world(), drdc_dist_backend(), steps,
               stage_s, ar, ar * pc, fl, fl * pc);
    fflush(stdout);
}

drdc_status drdc_train_base(drdc_model *m, const drdc_sample_list *train, const drdc_train_options *o) {
    const drdc_base_config *bc = &m->cfg.base;
    dt_tensor params[MAX_PARAMS];
    int n_params = 0;
    dt_optimizer opt = NULL;
    drdc_loader *ld = NULL;
    drdc_progress prog = {0};
    drdc_status st;
    double t_stage = drdc_now_seconds();
    TRY(drdc_params_trainable(&m->base.params, params, MAX_PARAMS, &n_params));
    TRY(dt_adamw_new(&opt, 0.9, 0.999, 1e-8));
    TRY(dt_adamw_add_group(opt, params, n_params, bc->lr, bc->weight_decay));
    drdc_stage_state ss = {"base", opt, NULL, NULL, m->base_epochs, 0, 1, 1};
    if (o->resume && m->base_epochs > 0 && m->base_epochs < bc->epochs) {
        char path[4096];
        drdc_st_file *f = NULL;
        int found = 0;
        drdc_checkpoint_path(path, sizeof path, o->out_dir);
        TRY(drdc_st_open(&f, path));
        st = drdc_checkpoint_restore(&ss, NULL, f, m->dev, &found);
        drdc_st_close(f);
        if (st) goto done;
        if (found) drdc_checkpoint_say_resume(&ss, o->lead);
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
    lo.seed = drdc_seed(m->cfg.train.seed, DRDC_SEED_BASE_ORDER);
    lo.shard = drdc_dist_rank();
    lo.shards = drdc_dist_world();
    TRY(drdc_loader_create(&ld, train->items, train->n, &lo));
    int per_epoch = drdc_loader_batches_per_epoch(ld);
    drdc_progress_begin(&prog, "train base (images)", (int64_t)(bc->epochs - m->base_epochs) * train->n, o->quiet);
    int64_t images_done = 0, steps_since_ckpt = 0;
    int64_t log_step = (int64_t)m->base_epochs * per_epoch;   /* optimisation steps of stage 1 so far */
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
            drdc_status lst = drdc_loader_next(ld, &b);   /* a failure still takes part in the step: all stop */
            if (!lst && !b) break;
            double loss = 0, t_step = drdc_now_seconds();
            TRY(base_step(m, opt, log_step, params, n_params, lst ? NULL : b, lst, &loss));
            loss_sum += loss;
            steps++;
            steps_since_ckpt++;
            images_done += b->global_n;
            char extra[128];
            snprintf(extra, sizeof extra, "epoch %d/%d, batch %d/%d, loss %.5f, lr %.2g", epoch + 1, bc->epochs, steps,
                     per_epoch, loss, lr);
            drdc_progress_update(&prog, images_done, extra);
            double dt = drdc_now_seconds() - t_step;
            drdc_train_log_step(o, "base", ++log_step, epoch + 1, loss, lr, dt > 0 ? b->global_n / dt : 0);
        }
        m->base_epochs = epoch + 1;
        if (!o->quiet) {
            drdc_progress_end(&prog);
            fprintf(stderr, "train base: epoch %d/%d mean loss %.6f\n", epoch + 1, bc->epochs,
                    steps ? loss_sum / steps : 0.0);
        }
        if (steps_since_ckpt >= m->cfg.train.checkpoint_every || epoch + 1 == bc->epochs) {
            ss.epoch = m->base_epochs;
            TRY(drdc_dist_after_rank0(o->lead ? drdc_checkpoint_save(m, &ss, o->out_dir) : DRDC_OK,
                                      "writing the checkpoint", drdc_train_rank0_wait_s()));
            steps_since_ckpt = 0;
        }
    }
    TRY(drdc_dist_check_same(params, n_params, "after the base stage"));
    drdc_progress_end(&prog);
    drdc_train_say_dist_time(o, "base stage", drdc_now_seconds() - t_stage);
done:
    drdc_progress_end(&prog);
    drdc_loader_free(ld);
    dt_optimizer_free(opt);
    return st;
}

