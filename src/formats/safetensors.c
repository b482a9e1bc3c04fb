/* safetensors.c: the safetensors reader (checks every header entry, each problem with its own
 * message) and the atomic writer. See include/drdc/safetensors.h. */
#define _POSIX_C_SOURCE 200809L
#include "drdc/formats/safetensors.h"
#include "drdc/core/fsutil.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- dtypes ----------------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} k_dtypes[DRDC_ST_DTYPE_COUNT] = {
    [DRDC_ST_F32] = {"F32", 4},  [DRDC_ST_F16] = {"F16", 2}, [DRDC_ST_BF16] = {"BF16", 2},
    [DRDC_ST_F64] = {"F64", 8},  [DRDC_ST_I64] = {"I64", 8}, [DRDC_ST_I32] = {"I32", 4},
    [DRDC_ST_I16] = {"I16", 2},  [DRDC_ST_I8] = {"I8", 1},   [DRDC_ST_U8] = {"U8", 1},
    [DRDC_ST_BOOL] = {"BOOL", 1}, [DRDC_ST_U16] = {"U16", 2}, [DRDC_ST_U32] = {"U32", 4},
    [DRDC_ST_U64] = {"U64", 8},
};

const char *drdc_st_dtype_name(drdc_st_dtype dtype) {
    if ((int)dtype < 0 || dtype >= DRDC_ST_DTYPE_COUNT) return "?";
    return k_dtypes[dtype].name;
}

size_t drdc_st_dtype_size(drdc_st_dtype dtype) {
    if ((int)dtype < 0 || dtype >= DRDC_ST_DTYPE_COUNT) return 0;
    return k_dtypes[dtype].size;
}

int drdc_st_dtype_from_name(const char *name, drdc_st_dtype *out) {
    for (int i = 0; i < DRDC_ST_DTYPE_COUNT; i++) {
        if (name && strcmp(name, k_dtypes[i].name) == 0) {
            *out = (drdc_st_dtype)i;
            return 0;
        }
    }
    return -1;
}

/* ---- scalar conversions ------------------------------------------------------------------- */

static float bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

float drdc_st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        if (mant == 0) return bits_to_f32(sign);
        float v = ldexpf((float)mant, -24); /* subnormal: mant * 2^-24 */
        return sign ? -v : v;
    }
    if (exp == 31) return bits_to_f32(sign | 0x7f800000u | (mant << 13));
    return bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t drdc_st_f32_to_f16(float f) {
    uint32_t x = f32_to_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* infinity or NaN (keep NaN quiet and non-zero) */
        return sign | 0x7c00u | (absx > 0x7f800000u ? (0x200u | ((absx >> 13) & 0x3ffu)) : 0u);
    if (absx >= 0x477ff000u) return sign | 0x7c00u; /* >= 65520 rounds to infinity */
    if (absx < 0x38800000u) {                       /* below 2^-14: subnormal half or zero */
        if (absx < 0x33000000u) return sign;        /* <= 2^-25 rounds to zero */
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)e; /* 14..24 */
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (half & 1u))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t r = absx - 0x38000000u; /* rebias exponent 127 -> 15 */
    uint32_t half = r >> 13;
    uint32_t rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) half++;
    return (uint16_t)(sign | half);
}

float drdc_st_bf16_to_f32(uint16_t b) { return bits_to_f32((uint32_t)b << 16); }

