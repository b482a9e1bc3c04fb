/* pth.c: PyTorch .pth state dicts (zip and legacy formats) read in plain C; see pth.h.
 *
 * Pieces, bottom up: bounds-checked byte readers; a string -> index hash map; the pickle VM
 * (values live in one per-parse arena list, so memo sharing and cycles never double-free);
 * the persistent-id / storage registry; the zip reader (central directory, ZIP64, CRC-32); the
 * legacy reader (pickle sequence + raw storages); flattening the dict into named tensors and
 * gathering each tensor's view into contiguous memory. Every error names the source. */
#include "drdc/formats/pth.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors --------------------------------------------------------------------------------- */

typedef struct ctx ctx;
static drdc_status ferr(const ctx *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static drdc_status nomem(const ctx *c, const char *what);

/* ---- values of the pickle VM ---------------------------------------------------------------- */

enum { V_NONE, V_BOOL, V_INT, V_BIGINT, V_FLOAT, V_STR, V_BYTES, V_TUPLE, V_LIST, V_DICT, V_GLOBAL,
       V_STORAGE, V_TENSOR };

enum { G_UNKNOWN, G_ORDEREDDICT, G_REBUILD_TENSOR, G_REBUILD_TENSOR_V2, G_REBUILD_PARAMETER,
       G_REBUILD_PARAMETER_WITH_STATE, G_STORAGE_TYPE };

typedef struct pv pv;
struct pv {
    int kind;
    pv *next;  /* arena list (NULL for the static None/True/False) */
    union {
        int b;
        int64_t i;
        double f;
        struct { const char *p; size_t n; } s;           /* str, bytes, bigint (LE two's complement) */
        struct { pv **items; size_t n, cap; } seq;       /* tuple, list */
        struct { pv **keys, **vals; size_t n, cap; } d;  /* dict, in insertion order */
        struct { int gk; drdc_st_dtype dtype; char *name; } g;
        struct { size_t store; int64_t offset, numel; } st;  /* storage (view) */
        struct { pv *storage; int64_t offset; int ndim; int64_t shape[DRDC_ST_MAX_RANK], stride[DRDC_ST_MAX_RANK]; } t;
    } u;
};

static pv g_none = {V_NONE, NULL, {0}};
static pv g_true = {V_BOOL, NULL, {.b = 1}};
static pv g_false = {V_BOOL, NULL, {.b = 0}};

/* ---- string -> index map (open addressing) --------------------------------------------------- */

typedef struct { const char *k; size_t n; size_t idx; } smslot;
typedef struct { smslot *s; size_t cap, count; } strmap;

static uint64_t sm_hash(const char *k, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)k[i]) * 1099511628211ull;
    return h;
}

static int sm_find(const strmap *m, const char *k, size_t n, size_t *idx) {
    if (!m->cap) return 0;
    for (size_t j = sm_hash(k, n) & (m->cap - 1);; j = (j + 1) & (m->cap - 1)) {
        const smslot *s = &m->s[j];
        if (!s->k) return 0;
        if (s->n == n && memcmp(s->k, k, n) == 0) { *idx = s->idx; return 1; }
    }
}

/* Inserts (k is borrowed and must outlive the map); the key must not be present. */
static int sm_put(strmap *m, const char *k, size_t n, size_t idx) {
    if ((m->count + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 64;
        smslot *ns = calloc(ncap, sizeof *ns);
        if (!ns) return -1;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->s[i].k) continue;
            size_t j = sm_hash(m->s[i].k, m->s[i].n) & (ncap - 1);
            while (ns[j].k) j = (j + 1) & (ncap - 1);
            ns[j] = m->s[i];
        }
        free(m->s);
        m->s = ns;
        m->cap = ncap;
    }
    size_t j = sm_hash(k, n) & (m->cap - 1);
    while (m->s[j].k) j = (j + 1) & (m->cap - 1);
    m->s[j].k = k ? k : "";
    m->s[j].n = n;
    m->s[j].idx = idx;
    m->count++;
    return 0;
}

static void sm_free(strmap *m) { free(m->s); m->s = NULL; m->cap = m->count = 0; }

/* ---- parse context ------------------------------------------------------------------------- */

typedef struct {
    const char *key; size_t keylen;  /* borrowed from the input */
    drdc_st_dtype dtype;
    int64_t numel;                   /* elements of the whole storage */
    const uint8_t *data;             /* numel * elemsize bytes, once found */
    int have_data;
} store;

typedef struct {
    const char *name; size_t namelen;
    uint64_t data_off, csize, usize;
    uint16_t method, flags;
    uint32_t crc;
} zent;

struct ctx {
    const char *src;
    const uint8_t *buf;
    size_t size;
    drdc_pth_format format;
    pv *arena;
    /* current pickle */
    const char *what;   /* "data.pkl", "pickle 4 (the object)" ... */
    size_t pos;         /* offset of the opcode being run, for messages */
    pv **stack; size_t sp, scap;
    size_t *marks; size_t nmarks, mcap;
    pv **memo; size_t memocap, memolen;
    /* storages */
    store *stores; size_t nstores, storecap;
    strmap storemap;
    /* zip */
    zent *zents; size_t nzents;
    strmap zmap;
};

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

