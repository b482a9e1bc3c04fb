// dist.cpp: the process group of include/drdc/shim/dist.h over c10d: a TCPStore (optionally
// under a PrefixStore), ProcessGroupGloo (CPU) or ProcessGroupNCCL (CUDA, when compiled in), and
// four collectives. Compiled against c10d only when CMake found its headers (DRDC_WITH_C10D);
// otherwise the same functions exist and refuse more than one rank.
//
// API differences handled: in libtorch 1.13 the backends derive from c10d::ProcessGroup, in 2.x
// from c10d::Backend (same allreduce/broadcast/barrier signatures); the 2.x headers compile
// ProcessGroupGloo.hpp only under USE_C10D_GLOO (CMake defines it, and USE_C10D_NCCL with NCCL).
// Everything else used here (TCPStoreOptions' port/isServer/numWorkers/waitWorkers/timeout,
// TCPStore::getPort, PrefixStore, Options::create(timeout), createDeviceForHostname /
// createDeviceForInterface / createDefaultDevice, Work::wait) is the same in both.
#include "drdc/shim/dist.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if __has_include(<torch/version.h>)
#include <torch/version.h>
#endif

#ifdef DRDC_WITH_C10D
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef DRDC_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#endif

#include "internal.hpp"   // after the c10d headers: its T() macro would clash with their templates

using dt_shim::input_error;

#ifdef DRDC_WITH_C10D

namespace {

#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
using GroupBase = c10d::Backend;
#else
using GroupBase = c10d::ProcessGroup;
#endif

struct DistState {
    c10::intrusive_ptr<c10d::Store> store;
    c10::intrusive_ptr<GroupBase> group;
    int rank = 0, world = 1;
    const char *backend = "none";
};
DistState g_dist;

std::chrono::milliseconds to_ms(double seconds) {
    if (!(seconds > 0) || seconds > 1e7) input_error("timeout " + std::to_string(seconds) + " s out of range");
    return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0 + 0.5));
}

// The Gloo device: GLOO_SOCKET_IFNAME as torch.distributed reads it, the loopback address for a
// store on this machine, else this machine's hostname (loopback when it does not resolve).
std::shared_ptr<::gloo::transport::Device> gloo_device(const std::string &addr) {
    const char *ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifname && *ifname) return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
    if (addr == "localhost" || addr.rfind("127.", 0) == 0) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
    return c10d::ProcessGroupGloo::createDefaultDevice();
}

const at::Tensor &flat_f32(dt_tensor h, const char *what) {
    const at::Tensor &t = dt_shim::arg(h, what);
    if (t.scalar_type() != at::kFloat || t.dim() != 1 || !t.is_contiguous())
        input_error(std::string(what) + " must be a contiguous 1-D f32 tensor, got " + dt_shim::shape_str(t) + " of " +
                    std::string(c10::toString(t.scalar_type())));
    return t;
}

}  // namespace

extern "C" int dt_dist_compiled(void) { return 1; }
#ifdef DRDC_WITH_NCCL
extern "C" int dt_dist_nccl_compiled(void) { return 1; }
#else
extern "C" int dt_dist_nccl_compiled(void) { return 0; }
#endif

