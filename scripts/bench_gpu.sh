#!/usr/bin/env bash
# GPU benchmark: `mhc bench` and the PyTorch peer (scripts/bench_peer.py) on the same GPU
# in one invocation, for baseline, HC (static and dynamic) and mHC at d=768
# (configs/{baseline,hc,mhc}.yaml, GPT-2-small shape) and d=2048 (the same configs with
# --set model.d_model=2048 model.n_head=16 train.micro_batch=$MB2048), plus the
# device-to-device copy bandwidth measured in the same run. Prints a side-by-side table
# (scripts/bench_gpu_summary.py): tokens/s, ms/step, MFU and peak memory of both, mhc's
# speedup over the peer, each mode's step-time overhead over the baseline of the same
# implementation and width, and the connection-kernel "floor" (the extra bytes HC/mHC's
# connection kernels must move per step over the baseline's, at the measured copy
# bandwidth) with the ratio measured overhead / floor. Everything also lands as JSON
# under --out; one failing step is reported and the rest still runs.
#
#   scripts/bench_gpu.sh [--mhc PATH | --build-dir DIR] [--build] [--parity] [--micro]
#                        [--steps 20] [--warmup 5] [--widths "768 2048"] [--mb2048 8]
#                        [--modes "baseline hc hc-dynamic mhc"] [--recompute true|false|both]
#                        [--python python3] [--no-peer] [--no-mhc] [--timeout 300]
#                        [--out DIR]
#
#   --mhc PATH       the mhc binary (e.g. a relocatable one from scripts/build_relocatable.sh
#                    copied to a GPU host that has PyTorch but none of our Debian libraries)
#   --build-dir DIR  use DIR/mhc, DIR/tests/mhc_unit_tests and DIR/cuda/bench/bench_connections
#                    (default build-perf; the folder `build_relocatable.sh --gpu-suite --pack`
#                    packs)
#   --build          configure and build DIR first (-DMHC_CUDA=ON; needs the build deps,
#                    which a bare GPU image lacks: carry a relocatable pack instead)
#   --parity         run the CUDA parity tests (DIR/tests/mhc_unit_tests, *Cuda*:*Cudnn*)
#   --micro          run DIR/cuda/bench/bench_connections (kernel bytes/s vs copy bandwidth)
#   --recompute      train.recompute for the hc/mhc runs (both: each mode twice)
#   --no-peer/--no-mhc  skip the PyTorch peer / mhc bench (split a long session into calls;
#                    merge the folders and run scripts/bench_gpu_summary.py DIR)
#   --timeout S      wall-clock limit of each benchmark process (default 300 s)
#
# mhc runs with train.device=cuda, so a GPU it cannot use is an error, not a CPU run.
# When the binary cannot find cuDNN/NCCL, the NVIDIA wheels of the PyTorch next to it are
# added to LD_LIBRARY_PATH.
#
# One call for a person with an H100 and a checkout that builds:
#   scripts/bench_gpu.sh --build --parity --micro --out bench-h100
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD="$ROOT/build-perf"
MHC=""
DO_BUILD=0
DO_PARITY=0
DO_MICRO=0
STEPS=20
WARMUP=5
WIDTHS="768 2048"
MB2048=8
MODES="baseline hc hc-dynamic mhc"
RECOMPUTE=true
PY=${PYTHON:-python3}
PEER=1
RUN_MHC=1
LIMIT=300
OUT=""

while [ $# -gt 0 ]; do
  case "$1" in
    --mhc) MHC=$2; shift 2 ;;
    --build-dir) BUILD=$2; shift 2 ;;
    --build) DO_BUILD=1; shift ;;
    --parity) DO_PARITY=1; shift ;;
    --micro) DO_MICRO=1; shift ;;
    --steps) STEPS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --widths) WIDTHS=$2; shift 2 ;;
    --mb2048) MB2048=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --recompute) RECOMPUTE=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --no-peer) PEER=0; shift ;;
    --no-mhc) RUN_MHC=0; shift ;;
    --timeout) LIMIT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,39p' "$0"; exit 0 ;;
    *) echo "bench_gpu.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$RECOMPUTE" in true|false|both) ;; *) echo "bench_gpu.sh: --recompute true|false|both" >&2; exit 2 ;; esac

[ -n "$OUT" ] || OUT="$ROOT/bench-gpu-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/run.log"; }
warn() { echo "warning: $*" | tee -a "$OUT/run.log" >&2; }
failures=0

