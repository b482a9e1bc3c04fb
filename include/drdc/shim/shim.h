/* shim.h: drdc's thin C API over libtorch (the only door from C model code to tensors).
 * It holds the ops the program (src/) calls, plus the queries its tests check the shim and the
 * model with (dt_live_handles, dt_grad, dt_requires_grad, dt_is_grad_enabled, dt_dtype_size);
 * an op joins when src/ needs it.
 *
 * Ownership rules
 * - dt_tensor is an opaque handle to one torch tensor. Inputs are always borrowed; nothing
 *   steals an argument. Every result handle (written through the out-parameters, which come
 *   FIRST) is owned by the caller and freed with dt_free (NULL-safe). On failure the
 *   out-parameters are set to NULL and nothing is allocated.
 * - Views (permute, transpose, narrow, expand, unsqueeze, squeeze, and reshape where torch can)
 *   and dt_detach share storage with their input, as in torch; the handles are still independent
 *   and each must be freed.
 * - Scopes: dt_scope_begin() opens a (per-thread) scope; every handle created on this thread
 *   while it is open is recorded in the innermost one. dt_scope_keep(h) takes h out of its
 *   scope (into the enclosing scope, or to the caller when there is none); dt_scope_end()
 *   frees every handle still recorded. dt_free on a recorded handle removes it from its scope.
 * - dt_live_handles() counts tensor handles alive in the process (a forward pass inside a
 *   scope must bring it back to where it was).
 * - dt_generator and dt_optimizer are separate opaque objects with their own free function;
 *   they are not counted or scoped.
 * - Errors: every function that can fail returns a drdc_status (drdc/core/error.h). A libtorch
 *   exception becomes DRDC_ERR_TORCH with torch's message (without the C++ backtrace),
 *   prefixed with the shim function's name; out of host or device memory is DRDC_ERR_NOMEM;
 *   a NULL argument or bad value is DRDC_ERR_INPUT. Nothing aborts.
 * - Plain queries that cannot fail (ndim, numel, dtype, device, requires_grad, counters,
 *   versions) return their value directly.
 * - Random numbers (randn, rand, randint, randperm, dropout masks) are ALWAYS drawn from a CPU
 *   generator and then moved to the target device, so CPU and CUDA runs draw the same numbers.
 *   A NULL dt_generator means libtorch's default CPU generator. A row generator (one generator
 *   per sample) draws each sample's rows from that sample's generator (dt_generator_new_rows).
 * - Threads: handles may be used from any thread, but not concurrently with a write to the same
 *   tensor. Scopes and the grad mode are per thread: close every scope on the thread that
 *   opened it, and free a scoped handle on that thread.
 * - No-grad: dt_set_grad_enabled(0) is torch.no_grad() (not inference mode), so tensors made
 *   under it can later take part in autograd.
 * Shapes are passed as (const int64_t *shape, int ndim); dims may be negative (from the end). */
#ifndef DRDC_SHIM_H
#define DRDC_SHIM_H

#include <stddef.h>
#include <stdint.h>

#include "drdc/core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dt_tensor_s *dt_tensor;
typedef struct dt_generator_s *dt_generator;
typedef struct dt_optimizer_s *dt_optimizer;

typedef enum dt_dtype {
    DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2, DT_F64 = 3, DT_I64 = 4, DT_I32 = 5, DT_U8 = 6, DT_BOOL = 7,
} dt_dtype;

enum { DT_CPU = 0, DT_CUDA = 1 };
typedef struct dt_device { int type; int index; } dt_device; /* type DT_CPU|DT_CUDA; index >= 0 for CUDA */

typedef enum dt_interp_mode {
    DT_INTERP_NEAREST = 0,     /* torch 'nearest' (floor of the scaled index) */
    DT_INTERP_BILINEAR = 1,    /* 'bilinear', align_corners = false */
    DT_INTERP_BILINEAR_AC = 2, /* 'bilinear', align_corners = true (UniAD's UpsamplingBilinear2d) */
    DT_INTERP_AREA = 3,        /* 'area' = adaptive average pooling */
} dt_interp_mode;

