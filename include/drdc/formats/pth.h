/* pth.h: importing PyTorch `.pth` state dicts in plain C (no libtorch, no Python).
 *
 * Two container formats are read:
 *   - zip (torch >= 1.6, the torch.save default): `<prefix>/data.pkl` holds the pickled object,
 *     `<prefix>/data/<key>` the raw bytes of each storage. Entries must be STORED (torch never
 *     compresses); a DEFLATE entry is a clear error. ZIP64 (extra fields, end-of-central-directory
 *     locator and record) is supported; CRC-32 of every entry used is checked.
 *   - legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): a run of pickles (magic
 *     number, protocol version 1001, sys_info, the object, the list of storage keys) followed by
 *     each storage as an 8-byte little-endian element count and its raw bytes. This is the
 *     layout of UniAD's `efficientnet-b4-6ed6700e.pth` (2019), which libtorch cannot read.
 * The older tar format (torch < 0.4) and TorchScript archives are rejected with a message.
 *
 * The pickle is run by a small VM that knows only what torch state dicts use (protocol 2-5
 * basics) and only these callables: collections.OrderedDict, torch._utils._rebuild_tensor_v2,
 * torch._utils._rebuild_parameter(_with_state), and torch.<Type>Storage types (Float, Half,
 * BFloat16, Double, Long, Int, Short, Char, Byte, Bool). Calling any other global is an error
 * naming it. Nothing from the file is ever executed.
 *
 * Result: the top-level object must be a dict. Nested dicts are flattened by joining keys with
 * ".": {"state_dict": {"conv.weight": T}} gives the tensor "state_dict.conv.weight"; integer
 * keys are written in decimal. Values that are not tensors (ints, floats, strings, lists, None,
 * dicts with non-string keys ...) are skipped and counted (drdc_pth_skipped). Two entries that
 * flatten to the same name are an error. Tensors come out contiguous (row-major), little-endian,
 * with storage offsets and strides applied (views are gathered), in the order of the file's dict.
 *
 * Robustness: the input is untrusted (this code is fuzzed). Every offset, size, index and count
 * is checked against the data; a truncated or corrupt file is DRDC_ERR_FORMAT with a message that
 * names the file and what was wrong. Limits: pickle stack DRDC_PTH_MAX_STACK, MARK nesting
 * DRDC_PTH_MAX_MARKS, memo indices below min(DRDC_PTH_MAX_MEMO, pickle length), dict nesting
 * DRDC_PTH_MAX_DEPTH, rank DRDC_ST_MAX_RANK, and the total bytes of all output tensors at most
 * 4 * input size + 64 MiB (views can expand a storage, e.g. stride 0).
 * The dtype codes are those of safetensors.h (drdc_st_dtype). */
#ifndef DRDC_PTH_H
#define DRDC_PTH_H

#include <stddef.h>
#include <stdint.h>

#include "drdc/core/error.h"
#include "drdc/formats/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DRDC_PTH_MAX_STACK (1 << 20)   /* values on the pickle stack */
#define DRDC_PTH_MAX_MARKS 4096        /* open MARKs at once */
#define DRDC_PTH_MAX_MEMO (1 << 24)    /* memo index bound (also < the pickle's length) */
#define DRDC_PTH_MAX_DEPTH 64          /* nesting of dicts flattened into names */

/* Which container a file was. */
typedef enum drdc_pth_format {
    DRDC_PTH_ZIP = 0,     /* torch >= 1.6 zip archive */
    DRDC_PTH_LEGACY = 1,  /* pre-1.6 sequence of pickles + raw storages */
} drdc_pth_format;

/* One tensor of a loaded file; owned by the drdc_pth_file, valid until drdc_pth_free. */
typedef struct drdc_pth_tensor {
    const char *name;                    /* flattened key, NUL-terminated */
    drdc_st_dtype dtype;                 /* element type (from the storage type) */
    int ndim;                            /* rank 0..DRDC_ST_MAX_RANK (0: scalar, one element) */
    int64_t shape[DRDC_ST_MAX_RANK];     /* dims [ndim]; entries past ndim are 0 */
    int64_t numel;                       /* product of the dims (1 for a scalar, 0 if empty) */
    const void *data;                    /* contiguous row-major little-endian bytes (never NULL) */
    size_t nbytes;                       /* numel * drdc_st_dtype_size(dtype) */
} drdc_pth_tensor;

typedef struct drdc_pth_file drdc_pth_file;  /* opaque: the tensors of one .pth */

/* Reads the file at path and converts every tensor. Errors: DRDC_ERR_IO (cannot open/read),
 * DRDC_ERR_FORMAT (anything wrong with the content; the message names the file), DRDC_ERR_NOMEM.
 * On success *out is owned by the caller (drdc_pth_free). On failure *out is NULL. */
drdc_status drdc_pth_load(drdc_pth_file **out, const char *path);

/* The same for a .pth image in memory (a fuzzer's entry point). `data` is only read during the
 * call: the result owns copies of everything. `source_name` names it in messages (NULL:
 * "<memory>"). */
drdc_status drdc_pth_parse(drdc_pth_file **out, const void *data, size_t size, const char *source_name);

/* Frees the result. NULL is ignored. */
void drdc_pth_free(drdc_pth_file *f);

/* Number of tensors; the i-th (0 <= i < count, file order) or NULL out of range; by name or NULL. */
int drdc_pth_count(const drdc_pth_file *f);
const drdc_pth_tensor *drdc_pth_at(const drdc_pth_file *f, int i);
const drdc_pth_tensor *drdc_pth_find(const drdc_pth_file *f, const char *name);

/* Number of dict values that were not tensors and were skipped. */
int drdc_pth_skipped(const drdc_pth_file *f);
/* The container format, and the name given to load/parse. */
drdc_pth_format drdc_pth_get_format(const drdc_pth_file *f);
const char *drdc_pth_source(const drdc_pth_file *f);

/* Converts a .pth file into a safetensors file (written atomically through drdc_st_writer),
 * every tensor under its flattened name, with __metadata__ {"format": "pt",
 * "converted_from": <file name of in_path>, "pth_format": "zip"|"legacy"}. A file without any
 * tensor is DRDC_ERR_FORMAT. n_tensors and n_skipped (either may be NULL) get the number of
 * tensors written and of non-tensor values skipped. */
drdc_status drdc_pth_to_safetensors(const char *in_path, const char *out_path, int *n_tensors, int *n_skipped);

#ifdef __cplusplus
}
#endif
#endif
