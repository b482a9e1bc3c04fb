/* bytes.h: little-endian integer reads and printable excerpts of untrusted bytes, shared by the
 * binary readers (zip.c, pickle.c, pth.c). Header-only. Reads do no bounds checks: the caller
 * has checked that the bytes are there. */
#ifndef DRDC_BYTES_H
#define DRDC_BYTES_H

#include <stddef.h>
#include <stdint.h>

static inline uint16_t drdc_rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t drdc_rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t drdc_rd64(const uint8_t *p) { return (uint64_t)drdc_rd32(p) | ((uint64_t)drdc_rd32(p + 4) << 32); }

/* s[0..n) for a message in buf (cap >= 5): at most cap - 4 bytes, non-printables as '?', "..."
 * when cut. Returns buf. */
static inline const char *drdc_shown(const char *s, size_t n, char *buf, size_t cap) {
    size_t m = n < cap - 4 ? n : cap - 4, j = 0;
    for (size_t i = 0; i < m; i++) buf[j++] = (s[i] >= 32 && s[i] < 127) ? s[i] : '?';
    if (m < n) { buf[j++] = '.'; buf[j++] = '.'; buf[j++] = '.'; }
    buf[j] = '\0';
    return buf;
}

#endif
