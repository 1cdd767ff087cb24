# shellcheck shell=bash
# Private "hosts" for a multi-node Slurm cluster on one machine; sourced, not run.
# Each node is a network namespace (netns) with its own address on a bridge that the test
# creates, and, for the processes started in it by node_exec, its own hostname (UTS
# namespace) and /etc/hosts (a bind mount in a private mount namespace). The controller
# stays in the host's namespaces and is reached at the bridge's address. The addresses are
# from 10.213.0.0/16, exist only on that bridge and in the namespaces, and have no route
# anywhere else.
#   netns_preflight             exit 77 (ctest: skipped), with the reason, where namespaces,
#                               veth pairs or bridges cannot be made
#   netns_create TAG N DIR      bridge mhcb<TAG>, namespaces mhct-<TAG>-node1..N, veth pairs
#                               mhcv<TAG>n<i>; writes DIR/hosts; records every name in
#                               DIR/netns.names (for netns_remove and the leftover check)
#   node_exec I CMD...          run CMD as node I (its netns, hostname nodeI, /etc/hosts)
#   node_cut I                  cut node I's link (its veth goes down: nothing in or out)
#   netns_remove DIR            delete the namespaces and links named in DIR/netns.names
#   netns_leftovers             names of any mhct-* namespace, mhcb*/mhcv* link or
#                               /run/netns/mhct-* mount that exists now (any cluster's)
# Sets: netns_subnet (e.g. 10.213.57), netns_ctl_addr (the bridge's address), netns_tag.


netns_preflight() {
  local probe="mhct-probe-$$" why=""
  if ! command -v ip >/dev/null 2>&1; then
    why="the ip tool (iproute2) is missing"
  elif ! command -v unshare >/dev/null 2>&1 || ! command -v nsenter >/dev/null 2>&1; then
    why="unshare or nsenter (util-linux) is missing"
  elif ! ip netns add "$probe" 2>/dev/null; then
    why="cannot create a network namespace ('ip netns add' failed; needs root and CONFIG_NET_NS)"
  elif ! ip link add "mhcvp$$" type veth peer name eth0 netns "$probe" 2>/dev/null; then
    why="cannot create a veth pair into a namespace"
  elif ! ip link add "mhcbp$$" type bridge 2>/dev/null; then
    why="cannot create a bridge device"
  elif ! nsenter --net="/run/netns/$probe" unshare --uts --mount true 2>/dev/null; then
    why="cannot enter a namespace with its own hostname and mounts (nsenter, unshare --uts --mount)"
  fi
  ip link del "mhcbp$$" 2>/dev/null
  ip link del "mhcvp$$" 2>/dev/null
  ip netns del "$probe" 2>/dev/null
  if [ -n "$why" ]; then
    echo "SKIPPED: the multi-node cluster needs namespaces: $why"
    exit 77
  fi
}

# A /24 of 10.213.0.0/16 that no interface of this host uses.
free_subnet() {
  local used n
  used=$(ip -4 -o addr show | awk '{print $4}')
  for ((n = 0; n < 50; n++)); do
    local candidate="10.213.$((RANDOM % 250 + 2))"
    grep -q "^$candidate\." <<<"$used" || { echo "$candidate"; return; }
  done
  echo "10.213.$((RANDOM % 250 + 2))"
}

netns_create() {
  netns_tag=$1
  local count=$2 dir=$3 i ns veth
  netns_subnet=$(free_subnet)
  netns_ctl_addr="$netns_subnet.1"
  local bridge="mhcb$netns_tag"
  : >"$dir/netns.names"
  # Record each name before creating it, so that a run killed half-way still removes it.
  echo "link $bridge" >>"$dir/netns.names"
  ip link add "$bridge" type bridge || return 1
  ip addr add "$netns_ctl_addr/24" dev "$bridge" || return 1
  ip link set "$bridge" up || return 1
  {
    echo "127.0.0.1 localhost"
    echo "$netns_ctl_addr $(hostname -s)"
    for ((i = 1; i <= count; i++)); do echo "$netns_subnet.$((10 + i)) node$i"; done
  } >"$dir/hosts"
  for ((i = 1; i <= count; i++)); do
    ns="mhct-$netns_tag-node$i"
    veth="mhcv${netns_tag}n$i"
    echo "netns $ns" >>"$dir/netns.names"
    echo "link $veth" >>"$dir/netns.names"
    ip netns add "$ns" || return 1
    ip link add "$veth" type veth peer name eth0 netns "$ns" || return 1
    ip link set "$veth" master "$bridge" up || return 1
    ip -n "$ns" addr add "$netns_subnet.$((10 + i))/24" dev eth0 || return 1
    ip -n "$ns" link set eth0 up || return 1
    ip -n "$ns" link set lo up || return 1
  done
  netns_hosts=$dir/hosts
}

# The mount namespace is private (unshare's default propagation), so the bind mount of
# /etc/hosts is seen by this node's processes only and vanishes with them. nsenter, not
# `ip netns exec`: that one remounts /sys, without the cgroup folder slurmd needs.
node_exec() {
  local i=$1
  shift
  nsenter --net="/run/netns/mhct-$netns_tag-node$i" unshare --uts --mount \
    sh -c 'hostname "$1" && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"' \
    node_exec "node$i" "$netns_hosts" "$@"
}

node_cut() { ip link set "mhcv${netns_tag}n$1" down; }

netns_remove() {
  local dir=$1 kind name
  [ -f "$dir/netns.names" ] || return 0
  # Namespaces first (that removes their veth ends, and with them the host ends), then links.
  while read -r kind name; do
    [ "$kind" = netns ] && ip netns del "$name" 2>/dev/null
  done <"$dir/netns.names"
  while read -r kind name; do
    [ "$kind" = link ] && ip link show "$name" >/dev/null 2>&1 && ip link del "$name" 2>/dev/null
  done <"$dir/netns.names"
  return 0
}

netns_leftovers() {
  ip netns list 2>/dev/null | awk '$1 ~ /^mhct-/ {print "netns " $1}'
  ip -o link show 2>/dev/null | awk -F': ' '{sub(/@.*/, "", $2); if ($2 ~ /^mhc[bv]/) print "link " $2}'
  awk '$2 ~ /^\/run\/netns\/mhct-/ {print "mount " $2}' /proc/mounts 2>/dev/null
}
