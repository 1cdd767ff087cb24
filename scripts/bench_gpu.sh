#!/usr/bin/env bash
# GPU benchmark: `mhc bench` and the PyTorch peer (scripts/bench_peer.py) on the same GPU
# in one invocation, for baseline, HC (static and dynamic) and mHC at d=768
# (configs/{baseline,hc,mhc}.yaml, GPT-2-small shape) and d=2048 (the same configs with
# --set model.d_model=2048 model.n_head=16 train.micro_batch=$MB2048), plus the
# device-to-device copy bandwidth measured in the same run. Prints a side-by-side table:
# tokens/s, ms/step, MFU and peak memory of both, mhc's speedup over the peer, each
# mode's step-time overhead over the baseline of the same implementation and width, and
# the connection-kernel "floor" (the extra bytes HC/mHC's connection kernels must move
# per step over the baseline's, at the measured copy bandwidth) with the ratio
# measured overhead / floor. Everything also lands as JSON under --out.
#
#   scripts/bench_gpu.sh [--mhc PATH | --build-dir DIR] [--build] [--parity] [--micro]
#                        [--steps 20] [--warmup 5] [--widths "768 2048"] [--mb2048 8]
#                        [--modes "baseline hc hc-dynamic mhc"] [--recompute true|false|both]
#                        [--python python3] [--no-peer] [--out DIR]
#
#   --mhc PATH       the mhc binary (e.g. a relocatable one from scripts/build_relocatable.sh
#                    copied to a GPU host that has PyTorch but none of our Debian libraries)
#   --build-dir DIR  use DIR/mhc (and DIR's tests and microbenchmarks); default build-perf
#   --build          configure and build DIR first (-DMHC_CUDA=ON; needs the build deps)
#   --parity         run the CUDA parity tests of DIR (ctest -R 'Cuda|ModelGrad|ModelOptions')
#                    and stop on failure before benchmarking
#   --micro          run DIR/cuda/bench/bench_connections (kernel bytes/s vs copy bandwidth)
#   --recompute      train.recompute for the hc/mhc runs (both: each mode twice)
#
# One call for a person with an H100 and a checkout that builds:
#   scripts/bench_gpu.sh --build --parity --micro --out bench-h100
set -euo pipefail

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
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "bench_gpu.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

[ -n "$OUT" ] || OUT="$ROOT/bench-gpu-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/run.log"; }

if [ "$DO_BUILD" = 1 ]; then
  log "building $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -DMHC_CUDA=ON -DCMAKE_BUILD_TYPE=Release >"$OUT/cmake.log" 2>&1
  cmake --build "$BUILD" -j "$(nproc)" >"$OUT/build.log" 2>&1 || {
    tail -30 "$OUT/build.log"; echo "bench_gpu.sh: build failed" >&2; exit 1; }
fi
[ -n "$MHC" ] || MHC="$BUILD/mhc"
[ -x "$MHC" ] || { echo "bench_gpu.sh: no mhc binary at $MHC (--build, --build-dir or --mhc)" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >"$OUT/gpu.txt" 2>&1 || true
log "device: $(head -2 "$OUT/gpu.txt" | tail -1)"

if [ "$DO_PARITY" = 1 ]; then
  log "CUDA parity tests ($BUILD)"
  (cd "$BUILD" && ctest -R 'Cuda|ModelGrad|ModelOptions' --output-on-failure) >"$OUT/parity.log" 2>&1 || {
    grep -E "Failed|FAILED|Error" "$OUT/parity.log" | head -40
    echo "bench_gpu.sh: parity tests failed (log: $OUT/parity.log)" >&2; exit 1; }
  grep -E "tests passed|tests failed" "$OUT/parity.log" | tee -a "$OUT/run.log"
  if grep -q "Skipped" "$OUT/parity.log"; then
    echo "warning: some CUDA tests were skipped (no usable GPU?):" | tee -a "$OUT/run.log"
    grep -m3 "Skipped" "$OUT/parity.log" | tee -a "$OUT/run.log"
  fi
  grep -h "\[ attention \]" "$BUILD"/Testing/Temporary/LastTest.log 2>/dev/null | sort -u | head -8 | tee -a "$OUT/run.log" || true
fi

if [ "$DO_MICRO" = 1 ]; then
  micro="$BUILD/cuda/bench/bench_connections"
  if [ -x "$micro" ]; then
    log "connection-kernel microbenchmarks"
    "$micro" --json "$OUT/micro_bf16.json" | tee "$OUT/micro_bf16.txt"
    "$micro" --C 2048 --tokens 16384 --json "$OUT/micro_bf16_C2048.json" | tee "$OUT/micro_bf16_C2048.txt"
  else
    echo "warning: $micro not built; skipping the microbenchmarks" | tee -a "$OUT/run.log"
  fi
fi

HAVE_TORCH=0
if [ "$PEER" = 1 ] && "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() and int(torch.__version__.split('.')[0]) >= 2 else 1)" 2>/dev/null; then
  HAVE_TORCH=1
elif [ "$PEER" = 1 ]; then
  echo "warning: $PY has no PyTorch 2.x with CUDA; running without the peer" | tee -a "$OUT/run.log"
fi

# Device-to-device copy bandwidth, measured in this run (PyTorch, else the microbenchmark).
if [ "$HAVE_TORCH" = 1 ]; then
  "$PY" "$ROOT/scripts/bench_peer.py" --copy-bandwidth --json "$OUT/copy.json" >/dev/null
elif [ -x "$BUILD/cuda/bench/bench_connections" ]; then
  "$BUILD/cuda/bench/bench_connections" --tokens 1024 --matrices 1024 --reps 20 --json "$OUT/copy_micro.json" >/dev/null
  "$PY" -c "import json; d=json.load(open('$OUT/copy_micro.json')); json.dump({'copy_gbs': d['copy_gbs'], 'device': d['device']}, open('$OUT/copy.json','w'))"
fi
[ -f "$OUT/copy.json" ] && log "copy bandwidth: $(cat "$OUT/copy.json")"

config_of() {
  case "$1" in
    baseline) echo "$ROOT/configs/baseline.yaml" ;;
    hc|hc-dynamic) echo "$ROOT/configs/hc.yaml" ;;
    mhc) echo "$ROOT/configs/mhc.yaml" ;;
    *) echo "bench_gpu.sh: unknown mode $1" >&2; exit 2 ;;
  esac
}

