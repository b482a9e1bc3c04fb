#!/usr/bin/env bash
# test.sh: installs and builds (scripts/setup.sh), then runs the whole test suite under ctest.
# Tests that need ../shared (real data, pretrained weights) skip with a message when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD="${DRDC_BUILD_DIR:-build}"
cd "$BUILD"
ctest --output-on-failure -j2 "$@"
