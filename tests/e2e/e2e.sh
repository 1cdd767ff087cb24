#!/usr/bin/env bash
# End-to-end tests of the mhc binary, one case per ctest entry:
#   e2e.sh MHC_BINARY CASE WORK_DIR
# Cases: train_<mode> (loss falls; sample/eval/export/inspect work), resume (bit-identical),
# errors (every bad input gives one clear error line and exit code 1), variants (the mHC
# variants train, export and inspect).
set -uo pipefail
mhc=$1
case_name=$2
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../test_lib.sh
source "$here/../test_lib.sh"
start_test_dir "$3"

# Every field of a metrics file is in docs/metrics.md; every record is time-stamped.
check_metrics_doc() {
  check "metrics fields documented, records time-stamped ($1)" \
    python3 "$here/check_metrics_doc.py" "$1" "$here/../../docs/metrics.md"
}

# Prints the val_loss of the first and last eval lines of a metrics file.
eval_losses() {
  python3 -c '
import json, sys
evals = [json.loads(l) for l in open(sys.argv[1]) if "\"eval\"" in l]
print(evals[0]["val_loss"], evals[-1]["val_loss"])' "$1"
}

case_train() {
  local mode=$1
  make_corpus
  check "train $mode" train_tiny run --set "residual.mode=$mode" 2>train.err
  read -r first last < <(eval_losses run/metrics.jsonl)
  echo "val loss $first -> $last"
  check "val loss fell below 0.7 x initial" python3 -c "import sys; sys.exit(0 if $last < 0.7 * $first else 1)"
  check "initial val loss is near ln 256" python3 -c "import math,sys; sys.exit(0 if abs($first - math.log(256)) < 0.3 else 1)"
  if [ "$mode" != baseline ]; then
    check "amax gains logged" grep -q '"amax"' run/metrics.jsonl
  fi
  "$mhc" sample --checkpoint run --prompt "int main" --max-new-tokens 50 --seed 3 >sample.txt 2>sample.err
  check "sample writes prompt + 50 bytes" test "$(head -c -1 sample.txt | wc -c)" -ge 50
  "$mhc" sample --checkpoint run --prompt "int main" --max-new-tokens 50 --seed 3 >sample2.txt 2>/dev/null
  check "sampling is reproducible for a seed" cmp -s sample.txt sample2.txt
  check "eval reports bits per byte" sh -c "'$mhc' eval --checkpoint run --batches 2 | grep -q 'bits per byte'"
  check_metrics_doc run/metrics.jsonl
  # Same thread count as training (tiny.yaml): OpenBLAS's multi-threaded GEMMs may round
  # differently with another count on some CPUs (seen on AMD EPYC).
  check "mhc eval of the final checkpoint = the run's final full evaluation" \
    sh -c "'$mhc' eval --checkpoint run --threads 1 --json eval.json >/dev/null && python3 - run/metrics.jsonl eval.json <<'PY'
import json, sys
full = [r for r in map(json.loads, open(sys.argv[1])) if r['type'] == 'eval' and r['split'] == 'full']
assert len(full) == 1, full
got = json.load(open(sys.argv[2]))
assert got['whole_set'], got
for key in ('val_loss', 'val_loss_se', 'val_tokens', 'bits_per_byte'):
    assert abs(got['result'][key] - full[0][key]) <= 1e-9 * abs(full[0][key]), (key, got, full)
PY"
  check "eval --batches beyond the set reads it once, with a note" \
    sh -c "'$mhc' eval --checkpoint run --batches 100000 2>&1 | grep -q 'exceeds the .* micro-batches'"
  check "export" "$mhc" export --checkpoint run --output exported.safetensors
  check "export has the documented names" python3 - exported.safetensors "$mode" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
names = set(header) - {"__metadata__"}
need = {"embed.weight", "final_norm.weight", "blocks.0.attn_norm.weight", "blocks.1.mlp_norm.weight",
        "blocks.0.attn.wq.weight", "blocks.0.attn.wk.weight", "blocks.0.attn.wv.weight",
        "blocks.0.attn.wo.weight", "blocks.0.mlp.w_gate.weight", "blocks.0.mlp.w_up.weight",
        "blocks.0.mlp.w_down.weight"}
mode = sys.argv[2]
if mode == "mhc":
    need |= {"blocks.0.attn_conn.phi", "blocks.0.attn_conn.alpha", "blocks.1.mlp_conn.bias"}
    assert header["blocks.0.attn_conn.phi"]["shape"] == [2 * 64, 2 * 2 + 4], header["blocks.0.attn_conn.phi"]
if mode == "hc":
    need |= {"blocks.0.attn_conn.a", "blocks.0.attn_conn.A", "blocks.1.mlp_conn.b"}
assert header["embed.weight"]["shape"] == [256, 64], header["embed.weight"]
missing = need - names
assert not missing, missing
assert "config" in header["__metadata__"] and header["__metadata__"]["tokenizer"] == "byte"
PY
  if [ "$mode" != baseline ]; then
    check "inspect prints H_res and gains" sh -c "'$mhc' inspect --checkpoint run --json conn.json | grep -q 'Amax gain'"
    check "inspect json" python3 -c "import json; d=json.load(open('conn.json')); assert len(d['sublayers']) == 4"
  fi
}

