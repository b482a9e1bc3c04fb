// shim.cpp: the C API of include/drdc/shim/shim.h over libtorch (with optim.cpp, the only C++ in
// drdc).
//
// Each function is a thin wrapper: check arguments, call the at:: function of the same name,
// wrap the result in a handle. Every body runs inside a try block that turns any C++
// exception into a drdc_status plus a message (the tch-rs PROTECT pattern). Only APIs present
// in both libtorch 1.13 and 2.x are used; CUDA-only calls go through torch::cuda::*, which
// exist (and fail cleanly) in CPU-only builds.
#include "drdc/shim/shim.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/autocast_mode.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>

#if __has_include(<torch/version.h>)
#include <torch/version.h>
#endif
// libtorch 2.4 replaced the per-backend autocast calls (set_cpu_enabled, is_cpu_enabled, ...) by
// ones that take the device type; 1.13 has only the former.
#if defined(TORCH_VERSION_MAJOR) && (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4))
#define DT_AUTOCAST_BY_DEVICE 1
#else
#define DT_AUTOCAST_BY_DEVICE 0
#endif
#if defined(DRDC_WITH_CUDA) && __has_include(<c10/cuda/CUDACachingAllocator.h>)
#include <c10/cuda/CUDACachingAllocator.h>
#define DRDC_HAVE_CUDA_ALLOCATOR 1
#endif

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "internal.hpp"   // last: its T() macro would clash with template parameters of torch headers

struct dt_shim::Scope {
    std::vector<dt_tensor_s *> items;
};

using dt_shim::arg;
using dt_shim::fail_current;
using dt_shim::input_error;
using dt_shim::Scope;
using dt_shim::set_pair;
using dt_shim::shape_str;
using dt_shim::tensor_list;

namespace {

thread_local std::vector<Scope *> tl_scopes;
std::atomic<long> g_live_handles{0};
std::atomic<int64_t> g_flops{0};   // dt_flops_done: 2 x multiply-adds of the products run

// Adds the work of one product to the counter: 2 * (output elements) * (multiply-adds per element).
void count_flops(const at::Tensor &out, int64_t macs_per_element) {
    g_flops.fetch_add(2 * out.numel() * macs_per_element, std::memory_order_relaxed);
}

// A bad argument detected by the shim itself (-> DRDC_ERR_INPUT).
struct ShimInputError : std::runtime_error {
    explicit ShimInputError(const std::string &m) : std::runtime_error(m) {}
};

// Keeps the first few meaningful lines of a torch message, without the C++ backtrace.
std::string clean_message(const char *raw) {
    std::string s(raw ? raw : "");
    for (const char *cut : {"Exception raised from", "frame #0", "\nException raised"}) {
        size_t p = s.find(cut);
        if (p != std::string::npos) s.resize(p);
    }
    std::string out;
    int lines = 0;
    size_t pos = 0;
    while (pos < s.size() && lines < 3) {
        size_t nl = s.find('\n', pos);
        std::string line = s.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        pos = nl == std::string::npos ? s.size() : nl + 1;
        while (!line.empty() && (line.back() == ' ' || line.back() == '\r' || line.back() == '\t')) line.pop_back();
        if (line.empty()) continue;
        if (!out.empty()) out += "; ";
        out += line;
        lines++;
    }
    if (out.size() > 800) out = out.substr(0, 800) + "...";
    return out.empty() ? std::string("unknown libtorch error") : out;
}

bool mentions_oom(const std::string &m) {
    for (const char *k : {"out of memory", "not enough memory", "can't allocate memory", "Cannot allocate memory"})
        if (m.find(k) != std::string::npos) return true;
    return false;
}

}  // namespace

// Called inside a catch block: classifies the exception in flight.
drdc_status dt_shim::fail_current(const char *fn) {
    try {
        try {
            throw;
        } catch (const ShimInputError &e) {
            return drdc_fail(DRDC_ERR_INPUT, "%s: %s", fn, e.what());
        } catch (const c10::OutOfMemoryError &e) {
            return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory: %s", fn,
                             clean_message(e.what_without_backtrace()).c_str());
        } catch (const c10::Error &e) {
            std::string m = clean_message(e.what_without_backtrace());
            return drdc_fail(mentions_oom(m) ? DRDC_ERR_NOMEM : DRDC_ERR_TORCH, "%s: %s", fn, m.c_str());
        } catch (const std::bad_alloc &) {
            return drdc_fail(DRDC_ERR_NOMEM, "%s: out of host memory", fn);
        } catch (const std::exception &e) {
            std::string m = clean_message(e.what());
            return drdc_fail(mentions_oom(m) ? DRDC_ERR_NOMEM : DRDC_ERR_TORCH, "%s: %s", fn, m.c_str());
        } catch (...) {
            return drdc_fail(DRDC_ERR_TORCH, "%s: unknown C++ exception", fn);
        }
    } catch (...) {  // building the message itself failed (memory)
        return drdc_fail(DRDC_ERR_NOMEM, "%s: out of memory while reporting an error", fn);
    }
}

[[noreturn]] void dt_shim::input_error(const std::string &m) { throw ShimInputError(m); }

const at::Tensor &dt_shim::arg(dt_tensor h, const char *name) {
    if (!h) input_error(std::string("tensor argument '") + name + "' is NULL");
    return h->t;
}

namespace {

c10::optional<at::Tensor> opt(dt_tensor h) {
    if (!h) return c10::nullopt;
    return c10::optional<at::Tensor>(h->t);
}

at::IntArrayRef ints(const int64_t *p, int n, const char *what) {
    if (n < 0) input_error(std::string(what) + ": negative count " + std::to_string(n));
    if (n > 0 && !p) input_error(std::string(what) + " is NULL with count " + std::to_string(n));
    return at::IntArrayRef(p, static_cast<size_t>(n));
}

// Wraps a tensor in a new handle, recorded in the innermost scope of this thread.
dt_tensor wrap(at::Tensor t) {
    dt_tensor h = new dt_tensor_s;
    h->t = std::move(t);
    if (!tl_scopes.empty()) {
        Scope *s = tl_scopes.back();
        try {
            s->items.push_back(h);
        } catch (...) {
            delete h;
            throw;
        }
        h->scope = s;
        h->slot = s->items.size() - 1;
    }
    g_live_handles.fetch_add(1, std::memory_order_relaxed);
    return h;
}

void unscope(dt_tensor h) {
    Scope *s = h->scope;
    if (!s) return;
    std::vector<dt_tensor_s *> &v = s->items;
    size_t i = h->slot;
    v[i] = v.back();
    v[i]->slot = i;
    v.pop_back();
    h->scope = nullptr;
}

void destroy(dt_tensor h) {
    delete h;
    g_live_handles.fetch_sub(1, std::memory_order_relaxed);
}

at::ScalarType to_scalar(dt_dtype d) {
    switch (d) {
        case DT_F32:
            return at::kFloat;
        case DT_F16:
            return at::kHalf;
        case DT_BF16:
            return at::kBFloat16;
        case DT_F64:
            return at::kDouble;
        case DT_I64:
            return at::kLong;
        case DT_I32:
            return at::kInt;
        case DT_U8:
            return at::kByte;
        case DT_BOOL:
            return at::kBool;
    }
    input_error("unknown dtype value " + std::to_string(static_cast<int>(d)));
}

dt_dtype from_scalar(at::ScalarType s) {
    switch (s) {
        case at::kFloat:
            return DT_F32;
        case at::kHalf:
            return DT_F16;
        case at::kBFloat16:
            return DT_BF16;
        case at::kDouble:
            return DT_F64;
        case at::kLong:
            return DT_I64;
        case at::kInt:
            return DT_I32;
        case at::kByte:
            return DT_U8;
        case at::kBool:
            return DT_BOOL;
        default:
            return static_cast<dt_dtype>(-1);
    }
}

at::Device to_device(dt_device d) {
    if (d.type == DT_CPU) return at::Device(at::kCPU);
    if (d.type == DT_CUDA) {
        if (d.index < 0 || d.index > 127) input_error("bad CUDA device index " + std::to_string(d.index));
        int count = dt_cuda_device_count();
        if (d.index >= count)
            input_error("device cuda:" + std::to_string(d.index) + " requested but libtorch sees " +
                        std::to_string(count) + " CUDA device(s)");
        return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(d.index));
    }
    input_error("unknown device type " + std::to_string(d.type));
}

