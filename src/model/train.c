/* train.c: a whole training run (train.h): the run folder, the data split, stage 1, stage 2,
 * calibration and the model file, and the optimisation step both stages share. */
#include "drdc/model/train.h"
#include "drdc/core/fsutil.h"
#include "drdc/core/progress.h"
#include "drdc/core/rng.h"
#include "drdc/model/calibrate.h"
#include "drdc/model/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

drdc_status drdc_optimise(double *loss_value, dt_tensor loss, const dt_tensor *params, int n_params, double clip,
                          dt_optimizer opt) {
    drdc_status st = DRDC_OK;
    TRY(dt_item(loss_value, loss));
    if (!isfinite(*loss_value)) {
        st = drdc_fail(DRDC_ERR_NUMERIC, "the loss became %g; stopping", *loss_value);
        goto done;
    }
    TRY(dt_zero_grad(params, n_params));
    TRY(dt_backward(loss));
    if (clip > 0) TRY(dt_clip_grad_norm(params, n_params, clip, NULL));
    TRY(dt_adamw_step(opt));
done:
    return st;
}


/* Points runs/latest at the run folder (a relative symlink when the run is inside runs/),
 * replacing the old link atomically. */
static drdc_status update_latest(const char *out_dir) {
    if (drdc_mkdirs("runs")) return drdc_error_context(DRDC_ERR_IO, "updating runs/latest");
    char target[2 * DRDC_PATH_CAP + 8], tmp[64];
    if (strncmp(out_dir, "runs/", 5) == 0 && !strchr(out_dir + 5, '/'))
        snprintf(target, sizeof target, "%s", out_dir + 5);
    else if (out_dir[0] == '/')
        snprintf(target, sizeof target, "%s", out_dir);
    else {
        char cwd[DRDC_PATH_CAP];
        if (!getcwd(cwd, sizeof cwd)) return drdc_fail(DRDC_ERR_IO, "updating runs/latest: cannot read the current folder");
        snprintf(target, sizeof target, "%s/%s", cwd, out_dir);
    }
    snprintf(tmp, sizeof tmp, "runs/.latest.%d", (int)getpid());
    unlink(tmp);
    if (symlink(target, tmp) != 0 || rename(tmp, "runs/latest") != 0) {
        unlink(tmp);
        return drdc_fail(DRDC_ERR_IO, "cannot update runs/latest to point at %s", out_dir);
    }
    return DRDC_OK;
}

/* Removes "<name>.tmp.<pid>[.<n>]" files of the run folder whose writer process is gone (a run
 * killed while writing leaves them; nothing else can). */
static void remove_stale_tmp(const char *out_dir) {
    DIR *d = opendir(out_dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *t = strstr(e->d_name, ".tmp.");
        if (!t) continue;
        char *end;
        long pid = strtol(t + 5, &end, 10);
        if (end == t + 5 || (*end && *end != '.') || pid <= 0) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;   /* its writer may still be running */
        char path[2 * DRDC_PATH_CAP];
        snprintf(path, sizeof path, "%s/%s", out_dir, e->d_name);
        if (unlink(path) == 0) fprintf(stderr, "note: removed %s, left by a run that was killed while writing it\n", path);
    }
    closedir(d);
}

