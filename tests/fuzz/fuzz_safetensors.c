/* fuzz_safetensors.c: libFuzzer target for drdc_st_parse (include/drdc/safetensors.h).
 * Parses the input as a safetensors image, and on success touches everything a caller may
 * touch: each tensor's view (every byte is read, small tensors are converted to float32),
 * lookups by name, shape checks and the metadata, so a view past the buffer shows under ASan. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "drdc/formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    drdc_st_file *f = NULL;
    if (drdc_st_parse(&f, data, size, "fuzz.safetensors") != DRDC_OK) {
        if (f) __builtin_trap(); /* a failed parse must leave no result */
        return 0;
    }
    volatile unsigned sum = 0;
    int n = drdc_st_count(f);
    for (int i = 0; i < n; i++) {
        const drdc_st_tensor *t = drdc_st_at(f, i);
        if (!t || !t->name) __builtin_trap();
        if (t->nbytes != (size_t)t->numel * drdc_st_dtype_size(t->dtype)) __builtin_trap();
        const unsigned char *p = t->data;
        for (size_t k = 0; k < t->nbytes; k++) sum += p[k];
        if (drdc_st_find(f, t->name) == NULL) __builtin_trap();
        const drdc_st_tensor *got = NULL;
        if (drdc_st_expect(f, t->name, t->ndim, t->shape, &got) != DRDC_OK) __builtin_trap();
        if (t->numel <= 4096) {
            float *dst = malloc(((size_t)t->numel + 1) * sizeof(float));
            if (dst) {
                drdc_st_to_f32(t, dst, (size_t)t->numel);
                free(dst);
            }
        }
    }
    int m = drdc_st_meta_count(f);
    for (int i = 0; i < m; i++) {
        const char *k = NULL, *v = NULL;
        if (drdc_st_meta_at(f, i, &k, &v) != 0) __builtin_trap();
        sum += (unsigned)strlen(k) + (unsigned)strlen(v);
        (void)drdc_st_meta(f, k);
    }
    (void)sum;
    drdc_st_close(f);
    return 0;
}
