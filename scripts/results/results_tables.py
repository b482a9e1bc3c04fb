#!/usr/bin/env python3
"""results_tables.py: the markdown tables of docs/RESULTS.md ("Full DRDC on real data") from the
JSON files that scripts/results/results_drdc.sh writes with `drdc eval --json` (standard library
only).

    python3 scripts/results/results_tables.py [docs/results/drdc]
    python3 scripts/results/results_tables.py docs/results/speed speed   # BENCH.md's speed/quality table
"""
import json
import os
import re
import sys

KEYS = [("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC"), ("aupro", "AUPRO")]


def load(d, name):
    path = os.path.join(d, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["methods"]


def pct(x):
    return "n/a" if x is None else "%.1f" % (100.0 * x)


def cells(methods, method, cats):
    m = methods[method]
    out = []
    for c in cats:
        out += [pct(m["categories"][c].get(k)) for k, _ in KEYS]
    out += [pct(m["mean"].get(k)) for k, _ in KEYS]
    return out


def table5(d):
    # (label, run, method): the corrected start (image) against the old one (masked), with and
    # without model conditioning; then the multi-scale base map and x0 clipping on the full model
    rows = [
        ("base (UniAD)", "t5_cond", "base"),
        ("masked start (x~_k), no model conditioning", "t5_uncond_masked", "drdc"),
        ("masked start (x~_k), model conditioning", "t5_cond_masked", "drdc"),
        ("image start, no model conditioning", "t5_uncond", "drdc"),
        ("image start, model conditioning (full DRDC)", "t5_cond", "drdc"),
        ("+ multi-scale base map (scales 1, 1/2, 1/4)", "t5_cond_msbase", "drdc"),
        ("+ x0 clipped to [-1, 1] in the sampler", "t5_cond_clip", "drdc"),
        ("+ diffusion map / its image mean (infer.diff_norm, not in the paper)", "t5_cond_diffnorm", "drdc"),
        ("diffusion map alone, masked start, model conditioning", "t5_cond_masked", "diffusion"),
        ("diffusion map alone, image start, no model conditioning", "t5_uncond", "diffusion"),
        ("diffusion map alone, image start, model conditioning", "t5_cond", "diffusion"),
        ("diffusion map alone / its image mean", "t5_cond_diffnorm", "diffusion"),
        ("multi-scale base map alone", "t5_cond_msbase", "base"),
    ]
    first = load(d, "t5_cond")
    if first is None:
        return "(t5_cond.json missing)\n"
    cats = list(first["base"]["categories"].keys())
    head = "| variant | " + " | ".join("%s %s" % (c, k) for c in cats + ["mean"] for _, k in KEYS) + " |"
    lines = [head, "|" + "---|" * (1 + 3 * (len(cats) + 1))]
    for label, run, method in rows:
        m = load(d, run)
        if m is None or method not in m:
            lines.append("| %s | %s |" % (label, " | ".join(["not run"] * 3 * (len(cats) + 1))))
            continue
        lines.append("| %s | %s |" % (label, " | ".join(cells(m, method, cats))))
    return "\n".join(lines) + "\n"


def sensitivity(d):
    runs = [("centre: steps 5, tau 250, K 2, grid 16, filter 7, alpha 0.9", "s_centre"),
            ("DDIM steps 2", "s_steps2"), ("DDIM steps 10", "s_steps10"),
            ("tau 100", "s_tau100"), ("tau 150", "s_tau150"), ("K 4", "s_K4"),
            ("grid 8 px", "s_grids8"), ("grids 8 and 16 px", "s_grids8,16"),
            ("filter 1 (none)", "s_filter1"), ("filter 15", "s_filter15"),
            ("alpha 0.5", "s_alpha0.5"), ("alpha 0.7", "s_alpha0.7")]
    lines = ["| setting | DRDC I-AUROC | DRDC P-AUROC | DRDC AUPRO | diffusion alone (alpha 1) I / P / AUPRO "
             "| base (alpha 0) I / P / AUPRO |", "|---|---|---|---|---|---|"]
    for label, run in runs:
        m = load(d, run)
        if m is None:
            lines.append("| %s | not run | | | | |" % label)
            continue

        def mean(method):
            return [pct(m[method]["mean"].get(k)) if method in m else "n/a" for k, _ in KEYS]
        dr, di, ba = mean("drdc"), " / ".join(mean("diffusion")), " / ".join(mean("base"))
        lines.append("| %s | %s | %s | %s | %s | %s |" % (label, dr[0], dr[1], dr[2], di, ba))
    return "\n".join(lines) + "\n"


def eval_speed(d, name):
    """images/s of an evaluation's test maps: every category's "maps of C: N images in T s" line
    (written by results_drdc.sh's ev() to NAME.speed), the images over the seconds."""
    path = os.path.join(d, name + ".speed")
    if not os.path.exists(path):
        return None
    per_cat = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"maps of (\S+): (\d+) images in ([0-9.]+) s", line)
            if m:
                per_cat[m.group(1)] = (int(m.group(2)), float(m.group(3)))
    n, t = sum(v[0] for v in per_cat.values()), sum(v[1] for v in per_cat.values())
    return n / t if t > 0 else None