uint16_t drdc_st_f32_to_bf16(float f) {
    uint32_t x = f32_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* Little-endian loads from possibly unaligned memory. */
static uint64_t load_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

drdc_status drdc_st_to_f32(const drdc_st_tensor *t, float *dst, size_t count) {
    if ((int64_t)count != t->numel)
        return drdc_fail(DRDC_ERR_INPUT, "%s: tensor '%s': has %lld elements, buffer holds %zu",
                         t->file, t->name, (long long)t->numel, count);
    const unsigned char *p = (const unsigned char *)t->data;
    size_t es = drdc_st_dtype_size(t->dtype);
    for (size_t i = 0; i < count; i++, p += es) {
        uint64_t v = load_le(p, (int)es);
        float out;
        switch (t->dtype) {
        case DRDC_ST_F32: out = bits_to_f32((uint32_t)v); break;
        case DRDC_ST_F16: out = drdc_st_f16_to_f32((uint16_t)v); break;
        case DRDC_ST_BF16: out = drdc_st_bf16_to_f32((uint16_t)v); break;
        case DRDC_ST_F64: {
            double d;
            memcpy(&d, &v, 8);
            out = (float)d;
            break;
        }
        case DRDC_ST_I64: out = (float)(int64_t)v; break;
        case DRDC_ST_I32: out = (float)(int32_t)(uint32_t)v; break;
        case DRDC_ST_I16: out = (float)(int16_t)(uint16_t)v; break;
        case DRDC_ST_I8: out = (float)(int8_t)(uint8_t)v; break;
        case DRDC_ST_U8: case DRDC_ST_U16: case DRDC_ST_U32: case DRDC_ST_U64: out = (float)v; break;
        case DRDC_ST_BOOL: out = v ? 1.0f : 0.0f; break;
        default:
            return drdc_fail(DRDC_ERR_INPUT, "%s: tensor '%s': dtype %s cannot be converted to F32",
                             t->file, t->name, drdc_st_dtype_name(t->dtype));
        }
        dst[i] = out;
    }
    return DRDC_OK;
}

/* ---- reader ------------------------------------------------------------------------------ */

struct drdc_st_file {
    char *source;                /* name for messages (owned copy) */
    unsigned char *owned;        /* the bytes when drdc_st_open read them, else NULL */
    const unsigned char *bytes;  /* the whole image */
    size_t size;
    cJSON *header;               /* parsed header; names and metadata point into it */
    int n;
    drdc_st_tensor *tensors;     /* [n] in header order */
    int *by_name;                /* [n] indices sorted by name, for lookup */
    int n_meta;
    const char **meta_keys;      /* [n_meta] */
    const char **meta_values;    /* [n_meta] */
};

void drdc_st_close(drdc_st_file *f) {
    if (!f) return;
    free(f->source);
    free(f->owned);
    cJSON_Delete(f->header);
    free(f->tensors);
    free(f->by_name);
    free(f->meta_keys);
    free(f->meta_values);
    free(f);
}

/* A JSON number that is an exact integer within +-2^53 (what a double holds exactly). */
static int json_integer(const cJSON *item, int64_t *out) {
    if (!cJSON_IsNumber(item)) return 0;
    double v = item->valuedouble;
    if (!(v >= -9007199254740992.0 && v <= 9007199254740992.0) || v != floor(v)) return 0;
    *out = (int64_t)v;
    return 1;
}

static _Thread_local const drdc_st_tensor *t_sort_tensors;

static int cmp_by_name(const void *a, const void *b) {
    const drdc_st_tensor *t = t_sort_tensors;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

static int cmp_by_offset(const void *a, const void *b) {
    const drdc_st_tensor *t = t_sort_tensors;
    int ia = *(const int *)a, ib = *(const int *)b;
    if (t[ia].offset != t[ib].offset) return t[ia].offset < t[ib].offset ? -1 : 1;
    return ia - ib;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static drdc_status parse_metadata(drdc_st_file *f, const cJSON *meta) {
    const char *src = f->source;
    if (!cJSON_IsObject(meta))
        return drdc_fail(DRDC_ERR_FORMAT, "%s: __metadata__ is not an object of string values", src);
    int n = cJSON_GetArraySize(meta);
    f->meta_keys = calloc(n ? (size_t)n : 1, sizeof *f->meta_keys);
    f->meta_values = calloc(n ? (size_t)n : 1, sizeof *f->meta_values);
    if (!f->meta_keys || !f->meta_values) return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory", src);
    int i = 0;
    for (const cJSON *it = meta->child; it; it = it->next, i++) {
        if (!cJSON_IsString(it))
            return drdc_fail(DRDC_ERR_FORMAT, "%s: __metadata__ value of key '%.200s' is not a string",
                             src, it->string);
        f->meta_keys[i] = it->string;
        f->meta_values[i] = it->valuestring;
    }
    f->n_meta = i;
    /* duplicate metadata keys */
    const char **sorted = malloc((n ? (size_t)n : 1) * sizeof *sorted);
    if (!sorted) return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory", src);
    memcpy(sorted, f->meta_keys, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_str_ptr);
    for (int k = 1; k < n; k++) {
        if (strcmp(sorted[k - 1], sorted[k]) == 0) {
            drdc_status st = drdc_fail(DRDC_ERR_FORMAT, "%s: __metadata__ has duplicate key '%.200s'",
                                       src, sorted[k]);
            free(sorted);
            return st;
        }
    }
    free(sorted);
    return DRDC_OK;
}

/* Checks one tensor entry and fills t (except data, which needs the data area's start). */
static drdc_status parse_entry(const drdc_st_file *f, const cJSON *e, size_t data_size, drdc_st_tensor *t) {
    const char *src = f->source;
    const char *name = e->string;
    memset(t, 0, sizeof *t);
    t->name = name;
    t->file = src;
    if (!cJSON_IsObject(e))
        return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%.200s': entry is not an object", src, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!dtype) return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%.200s': missing \"dtype\"", src, name);
    if (!cJSON_IsString(dtype))
        return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%.200s': \"dtype\" is not a string", src, name);
    if (!shape) return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%.200s': missing \"shape\"", src, name);
    if (!cJSON_IsArray(shape))
        return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%.200s': \"shape\" is not an array", src, name);
    if (!offs) return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%.200s': missing \"data_offsets\"", src, name);
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%.200s': \"data_offsets\" is not an array of 2 integers",
                         src, name);
    if (drdc_st_dtype_from_name(dtype->valuestring, &t->dtype) != 0)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%.200s': unknown dtype '%.40s'", src, name,
                         dtype->valuestring);
    int rank = cJSON_GetArraySize(shape);
    if (rank > DRDC_ST_MAX_RANK)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%.200s': rank %d exceeds the limit of %d", src, name,
                         rank, DRDC_ST_MAX_RANK);
    t->ndim = rank;
    int d = 0;
    int any_zero = 0;
    for (const cJSON *it = shape->child; it; it = it->next, d++) {
        int64_t v;
        if (!json_integer(it, &v))
            return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%.200s': shape entry %d is not an integer", src,
                             name, d);
        if (v < 0)
            return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%.200s': negative dimension %lld in shape", src,
                             name, (long long)v);
        t->shape[d] = v;
        if (v == 0) any_zero = 1;
    }
    int64_t begin, end;
    if (!json_integer(offs->child, &begin) || !json_integer(offs->child->next, &end) || begin < 0 || end < 0)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%.200s': \"data_offsets\" is not an array of 2 "
                         "non-negative integers", src, name);
    if (begin > end)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%.200s': data_offsets begin %lld > end %lld", src,
                         name, (long long)begin, (long long)end);
    if ((uint64_t)end > (uint64_t)data_size)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%.200s': data_offsets [%lld, %lld] lie outside the "
                         "data area of %zu bytes (the file is truncated or corrupt)", src, name, (long long)begin,
                         (long long)end, data_size);
    /* numel * element size, with overflow checks (a zero dim makes everything 0) */
    uint64_t numel = 1;
    if (any_zero) {
        numel = 0;
    } else {
        for (int k = 0; k < rank; k++) {
            if (__builtin_mul_overflow(numel, (uint64_t)t->shape[k], &numel) || numel > (uint64_t)INT64_MAX)
                return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%.200s': element count of the shape overflows",
                                 src, name);
        }
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, (uint64_t)drdc_st_dtype_size(t->dtype), &nbytes))
        return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%.200s': byte size of the shape overflows", src, name);
    if (nbytes != (uint64_t)(end - begin))
        return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%.200s': size mismatch: %llu elements of %s need %llu "
                         "bytes but data_offsets span %lld", src, name, (unsigned long long)numel,
                         drdc_st_dtype_name(t->dtype), (unsigned long long)nbytes, (long long)(end - begin));
    t->numel = (int64_t)numel;
    t->nbytes = (size_t)nbytes;
    t->offset = (size_t)begin;
    return DRDC_OK;
}

