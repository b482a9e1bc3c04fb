/* npy.c: NumPy .npy reader and atomic writer (see npy.h).
 *
 * Layout: "\x93NUMPY", major, minor, header length (2 bytes LE in 1.0, 4 bytes LE in 2.0/3.0),
 * then an ASCII Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (H, W), }
 * padded with spaces and ended by '\n' so that the data starts at a multiple of 64 bytes, then
 * the raw little-endian data in C order. */
#define _POSIX_C_SOURCE 200809L
#include "drdc/formats/npy.h"
#include "drdc/core/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const unsigned char NPY_MAGIC[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
#define NPY_MAX_HEADER (1u << 24) /* far above anything numpy writes; guards a corrupt length */

size_t drdc_npy_dtype_size(drdc_npy_dtype dtype) {
    switch (dtype) {
    case DRDC_NPY_F32: return 4;
    case DRDC_NPY_F64: return 8;
    case DRDC_NPY_U8: return 1;
    case DRDC_NPY_I64: return 8;
    }
    return 0;
}

const char *drdc_npy_dtype_descr(drdc_npy_dtype dtype) {
    switch (dtype) {
    case DRDC_NPY_F32: return "<f4";
    case DRDC_NPY_F64: return "<f8";
    case DRDC_NPY_U8: return "|u1";
    case DRDC_NPY_I64: return "<i8";
    }
    return "?";
}

