#!/usr/bin/env bash
# demo.sh: installs and builds (scripts/setup.sh), then runs the main job on the built-in demo
# data: writes a synthetic dataset with `drdc synth` into demo-data/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BIN="${DRDC_BUILD_DIR:-build}/drdc"
"$BIN" --version
rm -rf demo-data
"$BIN" synth --out demo-data --categories 4 --train 40 --test 20 --size 128 --seed 0
echo "demo: synthetic dataset in demo-data/ (MVTec layout); training is not built yet"