extern "C" drdc_status dt_dist_init(const dt_dist_options *o) {
    if (!o) return drdc_fail(DRDC_ERR_INPUT, "dt_dist_init: options are NULL");
    if (o->world < 1 || o->rank < 0 || o->rank >= o->world)
        return drdc_fail(DRDC_ERR_INPUT, "dt_dist_init: rank %d is not in [0, world %d)", o->rank, o->world);
    if (g_dist.group) return drdc_fail(DRDC_ERR_STATE, "dt_dist_init: this process already joined a group");
    if (o->world == 1) return DRDC_OK;
    if (!o->addr || !*o->addr || o->port < 1 || o->port > 65535)
        return drdc_fail(DRDC_ERR_INPUT, "dt_dist_init: store address '%s', port %d", o->addr ? o->addr : "", o->port);
    SHIM_TRY {
        const std::chrono::milliseconds timeout = to_ms(o->timeout_s);
        c10d::TCPStoreOptions so;
        so.port = static_cast<std::uint16_t>(o->port);
        so.isServer = !o->store_client && o->rank == 0;
        so.numWorkers = static_cast<std::size_t>(o->world);
        so.waitWorkers = false;   // the group's rendezvous waits for every rank, with the timeout
        so.timeout = timeout;
        c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(std::string(o->addr), so);
        if (o->prefix && *o->prefix) store = c10::make_intrusive<c10d::PrefixStore>(std::string(o->prefix), store);
        c10::intrusive_ptr<GroupBase> group;
        const char *backend = "gloo";
#ifdef DRDC_WITH_NCCL
        if (o->device.type == DT_CUDA) {
            c10::cuda::set_device(static_cast<c10::DeviceIndex>(o->device.index));
            auto opts = c10d::ProcessGroupNCCL::Options::create();
            opts->timeout = timeout;
            group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, o->rank, o->world, opts);
            backend = "nccl";
        }
#endif
        if (!group) {
            auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
            opts->devices.push_back(gloo_device(o->addr));
            group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, o->rank, o->world, opts);
        }
        g_dist.store = store;
        g_dist.group = group;
        g_dist.rank = o->rank;
        g_dist.world = o->world;
        g_dist.backend = backend;
    }
    SHIM_CATCH
}

extern "C" int dt_dist_rank(void) { return g_dist.rank; }
extern "C" int dt_dist_world(void) { return g_dist.world; }
extern "C" const char *dt_dist_backend(void) { return g_dist.backend; }

extern "C" drdc_status dt_dist_allreduce_mean(const dt_tensor *bufs, int n) {
    if (n < 0 || (n > 0 && !bufs)) return drdc_fail(DRDC_ERR_INPUT, "dt_dist_allreduce_mean: %d buffers", n);
    if (!g_dist.group) return DRDC_OK;
    SHIM_TRY {
        std::vector<std::vector<at::Tensor>> lists;
        lists.reserve(static_cast<size_t>(n));
        for (int i = 0; i < n; i++) lists.push_back({flat_f32(bufs[i], "buffer")});
        std::vector<c10::intrusive_ptr<c10d::Work>> works;
        for (auto &l : lists) works.push_back(g_dist.group->allreduce(l, c10d::AllreduceOptions()));
        for (auto &w : works) w->wait();
        at::NoGradGuard no_grad;
        for (auto &l : lists) l[0].div_(static_cast<double>(g_dist.world));
    }
    SHIM_CATCH
}

extern "C" drdc_status dt_dist_broadcast(dt_tensor buf, int root) {
    if (!g_dist.group) return DRDC_OK;
    if (root < 0 || root >= g_dist.world)
        return drdc_fail(DRDC_ERR_INPUT, "dt_dist_broadcast: root %d is not in [0, %d)", root, g_dist.world);
    SHIM_TRY {
        std::vector<at::Tensor> l{flat_f32(buf, "buf")};
        c10d::BroadcastOptions opts;
        opts.rootRank = root;
        g_dist.group->broadcast(l, opts)->wait();
    }
    SHIM_CATCH
}

extern "C" drdc_status dt_dist_barrier(void) {
    if (!g_dist.group) return DRDC_OK;
    SHIM_TRY { g_dist.group->barrier(c10d::BarrierOptions())->wait(); }
    SHIM_CATCH
}

extern "C" drdc_status dt_dist_store_set(const char *key, const void *value, size_t n) {
    if (!key || (n && !value)) return drdc_fail(DRDC_ERR_INPUT, "dt_dist_store_set: NULL argument");
    if (!g_dist.store) return drdc_fail(DRDC_ERR_STATE, "dt_dist_store_set: no process group");
    SHIM_TRY {
        const uint8_t *p = static_cast<const uint8_t *>(value);
        g_dist.store->set(key, std::vector<uint8_t>(p, p + n));
    }
    SHIM_CATCH
}

