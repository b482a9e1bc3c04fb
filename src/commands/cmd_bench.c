/* cmd_bench.c: `drdc bench`: the options and config of a speed measurement; the measuring is the
 * model layer's (model/bench.c). */
#include "drdc/commands/commands.h"
#include "drdc/model/bench.h"
#include "drdc/model/model.h"

#include <stdio.h>
#include <string.h>

static struct {
    const char *config, *device, *weights_out, *json, *stages, *check_out;
    int batch, size, iters, warmup, threads, breakdown, seed, no_peak;
    drdc_opt_multi set;
} A;

static const drdc_option OPTIONS[] = {
    {"--config", "FILE", DRDC_OPT_STRING, &A.config,
     "config JSON (required); a bare name is also looked up in configs/ (e.g. tiny.json)", NULL, 0, 0},
    {"--set", "KEY=VALUE", DRDC_OPT_MULTI, &A.set, "override a config key, e.g. --set infer.steps=10 (repeatable)",
     NULL, 0, 0},
    {"--batch", "N", DRDC_OPT_INT, &A.batch, "images per batch", "infer.batch", 1, 100000},
    {"--size", "PX", DRDC_OPT_INT, &A.size, "image size: sets data.image_size and refiner.image_size", "the config's",
     16, 8192},
    {"--iters", "N", DRDC_OPT_INT, &A.iters, "timed repetitions per stage (the median is reported)", "5", 1, 100000},
    {"--warmup", "N", DRDC_OPT_INT, &A.warmup, "untimed repetitions before timing", "1", 0, 100000},
    {"--stages", "LIST", DRDC_OPT_STRING, &A.stages, "stages to time: backbone,base,unet,drdc,fusion",
     "all", 0, 0},
    {"--runs-breakdown", NULL, DRDC_OPT_FLAG, &A.breakdown,
     "also time DRDC over several (steps, K, grids) and the refiner run one at a time vs batched", NULL, 0, 0},
    {"--weights-out", "FILE", DRDC_OPT_STRING, &A.weights_out, "write the benchmarked model (drdc model file)", NULL,
     0, 0},
    {"--check-out", "FILE", DRDC_OPT_STRING, &A.check_out,
     "write each stage's inputs and outputs (safetensors) for a twin to compare", NULL, 0, 0},
    {"--json", "FILE", DRDC_OPT_STRING, &A.json, "write every measurement as JSON", NULL, 0, 0},
    {"--no-peak", NULL, DRDC_OPT_FLAG, &A.no_peak, "skip the machine-peak microbenchmarks (GEMM, convolution)", NULL,
     0, 0},
    {"--seed", "S", DRDC_OPT_INT, &A.seed, "seed of the random batch and of the refiner's randomised weights", "1", 0,
     2147483647},
    DRDC_OPTS_RUNTIME(&A.device, &A.threads),
};

static const drdc_command SPEC = {
    "bench", "drdc bench --config FILE [options]",
    "Measure inference speed on a random batch with the config's network (random weights, or the\n"
    "backbone weights the config names): backbone features, base transformer, one U-Net call as the\n"
    "DRDC pass makes it (one image's K*G runs, or the batch's with infer.batch_refiner), the whole DRDC\n"
    "pass and the fusion alone; ms per call, ms per image, images/s and peak memory; per stage the\n"
    "FLOPs it does (from the layer shapes) and the GFLOP/s it reaches, next to the machine's peak\n"
    "measured in the same run by GEMM and convolution microbenchmarks through the same libtorch (fp32,\n"
    "and bf16 where the CPU has it); --set infer.precision=bf16 runs the stages under bf16 autocast.\n"
    "On the CPU, under the unet row: one pass of the call by kind of work (convolutions and their own\n"
    "GFLOP/s, norms, attention heads, adds / concatenation / upsampling, the rest), from --iters more calls.\n"
    "Times are device-synchronised wall clock, warm-up excluded, median of --iters. The refiner's\n"
    "zero-initialised layers are randomised (same cost, non-trivial outputs). scripts/bench/bench.py\n"
    "compares these numbers with the PyTorch twins.",
    OPTIONS, (int)(sizeof OPTIONS / sizeof OPTIONS[0])};

const drdc_command *drdc_bench_spec(void) { return &SPEC; }

static drdc_status resolve_config(drdc_config *cfg) {
    char path[DRDC_PATH_CAP];
    drdc_status st = drdc_config_resolve(cfg, A.config, A.set.values, A.set.n, path, sizeof path);
    if (st) return st;
    if (A.size) cfg->data.image_size = cfg->refiner.image_size = A.size;
    st = drdc_model_check_config(cfg);
    if (st && A.size) return drdc_error_context(st, "%s with --size %d", path, A.size);
    return st ? drdc_error_context(st, "%s", path) : DRDC_OK;
}

int drdc_cmd_bench(int argc, char **argv) {
    memset(&A, 0, sizeof A);
    A.iters = 5;
    A.warmup = 1;
    A.seed = 1;
    int rc = drdc_cli_begin(&SPEC, argc, argv);
    if (rc >= 0) return rc;
    drdc_status st;
    if (!A.config) return drdc_cli_report("bench", drdc_fail(DRDC_ERR_USAGE, "--config FILE is required"));
    drdc_runtime rt;
    st = drdc_runtime_init(&rt, A.device, A.threads);
    if (st) return drdc_cli_report("bench", st);
    drdc_config cfg;
    st = resolve_config(&cfg);
    if (st) return drdc_cli_report("bench", st);
    const drdc_bench_options o = {A.weights_out, A.check_out, A.json, A.stages, A.batch, A.iters,
                                  A.warmup, A.breakdown, A.seed, A.no_peak};
    return drdc_cli_report("bench", drdc_bench_run(&o, &cfg, &rt));
}