static int host_is_little_endian(void) {
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

void drdc_npy_free(drdc_npy *a) {
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* ---- header dict parser ------------------------------------------------------------------ */

typedef struct hdr_parser {
    const char *s, *end;
    const char *path;
} hdr_parser;

static void skip_ws(hdr_parser *p) {
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r'))
        p->s++;
}

static int eat(hdr_parser *p, char c) {
    skip_ws(p);
    if (p->s < p->end && *p->s == c) {
        p->s++;
        return 1;
    }
    return 0;
}

/* A quoted Python string (no escapes needed for the keys and dtypes numpy writes). */
static drdc_status parse_str(hdr_parser *p, char *buf, size_t cap) {
    skip_ws(p);
    if (p->s >= p->end || (*p->s != '\'' && *p->s != '"'))
        return drdc_fail(DRDC_ERR_FORMAT, "%s: malformed .npy header: expected a quoted string",
                         p->path);
    char q = *p->s++;
    size_t n = 0;
    while (p->s < p->end && *p->s != q) {
        if (n + 1 >= cap)
            return drdc_fail(DRDC_ERR_FORMAT, "%s: malformed .npy header: string too long",
                             p->path);
        buf[n++] = *p->s++;
    }
    if (p->s >= p->end)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: malformed .npy header: unterminated string",
                         p->path);
    p->s++;
    buf[n] = '\0';
    return DRDC_OK;
}

static drdc_status parse_shape(hdr_parser *p, drdc_npy *out) {
    if (!eat(p, '('))
        return drdc_fail(DRDC_ERR_FORMAT, "%s: malformed .npy header: shape is not a tuple",
                         p->path);
    out->rank = 0;
    for (;;) {
        if (eat(p, ')')) return DRDC_OK;
        skip_ws(p);
        if (p->s >= p->end || *p->s < '0' || *p->s > '9')
            return drdc_fail(DRDC_ERR_FORMAT, "%s: malformed .npy header: bad shape entry",
                             p->path);
        int64_t v = 0;
        while (p->s < p->end && *p->s >= '0' && *p->s <= '9') {
            if (v > (INT64_MAX - 9) / 10)
                return drdc_fail(DRDC_ERR_FORMAT, "%s: .npy shape entry too large", p->path);
            v = v * 10 + (*p->s++ - '0');
        }
        if (p->s < p->end && *p->s == 'L') p->s++; /* Python 2 long */
        if (out->rank == DRDC_NPY_MAX_RANK)
            return drdc_fail(DRDC_ERR_FORMAT, "%s: .npy array has rank over %d (unsupported)",
                             p->path, DRDC_NPY_MAX_RANK);
        out->shape[out->rank++] = v;
        if (eat(p, ',')) continue;
        if (eat(p, ')')) return DRDC_OK;
        return drdc_fail(DRDC_ERR_FORMAT, "%s: malformed .npy header: bad shape tuple", p->path);
    }
}

static drdc_status parse_header(const char *path, const char *h, size_t len, drdc_npy *out) {
    hdr_parser p = {h, h + len, path};
    int have_descr = 0, have_order = 0, have_shape = 0;
    drdc_status st = DRDC_OK;
    if (!eat(&p, '{'))
        return drdc_fail(DRDC_ERR_FORMAT, "%s: malformed .npy header: no '{'", path);
    for (;;) {
        if (eat(&p, '}')) break;
        char key[32];
        TRY(parse_str(&p, key, sizeof key));
        if (!eat(&p, ':'))
            return drdc_fail(DRDC_ERR_FORMAT, "%s: malformed .npy header: no ':' after '%s'",
                             path, key);
        if (strcmp(key, "descr") == 0 && !have_descr) {
            char descr[32];
            TRY(parse_str(&p, descr, sizeof descr));
            if (strcmp(descr, "<f4") == 0) out->dtype = DRDC_NPY_F32;
            else if (strcmp(descr, "<f8") == 0) out->dtype = DRDC_NPY_F64;
            else if (strcmp(descr, "|u1") == 0 || strcmp(descr, "<u1") == 0) out->dtype = DRDC_NPY_U8;
            else if (strcmp(descr, "<i8") == 0) out->dtype = DRDC_NPY_I64;
            else
                return drdc_fail(DRDC_ERR_FORMAT, "%s: unsupported .npy dtype '%s' (supported: "
                                 "'<f4', '<f8', '|u1', '<i8', little-endian)", path, descr);
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0 && !have_order) {
            skip_ws(&p);
            if ((size_t)(p.end - p.s) >= 5 && memcmp(p.s, "False", 5) == 0) {
                p.s += 5;
            } else if ((size_t)(p.end - p.s) >= 4 && memcmp(p.s, "True", 4) == 0) {
                return drdc_fail(DRDC_ERR_FORMAT, "%s: .npy array is in Fortran order "
                                 "(fortran_order True); only C order is supported "
                                 "(save np.ascontiguousarray(a))", path);
            } else {
                return drdc_fail(DRDC_ERR_FORMAT, "%s: malformed .npy header: fortran_order is "
                                 "not True or False", path);
            }
            have_order = 1;
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            TRY(parse_shape(&p, out));
            have_shape = 1;
        } else {
            return drdc_fail(DRDC_ERR_FORMAT, "%s: malformed .npy header: unexpected or repeated "
                             "key '%s'", path, key);
        }
        if (eat(&p, ',')) continue;
        if (eat(&p, '}')) break;
        return drdc_fail(DRDC_ERR_FORMAT, "%s: malformed .npy header: expected ',' or '}'", path);
    }
    if (!have_descr || !have_order || !have_shape)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: malformed .npy header: missing '%s'", path,
                         !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
done:
    return st;
}

/* ---- reading ----------------------------------------------------------------------------- */

static uint32_t le32(const unsigned char *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static drdc_status read_exact(FILE *f, void *buf, size_t n, const char *path, const char *what) {
    if (n && fread(buf, 1, n, f) != n)
        return drdc_fail(ferror(f) ? DRDC_ERR_IO : DRDC_ERR_FORMAT, "%s: %s %s", path,
                         ferror(f) ? "cannot read" : "truncated", what);
    return DRDC_OK;
}

static drdc_status read_file(FILE *f, const char *path, drdc_npy *out) {
    if (!host_is_little_endian())
        return drdc_fail(DRDC_ERR_STATE, "%s: .npy reading needs a little-endian host", path);
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0)
        return drdc_fail(DRDC_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    unsigned char pre[12];
    size_t got = fread(pre, 1, 8, f);
    if (got < 6 || memcmp(pre, NPY_MAGIC, 6) != 0)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: not a .npy file (bad magic; expected \\x93NUMPY)",
                         path);
    if (got < 8)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: truncated .npy header (no version)", path);
    int major = pre[6], minor = pre[7];
    size_t prefix;
    uint32_t hlen;
    char *hdr = NULL;
    drdc_status st = DRDC_OK;
    if (major == 1 && minor == 0) {
        TRY(read_exact(f, pre + 8, 2, path, ".npy header (no header length)"));
        hlen = (uint32_t)pre[8] | (uint32_t)pre[9] << 8;
        prefix = 10;
    } else if ((major == 2 || major == 3) && minor == 0) {
        TRY(read_exact(f, pre + 8, 4, path, ".npy header (no header length)"));
        hlen = le32(pre + 8);
        prefix = 12;
    } else {
        return drdc_fail(DRDC_ERR_FORMAT, "%s: unsupported .npy format version %d.%d (supported: "
                         "1.0, 2.0, 3.0)", path, major, minor);
    }
    if (hlen > NPY_MAX_HEADER || (uint64_t)prefix + hlen > (uint64_t)sb.st_size)
        return drdc_fail(DRDC_ERR_FORMAT, "%s: truncated .npy header (header length %u, file "
                         "%lld bytes)", path, hlen, (long long)sb.st_size);
    hdr = malloc((size_t)hlen + 1);
    if (!hdr) return drdc_fail(DRDC_ERR_NOMEM, "%s: cannot allocate the .npy header", path);
    TRY(read_exact(f, hdr, hlen, path, ".npy header"));
    hdr[hlen] = '\0';
    TRY(parse_header(path, hdr, hlen, out));

    size_t esize = drdc_npy_dtype_size(out->dtype);
    size_t numel = 1;
    for (int i = 0; i < out->rank; i++) {
        if (out->shape[i] < 0 || (out->shape[i] > 0 && numel > SIZE_MAX / esize / (size_t)out->shape[i])) {
            st = drdc_fail(DRDC_ERR_FORMAT, "%s: .npy shape too large", path);
            goto done;
        }
        numel *= (size_t)out->shape[i];
    }
    out->numel = numel;
    uint64_t want = (uint64_t)numel * esize;
    uint64_t have = (uint64_t)sb.st_size - prefix - hlen;
    if (have != want) {
        st = drdc_fail(DRDC_ERR_FORMAT, "%s: .npy data size mismatch: shape and dtype %s need "
                       "%llu bytes, the file has %llu after the header (%s)", path,
                       drdc_npy_dtype_descr(out->dtype), (unsigned long long)want,
                       (unsigned long long)have, have < want ? "truncated" : "trailing bytes");
        goto done;
    }
    out->data = malloc(want ? (size_t)want : 1);
    if (!out->data) {
        st = drdc_fail(DRDC_ERR_NOMEM, "%s: cannot allocate %llu bytes", path, (unsigned long long)want);
        goto done;
    }
    TRY(read_exact(f, out->data, (size_t)want, path, ".npy data"));
done:
    free(hdr);
    return st;
}

drdc_status drdc_npy_read(const char *path, drdc_npy *out) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "npy read: NULL output");
    memset(out, 0, sizeof *out);
    if (!path) return drdc_fail(DRDC_ERR_INPUT, "npy read: NULL path");
    FILE *f = NULL;
    drdc_status st = drdc_fopen_input(path, &f);
    if (st) return st;
    st = read_file(f, path, out);
    fclose(f);
    if (st != DRDC_OK) drdc_npy_free(out);
    return st;
}