extern "C" drdc_status dt_dist_store_get(const char *key, double timeout_s, void *out, size_t cap, size_t *n) {
    if (!key || !n || (cap && !out)) return drdc_fail(DRDC_ERR_INPUT, "dt_dist_store_get: NULL argument");
    *n = 0;
    if (!g_dist.store) return drdc_fail(DRDC_ERR_STATE, "dt_dist_store_get: no process group");
    SHIM_TRY {
        g_dist.store->wait({std::string(key)}, to_ms(timeout_s));
        std::vector<uint8_t> v = g_dist.store->get(key);
        *n = v.size();
        if (!v.empty() && cap) memcpy(out, v.data(), v.size() < cap ? v.size() : cap);
    }
    SHIM_CATCH
}

extern "C" void dt_dist_finalize(void) {
    try {
        g_dist.group.reset();
        g_dist.store.reset();
    } catch (...) {
    }
    g_dist = DistState();
}

struct dt_dist_server_s {
    c10::intrusive_ptr<c10d::TCPStore> store;
};

extern "C" drdc_status dt_dist_serve(dt_dist_server *out, const char *addr, int port, double timeout_s,
                                     int *bound_port) {
    if (!out || !addr || !bound_port) return drdc_fail(DRDC_ERR_INPUT, "dt_dist_serve: NULL argument");
    *out = nullptr;
    *bound_port = 0;
    if (port < 0 || port > 65535) return drdc_fail(DRDC_ERR_INPUT, "dt_dist_serve: port %d", port);
    SHIM_TRY {
        c10d::TCPStoreOptions so;
        so.port = static_cast<std::uint16_t>(port);
        so.isServer = true;
        so.waitWorkers = false;
        so.timeout = to_ms(timeout_s);
        auto s = new dt_dist_server_s;
        try {
            s->store = c10::make_intrusive<c10d::TCPStore>(std::string(addr), so);
        } catch (...) {
            delete s;
            throw;
        }
        *bound_port = s->store->getPort();
        *out = s;
    }
    SHIM_CATCH
}

extern "C" void dt_dist_server_free(dt_dist_server s) {
    try {
        delete s;
    } catch (...) {
    }
}

#else  // no c10d in this build

extern "C" int dt_dist_compiled(void) { return 0; }
extern "C" int dt_dist_nccl_compiled(void) { return 0; }

extern "C" drdc_status dt_dist_init(const dt_dist_options *o) {
    if (!o) return drdc_fail(DRDC_ERR_INPUT, "dt_dist_init: options are NULL");
    if (o->world == 1 && o->rank == 0) return DRDC_OK;
    return drdc_fail(DRDC_ERR_INPUT,
                     "this drdc was built without c10d (libtorch's distributed package), so it trains in one process "
                     "only, not %d ranks; rebuild against a libtorch with c10d headers and libgloo-dev installed",
                     o->world);
}
extern "C" int dt_dist_rank(void) { return 0; }
extern "C" int dt_dist_world(void) { return 1; }
extern "C" const char *dt_dist_backend(void) { return "none"; }
extern "C" drdc_status dt_dist_allreduce_mean(const dt_tensor *, int) { return DRDC_OK; }
extern "C" drdc_status dt_dist_broadcast(dt_tensor, int) { return DRDC_OK; }
extern "C" drdc_status dt_dist_barrier(void) { return DRDC_OK; }
extern "C" drdc_status dt_dist_store_set(const char *, const void *, size_t) {
    return drdc_fail(DRDC_ERR_STATE, "dt_dist_store_set: no process group");
}
extern "C" drdc_status dt_dist_store_get(const char *, double, void *, size_t, size_t *n) {
    if (n) *n = 0;
    return drdc_fail(DRDC_ERR_STATE, "dt_dist_store_get: no process group");
}
extern "C" void dt_dist_finalize(void) {}
extern "C" drdc_status dt_dist_serve(dt_dist_server *out, const char *, int, double, int *bound_port) {
    if (out) *out = nullptr;
    if (bound_port) *bound_port = 0;
    return drdc_fail(DRDC_ERR_INPUT, "this drdc was built without c10d (libtorch's distributed package): it cannot "
                     "start ranks");
}
extern "C" void dt_dist_server_free(dt_dist_server) {}

#endif
