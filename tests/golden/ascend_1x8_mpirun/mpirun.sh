#!/bin/bash
# packrun: Open MPI launch of run demo: 1 node(s) x 8 Ascend worker(s), 8 ranks.
# Usage: bash mpirun.sh
# Logs: logs/mpirun/1/rank.<rank>/stdout.
set -uo pipefail
RUN_DIR=/runs/demo-20250101-000000
PYTHON=/opt/venv/bin/python
cd "$RUN_DIR" || exit 1
export HCCL_CONNECT_TIMEOUT=120
AS_ROOT=()
if [ "$(id -u)" -eq 0 ]; then
    AS_ROOT=(--allow-run-as-root)  # Open MPI refuses root without it
fi
# --bind-to none: every worker runs many threads (data pipeline, MindSpore's thread pools)
mpirun "${AS_ROOT[@]}" -n 8 --hostfile "$RUN_DIR/hostfile" --bind-to none \
    --output-filename "$RUN_DIR/logs/mpirun" --merge-stderr-to-stdout \
    -x PATH -x HCCL_CONNECT_TIMEOUT \
    "$PYTHON" /opt/packrun/src/train.py "$RUN_DIR"
RC=$?
exit "$RC"