at::TensorOptions options(dt_dtype dtype, dt_device dev) {
    return at::TensorOptions().dtype(to_scalar(dtype)).device(to_device(dev));
}

at::Generator gen_of(dt_generator g) { return g ? g->gen : at::detail::getDefaultCPUGenerator(); }

// Random floats are drawn in f32 (f64 for f64 targets) on the CPU, then cast and moved.
at::ScalarType draw_dtype(dt_dtype d) {
    switch (d) {
        case DT_F64:
            return at::kDouble;
        case DT_F32:
        case DT_F16:
        case DT_BF16:
            return at::kFloat;
        default:
            input_error(std::string("random floats need a float dtype, got ") + dt_dtype_name(d));
    }
}

}  // namespace

std::string dt_shim::shape_str(const at::Tensor &t) {
    std::string s = "[";
    for (int64_t i = 0; i < t.dim(); i++) s += (i ? ", " : "") + std::to_string(t.size(i));
    return s + "]";
}

// One-result tensor op: *out = wrap(expr).
#define TENSOR_OP(...)                                                       \
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "%s: out is NULL", __func__); \
    *out = nullptr;                                                          \
    PROTECT(at::Tensor r_ = (__VA_ARGS__); *out = wrap(std::move(r_));)

// ---- handles, scopes, counters --------------------------------------------------------

extern "C" void dt_free(dt_tensor t) {
    if (!t) return;
    unscope(t);
    destroy(t);
}

extern "C" long dt_live_handles(void) { return g_live_handles.load(std::memory_order_relaxed); }

extern "C" int64_t dt_flops_done(void) { return g_flops.load(std::memory_order_relaxed); }
extern "C" void dt_flops_add(int64_t flops) { g_flops.fetch_add(flops, std::memory_order_relaxed); }

extern "C" drdc_status dt_scope_begin(void) {
    SHIM_TRY {
        Scope *s = new Scope;
        try {
            tl_scopes.push_back(s);
        } catch (...) {
            delete s;
            throw;
        }
    }
    SHIM_CATCH
}

extern "C" drdc_status dt_scope_keep(dt_tensor t) {
    if (!t) return drdc_fail(DRDC_ERR_INPUT, "dt_scope_keep: handle is NULL");
    if (!t->scope) return DRDC_OK;
    auto it = std::find(tl_scopes.begin(), tl_scopes.end(), t->scope);
    if (it == tl_scopes.end())
        return drdc_fail(DRDC_ERR_STATE, "dt_scope_keep: the handle belongs to a scope of another thread");
    SHIM_TRY {
        Scope *parent = it == tl_scopes.begin() ? nullptr : *(it - 1);
        if (parent) parent->items.reserve(parent->items.size() + 1);
        unscope(t);
        if (parent) {
            parent->items.push_back(t);
            t->scope = parent;
            t->slot = parent->items.size() - 1;
        }
    }
    SHIM_CATCH
}

extern "C" drdc_status dt_scope_end(void) {
    if (tl_scopes.empty()) return drdc_fail(DRDC_ERR_STATE, "dt_scope_end: no open scope (missing dt_scope_begin)");
    Scope *s = tl_scopes.back();
    tl_scopes.pop_back();
    for (dt_tensor_s *h : s->items) {
        h->scope = nullptr;
        destroy(h);
    }
    delete s;
    return DRDC_OK;
}

extern "C" int dt_scope_depth(void) { return static_cast<int>(tl_scopes.size()); }

extern "C" drdc_status dt_scope_finish(drdc_status st, dt_tensor result, dt_tensor *out) {
    if (!st && result) st = dt_scope_keep(result);
    drdc_status end = dt_scope_end();
    if (!st) st = end;
    if (out) *out = st ? nullptr : result;
    return st;
}

// ---- dtypes and devices ---------------------------------------------------------------

extern "C" size_t dt_dtype_size(dt_dtype d) {
    switch (d) {
        case DT_F32:
            return 4;
        case DT_F16:
            return 2;
        case DT_BF16:
            return 2;
        case DT_F64:
            return 8;
        case DT_I64:
            return 8;
        case DT_I32:
            return 4;
        case DT_U8:
            return 1;
        case DT_BOOL:
            return 1;
    }
    return 0;
}

extern "C" const char *dt_dtype_name(dt_dtype d) {
    switch (d) {
        case DT_F32:
            return "f32";
        case DT_F16:
            return "f16";
        case DT_BF16:
            return "bf16";
        case DT_F64:
            return "f64";
        case DT_I64:
            return "i64";
        case DT_I32:
            return "i32";
        case DT_U8:
            return "u8";
        case DT_BOOL:
            return "bool";
    }
    return "unknown";
}

extern "C" int dt_cuda_available(void) {
    try {
        return torch::cuda::is_available() ? 1 : 0;
    } catch (...) {
        return 0;
    }
}

extern "C" int dt_cuda_device_count(void) {
    try {
        return static_cast<int>(torch::cuda::device_count());
    } catch (...) {
        return 0;
    }
}

extern "C" drdc_status dt_device_parse(dt_device *out, const char *s) {
    if (!out || !s) return drdc_fail(DRDC_ERR_INPUT, "dt_device_parse: NULL argument");
    out->type = DT_CPU;
    out->index = 0;
    if (strcmp(s, "cpu") == 0) return DRDC_OK;
    int count = dt_cuda_device_count();
    if (strcmp(s, "auto") == 0) {
        if (count > 0) out->type = DT_CUDA;
        return DRDC_OK;
    }
    long index = 0;
    if (strcmp(s, "cuda") == 0) {
        index = 0;
    } else if (strncmp(s, "cuda:", 5) == 0 && s[5] >= '0' && s[5] <= '9') {
        char *end = nullptr;
        index = strtol(s + 5, &end, 10);
        if (*end != '\0' || index > 127)
            return drdc_fail(DRDC_ERR_INPUT, "device '%s': expected cpu, cuda, cuda:N or auto", s);
    } else {
        return drdc_fail(DRDC_ERR_INPUT, "device '%s': expected cpu, cuda, cuda:N or auto", s);
    }
    if (count == 0)
        return drdc_fail(DRDC_ERR_INPUT,
                         "device '%s' requested but no CUDA device is available (libtorch %s sees 0 CUDA "
                         "devices); use --device cpu",
                         s, dt_torch_version());
    if (index >= count)
        return drdc_fail(DRDC_ERR_INPUT, "device '%s' requested but only %d CUDA device(s) are available", s, count);
    out->type = DT_CUDA;
    out->index = static_cast<int>(index);
    return DRDC_OK;
}

