#!/usr/bin/env bash
# Safe runs, one case per ctest entry:
#   safety.sh MHC_BINARY CASE WORK_DIR
# Cases: lock (one writer per run directory; nohup keeps a run going), sigint (Ctrl-C
# checkpoints; the resumed run equals an uninterrupted one bit for bit), ablate_signals
# (SIGINT/SIGTERM/SIGHUP to scripts/ablate),
# integrity (a flipped byte in each checkpoint file is caught; --resume auto falls back),
# refuse (every bad value refused in one line), files (read-only folders, directories given
# as output files, damaged metrics and sweep files), crash (30 runs SIGKILLed at random
# moments while checkpointing; each resumes to the uninterrupted run's weights).
set -uo pipefail
mhc=$1
case_name=$2
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../test_lib.sh
source "$here/../test_lib.sh"
start_test_dir "$3"
tiny=$repo/tests/e2e/tiny.yaml

# train_bg RUN_DIR [args...]: train_tiny in the background, $! being mhc itself (a shell
# function would put a subshell between, and signals would go to it).
train_bg() {
  local run=$1
  shift
  "$mhc" train -c "$tiny" --set "data.train=$work/corpus/*_train_*.bin" \
    --set "data.val=$work/corpus/*_val_*.bin" --run-dir "$run" "$@" &
}

# expect_error DESCRIPTION PATTERN COMMAND...: exit code 1, exactly one stderr line,
# starting with "error:" (or "<script>: error:") and matching PATTERN; never a traceback.
expect_error() {
  local what=$1 pattern=$2
  shift 2
  "$@" >/dev/null 2>err.txt
  local rc=$?
  local lines
  lines=$(grep -c '' err.txt)
  if [ "$rc" -eq 1 ] && [ "$lines" -eq 1 ] && grep -qE '^([a-z]+: )?error: ' err.txt &&
     grep -qE -- "$pattern" err.txt; then
    echo "ok: $what -> $(cat err.txt)"
  else
    echo "FAIL: $what (exit $rc, $lines lines): $(cat err.txt)"
    failures=$((failures + 1))
  fi
}

# Waits (up to 60 s) until RUN_DIR's metrics.jsonl has a train line of step >= N.
wait_for_step() {
  local run=$1 n=$2 i
  for i in $(seq 600); do
    if [ -f "$run/metrics.jsonl" ] && python3 - "$run/metrics.jsonl" "$n" <<'PY' 2>/dev/null; then return 0; fi
import json, sys
steps = [json.loads(l)["step"] for l in open(sys.argv[1]) if '"train"' in l]
sys.exit(0 if steps and steps[-1] >= int(sys.argv[2]) else 1)
PY
    sleep 0.1
  done
  echo "timed out waiting for step $n in $run"
  return 1
}

latest_step() { sed -n 's/^step_0*\([0-9]\)/\1/p' "$1/checkpoints/latest"; }

last_train_step() {
  python3 -c '
import json, sys
print([json.loads(l)["step"] for l in open(sys.argv[1]) if "\"train\"" in l][-1])' "$1/metrics.jsonl"
}

same_final() {  # same_final RUN_A RUN_B STEP: weights and optimizer state bit-identical
  local d
  d=$(printf 'step_%08d' "$3")
  cmp -s "$1/checkpoints/$d/model.safetensors" "$2/checkpoints/$d/model.safetensors" &&
    cmp -s "$1/checkpoints/$d/optim_rank00000.safetensors" "$2/checkpoints/$d/optim_rank00000.safetensors"
}

same_losses() {  # the train/eval rows of two metrics files are identical
  python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" <<'PY'
import json, sys
def rows(path):
    out = []
    for l in open(path):
        r = json.loads(l)
        if r["type"] in ("train", "eval"):
            out.append((r["type"], r["step"], r.get("loss_step"), r.get("val_loss"), r.get("grad_norm")))
    return out
a, b = rows(sys.argv[1]), rows(sys.argv[2])
assert a == b, "metrics differ"
PY
}

