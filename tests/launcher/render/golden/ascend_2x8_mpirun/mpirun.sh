#!/bin/bash
# packrun: Open MPI launch of run demo: 2 node(s) x 8 Ascend worker(s), 16 ranks.
# Usage: bash mpirun.sh on 10.0.0.1; mpirun reaches the other hosts of hostfile by ssh.
# Logs: logs/mpirun/1/rank.<rank>/stdout.
set -uo pipefail
RUN_DIR=/runs/demo-20250101-000000
PYTHON=/opt/venv/bin/python
cd "$RUN_DIR" || exit 1
export MS_RETRY_INTERVAL_LOWER=1
export MS_RETRY_INTERVAL_UPPER=1
export HCCL_CONNECT_TIMEOUT=120
export HCCL_EXEC_TIMEOUT=1836
AS_ROOT=()
if [ "$(id -u)" -eq 0 ]; then
    AS_ROOT=(--allow-run-as-root)  # Open MPI refuses root without it
fi
# Each rank gets its own PE consecutive hardware threads (cores // local ranks, as
# launcher/core/cores.py splits this host's cores); the worker's log names them.
PE=$(PYTHONPATH=/opt/packrun "$PYTHON" -m launcher.node cores 8 --per) || exit 2
BIND=(--map-by "slot:PE=$PE" --bind-to hwthread --use-hwthread-cpus --report-bindings)
mpirun "${AS_ROOT[@]}" -n 16 --hostfile "$RUN_DIR/hostfile" "${BIND[@]}" \
    --output-filename "$RUN_DIR/logs/mpirun" --merge-stderr-to-stdout \
    -x PATH -x MS_RETRY_INTERVAL_LOWER -x MS_RETRY_INTERVAL_UPPER -x HCCL_CONNECT_TIMEOUT -x HCCL_EXEC_TIMEOUT \
    bash "$RUN_DIR/mpi_task.sh"
RC=$?
exit "$RC"