extern "C" void dt_device_format(char *buf, size_t cap, dt_device d) {
    if (!buf || cap == 0) return;
    if (d.type == DT_CUDA)
        snprintf(buf, cap, "cuda:%d", d.index);
    else if (d.type == DT_CPU)
        snprintf(buf, cap, "cpu");
    else
        snprintf(buf, cap, "unknown(%d)", d.type);
}

// ---- creation -------------------------------------------------------------------------

extern "C" drdc_status dt_from_host(dt_tensor *out, const void *data, dt_dtype dtype, const int64_t *shape, int ndim,
                                    dt_device dev) {
    TENSOR_OP(([&] {
        at::IntArrayRef sz = ints(shape, ndim, "shape");
        int64_t n = 1;
        for (int64_t v : sz) {
            if (v < 0) input_error("negative size in shape");
            n *= v;
        }
        at::ScalarType st = to_scalar(dtype);
        at::Device d = to_device(dev);
        if (n == 0) return at::empty(sz, at::TensorOptions().dtype(st).device(d));
        if (!data) input_error("data is NULL");
        at::Tensor view = at::from_blob(const_cast<void *>(data), sz, at::TensorOptions().dtype(st));
        return view.to(d, st, /*non_blocking=*/false, /*copy=*/true);
    }()))
}

extern "C" drdc_status dt_zeros(dt_tensor *out, const int64_t *shape, int ndim, dt_dtype dtype, dt_device dev) {
    TENSOR_OP(at::zeros(ints(shape, ndim, "shape"), options(dtype, dev)))
}

extern "C" drdc_status dt_empty(dt_tensor *out, const int64_t *shape, int ndim, dt_dtype dtype, dt_device dev,
                                int channels_last) {
    TENSOR_OP(([&] {
        if (channels_last && ndim != 4) input_error("channels-last needs 4 dims, got " + std::to_string(ndim));
        return at::empty(ints(shape, ndim, "shape"), options(dtype, dev),
                         channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
    }()))
}

extern "C" drdc_status dt_ones(dt_tensor *out, const int64_t *shape, int ndim, dt_dtype dtype, dt_device dev) {
    TENSOR_OP(at::ones(ints(shape, ndim, "shape"), options(dtype, dev)))
}

extern "C" drdc_status dt_full(dt_tensor *out, const int64_t *shape, int ndim, double value, dt_dtype dtype,
                               dt_device dev) {
    TENSOR_OP(at::full(ints(shape, ndim, "shape"), at::Scalar(value), options(dtype, dev)))
}

extern "C" drdc_status dt_arange(dt_tensor *out, double start, double end, double step, dt_dtype dtype, dt_device dev) {
    TENSOR_OP(at::arange(at::Scalar(start), at::Scalar(end), at::Scalar(step), options(dtype, dev)))
}

extern "C" drdc_status dt_zeros_like(dt_tensor *out, dt_tensor t) { TENSOR_OP(at::zeros_like(T(t))) }
extern "C" drdc_status dt_ones_like(dt_tensor *out, dt_tensor t) { TENSOR_OP(at::ones_like(T(t))) }

extern "C" drdc_status dt_generator_new(dt_generator *out, uint64_t seed) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "dt_generator_new: out is NULL");
    *out = nullptr;
    PROTECT(dt_generator g = new dt_generator_s; g->gen = at::detail::createCPUGenerator(seed); *out = g;)
}

extern "C" drdc_status dt_generator_new_rows(dt_generator *out, const uint64_t *seeds, int n) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "dt_generator_new_rows: out is NULL");
    *out = nullptr;
    if (n < 1 || !seeds) return drdc_fail(DRDC_ERR_INPUT, "dt_generator_new_rows: %d seeds", n);
    SHIM_TRY {
        std::unique_ptr<dt_generator_s> g(new dt_generator_s);
        g->rows.resize(static_cast<size_t>(n));
        for (int i = 0; i < n; i++) g->rows[static_cast<size_t>(i)].gen = at::detail::createCPUGenerator(seeds[i]);
        *out = g.release();
    }
    SHIM_CATCH
}

extern "C" int dt_generator_rows(dt_generator g) { return g && !g->rows.empty() ? static_cast<int>(g->rows.size()) : 1; }

extern "C" drdc_status dt_generator_row(dt_generator *out, dt_generator g, int64_t row, int64_t rows) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "dt_generator_row: out is NULL");
    *out = g;
    if (rows < 1 || row < 0 || row >= rows)
        return drdc_fail(DRDC_ERR_INPUT, "dt_generator_row: row %lld of %lld", (long long)row, (long long)rows);
    if (!g || g->rows.empty()) return DRDC_OK;
    const int64_t n = static_cast<int64_t>(g->rows.size());
    if (rows % n != 0)
        return drdc_fail(DRDC_ERR_INPUT, "dt_generator_row: a generator of %lld rows cannot draw %lld rows",
                         (long long)n, (long long)rows);
    *out = &g->rows[static_cast<size_t>(row / (rows / n))];
    return DRDC_OK;
}

extern "C" void dt_generator_free(dt_generator g) { delete g; }

namespace {
// A single generator's at::Generator (input error for a row generator of n > 1).
at::Generator single_gen(dt_generator g, const char *what) {
    if (g && !g->rows.empty()) {
        if (g->rows.size() == 1) return g->rows[0].gen;
        input_error(std::string(what) + " needs a single generator, not one of " + std::to_string(g->rows.size()) +
                    " rows");
    }
    return gen_of(g);
}

// draw(shape, generator) for a single generator; for a row generator of n, dim 0 split into n groups.
template <class Draw>
at::Tensor draw_rows(dt_generator g, at::IntArrayRef shape, Draw draw) {
    if (!g || g->rows.empty()) return draw(shape, gen_of(g));
    const int64_t n = static_cast<int64_t>(g->rows.size());
    if (shape.empty() || shape[0] % n != 0)
        input_error("a generator of " + std::to_string(n) + " rows draws tensors whose first dim is a multiple of " +
                    std::to_string(n) + ", not " + (shape.empty() ? std::string("a scalar") : std::to_string(shape[0])));
    if (n == 1) return draw(shape, g->rows[0].gen);
    std::vector<int64_t> sub(shape.begin(), shape.end());
    sub[0] /= n;
    std::vector<at::Tensor> parts;
    parts.reserve(static_cast<size_t>(n));
    for (dt_generator_s &r : g->rows) parts.push_back(draw(at::IntArrayRef(sub), r.gen));
    return at::cat(at::TensorList(parts), 0);
}
}  // namespace

extern "C" drdc_status dt_generator_get_state(dt_tensor *out, dt_generator g) {
    TENSOR_OP(([&] {
        if (!g) input_error("generator is NULL");
        at::Generator gen = single_gen(g, "the state");
        std::lock_guard<std::mutex> lock(gen.mutex());
        return gen.get_state();
    }()))
}

