#!/usr/bin/env bash
# CPU throughput: the mhc trainer (`mhc bench`) against the PyTorch reference training
# step (scripts/bench_cpu_torch.py -> tests/reference/mhc_reference.py) on the SAME
# config: same model, micro-batch and sequence length, float32, forward + backward +
# clip + AdamW, same thread count, warmup steps excluded. Prints tokens/s side by side
# for each residual mode and a markdown table for docs/performance.md.
#
#   scripts/bench_cpu.sh [--config configs/default.yaml] [--threads 2] [--steps 10]
#                        [--warmup 2] [--modes "baseline hc mhc"] [--mhc build/mhc]
#                        [--repeat 1] [--mhc-wait-policy unset|passive|active]
#                        [--torch-wait-policy passive|active|unset]
#                        [--out DIR] [--set key.path=value]...
#
# --set overrides go to both sides (they are applied by `mhc` and the resolved config is
# what the PyTorch side reads). --repeat R runs R rounds, alternating mhc and PyTorch,
# and the table reports each side's best round (and the range): on a shared machine
# the best round is the one least disturbed by other work.
# OMP_WAIT_POLICY per side, each in its faster setting on the 2-core machine: mhc keeps
# the OpenMP default (spinning; its OpenBLAS shares the OpenMP pool) and was ~10% faster
# that way than with PASSIVE; Debian's PyTorch runs OpenMP (intra-op) next to a separate
# pthread OpenBLAS pool, and with spinning OpenMP threads its 2-thread step was 2-3x
# slower than with PASSIVE. "unset" leaves the variable unset. Needs /usr/bin/python3
# with torch and yaml.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONFIG="$ROOT/configs/default.yaml"
THREADS=2
STEPS=10
WARMUP=2
MODES="baseline hc mhc"
MHC="$ROOT/build/mhc"
REPEAT=1
MHC_WAIT="unset"
TORCH_WAIT="passive"
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
    --repeat) REPEAT=$2; shift 2 ;;
    --mhc-wait-policy) MHC_WAIT=$2; shift 2 ;;
    --torch-wait-policy) TORCH_WAIT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --set) SETS+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
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
unset OMP_WAIT_POLICY
# env(1) arguments that set OMP_WAIT_POLICY for one side ("unset" removes it).
wait_env() {
  case "$1" in
    passive|active) echo "OMP_WAIT_POLICY=${1^^}" ;;
    unset) echo "-u OMP_WAIT_POLICY" ;;
    *) echo "bench_cpu.sh: wait policy must be passive, active or unset, got '$1'" >&2; exit 2 ;;
  esac
}
MHC_ENV=$(wait_env "$MHC_WAIT")
TORCH_ENV=$(wait_env "$TORCH_WAIT")

echo "bench_cpu.sh: config $CONFIG, $THREADS threads, $STEPS steps (+$WARMUP warmup)," \
     "$REPEAT round(s), OMP_WAIT_POLICY mhc=$MHC_WAIT torch=$TORCH_WAIT, results in $OUT"
echo "load before: $(uptime)"
for round in $(seq 1 "$REPEAT"); do
  for mode in $MODES; do
    sets=("${SETS[@]}" --set "residual.mode=$mode" --set "train.threads=$THREADS" --set "train.device=cpu")
    echo "== $mode (round $round)"
    tag="${mode}_r$round"
    "$MHC" train -c "$CONFIG" "${sets[@]}" --print-config > "$OUT/resolved_$mode.yaml"
    # shellcheck disable=SC2086  # $MHC_ENV is one or two env(1) words
    env $MHC_ENV "$MHC" bench -c "$CONFIG" "${sets[@]}" --steps "$STEPS" --warmup "$WARMUP" \
      --json "$OUT/mhc_$tag.json" > "$OUT/mhc_$tag.txt" 2>&1 || {
        cat "$OUT/mhc_$tag.txt"; exit 1; }
    grep -E "^(device|tokens/s|ms/step|phases|ops)" "$OUT/mhc_$tag.txt" | sed 's/^/  mhc   /'
    # shellcheck disable=SC2086
    env $TORCH_ENV "$PY" "$ROOT/scripts/bench_cpu_torch.py" --config "$OUT/resolved_$mode.yaml" \
      --threads "$THREADS" --steps "$STEPS" --warmup "$WARMUP" --json "$OUT/torch_$tag.json" |
      sed 's/^/  /'
  done
  echo "load: $(uptime)"
done

"$PY" - "$OUT" "$CONFIG" "$THREADS" "$STEPS" "$WARMUP" "$MODES" "$REPEAT" "${SETS[*]:-}" \
  "mhc $MHC_WAIT, PyTorch $TORCH_WAIT" <<'EOF'
import json, os, sys, datetime
out, config, threads, steps, warmup, modes, repeat, sets, wait = sys.argv[1:10]
repeat = int(repeat)
cpu = "unknown CPU"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
print()
load = open("/proc/loadavg").read().split()[:3]
print(f"<!-- {datetime.datetime.now():%Y-%m-%d %H:%M} {cpu}, {os.cpu_count()} cores; config "
      f"{os.path.relpath(config)}{' ' + sets if sets else ''}; {threads} threads; OMP_WAIT_POLICY={wait}; {steps} timed steps after {warmup} warmup; "
      f"best of {repeat} round(s); load average at the end {' '.join(load)} -->")
rng = repeat > 1
print("| mode | n | tokens/step | mhc tokens/s | PyTorch tokens/s | mhc / PyTorch | mhc ms/step (fwd / bwd / opt) |")
print("|---|---|---|---|---|---|---|")
for mode in modes.split():
    ms = [json.load(open(os.path.join(out, f"mhc_{mode}_r{r}.json"))) for r in range(1, repeat + 1)]
    ts = [json.load(open(os.path.join(out, f"torch_{mode}_r{r}.json"))) for r in range(1, repeat + 1)]
    m = max(ms, key=lambda j: j["tokens_per_s"])
    t = max(ts, key=lambda j: j["tokens_per_s"])
    def cell(best, runs):
        lo = min(j["tokens_per_s"] for j in runs)
        return f"{best['tokens_per_s']:.0f}" + (f" ({lo:.0f}–{best['tokens_per_s']:.0f})" if rng else "")
    print(f"| {mode} | {t['n']} | {m['tokens_per_step']} | {cell(m, ms)} | {cell(t, ts)} | "
          f"{m['tokens_per_s'] / t['tokens_per_s']:.2f}x | "
          f"{m['ms_per_step']:.1f} ({m['forward_ms']:.1f} / {m['backward_ms']:.1f} / {m['optimizer_ms']:.1f}) |")
EOF
