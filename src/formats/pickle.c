/* pickle.c: the restricted pickle VM behind the .pth reader (see pickle.h): values in a per-VM
 * arena, the stack, MARKs and memo, the known torch globals and the persistent-id / storage
 * table. Every error names the source, the pickle and the opcode's offset. */
#include "drdc/formats/pickle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drdc/formats/bytes.h"
#include "drdc/formats/pth.h"

typedef drdc_pk_value pv;   /* a short name inside this file */

enum { G_UNKNOWN, G_ORDEREDDICT, G_REBUILD_TENSOR, G_REBUILD_TENSOR_V2, G_REBUILD_PARAMETER,
       G_REBUILD_PARAMETER_WITH_STATE, G_STORAGE_TYPE };

static pv g_none = {DRDC_PK_NONE, NULL, {0}};
static pv g_true = {DRDC_PK_BOOL, NULL, {.b = 1}};
static pv g_false = {DRDC_PK_BOOL, NULL, {.b = 0}};

/* ---- errors ---------------------------------------------------------------------------------- */

static drdc_status nomem(const drdc_pk_vm *c, const char *what) {
    return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory (%s)", c->src, what);
}

/* Error at the opcode being run. */
#define PERR(c, ...) pk_err((c), __VA_ARGS__)
static drdc_status pk_err(const drdc_pk_vm *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static drdc_status pk_err(const drdc_pk_vm *c, const char *fmt, ...) {
    char msg[1280];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return drdc_fail(DRDC_ERR_FORMAT, "%s: %s, offset %zu: %s", c->src, c->what, c->pos, msg);
}

/* ---- values ---------------------------------------------------------------------------------- */

static pv *pv_new(drdc_pk_vm *c, int kind) {
    pv *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->kind = kind;
    v->next = c->arena;
    c->arena = v;
    return v;
}

static void pv_free_all(drdc_pk_vm *c) {
    pv *v = c->arena;
    while (v) {
        pv *n = v->next;
        switch (v->kind) {
        case DRDC_PK_TUPLE: case DRDC_PK_LIST: free(v->u.seq.items); break;
        case DRDC_PK_DICT: free(v->u.d.keys); free(v->u.d.vals); break;
        case DRDC_PK_GLOBAL: free(v->u.g.name); break;
        default: break;
        }
        free(v);
        v = n;
    }
    c->arena = NULL;
}

void drdc_pk_init(drdc_pk_vm *c, const uint8_t *buf, const char *src) {
    memset(c, 0, sizeof *c);
    c->buf = buf;
    c->src = src;
}

void drdc_pk_free(drdc_pk_vm *c) {
    pv_free_all(c);
    free(c->stack);
    free(c->marks);
    free(c->memo);
    free(c->stores);
    drdc_strmap_free(&c->storemap);
    memset(c, 0, sizeof *c);
}

const char *drdc_pk_kind_name(int k) {
    static const char *names[] = {"None", "bool", "int", "big int", "float", "str", "bytes", "tuple",
                                  "list", "dict", "global", "storage", "tensor"};
    return (k >= 0 && k <= DRDC_PK_TENSOR) ? names[k] : "?";
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

static drdc_status push(drdc_pk_vm *c, pv *v) {
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
static size_t frame_base(const drdc_pk_vm *c) { return c->nmarks ? c->marks[c->nmarks - 1] : 0; }

static drdc_status pop(drdc_pk_vm *c, pv **out, const char *op) {
    if (c->sp <= frame_base(c)) return PERR(c, "%s on an empty stack", op);
    *out = c->stack[--c->sp];
    return DRDC_OK;
}

/* Pops to the last MARK: items are stack[*base .. sp). The caller resets sp to *base. */
static drdc_status pop_mark(drdc_pk_vm *c, size_t *base, const char *op) {
    if (!c->nmarks) return PERR(c, "%s without a MARK", op);
    *base = c->marks[--c->nmarks];
    return DRDC_OK;
}

static drdc_status make_tuple(drdc_pk_vm *c, pv **items, size_t n, pv **out) {
    pv *t = pv_new(c, DRDC_PK_TUPLE);
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

static drdc_status memo_put(drdc_pk_vm *c, uint64_t idx, pv *v, size_t pickle_len) {
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

static drdc_status memo_get(drdc_pk_vm *c, uint64_t idx, pv **out) {
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

static drdc_status make_global(drdc_pk_vm *c, const char *mod, size_t modlen, const char *name, size_t namelen, pv **out) {
    pv *g = pv_new(c, DRDC_PK_GLOBAL);
    if (!g) return nomem(c, "global");
    size_t cap = 420;  /* two drdc_shown() names of at most 203 characters, '.', NUL */
    g->u.g.name = malloc(cap);
    if (!g->u.g.name) return nomem(c, "global");
    char mb[256], nb[256];
    snprintf(g->u.g.name, cap, "%s.%s", drdc_shown(mod, modlen, mb, 204), drdc_shown(name, namelen, nb, 204));
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
    if (v->kind == DRDC_PK_INT) { *out = v->u.i; return 1; }
    if (v->kind == DRDC_PK_BOOL) { *out = v->u.b; return 1; }
    return 0;
}

/* BINPERSID: ('storage', storage_type, key, location, numel[, view_metadata]) -> storage view. */
static drdc_status persistent_load(drdc_pk_vm *c, pv *pid, pv **out) {
    if (pid->kind != DRDC_PK_TUPLE) return PERR(c, "persistent id is a %s, not a tuple", drdc_pk_kind_name(pid->kind));
    size_t n = pid->u.seq.n;
    pv **it = pid->u.seq.items;
    if (n < 1 || it[0]->kind != DRDC_PK_STR || it[0]->u.s.n != 7 || memcmp(it[0]->u.s.p, "storage", 7) != 0)
        return PERR(c, "persistent id is not a ('storage', ...) tuple");
    if (n != 5 && n != 6) return PERR(c, "storage persistent id has %zu fields, want 5 or 6", n);
    if (it[1]->kind != DRDC_PK_GLOBAL) return PERR(c, "storage type is a %s, not a global", drdc_pk_kind_name(it[1]->kind));
    if (it[1]->u.g.gk != G_STORAGE_TYPE) return PERR(c, "unsupported storage type '%s'", it[1]->u.g.name);
    if (it[2]->kind != DRDC_PK_STR) return PERR(c, "storage key is a %s, not a str", drdc_pk_kind_name(it[2]->kind));
    if (it[3]->kind != DRDC_PK_STR) return PERR(c, "storage location is a %s, not a str", drdc_pk_kind_name(it[3]->kind));
    int64_t numel;
    if (!get_int(it[4], &numel) || numel < 0) return PERR(c, "storage size is not a non-negative int");
    drdc_st_dtype dtype = it[1]->u.g.dtype;
    const char *key = it[2]->u.s.p;
    size_t keylen = it[2]->u.s.n;
    char kb[80];
    size_t idx;
    if (drdc_strmap_find(&c->storemap, key, keylen, &idx)) {
        if (c->stores[idx].dtype != dtype || c->stores[idx].numel != numel)
            return PERR(c, "storage '%s' referenced as %s[%lld] and as %s[%lld]", drdc_shown(key, keylen, kb, sizeof kb),
                        drdc_st_dtype_name(c->stores[idx].dtype), (long long)c->stores[idx].numel,
                        drdc_st_dtype_name(dtype), (long long)numel);
    } else {
        if (c->nstores == c->storecap) {
            size_t ncap = c->storecap ? c->storecap * 2 : 16;
            drdc_pk_storage *ns = realloc(c->stores, ncap * sizeof *ns);
            if (!ns) return nomem(c, "storage table");
            c->stores = ns;
            c->storecap = ncap;
        }
        idx = c->nstores++;
        c->stores[idx] = (drdc_pk_storage){key, keylen, dtype, numel, NULL, 0};
        if (drdc_strmap_put(&c->storemap, key, keylen, idx) != 0) return nomem(c, "storage table");
    }
    int64_t voff = 0, vnumel = numel;
    if (n == 6 && it[5]->kind != DRDC_PK_NONE) {
        /* legacy view_metadata: (view_key, offset, view_size) into the root storage */
        pv *vm = it[5];
        if (vm->kind != DRDC_PK_TUPLE || vm->u.seq.n != 3 || !get_int(vm->u.seq.items[1], &voff) ||
            !get_int(vm->u.seq.items[2], &vnumel))
            return PERR(c, "storage view metadata is not (key, offset, size)");
        if (voff < 0 || vnumel < 0 || voff > numel || vnumel > numel - voff)
            return PERR(c, "storage view [%lld, +%lld) outside storage '%s' of %lld elements", (long long)voff,
                        (long long)vnumel, drdc_shown(key, keylen, kb, sizeof kb), (long long)numel);
    }
    pv *s = pv_new(c, DRDC_PK_STORAGE);
    if (!s) return nomem(c, "storage");
    s->u.st.store = idx;
    s->u.st.offset = voff;
    s->u.st.numel = vnumel;
    *out = s;
    return DRDC_OK;
}

static drdc_status int_tuple(drdc_pk_vm *c, const pv *v, const char *what, int64_t *vals, int *n) {
    if (v->kind != DRDC_PK_TUPLE && v->kind != DRDC_PK_LIST) return PERR(c, "tensor %s is a %s, not a tuple", what, drdc_pk_kind_name(v->kind));
    if (v->u.seq.n > DRDC_ST_MAX_RANK) return PERR(c, "tensor %s has rank %zu, above %d", what, v->u.seq.n, DRDC_ST_MAX_RANK);
    for (size_t i = 0; i < v->u.seq.n; i++) {
        if (!get_int(v->u.seq.items[i], &vals[i])) return PERR(c, "tensor %s[%zu] is not an int", what, i);
        if (vals[i] < 0) return PERR(c, "tensor %s[%zu] = %lld is negative", what, i, (long long)vals[i]);
    }
    *n = (int)v->u.seq.n;
    return DRDC_OK;
}

/* REDUCE / NEWOBJ: calls one of the known globals. */
static drdc_status call_global(drdc_pk_vm *c, pv *fn, pv *args, pv **out) {
    drdc_status st = DRDC_OK;
    if (fn->kind != DRDC_PK_GLOBAL) return PERR(c, "calling a %s", drdc_pk_kind_name(fn->kind));
    if (args->kind != DRDC_PK_TUPLE) return PERR(c, "arguments of '%s' are a %s, not a tuple", fn->u.g.name, drdc_pk_kind_name(args->kind));
    size_t n = args->u.seq.n;
    pv **a = args->u.seq.items;
    switch (fn->u.g.gk) {
    case G_ORDEREDDICT:
        if (n != 0) return PERR(c, "collections.OrderedDict called with %zu arguments (only () is supported)", n);
        *out = pv_new(c, DRDC_PK_DICT);
        return *out ? DRDC_OK : nomem(c, "dict");
    case G_REBUILD_TENSOR:
    case G_REBUILD_TENSOR_V2: {
        int v2 = fn->u.g.gk == G_REBUILD_TENSOR_V2;
        if (v2 ? (n != 6 && n != 7) : n != 4)
            return PERR(c, "%s called with %zu arguments", fn->u.g.name, n);
        if (a[0]->kind != DRDC_PK_STORAGE) return PERR(c, "%s: storage argument is a %s", fn->u.g.name, drdc_pk_kind_name(a[0]->kind));
        pv *t = pv_new(c, DRDC_PK_TENSOR);
        if (!t) return nomem(c, "tensor");
        t->u.t.storage = a[0];
        if (!get_int(a[1], &t->u.t.offset) || t->u.t.offset < 0)
            return PERR(c, "%s: storage offset is not a non-negative int", fn->u.g.name);
        int nd_size, nd_stride;
        TRY(int_tuple(c, a[2], "size", t->u.t.shape, &nd_size));
        TRY(int_tuple(c, a[3], "stride", t->u.t.stride, &nd_stride));
        if (nd_size != nd_stride) return PERR(c, "tensor size has rank %d but stride rank %d", nd_size, nd_stride);
        t->u.t.ndim = nd_size;
        *out = t;
        return DRDC_OK;
    }
    case G_REBUILD_PARAMETER:
    case G_REBUILD_PARAMETER_WITH_STATE:
        if (n != (fn->u.g.gk == G_REBUILD_PARAMETER ? 3u : 4u)) return PERR(c, "%s called with %zu arguments", fn->u.g.name, n);
        if (a[0]->kind != DRDC_PK_TENSOR) return PERR(c, "%s: data is a %s, not a tensor", fn->u.g.name, drdc_pk_kind_name(a[0]->kind));
        *out = a[0];
        return DRDC_OK;
    case G_STORAGE_TYPE:
        return PERR(c, "calling storage type '%s' is not supported", fn->u.g.name);
    default:
        return PERR(c, "unsupported global '%s' (only tensors, dicts and plain values can be read)", fn->u.g.name);
    }
done:
    return st;
}

/* Runs one pickle (see pickle.h). */
drdc_status drdc_pk_run(drdc_pk_vm *c, size_t start, size_t end, const char *what, pv **result, size_t *stop_end) {
    const uint8_t *b = c->buf;
    size_t p = start, plen = end - start;
    drdc_status st = DRDC_OK;
    c->what = what;
    c->sp = 0;
    c->nmarks = 0;
    c->memolen = 0;
    if (c->memo) memset(c->memo, 0, c->memocap * sizeof *c->memo);
#define NEED(k) do { if ((size_t)(k) > end - p) return PERR(c, "truncated: opcode 0x%02x needs %zu more bytes", op, (size_t)(k)); } while (0)
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
        case '}': TRY(push(c, pv_new(c, DRDC_PK_DICT))); break;
        case ']': TRY(push(c, pv_new(c, DRDC_PK_LIST))); break;
        case ')': TRY(push(c, pv_new(c, DRDC_PK_TUPLE))); break;
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
            TRY(pop_mark(c, &base, "TUPLE"));
            TRY(make_tuple(c, c->sp > base ? c->stack + base : NULL, c->sp - base, &v));
            c->sp = base;
            TRY(push(c, v));
            break;
        case 0x85: case 0x86: case 0x87: { /* TUPLE1..3 */
            size_t n = (size_t)(op - 0x84);
            if (c->sp - frame_base(c) < n) return PERR(c, "TUPLE%zu with %zu values on the stack", n, c->sp - frame_base(c));
            TRY(make_tuple(c, c->stack + c->sp - n, n, &v));
            c->sp -= n;
            TRY(push(c, v));
            break;
        }
        case 'J': NEED(4); v = pv_new(c, DRDC_PK_INT); if (v) v->u.i = (int32_t)drdc_rd32(b + p); p += 4; TRY(push(c, v)); break;
        case 'K': NEED(1); v = pv_new(c, DRDC_PK_INT); if (v) v->u.i = b[p]; p += 1; TRY(push(c, v)); break;
        case 'M': NEED(2); v = pv_new(c, DRDC_PK_INT); if (v) v->u.i = drdc_rd16(b + p); p += 2; TRY(push(c, v)); break;
        case 0x8a: case 0x8b: { /* LONG1, LONG4: little-endian two's complement */
            size_t n;
            if (op == 0x8a) { NEED(1); n = b[p]; p += 1; }
            else { NEED(4); n = drdc_rd32(b + p); p += 4; if ((int32_t)n < 0) return PERR(c, "LONG4 with negative length"); }
            NEED(n);
            if (n <= 8) {
                uint64_t u = 0;
                for (size_t i = 0; i < n; i++) u |= (uint64_t)b[p + i] << (8 * i);
                if (n > 0 && n < 8 && (b[p + n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n);
                v = pv_new(c, DRDC_PK_INT);
                if (v) v->u.i = (int64_t)u;
            } else {
                v = pv_new(c, DRDC_PK_BIGINT);
                if (v) { v->u.s.p = (const char *)b + p; v->u.s.n = n; }
            }
            p += n;
            TRY(push(c, v));
            break;
        }
        case 'G': { /* BINFLOAT: big-endian double */
            NEED(8);
            uint64_t u = 0;
            for (int i = 0; i < 8; i++) u = (u << 8) | b[p + i];
            p += 8;
            v = pv_new(c, DRDC_PK_FLOAT);
            if (v) memcpy(&v->u.f, &u, sizeof u);
            TRY(push(c, v));
            break;
        }
        case 'X': case 0x8c: case 0x8d: case 'T': case 'U': case 'B': case 'C': case 0x8e: {
            /* BINUNICODE(4) SHORT_BINUNICODE(1) BINUNICODE8(8) BINSTRING(4) SHORT_BINSTRING(1)
               BINBYTES(4) SHORT_BINBYTES(1) BINBYTES8(8) */
            size_t lb = (op == 0x8c || op == 'U' || op == 'C') ? 1 : (op == 0x8d || op == 0x8e) ? 8 : 4;
            NEED(lb);
            uint64_t n = lb == 1 ? b[p] : lb == 4 ? drdc_rd32(b + p) : drdc_rd64(b + p);
            if (op == 'T' && (int32_t)n < 0) return PERR(c, "BINSTRING with negative length");
            p += lb;
            if (n > end - p) return PERR(c, "truncated: string of %llu bytes, %zu left", (unsigned long long)n, end - p);
            v = pv_new(c, (op == 'B' || op == 'C' || op == 0x8e) ? DRDC_PK_BYTES : DRDC_PK_STR);
            if (v) { v->u.s.p = (const char *)b + p; v->u.s.n = (size_t)n; }
            p += (size_t)n;
            TRY(push(c, v));
            break;
        }
        case 0x88: TRY(push(c, &g_true)); break;
        case 0x89: TRY(push(c, &g_false)); break;
        case 'N': TRY(push(c, &g_none)); break;
        case 'q': case 'r': case 0x94: { /* BINPUT, LONG_BINPUT, MEMOIZE */
            uint64_t idx;
            if (op == 'q') { NEED(1); idx = b[p]; p += 1; }
            else if (op == 'r') { NEED(4); idx = drdc_rd32(b + p); p += 4; }
            else idx = c->memolen;
            if (c->sp <= frame_base(c)) return PERR(c, "memo store on an empty stack");
            TRY(memo_put(c, idx, c->stack[c->sp - 1], plen));
            break;
        }
        case 'h': case 'j': { /* BINGET, LONG_BINGET */
            uint64_t idx;
            if (op == 'h') { NEED(1); idx = b[p]; p += 1; }
            else { NEED(4); idx = drdc_rd32(b + p); p += 4; }
            TRY(memo_get(c, idx, &v));
            TRY(push(c, v));
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
            TRY(make_global(c, (const char *)b + p, modlen, (const char *)b + q, namelen, &v));
            p = q + namelen + 1;
            TRY(push(c, v));
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            TRY(pop(c, &k, "STACK_GLOBAL"));
            TRY(pop(c, &a, "STACK_GLOBAL"));
            if (a->kind != DRDC_PK_STR || k->kind != DRDC_PK_STR) return PERR(c, "STACK_GLOBAL of non-strings");
            TRY(make_global(c, a->u.s.p, a->u.s.n, k->u.s.p, k->u.s.n, &v));
            TRY(push(c, v));
            break;
        case 'R': /* REDUCE */
        case 0x81: /* NEWOBJ */
            TRY(pop(c, &a, op == 'R' ? "REDUCE" : "NEWOBJ"));
            TRY(pop(c, &k, op == 'R' ? "REDUCE" : "NEWOBJ"));
            TRY(call_global(c, k, a, &v));
            TRY(push(c, v));
            break;
        case 'b': /* BUILD: object state (e.g. an OrderedDict's _metadata) is not needed */
            TRY(pop(c, &a, "BUILD"));
            if (c->sp <= frame_base(c)) return PERR(c, "BUILD on an empty stack");
            break;
        case 's': /* SETITEM */
            TRY(pop(c, &v, "SETITEM"));
            TRY(pop(c, &k, "SETITEM"));
            if (c->sp <= frame_base(c)) return PERR(c, "SETITEM on an empty stack");
            a = c->stack[c->sp - 1];
            if (a->kind != DRDC_PK_DICT) return PERR(c, "SETITEM on a %s", drdc_pk_kind_name(a->kind));
            if (dict_push(a, k, v)) return nomem(c, "dict");
            break;
        case 'u': { /* SETITEMS */
            TRY(pop_mark(c, &base, "SETITEMS"));
            if (base == 0 || base <= frame_base(c)) return PERR(c, "SETITEMS without a dict below the MARK");
            a = c->stack[base - 1];
            if (a->kind != DRDC_PK_DICT) return PERR(c, "SETITEMS on a %s", drdc_pk_kind_name(a->kind));
            if ((c->sp - base) % 2) return PERR(c, "SETITEMS with an odd number of values");
            for (size_t i = base; i < c->sp; i += 2)
                if (dict_push(a, c->stack[i], c->stack[i + 1])) return nomem(c, "dict");
            c->sp = base;
            break;
        }
        case 'a': /* APPEND */
            TRY(pop(c, &v, "APPEND"));
            if (c->sp <= frame_base(c)) return PERR(c, "APPEND on an empty stack");
            a = c->stack[c->sp - 1];
            if (a->kind != DRDC_PK_LIST) return PERR(c, "APPEND to a %s", drdc_pk_kind_name(a->kind));
            if (seq_push(a, v)) return nomem(c, "list");
            break;
        case 'e': /* APPENDS */
            TRY(pop_mark(c, &base, "APPENDS"));
            if (base == 0 || base <= frame_base(c)) return PERR(c, "APPENDS without a list below the MARK");
            a = c->stack[base - 1];
            if (a->kind != DRDC_PK_LIST) return PERR(c, "APPENDS to a %s", drdc_pk_kind_name(a->kind));
            for (size_t i = base; i < c->sp; i++)
                if (seq_push(a, c->stack[i])) return nomem(c, "list");
            c->sp = base;
            break;
        case 'Q': /* BINPERSID */
            TRY(pop(c, &a, "BINPERSID"));
            TRY(persistent_load(c, a, &v));
            TRY(push(c, v));
            break;
        case '0': /* POP */
            TRY(pop(c, &a, "POP"));
            break;
        case '1': /* POP_MARK */
            TRY(pop_mark(c, &base, "POP_MARK"));
            c->sp = base;
            break;
        case '2': /* DUP */
            if (c->sp <= frame_base(c)) return PERR(c, "DUP on an empty stack");
            TRY(push(c, c->stack[c->sp - 1]));
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
done:
    return st;
#undef NEED
}

