// internal.hpp: what the shim's C++ files share (not part of the C API): the handle structs, the
// error helpers and the macros that turn C++ exceptions into a drdc_status with a message.
#ifndef DRDC_SHIM_INTERNAL_HPP
#define DRDC_SHIM_INTERNAL_HPP

#include "drdc/shim/shim.h"

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace dt_shim {
struct Scope;
}

struct dt_tensor_s {
    at::Tensor t;
    dt_shim::Scope *scope = nullptr;  // the scope that records this handle, or none
    size_t slot = 0;                  // index in scope->items
};

struct dt_generator_s {
    at::Generator gen;                  // a single generator (undefined in a row generator)
    std::vector<dt_generator_s> rows;   // a row generator: one single generator per group of rows
};

namespace dt_shim {
// Called inside a catch block: classifies the exception in flight into a status and message.
drdc_status fail_current(const char *fn);
// A bad argument found by the shim itself (-> DRDC_ERR_INPUT).
[[noreturn]] void input_error(const std::string &m);
// The tensor of a handle; a NULL handle is an input error naming the argument.
const at::Tensor &arg(dt_tensor h, const char *name);
// "[2, 3]"
std::string shape_str(const at::Tensor &t);
// The tensors of n handles (none NULL, n >= 1).
std::vector<at::Tensor> tensor_list(const dt_tensor *ts, int n);
// Writes up to two results as new handles (either output may be NULL); on failure nothing is left.
void set_pair(dt_tensor *a_out, at::Tensor a, dt_tensor *b_out, at::Tensor b);
}  // namespace dt_shim

#define T(h) dt_shim::arg((h), #h)

// Runs `body` (which sets the outputs) and converts exceptions; for functions returning status.
#define PROTECT(...)                            \
    try {                                       \
        __VA_ARGS__                             \
    } catch (...) {                             \
        return dt_shim::fail_current(__func__); \
    }                                           \
    return DRDC_OK;

// SHIM_TRY { body } SHIM_CATCH: the same for longer bodies.
#define SHIM_TRY try
#define SHIM_CATCH                              \
    catch (...) {                               \
        return dt_shim::fail_current(__func__); \
    }                                           \
    return DRDC_OK;

#endif