drdc_status drdc_train_run(drdc_config *cfg, const char *stage, int resume_flag, const drdc_runtime *rt) {
    char out_dir[DRDC_PATH_CAP], path[DRDC_PATH_CAP + 64];
    if (!cfg->train.out[0]) snprintf(cfg->train.out, sizeof cfg->train.out, "runs/%.*s", DRDC_NAME_CAP, cfg->name);
    memcpy(out_dir, cfg->train.out, sizeof out_dir);
    char *json = drdc_config_to_json(cfg);
    if (!json) return drdc_fail(DRDC_ERR_NOMEM, "serialising the config");
    printf("drdc train: device %s, %d threads, run folder %s\nresolved config:\n%s\n", rt->device_name, rt->threads,
           out_dir, json);
    fflush(stdout);
    drdc_status st = drdc_mkdirs(out_dir);
    if (st) {
        free(json);
        return st;
    }
    remove_stale_tmp(out_dir);

    drdc_dataset ds;
    st = drdc_dataset_open_config(&ds, &cfg->data);
    if (st) {
        free(json);
        return st;
    }
    drdc_sample_list train = {0}, val = {0};
    drdc_model m = {0};
    st = drdc_dataset_split(&ds, cfg->data.val_fraction, drdc_seed(cfg->train.seed, DRDC_SEED_SPLIT), &train, &val);
    if (st) goto done;
    printf("data: %s layout at %s: %d categories, %d training and %d validation images\n", ds.layout, ds.root,
           ds.n_categories, train.n, val.n);
    for (int c = 0; c < ds.n_categories; c++)
        printf("  %-24s %5d train/good, %4d test\n", ds.categories[c].name, ds.categories[c].n_train,
               ds.categories[c].n_test);
    fflush(stdout);
    if (ds.n_skipped)
        fprintf(stderr, "warning: skipped %d files that are not PNG/JPEG/BMP images, e.g. %s\n", ds.n_skipped,
                ds.first_skipped);
    if (!stage) stage = "all";
    int resume = resume_flag || strcmp(stage, "refiner") == 0;   /* stage 2 alone continues a run */
    if (resume)
        st = drdc_checkpoint_load_model(&m, out_dir, cfg, rt->device);
    else
        st = drdc_model_build(&m, cfg, rt->device);
    if (st) goto done;
    /* written once the run is known to go on: a refused --resume leaves the folder's config.json */
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    st = drdc_write_file_atomic(path, json, strlen(json));
    if (st) goto done;
    if (!m.backbone_pretrained)
        fprintf(stderr, "WARNING: backbone.weights is empty: the %s backbone is RANDOM, not ImageNet-trained. Results "
                "will be far below the paper. Give weights with --set backbone.weights=FILE.safetensors\n",
                cfg->backbone.arch);
    if (cfg->train.bf16) {
        if (rt->device.type == DT_CUDA) {
            st = dt_autocast_bf16(1);   /* this thread runs every training step */
            if (st) goto done;
            printf("bf16 autocast on %s\n", rt->device_name);
        } else {
            fprintf(stderr, "note: train.bf16 applies to CUDA only; training in float32 on %s\n", rt->device_name);
        }
    }
    drdc_train_options o = {out_dir, resume, 0};
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    if (strcmp(stage, "refiner") != 0) {
        double t0 = drdc_now_seconds();
        st = drdc_train_base(&m, &train, &o);
        if (st) goto done;
        printf("base model: %d epochs, %.1f s this run\n", m.base_epochs, drdc_now_seconds() - t0);
        if (m.refiner_steps == 0) {   /* a usable base-only model while stage 2 trains */
            m.stats.drdc_ready = 0;
            TRY(drdc_calibrate(&m, &val, 0));
            TRY(drdc_model_save(&m, path));
            printf("calibrated on %d validation images: base map mean %.4g, std %.4g; base image-score threshold "
                   "%.4g (%.3g quantile); base model written to %s\n", m.stats.n_val_images, m.stats.base_mean,
                   m.stats.base_std, m.stats.base_threshold, cfg->infer.threshold_quantile, path);
            fflush(stdout);
        }
    }
    if (strcmp(stage, "base") != 0) {
        if (m.base_epochs < cfg->base.epochs) {
            st = drdc_fail(DRDC_ERR_INPUT, "the base model has %d of %d epochs: train it first (--stage base or all)",
                           m.base_epochs, cfg->base.epochs);
            goto done;
        }
        double t0 = drdc_now_seconds();
        st = drdc_train_refiner(&m, &train, &o);
        if (st) goto done;
        printf("refiner: %d steps, %.1f s this run\n", m.refiner_steps, drdc_now_seconds() - t0);
        TRY(drdc_calibrate(&m, &val, 0));
        TRY(drdc_model_save(&m, path));
        printf("calibrated on %d validation images: DRDC map mean %.4g, std %.4g; image-score threshold %.4g\n",
               m.stats.n_val_images, m.stats.drdc_mean, m.stats.drdc_std, m.stats.drdc_threshold);
    }
    st = update_latest(out_dir);
    if (!st) printf("model written to %s (runs/latest points at it)\n", path);
done:
    if (st == DRDC_ERR_NOMEM)
        drdc_error_hint(st, "out of memory: lower base.batch or refiner.batch, or refiner.image_size / "
                        "refiner.channels");
    if (st == DRDC_ERR_NOMEM || st == DRDC_ERR_NUMERIC) {   /* say what is left to continue from */
        char ck[DRDC_PATH_CAP + 32];
        drdc_checkpoint_path(ck, sizeof ck, out_dir);
        if (drdc_is_file(ck))
            drdc_error_hint(st, "the last checkpoint, %s, is kept; --resume continues from it", ck);
        else
            drdc_error_hint(st, "no checkpoint had been written yet");
    }
    free(json);
    drdc_model_free(&m);
    drdc_sample_list_free(&train);
    drdc_sample_list_free(&val);
    drdc_dataset_free(&ds);
    return st;
}

