#!/usr/bin/env python3
"""score_texture.py: does a method's image score follow the image's brightness or fine texture
rather than its defect? (a diagnostic for docs/RESULTS.md). Reads the per-image scores of
`drdc eval --json` and, for each test image of one category, its grey mean, its standard deviation
and its high-frequency energy (mean |g - box5(g)| at 128 px, the detail the refiner has to
restore in a hidden cell); prints the correlation of the diffusion and base scores with each, and
the means of good and defective images.

    /usr/bin/python3 scripts/results/score_texture.py docs/results/drdc/t5_cond.json magnetic_tile

Needs numpy, scipy and Pillow (Debian: python3-numpy python3-scipy python3-pil).
"""
import json
import sys

import numpy as np
from PIL import Image
from scipy.ndimage import uniform_filter
if len(sys.argv) != 3:
    sys.exit(__doc__)
j = json.load(open(sys.argv[1]))
cat = sys.argv[2]
rows=[]
for im in j['images']:
    if im['category']!=cat: continue
    g=np.asarray(Image.open(im['path']).convert('L').resize((128,128),Image.BILINEAR),dtype=np.float64)/255
    hp=g-uniform_filter(g,size=5)          # high-frequency content the refiner must restore
    rows.append((im['label'],im['defect'],g.mean(),g.std(),np.abs(hp).mean(),im['scores']['diffusion'],im['scores']['base']))
a=np.array([[r[0],r[2],r[3],r[4],r[5],r[6]] for r in rows])
lab,mean,std,hf,sd,sb=a.T
def r(x,y): return np.corrcoef(x,y)[0,1]
print("%s: %d images"%(cat,len(rows)))
print("corr(diffusion score, image mean) %+.2f, (image std) %+.2f, (high-frequency energy) %+.2f"%(r(sd,mean),r(sd,std),r(sd,hf)))
print("corr(base score,      image mean) %+.2f, (image std) %+.2f, (high-frequency energy) %+.2f"%(r(sb,mean),r(sb,std),r(sb,hf)))
for L,name in ((0,'good'),(1,'defective')):
    k=lab==L; print("%-9s n=%3d  mean brightness %.3f  std %.3f  high-frequency %.4f  diffusion score %.4f"%(name,k.sum(),mean[k].mean(),std[k].mean(),hf[k].mean(),sd[k].mean()))