extern "C" drdc_status dt_generator_set_state(dt_generator g, dt_tensor state) {
    SHIM_TRY {
        if (!g) input_error("generator is NULL");
        const at::Tensor &s = T(state);
        if (s.scalar_type() != at::kByte || !s.device().is_cpu())
            input_error("state must be a CPU u8 tensor from dt_generator_get_state");
        at::Generator gen = single_gen(g, "the state");
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_state(s.contiguous());
    }
    SHIM_CATCH
}

extern "C" drdc_status dt_randn(dt_tensor *out, const int64_t *shape, int ndim, dt_dtype dtype, dt_device dev,
                                dt_generator g) {
    TENSOR_OP(draw_rows(g, ints(shape, ndim, "shape"), [&](at::IntArrayRef s, at::Generator gen) {
                  return at::randn(s, gen, at::TensorOptions().dtype(draw_dtype(dtype)));
              }).to(to_device(dev), to_scalar(dtype)))
}

extern "C" drdc_status dt_rand(dt_tensor *out, const int64_t *shape, int ndim, dt_dtype dtype, dt_device dev,
                               dt_generator g) {
    TENSOR_OP(draw_rows(g, ints(shape, ndim, "shape"), [&](at::IntArrayRef s, at::Generator gen) {
                  return at::rand(s, gen, at::TensorOptions().dtype(draw_dtype(dtype)));
              }).to(to_device(dev), to_scalar(dtype)))
}

extern "C" drdc_status dt_randint(dt_tensor *out, int64_t low, int64_t high, const int64_t *shape, int ndim,
                                  dt_device dev, dt_generator g) {
    TENSOR_OP(draw_rows(g, ints(shape, ndim, "shape"), [&](at::IntArrayRef s, at::Generator gen) {
                  return at::randint(low, high, s, gen, at::TensorOptions().dtype(at::kLong));
              }).to(to_device(dev)))
}

extern "C" drdc_status dt_randperm(dt_tensor *out, int64_t n, dt_device dev, dt_generator g) {
    TENSOR_OP(at::randperm(n, single_gen(g, "randperm"), at::TensorOptions().dtype(at::kLong)).to(to_device(dev)))
}

extern "C" drdc_status dt_copy_to_host(dt_tensor t, void *dst, size_t nbytes) {
    SHIM_TRY {
        at::Tensor c = T(t).detach().to(at::kCPU).contiguous();
        size_t need = static_cast<size_t>(c.numel()) * c.element_size();
        if (need != nbytes)
            input_error("tensor " + shape_str(c) + " " + dt_dtype_name(from_scalar(c.scalar_type())) + " has " +
                        std::to_string(need) + " bytes but the buffer has " + std::to_string(nbytes));
        if (need > 0) {
            if (!dst) input_error("dst is NULL");
            memcpy(dst, c.data_ptr(), need);
        }
    }
    SHIM_CATCH
}

extern "C" drdc_status dt_item(double *out, dt_tensor t) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "dt_item: out is NULL");
    PROTECT(*out = T(t).item<double>();)
}

// ---- info -----------------------------------------------------------------------------

extern "C" int dt_ndim(dt_tensor t) { return t ? static_cast<int>(t->t.dim()) : 0; }
extern "C" int64_t dt_numel(dt_tensor t) { return t ? t->t.numel() : 0; }
extern "C" dt_dtype dt_dtype_of(dt_tensor t) { return t ? from_scalar(t->t.scalar_type()) : static_cast<dt_dtype>(-1); }

extern "C" dt_device dt_device_of(dt_tensor t) {
    dt_device d = {DT_CPU, 0};
    if (t && t->t.device().is_cuda()) {
        d.type = DT_CUDA;
        d.index = t->t.device().has_index() ? t->t.device().index() : 0;
    }
    return d;
}

extern "C" int dt_requires_grad(dt_tensor t) { return t && t->t.requires_grad() ? 1 : 0; }
extern "C" int64_t dt_version(dt_tensor t) {
    if (!t) return -1;
    try {
        return static_cast<int64_t>(t->t._version());
    } catch (...) {   // a tensor without a version counter (made in inference mode)
        return -1;
    }
}

extern "C" drdc_status dt_size(int64_t *out, dt_tensor t, int dim) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "dt_size: out is NULL");
    PROTECT(*out = T(t).size(dim);)
}

extern "C" drdc_status dt_shape(int64_t *out, int cap, dt_tensor t) {
    SHIM_TRY {
        const at::Tensor &x = T(t);
        if (x.dim() > cap)
            input_error("tensor has " + std::to_string(x.dim()) + " dims but cap is " + std::to_string(cap));
        if (x.dim() > 0 && !out) input_error("out is NULL");
        for (int64_t i = 0; i < x.dim(); i++) out[i] = x.size(i);
    }
    SHIM_CATCH
}

// ---- moves ----------------------------------------------------------------------------

extern "C" drdc_status dt_to_device(dt_tensor *out, dt_tensor t, dt_device dev) { TENSOR_OP(T(t).to(to_device(dev))) }
extern "C" drdc_status dt_to_dtype(dt_tensor *out, dt_tensor t, dt_dtype dtype) { TENSOR_OP(T(t).to(to_scalar(dtype))) }
extern "C" drdc_status dt_contiguous(dt_tensor *out, dt_tensor t) { TENSOR_OP(T(t).contiguous()) }
extern "C" drdc_status dt_to_memory_format(dt_tensor *out, dt_tensor t, int channels_last) {
    TENSOR_OP(([&] {
        const at::Tensor &x = T(t);
        if (channels_last && x.dim() != 4) input_error("channels-last needs a 4-D tensor, got " + shape_str(x));
        return x.contiguous(channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
    }()))
}
extern "C" int dt_is_channels_last(dt_tensor t) {
    return t && t->t.dim() == 4 && t->t.is_contiguous(at::MemoryFormat::ChannelsLast) ? 1 : 0;
}
extern "C" drdc_status dt_empty_like(dt_tensor *out, dt_tensor t) { TENSOR_OP(at::empty_like(T(t))) }
extern "C" drdc_status dt_host_data(void **out, dt_tensor t) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "%s: out is NULL", __func__);
    *out = nullptr;
    SHIM_TRY {
        const at::Tensor &x = T(t);
        if (!x.is_cpu()) input_error("host data of a tensor on " + x.device().str());
        if (!x.is_contiguous() && !dt_is_channels_last(t))
            input_error("host data of a tensor " + shape_str(x) + " that is not dense (contiguous or channels-last)");
        *out = x.data_ptr();
    }
    SHIM_CATCH
}
extern "C" drdc_status dt_parallel_for(int64_t begin, int64_t end, int64_t grain, dt_range_fn fn, void *ctx) {
    if (!fn) return drdc_fail(DRDC_ERR_INPUT, "%s: fn is NULL", __func__);
    SHIM_TRY { at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { fn(ctx, b, e); }); }
    SHIM_CATCH
}
// The calling thread's OpenMP team size (its nthreads ICV, which libtorch's parallel_for and
// oneDNN read); libtorch first gives a new thread the process-wide count (its lazy init, run by
// get_num_threads), so that comes first. Through dlsym: a libtorch without OpenMP has no such call,
// and then the count stays as it is. Returns the previous count (0: not available).
static int omp_threads_here(int n) {
    using set_fn = void (*)(int);
    static const auto set = reinterpret_cast<set_fn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
    const int prev = at::get_num_threads();
    if (!set) return 0;
    if (n != prev) set(n);
    return prev;
}

