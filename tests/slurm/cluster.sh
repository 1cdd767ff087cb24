# shellcheck shell=bash
# A private Slurm cluster for the tests in this folder; sourced, not run.
#   cluster_preflight [NODES]   exit 77 (ctest: skipped), with the reason, where Slurm (or,
#                               for NODES > 1, network namespaces) can't be used
#   cluster_start DIR [NODES]   munged, slurmctld, slurmd with their own key, socket, ports,
#                               state, spool and log folders under DIR; waits for the nodes to
#                               be idle; exports SLURM_CONF; arms an EXIT trap that stops them.
#                               NODES = 1 (default): one slurmd, the host itself. NODES > 1:
#                               node1..nodeN, each slurmd in its own network, UTS and mount
#                               namespace (netns_nodes.sh), the controller on their bridge
#   cluster_stop                cancel every job, stop every daemon and job process it started
#                               (by pid), remove its namespaces and links (by name), then check
#                               that none of them is left
#   cluster_nodes               the node names (one per line)
#   harness_processes ROOT      pids of processes that belong to clusters under ROOT
# Each daemon runs in the foreground as a child of this shell, so its pid is known exactly;
# job processes (slurmstepd, the tasks) are found through the SLURM_CONF in their
# environment, which points into DIR and nowhere else.

cluster_preflight() {
  local tool nodes=${1:-1}
  for tool in munged mungekey slurmctld slurmd sbatch scontrol squeue sinfo srun; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "SKIPPED: $tool not found (scripts/setup.sh installs slurm-wlm and munge for the tests)"
      exit 77
    fi
  done
  if [ "$(id -u)" -ne 0 ]; then
    echo "SKIPPED: the private Slurm cluster needs root (slurmd runs jobs as their user)"
    exit 77
  fi
  if [ -z "$(hostname -s 2>/dev/null)" ] || ! getent hosts "$(hostname -s)" >/dev/null; then
    echo "SKIPPED: this host's name does not resolve (slurmd registers under it)"
    exit 77
  fi
  if [ "$nodes" -gt 1 ]; then
    # shellcheck source=netns_nodes.sh
    source "$(dirname "${BASH_SOURCE[0]}")/netns_nodes.sh"
    netns_preflight
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}

# harness_processes ROOT: pids (other than this shell's) whose SLURM_CONF or command line
# points under ROOT: the daemons, slurmstepd, the job scripts and the mhc tasks.
harness_processes() {
  local root=$1 p
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = "$$" ] && continue
    [ "$p" = "$BASHPID" ] && continue
    if { tr '\0' '\n' <"/proc/$p/environ" | grep -q "^SLURM_CONF=$root/"; } 2>/dev/null ||
       { tr '\0' ' ' <"/proc/$p/cmdline" | grep -qF "$root/"; } 2>/dev/null; then
      echo "$p"
    fi
  done
}

