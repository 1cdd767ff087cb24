#!/usr/bin/env bash
# Cluster jobs against a real Slurm (a private one-node cluster per case, tests/slurm/
# cluster.sh), one case per ctest entry:
#   slurm_test.sh MHC_BINARY CASE WORK_DIR
# Cases:
#   submit       sbatch scripts/slurm/train.sbatch with 2 CPU tasks: the job completes,
#                rank 0 alone writes the run, and the loss curve equals a 1-process run with
#                the same global batch (<= 1e-5 relative per step)
#   time_limit   --time=1 --signal=B:USR1@25 --requeue: the job checkpoints on the signal,
#                requeues itself and resumes; final weights equal an uninterrupted job's
#   requeue      `scontrol requeue` mid-run (SIGTERM to the tasks): the same
#   rank_killed  SIGKILL to rank 1: the job fails within dist.timeout_s, the last complete
#                checkpoint stays intact, and resubmitting the same job resumes from it to
#                the uninterrupted job's final weights
#   sweep        scripts/ablate --slurm on a 2-run sweep: one job per run, both complete,
#                scripts/report writes the figure and table; a second --slurm submits nothing
#   leftovers    (run last) no process of any case's cluster is left
# Cases exit 77 (ctest: skipped), with the reason, where Slurm cannot run.
set -uo pipefail
mhc=$1
case_name=$2
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../test_lib.sh
source "$here/../test_lib.sh"
# shellcheck source=cluster.sh
source "$here/cluster.sh"

