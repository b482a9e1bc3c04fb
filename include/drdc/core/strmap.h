/* strmap.h: a map from byte strings to indices (open addressing, FNV-1a), for the readers that
 * look names up in untrusted files (zip entry names, pickle storage keys). Keys are borrowed, not
 * copied: they must outlive the map. A zeroed struct is an empty map. */
#ifndef DRDC_STRMAP_H
#define DRDC_STRMAP_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct drdc_strmap_slot {
    const char *key;   /* NULL: free slot */
    size_t len;
    size_t idx;
} drdc_strmap_slot;

typedef struct drdc_strmap {
    drdc_strmap_slot *slots;   /* (cap) cap is 0 or a power of two, at most half full */
    size_t cap, count;
} drdc_strmap;

/* 1 and *idx when key[0..len) is in the map, else 0. */
int drdc_strmap_find(const drdc_strmap *m, const char *key, size_t len, size_t *idx);

/* Adds key[0..len) -> idx; the key must not be in the map yet. 0, or -1 when out of memory. */
int drdc_strmap_put(drdc_strmap *m, const char *key, size_t len, size_t idx);

void drdc_strmap_free(drdc_strmap *m);   /* leaves it empty */

#ifdef __cplusplus
}
#endif
#endif
