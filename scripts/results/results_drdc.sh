#!/usr/bin/env bash
# results_drdc.sh: the real-data DRDC runs of docs/RESULTS.md ("Full DRDC on real data"), with the
# corrected sampler (the reverse process starts from the noised input image) and the EMA warm-up.
# One multi-class model on kolektorsdd + magnetic_tile (configs/kolektor_mtile.json); CPU-sized: a
# reduced refiner (32 channels, mults 1,1,2,2, 1.3 M parameters) at 128 px, trained on t < 300.
# Every job is resumable (run it again after a crash or kill: training resumes from its checkpoint,
# finished evaluations are skipped).
#
#   bash scripts/results/results_drdc.sh base           # stage 1 (runs/kolektor_mtile, 9 epochs)
#   bash scripts/results/results_drdc.sh train-cond     # stage 2 with model conditioning (eq. 10)
#   bash scripts/results/results_drdc.sh train-uncond   # stage 2 without it (U-Net input x_t only)
#   bash scripts/results/results_drdc.sh table5         # Table 5 rows, every 2nd test image
#   bash scripts/results/results_drdc.sh sensitivity    # Fig. 2: one inference setting at a time, every 8th
#   bash scripts/results/results_drdc.sh job NAME       # one evaluation (see job() below)
#
# THREADS (default 0 = all cores) sets --threads; two jobs can run side by side with THREADS=1.
# REFINER_STEPS (default 2000) is the refiner's training length.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${DRDC_BIN:-build/drdc}"
OUT="${RESULTS_DIR:-docs/results/drdc}"
T="--threads ${THREADS:-0}"
STEPS="${REFINER_STEPS:-2000}"
mkdir -p "$OUT"

BASE=runs/kolektor_mtile
COND=runs/kolektor_mtile_drdc
UNCOND=runs/kolektor_mtile_uncond
# configs/kolektor_mtile.json holds the reduced refiner (128 px, 32 channels, mults 1,1,2,2, t < 300,
# 2000 steps of 8 images) and the inference settings of every run below (the centre of the
# sensitivity study: tau 250, 5 DDIM steps, K 2, one grid of 16 px cells, scales 1, 1/2, 1/4,
# filter 7, alpha 0.9, start from the image)
R=""

base() {
    local resume=""
    [ -f "$BASE/checkpoint.safetensors" ] && resume="--resume"
    # shellcheck disable=SC2086
    "$BIN" train --config kolektor_mtile.json --stage base --out "$BASE" $resume $T
}

train() {   # train RUN [extra --set ...]: stage 2 on a copy of the base run, resumable
    local run="$1"
    shift
    [ -f "$BASE/model.safetensors" ] || { echo "train the base model first: $0 base" >&2; return 2; }
    [ -d "$run" ] || cp -r "$BASE" "$run"
    # shellcheck disable=SC2086
    "$BIN" train --config kolektor_mtile.json --out "$run" --stage refiner $R --set refiner.steps="$STEPS" \
        --resume $T "$@"
}

ev() {      # ev NAME MODEL [eval options]: tables to OUT/NAME.txt, metrics to OUT/NAME.json; skipped when done
    local name="$1" model="$2"
    shift 2
    [ -f "$OUT/$name.json" ] && { echo "$name: done ($OUT/$name.json)"; return 0; }
    # shellcheck disable=SC2086
    "$BIN" eval --model "$model/model.safetensors" --json "$OUT/$name.json" $T "$@" | tee "$OUT/$name.txt"
}

# one named evaluation: its model and options
job() {
    local S="--method all --every 8 --calib-images 32"
    case "$1" in
    # Table 5, every 2nd test image: base, diffusion alone and fused for both refiners, each with the
    # corrected start (image) and the old one (masked, recalibrated); then the multi-scale base map
    t5_cond) ev t5_cond "$COND" --method all --every 2 --report "${REPORT_DIR:-/tmp/drdc_report_t5}" ;;
    t5_uncond) ev t5_uncond "$UNCOND" --method all --every 2 ;;
    t5_cond_masked) ev t5_cond_masked "$COND" --method all --every 2 --set infer.start=masked ;;
    t5_uncond_masked) ev t5_uncond_masked "$UNCOND" --method all --every 2 --set infer.start=masked ;;
    t5_cond_msbase) ev t5_cond_msbase "$COND" --method all --every 2 --set infer.base_scales=1,0.5,0.25 ;;
    t5_cond_clip) ev t5_cond_clip "$COND" --method all --every 2 --set infer.clip_x0=true ;;
    # not in the paper: each image's diffusion map divided by its own mean (infer.diff_norm), tried
    # after t5_cond showed magnetic tile's diffusion score following the image's fine-texture energy
    t5_cond_diffnorm) ev t5_cond_diffnorm "$COND" --method all --every 2 --set infer.diff_norm=image_mean ;;
    # Fig. 2: one change at a time from the centre, each recalibrated on the same 32 validation
    # images, every 8th test image; alpha 1 and 0 are the diffusion and base rows of every run
    s_centre) ev s_centre "$COND" $S --set infer.steps=5 ;;
    s_steps*) ev "$1" "$COND" $S --set infer.steps="${1#s_steps}" ;;
    s_tau*) ev "$1" "$COND" $S --set infer.tau="${1#s_tau}" ;;
    s_K*) ev "$1" "$COND" $S --set infer.K="${1#s_K}" ;;
    s_grids*) ev "$1" "$COND" $S --set infer.grids="${1#s_grids}" ;;
    s_filter*) ev "$1" "$COND" $S --set infer.filter="${1#s_filter}" ;;
    s_alpha*) ev "$1" "$COND" $S --set infer.alpha="${1#s_alpha}" ;;
    *) echo "unknown job $1" >&2; return 2 ;;
    esac
}
TABLE5="t5_cond t5_uncond t5_cond_masked t5_uncond_masked t5_cond_msbase t5_cond_clip t5_cond_diffnorm"
SENSITIVITY="s_centre s_steps2 s_steps10 s_tau100 s_tau150 s_K4 s_grids8 s_grids8,16 s_filter1 s_filter15 s_alpha0.5 s_alpha0.7"

case "${1:-}" in
base) base ;;
train-cond) train "$COND" ;;
train-uncond) train "$UNCOND" --set refiner.model_conditioning=false ;;
table5) for j in $TABLE5; do job "$j"; done ;;
sensitivity) for j in $SENSITIVITY; do job "$j"; done ;;
job) job "$2" ;;
*)
    echo "usage: bash scripts/results/results_drdc.sh base|train-cond|train-uncond|table5|sensitivity|job NAME" >&2
    exit 2
    ;;
esac
