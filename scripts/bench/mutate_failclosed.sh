#!/bin/bash
# mutate_failclosed.sh: puts back, one at a time, four behaviours issue 14 removed (no finiteness check on loading, one noise stream per run, no regular-file check on inputs, no run-folder lock), rebuilds, runs test_failclosed and restores the source: each must make exactly its own test fail. Run from anywhere; uses build/.
cd "$(dirname "$0")/../.."
cur=""
trap '[ -n "$cur" ] && cp /tmp/mut_backup "$cur"' EXIT   # an interrupted run restores the source
run() {   # run NAME FILE SED
  local name="$1" file="$2" expr="$3"
  cp "$file" /tmp/mut_backup
  cur="$file"
  sed -i "$expr" "$file"
  if cmp -s "$file" /tmp/mut_backup; then echo "$name: sed changed nothing (the source moved: update this script)"; cur=""; return; fi
  make -C build drdc test_failclosed > /tmp/mut_build.log 2>&1 || { echo "$name: build failed"; cp /tmp/mut_backup "$file"; cur=""; return; }
  (cd build && ctest -R test_failclosed --output-on-failure > /tmp/mut_$name.log 2>&1)
  echo "$name: $(grep -E '^FAIL' /tmp/mut_$name.log | tr '\n' ' ') | $(grep -E 'passed,' /tmp/mut_$name.log | tail -1)"
  cp /tmp/mut_backup "$file"
  cur=""
}
run finite src/formats/params.c 's/if (!isfinite(buf\[i\])) {/if (0) {/'
run seed src/model/model.c 's/return drdc_splitmix64(&state);/static uint64_t calls; (void)state; return drdc_seed(m->cfg.train.seed, DRDC_SEED_INFER) + calls++;/'
run isreg src/core/fsutil.c 's/^    if (!S_ISREG(sb.st_mode)) {/    if (0) {/'
run lock src/model/train.c 's/flock(\*fd, LOCK_EX | LOCK_NB) != 0/0/'
make -C build drdc test_failclosed > /tmp/mut_build.log 2>&1
git status --short src
echo mutations done