// The threads of dt_run_concurrently: started on first use and kept, because libtorch's first
// parallel call on a new thread re-creates its global pthreadpool (at::set_num_threads from the
// thread's lazy init): with a new thread per U-Net call that was a tenth of the process's samples
// (perf). One call uses the pool at a time (busy); a call that finds it busy (another thread's, or
// a task's own nested call) starts threads of its own instead. After fork the child starts a new
// pool (the parent's threads are not there). Workers and pool are never freed: detached threads
// wait on them until the process exits.
namespace {
struct PoolWorker {
    std::mutex mu;
    std::condition_variable cv;
    std::function<void()> job;
    bool pending = false;
};

struct TaskPool {
    pid_t pid = getpid();
    std::mutex busy;
    std::mutex grow;
    std::vector<PoolWorker *> workers;

    static void loop(PoolWorker *w) {
        for (;;) {
            std::unique_lock<std::mutex> lock(w->mu);
            w->cv.wait(lock, [w] { return w->pending; });
            std::function<void()> job = std::move(w->job);
            w->job = nullptr;
            lock.unlock();
            job();   // never throws: the task catches
            lock.lock();
            w->pending = false;
            w->cv.notify_all();
        }
    }
    PoolWorker *worker(size_t i) {
        std::lock_guard<std::mutex> lock(grow);
        while (workers.size() <= i) {
            auto *w = new PoolWorker;
            std::thread(loop, w).detach();
            workers.push_back(w);
        }
        return workers[i];
    }
};

TaskPool *task_pool() {
    static std::atomic<TaskPool *> pool{nullptr};
    TaskPool *p = pool.load();
    if (!p || p->pid != getpid()) {   // first use, or a forked child: a new pool (the old one leaks)
        static std::mutex make;
        std::lock_guard<std::mutex> lock(make);
        p = pool.load();
        if (!p || p->pid != getpid()) {
            p = new TaskPool;
            pool.store(p);
        }
    }
    return p;
}
}  // namespace

extern "C" drdc_status dt_run_concurrently(int n, int threads_each, dt_task_fn fn, void *ctx) {
    if (!fn || n < 1 || threads_each < 1)
        return drdc_fail(DRDC_ERR_INPUT, "%s: need fn, n >= 1 and threads_each >= 1 (n %d, threads_each %d)", __func__,
                         n, threads_each);
    std::vector<drdc_status> st(static_cast<size_t>(n), DRDC_OK);
    std::vector<std::string> msg(static_cast<size_t>(n));
    std::vector<std::thread> own;        // threads of this call alone (the pool was busy)
    std::vector<PoolWorker *> lent;      // pool workers given a task
    TaskPool *pool = nullptr;
    std::unique_lock<std::mutex> busy;
    int prev = 0;
    std::unique_ptr<at::ThreadLocalState> state;   // outlives every task (they are waited for below)
    try {
        state.reset(new at::ThreadLocalState());   // the caller's autograd and autocast state, for every task
        const at::ThreadLocalState *tls = state.get();
        auto task = [&st, &msg, tls, fn, ctx, threads_each](int i) {
            try {
                at::ThreadLocalStateGuard guard(*tls);
                if (i) omp_threads_here(threads_each);
                st[i] = fn(ctx, i);
                if (st[i]) msg[i] = drdc_last_error();
                if (i) at::autocast::clear_cache();   // a pool thread keeps no casts of the weights
            } catch (...) {
                st[i] = dt_shim::fail_current("dt_run_concurrently task");
                msg[i] = drdc_last_error();
            }
        };
        prev = omp_threads_here(threads_each);
        if (n > 1) {
            pool = task_pool();
            busy = std::unique_lock<std::mutex>(pool->busy, std::try_to_lock);
        }
        for (int i = 1; i < n; i++) {
            if (busy.owns_lock()) {
                PoolWorker *w = pool->worker(static_cast<size_t>(i - 1));
                std::lock_guard<std::mutex> lock(w->mu);
                w->job = [task, i] { task(i); };
                w->pending = true;
                lent.push_back(w);
                w->cv.notify_all();
            } else {
                own.emplace_back(task, i);
            }
        }
        task(0);
    } catch (...) {
        st[0] = dt_shim::fail_current(__func__);
        msg[0] = drdc_last_error();
    }
    for (PoolWorker *w : lent) {   // every task handed out, also after a failure
        std::unique_lock<std::mutex> lock(w->mu);
        w->cv.wait(lock, [w] { return !w->pending; });
    }
    for (auto &t : own) t.join();
    if (busy.owns_lock()) busy.unlock();
    if (prev) omp_threads_here(prev);
    for (int i = 0; i < n; i++)
        if (st[i]) return drdc_fail(st[i], "%s", msg[i].c_str());   // the first failure, on the caller's thread
    return DRDC_OK;
}
extern "C" drdc_status dt_clone(dt_tensor *out, dt_tensor t) { TENSOR_OP(T(t).clone()) }
extern "C" drdc_status dt_detach(dt_tensor *out, dt_tensor t) { TENSOR_OP(T(t).detach()) }
extern "C" drdc_status dt_copy_(dt_tensor dst, dt_tensor src) { PROTECT(T(dst).copy_(T(src));) }

// ---- arithmetic -----------------------------------------------------------------------

extern "C" drdc_status dt_add(dt_tensor *out, dt_tensor a, dt_tensor b) { TENSOR_OP(at::add(T(a), T(b))) }
extern "C" drdc_status dt_sub(dt_tensor *out, dt_tensor a, dt_tensor b) { TENSOR_OP(at::sub(T(a), T(b))) }
extern "C" drdc_status dt_mul(dt_tensor *out, dt_tensor a, dt_tensor b) { TENSOR_OP(at::mul(T(a), T(b))) }
extern "C" drdc_status dt_div(dt_tensor *out, dt_tensor a, dt_tensor b) { TENSOR_OP(at::div(T(a), T(b))) }
extern "C" drdc_status dt_add_scalar(dt_tensor *out, dt_tensor a, double s) { TENSOR_OP(at::add(T(a), at::Scalar(s))) }
extern "C" drdc_status dt_mul_scalar(dt_tensor *out, dt_tensor a, double s) { TENSOR_OP(at::mul(T(a), at::Scalar(s))) }
extern "C" drdc_status dt_sqrt(dt_tensor *out, dt_tensor a) { TENSOR_OP(at::sqrt(T(a))) }
extern "C" drdc_status dt_exp(dt_tensor *out, dt_tensor a) { TENSOR_OP(at::exp(T(a))) }
extern "C" drdc_status dt_neg(dt_tensor *out, dt_tensor a) { TENSOR_OP(at::neg(T(a))) }
extern "C" drdc_status dt_square(dt_tensor *out, dt_tensor a) { TENSOR_OP(at::square(T(a))) }

extern "C" drdc_status dt_clamp(dt_tensor *out, dt_tensor a, double min, double max) {
    TENSOR_OP(([&] {
        c10::optional<at::Scalar> lo, hi;
        if (!std::isinf(min) || min > 0) lo = at::Scalar(min);
        if (!std::isinf(max) || max < 0) hi = at::Scalar(max);
        if (!lo && !hi) return T(a).clone();
        return at::clamp(T(a), lo, hi);
    }()))
}

