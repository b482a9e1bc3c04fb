#!/usr/bin/env python3
"""map_brightness.py: how much a method's maps follow the image's local brightness (a diagnostic
for docs/RESULTS.md). Reads maps written by `drdc eval --dump-maps DIR` (one folder per method,
each map at its image's original size) and prints, per image, the Pearson correlation between the
map and the local mean brightness of the grey image (a box of 1/14 of the shorter side, the
base model's feature cell).

    drdc eval --model M --categories magnetic_tile --method all --every 60 --dump-maps /tmp/dm
    /usr/bin/python3 scripts/results/map_brightness.py /tmp/dm ../shared/data magnetic_tile

Needs numpy, scipy and Pillow (Debian: python3-numpy python3-scipy python3-pil).
"""
import glob
import os
import sys

import numpy as np
from PIL import Image
from scipy.ndimage import uniform_filter


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    dump, root, category = sys.argv[1:]
    methods = sorted(m for m in os.listdir(dump) if os.path.isdir(os.path.join(dump, m, category)))
    print("%-10s %-22s %s" % ("defect", "image", "  ".join("r(%s)" % m for m in methods)))
    per = {m: [] for m in methods}
    for path in sorted(glob.glob(os.path.join(dump, methods[0], category, "*", "*.npy"))):
        defect, stem = path.split(os.sep)[-2], os.path.basename(path)[:-4]
        image = glob.glob(os.path.join(root, category, "test", defect, stem + ".*"))[0]
        grey = np.asarray(Image.open(image).convert("L"), dtype=np.float64) / 255.0
        box = max(3, min(grey.shape) // 14)
        bright = uniform_filter(grey, size=box)
        row = []
        for m in methods:
            h = np.load(os.path.join(dump, m, category, defect, stem + ".npy")).astype(np.float64)
            r = np.corrcoef(h.ravel(), bright.ravel())[0, 1]
            per[m].append(r)
            row.append("%+.2f" % r)
        print("%-10s %-22s %s" % (defect, stem, "  ".join("%*s" % (len(m) + 3, v) for m, v in zip(methods, row))))
    for m in methods:
        v = np.array(per[m])
        print("%s: mean |r| %.2f, mean r %+.2f over %d images" % (m, np.abs(v).mean(), v.mean(), len(v)))


if __name__ == "__main__":
    main()
