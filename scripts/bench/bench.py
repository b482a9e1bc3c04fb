#!/usr/bin/python3
"""bench.py: drdc's C inference speed against the PyTorch twins, stage by stage, on the same network.

Runs `drdc bench` (C) with --weights-out, --check-out and --json, then loads exactly those weights
into the PyTorch twins (scripts/twins/twin_backbone.py, twin_base.py, twin_unet.py; the sampler and
the fusion are written batched here, as the C code batches them), checks on the C run's own inputs
that the twins compute the same outputs (max difference per stage), times the same stages on the
same batch with the same thread count, and prints per stage: C ms, PyTorch ms, ratio C/PyTorch
(wall clock and process CPU time).

Fairness: drdc re-executes itself with OMP_WAIT_POLICY=PASSIVE (src/commands/main.c) because spinning
OpenMP threads cost a 6x slowdown on a shared 2-core machine, raises glibc's mmap threshold (mallopt)
and asks libtorch for its AVX-512 kernels (ATEN_CPU_CAPABILITY); this script does the same (it
re-executes itself with those variables before torch is loaded), so both sides run the same libgomp
policy, allocator and kernels; where the drdc binary links tcmalloc (CMake's DRDC_TCMALLOC), the
twins get the same library by LD_PRELOAD. With the C run's infer.precision bf16 the twins run under
torch.autocast("cpu", bfloat16); the twin U-Net runs channels-last without autograd and with
OpenBLAS on one thread, as C; the
twin's DRDC pass refines one image at a time unless infer.batch_refiner, as C. Debian's python3-torch and drdc link the same libtorch_cpu 1.13 (and OpenBLAS). UniAD's
twin builds its neighbour mask on every forward pass; C builds it once, so the twin's mask is
cached here (the same work on both sides). Stages (as `drdc bench`):
  backbone     features of a [B,3,S,S] batch (blocks resized to S/16 and concatenated)
  base         UniAD reconstruction of those features (eval mode)
  unet         ONE U-Net call as the DRDC pass makes it (one image's K*G runs; B*K*G with batch_refiner)
  drdc         the whole DRDC pass: base map and score, K*G inpainting runs x steps, fusion
  fusion       eqs. 14-17 and the image score alone
--rounds N alternates C and PyTorch N times (the medians of each side's rounds are compared),
which evens out a machine whose load changes while the benchmark runs.

Usage: /usr/bin/python3 scripts/bench/bench.py [--drdc build/drdc] [--config configs/tiny.json]
       [--batch 8] [--size PX] [--iters 5] [--warmup 1] [--threads N] [--set k=v ...]
       [--rounds 1] [--stages LIST] [--json OUT.json] [--keep DIR]
Exit codes: 0 ok (whatever the ratios), 1 a run failed, 2 usage, 3 the twins disagree with C.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

# The process settings drdc gives itself (src/commands/main.c), here too, before torch is loaded:
# libgomp reads OMP_WAIT_POLICY and glibc its malloc tunables once, at start (hence the re-exec);
# GLIBC_TUNABLES is drdc's mallopt(M_MMAP_THRESHOLD and M_TRIM_THRESHOLD, 1 GiB); ATEN_CPU_CAPABILITY
# lets libtorch 1.x run its elementwise kernels at AVX-512 (it checks the CPU itself).
PROCESS_ENV = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=1073741824",
    "ATEN_CPU_CAPABILITY": "avx512",
}


HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
DEFAULT_DRDC = os.path.join(SOURCE, "build", "drdc")


def linked_tcmalloc(argv):
    """The tcmalloc library the drdc binary (--drdc, as argparse reads it below) links (CMake's
    DRDC_TCMALLOC), or None: the twins then get it too, by LD_PRELOAD, so that both sides allocate
    with the same malloc."""
    drdc = DEFAULT_DRDC
    for i, a in enumerate(argv):
        if a == "--drdc" and i + 1 < len(argv):
            drdc = argv[i + 1]
        elif a.startswith("--drdc="):
            drdc = a[len("--drdc="):]
    try:
        out = subprocess.run(["ldd", drdc], capture_output=True, text=True).stdout
    except OSError:
        return None
    for line in out.splitlines():
        if "tcmalloc" in line and "=>" in line:
            return line.split("=>")[1].split("(")[0].strip()
    return None


if __name__ == "__main__":
    _tc = linked_tcmalloc(sys.argv)
    if _tc:
        PROCESS_ENV["LD_PRELOAD"] = _tc
if __name__ == "__main__" and any(k not in os.environ for k in PROCESS_ENV):
    for k, v in PROCESS_ENV.items():
        os.environ.setdefault(k, v)
    os.execv(sys.executable, [sys.executable] + sys.argv)

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover
    print("bench.py: needs Debian's python3-torch (run with /usr/bin/python3): %s" % e, file=sys.stderr)
    sys.exit(77)

sys.path.insert(0, os.path.join(SOURCE, "scripts", "twins"))
import twin_backbone  # noqa: E402
import twin_diffusion  # noqa: E402
import twin_base  # noqa: E402
import twin_unet  # noqa: E402
from stio import st_read  # noqa: E402

STAGES = ["backbone", "base", "unet", "drdc", "fusion"]


# ---- the twins, built from the model file's config and loaded with its weights ----------------

def load_prefixed(module, tensors, prefix, what, ignore=("num_batches_tracked",)):
    """Loads tensors[prefix + name] into module; every parameter and buffer must be there."""
    sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing, unexpected = module.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not m.endswith(ignore)]
    if missing or unexpected:
        raise SystemExit("bench.py: %s: the C model's weights do not fit the twin: missing %s, unexpected %s"
                         % (what, missing[:8], unexpected[:8]))


class Backbone:
    """features(images [B,3,S,S] in [0,1]) -> [B,C,S/16,S/16], as drdc_backbone_features: run up to
    the last chosen block only, resize each chosen block (bilinear, align_corners) and concatenate."""

    def __init__(self, cfg, tensors, pydeps):
        bc = cfg["backbone"]
        arch = bc["arch"]
        self.size = cfg["data"]["image_size"]
        if arch == "mobilenet_v2":
            self.model = twin_backbone.MobileNetV2()
            self.kind = "mnv2"
            default = twin_backbone.MNV2_BLOCKS
        elif arch.startswith("efficientnet"):
            EfficientNet, err = twin_backbone.load_port(arch, pydeps)
            if EfficientNet is None:
                raise SystemExit("bench.py: %s needs the EfficientNet port (scripts/setup/fetch_pydeps.sh): %s"
                                 % (arch, err))
            self.model = EfficientNet.from_name(arch)
            self.kind = "effnet"
            native = self.model._global_params.image_size
            default = twin_backbone.effnet_blocks(self.model, native)
            self.mean = torch.tensor(twin_backbone.IMAGENET_MEAN).view(1, 3, 1, 1)
            self.std = torch.tensor(twin_backbone.IMAGENET_STD).view(1, 3, 1, 1)
        else:
            raise SystemExit("bench.py: no twin for backbone %s" % arch)
        self.blocks = list(bc.get("blocks") or []) or list(default)
        load_prefixed(self.model, tensors, "backbone.", "backbone " + arch)
        self.model.eval()

    def __call__(self, images):
        want, last, outs = set(self.blocks), max(self.blocks), {}
        if self.kind == "mnv2":
            x = images * 2 - 1
            for i, layer in enumerate(self.model.features[:last + 1]):
                x = F.relu6(twin_backbone.conv_same(layer[0], x)) if i == 0 else layer(x)
                if i in want:
                    outs[i] = x
        else:
            m = self.model
            x = m._swish(m._bn0(m._conv_stem((images - self.mean) / self.std)))
            for i in range(last + 1):
                x = m._blocks[i](x)
                if i in want:
                    outs[i] = x
        s = self.size // 16
        return torch.cat([F.interpolate(outs[i], size=(s, s), mode="bilinear", align_corners=True)
                          for i in self.blocks], dim=1)


def build_uniad(cfg, channels, tensors):
    b, s = cfg["base"], cfg["data"]["image_size"] // 16
    model = twin_base.UniAD(channels, (s, s), b["hidden"], b["heads"], b["enc_layers"], b["dec_layers"],
                                   b["ffn"], b["dropout"], b["neighbor_mask"], b["jitter_scale"], b["jitter_prob"])
    load_prefixed(model, tensors, "base.", "base transformer")
    return model.eval()


def build_unet(cfg, tensors):
    r = cfg["refiner"]
    size = r["image_size"]
    model = twin_unet.UNetModel(size, 6, r["channels"], 3, r["res_blocks"],
                                [size // a for a in r["attention_res"]], dropout=0.0,
                                channel_mult=tuple(r["channel_mult"]), num_head_channels=r["head_channels"],
                                use_scale_shift_norm=True)
    load_prefixed(model, tensors, "refiner.", "refiner U-Net")
    return model.eval()


def cache_neighbor_mask():
    """UniAD's twin rebuilds the mask on every forward; C builds it once at model build."""
    orig, cache = twin_base.neighbor_mask, {}

    def cached(feature_size, n):
        key = (tuple(feature_size), n)
        if key not in cache:
            cache[key] = orig(feature_size, n)
        return cache[key]
    twin_base.neighbor_mask = cached


