/* amx.c: see amx.h. */
#define _GNU_SOURCE
#include "drdc/stages/amx.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#if DRDC_AMX_BUILT
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

static atomic_int g_amx_state;     /* 0 not asked yet, 1 available, -1 not */
static atomic_int g_amx_use = 1;   /* drdc_amx_use */

int drdc_amx_available(void) {
    int s = atomic_load(&g_amx_state);
    if (s) return s > 0;
    s = -1;
#if DRDC_AMX_BUILT
    unsigned a = 0, b = 0, c = 0, d = 0;
    /* CPUID.(7,0):EDX bit 22 AMX-BF16, bit 24 AMX-TILE; then Linux's permission for the tile data
     * (ARCH_REQ_XCOMP_PERM 0x1023, XFEATURE_XTILEDATA 18), once per process */
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 22 & 1u) && (d >> 24 & 1u) && drdc_cpu_avx512(1) &&
        syscall(SYS_arch_prctl, 0x1023, 18) == 0)
        s = 1;
#endif
    atomic_store(&g_amx_state, s);
    return s > 0;
}

int drdc_amx_use(int on) { return atomic_exchange(&g_amx_use, on != 0); }

int drdc_amx_active(void) { return atomic_load(&g_amx_use) && drdc_amx_available(); }

#if DRDC_AMX_BUILT
typedef struct amx_tilecfg {   /* the LDTILECFG operand */
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_tilecfg;

/* A constant in memory: GCC's _tile_loadconfig tells the compiler that it reads 8 bytes of its
 * operand, so a configuration built on the stack lost its rows and columns as dead stores. */
static const amx_tilecfg k_tiles_16x64 = {.palette = 1,
                                          .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
                                          .rows = {16, 16, 16, 16, 16, 16, 16, 16}};

DRDC_TARGET_AMX void drdc_amx_tiles_16x64(void) { _tile_loadconfig(&k_tiles_16x64); }
#endif
