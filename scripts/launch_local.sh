#!/usr/bin/env bash
# Data-parallel training on this machine: one rank per GPU, or N CPU ranks.
#
#   scripts/launch_local.sh [--gpus N | --cpu N] [--] TRAIN_ARGS...
#
# TRAIN_ARGS go to `mhc train` (e.g. -c configs/mhc.yaml --set train.batch_size=64
# --resume auto). Default: every visible GPU (CUDA_VISIBLE_DEVICES, else nvidia-smi),
# or, without GPUs, the CPU with 2 ranks.
#   GPUs: one process per GPU with torchrun-style RANK/WORLD_SIZE/LOCAL_RANK and rank 0's
#         rendezvous at MASTER_ADDR=127.0.0.1:MASTER_PORT (a free port unless set); mhc
#         picks NCCL and bootstraps it over TCP.
#   CPU:  mpirun -np N (mhc picks MPI); each rank gets cores/N OpenMP threads unless
#         train.threads is set. Without mpirun, N processes over TCP instead.
# SIGTERM/SIGINT/SIGUSR1 to this script reach every rank as a stop request: each
# finishes its step, the job checkpoints once and exits 0 (resume with --resume auto).
# Environment: MHC_BIN (default build/mhc), MASTER_PORT, MHC_MPIRUN_ARGS (extra mpirun
# arguments), DIST_TIMEOUT (dist.timeout_s, default from the config).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
mhc=${MHC_BIN:-$repo/build/mhc}

mode="" count=0
while (($#)); do
  case "$1" in
    --gpus) mode=gpu count=$2; shift 2 ;;
    --cpu) mode=cpu count=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
[ -x "$mhc" ] || { echo "launch_local: no mhc binary at $mhc (build it, or set MHC_BIN)" >&2; exit 1; }

visible_gpus() {
  if [ -n "${CUDA_VISIBLE_DEVICES+x}" ]; then
    [ -z "$CUDA_VISIBLE_DEVICES" ] && { echo 0; return; }
    tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .
  elif command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true
  else
    echo 0
  fi
}

if [ -z "$mode" ]; then
  count=$(visible_gpus)
  if [ "$count" -gt 0 ]; then mode=gpu; else mode=cpu count=2; fi
fi
[[ "$count" =~ ^[1-9][0-9]*$ ]] || { echo "launch_local: need a positive rank count, got '$count'" >&2; exit 1; }

extra=()
[ -n "${DIST_TIMEOUT:-}" ] && extra+=(--set "dist.timeout_s=$DIST_TIMEOUT")
cores=$(nproc)
if [ "$mode" = cpu ] && ! printf '%s\n' "$@" | grep -q '^train\.threads='; then
  threads=$((cores / count))
  ((threads >= 1)) || threads=1
  extra+=(--set "train.threads=$threads" --set train.device=cpu)
elif [ "$mode" = cpu ]; then
  extra+=(--set train.device=cpu)
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 20000))
}

if [ "$mode" = cpu ] && command -v mpirun >/dev/null 2>&1; then
  mpi=(mpirun -np "$count" --bind-to none)
  ((count > cores)) && mpi+=(--oversubscribe)
  if [ "$(id -u)" -eq 0 ]; then
    # Open MPI refuses to run as root without both of these.
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    mpi+=(--allow-run-as-root)
  fi
  # shellcheck disable=SC2206
  mpi+=(${MHC_MPIRUN_ARGS:-})
  echo "launch_local: $count CPU ranks: ${mpi[*]} $mhc train $* ${extra[*]}" >&2
  "${mpi[@]}" "$mhc" train "$@" "${extra[@]}" &
  launcher=$!
  # mpirun forwards SIGUSR1 to every rank; SIGTERM would make it kill the job instead.
  trap 'kill -USR1 $launcher 2>/dev/null' TERM INT USR1
  status=0
  while :; do
    wait $launcher && status=0 || status=$?
    kill -0 $launcher 2>/dev/null || break  # a trap interrupted wait: keep waiting
  done
  exit $status
fi

# One process per rank (GPUs, or CPUs without mpirun) with torchrun-style variables.
export MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
export MASTER_PORT=${MASTER_PORT:-$(free_port)}
echo "launch_local: $count $([ "$mode" = gpu ] && echo GPU || echo CPU) ranks, rank 0 at $MASTER_ADDR:$MASTER_PORT" >&2
pids=()
for ((r = 0; r < count; ++r)); do
  RANK=$r WORLD_SIZE=$count LOCAL_RANK=$r LOCAL_WORLD_SIZE=$count \
    "$mhc" train "$@" "${extra[@]}" &
  pids+=($!)
done
trap 'kill -USR1 "${pids[@]}" 2>/dev/null' TERM INT USR1
status=0
for pid in "${pids[@]}"; do
  while :; do
    if wait "$pid"; then rc=0; else rc=$?; fi
    kill -0 "$pid" 2>/dev/null || break  # a trap interrupted wait: keep waiting
  done
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
    status=$rc
    # A failed rank: the others fail at their next collective (lost connection) or at
    # the bootstrap timeout; stop them now instead.
    kill -TERM "${pids[@]}" 2>/dev/null || true
  fi
done
exit "$status"