for width in $WIDTHS; do
  for mode in $MODES; do
    recomputes="$RECOMPUTE"
    [ "$RECOMPUTE" = both ] && recomputes="false true"
    [ "$mode" = baseline ] && recomputes="${recomputes%% *}"
    for rc in $recomputes; do
      sets=(--set "train.recompute=$rc")
      [ "$mode" = hc-dynamic ] && sets+=(--set residual.hc.dynamic=true)
      [ "$mode" = hc ] && sets+=(--set residual.hc.dynamic=false)
      if [ "$width" != 768 ]; then
        heads=$((width / 128))
        sets+=(--set "model.d_model=$width" --set "model.n_head=$heads" --set "train.micro_batch=$MB2048")
      fi
      tag="${mode}_d${width}_rc${rc}"
      cfg=$(config_of "$mode")
      log "mhc bench $tag"
      if ! "$MHC" bench -c "$cfg" "${sets[@]}" --steps "$STEPS" --warmup "$WARMUP" \
          --json "$OUT/mhc_$tag.json" >"$OUT/mhc_$tag.txt" 2>&1; then
        tail -5 "$OUT/mhc_$tag.txt"; echo "warning: mhc bench $tag failed" | tee -a "$OUT/run.log"
      fi
      grep -E "tokens/s|peak memory|MFU" "$OUT/mhc_$tag.txt" | sed 's/^/   /' || true
      if [ "$HAVE_TORCH" = 1 ]; then
        "$MHC" train -c "$cfg" "${sets[@]}" --print-config >"$OUT/config_$tag.yaml" 2>/dev/null
        log "pytorch peer $tag"
        if ! "$PY" "$ROOT/scripts/bench_peer.py" --config-yaml "$OUT/config_$tag.yaml" \
            --steps "$STEPS" --warmup "$WARMUP" --json "$OUT/peer_$tag.json" \
            >"$OUT/peer_$tag.txt" 2>&1; then
          tail -5 "$OUT/peer_$tag.txt"; echo "warning: peer $tag failed" | tee -a "$OUT/run.log"
        fi
      fi
    done
  done
done

"$PY" - "$OUT" "$STEPS" <<'PYEOF' | tee "$OUT/summary.md"
import glob, json, os, re, sys

out = sys.argv[1]
def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except Exception:
        return None

copy = load(os.path.join(out, "copy.json")) or {}
copy_gbs = copy.get("copy_gbs")

def tiny_yaml(path):
    root, stack = {}, [(-1, {})]
    stack = [(-1, root)]
    try:
        lines = open(path).read().splitlines()
    except Exception:
        return {}
    for raw in lines:
        if not raw.strip():
            continue
        ind = len(raw) - len(raw.lstrip(" "))
        k, _, v = raw.strip().partition(":")
        while stack[-1][0] >= ind:
            stack.pop()
        if v.strip() == "":
            stack[-1][1][k] = {}
            stack.append((ind, stack[-1][1][k]))
        else:
            stack[-1][1][k] = v.strip()
    return root

def shape(tag):
    """Shape from the resolved config the run used (defaults: configs/*.yaml)."""
    c = tiny_yaml(os.path.join(out, "config_%s.yaml" % tag))
    m, t = c.get("model", {}), c.get("train", {})
    mode, width = re.match(r"(.+)_d(\d+)_rc", tag).groups()
    C = int(m.get("d_model", width))
    return dict(C=C, L=int(m.get("n_layer", 12)), T=int(m.get("seq_len", 1024)),
                B=int(t.get("micro_batch", 16 if C == 768 else 8)),
                n=int(c.get("residual", {}).get("n", 4)))

