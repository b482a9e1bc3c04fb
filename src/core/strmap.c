/* strmap.c: the string -> index map (see strmap.h). */
#include "drdc/core/strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "drdc/core/rng.h"

static size_t home(const char *key, size_t len, size_t cap) {
    return (size_t)drdc_fnv1a64(DRDC_FNV_OFFSET, key, len) & (cap - 1);
}

int drdc_strmap_find(const drdc_strmap *m, const char *key, size_t len, size_t *idx) {
    if (!m->cap) return 0;
    for (size_t j = home(key, len, m->cap);; j = (j + 1) & (m->cap - 1)) {
        const drdc_strmap_slot *s = &m->slots[j];
        if (!s->key) return 0;
        if (s->len == len && memcmp(s->key, key, len) == 0) {
            *idx = s->idx;
            return 1;
        }
    }
}

int drdc_strmap_put(drdc_strmap *m, const char *key, size_t len, size_t idx) {
    if ((m->count + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 64;
        drdc_strmap_slot *ns = calloc(ncap, sizeof *ns);
        if (!ns) return -1;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->slots[i].key) continue;
            size_t j = home(m->slots[i].key, m->slots[i].len, ncap);
            while (ns[j].key) j = (j + 1) & (ncap - 1);
            ns[j] = m->slots[i];
        }
        free(m->slots);
        m->slots = ns;
        m->cap = ncap;
    }
    size_t j = home(key, len, m->cap);
    while (m->slots[j].key) j = (j + 1) & (m->cap - 1);
    m->slots[j].key = key ? key : "";   /* an empty key may come as NULL; the slot must look used */
    m->slots[j].len = len;
    m->slots[j].idx = idx;
    m->count++;
    return 0;
}

void drdc_strmap_free(drdc_strmap *m) {
    free(m->slots);
    m->slots = NULL;
    m->cap = m->count = 0;
}
