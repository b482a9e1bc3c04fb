/* rng.c: splitmix64, FNV-1a and the per-sample training seeds (see rng.h). */
#include "drdc/core/rng.h"

uint64_t drdc_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t drdc_splitmix64(uint64_t *state) { return drdc_mix64(*state += 0x9E3779B97F4A7C15ull); }

uint64_t drdc_fnv1a64(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

uint64_t drdc_seed_sample(uint64_t stream_seed, int64_t step, int64_t index) {
    uint64_t h = drdc_mix64(stream_seed ^ 0x6A09E667F3BCC909ull);
    h = drdc_mix64(h ^ (uint64_t)step * 0x9E3779B97F4A7C15ull);
    return drdc_mix64(h ^ (uint64_t)(index + 1) * 0xD1B54A32D192ED03ull);
}
