#!/usr/bin/env bash
# The safety net of a test cluster (cluster.sh): started detached by cluster_start as
#   MHC_REAP_DIR=CLUSTER_DIR cluster_reap.sh CASE_PID
# it waits until the case's shell has ended, however it ended, and then kills every
# process of that cluster and removes its namespaces, links and socket folder. After a
# normal cluster_stop there is nothing left to do. The folder comes through the
# environment, so that this process is not taken for one of the cluster's own.
set -u
case_pid=$1
dir=${MHC_REAP_DIR:?}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cluster.sh
source "$here/cluster.sh"
# shellcheck source=netns_nodes.sh
source "$here/netns_nodes.sh"
trap '' INT TERM HUP
while kill -0 "$case_pid" 2>/dev/null; do sleep 1; done
for p in $(harness_processes "$dir"); do kill -KILL "$p" 2>/dev/null; done
netns_remove "$dir"
if [ -L "$dir/sockets" ]; then rm -rf "$(readlink "$dir/sockets")" "$dir/sockets"; fi
exit 0