case_resume() {
  make_corpus
  # Two threads: resume must be bit-identical with multi-threaded reductions too.
  local common=(--set residual.mode=mhc --set train.steps=24 --set train.checkpoint_every=0
                --set train.eval_every=12 --set train.threads=2)
  check "straight run" train_tiny straight "${common[@]}" 2>/dev/null
  check "first half (stop at 12)" train_tiny split "${common[@]}" --stop-at-step 12 2>/dev/null
  check "a fresh start refuses to overwrite" sh -c "! '$mhc' train -c '$here/tiny.yaml' --run-dir split >/dev/null 2>&1"
  check "second half (--resume auto)" train_tiny split "${common[@]}" --resume auto 2>/dev/null
  check "final weights are bit-identical" cmp straight/checkpoints/step_00000024/model.safetensors \
    split/checkpoints/step_00000024/model.safetensors
  check "final optimizer state is bit-identical" cmp straight/checkpoints/step_00000024/optim_rank00000.safetensors \
    split/checkpoints/step_00000024/optim_rank00000.safetensors
  check "losses are bit-identical" python3 - straight/metrics.jsonl split/metrics.jsonl <<'PY'
import json, sys
def losses(path):
    rows = [json.loads(l) for l in open(path)]
    return [(r["type"], r["step"], r.get("loss_step"), r.get("val_loss"), r.get("grad_norm")) for r in rows]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert a == b, (a, b)
print(len(a), "metrics rows identical")
PY
  check_metrics_doc split/metrics.jsonl
}

# expect_error DESCRIPTION PATTERN COMMAND...: exit code 1, exactly one stderr line,
# starting with "error:" and matching PATTERN.
expect_error() {
  local what=$1 pattern=$2
  shift 2
  "$@" >/dev/null 2>err.txt
  local rc=$?
  local lines
  lines=$(grep -c '' err.txt)
  if [ "$rc" -eq 1 ] && [ "$lines" -eq 1 ] && grep -q '^error: ' err.txt && grep -qE "$pattern" err.txt; then
    echo "ok: $what -> $(cat err.txt)"
  else
    echo "FAIL: $what (exit $rc, $lines lines): $(cat err.txt)"
    failures=$((failures + 1))
  fi
}

write_shard() {  # write_shard PATH MAGIC VERSION COUNT ACTUAL_TOKENS MAX_TOKEN
  python3 - "$@" <<'PY'
import struct, sys
path, magic, version, count, actual, top = sys.argv[1], *map(int, sys.argv[2:])
header = struct.pack("<256i", magic, version, count, *([0] * 253))
tokens = struct.pack("<%dH" % actual, *[(i * 7) % (top + 1) for i in range(actual)])
open(path, "wb").write(header + tokens)
PY
}

