/* pickle.h: the small pickle virtual machine behind the .pth reader (pth.c).
 *
 * It runs the pickles torch.save writes and nothing else: protocol 2-5 basics, and as callables
 * only collections.OrderedDict, torch._utils._rebuild_tensor(_v2), torch._utils._rebuild_parameter
 * (_with_state) and the torch.<Type>Storage types (pth.h lists them). Calling any other global is
 * an error naming it; nothing from the input is ever executed. A persistent id ('storage', type,
 * key, location, numel[, view]) registers a storage in the VM's table; the container reader
 * (zip or legacy, in pth.c) then finds each storage's bytes.
 *
 * Values live in one arena list per VM, so memo sharing and cycles never double-free; strings,
 * bytes and big ints point into the input buffer, which must outlive the VM. Limits:
 * DRDC_PTH_MAX_STACK values, DRDC_PTH_MAX_MARKS open MARKs, memo indices below
 * min(DRDC_PTH_MAX_MEMO, pickle length) (pth.h). Errors are DRDC_ERR_FORMAT with
 * "<src>: <what>, offset N: ..." (N counted from the start of the buffer), or DRDC_ERR_NOMEM. */
#ifndef DRDC_PICKLE_H
#define DRDC_PICKLE_H

#include <stddef.h>
#include <stdint.h>

#include "drdc/core/error.h"
#include "drdc/core/strmap.h"
#include "drdc/formats/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum drdc_pk_kind {
    DRDC_PK_NONE, DRDC_PK_BOOL, DRDC_PK_INT, DRDC_PK_BIGINT, DRDC_PK_FLOAT, DRDC_PK_STR, DRDC_PK_BYTES,
    DRDC_PK_TUPLE, DRDC_PK_LIST, DRDC_PK_DICT, DRDC_PK_GLOBAL, DRDC_PK_STORAGE, DRDC_PK_TENSOR,
} drdc_pk_kind;

/* One value. The union member in use follows kind. */
typedef struct drdc_pk_value drdc_pk_value;
struct drdc_pk_value {
    int kind;                 /* drdc_pk_kind */
    drdc_pk_value *next;      /* arena list (NULL for the static None/True/False) */
    union {
        int b;
        int64_t i;
        double f;
        struct { const char *p; size_t n; } s;                     /* str, bytes, big int (LE two's complement) */
        struct { drdc_pk_value **items; size_t n, cap; } seq;      /* tuple, list */
        struct { drdc_pk_value **keys, **vals; size_t n, cap; } d; /* dict, in insertion order */
        struct { int gk; drdc_st_dtype dtype; char *name; } g;     /* global: which one, "module.name" */
        struct { size_t store; int64_t offset, numel; } st;        /* storage (view): index into stores */
        struct {
            drdc_pk_value *storage;
            int64_t offset;
            int ndim;
            int64_t shape[DRDC_ST_MAX_RANK], stride[DRDC_ST_MAX_RANK];
        } t;                                                       /* tensor (a view of a storage) */
    } u;
};

/* A storage the pickle referenced. The container reader fills data/have_data. */
typedef struct drdc_pk_storage {
    const char *key;          /* borrowed from the input */
    size_t keylen;
    drdc_st_dtype dtype;
    int64_t numel;            /* elements of the whole storage */
    const uint8_t *data;      /* numel * element size bytes, once found */
    int have_data;
} drdc_pk_storage;

typedef struct drdc_pk_vm {
    const char *src;          /* names the input in messages */
    const uint8_t *buf;       /* the input; pickles are runs of it */
    drdc_pk_value *arena;
    /* the pickle being run */
    const char *what;         /* "data.pkl", "pickle 4 (the saved object)" ... */
    size_t pos;               /* offset of the opcode being run, for messages */
    drdc_pk_value **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nmarks, mcap;
    drdc_pk_value **memo;
    size_t memocap, memolen;
    /* storages, over every pickle run */
    drdc_pk_storage *stores;
    size_t nstores, storecap;
    drdc_strmap storemap;     /* key -> index into stores */
} drdc_pk_vm;

/* A VM over buf (which must outlive it and every value). */
void drdc_pk_init(drdc_pk_vm *vm, const uint8_t *buf, const char *src);

/* Runs one pickle over buf[start, end). On success *result is the value at STOP and *stop_end
 * the offset just after the STOP opcode. Values and storages of earlier runs stay valid. */
drdc_status drdc_pk_run(drdc_pk_vm *vm, size_t start, size_t end, const char *what, drdc_pk_value **result,
                        size_t *stop_end);

/* Frees every value and the tables; leaves the VM zeroed. */
void drdc_pk_free(drdc_pk_vm *vm);

/* "dict", "tensor", ... for messages. */
const char *drdc_pk_kind_name(int kind);

#ifdef __cplusplus
}
#endif
#endif
