/* cmd_train.c: `drdc train`: resolves the config (file + --set overrides + flags), prints it,
 * and trains the base model then the refiner; with --nproc N it starts N ranks of itself instead. */
#include "drdc/commands/commands.h"
#include "drdc/core/config.h"
#include "drdc/model/dist.h"
#include "drdc/model/train.h"

#include <stdlib.h>

#include <stdio.h>
#include <string.h>

static struct {
    const char *config, *data_root, *out, *device, *stage;
    int resume, force, threads, nproc;
    double dist_timeout;
    drdc_opt_multi set;
} A;

static const drdc_option OPTIONS[] = {
    {"--config", "FILE", DRDC_OPT_STRING, &A.config,
     "config JSON; a bare name is also looked up in configs/ (e.g. mvtec.json, tiny.json)", NULL, 0, 0},
    {"--data-root", "DIR", DRDC_OPT_STRING, &A.data_root, "dataset root (overrides data.root)", NULL, 0, 0},
    {"--out", "DIR", DRDC_OPT_STRING, &A.out, "run folder (overrides train.out)", "runs/<config name>", 0, 0},
    {"--stage", "S", DRDC_OPT_STRING, &A.stage, "base | refiner | all", "all", 0, 0},
    {"--resume", NULL, DRDC_OPT_FLAG, &A.resume, "continue from the run folder's training state", NULL, 0, 0},
    {"--force", NULL, DRDC_OPT_FLAG, &A.force, "train into a run folder that already holds a run, replacing it", NULL,
     0, 0},
    {"--set", "KEY=VALUE", DRDC_OPT_MULTI, &A.set, "override a config key, e.g. --set base.epochs=10 (repeatable)",
     NULL, 0, 0},
    {"--nproc", "N", DRDC_OPT_INT, &A.nproc,
     "data-parallel training on N local processes (ranks); under torchrun leave it out", "1", 1, 256},
    {"--dist-timeout", "S", DRDC_OPT_DOUBLE, &A.dist_timeout,
     "distributed runs: the longest wait for another rank (joining, every step), in seconds", "60", 1, 86400},
    DRDC_OPTS_RUNTIME(&A.device, &A.threads),
};

static const drdc_command SPEC = {
    "train", "drdc train --config FILE [options]",
    "Train one model on every category of the dataset together (multi-class): first the base\n"
    "feature-reconstruction transformer, then the diffusion refiner. Checkpoints go to the run\n"
    "folder; --resume continues an interrupted run.\n"
    "Data-parallel: --nproc N starts N ranks on this machine; torchrun (or RANK, WORLD_SIZE,\n"
    "MASTER_ADDR, MASTER_PORT set by hand) runs one rank per process on one or more machines.\n"
    "The batches in the config stay the global batches.",
    OPTIONS, (int)(sizeof OPTIONS / sizeof OPTIONS[0])};

const drdc_command *drdc_train_spec(void) { return &SPEC; }

/* Loads the config named by --config and applies --data-root, --out and every --set. */
static drdc_status resolve_config(drdc_config *cfg) {
    char path[DRDC_PATH_CAP];
    drdc_status st = drdc_config_resolve(cfg, A.config, A.set.values, A.set.n, path, sizeof path);
    if (st) return st;
    if (A.data_root && (st = drdc_config_set_string(cfg, "data.root", A.data_root, "--data-root"))) return st;
    if (A.out && (st = drdc_config_set_string(cfg, "train.out", A.out, "--out"))) return st;
    st = drdc_model_check_config(cfg);
    return st ? drdc_error_context(st, "%s", path) : DRDC_OK;
}

int drdc_cmd_train(int argc, char **argv) {
    memset(&A, 0, sizeof A);
    int rc = drdc_cli_begin(&SPEC, argc, argv);
    if (rc >= 0) return rc;
    drdc_status st;
    if (!A.config) return drdc_cli_report("train", drdc_fail(DRDC_ERR_USAGE, "--config FILE is required"));
    if (A.stage && strcmp(A.stage, "base") && strcmp(A.stage, "refiner") && strcmp(A.stage, "all"))
        return drdc_cli_report("train", drdc_fail(DRDC_ERR_USAGE, "--stage must be base, refiner or all, not '%s'",
                                                  A.stage));
    drdc_config cfg;
    st = resolve_config(&cfg);
    if (st) return drdc_cli_report("train", st);
    if (A.resume && A.force)
        return drdc_cli_report("train", drdc_fail(DRDC_ERR_USAGE, "--resume continues a run and --force replaces it: "
                                                  "give one"));
    drdc_dist_env env;
    st = drdc_dist_read_env(&env);
    if (st) return drdc_cli_report("train", st);
    if (A.nproc > 1 && !getenv("DRDC_LAUNCHER_PID")) {
        if (env.present)
            return drdc_cli_report("train", drdc_fail(DRDC_ERR_USAGE, "--nproc starts ranks itself, but this process "
                                                      "already is rank %d of %d (RANK and WORLD_SIZE are set, e.g. by "
                                                      "torchrun): leave --nproc out", env.rank, env.world));
        /* the launcher: N copies of this command line, each a rank (threads split between them) */
        char **full = calloc((size_t)argc + 2, sizeof *full);
        if (!full) return drdc_cli_report("train", drdc_fail(DRDC_ERR_NOMEM, "out of memory"));
        full[0] = "drdc";
        for (int i = 0; i < argc; i++) full[1 + i] = argv[i];
        int code = 1;
        st = drdc_dist_launch(full, A.nproc, A.threads, A.dist_timeout > 0 ? A.dist_timeout : 60, &code);
        free(full);
        if (st) return drdc_cli_report("train", st);
        return code;
    }
    char dev[32];
    drdc_runtime rt;
    st = drdc_runtime_init(&rt, drdc_dist_device(&env, A.device, dev, sizeof dev), A.threads);
    if (st) return drdc_cli_report("train", st);
    const drdc_train_request req = {A.stage, A.resume, A.force, A.dist_timeout};
    return drdc_cli_report("train", drdc_train_run(&cfg, &req, &rt));
}
