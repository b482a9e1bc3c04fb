/* train.c: a whole training run (train.h): the run folder, the data split, stage 1, stage 2,
 * calibration and the model file, and the optimisation step both stages share. */
#include "drdc/model/train.h"
#include "drdc/core/fsutil.h"
#include "drdc/core/progress.h"
#include "drdc/core/rng.h"
#include "drdc/model/calibrate.h"
#include "drdc/model/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/file.h>
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

/* Calibrates after a stage; a failure keeps the checkpoint (written before) and says how to calibrate
 * again without retraining. */
static drdc_status calibrate_or_say(drdc_model *m, const drdc_sample_list *val, const char *const *names, int n,
                                    const char *out_dir) {
    drdc_status st = drdc_calibrate(m, val, names, n, 0);
    if (st)
        drdc_error_hint(st, "calibration failed; the trained weights are kept in %s/checkpoint.safetensors and "
                        "'drdc train --resume' with the same config calibrates again without retraining", out_dir);
    return st;
}

/* The run folder's lock: <out>/.lock held with flock for the whole run, holding the owner's pid.
 * A second run on the same folder fails at once naming that pid; the lock of a process that died is
 * released by the kernel, so the next run takes it over. Returns the open descriptor in *fd. */
static drdc_status lock_run_folder(const char *out_dir, int *fd) {
    char path[DRDC_PATH_CAP + 16];
    snprintf(path, sizeof path, "%s/.lock", out_dir);
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (*fd < 0) return drdc_fail(DRDC_ERR_IO, "%s: cannot open the run folder's lock: %s", path, strerror(errno));
    if (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char pid[32] = "";
        ssize_t n = pread(*fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        close(*fd);
        *fd = -1;
        if (err == EWOULDBLOCK)
            return drdc_fail(DRDC_ERR_INPUT, "%s is in use by another drdc train (pid %s); wait for it or train into "
                             "another --out", out_dir, pid[0] ? pid : "unknown");
        return drdc_fail(DRDC_ERR_IO, "%s: cannot lock: %s", path, strerror(err));
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(*fd, 0) != 0 || pwrite(*fd, pid, (size_t)len, 0) != len)
        fprintf(stderr, "note: %s: cannot record this run's pid in the lock\n", path);
    return DRDC_OK;
}

/* The loss log: <out>/loss.csv, one row per optimisation step of either stage, appended (a resumed
 * run continues it). */
static drdc_status open_loss_log(const char *out_dir, FILE **out) {
    char path[DRDC_PATH_CAP + 16];
    snprintf(path, sizeof path, "%s/loss.csv", out_dir);
    int fresh = !drdc_is_file(path);
    *out = fopen(path, "a");
    if (!*out) return drdc_fail(DRDC_ERR_IO, "%s: cannot open the loss log: %s", path, strerror(errno));
    if (fresh) fprintf(*out, "stage,step,epoch,loss,lr,images_per_s\n");
    fflush(*out);
    return DRDC_OK;
}

void drdc_train_log_step(const drdc_train_options *o, const char *stage, int64_t step, int epoch, double loss,
                         double lr, double images_per_s) {
    if (!o->log) return;
    fprintf(o->log, "%s,%lld,%d,%.9g,%.6g,%.4g\n", stage, (long long)step, epoch, loss, lr, images_per_s);
    fflush(o->log);
}

/* True when out_dir already holds a run (a checkpoint or a model). */
static int holds_run(const char *out_dir) {
    char path[DRDC_PATH_CAP + 32];
    drdc_checkpoint_path(path, sizeof path, out_dir);
    if (drdc_is_file(path)) return 1;
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    return drdc_is_file(path);
}

drdc_status drdc_train_run(drdc_config *cfg, const drdc_train_request *req, const drdc_runtime *rt) {
    char out_dir[DRDC_PATH_CAP], path[DRDC_PATH_CAP + 64];
    const char *stage = req->stage ? req->stage : "all";
    int resume = req->resume || strcmp(stage, "refiner") == 0;   /* stage 2 alone continues a run */
    if (!cfg->train.out[0]) snprintf(cfg->train.out, sizeof cfg->train.out, "runs/%.*s", DRDC_NAME_CAP, cfg->name);
    memcpy(out_dir, cfg->train.out, sizeof out_dir);
    /* the data root is stored absolute, so the model's data can be found from any folder later */
    char abs_root[PATH_MAX];
    if (realpath(cfg->data.root, abs_root)) {
        if (strlen(abs_root) >= sizeof cfg->data.root)
            return drdc_fail(DRDC_ERR_INPUT, "data root %s is %zu bytes long; at most %zu fit", abs_root,
                             strlen(abs_root), sizeof cfg->data.root - 1);
        memcpy(cfg->data.root, abs_root, strlen(abs_root) + 1);
    }
    char *json = NULL;
    int lock = -1;
    FILE *log = NULL;
    drdc_dataset ds = {0};
    drdc_sample_list train = {0}, val = {0};
    drdc_model m = {0};
    drdc_status st = DRDC_OK;
    TRY(drdc_mkdirs(out_dir));
    TRY(lock_run_folder(out_dir, &lock));
    if (!resume && !req->force && holds_run(out_dir)) {
        st = drdc_fail(DRDC_ERR_INPUT, "%s already holds a training run; continue it with --resume, replace it with "
                       "--force, or train into another --out", out_dir);
        goto done;
    }
    if (!(json = drdc_config_to_json(cfg))) {
        st = drdc_fail(DRDC_ERR_NOMEM, "serialising the config");
        goto done;
    }
    printf("drdc train: device %s, %d threads, run folder %s\nresolved config:\n%s\n", rt->device_name, rt->threads,
           out_dir, json);
    fflush(stdout);
    remove_stale_tmp(out_dir);

    TRY(drdc_dataset_open_config(&ds, &cfg->data));
    TRY(drdc_dataset_split(&ds, cfg->data.val_fraction, drdc_seed(cfg->train.seed, DRDC_SEED_SPLIT), &train, &val));
    printf("data: %s layout at %s: %d categories, %d training and %d validation images\n", ds.layout, ds.root,
           ds.n_categories, train.n, val.n);
    for (int c = 0; c < ds.n_categories; c++)
        printf("  %-24s %5d train/good, %4d test\n", ds.categories[c].name, ds.categories[c].n_train,
               ds.categories[c].n_test);
    fflush(stdout);
    if (ds.n_skipped)
        fprintf(stderr, "warning: skipped %d files that are not PNG/JPEG/BMP images, e.g. %s\n", ds.n_skipped,
                ds.first_skipped);
    /* everything calibration needs is known now: refuse before any training */
    if (val.n == 0) {
        st = drdc_fail(DRDC_ERR_CONFIG, "no validation images: data.val_fraction %g holds out none of the %d training "
                       "images, and the thresholds are calibrated on them; use a data.val_fraction above 0 (default "
                       "0.1)", cfg->data.val_fraction, train.n);
        goto done;
    }
    if (ds.n_categories > DRDC_MAX_CATEGORIES)
        fprintf(stderr, "note: %d categories; thresholds of their own for the first %d only\n", ds.n_categories,
                DRDC_MAX_CATEGORIES);
    const char *names[DRDC_MAX_CATEGORIES];
    int n_names = ds.n_categories < DRDC_MAX_CATEGORIES ? ds.n_categories : DRDC_MAX_CATEGORIES;
    for (int c = 0; c < n_names; c++) names[c] = ds.categories[c].name;
    if (resume)
        TRY(drdc_checkpoint_load_model(&m, out_dir, cfg, rt->device));
    else
        TRY(drdc_model_build(&m, cfg, rt->device));
    /* written once the run is known to go on: a refused --resume leaves the folder's config.json */
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    TRY(drdc_write_file_atomic(path, json, strlen(json)));
    TRY(open_loss_log(out_dir, &log));
    if (!m.backbone_pretrained)
        fprintf(stderr, "WARNING: backbone.weights is empty: the %s backbone is RANDOM, not ImageNet-trained. Results "
                "will be far below the paper. Give weights with --set backbone.weights=FILE.safetensors\n",
                cfg->backbone.arch);
    if (cfg->train.bf16) {
        if (rt->device.type == DT_CUDA) {
            TRY(dt_autocast_bf16(1));   /* this thread runs every training step */
            printf("bf16 autocast on %s\n", rt->device_name);
        } else {
            fprintf(stderr, "note: train.bf16 applies to CUDA only; training in float32 on %s\n", rt->device_name);
        }
    }
    drdc_train_options o = {out_dir, resume, 0, log};
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    if (strcmp(stage, "refiner") != 0) {
        double t0 = drdc_now_seconds();
        TRY(drdc_train_base(&m, &train, &o));
        printf("base model: %d epochs, %.1f s this run\n", m.base_epochs, drdc_now_seconds() - t0);
        if (m.refiner_steps == 0) {   /* a usable base-only model while stage 2 trains */
            TRY(calibrate_or_say(&m, &val, names, n_names, out_dir));
            TRY(drdc_model_save(&m, path));
            printf("calibrated on %d validation images: base map mean %.4g, std %.4g; base image-score threshold "
                   "%.4g (%.3g quantile), pixel threshold %.4g (%.4g quantile); base model written to %s\n",
                   m.stats.n_val_images, m.stats.base_mean, m.stats.base_std, m.stats.base_threshold,
                   cfg->infer.threshold_quantile, m.stats.base_pixel_threshold, cfg->infer.pixel_quantile, path);
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
        TRY(drdc_train_refiner(&m, &train, &o));
        printf("refiner: %d steps, %.1f s this run\n", m.refiner_steps, drdc_now_seconds() - t0);
        TRY(calibrate_or_say(&m, &val, names, n_names, out_dir));
        TRY(drdc_model_save(&m, path));
        printf("calibrated on %d validation images: DRDC map mean %.4g, std %.4g; image-score threshold %.4g, pixel "
               "threshold %.4g\n", m.stats.n_val_images, m.stats.drdc_mean, m.stats.drdc_std, m.stats.drdc_threshold,
               m.stats.drdc_pixel_threshold);
    }
    TRY(update_latest(out_dir));
    printf("model written to %s (runs/latest points at it)\n", path);
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
    if (log) fclose(log);
    if (lock >= 0) close(lock);   /* releases the flock */
    free(json);
    drdc_model_free(&m);
    drdc_sample_list_free(&train);
    drdc_sample_list_free(&val);
    drdc_dataset_free(&ds);
    return st;
}