if [ "$case_name" = leftovers ]; then
  # Every case's folder is a sibling under the same parent; its processes carry the marker.
  root=$(cd "$(dirname "$3")" && pwd)
  left=$(harness_processes "$root")
  if [ -n "$left" ]; then
    echo "FAIL: processes of the Slurm test clusters under $root remain:"
    for p in $left; do echo "  $p $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"; done
    for p in $left; do kill -KILL "$p" 2>/dev/null; done  # so that they do not outlive CI
    for link in "$root"/*/cluster/sockets; do [ -L "$link" ] && rm -rf "$(readlink "$link")" "$link"; done
    exit 1
  fi
  echo "ok: no slurmctld, slurmd, munged, slurmstepd or mhc process of the harness is left"
  exit 0
fi

cluster_preflight
start_test_dir "$3"
cluster_start "$work/cluster"
sbatch_script="$repo/scripts/slurm/train.sbatch"
export MHC_BIN=$mhc

# The tiny e2e model over TCP between the ranks (no mpirun under srun), one thread per
# rank, a global batch of 8 (2 ranks x 1 micro-step of 4, or 1 process x 2).
make_corpus
common=(-c "$repo/tests/e2e/tiny.yaml" --set "data.train=$work/corpus/*_train_*.bin"
        --set "data.val=$work/corpus/*_val_*.bin" --set train.threads=1 --set train.batch_size=8
        --set train.micro_batch=4 --set train.lr=2e-3 --set dist.timeout_s=20)
# Two CPU tasks on the one node, whatever train.sbatch asks of a GPU cluster.
cpu_job=(--nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=0)

# submit NAME SBATCH_ARGS... -- TRAIN_ARGS...: prints the job id.
submit() {
  local name=$1
  shift
  local sargs=()
  while [ "$1" != -- ]; do sargs+=("$1"); shift; done
  shift
  sbatch --parsable --job-name="$name" --output="$work/$name.out" "${cpu_job[@]}" "${sargs[@]}" \
    "$sbatch_script" "${common[@]}" "$@" --run-dir "$work/$name"
}

job_field() { scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }

# wait_job ID SECONDS: waits until the job has ended for good. A job that Slurm holds after
# a requeue (its begin time ~2 min ahead) is started early, but only once its previous run
# is gone from the node and 2 s have passed: slurmd rejects a launch whose credential is
# from the same second as the revocation of the old one ("Job credential revoked").
# Prints the final state.
wait_job() {
  local id=$1 limit=$2 t0=$SECONDS state pending_since=""
  while [ $((SECONDS - t0)) -lt "$limit" ]; do
    state=$(job_field "$id" JobState)
    case "$state" in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE)
        echo "$state"; return ;;
      PENDING)
        if [ "$(job_field "$id" Restarts)" != 0 ]; then
          pending_since=${pending_since:-$SECONDS}
          if [ $((SECONDS - pending_since)) -ge 2 ] && [ "$(sinfo -h -n "$cluster_node" -o %t)" = idle ]; then
            scontrol update JobId="$id" StartTime=now 2>/dev/null
          fi
        fi ;;
      *) pending_since="" ;;
    esac
    sleep 0.5
  done
  echo "STILL-${state:-UNKNOWN}-AFTER-${limit}s"
}

# wait_step RUN STEP SECONDS: until RUN's metrics.jsonl has a train line at or past STEP.
wait_step() {
  local t0=$SECONDS
  until python3 - "$1/metrics.jsonl" "$2" 2>/dev/null <<'PY'
import json, sys
steps = [r["step"] for r in map(json.loads, open(sys.argv[1])) if r["type"] == "train"]
sys.exit(0 if steps and max(steps) >= int(sys.argv[2]) else 1)
PY
  do
    [ $((SECONDS - t0)) -ge "$3" ] && return 1
    sleep 0.2
  done
}

# compare_losses REF OTHER TOL: every train step of OTHER has REF's per-step loss (loss_step;
# `loss` is the mean over the console's logging window, which restarts on a resume) within TOL.
compare_losses() {
  python3 - "$@" <<'PY'
import json, sys
def losses(path):
    return {r["step"]: r["loss_step"] for r in map(json.loads, open(path)) if r["type"] == "train"}
a, b, tol = losses(sys.argv[1]), losses(sys.argv[2]), float(sys.argv[3])
steps = sorted(b)
assert a and b and set(b) == set(a), (sorted(a), steps)
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in steps)
print(f"steps {steps[0]}..{steps[-1]}, worst relative loss difference {worst:.3g} (tolerance {tol:g})")
sys.exit(0 if worst <= tol else 1)
PY
}

final_ckpt() { echo "$1/checkpoints/step_$(printf %08d "$2")"; }

# same_final REF RUN STEPS: bit-identical final weights and optimizer state, and loss curve.
same_final() {
  local ref=$1 run=$2 steps=$3
  check "final weights equal the uninterrupted job's" \
    cmp "$(final_ckpt "$ref" "$steps")/model.safetensors" "$(final_ckpt "$run" "$steps")/model.safetensors"
  check "final optimizer state equals the uninterrupted job's" \
    cmp "$(final_ckpt "$ref" "$steps")/optim_rank00000.safetensors" "$(final_ckpt "$run" "$steps")/optim_rank00000.safetensors"
  check "loss curves are identical" compare_losses "$ref/metrics.jsonl" "$run/metrics.jsonl" 0
}

show_job_output() { echo "--- $1.out:"; cat "$work/$1.out" 2>/dev/null; echo "---"; }

case_submit() {
  local steps=(--set train.steps=30 --set train.eval_every=15 --set train.log_every=1
               --set train.checkpoint_every=0)
  check "single process" "$mhc" train "${common[@]}" "${steps[@]}" --run-dir "$work/single" 2>/dev/null
  local id
  id=$(submit dp -- "${steps[@]}")
  echo "submitted job $id"
  local state
  state=$(wait_job "$id" 180)
  show_job_output dp
  check "the job completed (state $state, exit $(job_field "$id" ExitCode))" test "$state" = COMPLETED
  check "two ranks over TCP, one node" grep -q "2 ranks, rank 0 at $cluster_node:" "$work/dp.out"
  check "the trainer ran data-parallel on 2 ranks" grep -q "data parallel: 2 ranks over tcp" dp/train.log
  check "only rank 0 logged to the run directory" test "$(grep -c '\] step 30/30 |' dp/train.log)" -eq 1
  check "one metrics line per step" test "$(grep -c '"type":"train"' dp/metrics.jsonl)" -eq 30
  check "loss curve matches 1 process (<= 1e-5 relative per step)" \
    compare_losses single/metrics.jsonl dp/metrics.jsonl 1e-5
}

# The preemption cases' job: long enough (tens of seconds) that a time-limit signal lands
# mid-run; checkpoints only on a stop, so that a resume proves the stop checkpoint.
preempt_steps() {
  echo --set train.steps="$1" --set train.eval_every=0 --set train.log_every=5 \
    --set train.checkpoint_every=0 --set train.keep_last=0
}

# job_tasks ID: pids of the mhc tasks of job ID in this case's cluster.
job_tasks() {
  local p
  for p in $(harness_processes "$work"); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = mhc ] || continue
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "SLURM_JOB_ID=$1" && echo "$p"
  done
}

# hold_until_signal ID: stops job ID's tasks (SIGSTOP) once they train, until the job's
# script has logged Slurm's USR1, then lets them go on (SIGCONT; the forwarded USR1 waits,
# pending, until then). However fast or slow the machine, the signal lands mid-run.
hold_until_signal() {
  local id=$1 t0=$SECONDS tasks
  wait_step split 10 120 || { echo "the time-limited job never reached step 10"; return 1; }
  tasks=$(job_tasks "$id")
  [ -n "$tasks" ] || { echo "no task of job $id to hold"; return 1; }
  # shellcheck disable=SC2086  # one pid per word
  kill -STOP $tasks
  until grep -q 'train.sbatch: SIGUSR1' "$work/split.out" 2>/dev/null; do
    [ $((SECONDS - t0)) -ge 90 ] && break
    sleep 0.5
  done
  # shellcheck disable=SC2086
  kill -CONT $tasks
  echo "held job $id's tasks ($(echo $tasks)) for $((SECONDS - t0)) s, until Slurm's USR1"
  grep -q 'train.sbatch: SIGUSR1' "$work/split.out"
}

case_time_limit() {
  local n=600
  read -ra steps < <(preempt_steps $n)
  local ref id
  ref=$(submit straight -- "${steps[@]}")
  # Slurm checks time limits on a 30 s period and sends the signal up to one period early,
  # so USR1@25 on a 1-minute limit arrives 5-35 s into each run. The first run is held
  # (hold_until_signal) until the signal is there, so that it lands mid-run on any machine;
  # a requeued run that ends before its own signal simply completes.
  id=$(submit split --time=1 --signal=B:USR1@25 --requeue -- "${steps[@]}")
  echo "submitted jobs $ref (uninterrupted) and $id (1-minute limit)"
  local state
  state=$(wait_job "$ref" 300)
  check "the uninterrupted job completed (state $state)" test "$state" = COMPLETED
  check "Slurm's USR1 reached the time-limited job mid-run" hold_until_signal "$id"
  state=$(wait_job "$id" 600)
  show_job_output split
  check "the time-limited job completed (state $state)" test "$state" = COMPLETED
  local restarts
  restarts=$(job_field "$id" Restarts)
  check "it was requeued by its script ($restarts restarts)" \
    sh -c "test '$restarts' -ge 1 && grep -q 'requeueing job $id' '$work/split.out'"
  check "every rank checkpointed on the signal" grep -q "stop requested.*: checkpointing at step" split/train.log
  check "the requeued job resumed from that checkpoint" grep -q "resumed from .* at step" split/train.log
  check "no run hit the time limit" sh -c "! grep -q 'DUE TO TIME LIMIT' '$work/split.out'"
  same_final straight split $n
}

case_requeue() {
  local n=300
  read -ra steps < <(preempt_steps $n)
  local ref id
  ref=$(submit straight -- "${steps[@]}")
  id=$(submit split --requeue -- "${steps[@]}")
  echo "submitted jobs $ref (uninterrupted) and $id (requeued mid-run)"
  local state
  state=$(wait_job "$ref" 300)
  check "the uninterrupted job completed (state $state)" test "$state" = COMPLETED
  check "the second job reached step 50" wait_step split 50 120
  check "scontrol requeue $id" scontrol requeue "$id"
  state=$(wait_job "$id" 300)
  show_job_output split
  check "the requeued job completed (state $state)" test "$state" = COMPLETED
  check "it was requeued ($(job_field "$id" Restarts) restarts)" test "$(job_field "$id" Restarts)" -ge 1
  local at
  at=$(sed -n 's/.*stop requested.*: checkpointing at step \([0-9]*\).*/\1/p' split/train.log | head -n 1)
  check "every rank checkpointed on SIGTERM, mid-run (step ${at:-none})" test "${at:-0}" -ge 50 -a "${at:-0}" -lt $n
  check "the requeued job resumed from it" grep -q "resumed from .* at step ${at:-none}" split/train.log
  check "no task was ended by a signal (a second stop signal aborts mhc)" \
    sh -c "! grep -qE 'srun: error: .*(signal|Terminated|Killed)' '$work/split.out'"
  check "the script saw SIGTERM and left the requeue to Slurm" \
    sh -c "grep -q 'train.sbatch: SIGTERM' '$work/split.out' && ! grep -q 'requeue failed' '$work/split.out'"
  same_final straight split $n
}

