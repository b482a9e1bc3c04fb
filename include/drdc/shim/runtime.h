/* runtime.h: the one place where a command picks its device and thread count.
 * --device cpu|cuda|cuda:N|auto (auto: the first CUDA device when there is one, else cpu);
 * --threads N (0 = all online cores; libtorch may otherwise start with one). */
#ifndef DRDC_RUNTIME_H
#define DRDC_RUNTIME_H

#include "drdc/core/error.h"
#include "drdc/shim/shim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct drdc_runtime {
    dt_device device;
    int threads;
    char device_name[32];   /* "cpu", "cuda:0" */
} drdc_runtime;

drdc_status drdc_runtime_init(drdc_runtime *rt, const char *device_arg, int threads);

/* Number of online CPU cores (at least 1). */
int drdc_cpu_count(void);

/* 1 when the CPU lists `flag` in /proc/cpuinfo (e.g. "avx512_bf16", "amx_bf16"); 0 otherwise or
 * when it cannot be read. */
int drdc_cpu_has_flag(const char *flag);

#ifdef __cplusplus
}
#endif
#endif
