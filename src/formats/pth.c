/* pth.c: PyTorch .pth state dicts (zip and legacy formats) read in plain C; see pth.h.
 *
 * Pieces: the two containers (zip.c reads the archive; the legacy reader here walks the pickle
 * sequence and the raw storages after it), each running its pickles on the VM of pickle.c, which
 * registers the storages; then flattening the dict into named tensors and gathering each
 * tensor's view into contiguous memory. Every error names the source. */
#include "drdc/formats/pth.h"
#include "drdc/core/fsutil.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drdc/formats/bytes.h"
#include "drdc/formats/pickle.h"
#include "drdc/formats/zip.h"

typedef drdc_pk_value pv;   /* a short name inside this file */

/* ---- parse context and errors ----------------------------------------------------------------- */

typedef struct ctx {
    const char *src;
    const uint8_t *buf;
    size_t size;
    drdc_pth_format format;
    drdc_pk_vm pk;     /* the values and storages of every pickle of the file */
    drdc_zip zip;      /* zip format only */
} ctx;

static drdc_status ferr(const ctx *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static drdc_status ferr(const ctx *c, const char *fmt, ...) {
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return drdc_fail(DRDC_ERR_FORMAT, "%s: %s", c->src, msg);
}

static drdc_status nomem(const ctx *c, const char *what) {
    return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory (%s)", c->src, what);
}

static void ctx_free(ctx *c) {
    drdc_pk_free(&c->pk);
    drdc_zip_close(&c->zip);
}

/* ---- zip reader ------------------------------------------------------------------------------ */

/* *buf = prefix[0..plen) + suffix[0..sl) + key[0..kl), NUL-terminated (*buf grows as needed). */
static drdc_status entry_name(ctx *c, char **buf, size_t *cap, const char *prefix, size_t plen, const char *suffix,
                              size_t sl, const char *key, size_t kl) {
    size_t need = plen + sl + kl + 1;
    if (need > *cap) {
        char *nb = realloc(*buf, need);
        if (!nb) return nomem(c, "zip name");
        *buf = nb;
        *cap = need;
    }
    memcpy(*buf, prefix, plen);
    memcpy(*buf + plen, suffix, sl);
    if (kl) memcpy(*buf + plen + sl, key, kl);
    (*buf)[need - 1] = '\0';
    return DRDC_OK;
}

static drdc_status zip_load(ctx *c, pv **root) {
    char *nbuf = NULL;
    size_t ncap = 0;
    drdc_status st = DRDC_OK;
    TRY(drdc_zip_open(&c->zip, c->buf, c->size, c->src));
    /* <prefix>/data.pkl: the one entry of that form */
    const drdc_zip_entry *pkl = NULL;
    size_t plen = 0;
    for (size_t i = 0; i < c->zip.n_entries; i++) {
        const drdc_zip_entry *z = &c->zip.entries[i];
        if (z->namelen < 10 || memcmp(z->name + z->namelen - 9, "/data.pkl", 9) != 0) continue;
        if (memchr(z->name, '/', z->namelen - 9)) continue;
        pkl = z;
        plen = z->namelen - 9;
        break;
    }
    if (!pkl) {
        st = ferr(c, "zip archive has no <name>/data.pkl: not a PyTorch file");
        goto done;
    }
    const char *prefix = pkl->name;
    TRY(entry_name(c, &nbuf, &ncap, prefix, plen, "/constants.pkl", 14, NULL, 0));
    if (drdc_zip_find(&c->zip, nbuf, plen + 14)) {
        st = ferr(c, "this is a TorchScript archive (torch.jit.save), not a state dict; save model.state_dict() with torch.save");
        goto done;
    }
    TRY(entry_name(c, &nbuf, &ncap, prefix, plen, "/byteorder", 10, NULL, 0));
    const drdc_zip_entry *bo = drdc_zip_find(&c->zip, nbuf, plen + 10);
    if (bo) {
        const uint8_t *d;
        size_t n;
        TRY(drdc_zip_stored(&c->zip, bo, &d, &n));
        if (!(n == 6 && memcmp(d, "little", 6) == 0)) {
            st = ferr(c, "byte order is not 'little'; big-endian files are not supported");
            goto done;
        }
    }
    const uint8_t *pd;
    size_t pn, stop_end;
    TRY(drdc_zip_stored(&c->zip, pkl, &pd, &pn));
    TRY(drdc_pk_run(&c->pk, (size_t)(pd - c->buf), (size_t)(pd - c->buf) + pn, "data.pkl", root, &stop_end));
    /* storages: <prefix>/data/<key> */
    for (size_t i = 0; i < c->pk.nstores; i++) {
        drdc_pk_storage *s = &c->pk.stores[i];
        char kb[80];
        TRY(entry_name(c, &nbuf, &ncap, prefix, plen, "/data/", 6, s->key, s->keylen));
        const drdc_zip_entry *z = drdc_zip_find(&c->zip, nbuf, plen + 6 + s->keylen);
        if (!z) {
            st = ferr(c, "storage '%s' has no zip entry data/%s", drdc_shown(s->key, s->keylen, kb, sizeof kb), kb);
            goto done;
        }
        const uint8_t *d;
        size_t n;
        TRY(drdc_zip_stored(&c->zip, z, &d, &n));
        size_t esz = drdc_st_dtype_size(s->dtype), nb;
        if (__builtin_mul_overflow((size_t)s->numel, esz, &nb) || nb > n) {
            st = ferr(c, "storage '%s' needs %lld %s elements but its entry has %zu bytes",
                      drdc_shown(s->key, s->keylen, kb, sizeof kb), (long long)s->numel, drdc_st_dtype_name(s->dtype), n);
            goto done;
        }
        s->data = d;
        s->have_data = 1;
    }
done:
    free(nbuf);
    return st;
}

/* ---- legacy reader --------------------------------------------------------------------------- */

static const uint8_t k_legacy_magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

static drdc_status legacy_load(ctx *c, pv **root) {
    pv *v, *keys;
    size_t p = 0;
    drdc_status st = DRDC_OK;
    TRY(drdc_pk_run(&c->pk, p, c->size, "pickle 1 (magic number)", &v, &p));
    if (v->kind != DRDC_PK_BIGINT || v->u.s.n != 10 || memcmp(v->u.s.p, k_legacy_magic, 10) != 0)
        return ferr(c, "wrong magic number: not a PyTorch legacy file");
    TRY(drdc_pk_run(&c->pk, p, c->size, "pickle 2 (protocol version)", &v, &p));
    if (v->kind != DRDC_PK_INT || v->u.i != 1001)
        return ferr(c, "legacy protocol version %lld is not supported (want 1001)", v->kind == DRDC_PK_INT ? (long long)v->u.i : -1LL);
    TRY(drdc_pk_run(&c->pk, p, c->size, "pickle 3 (sys_info)", &v, &p));
    if (v->kind != DRDC_PK_DICT) return ferr(c, "sys_info is a %s, not a dict", drdc_pk_kind_name(v->kind));
    for (size_t i = 0; i < v->u.d.n; i++) {
        pv *k = v->u.d.keys[i], *x = v->u.d.vals[i];
        if (k->kind == DRDC_PK_STR && k->u.s.n == 13 && memcmp(k->u.s.p, "little_endian", 13) == 0 && x->kind == DRDC_PK_BOOL && !x->u.b)
            return ferr(c, "file was written on a big-endian machine; not supported");
    }
    TRY(drdc_pk_run(&c->pk, p, c->size, "pickle 4 (the saved object)", root, &p));
    TRY(drdc_pk_run(&c->pk, p, c->size, "pickle 5 (storage keys)", &keys, &p));
    if (keys->kind != DRDC_PK_LIST && keys->kind != DRDC_PK_TUPLE) return ferr(c, "storage key list is a %s, not a list", drdc_pk_kind_name(keys->kind));
    for (size_t i = 0; i < keys->u.seq.n; i++) {
        pv *k = keys->u.seq.items[i];
        char kb[80];
        if (k->kind != DRDC_PK_STR) return ferr(c, "storage key %zu is a %s, not a str", i, drdc_pk_kind_name(k->kind));
        size_t idx;
        if (!drdc_strmap_find(&c->pk.storemap, k->u.s.p, k->u.s.n, &idx))
            return ferr(c, "storage key '%s' is listed but no tensor uses it", drdc_shown(k->u.s.p, k->u.s.n, kb, sizeof kb));
        drdc_pk_storage *s = &c->pk.stores[idx];
        if (s->have_data) return ferr(c, "storage key '%s' is listed twice", drdc_shown(k->u.s.p, k->u.s.n, kb, sizeof kb));
        if (c->size - p < 8) return ferr(c, "truncated: storage '%s' (%zu of %zu) has no size at offset %zu",
                                          drdc_shown(k->u.s.p, k->u.s.n, kb, sizeof kb), i + 1, keys->u.seq.n, p);
        uint64_t count = drdc_rd64(c->buf + p);
        p += 8;
        if (count != (uint64_t)s->numel)
            return ferr(c, "storage '%s' has %llu elements in the data but %lld in the pickle", drdc_shown(k->u.s.p, k->u.s.n, kb, sizeof kb),
                        (unsigned long long)count, (long long)s->numel);
        size_t esz = drdc_st_dtype_size(s->dtype), nb;
        if (__builtin_mul_overflow((size_t)count, esz, &nb) || nb > c->size - p)
            return ferr(c, "truncated: storage '%s' (%zu of %zu) needs %llu bytes at offset %zu, the file has %zu",
                        drdc_shown(k->u.s.p, k->u.s.n, kb, sizeof kb), i + 1, keys->u.seq.n,
                        (unsigned long long)count * esz, p, c->size);
        s->data = c->buf + p;
        s->have_data = 1;
        p += nb;
    }
done:
    return st;
}

/* ---- flattening and gathering -------------------------------------------------------------- */

struct drdc_pth_file {
    char *source;
    drdc_pth_format format;
    int count, cap;
    int skipped;
    drdc_pth_tensor *tensors;
    int *sorted;   /* tensor indices sorted by name */
};

typedef struct {
    ctx *c;
    drdc_pth_file *f;
    size_t out_bytes, out_limit;
} flat;

static drdc_status gather(flat *fl, const pv *tv, char *name) {
    ctx *c = fl->c;
    drdc_pth_file *f = fl->f;
    const pv *sv = tv->u.t.storage;
    const drdc_pk_storage *s = &c->pk.stores[sv->u.st.store];
    char kb[80];
    if (!s->have_data)
        return ferr(c, "tensor '%s': storage '%s' has no data", name, drdc_shown(s->key, s->keylen, kb, sizeof kb));
    drdc_st_dtype dt = s->dtype;
    size_t esz = drdc_st_dtype_size(dt);
    int nd = tv->u.t.ndim;
    int64_t numel = 1, maxoff = tv->u.t.offset;
    for (int i = 0; i < nd; i++) {
        if (__builtin_mul_overflow(numel, tv->u.t.shape[i], &numel))
            return ferr(c, "tensor '%s': element count overflows", name);
    }
    if (numel > 0) {
        for (int i = 0; i < nd; i++) {
            int64_t span;
            if (__builtin_mul_overflow(tv->u.t.shape[i] - 1, tv->u.t.stride[i], &span) ||
                __builtin_add_overflow(maxoff, span, &maxoff))
                return ferr(c, "tensor '%s': strides overflow", name);
        }
        if (maxoff >= sv->u.st.numel)
            return ferr(c, "tensor '%s': view (offset %lld) reaches element %lld of storage '%s' with %lld elements", name,
                        (long long)tv->u.t.offset, (long long)maxoff, drdc_shown(s->key, s->keylen, kb, sizeof kb),
                        (long long)sv->u.st.numel);
    }
    size_t nbytes;
    if (__builtin_mul_overflow((size_t)numel, esz, &nbytes) || nbytes > fl->out_limit - fl->out_bytes)
        return ferr(c, "tensor '%s': %lld elements exceed the output limit of %zu bytes for a %zu-byte file", name,
                    (long long)numel, fl->out_limit, c->size);
    uint8_t *out = malloc(nbytes ? nbytes : 1);
    if (!out) return nomem(c, name);
    fl->out_bytes += nbytes;
    int contig = 1;  /* row-major without holes? (numel > 0: no partial product overflows) */
    int64_t expect = 1;
    for (int i = nd - 1; numel > 0 && i >= 0; i--) {
        if (tv->u.t.shape[i] != 1 && tv->u.t.stride[i] != expect) contig = 0;
        expect *= tv->u.t.shape[i];
    }
    const uint8_t *base = numel > 0 ? s->data + (size_t)(sv->u.st.offset + tv->u.t.offset) * esz : NULL;
    if (numel == 0) {
    } else if (contig) {
        memcpy(out, base, nbytes);
    } else {
        /* odometer over all dims but the last; the last dim is a row */
        int64_t idx[DRDC_ST_MAX_RANK] = {0};
        int64_t rowlen = tv->u.t.shape[nd - 1], rowstride = tv->u.t.stride[nd - 1];
        uint8_t *o = out;
        for (;;) {
            int64_t off = 0;
            for (int i = 0; i < nd - 1; i++) off += idx[i] * tv->u.t.stride[i];
            const uint8_t *r = base + (size_t)off * esz;
            if (rowstride == 1) {
                memcpy(o, r, (size_t)rowlen * esz);
                o += (size_t)rowlen * esz;
            } else {
                for (int64_t j = 0; j < rowlen; j++, o += esz) memcpy(o, r + (size_t)(j * rowstride) * esz, esz);
            }
            int i = nd - 2;
            while (i >= 0 && ++idx[i] == tv->u.t.shape[i]) idx[i--] = 0;
            if (i < 0) break;
        }
    }
    if (f->count == f->cap) {
        int ncap = f->cap ? f->cap * 2 : 16;
        drdc_pth_tensor *nt = realloc(f->tensors, (size_t)ncap * sizeof *nt);
        if (!nt) { free(out); return nomem(c, name); }
        f->tensors = nt;
        f->cap = ncap;
    }
    drdc_pth_tensor *t = &f->tensors[f->count++];
    memset(t, 0, sizeof *t);
    t->name = name;
    t->dtype = dt;
    t->ndim = nd;
    for (int i = 0; i < nd; i++) t->shape[i] = tv->u.t.shape[i];
    t->numel = numel;
    t->data = out;
    t->nbytes = nbytes;
    return DRDC_OK;
}

/* Walks dict d, naming entries prefix + "." + key. A name passes to gather's tensor on success. */
static drdc_status flatten(flat *fl, const pv *d, const char *prefix, int depth) {
    ctx *c = fl->c;
    char *name = NULL;
    drdc_status st = DRDC_OK;
    if (depth >= DRDC_PTH_MAX_DEPTH)
        return ferr(c, "dicts nested deeper than %d (at '%s'; a cycle?)", DRDC_PTH_MAX_DEPTH, prefix ? prefix : "");
    for (size_t i = 0; i < d->u.d.n; i++) {
        const pv *k = d->u.d.keys[i], *v = d->u.d.vals[i];
        if (v->kind != DRDC_PK_TENSOR && v->kind != DRDC_PK_DICT) { fl->f->skipped++; continue; }
        char numbuf[32];
        const char *kp;
        size_t kn;
        if (k->kind == DRDC_PK_STR) {
            kp = k->u.s.p;
            kn = k->u.s.n;
            char kb[80];
            if (memchr(kp, '\0', kn)) return ferr(c, "key '%s' contains a NUL byte", drdc_shown(kp, kn, kb, sizeof kb));
        } else if (k->kind == DRDC_PK_INT) {
            kn = (size_t)snprintf(numbuf, sizeof numbuf, "%lld", (long long)k->u.i);
            kp = numbuf;
        } else {
            fl->f->skipped++;
            continue;
        }
        size_t pl = prefix ? strlen(prefix) + 1 : 0;
        name = malloc(pl + kn + 1);
        if (!name) return nomem(c, "tensor name");
        if (prefix) { memcpy(name, prefix, pl - 1); name[pl - 1] = '.'; }
        memcpy(name + pl, kp, kn);
        name[pl + kn] = '\0';
        if (v->kind == DRDC_PK_TENSOR) {
            TRY(gather(fl, v, name));
            name = NULL;   /* the tensor's now */
        } else {
            TRY(flatten(fl, v, name, depth + 1));
            free(name);
            name = NULL;
        }
    }
done:
    free(name);
    return st;
}

/* Merge sort of tensor indices by name (qsort has no context argument; this stays thread-safe). */
static void sort_idx(int *idx, int *tmp, int n, const drdc_pth_tensor *t) {
    if (n < 2) return;
    int h = n / 2;
    sort_idx(idx, tmp, h, t);
    sort_idx(idx + h, tmp, n - h, t);
    int i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = strcmp(t[idx[i]].name, t[idx[j]].name) <= 0 ? idx[i++] : idx[j++];
    while (i < h) tmp[k++] = idx[i++];
    while (j < n) tmp[k++] = idx[j++];
    memcpy(idx, tmp, (size_t)n * sizeof *idx);
}

void drdc_pth_free(drdc_pth_file *f) {
    if (!f) return;
    for (int i = 0; i < f->count; i++) {
        free((void *)f->tensors[i].name);
        free((void *)f->tensors[i].data);
    }
    free(f->tensors);
    free(f->sorted);
    free(f->source);
    free(f);
}

/* The container: zip, legacy, or a clear refusal. */
static drdc_status load_root(ctx *c, pv **root) {
    const uint8_t *b = c->buf;
    size_t size = c->size;
    if (size >= 4 && drdc_rd32(b) == 0x04034b50u) {
        c->format = DRDC_PTH_ZIP;
        return zip_load(c, root);
    }
    if (size >= 262 && memcmp(b + 257, "ustar", 5) == 0)
        return ferr(c, "old tar-based PyTorch format (torch < 0.4) is not supported; load and re-save it with a current torch.save");
    if (size >= 2 && b[0] == 0x80) {
        c->format = DRDC_PTH_LEGACY;
        return legacy_load(c, root);
    }
    if (size == 0) return ferr(c, "empty file");
    return ferr(c, "not a PyTorch file: neither a zip archive nor a legacy pickle (wrong magic)");
}

/* f->sorted: the tensors by name; two equal names are an error. */
static drdc_status index_names(ctx *c, drdc_pth_file *f) {
    int *tmp = NULL;
    drdc_status st = DRDC_OK;
    f->sorted = malloc((size_t)(f->count ? f->count : 1) * sizeof *f->sorted);
    tmp = malloc((size_t)(f->count ? f->count : 1) * sizeof *tmp);
    if (!f->sorted || !tmp) {
        st = nomem(c, "name index");
        goto done;
    }
    for (int i = 0; i < f->count; i++) f->sorted[i] = i;
    sort_idx(f->sorted, tmp, f->count, f->tensors);
    for (int i = 1; i < f->count; i++) {
        if (strcmp(f->tensors[f->sorted[i - 1]].name, f->tensors[f->sorted[i]].name) == 0) {
            st = ferr(c, "two entries are named '%s' (after flattening nested dicts with '.')", f->tensors[f->sorted[i]].name);
            goto done;
        }
    }
done:
    free(tmp);
    return st;
}

drdc_status drdc_pth_parse(drdc_pth_file **out, const void *data, size_t size, const char *source_name) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "drdc_pth_parse: out is NULL");
    *out = NULL;
    const char *src = source_name ? source_name : "<memory>";
    if (!data && size) return drdc_fail(DRDC_ERR_INPUT, "%s: data is NULL", src);
    ctx c;
    memset(&c, 0, sizeof c);
    c.src = src;
    c.buf = data;
    c.size = size;
    drdc_pk_init(&c.pk, c.buf, src);
    drdc_pth_file *f = NULL;
    pv *root = NULL;
    drdc_status st = DRDC_OK;
    TRY(load_root(&c, &root));
    if (root->kind != DRDC_PK_DICT) {
        st = ferr(&c, "the saved object is a %s, not a dict of tensors (a state dict)", drdc_pk_kind_name(root->kind));
        goto done;
    }
    f = calloc(1, sizeof *f);
    if (f) {
        size_t n = strlen(src) + 1;
        f->source = malloc(n);
        if (f->source) memcpy(f->source, src, n);
    }
    if (!f || !f->source) {
        st = nomem(&c, "result");
        goto done;
    }
    f->format = c.format;
    flat fl = {&c, f, 0, 0};
    fl.out_limit = size > (SIZE_MAX - (64u << 20)) / 4 ? SIZE_MAX : 4 * size + (64u << 20);
    TRY(flatten(&fl, root, NULL, 0));
    TRY(index_names(&c, f));
    *out = f;
    f = NULL;
