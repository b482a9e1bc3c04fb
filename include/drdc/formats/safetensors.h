/* safetensors.h: reading and writing safetensors files (weights and checkpoints), in plain C.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON header
 *   {"__metadata__": {"key": "value", ...}, "name": {"dtype": "F32", "shape": [2, 3],
 *    "data_offsets": [begin, end]}, ...}
 * then the data area; offsets are relative to the start of the data area, data little-endian.
 *
 * Reading: drdc_st_open reads the whole file into memory once and checks every entry (each
 * problem has its own DRDC_ERR_FORMAT message naming the file and the tensor); tensors are then
 * borrowed views into that memory, valid until drdc_st_close. drdc_st_parse does the same for a
 * buffer already in memory (a fuzzer's entry point).
 * Writing: a drdc_st_writer collects tensors and metadata, then drdc_st_writer_write writes
 * them atomically (temporary file, fsync, rename, fsync of the folder).
 * Independent of libtorch; the header JSON is parsed with cJSON. */
#ifndef DRDC_SAFETENSORS_H
#define DRDC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "drdc/core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DRDC_ST_MAX_RANK 8                          /* highest rank a tensor may have */
#define DRDC_ST_MAX_HEADER (100u * 1024u * 1024u)   /* larger header lengths are rejected */

/* Element types, by their safetensors names. Append-only. */
typedef enum drdc_st_dtype {
    DRDC_ST_F32 = 0,   /* "F32"  float, 4 bytes */
    DRDC_ST_F16,       /* "F16"  IEEE half, 2 bytes */
    DRDC_ST_BF16,      /* "BF16" bfloat16, 2 bytes */
    DRDC_ST_F64,       /* "F64"  double, 8 bytes */
    DRDC_ST_I64,       /* "I64"  8 bytes */
    DRDC_ST_I32,       /* "I32"  4 bytes */
    DRDC_ST_I16,       /* "I16"  2 bytes */
    DRDC_ST_I8,        /* "I8"   1 byte */
    DRDC_ST_U8,        /* "U8"   1 byte */
    DRDC_ST_BOOL,      /* "BOOL" 1 byte, 0 or 1 */
    DRDC_ST_U16,       /* "U16"  2 bytes */
    DRDC_ST_U32,       /* "U32"  4 bytes */
    DRDC_ST_U64,       /* "U64"  8 bytes */
    DRDC_ST_DTYPE_COUNT
} drdc_st_dtype;

/* The safetensors name of a dtype ("F32"); "?" for an invalid value. */
const char *drdc_st_dtype_name(drdc_st_dtype dtype);
/* Bytes per element; 0 for an invalid value. */
size_t drdc_st_dtype_size(drdc_st_dtype dtype);
/* Looks a dtype up by its safetensors name; returns 0 and sets *out, or -1 if unknown. */
int drdc_st_dtype_from_name(const char *name, drdc_st_dtype *out);

/* One tensor of an open file: a read-only view, valid until drdc_st_close. */
typedef struct drdc_st_tensor {
    const char *name;                    /* tensor name as in the header */
    const char *file;                    /* the file's name, for messages */
    drdc_st_dtype dtype;                 /* element type */
    int ndim;                            /* rank, 0..DRDC_ST_MAX_RANK (0 = scalar, 1 element) */
    int64_t shape[DRDC_ST_MAX_RANK];     /* dims [ndim]; entries past ndim are 0 */
    int64_t numel;                       /* product of the dims (1 for a scalar) */
    const void *data;                    /* raw little-endian bytes; aligned only as the file is */
    size_t nbytes;                       /* numel * drdc_st_dtype_size(dtype) */
    size_t offset;                       /* begin of the bytes within the data area */
} drdc_st_tensor;

typedef struct drdc_st_file drdc_st_file;  /* opaque: an open, checked file */

/* Reads and checks the file at path. On success *out owns the file's bytes (free with
 * drdc_st_close). Errors: DRDC_ERR_IO (cannot open/read), DRDC_ERR_FORMAT (bad content),
 * DRDC_ERR_NOMEM. */
drdc_status drdc_st_open(drdc_st_file **out, const char *path);

/* Checks a safetensors image already in memory. `data` is BORROWED: it must stay valid and
 * unchanged until drdc_st_close(*out). `source_name` names it in messages (NULL: "<memory>"). */
drdc_status drdc_st_parse(drdc_st_file **out, const void *data, size_t size, const char *source_name);

/* Frees the file (and its bytes if drdc_st_open read them). NULL is ignored. */
void drdc_st_close(drdc_st_file *f);