extern "C" drdc_status dt_addcmul(dt_tensor *out, dt_tensor a, dt_tensor b, dt_tensor c) {
    TENSOR_OP(at::addcmul(T(a), T(b), T(c)))
}

extern "C" drdc_status dt_add_(dt_tensor dst, dt_tensor src, double alpha) {
    PROTECT(T(dst).add_(T(src), at::Scalar(alpha));)
}
extern "C" drdc_status dt_lerp_(dt_tensor dst, dt_tensor end, double weight) {
    PROTECT(T(dst).lerp_(T(end), at::Scalar(weight));)
}

// ---- reductions -----------------------------------------------------------------------

namespace {
at::IntArrayRef dims_arg(const int64_t *dims, int n) {
    if (n < 1) input_error("need at least one dim (use the *_all variant to reduce everything)");
    return ints(dims, n, "dims");
}
}  // namespace

extern "C" drdc_status dt_sum(dt_tensor *out, dt_tensor x, const int64_t *dims, int ndims, int keepdim) {
    TENSOR_OP(at::sum(T(x), dims_arg(dims, ndims), keepdim != 0))
}
extern "C" drdc_status dt_mean(dt_tensor *out, dt_tensor x, const int64_t *dims, int ndims, int keepdim) {
    TENSOR_OP(at::mean(T(x), dims_arg(dims, ndims), keepdim != 0))
}
extern "C" drdc_status dt_sum_all(dt_tensor *out, dt_tensor x) { TENSOR_OP(at::sum(T(x))) }
extern "C" drdc_status dt_mean_all(dt_tensor *out, dt_tensor x) { TENSOR_OP(at::mean(T(x))) }
extern "C" drdc_status dt_max_all(dt_tensor *out, dt_tensor x) { TENSOR_OP(at::max(T(x))) }
extern "C" drdc_status dt_min_all(dt_tensor *out, dt_tensor x) { TENSOR_OP(at::min(T(x))) }
extern "C" drdc_status dt_amax(dt_tensor *out, dt_tensor x, const int64_t *dims, int ndims, int keepdim) {
    TENSOR_OP(at::amax(T(x), dims_arg(dims, ndims), keepdim != 0))
}
// libtorch 1.13's CPU linalg_vector_norm over a short dim (RGB, 3) runs a scalar loop per output:
// 59 ms for [20,3,128,128] where sqrt(sum(x * x)) takes 0.4 (and 0.33 against 0.04 ms over 272
// channels). Same value to the last bits in float and double; the gradient keeps linalg's
// (sqrt's is infinite at a zero vector), and reduced types keep its float accumulation of squares.
extern "C" drdc_status dt_norm2(dt_tensor *out, dt_tensor x, int64_t dim, int keepdim) {
    TENSOR_OP(
        (T(x).requires_grad() || !(T(x).scalar_type() == at::kFloat || T(x).scalar_type() == at::kDouble))
            ? at::linalg_vector_norm(T(x), at::Scalar(2.0), at::IntArrayRef(&dim, 1), keepdim != 0, c10::nullopt)
            : at::sqrt(at::sum(T(x) * T(x), at::IntArrayRef(&dim, 1), keepdim != 0)))
}

// ---- nn -------------------------------------------------------------------------------

namespace {
bool cpu_autocast_on() {
#if DT_AUTOCAST_BY_DEVICE
    return at::autocast::is_autocast_enabled(at::kCPU);
#else
    return at::autocast::is_cpu_enabled();
#endif
}

// at::conv2d sends small-batch 1x1 (and some small 3x3) float convolutions on one thread to its own
// im2col + GEMM path, which copies a channels-last input back and forth: measured 2.2x slower than
// oneDNN on the U-Net's 1x1 convs. A channels-last float32 CPU input without autograd and without
// autocast (bf16 autocast routes at::conv2d to oneDNN anyway) goes straight to oneDNN.
bool direct_onednn(const at::Tensor &x, int64_t groups) {
#if AT_MKLDNN_ENABLED()
    return groups == 1 && x.dim() == 4 && x.is_cpu() && x.scalar_type() == at::kFloat &&
           x.is_contiguous(at::MemoryFormat::ChannelsLast) && !at::GradMode::is_enabled() &&
           !cpu_autocast_on() && at::globalContext().userEnabledMkldnn();
#else
    (void)x, (void)groups;
    return false;
#endif
}

// Norms compute in float32: an input that autocast left in bf16 (or f16) is normalised in the
// weights' dtype (float32, or float32 itself without weights), as CUDA autocast does for group_norm
// and layer_norm.
at::Tensor like_weight(const at::Tensor &x, const c10::optional<at::Tensor> &w) {
    const at::ScalarType s = x.scalar_type();
    if (w && w->defined()) return s != w->scalar_type() && at::isFloatingType(s) ? x.to(w->scalar_type()) : x;
    return s == at::kBFloat16 || s == at::kHalf ? x.to(at::kFloat) : x;
}
}  // namespace


extern "C" drdc_status dt_conv2d(dt_tensor *out, dt_tensor x, dt_tensor w, dt_tensor b, int64_t stride_h,
                                 int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w,
                                 int64_t groups) {
    const int64_t stride[2] = {stride_h, stride_w}, pad[2] = {pad_h, pad_w}, dil[2] = {dil_h, dil_w};
    TENSOR_OP(([&] {
        const at::Tensor &xt = T(x), &wt = T(w);
        at::Tensor r = direct_onednn(xt, groups)
                           ? at::mkldnn_convolution(xt, wt, opt(b), at::IntArrayRef(pad, 2), at::IntArrayRef(stride, 2),
                                                    at::IntArrayRef(dil, 2), groups)
                           : at::conv2d(xt, wt, opt(b), at::IntArrayRef(stride, 2), at::IntArrayRef(pad, 2),
                                        at::IntArrayRef(dil, 2), groups);
        count_flops(r, wt.size(1) * wt.size(2) * wt.size(3));   // (Cin/groups) * kh * kw per output
        return r;
    }()))
}

extern "C" drdc_status dt_constant_pad_nd(dt_tensor *out, dt_tensor x, int64_t left, int64_t right, int64_t top,
                                          int64_t bottom, double value) {
    const int64_t pad[4] = {left, right, top, bottom};
    TENSOR_OP(at::constant_pad_nd(T(x), at::IntArrayRef(pad, 4), at::Scalar(value)))
}

extern "C" drdc_status dt_linear(dt_tensor *out, dt_tensor x, dt_tensor w, dt_tensor b) {
    TENSOR_OP(([&] {
        const at::Tensor &wt = T(w);
        at::Tensor r = at::linear(T(x), wt, opt(b));
        count_flops(r, wt.size(-1));
        return r;
    }()))
}
extern "C" drdc_status dt_bmm(dt_tensor *out, dt_tensor a, dt_tensor b) {
    TENSOR_OP(([&] {
        const at::Tensor &at_ = T(a);
        at::Tensor r = at::bmm(at_, T(b));
        count_flops(r, at_.size(-1));
        return r;
    }()))
}
extern "C" drdc_status dt_softmax(dt_tensor *out, dt_tensor x, int64_t dim) {
    TENSOR_OP(at::softmax(T(x), dim, c10::nullopt))
}