case_errors() {
  make_corpus
  local data=(--set "data.train=$work/corpus/*_train_*.bin" --set "data.val=$work/corpus/*_val_*.bin"
              --set train.warmup=2)
  printf 'model:\n  d_modle: 64\n' >typo.yaml
  expect_error "unknown key (file)" "typo.yaml.*model.d_modle.*did you mean 'model.d_model'" \
    "$mhc" train -c typo.yaml --dry-run
  expect_error "unknown key (--set)" "train.lrr.*did you mean 'train.lr'" "$mhc" train --set train.lrr=1 --dry-run
  printf 'train:\n  steps: many\n' >type.yaml
  expect_error "wrong type" "train.steps: expected an integer.*many" "$mhc" train -c type.yaml --dry-run
  expect_error "wrong enum" "residual.mode.*'mhx' is not one of.*did you mean 'mhc'" \
    "$mhc" train --set residual.mode=mhx --dry-run
  expect_error "d_model not divisible by n_head" "model.d_model=100 is not divisible by model.n_head=3" \
    "$mhc" train --set model.d_model=100 --set model.n_head=3 --dry-run
  expect_error "missing config file" "nope.yaml" "$mhc" train -c nope.yaml --dry-run
  # mHC variants: each bad combination names the key, the value and what is allowed.
  expect_error "birkhoff with n=6" "residual.mhc.projection=birkhoff needs residual.n <= 5.*residual.n=6" \
    "$mhc" train --set residual.mhc.projection=birkhoff --set residual.n=6 --dry-run
  expect_error "kronecker with n=3" "residual.mhc.projection=kronecker needs residual.n a power of two.*residual.n=3" \
    "$mhc" train --set residual.mhc.projection=kronecker --set residual.n=3 --dry-run
  expect_error "learned collapse with baseline" "residual.collapse=learned needs residual.mode hc or mhc" \
    "$mhc" train --set residual.mode=baseline --set residual.collapse=learned --dry-run
  expect_error "glob matches no shard" "data.train" \
    train_tiny run1 --set "data.train=$work/none/*.bin" --set "data.val=$work/corpus/*_val_*.bin"
  mkdir -p bad
  : >bad/empty_train_000000.bin
  expect_error "empty shard" "empty_train_000000.bin.*(empty|short)" \
    train_tiny run2 --set "data.train=$work/bad/empty_*.bin" --set "data.val=$work/corpus/*_val_*.bin"
  write_shard bad/magic_train_000000.bin 12345 1 5000 5000 255
  expect_error "bad magic" "magic_train_000000.bin.*magic" \
    train_tiny run3 --set "data.train=$work/bad/magic_*.bin" --set "data.val=$work/corpus/*_val_*.bin"
  write_shard bad/size_train_000000.bin 20240520 1 5000 4000 255
  expect_error "wrong size" "size_train_000000.bin.*(size|truncated)" \
    train_tiny run4 --set "data.train=$work/bad/size_*.bin" --set "data.val=$work/corpus/*_val_*.bin"
  write_shard bad/vocab_train_000000.bin 20240520 1 5000 5000 300
  expect_error "token >= vocab" "vocab_train_000000.bin.*token.*vocab" \
    train_tiny run5 --set "data.train=$work/bad/vocab_*.bin" --set "data.val=$work/corpus/*_val_*.bin"
  # A real checkpoint, then damage and misuse it.
  check "train a checkpoint" train_tiny good "${data[@]}" --set train.steps=4 --set train.eval_every=0 2>/dev/null
  expect_error "resume with a different model shape" "different model.*model.d_model: 64 vs 128" \
    train_tiny good "${data[@]}" --set train.steps=8 --set model.d_model=128 --resume auto
  cp -r good/checkpoints/step_00000004 truncated
  truncate -s 5000 truncated/model.safetensors
  expect_error "truncated checkpoint" "model.safetensors (is [0-9]+ bytes, state.json records|.*truncated)" \
    train_tiny run6 "${data[@]}" --set train.steps=8 --resume truncated
  expect_error "missing checkpoint" "no checkpoint|does not exist" "$mhc" sample --checkpoint nowhere
  expect_error "dry-run checks the data" "no data shards match.*data.val" \
    "$mhc" train -c "$here/tiny.yaml" --set "data.train=$work/corpus/*_train_*.bin" --set "data.val=$work/none/*.bin" --dry-run
  mkdir -p elsewhere
  expect_error "a run from another directory (relative data globs)" "relative path, from .*elsewhere" \
    sh -c "cd elsewhere && exec '$mhc' train -c '$here/tiny.yaml'"
  check "... and it created nothing there" test -z "$(ls -A elsewhere)"
  expect_error "mistyped command" "unknown command 'tarin'; did you mean 'train'" "$mhc" tarin
  check "mhc help eval shows defaults" sh -c "'$mhc' help eval | grep -q 'threads INT=0'"
  expect_error "eval --batches 0" "batches 0: must be at least 1" "$mhc" eval --checkpoint good --batches 0
}

