#!/usr/bin/env bash
# test.sh: installs and builds (scripts/setup/setup.sh), runs the whole test suite under ctest, then
# the fast unit tests again in an AddressSanitizer + UndefinedBehaviorSanitizer build
# (scripts/setup/sanitize.sh; DRDC_SKIP_SANITIZE=1 leaves that part out).
# Tests that need ../shared (real data, pretrained weights) skip with a message when it is absent.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup/setup.sh
BUILD="${DRDC_BUILD_DIR:-build}"
(cd "$BUILD" && ctest --output-on-failure -j2 "$@")
if [ "${DRDC_SKIP_SANITIZE:-0}" != 1 ]; then
    bash scripts/setup/sanitize.sh
fi
