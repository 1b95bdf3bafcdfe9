#!/bin/bash
# packrun: one rank of run demo under mpirun.
set -euo pipefail
RANK_ID="$OMPI_COMM_WORLD_RANK"
RANK_DIR=/runs/demo-20250101-000000/ranks/"$RANK_ID"
mkdir -p "$RANK_DIR"
cd "$RANK_DIR"
export ASCEND_PROCESS_LOG_PATH=/runs/demo-20250101-000000/logs/ascend/rank_"$RANK_ID"
mkdir -p "$ASCEND_PROCESS_LOG_PATH"
exec /opt/venv/bin/python /opt/packrun/src/train.py /runs/demo-20250101-000000
