/* bench.h: `drdc bench`'s engine: times each inference stage of a model built from a config (random
 * weights, or the backbone weights the config names) on a random batch, and prints and writes the
 * figures. It asserts nothing: a benchmark measures. */
#ifndef DRDC_BENCH_H
#define DRDC_BENCH_H

#include "drdc/core/config.h"
#include "drdc/shim/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct drdc_bench_options {
    const char *weights_out;   /* write the benchmarked model here (NULL: no) */
    const char *check_out;     /* write each stage's inputs and outputs here (NULL: no) */
    const char *json;          /* write every measurement here (NULL: no) */
    const char *stages;        /* "backbone,transformer,unet,drdc,fusion" subset; NULL: all */
    int batch;                 /* images per batch; 0: infer.batch */
    int iters, warmup;         /* timed and untimed repetitions per stage */
    int breakdown;             /* also the runs breakdown (steps x K x grids, batching) */
    int seed;                  /* of the random batch and the refiner's randomised weights */
    int no_peak;               /* skip the peak microbenchmarks (GEMM and convolution, fp32 and bf16) */
} drdc_bench_options;

/* Builds the model of cfg on rt's device and times the stages; prints a table on stdout. An unknown
 * stage name is DRDC_ERR_USAGE. */
drdc_status drdc_bench_run(const drdc_bench_options *o, const drdc_config *cfg, const drdc_runtime *rt);

#ifdef __cplusplus
}
#endif
#endif
