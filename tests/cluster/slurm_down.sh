#!/usr/bin/env bash
# Stop the cluster slurm_up.sh started and delete its state directory. Idempotent: with nothing
# running it only cleans up. Cancels leftover jobs first; only processes named in the pid files
# (and slurmstepd processes of this cluster's slurmd) are signalled.
#   PACKRUN_SLURM_DIR   state directory (default /tmp/packrun-slurm)
set -uo pipefail
STATE=${PACKRUN_SLURM_DIR:-/tmp/packrun-slurm}
export SLURM_CONF=$STATE/etc/slurm.conf
log() { echo "slurm_down: $*" >&2; }

# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/daemons.sh"

# 1. leftover jobs, while slurmctld still answers (their steps end with them)
cancel_all_jobs "$STATE"

# 2. the daemons, in reverse start order; then any slurmstepd of this cluster (one whose
#    open files are under the state directory)
stop_pidfile "$STATE/slurmd.pid" slurmd
stop_pidfile "$STATE/slurmctld.pid" slurmctld
for proc in /proc/[0-9]*; do
    [ "$(cat "$proc/comm" 2>/dev/null)" = slurmstepd ] || continue
    if find "$proc/fd" -maxdepth 1 -lname "$STATE/*" 2>/dev/null | grep -q .; then
        log "killing leftover slurmstepd ${proc#/proc/}"
        kill -KILL "${proc#/proc/}" 2>/dev/null
    fi
done
stop_pidfile "$STATE/munge/munged.pid" munged

# 3. the state directory, if slurm_up.sh made it
if [ -f "$STATE/.packrun-slurm" ]; then
    rm -rf "$STATE"
    log "removed $STATE"
elif [ -e "$STATE" ]; then
    log "left $STATE in place: slurm_up.sh did not create it"
fi
exit 0
