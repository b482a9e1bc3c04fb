/* params.c: the named tensor store behind every model (see params.h). */
#include "drdc/formats/params.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

drdc_status drdc_params_add(drdc_params *p, const char *name, dt_tensor t, int trainable) {
    if (!t) return drdc_fail(DRDC_ERR_STATE, "parameter %s: no tensor", name);
    if (drdc_params_get(p, name)) {
        dt_free(t);
        return drdc_fail(DRDC_ERR_STATE, "parameter %s added twice", name);
    }
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 64;
        char **names = realloc(p->names, sizeof *names * cap);
        if (names) p->names = names;
        dt_tensor *ts = names ? realloc(p->tensors, sizeof *ts * cap) : NULL;
        if (ts) p->tensors = ts;
        unsigned char *tr = ts ? realloc(p->trainable, (size_t)cap) : NULL;
        if (tr) p->trainable = tr;
        if (!names || !ts || !tr) {
            dt_free(t);
            return drdc_fail(DRDC_ERR_NOMEM, "parameter %s: out of memory", name);
        }
        p->cap = cap;
    }
    size_t len = strlen(name) + 1;
    char *copy = malloc(len);
    if (!copy) {
        dt_free(t);
        return drdc_fail(DRDC_ERR_NOMEM, "parameter %s: out of memory", name);
    }
    memcpy(copy, name, len);
    if (trainable) {
        drdc_status st = dt_set_requires_grad(t, 1);
        if (st) {
            free(copy);
            dt_free(t);
            return drdc_error_context(st, "parameter %s", name);
        }
    }
    p->names[p->n] = copy;
    p->tensors[p->n] = t;
    p->trainable[p->n] = (unsigned char)(trainable != 0);
    p->n++;
    return DRDC_OK;
}

/* Adds a freshly made tensor, or passes its creation error on with the parameter's name. */
static drdc_status add_made(drdc_params *p, const char *name, drdc_status st, dt_tensor t, int trainable) {
    if (st) return drdc_error_context(st, "creating parameter %s", name);
    return drdc_params_add(p, name, t, trainable);
}

drdc_status drdc_params_add_uniform(drdc_params *p, const char *name, const int64_t *shape, int ndim,
                                    double bound, dt_device dev, dt_generator g, int trainable) {
    dt_tensor u = NULL, scaled = NULL, t = NULL;
    drdc_status st = DRDC_OK;
    TRY(dt_rand(&u, shape, ndim, DT_F32, dev, g));   /* U[0, 1) */
    TRY(dt_mul_scalar(&scaled, u, 2.0 * bound));    /* U[0, 2b) */
    TRY(dt_add_scalar(&t, scaled, -bound));         /* U[-b, b) */
done:
    dt_free(u);
    dt_free(scaled);
    return add_made(p, name, st, t, trainable);
}

drdc_status drdc_params_add_full(drdc_params *p, const char *name, const int64_t *shape, int ndim,
                                 double value, dt_device dev, int trainable) {
    dt_tensor t = NULL;
    drdc_status st = dt_full(&t, shape, ndim, value, DT_F32, dev);
    return add_made(p, name, st, t, trainable);
}

drdc_status drdc_params_add_normal(drdc_params *p, const char *name, const int64_t *shape, int ndim,
                                   double std, dt_device dev, dt_generator g, int trainable) {
    dt_tensor n = NULL, t = NULL;
    drdc_status st = DRDC_OK;
    TRY(dt_randn(&n, shape, ndim, DT_F32, dev, g));
    TRY(dt_mul_scalar(&t, n, std));
done:
    dt_free(n);
    return add_made(p, name, st, t, trainable);
}

dt_tensor drdc_params_get(const drdc_params *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->names[i], name) == 0) return p->tensors[i];
    return NULL;
}

drdc_status drdc_params_getf(dt_tensor *out, const drdc_params *p, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    *out = drdc_params_get(p, name);
    return *out ? DRDC_OK : drdc_fail(DRDC_ERR_STATE, "no parameter %s", name);
}

static void shape_text(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++) n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

/* Copies the file's tensor t (shape[nd], checked) into the parameter tensor dst, through buf. */
static drdc_status copy_in(dt_tensor dst, const drdc_st_tensor *t, float *buf, const int64_t *shape, int nd) {
    dt_tensor host = NULL;
    drdc_status st = DRDC_OK;
    TRY(drdc_st_to_f32(t, buf, (size_t)t->numel));
    for (int64_t i = 0; i < t->numel; i++)   /* a weight that is not a number poisons every score */
        if (!isfinite(buf[i])) {
            st = drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%s' holds %g at index %lld: the file is corrupt or its "
                           "training diverged; it cannot score images", t->file, t->name, (double)buf[i], (long long)i);
            goto done;
        }
    TRY(dt_from_host(&host, buf, DT_F32, shape, nd, (dt_device){DT_CPU, 0}));
    int prev = dt_set_grad_enabled(0);
    st = dt_copy_(dst, host);
    dt_set_grad_enabled(prev);