flip_byte() {  # flip_byte FILE: flips one bit of the byte in the middle of FILE
  python3 - "$1" <<'PY'
import sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
data[len(data) // 2] ^= 0x01
open(path, "wb").write(bytes(data))
PY
}

# As a user without write access to root's folders (tests usually run as root, whom
# permissions do not stop).
as_user() {
  if [ "$(id -u)" -eq 0 ]; then
    setpriv --reuid=65534 --regid=65534 --clear-groups "$@"
  else
    "$@"
  fi
}

case_lock() {
  make_corpus
  local long=(--set train.steps=2000 --set train.eval_every=0 --set train.log_every=1)
  # Under nohup (SIGHUP ignored, and inherited so) a hangup must not stop the run.
  nohup "$mhc" train -c "$tiny" --set "data.train=$work/corpus/*_train_*.bin" \
    --set "data.val=$work/corpus/*_val_*.bin" --run-dir run "${long[@]}" >/dev/null 2>first.err &
  local first=$!
  wait_for_step run 2
  kill -HUP "$first"
  local at
  at=$(last_train_step run)
  wait_for_step run $((at + 2))
  check "under nohup, SIGHUP leaves the run training" kill -0 "$first"
  check "under nohup, SIGHUP is not taken for a stop" sh -c "! grep -q 'stop requested' first.err"
  check "the lock file names the holder" grep -q "pid $first" run/.lock
  expect_error "a second writer is refused, naming the holder" \
    "run directory 'run' is in use by another mhc train \(host .*, pid $first, started .*\)" \
    train_tiny run "${long[@]}" --resume auto
  expect_error "a second fresh start is refused too" "in use by another mhc train.*pid $first" \
    train_tiny run "${long[@]}" --overwrite
  check "the holder's train.log is untouched by the second writer" sh -c "! grep -q 'in use' run/train.log"
  check "the first run is still training" kill -0 "$first"
  kill -KILL "$first"
  wait "$first" 2>/dev/null
  # The kernel released the lock with the process: no stale lock after a crash.
  check "after SIGKILL the run resumes (no stale lock)" train_tiny run "${long[@]}" --resume auto --stop-at-step 4 \
    2>/dev/null
  check "the lock now names the new holder's pid" sh -c "! grep -q 'pid $first,' run/.lock"
}

case_sigint() {
  make_corpus
  local common=(--set train.steps=80 --set train.eval_every=40 --set train.checkpoint_every=0
                --set train.log_every=1)
  check "uninterrupted run" train_tiny straight "${common[@]}" 2>/dev/null
  train_bg split "${common[@]}" >/dev/null 2>split.err
  local pid=$!
  wait_for_step split 5
  kill -INT "$pid"
  wait "$pid"
  local rc=$?
  check "Ctrl-C: exit code 0 after checkpointing (got $rc)" test "$rc" -eq 0
  check "Ctrl-C: the stop is announced in train.log" grep -q "stop requested.*checkpointing at step" split/train.log
  local saved last
  saved=$(latest_step split)
  last=$(last_train_step split)
  echo "stopped at step $saved (last logged step $last)"
  check "Ctrl-C: the checkpoint is at the current step" test "$saved" = "$last"
  check "Ctrl-C: stopped before the end" test "$saved" -lt 80
  check "--resume auto finishes the run" train_tiny split "${common[@]}" --resume auto 2>/dev/null
  check "final weights and optimizer state equal the uninterrupted run's" same_final straight split 80
  check "losses equal the uninterrupted run's" same_losses straight split
  # A second Ctrl-C aborts at once (no checkpoint), and leaves no stale lock behind. Steps
  # of 16 micro-batches, so that the second signal lands inside the step the first let finish.
  local slow=("${common[@]}" --set train.grad_accum=16)
  train_bg twice "${slow[@]}" >/dev/null 2>twice.err
  pid=$!
  wait_for_step twice 2
  kill -INT "$pid"
  local i
  for i in $(seq 100); do grep -q "stop requested: finishing this step" twice.err && break; sleep 0.02; done
  kill -INT "$pid"
  wait "$pid"
  rc=$?
  check "a second Ctrl-C aborts at once (exit $rc = 128 + SIGINT)" test "$rc" -eq 130
  check "the abort wrote no checkpoint" test ! -e twice/checkpoints/latest
  check "after the abort the run can continue" train_tiny twice "${slow[@]}" --resume auto --stop-at-step 3 \
    2>/dev/null
}

case_ablate_signals() {
  make_corpus
  cat >sweep.yaml <<EOF
name: sig
base: $tiny
set:
  train.steps: 150
  train.eval_every: 0
  train.checkpoint_every: 0
  train.log_every: 1
axes:
  run.seed: [1]
EOF
  local ablate=("$repo/scripts/ablate" sweep.yaml --mhc "$mhc" --runs-dir runs --no-report
                --set "data.train=$work/corpus/*_train_*.bin" --set "data.val=$work/corpus/*_val_*.bin")
  local run=runs/sig/seed-1 sig
  # A signal while Popen() is under way (before ablate knows its child) must still reach
  # the child, not orphan it.
  check "a signal during the child's start reaches the child" python3 - "$repo/scripts/ablate" <<'PY'
import importlib.machinery, importlib.util, os, signal, subprocess, sys
loader = importlib.machinery.SourceFileLoader("ablate", sys.argv[1])
ablate = importlib.util.module_from_spec(importlib.util.spec_from_loader("ablate", loader))
loader.exec_module(ablate)
started, real_popen = [], subprocess.Popen
def popen_then_signal(*args, **kwargs):
    started.append(real_popen(*args, **kwargs))
    os.kill(os.getpid(), signal.SIGINT)
    return started[-1]
subprocess.Popen = popen_then_signal
try:
    signals = ablate.Signals()
    rc = ablate.wait_child(signals.start(["sleep", "30"]))
    assert rc == -signal.SIGINT and signals.exit_code() == 130, rc
finally:
    for p in started:
        p.kill()
PY
  # HUP: the terminal closed; ablate must pass it on (its run is in a session of its own).
  for sig in INT TERM HUP; do
    rm -rf runs
    "${ablate[@]}" >ablate.out 2>ablate.err &
    local pid=$!
    wait_for_step "$run" 5
    local child
    child=$(sed -n 's/.*pid \([0-9]*\),.*/\1/p' "$run/.lock")
    kill -"$sig" "$pid"
    wait "$pid"
    local rc=$?
    local want=$((128 + $(kill -l "$sig")))
    check "SIG$sig to ablate: exit $rc = $want" test "$rc" -eq "$want"
    check "SIG$sig to ablate: no traceback" sh -c "! grep -q Traceback ablate.err"
    check "SIG$sig to ablate: says where the run stopped" grep -q "stopped by SIG$sig.*checkpoint at step" ablate.err
    check "SIG$sig to ablate: its mhc train (pid $child) is gone" sh -c "! kill -0 $child 2>/dev/null"
    check "SIG$sig to ablate: the run has a checkpoint" test -f "$run/checkpoints/latest"
    check "SIG$sig to ablate: the run stopped before its end" test ! -e "$run/checkpoints/step_00000150"
    check "SIG$sig: ablate again finishes the run" "${ablate[@]}" >/dev/null 2>&1
    check "SIG$sig: the final checkpoint exists" test -f "$run/checkpoints/step_00000150/model.safetensors"
  done
}

case_integrity() {
  make_corpus
  local common=(--set train.steps=16 --set train.checkpoint_every=4 --set train.keep_last=0
                --set train.eval_every=0 --set train.log_every=1)
  check "uninterrupted run" train_tiny straight "${common[@]}" 2>/dev/null
  check "a run stopped at step 12" train_tiny base "${common[@]}" --stop-at-step 12 2>/dev/null
  check "state.json records sizes and checksums" python3 - base/checkpoints/step_00000012/state.json <<'PY'
import json, os, sys
st = json.load(open(sys.argv[1]))
d = os.path.dirname(sys.argv[1])
for f in ("model.safetensors", "optim_rank00000.safetensors", "config.yaml"):
    assert st["files"][f]["bytes"] == os.path.getsize(os.path.join(d, f)), f
    assert len(st["files"][f]["xxh3"]) == 16, f
assert len(st["state_xxh3"]) == 16
PY
  local f
  for f in model.safetensors optim_rank00000.safetensors config.yaml state.json; do
    rm -rf "flip_$f"
    cp -r base "flip_$f"
    flip_byte "flip_$f/checkpoints/step_00000012/$f"
    expect_error "eval refuses a flipped byte in $f" "step_00000012.*$f|$f.*(damaged|checksum)" \
      "$mhc" eval --checkpoint "flip_$f" --batches 1
    train_tiny "flip_$f" "${common[@]}" --resume auto >/dev/null 2>"flip_$f.err"
    check "--resume auto past a flipped $f succeeds" test $? -eq 0
    check "--resume auto warns, naming the damaged checkpoint and file" \
      grep -qE "skipping .*step_00000012.*$f" "flip_$f.err"
    check "--resume auto falls back to step 8" grep -q "resuming from .*step_00000008 instead" "flip_$f.err"
    check "after the fallback the weights equal the uninterrupted run's" same_final straight "flip_$f" 16
  done
  cp -r base damaged
  flip_byte damaged/checkpoints/step_00000012/model.safetensors
  expect_error "sample refuses a damaged checkpoint" "model.safetensors has checksum" \
    "$mhc" sample --checkpoint damaged --max-new-tokens 5
  expect_error "export refuses a damaged checkpoint" "model.safetensors has checksum" \
    "$mhc" export --checkpoint damaged --output damaged.safetensors
  check "export wrote nothing" test ! -e damaged.safetensors
  truncate -s -10 damaged/checkpoints/step_00000008/optim_rank00000.safetensors
  flip_byte damaged/checkpoints/step_00000004/state.json
  expect_error "no intact checkpoint at all is an error, not a fresh start" "no intact checkpoint.*3 damaged" \
    train_tiny damaged "${common[@]}" --resume auto
}

case_refuse() {
  make_corpus
  local data=(--set "data.train=$work/corpus/*_train_*.bin" --set "data.val=$work/corpus/*_val_*.bin")
  mkdir -p cfgdir
  expect_error "-c a directory" "config file 'cfgdir' is a directory" "$mhc" train -c cfgdir --dry-run
  expect_error "train.min_lr above train.lr" "train.min_lr=0.01 is above train.lr=0.001" \
    "$mhc" train --set train.lr=0.001 --set train.min_lr=0.01 --dry-run
  expect_error "warmup above steps" "train.warmup=50 is more than train.steps=20" \
    "$mhc" train --set train.steps=20 --set train.warmup=50 --dry-run
  expect_error "steps: 0" "train.steps must be >= 1, got 0" "$mhc" train --set train.steps=0 --set train.warmup=0 --dry-run
  printf 'train:\n  lr: 1.0e-3\n  steps: 10\n  lr: 2.0e-3\n' >dup.yaml
  expect_error "a duplicated YAML key" "dup.yaml: key 'train.lr' appears twice \(line 4\)" "$mhc" train -c dup.yaml --dry-run
  expect_error "--stop-at-step -3" "--stop-at-step -3: must be >= 1" train_tiny r "${data[@]}" --stop-at-step -3
  expect_error "bench --steps 0" "--steps 0: must be >= 1" "$mhc" bench -c "$tiny" --steps 0
  check "a checkpoint to sample from" train_tiny good "${data[@]}" --set train.steps=4 --set train.warmup=2 \
    --set train.eval_every=0 2>/dev/null
  expect_error "sample --temperature -1" "--temperature -1: must be a finite number >= 0" \
    "$mhc" sample --checkpoint good --temperature -1
  expect_error "sample --top-k -3" "--top-k -3: must be >= 0" "$mhc" sample --checkpoint good --top-k -3
  expect_error "sample --max-new-tokens -5" "--max-new-tokens -5: must be >= 0" \
    "$mhc" sample --checkpoint good --max-new-tokens -5
  expect_error "eval --device tpu" "--device 'tpu' is not one of auto, cpu, cuda" \
    "$mhc" eval --checkpoint good --device tpu
  # Resuming: a changed learning rate is refused, more steps are accepted and announced.
  expect_error "resume with a changed train.lr" "changed train.lr: 0.003 vs 0.001" \
    train_tiny good "${data[@]}" --set train.steps=4 --set train.warmup=2 --set train.eval_every=0 \
    --set train.lr=1e-3 --resume auto
  check "error lines go to train.log too" grep -q "changed train.lr" good/train.log
  check "resume with more train.steps" train_tiny good "${data[@]}" --set train.steps=6 --set train.warmup=2 \
    --set train.eval_every=0 --resume auto 2>ext.err
  check "the extension is announced in the log" grep -q "config changed since the checkpoint: train.steps: 4 vs 6" ext.err
  check "and recorded in metrics.jsonl" python3 - good/metrics.jsonl <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
r = [x for x in rows if x["type"] == "resume"]
assert r and r[0]["step"] == 4 and r[0]["config_changes"] == ["train.steps: 4 vs 6"], r
PY
  expect_error "resume with fewer train.steps than done" \
    "cannot resume with train.steps=3: checkpoint '.*step_00000006' is already at step 6 \(allowed: train.steps >= 6" \
    train_tiny good "${data[@]}" --set train.steps=3 --set train.warmup=2 --set train.eval_every=0 --resume auto
  # prepare: empty files, a binary, a single short document.
  mkdir -p empty && : >empty/a && : >empty/b && : >empty/c
  expect_error "prepare on empty files" "3 input documents give .* train and .* val tokens; each split needs at least 65" \
    "$mhc" prepare --input empty --output out_empty
  expect_error "prepare on the mhc binary" "input '.*mhc' is not text \(a NUL byte at offset" \
    "$mhc" prepare --input "$mhc" --output out_bin
  printf 'one short document\n' >one.txt
  expect_error "prepare on one short document" "1 input documents give .*each split needs at least 65" \
    "$mhc" prepare --input one.txt --output out_one
  check "prepare records the tokenizer in the shard header" python3 - "$work"/corpus/corpus_train_000000.bin <<'PY'
import struct, sys
h = struct.unpack("<256i", open(sys.argv[1], "rb").read(1024))
assert h[0] == 20240520 and h[1] == 1 and h[3] == 0x546b686d and h[4] == 1 and h[5] == 256, h[:6]
PY
  # GPT-2 shards read with the byte tokenizer: recorded in the header, or given away by
  # their tokens (shards from llm.c record nothing).
  python3 - <<'PY'
import struct
def shard(path, tokens, tok_id):
    header = [20240520, 1, len(tokens)] + ([0x546b686d, tok_id, 50257] if tok_id else [0, 0, 0])
    open(path, "wb").write(struct.pack("<256i", *(header + [0] * 250)) + struct.pack("<%dH" % len(tokens), *tokens))
toks = [(i * 7919) % 50257 for i in range(5000)]
shard("g2_train_000000.bin", [t % 256 for t in toks], 2)
shard("g2_val_000000.bin", [t % 256 for t in toks], 2)
shard("llmc_train_000000.bin", toks, 0)
shard("llmc_val_000000.bin", toks, 0)
PY
  expect_error "GPT-2 shards (recorded) with data.tokenizer: byte" \
    "g2_train_000000.bin' was prepared with the gpt2 tokenizer, but data.tokenizer is 'byte'" \
    train_tiny g2 --set "data.train=$work/g2_train_*.bin" --set "data.val=$work/g2_val_*.bin"
  expect_error "GPT-2 shards (llm.c) with data.tokenizer: byte" \
    "llmc_train_000000.bin' holds token .*beyond the byte tokenizer's 256 tokens" \
    train_tiny llmc --set "data.train=$work/llmc_train_*.bin" --set "data.val=$work/llmc_val_*.bin" \
    --set model.vocab_size=50304
  expect_error "eval --data of another tokenizer" "g2_val_000000.bin' was prepared with the gpt2 tokenizer" \
    "$mhc" eval --checkpoint good --data "$work/g2_val_*.bin"
}

case_files() {
  make_corpus
  # matplotlib wants a writable cache folder, also as the unprivileged user.
  mkdir -p mpl && chmod 777 mpl
  export MPLCONFIGDIR=$work/mpl
  local data=(--set "data.train=$work/corpus/*_train_*.bin" --set "data.val=$work/corpus/*_val_*.bin")
  : >afile
  expect_error "a run directory under a file" "cannot create run directory 'afile/run': Not a directory" \
    train_tiny afile/run "${data[@]}"
  mkdir -p ro && chmod 555 ro
  expect_error "a read-only parent folder" "cannot create run directory 'ro/run': Permission denied" \
    as_user "$mhc" train -c "$tiny" "${data[@]}" --run-dir ro/run
  mkdir -p ro2 && chmod 555 ro2
  expect_error "a read-only run folder" "cannot create lock file 'ro2/.lock': Permission denied" \
    as_user "$mhc" train -c "$tiny" "${data[@]}" --run-dir ro2
  check "the read-only folder got no train.log" test ! -e ro2/train.log
  expect_error "a failed start (no data)" "no data shards match" \
    train_tiny fresh --set "data.train=$work/none/*.bin"
  # Issue 14: missing data (e.g. relative globs from another directory) fail before anything is created.
  check "a failed start for missing data creates no run directory" test ! -e fresh
  check "a checkpoint" train_tiny good "${data[@]}" --set train.steps=4 --set train.warmup=2 --set train.eval_every=0 \
    2>/dev/null
  mkdir -p outdir
  expect_error "export --output a directory" "cannot write 'outdir': it is a directory" \
    "$mhc" export --checkpoint good --output outdir
  expect_error "inspect --json a directory" "cannot write 'outdir': it is a directory" \
    "$mhc" inspect --checkpoint good --json outdir
  check "no .tmp left behind" sh -c "! ls -a | grep -q '\.tmp'"
  expect_error "export into a read-only folder" "ro/x.safetensors.tmp.*Permission denied" \
    as_user "$mhc" export --checkpoint good --output ro/x.safetensors
  # Scripts: damaged metrics, binary sweep files, read-only output folders.
  cp -r good cut
  head -c -7 good/metrics.jsonl >cut/metrics.jsonl
  expect_error "report on a cut-off metrics line" "cut/metrics.jsonl:[0-9]+: not a metrics record" \
    "$repo/scripts/report" cut --out rep --no-heatmaps
  cp -r good garbage
  printf '\x00\x01garbage\n' >>garbage/metrics.jsonl
  expect_error "report on a garbage metrics line" "garbage/metrics.jsonl:[0-9]+: not a metrics record" \
    "$repo/scripts/report" garbage --out rep --no-heatmaps
  expect_error "report into a read-only folder" "ro/rep.*Permission denied" \
    as_user "$repo/scripts/report" good --out ro/rep --no-heatmaps
  expect_error "ablate on a binary sweep file" "is not a text file" "$repo/scripts/ablate" "$mhc" --mhc "$mhc"
  expect_error "ablate --stop-at-step -3" "stop-at-step.*'-3' is not a step" \
    "$repo/scripts/ablate" "$repo/configs/ablations/default_modes_short.yaml" --mhc "$mhc" --stop-at-step -3
  cat >ro_sweep.yaml <<EOF
name: ro
base: $tiny
axes:
  run.seed: [1]
EOF
  expect_error "ablate into a read-only runs folder" "ro.*Permission denied" \
    as_user "$repo/scripts/ablate" ro_sweep.yaml --mhc "$mhc" --runs-dir ro --no-report "${data[@]}"
}

case_crash() {
  make_corpus
  local common=(--set train.steps=16 --set train.checkpoint_every=2 --set train.keep_last=2
                --set train.eval_every=8 --set train.log_every=1)
  local t0 t1
  t0=$(date +%s%N)
  check "uninterrupted run" train_tiny straight "${common[@]}" 2>/dev/null
  t1=$(date +%s%N)
  local ms=$(((t1 - t0) / 1000000))
  echo "an uninterrupted run takes $ms ms"
  # A random moment in the run for each kill; the first three within startup. Drawn up
  # front: a python3 start between launch and kill would push every kill ~0.1-0.5 s later.
  local delays
  read -r -a delays < <(python3 - "$ms" <<'PY'
import random, sys
seed = random.randrange(1 << 30)
print("kill delays drawn with seed %d" % seed, file=sys.stderr)
rng = random.Random(seed)
print(" ".join("%.3f" % rng.uniform(0.0, (150 if i < 3 else float(sys.argv[1])) / 1000.0) for i in range(30)))
PY
)
  local i ok=0 with_ckpt=0
  for i in $(seq 30); do
    rm -rf crash
    train_bg crash "${common[@]}" >/dev/null 2>&1
    local pid=$!
    sleep "${delays[$((i - 1))]}"
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    [ -f crash/checkpoints/latest ] && with_ckpt=$((with_ckpt + 1))
    if train_tiny crash "${common[@]}" --resume auto >/dev/null 2>"crash_$i.err" && same_final straight crash 16 &&
       same_losses straight crash; then
      ok=$((ok + 1))
    else
      echo "run $i: resume failed or differs: $(tail -2 "crash_$i.err")"
    fi
  done
  echo "$ok of 30 killed runs resumed to the uninterrupted weights ($with_ckpt had a checkpoint when killed)"
  check "every killed run resumes to the uninterrupted run's weights" test "$ok" -eq 30
  check "some kills landed after the first checkpoint" test "$with_ckpt" -ge 5
  check "some kills landed before the first checkpoint" test "$with_ckpt" -le 28
}

case "$case_name" in
  lock) case_lock ;;
  sigint) case_sigint ;;
  ablate_signals) case_ablate_signals ;;
  integrity) case_integrity ;;
  refuse) case_refuse ;;
  files) case_files ;;
  crash) case_crash ;;
  *) echo "unknown case $case_name"; exit 2 ;;
esac
finish