drdc_status drdc_npy_read_map(const char *path, float **data, int *height, int *width) {
    if (!data || !height || !width) return drdc_fail(DRDC_ERR_INPUT, "npy read map: NULL output");
    *data = NULL;
    *height = *width = 0;
    drdc_npy a;
    drdc_status st = DRDC_OK;
    TRY(drdc_npy_read(path, &a));   /* on failure a is left zeroed */
    int r = a.rank;
    if (!(r == 2 || (r == 3 && a.shape[0] == 1))) {
        st = drdc_fail(DRDC_ERR_INPUT, "%s: a heatmap must have shape (H, W) or (1, H, W); "
                       "this array has rank %d", path, r);
        goto done;
    }
    int64_t h = a.shape[r - 2], w = a.shape[r - 1];
    if (h <= 0 || w <= 0 || h > INT_MAX || w > INT_MAX) {
        st = drdc_fail(DRDC_ERR_INPUT, "%s: heatmap size %lldx%lld is empty or too large",
                       path, (long long)h, (long long)w);
        goto done;
    }
    if (a.dtype == DRDC_NPY_F64) {
        float *f = malloc(a.numel * sizeof *f);
        if (!f) {
            st = drdc_fail(DRDC_ERR_NOMEM, "%s: cannot allocate the heatmap", path);
            goto done;
        }
        const double *d = a.data;
        for (size_t i = 0; i < a.numel; i++) f[i] = (float)d[i];
        *data = f;
    } else if (a.dtype == DRDC_NPY_F32) {
        *data = a.data; /* ownership moves to the caller */
        a.data = NULL;
    } else {
        st = drdc_fail(DRDC_ERR_INPUT, "%s: a heatmap must be float32 or float64, this "
                       "is %s", path, drdc_npy_dtype_descr(a.dtype));
        goto done;
    }
    *height = (int)h;
    *width = (int)w;
done:
    drdc_npy_free(&a);
    return st;
}