# ---- DRDC's test-time pass, batched as the C code batches it ------------------------------------

def schedule_abar(r):
    _, abar = twin_diffusion.schedule(r["timesteps"], r["beta_start"], r["beta_end"])
    return abar


def inpaint_masks(B, R, grids, K, gen):
    """[B,G,K,1,R,R]: per (image, grid) one random partition of the cells into K sets (cell perm[p]
    goes to set p mod K); 1 = known, 0 = hidden."""
    out = torch.empty(B, len(grids), K, 1, R, R)
    for b in range(B):
        for g, n in enumerate(grids):
            c = R // n
            perm = torch.randperm(c * c, generator=gen)
            owner = torch.empty(c * c, dtype=torch.int64)
            owner[perm] = torch.arange(c * c) % K
            owner = owner.view(c, c).repeat_interleave(n, 0).repeat_interleave(n, 1)     # [R,R]
            for k in range(K):
                out[b, g, k, 0] = (owner != k).float()
    return out


def refine(eps, x, abar, inf, gen):
    """All B*G*K inpainting runs through the U-Net together; returns x_hat [B,G,steps,3,R,R] (eq. 8)."""
    tau, steps, K, grids = inf["tau"], inf["steps"], inf["K"], inf["grids"]
    B, _, R, _ = x.shape
    G = len(grids)
    N = B * G * K
    masks = inpaint_masks(B, R, grids, K, gen).view(N, 1, R, R)
    xr = x[:, None, None].expand(B, G, K, 3, R, R).reshape(N, 3, R, R)
    z = torch.randn(N, 3, R, R, generator=gen)
    eps0 = torch.randn(N, 3, R, R, generator=gen)
    hidden = 1 - masks
    cond = masks * xr + hidden * z
    A = lambda t: 1.0 if t < 0 else float(abar[t])  # noqa: E731
    xt = math.sqrt(A(tau)) * cond + math.sqrt(1 - A(tau)) * eps0
    ts = [tau * (steps - i) // steps for i in range(steps)]
    x_hat = torch.empty(B, G, steps, 3, R, R)
    for i, t in enumerate(ts):
        tn = ts[i + 1] if i + 1 < steps else -1
        e = eps(xt, torch.full((N,), t, dtype=torch.int64), cond)
        x0 = (xt - math.sqrt(1 - A(t)) * e) / math.sqrt(A(t))                               # (7)
        x_hat[:, :, i] = (hidden * x0).view(B, G, K, 3, R, R).sum(2)                        # (8)
        eps_k = torch.randn(N, 3, R, R, generator=gen)
        known = math.sqrt(A(tn)) * xr + math.sqrt(1 - A(tn)) * eps_k                        # (11)
        unknown = math.sqrt(A(tn)) * x0 + math.sqrt(1 - A(tn)) * e                          # (12)
        xt = masks * known + hidden * unknown                                               # (13)
    return x_hat


def fusion_heat(x, x_hat, inf):
    """Eqs. (14)-(16): [B,1,R,R]."""
    B, G, S, _, H, W = x_hat.shape
    d = (x[:, None, None] - x_hat).reshape(B * G * S, 3, H, W)
    acc = None
    for sc in inf["scales"]:
        h, w = max(1, math.floor(H * sc)), max(1, math.floor(W * sc))
        down = d if (h, w) == (H, W) else F.interpolate(d, size=(h, w), mode="area")
        n = torch.linalg.vector_norm(down, dim=1, keepdim=True)
        up = n if (h, w) == (H, W) else F.interpolate(n, size=(H, W), mode="bilinear", align_corners=False)
        acc = up if acc is None else acc + up
    h_diff = acc.view(B, G * S, H, W).mean(1, keepdim=True) / len(inf["scales"])            # (15)
    f = inf["filter"]
    return F.avg_pool2d(h_diff, f, stride=1, padding=f // 2, count_include_pad=False) if f > 1 else h_diff


def fusion_final(h_diff_f, h_base, inf, stats):
    """Eq. (17) with the (identity) statistics, then the image score."""
    a = inf["alpha"]
    if inf["standardize"] == "normal":
        d = (h_diff_f - stats["diff_mean"]) / stats["diff_std"]
        b = (h_base - stats["base_mean"]) / stats["base_std"]
    else:
        d, b = h_diff_f, h_base
    heat = a * d + (1 - a) * b
    p = min(inf["pool"], heat.shape[2], heat.shape[3])
    return heat, F.avg_pool2d(heat, p, stride=1).amax(dim=(1, 2, 3))


def norms_in_float32():
    """As drdc's shim (dt_layer_norm, dt_batch_norm_eval; GroupNorm32 already does it): a bf16 input
    that autocast left is normalised in float32. torch 1.13's CPU autocast leaves these norms alone
    and they refuse a bf16 input with float32 weights."""
    ln, bn = F.layer_norm, F.batch_norm

    def layer_norm(x, *args, **kw):
        return ln(x.float() if x.dtype == torch.bfloat16 else x, *args, **kw)

    def batch_norm(x, *args, **kw):
        return bn(x.float() if x.dtype == torch.bfloat16 else x, *args, **kw)

    torch.nn.functional.layer_norm, torch.nn.functional.batch_norm = layer_norm, batch_norm


_OPENBLAS = []


def blas_threads(n):
    """OpenBLAS's thread count set to n, the count before returned (0 without OpenBLAS): the
    library torch loaded, found in this process's maps (C calls openblas_set_num_threads too)."""
    if not _OPENBLAS:
        import ctypes
        lib = None
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if "libopenblas" in path and path.startswith("/"):
                    lib = ctypes.CDLL(path)
                    break
        _OPENBLAS.append(lib)
    lib = _OPENBLAS[0]
    if lib is None:
        return 0
    prev = lib.openblas_get_num_threads()
    if prev != n:
        lib.openblas_set_num_threads(n)
    return prev


class Pipeline:
    def __init__(self, cfg, tensors, pydeps):
        self.cfg = cfg
        self.backbone = Backbone(cfg, tensors, pydeps)
        with torch.no_grad():
            C = self.backbone(torch.zeros(1, 3, cfg["data"]["image_size"], cfg["data"]["image_size"])).shape[1]
        self.uniad = build_uniad(cfg, C, tensors)
        self.unet = build_unet(cfg, tensors).to(memory_format=torch.channels_last)   # as C without autograd
        self.abar = schedule_abar(cfg["refiner"])
        inf = cfg["infer"]
        self.bf16 = inf.get("precision", "fp32") == "bf16"
        if self.bf16:
            norms_in_float32()
        self.per_image = not inf.get("batch_refiner", False)
        # as `drdc bench`: the identity statistics (mean 0, std 1)
        self.stats = {"diff_mean": 0.0, "diff_std": 1.0, "base_mean": 0.0, "base_std": 1.0}
        self.gen = torch.Generator().manual_seed(7)

    def precision(self):
        """The C run's infer.precision: bf16 autocast on the CPU, or nothing."""
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    def eps(self, x_t, t, cond):
        """The U-Net on channels-last inputs (as C), eps back as plain NCHW float32; OpenBLAS on one
        thread while it runs, as C's drdc_unet_eps."""
        cl = torch.channels_last
        prev = blas_threads(1)
        try:
            return twin_unet.drdc_eps(self.unet, x_t.contiguous(memory_format=cl), t,
                                      cond.contiguous(memory_format=cl)).float().contiguous()
        finally:
            if prev:
                blas_threads(prev)

    def base(self, images_s):
        S, pool = self.cfg["data"]["image_size"], self.cfg["infer"]["pool"]
        with self.precision():
            f = self.backbone(images_s).float()
            rec = self.uniad(f).float()
        low = torch.sqrt(((rec - f) ** 2).sum(dim=1, keepdim=True))
        m = F.interpolate(low, size=(S, S), mode="bilinear", align_corners=True)
        p = min(pool, S)
        return m, F.avg_pool2d(m, p, stride=1).amax(dim=(1, 2, 3))

    def drdc(self, images_r, parts=None):
        """The whole pass; one image at a time (as C) unless infer.batch_refiner."""
        if self.per_image and images_r.shape[0] > 1:
            got, times = [], []
            for b in range(images_r.shape[0]):
                got.append(self.drdc_batch(images_r[b:b + 1], times))
            if parts is not None:
                parts.append(tuple(sum(p[i] for p in times) for i in range(3)))
            return torch.cat(got)
        return self.drdc_batch(images_r, parts)

    def drdc_batch(self, images_r, parts=None):
        S, R, inf = self.cfg["data"]["image_size"], self.cfg["refiner"]["image_size"], self.cfg["infer"]
        t0 = time.perf_counter()
        img_s = images_r if S == R else F.interpolate(images_r, size=(S, S), mode="area" if R > S else "bilinear")
        bmap, _ = self.base(img_s)
        if S != R:
            bmap = F.interpolate(bmap, size=(R, R), mode="area" if S > R else "bilinear")
        t1 = time.perf_counter()
        x = images_r * 2 - 1
        with self.precision():
            x_hat = refine(self.eps, x, self.abar, inf, self.gen)
        t2 = time.perf_counter()
        heat, score = fusion_final(fusion_heat(x, x_hat, inf), bmap, inf, self.stats)
        if parts is not None:
            parts.append((1e3 * (t1 - t0), 1e3 * (t2 - t1), 1e3 * (time.perf_counter() - t2)))
        return heat

    def fusion(self, x, x_hat, h_base):
        return fusion_final(fusion_heat(x, x_hat, self.cfg["infer"]), h_base, self.cfg["infer"], self.stats)


# ---- timing ----------------------------------------------------------------------------------

def median(v):
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def time_fn(fn, iters, warmup):
    wall, cpu = [], []
    for i in range(warmup + iters):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        t1, c1 = time.perf_counter(), time.process_time()
        if i >= warmup:
            wall.append(1e3 * (t1 - t0))
            cpu.append(1e3 * (c1 - c0))
    return wall, cpu


def compare(name, ours, theirs):
    """max |a - b| and that over max |b|; prints one line, returns the relative figure."""
    ours = ours.float().reshape(theirs.shape)
    diff = (ours - theirs).abs().max().item()
    scale = max(theirs.abs().max().item(), 1e-12)
    print("  %-22s %-18s max |diff| %.3g, max |C| %.3g, relative %.3g" % (name, list(theirs.shape), diff, scale,
                                                                         diff / scale))
    return diff / scale


def run_c(a, tmp, rnd):
    js = os.path.join(tmp, "c%d.json" % rnd)
    cmd = [a.drdc, "bench", "--config", a.config, "--batch", str(a.batch), "--iters", str(a.iters), "--warmup",
           str(a.warmup), "--device", "cpu", "--json", js, "--no-peak"]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    if a.size:
        cmd += ["--size", str(a.size)]
    if a.stages:
        cmd += ["--stages", a.stages]
    for s in a.set or []:
        cmd += ["--set", s]
    if rnd == 0:
        cmd += ["--weights-out", os.path.join(tmp, "weights.safetensors"), "--check-out",
                os.path.join(tmp, "check.safetensors")]
    print("$ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd)
    if r.returncode:
        raise SystemExit("bench.py: drdc bench failed (exit %d)" % r.returncode)
    with open(js) as f:
        return json.load(f)


def run_py(pipe, chk, stages, iters, warmup):
    res, parts = {}, []
    B = chk["in.images"].shape[0]
    R = pipe.cfg["refiner"]["image_size"]
    images_r = torch.rand(B, 3, R, R, generator=torch.Generator().manual_seed(3))
    def under(fn):   # a single stage under the C run's precision (the DRDC pass sets its own)
        def run():
            with pipe.precision():
                return fn()
        return run

    fns = {
        "backbone": under(lambda: pipe.backbone(chk["in.images"]).float()),
        "base": under(lambda: pipe.uniad(chk["in.features"]).float()),
        "unet": under(lambda: pipe.eps(chk["in.x_t"], chk["in.t"].long(), chk["in.cond"])),
        "drdc": lambda: pipe.drdc(images_r, parts),
        "fusion": lambda: pipe.fusion(chk["in.x"], chk["in.x_hat"], chk["in.h_base"]),
    }
    with torch.no_grad():
        for s in stages:
            parts.clear()
            wall, cpu = time_fn(fns[s], iters, warmup)
            res[s] = {"ms_median": median(wall), "cpu_ms_median": median(cpu), "ms_all": wall, "cpu_ms_all": cpu}
            if s == "drdc":
                timed = parts[warmup:]
                for i, k in enumerate(("ms_base", "ms_refine", "ms_fusion")):
                    res[s][k] = median([p[i] for p in timed])
            print("  pytorch %-12s %10.2f ms  (cpu %.2f ms)" % (s, res[s]["ms_median"], res[s]["cpu_ms_median"]),
                  flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--drdc", default=DEFAULT_DRDC, help="the drdc binary")
    ap.add_argument("--config", default=os.path.join(SOURCE, "configs", "tiny.json"))
    ap.add_argument("--set", action="append", help="config override passed to drdc bench (repeatable)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=0, help="image size (default: the config's)")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="threads on both sides (0: all cores)")
    ap.add_argument("--stages", default="", help="comma-separated subset of " + ",".join(STAGES))
    ap.add_argument("--rounds", type=int, default=1, help="alternate C and PyTorch this many times")
    ap.add_argument("--tolerance", type=float, default=1e-3, help="largest relative output difference accepted")
    ap.add_argument("--pydeps", default=os.environ.get("DRDC_PYDEPS", os.path.join(SOURCE, "build", "pydeps")))
    ap.add_argument("--json", help="write the comparison as JSON")
    ap.add_argument("--keep", help="keep the weights, check data and C JSON in this folder")
    a = ap.parse_args()
    stages = [s for s in a.stages.split(",") if s] or STAGES
    for s in stages:
        if s not in STAGES:
            ap.error("unknown stage %s" % s)
    if not os.access(a.drdc, os.X_OK):
        ap.error("%s is not an executable drdc (build it, or give --drdc)" % a.drdc)
    tmp = a.keep or tempfile.mkdtemp(prefix="drdc-bench-")
    os.makedirs(tmp, exist_ok=True)
    try:
        c_runs, py_runs = [], []
        pipe = chk = None
        for rnd in range(a.rounds):
            c_runs.append(run_c(a, tmp, rnd))
            if pipe is None:
                threads = int(c_runs[0]["threads"])
                torch.set_num_threads(threads)
                tensors, meta = st_read(os.path.join(tmp, "weights.safetensors"), torch.from_numpy)
                cfg = json.loads(meta["config"])
                chk, _ = st_read(os.path.join(tmp, "check.safetensors"), torch.from_numpy)
                cache_neighbor_mask()
                pipe = Pipeline(cfg, tensors, a.pydeps)
                print("\nPyTorch %s, %d threads, OMP_WAIT_POLICY=%s, %s; twins vs C on the C run's inputs:"
                      % (torch.__version__, torch.get_num_threads(), os.environ.get("OMP_WAIT_POLICY"),
                         "tcmalloc (LD_PRELOAD)" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "glibc malloc"))
                worst = 0.0
                with torch.no_grad():
                    worst = max(worst, compare("backbone features", pipe.backbone(chk["in.images"]),
                                               chk["out.backbone"]))
                    worst = max(worst, compare("base", pipe.uniad(chk["in.features"]), chk["out.base"]))
                    worst = max(worst, compare("unet eps", pipe.eps(chk["in.x_t"], chk["in.t"].long(),
                                                                      chk["in.cond"]), chk["out.unet"]))
                    heat, score = pipe.fusion(chk["in.x"], chk["in.x_hat"], chk["in.h_base"])
                    worst = max(worst, compare("fusion heat", heat, chk["out.fusion_heat"]))
                    worst = max(worst, compare("fusion score", score, chk["out.fusion_score"]))
                if worst > a.tolerance:
                    print("bench.py: the twins disagree with C (relative %.3g > %.3g): not the same network"
                          % (worst, a.tolerance), file=sys.stderr)
                    return 3
                print()
            py_runs.append(run_py(pipe, chk, stages, a.iters, a.warmup))
        c0 = c_runs[0]
        print("\nC vs PyTorch (%s, batch %d, %dx%d, %d threads, OMP_WAIT_POLICY=PASSIVE on both; median of %d "
              "after %d warm-up%s)" % (c0["config"]["name"], c0["batch"], c0["image_size"], c0["image_size"],
                                       c0["threads"], a.iters, a.warmup,
                                       ", median over %d alternating rounds" % a.rounds if a.rounds > 1 else ""))
        print("  %-16s %6s %11s %11s %8s %11s %11s %8s" % ("stage", "N", "C ms", "PyTorch ms", "C/Py", "C cpu ms",
                                                            "Py cpu ms", "C/Py cpu"))
        rows = []

        def row(name, n, cms, pms, ccpu, pcpu):
            rows.append({"stage": name, "n": n, "c_ms": cms, "py_ms": pms, "ratio": cms / pms,
                         "c_cpu_ms": ccpu, "py_cpu_ms": pcpu,
                         "cpu_ratio": (ccpu / pcpu) if (ccpu is not None and pcpu) else None})
            cpu = "%11.1f %11.1f %8.2f" % (ccpu, pcpu, ccpu / pcpu) if ccpu is not None and pcpu else ""
            print("  %-16s %6d %11.2f %11.2f %8.2f %s" % (name, n, cms, pms, cms / pms, cpu))

        for s in stages:
            if s not in c0["stages"]:
                continue
            cms = median([r["stages"][s]["ms_median"] for r in c_runs])
            ccpu = median([r["stages"][s]["cpu_ms_median"] for r in c_runs])
            pms = median([r[s]["ms_median"] for r in py_runs])
            pcpu = median([r[s]["cpu_ms_median"] for r in py_runs])
            row(s, int(c0["stages"][s]["n"]), cms, pms, ccpu, pcpu)
            if s == "drdc":
                for k in ("ms_base", "ms_refine", "ms_fusion"):
                    row("  drdc " + k[3:], c0["batch"], median([r["stages"][s][k] for r in c_runs]),
                        median([r[s][k] for r in py_runs]), None, None)
        print("  (ratio < 1: C faster. Load average during the C run(s): %s -> %s)"
              % (c0.get("loadavg_before"), c_runs[-1].get("loadavg_after")))
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"rows": rows, "c_runs": c_runs, "py_runs": py_runs, "rounds": a.rounds,
                           "torch": torch.__version__}, f, indent=1)
            print("  comparison: %s" % a.json)
        return 0
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
