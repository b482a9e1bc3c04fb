/* train_base.c: stage 1, the base transformer (UniAD) learning to reconstruct frozen backbone
 * features of normal images (eqs. 1-2), with checkpoints and exact resume (train.h). */
#include "drdc/core/rng.h"
#include "drdc/model/train.h"
#include "drdc/model/checkpoint.h"
#include "drdc/core/fsutil.h"
#include "drdc/data/loader.h"
#include "drdc/core/progress.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARAMS 4096


/* ---- stage 1 -------------------------------------------------------------------------------- */

static drdc_status base_step(const drdc_model *m, dt_optimizer opt, dt_generator gen, const dt_tensor *params,
                             int n_params, const drdc_batch *b, double *loss_out) {
    dt_tensor images, feats, rec, loss;
    drdc_status st = dt_scope_begin();
    if (st) return st;
    TRY(drdc_model_upload(&images, m, b->images, b->n, 3, b->size));  /* [B,3,S,S] */
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
    drdc_status end = dt_scope_end();
    return st ? st : end;
}

drdc_status drdc_train_base(drdc_model *m, const drdc_sample_list *train, const drdc_train_options *o) {
    const drdc_base_config *bc = &m->cfg.base;
    dt_tensor params[MAX_PARAMS];
    int n_params = 0;
    dt_optimizer opt = NULL;
    dt_generator gen = NULL;
    drdc_loader *ld = NULL;
    drdc_progress prog = {0};
    drdc_status st;
    TRY(drdc_params_trainable(&m->base.params, params, MAX_PARAMS, &n_params));
    TRY(dt_adamw_new(&opt, 0.9, 0.999, 1e-8));
    TRY(dt_adamw_add_group(opt, params, n_params, bc->lr, bc->weight_decay));
    TRY(dt_generator_new(&gen, drdc_seed(m->cfg.train.seed, DRDC_SEED_BASE_TRAIN)));
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
    lo.seed = drdc_seed(m->cfg.train.seed, DRDC_SEED_BASE_ORDER);
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
            TRY(drdc_loader_next(ld, &b));
            if (!b) break;
            double loss, t_step = drdc_now_seconds();
            TRY(base_step(m, opt, gen, params, n_params, b, &loss));
            loss_sum += loss;
            steps++;
            steps_since_ckpt++;
            images_done += b->n;
            char extra[128];
            snprintf(extra, sizeof extra, "epoch %d/%d, batch %d/%d, loss %.5f, lr %.2g", epoch + 1, bc->epochs, steps,
                     per_epoch, loss, lr);
            drdc_progress_update(&prog, images_done, extra);
            double dt = drdc_now_seconds() - t_step;
            drdc_train_log_step(o, "base", ++log_step, epoch + 1, loss, lr, dt > 0 ? b->n / dt : 0);
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
    drdc_progress_end(&prog);
    drdc_loader_free(ld);
    dt_optimizer_free(opt);
    dt_generator_free(gen);
    return st;
}

