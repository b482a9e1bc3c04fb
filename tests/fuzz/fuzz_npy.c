/* fuzz_npy.c: libFuzzer target for the .npy reader (include/drdc/npy.h). The reader takes a
 * path only, so the input is written to a memfd (fuzz_memfile.h) and read through
 * drdc_npy_read and drdc_npy_read_map; on success every data byte is read. */
#include "fuzz_memfile.h" /* first: it defines _GNU_SOURCE for memfd_create */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "drdc/formats/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static fuzz_memfile g_file;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_memfile_put(&g_file, data, size);
    if (!path) return 0;
    drdc_npy a;
    if (drdc_npy_read(path, &a) == DRDC_OK) {
        if (a.rank < 0 || a.rank > DRDC_NPY_MAX_RANK) __builtin_trap();
        volatile unsigned sum = 0;
        const unsigned char *p = a.data;
        size_t nbytes = a.numel * drdc_npy_dtype_size(a.dtype);
        for (size_t k = 0; k < nbytes; k++) sum += p[k];
        (void)sum;
    }
    drdc_npy_free(&a); /* documented as required after a failure too */
    float *map = NULL;
    int h = 0, w = 0;
    if (drdc_npy_read_map(path, &map, &h, &w) == DRDC_OK) {
        if (h < 0 || w < 0) __builtin_trap();
        volatile float s = 0;
        for (size_t k = 0; k < (size_t)h * (size_t)w; k++) s += map[k];
        (void)s;
        free(map);
    }
    return 0;
}