/* The name given to open/parse. */
const char *drdc_st_source(const drdc_st_file *f);

/* Number of tensors. */
int drdc_st_count(const drdc_st_file *f);

/* The i-th tensor (0 <= i < count) in file order: the order of the header's entries (for files
 * written by drdc_st_writer also the order of the data). NULL when i is out of range. */
const drdc_st_tensor *drdc_st_at(const drdc_st_file *f, int i);

/* The tensor with this name, or NULL (no message set). */
const drdc_st_tensor *drdc_st_find(const drdc_st_file *f, const char *name);

/* Like drdc_st_find, but a missing tensor is DRDC_ERR_FORMAT "FILE: no tensor 'NAME'". */
drdc_status drdc_st_get(const drdc_st_file *f, const char *name, const drdc_st_tensor **out);

/* Looks the tensor up and checks its shape: rank `ndim` and dims `shape` (a dim of -1 matches
 * any size). A missing tensor or another shape is DRDC_ERR_FORMAT naming the file, the tensor,
 * the shape found and the shape expected. `out` may be NULL. */
drdc_status drdc_st_expect(const drdc_st_file *f, const char *name, int ndim, const int64_t *shape,
                           const drdc_st_tensor **out);

/* Metadata: the value of `key` in __metadata__, or NULL when absent. */
const char *drdc_st_meta(const drdc_st_file *f, const char *key);
/* Number of metadata entries, and the i-th (file order); returns -1 if i is out of range. */
int drdc_st_meta_count(const drdc_st_file *f);
int drdc_st_meta_at(const drdc_st_file *f, int i, const char **key, const char **value);

/* Converts a tensor of any float or integer dtype to float32 into dst, which holds `count`
 * floats; count must equal t->numel (else DRDC_ERR_INPUT naming the tensor). Handles
 * unaligned source data. */
drdc_status drdc_st_to_f32(const drdc_st_tensor *t, float *dst, size_t count);

/* Scalar conversions (round to nearest even; NaN and infinities kept). */
float drdc_st_f16_to_f32(uint16_t h);
uint16_t drdc_st_f32_to_f16(float f);
float drdc_st_bf16_to_f32(uint16_t b);
uint16_t drdc_st_f32_to_bf16(float f);

/* ---- writing ------------------------------------------------------------------------------ */

typedef struct drdc_st_writer drdc_st_writer;  /* opaque: tensors and metadata to be written */

/* A new, empty writer (free with drdc_st_writer_free). */
drdc_status drdc_st_writer_new(drdc_st_writer **out);

/* Adds a tensor; `data` holds nbytes = numel * element size bytes (checked), little-endian.
 * The bytes are COPIED: the caller may free or reuse `data` at once. Errors (DRDC_ERR_INPUT,
 * naming the tensor): empty name or "__metadata__", duplicate name, rank above
 * DRDC_ST_MAX_RANK, negative dim, unknown dtype, nbytes mismatch. */
drdc_status drdc_st_writer_add(drdc_st_writer *w, const char *name, drdc_st_dtype dtype, int ndim,
                               const int64_t *shape, const void *data, size_t nbytes);

/* As drdc_st_writer_add, but the bytes are BORROWED: `data` must stay valid and unchanged until
 * drdc_st_writer_write returns (or the writer is freed). Saves a copy of large tensors. */
drdc_status drdc_st_writer_add_borrowed(drdc_st_writer *w, const char *name, drdc_st_dtype dtype,
                                        int ndim, const int64_t *shape, const void *data, size_t nbytes);

/* Sets __metadata__[key] = value (both copied; a later call with the same key replaces it). */
drdc_status drdc_st_writer_set_meta(drdc_st_writer *w, const char *key, const char *value);

/* Writes the file: header JSON (metadata first, then tensors in the order the data is laid out)
 * padded with spaces so that the data starts at a multiple of 8; tensors ordered by element size,
 * largest first (stable), so each starts aligned to its element size without holes (as the
 * safetensors Python package lays them out). Writes `path.tmp.<pid>`, flushes and fsyncs it,
 * renames it over path and fsyncs the folder. On any error the temporary file is removed and an
 * existing file at path is untouched. The writer stays usable. */
drdc_status drdc_st_writer_write(drdc_st_writer *w, const char *path);

/* Frees the writer, its copied tensors and metadata. NULL is ignored. */
void drdc_st_writer_free(drdc_st_writer *w);

#ifdef __cplusplus
}
#endif
#endif