/* ---- handles, scopes, counters -------------------------------------------------------- */
void dt_free(dt_tensor t);                   /* frees a handle (NULL-safe); removes it from its scope */
/* Frees n handles and sets them to NULL (for a loop's per-iteration temporaries). */
static inline void dt_free_all(dt_tensor *ts, int n) {
    for (int i = 0; i < n; i++) {
        dt_free(ts[i]);
        ts[i] = 0;
    }
}
long dt_live_handles(void);                  /* tensor handles alive in the process */
/* Floating-point operations of the products run so far in the process (all threads): 2 x the
 * multiply-adds of every dt_conv2d, dt_linear and dt_bmm (and dt_mm), from their shapes. Bias
 * additions, norms and elementwise ops are not counted. Differences of two readings measure a call. */
int64_t dt_flops_done(void);
void dt_flops_add(int64_t flops);            /* a C kernel's products, counted with the shim's */
drdc_status dt_scope_begin(void);            /* opens a nested scope on this thread */
drdc_status dt_scope_keep(dt_tensor t);      /* moves t out of its scope (to the enclosing one, or to the caller) */
drdc_status dt_scope_end(void);              /* frees all handles still in the innermost scope and closes it */
int dt_scope_depth(void);                    /* open scopes on this thread */
/* Ends the innermost scope of a function that produces `result`: when st is DRDC_OK, result (may be
 * NULL) is kept (moved to the caller) and stored in *out (out may be NULL); otherwise *out = NULL.
 * The scope is always closed. Returns st, or the failure of keeping or closing. */
drdc_status dt_scope_finish(drdc_status st, dt_tensor result, dt_tensor *out);

/* ---- dtypes and devices --------------------------------------------------------------- */
size_t dt_dtype_size(dt_dtype d);            /* bytes per element (0 for an unknown value) */
const char *dt_dtype_name(dt_dtype d);       /* "f32", "f16", "bf16", "f64", "i64", "i32", "u8", "bool" */
/* s is "cpu" | "cuda" | "cuda:N" | "auto" (cuda:0 when available, else cpu). Asking for CUDA
 * when libtorch sees none, or for cuda:N beyond the device count, is DRDC_ERR_INPUT. */
drdc_status dt_device_parse(dt_device *out, const char *s);
void dt_device_format(char *buf, size_t cap, dt_device d);   /* "cpu" or "cuda:N" */

/* ---- creation ------------------------------------------------------------------------- */
/* Copies numel(shape) * dt_dtype_size(dtype) bytes from host memory into a new tensor on dev. */
drdc_status dt_from_host(dt_tensor *out, const void *data, dt_dtype dtype, const int64_t *shape, int ndim, dt_device dev);
drdc_status dt_zeros(dt_tensor *out, const int64_t *shape, int ndim, dt_dtype dtype, dt_device dev);
/* uninitialised; channels_last 1: a 4-D [N,C,H,W] stored NHWC (as dt_to_memory_format) */
drdc_status dt_empty(dt_tensor *out, const int64_t *shape, int ndim, dt_dtype dtype, dt_device dev, int channels_last);
drdc_status dt_ones(dt_tensor *out, const int64_t *shape, int ndim, dt_dtype dtype, dt_device dev);
drdc_status dt_full(dt_tensor *out, const int64_t *shape, int ndim, double value, dt_dtype dtype, dt_device dev);
drdc_status dt_arange(dt_tensor *out, double start, double end, double step, dt_dtype dtype, dt_device dev); /* [start, end) */
drdc_status dt_zeros_like(dt_tensor *out, dt_tensor t);   /* same shape, dtype, device */
drdc_status dt_ones_like(dt_tensor *out, dt_tensor t);
/* CPU generators (see the ownership notes): create, free, and get/set the state for checkpoints. */
drdc_status dt_generator_new(dt_generator *out, uint64_t seed);
void dt_generator_free(dt_generator g);                    /* NULL-safe */
drdc_status dt_generator_get_state(dt_tensor *out, dt_generator g);  /* a CPU uint8 tensor */
drdc_status dt_generator_set_state(dt_generator g, dt_tensor state); /* from dt_generator_get_state */
/* A row generator: n generators (seeds[i]), one per group of rows. A draw of shape [N,...] from it
 * (randn, rand, randint, dropout) splits dim 0 into n equal groups, N a multiple of n, and draws
 * group i, of shape [N/n,...], from generator i: with one generator per sample of a batch, each
 * sample's numbers depend on its own generator alone, not on the batch it sits in. randperm and
 * the state functions refuse a row generator of n > 1. Free with dt_generator_free. */
