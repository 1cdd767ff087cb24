#!/usr/bin/env bash
# CPU throughput: the mhc trainer (`mhc bench`) against the PyTorch reference training
# step (scripts/bench_cpu_torch.py -> tests/reference/mhc_reference.py) on the SAME
# config: same model, micro-batch and sequence length, float32, forward + backward +
# clip + AdamW, same thread count, warmup steps excluded. Prints tokens/s side by side
# for each residual mode and a markdown table for docs/performance.md.
#
#   scripts/bench_cpu.sh [--config configs/default.yaml] [--threads 2] [--steps 10]
#                        [--warmup 2] [--modes "baseline hc mhc"] [--mhc build/mhc]
#                        [--out DIR] [--set key.path=value]...
#
# --set overrides go to both sides (they are applied by `mhc` and the resolved config is
# what the PyTorch side reads). Needs /usr/bin/python3 with torch and yaml.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONFIG="$ROOT/configs/default.yaml"
THREADS=2
STEPS=10
WARMUP=2
MODES="baseline hc mhc"
MHC="$ROOT/build/mhc"
OUT=""
PY=/usr/bin/python3
SETS=()

while [ $# -gt 0 ]; do
  case "$1" in
    --config|-c) CONFIG=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --mhc) MHC=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --set) SETS+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "bench_cpu.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

[ -x "$MHC" ] || { echo "bench_cpu.sh: $MHC not found; build first (or pass --mhc)" >&2; exit 1; }
"$PY" -c "import torch, yaml" 2>/dev/null || {
  echo "bench_cpu.sh: $PY cannot import torch and yaml" >&2; exit 1; }
[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/bench_cpu.XXXXXX)
mkdir -p "$OUT"

# Same threads everywhere: mhc via train.threads; torch via set_num_threads, OpenMP and
# the (pthread) OpenBLAS it links.
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS

echo "bench_cpu.sh: config $CONFIG, $THREADS threads, $STEPS steps (+$WARMUP warmup), results in $OUT"
echo "load before: $(uptime)"
for mode in $MODES; do
  sets=("${SETS[@]}" --set "residual.mode=$mode" --set "train.threads=$THREADS" --set "train.device=cpu")
  echo "== $mode"
  "$MHC" train -c "$CONFIG" "${sets[@]}" --print-config > "$OUT/resolved_$mode.yaml"
  "$MHC" bench -c "$CONFIG" "${sets[@]}" --steps "$STEPS" --warmup "$WARMUP" \
    --json "$OUT/mhc_$mode.json" > "$OUT/mhc_$mode.txt" 2>&1 || {
      cat "$OUT/mhc_$mode.txt"; exit 1; }
  grep -E "^(device|tokens/s|ms/step|phases|ops)" "$OUT/mhc_$mode.txt" | sed 's/^/  mhc   /'
  "$PY" "$ROOT/scripts/bench_cpu_torch.py" --config "$OUT/resolved_$mode.yaml" \
    --threads "$THREADS" --steps "$STEPS" --warmup "$WARMUP" --json "$OUT/torch_$mode.json" |
    sed 's/^/  /'
done
echo "load after: $(uptime)"

"$PY" - "$OUT" "$CONFIG" "$THREADS" "$STEPS" "$WARMUP" "$MODES" <<'EOF'
import json, os, platform, subprocess, sys, datetime
out, config, threads, steps, warmup, modes = sys.argv[1:7]
cpu = "unknown CPU"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
print()
print(f"<!-- {datetime.date.today()} {cpu}, {os.cpu_count()} cores; config {os.path.relpath(config)}; "
      f"{threads} threads; {steps} timed steps after {warmup} warmup -->")
print("| mode | n | tokens/step | mhc tokens/s | PyTorch tokens/s | mhc / PyTorch | mhc ms/step (fwd / bwd / opt) |")
print("|---|---|---|---|---|---|---|")
for mode in modes.split():
    m = json.load(open(os.path.join(out, f"mhc_{mode}.json")))
    t = json.load(open(os.path.join(out, f"torch_{mode}.json")))
    print(f"| {mode} | {t['n']} | {m['tokens_per_step']} | {m['tokens_per_s']:.0f} | "
          f"{t['tokens_per_s']:.0f} | {m['tokens_per_s'] / t['tokens_per_s']:.2f}x | "
          f"{m['ms_per_step']:.1f} ({m['forward_ms']:.1f} / {m['backward_ms']:.1f} / {m['optimizer_ms']:.1f}) |")
EOF
