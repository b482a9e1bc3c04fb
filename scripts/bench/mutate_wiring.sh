#!/bin/bash
# mutate_wiring.sh: puts in, one at a time, the three wiring bugs of issue 11 (the refiner's input
# left in [0,1] at inference, the base and diffusion maps swapped before eq. 17, the EMA never
# updated), rebuilds, runs the tests that guard them and restores the source: each must make a test
# fail. Run from anywhere; uses build/.
cd "$(dirname "$0")/../.."
cur=""
trap '[ -n "$cur" ] && cp /tmp/mut_backup "$cur"' EXIT   # an interrupted run restores the source
run() {   # run NAME FILE PYTHON-REPLACE TESTS
    local name="$1" file="$2" old="$3" new="$4" tests="$5"
    cp "$file" /tmp/mut_backup
    cur="$file"
    python3 - "$file" "$old" "$new" <<'PY'
import sys
p, old, new = sys.argv[1:]
s = open(p).read()
assert s.count(old) == 1, "mutation site not found once: " + old
open(p, "w").write(s.replace(old, new))
PY
    cmake --build build -j2 >/dev/null 2>&1 || echo "$name: build failed"
    (cd build && ctest -R "$tests" 2>&1 | grep -E 'tests passed|Failed|Passed' | tr '\n' ' ')
    echo " <- $name"
    cp /tmp/mut_backup "$file"
    cur=""
}
run "diffusion input left in [0,1] at inference" src/model/model.c 'TRY(drdc_model_refiner_range(&x, img_r));' 'TRY(dt_clone(&x, img_r));' 'test_wiring|test_drdc$'
run "base and diffusion maps swapped before eq. 17" src/stages/fusion.c 'TRY(drdc_fusion_blend(&h, h_diff_f, h_base,' 'TRY(drdc_fusion_blend(&h, h_base, h_diff_f,' 'test_wiring|test_fusion'
run "EMA never updated" src/model/train_refiner.c 'TRY(ema_update(&m->refiner, &live, drdc_ema_decay_at(rc, m->refiner_steps)));' 'if (0) TRY(ema_update(&m->refiner, &live, drdc_ema_decay_at(rc, m->refiner_steps)));' 'test_drdc$'
cmake --build build -j2 >/dev/null 2>&1; git status --short src
