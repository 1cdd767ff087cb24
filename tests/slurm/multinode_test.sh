#!/usr/bin/env bash
# Multi-node cluster jobs against a real Slurm: three nodes (node1..node3, each slurmd in
# its own network, UTS and mount namespace; tests/slurm/cluster.sh and netns_nodes.sh),
# one case per ctest entry:
#   multinode_test.sh MHC_BINARY CASE WORK_DIR [RELOCATABLE_MHC]
# Cases:
#   submit      --nodes=3 --ntasks-per-node=1, and --nodes=2 --ntasks=3 (2 + 1 tasks):
#               both complete, rank 0 alone writes, the log names every rank's host, and
#               the loss curve equals one process with the same global batch (<= 1e-5
#               relative per step)
#   reloc       the uneven job of `submit`, run by RELOCATABLE_MHC (ctest label reloc,
#               after reloc_mhc has built it)
#   mpi         the same 3-node job launched by mpirun inside the allocation
#               (MHC_LAUNCHER=mpirun): dist.backend=auto picks MPI and says so
#   time_limit  --time=1 --signal=B:USR1@25 --requeue on 3 nodes: checkpoint on the signal,
#               requeue, resume; final weights equal an uninterrupted 3-node job's
#   node_lost   node3's link is cut and everything on it killed mid-run: both surviving
#               ranks end with one error naming rank 2 and node3 within
#               dist.collective_timeout_s; the latest checkpoint loads; resubmitted on
#               node1 and node2 with 2 ranks (same global batch), the run resumes from it
#               and its loss curve matches the uninterrupted 3-rank job's
#   sweep       scripts/ablate --slurm on a 3-run sweep: the jobs spread over the nodes,
#               all complete, scripts/report writes the report
# Cases exit 77 (ctest: skipped), with the reason, where Slurm or namespaces cannot be used.
set -uo pipefail
mhc=$1
case_name=$2
reloc_mhc=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../test_lib.sh
source "$here/../test_lib.sh"
# shellcheck source=cluster.sh
source "$here/cluster.sh"
# shellcheck source=job_lib.sh
source "$here/job_lib.sh"

cluster_preflight 3
start_test_dir "$3"
cluster_start "$work/cluster" 3
sbatch_script="$repo/scripts/slurm/train.sbatch"
export MHC_BIN=$mhc

# The tiny e2e model, one thread per rank, a global batch of 12: 3 ranks x 2 micro-steps
# of 2, 2 ranks x 3, or 1 process x 6 (the same samples per step in every layout).
make_corpus
common=(-c "$repo/tests/e2e/tiny.yaml" --set "data.train=$work/corpus/*_train_*.bin"
        --set "data.val=$work/corpus/*_val_*.bin" --set train.threads=1 --set train.batch_size=12
        --set train.micro_batch=2 --set train.lr=2e-3 --set dist.timeout_s=20
        --set dist.collective_timeout_s=15)
three_nodes=(--nodes=3 --ntasks-per-node=1)
cpu_job=(--cpus-per-task=1 --gpus-per-node=0)

# ranks_on_hosts RUN: "0 on node1, 1 on node2, ..." from rank 0's startup log.
ranks_on_hosts() { sed -n 's/.*data parallel: .*; ranks \(.*\))$/\1/p' "$1/train.log" | head -n 1; }

# check_job NAME ID RANKS PLACEMENT: the job completed, rank 0 named every rank's host, and
# its loss curve equals the single process's.
check_job() {
  local name=$1 id=$2 ranks=$3 placement=$4 state
  [ -n "$id" ] || { check "job $name was submitted" false; return; }
  state=$(wait_job "$id" 240)
  show_job_output "$name" | grep -v '| loss '
  check "job $name completed (state $state, nodes $(job_field "$id" NodeList))" test "$state" = COMPLETED
  check "$ranks ranks, rank 0 at node1" grep -q "$ranks ranks, rank 0 at node1:" "$work/$name.out"
  check "the log names every rank's host: $(ranks_on_hosts "$name")" \
    test "$(ranks_on_hosts "$name")" = "$placement"
  check "only rank 0 logged to the run directory" test "$(grep -c '\] step 30/30 |' "$name/train.log")" -eq 1
  check "one metrics line per step" test "$(grep -c '"type":"train"' "$name/metrics.jsonl")" -eq 30
  check "loss curve matches 1 process (<= 1e-5 relative per step)" \
    compare_losses single/metrics.jsonl "$name/metrics.jsonl" 1e-5
}

short_run=(--set train.steps=30 --set train.eval_every=15 --set train.log_every=1
           --set train.checkpoint_every=0)

# uneven_job: 3 ranks on 2 nodes (2 + 1), run by $MHC_BIN.
uneven_job() {
  local id
  # train.sbatch asks for 8 tasks per node; 2 (the CPUs of a node) is the most here.
  id=$(submit uneven --nodes=2 --ntasks=3 --ntasks-per-node=2 -- "${short_run[@]}")
  check_job uneven "$id" 3 "0-1 on node1, 2 on node2"
  check "$MHC_BIN ran it" grep -q "train.sbatch: .* running $MHC_BIN," "$work/uneven.out"
}

