#!/bin/bash
# packrun: one rank of run demo under mpirun (CPU): Open MPI's rank becomes MindSpore's node id.
set -euo pipefail
export MS_ROLE=MS_WORKER MS_NODE_ID="$OMPI_COMM_WORLD_RANK" RANK_ID="$OMPI_COMM_WORLD_RANK" RANK_SIZE="$OMPI_COMM_WORLD_SIZE"
DEADLINE=$((SECONDS + 60))
until (exec 3<>"/dev/tcp/$MS_SCHED_HOST/$MS_SCHED_PORT") 2>/dev/null; do
    if [ "$SECONDS" -ge "$DEADLINE" ]; then
        echo "packrun: rank $RANK_ID: no scheduler at $MS_SCHED_HOST:$MS_SCHED_PORT after 60 s (cluster_timeout); is node 0 started?" >&2
        exit 1
    fi
    sleep 0.2
done
RANK_DIR=/runs/demo-20250101-000000/ranks/"$RANK_ID"
mkdir -p "$RANK_DIR"
cd "$RANK_DIR"
# Each rank's output also goes to logs/worker_<rank>.log, as under msrun.
exec /opt/venv/bin/python /opt/packrun/src/train.py /runs/demo-20250101-000000 >> /runs/demo-20250101-000000/logs/worker_"$RANK_ID.log" 2>&1
