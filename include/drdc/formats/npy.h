/* npy.h: read and write NumPy .npy arrays (format versions 1.0, 2.0 and 3.0).
 *
 * Used for heatmaps made by other tools (`drdc eval --maps DIR` reads
 * DIR/<category>/<defect>/<name>.npy, float32 H x W) and for the metric tests' Python twins.
 * Supported: little-endian '<f4', '<f8', '<i8' and '|u1' (also spelt '<u1'), C order, rank 0..8.
 * Anything else is an error that names the file: bad magic, unsupported version, truncated
 * header, malformed header dict, unsupported dtype (big-endian included), fortran_order True,
 * rank over 8, a data size that does not match the shape (truncated or trailing bytes).
 * Writes are atomic: a temporary file in the same folder, fsync, rename. */
#ifndef DRDC_NPY_H
#define DRDC_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "drdc/core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DRDC_NPY_MAX_RANK 8

typedef enum drdc_npy_dtype {
    DRDC_NPY_F32 = 0, /* '<f4' */
    DRDC_NPY_F64 = 1, /* '<f8' */
    DRDC_NPY_U8 = 2,  /* '|u1' */
    DRDC_NPY_I64 = 3, /* '<i8' */
} drdc_npy_dtype;

/* One array in host memory, C order. */
typedef struct drdc_npy {
    drdc_npy_dtype dtype;
    int rank;                          /* 0 (a scalar) .. DRDC_NPY_MAX_RANK */
    int64_t shape[DRDC_NPY_MAX_RANK];  /* shape[0..rank) */
    size_t numel;                      /* product of the shape (1 for rank 0) */
    void *data;                        /* numel * drdc_npy_dtype_size(dtype) bytes, owned */
} drdc_npy;

/* Bytes per element of a dtype (4, 8, 1, 8). */
size_t drdc_npy_dtype_size(drdc_npy_dtype dtype);
/* The descr string numpy writes for a dtype ("<f4", "<f8", "|u1", "<i8"). */
const char *drdc_npy_dtype_descr(drdc_npy_dtype dtype);

/* Reads path into *out (zeroed first; free with drdc_npy_free, also after a failure). */
drdc_status drdc_npy_read(const char *path, drdc_npy *out);

/* Reads a 2-D map as float32: shape (H, W), or (1, H, W); dtype '<f4' or '<f8' (converted).
 * *data is malloc'ed (caller frees); *height, *width receive the size. */
drdc_status drdc_npy_read_map(const char *path, float **data, int *height, int *width);

/* Writes an array (rank 0..8, shape entries >= 0) atomically to path; numel = product of the
 * shape elements of `dtype` are read from data (may be NULL when numel is 0). */
drdc_status drdc_npy_write(const char *path, drdc_npy_dtype dtype, int rank,
                           const int64_t *shape, const void *data);

/* Frees a's data and zeroes it; NULL is a no-op. */
void drdc_npy_free(drdc_npy *a);

#ifdef __cplusplus
}
#endif
#endif