done:
    ctx_free(&c);
    drdc_pth_free(f);
    return st;
}

drdc_status drdc_pth_load(drdc_pth_file **out, const char *path) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "drdc_pth_load: out is NULL");
    *out = NULL;
    char *buf = NULL;
    size_t len = 0;
    drdc_status st = DRDC_OK;
    TRY(drdc_read_file(path, &buf, &len));
    TRY(drdc_pth_parse(out, buf, len, path));
done:
    free(buf);
    return st;
}

int drdc_pth_count(const drdc_pth_file *f) { return f ? f->count : 0; }

const drdc_pth_tensor *drdc_pth_at(const drdc_pth_file *f, int i) {
    return (f && i >= 0 && i < f->count) ? &f->tensors[i] : NULL;
}

const drdc_pth_tensor *drdc_pth_find(const drdc_pth_file *f, const char *name) {
    if (!f || !name) return NULL;
    int lo = 0, hi = f->count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int r = strcmp(f->tensors[f->sorted[mid]].name, name);
        if (r == 0) return &f->tensors[f->sorted[mid]];
        if (r < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

int drdc_pth_skipped(const drdc_pth_file *f) { return f ? f->skipped : 0; }
drdc_pth_format drdc_pth_get_format(const drdc_pth_file *f) { return f ? f->format : DRDC_PTH_ZIP; }
const char *drdc_pth_source(const drdc_pth_file *f) { return f ? f->source : ""; }

/* Writes f's tensors to out_path as safetensors; errors get "converting in to out" as context. */
static drdc_status write_converted(const drdc_pth_file *f, const char *in_path, const char *out_path) {
    drdc_st_writer *w = NULL;
    const char *base = strrchr(in_path, '/');
    base = base ? base + 1 : in_path;
    drdc_status st = DRDC_OK;
    TRY(drdc_st_writer_new(&w));
    TRY(drdc_st_writer_set_meta(w, "format", "pt"));
    TRY(drdc_st_writer_set_meta(w, "converted_from", base));
    TRY(drdc_st_writer_set_meta(w, "pth_format", f->format == DRDC_PTH_LEGACY ? "legacy" : "zip"));
    for (int i = 0; i < f->count; i++) {
        const drdc_pth_tensor *t = &f->tensors[i];
        TRY(drdc_st_writer_add_borrowed(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes));
    }
    TRY(drdc_st_writer_write(w, out_path));
done:
    if (st) drdc_error_context(st, "converting %s to %s", in_path, out_path);
    drdc_st_writer_free(w);
    return st;
}

drdc_status drdc_pth_to_safetensors(const char *in_path, const char *out_path, int *n_tensors, int *n_skipped) {
    drdc_pth_file *f = NULL;
    drdc_status st = DRDC_OK;
    TRY(drdc_pth_load(&f, in_path));
    if (n_tensors) *n_tensors = f->count;
    if (n_skipped) *n_skipped = f->skipped;
    if (f->count == 0) {
        st = drdc_fail(DRDC_ERR_FORMAT, "%s: no tensors to convert (%d non-tensor values skipped)", in_path, f->skipped);
        goto done;
    }
    TRY(write_converted(f, in_path, out_path));
done:
    drdc_pth_free(f);
    return st;
}
