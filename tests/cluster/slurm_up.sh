#!/usr/bin/env bash
# Start a single-node Slurm cluster on this machine for the tests: munged, slurmctld and slurmd,
# started directly (no systemd), as root, all state under one directory.
#
#   bash tests/cluster/slurm_up.sh && source "${PACKRUN_SLURM_DIR:-/tmp/packrun-slurm}/env.sh"
#
# Idempotent: a cluster this script started that still answers is kept; anything else it left
# is stopped (slurm_down.sh) and started afresh. Needs the Debian packages slurmctld, slurmd,
# slurm-client and munge (.ci/run installs them).
#   PACKRUN_SLURM_DIR       state directory (default /tmp/packrun-slurm)
#   PACKRUN_SLURMCTLD_PORT  slurmctld's port (default 6817)
#   PACKRUN_SLURMD_PORT     slurmd's port (default 6818)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${PACKRUN_SLURM_DIR:-/tmp/packrun-slurm}
CTLD_PORT=${PACKRUN_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${PACKRUN_SLURMD_PORT:-6818}
NODE=$(hostname -s)
log() { echo "slurm_up: $*" >&2; }
# shellcheck source-path=SCRIPTDIR
source "$HERE/daemons.sh"  # slurm_conf_policy
die() { log "error: $*"; exit 1; }
[[ $STATE != *[[:space:]]* ]] || die "PACKRUN_SLURM_DIR '$STATE' holds a space, which slurm.conf cannot"

for tool in munged mungekey slurmctld slurmd sbatch scontrol sinfo; do
    command -v "$tool" >/dev/null \
        || die "$tool not found; install the Debian packages: apt-get install -y slurmctld slurmd slurm-client munge"
done

# --- already up? ------------------------------------------------------------------------------
MUNGE_SOCKET=$STATE/munge/munge.socket
export SLURM_CONF=$STATE/etc/slurm.conf
node_ready() {  # the node takes jobs: idle, or running some (mixed / allocated)
    [[ $(sinfo -h -N -n "$NODE" -o %t 2>/dev/null) =~ ^(idle|mix|alloc)$ ]]
}
if [ -f "$STATE/env.sh" ] && [ -S "$MUNGE_SOCKET" ] \
        && munge --socket="$MUNGE_SOCKET" --no-input 2>/dev/null \
           | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1 \
        && timeout 10 scontrol ping 2>/dev/null | grep -q UP && node_ready; then
    log "already up (state in $STATE); source $STATE/env.sh"
    exit 0
fi
bash "$HERE/slurm_down.sh" >&2

port_in_use() {  # a listening TCP socket on port $1 (IPv4 or IPv6)
    awk -v p=":$(printf '%04X' "$1")" '$2 ~ p"$" && $4 == "0A" {found = 1} END {exit !found}' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
[ "$CTLD_PORT" != "$SLURMD_PORT" ] || die "PACKRUN_SLURMCTLD_PORT and PACKRUN_SLURMD_PORT are both $CTLD_PORT"
for port in "$CTLD_PORT" "$SLURMD_PORT"; do
    if port_in_use "$port"; then
        die "TCP port $port is in use (another Slurm?); set PACKRUN_SLURMCTLD_PORT / PACKRUN_SLURMD_PORT"
    fi
done

if [ -n "$(ls -A "$STATE" 2>/dev/null)" ]; then
    die "$STATE holds files slurm_up.sh did not make; set PACKRUN_SLURM_DIR to a new directory"
fi
mkdir -p "$STATE"
touch "$STATE/.packrun-slurm"  # tells slurm_down.sh that it may delete this directory
mkdir -p "$STATE"/{etc,ctld,spool,log,munge}
# munged refuses a socket directory that others cannot enter, and a key others can read.
chmod 755 "$STATE" "$STATE/munge"

# --- munge: its own key and socket --------------------------------------------------------------
mungekey --create --force --keyfile="$STATE/munge/munge.key" >/dev/null
chmod 600 "$STATE/munge/munge.key"
munged --key-file="$STATE/munge/munge.key" --socket="$MUNGE_SOCKET" \
    --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" \
    --seed-file="$STATE/munge/munged.seed" \
    || die "munged did not start; see $STATE/munge/munged.log"
for _ in $(seq 50); do [ -S "$MUNGE_SOCKET" ] && break; sleep 0.1; done
munge --socket="$MUNGE_SOCKET" --no-input | unmunge --socket="$MUNGE_SOCKET" >/dev/null \
    || die "munge self-test failed; see $STATE/munge/munged.log"

# --- slurm.conf: one node with this machine's CPUs and memory, no accounting -------------------
CPUS=$(nproc)
MEMORY_MB=$(free -m | awk '/^Mem:/ {print $2}')
cat > "$SLURM_CONF" <<CONF
ClusterName=packrun
SlurmctldHost=${NODE}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job may start again this many seconds later (default 120; Slurm
# refuses less than 5): it is every requeue test's wait
AuthInfo=socket=${MUNGE_SOCKET},cred_expire=5
StateSaveLocation=${STATE}/ctld
SlurmdSpoolDir=${STATE}/spool
SlurmctldPidFile=${STATE}/slurmctld.pid
SlurmdPidFile=${STATE}/slurmd.pid
SlurmctldLogFile=${STATE}/log/slurmctld.log
SlurmdLogFile=${STATE}/log/slurmd.log
$(slurm_conf_policy 10)
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEMORY_MB} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
printf 'export SLURM_CONF=%q\n' "$SLURM_CONF" > "$STATE/env.sh"

# --- daemons: they daemonize and write their pid files ----------------------------------------
slurmctld -f "$SLURM_CONF" || die "slurmctld did not start; see $STATE/log/slurmctld.log"
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
scontrol ping 2>/dev/null | grep -q UP \
    || { tail -n 20 "$STATE/log/slurmctld.log" >&2; die "slurmctld does not answer"; }
slurmd -f "$SLURM_CONF" -N "$NODE" || die "slurmd did not start; see $STATE/log/slurmd.log"
for _ in $(seq 120); do node_ready && break; sleep 0.25; done
node_ready || { tail -n 20 "$STATE/log/slurmd.log" >&2
                die "node $NODE is '$(sinfo -h -N -n "$NODE" -o %t 2>&1)', not idle"; }
log "up: node $NODE ($CPUS CPUs, $MEMORY_MB MB), state in $STATE; source $STATE/env.sh"
