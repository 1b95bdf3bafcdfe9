# Settings and helpers shared by netns_up.sh, netns_down.sh and on_node.sh (sourced, not run).
#
# The cluster: hosts node1 and node2 are the network namespaces /run/netns/packrun-node1 and
# /run/netns/packrun-node2, on the bridge prnbr0 (SUBNET.1, the root namespace, where munged and
# slurmctld run). Everything it owns carries a name of its own, so that it coexists with
# tests/cluster/slurm_up.sh's cluster (/tmp/packrun-slurm, ports 6817/6818).
#   PACKRUN_NETNS_DIR              state directory (default /tmp/packrun-netns)
#   PACKRUN_NETNS_SUBNET           first three octets of a private /24 (default 10.77.0)
#   PACKRUN_NETNS_SLURMCTLD_PORT   slurmctld's port in the root namespace (default 6917)
#   PACKRUN_NETNS_SLURMD_PORT      slurmd's port inside each node (default 6918)
# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this

STATE=${PACKRUN_NETNS_DIR:-/tmp/packrun-netns}
SUBNET=${PACKRUN_NETNS_SUBNET:-10.77.0}
CTLD_PORT=${PACKRUN_NETNS_SLURMCTLD_PORT:-6917}
SLURMD_PORT=${PACKRUN_NETNS_SLURMD_PORT:-6918}
BRIDGE=prnbr0
CTL_IP=$SUBNET.1
NODES=(node1 node2)
IPS=("$SUBNET.11" "$SUBNET.12")
HOSTS_FILE=$STATE/etc/hosts        # the nodes' /etc/hosts (bind-mounted there only)
MUNGE_SOCKET=$STATE/munge/munge.socket
SLURM_CONF=$STATE/etc/slurm.conf

netns_of() { echo "packrun-$1"; }  # node name -> network namespace name
veth_of() { echo "prn-$1"; }       # node name -> root-side end of its veth pair

# pid_alive, stop_pidfile, cancel_all_jobs
# shellcheck source-path=SCRIPTDIR source=daemons.sh
source "$(dirname "${BASH_SOURCE[0]}")/daemons.sh"