if [ "$DO_BUILD" = 1 ]; then
  log "building $BUILD"
  if ! cmake -S "$ROOT" -B "$BUILD" -DMHC_CUDA=ON -DCMAKE_BUILD_TYPE=Release >"$OUT/cmake.log" 2>&1; then
    tail -30 "$OUT/cmake.log"; echo "bench_gpu.sh: configure failed (log: $OUT/cmake.log)" >&2; exit 1
  fi
  if ! cmake --build "$BUILD" -j "$(nproc)" --target mhc mhc_unit_tests bench_connections \
      >"$OUT/build.log" 2>&1; then
    tail -30 "$OUT/build.log"; echo "bench_gpu.sh: build failed (log: $OUT/build.log)" >&2; exit 1
  fi
fi
[ -n "$MHC" ] || MHC="$BUILD/mhc"
[ -x "$MHC" ] || { echo "bench_gpu.sh: no mhc binary at $MHC (--build, --build-dir or --mhc)" >&2; exit 1; }
PARITY_BIN="$BUILD/tests/mhc_unit_tests"
MICRO_BIN="$BUILD/cuda/bench/bench_connections"

# The NVIDIA libraries: on images whose cuDNN/NCCL come from PyTorch's wheels, they are
# not on the loader's path. Add them only when needed (two cuDNN builds must not mix).
if ldd "$MHC" 2>/dev/null | grep -q "not found"; then
  wheel_libs=$("$PY" -c "import glob, nvidia; print(':'.join(sorted(glob.glob(list(nvidia.__path__)[0] + '/*/lib'))))" 2>/dev/null || true)
  [ -n "$wheel_libs" ] && export LD_LIBRARY_PATH="$wheel_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if ldd "$MHC" | grep "not found"; then
    echo "bench_gpu.sh: $MHC cannot find the libraries above" >&2; exit 1
  fi
  log "LD_LIBRARY_PATH += PyTorch's NVIDIA wheels ($wheel_libs)"
fi
ldd "$MHC" >"$OUT/ldd.txt" 2>&1
{ ldd --version 2>&1 | head -1; "$MHC" --version 2>&1 | head -1; } >>"$OUT/run.log"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >"$OUT/gpu.txt" 2>&1 || true
log "device: $(head -2 "$OUT/gpu.txt" | tail -1)"

if [ "$DO_PARITY" = 1 ]; then
  if [ -x "$PARITY_BIN" ]; then
    log "CUDA parity tests ($PARITY_BIN)"
    timeout "$LIMIT" "$PARITY_BIN" --gtest_filter='*Cuda*:*Cudnn*' --gtest_brief=1 >"$OUT/parity.log" 2>&1
    rc=$?
    grep -E "^\[  (PASSED|SKIPPED|FAILED) +\]|tests? ran" "$OUT/parity.log" | tee -a "$OUT/run.log" || true
    grep -h "\[ attention \]" "$OUT/parity.log" | sort -u | head -8 | tee -a "$OUT/run.log" || true
    if [ $rc -ne 0 ]; then
      grep -E "FAILED|Failure" "$OUT/parity.log" | head -40
      warn "parity tests failed (exit $rc; log: $OUT/parity.log)"; failures=$((failures + 1))
    elif grep -q "SKIPPED" "$OUT/parity.log"; then
      warn "some CUDA tests were skipped (no usable GPU?): $(grep -m1 -A1 "SKIPPED" "$OUT/parity.log" | tail -1)"
    fi
  else
    warn "no parity test binary at $PARITY_BIN"; failures=$((failures + 1))
  fi
fi

if [ "$DO_MICRO" = 1 ]; then
  if [ -x "$MICRO_BIN" ]; then
    log "connection-kernel microbenchmarks"
    timeout "$LIMIT" "$MICRO_BIN" --json "$OUT/micro_bf16.json" 2>&1 | tee "$OUT/micro_bf16.txt" ||
      { warn "bench_connections failed"; failures=$((failures + 1)); }
    timeout "$LIMIT" "$MICRO_BIN" --C 2048 --tokens 16384 --json "$OUT/micro_bf16_C2048.json" 2>&1 |
      tee "$OUT/micro_bf16_C2048.txt" || { warn "bench_connections --C 2048 failed"; failures=$((failures + 1)); }
  else
    warn "no microbenchmark at $MICRO_BIN; skipping it"
  fi
fi

HAVE_TORCH=0
if [ "$PEER" = 1 ] && "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() and int(torch.__version__.split('.')[0]) >= 2 else 1)" 2>/dev/null; then
  HAVE_TORCH=1
elif [ "$PEER" = 1 ]; then
  warn "$PY has no PyTorch 2.x with CUDA; running without the peer"
