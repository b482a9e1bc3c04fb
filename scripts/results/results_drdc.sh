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
#   bash scripts/results/results_drdc.sh train-small    # stage 2 at 64 px (a quarter of the U-Net work)
#   bash scripts/results/results_drdc.sh table5         # Table 5 rows, every 2nd test image
#   bash scripts/results/results_drdc.sh sensitivity    # Fig. 2: one inference setting at a time, every 8th
#   RESULTS_DIR=docs/results/speed bash scripts/results/results_drdc.sh speed   # BENCH.md's speed/quality table
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
SMALL=runs/kolektor_mtile_drdc64   # the refiner at 64 px (cells and attention scaled with it), for the speed/quality table in BENCH.md
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

ev() {      # ev NAME MODEL [eval options]: tables to OUT/NAME.txt, metrics to OUT/NAME.json, the speed
            # lines (images/s per category) to OUT/NAME.speed; skipped when done
    local name="$1" model="$2"
    shift 2
    [ -f "$OUT/$name.json" ] && { echo "$name: done ($OUT/$name.json)"; return 0; }
    # shellcheck disable=SC2086
    "$BIN" eval --model "$model/model.safetensors" --json "$OUT/$name.json" $T "$@" \
        2> >(tee >(tr '\r' '\n' | grep -o 'maps of .*images/s.*' > "$OUT/$name.speed") >&2) | tee "$OUT/$name.txt"
}

# one named evaluation: its model and options
job() {
    local S="--method all --every 8 --calib-images 32" P="" n="${1%_bf16}"
    # NAME_bf16 is NAME with infer.precision=bf16
    case "$1" in *_bf16) P="--set infer.precision=bf16" ;; esac
    # shellcheck disable=SC2086
    case "$n" in
    # Table 5, every 2nd test image: base, diffusion alone and fused for both refiners, each with the
    # corrected start (image) and the old one (masked, recalibrated); then the multi-scale base map
    t5_cond) ev "$1" "$COND" --method all --every 2 --report "${REPORT_DIR:-/tmp/drdc_report_t5}" $P ;;
    t5_uncond) ev "$1" "$UNCOND" --method all --every 2 $P ;;
    t5_cond_masked) ev "$1" "$COND" --method all --every 2 --set infer.start=masked $P ;;
    t5_uncond_masked) ev "$1" "$UNCOND" --method all --every 2 --set infer.start=masked $P ;;
    t5_cond_msbase) ev "$1" "$COND" --method all --every 2 --set infer.base_scales=1,0.5,0.25 $P ;;
    t5_cond_clip) ev "$1" "$COND" --method all --every 2 --set infer.clip_x0=true $P ;;
    # not in the paper: each image's diffusion map divided by its own mean (infer.diff_norm), tried
    # after t5_cond showed magnetic tile's diffusion score following the image's fine-texture energy
    t5_cond_diffnorm) ev "$1" "$COND" --method all --every 2 --set infer.diff_norm=image_mean $P ;;
    # Fig. 2: one change at a time from the centre, each recalibrated on the same 32 validation
    # images, every 8th test image; alpha 1 and 0 are the diffusion and base rows of every run
    s_centre) ev "$1" "$COND" $S --set infer.steps=5 $P ;;
    s_steps*) ev "$1" "$COND" $S --set infer.steps="${n#s_steps}" $P ;;
    s_tau*) ev "$1" "$COND" $S --set infer.tau="${n#s_tau}" $P ;;
    s_K*) ev "$1" "$COND" $S --set infer.K="${n#s_K}" $P ;;
    s_grids*) ev "$1" "$COND" $S --set infer.grids="${n#s_grids}" $P ;;
    s_filter*) ev "$1" "$COND" $S --set infer.filter="${n#s_filter}" $P ;;
    s_alpha*) ev "$1" "$COND" $S --set infer.alpha="${n#s_alpha}" $P ;;
    # BENCH.md's speed/quality table: the settings above and these, each timed by the eval itself
    s_base) ev "$1" "$COND" --method base --every 8 --calib-images 32 $P ;;
    s_scales*) ev "$1" "$COND" $S --set infer.scales="${n#s_scales}" $P ;;
    s_batchref) ev "$1" "$COND" $S --set infer.batch_refiner=true $P ;;
    s_r64) ev "$1" "$SMALL" $S $P ;;
    *) echo "unknown job $1" >&2; return 2 ;;
    esac
}
TABLE5="t5_cond t5_uncond t5_cond_masked t5_uncond_masked t5_cond_msbase t5_cond_clip t5_cond_diffnorm"
# run with RESULTS_DIR=docs/results/speed on quiet cores: the eval's images/s are the table's speed
SPEED="s_base s_centre s_centre_bf16 s_steps2 s_steps2_bf16 s_steps10 s_K4 s_grids8 s_grids8,16 s_grids8,16_bf16 s_scales1 s_batchref s_r64 s_r64_bf16"
SENSITIVITY="s_centre s_steps2 s_steps10 s_tau100 s_tau150 s_K4 s_grids8 s_grids8,16 s_filter1 s_filter15 s_alpha0.5 s_alpha0.7"

case "${1:-}" in
base) base ;;
train-cond) train "$COND" ;;
train-uncond) train "$UNCOND" --set refiner.model_conditioning=false ;;
train-small) train "$SMALL" --set refiner.image_size=64 --set refiner.attention_res=8 --set infer.grids=8 ;;
table5) for j in $TABLE5; do job "$j"; done ;;
sensitivity) for j in $SENSITIVITY; do job "$j"; done ;;
speed) for j in $SPEED; do job "$j"; done ;;
job) job "$2" ;;
*)
    echo "usage: bash scripts/results/results_drdc.sh base|train-cond|train-uncond|train-small|table5|sensitivity|speed|job NAME" >&2
    exit 2
    ;;
esac
