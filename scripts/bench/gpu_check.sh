#!/usr/bin/env bash
# gpu_check.sh: the CUDA check of drdc, for a machine with an NVIDIA GPU and a PyTorch pip install
# (whose libtorch, headers and CMake files drdc builds against). In about 10 minutes it:
#   1. builds drdc and test_shim in a separate build folder (build-cuda) with the project's own
#      CMake build against the libtorch inside the Python torch package, as README.md's
#      "Building elsewhere" says: cmake -S . -B build-cuda -DCMAKE_PREFIX_PATH=<torch's
#      torch.utils.cmake_prefix_path>, then cmake --build (the GPU's compute capability, when
#      known, is handed to Torch's CMake files);
#   2. `drdc --version` must list cuda:0;
#   3. runs test_shim (its CUDA test runs when a GPU is seen);
#   4. `drdc bench` on configs/tiny.json on cpu and on cuda, each writing every stage's inputs and
#      outputs (--check-out; the same seeds, and random numbers are drawn on the CPU on both), and
#      compares the forward passes (backbone, transformer, U-Net, fusion) between cpu and cuda;
#   5. a short `drdc train` on synthetic data with --device cuda, then `drdc infer --json` on the
#      same image with --device cpu and --device cuda: scores must agree within 1e-3 relative;
#   6. times inference at paper size: `drdc bench` on configs/mvtec.json, batch 8, on cuda, with
#      infer.precision bf16 and fp32 (and infer.batch_refiner), printing DRDC's images/s for each;
# and prints a summary (one line per step: PASS / FAIL / SKIP and seconds).
# Without a GPU it runs the CPU parts only (steps 4 and 5 on cpu), which is how it is tested on a
# machine without one.
#
# Usage: bash scripts/bench/gpu_check.sh [--drdc PATH] [--no-build] [--build-dir DIR] [--work DIR]
#   --drdc PATH     use this drdc binary (implies --no-build)
#   --no-build      do not configure or build (needs --drdc, or BUILD/drdc present)
#   --build-dir DIR build folder (default build-cuda)
#   --work DIR      scratch folder (default: a new one under /tmp)
# Environment: PYTHON (default python3) is the interpreter whose torch package gives libtorch;
# CUDA_ARCH (e.g. 90) overrides the compute capability read from nvidia-smi.
# Exit code: 0 when every step that ran passed, 1 otherwise.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-python3}"
BUILD="$ROOT/build-cuda"
DRDC=""
DO_BUILD=1
WORK=""
while [ $# -gt 0 ]; do
    case "$1" in
        --drdc) DRDC="$2"; DO_BUILD=0; shift 2 ;;
        --no-build) DO_BUILD=0; shift ;;
        --build-dir) BUILD="$2"; shift 2 ;;
        --work) WORK="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^# Exit code/p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
[ -n "$WORK" ] || WORK="$(mktemp -d /tmp/drdc-gpu-check.XXXXXX)"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
T_START=$(date +%s)
SUMMARY=()
FAILED=0

# step NAME STATUS SECONDS [NOTE]
record() {
    SUMMARY+=("$(printf '%-34s %-5s %5ss  %s' "$1" "$2" "$3" "${4:-}")")
    [ "$2" = FAIL ] && FAILED=1
    echo "== $1: $2 (${3}s) ${4:-}"
}
now() { date +%s; }

echo "== gpu_check: repo $ROOT, build $BUILD, scratch $WORK"

# ---- 0. what is here ----------------------------------------------------------------------------
HAVE_GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    HAVE_GPU=1
    nvidia-smi -L
fi
TORCH_DIR="$("$PY" -c 'import torch, os; print(os.path.dirname(torch.__file__))' 2>/dev/null || true)"
if [ -n "$TORCH_DIR" ]; then
    "$PY" -c 'import torch; print("python torch", torch.__version__, "| CUDA", torch.version.cuda, "| cuda available", torch.cuda.is_available(), "| cxx11 abi", torch._C._GLIBCXX_USE_CXX11_ABI)' || true
else
    echo "gpu_check: $PY has no torch package; the build will use a system libtorch if CMake finds one"