case_submit() {
  check "single process" "$mhc" train "${common[@]}" "${short_run[@]}" --run-dir "$work/single" 2>/dev/null
  local id
  id=$(submit even "${three_nodes[@]}" -- "${short_run[@]}")
  check_job even "$id" 3 "0 on node1, 1 on node2, 2 on node3"
  uneven_job
}

case_reloc() {
  if [ ! -x "$reloc_mhc" ]; then
    check "the relocatable binary ${reloc_mhc:-(none given)} exists (reloc_mhc builds it)" false
    return
  fi
  check "single process (the regular build)" "$mhc" train "${common[@]}" "${short_run[@]}" \
    --run-dir "$work/single" 2>/dev/null
  export MHC_BIN=$reloc_mhc
  uneven_job
}

case_mpi() {
  if ! command -v mpirun >/dev/null 2>&1; then
    echo "SKIPPED: mpirun not found (install Open MPI, e.g. openmpi-bin)"
    exit 77
  fi
  # CI runs as root; Open MPI refuses root without these (sbatch passes the environment on).
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export OMPI_MCA_btl_vader_single_copy_mechanism=none
  check "single process" "$mhc" train "${common[@]}" "${short_run[@]}" --run-dir "$work/single" 2>/dev/null
  local id
  id=$(MHC_LAUNCHER=mpirun submit mpi "${three_nodes[@]}" -- "${short_run[@]}")
  local state
  state=$(wait_job "$id" 240)
  show_job_output mpi | grep -v '| loss '
  check "the MPI job completed (state $state)" test "$state" = COMPLETED
  check "train.sbatch launched it with mpirun" grep -q "train.sbatch: .* launching with mpirun" "$work/mpi.out"
  check "dist.backend=auto picked MPI and logged it" \
    grep -q "dist.backend=auto: 3 CPU ranks under an MPI launcher -> mpi" mpi/train.log
  check "Open MPI placed one rank per node (rank 0: local 0 of 1)" \
    grep -q "rank 0 of 3 (local 0 of 1), from Open MPI variables" mpi/train.log
  check "rank 0 alone wrote" test "$(grep -c '\] step 30/30 |' mpi/train.log)" -eq 1
  check "loss curve matches 1 process (<= 1e-5 relative per step)" \
    compare_losses single/metrics.jsonl mpi/metrics.jsonl 1e-5
}

case_time_limit() {
  local n=400
  read -ra steps < <(preempt_steps $n)
  # hold_until_signal stops the tasks for up to 90 s, and a stopped rank's clock runs on: a
  # collective wait begun before SIGSTOP would time out at SIGCONT before its peers resume
  # (seen in CI with the common 15 s). This case is about the requeue, not lost nodes.
  steps+=(--set dist.collective_timeout_s=300)
  local ref id state
  ref=$(submit straight "${three_nodes[@]}" -- "${steps[@]}")
  id=$(submit split "${three_nodes[@]}" --time=1 --signal=B:USR1@25 --requeue -- "${steps[@]}")
  echo "submitted jobs $ref (uninterrupted) and $id (1-minute limit), 3 nodes each"
  # One CPU of each 2-CPU node per job: both run at once, so hold the split job right away.
  check "Slurm's USR1 reached the time-limited job mid-run" hold_until_signal "$id"
  state=$(wait_job "$ref" 300)
  check "the uninterrupted job completed (state $state)" test "$state" = COMPLETED
  state=$(wait_job "$id" 400)
  show_job_output split | grep -v '| loss '
  check "the time-limited job completed (state $state)" test "$state" = COMPLETED
  check "it was requeued by its script ($(job_field "$id" Restarts) restarts)" \
    sh -c "test '$(job_field "$id" Restarts)' -ge 1 && grep -q 'requeueing job $id' '$work/split.out'"
  check "every rank checkpointed on the signal" grep -q "stop requested.*: checkpointing at step" split/train.log
  check "the requeued job resumed from that checkpoint" grep -q "resumed from .* at step" split/train.log
  check "no run hit the time limit" sh -c "! grep -q 'DUE TO TIME LIMIT' '$work/split.out'"
  same_final straight split $n
}

