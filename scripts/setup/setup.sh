#!/usr/bin/env bash
# setup.sh: installs what drdc needs on Debian 12 (apt-get) and builds it into ./build.
# Usage: bash scripts/setup/setup.sh [TARGET...]
#   (default: everything, tests included; demo.sh builds only drdc)
# Safe to run again: packages already present are not reinstalled; the build is incremental.
#   DRDC_BUILD_DIR   build folder (default: build)
#   DRDC_CMAKE_ARGS  extra CMake arguments (e.g. -DCMAKE_PREFIX_PATH=/path/to/libtorch)
set -euo pipefail
cd "$(dirname "$0")/../.."

# chromium: headless, for tests/e2e/test_report_browser.sh (renders eval's HTML report; skipped without it)
# libtcmalloc-minimal4: gperftools' malloc, which the drdc binary links in place of glibc's (faster for libtorch's many allocations)
# libgloo-dev: the Gloo headers c10d's ProcessGroupGloo.hpp includes (distributed training; without it drdc trains in one process)
PACKAGES=(build-essential cmake pkg-config libtorch-dev libgloo-dev libstb-dev libcjson-dev libopenblas0-pthread
          libtcmalloc-minimal4
          python3 python3-pip python3-torch python3-numpy python3-scipy python3-sklearn python3-pil
          chromium)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

BUILD="${DRDC_BUILD_DIR:-build}"
# shellcheck disable=SC2086
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release ${DRDC_CMAKE_ARGS:-} >/dev/null
TARGETS=()
for t in "$@"; do TARGETS+=(--target "$t"); done
cmake --build "$BUILD" -j"$(nproc)" "${TARGETS[@]}"
# The EfficientNet reference ports (pure Python, from PyPI) that the backbone twin tests use.
[ $# -eq 0 ] && { bash scripts/setup/fetch_pydeps.sh "$BUILD/pydeps" || true; }
echo "setup: built $BUILD/drdc"