# rank_pid RANK: the pid of the mhc task of that rank in this case's cluster.
rank_pid() {
  local p
  for p in $(harness_processes "$work"); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = mhc ] || continue
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "SLURM_PROCID=$1" && { echo "$p"; return; }
  done
}

case_rank_killed() {
  local n=300
  read -ra steps < <(preempt_steps $n)
  steps+=(--set train.checkpoint_every=20)
  local ref id
  ref=$(submit straight -- "${steps[@]}")
  local state
  state=$(wait_job "$ref" 300)
  check "the uninterrupted job completed (state $state)" test "$state" = COMPLETED
  id=$(submit split -- "${steps[@]}")
  echo "submitted jobs $ref (uninterrupted) and $id (rank 1 killed)"
  check "the job reached step 50" wait_step split 50 120
  local victim
  victim=$(rank_pid 1)
  check "found rank 1's process (${victim:-none})" test -n "$victim"
  kill -KILL "$victim" 2>/dev/null
  local t0=$SECONDS
  state=$(wait_job "$id" 60)
  local took=$((SECONDS - t0))
  show_job_output split
  check "the job failed (state $state) within dist.timeout_s = 20 s (took $took s)" \
    test "$state" = FAILED -a "$took" -le 20
  check "rank 0 named the lost rank" grep -q "^error: rank 0: lost the connection to rank 1" split.out
  local latest
  latest=$(cat split/checkpoints/latest 2>/dev/null)
  check "the latest checkpoint ($latest) is complete" \
    test -n "$latest" -a -s "split/checkpoints/$latest/model.safetensors" -a -s "split/checkpoints/$latest/state.json"
  check "and loads (mhc eval)" "$mhc" eval --checkpoint "split/checkpoints/$latest" --batches 1
  local again
  again=$(submit split -- "${steps[@]}")
  echo "resubmitted as job $again"
  state=$(wait_job "$again" 300)
  show_job_output split
  check "the resubmitted job completed (state $state)" test "$state" = COMPLETED
  check "it resumed from $latest" grep -q "resumed from .*$latest at step" split/train.log
  same_final straight split $n
}