/* Error at the opcode being run. */
#define PERR(c, ...) pk_err((c), __VA_ARGS__)
static drdc_status pk_err(const ctx *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static drdc_status pk_err(const ctx *c, const char *fmt, ...) {
    char msg[1280];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return drdc_fail(DRDC_ERR_FORMAT, "%s: %s, offset %zu: %s", c->src, c->what, c->pos, msg);
}

static pv *pv_new(ctx *c, int kind) {
    pv *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->kind = kind;
    v->next = c->arena;
    c->arena = v;
    return v;
}

static void pv_free_all(ctx *c) {
    pv *v = c->arena;
    while (v) {
        pv *n = v->next;
        switch (v->kind) {
        case V_TUPLE: case V_LIST: free(v->u.seq.items); break;
        case V_DICT: free(v->u.d.keys); free(v->u.d.vals); break;
        case V_GLOBAL: free(v->u.g.name); break;
        default: break;
        }
        free(v);
        v = n;
    }
    c->arena = NULL;
}

static void ctx_free(ctx *c) {
    pv_free_all(c);
    free(c->stack);
    free(c->marks);
    free(c->memo);
    free(c->stores);
    sm_free(&c->storemap);
    free(c->zents);
    sm_free(&c->zmap);
}

static const char *kind_name(int k) {
    static const char *names[] = {"None", "bool", "int", "big int", "float", "str", "bytes", "tuple",
                                  "list", "dict", "global", "storage", "tensor"};
    return (k >= 0 && k <= V_TENSOR) ? names[k] : "?";
}

/* ---- little helpers --------------------------------------------------------------------------- */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

/* Prints at most `max` bytes of s for a message, non-printables as '?'. */
static const char *shown(const char *s, size_t n, char *buf, size_t cap) {
    size_t m = n < cap - 4 ? n : cap - 4, j = 0;
    for (size_t i = 0; i < m; i++) buf[j++] = (s[i] >= 32 && s[i] < 127) ? s[i] : '?';
    if (m < n) { buf[j++] = '.'; buf[j++] = '.'; buf[j++] = '.'; }
    buf[j] = '\0';
    return buf;
}

static int seq_push(pv *seq, pv *item) {
    if (seq->u.seq.n == seq->u.seq.cap) {
        size_t ncap = seq->u.seq.cap ? seq->u.seq.cap * 2 : 4;
        pv **ni = realloc(seq->u.seq.items, ncap * sizeof *ni);
        if (!ni) return -1;
        seq->u.seq.items = ni;
        seq->u.seq.cap = ncap;
    }
    seq->u.seq.items[seq->u.seq.n++] = item;
    return 0;
}

static int dict_push(pv *d, pv *k, pv *v) {
    if (d->u.d.n == d->u.d.cap) {
        size_t ncap = d->u.d.cap ? d->u.d.cap * 2 : 8;
        pv **nk = realloc(d->u.d.keys, ncap * sizeof *nk);
        if (!nk) return -1;
        d->u.d.keys = nk;
        pv **nv = realloc(d->u.d.vals, ncap * sizeof *nv);
        if (!nv) return -1;
        d->u.d.vals = nv;
        d->u.d.cap = ncap;
    }
    d->u.d.keys[d->u.d.n] = k;
    d->u.d.vals[d->u.d.n] = v;
    d->u.d.n++;
    return 0;
}

/* ---- the pickle VM ---------------------------------------------------------------------------- */

static drdc_status push(ctx *c, pv *v) {
    if (!v) return nomem(c, "pickle value");
    if (c->sp == c->scap) {
        if (c->scap >= DRDC_PTH_MAX_STACK) return PERR(c, "pickle stack deeper than %d", DRDC_PTH_MAX_STACK);
        size_t ncap = c->scap ? c->scap * 2 : 64;
        pv **ns = realloc(c->stack, ncap * sizeof *ns);
        if (!ns) return nomem(c, "pickle stack");
        c->stack = ns;
        c->scap = ncap;
    }
    c->stack[c->sp++] = v;
    return DRDC_OK;
}

/* The stack bottom of the current MARK frame. */
static size_t frame_base(const ctx *c) { return c->nmarks ? c->marks[c->nmarks - 1] : 0; }

static drdc_status pop(ctx *c, pv **out, const char *op) {
    if (c->sp <= frame_base(c)) return PERR(c, "%s on an empty stack", op);
    *out = c->stack[--c->sp];
    return DRDC_OK;
}

/* Pops to the last MARK: items are stack[*base .. sp). The caller resets sp to *base. */
static drdc_status pop_mark(ctx *c, size_t *base, const char *op) {
    if (!c->nmarks) return PERR(c, "%s without a MARK", op);
    *base = c->marks[--c->nmarks];
    return DRDC_OK;
}

static drdc_status make_tuple(ctx *c, pv **items, size_t n, pv **out) {
    pv *t = pv_new(c, V_TUPLE);
    if (!t) return nomem(c, "tuple");
    if (n) {
        t->u.seq.items = malloc(n * sizeof *t->u.seq.items);
        if (!t->u.seq.items) return nomem(c, "tuple");
        memcpy(t->u.seq.items, items, n * sizeof *items);
        t->u.seq.n = t->u.seq.cap = n;
    }
    *out = t;
    return DRDC_OK;
}

static drdc_status memo_put(ctx *c, uint64_t idx, pv *v, size_t pickle_len) {
    uint64_t lim = pickle_len < DRDC_PTH_MAX_MEMO ? pickle_len : DRDC_PTH_MAX_MEMO;
    if (idx >= lim) return PERR(c, "memo index %llu out of range (limit %llu)", (unsigned long long)idx, (unsigned long long)lim);
    if (idx >= c->memocap) {
        size_t ncap = c->memocap ? c->memocap : 64;
        while (ncap <= idx) ncap *= 2;
        pv **nm = realloc(c->memo, ncap * sizeof *nm);
        if (!nm) return nomem(c, "pickle memo");
        memset(nm + c->memocap, 0, (ncap - c->memocap) * sizeof *nm);
        c->memo = nm;
        c->memocap = ncap;
    }
    if (!c->memo[idx]) c->memolen++;
    c->memo[idx] = v;
    return DRDC_OK;
}

static drdc_status memo_get(ctx *c, uint64_t idx, pv **out) {
    if (idx >= c->memocap || !c->memo[idx]) return PERR(c, "memo index %llu read but never set", (unsigned long long)idx);
    *out = c->memo[idx];
    return DRDC_OK;
}

static const struct { const char *name; drdc_st_dtype dtype; } k_storage_types[] = {
    {"FloatStorage", DRDC_ST_F32}, {"HalfStorage", DRDC_ST_F16}, {"BFloat16Storage", DRDC_ST_BF16},
    {"DoubleStorage", DRDC_ST_F64}, {"LongStorage", DRDC_ST_I64}, {"IntStorage", DRDC_ST_I32},
    {"ShortStorage", DRDC_ST_I16}, {"CharStorage", DRDC_ST_I8}, {"ByteStorage", DRDC_ST_U8},
    {"BoolStorage", DRDC_ST_BOOL},
};

static drdc_status make_global(ctx *c, const char *mod, size_t modlen, const char *name, size_t namelen, pv **out) {
    pv *g = pv_new(c, V_GLOBAL);
    if (!g) return nomem(c, "global");
    size_t cap = 420;  /* two shown() names of at most 203 characters, '.', NUL */
    g->u.g.name = malloc(cap);
    if (!g->u.g.name) return nomem(c, "global");
    char mb[256], nb[256];
    snprintf(g->u.g.name, cap, "%s.%s", shown(mod, modlen, mb, 204), shown(name, namelen, nb, 204));
#define IS(m, n) (modlen == strlen(m) && memcmp(mod, m, modlen) == 0 && namelen == strlen(n) && memcmp(name, n, namelen) == 0)
    g->u.g.gk = G_UNKNOWN;
    if (IS("collections", "OrderedDict")) g->u.g.gk = G_ORDEREDDICT;
    else if (IS("torch._utils", "_rebuild_tensor_v2")) g->u.g.gk = G_REBUILD_TENSOR_V2;
    else if (IS("torch._utils", "_rebuild_tensor")) g->u.g.gk = G_REBUILD_TENSOR;
    else if (IS("torch._utils", "_rebuild_parameter")) g->u.g.gk = G_REBUILD_PARAMETER;
    else if (IS("torch._utils", "_rebuild_parameter_with_state")) g->u.g.gk = G_REBUILD_PARAMETER_WITH_STATE;
    else if (modlen == 5 && memcmp(mod, "torch", 5) == 0) {
        for (size_t i = 0; i < sizeof k_storage_types / sizeof k_storage_types[0]; i++) {
            if (namelen == strlen(k_storage_types[i].name) && memcmp(name, k_storage_types[i].name, namelen) == 0) {
                g->u.g.gk = G_STORAGE_TYPE;
                g->u.g.dtype = k_storage_types[i].dtype;
            }
        }
    }
#undef IS
    *out = g;
    return DRDC_OK;
}

static int get_int(const pv *v, int64_t *out) {
    if (v->kind == V_INT) { *out = v->u.i; return 1; }
    if (v->kind == V_BOOL) { *out = v->u.b; return 1; }
    return 0;
}

/* BINPERSID: ('storage', storage_type, key, location, numel[, view_metadata]) -> storage view. */
static drdc_status persistent_load(ctx *c, pv *pid, pv **out) {
    if (pid->kind != V_TUPLE) return PERR(c, "persistent id is a %s, not a tuple", kind_name(pid->kind));
    size_t n = pid->u.seq.n;
    pv **it = pid->u.seq.items;
    if (n < 1 || it[0]->kind != V_STR || it[0]->u.s.n != 7 || memcmp(it[0]->u.s.p, "storage", 7) != 0)
        return PERR(c, "persistent id is not a ('storage', ...) tuple");
    if (n != 5 && n != 6) return PERR(c, "storage persistent id has %zu fields, want 5 or 6", n);
    if (it[1]->kind != V_GLOBAL) return PERR(c, "storage type is a %s, not a global", kind_name(it[1]->kind));
    if (it[1]->u.g.gk != G_STORAGE_TYPE) return PERR(c, "unsupported storage type '%s'", it[1]->u.g.name);
    if (it[2]->kind != V_STR) return PERR(c, "storage key is a %s, not a str", kind_name(it[2]->kind));
    if (it[3]->kind != V_STR) return PERR(c, "storage location is a %s, not a str", kind_name(it[3]->kind));
    int64_t numel;
    if (!get_int(it[4], &numel) || numel < 0) return PERR(c, "storage size is not a non-negative int");
    drdc_st_dtype dtype = it[1]->u.g.dtype;
    const char *key = it[2]->u.s.p;
    size_t keylen = it[2]->u.s.n;
    char kb[80];
    size_t idx;
    if (sm_find(&c->storemap, key, keylen, &idx)) {
        if (c->stores[idx].dtype != dtype || c->stores[idx].numel != numel)
            return PERR(c, "storage '%s' referenced as %s[%lld] and as %s[%lld]", shown(key, keylen, kb, sizeof kb),
                        drdc_st_dtype_name(c->stores[idx].dtype), (long long)c->stores[idx].numel,
                        drdc_st_dtype_name(dtype), (long long)numel);
    } else {
        if (c->nstores == c->storecap) {
            size_t ncap = c->storecap ? c->storecap * 2 : 16;
            store *ns = realloc(c->stores, ncap * sizeof *ns);
            if (!ns) return nomem(c, "storage table");
            c->stores = ns;
            c->storecap = ncap;
        }
        idx = c->nstores++;
        c->stores[idx] = (store){key, keylen, dtype, numel, NULL, 0};
        if (sm_put(&c->storemap, key, keylen, idx) != 0) return nomem(c, "storage table");
    }
    int64_t voff = 0, vnumel = numel;
    if (n == 6 && it[5]->kind != V_NONE) {
        /* legacy view_metadata: (view_key, offset, view_size) into the root storage */
        pv *vm = it[5];
        if (vm->kind != V_TUPLE || vm->u.seq.n != 3 || !get_int(vm->u.seq.items[1], &voff) ||
            !get_int(vm->u.seq.items[2], &vnumel))
            return PERR(c, "storage view metadata is not (key, offset, size)");
        if (voff < 0 || vnumel < 0 || voff > numel || vnumel > numel - voff)
            return PERR(c, "storage view [%lld, +%lld) outside storage '%s' of %lld elements", (long long)voff,
                        (long long)vnumel, shown(key, keylen, kb, sizeof kb), (long long)numel);
    }
    pv *s = pv_new(c, V_STORAGE);
    if (!s) return nomem(c, "storage");
    s->u.st.store = idx;
    s->u.st.offset = voff;
    s->u.st.numel = vnumel;
    *out = s;
    return DRDC_OK;
}

static drdc_status int_tuple(ctx *c, const pv *v, const char *what, int64_t *vals, int *n) {
    if (v->kind != V_TUPLE && v->kind != V_LIST) return PERR(c, "tensor %s is a %s, not a tuple", what, kind_name(v->kind));
    if (v->u.seq.n > DRDC_ST_MAX_RANK) return PERR(c, "tensor %s has rank %zu, above %d", what, v->u.seq.n, DRDC_ST_MAX_RANK);
    for (size_t i = 0; i < v->u.seq.n; i++) {
        if (!get_int(v->u.seq.items[i], &vals[i])) return PERR(c, "tensor %s[%zu] is not an int", what, i);
        if (vals[i] < 0) return PERR(c, "tensor %s[%zu] = %lld is negative", what, i, (long long)vals[i]);
    }
    *n = (int)v->u.seq.n;
    return DRDC_OK;
}

/* REDUCE / NEWOBJ: calls one of the known globals. */
static drdc_status call_global(ctx *c, pv *fn, pv *args, pv **out) {
    if (fn->kind != V_GLOBAL) return PERR(c, "calling a %s", kind_name(fn->kind));
    if (args->kind != V_TUPLE) return PERR(c, "arguments of '%s' are a %s, not a tuple", fn->u.g.name, kind_name(args->kind));
    size_t n = args->u.seq.n;
    pv **a = args->u.seq.items;
    switch (fn->u.g.gk) {
    case G_ORDEREDDICT:
        if (n != 0) return PERR(c, "collections.OrderedDict called with %zu arguments (only () is supported)", n);
        *out = pv_new(c, V_DICT);
        return *out ? DRDC_OK : nomem(c, "dict");
    case G_REBUILD_TENSOR:
    case G_REBUILD_TENSOR_V2: {
        int v2 = fn->u.g.gk == G_REBUILD_TENSOR_V2;
        if (v2 ? (n != 6 && n != 7) : n != 4)
            return PERR(c, "%s called with %zu arguments", fn->u.g.name, n);
        if (a[0]->kind != V_STORAGE) return PERR(c, "%s: storage argument is a %s", fn->u.g.name, kind_name(a[0]->kind));
        pv *t = pv_new(c, V_TENSOR);
        if (!t) return nomem(c, "tensor");
        t->u.t.storage = a[0];
        if (!get_int(a[1], &t->u.t.offset) || t->u.t.offset < 0)
            return PERR(c, "%s: storage offset is not a non-negative int", fn->u.g.name);
        int nd_size, nd_stride;
        drdc_status st = int_tuple(c, a[2], "size", t->u.t.shape, &nd_size);
        if (st) return st;
        st = int_tuple(c, a[3], "stride", t->u.t.stride, &nd_stride);
        if (st) return st;
        if (nd_size != nd_stride) return PERR(c, "tensor size has rank %d but stride rank %d", nd_size, nd_stride);
        t->u.t.ndim = nd_size;
        *out = t;
        return DRDC_OK;
    }
    case G_REBUILD_PARAMETER:
    case G_REBUILD_PARAMETER_WITH_STATE:
        if (n != (fn->u.g.gk == G_REBUILD_PARAMETER ? 3u : 4u)) return PERR(c, "%s called with %zu arguments", fn->u.g.name, n);
        if (a[0]->kind != V_TENSOR) return PERR(c, "%s: data is a %s, not a tensor", fn->u.g.name, kind_name(a[0]->kind));
        *out = a[0];
        return DRDC_OK;
    case G_STORAGE_TYPE:
        return PERR(c, "calling storage type '%s' is not supported", fn->u.g.name);
    default:
        return PERR(c, "unsupported global '%s' (only tensors, dicts and plain values can be read)", fn->u.g.name);
    }
}

/* Runs one pickle over buf[start, end). On success *result is the value at STOP and *stop_end
 * the offset just after the STOP opcode. */
static drdc_status pk_run(ctx *c, size_t start, size_t end, const char *what, pv **result, size_t *stop_end) {
    const uint8_t *b = c->buf;
    size_t p = start, plen = end - start;
    drdc_status st = DRDC_OK;
    c->what = what;
    c->sp = 0;
    c->nmarks = 0;
    c->memolen = 0;
    if (c->memo) memset(c->memo, 0, c->memocap * sizeof *c->memo);
#define NEED(k) do { if ((size_t)(k) > end - p) return PERR(c, "truncated: opcode 0x%02x needs %zu more bytes", op, (size_t)(k)); } while (0)
#define TRY_RETURN(x) do { st = (x); if (st) return st; } while (0)
    for (;;) {
        c->pos = p;
        if (p >= end) return PERR(c, "truncated: pickle ends without STOP");
        uint8_t op = b[p++];
        pv *v = NULL, *a = NULL, *k = NULL;
        size_t base = 0;
        switch (op) {
        case 0x80: /* PROTO */
            NEED(1);
            if (b[p] > 5) return PERR(c, "pickle protocol %d is not supported", b[p]);
            p += 1;
            break;
        case 0x95: /* FRAME: an 8-byte length; frames are only a read-ahead hint */
            NEED(8);
            p += 8;
            break;
        case '}': TRY_RETURN(push(c, pv_new(c, V_DICT))); break;
        case ']': TRY_RETURN(push(c, pv_new(c, V_LIST))); break;
        case ')': TRY_RETURN(push(c, pv_new(c, V_TUPLE))); break;
        case '(': /* MARK */
            if (c->nmarks == DRDC_PTH_MAX_MARKS) return PERR(c, "more than %d nested MARKs", DRDC_PTH_MAX_MARKS);
            if (c->nmarks == c->mcap) {
                size_t ncap = c->mcap ? c->mcap * 2 : 16;
                size_t *nm = realloc(c->marks, ncap * sizeof *nm);
                if (!nm) return nomem(c, "pickle marks");
                c->marks = nm;
                c->mcap = ncap;
            }
            c->marks[c->nmarks++] = c->sp;
            break;
        case 't': /* TUPLE */
            TRY_RETURN(pop_mark(c, &base, "TUPLE"));
            TRY_RETURN(make_tuple(c, c->sp > base ? c->stack + base : NULL, c->sp - base, &v));
            c->sp = base;
            TRY_RETURN(push(c, v));
            break;
        case 0x85: case 0x86: case 0x87: { /* TUPLE1..3 */
            size_t n = (size_t)(op - 0x84);
            if (c->sp - frame_base(c) < n) return PERR(c, "TUPLE%zu with %zu values on the stack", n, c->sp - frame_base(c));
            TRY_RETURN(make_tuple(c, c->stack + c->sp - n, n, &v));
            c->sp -= n;
            TRY_RETURN(push(c, v));
            break;
        }
        case 'J': NEED(4); v = pv_new(c, V_INT); if (v) v->u.i = (int32_t)rd32(b + p); p += 4; TRY_RETURN(push(c, v)); break;
        case 'K': NEED(1); v = pv_new(c, V_INT); if (v) v->u.i = b[p]; p += 1; TRY_RETURN(push(c, v)); break;
        case 'M': NEED(2); v = pv_new(c, V_INT); if (v) v->u.i = rd16(b + p); p += 2; TRY_RETURN(push(c, v)); break;
        case 0x8a: case 0x8b: { /* LONG1, LONG4: little-endian two's complement */
            size_t n;
            if (op == 0x8a) { NEED(1); n = b[p]; p += 1; }
            else { NEED(4); n = rd32(b + p); p += 4; if ((int32_t)n < 0) return PERR(c, "LONG4 with negative length"); }
            NEED(n);
            if (n <= 8) {
                uint64_t u = 0;
                for (size_t i = 0; i < n; i++) u |= (uint64_t)b[p + i] << (8 * i);
                if (n > 0 && n < 8 && (b[p + n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n);
                v = pv_new(c, V_INT);
                if (v) v->u.i = (int64_t)u;
            } else {
                v = pv_new(c, V_BIGINT);
                if (v) { v->u.s.p = (const char *)b + p; v->u.s.n = n; }
            }
            p += n;
            TRY_RETURN(push(c, v));
            break;
        }
        case 'G': { /* BINFLOAT: big-endian double */
            NEED(8);
            uint64_t u = 0;
            for (int i = 0; i < 8; i++) u = (u << 8) | b[p + i];
            p += 8;
            v = pv_new(c, V_FLOAT);
            if (v) memcpy(&v->u.f, &u, sizeof u);
            TRY_RETURN(push(c, v));
            break;
        }
        case 'X': case 0x8c: case 0x8d: case 'T': case 'U': case 'B': case 'C': case 0x8e: {
            /* BINUNICODE(4) SHORT_BINUNICODE(1) BINUNICODE8(8) BINSTRING(4) SHORT_BINSTRING(1)
               BINBYTES(4) SHORT_BINBYTES(1) BINBYTES8(8) */
            size_t lb = (op == 0x8c || op == 'U' || op == 'C') ? 1 : (op == 0x8d || op == 0x8e) ? 8 : 4;
            NEED(lb);
            uint64_t n = lb == 1 ? b[p] : lb == 4 ? rd32(b + p) : rd64(b + p);
            if (op == 'T' && (int32_t)n < 0) return PERR(c, "BINSTRING with negative length");
            p += lb;
            if (n > end - p) return PERR(c, "truncated: string of %llu bytes, %zu left", (unsigned long long)n, end - p);
            v = pv_new(c, (op == 'B' || op == 'C' || op == 0x8e) ? V_BYTES : V_STR);
            if (v) { v->u.s.p = (const char *)b + p; v->u.s.n = (size_t)n; }
            p += (size_t)n;
            TRY_RETURN(push(c, v));
            break;
        }
        case 0x88: TRY_RETURN(push(c, &g_true)); break;
        case 0x89: TRY_RETURN(push(c, &g_false)); break;
        case 'N': TRY_RETURN(push(c, &g_none)); break;
        case 'q': case 'r': case 0x94: { /* BINPUT, LONG_BINPUT, MEMOIZE */
            uint64_t idx;
            if (op == 'q') { NEED(1); idx = b[p]; p += 1; }
            else if (op == 'r') { NEED(4); idx = rd32(b + p); p += 4; }
            else idx = c->memolen;
            if (c->sp <= frame_base(c)) return PERR(c, "memo store on an empty stack");
            TRY_RETURN(memo_put(c, idx, c->stack[c->sp - 1], plen));
            break;
        }
        case 'h': case 'j': { /* BINGET, LONG_BINGET */
            uint64_t idx;
            if (op == 'h') { NEED(1); idx = b[p]; p += 1; }
            else { NEED(4); idx = rd32(b + p); p += 4; }
            TRY_RETURN(memo_get(c, idx, &v));
            TRY_RETURN(push(c, v));
            break;
        }
        case 'c': { /* GLOBAL "module\nname\n" */
            const uint8_t *nl1 = memchr(b + p, '\n', end - p);
            if (!nl1) return PERR(c, "truncated: GLOBAL without newline");
            size_t modlen = (size_t)(nl1 - (b + p));
            size_t q = p + modlen + 1;
            const uint8_t *nl2 = memchr(b + q, '\n', end - q);
            if (!nl2) return PERR(c, "truncated: GLOBAL without second newline");
            size_t namelen = (size_t)(nl2 - (b + q));
            TRY_RETURN(make_global(c, (const char *)b + p, modlen, (const char *)b + q, namelen, &v));
            p = q + namelen + 1;
            TRY_RETURN(push(c, v));
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            TRY_RETURN(pop(c, &k, "STACK_GLOBAL"));
            TRY_RETURN(pop(c, &a, "STACK_GLOBAL"));
            if (a->kind != V_STR || k->kind != V_STR) return PERR(c, "STACK_GLOBAL of non-strings");
            TRY_RETURN(make_global(c, a->u.s.p, a->u.s.n, k->u.s.p, k->u.s.n, &v));
            TRY_RETURN(push(c, v));
            break;
        case 'R': /* REDUCE */
        case 0x81: /* NEWOBJ */
            TRY_RETURN(pop(c, &a, op == 'R' ? "REDUCE" : "NEWOBJ"));
            TRY_RETURN(pop(c, &k, op == 'R' ? "REDUCE" : "NEWOBJ"));
            TRY_RETURN(call_global(c, k, a, &v));
            TRY_RETURN(push(c, v));
            break;
        case 'b': /* BUILD: object state (e.g. an OrderedDict's _metadata) is not needed */
            TRY_RETURN(pop(c, &a, "BUILD"));
            if (c->sp <= frame_base(c)) return PERR(c, "BUILD on an empty stack");
            break;
        case 's': /* SETITEM */
            TRY_RETURN(pop(c, &v, "SETITEM"));
            TRY_RETURN(pop(c, &k, "SETITEM"));
            if (c->sp <= frame_base(c)) return PERR(c, "SETITEM on an empty stack");
            a = c->stack[c->sp - 1];
            if (a->kind != V_DICT) return PERR(c, "SETITEM on a %s", kind_name(a->kind));
            if (dict_push(a, k, v)) return nomem(c, "dict");
            break;
        case 'u': { /* SETITEMS */
            TRY_RETURN(pop_mark(c, &base, "SETITEMS"));
            if (base == 0 || base <= frame_base(c)) return PERR(c, "SETITEMS without a dict below the MARK");
            a = c->stack[base - 1];
            if (a->kind != V_DICT) return PERR(c, "SETITEMS on a %s", kind_name(a->kind));
            if ((c->sp - base) % 2) return PERR(c, "SETITEMS with an odd number of values");
            for (size_t i = base; i < c->sp; i += 2)
                if (dict_push(a, c->stack[i], c->stack[i + 1])) return nomem(c, "dict");
            c->sp = base;
            break;
        }
        case 'a': /* APPEND */
            TRY_RETURN(pop(c, &v, "APPEND"));
            if (c->sp <= frame_base(c)) return PERR(c, "APPEND on an empty stack");
            a = c->stack[c->sp - 1];
            if (a->kind != V_LIST) return PERR(c, "APPEND to a %s", kind_name(a->kind));
            if (seq_push(a, v)) return nomem(c, "list");
            break;
        case 'e': /* APPENDS */
            TRY_RETURN(pop_mark(c, &base, "APPENDS"));
            if (base == 0 || base <= frame_base(c)) return PERR(c, "APPENDS without a list below the MARK");
            a = c->stack[base - 1];
            if (a->kind != V_LIST) return PERR(c, "APPENDS to a %s", kind_name(a->kind));
            for (size_t i = base; i < c->sp; i++)
                if (seq_push(a, c->stack[i])) return nomem(c, "list");
            c->sp = base;
            break;
        case 'Q': /* BINPERSID */
            TRY_RETURN(pop(c, &a, "BINPERSID"));
            TRY_RETURN(persistent_load(c, a, &v));
            TRY_RETURN(push(c, v));
            break;
        case '0': /* POP */
            TRY_RETURN(pop(c, &a, "POP"));
            break;
        case '1': /* POP_MARK */
            TRY_RETURN(pop_mark(c, &base, "POP_MARK"));
            c->sp = base;
            break;
        case '2': /* DUP */
            if (c->sp <= frame_base(c)) return PERR(c, "DUP on an empty stack");
            TRY_RETURN(push(c, c->stack[c->sp - 1]));
            break;
        case '.': /* STOP */
            if (c->nmarks) return PERR(c, "STOP with an open MARK");
            if (c->sp != 1) return PERR(c, "STOP with %zu values on the stack, want 1", c->sp);
            *result = c->stack[0];
            *stop_end = p;
            c->sp = 0;
            return DRDC_OK;
        default:
            return PERR(c, "unsupported pickle opcode 0x%02x", op);
        }
    }
#undef NEED
#undef TRY
}

/* ---- CRC-32 (zip) ---------------------------------------------------------------------------- */

static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t table[256];  /* built per call (2k steps, next to a whole entry): no shared state */
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t r = i;
        for (int j = 0; j < 8; j++) r = (r >> 1) ^ (0xEDB88320u & (0u - (r & 1)));
        table[i] = r;
    }
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

/* ---- zip reader ------------------------------------------------------------------------------ */

static drdc_status zip_read_dir(ctx *c) {
    const uint8_t *b = c->buf;
    size_t size = c->size;
    if (size < 22) return ferr(c, "truncated zip archive (%zu bytes)", size);
    size_t eocd = (size_t)-1;
    size_t lo = size - 22 > 65535 ? size - 22 - 65535 : 0;
    for (size_t i = size - 22 + 1; i-- > lo;) {
        if (rd32(b + i) == 0x06054b50u && i + 22 + rd16(b + i + 20) <= size) { eocd = i; break; }
    }
    if (eocd == (size_t)-1) return ferr(c, "zip end-of-central-directory record not found (truncated or not a zip archive)");
    uint64_t nent = rd16(b + eocd + 10), cdsize = rd32(b + eocd + 12), cdoff = rd32(b + eocd + 16);
    if (rd16(b + eocd + 4) != 0 || rd16(b + eocd + 6) != 0) return ferr(c, "multi-disk zip archives are not supported");
    if (eocd >= 20 && rd32(b + eocd - 20) == 0x07064b50u) {
        uint64_t z64 = rd64(b + eocd - 20 + 8);
        if (z64 > eocd - 20 || eocd - 20 - z64 < 56) return ferr(c, "ZIP64 end-of-central-directory offset %llu out of range", (unsigned long long)z64);
        const uint8_t *r = b + z64;
        if (rd32(r) != 0x06064b50u) return ferr(c, "ZIP64 end-of-central-directory record has a bad signature");
        nent = rd64(r + 32);
        cdsize = rd64(r + 40);
        cdoff = rd64(r + 48);
    } else if (nent == 0xFFFF || cdsize == 0xFFFFFFFFu || cdoff == 0xFFFFFFFFu) {
        return ferr(c, "zip directory fields saturated but no ZIP64 locator");
    }
    if (cdoff > size || cdsize > size - cdoff) return ferr(c, "zip central directory [%llu, +%llu) outside the file of %zu bytes",
                                                           (unsigned long long)cdoff, (unsigned long long)cdsize, size);
    if (nent > cdsize / 46) return ferr(c, "zip central directory claims %llu entries in %llu bytes", (unsigned long long)nent, (unsigned long long)cdsize);
    c->zents = calloc(nent ? (size_t)nent : 1, sizeof *c->zents);
    if (!c->zents) return nomem(c, "zip directory");
    size_t p = (size_t)cdoff, cdend = (size_t)(cdoff + cdsize);
    for (uint64_t e = 0; e < nent; e++) {
        if (cdend - p < 46 || rd32(b + p) != 0x02014b50u) return ferr(c, "zip central directory entry %llu is corrupt", (unsigned long long)e);
        zent z = {0};
        z.flags = rd16(b + p + 8);
        z.method = rd16(b + p + 10);
        z.crc = rd32(b + p + 16);
        z.csize = rd32(b + p + 20);
        z.usize = rd32(b + p + 24);
        size_t nlen = rd16(b + p + 28), xlen = rd16(b + p + 30), clen = rd16(b + p + 32);
        uint64_t lho = rd32(b + p + 42);
        if (cdend - p - 46 < nlen + xlen + clen) return ferr(c, "zip central directory entry %llu runs past the directory", (unsigned long long)e);
        z.name = (const char *)b + p + 46;
        z.namelen = nlen;
        char nb[128];
        const char *shown_name = shown(z.name, nlen, nb, sizeof nb);
        if (z.usize == 0xFFFFFFFFu || z.csize == 0xFFFFFFFFu || lho == 0xFFFFFFFFu) {
            /* ZIP64 extended information: the saturated fields, in this order */
            const uint8_t *x = b + p + 46 + nlen, *xe = x + xlen;
            int found = 0;
            while (xe - x >= 4) {
                uint16_t id = rd16(x), len = rd16(x + 2);
                if ((size_t)(xe - x - 4) < len) break;
                if (id == 0x0001) {
                    const uint8_t *f = x + 4, *fe = f + len;
                    if (z.usize == 0xFFFFFFFFu) { if (fe - f < 8) break; z.usize = rd64(f); f += 8; }
                    if (z.csize == 0xFFFFFFFFu) { if (fe - f < 8) break; z.csize = rd64(f); f += 8; }
                    if (lho == 0xFFFFFFFFu) { if (fe - f < 8) break; lho = rd64(f); f += 8; }
                    found = 1;
                    break;
                }
                x += 4 + len;
            }
            if (!found) return ferr(c, "zip entry '%s': ZIP64 extra field missing or short", shown_name);
        }
        if (z.flags & 1) return ferr(c, "zip entry '%s' is encrypted", shown_name);
        if (lho > size || size - lho < 30 || rd32(b + lho) != 0x04034b50u)
            return ferr(c, "zip entry '%s': local header at %llu missing or corrupt", shown_name, (unsigned long long)lho);
        uint64_t doff = lho + 30 + rd16(b + lho + 26) + rd16(b + lho + 28);
        if (doff > size || z.csize > size - doff)
            return ferr(c, "zip entry '%s': data [%llu, +%llu) runs past the end of the file (%zu bytes; truncated?)", shown_name,
                        (unsigned long long)doff, (unsigned long long)z.csize, size);
        z.data_off = doff;
        c->zents[c->nzents] = z;
        size_t dummy;
        if (!sm_find(&c->zmap, z.name, z.namelen, &dummy) && sm_put(&c->zmap, z.name, z.namelen, c->nzents) != 0)
            return nomem(c, "zip directory");
        c->nzents++;
        p += 46 + nlen + xlen + clen;
    }
    return DRDC_OK;
}

/* The bytes of a STORED entry, CRC-checked. */
static drdc_status zip_entry(ctx *c, const zent *z, const uint8_t **data, size_t *len) {
    char nb[128];
    const char *nm = shown(z->name, z->namelen, nb, sizeof nb);
    if (z->method == 8)
        return ferr(c, "zip entry '%s' is DEFLATE-compressed; only stored (uncompressed) entries are supported, "
                       "as torch.save writes them (re-save the file with torch.save)", nm);
    if (z->method != 0) return ferr(c, "zip entry '%s' uses compression method %u; only stored entries are supported", nm, z->method);
    if (z->csize != z->usize) return ferr(c, "zip entry '%s' is stored but its sizes differ (%llu vs %llu)", nm,
                                          (unsigned long long)z->csize, (unsigned long long)z->usize);
    const uint8_t *d = c->buf + z->data_off;
    uint32_t crc = crc32_of(d, (size_t)z->csize);
    if (crc != z->crc) return ferr(c, "zip entry '%s' is corrupt (CRC-32 %08x, directory says %08x)", nm, crc, z->crc);
    *data = d;
    *len = (size_t)z->csize;
    return DRDC_OK;
}

static const zent *zip_find(ctx *c, const char *name, size_t n) {
    size_t idx;
    return sm_find(&c->zmap, name, n, &idx) ? &c->zents[idx] : NULL;
}

static drdc_status zip_load(ctx *c, pv **root) {
    drdc_status st = zip_read_dir(c);
    if (st) return st;
    /* <prefix>/data.pkl: the one entry of that form */
    const zent *pkl = NULL;
    size_t plen = 0;
    for (size_t i = 0; i < c->nzents; i++) {
        const zent *z = &c->zents[i];
        if (z->namelen < 10 || memcmp(z->name + z->namelen - 9, "/data.pkl", 9) != 0) continue;
        if (memchr(z->name, '/', z->namelen - 9)) continue;
        pkl = z;
        plen = z->namelen - 9;
        break;
    }
    if (!pkl) return ferr(c, "zip archive has no <name>/data.pkl: not a PyTorch file");
    const char *prefix = pkl->name;
    char *nbuf = NULL;
    size_t ncap = 0;
#define NAME(suffix, sl) do { size_t need_ = plen + (sl) + 1; if (need_ > ncap) { char *nn_ = realloc(nbuf, need_); \
        if (!nn_) { free(nbuf); return nomem(c, "zip name"); } nbuf = nn_; ncap = need_; } \
        memcpy(nbuf, prefix, plen); memcpy(nbuf + plen, suffix, sl); nbuf[plen + (sl)] = '\0'; } while (0)
    NAME("/constants.pkl", 14);
    if (zip_find(c, nbuf, plen + 14)) {
        free(nbuf);
        return ferr(c, "this is a TorchScript archive (torch.jit.save), not a state dict; save model.state_dict() with torch.save");
    }
    NAME("/byteorder", 10);
    const zent *bo = zip_find(c, nbuf, plen + 10);
    if (bo) {
        const uint8_t *d;
        size_t n;
        if ((st = zip_entry(c, bo, &d, &n))) { free(nbuf); return st; }
        if (!(n == 6 && memcmp(d, "little", 6) == 0)) {
            free(nbuf);
            return ferr(c, "byte order is not 'little'; big-endian files are not supported");
        }
    }
    const uint8_t *pd;
    size_t pn;
    if ((st = zip_entry(c, pkl, &pd, &pn))) { free(nbuf); return st; }
    size_t stop_end;
    st = pk_run(c, (size_t)(pd - c->buf), (size_t)(pd - c->buf) + pn, "data.pkl", root, &stop_end);
    if (st) { free(nbuf); return st; }
    /* storages: <prefix>/data/<key> */
    for (size_t i = 0; i < c->nstores; i++) {
        store *s = &c->stores[i];
        NAME("/data/", 6);
        size_t need = plen + 6 + s->keylen + 1;
        if (need > ncap) {
            char *nn = realloc(nbuf, need);
            if (!nn) { free(nbuf); return nomem(c, "zip name"); }
            nbuf = nn;
            ncap = need;
        }
        memcpy(nbuf + plen + 6, s->key, s->keylen);
        nbuf[plen + 6 + s->keylen] = '\0';
        char kb[80];
        const zent *z = zip_find(c, nbuf, plen + 6 + s->keylen);
        if (!z) { free(nbuf); return ferr(c, "storage '%s' has no zip entry data/%s", shown(s->key, s->keylen, kb, sizeof kb), kb); }
        const uint8_t *d;
        size_t n;
        if ((st = zip_entry(c, z, &d, &n))) { free(nbuf); return st; }
        size_t esz = drdc_st_dtype_size(s->dtype), nb;
        if (__builtin_mul_overflow((size_t)s->numel, esz, &nb) || nb > n) {
            free(nbuf);
            return ferr(c, "storage '%s' needs %lld %s elements but its entry has %zu bytes", shown(s->key, s->keylen, kb, sizeof kb),
                        (long long)s->numel, drdc_st_dtype_name(s->dtype), n);
        }
        s->data = d;
        s->have_data = 1;
    }
#undef NAME
    free(nbuf);
    return DRDC_OK;
}

/* ---- legacy reader --------------------------------------------------------------------------- */

static const uint8_t k_legacy_magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

static drdc_status legacy_load(ctx *c, pv **root) {
    pv *v;
    size_t p = 0;
    drdc_status st = pk_run(c, p, c->size, "pickle 1 (magic number)", &v, &p);
    if (st) return st;
    if (v->kind != V_BIGINT || v->u.s.n != 10 || memcmp(v->u.s.p, k_legacy_magic, 10) != 0)
        return ferr(c, "wrong magic number: not a PyTorch legacy file");
    if ((st = pk_run(c, p, c->size, "pickle 2 (protocol version)", &v, &p))) return st;
    if (v->kind != V_INT || v->u.i != 1001)
        return ferr(c, "legacy protocol version %lld is not supported (want 1001)", v->kind == V_INT ? (long long)v->u.i : -1LL);
    if ((st = pk_run(c, p, c->size, "pickle 3 (sys_info)", &v, &p))) return st;
    if (v->kind != V_DICT) return ferr(c, "sys_info is a %s, not a dict", kind_name(v->kind));
    for (size_t i = 0; i < v->u.d.n; i++) {
        pv *k = v->u.d.keys[i], *x = v->u.d.vals[i];
        if (k->kind == V_STR && k->u.s.n == 13 && memcmp(k->u.s.p, "little_endian", 13) == 0 && x->kind == V_BOOL && !x->u.b)
            return ferr(c, "file was written on a big-endian machine; not supported");
    }
    if ((st = pk_run(c, p, c->size, "pickle 4 (the saved object)", root, &p))) return st;
    pv *keys;
    if ((st = pk_run(c, p, c->size, "pickle 5 (storage keys)", &keys, &p))) return st;
    if (keys->kind != V_LIST && keys->kind != V_TUPLE) return ferr(c, "storage key list is a %s, not a list", kind_name(keys->kind));
    for (size_t i = 0; i < keys->u.seq.n; i++) {
        pv *k = keys->u.seq.items[i];
        char kb[80];
        if (k->kind != V_STR) return ferr(c, "storage key %zu is a %s, not a str", i, kind_name(k->kind));
        size_t idx;
        if (!sm_find(&c->storemap, k->u.s.p, k->u.s.n, &idx))
            return ferr(c, "storage key '%s' is listed but no tensor uses it", shown(k->u.s.p, k->u.s.n, kb, sizeof kb));
        store *s = &c->stores[idx];
        if (s->have_data) return ferr(c, "storage key '%s' is listed twice", shown(k->u.s.p, k->u.s.n, kb, sizeof kb));
        if (c->size - p < 8) return ferr(c, "truncated: storage '%s' (%zu of %zu) has no size at offset %zu",
                                          shown(k->u.s.p, k->u.s.n, kb, sizeof kb), i + 1, keys->u.seq.n, p);
        uint64_t count = rd64(c->buf + p);
        p += 8;
        if (count != (uint64_t)s->numel)
            return ferr(c, "storage '%s' has %llu elements in the data but %lld in the pickle", shown(k->u.s.p, k->u.s.n, kb, sizeof kb),
                        (unsigned long long)count, (long long)s->numel);
        size_t esz = drdc_st_dtype_size(s->dtype), nb;
        if (__builtin_mul_overflow((size_t)count, esz, &nb) || nb > c->size - p)
            return ferr(c, "truncated: storage '%s' (%zu of %zu) needs %llu bytes at offset %zu, the file has %zu",
                        shown(k->u.s.p, k->u.s.n, kb, sizeof kb), i + 1, keys->u.seq.n,
                        (unsigned long long)count * esz, p, c->size);
        s->data = c->buf + p;
        s->have_data = 1;
        p += nb;
    }
    return DRDC_OK;
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
    const store *s = &c->stores[sv->u.st.store];
    char kb[80];
    if (!s->have_data)
        return ferr(c, "tensor '%s': storage '%s' has no data", name, shown(s->key, s->keylen, kb, sizeof kb));
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
                        (long long)tv->u.t.offset, (long long)maxoff, shown(s->key, s->keylen, kb, sizeof kb),
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

/* Walks dict d, naming entries prefix + "." + key. name ownership passes to gather. */
static drdc_status flatten(flat *fl, const pv *d, const char *prefix, int depth) {
    ctx *c = fl->c;
    if (depth >= DRDC_PTH_MAX_DEPTH)
        return ferr(c, "dicts nested deeper than %d (at '%s'; a cycle?)", DRDC_PTH_MAX_DEPTH, prefix ? prefix : "");
    for (size_t i = 0; i < d->u.d.n; i++) {
        const pv *k = d->u.d.keys[i], *v = d->u.d.vals[i];
        if (v->kind != V_TENSOR && v->kind != V_DICT) { fl->f->skipped++; continue; }
        char numbuf[32];
        const char *kp;
        size_t kn;
        if (k->kind == V_STR) {
            kp = k->u.s.p;
            kn = k->u.s.n;
            char kb[80];
            if (memchr(kp, '\0', kn)) return ferr(c, "key '%s' contains a NUL byte", shown(kp, kn, kb, sizeof kb));
        } else if (k->kind == V_INT) {
            kn = (size_t)snprintf(numbuf, sizeof numbuf, "%lld", (long long)k->u.i);
            kp = numbuf;
        } else {
            fl->f->skipped++;
            continue;
        }
        size_t pl = prefix ? strlen(prefix) + 1 : 0;
        char *name = malloc(pl + kn + 1);
        if (!name) return nomem(c, "tensor name");
        if (prefix) { memcpy(name, prefix, pl - 1); name[pl - 1] = '.'; }
        memcpy(name + pl, kp, kn);
        name[pl + kn] = '\0';
        drdc_status st;
        if (v->kind == V_TENSOR) {
            st = gather(fl, v, name);
            if (st) free(name);
        } else {
            st = flatten(fl, v, name, depth + 1);
            free(name);
        }
        if (st) return st;
    }
    return DRDC_OK;
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

drdc_status drdc_pth_parse(drdc_pth_file **out, const void *data, size_t size, const char *source_name) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "drdc_pth_parse: out is NULL");
    *out = NULL;
    const char *src = source_name ? source_name : "<memory>";
    ctx c;
    memset(&c, 0, sizeof c);
    c.src = src;
    c.buf = data;
    c.size = size;
    if (!data && size) return drdc_fail(DRDC_ERR_INPUT, "%s: data is NULL", src);
    const uint8_t *b = data;
    drdc_status st;
    pv *root = NULL;
    if (size >= 4 && rd32(b) == 0x04034b50u) {
        c.format = DRDC_PTH_ZIP;
        st = zip_load(&c, &root);
    } else if (size >= 262 && memcmp(b + 257, "ustar", 5) == 0) {
        st = ferr(&c, "old tar-based PyTorch format (torch < 0.4) is not supported; load and re-save it with a current torch.save");
    } else if (size >= 2 && b[0] == 0x80) {
        c.format = DRDC_PTH_LEGACY;
        st = legacy_load(&c, &root);
    } else if (size == 0) {
        st = ferr(&c, "empty file");
    } else {
        st = ferr(&c, "not a PyTorch file: neither a zip archive nor a legacy pickle (wrong magic)");
    }
    drdc_pth_file *f = NULL;
    if (!st && root->kind != V_DICT)
        st = ferr(&c, "the saved object is a %s, not a dict of tensors (a state dict)", kind_name(root->kind));
    if (!st) {
        f = calloc(1, sizeof *f);
        if (f) {
            size_t n = strlen(src) + 1;
            f->source = malloc(n);
            if (f->source) memcpy(f->source, src, n);
        }
        if (!f || !f->source) st = nomem(&c, "result");
    }
    if (!st) {
        f->format = c.format;
        flat fl = {&c, f, 0, 0};
        size_t lim = size > (SIZE_MAX - (64u << 20)) / 4 ? SIZE_MAX : 4 * size + (64u << 20);
        fl.out_limit = lim;
        st = flatten(&fl, root, NULL, 0);
    }
    if (!st) {
        f->sorted = malloc((size_t)(f->count ? f->count : 1) * sizeof *f->sorted);
        int *tmp = malloc((size_t)(f->count ? f->count : 1) * sizeof *tmp);
        if (!f->sorted || !tmp) st = nomem(&c, "name index");
        else {
            for (int i = 0; i < f->count; i++) f->sorted[i] = i;
            sort_idx(f->sorted, tmp, f->count, f->tensors);
            for (int i = 1; i < f->count; i++) {
                if (strcmp(f->tensors[f->sorted[i - 1]].name, f->tensors[f->sorted[i]].name) == 0) {
                    st = ferr(&c, "two entries are named '%s' (after flattening nested dicts with '.')", f->tensors[f->sorted[i]].name);
                    break;
                }
            }
        }
        free(tmp);
    }
    ctx_free(&c);
    if (st) {
        drdc_pth_free(f);
        return st;
    }
    *out = f;
    return DRDC_OK;
}

drdc_status drdc_pth_load(drdc_pth_file **out, const char *path) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "drdc_pth_load: out is NULL");
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return drdc_fail(DRDC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    drdc_status st = DRDC_OK;
    if (fseek(fp, 0, SEEK_END) == 0) {
        long n = ftell(fp);
        if (n > 0) cap = (size_t)n + 1;  /* +1: reaching EOF needs one more fread */
        rewind(fp);
    }
    for (;;) {
        if (len == cap) {
            size_t ncap = cap < (1u << 16) ? (1u << 16) : cap + cap / 2;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) { st = drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, ncap); break; }
            buf = nb;
            cap = ncap;
        }
        if (!buf) {
            buf = malloc(cap);
            if (!buf) { st = drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, cap); break; }
        }
        size_t r = fread(buf + len, 1, cap - len, fp);
        len += r;
        if (r == 0) {
            if (ferror(fp)) st = drdc_fail(DRDC_ERR_IO, "%s: read error: %s", path, strerror(errno));
            break;
        }
    }
    fclose(fp);
    if (!st) st = drdc_pth_parse(out, buf, len, path);
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