case_node_lost() {
  local n=200
  read -ra steps < <(preempt_steps $n)
  steps+=(--set train.checkpoint_every=20)
  local ref id state
  ref=$(submit straight "${three_nodes[@]}" -- "${steps[@]}")
  state=$(wait_job "$ref" 300)
  check "the uninterrupted 3-node job completed (state $state)" test "$state" = COMPLETED
  id=$(submit split "${three_nodes[@]}" --no-requeue -- "${steps[@]}")
  echo "submitted jobs $ref (uninterrupted) and $id (node3 lost mid-run)"
  check "the job reached step 50" wait_step split 50 120
  # node3 disappears the way a crashed host does: its link first (no FIN, no RST reaches
  # the others), then everything on it.
  node_cut 3
  local ns_pids t0=$SECONDS
  ns_pids=$(ip netns pids "mhct-$netns_tag-node3")
  # shellcheck disable=SC2086  # one pid per word
  kill -KILL $ns_pids 2>/dev/null
  echo "cut node3's link and killed its $(echo "$ns_pids" | wc -w) processes"
  local limit=15 took=""
  until [ "$(grep -c '^error: rank [01]: .*rank 2 on node3' "$work/split.out" 2>/dev/null)" -ge 2 ]; do
    [ $((SECONDS - t0)) -gt 60 ] && break
    sleep 0.5
  done
  took=$((SECONDS - t0))
  grep '^error:' "$work/split.out"
  check "rank 0 names the lost rank and its host" grep -q '^error: rank 0: rank 2 on node3 sent nothing' "$work/split.out"
  check "rank 1 names the lost rank and its host" \
    grep -q '^error: rank 1: rank 0 ended the job: rank 2 on node3' "$work/split.out"
  check "one error line per surviving rank" test "$(grep -c '^error: rank' "$work/split.out")" -eq 2
  # The ranks' own wait is dist.collective_timeout_s; the rest is the tasks' step time.
  check "both within dist.collective_timeout_s = $limit s (took $took s)" test "$took" -le $((limit + 8))
  scancel "$id"
  state=$(wait_job "$id" 120)
  check "the job ended (state $state)" sh -c "test '$state' != '${state#STILL}' && exit 1 || exit 0"
  local latest
  latest=$(cat split/checkpoints/latest 2>/dev/null)
  check "the latest checkpoint ($latest) is complete" \
    test -n "$latest" -a -s "split/checkpoints/$latest/model.safetensors" -a -s "split/checkpoints/$latest/state.json"
  check "and loads (mhc eval)" "$mhc" eval --checkpoint "split/checkpoints/$latest" --batches 1
  local again
  again=$(submit split --nodes=2 --ntasks-per-node=1 --exclude=node3 -- "${steps[@]}")
  echo "resubmitted as job $again on node1 and node2"
  state=$(wait_job "$again" 300)
  show_job_output split | grep -v '| loss '
  check "the resubmitted 2-node job completed (state $state, nodes $(job_field "$again" NodeList))" \
    test "$state" = COMPLETED
  check "2 ranks, rank 0 at node1" grep -q "2 ranks, rank 0 at node1:" "$work/split.out"
  check "it resumed from $latest" grep -q "resumed from .*$latest at step" split/train.log
  check "its loss curve matches the uninterrupted 3-rank job (<= 1e-5 relative per step)" \
    compare_losses straight/metrics.jsonl split/metrics.jsonl 1e-5
}

case_sweep() {
  cat >sweep.yaml <<EOF
name: three
base: $repo/tests/e2e/tiny.yaml
set:
  data.train: "$work/corpus/*_train_*.bin"
  data.val: "$work/corpus/*_val_*.bin"
  train.steps: 20
  train.eval_every: 10
  train.eval_batches: 2
  train.log_every: 5
  train.threads: 1
axes:
  residual.mode: [baseline, hc, mhc]
EOF
  # Two CPUs per job on 2-CPU nodes: one job per node, all three at once.
  "$repo/scripts/ablate" sweep.yaml --mhc "$mhc" --runs-dir "$work/runs" --slurm \
    --sbatch-arg=--ntasks=1 --sbatch-arg=--cpus-per-task=2 >ablate.out 2>&1
  local rc=$?
  cat ablate.out
  check "ablate --slurm submitted (exit $rc)" test $rc -eq 0
  local ids id state nodes=""
  ids=$(sed -n 's/.*Submitted batch job \([0-9]*\).*/\1/p' ablate.out)
  check "one job per run" test "$(echo "$ids" | grep -c .)" -eq 3
  for id in $ids; do
    state=$(wait_job "$id" 240)
    check "job $id ($(job_field "$id" JobName)) completed on $(job_field "$id" NodeList) (state $state)" \
      test "$state" = COMPLETED
    nodes+="$(job_field "$id" NodeList) "
  done
  check "the jobs spread over the three nodes ($nodes)" \
    test "$(echo "$nodes" | tr ' ' '\n' | grep . | sort -u | wc -l)" -eq 3
  check "scripts/report on the sweep" "$repo/scripts/report" runs/three --mhc "$mhc"
  check "report wrote the figure" test -s runs/three/report/ablation.png
  check "report wrote the table with all three modes" \
    sh -c "grep -q '^| baseline ' runs/three/report/table.md && grep -q '^| hc ' runs/three/report/table.md && grep -q '^| mhc ' runs/three/report/table.md"
}

"case_$case_name"
finish
