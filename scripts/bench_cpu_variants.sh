#!/usr/bin/env bash
# CPU throughput of every residual connection on one shape, for one or more mhc binaries
# (e.g. before and after a change), interleaved: each round runs every variant on every
# binary in turn, and the table keeps each pair's best round (the one least disturbed on a
# shared machine) with the range, plus tokens/s relative to the same binary's baseline.
#
#   scripts/bench_cpu_variants.sh [--mhc BIN]... [--rounds 3] [--threads 2] [--steps 5]
#                                 [--warmup 2] [--config FILE] [--shape variants|config]
#                                 [--set key=value]...
#
# Default shape: the variants sweep's (configs/ablations/variants.yaml: 16 blocks, d = 64,
# T = 64, n = 4) on configs/default.yaml's micro-batch; --shape config keeps the config's
# own model. Default binary: build/mhc.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BINS=()
ROUNDS=3
THREADS=2
STEPS=5
WARMUP=2
CONFIG="$ROOT/configs/default.yaml"
VARIANTS_SHAPE=(--set model.d_model=64 --set model.n_layer=16 --set model.n_head=4
                --set model.seq_len=64 --set residual.n=4)
SHAPE=variants
SETS=(--set train.device=cpu)
die() { echo "bench_cpu_variants.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --mhc) BINS+=("$2"); shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --shape) SHAPE=$2; shift 2 ;;
    --set) SETS+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ ${#BINS[@]} -gt 0 ] || BINS=("$ROOT/build/mhc")
for b in "${BINS[@]}"; do [ -x "$b" ] || die "--mhc $b: not an executable file"; done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds $ROUNDS: must be a positive integer"
[ -f "$CONFIG" ] || die "--config $CONFIG: no such file"
case "$SHAPE" in
  variants) SETS+=("${VARIANTS_SHAPE[@]}") ;;
  config) ;;
  *) die "--shape $SHAPE: allowed are variants, config" ;;
esac

# name | overrides (as in configs/ablations/variants.yaml)
VARIANTS=(
  "baseline|residual.mode=baseline"
  "hc|residual.mode=hc"
  "hc-dynamic|residual.mode=hc residual.hc.dynamic=true"
  "mhc|residual.mode=mhc"
  "mhc-v4|residual.mode=mhc residual.mhc.numerics=deepseek_v4 residual.collapse=learned"
  "mhc-lite|residual.mode=mhc residual.mhc.projection=birkhoff"
  "kromhc|residual.mode=mhc residual.mhc.projection=kronecker"
  "mhc-static|residual.mode=mhc residual.mhc.dynamic=false"
  "identity|residual.mode=mhc residual.mhc.projection=identity"
)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for ((r = 1; r <= ROUNDS; r++)); do
  for v in "${VARIANTS[@]}"; do
    name=${v%%|*}
    sets=()
    for kv in ${v#*|}; do sets+=(--set "$kv"); done
    for i in "${!BINS[@]}"; do
      "${BINS[$i]}" bench -c "$CONFIG" "${SETS[@]}" "${sets[@]}" --set train.threads="$THREADS" \
        --steps "$STEPS" --warmup "$WARMUP" --json "$out/$i.$name.$r.json" >/dev/null 2>"$out/err" ||
        { cat "$out/err" >&2; die "${BINS[$i]} bench failed on $name"; }
    done
  done
  echo "round $r done, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done
python3 - "$out" "$ROUNDS" "${BINS[@]}" <<'PY'
import json, sys
out, rounds, bins = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
names = ["baseline", "hc", "hc-dynamic", "mhc", "mhc-v4", "mhc-lite", "kromhc", "mhc-static", "identity"]
def runs(i, name):
    return [json.load(open(f"{out}/{i}.{name}.{r}.json")) for r in range(1, rounds + 1)]
print("| variant | " + " | ".join(f"`{b}` tokens/s (best, range) | x baseline | connection share" for b in bins) + " |")
print("|---|" + "---|---|---|" * len(bins))
for name in names:
    cells = []
    for i in range(len(bins)):
        tps = [j["tokens_per_s"] for j in runs(i, name)]
        base = max(j["tokens_per_s"] for j in runs(i, "baseline"))
        best = max(runs(i, name), key=lambda j: j["tokens_per_s"])
        share = best.get("connection_share")  # absent from binaries older than the field
        cells.append(f"{max(tps):.0f} ({min(tps):.0f}-{max(tps):.0f}) | {max(tps) / base:.2f} | "
                     + ("n/a" if share is None else f"{100 * share:.0f}%"))
    print(f"| {name} | " + " | ".join(cells) + " |")
PY