/* ---- writing ----------------------------------------------------------------------------- */

drdc_status drdc_npy_write(const char *path, drdc_npy_dtype dtype, int rank,
                           const int64_t *shape, const void *data) {
    if (!path) return drdc_fail(DRDC_ERR_INPUT, "npy write: NULL path");
    if (!host_is_little_endian())
        return drdc_fail(DRDC_ERR_STATE, "%s: .npy writing needs a little-endian host", path);
    size_t esize = drdc_npy_dtype_size(dtype);
    if (esize == 0) return drdc_fail(DRDC_ERR_INPUT, "%s: npy write: unknown dtype %d", path, (int)dtype);
    if (rank < 0 || rank > DRDC_NPY_MAX_RANK || (rank > 0 && !shape))
        return drdc_fail(DRDC_ERR_INPUT, "%s: npy write: rank %d not in 0..%d", path, rank,
                         DRDC_NPY_MAX_RANK);
    size_t numel = 1;
    for (int i = 0; i < rank; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && numel > SIZE_MAX / esize / (size_t)shape[i]))
            return drdc_fail(DRDC_ERR_INPUT, "%s: npy write: bad shape entry %lld", path,
                             (long long)shape[i]);
        numel *= (size_t)shape[i];
    }
    if (numel && !data) return drdc_fail(DRDC_ERR_INPUT, "%s: npy write: NULL data", path);

    /* header dict, as numpy writes it */
    char dict[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     drdc_npy_dtype_descr(dtype));
    for (int i = 0; i < rank; i++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%lld%s", (long long)shape[i],
                      rank == 1 ? "," : (i + 1 < rank ? ", " : ""));
    n += snprintf(dict + n, sizeof dict - (size_t)n, "), }");
    /* pad with spaces + '\n' so that the data starts at a multiple of 64 */
    size_t prefix = 10;
    size_t total = prefix + (size_t)n + 1;
    size_t padded = (total + 63) / 64 * 64;
    unsigned char head[640];
    memcpy(head, NPY_MAGIC, 6);
    head[6] = 1;
    head[7] = 0;
    size_t hlen = padded - prefix;
    head[8] = (unsigned char)(hlen & 0xFF);
    head[9] = (unsigned char)(hlen >> 8);
    memcpy(head + prefix, dict, (size_t)n);
    memset(head + prefix + n, ' ', padded - prefix - (size_t)n - 1);
    head[padded - 1] = '\n';

    drdc_atomic_file af;
    drdc_status st = DRDC_OK;
    TRY(drdc_atomic_open(&af, path));
    if (fwrite(head, 1, padded, af.f) != padded || (numel && fwrite(data, esize, numel, af.f) != numel)) {
        int e = errno;
        drdc_atomic_abort(&af);
        st = drdc_fail(DRDC_ERR_IO, "%s: write failed: %s", path, strerror(e));
        goto done;
    }
    TRY(drdc_atomic_commit(&af));
done:
    return st;
}