drdc_status dt_generator_new_rows(dt_generator *out, const uint64_t *seeds, int n);
int dt_generator_rows(dt_generator g);   /* n of a row generator; 1 for a single one or NULL */
/* The generator that draws row `row` of a `rows`-row draw from g (rows a multiple of g's n): one of
 * g's generators, or g itself when it is single (or NULL). Borrowed: valid while g lives. */
drdc_status dt_generator_row(dt_generator *out, dt_generator g, int64_t row, int64_t rows);
drdc_status dt_randn(dt_tensor *out, const int64_t *shape, int ndim, dt_dtype dtype, dt_device dev, dt_generator g); /* N(0,1), float dtypes */
drdc_status dt_rand(dt_tensor *out, const int64_t *shape, int ndim, dt_dtype dtype, dt_device dev, dt_generator g);  /* U[0,1), float dtypes */
drdc_status dt_randint(dt_tensor *out, int64_t low, int64_t high, const int64_t *shape, int ndim, dt_device dev, dt_generator g); /* i64 in [low, high) */
drdc_status dt_randperm(dt_tensor *out, int64_t n, dt_device dev, dt_generator g); /* i64 permutation of 0..n-1 */
/* Copies t (any device, any layout) into dst; nbytes must equal numel * element size exactly. */
drdc_status dt_copy_to_host(dt_tensor t, void *dst, size_t nbytes);
drdc_status dt_item(double *out, dt_tensor t);             /* the value of a one-element tensor */

/* ---- info ----------------------------------------------------------------------------- */
int dt_ndim(dt_tensor t);
int64_t dt_numel(dt_tensor t);
dt_dtype dt_dtype_of(dt_tensor t);                         /* (dt_dtype)-1 for a dtype outside dt_dtype */
dt_device dt_device_of(dt_tensor t);
int dt_requires_grad(dt_tensor t);
/* How many times t's storage has been written in place (libtorch's version counter, shared by the
 * views of one storage): a copy made from t is current while this count stays the same. -1 for
 * NULL or a tensor without a counter. */
int64_t dt_version(dt_tensor t);
drdc_status dt_size(int64_t *out, dt_tensor t, int dim);   /* size of one dim (negative counts from the end) */
drdc_status dt_shape(int64_t *out, int cap, dt_tensor t);  /* writes ndim sizes; cap must be >= ndim */

/* ---- moves ---------------------------------------------------------------------------- */
drdc_status dt_to_device(dt_tensor *out, dt_tensor t, dt_device dev);
drdc_status dt_to_dtype(dt_tensor *out, dt_tensor t, dt_dtype dtype);
drdc_status dt_contiguous(dt_tensor *out, dt_tensor t);
/* channels_last 1: the same [N,C,H,W] values stored with the channels innermost (NHWC), the layout
 * oneDNN's convolutions work in without reordering; 0: plain contiguous NCHW. 4-D tensors only for 1. */
drdc_status dt_to_memory_format(dt_tensor *out, dt_tensor t, int channels_last);
int dt_is_channels_last(dt_tensor t);                      /* 1: a 4-D tensor stored channels-last */
drdc_status dt_empty_like(dt_tensor *out, dt_tensor t);    /* uninitialised; same shape, dtype, device, layout */
/* The storage of a CPU tensor that is dense in its layout (contiguous, or channels-last: NHWC), for C
 * kernels that read or write it; valid while t lives. Any other tensor is an input error. */
drdc_status dt_host_data(void **out, dt_tensor t);
/* fn(ctx, b, e) over [begin, end) in ranges of at least grain, on libtorch's intra-op threads
 * (at::parallel_for); fn must not fail. */
typedef void (*dt_range_fn)(void *ctx, int64_t begin, int64_t end);
drdc_status dt_parallel_for(int64_t begin, int64_t end, int64_t grain, dt_range_fn fn, void *ctx);
/* fn(ctx, i) for i in [0, n) at the same time: i = 0 on the calling thread, every other i on a
 * thread of its own (threads kept between calls; a nested or concurrent call starts its own).
 * Each runs with the caller's autograd and autocast state and threads_each intra-op threads (the
 * caller's count is restored after). Returns after all have finished: the first failure in i
 * order, its message moved to the caller's thread. For CPU work whose parts are too small to keep
 * several intra-op threads busy. */
