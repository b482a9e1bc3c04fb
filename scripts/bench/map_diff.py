#!/usr/bin/python3
"""map_diff.py: the largest difference between two sets of score maps written by `drdc eval
--dump-maps` (e.g. infer.precision fp32 against bf16), per method folder, relative to the range of
the first set's maps over all images of that method.

    /usr/bin/python3 scripts/bench/map_diff.py DIR_A DIR_B
"""
import os
import sys

import numpy as np


def maps(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".npy"):
                p = os.path.join(d, f)
                out[os.path.relpath(p, root)] = p
    return out


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    a, b = maps(sys.argv[1]), maps(sys.argv[2])
    common = sorted(set(a) & set(b))
    if not common or len(common) != len(a) or len(a) != len(b):
        print("map_diff: the folders do not hold the same maps (%d and %d files, %d in common)"
              % (len(a), len(b), len(common)), file=sys.stderr)
        return 1
    by_method = {}
    for rel in common:
        by_method.setdefault(rel.split(os.sep)[0], []).append(rel)
    print("%-12s %7s %14s %14s %16s %16s" % ("method", "images", "map range", "max |diff|", "max |diff|/range",
                                             "mean |diff|/range"))
    for method, rels in sorted(by_method.items()):
        lo, hi, dmax, dsum, n = np.inf, -np.inf, 0.0, 0.0, 0
        for rel in rels:
            x, y = np.load(a[rel]).astype(np.float64), np.load(b[rel]).astype(np.float64)
            lo, hi = min(lo, x.min()), max(hi, x.max())
            d = np.abs(x - y)
            dmax, dsum, n = max(dmax, d.max()), dsum + d.sum(), n + d.size
        rng = hi - lo
        print("%-12s %7d %14.4g %14.4g %16.4g %16.4g" % (method, len(rels), rng, dmax, dmax / rng, dsum / n / rng))
    return 0


if __name__ == "__main__":
    sys.exit(main())
