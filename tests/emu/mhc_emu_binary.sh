#!/usr/bin/env bash
# End-to-end test of mhc-emu (-DMHC_EMULATED_BINARY=ON), the mhc binary whose
# train.device=cuda runs the CUDA backend on the CPU emulator:
#   mhc_emu_binary.sh MHC MHC_EMU WORK_DIR
# A few fp32 steps of tests/e2e/tiny.yaml on the emulated backend must log the same training
# losses as the CPU binary (the emulated kernels accumulate in another order: 1e-3 relative),
# and train.device=auto on mhc-emu must train on the CPU (emulation is never picked).
set -uo pipefail
mhc=$1
mhc_emu=$2
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../test_lib.sh
source "$here/../test_lib.sh"
start_test_dir "$3"

short=(--set train.steps=4 --set train.warmup=1 --set train.log_every=1 --set train.eval_every=4
       --set train.eval_batches=1 --set train.final_eval_batches=1 --set train.checkpoint_every=4)

# The training losses of a metrics file, one per line.
train_losses() {
  python3 -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("type") == "train":
        print(r["loss"])' "$1"
}

make_corpus
check "train on the CPU (mhc)" train_tiny cpu "${short[@]}" --set train.device=cpu 2>cpu.err
mhc_cpu=$mhc
mhc=$mhc_emu
check "train on the emulated CUDA backend (mhc-emu, train.device=cuda)" \
  train_tiny emu "${short[@]}" --set train.device=cuda 2>emu.err
check "the emulated run names the emulator" grep -q "CUDA emulator" emu.err
train_losses cpu/metrics.jsonl >cpu.losses
train_losses emu/metrics.jsonl >emu.losses
echo "cpu losses: $(tr '\n' ' ' <cpu.losses)"
echo "emu losses: $(tr '\n' ' ' <emu.losses)"
check "4 losses each, equal within 1e-3 relative" python3 - cpu.losses emu.losses <<'PY'
import sys
a = [float(x) for x in open(sys.argv[1])]
b = [float(x) for x in open(sys.argv[2])]
assert len(a) == len(b) == 4, (a, b)
for x, y in zip(a, b):
    assert abs(x - y) <= 1e-3 * abs(x), (a, b)
PY
train_tiny auto "${short[@]}" --set train.device=auto 2>auto.err
check "train.device=auto on mhc-emu trains on the CPU, saying why" \
  grep -q "using cpu.*mhc-emu emulates CUDA only for train.device=cuda" auto.err
mhc=$mhc_cpu
finish