typedef drdc_status (*dt_task_fn)(void *ctx, int i);
drdc_status dt_run_concurrently(int n, int threads_each, dt_task_fn fn, void *ctx);
drdc_status dt_clone(dt_tensor *out, dt_tensor t);         /* a copy with its own storage */
drdc_status dt_detach(dt_tensor *out, dt_tensor t);        /* shares storage, no autograd history */
drdc_status dt_copy_(dt_tensor dst, dt_tensor src);        /* in place: dst <- src (broadcast, cast, cross-device) */

/* ---- arithmetic (torch broadcasting) ------------------------------------------------- */
drdc_status dt_add(dt_tensor *out, dt_tensor a, dt_tensor b);
drdc_status dt_sub(dt_tensor *out, dt_tensor a, dt_tensor b);
drdc_status dt_mul(dt_tensor *out, dt_tensor a, dt_tensor b);
drdc_status dt_div(dt_tensor *out, dt_tensor a, dt_tensor b);
drdc_status dt_add_scalar(dt_tensor *out, dt_tensor a, double s);
drdc_status dt_mul_scalar(dt_tensor *out, dt_tensor a, double s);
drdc_status dt_sqrt(dt_tensor *out, dt_tensor a);
drdc_status dt_exp(dt_tensor *out, dt_tensor a);
drdc_status dt_neg(dt_tensor *out, dt_tensor a);
drdc_status dt_square(dt_tensor *out, dt_tensor a);
drdc_status dt_clamp(dt_tensor *out, dt_tensor a, double min, double max);  /* +-INFINITY: no bound */
drdc_status dt_addcmul(dt_tensor *out, dt_tensor a, dt_tensor b, dt_tensor c);  /* a + b * c, one pass */
drdc_status dt_add_(dt_tensor dst, dt_tensor src, double alpha);  /* in place: dst += alpha * src */
drdc_status dt_lerp_(dt_tensor dst, dt_tensor end, double weight);/* in place: dst += weight * (end - dst) (EMA) */

/* ---- reductions ----------------------------------------------------------------------- */
drdc_status dt_sum(dt_tensor *out, dt_tensor x, const int64_t *dims, int ndims, int keepdim);  /* ndims >= 1 */
drdc_status dt_mean(dt_tensor *out, dt_tensor x, const int64_t *dims, int ndims, int keepdim);
drdc_status dt_sum_all(dt_tensor *out, dt_tensor x);    /* 0-dim results */
drdc_status dt_mean_all(dt_tensor *out, dt_tensor x);
drdc_status dt_max_all(dt_tensor *out, dt_tensor x);
drdc_status dt_min_all(dt_tensor *out, dt_tensor x);
drdc_status dt_amax(dt_tensor *out, dt_tensor x, const int64_t *dims, int ndims, int keepdim);
drdc_status dt_norm2(dt_tensor *out, dt_tensor x, int64_t dim, int keepdim);  /* L2 norm over one dim */

/* ---- nn ------------------------------------------------------------------------------- */
/* x [N,Cin,H,W], w [Cout,Cin/groups,kh,kw], b [Cout] or NULL -> [N,Cout,H',W'] (channels-last when x
 * is: a channels-last float32 CPU input without autograd goes straight to oneDNN) */
drdc_status dt_conv2d(dt_tensor *out, dt_tensor x, dt_tensor w, dt_tensor b, int64_t stride_h, int64_t stride_w,
                      int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups);
