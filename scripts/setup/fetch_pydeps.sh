#!/usr/bin/env bash
# fetch_pydeps.sh: puts the pure-Python EfficientNet reference ports that the backbone twin
# (scripts/twins/twin_backbone.py) compares against into build/pydeps (or $1):
#   efficientnet_pytorch 0.7.1       lukemelas' EfficientNet-PyTorch (b0..b7), sdist from PyPI
#   efficientnet_lite_pytorch 0.1.0  its EfficientNet-Lite fork (lite0..4), wheel from PyPI
# Only the sources are unpacked (no install, no dependencies: they need just torch, which the
# tests take from Debian's python3-torch). Safe to run again; does nothing when both are there.
# Without network the tests that need them skip with a message; nothing else depends on them.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST="${1:-build/pydeps}"
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"

if [ -f "$DEST/efficientnet_pytorch/model.py" ] && [ -f "$DEST/efficientnet_lite_pytorch/model.py" ]; then
    echo "fetch_pydeps: already in $DEST"
    exit 0
fi

# A python3 with pip: the first on PATH (e.g. pyenv) usually has it; Debian's may not.
PIP_PY=""
for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -m pip --version >/dev/null 2>&1; then
        PIP_PY="$py"
        break
    fi
done
if [ -z "$PIP_PY" ]; then
    echo "fetch_pydeps: no python3 with pip found; EfficientNet twin tests will be skipped" >&2
    exit 0
fi

DL="$(mktemp -d)"
trap 'rm -rf "$DL"' EXIT
if ! "$PIP_PY" -m pip download --quiet --no-deps efficientnet_pytorch==0.7.1 -d "$DL" ||
   ! "$PIP_PY" -m pip download --quiet --no-deps efficientnet_lite_pytorch==0.1.0 -d "$DL"; then
    echo "fetch_pydeps: download failed; EfficientNet twin tests will be skipped" >&2
    exit 0
fi

# sdist: efficientnet_pytorch-0.7.1/efficientnet_pytorch/*.py
tar -xzf "$DL"/efficientnet_pytorch-0.7.1.tar.gz -C "$DL"
rm -rf "$DEST/efficientnet_pytorch"
cp -r "$DL/efficientnet_pytorch-0.7.1/efficientnet_pytorch" "$DEST/"
# wheel (a zip): efficientnet_lite_pytorch/*.py
"$PIP_PY" -m zipfile -e "$DL"/efficientnet_lite_pytorch-0.1.0-py3-none-any.whl "$DL/lite"
rm -rf "$DEST/efficientnet_lite_pytorch"
cp -r "$DL/lite/efficientnet_lite_pytorch" "$DEST/"
echo "fetch_pydeps: efficientnet_pytorch 0.7.1 and efficientnet_lite_pytorch 0.1.0 in $DEST"
