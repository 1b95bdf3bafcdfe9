#!/bin/bash
# packrun: one rank of run demo under mpirun.
set -euo pipefail
RANK_ID="$OMPI_COMM_WORLD_RANK"
RANK_DIR=/runs/demo-20250101-000000/ranks/"$RANK_ID"
mkdir -p "$RANK_DIR"
cd "$RANK_DIR"
exec /opt/venv/bin/python /opt/packrun/src/train.py /runs/demo-20250101-000000
