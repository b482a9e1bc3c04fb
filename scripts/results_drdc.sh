#!/usr/bin/env bash
# results_drdc.sh: the real-data DRDC runs of docs/RESULTS.md (issue 6), on the base model of
# scripts/results_real.sh (runs/kolektor_mtile). CPU-sized: a reduced refiner (1.3 M parameters,
# 224 px, t < 300) trained for 1200 steps, with and without model conditioning.
#
#   bash scripts/results_drdc.sh train-cond     # stage 2 with model conditioning (eq. 10)
#   bash scripts/results_drdc.sh train-uncond   # stage 2 without it (U-Net input x_t only)
#   bash scripts/results_drdc.sh table5         # the paper's Table 5 rows, every 2nd test image
#   bash scripts/results_drdc.sh sensitivity    # Fig. 2: steps, tau, K, filter, alpha, every 8th
#
# THREADS (default 0 = all cores) sets --threads; two phases can run side by side with THREADS=1.
# Measured on 2 shared cores: about 0.3 steps/s per thread in training (batch 4), 0.3 test
# images/s per thread in evaluation (5 DDIM steps, K = 2, one grid).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${DRDC_BIN:-build/drdc}"
OUT="${RESULTS_DIR:-docs/results}"
T="--threads ${THREADS:-0}"
STEPS="${REFINER_STEPS:-1200}"
mkdir -p "$OUT"

# the reduced refiner and the inference settings of every run below
R="--set refiner.channels=32 --set refiner.channel_mult=1,1,2,2 --set refiner.res_blocks=1
   --set refiner.attention_res=28 --set refiner.head_channels=32 --set refiner.batch=4
   --set refiner.max_train_t=300 --set infer.steps=5 --set infer.grids=16 --set infer.batch=4
   --set train.checkpoint_every=50"
COND=runs/kolektor_mtile_drdc
UNCOND=runs/kolektor_mtile_uncond

train() {   # train RUN [extra --set ...]: stage 2 on a copy of the base run, resumable
    local run="$1"
    shift
    [ -d "$run" ] || cp -r runs/kolektor_mtile "$run"
    local resume=""
    [ -f "$run/checkpoint.safetensors" ] && resume="--resume"
    # shellcheck disable=SC2086
    "$BIN" train --config kolektor_mtile.json --out "$run" --stage refiner $R --set refiner.steps="$STEPS" \
        $resume $T "$@"
}

ev() {      # ev NAME MODEL [eval options]: tables to OUT/NAME.txt, metrics to OUT/NAME.json
    local name="$1" model="$2"
    shift 2
    # shellcheck disable=SC2086
    "$BIN" eval --model "$model/model.safetensors" --json "$OUT/$name.json" $T "$@" | tee "$OUT/$name.txt"
}

# one named evaluation: its model and options
job() {
    local S="--method all --every 8 --calib-images 32"
    case "$1" in
    # Table 5: base, diffusion alone and fused for both refiners, every 2nd test image; then the
    # multi-scale base map (recalibrated on all validation images)
    t5_cond) ev t5_cond "$COND" --method all --every 2 --vis "${VIS_DIR:-/tmp/drdc_vis}" ;;
    t5_uncond) ev t5_uncond "$UNCOND" --method all --every 2 ;;
    t5_cond_msbase) ev t5_cond_msbase "$COND" --method all --every 2 --set infer.base_scales=1,0.5,0.25 ;;
    # Fig. 2: one change at a time from the centre (steps 5, tau 250, K 2, filter 7, alpha 0.9),
    # each recalibrated on the same 32 validation images, every 8th test image; alpha 1 and 0
    # are the diffusion and base rows of every run
    s_centre) ev s_centre "$COND" $S --set infer.steps=5 ;;
    s_steps*) ev "$1" "$COND" $S --set infer.steps="${1#s_steps}" ;;
    s_tau*) ev "$1" "$COND" $S --set infer.tau="${1#s_tau}" ;;
    s_K*) ev "$1" "$COND" $S --set infer.K="${1#s_K}" ;;
    s_filter*) ev "$1" "$COND" $S --set infer.filter="${1#s_filter}" ;;
    s_alpha*) ev "$1" "$COND" $S --set infer.alpha="${1#s_alpha}" ;;
    *) echo "unknown job $1" >&2; return 2 ;;
    esac
}
TABLE5="t5_cond t5_uncond t5_cond_msbase"
SENSITIVITY="s_centre s_steps2 s_steps10 s_tau100 s_K4 s_filter1 s_filter15 s_alpha0.3 s_alpha0.5 s_alpha0.7"

case "${1:-}" in
train-cond) train "$COND" ;;
train-uncond) train "$UNCOND" --set refiner.model_conditioning=false ;;
table5) for j in $TABLE5; do job "$j"; done ;;
sensitivity) for j in $SENSITIVITY; do job "$j"; done ;;
job) job "$2" ;;
*)
    echo "usage: bash scripts/results_drdc.sh train-cond|train-uncond|table5|sensitivity|job NAME" >&2
    exit 2
    ;;
esac
