#!/usr/bin/env bash
# Stop the netns cluster netns_up.sh started and remove everything it made: jobs, daemons, any
# process still inside the hosts' namespaces, the namespaces, links and state directory.
# Idempotent: with nothing (or only part) up it cleans what is there. Only processes named in
# the pid files or living in the cluster's own network namespaces are signalled.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR
source "$HERE/netns_common.sh"
export SLURM_CONF
log() { echo "netns_down: $*" >&2; }

# 1. leftover jobs, while slurmctld still answers
cancel_all_jobs "$STATE"

# 2. the daemons, slurmd first
for node in "${NODES[@]}"; do stop_pidfile "$STATE/slurmd.$node.pid" slurmd; done
stop_pidfile "$STATE/slurmctld.pid" slurmctld

# 3. whatever still runs on the hosts (job steps, workers, commands of on_node.sh): TERM, then
#    KILL after 5 s; all namespaces before any is deleted
ns_pids() {
    local node
    for node in "${NODES[@]}"; do
        ip netns pids "$(netns_of "$node")" 2>/dev/null
    done | xargs
}
pids=$(ns_pids)
if [ -n "$pids" ]; then
    log "stopping processes left on the hosts: $pids"
    # shellcheck disable=SC2086  # one argument per pid
    kill -TERM $pids 2>/dev/null
    for _ in $(seq 50); do [ -z "$(ns_pids)" ] && break; sleep 0.1; done
    pids=$(ns_pids)
    # shellcheck disable=SC2086
    [ -z "$pids" ] || { log "SIGKILL $pids"; kill -KILL $pids 2>/dev/null; sleep 0.3; }
fi

# 4. the network: namespaces (their eth0 ends go with them), veths, bridge
for node in "${NODES[@]}"; do
    netns=$(netns_of "$node")
    [ -e "/run/netns/$netns" ] && ip netns del "$netns" && log "deleted namespace $netns"
    ip link show "$(veth_of "$node")" >/dev/null 2>&1 && ip link del "$(veth_of "$node")"
done
ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE" && log "deleted bridge $BRIDGE"
# `ip netns add` bind-mounts /run/netns on itself; undo that once no namespace is left in it
if [ -d /run/netns ] && [ -z "$(ls -A /run/netns)" ]; then
    while grep -q " /run/netns " /proc/mounts; do umount /run/netns || break; done
    rmdir /run/netns 2>/dev/null
fi

# 5. munged, then the state directory if netns_up.sh made it
stop_pidfile "$STATE/munge/munged.pid" munged
if [ -f "$STATE/.packrun-netns" ]; then
    rm -rf "$STATE"
    log "removed $STATE"
elif [ -e "$STATE" ]; then
    log "left $STATE in place: netns_up.sh did not create it"
fi
exit 0