static drdc_status parse_file(drdc_st_file *f) {
    const char *src = f->source;
    int *by_off = NULL;
    drdc_status st = DRDC_OK;
    if (f->size < 8)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: file is %zu bytes, shorter than the 8-byte header length",
                         src, f->size);
    uint64_t hlen = load_le(f->bytes, 8);
    if (hlen > DRDC_ST_MAX_HEADER)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: header length %llu is absurd (limit %u bytes); not a "
                         "safetensors file?", src, (unsigned long long)hlen, DRDC_ST_MAX_HEADER);
    if (hlen > f->size - 8)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%zu bytes): "
                         "truncated or not a safetensors file",
                         src, (unsigned long long)hlen, f->size);
    const char *htext = (const char *)f->bytes + 8;
    const char *end = NULL;
    f->header = cJSON_ParseWithLengthOpts(htext, (size_t)hlen, &end, 0);
    if (!f->header) {
        const char *ep = cJSON_GetErrorPtr();
        long at = (ep && ep >= htext && ep <= htext + hlen) ? (long)(ep - htext) : -1;
        return drdc_fail(DRDC_ERR_FORMAT, "%s: header is not valid JSON (error at byte %ld of %llu)", src,
                         at, (unsigned long long)hlen);
    }
    for (const char *p = end; p && p < htext + hlen; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            return drdc_fail(DRDC_ERR_FORMAT, "%s: header has trailing bytes after the JSON (at byte %ld)",
                             src, (long)(p - htext));
    }
    if (!cJSON_IsObject(f->header))
        return drdc_fail(DRDC_ERR_FORMAT, "%s: header is not a JSON object", src);

    const unsigned char *data = f->bytes + 8 + hlen;
    size_t data_size = f->size - 8 - (size_t)hlen;
    int n_entries = cJSON_GetArraySize(f->header);
    f->tensors = calloc(n_entries ? (size_t)n_entries : 1, sizeof *f->tensors);
    f->by_name = calloc(n_entries ? (size_t)n_entries : 1, sizeof *f->by_name);
    if (!f->tensors || !f->by_name) return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory", src);
    int n = 0, n_meta_entries = 0;
    for (const cJSON *e = f->header->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (n_meta_entries++)
                return drdc_fail(DRDC_ERR_FORMAT, "%s: duplicate name '__metadata__' in header", src);
            TRY(parse_metadata(f, e));
            continue;
        }
        TRY(parse_entry(f, e, data_size, &f->tensors[n]));
        f->tensors[n].data = data + f->tensors[n].offset;
        f->by_name[n] = n;
        n++;
    }
    f->n = n;

    t_sort_tensors = f->tensors;
    qsort(f->by_name, (size_t)n, sizeof *f->by_name, cmp_by_name);
    for (int k = 1; k < n; k++) {
        const char *a = f->tensors[f->by_name[k - 1]].name, *b = f->tensors[f->by_name[k]].name;
        if (strcmp(a, b) == 0)
            return drdc_fail(DRDC_ERR_FORMAT, "%s: duplicate tensor name '%.200s' in header", src, a);
    }
    /* overlap: by begin offset; each non-empty tensor must start at or after the furthest end so far */
    by_off = malloc((n ? (size_t)n : 1) * sizeof *by_off);
    if (!by_off) return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory", src);
    for (int k = 0; k < n; k++) by_off[k] = k;
    qsort(by_off, (size_t)n, sizeof *by_off, cmp_by_offset);
    int last = -1;
    size_t last_end = 0;
    for (int k = 0; k < n; k++) {
        const drdc_st_tensor *t = &f->tensors[by_off[k]];
        if (t->nbytes == 0) continue;
        if (last >= 0 && t->offset < last_end) {
            st = drdc_fail(DRDC_ERR_FORMAT, "%s: tensors '%.200s' and '%.200s' overlap in the data area", src,
                           f->tensors[last].name, t->name);
            goto done;
        }
        if (last < 0 || t->offset + t->nbytes > last_end) {
            last_end = t->offset + t->nbytes;
            last = by_off[k];
        }
    }