fi

# Device-to-device copy bandwidth, measured in this run (PyTorch, else the microbenchmark).
if [ "$HAVE_TORCH" = 1 ]; then
  timeout "$LIMIT" "$PY" "$ROOT/scripts/bench_peer.py" --copy-bandwidth --json "$OUT/copy.json" >/dev/null 2>"$OUT/copy.err" ||
    warn "copy bandwidth (PyTorch) failed: $(tail -1 "$OUT/copy.err")"
fi
if [ ! -f "$OUT/copy.json" ] && [ -x "$MICRO_BIN" ]; then
  if timeout "$LIMIT" "$MICRO_BIN" --tokens 1024 --matrices 1024 --reps 20 --json "$OUT/copy_micro.json" >/dev/null 2>&1; then
    "$PY" -c "import json, sys; d = json.load(open(sys.argv[1])); json.dump({'copy_gbs': d['copy_gbs'], 'device': d['device']}, open(sys.argv[2], 'w'))" \
      "$OUT/copy_micro.json" "$OUT/copy.json" || true
  fi
fi
[ -f "$OUT/copy.json" ] && log "copy bandwidth: $(cat "$OUT/copy.json")"

config_of() {
  case "$1" in
    baseline) echo "$ROOT/configs/baseline.yaml" ;;
    hc|hc-dynamic) echo "$ROOT/configs/hc.yaml" ;;
    mhc) echo "$ROOT/configs/mhc.yaml" ;;
    *) return 1 ;;
  esac
}

for width in $WIDTHS; do
  for mode in $MODES; do
    cfg=$(config_of "$mode") || { warn "unknown mode $mode"; failures=$((failures + 1)); continue; }
    shape=()
    [ "$mode" = hc-dynamic ] && shape+=(--set residual.hc.dynamic=true)
    [ "$mode" = hc ] && shape+=(--set residual.hc.dynamic=false)
    if [ "$width" != 768 ]; then
      shape+=(--set "model.d_model=$width" --set "model.n_head=$((width / 128))" --set "train.micro_batch=$MB2048")
    fi
    recomputes="$RECOMPUTE"
    [ "$RECOMPUTE" = both ] && recomputes="false true"
    [ "$mode" = baseline ] && recomputes="${recomputes%% *}"
    # The resolved config of this mode and width (the peer's shape; the summary's floor).
    "$MHC" train -c "$cfg" "${shape[@]}" --print-config >"$OUT/config_${mode}_d$width.yaml" 2>"$OUT/config_${mode}_d$width.err" || {
      warn "mhc --print-config failed for $mode d$width: $(tail -1 "$OUT/config_${mode}_d$width.err")"
      rm -f "$OUT/config_${mode}_d$width.yaml"; failures=$((failures + 1)); continue; }
    if [ "$RUN_MHC" = 1 ]; then
      for rc in $recomputes; do
        tag="${mode}_d${width}_rc${rc}"
        log "mhc bench $tag"
        if ! timeout "$LIMIT" "$MHC" bench -c "$cfg" "${shape[@]}" --set train.device=cuda \
            --set "train.recompute=$rc" --steps "$STEPS" --warmup "$WARMUP" \
            --json "$OUT/mhc_$tag.json" >"$OUT/mhc_$tag.txt" 2>&1; then
          tail -5 "$OUT/mhc_$tag.txt"; warn "mhc bench $tag failed"; failures=$((failures + 1))
        fi
        grep -E "tokens/s|peak memory|MFU" "$OUT/mhc_$tag.txt" | sed 's/^/   /' || true
      done
    fi
    # The peer ignores train.recompute: one run per mode and width.
    if [ "$HAVE_TORCH" = 1 ]; then
      tag="${mode}_d${width}"
      log "pytorch peer $tag"
      if ! timeout "$LIMIT" "$PY" "$ROOT/scripts/bench_peer.py" --config-yaml "$OUT/config_$tag.yaml" \
          --steps "$STEPS" --warmup "$WARMUP" --json "$OUT/peer_$tag.json" >"$OUT/peer_$tag.txt" 2>&1; then
        tail -5 "$OUT/peer_$tag.txt"; warn "peer $tag failed"; failures=$((failures + 1))
      fi
    fi
  done
done

"$PY" "$ROOT/scripts/bench_gpu_summary.py" "$OUT" "$STEPS" | tee "$OUT/summary.md"
log "results in $OUT (summary.md, *.json, *.txt); $failures step(s) failed"
[ "$failures" -eq 0 ]