case_sweep() {
  cat >sweep.yaml <<EOF
name: two
base: $repo/tests/e2e/tiny.yaml
set:
  data.train: "$work/corpus/*_train_*.bin"
  data.val: "$work/corpus/*_val_*.bin"
  train.steps: 20
  train.eval_every: 10
  train.eval_batches: 2
  train.log_every: 5
axes:
  residual.mode: [hc, mhc]
EOF
  local ablate=("$repo/scripts/ablate" sweep.yaml --mhc "$mhc" --runs-dir "$work/runs" --slurm
                --sbatch-arg=--ntasks=1 --sbatch-arg=--cpus-per-task=1)
  "${ablate[@]}" >ablate1.out 2>&1
  local rc=$?
  cat ablate1.out
  check "ablate --slurm submitted (exit $rc)" test $rc -eq 0
  local ids
  ids=$(sed -n 's/.*Submitted batch job \([0-9]*\).*/\1/p' ablate1.out)
  check "one job per run" test "$(echo "$ids" | grep -c .)" -eq 2
  local id state
  for id in $ids; do
    state=$(wait_job "$id" 240)
    check "job $id ($(job_field "$id" JobName)) completed (state $state)" test "$state" = COMPLETED
  done
  cat runs/two/*/slurm-*.out
  check "scripts/report on the sweep" "$repo/scripts/report" runs/two --mhc "$mhc"
  check "report wrote the figure" test -s runs/two/report/ablation.png
  check "report wrote the table with both modes" \
    sh -c "grep -q '^| hc ' runs/two/report/table.md && grep -q '^| mhc ' runs/two/report/table.md"
  local before
  before=$(squeue -h -t all -o %i | sort)
  "${ablate[@]}" >ablate2.out 2>&1
  rc=$?
  cat ablate2.out
  check "a second ablate --slurm (exit $rc) skips both complete runs" \
    test $rc -eq 0 -a "$(grep -c 'complete, not submitted' ablate2.out)" -eq 2
  check "and submits no job" test "$(squeue -h -t all -o %i | sort)" = "$before"
}

"case_$case_name"
finish
