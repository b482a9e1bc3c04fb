// optim.cpp: AdamW (as torch.optim.AdamW) and gradient-norm clipping for the C API of
// include/drdc/shim/shim.h, written out so that the optimizer state (step, moments) can be saved
// and restored exactly for --resume, with no dependency on libtorch's optimizer classes (whose
// API differs between libtorch 1.13 and 2.x).
#include "drdc/shim/shim.h"

#include <ATen/core/grad_mode.h>   // at::NoGradGuard (libtorch 2.x no longer brings it in with ATen.h)
#include <cmath>
#include <string>
#include <vector>

#include "internal.hpp"   // last: its T() macro would clash with template parameters of torch headers

using dt_shim::input_error;
using dt_shim::set_pair;
using dt_shim::shape_str;
using dt_shim::tensor_list;

// ---- optimizer ------------------------------------------------------------------------

namespace {
struct AdamGroup {
    double lr, weight_decay;
};
struct AdamParam {
    at::Tensor param;  // shares the TensorImpl of the caller's handle
    int group;
    at::Tensor exp_avg, exp_avg_sq;  // undefined until the first update
    int64_t step = 0;
};
}  // namespace

struct dt_optimizer_s {
    double beta1, beta2, eps;
    std::vector<AdamGroup> groups;
    std::vector<AdamParam> params;
};

extern "C" drdc_status dt_adamw_new(dt_optimizer *out, double beta1, double beta2, double eps) {
    if (!out) return drdc_fail(DRDC_ERR_INPUT, "dt_adamw_new: out is NULL");
    *out = nullptr;
    if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1) || !(eps >= 0))
        return drdc_fail(DRDC_ERR_INPUT, "dt_adamw_new: bad hyper-parameters beta1 %g, beta2 %g, eps %g", beta1, beta2,
                         eps);
    PROTECT(dt_optimizer o = new dt_optimizer_s; o->beta1 = beta1; o->beta2 = beta2; o->eps = eps; *out = o;)
}

extern "C" drdc_status dt_adamw_add_group(dt_optimizer opt, const dt_tensor *params, int n, double lr,
                                          double weight_decay) {
    if (!opt) return drdc_fail(DRDC_ERR_INPUT, "dt_adamw_add_group: optimizer is NULL");
    if (!(lr >= 0) || !(weight_decay >= 0))
        return drdc_fail(DRDC_ERR_INPUT, "dt_adamw_add_group: bad lr %g or weight_decay %g", lr, weight_decay);
    SHIM_TRY {
        std::vector<at::Tensor> v = tensor_list(params, n);
        int g = static_cast<int>(opt->groups.size());
        opt->params.reserve(opt->params.size() + v.size());
        opt->groups.push_back({lr, weight_decay});
        for (size_t i = 0; i < v.size(); i++)
            for (size_t j = 0; j < opt->params.size() + i; j++)
                if ((j < opt->params.size() ? opt->params[j].param : v[j - opt->params.size()]).is_same(v[i]))
                    input_error("parameter " + std::to_string(i) + " of the new group is already in the optimizer");
        for (at::Tensor &p : v) {
            AdamParam ap;
            ap.param = p;
            ap.group = g;
            opt->params.push_back(std::move(ap));
        }
    }
    SHIM_CATCH
}

