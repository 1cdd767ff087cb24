# shellcheck shell=bash disable=SC2154  # work, cpu_job, common, sbatch_script: set by the case script
# Job helpers shared by the Slurm cases (slurm_test.sh, multinode_test.sh); sourced, not
# run. Expect $work, $mhc, $sbatch_script, and the arrays cpu_job (sbatch options) and
# common (mhc train options) from the case script.
#   submit NAME SBATCH_ARGS... -- TRAIN_ARGS...   sbatch train.sbatch; prints the job id
#   job_field ID FIELD, wait_job ID SECONDS, wait_step RUN STEP SECONDS
#   compare_losses REF OTHER TOL, same_final REF RUN STEPS, show_job_output NAME
#   preempt_steps N, job_tasks ID, hold_until_signal ID, rank_pid RANK
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
# is gone from the nodes and 2 s have passed: slurmd rejects a launch whose credential is
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
          if [ $((SECONDS - pending_since)) -ge 2 ] && [ -z "$(sinfo -h -t alloc,mix,comp -o %N)" ]; then
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
  echo "held job $id's tasks (${tasks//$'\n'/ }) for $((SECONDS - t0)) s, until Slurm's USR1"
  grep -q 'train.sbatch: SIGUSR1' "$work/split.out"
}

# rank_pid RANK: the pid of the mhc task of that rank in this case's cluster.
rank_pid() {
  local p
  for p in $(harness_processes "$work"); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = mhc ] || continue
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "SLURM_PROCID=$1" && { echo "$p"; return; }
  done
}