# The mHC variants train, export their variant keys in the metadata and inspect.
case_variants() {
  make_corpus
  local -a names=(v4_learned birkhoff_static kronecker_identity)
  local -a sets=("--set residual.mhc.numerics=deepseek_v4 --set residual.collapse=learned"
                 "--set residual.mhc.projection=birkhoff --set residual.mhc.dynamic=false"
                 "--set residual.mhc.projection=identity")
  for i in 0 1 2; do
    local name=${names[$i]}
    # shellcheck disable=SC2086  # the sets are ours, word-split on purpose
    check "train $name" train_tiny "$name" --set residual.mode=mhc --set train.steps=40 \
      --set train.eval_every=20 --set train.checkpoint_every=40 ${sets[$i]} 2>"$name.err"
    read -r first last < <(eval_losses "$name/metrics.jsonl")
    echo "$name: val loss $first -> $last"
    check "$name: val loss fell below 0.8 x initial" python3 -c "import sys; sys.exit(0 if $last < 0.8 * $first else 1)"
    check "$name: export" "$mhc" export --checkpoint "$name" --output "$name.safetensors"
    check "$name: inspect names the variant" sh -c "'$mhc' inspect --checkpoint '$name' | grep -q 'mhc n=2'"
  done
  check "v4_learned: inspect shows the learned collapse weights" \
    sh -c "'$mhc' inspect --checkpoint v4_learned | grep -A1 '^learned collapse weights' | grep -q '  mean '"
  check_metrics_doc v4_learned/metrics.jsonl
  check "v4_learned: the eval diagnostics carry them" \
    sh -c "grep '\"collapse\"' v4_learned/metrics.jsonl | grep -q '\"mean\"'"
  check "export metadata and names of the variants" python3 - <<'PY'
import json, struct
def header(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n])
h = header("v4_learned.safetensors")
m = h["__metadata__"]
assert m["residual.mhc.numerics"] == "deepseek_v4" and m["residual.collapse"] == "learned", m
assert h["collapse.phi"]["shape"] == [2 * 64, 2] and h["collapse.alpha"]["shape"] == [1], h["collapse.phi"]
assert h["blocks.0.attn_conn.phi"]["shape"] == [2 * 64, 2 * 2 + 4]
h = header("birkhoff_static.safetensors")
m = h["__metadata__"]
assert m["residual.mhc.projection"] == "birkhoff" and m["residual.mhc.dynamic"] == "false", m
assert "blocks.0.attn_conn.phi" not in h and "blocks.0.attn_conn.alpha" not in h
assert h["blocks.0.attn_conn.bias"]["shape"] == [2 * 2 + 2], h["blocks.0.attn_conn.bias"]
h = header("kronecker_identity.safetensors")
assert h["__metadata__"]["residual.mhc.projection"] == "identity"
assert h["blocks.1.mlp_conn.phi"]["shape"] == [2 * 64, 4], h["blocks.1.mlp_conn.phi"]
print("variant exports ok")
PY
}