done:
    free(by_off);
    return st;
}

static drdc_status new_file(drdc_st_file **out, const char *source_name) {
    drdc_st_file *f = calloc(1, sizeof *f);
    if (!f) return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory", source_name);
    f->source = strdup(source_name);
    if (!f->source) {
        free(f);
        return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory", source_name);
    }
    *out = f;
    return DRDC_OK;
}

drdc_status drdc_st_parse(drdc_st_file **out, const void *data, size_t size, const char *source_name) {
    *out = NULL;
    drdc_st_file *f = NULL;
    drdc_status st = DRDC_OK;
    TRY(new_file(&f, source_name ? source_name : "<memory>"));
    f->bytes = data;
    f->size = size;
    if (!data && size) {
        st = drdc_fail(DRDC_ERR_INPUT, "%s: no data", source_name ? source_name : "<memory>");
        goto done;
    }
    TRY(parse_file(f));
    *out = f;
    f = NULL;
done:
    drdc_st_close(f);
    return st;
}

drdc_status drdc_st_open(drdc_st_file **out, const char *path) {
    *out = NULL;
    int fd = -1;
    drdc_status st0 = drdc_open_input(path, &fd);
    if (st0) return st0;
    unsigned char *buf = NULL;
    drdc_st_file *f = NULL;
    drdc_status st = DRDC_OK;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int err = errno;
        st = drdc_fail(DRDC_ERR_IO, "%s: not a regular file%s%s", path, err ? ": " : "", err ? strerror(err) : "");
        goto done;
    }
    size_t size = (size_t)sb.st_size;
    buf = malloc(size ? size : 1);
    if (!buf) {
        st = drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, size);
        goto done;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int err = r < 0 ? errno : 0;
            st = drdc_fail(DRDC_ERR_IO, "%s: read failed after %zu of %zu bytes%s%s", path, got, size,
                           err ? ": " : "", err ? strerror(err) : "");
            goto done;
        }
        got += (size_t)r;
    }
    close(fd);
    fd = -1;
    TRY(new_file(&f, path));
    f->owned = buf;
    f->bytes = buf;
    f->size = size;
    buf = NULL;   /* now f's */
    TRY(parse_file(f));
    *out = f;
    f = NULL;