done:
    dt_free(host);
    return st;
}

drdc_status drdc_params_load(drdc_params *p, const drdc_st_file *f, const char *prefix, int strict) {
    char full[1024];
    size_t plen = strlen(prefix);
    drdc_status st = DRDC_OK;
    for (int i = 0; i < p->n; i++) {
        snprintf(full, sizeof full, "%s%s", prefix, p->names[i]);
        const drdc_st_tensor *t = drdc_st_find(f, full);
        if (!t) return drdc_fail(DRDC_ERR_FORMAT, "%s: missing tensor '%s'", drdc_st_source(f), full);
        int64_t shape[8];
        int nd = dt_ndim(p->tensors[i]);
        TRY(dt_shape(shape, 8, p->tensors[i]));
        int same = nd == t->ndim;
        for (int d = 0; same && d < nd; d++) same = shape[d] == t->shape[d];
        if (!same) {
            char want[128], got[128];
            shape_text(want, sizeof want, shape, nd);
            shape_text(got, sizeof got, t->shape, t->ndim);
            return drdc_fail(DRDC_ERR_FORMAT, "%s: tensor '%s' has shape %s, the model needs %s", drdc_st_source(f),
                             full, got, want);
        }
        float *buf = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
        if (!buf) return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory loading '%s'", drdc_st_source(f), full);
        st = copy_in(p->tensors[i], t, buf, shape, nd);
        free(buf);
        if (st) return drdc_error_context(st, "%s: loading '%s'", drdc_st_source(f), full);
    }
    if (strict) {
        for (int i = 0; i < drdc_st_count(f); i++) {
            const char *name = drdc_st_at(f, i)->name;
            if (strncmp(name, prefix, plen) != 0) continue;
            if (!drdc_params_get(p, name + plen))
                return drdc_fail(DRDC_ERR_FORMAT, "%s: unexpected tensor '%s' (not part of this model)",
                                 drdc_st_source(f), name);
        }
    }
done:
    return st;
}

/* Adds parameter i to w as float32 under `full`, refusing NaN and infinity. */
static drdc_status save_one(const drdc_params *p, int i, drdc_st_writer *w, const char *full) {
    dt_tensor t = p->tensors[i], f32 = NULL;
    float *buf = NULL;
    int64_t shape[8];
    int nd = dt_ndim(t);
    size_t nbytes = sizeof(float) * (size_t)dt_numel(t);
    drdc_status st = DRDC_OK;
    TRY(dt_shape(shape, 8, t));
    TRY(dt_to_dtype(&f32, t, DT_F32));
    buf = malloc(nbytes ? nbytes : 1);
    if (!buf) {
        st = drdc_fail(DRDC_ERR_NOMEM, "out of memory saving %s", p->names[i]);
        goto done;
    }
    TRY(dt_copy_to_host(f32, buf, nbytes));
    for (size_t k = 0; k < nbytes / sizeof(float); k++) {
        if (!isfinite(buf[k])) {
            st = drdc_fail(DRDC_ERR_NUMERIC, "it holds %g at index %zu: the training diverged (lower the "
                           "learning rate); nothing is written, the file on disk is kept", buf[k], k);
            goto done;
        }
    }
    TRY(drdc_st_writer_add(w, full, DRDC_ST_F32, nd, shape, buf, nbytes));
done:
    free(buf);
    dt_free(f32);
    return st;
}

drdc_status drdc_params_save(const drdc_params *p, drdc_st_writer *w, const char *prefix) {
    char full[1024];
    for (int i = 0; i < p->n; i++) {
        snprintf(full, sizeof full, "%s%s", prefix, p->names[i]);
        drdc_status st = save_one(p, i, w, full);
        if (st) return drdc_error_context(st, "saving parameter %s", full);
    }
    return DRDC_OK;
}

drdc_status drdc_params_trainable(const drdc_params *p, dt_tensor *out, int cap, int *n) {
    *n = 0;
    for (int i = 0; i < p->n; i++) {
        if (!p->trainable[i]) continue;
        if (*n >= cap) return drdc_fail(DRDC_ERR_STATE, "more than %d trainable parameters", cap);
        out[(*n)++] = p->tensors[i];
    }
    return DRDC_OK;
}

int drdc_params_count_trainable(const drdc_params *p) {
    int n = 0;
    for (int i = 0; i < p->n; i++) n += p->trainable[i];
    return n;
}

int64_t drdc_params_numel(const drdc_params *p, int trainable_only) {
    int64_t n = 0;
    for (int i = 0; i < p->n; i++)
        if (!trainable_only || p->trainable[i]) n += dt_numel(p->tensors[i]);
    return n;
}

void drdc_params_free(drdc_params *p) {
    for (int i = 0; i < p->n; i++) {
        free(p->names[i]);
        dt_free(p->tensors[i]);
    }
    free(p->names);
    free(p->tensors);
    free(p->trainable);
    memset(p, 0, sizeof *p);
}