def speed(d):
    # (label, run, method): one inference setting at a time from the centre (RESULTS.md's Fig. 2),
    # then precision, batching the refiner across images and the refiner's own size
    rows = [("base model alone (no refiner)", "s_base", "base"),
            ("centre: 128 px refiner, steps 5, K 2, grid 16, scales 1, 1/2, 1/4, fp32", "s_centre", "drdc"),
            ("centre, bf16", "s_centre_bf16", "drdc"),
            ("DDIM steps 2", "s_steps2", "drdc"), ("DDIM steps 2, bf16", "s_steps2_bf16", "drdc"),
            ("DDIM steps 10", "s_steps10", "drdc"), ("K 4", "s_K4", "drdc"),
            ("grid 8 px", "s_grids8", "drdc"), ("grids 8 and 16 px", "s_grids8,16", "drdc"),
            ("grids 8 and 16 px, bf16", "s_grids8,16_bf16", "drdc"),
            ("diffusion map at scale 1 only", "s_scales1", "drdc"),
            ("refiner runs batched across images (infer.batch_refiner)", "s_batchref", "drdc"),
            ("64 px refiner (grid 8 px, a quarter of the U-Net work)", "s_r64", "drdc"),
            ("64 px refiner, bf16", "s_r64_bf16", "drdc")]
    first = None
    for _, run, _ in rows:
        first = first or load(d, run)
    if first is None:
        return "(no runs in %s)\n" % d
    cats = list(first[next(iter(first))]["categories"].keys())
    lines = ["| setting | images/s | mean I-AUROC / P-AUROC / AUPRO | " +
             " | ".join("%s I / P / AUPRO" % c for c in cats) + " |", "|---|---|---|" + "---|" * len(cats)]
    for label, run, method in rows:
        m, ips = load(d, run), eval_speed(d, run)
        if m is None or method not in m:
            lines.append("| %s | not run | |%s" % (label, " |" * len(cats)))
            continue
        c = cells(m, method, cats)
        groups = [" / ".join(c[3 * i:3 * i + 3]) for i in range(len(cats) + 1)]
        lines.append("| %s | %s | %s | %s |" % (label, "n/a" if ips is None else "%.2f" % ips, groups[-1],
                                               " | ".join(groups[:-1])))
    return "\n".join(lines) + "\n"


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "docs/results/drdc"
    if len(sys.argv) > 2 and sys.argv[2] == "speed":
        print("Speed and quality per inference setting (every 8th test image, recalibrated on 32 validation "
              "images; percent):\n")
        print(speed(d))
        return
    print("Table 5 (every 2nd test image; percent):\n")
    print(table5(d))
    print("Sensitivity (every 8th test image, mean of the two categories; percent):\n")
    print(sensitivity(d))


if __name__ == "__main__":
    main()
