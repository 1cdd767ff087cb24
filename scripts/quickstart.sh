#!/usr/bin/env bash
# README command 1: set up, prepare the default corpus if missing, train
# configs/default.yaml end to end (CPU here, GPU where present), then sample from it.
# Extra arguments go to `mhc train`, e.g.: scripts/quickstart.sh --set residual.mode=hc
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --mhc  # only the binary; scripts/test.sh builds the test suite
data/prepare_linuxdoc.sh build/mhc

# The run directory is runs/default-<mode>; an existing finished run is resumed (a no-op).
build/mhc train -c configs/default.yaml --resume auto "$@"

# Where that run lives: <run.dir>/<run.name> from the resolved config.
config=$(build/mhc train -c configs/default.yaml "$@" --print-config)
run_dir=$(awk '/^run:/{r=1; next} /^[a-z]/{r=0} r && /^  dir:/{d=$2} r && /^  name:/{n=$2} END{print d "/" n}' <<<"$config")
echo
echo "== sample from $run_dir =="
build/mhc sample --checkpoint "$run_dir" --prompt "The kernel" \
  --max-new-tokens 400 --temperature 0.8 --top-k 40 --seed 1
