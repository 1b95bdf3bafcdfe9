#!/usr/bin/env bash
# Stop the cluster slurm_up.sh started and delete its state directory. Idempotent: with nothing
# running it only cleans up. Cancels leftover jobs first; only processes named in the pid files
# (and slurmstepd processes of this cluster's slurmd) are signalled.
#   PACKRUN_SLURM_DIR   state directory (default /tmp/packrun-slurm)
set -uo pipefail
STATE=${PACKRUN_SLURM_DIR:-/tmp/packrun-slurm}
export SLURM_CONF=$STATE/etc/slurm.conf
log() { echo "slurm_down: $*" >&2; }

# Is pid $1 a live process named $2? A stopped daemon whose parent does not reap it lingers in
# /proc as a zombie, so look at its state, not only at /proc/PID.
pid_alive() {
    local stat
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != [ZX] ]]
}

stop_pidfile() {  # stop_pidfile PIDFILE NAME: SIGTERM, up to 10 s, then SIGKILL
    local pid
    [ -f "$1" ] || return 0
    pid=$(tr -dc 0-9 < "$1")
    if pid_alive "$pid" "$2"; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do pid_alive "$pid" "$2" || break; sleep 0.1; done
        if pid_alive "$pid" "$2"; then
            log "$2 ($pid) ignored SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
        log "stopped $2 ($pid)"
    fi
    rm -f "$1"
}

# 1. leftover jobs, while slurmctld still answers (their steps end with them)
if [ -f "$SLURM_CONF" ] && pid_alive "$(tr -dc 0-9 2>/dev/null < "$STATE/slurmctld.pid")" slurmctld; then
    jobs=$(timeout 10 squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        log "cancelling jobs $jobs"
        # shellcheck disable=SC2086  # one argument per job id
        timeout 10 scancel $jobs 2>/dev/null
        for _ in $(seq 60); do  # until no job is pending, running or completing
            [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
fi

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
