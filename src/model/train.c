/* train.c: a whole training run (train.h): the run folder, the data split, stage 1, stage 2,
 * calibration and the model file, and the optimisation step both stages share. */
#include "drdc/model/train.h"
#include "drdc/core/fsutil.h"
#include "drdc/core/progress.h"
#include "drdc/core/rng.h"
#include "drdc/model/calibrate.h"
#include "drdc/model/checkpoint.h"
#include "drdc/model/dist.h"

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

drdc_status drdc_optimise_step(double *loss_value, dt_tensor loss, double share, drdc_status local,
                               const dt_tensor *params, int n_params, double clip, dt_optimizer opt, const char *where) {
    if (drdc_dist_world() == 1) return local ? local : drdc_optimise(loss_value, loss, params, n_params, clip, opt);
    drdc_status st = local;
    double v = 0;
    dt_tensor scaled = NULL;
    if (!st) st = dt_zero_grad(params, n_params);
    if (!st && loss) {
        st = dt_item(&v, loss);
        if (!st && share != 1.0) st = dt_mul_scalar(&scaled, loss, share);
        if (!st) st = dt_backward(scaled ? scaled : loss);   /* a non-finite loss is caught below, on every rank */
        v *= share;
    }
    dt_free(scaled);
    TRY(drdc_dist_step(&v, params, n_params, st, where));
    *loss_value = v;
    if (!isfinite(v)) {
        st = drdc_fail(DRDC_ERR_NUMERIC, "the loss became %g; stopping", v);
        goto done;
    }
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

/* What a run holds; released by drdc_train_run. */
typedef struct run_state {
    char out_dir[DRDC_PATH_CAP];
    int resume, lead;
    char *json;
    int lock;
    FILE *log;
    drdc_dataset ds;
    drdc_sample_list train, val;
    drdc_model m;
    const char *names[DRDC_MAX_CATEGORIES];
    int n_names;
} run_state;

/* A batch the ranks share must split evenly: key names the config key. */
static drdc_status check_split(const char *key, int batch, int world) {
    if (batch % world == 0) return DRDC_OK;
    return drdc_fail(DRDC_ERR_CONFIG, "%s = %d is the global batch, which %d ranks cannot split evenly (each rank "
                     "trains batch / ranks samples): make %s a multiple of %d, or use another number of ranks", key,
                     batch, world, key, world);
}

/* Everything before training: the run folder (rank 0: lock, refusal of a used folder, config.json,
 * loss log), the data and its split, the checks that can be made before training, the model. Every
 * rank runs it; drdc_train_run then agrees on the outcome, so one rank's failure stops all. */
static drdc_status setup(run_state *r, drdc_config *cfg, const drdc_train_request *req, const drdc_runtime *rt,
                         const char *stage) {
    char path[DRDC_PATH_CAP + 64];
    const int world = drdc_dist_world();
    drdc_status st = DRDC_OK;
    if (r->lead) {
        TRY(drdc_mkdirs(r->out_dir));
        TRY(lock_run_folder(r->out_dir, &r->lock));
        if (!r->resume && !req->force && holds_run(r->out_dir)) {
            st = drdc_fail(DRDC_ERR_INPUT, "%s already holds a training run; continue it with --resume, replace it "
                           "with --force, or train into another --out", r->out_dir);
            goto done;
        }
    }
    if (!(r->json = drdc_config_to_json(cfg))) {
        st = drdc_fail(DRDC_ERR_NOMEM, "serialising the config");
        goto done;
    }
    if (r->lead) {
        printf("drdc train: device %s, %d threads, run folder %s\n", rt->device_name, rt->threads, r->out_dir);
        if (world > 1)
            printf("data-parallel: %d ranks (%s), each with its share of every global batch (base.batch %d, "
                   "refiner.batch %d)\n", world, drdc_dist_backend(), cfg->base.batch, cfg->refiner.batch);
        printf("resolved config:\n%s\n", r->json);
        fflush(stdout);
        remove_stale_tmp(r->out_dir);
    }
    if (strcmp(stage, "refiner") != 0) TRY(check_split("base.batch", cfg->base.batch, world));
    if (strcmp(stage, "base") != 0) TRY(check_split("refiner.batch", cfg->refiner.batch, world));

    drdc_dataset *ds = &r->ds;
    TRY(drdc_dataset_open_config(ds, &cfg->data));
    TRY(drdc_dataset_split(ds, cfg->data.val_fraction, drdc_seed(cfg->train.seed, DRDC_SEED_SPLIT), &r->train,
                           &r->val));
    if (r->lead) {
        printf("data: %s layout at %s: %d categories, %d training and %d validation images\n", ds->layout, ds->root,
               ds->n_categories, r->train.n, r->val.n);
        for (int c = 0; c < ds->n_categories; c++)
            printf("  %-24s %5d train/good, %4d test\n", ds->categories[c].name, ds->categories[c].n_train,
                   ds->categories[c].n_test);
        fflush(stdout);
        if (ds->n_skipped)
            fprintf(stderr, "warning: skipped %d files that are not PNG/JPEG/BMP images, e.g. %s\n", ds->n_skipped,
                    ds->first_skipped);
    }
    /* everything calibration needs is known now: refuse before any training */
    if (r->val.n == 0) {
        st = drdc_fail(DRDC_ERR_CONFIG, "no validation images: data.val_fraction %g holds out none of the %d training "
                       "images, and the thresholds are calibrated on them; use a data.val_fraction above 0 (default "
                       "0.1)", cfg->data.val_fraction, r->train.n);
        goto done;
    }
    if (ds->n_categories > DRDC_MAX_CATEGORIES && r->lead)
        fprintf(stderr, "note: %d categories; thresholds of their own for the first %d only\n", ds->n_categories,
                DRDC_MAX_CATEGORIES);
    r->n_names = ds->n_categories < DRDC_MAX_CATEGORIES ? ds->n_categories : DRDC_MAX_CATEGORIES;
    for (int c = 0; c < r->n_names; c++) r->names[c] = ds->categories[c].name;
    if (r->resume)
        TRY(drdc_checkpoint_load_model(&r->m, r->out_dir, cfg, rt->device));
    else
        TRY(drdc_model_build(&r->m, cfg, rt->device));
    if (r->lead) {
        /* written once the run is known to go on: a refused --resume leaves the folder's config.json */
        snprintf(path, sizeof path, "%s/config.json", r->out_dir);
        TRY(drdc_write_file_atomic(path, r->json, strlen(r->json)));
        TRY(open_loss_log(r->out_dir, &r->log));
        if (!r->m.backbone_pretrained)
            fprintf(stderr, "WARNING: backbone.weights is empty: the %s backbone is RANDOM, not ImageNet-trained. "
                    "Results will be far below the paper. Give weights with --set backbone.weights=FILE.safetensors\n",
                    cfg->backbone.arch);
    }
    if (cfg->train.bf16) {
        if (rt->device.type == DT_CUDA) {
            TRY(dt_autocast_bf16(1));   /* this thread runs every training step */
            if (r->lead) printf("bf16 autocast on %s\n", rt->device_name);
        } else if (r->lead) {
            fprintf(stderr, "note: train.bf16 applies to CUDA only; training in float32 on %s\n", rt->device_name);
        }
    }
done:
    return st;
}

/* How long the other ranks wait for rank 0's own work (a checkpoint, the calibration between the
 * stages): it may take far longer than a step (a rank 0 that dies is noticed at once all the same). */
static double g_timeout_s = 60;
double drdc_train_rank0_wait_s(void) { return g_timeout_s > 3600 ? g_timeout_s : 3600; }

drdc_status drdc_train_run(drdc_config *cfg, const drdc_train_request *req, const drdc_runtime *rt) {
    char path[DRDC_PATH_CAP + 64];
    const char *stage = req->stage ? req->stage : "all";
    if (!cfg->train.out[0]) snprintf(cfg->train.out, sizeof cfg->train.out, "runs/%.*s", DRDC_NAME_CAP, cfg->name);
    /* the data root is stored absolute, so the model's data can be found from any folder later */
    char abs_root[PATH_MAX];
    if (realpath(cfg->data.root, abs_root)) {
        if (strlen(abs_root) >= sizeof cfg->data.root)
            return drdc_fail(DRDC_ERR_INPUT, "data root %s is %zu bytes long; at most %zu fit", abs_root,
                             strlen(abs_root), sizeof cfg->data.root - 1);
        memcpy(cfg->data.root, abs_root, strlen(abs_root) + 1);
    }
    const double timeout = req->dist_timeout > 0 ? req->dist_timeout : 60;
    g_timeout_s = timeout;
    drdc_dist_env env;
    drdc_status st = drdc_dist_read_env(&env);
    if (st) return st;
    st = drdc_dist_begin(&env, timeout, rt->device);
    if (st) return st;
    run_state *r = calloc(1, sizeof *r);
    if (!r) {
        drdc_dist_end();
        return drdc_fail(DRDC_ERR_NOMEM, "out of memory");
    }
    memcpy(r->out_dir, cfg->train.out, sizeof r->out_dir);
    r->resume = req->resume || strcmp(stage, "refiner") == 0;   /* stage 2 alone continues a run */
    r->lead = drdc_dist_rank() == 0;
    r->lock = -1;
    const int lead = r->lead;
    const char *out_dir = r->out_dir;
    drdc_model *m = &r->m;
    TRY(drdc_dist_agree(setup(r, cfg, req, rt, stage), "setting up"));
    drdc_train_options o = {out_dir, r->resume, !lead, r->log, lead};
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    if (strcmp(stage, "refiner") != 0) {
        double t0 = drdc_now_seconds();
        TRY(drdc_train_base(m, &r->train, &o));
        if (lead) printf("base model: %d epochs, %.1f s this run\n", m->base_epochs, drdc_now_seconds() - t0);
        if (m->refiner_steps == 0) {   /* a usable base-only model while stage 2 trains */
            if (lead) {
                st = calibrate_or_say(m, &r->val, r->names, r->n_names, out_dir);
                if (!st) st = drdc_model_save(m, path);
                if (!st)
                    printf("calibrated on %d validation images: base map mean %.4g, std %.4g; base image-score "
                           "threshold %.4g (%.3g quantile), pixel threshold %.4g (%.4g quantile); base model written "
                           "to %s\n", m->stats.n_val_images, m->stats.base_mean, m->stats.base_std,
                           m->stats.base_threshold, cfg->infer.threshold_quantile, m->stats.base_pixel_threshold,
                           cfg->infer.pixel_quantile, path);
                fflush(stdout);
            }
            if (strcmp(stage, "base") != 0)   /* the other ranks wait for it before stage 2 */
                st = drdc_dist_after_rank0(st, "calibrating the base model", drdc_train_rank0_wait_s());
            if (st) goto done;
        }
    }
    if (strcmp(stage, "base") != 0) {
        if (m->base_epochs < cfg->base.epochs) {
            st = drdc_fail(DRDC_ERR_INPUT, "the base model has %d of %d epochs: train it first (--stage base or all)",
                           m->base_epochs, cfg->base.epochs);
            goto done;
        }
        double t0 = drdc_now_seconds();
        TRY(drdc_train_refiner(m, &r->train, &o));
        if (!lead) goto done;   /* rank 0 alone calibrates and writes the model */
        printf("refiner: %d steps, %.1f s this run\n", m->refiner_steps, drdc_now_seconds() - t0);
        TRY(calibrate_or_say(m, &r->val, r->names, r->n_names, out_dir));
        TRY(drdc_model_save(m, path));
        printf("calibrated on %d validation images: DRDC map mean %.4g, std %.4g; image-score threshold %.4g, pixel "
               "threshold %.4g\n", m->stats.n_val_images, m->stats.drdc_mean, m->stats.drdc_std,
               m->stats.drdc_threshold, m->stats.drdc_pixel_threshold);
    }
    if (!lead) goto done;
    TRY(update_latest(out_dir));
    printf("model written to %s (runs/latest points at it)\n", path);
done:
    if (st == DRDC_ERR_NOMEM)
        drdc_error_hint(st, "out of memory: lower base.batch or refiner.batch, or refiner.image_size / "
                        "refiner.channels");
    if (lead && (st == DRDC_ERR_NOMEM || st == DRDC_ERR_NUMERIC)) {   /* say what is left to continue from */
        char ck[DRDC_PATH_CAP + 32];
        drdc_checkpoint_path(ck, sizeof ck, out_dir);
        if (drdc_is_file(ck))
            drdc_error_hint(st, "the last checkpoint, %s, is kept; --resume continues from it", ck);
        else
            drdc_error_hint(st, "no checkpoint had been written yet");
    }
    if (st && drdc_dist_world() > 1 && strncmp(drdc_last_error(), "rank ", 5) != 0)
        drdc_error_context(st, "rank %d of %d", drdc_dist_rank(), drdc_dist_world());
    if (r->log) fclose(r->log);
    if (r->lock >= 0) close(r->lock);   /* releases the flock */
    free(r->json);
    drdc_model_free(&r->m);
    drdc_sample_list_free(&r->train);
    drdc_sample_list_free(&r->val);
    drdc_dataset_free(&r->ds);
    free(r);
    drdc_dist_end();
    return st;
}