def extra_bytes(mode, s, recompute):
    """Bytes the HC/mHC connection kernels must move per step beyond the baseline's
    residual path (each input read once, each output written once; activations bf16,
    coefficients fp32), summed over the 2L sublayers and the ends."""
    e, f4 = 2, 4
    C, n, N, K = s["C"], s["n"], s["B"] * s["T"], 2 * s["L"]
    nC, D, nn = n * C, 2 * n + n * n, n * n
    base = 2 * C * e                          # residual add in the output GEMM's epilogue
    agg_f = nC * e + n * f4 + C * e           # u = Σ pre X
    mrg_f = 2 * nC * e + C * e + (nn + n) * f4  # X' = res X + post f
    mrg_b = 3 * nC * e + 2 * C * e + 2 * (nn + n) * f4
    agg_b = 3 * nC * e + C * e + 2 * n * f4   # dX += pre du (RMW), dpre
    if mode == "mhc":
        cf_f = nC * e + (D + 1 + D) * f4      # X·φ with Σv² → m, r, pre, post, res
        cf_b = 3 * nC * e + (2 * D + 1) * f4  # X, dX RMW, m, r, dcoeffs
    elif mode == "hc-dynamic":
        cf_f = nC * e + (n + n * (n + 2) + D) * f4
        cf_b = 3 * nC * e + (n + n * (n + 2) + D) * f4
    else:  # hc static: per-token broadcast of the static coefficients
        cf_f, cf_b = D * f4, D * f4
    per_sub = cf_f + agg_f + mrg_f + mrg_b + agg_b + cf_b - base
    if recompute:
        per_sub += agg_f  # u again
        R = max(1, min(K, round(K ** 0.5)))
        per_sub += mrg_f * (R - 1) / R  # replayed merges of non-stored states
    ends = 2 * (C * e + nC * e)  # expand + collapse, forward and backward
    return N * (K * per_sub + ends)

rows = {}
for path in sorted(glob.glob(os.path.join(out, "mhc_*_d*_rc*.json"))):
    tag = os.path.basename(path)[4:-5]
    rows[tag] = (load(path), load(os.path.join(out, "peer_%s.json" % tag)))

def gib(b):
    return "%.2f" % (b / 2**30) if b else "-"

print("# GPU benchmark (%s)" % (copy.get("device") or "device unknown"))
print()
if copy_gbs:
    print("device-to-device copy bandwidth (read + write): %.0f GB/s" % copy_gbs)
print()
print("| run | mhc tok/s | peer tok/s | mhc/peer | mhc ms/step | MFU | mhc peak GiB | peer peak GiB | overhead vs baseline (mhc / peer) | floor ms | overhead/floor |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for tag, (m, p) in rows.items():
    mode, width, rc = re.match(r"(.+)_d(\d+)_rc(\w+)", tag).groups()
    base = [v for k, v in rows.items() if k.startswith("baseline_d%s_" % width)]
    bm, bp = (base[0] if base else (None, None))
    def ov(a, b):
        return "%.1f%%" % (100 * (a["ms_per_step"] - b["ms_per_step"]) / b["ms_per_step"]) if a and b else "-"
    floor = ratio = "-"
    if mode != "baseline" and copy_gbs and m and bm:
        fl_ms = extra_bytes(mode, shape(tag), rc == "true") / (copy_gbs * 1e9) * 1e3
        floor = "%.2f" % fl_ms
        ratio = "%.2f" % ((m["ms_per_step"] - bm["ms_per_step"]) / fl_ms)
    print("| %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s | %s |" % (
        tag,
        "%.0f" % m["tokens_per_s"] if m else "FAILED",
        "%.0f" % p["tokens_per_s"] if p else "-",
        "%.2fx" % (m["tokens_per_s"] / p["tokens_per_s"]) if m and p else "-",
        "%.1f" % m["ms_per_step"] if m else "-",
        "%.1f%%" % (100 * m["mfu"]) if m and m.get("mfu") else "-",
        gib(m["peak_bytes"]) if m else "-",
        gib(p["peak_bytes"]) if p else "-",
        ov(m, bm) if mode != "baseline" else "-", ov(p, bp) if mode != "baseline" else "-",
        floor, ratio))
print()
print("overhead = (step time − baseline step time) / baseline step time, same width and")
print("implementation (the mHC paper reports 6.7% at n = 4 with its kernels). floor = extra")
print("bytes the connection kernels must move per step / the copy bandwidth above;")
print("overhead/floor = (mode − baseline step time) / floor (target ≤ 1.25 for mHC).")
print("Steps timed: %s (after warmup); peak memory: mhc = bytes allocated through the backend," % sys.argv[2])
print("peer = torch.cuda.max_memory_allocated().")
PYEOF
log "results in $OUT (summary.md, *.json, *.txt)"
