#!/usr/bin/python3
"""twin_diffusion.py: the PyTorch twin of src/stages/diffusion.c and src/stages/fusion.c.

Written from DESIGN.md section 3 (eqs. 4, 7, 8, 11-17), literally, one (grid, step, scale) at
a time, so the C code's batching and shortcuts (all runs in one batch, Down(x - x^) for
Down(x) - Down(x^)) are checked against the plain equations. The C tests write the inputs
(images, masks, noise, the fake network's weights) to a safetensors file; this script computes
the reference outputs and writes them to another safetensors file.

  twin_diffusion.py ddim IN OUT     schedule, q_sample and one DDIM inpainting pass
  twin_diffusion.py fusion IN OUT   eqs. (14)-(17), image score, normal statistics, quantiles

ddim IN:  x [B,3,H,W], masks [B,G,K,1,H,W], z, eps0 [B,G,K,3,H,W], eps_known [S,B,G,K,3,H,W],
          conv_w [3,6,3,3], conv_b [3], qs_x0 [B,3,H,W], qs_t [B] (I64), qs_eps [B,3,H,W];
          metadata T, beta_start, beta_end, tau, steps, t_scale
     OUT: betas [T] (F64), abar [T] (F32), timesteps [S] (I64), qs_xt [B,3,H,W],
          x_hat [B,G,S,3,H,W], x_final [B,G,K,3,H,W] for each sampler variant, suffixed:
          "" = start from the image (DESIGN.md, corrected), "_masked" = start from x~_k,
          "_clip" = start from the image with x0 clipped to [-1,1] and eps re-derived
The fake network: eps = tanh(conv3x3(cat(x_t, cond), conv_w, conv_b, padding 1)) + t_scale * t.

fusion IN:  x [B,3,H,W], x_hat [B,G,S,3,H,W], h_base [B,1,H,W], scales [n] (F64),
            values [m] (F64), qs [q] (F64); metadata filter, alpha, pool, diff_mean, diff_std,
            base_mean, base_std
       OUT: h_diff, h_diff_f, heat, heat_none [B,1,H,W], score, score_none [B],
            stats [4] (F64: mean, std of h_diff_f; mean, std of h_base; numpy, population std),
            quantiles [q] (F64, numpy.quantile linear)

Run with Debian's /usr/bin/python3 (torch 1.13, numpy). Safetensors I/O: stio.py beside it.
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stio import st_read, st_write  # noqa: E402


# ---- diffusion ---------------------------------------------------------------------------------

def schedule(T, beta_start, beta_end):
    betas = torch.from_numpy(np.linspace(beta_start, beta_end, T, dtype=np.float64))
    abar64 = torch.cumprod(1.0 - betas, dim=0)
    return betas, abar64.float()


def ddim(inp, meta):
    T, tau, steps = int(meta["T"]), int(meta["tau"]), int(meta["steps"])
    betas, abar = schedule(T, float(meta["beta_start"]), float(meta["beta_end"]))
    t_scale = float(meta["t_scale"])

    def A(t):                                    # abar_t; t = -1 is the clean image (abar 1)
        return 1.0 if t < 0 else float(abar[t])

    # q_sample (eq. 4)
    ab = abar[inp["qs_t"]].reshape(-1, 1, 1, 1)
    qs_xt = torch.sqrt(ab) * inp["qs_x0"] + torch.sqrt(1.0 - ab) * inp["qs_eps"]

    w, b = inp["conv_w"], inp["conv_b"]

    def net(x_t, t, cond):
        e = torch.tanh(F.conv2d(torch.cat([x_t, cond], dim=1), w, b, padding=1))
        return e + t_scale * t.to(torch.float32).reshape(-1, 1, 1, 1)

    x, masks = inp["x"], inp["masks"]
    B, G, K = masks.shape[0], masks.shape[1], masks.shape[2]
    H, W = x.shape[2], x.shape[3]
    ts = [tau * (steps - i) // steps for i in range(steps)]

    def sample(start_masked, clip):
        x_hat = torch.zeros(B, G, steps, 3, H, W)
        x_final = torch.zeros(B, G, K, 3, H, W)
        for bi in range(B):                      # each run on its own, literally
            for g in range(G):
                for k in range(K):
                    img = x[bi:bi + 1]
                    m = masks[bi, g, k:k + 1]    # [1,1,H,W]
                    cond = m * img + (1 - m) * inp["z"][bi, g, k:k + 1]
                    x_start = cond if start_masked else img    # DESIGN.md: the noised input image
                    xt = math.sqrt(A(tau)) * x_start + math.sqrt(1 - A(tau)) * inp["eps0"][bi, g, k:k + 1]
                    for i, t in enumerate(ts):
                        tn = ts[i + 1] if i + 1 < steps else -1
                        e = net(xt, torch.tensor([t]), cond)
                        x0 = (xt - math.sqrt(1 - A(t)) * e) / math.sqrt(A(t))                  # (7)
                        if clip:         # guided-diffusion: clip_denoised, then _predict_eps_from_xstart
                            x0 = x0.clamp(-1, 1)
                            e = (xt / math.sqrt(A(t)) - x0) / math.sqrt(1 / A(t) - 1)
                        x_hat[bi, g, i] += ((1 - m) * x0)[0]                                   # (8)
                        known = math.sqrt(A(tn)) * img + math.sqrt(1 - A(tn)) * inp["eps_known"][i, bi, g, k:k + 1]  # (11)
                        unknown = math.sqrt(A(tn)) * x0 + math.sqrt(1 - A(tn)) * e             # (12)
                        xt = m * known + (1 - m) * unknown                                     # (13)
                    x_final[bi, g, k] = xt[0]
        return x_hat, x_final

    out = {"betas": betas, "abar": abar, "timesteps": torch.tensor(ts, dtype=torch.int64), "qs_xt": qs_xt}
    for suffix, start_masked, clip in (("", False, False), ("_masked", True, False), ("_clip", False, True)):
        out["x_hat" + suffix], out["x_final" + suffix] = sample(start_masked, clip)
    return out


# ---- fusion ------------------------------------------------------------------------------------

def fusion(inp, meta):
    x, x_hat, h_base = inp["x"], inp["x_hat"], inp["h_base"]
    scales = [float(s) for s in inp["scales"]]
    f, alpha, pool = int(meta["filter"]), float(meta["alpha"]), int(meta["pool"])
    B, G, S = x_hat.shape[0], x_hat.shape[1], x_hat.shape[2]
    H, W = x.shape[2], x.shape[3]
    maps = []
    for g in range(G):
        for s in range(S):
            for sc in scales:                                                   # (14)
                size = (max(1, math.floor(H * sc)), max(1, math.floor(W * sc)))
                dx = F.interpolate(x, size=size, mode="area")
                dh = F.interpolate(x_hat[:, g, s], size=size, mode="area")
                d = torch.linalg.norm(dx - dh, dim=1, keepdim=True)
                maps.append(F.interpolate(d, size=(H, W), mode="bilinear", align_corners=False))
    h_diff = torch.stack(maps, 0).mean(0)                                       # (15)
    h_diff_f = F.avg_pool2d(h_diff, f, stride=1, padding=f // 2, count_include_pad=False)  # (16)

    def blend(std):
        if std:
            d = (h_diff_f - float(meta["diff_mean"])) / float(meta["diff_std"])
            b = (h_base - float(meta["base_mean"])) / float(meta["base_std"])
        else:
            d, b = h_diff_f, h_base
        return alpha * d + (1 - alpha) * b                                      # (17)

    def score(h):
        p = min(pool, H, W)
        return F.avg_pool2d(h, p, stride=1).amax(dim=(1, 2, 3))

    heat, heat_none = blend(True), blend(False)
    hd, hb = h_diff_f.double().numpy(), h_base.double().numpy()
    stats = np.array([hd.mean(), hd.std(), hb.mean(), hb.std()], dtype=np.float64)
    quantiles = np.quantile(inp["values"].numpy(), inp["qs"].numpy())
    return {"h_diff": h_diff, "h_diff_f": h_diff_f, "heat": heat, "heat_none": heat_none, "score": score(heat),
            "score_none": score(heat_none), "stats": stats, "quantiles": np.asarray(quantiles, dtype=np.float64)}


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("ddim", "fusion"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(1)
    inp, meta = st_read(sys.argv[2], torch.from_numpy)
    with torch.no_grad():
        out = (ddim if sys.argv[1] == "ddim" else fusion)(inp, meta)
    st_write(sys.argv[3], out)


if __name__ == "__main__":
    main()