done:
    if (fd >= 0) close(fd);
    free(buf);
    drdc_st_close(f);
    return st;
}

const char *drdc_st_source(const drdc_st_file *f) { return f->source; }

int drdc_st_count(const drdc_st_file *f) { return f->n; }

const drdc_st_tensor *drdc_st_at(const drdc_st_file *f, int i) {
    return (i >= 0 && i < f->n) ? &f->tensors[i] : NULL;
}

const drdc_st_tensor *drdc_st_find(const drdc_st_file *f, const char *name) {
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const drdc_st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

drdc_status drdc_st_get(const drdc_st_file *f, const char *name, const drdc_st_tensor **out) {
    const drdc_st_tensor *t = drdc_st_find(f, name);
    if (out) *out = t;
    if (!t) return drdc_fail(DRDC_ERR_FORMAT, "%s: no tensor '%s'", f->source, name);
    return DRDC_OK;
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t used = 0;
    used += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < cap) snprintf(buf + used, cap - used, "]");
}

drdc_status drdc_st_expect(const drdc_st_file *f, const char *name, int ndim, const int64_t *shape,
                           const drdc_st_tensor **out) {
    const drdc_st_tensor *t = NULL;
    drdc_status st = DRDC_OK;
    TRY(drdc_st_get(f, name, &t));
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        if (shape[i] != -1 && shape[i] != t->shape[i]) ok = 0;
    if (!ok) {
        char got[200], want[200];
        format_shape(got, sizeof got, t->ndim, t->shape);
        format_shape(want, sizeof want, ndim, shape);
        st = drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s", f->source, name, got, want);
    }
done:
    if (out) *out = t;   /* the tensor found (NULL if none), even when its shape is wrong */
    return st;
}

const char *drdc_st_meta(const drdc_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

int drdc_st_meta_count(const drdc_st_file *f) { return f->n_meta; }

int drdc_st_meta_at(const drdc_st_file *f, int i, const char **key, const char **value) {
    if (i < 0 || i >= f->n_meta) return -1;
    if (key) *key = f->meta_keys[i];
    if (value) *value = f->meta_values[i];
    return 0;
}

/* ---- writer ------------------------------------------------------------------------------ */

typedef struct wtensor {
    char *name;
    drdc_st_dtype dtype;
    int ndim;
    int64_t shape[DRDC_ST_MAX_RANK];
    const void *data; /* the bytes to write (owned or borrowed) */
    void *owned;      /* our copy, or NULL when borrowed */
    size_t nbytes;
} wtensor;

struct drdc_st_writer {
    wtensor *t;
    int n, cap;
    char **meta_keys, **meta_values;
    int n_meta, meta_cap;
};

drdc_status drdc_st_writer_new(drdc_st_writer **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return drdc_fail(DRDC_ERR_NOMEM, "safetensors writer: out of memory");
    return DRDC_OK;
}

void drdc_st_writer_free(drdc_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].owned);
    }
    free(w->t);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->meta_keys);
    free(w->meta_values);
    free(w);
}

