# Helpers shared by the test clusters' start and stop scripts (sourced, not run): slurm_up.sh /
# slurm_down.sh (one node on localhost) and netns_up.sh / netns_down.sh (two hosts in network
# namespaces). The caller defines log() and exports SLURM_CONF for cancel_all_jobs.
# shellcheck shell=bash

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

cancel_all_jobs() {  # cancel_all_jobs STATE: every job, while slurmctld (STATE/slurmctld.pid) answers
    local jobs
    [ -f "$SLURM_CONF" ] && pid_alive "$(tr -dc 0-9 2>/dev/null < "$1/slurmctld.pid")" slurmctld \
        || return 0
    jobs=$(timeout 10 squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    [ -n "${jobs// /}" ] || return 0
    log "cancelling jobs $jobs"
    # shellcheck disable=SC2086  # one argument per job id
    timeout 10 scancel $jobs 2>/dev/null
    for _ in $(seq 60); do  # until no job is pending, running or completing
        [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
        sleep 0.5
    done
}

slurm_conf_policy() {  # slurm_conf_policy KILLWAIT: the slurm.conf lines both test clusters share
    cat <<CONF
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# look at pending jobs every second (defaults: 30 s, 60 s), so a requeued job starts promptly
SchedulerParameters=bf_interval=1,sched_interval=1
SwitchType=switch/none
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# keep finished jobs visible to scontrol show job (there is no accounting database)
MinJobAge=600
KillWait=$1
MailProg=/bin/true
InactiveLimit=0
CONF
}
