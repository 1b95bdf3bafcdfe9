#!/usr/bin/env bash
# Run a command on a host of the netns cluster (netns_up.sh), the way `ssh HOST COMMAND...` does:
# the words of COMMAND are joined and run by bash, in HOST's network namespace, under HOST's
# host name (a UTS namespace of its own) and with the cluster's hosts file bind-mounted over
# /etc/hosts (in a mount namespace of its own: the machine's /etc/hosts is untouched).
#
#   bash tests/cluster/on_node.sh node2 'hostname; getent hosts node1'
#
# ssh's semantics make it Open MPI's remote shell as well (mpirun runs `AGENT HOST orted ...`):
#   OMPI_MCA_plm_rsh_agent=tests/cluster/on_node.sh mpirun --hostfile hostfile ...
# Exit status: COMMAND's, or 255 (as ssh) when HOST is not a node of a running cluster.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR
source "$HERE/netns_common.sh"

if [ $# -lt 2 ]; then
    echo "usage: on_node.sh HOST COMMAND..." >&2
    exit 255
fi
node=$1
shift
netns=/run/netns/$(netns_of "$node")
if [ ! -e "$netns" ] || [ ! -f "$HOSTS_FILE" ]; then
    echo "on_node.sh: no host '$node' (nodes: ${NODES[*]}); is the cluster up? bash $HERE/netns_up.sh" >&2
    exit 255
fi
# unshare without --fork execs its command: the chain ends in COMMAND's own process.
# shellcheck disable=SC2016  # $1.. are expanded by the inner bash
exec nsenter --net="$netns" unshare --uts --mount --propagation private \
    bash -c 'mount --bind "$1" /etc/hosts && hostname "$2" && shift 2 && exec bash -c "$*"' \
    on_node "$HOSTS_FILE" "$node" "$@"