static drdc_status writer_add(drdc_st_writer *w, const char *name, drdc_st_dtype dtype, int ndim,
                              const int64_t *shape, const void *data, size_t nbytes, int copy) {
    if (!name || !*name) return drdc_fail(DRDC_ERR_INPUT, "safetensors writer: empty tensor name");
    if (strcmp(name, "__metadata__") == 0)
        return drdc_fail(DRDC_ERR_INPUT, "safetensors writer: '__metadata__' is reserved, not a tensor name");
    if (drdc_st_dtype_size(dtype) == 0)
        return drdc_fail(DRDC_ERR_INPUT, "safetensors writer: tensor '%s': unknown dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > DRDC_ST_MAX_RANK)
        return drdc_fail(DRDC_ERR_INPUT, "safetensors writer: tensor '%s': rank %d outside 0..%d", name, ndim,
                         DRDC_ST_MAX_RANK);
    uint64_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return drdc_fail(DRDC_ERR_INPUT, "safetensors writer: tensor '%s': negative dimension %lld", name,
                             (long long)shape[i]);
        if (__builtin_mul_overflow(numel, (uint64_t)shape[i], &numel)) overflow = 1;
    }
    uint64_t want;
    if (overflow || __builtin_mul_overflow(numel, (uint64_t)drdc_st_dtype_size(dtype), &want) ||
        want != (uint64_t)nbytes)
        return drdc_fail(DRDC_ERR_INPUT, "safetensors writer: tensor '%s': shape and %s need %llu bytes, "
                         "got %zu", name, drdc_st_dtype_name(dtype), overflow ? 0ULL : (unsigned long long)want,
                         nbytes);
    if (nbytes && !data)
        return drdc_fail(DRDC_ERR_INPUT, "safetensors writer: tensor '%s': no data", name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return drdc_fail(DRDC_ERR_INPUT, "safetensors writer: duplicate tensor name '%s'", name);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        wtensor *nt = realloc(w->t, (size_t)cap * sizeof *nt);
        if (!nt) return drdc_fail(DRDC_ERR_NOMEM, "safetensors writer: out of memory");
        w->t = nt;
        w->cap = cap;
    }
    wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (copy && nbytes) {
        t->owned = malloc(nbytes);
        if (t->owned) memcpy(t->owned, data, nbytes);
    }
    if (!t->name || (copy && nbytes && !t->owned)) {
        free(t->name);
        free(t->owned);
        return drdc_fail(DRDC_ERR_NOMEM, "safetensors writer: tensor '%s': out of memory (%zu bytes)", name,
                         nbytes);
    }
    t->data = copy ? t->owned : data;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = nbytes;
    w->n++;
    return DRDC_OK;
}

drdc_status drdc_st_writer_add(drdc_st_writer *w, const char *name, drdc_st_dtype dtype, int ndim,
                               const int64_t *shape, const void *data, size_t nbytes) {
    return writer_add(w, name, dtype, ndim, shape, data, nbytes, 1);
}

drdc_status drdc_st_writer_add_borrowed(drdc_st_writer *w, const char *name, drdc_st_dtype dtype, int ndim,
                                        const int64_t *shape, const void *data, size_t nbytes) {
    return writer_add(w, name, dtype, ndim, shape, data, nbytes, 0);
}

drdc_status drdc_st_writer_set_meta(drdc_st_writer *w, const char *key, const char *value) {
    if (!key || !value) return drdc_fail(DRDC_ERR_INPUT, "safetensors writer: metadata key or value is NULL");
    char *v = strdup(value);
    if (!v) return drdc_fail(DRDC_ERR_NOMEM, "safetensors writer: out of memory");
    for (int i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta_keys[i], key) == 0) {
            free(w->meta_values[i]);
            w->meta_values[i] = v;
            return DRDC_OK;
        }
    }
    if (w->n_meta == w->meta_cap) {
        int cap = w->meta_cap ? 2 * w->meta_cap : 8;
        char **nk = realloc(w->meta_keys, (size_t)cap * sizeof *nk);
        if (nk) w->meta_keys = nk;
        char **nv = nk ? realloc(w->meta_values, (size_t)cap * sizeof *nv) : NULL;
        if (nv) w->meta_values = nv;
        if (!nk || !nv) {
            free(v);
            return drdc_fail(DRDC_ERR_NOMEM, "safetensors writer: out of memory");
        }
        w->meta_cap = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(v);
        return drdc_fail(DRDC_ERR_NOMEM, "safetensors writer: out of memory");
    }
    w->meta_keys[w->n_meta] = k;
    w->meta_values[w->n_meta] = v;
    w->n_meta++;
    return DRDC_OK;
}

