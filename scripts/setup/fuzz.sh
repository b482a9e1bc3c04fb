#!/usr/bin/env bash
# fuzz.sh: builds drdc's libFuzzer targets (CMake option DRDC_FUZZ, clang, ASan + UBSan) in their
# own build folder and runs each for a bounded time, one after the other (one process each).
#
# Usage: scripts/setup/fuzz.sh [TARGET...]     TARGET: safetensors config csv pth npy image (default all)
# Environment:
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_BUILD     build folder (default <repo>/build-fuzz)
#   FUZZ_ARGS      extra libFuzzer flags for every target (e.g. "-max_len=65536")
#   FUZZ_NO_BUILD  1: skip configure/build (use what FUZZ_BUILD holds)
# Each target starts from the committed seeds tests/fuzz/corpus/<target>/ plus the crash
# regressions tests/fuzz/regressions/<target>-*.bin, copied into a scratch corpus
# ($FUZZ_BUILD/corpus/<target>, kept between runs) so the committed folder stays small. The
# dictionary tests/fuzz/<target>.dict is used when present. A crash, leak, timeout or OOM input is
# saved under $FUZZ_BUILD/artifacts/<target>/ and the run of that target stops there; the script
# prints the stack and goes on with the next target. At the end: one line per target (seconds,
# executions, crashes). Exit status 1 when any target found something, else 0.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${FUZZ_BUILD:-$ROOT/build-fuzz}"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
ALL_TARGETS="safetensors config csv pth npy image"
TARGETS="${*:-$ALL_TARGETS}"

for t in $TARGETS; do
    case " $ALL_TARGETS " in *" $t "*) ;; *) echo "fuzz.sh: unknown target '$t' (known: $ALL_TARGETS)" >&2; exit 2 ;; esac
done
if ! command -v clang >/dev/null 2>&1; then
    echo "fuzz.sh: clang not found; install it with: apt-get install -y clang libclang-rt-14-dev" >&2
    exit 2
fi

if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
    # Debug keeps assert() on; -O1 as libFuzzer recommends (the fuzz flags add -g).
    mkdir -p "$BUILD"
    CC=clang cmake -S "$ROOT" -B "$BUILD" -DDRDC_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug \
        -DCMAKE_C_FLAGS_DEBUG="-O1" >"$BUILD/fuzz-configure.log" 2>&1 ||
        { cat "$BUILD/fuzz-configure.log"; echo "fuzz.sh: configure failed" >&2; exit 2; }
    build_targets=""
    for t in $TARGETS; do build_targets="$build_targets --target fuzz_$t"; done
    # shellcheck disable=SC2086
    cmake --build "$BUILD" -j2 $build_targets
fi

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

summary=""
found=0
for t in $TARGETS; do
    exe="$BUILD/fuzz_$t"
    corpus="$BUILD/corpus/$t"
    artifacts="$BUILD/artifacts/$t"
    log="$BUILD/fuzz_$t.log"
    mkdir -p "$corpus" "$artifacts"
    cp -n "$ROOT/tests/fuzz/corpus/$t/"* "$corpus/" 2>/dev/null || true
    for r in "$ROOT/tests/fuzz/regressions/$t"-*.bin; do
        [ -e "$r" ] && cp -n "$r" "$corpus/"
    done
    dict=()
    [ -f "$ROOT/tests/fuzz/$t.dict" ] && dict=(-dict="$ROOT/tests/fuzz/$t.dict")
    before=$(find "$artifacts" -type f | wc -l)
    echo "== fuzz_$t: $SECONDS_EACH s, corpus $corpus ($(ls "$corpus" | wc -l) inputs)"
    set +e
    # shellcheck disable=SC2086
    "$exe" "$corpus" "${dict[@]}" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    secs=$(sed -n 's/^stat::peak_rss_mb.*//; s/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    if [ -z "$execs" ]; then   # stopped by a crash: the last status line has the count
        execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    fi
    after=$(find "$artifacts" -type f | wc -l)
    crashes=$((after - before))
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        found=1
        status="FOUND (exit $rc)"
        echo "---- fuzz_$t found a problem (log: $log); the report:"
        sed -n '/^==[0-9]*==ERROR\|^SUMMARY\|runtime error\|deadly signal\|ALARM\|out-of-memory/,$p' "$log" | head -60
        find "$artifacts" -type f -newer "$exe" | sed 's/^/  input: /'
    else
        status="ok"
    fi
    echo "   executions ${execs:-?}, coverage ${cov:-?} edges, crashes $crashes, $status"
    summary="$summary$(printf '%-12s %6s s %12s execs %4s crashes  %s' "$t" "${secs:-$SECONDS_EACH}" "${execs:-?}" "$crashes" "$status")\n"
done

echo
echo "target        seconds   executions   crashes  status"
printf "%b" "$summary"
exit $found