extern "C" drdc_status dt_layer_norm(dt_tensor *out, dt_tensor x, int n_norm_dims, dt_tensor w, dt_tensor b,
                                     double eps) {
    TENSOR_OP(([&] {
        const at::Tensor &xt = T(x);
        if (n_norm_dims < 1 || n_norm_dims > xt.dim())
            input_error("n_norm_dims " + std::to_string(n_norm_dims) + " out of range for input " + shape_str(xt));
        at::IntArrayRef shape = xt.sizes().slice(static_cast<size_t>(xt.dim() - n_norm_dims));
        return at::layer_norm(like_weight(xt, opt(w)), shape, opt(w), opt(b), eps, true);
    }()))
}

extern "C" drdc_status dt_group_norm(dt_tensor *out, dt_tensor x, int64_t groups, dt_tensor w, dt_tensor b,
                                     double eps) {
    TENSOR_OP(at::group_norm(like_weight(T(x), opt(w)), groups, opt(w), opt(b), eps, true))
}

extern "C" drdc_status dt_batch_norm_eval(dt_tensor *out, dt_tensor x, dt_tensor running_mean, dt_tensor running_var,
                                          dt_tensor w, dt_tensor b, double eps) {
    TENSOR_OP(at::batch_norm(like_weight(T(x), c10::optional<at::Tensor>(T(running_mean))), opt(w), opt(b),
                             c10::optional<at::Tensor>(T(running_mean)),
                             c10::optional<at::Tensor>(T(running_var)), /*training=*/false, /*momentum=*/0.1, eps,
                             true))
}

extern "C" drdc_status dt_relu(dt_tensor *out, dt_tensor x) { TENSOR_OP(at::relu(T(x))) }
extern "C" drdc_status dt_relu6(dt_tensor *out, dt_tensor x) {
    TENSOR_OP(at::hardtanh(T(x), at::Scalar(0.0), at::Scalar(6.0)))
}
extern "C" drdc_status dt_silu(dt_tensor *out, dt_tensor x) { TENSOR_OP(at::silu(T(x))) }
extern "C" drdc_status dt_sigmoid(dt_tensor *out, dt_tensor x) { TENSOR_OP(at::sigmoid(T(x))) }
extern "C" drdc_status dt_tanh(dt_tensor *out, dt_tensor x) { TENSOR_OP(at::tanh(T(x))) }

extern "C" drdc_status dt_dropout(dt_tensor *out, dt_tensor x, double p, int training, dt_generator g) {
    TENSOR_OP(([&] {
        const at::Tensor &xt = T(x);
        if (!(p >= 0.0 && p <= 1.0)) input_error("dropout probability " + std::to_string(p) + " not in [0, 1]");
        if (!training || p == 0.0) return xt;
        if (p == 1.0) return xt * at::zeros({}, xt.options());
        // as torch's native dropout: noise = bernoulli(1 - p) / (1 - p); out = x * noise
        at::Tensor noise = draw_rows(g, xt.sizes(), [&](at::IntArrayRef s, at::Generator gen) {
            at::Tensor z = at::empty(s, at::TensorOptions().dtype(at::kFloat));
            return z.bernoulli_(1.0 - p, gen);
        });
        noise.div_(1.0 - p);
        return xt * noise.to(xt.device(), xt.scalar_type());
    }()))
}

extern "C" drdc_status dt_avg_pool2d(dt_tensor *out, dt_tensor x, int64_t kernel, int64_t stride, int64_t pad,
                                     int count_include_pad) {
    const int64_t k[2] = {kernel, kernel}, s[2] = {stride, stride}, p[2] = {pad, pad};
    TENSOR_OP(at::avg_pool2d(T(x), at::IntArrayRef(k, 2), at::IntArrayRef(s, 2), at::IntArrayRef(p, 2), false,
                             count_include_pad != 0, c10::nullopt))
}

extern "C" drdc_status dt_adaptive_avg_pool2d(dt_tensor *out, dt_tensor x, int64_t out_h, int64_t out_w) {
    const int64_t o[2] = {out_h, out_w};
    TENSOR_OP(at::adaptive_avg_pool2d(T(x), at::IntArrayRef(o, 2)))
}

// As F.interpolate(x, size=(out_h, out_w), mode=...) with no scale_factor: scales come from sizes.
extern "C" drdc_status dt_interpolate(dt_tensor *out, dt_tensor x, int64_t out_h, int64_t out_w, int mode) {
    const int64_t o[2] = {out_h, out_w};
    TENSOR_OP(([&] {
        const at::Tensor &xt = T(x);
        if (xt.dim() != 4) input_error("expected a 4-D input [N,C,H,W], got " + shape_str(xt));
        at::IntArrayRef size(o, 2);
        switch (mode) {
            case DT_INTERP_NEAREST:
                return at::upsample_nearest2d(xt, size);
            case DT_INTERP_BILINEAR:
                return at::upsample_bilinear2d(xt, size, false);
            case DT_INTERP_BILINEAR_AC:
                return at::upsample_bilinear2d(xt, size, true);
            case DT_INTERP_AREA:
                return at::adaptive_avg_pool2d(xt, size);
        }
        input_error("unknown interpolation mode " + std::to_string(mode));
    }()))
}

extern "C" drdc_status dt_mse_loss(dt_tensor *out, dt_tensor a, dt_tensor b) {
    TENSOR_OP(at::mse_loss(T(a), T(b), at::Reduction::Mean))
}

// ---- shape ----------------------------------------------------------------------------

std::vector<at::Tensor> dt_shim::tensor_list(const dt_tensor *ts, int n) {
    if (n < 1 || !ts) input_error("need a non-empty tensor list");
    std::vector<at::Tensor> v;
    v.reserve(static_cast<size_t>(n));
    for (int i = 0; i < n; i++) {
        if (!ts[i]) input_error("tensor list entry " + std::to_string(i) + " is NULL");
        v.push_back(ts[i]->t);
    }
    return v;
}

extern "C" drdc_status dt_cat(dt_tensor *out, const dt_tensor *ts, int n, int64_t dim) {
    TENSOR_OP(([&] {
        std::vector<at::Tensor> v = tensor_list(ts, n);
        return at::cat(at::TensorList(v), dim);
    }()))
}
extern "C" drdc_status dt_stack(dt_tensor *out, const dt_tensor *ts, int n, int64_t dim) {
    TENSOR_OP(([&] {
        std::vector<at::Tensor> v = tensor_list(ts, n);
        return at::stack(at::TensorList(v), dim);
    }()))
}
extern "C" drdc_status dt_narrow(dt_tensor *out, dt_tensor x, int64_t dim, int64_t start, int64_t length) {
    TENSOR_OP(T(x).narrow(dim, start, length))
}
extern "C" drdc_status dt_index_select(dt_tensor *out, dt_tensor x, int64_t dim, dt_tensor index) {
    TENSOR_OP(at::index_select(T(x), dim, T(index)))
}
extern "C" drdc_status dt_reshape(dt_tensor *out, dt_tensor x, const int64_t *shape, int ndim) {
    TENSOR_OP(T(x).reshape(ints(shape, ndim, "shape")))
}
extern "C" drdc_status dt_permute(dt_tensor *out, dt_tensor x, const int64_t *dims, int ndim) {
    TENSOR_OP(T(x).permute(ints(dims, ndim, "dims")))
}
extern "C" drdc_status dt_transpose(dt_tensor *out, dt_tensor x, int64_t dim0, int64_t dim1) {
    TENSOR_OP(T(x).transpose(dim0, dim1))
}
extern "C" drdc_status dt_unsqueeze(dt_tensor *out, dt_tensor x, int64_t dim) { TENSOR_OP(T(x).unsqueeze(dim)) }
extern "C" drdc_status dt_squeeze(dt_tensor *out, dt_tensor x, int64_t dim) { TENSOR_OP(T(x).squeeze(dim)) }
extern "C" drdc_status dt_expand(dt_tensor *out, dt_tensor x, const int64_t *shape, int ndim) {
    TENSOR_OP(T(x).expand(ints(shape, ndim, "shape")))
}