static _Thread_local const wtensor *t_sort_w;

static int cmp_write_order(const void *a, const void *b) {
    int ia = *(const int *)a, ib = *(const int *)b;
    size_t sa = drdc_st_dtype_size(t_sort_w[ia].dtype), sb = drdc_st_dtype_size(t_sort_w[ib].dtype);
    if (sa != sb) return sa > sb ? -1 : 1;
    return ia - ib;
}

/* Builds the padded header text; *order gets the data order. Caller frees both. */
static drdc_status build_header(const drdc_st_writer *w, const char *path, char **text, size_t *len,
                                int **order) {
    *text = NULL;
    *order = malloc((w->n ? (size_t)w->n : 1) * sizeof **order);
    cJSON *root = cJSON_CreateObject();
    if (!*order || !root) goto oom;
    for (int i = 0; i < w->n; i++) (*order)[i] = i;
    t_sort_w = w->t;
    qsort(*order, (size_t)w->n, sizeof **order, cmp_write_order);
    if (w->n_meta) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        if (!meta) goto oom;
        for (int i = 0; i < w->n_meta; i++)
            if (!cJSON_AddStringToObject(meta, w->meta_keys[i], w->meta_values[i])) goto oom;
    }
    size_t offset = 0;
    for (int k = 0; k < w->n; k++) {
        const wtensor *t = &w->t[(*order)[k]];
        cJSON *e = cJSON_AddObjectToObject(root, t->name);
        if (!e || !cJSON_AddStringToObject(e, "dtype", drdc_st_dtype_name(t->dtype))) goto oom;
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        if (!shape) goto oom;
        for (int d = 0; d < t->ndim; d++) {
            cJSON *num = cJSON_CreateNumber((double)t->shape[d]);
            if (!num || !cJSON_AddItemToArray(shape, num)) {
                cJSON_Delete(num);
                goto oom;
            }
        }
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON *b = cJSON_CreateNumber((double)offset), *en = cJSON_CreateNumber((double)(offset + t->nbytes));
        if (!offs || !b || !en) {
            cJSON_Delete(b);
            cJSON_Delete(en);
            goto oom;
        }
        cJSON_AddItemToArray(offs, b);
        cJSON_AddItemToArray(offs, en);
        offset += t->nbytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    root = NULL;
    if (!json) goto oom;
    size_t n = strlen(json);
    size_t padded = (n + 7) / 8 * 8;
    *text = malloc(padded ? padded : 8);
    if (!*text) {
        cJSON_free(json);
        goto oom;
    }
    memcpy(*text, json, n);
    memset(*text + n, ' ', padded - n);
    cJSON_free(json);
    *len = padded;
    return DRDC_OK;
oom:
    cJSON_Delete(root);
    free(*order);
    *order = NULL;
    return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory building the safetensors header", path);
}

static int write_all(FILE *fp, const void *p, size_t n) { return n == 0 || fwrite(p, 1, n, fp) == n; }

drdc_status drdc_st_writer_write(drdc_st_writer *w, const char *path) {
    char *header = NULL;
    size_t hlen = 0;
    int *order = NULL;
    drdc_status st = DRDC_OK;
    TRY(build_header(w, path, &header, &hlen, &order));

    drdc_atomic_file af;
    TRY(drdc_atomic_open(&af, path));
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    int ok = write_all(af.f, lenbuf, 8) && write_all(af.f, header, hlen);
    for (int k = 0; ok && k < w->n; k++) ok = write_all(af.f, w->t[order[k]].data, w->t[order[k]].nbytes);
    if (!ok) {
        st = drdc_fail(DRDC_ERR_IO, "%s: writing %s failed: %s", path, af.tmp, strerror(errno));
        drdc_atomic_abort(&af);
        goto done;
    }
    TRY(drdc_atomic_commit(&af));   /* flush, fsync, rename over path, fsync the folder */
done:
    free(header);
    free(order);
    return st;
}