/* pads the last two dims: left, right (W), top, bottom (H); negative values crop */
drdc_status dt_constant_pad_nd(dt_tensor *out, dt_tensor x, int64_t left, int64_t right, int64_t top, int64_t bottom, double value);
drdc_status dt_linear(dt_tensor *out, dt_tensor x, dt_tensor w, dt_tensor b);  /* x [...,in], w [out,in], b [out]|NULL */
drdc_status dt_bmm(dt_tensor *out, dt_tensor a, dt_tensor b);        /* [B,n,m] x [B,m,p] -> [B,n,p] */
drdc_status dt_softmax(dt_tensor *out, dt_tensor x, int64_t dim);
/* normalizes over the last n_norm_dims dims; w, b of that shape or NULL */
drdc_status dt_layer_norm(dt_tensor *out, dt_tensor x, int n_norm_dims, dt_tensor w, dt_tensor b, double eps);
drdc_status dt_group_norm(dt_tensor *out, dt_tensor x, int64_t groups, dt_tensor w, dt_tensor b, double eps); /* x [N,C,...] */
/* (the norms compute in float32: a bf16/f16 input is cast to the weights' dtype, or to f32 without weights) */
/* inference-mode batch norm with running statistics; w, b [C] or NULL */
drdc_status dt_batch_norm_eval(dt_tensor *out, dt_tensor x, dt_tensor running_mean, dt_tensor running_var,
                               dt_tensor w, dt_tensor b, double eps);
drdc_status dt_relu(dt_tensor *out, dt_tensor x);
drdc_status dt_relu6(dt_tensor *out, dt_tensor x);
drdc_status dt_silu(dt_tensor *out, dt_tensor x);
drdc_status dt_sigmoid(dt_tensor *out, dt_tensor x);
drdc_status dt_tanh(dt_tensor *out, dt_tensor x);
/* training: zero with probability p, scale the rest by 1/(1-p), mask from the CPU generator g
 * (NULL: default; a row generator draws the mask of each group of rows of dim 0 from its own
 * generator); not training: a new handle on x itself */
drdc_status dt_dropout(dt_tensor *out, dt_tensor x, double p, int training, dt_generator g);
drdc_status dt_avg_pool2d(dt_tensor *out, dt_tensor x, int64_t kernel, int64_t stride, int64_t pad, int count_include_pad);
drdc_status dt_adaptive_avg_pool2d(dt_tensor *out, dt_tensor x, int64_t out_h, int64_t out_w);
drdc_status dt_interpolate(dt_tensor *out, dt_tensor x, int64_t out_h, int64_t out_w, int mode); /* x [N,C,H,W]; mode: a dt_interp_mode (an int, so a bad value is an error, not UB) */
drdc_status dt_mse_loss(dt_tensor *out, dt_tensor a, dt_tensor b);  /* mean of (a-b)^2, 0-dim */

/* ---- shape ---------------------------------------------------------------------------- */
drdc_status dt_cat(dt_tensor *out, const dt_tensor *ts, int n, int64_t dim);
drdc_status dt_stack(dt_tensor *out, const dt_tensor *ts, int n, int64_t dim);
drdc_status dt_narrow(dt_tensor *out, dt_tensor x, int64_t dim, int64_t start, int64_t length);          /* view */
drdc_status dt_index_select(dt_tensor *out, dt_tensor x, int64_t dim, dt_tensor index);  /* index: i64 1-D */
drdc_status dt_reshape(dt_tensor *out, dt_tensor x, const int64_t *shape, int ndim);     /* one -1 allowed */
drdc_status dt_permute(dt_tensor *out, dt_tensor x, const int64_t *dims, int ndim);
drdc_status dt_transpose(dt_tensor *out, dt_tensor x, int64_t dim0, int64_t dim1);
drdc_status dt_unsqueeze(dt_tensor *out, dt_tensor x, int64_t dim);
drdc_status dt_squeeze(dt_tensor *out, dt_tensor x, int64_t dim);
drdc_status dt_expand(dt_tensor *out, dt_tensor x, const int64_t *shape, int ndim);      /* -1 keeps a size */
/* values and/or indices (i64) along dim; either out may be NULL when not wanted */
drdc_status dt_topk(dt_tensor *values, dt_tensor *indices, dt_tensor x, int64_t k, int64_t dim, int largest);

/* ---- autograd ------------------------------------------------------------------------- */
drdc_status dt_set_requires_grad(dt_tensor t, int requires_grad);  /* t must be a leaf for 1 */
drdc_status dt_backward(dt_tensor loss);                 /* loss must be a one-element tensor */
drdc_status dt_grad(dt_tensor *out, dt_tensor t);        /* *out = NULL when t has no grad; else shares the grad */
drdc_status dt_zero_grad(const dt_tensor *params, int n);/* sets each grad to None */
drdc_status dt_set_grad(dt_tensor t, dt_tensor grad);   /* t's grad <- a copy of grad (t's shape, dtype, device) */
int dt_set_grad_enabled(int enabled);                    /* per thread; returns the previous state */
int dt_is_grad_enabled(void);

