#!/usr/bin/env bash
# Start a 2-host Slurm cluster on this machine for tests/launcher/slurm/test_multinode.py:
#   root namespace   bridge prnbr0 10.77.0.1/24, munged, slurmctld (port 6917)
#   host node1       network namespace packrun-node1, eth0 10.77.0.11, slurmd (port 6918)
#   host node2       network namespace packrun-node2, eth0 10.77.0.12, slurmd (port 6918)
# The hosts have no default route: their traffic stays on the bridge's /24. Each slurmd runs
# under its host's name with a private /etc/hosts (on_node.sh), so node names resolve on every
# host; the machine's own /etc/hosts is never touched.
#
#   bash tests/cluster/netns_up.sh && source /tmp/packrun-netns/netns.env   # SLURM_CONF, ...
#   bash tests/cluster/on_node.sh node2 hostname                            # "ssh node2"
#   bash tests/cluster/netns_down.sh
#
# Idempotent: a cluster this script started that still answers is kept; anything else it left
# is stopped (netns_down.sh) and started afresh; a failed start cleans up after itself.
# Needs root, iproute2, util-linux (nsenter, unshare) and the Debian packages slurmctld, slurmd,
# slurm-client and munge. Settings (state directory, subnet, ports): netns_common.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR
source "$HERE/netns_common.sh"
export SLURM_CONF
log() { echo "netns_up: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, bridge, mounts)"
for tool in ip nsenter unshare getent munged mungekey slurmctld slurmd sbatch scontrol sinfo; do
    command -v "$tool" >/dev/null || die "$tool not found; install the Debian packages: \
apt-get install -y iproute2 util-linux slurmctld slurmd slurm-client munge"
done
[[ $STATE != *[[:space:]]* ]] || die "PACKRUN_NETNS_DIR '$STATE' holds a space, which slurm.conf cannot"

# --- already up? --------------------------------------------------------------------------------
nodes_ready() {  # every node takes jobs: idle, or running some (mixed / allocated)
    local states
    states=$(sinfo -h -N -o '%N %t' 2>/dev/null | sort -u) || return 1
    for node in "${NODES[@]}"; do
        grep -Eq "^$node (idle|mix|alloc)$" <<< "$states" || return 1
    done
}
if [ -f "$STATE/netns.env" ] && [ -S "$MUNGE_SOCKET" ] \
        && munge --socket="$MUNGE_SOCKET" --no-input 2>/dev/null \
           | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1 \
        && timeout 10 scontrol ping 2>/dev/null | grep -q UP && nodes_ready; then
    log "already up (state in $STATE); source $STATE/netns.env"
    exit 0
fi
T0=$(date +%s%N)
bash "$HERE/netns_down.sh"

port_in_use() {  # a listening TCP socket on port $1 in this namespace (IPv4 or IPv6)
    awk -v p=":$(printf '%04X' "$1")" '$2 ~ p"$" && $4 == "0A" {found = 1} END {exit !found}' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
port_in_use "$CTLD_PORT" && die "TCP port $CTLD_PORT is in use (another Slurm?); set PACKRUN_NETNS_SLURMCTLD_PORT"
if ip -4 -o addr show | grep -qF " inet $SUBNET."; then
    die "$SUBNET.0/24 is already in use on this machine; set PACKRUN_NETNS_SUBNET to a free private /24"
fi
if [ -n "$(ls -A "$STATE" 2>/dev/null)" ]; then
    die "$STATE holds files netns_up.sh did not make; set PACKRUN_NETNS_DIR to a new directory"
fi

ok=0  # from here on, a failure shows the daemons' logs, then undoes what was done
on_exit() {
    [ "$ok" = 1 ] && return
    for f in "$STATE"/log/*.log "$STATE/munge/munged.log"; do
        [ -s "$f" ] && { log "last lines of $f:"; tail -n 5 "$f" >&2; }
    done
    log "start failed: cleaning up"
    bash "$HERE/netns_down.sh"
}
trap on_exit EXIT
mkdir -p "$STATE"
touch "$STATE/.packrun-netns"  # tells netns_down.sh that it may delete this directory
mkdir -p "$STATE"/{etc,ctld,spool,log,munge}
# munged refuses a socket directory that others cannot enter
chmod 755 "$STATE" "$STATE/munge"

# --- network: the bridge, and one namespace per host on a veth pair -------------------------------
ip link add "$BRIDGE" type bridge
ip addr add "$CTL_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
for i in "${!NODES[@]}"; do
    netns=$(netns_of "${NODES[$i]}") veth=$(veth_of "${NODES[$i]}")
    ip netns add "$netns"
    ip link add "$veth" type veth peer name eth0 netns "$netns"
    ip link set "$veth" master "$BRIDGE" up
    ip -n "$netns" addr add "${IPS[$i]}/24" dev eth0
    ip -n "$netns" link set eth0 up
    ip -n "$netns" link set lo up
done
{
    echo "# /etc/hosts of the hosts of the netns cluster (bind-mounted by on_node.sh)"
    echo "127.0.0.1 localhost"
    echo "$CTL_IP $(hostname -s)"
    for i in "${!NODES[@]}"; do echo "${IPS[$i]} ${NODES[$i]}"; done
} > "$HOSTS_FILE"

# --- munge: its own key and socket (a Unix socket on the shared file system: every host uses it)
mungekey --create --force --keyfile="$STATE/munge/munge.key" >/dev/null
chmod 600 "$STATE/munge/munge.key"
munged --key-file="$STATE/munge/munge.key" --socket="$MUNGE_SOCKET" \
    --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" \
    --seed-file="$STATE/munge/munged.seed" || die "munged did not start"
for _ in $(seq 50); do [ -S "$MUNGE_SOCKET" ] && break; sleep 0.1; done

# --- slurm.conf: the two hosts by name and address, no accounting, no cgroups -------------------
CPUS=$(nproc)
cat > "$SLURM_CONF" <<CONF
ClusterName=packrunnetns
# slurmctld insists on its own host name here; the hosts reach it at the bridge's address
SlurmctldHost=$(hostname -s)($CTL_IP)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.%n.log
$(slurm_conf_policy 5)
CONF
for i in "${!NODES[@]}"; do
    echo "NodeName=${NODES[$i]} NodeHostname=${NODES[$i]} NodeAddr=${IPS[$i]} CPUs=$CPUS State=UNKNOWN"
done >> "$SLURM_CONF"
echo "PartitionName=netns Nodes=ALL Default=YES MaxTime=INFINITE State=UP" >> "$SLURM_CONF"

# --- daemons: slurmctld here, one slurmd per host (they daemonize and write their pid files) ----
slurmctld -f "$SLURM_CONF" || die "slurmctld did not start"
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
scontrol ping 2>/dev/null | grep -q UP || die "slurmctld does not answer"
for node in "${NODES[@]}"; do
    # until the bridge forwards: the host reaches slurmctld at the bridge's address
    bash "$HERE/on_node.sh" "$node" "for _ in \$(seq 50); do
        (exec 3<>/dev/tcp/$CTL_IP/$CTLD_PORT) 2>/dev/null && exit 0; sleep 0.1; done; exit 1" \
        || die "$node cannot reach slurmctld at $CTL_IP:$CTLD_PORT"
    mkdir -p "$STATE/spool/$node"
    # on_node.sh, not `ip netns exec`: that remounts /sys, and slurmd then fails to find
    # /sys/fs/cgroup ("Unable to initialize cgroup plugin")
    bash "$HERE/on_node.sh" "$node" slurmd -f "$SLURM_CONF" -N "$node" \
        || die "slurmd on $node did not start"
done
for _ in $(seq 200); do nodes_ready && break; sleep 0.1; done
nodes_ready || { sinfo -N >&2; die "the nodes are not idle"; }

{
    echo "# written by tests/cluster/netns_up.sh: the netns cluster's settings (source it)"
    printf 'export %s=%q\n' PACKRUN_NETNS_DIR "$STATE" SLURM_CONF "$SLURM_CONF" \
        NETNS_NODES "${NODES[*]}" NETNS_IPS "${IPS[*]}" \
        NETNS_NAMESPACES "$(for n in "${NODES[@]}"; do netns_of "$n"; done | xargs)" \
        NETNS_CTL_IP "$CTL_IP" NETNS_ON_NODE "$HERE/on_node.sh"
} > "$STATE/netns.env"
ok=1
log "up in $(( ($(date +%s%N) - T0) / 1000000 )) ms: ${NODES[*]} = ${IPS[*]}, slurmctld $CTL_IP:$CTLD_PORT; source $STATE/netns.env"