void dt_shim::set_pair(dt_tensor *a_out, at::Tensor a, dt_tensor *b_out, at::Tensor b) {
    dt_tensor ha = nullptr;
    if (a_out) ha = wrap(std::move(a));
    if (b_out) {
        try {
            *b_out = wrap(std::move(b));
        } catch (...) {
            dt_free(ha);
            throw;
        }
    }
    if (a_out) *a_out = ha;
}

extern "C" drdc_status dt_topk(dt_tensor *values, dt_tensor *indices, dt_tensor x, int64_t k, int64_t dim,
                               int largest) {
    if (values) *values = nullptr;
    if (indices) *indices = nullptr;
    SHIM_TRY {
        auto r = at::topk(T(x), k, dim, largest != 0, true);
        set_pair(values, std::get<0>(r), indices, std::get<1>(r));
    }
    SHIM_CATCH
}

// ---- autograd -------------------------------------------------------------------------

extern "C" drdc_status dt_set_requires_grad(dt_tensor t, int requires_grad) {
    PROTECT(T(t).set_requires_grad(requires_grad != 0);)
}
extern "C" drdc_status dt_backward(dt_tensor loss) { PROTECT(T(loss).backward();) }

extern "C" drdc_status dt_grad(dt_tensor *out, dt_tensor t) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "dt_grad: out is NULL");
    *out = nullptr;
    PROTECT(const at::Tensor &g = T(t).grad(); if (g.defined()) *out = wrap(g);)
}

extern "C" drdc_status dt_zero_grad(const dt_tensor *params, int n) {
    SHIM_TRY {
        if (n > 0 && !params) input_error("params is NULL");
        for (int i = 0; i < n; i++) {
            if (!params[i]) input_error("param " + std::to_string(i) + " is NULL");
            params[i]->t.mutable_grad().reset();
        }
    }
    SHIM_CATCH
}

extern "C" drdc_status dt_set_grad(dt_tensor t, dt_tensor grad) {
    SHIM_TRY {
        const at::Tensor &p = T(t), &g = T(grad);
        if (g.numel() != p.numel())
            input_error("grad " + shape_str(g) + " does not fit the tensor " + shape_str(p));
        at::NoGradGuard no_grad;
        p.mutable_grad() = g.detach().reshape(p.sizes()).to(p.device(), p.scalar_type()).clone();
    }
    SHIM_CATCH
}

extern "C" int dt_set_grad_enabled(int enabled) {
    bool prev = at::GradMode::is_enabled();
    at::GradMode::set_enabled(enabled != 0);
    return prev ? 1 : 0;
}
extern "C" int dt_is_grad_enabled(void) { return at::GradMode::is_enabled() ? 1 : 0; }

// ---- system ---------------------------------------------------------------------------

extern "C" int dt_set_blas_threads(int n) {
    using set_fn = void (*)(int);
    using get_fn = int (*)(void);
    auto set = reinterpret_cast<set_fn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    auto get = reinterpret_cast<get_fn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    if (!set || !get || n < 1) return 0;
    int prev = get();
    if (prev != n) set(n);
    return prev;
}

extern "C" drdc_status dt_set_num_threads(int n) {
    if (n < 1) return drdc_fail(DRDC_ERR_INPUT, "dt_set_num_threads: need n >= 1, got %d", n);
    // Debian's BLAS is OpenBLAS with its own thread pool (all cores by default, busy-waiting with
    // sched_yield between calls): give it the same count when it is the BLAS linked in.
    PROTECT(at::set_num_threads(n); dt_set_blas_threads(n);)
}
extern "C" int dt_get_num_threads(void) { return at::get_num_threads(); }

extern "C" drdc_status dt_synchronize(dt_device dev) {
    SHIM_TRY {
        if (dev.type == DT_CUDA)
            torch::cuda::synchronize(to_device(dev).index());
        else if (dev.type != DT_CPU)
            input_error("unknown device type " + std::to_string(dev.type));
    }
    SHIM_CATCH
}

extern "C" const char *dt_torch_version(void) {
#if defined(TORCH_VERSION)
    return TORCH_VERSION;
#elif defined(TORCH_VERSION_MAJOR)
#define DT_STR2(x) #x
#define DT_STR(x) DT_STR2(x)
    return DT_STR(TORCH_VERSION_MAJOR) "." DT_STR(TORCH_VERSION_MINOR) "." DT_STR(TORCH_VERSION_PATCH);
#else
    return "unknown";
#endif
}

extern "C" drdc_status dt_cuda_memory(int64_t *peak_bytes, dt_device dev) {
    if (!peak_bytes) return drdc_fail(DRDC_ERR_INPUT, "dt_cuda_memory: out is NULL");
    *peak_bytes = 0;
    if (dev.type != DT_CUDA) return DRDC_OK;
#ifdef DRDC_HAVE_CUDA_ALLOCATOR
    SHIM_TRY {
        auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(to_device(dev).index());
        *peak_bytes = static_cast<int64_t>(stats.allocated_bytes[0].peak);
    }
    SHIM_CATCH  // [0] = StatType::AGGREGATE
#else
    return DRDC_OK;
#endif
}

extern "C" drdc_status dt_autocast_bf16(int on) {
    SHIM_TRY {
#if DT_AUTOCAST_BY_DEVICE
        at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
        at::autocast::set_autocast_enabled(at::kCUDA, on != 0);
#else
        at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
        at::autocast::set_enabled(on != 0);
#endif
        at::autocast::set_autocast_cache_enabled(false);
        if (!on) at::autocast::clear_cache();
    }
    SHIM_CATCH
}

extern "C" int dt_cpu_autocast_enabled(void) { return cpu_autocast_on() ? 1 : 0; }

extern "C" drdc_status dt_autocast_inference(dt_device dev, int on) {
    SHIM_TRY {
        if (dev.type != DT_CPU && dev.type != DT_CUDA) input_error("unknown device type " + std::to_string(dev.type));
        const bool cuda = dev.type == DT_CUDA;
#if DT_AUTOCAST_BY_DEVICE
        const at::DeviceType t = cuda ? at::kCUDA : at::kCPU;
        at::autocast::set_autocast_dtype(t, at::kBFloat16);
        at::autocast::set_autocast_enabled(t, on != 0);
#else
        if (cuda) {
            at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
            at::autocast::set_enabled(on != 0);
        } else {
            at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
            at::autocast::set_cpu_enabled(on != 0);
        }
#endif
        // inference: no weight changes while it is on, so each weight is cast once per pass
        at::autocast::set_autocast_cache_enabled(on != 0);
        if (!on) at::autocast::clear_cache();
    }
    SHIM_CATCH
}