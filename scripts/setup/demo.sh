#!/usr/bin/env bash
# demo.sh: installs and builds (scripts/setup/setup.sh), then runs the main job on the built-in demo
# data: a synthetic dataset (drdc synth), one multi-class model trained on all its categories
# (configs/tiny.json: base transformer, then the diffusion refiner), evaluation of base and
# DRDC side by side, and heatmaps for a folder of test images. Takes a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup/setup.sh drdc
BIN="${DRDC_BUILD_DIR:-build}/drdc"
"$BIN" --version

rm -rf demo-data
"$BIN" synth --out demo-data --categories 4 --train 40 --test 20 --size 128 --seed 0

# ImageNet MobileNetV2 weights when ../shared/weights has them; else a random backbone (warned).
WEIGHTS=../shared/weights/mobilenet_v2_1.0_224.safetensors
SET=()
if [ -f "$WEIGHTS" ]; then SET=(--set "backbone.weights=$WEIGHTS"); fi

# --force: a demo run again replaces its previous run folder
"$BIN" train --config tiny.json --out runs/demo --force "${SET[@]}"
"$BIN" eval --dataset mvtec --method both --json runs/demo/eval.json --report runs/demo/report
"$BIN" infer --images demo-data/disc/test --out-dir runs/demo/heatmaps --masks --panels

echo
echo "demo done:"
echo "  model        runs/demo/model.safetensors (runs/latest points at it; loss log runs/demo/loss.csv)"
echo "  metrics      runs/demo/eval.json (tables above), report runs/demo/report/index.html"
echo "  heatmaps     runs/demo/heatmaps/<defect>/*.heat.png, .overlay.png, .mask.png, .panel.png, scores.csv"
