#!/bin/bash
# packrun: Open MPI launch of run demo: 1 node(s) x 2 CPU worker(s), 2 ranks.
# Usage: bash mpirun.sh
# Logs: logs/mpirun/1/rank.<rank>/stdout, the MindSpore scheduler's logs/scheduler.log.
set -uo pipefail
RUN_DIR=/runs/demo-20250101-000000
PYTHON=/opt/venv/bin/python
cd "$RUN_DIR" || exit 1
export MS_RETRY_INTERVAL_LOWER=1
export MS_RETRY_INTERVAL_UPPER=1
# MindSpore's dynamic cluster takes the scheduler's IP address, not a name: resolve it here.
MASTER_ADDR=127.0.0.1
MASTER_IP=$(getent ahosts "$MASTER_ADDR" | awk 'NR == 1 {print $1}') || MASTER_IP=""
if [ -z "$MASTER_IP" ]; then
    echo "mpirun.sh: $HOSTNAME: the master address '$MASTER_ADDR' does not resolve here; set master_addr to an IP address or to a name every node resolves (DNS or /etc/hosts)" >&2
    exit 2
fi
export MS_SCHED_HOST="$MASTER_IP"
MS_SCHED_PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])') || exit 1
export MS_SCHED_PORT
export MS_WORKER_NUM=2
export MS_TOPO_TIMEOUT=60
MS_ROLE=MS_SCHED RANK_ID=0 RANK_SIZE=2 "$PYTHON" /opt/packrun/src/train.py "$RUN_DIR" > "$RUN_DIR/logs/scheduler.log" 2>&1 &
SCHED_PID=$!
AS_ROOT=()
if [ "$(id -u)" -eq 0 ]; then
    AS_ROOT=(--allow-run-as-root)  # Open MPI refuses root without it
fi
# Each rank gets its own PE consecutive hardware threads (cores // local ranks, as
# launcher/core/cores.py splits this host's cores); the worker's log names them.
PE=$(PYTHONPATH=/opt/packrun "$PYTHON" -m launcher.node cores 2 --per) || exit 2
BIND=(--map-by "slot:PE=$PE" --bind-to hwthread --use-hwthread-cpus --report-bindings)
mpirun "${AS_ROOT[@]}" -n 2 --hostfile "$RUN_DIR/hostfile" "${BIND[@]}" \
    --output-filename "$RUN_DIR/logs/mpirun" --merge-stderr-to-stdout \
    -x PATH -x MS_RETRY_INTERVAL_LOWER -x MS_RETRY_INTERVAL_UPPER -x MS_SCHED_HOST -x MS_SCHED_PORT -x MS_WORKER_NUM -x MS_TOPO_TIMEOUT \
    bash "$RUN_DIR/mpi_task.sh"
RC=$?
if [ "$RC" -ne 0 ]; then
    kill "$SCHED_PID" 2>/dev/null  # else it waits out MS_TOPO_TIMEOUT for the dead workers
fi
wait "$SCHED_PID" || echo "packrun: the scheduler failed; see $RUN_DIR/logs/scheduler.log" >&2
exit "$RC"
