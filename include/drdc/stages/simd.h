/* simd.h: the pieces the stages' CPU kernels share (unet.c's fused norm, attention.c's fused
 * attention, amx_conv.c): bf16 <-> float32, exp on 16 floats, and whether this CPU runs AVX-512
 * code. Header-only, static inline; DRDC_SIMD_AVX512 is 0 where the compiler cannot target x86-64
 * AVX-512 (the kernels then take their other path). */
#ifndef DRDC_STAGES_SIMD_H
#define DRDC_STAGES_SIMD_H

#include <stdint.h>
#include <string.h>

/* bf16 <-> float32. A bf16 is a float32's high half: widening is exact; narrowing rounds to
 * nearest even as libtorch's cast, and a NaN stays NaN (0x7fc0; the rounding alone could carry a
 * NaN's low bits into an infinity). Written on integers so that the compiler vectorises them. */
static inline float drdc_bf16_to_f32(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t drdc_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : r);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define DRDC_SIMD_AVX512 1
#define DRDC_TARGET_AVX512 __attribute__((target("avx512f")))
#define DRDC_TARGET_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))

/* Whether the CPU runs AVX-512 F (bf16 = 1: also BW and BF16). */
static inline int drdc_cpu_avx512(int bf16) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f")) return 0;
    return !bf16 || (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16"));
}

/* The first min(n, 16) lanes, none for n <= 0: a loop's last, partial vector (and the whole
 * vectors past it, where a buffer is padded further). */
static inline __mmask16 drdc_lanes16(int64_t n) {
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

/* exp(x) on 16 floats: Cephes' expf polynomial (about 1 ulp) with vscalefps for the 2^n. x is
 * clamped to [-87.3, 88.4]: below, the result is 2^-126 (callers that need 0 mask it); a NaN
 * lane gives a finite value (vminps returns its second operand for a NaN first one), so callers
 * carry NaN themselves. */
DRDC_TARGET_AVX512 static inline __m512 drdc_exp16(__m512 x) {
    x = _mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f));
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.3365447505531f));
    const __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
    const __m512 z = _mm512_mul_ps(x, x);
    __m512 y = _mm512_fmadd_ps(_mm512_set1_ps(1.9875691500e-4f), x, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_add_ps(_mm512_fmadd_ps(y, z, x), _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(y, fx);
}
/* drdc_f32_to_bf16 on the lanes of y that m selects, stored at p (AVX-512 F only: vpmovdw's store). */
DRDC_TARGET_AVX512 static inline void drdc_store_bf16x16(uint16_t *p, __mmask16 m, __m512 y) {
    const __m512i u = _mm512_castps_si512(y);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), odd), 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(y, y, _CMP_UNORD_Q), _mm512_set1_epi32(0x7fc0));
    _mm512_mask_cvtepi32_storeu_epi16(p, m, r);
}
#else
#define DRDC_SIMD_AVX512 0
static inline int drdc_cpu_avx512(int bf16) {
    (void)bf16;
    return 0;
}
#endif

#endif
