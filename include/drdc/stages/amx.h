/* amx.h: what the AMX kernels share (amx_conv.c's convolutions, attention.c's bf16 attention):
 * whether this CPU and kernel let the process use AMX tiles, a process-wide switch for tests and
 * measurements, and the tile configuration they all use (palette 1, eight 16 x 64-byte tiles).
 * DRDC_AMX_BUILT is 0 where the compiler has no AMX intrinsics (the kernels are then never taken). */
#ifndef DRDC_STAGES_AMX_H
#define DRDC_STAGES_AMX_H

#include "drdc/stages/simd.h"

#if DRDC_SIMD_AVX512 && ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11) || \
                         (defined(__clang__) && __clang_major__ >= 12))
#define DRDC_AMX_BUILT 1
/* the kernels' target: AMX tiles and bf16 products, AVX-512 with bf16 conversions around them */
#define DRDC_TARGET_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16")))
#else
#define DRDC_AMX_BUILT 0
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when this CPU has AMX-BF16 and the kernel granted the process its tile data (asked once). */
int drdc_amx_available(void);

/* drdc_amx_use(0) makes drdc_amx_active() 0 from then on (the callers take their other path), (1)
 * (the default) restores it; returns the previous setting (process-wide). */
int drdc_amx_use(int on);

/* drdc_amx_available() and the switch on. */
int drdc_amx_active(void);

#if DRDC_AMX_BUILT
/* A compiler barrier: GCC's _tile_loadd does not tell the compiler that it reads memory, so C stores
 * into a buffer that a tile then loads (a staged tile, the softmax's weights) must be fenced from it
 * on both sides, or the compiler may drop or delay them, or move the next ones above the load.
 * _tile_stored clobbers memory itself (and volatile asm keeps its order). */
#define DRDC_AMX_FENCE() __asm__ __volatile__("" ::: "memory")

/* Loads the tile configuration on this thread: tiles 0-7 of 16 rows x 64 bytes (a kernel's task
 * calls it first and _tile_release() last). */
void drdc_amx_tiles_16x64(void);
#endif

#ifdef __cplusplus
}
#endif

#endif
