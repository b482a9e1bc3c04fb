#!/usr/bin/python3
"""metrics_ref.py: reference values for drdc's metrics (src/stages/metrics.c), used by
tests/unit/test_metrics.c.

Usage: metrics_ref.py IN_DIR OUT.json

IN_DIR holds one folder per case. A case folder may hold
  image_scores.npy (float32 [N]) and image_labels.npy (uint8 [N])      -> image-level metrics
  maps.npy (float32 [N, H, W]) and masks.npy (uint8 [N, H, W], != 0 anomalous) -> pixel level
OUT.json gets {"cases": {name: {"image": {...}, "pixel": {...}}}} where each block is either
  {"auroc", "ap", "f1_max", "f1_threshold"} (+ "aupro" for pixels) or {"error": why}; pixel
  blocks always carry "n_regions" (8-connected ground-truth components, scipy.ndimage.label).

AUROC and AP come from scikit-learn (roc_auc_score, average_precision_score), F1-max from its
precision_recall_curve. AUPRO is a transcription of the official MVTec AD evaluation code
(compute_pro in pro_curve_util.py and trapezoid in generic_util.py): the same steps and dtypes
(uint32 false-positive counts, float32 FPRs, float64 PRO sums), without its prints.
A single-class input is reported as {"error": ...} (roc_auc_score raises for it; the official
PRO curve would divide by zero regions or zero defect-free pixels).
"""
import json
import os
import sys
from bisect import bisect

import numpy as np
from scipy.ndimage import label
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def trapezoid(x, y, x_max=None):
    """Area under y(x) by the trapezoid rule, cut at x_max with y interpolated there
    (transcribed from the MVTec AD evaluation code's generic_util.trapezoid)."""
    x = np.asarray(x)
    y = np.asarray(y)
    finite = np.logical_and(np.isfinite(x), np.isfinite(y))
    x = x[finite]
    y = y[finite]
    correction = 0.0
    if x_max is not None:
        if x_max not in x:
            ins = bisect(x, x_max)  # x[ins-1] < x_max < x[ins]
            assert 0 < ins < len(x)
            y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
            correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
        keep = x <= x_max
        x = x[keep]
        y = y[keep]
    return np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction


def compute_pro(anomaly_maps, ground_truth_maps):
    """The PRO curve (fprs, pros) of the MVTec AD evaluation code's compute_pro.
    Returns (fprs, pros, n_regions)."""
    structure = np.ones((3, 3), dtype=int)  # 8-connectivity
    num_ok_pixels = 0
    num_gt_regions = 0
    shape = (len(anomaly_maps), anomaly_maps[0].shape[0], anomaly_maps[0].shape[1])
    fp_changes = np.zeros(shape, dtype=np.uint32)
    assert shape[0] * shape[1] * shape[2] < np.iinfo(fp_changes.dtype).max
    pro_changes = np.zeros(shape, dtype=np.float64)
    for gt_ind, gt_map in enumerate(ground_truth_maps):
        labeled, n_components = label(gt_map, structure)
        num_gt_regions += n_components
        ok_mask = labeled == 0
        num_ok_pixels += np.sum(ok_mask)
        fp_change = np.zeros_like(gt_map, dtype=fp_changes.dtype)
        fp_change[ok_mask] = 1
        pro_change = np.zeros_like(gt_map, dtype=np.float64)
        for k in range(n_components):
            region = labeled == (k + 1)
            pro_change[region] = 1.0 / np.sum(region)
        fp_changes[gt_ind, :, :] = fp_change
        pro_changes[gt_ind, :, :] = pro_change
    if num_gt_regions == 0 or num_ok_pixels == 0:
        return None, None, num_gt_regions

    scores = np.array(anomaly_maps).ravel()
    fp_flat = fp_changes.ravel()
    pro_flat = pro_changes.ravel()
    order = np.argsort(scores).astype(np.uint32)[::-1]  # descending scores
    np.take(scores, order, out=scores)
    np.take(fp_flat, order, out=fp_flat)
    np.take(pro_flat, order, out=pro_flat)
    del order

    np.cumsum(fp_flat, out=fp_flat)
    fprs = fp_flat.astype(np.float32, copy=False)
    np.divide(fprs, num_ok_pixels, out=fprs)
    np.cumsum(pro_flat, out=pro_flat)
    np.divide(pro_flat, num_gt_regions, out=pro_flat)
    pros = pro_flat

    # keep the last point of each run of equal scores (one point per threshold)
    keep = np.append(np.diff(scores) != 0, np.True_)
    fprs = fprs[keep]
    pros = pros[keep]
    np.clip(fprs, a_min=None, a_max=1.0, out=fprs)
    np.clip(pros, a_min=None, a_max=1.0, out=pros)
    zero = np.array([0.0])
    one = np.array([1.0])
    return np.concatenate((zero, fprs, one)), np.concatenate((zero, pros, one)), num_gt_regions


def curve_metrics(y_true, y_score):
    """sklearn AUROC, AP and F1-max (and the threshold reaching it, None when several thresholds
    come within 1e-9 of the maximum), or {"error": why}."""
    try:
        auroc = roc_auc_score(y_true, y_score)
    except ValueError as e:  # one class only
        return {"error": "roc_auc_score: " + str(e)}
    ap = average_precision_score(y_true, y_score)
    precision, recall, thresholds = precision_recall_curve(y_true, y_score)
    # precision/recall have one more entry than thresholds (the final P=1, R=0 point)
    p = precision[:-1]
    r = recall[:-1]
    denom = p + r
    f1 = np.zeros_like(p)
    np.divide(2 * p * r, denom, out=f1, where=denom > 0)
    best = float(f1.max())
    # the threshold is only a fair comparison when the maximum is not a (near) tie
    at_best = np.nonzero(f1 >= best - 1e-9)[0]
    f1_threshold = float(thresholds[at_best[0]]) if len(at_best) == 1 else None
    return {"auroc": float(auroc), "ap": float(ap), "f1_max": best, "f1_threshold": f1_threshold}


def run_case(folder):
    out = {}
    scores_path = os.path.join(folder, "image_scores.npy")
    if os.path.exists(scores_path):
        scores = np.load(scores_path)
        labels = np.load(os.path.join(folder, "image_labels.npy")) != 0
        out["image"] = curve_metrics(labels.astype(np.int64), scores)
    maps_path = os.path.join(folder, "maps.npy")
    if os.path.exists(maps_path):
        maps = np.load(maps_path)
        masks = (np.load(os.path.join(folder, "masks.npy")) != 0).astype(np.uint8)
        pixel = curve_metrics(masks.ravel().astype(np.int64), maps.ravel())
        fprs, pros, n_regions = compute_pro(list(maps), list(masks))
        if "error" not in pixel:
            if fprs is None:
                pixel = {"error": "AUPRO undefined: %d regions" % n_regions}
            else:
                pixel["aupro"] = float(trapezoid(fprs, pros, x_max=0.3) / 0.3)
        pixel["n_regions"] = int(n_regions)
        out["pixel"] = pixel
    return out


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: metrics_ref.py IN_DIR OUT.json\n")
        return 2
    in_dir, out_path = sys.argv[1], sys.argv[2]
    cases = {}
    for name in sorted(os.listdir(in_dir)):
        folder = os.path.join(in_dir, name)
        if os.path.isdir(folder):
            cases[name] = run_case(folder)
    with open(out_path + ".tmp", "w") as f:
        json.dump({"cases": cases}, f, indent=1)
    os.replace(out_path + ".tmp", out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