drdc_status drdc_pth_to_safetensors(const char *in_path, const char *out_path, int *n_tensors, int *n_skipped) {
    drdc_pth_file *f = NULL;
    drdc_status st = drdc_pth_load(&f, in_path);
    if (st) return st;
    if (n_tensors) *n_tensors = f->count;
    if (n_skipped) *n_skipped = f->skipped;
    if (f->count == 0) {
        st = drdc_fail(DRDC_ERR_FORMAT, "%s: no tensors to convert (%d non-tensor values skipped)", in_path, f->skipped);
        drdc_pth_free(f);
        return st;
    }
    drdc_st_writer *w = NULL;
    st = drdc_st_writer_new(&w);
    const char *base = strrchr(in_path, '/');
    base = base ? base + 1 : in_path;
    if (!st) st = drdc_st_writer_set_meta(w, "format", "pt");
    if (!st) st = drdc_st_writer_set_meta(w, "converted_from", base);
    if (!st) st = drdc_st_writer_set_meta(w, "pth_format", f->format == DRDC_PTH_LEGACY ? "legacy" : "zip");
    for (int i = 0; !st && i < f->count; i++) {
        const drdc_pth_tensor *t = &f->tensors[i];
        st = drdc_st_writer_add_borrowed(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes);
    }
    if (!st) st = drdc_st_writer_write(w, out_path);
    if (st) drdc_error_context(st, "converting %s to %s", in_path, out_path);
    drdc_st_writer_free(w);
    drdc_pth_free(f);
    return st;
}
