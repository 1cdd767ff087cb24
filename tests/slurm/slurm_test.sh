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
#   leftovers    (run last) no process of any case's cluster is left, nor any namespace,
#                link or mount of a multi-node one (multinode_test.sh)
# Cases exit 77 (ctest: skipped), with the reason, where Slurm cannot run.
set -uo pipefail
mhc=$1
case_name=$2
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../test_lib.sh
source "$here/../test_lib.sh"
# shellcheck source=cluster.sh
source "$here/cluster.sh"
# shellcheck source=job_lib.sh
source "$here/job_lib.sh"

if [ "$case_name" = leftovers ]; then
  # Every case's folder is a sibling under the same parent; its processes carry the marker.
  # Namespaces, links and their mounts carry the mhct-/mhcb/mhcv prefixes (netns_nodes.sh).
  root=$(cd "$(dirname "$3")" && pwd)
  # shellcheck source=netns_nodes.sh
  source "$here/netns_nodes.sh"
  sleep 2  # a killed case's reaper (cluster_reap.sh) polls once a second
  left=$(harness_processes "$root")
  devices=$(netns_leftovers)
  rc=0
  if [ -n "$left" ]; then
    echo "FAIL: processes of the Slurm test clusters under $root remain:"
    for p in $left; do echo "  $p $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"; done
    for p in $left; do kill -KILL "$p" 2>/dev/null; done  # so that they do not outlive CI
    for link in "$root"/*/cluster/sockets; do [ -L "$link" ] && rm -rf "$(readlink "$link")" "$link"; done
    rc=1
  fi
  if [ -n "$devices" ]; then
    echo "FAIL: namespaces, links or mounts of the Slurm test clusters remain:"
    echo "$devices" | sed 's/^/  /'
    echo "$devices" | while read -r kind name; do  # so that they do not outlive CI
      case $kind in
        netns) ip netns del "$name" ;;
        link) ip link del "$name" ;;
        mount) umount "$name" && rm -f "$name" ;;
      esac 2>/dev/null
    done
    rc=1
  fi
  [ $rc -eq 0 ] && echo "ok: no slurmctld, slurmd, munged, slurmstepd or mhc process, and no" \
    "namespace, link or mount of the harness is left"
  exit $rc
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