// torch.optim.AdamW (1.13 single-tensor path), per parameter with a grad.
extern "C" drdc_status dt_adamw_step(dt_optimizer opt) {
    if (!opt) return drdc_fail(DRDC_ERR_INPUT, "dt_adamw_step: optimizer is NULL");
    SHIM_TRY {
        at::NoGradGuard no_grad;
        const double b1 = opt->beta1, b2 = opt->beta2;
        for (AdamParam &ap : opt->params) {
            const at::Tensor &grad = ap.param.grad();
            if (!grad.defined()) continue;
            const AdamGroup &grp = opt->groups[static_cast<size_t>(ap.group)];
            if (!ap.exp_avg.defined()) {
                ap.exp_avg = at::zeros_like(ap.param);
                ap.exp_avg_sq = at::zeros_like(ap.param);
            }
            ap.step += 1;
            ap.param.mul_(1.0 - grp.lr * grp.weight_decay);
            ap.exp_avg.mul_(b1).add_(grad, 1.0 - b1);
            ap.exp_avg_sq.mul_(b2).addcmul_(grad, grad, 1.0 - b2);
            const double bias_correction1 = 1.0 - std::pow(b1, static_cast<double>(ap.step));
            const double bias_correction2 = 1.0 - std::pow(b2, static_cast<double>(ap.step));
            const double step_size = grp.lr / bias_correction1;
            const double bias_correction2_sqrt = std::sqrt(bias_correction2);
            at::Tensor denom = (ap.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(opt->eps);
            ap.param.addcdiv_(ap.exp_avg, denom, -step_size);
        }
    }
    SHIM_CATCH
}

extern "C" drdc_status dt_adamw_set_lr(dt_optimizer opt, int group, double lr) {
    if (!opt) return drdc_fail(DRDC_ERR_INPUT, "dt_adamw_set_lr: optimizer is NULL");
    if (group < 0 || group >= static_cast<int>(opt->groups.size()))
        return drdc_fail(DRDC_ERR_INPUT, "dt_adamw_set_lr: group %d out of range (%d groups)", group,
                         static_cast<int>(opt->groups.size()));
    if (!(lr >= 0)) return drdc_fail(DRDC_ERR_INPUT, "dt_adamw_set_lr: bad lr %g", lr);
    opt->groups[static_cast<size_t>(group)].lr = lr;
    return DRDC_OK;
}

extern "C" int dt_adamw_num_params(dt_optimizer opt) { return opt ? static_cast<int>(opt->params.size()) : 0; }

extern "C" drdc_status dt_adamw_state_get(dt_tensor *exp_avg, dt_tensor *exp_avg_sq, int64_t *step, dt_optimizer opt,
                                          int param) {
    if (!exp_avg || !exp_avg_sq || !step || !opt) return drdc_fail(DRDC_ERR_INPUT, "dt_adamw_state_get: NULL argument");
    *exp_avg = *exp_avg_sq = nullptr;
    *step = 0;
    if (param < 0 || param >= static_cast<int>(opt->params.size()))
        return drdc_fail(DRDC_ERR_INPUT, "dt_adamw_state_get: param %d out of range (%d params)", param,
                         static_cast<int>(opt->params.size()));
    const AdamParam &ap = opt->params[static_cast<size_t>(param)];
    SHIM_TRY {
        if (ap.exp_avg.defined()) {
            at::NoGradGuard no_grad;
            set_pair(exp_avg, ap.exp_avg.clone(), exp_avg_sq, ap.exp_avg_sq.clone());
        }
        *step = ap.step;
    }
    SHIM_CATCH
}

extern "C" drdc_status dt_adamw_state_set(dt_optimizer opt, int param, dt_tensor exp_avg, dt_tensor exp_avg_sq,
                                          int64_t step) {
    if (!opt) return drdc_fail(DRDC_ERR_INPUT, "dt_adamw_state_set: optimizer is NULL");
    if (param < 0 || param >= static_cast<int>(opt->params.size()))
        return drdc_fail(DRDC_ERR_INPUT, "dt_adamw_state_set: param %d out of range (%d params)", param,
                         static_cast<int>(opt->params.size()));
    AdamParam &ap = opt->params[static_cast<size_t>(param)];
    SHIM_TRY {
        if (!exp_avg && !exp_avg_sq && step == 0) {
            ap.exp_avg = at::Tensor();
            ap.exp_avg_sq = at::Tensor();
            ap.step = 0;
        } else {
            if (step < 1) input_error("param " + std::to_string(param) + ": step must be >= 1 with moments");
            const at::Tensor &m = T(exp_avg);
            const at::Tensor &v = T(exp_avg_sq);
            for (const at::Tensor *t : {&m, &v})
                if (t->sizes() != ap.param.sizes())
                    input_error("param " + std::to_string(param) + ": moment shape " + shape_str(*t) +
                                " does not match the parameter shape " + shape_str(ap.param));
            at::NoGradGuard no_grad;
            at::Tensor nm = m.detach().to(ap.param.device(), ap.param.scalar_type()).clone();
            at::Tensor nv = v.detach().to(ap.param.device(), ap.param.scalar_type()).clone();
            ap.exp_avg = std::move(nm);
            ap.exp_avg_sq = std::move(nv);
            ap.step = step;
        }
    }
    SHIM_CATCH
}

extern "C" void dt_optimizer_free(dt_optimizer opt) { delete opt; }

// torch.nn.utils.clip_grad_norm_ (1.13), norm_type 2, error_if_nonfinite false.
extern "C" drdc_status dt_clip_grad_norm(const dt_tensor *params, int n, double max_norm, double *total_norm) {
    if (total_norm) *total_norm = 0.0;
    SHIM_TRY {
        if (n > 0 && !params) input_error("params is NULL");
        at::NoGradGuard no_grad;
        std::vector<at::Tensor> grads;
        for (int i = 0; i < n; i++) {
            if (!params[i]) input_error("param " + std::to_string(i) + " is NULL");
            const at::Tensor &g = params[i]->t.grad();
            if (g.defined()) grads.push_back(g);
        }
        if (grads.empty()) return DRDC_OK;
        const at::Device device = grads[0].device();
        std::vector<at::Tensor> norms;
        for (const at::Tensor &g : grads)
            norms.push_back(at::linalg_vector_norm(g, at::Scalar(2.0), c10::nullopt, false, c10::nullopt).to(device));
        at::Tensor total = at::linalg_vector_norm(at::stack(at::TensorList(norms)), at::Scalar(2.0), c10::nullopt,
                                                  false, c10::nullopt);
        at::Tensor coef = at::clamp_max(at::reciprocal(total + 1e-6) * max_norm, at::Scalar(1.0));
        for (at::Tensor &g : grads) g.mul_(coef.to(g.device()));
        if (total_norm) *total_norm = total.item<double>();
    }
    SHIM_CATCH
}

