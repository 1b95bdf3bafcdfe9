#!/bin/bash
# packrun: msrun launch of run demo: 2 node(s) x 8 Ascend worker(s), 16 in all.
# Usage: bash msrun.sh NODE_RANK, on every node, NODE_RANK 0..1: 0 on 10.0.0.1, where
# the scheduler runs.
# Logs: logs/worker_<rank>.log, and logs/scheduler.log on the master node; CANN's logs/ascend/rank_<rank>/.
# Each worker runs in ranks/<rank>/ (bin/python), bound to its own range of this node's cores.
set -euo pipefail
RUN_DIR=/runs/demo-20250101-000000
PYTHON=/opt/venv/bin/python
cd "$RUN_DIR"
# msrun starts each worker as `python SCRIPT`: bin/python is the interpreter rendered with.
export PATH="$RUN_DIR/bin:$PATH"
export MS_RETRY_INTERVAL_LOWER=1
export MS_RETRY_INTERVAL_UPPER=1
export HCCL_CONNECT_TIMEOUT=600
export HCCL_EXEC_TIMEOUT=1836
NODE_RANK=${1:?usage: bash msrun.sh NODE_RANK (0..1; 0 on 10.0.0.1)}
if ! [[ $NODE_RANK =~ ^[0-9]+$ ]] || [ "$NODE_RANK" -ge 2 ]; then
    echo "msrun.sh: NODE_RANK is '$NODE_RANK'; give 0..1" >&2
    exit 2
fi
MASTER_ADDR=10.0.0.1
MASTER_PORT=8118
# Every node resolves the scheduler's address itself (msrun would fail with a traceback).
MASTER_IP=$(getent ahosts "$MASTER_ADDR" | awk 'NR == 1 {print $1}') || MASTER_IP=""
if [ -z "$MASTER_IP" ]; then
    echo "msrun.sh: $HOSTNAME: the master address '$MASTER_ADDR' does not resolve here; set master_addr to an IP address or to a name every node resolves (DNS or /etc/hosts)" >&2
    exit 2
fi
case $MASTER_IP in
127.* | ::1 | ::ffff:127.*)
    echo "msrun.sh: $HOSTNAME: master_addr '$MASTER_ADDR' resolves to $MASTER_IP, a loopback address the other nodes cannot reach; set master_addr to node 0's network IP, or map the name to that IP in /etc/hosts instead of 127.0.1.1" >&2
    exit 2
    ;;
esac
# This node's cards (Slurm's gres/npu allocation when it made one) and the node checks (npu-smi,
# hccn_tool, CANN environment: launcher/preflight/node.py) before any worker starts.
NODE_CARDS=$(PYTHONPATH=/opt/packrun "$PYTHON" -m launcher.node check "$RUN_DIR" "$NODE_RANK") || exit 2
if [ -n "$NODE_CARDS" ]; then
    export ASCEND_RT_VISIBLE_DEVICES="$NODE_CARDS"
fi
MSRUN_BIND=""
# One contiguous, NUMA-local range of this node's cores per local rank (launcher/core/cores.py):
# msrun binds them (--bind_core) where it can read them; elsewhere bin/python does (taskset).
export PACKRUN_DEVICE=Ascend
# (one interpreter start for both: the cpulists' line, then msrun's JSON line or none)
CORES=$(PYTHONPATH=/opt/packrun "$PYTHON" -m launcher.node cores 8 --with-msrun) || exit 2
{ IFS= read -r RANK_CORES; IFS= read -r MSRUN_BIND || true; } <<< "$CORES"
if [ -z "$MSRUN_BIND" ]; then
    export PACKRUN_RANK_CORES="$RANK_CORES"
fi
echo "packrun: node $NODE_RANK: cores of local ranks 0..7: $RANK_CORES"
echo "packrun: node $NODE_RANK of 2: msrun with 8 worker(s), scheduler $MASTER_ADDR:$MASTER_PORT"
# msrun, run as its module so that it uses the same interpreter as the workers
exec "$PYTHON" -m mindspore.parallel.cluster.run \
    --worker_num=16 --local_worker_num=8 --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
    --log_dir="$RUN_DIR/logs" --join=True --cluster_time_out=600 \
    ${MSRUN_BIND:+"--bind_core=$MSRUN_BIND"} /opt/packrun/src/train.py "$RUN_DIR"