# mhc eval --compare on two tiny checkpoints: its delta and paired SE against numpy's
# arithmetic on the per-window losses both runs' final evaluations left behind, the report's
# paired table agreeing, and checkpoints that would not read the same windows refused.
case_compare() {
  make_corpus
  train_tiny base --set residual.mode=baseline >/dev/null 2>&1
  check "train baseline (exit $?)" test -s base/metrics.jsonl
  train_tiny mhc --set residual.mode=mhc >/dev/null 2>&1
  check "train mhc (exit $?)" test -s mhc/metrics.jsonl
  check "training left the per-window losses of its final evaluation" \
    test -s base/final_eval_windows.safetensors -a -s mhc/final_eval_windows.safetensors
  "$mhc" eval --checkpoint base --compare mhc --threads 1 --json cmp.json >cmp.out 2>&1
  check "eval --compare (exit $?)" grep -q "^delta B - A: .* ± .*paired" cmp.out
  cat cmp.out
  check "delta and delta_se = numpy on the runs' per-window losses; each loss = its run's final eval" \
    /usr/bin/python3 - cmp.json base mhc <<'PY'
import json, struct, sys
import numpy as np

def window_losses(run):
    blob = open(run + "/final_eval_windows.safetensors", "rb").read()
    n = struct.unpack("<Q", blob[:8])[0]
    h = json.loads(blob[8:8 + n])
    lo, hi = h["window_loss"]["data_offsets"]
    return np.frombuffer(blob[8 + n + lo:8 + n + hi], dtype="<f8")

def final(run):
    return [r for r in map(json.loads, open(run + "/metrics.jsonl")) if r.get("split") == "full"][-1]

got = json.load(open(sys.argv[1]))
a, b = window_losses(sys.argv[2]), window_losses(sys.argv[3])
d = b - a
n = len(d)
block = (np.arange(n) * 16) // n              # window p in block floor(16 p / n)
means = np.array([d[block == k].mean() for k in range(16)])
se = means.std(ddof=1) / np.sqrt(16)
# mhc eval's forward and training's final one agree to ~1e-9 relative per window (as the
# single-checkpoint test above allows), so a difference of ~0.03 and its SE agree to ~1e-7.
assert abs(got["delta"] - d.mean()) < 1e-7, (got["delta"], d.mean())
assert abs(got["delta_se"] - se) < 1e-7, (got["delta_se"], se)
assert se < 0.5 * got["unpaired_se"], (se, got["unpaired_se"])
for key, run in (("loss_a", sys.argv[2]), ("loss_b", sys.argv[3])):
    assert abs(got[key] - final(run)["val_loss"]) < 1e-9, (key, got[key], final(run))
assert got["tokens"] == final(sys.argv[2])["val_tokens"] == n * 64, got["tokens"]
print("paired: delta %+.5f +- %.5f (unpaired %.5f), %d windows" % (d.mean(), se, got["unpaired_se"], n))
PY
  "$mhc" eval --checkpoint base --compare mhc --threads 1 --batches 4 --json part.json >/dev/null 2>&1
  check "--batches 4: 4 micro-batches of 8 windows" python3 -c "
import json; g = json.load(open('part.json')); assert g['tokens'] == 4 * 8 * 64 and not g['whole_set'], g"
  check "report: the paired row matches eval --compare" sh -c "
    '$repo/scripts/report' base mhc --out rep --no-heatmaps >rep.out 2>&1 &&
    python3 - cmp.json rep/table.md <<'PY'
import json, sys
got = json.load(open(sys.argv[1]))
row = [l for l in open(sys.argv[2]) if l.startswith('| mhc |') and 'seed 1337:' in l]
assert row, open(sys.argv[2]).read()
want = 'seed 1337: %+.4f ± %.4f' % (got['delta'], got['delta_se'])
assert want in row[0], (want, row[0])
print('report row ok:', want)
PY"
  # Refused: another seq_len (other windows), other validation data (unless --data).
  train_tiny short --set model.seq_len=32 --set train.steps=2 --set train.eval_every=0 \
    --set train.final_eval_batches=1 --set train.warmup=1 >/dev/null 2>&1
  "$mhc" eval --checkpoint base --compare short >refuse1.out 2>&1
  check "another seq_len is refused in one line (exit $?)" sh -c \
    "test \$(grep -c '' refuse1.out) -eq 1 && grep -q '^error: --compare .*seq_len 32 differ.* 64' refuse1.out"
  mkdir -p other && cp corpus/*_val_*.bin other/
  "$mhc" train -c "$repo/tests/e2e/tiny.yaml" --set "data.train=$work/corpus/*_train_*.bin" \
    --set "data.val=$work/other/*_val_*.bin" --set train.steps=2 --set train.eval_every=0 \
    --set train.final_eval_batches=1 --set train.warmup=1 --run-dir otherval >/dev/null 2>&1
  "$mhc" eval --checkpoint base --compare otherval >refuse2.out 2>&1
  check "other validation data is refused in one line (exit $?)" sh -c \
    "test \$(grep -c '' refuse2.out) -eq 1 && grep -q '^error: --compare .*data.val=.*other.*differs.*--data' refuse2.out"
  check "... and accepted with --data" sh -c "'$mhc' eval --checkpoint base --compare otherval --batches 1 \
    --data '$work/corpus/*_val_*.bin' | grep -q '^delta B - A'"
}

case "$case_name" in
  compare) case_compare ;;
  train_baseline) case_train baseline ;;
  train_hc) case_train hc ;;
  train_mhc) case_train mhc ;;
  resume) case_resume ;;
  errors) case_errors ;;
  variants) case_variants ;;
  *) echo "unknown case $case_name"; exit 2 ;;
esac
finish