/* ---- optimizer: AdamW, as torch.optim.AdamW (decoupled weight decay, bias correction, no amsgrad)
 * The optimizer keeps references to the parameter tensors given to dt_adamw_add_group, updates
 * them in place under no-grad, and skips parameters whose grad is None. The parameter handles
 * are borrowed: keep them alive and in place while the optimizer is used (freeing one does not
 * crash, but the optimizer would then update a tensor nobody sees). Parameters are numbered in
 * the order they were added, across groups. */
drdc_status dt_adamw_new(dt_optimizer *out, double beta1, double beta2, double eps); /* torch: 0.9, 0.999, 1e-8 */
drdc_status dt_adamw_add_group(dt_optimizer opt, const dt_tensor *params, int n, double lr, double weight_decay);
drdc_status dt_adamw_step(dt_optimizer opt);
drdc_status dt_adamw_set_lr(dt_optimizer opt, int group, double lr);
int dt_adamw_num_params(dt_optimizer opt);
/* Per-parameter state (torch's exp_avg, exp_avg_sq, step): get returns copies (NULL handles and
 * step 0 before the parameter's first update); set copies the given tensors in (shapes must
 * match the parameter; NULL moments with step 0 clear the state). */
drdc_status dt_adamw_state_get(dt_tensor *exp_avg, dt_tensor *exp_avg_sq, int64_t *step, dt_optimizer opt, int param);
drdc_status dt_adamw_state_set(dt_optimizer opt, int param, dt_tensor exp_avg, dt_tensor exp_avg_sq, int64_t step);
void dt_optimizer_free(dt_optimizer opt);                /* NULL-safe */
/* torch.nn.utils.clip_grad_norm_ (L2 over all grads, error_if_nonfinite false): scales grads by
 * min(1, max_norm / (total + 1e-6)); total_norm (may be NULL) gets the norm before clipping. */
drdc_status dt_clip_grad_norm(const dt_tensor *params, int n, double max_norm, double *total_norm);

/* ---- system --------------------------------------------------------------------------- */
drdc_status dt_set_num_threads(int n);       /* intra-op threads, n >= 1 (and OpenBLAS's, when it is the BLAS) */
int dt_get_num_threads(void);
/* OpenBLAS's own thread count, when OpenBLAS is the BLAS linked in: sets n (>= 1) and returns the
 * count before, or 0 (and does nothing) without OpenBLAS. */
int dt_set_blas_threads(int n);
int dt_cuda_available(void);
int dt_cuda_device_count(void);
drdc_status dt_synchronize(dt_device dev);   /* waits for CUDA work on dev; no-op for cpu */
const char *dt_torch_version(void);          /* e.g. "1.13.0" */
/* Peak CUDA bytes allocated on dev since start. 0 for cpu, and 0 when the shim was built
 * without DRDC_WITH_CUDA (the caching-allocator API is only linked in CUDA builds). */
drdc_status dt_cuda_memory(int64_t *peak_bytes, dt_device dev);
/* CUDA autocast to bf16 on this thread (on = 1) or off; CPU tensors are not affected.
 * The autocast weight cache is disabled so in-place optimizer updates are always seen. */
drdc_status dt_autocast_bf16(int on);
/* Inference under bf16 autocast on dev's kind (CPU: oneDNN's bf16 kernels, AMX where the CPU has
 * it; CUDA: tensor cores) on this thread, on = 1, or off. Convolutions, Linear layers and matrix
 * products run in bf16; dt_group_norm, dt_layer_norm and dt_batch_norm_eval normalise a bf16 input in
 * their float32 weights' dtype. The weight cache is on while it is on (each weight is cast once until
 * it is turned off): for inference only, never around optimizer steps. */
drdc_status dt_autocast_inference(dt_device dev, int on);
/* 1 when CPU autocast is on on this thread (dt_autocast_inference on a CPU device), else 0. */
int dt_cpu_autocast_enabled(void);

#ifdef __cplusplus
}
#endif
#endif
