/* fuzz_pth.c: libFuzzer target for drdc_pth_parse (include/drdc/pth.h): the zip and legacy
 * containers and the pickle VM. On success every output tensor is read in full and looked up
 * by name. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "drdc/formats/pth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    drdc_pth_file *f = NULL;
    if (drdc_pth_parse(&f, data, size, "fuzz.pth") != DRDC_OK) {
        if (f) __builtin_trap(); /* on failure *out is NULL (header contract) */
        return 0;
    }
    volatile unsigned sum = 0;
    int n = drdc_pth_count(f);
    for (int i = 0; i < n; i++) {
        const drdc_pth_tensor *t = drdc_pth_at(f, i);
        if (!t || !t->name || !t->data) __builtin_trap();
        if (t->nbytes != (size_t)t->numel * drdc_st_dtype_size(t->dtype)) __builtin_trap();
        const unsigned char *p = t->data;
        for (size_t k = 0; k < t->nbytes; k++) sum += p[k];
        if (!drdc_pth_find(f, t->name)) __builtin_trap();
    }
    sum += (unsigned)drdc_pth_skipped(f) + (unsigned)drdc_pth_get_format(f);
    (void)sum;
    drdc_pth_free(f);
    return 0;
}
