/* params.h: a named store of model tensors, keyed by PyTorch state-dict names
 * ("_blocks.3._depthwise_conv.weight", "encoder.layers.0.linear1.weight"), so weights load from
 * safetensors without renaming tables (stable-diffusion.cpp's habit).
 *
 * The store OWNS its tensors: drdc_params_add takes ownership of the handle it is given (also
 * when it fails, in which case the handle is freed). Lookups return borrowed handles, valid
 * until drdc_params_free. Model code builds every parameter with its initial value, then
 * drdc_params_load copies values from a file over them, checking names and shapes. */
#ifndef DRDC_PARAMS_H
#define DRDC_PARAMS_H

#include "drdc/core/error.h"
#include "drdc/formats/safetensors.h"
#include "drdc/shim/shim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct drdc_params {
    int n, cap;
    char **names;          /* (n) owned */
    dt_tensor *tensors;    /* (n) owned */
    unsigned char *trainable; /* (n) 1: optimised (requires grad); 0: frozen weight or buffer */
} drdc_params;

/* Adds `t` under `name` (taking ownership). trainable = 1 also sets requires_grad. A duplicate
 * name is DRDC_ERR_STATE. */
drdc_status drdc_params_add(drdc_params *p, const char *name, dt_tensor t, int trainable);

/* Adds a float32 parameter of the given shape on dev, uniform in [-bound, bound] from g
 * (PyTorch's default Linear/Conv init is bound = 1/sqrt(fan_in) for weight and bias). */
drdc_status drdc_params_add_uniform(drdc_params *p, const char *name, const int64_t *shape, int ndim,
                                    double bound, dt_device dev, dt_generator g, int trainable);
/* Adds a float32 tensor filled with `value` (LayerNorm/GroupNorm weight 1, biases 0). */
drdc_status drdc_params_add_full(drdc_params *p, const char *name, const int64_t *shape, int ndim,
                                 double value, dt_device dev, int trainable);
/* Adds a float32 tensor drawn from N(0, std^2) (embeddings). */
drdc_status drdc_params_add_normal(drdc_params *p, const char *name, const int64_t *shape, int ndim,
                                   double std, dt_device dev, dt_generator g, int trainable);

/* The tensor called name, or NULL. */
dt_tensor drdc_params_get(const drdc_params *p, const char *name);
/* printf-style name; a missing tensor is DRDC_ERR_STATE naming it. */
drdc_status drdc_params_getf(dt_tensor *out, const drdc_params *p, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Copies values from f into every tensor whose name is `prefix` + its name in the store
 * (prefix may be ""). Each must exist in f with the same shape (dtype converted to float32 if
 * needed): a missing or misshapen tensor is DRDC_ERR_FORMAT naming the file, the tensor, and
 * both shapes. With strict, a tensor of f under prefix that the store lacks is an error too. */
drdc_status drdc_params_load(drdc_params *p, const drdc_st_file *f, const char *prefix, int strict);

/* Adds every tensor (float32, on the host) to w as prefix + name. The bytes are copied. */
drdc_status drdc_params_save(const drdc_params *p, drdc_st_writer *w, const char *prefix);

/* The trainable tensors, in store order, into out (cap entries); returns the count via *n. */
drdc_status drdc_params_trainable(const drdc_params *p, dt_tensor *out, int cap, int *n);
int drdc_params_count_trainable(const drdc_params *p);
/* Number of elements over all (trainable = 1: only trainable) tensors. */
int64_t drdc_params_numel(const drdc_params *p, int trainable_only);

void drdc_params_free(drdc_params *p);   /* frees every tensor; safe on a zeroed struct */

#ifdef __cplusplus
}
#endif
#endif
