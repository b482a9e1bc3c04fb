/* cmd_train.c: `drdc train`: resolves the config (file + --set overrides + flags), prints it,
 * and trains the base model then the refiner. */
#include "drdc/commands/commands.h"
#include "drdc/core/config.h"
#include "drdc/model/checkpoint.h"
#include "drdc/data/dataset.h"
#include "drdc/core/fsutil.h"
#include "drdc/model/model.h"
#include "drdc/shim/runtime.h"
#include "drdc/core/progress.h"
#include "drdc/model/train.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct {
    const char *config, *data_root, *out, *device, *stage;
    int resume, threads;
    drdc_opt_multi set;
} A;

static const drdc_option OPTIONS[] = {
    {"--config", "FILE", DRDC_OPT_STRING, &A.config,
     "config JSON; a bare name is also looked up in configs/ (e.g. mvtec.json, tiny.json)", NULL, 0, 0},
    {"--data-root", "DIR", DRDC_OPT_STRING, &A.data_root, "dataset root (overrides data.root)", NULL, 0, 0},
    {"--out", "DIR", DRDC_OPT_STRING, &A.out, "run folder (overrides train.out)", "runs/<config name>", 0, 0},
    {"--stage", "S", DRDC_OPT_STRING, &A.stage, "base | refiner | all", "all", 0, 0},
    {"--resume", NULL, DRDC_OPT_FLAG, &A.resume, "continue from the run folder's training state", NULL, 0, 0},
    {"--set", "KEY=VALUE", DRDC_OPT_MULTI, &A.set, "override a config key, e.g. --set base.epochs=10 (repeatable)",
     NULL, 0, 0},
    DRDC_OPTS_RUNTIME(&A.device, &A.threads),
};

static const drdc_command SPEC = {
    "train", "drdc train --config FILE [options]",
    "Train one model on every category of the dataset together (multi-class): first the base\n"
    "feature-reconstruction transformer, then the diffusion refiner. Checkpoints go to the run\n"
    "folder; --resume continues an interrupted run.",
    OPTIONS, (int)(sizeof OPTIONS / sizeof OPTIONS[0])};

const drdc_command *drdc_train_spec(void) { return &SPEC; }

/* Loads the config named by --config and applies --data-root, --out and every --set. */
static drdc_status resolve_config(drdc_config *cfg) {
    char path[DRDC_PATH_CAP];
    drdc_status st = drdc_config_find(A.config, path, sizeof path);
    if (st) return st;
    st = drdc_config_resolve(cfg, path, A.set.values, A.set.n);
    if (st) return st;
    if (A.data_root) snprintf(cfg->data.root, sizeof cfg->data.root, "%s", A.data_root);
    if (A.out) snprintf(cfg->train.out, sizeof cfg->train.out, "%s", A.out);
    return drdc_config_validate(cfg);
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

static drdc_status run_training(drdc_config *cfg, const drdc_runtime *rt) {
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
    st = drdc_dataset_split(&ds, cfg->data.val_fraction, (uint64_t)cfg->train.seed, &train, &val);
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
    const char *stage = A.stage ? A.stage : "all";
    int resume = A.resume || strcmp(stage, "refiner") == 0;   /* stage 2 alone continues a run */
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
            st = drdc_calibrate(&m, &val, 0);
            if (!st) st = drdc_model_save(&m, path);
            if (st) goto done;
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
        st = drdc_calibrate(&m, &val, 0);
        if (!st) st = drdc_model_save(&m, path);
        if (st) goto done;
        printf("calibrated on %d validation images: DRDC map mean %.4g, std %.4g; image-score threshold %.4g\n",
               m.stats.n_val_images, m.stats.drdc_mean, m.stats.drdc_std, m.stats.drdc_threshold);
    }
    st = update_latest(out_dir);
    if (!st) printf("model written to %s (runs/latest points at it)\n", path);
done:
    free(json);
    drdc_model_free(&m);
    drdc_sample_list_free(&train);
    drdc_sample_list_free(&val);
    drdc_dataset_free(&ds);
    return st;
}

int drdc_cmd_train(int argc, char **argv) {
    memset(&A, 0, sizeof A);
    int help = 0;
    drdc_status st = drdc_cli_parse(&SPEC, argc, argv, &help);
    if (st) return drdc_cli_report("train", st);
    if (help) {
        drdc_cli_print_help(stdout, &SPEC);
        return 0;
    }
    if (!A.config) return drdc_cli_report("train", drdc_fail(DRDC_ERR_USAGE, "--config FILE is required"));
    if (A.stage && strcmp(A.stage, "base") && strcmp(A.stage, "refiner") && strcmp(A.stage, "all"))
        return drdc_cli_report("train", drdc_fail(DRDC_ERR_USAGE, "--stage must be base, refiner or all, not '%s'",
                                                  A.stage));
    drdc_config cfg;
    st = resolve_config(&cfg);
    if (st) return drdc_cli_report("train", st);
    drdc_runtime rt;
    st = drdc_runtime_init(&rt, A.device, A.threads);
    if (st) return drdc_cli_report("train", st);
    st = run_training(&cfg, &rt);
    if (st == DRDC_ERR_NOMEM)
        drdc_error_hint(st, "out of memory: lower base.batch or refiner.batch, or refiner.image_size / "
                        "refiner.channels; the last checkpoint is kept and --resume continues from it");
    return drdc_cli_report("train", st);
}
