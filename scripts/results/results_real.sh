#!/usr/bin/env bash
# results_real.sh: the real-data base-model runs of docs/RESULTS.md ("Base model"): one multi-class
# model on ../shared/data (kolektorsdd + magnetic_tile together, MobileNetV2 features, 224 px),
# with ImageNet weights (9 epochs) and with a random frozen backbone (3 epochs, the control of
# ../shared/ANCHORS.md), each evaluated at the images' original size and at 224 px (UniAD's
# protocol). CPU: about 1 hour per run on 2 idle cores (base stage only: --stage base).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${DRDC_BIN:-build/drdc}"
OUT="${RESULTS_DIR:-docs/results}"
mkdir -p "$OUT"

"$BIN" train --config kolektor_mtile.json --stage base --out runs/kolektor_mtile
"$BIN" train --config kolektor_mtile.json --stage base --out runs/kolektor_mtile_random \
    --set backbone.weights= --set base.epochs=3

for run in kolektor_mtile kolektor_mtile_random; do
    "$BIN" eval --model "runs/$run/model.safetensors" --method base --json "$OUT/$run.json" | tee "$OUT/$run.txt"
    "$BIN" eval --model "runs/$run/model.safetensors" --method base --eval-size 224 --json "$OUT/$run.224.json" \
        | tee "$OUT/$run.224.txt"
done