fi
ARCH="${CUDA_ARCH:-}"
if [ -z "$ARCH" ] && [ "$HAVE_GPU" = 1 ]; then
    ARCH="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')"
fi
[ -n "$ARCH" ] && echo "compute capability: $ARCH"

# ---- 1. build -----------------------------------------------------------------------------------
if [ "$DO_BUILD" = 1 ]; then
    t0=$(now)
    missing=()
    for h in cjson/cJSON.h stb/stb_image.h; do
        [ -e "/usr/include/$h" ] || [ -e "/usr/local/include/$h" ] || missing+=("$h")
    done
    command -v cmake >/dev/null || missing+=(cmake)
    command -v g++ >/dev/null || missing+=(g++)
    if [ ${#missing[@]} -gt 0 ]; then
        record "build (build-cuda)" FAIL $(( $(now) - t0 )) "missing: ${missing[*]} (apt-get install libcjson-dev libstb-dev cmake g++)"
    else
        args=(-DCMAKE_BUILD_TYPE=Release)
        TORCH_CMAKE="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)"
        if [ -n "$TORCH_CMAKE" ] && [ -d "$TORCH_CMAKE" ]; then
            args+=(-DCMAKE_PREFIX_PATH="$TORCH_CMAKE")
        else
            TORCH_CMAKE=""   # e.g. Debian's python3-torch: CMake finds the system libtorch-dev
        fi
        if [ -n "$ARCH" ]; then
            args+=(-DCMAKE_CUDA_ARCHITECTURES="$ARCH")
            export TORCH_CUDA_ARCH_LIST="${ARCH:0:${#ARCH}-1}.${ARCH: -1}"   # 90 -> 9.0 (Torch's CMake reads it)
        fi
        if ! cmake -S "$ROOT" -B "$BUILD" "${args[@]}" >"$WORK/configure.log" 2>&1; then
            tail -30 "$WORK/configure.log"
            record "build (build-cuda)" FAIL $(( $(now) - t0 )) "configure failed, see $WORK/configure.log"
        elif ! cmake --build "$BUILD" -j"$(nproc)" --target drdc test_shim >"$WORK/build.log" 2>&1; then
            tail -30 "$WORK/build.log"
            record "build (build-cuda)" FAIL $(( $(now) - t0 )) "see $WORK/build.log"
        else
            record "build (build-cuda)" PASS $(( $(now) - t0 )) "libtorch from ${TORCH_CMAKE:-the system}"
        fi
    fi
fi
[ -n "$DRDC" ] || DRDC="$BUILD/drdc"
if [ ! -x "$DRDC" ]; then
    echo "gpu_check: no drdc binary at $DRDC"
    record "drdc binary" FAIL 0 "$DRDC missing"
    printf '%s\n' "" "== summary" "${SUMMARY[@]}"
    exit 1
fi
DRDC="$(cd "$(dirname "$DRDC")" && pwd)/$(basename "$DRDC")"

# ---- 2. drdc --version --------------------------------------------------------------------------
t0=$(now)
ver="$("$DRDC" --version 2>&1)"
echo "$ver"
if [ "$HAVE_GPU" = 0 ]; then
    record "drdc --version lists cuda:0" SKIP $(( $(now) - t0 )) "no GPU here"
elif echo "$ver" | grep -q "cuda:0"; then
    record "drdc --version lists cuda:0" PASS $(( $(now) - t0 ))
else
    record "drdc --version lists cuda:0" FAIL $(( $(now) - t0 )) "libtorch sees no CUDA device"
fi
DEV=cpu
[ "$HAVE_GPU" = 1 ] && echo "$ver" | grep -q "cuda:0" && DEV=cuda

# ---- 3. test_shim -------------------------------------------------------------------------------
t0=$(now)
SHIM="$(dirname "$DRDC")/test_shim"
if [ -x "$SHIM" ]; then
    if timeout 300 "$SHIM" >"$WORK/test_shim.log" 2>&1; then
        record "test_shim" PASS $(( $(now) - t0 )) "$(grep -ci cuda "$WORK/test_shim.log") lines mention CUDA"
    else
        rc=$?
        tail -20 "$WORK/test_shim.log"
        if [ $rc = 77 ]; then record "test_shim" SKIP $(( $(now) - t0 )); else record "test_shim" FAIL $(( $(now) - t0 )) "exit $rc"; fi
    fi
else
    record "test_shim" SKIP 0 "no test_shim next to $DRDC"
fi

# Compares two `drdc bench --check-out` files tensor by tensor (stdlib only: the pip torch's
# Python need not have numpy). Relative = max |a - b| / max |a|. Exit 1 above the tolerance.
compare_checks() {
    "$PY" - "$1" "$2" "$3" <<'EOF'
import array, json, struct, sys
def read(path):
    blob = open(path, "rb").read()
    n = struct.unpack("<Q", blob[:8])[0]
    head = json.loads(blob[8:8 + n])
    head.pop("__metadata__", None)
    out = {}
    for k, e in head.items():
        assert e["dtype"] == "F32", k
        a = array.array("f")
        a.frombytes(blob[8 + n + e["data_offsets"][0]:8 + n + e["data_offsets"][1]])
        if sys.byteorder != "little":
            a.byteswap()
        out[k] = a
    return out
a, b, tol = read(sys.argv[1]), read(sys.argv[2]), float(sys.argv[3])
worst = 0.0
for k in sorted(a):
    if not k.startswith("out."):
        continue
    d = max(abs(x - y) for x, y in zip(a[k], b[k]))
    s = max(max(abs(x) for x in a[k]), 1e-12)
    worst = max(worst, d / s)
    print("  %-22s max |cpu - cuda| %.3g, max |cpu| %.3g, relative %.3g" % (k, d, s, d / s))
print("  worst relative difference %.3g (tolerance %g)" % (worst, tol))
sys.exit(0 if worst <= tol else 1)
EOF
}

# ---- 4. drdc bench on tiny, cpu and cuda; forward passes compared -------------------------------
t0=$(now)
if timeout 300 "$DRDC" bench --config "$ROOT/configs/tiny.json" --batch 8 --iters 3 --warmup 1 --device cpu \
        --json "$WORK/bench_tiny_cpu.json" --check-out "$WORK/check_cpu.safetensors" 2>&1 | tee "$WORK/bench_tiny_cpu.log"; then
    record "bench tiny, cpu" PASS $(( $(now) - t0 ))
else
    record "bench tiny, cpu" FAIL $(( $(now) - t0 )) "see $WORK/bench_tiny_cpu.log"
fi
if [ "$DEV" = cuda ]; then
    t0=$(now)
    if timeout 300 "$DRDC" bench --config "$ROOT/configs/tiny.json" --batch 8 --iters 3 --warmup 1 --device cuda \
            --json "$WORK/bench_tiny_cuda.json" --check-out "$WORK/check_cuda.safetensors" 2>&1 | tee "$WORK/bench_tiny_cuda.log"; then
        record "bench tiny, cuda" PASS $(( $(now) - t0 ))
    else
        record "bench tiny, cuda" FAIL $(( $(now) - t0 )) "see $WORK/bench_tiny_cuda.log"
    fi
    t0=$(now)
    # cuDNN may use TF32 for convolutions on Ampere and later: 1e-2 relative on raw outputs.
    if [ -e "$WORK/check_cpu.safetensors" ] && [ -e "$WORK/check_cuda.safetensors" ] &&
            compare_checks "$WORK/check_cpu.safetensors" "$WORK/check_cuda.safetensors" 1e-2; then
        record "forward pass cpu == cuda (bench)" PASS $(( $(now) - t0 )) "relative 1e-2 per output"
    else
        record "forward pass cpu == cuda (bench)" FAIL $(( $(now) - t0 ))
    fi
else
    record "bench tiny, cuda + cpu/cuda compare" SKIP 0 "no GPU here"
fi

# ---- 5. short training on synthetic data, then infer on cpu and cuda ----------------------------
t0=$(now)
(cd "$WORK" && "$DRDC" synth --out "$WORK/synth" --categories 2 --train 16 --test 4 --size 64 >"$WORK/synth.log" 2>&1)
# train writes runs/latest relative to the current folder: run it inside the scratch folder
if (cd "$WORK" && timeout 400 "$DRDC" train --config "$ROOT/configs/tiny.json" --data-root "$WORK/synth" \
        --out "$WORK/run" --device "$DEV" --set base.epochs=2 --set refiner.steps=20 --set train.log_every=5 \
        >"$WORK/train.log" 2>&1); then
    record "train (synth, --device $DEV)" PASS $(( $(now) - t0 )) "$(grep -E '^(base model|refiner):' "$WORK/train.log" | tr '\n' ' ')"
else
    tail -20 "$WORK/train.log"
    record "train (synth, --device $DEV)" FAIL $(( $(now) - t0 )) "see $WORK/train.log"
fi
t0=$(now)
IMG=""
for f in "$WORK"/synth/*/test/*/*.png; do
    case "$f" in */good/*) ;; *) [ -e "$f" ] && { IMG="$f"; break; } ;; esac
done
if [ -e "$WORK/run/model.safetensors" ] && [ -n "$IMG" ]; then
    ok=1
    for d in cpu $DEV; do
        "$DRDC" infer --model "$WORK/run/model.safetensors" --image "$IMG" --json "$WORK/infer_$d.json" \
            --device "$d" >"$WORK/infer_$d.log" 2>&1 || { ok=0; cat "$WORK/infer_$d.log"; }
    done
    if [ $ok = 1 ] && [ "$DEV" = cuda ]; then
        if "$PY" - "$WORK/infer_cpu.json" "$WORK/infer_cuda.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
bad = 0
for k in ("score", "base_score"):
    rel = abs(a[k] - b[k]) / max(abs(a[k]), 1e-12)
    print("  %-10s cpu %.6g cuda %.6g relative %.3g" % (k, a[k], b[k], rel))
    bad |= rel > 1e-3
print("  timings_ms cpu", a["timings_ms"], "\n  timings_ms cuda", b["timings_ms"])
sys.exit(bad)
EOF
        then record "infer score cpu == cuda" PASS $(( $(now) - t0 )) "within 1e-3 relative"
        else record "infer score cpu == cuda" FAIL $(( $(now) - t0 )); fi
    elif [ $ok = 1 ]; then
        record "infer (cpu)" PASS $(( $(now) - t0 )) "cuda comparison skipped: no GPU here"
    else
        record "infer" FAIL $(( $(now) - t0 ))
    fi
else
    record "infer cpu vs cuda" SKIP 0 "no trained model or no test image"
fi

# ---- 6. inference at paper size -----------------------------------------------------------------
# bf16 (CUDA autocast) and fp32, each with the batch's inpainting runs sharing the U-Net calls
# (infer.batch_refiner: one image's K*G = 4 runs would leave a GPU mostly idle); images/s of the
# whole DRDC pass from the drdc row.
for prec in bf16 fp32; do
    t0=$(now)
    name="bench mvtec.json $prec, batch 8, cuda"
    if [ "$DEV" = cuda ]; then
        if timeout 400 "$DRDC" bench --config "$ROOT/configs/mvtec.json" --batch 8 --iters 3 --warmup 1 --device cuda \
                --set infer.precision=$prec --set infer.batch_refiner=true --stages unet,drdc \
                --json "$WORK/bench_mvtec_cuda_$prec.json" 2>&1 | tee "$WORK/bench_mvtec_cuda_$prec.log"; then
            ips=$(awk '$1 == "drdc" { print $5; exit }' "$WORK/bench_mvtec_cuda_$prec.log")
            record "$name" PASS $(( $(now) - t0 )) "DRDC ${ips:-?} images/s at 224 px, $prec"
        else
            record "$name" FAIL $(( $(now) - t0 )) "see $WORK/bench_mvtec_cuda_$prec.log"
        fi
    else
        record "$name" SKIP 0 "no GPU here (on 2 CPU cores a paper-size pass takes hours)"
    fi
done

echo
echo "== summary ($(( $(now) - T_START ))s in all; logs and outputs in $WORK)"
printf '%s\n' "${SUMMARY[@]}"
exit $FAILED