cluster_start() {
  cluster_dir=$1
  cluster_node_count=${2:-1}
  mkdir -p "$cluster_dir"/{state,log,run}
  # Unix socket paths must stay under 108 bytes: munged's socket and slurmd's spool (where
  # slurmstepd puts its sockets) go to a short private folder, removed by cluster_stop.
  cluster_sock=$(mktemp -d /tmp/mhc-slurm.XXXXXX) || exit 1
  ln -sfn "$cluster_sock" "$cluster_dir/sockets"
  mkdir -p "$cluster_sock"/{munge,spool}
  chmod 700 "$cluster_sock/munge"
  cluster_pids=()
  trap cluster_stop EXIT
  # A case killed outright (SIGKILL, a ctest timeout) runs no trap: a detached reaper waits
  # for this shell to end and then removes whatever is left (processes, namespaces, links).
  env -u SLURM_CONF MHC_REAP_DIR="$cluster_dir" setsid -f \
    "$(dirname "${BASH_SOURCE[0]}")/cluster_reap.sh" $$ >/dev/null 2>&1 </dev/null
  mungekey --create --keyfile="$cluster_sock/munge/munge.key" >/dev/null 2>&1 ||
    { echo "FAIL: mungekey could not create a key"; exit 1; }
  munged --foreground --force --key-file="$cluster_sock/munge/munge.key" \
    --socket="$cluster_sock/munge/munge.socket" --pid-file="$cluster_dir/run/munged.pid" \
    --log-file="$cluster_dir/log/munged.log" --seed-file="$cluster_sock/munge/munged.seed" \
    >>"$cluster_dir/log/munged.out" 2>&1 &
  cluster_pids+=($!)
  local i
  for ((i = 0; i < 100; i++)); do
    [ -S "$cluster_sock/munge/munge.socket" ] && break
    sleep 0.1
  done
  if [ ! -S "$cluster_sock/munge/munge.socket" ]; then
    echo "FAIL: munged did not start:"
    cat "$cluster_dir/log/munged.out" "$cluster_dir/log/munged.log" 2>/dev/null
    exit 1
  fi

  cluster_node=$(hostname -s)
  local ctl_host=$cluster_node node_lines partition_nodes
  if [ "$cluster_node_count" -gt 1 ]; then
    # shellcheck source=netns_nodes.sh
    source "$(dirname "${BASH_SOURCE[0]}")/netns_nodes.sh"
    local tag
    tag=$(basename "$cluster_sock" | tail -c 6)
    netns_create "$tag" "$cluster_node_count" "$cluster_dir" ||
      { echo "FAIL: could not create the nodes' namespaces"; exit 1; }
    ctl_host="$cluster_node($netns_ctl_addr)"
    node_lines=""
    for ((i = 1; i <= cluster_node_count; i++)); do
      node_lines+="NodeName=node$i NodeAddr=$netns_subnet.$((10 + i)) CPUs=2 State=UNKNOWN"$'\n'
    done
    partition_nodes="node[1-$cluster_node_count]"
  else
    node_lines="NodeName=$cluster_node CPUs=2 State=UNKNOWN"
    partition_nodes=$cluster_node
  fi
  export SLURM_CONF=$cluster_dir/slurm.conf
  # Short timeouts keep the cases quick; the time-limit check itself runs on slurmctld's
  # own period (about 30 s), which no setting shortens.
  cat >"$SLURM_CONF" <<EOF
ClusterName=mhctest
SlurmctldHost=$ctl_host
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$cluster_sock/munge/munge.socket
StateSaveLocation=$cluster_dir/state
SlurmdSpoolDir=$cluster_sock/spool/%n
SlurmctldPidFile=$cluster_dir/run/slurmctld.pid
SlurmdPidFile=$cluster_dir/run/slurmd-%n.pid
SlurmctldLogFile=$cluster_dir/log/slurmctld.log
SlurmdLogFile=$cluster_dir/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
OverTimeLimit=0
SlurmdTimeout=20
$node_lines
PartitionName=test Nodes=$partition_nodes Default=YES MaxTime=INFINITE State=UP
EOF
  slurmctld -D -i >>"$cluster_dir/log/slurmctld.out" 2>&1 &
  cluster_pids+=($!)
  if [ "$cluster_node_count" -gt 1 ]; then
    for ((i = 1; i <= cluster_node_count; i++)); do
      mkdir -p "$cluster_sock/spool/node$i"
      node_exec "$i" slurmd -D -N "node$i" >>"$cluster_dir/log/slurmd-node$i.out" 2>&1 &
      cluster_pids+=($!)
    done
  else
    slurmd -D >>"$cluster_dir/log/slurmd.out" 2>&1 &
    cluster_pids+=($!)
  fi
  local state="" want
  want=$(printf 'idle%.0s\n' $(seq "$cluster_node_count"))
  for ((i = 0; i < 300; i++)); do
    state=$(sinfo -h -N -o %t 2>/dev/null)
    [ "$state" = "$want" ] && break
    sleep 0.1
  done
  if [ "$state" != "$want" ]; then
    echo "FAIL: the nodes did not become idle (states: ${state//$'\n'/ }); logs:"
    tail -n 20 "$cluster_dir"/log/*
    exit 1
  fi
  echo "cluster: $(sinfo -V) up in $cluster_dir, node(s) $(cluster_nodes | paste -sd ' ') idle"
}

cluster_nodes() { sinfo -h -N -o %N 2>/dev/null; }

cluster_stop() {
  local rc=$?
  trap - EXIT
  [ -n "${cluster_dir:-}" ] || exit $rc
  if [ -n "${SLURM_CONF:-}" ]; then
    scancel --quiet --full --user=root 2>/dev/null
    local i
    for ((i = 0; i < 100; i++)); do
      [ -z "$(squeue -h -t R,CG 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  # Job processes first (slurmstepd outlives slurmd by design), then the daemons, newest first.
  local left p
  left=$(harness_processes "$cluster_dir")
  local daemons=() j
  for ((j = ${#cluster_pids[@]} - 1; j >= 0; j--)); do daemons+=("${cluster_pids[j]}"); done
  for p in $left; do
    [[ " ${cluster_pids[*]} " == *" $p "* ]] || kill -KILL "$p" 2>/dev/null
  done
  for p in "${daemons[@]}"; do
    kill -TERM "$p" 2>/dev/null
    for ((i = 0; i < 50; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  left=$(harness_processes "$cluster_dir")
  [ -n "${cluster_sock:-}" ] && rm -rf "$cluster_sock" "$cluster_dir/sockets"
  local devices=""
  if [ -f "$cluster_dir/netns.names" ]; then
    netns_remove "$cluster_dir"
    devices=$(netns_leftovers | grep -F -f <(awk '{print $2}' "$cluster_dir/netns.names"))
  fi
  if [ -n "$left" ]; then
    echo "FAIL: processes of the cluster remain after stopping it:"
    for p in $left; do echo "  $p $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"; done
    rc=1
  elif [ -n "$devices" ]; then
    echo "FAIL: namespaces, links or mounts of the cluster remain after stopping it:"
    echo "$devices" | sed 's/^/  /'
    rc=1
  else
    echo "cluster: stopped, no process$([ -f "$cluster_dir/netns.names" ] && echo ", namespace, link or mount") of it left"
  fi
  exit $rc
}
