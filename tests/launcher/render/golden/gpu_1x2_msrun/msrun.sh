#!/bin/bash
# packrun: msrun launch of run demo: 1 node(s) x 2 GPU worker(s), 2 in all.
# Usage: bash msrun.sh
# Logs: logs/worker_<rank>.log, and logs/scheduler.log on the master node.
# Each worker runs in ranks/<rank>/ (bin/python), bound to its own range of this node's cores.
set -euo pipefail
RUN_DIR=/runs/demo-20250101-000000
PYTHON=/opt/venv/bin/python
cd "$RUN_DIR"
# msrun starts each worker as `python SCRIPT`: bin/python is the interpreter rendered with.
export PATH="$RUN_DIR/bin:$PATH"
export MS_RETRY_INTERVAL_LOWER=1
export MS_RETRY_INTERVAL_UPPER=1
NODE_RANK=0
MASTER_ADDR=127.0.0.1
MASTER_PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
# Every node resolves the scheduler's address itself (msrun would fail with a traceback).
MASTER_IP=$(getent ahosts "$MASTER_ADDR" | awk 'NR == 1 {print $1}') || MASTER_IP=""
if [ -z "$MASTER_IP" ]; then
    echo "msrun.sh: $HOSTNAME: the master address '$MASTER_ADDR' does not resolve here; set master_addr to an IP address or to a name every node resolves (DNS or /etc/hosts)" >&2
    exit 2
fi
MSRUN_BIND=""
# One contiguous, NUMA-local range of this node's cores per local rank (launcher/core/cores.py):
# msrun binds them (--bind_core) where it can read them; elsewhere bin/python does (taskset).
export PACKRUN_DEVICE=GPU
# (one interpreter start for both: the cpulists' line, then msrun's JSON line or none)
CORES=$(PYTHONPATH=/opt/packrun "$PYTHON" -m launcher.node cores 2 --with-msrun) || exit 2
{ IFS= read -r RANK_CORES; IFS= read -r MSRUN_BIND || true; } <<< "$CORES"
if [ -z "$MSRUN_BIND" ]; then
    export PACKRUN_RANK_CORES="$RANK_CORES"
fi
echo "packrun: node $NODE_RANK: cores of local ranks 0..1: $RANK_CORES"
echo "packrun: node $NODE_RANK of 1: msrun with 2 worker(s), scheduler $MASTER_ADDR:$MASTER_PORT"
# msrun, run as its module so that it uses the same interpreter as the workers
exec "$PYTHON" -m mindspore.parallel.cluster.run \
    --worker_num=2 --local_worker_num=2 --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
    --log_dir="$RUN_DIR/logs" --join=True --cluster_time_out=60 \
    ${MSRUN_BIND:+"--bind_core=$MSRUN_BIND"} /opt/packrun/src/train.py "$RUN_DIR"
