#!/usr/bin/python3
"""soak.py: `drdc infer --images` over a large folder in one process: memory must not grow, every
good image must be scored and every bad one listed.

    /usr/bin/python3 scripts/bench/soak.py [--model runs/latest/model.safetensors] [--n 2000]
        [--bad-every 40] [--drdc build/drdc] [--method drdc|base] [--work /tmp/drdc_soak]
        [--bound-mb 64]

Writes N generated images (sizes 40..220 px, noise and stripes, PNG and JPEG, some in subfolders)
of which every --bad-every-th is broken (truncated PNG, random bytes, empty file, text named .png),
runs one `drdc infer` over them with --jsonl, samples the process's resident memory (VmRSS) each
time another 100 images are finished, and prints the table, the growth after the first 100 images
and the counts. Exit status 1 when the growth exceeds --bound-mb, a good image has no normal or
anomalous verdict, or a bad image is not listed as an error. Debian's python3-pil writes the images.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time

from PIL import Image


def make_images(root, n, bad_every, seed=5):
    rng = random.Random(seed)
    good, bad = [], []
    for i in range(n):
        sub = "batch%02d" % (i // 250)
        os.makedirs(os.path.join(root, sub), exist_ok=True)
        if bad_every and i % bad_every == bad_every - 1:
            kind = (i // bad_every) % 4
            path = os.path.join(root, sub, "bad%04d.png" % i)
            with open(path, "wb") as f:
                if kind == 0:
                    f.write(b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(40)))   # truncated
                elif kind == 1:
                    f.write(bytes(rng.randrange(256) for _ in range(500)))                       # noise
                elif kind == 2:
                    pass                                                                          # empty
                else:
                    f.write(b"this is not an image\n")
            bad.append(os.path.relpath(path, root))
            continue
        w, h = rng.randrange(40, 221), rng.randrange(40, 221)
        img = Image.effect_noise((w, h), 30 + rng.random() * 40).convert("RGB")
        ext = "jpg" if i % 3 == 0 else "png"
        path = os.path.join(root, sub, "img%04d.%s" % (i, ext))
        img.save(path)
        good.append(os.path.relpath(path, root))
    return good, bad


def rss_mb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/latest/model.safetensors")
    ap.add_argument("--drdc", default="build/drdc")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--bad-every", type=int, default=40)
    ap.add_argument("--method", default="drdc")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/drdc_soak")
    ap.add_argument("--bound-mb", type=float, default=64.0)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    images, out = os.path.join(a.work, "images"), os.path.join(a.work, "out")
    good, bad = make_images(images, a.n, a.bad_every)
    jsonl = os.path.join(a.work, "results.jsonl")
    cmd = [a.drdc, "infer", "--model", a.model, "--images", images, "--out-dir", out, "--jsonl", jsonl, "--quiet",
           "--method", a.method, "--threads", str(a.threads)]
    print("soak: %d images (%d broken) ; %s" % (a.n, len(bad), " ".join(cmd)), flush=True)
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples, next_mark = [], 100
    while p.poll() is None:
        done = count_lines(jsonl)
        if done >= next_mark:
            r = rss_mb(p.pid)
            if r is not None:
                samples.append((done, r, time.time() - t0))
            next_mark = (done // 100 + 1) * 100
        time.sleep(0.05)
    stdout, stderr = p.communicate()
    wall = time.time() - t0
    verdicts = {}
    with open(jsonl) as f:
        for line in f:
            o = json.loads(line)
            verdicts[o["image"]] = o["verdict"]
    good_ok = sum(1 for g in good if verdicts.get(g) in ("normal", "anomalous"))
    bad_listed = sum(1 for b in bad if verdicts.get(b) == "error")
    print("\n  images done   RSS MiB   seconds")
    for done, r, t in samples:
        print("  %11d %9.1f %9.1f" % (done, r, t))
    growth = samples[-1][1] - samples[0][1] if len(samples) >= 2 else float("nan")
    print("\nexit code %d (3 = some images not judged), %.1f s, %.2f images/s" % (p.returncode, wall, a.n / wall))
    print("good images scored: %d of %d; broken images listed as errors: %d of %d" %
          (good_ok, len(good), bad_listed, len(bad)))
    print("RSS growth from %d to %d images: %.1f MiB (bound %.0f MiB)" %
          (samples[0][0] if samples else 0, samples[-1][0] if samples else 0, growth, a.bound_mb))
    ok = p.returncode == (3 if bad else 0) and good_ok == len(good) and bad_listed == len(bad) and \
        (growth == growth and growth <= a.bound_mb)
    if not ok:
        print("SOAK FAILED\n" + stderr[-2000:])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
