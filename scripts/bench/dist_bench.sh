#!/usr/bin/env bash
# dist_bench.sh: training speed of one process against N local ranks (`drdc train --nproc N`) on
# this machine, tiny config on synthetic data: images/s of each stage (whole stage, from the run's
# own "N epochs / N steps, X s this run" lines) and, for the ranks, the share of the stage they
# spent waiting for each other and in the all-reduce itself (DRDC_DIST_PROFILE=1: a barrier before
# each all-reduce splits the two), with the load average before and after each run. The setups
# alternate within each round. Prints a markdown table (docs/BENCH.md, section 6).
# Usage: bash scripts/bench/dist_bench.sh [--drdc PATH] [--work DIR] [--rounds N] [--steps N]
#        [--epochs N] [--train N] [--batch N] [--nproc N]
set -euo pipefail
cd "$(dirname "$0")/../.."
DRDC=build/drdc WORK=/tmp/drdc-dist-bench ROUNDS=2 STEPS=30 EPOCHS=20 TRAIN=32 BATCH=8 NPROC=2
while [ $# -gt 0 ]; do
    case "$1" in
        --drdc) DRDC=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        --epochs) EPOCHS=$2; shift 2 ;;
        --train) TRAIN=$2; shift 2 ;;
        --batch) BATCH=$2; shift 2 ;;
        --nproc) NPROC=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
DRDC=$(realpath "$DRDC")
"$DRDC" --version | grep -q "distributed training: c10d" || { echo "$DRDC has no c10d: nothing to compare" >&2; exit 1; }
mkdir -p "$WORK"
cp configs/tiny.json "$WORK/"
cd "$WORK"
[ -d data ] || "$DRDC" synth --out data --categories 2 --train "$TRAIN" --test 2 --size 64 --seed 1 >/dev/null
SETS=(--set "base.epochs=$EPOCHS" --set "base.batch=$BATCH" --set "refiner.batch=$BATCH" --set "refiner.steps=$STEPS"
      --set data.val_fraction=0.1 --set train.checkpoint_every=1000000 --set infer.steps=1 --set infer.batch=8)
CORES=$(nproc)
PER_RANK=$((CORES / NPROC > 0 ? CORES / NPROC : 1))
th() { [ "$1" = 1 ] && echo "1 thread" || echo "$1 threads"; }
SETUPS=("1 process, $(th "$CORES")|--threads $CORES" "1 process, $(th "$PER_RANK")|--threads $PER_RANK"
        "$NPROC ranks, $(th "$PER_RANK") each|--nproc $NPROC --threads $PER_RANK")

load() { cut -d' ' -f1-3 /proc/loadavg; }
# images/s of a stage from the log: base "base model: E epochs, X s", refiner "refiner: S steps, X s"
rate() {   # log, stage
    local n s
    if [ "$2" = base ]; then
        n=$(sed -n 's/^data: .* \([0-9]*\) training and.*/\1/p' "$1")
        s=$(sed -n 's/^base model: [0-9]* epochs, \([0-9.]*\) s this run/\1/p' "$1")
        awk -v n="$n" -v e="$EPOCHS" -v s="$s" 'BEGIN { printf "%.1f", n * e / s }'
    else
        s=$(sed -n 's/^refiner: [0-9]* steps, \([0-9.]*\) s this run/\1/p' "$1")
        awk -v b="$BATCH" -v st="$STEPS" -v s="$s" 'BEGIN { printf "%.2f", b * st / s }'
    fi
}
# "wait % / all-reduce % / flatten %" of a stage's rank-0 line (ranks only)
share() {   # log, stage
    sed -n "s/^$2 stage: .*waiting for the slowest rank [0-9.]* s (\([0-9.]*\) %), all-reduce transfer [0-9.]* s (\([0-9.]*\) %), flattening [0-9.]* s (\([0-9.]*\) %).*/\1 \/ \2 \/ \3/p" "$1"
}

echo "drdc: $("$DRDC" --version | tr '\n' ' ')"
echo "machine: $CORES cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "tiny config, 64 px, $((TRAIN * 2)) synthetic images (about 10 % held out), batch $BATCH (global), base $EPOCHS epochs, refiner $STEPS steps"
echo
echo "| round | setup | load before | base img/s | refiner img/s | base: wait / all-reduce / flatten % | refiner: wait / all-reduce / flatten % | load after |"
echo "|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
    for setup in "${SETUPS[@]}"; do
        name=${setup%%|*}
        read -r -a args <<< "${setup#*|}"
        before=$(load)
        log="run.$round.${name// /_}.log"
        rm -rf runs/bench
        DRDC_DIST_PROFILE=1 "$DRDC" train --config tiny.json --data-root data --out runs/bench "${SETS[@]}" "${args[@]}" \
            >"$log" 2>&1 || { echo "run failed: $log" >&2; tail -n 5 "$log" >&2; exit 1; }
        after=$(load)
        echo "| $round | $name | $before | $(rate "$log" base) | $(rate "$log" refiner) | $(share "$log" base) | $(share "$log" refiner) | $after |"
    done
done
